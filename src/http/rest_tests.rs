//! Route tests of the REST API through the whole player-port app (`app(..).oneshot`), against
//! a real router task fed the same events connections send it: every route's 200 body pinned
//! field by field against what Wilbur answers for the same connections, the 404 bodies, the
//! API switched off, `/api/config` without secrets, and the OpenAPI document against the routes
//! and the bodies they serve.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use protocol::Inbound;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::rest::{self, REDACTED, Rest, Settings};
use super::{api, app};
use crate::config::Config;
use crate::ice::Ice;
use crate::queue::{self, Limits};
use crate::router::{ConnId, Opening, Role, RouterConfig};
use crate::router_task::{self, Event, Frame, Gate, Outbox, RouterHandle, Urgent};
use crate::sessions;

/// A router task and the ends of its connections' queues, which the tests hold open (a
/// connection whose queue is gone is dropped by the task).
struct Fixture {
    router: RouterHandle,
    shutdown: CancellationToken,
    ends: Vec<(queue::Receiver<Frame>, oneshot::Receiver<Urgent>, Arc<Gate>)>,
    next: u64,
}

impl Fixture {
    fn new() -> Self {
        let shutdown = CancellationToken::new();
        let (router, _task) = router_task::spawn(
            RouterConfig::default(),
            std::time::Duration::ZERO,
            std::time::Duration::from_secs(10),
            shutdown.clone(),
        );
        Self {
            router,
            shutdown,
            ends: Vec::new(),
            next: 1,
        }
    }

    /// Opens a connection as the connection task does.
    async fn open(&mut self, role: Role, remote: &str) -> ConnId {
        let conn = ConnId(self.next);
        self.next += 1;
        let (queue, queue_rx) = queue::bounded(
            Limits {
                messages: 1024,
                bytes: 1 << 20,
            },
            None,
        );
        let (urgent, urgent_rx) = oneshot::channel();
        let gate = Arc::new(Gate::new(1 << 20));
        let outbox = Outbox {
            queue,
            urgent,
            gate: Arc::clone(&gate),
        };
        let remote: IpAddr = remote.parse().expect("an IP address");
        assert!(
            self.router
                .send(Event::Opened {
                    conn,
                    role,
                    outbox,
                    opening: Opening {
                        remote: Some(remote),
                        ..Opening::default()
                    },
                })
                .await
        );
        self.ends.push((queue_rx, urgent_rx, gate));
        conn
    }

    /// One message from `conn`, charged to its gate as the connection task does.
    async fn msg(&self, conn: ConnId, text: &str) {
        let message = Inbound::parse(text).expect("a valid message");
        let gate = &self.ends[usize::try_from(conn.0 - 1).expect("small")].2;
        gate.take(text.len());
        assert!(
            self.router
                .send(Event::Message {
                    conn,
                    message,
                    bytes: text.len()
                })
                .await
        );
    }

    async fn identify(&self, conn: ConnId, id: &str) {
        self.msg(conn, &format!(r#"{{"type":"endpointId","id":"{id}"}}"#))
            .await;
    }

    async fn subscribe(&self, conn: ConnId, id: &str) {
        self.msg(
            conn,
            &format!(r#"{{"type":"subscribe","streamerId":"{id}"}}"#),
        )
        .await;
    }

    async fn close(&self, conn: ConnId) {
        assert!(self.router.send(Event::Closed { conn }).await);
    }

    /// The player-port app with the REST API on (`settings`) or off (`None`).
    fn app(&self, settings: Option<&Settings>) -> axum::Router {
        let config = Config::default();
        let (sessions, _task) = sessions::task::spawn(
            sessions::Limits {
                max_sessions: 10,
                max_sessions_per_address: 0,
                max_peers_per_session: 2,
                max_queued_events: 10,
                max_peer_event_bytes: 1 << 20,
                max_event_bytes: 1 << 20,
                stream_window_bytes: sessions::STREAM_WINDOW_BYTES,
                idle_timeout_ms: 0,
            },
            self.shutdown.clone(),
        );
        let api = api::Api {
            sessions,
            ice: Arc::new(Ice::new(&config.ice)),
            settings: Arc::new(config.sessions.clone()),
            auth: Default::default(),
        };
        let rest = settings.map(|s| Rest::new(self.router.clone(), s));
        let site = crate::http::Web::default()
            .build()
            .expect("default web settings");
        app(self.shutdown.clone(), api, rest, &site)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn settings() -> Settings {
    Settings {
        streamer_port: 8888,
        player_port: 80,
        sfu_port: 8889,
        peer_options: serde_json::Map::new(),
        max_players: 0,
        admin_token: String::new(),
    }
}

/// A request's status, content type and body (JSON, or `Value::String` of the text if not).
async fn call(app: &axum::Router, method: Method, path: &str) -> (StatusCode, String, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .expect("a request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, content_type, value)
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, Value) {
    let (status, content_type, body) = call(app, Method::GET, path).await;
    if body.is_object() || body.is_array() {
        assert_eq!(content_type, "application/json", "{path}");
    }
    (status, body)
}

/// Two streamers (S1, S2), an SFU subscribed to S1, and three players: Player1 on S1,
/// Player2 on S2, Player3 on the SFU. One player is an IPv6 client, one an IPv4 client of a
/// dual-stack listener.
async fn two_streamers_three_players_one_sfu() -> Fixture {
    let mut f = Fixture::new();
    let s1 = f.open(Role::Streamer, "10.0.0.1").await;
    let s2 = f.open(Role::Streamer, "10.0.0.2").await;
    f.identify(s1, "S1").await;
    f.identify(s2, "S2").await;
    let sfu = f.open(Role::Sfu, "10.0.0.3").await;
    f.identify(sfu, "SFU").await;
    let p1 = f.open(Role::Player, "192.0.2.4").await;
    let p2 = f.open(Role::Player, "2001:db8::5").await;
    let p3 = f.open(Role::Player, "::ffff:192.0.2.6").await;
    // Player1 subscribes before the SFU, which connected first: lists are in connection order.
    f.subscribe(p1, "S1").await;
    f.subscribe(sfu, "S1").await;
    f.subscribe(p2, "S2").await;
    f.subscribe(p3, "SFU").await;
    f
}

// What Wilbur answers for the same connections (Signalling/src: getPlayerInfo of
// PlayerConnection and SFUConnection, getStreamerInfo of StreamerConnection and SFUConnection).

fn wilbur_sfu_as_player() -> Value {
    json!({"playerId": "Player0", "type": "SFU", "subscribedTo": "S1", "remoteAddress": "10.0.0.3"})
}
fn wilbur_player1() -> Value {
    json!({"playerId": "Player1", "type": "Player", "subscribedTo": "S1", "remoteAddress": "192.0.2.4"})
}
fn wilbur_player2() -> Value {
    json!({"playerId": "Player2", "type": "Player", "subscribedTo": "S2", "remoteAddress": "2001:db8::5"})
}
fn wilbur_player3() -> Value {
    json!({"playerId": "Player3", "type": "Player", "subscribedTo": "SFU", "remoteAddress": "::ffff:192.0.2.6"})
}
fn wilbur_streamers() -> Value {
    json!([
        {
            "streamerId": "S1",
            "type": "Streamer",
            "streaming": true,
            "remoteAddress": "10.0.0.1",
            "subscribers": [wilbur_sfu_as_player(), wilbur_player1()],
        },
        {
            "streamerId": "S2",
            "type": "Streamer",
            "streaming": true,
            "remoteAddress": "10.0.0.2",
            "subscribers": [wilbur_player2()],
        },
        {
            "streamerId": "SFU",
            "type": "SFU",
            "streaming": true,
            "remoteAddress": "10.0.0.3",
            "subscribers": [wilbur_player3()],
        },
    ])
}

#[tokio::test]
async fn streamers_are_listed_as_wilbur_lists_them() {
    let f = two_streamers_three_players_one_sfu().await;
    let app = f.app(Some(&settings()));
    assert_eq!(
        get(&app, "/api/streamers").await,
        (StatusCode::OK, wilbur_streamers())
    );
    for (i, id) in ["S1", "S2", "SFU"].into_iter().enumerate() {
        assert_eq!(
            get(&app, &format!("/api/streamers/{id}")).await,
            (StatusCode::OK, wilbur_streamers()[i].clone()),
            "{id}"
        );
    }
}

#[tokio::test]
async fn players_are_listed_as_wilbur_lists_them() {
    let f = two_streamers_three_players_one_sfu().await;
    let app = f.app(Some(&settings()));
    let expected = [
        wilbur_sfu_as_player(),
        wilbur_player1(),
        wilbur_player2(),
        wilbur_player3(),
    ];
    assert_eq!(
        get(&app, "/api/players").await,
        (StatusCode::OK, Value::Array(expected.to_vec()))
    );
    for p in &expected {
        let id = p["playerId"].as_str().expect("an id");
        assert_eq!(
            get(&app, &format!("/api/players/{id}")).await,
            (StatusCode::OK, p.clone()),
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_player_not_subscribed_has_no_subscribed_to_and_an_unidentified_streamer_is_not_streaming()
 {
    let mut f = Fixture::new();
    f.open(Role::Streamer, "10.0.0.1").await;
    f.open(Role::Player, "10.0.0.2").await;
    let app = f.app(Some(&settings()));
    assert_eq!(
        get(&app, "/api/players/Player0").await,
        (
            StatusCode::OK,
            json!({"playerId": "Player0", "type": "Player", "remoteAddress": "10.0.0.2"})
        )
    );
    assert_eq!(
        get(&app, "/api/streamers/UnknownStreamer").await,
        (
            StatusCode::OK,
            json!({"streamerId": "UnknownStreamer", "type": "Streamer", "streaming": false,
                   "remoteAddress": "10.0.0.1", "subscribers": []})
        )
    );
}

#[tokio::test]
async fn status_counts_an_sfu_as_a_streamer_and_a_player() {
    let f = two_streamers_three_players_one_sfu().await;
    let app = f.app(Some(&settings()));
    let (status, body) = get(&app, "/api/status").await;
    assert_eq!(status, StatusCode::OK);
    let object = body.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["player_count", "streamer_count", "uptime", "version"]
    );
    assert_eq!(body["streamer_count"], 3);
    assert_eq!(body["player_count"], 4);
    assert!(body["uptime"].is_u64(), "milliseconds, an integer: {body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn a_disconnect_is_reflected_in_every_answer() {
    let f = two_streamers_three_players_one_sfu().await;
    let app = f.app(Some(&settings()));
    f.close(ConnId(5)).await; // Player2, on S2
    assert_eq!(
        get(&app, "/api/streamers/S2").await.1["subscribers"],
        json!([])
    );
    assert_eq!(
        get(&app, "/api/players/Player2").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&app, "/api/status").await.1["player_count"], 3);
}

#[tokio::test]
async fn unknown_ids_get_wilburs_404_bodies() {
    let f = two_streamers_three_players_one_sfu().await;
    let app = f.app(Some(&settings()));
    assert_eq!(
        get(&app, "/api/streamers/DefaultStreamer").await,
        (
            StatusCode::NOT_FOUND,
            json!({"message": "No streamer id matches DefaultStreamer."})
        )
    );
    assert_eq!(
        get(&app, "/api/players/Player42").await,
        (
            StatusCode::NOT_FOUND,
            json!({"message": "No player ID matches Player42."})
        )
    );
    // Percent-decoded as Express decodes path parameters.
    assert_eq!(
        get(&app, "/api/streamers/a%20b").await,
        (
            StatusCode::NOT_FOUND,
            json!({"message": "No streamer id matches a b."})
        )
    );
    let (status, body) = get(&app, "/api/players/%FF").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test]
async fn only_get_is_served() {
    let f = Fixture::new();
    let app = f.app(Some(&settings()));
    for (path, _) in rest::table() {
        let path = path.replace("{streamerId}", "S").replace("{playerId}", "P");
        let (status, _, _) = call(&app, Method::POST, &path).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
    }
}

#[tokio::test]
async fn switched_off_every_api_path_is_the_plain_404() {
    let f = two_streamers_three_players_one_sfu().await;
    let app = f.app(None);
    for (path, _) in rest::table() {
        let path = path
            .replace("{streamerId}", "S1")
            .replace("{playerId}", "Player1");
        assert_eq!(
            get(&app, &path).await,
            (StatusCode::NOT_FOUND, Value::String("not found\n".into())),
            "{path}"
        );
    }
}

#[tokio::test]
async fn config_is_wilburs_shape() {
    let f = Fixture::new();
    let mut s = settings();
    s.max_players = 4;
    s.peer_options = json!({"iceServers": [{"urls": ["stun:stun.example.com:19302"]}]})
        .as_object()
        .cloned()
        .expect("an object");
    let app = f.app(Some(&s));
    let peer_options = json!({"iceServers": [{"urls": ["stun:stun.example.com:19302"]}]});
    assert_eq!(
        get(&app, "/api/config").await,
        (
            StatusCode::OK,
            json!({
                "config": {
                    "streamerPort": 8888,
                    "playerPort": 80,
                    "sfuPort": 8889,
                    "peerOptions": peer_options,
                    "maxSubscribers": 4,
                },
                "protocolConfig": {
                    "protocolVersion": protocol::PROTOCOL_VERSION,
                    "peerConnectionOptions": peer_options,
                },
            })
        )
    );
}

/// The configuration a server with every kind of secret set serves: the whole `Config`, as
/// the server builds it, with TURN secrets and credentials in `[ice]` and in `peer_options`.
#[tokio::test]
async fn config_never_contains_a_secret() {
    let secrets = [
        "ICE-TURN-SECRET-1",
        "ICE-TURN-CREDENTIAL-2",
        "PEER-OPTIONS-CREDENTIAL-3",
        "PEER-OPTIONS-TOKEN-4",
        "PEER-OPTIONS-PASSWORD-5",
    ];
    let with_secret = Config::from_toml_str(&format!(
        r#"
        rest_api = true
        peer_options = '''{{"iceServers": [{{"urls": ["turn:t.example.com"], "username": "u",
            "credential": "{}"}}], "authToken": "{}", "nested": {{"TurnPassword": "{}"}}}}'''
        [ice]
        turn_urls = ["turn:turn.example.com:3478"]
        turn_secret = "{}"
        "#,
        secrets[2], secrets[3], secrets[4], secrets[0]
    ))
    .expect("valid");
    let with_static = Config::from_toml_str(&format!(
        r#"
        [ice]
        turn_urls = ["turn:turn.example.com:3478"]
        turn_username = "user"
        turn_credential = "{}"
        "#,
        secrets[1]
    ))
    .expect("valid");
    for config in [with_secret, with_static] {
        let f = Fixture::new();
        let s = Settings {
            streamer_port: config.streamer_port,
            player_port: config.player_port,
            sfu_port: config.sfu_port,
            peer_options: config.peer_options.clone(),
            max_players: config.max_players,
            admin_token: String::new(),
        };
        let app = f.app(Some(&s));
        let (status, body) = get(&app, "/api/config").await;
        assert_eq!(status, StatusCode::OK);
        let text = body.to_string();
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        // The places they were are still there, redacted, so the shape is Wilbur's.
        if !config.peer_options.is_empty() {
            let options = &body["config"]["peerOptions"];
            assert_eq!(options["iceServers"][0]["credential"], REDACTED);
            assert_eq!(options["iceServers"][0]["username"], "u");
            assert_eq!(options["authToken"], REDACTED);
            assert_eq!(options["nested"]["TurnPassword"], REDACTED);
            assert_eq!(&body["protocolConfig"]["peerConnectionOptions"], options);
        }
    }
}

// ---- the OpenAPI document ----

fn document() -> Value {
    serde_json::from_str(rest::OPENAPI).expect("the OpenAPI document is JSON")
}

#[tokio::test]
async fn the_api_definition_is_served_and_is_openapi_3_1() {
    let f = Fixture::new();
    let app = f.app(Some(&settings()));
    let (status, content_type, body) = call(&app, Method::GET, "/api/api-definition").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    assert_eq!(body, document());
    let version = body["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1."), "{version}");
    assert_eq!(body["servers"], json!([{"url": "/api"}]));
}

#[test]
fn the_api_definition_lists_exactly_the_routes_served() {
    let doc = document();
    let base = doc["servers"][0]["url"].as_str().expect("a server url");
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<String> = paths.keys().map(|p| format!("{base}{p}")).collect();
    let mut served: Vec<String> = rest::table().iter().map(|(p, _)| (*p).to_owned()).collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
    for (path, item) in paths {
        let methods: Vec<&String> = item.as_object().expect("a path item").keys().collect();
        assert_eq!(methods, ["get"], "{path}: only GET is served");
    }
}

/// Checks `value` against `schema`, for the keywords the document uses (`$ref` to a component,
/// `type`, `properties`, `required`, `items`, `enum`), and refuses properties the schema does
/// not list, so the document describes every field we send. Hand-written: a JSON Schema crate
/// would bring a large dependency tree for these six keywords.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let pointer = reference.strip_prefix('#').expect("a local $ref");
        let target = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} resolves"));
        return check(doc, target, value, at);
    }
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        let ok = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => panic!("type {other} not handled"),
        };
        assert!(ok, "{at}: {value} is not {kind}");
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        assert!(allowed.contains(value), "{at}: {value} not in {allowed:?}");
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required {
            let key = key.as_str().expect("a key");
            assert!(value.get(key).is_some(), "{at}: {key} missing");
        }
    }
    if let (Some(properties), Some(object)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object(),
    ) {
        for (key, field) in object {
            let property = properties
                .get(key)
                .unwrap_or_else(|| panic!("{at}: {key} is sent but not documented"));
            check(doc, property, field, &format!("{at}.{key}"));
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"));
        }
    }
}

#[tokio::test]
async fn every_body_served_matches_its_documented_schema() {
    let mut f = two_streamers_three_players_one_sfu().await;
    f.open(Role::Player, "10.0.0.9").await; // not subscribed: subscribedTo absent
    let app = f.app(Some(&settings()));
    let doc = document();
    let requests = [
        ("/status", "/api/status", "200"),
        ("/streamers", "/api/streamers", "200"),
        ("/streamers/{streamerId}", "/api/streamers/S1", "200"),
        ("/streamers/{streamerId}", "/api/streamers/Nope", "404"),
        ("/streamers/{streamerId}", "/api/streamers/%FF", "400"),
        ("/players", "/api/players", "200"),
        ("/players/{playerId}", "/api/players/Player4", "200"),
        ("/players/{playerId}", "/api/players/Nope", "404"),
        ("/config", "/api/config", "200"),
        ("/api-definition", "/api/api-definition", "200"),
    ];
    for (documented, path, code) in requests {
        let (status, body) = get(&app, path).await;
        assert_eq!(status.as_str(), code, "{path}: {body}");
        let mut response = &doc["paths"][documented]["get"]["responses"][code];
        if let Some(reference) = response.get("$ref").and_then(Value::as_str) {
            response = doc
                .pointer(&reference[1..])
                .expect("response $ref resolves");
        }
        let schema = &response["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{documented} {code} is documented");
        check(&doc, schema, &body, path);
    }
}
