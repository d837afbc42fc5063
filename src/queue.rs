//! A connection's bounded outgoing queue: one consumer (the writer), cloneable producers (the
//! router task, and the connection itself for its own close).
//!
//! It is bounded in messages and in bytes, per [`Lane`]: what the connection must read for its
//! own sake (its streamer's offers, pings: the receiver's lane) and what other peers caused to be
//! sent to it (a subscriber's messages to its streamer, replies to the connection's own requests:
//! the senders' lane). The two lanes share one FIFO, so order is kept; they only count apart, so
//! that a flood in the senders' lane never makes the receiver look slow (PROTOCOL.md §1.7).
//!
//! Why not `tokio::sync::mpsc`: its channel allocates a 32-slot block and a cache-padded
//! header up front, about 1.8 KiB per connection, most of it never used by an idle viewer, and it
//! cannot count bytes. This queue is one small allocation plus a `VecDeque` that grows only as
//! messages wait; with thousands of idle connections that is the difference the benchmark's KiB
//! per connection shows.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Which budget an item counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Traffic the receiver must keep up with; overflow is the receiver's failure to read.
    Receiver,
    /// Traffic another peer (or the receiver's own requests) caused; overflow is charged to
    /// whoever sent it.
    Senders,
}

/// The limits of one lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub messages: usize,
    pub bytes: usize,
}

/// Why [`Sender::try_send`] gave the item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The lane holds its limit.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

impl<T> TrySendError<T> {
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(item) | Self::Closed(item) => item,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Count {
    messages: usize,
    bytes: usize,
}

struct State<T> {
    items: VecDeque<(T, Lane, usize)>,
    limits: Limits,
    receiver: Count,
    senders: Count,
    /// A producer was refused in the senders' lane and wants to hear when this many bytes fit.
    room_wanted: Option<usize>,
    sender_handles: usize,
    receiver_open: bool,
}

impl<T> State<T> {
    fn count(&mut self, lane: Lane) -> &mut Count {
        match lane {
            Lane::Receiver => &mut self.receiver,
            Lane::Senders => &mut self.senders,
        }
    }

    /// Whether `bytes` more fit in `lane`. An empty lane takes any one item, so a message larger
    /// than the byte limit (up to `max_message_size`) still gets through alone.
    fn fits(&mut self, lane: Lane, bytes: usize) -> bool {
        let limits = self.limits;
        let count = self.count(lane);
        count.messages == 0
            || (count.messages < limits.messages && count.bytes + bytes <= limits.bytes)
    }

    /// The senders' lane takes `need` more bytes and is at most half full (so a refused
    /// producer resumes with room for a burst, not one message at a time).
    fn has_room(&mut self, need: usize) -> bool {
        self.fits(Lane::Senders, need)
            && self.senders.messages <= self.limits.messages / 2
            && self.senders.bytes <= self.limits.bytes / 2
    }
}

/// Called (outside the lock) when the senders' lane has room again after a refusal.
pub type RoomSignal = Box<dyn Fn() + Send + Sync>;

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the receiver: an item arrived or the last sender left.
    ready: Notify,
    room: Option<RoomSignal>,
}

impl<T> Shared<T> {
    /// The state; a panic elsewhere while holding the lock leaves it usable (no invariant spans
    /// more than one statement).
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The producing side.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The consuming side.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A queue whose lanes each hold at most `limits` (at least one item each); `room` is called
/// when the senders' lane has room again after [`Sender::want_room`].
pub fn bounded<T>(limits: Limits, room: Option<RoomSignal>) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            limits: Limits {
                messages: limits.messages.max(1),
                bytes: limits.bytes,
            },
            receiver: Count::default(),
            senders: Count::default(),
            room_wanted: None,
            sender_handles: 1,
            receiver_open: true,
        }),
        ready: Notify::new(),
        room,
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

impl<T> Sender<T> {
    /// Queues `item` of `bytes` in `lane` without waiting, if the lane has room.
    pub fn try_send(&self, item: T, lane: Lane, bytes: usize) -> Result<(), TrySendError<T>> {
        self.push(item, lane, bytes, false)
    }

    /// Queues `item` whatever the lane holds (a close, or a message that must not be lost). The
    /// caller bounds how often it does this.
    pub fn force_send(&self, item: T, lane: Lane, bytes: usize) -> Result<(), T> {
        self.push(item, lane, bytes, true)
            .map_err(TrySendError::into_inner)
    }

    fn push(&self, item: T, lane: Lane, bytes: usize, force: bool) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.lock();
        if !state.receiver_open {
            return Err(TrySendError::Closed(item));
        }
        if !force && !state.fits(lane, bytes) {
            return Err(TrySendError::Full(item));
        }
        let count = state.count(lane);
        count.messages += 1;
        count.bytes += bytes;
        state.items.push_back((item, lane, bytes));
        drop(state);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Asks for the room signal once `need` bytes fit in the senders' lane and it is at most
    /// half full; true if that is so already (then no signal comes).
    pub fn want_room(&self, need: usize) -> bool {
        let mut state = self.shared.lock();
        if state.has_room(need) {
            return true;
        }
        state.room_wanted = Some(need);
        false
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().sender_handles += 1;
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.sender_handles -= 1;
        let last = state.sender_handles == 0;
        drop(state);
        if last {
            self.shared.ready.notify_one();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue::Sender")
    }
}

/// Above this many slots an emptied queue gives its memory back (a burst is over).
const KEEP_CAPACITY: usize = 32;

impl<T> Receiver<T> {
    /// The next item; None once it is empty and every sender is gone. Cancel-safe.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            // A notify_one that comes before this future is polled leaves a permit, so no wake
            // is lost between the check and the wait.
            let notified = self.shared.ready.notified();
            {
                let state = self.shared.lock();
                if !state.items.is_empty() {
                    return self.pop(state);
                }
                if state.sender_handles == 0 {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// The next item if one is waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        let state = self.shared.lock();
        self.pop(state)
    }

    fn pop(&self, mut state: MutexGuard<'_, State<T>>) -> Option<T> {
        let (item, lane, bytes) = state.items.pop_front()?;
        let count = state.count(lane);
        count.messages -= 1;
        count.bytes -= bytes;
        if state.items.is_empty() && state.items.capacity() > KEEP_CAPACITY {
            state.items = VecDeque::new();
        }
        let signal = state.room_wanted.is_some_and(|need| state.has_room(need));
        if signal {
            state.room_wanted = None;
        }
        drop(state);
        if signal {
            if let Some(room) = &self.shared.room {
                room();
            }
        }
        Some(item)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_open = false;
        // Free what waits now rather than when the last sender goes.
        let items = std::mem::take(&mut state.items);
        drop(state);
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const R: Lane = Lane::Receiver;
    const S: Lane = Lane::Senders;

    fn limits(messages: usize, bytes: usize) -> Limits {
        Limits { messages, bytes }
    }

    #[tokio::test]
    async fn items_come_out_in_order_up_to_the_message_limit() {
        let (tx, mut rx) = bounded(limits(2, 1000), None);
        assert_eq!(tx.try_send(1, R, 1), Ok(()));
        assert_eq!(tx.try_send(2, R, 1), Ok(()));
        assert_eq!(tx.try_send(3, R, 1), Err(TrySendError::Full(3)));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(tx.try_send(4, R, 1), Ok(()));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), Some(4));
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn each_lane_is_bounded_in_bytes_and_apart_from_the_other() {
        let (tx, mut rx) = bounded(limits(100, 10), None);
        assert_eq!(tx.try_send("a", S, 6), Ok(()));
        assert_eq!(tx.try_send("b", S, 5), Err(TrySendError::Full("b")));
        // The receiver's lane is untouched by the senders' flood.
        assert_eq!(tx.try_send("c", R, 10), Ok(()));
        assert_eq!(tx.try_send("d", R, 1), Err(TrySendError::Full("d")));
        assert_eq!(rx.try_recv(), Some("a"));
        assert_eq!(tx.try_send("b", S, 5), Ok(()));
        assert_eq!(rx.try_recv(), Some("c"));
        assert_eq!(rx.try_recv(), Some("b"));
    }

    #[test]
    fn an_empty_lane_takes_one_item_larger_than_its_byte_limit() {
        let (tx, _rx) = bounded(limits(100, 10), None);
        assert_eq!(tx.try_send(1, S, 50), Ok(()));
        assert_eq!(tx.try_send(2, S, 1), Err(TrySendError::Full(2)));
    }

    #[test]
    fn a_forced_item_goes_in_whatever_the_lane_holds() {
        let (tx, mut rx) = bounded(limits(1, 10), None);
        assert_eq!(tx.try_send(1, S, 10), Ok(()));
        assert_eq!(tx.force_send(2, S, 10), Ok(()));
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        drop(rx);
        assert_eq!(tx.force_send(3, S, 1), Err(3));
    }

    #[test]
    fn the_room_signal_comes_once_the_senders_lane_is_half_empty() {
        let signals = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&signals);
        let room: RoomSignal = Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let (tx, mut rx) = bounded(limits(100, 40), Some(room));
        for i in 0..4 {
            tx.try_send(i, S, 10).expect("room");
        }
        assert!(!tx.want_room(10));
        assert_eq!(rx.try_recv(), Some(0));
        assert_eq!(signals.load(Ordering::SeqCst), 0, "30 bytes left: not yet");
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(signals.load(Ordering::SeqCst), 1, "20 of 40 bytes: room");
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(signals.load(Ordering::SeqCst), 1, "only once per want_room");
        assert!(tx.want_room(10), "already room: true and no signal");
        assert!(!tx.want_room(35), "35 bytes do not fit beside 10");
    }

    #[tokio::test]
    async fn recv_ends_after_the_last_sender_and_the_last_item() {
        let (tx, mut rx) = bounded(limits(4, 100), None);
        let tx2 = tx.clone();
        tx.try_send("a", R, 1).expect("room");
        drop(tx);
        tx2.try_send("b", R, 1).expect("room");
        drop(tx2);
        assert_eq!(rx.recv().await, Some("a"));
        assert_eq!(rx.recv().await, Some("b"));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_from_another_task() {
        let (tx, mut rx) = bounded(limits(1, 100), None);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send(7, R, 1).expect("room");
        assert_eq!(waiter.await.expect("receiver task"), Some(7));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_when_the_senders_go() {
        let (tx, mut rx) = bounded::<u8>(limits(1, 100), None);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiter.await.expect("receiver task"), None);
    }

    #[test]
    fn sending_to_a_dropped_receiver_gives_the_item_back() {
        let (tx, rx) = bounded(limits(1, 100), None);
        drop(rx);
        let err = tx.try_send(5, R, 1).expect_err("receiver gone");
        assert_eq!(err, TrySendError::Closed(5));
        assert_eq!(err.into_inner(), 5);
    }

    #[tokio::test]
    async fn an_emptied_queue_gives_back_a_burst_s_memory() {
        let (tx, mut rx) = bounded(limits(1000, 1 << 20), None);
        for i in 0..100 {
            tx.try_send(i, R, 1).expect("room");
        }
        for i in 0..100 {
            assert_eq!(rx.recv().await, Some(i));
        }
        assert_eq!(tx.shared.lock().items.capacity(), 0);
    }
}
