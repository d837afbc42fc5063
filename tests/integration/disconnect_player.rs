//! PROTOCOL.md §6 disconnectPlayer: close 1011 with the streamer's reason (default, truncated).

use crate::support::{TestServer, player_disconnected};

async fn disconnect_with(message_tail: &str) -> (u16, String) {
    let server = TestServer::with_defaults().await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;
    st.send_json(&format!(
        r#"{{"type":"disconnectPlayer","playerId":"Player0"{message_tail}}}"#
    ))
    .await;
    let close = p.expect_close().await;
    st.expect_text(&player_disconnected("Player0")).await;
    st.sync().await;
    close
}

#[tokio::test]
async fn disconnect_player_closes_1011_with_the_reason() {
    assert_eq!(
        disconnect_with(r#","reason":"kicked""#).await,
        (1011, "kicked".into())
    );
}

#[tokio::test]
async fn disconnect_player_default_reason() {
    let default = (1011, "disconnected by streamer".to_owned());
    assert_eq!(disconnect_with("").await, default);
    assert_eq!(disconnect_with(r#","reason":"""#).await, default);
    assert_eq!(disconnect_with(r#","reason":42"#).await, default);
}

#[tokio::test]
async fn disconnect_player_long_reason_is_cut_at_a_utf8_boundary() {
    // 300 bytes of two-byte characters: the cut lands at 122 bytes, not mid-character.
    let reason = "é".repeat(150);
    let (code, got) = disconnect_with(&format!(r#","reason":"{reason}""#)).await;
    assert_eq!(code, 1011);
    assert!(got.len() <= 123, "reason is {} bytes", got.len());
    assert_eq!(got, "é".repeat(61));

    let ascii = "x".repeat(300);
    let (_, got) = disconnect_with(&format!(r#","reason":"{ascii}""#)).await;
    assert_eq!(got, "x".repeat(123));
}
