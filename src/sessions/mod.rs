//! The sans-IO sessions core behind the HTTP + Server-Sent Events front door: sessions → peers →
//! each peer's bounded event log (queue and Last-Event-ID replay window). Requests go in through
//! `handle_*`, stream deliveries come out of [`Sessions::poll_output`]. It never touches HTTP, a
//! channel or the clock (`now_ms` is an argument); `tests.rs` drives it directly.

pub mod task;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use tracing::{debug, info, warn};

/// Longest session or peer id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Checks the id rule: 1 to [`MAX_ID_LEN`] characters, each an ASCII letter, digit, `-`, `_`
/// or `.` (URL-safe without escaping, and never `:`, which TURN usernames use as separator).
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
    Ok(())
}

/// The limits the core enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_peers_per_session: usize,
    /// Events kept per peer: undelivered ones (the queue) plus delivered ones (replay window).
    pub max_queued_events: usize,
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

/// What the core asks the IO layer to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write an event on an open stream.
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
    #[error("session {session} is full (max_peers_per_session = {limit})")]
    SessionFull { session: String, limit: usize },
    #[error(
        "the event queue of peer {peer} is full (max_queued_events = {limit}); it must open its \
         event stream"
    )]
    QueueFull { peer: String, limit: usize },
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
}

/// What registering did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new session was created with this peer in it.
    NewSession,
    /// The peer joined an existing session; the others got `new-peer`.
    Joined,
    /// The peer was already registered: nothing changed (its queue is kept).
    Again,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Closed,
    Open(StreamId),
}

#[derive(Debug)]
struct Peer {
    stream: StreamState,
    /// The last request by this peer, or when its stream closed.
    last_active_ms: u64,
    /// Events in id order; those with `id > delivered_upto` are queued, the rest replayable.
    log: VecDeque<Event>,
    delivered_upto: u64,
    /// The newest event dropped from the replay window.
    trimmed_upto: u64,
}

impl Peer {
    fn new(now_ms: u64) -> Self {
        Self {
            stream: StreamState::Closed,
            last_active_ms: now_ms,
            log: VecDeque::new(),
            delivered_upto: 0,
            trimmed_upto: 0,
        }
    }

    fn queued(&self) -> usize {
        self.log
            .iter()
            .rev()
            .take_while(|e| e.id > self.delivered_upto)
            .count()
    }

    /// Whether a message would fit without dropping an undelivered event.
    fn has_room(&self, limit: usize) -> bool {
        self.log.len() < limit
            || self
                .log
                .front()
                .is_some_and(|e| e.id <= self.delivered_upto)
    }
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

/// The sessions state machine.
#[derive(Debug)]
pub struct Sessions {
    limits: Limits,
    /// Session id → peer id → peer. Peers in a session are kept in a `Vec` in join order so
    /// that `new-peer` and `peer-left` go out in a stable order.
    sessions: HashMap<String, Vec<(String, Peer)>>,
    streams: HashMap<StreamId, (String, String)>,
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

    /// Peer ids of a session in join order (empty for an unknown session).
    pub fn peers(&self, session: &str) -> Vec<String> {
        self.sessions
            .get(session)
            .map(|peers| peers.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default()
    }

    /// `POST /register/:session/:peer`.
    pub fn handle_register(
        &mut self,
        session: &str,
        peer: &str,
        now_ms: u64,
    ) -> Result<Registered, SessionError> {
        check_ids(session, peer)?;
        let limits = self.limits.clone();
        let Some(peers) = self.sessions.get_mut(session) else {
            if self.sessions.len() >= limits.max_sessions {
                return Err(SessionError::TooManySessions {
                    limit: limits.max_sessions,
                });
            }
            self.sessions.insert(
                session.to_owned(),
                vec![(peer.to_owned(), Peer::new(now_ms))],
            );
            info!(session, peer, "session created");
            return Ok(Registered::NewSession);
        };
        if let Some((_, p)) = peers.iter_mut().find(|(id, _)| id == peer) {
            p.last_active_ms = now_ms;
            debug!(session, peer, "registered again");
            return Ok(Registered::Again);
        }
        if peers.len() >= limits.max_peers_per_session {
            return Err(SessionError::SessionFull {
                session: session.to_owned(),
                limit: limits.max_peers_per_session,
            });
        }
        // `new-peer` must reach every present peer, so the join waits until each has room.
        if let Some((full, _)) = peers
            .iter()
            .find(|(_, p)| !p.has_room(limits.max_queued_events))
        {
            return Err(SessionError::QueueFull {
                peer: full.clone(),
                limit: limits.max_queued_events,
            });
        }
        peers.push((peer.to_owned(), Peer::new(now_ms)));
        info!(session, peer, "peer joined");
        self.broadcast(session, peer, "new-peer");
        Ok(Registered::Joined)
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

    /// `GET /events/:session/:peer`: opens the peer's stream, ending any earlier one. Returns the
    /// stream id and the backlog to write first: events after `last_event_id` if given, else the
    /// queued (undelivered) events.
    pub fn handle_open_stream(
        &mut self,
        session: &str,
        peer: &str,
        last_event_id: Option<u64>,
        now_ms: u64,
    ) -> Result<(StreamId, Vec<Event>), SessionError> {
        check_ids(session, peer)?;
        let stream = StreamId(self.next_stream);
        let p = self.peer_mut(session, peer)?;
        let after = last_event_id.unwrap_or(p.delivered_upto);
        if last_event_id.is_some() && p.trimmed_upto > after {
            warn!(
                session,
                peer,
                last_event_id = after,
                trimmed_upto = p.trimmed_upto,
                "Last-Event-ID is older than the replay window; some events are gone"
            );
        }
        let backlog: Vec<Event> = p.log.iter().filter(|e| e.id > after).cloned().collect();
        if let Some(last) = p.log.back() {
            p.delivered_upto = p.delivered_upto.max(last.id);
        }
        p.last_active_ms = now_ms;
        let previous = std::mem::replace(&mut p.stream, StreamState::Open(stream));
        self.next_stream += 1;
        if let StreamState::Open(old) = previous {
            debug!(session, peer, %old, "stream replaced by a newer one");
            self.streams.remove(&old);
            self.outputs.push_back(Output::End { stream: old });
        }
        self.streams
            .insert(stream, (session.to_owned(), peer.to_owned()));
        debug!(session, peer, %stream, backlog = backlog.len(), "stream opened");
        Ok((stream, backlog))
    }

    /// A stream ended on the client's side (or its writer could not keep up). Unknown or
    /// replaced streams are ignored.
    pub fn handle_stream_closed(&mut self, stream: StreamId, now_ms: u64) {
        let Some((session, peer)) = self.streams.remove(&stream) else {
            return;
        };
        let Ok(p) = self.peer_mut(&session, &peer) else {
            return;
        };
        if p.stream == StreamState::Open(stream) {
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
        let limit = self.limits.max_queued_events;
        let Some(peers) = self.sessions.get_mut(session) else {
            return Err(SessionError::UnknownSession(session.to_owned()));
        };
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
        if !recipient.has_room(limit) {
            warn!(
                session,
                from, target, kind, "target's event queue is full; refused"
            );
            return Err(SessionError::QueueFull {
                peer: target.to_owned(),
                limit,
            });
        }
        let event = self.event(from, kind, payload);
        debug!(session, from, target, kind, event = event.id, "message");
        self.push(session, target, event);
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
        for (session, peers) in &self.sessions {
            for (peer, p) in peers {
                if p.stream == StreamState::Closed
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
        let Some(peers) = self.sessions.get_mut(session) else {
            return Err(SessionError::UnknownSession(session.to_owned()));
        };
        peers
            .iter_mut()
            .find(|(id, _)| id == peer)
            .map(|(_, p)| p)
            .ok_or_else(|| SessionError::UnknownPeer {
                session: session.to_owned(),
                peer: peer.to_owned(),
            })
    }

    /// Every way a peer leaves comes here: its stream ends, the others get `peer-left`, and an
    /// empty session goes.
    fn remove_peer(&mut self, session: &str, peer: &str) {
        let Some(peers) = self.sessions.get_mut(session) else {
            return;
        };
        let Some(index) = peers.iter().position(|(id, _)| id == peer) else {
            return;
        };
        let (_, removed) = peers.remove(index);
        if let StreamState::Open(stream) = removed.stream {
            self.streams.remove(&stream);
            self.outputs.push_back(Output::End { stream });
        }
        if peers.is_empty() {
            self.sessions.remove(session);
            info!(session, "session removed: no peers left");
            return;
        }
        self.broadcast(session, peer, "peer-left");
    }

    /// Tells every other peer of `session` about `about`. Always appended: each such event
    /// follows a join that checked the queues, so it exceeds a full queue by at most one event
    /// per peer of the session.
    fn broadcast(&mut self, session: &str, about: &str, kind: &str) {
        let event = self.event(about, kind, None);
        let others: Vec<String> = self
            .peers(session)
            .into_iter()
            .filter(|id| id != about)
            .collect();
        for other in others {
            self.push(session, &other, event.clone());
        }
    }

    fn event(&mut self, sender: &str, kind: &str, payload: Option<&RawValue>) -> Event {
        let id = self.next_event_id;
        self.next_event_id += 1;
        // An event is one `data:` line, so a payload spread over lines is joined up.
        let compacted = payload
            .filter(|p| p.get().contains(['\n', '\r']))
            .and_then(|p| RawValue::from_string(compact_json(p.get())).ok());
        let data = serde_json::to_string(&EventData {
            sender_id: sender,
            kind,
            payload: compacted.as_deref().or(payload),
        })
        // Strings and a RawValue always serialize.
        .unwrap_or_default();
        Event {
            id,
            data: data.into(),
        }
    }

    /// Appends to a peer's log, dropping the oldest delivered event if the log is full, and
    /// delivers at once if its stream is open.
    fn push(&mut self, session: &str, peer: &str, event: Event) {
        let limit = self.limits.max_queued_events;
        let Ok(p) = self.peer_mut(session, peer) else {
            return;
        };
        let front = p.log.front().map(|e| e.id);
        if p.log.len() >= limit && front.is_some_and(|id| id <= p.delivered_upto) {
            p.trimmed_upto = front.unwrap_or_default();
            p.log.pop_front();
        }
        p.log.push_back(event.clone());
        if let StreamState::Open(stream) = p.stream {
            p.delivered_upto = event.id;
            self.outputs.push_back(Output::Deliver { stream, event });
        } else {
            debug!(
                session,
                peer,
                queued = p.queued(),
                "event queued: no open stream"
            );
        }
    }
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
