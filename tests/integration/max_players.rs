//! PROTOCOL.md §6 step 4: max_players caps a streamer's player subscribers; SFUs don't count.

use crate::support::{TestServer, config, player_connected, player_disconnected};

#[tokio::test]
async fn second_player_gets_subscribe_failed_when_full() {
    let mut cfg = config();
    cfg.max_players = 1;
    let server = TestServer::start(cfg).await;
    let mut st = server.streamer("X").await;
    // The SFU (Player0) neither counts nor is refused.
    let mut f = server.sfu().await;
    f.subscribe("X").await;
    st.expect_text(&player_connected("Player0", true)).await;

    let mut p1 = server.subscribed_player(&mut st, "X", "Player1").await;
    let mut p2 = server.player().await;
    p2.subscribe("X").await;
    p2.expect_text(
        r#"{"type":"subscribeFailed","message":"Streamer X is full. Max players = 1."}"#,
    )
    .await;
    st.sync().await;

    // A freed slot can be taken.
    p1.send_json(r#"{"type":"unsubscribe"}"#).await;
    st.expect_text(&player_disconnected("Player1")).await;
    p2.subscribe("X").await;
    st.expect_text(&player_connected("Player2", false)).await;
    p1.sync().await;
}
