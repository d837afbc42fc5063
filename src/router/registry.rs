//! The tables: entry ids (PROTOCOL.md §5), player ids, the streamer list, and removing a
//! connection from everything it is part of.

use protocol::ServerMessage;
use protocol::number::{cmp_decimal, increment_decimal};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Charge, ConnId, Entry, Peer, Role, Router, Scope, SubState, Subscriber};
use crate::config::PlayerIdStyle;
use protocol::close;

/// The longest id a streamer or SFU may ask for, in bytes (PROTOCOL.md §5). Real ids are names
/// such as `DefaultStreamer` or a UUID; this bounds what one id costs in every `streamerList`.
pub(crate) const MAX_ENTRY_ID_LEN: usize = 256;

/// Splits an id into its base and its longest trailing run of ASCII digits.
fn split_digits(id: &str) -> (&str, &str) {
    let base_len = id.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    id.split_at(base_len)
}

impl Router {
    /// A new entry with its placeholder id, at the end of the table.
    pub(super) fn new_entry(&mut self, conn: ConnId) -> Entry {
        let id = self.assign_id(conn, "");
        self.entry_ids.insert(id.clone(), conn);
        self.table.push(conn);
        self.table_changed();
        Entry {
            id,
            streaming: false,
            subscribers: Default::default(),
            player_subscribers: 0,
            remote: None,
            scope: Scope::all(),
            claim: super::remote::Claim::None,
        }
    }

    /// A new idle subscriber with the next player id.
    pub(super) fn new_subscriber(&mut self, conn: ConnId) -> Subscriber {
        let n = self.next_player;
        self.next_player += 1;
        let player_id = match self.config.player_id_style {
            PlayerIdStyle::Wilbur => format!("Player{n}"),
            PlayerIdStyle::Numeric => (u128::from(n) + 1).to_string(),
        };
        self.player_ids.insert(player_id.clone(), conn);
        Subscriber::new(player_id)
    }

    /// The id `requester` gets when it asks for `requested` (PROTOCOL.md §5, "Assigning an
    /// entry id"). `requester` may not be in the table yet.
    pub(super) fn assign_id(&self, requester: ConnId, requested: &str) -> String {
        let r = if requested.is_empty() {
            "UnknownStreamer"
        } else {
            requested
        };
        if self.entry(requester).is_some_and(|e| e.id == r) {
            return r.to_owned();
        }
        // Every other entry of the cluster: this node's, then those of the other nodes.
        let others = self
            .table
            .iter()
            .filter(move |&&c| c != requester)
            .filter_map(|&c| self.entry(c))
            .map(|e| e.id.as_str())
            .chain(
                self.remote
                    .pending
                    .iter()
                    .filter(|&(&c, _)| c != requester)
                    .map(|(_, (_, candidate))| candidate.as_str()),
            )
            .chain(self.remote_entries().map(|e| e.id.as_str()))
            .chain(self.remote.claimed_elsewhere.iter().map(String::as_str));
        let mut highest: Option<&str> = None;
        for other in others {
            let (base, digits) = split_digits(other);
            let matches = (!base.is_empty() && base == r) || (base.is_empty() && digits == r);
            if matches && highest.is_none_or(|h| cmp_decimal(digits, h).is_gt()) {
                highest = Some(digits);
            }
        }
        let candidate = match highest {
            None => r.to_owned(),
            Some(m) => format!("{r}{}", increment_decimal(m)),
        };
        let held_by_other = |id: &str| {
            self.entry_ids.get(id).is_some_and(|&c| c != requester)
                || self.remote.ids.contains_key(id)
                || self.remote.claimed_elsewhere.contains(id)
                || self
                    .remote
                    .pending
                    .iter()
                    .any(|(&c, (_, candidate))| c != requester && candidate == id)
        };
        if !held_by_other(&candidate) {
            return candidate;
        }
        (1u64..)
            .map(|k| format!("{r}{k}"))
            .find(|c| !held_by_other(c))
            .unwrap_or_default()
    }

    /// `endpointId` from a streamer or SFU.
    pub(super) fn endpoint_id(&mut self, conn: ConnId, id: Option<String>) {
        let Some(requested) = id else {
            self.warn(conn, "endpointId without a string id; ignored");
            return;
        };
        if requested.len() > MAX_ENTRY_ID_LEN {
            self.warn(
                conn,
                format!(
                    "endpointId of {} bytes, longer than {MAX_ENTRY_ID_LEN}; ignored",
                    requested.len()
                ),
            );
            return;
        }
        if self
            .entry(conn)
            .is_some_and(|e| !e.scope.allows(&requested))
        {
            self.warn(
                conn,
                format_args!(
                    "endpointId {} is not among the ids its token may claim; closing 1008",
                    crate::logging::peer_str(&requested)
                ),
            );
            self.close(conn, close::ID_NOT_ALLOWED);
            return;
        }
        let new_id = self.assign_id(conn, &requested);
        if self.config.claim_ids && self.entry(conn).is_some_and(|e| e.id != new_id) {
            // Confirmed once the cluster has granted the id.
            self.claim(conn, requested, new_id);
            return;
        }
        self.commit_id(conn, new_id);
    }

    /// The entry is known as `new_id` from now on: confirmed, streaming, its subscribers told
    /// of a change.
    pub(super) fn commit_id(&mut self, conn: ConnId, new_id: String) {
        let Some(entry) = self.entry_mut(conn) else {
            return;
        };
        entry.streaming = true;
        self.table_changed();
        let Some(entry) = self.entry_mut(conn) else {
            return;
        };
        let old_id = std::mem::replace(&mut entry.id, new_id.clone());
        let subscribers: Vec<ConnId> = entry.subscribers.values().copied().collect();
        self.send(
            conn,
            &ServerMessage::EndpointIdConfirm {
                committed_id: &new_id,
            },
            Charge::Sender(conn),
        );
        if old_id != new_id {
            self.entry_ids.remove(&old_id);
            self.entry_ids.insert(new_id.clone(), conn);
            let changed: Utf8Bytes = ServerMessage::StreamerIdChanged { new_id: &new_id }
                .to_json()
                .into();
            for sub in subscribers {
                self.send_text(sub, changed.clone(), Charge::Receiver);
            }
        }
    }

    /// `listStreamers`: players see streaming entries, SFUs see every entry. Each list is
    /// serialized once per change of the table, not once per request.
    pub(super) fn list_streamers(&mut self, conn: ConnId) {
        let everything = self.role(conn) == Some(Role::Sfu);
        if let Some(scope) = self.subscriber(conn).map(|s| &s.scope)
            && !scope.is_all()
        {
            // A player whose token names its streamers gets its own list, built each time.
            let ids: Vec<&str> = self
                .listed(everything)
                .filter(|id| scope.allows(id))
                .collect();
            let text: Utf8Bytes = ServerMessage::StreamerList { ids: &ids }.to_json().into();
            self.send_text(conn, text, Charge::Sender(conn));
            return;
        }
        let text = match &self.lists[usize::from(everything)] {
            Some(text) => text.clone(),
            None => {
                let ids: Vec<&str> = self.listed(everything).collect();
                let text: Utf8Bytes = ServerMessage::StreamerList { ids: &ids }.to_json().into();
                self.lists[usize::from(everything)] = Some(text.clone());
                text
            }
        };
        self.send_text(conn, text, Charge::Sender(conn));
    }

    /// The ids a streamerList holds (every entry, or the streaming ones), in table order: this
    /// node's entries, then those of the other nodes of a cluster.
    fn listed(&self, everything: bool) -> impl Iterator<Item = &str> {
        let local = self
            .table
            .iter()
            .filter_map(|&c| self.entry(c))
            .map(|e| (e.id.as_str(), e.streaming));
        let remote = self.remote_entries().map(|e| (e.id.as_str(), e.streaming));
        local
            .chain(remote)
            .filter(move |&(_, streaming)| everything || streaming)
            .map(|(id, _)| id)
    }

    /// The entries of the other nodes of a cluster, node by node.
    pub(super) fn remote_entries(&self) -> impl Iterator<Item = &super::RemoteEntry> {
        self.remote.entries.values().flatten()
    }

    /// An entry joined, left, renamed or changed its `streaming` flag: the lists are stale.
    pub(super) fn table_changed(&mut self) {
        self.lists = Default::default();
        self.remote.local_dirty = true;
    }

    /// Takes `conn` out of every table and runs its disconnect handling (PROTOCOL.md §6).
    pub(super) fn remove(&mut self, conn: ConnId) {
        self.end_warnings(conn);
        let Some(peer) = self.conns.remove(&conn) else {
            return;
        };
        let is_player = peer.role() == Role::Player;
        let (entry, subscriber) = match peer {
            Peer::Streamer(e) => {
                self.open_streamers = self.open_streamers.saturating_sub(1);
                (Some(e), None)
            }
            Peer::Player(s) => {
                self.open_players = self.open_players.saturating_sub(1);
                self.player_count_dirty = true;
                (None, Some(s))
            }
            Peer::Sfu(e, s) => (Some(e), Some(s)),
            Peer::Proxy(s, _) => (None, Some(s)),
        };
        if let Some(entry) = entry {
            self.table.retain(|&c| c != conn);
            self.entry_ids.remove(&entry.id);
            self.table_changed();
            self.release_claims(conn, &entry);
            self.entry_left(&entry);
        }
        if let Some(sub) = subscriber {
            self.player_ids.remove(&sub.player_id);
            match sub.state {
                SubState::Subscribed { entry, seq } => {
                    self.unlink(entry, seq, conn, &sub.player_id, is_player)
                }
                SubState::Remote { node, sub } => self.unsubscribe_remote(conn, node, sub),
                SubState::Idle => {}
            }
        }
    }
}

impl Subscriber {
    /// An idle subscriber known as `player_id`, allowed everything.
    pub(super) fn new(player_id: String) -> Self {
        Self {
            player_id,
            state: SubState::Idle,
            subscribes: Default::default(),
            awaiting_pong: false,
            remote: None,
            browser_offers: false,
            count_sent: 0,
            scope: Scope::all(),
        }
    }
}
