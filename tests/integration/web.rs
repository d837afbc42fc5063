//! The player port's plain-HTTP side over real sockets (issue 11): static files and player
//! WebSockets on the same port and paths, and the client's address through trusted reverse
//! proxies for the session API's per-address limit and the players' logged address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use signalling::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::binary::{next_line, start, start_logged};
use crate::support::{self, CONFIG, TIMEOUT, TestPeer, TestServer};

/// A folder for one test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("signalling-web-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn get(url: &str) -> (u16, String, String) {
    let response = timeout(TIMEOUT, reqwest::get(url))
        .await
        .expect("an answer within the timeout")
        .expect("GET");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().expect("ASCII").to_owned())
        .unwrap_or_default();
    let body = response.text().await.expect("body");
    (status, content_type, body)
}

#[tokio::test]
async fn static_files_and_player_websockets_share_the_port_and_its_paths() {
    let dir = TempDir::new("static");
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("player.html"), "<html>the player page</html>").expect("write");
    std::fs::write(www.join("player.js"), "console.log(1)").expect("write");
    let server = TestServer::start(Config {
        serve: true,
        http_root: www,
        ..support::config()
    })
    .await;
    let base = format!("http://{}", server.player);

    let (status, content_type, body) = get(&format!("{base}/")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(body, "<html>the player page</html>");
    let (status, _, body) = get(&format!("{base}/player.html")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "<html>the player page</html>")
    );
    let (status, content_type, _) = get(&format!("{base}/player.js")).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    // Epic's frontend is opened with query parameters.
    let (status, _, body) = get(&format!("{base}/?StreamerId=DefaultStreamer&AutoConnect")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "<html>the player page</html>")
    );
    assert_eq!(get(&format!("{base}/missing.js")).await.0, 404);
    // Traversal as it comes on the wire (an HTTP client library would resolve it first).
    std::fs::write(dir.0.join("secret.txt"), "SECRET").expect("write");
    for target in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
    ] {
        let mut tcp = TcpStream::connect(server.player).await.expect("connect");
        let request = format!("GET {target} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        timeout(TIMEOUT, tcp.read_to_string(&mut answer))
            .await
            .expect("an answer within the timeout")
            .expect("read");
        assert!(answer.starts_with("HTTP/1.1 400"), "{target}: {answer}");
        assert!(!answer.contains("SECRET"), "{target}: {answer}");
    }
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);

    // The same port and the same paths upgrade to players (Epic's frontend connects to the
    // page's own URL).
    for path in ["/", "/player.html", "/player.js", "/healthz"] {
        let mut player =
            TestPeer::connect_url(&format!("ws://{}{path}", server.player), path).await;
        player.expect_text(CONFIG).await;
    }
    // And a page fetched on a kept-alive connection is followed by an upgrade on it.
    let mut tcp = TcpStream::connect(server.player).await.expect("connect");
    tcp.write_all(b"GET /player.html HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .expect("write");
    let page = read_until(&mut tcp, "the player page</html>").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    tcp.write_all(format!("{UPGRADE}\r\n").as_bytes())
        .await
        .expect("write");
    let switched = read_until(&mut tcp, "\r\n\r\n").await;
    assert!(switched.starts_with("HTTP/1.1 101"), "{switched}");
}

const UPGRADE: &str = "GET /player.html HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\n\
    upgrade: websocket\r\nsec-websocket-version: 13\r\n\
    sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// Reads from `tcp` until what came contains `end`; returns it.
async fn read_until(tcp: &mut TcpStream, end: &str) -> String {
    let mut got = Vec::new();
    timeout(TIMEOUT, async {
        let mut buf = [0; 4096];
        while !String::from_utf8_lossy(&got).contains(end) {
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed before {end:?}: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{end:?} within the timeout"));
    String::from_utf8_lossy(&got).into_owned()
}

/// Registers a new session from the socket address `local`, with `X-Forwarded-For: xff`.
async fn register(player: SocketAddr, local: Ipv4Addr, xff: &str, session: &str) -> u16 {
    let client = reqwest::Client::builder()
        .local_address(IpAddr::V4(local))
        .build()
        .expect("client");
    let request = client
        .post(format!("http://{player}/register/{session}/a"))
        .header("x-forwarded-for", xff);
    timeout(TIMEOUT, request.send())
        .await
        .expect("an answer within the timeout")
        .expect("POST")
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_per_address_session_limit_counts_the_forwarded_address_only_behind_a_proxy() {
    let localhost = Ipv4Addr::LOCALHOST;
    let mut config = support::config();
    config.reverse_proxy = true;
    config.sessions.max_sessions_per_address = 2;
    let on = TestServer::start(config.clone()).await;
    // One proxy (this socket) forwards two clients: each has its own share.
    assert_eq!(
        register(on.player, localhost, "198.51.100.1", "a1").await,
        200
    );
    assert_eq!(
        register(on.player, localhost, "198.51.100.1", "a2").await,
        200
    );
    assert_eq!(
        register(on.player, localhost, "198.51.100.1", "a3").await,
        429
    );
    assert_eq!(
        register(on.player, localhost, "198.51.100.2", "b1").await,
        200
    );
    // Entries a client wrote itself sit left of what the trusted proxy appended.
    assert_eq!(
        register(on.player, localhost, "203.0.113.9, 198.51.100.1", "a4").await,
        429
    );

    // Off, the header is ignored: the socket's address has the share, whatever it claims.
    config.reverse_proxy = false;
    let off = TestServer::start(config).await;
    assert_eq!(
        register(off.player, localhost, "198.51.100.1", "c1").await,
        200
    );
    assert_eq!(
        register(off.player, localhost, "198.51.100.2", "c2").await,
        200
    );
    assert_eq!(
        register(off.player, localhost, "198.51.100.3", "c3").await,
        429
    );
    let other = Ipv4Addr::new(127, 0, 0, 2);
    assert_eq!(register(off.player, other, "198.51.100.3", "c4").await, 200);
}

/// The `remote=` of the next player's "opened" log line.
async fn logged_remote(lines: &mut crate::binary::Lines) -> String {
    loop {
        let line = next_line(lines).await;
        if line.contains("opened") && line.contains("role=player") {
            return line
                .split("remote=")
                .nth(1)
                .and_then(|rest| rest.split(['}', ' ']).next())
                .unwrap_or_else(|| panic!("no remote= in {line}"))
                .to_owned();
        }
    }
}

#[tokio::test]
async fn a_players_logged_address_is_the_forwarded_one_behind_a_proxy() {
    let dir = TempDir::new("proxy-log");
    let config = dir.0.join("proxy.toml");
    std::fs::write(
        &config,
        "reverse_proxy = true\nreverse_proxy_num_proxies = 2\n",
    )
    .expect("write");
    let path = config.to_str().expect("UTF-8 path");
    let (_child, mut lines, _, player) = start(&["--config", path]).await;

    // The direct upgrade path.
    let mut request = format!("ws://{player}/")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "x-forwarded-for",
        HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.1.1.1"),
    );
    let (mut ws, _) = timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect within the timeout")
        .expect("connect");
    assert_eq!(logged_remote(&mut lines).await, "198.51.100.7:0");
    let _ = ws.close(None).await;

    // An upgrade after a request on a kept-alive connection (the path through hyper).
    let mut tcp = TcpStream::connect(player).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .expect("write");
    read_until(&mut tcp, "{\"status\":\"ok\"}").await;
    let upgrade = format!("{UPGRADE}forwarded: for=\"[2001:db8::5]:4711\", for=10.1.1.1\r\n\r\n");
    tcp.write_all(upgrade.as_bytes()).await.expect("write");
    read_until(&mut tcp, "\r\n\r\n").await;
    assert_eq!(logged_remote(&mut lines).await, "[2001:db8::5]:4711");

    // Off (the default), the headers are ignored.
    let (_child, mut lines, _, player) = start(&[]).await;
    let mut request = format!("ws://{player}/")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
    let (_ws, _) = timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect within the timeout")
        .expect("connect");
    assert!(logged_remote(&mut lines).await.starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn a_missing_http_root_is_one_warning_at_start_naming_it() {
    let dir = TempDir::new("missing-root");
    let config = dir.0.join("serve.toml");
    // Epic's shipped config.json names a Windows folder.
    std::fs::write(
        &config,
        "serve = true\nhttp_root = 'D:\\PixelStreamingInfrastructure\\SignallingWebServer\\www'\n",
    )
    .expect("write");
    let path = config.to_str().expect("UTF-8 path");
    let (_child, _lines, _, player, seen) = start_logged(&["--config", path]).await;
    let warnings: Vec<_> = seen.iter().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{seen:#?}");
    assert!(
        warnings[0].contains("PixelStreamingInfrastructure")
            && warnings[0].contains("http_root")
            && warnings[0].contains("is not a folder"),
        "{warnings:?}"
    );
    // The server runs: players connect, files are 404, `/` is the built-in player page.
    let mut p = TestPeer::connect(player, "player").await;
    p.expect_text(CONFIG).await;
    assert_eq!(get(&format!("http://{player}/player.html")).await.0, 404);
    let (status, _, body) = get(&format!("http://{player}/")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<script src=\"/signalling/player.js\"></script>"),
        "{body}"
    );
}

/// The built-in pages over a real socket: `/` is our player page with `serve` off and Epic's
/// (the http_root's) with it on; `/signalling/player` and `/signalling/streamer` always; the
/// streamer page learns the streamer port the server bound (the configured one is 0).
#[tokio::test]
async fn built_in_pages_are_served_and_the_root_is_ours_only_without_a_homepage() {
    const OURS: &str = "<script src=\"/signalling/player.js\"></script>";
    let server = TestServer::start(support::config()).await;
    let base = format!("http://{}", server.player);
    let (status, content_type, body) = get(&format!("{base}/")).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(body.contains(OURS), "{body}");
    for (path, content_type, needle) in [
        ("/signalling/player", "text/html; charset=utf-8", OURS),
        (
            "/signalling/streamer",
            "text/html; charset=utf-8",
            "<script src=\"/signalling/streamer.js\"></script>",
        ),
        (
            "/signalling/player.js",
            "text/javascript; charset=utf-8",
            "listStreamers",
        ),
        (
            "/signalling/streamer.js",
            "text/javascript; charset=utf-8",
            "endpointId",
        ),
        (
            "/signalling/input.js",
            "text/javascript; charset=utf-8",
            "MouseDown",
        ),
        ("/signalling/pages.css", "text/css; charset=utf-8", "body"),
    ] {
        let (status, got_type, body) = get(&format!("{base}{path}")).await;
        assert_eq!((status, got_type.as_str()), (200, content_type), "{path}");
        assert!(body.contains(needle), "{path}");
    }
    let (status, content_type, body) = get(&format!("{base}/signalling/config.json")).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let config: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        config,
        serde_json::json!({"streamerPort": server.streamer.port(), "streamerTls": false})
    );
    // A player WebSocket on the pages' paths still upgrades.
    let mut player = TestPeer::connect_url(
        &format!("ws://{}/signalling/player", server.player),
        "player",
    )
    .await;
    player.expect_type("config").await;

    let dir = TempDir::new("builtin");
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("player.html"), "<html>Epic's frontend</html>").expect("write");
    let server = TestServer::start(Config {
        serve: true,
        http_root: www,
        ..support::config()
    })
    .await;
    let base = format!("http://{}", server.player);
    let (status, _, body) = get(&format!("{base}/")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "<html>Epic's frontend</html>")
    );
    let (status, _, body) = get(&format!("{base}/signalling/player")).await;
    assert_eq!(status, 200);
    assert!(body.contains(OURS));
}
