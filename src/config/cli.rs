//! The command line, built from the key declarations: one flag per key (its name, or
//! `section_key` for a key in a section; each also with dashes, and its aliases), Wilbur's and
//! Cirrus's other flags (hidden from `--help`, README "Migrating from Wilbur or Cirrus"), and
//! the config-file flags. clap refuses any other flag, naming the nearest known one.

use std::ffi::OsString;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::legacy::{LEGACY, Legacy};
use super::types::{KeyDecl, Kind};
use super::{EMBEDDED, all_keys};

/// Ids of the loader's own flags.
pub(crate) const CONFIG_FILE: &str = "config_file";
pub(crate) const NO_CONFIG: &str = "no_config";
const LEGACY_PREFIX: &str = "legacy:";

/// What the command line asked for, in the order given.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    pub(crate) config_file: Option<OsString>,
    pub(crate) no_config: bool,
    pub(crate) keys: Vec<(&'static KeyDecl, String)>,
    pub(crate) legacy: Vec<(&'static Legacy, String)>,
}

/// The default of each key as `signalling.toml` writes it, for `--help`.
fn embedded_default(decl: &KeyDecl, table: &toml::Table) -> Option<String> {
    let value = if decl.section.is_empty() {
        table.get(decl.name)
    } else {
        table.get(decl.section)?.get(decl.name)
    }?;
    Some(value.to_string())
}

/// `a_b` also as `a-b`.
fn spellings(name: &str) -> impl Iterator<Item = String> + use<> {
    let dashed = name.replace('_', "-");
    let dashed = (dashed != name).then_some(dashed);
    std::iter::once(name.to_owned()).chain(dashed)
}

fn key_arg(decl: &'static KeyDecl, table: &toml::Table) -> Arg {
    let flag = decl.flag();
    let aliases: Vec<String> = spellings(&flag)
        .skip(1)
        .chain(decl.aliases.iter().flat_map(|a| spellings(a)))
        .collect();
    let default = embedded_default(decl, table).unwrap_or_default();
    let mut arg = Arg::new(decl.path())
        .long(flag)
        .aliases(aliases)
        .value_name(decl.value_name)
        .help(format!("{} [default: {default}]", decl.help))
        .action(ArgAction::Append)
        .allow_negative_numbers(matches!(decl.kind, Kind::Int | Kind::Seconds));
    if let Some(bare) = decl.bare {
        arg = arg.num_args(0..=1).default_missing_value(bare);
    }
    arg
}

fn legacy_arg(legacy: &'static Legacy) -> Arg {
    let mut arg = Arg::new(format!("{LEGACY_PREFIX}{}", legacy.name))
        .long(legacy.name)
        .hide(true)
        .action(ArgAction::Append)
        .allow_negative_numbers(true);
    if legacy.switch {
        arg = arg.num_args(0..=1).default_missing_value("true");
    }
    arg
}

/// The whole command line.
pub(crate) fn command() -> Command {
    #[allow(clippy::expect_used)] // Compiled in; the config unit tests parse it.
    let table: toml::Table = toml::from_str(EMBEDDED).expect("the embedded signalling.toml parses");
    let mut command = Command::new("signalling")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Pixel Streaming signalling server: a drop-in for Epic's Wilbur and Cirrus")
        .long_about(None)
        .after_help(
            "Settings come from the embedded signalling.toml, then the config file, then these \
             flags; each flag is also a key of the file (in a section, the part after the \
             section's name). Flags take `--flag value` or `--flag=value`; a switch alone means \
             true. Wilbur's and Cirrus's flags are accepted too (README, \"Migrating from Wilbur \
             or Cirrus\").",
        )
        .arg(
            Arg::new(CONFIG_FILE)
                .long("config")
                .aliases(["config_file", "config-file", "configFile"])
                .value_name("PATH")
                .value_parser(clap::value_parser!(OsString))
                .help(
                    "Config file: TOML (our keys), or JSON in Wilbur's or Cirrus's shape \
                     (also --config_file, --configFile)",
                ),
        )
        .arg(
            Arg::new(NO_CONFIG)
                .long("no_config")
                .alias("no-config")
                .action(ArgAction::SetTrue)
                .help("Read no config file, even if one is named (Wilbur's flag)"),
        );
    for decl in all_keys() {
        command = command.arg(key_arg(decl, &table));
    }
    for legacy in LEGACY {
        command = command.arg(legacy_arg(legacy));
    }
    command
}

/// The flags given, from clap's matches, in command-line order.
pub(crate) fn flags(matches: &ArgMatches) -> Flags {
    let mut flags = Flags {
        config_file: matches.get_one::<OsString>(CONFIG_FILE).cloned(),
        no_config: matches.get_flag(NO_CONFIG),
        ..Flags::default()
    };
    let mut keys = Vec::new();
    for decl in all_keys() {
        if let Some(found) = last_value(matches, &decl.path()) {
            keys.push((found, decl));
        }
    }
    let mut legacy = Vec::new();
    for entry in LEGACY {
        if let Some(found) = last_value(matches, &format!("{LEGACY_PREFIX}{}", entry.name)) {
            legacy.push((found, entry));
        }
    }
    keys.sort_by_key(|((index, _), _)| *index);
    legacy.sort_by_key(|((index, _), _)| *index);
    flags.keys = keys.into_iter().map(|((_, v), d)| (d, v)).collect();
    flags.legacy = legacy.into_iter().map(|((_, v), l)| (l, v)).collect();
    flags
}

/// The last value given for `id` and its position on the command line.
fn last_value(matches: &ArgMatches, id: &str) -> Option<(usize, String)> {
    let value = matches.get_raw(id)?.next_back()?;
    let index = matches.indices_of(id)?.next_back().unwrap_or(0);
    Some((index, value.to_string_lossy().into_owned()))
}
