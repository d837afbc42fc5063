//! `/metrics`: the Prometheus families move as real peers act over real sockets (README
//! "Metrics"). A scrape is parsed into series → value; what the server counts after a peer could
//! have seen its effect (a close, a refusal the router counts) is waited for by scraping until
//! it shows, with the usual timeout as the failure bound.

use std::collections::HashMap;
use std::net::SocketAddr;

use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::http::Api;
use crate::support::{TIMEOUT, TestPeer, TestServer, config, player_disconnected};
use crate::transport::read_response;

/// A scrape's samples, by series (`name{labels}` exactly as written).
#[derive(Debug)]
struct Samples(HashMap<String, f64>);

impl Samples {
    /// Parses the text exposition format: `# ` lines are comments, each other line is a series
    /// and its value (labels' values here hold no spaces).
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("series value");
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().unwrap_or_else(|_| panic!("a number in {l:?}")),
                };
                (series.to_owned(), value)
            })
            .collect();
        Self(samples)
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in {:#?}", self.0))
    }
}

/// GET `url` with an optional bearer token: the status and the body.
async fn get(url: &str, bearer: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = timeout(TIMEOUT, request.send())
        .await
        .expect("reply within the timeout")
        .expect("HTTP request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let body = response.text().await.expect("body");
    if status == 200 && body.contains("# TYPE") {
        assert_eq!(
            content_type.as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
    }
    (status, body)
}

async fn scrape(addr: SocketAddr) -> Samples {
    let (status, body) = get(&format!("http://{addr}/metrics"), None).await;
    assert_eq!(status, 200, "{body}");
    Samples::parse(&body)
}

/// Scrapes until `done` holds (the server counts some facts just after a peer sees them).
async fn scrape_until(addr: SocketAddr, done: impl Fn(&Samples) -> bool) -> Samples {
    let mut last = None;
    let waited = timeout(TIMEOUT, async {
        loop {
            let samples = scrape(addr).await;
            if done(&samples) {
                return samples;
            }
            last = Some(samples);
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("not reached within {TIMEOUT:?}; last scrape {last:#?}"))
}

fn messages(direction: &str, kind: &str) -> String {
    format!(r#"signalling_messages_total{{type="{kind}",direction="{direction}"}}"#)
}

#[tokio::test]
async fn a_negotiation_moves_connections_subscriptions_messages_and_the_histogram() {
    let server = TestServer::start(config()).await;
    let before = scrape(server.player).await;
    assert_eq!(before.get(r#"signalling_connections{role="player"}"#), 0.0);
    assert_eq!(before.get("signalling_negotiation_seconds_count"), 0.0);
    let version = format!(
        r#"signalling_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(before.get(&version), 1.0);

    let mut streamer = server.streamer("S").await;
    let mut player = server
        .subscribed_player(&mut streamer, "S", "Player0")
        .await;
    streamer
        .send_json(r#"{"type":"offer","playerId":"Player0","sdp":"v=0"}"#)
        .await;
    player.expect_type("offer").await;
    player.send_json(r#"{"type":"answer","sdp":"v=0"}"#).await;
    streamer.expect_type("answer").await;

    let s = scrape(server.player).await;
    for role in ["streamer", "player"] {
        assert_eq!(
            s.get(&format!(r#"signalling_connections{{role="{role}"}}"#)),
            1.0
        );
        assert_eq!(
            s.get(&format!(r#"signalling_connections_total{{role="{role}"}}"#)),
            1.0
        );
    }
    assert_eq!(s.get(r#"signalling_connections{role="sfu"}"#), 0.0);
    assert_eq!(s.get("signalling_streamers"), 1.0);
    assert_eq!(s.get("signalling_subscriptions"), 1.0);
    for (direction, kind, count) in [
        ("in", "endpointId", 1.0),
        ("in", "subscribe", 1.0),
        ("in", "offer", 1.0),
        ("in", "answer", 1.0),
        ("out", "config", 2.0),
        ("out", "identify", 1.0),
        ("out", "endpointIdConfirm", 1.0),
        ("out", "playerConnected", 1.0),
        ("out", "offer", 1.0),
        ("out", "answer", 1.0),
        ("in", "config", 0.0),
    ] {
        assert_eq!(
            s.get(&messages(direction, kind)),
            count,
            "{direction} {kind}"
        );
    }
    assert_eq!(s.get("signalling_negotiation_seconds_count"), 1.0);
    assert_eq!(
        s.get(r#"signalling_negotiation_seconds_bucket{le="+Inf"}"#),
        1.0
    );

    // The player leaves with 1000: its close is counted with its code, the gauges fall.
    player
        .ws
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await
        .expect("close");
    streamer.expect_text(&player_disconnected("Player0")).await;
    let s = scrape_until(server.player, |s| {
        s.0.get(r#"signalling_closes_total{role="player",code="1000"}"#) == Some(&1.0)
    })
    .await;
    assert_eq!(s.get(r#"signalling_connections{role="player"}"#), 0.0);
    assert_eq!(s.get(r#"signalling_connections_total{role="player"}"#), 1.0);
    assert_eq!(s.get("signalling_subscriptions"), 0.0);
    assert_eq!(s.get(&messages("out", "playerDisconnected")), 1.0);

    // The streamer ends its TCP connection without a closing handshake: the server answers
    // 1002 (protocol error), and that is the code counted.
    streamer.drop_tcp();
    let s = scrape_until(server.player, |s| {
        s.0.get(r#"signalling_closes_total{role="streamer",code="1002"}"#) == Some(&1.0)
    })
    .await;
    assert_eq!(s.get("signalling_streamers"), 0.0);
    assert_eq!(s.get(r#"signalling_connections{role="streamer"}"#), 0.0);
}

const UPGRADE: &str = "Host: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test]
async fn every_401_of_a_handshake_counts_as_an_auth_failure_of_its_port() {
    let mut cfg = config();
    cfg.player_token = "p".into();
    cfg.streamer_token = "s".into();
    cfg.sfu_token = "f".into();
    let server = TestServer::start(cfg).await;
    for addr in [server.player, server.player, server.streamer, server.sfu] {
        let response = crate::tokens::upgrade(addr, "/?token=wrong", "").await;
        assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    }
    // An upgrade after a plain request on a kept-alive connection takes the other path.
    let mut tcp = TcpStream::connect(server.player).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send");
    let healthz = read_response(&mut tcp).await;
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    tcp.write_all(format!("GET / HTTP/1.1\r\n{UPGRADE}\r\n").as_bytes())
        .await
        .expect("send");
    let later = read_response(&mut tcp).await;
    assert!(later.starts_with("HTTP/1.1 401"), "{later}");

    let s = scrape(server.player).await;
    assert_eq!(
        s.get(r#"signalling_auth_failures_total{role="player"}"#),
        3.0
    );
    assert_eq!(
        s.get(r#"signalling_auth_failures_total{role="streamer"}"#),
        1.0
    );
    assert_eq!(s.get(r#"signalling_auth_failures_total{role="sfu"}"#), 1.0);
    assert_eq!(s.get(r#"signalling_connections_total{role="player"}"#), 0.0);
}

#[tokio::test]
async fn limits_that_refuse_are_counted_by_their_key() {
    let mut cfg = config();
    cfg.max_message_size = 1024;
    cfg.max_players = 1;
    let server = TestServer::start(cfg).await;

    // Too big: closed 1009, counted as max_message_size and as a close with its code.
    let mut big = server.player().await;
    big.send_json(&format!(
        r#"{{"type":"stats","data":"{}"}}"#,
        "x".repeat(2000)
    ))
    .await;
    assert_eq!(big.expect_close().await.0, 1009);

    // A second player for a streamer with max_players = 1: subscribeFailed.
    let mut streamer = server.streamer("S").await;
    let _first = server
        .subscribed_player(&mut streamer, "S", "Player1")
        .await;
    let mut second = server.player().await;
    second.subscribe("S").await;
    second.expect_type("subscribeFailed").await;

    let s = scrape_until(server.player, |s| {
        s.0.get(r#"signalling_rate_limited_total{limit="max_players"}"#) == Some(&1.0)
            && s.0
                .get(r#"signalling_closes_total{role="player",code="1009"}"#)
                == Some(&1.0)
    })
    .await;
    assert_eq!(
        s.get(r#"signalling_rate_limited_total{limit="max_message_size"}"#),
        1.0
    );
    assert_eq!(s.get("signalling_queue_full_total"), 0.0);
    assert_eq!(
        s.get(r#"signalling_rate_limited_total{limit="max_sessions"}"#),
        0.0
    );
}

/// The abuse limits of `src/limits.rs` count by their key too: an upgrade refused 429 on a
/// connection's first request, a plain request refused 429 by hyper's side, a player closed
/// 1008 by its message bucket, a streamer refused 503.
#[tokio::test]
async fn abuse_limits_that_refuse_are_counted_by_their_key() {
    let mut cfg = config();
    cfg.upgrades_per_ip_per_minute = 2;
    cfg.http_requests_per_minute = 1;
    cfg.messages_per_second = 1;
    cfg.message_burst = 2;
    cfg.max_streamers = 1;
    let server = TestServer::start(cfg).await;
    let series = |limit: &str| format!(r#"signalling_rate_limited_total{{limit="{limit}"}}"#);

    // Two upgrades pass; the third from the same address in the minute gets 429.
    let mut flooder = server.player().await;
    let _second = server.player().await;
    let response = crate::tokens::upgrade(server.player, "/", "").await;
    assert!(response.starts_with("HTTP/1.1 429 "), "{response}");

    // Three messages against a burst of two: closed 1008 "rate limit".
    for _ in 0..3 {
        flooder.send_json(r#"{"type":"listStreamers"}"#).await;
    }
    let ((code, reason), _) = flooder.expect_close_skipping_messages().await;
    assert_eq!((code, reason.as_str()), (1008, "rate limit"));

    // One streamer is all max_streamers allows: the second gets 503 before the upgrade.
    let _streamer = server.streamer("S").await;
    let response = crate::tokens::upgrade(server.streamer, "/", "").await;
    assert!(response.starts_with("HTTP/1.1 503 "), "{response}");

    // One page a minute: the second GET / is refused 429 (the scrape itself is not counted).
    let page = format!("http://{}/", server.player);
    assert_eq!(get(&page, None).await.0, 200);
    assert_eq!(get(&page, None).await.0, 429);
    let samples = scrape_until(server.player, |s| {
        s.0.get(&series("http_requests_per_minute")) == Some(&1.0)
    })
    .await;
    assert_eq!(samples.get(&series("upgrades_per_ip_per_minute")), 1.0);
    assert_eq!(samples.get(&series("max_streamers")), 1.0);
    assert_eq!(samples.get(&series("messages_per_second")), 1.0);
    assert_eq!(samples.get(&series("first_message_timeout")), 0.0);
}

#[tokio::test]
async fn the_session_apis_429s_and_gauges_show() {
    let mut cfg = config();
    cfg.sessions.max_sessions = 1;
    let server = TestServer::start(cfg).await;
    let api = Api::new(&server);
    api.register("room", "a").await;
    api.register("room", "b").await;
    let (status, _) = api.try_register("other", "c").await;
    assert_eq!(status, 429);
    // b has no event stream yet: what a sends it waits.
    api.send("room", "a", "b", "hello", serde_json::json!({"x": 1}))
        .await;
    let s = scrape(server.player).await;
    assert_eq!(
        s.get(r#"signalling_rate_limited_total{limit="max_sessions"}"#),
        1.0
    );
    assert_eq!(s.get("signalling_sse_sessions"), 1.0);
    let queued = s.get("signalling_sse_events_queued");
    assert!(queued >= 1.0, "{queued}");

    // b reads its stream: its events are delivered, the queue shrinks.
    let mut events = api.events("room", "b").await;
    let (_, data) = events.next().await;
    assert_eq!(data["type"], "hello", "{data}");
    scrape_until(server.player, |s| {
        s.0.get("signalling_sse_events_queued")
            .is_some_and(|q| *q < queued)
    })
    .await;
    drop(events);
    api.unregister("room", "a").await;
    api.unregister("room", "b").await;
    scrape_until(server.player, |s| {
        s.0.get("signalling_sse_sessions") == Some(&0.0)
            && s.0.get("signalling_sse_events_queued") == Some(&0.0)
    })
    .await;
}

#[tokio::test]
async fn with_admin_token_a_scrape_needs_the_bearer() {
    let mut cfg = config();
    cfg.admin_token = "adm".into();
    let server = TestServer::start(cfg).await;
    let url = format!("http://{}/metrics", server.player);
    let (status, body) = get(&url, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("signalling_"), "{body}");
    assert_eq!(get(&url, Some("wrong")).await.0, 401);
    let (status, body) = get(&url, Some("adm")).await;
    assert_eq!(status, 200);
    Samples::parse(&body).get("signalling_streamers");
}

#[tokio::test]
async fn metrics_off_serves_no_metrics() {
    let mut cfg = config();
    cfg.metrics = false;
    let server = TestServer::start(cfg).await;
    let (_, body) = get(&format!("http://{}/metrics", server.player), None).await;
    assert!(!body.contains("signalling_"), "{body}");
}

/// A free port: bound and released (metrics_port 0 means "the player port", so a test of a
/// port of its own needs a number).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test]
async fn metrics_port_serves_metrics_and_healthz_only_and_the_player_port_none() {
    let mut cfg = config();
    cfg.metrics_port = free_port();
    let server = signalling::server::Server::bind(cfg).await.expect("bind");
    let own = server.metrics_addr().expect("a metrics port");
    let player = server.player_addr();
    let token = server.shutdown_token();
    let task = tokio::spawn(server.run_until(std::future::pending()));

    let mut peer = TestPeer::connect(player, "player").await;
    peer.expect_type("config").await;
    let s = scrape(own).await;
    assert_eq!(s.get(r#"signalling_connections{role="player"}"#), 1.0);
    let (status, body) = get(&format!("http://{own}/healthz"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&format!("http://{own}/api/status"), None).await.0, 404);
    let (_, body) = get(&format!("http://{player}/metrics"), None).await;
    assert!(!body.contains("signalling_"), "{body}");

    token.cancel();
    timeout(TIMEOUT, task)
        .await
        .expect("stops")
        .expect("no panic")
        .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_whose_queue_overflows_counts_as_queue_full() {
    let mut cfg = config();
    cfg.max_queued_messages = 16;
    let server = TestServer::start(cfg).await;
    let mut streamer = server.streamer("S").await;
    let _sink = server
        .subscribed_player(&mut streamer, "S", "Player0")
        .await;
    // The player reads nothing from here; 600 × 64 KiB is far beyond a loopback socket buffer.
    let offer = format!(
        r#"{{"type":"offer","playerId":"Player0","sdp":"{}"}}"#,
        "s".repeat(64 * 1024)
    );
    for _ in 0..600 {
        streamer.send_json(&offer).await;
    }
    // Counted where the router task closes it, before the disconnect it then sends.
    streamer.expect_text(&player_disconnected("Player0")).await;
    let s = scrape(server.player).await;
    assert_eq!(s.get("signalling_queue_full_total"), 1.0);
    assert_eq!(
        s.get(r#"signalling_rate_limited_total{limit="overflow_timeout"}"#),
        0.0
    );
}
