//! The abuse limits' IO side for one port: its [`Table`] behind a mutex, the clock, the
//! streamer count, the guards that give a connection's or an event stream's place back when it
//! ends, the refusals' responses and their log lines. What to count is decided by
//! [`crate::limits`]; this module only asks it.
//!
//! A `std` mutex rather than the actor the router uses: it is taken once per connection,
//! upgrade, HTTP request or stream (never per WebSocket message, never across an `.await`),
//! for a hash-map lookup, and an actor's channel round trip would cost more than that.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tracing::{debug, warn};

use crate::http::RemoteAddr;
use crate::limits::{Rate, Refused, Settings, Table, Verdict};
use crate::metrics::Limit;

/// How long a refused streamer is asked to wait (`Retry-After`); Unreal retries every 2 s anyway.
const STREAMER_RETRY_AFTER_S: u64 = 5;
/// How long a client is asked to wait when the table is full of other addresses.
const FULL_RETRY_AFTER_S: u64 = 60;

/// One port's limits.
pub(crate) struct Limits {
    /// The port's name in logs.
    name: &'static str,
    table: Mutex<Table>,
    /// Replaced whole on reload ([`Limits::set`]).
    settings: arc_swap::ArcSwap<Settings>,
    off: AtomicBool,
    origin: Instant,
    /// `max_streamers` on the streamer port; 0 elsewhere and when off.
    max_streamers: AtomicUsize,
    streamers: AtomicUsize,
    /// The second a "table full" refusal was last logged as a warning.
    full_warned: AtomicU64,
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("name", &self.name)
            .field("off", &self.off)
            .field("max_streamers", &self.max_streamers)
            .finish_non_exhaustive()
    }
}

/// A refusal as the client sees it: the status, a one-line reason, and `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LimitRefusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: String,
    pub(crate) retry_after_s: Option<u64>,
    /// Which limit, for `signalling_rate_limited_total`.
    pub(crate) limit: Limit,
}

impl LimitRefusal {
    /// The whole HTTP/1.1 response, for a connection's first request (before hyper).
    pub(crate) fn raw_response(&self) -> String {
        let retry = self
            .retry_after_s
            .map(|s| format!("retry-after: {s}\r\n"))
            .unwrap_or_default();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
             x-content-type-options: nosniff\r\n{retry}connection: close\r\n\r\n{}\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.reason.len() + 1,
            self.reason
        )
    }

    /// The response through hyper (upgrades and requests after the first).
    pub(crate) fn response(&self) -> Response {
        let mut response = (self.status, format!("{}\n", self.reason)).into_response();
        self.add_retry_after(&mut response);
        response.extensions_mut().insert(self.limit);
        response
    }

    /// The session API's JSON error shape, naming the key and its value.
    fn json_response(&self, key: &str, max: u32) -> Response {
        let mut response = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.reason, "limit": key, "max": max })),
        )
            .into_response();
        self.add_retry_after(&mut response);
        response.extensions_mut().insert(self.limit);
        response
    }

    fn add_retry_after(&self, response: &mut Response) {
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
    }
}

/// A place held in a count (a connection, an event stream, a streamer); given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    limits: Arc<Limits>,
    what: Held,
}

#[derive(Debug, Clone, Copy)]
enum Held {
    Connection(IpAddr),
    Stream(IpAddr),
    Streamer,
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self.what {
            Held::Connection(ip) => {
                let now = self.limits.now_ms();
                self.limits.lock().handle_closed(ip, now);
            }
            Held::Stream(ip) => {
                let now = self.limits.now_ms();
                self.limits.lock().handle_stream_closed(ip, now);
            }
            Held::Streamer => {
                self.limits.streamers.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Limits {
    /// `max_streamers` is given only for the streamer port.
    /// No limits at all.
    pub(crate) fn off(name: &'static str) -> Arc<Self> {
        Self::new(
            name,
            Settings {
                max_connections: 0,
                upgrades: 0,
                requests: 0,
                registrations: 0,
                max_streams: 0,
                window_ms: 60_000,
            },
            0,
        )
    }

    pub(crate) fn new(name: &'static str, settings: Settings, max_streamers: u32) -> Arc<Self> {
        Arc::new(Self {
            name,
            off: AtomicBool::new(settings.is_off()),
            settings: arc_swap::ArcSwap::from_pointee(settings),
            table: Mutex::new(Table::new(settings)),
            origin: Instant::now(),
            max_streamers: AtomicUsize::new(max_streamers as usize),
            streamers: AtomicUsize::new(0),
            full_warned: AtomicU64::new(u64::MAX),
        })
    }

    /// New settings from a reload: the next connection, request and upgrade are checked
    /// against them. Places held stay counted until they end; connections and streamers
    /// admitted while a limit was off are not counted when it is turned on.
    pub(crate) fn set(&self, settings: Settings, max_streamers: u32) {
        self.lock().set_settings(settings);
        self.settings.store(Arc::new(settings));
        self.off.store(settings.is_off(), Ordering::Relaxed);
        self.max_streamers
            .store(max_streamers as usize, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding it cannot leave the table inconsistent in a way that matters
        // more than refusing service would.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection from `client` opens: a place, or why not (logged here).
    pub(crate) fn connection(
        self: &Arc<Self>,
        client: IpAddr,
    ) -> Result<Option<Slot>, LimitRefusal> {
        if self.settings.load().max_connections == 0 {
            return Ok(None);
        }
        let now = self.now_ms();
        let admitted = self.lock().handle_opened(client, now);
        match admitted {
            Ok(()) => Ok(Some(Slot {
                limits: self.clone(),
                what: Held::Connection(client),
            })),
            Err(verdict) => Err(self.refused(client, verdict)),
        }
    }

    /// Counts one `rate` event from `client`.
    pub(crate) fn rate(&self, client: IpAddr, rate: Rate) -> Result<(), LimitRefusal> {
        if self.off.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = self.now_ms();
        let admitted = self.lock().handle_rate(client, rate, now);
        admitted.map_err(|verdict| self.refused(client, verdict))
    }

    /// An event stream from `client` opens.
    fn stream(self: &Arc<Self>, client: IpAddr) -> Result<Option<Slot>, LimitRefusal> {
        if self.settings.load().max_streams == 0 {
            return Ok(None);
        }
        let now = self.now_ms();
        let admitted = self.lock().handle_stream_opened(client, now);
        match admitted {
            Ok(()) => Ok(Some(Slot {
                limits: self.clone(),
                what: Held::Stream(client),
            })),
            Err(verdict) => Err(self.refused(client, verdict)),
        }
    }

    /// A streamer connection is about to be upgraded (`max_streamers`).
    pub(crate) fn streamer(
        self: &Arc<Self>,
        client: SocketAddr,
    ) -> Result<Option<Slot>, LimitRefusal> {
        let max_streamers = self.max_streamers.load(Ordering::Relaxed);
        if max_streamers == 0 {
            return Ok(None);
        }
        let before = self.streamers.fetch_add(1, Ordering::Relaxed);
        if before >= max_streamers {
            self.streamers.fetch_sub(1, Ordering::Relaxed);
            let refusal = LimitRefusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: format!("too many streamers (max_streamers = {})", max_streamers),
                retry_after_s: Some(STREAMER_RETRY_AFTER_S),
                limit: Limit::MaxStreamers,
            };
            if self.warn_this_second() {
                warn!(client = %client, port = self.name, status = 503, "refused: {} (more this second at debug level)", refusal.reason);
            } else {
                debug!(client = %client, port = self.name, status = 503, "refused: {}", refusal.reason);
            }
            return Err(refusal);
        }
        Ok(Some(Slot {
            limits: self.clone(),
            what: Held::Streamer,
        }))
    }

    /// Whether a port-wide refusal may be a warning (at most one a second per port).
    fn warn_this_second(&self) -> bool {
        let second = self.origin.elapsed().as_secs();
        self.full_warned.swap(second, Ordering::Relaxed) != second
    }

    /// The refusal for `verdict`, logged: a warning on the address's 1st, 2nd, 4th … refusal
    /// in a window, else at debug level.
    fn refused(&self, client: IpAddr, verdict: Verdict) -> LimitRefusal {
        let refusal = match verdict.refused {
            Refused::Connections { limit } => LimitRefusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                reason: format!(
                    "too many connections from this address (max_connections_per_ip = {limit})"
                ),
                retry_after_s: None,
                limit: Limit::MaxConnectionsPerIp,
            },
            Refused::Streams { limit } => LimitRefusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                reason: format!(
                    "too many event streams from this address (sessions.max_streams_per_address = {limit})"
                ),
                retry_after_s: None,
                limit: Limit::MaxStreamsPerAddress,
            },
            Refused::Rate {
                rate: Rate::Request,
                retry_after_s,
                ..
            } => LimitRefusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                // express-rate-limit's message, which Wilbur answers.
                reason: "Too many requests, please try again later.".to_owned(),
                retry_after_s: Some(retry_after_s),
                limit: Limit::HttpRequestsPerMinute,
            },
            Refused::Rate {
                rate,
                limit,
                retry_after_s,
            } => LimitRefusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                reason: format!(
                    "too many {} from this address; try again in {retry_after_s} s ({} = {limit})",
                    match rate {
                        Rate::Upgrade => "WebSocket upgrades",
                        Rate::Request => "requests",
                        Rate::Registration => "registrations",
                    },
                    rate.key()
                ),
                retry_after_s: Some(retry_after_s),
                limit: match rate {
                    Rate::Upgrade => Limit::UpgradesPerIpPerMinute,
                    Rate::Request => Limit::HttpRequestsPerMinute,
                    Rate::Registration => Limit::RegistrationsPerMinute,
                },
            },
            Refused::Full => LimitRefusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "too many client addresses at once; try again later".to_owned(),
                retry_after_s: Some(FULL_RETRY_AFTER_S),
                limit: Limit::AddressTable,
            },
        };
        let status = refusal.status.as_u16();
        match verdict.warn {
            Some(_) if verdict.refused == Refused::Full && !self.warn_this_second() => {
                debug!(client = %client, port = self.name, status, "refused: {}", refusal.reason);
            }
            Some(1) => {
                warn!(client = %client, port = self.name, status, "refused: {}", refusal.reason);
            }
            Some(n) => {
                warn!(client = %client, port = self.name, status, "refused: {} ({n} refusals from this address this minute; the next warning at {})", refusal.reason, n * 2);
            }
            None => {
                debug!(client = %client, port = self.name, status, "refused: {}", refusal.reason);
            }
        }
        refusal
    }
}

/// Counts a plain HTTP request (`http_requests_per_minute`) on the port it arrived on; 429 over
/// it. Layered inside Wilbur's CORS, so a refused browser can read its 429 (as in Wilbur).
/// Without a port's limits in the request (the app served without a socket) it counts nothing.
pub(crate) async fn count_request(request: Request, next: axum::middleware::Next) -> Response {
    if let Some((limits, client)) = port_and_client(&request)
        && let Err(refusal) = limits.rate(client, Rate::Request)
    {
        return refusal.response();
    }
    next.run(request).await
}

/// The session API's own per-address limits, inside its CORS: `POST /register/…` counts
/// against `registrations_per_minute`, and `GET /events/…` holds one of
/// `max_streams_per_address` places until its response (the stream) ends.
pub(crate) async fn count_session(request: Request, next: axum::middleware::Next) -> Response {
    let Some((limits, client)) = port_and_client(&request) else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if request.method() == Method::POST && path.starts_with("/register/") {
        if let Err(refusal) = limits.rate(client, Rate::Registration) {
            let max = limits.settings.load().registrations;
            return refusal.json_response("registrations_per_minute", max);
        }
        return next.run(request).await;
    }
    if request.method() == Method::GET && path.starts_with("/events/") {
        let slot = match limits.stream(client) {
            Ok(slot) => slot,
            Err(refusal) => {
                let max = limits.settings.load().max_streams;
                return refusal.json_response("max_streams_per_address", max);
            }
        };
        let response = next.run(request).await;
        return match slot {
            // The place goes with the stream's body: freed when hyper drops it.
            Some(slot) if response.status().is_success() => response.map(|body| {
                Body::from_stream(body.into_data_stream().map(move |chunk| {
                    let _held = &slot;
                    chunk
                }))
            }),
            _ => response,
        };
    }
    next.run(request).await
}

/// The port's limits and the client's address, as [`super::serve_http`] put them in.
fn port_and_client(request: &Request) -> Option<(Arc<Limits>, IpAddr)> {
    let limits = request.extensions().get::<PortLimits>()?.0.clone();
    let client = request.extensions().get::<RemoteAddr>()?.0.ip();
    Some((limits, client))
}

/// What an accepted upgrade holds for its connection's life.
#[derive(Debug, Default)]
pub(crate) struct Guards {
    _connection: Option<Slot>,
    _streamer: Option<Slot>,
}

/// An upgrade from `client` on this port: counted against `upgrades_per_ip_per_minute`, then
/// given a connection place (`held`, taken at accept, or a new one when `count_connection`),
/// then on the streamer port a streamer place (`max_streamers`).
pub(crate) fn admit_upgrade(
    limits: &Arc<Limits>,
    client: SocketAddr,
    held: Option<Slot>,
    count_connection: bool,
) -> Result<Guards, LimitRefusal> {
    limits.rate(client.ip(), Rate::Upgrade)?;
    let connection = match held {
        Some(slot) => Some(slot),
        None if count_connection => limits.connection(client.ip())?,
        None => None,
    };
    let streamer = limits.streamer(client)?;
    Ok(Guards {
        _connection: connection,
        _streamer: streamer,
    })
}

/// A request extension: the limits of the port the request arrived on.
#[derive(Debug, Clone)]
pub(crate) struct PortLimits(pub(crate) Arc<Limits>);
