//! The actor that owns the [`Sessions`] core and one channel per open SSE stream. HTTP handlers
//! reach it through a cloneable [`SessionsHandle`] (commands with oneshot replies). It never
//! awaits a stream: the core hands a stream only what fits its window
//! ([`super::STREAM_WINDOW_BYTES`]), and the stream's body reports each event it takes
//! ([`StreamGuard::written`]), which lets the core hand it more.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::cluster::{Answer, Clustered, Home, Homes, Op, Out, SessionWire};
use super::{EVENT_OVERHEAD, Event, Limits, Registered, SessionError, Sessions, StreamId};
use crate::cluster::bridge::Wire;
use crate::cluster::link::{LinkEvent, NodeKey};
use crate::cluster::link_task::LinkHandle;

/// Requests to the sessions task, each with its reply channel.
#[derive(Debug)]
enum Command {
    Register {
        session: String,
        peer: String,
        client: IpAddr,
        /// The session's home, if another node (cluster mode).
        home: Option<NodeKey>,
        credential: Credential,
        reply: oneshot::Sender<Result<(Registered, Option<String>), SessionError>>,
    },
    Unregister {
        session: String,
        peer: String,
        /// The session's home, if another node (cluster mode).
        home: Option<NodeKey>,
        presented: Vec<String>,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    OpenStream {
        session: String,
        peer: String,
        presented: Vec<String>,
        /// The session's home, if another node (cluster mode).
        home: Option<NodeKey>,
        last_event_id: Option<u64>,
        reply: oneshot::Sender<Result<OpenedStream, SessionError>>,
    },
    Message {
        session: String,
        from: String,
        presented: Vec<String>,
        target: String,
        kind: String,
        /// The session's home, if another node (cluster mode).
        home: Option<NodeKey>,
        payload: Option<Box<RawValue>>,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    /// The sessions homed here (to keep their claims alive).
    SessionIds {
        reply: oneshot::Sender<Result<Vec<String>, SessionError>>,
    },
    /// The figures the metrics report: open sessions, events queued.
    Gauges {
        reply: oneshot::Sender<Result<(usize, usize), SessionError>>,
    },
}

/// What a request presents as the peer's credential (`peer_tokens`).
#[derive(Debug, Default)]
pub struct Credential {
    /// The tokens the request carries (`?token=`, `Authorization: Bearer`).
    pub presented: Vec<String>,
    /// With `peer_tokens`, a new random token: it becomes the peer's if the peer has none.
    pub fresh: Option<String>,
}

/// The sessions task has stopped (the server is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is shutting down")]
pub struct Unavailable;

/// A request's outcome: refused by the core, or the task is gone.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Refused(#[from] SessionError),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// A freshly opened stream: `events` brings the backlog, then new events. It ends when the
/// stream is replaced, its peer leaves, or the server stops. The body reports each event it
/// takes with `guard.written`; dropping `guard` (with the body) tells the task the stream closed.
#[derive(Debug)]
pub struct OpenedStream {
    pub stream: StreamId,
    pub events: mpsc::Receiver<Event>,
    pub guard: StreamGuard,
}

/// What a stream's body tells the task.
#[derive(Debug)]
enum StreamNote {
    /// The body took this event (and every one before it) for writing.
    Written {
        stream: StreamId,
        id: u64,
    },
    Closed(StreamId),
}

/// A stream's link back to the task: [`Self::written`] as its body takes events, and the close
/// when dropped.
#[derive(Debug)]
pub struct StreamGuard {
    stream: StreamId,
    // Unbounded because Drop cannot wait. A stream sends one note per event it was handed (at
    // most a window's worth at a time) and one close, so the channel stays short.
    notes: mpsc::UnboundedSender<StreamNote>,
}

impl StreamGuard {
    /// The body took event `id` for writing; the stream may be handed more.
    pub fn written(&self, id: u64) {
        let _ = self.notes.send(StreamNote::Written {
            stream: self.stream,
            id,
        });
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let _ = self.notes.send(StreamNote::Closed(self.stream));
    }
}

/// A cloneable handle to the sessions task.
#[derive(Debug, Clone)]
pub struct SessionsHandle {
    tx: mpsc::Sender<Command>,
    /// In cluster mode: where sessions live.
    homes: Option<Arc<Homes>>,
}

/// How many requests may wait for the task.
const COMMAND_QUEUE: usize = 4096;

impl SessionsHandle {
    /// The node `session` lives on when it is not this one (cluster mode); with `claim`, a
    /// session nobody holds becomes this node's.
    async fn home(&self, session: &str, claim: bool) -> Option<NodeKey> {
        match &self.homes {
            Some(homes) => match homes.home(session, claim).await {
                Home::Here => None,
                Home::There(node) => Some(node),
            },
            None => None,
        }
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, SessionError>>) -> Command,
    ) -> Result<T, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(command(reply))
            .await
            .map_err(|_| Unavailable)?;
        Ok(answer.await.map_err(|_| Unavailable)??)
    }

    /// Registers `peer`; a new session is charged to `client`'s address. Also answers the
    /// peer's token, with `peer_tokens` (`credential.fresh`).
    pub async fn register(
        &self,
        session: &str,
        peer: &str,
        client: IpAddr,
        credential: Credential,
    ) -> Result<(Registered, Option<String>), RequestError> {
        let home = self.home(session, true).await;
        let (session, peer) = (session.to_owned(), peer.to_owned());
        self.request(|reply| Command::Register {
            home,
            session,
            peer,
            client,
            credential,
            reply,
        })
        .await
    }

    pub async fn unregister(
        &self,
        session: &str,
        peer: &str,
        presented: Vec<String>,
    ) -> Result<(), RequestError> {
        let home = self.home(session, false).await;
        let (session, peer) = (session.to_owned(), peer.to_owned());
        self.request(|reply| Command::Unregister {
            home,
            session,
            peer,
            presented,
            reply,
        })
        .await
    }

    pub async fn open_stream(
        &self,
        session: &str,
        peer: &str,
        presented: Vec<String>,
        last_event_id: Option<u64>,
    ) -> Result<OpenedStream, RequestError> {
        let home = self.home(session, false).await;
        let (session, peer) = (session.to_owned(), peer.to_owned());
        self.request(|reply| Command::OpenStream {
            home,
            session,
            peer,
            presented,
            last_event_id,
            reply,
        })
        .await
    }

    pub async fn message(
        &self,
        session: &str,
        from: &str,
        presented: Vec<String>,
        target: String,
        kind: String,
        payload: Option<Box<RawValue>>,
    ) -> Result<(), RequestError> {
        let home = self.home(session, false).await;
        let (session, from) = (session.to_owned(), from.to_owned());
        self.request(|reply| Command::Message {
            home,
            session,
            from,
            presented,
            target,
            kind,
            payload,
            reply,
        })
        .await
    }
}

impl SessionsHandle {
    /// Open sessions and the events queued for delivery over all of them (for `/metrics`).
    pub async fn gauges(&self) -> Result<(usize, usize), RequestError> {
        self.request(|reply| Command::Gauges { reply }).await
    }

    async fn session_ids(&self) -> Result<Vec<String>, RequestError> {
        self.request(|reply| Command::SessionIds { reply }).await
    }
}

/// Starts the sessions task. It ends on `shutdown` or when every handle is dropped; its open
/// streams end with it.
pub fn spawn(limits: Limits, shutdown: CancellationToken) -> (SessionsHandle, JoinHandle<()>) {
    spawn_clustered(limits, None, shutdown)
}

/// What the sessions task needs of a cluster: the link (to send), what the link brings for it
/// (node up and down, session messages from other nodes), and Redis (the home claims).
pub(crate) struct ClusterWiring {
    pub(crate) link: LinkHandle<Wire>,
    pub(crate) inputs: mpsc::UnboundedReceiver<LinkEvent<SessionWire>>,
    pub(crate) redis_url: String,
    pub(crate) key_prefix: String,
}

/// [`spawn`], in cluster mode when `cluster` is set. A Redis URL that does not parse (checked
/// at start-up already) leaves the sessions on this node alone.
pub(crate) fn spawn_clustered(
    limits: Limits,
    cluster: Option<ClusterWiring>,
    shutdown: CancellationToken,
) -> (SessionsHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (up_tx, up_rx) = tokio::sync::watch::channel(HashSet::new());
    let (link, inputs, homes) = match cluster {
        Some(c) => match Homes::new(&c.redis_url, &c.key_prefix, c.link.clone(), up_rx) {
            Ok(homes) => (Some(c.link), Some(c.inputs), Some(homes)),
            Err(e) => {
                warn!("cluster: sessions stay on this node ({e})");
                (None, None, None)
            }
        },
        None => (None, None, None),
    };
    let handle = SessionsHandle {
        tx,
        homes: homes.clone(),
    };
    if let Some(homes) = homes {
        tokio::spawn(refresh_claims(handle.clone(), homes, shutdown.clone()));
    }
    let cluster = Cluster {
        link,
        waiting: HashMap::new(),
        up: up_tx,
    };
    let task = tokio::spawn(run(limits, rx, inputs, cluster, shutdown));
    (handle, task)
}

/// Keeps the home claims of the sessions homed here alive while they live.
async fn refresh_claims(handle: SessionsHandle, homes: Arc<Homes>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Homes::refresh_period());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let Ok(ids) = handle.session_ids().await else {
            return;
        };
        if let Err(e) = homes.refresh(&ids).await {
            warn!("cluster: the sessions' home claims were not refreshed ({e})");
        }
    }
}

/// A request forwarded to another node, waiting for its answer.
#[derive(Debug)]
enum Waiting {
    Register(oneshot::Sender<Result<(Registered, Option<String>), SessionError>>),
    Done(oneshot::Sender<Result<(), SessionError>>),
    Open(oneshot::Sender<Result<OpenedStream, SessionError>>),
}

/// The task's cluster side: the link and the requests waiting for another node.
struct Cluster {
    link: Option<LinkHandle<Wire>>,
    /// Request number → who waits for the answer.
    waiting: HashMap<u64, Waiting>,
    /// The nodes up, for the handles' home look-ups.
    up: tokio::sync::watch::Sender<HashSet<NodeKey>>,
}

struct Task {
    node: Clustered,
    streams: HashMap<StreamId, mpsc::Sender<Event>>,
    /// Enough for a whole window of the smallest events, so a send never finds a channel full.
    stream_capacity: usize,
    notes_tx: mpsc::UnboundedSender<StreamNote>,
    start: Instant,
    cluster: Cluster,
}

impl Task {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A new stream's channel and guard.
    fn open(&mut self, stream: StreamId) -> OpenedStream {
        let (tx, events) = mpsc::channel(self.stream_capacity);
        self.streams.insert(stream, tx);
        OpenedStream {
            stream,
            events,
            guard: StreamGuard {
                stream,
                notes: self.notes_tx.clone(),
            },
        }
    }

    /// Sends `op` to `home` and keeps `waiting` for the answer.
    fn forward(&mut self, home: &NodeKey, op: Op, waiting: Waiting) {
        match self.node.forward(home, op) {
            Ok(req) => {
                self.cluster.waiting.insert(req, waiting);
            }
            Err(e) => fail(waiting, e),
        }
    }

    fn handle(&mut self, command: Command) {
        let now = self.now_ms();
        match command {
            Command::Register {
                home: Some(home),
                session,
                peer,
                client,
                credential,
                reply,
            } => {
                let op = Op::Register {
                    session,
                    peer,
                    client,
                    presented: credential.presented,
                    fresh: credential.fresh,
                };
                self.forward(&home, op, Waiting::Register(reply));
            }
            Command::Register {
                home: None,
                session,
                peer,
                client,
                credential,
                reply,
            } => {
                let core = &mut self.node.sessions;
                let registered = core
                    .authorize(&session, &peer, &credential.presented)
                    .and_then(|()| core.handle_register(&session, &peer, client, now))
                    .map(|registered| {
                        let token = credential
                            .fresh
                            .and_then(|fresh| core.peer_token(&session, &peer, fresh));
                        (registered, token)
                    });
                let _ = reply.send(registered);
            }
            Command::Unregister {
                home: Some(home),
                session,
                peer,
                presented,
                reply,
            } => {
                let op = Op::Unregister {
                    session,
                    peer,
                    presented,
                };
                self.forward(&home, op, Waiting::Done(reply));
            }
            Command::Unregister {
                home: None,
                session,
                peer,
                presented,
                reply,
            } => {
                let core = &mut self.node.sessions;
                let _ = reply.send(
                    core.authorize(&session, &peer, &presented)
                        .and_then(|()| core.handle_unregister(&session, &peer, now)),
                );
            }
            Command::OpenStream {
                home: Some(home),
                session,
                peer,
                presented,
                last_event_id,
                reply,
            } => {
                let op = Op::OpenStream {
                    session,
                    peer,
                    presented,
                    last_event_id,
                };
                self.forward(&home, op, Waiting::Open(reply));
            }
            Command::OpenStream {
                home: None,
                session,
                peer,
                presented,
                last_event_id,
                reply,
            } => {
                let core = &mut self.node.sessions;
                let opened = core
                    .authorize(&session, &peer, &presented)
                    .and_then(|()| core.handle_open_stream(&session, &peer, last_event_id, now))
                    .map(|stream| self.open(stream));
                // If the handler is gone, the guard inside drops and reports the close.
                let _ = reply.send(opened);
            }
            Command::Message {
                home: Some(home),
                session,
                from,
                presented,
                target,
                kind,
                payload,
                reply,
            } => {
                let op = Op::Message {
                    session,
                    from,
                    presented,
                    target,
                    kind,
                    payload,
                };
                self.forward(&home, op, Waiting::Done(reply));
            }
            Command::Message {
                home: None,
                session,
                from,
                presented,
                target,
                kind,
                payload,
                reply,
            } => {
                let core = &mut self.node.sessions;
                let result = core.authorize(&session, &from, &presented).and_then(|()| {
                    core.handle_message(&session, &from, &target, &kind, payload.as_deref(), now)
                });
                let _ = reply.send(result);
            }
            Command::SessionIds { reply } => {
                let _ = reply.send(Ok(self.node.sessions.session_ids()));
            }
            Command::Gauges { reply } => {
                let _ = reply.send(Ok((
                    self.node.sessions.session_count(),
                    self.node.sessions.queued_events(),
                )));
            }
        }
    }

    fn note(&mut self, note: StreamNote) {
        let now = self.now_ms();
        match note {
            StreamNote::Written { stream, id } => self.node.handle_stream_written(stream, id, now),
            StreamNote::Closed(stream) => {
                self.streams.remove(&stream);
                self.node.handle_stream_closed(stream, now);
            }
        }
    }

    /// One event of the link for the sessions.
    fn link_event(&mut self, event: LinkEvent<SessionWire>) {
        let now = self.now_ms();
        match event {
            LinkEvent::Connected | LinkEvent::Disconnected => {}
            LinkEvent::Up(node) => {
                self.cluster.up.send_modify(|up| {
                    up.insert(node.clone());
                });
                self.node.handle_node_up(node);
            }
            LinkEvent::Down(node) => {
                self.cluster.up.send_modify(|up| {
                    up.remove(&node);
                });
                self.node.handle_node_down(&node, now);
            }
            LinkEvent::Message(from, wire) => self.node.handle_wire(&from, wire, now),
        }
    }

    /// The home's answer to a forwarded request, to whoever waits for it.
    fn answer(&mut self, req: u64, result: Result<Answer, SessionError>) {
        let Some(waiting) = self.cluster.waiting.remove(&req) else {
            return;
        };
        match (waiting, result) {
            (Waiting::Register(reply), Ok(Answer::Registered { registered, token })) => {
                let _ = reply.send(Ok((registered, token)));
            }
            (Waiting::Done(reply), Ok(Answer::Done)) => {
                let _ = reply.send(Ok(()));
            }
            (Waiting::Open(reply), Ok(Answer::Opened { stream })) => {
                let opened = self.open(StreamId(stream));
                // If the handler is gone, the guard inside drops and closes the proxy.
                let _ = reply.send(Ok(opened));
            }
            (waiting, Err(e)) => fail(waiting, e),
            (waiting, Ok(answer)) => {
                warn!(?answer, "an answer of the wrong kind from another node");
                fail(waiting, SessionError::UnknownSession(String::new()));
            }
        }
    }

    /// Carries out every pending output without waiting.
    fn dispatch(&mut self) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Out::Send(to, wire) => {
                    let Some(link) = &self.cluster.link else {
                        continue;
                    };
                    let sent = wire.summary();
                    if link.send(&to, Wire::Session(wire)).is_err() {
                        warn!(node = %to, "cluster link queue full; a session message not sent");
                        let now = self.now_ms();
                        self.node.handle_send_failed(&to, sent, now);
                    }
                }
                Out::Answered { req, result } => self.answer(req, result),
                Out::Deliver { stream, event } => {
                    let Some(tx) = self.streams.get(&stream) else {
                        continue;
                    };
                    match tx.try_send(event) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // The window makes this unreachable; ending the stream keeps every
                            // event undelivered rather than lose one.
                            warn!(%stream, "event stream channel full; ending it");
                            self.streams.remove(&stream);
                            let now = self.now_ms();
                            self.node.handle_stream_closed(stream, now);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            self.streams.remove(&stream);
                            let now = self.now_ms();
                            self.node.handle_stream_closed(stream, now);
                        }
                    }
                }
                Out::End { stream } => {
                    // Dropping the sender ends the response body once what it holds is written.
                    self.streams.remove(&stream);
                }
            }
        }
    }
}

/// Answers a waiting request with a refusal.
fn fail(waiting: Waiting, e: SessionError) {
    match waiting {
        Waiting::Register(reply) => {
            let _ = reply.send(Err(e));
        }
        Waiting::Done(reply) => {
            let _ = reply.send(Err(e));
        }
        Waiting::Open(reply) => {
            let _ = reply.send(Err(e));
        }
    }
}

/// The next event of the link for the sessions; never, on a node alone.
async fn next_input(
    inputs: &mut Option<mpsc::UnboundedReceiver<LinkEvent<SessionWire>>>,
) -> Option<LinkEvent<SessionWire>> {
    match inputs {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn run(
    limits: Limits,
    mut rx: mpsc::Receiver<Command>,
    mut inputs: Option<mpsc::UnboundedReceiver<LinkEvent<SessionWire>>>,
    cluster: Cluster,
    shutdown: CancellationToken,
) {
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let ticking = !idle.is_zero();
    // A quarter of the timeout keeps expiry within 25 % late, between 10 ms and 1 s.
    let period = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (notes_tx, mut notes_rx) = mpsc::unbounded_channel();
    let mut task = Task {
        stream_capacity: limits.stream_window_bytes / EVENT_OVERHEAD + 2,
        node: Clustered::new(Sessions::new(limits)),
        streams: HashMap::new(),
        notes_tx,
        start: Instant::now(),
        cluster,
    };
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            command = rx.recv() => match command {
                None => break,
                Some(command) => task.handle(command),
            },
            Some(note) = notes_rx.recv() => task.note(note),
            input = next_input(&mut inputs) => match input {
                Some(event) => task.link_event(event),
                // The router task (and its bridge) stopped: the server is going down.
                None => inputs = None,
            },
            _ = ticker.tick(), if ticking => {
                let now = task.now_ms();
                task.node.sessions.handle_tick(now);
            }
        }
        task.dispatch();
    }
    debug!("sessions task ended");
}
