//! Peers on other nodes of a cluster (PROTOCOL.md §13): one more kind of input and output of the
//! routing core. The node a streamer is connected to owns that streamer's subscriptions and
//! decides them; a player's node owns the player. So:
//!
//! - On the player's node, a subscription to an entry of another node is [`SubState::Remote`]:
//!   the player's messages for its entry leave as [`RemoteOut::Forward`], and what the entry's
//!   node sends back arrives as [`Router::handle_remote_deliver`].
//! - On the entry's node, that player is a **proxy**: a subscriber in the tables like any other
//!   (same player id; `max_players` counts it), without a socket. What the router sends it leaves
//!   as [`RemoteOut::Deliver`]; when its subscription ends here, [`RemoteOut::Ended`] tells the
//!   player's node why.
//!
//! Each subscription across nodes has a number (`sub`) chosen by the player's node; messages of
//! an ended subscription are dropped on both sides, so nothing is routed under it and the entry
//! gets exactly one `playerDisconnected` however the two ends cross.

use protocol::close::{self, Close};
use protocol::{Inbound, ServerMessage};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::debug;

use super::{Charge, ConnId, HashMap, Output, Peer, Role, Router, SubState, Subscriber};

/// A node of the cluster, as the IO layer numbers the nodes it knows (one number per
/// incarnation of a node: a node that comes back is a new `Node`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node(pub u32);

/// A streamer or SFU entry on another node, as that node describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteEntry {
    pub id: String,
    pub streaming: bool,
    pub sfu: bool,
}

/// Why a subscription across nodes ended on the entry's node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Ending {
    /// The subscribe was refused (`subscribeFailed` went before this): the player stays open.
    Refused,
    /// The entry's connection ended: a player is closed 1000, an SFU loses its upstream.
    StreamerLeft,
    /// The entry's node closed the subscriber (`disconnectPlayer`, sending too fast): the
    /// player's node closes it with this code and reason.
    Closed { code: u16, reason: String },
}

/// What the router asks the cluster layer to send to another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteOut {
    /// Player's node → entry's node: subscribe this node's `player` to `streamer_id`.
    Subscribe {
        node: Node,
        player: ConnId,
        sub: u64,
        player_id: String,
        streamer_id: String,
        sfu: bool,
        browser_offers: bool,
    },
    /// Player's node → entry's node: a message of `player` for its entry, as the player sent it
    /// (the entry's node makes the edits of PROTOCOL.md §4).
    Forward {
        node: Node,
        player: ConnId,
        sub: u64,
        text: Utf8Bytes,
    },
    /// Player's node → entry's node: the subscription ended on the player's side.
    Unsubscribe {
        node: Node,
        player: ConnId,
        sub: u64,
    },
    /// Entry's node → player's node: a message for the player.
    Deliver {
        node: Node,
        player: ConnId,
        sub: u64,
        text: Utf8Bytes,
    },
    /// Entry's node → player's node: the subscription ended on the entry's side.
    Ended {
        node: Node,
        player: ConnId,
        sub: u64,
        ending: Ending,
    },
    /// Claim `id` for the local entry `entry`, atomically, cluster-wide; the answer comes back
    /// as [`Router::handle_claimed`].
    Claim { entry: ConnId, id: String },
    /// This node no longer holds `id`.
    Release { id: String },
}

/// A proxy's link to its player on another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Proxy {
    pub(super) node: Node,
    /// The player's connection on its own node.
    pub(super) player: ConnId,
    pub(super) sub: u64,
    pub(super) sfu: bool,
}

/// Proxies take connection ids with the top bit set, which the IO layer never hands out, so
/// telling a proxy from a socket costs one bit test on the send path, not a lookup.
const PROXY_BIT: u64 = 1 << 63;

pub(super) fn is_proxy(conn: ConnId) -> bool {
    conn.0 & PROXY_BIT != 0
}

/// The cluster's side of the router's state.
#[derive(Debug, Default)]
pub(super) struct Remote {
    /// Every other node's entries, in the order that node keeps them; nodes in the order they
    /// were numbered.
    pub(super) entries: std::collections::BTreeMap<Node, Vec<RemoteEntry>>,
    /// Entry id → the node holding it.
    pub(super) ids: HashMap<String, Node>,
    /// (node, player on that node) → its proxy here.
    pub(super) proxies: HashMap<(Node, ConnId), ConnId>,
    next_proxy: u64,
    next_sub: u64,
    /// The local entries changed since [`Router::take_local_entries`] last read them.
    pub(super) local_dirty: bool,
    /// Entries whose id claim is under way: (requested id, candidate claimed).
    pub(super) pending: HashMap<ConnId, (String, String)>,
    /// Ids the cluster refused this node because another node holds them, before that node's
    /// list says so.
    pub(super) claimed_elsewhere: std::collections::HashSet<String, foldhash::fast::RandomState>,
}

/// Whether an entry's id is claimed cluster-wide (a placeholder id never is).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Claim {
    #[default]
    None,
    Held,
}

/// Refused ids kept at most (a bound on what refusals can make a node hold).
const MAX_CLAIMED_ELSEWHERE: usize = 10_000;

impl Router {
    /// The local entries, in table order, if they changed since the last call (the cluster layer
    /// tells the other nodes).
    pub fn take_local_entries(&mut self) -> Option<Vec<RemoteEntry>> {
        if !std::mem::take(&mut self.remote.local_dirty) {
            return None;
        }
        Some(self.local_entries())
    }

    /// The local entries, in table order (for a node that has just come up).
    pub fn local_entries(&self) -> Vec<RemoteEntry> {
        self.table
            .iter()
            .filter_map(|&c| {
                let peer = self.conns.get(&c)?;
                let e = peer.entry()?;
                Some(RemoteEntry {
                    id: e.id.clone(),
                    streaming: e.streaming,
                    sfu: peer.role() == Role::Sfu,
                })
            })
            .collect()
    }

    /// The ids this node holds claims on (for the cluster layer to claim again after Redis
    /// lost them).
    pub fn claimed_ids(&self) -> Vec<String> {
        self.table
            .iter()
            .filter_map(|&c| self.entry(c))
            .filter(|e| e.claim == Claim::Held)
            .map(|e| e.id.clone())
            .collect()
    }

    /// Asks the cluster for `candidate`, the id `requested` gave by PROTOCOL.md §5 for `conn`.
    pub(super) fn claim(&mut self, conn: ConnId, requested: String, candidate: String) {
        self.remote
            .pending
            .insert(conn, (requested, candidate.clone()));
        self.outputs.push_back(Output::Remote(RemoteOut::Claim {
            entry: conn,
            id: candidate,
        }));
    }

    /// The cluster's answer to [`RemoteOut::Claim`]: granted, the entry takes the id (as
    /// `endpointId` does on one node); refused, the id is held elsewhere, and the next one by
    /// §5's rule is claimed. A stale answer (the entry left, or asked again since) gives a
    /// granted id back.
    pub fn handle_claimed(&mut self, conn: ConnId, id: String, granted: bool) {
        let current = self
            .remote
            .pending
            .get(&conn)
            .filter(|(_, candidate)| *candidate == id)
            .cloned();
        let Some((requested, _)) = current.filter(|_| self.entry(conn).is_some()) else {
            if granted && self.entry(conn).is_none_or(|e| e.id != id) {
                self.outputs
                    .push_back(Output::Remote(RemoteOut::Release { id }));
            }
            return;
        };
        self.remote.pending.remove(&conn);
        if !granted {
            if self.remote.claimed_elsewhere.len() >= MAX_CLAIMED_ELSEWHERE {
                self.remote.claimed_elsewhere.clear();
            }
            self.remote.claimed_elsewhere.insert(id);
            let next = self.assign_id(conn, &requested);
            if self.entry(conn).is_some_and(|e| e.id == next) {
                self.commit_id(conn, next);
            } else {
                self.claim(conn, requested, next);
            }
            return;
        }
        if let Some(entry) = self.entry_mut(conn) {
            let old = (entry.claim == Claim::Held && entry.id != id).then(|| entry.id.clone());
            entry.claim = Claim::Held;
            if let Some(old) = old {
                self.outputs
                    .push_back(Output::Remote(RemoteOut::Release { id: old }));
            }
        }
        self.commit_id(conn, id);
    }

    /// An entry leaves: its claim, and any claim under way, go back.
    pub(super) fn release_claims(&mut self, conn: ConnId, entry: &super::Entry) {
        self.remote.pending.remove(&conn);
        if entry.claim == Claim::Held {
            self.outputs.push_back(Output::Remote(RemoteOut::Release {
                id: entry.id.clone(),
            }));
        }
    }

    /// `node`'s entries are now `entries` (its whole list, in its order).
    pub fn handle_remote_entries(&mut self, node: Node, entries: Vec<RemoteEntry>) {
        self.forget_entries(node);
        for e in &entries {
            self.remote.claimed_elsewhere.remove(&e.id);
            self.remote.ids.insert(e.id.clone(), node);
        }
        self.remote.entries.insert(node, entries);
        self.lists = Default::default();
    }

    /// The ids `node` last listed.
    pub fn remote_ids_of(&self, node: Node) -> Vec<String> {
        self.remote
            .entries
            .get(&node)
            .map(|entries| entries.iter().map(|e| e.id.clone()).collect())
            .unwrap_or_default()
    }

    fn forget_entries(&mut self, node: Node) {
        if let Some(old) = self.remote.entries.remove(&node) {
            for e in old {
                if self.remote.ids.get(&e.id) == Some(&node) {
                    self.remote.ids.remove(&e.id);
                }
            }
            self.lists = Default::default();
        }
    }

    /// `node` is gone (it stopped heart-beating, or this node lost Redis): its entries leave
    /// every list, local players subscribed to them are handled as when a streamer disconnects,
    /// and its players' proxies leave, each giving its entry one `playerDisconnected`.
    pub fn handle_node_down(&mut self, node: Node) {
        self.forget_entries(node);
        let mut locals: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, p)| {
                matches!(
                    p.subscriber().map(|s| s.state),
                    Some(SubState::Remote { node: n, .. }) if n == node
                )
            })
            .map(|(&c, _)| c)
            .collect();
        locals.sort_unstable();
        for conn in locals {
            self.remote_streamer_left(conn);
        }
        let mut proxies: Vec<ConnId> = self
            .remote
            .proxies
            .iter()
            .filter(|((n, _), _)| *n == node)
            .map(|(_, &p)| p)
            .collect();
        proxies.sort_unstable();
        for proxy in proxies {
            self.remove_proxy(proxy);
        }
    }

    // ---- the player's node ----

    /// Subscribes the idle local subscriber `conn` to `streamer_id` on `node`.
    pub(super) fn subscribe_remote(&mut self, conn: ConnId, node: Node, streamer_id: &str) {
        let sfu = self.role(conn) == Some(Role::Sfu);
        let sub = self.remote.next_sub;
        self.remote.next_sub += 1;
        let Some(s) = self.subscriber_mut(conn) else {
            return;
        };
        s.state = SubState::Remote { node, sub };
        let out = RemoteOut::Subscribe {
            node,
            player: conn,
            sub,
            player_id: s.player_id.clone(),
            streamer_id: streamer_id.to_owned(),
            sfu,
            browser_offers: !sfu && s.browser_offers,
        };
        self.outputs.push_back(Output::Remote(out));
    }

    /// Ends the local subscriber's subscription to an entry of another node, on this side.
    pub(super) fn unsubscribe_remote(&mut self, conn: ConnId, node: Node, sub: u64) {
        if let Some(s) = self.subscriber_mut(conn) {
            s.state = SubState::Idle;
        }
        self.outputs
            .push_back(Output::Remote(RemoteOut::Unsubscribe {
                node,
                player: conn,
                sub,
            }));
    }

    /// A message for the local subscriber `player` from its entry on `node`; dropped unless
    /// that subscription is still the current one.
    pub fn handle_remote_deliver(&mut self, node: Node, player: ConnId, sub: u64, text: Utf8Bytes) {
        if !self.remotely_subscribed(player, node, sub) {
            debug!(conn = %player, "a message under an ended subscription across nodes; dropped");
            return;
        }
        self.send_text(player, text, Charge::Receiver);
    }

    /// The entry's node ended `player`'s subscription.
    pub fn handle_remote_ended(&mut self, node: Node, player: ConnId, sub: u64, ending: Ending) {
        if !self.remotely_subscribed(player, node, sub) {
            return;
        }
        match ending {
            Ending::Refused => {
                if let Some(s) = self.subscriber_mut(player) {
                    s.state = SubState::Idle;
                }
            }
            Ending::StreamerLeft => self.remote_streamer_left(player),
            Ending::Closed { code, reason } => {
                if let Some(s) = self.subscriber_mut(player) {
                    s.state = SubState::Idle;
                }
                self.close_with(player, code, reason);
            }
        }
    }

    /// The entry of a local subscriber is gone with its node or its connection: as
    /// [`Router::entry_left`] does for a local entry.
    fn remote_streamer_left(&mut self, conn: ConnId) {
        if let Some(s) = self.subscriber_mut(conn) {
            s.state = SubState::Idle;
        }
        match self.role(conn) {
            Some(Role::Player) => self.close(conn, close::STREAMER_DISCONNECTED),
            Some(Role::Sfu) => self.lose_upstream(conn),
            _ => {}
        }
    }

    fn remotely_subscribed(&self, player: ConnId, node: Node, sub: u64) -> bool {
        matches!(
            self.subscriber(player).map(|s| s.state),
            Some(SubState::Remote { node: n, sub: s }) if n == node && s == sub
        )
    }

    // ---- the entry's node ----

    /// `player` on `node` subscribes to `streamer_id` here: a proxy joins the tables and
    /// subscribes as a local subscriber would (its node has paced it already). A refusal is
    /// answered with `subscribeFailed`, then [`Ending::Refused`], and the proxy leaves.
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one RemoteOut::Subscribe"
    )]
    pub fn handle_remote_subscribe(
        &mut self,
        node: Node,
        player: ConnId,
        sub: u64,
        player_id: String,
        streamer_id: &str,
        sfu: bool,
        browser_offers: bool,
    ) {
        if let Some(&stale) = self.remote.proxies.get(&(node, player)) {
            self.remove_proxy(stale);
        }
        if self.player_ids.contains_key(&player_id) {
            debug!(
                node = node.0,
                "a remote player id already in use here; refused"
            );
            self.outputs.push_back(Output::Remote(RemoteOut::Ended {
                node,
                player,
                sub,
                ending: Ending::Refused,
            }));
            return;
        }
        let proxy = ConnId(PROXY_BIT | self.remote.next_proxy);
        self.remote.next_proxy += 1;
        self.player_ids.insert(player_id.clone(), proxy);
        self.remote.proxies.insert((node, player), proxy);
        let mut subscriber = Subscriber::new(player_id);
        subscriber.browser_offers = browser_offers;
        let link = Proxy {
            node,
            player,
            sub,
            sfu,
        };
        self.conns.insert(proxy, Peer::Proxy(subscriber, link));
        let entry = self.entry_ids.get(streamer_id).copied();
        let refused = match entry {
            None => Some(format!("Streamer {streamer_id} does not exist.")),
            Some(entry) => match self.try_subscribe(proxy, entry) {
                Ok(()) => None,
                Err(super::subscription::SubscribeError::Full { id, max }) => {
                    Some(format!("Streamer {id} is full. Max players = {max}."))
                }
            },
        };
        if let Some(message) = refused {
            self.send(
                proxy,
                &ServerMessage::SubscribeFailed { message: &message },
                Charge::Sender(proxy),
            );
            self.end_proxy(proxy, Ending::Refused);
        }
    }

    /// A message from `player` on `node` for its entry here.
    pub fn handle_remote_forward(
        &mut self,
        node: Node,
        player: ConnId,
        sub: u64,
        message: Inbound,
        now_ms: impl FnOnce() -> u64,
    ) {
        let Some(proxy) = self.proxy_of(node, player, sub) else {
            debug!(%player, "a message under an ended subscription across nodes; dropped");
            return;
        };
        if !matches!(message, Inbound::Forward { .. }) {
            self.warn(
                proxy,
                "a node forwarded what is not a relayed message; ignored",
            );
            return;
        }
        self.handle_message(proxy, message, now_ms);
    }

    /// `player` on `node` ended its subscription here.
    pub fn handle_remote_unsubscribe(&mut self, node: Node, player: ConnId, sub: u64) {
        if let Some(proxy) = self.proxy_of(node, player, sub) {
            self.remove_proxy(proxy);
        }
    }

    fn proxy_of(&self, node: Node, player: ConnId, sub: u64) -> Option<ConnId> {
        let &proxy = self.remote.proxies.get(&(node, player))?;
        match self.conns.get(&proxy) {
            Some(Peer::Proxy(_, link)) if link.sub == sub => Some(proxy),
            _ => None,
        }
    }

    /// What the router sends to a proxy goes to its node.
    pub(super) fn deliver_to_proxy(&mut self, proxy: ConnId, text: Utf8Bytes) {
        let Some(Peer::Proxy(_, link)) = self.conns.get(&proxy) else {
            return;
        };
        let out = RemoteOut::Deliver {
            node: link.node,
            player: link.player,
            sub: link.sub,
            text,
        };
        self.outputs.push_back(Output::Remote(out));
    }

    /// Ends a proxy's subscription here and tells its node why; the proxy leaves the tables.
    pub(super) fn end_proxy(&mut self, proxy: ConnId, ending: Ending) {
        let Some(Peer::Proxy(_, link)) = self.conns.get(&proxy) else {
            return;
        };
        let out = RemoteOut::Ended {
            node: link.node,
            player: link.player,
            sub: link.sub,
            ending,
        };
        self.outputs.push_back(Output::Remote(out));
        self.remove_proxy(proxy);
    }

    /// Takes a proxy out of the tables; its entry gets its one `playerDisconnected`.
    pub(super) fn remove_proxy(&mut self, proxy: ConnId) {
        if let Some(Peer::Proxy(_, link)) = self.conns.get(&proxy) {
            self.remote.proxies.remove(&(link.node, link.player));
        }
        self.remove(proxy);
    }

    /// A proxy closed by the router (`disconnectPlayer`) or by the overflow policy.
    pub(super) fn close_proxy(&mut self, proxy: ConnId, close: Close) {
        self.end_proxy(
            proxy,
            Ending::Closed {
                code: close.code,
                reason: close.reason.to_owned(),
            },
        );
    }
}
