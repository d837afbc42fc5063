//! PROTOCOL.md §6 "The entry's own connection ends": its players are closed 1000 "streamer
//! disconnected"; another streamer's players are untouched.

use crate::support::{STREAMER_DISCONNECTED, TestServer, streamer_list};

async fn streamer_leaving(drop_tcp: bool) {
    let server = TestServer::with_defaults().await;
    let mut a = server.streamer("A").await;
    let mut b = server.streamer("B").await;
    let mut pa0 = server.subscribed_player(&mut a, "A", "Player0").await;
    let mut pa1 = server.subscribed_player(&mut a, "A", "Player1").await;
    let mut pb = server.subscribed_player(&mut b, "B", "Player2").await;

    if drop_tcp {
        a.drop_tcp();
    } else {
        a.close().await;
    }
    let expected = (STREAMER_DISCONNECTED.0, STREAMER_DISCONNECTED.1.to_owned());
    assert_eq!(pa0.expect_close().await, expected);
    assert_eq!(pa1.expect_close().await, expected);

    pb.sync().await;
    b.sync().await;
    b.send_json(r#"{"type":"offer","playerId":"Player2","sdp":"b"}"#)
        .await;
    pb.expect_text(r#"{"type":"offer","playerId":"Player2","sdp":"b"}"#)
        .await;
    assert_eq!(pb.list_streamers().await, streamer_list(&["B"]));
}

#[tokio::test]
async fn streamer_close_frame_closes_only_its_players() {
    streamer_leaving(false).await;
}

#[tokio::test]
async fn streamer_tcp_drop_closes_only_its_players() {
    streamer_leaving(true).await;
}
