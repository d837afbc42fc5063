//! Abuse limits over real sockets (README, "Abuse limits"): each at its limit (allowed), over it
//! (refused with its status or close code) and after it frees (a connection closed, the window
//! over). Windows are shortened with `Server::set_limit_window`; waiting for a window to end is
//! the behaviour under test, never a synchronisation.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use signalling::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::http::Api;
use crate::support::{self, CONFIG, TIMEOUT, TestPeer, TestServer};
use crate::transport::read_response;

/// The rate window in these tests.
const WINDOW: Duration = Duration::from_secs(1);
const UPGRADE: &str = "Host: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// A server with every limit off but what `change` turns on, and a short window.
async fn server(change: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = support::config();
    config.max_connections_per_ip = 0;
    config.upgrades_per_ip_per_minute = 0;
    config.http_requests_per_minute = 0;
    config.messages_per_second = 0;
    config.max_streamers = 0;
    config.first_message_timeout = Duration::ZERO;
    config.sessions.registrations_per_minute = 0;
    config.sessions.max_streams_per_address = 0;
    change(&mut config);
    TestServer::start_with(config, |s| s.set_limit_window(WINDOW)).await
}

/// A raw upgrade on `addr` with `extra` header lines: the whole response, or `None` when the
/// server closed the connection without one.
async fn raw_upgrade(addr: SocketAddr, extra: &str) -> Option<String> {
    raw_upgrade_keeping(addr, extra).await.0
}

/// As [`raw_upgrade`], also returning the connection (open, if the upgrade was accepted).
async fn raw_upgrade_keeping(addr: SocketAddr, extra: &str) -> (Option<String>, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET / HTTP/1.1\r\n{UPGRADE}{extra}\r\n");
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return (None, tcp);
    }
    let mut first = [0u8; 1];
    match timeout(TIMEOUT, tcp.read(&mut first)).await {
        Err(_) => panic!("no answer and no close within {TIMEOUT:?}"),
        Ok(Ok(0) | Err(_)) => return (None, tcp),
        Ok(Ok(_)) => {}
    }
    let rest = read_response(&mut tcp).await;
    (Some(format!("{}{rest}", first[0] as char)), tcp)
}

/// A player WebSocket as if forwarded by a proxy for `client`.
async fn player_via_proxy(addr: SocketAddr, client: &str) -> TestPeer {
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-Forwarded-For", HeaderValue::from_str(client).unwrap());
    let (ws, _) = timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect within the timeout")
        .unwrap_or_else(|e| panic!("player for {client}: {e}"));
    let mut peer = TestPeer {
        ws,
        name: format!("player for {client}"),
    };
    peer.expect_text(CONFIG).await;
    peer
}

/// Retries `attempt` until it succeeds (a place freed by a connection that is ending frees when
/// its task ends, a moment after the client sees the close), failing after [`TIMEOUT`].
async fn eventually<T, F: Future<Output = Option<T>>>(mut attempt: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(done) = attempt().await {
            return done;
        }
        assert!(Instant::now() < deadline, "not admitted within {TIMEOUT:?}");
        tokio::task::yield_now().await;
    }
}

fn retry_after(response: &str) -> Option<u64> {
    response.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("retry-after:")
            .and_then(|v| v.trim().parse().ok())
    })
}

#[tokio::test]
async fn connections_per_ip_are_counted_per_port_closed_over_the_limit_and_free_again_after_a_close()
 {
    let server = server(|c| c.max_connections_per_ip = 2).await;
    let a = server.player().await;
    let _b = server.player().await;
    // The third from 127.0.0.1 on the player port is closed before any request is read.
    assert_eq!(raw_upgrade(server.player, "").await, None);
    // The streamer port counts its own connections.
    let _s1 = server.streamer_unidentified().await;
    let _s2 = server.streamer_unidentified().await;
    assert_eq!(raw_upgrade(server.streamer, "").await, None);
    // One player leaves: a player is admitted again, and then the port is full again.
    a.close().await;
    let _c = eventually(|| async {
        let (response, tcp) = raw_upgrade_keeping(server.player, "").await;
        response.map(|r| {
            assert!(r.starts_with("HTTP/1.1 101"), "{r}");
            tcp
        })
    })
    .await;
    assert_eq!(raw_upgrade(server.player, "").await, None);
}

#[tokio::test]
async fn behind_a_trusted_proxy_forwarded_addresses_count_apart_and_over_the_limit_get_429() {
    let server = server(|c| {
        c.max_connections_per_ip = 1;
        c.reverse_proxy = true;
    })
    .await;
    let _one = player_via_proxy(server.player, "203.0.113.1").await;
    let _two = player_via_proxy(server.player, "203.0.113.2").await;
    let refused = raw_upgrade(server.player, "X-Forwarded-For: 203.0.113.1\r\n")
        .await
        .expect("a 429, not a bare close: the address is known only from the head");
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.contains("max_connections_per_ip = 1"), "{refused}");
}

#[tokio::test]
async fn without_a_trusted_proxy_forwarded_addresses_count_as_the_socket_address() {
    let server = server(|c| c.max_connections_per_ip = 1).await;
    let _one = player_via_proxy(server.player, "203.0.113.1").await;
    assert_eq!(
        raw_upgrade(server.player, "X-Forwarded-For: 203.0.113.2\r\n").await,
        None
    );
}

#[tokio::test]
async fn upgrades_per_ip_per_minute_answer_429_with_retry_after_until_the_window_ends() {
    let server = server(|c| c.upgrades_per_ip_per_minute = 2).await;
    let first = server.player().await;
    // The window began before the first upgrade's answer.
    let start = Instant::now();
    first.close().await;
    let second = server.player().await;
    second.close().await;
    let refused = raw_upgrade(server.player, "").await.expect("a response");
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert_eq!(retry_after(&refused), Some(1), "{refused}");
    assert!(
        refused.contains("upgrades_per_ip_per_minute = 2"),
        "{refused}"
    );
    // Streamers on their own port have their own count.
    let _s = server.streamer_unidentified().await;
    // The window ends: upgrades are admitted again.
    sleep_until(start + WINDOW).await;
    let _again = server.player().await;
}

#[tokio::test]
async fn http_requests_per_minute_answer_429_as_wilbur_and_leave_the_session_api_alone() {
    let server = server(|c| c.http_requests_per_minute = 3).await;
    let api = Api::new(&server);
    assert_eq!(api.get("/healthz").await.0, 200);
    let start = Instant::now();
    for _ in 0..2 {
        assert_eq!(api.get("/healthz").await.0, 200);
    }
    let response = api
        .client
        .get(api.url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 429);
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(retry, Some(1));
    assert_eq!(
        response.text().await.unwrap(),
        "Too many requests, please try again later.\n"
    );
    // The session API is not counted; nor are WebSocket upgrades.
    assert_eq!(api.get("/iceServers").await.0, 200);
    let _player = server.player().await;
    sleep_until(start + WINDOW).await;
    assert_eq!(api.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn a_player_over_its_message_rate_is_closed_1008_rate_limit_and_streamers_are_not_limited() {
    let server = server(|c| {
        c.messages_per_second = 5;
        c.message_burst = 3;
    })
    .await;
    let mut player = server.player().await;
    // The burst: three pings, three pongs.
    for _ in 0..3 {
        player.sync().await;
    }
    // The bucket refills at 5 a second: one more after 200 ms.
    let refilled = Instant::now() + Duration::from_millis(250);
    sleep_until(refilled).await;
    player.sync().await;
    // Then a flood is closed.
    for _ in 0..20 {
        if timeout(
            TIMEOUT,
            futures_util::SinkExt::send(
                &mut player.ws,
                tokio_tungstenite::tungstenite::Message::text(r#"{"type":"listStreamers"}"#),
            ),
        )
        .await
        .is_err()
        {
            break;
        }
    }
    let (close, _) = player.expect_close_skipping_messages().await;
    assert_eq!(close, (1008, "rate limit".to_owned()));

    // A streamer sends as much as it likes.
    let mut streamer = server.streamer_unidentified().await;
    for _ in 0..50 {
        streamer.sync().await;
    }
}

#[tokio::test]
async fn max_streamers_answers_503_before_the_upgrade_until_a_streamer_leaves() {
    let server = server(|c| c.max_streamers = 1).await;
    let first = server.streamer("A").await;
    let refused = raw_upgrade(server.streamer, "").await.expect("a response");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("max_streamers = 1"), "{refused}");
    assert!(retry_after(&refused).is_some(), "{refused}");
    // Players and SFUs are not streamers.
    let _p = server.player().await;
    let _f = server.sfu().await;
    first.close().await;
    eventually(|| async {
        raw_upgrade(server.streamer, "")
            .await
            .filter(|r| r.starts_with("HTTP/1.1 101"))
    })
    .await;
}

#[tokio::test]
async fn a_player_that_sends_nothing_within_first_message_timeout_is_closed_1008() {
    let server = server(|c| c.first_message_timeout = Duration::from_millis(300)).await;
    let mut silent = server.player().await;
    let mut talking = server.player().await;
    assert_eq!(talking.list_streamers().await, support::streamer_list(&[]));
    let mut streamer = server.streamer_unidentified().await;
    assert_eq!(
        silent.expect_close().await,
        (1008, "no message within first_message_timeout".to_owned())
    );
    // One message was enough; streamers are not held to it.
    talking.expect_silence(Duration::from_millis(400)).await;
    streamer.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn session_registrations_per_minute_answer_429_until_the_window_ends() {
    let server = server(|c| c.sessions.registrations_per_minute = 2).await;
    let api = Api::new(&server);
    api.register("s", "a").await;
    let start = Instant::now();
    api.register("s", "b").await;
    let (status, body) = api.try_register("s", "c").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["limit"], "registrations_per_minute", "{body}");
    assert_eq!(body["max"], 2, "{body}");
    // Other requests of the API are not registrations.
    assert_eq!(api.get("/iceServers").await.0, 200);
    sleep_until(start + WINDOW).await;
    api.register("s", "c").await;
}

#[tokio::test]
async fn session_event_streams_per_address_answer_429_until_one_closes() {
    let server = server(|c| c.sessions.max_streams_per_address = 1).await;
    let api = Api::new(&server);
    api.register("s", "a").await;
    api.register("s", "b").await;
    let stream = api.events("s", "a").await;
    let refused = api.open_events("s", "b", None).await;
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["limit"], "max_streams_per_address", "{body}");
    drop(stream);
    eventually(|| async {
        let response = api.open_events("s", "b", None).await;
        (response.status() == 200).then_some(response)
    })
    .await;
}

#[tokio::test]
async fn a_kept_alive_http_connection_that_never_upgrades_is_closed_after_handshake_timeout() {
    let server = server(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let mut tcp = TcpStream::connect(server.player).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("send");
    let response = read_response(&mut tcp).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Then nothing: the server closes the idle connection.
    let mut rest = Vec::new();
    let read = timeout(TIMEOUT, tcp.read_to_end(&mut rest))
        .await
        .expect("closed within the timeout");
    assert!(read.is_err() || rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn each_refusal_is_a_warning_naming_the_address_and_a_flood_of_them_costs_a_few_lines() {
    let (_child, mut lines, streamer, player, _) = crate::binary::start_logged(&[
        "--upgrades_per_ip_per_minute",
        "1",
        "--messages_per_second",
        "1",
        "--message_burst",
        "1",
    ])
    .await;
    let mut p = TestPeer::connect(player, "player").await;
    p.expect_type("config").await;
    for _ in 0..10 {
        let refused = raw_upgrade(player, "").await.expect("a response");
        assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    }
    // The player's second message is over its bucket.
    p.send_json(r#"{"type":"listStreamers"}"#).await;
    p.send_json(r#"{"type":"listStreamers"}"#).await;
    let (close, _) = p.expect_close_skipping_messages().await;
    assert_eq!(close, (1008, "rate limit".to_owned()));
    // A marker after them all.
    let _s = TestPeer::connect(streamer, "streamer").await;
    let mut refusals = Vec::new();
    let mut rate_limited = Vec::new();
    loop {
        let line = crate::binary::next_line(&mut lines).await;
        if line.contains("opened") && line.contains("role=streamer") {
            break;
        }
        if line.contains("WARN") && line.contains("upgrades_per_ip_per_minute") {
            refusals.push(line);
        } else if line.contains("WARN") && line.contains("messages_per_second") {
            rate_limited.push(line);
        }
    }
    // The 1st, 2nd, 4th and 8th of the ten refusals; each names the address and the port.
    assert_eq!(refusals.len(), 4, "{refusals:#?}");
    for line in &refusals {
        assert!(
            line.contains("client=127.0.0.1") && line.contains("port=\"player\""),
            "{line}"
        );
    }
    assert!(
        refusals[3].contains("8 refusals from this address"),
        "{refusals:#?}"
    );
    // The rate-limited player's one warning carries its connection id.
    assert_eq!(rate_limited.len(), 1, "{rate_limited:#?}");
    assert!(
        rate_limited[0].contains("conn{id=") && rate_limited[0].contains("role=player"),
        "{}",
        rate_limited[0]
    );
}
