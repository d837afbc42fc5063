//! PROTOCOL.md §8 auto-subscribe: an idle player's offer subscribes it to the first entry.

use signalling::config::PlayerIdStyle;

use crate::support::{TestServer, config, player_connected};

#[tokio::test]
async fn idle_player_offer_subscribes_to_the_first_entry() {
    let server = TestServer::with_defaults().await;
    // The first entry in table order is unidentified; auto-subscribe still picks it.
    let mut first = server.streamer_unidentified().await;
    let mut second = server.streamer("Second").await;
    let mut p = server.player().await;

    p.send_json(r#"{"type":"offer","sdp":"browser offer","n":12345678901234567}"#)
        .await;
    first.expect_text(&player_connected("Player0", false)).await;
    first
        .expect_text(
            r#"{"type":"offer","sdp":"browser offer","n":12345678901234567,"playerId":"Player0"}"#,
        )
        .await;
    second.sync().await;

    first
        .send_json(r#"{"type":"answer","playerId":"Player0","sdp":"ue"}"#)
        .await;
    p.expect_text(r#"{"type":"answer","playerId":"Player0","sdp":"ue"}"#)
        .await;
}

#[tokio::test]
async fn idle_player_with_no_streamer_is_closed_1013() {
    let server = TestServer::with_defaults().await;
    let mut p = server.player().await;
    p.send_json(r#"{"type":"iceCandidate","candidate":{}}"#)
        .await;
    assert_eq!(
        p.expect_close().await,
        (1013, "no streamer connected".into())
    );

    // Another player still works.
    let mut q = server.player().await;
    q.sync().await;
}

#[tokio::test]
async fn auto_subscribe_to_a_full_streamer_fails_and_stays_open() {
    let mut cfg = config();
    cfg.max_players = 1;
    cfg.player_id_style = PlayerIdStyle::Wilbur;
    let server = TestServer::start(cfg).await;
    let mut st = server.streamer("DefaultStreamer").await;
    let _p0 = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;
    let mut p1 = server.player().await;
    p1.send_json(r#"{"type":"offer","sdp":"x"}"#).await;
    p1.expect_text(r#"{"type":"subscribeFailed","message":"Streamer DefaultStreamer is full. Max players = 1."}"#)
        .await;
    p1.sync().await;
    st.sync().await;
}
