//! The session API across cluster nodes (issue 14). Each session has a **home node**, claimed in
//! Redis when it is first registered (`<prefix>:session:<id>` → `<node_id>/<incarnation>`); the
//! home runs the [`Sessions`] core for it exactly as a node alone does. Another node forwards
//! each request on that session to the home over the cluster link ([`SessionWire::Request`]) and
//! relays the answer; an event stream opened elsewhere is a **proxy**: the home hands the
//! stream's events to the peer's node ([`SessionWire::Event`]), whose SSE response writes them
//! and reports each one taken ([`SessionWire::Written`]), so the home's window, queue and replay
//! (Last-Event-ID) stay exactly those of a local stream.
//!
//! [`Relay`] is the sans-IO bookkeeping of both sides (requests in flight, proxies, streams homed
//! here and read elsewhere) and of node loss: a home that goes down fails its requests in flight
//! and ends its proxies (the SSE stream ends, as when a session ends); a peer's node that goes
//! down closes the streams it read here (its peers then leave as a peer that disconnects does).
//! [`serve`] runs a forwarded request on the core. [`Homes`] is the Redis side (the claim).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::{debug, warn};

use super::{Event, Registered, SessionError, Sessions, StreamId};
use crate::cluster::link::NodeKey;

/// What one node's sessions task sends another's (inside [`crate::cluster::bridge::Wire`]).
/// Externally tagged, so a payload travels as raw JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum SessionWire {
    /// A request for a session homed on the receiver; answered with one `Reply` of `req`.
    Request { req: u64, op: Op },
    Reply {
        req: u64,
        result: Result<Answer, WireError>,
    },
    /// An event for a stream the receiver relays (`stream` is the home's id of it).
    Event { stream: u64, id: u64, data: String },
    /// The relaying node's client took events up to `id` (flow control, as a local stream).
    Written { stream: u64, id: u64 },
    /// The relaying node's client went away.
    Closed { stream: u64 },
    /// The home ended the stream (replaced, or its peer left).
    End { stream: u64 },
}

/// A session API request, as forwarded to the session's home.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Op {
    Register {
        session: String,
        peer: String,
        client: IpAddr,
        presented: Vec<String>,
        fresh: Option<String>,
    },
    Unregister {
        session: String,
        peer: String,
        presented: Vec<String>,
    },
    OpenStream {
        session: String,
        peer: String,
        presented: Vec<String>,
        last_event_id: Option<u64>,
    },
    Message {
        session: String,
        from: String,
        presented: Vec<String>,
        target: String,
        kind: String,
        payload: Option<Box<RawValue>>,
    },
}

/// The home's answer to an [`Op`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Answer {
    Registered {
        registered: Registered,
        token: Option<String>,
    },
    Done,
    Opened {
        stream: u64,
    },
}

/// [`SessionError`] as it crosses the link (the core's error holds `&'static str`s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum WireError {
    InvalidId { which: String, reason: String },
    TooManySessions { limit: usize },
    TooManySessionsFromAddress { limit: usize },
    SessionFull { session: String, limit: usize },
    QueueFull { peer: String, limit: usize },
    PeerBytesFull { peer: String, limit: usize },
    ServerBytesFull { limit: usize },
    UnknownSession(String),
    UnknownPeer { session: String, peer: String },
    SenderNotRegistered { session: String, peer: String },
    UnknownTarget { session: String, peer: String },
    BadLastEventId,
    WrongPeerToken { session: String, peer: String },
}

impl From<SessionError> for WireError {
    fn from(e: SessionError) -> Self {
        use SessionError as E;
        match e {
            E::InvalidId { which, reason } => Self::InvalidId {
                which: which.to_owned(),
                reason: reason.to_owned(),
            },
            E::TooManySessions { limit } => Self::TooManySessions { limit },
            E::TooManySessionsFromAddress { limit } => Self::TooManySessionsFromAddress { limit },
            E::SessionFull { session, limit } => Self::SessionFull { session, limit },
            E::QueueFull { peer, limit } => Self::QueueFull { peer, limit },
            E::PeerBytesFull { peer, limit } => Self::PeerBytesFull { peer, limit },
            E::ServerBytesFull { limit } => Self::ServerBytesFull { limit },
            E::UnknownSession(s) => Self::UnknownSession(s),
            E::UnknownPeer { session, peer } => Self::UnknownPeer { session, peer },
            E::SenderNotRegistered { session, peer } => Self::SenderNotRegistered { session, peer },
            E::UnknownTarget { session, peer } => Self::UnknownTarget { session, peer },
            E::BadLastEventId => Self::BadLastEventId,
            E::WrongPeerToken { session, peer } => Self::WrongPeerToken { session, peer },
        }
    }
}

impl From<WireError> for SessionError {
    fn from(e: WireError) -> Self {
        use WireError as W;
        match e {
            // The id rule is the same on every node, so only the target id (checked by the
            // home) can fail it; its reason is one of the core's fixed texts.
            W::InvalidId { which, reason } => Self::InvalidId {
                which: if which == "session" {
                    "session"
                } else if which == "peer" {
                    "peer"
                } else {
                    "target"
                },
                reason: static_reason(&reason),
            },
            W::TooManySessions { limit } => Self::TooManySessions { limit },
            W::TooManySessionsFromAddress { limit } => Self::TooManySessionsFromAddress { limit },
            W::SessionFull { session, limit } => Self::SessionFull { session, limit },
            W::QueueFull { peer, limit } => Self::QueueFull { peer, limit },
            W::PeerBytesFull { peer, limit } => Self::PeerBytesFull { peer, limit },
            W::ServerBytesFull { limit } => Self::ServerBytesFull { limit },
            W::UnknownSession(s) => Self::UnknownSession(s),
            W::UnknownPeer { session, peer } => Self::UnknownPeer { session, peer },
            W::SenderNotRegistered { session, peer } => Self::SenderNotRegistered { session, peer },
            W::UnknownTarget { session, peer } => Self::UnknownTarget { session, peer },
            W::BadLastEventId => Self::BadLastEventId,
            W::WrongPeerToken { session, peer } => Self::WrongPeerToken { session, peer },
        }
    }
}

/// The core's own reason text for an id, so a reason from another node maps back to it.
fn static_reason(reason: &str) -> &'static str {
    let long = "x".repeat(super::MAX_ID_LEN + 1);
    ["", long.as_str(), " ", ".."]
        .into_iter()
        .filter_map(|id| super::validate_id(id).err())
        .find(|r| *r == reason)
        .unwrap_or("is not a valid id")
}

/// Runs a forwarded request on the home's core.
pub(super) fn serve(core: &mut Sessions, op: Op, now_ms: u64) -> Result<Answer, SessionError> {
    match op {
        Op::Register {
            session,
            peer,
            client,
            presented,
            fresh,
        } => {
            core.authorize(&session, &peer, &presented)?;
            let registered = core.handle_register(&session, &peer, client, now_ms)?;
            let token = fresh.and_then(|fresh| core.peer_token(&session, &peer, fresh));
            Ok(Answer::Registered { registered, token })
        }
        Op::Unregister {
            session,
            peer,
            presented,
        } => {
            core.authorize(&session, &peer, &presented)?;
            core.handle_unregister(&session, &peer, now_ms)?;
            Ok(Answer::Done)
        }
        Op::OpenStream {
            session,
            peer,
            presented,
            last_event_id,
        } => {
            core.authorize(&session, &peer, &presented)?;
            let stream = core.handle_open_stream(&session, &peer, last_event_id, now_ms)?;
            Ok(Answer::Opened { stream: stream.0 })
        }
        Op::Message {
            session,
            from,
            presented,
            target,
            kind,
            payload,
        } => {
            core.authorize(&session, &from, &presented)?;
            core.handle_message(&session, &from, &target, &kind, payload.as_deref(), now_ms)?;
            Ok(Answer::Done)
        }
    }
}

/// Proxy streams are numbered from here, apart from the core's own stream ids (which count from
/// 1 and never get near it).
const FIRST_PROXY: u64 = 1 << 63;

/// What a node going down undoes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Lost {
    /// Requests sent to it and not answered (number, session): each fails.
    pub(crate) requests: Vec<(u64, String)>,
    /// Proxies of its streams: each ends (the SSE response ends).
    pub(crate) proxies: Vec<StreamId>,
    /// Streams homed here and read through it: each closes, as when a client goes away.
    pub(crate) served: Vec<StreamId>,
}

/// The bookkeeping of the session API across nodes, for one node.
#[derive(Debug, Default)]
pub(crate) struct Relay {
    up: HashSet<NodeKey>,
    next_req: u64,
    /// Request → the node it went to, and its session.
    pending: HashMap<u64, (NodeKey, String)>,
    next_proxy: u64,
    /// Local proxy id → (home, the home's stream id), and back.
    proxies: HashMap<StreamId, (NodeKey, u64)>,
    proxy_of: HashMap<(NodeKey, u64), StreamId>,
    /// Streams of this node's core read through another node.
    served: HashMap<StreamId, NodeKey>,
}

impl Relay {
    pub(crate) fn is_up(&self, node: &NodeKey) -> bool {
        self.up.contains(node)
    }

    /// `node` is gone: everything that depended on it, to be undone by the caller.
    fn node_down(&mut self, node: &NodeKey) -> Lost {
        self.up.remove(node);
        let mut lost = Lost::default();
        self.pending.retain(|&req, (to, session)| {
            let keep = to != node;
            if !keep {
                lost.requests.push((req, std::mem::take(session)));
            }
            keep
        });
        self.proxies.retain(|&local, (home, remote)| {
            let keep = home != node;
            if !keep {
                lost.proxies.push(local);
                self.proxy_of.remove(&(home.clone(), *remote));
            }
            keep
        });
        self.served.retain(|&stream, reader| {
            let keep = reader != node;
            if !keep {
                lost.served.push(stream);
            }
            keep
        });
        lost.requests.sort_unstable();
        lost.proxies.sort_unstable();
        lost.served.sort_unstable();
        lost
    }

    /// Forgets a proxy (it ended, on either side).
    fn close_proxy(&mut self, local: StreamId) -> Option<(NodeKey, u64)> {
        let (home, remote) = self.proxies.remove(&local)?;
        self.proxy_of.remove(&(home.clone(), remote));
        Some((home, remote))
    }

    /// Requests in flight, proxies and served streams (for tests' invariants).
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (self.pending.len(), self.proxies.len(), self.served.len())
    }

    /// Whether anything still depends on `node` (for tests' invariants).
    #[cfg(test)]
    pub(crate) fn depends_on(&self, node: &NodeKey) -> bool {
        self.pending.values().any(|(to, _)| to == node)
            || self.proxies.values().any(|(home, _)| home == node)
            || self.served.values().any(|reader| reader == node)
    }
}

/// What [`Clustered`] asks the IO layer to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Out {
    /// Send to another node (in order per node). If the link cannot take it, the IO layer
    /// reports it with [`Clustered::handle_send_failed`].
    Send(NodeKey, SessionWire),
    /// The answer to a forwarded request ([`Clustered::forward`]); an opened stream is a
    /// local proxy, whose id it names.
    Answered {
        req: u64,
        result: Result<Answer, SessionError>,
    },
    /// Write an event on a local stream (this node's own or a proxy); the IO layer reports it
    /// taken with [`Clustered::handle_stream_written`].
    Deliver { stream: StreamId, event: Event },
    /// End a local stream.
    End { stream: StreamId },
}

impl PartialEq for SessionWire {
    fn eq(&self, other: &Self) -> bool {
        // Raw payloads compare by their text.
        serde_json::to_string(self).ok() == serde_json::to_string(other).ok()
    }
}

impl Eq for SessionWire {}

/// The sessions core with its cluster side: requests for sessions homed elsewhere go to their
/// home and their answers come back; streams read elsewhere and proxies of streams homed
/// elsewhere; node loss. Sans-IO like the core: inputs are method calls (`now_ms` an argument),
/// outputs come from [`Self::poll_output`].
#[derive(Debug)]
pub(crate) struct Clustered {
    /// The core, for requests on sessions homed here.
    pub(crate) sessions: Sessions,
    relay: Relay,
    outputs: std::collections::VecDeque<Out>,
}

impl Clustered {
    pub(crate) fn new(sessions: Sessions) -> Self {
        Self {
            sessions,
            relay: Relay::default(),
            outputs: std::collections::VecDeque::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn relay(&self) -> &Relay {
        &self.relay
    }

    /// The next thing for the IO layer to do.
    pub(crate) fn poll_output(&mut self) -> Option<Out> {
        self.drain();
        self.outputs.pop_front()
    }

    /// Brings the core's outputs over, in order: a stream read through another node becomes a
    /// message to that node.
    fn drain(&mut self) {
        while let Some(output) = self.sessions.poll_output() {
            let out = match output {
                super::Output::Deliver { stream, event } => match self.relay.served.get(&stream) {
                    Some(reader) => Out::Send(reader.clone(), event_wire(stream, &event)),
                    None => Out::Deliver { stream, event },
                },
                super::Output::End { stream } => match self.relay.served.remove(&stream) {
                    Some(reader) => Out::Send(reader, SessionWire::End { stream: stream.0 }),
                    None => Out::End { stream },
                },
            };
            self.outputs.push_back(out);
        }
    }

    pub(crate) fn handle_node_up(&mut self, node: NodeKey) {
        self.relay.up.insert(node);
    }

    /// `node` is gone: its requests in flight fail (as an unknown session), its proxies end,
    /// and the streams it read here close (their peers may reconnect, or leave when idle).
    pub(crate) fn handle_node_down(&mut self, node: &NodeKey, now_ms: u64) {
        self.drain();
        let lost = self.relay.node_down(node);
        if lost != Lost::default() {
            tracing::warn!(
                node = %node,
                requests = lost.requests.len(),
                proxies = lost.proxies.len(),
                served = lost.served.len(),
                "cluster: node down; the session streams that went through it end"
            );
        }
        for (req, session) in lost.requests {
            self.outputs.push_back(Out::Answered {
                req,
                result: Err(SessionError::UnknownSession(session)),
            });
        }
        for stream in lost.proxies {
            self.outputs.push_back(Out::End { stream });
        }
        for stream in lost.served {
            self.sessions.handle_stream_closed(stream, now_ms);
        }
    }

    /// Sends a request to the session's home; its answer comes as [`Out::Answered`] with the
    /// number returned. A home not up is refused at once (as an unknown session).
    pub(crate) fn forward(&mut self, home: &NodeKey, op: Op) -> Result<u64, SessionError> {
        let session = op.session().to_owned();
        if !self.relay.is_up(home) {
            debug!(node = %home, session, "the session's home is not up; refused");
            return Err(SessionError::UnknownSession(session));
        }
        self.drain();
        self.relay.next_req += 1;
        let req = self.relay.next_req;
        self.relay.pending.insert(req, (home.clone(), session));
        self.outputs
            .push_back(Out::Send(home.clone(), SessionWire::Request { req, op }));
        Ok(req)
    }

    /// The link could not take a message for `to`: a request fails at once; a served stream's
    /// event ends the stream (its events stay undelivered, for the peer's reconnect).
    pub(crate) fn handle_send_failed(&mut self, to: &NodeKey, sent: Sent, now_ms: u64) {
        self.drain();
        match sent {
            Sent::Request(req) => {
                if let Some((_, session)) = self.relay.pending.remove(&req) {
                    self.outputs.push_back(Out::Answered {
                        req,
                        result: Err(SessionError::UnknownSession(session)),
                    });
                }
            }
            Sent::Event(stream) => {
                if self.relay.served.get(&StreamId(stream)) == Some(to) {
                    self.relay.served.remove(&StreamId(stream));
                    self.sessions.handle_stream_closed(StreamId(stream), now_ms);
                    self.outputs
                        .push_back(Out::Send(to.clone(), SessionWire::End { stream }));
                }
            }
            // A lost note or answer: the other side's stream or request ends with this node's
            // loss if the link does not recover.
            Sent::Other => warn!(node = %to, "a session message for another node dropped"),
        }
    }

    /// A local stream's writer took every event up to `upto`.
    pub(crate) fn handle_stream_written(&mut self, stream: StreamId, upto: u64, now_ms: u64) {
        match self.relay.proxies.get(&stream).cloned() {
            Some((home, remote)) => {
                self.drain();
                self.outputs.push_back(Out::Send(
                    home,
                    SessionWire::Written {
                        stream: remote,
                        id: upto,
                    },
                ));
            }
            None => self.sessions.handle_stream_written(stream, upto, now_ms),
        }
    }

    /// A local stream ended on the client's side.
    pub(crate) fn handle_stream_closed(&mut self, stream: StreamId, now_ms: u64) {
        match self.relay.close_proxy(stream) {
            Some((home, remote)) => {
                self.drain();
                self.outputs
                    .push_back(Out::Send(home, SessionWire::Closed { stream: remote }));
            }
            None => self.sessions.handle_stream_closed(stream, now_ms),
        }
    }

    /// A message from another node. Anything from a node not up is dropped (its end was
    /// handled when it went down, or it has not come up yet).
    pub(crate) fn handle_wire(&mut self, from: &NodeKey, wire: SessionWire, now_ms: u64) {
        if !self.relay.is_up(from) {
            debug!(node = %from, "a session message from a node not up; dropped");
            return;
        }
        self.drain();
        match wire {
            SessionWire::Request { req, op } => {
                let result = serve(&mut self.sessions, op, now_ms);
                if let Ok(Answer::Opened { stream }) = result {
                    self.relay.served.insert(StreamId(stream), from.clone());
                }
                // The answer goes before the stream's backlog, which the core still holds.
                self.outputs.push_back(Out::Send(
                    from.clone(),
                    SessionWire::Reply {
                        req,
                        result: result.map_err(Into::into),
                    },
                ));
            }
            SessionWire::Reply { req, result } => {
                match self.relay.pending.get(&req) {
                    Some((to, _)) if to == from => {}
                    _ => {
                        debug!(node = %from, req, "an answer nobody waits for; dropped");
                        return;
                    }
                }
                self.relay.pending.remove(&req);
                let result = match result {
                    Ok(Answer::Opened { stream }) => {
                        let local = StreamId(FIRST_PROXY + self.relay.next_proxy);
                        self.relay.next_proxy += 1;
                        self.relay.proxies.insert(local, (from.clone(), stream));
                        self.relay.proxy_of.insert((from.clone(), stream), local);
                        Ok(Answer::Opened { stream: local.0 })
                    }
                    Ok(answer) => Ok(answer),
                    Err(e) => Err(e.into()),
                };
                self.outputs.push_back(Out::Answered { req, result });
            }
            SessionWire::Event { stream, id, data } => {
                if let Some(&local) = self.relay.proxy_of.get(&(from.clone(), stream)) {
                    self.outputs.push_back(Out::Deliver {
                        stream: local,
                        event: Event {
                            id,
                            data: data.into(),
                        },
                    });
                }
            }
            SessionWire::Written { stream, id } => {
                if self.relay.served.get(&StreamId(stream)) == Some(from) {
                    self.sessions
                        .handle_stream_written(StreamId(stream), id, now_ms);
                }
            }
            SessionWire::Closed { stream } => {
                if self.relay.served.get(&StreamId(stream)) == Some(from) {
                    self.relay.served.remove(&StreamId(stream));
                    self.sessions.handle_stream_closed(StreamId(stream), now_ms);
                }
            }
            SessionWire::End { stream } => {
                if let Some(local) = self.relay.proxy_of.get(&(from.clone(), stream)).copied() {
                    self.relay.close_proxy(local);
                    self.outputs.push_back(Out::End { stream: local });
                }
            }
        }
    }
}

/// What a message was, for [`Clustered::handle_send_failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Request(u64),
    Event(u64),
    Other,
}

impl SessionWire {
    pub(crate) fn summary(&self) -> Sent {
        match self {
            Self::Request { req, .. } => Sent::Request(*req),
            Self::Event { stream, .. } => Sent::Event(*stream),
            _ => Sent::Other,
        }
    }
}

impl Op {
    /// The session the request is for.
    pub(crate) fn session(&self) -> &str {
        match self {
            Self::Register { session, .. }
            | Self::Unregister { session, .. }
            | Self::OpenStream { session, .. }
            | Self::Message { session, .. } => session,
        }
    }
}

/// An event as it crosses the link.
fn event_wire(stream: StreamId, event: &Event) -> SessionWire {
    SessionWire::Event {
        stream: stream.0,
        id: event.id,
        data: event.data.to_string(),
    }
}

/// Where a session lives, as far as this node can tell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Home {
    Here,
    There(NodeKey),
}

/// Refreshing a claim this often keeps it while its session lives.
const CLAIM_TTL: Duration = Duration::from_secs(60);

/// Sets the claim to ARGV[1] for ARGV[3] ms if nobody holds it or it holds ARGV[2] (a dead
/// holder being taken over); answers the holder after. Atomic, so two nodes never both win.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] or cur == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return ARGV[1]
end
return cur
";

/// The home of the session whose claim is `key`, as `me` sees it (`up` tells which nodes are
/// up); with `claim`, a claim nobody holds, or a holder not up (dead), becomes `me`'s.
pub(super) async fn resolve(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    me: &NodeKey,
    claim: bool,
    up: impl Fn(&NodeKey) -> bool,
) -> redis::RedisResult<Home> {
    let mine = holder(me);
    let mut dead = String::new();
    // A takeover races other nodes at most once each; a few rounds always settle.
    for _ in 0..4 {
        let current: Option<String> = if claim {
            redis::Script::new(CLAIM)
                .key(key)
                .arg(&mine)
                .arg(&dead)
                .arg(ttl_ms())
                .invoke_async(conn)
                .await?
        } else {
            redis::cmd("GET").arg(key).query_async(conn).await?
        };
        let Some(current) = current else {
            return Ok(Home::Here);
        };
        if current == mine {
            return Ok(Home::Here);
        }
        match parse_holder(&current) {
            Some(node) if up(&node) => return Ok(Home::There(node)),
            // Unknown here: the core answers as for any unknown session.
            _ if !claim => return Ok(Home::Here),
            _ => {
                debug!(
                    key,
                    holder = current,
                    "cluster: the session's home is gone; taking it over"
                );
                dead = current;
            }
        }
    }
    Ok(Home::Here)
}

/// Renews `me`'s claims among `keys` (a claim another node holds now is left alone).
pub(super) async fn refresh(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
    me: &NodeKey,
) -> redis::RedisResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mine = holder(me);
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("EVAL")
            .arg(CLAIM)
            .arg(1)
            .arg(key)
            .arg(&mine)
            .arg("")
            .arg(ttl_ms())
            .ignore();
    }
    pipe.query_async::<()>(conn).await
}

/// A Redis call that does not answer within 2 s is an error (a request never hangs on Redis).
async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
}

fn ttl_ms() -> u64 {
    u64::try_from(CLAIM_TTL.as_millis()).unwrap_or(u64::MAX)
}

/// The Redis side of the home claims, shared by every [`super::task::SessionsHandle`].
pub(crate) struct Homes {
    client: redis::Client,
    /// Made on first use, and again after an error (a multiplexed connection does not
    /// reconnect by itself once Redis went away).
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    prefix: String,
    link: crate::cluster::link_task::LinkHandle<crate::cluster::bridge::Wire>,
    up: tokio::sync::watch::Receiver<HashSet<NodeKey>>,
}

impl std::fmt::Debug for Homes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Homes")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The name a node incarnation is stored as in a claim.
fn holder(key: &NodeKey) -> String {
    format!("{}/{}", key.id, key.inc)
}

fn parse_holder(value: &str) -> Option<NodeKey> {
    let (id, inc) = value.rsplit_once('/')?;
    Some(NodeKey::new(id, inc.parse().ok()?))
}

impl Homes {
    pub(crate) fn new(
        redis_url: &str,
        prefix: &str,
        link: crate::cluster::link_task::LinkHandle<crate::cluster::bridge::Wire>,
        up: tokio::sync::watch::Receiver<HashSet<NodeKey>>,
    ) -> redis::RedisResult<Arc<Self>> {
        Ok(Arc::new(Self {
            client: redis::Client::open(redis_url)?,
            conn: tokio::sync::Mutex::new(None),
            prefix: prefix.to_owned(),
            link,
            up,
        }))
    }

    async fn conn(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = &*slot {
            return Ok(conn.clone());
        }
        let conn = bounded(self.client.get_multiplexed_async_connection()).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// After an error the next request connects afresh.
    async fn forget<T>(&self, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if result.is_err() {
            *self.conn.lock().await = None;
        }
        result
    }

    fn key(&self, session: &str) -> String {
        format!("{}:session:{session}", self.prefix)
    }

    /// The home of `session`; with `claim`, a session nobody (alive) holds becomes this node's.
    /// Without Redis, this node serves the request itself (as a node alone would).
    pub(crate) async fn home(&self, session: &str, claim: bool) -> Home {
        // A connection broken by a Redis restart fails once; the retry connects afresh.
        let mut result = self.lookup(session, claim).await;
        if result.is_err() {
            result = self.lookup(session, claim).await;
        }
        match result {
            Ok(home) => home,
            Err(e) => {
                warn!(
                    session,
                    "cluster: the session's home is unknown ({e}); served here"
                );
                Home::Here
            }
        }
    }

    async fn lookup(&self, session: &str, claim: bool) -> redis::RedisResult<Home> {
        let me = self.link.me();
        let mut conn = self.conn().await?;
        let up = |node: &NodeKey| self.up.borrow().contains(node);
        let result = bounded(resolve(&mut conn, &self.key(session), &me, claim, up)).await;
        self.forget(result).await
    }

    /// Keeps the claims of `sessions` (homed here) alive.
    pub(crate) async fn refresh(&self, sessions: &[String]) -> redis::RedisResult<()> {
        let me = self.link.me();
        let mut conn = self.conn().await?;
        let keys: Vec<String> = sessions.iter().map(|s| self.key(s)).collect();
        let result = bounded(refresh(&mut conn, &keys, &me)).await;
        self.forget(result).await
    }

    /// How often [`Self::refresh`] runs.
    pub(crate) fn refresh_period() -> Duration {
        CLAIM_TTL / 3
    }
}
