//! The session API across nodes without IO: two [`Clustered`] nodes whose messages cross a
//! model network (through their JSON form, as on the link), clients that open, read and drop
//! streams on either node, and node loss. The property test checks that a session homed on one
//! node behaves, seen from clients on both nodes, exactly as the same requests on one node
//! alone: the same answers, the same events with the same ids on each stream, the same ends
//! (so Last-Event-ID replay through the other node is exact).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use serde_json::value::RawValue;

use super::cluster::{Answer, Clustered, Op, Out, SessionWire, serve};
use super::{Limits, Output, SessionError, Sessions, StreamId};
use crate::cluster::link::NodeKey;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fn limits() -> Limits {
    Limits {
        max_sessions: 4,
        max_sessions_per_address: 0,
        max_peers_per_session: 3,
        max_queued_events: 6,
        max_peer_event_bytes: 1 << 20,
        max_event_bytes: 1 << 30,
        stream_window_bytes: 600,
        idle_timeout_ms: 0,
    }
}

fn key(i: usize) -> NodeKey {
    NodeKey::new(["a", "b"][i], 10 + i as u64)
}

/// A client's open stream: the node it is open on and that node's id for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Open {
    node: usize,
    stream: StreamId,
}

/// What a client saw on one stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen {
    events: Vec<(u64, String)>,
    /// Events handed and not yet taken by the client.
    untaken: usize,
    ended: bool,
}

/// Two nodes; the session's home is node 0.
struct World {
    nodes: [Clustered; 2],
    /// Messages in flight: (from, to, JSON).
    net: VecDeque<(usize, usize, String)>,
    answers: HashMap<(usize, u64), Result<Answer, SessionError>>,
    seen: HashMap<(usize, StreamId), Seen>,
    now: u64,
}

impl World {
    fn new() -> Self {
        let mut nodes = [
            Clustered::new(Sessions::new(limits())),
            Clustered::new(Sessions::new(limits())),
        ];
        nodes[0].handle_node_up(key(1));
        nodes[1].handle_node_up(key(0));
        Self {
            nodes,
            net: VecDeque::new(),
            answers: HashMap::new(),
            seen: HashMap::new(),
            now: 0,
        }
    }

    /// Carries every output and every message until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for n in 0..2 {
                while let Some(out) = self.nodes[n].poll_output() {
                    moved = true;
                    match out {
                        Out::Send(to, wire) => {
                            let to = usize::from(to != key(0));
                            let json = serde_json::to_string(&wire).unwrap();
                            self.net.push_back((n, to, json));
                        }
                        Out::Answered { req, result } => {
                            assert!(self.answers.insert((n, req), result).is_none());
                        }
                        Out::Deliver { stream, event } => {
                            let seen = self.seen.entry((n, stream)).or_default();
                            assert!(!seen.ended, "an event after the end");
                            seen.events.push((event.id, event.data.to_string()));
                            seen.untaken += 1;
                        }
                        Out::End { stream } => {
                            self.seen.entry((n, stream)).or_default().ended = true;
                        }
                    }
                }
            }
            while let Some((from, to, json)) = self.net.pop_front() {
                moved = true;
                let wire: SessionWire = serde_json::from_str(&json).unwrap();
                self.nodes[to].handle_wire(&key(from), wire, self.now);
            }
            if !moved {
                return;
            }
        }
    }

    /// A request through node `via`: run on the home (node 0) or forwarded to it.
    fn request(&mut self, via: usize, op: Op) -> Result<Answer, SessionError> {
        self.now += 1;
        if via == 0 {
            let result = serve(&mut self.nodes[0].sessions, op, self.now);
            self.settle();
            return result;
        }
        let req = self.nodes[1].forward(&key(0), op)?;
        self.settle();
        self.answers.remove(&(1, req)).expect("an answer")
    }

    /// The client takes what its stream was handed.
    fn read(&mut self, open: Open) {
        let seen = self.seen.entry((open.node, open.stream)).or_default();
        if seen.untaken == 0 || seen.ended {
            return;
        }
        seen.untaken = 0;
        let upto = seen.events.last().map_or(0, |e| e.0);
        self.nodes[open.node].handle_stream_written(open.stream, upto, self.now);
        self.settle();
    }

    fn close(&mut self, open: Open) {
        self.nodes[open.node].handle_stream_closed(open.stream, self.now);
        self.settle();
    }
}

/// The same requests on one node alone.
struct Alone {
    core: Sessions,
    seen: HashMap<StreamId, Seen>,
    now: u64,
}

impl Alone {
    fn settle(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Deliver { stream, event } => {
                    let seen = self.seen.entry(stream).or_default();
                    seen.events.push((event.id, event.data.to_string()));
                    seen.untaken += 1;
                }
                Output::End { stream } => self.seen.entry(stream).or_default().ended = true,
            }
        }
    }

    fn request(&mut self, op: Op) -> Result<Answer, SessionError> {
        self.now += 1;
        let result = serve(&mut self.core, op, self.now);
        self.settle();
        result
    }

    fn read(&mut self, stream: StreamId) {
        let seen = self.seen.entry(stream).or_default();
        if seen.untaken == 0 || seen.ended {
            return;
        }
        seen.untaken = 0;
        let upto = seen.events.last().map_or(0, |e| e.0);
        self.core.handle_stream_written(stream, upto, self.now);
        self.settle();
    }
}

const PEERS: [&str; 3] = ["web", "phone", "tablet"];

fn register(peer: usize) -> Op {
    Op::Register {
        session: "room".into(),
        peer: PEERS[peer].into(),
        client: CLIENT,
        presented: Vec::new(),
        fresh: None,
    }
}

fn message(from: usize, to: usize, n: u32) -> Op {
    Op::Message {
        session: "room".into(),
        from: PEERS[from].into(),
        presented: Vec::new(),
        target: PEERS[to].into(),
        kind: "m".into(),
        payload: Some(RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap()),
    }
}

fn open_op(peer: usize, last: Option<u64>) -> Op {
    Op::OpenStream {
        session: "room".into(),
        peer: PEERS[peer].into(),
        presented: Vec::new(),
        last_event_id: last,
    }
}

fn unregister(peer: usize) -> Op {
    Op::Unregister {
        session: "room".into(),
        peer: PEERS[peer].into(),
        presented: Vec::new(),
    }
}

fn opened(result: &Result<Answer, SessionError>) -> StreamId {
    match result {
        Ok(Answer::Opened { stream }) => StreamId(*stream),
        other => panic!("not opened: {other:?}"),
    }
}

#[test]
fn a_peer_on_another_node_pairs_with_one_on_the_home_and_both_exchange_messages() {
    let mut w = World::new();
    assert!(w.request(0, register(0)).is_ok());
    let web = opened(&w.request(0, open_op(0, None)));
    assert!(w.request(1, register(1)).is_ok());
    assert_eq!(
        w.seen[&(0, web)].events.len(),
        1,
        "new-peer for the web page"
    );
    assert!(w.request(0, message(0, 1, 1)).is_ok());
    let phone = opened(&w.request(1, open_op(1, None)));
    let seen = &w.seen[&(1, phone)];
    assert_eq!(seen.events.len(), 1);
    assert_eq!(
        seen.events[0].1,
        r#"{"senderId":"web","type":"m","payload":{"n":1}}"#
    );
    assert!(w.request(1, message(1, 0, 2)).is_ok());
    assert_eq!(
        w.seen[&(0, web)].events.last().unwrap().1,
        r#"{"senderId":"phone","type":"m","payload":{"n":2}}"#
    );
    // The home's refusals come back as they are.
    assert_eq!(
        w.request(1, message(1, 2, 3)),
        Err(SessionError::UnknownTarget {
            session: "room".into(),
            peer: "tablet".into()
        })
    );
}

#[test]
fn replay_through_the_other_node_is_exact() {
    let mut w = World::new();
    w.request(0, register(0)).unwrap();
    w.request(1, register(1)).unwrap();
    let phone = opened(&w.request(1, open_op(1, None)));
    for n in 1..=3 {
        w.request(0, message(0, 1, n)).unwrap();
    }
    w.read(Open {
        node: 1,
        stream: phone,
    });
    let first = w.seen[&(1, phone)].events.clone();
    assert_eq!(first.len(), 3);
    w.close(Open {
        node: 1,
        stream: phone,
    });
    w.request(0, message(0, 1, 4)).unwrap();
    // Back on the home, after the first event: the second and third again, then the fourth.
    let again = opened(&w.request(0, open_op(1, Some(first[0].0))));
    let replayed: Vec<u64> = w.seen[&(0, again)].events.iter().map(|e| e.0).collect();
    assert_eq!(replayed, vec![first[1].0, first[2].0, first[2].0 + 1]);
    // And back on the other node: the home's stream ends, nothing is replayed twice.
    let last = *replayed.last().unwrap();
    let back = opened(&w.request(1, open_op(1, Some(last))));
    assert!(w.seen[&(0, again)].ended);
    assert!(!w.seen.contains_key(&(1, back)));
    w.request(1, message(0, 1, 5)).unwrap();
    assert_eq!(
        w.seen[&(1, back)].events,
        vec![(
            last + 1,
            r#"{"senderId":"web","type":"m","payload":{"n":5}}"#.to_owned()
        )]
    );
}

#[test]
fn the_home_going_down_fails_requests_in_flight_and_ends_its_proxies() {
    let mut w = World::new();
    w.request(0, register(0)).unwrap();
    w.request(1, register(1)).unwrap();
    let phone = opened(&w.request(1, open_op(1, None)));
    // A request on its way when the home goes.
    let req = w.nodes[1].forward(&key(0), message(1, 0, 1)).unwrap();
    w.net.clear();
    w.nodes[1].handle_node_down(&key(0), 5);
    w.settle();
    assert_eq!(
        w.answers.remove(&(1, req)),
        Some(Err(SessionError::UnknownSession("room".into())))
    );
    assert!(w.seen[&(1, phone)].ended);
    assert!(!w.nodes[1].relay().depends_on(&key(0)));
    // Further requests for it are refused at once; its late messages are dropped.
    assert_eq!(
        w.nodes[1].forward(&key(0), message(1, 0, 2)),
        Err(SessionError::UnknownSession("room".into()))
    );
    w.nodes[1].handle_wire(&key(0), SessionWire::End { stream: 1 }, 6);
    assert_eq!(w.nodes[1].poll_output(), None);
}

#[test]
fn a_reading_node_going_down_closes_its_streams_at_the_home() {
    let mut w = World::new();
    w.request(0, register(0)).unwrap();
    w.request(1, register(1)).unwrap();
    let phone = opened(&w.request(1, open_op(1, None)));
    w.nodes[0].handle_node_down(&key(1), 5);
    w.settle();
    assert!(!w.nodes[0].relay().depends_on(&key(1)));
    // The stream closed at the home: a message for the phone is kept undelivered, and the
    // phone's stream on the other node gets nothing more.
    w.request(0, message(0, 1, 1)).unwrap();
    assert!(!w.seen.contains_key(&(1, phone)));
    // It reconnects through the home and gets it.
    let again = opened(&w.request(0, open_op(1, None)));
    assert_eq!(w.seen[&(0, again)].events.len(), 1);
}

#[test]
fn notes_for_a_stream_from_a_node_that_does_not_read_it_are_ignored() {
    let mut w = World::new();
    w.request(0, register(0)).unwrap();
    let web = opened(&w.request(0, open_op(0, None)));
    w.request(0, register(1)).unwrap();
    // Node 1 does not read the web page's stream: its close is dropped.
    w.nodes[0].handle_wire(&key(1), SessionWire::Closed { stream: web.0 }, 3);
    w.request(0, message(1, 0, 1)).unwrap();
    assert_eq!(w.seen[&(0, web)].events.len(), 2);
    assert!(!w.seen[&(0, web)].ended);
}

#[test]
fn every_wire_message_survives_its_json_form() {
    let wires = [
        SessionWire::Request {
            req: 1,
            op: message(0, 1, 7),
        },
        SessionWire::Reply {
            req: 2,
            result: Err(SessionError::InvalidId {
                which: "target",
                reason: "is longer than 64 characters",
            }
            .into()),
        },
        SessionWire::Event {
            stream: 3,
            id: 4,
            data: "{\"x\":\"\\n\"}".into(),
        },
    ];
    for wire in wires {
        let json = serde_json::to_string(&wire).unwrap();
        let back: SessionWire = serde_json::from_str(&json).unwrap();
        assert_eq!(back, wire, "{json}");
    }
    // An error's reason comes back as the core's own text.
    let e: SessionError = super::cluster::WireError::from(SessionError::InvalidId {
        which: "peer",
        reason: "is empty",
    })
    .into();
    assert_eq!(
        e,
        SessionError::InvalidId {
            which: "peer",
            reason: "is empty"
        }
    );
}

/// One client action: through which node, and on which peer.
#[derive(Debug, Clone)]
enum Action {
    Register {
        via: usize,
        peer: usize,
    },
    Unregister {
        via: usize,
        peer: usize,
    },
    Message {
        via: usize,
        from: usize,
        to: usize,
    },
    /// Opens the peer's stream; `back` picks a Last-Event-ID among the events it saw.
    Open {
        via: usize,
        peer: usize,
        back: Option<usize>,
    },
    Read {
        peer: usize,
    },
    Close {
        peer: usize,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let via = 0..2usize;
    let peer = 0..3usize;
    prop_oneof![
        (via.clone(), peer.clone()).prop_map(|(via, peer)| Action::Register { via, peer }),
        (via.clone(), peer.clone()).prop_map(|(via, peer)| Action::Unregister { via, peer }),
        (via.clone(), peer.clone(), peer.clone()).prop_map(|(via, from, to)| Action::Message {
            via,
            from,
            to
        }),
        (via, peer.clone(), proptest::option::of(0..8usize))
            .prop_map(|(via, peer, back)| Action::Open { via, peer, back }),
        peer.clone().prop_map(|peer| Action::Read { peer }),
        peer.prop_map(|peer| Action::Close { peer }),
    ]
}

/// An answer without the stream's number (a proxy's differs from the home's).
fn shape(result: Result<Answer, SessionError>) -> Result<Answer, SessionError> {
    result.map(|answer| match answer {
        Answer::Opened { .. } => Answer::Opened { stream: 0 },
        other => other,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any requests through either node, on a session homed on one: the answers, each stream's
    /// events (ids included) and ends are those of one node alone; and when either node goes
    /// down, nothing on the other depends on it any more and every proxy of its streams ended.
    #[test]
    fn two_nodes_serve_a_session_as_one_node_alone(
        actions in proptest::collection::vec(action(), 1..60),
        lost in 0..2usize,
    ) {
        let mut w = World::new();
        let mut alone = Alone { core: Sessions::new(limits()), seen: HashMap::new(), now: 0 };
        let mut streams: [Option<(Open, StreamId)>; 3] = [None; 3];
        let mut seen_ids: [Vec<u64>; 3] = Default::default();
        let mut n = 0;
        for action in actions {
            match action {
                Action::Register { via, peer } => {
                    let got = shape(w.request(via, register(peer)));
                    prop_assert_eq!(got, shape(alone.request(register(peer))));
                }
                Action::Unregister { via, peer } => {
                    let got = shape(w.request(via, unregister(peer)));
                    prop_assert_eq!(got, shape(alone.request(unregister(peer))));
                }
                Action::Message { via, from, to } => {
                    n += 1;
                    let got = shape(w.request(via, message(from, to, n)));
                    prop_assert_eq!(got, shape(alone.request(message(from, to, n))));
                }
                Action::Open { via, peer, back } => {
                    let last = back.and_then(|i| seen_ids[peer].get(i).copied());
                    let got = w.request(via, open_op(peer, last));
                    let want = alone.request(open_op(peer, last));
                    prop_assert_eq!(shape(got.clone()), shape(want.clone()));
                    if let (Ok(Answer::Opened { stream }), Ok(Answer::Opened { stream: s })) = (got, want) {
                        streams[peer] = Some((Open { node: via, stream: StreamId(stream) }, StreamId(s)));
                    }
                }
                Action::Read { peer } => {
                    if let Some((open, s)) = streams[peer] {
                        w.read(open);
                        alone.read(s);
                    }
                }
                Action::Close { peer } => {
                    if let Some((open, s)) = streams[peer].take() {
                        w.close(open);
                        alone.core.handle_stream_closed(s, alone.now);
                        alone.settle();
                    }
                }
            }
            for (peer, stream) in streams.iter().enumerate() {
                if let Some((open, s)) = stream {
                    let got = w.seen.get(&(open.node, open.stream)).cloned().unwrap_or_default();
                    let want = alone.seen.get(s).cloned().unwrap_or_default();
                    prop_assert_eq!(&got, &want, "peer {}", PEERS[peer]);
                    seen_ids[peer] = got.events.iter().map(|e| e.0).collect();
                }
            }
        }
        // Node loss, as each side's link reports it.
        let other = 1 - lost;
        w.net.clear();
        w.nodes[other].handle_node_down(&key(lost), w.now + 1);
        w.settle();
        w.net.clear();
        prop_assert!(!w.nodes[other].relay().depends_on(&key(lost)));
        if lost == 0 {
            for (open, _) in streams.iter().flatten() {
                if open.node == 1 {
                    prop_assert!(w.seen.get(&(1, open.stream)).is_some_and(|s| s.ended));
                }
            }
            prop_assert_eq!(w.nodes[1].relay().counts(), (0, 0, 0));
        } else {
            prop_assert_eq!(w.nodes[0].relay().counts(), (0, 0, 0));
        }
    }
}
