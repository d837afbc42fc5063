//! `player_token`, `streamer_token`, `sfu_token`: a WebSocket presents its port's shared token in
//! its URL (`?token=`) or as `Authorization: Bearer`, or is answered 401 before the upgrade. Each
//! port has its own token, and plain HTTP on the player port is not asked for one. `admin_token`
//! guards the REST API's routes that reveal addresses or settings.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::{TestPeer, TestServer, config};
use crate::transport::read_response;

const TOKEN: &str = "tok+en/=";
const UPGRADE: &str = "Host: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

async fn server() -> TestServer {
    let mut config = config();
    config.player_token = TOKEN.to_owned();
    TestServer::start(config).await
}

/// The response to a raw upgrade request for `target` with `extra` header lines, on `addr`.
pub(crate) async fn upgrade(addr: SocketAddr, target: &str, extra: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {target} HTTP/1.1\r\n{UPGRADE}{extra}\r\n");
    tcp.write_all(request.as_bytes()).await.expect("send");
    read_response(&mut tcp).await
}

#[tokio::test]
async fn players_with_the_token_get_config_and_others_get_401_before_the_upgrade() {
    let server = server().await;
    // In the URL, encoded as a browser's URLSearchParams would.
    let url = format!("ws://{}/?StreamerId=x&token=tok%2Ben%2F%3D", server.player);
    let mut player = TestPeer::connect_url(&url, "player").await;
    player.expect_type("config").await;

    // As a bearer token, from a proxy or a native client.
    let mut request = format!("ws://{}/", server.player)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("bearer");
    let mut bearer = TestPeer {
        ws,
        name: "bearer".into(),
    };
    bearer.expect_type("config").await;

    for (target, extra) in [
        ("/", ""),
        ("/?token=", ""),
        ("/?token=tok%2Ben", ""),
        ("/?token=wrong", ""),
        ("/", "Authorization: Bearer wrong\r\n"),
        ("/", "Authorization: Basic dG9rK2VuLz0=\r\n"),
    ] {
        let response = upgrade(server.player, target, extra).await;
        assert!(
            response.starts_with("HTTP/1.1 401 "),
            "{target} {extra:?}: {response}"
        );
        assert!(
            response
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{response}"
        );
        assert!(!response.contains(TOKEN), "{response}");
    }
    let accepted = upgrade(server.player, "/?token=tok%2Ben%2F%3D", "").await;
    assert!(accepted.starts_with("HTTP/1.1 101 "), "{accepted}");

    // The streamer and the SFU ports are not asked for the player's token.
    let mut streamer = TestPeer::connect(server.streamer, "streamer").await;
    streamer.expect_type("config").await;
    let mut sfu = TestPeer::connect(server.sfu, "sfu").await;
    sfu.expect_type("config").await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_upgrade_after_plain_http_on_a_kept_alive_connection_needs_the_token_too() {
    let server = server().await;
    let mut tcp = TcpStream::connect(server.player).await.expect("connect");
    // Plain HTTP is not asked for the token.
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send");
    let health = read_response(&mut tcp).await;
    assert!(health.starts_with("HTTP/1.1 200 "), "{health}");
    tcp.write_all(format!("GET /?token=nope HTTP/1.1\r\n{UPGRADE}\r\n").as_bytes())
        .await
        .expect("send");
    let refused = read_response(&mut tcp).await;
    assert!(refused.starts_with("HTTP/1.1 401 "), "{refused}");
    server.shutdown().await;
}

#[tokio::test]
async fn streamers_and_sfus_present_their_own_tokens_and_a_players_token_is_not_one() {
    let mut config = config();
    config.player_token = TOKEN.to_owned();
    config.streamer_token = "streamer-secret".to_owned();
    config.sfu_token = "sfu-secret".to_owned();
    let server = TestServer::start(config).await;
    for (addr, token) in [
        (server.streamer, "streamer-secret"),
        (server.sfu, "sfu-secret"),
    ] {
        for wrong in ["", "?token=wrong", "?token=tok%2Ben%2F%3D"] {
            let response = upgrade(addr, &format!("/{wrong}"), "").await;
            assert!(response.starts_with("HTTP/1.1 401 "), "{wrong}: {response}");
        }
        let mut peer = TestPeer::connect_url(&format!("ws://{addr}/?token={token}"), "peer").await;
        peer.expect_type("config").await;
    }
    // The streamer's token does not open a player WebSocket.
    let response = upgrade(server.player, "/?token=streamer-secret", "").await;
    assert!(response.starts_with("HTTP/1.1 401 "), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn admin_token_guards_the_api_routes_that_reveal_addresses_or_settings() {
    let mut config = config();
    config.admin_token = "adm1n".to_owned();
    config.rest_api = true;
    let server = TestServer::start(config).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", server.player);
    for path in [
        "/api/streamers",
        "/api/players",
        "/api/players/Player0",
        "/api/config",
    ] {
        for bearer in [None, Some("wrong"), Some("adm1n ")] {
            let mut request = client.get(url(path));
            if let Some(bearer) = bearer {
                request = request.bearer_auth(bearer);
            }
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            // "adm1n " has a trailing space, which the check trims: the one right token.
            let expected = if bearer == Some("adm1n ") {
                [200, 404]
            } else {
                [401, 401]
            };
            assert!(expected.contains(&status), "{path} {bearer:?}: {status}");
            if status == 401 {
                let challenge = response.headers().get("www-authenticate").cloned();
                assert_eq!(
                    challenge.as_ref().and_then(|v| v.to_str().ok()),
                    Some("Bearer")
                );
                let body: serde_json::Value = response.json().await.expect("json");
                assert!(
                    body["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("admin")),
                    "{body}"
                );
            }
        }
    }
    for path in ["/api/status", "/api/api-definition", "/healthz"] {
        let status = client
            .get(url(path))
            .send()
            .await
            .expect("request")
            .status();
        assert_eq!(status.as_u16(), 200, "{path}");
    }
    server.shutdown().await;
}
