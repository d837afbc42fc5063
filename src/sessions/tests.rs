//! The sessions core without HTTP: each test feeds requests and asserts the exact events and
//! stream ends that come out. [`read`] plays clients that take every event they are handed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::value::RawValue;

use super::*;

const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const AWAY: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

fn limits() -> Limits {
    Limits {
        max_sessions: 4,
        max_sessions_per_address: 0,
        max_peers_per_session: 3,
        max_queued_events: 4,
        max_peer_event_bytes: 1 << 20,
        max_event_bytes: 1 << 30,
        stream_window_bytes: 1 << 20,
        idle_timeout_ms: 1000,
    }
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

/// A JSON string payload of `len` bytes of text.
fn text(len: usize) -> Box<RawValue> {
    raw(&format!("\"{}\"", "x".repeat(len)))
}

fn reg(s: &mut Sessions, session: &str, peer: &str) -> Result<Registered, SessionError> {
    s.handle_register(session, peer, HOME, 0)
}

/// The outputs so far, without taking any delivered event (a client that does not read).
fn outputs(s: &mut Sessions) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// Every output until none is left, each delivered event taken at once by its stream's writer
/// (clients that read everything).
fn read(s: &mut Sessions) -> Vec<Output> {
    let mut all = Vec::new();
    while let Some(output) = s.poll_output() {
        if let Output::Deliver { stream, event } = &output {
            s.handle_stream_written(*stream, event.id, 0);
        }
        all.push(output);
    }
    all
}

/// Opens a stream and reads what it is handed: its id and those events.
fn open(s: &mut Sessions, session: &str, peer: &str, last: Option<u64>) -> (StreamId, Vec<Event>) {
    let stream = s.handle_open_stream(session, peer, last, 0).unwrap();
    let events = events_of(&read(s), stream);
    (stream, events)
}

fn events_of(outputs: &[Output], of: StreamId) -> Vec<Event> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Deliver { stream, event } if *stream == of => Some(event.clone()),
            _ => None,
        })
        .collect()
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

fn cost(sender: &str, kind: &str, payload: Option<&RawValue>) -> usize {
    event_data(sender, kind, payload).len() + EVENT_OVERHEAD
}

fn peer<'a>(s: &'a Sessions, session: &str, id: &str) -> &'a Peer {
    s.sessions[session]
        .peers
        .iter()
        .find(|(p, _)| p == id)
        .map(|(_, p)| p)
        .unwrap()
}

#[test]
fn first_register_creates_the_session_and_later_peers_announce_themselves() {
    let mut s = Sessions::new(limits());
    assert_eq!(reg(&mut s, "s1", "a"), Ok(Registered::NewSession));
    assert_eq!(s.session_count(), 1);
    let (stream_a, backlog) = open(&mut s, "s1", "a", None);
    assert!(backlog.is_empty());
    assert_eq!(reg(&mut s, "s1", "b"), Ok(Registered::Joined));
    assert_eq!(
        delivered(&read(&mut s)),
        vec![(stream_a, r#"{"senderId":"b","type":"new-peer"}"#.to_owned())]
    );
    assert_eq!(s.peers("s1"), vec!["a", "b"]);
}

#[test]
fn register_again_is_idempotent_and_keeps_the_queue() {
    let mut s = Sessions::new(limits());
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    s.handle_message("s", "b", "a", "offer", Some(&raw(r#"{"sdp":"x"}"#)), 0)
        .unwrap();
    assert_eq!(reg(&mut s, "s", "a"), Ok(Registered::Again));
    assert_eq!(reg(&mut s, "s", "b"), Ok(Registered::Again));
    assert!(outputs(&mut s).is_empty(), "no new-peer for a repeat");
    let (_, backlog) = open(&mut s, "s", "a", None);
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
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
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
    let (stream, backlog) = open(&mut s, "s", "b", None);
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
        delivered(&read(&mut s)),
        vec![(stream, r#"{"senderId":"a","type":"answer"}"#.to_owned())]
    );
}

#[test]
fn last_event_id_replays_what_followed_it_once_in_order() {
    let mut s = Sessions::new(limits());
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    let (first, _) = open(&mut s, "s", "b", None);
    for kind in ["one", "two", "three"] {
        s.handle_message("s", "a", "b", kind, None, 0).unwrap();
    }
    let ids: Vec<u64> = events_of(&read(&mut s), first)
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), 3);
    // The client saw "one" only; the stream broke.
    s.handle_stream_closed(first, 0);
    let (_, backlog) = open(&mut s, "s", "b", Some(ids[0]));
    assert_eq!(
        data(&backlog),
        vec![
            r#"{"senderId":"a","type":"two"}"#,
            r#"{"senderId":"a","type":"three"}"#,
        ]
    );
    // Without Last-Event-ID, nothing already delivered comes again.
    let (_, backlog) = open(&mut s, "s", "b", None);
    assert!(backlog.is_empty());
}

#[test]
fn a_second_stream_replaces_the_first() {
    let mut s = Sessions::new(limits());
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    let (first, _) = open(&mut s, "s", "b", None);
    let second = s.handle_open_stream("s", "b", None, 0).unwrap();
    assert_ne!(first, second);
    assert_eq!(outputs(&mut s), vec![Output::End { stream: first }]);
    // The old stream's late close changes nothing.
    s.handle_stream_closed(first, 0);
    s.handle_message("s", "a", "b", "x", None, 0).unwrap();
    assert_eq!(
        delivered(&read(&mut s)),
        vec![(second, r#"{"senderId":"a","type":"x"}"#.to_owned())]
    );
}

#[test]
fn what_a_replaced_stream_was_handed_is_not_handed_again() {
    let mut s = Sessions::new(limits());
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    let first = s.handle_open_stream("s", "b", None, 0).unwrap();
    s.handle_message("s", "a", "b", "x", None, 0).unwrap();
    // Handed to the first stream, not yet taken by its writer, which may still write it.
    assert_eq!(events_of(&outputs(&mut s), first).len(), 1);
    let (_, backlog) = open(&mut s, "s", "b", None);
    assert!(backlog.is_empty(), "{backlog:?}");
}

#[test]
fn a_full_queue_refuses_the_message_naming_the_limit() {
    let mut s = Sessions::new(limits());
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
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
    let (_, backlog) = open(&mut s, "s", "a", None);
    assert_eq!(backlog.len(), 4);
    for _ in 0..10 {
        s.handle_message("s", "b", "a", "x", None, 0).unwrap();
        read(&mut s);
    }
}

#[test]
fn limits_on_sessions_and_peers() {
    let mut s = Sessions::new(limits());
    for n in 0..4 {
        reg(&mut s, &format!("s{n}"), "a").unwrap();
    }
    assert_eq!(
        reg(&mut s, "s4", "a"),
        Err(SessionError::TooManySessions { limit: 4 })
    );
    // An existing session still takes peers.
    reg(&mut s, "s0", "b").unwrap();
    reg(&mut s, "s0", "c").unwrap();
    let err = reg(&mut s, "s0", "d").unwrap_err();
    assert!(
        err.to_string().contains("max_peers_per_session = 3"),
        "{err}"
    );
}

#[test]
fn one_address_creates_at_most_its_share_for_as_long_as_the_sessions_live() {
    let mut s = Sessions::new(Limits {
        max_sessions_per_address: 2,
        ..limits()
    });
    s.handle_register("s0", "a", HOME, 0).unwrap();
    s.handle_register("s1", "a", HOME, 0).unwrap();
    let refused = s.handle_register("s2", "a", HOME, 0).unwrap_err();
    assert_eq!(
        refused,
        SessionError::TooManySessionsFromAddress { limit: 2 }
    );
    assert!(
        refused.to_string().contains("max_sessions_per_address = 2"),
        "{refused}"
    );
    // Joining someone else's session is not creating one; another address has its own share.
    s.handle_register("s0", "b", HOME, 0).unwrap();
    s.handle_register("s2", "a", AWAY, 0).unwrap();
    s.handle_register("s1", "z", AWAY, 0).unwrap();
    // The creator leaving does not end the charge: s0 still lives (b is in it).
    s.handle_unregister("s0", "a", 0).unwrap();
    assert!(s.handle_register("s3", "a", HOME, 0).is_err());
    // Once a session is gone its creator may create another.
    s.handle_unregister("s0", "b", 0).unwrap();
    assert_eq!(
        s.handle_register("s3", "a", HOME, 0),
        Ok(Registered::NewSession)
    );
    assert_eq!(s.per_address[&HOME], 2);
    assert_eq!(s.per_address[&AWAY], 1);
    // Idle expiry removes sessions too, and frees the share.
    s.handle_tick(5000);
    assert_eq!(s.session_count(), 0);
    assert!(s.per_address.is_empty(), "{:?}", s.per_address);
}

#[test]
fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
    let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let same_64: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
    let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(address_key(one), address_key(same_64));
    assert_ne!(address_key(one), address_key(other_64));
    assert_eq!(
        address_key(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped())),
        HOME
    );
    assert_eq!(
        address_key(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    );
    assert_eq!(address_key(HOME), HOME);

    let mut s = Sessions::new(Limits {
        max_sessions_per_address: 1,
        ..limits()
    });
    s.handle_register("s0", "a", one, 0).unwrap();
    assert!(matches!(
        s.handle_register("s1", "a", same_64, 0),
        Err(SessionError::TooManySessionsFromAddress { .. })
    ));
    s.handle_register("s1", "a", other_64, 0).unwrap();
}

#[test]
fn errors_for_unknown_sessions_peers_senders_and_targets() {
    let mut s = Sessions::new(limits());
    reg(&mut s, "s", "a").unwrap();
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
    for good in ["a", "A-b_c.9", &"x".repeat(64), "...", ".a", "a.", "-", "_"] {
        assert_eq!(validate_id(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        &"x".repeat(65),
        "a b",
        "a:b",
        "a/b",
        "é",
        "a%20",
        ".",
        "..",
    ] {
        assert!(validate_id(bad).is_err(), "{bad}");
    }
    let mut s = Sessions::new(limits());
    assert_eq!(
        reg(&mut s, "bad id", "a"),
        Err(SessionError::InvalidId {
            which: "session",
            reason: "may contain only ASCII letters, digits, '-', '_' and '.'"
        })
    );
    assert!(matches!(
        reg(&mut s, "s", ""),
        Err(SessionError::InvalidId { which: "peer", .. })
    ));
}

#[test]
fn dot_and_dot_dot_are_refused_everywhere_an_id_goes() {
    let mut s = Sessions::new(limits());
    for dots in [".", ".."] {
        assert!(matches!(
            reg(&mut s, dots, "a"),
            Err(SessionError::InvalidId {
                which: "session",
                ..
            })
        ));
        assert!(matches!(
            reg(&mut s, "s", dots),
            Err(SessionError::InvalidId { which: "peer", .. })
        ));
    }
    reg(&mut s, "s", "a").unwrap();
    assert!(matches!(
        s.handle_message("s", "a", "..", "x", None, 0),
        Err(SessionError::InvalidId {
            which: "target",
            ..
        })
    ));
    assert!(matches!(
        s.handle_open_stream("s", ".", None, 0),
        Err(SessionError::InvalidId { which: "peer", .. })
    ));
    assert_eq!(s.session_count(), 1);
}

#[test]
fn leaving_tells_the_others_and_the_last_one_out_removes_the_session() {
    let mut s = Sessions::new(limits());
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    reg(&mut s, "s", "c").unwrap();
    let (sa, _) = open(&mut s, "s", "a", None);
    let (sb, _) = open(&mut s, "s", "b", None);
    let (sc, _) = open(&mut s, "s", "c", None);
    s.handle_unregister("s", "c", 0).unwrap();
    let out = read(&mut s);
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
    assert_eq!(s.event_bytes, 0);
    assert_eq!(s.reserved_bytes, 0);
    assert!(s.replay_index.is_empty());
}

#[test]
fn idle_peers_without_a_stream_expire_and_the_others_are_told() {
    let mut s = Sessions::new(limits());
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    let (sa, _) = open(&mut s, "s", "a", None);
    s.handle_tick(999);
    assert_eq!(s.peers("s"), vec!["a", "b"]);
    // A request counts as activity.
    s.handle_message("s", "b", "a", "x", None, 500).unwrap();
    read(&mut s);
    s.handle_tick(1400);
    assert_eq!(s.peers("s"), vec!["a", "b"]);
    s.handle_tick(1500);
    assert_eq!(s.peers("s"), vec!["a"], "b expired; a has a stream open");
    assert_eq!(
        delivered(&read(&mut s)),
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
    reg(&mut s, "one", "a").unwrap();
    reg(&mut s, "two", "a").unwrap();
    reg(&mut s, "two", "b").unwrap();
    let (one_a, backlog) = open(&mut s, "one", "a", None);
    assert!(backlog.is_empty(), "new-peer in `two` is not for `one`");
    assert!(matches!(
        s.handle_message("one", "a", "b", "x", None, 0),
        Err(SessionError::UnknownTarget { .. })
    ));
    s.handle_message("two", "b", "a", "x", None, 0).unwrap();
    assert!(
        delivered(&read(&mut s))
            .iter()
            .all(|(stream, _)| *stream != one_a)
    );
}

#[test]
fn replay_window_keeps_the_latest_delivered_events() {
    let mut s = Sessions::new(limits());
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    let (stream, _) = open(&mut s, "s", "b", None);
    for n in 0..10 {
        s.handle_message("s", "a", "b", &format!("m{n}"), None, 0)
            .unwrap();
        assert_eq!(delivered(&read(&mut s)).len(), 1);
    }
    s.handle_stream_closed(stream, 0);
    let (_, backlog) = open(&mut s, "s", "b", Some(0));
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
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    let payload = raw("{\n  \"sdp\": \"v=0\\r\\no=- 1 \\\" x\",\r\n  \"n\": [1, 2.50]\n}");
    s.handle_message("s", "a", "b", "offer", Some(&payload), 0)
        .unwrap();
    let (_, backlog) = open(&mut s, "s", "b", None);
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
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    for _ in 0..3 {
        s.handle_message("s", "b", "a", "x", None, 0).unwrap();
    }
    // a's queue is full: c's new-peer could not be kept, so c must wait.
    assert_eq!(
        reg(&mut s, "s", "c"),
        Err(SessionError::QueueFull {
            peer: "a".into(),
            limit: 4
        })
    );
    // b's peer-left still reaches a, past the limit, rather than be dropped.
    s.handle_unregister("s", "b", 0).unwrap();
    let (_, backlog) = open(&mut s, "s", "a", None);
    assert_eq!(backlog.len(), 5);
    assert_eq!(&*backlog[4].data, r#"{"senderId":"b","type":"peer-left"}"#);
    reg(&mut s, "s", "c").unwrap();
}

#[test]
fn the_control_event_cost_is_the_largest_a_control_event_can_cost() {
    let longest = "x".repeat(MAX_ID_LEN);
    assert_eq!(cost(&longest, "peer-left", None), CONTROL_EVENT_COST);
    assert!(cost(&longest, "new-peer", None) < CONTROL_EVENT_COST);
    let mut s = Sessions::new(limits());
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", &longest).unwrap();
    s.handle_unregister("s", &longest, 0).unwrap();
    let a = peer(&s, "s", "a");
    assert_eq!(
        a.log_bytes,
        cost(&longest, "new-peer", None) + CONTROL_EVENT_COST
    );
}

#[test]
fn undelivered_bytes_over_the_peer_budget_are_refused_and_nothing_queued_is_lost() {
    let payload = text(1000);
    let one = cost("b", "m", Some(&payload));
    let joined = cost("b", "new-peer", None);
    // Room for a's new-peer, two messages and the reserve for one peer-left, not three messages.
    let budget = joined + 2 * one + CONTROL_EVENT_COST;
    let mut s = Sessions::new(Limits {
        max_peer_event_bytes: budget,
        ..limits()
    });
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    s.handle_message("s", "b", "a", "m", Some(&payload), 0)
        .unwrap();
    s.handle_message("s", "b", "a", "m", Some(&payload), 0)
        .unwrap();
    let err = s
        .handle_message("s", "b", "a", "m", Some(&payload), 0)
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::PeerBytesFull {
            peer: "a".into(),
            limit: budget
        }
    );
    assert!(
        err.to_string()
            .contains(&format!("max_peer_event_bytes = {budget}")),
        "{err}"
    );
    let (_, backlog) = open(&mut s, "s", "a", None);
    assert_eq!(backlog.len(), 3, "new-peer and both messages, none dropped");
    // Delivered, the same events are only replay: they make room for new ones.
    for _ in 0..5 {
        s.handle_message("s", "b", "a", "m", Some(&payload), 0)
            .unwrap();
        assert_eq!(read(&mut s).len(), 1);
        assert!(peer(&s, "s", "a").log_bytes + CONTROL_EVENT_COST <= budget);
    }
}

#[test]
fn delivered_events_make_room_oldest_first() {
    let payload = text(500);
    let one = cost("b", "m", Some(&payload));
    let mut s = Sessions::new(Limits {
        max_peer_event_bytes: 3 * one + CONTROL_EVENT_COST,
        max_queued_events: 100,
        ..limits()
    });
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    let (stream, _) = open(&mut s, "s", "a", None);
    let mut ids = Vec::new();
    for _ in 0..6 {
        s.handle_message("s", "b", "a", "m", Some(&payload), 0)
            .unwrap();
        ids.extend(events_of(&read(&mut s), stream).iter().map(|e| e.id));
    }
    // The three newest stay replayable; the new-peer and the older messages went, oldest first.
    let a = peer(&s, "s", "a");
    let kept: Vec<u64> = a.log.iter().map(|e| e.id).collect();
    assert_eq!(kept, ids[3..]);
    assert_eq!(a.trimmed_upto, ids[2]);
}

#[test]
fn the_server_budget_trims_the_oldest_replay_anywhere_then_refuses() {
    let payload = text(1000);
    let one = cost("b", "m", Some(&payload));
    let reserve = 2 * session_reserve(2);
    let joins = 2 * cost("b", "new-peer", None);
    // Room for both sessions' new-peers, their reserves and three messages.
    let budget = joins + reserve + 3 * one;
    let mut s = Sessions::new(Limits {
        max_event_bytes: budget,
        ..limits()
    });
    for session in ["one", "two"] {
        reg(&mut s, session, "a").unwrap();
        reg(&mut s, session, "b").unwrap();
        open(&mut s, session, "a", None);
    }
    // Two delivered messages in `one` (replay), then one undelivered in `two` (b never reads).
    let (one_a, _) = open(&mut s, "one", "a", None);
    for _ in 0..2 {
        s.handle_message("one", "b", "a", "m", Some(&payload), 0)
            .unwrap();
        read(&mut s);
    }
    s.handle_message("two", "a", "b", "m", Some(&payload), 0)
        .unwrap();
    let oldest = peer(&s, "one", "a").log[0].id;
    assert!(s.event_bytes + s.reserved_bytes <= budget);
    // The next message fits only by dropping replay, the oldest anywhere first: both new-peers,
    // then `one`/a's first message.
    s.handle_message("two", "a", "b", "m", Some(&payload), 0)
        .unwrap();
    assert!(s.event_bytes + s.reserved_bytes <= budget);
    let a = peer(&s, "one", "a");
    assert!(a.log.iter().all(|e| e.id > oldest + 2), "{:?}", a.log);
    assert_eq!(a.log.len(), 1);
    assert_eq!(peer(&s, "two", "a").log.len(), 0);
    assert_eq!(peer(&s, "two", "b").undelivered_len(), 2);
    // Only undelivered events are left to keep: the next one is refused naming the limit.
    s.handle_stream_closed(one_a, 0);
    while s
        .handle_message("two", "a", "b", "m", Some(&payload), 0)
        .is_ok()
    {}
    let err = s
        .handle_message("one", "a", "b", "m", Some(&payload), 0)
        .unwrap_err();
    assert_eq!(err, SessionError::ServerBytesFull { limit: budget });
    assert!(err.to_string().contains("max_event_bytes"), "{err}");
    assert!(s.event_bytes + s.reserved_bytes <= budget);
    // A join needs room for its new-peers and reserve too.
    assert_eq!(
        reg(&mut s, "two", "c"),
        Err(SessionError::ServerBytesFull { limit: budget })
    );
    // Leaving frees the leaver's events; the others' peer-left fit the reserve.
    s.handle_unregister("two", "b", 0).unwrap();
    assert!(s.event_bytes + s.reserved_bytes <= budget);
    reg(&mut s, "two", "c").unwrap();
}

#[test]
fn a_join_is_refused_while_a_present_peer_has_no_byte_room_for_new_peer() {
    let payload = text(1000);
    let one = cost("b", "m", Some(&payload));
    let budget = cost("b", "new-peer", None) + one + 2 * CONTROL_EVENT_COST;
    let mut s = Sessions::new(Limits {
        max_peer_event_bytes: budget,
        ..limits()
    });
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    s.handle_message("s", "b", "a", "m", Some(&payload), 0)
        .unwrap();
    assert_eq!(
        reg(&mut s, "s", "c"),
        Err(SessionError::PeerBytesFull {
            peer: "a".into(),
            limit: budget
        })
    );
    open(&mut s, "s", "a", None);
    reg(&mut s, "s", "c").unwrap();
}

#[test]
fn a_stream_is_handed_a_window_at_a_time_as_its_writer_takes_events() {
    let payload = text(1000);
    let one = cost("b", "m", Some(&payload));
    let mut s = Sessions::new(Limits {
        stream_window_bytes: 2 * one,
        max_queued_events: 100,
        ..limits()
    });
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    let stream = s.handle_open_stream("s", "a", None, 0).unwrap();
    let first = events_of(&outputs(&mut s), stream);
    assert_eq!(first.len(), 1, "b's new-peer");
    for _ in 0..5 {
        s.handle_message("s", "b", "a", "m", Some(&payload), 0)
            .unwrap();
    }
    // Handing stops once the window is crossed: new-peer and two messages are in flight.
    let handed = events_of(&outputs(&mut s), stream);
    assert_eq!(handed.len(), 2, "{handed:?}");
    assert!(outputs(&mut s).is_empty());
    // The writer takes new-peer and the first message: one more fits.
    s.handle_stream_written(stream, handed[0].id, 0);
    let more = events_of(&outputs(&mut s), stream);
    assert_eq!(more.len(), 1);
    // It takes everything: the last two are handed.
    s.handle_stream_written(stream, more[0].id, 0);
    assert_eq!(events_of(&outputs(&mut s), stream).len(), 2);
    assert!(outputs(&mut s).is_empty());
}

#[test]
fn events_a_stream_did_not_take_before_it_closed_are_delivered_to_the_next() {
    let mut s = Sessions::new(limits());
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    let first = s.handle_open_stream("s", "b", None, 0).unwrap();
    for kind in ["one", "two", "three"] {
        s.handle_message("s", "a", "b", kind, None, 0).unwrap();
    }
    let handed = events_of(&outputs(&mut s), first);
    assert_eq!(handed.len(), 3);
    // The writer took "one"; the client went away before the rest were written.
    s.handle_stream_written(first, handed[0].id, 0);
    s.handle_stream_closed(first, 0);
    let (_, backlog) = open(&mut s, "s", "b", None);
    assert_eq!(
        data(&backlog),
        vec![
            r#"{"senderId":"a","type":"two"}"#,
            r#"{"senderId":"a","type":"three"}"#
        ]
    );
}

#[test]
fn a_last_event_id_from_the_future_does_not_stop_later_events() {
    let mut s = Sessions::new(limits());
    reg(&mut s, "s", "a").unwrap();
    reg(&mut s, "s", "b").unwrap();
    let (stream, backlog) = open(&mut s, "s", "b", Some(u64::MAX));
    assert!(backlog.is_empty());
    s.handle_message("s", "a", "b", "x", None, 0).unwrap();
    assert_eq!(
        delivered(&read(&mut s)),
        vec![(stream, r#"{"senderId":"a","type":"x"}"#.to_owned())]
    );
}

#[test]
fn the_smallest_peer_budget_validation_allows_holds_the_largest_message_and_the_reserve() {
    use crate::config::PEER_EVENT_BYTES_PER_PEER;
    for max_body in [1024, 65_536] {
        // The largest body: a one-letter target and type, the rest payload.
        let frame = r#"{"target":"a","type":"t","payload":""}"#;
        let payload = text(max_body - frame.len());
        let body = format!(r#"{{"target":"a","type":"t","payload":{}}}"#, payload.get());
        assert_eq!(body.len(), max_body);
        // Sent by the longest id.
        let largest = cost(&"x".repeat(MAX_ID_LEN), "t", Some(&payload));
        for peers in 2..=64 {
            assert!(
                largest + peer_reserve(peers) <= max_body + PEER_EVENT_BYTES_PER_PEER * peers,
                "{max_body} bytes, {peers} peers"
            );
        }
    }
}

#[test]
fn a_new_session_needs_room_for_its_entry_in_the_server_budget() {
    let mut s = Sessions::new(Limits {
        max_event_bytes: 2 * session_reserve(1),
        ..limits()
    });
    reg(&mut s, "s0", "a").unwrap();
    reg(&mut s, "s1", "a").unwrap();
    assert_eq!(
        reg(&mut s, "s2", "a"),
        Err(SessionError::ServerBytesFull {
            limit: 2 * session_reserve(1)
        })
    );
    assert_eq!(s.session_count(), 2);
    assert_eq!(s.reserved_bytes, 2 * session_reserve(1));
    s.handle_unregister("s0", "a", 0).unwrap();
    reg(&mut s, "s2", "a").unwrap();
}

/// Found by the `sessions` fuzz target: creating a session added its reserve without trimming
/// replay windows first, so delivered events kept for replay took the server past
/// `max_event_bytes`.
#[test]
fn a_new_session_trims_replay_windows_to_stay_within_max_event_bytes() {
    let limits = Limits {
        max_sessions: 3,
        max_sessions_per_address: 0,
        max_peers_per_session: 4,
        max_queued_events: 4,
        max_peer_event_bytes: 4003,
        max_event_bytes: 5288,
        stream_window_bytes: 1286,
        idle_timeout_ms: 0,
    };
    let mut s = Sessions::new(limits.clone());
    reg(&mut s, "s1", "b").unwrap();
    let payload = text(1494);
    s.handle_message("s1", "b", "b", "m", Some(&payload), 0)
        .unwrap();
    s.handle_message("s1", "b", "b", "m", Some(&payload), 0)
        .unwrap();
    // The first stream is handed the first event; the second counts it delivered (kept for
    // replay) and is handed the other.
    s.handle_open_stream("s1", "b", None, 0).unwrap();
    s.handle_open_stream("s1", "b", None, 0).unwrap();
    while s.poll_output().is_some() {}
    assert!(s.replay_bytes > 0);
    reg(&mut s, "s0", "a").unwrap();
    assert!(
        s.event_bytes + s.reserved_bytes <= limits.max_event_bytes,
        "{} event bytes and {} reserved over {}",
        s.event_bytes,
        s.reserved_bytes,
        limits.max_event_bytes
    );
    assert_eq!(s.session_count(), 2);
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::sessions::invariants::{Op, PEERS, SESSIONS, run};

    /// Payload text lengths: none, small, an SDP-like one, one near the per-peer budget.
    const SIZES: [usize; 4] = [0, 10, 300, 900];

    fn limits() -> Limits {
        Limits {
            max_sessions: 2,
            max_sessions_per_address: 1,
            max_peers_per_session: 3,
            max_queued_events: 4,
            max_peer_event_bytes: 2000,
            max_event_bytes: 12_000,
            stream_window_bytes: 600,
            idle_timeout_ms: 1000,
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        let (s, p) = (0..SESSIONS.len(), 0..PEERS.len());
        prop_oneof![
            2 => (s.clone(), p.clone(), 0..2usize)
                .prop_map(|(s, p, a)| Op::Register(s, p, a)),
            1 => (s.clone(), p.clone()).prop_map(|(s, p)| Op::Unregister(s, p)),
            2 => (s.clone(), p.clone(), any::<bool>()).prop_map(|(s, p, r)| Op::Open(s, p, r)),
            1 => (s.clone(), p.clone()).prop_map(|(s, p)| Op::Close(s, p)),
            3 => (s.clone(), p.clone(), 1..4usize).prop_map(|(s, p, n)| Op::Write(s, p, n)),
            4 => (s, p.clone(), p, 0..SIZES.len(), any::<bool>())
                .prop_map(|(s, f, t, n, l)| Op::Message(s, f, t, SIZES[n], l)),
            1 => (0u64..700).prop_map(Op::Tick),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn no_event_twice_none_out_of_order_none_lost_and_every_bound_holds(
            ops in prop::collection::vec(op(), 1..200),
        ) {
            run(&ops, &limits(), 900).map_err(TestCaseError::fail)?;
        }
    }
}

#[test]
fn a_peer_with_a_token_is_acted_as_only_by_requests_that_present_it() {
    let mut s = Sessions::new(limits());
    reg(&mut s, "s", "alice").unwrap();
    reg(&mut s, "s", "bob").unwrap();
    // No token yet: anyone may act as alice (peer_tokens off).
    assert_eq!(s.authorize("s", "alice", &[]), Ok(()));
    assert_eq!(
        s.peer_token("s", "alice", "t0k".to_owned()),
        Some("t0k".to_owned())
    );
    // The first token stays; a later fresh one is not taken.
    assert_eq!(
        s.peer_token("s", "alice", "other".to_owned()),
        Some("t0k".to_owned())
    );
    let wrong = Err(SessionError::WrongPeerToken {
        session: "s".into(),
        peer: "alice".into(),
    });
    assert_eq!(s.authorize("s", "alice", &[]), wrong);
    assert_eq!(
        s.authorize("s", "alice", &["t0".into(), "other".into()]),
        wrong
    );
    assert_eq!(
        s.authorize("s", "alice", &["x".into(), "t0k".into()]),
        Ok(())
    );
    // Other peers and unknown ones are not affected (the request itself says "unknown").
    assert_eq!(s.authorize("s", "bob", &[]), Ok(()));
    assert_eq!(s.authorize("s", "carol", &[]), Ok(()));
    assert_eq!(s.authorize("t", "alice", &[]), Ok(()));
    assert_eq!(s.peer_token("s", "carol", "x".to_owned()), None);
    // Once alice leaves, the name is free again, without the old token.
    s.handle_unregister("s", "alice", 0).unwrap();
    reg(&mut s, "s", "alice").unwrap();
    assert_eq!(s.authorize("s", "alice", &[]), Ok(()));
}
