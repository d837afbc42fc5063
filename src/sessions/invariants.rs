//! The sessions core's promises, checked after every step of a sequence of requests: no event
//! twice, none out of order, no undelivered message lost, every byte and count bound kept and
//! every running count equal to one recomputed from scratch. Shared by the property test
//! (`tests.rs`) and the `sessions` fuzz target (`crate::fuzzing`); built only for those.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

use serde_json::value::RawValue;

use super::{
    Event, Limits, Output, Sessions, StreamId, StreamState, peer_reserve, session_reserve,
};

/// Session and peer ids, by index (modulo their number); the last of each is invalid.
pub(crate) const SESSIONS: [&str; 3] = ["s0", "s1", ".."];
pub(crate) const PEERS: [&str; 4] = ["a", "b", "c", "no:colon"];
const ADDRESSES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
];

/// One request or client action. Sessions, peers and addresses are indices into the pools.
#[derive(Debug, Clone)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub(crate) enum Op {
    Register(usize, usize, usize),
    Unregister(usize, usize),
    /// Open a stream, resuming from the last event seen if `true`.
    Open(usize, usize, bool),
    /// The client's stream for this peer drops.
    Close(usize, usize),
    /// The peer's stream writer takes this many of the events it was handed.
    Write(usize, usize, usize),
    /// A message from one peer to another with a string payload of this many characters (none
    /// for 0; cut to the run's largest), sent pretty-printed over lines if `true`.
    Message(usize, usize, usize, usize, bool),
    /// Time passes by this many milliseconds, then the idle timer fires.
    Tick(u64),
}

/// What one peer's client has: its stream, what that stream was handed and not yet written,
/// what it has seen across all its streams, and the messages accepted for it and not yet
/// delivered.
#[derive(Default)]
struct Client {
    stream: Option<StreamId>,
    handed: VecDeque<Event>,
    seen: HashSet<u64>,
    last: u64,
    pending: BTreeSet<u64>,
}

impl Client {
    fn see(&mut self, event: &Event) -> Result<(), String> {
        ensure!(self.seen.insert(event.id), "event {} seen twice", event.id);
        ensure!(
            event.id > self.last,
            "event {} after {}",
            event.id,
            self.last
        );
        self.last = event.id;
        self.pending.remove(&event.id);
        Ok(())
    }
}

/// A JSON payload of `len` characters: a string, or an array of them spread over lines.
fn payload(len: usize, lines: bool) -> Option<Box<RawValue>> {
    let text = format!("\"{}\"", "x".repeat(len));
    let text = if lines {
        format!("[\n  {text},\r\n\t\"a b\" ]")
    } else {
        text
    };
    (len > 0)
        .then(|| RawValue::from_string(text).ok())
        .flatten()
}

fn output_stream(output: &Output) -> StreamId {
    match output {
        Output::Deliver { stream, .. } | Output::End { stream } => *stream,
    }
}

/// Runs `ops` on a fresh core under `limits`, payloads at most `max_payload` characters, checking
/// every promise after each step.
pub(crate) fn run(ops: &[Op], limits: &Limits, max_payload: usize) -> Result<(), String> {
    let mut s = Sessions::new(limits.clone());
    let mut clients: HashMap<(usize, usize), Client> = HashMap::new();
    let mut retired: HashSet<StreamId> = HashSet::new();
    let mut now: u64 = 0;
    let session = |i: usize| i % SESSIONS.len();
    let peer = |i: usize| i % PEERS.len();
    for op in ops {
        match *op {
            Op::Register(si, pi, ai) => {
                let address = ADDRESSES[ai % ADDRESSES.len()];
                let _ = s.handle_register(SESSIONS[session(si)], PEERS[peer(pi)], address, now);
            }
            Op::Unregister(si, pi) => {
                let _ = s.handle_unregister(SESSIONS[session(si)], PEERS[peer(pi)], now);
            }
            Op::Open(si, pi, resume) => {
                let (si, pi) = (session(si), peer(pi));
                let client = clients.entry((si, pi)).or_default();
                let last = (resume && client.last > 0).then_some(client.last);
                if let Ok(stream) = s.handle_open_stream(SESSIONS[si], PEERS[pi], last, now) {
                    // The old stream (if any) must now end and get nothing more. What it was
                    // handed, it may still write: the server counts it delivered. A resuming
                    // client closed it first and asks by id instead.
                    retired.extend(client.stream.replace(stream));
                    for event in std::mem::take(&mut client.handed) {
                        if resume {
                            client.pending.remove(&event.id);
                        } else {
                            client.see(&event)?;
                        }
                    }
                    if last.is_none() {
                        // A fresh stream starts over: only uniqueness is required.
                        client.last = 0;
                    }
                }
            }
            Op::Close(si, pi) => {
                let client = clients.entry((session(si), peer(pi))).or_default();
                if let Some(stream) = client.stream.take() {
                    // What was handed and not written is lost with the connection.
                    client.handed.clear();
                    s.handle_stream_closed(stream, now);
                }
            }
            Op::Write(si, pi, n) => {
                let client = clients.entry((session(si), peer(pi))).or_default();
                if let Some(stream) = client.stream {
                    let mut upto = None;
                    for _ in 0..n {
                        let Some(event) = client.handed.pop_front() else {
                            break;
                        };
                        client.see(&event)?;
                        upto = Some(event.id);
                    }
                    if let Some(id) = upto {
                        s.handle_stream_written(stream, id, now);
                    }
                }
            }
            Op::Message(si, from, to, len, lines) => {
                let (si, from, to) = (session(si), peer(from), peer(to));
                let payload = payload(len.min(max_payload), lines);
                let sent = s.handle_message(
                    SESSIONS[si],
                    PEERS[from],
                    PEERS[to],
                    "m",
                    payload.as_deref(),
                    now,
                );
                if sent.is_ok() {
                    let id = s.next_event_id - 1;
                    clients.entry((si, to)).or_default().pending.insert(id);
                }
            }
            Op::Tick(ms) => {
                now = now.saturating_add(ms);
                s.handle_tick(now);
            }
        }
        while let Some(output) = s.poll_output() {
            let stream = output_stream(&output);
            let holder = clients.values_mut().find(|c| c.stream == Some(stream));
            match (output, holder) {
                (Output::Deliver { event, .. }, Some(client)) => {
                    ensure!(
                        serde_json::from_str::<&RawValue>(&event.data).is_ok()
                            && !event.data.contains(['\n', '\r']),
                        "event {} is not one line of JSON: {:?}",
                        event.id,
                        event.data
                    );
                    client.handed.push_back(event);
                }
                (Output::Deliver { stream, .. }, None) => {
                    return Err(format!("delivery to {stream}, which no client holds"));
                }
                (Output::End { .. }, Some(client)) => {
                    // Only a removed peer's stream ends while its client holds it.
                    client.stream = None;
                    client.handed.clear();
                    client.pending.clear();
                }
                (Output::End { stream }, None) => {
                    ensure!(retired.remove(&stream), "end of {stream}, never opened")
                }
            }
        }
        // A removed peer's messages went with it.
        for (&(si, pi), client) in &mut clients {
            if !s.peers(SESSIONS[si]).iter().any(|p| p == PEERS[pi]) {
                client.pending.clear();
            }
        }
        check(&s, limits, &clients)?;
    }
    Ok(())
}

/// Every bound and every count the core keeps, recomputed from scratch.
fn check(
    s: &Sessions,
    limits: &Limits,
    clients: &HashMap<(usize, usize), Client>,
) -> Result<(), String> {
    let (mut bytes, mut replay, mut reserved) = (0, 0, 0);
    let mut index = BTreeSet::new();
    let mut per_address: HashMap<IpAddr, usize> = HashMap::new();
    for (session, sess) in &s.sessions {
        let peers = &sess.peers;
        ensure!(!peers.is_empty(), "empty session {session} kept");
        ensure!(
            peers.len() <= limits.max_peers_per_session,
            "{session} has {} peers",
            peers.len()
        );
        *per_address.entry(sess.creator).or_default() += 1;
        reserved += session_reserve(peers.len());
        for (peer, p) in peers {
            ensure!(
                p.log.len() <= limits.max_queued_events + limits.max_peers_per_session,
                "{session}/{peer} holds {} events",
                p.log.len()
            );
            ensure!(
                p.log
                    .iter()
                    .zip(p.log.iter().skip(1))
                    .all(|(x, y)| x.id < y.id),
                "{session}/{peer}: event ids out of order"
            );
            let log_bytes: usize = p.log.iter().map(Event::cost).sum();
            let replay_len = p.log.iter().take_while(|e| e.id <= p.acked_upto).count();
            let replay_bytes: usize = p.log.iter().take(replay_len).map(Event::cost).sum();
            ensure_eq!(p.log_bytes, log_bytes);
            ensure_eq!(p.replay_len, replay_len);
            ensure_eq!(p.replay_bytes, replay_bytes);
            ensure!(
                p.log_bytes + peer_reserve(peers.len()) <= limits.max_peer_event_bytes,
                "{session}/{peer}: {} bytes and a reserve of {} over {}",
                p.log_bytes,
                peer_reserve(peers.len()),
                limits.max_peer_event_bytes
            );
            ensure!(
                p.trimmed_upto <= p.acked_upto,
                "{session}/{peer}: undelivered event {} trimmed",
                p.trimmed_upto
            );
            if let StreamState::Open(open) = &p.stream {
                let in_flight: usize = open.in_flight.iter().map(|(_, c)| c).sum();
                ensure_eq!(open.in_flight_bytes, in_flight);
                let last = open.in_flight.back().map_or(0, |(_, c)| *c);
                ensure!(
                    in_flight - last < limits.stream_window_bytes,
                    "{session}/{peer}: {in_flight} bytes in flight"
                );
            }
            if let Some(front) = p.replay_front() {
                index.insert((front, session.clone(), peer.clone()));
            }
            bytes += p.log_bytes;
            replay += p.replay_bytes;
            // No undelivered message is ever dropped.
            let si = SESSIONS.iter().position(|x| x == session);
            let pi = PEERS.iter().position(|x| x == peer);
            if let Some(client) = si.zip(pi).and_then(|key| clients.get(&key)) {
                for id in &client.pending {
                    ensure!(
                        *id > p.acked_upto && p.log.iter().any(|e| e.id == *id),
                        "{session}/{peer}: undelivered message {id} lost"
                    );
                }
            }
        }
    }
    ensure_eq!(s.event_bytes, bytes);
    ensure_eq!(s.replay_bytes, replay);
    ensure_eq!(s.reserved_bytes, reserved);
    ensure_eq!(s.replay_index, index);
    ensure!(
        s.event_bytes + s.reserved_bytes <= limits.max_event_bytes,
        "{} bytes and a reserve of {} over {}",
        s.event_bytes,
        s.reserved_bytes,
        limits.max_event_bytes
    );
    ensure_eq!(s.per_address, per_address);
    ensure!(
        limits.max_sessions_per_address == 0
            || per_address
                .values()
                .all(|n| *n <= limits.max_sessions_per_address),
        "sessions per address over {}: {per_address:?}",
        limits.max_sessions_per_address
    );
    ensure!(
        s.sessions.len() <= limits.max_sessions,
        "{} sessions",
        s.sessions.len()
    );
    Ok(())
}
