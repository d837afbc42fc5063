//! PROTOCOL.md §6 E1, E3, E4: every way a player leaves gives its streamer exactly one
//! playerDisconnected.

use std::time::Duration;

use crate::support::{TestServer, player_disconnected};

const QUIET: Duration = Duration::from_millis(200);

#[tokio::test]
async fn unsubscribe_then_close_gives_one_player_disconnected() {
    let server = TestServer::with_defaults().await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;

    p.send_json(r#"{"type":"unsubscribe"}"#).await;
    p.sync().await;
    st.expect_text(&player_disconnected("Player0")).await;
    st.sync().await;

    // A second unsubscribe and the close that follows tell nobody.
    p.send_json(r#"{"type":"unsubscribe"}"#).await;
    p.sync().await;
    p.close().await;
    st.sync().await;
    st.expect_silence(QUIET).await;

    // Nothing routes under the ended subscription.
    let mut other = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player1")
        .await;
    st.send_json(r#"{"type":"offer","playerId":"Player0","sdp":"x"}"#)
        .await;
    st.sync().await;
    other.sync().await;
}

#[tokio::test]
async fn close_frame_gives_one_player_disconnected() {
    let server = TestServer::with_defaults().await;
    let mut st = server.streamer("DefaultStreamer").await;
    let p = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;
    p.close().await;
    st.expect_text(&player_disconnected("Player0")).await;
    st.sync().await;
    st.expect_silence(QUIET).await;
}

#[tokio::test]
async fn tcp_drop_without_close_gives_one_player_disconnected() {
    let server = TestServer::with_defaults().await;
    let mut st = server.streamer("DefaultStreamer").await;
    let p0 = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;
    let p1 = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player1")
        .await;
    p0.drop_tcp();
    st.expect_text(&player_disconnected("Player0")).await;
    p1.reset_tcp();
    st.expect_text(&player_disconnected("Player1")).await;
    st.sync().await;
    st.expect_silence(QUIET).await;
}

#[tokio::test]
async fn resubscribing_ends_the_old_subscription_first() {
    let server = TestServer::with_defaults().await;
    let mut a = server.streamer("A").await;
    let mut b = server.streamer("B").await;
    let mut p = server.subscribed_player(&mut a, "A", "Player0").await;

    // Same streamer again: playerDisconnected then playerConnected.
    p.subscribe("A").await;
    a.expect_text(&player_disconnected("Player0")).await;
    a.expect_text(&crate::support::player_connected("Player0", false))
        .await;

    // Another streamer: the old one is told.
    p.subscribe("B").await;
    a.expect_text(&player_disconnected("Player0")).await;
    b.expect_text(&crate::support::player_connected("Player0", false))
        .await;

    // Unknown id: subscribeFailed, the subscription stays.
    p.subscribe("Nope").await;
    p.expect_text(r#"{"type":"subscribeFailed","message":"Streamer Nope does not exist."}"#)
        .await;
    b.send_json(r#"{"type":"offer","playerId":"Player0","sdp":"still"}"#)
        .await;
    p.expect_text(r#"{"type":"offer","playerId":"Player0","sdp":"still"}"#)
        .await;

    p.close().await;
    b.expect_text(&player_disconnected("Player0")).await;
    a.sync().await;
    b.sync().await;
    a.expect_silence(QUIET).await;
}
