//! PROTOCOL.md §9 protocol ping: pong echoes `time` as the same JSON token; 0 when absent.

use crate::support::TestServer;

#[tokio::test]
async fn pong_echoes_time_beyond_32_bits_exactly() {
    let server = TestServer::with_defaults().await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server.player().await;
    let mut f = server.sfu().await;
    for peer in [&mut st, &mut p, &mut f] {
        peer.send_json(r#"{"type":"ping","time":1767225600000123}"#)
            .await;
        peer.expect_text(r#"{"type":"pong","time":1767225600000123}"#)
            .await;
        // PS1 sends whole seconds in a double; other tokens are echoed as received.
        peer.send_json(r#"{"type":"ping","time":1767225600.0}"#)
            .await;
        peer.expect_text(r#"{"type":"pong","time":1767225600.0}"#)
            .await;
        peer.send_json(r#"{"type":"ping","time":"abc"}"#).await;
        peer.expect_text(r#"{"type":"pong","time":"abc"}"#).await;
    }
}

#[tokio::test]
async fn pong_time_is_zero_when_absent_or_null() {
    let server = TestServer::with_defaults().await;
    let mut p = server.player().await;
    p.send_json(r#"{"type":"ping"}"#).await;
    p.expect_text(r#"{"type":"pong","time":0}"#).await;
    p.send_json(r#"{"type":"ping","time":null}"#).await;
    p.expect_text(r#"{"type":"pong","time":0}"#).await;
    // A pong gets no reply.
    p.send_json(r#"{"type":"pong","time":5}"#).await;
    p.sync().await;
}
