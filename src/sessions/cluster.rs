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

/// Runs a forwarded request on the home's core. A stream opened here is read by `from`'s node:
/// the caller records it with [`Relay::served_stream`].
pub(crate) fn serve(core: &mut Sessions, op: Op, now_ms: u64) -> Result<Answer, SessionError> {
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
    /// Requests sent to it and not answered: each fails.
    pub(crate) requests: Vec<u64>,
    /// Proxies of its streams: each ends (the SSE response ends).
    pub(crate) proxies: Vec<StreamId>,
    /// Streams homed here and read through it: each closes, as when a client goes away.
    pub(crate) served: Vec<StreamId>,
}

/// The sans-IO bookkeeping of the session API across nodes, for one node.
#[derive(Debug, Default)]
pub(crate) struct Relay {
    up: HashSet<NodeKey>,
    next_req: u64,
    /// Request → the node it went to.
    pending: HashMap<u64, NodeKey>,
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

    pub(crate) fn node_up(&mut self, node: NodeKey) {
        self.up.insert(node);
    }

    /// `node` is gone: everything that depended on it, to be undone by the caller.
    pub(crate) fn node_down(&mut self, node: &NodeKey) -> Lost {
        self.up.remove(node);
        let mut lost = Lost::default();
        self.pending.retain(|&req, to| {
            let keep = to != node;
            if !keep {
                lost.requests.push(req);
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

    /// A request is about to go to `home`: its number, or `None` if `home` is not up.
    pub(crate) fn request(&mut self, home: &NodeKey) -> Option<u64> {
        if !self.is_up(home) {
            return None;
        }
        self.next_req += 1;
        self.pending.insert(self.next_req, home.clone());
        Some(self.next_req)
    }

    /// `from` answered `req`: whether that answer was awaited (from that node).
    pub(crate) fn answered(&mut self, from: &NodeKey, req: u64) -> bool {
        match self.pending.get(&req) {
            Some(to) if to == from => {
                self.pending.remove(&req);
                true
            }
            _ => false,
        }
    }

    /// `home` opened its stream `remote` for a request of this node: the local proxy's id.
    pub(crate) fn open_proxy(&mut self, home: &NodeKey, remote: u64) -> StreamId {
        let local = StreamId(FIRST_PROXY + self.next_proxy);
        self.next_proxy += 1;
        self.proxies.insert(local, (home.clone(), remote));
        self.proxy_of.insert((home.clone(), remote), local);
        local
    }

    /// The local proxy of `home`'s stream `remote`, if there is one.
    pub(crate) fn proxy(&self, home: &NodeKey, remote: u64) -> Option<StreamId> {
        self.proxy_of.get(&(home.clone(), remote)).copied()
    }

    /// Where a local proxy's notes go: its home and the home's stream id.
    pub(crate) fn proxied(&self, local: StreamId) -> Option<(NodeKey, u64)> {
        self.proxies.get(&local).cloned()
    }

    /// Forgets a proxy (it ended, on either side).
    pub(crate) fn close_proxy(&mut self, local: StreamId) -> Option<(NodeKey, u64)> {
        let (home, remote) = self.proxies.remove(&local)?;
        self.proxy_of.remove(&(home.clone(), remote));
        Some((home, remote))
    }

    /// This node's core opened `stream` for a request of `reader`.
    pub(crate) fn served_stream(&mut self, stream: StreamId, reader: &NodeKey) {
        self.served.insert(stream, reader.clone());
    }

    /// The node reading this node's `stream`, if another node reads it.
    pub(crate) fn reader(&self, stream: StreamId) -> Option<&NodeKey> {
        self.served.get(&stream)
    }

    /// `reader`'s stream ended (here or there): whether it was one it read.
    pub(crate) fn end_served(&mut self, stream: StreamId, reader: Option<&NodeKey>) -> bool {
        match (self.served.get(&stream), reader) {
            (Some(r), Some(from)) if r != from => false,
            (Some(_), _) => {
                self.served.remove(&stream);
                true
            }
            (None, _) => false,
        }
    }

    /// Numbers in use (for the property test's invariants).
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (self.pending.len(), self.proxies.len(), self.served.len())
    }
}

/// An event as it crosses the link.
pub(crate) fn event_wire(stream: StreamId, event: &Event) -> SessionWire {
    SessionWire::Event {
        stream: stream.0,
        id: event.id,
        data: event.data.to_string(),
    }
}

/// Where a session lives, as far as this node can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The Redis side of the home claims, shared by every [`super::task::SessionsHandle`].
pub(crate) struct Homes {
    client: redis::Client,
    conn: tokio::sync::OnceCell<redis::aio::MultiplexedConnection>,
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
            conn: tokio::sync::OnceCell::new(),
            prefix: prefix.to_owned(),
            link,
            up,
        }))
    }

    async fn conn(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        self.conn
            .get_or_try_init(|| async {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    self.client.get_multiplexed_async_connection(),
                )
                .await
                .map_err(|_| {
                    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
                })?
            })
            .await
            .cloned()
    }

    fn key(&self, session: &str) -> String {
        format!("{}:session:{session}", self.prefix)
    }

    /// The home of `session`; with `claim`, a session nobody (alive) holds becomes this node's.
    /// Without Redis, this node serves the request itself (as a node alone would).
    pub(crate) async fn home(&self, session: &str, claim: bool) -> Home {
        match self.lookup(session, claim).await {
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
        let mine = holder(&me);
        let mut conn = self.conn().await?;
        let key = self.key(session);
        let mut dead = String::new();
        // A takeover races other nodes at most once each; a few rounds always settle.
        for _ in 0..4 {
            let current: Option<String> = if claim {
                redis::Script::new(CLAIM)
                    .key(&key)
                    .arg(&mine)
                    .arg(&dead)
                    .arg(u64::try_from(CLAIM_TTL.as_millis()).unwrap_or(u64::MAX))
                    .invoke_async(&mut conn)
                    .await?
            } else {
                redis::cmd("GET").arg(&key).query_async(&mut conn).await?
            };
            let Some(current) = current else {
                return Ok(Home::Here);
            };
            if current == mine {
                return Ok(Home::Here);
            }
            match parse_holder(&current) {
                Some(node) if self.up.borrow().contains(&node) => return Ok(Home::There(node)),
                _ if !claim => return Ok(Home::Here),
                _ => {
                    debug!(
                        session,
                        holder = current,
                        "cluster: the session's home is gone; taking it over"
                    );
                    dead = current;
                }
            }
        }
        Ok(Home::Here)
    }

    /// Keeps the claims of `sessions` (homed here) alive.
    pub(crate) async fn refresh(&self, sessions: &[String]) -> redis::RedisResult<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let mine = holder(&self.link.me());
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        let ttl = u64::try_from(CLAIM_TTL.as_millis()).unwrap_or(u64::MAX);
        for session in sessions {
            pipe.cmd("EVAL")
                .arg(CLAIM)
                .arg(1)
                .arg(self.key(session))
                .arg(&mine)
                .arg("")
                .arg(ttl)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    }

    /// How often [`Self::refresh`] runs.
    pub(crate) fn refresh_period() -> Duration {
        CLAIM_TTL / 3
    }
}
