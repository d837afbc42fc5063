//! The player port: an HTTP server that upgrades WebSocket requests on any path to the player
//! protocol, serves the session API ([`api`]), Wilbur's REST API ([`rest`], when on),
//! `/healthz` and `/readyz` (`health`) and static files ([`static_files`]), with Wilbur's CORS
//! ([`cors`]) and the client's address taken through trusted reverse proxies ([`client_addr`]).

pub mod api;
pub mod client_addr;
pub mod cors;
mod health;
pub mod pages;
pub mod rest;
#[cfg(test)]
mod rest_tests;
pub mod static_files;
pub mod upgrade;
mod write_timeout;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::cors::CorsLayer;
use tracing::{debug, warn};

use self::client_addr::{Client, ReverseProxy, client_addr};
use self::cors::{Cors, CorsError};
use self::static_files::{Files, StaticFiles};
use self::write_timeout::WriteTimeout;
use crate::connection;
use crate::listener::{Acceptor, UPGRADE_TIMEOUT, first_subprotocol};
use crate::reframe::Reframe;
use crate::router::Role;

/// The most hyper buffers per HTTP connection, each way: a request head, and what it has taken
/// from a response body and not yet written. hyper's default (about 400 KiB) let each event
/// stream whose client stopped reading hold that much; a head never needs more than this.
const HTTP_BUFFER: usize = 64 * 1024;

/// The client's address: the TCP peer's, or with `reverse_proxy` on, the one the trusted
/// proxies forwarded ([`client_addr`]; port 0 when they gave none).
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// The player port's plain-HTTP settings, beside the session API's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Web {
    pub static_files: StaticFiles,
    pub cors: Cors,
    pub reverse_proxy: ReverseProxy,
    /// What the built-in pages ([`pages`]) need: the streamer port the server bound.
    pub pages: pages::Settings,
}

/// [`Web`] checked and built, once, at start.
#[derive(Debug, Clone)]
pub struct Site {
    files: Arc<Files>,
    cors: Option<CorsLayer>,
    hops: u32,
    pages: pages::Settings,
}

impl Web {
    /// Builds what the routes use; logs a warning for each static folder that is missing.
    pub fn build(&self) -> Result<Site, CorsError> {
        let cors = self.cors.layer()?;
        for warning in self.static_files.startup_warnings() {
            warn!("{warning}");
        }
        Ok(Site {
            files: self.static_files.service(),
            cors,
            hops: self.reverse_proxy.hops(),
            pages: self.pages,
        })
    }
}

impl Site {
    /// The same site with the built-in pages' settings replaced (the streamer port is known
    /// only once bound, after [`Web::build`] has said its warnings).
    #[must_use]
    pub fn with_pages(mut self, pages: pages::Settings) -> Self {
        self.pages = pages;
        self
    }
}

/// The player port's routes. A WebSocket upgrade is served before any route, so it works on
/// every path, the API's and the static files' included. The session API keeps its own CORS
/// (`[sessions] cors_origins`); Wilbur's CORS covers every other route: `/api`, `/healthz`,
/// `/readyz`, static files and 404s.
pub fn app(
    acceptor: Acceptor,
    api: api::Api,
    rest: Option<rest::Rest>,
    site: &Site,
) -> axum::Router {
    let shutdown = acceptor.shared.shutdown.clone();
    let files = site.files.clone();
    let mut web = axum::Router::new()
        .route("/healthz", axum::routing::get(health::healthz))
        .route(
            "/readyz",
            axum::routing::get(move || health::readyz(shutdown.clone())),
        )
        .merge(rest::routes(rest))
        .merge(pages::routes(site.pages))
        .fallback(move |request: Request| pages::static_files_or_player(files.clone(), request));
    if let Some(cors) = &site.cors {
        web = web.layer(cors.clone());
    }
    api::routes(api)
        .merge(web)
        .layer(axum::middleware::from_fn_with_state(
            acceptor,
            upgrade_first,
        ))
}

/// What each player-port connection needs besides the routes.
#[derive(Debug)]
struct Port {
    /// A response write that makes no progress for this long closes the connection.
    write_timeout: Duration,
    /// Reverse proxies trusted ([`ReverseProxy::hops`]).
    hops: u32,
}

/// The client's address for an upgrade whose request head is `head`. Not inlined into
/// [`serve_socket`], whose future every player connection holds: its locals would make it larger.
#[inline(never)]
fn upgrade_client(hops: u32, socket: SocketAddr, head: &[u8]) -> SocketAddr {
    if hops == 0 {
        return socket;
    }
    let forwarding = upgrade::forwarding(head);
    resolve_client(
        hops,
        socket,
        forwarding.x_forwarded_for.iter().map(Vec::as_slice),
        forwarding.forwarded.iter().map(Vec::as_slice),
    )
}

/// The client's address for a request from `socket` with these forwarding header lines.
fn resolve_client<'a, X, F>(
    hops: u32,
    socket: SocketAddr,
    x_forwarded_for: X,
    forwarded: F,
) -> SocketAddr
where
    X: IntoIterator<Item = &'a [u8]>,
    X::IntoIter: DoubleEndedIterator,
    F: IntoIterator<Item = &'a [u8]>,
    F::IntoIter: DoubleEndedIterator,
{
    let client = client_addr(hops, socket, x_forwarded_for, forwarded);
    if let Client::Malformed { entry, .. } = &client {
        warn!(%socket, entry, "reverse_proxy: the forwarded client address is not an IP address; using the socket's");
    }
    client.addr()
}

async fn upgrade_first(
    State(acceptor): State<Acceptor>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if is_websocket_upgrade(request.headers()) {
        return upgrade(acceptor, request);
    }
    next.run(request).await
}

pub(crate) async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

fn upgrade(acceptor: Acceptor, mut request: Request) -> Response {
    let headers = request.headers();
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Version must be 13\n",
        )
            .into_response();
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n").into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let protocol = first_subprotocol(headers.get(header::SEC_WEBSOCKET_PROTOCOL));
    let remote = request
        .extensions()
        .get::<RemoteAddr>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |r| r.0);
    let opening = upgrade::opening(request.uri().query());
    let on_upgrade = hyper::upgrade::on(&mut request);
    let config = acceptor.shared.settings.websocket_config();
    let tracker = acceptor.tracker.clone();
    tracker.spawn(async move {
        let upgraded = tokio::select! {
            () = acceptor.shared.shutdown.cancelled() => return,
            r = on_upgrade => match r {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    debug!(%remote, "player upgrade failed: {e}");
                    return;
                }
            },
        };
        let ws = WebSocketStream::from_raw_socket(
            Reframe::frames(TokioIo::new(upgraded), Vec::new()),
            WsRole::Server,
            Some(config),
        )
        .await;
        let conn = acceptor.next_conn_id();
        connection::run(ws, conn, Role::Player, opening, remote, acceptor.shared).await;
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(protocol) = protocol {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Serves HTTP on the player port until shutdown.
pub async fn serve(
    listener: TcpListener,
    acceptor: Acceptor,
    api: api::Api,
    rest: Option<rest::Rest>,
    site: Site,
) {
    // One Arc for both: every player connection's task keeps serve_socket's arguments for its
    // whole life, and 8 more bytes there cost a 128-byte step of tokio's task cell.
    let port = Arc::new(Port {
        write_timeout: api.settings.stream_write_timeout,
        hops: site.hops,
    });
    let app = app(acceptor.clone(), api, rest, &site);
    loop {
        let accepted = tokio::select! {
            () = acceptor.shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(role = "player", "accept failed: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        acceptor.tracker.spawn(serve_socket(
            stream,
            remote,
            app.clone(),
            acceptor.clone(),
            port.clone(),
        ));
    }
}

/// One player-port connection: a WebSocket upgrade becomes a player connection directly (see
/// [`upgrade`]); anything else is served by hyper and the routes of [`app`], with
/// the port's `write_timeout` on its writes.
async fn serve_socket(
    mut stream: TcpStream,
    remote: SocketAddr,
    app: axum::Router,
    acceptor: Acceptor,
    port: Arc<Port>,
) {
    let shutdown = acceptor.shared.shutdown.clone();
    let mut head = Vec::with_capacity(1024);
    let read = tokio::select! {
        () = shutdown.cancelled() => return,
        read = tokio::time::timeout(UPGRADE_TIMEOUT, upgrade::read_head(&mut stream, &mut head)) => read,
    };
    let head_kind = match read {
        Ok(Ok(Some(kind))) => kind,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            debug!(%remote, "reading the request failed: {e}");
            return;
        }
        Err(_) => {
            debug!(%remote, "no complete request within {UPGRADE_TIMEOUT:?}; dropped");
            return;
        }
    };
    match head_kind {
        upgrade::Head::Upgrade {
            response,
            head_len,
            opening,
        } => {
            let remote = upgrade_client(port.hops, remote, head.get(..head_len).unwrap_or(&head));
            if let Err(e) = stream.write_all(response.as_bytes()).await {
                debug!(%remote, "player upgrade failed: {e}");
                return;
            }
            let early_frames = head.split_off(head_len.min(head.len()));
            drop(head);
            let config = acceptor.shared.settings.websocket_config();
            let ws = WebSocketStream::from_raw_socket(
                Reframe::frames(stream, early_frames),
                WsRole::Server,
                Some(config),
            )
            .await;
            let conn = acceptor.next_conn_id();
            connection::run(ws, conn, Role::Player, opening, remote, acceptor.shared).await;
        }
        upgrade::Head::Reject(reason) => {
            debug!(%remote, "refused upgrade: {}", reason.trim_end());
            let _ = stream
                .write_all(upgrade::bad_request(reason).as_bytes())
                .await;
            let _ = stream.shutdown().await;
        }
        upgrade::Head::Other => {
            // Boxed: hyper's connection future is large, and inline it would make every player
            // connection's task as big as an HTTP one.
            let io = WriteTimeout::new(
                upgrade::Rewind::new(head, stream),
                port.write_timeout,
                remote,
            );
            Box::pin(serve_http(io, remote, app, shutdown, port.hops)).await;
        }
    }
}

/// Serves HTTP/1.1 on one connection (the session API, 404s, and upgrades that follow another
/// request on a kept-alive connection) until it ends or the server shuts down.
async fn serve_http<S>(
    io: S,
    remote: SocketAddr,
    app: axum::Router,
    shutdown: CancellationToken,
    hops: u32,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let client = if hops == 0 {
                remote
            } else {
                let headers = request.headers();
                resolve_client(
                    hops,
                    remote,
                    headers
                        .get_all("x-forwarded-for")
                        .iter()
                        .map(HeaderValue::as_bytes),
                    headers
                        .get_all(header::FORWARDED)
                        .iter()
                        .map(HeaderValue::as_bytes),
                )
            };
            request.extensions_mut().insert(RemoteAddr(client));
            app.clone().oneshot(request.map(Body::new))
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(UPGRADE_TIMEOUT)
        .max_buf_size(HTTP_BUFFER)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        r = connection.as_mut() => if let Err(e) = r { debug!(%remote, "HTTP connection ended: {e}"); },
        () = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
    }
}

#[cfg(test)]
mod tests;
