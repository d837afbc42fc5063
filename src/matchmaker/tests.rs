//! The reporter against a model of Epic's Matchmaker, and the client task against a TCP
//! server on 127.0.0.1 that records what it receives.

use proptest::prelude::*;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

fn settings(port: u16) -> MatchmakerSettings {
    MatchmakerSettings {
        address: "127.0.0.1".to_owned(),
        port,
        retry_interval: Duration::from_millis(20),
        public_ip: "203.0.113.7".to_owned(),
        player_port: 8080,
        https: false,
        keepalive: KEEPALIVE,
    }
}

fn counts(streamers: usize, players: usize) -> Counts {
    Counts { streamers, players }
}

fn drain(reporter: &mut Reporter, c: Counts) -> Vec<Message> {
    std::iter::from_fn(|| reporter.next(c)).collect()
}

#[test]
fn connect_is_cirrus_message_with_its_keys_in_order() {
    let mut r = Reporter::default();
    assert_eq!(
        r.connect(counts(0, 0), &settings(9999)),
        r#"{"type":"connect","address":"203.0.113.7","https":false,"port":8080,"ready":false,"playerConnected":false}"#
    );
    assert_eq!(
        r.connect(counts(2, 5), &settings(9999)),
        r#"{"type":"connect","address":"203.0.113.7","https":false,"port":8080,"ready":true,"playerConnected":true}"#
    );
}

#[test]
fn one_message_per_player_and_per_streamer_that_connects() {
    use Message::*;
    let mut r = Reporter::default();
    r.connect(counts(0, 0), &settings(1));
    assert_eq!(drain(&mut r, counts(0, 0)), []);
    assert_eq!(drain(&mut r, counts(1, 0)), [StreamerConnected]);
    assert_eq!(
        drain(&mut r, counts(2, 3)),
        [
            StreamerConnected,
            ClientConnected,
            ClientConnected,
            ClientConnected
        ]
    );
    assert_eq!(
        drain(&mut r, counts(2, 1)),
        [ClientDisconnected, ClientDisconnected]
    );
    assert_eq!(
        drain(&mut r, counts(1, 1)),
        [],
        "a streamer remains: still ready"
    );
    assert_eq!(
        drain(&mut r, counts(0, 0)),
        [StreamerDisconnected, ClientDisconnected]
    );
}

#[test]
fn after_a_reconnect_the_players_beyond_the_first_are_counted_up() {
    let mut r = Reporter::default();
    r.connect(counts(1, 3), &settings(1));
    assert_eq!(
        drain(&mut r, counts(1, 3)),
        [Message::ClientConnected, Message::ClientConnected]
    );
}

/// Epic's UE5.4 Matchmaker's bookkeeping for one server (`matchmaker.js`).
#[derive(Debug, Default)]
struct EpicMatchmaker {
    ready: bool,
    clients: i64,
}

impl EpicMatchmaker {
    fn receive(&mut self, text: &str) {
        let v: Value = serde_json::from_str(text).expect("JSON");
        match v["type"].as_str().expect("type") {
            "connect" => {
                self.ready = v["ready"] == Value::Bool(true);
                self.clients = i64::from(v["playerConnected"] == Value::Bool(true));
            }
            "streamerConnected" => self.ready = true,
            "streamerDisconnected" => self.ready = false,
            "clientConnected" => self.clients += 1,
            "clientDisconnected" => self.clients -= 1,
            other => panic!("unknown {other}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Counts(usize, usize),
    Reconnect,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0usize..4, 0usize..6).prop_map(|(s, p)| Step::Counts(s, p)),
        1 => Just(Step::Reconnect),
    ]
}

proptest! {
    /// Whatever the counts do and however often the connection restarts, once the messages
    /// are sent the Matchmaker's `ready` is "a streamer is connected" and its client count is
    /// the number of players: it offers the server exactly when it is free.
    #[test]
    fn the_matchmaker_always_ends_with_the_true_state(steps in prop::collection::vec(step(), 1..60)) {
        let s = settings(1);
        let mut r = Reporter::default();
        let mut mm = EpicMatchmaker::default();
        let mut now = counts(0, 0);
        mm.receive(&r.connect(now, &s));
        for step in steps {
            match step {
                Step::Counts(st, p) => now = counts(st, p),
                Step::Reconnect => {
                    mm = EpicMatchmaker::default();
                    mm.receive(&r.connect(now, &s));
                }
            }
            let mut sent = 0;
            while let Some(m) = r.next(now) {
                mm.receive(m.json());
                sent += 1;
                prop_assert!(sent <= 16, "diverges");
            }
            prop_assert_eq!(mm.ready, now.streamers > 0);
            prop_assert_eq!(mm.clients, i64::try_from(now.players).unwrap());
        }
    }
}

/// Reads JSON objects written back to back (no framing) and forwards each.
async fn record(mut stream: TcpStream, tx: mpsc::UnboundedSender<Value>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
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

async fn expect(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a message within 5 s")
        .expect("the recorder runs")
}

#[tokio::test]
async fn the_client_connects_reports_changes_and_pings() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (counts_tx, counts_rx) = watch::channel(counts(1, 0));
    let shutdown = CancellationToken::new();
    let client = tokio::spawn(run(
        MatchmakerSettings {
            keepalive: Duration::from_millis(50),
            ..settings(port)
        },
        counts_rx,
        shutdown.clone(),
    ));
    let (stream, _) = listener.accept().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(record(stream, tx));
    let connect = expect(&mut rx).await;
    assert_eq!(connect["type"], "connect");
    assert_eq!(connect["ready"], true);
    assert_eq!(connect["playerConnected"], false);
    counts_tx.send_replace(counts(1, 1));
    // Pings may come first: they run on their own clock.
    let mut seen = Vec::new();
    while !seen.contains(&"clientConnected".to_owned())
        || seen.iter().filter(|t| *t == "ping").count() < 2
    {
        seen.push(expect(&mut rx).await["type"].as_str().unwrap().to_owned());
    }
    assert!(
        seen.iter().all(|t| t == "ping" || t == "clientConnected"),
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|t| *t == "clientConnected").count(), 1);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), client)
        .await
        .expect("the client ends on shutdown")
        .unwrap();
}

#[tokio::test]
async fn the_client_retries_until_the_matchmaker_is_there() {
    // A port with nobody listening: bound, then freed.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let (_counts_tx, counts_rx) = watch::channel(counts(0, 2));
    let shutdown = CancellationToken::new();
    let client = tokio::spawn(run(settings(port), counts_rx, shutdown.clone()));
    // The client starts while nothing listens; the Matchmaker comes up after it.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("the client reconnects")
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(record(stream, tx));
    let connect = expect(&mut rx).await;
    assert_eq!(connect["playerConnected"], true);
    assert_eq!(
        expect(&mut rx).await["type"],
        "clientConnected",
        "the second player"
    );
    shutdown.cancel();
    client.await.unwrap();
}
