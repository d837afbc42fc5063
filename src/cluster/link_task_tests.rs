//! The link against a real `redis-server` that each test starts on an ephemeral port: messages
//! both ways in order, a stopped node reported down, Redis killed and restarted, a gap in an
//! inbox, start-up without Redis. Short heartbeat and timeout; every wait is on an event, with
//! a bound that only turns a hang into a failure.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link::{DEAD, HEARTBEAT, LinkEvent, NodeKey};
use super::link_task::{LinkError, LinkHandle, LinkSettings, redacted, start};
use super::test_redis::RedisServer;

/// A failure bound, never a synchronisation.
const BOUND: Duration = Duration::from_secs(15);

fn settings(url: &str, node_id: &str) -> LinkSettings {
    LinkSettings {
        redis_url: url.to_owned(),
        key_prefix: "signalling".to_owned(),
        node_id: node_id.to_owned(),
        heartbeat_interval: Duration::from_millis(50),
        node_timeout: Duration::from_millis(300),
        inbox_max_length: 100_000,
        start_alone: false,
    }
}

struct TestLink {
    handle: LinkHandle<u64>,
    events: mpsc::Receiver<LinkEvent<u64>>,
    shutdown: CancellationToken,
}

impl TestLink {
    async fn start(settings: LinkSettings) -> Self {
        let shutdown = CancellationToken::new();
        let (handle, events) = start(settings, shutdown.clone())
            .await
            .expect("link starts");
        Self {
            handle,
            events,
            shutdown,
        }
    }

    async fn next(&mut self) -> LinkEvent<u64> {
        tokio::time::timeout(BOUND, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: no event within {BOUND:?}", self.handle.me()))
            .expect("link running")
    }

    /// The next event, which must be `expected`.
    async fn expect(&mut self, expected: LinkEvent<u64>) {
        let event = self.next().await;
        assert_eq!(event, expected, "{}", self.handle.me());
    }

    /// Waits for `Up` of node `id` and returns its key; Connected/Disconnected are skipped.
    async fn up(&mut self, id: &str) -> NodeKey {
        loop {
            match self.next().await {
                LinkEvent::Up(key) if *key.id == *id => return key,
                LinkEvent::Connected | LinkEvent::Disconnected => {}
                other => panic!("{}: waiting for Up({id}), got {other:?}", self.handle.me()),
            }
        }
    }
}

impl Drop for TestLink {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Two links that have heard each other.
async fn pair(redis: &RedisServer) -> (TestLink, TestLink, NodeKey, NodeKey) {
    let mut a = TestLink::start(settings(&redis.url(), "a")).await;
    let mut b = TestLink::start(settings(&redis.url(), "b")).await;
    a.expect(LinkEvent::Connected).await;
    b.expect(LinkEvent::Connected).await;
    let kb = a.up("b").await;
    let ka = b.up("a").await;
    assert_eq!(ka, a.handle.me());
    assert_eq!(kb, b.handle.me());
    (a, b, ka, kb)
}

#[tokio::test]
async fn two_links_carry_messages_both_ways_in_order() {
    let redis = RedisServer::start().await;
    let (mut a, mut b, ka, kb) = pair(&redis).await;
    const COUNT: u64 = 5_000;
    for n in 0..COUNT {
        // The queue holds them all; a full one would be an error, never a wait.
        a.handle.send(&kb, n).expect("room");
        b.handle.send(&ka, COUNT + n).expect("room");
    }
    for n in 0..COUNT {
        b.expect(LinkEvent::Message(ka.clone(), n)).await;
        a.expect(LinkEvent::Message(kb.clone(), COUNT + n)).await;
    }
}

#[tokio::test]
async fn three_links_hear_each_other_and_broadcast_reaches_every_node_up() {
    let redis = RedisServer::start().await;
    let mut links = Vec::new();
    for id in ["a", "b", "c"] {
        links.push(TestLink::start(settings(&redis.url(), id)).await);
    }
    let keys: Vec<NodeKey> = links.iter().map(|l| l.handle.me()).collect();
    for (i, link) in links.iter_mut().enumerate() {
        let mut ups = Vec::new();
        while ups.len() < 2 {
            match link.next().await {
                LinkEvent::Up(key) => ups.push(key),
                LinkEvent::Connected => {}
                other => panic!("waiting for Ups, got {other:?}"),
            }
        }
        ups.sort();
        let mut others: Vec<NodeKey> = keys.iter().filter(|k| **k != keys[i]).cloned().collect();
        others.sort();
        assert_eq!(ups, others);
    }
    links[0].handle.broadcast(7).expect("room");
    links[1]
        .expect(LinkEvent::Message(keys[0].clone(), 7))
        .await;
    links[2]
        .expect(LinkEvent::Message(keys[0].clone(), 7))
        .await;
}

#[tokio::test]
async fn a_stopped_node_is_reported_down_and_forgotten_in_the_nodes_hash() {
    let redis = RedisServer::start().await;
    let (mut a, b, _, kb) = pair(&redis).await;
    // A dead process: no goodbye.
    b.shutdown.cancel();
    a.expect(LinkEvent::Down(kb.clone())).await;
    // Sends to it are dropped, not queued for ever, and nothing comes from it.
    a.handle.send(&kb, 1).expect("room");
    let mut c = TestLink::start(settings(&redis.url(), "c")).await;
    c.expect(LinkEvent::Connected).await;
    let kc = a.up("c").await;
    assert_eq!(c.up("a").await, a.handle.me());
    // C never hears of B: A removed it from the nodes hash (C may list it before that, but it
    // never comes up).
    a.handle.send(&kc, 2).expect("room");
    c.expect(LinkEvent::Message(a.handle.me(), 2)).await;
    let mut conn = redis.connection().await;
    let b_entry: Option<String> = redis::cmd("HGET")
        .arg("signalling:nodes")
        .arg("b")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(b_entry, None);
}

#[tokio::test]
async fn redis_restarted_empty_downs_every_node_and_they_come_back_as_new_incarnations() {
    let mut redis = RedisServer::start().await;
    let (mut a, mut b, ka, kb) = pair(&redis).await;
    redis.kill().await;
    a.expect(LinkEvent::Disconnected).await;
    b.expect(LinkEvent::Disconnected).await;
    // After node_timeout without Redis: every node down, and a new incarnation.
    a.expect(LinkEvent::Down(kb.clone())).await;
    b.expect(LinkEvent::Down(ka.clone())).await;
    redis.restart().await;
    a.expect(LinkEvent::Connected).await;
    b.expect(LinkEvent::Connected).await;
    let kb2 = a.up("b").await;
    let ka2 = b.up("a").await;
    assert_ne!(ka2, ka);
    assert_ne!(kb2, kb);
    assert_eq!(ka2, a.handle.me());
    assert_eq!(kb2, b.handle.me());
    // Sends to the old incarnation are dropped; to the new one they flow.
    a.handle.send(&kb, 1).expect("room");
    a.handle.send(&kb2, 2).expect("room");
    b.expect(LinkEvent::Message(ka2.clone(), 2)).await;
    b.handle.send(&ka2, 3).expect("room");
    a.expect(LinkEvent::Message(kb2, 3)).await;
}

#[tokio::test]
async fn redis_back_within_the_timeout_delivers_what_was_sent_meanwhile_in_order_and_nobody_goes_down()
 {
    let mut redis = RedisServer::start().await;
    let mut a = TestLink::start(LinkSettings {
        heartbeat_interval: Duration::from_secs(5),
        node_timeout: Duration::from_secs(30),
        ..settings(&redis.url(), "a")
    })
    .await;
    let mut b = TestLink::start(LinkSettings {
        heartbeat_interval: Duration::from_secs(5),
        node_timeout: Duration::from_secs(30),
        ..settings(&redis.url(), "b")
    })
    .await;
    a.expect(LinkEvent::Connected).await;
    b.expect(LinkEvent::Connected).await;
    let kb = a.up("b").await;
    let ka = b.up("a").await;
    // A round trip: what was sent before is read (the next heartbeats are seconds away), so
    // killing Redis now loses nothing that was written.
    a.handle.send(&kb, 0).expect("room");
    b.expect(LinkEvent::Message(ka.clone(), 0)).await;
    b.handle.send(&ka, 0).expect("room");
    a.expect(LinkEvent::Message(kb.clone(), 0)).await;
    redis.kill().await;
    a.expect(LinkEvent::Disconnected).await;
    b.expect(LinkEvent::Disconnected).await;
    for n in 1..=100 {
        a.handle.send(&kb, n).expect("room");
    }
    redis.restart().await;
    a.expect(LinkEvent::Connected).await;
    b.expect(LinkEvent::Connected).await;
    for n in 1..=100 {
        b.expect(LinkEvent::Message(ka.clone(), n)).await;
    }
    assert_eq!(a.handle.me(), ka);
    assert_eq!(b.handle.me(), kb);
}

#[tokio::test]
async fn a_node_declared_dead_by_another_starts_a_new_incarnation_and_is_heard_again() {
    let redis = RedisServer::start().await;
    let (mut a, mut b, ka, kb) = pair(&redis).await;
    let mut conn = redis.connection().await;
    // An envelope "from A" far ahead of what B expects: B sees a gap in A's sequence.
    append(
        &mut conn,
        "b",
        format!(
            r#"{{"from":"a","inc":{},"to_inc":{},"seq":1000000000,"body":{HEARTBEAT}}}"#,
            ka.inc, kb.inc
        ),
    )
    .await;
    b.expect(LinkEvent::Down(ka.clone())).await;
    // A is told, starts anew: B is down for A's old life, up again for the new one.
    a.expect(LinkEvent::Down(kb.clone())).await;
    assert_eq!(a.up("b").await, kb);
    let ka2 = b.up("a").await;
    assert_ne!(ka2, ka);
    assert_eq!(ka2, a.handle.me());
    a.handle.send(&kb, 5).expect("room");
    b.expect(LinkEvent::Message(ka2, 5)).await;
}

/// Writes an envelope into `to`'s inbox as a node the test plays by hand.
async fn append(conn: &mut redis::aio::MultiplexedConnection, to: &str, envelope: String) {
    let _: String = redis::cmd("XADD")
        .arg(format!("signalling:inbox:{to}"))
        .arg("*")
        .arg("m")
        .arg(envelope)
        .query_async(conn)
        .await
        .expect("XADD");
}

/// Waits for the next envelope in `node`'s inbox after `from_id` (an XREAD BLOCK: an event).
async fn read_inbox(
    conn: &mut redis::aio::MultiplexedConnection,
    node: &str,
    from_id: &str,
) -> (String, String) {
    let reply: redis::streams::StreamReadReply = tokio::time::timeout(
        BOUND,
        redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(BOUND.as_millis() as u64)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(format!("signalling:inbox:{node}"))
            .arg(from_id)
            .query_async(conn),
    )
    .await
    .expect("an envelope within the bound")
    .expect("XREAD");
    let entry = reply
        .keys
        .into_iter()
        .flat_map(|k| k.ids)
        .next()
        .expect("an entry");
    let envelope: String = entry.get("m").expect("field m");
    (entry.id, envelope)
}

#[tokio::test]
async fn a_gap_in_the_inbox_downs_the_sender_tells_it_and_removes_only_its_own_hash_entry() {
    let redis = RedisServer::start().await;
    let mut slow = settings(&redis.url(), "a");
    // No timeout during this test: only the gap may end the hand-played nodes.
    slow.node_timeout = Duration::from_secs(60);
    let mut b_settings = slow.clone();
    b_settings.node_id = "b".to_owned();
    let mut a = TestLink::start(slow).await;
    let mut b = TestLink::start(b_settings).await;
    a.expect(LinkEvent::Connected).await;
    b.expect(LinkEvent::Connected).await;
    // B heard A: B's incarnation is listed and B reads everything sent to it from now on.
    b.up("a").await;
    let kb = b.handle.me();
    let mut conn = redis.connection().await;
    // x/7 is listed as itself; y/5's entry already names its successor y/9.
    let _: () = redis::cmd("HSET")
        .arg("signalling:nodes")
        .arg("x")
        .arg(7)
        .arg("y")
        .arg(9)
        .query_async(&mut conn)
        .await
        .expect("HSET");
    for (id, inc) in [("x", 7u64), ("y", 5)] {
        let key = NodeKey::new(id, inc);
        let envelope = |seq: u64, body: &str| {
            format!(
                r#"{{"from":"{id}","inc":{inc},"to_inc":{},"seq":{seq},"body":{body}}}"#,
                kb.inc
            )
        };
        append(&mut conn, "b", envelope(1, HEARTBEAT)).await;
        append(&mut conn, "b", envelope(2, "42")).await;
        // 3 was lost.
        append(&mut conn, "b", envelope(4, "43")).await;
        append(&mut conn, "b", envelope(5, "44")).await;
        loop {
            // B's own heartbeats to the listed x/7 and y/9 may come first; skip those.
            match b.next().await {
                LinkEvent::Up(k) if k == key => break,
                LinkEvent::Up(k) if *k.id == *id => {}
                other => panic!("waiting for Up({key}), got {other:?}"),
            }
        }
        b.expect(LinkEvent::Message(key.clone(), 42)).await;
        b.expect(LinkEvent::Down(key.clone())).await;
        // The dead incarnation is told (and its hash entry handled before, on the same
        // connection, so the notice orders the check below).
        let mut last = "0-0".to_owned();
        loop {
            let (id_read, envelope) = read_inbox(&mut conn, id, &last).await;
            last = id_read;
            let envelope: serde_json::Value = serde_json::from_str(&envelope).expect("JSON");
            if envelope["to_inc"] == inc
                && envelope["body"]
                    == serde_json::from_str::<serde_json::Value>(DEAD).expect("JSON")
            {
                assert_eq!(envelope["seq"], 0);
                assert_eq!(envelope["from"], "b");
                break;
            }
        }
    }
    let nodes: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("signalling:nodes")
        .query_async(&mut conn)
        .await
        .expect("HGETALL");
    assert_eq!(nodes.get("x"), None, "x/7's entry removed");
    assert_eq!(
        nodes.get("y").map(String::as_str),
        Some("9"),
        "y/9's entry kept"
    );
    // A heard nothing of x or y's messages, and B no more of them.
    drop(a);
}

#[tokio::test]
async fn an_unreachable_redis_at_start_is_an_error_naming_the_url_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("redis://user:secret@127.0.0.1:{port}/0");
    let Err(error) = start::<u64>(settings(&url, "a"), CancellationToken::new()).await else {
        panic!("started without Redis")
    };
    assert!(matches!(error, LinkError::Unreachable { .. }));
    let message = error.to_string();
    assert!(
        message.contains(&format!("redis://user:***@127.0.0.1:{port}/0")),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
    let bad = start::<u64>(settings("http://x", "a"), CancellationToken::new()).await;
    assert!(matches!(bad, Err(LinkError::BadUrl { .. })));
}

#[tokio::test]
async fn started_alone_the_link_connects_once_redis_is_there() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut alone = settings(&url, "a");
    alone.start_alone = true;
    let mut a = TestLink::start(alone).await;
    let ka = a.handle.me();
    let redis = RedisServer::start_on(port).await;
    a.expect(LinkEvent::Connected).await;
    let mut b = TestLink::start(settings(&redis.url(), "b")).await;
    b.expect(LinkEvent::Connected).await;
    let kb = a.up("b").await;
    // Unless Redis took longer than node_timeout to come, A kept its incarnation; either way
    // B knows A by the incarnation A has now.
    assert_eq!(b.up("a").await, a.handle.me());
    let _ = ka;
    a.handle.send(&kb, 9).expect("room");
    b.expect(LinkEvent::Message(a.handle.me(), 9)).await;
}

#[test]
fn urls_are_redacted_of_their_password_only() {
    assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    assert_eq!(redacted("redis://:pw@h:1/2"), "redis://:***@h:1/2");
    assert_eq!(redacted("rediss://u:p@ss@h/0"), "rediss://u:***@h/0");
    assert_eq!(redacted("redis://secret@h"), "redis://***@h");
    assert_eq!(redacted("unix:///run/redis.sock"), "unix:///run/redis.sock");
}

/// A body the link had to drop (its queue full: here because the server stopped taking the
/// link's events) would leave the other node waiting for it forever; the node starts a new
/// incarnation instead, so both sides end every pair between them, as on the loss of a node.
#[tokio::test]
async fn a_full_queue_makes_the_node_start_a_new_incarnation() {
    let redis = RedisServer::start().await;
    let long = |id| LinkSettings {
        node_timeout: Duration::from_secs(60),
        ..settings(&redis.url(), id)
    };
    let mut a = TestLink::start(long("a")).await;
    let mut b = TestLink::start(long("b")).await;
    a.expect(LinkEvent::Connected).await;
    b.expect(LinkEvent::Connected).await;
    let kb = a.up("b").await;
    let ka = b.up("a").await;
    // B floods A, whose events nobody reads: A's task stops at its full events channel.
    for n in 0..20_000u64 {
        b.handle.send(&ka, n).expect("room at b");
        if n % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // So A's own queue fills: a send is refused.
    let mut refused = false;
    for n in 0..1_000_000u64 {
        if a.handle.send(&kb, n).is_err() {
            refused = true;
            break;
        }
        if n % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(refused, "a's queue never filled");
    // Once its events are read again, A starts a new incarnation: B is down for it…
    loop {
        match a.next().await {
            LinkEvent::Message(..) | LinkEvent::Connected | LinkEvent::Disconnected => {}
            LinkEvent::Down(key) => {
                assert_eq!(key, kb);
                break;
            }
            other => panic!("a: {other:?}"),
        }
    }
    assert_ne!(a.handle.me(), ka, "a new incarnation");
    // …and for B the old A is down, then the new one up.
    loop {
        match b.next().await {
            LinkEvent::Message(..) | LinkEvent::Connected | LinkEvent::Disconnected => {}
            LinkEvent::Down(key) => {
                assert_eq!(key, ka);
                break;
            }
            other => panic!("b: {other:?}"),
        }
    }
    assert_eq!(b.up("a").await, a.handle.me());
}
