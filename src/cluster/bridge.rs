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

use super::link::{LinkEvent, NodeKey};
use super::link_task::{LinkHandle, LinkSettings};
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
    /// The session API's traffic (for the sessions task, not the router).
    Session(crate::sessions::cluster::SessionWire),
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
    let (link, events) = super::link_task::start(settings, shutdown).await?;
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
    info!(first_player, "cluster: this node's player ids start here");
    Ok(Wiring {
        link,
        events,
        first_player,
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

/// The nodes up, numbered for the routing core (a node that comes back is a new number).
pub(crate) struct Bridge {
    link: LinkHandle<Wire>,
    nodes: HashMap<NodeKey, Node>,
    keys: HashMap<Node, NodeKey>,
    next: u32,
    sessions: Option<SessionInputs>,
}

impl Bridge {
    pub(crate) fn new(link: LinkHandle<Wire>) -> Self {
        Self {
            link,
            nodes: HashMap::default(),
            keys: HashMap::default(),
            next: 0,
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

    /// Sends what the router asks for to the node it names; a node gone since is skipped
    /// (its end was handled when it went down).
    pub(crate) fn send(&mut self, out: RemoteOut) {
        let (node, wire) = match out {
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
            // The link's queue holds far more than a healthy Redis needs; full means Redis is
            // not keeping up, and the link will report the node down if it stays so.
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
            LinkEvent::Connected => info!("cluster: connected to Redis"),
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
                deliver(node, wire, router, now_ms);
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
        Wire::Session(_) => {}
    }
}

/// A peer's message as raw JSON for the wire (it is JSON: the router made or parsed it).
fn raw(text: Utf8Bytes) -> Option<Box<RawValue>> {
    RawValue::from_string(text.to_string())
        .inspect_err(|e| warn!("a message that is not JSON for another node ({e}); dropped"))
        .ok()
}
