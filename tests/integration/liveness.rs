//! PROTOCOL.md §9: WebSocket Ping keepalive with a dead-peer deadline, and server protocol pings.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{
    NO_CLOSE_FRAME, STREAMER_DISCONNECTED, TestServer, config, player_disconnected,
};

fn keepalive_server_config() -> signalling::config::Config {
    let mut cfg = config();
    cfg.keepalive_interval = Duration::from_millis(200);
    cfg.keepalive_timeout = Duration::from_millis(500);
    cfg
}

#[tokio::test]
async fn player_that_stops_reading_is_dropped_and_its_streamer_told() {
    let server = TestServer::start(keepalive_server_config()).await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;
    p.sync().await;

    // From here `p` is never polled, so it answers no Ping; `st` keeps reading (and answering).
    st.expect_text(&player_disconnected("Player0")).await;
    // The server dropped TCP without a close frame.
    assert_eq!(p.expect_close().await, (NO_CLOSE_FRAME, String::new()));
    st.sync().await;
}

#[tokio::test]
async fn streamer_that_stops_reading_is_dropped_and_its_players_closed() {
    let server = TestServer::start(keepalive_server_config()).await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;
    assert_eq!(
        p.expect_close().await,
        (STREAMER_DISCONNECTED.0, STREAMER_DISCONNECTED.1.to_owned())
    );
    assert_eq!(st.expect_close().await, (NO_CLOSE_FRAME, String::new()));
}

#[tokio::test]
async fn reading_peers_survive_past_the_timeout() {
    let server = TestServer::start(keepalive_server_config()).await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;
    let mut f = server.sfu().await;
    // Reading answers the server's Pings; three timeouts pass.
    let quiet = Duration::from_millis(1500);
    tokio::join!(
        st.expect_silence(quiet),
        p.expect_silence(quiet),
        f.expect_silence(quiet)
    );
    st.sync().await;
    p.sync().await;
    f.sync().await;
}

fn player_ping_config() -> signalling::config::Config {
    let mut cfg = config();
    cfg.player_protocol_ping = Duration::from_millis(300);
    cfg
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test]
async fn player_that_never_answers_protocol_pings_is_dropped() {
    let server = TestServer::start(player_ping_config()).await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;

    let ping = p.recv_text().await;
    let time = ping
        .strip_prefix(r#"{"type":"ping","time":"#)
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|time| time.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("not an exact server ping: {ping}"));
    assert!(
        time.abs_diff(now_ms()) < 10_000,
        "ping time {time} is not ms since the epoch"
    );

    // Reading (so WebSocket Pings are answered) but never sending a pong.
    let (close, _pings) = p.expect_close_skipping_messages().await;
    assert_eq!(close, (NO_CLOSE_FRAME, String::new()));
    st.expect_text(&player_disconnected("Player0")).await;
    st.sync().await;
}

#[tokio::test]
async fn player_answering_protocol_pings_survives() {
    let server = TestServer::start(player_ping_config()).await;
    let mut st = server.streamer("DefaultStreamer").await;
    let mut p = server
        .subscribed_player(&mut st, "DefaultStreamer", "Player0")
        .await;

    let answer_pings = async {
        let mut pings = 0;
        let end = tokio::time::Instant::now() + Duration::from_millis(1500);
        while let Some(message) = p
            .next_data(end.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            let text = message.unwrap_or_else(|close| panic!("player closed: {close:?}"));
            let ping: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(ping["type"], "ping", "unexpected {text}");
            p.send_json(&format!(r#"{{"type":"pong","time":{}}}"#, ping["time"]))
                .await;
            pings += 1;
        }
        pings
    };
    let (pings, ()) = tokio::join!(answer_pings, st.expect_silence(Duration::from_millis(1500)));
    assert!(pings >= 3, "only {pings} protocol pings in 1.5 s at 0.3 s");
    st.sync().await;
}
