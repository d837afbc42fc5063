//! The cluster link's IO: the task that drives the sans-IO [`Link`] against Redis. It appends
//! envelopes to the other nodes' inboxes, reads this node's inbox, heart-beats, keeps this
//! node in the nodes hash, and reconnects with back-off. It never decides who is alive or what
//! a message means (the core does) and never awaits the server, only Redis.
//!
//! Why Redis Streams and not pub/sub: pub/sub drops whatever is published while a subscriber is
//! disconnected (a reconnect, a slow reader cut off by its output buffer limit), with no trace.
//! A stream keeps each entry until it is read (up to its `MAXLEN` bound), and the reader resumes
//! from the id of the last entry it processed, so a short outage loses nothing; and what is
//! lost anyway (the bound trimmed it, Redis restarted empty) shows as a gap in the sequence
//! numbers, which the core turns into the death of the sender's incarnation instead of a
//! silent skip.
//!
//! Redis keys, under `<key_prefix>:`: `nodes` (hash node id → incarnation: discovery) and
//! `inbox:<node id>` (one stream per node, field `m` holding the envelope's JSON).
//!
//! Two connections: a multiplexed one for writes (the queue is drained into pipelines of up to
//! [`BATCH`] commands, one round trip each, one pipeline in flight at a time so that order per
//! destination holds, and a failed one is sent again: the receiver drops what it already had by
//! sequence number), and one only for the blocking `XREAD` of the inbox, in its own task.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadReply};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::link::{Link, LinkEvent, NodeKey, Output};

/// Commands per pipeline (one round trip).
const BATCH: usize = 512;
/// Writes waiting for Redis beyond which the link stops taking sends from the server (they
/// then fail with [`Full`] once the handle's queue is full too).
const MAX_PENDING: usize = 65_536;
/// The handle's queue.
const QUEUE: usize = 16_384;
/// The events channel to the server.
const EVENTS: usize = 16_384;
/// Entries per `XREAD`.
const READ_COUNT: usize = 1_000;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Removes a node's entry from the nodes hash only if it still holds the dead incarnation: a
/// node that came back as a new one meanwhile must keep its entry.
const FORGET_SCRIPT: &str = "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then \
     return redis.call('HDEL', KEYS[1], ARGV[1]) else return 0 end";

/// What the link needs; built from the `[cluster]` configuration by the server, directly by
/// tests.
#[derive(Clone, Debug)]
pub(crate) struct LinkSettings {
    pub(crate) redis_url: String,
    /// The prefix of every key ("signalling").
    pub(crate) key_prefix: String,
    pub(crate) node_id: String,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) node_timeout: Duration,
    /// The `MAXLEN ~` bound of each inbox stream.
    pub(crate) inbox_max_length: usize,
    /// Start even if Redis cannot be reached now (the link keeps trying).
    pub(crate) start_alone: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("cluster: redis_url {url} is not a usable Redis URL: {cause}")]
    BadUrl {
        url: String,
        cause: redis::RedisError,
    },
    #[error(
        "cluster: cannot reach Redis at {url}: {cause} (start it, fix redis_url, or allow starting alone)"
    )]
    Unreachable {
        url: String,
        cause: redis::RedisError,
    },
}

/// The link's queue is full: Redis is slower than the traffic, or unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cluster link's queue is full")]
pub(crate) struct Full;

enum Command<B> {
    Send(NodeKey, B),
    Broadcast(B),
}

/// The server's side of the link: cheap to clone.
pub(crate) struct LinkHandle<B> {
    commands: mpsc::Sender<Command<B>>,
    me: Arc<ArcSwap<NodeKey>>,
    /// Set when a body had to be dropped because the queue was full (see [`Task::tick`]).
    overflowed: Arc<AtomicBool>,
}

impl<B> Clone for LinkHandle<B> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            me: self.me.clone(),
            overflowed: self.overflowed.clone(),
        }
    }
}

impl<B> LinkHandle<B> {
    /// This node's incarnation now; it changes when the node starts a new one.
    #[allow(dead_code, reason = "used by the bridge (issue 14)")]
    pub(crate) fn me(&self) -> NodeKey {
        NodeKey::clone(&self.me.load())
    }

    /// Queues `body` for `to`, after what was sent to it before; never waits. Dropped without
    /// an error if `to` is (or turns out) dead, or if the link has stopped.
    #[allow(dead_code, reason = "used by the bridge (issue 14)")]
    pub(crate) fn send(&self, to: &NodeKey, body: B) -> Result<(), Full> {
        self.queue(Command::Send(to.clone(), body))
    }

    /// Queues `body` for every node up when the link takes it.
    #[allow(dead_code, reason = "used by the bridge (issue 14)")]
    pub(crate) fn broadcast(&self, body: B) -> Result<(), Full> {
        self.queue(Command::Broadcast(body))
    }

    fn queue(&self, command: Command<B>) -> Result<(), Full> {
        match self.commands.try_send(command) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Relaxed);
                Err(Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }
}

/// The URL with its password (if any) replaced by `***`, for logs and errors. By hand rather
/// than with the `url` crate: only the userinfo changes, and the rest stays as the operator
/// wrote it (a parser normalizes it, e.g. adds a trailing `/`).
pub(crate) fn redacted(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    // A lone userinfo may be a password (`redis://secret@host`): all of it goes.
    let hidden = userinfo
        .split_once(':')
        .map_or_else(|| "***".to_owned(), |(user, _)| format!("{user}:***"));
    format!("{}{hidden}{}", &url[..scheme_end], &rest[at..])
}

/// A random incarnation, never 0 (0 means "unknown" in an envelope).
fn new_incarnation() -> u64 {
    let inc = getrandom::u64().unwrap_or_else(|_| {
        // No OS randomness: the time is unique enough between the lives of one node.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    inc.max(1)
}

/// The delay before the next attempt: `backoff` with up to half of it taken off at random, so
/// that nodes that lost Redis together do not all knock at once.
fn jittered(backoff: Duration) -> Duration {
    let half = backoff.as_millis() as u64 / 2;
    let cut = getrandom::u64().map_or(0, |r| r % (half + 1));
    backoff - Duration::from_millis(cut)
}

fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(BACKOFF_MAX)
}

#[derive(Clone)]
struct Keys {
    nodes: String,
    inbox_prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            nodes: format!("{prefix}:nodes"),
            inbox_prefix: format!("{prefix}:inbox:"),
        }
    }

    fn inbox(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.inbox_prefix)
    }
}

async fn connect(
    client: &redis::Client,
    response_timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(response_timeout));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("PING").query_async::<()>(&mut conn).await?;
    Ok(conn)
}

/// Connects (PING) and starts the link's tasks; see the module doc. Redis unreachable now: an
/// error naming the URL (password redacted) and the cause, unless `start_alone`.
#[allow(dead_code, reason = "used by the bridge (issue 14)")]
pub(crate) async fn start<B>(
    settings: LinkSettings,
    shutdown: CancellationToken,
) -> Result<(LinkHandle<B>, mpsc::Receiver<LinkEvent<B>>), LinkError>
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    let url = redacted(&settings.redis_url);
    let bad_url = |cause| LinkError::BadUrl {
        url: url.clone(),
        cause,
    };
    // No Nagle: an envelope waits for nothing (a pipeline is one write anyway).
    let info = redis::IntoConnectionInfo::into_connection_info(settings.redis_url.as_str())
        .map_err(bad_url)?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    let client = redis::Client::open(info.set_tcp_settings(tcp)).map_err(bad_url)?;
    let write_timeout = settings.node_timeout.max(Duration::from_millis(500));
    let writer = match connect(&client, write_timeout).await {
        Ok(conn) => Some(conn),
        Err(cause) if settings.start_alone => {
            warn!(url = %url, %cause, "cluster: Redis unreachable at start; starting alone and retrying");
            None
        }
        Err(cause) => return Err(LinkError::Unreachable { url, cause }),
    };
    let me = NodeKey::new(settings.node_id.as_str(), new_incarnation());
    info!(node = %me, url = %url, "cluster: link starting");
    let shared_me = Arc::new(ArcSwap::from_pointee(me.clone()));
    let (commands_tx, commands) = mpsc::channel(QUEUE);
    let (events, events_rx) = mpsc::channel(EVENTS);
    let (reader_tx, reader_rx) = mpsc::channel(64);
    let (incarnation, incarnation_rx) = watch::channel(me.inc);
    let keys = Keys::new(&settings.key_prefix);
    let reader = Reader {
        client: client.clone(),
        keys: keys.clone(),
        node_id: settings.node_id.clone(),
        block: settings.heartbeat_interval.min(Duration::from_secs(1)),
        response_timeout: settings.heartbeat_interval.min(Duration::from_secs(1))
            + settings.heartbeat_interval.max(Duration::from_millis(500)),
        incarnation: incarnation_rx,
        out: reader_tx,
        shutdown: shutdown.clone(),
    };
    tokio::spawn(reader.run());
    let overflowed = Arc::new(AtomicBool::new(false));
    let task = Task {
        link: Link::new(
            me,
            settings.node_timeout.as_millis() as u64,
            settings.heartbeat_interval.as_millis() as u64,
        ),
        settings,
        client,
        keys,
        start: Instant::now(),
        me: shared_me.clone(),
        events,
        commands,
        overflowed: overflowed.clone(),
        reader: reader_rx,
        incarnation,
        announced: None,
        lost_since: None,
        reincarnated_while_lost: false,
        writer,
        write_timeout,
        backoff: BACKOFF_MIN,
        retrying: false,
        pending: std::collections::VecDeque::new(),
        in_flight: None,
    };
    tokio::spawn(task.run(shutdown));
    Ok((
        LinkHandle {
            commands: commands_tx,
            me: shared_me,
            overflowed,
        },
        events_rx,
    ))
}

/// What the reader tells the link task.
enum ReaderEvent {
    Connected,
    Disconnected,
    /// The inbox is read from its end as it was when this incarnation was put in the nodes
    /// hash, so nothing addressed to it is missed.
    Announced(u64),
    /// Entries' envelopes, read for this incarnation.
    Entries(u64, Vec<String>),
}

struct Reader {
    client: redis::Client,
    keys: Keys,
    node_id: String,
    block: Duration,
    response_timeout: Duration,
    incarnation: watch::Receiver<u64>,
    out: mpsc::Sender<ReaderEvent>,
    shutdown: CancellationToken,
}

impl Reader {
    async fn run(mut self) {
        let inbox = self.keys.inbox(&self.node_id);
        let mut conn: Option<MultiplexedConnection> = None;
        let mut connected = false;
        let mut backoff = BACKOFF_MIN;
        let mut announced: Option<u64> = None;
        let mut last_id = String::from("$");
        loop {
            if self.shutdown.is_cancelled() || self.out.is_closed() {
                return;
            }
            let Some(c) = conn.as_mut() else {
                let attempt = tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    attempt = connect(&self.client, self.response_timeout) => attempt,
                };
                match attempt {
                    Ok(c) => {
                        conn = Some(c);
                        backoff = BACKOFF_MIN;
                        if !connected {
                            connected = true;
                            if self.out.send(ReaderEvent::Connected).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) => {
                        debug!(%error, "cluster: Redis connection failed");
                        if connected {
                            connected = false;
                            if self.out.send(ReaderEvent::Disconnected).await.is_err() {
                                return;
                            }
                        }
                        tokio::select! {
                            () = self.shutdown.cancelled() => return,
                            () = tokio::time::sleep(jittered(backoff)) => {}
                        }
                        backoff = next_backoff(backoff);
                    }
                }
                continue;
            };
            let inc = *self.incarnation.borrow_and_update();
            let result = if announced == Some(inc) {
                self.read(c, &inbox, &last_id, inc).await
            } else {
                match announce(c, &self.keys.nodes, &inbox, &self.node_id, inc).await {
                    Ok(id) => {
                        announced = Some(inc);
                        last_id = id;
                        if self.out.send(ReaderEvent::Announced(inc)).await.is_err() {
                            return;
                        }
                        Ok(None)
                    }
                    Err(error) => Err(error),
                }
            };
            match result {
                Ok(Some(id)) => last_id = id,
                Ok(None) => {}
                Err(error)
                    if error.is_timeout()
                        || error.is_io_error()
                        || error.is_unrecoverable_error()
                        || error.is_connection_dropped()
                        || error.is_connection_refusal() =>
                {
                    warn!(%error, "cluster: lost the connection to Redis; reconnecting");
                    conn = None;
                    if connected {
                        connected = false;
                        if self.out.send(ReaderEvent::Disconnected).await.is_err() {
                            return;
                        }
                    }
                }
                Err(error) => {
                    // An error reply (e.g. Redis loading its data): try again after a pause.
                    warn!(%error, "cluster: reading the inbox failed");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(jittered(backoff)) => {}
                    }
                    backoff = next_backoff(backoff);
                }
            }
        }
    }

    /// One `XREAD BLOCK`; the id of the last entry read, if any.
    async fn read(
        &mut self,
        conn: &mut MultiplexedConnection,
        inbox: &str,
        last_id: &str,
        inc: u64,
    ) -> redis::RedisResult<Option<String>> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("STREAMS")
            .arg(inbox)
            .arg(last_id);
        let reply: Option<StreamReadReply> = tokio::select! {
            () = self.shutdown.cancelled() => return Ok(None),
            () = self.out.closed() => return Ok(None),
            // A new incarnation does not wait for the block to end.
            _ = self.incarnation.changed() => return Ok(None),
            reply = cmd.query_async(conn) => reply?,
        };
        let Some(reply) = reply else {
            return Ok(None);
        };
        let mut last = None;
        let mut envelopes = Vec::new();
        for entry in reply.keys.into_iter().flat_map(|key| key.ids) {
            match entry.get::<String>("m") {
                Some(envelope) => envelopes.push(envelope),
                None => {
                    warn!(entry = %entry.id, "cluster: inbox entry without an envelope, skipped")
                }
            }
            last = Some(entry.id);
        }
        if !envelopes.is_empty()
            && self
                .out
                .send(ReaderEvent::Entries(inc, envelopes))
                .await
                .is_err()
        {
            return Ok(None);
        }
        Ok(last)
    }
}

/// Finds the inbox's end, then lists this incarnation in the nodes hash: the id to read from.
async fn announce(
    conn: &mut MultiplexedConnection,
    nodes: &str,
    inbox: &str,
    node_id: &str,
    inc: u64,
) -> redis::RedisResult<String> {
    let last: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(inbox)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    let id = last
        .ids
        .into_iter()
        .next()
        .map_or_else(|| "0-0".to_owned(), |entry| entry.id);
    redis::cmd("HSET")
        .arg(nodes)
        .arg(node_id)
        .arg(inc)
        .query_async::<()>(conn)
        .await?;
    info!(node = node_id, inc, from = %id, "cluster: this node's incarnation is listed");
    Ok(id)
}

/// One write for Redis.
#[derive(Debug, Clone)]
enum Write {
    Append {
        to: Arc<str>,
        envelope: String,
    },
    /// HSET this node's incarnation, then HGETALL the nodes.
    Heartbeat(u64),
    Forget(NodeKey),
}

struct WriteDone {
    inc: u64,
    conn: Option<MultiplexedConnection>,
    batch: Vec<Write>,
    result: redis::RedisResult<Option<Vec<(String, String)>>>,
}

type WriteFuture = Pin<Box<dyn Future<Output = WriteDone> + Send>>;

struct Task<B> {
    settings: LinkSettings,
    client: redis::Client,
    keys: Keys,
    link: Link<B>,
    start: Instant,
    me: Arc<ArcSwap<NodeKey>>,
    events: mpsc::Sender<LinkEvent<B>>,
    commands: mpsc::Receiver<Command<B>>,
    /// The handle dropped a body: the queue was full.
    overflowed: Arc<AtomicBool>,
    reader: mpsc::Receiver<ReaderEvent>,
    incarnation: watch::Sender<u64>,
    /// The incarnation the reader has listed and reads for.
    announced: Option<u64>,
    /// Since when Redis has been unreachable.
    lost_since: Option<u64>,
    reincarnated_while_lost: bool,
    writer: Option<MultiplexedConnection>,
    write_timeout: Duration,
    backoff: Duration,
    /// The next write attempt follows a failure (waits the back-off first).
    retrying: bool,
    pending: std::collections::VecDeque<Write>,
    in_flight: Option<WriteFuture>,
}

impl<B> Task<B>
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Timeouts are noticed within a tenth of node_timeout past their due time.
        let mut tick =
            tokio::time::interval((self.settings.node_timeout / 10).max(Duration::from_millis(5)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.in_flight.is_none() && !self.pending.is_empty() {
                self.start_write();
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                event = self.reader.recv() => {
                    let Some(event) = event else { break };
                    self.handle_reader(event);
                }
                done = in_flight(&mut self.in_flight), if self.in_flight.is_some() => {
                    self.in_flight = None;
                    self.handle_write_done(done);
                }
                command = self.commands.recv(), if self.pending.len() < MAX_PENDING => {
                    let Some(command) = command else {
                        // Every handle is gone: the server no longer uses the link.
                        break;
                    };
                    self.handle_command(command);
                    // Drain what is queued already: one pipeline carries it.
                    for _ in 0..BATCH {
                        let Ok(command) = self.commands.try_recv() else { break };
                        self.handle_command(command);
                    }
                }
                _ = heartbeat.tick() => self.heartbeat(),
                _ = tick.tick() => self.tick(),
            }
            if !self.flush().await {
                break;
            }
        }
        debug!(node = %self.link.me(), "cluster: link stopped");
    }

    fn handle_command(&mut self, command: Command<B>) {
        match command {
            Command::Send(to, body) => {
                self.link.send(&to, &body);
            }
            Command::Broadcast(body) => self.link.broadcast(&body),
        }
    }

    fn handle_reader(&mut self, event: ReaderEvent) {
        let now = self.now_ms();
        match event {
            ReaderEvent::Connected => {
                info!(node = %self.link.me(), "cluster: connected to Redis");
                if self.lost_since.take().is_some() && !self.reincarnated_while_lost {
                    self.link.redis_back(now);
                }
                self.reincarnated_while_lost = false;
                self.emit_now(LinkEvent::Connected);
            }
            ReaderEvent::Disconnected => {
                warn!(node = %self.link.me(), "cluster: Redis unreachable");
                self.lost_since = Some(now);
                self.emit_now(LinkEvent::Disconnected);
            }
            ReaderEvent::Announced(inc) => {
                if inc == self.link.me().inc {
                    self.announced = Some(inc);
                    // Heard of at once, not one heartbeat interval later.
                    self.heartbeat();
                }
            }
            ReaderEvent::Entries(inc, envelopes) => {
                if inc != self.link.me().inc {
                    return;
                }
                for envelope in envelopes {
                    self.link.handle_envelope(&envelope, now);
                }
            }
        }
    }

    /// Events of the reader go out in order with the core's: through the core's queue.
    fn emit_now(&mut self, event: LinkEvent<B>) {
        self.link.push_event(event);
    }

    fn heartbeat(&mut self) {
        let inc = self.link.me().inc;
        if self.announced != Some(inc) || self.lost_since.is_some() {
            return;
        }
        self.link.heartbeat();
        self.pending.push_back(Write::Heartbeat(inc));
    }

    fn tick(&mut self) {
        if self.overflowed.swap(false, Ordering::Relaxed) {
            // A body was dropped, so the others would wait for it forever (it never took a
            // sequence number, so no gap shows). Starting a new incarnation ends every pair
            // across nodes on both sides, exactly once, as the loss of this node would.
            warn!(node = %self.link.me(), "cluster: the link's queue overflowed and a message was dropped; this node starts a new incarnation");
            self.reincarnate();
        }
        let now = self.now_ms();
        match self.lost_since {
            None => self.link.tick(now),
            Some(since) => {
                let timeout = self.settings.node_timeout.as_millis() as u64;
                if !self.reincarnated_while_lost && now.saturating_sub(since) >= timeout {
                    warn!(node = %self.link.me(), "cluster: Redis unreachable for the node timeout; every node is down, and this node starts a new incarnation");
                    self.reincarnated_while_lost = true;
                    self.reincarnate();
                }
            }
        }
    }

    fn reincarnate(&mut self) {
        let inc = new_incarnation();
        self.link.reincarnate(inc);
        self.me.store(Arc::new(self.link.me().clone()));
        self.announced = None;
        // Writes of the old life would reach the others stamped with it.
        self.pending.clear();
        let _ = self.incarnation.send(inc);
        info!(node = %self.link.me(), "cluster: new incarnation");
    }

    /// Carries out the core's outputs; false when the server is gone.
    async fn flush(&mut self) -> bool {
        while let Some(output) = self.link.poll_output() {
            match output {
                Output::Event(event) => {
                    if self.events.send(event).await.is_err() {
                        return false;
                    }
                }
                Output::Send { to, envelope } => {
                    self.pending.push_back(Write::Append { to, envelope })
                }
                Output::Forget(node) => self.pending.push_back(Write::Forget(node)),
                Output::DeclaredDead => {
                    if self.announced == Some(self.link.me().inc) {
                        self.reincarnate();
                    }
                }
            }
        }
        true
    }

    fn start_write(&mut self) {
        let count = self.pending.len().min(BATCH);
        let batch: Vec<Write> = self.pending.drain(..count).collect();
        let inc = self.link.me().inc;
        let conn = self.writer.take();
        let client = self.client.clone();
        let keys = self.keys.clone();
        let node_id = self.settings.node_id.clone();
        let max_len = self.settings.inbox_max_length;
        let timeout = self.write_timeout;
        let delay = self.retrying.then(|| jittered(self.backoff));
        let me = self.me.clone();
        self.in_flight = Some(Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let mut conn = match conn {
                Some(conn) => conn,
                None => match connect(&client, timeout).await {
                    Ok(conn) => conn,
                    Err(error) => {
                        return WriteDone {
                            inc,
                            conn: None,
                            batch,
                            result: Err(error),
                        };
                    }
                },
            };
            if me.load().inc != inc {
                // This node started a new incarnation while the batch waited: it belongs to
                // the old one.
                return WriteDone {
                    inc,
                    conn: Some(conn),
                    batch,
                    result: Ok(None),
                };
            }
            let result = write(&mut conn, &keys, &node_id, max_len, &batch).await;
            WriteDone {
                inc,
                conn: Some(conn),
                batch,
                result,
            }
        }));
    }

    fn handle_write_done(&mut self, done: WriteDone) {
        match done.result {
            Ok(nodes) => {
                self.writer = done.conn;
                self.retrying = false;
                self.backoff = BACKOFF_MIN;
                if let Some(nodes) = nodes.filter(|_| done.inc == self.link.me().inc) {
                    let now = self.now_ms();
                    self.link.handle_nodes(&nodes, now);
                }
            }
            Err(error) => {
                warn!(%error, commands = done.batch.len(), "cluster: writing to Redis failed; retrying");
                self.writer = None;
                self.retrying = true;
                self.backoff = next_backoff(self.backoff);
                if done.inc == self.link.me().inc {
                    // Again, first: order per destination holds, and what Redis took already
                    // is dropped by its receiver as a duplicate.
                    for write in done.batch.into_iter().rev() {
                        self.pending.push_front(write);
                    }
                }
            }
        }
    }
}

/// The write in flight, if any (never ready without one).
async fn in_flight(write: &mut Option<WriteFuture>) -> WriteDone {
    match write {
        Some(write) => write.await,
        None => std::future::pending().await,
    }
}

/// One pipeline; the nodes hash if the batch held a heartbeat.
async fn write(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    node_id: &str,
    max_len: usize,
    batch: &[Write],
) -> redis::RedisResult<Option<Vec<(String, String)>>> {
    let mut pipe = redis::pipe();
    let mut listing = false;
    for write in batch {
        match write {
            Write::Append { to, envelope } => {
                pipe.cmd("XADD")
                    .arg(keys.inbox(to))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(max_len)
                    .arg("*")
                    .arg("m")
                    .arg(envelope)
                    .ignore();
            }
            Write::Heartbeat(inc) => {
                pipe.cmd("HSET")
                    .arg(&keys.nodes)
                    .arg(node_id)
                    .arg(*inc)
                    .ignore();
                listing = true;
            }
            Write::Forget(node) => {
                pipe.cmd("EVAL")
                    .arg(FORGET_SCRIPT)
                    .arg(1)
                    .arg(&keys.nodes)
                    .arg(&*node.id)
                    .arg(node.inc)
                    .ignore();
            }
        }
    }
    if !listing {
        pipe.query_async::<()>(conn).await?;
        return Ok(None);
    }
    pipe.cmd("HGETALL").arg(&keys.nodes);
    let (nodes,): (HashMap<String, String>,) = pipe.query_async(conn).await?;
    Ok(Some(nodes.into_iter().collect()))
}
