//! Where sockets become connections, for every port: the accept loop (with back-off), the
//! handshake deadline, optional TLS, the WebSocket handshake with one set of checks
//! ([`handshake`]), and the start of each connection's task. A player port's plain HTTP
//! requests go on to hyper and the axum app of [`crate::http`]; an upgrade that follows such a
//! request on a kept-alive connection passes the same checks ([`upgrade_later`]).

pub(crate) mod handshake;
pub(crate) mod limits;
mod stream;
mod write_timeout;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use self::handshake::{Head, Policy, Refusal, Verdict};
use self::limits::{Guards, LimitRefusal, Limits, PortLimits, admit_upgrade};
use self::stream::{Rewind, Stream};
use self::write_timeout::WriteTimeout;
use crate::auth::{Gate, LiveGate};
use crate::connection::{self, Shared};
use crate::http::RemoteAddr;
use crate::http::client_addr::{Client, client_addr};
use crate::reframe::Reframe;
use crate::router::{ConnId, Opening, Role};

/// The most hyper buffers per HTTP connection, each way: a request head, and what it has taken
/// from a response body and not yet written. hyper's default (about 400 KiB) let each event
/// stream whose client stopped reading hold that much; a head never needs more than this.
const HTTP_BUFFER: usize = 64 * 1024;
/// The first and the longest pause after a failed accept (out of file descriptors, say).
const BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// What accept loops share: the connection context, the task tracker, the id counter.
#[derive(Debug, Clone)]
pub struct Acceptor {
    pub shared: Shared,
    pub tracker: TaskTracker,
    pub next_conn: Arc<AtomicU64>,
}

impl Acceptor {
    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }
}

/// One listening port: what its connections are and how they are accepted.
pub(crate) struct Port {
    /// The port's name in logs: "streamer", "player", "HTTPS", "SFU".
    pub(crate) name: &'static str,
    pub(crate) role: Role,
    pub(crate) tls: Option<TlsAcceptor>,
    /// Plain HTTP besides upgrades (the player ports).
    pub(crate) http: Option<Http>,
    /// Origins allowed to upgrade; empty allows any.
    pub(crate) origins: Vec<String>,
    /// Time for the TLS handshake and the request head.
    pub(crate) handshake_timeout: Duration,
    /// Reverse proxies trusted for the client's address.
    pub(crate) hops: u32,
    /// What an upgrade must present (tokens, JWTs); swapped whole on reload. Never logged.
    pub(crate) gate: LiveGate,
    /// The abuse limits of this port ([`limits`]).
    pub(crate) limits: Arc<Limits>,
    /// Refusals logged as warnings at most once a second per port (the second of the last).
    refusal_warned: AtomicU64,
    started: Instant,
}

/// A player port's HTTP side.
#[derive(Debug)]
pub(crate) struct Http {
    pub(crate) app: axum::Router,
    /// A response write that makes no progress for this long closes the connection.
    pub(crate) write_timeout: Duration,
}

impl Port {
    pub(crate) fn new(
        name: &'static str,
        role: Role,
        tls: Option<TlsAcceptor>,
        handshake_timeout: Duration,
    ) -> Self {
        Self {
            name,
            role,
            tls,
            http: None,
            origins: Vec::new(),
            handshake_timeout,
            hops: 0,
            gate: LiveGate::default(),
            limits: Limits::off(name),
            refusal_warned: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        }
    }

    /// Upgrades on this port must pass `gate` (`?token=` or `Authorization: Bearer`).
    /// Set before [`Port::with_http`], which hands it to upgrades after HTTP requests.
    pub(crate) fn with_gate(mut self, gate: LiveGate) -> Self {
        self.gate = gate;
        self
    }

    /// This port's abuse limits. Set before [`Port::with_http`], which hands them to upgrades
    /// after HTTP requests.
    pub(crate) fn with_limits(mut self, limits: Arc<Limits>) -> Self {
        self.limits = limits;
        self
    }

    /// This port also serves `app` over HTTP (and upgrades after HTTP requests, checked alike).
    pub(crate) fn with_http(
        mut self,
        app: axum::Router,
        write_timeout: Duration,
        acceptor: &Acceptor,
        origins: Vec<String>,
        hops: u32,
    ) -> Self {
        let later = Arc::new(Later {
            acceptor: acceptor.clone(),
            origins: origins.clone(),
            gate: self.gate.clone(),
            limits: self.limits.clone(),
        });
        let app = app.layer(axum::middleware::from_fn_with_state(later, upgrade_later));
        self.http = Some(Http { app, write_timeout });
        self.origins = origins;
        self.hops = hops;
        self
    }

    fn policy<'a>(&'a self, gate: &'a Gate) -> Policy<'a> {
        Policy {
            serves_http: self.http.is_some(),
            origins: &self.origins,
            gate,
        }
    }

    /// Logs a refused handshake: a warning at most once a second per port, else at debug.
    fn refused(&self, remote: SocketAddr, refusal: &Refusal) {
        let second = self.started.elapsed().as_secs();
        let last = self.refusal_warned.swap(second, Ordering::Relaxed);
        if last == second {
            debug!(%remote, port = self.name, status = refusal.status, "refused: {}", refusal.reason);
        } else {
            warn!(%remote, port = self.name, status = refusal.status, "refused: {} (more refusals this second at debug level)", refusal.reason);
        }
    }
}

/// Accepts connections on `listener` until shutdown. A failed accept (out of file descriptors,
/// say) is logged and retried after a pause that doubles up to a second: the loop outlives
/// errors without spinning.
pub(crate) async fn serve(listener: TcpListener, port: Port, acceptor: Acceptor) {
    let port = Arc::new(port);
    let mut backoff = BACKOFF.0;
    loop {
        let accepted = tokio::select! {
            () = acceptor.shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                backoff = BACKOFF.0;
                let _ = stream.set_nodelay(true);
                acceptor.tracker.spawn(serve_socket(
                    stream,
                    remote,
                    port.clone(),
                    acceptor.clone(),
                ));
            }
            Err(e) => {
                warn!(
                    port = port.name,
                    "accept failed: {e}; retrying in {backoff:?}"
                );
                tokio::select! {
                    () = acceptor.shared.shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// What a connection's opening (TLS handshake and request head) ended with.
enum Opened {
    Head(Stream, Head),
    /// The deadline passed with part of a head read: a 408 is owed.
    TimedOut(Stream),
    Gone,
}

/// One connection, from its TCP socket to its end. Every connection's task keeps this
/// function's arguments for its whole life: they are kept small (one Arc for the port).
async fn serve_socket(tcp: TcpStream, remote: SocketAddr, port: Arc<Port>, acceptor: Acceptor) {
    // Without a trusted proxy the socket's address is the client's: count the connection now,
    // and close it unread when over the limit (so sockets waiting for a head are bounded too).
    // Behind a proxy the client is known only from the head.
    let held = if port.hops == 0 {
        match port.limits.connection(remote.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                count_limit(&acceptor, &refusal);
                return;
            }
        }
    } else {
        None
    };
    let mut head = Vec::new();
    let opened = tokio::select! {
        () = acceptor.shared.shutdown.cancelled() => return,
        opened = open(tcp, remote, &port, &mut head) => opened,
    };
    let (mut stream, kind) = match opened {
        Opened::Head(stream, kind) => (stream, kind),
        Opened::TimedOut(mut stream) => {
            port.refused(remote, &handshake::TIMED_OUT);
            refuse(&mut stream, &handshake::TIMED_OUT).await;
            return;
        }
        Opened::Gone => return,
    };
    match kind {
        Head::Refuse(refusal)
        | Head::Complete {
            verdict: Verdict::Refuse(refusal),
            ..
        } => {
            port.refused(remote, &refusal);
            count_refusal(&acceptor, port.role, &refusal);
            refuse(&mut stream, &refusal).await;
        }
        Head::Complete {
            len,
            verdict: Verdict::Upgrade(accepted),
        } => {
            let remote = upgrade_client(port.hops, remote, head.get(..len).unwrap_or(&head));
            let guards = match admit_upgrade(&port.limits, remote, held, port.hops > 0) {
                Ok(guards) => guards,
                Err(refusal) => {
                    count_limit(&acceptor, &refusal);
                    refuse_limit(&mut stream, &refusal).await;
                    return;
                }
            };
            if let Err(e) = stream.write_all(accepted.response().as_bytes()).await {
                debug!(%remote, port = port.name, "upgrade failed: {e}");
                return;
            }
            let early_frames = head.split_off(len.min(head.len()));
            drop(head);
            // A task of its own: the connection's future then holds none of the opening's state
            // (the TLS handshake's future is large) for the connection's life.
            let tracker = acceptor.tracker.clone();
            tracker.spawn(start(
                stream,
                early_frames,
                port.role,
                accepted.opening,
                remote,
                acceptor,
                guards,
            ));
        }
        Head::Complete {
            verdict: Verdict::Http,
            ..
        } => {
            if let Some(http) = &port.http {
                // Boxed: hyper's connection future is large, and inline it would make every
                // WebSocket connection's task as big as an HTTP one.
                let io = WriteTimeout::new(Rewind::new(head, stream), http.write_timeout, remote);
                let shutdown = acceptor.shared.shutdown.clone();
                let app = http.app.clone();
                let metrics = acceptor.shared.metrics.clone();
                Box::pin(serve_http(io, remote, app, shutdown, &port, metrics)).await;
            }
        }
    }
}

/// The TLS handshake (if the port has TLS) and the request head, within the port's deadline.
async fn open(tcp: TcpStream, remote: SocketAddr, port: &Port, head: &mut Vec<u8>) -> Opened {
    let deadline = tokio::time::Instant::now() + port.handshake_timeout;
    let mut stream = match &port.tls {
        None => Stream::Plain(tcp),
        Some(tls) => match tokio::time::timeout_at(deadline, tls.accept(tcp)).await {
            Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                debug!(%remote, port = port.name, "TLS handshake failed: {e}");
                return Opened::Gone;
            }
            Err(_) => {
                debug!(%remote, port = port.name, "no TLS handshake within handshake_timeout; dropped");
                return Opened::Gone;
            }
        },
    };
    head.reserve(1024);
    let gate = port.gate.load_full();
    let policy = port.policy(&gate);
    let read = async {
        loop {
            if head.len() == head.capacity() {
                head.reserve(1024);
            }
            match stream.read_buf(head).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    debug!(%remote, port = port.name, "reading the request failed: {e}");
                    return None;
                }
            }
            if let Some(kind) = handshake::classify(head, policy) {
                return Some(kind);
            }
        }
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Some(kind)) => Opened::Head(stream, kind),
        Ok(None) => Opened::Gone,
        Err(_) if head.is_empty() => {
            debug!(%remote, port = port.name, "no request within handshake_timeout; dropped");
            Opened::Gone
        }
        Err(_) => Opened::TimedOut(stream),
    }
}

/// Counts a refused handshake: every 401, whatever the credential's kind, is an auth failure.
fn count_refusal(acceptor: &Acceptor, role: Role, refusal: &Refusal) {
    if let Some(metrics) = &acceptor.shared.metrics
        && refusal.status == handshake::UNAUTHORIZED.status
    {
        metrics.auth_failure(role);
    }
}

/// Counts a refusal by an abuse limit that no HTTP response carries to the metrics (responses
/// carry their [`crate::metrics::Limit`] and are counted where they are written).
fn count_limit(acceptor: &Acceptor, refusal: &LimitRefusal) {
    if let Some(metrics) = &acceptor.shared.metrics {
        metrics.rate_limited(refusal.limit);
    }
}

/// Answers a request refused by a limit and closes the connection.
async fn refuse_limit(stream: &mut Stream, refusal: &LimitRefusal) {
    let _ = stream.write_all(refusal.raw_response().as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Answers a refused request and closes the connection.
async fn refuse(stream: &mut Stream, refusal: &Refusal) {
    let _ = stream.write_all(refusal.response().as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Runs the connection of an accepted upgrade; `early_frames` are the bytes the client sent
/// after its request head (a frame sent along with it).
fn start(
    stream: Stream,
    early_frames: Vec<u8>,
    role: Role,
    opening: Opening,
    remote: SocketAddr,
    acceptor: Acceptor,
    guards: Guards,
) -> impl Future<Output = ()> + Send {
    let config = acceptor.shared.settings.websocket_config();
    async move {
        let _guards = guards;
        let ws = WebSocketStream::from_raw_socket(
            Reframe::frames(stream, early_frames),
            WsRole::Server,
            Some(config),
        )
        .await;
        let conn = acceptor.next_conn_id();
        connection::run(ws, conn, role, opening, remote, acceptor.shared).await;
    }
}

/// The client's address for an upgrade whose request head is `head`. Not inlined into
/// [`serve_socket`], whose future every connection holds: its locals would make it larger.
#[inline(never)]
fn upgrade_client(hops: u32, socket: SocketAddr, head: &[u8]) -> SocketAddr {
    if hops == 0 {
        return socket;
    }
    let forwarding = handshake::forwarding(head);
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

/// Serves HTTP/1.1 on one connection (the session API, static files, 404s, and upgrades that
/// follow another request on a kept-alive connection) until it ends or the server shuts down.
async fn serve_http<S>(
    io: S,
    remote: SocketAddr,
    app: axum::Router,
    shutdown: CancellationToken,
    port: &Port,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let hops = port.hops;
    let limits = port.limits.clone();
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
            request.extensions_mut().insert(PortLimits(limits.clone()));
            let response = app.clone().oneshot(request.map(Body::new));
            let metrics = metrics.clone();
            async move {
                let response = response.await;
                if let (Some(metrics), Ok(response)) = (&metrics, &response) {
                    metrics.count_response(response);
                }
                response
            }
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(port.handshake_timeout)
        .max_buf_size(HTTP_BUFFER)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        r = connection.as_mut() => if let Err(e) = r { debug!(%remote, "HTTP connection ended: {e}"); },
        () = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
    }
}

/// What [`upgrade_later`] needs.
#[derive(Debug)]
struct Later {
    acceptor: Acceptor,
    origins: Vec<String>,
    gate: LiveGate,
    limits: Arc<Limits>,
}

/// An upgrade request that follows a plain request on a kept-alive connection (a proxy reusing
/// its upstream connection does this): the same checks as a first request, through hyper.
async fn upgrade_later(
    State(later): State<Arc<Later>>,
    mut request: Request,
    next: axum::middleware::Next,
) -> Response {
    let verdict = {
        let headers = request.headers();
        handshake::check(
            &handshake::Request {
                method: request.method().as_str(),
                http_1_1: request.version() >= axum::http::Version::HTTP_11,
                query: request.uri().query(),
                headers: |name: &'static str| {
                    headers.get_all(name).iter().map(HeaderValue::as_bytes)
                },
            },
            Policy {
                serves_http: true,
                origins: &later.origins,
                gate: &later.gate.load_full(),
            },
        )
    };
    let accepted = match verdict {
        Verdict::Http => return next.run(request).await,
        Verdict::Refuse(refusal) => {
            count_refusal(&later.acceptor, Role::Player, &refusal);
            let mut response = (
                StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST),
                format!("{}\n", refusal.reason),
            )
                .into_response();
            if let Some((name, value)) = refusal.header {
                response
                    .headers_mut()
                    .insert(name, HeaderValue::from_static(value));
            }
            return response;
        }
        Verdict::Upgrade(accepted) => accepted,
    };
    let remote = request
        .extensions()
        .get::<RemoteAddr>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |r| r.0);
    // The kept-alive HTTP connection's own place goes when hyper hands the socket over.
    let guards = match admit_upgrade(&later.limits, remote, None, true) {
        Ok(guards) => guards,
        Err(refusal) => return refusal.response(),
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let acceptor = later.acceptor.clone();
    let opening = accepted.opening;
    later.acceptor.tracker.spawn(async move {
        let _guards = guards;
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
            Some(acceptor.shared.settings.websocket_config()),
        )
        .await;
        let conn = acceptor.next_conn_id();
        connection::run(ws, conn, Role::Player, opening, remote, acceptor.shared).await;
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accepted.accept_key);
    if let Some(protocol) = accepted.protocol {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
