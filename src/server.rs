//! Binds every listener, spawns the router task and the accept loops, and owns shutdown:
//! one cancellation token reaches every task; connections close with 1012 and the server waits
//! for them within a deadline.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::accept::limits::Limits as PortLimits;
use crate::accept::{self, Acceptor, Port};
use crate::auth::Gates;
use crate::config::Config;
use crate::connection::{ConnectionSettings, PlayerLimits, Shared};
use crate::http::api::Api;
use crate::http::client_addr::ReverseProxy;
use crate::http::cors::{Cors, CorsError};
use crate::http::headers::{self, SecurityHeaders};
use crate::http::static_files::StaticFiles;
use crate::http::{Site, Web};
use crate::ice::{Ice, LiveIce};
use crate::matchmaker::{self, MatchmakerSettings};
use crate::metrics::Metrics;
use crate::reload::{Live, ReloadFrom, Reloader};
use crate::router::{IceSource, Role, RouterConfig};
use crate::router_task;
use crate::sessions::{self, Limits};
use crate::tls::{CertPaths, TlsIdentity};

/// How long shutdown waits for connections to finish their close handshakes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind the {role} port {addr}: {source}{hint}")]
    Bind {
        role: &'static str,
        addr: SocketAddr,
        source: io::Error,
        hint: String,
    },
    #[error("peer_options cannot be serialized: {0}")]
    PeerOptions(serde_json::Error),
    #[error("{0}")]
    Cors(#[from] CorsError),
    #[error("{0}")]
    Auth(String),
    #[error("TLS for the {port} port: {problem}")]
    Tls { port: &'static str, problem: String },
    /// Cluster mode could not start (Redis unreachable, a bad URL, no node id).
    #[error("{0}")]
    Cluster(String),
}

/// A server whose listeners are bound; [`Server::run`] serves them.
#[derive(Debug)]
pub struct Server {
    config: Config,
    streamer: TcpListener,
    /// The plain player port: absent with `https` and without `https_redirect` (Wilbur).
    player: Option<TcpListener>,
    /// The HTTPS player port, with `https`.
    https: Option<TcpListener>,
    sfu: TcpListener,
    /// `metrics_port`'s own listener, when it is set.
    metrics: Option<TcpListener>,
    site: Site,
    tls: Identities,
    /// What each WebSocket port requires of an upgrade.
    gates: Gates,
    shutdown: CancellationToken,
    /// SIGHUP, registered before any port is bound (see [`Server::bind`]).
    #[cfg(unix)]
    hangups: Option<tokio::signal::unix::Signal>,
    /// Where a SIGHUP reads the configuration again (the binary's flags and files).
    reload_from: Option<ReloadFrom>,
    /// The link to the other nodes, in cluster mode (`[cluster] redis_url`).
    cluster: Option<crate::cluster::bridge::Wiring>,
    /// The abuse limits' rate window: a minute ([`Server::set_limit_window`]).
    limit_window: Duration,
}

/// The certificate of each port that has TLS.
#[derive(Debug, Default)]
struct Identities {
    https: Option<TlsIdentity>,
    streamer: Option<TlsIdentity>,
    sfu: Option<TlsIdentity>,
}

impl Identities {
    /// Loads every certificate the configuration asks for; ports naming the same files share
    /// one identity. A missing, unreadable or mismatched file stops start-up, naming it.
    fn load(config: &Config) -> Result<Self, ServerError> {
        let shared = CertPaths {
            cert: config.ssl_cert_path.clone(),
            key: config.ssl_key_path.clone(),
        };
        let own = |cert: &std::path::Path, key: &std::path::Path| CertPaths {
            cert: if cert.as_os_str().is_empty() {
                shared.cert.clone()
            } else {
                cert.to_owned()
            },
            key: if key.as_os_str().is_empty() {
                shared.key.clone()
            } else {
                key.to_owned()
            },
        };
        let mut loaded: Vec<TlsIdentity> = Vec::new();
        let mut load = |port: &'static str, on: bool, paths: CertPaths| -> Result<_, ServerError> {
            if !on {
                return Ok(None);
            }
            if let Some(same) = loaded.iter().find(|i| *i.paths() == paths) {
                return Ok(Some(same.clone()));
            }
            let identity = TlsIdentity::load(paths).map_err(|e| ServerError::Tls {
                port,
                problem: e.to_string(),
            })?;
            loaded.push(identity.clone());
            Ok(Some(identity))
        };
        Ok(Self {
            https: load("HTTPS", config.https, shared.clone())?,
            streamer: load(
                "streamer",
                config.streamer_tls,
                own(
                    &config.streamer_ssl_cert_path,
                    &config.streamer_ssl_key_path,
                ),
            )?,
            sfu: load(
                "SFU",
                config.sfu_tls,
                own(&config.sfu_ssl_cert_path, &config.sfu_ssl_key_path),
            )?,
        })
    }

    fn named(&self) -> Vec<(&'static str, TlsIdentity)> {
        [
            ("HTTPS", &self.https),
            ("streamer", &self.streamer),
            ("SFU", &self.sfu),
        ]
        .into_iter()
        .filter_map(|(name, identity)| identity.clone().map(|i| (name, i)))
        .collect()
    }
}

/// The player port's plain-HTTP settings from the configuration.
fn web(config: &Config) -> Web {
    Web {
        static_files: StaticFiles {
            enabled: config.serve,
            root: config.http_root.clone(),
            homepage: config.homepage.clone(),
            additional_routes: config
                .additional_routes
                .iter()
                .map(|(prefix, folder)| (prefix.clone(), folder.into()))
                .collect(),
        },
        cors: Cors {
            enabled: config.cors,
            allowed_origins: config.cors_allowed_origins.clone(),
            allowed_methods: config.cors_allowed_methods.clone(),
            allowed_headers: config.cors_allowed_headers.clone(),
            credentials: config.cors_credentials,
        },
        reverse_proxy: ReverseProxy {
            enabled: config.reverse_proxy,
            num_proxies: config.reverse_proxy_num_proxies,
        },
        pages: crate::http::pages::Settings::default(),
    }
}

async fn bind(
    config: &Config,
    role: &'static str,
    port: u16,
    flag: &str,
) -> Result<TcpListener, ServerError> {
    let addr = SocketAddr::new(config.bind_address, port);
    let listener = match listen(addr) {
        // "::" on a host without IPv6: every IPv4 interface instead, as the default promises.
        Err(e) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && no_ipv6(&e) => {
            info!("no IPv6 on this host ({e}): the {role} port listens on IPv4 only");
            listen(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))
        }
        other => other,
    };
    let listener = listener.map_err(|source| {
        let hint = match source.kind() {
            io::ErrorKind::PermissionDenied if port < 1024 => format!(
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE; pick another port, e.g. {flag} 8080)"
            ),
            io::ErrorKind::AddrInUse => format!(" (another process uses it; pick another port with {flag})"),
            _ => String::new(),
        };
        ServerError::Bind { role, addr, source, hint }
    })?;
    if let Ok(local) = listener.local_addr() {
        info!("{role} port listening on {local}");
    }
    Ok(listener)
}

/// A listening socket; an IPv6 one also takes IPv4 (IPV6_V6ONLY off, whatever the host's
/// default), as Wilbur's `::` does.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Whether an error means the host has no IPv6 (the module is off, or no address).
fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
    ) || matches!(e.raw_os_error(), Some(97 | 99)) // EAFNOSUPPORT, EADDRNOTAVAIL on Linux
}

impl Server {
    /// Binds the streamer, player and SFU ports (port 0 picks an ephemeral port).
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        let site = web(&config).build()?;
        let tls = Identities::load(&config)?;
        let gates = Gates::load(&config).map_err(ServerError::Auth)?;
        let shutdown = CancellationToken::new();
        // Registered before any port is bound: a SIGHUP sent once the ports are logged as
        // listening reloads, and never finds the default action (exit) in place.
        #[cfg(unix)]
        let hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangups) => Some(hangups),
            Err(e) => {
                warn!("cannot listen for SIGHUP ({e}): settings change only by a restart");
                None
            }
        };
        let streamer = bind(&config, "streamer", config.streamer_port, "--streamer_port").await?;
        let player = if !config.https || config.https_redirect {
            Some(bind(&config, "player", config.player_port, "--player_port").await?)
        } else {
            None
        };
        let https = if config.https {
            Some(bind(&config, "HTTPS", config.https_port, "--https_port").await?)
        } else {
            None
        };
        let sfu = bind(&config, "SFU", config.sfu_port, "--sfu_port").await?;
        let metrics = if config.metrics && config.metrics_port != 0 {
            Some(bind(&config, "metrics", config.metrics_port, "--metrics_port").await?)
        } else {
            None
        };
        let node_port = Self::addr_of(&player, &https);
        let cluster = match crate::config::cluster_settings(&config, node_port)
            .map_err(|e| ServerError::Cluster(e.to_string()))?
        {
            Some(settings) => Some(
                crate::cluster::bridge::start(link_settings(settings), shutdown.clone())
                    .await
                    .map_err(|e| ServerError::Cluster(e.to_string()))?,
            ),
            None => None,
        };
        // The built-in streamer page connects to the port actually bound (the configured 0 picks one).
        let site = site.with_pages(crate::http::pages::Settings {
            streamer_port: Self::addr(&streamer).port(),
            streamer_tls: config.streamer_tls,
        });
        Ok(Self {
            config,
            streamer,
            player,
            https,
            sfu,
            metrics,
            site,
            tls,
            gates,
            shutdown,
            #[cfg(unix)]
            hangups,
            reload_from: None,
            cluster,
            limit_window: Duration::from_secs(60),
        })
    }

    /// The player port a node id defaults to: the plain one, else HTTPS's.
    fn addr_of(player: &Option<TcpListener>, https: &Option<TcpListener>) -> u16 {
        player
            .as_ref()
            .or(https.as_ref())
            .map_or(0, |l| Self::addr(l).port())
    }

    /// On SIGHUP, read the configuration again from `from` and put what can change live in
    /// force ([`crate::reload`]). Without it a SIGHUP only re-reads the TLS certificates.
    #[must_use]
    pub fn reload_from(mut self, from: ReloadFrom) -> Self {
        self.reload_from = Some(from);
        self
    }

    /// Shortens the window of the per-minute limits (`upgrades_per_ip_per_minute`, …), so that
    /// tests see a window end without waiting a minute. Not a configuration key.
    #[doc(hidden)]
    pub fn set_limit_window(&mut self, window: Duration) {
        self.limit_window = window;
    }

    fn addr(listener: &TcpListener) -> SocketAddr {
        listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn streamer_addr(&self) -> SocketAddr {
        Self::addr(&self.streamer)
    }
    /// The plain player port; without one (`https` without `https_redirect`), the HTTPS port.
    pub fn player_addr(&self) -> SocketAddr {
        self.player
            .as_ref()
            .or(self.https.as_ref())
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), Self::addr)
    }
    /// The HTTPS player port, with `https`.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().map(Self::addr)
    }
    /// The port players are sent to: HTTPS's with `https`, else the plain one.
    fn public_player_port(&self) -> u16 {
        self.https_addr()
            .unwrap_or_else(|| self.player_addr())
            .port()
    }
    pub fn sfu_addr(&self) -> SocketAddr {
        Self::addr(&self.sfu)
    }
    /// `metrics_port`'s own port, when it is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(Self::addr)
    }

    /// Cancelling this token shuts the server down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until SIGINT or SIGTERM (or the shutdown token), then shuts down gracefully.
    /// This is the binary's way in: it first raises the process's open-file limit (which an
    /// embedding test harness keeps as it is).
    pub async fn run(self) -> Result<(), ServerError> {
        crate::fd_limit::raise_and_log();
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `signal` completes or the shutdown token is cancelled.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), ServerError> {
        let ice = Arc::new(Ice::new(&self.config.ice));
        let initial = router_config(&self.config, ice.clone())?;
        let shutdown = self.shutdown.clone();
        // The configuration in force: what can change on SIGHUP is read from here.
        let (live_tx, live) = watch::channel(Arc::new(self.config.clone()));
        let metrics = self.config.metrics.then(|| Arc::new(Metrics::new()));
        // In cluster mode the sessions task shares the link: the bridge hands it its events.
        let sessions_cluster = self.cluster.as_mut().map(|wiring| {
            let (tx, inputs) = tokio::sync::mpsc::unbounded_channel();
            wiring.sessions = Some(tx);
            sessions::task::ClusterWiring {
                link: wiring.link.clone(),
                inputs,
                redis_url: wiring.redis_url.clone(),
                key_prefix: wiring.key_prefix.clone(),
            }
        });
        let (router, router_task, counts) = router_task::spawn_with_counts(
            initial,
            self.config.player_protocol_ping,
            self.config.overflow_timeout,
            shutdown.clone(),
            metrics.clone(),
            self.cluster.take(),
        );
        let sessions = &self.config.sessions;
        let (sessions_handle, sessions_task) = sessions::task::spawn_clustered(
            Limits {
                max_sessions: sessions.max_sessions,
                max_sessions_per_address: sessions.max_sessions_per_address,
                max_peers_per_session: sessions.max_peers_per_session,
                max_queued_events: sessions.max_queued_events,
                max_peer_event_bytes: sessions.max_peer_event_bytes,
                max_event_bytes: sessions.max_event_bytes,
                stream_window_bytes: sessions::STREAM_WINDOW_BYTES,
                idle_timeout_ms: u64::try_from(sessions.idle_timeout.as_millis())
                    .unwrap_or(u64::MAX),
            },
            sessions_cluster,
            shutdown.clone(),
        );
        let scrape = metrics.clone().map(|metrics| crate::metrics::Scrape {
            metrics,
            router: router.clone(),
            sessions: sessions_handle.clone(),
            admin_token: Live::new(live.clone(), |c| c.admin_token.as_str()),
        });
        let api = Api {
            sessions: sessions_handle,
            ice,
            settings: Arc::new(self.config.sessions.clone()),
            auth: self.gates.player.clone(),
        };
        let rest = self.config.rest_api.then(|| {
            let settings = crate::http::rest::Settings {
                streamer_port: Self::addr(&self.streamer).port(),
                player_port: self.player_addr().port(),
                sfu_port: Self::addr(&self.sfu).port(),
                peer_options: self.config.peer_options.clone(),
                max_players: self.config.max_players,
                admin_token: self.config.admin_token.clone(),
            };
            crate::http::rest::Rest::new(router.clone(), &settings)
                .with_admin_token(Live::new(live.clone(), |c| c.admin_token.as_str()))
        });
        // The abuse limits: one table per port, and the players' bucket and first-message
        // deadline; a reload replaces their settings.
        let window_ms = u64::try_from(self.limit_window.as_millis()).unwrap_or(u64::MAX);
        let limits = crate::limits::Settings::from_config(&self.config, window_ms);
        let port_limits = crate::reload::PortLimits {
            streamer: PortLimits::new("streamer", limits, self.config.max_streamers),
            sfu: PortLimits::new("SFU", limits, 0),
            player: PortLimits::new("player", limits, 0),
            https: PortLimits::new("HTTPS", limits, 0),
            window_ms,
        };
        let player_limits = Arc::new(arc_swap::ArcSwap::from_pointee(PlayerLimits::from_config(
            &self.config,
        )));
        let reloader = Reloader {
            limits: port_limits.clone(),
            player_limits: Arc::clone(&player_limits),
            from: self.reload_from.take(),
            config: live_tx,
            router: router.clone(),
            router_config: Box::new(|config| {
                router_config(config, Arc::new(Ice::new(&config.ice))).map_err(|e| e.to_string())
            }),
            tls: self.tls.named(),
            gates: self.gates.clone(),
        };
        #[cfg(unix)]
        if let Some(hangups) = self.hangups.take() {
            tokio::spawn(reloader.run(hangups, shutdown.clone()));
        }
        #[cfg(not(unix))]
        drop(reloader);
        let tracker = TaskTracker::new();
        let acceptor = Acceptor {
            shared: Shared {
                router,
                settings: Arc::new(ConnectionSettings::from_config(&self.config)),
                player_limits,
                shutdown: shutdown.clone(),
                metrics: metrics.clone(),
            },
            tracker: tracker.clone(),
            next_conn: Arc::new(AtomicU64::new(1)),
        };
        let handshake_timeout = self.config.handshake_timeout;
        let public_player_port = self.public_player_port();
        let https_port = self.https_addr().map(|a| a.port());
        let acceptor_of =
            |identity: &Option<TlsIdentity>| identity.as_ref().map(TlsIdentity::acceptor);
        tracker.spawn(accept::serve(
            self.streamer,
            Port::new(
                "streamer",
                Role::Streamer,
                acceptor_of(&self.tls.streamer),
                handshake_timeout,
            )
            .with_gate(self.gates.streamer.clone())
            .with_limits(port_limits.streamer.clone()),
            acceptor.clone(),
        ));
        tracker.spawn(accept::serve(
            self.sfu,
            Port::new(
                "SFU",
                Role::Sfu,
                acceptor_of(&self.tls.sfu),
                handshake_timeout,
            )
            .with_gate(self.gates.sfu.clone())
            .with_limits(port_limits.sfu.clone()),
            acceptor.clone(),
        ));
        if self.config.use_matchmaker {
            let settings = MatchmakerSettings {
                address: self.config.matchmaker_address.clone(),
                port: self.config.matchmaker_port,
                retry_interval: self.config.matchmaker_retry_interval,
                public_ip: self.config.public_ip.clone(),
                // The bound port (the configured one, unless that was 0); HTTPS's with https.
                player_port: public_player_port,
                https: self.config.https,
                keepalive: matchmaker::KEEPALIVE,
            };
            tracker.spawn(matchmaker::run(settings, counts, shutdown.clone()));
        } else {
            drop(counts);
        }
        let write_timeout = api.settings.stream_write_timeout;
        let mut app = crate::http::app(shutdown.clone(), api, rest, &self.site);
        if let Some(scrape) = scrape {
            tracker.spawn(crate::metrics::upkeep(
                scrape.metrics.clone(),
                shutdown.clone(),
            ));
            match self.metrics {
                Some(listener) => {
                    let own = crate::metrics::own_port_app(scrape);
                    let stop = shutdown.clone();
                    tracker.spawn(async move {
                        let serving = axum::serve(listener, own)
                            .with_graceful_shutdown(stop.cancelled_owned());
                        if let Err(e) = serving.await {
                            warn!("the metrics port stopped: {e}");
                        }
                    });
                }
                None => app = app.merge(crate::metrics::routes(scrape)),
            }
        }
        let security = SecurityHeaders {
            hsts_max_age: self.config.hsts_max_age,
            frame_ancestors: self.config.frame_ancestors.clone(),
        };
        let origins = &self.config.player_allowed_origins;
        if let Some(listener) = self.player {
            // With https_redirect, plain HTTP answers 308 to HTTPS; upgrades are still served.
            let plain = match https_port {
                Some(port) => crate::http::redirect::https_redirect(port),
                None => app.clone(),
            };
            let port = Port::new("player", Role::Player, None, handshake_timeout)
                .with_gate(self.gates.player.clone())
                .with_limits(port_limits.player.clone())
                .with_http(
                    headers::layer(plain, &security, false),
                    write_timeout,
                    &acceptor,
                    origins.clone(),
                    self.site.hops(),
                );
            tracker.spawn(accept::serve(listener, port, acceptor.clone()));
        }
        if let Some(listener) = self.https {
            let port = Port::new(
                "HTTPS",
                Role::Player,
                acceptor_of(&self.tls.https),
                handshake_timeout,
            )
            .with_gate(self.gates.player.clone())
            .with_limits(port_limits.https.clone())
            .with_http(
                headers::layer(app, &security, true),
                write_timeout,
                &acceptor,
                origins.clone(),
                self.site.hops(),
            );
            tracker.spawn(accept::serve(listener, port, acceptor.clone()));
        }
        drop(acceptor);

        tokio::select! {
            () = signal => info!("shutting down: closing every connection with 1012"),
            () = shutdown.cancelled() => info!("shutting down: closing every connection with 1012"),
        }
        shutdown.cancel();
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            warn!("some connections did not finish closing within {SHUTDOWN_GRACE:?}");
        }
        let _ = router_task.await;
        let _ = sessions_task.await;
        info!("stopped");
        Ok(())
    }
}

/// The router's settings from a configuration, with `ice` built from its `[ice]`.
fn router_config(config: &Config, ice: Arc<Ice>) -> Result<RouterConfig, ServerError> {
    let peer_options =
        serde_json::to_string(&config.peer_options).map_err(ServerError::PeerOptions)?;
    let peer_options = RawValue::from_string(peer_options).map_err(ServerError::PeerOptions)?;
    Ok(RouterConfig {
        peer_options,
        max_players: config.max_players,
        player_id_style: config.player_id_style,
        player_count: config.player_count,
        ice: (!ice.is_empty()).then(|| Arc::new(LiveIce(ice)) as Arc<dyn IceSource>),
        max_player_count: config.max_player_count,
        player_count_updates: config.player_count_updates,
        subscribe_at_connect: config.subscribe_at_connect,
        claim_ids: config.cluster.enabled(),
    })
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// The cluster link's settings from `[cluster]`.
fn link_settings(
    settings: crate::config::ClusterSettings,
) -> crate::cluster::link_task::LinkSettings {
    crate::cluster::link_task::LinkSettings {
        redis_url: settings.redis_url.expose().to_owned(),
        key_prefix: settings.key_prefix,
        node_id: settings.node_id,
        heartbeat_interval: settings.heartbeat_interval,
        node_timeout: settings.node_timeout,
        inbox_max_length: settings.inbox_max_length,
        start_alone: settings.start_alone,
    }
}
