//! The routing core's invariants, checked after every step of a sequence of inputs: no panic,
//! exactly one `playerDisconnected` per `playerConnected`, and tables that agree with each other
//! and with what the connections were told. Shared by the property test (`tests.rs`) and the
//! `router` fuzz target (`crate::fuzzing`); built only for those.

use std::collections::BTreeSet;

use protocol::Inbound;

use super::{ConnId, Opening, Output, Role, Router, RouterConfig, SubState};
use crate::config::PlayerIdStyle;

/// One input to the router. Connections are named by their index among those opened so far
/// (modulo their number), ids by their index in [`IDS`], player ids by a number (see `pid`);
/// one byte each, so that the fuzzer's mutations of a byte land on another valid name.
#[derive(Debug, Clone)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub(crate) enum Op {
    /// A connection on the port of this role; with `?OfferToReceive` if true.
    Open(Role, bool),
    EndpointId(u8, u8),
    Subscribe(u8, u8),
    Unsubscribe(u8),
    /// F2 from a player (may auto-subscribe).
    PlayerOffer(u8),
    /// F1/F3 from an entry to a player id.
    EntryOffer(u8, u8),
    /// F4 from an SFU (or anyone).
    Answer(u8),
    DisconnectPlayer(u8, u8),
    StartStreaming(u8),
    StopStreaming(u8),
    Pong(u8),
    Close(u8),
    /// Time passes by this many milliseconds, then the protocol-ping timer fires.
    Tick(u16),
    /// The `playerCount` timer fires (`player_count_updates`).
    CountTick,
    /// A message of any type (by index in [`TYPES`]) with any routing fields.
    Message(u8, Fields),
    /// Any text, parsed as a connection task does; what does not parse is dropped there.
    Text(u8, String),
}

/// The fields the router reads, each present or not, of any JSON shape.
#[derive(Debug, Clone, Default)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub(crate) struct Fields {
    pub(crate) ty: u8,
    pub(crate) player_id: Value,
    /// `id`, `streamerId` and `reason`.
    pub(crate) id: Value,
    pub(crate) time: Value,
    /// A field the server does not know.
    pub(crate) extra: Value,
}

/// A JSON value of one of the shapes peers send.
#[derive(Debug, Clone, Default)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub(crate) enum Value {
    #[default]
    Absent,
    /// A player id the router may have given (see `pid`), as a string.
    Player(u8),
    /// One of [`IDS`].
    Id(u8),
    String(String),
    Number(i64),
    Float(f64),
    Null,
    Bool(bool),
    Array(Vec<Self>),
}

impl Value {
    fn json(&self, numeric: bool) -> Option<serde_json::Value> {
        Some(match self {
            Self::Absent => return None,
            Self::Player(k) => pid(*k, numeric).into(),
            Self::Id(i) => IDS[usize::from(*i) % IDS.len()].into(),
            Self::String(s) => s.as_str().into(),
            Self::Number(n) => (*n).into(),
            Self::Float(f) => (*f).into(),
            Self::Null => serde_json::Value::Null,
            Self::Bool(b) => (*b).into(),
            Self::Array(items) => items
                .iter()
                .take(4)
                .filter_map(|v| v.json(numeric))
                .collect::<Vec<_>>()
                .into(),
        })
    }
}

/// Streamer and SFU ids asked for and subscribed to.
/// `UnknownStreamer` is what an entry is called until it sends `endpointId`.
pub(crate) const IDS: [&str; 7] = ["A", "B", "A1", "SFU", "", "Nope", "UnknownStreamer"];

/// Every message type a peer might send: the ones the server reads, the ones only it sends, and
/// one it does not know (`other`): the metrics' list of every type either way.
use crate::metrics::MESSAGE_TYPES as TYPES;

/// The router's settings a sequence runs under.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Settings {
    pub(crate) max_players: u32,
    pub(crate) numeric: bool,
    pub(crate) max_player_count: Option<u32>,
    pub(crate) subscribe_at_connect: bool,
    pub(crate) player_count_updates: bool,
}

/// Player id number `k` as the router names it in `style`: `Player{k}`, or `{k+1}`.
fn pid(k: u8, numeric: bool) -> String {
    if numeric {
        format!("{}", k / 2 + 1)
    } else {
        format!("Player{k}")
    }
}

/// What the check has seen: the open connections and the playerConnected not yet matched.
#[derive(Default)]
struct Model {
    opened: Vec<ConnId>,
    open: BTreeSet<ConnId>,
    /// (C, X): playerConnected {X} was sent to C, no playerDisconnected {X} yet.
    pending: BTreeSet<(ConnId, String)>,
}

impl Model {
    fn ended(&mut self, conn: ConnId) {
        self.open.remove(&conn);
        self.pending.retain(|(c, _)| *c != conn);
    }

    fn observe(&mut self, out: &Output) -> Result<(), String> {
        match out {
            Output::Send { to, text, .. } => {
                ensure!(self.open.contains(to), "sent to {to}, not open: {text}");
                let v: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| format!("{text}: {e}"))?;
                let pid = || v["playerId"].as_str().unwrap_or_default().to_owned();
                match v["type"].as_str() {
                    Some("playerConnected") => ensure!(
                        self.pending.insert((*to, pid())),
                        "second playerConnected {} to {to}",
                        pid()
                    ),
                    Some("playerDisconnected") => ensure!(
                        self.pending.remove(&(*to, pid())),
                        "playerDisconnected {} to {to} without playerConnected",
                        pid()
                    ),
                    _ => {}
                }
            }
            Output::Close { conn, code, .. } => {
                ensure!(self.open.contains(conn), "close of {conn}, not open");
                ensure!([1000, 1011, 1013].contains(code), "close code {code}");
                self.ended(*conn);
            }
            Output::Drop { conn } => {
                ensure!(self.open.contains(conn), "drop of {conn}, not open");
                self.ended(*conn);
            }
            // A node alone never sends to another (the cluster's model is in tests_remote.rs).
            Output::Remote(out) => return Err(format!("a remote output on one node: {out:?}")),
        }
        Ok(())
    }
}

/// The router's tables agree with each other and with what it has told the connections.
fn check_tables(r: &Router, m: &Model, settings: &Settings) -> Result<(), String> {
    let conns: BTreeSet<ConnId> = r.conns.keys().copied().collect();
    ensure_eq!(conns, m.open);
    // The table: every entry, once, in connection order; ids unique and indexed.
    let entries: Vec<ConnId> = conns
        .iter()
        .copied()
        .filter(|&c| r.entry(c).is_some())
        .collect();
    ensure_eq!(r.table, entries);
    ensure_eq!(r.entry_ids.len(), entries.len());
    for &e in &entries {
        let id = r.entry(e).map(|e| &e.id);
        ensure!(
            id.and_then(|id| r.entry_ids.get(id)) == Some(&e),
            "{e}'s id {id:?} not indexed to it"
        );
    }
    let players = conns
        .iter()
        .filter(|&&c| r.role(c) == Some(Role::Player))
        .count();
    ensure_eq!(r.open_players, players);
    if let Some(max) = settings.max_player_count {
        ensure!(players <= max as usize, "{players} players over {max}");
    }
    // Subscriptions, both ways, and exactly the unmatched playerConnected messages.
    let mut expected = BTreeSet::new();
    for &c in &conns {
        let Some(sub) = r.subscriber(c) else {
            continue;
        };
        ensure_eq!(r.player_ids.get(&sub.player_id), Some(&c));
        if let SubState::Subscribed { entry, seq } = sub.state {
            ensure!(entry != c, "{c} subscribed to itself");
            let Some(e) = r.entry(entry) else {
                return Err(format!("{c} subscribed to a missing entry {entry}"));
            };
            ensure_eq!(e.subscribers.get(&seq), Some(&c));
            expected.insert((entry, sub.player_id.clone()));
        }
    }
    ensure_eq!(
        r.player_ids.len(),
        r.conns
            .values()
            .filter(|p| p.subscriber().is_some())
            .count()
    );
    for &e in &entries {
        let Some(entry) = r.entry(e) else {
            continue;
        };
        let mut player_subs = 0;
        for (&seq, &s) in &entry.subscribers {
            let state = r.subscriber(s).map(|x| x.state);
            ensure_eq!(state, Some(SubState::Subscribed { entry: e, seq }));
            if r.role(s) == Some(Role::Player) {
                player_subs += 1;
            }
        }
        ensure_eq!(entry.player_subscribers, player_subs);
        let max = settings.max_players;
        if max > 0 && r.role(e) == Some(Role::Streamer) {
            ensure!(player_subs <= max as usize, "{e}: {player_subs} players");
        }
    }
    ensure_eq!(expected, m.pending);
    Ok(())
}

/// A message of type `fields.ty` with the fields it asks for, as JSON text.
fn message_text(f: &Fields, numeric: bool) -> String {
    let mut m = serde_json::Map::new();
    m.insert("type".into(), TYPES[usize::from(f.ty) % TYPES.len()].into());
    let id = f.id.json(numeric);
    for (key, value) in [
        ("playerId", f.player_id.json(numeric)),
        ("id", id.clone()),
        ("streamerId", id.clone()),
        ("reason", id),
        ("time", f.time.json(numeric)),
        ("x", f.extra.json(numeric)),
    ] {
        if let Some(value) = value {
            m.insert(key.into(), value);
        }
    }
    serde_json::Value::Object(m).to_string()
}

/// Runs `ops` on a fresh router under `settings`, checking every invariant after each step.
pub(crate) fn run_ops(ops: &[Op], settings: &Settings) -> Result<(), String> {
    let mut r = Router::new(RouterConfig {
        max_players: settings.max_players,
        player_id_style: if settings.numeric {
            PlayerIdStyle::Numeric
        } else {
            PlayerIdStyle::Wilbur
        },
        max_player_count: settings.max_player_count,
        subscribe_at_connect: settings.subscribe_at_connect,
        player_count_updates: settings.player_count_updates,
        ..RouterConfig::default()
    });
    let numeric = settings.numeric;
    // Numbers too, in numeric style: PS1 sends them.
    let pid_json = |k: u8| -> String {
        if numeric && k % 2 == 0 {
            pid(k, true)
        } else {
            format!(r#""{}""#, pid(k, numeric))
        }
    };
    let mut m = Model::default();
    let mut now: u64 = 0;
    for op in ops {
        let text = match op {
            Op::Open(..) | Op::Tick(_) | Op::CountTick | Op::Close(_) => None,
            Op::EndpointId(_, i) => Some(format!(
                r#"{{"type":"endpointId","id":"{}"}}"#,
                IDS[usize::from(*i) % IDS.len()]
            )),
            Op::Subscribe(_, i) => Some(format!(
                r#"{{"type":"subscribe","streamerId":"{}"}}"#,
                IDS[usize::from(*i) % IDS.len()]
            )),
            Op::Unsubscribe(_) => Some(r#"{"type":"unsubscribe"}"#.to_owned()),
            Op::PlayerOffer(_) => Some(r#"{"type":"offer","sdp":"s"}"#.to_owned()),
            Op::EntryOffer(_, k) => Some(format!(
                r#"{{"type":"offer","playerId":{},"sdp":"s"}}"#,
                pid_json(*k)
            )),
            Op::Answer(_) => Some(r#"{"type":"answer","sdp":"s"}"#.to_owned()),
            Op::DisconnectPlayer(_, k) => Some(format!(
                r#"{{"type":"disconnectPlayer","playerId":{}}}"#,
                pid_json(*k)
            )),
            Op::StartStreaming(_) => Some(r#"{"type":"startStreaming"}"#.to_owned()),
            Op::StopStreaming(_) => Some(r#"{"type":"stopStreaming"}"#.to_owned()),
            Op::Pong(_) => Some(r#"{"type":"pong"}"#.to_owned()),
            Op::Message(_, fields) => Some(message_text(fields, numeric)),
            Op::Text(_, text) => Some(text.clone()),
        };
        let target = match op {
            Op::Open(..) | Op::Tick(_) | Op::CountTick => None,
            Op::EndpointId(c, _)
            | Op::Subscribe(c, _)
            | Op::Unsubscribe(c)
            | Op::PlayerOffer(c)
            | Op::EntryOffer(c, _)
            | Op::Answer(c)
            | Op::DisconnectPlayer(c, _)
            | Op::StartStreaming(c)
            | Op::StopStreaming(c)
            | Op::Pong(c)
            | Op::Close(c)
            | Op::Message(c, _)
            | Op::Text(c, _) => match m.opened.get(usize::from(*c) % m.opened.len().max(1)) {
                Some(&conn) => Some(conn),
                None => continue,
            },
        };
        match (op, target, text) {
            (Op::Open(role, offers), ..) => {
                let conn = ConnId(m.opened.len() as u64 + 1);
                m.opened.push(conn);
                m.open.insert(conn);
                let opening = Opening {
                    offer_to_receive: *offers,
                    ..Opening::default()
                };
                r.handle_opened_with(conn, *role, opening);
            }
            (Op::Close(_), Some(conn), _) => {
                m.ended(conn);
                r.handle_closed(conn);
            }
            (Op::Tick(ms), ..) => {
                now += u64::from(*ms);
                r.handle_tick(now);
            }
            (Op::CountTick, ..) => r.handle_player_count_tick(),
            (_, Some(conn), Some(text)) => {
                // What the connection task does with a text frame: a parse error stays there.
                if let Ok(message) = Inbound::parse(&text) {
                    r.handle_message(conn, message, || now);
                }
            }
            _ => {}
        }
        while let Some(out) = r.poll_output() {
            m.observe(&out)?;
        }
        check_tables(&r, &m, settings)?;
    }
    Ok(())
}
