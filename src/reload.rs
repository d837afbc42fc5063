//! SIGHUP: reads the configuration again from where it came from, and hands what can change
//! without dropping a connection to the parts that use it. It never touches a socket.
//!
//! The one mechanism: the server publishes the configuration in force on a
//! `watch::Sender<Arc<Config>>` ([`LiveConfig`] is its receiving end), and each part that can
//! change live subscribes in one of two ways:
//! - a setting read where it is used (a token at each handshake): hold a [`Live`] and call
//!   [`Live::get`] each time; a reload reaches the next use, and a fixed setting (tests, the
//!   REST API built without a server) is a `Live` whose sender is gone ([`Live::fixed`]);
//! - state derived from settings (parsed keys, rate limiters, the router's `config` message):
//!   hold a [`LiveConfig`] and rebuild on `changed()` in its own task, or, for the router,
//!   receive it as an event from [`Reloader`]. To add a part, add its keys to [`LIVE_KEYS`]
//!   so the reload's log line stops saying they need a restart.
//!
//! A reload either applies whole or not at all: a file that does not load or validate is
//! refused with one error line and the settings in force stay. Keys that cannot change live
//! (ports, addresses, files) are published too but take effect only at the next start; the
//! log line names them.

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::accept::limits::Limits;
use crate::auth::Gates;
use crate::config::{self, Config};
use crate::connection::PlayerLimits;
use crate::router::RouterConfig;
use crate::router_task::RouterHandle;
use crate::tls::TlsIdentity;

/// The configuration in force, as a reload publishes it.
pub type LiveConfig = watch::Receiver<Arc<Config>>;

/// Keys a reload puts in force at once; any other changed key needs a restart.
pub(crate) const LIVE_KEYS: &[&str] = &[
    "log_level",
    "log_level_file",
    "player_token",
    "streamer_token",
    "sfu_token",
    "admin_token",
    "streamer_tokens",
    "jwt_secret",
    "jwt_public_key",
    "jwt_audience",
    "jwt_issuer",
    "max_connections_per_ip",
    "upgrades_per_ip_per_minute",
    "http_requests_per_minute",
    "messages_per_second",
    "message_burst",
    "max_streamers",
    "first_message_timeout",
    "sessions.registrations_per_minute",
    "sessions.max_streams_per_address",
    "peer_options",
    "max_players",
    "max_player_count",
    "player_count",
    "player_count_updates",
    "subscribe_at_connect",
    "player_id_style",
    "log_config",
];

/// Whether a reload puts `key` (a `section.key` path) in force at once.
fn is_live(key: &str) -> bool {
    LIVE_KEYS.contains(&key) || key.starts_with("ice.")
}

/// One setting of the configuration in force, read where it is used.
#[derive(Debug)]
pub(crate) struct Live<T: ?Sized + 'static> {
    config: LiveConfig,
    pick: fn(&Config) -> &T,
}

// By hand: derived, it would ask `T: Clone`, which `str` is not.
impl<T: ?Sized> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            pick: self.pick,
        }
    }
}

/// The setting at one moment: what [`Live::get`] read, held for as long as it is used.
#[derive(Debug)]
pub(crate) struct Snapshot<T: ?Sized + 'static> {
    config: Arc<Config>,
    pick: fn(&Config) -> &T,
}

impl<T: ?Sized> Deref for Snapshot<T> {
    type Target = T;

    fn deref(&self) -> &T {
        (self.pick)(&self.config)
    }
}

impl<T: ?Sized> Live<T> {
    pub(crate) fn new(config: LiveConfig, pick: fn(&Config) -> &T) -> Self {
        Self { config, pick }
    }

    /// A setting that never changes: `config` is all there will be.
    pub(crate) fn fixed(config: Config, pick: fn(&Config) -> &T) -> Self {
        Self::new(watch::channel(Arc::new(config)).1, pick)
    }

    /// The setting in force now (an `Arc` clone under a read lock held for no longer).
    pub(crate) fn get(&self) -> Snapshot<T> {
        Snapshot {
            config: Arc::clone(&self.config.borrow()),
            pick: self.pick,
        }
    }
}

/// Where a reload reads the configuration from: for the binary, the same flags and files as at
/// start. `Err` is the one line saying why the configuration cannot be used.
pub type ConfigSource = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Applies new log levels (`log_level`, `log_level_file`); the binary's is
/// [`crate::logging::Logging::levels`]'s.
pub type LogLevels = Box<dyn Fn(&Config) + Send + Sync>;

/// What the binary hands the server so SIGHUP can reload; without it a SIGHUP reloads the TLS
/// certificates only (the configuration is the one given at start).
pub struct ReloadFrom {
    pub source: ConfigSource,
    pub log_levels: LogLevels,
}

impl std::fmt::Debug for ReloadFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadFrom")
    }
}

/// Builds the router's settings from a configuration (the server's own recipe).
pub(crate) type RouterConfigOf = Box<dyn Fn(&Config) -> Result<RouterConfig, String> + Send + Sync>;

/// Everything a reload touches.
pub(crate) struct Reloader {
    pub(crate) from: Option<ReloadFrom>,
    pub(crate) config: watch::Sender<Arc<Config>>,
    pub(crate) router: RouterHandle,
    pub(crate) router_config: RouterConfigOf,
    /// Each port's certificate, named by its port, re-read from the same files.
    pub(crate) tls: Vec<(&'static str, TlsIdentity)>,
    /// What each WebSocket port and the session API require: tokens and JWT keys.
    pub(crate) gates: Gates,
    /// Each port's abuse limits, and the players' bucket and first-message deadline.
    pub(crate) limits: PortLimits,
    pub(crate) player_limits: Arc<arc_swap::ArcSwap<PlayerLimits>>,
}

/// The abuse limits of each port, whose settings a reload replaces.
#[derive(Debug, Clone)]
pub(crate) struct PortLimits {
    pub(crate) streamer: Arc<Limits>,
    pub(crate) sfu: Arc<Limits>,
    pub(crate) player: Arc<Limits>,
    pub(crate) https: Arc<Limits>,
    /// The rate window (a minute; shorter in tests), which a reload keeps.
    pub(crate) window_ms: u64,
}

impl PortLimits {
    fn set(&self, config: &Config) {
        let settings = crate::limits::Settings::from_config(config, self.window_ms);
        self.streamer.set(settings, config.max_streamers);
        for port in [&self.sfu, &self.player, &self.https] {
            port.set(settings, 0);
        }
    }
}

impl Reloader {
    /// Reloads on every SIGHUP until `shutdown`. `hangups` is registered by the caller before
    /// any port is bound, so a SIGHUP is never met by the default action (exit).
    #[cfg(unix)]
    pub(crate) async fn run(
        self,
        mut hangups: tokio::signal::unix::Signal,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                got = hangups.recv() => {
                    if got.is_none() {
                        return;
                    }
                    self.reload().await;
                }
            }
        }
    }

    /// One reload: read, check, announce (`RELOADING=1`), apply, log, announce (`READY=1`).
    pub(crate) async fn reload(&self) {
        let new = match &self.from {
            Some(from) => match (from.source)() {
                Ok(new) => new,
                Err(e) => {
                    error!("reload refused, the settings in force stay: {e}");
                    return;
                }
            },
            None => Config::clone(&self.config.borrow()),
        };
        let router_config = match (self.router_config)(&new) {
            Ok(router_config) => router_config,
            Err(e) => {
                error!("reload refused, the settings in force stay: {e}");
                return;
            }
        };
        let gates = match Gates::prepare(&new) {
            Ok(gates) => gates,
            Err(e) => {
                error!("reload refused, the settings in force stay: {e}");
                return;
            }
        };
        // systemd (Type=notify-reload) wants the monotonic time with RELOADING=1.
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        notify(&reloading);
        let old = Arc::clone(&self.config.borrow());
        let changed = config::changed_keys(&old, &new);
        let new = Arc::new(new);
        self.config.send_replace(Arc::clone(&new));
        self.gates.install(gates);
        self.limits.set(&new);
        self.player_limits
            .store(Arc::new(PlayerLimits::from_config(&new)));
        if !self.router.reconfigure(router_config).await {
            warn!("reload: the router has stopped (shutting down)");
        }
        if let Some(from) = &self.from {
            (from.log_levels)(&new);
        }
        crate::tls::reload_all(&self.tls);
        let (live, restart): (Vec<&str>, Vec<&str>) = changed
            .iter()
            .map(String::as_str)
            .partition(|key| is_live(key));
        info!("{}", summary(&live, &restart));
        notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// The reload's one line: what changed, and what of it waits for a restart. Key names only,
/// never values (tokens are secrets).
fn summary(live: &[&str], restart: &[&str]) -> String {
    let mut line = "configuration reloaded: ".to_owned();
    if live.is_empty() && restart.is_empty() {
        line.push_str("nothing changed");
        return line;
    }
    if !live.is_empty() {
        line.push_str(&format!("in force now: {}", live.join(", ")));
    }
    if !restart.is_empty() {
        if !live.is_empty() {
            line.push_str("; ");
        }
        line.push_str(&format!(
            "changed but in force only after a restart: {}",
            restart.join(", ")
        ));
    }
    line
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        warn!("cannot tell systemd about the reload: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_setting_follows_the_published_configuration() {
        let (tx, rx) = watch::channel(Arc::new(Config::default()));
        let token = Live::new(rx, |c| c.player_token.as_str());
        let before = token.get();
        assert_eq!(&*before, "");
        tx.send_replace(Arc::new(Config {
            player_token: "new".to_owned(),
            ..Config::default()
        }));
        assert_eq!(&*token.get(), "new");
        assert_eq!(&*before, "", "a snapshot keeps what it read");
    }

    #[test]
    fn the_summary_names_keys_in_force_and_keys_that_need_a_restart() {
        assert_eq!(summary(&[], &[]), "configuration reloaded: nothing changed");
        assert_eq!(
            summary(&["player_token", "peer_options"], &["player_port"]),
            "configuration reloaded: in force now: player_token, peer_options; \
             changed but in force only after a restart: player_port"
        );
        assert!(is_live("ice.turn_secret"));
        assert!(!is_live("sessions.max_sessions"));
        assert!(!is_live("player_port"));
    }
}
