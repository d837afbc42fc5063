//! The actor that owns the [`Router`], the overflow policy ([`Flow`]) and every connection's
//! outgoing queue. It never awaits a peer: what does not fit a queue is handled by the policy
//! (PROTOCOL.md §1.7), and a connection it closes gets its disconnect handling at once.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::Inbound;
use protocol::close::{self, Close};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::cluster::bridge::{Answers, Bridge, Claimed, Gather, Query, Wire, Wiring};
use crate::cluster::link::LinkEvent;
use crate::metrics::{Limit, Metrics};
use crate::queue::{self, Lane, TrySendError};
use crate::router::flow::{Flow, Queues, Refused};
use crate::router::{
    ConnId, Counts, HashMap, Opening, Refusals, RemoteOut, Role, Router, RouterConfig,
};

/// A close frame to send: the one representation of a close, queued or urgent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub code: u16,
    pub reason: Cow<'static, str>,
}

impl From<Close> for Closing {
    fn from(close: Close) -> Self {
        Self {
            code: close.code,
            reason: Cow::Borrowed(close.reason),
        }
    }
}

/// An item of a connection's outgoing queue, written in order.
#[derive(Debug)]
pub enum Frame {
    Text(Utf8Bytes),
    /// Sent after everything queued before it; the connection then ends.
    Close(Closing),
}

/// What the writer does at once, ahead of its queue (the peer is not reading it, or is dead).
#[derive(Debug)]
pub enum Urgent {
    Close(Closing),
    /// Drop the TCP connection without a close frame.
    Drop,
}

/// A connection's reading credit (PROTOCOL.md §1.7): the bytes of its messages the router has
/// not handled yet, plus the bytes of what they caused that wait for room at their receiver.
/// Its reader stops while this is over the budget, so one peer can make the server hold at most
/// about the budget (plus one message) of its traffic in flight.
#[derive(Debug)]
pub struct Gate {
    owed: AtomicUsize,
    budget: usize,
    open: Notify,
}

impl Gate {
    pub fn new(budget: usize) -> Self {
        Self {
            owed: AtomicUsize::new(0),
            budget,
            open: Notify::new(),
        }
    }

    /// Whether the reader may read on.
    pub fn is_open(&self) -> bool {
        self.owed.load(Ordering::Acquire) <= self.budget
    }

    /// Waits until the reader may read on.
    pub async fn opened(&self) {
        loop {
            // Registered before the check: a `give` in between leaves a permit.
            let notified = self.open.notified();
            if self.is_open() {
                return;
            }
            notified.await;
        }
    }

    /// `bytes` more are owed.
    pub fn take(&self, bytes: usize) {
        self.owed.fetch_add(bytes, Ordering::AcqRel);
    }

    /// `bytes` are paid back; wakes the reader if that opens the gate.
    pub fn give(&self, bytes: usize) {
        let before = self.owed.fetch_sub(bytes, Ordering::AcqRel);
        if before > self.budget && before.saturating_sub(bytes) <= self.budget {
            self.open.notify_one();
        }
    }
}

/// The router's way to reach one connection: its bounded queue, an out-of-band channel for what
/// must not wait behind a full queue, and its reading credit.
#[derive(Debug)]
pub struct Outbox {
    pub queue: queue::Sender<Frame>,
    pub urgent: oneshot::Sender<Urgent>,
    pub gate: Arc<Gate>,
}

/// Inputs to the router task.
#[derive(Debug)]
pub(crate) enum Event {
    Opened {
        conn: ConnId,
        role: Role,
        outbox: Outbox,
        /// What the connection's URL asked for (players only), and the client's address as the
        /// listener determined it (reported by the REST API).
        opening: Opening,
    },
    /// A parsed message of `bytes` bytes, already taken from the connection's gate.
    Message {
        conn: ConnId,
        message: Inbound,
        bytes: usize,
    },
    Closed {
        conn: ConnId,
    },
    /// A read of the tables for the REST API (see [`RouterHandle::inspect`]).
    Inspect(Inspect),
    /// New settings from a reload (see [`Router::handle_reconfigure`]).
    Reconfigure(Box<RouterConfig>),
    /// A question for every node of the cluster (`/api`; see [`RouterHandle::gather`]).
    Gather(Gather),
}

/// A read-only question for the [`Router`], run on the router task; it sends its own answer
/// on a `oneshot`, which never blocks (if the asker has gone, the answer is dropped).
pub struct Inspect(Box<dyn FnOnce(&Router) + Send>);

impl std::fmt::Debug for Inspect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inspect")
    }
}

/// A cloneable handle to the router task.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    tx: mpsc::Sender<Event>,
    room: mpsc::UnboundedSender<ConnId>,
}

impl RouterHandle {
    /// Sends an event; false once the router task has ended (shutdown).
    pub(crate) async fn send(&self, event: Event) -> bool {
        self.tx.send(event).await.is_ok()
    }

    /// Runs `read` on the router task, after every event sent before it, and returns what it
    /// returns; `None` once the task has ended (shutdown). `read` sees the tables but cannot
    /// change them; its cost is paid on the task (the `router::snapshot` functions say theirs).
    pub async fn inspect<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Router) -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        let ask = Inspect(Box::new(move |router| {
            let _ = reply.send(read(router));
        }));
        if !self.send(Event::Inspect(ask)).await {
            return None;
        }
        answer.await.ok()
    }

    /// Every node's answer to `query`, this node's first; `None` on a node alone (or once the
    /// task has ended). Waits for each node up to answer or to go down (`node_timeout` at most).
    pub(crate) async fn gather(&self, query: Query) -> Option<Answers> {
        let (reply, answer) = oneshot::channel();
        if !self.send(Event::Gather(Gather { query, reply })).await {
            return None;
        }
        answer.await.ok().flatten()
    }

    /// Hands the router new settings (a reload), after every event sent before them; false
    /// once the router task has ended.
    pub async fn reconfigure(&self, config: RouterConfig) -> bool {
        self.send(Event::Reconfigure(Box::new(config))).await
    }

    /// The signal a connection's queue gives when its senders' lane has room again. Each queue
    /// signals at most once per refusal, so the channel holds at most one id per connection.
    pub fn room_signal(&self, conn: ConnId) -> queue::RoomSignal {
        let room = self.room.clone();
        Box::new(move || {
            let _ = room.send(conn);
        })
    }
}

/// How many events may wait for the router before readers are slowed down.
const EVENT_QUEUE: usize = 16 * 1024;

/// The most often `playerCount` updates go out (`player_count_updates`): each player gets at
/// most one per period, however many players joined or left in it.
pub const PLAYER_COUNT_PERIOD: Duration = Duration::from_secs(1);

/// Starts the router task. It ends on `shutdown` or when every handle is dropped.
pub fn spawn(
    config: RouterConfig,
    protocol_ping: Duration,
    overflow_timeout: Duration,
    shutdown: CancellationToken,
) -> (RouterHandle, JoinHandle<()>) {
    let (handle, task, _counts) = spawn_with_counts(
        config,
        protocol_ping,
        overflow_timeout,
        shutdown,
        None,
        None,
    );
    (handle, task)
}

/// [`spawn`], with a watch of how many streamers and players are connected, published after
/// each event that changes them (for the matchmaker client). Publishing costs the router one
/// comparison per event; a reader never holds the router up (it reads the latest value).
/// With `metrics`, the task counts the closes it decides (queue overflow, `overflow_timeout`)
/// and the router's refusals.
pub(crate) fn spawn_with_counts(
    config: RouterConfig,
    protocol_ping: Duration,
    overflow_timeout: Duration,
    shutdown: CancellationToken,
    metrics: Option<Arc<Metrics>>,
    cluster: Option<Wiring>,
) -> (RouterHandle, JoinHandle<()>, watch::Receiver<Counts>) {
    let (counts_tx, counts_rx) = watch::channel(Counts::default());
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let (room, room_rx) = mpsc::unbounded_channel();
    let timeout_ms = u64::try_from(overflow_timeout.as_millis()).unwrap_or(u64::MAX);
    let mut router = Router::new(config);
    if let Some(cluster) = &cluster {
        router.start_player_ids_at(cluster.first_player);
    }
    let task = tokio::spawn(run(
        router,
        Flow::new(timeout_ms),
        Inputs {
            events: rx,
            room: room_rx,
            cluster,
        },
        Timers {
            protocol_ping,
            overflow_timeout,
            watchdog: watchdog_period().map(|every| Watchdog {
                every,
                ping: Box::new(watchdog_ping),
            }),
        },
        shutdown,
        Reports {
            counts: counts_tx,
            metrics,
        },
    ));
    (RouterHandle { tx, room }, task, counts_rx)
}

/// Where the router task reports what it sees: the peer counts (the matchmaker's), and the
/// closes and refusals it counts for `/metrics`.
struct Reports {
    counts: watch::Sender<Counts>,
    metrics: Option<Arc<Metrics>>,
}

/// Every open connection's outbox: the [`Queues`] the overflow policy works on; and, in a
/// cluster, the way to the other nodes.
#[derive(Default)]
struct Outboxes(
    HashMap<ConnId, Outbox>,
    Option<Arc<Metrics>>,
    Option<Bridge>,
);

impl Queues for Outboxes {
    fn try_send(&mut self, to: ConnId, text: Utf8Bytes, lane: Lane) -> Result<(), Refused> {
        let Some(outbox) = self.0.get(&to) else {
            return Err(Refused::Gone);
        };
        let bytes = text.len();
        match outbox.queue.try_send(Frame::Text(text), lane, bytes) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Frame::Text(text))) => Err(Refused::Full(text)),
            Err(_) => {
                self.0.remove(&to);
                Err(Refused::Gone)
            }
        }
    }

    fn force_send(&mut self, to: ConnId, text: Utf8Bytes) -> bool {
        let Some(outbox) = self.0.get(&to) else {
            return false;
        };
        let bytes = text.len();
        if outbox
            .queue
            .force_send(Frame::Text(text), Lane::Senders, bytes)
            .is_err()
        {
            self.0.remove(&to);
            return false;
        }
        true
    }

    fn want_room(&mut self, conn: ConnId, need: usize) -> bool {
        self.0
            .get(&conn)
            .is_none_or(|outbox| outbox.queue.want_room(need))
    }

    fn charge(&mut self, conn: ConnId, bytes: usize, add: bool) {
        if let Some(outbox) = self.0.get(&conn) {
            if add {
                outbox.gate.take(bytes);
            } else {
                outbox.gate.give(bytes);
            }
        }
    }

    fn close(&mut self, conn: ConnId, code: u16, reason: String) {
        if let Some(outbox) = self.0.remove(&conn) {
            let closing = Closing {
                code,
                reason: reason.into(),
            };
            // After what is queued, whatever the queue holds.
            let _ = outbox
                .queue
                .force_send(Frame::Close(closing), Lane::Receiver, 0);
        }
    }

    fn close_now(&mut self, conn: ConnId, close: Close) {
        if let Some(metrics) = &self.1 {
            if close == close::TOO_SLOW {
                metrics.queue_full();
            } else if close == close::SENDING_TOO_FAST {
                metrics.rate_limited(Limit::OverflowTimeout);
            }
        }
        if let Some(outbox) = self.0.remove(&conn) {
            let _ = outbox.urgent.send(Urgent::Close(close.into()));
        }
    }

    fn drop_conn(&mut self, conn: ConnId) {
        if let Some(outbox) = self.0.remove(&conn) {
            let _ = outbox.urgent.send(Urgent::Drop);
        }
    }

    fn remote(&mut self, out: RemoteOut) {
        match &mut self.2 {
            Some(bridge) => bridge.send(out),
            // A node alone has no remote peers, so its router never asks.
            None => debug!(?out, "no cluster to send to; dropped"),
        }
    }
}

/// The periods the task's timers run at.
struct Timers {
    protocol_ping: Duration,
    overflow_timeout: Duration,
    /// systemd's watchdog, when it asks for one (`WatchdogSec=`).
    watchdog: Option<Watchdog>,
}

/// How often to tell systemd the router is alive, and how (`WATCHDOG=1`; a test counts).
struct Watchdog {
    every: Duration,
    ping: Box<dyn FnMut() + Send>,
}

/// Half the watchdog period systemd gave this process (`WATCHDOG_USEC` and `WATCHDOG_PID`),
/// as sd_watchdog_enabled(3) advises; `None` outside systemd or without `WatchdogSec=`.
fn watchdog_period() -> Option<Duration> {
    let mut usec = 0;
    (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
        .then(|| (Duration::from_micros(usec) / 2).max(Duration::from_millis(1)))
}

/// Tells systemd the router is alive. Sent from the router's own loop, so a router that stops
/// turning (a wedged loop, a handler that never returns) stops the pings and systemd restarts
/// the service, where a separate timer task would keep pinging.
fn watchdog_ping() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]) {
        debug!("cannot send WATCHDOG=1 to systemd: {e}");
    }
}

/// What the router task takes in: the connections' events, their queues' room signals, and in
/// a cluster the link to the other nodes.
struct Inputs {
    events: mpsc::Receiver<Event>,
    room: mpsc::UnboundedReceiver<ConnId>,
    cluster: Option<Wiring>,
}

async fn run(
    mut router: Router,
    mut flow: Flow,
    inputs: Inputs,
    timers: Timers,
    shutdown: CancellationToken,
    reports: Reports,
) {
    let Inputs {
        events: mut rx,
        room: mut room_rx,
        cluster,
    } = inputs;
    let Reports { counts, metrics } = reports;
    let (bridge, mut link_events) = match cluster {
        Some(Wiring {
            link,
            events,
            claims,
            claimed,
            sessions,
            ..
        }) => (
            Some(Bridge::new(link, claims).with_sessions(sessions)),
            Some((events, claimed)),
        ),
        None => (None, None),
    };
    let Timers {
        protocol_ping,
        overflow_timeout,
        watchdog,
    } = timers;
    let (watchdog_every, mut watchdog_ping) = match watchdog {
        Some(Watchdog { every, ping }) => (Some(every), ping),
        // The branch is then disabled; the hour is never reached.
        None => (None, Box::new(|| {}) as Box<dyn FnMut() + Send>),
    };
    let mut watchdog_ticker =
        tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    watchdog_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outboxes = Outboxes(HashMap::default(), metrics, bridge);
    let mut refusals = Refusals::default();
    let mut published = Counts::default();
    let mut count_ticker =
        tokio::time::interval_at(Instant::now() + PLAYER_COUNT_PERIOD, PLAYER_COUNT_PERIOD);
    count_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    let now = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let ping_enabled = !protocol_ping.is_zero();
    let period = if ping_enabled {
        protocol_ping
    } else {
        Duration::from_secs(3600)
    };
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    // A quarter of the timeout keeps a stuck sender's close within 25 % late.
    let flow_period =
        (overflow_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut flow_ticker = tokio::time::interval_at(Instant::now() + flow_period, flow_period);
    flow_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // Ahead of the events too: a busy router is alive, and must not starve its ping.
            _ = watchdog_ticker.tick(), if watchdog_every.is_some() => {
                watchdog_ping();
                continue;
            }
            // Ahead of the events, so a steady stream of them cannot starve the updates.
            _ = count_ticker.tick(), if router.player_count_due() => router.handle_player_count_tick(),
            event = rx.recv() => match event {
                None => break,
                Some(Event::Opened { conn, role, outbox, opening }) => {
                    outboxes.0.insert(conn, outbox);
                    router.handle_opened_with(conn, role, opening);
                }
                Some(Event::Message { conn, message, bytes }) => {
                    router.handle_message(conn, message, now);
                    flow.dispatch(&mut router, &mut outboxes, &now);
                    // Paid back after what it caused is charged, so the gate does not flicker.
                    outboxes.charge(conn, bytes, false);
                    if let Some(bridge) = &mut outboxes.2 {
                        bridge.publish_entries(&mut router);
                    }
                    publish(&router, &mut published, &counts, &outboxes.1, &mut refusals);
                    continue;
                }
                Some(Event::Closed { conn }) => {
                    outboxes.0.remove(&conn);
                    flow.handle_closed(conn, &mut outboxes);
                    router.handle_closed(conn);
                }
                Some(Event::Inspect(Inspect(read))) => {
                    read(&router);
                    continue;
                }
                Some(Event::Reconfigure(config)) => router.handle_reconfigure(*config),
                Some(Event::Gather(gather)) => match &mut outboxes.2 {
                    Some(bridge) => bridge.gather(gather, &router),
                    None => {
                        let _ = gather.reply.send(None);
                    }
                },
            },
            Some(conn) = room_rx.recv() => flow.handle_room(conn, &mut router, &mut outboxes),
            event = next_link_event(&mut link_events) => match event {
                Some(ClusterInput::Link(event)) => {
                    if let Some(bridge) = &mut outboxes.2 {
                        bridge.handle(event, &mut router, &now);
                    }
                }
                Some(ClusterInput::Claimed((entry, id, granted))) => {
                    router.handle_claimed(entry, id, granted);
                }
                None => link_events = None,
            },
            _ = ticker.tick(), if ping_enabled => router.handle_tick(wall_ms()),
            _ = flow_ticker.tick(), if !flow.is_idle() => {
                flow.handle_tick(now(), &mut router, &mut outboxes);
            }
        }
        flow.dispatch(&mut router, &mut outboxes, &now);
        if let Some(bridge) = &mut outboxes.2 {
            bridge.publish_entries(&mut router);
        }
        publish(&router, &mut published, &counts, &outboxes.1, &mut refusals);
    }
    debug!("router task ended");
}

/// What the cluster brings the router task.
enum ClusterInput {
    Link(LinkEvent<Wire>),
    Claimed(Claimed),
}

/// The next event of the cluster link or answer to an id claim; never, on a node alone (or
/// once the link has stopped: `None` turns the branch off).
async fn next_link_event(
    inputs: &mut Option<(
        mpsc::Receiver<LinkEvent<Wire>>,
        mpsc::UnboundedReceiver<Claimed>,
    )>,
) -> Option<ClusterInput> {
    let Some((events, claimed)) = inputs else {
        return std::future::pending().await;
    };
    tokio::select! {
        Some(claim) = claimed.recv() => Some(ClusterInput::Claimed(claim)),
        event = events.recv() => event.map(ClusterInput::Link),
    }
}

/// Publishes the router's counts if they changed since the last time, and counts its new
/// refusals.
fn publish(
    router: &Router,
    published: &mut Counts,
    counts: &watch::Sender<Counts>,
    metrics: &Option<Arc<Metrics>>,
    refusals: &mut Refusals,
) {
    if let Some(metrics) = metrics {
        let now = router.refusals();
        if now != *refusals {
            metrics.router_refusals(*refusals, now);
            *refusals = now;
        }
    }
    let current = router.counts();
    if current != *published {
        *published = current;
        counts.send_replace(current);
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_closes_over_budget_and_opens_when_paid_back() {
        let gate = Arc::new(Gate::new(100));
        gate.take(100);
        assert!(gate.is_open(), "at the budget the reader may go on");
        gate.take(1);
        assert!(!gate.is_open());
        let waiter = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.opened().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        gate.give(1);
        waiter.await.expect("reader woken");
        assert!(gate.is_open());
    }

    /// The watchdog's pings come from the router's own loop: they arrive while it turns, stop
    /// while it is wedged (here: a read that blocks its thread), and resume when it turns again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchdog_pings_come_from_the_router_loop_and_stop_while_it_is_wedged() {
        let (pings_tx, mut pings) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::channel(16);
        let (room, room_rx) = mpsc::unbounded_channel();
        let (counts, _) = watch::channel(Counts::default());
        let shutdown = CancellationToken::new();
        let every = Duration::from_millis(10);
        let task = tokio::spawn(run(
            Router::new(RouterConfig::default()),
            Flow::new(1000),
            Inputs {
                events: rx,
                room: room_rx,
                cluster: None,
            },
            Timers {
                protocol_ping: Duration::ZERO,
                overflow_timeout: Duration::from_secs(1),
                watchdog: Some(Watchdog {
                    every,
                    ping: Box::new(move || {
                        let _ = pings_tx.send(());
                    }),
                }),
            },
            shutdown.clone(),
            Reports {
                counts,
                metrics: None,
            },
        ));
        let handle = RouterHandle { tx, room };
        let bound = Duration::from_secs(10);
        for _ in 0..3 {
            tokio::time::timeout(bound, pings.recv())
                .await
                .expect("a ping while the router turns")
                .expect("pinger alive");
        }
        // Wedge the router: a read that blocks its thread until released.
        let (release, wedged) = std::sync::mpsc::channel::<()>();
        let (entered_tx, entered) = oneshot::channel();
        let stuck = tokio::spawn({
            let handle = handle.clone();
            async move {
                handle
                    .inspect(move |_| {
                        let _ = entered_tx.send(());
                        let _ = wedged.recv();
                    })
                    .await
            }
        });
        entered.await.expect("the router runs the read");
        while pings.try_recv().is_ok() {} // sent before the wedge
        // A window of many periods, not a synchronisation: nothing may arrive in it.
        let silent = tokio::time::timeout(every * 20, pings.recv()).await;
        assert!(silent.is_err(), "no ping while the router is wedged");
        release.send(()).expect("release the router");
        stuck.await.expect("the read ends").expect("answered");
        tokio::time::timeout(bound, pings.recv())
            .await
            .expect("pings resume once the router turns again")
            .expect("pinger alive");
        shutdown.cancel();
        task.await.expect("router task ends");
    }
}
