//! The sans-IO sessions core behind the HTTP + Server-Sent Events front door: sessions → peers →
//! each peer's event log (undelivered queue and Last-Event-ID replay window), bounded in events
//! and in bytes, per peer and server-wide. Requests go in through `handle_*`, stream deliveries
//! come out of [`Sessions::poll_output`]. It never touches HTTP, a channel or the clock (`now_ms`
//! is an argument); `tests.rs` drives it directly.
//!
//! Byte policy: an undelivered event is never dropped; a message or join that would not fit is
//! refused (429, naming the limit). Delivered events kept for replay are trimmed first, oldest
//! first: the target's own, then the oldest server-wide. Room for the `peer-left` events present
//! peers may yet cause is kept in reserve, so a leave always fits and no budget is ever exceeded.

pub(crate) mod cluster;
#[cfg(test)]
mod cluster_redis_tests;
#[cfg(test)]
mod cluster_tests;
#[cfg(any(test, fuzzing))]
pub(crate) mod invariants;
pub mod task;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use tracing::{debug, info, warn};

/// Longest session or peer id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Bytes counted for each event on top of its JSON text: its slot in a peer's log (24) and in
/// a stream's in-flight list (16), the shared string's header (16), the allocator's rounding (up
/// to 23) and the log's spare capacity.
pub(crate) const EVENT_OVERHEAD: usize = 128;

/// The most a `new-peer` or `peer-left` event costs: `{"senderId":"<64 characters>",
/// "type":"peer-left"}` is 98 bytes, plus [`EVENT_OVERHEAD`].
pub(crate) const CONTROL_EVENT_COST: usize = 98 + EVENT_OVERHEAD;

/// Bytes counted server-wide for each registered peer: its slot in its session (160, twice that
/// with the list's spare room), its id, its entries in the stream and replay tables, and its
/// share of its session's entry. Measured at about 0.6 KiB; rounded up.
pub(crate) const PEER_ENTRY_COST: usize = 1024;

/// Bytes handed to one stream and not yet taken by its writer: beyond this the core waits for
/// the writer (a stream whose client does not read holds no more than this, plus one event).
pub(crate) const STREAM_WINDOW_BYTES: usize = 64 * 1024;

/// Checks the id rule: 1 to [`MAX_ID_LEN`] characters, each an ASCII letter, digit, `-`, `_`
/// or `.` (URL-safe without escaping, and never `:`, which TURN usernames use as separator),
/// and not `.` or `..`, which browsers and proxies resolve as path segments.
pub fn validate_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("is empty");
    }
    if id.len() > MAX_ID_LEN {
        return Err("is longer than 64 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may contain only ASCII letters, digits, '-', '_' and '.'");
    }
    if id == "." || id == ".." {
        return Err("may not be \".\" or \"..\" (URLs resolve them as path segments)");
    }
    Ok(())
}

/// The address a client's sessions are counted under: an IPv4 address as it is, an IPv6
/// address by its /64 (one host usually holds a whole /64, so single IPv6 addresses would let
/// one client multiply its share); IPv4-mapped IPv6 addresses count as their IPv4 address.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The limits the core enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_sessions: usize,
    /// Sessions created from one address ([`address_key`]) at once; 0 is no limit.
    pub max_sessions_per_address: usize,
    pub max_peers_per_session: usize,
    /// Events kept per peer: undelivered ones (the queue) plus delivered ones (replay window).
    pub max_queued_events: usize,
    /// Bytes ([`Event::cost`]) kept per peer, with room for the `peer-left` events it may get.
    pub max_peer_event_bytes: usize,
    /// Bytes kept by every peer together, with the same reserve.
    pub max_event_bytes: usize,
    /// See [`STREAM_WINDOW_BYTES`].
    pub stream_window_bytes: usize,
    /// A peer with no open stream and no request for this long is removed; 0 never.
    pub idle_timeout_ms: u64,
}

/// One open SSE stream. Never reused within a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream#{}", self.0)
    }
}

/// One event as it goes out: its id and its JSON line, serialized once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: u64,
    pub data: Arc<str>,
}

impl Event {
    /// The bytes this event is counted as: its JSON text plus [`EVENT_OVERHEAD`].
    pub(crate) fn cost(&self) -> usize {
        self.data.len() + EVENT_OVERHEAD
    }
}

/// What the core asks the IO layer to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write an event on an open stream; the IO layer reports it taken with
    /// [`Sessions::handle_stream_written`].
    Deliver { stream: StreamId, event: Event },
    /// End a stream (replaced by a newer one, or its peer is gone).
    End { stream: StreamId },
}

/// Why a request was refused. Each maps to one HTTP status in the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("{which} id {reason}")]
    InvalidId {
        which: &'static str,
        reason: &'static str,
    },
    #[error("too many sessions (max_sessions = {limit})")]
    TooManySessions { limit: usize },
    #[error("too many sessions created from this address (max_sessions_per_address = {limit})")]
    TooManySessionsFromAddress { limit: usize },
    #[error("session {session} is full (max_peers_per_session = {limit})")]
    SessionFull { session: String, limit: usize },
    #[error(
        "the event queue of peer {peer} is full (max_queued_events = {limit}); it must open its \
         event stream"
    )]
    QueueFull { peer: String, limit: usize },
    #[error(
        "the events waiting for peer {peer} would exceed max_peer_event_bytes = {limit}; it must \
         read its event stream"
    )]
    PeerBytesFull { peer: String, limit: usize },
    #[error("the server holds as many event bytes as it may (max_event_bytes = {limit})")]
    ServerBytesFull { limit: usize },
    #[error("unknown session {0}")]
    UnknownSession(String),
    #[error("peer {peer} is not registered in session {session}")]
    UnknownPeer { session: String, peer: String },
    #[error("sender {peer} is not registered in session {session}")]
    SenderNotRegistered { session: String, peer: String },
    #[error("target {peer} is not in session {session}")]
    UnknownTarget { session: String, peer: String },
    #[error("Last-Event-ID must be a decimal event id")]
    BadLastEventId,
    #[error(
        "peer {peer} of session {session} has a token (peer_tokens); this request does not present it"
    )]
    WrongPeerToken { session: String, peer: String },
}

/// What registering did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Registered {
    /// A new session was created with this peer in it.
    NewSession,
    /// The peer joined an existing session; the others got `new-peer`.
    Joined,
    /// The peer was already registered: nothing changed (its queue is kept).
    Again,
}

/// A peer's open stream and what is in flight on it.
#[derive(Debug)]
struct OpenStream {
    id: StreamId,
    /// The last event handed to this stream.
    cursor: u64,
    /// Events handed to it and not yet taken by its writer: id and cost, in order.
    in_flight: VecDeque<(u64, usize)>,
    in_flight_bytes: usize,
}

#[derive(Debug)]
enum StreamState {
    Closed,
    Open(OpenStream),
}

#[derive(Debug)]
struct Peer {
    stream: StreamState,
    /// The last request by this peer, or when its stream closed.
    last_active_ms: u64,
    /// Events in id order. The first `replay_len` (ids up to `acked_upto`) are delivered and
    /// kept for replay; the rest are undelivered and never dropped.
    log: VecDeque<Event>,
    /// The cost of every event in `log`, and of the replay window alone.
    log_bytes: usize,
    replay_len: usize,
    replay_bytes: usize,
    /// Events up to this id were taken by a stream's writer (or handed to a stream since
    /// replaced, or named by the client's Last-Event-ID).
    acked_upto: u64,
    /// The newest event dropped from the replay window.
    trimmed_upto: u64,
    /// With `peer_tokens`: what every request acting as this peer must present.
    token: Option<Box<str>>,
}

impl Peer {
    fn new(now_ms: u64) -> Self {
        Self {
            stream: StreamState::Closed,
            last_active_ms: now_ms,
            log: VecDeque::new(),
            log_bytes: 0,
            replay_len: 0,
            replay_bytes: 0,
            acked_upto: 0,
            trimmed_upto: 0,
            token: None,
        }
    }

    fn stream_id(&self) -> Option<StreamId> {
        match &self.stream {
            StreamState::Open(open) => Some(open.id),
            StreamState::Closed => None,
        }
    }

    fn undelivered_len(&self) -> usize {
        self.log.len() - self.replay_len
    }

    fn undelivered_bytes(&self) -> usize {
        self.log_bytes - self.replay_bytes
    }

    /// The id of the oldest event kept for replay.
    fn replay_front(&self) -> Option<u64> {
        if self.replay_len == 0 {
            return None;
        }
        self.log.front().map(|e| e.id)
    }

    /// Marks everything up to `upto` delivered.
    fn ack(&mut self, upto: u64) {
        self.acked_upto = self.acked_upto.max(upto);
        while let Some(event) = self
            .log
            .get(self.replay_len)
            .filter(|e| e.id <= self.acked_upto)
        {
            self.replay_bytes += event.cost();
            self.replay_len += 1;
        }
    }

    /// Drops the oldest replayable event; `false` if there is none.
    fn trim_front(&mut self) -> bool {
        if self.replay_len == 0 {
            return false;
        }
        let Some(event) = self.log.pop_front() else {
            return false;
        };
        let cost = event.cost();
        self.log_bytes -= cost;
        self.replay_bytes -= cost;
        self.replay_len -= 1;
        self.trimmed_upto = event.id;
        true
    }

    /// Whether one more event of `cost` fits beside `reserve` bytes kept for later `peer-left`s,
    /// once the replay window is trimmed as needed.
    fn fits(&self, cost: usize, reserve: usize, limits: &Limits) -> Result<(), Refusal> {
        if self.undelivered_len() >= limits.max_queued_events {
            return Err(Refusal::Events);
        }
        if self.undelivered_bytes() + cost + reserve > limits.max_peer_event_bytes {
            return Err(Refusal::Bytes);
        }
        Ok(())
    }

    /// Trims the replay window, oldest first, until [`Self::fits`]'s event fits.
    fn make_room(&mut self, cost: usize, reserve: usize, limits: &Limits) {
        while (self.log.len() >= limits.max_queued_events
            || self.log_bytes + cost + reserve > limits.max_peer_event_bytes)
            && self.trim_front()
        {}
    }

    fn append(&mut self, event: Event) {
        self.log_bytes += event.cost();
        self.log.push_back(event);
    }

    /// A log that once held many events gives back its spare capacity.
    fn shrink(&mut self) {
        if self.log.capacity() > 64 && self.log.len() < self.log.capacity() / 4 {
            self.log.shrink_to(self.log.len() * 2);
        }
        if let StreamState::Open(open) = &mut self.stream {
            let in_flight = &mut open.in_flight;
            if in_flight.capacity() > 64 && in_flight.len() < in_flight.capacity() / 4 {
                in_flight.shrink_to(in_flight.len() * 2);
            }
        }
    }
}

/// Which of a peer's limits an event would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Events,
    Bytes,
}

impl Refusal {
    fn error(self, peer: &str, limits: &Limits) -> SessionError {
        match self {
            Self::Events => SessionError::QueueFull {
                peer: peer.to_owned(),
                limit: limits.max_queued_events,
            },
            Self::Bytes => SessionError::PeerBytesFull {
                peer: peer.to_owned(),
                limit: limits.max_peer_event_bytes,
            },
        }
    }
}

#[derive(Debug)]
struct Session {
    /// Peers in join order, so that `new-peer` and `peer-left` go out in a stable order.
    peers: Vec<(String, Peer)>,
    /// The [`address_key`] of the client that created it, charged until the session goes.
    creator: IpAddr,
}

/// `senderId`, `type`, `payload`: the one shape every event has.
#[derive(Serialize)]
struct EventData<'a> {
    #[serde(rename = "senderId")]
    sender_id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
}

/// The room kept in a peer's log for `peer-left` events when its session has `peers` peers.
fn peer_reserve(peers: usize) -> usize {
    peers.saturating_sub(1) * CONTROL_EVENT_COST
}

/// What a session of `peers` peers is counted as server-wide besides its events: each peer's
/// entries, and room for each to leave and tell the others.
fn session_reserve(peers: usize) -> usize {
    peers * (PEER_ENTRY_COST + peer_reserve(peers))
}

/// The sessions state machine.
#[derive(Debug)]
pub struct Sessions {
    limits: Limits,
    sessions: HashMap<String, Session>,
    streams: HashMap<StreamId, (String, String)>,
    /// Sessions per creating address ([`address_key`]); entries at zero are removed.
    per_address: HashMap<IpAddr, usize>,
    /// (oldest replayable event id, session, peer) for every peer with a replay window: the
    /// first entry is the oldest replayable event server-wide.
    replay_index: BTreeSet<(u64, String, String)>,
    /// The cost of every peer's log together, and of the replay windows alone.
    event_bytes: usize,
    replay_bytes: usize,
    /// [`session_reserve`] summed over sessions: counted against `max_event_bytes` with events.
    reserved_bytes: usize,
    /// Process-wide, so a reconnecting client's Last-Event-ID never names a later event.
    next_event_id: u64,
    next_stream: u64,
    outputs: VecDeque<Output>,
}

impl Sessions {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            sessions: HashMap::new(),
            streams: HashMap::new(),
            per_address: HashMap::new(),
            replay_index: BTreeSet::new(),
            event_bytes: 0,
            replay_bytes: 0,
            reserved_bytes: 0,
            next_event_id: 1,
            next_stream: 1,
            outputs: VecDeque::new(),
        }
    }

    /// The next thing for the IO layer to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Events waiting for their peer's stream to deliver them, over every peer: one pass over
    /// the peers, for a scrape of the metrics.
    pub fn queued_events(&self) -> usize {
        self.sessions
            .values()
            .flat_map(|s| &s.peers)
            .map(|(_, p)| p.undelivered_len())
            .sum()
    }

    /// The ids of every session (their home claims are kept alive in cluster mode).
    pub(crate) fn session_ids(&self) -> Vec<String> {
        self.sessions.keys().cloned().collect()
    }

    /// Peer ids of a session in join order (empty for an unknown session).
    pub fn peers(&self, session: &str) -> Vec<String> {
        self.sessions
            .get(session)
            .map(|s| s.peers.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default()
    }

    /// `POST /register/:session/:peer` from a client at `client`.
    pub fn handle_register(
        &mut self,
        session: &str,
        peer: &str,
        client: IpAddr,
        now_ms: u64,
    ) -> Result<Registered, SessionError> {
        check_ids(session, peer)?;
        let limits = self.limits.clone();
        let Some(existing) = self.sessions.get_mut(session) else {
            if self.sessions.len() >= limits.max_sessions {
                return Err(SessionError::TooManySessions {
                    limit: limits.max_sessions,
                });
            }
            let creator = address_key(client);
            let created = self.per_address.get(&creator).copied().unwrap_or(0);
            if limits.max_sessions_per_address > 0 && created >= limits.max_sessions_per_address {
                return Err(SessionError::TooManySessionsFromAddress {
                    limit: limits.max_sessions_per_address,
                });
            }
            self.server_fits(session_reserve(1))?;
            self.make_server_room(session_reserve(1));
            *self.per_address.entry(creator).or_default() += 1;
            self.reserved_bytes += session_reserve(1);
            self.sessions.insert(
                session.to_owned(),
                Session {
                    peers: vec![(peer.to_owned(), Peer::new(now_ms))],
                    creator,
                },
            );
            info!(session, peer, %creator, "session created");
            return Ok(Registered::NewSession);
        };
        let peers = &mut existing.peers;
        if let Some((_, p)) = peers.iter_mut().find(|(id, _)| id == peer) {
            p.last_active_ms = now_ms;
            debug!(session, peer, "registered again");
            return Ok(Registered::Again);
        }
        let n = peers.len();
        if n >= limits.max_peers_per_session {
            return Err(SessionError::SessionFull {
                session: session.to_owned(),
                limit: limits.max_peers_per_session,
            });
        }
        // `new-peer` must reach every present peer, so the join waits until each has room for
        // it, beside the reserve for the `peer-left`s of a session one larger.
        let reserve = peer_reserve(n + 1);
        for (id, p) in peers.iter() {
            p.fits(CONTROL_EVENT_COST, reserve, &limits)
                .map_err(|refusal| refusal.error(id, &limits))?;
        }
        if reserve > limits.max_peer_event_bytes {
            return Err(Refusal::Bytes.error(peer, &limits));
        }
        let ids: Vec<String> = peers.iter().map(|(id, _)| id.clone()).collect();
        let reserve_growth = session_reserve(n + 1) - session_reserve(n);
        self.server_fits(n * CONTROL_EVENT_COST + reserve_growth)?;
        for id in &ids {
            self.with_peer(session, id, |p| {
                p.make_room(CONTROL_EVENT_COST, reserve, &limits);
            });
        }
        self.make_server_room(n * CONTROL_EVENT_COST + reserve_growth);
        self.reserved_bytes += reserve_growth;
        if let Some(existing) = self.sessions.get_mut(session) {
            // Exactly one more slot: the default growth (to 4, then doubling) would leave up to
            // half the slots of every session empty.
            existing.peers.reserve_exact(1);
            existing.peers.push((peer.to_owned(), Peer::new(now_ms)));
        }
        info!(session, peer, "peer joined");
        self.broadcast(session, peer, "new-peer");
        Ok(Registered::Joined)
    }

    /// Whether a request presenting `presented` may act as `peer`: yes unless the peer is
    /// registered with a token (`peer_tokens`) that is not among them. Compared in constant
    /// time. An unknown peer passes: the request itself then answers that it is unknown.
    pub fn authorize(
        &self,
        session: &str,
        peer: &str,
        presented: &[String],
    ) -> Result<(), SessionError> {
        let token = self
            .sessions
            .get(session)
            .and_then(|s| s.peers.iter().find(|(id, _)| id == peer))
            .and_then(|(_, p)| p.token.as_deref());
        match token {
            Some(token)
                if !presented
                    .iter()
                    .any(|t| crate::auth::same_token(t.as_bytes(), token)) =>
            {
                Err(SessionError::WrongPeerToken {
                    session: session.to_owned(),
                    peer: peer.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The peer's token: `fresh` becomes it if it has none yet. `None` for an unknown peer.
    pub fn peer_token(&mut self, session: &str, peer: &str, fresh: String) -> Option<String> {
        let p = self.peer_mut(session, peer).ok()?;
        Some(p.token.get_or_insert_with(|| fresh.into()).to_string())
    }

    /// `DELETE /register/:session/:peer`.
    pub fn handle_unregister(
        &mut self,
        session: &str,
        peer: &str,
        _now_ms: u64,
    ) -> Result<(), SessionError> {
        check_ids(session, peer)?;
        self.peer_mut(session, peer)?;
        info!(session, peer, "peer left");
        self.remove_peer(session, peer);
        Ok(())
    }

    /// `GET /events/:session/:peer`: opens the peer's stream, ending any earlier one. Events
    /// after `last_event_id` if given, else the undelivered ones, then new ones come out as
    /// [`Output::Deliver`] as fast as the stream's writer takes them.
    pub fn handle_open_stream(
        &mut self,
        session: &str,
        peer: &str,
        last_event_id: Option<u64>,
        now_ms: u64,
    ) -> Result<StreamId, SessionError> {
        check_ids(session, peer)?;
        self.peer_mut(session, peer)?;
        let stream = StreamId(self.next_stream);
        self.next_stream += 1;
        // A client cannot have seen an event that does not exist yet.
        let newest = self.next_event_id - 1;
        let previous = self.with_peer(session, peer, |p| {
            p.last_active_ms = now_ms;
            let previous = std::mem::replace(
                &mut p.stream,
                StreamState::Open(OpenStream {
                    id: stream,
                    cursor: 0,
                    in_flight: VecDeque::new(),
                    in_flight_bytes: 0,
                }),
            );
            // What the replaced stream was handed counts as delivered: it may still write it.
            let previous = match previous {
                StreamState::Open(old) => {
                    p.ack(old.cursor);
                    Some(old.id)
                }
                StreamState::Closed => None,
            };
            let start = match last_event_id {
                Some(seen) => {
                    let seen = seen.min(newest);
                    p.ack(seen);
                    seen
                }
                None => p.acked_upto,
            };
            if last_event_id.is_some() && p.trimmed_upto > start {
                warn!(
                    session,
                    peer,
                    last_event_id = start,
                    trimmed_upto = p.trimmed_upto,
                    "Last-Event-ID is older than the replay window; some events are gone"
                );
            }
            if let StreamState::Open(open) = &mut p.stream {
                open.cursor = start;
            }
            previous
        });
        if let Some(Some(old)) = previous {
            debug!(session, peer, %old, "stream replaced by a newer one");
            self.streams.remove(&old);
            self.outputs.push_back(Output::End { stream: old });
        }
        self.streams
            .insert(stream, (session.to_owned(), peer.to_owned()));
        debug!(session, peer, %stream, "stream opened");
        self.pump(session, peer);
        Ok(stream)
    }

    /// The stream's writer took every event up to `upto` (in order). Unknown or replaced
    /// streams are ignored.
    pub fn handle_stream_written(&mut self, stream: StreamId, upto: u64, now_ms: u64) {
        let Some((session, peer)) = self.streams.get(&stream).cloned() else {
            return;
        };
        self.with_peer(&session, &peer, |p| {
            let StreamState::Open(open) = &mut p.stream else {
                return;
            };
            if open.id != stream {
                return;
            }
            let upto = upto.min(open.cursor);
            while let Some(&(id, cost)) = open.in_flight.front() {
                if id > upto {
                    break;
                }
                open.in_flight.pop_front();
                open.in_flight_bytes -= cost;
            }
            p.ack(upto);
            p.last_active_ms = now_ms;
        });
        self.pump(&session, &peer);
    }

    /// A stream ended on the client's side (or its writer failed). Events handed to it and not
    /// taken stay undelivered. Unknown or replaced streams are ignored.
    pub fn handle_stream_closed(&mut self, stream: StreamId, now_ms: u64) {
        let Some((session, peer)) = self.streams.remove(&stream) else {
            return;
        };
        let Ok(p) = self.peer_mut(&session, &peer) else {
            return;
        };
        if p.stream_id() == Some(stream) {
            p.stream = StreamState::Closed;
            p.last_active_ms = now_ms;
            debug!(session, peer, %stream, "stream closed");
        }
    }

    /// `POST /message/:session/:from` with `{target, type, payload}`.
    pub fn handle_message(
        &mut self,
        session: &str,
        from: &str,
        target: &str,
        kind: &str,
        payload: Option<&RawValue>,
        now_ms: u64,
    ) -> Result<(), SessionError> {
        check_ids(session, from)?;
        validate_id(target).map_err(|reason| SessionError::InvalidId {
            which: "target",
            reason,
        })?;
        let limits = self.limits.clone();
        let Some(existing) = self.sessions.get_mut(session) else {
            return Err(SessionError::UnknownSession(session.to_owned()));
        };
        let peers = &mut existing.peers;
        let reserve = peer_reserve(peers.len());
        let Some((_, sender)) = peers.iter_mut().find(|(id, _)| id == from) else {
            return Err(SessionError::SenderNotRegistered {
                session: session.to_owned(),
                peer: from.to_owned(),
            });
        };
        sender.last_active_ms = now_ms;
        let Some((_, recipient)) = peers.iter().find(|(id, _)| id == target) else {
            return Err(SessionError::UnknownTarget {
                session: session.to_owned(),
                peer: target.to_owned(),
            });
        };
        let data: Arc<str> = event_data(from, kind, payload).into();
        let cost = data.len() + EVENT_OVERHEAD;
        if let Err(refusal) = recipient.fits(cost, reserve, &limits) {
            debug!(
                session,
                from, target, kind, "target's event log is full; refused"
            );
            return Err(refusal.error(target, &limits));
        }
        self.server_fits(cost)?;
        self.with_peer(session, target, |p| p.make_room(cost, reserve, &limits));
        self.make_server_room(cost);
        let id = self.next_id();
        debug!(session, from, target, kind, event = id, "message");
        self.push(session, target, Event { id, data });
        Ok(())
    }

    /// Time passed: removes peers idle for `idle_timeout_ms` (the others get `peer-left`) and
    /// so sessions left empty.
    pub fn handle_tick(&mut self, now_ms: u64) {
        let timeout = self.limits.idle_timeout_ms;
        if timeout == 0 {
            return;
        }
        let mut idle: Vec<(String, String)> = Vec::new();
        for (session, s) in &self.sessions {
            for (peer, p) in &s.peers {
                if matches!(p.stream, StreamState::Closed)
                    && now_ms.saturating_sub(p.last_active_ms) >= timeout
                {
                    idle.push((session.clone(), peer.clone()));
                }
            }
        }
        idle.sort_unstable();
        for (session, peer) in idle {
            info!(session, peer, "peer idle too long; removed");
            self.remove_peer(&session, &peer);
        }
    }

    fn peer_mut(&mut self, session: &str, peer: &str) -> Result<&mut Peer, SessionError> {
        let Some(s) = self.sessions.get_mut(session) else {
            return Err(SessionError::UnknownSession(session.to_owned()));
        };
        s.peers
            .iter_mut()
            .find(|(id, _)| id == peer)
            .map(|(_, p)| p)
            .ok_or_else(|| SessionError::UnknownPeer {
                session: session.to_owned(),
                peer: peer.to_owned(),
            })
    }

    /// Runs `change` on a peer and brings the server-wide byte counts and the replay index up
    /// to date with what it did. `None` for an unknown peer.
    fn with_peer<R>(
        &mut self,
        session: &str,
        peer: &str,
        change: impl FnOnce(&mut Peer) -> R,
    ) -> Option<R> {
        let p = self.peer_mut(session, peer).ok()?;
        let (front, log_bytes, replay_bytes) = (p.replay_front(), p.log_bytes, p.replay_bytes);
        let result = change(p);
        p.shrink();
        let (new_front, new_log_bytes, new_replay_bytes) =
            (p.replay_front(), p.log_bytes, p.replay_bytes);
        self.event_bytes = self.event_bytes + new_log_bytes - log_bytes;
        self.replay_bytes = self.replay_bytes + new_replay_bytes - replay_bytes;
        if front != new_front {
            if let Some(id) = front {
                self.replay_index
                    .remove(&(id, session.to_owned(), peer.to_owned()));
            }
            if let Some(id) = new_front {
                self.replay_index
                    .insert((id, session.to_owned(), peer.to_owned()));
            }
        }
        Some(result)
    }

    /// Whether `bytes` more fit server-wide once replay windows are trimmed.
    fn server_fits(&self, bytes: usize) -> Result<(), SessionError> {
        let undelivered = self.event_bytes - self.replay_bytes;
        if undelivered + self.reserved_bytes + bytes > self.limits.max_event_bytes {
            debug!(
                event_bytes = self.event_bytes,
                reserved = self.reserved_bytes,
                "server-wide event bytes full; refused"
            );
            return Err(SessionError::ServerBytesFull {
                limit: self.limits.max_event_bytes,
            });
        }
        Ok(())
    }

    /// Trims the oldest replayable events server-wide until `bytes` more fit.
    fn make_server_room(&mut self, bytes: usize) {
        while self.event_bytes + self.reserved_bytes + bytes > self.limits.max_event_bytes {
            let Some((_, session, peer)) = self.replay_index.pop_first() else {
                return;
            };
            self.with_peer(&session, &peer, Peer::trim_front);
        }
    }

    /// Every way a peer leaves comes here: its stream ends, its events go, the others get
    /// `peer-left`, and an empty session goes (and stops counting against its creator).
    fn remove_peer(&mut self, session: &str, peer: &str) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        let Some(index) = s.peers.iter().position(|(id, _)| id == peer) else {
            return;
        };
        let n = s.peers.len();
        let (_, removed) = s.peers.remove(index);
        let left = s.peers.len();
        let creator = s.creator;
        self.event_bytes -= removed.log_bytes;
        self.replay_bytes -= removed.replay_bytes;
        if let Some(id) = removed.replay_front() {
            self.replay_index
                .remove(&(id, session.to_owned(), peer.to_owned()));
        }
        self.reserved_bytes -= session_reserve(n) - session_reserve(left);
        if let Some(stream) = removed.stream_id() {
            self.streams.remove(&stream);
            self.outputs.push_back(Output::End { stream });
        }
        if left == 0 {
            self.sessions.remove(session);
            if let Some(count) = self.per_address.get_mut(&creator) {
                *count -= 1;
                if *count == 0 {
                    self.per_address.remove(&creator);
                }
            }
            info!(session, "session removed: no peers left");
            return;
        }
        self.broadcast(session, peer, "peer-left");
    }

    /// Tells every other peer of `session` about `about`. Always appended: a join checked room
    /// for its `new-peer`, and each peer's reserve holds a `peer-left` from every other peer.
    fn broadcast(&mut self, session: &str, about: &str, kind: &str) {
        let id = self.next_id();
        let event = Event {
            id,
            data: event_data(about, kind, None).into(),
        };
        let others: Vec<String> = self
            .peers(session)
            .into_iter()
            .filter(|id| id != about)
            .collect();
        for other in others {
            self.push(session, &other, event.clone());
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_event_id;
        self.next_event_id += 1;
        id
    }

    /// Appends to a peer's log (room was made by the caller) and delivers it if the stream can
    /// take it.
    fn push(&mut self, session: &str, peer: &str, event: Event) {
        self.with_peer(session, peer, |p| {
            p.append(event);
            if matches!(p.stream, StreamState::Closed) {
                debug!(
                    session,
                    peer,
                    queued = p.undelivered_len(),
                    "event queued: no open stream"
                );
            }
        });
        self.pump(session, peer);
    }

    /// Hands the peer's open stream the events after its cursor, while its in-flight bytes are
    /// under the window (always at least one event).
    fn pump(&mut self, session: &str, peer: &str) {
        let window = self.limits.stream_window_bytes;
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        let Some((_, p)) = s.peers.iter_mut().find(|(id, _)| id == peer) else {
            return;
        };
        let Peer { stream, log, .. } = p;
        let StreamState::Open(open) = stream else {
            return;
        };
        while open.in_flight.is_empty() || open.in_flight_bytes < window {
            let next = log.partition_point(|e| e.id <= open.cursor);
            let Some(event) = log.get(next) else {
                break;
            };
            let cost = event.cost();
            open.cursor = event.id;
            open.in_flight.push_back((event.id, cost));
            open.in_flight_bytes += cost;
            self.outputs.push_back(Output::Deliver {
                stream: open.id,
                event: event.clone(),
            });
        }
    }
}

/// An event's JSON line. An event is one `data:` line, so a payload spread over lines is joined.
fn event_data(sender: &str, kind: &str, payload: Option<&RawValue>) -> String {
    let compacted = payload
        .filter(|p| p.get().contains(['\n', '\r']))
        .and_then(|p| RawValue::from_string(compact_json(p.get())).ok());
    serde_json::to_string(&EventData {
        sender_id: sender,
        kind,
        payload: compacted.as_deref().or(payload),
    })
    // Strings and a RawValue always serialize.
    .unwrap_or_default()
}

/// Valid JSON without the whitespace between tokens; strings are kept as they are (a raw line
/// break cannot occur inside a JSON string).
fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

fn check_ids(session: &str, peer: &str) -> Result<(), SessionError> {
    validate_id(session).map_err(|reason| SessionError::InvalidId {
        which: "session",
        reason,
    })?;
    validate_id(peer).map_err(|reason| SessionError::InvalidId {
        which: "peer",
        reason,
    })
}
