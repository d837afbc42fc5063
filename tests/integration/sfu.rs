//! PROTOCOL.md §7: a scripted SFU as player (of the streamer) and as streamer (of browsers),
//! steps 1–13, with the F3, F4, F5 and F6 rewrites.

use std::time::Duration;

use crate::support::{
    STREAMER_DISCONNECTED, TestPeer, TestServer, player_connected, player_disconnected,
    streamer_list,
};

/// Steps 1–3: UE as DefaultStreamer, F (Player0) identified as SFU, subscribed, answered,
/// streaming.
async fn sfu_on_streamer(server: &TestServer) -> (TestPeer, TestPeer) {
    let mut st = server.streamer("DefaultStreamer").await;
    let mut f = server.sfu().await;
    // 1
    assert_eq!(f.endpoint_id("SFU").await, "SFU");
    // 2
    assert_eq!(
        f.list_streamers().await,
        streamer_list(&["DefaultStreamer", "SFU"])
    );
    f.subscribe("DefaultStreamer").await;
    st.expect_text(&player_connected("Player0", true)).await;
    // 3 (F1, F4)
    let offer = r#"{"type":"offer","playerId":"Player0","sdp":"v=0 ue","n":1.0}"#;
    st.send_json(offer).await;
    f.expect_text(offer).await;
    let ice = r#"{"type":"iceCandidate","playerId":"Player0","candidate":{"candidate":"c"}}"#;
    st.send_json(ice).await;
    f.expect_text(ice).await;
    f.send_json(r#"{"type":"answer","sdp":"v=0 sfu"}"#).await;
    st.expect_text(r#"{"type":"answer","sdp":"v=0 sfu","playerId":"Player0"}"#)
        .await;
    f.send_json(r#"{"type":"startStreaming"}"#).await;
    f.sync().await;
    (st, f)
}

#[tokio::test]
async fn sfu_end_to_end_and_streamer_leaving() {
    let server = TestServer::with_defaults().await;
    let (mut st, mut f) = sfu_on_streamer(&server).await;

    // 4
    let mut p1 = server.player().await;
    assert_eq!(
        p1.list_streamers().await,
        streamer_list(&["DefaultStreamer", "SFU"])
    );
    p1.subscribe("SFU").await;
    f.expect_text(&player_connected("Player1", false)).await;
    let p2 = server.subscribed_player(&mut f, "SFU", "Player2").await;

    // 5 (F3: playerId removed, unknown keys kept)
    f.send_json(r#"{"type":"offer","playerId":"Player1","sdp":"v=0 f","sfu":true,"scalabilityMode":"L1T1"}"#)
        .await;
    p1.expect_text(r#"{"type":"offer","sdp":"v=0 f","sfu":true,"scalabilityMode":"L1T1"}"#)
        .await;
    // 6 (F2)
    p1.send_json(r#"{"type":"answer","sdp":"v=0 p"}"#).await;
    f.expect_text(r#"{"type":"answer","sdp":"v=0 p","playerId":"Player1"}"#)
        .await;
    p1.send_json(r#"{"type":"dataChannelRequest"}"#).await;
    f.expect_text(r#"{"type":"dataChannelRequest","playerId":"Player1"}"#)
        .await;
    // 7 (F3)
    f.send_json(
        r#"{"type":"peerDataChannels","playerId":"Player1","sendStreamId":2,"recvStreamId":3}"#,
    )
    .await;
    p1.expect_text(r#"{"type":"peerDataChannels","sendStreamId":2,"recvStreamId":3}"#)
        .await;
    // 8 (F2, F5)
    p1.send_json(r#"{"type":"peerDataChannelsReady"}"#).await;
    f.expect_text(r#"{"type":"peerDataChannelsReady","playerId":"Player1"}"#)
        .await;
    f.send_json(
        r#"{"type":"streamerDataChannels","playerId":"Player1","sendStreamId":4,"recvStreamId":5}"#,
    )
    .await;
    st.expect_text(
        r#"{"type":"streamerDataChannels","playerId":"Player1","sendStreamId":4,"recvStreamId":5,"sfuId":"Player0"}"#,
    )
    .await;
    // 9 (F2, F6)
    p1.send_json(r#"{"type":"layerPreference","spatialLayer":0,"temporalLayer":1,"playerId":""}"#)
        .await;
    f.expect_text(
        r#"{"type":"layerPreference","spatialLayer":0,"temporalLayer":1,"playerId":"Player1"}"#,
    )
    .await;
    let layer =
        r#"{"type":"layerPreference","spatialLayer":2,"temporalLayer":2,"playerId":"Player1"}"#;
    st.send_json(layer).await;
    f.expect_text(layer).await;

    // F4 with an empty playerId: set to the SFU's id in place.
    f.send_json(r#"{"type":"answer","playerId":"","sdp":"again"}"#)
        .await;
    st.expect_text(r#"{"type":"answer","playerId":"Player0","sdp":"again"}"#)
        .await;

    // 10
    p2.close().await;
    f.expect_text(&player_disconnected("Player2")).await;

    // 11: the SFU hears about its players before streamerDisconnected.
    st.close().await;
    f.expect_text(&player_disconnected("Player1")).await;
    f.expect_text(r#"{"type":"streamerDisconnected"}"#).await;
    assert_eq!(
        p1.expect_close().await,
        (STREAMER_DISCONNECTED.0, STREAMER_DISCONNECTED.1.to_owned())
    );
    f.send_json(r#"{"type":"stopStreaming"}"#).await;
    f.sync().await;
    // F lists every entry, itself included; players see only streaming entries.
    assert_eq!(f.list_streamers().await, streamer_list(&["SFU"]));
    let mut p3 = server.player().await;
    assert_eq!(p3.list_streamers().await, streamer_list(&[]));
    f.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn sfu_stop_streaming_then_leaving() {
    let server = TestServer::with_defaults().await;
    let (mut st, mut f) = sfu_on_streamer(&server).await;
    let mut p1 = server.subscribed_player(&mut f, "SFU", "Player1").await;

    // 12: stopStreaming ends the SFU's players; F stays subscribed upstream.
    f.send_json(r#"{"type":"stopStreaming"}"#).await;
    f.expect_text(&player_disconnected("Player1")).await;
    assert_eq!(
        p1.expect_close().await,
        (STREAMER_DISCONNECTED.0, STREAMER_DISCONNECTED.1.to_owned())
    );
    let mut lister = server.player().await;
    assert_eq!(
        lister.list_streamers().await,
        streamer_list(&["DefaultStreamer"])
    );
    st.sync().await;
    let offer = r#"{"type":"offer","playerId":"Player0","sdp":"re"}"#;
    st.send_json(offer).await;
    f.expect_text(offer).await;

    // 13: F leaves; its player is closed, St hears about F's player id.
    let mut p3 = server.subscribed_player(&mut f, "SFU", "Player3").await;
    f.close().await;
    st.expect_text(&player_disconnected("Player0")).await;
    assert_eq!(
        p3.expect_close().await,
        (STREAMER_DISCONNECTED.0, STREAMER_DISCONNECTED.1.to_owned())
    );
    st.sync().await;
    assert_eq!(
        lister.list_streamers().await,
        streamer_list(&["DefaultStreamer"])
    );
}

#[tokio::test]
async fn sfu_subscribing_to_itself_or_an_unknown_id() {
    let server = TestServer::with_defaults().await;
    let mut f = server.sfu().await;
    assert_eq!(f.endpoint_id("SFU").await, "SFU");
    f.subscribe("SFU").await;
    f.sync().await;
    f.subscribe("Nope").await;
    f.expect_text(r#"{"type":"subscribeFailed","message":"Streamer Nope does not exist."}"#)
        .await;
}

#[tokio::test]
async fn disconnect_player_aimed_at_the_sfu_closes_it_and_its_players() {
    let server = TestServer::with_defaults().await;
    let (mut st, mut f) = sfu_on_streamer(&server).await;
    let mut p1 = server.subscribed_player(&mut f, "SFU", "Player1").await;

    st.send_json(r#"{"type":"disconnectPlayer","playerId":"Player0","reason":"sfu out"}"#)
        .await;
    assert_eq!(f.expect_close().await, (1011, "sfu out".into()));
    st.expect_text(&player_disconnected("Player0")).await;
    assert_eq!(
        p1.expect_close().await,
        (STREAMER_DISCONNECTED.0, STREAMER_DISCONNECTED.1.to_owned())
    );
    st.sync().await;
    st.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn sfu_answer_player_id_kept_unless_empty_or_zero() {
    let mut cfg = crate::support::config();
    cfg.player_id_style = signalling::config::PlayerIdStyle::Numeric;
    let server = TestServer::start(cfg).await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut f = server.sfu().await;
    f.subscribe("DefaultStreamer").await;
    st.expect_text(&player_connected("1", true)).await;

    f.send_json(r#"{"type":"answer","playerId":0,"sdp":"zero"}"#)
        .await;
    st.expect_text(r#"{"type":"answer","playerId":"1","sdp":"zero"}"#)
        .await;
    f.send_json(r#"{"type":"answer","playerId":7,"sdp":"seven"}"#)
        .await;
    st.expect_text(r#"{"type":"answer","playerId":7,"sdp":"seven"}"#)
        .await;
    f.send_json(r#"{"type":"answer","playerId":"browser","sdp":"s"}"#)
        .await;
    st.expect_text(r#"{"type":"answer","playerId":"browser","sdp":"s"}"#)
        .await;
    f.send_json(r#"{"type":"streamerDataChannels","sfuId":"x","playerId":"2"}"#)
        .await;
    st.expect_text(r#"{"type":"streamerDataChannels","sfuId":"1","playerId":"2"}"#)
        .await;
}
