//! PROTOCOL.md §1: handshake (subprotocol selection, any path) and the player port's HTTP side.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{CONFIG, TestPeer, TestServer};

#[tokio::test]
async fn first_offered_subprotocol_is_selected_on_every_port() {
    let server = TestServer::with_defaults().await;
    for addr in [server.streamer, server.player, server.sfu] {
        let (mut peer, selected) = TestPeer::connect_with_protocols(addr, "a, b").await;
        assert_eq!(selected.as_deref(), Some("a"), "port {addr}");
        peer.expect_text(CONFIG).await;
    }
}

#[tokio::test]
async fn any_path_and_query_is_accepted_on_every_port() {
    let server = TestServer::with_defaults().await;
    for addr in [server.streamer, server.player, server.sfu] {
        let mut peer = TestPeer::connect_url(&format!("ws://{addr}/some/path?x=1&y"), "peer").await;
        peer.expect_text(CONFIG).await;
    }
}

#[tokio::test]
async fn plain_get_on_the_player_port_is_404() {
    let server = TestServer::with_defaults().await;
    let mut tcp = TcpStream::connect(server.player).await.unwrap();
    // (`/` is the built-in player page.)
    tcp.write_all(b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(crate::support::TIMEOUT, tcp.read_to_end(&mut response))
        .await
        .expect("response within the timeout")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 404"), "got {response}");

    // The port still upgrades afterwards.
    let mut p = server.player().await;
    p.sync().await;
}

/// Reads one HTTP response from `tcp`: the head byte by byte (so nothing after it, such as a
/// WebSocket frame, is consumed), then a body of `content-length` bytes.
pub(crate) async fn read_response(tcp: &mut TcpStream) -> String {
    let read = async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await.expect("a response head");
            head.push(byte[0]);
        }
        let mut text = String::from_utf8_lossy(&head).into_owned();
        let length = text
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        tcp.read_exact(&mut body).await.expect("the response body");
        text.push_str(&String::from_utf8_lossy(&body));
        text
    };
    tokio::time::timeout(crate::support::TIMEOUT, read)
        .await
        .expect("a response within the timeout")
}

const UPGRADE: &str = "GET /player HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// A client WebSocket over a TCP stream whose handshake the test did by hand.
async fn client_over(tcp: TcpStream) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    tokio_tungstenite::WebSocketStream::from_raw_socket(
        tcp,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await
}

async fn next_text(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> String {
    use futures_util::StreamExt;
    let msg = tokio::time::timeout(crate::support::TIMEOUT, ws.next())
        .await
        .expect("a message within the timeout")
        .expect("the stream is open")
        .expect("a valid frame");
    msg.into_text().expect("a text message").as_str().to_owned()
}

#[tokio::test]
async fn an_upgrade_after_a_plain_request_on_the_same_connection_works() {
    let server = TestServer::with_defaults().await;
    let mut tcp = TcpStream::connect(server.player).await.unwrap();
    tcp.write_all(b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut tcp).await;
    assert!(response.starts_with("HTTP/1.1 404"), "got {response}");
    tcp.write_all(UPGRADE.as_bytes()).await.unwrap();
    let response = read_response(&mut tcp).await;
    assert!(response.starts_with("HTTP/1.1 101"), "got {response}");
    let mut ws = client_over(tcp).await;
    assert_eq!(next_text(&mut ws).await, CONFIG);
}

#[tokio::test]
async fn a_message_sent_with_the_upgrade_request_is_not_lost() {
    let server = TestServer::with_defaults().await;
    let mut tcp = TcpStream::connect(server.player).await.unwrap();
    // The request head and a masked text frame in one write, as a hasty client may send them.
    let payload = br#"{"type":"listStreamers"}"#;
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut bytes = UPGRADE.as_bytes().to_vec();
    bytes.extend([0x81, 0x80 | u8::try_from(payload.len()).unwrap()]);
    bytes.extend(mask);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&bytes).await.unwrap();
    let head = read_response(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "got {head}");
    assert!(
        head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "got {head}"
    );
    let mut ws = client_over(tcp).await;
    assert_eq!(next_text(&mut ws).await, CONFIG);
    assert_eq!(next_text(&mut ws).await, crate::support::streamer_list(&[]));
}
