//! PROTOCOL.md §1, §10: malformed input is ignored or closes only the sender, with the right
//! code; every other connection carries on.

use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::support::{
    TestPeer, TestServer, config, player_connected, player_disconnected, streamer_list,
};

const QUIET: Duration = Duration::from_millis(200);

#[tokio::test]
async fn malformed_messages_are_ignored_and_the_connection_kept() {
    let server = TestServer::with_defaults().await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;
    let mut f = server.sfu().await;

    for bad in [
        "not json",
        "",
        "{",
        "[1,2,3]",
        "null",
        "42",
        r#""text""#,
        "{}",
        r#"{"sdp":"no type"}"#,
        r#"{"type":5}"#,
        r#"{"type":null}"#,
        r#"{"type":"noSuchType"}"#,
        // Types only S sends.
        r#"{"type":"config","peerConnectionOptions":{}}"#,
        r#"{"type":"identify"}"#,
        r#"{"type":"playerConnected","dataChannel":true,"sfu":false,"playerId":"Player0"}"#,
        r#"{"type":"playerDisconnected","playerId":"Player0"}"#,
        r#"{"type":"streamerList","ids":[]}"#,
        r#"{"type":"subscribeFailed","message":"x"}"#,
        r#"{"type":"streamerIdChanged","newID":"x"}"#,
        r#"{"type":"endpointIdConfirm","committedId":"x"}"#,
        r#"{"type":"playerCount","count":1}"#,
        r#"{"type":"streamerDisconnected"}"#,
    ] {
        p.send_json(bad).await;
        st.send_json(bad).await;
        f.send_json(bad).await;
    }
    // Types a player may not send, and old frontends' stats (ignored).
    for bad in [
        r#"{"type":"endpointId","id":"Hijack"}"#,
        r#"{"type":"disconnectPlayer","playerId":"Player0"}"#,
        r#"{"type":"startStreaming"}"#,
        r#"{"type":"stopStreaming"}"#,
        r#"{"type":"peerDataChannels","playerId":"Player0"}"#,
        r#"{"type":"streamerDataChannels"}"#,
        r#"{"type":"stats","data":{}}"#,
    ] {
        p.send_json(bad).await;
    }
    // Types a streamer or an SFU may not send.
    for bad in [
        r#"{"type":"subscribe","streamerId":"DefaultStreamer"}"#,
        r#"{"type":"listStreamers"}"#,
        r#"{"type":"dataChannelRequest"}"#,
    ] {
        st.send_json(bad).await;
    }
    f.send_json(r#"{"type":"iceCandidate","playerId":"Player0","candidate":{}}"#)
        .await;
    f.send_json(r#"{"type":"disconnectPlayer","playerId":"Player0"}"#)
        .await;

    for peer in [&mut p, &mut st, &mut f] {
        peer.sync().await;
    }
    p.expect_silence(QUIET).await;
    assert_eq!(
        p.list_streamers().await,
        streamer_list(&["DefaultStreamer"])
    );
}

#[tokio::test]
async fn subscribe_without_a_string_streamer_id_fails() {
    let server = TestServer::with_defaults().await;
    let mut p = server.player().await;
    let failed = r#"{"type":"subscribeFailed","message":"Missing or invalid field streamerId."}"#;
    for bad in [
        r#"{"type":"subscribe"}"#,
        r#"{"type":"subscribe","streamerId":5}"#,
        r#"{"type":"subscribe","streamerId":null}"#,
    ] {
        p.send_json(bad).await;
        p.expect_text(failed).await;
    }
    let mut f = server.sfu().await;
    f.send_json(r#"{"type":"subscribe"}"#).await;
    f.expect_text(failed).await;
}

#[tokio::test]
async fn binary_json_is_handled_like_text() {
    let server = TestServer::with_defaults().await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server.player().await;
    p.send(Message::binary(br#"{"type":"ping","time":7}"#.to_vec()))
        .await;
    p.expect_text(r#"{"type":"pong","time":7}"#).await;
    p.send(Message::binary(
        br#"{"type":"subscribe","streamerId":"DefaultStreamer"}"#.to_vec(),
    ))
    .await;
    st.expect_text(&player_connected("Player0", false)).await;
    // Invalid UTF-8 in a binary message is replaced, not fatal.
    p.send(Message::binary(
        b"{\"type\":\"answer\",\"sdp\":\"\xff\"}".to_vec(),
    ))
    .await;
    st.expect_text("{\"type\":\"answer\",\"sdp\":\"\u{fffd}\",\"playerId\":\"Player0\"}")
        .await;
    p.sync().await;
}

#[tokio::test]
async fn invalid_utf8_text_frame_closes_1007() {
    let server = TestServer::with_defaults().await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;
    p.send_invalid_utf8_text().await;
    assert_eq!(p.expect_close().await.0, 1007);
    st.expect_text(&player_disconnected("Player0")).await;

    let mut q = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player1")
        .await;
    q.sync().await;
    st.sync().await;
}

fn small_messages_config() -> signalling::config::Config {
    let mut cfg = config();
    cfg.max_message_size = 2048;
    cfg
}

#[tokio::test]
async fn oversized_message_closes_1009() {
    let server = TestServer::start(small_messages_config()).await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;

    // Exactly at the limit is fine; one byte more is not.
    let at_limit = |size: usize| {
        let head = r#"{"type":"answer","sdp":""#;
        format!("{head}{}\"}}", "x".repeat(size - head.len() - 2))
    };
    p.send_json(&at_limit(2048)).await;
    st.expect_text(&format!(
        "{},\"playerId\":\"Player0\"}}",
        at_limit(2048).trim_end_matches('}')
    ))
    .await;
    p.send_json(&at_limit(2049)).await;
    assert_eq!(p.expect_close().await, (1009, "message too big".into()));
    st.expect_text(&player_disconnected("Player0")).await;
    st.sync().await;

    let mut q = server.player().await;
    q.sync().await;
}

#[tokio::test]
async fn oversized_fragmented_message_closes_1009() {
    let server = TestServer::start(small_messages_config()).await;
    let mut p = server.player().await;
    // Each fragment is under the limit; the whole message is not.
    let text = format!(r#"{{"type":"ping","time":1,"pad":"{}"}}"#, "y".repeat(3000));
    let (first, rest) = text.as_bytes().split_at(1500);
    p.send_frame(first.to_vec(), OpCode::Data(Data::Text), false)
        .await;
    p.send_frame(rest.to_vec(), OpCode::Data(Data::Continue), true)
        .await;
    assert_eq!(p.expect_close().await, (1009, "message too big".into()));

    // A fragmented message within the limit is reassembled.
    let mut q = server.player().await;
    let text = r#"{"type":"ping","time":99}"#.as_bytes();
    q.send_frame(text[..10].to_vec(), OpCode::Data(Data::Text), false)
        .await;
    q.send_frame(text[10..].to_vec(), OpCode::Data(Data::Continue), true)
        .await;
    q.expect_text(r#"{"type":"pong","time":99}"#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_that_never_reads_is_closed_too_slow() {
    let mut cfg = config();
    cfg.max_queued_messages = 16;
    let server = TestServer::start(cfg).await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;

    // `p` is not polled from here. 600 × 64 KiB is far beyond any loopback socket buffer.
    let offer = format!(
        r#"{{"type":"offer","playerId":"Player0","sdp":"{}"}}"#,
        "s".repeat(64 * 1024)
    );
    for _ in 0..600 {
        st.send_json(&offer).await;
    }
    st.expect_text(&player_disconnected("Player0")).await;
    st.sync().await;
    st.expect_silence(QUIET).await;

    let (close, _offers) = p.expect_close_skipping_messages().await;
    // The close frame follows the frames already written; a peer that reads nothing for 1 s
    // after the close is dropped without it instead.
    assert!(
        close == (1008, "too slow".to_owned()) || close.0 == crate::support::NO_CLOSE_FRAME,
        "unexpected close {close:?}"
    );
    let mut q = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player1")
        .await;
    q.sync().await;
}

/// An iceCandidate whose `candidate` nests `levels` arrays, so the message nests `levels + 1`;
/// with `player_id`, as a streamer sends it.
fn nested_candidate(levels: usize, player_id: Option<&str>) -> String {
    let to = player_id.map_or_else(String::new, |id| format!(r#""playerId":"{id}","#));
    format!(
        r#"{{"type":"iceCandidate",{to}"candidate":{}{}}}"#,
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

/// The next message, which must be `expected`; a wrong one is shown by its start only.
async fn expect_long_text(peer: &mut TestPeer, expected: &str) {
    let got = peer.recv_text().await;
    assert!(
        got == expected,
        "{} got {}… ({} bytes) instead of {}…",
        peer.name,
        got.get(..80).unwrap_or(&got),
        got.len(),
        expected.get(..80).unwrap_or(expected)
    );
}

#[tokio::test]
async fn too_deeply_nested_message_is_dropped_and_the_connection_kept() {
    let server = TestServer::with_defaults().await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;

    // 400,000 levels in 800 KB (within max_message_size), then one level over the limit.
    for levels in [400_000, protocol::MAX_NESTING_DEPTH] {
        p.send_json(&nested_candidate(levels, None)).await;
        st.send_json(&nested_candidate(levels, Some("Player0")))
            .await;
    }
    // The deepest message allowed (the message object is level 1) goes through both ways.
    let levels = protocol::MAX_NESTING_DEPTH - 1;
    p.send_json(&nested_candidate(levels, None)).await;
    let up = nested_candidate(levels, None);
    expect_long_text(
        &mut st,
        &format!("{},\"playerId\":\"Player0\"}}", up.trim_end_matches('}')),
    )
    .await;
    st.send_json(&nested_candidate(levels, Some("Player0")))
        .await;
    expect_long_text(&mut p, &nested_candidate(levels, Some("Player0"))).await;
    for peer in [&mut p, &mut st] {
        peer.sync().await;
    }
    p.expect_silence(QUIET).await;
    st.expect_silence(QUIET).await;
}
