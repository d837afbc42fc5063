//! JWTs, streamer tokens that name their ids, and per-peer session tokens, over real sockets:
//! a player's JWT limits `streamerList` and `subscribe` to its `streamers` claim, and an
//! expired, forged or wrong-audience token is answered 401 before the upgrade; a streamer
//! whose token names its ids is closed 1008 when it claims another; the session API requires
//! a JWT whose `sessions` and `peer` claims allow the request; with `peer_tokens`, only the
//! holder of a peer's token acts as that peer.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::http::Api;
use crate::support::{
    CONFIG, IDENTIFY, TestPeer, TestServer, config, player_connected, streamer_list,
};
use crate::tokens::upgrade;

const SECRET: &str = "jwt-s3cret";

fn jwt(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

fn in_ten_minutes() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600
}

async fn jwt_server(peer_tokens: bool) -> TestServer {
    let mut config = config();
    config.jwt_secret = SECRET.to_owned();
    config.jwt_audience = "signalling".to_owned();
    config.sessions.peer_tokens = peer_tokens;
    TestServer::start(config).await
}

#[tokio::test]
async fn a_players_jwt_limits_its_streamer_list_and_subscribes_and_bad_ones_get_401() {
    let server = jwt_server(false).await;
    let mut a = server.streamer("a").await;
    let _b = server.streamer("b").await;
    let token = jwt(
        SECRET,
        json!({"exp": in_ten_minutes(), "aud": "signalling", "streamers": ["a"]}),
    );
    let url = format!("ws://{}/?token={token}", server.player);
    let mut player = TestPeer::connect_url(&url, "player").await;
    player.expect_text(CONFIG).await;
    assert_eq!(player.list_streamers().await, streamer_list(&["a"]));
    player.subscribe("b").await;
    player
        .expect_text(r#"{"type":"subscribeFailed","message":"Streamer b does not exist."}"#)
        .await;
    player.subscribe("a").await;
    a.expect_text(&player_connected("Player0", false)).await;

    // A token without the claim sees everything.
    let all = jwt(
        SECRET,
        json!({"exp": in_ten_minutes(), "aud": "signalling"}),
    );
    let url = format!("ws://{}/?token={all}", server.player);
    let mut everyone = TestPeer::connect_url(&url, "everyone").await;
    everyone.expect_text(CONFIG).await;
    assert_eq!(everyone.list_streamers().await, streamer_list(&["a", "b"]));

    let refused = [
        ("none", String::new()),
        (
            "expired",
            jwt(SECRET, json!({"exp": 1_000_000, "aud": "signalling"})),
        ),
        (
            "forged",
            jwt(
                "guess",
                json!({"exp": in_ten_minutes(), "aud": "signalling"}),
            ),
        ),
        (
            "wrong audience",
            jwt(SECRET, json!({"exp": in_ten_minutes(), "aud": "other"})),
        ),
        ("no audience", jwt(SECRET, json!({"exp": in_ten_minutes()}))),
    ];
    for (what, token) in refused {
        let target = format!("/?token={token}");
        let response = upgrade(server.player, &target, "").await;
        assert!(response.starts_with("HTTP/1.1 401 "), "{what}: {response}");
        let bearer = format!("Authorization: Bearer {token}\r\n");
        let response = upgrade(server.player, "/", &bearer).await;
        assert!(response.starts_with("HTTP/1.1 401 "), "{what}: {response}");
    }
    let expired = jwt(SECRET, json!({"exp": 1_000_000, "aud": "signalling"}));
    let response = upgrade(server.player, &format!("/?token={expired}"), "").await;
    assert!(response.contains("the JWT has expired"), "{response}");
}

#[tokio::test]
async fn a_streamer_token_that_names_ids_cannot_claim_another_tenants_id() {
    let mut config = config();
    config.streamer_tokens = [
        (
            "tenant-a".to_owned(),
            vec!["a1".to_owned(), "a2".to_owned()],
        ),
        ("tenant-b".to_owned(), vec!["b1".to_owned()]),
    ]
    .into();
    let server = TestServer::start(config).await;
    let connect = |token: &'static str| {
        let url = format!("ws://{}/?token={token}", server.streamer);
        async move {
            let mut st = TestPeer::connect_url(&url, token).await;
            st.expect_text(CONFIG).await;
            st.expect_text(IDENTIFY).await;
            st
        }
    };
    let mut a = connect("tenant-a").await;
    assert_eq!(a.endpoint_id("a1").await, "a1");
    let mut intruder = connect("tenant-b").await;
    intruder
        .send_json(r#"{"type":"endpointId","id":"a1"}"#)
        .await;
    assert_eq!(
        intruder.expect_close().await,
        (1008, "streamer id not allowed for this token".to_owned())
    );
    let mut b = connect("tenant-b").await;
    assert_eq!(b.endpoint_id("b1").await, "b1");
    // Without a token, or with one no map entry has: 401.
    for target in ["/", "/?token=tenant-c"] {
        let response = upgrade(server.streamer, target, "").await;
        assert!(
            response.starts_with("HTTP/1.1 401 "),
            "{target}: {response}"
        );
    }
    let mut viewer = server.player().await;
    assert_eq!(viewer.list_streamers().await, streamer_list(&["a1", "b1"]));
}

/// The session API's reply to `method path`, with `token` as a bearer token if given.
async fn call(api: &Api, method: reqwest::Method, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = api.client.request(method, api.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if path.starts_with("/message/") {
        request = request
            .header("content-type", "application/json")
            .body(json!({"target": "bob", "type": "hello", "payload": {}}).to_string());
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn the_session_api_requires_a_jwt_whose_claims_allow_the_session_and_peer() {
    let server = jwt_server(false).await;
    let api = Api::new(&server);
    let alice = jwt(
        SECRET,
        json!({"exp": in_ten_minutes(), "aud": "signalling", "sessions": ["room"], "peer": "alice"}),
    );
    let bob = jwt(
        SECRET,
        json!({"exp": in_ten_minutes(), "aud": "signalling", "sessions": ["*"]}),
    );
    let post = reqwest::Method::POST;
    assert_eq!(
        call(&api, post.clone(), "/register/room/alice", None)
            .await
            .0,
        401
    );
    let expired = jwt(SECRET, json!({"exp": 1_000_000, "aud": "signalling"}));
    assert_eq!(
        call(&api, post.clone(), "/register/room/alice", Some(&expired)).await,
        (401, json!({"error": "the JWT has expired"}))
    );
    // The claims: another session, another peer.
    assert_eq!(
        call(&api, post.clone(), "/register/hall/alice", Some(&alice))
            .await
            .0,
        403
    );
    assert_eq!(
        call(&api, post.clone(), "/register/room/mallory", Some(&alice))
            .await
            .0,
        403
    );
    assert_eq!(
        call(&api, post.clone(), "/register/room/alice", Some(&alice))
            .await
            .0,
        200
    );
    assert_eq!(
        call(&api, post.clone(), "/register/room/bob", Some(&bob))
            .await
            .0,
        200
    );
    // EventSource cannot set headers: the JWT comes in the URL.
    let (status, _) = call(&api, reqwest::Method::GET, "/events/room/bob", None).await;
    assert_eq!(status, 401);
    let response = api
        .client
        .get(api.url(&format!("/events/room/bob?token={bob}")))
        .send()
        .await
        .expect("events");
    assert_eq!(response.status(), 200);
    assert_eq!(
        call(&api, post.clone(), "/message/room/alice", Some(&alice))
            .await
            .0,
        200
    );
    assert_eq!(
        call(&api, post, "/message/room/alice", Some(&bob)).await.0,
        200
    );
    assert_eq!(
        call(&api, reqwest::Method::GET, "/iceServers?peerId=alice", None)
            .await
            .0,
        401
    );
    assert_eq!(
        call(
            &api,
            reqwest::Method::GET,
            "/iceServers?peerId=alice",
            Some(&alice)
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn with_peer_tokens_only_the_holder_of_a_peers_token_acts_as_it() {
    let mut config = config();
    config.sessions.peer_tokens = true;
    let server = TestServer::start(config).await;
    let api = Api::new(&server);
    let post = reqwest::Method::POST;
    let (status, body) = call(&api, post.clone(), "/register/room/alice", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "session registered successfully");
    let alice = body["token"].as_str().expect("a token").to_owned();
    assert!(alice.len() >= 43, "{alice}");
    let (_, body) = call(&api, post.clone(), "/register/room/bob", None).await;
    let bob = body["token"].as_str().expect("a token").to_owned();
    assert_ne!(alice, bob);

    // Knowing the names is not enough: registering again, sending, reading, leaving.
    for (method, path) in [
        (post.clone(), "/register/room/alice"),
        (post.clone(), "/message/room/alice"),
        (reqwest::Method::GET, "/events/room/alice"),
        (reqwest::Method::DELETE, "/register/room/alice"),
    ] {
        for token in [None, Some("wrong"), Some(bob.as_str())] {
            let (status, body) = call(&api, method.clone(), path, token).await;
            assert_eq!(status, 403, "{method} {path} {token:?}: {body}");
        }
    }
    // The holder may do each.
    let (status, body) = call(&api, post.clone(), "/register/room/alice", Some(&alice)).await;
    assert_eq!(
        (status, body["token"].as_str()),
        (200, Some(alice.as_str()))
    );
    let events = api
        .client
        .get(api.url(&format!("/events/room/bob?token={bob}")))
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), 200);
    assert_eq!(
        call(&api, post, "/message/room/alice", Some(&alice))
            .await
            .0,
        200
    );
    assert_eq!(
        call(
            &api,
            reqwest::Method::DELETE,
            "/register/room/alice",
            Some(&alice)
        )
        .await
        .0,
        200
    );
}
