//! Subscriptions (PROTOCOL.md §6, §7): subscribe, and every way one ends. Each ending goes
//! through [`Router::unlink`], the one place that sends `playerDisconnected`.

use protocol::close;
use protocol::{PlayerIdValue, ServerMessage};

use crate::logging::peer_player_id;

use super::registry::MAX_ENTRY_ID_LEN;
use super::{Charge, ConnId, Entry, Role, Router, SubState};

/// Subscribes one connection may make at once, and how many more per second after that
/// (PROTOCOL.md §6). Epic's frontend subscribes once per connection; every subscribe costs its
/// streamer a `playerDisconnected` and a `playerConnected`, which are always delivered.
pub(crate) const SUBSCRIBE_BURST: u64 = 10;
pub(crate) const SUBSCRIBES_PER_SECOND: u64 = 2;

/// A token bucket for subscribes, in thousandths of a subscribe.
#[derive(Debug, Clone, Copy)]
pub(super) struct SubscribeBudget {
    milli: u64,
    at_ms: u64,
}

impl Default for SubscribeBudget {
    fn default() -> Self {
        Self {
            milli: SUBSCRIBE_BURST * 1000,
            at_ms: 0,
        }
    }
}

impl SubscribeBudget {
    /// Takes one subscribe at `now_ms`, if the budget has one.
    fn take(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.at_ms = self.at_ms.max(now_ms);
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(SUBSCRIBES_PER_SECOND))
            .min(SUBSCRIBE_BURST * 1000);
        if self.milli < 1000 {
            return false;
        }
        self.milli -= 1000;
        true
    }
}

/// Why a subscribe did not take.
pub(super) enum SubscribeError {
    Full { id: String, max: u32 },
}

impl Router {
    /// `subscribe {streamerId}` from a player or SFU.
    pub(super) fn subscribe(&mut self, conn: ConnId, streamer_id: Option<String>, now_ms: u64) {
        let Some(streamer_id) = streamer_id.filter(|id| id.len() <= MAX_ENTRY_ID_LEN) else {
            self.warn(
                conn,
                "subscribe without a string streamerId of at most 256 bytes",
            );
            self.subscribe_failed(conn, "Missing or invalid field streamerId.");
            return;
        };
        if !self
            .subscriber_mut(conn)
            .is_some_and(|s| s.subscribes.take(now_ms))
        {
            self.warn(conn, "subscribing too often; refused");
            self.subscribe_failed(conn, "Too many subscribe requests; try again later.");
            return;
        }
        let allowed = self
            .subscriber(conn)
            .is_some_and(|s| s.scope.allows(&streamer_id));
        let entry = self.entry_ids.get(&streamer_id).copied();
        if entry.is_none()
            && allowed
            && let Some(&node) = self.remote.ids.get(&streamer_id)
        {
            self.end_subscription(conn);
            self.subscribe_remote(conn, node, &streamer_id);
            return;
        }
        let Some(entry) = entry.filter(|_| allowed) else {
            if !allowed {
                self.warn(
                    conn,
                    "subscribe to a streamer its token does not name; refused",
                );
            }
            // The same answer as for an id that does not exist: the token's limits reveal
            // nothing of other streamers.
            self.subscribe_failed(conn, &format!("Streamer {streamer_id} does not exist."));
            return;
        };
        if entry == conn {
            self.warn(conn, "an SFU may not subscribe to itself; ignored");
            return;
        }
        self.end_subscription(conn);
        if let Err(SubscribeError::Full { id, max }) = self.try_subscribe(conn, entry) {
            self.subscribe_failed(
                conn,
                &format!("Streamer {id} is full. Max players = {max}."),
            );
        }
    }

    fn subscribe_failed(&mut self, conn: ConnId, message: &str) {
        self.send(
            conn,
            &ServerMessage::SubscribeFailed { message },
            Charge::Sender(conn),
        );
    }

    /// Steps 4 and 5 of subscribe: the `max_players` check, then the subscription and its
    /// `playerConnected`. `conn` must be idle.
    pub(super) fn try_subscribe(
        &mut self,
        conn: ConnId,
        entry: ConnId,
    ) -> Result<(), SubscribeError> {
        let is_player = self.role(conn) == Some(Role::Player);
        let capped = self.role(entry) == Some(Role::Streamer) && self.config.max_players > 0;
        let Some(e) = self.entry(entry) else {
            return Ok(());
        };
        if is_player && capped && e.player_subscribers >= self.config.max_players as usize {
            let full = SubscribeError::Full {
                id: e.id.clone(),
                max: self.config.max_players,
            };
            self.refusals.max_players += 1;
            return Err(full);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let Some(sub) = self.subscriber_mut(conn) else {
            return Ok(());
        };
        sub.state = SubState::Subscribed { entry, seq };
        let player_id = sub.player_id.clone();
        let send_offer = (is_player && sub.browser_offers).then_some(false);
        if let Some(e) = self.entry_mut(entry) {
            e.subscribers.insert(seq, conn);
            if is_player {
                e.player_subscribers += 1;
            }
        }
        self.send(
            entry,
            &ServerMessage::PlayerConnected {
                data_channel: true,
                sfu: !is_player,
                player_id: &player_id,
                send_offer,
            },
            Charge::Always,
        );
        Ok(())
    }

    /// Ends `conn`'s subscription, if any (unsubscribe, re-subscribe, and every path that
    /// ends it while `conn` stays in the tables).
    pub(super) fn end_subscription(&mut self, conn: ConnId) {
        let is_player = self.role(conn) == Some(Role::Player);
        let Some(sub) = self.subscriber_mut(conn) else {
            return;
        };
        let (entry, seq) = match sub.state {
            SubState::Subscribed { entry, seq } => (entry, seq),
            SubState::Remote { node, sub } => return self.unsubscribe_remote(conn, node, sub),
            SubState::Idle => return,
        };
        sub.state = SubState::Idle;
        let player_id = sub.player_id.clone();
        self.unlink(entry, seq, conn, &player_id, is_player);
    }

    /// Removes a subscription from its entry and, while the entry's connection is open, sends
    /// it the one `playerDisconnected` this subscription gets.
    pub(super) fn unlink(
        &mut self,
        entry: ConnId,
        seq: u64,
        subscriber: ConnId,
        player_id: &str,
        is_player: bool,
    ) {
        let Some(e) = self.entry_mut(entry) else {
            return;
        };
        if e.subscribers.remove(&seq) != Some(subscriber) {
            return;
        }
        if is_player {
            e.player_subscribers = e.player_subscribers.saturating_sub(1);
        }
        self.send(
            entry,
            &ServerMessage::PlayerDisconnected { player_id },
            Charge::Ends(subscriber),
        );
    }

    /// The entry's own connection ended: its players are closed, its SFUs lose their upstream.
    pub(super) fn entry_left(&mut self, entry: &Entry) {
        for &sub in entry.subscribers.values() {
            match self.role(sub) {
                Some(Role::Player) => {
                    if let Some(s) = self.subscriber_mut(sub) {
                        s.state = SubState::Idle;
                    }
                    self.close(sub, close::STREAMER_DISCONNECTED);
                }
                Some(Role::Sfu) => self.lose_upstream(sub),
                _ => {}
            }
        }
    }

    /// An SFU's upstream is gone: first each of its own subscribers ends (the SFU is told,
    /// players are closed), then the SFU gets `streamerDisconnected` (PROTOCOL.md §7.11).
    pub(super) fn lose_upstream(&mut self, sfu: ConnId) {
        if let Some(s) = self.subscriber_mut(sfu) {
            s.state = SubState::Idle;
        }
        if super::remote::is_proxy(sfu) {
            // An SFU on another node: its own node runs the rest.
            self.end_proxy(sfu, super::Ending::StreamerLeft);
            return;
        }
        self.drop_downstream(sfu);
        self.send(sfu, &ServerMessage::StreamerDisconnected, Charge::Receiver);
    }

    /// Ends every subscription to the SFU `sfu` while it stays connected: it gets one
    /// `playerDisconnected` each; players are closed 1000, SFUs lose their upstream.
    fn drop_downstream(&mut self, sfu: ConnId) {
        let Some(entry) = self.entry_mut(sfu) else {
            return;
        };
        entry.streaming = false;
        let subscribers: Vec<ConnId> = entry.subscribers.values().copied().collect();
        self.table_changed();
        for sub in subscribers {
            self.end_subscription(sub);
            match self.role(sub) {
                Some(Role::Player) => self.close(sub, close::STREAMER_DISCONNECTED),
                Some(Role::Sfu) => self.lose_upstream(sub),
                _ => {}
            }
        }
    }

    /// `stopStreaming` from an SFU (PROTOCOL.md §7.12).
    pub(super) fn stop_streaming(&mut self, sfu: ConnId) {
        self.drop_downstream(sfu);
    }

    /// `disconnectPlayer` from a streamer.
    pub(super) fn disconnect_player(
        &mut self,
        streamer: ConnId,
        player_id: &PlayerIdValue,
        reason: Option<String>,
    ) {
        let Some(target) = self.own_subscriber(streamer, player_id) else {
            self.warn(
                streamer,
                format_args!(
                    "disconnectPlayer for {}, which is not one of its subscribers; ignored",
                    peer_player_id(player_id)
                ),
            );
            return;
        };
        let reason = match reason.as_deref() {
            Some(r) if !r.is_empty() => close::truncate_reason(r).to_owned(),
            _ => close::DISCONNECTED_BY_STREAMER.reason.to_owned(),
        };
        self.close_with(target, close::DISCONNECTED_BY_STREAMER.code, reason);
    }

    /// The subscriber of `entry` that `player_id` names, if any (PROTOCOL.md §4).
    pub(super) fn own_subscriber(
        &self,
        entry: ConnId,
        player_id: &PlayerIdValue,
    ) -> Option<ConnId> {
        let key = player_id.match_key()?;
        let &conn = self.player_ids.get(key.as_ref())?;
        match self.subscriber(conn)?.state {
            SubState::Subscribed { entry: e, .. } if e == entry => Some(conn),
            _ => None,
        }
    }

    /// Cirrus UE5.0/5.1 (`subscribe_at_connect`): the new player is subscribed to the first
    /// streamer at once, so that streamer gets `playerConnected` and sends its offer to a page
    /// that never subscribes. [`Router::admit_player`] has checked that a streamer is there.
    pub(super) fn subscribe_at_connect(&mut self, player: ConnId) {
        let Some(first) = self.first_streamer().filter(|&e| self.may_watch(player, e)) else {
            return;
        };
        if let Err(SubscribeError::Full { id, max }) = self.try_subscribe(player, first) {
            self.subscribe_failed(
                player,
                &format!("Streamer {id} is full. Max players = {max}."),
            );
        }
    }

    /// Whether `sub`'s token lets it watch `entry` (a JWT's `streamers` claim).
    fn may_watch(&self, sub: ConnId, entry: ConnId) -> bool {
        let id = self.entry(entry).map(|e| e.id.as_str());
        self.subscriber(sub)
            .is_some_and(|s| id.is_some_and(|id| s.scope.allows(id)))
    }

    /// Legacy auto-subscribe (PROTOCOL.md §8) of an idle player. True if it is now subscribed.
    pub(super) fn auto_subscribe(&mut self, player: ConnId) -> bool {
        let first = self
            .table
            .iter()
            .copied()
            .find(|&entry| self.may_watch(player, entry));
        let Some(first) = first else {
            self.warn(player, "not subscribed and no streamer connected; closing");
            self.close(player, close::NO_STREAMER);
            return false;
        };
        self.warn(
            player,
            "not subscribed; auto-subscribing to the first streamer",
        );
        match self.try_subscribe(player, first) {
            Ok(()) => true,
            Err(SubscribeError::Full { id, max }) => {
                self.subscribe_failed(
                    player,
                    &format!("Streamer {id} is full. Max players = {max}."),
                );
                false
            }
        }
    }
}
