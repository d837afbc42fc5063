//! PROTOCOL.md §2, §4 (F1, F2): two streamers, several players; playerId added on player→streamer
//! and kept on streamer→player; unknown keys and exact number tokens survive.

use std::time::Duration;

use signalling::config::PlayerIdStyle;

use crate::support::{TestServer, config, player_connected, player_disconnected};

#[tokio::test]
async fn offer_answer_ice_between_two_streamers_and_their_players() {
    let server = TestServer::with_defaults().await;
    let mut a = server.streamer("A").await;
    let mut b = server.streamer("B").await;
    let mut p0 = server.subscribed_player(&mut a, "A", "Player0").await;
    let mut p1 = server.subscribed_player(&mut a, "A", "Player1").await;
    let mut p2 = server.subscribed_player(&mut b, "B", "Player2").await;

    // St → P: forwarded byte for byte, playerId kept, unknown keys and exact numbers kept.
    let offer = r#"{"type":"offer","playerId":"Player0","sdp":"v=0\r\n","big":12345678901234567,"f":1.0,"e":1e400,"x":{"y":[1,null,"z"]}}"#;
    a.send_json(offer).await;
    p0.expect_text(offer).await;
    let offer1 = r#"{"type":"offer","sdp":"v=1","playerId":"Player1"}"#;
    a.send_json(offer1).await;
    p1.expect_text(offer1).await;
    let offer2 = r#"{"type":"offer","playerId":"Player2","sdp":"b"}"#;
    b.send_json(offer2).await;
    p2.expect_text(offer2).await;

    // P → St: playerId appended last.
    p0.send_json(r#"{"type":"answer","sdp":"a0","minBitrateBps":0,"maxBitrateBps":0,"n":12345678901234567,"f":1.0}"#)
        .await;
    a.expect_text(
        r#"{"type":"answer","sdp":"a0","minBitrateBps":0,"maxBitrateBps":0,"n":12345678901234567,"f":1.0,"playerId":"Player0"}"#,
    )
    .await;
    // A playerId sent by the player is replaced in place.
    p1.send_json(r#"{"type":"iceCandidate","playerId":"Player0","candidate":{"candidate":"c","sdpMid":"0","sdpMLineIndex":0}}"#)
        .await;
    a.expect_text(r#"{"type":"iceCandidate","playerId":"Player1","candidate":{"candidate":"c","sdpMid":"0","sdpMLineIndex":0}}"#)
        .await;
    p2.send_json(r#"{"type":"answer","sdp":"a2"}"#).await;
    b.expect_text(r#"{"type":"answer","sdp":"a2","playerId":"Player2"}"#)
        .await;

    // St → P iceCandidate.
    let ice = r#"{"type":"iceCandidate","playerId":"Player1","candidate":{"candidate":"s","sdpMid":"0","sdpMLineIndex":0}}"#;
    a.send_json(ice).await;
    p1.expect_text(ice).await;

    // Other types a player may send (F2).
    p0.send_json(r#"{"type":"dataChannelRequest"}"#).await;
    a.expect_text(r#"{"type":"dataChannelRequest","playerId":"Player0"}"#)
        .await;
    p0.send_json(r#"{"type":"peerDataChannelsReady"}"#).await;
    a.expect_text(r#"{"type":"peerDataChannelsReady","playerId":"Player0"}"#)
        .await;
    p0.send_json(r#"{"type":"layerPreference","spatialLayer":1,"temporalLayer":0,"playerId":""}"#)
        .await;
    a.expect_text(
        r#"{"type":"layerPreference","spatialLayer":1,"temporalLayer":0,"playerId":"Player0"}"#,
    )
    .await;

    // Nobody else got anything.
    for peer in [&mut a, &mut b, &mut p0, &mut p1, &mut p2] {
        peer.sync().await;
    }
}

#[tokio::test]
async fn streamer_cannot_reach_another_streamers_player_or_an_unknown_id() {
    let server = TestServer::with_defaults().await;
    let mut a = server.streamer("A").await;
    let mut b = server.streamer("B").await;
    let mut p0 = server.subscribed_player(&mut a, "A", "Player0").await;
    let mut p1 = server.subscribed_player(&mut b, "B", "Player1").await;

    a.send_json(r#"{"type":"offer","playerId":"Player1","sdp":"x"}"#)
        .await;
    a.send_json(r#"{"type":"offer","playerId":"Player9","sdp":"x"}"#)
        .await;
    a.send_json(r#"{"type":"offer","sdp":"no playerId"}"#).await;
    a.send_json(r#"{"type":"disconnectPlayer","playerId":"Player1"}"#)
        .await;
    a.sync().await;
    p1.sync().await;
    p0.sync().await;
    b.sync().await;
    p1.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn numeric_ids_match_numbers_by_decimal_form_and_are_forwarded_as_sent() {
    let mut cfg = config();
    cfg.player_id_style = PlayerIdStyle::Numeric;
    let server = TestServer::start(cfg).await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server
        .subscribed_player(&mut st, "DefaultStreamer", "1")
        .await;
    let mut p2 = server
        .subscribed_player(&mut st, "DefaultStreamer", "2")
        .await;

    for offer in [
        r#"{"type":"offer","playerId":1,"sdp":"n"}"#,
        r#"{"type":"offer","playerId":1.0,"sdp":"f"}"#,
        r#"{"type":"offer","playerId":"1","sdp":"s"}"#,
    ] {
        st.send_json(offer).await;
        p.expect_text(offer).await;
    }
    // Matching that must fail: negative, fractional, "01" as a string.
    st.send_json(r#"{"type":"offer","playerId":-1,"sdp":"x"}"#)
        .await;
    st.send_json(r#"{"type":"offer","playerId":1.5,"sdp":"x"}"#)
        .await;
    st.send_json(r#"{"type":"offer","playerId":"01","sdp":"x"}"#)
        .await;
    st.sync().await;
    p.sync().await;
    p2.sync().await;

    p.send_json(r#"{"type":"answer","sdp":"a"}"#).await;
    st.expect_text(r#"{"type":"answer","sdp":"a","playerId":"1"}"#)
        .await;

    // disconnectPlayer with a numeric id reaches player "2".
    st.send_json(r#"{"type":"disconnectPlayer","playerId":2}"#)
        .await;
    assert_eq!(
        p2.expect_close().await,
        (1011, "disconnected by streamer".into())
    );
    st.expect_text(&player_disconnected("2")).await;
}

#[tokio::test]
async fn player_count_and_config_are_exact() {
    let mut cfg = config();
    cfg.player_count = true;
    cfg.peer_options =
        serde_json::from_str(r#"{"iceServers":[{"urls":["stun:stun.l.google.com:19302"]}]}"#)
            .unwrap();
    let server = TestServer::start(cfg).await;
    let config_text = r#"{"type":"config","peerConnectionOptions":{"iceServers":[{"urls":["stun:stun.l.google.com:19302"]}]},"protocolVersion":"1.3.0"}"#;

    let mut st = crate::support::TestPeer::connect(server.streamer, "st").await;
    st.expect_text(config_text).await;
    st.expect_text(r#"{"type":"identify"}"#).await;
    let mut f = crate::support::TestPeer::connect(server.sfu, "sfu").await;
    f.expect_text(config_text).await;
    f.expect_text(r#"{"type":"identify"}"#).await;

    let mut p1 = crate::support::TestPeer::connect(server.player, "p1").await;
    p1.expect_text(config_text).await;
    p1.expect_text(r#"{"type":"playerCount","count":1}"#).await;
    let mut p2 = crate::support::TestPeer::connect(server.player, "p2").await;
    p2.expect_text(config_text).await;
    p2.expect_text(r#"{"type":"playerCount","count":2}"#).await;
    // Not re-sent when the count changes.
    p1.sync().await;
    // An SFU's subscription gets "sfu":true; check the placeholder ids while here.
    st.send_json(r#"{"type":"endpointId","id":"S"}"#).await;
    st.expect_text(r#"{"type":"endpointIdConfirm","committedId":"S"}"#)
        .await;
    f.subscribe("S").await;
    // The SFU took player id Player0 at accept, before both players.
    st.expect_text(&player_connected("Player0", true)).await;
}
