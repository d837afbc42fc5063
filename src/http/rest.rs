//! Wilbur's REST API under `/api` on the player port (on with `rest_api`): status, streamers,
//! players, the configuration and this API's OpenAPI document, in Wilbur's JSON field names,
//! types and 404 bodies (Epic's `SignallingWebServer/src/paths/`). Handlers ask the router task
//! for a copy of the tables (`router::snapshot`) and turn it into JSON; they keep no state and
//! never change a table. With `admin_token` set, the routes that reveal client addresses or
//! settings answer only requests bearing it ([`guarded`]).
//!
//! How Wilbur's fields map onto this server, where they differ:
//! - `remoteAddress` is the client's IP address without port, as Wilbur's
//!   `request.socket.remoteAddress`; an IPv4 client of a dual-stack listener shows as
//!   `::ffff:a.b.c.d` there and here. It is the address the listener determined at open.
//! - An SFU is listed among the streamers (`type: "SFU"`, its endpoint id) and among the players
//!   (`type: "SFU"`, its player id), and counts in both counts, as Wilbur registers it in both.
//! - Lists and each streamer's `subscribers` are in connection order, Wilbur's registry order.
//! - `subscribedTo` is absent when not subscribed, as Wilbur's `undefined` is.
//! - `/api/status`: `uptime` is milliseconds since the server started, as in Wilbur; `version` is
//!   this server's version, not Wilbur's package version.
//! - `/api/config` is Wilbur's `{config, protocolConfig}`: `config` holds the keys of Wilbur's
//!   `IServerConfig` (the ports as bound, `peerOptions`, `maxSubscribers`); Wilbur's `httpServer`
//!   objects have no equivalent. Any value under a key naming a credential, secret, password or
//!   token is replaced by `"[redacted]"`; `[ice]` settings (TURN secret and credential) are not
//!   part of it at all.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::cluster::bridge::{Answer, Answers, Query};
use crate::reload::Live;
use crate::router::snapshot::{PlayerInfo, StreamerInfo};
use crate::router::{Role, Router};
use crate::router_task::RouterHandle;

/// The OpenAPI 3.1 document of exactly the routes in [`table`] (a test keeps them in line).
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// Reads of the tables that may wait for the router task at once; more wait here, off the
/// task's queue. Each read is one pass over the connections it lists (`router::snapshot`), so
/// however many clients poll, the API holds at most this many places in the router's queue.
pub(crate) const MAX_READS_IN_FLIGHT: usize = 8;

/// What `/api/config` reports besides the tables.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub streamer_port: u16,
    pub player_port: u16,
    pub sfu_port: u16,
    pub peer_options: Map<String, Value>,
    pub max_players: u32,
    /// `admin_token`: required as `Authorization: Bearer` by the routes that reveal addresses
    /// or settings ([`guarded`]); empty requires none.
    pub admin_token: String,
}

/// The REST API's state: a way to the router task and what is fixed at start.
#[derive(Debug, Clone)]
pub struct Rest {
    router: RouterHandle,
    /// The `/api/config` body, built once with its secrets redacted.
    config: Arc<Value>,
    started: Instant,
    reads: Arc<Semaphore>,
    /// Empty requires none; read at each request, so a reload reaches the next one.
    admin_token: Live<str>,
}

impl Rest {
    pub fn new(router: RouterHandle, settings: &Settings) -> Self {
        Self {
            router,
            config: Arc::new(config_body(settings)),
            started: Instant::now(),
            reads: Arc::new(Semaphore::new(MAX_READS_IN_FLIGHT)),
            admin_token: Live::fixed(
                crate::config::Config {
                    admin_token: settings.admin_token.clone(),
                    ..crate::config::Config::default()
                },
                |c| c.admin_token.as_str(),
            ),
        }
    }

    /// The admin token from the live configuration (the server's, which a reload changes).
    pub(crate) fn with_admin_token(mut self, admin_token: Live<str>) -> Self {
        self.admin_token = admin_token;
        self
    }

    /// Runs `read` on the router task; a 503 if the task has ended (shutdown).
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Router) -> T + Send + 'static,
    ) -> Result<T, Response> {
        let unavailable = || {
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is shutting down.",
            )
        };
        let Ok(_permit) = self.reads.acquire().await else {
            return Err(unavailable());
        };
        self.router.inspect(read).await.ok_or_else(unavailable)
    }

    /// In a cluster, every node's answer to `query` (each node reports its own peers); `None`
    /// on a node alone, which then reads its tables as [`Self::read`].
    async fn gather(&self, query: Query) -> Option<Answers> {
        let _permit = self.reads.acquire().await.ok()?;
        self.router.gather(query).await
    }
}

/// Every route of the API: the paths here are the ones the OpenAPI document lists.
pub(crate) fn table() -> [(&'static str, MethodRouter<Rest>); 7] {
    [
        ("/api/status", get(status)),
        ("/api/streamers", get(streamers)),
        ("/api/streamers/{streamerId}", get(streamer)),
        ("/api/players", get(players)),
        ("/api/players/{playerId}", get(player)),
        ("/api/config", get(config)),
        ("/api/api-definition", get(api_definition)),
    ]
}

/// The API's routes, or none when it is off (its paths then fall through to the 404).
pub fn routes(rest: Option<Rest>) -> axum::Router {
    let Some(rest) = rest else {
        return axum::Router::new();
    };
    table()
        .into_iter()
        .fold(axum::Router::new(), |router, (path, method)| {
            let method = if guarded(path) {
                method.route_layer(axum::middleware::from_fn_with_state(
                    rest.clone(),
                    require_admin,
                ))
            } else {
                method
            };
            router.route(path, method)
        })
        .with_state(rest)
}

/// The routes that reveal client addresses (the lists of streamers and players) or settings
/// (`/api/config`, whose `peerOptions` may hold TURN credentials): with `admin_token` set they
/// answer only a request bearing it. `/api/status` and the API's definition stay open.
fn guarded(path: &str) -> bool {
    !matches!(path, "/api/status" | "/api/api-definition")
}

/// 401 unless the request bears `admin_token` (when one is set).
async fn require_admin(
    State(rest): State<Rest>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let expected = rest.admin_token.get();
    match admin_refusal(
        Some(&*expected).filter(|t| !t.is_empty()),
        request.headers(),
    ) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

/// The 401 for a request without `Authorization: Bearer <admin_token>`, when a token is set
/// (`/api`'s guarded routes and `/metrics`); `None` lets the request through.
pub(crate) fn admin_refusal(
    admin_token: Option<&str>,
    headers: &axum::http::HeaderMap,
) -> Option<Response> {
    let expected = admin_token?;
    let authorization = headers.get_all(header::AUTHORIZATION);
    if crate::auth::bearer_presents(authorization.iter().map(|v| v.as_bytes()), expected) {
        return None;
    }
    let mut response = message(
        StatusCode::UNAUTHORIZED,
        "This route needs the admin token: Authorization: Bearer <admin_token>.",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    Some(response)
}

/// Wilbur's error body, `{"message": "..."}`.
fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({ "message": text.into() }))).into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlayerJson<'a> {
    player_id: &'a str,
    /// In a cluster, the node the peer is connected to (absent on a node alone, as in Wilbur).
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribed_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_address: Option<IpAddr>,
}

impl<'a> From<&'a PlayerInfo> for PlayerJson<'a> {
    fn from(p: &'a PlayerInfo) -> Self {
        Self {
            player_id: &p.player_id,
            node: None,
            kind: type_name(p.role),
            subscribed_to: p.subscribed_to.as_deref(),
            remote_address: p.remote,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StreamerJson<'a> {
    streamer_id: &'a str,
    /// In a cluster, the node the peer is connected to (absent on a node alone, as in Wilbur).
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    streaming: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_address: Option<IpAddr>,
    subscribers: Vec<PlayerJson<'a>>,
}

impl<'a> From<&'a StreamerInfo> for StreamerJson<'a> {
    fn from(s: &'a StreamerInfo) -> Self {
        Self {
            streamer_id: &s.streamer_id,
            node: None,
            kind: type_name(s.role),
            streaming: s.streaming,
            remote_address: s.remote,
            subscribers: s.subscribers.iter().map(PlayerJson::from).collect(),
        }
    }
}

/// Wilbur's `type` values.
fn type_name(role: Role) -> &'static str {
    match role {
        Role::Streamer => "Streamer",
        Role::Player => "Player",
        Role::Sfu => "SFU",
    }
}

/// The streamers of every node, each with its node's name.
fn cluster_streamers(answers: &Answers) -> Vec<StreamerJson<'_>> {
    let mut out = Vec::new();
    for (node, answer) in answers {
        if let Answer::Streamers(list) = answer {
            out.extend(list.iter().map(|s| StreamerJson {
                node: Some(node),
                ..StreamerJson::from(s)
            }));
        }
    }
    out
}

/// The players of every node, each with its node's name.
fn cluster_players(answers: &Answers) -> Vec<PlayerJson<'_>> {
    let mut out = Vec::new();
    for (node, answer) in answers {
        if let Answer::Players(list) = answer {
            out.extend(list.iter().map(|p| PlayerJson {
                node: Some(node),
                ..PlayerJson::from(p)
            }));
        }
    }
    out
}

/// `GET /api/status`.
async fn status(State(rest): State<Rest>) -> Response {
    let uptime = u64::try_from(rest.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Some(answers) = rest.gather(Query::Counts).await {
        // The whole cluster's counts, and each node's.
        let nodes: Vec<Value> = answers
            .iter()
            .filter_map(|(node, answer)| match answer {
                Answer::Counts(c) => Some(json!({
                    "node": &**node,
                    "streamer_count": c.streamers,
                    "player_count": c.players,
                })),
                _ => None,
            })
            .collect();
        let sum = |key: &str| nodes.iter().filter_map(|n| n[key].as_u64()).sum::<u64>();
        return Json(json!({
            "uptime": uptime,
            "streamer_count": sum("streamer_count"),
            "player_count": sum("player_count"),
            "version": env!("CARGO_PKG_VERSION"),
            "nodes": nodes,
        }))
        .into_response();
    }
    let counts = match rest.read(Router::api_counts).await {
        Ok(counts) => counts,
        Err(response) => return response,
    };
    Json(json!({
        "uptime": uptime,
        "streamer_count": counts.streamers,
        "player_count": counts.players,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// `GET /api/streamers`.
async fn streamers(State(rest): State<Rest>) -> Response {
    if let Some(answers) = rest.gather(Query::Streamers).await {
        return Json(cluster_streamers(&answers)).into_response();
    }
    match rest.read(Router::streamers).await {
        Ok(list) => Json(list.iter().map(StreamerJson::from).collect::<Vec<_>>()).into_response(),
        Err(response) => response,
    }
}

/// `GET /api/streamers/{streamerId}`.
async fn streamer(State(rest): State<Rest>, id: Result<Path<String>, PathRejection>) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(e) => return message(StatusCode::BAD_REQUEST, format!("Bad streamer id: {e}")),
    };
    if let Some(answers) = rest.gather(Query::Streamers).await {
        return match cluster_streamers(&answers)
            .into_iter()
            .find(|s| s.streamer_id == id)
        {
            Some(s) => Json(s).into_response(),
            None => message(
                StatusCode::NOT_FOUND,
                format!("No streamer id matches {id}."),
            ),
        };
    }
    let wanted = id.clone();
    match rest.read(move |router| router.streamer(&wanted)).await {
        Ok(Some(s)) => Json(StreamerJson::from(&s)).into_response(),
        Ok(None) => message(
            StatusCode::NOT_FOUND,
            format!("No streamer id matches {id}."),
        ),
        Err(response) => response,
    }
}

/// `GET /api/players`.
async fn players(State(rest): State<Rest>) -> Response {
    if let Some(answers) = rest.gather(Query::Players).await {
        return Json(cluster_players(&answers)).into_response();
    }
    match rest.read(Router::players).await {
        Ok(list) => Json(list.iter().map(PlayerJson::from).collect::<Vec<_>>()).into_response(),
        Err(response) => response,
    }
}

/// `GET /api/players/{playerId}`.
async fn player(State(rest): State<Rest>, id: Result<Path<String>, PathRejection>) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(e) => return message(StatusCode::BAD_REQUEST, format!("Bad player id: {e}")),
    };
    if let Some(answers) = rest.gather(Query::Players).await {
        return match cluster_players(&answers)
            .into_iter()
            .find(|p| p.player_id == id)
        {
            Some(p) => Json(p).into_response(),
            None => message(StatusCode::NOT_FOUND, format!("No player ID matches {id}.")),
        };
    }
    let wanted = id.clone();
    match rest.read(move |router| router.player(&wanted)).await {
        Ok(Some(p)) => Json(PlayerJson::from(&p)).into_response(),
        Ok(None) => message(StatusCode::NOT_FOUND, format!("No player ID matches {id}.")),
        Err(response) => response,
    }
}

/// `GET /api/config`.
async fn config(State(rest): State<Rest>) -> Response {
    Json(&*rest.config).into_response()
}

/// `GET /api/api-definition`.
async fn api_definition() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Wilbur's `/api/config` body: `config` as its `IServerConfig`, `protocolConfig` as the
/// `config` message carries it, both with secrets redacted.
fn config_body(settings: &Settings) -> Value {
    let mut peer_options = Value::Object(settings.peer_options.clone());
    redact(&mut peer_options);
    json!({
        "config": {
            "streamerPort": settings.streamer_port,
            "playerPort": settings.player_port,
            "sfuPort": settings.sfu_port,
            "peerOptions": peer_options,
            "maxSubscribers": settings.max_players,
        },
        "protocolConfig": {
            "protocolVersion": protocol::PROTOCOL_VERSION,
            "peerConnectionOptions": peer_options,
        },
    })
}

/// What replaces a secret's value.
pub(crate) const REDACTED: &str = "[redacted]";

/// Replaces, at any depth, the value of every key that names a secret (an `RTCIceServer`'s
/// `credential`, and anything called a secret, password or token) by [`REDACTED`].
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                if ["credential", "secret", "password", "token"]
                    .iter()
                    .any(|word| key.contains(word))
                {
                    *value = Value::String(REDACTED.to_owned());
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}
