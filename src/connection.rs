//! One task per socket: frame limits, parsing, liveness, and a writer fed by a bounded queue.
//! It decides nothing about routing; the router task does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use protocol::Inbound;
use protocol::close::{self, Close};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{Config, ConsoleMessages};
use crate::limits::TokenBucket;
use crate::logging::{MessageLog, WarnLimiter, peer_str, peer_str_bare};
use crate::metrics::{self, Direction, Limit, Metrics, Negotiation};
use crate::queue::{self, Lane};
use crate::router::{ConnId, Opening, Role};
use crate::router_task::{Closing, Event, Frame, Gate, Outbox, RouterHandle, Urgent};

/// How long the server waits for the peer's close frame after sending its own.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How many queued messages the writer sends before one flush.
const WRITE_BATCH: usize = 64;

/// What every connection task needs from the configuration.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub max_message_size: usize,
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub console_messages: ConsoleMessages,
}

/// A player's abuse limits, read when its connection starts (a reload reaches new players).
#[derive(Debug, Clone, Copy)]
pub struct PlayerLimits {
    /// The token bucket (`messages_per_second`, `message_burst`); rate 0 is no limit.
    pub messages_per_second: u32,
    pub message_burst: u32,
    /// Time a player has to send its first message; zero is none.
    pub first_message_timeout: Duration,
}

impl PlayerLimits {
    pub fn from_config(config: &Config) -> Self {
        Self {
            messages_per_second: config.messages_per_second,
            message_burst: config.message_burst,
            first_message_timeout: config.first_message_timeout,
        }
    }
}

impl ConnectionSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_message_size: config.max_message_size,
            max_queued_messages: config.max_queued_messages,
            max_queued_bytes: config.max_queued_bytes,
            keepalive_interval: config.keepalive_interval,
            keepalive_timeout: config.keepalive_timeout,
            console_messages: config.console_messages,
        }
    }

    /// The WebSocket settings: our message limit; a small read buffer (many idle connections);
    /// frames gather in the write buffer until the writer flushes a batch, so what is queued
    /// together leaves in one send (up to 8 KiB, then it is written out early).
    pub fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(2048)
            .write_buffer_size(8192)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}

/// Everything a connection shares with the rest of the server.
#[derive(Debug, Clone)]
pub struct Shared {
    pub router: RouterHandle,
    pub settings: Arc<ConnectionSettings>,
    /// Players' abuse limits, replaced whole on reload.
    pub(crate) player_limits: Arc<arc_swap::ArcSwap<PlayerLimits>>,
    pub shutdown: CancellationToken,
    /// The metrics' handles; `None` with `metrics = false` (nothing is counted).
    pub(crate) metrics: Option<Arc<Metrics>>,
}

/// How the reading side ended.
enum End {
    Shutdown,
    /// The writer finished: it sent a close frame the router asked for (its code), or was told
    /// to drop.
    WriterDone(Option<u16>),
    PeerClosed(Option<u16>),
    Timeout,
    Invalid(Close),
    Error(WsError),
}

/// Serves one upgraded WebSocket until it ends.
///
/// Not an `async fn`: one keeps its arguments for its whole life, so the WebSocket (a few
/// hundred bytes) would sit in every connection's task twice more beside its split halves.
pub fn run<S>(
    ws: WebSocketStream<S>,
    conn: ConnId,
    role: Role,
    opening: Opening,
    remote: SocketAddr,
    shared: Shared,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = info_span!("conn", id = %conn, role = %role, remote = %remote);
    let (sink, stream) = ws.split();
    let opening = Opening {
        remote: Some(remote.ip()),
        ..opening
    };
    serve(sink, stream, conn, role, opening, shared).instrument(span)
}

async fn serve<S>(
    sink: Sink<S>,
    mut stream: SplitStream<WebSocketStream<S>>,
    conn: ConnId,
    role: Role,
    opening: Opening,
    shared: Shared,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    info!("opened");
    let settings = shared.settings.clone();
    let limits = queue::Limits {
        messages: settings.max_queued_messages,
        bytes: settings.max_queued_bytes,
    };
    let (queue_tx, queue_rx) = queue::bounded(limits, Some(shared.router.room_signal(conn)));
    let (urgent_tx, urgent_rx) = oneshot::channel();
    let (done_tx, mut done_rx) = oneshot::channel::<Option<u16>>();
    let gate = Arc::new(Gate::new(settings.max_queued_bytes));
    let outbox = Outbox {
        queue: queue_tx.clone(),
        urgent: urgent_tx,
        gate: Arc::clone(&gate),
    };
    if !shared
        .router
        .send(Event::Opened {
            conn,
            role,
            outbox,
            opening,
        })
        .await
    {
        return;
    }
    let counting = shared.metrics.as_ref().map(|m| {
        m.opened(role);
        Counting {
            metrics: Arc::clone(m),
            negotiation: (role == Role::Player).then(Arc::default),
        }
    });
    let writer = tokio::spawn(
        write_loop(
            sink,
            queue_rx,
            urgent_rx,
            shared.shutdown.clone(),
            settings.clone(),
            MessageLog {
                mode: settings.console_messages,
                conn,
                role,
            },
            done_tx,
            counting.clone(),
        )
        .in_current_span(),
    );

    let timeout_enabled = !settings.keepalive_timeout.is_zero();
    let opened = Instant::now();
    let mut deadline = opened + settings.keepalive_timeout;
    // Abuse limits, players only: streamers and SFUs send an offer and candidates per player
    // they serve, and UE 5.0/5.1 streamers and the UE 5.1 SFU send nothing until a player
    // arrives (README, "Abuse limits").
    let player = role == Role::Player;
    let limits = **shared.player_limits.load();
    let mut bucket = player
        .then(|| TokenBucket::new(limits.messages_per_second, limits.message_burst, 0))
        .flatten();
    let mut first_deadline = (player && !limits.first_message_timeout.is_zero())
        .then(|| opened + limits.first_message_timeout);
    let mut warned_binary = false;
    // Warnings this peer causes, under a budget (the first few, then a line now and then).
    let mut warnings = WarnLimiter::default();
    let end = loop {
        if !gate.is_open() {
            // What this peer sent waits for its receiver to read: read nothing more from it
            // until it has (PROTOCOL.md §1.7). Its silence meanwhile is the server's doing, so
            // the liveness deadline starts again afterwards.
            debug!("reading paused: the receiver of this peer's messages is behind");
            tokio::select! {
                biased;
                () = shared.shutdown.cancelled() => break End::Shutdown,
                code = &mut done_rx => break End::WriterDone(code.ok().flatten()),
                () = gate.opened() => {}
            }
            deadline = Instant::now() + settings.keepalive_timeout;
        }
        // One timer for both deadlines: whichever comes first.
        let first_due = first_deadline.filter(|&first| !timeout_enabled || first <= deadline);
        let expiry = sleep_until(first_due.unwrap_or(deadline));
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => break End::Shutdown,
            code = &mut done_rx => break End::WriterDone(code.ok().flatten()),
            () = expiry, if timeout_enabled || first_due.is_some() => {
                if first_due.is_some() {
                    warn!("no message within first_message_timeout; closing 1008");
                    if let Some(c) = &counting {
                        c.metrics.rate_limited(Limit::FirstMessageTimeout);
                    }
                    break End::Invalid(close::NO_FIRST_MESSAGE);
                }
                break End::Timeout;
            }
            frame = stream.next() => {
                let now = Instant::now();
                if timeout_enabled {
                    deadline = now + settings.keepalive_timeout;
                }
                if let Some(Ok(Message::Text(_) | Message::Binary(_))) = &frame {
                    first_deadline = None;
                    if let Some(bucket) = &mut bucket {
                        let now_ms = u64::try_from((now - opened).as_millis()).unwrap_or(u64::MAX);
                        if !bucket.take(now_ms) {
                            warn!(
                                messages_per_second = limits.messages_per_second,
                                message_burst = limits.message_burst,
                                "messages faster than messages_per_second allows; closing 1008"
                            );
                            if let Some(c) = &counting {
                                c.metrics.rate_limited(Limit::MessagesPerSecond);
                            }
                            break End::Invalid(close::RATE_LIMIT);
                        }
                    }
                }
                match frame {
                    None => break End::PeerClosed(None),
                    Some(Ok(Message::Text(text))) => {
                        handle_text(conn, role, &text, &gate, &shared, counting.as_ref(), &mut warnings).await;
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        if warned_binary {
                            debug!("binary message; handled as text");
                        } else if let Some(suppressed) = warnings.check() {
                            warn!("binary message; handled as text{suppressed}");
                        }
                        warned_binary = true;
                        let text = String::from_utf8_lossy(&bytes);
                        handle_text(conn, role, &text, &gate, &shared, counting.as_ref(), &mut warnings).await;
                    }
                    Some(Ok(Message::Close(frame))) => {
                        break End::PeerClosed(frame.map(|f| u16::from(f.code)));
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                        warn!(size, max_size, "message too big; closing 1009");
                        if let Some(c) = &counting {
                            c.metrics.rate_limited(Limit::MaxMessageSize);
                        }
                        break End::Invalid(close::MESSAGE_TOO_BIG);
                    }
                    Some(Err(WsError::Utf8(e))) => {
                        warn!("invalid UTF-8 in a text frame ({e}); closing 1007");
                        break End::Invalid(close::INVALID_UTF8);
                    }
                    Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                        break End::PeerClosed(None);
                    }
                    Some(Err(WsError::Protocol(e))) => {
                        warn!("WebSocket protocol error ({e}); closing 1002");
                        break End::Invalid(close::PROTOCOL_ERROR);
                    }
                    Some(Err(e)) => break End::Error(e),
                }
            }
        }
    };

    if let Some(suppressed) = warnings.take_suppressed() {
        warn!(
            "{} more warnings from this connection suppressed",
            suppressed.count()
        );
    }
    let code = match &end {
        End::Shutdown => Some(close::SERVER_RESTARTING.code),
        End::WriterDone(code) | End::PeerClosed(code) => *code,
        End::Invalid(reason) => Some(reason.code),
        End::Timeout | End::Error(_) => None,
    };
    if let Some(c) = &counting {
        c.metrics.closed(role, code);
    }
    match end {
        End::Shutdown => {
            // The writer sends 1012; nobody is told (PROTOCOL.md §6, server shutdown).
            let _ = timeout(CLOSE_WAIT, async {
                let _ = (&mut done_rx).await;
                while stream.next().await.is_some() {}
            })
            .await;
            info!(
                code = close::SERVER_RESTARTING.code,
                "closed: server shutdown"
            );
        }
        End::WriterDone(_) => {
            // Usually the router asked for this close and has forgotten the connection; if the
            // writer failed instead, this tells it.
            shared.router.send(Event::Closed { conn }).await;
            let _ = timeout(CLOSE_WAIT, async { while stream.next().await.is_some() {} }).await;
            info!("closed by the server");
        }
        End::PeerClosed(code) => {
            shared.router.send(Event::Closed { conn }).await;
            // Let the close reply go out.
            let _ = timeout(CLOSE_WAIT, async { while stream.next().await.is_some() {} }).await;
            match code {
                Some(code) => info!(code, "closed by the peer"),
                None => info!("connection ended by the peer"),
            }
        }
        End::Timeout => {
            shared.router.send(Event::Closed { conn }).await;
            warn!("no frame within keepalive_timeout; dropped");
        }
        End::Invalid(reason) => {
            shared.router.send(Event::Closed { conn }).await;
            // After what is queued, whatever the queue holds.
            let _ = queue_tx.force_send(Frame::Close(reason.into()), Lane::Receiver, 0);
            let _ = timeout(CLOSE_WAIT, async {
                let _ = (&mut done_rx).await;
                while let Some(Ok(_)) = stream.next().await {}
            })
            .await;
            info!(code = reason.code, "closed: {}", reason.reason);
        }
        End::Error(e) => {
            shared.router.send(Event::Closed { conn }).await;
            info!("connection failed: {e}");
        }
    }
    writer.abort();
}

#[allow(clippy::too_many_arguments)] // The reader's parts, borrowed; a struct would only rename them.
async fn handle_text(
    conn: ConnId,
    role: Role,
    text: &str,
    gate: &Gate,
    shared: &Shared,
    counting: Option<&Counting>,
    warnings: &mut WarnLimiter,
) {
    match Inbound::parse(text) {
        Ok(message) => {
            if let Some(c) = counting {
                let kind = metrics::message_type(message.type_name());
                c.metrics.message(kind, Direction::In);
                if let (true, Some(pending)) = (kind == metrics::SUBSCRIBE, &c.negotiation) {
                    c.metrics.negotiation_started(pending);
                }
            }
            let messages = MessageLog {
                mode: shared.settings.console_messages,
                conn,
                role,
            };
            messages.incoming(message.type_name(), text);
            let bytes = text.len();
            gate.take(bytes);
            shared
                .router
                .send(Event::Message {
                    conn,
                    message,
                    bytes,
                })
                .await;
        }
        Err(e) => {
            if let Some(suppressed) = warnings.check() {
                // The parser's text can quote the input.
                let e = e.to_string();
                warn!("bad message ignored: {}{suppressed}", peer_str_bare(&e));
            }
        }
    }
}

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// What a connection counts with, when metrics are on: the handles, and a player's pending
/// negotiation (its reader starts it on `subscribe`, its writer ends it on `offer`).
#[derive(Debug, Clone)]
struct Counting {
    metrics: Arc<Metrics>,
    negotiation: Option<Arc<Negotiation>>,
}

impl Counting {
    /// An outgoing message is written.
    fn outgoing(&self, text: &str) {
        let kind = metrics::outgoing_type(text);
        self.metrics.message(kind, Direction::Out);
        if let (true, Some(pending)) = (kind == metrics::OFFER, &self.negotiation) {
            self.metrics.offer_delivered(pending);
        }
    }
}

/// What stopped a write before it finished.
enum Interrupt {
    Shutdown,
    Urgent(Urgent),
}

/// The next urgent request. A dropped sender only means none will come (the router forgets a
/// connection once it has queued its close): the future then never completes.
async fn next_urgent(urgent: &mut Option<oneshot::Receiver<Urgent>>) -> Urgent {
    if let Some(rx) = urgent.as_mut() {
        if let Ok(request) = rx.await {
            return request;
        }
    }
    *urgent = None;
    std::future::pending().await
}

/// What the writer does next.
enum Next {
    Write(Write),
    Close(Closing),
    Stop,
}

/// A write the writer makes.
enum Write {
    Text(Utf8Bytes),
    Ping,
}

#[allow(clippy::too_many_arguments)] // The writer's parts, each moved in once; a struct would only rename them.
async fn write_loop<S>(
    mut sink: Sink<S>,
    mut queue: queue::Receiver<Frame>,
    urgent: oneshot::Receiver<Urgent>,
    shutdown: CancellationToken,
    settings: Arc<ConnectionSettings>,
    messages: MessageLog,
    done: oneshot::Sender<Option<u16>>,
    counting: Option<Counting>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut urgent = Some(urgent);
    let pings = !settings.keepalive_interval.is_zero();
    let period = if pings {
        settings.keepalive_interval
    } else {
        Duration::from_secs(3600)
    };
    let mut ping = tokio::time::interval_at(Instant::now() + period, period);
    let closing = loop {
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => Next::Close(close::SERVER_RESTARTING.into()),
            request = next_urgent(&mut urgent) => match request {
                Urgent::Close(closing) => Next::Close(closing),
                Urgent::Drop => Next::Stop,
            },
            frame = queue.recv() => match frame {
                Some(Frame::Text(text)) => Next::Write(Write::Text(text)),
                Some(Frame::Close(closing)) => Next::Close(closing),
                None => Next::Stop,
            },
            _ = ping.tick(), if pings => Next::Write(Write::Ping),
        };
        let next = match next {
            Next::Write(write) => write,
            Next::Close(closing) => break Some(closing),
            Next::Stop => break None,
        };
        let write = async {
            match next {
                Write::Text(text) => {
                    write_batch(&mut sink, &mut queue, text, &messages, counting.as_ref()).await
                }
                Write::Ping => sink
                    .send(Message::Ping(Default::default()))
                    .await
                    .map(|()| None),
            }
        };
        // Each write races shutdown and an urgent request, so a peer that never reads cannot
        // hold the writer past its close. (Inline rather than a helper taking the write by
        // value: an async fn keeps its arguments for its whole life, which doubled the size of
        // every connection's writer task.)
        let written = tokio::select! {
            biased;
            () = shutdown.cancelled() => Err(Interrupt::Shutdown),
            request = next_urgent(&mut urgent) => Err(Interrupt::Urgent(request)),
            done = write => Ok(done),
        };
        match written {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(closing))) => break Some(closing),
            Ok(Err(e)) => {
                debug!("write failed: {e}");
                break None;
            }
            // Interrupted mid-write. tungstenite keeps whole frames in its own buffer, so a
            // close frame can still follow; a peer that reads nothing never gets it and is
            // dropped after CLOSE_WAIT.
            Err(Interrupt::Shutdown) => break Some(close::SERVER_RESTARTING.into()),
            Err(Interrupt::Urgent(Urgent::Close(closing))) => break Some(closing),
            Err(Interrupt::Urgent(Urgent::Drop)) => break None,
        }
    };
    let sent = closing.as_ref().map(|c| c.code);
    if let Some(Closing { code, reason }) = closing {
        info!(code, reason = %peer_str(&reason), "closing");
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: close::truncate_reason(&reason).to_owned().into(),
        };
        let _ = timeout(CLOSE_WAIT, sink.send(Message::Close(Some(frame)))).await;
    }
    let _ = done.send(sent);
}

/// Writes `first` and whatever else is already queued, then flushes. Returns a close found in
/// the queue, to be sent after the batch.
async fn write_batch<S>(
    sink: &mut Sink<S>,
    queue: &mut queue::Receiver<Frame>,
    first: Utf8Bytes,
    messages: &MessageLog,
    counting: Option<&Counting>,
) -> Result<Option<Closing>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    messages.outgoing(&first);
    if let Some(c) = counting {
        c.outgoing(&first);
    }
    sink.feed(Message::Text(first)).await?;
    let mut close = None;
    for _ in 1..WRITE_BATCH {
        match queue.try_recv() {
            Some(Frame::Text(text)) => {
                messages.outgoing(&text);
                if let Some(c) = counting {
                    c.outgoing(&text);
                }
                sink.feed(Message::Text(text)).await?;
            }
            Some(Frame::Close(closing)) => {
                close = Some(closing);
                break;
            }
            None => break,
        }
    }
    sink.flush().await?;
    Ok(close)
}
