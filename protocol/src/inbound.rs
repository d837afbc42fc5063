//! Incoming messages, classified by `type` and read only as far as routing needs
//! (PROTOCOL.md §3). A message the server forwards stays a [`Relay`], whole.

use serde_json::value::RawValue;

use crate::number::integer_decimal;
use crate::relay::{Members, Relay, check_depth, parse_members};

/// Why a text could not be classified. The connection that sent it stays open (PROTOCOL.md §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON at all.
    NotJson(String),
    /// JSON, but not an object.
    NotObject,
    /// An object without a `type`.
    MissingType,
    /// `type` is not a string.
    TypeNotString,
    /// Arrays and objects nested deeper than [`crate::relay::MAX_NESTING_DEPTH`].
    TooDeep,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotJson(e) => write!(f, "not JSON: {e}"),
            Self::NotObject => f.write_str("JSON that is not an object"),
            Self::MissingType => f.write_str("no `type` field"),
            Self::TypeNotString => f.write_str("`type` is not a string"),
            Self::TooDeep => write!(
                f,
                "nested deeper than {} levels",
                crate::relay::MAX_NESTING_DEPTH
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// The message types the server forwards from one peer to another (PROTOCOL.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardKind {
    Offer,
    Answer,
    IceCandidate,
    LayerPreference,
    DataChannelRequest,
    PeerDataChannelsReady,
    PeerDataChannels,
    StreamerDataChannels,
}

impl ForwardKind {
    /// The kind a message `type` names, if the server forwards it.
    fn from_type(ty: &str) -> Option<Self> {
        Some(match ty {
            "offer" => Self::Offer,
            "answer" => Self::Answer,
            "iceCandidate" => Self::IceCandidate,
            "layerPreference" => Self::LayerPreference,
            "dataChannelRequest" => Self::DataChannelRequest,
            "peerDataChannelsReady" => Self::PeerDataChannelsReady,
            "peerDataChannels" => Self::PeerDataChannels,
            "streamerDataChannels" => Self::StreamerDataChannels,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offer => "offer",
            Self::Answer => "answer",
            Self::IceCandidate => "iceCandidate",
            Self::LayerPreference => "layerPreference",
            Self::DataChannelRequest => "dataChannelRequest",
            Self::PeerDataChannelsReady => "peerDataChannelsReady",
            Self::PeerDataChannels => "peerDataChannels",
            Self::StreamerDataChannels => "streamerDataChannels",
        }
    }
}

/// The `playerId` of a message as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayerIdValue {
    Absent,
    /// A JSON string (decoded).
    String(String),
    /// A JSON number, as its token.
    Number(String),
    /// Any other JSON value (null, bool, array, object).
    Other,
}

impl PlayerIdValue {
    fn from_raw(raw: Option<&RawValue>) -> Self {
        let Some(raw) = raw else {
            return Self::Absent;
        };
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"') => serde_json::from_str(text).map_or(Self::Other, Self::String),
            Some(b'-' | b'0'..=b'9') => Self::Number(text.to_owned()),
            _ => Self::Other,
        }
    }

    /// The player id this value matches (PROTOCOL.md §4): a string as is; a non-negative
    /// integer number by its decimal form; anything else matches nothing.
    pub fn match_key(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Self::String(s) => Some(std::borrow::Cow::Borrowed(s)),
            Self::Number(n) => integer_decimal(n).map(std::borrow::Cow::Owned),
            Self::Absent | Self::Other => None,
        }
    }

    /// True for a non-empty string or a non-zero number: the SFU named a player (F4, F5).
    pub fn names_a_player(&self) -> bool {
        match self {
            Self::String(s) => !s.is_empty(),
            Self::Number(n) => integer_decimal(n).is_none_or(|d| d != "0"),
            Self::Absent | Self::Other => false,
        }
    }

    /// How the value reads in a log line.
    pub fn describe(&self) -> String {
        match self {
            Self::Absent => "(none)".to_owned(),
            Self::String(s) => format!("{s:?}"),
            Self::Number(n) => n.clone(),
            Self::Other => "(not a string or number)".to_owned(),
        }
    }
}

/// An incoming message, read as far as the server needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Streamer or SFU names itself; `id` is `None` when absent or not a string.
    EndpointId {
        id: Option<String>,
    },
    /// Player or SFU asks for the streamer list.
    ListStreamers,
    /// Player or SFU subscribes; `streamer_id` is `None` when absent or not a string.
    Subscribe {
        streamer_id: Option<String>,
    },
    /// Player or SFU ends its subscription.
    Unsubscribe,
    /// A message routed to another peer, kept whole.
    Forward {
        kind: ForwardKind,
        player_id: PlayerIdValue,
        relay: Relay,
    },
    /// Streamer asks to close one of its subscribers.
    DisconnectPlayer {
        player_id: PlayerIdValue,
        /// A string `reason`, if the message had one.
        reason: Option<String>,
    },
    /// SFU starts or stops offering its stream to players.
    StartStreaming,
    StopStreaming,
    /// Protocol ping; `time` is the raw JSON token, `None` when absent or `null`.
    Ping {
        time: Option<String>,
    },
    /// Protocol pong.
    Pong,
    /// Old frontends' stats report.
    Stats,
    /// A type only the server sends.
    ServerOnly(&'static str),
    /// A type this server does not know.
    Unknown(String),
}

/// The types only the server sends (PROTOCOL.md §2 table, ping excepted).
const SERVER_ONLY: [&str; 10] = [
    "config",
    "identify",
    "endpointIdConfirm",
    "streamerIdChanged",
    "playerCount",
    "streamerList",
    "subscribeFailed",
    "playerConnected",
    "playerDisconnected",
    "streamerDisconnected",
];

fn field<'a>(members: &'a Members<'_>, key: &str) -> Option<&'a RawValue> {
    members.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

fn string_field(members: &Members<'_>, key: &str) -> Option<String> {
    let raw = field(members, key)?.get();
    if raw.starts_with('"') {
        serde_json::from_str(raw).ok()
    } else {
        None
    }
}

impl Inbound {
    /// Classifies one message text.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let members = parse_members(text)?;
        let ty = field(&members, "type").ok_or(ParseError::MissingType)?;
        let ty: std::borrow::Cow<'_, str> = if ty.get().starts_with('"') {
            serde_json::from_str(ty.get()).map_err(|_| ParseError::TypeNotString)?
        } else {
            return Err(ParseError::TypeNotString);
        };
        if let Some(kind) = ForwardKind::from_type(&ty) {
            // The hot path: nesting is checked while the message is copied.
            return Ok(Self::Forward {
                kind,
                player_id: PlayerIdValue::from_raw(field(&members, "playerId")),
                relay: Relay::from_members(&members)?,
            });
        }
        check_depth(&members)?;
        Ok(match &*ty {
            "endpointId" => Self::EndpointId {
                id: string_field(&members, "id"),
            },
            "listStreamers" => Self::ListStreamers,
            "subscribe" => Self::Subscribe {
                streamer_id: string_field(&members, "streamerId"),
            },
            "unsubscribe" => Self::Unsubscribe,
            "disconnectPlayer" => Self::DisconnectPlayer {
                player_id: PlayerIdValue::from_raw(field(&members, "playerId")),
                reason: string_field(&members, "reason"),
            },
            "startStreaming" => Self::StartStreaming,
            "stopStreaming" => Self::StopStreaming,
            "ping" => Self::Ping {
                time: field(&members, "time")
                    .map(|t| t.get())
                    .filter(|t| *t != "null")
                    .map(crate::relay::compact),
            },
            "pong" => Self::Pong,
            "stats" => Self::Stats,
            other => match SERVER_ONLY.iter().find(|t| **t == other) {
                Some(t) => Self::ServerOnly(t),
                None => Self::Unknown(other.to_owned()),
            },
        })
    }

    /// The message's `type`, for log lines.
    pub fn type_name(&self) -> &str {
        match self {
            Self::EndpointId { .. } => "endpointId",
            Self::ListStreamers => "listStreamers",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Forward { kind, .. } => kind.as_str(),
            Self::DisconnectPlayer { .. } => "disconnectPlayer",
            Self::StartStreaming => "startStreaming",
            Self::StopStreaming => "stopStreaming",
            Self::Ping { .. } => "ping",
            Self::Pong => "pong",
            Self::Stats => "stats",
            Self::ServerOnly(t) => t,
            Self::Unknown(t) => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_routing_fields() {
        assert_eq!(
            Inbound::parse(
                r#"{"type":"endpointId","id":"DefaultStreamer","protocolVersion":"1.1.0"}"#
            ),
            Ok(Inbound::EndpointId {
                id: Some("DefaultStreamer".into())
            })
        );
        assert_eq!(
            Inbound::parse(r#"{"type":"endpointId","id":5}"#),
            Ok(Inbound::EndpointId { id: None })
        );
        assert_eq!(
            Inbound::parse(r#"{"type":"subscribe"}"#),
            Ok(Inbound::Subscribe { streamer_id: None })
        );
        assert_eq!(
            Inbound::parse(r#"{"type":"ping","time":1767225600000123}"#),
            Ok(Inbound::Ping {
                time: Some("1767225600000123".into())
            })
        );
        assert_eq!(
            Inbound::parse(r#"{"type":"ping","time":null}"#),
            Ok(Inbound::Ping { time: None })
        );
        assert_eq!(
            Inbound::parse(r#"{"type":"ping"}"#),
            Ok(Inbound::Ping { time: None })
        );
        assert_eq!(
            Inbound::parse(r#"{"type":"playerConnected"}"#),
            Ok(Inbound::ServerOnly("playerConnected"))
        );
        assert_eq!(
            Inbound::parse(r#"{"type":"newThing"}"#),
            Ok(Inbound::Unknown("newThing".into()))
        );
    }

    #[test]
    fn forwards_keep_the_whole_message() {
        let text = r#"{"type":"offer","playerId":12,"sdp":"v=0","x":{"y":1.50}}"#;
        let Ok(Inbound::Forward {
            kind,
            player_id,
            relay,
        }) = Inbound::parse(text)
        else {
            panic!("not a forward");
        };
        assert_eq!(kind, ForwardKind::Offer);
        assert_eq!(player_id, PlayerIdValue::Number("12".into()));
        assert_eq!(player_id.match_key().as_deref(), Some("12"));
        assert_eq!(relay.as_str(), text);
    }

    #[test]
    fn every_forwarded_type_is_a_forward() {
        for kind in [
            ForwardKind::Offer,
            ForwardKind::Answer,
            ForwardKind::IceCandidate,
            ForwardKind::LayerPreference,
            ForwardKind::DataChannelRequest,
            ForwardKind::PeerDataChannelsReady,
            ForwardKind::PeerDataChannels,
            ForwardKind::StreamerDataChannels,
        ] {
            let text = format!(r#"{{"type":"{}"}}"#, kind.as_str());
            assert!(
                matches!(Inbound::parse(&text), Ok(Inbound::Forward { kind: k, .. }) if k == kind),
                "{text}"
            );
        }
    }

    #[test]
    fn player_id_values() {
        let pid = |t: &str| PlayerIdValue::from_raw(serde_json::from_str::<&RawValue>(t).ok());
        assert_eq!(pid("\"Player0\"").match_key().as_deref(), Some("Player0"));
        assert_eq!(pid("1.0").match_key().as_deref(), Some("1"));
        assert_eq!(pid("-1").match_key(), None);
        assert_eq!(pid("true").match_key(), None);
        assert!(pid("\"x\"").names_a_player());
        assert!(!pid("\"\"").names_a_player());
        assert!(!pid("0").names_a_player());
        assert!(pid("3").names_a_player());
        assert!(!pid("null").names_a_player());
        assert!(!PlayerIdValue::Absent.names_a_player());
    }

    #[test]
    fn bad_input_is_classified() {
        assert!(matches!(
            Inbound::parse("hello"),
            Err(ParseError::NotJson(_))
        ));
        assert_eq!(Inbound::parse("null"), Err(ParseError::NotObject));
        assert_eq!(Inbound::parse("[]"), Err(ParseError::NotObject));
        assert_eq!(Inbound::parse("{}"), Err(ParseError::MissingType));
        assert_eq!(
            Inbound::parse(r#"{"type":3}"#),
            Err(ParseError::TypeNotString)
        );
    }

    #[test]
    fn too_deep_messages_are_bad_input_whatever_their_type() {
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        let limit = crate::MAX_NESTING_DEPTH;
        for ty in ["iceCandidate", "offer", "subscribe", "ping", "noSuchType"] {
            let ok = format!(r#"{{"type":"{ty}","x":{}}}"#, nested(limit - 1));
            assert!(Inbound::parse(&ok).is_ok(), "{ty}");
            let deep = format!(r#"{{"type":"{ty}","x":{}}}"#, nested(limit));
            assert_eq!(Inbound::parse(&deep), Err(ParseError::TooDeep), "{ty}");
        }
        assert_eq!(
            ParseError::TooDeep.to_string(),
            "nested deeper than 64 levels"
        );
    }
}
