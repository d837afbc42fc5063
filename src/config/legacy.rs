//! Wilbur's and Cirrus's flags and config-file keys that are not simply another spelling of one
//! of our keys (those are aliases in `types.rs`). Each either sets one of our keys (maybe
//! converting its value), reads a file into one, or is accepted and does nothing, with a
//! warning if its value asks for something. Flags and JSON config files share this table, as
//! both servers share names between their flags and their config files.

use serde_json::Value;

/// Where a legacy name comes from (for the README's migration table and the warnings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Wilbur, UE5.5 and later (including Epic's later master).
    Wilbur,
    /// Cirrus, UE4.27 to UE5.4.
    Cirrus,
    /// Ours: a secret's `_file` variant, as Wilbur has for `player_token`, so a secret can stay
    /// out of the command line and the config file.
    Ours,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Effect {
    /// Sets this key to the value converted; `None` from the conversion sets nothing.
    Convert(&'static str, fn(&Value) -> Option<Value>),
    /// The value is a file's path; the file's text (trimmed) becomes this key's value.
    ReadFile(&'static str),
    /// Does nothing here; one warning with the reason, if the value asks for something.
    Unsupported(&'static str),
    /// Does nothing here, and did nothing there either without another setting that warns for
    /// itself (an HTTPS port without HTTPS): accepted without a word.
    Quiet,
    /// Start-up stops with the reason if the value asks for something: running without what
    /// it asked for would be unsafe (an authentication scheme we do not have).
    Refuse(&'static str),
}

#[derive(Debug)]
pub(crate) struct Legacy {
    pub(crate) name: &'static str,
    pub(crate) origin: Origin,
    /// A switch: given alone on the command line it means `true`.
    pub(crate) switch: bool,
    pub(crate) effect: Effect,
}

const fn flag(name: &'static str, origin: Origin, effect: Effect) -> Legacy {
    Legacy {
        name,
        origin,
        switch: false,
        effect,
    }
}

const fn switch(name: &'static str, origin: Origin, effect: Effect) -> Legacy {
    Legacy {
        name,
        origin,
        switch: true,
        effect,
    }
}

use Effect::{Convert, Quiet, ReadFile, Refuse, Unsupported};
use Origin::{Cirrus, Ours, Wilbur};

/// Every legacy name. Wilbur's `--config_file`, `--no_config` and Cirrus's `--configFile` are
/// the loader's own flags and not here.
pub(crate) const LEGACY: &[Legacy] = &[
    // Wilbur (SignallingWebServer/src/index.ts, UE5.5 to master).
    flag("peer_options_file", Wilbur, ReadFile("peer_options")),
    switch(
        "stdin",
        Wilbur,
        Unsupported("there is no interactive console; /api and the log show the state"),
    ),
    switch(
        "save",
        Wilbur,
        Unsupported(
            "this server never rewrites its configuration file; --log_config shows the effective settings",
        ),
    ),
    flag("player_token_file", Wilbur, ReadFile("player_token")),
    flag("turn_secret_file", Wilbur, ReadFile("ice.turn_secret")),
    flag("streamer_token_file", Ours, ReadFile("streamer_token")),
    flag("sfu_token_file", Ours, ReadFile("sfu_token")),
    flag("admin_token_file", Ours, ReadFile("admin_token")),
    flag("jwt_secret_file", Ours, ReadFile("jwt_secret")),
    flag("redis_url_file", Ours, ReadFile("cluster.redis_url")),
    flag(
        "player_keepalive_timeout",
        Wilbur,
        Unsupported(
            "keepalive_interval and keepalive_timeout (WebSocket Pings, seconds) cover every peer here",
        ),
    ),
    // Cirrus (cirrus.js and its config.json, UE4.27 to UE5.4).
    // Only Cirrus's client side of the frontend used it.
    switch("DisableSSLCert", Cirrus, Quiet),
    switch("LogToFile", Cirrus, Convert("log_folder", log_to_file)),
    switch(
        "LogVerbose",
        Cirrus,
        Convert("console_messages", log_verbose),
    ),
    switch(
        "UseFrontend",
        Cirrus,
        Unsupported(
            "Epic's separate frontend web server was retired in UE5.1; serve the player page here",
        ),
    ),
    flag("FrontendUrl", Cirrus, Quiet),
    switch(
        "UseAuthentication",
        Cirrus,
        Refuse(
            "Cirrus's login page (passport) is not supported: players would get in without logging in",
        ),
    ),
];

/// Cirrus's `LogToFile: true` wrote daily files under `logs/` beside cirrus.js.
fn log_to_file(value: &Value) -> Option<Value> {
    asks_for_something(value).then(|| Value::from("logs"))
}

/// Cirrus's `LogVerbose: true` logged every signalling message in full.
fn log_verbose(value: &Value) -> Option<Value> {
    asks_for_something(value).then(|| Value::from("verbose"))
}

/// Whether a value turns something on: anything but `false`, `""`, `null`, `0` or an empty
/// object (as Cirrus's `"AdditionalRoutes": {}`). The strings "false" and "0" count as false.
pub(crate) fn asks_for_something(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !matches!(s.trim(), "" | "false" | "0"),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Wilbur => "Wilbur",
            Self::Cirrus => "Cirrus",
            Self::Ours => "file variant",
        })
    }
}

pub(crate) fn find(name: &str) -> Option<&'static Legacy> {
    LEGACY.iter().find(|l| l.name == name)
}
