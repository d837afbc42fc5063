//! Configuration: the embedded `signalling.toml`, then a `--config` file, then flags, then one
//! `validate()`. Owns every key's type, default and limits; never touches sockets or logging.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser, ValueEnum};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::{Map, Value};

/// The default configuration, compiled in. Every key is present and commented there.
const EMBEDDED: &str = include_str!("../signalling.toml");

/// Every configuration key, in `signalling.toml` order.
pub const KEYS: [&str; 25] = [
    "bind_address",
    "streamer_port",
    "player_port",
    "sfu_port",
    "peer_options",
    "max_players",
    "player_id_style",
    "player_count",
    "keepalive_interval",
    "keepalive_timeout",
    "player_protocol_ping",
    "max_message_size",
    "max_queued_messages",
    "max_queued_bytes",
    "overflow_timeout",
    "worker_threads",
    "log_level",
    "console_messages",
    "serve",
    "http_root",
    "homepage",
    "reverse_proxy",
    "reverse_proxy_num_proxies",
    "sessions",
    "ice",
];

/// The keys of the `[sessions]` and `[ice]` sections, qualified, in `signalling.toml` order.
pub const SECTION_KEYS: [&str; 18] = [
    "sessions.max_sessions",
    "sessions.max_sessions_per_address",
    "sessions.max_peers_per_session",
    "sessions.max_queued_events",
    "sessions.max_peer_event_bytes",
    "sessions.max_event_bytes",
    "sessions.max_body_bytes",
    "sessions.body_read_timeout",
    "sessions.idle_timeout",
    "sessions.keepalive",
    "sessions.stream_write_timeout",
    "sessions.cors_origins",
    "ice.stun_urls",
    "ice.turn_urls",
    "ice.turn_username",
    "ice.turn_credential",
    "ice.turn_secret",
    "ice.credential_lifetime",
];

/// Below this, a peer's own small messages (an ICE candidate, an endpointId with a long id) risk
/// a 1009 close; it mostly catches a unit slip such as `max_message_size = 1` meaning 1 MiB.
pub const MIN_MAX_MESSAGE_SIZE: usize = 1024;

/// Above this a queue bounds nothing useful (with 1 MiB messages it is already more memory than a
/// host has for one connection), and tokio's bounded channels panic on absurd capacities.
pub const MAX_MAX_QUEUED_MESSAGES: usize = 1 << 20;
/// More async worker threads than this is a configuration mistake.
pub const MAX_WORKER_THREADS: usize = 1024;
/// Below this a lane holds hardly one ICE candidate: a unit slip (1 meaning 1 MiB).
pub const MIN_MAX_QUEUED_BYTES: usize = 1024;
/// Above this one connection's budget is more memory than a host has for it.
pub const MAX_MAX_QUEUED_BYTES: usize = 1 << 30;

/// Longest accepted interval or timeout: 24 h. Longer is "off" in practice (use 0 for that), and
/// absurd values would overflow `Instant` arithmetic in the timers.
pub const MAX_SECONDS: u64 = 24 * 60 * 60;

/// The server's settings, built by [`Config::load`]. Keys are documented in `signalling.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub bind_address: IpAddr,
    pub streamer_port: u16,
    pub player_port: u16,
    pub sfu_port: u16,
    /// Sent as `peerConnectionOptions` in every `config` message.
    pub peer_options: Map<String, Value>,
    /// Subscribers per streamer; 0 is unlimited.
    pub max_players: u32,
    pub player_id_style: PlayerIdStyle,
    pub player_count: bool,
    /// Zero disables WebSocket Pings.
    pub keepalive_interval: Duration,
    /// Zero disables the dead-peer deadline.
    pub keepalive_timeout: Duration,
    /// Zero disables server protocol pings to players.
    pub player_protocol_ping: Duration,
    pub max_message_size: usize,
    pub max_queued_messages: usize,
    /// Bytes each lane of a connection's outgoing queue holds, and the reading credit of each
    /// connection (PROTOCOL.md §1.7).
    pub max_queued_bytes: usize,
    /// How long a peer's message may wait for room at its receiver before the peer is closed.
    pub overflow_timeout: Duration,
    /// Async worker threads; 0 means one per CPU the process may run on. One (given, or counted
    /// on a single CPU) selects tokio's single-threaded scheduler.
    pub worker_threads: usize,
    pub log_level: LogLevel,
    pub console_messages: ConsoleMessages,
    /// Serve static files from `http_root` on the player port (Wilbur's `--serve`).
    pub serve: bool,
    /// The static files' folder, relative to the working directory.
    pub http_root: PathBuf,
    /// The file under `http_root` sent for `GET /`.
    pub homepage: String,
    /// Take the client's address from `X-Forwarded-For`/`Forwarded`.
    pub reverse_proxy: bool,
    /// Proxies trusted to append to `X-Forwarded-For` (Express's `trust proxy` number).
    pub reverse_proxy_num_proxies: u32,
    /// The HTTP + SSE session API (`[sessions]`).
    pub sessions: SessionsConfig,
    /// STUN/TURN servers for `GET /iceServers` and the `config` message (`[ice]`).
    pub ice: IceConfig,
}

/// `[sessions]`: limits and timing of the HTTP + SSE session API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionsConfig {
    pub max_sessions: usize,
    /// Sessions one client address (an IPv6 /64) may have created at once; zero is no limit.
    pub max_sessions_per_address: usize,
    pub max_peers_per_session: usize,
    /// Events kept per peer: the queue for a closed stream and the Last-Event-ID window.
    pub max_queued_events: usize,
    /// Bytes kept per peer (queue and replay window), each event counted with its overhead.
    pub max_peer_event_bytes: usize,
    /// Bytes kept by all peers of all sessions together.
    pub max_event_bytes: usize,
    pub max_body_bytes: usize,
    /// Zero waits for a request body without limit.
    pub body_read_timeout: Duration,
    /// Zero never expires idle peers.
    pub idle_timeout: Duration,
    /// Zero sends no keep-alive comments.
    pub keepalive: Duration,
    /// An HTTP connection whose writes make no progress for this long is closed; zero never.
    pub stream_write_timeout: Duration,
    /// `["*"]` allows any origin; empty allows none (same-origin only).
    pub cors_origins: Vec<String>,
}

/// `[ice]`: STUN and TURN servers, with static or time-limited (TURN REST) credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceConfig {
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
    pub turn_username: String,
    pub turn_credential: String,
    /// coturn's `static-auth-secret`; when set, credentials are minted per request and peer.
    pub turn_secret: String,
    pub credential_lifetime: Duration,
}

/// How player ids are spelled (PROTOCOL.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PlayerIdStyle {
    /// "Player0", "Player1", …
    Wilbur,
    /// "1", "2", … for UE 5.0–5.4 streamers.
    Numeric,
}

/// Least severe level logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    /// Also spelled "warning", as Wilbur's `--log_level_console` does.
    #[serde(alias = "warning")]
    #[value(alias = "warning")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
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

/// Why the configuration could not be loaded. Each message names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    ReadConfigFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bad TOML, an unknown key, or a value of the wrong type or range in a `--config` file.
    /// `key` is the key whose value is wrong, when known; toml's message shows the line.
    #[error("config file {}{}: {source}", path.display(), key_note(*key))]
    ParseConfigFile {
        path: PathBuf,
        key: Option<&'static str>,
        source: Box<toml::de::Error>,
    },
    /// As `ParseConfigFile`, for text given to [`Config::from_toml_str`] (or the embedded file).
    #[error("configuration{}: {source}", key_note(*key))]
    ParseConfigText {
        key: Option<&'static str>,
        source: Box<toml::de::Error>,
    },
    #[error("cannot read peer options file {}: {source}", path.display())]
    ReadPeerOptionsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `--peer_options` or `--peer_options_file` is not JSON, or not a JSON object.
    #[error("{origin}: {problem}")]
    PeerOptions { origin: String, problem: String },
    /// A key missing from every layer; only possible if the embedded file lost a key.
    #[error("configuration key `{0}` has no value (the embedded signalling.toml lacks it)")]
    MissingKey(&'static str),
    #[error(
        "keepalive_timeout is {timeout:?} but keepalive_interval is 0: the deadline needs Pings \
         to keep live peers alive; set keepalive_interval > 0, or keepalive_timeout = 0 to \
         disable the deadline"
    )]
    KeepaliveTimeoutWithoutInterval { timeout: Duration },
    #[error(
        "keepalive_timeout ({timeout:?}) must be greater than keepalive_interval ({interval:?}), \
         or 0 to disable the deadline"
    )]
    KeepaliveTimeoutTooShort {
        timeout: Duration,
        interval: Duration,
    },
    #[error(
        "{key} is {value:?}; the most allowed is {max} s (use 0 to turn it off)",
        max = MAX_SECONDS
    )]
    DurationTooLong { key: &'static str, value: Duration },
    #[error(
        "max_message_size is {0} bytes; it must be at least {min} (the value is in bytes: \
         1048576 is 1 MiB)",
        min = MIN_MAX_MESSAGE_SIZE
    )]
    MaxMessageSizeTooSmall(usize),
    #[error("max_queued_messages must be at least 1")]
    MaxQueuedMessagesZero,
    #[error(
        "max_queued_messages is {0}; the most allowed is {max}",
        max = MAX_MAX_QUEUED_MESSAGES
    )]
    MaxQueuedMessagesTooLarge(usize),
    #[error(
        "max_queued_bytes is {0}; it must be from {min} to {max} (the value is in bytes: \
         1048576 is 1 MiB)",
        min = MIN_MAX_QUEUED_BYTES,
        max = MAX_MAX_QUEUED_BYTES
    )]
    MaxQueuedBytesOutOfRange(usize),
    #[error("overflow_timeout must be greater than 0")]
    OverflowTimeoutZero,
    #[error("worker_threads is {0}; the most allowed is {max}", max = MAX_WORKER_THREADS)]
    WorkerThreadsTooMany(usize),
    /// A `[sessions]` or `[ice]` value out of range or inconsistent; names the key.
    #[error("{key}: {problem}")]
    Section { key: &'static str, problem: String },
}

/// Pixel Streaming signalling server: a drop-in for Epic's Wilbur.
///
/// Settings come from the embedded defaults, then the --config file, then these flags. Every
/// flag takes a value (`--player_count false`) and is also a key of the config file.
#[derive(Debug, Default, Parser)]
#[command(name = "signalling", version)]
pub struct Cli {
    /// TOML file whose keys override the defaults (see signalling.toml for every key).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// IP address every listener binds to [default: 0.0.0.0].
    #[arg(long = "bind_address", alias = "bind-address", value_name = "IP")]
    pub bind_address: Option<IpAddr>,

    /// WebSocket port for streamers [default: 8888].
    #[arg(long = "streamer_port", alias = "streamer-port", value_name = "PORT")]
    pub streamer_port: Option<u16>,

    /// Port for players: WebSocket and HTTP [default: 80].
    #[arg(
        long = "player_port",
        visible_alias = "http_port",
        aliases = ["player-port", "http-port"],
        value_name = "PORT"
    )]
    pub player_port: Option<u16>,

    /// WebSocket port for SFUs [default: 8889].
    #[arg(long = "sfu_port", alias = "sfu-port", value_name = "PORT")]
    pub sfu_port: Option<u16>,

    /// JSON object sent to peers as peerConnectionOptions (e.g. iceServers) [default: {}].
    #[arg(
        long = "peer_options",
        alias = "peer-options",
        value_name = "JSON",
        conflicts_with = "peer_options_file"
    )]
    pub peer_options: Option<String>,

    /// File holding the peer_options JSON object (easier to quote than --peer_options).
    #[arg(
        long = "peer_options_file",
        alias = "peer-options-file",
        value_name = "PATH"
    )]
    pub peer_options_file: Option<PathBuf>,

    /// Most subscribers one streamer may have; 0 is unlimited [default: 0].
    #[arg(
        long = "max_players",
        alias = "max-players",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub max_players: Option<u32>,

    /// Player ids: "wilbur" (Player0, Player1, …) or "numeric" (1, 2, … for UE 5.0–5.4)
    /// [default: wilbur].
    #[arg(
        long = "player_id_style",
        alias = "player-id-style",
        value_name = "STYLE"
    )]
    pub player_id_style: Option<PlayerIdStyle>,

    /// Send each player a playerCount message after config [default: true].
    #[arg(
        long = "player_count",
        alias = "player-count",
        value_name = "BOOL",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub player_count: Option<bool>,

    /// Seconds between WebSocket Pings; 0 sends none [default: 30].
    #[arg(
        long = "keepalive_interval",
        alias = "keepalive-interval",
        value_name = "SECONDS",
        value_parser = parse_seconds,
        allow_negative_numbers = true
    )]
    pub keepalive_interval: Option<Duration>,

    /// Seconds of silence before a peer is dropped; 0 disables; must exceed
    /// keepalive_interval [default: 60].
    #[arg(
        long = "keepalive_timeout",
        alias = "keepalive-timeout",
        value_name = "SECONDS",
        value_parser = parse_seconds,
        allow_negative_numbers = true
    )]
    pub keepalive_timeout: Option<Duration>,

    /// Seconds between protocol pings to players; 0 is off [default: 0].
    #[arg(
        long = "player_protocol_ping",
        alias = "player-protocol-ping",
        value_name = "SECONDS",
        value_parser = parse_seconds,
        allow_negative_numbers = true
    )]
    pub player_protocol_ping: Option<Duration>,

    /// Largest incoming message in bytes; bigger closes with 1009 [default: 1048576].
    #[arg(
        long = "max_message_size",
        alias = "max-message-size",
        value_name = "BYTES",
        allow_negative_numbers = true
    )]
    pub max_message_size: Option<usize>,

    /// Outgoing messages queued per connection before it is closed as too slow [default: 4096].
    #[arg(
        long = "max_queued_messages",
        alias = "max-queued-messages",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub max_queued_messages: Option<usize>,

    /// Bytes each lane of a connection's outgoing queue holds (its own traffic; what others
    /// send it), and what one peer may have in flight [default: 1048576].
    #[arg(
        long = "max_queued_bytes",
        alias = "max-queued-bytes",
        value_name = "BYTES",
        allow_negative_numbers = true
    )]
    pub max_queued_bytes: Option<usize>,

    /// Seconds a peer's message may wait for its receiver to read before the peer is closed
    /// 1008 [default: 10].
    #[arg(
        long = "overflow_timeout",
        alias = "overflow-timeout",
        value_name = "SECONDS",
        value_parser = parse_seconds,
        allow_negative_numbers = true
    )]
    pub overflow_timeout: Option<Duration>,

    /// Async worker threads; 0 is one per CPU the process may use [default: 0].
    #[arg(
        long = "worker_threads",
        alias = "worker-threads",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub worker_threads: Option<usize>,

    /// Log level; RUST_LOG overrides it [default: info].
    #[arg(
        long = "log_level",
        visible_alias = "log_level_console",
        aliases = ["log-level", "log-level-console"],
        value_name = "LEVEL"
    )]
    pub log_level: Option<LogLevel>,

    /// Log signalling messages; without a value, "basic" [default: off].
    #[arg(
        long = "console_messages",
        alias = "console-messages",
        value_name = "DETAIL",
        num_args = 0..=1,
        default_missing_value = "basic"
    )]
    pub console_messages: Option<ConsoleMessages>,

    /// Origins allowed to call the session API, comma-separated; "*" is any, "" none
    /// ([sessions] cors_origins) [default: *].
    #[arg(long = "cors_origins", alias = "cors-origins", value_name = "LIST")]
    pub cors_origins: Option<String>,

    /// Seconds a session peer with no open stream and no request is kept; 0 is forever
    /// ([sessions] idle_timeout) [default: 60].
    #[arg(
        long = "session_idle_timeout",
        alias = "session-idle-timeout",
        value_name = "SECONDS",
        value_parser = parse_seconds,
        allow_negative_numbers = true
    )]
    pub session_idle_timeout: Option<Duration>,

    /// STUN URLs, comma-separated ([ice] stun_urls) [default: none].
    #[arg(long = "stun_urls", alias = "stun-urls", value_name = "LIST")]
    pub stun_urls: Option<String>,

    /// TURN URLs, comma-separated ([ice] turn_urls) [default: none].
    #[arg(long = "turn_urls", alias = "turn-urls", value_name = "LIST")]
    pub turn_urls: Option<String>,
}

/// A comma-separated flag as a list; empty items are dropped, so "" is the empty list.
fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Default for Config {
    fn default() -> Self {
        #[allow(clippy::expect_used)] // The file is compiled in, and a unit test parses it.
        Self::from_toml_str("").expect("the embedded signalling.toml is valid")
    }
}

impl Config {
    /// Embedded defaults, then the `--config` file, then the flags, then [`Config::validate`].
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let mut layer = Layer::embedded()?;
        if let Some(path) = &cli.config {
            layer = layer.overlay(Layer::from_file(path)?);
        }
        layer = layer.overlay(cli.layer()?);
        let config = layer.build()?;
        config.validate()?;
        Ok(config)
    }

    /// Embedded defaults overlaid with `text` (TOML, any subset of the keys), then validated.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let text_layer = Layer::from_text(text)?;
        let config = Layer::embedded()?.overlay(text_layer).build()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules that span keys or bound values (PROTOCOL.md §9 for the keepalive rule).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
            ("player_protocol_ping", self.player_protocol_ping),
            ("overflow_timeout", self.overflow_timeout),
        ] {
            if value > Duration::from_secs(MAX_SECONDS) {
                return Err(ConfigError::DurationTooLong { key, value });
            }
        }
        if !self.keepalive_timeout.is_zero() {
            if self.keepalive_interval.is_zero() {
                return Err(ConfigError::KeepaliveTimeoutWithoutInterval {
                    timeout: self.keepalive_timeout,
                });
            }
            if self.keepalive_timeout <= self.keepalive_interval {
                return Err(ConfigError::KeepaliveTimeoutTooShort {
                    timeout: self.keepalive_timeout,
                    interval: self.keepalive_interval,
                });
            }
        }
        if self.max_message_size < MIN_MAX_MESSAGE_SIZE {
            return Err(ConfigError::MaxMessageSizeTooSmall(self.max_message_size));
        }
        if self.max_queued_messages == 0 {
            return Err(ConfigError::MaxQueuedMessagesZero);
        }
        if self.max_queued_messages > MAX_MAX_QUEUED_MESSAGES {
            return Err(ConfigError::MaxQueuedMessagesTooLarge(
                self.max_queued_messages,
            ));
        }
        if !(MIN_MAX_QUEUED_BYTES..=MAX_MAX_QUEUED_BYTES).contains(&self.max_queued_bytes) {
            return Err(ConfigError::MaxQueuedBytesOutOfRange(self.max_queued_bytes));
        }
        if self.overflow_timeout.is_zero() {
            return Err(ConfigError::OverflowTimeoutZero);
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(ConfigError::WorkerThreadsTooMany(self.worker_threads));
        }
        self.sessions.validate()?;
        self.ice.validate()?;
        // peer_options needs no check here: its type is a JSON object, and every way in
        // (file, --peer_options, --peer_options_file) rejects anything else with the key named.
        Ok(())
    }
}

impl Cli {
    /// The flags as a layer. Reads `--peer_options_file`.
    fn layer(&self) -> Result<Layer, ConfigError> {
        let peer_options = self.peer_options()?;
        Ok(Layer {
            bind_address: self.bind_address,
            streamer_port: self.streamer_port,
            player_port: self.player_port,
            sfu_port: self.sfu_port,
            peer_options,
            max_players: self.max_players,
            player_id_style: self.player_id_style,
            player_count: self.player_count,
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            player_protocol_ping: self.player_protocol_ping,
            max_message_size: self.max_message_size,
            max_queued_messages: self.max_queued_messages,
            max_queued_bytes: self.max_queued_bytes,
            overflow_timeout: self.overflow_timeout,
            worker_threads: self.worker_threads,
            log_level: self.log_level,
            console_messages: self.console_messages,
            serve: None,
            http_root: None,
            homepage: None,
            reverse_proxy: None,
            reverse_proxy_num_proxies: None,
            sessions: Some(SessionsLayer {
                cors_origins: self.cors_origins.as_deref().map(split_list),
                idle_timeout: self.session_idle_timeout,
                ..SessionsLayer::default()
            }),
            ice: Some(IceLayer {
                stun_urls: self.stun_urls.as_deref().map(split_list),
                turn_urls: self.turn_urls.as_deref().map(split_list),
                ..IceLayer::default()
            }),
        })
    }

    /// `--peer_options` or the contents of `--peer_options_file` (clap makes them exclusive).
    fn peer_options(&self) -> Result<Option<Map<String, Value>>, ConfigError> {
        let (json, origin) = if let Some(json) = &self.peer_options {
            (json.clone(), "--peer_options".to_owned())
        } else if let Some(path) = &self.peer_options_file {
            let json = std::fs::read_to_string(path).map_err(|source| {
                ConfigError::ReadPeerOptionsFile {
                    path: path.clone(),
                    source,
                }
            })?;
            (json, format!("peer options file {}", path.display()))
        } else {
            return Ok(None);
        };
        peer_options_from_json(&json)
            .map(Some)
            .map_err(|problem| ConfigError::PeerOptions { origin, problem })
    }
}

/// One source of settings: a key is `None` where that source does not set it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    bind_address: Option<IpAddr>,
    streamer_port: Option<u16>,
    player_port: Option<u16>,
    sfu_port: Option<u16>,
    #[serde(default, deserialize_with = "de_peer_options")]
    peer_options: Option<Map<String, Value>>,
    max_players: Option<u32>,
    player_id_style: Option<PlayerIdStyle>,
    player_count: Option<bool>,
    #[serde(default, deserialize_with = "de_seconds")]
    keepalive_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_seconds")]
    keepalive_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_seconds")]
    player_protocol_ping: Option<Duration>,
    max_message_size: Option<usize>,
    max_queued_messages: Option<usize>,
    max_queued_bytes: Option<usize>,
    #[serde(default, deserialize_with = "de_seconds")]
    overflow_timeout: Option<Duration>,
    worker_threads: Option<usize>,
    log_level: Option<LogLevel>,
    console_messages: Option<ConsoleMessages>,
    serve: Option<bool>,
    http_root: Option<PathBuf>,
    homepage: Option<String>,
    reverse_proxy: Option<bool>,
    reverse_proxy_num_proxies: Option<u32>,
    sessions: Option<SessionsLayer>,
    ice: Option<IceLayer>,
}

/// `[sessions]` in one layer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsLayer {
    max_sessions: Option<usize>,
    max_sessions_per_address: Option<usize>,
    max_peers_per_session: Option<usize>,
    max_queued_events: Option<usize>,
    max_peer_event_bytes: Option<usize>,
    max_event_bytes: Option<usize>,
    max_body_bytes: Option<usize>,
    #[serde(default, deserialize_with = "de_seconds")]
    body_read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_seconds")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_seconds")]
    keepalive: Option<Duration>,
    #[serde(default, deserialize_with = "de_seconds")]
    stream_write_timeout: Option<Duration>,
    cors_origins: Option<Vec<String>>,
}

impl SessionsLayer {
    fn overlay(self, top: Self) -> Self {
        Self {
            max_sessions: top.max_sessions.or(self.max_sessions),
            max_sessions_per_address: top
                .max_sessions_per_address
                .or(self.max_sessions_per_address),
            max_peers_per_session: top.max_peers_per_session.or(self.max_peers_per_session),
            max_queued_events: top.max_queued_events.or(self.max_queued_events),
            max_peer_event_bytes: top.max_peer_event_bytes.or(self.max_peer_event_bytes),
            max_event_bytes: top.max_event_bytes.or(self.max_event_bytes),
            max_body_bytes: top.max_body_bytes.or(self.max_body_bytes),
            body_read_timeout: top.body_read_timeout.or(self.body_read_timeout),
            idle_timeout: top.idle_timeout.or(self.idle_timeout),
            keepalive: top.keepalive.or(self.keepalive),
            stream_write_timeout: top.stream_write_timeout.or(self.stream_write_timeout),
            cors_origins: top.cors_origins.or(self.cors_origins),
        }
    }

    fn build(self) -> Result<SessionsConfig, ConfigError> {
        Ok(SessionsConfig {
            max_sessions: get(self.max_sessions, "sessions.max_sessions")?,
            max_sessions_per_address: get(
                self.max_sessions_per_address,
                "sessions.max_sessions_per_address",
            )?,
            max_peers_per_session: get(
                self.max_peers_per_session,
                "sessions.max_peers_per_session",
            )?,
            max_queued_events: get(self.max_queued_events, "sessions.max_queued_events")?,
            max_peer_event_bytes: get(self.max_peer_event_bytes, "sessions.max_peer_event_bytes")?,
            max_event_bytes: get(self.max_event_bytes, "sessions.max_event_bytes")?,
            max_body_bytes: get(self.max_body_bytes, "sessions.max_body_bytes")?,
            body_read_timeout: get(self.body_read_timeout, "sessions.body_read_timeout")?,
            idle_timeout: get(self.idle_timeout, "sessions.idle_timeout")?,
            keepalive: get(self.keepalive, "sessions.keepalive")?,
            stream_write_timeout: get(self.stream_write_timeout, "sessions.stream_write_timeout")?,
            cors_origins: get(self.cors_origins, "sessions.cors_origins")?,
        })
    }
}

/// `[ice]` in one layer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IceLayer {
    stun_urls: Option<Vec<String>>,
    turn_urls: Option<Vec<String>>,
    turn_username: Option<String>,
    turn_credential: Option<String>,
    turn_secret: Option<String>,
    #[serde(default, deserialize_with = "de_seconds")]
    credential_lifetime: Option<Duration>,
}

impl IceLayer {
    fn overlay(self, top: Self) -> Self {
        Self {
            stun_urls: top.stun_urls.or(self.stun_urls),
            turn_urls: top.turn_urls.or(self.turn_urls),
            turn_username: top.turn_username.or(self.turn_username),
            turn_credential: top.turn_credential.or(self.turn_credential),
            turn_secret: top.turn_secret.or(self.turn_secret),
            credential_lifetime: top.credential_lifetime.or(self.credential_lifetime),
        }
    }

    fn build(self) -> Result<IceConfig, ConfigError> {
        Ok(IceConfig {
            stun_urls: get(self.stun_urls, "ice.stun_urls")?,
            turn_urls: get(self.turn_urls, "ice.turn_urls")?,
            turn_username: get(self.turn_username, "ice.turn_username")?,
            turn_credential: get(self.turn_credential, "ice.turn_credential")?,
            turn_secret: get(self.turn_secret, "ice.turn_secret")?,
            credential_lifetime: get(self.credential_lifetime, "ice.credential_lifetime")?,
        })
    }
}

fn get<T>(value: Option<T>, key: &'static str) -> Result<T, ConfigError> {
    value.ok_or(ConfigError::MissingKey(key))
}

/// Overlays two optional sections field by field.
fn overlay_section<T>(base: Option<T>, top: Option<T>, merge: fn(T, T) -> T) -> Option<T> {
    match (base, top) {
        (Some(base), Some(top)) => Some(merge(base, top)),
        (base, top) => top.or(base),
    }
}

/// Most sessions, peers per session or queued events one may configure: beyond this a limit
/// bounds nothing useful.
pub const MAX_SESSION_LIMIT: usize = 1 << 20;

/// Most event bytes one may configure (1 TiB): beyond it a budget bounds nothing a host has, and
/// sums of budgets could overflow.
pub const MAX_EVENT_BYTES: usize = 1 << 40;

/// Bytes of `max_peer_event_bytes` set aside per peer of a full session beside the largest
/// message: room for one `peer-left` from every other peer (`sessions::CONTROL_EVENT_COST`, 226)
/// and for what an event adds to its body (a longer sender id, the per-event overhead).
pub const PEER_EVENT_BYTES_PER_PEER: usize = 256;

impl SessionsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let section = |key, problem: String| ConfigError::Section { key, problem };
        for (key, value, min) in [
            ("sessions.max_sessions", self.max_sessions, 1),
            (
                "sessions.max_peers_per_session",
                self.max_peers_per_session,
                2,
            ),
            ("sessions.max_queued_events", self.max_queued_events, 1),
        ] {
            if !(min..=MAX_SESSION_LIMIT).contains(&value) {
                return Err(section(
                    key,
                    format!("is {value}; it must be from {min} to {MAX_SESSION_LIMIT}"),
                ));
            }
        }
        if self.max_sessions_per_address > MAX_SESSION_LIMIT {
            return Err(section(
                "sessions.max_sessions_per_address",
                format!(
                    "is {}; it must be from 0 (no limit) to {MAX_SESSION_LIMIT}",
                    self.max_sessions_per_address
                ),
            ));
        }
        // The largest message must fit a peer's empty log beside the reserve for `peer-left`s.
        let least_peer_bytes = self
            .max_body_bytes
            .saturating_add(PEER_EVENT_BYTES_PER_PEER.saturating_mul(self.max_peers_per_session));
        if !(least_peer_bytes..=MAX_EVENT_BYTES).contains(&self.max_peer_event_bytes) {
            return Err(section(
                "sessions.max_peer_event_bytes",
                format!(
                    "is {}; it must be from {least_peer_bytes} (max_body_bytes +                      {PEER_EVENT_BYTES_PER_PEER} × max_peers_per_session) to {MAX_EVENT_BYTES}",
                    self.max_peer_event_bytes
                ),
            ));
        }
        if !(self.max_peer_event_bytes..=MAX_EVENT_BYTES).contains(&self.max_event_bytes) {
            return Err(section(
                "sessions.max_event_bytes",
                format!(
                    "is {}; it must be from max_peer_event_bytes ({}) to {MAX_EVENT_BYTES}",
                    self.max_event_bytes, self.max_peer_event_bytes
                ),
            ));
        }
        if self.max_body_bytes < MIN_MAX_MESSAGE_SIZE {
            return Err(section(
                "sessions.max_body_bytes",
                format!(
                    "is {}; it must be at least {MIN_MAX_MESSAGE_SIZE} (bytes)",
                    self.max_body_bytes
                ),
            ));
        }
        for (key, value) in [
            ("sessions.body_read_timeout", self.body_read_timeout),
            ("sessions.idle_timeout", self.idle_timeout),
            ("sessions.keepalive", self.keepalive),
            ("sessions.stream_write_timeout", self.stream_write_timeout),
        ] {
            if value > Duration::from_secs(MAX_SECONDS) {
                return Err(section(
                    key,
                    format!("is {value:?}; the most allowed is {MAX_SECONDS} s (0 turns it off)"),
                ));
            }
        }
        let origins = &self.cors_origins;
        if origins.iter().any(|o| o == "*") && origins.len() > 1 {
            return Err(section(
                "sessions.cors_origins",
                "\"*\" allows every origin and must be alone".to_owned(),
            ));
        }
        for origin in origins.iter().filter(|o| *o != "*") {
            let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "http" | "https")
                    && !rest.is_empty()
                    && !rest.contains('/')
                    && rest.bytes().all(|b| b.is_ascii_graphic())
            });
            if !valid {
                return Err(section(
                    "sessions.cors_origins",
                    format!(
                        "{origin:?} is not an origin: write scheme://host[:port], e.g. \
                         \"https://app.example.com\", or \"*\""
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl IceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let section = |key, problem: String| ConfigError::Section { key, problem };
        for (key, urls, schemes) in [
            ("ice.stun_urls", &self.stun_urls, ["stun:", "stuns:"]),
            ("ice.turn_urls", &self.turn_urls, ["turn:", "turns:"]),
        ] {
            for url in urls {
                if !schemes.iter().any(|s| url.starts_with(s)) || url.len() <= 6 {
                    return Err(section(
                        key,
                        format!("{url:?} must start with {} or {}", schemes[0], schemes[1]),
                    ));
                }
            }
        }
        let has_static = !self.turn_username.is_empty() || !self.turn_credential.is_empty();
        let has_secret = !self.turn_secret.is_empty();
        if has_static && has_secret {
            return Err(section(
                "ice.turn_secret",
                "set either turn_secret or turn_username and turn_credential, not both".to_owned(),
            ));
        }
        if has_static && (self.turn_username.is_empty() || self.turn_credential.is_empty()) {
            return Err(section(
                "ice.turn_credential",
                "turn_username and turn_credential go together".to_owned(),
            ));
        }
        if self.turn_urls.is_empty() && (has_static || has_secret) {
            return Err(section(
                "ice.turn_urls",
                "TURN credentials are set but turn_urls is empty".to_owned(),
            ));
        }
        if !self.turn_urls.is_empty() && !has_static && !has_secret {
            return Err(section(
                "ice.turn_urls",
                "TURN needs credentials: set turn_secret, or turn_username and turn_credential"
                    .to_owned(),
            ));
        }
        let lifetime = self.credential_lifetime;
        if lifetime < Duration::from_secs(1) || lifetime > Duration::from_secs(MAX_SECONDS * 7) {
            return Err(section(
                "ice.credential_lifetime",
                format!("is {lifetime:?}; it must be from 1 s to 7 days"),
            ));
        }
        Ok(())
    }
}

impl Layer {
    /// Parses TOML text; on error, also returns the key whose value is at fault, if known.
    fn parse(text: &str) -> Result<Self, (Option<&'static str>, Box<toml::de::Error>)> {
        toml::from_str(text).map_err(|e| (key_at_error(text, &e), Box::new(e)))
    }

    fn from_text(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text).map_err(|(key, source)| ConfigError::ParseConfigText { key, source })
    }

    fn embedded() -> Result<Self, ConfigError> {
        Self::from_text(EMBEDDED)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadConfigFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(key, source)| ConfigError::ParseConfigFile {
            path: path.to_owned(),
            key,
            source,
        })
    }

    /// `top`'s keys win where set.
    fn overlay(self, top: Self) -> Self {
        Self {
            bind_address: top.bind_address.or(self.bind_address),
            streamer_port: top.streamer_port.or(self.streamer_port),
            player_port: top.player_port.or(self.player_port),
            sfu_port: top.sfu_port.or(self.sfu_port),
            peer_options: top.peer_options.or(self.peer_options),
            max_players: top.max_players.or(self.max_players),
            player_id_style: top.player_id_style.or(self.player_id_style),
            player_count: top.player_count.or(self.player_count),
            keepalive_interval: top.keepalive_interval.or(self.keepalive_interval),
            keepalive_timeout: top.keepalive_timeout.or(self.keepalive_timeout),
            player_protocol_ping: top.player_protocol_ping.or(self.player_protocol_ping),
            max_message_size: top.max_message_size.or(self.max_message_size),
            max_queued_messages: top.max_queued_messages.or(self.max_queued_messages),
            max_queued_bytes: top.max_queued_bytes.or(self.max_queued_bytes),
            overflow_timeout: top.overflow_timeout.or(self.overflow_timeout),
            worker_threads: top.worker_threads.or(self.worker_threads),
            log_level: top.log_level.or(self.log_level),
            console_messages: top.console_messages.or(self.console_messages),
            serve: top.serve.or(self.serve),
            http_root: top.http_root.or(self.http_root),
            homepage: top.homepage.or(self.homepage),
            reverse_proxy: top.reverse_proxy.or(self.reverse_proxy),
            reverse_proxy_num_proxies: top
                .reverse_proxy_num_proxies
                .or(self.reverse_proxy_num_proxies),
            sessions: overlay_section(self.sessions, top.sessions, SessionsLayer::overlay),
            ice: overlay_section(self.ice, top.ice, IceLayer::overlay),
        }
    }

    /// The merged layers as a `Config`; every key must be set by now (the embedded file sets all).
    fn build(self) -> Result<Config, ConfigError> {
        Ok(Config {
            bind_address: get(self.bind_address, "bind_address")?,
            streamer_port: get(self.streamer_port, "streamer_port")?,
            player_port: get(self.player_port, "player_port")?,
            sfu_port: get(self.sfu_port, "sfu_port")?,
            peer_options: get(self.peer_options, "peer_options")?,
            max_players: get(self.max_players, "max_players")?,
            player_id_style: get(self.player_id_style, "player_id_style")?,
            player_count: get(self.player_count, "player_count")?,
            keepalive_interval: get(self.keepalive_interval, "keepalive_interval")?,
            keepalive_timeout: get(self.keepalive_timeout, "keepalive_timeout")?,
            player_protocol_ping: get(self.player_protocol_ping, "player_protocol_ping")?,
            max_message_size: get(self.max_message_size, "max_message_size")?,
            max_queued_messages: get(self.max_queued_messages, "max_queued_messages")?,
            max_queued_bytes: get(self.max_queued_bytes, "max_queued_bytes")?,
            overflow_timeout: get(self.overflow_timeout, "overflow_timeout")?,
            worker_threads: get(self.worker_threads, "worker_threads")?,
            log_level: get(self.log_level, "log_level")?,
            console_messages: get(self.console_messages, "console_messages")?,
            serve: get(self.serve, "serve")?,
            http_root: get(self.http_root, "http_root")?,
            homepage: get(self.homepage, "homepage")?,
            reverse_proxy: get(self.reverse_proxy, "reverse_proxy")?,
            reverse_proxy_num_proxies: get(
                self.reverse_proxy_num_proxies,
                "reverse_proxy_num_proxies",
            )?,
            sessions: get(self.sessions, "sessions")?.build()?,
            ice: get(self.ice, "ice")?.build()?,
        })
    }
}

/// The key on the line where a value error points (`max_players = "four"` → `max_players`).
/// toml's own message shows that line but names only the value; this puts the key in the text.
/// `None` for syntax errors, unknown keys (toml names those) and values spanning lines.
fn key_at_error(text: &str, error: &toml::de::Error) -> Option<&'static str> {
    let start = error.span()?.start;
    let line_start = text.get(..start)?.rfind('\n').map_or(0, |i| i + 1);
    let before_value = text.get(line_start..start)?;
    let (key, rest) = before_value.split_once('=')?;
    if !rest.trim().is_empty() {
        return None;
    }
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    KEYS.into_iter().find(|known| *known == key).or_else(|| {
        SECTION_KEYS
            .into_iter()
            .find(|known| known.split_once('.').is_some_and(|(_, k)| k == key))
    })
}

fn key_note(key: Option<&'static str>) -> String {
    key.map(|key| format!(", key `{key}`")).unwrap_or_default()
}

/// Parses peer options given as JSON text; the error says what is wrong, for the caller to
/// prefix with where the text came from.
fn peer_options_from_json(json: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(json) {
        Ok(value) => peer_options_from_value(value),
        Err(e) => Err(format!("peer_options is not valid JSON: {e}")),
    }
}

fn peer_options_from_value(value: Value) -> Result<Map<String, Value>, String> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "peer_options must be a JSON object, not {}",
            json_kind(&other)
        )),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `peer_options` in TOML: a string holding a JSON object, or a table.
fn de_peer_options<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    let result = match Value::deserialize(deserializer)? {
        Value::String(json) => peer_options_from_json(&json),
        other => peer_options_from_value(other),
    };
    result.map(Some).map_err(de::Error::custom)
}

/// A duration in TOML: a non-negative integer or float number of seconds.
fn de_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    struct Seconds;

    impl Visitor<'_> for Seconds {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number of seconds (e.g. 30 or 0.2)")
        }

        fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(secs))
        }

        fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
            u64::try_from(secs)
                .map(Duration::from_secs)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(secs), &self))
        }

        fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Duration, E> {
            seconds_from_f64(secs).map_err(|_| E::invalid_value(de::Unexpected::Float(secs), &self))
        }
    }

    deserializer.deserialize_any(Seconds).map(Some)
}

/// A duration flag: a non-negative number of seconds, integer or decimal.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds (e.g. 30 or 0.2)"))?;
    seconds_from_f64(secs)
}

fn seconds_from_f64(secs: f64) -> Result<Duration, String> {
    if secs.is_sign_negative() && secs != 0.0 {
        return Err(format!("{secs} is negative; seconds must be 0 or more"));
    }
    Duration::try_from_secs_f64(secs.abs()).map_err(|_| format!("{secs} is not a usable duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_temp(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "signalling-config-test-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write temp file");
        path
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("signalling").chain(args.iter().copied()))
            .expect("flags parse")
    }

    fn err(text: &str) -> String {
        Config::from_toml_str(text)
            .expect_err("should be rejected")
            .to_string()
    }

    #[test]
    fn embedded_default_has_every_documented_default() {
        let config = Config::from_toml_str("").expect("embedded file parses and validates");
        assert_eq!(config.bind_address, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(config.streamer_port, 8888);
        assert_eq!(config.player_port, 80);
        assert_eq!(config.sfu_port, 8889);
        assert_eq!(config.peer_options, Map::new());
        assert_eq!(config.max_players, 0);
        assert_eq!(config.player_id_style, PlayerIdStyle::Wilbur);
        assert!(config.player_count);
        assert_eq!(config.keepalive_interval, Duration::from_secs(30));
        assert_eq!(config.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(config.player_protocol_ping, Duration::ZERO);
        assert_eq!(config.max_message_size, 1_048_576);
        assert_eq!(config.max_queued_messages, 4096);
        assert_eq!(config.worker_threads, 0);
        assert_eq!(config.log_level, LogLevel::Info);
        assert_eq!(config.console_messages, ConsoleMessages::Off);
        assert_eq!(Config::default(), config);
        assert_eq!(Config::load(&Cli::default()).expect("no flags"), config);
    }

    #[test]
    fn embedded_file_sets_every_key() {
        // Config::build would also fail, but this names the key a future edit dropped.
        let table: toml::Table = toml::from_str(EMBEDDED).expect("embedded file is TOML");
        for key in KEYS {
            assert!(table.contains_key(key), "signalling.toml lacks `{key}`");
        }
        assert_eq!(
            table.len(),
            KEYS.len(),
            "signalling.toml has a key KEYS lacks"
        );
    }

    #[test]
    fn text_overrides_only_the_keys_it_sets() {
        let config = Config::from_toml_str(
            r#"
            bind_address = "::1"
            streamer_port = 9000
            player_id_style = "numeric"
            player_count = false
            keepalive_interval = 0.2
            keepalive_timeout = 1
            player_protocol_ping = 2.5
            log_level = "warning"
            console_messages = "formatted"
            "#,
        )
        .expect("valid");
        assert_eq!(config.bind_address, "::1".parse::<IpAddr>().expect("ip"));
        assert_eq!(config.streamer_port, 9000);
        assert_eq!(config.player_port, 80);
        assert_eq!(config.player_id_style, PlayerIdStyle::Numeric);
        assert!(!config.player_count);
        assert_eq!(config.keepalive_interval, Duration::from_millis(200));
        assert_eq!(config.keepalive_timeout, Duration::from_secs(1));
        assert_eq!(config.player_protocol_ping, Duration::from_millis(2500));
        assert_eq!(config.log_level, LogLevel::Warn);
        assert_eq!(config.console_messages, ConsoleMessages::Formatted);
        assert_eq!(config.max_queued_messages, 4096);
    }

    #[test]
    fn config_file_overrides_defaults_and_flags_override_file() {
        let path = write_temp(
            "layers.toml",
            "streamer_port = 9001\nplayer_port = 9002\nmax_players = 3\n",
        );
        let path_arg = path.to_str().expect("utf-8 temp path");

        let from_file = Config::load(&cli(&["--config", path_arg])).expect("valid");
        assert_eq!(from_file.streamer_port, 9001);
        assert_eq!(from_file.player_port, 9002);
        assert_eq!(from_file.max_players, 3);
        assert_eq!(from_file.sfu_port, 8889);

        let flagged = Config::load(&cli(&[
            "--config",
            path_arg,
            "--player_port",
            "9100",
            "--max_players",
            "4",
        ]))
        .expect("valid");
        assert_eq!(flagged.streamer_port, 9001);
        assert_eq!(flagged.player_port, 9100);
        assert_eq!(flagged.max_players, 4);
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn unknown_key_is_rejected_naming_key_and_file() {
        let path = write_temp("unknown.toml", "max_player = 4\n");
        let message = Config::load(&cli(&["--config", path.to_str().expect("utf-8")]))
            .expect_err("unknown key")
            .to_string();
        assert!(message.contains("max_player"), "{message}");
        assert!(message.contains("unknown field"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        std::fs::remove_file(path).ok();

        assert!(err("nonsense = true").contains("nonsense"));
    }

    #[test]
    fn bad_value_in_file_names_file_and_key() {
        let path = write_temp("badtype.toml", "player_port = 80\nmax_players = \"four\"\n");
        let message = Config::load(&cli(&["--config", path.to_str().expect("utf-8")]))
            .expect_err("bad type")
            .to_string();
        let prefix = format!("config file {}, key `max_players`: ", path.display());
        assert!(message.starts_with(&prefix), "{message}");
        assert!(message.contains("line 2"), "{message}");
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn negative_flag_values_get_a_reason() {
        let error = Cli::try_parse_from(["signalling", "--keepalive_interval", "-1"])
            .expect_err("negative");
        assert!(error.to_string().contains("negative"), "{error}");
    }

    #[test]
    fn missing_config_file_is_named() {
        let message = Config::load(&cli(&["--config", "/nonexistent/signalling.toml"]))
            .expect_err("missing file")
            .to_string();
        assert!(
            message.contains("/nonexistent/signalling.toml"),
            "{message}"
        );
    }

    #[test]
    fn bad_value_type_is_rejected_naming_the_key() {
        for (text, key, what) in [
            (r#"max_players = "four""#, "max_players", "invalid type"),
            ("streamer_port = 70000", "streamer_port", "u16"),
            (
                r#"bind_address = "localhost""#,
                "bind_address",
                "IP address",
            ),
            ("player_count = 1", "player_count", "invalid type"),
            (r#"player_id_style = "uuid""#, "player_id_style", "wilbur"),
            (r#"log_level = "loud""#, "log_level", "loud"),
            (
                r#"keepalive_interval = "30s""#,
                "keepalive_interval",
                "seconds",
            ),
            ("keepalive_timeout = -1", "keepalive_timeout", "seconds"),
        ] {
            let message = err(text);
            assert!(
                message.starts_with(&format!("configuration, key `{key}`: ")),
                "{text}: {message}"
            );
            assert!(message.contains(what), "{text}: {message}");
        }
    }

    #[test]
    fn peer_options_as_json_string_or_table() {
        let expected = serde_json::json!({"iceServers": [{"urls": ["stun:stun.example:19302"]}]});
        let from_string = Config::from_toml_str(
            r#"peer_options = '{"iceServers":[{"urls":["stun:stun.example:19302"]}]}'"#,
        )
        .expect("JSON string");
        let from_table = Config::from_toml_str(
            r#"
            [peer_options]
            iceServers = [{ urls = ["stun:stun.example:19302"] }]
            "#,
        )
        .expect("TOML table");
        assert_eq!(Value::Object(from_string.peer_options), expected);
        assert_eq!(Value::Object(from_table.peer_options), expected);
    }

    #[test]
    fn non_object_peer_options_are_rejected() {
        for text in [
            r#"peer_options = "[1, 2]""#,
            r#"peer_options = "not json""#,
            r#"peer_options = "null""#,
            r#"peer_options = """#,
            "peer_options = [1, 2]",
            "peer_options = 3",
        ] {
            let message = err(text);
            assert!(message.contains("peer_options"), "{text}: {message}");
        }
        assert!(err("peer_options = [1]").contains("must be a JSON object, not an array"));

        for flag in ["[]", "{", "\"{}\""] {
            let message = Config::load(&cli(&["--peer_options", flag]))
                .expect_err("not an object")
                .to_string();
            assert!(message.starts_with("--peer_options: "), "{flag}: {message}");
        }
    }

    #[test]
    fn peer_options_flag_and_file() {
        let config = Config::load(&cli(&["--peer_options", r#"{"iceServers":[]}"#])).expect("ok");
        assert_eq!(
            Value::Object(config.peer_options),
            serde_json::json!({"iceServers": []})
        );

        let path = write_temp("peer.json", r#"{"iceTransportPolicy": "relay"}"#);
        let path_arg = path.to_str().expect("utf-8");
        let config = Config::load(&cli(&["--peer_options_file", path_arg])).expect("ok");
        assert_eq!(
            Value::Object(config.peer_options),
            serde_json::json!({"iceTransportPolicy": "relay"})
        );

        std::fs::write(&path, "[]").expect("rewrite");
        let message = Config::load(&cli(&["--peer_options_file", path_arg]))
            .expect_err("array")
            .to_string();
        assert!(message.contains(path_arg), "{message}");
        assert!(message.contains("must be a JSON object"), "{message}");
        std::fs::remove_file(&path).ok();

        let message = Config::load(&cli(&["--peer_options_file", path_arg]))
            .expect_err("gone")
            .to_string();
        assert!(message.contains(path_arg), "{message}");

        assert!(
            Cli::try_parse_from([
                "signalling",
                "--peer_options",
                "{}",
                "--peer_options_file",
                "x"
            ])
            .is_err(),
            "the two peer options flags conflict"
        );
    }

    #[test]
    fn keepalive_timeout_must_exceed_a_nonzero_interval() {
        assert!(err("keepalive_timeout = 30").contains("keepalive_timeout"));
        assert!(err("keepalive_timeout = 29.9").contains("keepalive_timeout"));
        assert!(
            err("keepalive_interval = 0").contains("keepalive_interval is 0"),
            "a non-zero timeout needs Pings"
        );
        // Either switch may be off on its own terms.
        let config = Config::from_toml_str("keepalive_interval = 0\nkeepalive_timeout = 0")
            .expect("both off");
        assert!(config.keepalive_interval.is_zero() && config.keepalive_timeout.is_zero());
        Config::from_toml_str("keepalive_timeout = 0").expect("deadline off, Pings on");
        Config::from_toml_str("keepalive_interval = 0.2\nkeepalive_timeout = 0.5")
            .expect("short test settings");
        assert!(
            err("keepalive_interval = 100000\nkeepalive_timeout = 0")
                .contains("keepalive_interval")
        );
    }

    #[test]
    fn size_and_queue_bounds() {
        assert!(err("max_message_size = 1023").contains("max_message_size"));
        Config::from_toml_str("max_message_size = 1024").expect("lower bound");
        assert!(err("max_queued_messages = 0").contains("max_queued_messages"));
        Config::from_toml_str("max_queued_messages = 1").expect("lower bound");
        assert!(err("max_queued_messages = 1048577").contains("max_queued_messages"));
        assert!(err("worker_threads = 1025").contains("worker_threads"));
        Config::from_toml_str("worker_threads = 1024").expect("upper bound");
    }

    #[test]
    fn wilbur_flag_spellings_parse() {
        let config = Config::load(&cli(&[
            "--streamer_port",
            "1",
            "--player_port",
            "2",
            "--sfu_port",
            "3",
            "--max_players",
            "5",
            "--peer_options",
            r#"{"a":1}"#,
            "--log_level_console",
            "warning",
            "--console_messages",
            "verbose",
        ]))
        .expect("Wilbur's flags");
        assert_eq!(
            (config.streamer_port, config.player_port, config.sfu_port),
            (1, 2, 3)
        );
        assert_eq!(config.max_players, 5);
        assert_eq!(
            Value::Object(config.peer_options),
            serde_json::json!({"a": 1})
        );
        assert_eq!(config.log_level, LogLevel::Warn);
        assert_eq!(config.console_messages, ConsoleMessages::Verbose);

        // Wilbur's `--console_messages` alone means basic.
        assert_eq!(
            cli(&["--console_messages"]).console_messages,
            Some(ConsoleMessages::Basic)
        );
        assert_eq!(
            cli(&["--console_messages", "--streamer_port", "7"]).console_messages,
            Some(ConsoleMessages::Basic)
        );
        assert_eq!(cli(&["--http_port", "8080"]).player_port, Some(8080));
        for level in ["debug", "info", "warning", "error"] {
            assert!(cli(&["--log_level_console", level]).log_level.is_some());
        }
    }

    #[test]
    fn every_key_is_a_flag_with_kebab_alias() {
        let flags = cli(&[
            "--bind-address",
            "127.0.0.1",
            "--streamer-port",
            "1",
            "--player-port",
            "2",
            "--sfu-port",
            "3",
            "--max-players",
            "4",
            "--player_id_style",
            "numeric",
            "--player_count",
            "false",
            "--keepalive-interval",
            "0.2",
            "--keepalive_timeout",
            "0.5",
            "--player-protocol-ping",
            "1.5",
            "--max-message-size",
            "2048",
            "--max_queued_messages",
            "8",
            "--worker-threads",
            "1",
            "--log-level",
            "trace",
            "--console-messages",
            "off",
        ]);
        let config = Config::load(&flags).expect("valid");
        assert_eq!(config.bind_address, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            (config.streamer_port, config.player_port, config.sfu_port),
            (1, 2, 3)
        );
        assert_eq!(config.max_players, 4);
        assert_eq!(config.player_id_style, PlayerIdStyle::Numeric);
        assert!(!config.player_count);
        assert_eq!(config.keepalive_interval, Duration::from_millis(200));
        assert_eq!(config.keepalive_timeout, Duration::from_millis(500));
        assert_eq!(config.player_protocol_ping, Duration::from_millis(1500));
        assert_eq!(config.max_message_size, 2048);
        assert_eq!(config.max_queued_messages, 8);
        assert_eq!(config.worker_threads, 1);
        assert_eq!(config.log_level, LogLevel::Trace);
        assert_eq!(config.console_messages, ConsoleMessages::Off);
    }

    #[test]
    fn bad_flags_are_rejected() {
        for args in [
            &["--max_players", "-1"][..],
            &["--player_count", "maybe"],
            &["--keepalive_interval", "-1"],
            &["--keepalive_interval", "soon"],
            &["--log_level", "loud"],
            &["--streamer_port", "65536"],
            &["--player_count"],
            &["--no_such_flag", "1"],
        ] {
            let result =
                Cli::try_parse_from(std::iter::once("signalling").chain(args.iter().copied()));
            assert!(result.is_err(), "{args:?} should be rejected");
        }
    }

    #[test]
    fn flag_errors_reach_validate() {
        let message = Config::load(&cli(&["--keepalive_timeout", "10"]))
            .expect_err("timeout below interval")
            .to_string();
        assert!(message.contains("keepalive_timeout"), "{message}");
    }

    #[test]
    fn log_level_filters() {
        assert_eq!(LogLevel::Error.as_filter(), "error");
        assert_eq!(LogLevel::Warn.as_filter(), "warn");
        assert_eq!(LogLevel::Info.as_filter(), "info");
        assert_eq!(LogLevel::Debug.as_filter(), "debug");
        assert_eq!(LogLevel::Trace.as_filter(), "trace");
    }

    #[test]
    fn sessions_and_ice_defaults() {
        let config = Config::default();
        assert_eq!(
            config.sessions,
            SessionsConfig {
                max_sessions: 10_000,
                max_sessions_per_address: 1000,
                max_peers_per_session: 16,
                max_queued_events: 256,
                max_peer_event_bytes: 1 << 20,
                max_event_bytes: 64 << 20,
                max_body_bytes: 65_536,
                body_read_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                keepalive: Duration::from_secs(10),
                stream_write_timeout: Duration::from_secs(15),
                cors_origins: vec!["*".to_owned()],
            }
        );
        assert_eq!(
            config.ice,
            IceConfig {
                stun_urls: vec![],
                turn_urls: vec![],
                turn_username: String::new(),
                turn_credential: String::new(),
                turn_secret: String::new(),
                credential_lifetime: Duration::from_secs(86_400),
            }
        );
        let table: toml::Table = toml::from_str(EMBEDDED).expect("embedded file is TOML");
        for key in SECTION_KEYS {
            let (section, name) = key.split_once('.').expect("qualified");
            let section = table[section].as_table().expect("a table");
            assert!(section.contains_key(name), "signalling.toml lacks `{key}`");
        }
        let count = ["sessions", "ice"]
            .iter()
            .map(|s| table[*s].as_table().map_or(0, toml::Table::len))
            .sum::<usize>();
        assert_eq!(
            count,
            SECTION_KEYS.len(),
            "a section key SECTION_KEYS lacks"
        );
    }

    #[test]
    fn sections_override_only_the_keys_they_set() {
        let config = Config::from_toml_str(
            r#"
            [sessions]
            idle_timeout = 0.5
            cors_origins = ["https://app.example", "http://127.0.0.1:8080"]
            [ice]
            stun_urls = ["stun:127.0.0.1:3478"]
            turn_urls = ["turn:127.0.0.1:3478?transport=udp"]
            turn_secret = "s3cret"
            credential_lifetime = 600
            "#,
        )
        .expect("valid");
        assert_eq!(config.sessions.idle_timeout, Duration::from_millis(500));
        assert_eq!(config.sessions.max_sessions, 10_000);
        assert_eq!(config.sessions.cors_origins.len(), 2);
        assert_eq!(config.ice.turn_secret, "s3cret");
        assert_eq!(config.ice.credential_lifetime, Duration::from_secs(600));
        assert_eq!(config.ice.turn_username, "");
    }

    #[test]
    fn unknown_section_keys_are_rejected() {
        assert!(err("[sessions]\nmax_session = 3").contains("max_session"));
        assert!(err("[ice]\nturn_password = \"x\"").contains("turn_password"));
        let message = err("[sessions]\nidle_timeout = \"soon\"");
        assert!(
            message.starts_with("configuration, key `sessions.idle_timeout`"),
            "{message}"
        );
    }

    #[test]
    fn section_values_are_validated_naming_the_key() {
        for (text, key) in [
            ("[sessions]\nmax_sessions = 0", "sessions.max_sessions"),
            (
                "[sessions]\nmax_peers_per_session = 1",
                "sessions.max_peers_per_session",
            ),
            (
                "[sessions]\nmax_queued_events = 0",
                "sessions.max_queued_events",
            ),
            (
                "[sessions]\nmax_queued_events = 2000000",
                "sessions.max_queued_events",
            ),
            (
                "[sessions]\nmax_body_bytes = 100",
                "sessions.max_body_bytes",
            ),
            (
                "[sessions]\nmax_sessions_per_address = 2000000",
                "sessions.max_sessions_per_address",
            ),
            (
                // Below max_body_bytes (65536) + 256 × 16.
                "[sessions]\nmax_peer_event_bytes = 69631",
                "sessions.max_peer_event_bytes",
            ),
            (
                "[sessions]\nmax_body_bytes = 1048576",
                "sessions.max_peer_event_bytes",
            ),
            (
                "[sessions]\nmax_event_bytes = 1048575",
                "sessions.max_event_bytes",
            ),
            (
                "[sessions]\nmax_peer_event_bytes = 2199023255553\nmax_event_bytes = 2199023255553",
                "sessions.max_peer_event_bytes",
            ),
            ("[sessions]\nidle_timeout = 100000", "sessions.idle_timeout"),
            ("[sessions]\nkeepalive = 100000", "sessions.keepalive"),
            (
                "[sessions]\nbody_read_timeout = 100000",
                "sessions.body_read_timeout",
            ),
            (
                "[sessions]\nstream_write_timeout = 100000",
                "sessions.stream_write_timeout",
            ),
            (
                "[sessions]\ncors_origins = [\"*\", \"https://a\"]",
                "sessions.cors_origins",
            ),
            (
                "[sessions]\ncors_origins = [\"app.example\"]",
                "sessions.cors_origins",
            ),
            (
                "[sessions]\ncors_origins = [\"https://a/path\"]",
                "sessions.cors_origins",
            ),
            ("[ice]\nstun_urls = [\"turn:x\"]", "ice.stun_urls"),
            ("[ice]\nturn_urls = [\"stun:x:1\"]", "ice.turn_urls"),
            ("[ice]\nturn_urls = [\"turn:x:1\"]", "ice.turn_urls"),
            ("[ice]\nturn_secret = \"s\"", "ice.turn_urls"),
            (
                "[ice]\nturn_urls = [\"turn:x:1\"]\nturn_username = \"u\"",
                "ice.turn_credential",
            ),
            (
                "[ice]\nturn_urls = [\"turn:x:1\"]\nturn_secret = \"s\"\nturn_username = \"u\"\nturn_credential = \"c\"",
                "ice.turn_secret",
            ),
            (
                "[ice]\nturn_urls = [\"turn:x:1\"]\nturn_secret = \"s\"\ncredential_lifetime = 0",
                "ice.credential_lifetime",
            ),
        ] {
            let message = err(text);
            assert!(
                message.starts_with(&format!("{key}: ")),
                "{text}: {message}"
            );
        }
        Config::from_toml_str(
            "[ice]\nturn_urls = [\"turns:x:5349\"]\nturn_username = \"u\"\nturn_credential = \"c\"",
        )
        .expect("static credentials");
        Config::from_toml_str("[sessions]\ncors_origins = []\nidle_timeout = 0\nkeepalive = 0")
            .expect("CORS off, no expiry, no keep-alive");
        Config::from_toml_str(
            "[sessions]\nmax_sessions_per_address = 0\nbody_read_timeout = 0\nstream_write_timeout = 0\nmax_peer_event_bytes = 69632\nmax_event_bytes = 69632",
        )
        .expect("no per-address share, no timeouts, the smallest byte budgets");
    }

    #[test]
    fn session_and_ice_flags() {
        let config = Config::load(&cli(&[
            "--cors_origins",
            "https://a.example, http://b.example:8080",
            "--session_idle_timeout",
            "0.25",
            "--stun-urls",
            "stun:127.0.0.1:3478",
        ]))
        .expect("valid");
        assert_eq!(
            config.sessions.cors_origins,
            vec!["https://a.example", "http://b.example:8080"]
        );
        assert_eq!(config.sessions.idle_timeout, Duration::from_millis(250));
        assert_eq!(config.ice.stun_urls, vec!["stun:127.0.0.1:3478"]);
        let none = Config::load(&cli(&["--cors_origins", ""])).expect("valid");
        assert!(none.sessions.cors_origins.is_empty());
        // TURN URLs from a flag still need credentials.
        let message = Config::load(&cli(&["--turn_urls", "turn:127.0.0.1:3478"]))
            .expect_err("no credentials")
            .to_string();
        assert!(message.starts_with("ice.turn_urls: "), "{message}");
    }

    #[test]
    fn help_renders() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("--http_port"), "{help}");
        assert!(help.contains("--log_level_console"), "{help}");
    }
}
