//! The actor that owns the [`Sessions`] core and one channel per open SSE stream. HTTP handlers
//! reach it through a cloneable [`SessionsHandle`] (commands with oneshot replies). It never
//! awaits a stream: the core hands a stream only what fits its window
//! ([`super::STREAM_WINDOW_BYTES`]), and the stream's body reports each event it takes
//! ([`StreamGuard::written`]), which lets the core hand it more.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{EVENT_OVERHEAD, Event, Limits, Output, Registered, SessionError, Sessions, StreamId};

/// Requests to the sessions task, each with its reply channel.
#[derive(Debug)]
enum Command {
    Register {
        session: String,
        peer: String,
        client: IpAddr,
        credential: Credential,
        reply: oneshot::Sender<Result<(Registered, Option<String>), SessionError>>,
    },
    Unregister {
        session: String,
        peer: String,
        presented: Vec<String>,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    OpenStream {
        session: String,
        peer: String,
        presented: Vec<String>,
        last_event_id: Option<u64>,
        reply: oneshot::Sender<Result<OpenedStream, SessionError>>,
    },
    Message {
        session: String,
        from: String,
        presented: Vec<String>,
        target: String,
        kind: String,
        payload: Option<Box<RawValue>>,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    /// The figures the metrics report: open sessions, events queued.
    Gauges {
        reply: oneshot::Sender<Result<(usize, usize), SessionError>>,
    },
}

/// What a request presents as the peer's credential (`peer_tokens`).
#[derive(Debug, Default)]
pub struct Credential {
    /// The tokens the request carries (`?token=`, `Authorization: Bearer`).
    pub presented: Vec<String>,
    /// With `peer_tokens`, a new random token: it becomes the peer's if the peer has none.
    pub fresh: Option<String>,
}

/// The sessions task has stopped (the server is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is shutting down")]
pub struct Unavailable;

/// A request's outcome: refused by the core, or the task is gone.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Refused(#[from] SessionError),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// A freshly opened stream: `events` brings the backlog, then new events. It ends when the
/// stream is replaced, its peer leaves, or the server stops. The body reports each event it
/// takes with `guard.written`; dropping `guard` (with the body) tells the task the stream closed.
#[derive(Debug)]
pub struct OpenedStream {
    pub stream: StreamId,
    pub events: mpsc::Receiver<Event>,
    pub guard: StreamGuard,
}

/// What a stream's body tells the task.
#[derive(Debug)]
enum StreamNote {
    /// The body took this event (and every one before it) for writing.
    Written {
        stream: StreamId,
        id: u64,
    },
    Closed(StreamId),
}

/// A stream's link back to the task: [`Self::written`] as its body takes events, and the close
/// when dropped.
#[derive(Debug)]
pub struct StreamGuard {
    stream: StreamId,
    // Unbounded because Drop cannot wait. A stream sends one note per event it was handed (at
    // most a window's worth at a time) and one close, so the channel stays short.
    notes: mpsc::UnboundedSender<StreamNote>,
}

impl StreamGuard {
    /// The body took event `id` for writing; the stream may be handed more.
    pub fn written(&self, id: u64) {
        let _ = self.notes.send(StreamNote::Written {
            stream: self.stream,
            id,
        });
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let _ = self.notes.send(StreamNote::Closed(self.stream));
    }
}

/// A cloneable handle to the sessions task.
#[derive(Debug, Clone)]
pub struct SessionsHandle {
    tx: mpsc::Sender<Command>,
}

/// How many requests may wait for the task.
const COMMAND_QUEUE: usize = 4096;

impl SessionsHandle {
    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, SessionError>>) -> Command,
    ) -> Result<T, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(command(reply))
            .await
            .map_err(|_| Unavailable)?;
        Ok(answer.await.map_err(|_| Unavailable)??)
    }

    /// Registers `peer`; a new session is charged to `client`'s address. Also answers the
    /// peer's token, with `peer_tokens` (`credential.fresh`).
    pub async fn register(
        &self,
        session: &str,
        peer: &str,
        client: IpAddr,
        credential: Credential,
    ) -> Result<(Registered, Option<String>), RequestError> {
        let (session, peer) = (session.to_owned(), peer.to_owned());
        self.request(|reply| Command::Register {
            session,
            peer,
            client,
            credential,
            reply,
        })
        .await
    }

    pub async fn unregister(
        &self,
        session: &str,
        peer: &str,
        presented: Vec<String>,
    ) -> Result<(), RequestError> {
        let (session, peer) = (session.to_owned(), peer.to_owned());
        self.request(|reply| Command::Unregister {
            session,
            peer,
            presented,
            reply,
        })
        .await
    }

    pub async fn open_stream(
        &self,
        session: &str,
        peer: &str,
        presented: Vec<String>,
        last_event_id: Option<u64>,
    ) -> Result<OpenedStream, RequestError> {
        let (session, peer) = (session.to_owned(), peer.to_owned());
        self.request(|reply| Command::OpenStream {
            session,
            peer,
            presented,
            last_event_id,
            reply,
        })
        .await
    }

    pub async fn message(
        &self,
        session: &str,
        from: &str,
        presented: Vec<String>,
        target: String,
        kind: String,
        payload: Option<Box<RawValue>>,
    ) -> Result<(), RequestError> {
        let (session, from) = (session.to_owned(), from.to_owned());
        self.request(|reply| Command::Message {
            session,
            from,
            presented,
            target,
            kind,
            payload,
            reply,
        })
        .await
    }
}

impl SessionsHandle {
    /// Open sessions and the events queued for delivery over all of them (for `/metrics`).
    pub async fn gauges(&self) -> Result<(usize, usize), RequestError> {
        self.request(|reply| Command::Gauges { reply }).await
    }
}

/// Starts the sessions task. It ends on `shutdown` or when every handle is dropped; its open
/// streams end with it.
pub fn spawn(limits: Limits, shutdown: CancellationToken) -> (SessionsHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let task = tokio::spawn(run(limits, rx, shutdown));
    (SessionsHandle { tx }, task)
}

struct Task {
    core: Sessions,
    streams: HashMap<StreamId, mpsc::Sender<Event>>,
    /// Enough for a whole window of the smallest events, so a send never finds a channel full.
    stream_capacity: usize,
    notes_tx: mpsc::UnboundedSender<StreamNote>,
    start: Instant,
}

impl Task {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn handle(&mut self, command: Command) {
        let now = self.now_ms();
        match command {
            Command::Register {
                session,
                peer,
                client,
                credential,
                reply,
            } => {
                let core = &mut self.core;
                let registered = core
                    .authorize(&session, &peer, &credential.presented)
                    .and_then(|()| core.handle_register(&session, &peer, client, now))
                    .map(|registered| {
                        let token = credential
                            .fresh
                            .and_then(|fresh| core.peer_token(&session, &peer, fresh));
                        (registered, token)
                    });
                let _ = reply.send(registered);
            }
            Command::Unregister {
                session,
                peer,
                presented,
                reply,
            } => {
                let core = &mut self.core;
                let _ = reply.send(
                    core.authorize(&session, &peer, &presented)
                        .and_then(|()| core.handle_unregister(&session, &peer, now)),
                );
            }
            Command::OpenStream {
                session,
                peer,
                presented,
                last_event_id,
                reply,
            } => {
                let core = &mut self.core;
                let opened = core
                    .authorize(&session, &peer, &presented)
                    .and_then(|()| core.handle_open_stream(&session, &peer, last_event_id, now))
                    .map(|stream| {
                        let (tx, events) = mpsc::channel(self.stream_capacity);
                        self.streams.insert(stream, tx);
                        OpenedStream {
                            stream,
                            events,
                            guard: StreamGuard {
                                stream,
                                notes: self.notes_tx.clone(),
                            },
                        }
                    });
                // If the handler is gone, the guard inside drops and reports the close.
                let _ = reply.send(opened);
            }
            Command::Message {
                session,
                from,
                presented,
                target,
                kind,
                payload,
                reply,
            } => {
                let core = &mut self.core;
                let result = core.authorize(&session, &from, &presented).and_then(|()| {
                    core.handle_message(&session, &from, &target, &kind, payload.as_deref(), now)
                });
                let _ = reply.send(result);
            }
            Command::Gauges { reply } => {
                let _ = reply.send(Ok((self.core.session_count(), self.core.queued_events())));
            }
        }
    }

    /// Hands every pending output to its stream without waiting.
    fn dispatch(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Deliver { stream, event } => {
                    let Some(tx) = self.streams.get(&stream) else {
                        continue;
                    };
                    match tx.try_send(event) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // The window makes this unreachable; ending the stream keeps every
                            // event undelivered rather than lose one.
                            warn!(%stream, "event stream channel full; ending it");
                            self.streams.remove(&stream);
                            let now = self.now_ms();
                            self.core.handle_stream_closed(stream, now);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            self.streams.remove(&stream);
                            let now = self.now_ms();
                            self.core.handle_stream_closed(stream, now);
                        }
                    }
                }
                Output::End { stream } => {
                    // Dropping the sender ends the response body once what it holds is written.
                    self.streams.remove(&stream);
                }
            }
        }
    }
}

async fn run(limits: Limits, mut rx: mpsc::Receiver<Command>, shutdown: CancellationToken) {
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let ticking = !idle.is_zero();
    // A quarter of the timeout keeps expiry within 25 % late, between 10 ms and 1 s.
    let period = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (notes_tx, mut notes_rx) = mpsc::unbounded_channel();
    let mut task = Task {
        stream_capacity: limits.stream_window_bytes / EVENT_OVERHEAD + 2,
        core: Sessions::new(limits),
        streams: HashMap::new(),
        notes_tx,
        start: Instant::now(),
    };
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            command = rx.recv() => match command {
                None => break,
                Some(command) => task.handle(command),
            },
            Some(note) = notes_rx.recv() => {
                let now = task.now_ms();
                match note {
                    StreamNote::Written { stream, id } => {
                        task.core.handle_stream_written(stream, id, now);
                    }
                    StreamNote::Closed(stream) => {
                        task.streams.remove(&stream);
                        task.core.handle_stream_closed(stream, now);
                    }
                }
            }
            _ = ticker.tick(), if ticking => {
                let now = task.now_ms();
                task.core.handle_tick(now);
            }
        }
        task.dispatch();
    }
    debug!("sessions task ended");
}
