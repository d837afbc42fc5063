//! Prometheus metrics: the handles every part counts with, and the `/metrics` route that renders
//! them (README "Metrics"). It owns no state of the server and decides nothing.
//!
//! Every series is registered once, when the server starts, on a recorder of this server's own
//! (`metrics-exporter-prometheus`, not installed as the process's global recorder: tests run
//! many servers in one process). Parts keep the handles, so counting a message is one relaxed
//! atomic add on a handle held by the task that already handles the message: no registry
//! lookup, no label allocation, no lock. Only a close registers its `(role, code)` series when
//! it first happens, once per connection, never per message. Gauges that are a count of a
//! table (`signalling_streamers`, `signalling_subscriptions`, the SSE gauges) are read from the
//! router and sessions tasks when `/metrics` is scraped, so they cost nothing in between.
//!
//! How a limit is counted: add a [`Limit`] variant named as its configuration key, then either
//! call [`Metrics::rate_limited`] where the refusal is decided (a connection task, the accept
//! module), or, for an HTTP refusal answered by a handler without the handle, put the `Limit`
//! into the response's extensions (`response.extensions_mut().insert(Limit::…)`): the player
//! port's HTTP service counts it ([`Metrics::count_response`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::cluster::bridge::{Answer, Answers, Query};
use crate::router::Role;
use crate::router_task::RouterHandle;
use crate::sessions::task::SessionsHandle;

/// `signalling_negotiation_seconds`' bucket bounds: a local network answers in milliseconds, a
/// streamer under load or far away in seconds.
pub(crate) const NEGOTIATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The `type` label values of `signalling_messages_total`: every type the protocol knows, either
/// way, and `other`. A label never takes a peer's text, so the series stay a fixed set.
pub(crate) const MESSAGE_TYPES: [&str; 29] = [
    "endpointId",
    "listStreamers",
    "subscribe",
    "unsubscribe",
    "offer",
    "answer",
    "iceCandidate",
    "layerPreference",
    "dataChannelRequest",
    "peerDataChannelsReady",
    "peerDataChannels",
    "streamerDataChannels",
    "disconnectPlayer",
    "startStreaming",
    "stopStreaming",
    "ping",
    "pong",
    "stats",
    "config",
    "identify",
    "endpointIdConfirm",
    "streamerIdChanged",
    "playerCount",
    "streamerList",
    "subscribeFailed",
    "playerConnected",
    "playerDisconnected",
    "streamerDisconnected",
    "other",
];
pub(crate) const OFFER: usize = 4;
pub(crate) const SUBSCRIBE: usize = 2;
const OTHER: usize = MESSAGE_TYPES.len() - 1;

/// The index in [`MESSAGE_TYPES`] of a message type; `other` for any type not listed.
pub(crate) fn message_type(name: &str) -> usize {
    match name {
        "endpointId" => 0,
        "listStreamers" => 1,
        "subscribe" => SUBSCRIBE,
        "unsubscribe" => 3,
        "offer" => OFFER,
        "answer" => 5,
        "iceCandidate" => 6,
        "layerPreference" => 7,
        "dataChannelRequest" => 8,
        "peerDataChannelsReady" => 9,
        "peerDataChannels" => 10,
        "streamerDataChannels" => 11,
        "disconnectPlayer" => 12,
        "startStreaming" => 13,
        "stopStreaming" => 14,
        "ping" => 15,
        "pong" => 16,
        "stats" => 17,
        "config" => 18,
        "identify" => 19,
        "endpointIdConfirm" => 20,
        "streamerIdChanged" => 21,
        "playerCount" => 22,
        "streamerList" => 23,
        "subscribeFailed" => 24,
        "playerConnected" => 25,
        "playerDisconnected" => 26,
        "streamerDisconnected" => 27,
        _ => OTHER,
    }
}

/// The top-level `type` of an outgoing message's text. The writer has only the text: parsing it
/// again would cost more than relaying it, so this looks for the `"type":"` key (inside a JSON
/// string every quote is escaped, so the pattern can only be a key) and reads the value up to
/// its closing quote. A message written with spaces around the colon is parsed properly, once.
pub(crate) fn outgoing_type(text: &str) -> usize {
    const KEY: &str = "\"type\":\"";
    if let Some(at) = text.find(KEY) {
        let rest = &text[at + KEY.len()..];
        return rest
            .find('"')
            .map_or(OTHER, |end| message_type(&rest[..end]));
    }
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<&'a str>,
    }
    serde_json::from_str::<Typed<'_>>(text)
        .ok()
        .and_then(|t| t.kind)
        .map_or(OTHER, message_type)
}

/// Which way a message went, from the server's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Received from a peer.
    In = 0,
    /// Sent to a peer.
    Out = 1,
}

/// A limit that refused something: `signalling_rate_limited_total{limit}`, named as its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// A message above `max_message_size`: closed 1009.
    MaxMessageSize,
    /// A sender's messages waited longer than `overflow_timeout` for their receiver: 1008.
    OverflowTimeout,
    /// `subscribe` to a streamer that has `max_players` players: `subscribeFailed`.
    MaxPlayers,
    /// A player beyond `max_player_count`: closed 1013 at connect.
    MaxPlayerCount,
    /// The session API's 429s, by the limit their body names.
    MaxSessions,
    MaxSessionsPerAddress,
    MaxPeersPerSession,
    MaxQueuedEvents,
    MaxPeerEventBytes,
    MaxEventBytes,
    /// The abuse limits (`src/limits.rs`): a connection closed unread or an upgrade refused
    /// 429 beyond `max_connections_per_ip`; an upgrade, a request or a registration beyond its
    /// per-minute rate (429); an upgrade beyond `max_streamers` (503); an event stream beyond
    /// `max_streams_per_address` (429); a new address while the port's table is full (503); a
    /// player closed 1008 by its message bucket or its first-message deadline.
    MaxConnectionsPerIp,
    UpgradesPerIpPerMinute,
    HttpRequestsPerMinute,
    RegistrationsPerMinute,
    MaxStreamers,
    MaxStreamsPerAddress,
    AddressTable,
    MessagesPerSecond,
    FirstMessageTimeout,
}

impl Limit {
    pub(crate) const ALL: [Self; 19] = [
        Self::MaxMessageSize,
        Self::OverflowTimeout,
        Self::MaxPlayers,
        Self::MaxPlayerCount,
        Self::MaxSessions,
        Self::MaxSessionsPerAddress,
        Self::MaxPeersPerSession,
        Self::MaxQueuedEvents,
        Self::MaxPeerEventBytes,
        Self::MaxEventBytes,
        Self::MaxConnectionsPerIp,
        Self::UpgradesPerIpPerMinute,
        Self::HttpRequestsPerMinute,
        Self::RegistrationsPerMinute,
        Self::MaxStreamers,
        Self::MaxStreamsPerAddress,
        Self::AddressTable,
        Self::MessagesPerSecond,
        Self::FirstMessageTimeout,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::MaxMessageSize => "max_message_size",
            Self::OverflowTimeout => "overflow_timeout",
            Self::MaxPlayers => "max_players",
            Self::MaxPlayerCount => "max_player_count",
            Self::MaxSessions => "max_sessions",
            Self::MaxSessionsPerAddress => "max_sessions_per_address",
            Self::MaxPeersPerSession => "max_peers_per_session",
            Self::MaxQueuedEvents => "max_queued_events",
            Self::MaxPeerEventBytes => "max_peer_event_bytes",
            Self::MaxEventBytes => "max_event_bytes",
            Self::MaxConnectionsPerIp => "max_connections_per_ip",
            Self::UpgradesPerIpPerMinute => "upgrades_per_ip_per_minute",
            Self::HttpRequestsPerMinute => "http_requests_per_minute",
            Self::RegistrationsPerMinute => "registrations_per_minute",
            Self::MaxStreamers => "max_streamers",
            Self::MaxStreamsPerAddress => "max_streams_per_address",
            Self::AddressTable => "address_table",
            Self::MessagesPerSecond => "messages_per_second",
            Self::FirstMessageTimeout => "first_message_timeout",
        }
    }
}

const ROLES: [Role; 3] = [Role::Streamer, Role::Player, Role::Sfu];

fn role_index(role: Role) -> usize {
    match role {
        Role::Streamer => 0,
        Role::Player => 1,
        Role::Sfu => 2,
    }
}

static METADATA: Metadata<'static> = Metadata::new("signalling", Level::INFO, None);

/// Every handle, registered once per server.
pub(crate) struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    connections: [Gauge; 3],
    connections_total: [Counter; 3],
    streamers: Gauge,
    subscriptions: Gauge,
    /// By [`MESSAGE_TYPES`] index, then [`Direction`].
    messages: Box<[[Counter; 2]]>,
    auth_failures: [Counter; 3],
    /// By [`Limit::ALL`] order.
    rate_limited: Box<[Counter]>,
    queue_full: Counter,
    negotiation: Histogram,
    sse_sessions: Gauge,
    sse_events_queued: Gauge,
    /// The clock's zero for [`Negotiation`]'s starts.
    epoch: Instant,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        // Only the bucket list can fail (an empty one); ours is not.
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(
            Matcher::Full("signalling_negotiation_seconds".into()),
            NEGOTIATION_BUCKETS,
        ) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let key = |name: &'static str, labels: Vec<Label>| Key::from_parts(name, labels);
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&key(name, labels), &METADATA)
        };
        let gauge = |name: &'static str, labels: Vec<Label>| {
            recorder.register_gauge(&key(name, labels), &METADATA)
        };
        let role = |r: Role| vec![Label::new("role", r.as_str())];
        let counter_help = |name: &'static str, help: &'static str| {
            recorder.describe_counter(KeyName::from_const_str(name), None, help.into());
        };
        let gauge_help = |name: &'static str, help: &'static str| {
            recorder.describe_gauge(KeyName::from_const_str(name), None, help.into());
        };
        gauge_help(
            "signalling_connections",
            "Open WebSocket connections, by role",
        );
        counter_help(
            "signalling_connections_total",
            "WebSocket connections opened, by role",
        );
        gauge_help(
            "signalling_streamers",
            "Streamers connected (streamer port)",
        );
        gauge_help(
            "signalling_subscriptions",
            "Players and SFUs subscribed to a streamer",
        );
        counter_help(
            "signalling_messages_total",
            "Signalling messages, by type and direction (in: from a peer, out: to a peer)",
        );
        counter_help(
            "signalling_closes_total",
            "Connections ended, by role and close code (none: no close frame)",
        );
        counter_help(
            "signalling_auth_failures_total",
            "Handshakes refused 401 (missing or wrong token), by role",
        );
        counter_help(
            "signalling_rate_limited_total",
            "Requests, messages or connections a limit refused, by the limit's key",
        );
        counter_help(
            "signalling_queue_full_total",
            "Connections closed 1008 because their outgoing queue overflowed",
        );
        recorder.describe_histogram(
            KeyName::from_const_str("signalling_negotiation_seconds"),
            None,
            "From a player's subscribe to the streamer's offer reaching that player".into(),
        );
        gauge_help(
            "signalling_sse_sessions",
            "Open sessions of the session API",
        );
        gauge_help(
            "signalling_sse_events_queued",
            "Session API events waiting for their peer's event stream",
        );
        gauge_help("signalling_build_info", "This server's version (always 1)");
        gauge(
            "signalling_build_info",
            vec![Label::new("version", env!("CARGO_PKG_VERSION"))],
        )
        .set(1.0);
        let messages = MESSAGE_TYPES
            .iter()
            .map(|&kind| {
                [Direction::In, Direction::Out].map(|d| {
                    counter(
                        "signalling_messages_total",
                        vec![
                            Label::new("type", kind),
                            Label::new("direction", if d == Direction::In { "in" } else { "out" }),
                        ],
                    )
                })
            })
            .collect();
        let rate_limited = Limit::ALL
            .iter()
            .map(|l| {
                counter(
                    "signalling_rate_limited_total",
                    vec![Label::new("limit", l.as_str())],
                )
            })
            .collect();
        Self {
            connections: ROLES.map(|r| gauge("signalling_connections", role(r))),
            connections_total: ROLES.map(|r| counter("signalling_connections_total", role(r))),
            streamers: gauge("signalling_streamers", vec![]),
            subscriptions: gauge("signalling_subscriptions", vec![]),
            messages,
            auth_failures: ROLES.map(|r| counter("signalling_auth_failures_total", role(r))),
            rate_limited,
            queue_full: counter("signalling_queue_full_total", vec![]),
            negotiation: recorder
                .register_histogram(&key("signalling_negotiation_seconds", vec![]), &METADATA),
            sse_sessions: gauge("signalling_sse_sessions", vec![]),
            sse_events_queued: gauge("signalling_sse_events_queued", vec![]),
            epoch: Instant::now(),
            handle,
            recorder,
        }
    }

    /// A connection of `role` opened.
    pub(crate) fn opened(&self, role: Role) {
        let i = role_index(role);
        self.connections[i].increment(1.0);
        self.connections_total[i].increment(1);
    }

    /// A connection of `role` ended, with the close code sent or received (`None`: no close
    /// frame either way). Codes outside RFC 6455's registered range (1000–2999) count as
    /// `other`, so a peer cannot grow the set of series.
    pub(crate) fn closed(&self, role: Role, code: Option<u16>) {
        self.connections[role_index(role)].decrement(1.0);
        let code = match code {
            None => "none".to_owned(),
            Some(c @ 1000..=2999) => c.to_string(),
            Some(_) => "other".to_owned(),
        };
        let key = Key::from_parts(
            "signalling_closes_total",
            vec![Label::new("role", role.as_str()), Label::new("code", code)],
        );
        self.recorder.register_counter(&key, &METADATA).increment(1);
    }

    /// A message of type index `kind` ([`message_type`]) went `direction`.
    #[inline]
    pub(crate) fn message(&self, kind: usize, direction: Direction) {
        if let Some(pair) = self.messages.get(kind) {
            pair[direction as usize].increment(1);
        }
    }

    /// A handshake of `role` was refused 401.
    pub(crate) fn auth_failure(&self, role: Role) {
        self.auth_failures[role_index(role)].increment(1);
    }

    /// `limit` refused something.
    pub(crate) fn rate_limited(&self, limit: Limit) {
        self.rate_limited_by(limit, 1);
    }

    fn rate_limited_by(&self, limit: Limit, n: u64) {
        if let Some(i) = Limit::ALL.iter().position(|l| *l == limit) {
            self.rate_limited[i].increment(n);
        }
    }

    /// A connection was closed 1008 because its outgoing queue overflowed.
    pub(crate) fn queue_full(&self) {
        self.queue_full.increment(1);
    }

    /// The router's refusals grew from `before` to `now`.
    pub(crate) fn router_refusals(
        &self,
        before: crate::router::Refusals,
        now: crate::router::Refusals,
    ) {
        self.rate_limited_by(
            Limit::MaxPlayers,
            now.max_players.saturating_sub(before.max_players),
        );
        self.rate_limited_by(
            Limit::MaxPlayerCount,
            now.max_player_count.saturating_sub(before.max_player_count),
        );
    }

    /// Counts a refusal an HTTP response carries as a [`Limit`] extension.
    pub(crate) fn count_response<B>(&self, response: &axum::http::Response<B>) {
        if let Some(limit) = response.extensions().get::<Limit>() {
            self.rate_limited(*limit);
        }
    }

    /// A player's `subscribe` was read: its negotiation starts now (the latest start wins, so
    /// a player holds at most one).
    pub(crate) fn negotiation_started(&self, pending: &Negotiation) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        pending.0.store(nanos + 1, Ordering::Relaxed);
    }

    /// An `offer` is being written to the player: the pending negotiation, if any, ends.
    pub(crate) fn offer_delivered(&self, pending: &Negotiation) {
        let start = pending.0.swap(0, Ordering::Relaxed);
        if start != 0 {
            let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            #[allow(clippy::cast_precision_loss)] // Nanoseconds well within f64's 2^53.
            let seconds = now.saturating_sub(start - 1) as f64 / 1e9;
            self.negotiation.record(seconds);
        }
    }

    /// Drains the negotiation histogram's recent samples into its buckets, so memory stays
    /// bounded between scrapes (the exporter leaves this to its owner).
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The text exposition, with the table counts read just now.
    pub(crate) fn render(&self, tables: Tables) -> String {
        #[allow(clippy::cast_precision_loss)] // Counts far below 2^53.
        {
            if let Some((streamers, subscriptions)) = tables.router {
                self.streamers.set(streamers as f64);
                self.subscriptions.set(subscriptions as f64);
            }
            if let Some((sessions, queued)) = tables.sessions {
                self.sse_sessions.set(sessions as f64);
                self.sse_events_queued.set(queued as f64);
            }
        }
        let mut text = self.handle.render();
        if let Some(answers) = &tables.cluster {
            render_cluster(answers, &mut text);
        }
        text
    }
}

/// A player's pending negotiation start (nanoseconds since [`Metrics`]' epoch, plus one; zero
/// is none): shared by its reader, which sees `subscribe`, and its writer, which sees `offer`.
#[derive(Debug, Default)]
pub(crate) struct Negotiation(AtomicU64);

/// What a scrape reads from the tasks that own the tables; `None` once one has stopped.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tables {
    pub(crate) router: Option<(usize, usize)>,
    pub(crate) sessions: Option<(usize, usize)>,
    /// In a cluster, every node's counts (this node's first).
    pub(crate) cluster: Option<Answers>,
}

/// The cluster's families, appended to the exporter's text. Written by hand: their series are
/// exactly the nodes that answered this scrape, where a registered gauge would keep a dead
/// node's last value forever. Node ids are printable ASCII; `\` and `"` are escaped anyway.
fn render_cluster(answers: &Answers, out: &mut String) {
    use std::fmt::Write;
    out.push_str(
        "# HELP signalling_cluster_nodes Nodes of the cluster that answered this scrape, this one included.\n\
         # TYPE signalling_cluster_nodes gauge\n",
    );
    let _ = writeln!(out, "signalling_cluster_nodes {}", answers.len());
    out.push_str(
        "# HELP signalling_cluster_peers Peers connected to each node of the cluster (an SFU counts as both).\n\
         # TYPE signalling_cluster_peers gauge\n",
    );
    for (node, answer) in answers {
        if let Answer::Counts(counts) = answer {
            let node = node.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "signalling_cluster_peers{{node=\"{node}\",kind=\"streamers\"}} {}",
                counts.streamers
            );
            let _ = writeln!(
                out,
                "signalling_cluster_peers{{node=\"{node}\",kind=\"players\"}} {}",
                counts.players
            );
        }
    }
}

/// What `/metrics` needs.
#[derive(Debug, Clone)]
pub(crate) struct Scrape {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) router: RouterHandle,
    pub(crate) sessions: SessionsHandle,
    /// `admin_token`: required as `Authorization: Bearer` when set.
    pub(crate) admin_token: crate::reload::Live<str>,
}

/// The `/metrics` route.
pub(crate) fn routes(scrape: Scrape) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(scrape)
}

/// `metrics_port`'s own app: `/metrics` and `/healthz`, nothing else.
pub(crate) fn own_port_app(scrape: Scrape) -> axum::Router {
    routes(scrape).route("/healthz", axum::routing::get(crate::http::health::healthz))
}

/// Drains the histogram now and then until `shutdown`.
pub(crate) async fn upkeep(metrics: Arc<Metrics>, shutdown: tokio_util::sync::CancellationToken) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => metrics.upkeep(),
        }
    }
}

async fn metrics(State(scrape): State<Scrape>, headers: HeaderMap) -> Response {
    let expected = scrape.admin_token.get();
    if let Some(refusal) =
        crate::http::rest::admin_refusal(Some(&*expected).filter(|t| !t.is_empty()), &headers)
    {
        return refusal;
    }
    let tables = Tables {
        router: scrape
            .router
            .inspect(|r| (r.counts().streamers, r.subscription_count()))
            .await,
        sessions: scrape.sessions.gauges().await.ok(),
        cluster: scrape.router.gather(Query::Counts).await,
    };
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        scrape.metrics.render(tables),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
