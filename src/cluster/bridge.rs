//! The router's side of a cluster: turns the routing core's [`RemoteOut`]s into messages on the
//! link to the node they name, and what the link brings (nodes coming up and going down, their
//! messages) into the core's inputs. Runs on the router task, so the core sees one ordered
//! stream of inputs, local and remote alike; it never awaits (the link's queue is bounded and
//! never blocks).

use protocol::Inbound;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::{debug, info, warn};

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::link::{LinkEvent, NodeKey};
use super::link_task::{LinkHandle, LinkSettings};
use crate::router::snapshot::{ApiCounts, PlayerInfo, StreamerInfo};
use crate::router::{ConnId, Ending, HashMap, Node, RemoteEntry, RemoteOut, Router};

/// What one node sends another (the body of a link envelope). Messages of peers travel as
/// raw JSON, byte for byte as they were sent or made. Externally tagged (`{"deliver":{…}}`):
/// an internally tagged enum buffers its fields, and raw JSON cannot be read from a buffer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Wire {
    /// The sender's whole list of entries, in its table order (on every change, and to a node
    /// that has just come up).
    Entries {
        entries: Vec<RemoteEntry>,
    },
    #[serde(rename_all = "camelCase")]
    Subscribe {
        player: u64,
        sub: u64,
        player_id: String,
        streamer_id: String,
        sfu: bool,
        browser_offers: bool,
    },
    Forward {
        player: u64,
        sub: u64,
        text: Box<RawValue>,
    },
    Unsubscribe {
        player: u64,
        sub: u64,
    },
    Deliver {
        player: u64,
        sub: u64,
        text: Box<RawValue>,
    },
    Ended {
        player: u64,
        sub: u64,
        ending: Ending,
    },
    /// `/api` on the sender asks for this node's part of the tables.
    Ask {
        id: u64,
        query: Query,
    },
    /// The answer to [`Wire::Ask`] number `id`.
    Answer {
        id: u64,
        answer: Answer,
    },
    /// The session API's traffic (for the sessions task, not the router).
    Session(crate::sessions::cluster::SessionWire),
}

/// What `/api` asks every node: its own peers only (a proxy is its player's node's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Query {
    Counts,
    Streamers,
    Players,
}

/// One node's answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Answer {
    Counts(ApiCounts),
    Streamers(Vec<StreamerInfo>),
    Players(Vec<PlayerInfo>),
}

impl Query {
    pub(crate) fn answer(self, router: &Router) -> Answer {
        match self {
            Self::Counts => Answer::Counts(router.api_counts()),
            Self::Streamers => Answer::Streamers(router.streamers()),
            Self::Players => Answer::Players(router.players()),
        }
    }
}

/// Every node's answer, this node's first, then the others' in the order they came up; a node
/// that goes down before it answers is left out.
pub(crate) type Answers = Vec<(Arc<str>, Answer)>;

/// A question for the whole cluster, from `/api`; `None` is the answer on a node alone.
#[derive(Debug)]
pub(crate) struct Gather {
    pub(crate) query: Query,
    pub(crate) reply: oneshot::Sender<Option<Answers>>,
}

/// A [`Gather`] waiting for other nodes.
#[derive(Debug)]
struct Pending {
    waiting: Vec<Node>,
    answers: Vec<(Node, Arc<str>, Answer)>,
    reply: Option<oneshot::Sender<Option<Answers>>>,
}

/// This node's number among the answers: before every other node's.
const ME: Node = Node(u32::MAX);

impl Pending {
    /// Replies if no node is left to answer; true if it did.
    fn try_finish(&mut self) -> bool {
        if !self.waiting.is_empty() {
            return false;
        }
        let mut answers = std::mem::take(&mut self.answers);
        answers.sort_by_key(|(node, ..)| (*node != ME, node.0));
        let answers = answers.into_iter().map(|(_, n, a)| (n, a)).collect();
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Some(answers));
        }
        true
    }
}

/// Where the bridge hands the sessions task its share of the link's events. Unbounded because
/// the bridge never awaits; what arrives is bounded by the link's own inbox reads.
pub(crate) type SessionInputs =
    tokio::sync::mpsc::UnboundedSender<LinkEvent<crate::sessions::cluster::SessionWire>>;

/// What the router task needs of a cluster: the link, its events, and where this node's player
/// ids start.
pub(crate) struct Wiring {
    pub(crate) link: LinkHandle<Wire>,
    pub(crate) events: tokio::sync::mpsc::Receiver<LinkEvent<Wire>>,
    pub(crate) first_player: u64,
    pub(crate) claims: Claims,
    /// The answers to the router's id claims, in the order it asked.
    pub(crate) claimed: mpsc::UnboundedReceiver<Claimed>,
    /// The Redis URL and key prefix (the sessions' home claims).
    pub(crate) redis_url: String,
    pub(crate) key_prefix: String,
    /// Set by the server when the sessions task takes part.
    pub(crate) sessions: Option<SessionInputs>,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wiring")
            .field("first_player", &self.first_player)
            .finish_non_exhaustive()
    }
}

/// Player ids a node may hand out: a block this large per node start. A node's ids are
/// `block × PLAYER_BLOCK` onwards, so the first node to start numbers its players as a node
/// alone does; a billion players per process lifetime is never reached.
const PLAYER_BLOCK: u64 = 1_000_000_000;

/// Starts the link and takes this node's block of player ids (an atomic `INCR` in Redis, so no
/// two nodes share one). With `start_alone` and Redis unreachable, the block is drawn at random
/// from a million (a collision needs two such nodes to draw the same one).
pub(crate) async fn start(
    settings: LinkSettings,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<Wiring, super::link_task::LinkError> {
    let url = settings.redis_url.clone();
    let key_prefix = settings.key_prefix.clone();
    let key = format!("{}:player_block", settings.key_prefix);
    let start_alone = settings.start_alone;
    let node_id = settings.node_id.clone();
    let prefix = settings.key_prefix.clone();
    let (link, events) = super::link_task::start(settings, shutdown.clone()).await?;
    let (claims, claimed) = Claims::start(&url, &prefix, &node_id, shutdown);
    let block = match take_block(&url, &key).await {
        Ok(block) => block.saturating_sub(1),
        Err(e) if start_alone => {
            warn!("cluster: no block of player ids from Redis ({e}); drawing one at random");
            let mut bytes = [0u8; 8];
            let _ = getrandom::fill(&mut bytes);
            1_000 + u64::from_le_bytes(bytes) % 1_000_000
        }
        Err(e) => {
            return Err(super::link_task::LinkError::Unreachable {
                url: super::link_task::redacted(&url),
                cause: e,
            });
        }
    };
    let first_player = block.saturating_mul(PLAYER_BLOCK);
    claims
        .block
        .store(block + 1, std::sync::atomic::Ordering::Relaxed);
    info!(first_player, "cluster: this node's player ids start here");
    Ok(Wiring {
        link,
        events,
        first_player,
        claims,
        claimed,
        redis_url: url,
        key_prefix,
        sessions: None,
    })
}

async fn take_block(url: &str, key: &str) -> redis::RedisResult<u64> {
    let client = redis::Client::open(url)?;
    let mut conn = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
    redis::cmd("INCR").arg(key).query_async(&mut conn).await
}

/// The answer to one id claim: (entry, id, granted).
pub(crate) type Claimed = (ConnId, String, bool);

/// What the claims worker does, in order.
enum ClaimJob {
    /// Claim `id` for `entry` as `owner` (`node_id/incarnation`).
    Claim {
        entry: ConnId,
        id: String,
        owner: String,
    },
    /// Give `id` back (held by any incarnation of this node).
    Release { id: String },
    /// Claim these again (Redis came back, perhaps empty).
    Reclaim { ids: Vec<String>, owner: String },
    /// A dead incarnation's ids: removed where it still holds them.
    Forget { ids: Vec<String>, owner: String },
    /// Redis came back (perhaps empty): the counter of player id blocks is raised to at least
    /// this node's block, so a node that starts later never takes it again.
    KeepBlock,
}

/// Entry ids claimed in Redis (`<prefix>:streamer:<id>` = `node_id/incarnation`), so two nodes
/// never confirm the same id: each claim is one atomic script. One worker task runs the jobs in
/// the order the router asked (a release and a new claim of one id never swap). A node may
/// take over its own earlier incarnation's claims; a dead incarnation's claims are removed by
/// the nodes that see it die. With Redis unreachable a claim is granted (peers of this node
/// keep being served) and claimed again when Redis is back.
#[derive(Clone)]
pub(crate) struct Claims {
    jobs: mpsc::UnboundedSender<ClaimJob>,
    node_id: Arc<str>,
    /// This node's player id block, as the counter of blocks counts it (one more than its
    /// index); set once at start.
    block: Arc<std::sync::atomic::AtomicU64>,
}

/// Takes `KEYS[1]` for `ARGV[1]` (the owner) if it is free or held by any incarnation of this
/// node (`ARGV[2]`, `node_id/`).
const CLAIM: &str = "local cur = redis.call('GET', KEYS[1]) \
    if (not cur) or cur == ARGV[1] or string.sub(cur, 1, string.len(ARGV[2])) == ARGV[2] then \
    redis.call('SET', KEYS[1], ARGV[1]) return 1 end return 0";
/// Deletes `KEYS[1]` if held by any incarnation of this node (`ARGV[1]`, `node_id/`).
const RELEASE: &str = "local cur = redis.call('GET', KEYS[1]) \
    if cur and string.sub(cur, 1, string.len(ARGV[1])) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) end return 0";
/// Raises the counter `KEYS[1]` to at least `ARGV[1]`.
const KEEP_BLOCK: &str = "if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then \
    redis.call('SET', KEYS[1], ARGV[1]) end return 0";
/// Deletes `KEYS[1]` if held by exactly `ARGV[1]` (a dead incarnation).
const FORGET: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) end return 0";

impl Claims {
    fn start(
        url: &str,
        prefix: &str,
        node_id: &str,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> (Self, mpsc::UnboundedReceiver<Claimed>) {
        let (jobs, queue) = mpsc::unbounded_channel();
        let (answers, claimed) = mpsc::unbounded_channel();
        let block = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let worker = ClaimWorker {
            url: url.to_owned(),
            key: format!("{prefix}:streamer:"),
            block_key: format!("{prefix}:player_block"),
            block: block.clone(),
            mine: format!("{node_id}/"),
            conn: None,
        };
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = worker.run(queue, answers) => {}
            }
        });
        (
            Self {
                jobs,
                node_id: Arc::from(node_id),
                block,
            },
            claimed,
        )
    }

    fn owner(&self, me: &NodeKey) -> String {
        format!("{}/{}", self.node_id, me.inc)
    }

    fn queue(&self, job: ClaimJob) {
        let _ = self.jobs.send(job);
    }
}

struct ClaimWorker {
    url: String,
    /// `<prefix>:streamer:`
    key: String,
    /// `<prefix>:player_block`, and this node's block (counted from 1).
    block_key: String,
    block: Arc<std::sync::atomic::AtomicU64>,
    /// `node_id/`
    mine: String,
    conn: Option<redis::aio::MultiplexedConnection>,
}

impl ClaimWorker {
    async fn run(
        mut self,
        mut queue: mpsc::UnboundedReceiver<ClaimJob>,
        answers: mpsc::UnboundedSender<Claimed>,
    ) {
        while let Some(job) = queue.recv().await {
            match job {
                ClaimJob::Claim { entry, id, owner } => {
                    let granted = match self.script(CLAIM, &id, &[&owner, &self.mine.clone()]).await
                    {
                        Ok(n) => n == 1,
                        Err(e) => {
                            warn!(
                                "cluster: cannot claim a streamer id in Redis ({e}); granted on this node alone"
                            );
                            true
                        }
                    };
                    let _ = answers.send((entry, id, granted));
                }
                ClaimJob::Release { id } => {
                    let mine = self.mine.clone();
                    let _ = self.script(RELEASE, &id, &[&mine]).await;
                }
                ClaimJob::Reclaim { ids, owner } => {
                    for id in ids {
                        let mine = self.mine.clone();
                        if let Ok(0) = self.script(CLAIM, &id, &[&owner, &mine]).await {
                            warn!(id = %crate::logging::peer_str(&id), "cluster: another node claimed this streamer id while Redis was away; both keep it");
                        }
                    }
                }
                ClaimJob::Forget { ids, owner } => {
                    for id in ids {
                        let _ = self.script(FORGET, &id, &[&owner]).await;
                    }
                }
                ClaimJob::KeepBlock => {
                    let block = self.block.load(std::sync::atomic::Ordering::Relaxed);
                    if block > 0 {
                        let key = self.block_key.clone();
                        let _ = self.invoke(KEEP_BLOCK, key, &[&block.to_string()]).await;
                    }
                }
            }
        }
    }

    /// Runs one script on the id's key; (re)connects first if needed.
    async fn script(&mut self, script: &str, id: &str, args: &[&str]) -> redis::RedisResult<i64> {
        let key = format!("{}{id}", self.key);
        self.invoke(script, key, args).await
    }

    /// Runs a script on `key`; a connection found broken (Redis restarted since the last job)
    /// is replaced and the script run once more.
    async fn invoke(
        &mut self,
        script: &str,
        key: String,
        args: &[&str],
    ) -> redis::RedisResult<i64> {
        let script = redis::Script::new(script);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = match self.conn.as_mut() {
                Some(conn) => conn,
                None => self.conn.insert(self.connect().await?),
            };
            match script.key(&key).arg(args).invoke_async(conn).await {
                Ok(n) => return Ok(n),
                Err(e) => {
                    self.conn = None;
                    if attempt == 2 {
                        return Err(e);
                    }
                }
            }
        }
    }

    async fn connect(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url.as_str())?;
        tokio::time::timeout(
            std::time::Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
    }
}

/// The nodes up, numbered for the routing core (a node that comes back is a new number).
pub(crate) struct Bridge {
    claims: Claims,
    link: LinkHandle<Wire>,
    nodes: HashMap<NodeKey, Node>,
    keys: HashMap<Node, NodeKey>,
    next: u32,
    /// `/api` questions waiting for other nodes, by number.
    pending: HashMap<u64, Pending>,
    next_ask: u64,
    sessions: Option<SessionInputs>,
}

impl Bridge {
    pub(crate) fn new(link: LinkHandle<Wire>, claims: Claims) -> Self {
        Self {
            claims,
            link,
            nodes: HashMap::default(),
            keys: HashMap::default(),
            next: 0,
            pending: HashMap::default(),
            next_ask: 0,
            sessions: None,
        }
    }

    /// Hands node ups and downs and session messages to the sessions task too.
    pub(crate) fn with_sessions(mut self, sessions: Option<SessionInputs>) -> Self {
        self.sessions = sessions;
        self
    }

    fn to_sessions(&self, event: LinkEvent<crate::sessions::cluster::SessionWire>) {
        if let Some(tx) = &self.sessions {
            let _ = tx.send(event);
        }
    }

    /// Asks every node up for its part of the tables; replies once each has answered or gone.
    pub(crate) fn gather(&mut self, gather: Gather, router: &Router) {
        let me: Arc<str> = self.link.me().id;
        let id = self.next_ask;
        self.next_ask += 1;
        let mut pending = Pending {
            waiting: self.keys.keys().copied().collect(),
            answers: vec![(ME, me, gather.query.answer(router))],
            reply: Some(gather.reply),
        };
        for &node in &pending.waiting {
            self.send_to(
                node,
                Wire::Ask {
                    id,
                    query: gather.query,
                },
            );
        }
        if !pending.try_finish() {
            self.pending.insert(id, pending);
        }
    }

    fn answered(&mut self, node: Node, id: u64, answer: Answer) {
        let Some(pending) = self.pending.get_mut(&id) else {
            return;
        };
        let Some(at) = pending.waiting.iter().position(|&n| n == node) else {
            return;
        };
        pending.waiting.swap_remove(at);
        let name = self
            .keys
            .get(&node)
            .map_or_else(|| Arc::from("?"), |k| k.id.clone());
        pending.answers.push((node, name, answer));
        if pending.try_finish() {
            self.pending.remove(&id);
        }
    }

    /// A node went down: questions stop waiting for it.
    fn forget_asks(&mut self, node: Node) {
        self.pending.retain(|_, pending| {
            pending.waiting.retain(|&n| n != node);
            !pending.try_finish()
        });
    }

    /// Sends what the router asks for to the node it names; a node gone since is skipped
    /// (its end was handled when it went down).
    pub(crate) fn send(&mut self, out: RemoteOut) {
        let (node, wire) = match out {
            RemoteOut::Claim { entry, id } => {
                let owner = self.claims.owner(&self.link.me());
                return self.claims.queue(ClaimJob::Claim { entry, id, owner });
            }
            RemoteOut::Release { id } => return self.claims.queue(ClaimJob::Release { id }),
            RemoteOut::Subscribe {
                node,
                player,
                sub,
                player_id,
                streamer_id,
                sfu,
                browser_offers,
            } => (
                node,
                Wire::Subscribe {
                    player: player.0,
                    sub,
                    player_id,
                    streamer_id,
                    sfu,
                    browser_offers,
                },
            ),
            RemoteOut::Forward {
                node,
                player,
                sub,
                text,
            } => match raw(text) {
                Some(text) => (
                    node,
                    Wire::Forward {
                        player: player.0,
                        sub,
                        text,
                    },
                ),
                None => return,
            },
            RemoteOut::Unsubscribe { node, player, sub } => (
                node,
                Wire::Unsubscribe {
                    player: player.0,
                    sub,
                },
            ),
            RemoteOut::Deliver {
                node,
                player,
                sub,
                text,
            } => match raw(text) {
                Some(text) => (
                    node,
                    Wire::Deliver {
                        player: player.0,
                        sub,
                        text,
                    },
                ),
                None => return,
            },
            RemoteOut::Ended {
                node,
                player,
                sub,
                ending,
            } => (
                node,
                Wire::Ended {
                    player: player.0,
                    sub,
                    ending,
                },
            ),
        };
        self.send_to(node, wire);
    }

    fn send_to(&self, node: Node, wire: Wire) {
        let Some(key) = self.keys.get(&node) else {
            debug!(node = node.0, "a message for a node gone; dropped");
            return;
        };
        if self.link.send(key, wire).is_err() {
            // The link's queue holds far more than a healthy Redis needs; full means Redis (or
            // this node) is not keeping up. The link then starts a new incarnation, which ends
            // every pair across nodes on both sides, so the dropped message is never awaited.
            warn!(node = %key, "cluster link queue full; a message to another node dropped");
        }
    }

    /// Tells every node up about this node's entries, if they changed.
    pub(crate) fn publish_entries(&mut self, router: &mut Router) {
        let Some(entries) = router.take_local_entries() else {
            return;
        };
        for &node in self.keys.keys() {
            self.send_to(
                node,
                Wire::Entries {
                    entries: entries.clone(),
                },
            );
        }
    }

    /// One event of the link, as inputs of the router.
    pub(crate) fn handle(
        &mut self,
        event: LinkEvent<Wire>,
        router: &mut Router,
        now_ms: &impl Fn() -> u64,
    ) {
        match event {
            LinkEvent::Connected => {
                info!("cluster: connected to Redis");
                // Redis may have come back empty: this node's ids are claimed again.
                let owner = self.claims.owner(&self.link.me());
                self.claims.queue(ClaimJob::Reclaim {
                    ids: router.claimed_ids(),
                    owner,
                });
                self.claims.queue(ClaimJob::KeepBlock);
            }
            LinkEvent::Disconnected => warn!("cluster: Redis lost; reconnecting"),
            LinkEvent::Up(key) => {
                self.to_sessions(LinkEvent::Up(key.clone()));
                let node = Node(self.next);
                self.next += 1;
                info!(node = %key, "cluster: node up");
                self.nodes.insert(key.clone(), node);
                self.keys.insert(node, key);
                self.send_to(
                    node,
                    Wire::Entries {
                        entries: router.local_entries(),
                    },
                );
            }
            LinkEvent::Down(key) => {
                self.to_sessions(LinkEvent::Down(key.clone()));
                let Some(node) = self.nodes.remove(&key) else {
                    return;
                };
                self.keys.remove(&node);
                warn!(node = %key, "cluster: node down; its peers leave");
                self.claims.queue(ClaimJob::Forget {
                    ids: router.remote_ids_of(node),
                    owner: format!("{}/{}", key.id, key.inc),
                });
                self.forget_asks(node);
                router.handle_node_down(node);
            }
            LinkEvent::Message(key, Wire::Session(wire)) => {
                self.to_sessions(LinkEvent::Message(key, wire));
            }
            LinkEvent::Message(key, wire) => {
                let Some(&node) = self.nodes.get(&key) else {
                    debug!(node = %key, "a message from a node not up; dropped");
                    return;
                };
                match wire {
                    Wire::Ask { id, query } => {
                        let answer = query.answer(router);
                        self.send_to(node, Wire::Answer { id, answer });
                    }
                    Wire::Answer { id, answer } => self.answered(node, id, answer),
                    wire => deliver(node, wire, router, now_ms),
                }
            }
        }
    }
}

fn deliver(node: Node, wire: Wire, router: &mut Router, now_ms: &impl Fn() -> u64) {
    match wire {
        Wire::Entries { entries } => router.handle_remote_entries(node, entries),
        Wire::Subscribe {
            player,
            sub,
            player_id,
            streamer_id,
            sfu,
            browser_offers,
        } => router.handle_remote_subscribe(
            node,
            ConnId(player),
            sub,
            player_id,
            &streamer_id,
            sfu,
            browser_offers,
        ),
        Wire::Forward { player, sub, text } => match Inbound::parse(text.get()) {
            Ok(message) => router.handle_remote_forward(node, ConnId(player), sub, message, now_ms),
            Err(e) => warn!(
                node = node.0,
                "an unreadable message from another node ({e}); dropped"
            ),
        },
        Wire::Unsubscribe { player, sub } => {
            router.handle_remote_unsubscribe(node, ConnId(player), sub)
        }
        Wire::Deliver { player, sub, text } => router.handle_remote_deliver(
            node,
            ConnId(player),
            sub,
            Utf8Bytes::from(String::from(Box::<str>::from(text))),
        ),
        Wire::Ended {
            player,
            sub,
            ending,
        } => router.handle_remote_ended(node, ConnId(player), sub, ending),
        // Answered by the bridge itself.
        Wire::Ask { .. } | Wire::Answer { .. } => {}
        Wire::Session(_) => {}
    }
}

/// A peer's message as raw JSON for the wire (it is JSON: the router made or parsed it).
fn raw(text: Utf8Bytes) -> Option<Box<RawValue>> {
    RawValue::from_string(text.to_string())
        .inspect_err(|e| warn!("a message that is not JSON for another node ({e}); dropped"))
        .ok()
}
