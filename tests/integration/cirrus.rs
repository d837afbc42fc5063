//! Cirrus (UE4.27–5.4) behaviours, each opt-in (PROTOCOL.md §8, "Cirrus"): `max_player_count`,
//! `playerCount` updates, `?OfferToReceive`, `subscribe_at_connect`, and the matchmaker client
//! against a fake Matchmaker that records what it receives.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use signalling::config::Config;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::support::{
    CONFIG, TIMEOUT, TestPeer, TestServer, config, player_connected, player_disconnected,
};

#[tokio::test]
async fn max_player_count_closes_the_player_over_it_1013_and_a_freed_slot_admits_the_next() {
    let server = TestServer::start(Config {
        max_player_count: Some(2),
        ..config()
    })
    .await;
    let mut st = server.streamer("S").await;
    let a = server.subscribed_player(&mut st, "S", "Player0").await;
    let mut b = server.player().await;

    let mut refused = TestPeer::connect(server.player, "refused").await;
    assert_eq!(
        refused.expect_close().await,
        (1013, "too many connections. max: 2, current: 2".into()),
        "closed before config, with Cirrus's reason"
    );
    b.sync().await;

    a.close().await;
    st.expect_text(&player_disconnected("Player0")).await;
    let mut c = TestPeer::connect(server.player, "c").await;
    c.expect_text(CONFIG).await;
    c.sync().await;
}

#[tokio::test]
async fn player_count_is_resent_to_every_player_when_the_count_changes() {
    let server = TestServer::start(Config {
        player_count: true,
        player_count_updates: true,
        ..config()
    })
    .await;
    let mut a = TestPeer::connect(server.player, "a").await;
    a.expect_text(CONFIG).await;
    a.expect_text(r#"{"type":"playerCount","count":1}"#).await;
    let mut b = TestPeer::connect(server.player, "b").await;
    b.expect_text(CONFIG).await;
    b.expect_text(r#"{"type":"playerCount","count":2}"#).await;
    a.expect_text(r#"{"type":"playerCount","count":2}"#).await;

    b.close().await;
    a.expect_text(r#"{"type":"playerCount","count":1}"#).await;
    a.sync().await;
}

#[tokio::test]
async fn a_burst_of_joins_reaches_an_earlier_player_as_few_updates_ending_at_the_total() {
    const N: usize = 50;
    let server = TestServer::start(Config {
        player_count: true,
        player_count_updates: true,
        ..config()
    })
    .await;
    let mut first = TestPeer::connect(server.player, "first").await;
    first.expect_text(CONFIG).await;
    first
        .expect_text(r#"{"type":"playerCount","count":1}"#)
        .await;
    let mut others = Vec::new();
    for i in 0..N {
        let mut p = TestPeer::connect(server.player, &format!("p{i}")).await;
        p.expect_text(CONFIG).await;
        p.expect_type("playerCount").await;
        others.push(p);
    }
    // Updates go out at most once a second, so the 50 joins (well under a second on loopback,
    // though the test does not rely on it) arrive as a handful of messages, the last with 51.
    let mut updates = 0;
    loop {
        let count = first.expect_type("playerCount").await;
        updates += 1;
        if count["count"] == N + 1 {
            break;
        }
    }
    assert!(
        updates < N,
        "{updates} updates for {N} joins: not coalesced"
    );
}

#[tokio::test]
async fn offer_to_receive_in_the_url_becomes_send_offer_false() {
    let server = TestServer::with_defaults().await;
    let mut st = server.streamer("S").await;
    let url = format!("ws://{}/?OfferToReceive=true", server.player);
    let mut browser = TestPeer::connect_url(&url, "browser").await;
    browser.expect_text(CONFIG).await;
    browser.subscribe("S").await;
    st.expect_text(
        r#"{"type":"playerConnected","dataChannel":true,"sfu":false,"playerId":"Player0","sendOffer":false}"#,
    )
    .await;
    // `=false` is the streamer's offer, as without the parameter.
    let url = format!("ws://{}/some/path?OfferToReceive=false", server.player);
    let mut normal = TestPeer::connect_url(&url, "normal").await;
    normal.expect_text(CONFIG).await;
    normal.subscribe("S").await;
    st.expect_text(&player_connected("Player1", false)).await;
}

#[tokio::test]
async fn subscribe_at_connect_announces_a_page_that_never_subscribes() {
    let server = TestServer::start(Config {
        subscribe_at_connect: true,
        ..config()
    })
    .await;
    let mut nobody = TestPeer::connect(server.player, "early").await;
    assert_eq!(
        nobody.expect_close().await,
        (1013, "Streamer is not connected".into())
    );

    // A refused player takes no id.
    let mut st = server.streamer("S").await;
    let mut p = server.player().await;
    st.expect_text(&player_connected("Player0", false)).await;
    st.send_json(r#"{"type":"offer","playerId":"Player0","sdp":"ue"}"#)
        .await;
    p.expect_text(r#"{"type":"offer","playerId":"Player0","sdp":"ue"}"#)
        .await;
    p.send_json(r#"{"type":"answer","sdp":"browser"}"#).await;
    st.expect_text(r#"{"type":"answer","sdp":"browser","playerId":"Player0"}"#)
        .await;
}

// ---- the matchmaker client ----

/// A stand-in for Epic's Matchmaker: accepts connections on one port and records every JSON
/// object it receives (written back to back, no framing, as Cirrus writes them).
struct FakeMatchmaker {
    port: u16,
    listener: Option<TcpListener>,
    messages: mpsc::UnboundedReceiver<Value>,
    tx: mpsc::UnboundedSender<Value>,
    conn: Option<JoinHandle<()>>,
}

impl FakeMatchmaker {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, messages) = mpsc::unbounded_channel();
        Self {
            port,
            listener: Some(listener),
            messages,
            tx,
            conn: None,
        }
    }

    /// Waits for the client's connection and records it.
    async fn accept(&mut self) {
        let listener = self.listener.as_ref().expect("listening");
        let (stream, _) = timeout(TIMEOUT, listener.accept())
            .await
            .expect("the client connects within the timeout")
            .expect("accept");
        self.conn = Some(tokio::spawn(record(stream, self.tx.clone())));
    }

    /// Restarts: stops listening, listens again on the same port, then drops the connection
    /// (the client sees EOF, as when Epic's Matchmaker process restarts).
    async fn restart(&mut self) {
        drop(self.listener.take());
        self.listener = Some(
            TcpListener::bind(("127.0.0.1", self.port))
                .await
                .expect("rebind the same port"),
        );
        if let Some(conn) = self.conn.take() {
            conn.abort();
            let _ = conn.await;
        }
    }

    async fn expect(&mut self) -> Value {
        timeout(TIMEOUT, self.messages.recv())
            .await
            .expect("a message within the timeout")
            .expect("recorder running")
    }

    /// The next message that is not a keepalive `ping`.
    async fn expect_event(&mut self) -> Value {
        loop {
            let v = self.expect().await;
            if v["type"] != "ping" {
                return v;
            }
        }
    }
}

async fn record(mut stream: TcpStream, tx: mpsc::UnboundedSender<Value>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
        let mut used = 0;
        while let Some(Ok(v)) = values.next() {
            used = values.byte_offset();
            let _ = tx.send(v);
        }
        buf.drain(..used);
    }
}

fn connect_message(player: SocketAddr, ready: bool, player_connected: bool) -> Value {
    serde_json::json!({
        "type": "connect",
        "address": "203.0.113.7",
        "https": false,
        "port": player.port(),
        "ready": ready,
        "playerConnected": player_connected,
    })
}

#[tokio::test]
async fn matchmaker_gets_connect_one_event_per_change_and_connect_again_after_a_restart() {
    let mut mm = FakeMatchmaker::start().await;
    let server = TestServer::start(Config {
        use_matchmaker: true,
        matchmaker_address: "127.0.0.1".into(),
        matchmaker_port: mm.port,
        matchmaker_retry_interval: Duration::from_millis(50),
        public_ip: "203.0.113.7".into(),
        ..config()
    })
    .await;
    mm.accept().await;
    assert_eq!(
        mm.expect_event().await,
        connect_message(server.player, false, false)
    );

    let st = server.streamer("S").await;
    assert_eq!(mm.expect_event().await["type"], "streamerConnected");
    let a = server.player().await;
    assert_eq!(mm.expect_event().await["type"], "clientConnected");
    let b = server.player().await;
    assert_eq!(mm.expect_event().await["type"], "clientConnected");
    let c = server.player().await;
    assert_eq!(mm.expect_event().await["type"], "clientConnected");
    c.close().await;
    assert_eq!(mm.expect_event().await["type"], "clientDisconnected");

    // The Matchmaker restarts: `connect` again with the current state, then the second player
    // so that its count is 2 (its `connect` counts at most one).
    mm.restart().await;
    mm.accept().await;
    assert_eq!(
        mm.expect_event().await,
        connect_message(server.player, true, true)
    );
    assert_eq!(mm.expect_event().await["type"], "clientConnected");

    a.close().await;
    assert_eq!(mm.expect_event().await["type"], "clientDisconnected");
    b.close().await;
    assert_eq!(mm.expect_event().await["type"], "clientDisconnected");
    st.close().await;
    assert_eq!(mm.expect_event().await["type"], "streamerDisconnected");
}

#[tokio::test]
async fn the_server_starts_and_serves_while_the_matchmaker_is_unreachable() {
    // A port nobody listens on: bound, then freed.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    };
    let server = TestServer::start(Config {
        use_matchmaker: true,
        matchmaker_address: "127.0.0.1".into(),
        matchmaker_port: port,
        matchmaker_retry_interval: Duration::from_millis(20),
        ..config()
    })
    .await;
    let mut st = server.streamer("S").await;
    let _p = server.subscribed_player(&mut st, "S", "Player0").await;
    server.shutdown().await;
}
