//! PROTOCOL.md §5 "A streamer that never identifies": UnknownStreamer placeholder, hidden from
//! players' streamerList, listed for SFUs, reachable by an explicit subscribe.

use crate::support::{TestServer, player_connected, streamer_list};

#[tokio::test]
async fn unidentified_streamer_is_hidden_but_subscribable() {
    let server = TestServer::with_defaults().await;
    let mut legacy = server.streamer_unidentified().await;
    let mut p = server.player().await;
    assert_eq!(p.list_streamers().await, streamer_list(&[]));

    p.subscribe("UnknownStreamer").await;
    legacy
        .expect_text(&player_connected("Player0", false))
        .await;
    let offer = r#"{"type":"offer","playerId":"Player0","sdp":"legacy"}"#;
    legacy.send_json(offer).await;
    p.expect_text(offer).await;
    p.send_json(r#"{"type":"answer","sdp":"a"}"#).await;
    legacy
        .expect_text(r#"{"type":"answer","sdp":"a","playerId":"Player0"}"#)
        .await;

    // An identified streamer is listed; the placeholder still is not.
    let _named = server.streamer("Named").await;
    assert_eq!(p.list_streamers().await, streamer_list(&["Named"]));
}

#[tokio::test]
async fn placeholders_are_unique_and_listed_for_sfus() {
    let server = TestServer::with_defaults().await;
    let _a = server.streamer_unidentified().await;
    let _b = server.streamer_unidentified().await;
    let _c = server.streamer_unidentified().await;
    let mut f = server.sfu().await;
    assert_eq!(
        f.list_streamers().await,
        streamer_list(&[
            "UnknownStreamer",
            "UnknownStreamer1",
            "UnknownStreamer2",
            "UnknownStreamer3"
        ])
    );
}

#[tokio::test]
async fn endpoint_id_without_string_id_is_ignored() {
    let server = TestServer::with_defaults().await;
    let mut st = server.streamer("Named").await;
    st.send_json(r#"{"type":"endpointId"}"#).await;
    st.send_json(r#"{"type":"endpointId","id":5}"#).await;
    st.sync().await;
    let mut p = server.player().await;
    assert_eq!(p.list_streamers().await, streamer_list(&["Named"]));
}
