//! `[cluster]` as the cluster code takes it: [`ClusterSettings`] (plain values, the node id
//! resolved), the Redis URL's checks and its redacted form. It reads the host name once for the
//! default node id; it never connects to anything.

use std::fmt;
use std::time::Duration;

use super::types::{ClusterConfig, Config};

/// The longest node id, in bytes (it is part of Redis keys and of every envelope).
pub(crate) const MAX_NODE_ID_BYTES: usize = 128;
/// The longest key prefix, in bytes.
pub(crate) const MAX_KEY_PREFIX_BYTES: usize = 128;
/// The fewest entries an inbox stream may keep: below it a short burst to a busy node would be
/// trimmed before it is read, which the receiver sees as a gap and a lost node.
pub(crate) const MIN_INBOX_MAX_LENGTH: usize = 1000;
/// What replaces a secret in a shown URL.
const REDACTED: &str = "<redacted>";

impl ClusterConfig {
    /// Cluster mode is on: a Redis URL is set.
    pub fn enabled(&self) -> bool {
        !self.redis_url.trim().is_empty()
    }
}

/// The Redis URL. Its `Display` and `Debug` show it with any password redacted, so a settings
/// struct can be logged whole; [`RedisUrl::expose`] gives the URL itself, for the client only.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RedisUrl(String);

impl RedisUrl {
    /// The URL with its password, to hand to the Redis client and to nothing else.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redacted_redis_url(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({:?})", redacted_redis_url(&self.0))
    }
}

/// `[cluster]` resolved for the cluster code: durations, the node id with its default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterSettings {
    pub(crate) redis_url: RedisUrl,
    pub(crate) node_id: String,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) node_timeout: Duration,
    pub(crate) start_alone: bool,
    pub(crate) inbox_max_length: usize,
    pub(crate) key_prefix: String,
}

/// Why the cluster settings cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    /// `node_id` is empty and the host name, its default, could not be had.
    #[error(
        "cluster.node_id is empty and the host name (its default) cannot be read from \
         {HOSTNAME_FILE}: {reason}; set cluster.node_id (--node_id)"
    )]
    HostName { reason: String },
}

/// `[cluster]` as settings, or `None` when cluster mode is off (`redis_url` empty). The config
/// is validated already, so the only failure left is an unreadable host name.
///
/// `player_port` is the port the player listener actually bound (the configured one may be 0,
/// an ephemeral port), for the default node id.
pub(crate) fn cluster_settings(
    config: &Config,
    player_port: u16,
) -> Result<Option<ClusterSettings>, ClusterError> {
    let cluster = &config.cluster;
    if !cluster.enabled() {
        return Ok(None);
    }
    let node_id = if cluster.node_id.is_empty() {
        default_node_id(&read_host_name()?, player_port)
    } else {
        cluster.node_id.clone()
    };
    Ok(Some(ClusterSettings {
        redis_url: RedisUrl(cluster.redis_url.trim().to_owned()),
        node_id,
        heartbeat_interval: cluster.heartbeat_interval,
        node_timeout: cluster.node_timeout,
        start_alone: cluster.start_alone,
        inbox_max_length: cluster.inbox_max_length,
        key_prefix: cluster.key_prefix.clone(),
    }))
}

/// The default node id: `<host name>:<player port>`, so two nodes on one host differ by port.
/// Characters a node id may not hold (none in a valid host name) become `_`, and it is cut to
/// [`MAX_NODE_ID_BYTES`] keeping the port.
pub(crate) fn default_node_id(host: &str, player_port: u16) -> String {
    let port = format!(":{player_port}");
    let host: String = host
        .trim()
        .chars()
        .map(|c| if is_node_id_char(c) { c } else { '_' })
        .take(MAX_NODE_ID_BYTES - port.len())
        .collect();
    let host = if host.is_empty() { "localhost" } else { &host };
    format!("{host}{port}")
}

/// The kernel's host name (what gethostname(2) returns), read from procfs: no `unsafe` FFI of
/// our own and no crate for one file; Linux is what the server ships for (systemd, Docker).
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

fn read_host_name() -> Result<String, ClusterError> {
    let name = std::fs::read_to_string(HOSTNAME_FILE).map_err(|e| ClusterError::HostName {
        reason: e.to_string(),
    })?;
    let name = name.trim();
    if name.is_empty() {
        return Err(ClusterError::HostName {
            reason: "it is empty".to_owned(),
        });
    }
    Ok(name.to_owned())
}

/// Printable ASCII without spaces (`:` allowed): what a node id and a key prefix may hold.
pub(crate) fn is_node_id_char(c: char) -> bool {
    c.is_ascii_graphic()
}

/// Checks a Redis URL: one of the schemes the Redis client takes, and a URL it can read. The
/// problem never holds the password (the URL is shown redacted).
pub(crate) fn check_redis_url(url: &str) -> Result<(), String> {
    let url = url.trim();
    let shown = redacted_redis_url(url);
    let parsed = url::Url::parse(url)
        .map_err(|e| format!("{shown:?} is not a URL ({e}); write e.g. \"redis://host:6379\""))?;
    match parsed.scheme() {
        "redis" | "rediss" => {
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(format!(
                    "{shown:?} names no host; write e.g. \"redis://host:6379\""
                ));
            }
            let db = parsed.path().trim_start_matches('/');
            if !db.is_empty() && db.parse::<i64>().is_err() {
                return Err(format!(
                    "{shown:?}: the path must be a database number (\"/0\"), or nothing"
                ));
            }
            Ok(())
        }
        "redis+unix" | "unix" => {
            if parsed.path().is_empty() || parsed.path() == "/" {
                return Err(format!(
                    "{shown:?} names no socket; write e.g. \"unix:///run/redis/redis.sock\""
                ));
            }
            Ok(())
        }
        other => Err(format!(
            "{shown:?}: the scheme {other:?} is not Redis's; use redis://, rediss:// (TLS), \
             redis+unix:// or unix://"
        )),
    }
}

/// The URL with its password (`scheme://user:password@…`, or `pass=`/`password=` in the query,
/// as the Redis client reads for sockets) replaced by `<redacted>`. Something not shaped like
/// a URL is redacted whole: it could be anything.
pub(crate) fn redacted_redis_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.is_empty() {
            String::new()
        } else {
            REDACTED.to_owned()
        };
    };
    // Worked on as text rather than through `url::Url`, which would percent-encode the marker
    // and cannot read a URL with a raw `/` in its password, which must not leak either: the
    // user part ends at the last `@`, and a user part that looks like more than a user name is
    // redacted whole (over-redacting is harmless).
    let (userinfo, tail) = match rest.rsplit_once('@') {
        Some((userinfo, tail)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, _)) => (user, true),
                None => (userinfo, false),
            };
            let shown = if user.contains(['/', '?', '#']) {
                format!("{REDACTED}@")
            } else if password {
                format!("{user}:{REDACTED}@")
            } else {
                format!("{user}@")
            };
            (shown, tail)
        }
        None => (String::new(), rest),
    };
    let authority_end = tail.find(['/', '?', '#']).unwrap_or(tail.len());
    let (host, tail) = tail.split_at(authority_end);
    let authority = format!("{userinfo}{host}");
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((query, fragment)) => (query, Some(fragment)),
                None => (query, None),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_password_param(name) => format!("{name}={REDACTED}"),
                    _ => pair.to_owned(),
                })
                .collect();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

fn is_password_param(name: &str) -> bool {
    matches!(name.to_ascii_lowercase().as_str(), "pass" | "password")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_redacted_wherever_the_url_holds_it() {
        for (url, shown) in [
            ("", ""),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "redis://:pa55@10.0.0.5:6379/0",
                "redis://:<redacted>@10.0.0.5:6379/0",
            ),
            (
                "rediss://alice:pa55@redis.example.com",
                "rediss://alice:<redacted>@redis.example.com",
            ),
            ("redis://alice@host", "redis://alice@host"),
            (
                "redis://u:p@ss:w@rd@host:1/2",
                "redis://u:<redacted>@host:1/2",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&pass=pa55",
                "redis+unix:///run/redis.sock?db=1&pass=<redacted>",
            ),
            (
                "unix:///run/r.sock?password=pa55#x",
                "unix:///run/r.sock?password=<redacted>#x",
            ),
            ("not a url pa55", "<redacted>"),
            ("redis://u:pa/55@host", "redis://u:<redacted>@host"),
            ("unix:///s?pass=p@55", "unix://<redacted>@55"),
        ] {
            assert_eq!(redacted_redis_url(url), shown, "{url}");
        }
        let url = RedisUrl("redis://:pa55@h:1".to_owned());
        assert!(!format!("{url} {url:?}").contains("pa55"));
        assert_eq!(url.expose(), "redis://:pa55@h:1");
    }

    #[test]
    fn redis_urls_of_every_scheme_the_client_takes_are_accepted() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://localhost",
            "redis://:pa55@10.0.0.5:6379/3",
            "rediss://alice:pa55@redis.example.com:6380",
            "redis://[::1]:6379",
            "redis+unix:///run/redis/redis.sock",
            "unix:///run/redis/redis.sock?db=2&pass=x",
            " redis://h:1 ",
        ] {
            assert_eq!(check_redis_url(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn bad_redis_urls_are_refused_without_showing_the_password() {
        for (url, says) in [
            ("http://:pa55@host:6379", "not Redis's"),
            ("localhost:6379", "not Redis's"),
            ("redis//host", "not a URL"),
            ("redis://:pa55@", "empty host"),
            ("redis:///0", "no host"),
            ("redis://:pa55@host:99999", "not a URL"),
            ("redis://:pa55@host/db", "database number"),
            ("unix://", "no socket"),
        ] {
            let problem = check_redis_url(url).expect_err(url);
            assert!(problem.contains(says), "{url}: {problem}");
            assert!(!problem.contains("pa55"), "{url}: {problem}");
        }
    }

    #[test]
    fn the_default_node_id_is_the_host_name_and_player_port() {
        assert_eq!(default_node_id("web-1.example", 80), "web-1.example:80");
        assert_eq!(default_node_id(" odd host\n", 8080), "odd_host:8080");
        assert_eq!(default_node_id("", 1), "localhost:1");
        let long = default_node_id(&"h".repeat(300), 65535);
        assert_eq!(long.len(), MAX_NODE_ID_BYTES);
        assert!(long.ends_with(":65535"));
    }

    #[test]
    fn settings_are_none_when_off_and_resolve_the_node_id_when_on() {
        let off = Config::default();
        assert!(!off.cluster.enabled());
        assert_eq!(cluster_settings(&off, 80).expect("resolves"), None);

        let mut on = Config::default();
        on.cluster.redis_url = "redis://:pa55@127.0.0.1:6379".to_owned();
        on.cluster.node_id = "node-a".to_owned();
        on.cluster.heartbeat_interval = Duration::from_millis(250);
        let settings = cluster_settings(&on, 80).expect("resolves").expect("on");
        assert_eq!(settings.node_id, "node-a");
        assert_eq!(settings.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(settings.node_timeout, Duration::from_secs(5));
        assert_eq!(settings.inbox_max_length, 100_000);
        assert_eq!(settings.key_prefix, "signalling");
        assert!(!settings.start_alone);
        assert_eq!(settings.redis_url.expose(), "redis://:pa55@127.0.0.1:6379");
        assert!(!format!("{settings:?}").contains("pa55"));

        on.cluster.node_id = String::new();
        let settings = cluster_settings(&on, 8080).expect("host name").expect("on");
        let host = read_host_name().expect("host name");
        assert_eq!(settings.node_id, format!("{host}:8080"));
    }
}
