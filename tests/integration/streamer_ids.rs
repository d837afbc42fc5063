//! PROTOCOL.md §5: entry id negotiation, collisions, re-sending one's own id, streamerIdChanged.

use std::time::Duration;

use crate::support::{TestServer, streamer_list};

#[tokio::test]
async fn colliding_ids_get_the_next_suffix() {
    let server = TestServer::with_defaults().await;
    let (_a, a) = server.streamer_as("DefaultStreamer").await;
    let (_b, b) = server.streamer_as("DefaultStreamer").await;
    let (_c, c) = server.streamer_as("DefaultStreamer").await;
    assert_eq!(
        [a.as_str(), b.as_str(), c.as_str()],
        ["DefaultStreamer", "DefaultStreamer1", "DefaultStreamer2"]
    );

    let mut p = server.player().await;
    assert_eq!(
        p.list_streamers().await,
        streamer_list(&["DefaultStreamer", "DefaultStreamer1", "DefaultStreamer2"])
    );
}

#[tokio::test]
async fn highest_suffix_plus_one_not_the_free_name() {
    let server = TestServer::with_defaults().await;
    let _a = server.streamer("DefaultStreamer1").await;
    let _b = server.streamer("DefaultStreamer2").await;
    let (_c, c) = server.streamer_as("DefaultStreamer").await;
    assert_eq!(c, "DefaultStreamer3");
}

#[tokio::test]
async fn resending_own_id_keeps_it_without_streamer_id_changed() {
    let server = TestServer::with_defaults().await;
    let _a = server.streamer("DefaultStreamer").await;
    let (mut b, b_id) = server.streamer_as("DefaultStreamer").await;
    assert_eq!(b_id, "DefaultStreamer1");
    let mut p = server
        .subscribed_player(&mut b, "DefaultStreamer1", "Player0")
        .await;

    // The own id again, and the base name again (which matches the other entry): both keep it.
    assert_eq!(b.endpoint_id("DefaultStreamer1").await, "DefaultStreamer1");
    assert_eq!(b.endpoint_id("DefaultStreamer").await, "DefaultStreamer1");
    b.sync().await;
    p.sync().await;
    p.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn renaming_tells_subscribers_and_keeps_the_subscription_and_table_position() {
    let server = TestServer::with_defaults().await;
    let mut a = server.streamer("A").await;
    let _b = server.streamer("B").await;
    let mut p0 = server.subscribed_player(&mut a, "A", "Player0").await;
    let mut p1 = server.subscribed_player(&mut a, "A", "Player1").await;
    let mut idle = server.player().await;

    assert_eq!(a.endpoint_id("Renamed").await, "Renamed");
    let changed = r#"{"type":"streamerIdChanged","newID":"Renamed"}"#;
    p0.expect_text(changed).await;
    p1.expect_text(changed).await;
    idle.sync().await;
    assert_eq!(
        idle.list_streamers().await,
        streamer_list(&["Renamed", "B"])
    );

    // Still subscribed: the streamer's offer reaches the player.
    a.send_json(r#"{"type":"offer","playerId":"Player0","sdp":"o"}"#)
        .await;
    p0.expect_text(r#"{"type":"offer","playerId":"Player0","sdp":"o"}"#)
        .await;
}

#[tokio::test]
async fn ids_ending_in_digits_stay_unique() {
    let server = TestServer::with_defaults().await;
    let _a = server.streamer("Streamer1").await;
    let (_b, b) = server.streamer_as("Streamer1").await;
    assert_eq!(b, "Streamer11");
    let _c = server.streamer("123").await;
    let (_d, d) = server.streamer_as("123").await;
    assert_eq!(d, "123124");
}
