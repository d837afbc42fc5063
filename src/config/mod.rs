//! Configuration: the embedded `signalling.toml`, then a config file, then flags, merged key by
//! key into one tree and deserialized once into [`Config`], then validated once.
//!
//! - `types.rs` declares every key once (field, type, flag help, other spellings);
//! - `values.rs` reads values (seconds, JSON objects, strings from flags and JSON files);
//! - `legacy.rs` maps Wilbur's and Cirrus's other flags and config keys onto ours;
//! - `cli.rs` builds the command line from the declarations;
//! - `validate.rs` holds every rule on values;
//! - `cluster.rs` turns `[cluster]` into the cluster's settings, and checks and redacts its URL.
//!
//! Why a small merge and `serde_path_to_error` rather than figment: our sources are not all
//! shaped like the struct (Wilbur's flat JSON with ports as strings, Cirrus's CamelCase keys,
//! switches that are bare flags), so each source is first turned into (key, value, where from)
//! settings through the declarations; merging those is a map insert, and the one deserialization
//! names the failing key's path, which the merge maps back to where its value came from.

mod cli;
mod cluster;
mod legacy;
#[cfg(test)]
mod tests;
mod types;
mod validate;
mod values;

use std::collections::HashMap;
#[cfg(test)]
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub(crate) use self::cluster::{ClusterSettings, cluster_settings};
use self::legacy::{Effect, Legacy};
use self::types::KeyDecl;
pub use self::types::{
    ClusterConfig, Config, ConsoleMessages, IceConfig, LogFormat, LogLevel, PlayerIdStyle,
    SessionsConfig,
};
pub use self::validate::{
    MAX_EVENT_BYTES, MAX_MAX_QUEUED_BYTES, MAX_MAX_QUEUED_MESSAGES, MAX_SECONDS, MAX_SESSION_LIMIT,
    MAX_WORKER_THREADS, MIN_MAX_MESSAGE_SIZE, MIN_MAX_QUEUED_BYTES, PEER_EVENT_BYTES_PER_PEER,
};

/// The default configuration, compiled in. Every key is present and commented there.
const EMBEDDED: &str = include_str!("../../signalling.toml");

/// Every key, top-level first, then each section's, in declaration order.
pub(crate) fn all_keys() -> impl Iterator<Item = &'static KeyDecl> {
    Config::KEYS
        .iter()
        .chain(Config::SECTIONS.iter().flat_map(|(_, keys)| keys.iter()))
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Embedded,
    Text,
    File(PathBuf),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded => f.write_str("the embedded signalling.toml"),
            Self::Text => f.write_str("the configuration text"),
            Self::File(path) => write!(f, "config file {}", path.display()),
            Self::Flag(flag) => write!(f, "flag --{flag}"),
        }
    }
}

/// Why the configuration could not be loaded. Each message names the key or file at fault and
/// where a bad value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A config file (or text) that is not TOML or JSON.
    #[error("{from}: {message}")]
    Syntax { from: Source, message: String },
    #[error("{from}: unknown key `{key}`{hint}")]
    UnknownKey {
        from: Source,
        key: String,
        hint: String,
    },
    /// A value of the wrong type or form.
    #[error("`{key}` (from {from}): {problem}")]
    Value {
        key: String,
        from: Source,
        problem: String,
    },
    /// A value that breaks a rule of `validate.rs`.
    #[error("`{key}` (from {from}) {problem}")]
    Invalid {
        key: &'static str,
        from: Source,
        problem: String,
    },
    /// A Wilbur or Cirrus setting we will not run without.
    #[error("{name} (from {from}): {reason}")]
    Refused {
        name: String,
        from: Source,
        reason: &'static str,
    },
}

/// A loaded configuration and what the loading has to say once logging is up: one warning per
/// accepted setting that does nothing here.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// What went wrong on the command line: clap's error (printed as clap prints it: usage, the
/// nearest flag; `--help` and `--version` are "errors" that exit 0) or the configuration's.
#[derive(Debug)]
pub enum LoadError {
    Cli(clap::Error),
    Config(ConfigError),
}

/// One key's value from one source.
struct Setting {
    key: &'static KeyDecl,
    value: Value,
    source: Source,
}

/// The merged settings: each key's latest value and where it came from.
#[derive(Default)]
struct Merged {
    tree: Map<String, Value>,
    sources: HashMap<String, Source>,
}

impl Merged {
    fn set(&mut self, setting: Setting) {
        let Setting { key, value, source } = setting;
        let value = values::coerce(key.kind, value);
        let table = if key.section.is_empty() {
            &mut self.tree
        } else {
            let section = self
                .tree
                .entry(key.section)
                .or_insert_with(|| Value::Object(Map::new()));
            if !section.is_object() {
                *section = Value::Object(Map::new());
            }
            match section.as_object_mut() {
                Some(table) => table,
                None => return,
            }
        };
        table.insert(key.name.to_owned(), value);
        self.sources.insert(key.path(), source);
    }

    fn source_of(&self, path: &str) -> Source {
        self.sources.get(path).cloned().unwrap_or(Source::Embedded)
    }

    /// The one deserialization, then the one validation.
    fn build(self) -> Result<Config, ConfigError> {
        let config: Config = serde_path_to_error::deserialize(Value::Object(self.tree.clone()))
            .map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Value {
                    from: self.source_of(&key),
                    key,
                    problem: e.into_inner().to_string(),
                }
            })?;
        validate::validate(&config).map_err(|(key, problem)| ConfigError::Invalid {
            key,
            from: self.source_of(key),
            problem,
        })?;
        Ok(config)
    }
}

fn find_key(section: &str, name: &str) -> Option<&'static KeyDecl> {
    all_keys().find(|k| k.section == section && k.name == name)
}

fn is_section(name: &str) -> bool {
    Config::SECTIONS.iter().any(|(s, _)| *s == name)
}

/// Every name a setting may have in a file or flag, for "did you mean".
fn known_names() -> Vec<String> {
    let mut names: Vec<String> = all_keys()
        .flat_map(|k| [k.path(), k.flag()])
        .chain(all_keys().flat_map(|k| k.aliases.iter().map(|a| (*a).to_owned())))
        .chain(legacy::LEGACY.iter().map(|l| l.name.to_owned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn nearest_hint(name: &str) -> String {
    known_names()
        .into_iter()
        .map(|known| (strsim::jaro_winkler(name, &known), known))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, known)| format!(" (did you mean `{known}`?)"))
        .unwrap_or_default()
}

fn unknown_key(key: String, source: &Source) -> ConfigError {
    ConfigError::UnknownKey {
        hint: nearest_hint(&key),
        from: source.clone(),
        key,
    }
}

/// Our own shape (TOML, or JSON with our keys): top-level keys and section tables.
fn native_settings(
    tree: Map<String, Value>,
    source: &Source,
    out: &mut Vec<Setting>,
) -> Result<(), ConfigError> {
    for (name, value) in tree {
        if let Some(key) = find_key("", &name) {
            out.push(Setting {
                key,
                value,
                source: source.clone(),
            });
        } else if is_section(&name) && value.is_object() {
            let Value::Object(table) = value else {
                continue;
            };
            for (inner, value) in table {
                let Some(key) = find_key(&name, &inner) else {
                    let key = format!("{name}.{inner}");
                    return Err(unknown_key(key, source));
                };
                out.push(Setting {
                    key,
                    value,
                    source: source.clone(),
                });
            }
        } else {
            return Err(unknown_key(name, source));
        }
    }
    Ok(())
}

/// A key by any of its spellings: path, flag, or alias (Wilbur's and Cirrus's names for it).
fn key_by_any_name(name: &str) -> Option<&'static KeyDecl> {
    all_keys().find(|k| k.flag() == name || k.path() == name || k.aliases.contains(&name))
}

/// What one legacy setting does. `shown` is how the warning names it.
fn apply_legacy(
    legacy: &'static Legacy,
    value: Value,
    source: &Source,
    shown: &str,
    out: &mut Vec<Setting>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let key = |path: &str| all_keys().find(|k| k.path() == path);
    match legacy.effect {
        Effect::Convert(path, convert) => {
            if let (Some(key), Some(value)) = (key(path), convert(&value)) {
                out.push(Setting {
                    key,
                    value,
                    source: source.clone(),
                });
            }
        }
        Effect::ReadFile(path) => {
            let file = match &value {
                Value::String(file) if !file.trim().is_empty() => PathBuf::from(file),
                _ => return Ok(()),
            };
            let text = std::fs::read_to_string(&file).map_err(|e| ConfigError::Read {
                what: "the file named by",
                path: file.clone(),
                source: std::io::Error::new(e.kind(), format!("{shown}: {e}")),
            })?;
            if let Some(key) = key(path) {
                out.push(Setting {
                    key,
                    value: Value::String(text.trim().to_owned()),
                    source: Source::File(file),
                });
            }
        }
        Effect::Unsupported(reason) => {
            if legacy::asks_for_something(&value) {
                warnings.push(format!("{shown} has no effect here: {reason}"));
            }
        }
        Effect::Quiet => {}
        Effect::Refuse(reason) => {
            if legacy::asks_for_something(&value) {
                return Err(ConfigError::Refused {
                    name: shown.to_owned(),
                    from: source.clone(),
                    reason,
                });
            }
        }
    }
    Ok(())
}

/// A JSON config file: our own keys, or Wilbur's or Cirrus's (flat, any of their names).
fn json_settings(
    tree: Map<String, Value>,
    source: &Source,
    out: &mut Vec<Setting>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for (name, value) in tree {
        if is_section(&name) && value.is_object() {
            let mut one = Map::new();
            one.insert(name, value);
            native_settings(one, source, out)?;
        } else if let Some(key) = key_by_any_name(&name) {
            out.push(Setting {
                key,
                value,
                source: source.clone(),
            });
        } else if let Some(legacy) = legacy::find(&name) {
            let shown = format!("`{name}` ({}) in {source}", legacy.origin);
            apply_legacy(legacy, value, source, &shown, out, warnings)?;
        } else {
            return Err(unknown_key(name, source));
        }
    }
    Ok(())
}

/// A config file's settings: JSON if its name ends in `.json`, else TOML.
fn file_settings(
    path: &Path,
    out: &mut Vec<Setting>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what: "config file",
        path: path.to_owned(),
        source,
    })?;
    let source = Source::File(path.to_owned());
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(tree)) => json_settings(tree, &source, out, warnings),
            Ok(other) => Err(ConfigError::Syntax {
                from: source,
                message: format!("must hold a JSON object, not {}", values::json_kind(&other)),
            }),
            Err(e) => Err(ConfigError::Syntax {
                from: source,
                message: e.to_string(),
            }),
        }
    } else {
        native_settings(toml_tree(&text, &source)?, &source, out)
    }
}

fn toml_tree(text: &str, source: &Source) -> Result<Map<String, Value>, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        from: source.clone(),
        message: e.to_string(),
    })?;
    match serde_json::to_value(table) {
        Ok(Value::Object(tree)) => Ok(tree),
        _ => Err(ConfigError::Syntax {
            from: source.clone(),
            message: "not representable as settings".to_owned(),
        }),
    }
}

fn embedded() -> Result<Merged, ConfigError> {
    let mut merged = Merged::default();
    let mut settings = Vec::new();
    native_settings(
        toml_tree(EMBEDDED, &Source::Embedded)?,
        &Source::Embedded,
        &mut settings,
    )?;
    for setting in settings {
        merged.set(setting);
    }
    Ok(merged)
}

/// Loads from command-line arguments (the first is the program name).
pub fn load_args<I, T>(args: I) -> Result<Loaded, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = cli::command()
        .try_get_matches_from(args)
        .map_err(LoadError::Cli)?;
    let flags = cli::flags(&matches);
    load_flags(flags).map_err(LoadError::Config)
}

fn load_flags(flags: cli::Flags) -> Result<Loaded, ConfigError> {
    let mut merged = embedded()?;
    let mut settings = Vec::new();
    let mut warnings = Vec::new();
    if let Some(path) = flags.config_file.as_ref().filter(|_| !flags.no_config) {
        file_settings(Path::new(path), &mut settings, &mut warnings)?;
    } else if flags.config_file.is_none() && !flags.no_config && Path::new("config.json").is_file()
    {
        warnings.push(
            "./config.json is not read unless named (Wilbur and Cirrus read it by default): \
             pass --config_file config.json to use it, or --no_config to silence this"
                .to_owned(),
        );
    }
    // Wilbur's `--https_port` implies `--https` (commander's `implies`), as a flag only.
    let given = |name: &str| flags.keys.iter().any(|(key, _)| key.name == name);
    let implied_https = (given("https_port") && !given("https"))
        .then(|| find_key("", "https"))
        .flatten();
    for (key, value) in flags
        .keys
        .into_iter()
        .chain(implied_https.map(|k| (k, "true".to_owned())))
    {
        settings.push(Setting {
            key,
            value: Value::String(value),
            source: Source::Flag(key.flag()),
        });
    }
    for (legacy, value) in flags.legacy {
        let source = Source::Flag(legacy.name.to_owned());
        let shown = format!("--{} ({})", legacy.name, legacy.origin);
        apply_legacy(
            legacy,
            Value::String(value),
            &source,
            &shown,
            &mut settings,
            &mut warnings,
        )?;
    }
    for setting in settings {
        merged.set(setting);
    }
    warnings.dedup();
    let config = merged.build()?;
    Ok(Loaded { config, warnings })
}

impl Default for Config {
    fn default() -> Self {
        #[allow(clippy::expect_used)] // The file is compiled in, and a unit test loads it.
        Self::from_toml_str("").expect("the embedded signalling.toml is valid")
    }
}

impl Config {
    /// Embedded defaults overlaid with `text` (TOML, any subset of the keys), then validated.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let mut merged = embedded()?;
        let mut settings = Vec::new();
        native_settings(
            toml_tree(text, &Source::Text)?,
            &Source::Text,
            &mut settings,
        )?;
        for setting in settings {
            merged.set(setting);
        }
        merged.build()
    }

    /// Checks every rule on values (for a `Config` built or changed in code).
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self).map_err(|(key, problem)| ConfigError::Invalid {
            key,
            from: Source::Text,
            problem,
        })
    }

    /// The effective settings as `key = value` lines, secrets replaced by `"<redacted>"`, for
    /// `--log_config`.
    pub fn describe(&self) -> Vec<String> {
        let Ok(Value::Object(tree)) = serde_json::to_value(self) else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        for key in all_keys() {
            let value = if key.section.is_empty() {
                tree.get(key.name)
            } else {
                tree.get(key.section).and_then(|s| s.get(key.name))
            };
            let Some(value) = value else { continue };
            let shown = if is_secret(key) && legacy::asks_for_something(value) {
                "\"<redacted>\"".to_owned()
            } else if key.path() == "cluster.redis_url" {
                // Only its password is secret; where Redis is helps whoever reads the log.
                Value::String(cluster::redacted_redis_url(
                    value.as_str().unwrap_or_default(),
                ))
                .to_string()
            } else {
                value.to_string()
            };
            lines.push(format!("{} = {shown}", key.path()));
        }
        lines
    }
}

/// Keys whose values are never logged or served.
pub(crate) fn is_secret(key: &KeyDecl) -> bool {
    matches!(
        key.path().as_str(),
        "ice.turn_secret"
            | "ice.turn_credential"
            | "player_token"
            | "streamer_token"
            | "sfu_token"
            | "streamer_tokens"
            | "jwt_secret"
            | "admin_token"
    )
}

/// The keys (`section.key` paths, in declaration order) whose values differ between `old` and
/// `new`, for a reload's log line.
pub(crate) fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let value = |tree: &Map<String, Value>, key: &KeyDecl| -> Option<Value> {
        if key.section.is_empty() {
            tree.get(key.name).cloned()
        } else {
            tree.get(key.section).and_then(|s| s.get(key.name)).cloned()
        }
    };
    all_keys()
        .filter(|key| value(&old, key) != value(&new, key))
        .map(KeyDecl::path)
        .collect()
}
