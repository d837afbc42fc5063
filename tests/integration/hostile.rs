//! Hostile peers (issue 10): a flooding viewer cannot knock its streamer off, a close the server
//! queues arrives with its code behind everything queued before it, and one peer doing the worst
//! it can keeps the server within its documented byte budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::binary;
use crate::support::{
    CONFIG, IDENTIFY, TIMEOUT, TestPeer, TestServer, config, player_disconnected,
};

fn candidate(from: &str, n: u64, pad: usize) -> String {
    format!(
        r#"{{"type":"iceCandidate","candidate":"{from}-{n}","pad":"{}"}}"#,
        "x".repeat(pad)
    )
}

/// The `candidate` field of a forwarded iceCandidate.
fn candidate_of(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    (v["type"] == "iceCandidate").then(|| v["candidate"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_flooding_player_cannot_knock_off_its_streamer_or_its_viewers_while_it_pauses() {
    let server = TestServer::start(config()).await;
    let mut streamer = server.streamer("S").await;
    let mut viewer = server
        .subscribed_player(&mut streamer, "S", "Player0")
        .await;
    let flooder = server
        .subscribed_player(&mut streamer, "S", "Player1")
        .await;

    // The flooder sends 1 KiB iceCandidates as fast as the server takes them and reads nothing.
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flood = tokio::spawn({
        let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
        let mut ws = flooder.ws;
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if ws
                    .send(Message::text(candidate("f", n, 1000)))
                    .await
                    .is_err()
                {
                    return (n, true);
                }
                n += 1;
                sent.store(n, Ordering::Relaxed);
            }
            (n, false)
        }
    });

    // The streamer pauses for 3 s (the behaviour under test, not a wait for the server).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent_during_pause = sent.load(Ordering::Relaxed);
    viewer.send_json(&candidate("viewer", 0, 10)).await;

    // The streamer reads on: the flooder's candidates in order, then the viewer's, within
    // the usual timeout, and its connection is intact.
    let mut next_flood = 0;
    loop {
        let text = streamer.recv_text().await;
        let Some(c) = candidate_of(&text) else {
            panic!("unexpected message at the streamer: {text}");
        };
        if c == "viewer-0" {
            assert!(text.contains(r#""playerId":"Player0""#), "{text}");
            break;
        }
        assert_eq!(c, format!("f-{next_flood}"), "flood out of order or lost");
        next_flood += 1;
    }
    stop.store(true, Ordering::Relaxed);
    // While the streamer read nothing, the server read little of the flooder: its reading
    // stopped once its messages waited (budget 1 MiB plus the sockets' buffers), where an
    // unthrottled flood moves hundreds of MiB in 3 s.
    assert!(
        sent_during_pause < 32 * 1024,
        "the flooder sent {sent_during_pause} KiB during the pause: it was not slowed"
    );
    streamer
        .send_json(r#"{"type":"offer","playerId":"Player0","sdp":"v=0"}"#)
        .await;
    viewer
        .expect_text(r#"{"type":"offer","playerId":"Player0","sdp":"v=0"}"#)
        .await;
    viewer.sync().await;
    // The streamer reads the rest of the flood (so a flooder blocked on a full socket can see
    // the stop), and its connection is intact.
    sync_skipping(&mut streamer).await;
    // The flooder is slowed, not closed: its reading resumed once the streamer read.
    let (n, closed) = tokio::time::timeout(TIMEOUT, flood)
        .await
        .expect("the flood task ends once stopped")
        .expect("flood task");
    assert!(
        !closed && n > sent_during_pause,
        "{n} sent, closed: {closed}"
    );
}

/// A streamer sends 100 offers of 200 KB to Player0, more than the sockets buffer, so the
/// server's writer is mid-write when `finish` runs; Player0 reads only afterwards and must get
/// all 100, in order, then the close `code` and `reason`.
async fn burst_then_close(
    finish: impl AsyncFnOnce(&mut TestPeer, &mut TestPeer),
    code: u16,
    reason: &str,
) {
    let server = TestServer::start(signalling::config::Config {
        max_queued_bytes: 64 << 20,
        ..config()
    })
    .await;
    let mut streamer = server.streamer("S").await;
    let mut player = server
        .subscribed_player(&mut streamer, "S", "Player0")
        .await;
    let pad = "y".repeat(200_000);
    for i in 0..100 {
        streamer
            .send_json(&format!(
                r#"{{"type":"offer","playerId":"Player0","n":{i},"sdp":"{pad}"}}"#
            ))
            .await;
    }
    finish(&mut streamer, &mut player).await;
    for i in 0..100 {
        let text = player.recv_text().await;
        assert!(
            text.starts_with(&format!(
                r#"{{"type":"offer","playerId":"Player0","n":{i},"#
            )),
            "offer {i} of 100: {}",
            &text[..text.len().min(80)]
        );
    }
    assert_eq!(player.expect_close().await, (code, reason.to_owned()));
}

#[tokio::test]
async fn disconnect_player_closes_1011_behind_a_burst_with_every_offer_delivered() {
    burst_then_close(
        async |streamer, _player| {
            streamer
                .send_json(r#"{"type":"disconnectPlayer","playerId":"Player0","reason":"bye"}"#)
                .await;
            streamer.expect_text(&player_disconnected("Player0")).await;
        },
        1011,
        "bye",
    )
    .await;
}

#[tokio::test]
async fn a_leaving_streamer_closes_its_player_1000_behind_a_burst() {
    burst_then_close(
        async |streamer, _player| {
            streamer.sync().await;
            streamer.ws.close(None).await.expect("close the streamer");
        },
        1000,
        "streamer disconnected",
    )
    .await;
}

#[tokio::test]
async fn invalid_utf8_closes_1007_behind_a_burst() {
    burst_then_close(
        async |streamer, player| {
            streamer.sync().await;
            player.send_invalid_utf8_text().await;
        },
        1007,
        "invalid UTF-8",
    )
    .await;
}

/// A ping→pong round trip that skips (and counts) the messages before the pong.
async fn sync_skipping(peer: &mut TestPeer) -> usize {
    peer.send_json(r#"{"type":"ping","time":424242}"#).await;
    let mut skipped = 0;
    loop {
        match peer.next_data(TIMEOUT).await {
            Some(Ok(text)) if text == r#"{"type":"pong","time":424242}"# => return skipped,
            Some(Ok(_)) => skipped += 1,
            other => panic!("{}: no pong: {other:?}", peer.name),
        }
    }
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/PID/status` (`"VmRSS:"`, `"VmHWM:"`), in KiB.
pub(crate) fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[tokio::test]
async fn peers_doing_their_worst_stay_within_the_documented_byte_budget() {
    let (child, mut lines, streamer_addr, player_addr) = binary::start(&[]).await;
    // The log is read, so that writing it never holds the server up.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let pid = child.id().expect("pid");
    // PROTOCOL.md §1.7: one peer can make the server hold about 3 x max_queued_bytes plus
    // 2 x max_message_size (both 1 MiB by default).
    let per_peer_kib = 5 * 1024;

    let mut streamer = TestPeer::connect(streamer_addr, "streamer").await;
    streamer.expect_text(CONFIG).await;
    streamer.expect_text(IDENTIFY).await;
    streamer.endpoint_id("S").await;
    let mut reader = TestPeer::connect(player_addr, "reader").await;
    reader.expect_text(CONFIG).await;
    reader.subscribe("S").await;
    streamer.expect_type("playerConnected").await;
    let mut sink = TestPeer::connect(player_addr, "sink").await;
    sink.expect_text(CONFIG).await;
    sink.subscribe("S").await;
    streamer.expect_type("playerConnected").await;
    streamer.sync().await;
    let before = rss_kib(pid);

    // 1. A player that never reads while its streamer sends it 100 offers of about 1 MiB.
    let sdp = "z".repeat(1_000_000);
    for i in 0..100 {
        streamer
            .send_json(&format!(
                r#"{{"type":"offer","playerId":"Player1","n":{i},"sdp":"{sdp}"}}"#
            ))
            .await;
    }
    sync_skipping(&mut streamer).await;
    let after_offers = rss_kib(pid);
    let peers = 2 + 1 + 8 + 1;
    let bound = before + peers * per_peer_kib;
    assert!(
        after_offers <= bound,
        "server RSS {before} KiB before, {after_offers} KiB after 100 MB of offers to a player \
         that reads nothing; bound {bound} KiB ({peers} peers x {per_peer_kib} KiB)"
    );

    // 2. Streamers asking for ids of about 1 MiB, and a player listing them 48 times without reading.
    let long_id = "L".repeat(1_000_000);
    let mut long = Vec::new();
    for _ in 0..8 {
        let mut st = TestPeer::connect(streamer_addr, "long-id").await;
        st.expect_text(CONFIG).await;
        st.expect_text(IDENTIFY).await;
        st.send_json(&format!(r#"{{"type":"endpointId","id":"{long_id}"}}"#))
            .await;
        sync_skipping(&mut st).await;
        long.push(st);
    }
    let mut lister = TestPeer::connect(player_addr, "lister").await;
    lister.expect_text(CONFIG).await;
    for _ in 0..48 {
        lister.send_json(r#"{"type":"listStreamers"}"#).await;
    }
    reader.sync().await;
    let after_lists = rss_kib(pid);
    assert_eq!(
        sync_skipping(&mut lister).await,
        48,
        "48 streamerLists before the pong"
    );

    assert!(
        after_lists <= bound,
        "server RSS {before} KiB before, {after_lists} KiB after the long ids and the lists; \
         bound {bound} KiB"
    );
    // The player that read nothing was closed for it (1008 "too slow", or, since it did not read
    // the close frame within 1 s either, a dropped connection); the others kept theirs.
    let ((code, _), _) = sink.expect_close_skipping_messages().await;
    assert!([1008, 1006].contains(&code), "sink closed with {code}");
    streamer.sync().await;
    reader.sync().await;
    for st in &mut long {
        st.sync().await;
    }
}

#[tokio::test]
async fn a_large_message_does_not_leave_its_connection_holding_a_large_read_buffer() {
    let (child, mut lines, _streamer_addr, player_addr) = binary::start(&[]).await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let pid = child.id().expect("pid");
    let mut players = Vec::new();
    for _ in 0..100 {
        let mut p = TestPeer::connect(player_addr, "player").await;
        p.expect_text(CONFIG).await;
        players.push(p);
    }
    players[0].sync().await;
    let before = rss_kib(pid);
    // Each sends one message of about 1 MB (ignored by the server) in a single frame, then a
    // small one.
    let big = format!(r#"{{"type":"stats","pad":"{}"}}"#, "s".repeat(1_000_000));
    for p in &mut players {
        p.send_json(&big).await;
        p.sync().await;
    }
    let after = rss_kib(pid);
    // Held for life, 100 read buffers of 1 MB would be about 100,000 KiB.
    assert!(
        after.saturating_sub(before) < 20 * 1024,
        "server RSS {before} KiB before, {after} KiB after 100 connections each sent 1 MB"
    );
}
