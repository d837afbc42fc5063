//! The actor that owns the [`Router`] and every connection's outgoing queue. It never awaits a
//! peer: a full queue closes that one connection (1008) and feeds its disconnect back in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::Inbound;
use protocol::close;
use tokio::sync::{mpsc, oneshot};

use crate::queue::{self, TrySendError};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::router::{ConnId, HashMap, Output, Role, Router, RouterConfig};

/// What a connection's writer is asked to do.
#[derive(Debug)]
pub enum Outgoing {
    Text(Utf8Bytes),
    Close(u16, String),
    /// Drop the TCP connection without a close frame.
    Drop,
}

/// The router's way to reach one connection: its bounded queue, plus an out-of-band channel for
/// the close that must not wait behind a full queue.
#[derive(Debug)]
pub struct Outbox {
    pub queue: queue::Sender<Outgoing>,
    pub urgent: oneshot::Sender<Outgoing>,
}

/// Inputs to the router task.
#[derive(Debug)]
pub enum Event {
    Opened {
        conn: ConnId,
        role: Role,
        outbox: Outbox,
    },
    Message {
        conn: ConnId,
        message: Inbound,
    },
    Closed {
        conn: ConnId,
    },
}

/// A cloneable handle to the router task.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    tx: mpsc::Sender<Event>,
}

impl RouterHandle {
    /// Sends an event; false once the router task has ended (shutdown).
    pub async fn send(&self, event: Event) -> bool {
        self.tx.send(event).await.is_ok()
    }
}

/// How many events may wait for the router before readers are slowed down.
const EVENT_QUEUE: usize = 16 * 1024;

/// Starts the router task. It ends on `shutdown` or when every handle is dropped.
pub fn spawn(
    config: RouterConfig,
    protocol_ping: Duration,
    shutdown: CancellationToken,
) -> (RouterHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let task = tokio::spawn(run(Router::new(config), rx, protocol_ping, shutdown));
    (RouterHandle { tx }, task)
}

async fn run(
    mut router: Router,
    mut rx: mpsc::Receiver<Event>,
    protocol_ping: Duration,
    shutdown: CancellationToken,
) {
    let mut outboxes: HashMap<ConnId, Outbox> = HashMap::default();
    let ping_enabled = !protocol_ping.is_zero();
    let period = if ping_enabled {
        protocol_ping
    } else {
        Duration::from_secs(3600)
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            event = rx.recv() => match event {
                None => break,
                Some(Event::Opened { conn, role, outbox }) => {
                    outboxes.insert(conn, outbox);
                    router.handle_opened(conn, role);
                }
                Some(Event::Message { conn, message }) => router.handle_message(conn, message),
                Some(Event::Closed { conn }) => {
                    outboxes.remove(&conn);
                    router.handle_closed(conn);
                }
            },
            _ = ticker.tick(), if ping_enabled => router.handle_tick(now_ms()),
        }
        dispatch(&mut router, &mut outboxes);
    }
    debug!("router task ended");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Hands every pending output to its connection without waiting.
fn dispatch(router: &mut Router, outboxes: &mut HashMap<ConnId, Outbox>) {
    while let Some(output) = router.poll_output() {
        match output {
            Output::Send { to, text } => {
                let Some(outbox) = outboxes.get(&to) else {
                    continue;
                };
                match outbox.queue.try_send(Outgoing::Text(text)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        warn!(conn = %to, "outgoing queue full; closing 1008");
                        if let Some(outbox) = outboxes.remove(&to) {
                            let _ = outbox.urgent.send(Outgoing::Close(
                                close::TOO_SLOW.code,
                                close::TOO_SLOW.reason.to_owned(),
                            ));
                        }
                        router.handle_closed(to);
                    }
                    Err(TrySendError::Closed(_)) => {
                        outboxes.remove(&to);
                        router.handle_closed(to);
                    }
                }
            }
            Output::Close { conn, code, reason } => {
                if let Some(outbox) = outboxes.remove(&conn) {
                    // After what is queued, if it fits; otherwise at once.
                    if let Err(e) = outbox.queue.try_send(Outgoing::Close(code, reason)) {
                        let _ = outbox.urgent.send(e.into_inner());
                    }
                }
            }
            Output::Drop { conn } => {
                if let Some(outbox) = outboxes.remove(&conn) {
                    let _ = outbox.urgent.send(Outgoing::Drop);
                }
            }
        }
    }
}
