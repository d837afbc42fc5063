//! Forwarding (PROTOCOL.md §4, rules F1–F6): which peer a relayed message goes to, and the
//! only edits the server makes to it (`playerId`, `sfuId`).

use protocol::{ForwardKind, PlayerIdValue, Relay};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::debug;

use crate::logging::peer_player_id;

use super::{Charge, ConnId, Role, Router, SubState};

impl Router {
    pub(super) fn forward(
        &mut self,
        from: ConnId,
        role: Role,
        kind: ForwardKind,
        player_id: PlayerIdValue,
        relay: Relay,
    ) {
        use ForwardKind::*;
        match (role, kind) {
            (Role::Streamer, Offer | Answer | IceCandidate) => {
                self.forward_to_own_subscriber(from, kind, &player_id, relay, false)
            }
            (Role::Streamer, LayerPreference) => self.forward_to_sfu_subscribers(from, relay),
            (
                Role::Player,
                Offer
                | Answer
                | IceCandidate
                | DataChannelRequest
                | PeerDataChannelsReady
                | LayerPreference,
            ) => self.player_to_entry(from, relay),
            (Role::Sfu, Offer | PeerDataChannels) => {
                self.forward_to_own_subscriber(from, kind, &player_id, relay, true)
            }
            (Role::Sfu, Answer | StreamerDataChannels) => {
                self.sfu_to_upstream(from, kind, &player_id, relay)
            }
            _ => self.warn(
                from,
                format_args!("a {role} may not send {:?}; ignored", kind.as_str()),
            ),
        }
    }

    /// F1 (streamer) and F3 (SFU, `playerId` removed): to the sender's subscriber that
    /// `playerId` names.
    fn forward_to_own_subscriber(
        &mut self,
        from: ConnId,
        kind: ForwardKind,
        player_id: &PlayerIdValue,
        mut relay: Relay,
        strip_player_id: bool,
    ) {
        if *player_id == PlayerIdValue::Absent {
            self.warn(
                from,
                format_args!("{} without playerId; dropped", kind.as_str()),
            );
            return;
        }
        let Some(target) = self.own_subscriber(from, player_id) else {
            self.warn(
                from,
                format_args!(
                    "{} for {}, which is not one of its subscribers; dropped",
                    kind.as_str(),
                    peer_player_id(player_id)
                ),
            );
            return;
        };
        if strip_player_id {
            relay.remove("playerId");
        }
        self.send_text(target, relay.into_string().into(), Charge::Receiver);
    }

    /// F6: a streamer's layerPreference goes to every SFU subscribed to it.
    fn forward_to_sfu_subscribers(&mut self, from: ConnId, relay: Relay) {
        let Some(entry) = self.entry(from) else {
            return;
        };
        let sfus: Vec<ConnId> = entry
            .subscribers
            .values()
            .copied()
            .filter(|&c| self.role(c) == Some(Role::Sfu))
            .collect();
        if sfus.is_empty() {
            debug!(conn = %from, "layerPreference with no SFU subscribed; dropped");
            return;
        }
        let text: Utf8Bytes = relay.into_string().into();
        for sfu in sfus {
            self.send_text(sfu, text.clone(), Charge::Receiver);
        }
    }

    /// F2: a player's message goes to its entry with `playerId` set to the player's id; an
    /// idle player is auto-subscribed first (PROTOCOL.md §8).
    fn player_to_entry(&mut self, from: ConnId, mut relay: Relay) {
        let subscribed = matches!(
            self.subscriber(from).map(|s| s.state),
            Some(SubState::Subscribed { .. } | SubState::Remote { .. })
        );
        if !subscribed && !self.auto_subscribe(from) {
            return;
        }
        let Some(sub) = self.subscriber(from) else {
            return;
        };
        let entry = match sub.state {
            SubState::Subscribed { entry, .. } => entry,
            SubState::Remote { node, sub } => return self.forward_remote(from, node, sub, relay),
            SubState::Idle => return,
        };
        relay.set_str("playerId", &sub.player_id);
        self.send_text(entry, relay.into_string().into(), Charge::Sender(from));
    }

    /// F4 (answer) and F5 (streamerDataChannels, `sfuId` set): from an SFU to its upstream.
    fn sfu_to_upstream(
        &mut self,
        from: ConnId,
        kind: ForwardKind,
        player_id: &PlayerIdValue,
        mut relay: Relay,
    ) {
        let Some(sub) = self.subscriber(from) else {
            return;
        };
        let entry = match sub.state {
            SubState::Subscribed { entry, .. } => entry,
            SubState::Remote { node, sub } => return self.forward_remote(from, node, sub, relay),
            SubState::Idle => {
                self.warn(
                    from,
                    format_args!("{} while not subscribed; dropped", kind.as_str()),
                );
                return;
            }
        };
        let own_id = sub.player_id.clone();
        if !player_id.names_a_player() {
            relay.set_str("playerId", &own_id);
        }
        if kind == ForwardKind::StreamerDataChannels {
            relay.set_str("sfuId", &own_id);
        }
        self.send_text(entry, relay.into_string().into(), Charge::Sender(from));
    }

    /// F2, F4, F5 to an entry on another node: the message leaves as the subscriber sent it; the
    /// entry's node makes the edits (its proxy of the subscriber runs these same rules).
    fn forward_remote(&mut self, from: ConnId, node: super::Node, sub: u64, relay: Relay) {
        let out = super::RemoteOut::Forward {
            node,
            player: from,
            sub,
            text: relay.into_string().into(),
        };
        self.outputs.push_back(super::Output::Remote(out));
    }
}
