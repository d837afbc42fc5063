//! Every rule on values: ranges, and the rules that span keys. The one place a key's limits
//! are checked; an error names the key's path, and the loader adds where the value came from.

use std::time::Duration;

use super::cluster::{
    MAX_KEY_PREFIX_BYTES, MAX_NODE_ID_BYTES, MIN_INBOX_MAX_LENGTH, check_redis_url, is_node_id_char,
};
use super::types::{ClusterConfig, Config, IceConfig, SessionsConfig};

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
/// Largest value of an abuse limit (README, "Abuse limits"): beyond any real need, and far
/// from overflowing a counter.
pub(crate) const MAX_LIMIT: usize = 1 << 30;
/// Largest count limit of the session API.
pub const MAX_SESSION_LIMIT: usize = 1 << 20;
/// Largest byte budget of the session API (1 TiB: beyond any host, short of overflow).
pub const MAX_EVENT_BYTES: usize = 1 << 40;
/// Bytes of `max_peer_event_bytes` set aside per peer of a full session beside the largest
/// message: room for one `peer-left` from every other peer (`sessions::CONTROL_EVENT_COST`, 226)
/// and for what an event adds to its body (a longer sender id, the per-event overhead).
pub const PEER_EVENT_BYTES_PER_PEER: usize = 256;

/// A value that breaks a rule: the key's path and what is wrong.
pub(crate) type Invalid = (&'static str, String);

fn fail<T>(key: &'static str, problem: impl Into<String>) -> Result<T, Invalid> {
    Err((key, problem.into()))
}

fn at_most_a_day(key: &'static str, value: Duration) -> Result<(), Invalid> {
    if value > Duration::from_secs(MAX_SECONDS) {
        return fail(
            key,
            format!("is {value:?}; the most allowed is {MAX_SECONDS} s (0 turns it off)"),
        );
    }
    Ok(())
}

fn in_range(
    key: &'static str,
    value: usize,
    min: usize,
    max: usize,
    unit: &str,
) -> Result<(), Invalid> {
    if !(min..=max).contains(&value) {
        return fail(
            key,
            format!("is {value}; it must be from {min} to {max}{unit}"),
        );
    }
    Ok(())
}

/// Checks every rule (PROTOCOL.md §9 for the keepalive rule).
pub(crate) fn validate(config: &Config) -> Result<(), Invalid> {
    at_most_a_day("keepalive_interval", config.keepalive_interval)?;
    at_most_a_day("keepalive_timeout", config.keepalive_timeout)?;
    at_most_a_day("player_protocol_ping", config.player_protocol_ping)?;
    at_most_a_day("overflow_timeout", config.overflow_timeout)?;
    if !config.keepalive_timeout.is_zero() {
        if config.keepalive_interval.is_zero() {
            return fail(
                "keepalive_timeout",
                format!(
                    "is {:?} but keepalive_interval is 0: the deadline needs Pings to keep live \
                     peers alive; set keepalive_interval > 0, or keepalive_timeout = 0 to \
                     disable the deadline",
                    config.keepalive_timeout
                ),
            );
        }
        if config.keepalive_timeout <= config.keepalive_interval {
            return fail(
                "keepalive_timeout",
                format!(
                    "({:?}) must be greater than keepalive_interval ({:?}), or 0 to disable the \
                     deadline",
                    config.keepalive_timeout, config.keepalive_interval
                ),
            );
        }
    }
    in_range(
        "max_message_size",
        config.max_message_size,
        MIN_MAX_MESSAGE_SIZE,
        usize::MAX,
        " (the value is in bytes: 1048576 is 1 MiB)",
    )?;
    in_range(
        "max_queued_messages",
        config.max_queued_messages,
        1,
        MAX_MAX_QUEUED_MESSAGES,
        "",
    )?;
    in_range(
        "max_queued_bytes",
        config.max_queued_bytes,
        MIN_MAX_QUEUED_BYTES,
        MAX_MAX_QUEUED_BYTES,
        " (the value is in bytes: 1048576 is 1 MiB)",
    )?;
    if config.overflow_timeout.is_zero() {
        return fail("overflow_timeout", "must be greater than 0");
    }
    in_range(
        "worker_threads",
        config.worker_threads,
        0,
        MAX_WORKER_THREADS,
        "",
    )?;
    if config.homepage.trim().is_empty() {
        return fail(
            "homepage",
            "must name a file (Wilbur's default is player.html)",
        );
    }
    if let Some(prefix) = config
        .additional_routes
        .keys()
        .find(|p| !p.starts_with('/'))
    {
        return fail(
            "additional_routes",
            format!("{prefix:?} must be a URL path starting with /, e.g. \"/images\""),
        );
    }
    if config.player_count_updates && !config.player_count {
        return fail(
            "player_count_updates",
            "needs player_count = true (the updates re-send playerCount)",
        );
    }
    if config.use_matchmaker && config.matchmaker_address.trim().is_empty() {
        return fail(
            "matchmaker_address",
            "must be set when use_matchmaker is true",
        );
    }
    if config.matchmaker_retry_interval.is_zero() {
        return fail("matchmaker_retry_interval", "must be greater than 0");
    }
    at_most_a_day(
        "matchmaker_retry_interval",
        config.matchmaker_retry_interval,
    )?;
    tls(config)?;
    metrics(config)?;
    sessions(&config.sessions)?;
    ice(&config.ice)?;
    cluster(&config.cluster)?;
    // peer_options needs no check here: its type is a JSON object, and every way in rejects
    // anything else, naming the key.
    Ok(())
}

fn sessions(s: &SessionsConfig) -> Result<(), Invalid> {
    in_range(
        "sessions.max_sessions",
        s.max_sessions,
        1,
        MAX_SESSION_LIMIT,
        "",
    )?;
    in_range(
        "sessions.max_peers_per_session",
        s.max_peers_per_session,
        2,
        MAX_SESSION_LIMIT,
        "",
    )?;
    in_range(
        "sessions.max_queued_events",
        s.max_queued_events,
        1,
        MAX_SESSION_LIMIT,
        "",
    )?;
    in_range(
        "sessions.max_sessions_per_address",
        s.max_sessions_per_address,
        0,
        MAX_SESSION_LIMIT,
        " (0 is no limit)",
    )?;
    in_range(
        "sessions.registrations_per_minute",
        s.registrations_per_minute as usize,
        0,
        MAX_LIMIT,
        " (0 is no limit)",
    )?;
    in_range(
        "sessions.max_streams_per_address",
        s.max_streams_per_address as usize,
        0,
        MAX_LIMIT,
        " (0 is no limit)",
    )?;
    // The largest message must fit a peer's empty log beside the reserve for `peer-left`s.
    let least_peer_bytes = s
        .max_body_bytes
        .saturating_add(PEER_EVENT_BYTES_PER_PEER.saturating_mul(s.max_peers_per_session));
    in_range(
        "sessions.max_peer_event_bytes",
        s.max_peer_event_bytes,
        least_peer_bytes,
        MAX_EVENT_BYTES,
        &format!(
            " (at least max_body_bytes + {PEER_EVENT_BYTES_PER_PEER} × max_peers_per_session)"
        ),
    )?;
    in_range(
        "sessions.max_event_bytes",
        s.max_event_bytes,
        s.max_peer_event_bytes,
        MAX_EVENT_BYTES,
        " (at least max_peer_event_bytes)",
    )?;
    in_range(
        "sessions.max_body_bytes",
        s.max_body_bytes,
        MIN_MAX_MESSAGE_SIZE,
        usize::MAX,
        " (bytes)",
    )?;
    at_most_a_day("sessions.body_read_timeout", s.body_read_timeout)?;
    at_most_a_day("sessions.idle_timeout", s.idle_timeout)?;
    at_most_a_day("sessions.keepalive", s.keepalive)?;
    at_most_a_day("sessions.stream_write_timeout", s.stream_write_timeout)?;
    origins("sessions.cors_origins", &s.cors_origins)
}

/// `metrics_port`, when set, is a port of its own.
fn metrics(config: &Config) -> Result<(), Invalid> {
    let port = config.metrics_port;
    if port == 0 {
        return Ok(());
    }
    for (key, other) in [
        ("player_port", config.player_port),
        ("streamer_port", config.streamer_port),
        ("sfu_port", config.sfu_port),
        ("https_port", config.https_port),
    ] {
        if port == other && (key != "https_port" || config.https) {
            return fail(
                "metrics_port",
                format!(
                    "({port}) is also {key}: give /metrics a port of its own, or 0 to serve it on the player port"
                ),
            );
        }
    }
    Ok(())
}

/// TLS, the security headers and the handshake.
fn tls(config: &Config) -> Result<(), Invalid> {
    if config.https {
        for (key, port) in [
            ("player_port", config.player_port),
            ("streamer_port", config.streamer_port),
            ("sfu_port", config.sfu_port),
        ] {
            if port == config.https_port
                && port != 0
                && (key != "player_port" || config.https_redirect)
            {
                return fail(
                    "https_port",
                    format!("({port}) is also {key}: give HTTPS a port of its own"),
                );
            }
        }
    }
    for (key, path) in [
        ("ssl_cert_path", &config.ssl_cert_path),
        ("ssl_key_path", &config.ssl_key_path),
    ] {
        if path.as_os_str().is_empty() {
            return fail(key, "must name a PEM file");
        }
    }
    if config
        .frame_ancestors
        .bytes()
        .any(|b| b.is_ascii_control() || b == b';' || b == b',')
    {
        return fail(
            "frame_ancestors",
            "must be a space-separated list of CSP sources (no ';', ',' or control characters), \
             e.g. \"*\", \"'self'\" or \"https://app.example.com\"",
        );
    }
    if config.handshake_timeout < Duration::from_millis(100) {
        return fail("handshake_timeout", "must be at least 0.1 seconds");
    }
    at_most_a_day("handshake_timeout", config.handshake_timeout)?;
    limits(config)?;
    origins("player_allowed_origins", &config.player_allowed_origins)
}

/// The abuse limits: counts up to [`MAX_LIMIT`] (0 is no limit), a burst of at least 1, and a
/// first-message timeout of 0 or from 0.1 s to a day.
fn limits(config: &Config) -> Result<(), Invalid> {
    for (key, value) in [
        ("max_connections_per_ip", config.max_connections_per_ip),
        (
            "upgrades_per_ip_per_minute",
            config.upgrades_per_ip_per_minute,
        ),
        ("http_requests_per_minute", config.http_requests_per_minute),
        ("messages_per_second", config.messages_per_second),
        ("message_burst", config.message_burst),
        ("max_streamers", config.max_streamers),
    ] {
        in_range(key, value as usize, 0, MAX_LIMIT, " (0 is no limit)")?;
    }
    if config.message_burst == 0 {
        return fail(
            "message_burst",
            "must be at least 1 (messages_per_second = 0 turns the limit off)",
        );
    }
    let first = config.first_message_timeout;
    if !first.is_zero() && first < Duration::from_millis(100) {
        return fail(
            "first_message_timeout",
            "must be 0 (none) or at least 0.1 seconds",
        );
    }
    at_most_a_day("first_message_timeout", first)
}

/// A CORS origin list: `["*"]`, or origins written `scheme://host[:port]`.
pub(crate) fn origins(key: &'static str, origins: &[String]) -> Result<(), Invalid> {
    if origins.iter().any(|o| o == "*") && origins.len() > 1 {
        return fail(key, "\"*\" allows every origin and must be alone");
    }
    for origin in origins.iter().filter(|o| *o != "*") {
        let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "http" | "https")
                && !rest.is_empty()
                && !rest.contains('/')
                && rest.bytes().all(|b| b.is_ascii_graphic())
        });
        if !valid {
            return fail(
                key,
                format!(
                    "{origin:?} is not an origin: write scheme://host[:port], e.g. \
                     \"https://app.example.com\", or \"*\""
                ),
            );
        }
    }
    Ok(())
}

fn ice(ice: &IceConfig) -> Result<(), Invalid> {
    for (key, urls, schemes) in [
        ("ice.stun_urls", &ice.stun_urls, ["stun:", "stuns:"]),
        ("ice.turn_urls", &ice.turn_urls, ["turn:", "turns:"]),
    ] {
        for url in urls {
            if !schemes.iter().any(|s| url.starts_with(s)) || url.len() <= 6 {
                return fail(
                    key,
                    format!("{url:?} must start with {} or {}", schemes[0], schemes[1]),
                );
            }
        }
    }
    let has_static = !ice.turn_username.is_empty() || !ice.turn_credential.is_empty();
    let has_secret = !ice.turn_secret.is_empty();
    if has_static && has_secret {
        return fail(
            "ice.turn_secret",
            "set either turn_secret or turn_username and turn_credential, not both",
        );
    }
    if has_static && (ice.turn_username.is_empty() || ice.turn_credential.is_empty()) {
        return fail(
            "ice.turn_credential",
            "turn_username and turn_credential go together",
        );
    }
    if ice.turn_urls.is_empty() && (has_static || has_secret) {
        return fail(
            "ice.turn_urls",
            "TURN credentials are set but turn_urls is empty",
        );
    }
    if !ice.turn_urls.is_empty() && !has_static && !has_secret {
        return fail(
            "ice.turn_urls",
            "TURN needs credentials: set turn_secret, or turn_username and turn_credential",
        );
    }
    let lifetime = ice.credential_lifetime;
    if lifetime < Duration::from_secs(1) || lifetime > Duration::from_secs(MAX_SECONDS * 7) {
        return fail(
            "ice.credential_lifetime",
            format!("is {lifetime:?}; it must be from 1 s to 7 days"),
        );
    }
    Ok(())
}

/// `[cluster]`: checked whether or not cluster mode is on, so a mistake shows before it matters.
fn cluster(cluster: &ClusterConfig) -> Result<(), Invalid> {
    if cluster.enabled() {
        check_redis_url(&cluster.redis_url)
            .or_else(|problem| fail("cluster.redis_url", problem))?;
    }
    for (key, value, max, empty) in [
        (
            "cluster.node_id",
            &cluster.node_id,
            MAX_NODE_ID_BYTES,
            " (empty is \"<host name>:<player port>\")",
        ),
        (
            "cluster.key_prefix",
            &cluster.key_prefix,
            MAX_KEY_PREFIX_BYTES,
            "",
        ),
    ] {
        if value.len() > max {
            return fail(key, format!("is {} bytes long; at most {max}", value.len()));
        }
        if !value.chars().all(is_node_id_char) {
            return fail(
                key,
                format!("{value:?} must be printable ASCII without spaces (\":\" allowed){empty}"),
            );
        }
    }
    if cluster.key_prefix.is_empty() {
        return fail(
            "cluster.key_prefix",
            "must not be empty (the default is \"signalling\")",
        );
    }
    for (key, value) in [
        ("cluster.heartbeat_interval", cluster.heartbeat_interval),
        ("cluster.node_timeout", cluster.node_timeout),
    ] {
        if value.is_zero() {
            return fail(key, "must be greater than 0");
        }
        at_most_a_day(key, value)?;
    }
    if cluster.node_timeout < cluster.heartbeat_interval.saturating_mul(2) {
        return fail(
            "cluster.node_timeout",
            format!(
                "({:?}) must be at least twice heartbeat_interval ({:?}): one late heartbeat \
                 must not declare a node dead",
                cluster.node_timeout, cluster.heartbeat_interval
            ),
        );
    }
    in_range(
        "cluster.inbox_max_length",
        cluster.inbox_max_length,
        MIN_INBOX_MAX_LENGTH,
        MAX_LIMIT,
        " (entries)",
    )
}
