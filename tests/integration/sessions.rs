//! The session API over real HTTP with a real SSE client (README, "Sessions over HTTP"): every
//! step of the flow, each status code, limit and error, replay, replacement and idle expiry.

use std::time::Duration;

use serde_json::{Value, json};
use signalling::config::Config;
use tokio::time::timeout;

use crate::support::http::{Api, event, event_with};
use crate::support::{self, TIMEOUT, TestPeer, TestServer};

async fn server_with(change: impl FnOnce(&mut Config)) -> (TestServer, Api) {
    let mut config = support::config();
    change(&mut config);
    let server = TestServer::start(config).await;
    let api = Api::new(&server);
    (server, api)
}

async fn server() -> (TestServer, Api) {
    server_with(|_| {}).await
}

#[tokio::test]
async fn seed_flow_offer_before_the_stream_opens_then_answer_candidates_and_leave() {
    let (_server, api) = server().await;
    api.register("room", "web").await;
    let mut web = api.events("room", "web").await;
    api.register("room", "phone").await;
    web.expect(event("phone", "new-peer")).await;

    // The web page sends its offer before the phone has opened its stream.
    let offer = json!({"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"});
    api.send("room", "web", "phone", "offer", offer.clone())
        .await;
    api.send(
        "room",
        "web",
        "phone",
        "ice-candidate",
        json!({"candidate": "c1", "sdpMid": "0"}),
    )
    .await;
    let mut phone = api.events("room", "phone").await;
    phone.expect(event_with("web", "offer", offer)).await;
    phone
        .expect(event_with(
            "web",
            "ice-candidate",
            json!({"candidate": "c1", "sdpMid": "0"}),
        ))
        .await;

    api.send("room", "phone", "web", "answer", json!({"sdp": "a"}))
        .await;
    web.expect(event_with("phone", "answer", json!({"sdp": "a"})))
        .await;
    // Any type and any JSON payload pass unchanged.
    let odd = json!([1, 2.5, "x", null, {"nested": {"deep": true}}, -7e-3]);
    api.send("room", "phone", "web", "my-own-type", odd.clone())
        .await;
    web.expect(event_with("phone", "my-own-type", odd)).await;
    api.send("room", "phone", "web", "no-payload", Value::Null)
        .await;
    web.expect(event("phone", "no-payload")).await;

    assert_eq!(
        api.unregister("room", "phone").await,
        (200, json!({"message": "peer unregistered successfully"}))
    );
    web.expect(event("phone", "peer-left")).await;
    phone.expect_end().await;
    assert_eq!(api.unregister("room", "web").await.0, 200);
    web.expect_end().await;
    // The empty session is gone.
    assert_eq!(api.open_events("room", "web", None).await.status(), 404);
}

#[tokio::test]
async fn event_ids_increase_and_last_event_id_replays_what_was_missed_once_in_order() {
    let (_server, api) = server().await;
    api.register("s", "a").await;
    api.register("s", "b").await;
    let mut b = api.events("s", "b").await;
    let mut ids = Vec::new();
    for n in 0..4 {
        api.send("s", "a", "b", "n", json!(n)).await;
        let (id, data) = b.next().await;
        assert_eq!(data, event_with("a", "n", json!(n)));
        ids.push(id.parse::<u64>().expect("numeric id"));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // The client saw up to the second event, then lost its connection.
    drop(b);
    api.send("s", "a", "b", "n", json!(4)).await;
    let mut b = api.events_after("s", "b", Some(&ids[1].to_string())).await;
    for n in 2..5 {
        b.expect(event_with("a", "n", json!(n))).await;
    }
    // Nothing twice: the next event is a fresh one.
    api.send("s", "a", "b", "n", json!(5)).await;
    b.expect(event_with("a", "n", json!(5))).await;

    // A non-numeric Last-Event-ID is a 400.
    let response = api.open_events("s", "b", Some("abc")).await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_second_stream_for_a_peer_replaces_the_first() {
    let (_server, api) = server().await;
    api.register("s", "a").await;
    api.register("s", "b").await;
    let mut first = api.events("s", "b").await;
    let mut second = api.events("s", "b").await;
    first.expect_end().await;
    api.send("s", "a", "b", "x", json!(1)).await;
    second.expect(event_with("a", "x", json!(1))).await;
}

#[tokio::test]
async fn three_peers_in_one_session() {
    let (_server, api) = server().await;
    api.register("trio", "a").await;
    let mut a = api.events("trio", "a").await;
    api.register("trio", "b").await;
    a.expect(event("b", "new-peer")).await;
    let mut b = api.events("trio", "b").await;
    api.register("trio", "c").await;
    a.expect(event("c", "new-peer")).await;
    b.expect(event("c", "new-peer")).await;
    let mut c = api.events("trio", "c").await;

    api.send("trio", "a", "c", "hello", json!("from a")).await;
    api.send("trio", "b", "c", "hello", json!("from b")).await;
    c.expect(event_with("a", "hello", json!("from a"))).await;
    c.expect(event_with("b", "hello", json!("from b"))).await;
    api.send("trio", "c", "a", "reply", json!(1)).await;
    a.expect(event_with("c", "reply", json!(1))).await;

    api.unregister("trio", "b").await;
    a.expect(event("b", "peer-left")).await;
    c.expect(event("b", "peer-left")).await;
    b.expect_end().await;
}

#[tokio::test]
async fn two_sessions_are_isolated() {
    let (_server, api) = server().await;
    for session in ["one", "two"] {
        api.register(session, "host").await;
        api.register(session, "guest").await;
    }
    let mut host_one = api.events("one", "host").await;
    let mut host_two = api.events("two", "host").await;
    host_one.expect(event("guest", "new-peer")).await;
    host_two.expect(event("guest", "new-peer")).await;

    api.send("two", "guest", "host", "x", json!("for two"))
        .await;
    api.send("one", "guest", "host", "x", json!("for one"))
        .await;
    host_one
        .expect(event_with("guest", "x", json!("for one")))
        .await;
    host_two
        .expect(event_with("guest", "x", json!("for two")))
        .await;

    // A peer of one session cannot reach, or be reached from, the other.
    api.register("one", "solo").await;
    host_one.expect(event("solo", "new-peer")).await;
    assert_eq!(
        api.try_send("two", "solo", "host", "x", json!(0)).await.0,
        403
    );
    assert_eq!(
        api.try_send("two", "guest", "solo", "x", json!(0)).await.0,
        404
    );
    api.unregister("one", "guest").await;
    host_one.expect(event("guest", "peer-left")).await;
    // host in `two` heard nothing of that: its next event is this marker.
    api.send("two", "guest", "host", "marker", json!(null))
        .await;
    host_two.expect(event("guest", "marker")).await;
}

#[tokio::test]
async fn register_again_is_idempotent_keeps_the_queue_and_announces_nothing() {
    let (_server, api) = server().await;
    api.register("s", "a").await;
    let mut a = api.events("s", "a").await;
    api.register("s", "b").await;
    a.expect(event("b", "new-peer")).await;
    api.send("s", "a", "b", "offer", json!("o")).await;
    api.register("s", "b").await;
    api.register("s", "a").await;
    let mut b = api.events("s", "b").await;
    b.expect(event_with("a", "offer", json!("o"))).await;
    // No second new-peer reached a: its next event is this one.
    api.send("s", "b", "a", "after", json!(null)).await;
    a.expect(event("b", "after")).await;
}

#[tokio::test]
async fn errors_name_the_problem() {
    let (_server, api) = server().await;
    api.register("s", "a").await;
    api.register("s", "b").await;

    let long = "x".repeat(65);
    for path in [
        format!("/register/s/{long}"),
        "/register/bad%20id/a".to_owned(),
        "/register/s/a:b".to_owned(),
    ] {
        let (status, body) = api.post_path(&path).await;
        assert_eq!(status, 400, "{path}");
        assert!(
            body["error"].as_str().unwrap_or("").contains("id"),
            "{path}: {body}"
        );
    }
    let (status, body) = api.post_raw("s", "a", b"not json".to_vec()).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("not a JSON object"),
        "{body}"
    );
    let (status, body) = api
        .post_raw("s", "a", br#"{"type":"offer","payload":1}"#.to_vec())
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap_or("").contains("target"),
        "{body}"
    );
    let (status, body) = api.post_raw("s", "a", br#"{"target":"b"}"#.to_vec()).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap_or("").contains("type"),
        "{body}"
    );
    let (status, body) = api
        .post_raw("s", "a", br#"{"target":"b","type":7}"#.to_vec())
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.try_send("s", "a", "bad id", "x", json!(1)).await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = api.try_send("s", "zed", "b", "x", json!(1)).await;
    assert_eq!(status, 403);
    assert!(
        body["error"].as_str().unwrap_or("").contains("zed"),
        "{body}"
    );
    let (status, body) = api.try_send("s", "a", "zed", "x", json!(1)).await;
    assert_eq!(status, 404);
    assert!(
        body["error"].as_str().unwrap_or("").contains("target zed"),
        "{body}"
    );
    assert_eq!(api.try_send("nope", "a", "b", "x", json!(1)).await.0, 404);
    assert_eq!(api.open_events("nope", "a", None).await.status(), 404);
    assert_eq!(api.open_events("s", "zed", None).await.status(), 404);
    let (status, body) = api.unregister("s", "zed").await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(api.unregister("nope", "a").await.0, 404);
    // Other paths and methods are not the API's.
    assert_eq!(api.get("/nothing-here").await.0, 404);
    assert_eq!(api.get("/register/s/a").await.0, 405);
}

#[tokio::test]
async fn limits_answer_413_and_429_naming_the_limit() {
    let (_server, api) = server_with(|c| {
        c.sessions.max_sessions = 2;
        c.sessions.max_peers_per_session = 2;
        c.sessions.max_queued_events = 3;
        c.sessions.max_body_bytes = 1024;
    })
    .await;
    api.register("s1", "a").await;
    api.register("s2", "a").await;
    let (status, body) = api.try_register("s3", "a").await;
    assert_eq!(status, 429);
    assert_eq!(body["limit"], "max_sessions", "{body}");
    assert_eq!(body["max"], 2, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("max_sessions = 2")
    );

    api.register("s1", "b").await;
    let (status, body) = api.try_register("s1", "c").await;
    assert_eq!(status, 429);
    assert_eq!(body["limit"], "max_peers_per_session", "{body}");

    // a's queue: b's new-peer and two messages fill it; the third is refused, not dropped.
    api.send("s1", "b", "a", "m", json!(1)).await;
    api.send("s1", "b", "a", "m", json!(2)).await;
    let (status, body) = api.try_send("s1", "b", "a", "m", json!(3)).await;
    assert_eq!(status, 429);
    assert_eq!(body["limit"], "max_queued_events", "{body}");
    let mut a = api.events("s1", "a").await;
    a.expect(event("b", "new-peer")).await;
    a.expect(event_with("b", "m", json!(1))).await;
    a.expect(event_with("b", "m", json!(2))).await;
    // With the stream open, messages flow past the limit.
    for n in 3..8 {
        api.send("s1", "b", "a", "m", json!(n)).await;
        a.expect(event_with("b", "m", json!(n))).await;
    }

    let big = json!({"target": "a", "type": "offer", "payload": "x".repeat(2000)});
    let (status, body) = api.post_raw("s1", "b", big.to_string().into_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(body["limit"], "max_body_bytes", "{body}");
    assert_eq!(body["max"], 1024, "{body}");
}

#[tokio::test]
async fn idle_peers_are_removed_and_the_others_told() {
    let (_server, api) = server_with(|c| {
        c.sessions.idle_timeout = Duration::from_millis(300);
    })
    .await;
    api.register("s", "a").await;
    let mut a = api.events("s", "a").await;
    api.register("s", "b").await;
    a.expect(event("b", "new-peer")).await;
    // b never opens a stream: it expires, a (stream open) stays.
    a.expect(event("b", "peer-left")).await;
    assert_eq!(api.try_send("s", "a", "b", "x", json!(1)).await.0, 404);
    api.send("s", "a", "a", "self", json!(null)).await;
    a.expect(event("a", "self")).await;

    // Once a closes its stream, a's idle clock runs from then: c (stream open) sees it go.
    api.register("s", "c").await;
    let mut c = api.events("s", "c").await;
    a.expect(event("c", "new-peer")).await;
    drop(a);
    c.expect(event("a", "peer-left")).await;
    assert_eq!(api.open_events("s", "a", None).await.status(), 404);
}

#[tokio::test]
async fn keep_alive_comments_flow_on_an_idle_stream() {
    let (_server, api) = server_with(|c| {
        c.sessions.keepalive = Duration::from_millis(100);
    })
    .await;
    api.register("s", "a").await;
    let mut response = api.open_events("s", "a", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .map(|v| v.as_bytes()),
        Some(&b"no-cache"[..])
    );
    let mut seen = String::new();
    while !seen.contains(":keep-alive\n\n") && !seen.contains(": keep-alive\n\n") {
        let chunk = timeout(TIMEOUT, response.chunk())
            .await
            .expect("a keep-alive within the timeout")
            .expect("body")
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn cors_preflight_and_allowed_origins() {
    let (_server, api) = server_with(|c| {
        c.sessions.cors_origins = vec!["http://app.example".to_owned()];
    })
    .await;
    let preflight = api
        .client
        .request(reqwest::Method::OPTIONS, api.url("/message/s/a"))
        .header("origin", "http://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "http://app.example");
    let methods = headers["access-control-allow-methods"]
        .to_str()
        .unwrap_or("");
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap_or("");
    assert!(allowed.contains("content-type"), "{allowed}");

    let response = api
        .client
        .get(api.url("/iceServers"))
        .header("origin", "http://app.example")
        .send()
        .await
        .expect("get");
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    let other = api
        .client
        .get(api.url("/iceServers"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("get");
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // The default allows any origin.
    let (_server, api) = server().await;
    let response = api
        .client
        .post(api.url("/register/s/a"))
        .header("origin", "http://anywhere.example")
        .send()
        .await
        .expect("post");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn websocket_upgrades_still_work_on_api_paths() {
    let (server, _api) = server().await;
    for path in ["/iceServers", "/events/s/a", "/register/s/a", "/anything"] {
        let url = format!("ws://{}{path}", server.player);
        let mut player = TestPeer::connect_url(&url, "player").await;
        player.expect_text(support::CONFIG).await;
    }
}

#[tokio::test]
async fn shutdown_ends_open_event_streams_promptly() {
    let (server, api) = server().await;
    api.register("s", "a").await;
    let mut a = api.events("s", "a").await;
    // Within TestServer::shutdown's 5 s, although a stream is open.
    server.shutdown().await;
    a.expect_end().await;
}
