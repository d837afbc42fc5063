//! A connection's bounded outgoing queue: one consumer (the writer), cloneable producers (the
//! router task, and the connection itself for its own close).
//!
//! Why not `tokio::sync::mpsc`: its channel allocates a 32-slot block and a cache-padded
//! header up front, about 1.8 KiB per connection, most of it never used by an idle viewer.
//! This queue is one small allocation plus a `VecDeque` that grows only as messages wait; with
//! thousands of idle connections that is the difference the benchmark's KiB per connection shows.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Why [`Sender::try_send`] gave the item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds its limit.
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

struct State<T> {
    items: VecDeque<T>,
    limit: usize,
    senders: usize,
    receiver_open: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the receiver: an item arrived or the last sender left.
    ready: Notify,
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

/// A queue that holds at most `limit` items (at least one).
pub fn bounded<T>(limit: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            limit: limit.max(1),
            senders: 1,
            receiver_open: true,
        }),
        ready: Notify::new(),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

impl<T> Sender<T> {
    /// Queues `item` without waiting.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.lock();
        if !state.receiver_open {
            return Err(TrySendError::Closed(item));
        }
        if state.items.len() >= state.limit {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        drop(state);
        self.shared.ready.notify_one();
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        let last = state.senders == 0;
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
                let mut state = self.shared.lock();
                if let Some(item) = Self::pop(&mut state) {
                    return Some(item);
                }
                if state.senders == 0 {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// The next item if one is waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        Self::pop(&mut self.shared.lock())
    }

    fn pop(state: &mut State<T>) -> Option<T> {
        let item = state.items.pop_front();
        if state.items.is_empty() && state.items.capacity() > KEEP_CAPACITY {
            state.items = VecDeque::new();
        }
        item
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
    use super::*;

    #[tokio::test]
    async fn items_come_out_in_order_up_to_the_limit() {
        let (tx, mut rx) = bounded(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(tx.try_send(4), Ok(()));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), Some(4));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn recv_ends_after_the_last_sender_and_the_last_item() {
        let (tx, mut rx) = bounded(4);
        let tx2 = tx.clone();
        tx.try_send("a").expect("room");
        drop(tx);
        tx2.try_send("b").expect("room");
        drop(tx2);
        assert_eq!(rx.recv().await, Some("a"));
        assert_eq!(rx.recv().await, Some("b"));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_from_another_task() {
        let (tx, mut rx) = bounded(1);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send(7).expect("room");
        assert_eq!(waiter.await.expect("receiver task"), Some(7));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_when_the_senders_go() {
        let (tx, mut rx) = bounded::<u8>(1);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiter.await.expect("receiver task"), None);
    }

    #[test]
    fn sending_to_a_dropped_receiver_gives_the_item_back() {
        let (tx, rx) = bounded(1);
        drop(rx);
        let err = tx.try_send(5).expect_err("receiver gone");
        assert_eq!(err, TrySendError::Closed(5));
        assert_eq!(err.into_inner(), 5);
    }

    #[tokio::test]
    async fn an_emptied_queue_gives_back_a_burst_s_memory() {
        let (tx, mut rx) = bounded(1000);
        for i in 0..100 {
            tx.try_send(i).expect("room");
        }
        for i in 0..100 {
            assert_eq!(rx.recv().await, Some(i));
        }
        assert_eq!(tx.shared.lock().items.capacity(), 0);
    }
}
