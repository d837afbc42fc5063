//! PROTOCOL.md §6 "Server shutdown": every connection closed 1012 "server restarting", and no
//! playerDisconnected.

use crate::support::{TestServer, player_connected};

#[tokio::test]
async fn shutdown_closes_everyone_1012_without_player_disconnected() {
    let server = TestServer::with_defaults().await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p0 = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;
    let mut f = server.sfu().await;
    assert_eq!(f.endpoint_id("SFU").await, "SFU");
    f.subscribe("DefaultStreamer").await;
    st.expect_text(&player_connected("Player1", true)).await;
    let mut p2 = server.subscribed_player(&mut f, "SFU", "Player2").await;
    let mut idle = server.player().await;

    let expected = (1012, "server restarting".to_owned());
    let closes = async {
        // expect_close fails on any message, so a playerDisconnected here would fail the test.
        for peer in [&mut st, &mut p0, &mut f, &mut p2, &mut idle] {
            assert_eq!(peer.expect_close().await, expected, "{}", peer.name);
        }
    };
    tokio::join!(server.shutdown(), closes);
}
