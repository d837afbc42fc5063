//! The messages the server creates, with exactly the keys PROTOCOL.md §2 shows, in that order:
//! `type` first, then Wilbur's protobuf field order.

use serde::Serialize;
use serde_json::value::RawValue;

/// A message the server sends. Each variant says who receives it.
#[derive(Debug, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage<'a> {
    /// To every connection, first: the configured peer connection options.
    Config {
        peer_connection_options: &'a RawValue,
        protocol_version: &'a str,
    },
    /// To streamers and SFUs after `config`: asks for `endpointId`.
    Identify,
    /// To a streamer or SFU: the id it now has.
    EndpointIdConfirm { committed_id: &'a str },
    /// To an entry's subscribers when its id changed.
    StreamerIdChanged {
        #[serde(rename = "newID")]
        new_id: &'a str,
    },
    /// To a player after `config`: open player connections, this one included.
    PlayerCount { count: usize },
    /// To a player or SFU: the entries it may subscribe to.
    StreamerList { ids: &'a [&'a str] },
    /// To a player or SFU whose subscribe did not take.
    SubscribeFailed { message: &'a str },
    /// To a streamer or SFU: a subscriber arrived.
    PlayerConnected {
        data_channel: bool,
        sfu: bool,
        player_id: &'a str,
        /// Cirrus (UE5.2–5.4): `false` when the player asked to make the offer itself
        /// (`?OfferToReceive` on its URL). Absent otherwise, as in Wilbur.
        #[serde(skip_serializing_if = "Option::is_none")]
        send_offer: Option<bool>,
    },
    /// To a streamer or SFU: a subscriber left.
    PlayerDisconnected { player_id: &'a str },
    /// To an SFU whose upstream streamer left.
    StreamerDisconnected,
    /// To the sender of a ping; `time` is the ping's token, unchanged.
    Pong { time: &'a RawValue },
    /// To players, when the server's protocol ping is on.
    Ping { time: u64 },
}

impl ServerMessage<'_> {
    /// Compact JSON text.
    pub fn to_json(&self) -> String {
        // Every field is a string, number, bool, slice of strings or already valid JSON, so
        // serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn exact_text_of_every_server_message() {
        let cases: Vec<(ServerMessage<'_>, &str)> = vec![
            (
                ServerMessage::Config {
                    peer_connection_options: raw("{}"),
                    protocol_version: crate::PROTOCOL_VERSION,
                },
                r#"{"type":"config","peerConnectionOptions":{},"protocolVersion":"1.3.0"}"#,
            ),
            (ServerMessage::Identify, r#"{"type":"identify"}"#),
            (
                ServerMessage::EndpointIdConfirm {
                    committed_id: "DefaultStreamer1",
                },
                r#"{"type":"endpointIdConfirm","committedId":"DefaultStreamer1"}"#,
            ),
            (
                ServerMessage::StreamerIdChanged {
                    new_id: "DefaultStreamer1",
                },
                r#"{"type":"streamerIdChanged","newID":"DefaultStreamer1"}"#,
            ),
            (
                ServerMessage::PlayerCount { count: 3 },
                r#"{"type":"playerCount","count":3}"#,
            ),
            (
                ServerMessage::StreamerList {
                    ids: &["DefaultStreamer", "SFU"],
                },
                r#"{"type":"streamerList","ids":["DefaultStreamer","SFU"]}"#,
            ),
            (
                ServerMessage::SubscribeFailed {
                    message: "Streamer X does not exist.",
                },
                r#"{"type":"subscribeFailed","message":"Streamer X does not exist."}"#,
            ),
            (
                ServerMessage::PlayerConnected {
                    data_channel: true,
                    sfu: false,
                    player_id: "Player0",
                    send_offer: None,
                },
                r#"{"type":"playerConnected","dataChannel":true,"sfu":false,"playerId":"Player0"}"#,
            ),
            (
                ServerMessage::PlayerConnected {
                    data_channel: true,
                    sfu: false,
                    player_id: "Player0",
                    send_offer: Some(false),
                },
                r#"{"type":"playerConnected","dataChannel":true,"sfu":false,"playerId":"Player0","sendOffer":false}"#,
            ),
            (
                ServerMessage::PlayerDisconnected {
                    player_id: "Player0",
                },
                r#"{"type":"playerDisconnected","playerId":"Player0"}"#,
            ),
            (
                ServerMessage::StreamerDisconnected,
                r#"{"type":"streamerDisconnected"}"#,
            ),
            (
                ServerMessage::Pong {
                    time: raw("1767225600000"),
                },
                r#"{"type":"pong","time":1767225600000}"#,
            ),
            (
                ServerMessage::Ping {
                    time: 1767225600000,
                },
                r#"{"type":"ping","time":1767225600000}"#,
            ),
        ];
        for (message, text) in cases {
            assert_eq!(message.to_json(), text);
        }
    }
}
