//! The sans-IO routing core: owns the streamer, player and SFU tables and decides who talks to
//! whom. Inputs go in through `handle_*`, outputs come out of [`Router::poll_output`]. It never
//! touches a socket, a channel or the clock (`now` is an argument), so every rule of
//! PROTOCOL.md is unit-tested here without IO (`tests.rs`).

pub mod flow;
#[cfg(test)]
mod flow_tests;
mod forward;
#[cfg(any(test, fuzzing))]
pub(crate) mod invariants;
mod registry;
mod remote;
pub mod snapshot;
#[cfg(test)]
mod snapshot_tests;
mod subscription;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cirrus;
#[cfg(test)]
mod tests_remote;
#[cfg(test)]
mod tests_scope;
#[cfg(test)]
mod tests_warnings;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use protocol::close::{self, Close};
use protocol::{Inbound, PROTOCOL_VERSION, ServerMessage};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::{debug, warn};

use crate::config::PlayerIdStyle;
use crate::logging::{WarnLimiter, peer_str};
pub use remote::{Ending, Node, RemoteEntry, RemoteOut};

/// A hash map with a fast, per-process randomly seeded hasher (ids arrive from peers).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The server's handle for one socket. Never reused within a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Which port a connection arrived on; it fixes what the connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum Role {
    Streamer,
    Player,
    Sfu,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Streamer => "streamer",
            Self::Player => "player",
            Self::Sfu => "sfu",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who pays when a message does not fit its receiver's outgoing queue (PROTOCOL.md §1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// The receiver: traffic it must keep up with for its own sake (from its entry, or from the
    /// server). If it does not fit, the receiver is too slow and is closed 1008.
    Receiver,
    /// The peer whose message caused this one (a subscriber writing to its entry, or a peer's
    /// own request answered). If it does not fit, it waits and that peer is slowed.
    Sender(ConnId),
    /// Subscription bookkeeping (`playerConnected`): always delivered. Its volume is bounded by
    /// the subscribe rate limit.
    Always,
    /// The `playerDisconnected` that ends this subscriber's subscription at the receiver:
    /// anything the subscriber still has waiting for the receiver is dropped first (nothing is
    /// routed under an ended subscription), then it is always delivered.
    Ends(ConnId),
}

/// What the router asks the IO layer to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Queue one text frame on a connection.
    Send {
        to: ConnId,
        text: Utf8Bytes,
        charge: Charge,
    },
    /// Send a close frame after what is already queued, then end the connection.
    Close {
        conn: ConnId,
        code: u16,
        reason: String,
    },
    /// Drop the TCP connection without a close frame (a peer found dead).
    Drop { conn: ConnId },
    /// Send to another node of the cluster (PROTOCOL.md §13).
    Remote(RemoteOut),
}

/// Where per-connection ICE servers come from (`[ice]`). The router asks once per connection,
/// with the id the connection has when it opens; the source owns the clock and any secret, so
/// the router stays a pure function of its inputs (tests pass a fixed source).
pub trait IceSource: fmt::Debug + Send + Sync {
    /// One `RTCIceServer` entry for the peer known as `id`, its credential good for `lifetime`.
    fn ice_server(&self, id: &str, lifetime: CredentialLifetime) -> serde_json::Value;
}

/// How long a peer's TURN credential must last. Streamers and SFUs get `config` once, at
/// connect, and may stay connected for months, so theirs is long-lived (Epic's servers give
/// them 10 years); players keep `credential_lifetime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialLifetime {
    Player,
    Long,
}

/// The settings the routing core reads.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// `peer_options` as JSON object text.
    pub peer_options: Box<RawValue>,
    pub max_players: u32,
    pub player_id_style: PlayerIdStyle,
    pub player_count: bool,
    /// When set, each `config` message carries this source's entry appended to
    /// `peerConnectionOptions.iceServers`; when not, every peer gets the same `config`.
    pub ice: Option<Arc<dyn IceSource>>,
    /// Cirrus's `MaxPlayerCount`: open player connections, across all streamers, beyond which a
    /// new player is closed 1013 at connect. `None` is unlimited (Cirrus's -1).
    pub max_player_count: Option<u32>,
    /// Cirrus's `sendPlayersCount`: `playerCount` is re-sent to every player when the count
    /// changes, at most once per [`Router::handle_player_count_tick`] (only with `player_count`).
    pub player_count_updates: bool,
    /// Cirrus UE5.0/5.1: a player is subscribed to the first streamer at connect (its page never
    /// subscribes), and closed 1013 when no streamer is connected.
    pub subscribe_at_connect: bool,
    /// Cluster mode: an entry id an `endpointId` asks for is claimed cluster-wide (an atomic
    /// claim the cluster layer makes) before it is confirmed (PROTOCOL.md §13).
    pub claim_ids: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            // An empty map always serializes, to `{}`.
            peer_options: serde_json::value::to_raw_value(&serde_json::Map::new())
                .unwrap_or_default(),
            max_players: 0,
            player_id_style: PlayerIdStyle::Wilbur,
            player_count: true,
            ice: None,
            max_player_count: None,
            player_count_updates: false,
            subscribe_at_connect: false,
            claim_ids: false,
        }
    }
}

/// What a connection's URL asked for at the upgrade (Cirrus's query parameters), and what its
/// credentials allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opening {
    /// `?OfferToReceive` (any value but `false`): the browser makes the offer.
    pub offer_to_receive: bool,
    /// The client's address as the IO layer determined it (the REST API's `remoteAddress`).
    pub remote: Option<IpAddr>,
    /// The streamer ids the connection's token allows: a player sees and subscribes to only
    /// these (a JWT's `streamers` claim), a streamer claims only these (`streamer_tokens`).
    pub scope: Scope,
}

/// A set of streamer ids a credential allows, or every id (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Option<std::sync::Arc<[String]>>);

impl Scope {
    /// Every id.
    pub fn all() -> Self {
        Self(None)
    }

    /// Only `ids`; `"*"` among them allows every id.
    pub fn only(ids: impl IntoIterator<Item = String>) -> Self {
        let ids: Vec<String> = ids.into_iter().collect();
        if ids.iter().any(|id| id == "*") {
            Self(None)
        } else {
            Self(Some(ids.into()))
        }
    }

    pub fn allows(&self, id: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|i| i == id))
    }

    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }
}

/// How many peers are connected, as the matchmaker client reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Open streamer-port connections (SFUs are not counted).
    pub streamers: usize,
    /// Open player-port connections.
    pub players: usize,
}

/// A row of the streamer table: a streamer-port or SFU-port connection.
#[derive(Debug)]
struct Entry {
    id: String,
    streaming: bool,
    /// Subscribers in the order they subscribed, keyed by a process-wide sequence number.
    subscribers: BTreeMap<u64, ConnId>,
    /// How many of `subscribers` are players (for `max_players`).
    player_subscribers: usize,
    /// The peer's address as given at open (the REST API's `remoteAddress`).
    remote: Option<IpAddr>,
    /// The ids its token lets it claim with `endpointId` (`streamer_tokens`).
    scope: Scope,
    /// Cluster mode: its id is claimed cluster-wide (a placeholder id is not), or a claim is
    /// under way.
    claim: remote::Claim,
}

/// A player-port connection, or an SFU acting as a player.
#[derive(Debug)]
struct Subscriber {
    player_id: String,
    state: SubState,
    subscribes: subscription::SubscribeBudget,
    /// A server protocol ping is unanswered (PROTOCOL.md §9).
    awaiting_pong: bool,
    /// The peer's address as given at open (the REST API's `remoteAddress`).
    remote: Option<IpAddr>,
    /// It asked to make the offer itself (`?OfferToReceive`): its `playerConnected` says
    /// `sendOffer: false`.
    browser_offers: bool,
    /// The last `playerCount` it was sent, so a flush skips players that have the current one.
    count_sent: usize,
    /// The streamers its token lets it see and subscribe to (a JWT's `streamers` claim).
    scope: Scope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    Idle,
    Subscribed {
        entry: ConnId,
        seq: u64,
    },
    /// Subscribed to an entry on another node, in the subscription numbered `sub`.
    Remote {
        node: Node,
        sub: u64,
    },
}

/// What a connection is, by role.
#[derive(Debug)]
enum Peer {
    Streamer(Entry),
    Player(Subscriber),
    Sfu(Entry, Subscriber),
    /// A player or SFU of another node, subscribed to an entry here.
    Proxy(Subscriber, remote::Proxy),
}

impl Peer {
    fn role(&self) -> Role {
        match self {
            Self::Streamer(_) => Role::Streamer,
            Self::Player(_) => Role::Player,
            Self::Sfu(..) => Role::Sfu,
            Self::Proxy(_, link) if link.sfu => Role::Sfu,
            Self::Proxy(..) => Role::Player,
        }
    }
    fn entry(&self) -> Option<&Entry> {
        match self {
            Self::Streamer(e) | Self::Sfu(e, _) => Some(e),
            Self::Player(_) | Self::Proxy(..) => None,
        }
    }
    fn entry_mut(&mut self) -> Option<&mut Entry> {
        match self {
            Self::Streamer(e) | Self::Sfu(e, _) => Some(e),
            Self::Player(_) | Self::Proxy(..) => None,
        }
    }
    fn subscriber(&self) -> Option<&Subscriber> {
        match self {
            Self::Player(s) | Self::Sfu(_, s) | Self::Proxy(s, _) => Some(s),
            Self::Streamer(_) => None,
        }
    }
    fn subscriber_mut(&mut self) -> Option<&mut Subscriber> {
        match self {
            Self::Player(s) | Self::Sfu(_, s) | Self::Proxy(s, _) => Some(s),
            Self::Streamer(_) => None,
        }
    }
}

/// The routing state machine.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    /// `config` is the same for everyone: serialized once.
    config_message: Utf8Bytes,
    /// `peer_options` as a map, to merge per-connection ICE servers into (only with `ice`).
    peer_options_map: serde_json::Map<String, serde_json::Value>,
    identify_message: Utf8Bytes,
    conns: HashMap<ConnId, Peer>,
    /// Entries (streamers and SFUs) in connection order.
    table: Vec<ConnId>,
    entry_ids: HashMap<String, ConnId>,
    player_ids: HashMap<String, ConnId>,
    next_player: u64,
    next_seq: u64,
    open_players: usize,
    /// Open streamer-port connections (for the matchmaker's `ready`).
    open_streamers: usize,
    /// The player count changed since the last `playerCount` flush.
    player_count_dirty: bool,
    outputs: VecDeque<Output>,
    /// `streamerList` for players (index 0) and for SFUs (1), built on first request after a
    /// change of the table.
    lists: [Option<Utf8Bytes>; 2],
    /// Warning budgets of the connections that have caused a warning (see [`Self::warn`]).
    warnings: HashMap<ConnId, WarnLimiter>,
    /// How often each of the router's limits refused, for the IO layer to count (metrics).
    refusals: Refusals,
    /// Entries and subscribers on other nodes of a cluster (empty on a node alone).
    remote: remote::Remote,
}

/// How many times the router's own limits have refused since it started: the IO layer turns
/// the growth into `signalling_rate_limited_total` (the core counts, it never exports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusals {
    /// `subscribe` refused with `subscribeFailed`: the streamer has `max_players` players.
    pub max_players: u64,
    /// A player closed 1013 at connect: `max_player_count` players are open.
    pub max_player_count: u64,
}

impl Router {
    pub fn new(config: RouterConfig) -> Self {
        let (config_message, peer_options_map) = Self::config_parts(&config);
        Self {
            config,
            config_message,
            peer_options_map,
            identify_message: ServerMessage::Identify.to_json().into(),
            conns: HashMap::default(),
            table: Vec::new(),
            entry_ids: HashMap::default(),
            player_ids: HashMap::default(),
            next_player: 0,
            next_seq: 0,
            open_players: 0,
            open_streamers: 0,
            refusals: Refusals::default(),
            player_count_dirty: false,
            outputs: VecDeque::new(),
            lists: Default::default(),
            warnings: HashMap::default(),
            remote: remote::Remote::default(),
        }
    }

    /// The `config` message everyone gets (without per-peer ICE), and `peer_options` as a map
    /// when per-peer ICE servers are merged into it.
    fn config_parts(
        config: &RouterConfig,
    ) -> (Utf8Bytes, serde_json::Map<String, serde_json::Value>) {
        let config_message = ServerMessage::Config {
            peer_connection_options: &config.peer_options,
            protocol_version: PROTOCOL_VERSION,
        }
        .to_json()
        .into();
        let peer_options_map = if config.ice.is_some() {
            serde_json::from_str(config.peer_options.get()).unwrap_or_default()
        } else {
            serde_json::Map::new()
        };
        (config_message, peer_options_map)
    }

    /// New settings (a reload): peers that connect from now on get the new `config` and the
    /// new limits; connected peers and the tables stay as they are, and nothing is sent.
    pub fn handle_reconfigure(&mut self, config: RouterConfig) {
        let (config_message, peer_options_map) = Self::config_parts(&config);
        self.config = config;
        self.config_message = config_message;
        self.peer_options_map = peer_options_map;
    }

    /// Player ids start at `n` (a cluster gives each node its own block of ids); call before
    /// the first player connects.
    pub fn start_player_ids_at(&mut self, n: u64) {
        self.next_player = n;
    }

    /// The next thing for the IO layer to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Whether the router knows `conn` (it is open and not being closed).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Number of open connections the router knows.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The id a connection is known by (entry id, else player id), for log lines.
    pub fn describe(&self, conn: ConnId) -> Option<String> {
        let peer = self.conns.get(&conn)?;
        Some(match peer {
            Peer::Streamer(e) => e.id.clone(),
            Peer::Player(s) | Peer::Proxy(s, _) => s.player_id.clone(),
            Peer::Sfu(e, s) => format!("{}/{}", e.id, s.player_id),
        })
    }

    /// A connection was accepted on the port of `role`, from an address not known.
    pub fn handle_opened(&mut self, conn: ConnId, role: Role) {
        self.handle_opened_with(conn, role, Opening::default());
    }

    /// A connection was accepted on the port of `role` from `remote` (the client address as the
    /// IO layer determined it, kept only to be reported by [`Self::players`] and friends).
    pub fn handle_opened_from(&mut self, conn: ConnId, role: Role, remote: Option<IpAddr>) {
        self.handle_opened_with(
            conn,
            role,
            Opening {
                remote,
                ..Opening::default()
            },
        );
    }

    /// A connection was accepted on the port of `role`, with what its URL asked for and the
    /// client's address.
    pub fn handle_opened_with(&mut self, conn: ConnId, role: Role, opening: Opening) {
        if self.conns.contains_key(&conn) {
            warn!(%conn, "connection opened twice; ignored");
            return;
        }
        if role == Role::Player && !self.admit_player(conn) {
            return;
        }
        let mut peer = match role {
            Role::Streamer => {
                self.open_streamers += 1;
                Peer::Streamer(self.new_entry(conn))
            }
            Role::Player => {
                self.open_players += 1;
                self.player_count_dirty = true;
                let mut sub = self.new_subscriber(conn);
                sub.browser_offers = opening.offer_to_receive;
                sub.count_sent = self.open_players;
                Peer::Player(sub)
            }
            Role::Sfu => {
                let entry = self.new_entry(conn);
                Peer::Sfu(entry, self.new_subscriber(conn))
            }
        };
        if let Some(entry) = peer.entry_mut() {
            entry.remote = opening.remote;
            entry.scope = opening.scope.clone();
        }
        if let Some(sub) = peer.subscriber_mut() {
            sub.remote = opening.remote;
            sub.scope = opening.scope;
        }
        let config = self.config_message_for(&peer);
        self.send_text(conn, config, Charge::Receiver);
        if role == Role::Player && self.config.player_count {
            let count = self.open_players;
            self.send(
                conn,
                &ServerMessage::PlayerCount { count },
                Charge::Receiver,
            );
        }
        if matches!(role, Role::Streamer | Role::Sfu) {
            self.send_text(conn, self.identify_message.clone(), Charge::Receiver);
        }
        self.conns.insert(conn, peer);
        if role == Role::Player && self.config.subscribe_at_connect {
            self.subscribe_at_connect(conn);
        }
    }

    /// Cirrus's checks before a player is accepted: with `subscribe_at_connect` a streamer must
    /// be connected (UE5.0/5.1), and `max_player_count` caps open players. A refused player is
    /// closed 1013 with Cirrus's reason and never enters the tables. False if refused.
    fn admit_player(&mut self, conn: ConnId) -> bool {
        if self.config.subscribe_at_connect && self.first_streamer().is_none() {
            warn!(%conn, role = "player", "no streamer connected; closing 1013");
            let close = close::STREAMER_NOT_CONNECTED;
            self.outputs.push_back(Output::Close {
                conn,
                code: close.code,
                reason: close.reason.to_owned(),
            });
            return false;
        }
        let Some(max) = self.config.max_player_count else {
            return true;
        };
        let current = self.open_players;
        if current < max as usize {
            return true;
        }
        warn!(%conn, role = "player", "{current} players connected, max_player_count {max}; closing 1013");
        self.refusals.max_player_count += 1;
        self.outputs.push_back(Output::Close {
            conn,
            code: close::TRY_AGAIN_LATER,
            reason: format!("too many connections. max: {max}, current: {current}"),
        });
        false
    }

    /// The first streamer-port entry in table order (SFUs are skipped, as Cirrus 5.0/5.1 sent
    /// `playerConnected` to its one streamer unless the player asked for the SFU).
    fn first_streamer(&self) -> Option<ConnId> {
        self.table
            .iter()
            .copied()
            .find(|&c| self.role(c) == Some(Role::Streamer))
    }

    /// Connected players and streamer-port connections, for the matchmaker client.
    pub fn counts(&self) -> Counts {
        Counts {
            streamers: self.open_streamers,
            players: self.open_players,
        }
    }

    /// How often the router's limits have refused so far.
    pub fn refusals(&self) -> Refusals {
        self.refusals
    }

    /// Subscriptions open now (players' and SFUs'), one pass over the entries: for a scrape of
    /// the metrics, never per message.
    pub fn subscription_count(&self) -> usize {
        self.table
            .iter()
            .filter_map(|&entry| self.entry(entry))
            .map(|e| e.subscribers.len())
            .sum()
    }

    /// Whether the player count changed since the last flush and players want to hear it: the
    /// IO layer then calls [`Self::handle_player_count_tick`] on its next tick.
    pub fn player_count_due(&self) -> bool {
        self.player_count_dirty && self.config.player_count && self.config.player_count_updates
    }

    /// Cirrus's `sendPlayersCount`, coalesced: every player whose last `playerCount` is not the
    /// current count gets the current count, once, however many joins and leaves happened since
    /// the last flush. The text is serialized once and shared.
    pub fn handle_player_count_tick(&mut self) {
        if !self.player_count_due() {
            return;
        }
        self.player_count_dirty = false;
        let count = self.open_players;
        let mut stale: Vec<ConnId> = self
            .conns
            .iter_mut()
            .filter_map(|(&conn, peer)| match peer {
                Peer::Player(sub) if sub.count_sent != count => {
                    sub.count_sent = count;
                    Some(conn)
                }
                _ => None,
            })
            .collect();
        if stale.is_empty() {
            return;
        }
        stale.sort_unstable();
        let text: Utf8Bytes = ServerMessage::PlayerCount { count }.to_json().into();
        for conn in stale {
            self.send_text(conn, text.clone(), Charge::Receiver);
        }
    }

    /// A message arrived on `conn`, already parsed. `now_ms` reads a clock in milliseconds that
    /// does not go back; it is called only to pace subscribes.
    pub fn handle_message(&mut self, conn: ConnId, message: Inbound, now_ms: impl FnOnce() -> u64) {
        let Some(role) = self.conns.get(&conn).map(Peer::role) else {
            debug!(%conn, "message from a connection that is closing; discarded");
            return;
        };
        use Role::{Player, Sfu, Streamer};
        match (message, role) {
            (Inbound::EndpointId { id }, Streamer | Sfu) => self.endpoint_id(conn, id),
            (Inbound::ListStreamers, Player | Sfu) => self.list_streamers(conn),
            (Inbound::Subscribe { streamer_id }, Player | Sfu) => {
                self.subscribe(conn, streamer_id, now_ms())
            }
            (Inbound::Unsubscribe, Player | Sfu) => self.end_subscription(conn),
            (
                Inbound::Forward {
                    kind,
                    player_id,
                    relay,
                },
                _,
            ) => self.forward(conn, role, kind, player_id, relay),
            (Inbound::DisconnectPlayer { player_id, reason }, Streamer) => {
                self.disconnect_player(conn, &player_id, reason)
            }
            (Inbound::StartStreaming, Sfu) => {
                if let Some(entry) = self.entry_mut(conn) {
                    entry.streaming = true;
                }
                self.table_changed();
            }
            (Inbound::StopStreaming, Sfu) => self.stop_streaming(conn),
            (Inbound::Ping { time }, _) => self.pong(conn, time.as_deref()),
            (Inbound::Pong, _) => {
                if let Some(sub) = self.subscriber_mut(conn) {
                    sub.awaiting_pong = false;
                }
            }
            (Inbound::Stats, Player) => debug!(%conn, "stats ignored"),
            (Inbound::Unknown(ty), _) => self.warn(
                conn,
                format_args!("unknown message type {}; ignored", peer_str(&ty)),
            ),
            (message, role) => self.warn(
                conn,
                format_args!(
                    "a {role} may not send {}; ignored",
                    peer_str(message.type_name())
                ),
            ),
        }
    }

    /// The connection ended on its own (peer closed, socket error, liveness timeout, frame
    /// too big, invalid UTF-8, outgoing queue full). Runs the disconnect handling of
    /// PROTOCOL.md §6. Unknown connections (already closed by the router) are ignored.
    pub fn handle_closed(&mut self, conn: ConnId) {
        if remote::is_proxy(conn) {
            // Only the overflow policy closes a proxy this way: its messages waited too long.
            self.close_proxy(conn, close::SENDING_TOO_FAST);
            return;
        }
        self.remove(conn);
    }

    /// The protocol-ping timer fired (only when `player_protocol_ping` > 0): every player that
    /// has not answered the previous ping is dropped (E5), the others get a new ping.
    pub fn handle_tick(&mut self, now_ms: u64) {
        let ping: Utf8Bytes = ServerMessage::Ping { time: now_ms }.to_json().into();
        let mut dead = Vec::new();
        let mut alive = Vec::new();
        for (&conn, peer) in &mut self.conns {
            if let Peer::Player(sub) = peer {
                if sub.awaiting_pong {
                    dead.push(conn);
                } else {
                    sub.awaiting_pong = true;
                    alive.push(conn);
                }
            }
        }
        alive.sort_unstable();
        dead.sort_unstable();
        for conn in alive {
            self.send_text(conn, ping.clone(), Charge::Receiver);
        }
        for conn in dead {
            self.warn(conn, "no pong to the previous protocol ping; dropping");
            self.outputs.push_back(Output::Drop { conn });
            self.remove(conn);
        }
    }

    /// The shared `config` message, or with `ice` one of this peer's own: its ICE server entry
    /// appended to the configured `iceServers` (created if absent, replaced if not an array).
    fn config_message_for(&self, peer: &Peer) -> Utf8Bytes {
        let Some(ice) = &self.config.ice else {
            return self.config_message.clone();
        };
        let (id, lifetime) = match peer {
            Peer::Streamer(e) | Peer::Sfu(e, _) => (&e.id, CredentialLifetime::Long),
            Peer::Player(s) | Peer::Proxy(s, _) => (&s.player_id, CredentialLifetime::Player),
        };
        let mut options = self.peer_options_map.clone();
        let entry = ice.ice_server(id, lifetime);
        match options.get_mut("iceServers") {
            Some(serde_json::Value::Array(servers)) => servers.push(entry),
            _ => {
                options.insert(
                    "iceServers".to_owned(),
                    serde_json::Value::Array(vec![entry]),
                );
            }
        }
        let Ok(options) = serde_json::value::to_raw_value(&options) else {
            return self.config_message.clone();
        };
        ServerMessage::Config {
            peer_connection_options: &options,
            protocol_version: PROTOCOL_VERSION,
        }
        .to_json()
        .into()
    }

    fn pong(&mut self, conn: ConnId, time: Option<&str>) {
        let time = time.unwrap_or("0");
        match serde_json::from_str::<&RawValue>(time) {
            Ok(time) => {
                let text = ServerMessage::Pong { time }.to_json();
                self.send_text(conn, text.into(), Charge::Sender(conn));
            }
            Err(_) => self.warn(conn, "ping with an unreadable time; ignored"),
        }
    }

    // ---- outputs ----

    fn send(&mut self, to: ConnId, message: &ServerMessage<'_>, charge: Charge) {
        self.send_text(to, message.to_json().into(), charge);
    }

    fn send_text(&mut self, to: ConnId, text: Utf8Bytes, charge: Charge) {
        if remote::is_proxy(to) {
            self.deliver_to_proxy(to, text);
            return;
        }
        self.outputs.push_back(Output::Send { to, text, charge });
    }

    /// Closes a connection: from now on it is out of every table (PROTOCOL.md §1.11).
    fn close(&mut self, conn: ConnId, close: Close) {
        self.close_with(conn, close.code, close.reason.to_owned());
    }

    fn close_with(&mut self, conn: ConnId, code: u16, reason: String) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        if remote::is_proxy(conn) {
            self.end_proxy(conn, Ending::Closed { code, reason });
            return;
        }
        self.outputs.push_back(Output::Close { conn, code, reason });
        self.remove(conn);
    }

    /// A warning caused by `conn`'s peer, under its per-connection budget (the first few, then
    /// one line now and then with a count: `WarnLimiter`), with its id escaped and cut.
    fn warn(&mut self, conn: ConnId, reason: impl fmt::Display) {
        let verdict = if self.conns.contains_key(&conn) {
            self.warnings.entry(conn).or_default().check()
        } else {
            // Already gone: no budget to keep (it would never be removed).
            WarnLimiter::default().check()
        };
        let Some(suppressed) = verdict else {
            return;
        };
        let role = self.conns.get(&conn).map_or("?", |p| p.role().as_str());
        let id = self.describe(conn).unwrap_or_default();
        warn!(%conn, role, id = %peer_str(&id), "{reason}{suppressed}");
    }

    /// A connection is leaving: the count of its warnings not logged since its last one.
    fn end_warnings(&mut self, conn: ConnId) {
        let Some(suppressed) = self
            .warnings
            .remove(&conn)
            .and_then(|mut limiter| limiter.take_suppressed())
        else {
            return;
        };
        let role = self.conns.get(&conn).map_or("?", |p| p.role().as_str());
        let id = self.describe(conn).unwrap_or_default();
        warn!(
            %conn,
            role,
            id = %peer_str(&id),
            "{} more warnings from this connection suppressed",
            suppressed.count()
        );
    }

    // ---- table access ----

    fn entry(&self, conn: ConnId) -> Option<&Entry> {
        self.conns.get(&conn).and_then(Peer::entry)
    }
    fn entry_mut(&mut self, conn: ConnId) -> Option<&mut Entry> {
        self.conns.get_mut(&conn).and_then(Peer::entry_mut)
    }
    fn subscriber(&self, conn: ConnId) -> Option<&Subscriber> {
        self.conns.get(&conn).and_then(Peer::subscriber)
    }
    fn subscriber_mut(&mut self, conn: ConnId) -> Option<&mut Subscriber> {
        self.conns.get_mut(&conn).and_then(Peer::subscriber_mut)
    }
    fn role(&self, conn: ConnId) -> Option<Role> {
        self.conns.get(&conn).map(Peer::role)
    }
}
