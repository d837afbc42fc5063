//! The session API's routes on the player port: `GET /iceServers`, `POST|DELETE
//! /register/{session}/{peer}`, `GET /events/{session}/{peer}` (SSE) and `POST
//! /message/{session}/{peer}`, with CORS, a body limit and a body read timeout. Handlers only
//! translate HTTP to the sessions task's requests and its answers (or refusals) to JSON; they
//! keep no state.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use base64::Engine as _;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio_stream::wrappers::ReceiverStream;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tracing::{debug, info, warn};

use super::RemoteAddr;
use crate::auth::LiveGate;
use crate::config::SessionsConfig;
use crate::ice::{self, Ice};
use crate::metrics::Limit;
use crate::sessions::task::{Credential, OpenedStream, RequestError, SessionsHandle};
use crate::sessions::{Registered, SessionError, validate_id};

/// What the session routes need: the sessions task, the ICE servers and the settings.
#[derive(Debug, Clone)]
pub struct Api {
    pub sessions: SessionsHandle,
    pub ice: Arc<Ice>,
    pub settings: Arc<SessionsConfig>,
    /// The player gate, whose JWT verifier (when a key is set) every route requires.
    pub(crate) auth: LiveGate,
}

/// The session API's routes, with CORS and the body limit applied to them only.
pub fn routes(api: Api) -> axum::Router {
    let settings = api.settings.clone();
    let router = axum::Router::new()
        .route("/iceServers", get(ice_servers))
        .route(
            "/register/{session}/{peer}",
            post(register).delete(unregister),
        )
        .route("/events/{session}/{peer}", get(events))
        .route("/message/{session}/{peer}", post(message))
        .layer(axum::middleware::from_fn(
            crate::accept::limits::count_session,
        ))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .with_state(api);
    match cors(&settings.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// CORS for `origins` (`["*"]` any, `[]` none), answering preflights for the API's methods
/// and the headers an EventSource or `fetch` with JSON sends.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        // validate() checked each origin is printable ASCII, so every one converts.
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        if list.is_empty() {
            return None;
        }
        AllowOrigin::list(list)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// `{"error": "..."}` with `status`; a limit also names its key and value.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn limit_error(
    status: StatusCode,
    message: impl std::fmt::Display,
    key: &str,
    max: impl serde::Serialize,
) -> Response {
    (
        status,
        Json(json!({ "error": message.to_string(), "limit": key, "max": max })),
    )
        .into_response()
}

/// The one mapping from a refusal to its HTTP status. A limit's 429 carries the [`Limit`] for
/// the metrics.
fn refused(error: RequestError) -> Response {
    let limit = match &error {
        RequestError::Refused(e) => limit_of(e),
        RequestError::Unavailable(_) => None,
    };
    let mut response = refusal(error);
    if let Some(limit) = limit {
        response.extensions_mut().insert(limit);
    }
    response
}

/// The limit a session API refusal is, if it is one.
fn limit_of(e: &SessionError) -> Option<Limit> {
    Some(match e {
        SessionError::TooManySessions { .. } => Limit::MaxSessions,
        SessionError::TooManySessionsFromAddress { .. } => Limit::MaxSessionsPerAddress,
        SessionError::SessionFull { .. } => Limit::MaxPeersPerSession,
        SessionError::QueueFull { .. } => Limit::MaxQueuedEvents,
        SessionError::PeerBytesFull { .. } => Limit::MaxPeerEventBytes,
        SessionError::ServerBytesFull { .. } => Limit::MaxEventBytes,
        _ => return None,
    })
}

fn refusal(error: RequestError) -> Response {
    let e = match error {
        RequestError::Unavailable(e) => return self::error(StatusCode::SERVICE_UNAVAILABLE, e),
        RequestError::Refused(e) => e,
    };
    match &e {
        SessionError::InvalidId { .. } | SessionError::BadLastEventId => {
            self::error(StatusCode::BAD_REQUEST, &e)
        }
        SessionError::TooManySessions { limit } => {
            limit_error(StatusCode::TOO_MANY_REQUESTS, &e, "max_sessions", *limit)
        }
        SessionError::TooManySessionsFromAddress { limit } => limit_error(
            StatusCode::TOO_MANY_REQUESTS,
            &e,
            "max_sessions_per_address",
            *limit,
        ),
        SessionError::SessionFull { limit, .. } => limit_error(
            StatusCode::TOO_MANY_REQUESTS,
            &e,
            "max_peers_per_session",
            *limit,
        ),
        SessionError::QueueFull { limit, .. } => limit_error(
            StatusCode::TOO_MANY_REQUESTS,
            &e,
            "max_queued_events",
            *limit,
        ),
        SessionError::PeerBytesFull { limit, .. } => limit_error(
            StatusCode::TOO_MANY_REQUESTS,
            &e,
            "max_peer_event_bytes",
            *limit,
        ),
        SessionError::ServerBytesFull { limit } => {
            limit_error(StatusCode::TOO_MANY_REQUESTS, &e, "max_event_bytes", *limit)
        }
        SessionError::UnknownSession(_)
        | SessionError::UnknownPeer { .. }
        | SessionError::UnknownTarget { .. } => self::error(StatusCode::NOT_FOUND, &e),
        SessionError::SenderNotRegistered { .. } | SessionError::WrongPeerToken { .. } => {
            self::error(StatusCode::FORBIDDEN, &e)
        }
    }
}

/// The tokens a request presents (`?token=`, `Authorization: Bearer`), once it has passed the
/// JWT check: with a JWT key set, one of them must be a valid JWT (401 otherwise, with
/// `WWW-Authenticate: Bearer`) whose `sessions` and `peer` claims allow `session` and `peer`
/// (403 otherwise). `session` is `None` for `/iceServers`.
#[allow(clippy::result_large_err)] // The Err is the response itself, returned at once.
fn credentials(
    api: &Api,
    uri: &Uri,
    headers: &HeaderMap,
    session: Option<&str>,
    peer: &str,
) -> Result<Vec<String>, Response> {
    let authorization = headers.get_all(header::AUTHORIZATION);
    let presented: Vec<String> =
        crate::auth::presented(uri.query(), authorization.iter().map(HeaderValue::as_bytes))
            .map(std::borrow::Cow::into_owned)
            .collect();
    let Some(verifier) = api.auth.load().jwt.clone() else {
        return Ok(presented);
    };
    let mut why = crate::auth::Denied::Missing;
    for token in presented.iter().filter(|t| crate::auth::looks_like_jwt(t)) {
        match verifier.verify(token) {
            Ok(claims) if claims.allows(session, peer) => return Ok(presented),
            Ok(_) => {
                warn!(
                    session,
                    peer, "session API: the JWT does not allow this session or peer; 403"
                );
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "the token's sessions or peer claim does not allow this session or peer",
                ));
            }
            Err(rejected) => why = crate::auth::Denied::Jwt(rejected),
        }
    }
    warn!(session, peer, "session API: {}; 401", why.reason());
    let mut response = error(StatusCode::UNAUTHORIZED, why.reason());
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Err(response)
}

/// A new random peer token (32 bytes, base64url), with `peer_tokens`.
fn fresh_token(api: &Api) -> Result<Option<String>, getrandom::Error> {
    if !api.settings.peer_tokens {
        return Ok(None);
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(Some(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ))
}

fn ok(message: &str) -> Response {
    (StatusCode::OK, Json(json!({ "message": message }))).into_response()
}

/// The path's two ids, or a 400 naming what is wrong.
#[allow(clippy::result_large_err)] // The Err is the response itself, returned at once.
fn ids(path: Result<Path<(String, String)>, PathRejection>) -> Result<(String, String), Response> {
    let Path((session, peer)) =
        path.map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad path: {e}")))?;
    for (which, id) in [("session", &session), ("peer", &peer)] {
        validate_id(id).map_err(|reason| {
            error(
                StatusCode::BAD_REQUEST,
                SessionError::InvalidId { which, reason },
            )
        })?;
    }
    Ok((session, peer))
}

#[derive(Debug, Deserialize)]
struct IceQuery {
    #[serde(rename = "peerId")]
    peer_id: Option<String>,
}

/// `GET /iceServers[?peerId=ID]`: one `RTCIceServer` entry; with a TURN secret its credentials
/// are fresh and name `peerId` (or "anonymous").
async fn ice_servers(
    State(api): State<Api>,
    query: Result<Query<IceQuery>, QueryRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let id = match query {
        Ok(Query(q)) => q.peer_id.unwrap_or_else(|| "anonymous".to_owned()),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad query: {e}")),
    };
    if let Err(reason) = validate_id(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            SessionError::InvalidId {
                which: "peerId",
                reason,
            },
        );
    }
    if let Err(response) = credentials(&api, &uri, &headers, None, &id) {
        return response;
    }
    debug!(peer = id, "iceServers");
    Json(api.ice.server(&id, ice::unix_now())).into_response()
}

/// `POST /register/{session}/{peer}`: always 200, for a new session too (clients check for
/// 200); registering again is a no-op that keeps the peer's queue. A new session counts
/// against its creator's address until it is removed.
async fn register(
    State(api): State<Api>,
    remote: Option<Extension<RemoteAddr>>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (session, peer) = match ids(path) {
        Ok(ids) => ids,
        Err(response) => return response,
    };
    let presented = match credentials(&api, &uri, &headers, Some(&session), &peer) {
        Ok(presented) => presented,
        Err(response) => return response,
    };
    let fresh = match fresh_token(&api) {
        Ok(fresh) => fresh,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no random bytes for a peer token: {e}"),
            );
        }
    };
    let credential = Credential { presented, fresh };
    // Without a socket (a test calling the router directly) every request shares one address.
    let client = remote.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |r| r.0.0.ip());
    match api
        .sessions
        .register(&session, &peer, client, credential)
        .await
    {
        Ok((registered, token)) => {
            if registered == Registered::Again {
                debug!(session, peer, "register: already registered");
            }
            let message = "session registered successfully";
            match token {
                Some(token) => Json(json!({ "message": message, "token": token })).into_response(),
                None => ok(message),
            }
        }
        Err(e) => {
            warn!(session, peer, %client, "register refused: {e}");
            refused(e)
        }
    }
}

/// `DELETE /register/{session}/{peer}`.
async fn unregister(
    State(api): State<Api>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (session, peer) = match ids(path) {
        Ok(ids) => ids,
        Err(response) => return response,
    };
    let presented = match credentials(&api, &uri, &headers, Some(&session), &peer) {
        Ok(presented) => presented,
        Err(response) => return response,
    };
    match api.sessions.unregister(&session, &peer, presented).await {
        Ok(()) => ok("peer unregistered successfully"),
        Err(e) => {
            debug!(session, peer, "unregister refused: {e}");
            refused(e)
        }
    }
}

/// `GET /events/{session}/{peer}`: the peer's event stream; `Last-Event-ID` resumes after it.
async fn events(
    State(api): State<Api>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (session, peer) = match ids(path) {
        Ok(ids) => ids,
        Err(response) => return response,
    };
    let presented = match credentials(&api, &uri, &headers, Some(&session), &peer) {
        Ok(presented) => presented,
        Err(response) => return response,
    };
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => match value.to_str().ok().and_then(|v| v.trim().parse().ok()) {
            Some(id) => Some(id),
            None => return refused(SessionError::BadLastEventId.into()),
        },
    };
    match api
        .sessions
        .open_stream(&session, &peer, presented, last_event_id)
        .await
    {
        Ok(opened) => {
            info!(session, peer, stream = %opened.stream, ?last_event_id, "event stream opened");
            sse(opened, api.settings.keepalive)
        }
        Err(e) => {
            debug!(session, peer, "event stream refused: {e}");
            refused(e)
        }
    }
}

/// The backlog, then live events, each as `id:` + one `data:` line; keep-alive comments.
fn sse(opened: OpenedStream, keepalive: Duration) -> Response {
    let OpenedStream { events, guard, .. } = opened;
    let stream = ReceiverStream::new(events).map(move |event| {
        // hyper asks for the next event only when it has room for it, so this is where the
        // event leaves the task's window. The guard lives as long as the body: dropping it
        // reports the stream closed.
        guard.written(event.id);
        Ok::<_, Infallible>(
            SseEvent::default()
                .id(event.id.to_string())
                .data(&*event.data),
        )
    });
    let sse = Sse::new(stream);
    let mut response = if keepalive.is_zero() {
        sse.into_response()
    } else {
        sse.keep_alive(KeepAlive::new().interval(keepalive).text("keep-alive"))
            .into_response()
    };
    // nginx buffers responses unless told not to.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[derive(Debug, Deserialize)]
struct MessageBody {
    target: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    payload: Option<Box<RawValue>>,
}

/// `POST /message/{session}/{peer}` with `{"target", "type", "payload"}`. The body must arrive
/// within `body_read_timeout`, or the answer is 408 and the connection closes.
async fn message(
    State(api): State<Api>,
    remote: Option<Extension<RemoteAddr>>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    let (session, from) = match ids(path) {
        Ok(ids) => ids,
        Err(response) => return response,
    };
    let presented = match credentials(
        &api,
        request.uri(),
        request.headers(),
        Some(&session),
        &from,
    ) {
        Ok(presented) => presented,
        Err(response) => return response,
    };
    let read = Bytes::from_request(request, &api);
    let limit = api.settings.body_read_timeout;
    let body = if limit.is_zero() {
        read.await
    } else if let Ok(body) = tokio::time::timeout(limit, read).await {
        body
    } else {
        let remote = remote.map(|r| r.0.0);
        warn!(
            session,
            from,
            ?remote,
            "message body not received within {limit:?}; refused"
        );
        let mut response = limit_error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s (body_read_timeout)",
                limit.as_secs_f64()
            ),
            "body_read_timeout",
            limit.as_secs_f64(),
        );
        // The rest of the body may never come: the connection cannot carry another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    };
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let max = api.settings.max_body_bytes;
            warn!(session, from, "message body over {max} bytes; refused");
            return limit_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {max} bytes (max_body_bytes)"),
                "max_body_bytes",
                max,
            );
        }
        Err(e) => return error(e.status(), format!("cannot read the body: {e}")),
    };
    let parsed: MessageBody = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a JSON object with target, type and payload: {e}"),
            );
        }
    };
    let Some(target) = parsed.target else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing `target` (the peer id to send to)",
        );
    };
    let Some(kind) = parsed.kind else {
        return error(StatusCode::BAD_REQUEST, "missing `type`");
    };
    match api
        .sessions
        .message(&session, &from, presented, target, kind, parsed.payload)
        .await
    {
        Ok(()) => ok("Message sent"),
        Err(e) => {
            debug!(session, from, "message refused: {e}");
            refused(e)
        }
    }
}
