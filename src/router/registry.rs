//! The tables: entry ids (PROTOCOL.md §5), player ids, the streamer list, and removing a
//! connection from everything it is part of.

use protocol::ServerMessage;
use protocol::number::{cmp_decimal, increment_decimal};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{ConnId, Entry, Peer, Role, Router, SubState, Subscriber};
use crate::config::PlayerIdStyle;

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
        Entry {
            id,
            streaming: false,
            subscribers: Default::default(),
            player_subscribers: 0,
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
        Subscriber {
            player_id,
            state: SubState::Idle,
            awaiting_pong: false,
        }
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
        let others = || {
            self.table
                .iter()
                .filter(move |&&c| c != requester)
                .filter_map(|&c| self.entry(c))
        };
        let mut highest: Option<&str> = None;
        for other in others() {
            let (base, digits) = split_digits(&other.id);
            let matches = (!base.is_empty() && base == r) || (base.is_empty() && digits == r);
            if matches && highest.is_none_or(|h| cmp_decimal(digits, h).is_gt()) {
                highest = Some(digits);
            }
        }
        let candidate = match highest {
            None => r.to_owned(),
            Some(m) => format!("{r}{}", increment_decimal(m)),
        };
        let held_by_other = |id: &str| self.entry_ids.get(id).is_some_and(|&c| c != requester);
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
        let new_id = self.assign_id(conn, &requested);
        let Some(entry) = self.entry_mut(conn) else {
            return;
        };
        entry.streaming = true;
        let old_id = std::mem::replace(&mut entry.id, new_id.clone());
        let subscribers: Vec<ConnId> = entry.subscribers.values().copied().collect();
        self.send(
            conn,
            &ServerMessage::EndpointIdConfirm {
                committed_id: &new_id,
            },
        );
        if old_id != new_id {
            self.entry_ids.remove(&old_id);
            self.entry_ids.insert(new_id.clone(), conn);
            let changed: Utf8Bytes = ServerMessage::StreamerIdChanged { new_id: &new_id }
                .to_json()
                .into();
            for sub in subscribers {
                self.send_text(sub, changed.clone());
            }
        }
    }

    /// `listStreamers`: players see streaming entries, SFUs see every entry.
    pub(super) fn list_streamers(&mut self, conn: ConnId) {
        let everything = self.role(conn) == Some(Role::Sfu);
        let ids: Vec<&str> = self
            .table
            .iter()
            .filter_map(|&c| self.entry(c))
            .filter(|e| everything || e.streaming)
            .map(|e| e.id.as_str())
            .collect();
        let text = ServerMessage::StreamerList { ids: &ids }.to_json();
        self.send_text(conn, text.into());
    }

    /// Takes `conn` out of every table and runs its disconnect handling (PROTOCOL.md §6).
    pub(super) fn remove(&mut self, conn: ConnId) {
        self.end_warnings(conn);
        let Some(peer) = self.conns.remove(&conn) else {
            return;
        };
        let is_player = peer.role() == Role::Player;
        let (entry, subscriber) = match peer {
            Peer::Streamer(e) => (Some(e), None),
            Peer::Player(s) => {
                self.open_players = self.open_players.saturating_sub(1);
                (None, Some(s))
            }
            Peer::Sfu(e, s) => (Some(e), Some(s)),
        };
        if let Some(entry) = entry {
            self.table.retain(|&c| c != conn);
            self.entry_ids.remove(&entry.id);
            self.entry_left(&entry);
        }
        if let Some(sub) = subscriber {
            self.player_ids.remove(&sub.player_id);
            if let SubState::Subscribed { entry, seq } = sub.state {
                self.unlink(entry, seq, conn, &sub.player_id, is_player);
            }
        }
    }
}
