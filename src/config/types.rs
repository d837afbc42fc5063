//! Every configuration key, declared once: its field (name and type), the flag's value name and
//! help line, and any extra flag spellings. The `keys!` macro turns each declaration into a
//! struct field and a row of that struct's `KEYS` table, from which the flags, the key-name
//! checks and `--help` are built. Defaults live only in `signalling.toml` (the bottom layer),
//! validation only in `validate.rs`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::values::{
    de_id_lists, de_optional_limit, de_peer_options, de_seconds, de_string_map, de_unlimited,
    ser_optional_limit, ser_seconds,
};

/// How a key's value is written in flags and in JSON files, where every value may arrive as a
/// string (`--max_players 4`, Wilbur's `"player_port": "80"`): it decides how such a string is
/// read before the one deserialization of the merged settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`); a bare flag means `true`.
    Bool,
    /// A whole number.
    Int,
    /// Seconds, whole or decimal.
    Seconds,
    /// Text taken as it is (addresses, paths, names).
    Text,
    /// A list: comma-separated in a flag or a string.
    List,
    /// A JSON object: a string holding one, or the object itself.
    Json,
}

/// The [`Kind`] of a field type.
pub(crate) trait HasKind {
    const KIND: Kind;
}

macro_rules! has_kind {
    ($kind:ident: $($ty:ty),*) => { $(impl HasKind for $ty { const KIND: Kind = Kind::$kind; })* };
}
has_kind!(Bool: bool);
has_kind!(Int: u16, u32, u64, usize, Option<u32>);
has_kind!(Seconds: Duration);
has_kind!(Text: String, PathBuf, IpAddr, PlayerIdStyle, LogLevel, ConsoleMessages, LogFormat);
has_kind!(List: Vec<String>);
has_kind!(Json: Map<String, Value>, BTreeMap<String, String>, BTreeMap<String, Vec<String>>);

/// One key as declared.
#[derive(Debug)]
pub(crate) struct KeyDecl {
    /// `""` for a top-level key, else the section's name (`"sessions"`).
    pub(crate) section: &'static str,
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// What `--help` shows after the flag (`PORT`, `SECONDS`).
    pub(crate) value_name: &'static str,
    /// The value a bare flag means, when it may be given without one.
    pub(crate) bare: Option<&'static str>,
    /// Further flag spellings (older names, Wilbur's and Cirrus's names for the same thing).
    pub(crate) aliases: &'static [&'static str],
    pub(crate) help: &'static str,
}

impl KeyDecl {
    /// `sessions.max_body_bytes`; a top-level key is its name.
    pub(crate) fn path(&self) -> String {
        if self.section.is_empty() {
            self.name.to_owned()
        } else {
            format!("{}.{}", self.section, self.name)
        }
    }

    /// The flag, without dashes: the key's name, with its section's in front for a key in a
    /// section (`sessions_max_body_bytes`).
    pub(crate) fn flag(&self) -> String {
        if self.section.is_empty() {
            self.name.to_owned()
        } else {
            format!("{}_{}", self.section, self.name)
        }
    }
}

/// Declares a settings struct and its `KEYS` table. Each field:
/// `$(#[serde attrs])* name: Type [VALUE_NAME $(bare = "v")? $(alias = "a")*] "help",`.
/// A struct may end with `sections { field: SectionType = "name", }`, which are the struct's
/// sub-tables (not keys themselves).
macro_rules! keys {
    (
        $(#[$smeta:meta])*
        pub struct $name:ident in $section:literal {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty
                    [$value_name:literal $(bare = $bare:literal)? $(alias = $alias:literal)*]
                    $help:literal,
            )*
        }
        $(sections { $($sfield:ident : $sty:ty = $sname:literal,)* })?
    ) => {
        $(#[$smeta])*
        #[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(
                #[doc = $help]
                $(#[$fmeta])*
                pub $field: $ty,
            )*
            $($(pub $sfield: $sty,)*)?
        }

        impl $name {
            pub(crate) const KEYS: &'static [KeyDecl] = &[
                $(KeyDecl {
                    section: $section,
                    name: stringify!($field),
                    kind: <$ty as HasKind>::KIND,
                    value_name: $value_name,
                    bare: keys!(@bare $($bare)?),
                    aliases: &[$($alias),*],
                    help: $help,
                },)*
            ];

            /// The section tables inside this struct: name and keys.
            #[allow(dead_code, reason = "only the top-level struct has sections")]
            pub(crate) const SECTIONS: &'static [(&'static str, &'static [KeyDecl])] =
                &[$($(($sname, <$sty>::KEYS),)*)?];
        }
    };
    (@bare) => { None };
    (@bare $bare:literal) => { Some($bare) };
}

keys! {
    /// The server's settings. Every key is documented, with its default, in `signalling.toml`.
    pub struct Config in "" {
        bind_address: IpAddr ["IP"]
            "IP address every listener binds to; \"::\" also takes IPv4 where the host allows",
        streamer_port: u16 ["PORT" alias = "StreamerPort"]
            "WebSocket port for streamers",
        player_port: u16 ["PORT" alias = "http_port" alias = "HttpPort"]
            "Port for players: WebSocket and HTTP",
        sfu_port: u16 ["PORT" alias = "SFUPort"]
            "WebSocket port for SFUs",
        #[serde(deserialize_with = "de_peer_options")]
        peer_options: Map<String, Value> ["JSON" alias = "peerConnectionOptions"]
            "JSON object sent to peers as peerConnectionOptions (e.g. iceServers)",
        #[serde(deserialize_with = "de_unlimited")]
        max_players: u32 ["N"]
            "Most subscribers one streamer may have; 0 (or -1) is unlimited",
        #[serde(deserialize_with = "de_optional_limit", serialize_with = "ser_optional_limit")]
        max_player_count: Option<u32> ["N" alias = "MaxPlayerCount"]
            "Players connected at once across all streamers (Cirrus); -1 is unlimited, 0 refuses all",
        player_id_style: PlayerIdStyle ["STYLE"]
            "Player ids: \"wilbur\" (Player0, …) or \"numeric\" (1, … for UE 5.0-5.4)",
        player_count: bool ["BOOL" bare = "true"]
            "Send each player a playerCount message after config",
        player_count_updates: bool ["BOOL" bare = "true"]
            "Re-send playerCount to every player when the count changes (Cirrus), at most 1/s",
        subscribe_at_connect: bool ["BOOL" bare = "true"]
            "Subscribe each player to the first streamer at connect (Cirrus UE5.0/5.1 pages)",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        keepalive_interval: Duration ["SECONDS"]
            "Seconds between WebSocket Pings; 0 sends none",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        keepalive_timeout: Duration ["SECONDS"]
            "Seconds of silence before a peer is dropped; 0 disables; must exceed keepalive_interval",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        player_protocol_ping: Duration ["SECONDS"]
            "Seconds between protocol pings to players; 0 is off",
        max_message_size: usize ["BYTES"]
            "Largest incoming message in bytes; bigger closes with 1009",
        max_queued_messages: usize ["N"]
            "Outgoing messages queued per connection, in each lane of its queue",
        max_queued_bytes: usize ["BYTES"]
            "Outgoing bytes queued per connection, in each lane, and what one peer may have in flight",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        overflow_timeout: Duration ["SECONDS"]
            "Seconds a peer's message may wait for its receiver before the peer is closed 1008",
        worker_threads: usize ["N"]
            "Async worker threads; 0 is one per CPU the process may use",
        log_level: LogLevel ["LEVEL" alias = "log_level_console"]
            "Least severe log level shown on stderr; RUST_LOG overrides it",
        console_messages: ConsoleMessages ["DETAIL" bare = "basic"]
            "Log signalling messages: off, basic, verbose or formatted (bare: basic)",
        serve: bool ["BOOL" bare = "true" alias = "EnableWebserver"]
            "Serve static files from http_root on the player port",
        http_root: PathBuf ["PATH"]
            "The static files' folder, relative to the working directory",
        homepage: String ["FILE" alias = "HomepageFile"]
            "The file under http_root sent for GET / when it has no index.html",
        #[serde(deserialize_with = "de_string_map")]
        additional_routes: BTreeMap<String, String> ["JSON" alias = "AdditionalRoutes"]
            "More folders to serve: a JSON object from URL prefix to folder (Cirrus)",
        cors: bool ["BOOL" bare = "true"]
            "Wilbur's CORS headers on every HTTP route but the session API's",
        cors_allowed_origins: Vec<String> ["LIST"]
            "Origins CORS allows, comma-separated; empty allows any",
        cors_allowed_methods: Vec<String> ["LIST"]
            "Methods CORS allows, comma-separated; empty is GET,HEAD,PUT,PATCH,POST,DELETE",
        cors_allowed_headers: Vec<String> ["LIST"]
            "Request headers CORS allows, comma-separated; empty mirrors the request's",
        cors_credentials: bool ["BOOL" bare = "true"]
            "Allow credentials on cross-origin requests (with listed origins only)",
        reverse_proxy: bool ["BOOL" bare = "true"]
            "Take the client address from X-Forwarded-For/Forwarded through trusted proxies",
        reverse_proxy_num_proxies: u32 ["N"]
            "Proxies trusted to append to X-Forwarded-For (0 trusts none)",
        log_format: LogFormat ["FORMAT"]
            "stderr's lines: text, or json (one object per line, as in the log files)",
        log_folder: PathBuf ["PATH"]
            "Folder of the daily log files (server-YYYY-MM-DD.log, JSON lines); empty writes none",
        log_level_file: LogLevel ["LEVEL"]
            "Least severe level written to the log files",
        log_retention_days: u32 ["DAYS"]
            "Days of log files kept, today's included; 0 keeps all",
        log_config: bool ["BOOL" bare = "true"]
            "Log the effective configuration at start, secrets redacted",
        rest_api: bool ["BOOL" bare = "true"]
            "Wilbur's REST API under /api on the player port",
        use_matchmaker: bool ["BOOL" bare = "true" alias = "UseMatchmaker"]
            "Report to Epic's Matchmaker over TCP (Cirrus)",
        matchmaker_address: String ["HOST" alias = "MatchmakerAddress"]
            "The Matchmaker's address; required with use_matchmaker",
        matchmaker_port: u16 ["PORT" alias = "MatchmakerPort"]
            "The Matchmaker's port",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        matchmaker_retry_interval: Duration ["SECONDS" alias = "MatchmakerRetryInterval"]
            "Seconds before reconnecting to the Matchmaker; doubles up to 30",
        public_ip: String ["ADDRESS" alias = "PublicIp" alias = "publicIp"]
            "The address the Matchmaker sends players to",
        https: bool ["BOOL" bare = "true" alias = "UseHTTPS"]
            "Serve players HTTPS and WSS on https_port (a --https_port flag implies it)",
        https_port: u16 ["PORT" alias = "HttpsPort"]
            "Port for players over HTTPS and WSS, with https on",
        ssl_cert_path: PathBuf ["PATH" alias = "HTTPSCertFile"]
            "PEM certificate chain, leaf first, relative to the working directory",
        ssl_key_path: PathBuf ["PATH" alias = "HTTPSKeyFile"]
            "PEM private key (RSA, ECDSA or Ed25519) of ssl_cert_path",
        https_redirect: bool ["BOOL" bare = "true"]
            "With https: keep the plain player port, HTTP requests answered 308 to HTTPS",
        streamer_tls: bool ["BOOL" bare = "true"]
            "TLS (wss://) on the streamer port",
        streamer_ssl_cert_path: PathBuf ["PATH"]
            "The streamer port's certificate chain; empty uses ssl_cert_path",
        streamer_ssl_key_path: PathBuf ["PATH"]
            "The streamer port's private key; empty uses ssl_key_path",
        sfu_tls: bool ["BOOL" bare = "true"]
            "TLS (wss://) on the SFU port",
        sfu_ssl_cert_path: PathBuf ["PATH"]
            "The SFU port's certificate chain; empty uses ssl_cert_path",
        sfu_ssl_key_path: PathBuf ["PATH"]
            "The SFU port's private key; empty uses ssl_key_path",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        hsts_max_age: Duration ["SECONDS"]
            "Strict-Transport-Security max-age sent over HTTPS; 0 sends none",
        frame_ancestors: String ["SOURCES"]
            "Content-Security-Policy frame-ancestors: who may frame the pages; empty sends none",
        player_token: String ["TOKEN"]
            "Token a player's WebSocket must present (?token= or Authorization: Bearer); empty is none",
        streamer_token: String ["TOKEN"]
            "Token a streamer's WebSocket must present (?token= or Authorization: Bearer); empty is none",
        sfu_token: String ["TOKEN"]
            "Token an SFU's WebSocket must present (?token= or Authorization: Bearer); empty is none",
        #[serde(deserialize_with = "de_id_lists")]
        streamer_tokens: BTreeMap<String, Vec<String>> ["JSON"]
            "Streamer tokens that may claim only some ids: a JSON object from token to its ids",
        jwt_secret: String ["SECRET"]
            "HS256 secret of players' and session-API peers' JWTs; empty is none",
        jwt_public_key: PathBuf ["PATH"]
            "PEM public key of JWTs: RSA is RS256, EC P-256 ES256, P-384 ES384",
        jwt_audience: String ["AUDIENCE"]
            "The aud a JWT must carry; empty checks none",
        jwt_issuer: String ["ISSUER"]
            "The iss a JWT must carry; empty checks none",
        admin_token: String ["TOKEN"]
            "Bearer token /api's lists of streamers and players and /api/config require; empty is none",
        metrics: bool ["BOOL" bare = "true"]
            "Serve Prometheus metrics at /metrics",
        metrics_port: u16 ["PORT"]
            "Port of its own for /metrics (and /healthz); 0 serves /metrics on the player port",
        player_allowed_origins: Vec<String> ["LIST"]
            "Origins allowed to open a player WebSocket, comma-separated; empty allows any",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        handshake_timeout: Duration ["SECONDS"]
            "Seconds a new connection has for its TLS handshake and request head",
        max_connections_per_ip: u32 ["N"]
            "Open connections per client address on each port; one more is refused (0 is no limit)",
        upgrades_per_ip_per_minute: u32 ["N"]
            "WebSocket upgrades per client address per minute on each port; over it 429 (0 is no limit)",
        http_requests_per_minute: u32 ["N"]
            "Plain HTTP requests per client address per minute on the player ports; over it 429 (0 is no limit)",
        messages_per_second: u32 ["N"]
            "Messages per second a player may send on average; over it closes 1008 (0 is no limit)",
        message_burst: u32 ["N"]
            "Messages a player may send at once before messages_per_second applies",
        max_streamers: u32 ["N"]
            "Streamer connections at once; one more is answered 503 before the upgrade (0 is no limit)",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        first_message_timeout: Duration ["SECONDS"]
            "Seconds a player has after the upgrade to send a message, else closed 1008; 0 is none",
    }
    sections {
        sessions: SessionsConfig = "sessions",
        ice: IceConfig = "ice",
        cluster: ClusterConfig = "cluster",
    }
}

keys! {
    /// `[sessions]`: limits and timing of the HTTP + SSE session API.
    pub struct SessionsConfig in "sessions" {
        max_sessions: usize ["N"]
            "Most sessions at once; one more answers 429",
        max_sessions_per_address: usize ["N"]
            "Most sessions one client address may have created and not yet ended; 0 is no limit",
        registrations_per_minute: u32 ["N"]
            "Registrations (POST /register) per client address per minute; over it 429 (0 is no limit)",
        max_streams_per_address: u32 ["N"]
            "Open event streams per client address; one more answers 429 (0 is no limit)",
        max_peers_per_session: usize ["N"]
            "Most peers in one session; one more answers 429",
        max_queued_events: usize ["N"]
            "Events kept per peer: queued while its stream is closed, and replayable",
        max_peer_event_bytes: usize ["BYTES"]
            "Bytes of events kept per peer",
        max_event_bytes: usize ["BYTES"]
            "Bytes of events kept by every session together",
        max_body_bytes: usize ["BYTES"]
            "Largest request body; bigger answers 413",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        body_read_timeout: Duration ["SECONDS"]
            "Seconds a request body may take to arrive; 0 waits without limit",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        idle_timeout: Duration ["SECONDS" alias = "session_idle_timeout"]
            "Seconds a peer with no open stream and no request is kept; 0 is forever",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        keepalive: Duration ["SECONDS"]
            "Seconds between keep-alive comments on an idle event stream; 0 sends none",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        stream_write_timeout: Duration ["SECONDS"]
            "Seconds a response may go without the client taking a byte; 0 never closes it",
        cors_origins: Vec<String> ["LIST" alias = "cors_origins"]
            "Origins allowed to call the session API, comma-separated; \"*\" is any",
        peer_tokens: bool ["BOOL" bare = "true"]
            "POST /register answers a per-peer token that the peer's other requests must present",
    }
}

keys! {
    /// `[ice]`: STUN and TURN servers, with static or time-limited (TURN REST) credentials.
    pub struct IceConfig in "ice" {
        stun_urls: Vec<String> ["LIST" alias = "stun_urls"]
            "STUN URLs, comma-separated",
        turn_urls: Vec<String> ["LIST" alias = "turn_urls"]
            "TURN URLs, comma-separated",
        turn_username: String ["NAME"]
            "Static TURN username, sent as it is",
        turn_credential: String ["SECRET"]
            "Static TURN credential, sent as it is",
        turn_secret: String ["SECRET" alias = "turn_secret"]
            "Secret shared with the TURN server: per-peer time-limited credentials",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        credential_lifetime: Duration ["SECONDS" alias = "turn_ttl"]
            "Seconds time-limited TURN credentials stay valid",
    }
}

keys! {
    /// `[cluster]`: several nodes on one Redis acting as one server; off while `redis_url` is
    /// empty (README, "Cluster mode (several nodes on Redis)").
    pub struct ClusterConfig in "cluster" {
        redis_url: String ["URL" alias = "redis_url"]
            "Redis URL (redis:// or rediss://); empty runs one node alone, with no Redis; also --redis_url",
        node_id: String ["ID" alias = "node_id"]
            "This node's name in the cluster; empty is \"<host name>:<player port>\"; also --node_id",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        heartbeat_interval: Duration ["SECONDS"]
            "Seconds between heartbeats to every other node",
        #[serde(deserialize_with = "de_seconds", serialize_with = "ser_seconds")]
        node_timeout: Duration ["SECONDS"]
            "Seconds without a word from a node (or from Redis) before it is dead; ≥ 2 × heartbeat_interval",
        start_alone: bool ["BOOL" bare = "true"]
            "Start even when Redis cannot be reached at start-up, and keep trying",
        inbox_max_length: usize ["N"]
            "Entries kept in each node's inbox stream (XADD MAXLEN ~), at least 1000",
        key_prefix: String ["PREFIX"]
            "Prefix of every Redis key, so several clusters may share one Redis",
    }
}

/// How player ids are spelled (PROTOCOL.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlayerIdStyle {
    /// "Player0", "Player1", …
    Wilbur,
    /// "1", "2", … for UE 5.0–5.4 streamers.
    Numeric,
}

/// Least severe level logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    /// Also spelled "warning", as Wilbur's `--log_level_console` does.
    #[serde(alias = "warning")]
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The level as a `tracing_subscriber::EnvFilter` directive.
    pub fn as_filter(&self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// Whether and how signalling messages are logged (Wilbur's `--console_messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleMessages {
    /// Not logged.
    Off,
    /// One line per message: direction and type.
    Basic,
    /// The whole message.
    Verbose,
    /// The whole message, pretty-printed.
    Formatted,
}

/// How lines on stderr are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For a person: time, level, span fields and message.
    Text,
    /// One JSON object per line, as in the log files (for journald, `docker logs`).
    Json,
}
