//! Unit and property tests of the overflow policy ([`Flow`]) with the [`Router`], over
//! simulated queues that follow the real queue's rules (two lanes, bounded in messages and bytes,
//! an empty lane takes one message of any size, forced items always go in).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use protocol::Inbound;
use protocol::close::{self, Close};

use super::flow::{Flow, Queues, Refused};
use super::*;
use crate::queue::Lane;

const BUDGET: usize = 1000;
const MESSAGES: usize = 16;
const TIMEOUT_MS: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Text(String),
    Close(u16),
}

#[derive(Debug, Default)]
struct SimConn {
    items: VecDeque<(Item, Lane, usize)>,
    receiver: (usize, usize),
    senders: (usize, usize),
    room_wanted: Option<usize>,
    /// Bytes charged (waiting at a receiver) to this connection as a sender.
    charged: usize,
    /// What reached the peer, in order.
    delivered: Vec<Item>,
    /// Urgent close or drop, ahead of the queue.
    urgent: Option<Option<u16>>,
    ended: bool,
}

impl SimConn {
    fn lane(&mut self, lane: Lane) -> &mut (usize, usize) {
        match lane {
            Lane::Receiver => &mut self.receiver,
            Lane::Senders => &mut self.senders,
        }
    }
    fn fits(&mut self, lane: Lane, bytes: usize) -> bool {
        let (n, b) = *self.lane(lane);
        n == 0 || (n < MESSAGES && b + bytes <= BUDGET)
    }
    fn has_room(&mut self, need: usize) -> bool {
        self.fits(Lane::Senders, need)
            && self.senders.0 <= MESSAGES / 2
            && self.senders.1 <= BUDGET / 2
    }
    fn push(&mut self, item: Item, lane: Lane, bytes: usize) {
        let count = self.lane(lane);
        count.0 += 1;
        count.1 += bytes;
        self.items.push_back((item, lane, bytes));
    }
    /// The writer takes one item; true if that gives the room signal.
    fn pop(&mut self) -> (Option<Item>, bool) {
        let Some((item, lane, bytes)) = self.items.pop_front() else {
            return (None, false);
        };
        let count = self.lane(lane);
        count.0 -= 1;
        count.1 -= bytes;
        let signal = self.room_wanted.is_some_and(|need| self.has_room(need));
        if signal {
            self.room_wanted = None;
        }
        (Some(item), signal)
    }
}

#[derive(Debug, Default)]
struct Sim {
    conns: BTreeMap<ConnId, SimConn>,
    /// (connection, close code) of every close the server made, urgent or queued.
    closed: Vec<(ConnId, Option<u16>)>,
}

impl Sim {
    fn live(&mut self, conn: ConnId) -> Option<&mut SimConn> {
        self.conns.get_mut(&conn).filter(|c| !c.ended)
    }
    fn end(&mut self, conn: ConnId, code: Option<u16>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.ended {
                c.ended = true;
                self.closed.push((conn, code));
            }
        }
    }
}

impl Queues for Sim {
    fn try_send(&mut self, to: ConnId, text: Utf8Bytes, lane: Lane) -> Result<(), Refused> {
        let Some(c) = self.live(to) else {
            return Err(Refused::Gone);
        };
        if !c.fits(lane, text.len()) {
            return Err(Refused::Full(text));
        }
        c.push(Item::Text(text.as_str().to_owned()), lane, text.len());
        Ok(())
    }
    fn force_send(&mut self, to: ConnId, text: Utf8Bytes) -> bool {
        let Some(c) = self.live(to) else {
            return false;
        };
        c.push(
            Item::Text(text.as_str().to_owned()),
            Lane::Senders,
            text.len(),
        );
        true
    }
    fn want_room(&mut self, conn: ConnId, need: usize) -> bool {
        let Some(c) = self.live(conn) else {
            return true;
        };
        if c.has_room(need) {
            return true;
        }
        c.room_wanted = Some(need);
        false
    }
    fn charge(&mut self, conn: ConnId, bytes: usize, add: bool) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if add {
                c.charged += bytes;
            } else {
                c.charged -= bytes;
            }
        }
    }
    fn close(&mut self, conn: ConnId, code: u16, _reason: String) {
        if let Some(c) = self.live(conn) {
            c.push(Item::Close(code), Lane::Receiver, 0);
        }
        self.end(conn, Some(code));
    }
    fn close_now(&mut self, conn: ConnId, close: Close) {
        if let Some(c) = self.live(conn) {
            c.urgent = Some(Some(close.code));
        }
        self.end(conn, Some(close.code));
    }
    fn drop_conn(&mut self, conn: ConnId) {
        if let Some(c) = self.live(conn) {
            c.urgent = Some(None);
        }
        self.end(conn, None);
    }
    fn remote(&mut self, _: crate::router::RemoteOut) {}
}

/// A router, its flow and simulated queues, driven as the router task drives them.
struct World {
    router: Router,
    flow: Flow,
    sim: Sim,
    now: u64,
    next: u64,
}

impl World {
    fn new() -> Self {
        Self {
            router: Router::new(RouterConfig {
                player_count: false,
                ..RouterConfig::default()
            }),
            flow: Flow::new(TIMEOUT_MS),
            sim: Sim::default(),
            now: 0,
            next: 1,
        }
    }

    fn open(&mut self, role: Role) -> ConnId {
        let conn = ConnId(self.next);
        self.next += 1;
        self.sim.conns.insert(conn, SimConn::default());
        self.router.handle_opened(conn, role);
        let now = self.now;
        self.flow.dispatch(&mut self.router, &mut self.sim, &|| now);
        conn
    }

    /// Whether `conn`'s reader may read (its gate is open).
    fn may_read(&self, conn: ConnId) -> bool {
        self.sim
            .conns
            .get(&conn)
            .is_some_and(|c| !c.ended && c.charged <= BUDGET)
    }

    /// `conn` sends `text`, if its reader is reading.
    fn send(&mut self, conn: ConnId, text: &str) -> bool {
        if !self.may_read(conn) {
            return false;
        }
        let message = Inbound::parse(text).expect("valid message");
        let now = self.now;
        self.router.handle_message(conn, message, || now);
        self.flow.dispatch(&mut self.router, &mut self.sim, &|| now);
        true
    }

    /// `conn`'s writer delivers up to `n` items.
    fn drain(&mut self, conn: ConnId, n: usize) {
        for _ in 0..n {
            let Some(c) = self.sim.conns.get_mut(&conn) else {
                return;
            };
            if c.urgent.is_some() {
                c.items.clear();
                return;
            }
            let (item, signal) = c.pop();
            let Some(item) = item else {
                return;
            };
            c.delivered.push(item);
            if signal {
                self.flow.handle_room(conn, &mut self.router, &mut self.sim);
                let now = self.now;
                self.flow.dispatch(&mut self.router, &mut self.sim, &|| now);
            }
        }
    }

    /// The peer closes `conn`.
    fn peer_closes(&mut self, conn: ConnId) {
        if self.sim.live(conn).is_none() {
            return;
        }
        self.sim.end(conn, None);
        self.flow.handle_closed(conn, &mut self.sim);
        self.router.handle_closed(conn);
        let now = self.now;
        self.flow.dispatch(&mut self.router, &mut self.sim, &|| now);
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.flow
            .handle_tick(self.now, &mut self.router, &mut self.sim);
        let now = self.now;
        self.flow.dispatch(&mut self.router, &mut self.sim, &|| now);
    }

    fn closes_of(&self, conn: ConnId) -> Vec<Option<u16>> {
        self.sim
            .closed
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, code)| *code)
            .collect()
    }

    fn delivered(&self, conn: ConnId) -> Vec<String> {
        self.sim.conns[&conn]
            .delivered
            .iter()
            .filter_map(|i| match i {
                Item::Text(t) => Some(t.clone()),
                Item::Close(_) => None,
            })
            .collect()
    }
}

fn candidate(n: usize) -> String {
    format!(
        r#"{{"type":"iceCandidate","candidate":"{}"}}"#,
        "c".repeat(n)
    )
}

fn offer_to(player: &str) -> String {
    format!(r#"{{"type":"offer","playerId":"{player}","sdp":"v=0"}}"#)
}

/// A streamer `S` and `n` players subscribed to it, everything delivered.
fn setup(n: usize) -> (World, ConnId, Vec<ConnId>) {
    let mut w = World::new();
    let st = w.open(Role::Streamer);
    w.send(st, r#"{"type":"endpointId","id":"S"}"#);
    let players: Vec<ConnId> = (0..n)
        .map(|_| {
            let p = w.open(Role::Player);
            w.send(p, r#"{"type":"subscribe","streamerId":"S"}"#);
            p
        })
        .collect();
    w.drain(st, usize::MAX);
    for &p in &players {
        w.drain(p, usize::MAX);
    }
    (w, st, players)
}

#[test]
fn a_flooding_player_waits_and_is_slowed_while_its_streamer_keeps_its_connection() {
    let (mut w, st, players) = setup(2);
    let (flooder, viewer) = (players[0], players[1]);
    let mut sent = 0;
    while w.send(flooder, &candidate(100)) {
        sent += 1;
        assert!(sent < 1000, "the flooder's reader never stopped");
    }
    assert!(sent > 0);
    assert!(!w.may_read(flooder), "the flooder is slowed");
    assert!(
        w.closes_of(st).is_empty(),
        "the streamer keeps its connection"
    );
    // An innocent viewer's message waits its turn rather than closing anyone.
    assert!(w.send(viewer, &candidate(10)));
    w.drain(st, usize::MAX);
    let got = w.delivered(st);
    assert_eq!(
        got.iter()
            .filter(|t| t.starts_with(r#"{"type":"iceCandidate""#) && t.contains("Player0"))
            .count(),
        sent,
        "every message of the flooder arrives once the streamer reads"
    );
    assert!(got.last().is_some_and(|t| t.contains("Player1")));
    assert!(w.may_read(flooder), "reading resumes");
    assert!(w.sim.closed.is_empty(), "{:?}", w.sim.closed);
}

#[test]
fn a_sender_whose_message_waits_past_the_timeout_is_closed_not_its_receiver() {
    let (mut w, st, players) = setup(1);
    let flooder = players[0];
    while w.send(flooder, &candidate(100)) {}
    w.advance(TIMEOUT_MS - 1);
    assert!(w.sim.closed.is_empty());
    w.advance(1);
    assert_eq!(w.closes_of(flooder), [Some(close::SENDING_TOO_FAST.code)]);
    assert!(w.closes_of(st).is_empty());
    // The streamer hears the flooder left, once, and nothing of its waiting messages after.
    w.drain(st, usize::MAX);
    let got = w.delivered(st);
    let last = got.last().expect("messages");
    assert_eq!(
        last,
        r#"{"type":"playerDisconnected","playerId":"Player0"}"#
    );
    assert_eq!(w.flow.waiting_bytes(), 0);
    assert_eq!(w.sim.conns[&flooder].charged, 0);
}

#[test]
fn a_player_that_does_not_read_its_streamer_is_closed_too_slow_and_the_streamer_is_not_slowed() {
    let (mut w, st, players) = setup(1);
    let p = players[0];
    for _ in 0..=MESSAGES {
        w.send(st, &offer_to("Player0"));
    }
    assert_eq!(w.closes_of(p), [Some(close::TOO_SLOW.code)]);
    assert!(
        w.may_read(st),
        "the streamer is never charged for its players"
    );
    w.drain(st, usize::MAX);
    assert!(
        w.delivered(st)
            .last()
            .is_some_and(|t| t.contains("playerDisconnected"))
    );
}

#[test]
fn a_peer_that_does_not_read_its_own_replies_is_slowed_then_closed() {
    let (mut w, _st, players) = setup(1);
    let p = players[0];
    while w.send(p, r#"{"type":"listStreamers"}"#) {}
    assert!(!w.may_read(p));
    w.advance(TIMEOUT_MS);
    assert_eq!(w.closes_of(p), [Some(close::SENDING_TOO_FAST.code)]);
}

#[test]
fn resubscribes_are_paced_and_their_bookkeeping_always_arrives() {
    let (mut w, st, players) = setup(1);
    let p = players[0];
    let mut refused = 0;
    for _ in 0..100 {
        assert!(w.send(p, r#"{"type":"subscribe","streamerId":"S"}"#));
        w.drain(p, usize::MAX);
        w.drain(st, usize::MAX);
    }
    for t in w.delivered(p) {
        refused += usize::from(t.contains("Too many subscribe requests"));
    }
    assert_eq!(refused, 100 - subscription::SUBSCRIBE_BURST as usize + 1);
    w.now += 1000;
    w.send(p, r#"{"type":"subscribe","streamerId":"S"}"#);
    w.send(p, r#"{"type":"subscribe","streamerId":"S"}"#);
    w.send(p, r#"{"type":"subscribe","streamerId":"S"}"#);
    w.drain(p, usize::MAX);
    assert_eq!(
        w.delivered(p)
            .iter()
            .filter(|t| t.contains("Too many"))
            .count(),
        refused + 1,
        "two more per second"
    );
    w.drain(st, usize::MAX);
    let got = w.delivered(st);
    let connected = got.iter().filter(|t| t.contains("playerConnected")).count();
    let disconnected = got
        .iter()
        .filter(|t| t.contains("playerDisconnected"))
        .count();
    assert_eq!(connected, disconnected + 1);
}

#[derive(Debug, Clone)]
enum Step {
    /// Player i sends a candidate of this size (if its reader is reading).
    PlayerSends(usize, usize),
    /// The streamer offers to player i.
    StreamerSends(usize),
    /// The connection's writer delivers up to n items (0 = the streamer, i+1 = player i).
    Drain(usize, usize),
    Resubscribe(usize),
    Unsubscribe(usize),
    Leave(usize),
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..4usize, 1..400usize).prop_map(|(i, n)| Step::PlayerSends(i, n)),
        2 => (0..4usize).prop_map(Step::StreamerSends),
        3 => (0..5usize, 1..20usize).prop_map(|(c, n)| Step::Drain(c, n)),
        1 => (0..4usize).prop_map(Step::Resubscribe),
        1 => (0..4usize).prop_map(Step::Unsubscribe),
        1 => (0..4usize).prop_map(Step::Leave),
        2 => (1..80u64).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For any interleaving of floods and pauses: the streamer is never closed or slowed for
    /// what its players send; a player is closed "too slow" only with its own lane full of its
    /// streamer's traffic; a sender is closed "sending too fast" only when one of its messages
    /// waited the timeout; every budget holds; and the streamer sees exactly one
    /// playerDisconnected per playerConnected, with nothing of a player after it.
    #[test]
    fn floods_and_pauses_never_close_an_innocent_receiver(steps in proptest::collection::vec(step(), 1..120)) {
        let (mut w, st, players) = setup(4);
        let ids: Vec<String> = (0..4).map(|i| format!("Player{i}")).collect();
        for s in steps {
            match s {
                Step::PlayerSends(i, n) => { w.send(players[i], &candidate(n)); }
                Step::StreamerSends(i) => { w.send(st, &offer_to(&ids[i])); }
                Step::Drain(0, n) => w.drain(st, n),
                Step::Drain(c, n) => w.drain(players[c - 1], n),
                Step::Resubscribe(i) => { w.send(players[i], r#"{"type":"subscribe","streamerId":"S"}"#); }
                Step::Unsubscribe(i) => { w.send(players[i], r#"{"type":"unsubscribe"}"#); }
                Step::Leave(i) => w.peer_closes(players[i]),
                Step::Advance(ms) => w.advance(ms),
            }
            let streamer = &w.sim.conns[&st];
            prop_assert!(!streamer.ended, "the streamer was closed: {:?}", w.sim.closed);
            prop_assert_eq!(streamer.charged, 0, "the streamer was charged");
            prop_assert!(streamer.receiver.1 <= BUDGET);
            for &p in &players {
                let c = &w.sim.conns[&p];
                prop_assert!(c.charged <= 2 * BUDGET, "{p} charged {}", c.charged);
                prop_assert!(c.receiver.1 <= BUDGET && c.senders.1 <= BUDGET);
            }
            for &(conn, code) in &w.sim.closed {
                prop_assert!(
                    code.is_none_or(|c| [1000, close::TOO_SLOW.code, close::SENDING_TOO_FAST.code].contains(&c)),
                    "{conn} closed with {code:?}"
                );
            }
        }
        // Everything the streamer was sent, read to the end.
        w.drain(st, usize::MAX);
        let mut open: BTreeSet<String> = BTreeSet::new();
        let mut ended: BTreeSet<String> = BTreeSet::new();
        for text in w.delivered(st) {
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            let pid = v["playerId"].as_str().unwrap_or_default().to_owned();
            match v["type"].as_str() {
                Some("playerConnected") => {
                    prop_assert!(open.insert(pid.clone()), "second playerConnected {}", pid);
                    ended.remove(&pid);
                }
                Some("playerDisconnected") => {
                    prop_assert!(open.remove(&pid), "playerDisconnected {} without playerConnected", pid);
                    ended.insert(pid);
                }
                // config, identify, endpointIdConfirm name no player.
                _ if pid.is_empty() => {}
                _ => prop_assert!(open.contains(&pid), "{} after its subscription ended", text),
            }
        }
        // Every player that left or was closed got its playerDisconnected.
        for (i, &p) in players.iter().enumerate() {
            if w.sim.conns[&p].ended {
                prop_assert!(!open.contains(&ids[i]), "{} left but is still connected", ids[i]);
            }
        }
        prop_assert_eq!(w.flow.waiting_bytes(), 0, "nothing waits once the streamer has read all");
    }
}
