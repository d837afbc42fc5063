//! The overflow policy (PROTOCOL.md §1.7): what happens to a message that does not fit its
//! receiver's outgoing queue, and who pays for it. Sans-IO like the rest of the core: the
//! queues are reached through [`Queues`], the clock is an argument, and `tests.rs` drives it
//! with simulated queues.
//!
//! Each output of the [`Router`] carries a [`Charge`]:
//! - `Receiver`: traffic the receiver must keep up with. If its lane is full, the receiver
//!   failed to read and is closed 1008 "too slow".
//! - `Sender(x)`: traffic peer `x` caused (a subscriber writing to its streamer, a reply to a
//!   request of `x`). If the receiver's senders' lane is full, the message waits here, in the
//!   receiver's production order, and its bytes are charged to `x`, whose reader stops while its
//!   charge is over its budget: `x` is slowed to the pace at which the receiver reads. If one of
//!   `x`'s messages has waited `overflow_timeout`, `x` is closed 1008 "sending too fast". The
//!   receiver is never closed for it.
//! - `Always` / `Ends(x)`: subscription bookkeeping, always delivered; `Ends(x)` first drops what
//!   `x` still has waiting for the receiver (its subscription there is over).

use std::collections::VecDeque;

use protocol::close::{self, Close};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::{debug, warn};

use super::{Charge, ConnId, HashMap, Output, Router};
use crate::queue::Lane;

/// Why a queue did not take a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its lane is full; the message comes back.
    Full(Utf8Bytes),
    /// The connection is gone.
    Gone,
}

/// The IO side of the policy: every connection's queue and reader.
pub trait Queues {
    /// Queues `text` on `to` in `lane` if the lane has room.
    fn try_send(&mut self, to: ConnId, text: Utf8Bytes, lane: Lane) -> Result<(), Refused>;
    /// Queues `text` on `to` whatever its lane holds; false if `to` is gone.
    fn force_send(&mut self, to: ConnId, text: Utf8Bytes) -> bool;
    /// Asks for [`Flow::handle_room`] once `need` bytes fit in `conn`'s senders' lane; true if
    /// they already do (then no call comes).
    fn want_room(&mut self, conn: ConnId, need: usize) -> bool;
    /// `conn` has `bytes` more (`add`) or fewer waiting: its reader stops while it has more than
    /// its budget.
    fn charge(&mut self, conn: ConnId, bytes: usize, add: bool);
    /// Sends a close frame after what `conn` has queued, then ends it.
    fn close(&mut self, conn: ConnId, code: u16, reason: String);
    /// Sends a close frame at once, ahead of what is queued (the peer is not reading it).
    fn close_now(&mut self, conn: ConnId, close: Close);
    /// Drops the TCP connection without a close frame.
    fn drop_conn(&mut self, conn: ConnId);
    /// Hand a message to the cluster layer, for another node (never refused: the cluster layer
    /// bounds what it holds itself).
    fn remote(&mut self, out: super::RemoteOut);
}

#[derive(Debug)]
struct Waiting {
    from: ConnId,
    text: Utf8Bytes,
    since_ms: u64,
}

/// The messages that wait for room, per receiver.
#[derive(Debug)]
pub struct Flow {
    waiting: HashMap<ConnId, VecDeque<Waiting>>,
    timeout_ms: u64,
}

impl Flow {
    /// A sender whose message has waited `timeout_ms` is closed.
    pub fn new(timeout_ms: u64) -> Self {
        Self {
            waiting: HashMap::default(),
            timeout_ms: timeout_ms.max(1),
        }
    }

    /// Whether anything waits (then [`Flow::handle_tick`] has work).
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Bytes waiting in all, for tests and figures.
    pub fn waiting_bytes(&self) -> usize {
        self.waiting.values().flatten().map(|w| w.text.len()).sum()
    }

    /// Hands every pending output of `router` to the queues. `now_ms` is read only when a
    /// message has to wait (a clock read per message would cost a few percent of relaying one).
    pub fn dispatch(
        &mut self,
        router: &mut Router,
        queues: &mut impl Queues,
        now_ms: &impl Fn() -> u64,
    ) {
        while let Some(output) = router.poll_output() {
            match output {
                Output::Send { to, text, charge } => match charge {
                    Charge::Receiver => match queues.try_send(to, text, Lane::Receiver) {
                        Ok(()) => {}
                        Err(Refused::Full(_)) => {
                            warn!(conn = %to, "outgoing queue full; closing 1008");
                            queues.close_now(to, close::TOO_SLOW);
                            self.gone(to, queues);
                            router.handle_closed(to);
                        }
                        Err(Refused::Gone) => {
                            self.gone(to, queues);
                            router.handle_closed(to);
                        }
                    },
                    Charge::Sender(from) => {
                        self.send_charged(router, queues, to, from, text, now_ms)
                    }
                    Charge::Always => self.force(router, queues, to, text),
                    Charge::Ends(sub) => {
                        self.drop_from(to, sub, queues);
                        self.force(router, queues, to, text);
                    }
                },
                Output::Close { conn, code, reason } => {
                    self.gone(conn, queues);
                    queues.close(conn, code, reason);
                }
                Output::Drop { conn } => {
                    self.gone(conn, queues);
                    queues.drop_conn(conn);
                }
                Output::Remote(out) => queues.remote(out),
            }
        }
    }

    /// `conn`'s senders' lane has room again: what waits for it goes in, in order, while it fits.
    pub fn handle_room(&mut self, conn: ConnId, router: &mut Router, queues: &mut impl Queues) {
        let Some(list) = self.waiting.get_mut(&conn) else {
            return;
        };
        while let Some(first) = list.pop_front() {
            let (from, bytes) = (first.from, first.text.len());
            match queues.try_send(conn, first.text, Lane::Senders) {
                Ok(()) => queues.charge(from, bytes, false),
                Err(Refused::Full(text)) => {
                    let need = text.len();
                    list.push_front(Waiting { text, ..first });
                    if queues.want_room(conn, need) {
                        continue;
                    }
                    return;
                }
                Err(Refused::Gone) => {
                    queues.charge(from, bytes, false);
                    self.gone(conn, queues);
                    router.handle_closed(conn);
                    return;
                }
            }
        }
        self.waiting.remove(&conn);
    }

    /// `conn` ended on its own: what waits for it is dropped. The caller tells the router.
    pub fn handle_closed(&mut self, conn: ConnId, queues: &mut impl Queues) {
        self.gone(conn, queues);
    }

    /// Time passed: each sender with a message waiting `timeout_ms` or longer is closed 1008
    /// "sending too fast", and the router runs its disconnect handling.
    pub fn handle_tick(&mut self, now_ms: u64, router: &mut Router, queues: &mut impl Queues) {
        loop {
            let stuck = self
                .waiting
                .values()
                .filter_map(VecDeque::front)
                .find(|w| now_ms.saturating_sub(w.since_ms) >= self.timeout_ms)
                .map(|w| w.from);
            let Some(sender) = stuck else {
                return;
            };
            if router.is_open(sender) {
                warn!(conn = %sender, "messages waited {} ms for their receiver to read; closing 1008", self.timeout_ms);
                queues.close_now(sender, close::SENDING_TOO_FAST);
                router.handle_closed(sender);
            }
            // Its subscription's end dropped what it had waiting for its entry; whatever is
            // left (waiting for itself, or orphaned) goes now.
            self.gone(sender, queues);
            let lists: Vec<ConnId> = self.waiting.keys().copied().collect();
            for to in lists {
                self.drop_from(to, sender, queues);
            }
            self.dispatch(router, queues, &|| now_ms);
        }
    }

    fn send_charged(
        &mut self,
        router: &mut Router,
        queues: &mut impl Queues,
        to: ConnId,
        from: ConnId,
        text: Utf8Bytes,
        now_ms: &impl Fn() -> u64,
    ) {
        // Behind what already waits for `to`, so `to` gets its messages in production order.
        let waits = !self.waiting.is_empty() && self.waiting.contains_key(&to);
        let text = match waits {
            true => text,
            false => match queues.try_send(to, text, Lane::Senders) {
                Ok(()) => return,
                Err(Refused::Full(text)) => {
                    debug!(conn = %from, to = %to, "receiver's queue full; message waits, sender slowed");
                    text
                }
                Err(Refused::Gone) => {
                    self.gone(to, queues);
                    router.handle_closed(to);
                    return;
                }
            },
        };
        let need = text.len();
        queues.charge(from, need, true);
        let first = !self.waiting.contains_key(&to);
        self.waiting.entry(to).or_default().push_back(Waiting {
            from,
            text,
            since_ms: now_ms(),
        });
        // The writer may have made room between the refusal and now.
        if first && queues.want_room(to, need) {
            self.handle_room(to, router, queues);
        }
    }

    fn force(
        &mut self,
        router: &mut Router,
        queues: &mut impl Queues,
        to: ConnId,
        text: Utf8Bytes,
    ) {
        if !queues.force_send(to, text) {
            self.gone(to, queues);
            router.handle_closed(to);
        }
    }

    /// Drops what `from` has waiting for `to`.
    fn drop_from(&mut self, to: ConnId, from: ConnId, queues: &mut impl Queues) {
        let Some(list) = self.waiting.get_mut(&to) else {
            return;
        };
        list.retain(|w| {
            let keep = w.from != from;
            if !keep {
                queues.charge(from, w.text.len(), false);
            }
            keep
        });
        if list.is_empty() {
            self.waiting.remove(&to);
        }
    }

    /// `conn` is gone: what waits for it is dropped and its senders are released.
    fn gone(&mut self, conn: ConnId, queues: &mut impl Queues) {
        if let Some(list) = self.waiting.remove(&conn) {
            for w in list {
                queues.charge(w.from, w.text.len(), false);
            }
        }
    }
}
