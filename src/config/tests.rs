use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;

use super::*;

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("signalling-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

fn load(args: &[&str]) -> Result<Loaded, LoadError> {
    load_args(std::iter::once("signalling").chain(args.iter().copied()))
}

fn config(args: &[&str]) -> Config {
    match load(args) {
        Ok(loaded) => loaded.config,
        Err(LoadError::Cli(e)) => panic!("{args:?}: {e}"),
        Err(LoadError::Config(e)) => panic!("{args:?}: {e}"),
    }
}

fn config_error(args: &[&str]) -> String {
    match load(args) {
        Ok(_) => panic!("{args:?} should be refused"),
        Err(LoadError::Cli(e)) => e.to_string(),
        Err(LoadError::Config(e)) => e.to_string(),
    }
}

fn text_error(text: &str) -> String {
    Config::from_toml_str(text)
        .expect_err("should be refused")
        .to_string()
}

#[test]
fn embedded_defaults() {
    let config = Config::from_toml_str("").expect("embedded file parses and validates");
    assert_eq!(config.bind_address, IpAddr::from([0u16; 8]));
    assert_eq!(
        (config.streamer_port, config.player_port, config.sfu_port),
        (8888, 80, 8889)
    );
    assert_eq!(config.peer_options, Map::new());
    assert_eq!(config.max_players, 0);
    assert_eq!(config.player_id_style, PlayerIdStyle::Wilbur);
    assert!(config.player_count);
    assert_eq!(config.keepalive_interval, Duration::from_secs(30));
    assert_eq!(config.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(config.player_protocol_ping, Duration::ZERO);
    assert_eq!(config.max_message_size, 1_048_576);
    assert_eq!(config.log_level, LogLevel::Info);
    assert_eq!(config.console_messages, ConsoleMessages::Off);
    assert!(!config.log_config);
    assert_eq!(config.sessions.cors_origins, vec!["*".to_owned()]);
    assert_eq!(config.ice.credential_lifetime, Duration::from_secs(86400));
    assert_eq!(Config::default(), config);
    assert_eq!(self::config(&[]), config);
}

#[test]
fn text_overrides_only_the_keys_it_sets() {
    let config = Config::from_toml_str(
        "max_players = 3\nkeepalive_interval = 0.5\nkeepalive_timeout = 2\n\
         [sessions]\nmax_sessions = 7\n",
    )
    .expect("valid");
    assert_eq!(config.max_players, 3);
    assert_eq!(config.keepalive_interval, Duration::from_millis(500));
    assert_eq!(config.sessions.max_sessions, 7);
    assert_eq!(config.sessions.max_peers_per_session, 16, "untouched");
    assert_eq!(config.streamer_port, 8888, "untouched");
}

#[test]
fn layers_in_order_file_then_flags() {
    let toml = temp_file(
        "layers.toml",
        "streamer_port = 1\nplayer_port = 2\n[ice]\nstun_urls = [\"stun:a:1\"]\n",
    );
    let path = toml.to_str().expect("utf-8 path");
    let config = config(&["--config", path, "--player_port", "3"]);
    assert_eq!((config.streamer_port, config.player_port), (1, 3));
    assert_eq!(config.ice.stun_urls, vec!["stun:a:1".to_owned()]);
    // Wilbur's and Cirrus's spellings of the file flag, and --no_config.
    assert_eq!(self::config(&["--config_file", path]).streamer_port, 1);
    assert_eq!(self::config(&["--configFile", path]).streamer_port, 1);
    assert_eq!(
        self::config(&["--config_file", path, "--no_config"]).streamer_port,
        8888
    );
    // The later of two spellings of one key wins.
    assert_eq!(
        self::config(&["--HttpPort", "5", "--player_port", "6"]).player_port,
        6
    );
    assert_eq!(
        self::config(&["--player_port", "6", "--HttpPort=5"]).player_port,
        5
    );
}

#[test]
fn every_key_is_a_flag_in_both_spellings_and_both_forms() {
    let table: toml::Table = toml::from_str(EMBEDDED).expect("TOML");
    for key in all_keys() {
        let default = if key.section.is_empty() {
            &table[key.name]
        } else {
            &table[key.section][key.name]
        };
        let value = match default {
            toml::Value::String(s) => s.clone(),
            toml::Value::Array(a) => a
                .iter()
                .filter_map(toml::Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        let flag = key.flag();
        for spelling in [flag.clone(), flag.replace('_', "-")] {
            // --https_port implies --https (Wilbur's rule): state https's default beside it.
            let off = if key.name == "https_port" {
                &["--https", "false"][..]
            } else {
                &[]
            };
            let separate_flag = format!("--{spelling}");
            let joined_flag = format!("--{spelling}={value}");
            let separate = config(&[&[separate_flag.as_str(), value.as_str()][..], off].concat());
            let joined = config(&[&[joined_flag.as_str()][..], off].concat());
            assert_eq!(separate, Config::default(), "--{spelling} {value}");
            assert_eq!(joined, Config::default(), "--{spelling}={value}");
        }
    }
}

#[test]
fn switches_alone_or_with_a_value() {
    assert!(config(&["--log_config"]).log_config);
    assert!(config(&["--log_config", "--player_port", "5"]).log_config);
    assert!(!config(&["--log_config", "false"]).log_config);
    assert!(!config(&["--log_config=false"]).log_config);
    assert!(config(&["--player_count"]).player_count);
    assert_eq!(
        config(&["--console_messages"]).console_messages,
        ConsoleMessages::Basic
    );
    assert_eq!(
        config(&["--console_messages", "--log_config"]).console_messages,
        ConsoleMessages::Basic
    );
    assert_eq!(
        config(&["--console_messages", "verbose"]).console_messages,
        ConsoleMessages::Verbose
    );
}

#[test]
fn wilbur_flags() {
    let config = config(&[
        "--streamer_port",
        "1",
        "--player_port",
        "2",
        "--sfu_port",
        "3",
        "--max_players",
        "-1",
        "--peer_options",
        r#"{"a":1}"#,
        "--log_level_console",
        "warning",
        "--turn_secret",
        "s",
        "--turn_ttl",
        "60",
        "--ice_turn_urls",
        "turn:t:3478",
    ]);
    assert_eq!(
        (config.streamer_port, config.player_port, config.sfu_port),
        (1, 2, 3)
    );
    assert_eq!(config.max_players, 0, "-1 is unlimited");
    assert_eq!(Value::Object(config.peer_options), json!({"a": 1}));
    assert_eq!(config.log_level, LogLevel::Warn);
    assert_eq!(config.ice.turn_secret, "s");
    assert_eq!(config.ice.credential_lifetime, Duration::from_secs(60));
    assert_eq!(self::config(&["--http_port", "8080"]).player_port, 8080);
    let proxy = self::config(&["--reverse-proxy", "--reverse-proxy-num-proxies", "2"]);
    assert!(proxy.reverse_proxy);
    assert_eq!(proxy.reverse_proxy_num_proxies, 2);
}

#[test]
fn files_named_by_flags_are_read() {
    let peer = temp_file("peer.json", r#"{"iceServers":[]}"#);
    let secret = temp_file("secret.txt", "hunter2\n");
    let config = config(&[
        "--peer_options_file",
        peer.to_str().expect("utf-8"),
        "--turn_secret_file",
        secret.to_str().expect("utf-8"),
        "--ice_turn_urls",
        "turn:t:3478",
    ]);
    assert_eq!(
        Value::Object(config.peer_options),
        json!({"iceServers": []})
    );
    assert_eq!(config.ice.turn_secret, "hunter2");
    let missing = config_error(&["--peer_options_file", "/nonexistent/peer.json"]);
    assert!(
        missing.contains("/nonexistent/peer.json") && missing.contains("--peer_options_file"),
        "{missing}"
    );
    let bad = temp_file("bad-peer.json", "[1]");
    let bad = config_error(&["--peer_options_file", bad.to_str().expect("utf-8")]);
    assert!(
        bad.contains("bad-peer.json") && bad.contains("not an array"),
        "{bad}"
    );
}

#[test]
fn peer_options_as_json_text_table_or_empty() {
    let from_string =
        Config::from_toml_str(r#"peer_options = '{"iceServers":[]}'"#).expect("string");
    let from_table = Config::from_toml_str("[peer_options]\niceServers = []").expect("table");
    assert_eq!(from_string.peer_options, from_table.peer_options);
    assert_eq!(
        Config::from_toml_str(r#"peer_options = """#)
            .expect("empty")
            .peer_options,
        Map::new()
    );
    for (text, problem) in [
        ("peer_options = '[1]'", "not an array"),
        ("peer_options = 5", "not a number"),
        ("peer_options = '{'", "not valid JSON"),
    ] {
        let e = text_error(text);
        assert!(
            e.contains("`peer_options`") && e.contains(problem),
            "{text}: {e}"
        );
    }
}

#[test]
fn errors_name_the_key_and_where_the_value_came_from() {
    let e = text_error("max_players = \"four\"");
    assert!(
        e.contains("`max_players`") && e.contains("configuration text"),
        "{e}"
    );
    let file = temp_file("bad.toml", "[sessions]\nmax_body_bytes = \"big\"\n");
    let e = config_error(&["--config", file.to_str().expect("utf-8")]);
    assert!(
        e.contains("`sessions.max_body_bytes`") && e.contains("bad.toml"),
        "{e}"
    );
    let json = temp_file("bad.json", r#"{"player_port": "eighty"}"#);
    let e = config_error(&["--config_file", json.to_str().expect("utf-8")]);
    assert!(
        e.contains("`player_port`") && e.contains("bad.json") && e.contains("eighty"),
        "{e}"
    );
    for (args, key, flag) in [
        (
            &["--max_players", "-2"][..],
            "`max_players`",
            "--max_players",
        ),
        (
            &["--player_count", "maybe"],
            "`player_count`",
            "--player_count",
        ),
        (
            &["--keepalive_interval", "-1"],
            "`keepalive_interval`",
            "--keepalive_interval",
        ),
        (
            &["--keepalive_interval", "soon"],
            "`keepalive_interval`",
            "--keepalive_interval",
        ),
        (&["--log_level", "loud"], "`log_level`", "--log_level"),
        (
            &["--streamer_port", "65536"],
            "`streamer_port`",
            "--streamer_port",
        ),
        (
            &["--sessions_max_sessions", "0"],
            "`sessions.max_sessions`",
            "--sessions_max_sessions",
        ),
        (
            &["--max_message_size", "12"],
            "`max_message_size`",
            "--max_message_size",
        ),
    ] {
        let e = config_error(args);
        assert!(e.contains(key) && e.contains(flag), "{args:?}: {e}");
    }
    // A rule broken by the file's value names the file.
    let file = temp_file("rule.toml", "keepalive_interval = 0\n");
    let e = config_error(&["--config", file.to_str().expect("utf-8")]);
    assert!(
        e.contains("`keepalive_timeout`") && e.contains("embedded"),
        "{e}"
    );
    let e = config_error(&[
        "--config",
        file.to_str().expect("utf-8"),
        "--keepalive_timeout",
        "5",
    ]);
    assert!(e.contains("--keepalive_timeout"), "{e}");
    let e = config_error(&["--config", "/nonexistent/x.toml"]);
    assert!(e.contains("/nonexistent/x.toml"), "{e}");
}

#[test]
fn unknown_keys_and_flags_are_refused_naming_the_nearest() {
    let e = text_error("max_player = 3");
    assert!(
        e.contains("unknown key `max_player`") && e.contains("`max_players`"),
        "{e}"
    );
    let e = text_error("[sessions]\nmax_sesions = 3");
    assert!(
        e.contains("`sessions.max_sesions`") && e.contains("`sessions.max_sessions`"),
        "{e}"
    );
    let json = temp_file("unknown.json", r#"{"HttpPrt": 80}"#);
    let e = config_error(&["--config", json.to_str().expect("utf-8")]);
    assert!(
        e.contains("`HttpPrt`") && e.contains("unknown.json") && e.contains("`HttpPort`"),
        "{e}"
    );
    match load(&["--player_prot", "5"]) {
        Err(LoadError::Cli(e)) => {
            assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
            assert_eq!(e.exit_code(), 2);
            let text = e.to_string();
            assert!(
                text.contains("--player_prot") && text.contains("--player_port"),
                "{text}"
            );
        }
        other => panic!("unknown flag accepted: {other:?}"),
    }
}

#[test]
fn rules_between_keys() {
    assert!(text_error("keepalive_interval = 0").contains("keepalive_timeout"));
    assert!(text_error("keepalive_interval = 60\nkeepalive_timeout = 60").contains("greater"));
    Config::from_toml_str("keepalive_interval = 0\nkeepalive_timeout = 0").expect("both off");
    assert!(text_error("max_queued_messages = 0").contains("max_queued_messages"));
    assert!(text_error("max_queued_bytes = 10").contains("max_queued_bytes"));
    assert!(text_error("overflow_timeout = 0").contains("overflow_timeout"));
    assert!(text_error("worker_threads = 1025").contains("worker_threads"));
    assert!(
        text_error("keepalive_interval = 86401\nkeepalive_timeout = 0")
            .contains("keepalive_interval")
    );
    assert!(text_error("[sessions]\nmax_peers_per_session = 1").contains("max_peers_per_session"));
    assert!(text_error("[sessions]\nmax_event_bytes = 1024").contains("max_event_bytes"));
    assert!(text_error("[sessions]\ncors_origins = [\"*\", \"http://a\"]").contains("alone"));
    assert!(text_error("[sessions]\ncors_origins = [\"a.com\"]").contains("not an origin"));
    assert!(text_error("[ice]\nstun_urls = [\"http://x\"]").contains("stun:"));
    assert!(text_error("[ice]\nturn_urls = [\"turn:x:1\"]").contains("credentials"));
    assert!(text_error("[ice]\nturn_secret = \"s\"").contains("turn_urls"));
    assert!(text_error("[ice]\nturn_urls = [\"turn:x:1\"]\nturn_secret = \"s\"\nturn_username = \"u\"\nturn_credential = \"c\"").contains("not both"));
    assert!(
        text_error(
            "[ice]\nturn_urls = [\"turn:x:1\"]\nturn_secret = \"s\"\ncredential_lifetime = 0"
        )
        .contains("credential_lifetime")
    );
}

#[test]
fn web_keys_from_flags() {
    let c = config(&[
        "--serve",
        "--http_root=site",
        "--HomepageFile",
        "index2.html",
        r#"--AdditionalRoutes={"/images":"img"}"#,
        "--cors",
        "--cors_allowed_origins",
        "https://a.example, https://b.example",
        "--cors_allowed_methods=GET,POST",
        "--cors_credentials",
    ]);
    assert!(c.serve && c.cors && c.cors_credentials);
    assert_eq!(c.http_root, PathBuf::from("site"));
    assert_eq!(c.homepage, "index2.html");
    assert_eq!(
        c.additional_routes.get("/images").map(String::as_str),
        Some("img")
    );
    assert_eq!(
        c.cors_allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(c.cors_allowed_methods, ["GET", "POST"]);
    let table = Config::from_toml_str("[additional_routes]\n\"/x\" = \"y\"").expect("table");
    assert_eq!(
        table.additional_routes.get("/x").map(String::as_str),
        Some("y")
    );
    assert!(text_error("additional_routes = { x = \"y\" }").contains("`additional_routes`"));
    assert!(text_error("additional_routes = { \"/x\" = 1 }").contains("must be a string"));
    assert!(config_error(&["--homepage", ""]).contains("`homepage`"));
}

#[test]
fn cirrus_keys() {
    let c = config(&[
        "--MaxPlayerCount=5",
        "--UseMatchmaker",
        "--MatchmakerAddress",
        "mm.example",
        "--MatchmakerPort=9000",
        "--MatchmakerRetryInterval",
        "0.5",
        "--PublicIp",
        "203.0.113.7",
        "--player_count_updates",
        "--subscribe_at_connect",
    ]);
    assert_eq!(c.max_player_count, Some(5));
    assert!(c.use_matchmaker && c.player_count_updates && c.subscribe_at_connect);
    assert_eq!(
        (c.matchmaker_address.as_str(), c.matchmaker_port),
        ("mm.example", 9000)
    );
    assert_eq!(c.matchmaker_retry_interval, Duration::from_millis(500));
    assert_eq!(c.public_ip, "203.0.113.7");
    assert_eq!(config(&["--max_player_count", "-1"]).max_player_count, None);
    assert_eq!(
        config(&["--max_player_count", "0"]).max_player_count,
        Some(0)
    );
    assert_eq!(Config::default().max_player_count, None);
    assert!(config_error(&["--max_player_count", "-2"]).contains("`max_player_count`"));
    assert!(config_error(&["--use_matchmaker"]).contains("`matchmaker_address`"));
    assert!(
        config_error(&["--player_count", "false", "--player_count_updates"])
            .contains("`player_count_updates`")
    );
    assert!(
        config_error(&["--matchmaker_retry_interval", "0"]).contains("`matchmaker_retry_interval`")
    );
    assert!(
        Config::default()
            .describe()
            .contains(&"max_player_count = -1".to_owned())
    );
}

#[test]
fn the_player_token_comes_from_its_flag_or_wilburs_file_and_is_never_described() {
    assert_eq!(config(&["--player_token", "abc"]).player_token, "abc");
    let file = temp_file("player-token", "  from-file\n");
    let loaded = config(&["--player_token_file", file.to_str().expect("utf-8")]);
    assert_eq!(loaded.player_token, "from-file");
    let described = loaded.describe();
    assert!(
        described.contains(&"player_token = \"<redacted>\"".to_owned()),
        "{described:?}"
    );
    assert!(!described.iter().any(|l| l.contains("from-file")));
}

#[test]
fn every_secret_has_a_file_variant_and_none_is_described() {
    for (flag, key) in [
        ("--streamer_token_file", "streamer_token"),
        ("--sfu_token_file", "sfu_token"),
        ("--admin_token_file", "admin_token"),
        ("--jwt_secret_file", "jwt_secret"),
    ] {
        let file = temp_file(key, "  s3cret-from-file\n");
        let loaded = config(&[flag, file.to_str().expect("utf-8")]);
        let value = match key {
            "streamer_token" => &loaded.streamer_token,
            "sfu_token" => &loaded.sfu_token,
            "admin_token" => &loaded.admin_token,
            _ => &loaded.jwt_secret,
        };
        assert_eq!(value, "s3cret-from-file", "{flag}");
        let described = loaded.describe();
        assert!(
            described.contains(&format!("{key} = \"<redacted>\"")),
            "{described:?}"
        );
        assert!(
            !described.iter().any(|l| l.contains("s3cret")),
            "{described:?}"
        );
    }
    let tenants =
        Config::from_toml_str("streamer_tokens = { \"t0k\" = [\"a\", \"b\"] }").expect("valid");
    assert_eq!(
        tenants.streamer_tokens.get("t0k"),
        Some(&vec!["a".to_owned(), "b".to_owned()])
    );
    assert!(tenants.describe().iter().all(|l| !l.contains("t0k")));
    let flag = config(&["--streamer_tokens", r#"{"t1": "x, y"}"#]);
    assert_eq!(
        flag.streamer_tokens.get("t1"),
        Some(&vec!["x".to_owned(), "y".to_owned()])
    );
}

#[test]
fn refused_settings_stop_start_up() {
    let json = temp_file("auth.json", r#"{"UseAuthentication": true}"#);
    let e = config_error(&["--configFile", json.to_str().expect("utf-8")]);
    assert!(
        e.contains("UseAuthentication") && e.contains("auth.json"),
        "{e}"
    );
    let json = temp_file("no-auth.json", r#"{"UseAuthentication": false}"#);
    config(&["--configFile", json.to_str().expect("utf-8")]);
}

#[test]
fn log_config_redacts_secrets() {
    let config = Config::from_toml_str(
        "[ice]\nturn_urls = [\"turn:x:1\"]\nturn_username = \"user\"\nturn_credential = \"pa55word\"",
    )
    .expect("valid");
    let lines = config.describe();
    assert!(
        lines.contains(&"ice.turn_credential = \"<redacted>\"".to_owned()),
        "{lines:?}"
    );
    assert!(lines.contains(&"ice.turn_username = \"user\"".to_owned()));
    assert!(lines.iter().all(|l| !l.contains("pa55word")));
    assert_eq!(lines.len(), all_keys().count());
    let secret =
        Config::from_toml_str("[ice]\nturn_urls = [\"turn:x:1\"]\nturn_secret = \"s3cret\"")
            .expect("valid");
    assert!(secret.describe().iter().all(|l| !l.contains("s3cret")));
}

#[test]
fn legacy_names_point_at_declared_keys_and_clash_with_none() {
    cli::command().debug_assert();
    for entry in legacy::LEGACY {
        if let Effect::Convert(path, _) | Effect::ReadFile(path) = entry.effect {
            assert!(
                all_keys().any(|k| k.path() == path),
                "{} points at unknown key {path}",
                entry.name
            );
        }
        assert!(
            key_by_any_name(entry.name).is_none(),
            "{} is also a key's name",
            entry.name
        );
    }
}

/// Epic's shipped Wilbur config.json (SignallingWebServer/config.json), keys and value types as
/// shipped: ports as strings, a Windows http_root, an empty peer_options.
const WILBUR_CONFIG_JSON: &str = include_str!("../../tests/fixtures/wilbur-config.json");

/// A Cirrus config.json (UE5.4's keys as cirrus.js writes them), with peerConnectionOptions.
const CIRRUS_CONFIG_JSON: &str = include_str!("../../tests/fixtures/cirrus-config.json");

#[test]
fn wilbur_config_json_loads_as_shipped() {
    let path = temp_file("wilbur-config.json", WILBUR_CONFIG_JSON);
    let loaded = load(&["--config_file", path.to_str().expect("utf-8")])
        .map_err(|e| format!("{e:?}"))
        .expect("loads");
    let config = loaded.config;
    assert_eq!(
        (config.streamer_port, config.player_port, config.sfu_port),
        (8888, 80, 8889)
    );
    assert_eq!(config.console_messages, ConsoleMessages::Verbose);
    assert!(config.log_config);
    assert_eq!(config.peer_options, Map::new());
    assert!(config.serve && !config.rest_api && !config.cors && !config.reverse_proxy);
    assert_eq!(
        config.http_root,
        PathBuf::from("D:\\PixelStreamingInfrastructure\\SignallingWebServer\\www")
    );
    assert_eq!(config.homepage, "player.html");
    assert_eq!(config.log_folder, PathBuf::from("logs"));
    assert!(config.cors_allowed_origins.is_empty());
    // Flags win over the file, as in Wilbur.
    let flags = self::config(&[
        "--config_file",
        path.to_str().expect("utf-8"),
        "--player_port",
        "8080",
    ]);
    assert_eq!(flags.player_port, 8080);
}

#[test]
fn cirrus_config_json_loads() {
    let path = temp_file("cirrus-config.json", CIRRUS_CONFIG_JSON);
    let loaded = load(&["--configFile", path.to_str().expect("utf-8")])
        .map_err(|e| format!("{e:?}"))
        .expect("loads");
    let config = loaded.config;
    assert_eq!(
        (config.streamer_port, config.player_port, config.sfu_port),
        (8887, 81, 8886)
    );
    assert_eq!(
        config.console_messages,
        ConsoleMessages::Verbose,
        "LogVerbose"
    );
    assert_eq!(config.log_folder, PathBuf::from("logs"), "LogToFile");
    assert!(config.serve, "EnableWebserver");
    assert_eq!(config.max_player_count, None, "MaxPlayerCount -1");
    assert_eq!(config.public_ip, "localhost");
    assert_eq!(
        Value::Object(config.peer_options),
        json!({"iceServers": [{"urls": ["stun:stun.l.google.com:19302"]}]})
    );
    // Cirrus's flags, yargs style.
    let flags = self::config(&[
        "--HttpPort=90",
        "--StreamerPort",
        "91",
        "--SFUPort=92",
        r#"--peerConnectionOptions={"iceServers":[]}"#,
        "--LogVerbose",
    ]);
    assert_eq!(
        (flags.player_port, flags.streamer_port, flags.sfu_port),
        (90, 91, 92)
    );
    assert_eq!(Value::Object(flags.peer_options), json!({"iceServers": []}));
    assert_eq!(flags.console_messages, ConsoleMessages::Verbose);
}

#[test]
fn settings_without_effect_warn_once_and_only_when_they_ask_for_something() {
    let warnings = |args: &[&str]| {
        load(args)
            .map_err(|e| format!("{e:?}"))
            .expect("loads")
            .warnings
    };
    assert_eq!(
        warnings(&["--https_redirect", "--HttpsPort", "443"]),
        Vec::<String>::new()
    );
    let w = warnings(&["--stdin", "--save", "--stdin"]);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w.iter().any(|w| w.contains("--stdin")) && w.iter().any(|w| w.contains("--save")),
        "{w:?}"
    );
    assert_eq!(warnings(&["--stdin", "false"]), Vec::<String>::new());
}

#[test]
fn tls_flags_are_wilburs_and_cirrus_names_and_https_port_implies_https() {
    let config = |args: &[&str]| {
        load(args)
            .map_err(|e| format!("{e:?}"))
            .expect("loads")
            .config
    };
    let plain = config(&["--https_redirect"]);
    assert!(!plain.https && plain.https_redirect && plain.https_port == 443);
    let implied = config(&["--https_port", "8443"]);
    assert!(implied.https && implied.https_port == 8443);
    let explicit_off = config(&["--https_port", "8443", "--https", "false"]);
    assert!(!explicit_off.https);
    let cirrus = config(&[
        "--UseHTTPS",
        "--HttpsPort",
        "4443",
        "--HTTPSCertFile",
        "c.pem",
        "--HTTPSKeyFile",
        "k.pem",
    ]);
    assert!(cirrus.https && cirrus.https_port == 4443);
    assert_eq!(cirrus.ssl_cert_path, std::path::Path::new("c.pem"));
    assert_eq!(cirrus.ssl_key_path, std::path::Path::new("k.pem"));
    let same = load(&[
        "--https",
        "--https_port",
        "8080",
        "--player_port",
        "8080",
        "--https_redirect",
    ]);
    assert!(
        format!("{:?}", same.err()).contains("https_port"),
        "HTTPS on the player port's own number is refused"
    );
    let bad = load(&["--frame_ancestors", "*; script-src *"]);
    assert!(format!("{:?}", bad.err()).contains("frame_ancestors"));
}

/// The keys, and their defaults, as `signalling.toml` writes them.
fn toml_keys() -> BTreeMap<String, String> {
    let table: toml::Table = toml::from_str(EMBEDDED).expect("TOML");
    let mut keys = BTreeMap::new();
    for (name, value) in &table {
        match value {
            toml::Value::Table(section) if find_key("", name).is_none() => {
                for (inner, value) in section {
                    keys.insert(format!("{name}.{inner}"), value.to_string());
                }
            }
            _ => {
                keys.insert(name.clone(), value.to_string());
            }
        }
    }
    keys
}

/// The keys, and their defaults, as the README's key tables write them.
fn readme_keys() -> BTreeMap<String, String> {
    let readme = include_str!("../../README.md");
    let mut keys = BTreeMap::new();
    let section = readme
        .split("\n## Configuration")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Configuration section");
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') || !cells[2].starts_with('`') {
            continue;
        }
        let key = cells[1].trim_matches('`').to_owned();
        let default = cells[2].trim_matches('`').to_owned();
        keys.insert(key, default);
    }
    keys
}

/// The keys, and their defaults, as `--help` shows them.
fn help_keys() -> BTreeMap<String, String> {
    let help = cli::command().render_long_help().to_string();
    let mut keys = BTreeMap::new();
    let mut lines = help.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(flag) = line.trim().strip_prefix("--") else {
            continue;
        };
        let flag = flag.split([' ', '=']).next().unwrap_or_default();
        let Some(description) = lines.peek() else {
            break;
        };
        let Some((_, default)) = description.rsplit_once("[default: ") else {
            continue;
        };
        let default = default.strip_suffix(']').unwrap_or(default).to_owned();
        let path = all_keys()
            .find(|k| k.flag() == flag)
            .map_or_else(|| format!("(no key for --{flag})"), KeyDecl::path);
        keys.insert(path, default);
    }
    keys
}

#[test]
fn signalling_toml_help_and_readme_agree_on_keys_and_defaults() {
    let declared: BTreeSet<String> = all_keys().map(KeyDecl::path).collect();
    let toml = toml_keys();
    let readme = readme_keys();
    let help = help_keys();
    assert_eq!(
        toml.keys().cloned().collect::<BTreeSet<_>>(),
        declared,
        "signalling.toml vs declarations"
    );
    assert_eq!(
        readme.keys().cloned().collect::<BTreeSet<_>>(),
        declared,
        "README key tables vs declarations"
    );
    assert_eq!(
        help.keys().cloned().collect::<BTreeSet<_>>(),
        declared,
        "--help vs declarations"
    );
    for (key, default) in &toml {
        assert_eq!(&readme[key], default, "README's default of {key}");
        assert_eq!(&help[key], default, "--help's default of {key}");
    }
}

#[test]
fn readme_migration_tables_name_every_wilbur_and_cirrus_setting() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## Migrating from Wilbur or Cirrus")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Migrating section");
    let names = legacy::LEGACY
        .iter()
        .map(|l| l.name)
        .chain(all_keys().flat_map(|k| k.aliases.iter().copied()))
        .chain(["config_file", "no_config", "configFile"]);
    for name in names {
        assert!(
            section.contains(&format!("`--{name}`")) || section.contains(&format!("`{name}`")),
            "README's migration tables do not mention {name}"
        );
    }
}

#[test]
fn changed_keys_names_each_key_that_differs_with_its_section() {
    let old = Config::default();
    assert_eq!(changed_keys(&old, &old), Vec::<String>::new());
    let new = Config::from_toml_str(
        "player_token = \"t\"\nplayer_port = 8080\n[sessions]\nmax_sessions = 7\n",
    )
    .unwrap();
    assert_eq!(
        changed_keys(&old, &new),
        ["player_port", "player_token", "sessions.max_sessions"]
    );
}

#[test]
fn cluster_is_off_by_default_with_the_documented_defaults() {
    let cluster = Config::default().cluster;
    assert!(!cluster.enabled());
    assert_eq!(cluster.redis_url, "");
    assert_eq!(cluster.node_id, "");
    assert_eq!(cluster.heartbeat_interval, Duration::from_secs(1));
    assert_eq!(cluster.node_timeout, Duration::from_secs(5));
    assert!(!cluster.start_alone);
    assert_eq!(cluster.inbox_max_length, 100_000);
    assert_eq!(cluster.key_prefix, "signalling");
}

#[test]
fn cluster_keys_from_short_flags_section_flags_and_the_file() {
    let config = config(&[
        "--redis_url",
        "redis://127.0.0.1:6379",
        "--node_id",
        "node-a:80",
        "--cluster_heartbeat_interval",
        "0.25",
        "--cluster-node-timeout",
        "0.5",
        "--cluster_start_alone",
        "--cluster_inbox_max_length",
        "2000",
        "--cluster_key_prefix",
        "staging",
    ]);
    let cluster = &config.cluster;
    assert!(cluster.enabled());
    assert_eq!(cluster.redis_url, "redis://127.0.0.1:6379");
    assert_eq!(cluster.node_id, "node-a:80");
    assert_eq!(cluster.heartbeat_interval, Duration::from_millis(250));
    assert_eq!(cluster.node_timeout, Duration::from_millis(500));
    assert!(cluster.start_alone);
    assert_eq!(cluster.inbox_max_length, 2000);
    assert_eq!(cluster.key_prefix, "staging");
    let long = self::config(&[
        "--cluster_redis_url",
        "redis://h:1",
        "--cluster_node_id",
        "b",
    ]);
    assert_eq!(
        (
            long.cluster.redis_url.as_str(),
            long.cluster.node_id.as_str()
        ),
        ("redis://h:1", "b")
    );
    let text =
        Config::from_toml_str("[cluster]\nredis_url = \"unix:///run/r.sock\"\n").expect("valid");
    assert!(text.cluster.enabled());
}

#[test]
fn cluster_rules_name_the_key() {
    for (text, key, says) in [
        ("redis_url = \"http://h:1\"", "cluster.redis_url", "scheme"),
        ("redis_url = \"redis://\"", "cluster.redis_url", "host"),
        (
            "node_id = \"has space\"",
            "cluster.node_id",
            "printable ASCII",
        ),
        (
            "node_id = \"caf\u{e9}\"",
            "cluster.node_id",
            "printable ASCII",
        ),
        (
            "node_id = \"tab\\there\"",
            "cluster.node_id",
            "printable ASCII",
        ),
        ("key_prefix = \"\"", "cluster.key_prefix", "empty"),
        (
            "key_prefix = \"a b\"",
            "cluster.key_prefix",
            "printable ASCII",
        ),
        (
            "heartbeat_interval = 0",
            "cluster.heartbeat_interval",
            "greater than 0",
        ),
        ("node_timeout = 0", "cluster.node_timeout", "greater than 0"),
        (
            "heartbeat_interval = 90000",
            "cluster.heartbeat_interval",
            "most allowed",
        ),
        ("heartbeat_interval = 3", "cluster.node_timeout", "twice"),
        (
            "node_timeout = 1.99\nheartbeat_interval = 1",
            "cluster.node_timeout",
            "twice",
        ),
        ("inbox_max_length = 999", "cluster.inbox_max_length", "1000"),
    ] {
        let e = text_error(&format!("[cluster]\n{text}"));
        assert!(e.contains(key) && e.contains(says), "{text}: {e}");
    }
    let long_id = format!("[cluster]\nnode_id = \"{}\"", "n".repeat(129));
    assert!(text_error(&long_id).contains("at most 128"));
    for fine in [
        format!("node_id = \"{}\"", "n".repeat(128)),
        "node_id = \"eu-west:10.0.0.1:80\"".to_owned(),
        "node_timeout = 2\nheartbeat_interval = 1".to_owned(),
        "node_timeout = 0.2\nheartbeat_interval = 0.1".to_owned(),
        "inbox_max_length = 1000".to_owned(),
        // The URL is checked only when set: empty is off.
        "redis_url = \"\"".to_owned(),
    ] {
        Config::from_toml_str(&format!("[cluster]\n{fine}"))
            .unwrap_or_else(|e| panic!("{fine}: {e}"));
    }
}

#[test]
fn the_redis_password_is_never_described_nor_in_an_error() {
    let config = config(&["--redis_url", "redis://alice:pa55@10.0.0.5:6379/0"]);
    let lines = config.describe();
    assert!(
        lines.contains(
            &"cluster.redis_url = \"redis://alice:<redacted>@10.0.0.5:6379/0\"".to_owned()
        ),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains("pa55")), "{lines:?}");
    let e = config_error(&["--redis_url", "http://alice:pa55@10.0.0.5:6379"]);
    assert!(
        e.contains("cluster.redis_url") && !e.contains("pa55"),
        "{e}"
    );

    let file = temp_file("redis-url", "  redis://:from-f1le@127.0.0.1:6379\n");
    let loaded = self::config(&["--redis_url_file", file.to_str().expect("utf-8")]);
    assert_eq!(
        loaded.cluster.redis_url,
        "redis://:from-f1le@127.0.0.1:6379"
    );
    assert!(loaded.describe().iter().all(|l| !l.contains("from-f1le")));
}
