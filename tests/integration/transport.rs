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
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
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
