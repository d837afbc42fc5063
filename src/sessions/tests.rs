//! The sessions core without HTTP: each test feeds requests and asserts the exact events and
//! stream ends that come out.

use serde_json::value::RawValue;

use super::*;

fn limits() -> Limits {
    Limits {
        max_sessions: 4,
        max_peers_per_session: 3,
        max_queued_events: 4,
        idle_timeout_ms: 1000,
    }
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

fn outputs(s: &mut Sessions) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn data(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| &*e.data).collect()
}

fn delivered(outputs: &[Output]) -> Vec<(StreamId, String)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Deliver { stream, event } => Some((*stream, event.data.to_string())),
            Output::End { .. } => None,
        })
        .collect()
}

#[test]
fn first_register_creates_the_session_and_later_peers_announce_themselves() {
    let mut s = Sessions::new(limits());
    assert_eq!(s.handle_register("s1", "a", 0), Ok(Registered::NewSession));
    assert_eq!(s.session_count(), 1);
    let (stream_a, backlog) = s.handle_open_stream("s1", "a", None, 0).unwrap();
    assert!(backlog.is_empty());
    assert_eq!(s.handle_register("s1", "b", 0), Ok(Registered::Joined));
    assert_eq!(
        delivered(&outputs(&mut s)),
        vec![(stream_a, r#"{"senderId":"b","type":"new-peer"}"#.to_owned())]
    );
    assert_eq!(s.peers("s1"), vec!["a", "b"]);
}

#[test]
fn register_again_is_idempotent_and_keeps_the_queue() {
    let mut s = Sessions::new(limits());
    s.handle_register("s", "a", 0).unwrap();
    s.handle_register("s", "b", 0).unwrap();
    s.handle_message("s", "b", "a", "offer", Some(&raw(r#"{"sdp":"x"}"#)), 0)
        .unwrap();
    assert_eq!(s.handle_register("s", "a", 0), Ok(Registered::Again));
    assert_eq!(s.handle_register("s", "b", 0), Ok(Registered::Again));
    assert!(outputs(&mut s).is_empty(), "no new-peer for a repeat");
    let (_, backlog) = s.handle_open_stream("s", "a", None, 0).unwrap();
    assert_eq!(
        data(&backlog),
        vec![
            r#"{"senderId":"b","type":"new-peer"}"#,
            r#"{"senderId":"b","type":"offer","payload":{"sdp":"x"}}"#,
        ]
    );
}

#[test]
fn events_before_the_stream_opens_are_delivered_in_order_when_it_opens() {
    let mut s = Sessions::new(limits());
    s.handle_register("s", "a", 0).unwrap();
    s.handle_register("s", "b", 0).unwrap();
    for n in 0..3 {
        s.handle_message(
            "s",
            "a",
            "b",
            "ice-candidate",
            Some(&raw(&n.to_string())),
            0,
        )
        .unwrap();
    }
    assert!(outputs(&mut s).is_empty());
    let (stream, backlog) = s.handle_open_stream("s", "b", None, 0).unwrap();
    assert_eq!(
        data(&backlog),
        vec![
            r#"{"senderId":"a","type":"ice-candidate","payload":0}"#,
            r#"{"senderId":"a","type":"ice-candidate","payload":1}"#,
            r#"{"senderId":"a","type":"ice-candidate","payload":2}"#,
        ]
    );
    let ids: Vec<u64> = backlog.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    s.handle_message("s", "a", "b", "answer", None, 0).unwrap();
    assert_eq!(
        delivered(&outputs(&mut s)),
        vec![(stream, r#"{"senderId":"a","type":"answer"}"#.to_owned())]
    );
}

#[test]
fn last_event_id_replays_what_followed_it_once_in_order() {
    let mut s = Sessions::new(limits());
    s.handle_register("s", "a", 0).unwrap();
    s.handle_register("s", "b", 0).unwrap();
    let (first, _) = s.handle_open_stream("s", "b", None, 0).unwrap();
    for kind in ["one", "two", "three"] {
        s.handle_message("s", "a", "b", kind, None, 0).unwrap();
    }
    let sent = outputs(&mut s);
    let ids: Vec<u64> = sent
        .iter()
        .filter_map(|o| match o {
            Output::Deliver { event, .. } => Some(event.id),
            Output::End { .. } => None,
        })
        .collect();
    assert_eq!(ids.len(), 3);
    // The client saw "one" only; the stream broke.
    s.handle_stream_closed(first, 0);
    let (_, backlog) = s.handle_open_stream("s", "b", Some(ids[0]), 0).unwrap();
    assert_eq!(
        data(&backlog),
        vec![
            r#"{"senderId":"a","type":"two"}"#,
            r#"{"senderId":"a","type":"three"}"#,
        ]
    );
    // Without Last-Event-ID, nothing already delivered comes again.
    let (_, backlog) = s.handle_open_stream("s", "b", None, 0).unwrap();
    assert!(backlog.is_empty());
}

#[test]
fn a_second_stream_replaces_the_first() {
    let mut s = Sessions::new(limits());
    s.handle_register("s", "a", 0).unwrap();
    s.handle_register("s", "b", 0).unwrap();
    let (first, _) = s.handle_open_stream("s", "b", None, 0).unwrap();
    let (second, _) = s.handle_open_stream("s", "b", None, 0).unwrap();
    assert_ne!(first, second);
    assert_eq!(outputs(&mut s), vec![Output::End { stream: first }]);
    // The old stream's late close changes nothing.
    s.handle_stream_closed(first, 0);
    s.handle_message("s", "a", "b", "x", None, 0).unwrap();
    assert_eq!(
        delivered(&outputs(&mut s)),
        vec![(second, r#"{"senderId":"a","type":"x"}"#.to_owned())]
    );
}

#[test]
fn a_full_queue_refuses_the_message_naming_the_limit() {
    let mut s = Sessions::new(limits());
    s.handle_register("s", "a", 0).unwrap();
    s.handle_register("s", "b", 0).unwrap();
    // a's queue holds b's new-peer, then three messages: full.
    for _ in 0..3 {
        s.handle_message("s", "b", "a", "x", None, 0).unwrap();
    }
    let err = s.handle_message("s", "b", "a", "x", None, 0).unwrap_err();
    assert_eq!(
        err,
        SessionError::QueueFull {
            peer: "a".into(),
            limit: 4
        }
    );
    assert!(err.to_string().contains("max_queued_events = 4"), "{err}");
    // Opening the stream drains it; then messages flow (delivered ones make room).
    let (_, backlog) = s.handle_open_stream("s", "a", None, 0).unwrap();
    assert_eq!(backlog.len(), 4);
    for _ in 0..10 {
        s.handle_message("s", "b", "a", "x", None, 0).unwrap();
    }
}

#[test]
fn limits_on_sessions_and_peers() {
    let mut s = Sessions::new(limits());
    for n in 0..4 {
        s.handle_register(&format!("s{n}"), "a", 0).unwrap();
    }
    assert_eq!(
        s.handle_register("s4", "a", 0),
        Err(SessionError::TooManySessions { limit: 4 })
    );
    // An existing session still takes peers.
    s.handle_register("s0", "b", 0).unwrap();
    s.handle_register("s0", "c", 0).unwrap();
    let err = s.handle_register("s0", "d", 0).unwrap_err();
    assert!(
        err.to_string().contains("max_peers_per_session = 3"),
        "{err}"
    );
}

#[test]
fn errors_for_unknown_sessions_peers_senders_and_targets() {
    let mut s = Sessions::new(limits());
    s.handle_register("s", "a", 0).unwrap();
    assert!(matches!(
        s.handle_open_stream("nope", "a", None, 0),
        Err(SessionError::UnknownSession(_))
    ));
    assert!(matches!(
        s.handle_open_stream("s", "zed", None, 0),
        Err(SessionError::UnknownPeer { .. })
    ));
    assert!(matches!(
        s.handle_unregister("s", "zed", 0),
        Err(SessionError::UnknownPeer { .. })
    ));
    assert!(matches!(
        s.handle_message("nope", "a", "a", "x", None, 0),
        Err(SessionError::UnknownSession(_))
    ));
    assert!(matches!(
        s.handle_message("s", "zed", "a", "x", None, 0),
        Err(SessionError::SenderNotRegistered { .. })
    ));
    assert!(matches!(
        s.handle_message("s", "a", "zed", "x", None, 0),
        Err(SessionError::UnknownTarget { .. })
    ));
}

#[test]
fn the_id_rule() {
    for good in ["a", "A-b_c.9", &"x".repeat(64)] {
        assert_eq!(validate_id(good), Ok(()), "{good}");
    }
    for bad in ["", &"x".repeat(65), "a b", "a:b", "a/b", "é", "a%20"] {
        assert!(validate_id(bad).is_err(), "{bad}");
    }
    let mut s = Sessions::new(limits());
    assert_eq!(
        s.handle_register("bad id", "a", 0),
        Err(SessionError::InvalidId {
            which: "session",
            reason: "may contain only ASCII letters, digits, '-', '_' and '.'"
        })
    );
    assert!(matches!(
        s.handle_register("s", "", 0),
        Err(SessionError::InvalidId { which: "peer", .. })
    ));
}

#[test]
fn leaving_tells_the_others_and_the_last_one_out_removes_the_session() {
    let mut s = Sessions::new(limits());
    s.handle_register("s", "a", 0).unwrap();
    s.handle_register("s", "b", 0).unwrap();
    s.handle_register("s", "c", 0).unwrap();
    let (sa, _) = s.handle_open_stream("s", "a", None, 0).unwrap();
    let (sb, _) = s.handle_open_stream("s", "b", None, 0).unwrap();
    let (sc, _) = s.handle_open_stream("s", "c", None, 0).unwrap();
    s.handle_unregister("s", "c", 0).unwrap();
    let out = outputs(&mut s);
    assert!(out.contains(&Output::End { stream: sc }));
    assert_eq!(
        delivered(&out),
        vec![
            (sa, r#"{"senderId":"c","type":"peer-left"}"#.to_owned()),
            (sb, r#"{"senderId":"c","type":"peer-left"}"#.to_owned()),
        ]
    );
    s.handle_unregister("s", "a", 0).unwrap();
    s.handle_unregister("s", "b", 0).unwrap();
    assert_eq!(s.session_count(), 0);
}

#[test]
fn idle_peers_without_a_stream_expire_and_the_others_are_told() {
    let mut s = Sessions::new(limits());
    s.handle_register("s", "a", 0).unwrap();
    s.handle_register("s", "b", 0).unwrap();
    let (sa, _) = s.handle_open_stream("s", "a", None, 0).unwrap();
    outputs(&mut s);
    s.handle_tick(999);
    assert_eq!(s.peers("s"), vec!["a", "b"]);
    // A request counts as activity.
    s.handle_message("s", "b", "a", "x", None, 500).unwrap();
    outputs(&mut s);
    s.handle_tick(1400);
    assert_eq!(s.peers("s"), vec!["a", "b"]);
    s.handle_tick(1500);
    assert_eq!(s.peers("s"), vec!["a"], "b expired; a has a stream open");
    assert_eq!(
        delivered(&outputs(&mut s)),
        vec![(sa, r#"{"senderId":"b","type":"peer-left"}"#.to_owned())]
    );
    // Once a's stream closes, its idle clock starts at the close.
    s.handle_stream_closed(sa, 2000);
    s.handle_tick(2999);
    assert_eq!(s.session_count(), 1);
    s.handle_tick(3000);
    assert_eq!(s.session_count(), 0);
}

#[test]
fn sessions_are_isolated() {
    let mut s = Sessions::new(limits());
    s.handle_register("one", "a", 0).unwrap();
    s.handle_register("two", "a", 0).unwrap();
    s.handle_register("two", "b", 0).unwrap();
    let (one_a, backlog) = s.handle_open_stream("one", "a", None, 0).unwrap();
    assert!(backlog.is_empty(), "new-peer in `two` is not for `one`");
    assert!(matches!(
        s.handle_message("one", "a", "b", "x", None, 0),
        Err(SessionError::UnknownTarget { .. })
    ));
    s.handle_message("two", "b", "a", "x", None, 0).unwrap();
    assert!(
        delivered(&outputs(&mut s))
            .iter()
            .all(|(stream, _)| *stream != one_a)
    );
}

#[test]
fn replay_window_keeps_the_latest_delivered_events() {
    let mut s = Sessions::new(limits());
    s.handle_register("s", "a", 0).unwrap();
    s.handle_register("s", "b", 0).unwrap();
    let (stream, _) = s.handle_open_stream("s", "b", None, 0).unwrap();
    for n in 0..10 {
        s.handle_message("s", "a", "b", &format!("m{n}"), None, 0)
            .unwrap();
    }
    assert_eq!(delivered(&outputs(&mut s)).len(), 10);
    s.handle_stream_closed(stream, 0);
    let (_, backlog) = s.handle_open_stream("s", "b", Some(0), 0).unwrap();
    assert_eq!(
        data(&backlog),
        vec![
            r#"{"senderId":"a","type":"m6"}"#,
            r#"{"senderId":"a","type":"m7"}"#,
            r#"{"senderId":"a","type":"m8"}"#,
            r#"{"senderId":"a","type":"m9"}"#,
        ]
    );
}

#[test]
fn a_payload_over_several_lines_becomes_one_line_with_strings_intact() {
    let mut s = Sessions::new(limits());
    s.handle_register("s", "a", 0).unwrap();
    s.handle_register("s", "b", 0).unwrap();
    let payload = raw("{\n  \"sdp\": \"v=0\\r\\no=- 1 \\\" x\",\r\n  \"n\": [1, 2.50]\n}");
    s.handle_message("s", "a", "b", "offer", Some(&payload), 0)
        .unwrap();
    let (_, backlog) = s.handle_open_stream("s", "b", None, 0).unwrap();
    assert_eq!(
        &*backlog[0].data,
        r#"{"senderId":"a","type":"offer","payload":{"sdp":"v=0\r\no=- 1 \" x","n":[1,2.50]}}"#
    );
}

#[test]
fn a_join_waits_while_a_present_peers_queue_is_full_and_leaving_always_tells() {
    let mut s = Sessions::new(Limits {
        max_peers_per_session: 4,
        ..limits()
    });
    s.handle_register("s", "a", 0).unwrap();
    s.handle_register("s", "b", 0).unwrap();
    for _ in 0..3 {
        s.handle_message("s", "b", "a", "x", None, 0).unwrap();
    }
    // a's queue is full: c's new-peer could not be kept, so c must wait.
    assert_eq!(
        s.handle_register("s", "c", 0),
        Err(SessionError::QueueFull {
            peer: "a".into(),
            limit: 4
        })
    );
    // b's peer-left still reaches a, past the limit, rather than be dropped.
    s.handle_unregister("s", "b", 0).unwrap();
    let (_, backlog) = s.handle_open_stream("s", "a", None, 0).unwrap();
    assert_eq!(backlog.len(), 5);
    assert_eq!(&*backlog[4].data, r#"{"senderId":"b","type":"peer-left"}"#);
    s.handle_register("s", "c", 0).unwrap();
}

mod properties {
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    const SESSIONS: [&str; 2] = ["s0", "s1"];
    const PEERS: [&str; 3] = ["a", "b", "c"];

    #[derive(Debug, Clone)]
    enum Op {
        Register(usize, usize),
        Unregister(usize, usize),
        /// Open a stream, resuming from the last event seen if `true`.
        Open(usize, usize, bool),
        /// The client's stream for this peer drops.
        Close(usize, usize),
        Message(usize, usize, usize),
        Tick(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let (s, p) = (0..SESSIONS.len(), 0..PEERS.len());
        prop_oneof![
            (s.clone(), p.clone()).prop_map(|(s, p)| Op::Register(s, p)),
            (s.clone(), p.clone()).prop_map(|(s, p)| Op::Unregister(s, p)),
            (s.clone(), p.clone(), any::<bool>()).prop_map(|(s, p, r)| Op::Open(s, p, r)),
            (s.clone(), p.clone()).prop_map(|(s, p)| Op::Close(s, p)),
            (s, p.clone(), p).prop_map(|(s, f, t)| Op::Message(s, f, t)),
            (0u64..700).prop_map(Op::Tick),
        ]
    }

    /// What one peer's client has seen, across all its streams.
    #[derive(Default)]
    struct Client {
        stream: Option<StreamId>,
        seen: HashSet<u64>,
        last: u64,
    }

    impl Client {
        fn see(&mut self, event: &Event) -> Result<(), TestCaseError> {
            prop_assert!(self.seen.insert(event.id), "event {} seen twice", event.id);
            prop_assert!(
                event.id > self.last,
                "event {} after {}",
                event.id,
                self.last
            );
            self.last = event.id;
            Ok(())
        }
    }

    fn run(ops: &[Op]) -> Result<(), TestCaseError> {
        let limits = limits();
        let mut s = Sessions::new(limits.clone());
        let mut clients: HashMap<(usize, usize), Client> = HashMap::new();
        let mut retired: HashSet<StreamId> = HashSet::new();
        let mut now = 0;
        for op in ops {
            match *op {
                Op::Register(si, pi) => {
                    let _ = s.handle_register(SESSIONS[si], PEERS[pi], now);
                }
                Op::Unregister(si, pi) => {
                    let _ = s.handle_unregister(SESSIONS[si], PEERS[pi], now);
                }
                Op::Open(si, pi, resume) => {
                    let client = clients.entry((si, pi)).or_default();
                    let last = (resume && client.last > 0).then_some(client.last);
                    if let Ok((stream, backlog)) =
                        s.handle_open_stream(SESSIONS[si], PEERS[pi], last, now)
                    {
                        if last.is_none() {
                            // A fresh stream starts over: only uniqueness is required.
                            client.last = 0;
                        }
                        // The old stream (if any) must now end and get nothing more.
                        retired.extend(client.stream.replace(stream));
                        for event in &backlog {
                            client.see(event)?;
                        }
                    }
                }
                Op::Close(si, pi) => {
                    if let Some(stream) = clients.entry((si, pi)).or_default().stream.take() {
                        s.handle_stream_closed(stream, now);
                    }
                }
                Op::Message(si, from, to) => {
                    let _ = s.handle_message(SESSIONS[si], PEERS[from], PEERS[to], "m", None, now);
                }
                Op::Tick(ms) => {
                    now += ms;
                    s.handle_tick(now);
                }
            }
            while let Some(output) = s.poll_output() {
                let holder = clients
                    .values_mut()
                    .find(|c| c.stream == Some(output_stream(&output)));
                match (output, holder) {
                    (Output::Deliver { event, .. }, Some(client)) => client.see(&event)?,
                    (Output::Deliver { stream, .. }, None) => {
                        prop_assert!(false, "delivery to {stream}, which no client holds")
                    }
                    (Output::End { .. }, Some(client)) => client.stream = None,
                    (Output::End { stream }, None) => {
                        prop_assert!(retired.remove(&stream), "end of {stream}, never opened")
                    }
                }
            }
            for (session, peers) in &s.sessions {
                prop_assert!(!peers.is_empty(), "empty session {session} kept");
                prop_assert!(peers.len() <= limits.max_peers_per_session);
                for (peer, p) in peers {
                    prop_assert!(
                        p.log.len() <= limits.max_queued_events + limits.max_peers_per_session,
                        "{session}/{peer} holds {} events",
                        p.log.len()
                    );
                    prop_assert!(
                        p.log
                            .iter()
                            .zip(p.log.iter().skip(1))
                            .all(|(x, y)| x.id < y.id)
                    );
                }
            }
            prop_assert!(s.sessions.len() <= limits.max_sessions);
        }
        Ok(())
    }

    fn output_stream(output: &Output) -> StreamId {
        match output {
            Output::Deliver { stream, .. } | Output::End { stream } => *stream,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn no_event_twice_none_out_of_order_and_every_bound_holds(
            ops in prop::collection::vec(op(), 1..150),
        ) {
            run(&ops)?;
        }
    }
}
