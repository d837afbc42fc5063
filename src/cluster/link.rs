//! The cluster link's sans-IO core: sequencing of envelopes between nodes, gap, duplicate and
//! stale detection, membership (who is up, who timed out, who came back as a new incarnation)
//! and this node's own incarnation. It never reads the clock (`now_ms` is an argument, the
//! caller's monotonic milliseconds) and never talks to Redis: envelopes come in as the JSON
//! strings read from this node's inbox, and decisions go out as [`Output`]s that the IO task
//! (`link_task`) carries out.
//!
//! The rules (docs of issue 14, "Cluster design"):
//! - Every envelope from one incarnation of a node to one incarnation of another carries a
//!   sequence number, 1, 2, 3, … per destination. The receiver expects them in order: a lower
//!   one is a duplicate (dropped), a higher one a gap (something was lost: the sender's
//!   incarnation is declared dead at once, never silently skipped).
//! - Every envelope is a sign of life; an incarnation unheard for `node_timeout` is dead; so is
//!   the old incarnation of a node id once a new one is heard. A dead incarnation never comes up
//!   again: what it sends later is dropped, and it is told it was declared dead, so that it
//!   starts a new incarnation.
//! - Events per node incarnation are `Up`, `Message`*, `Down`, within one incarnation of this
//!   node. When this node starts a new incarnation (Redis lost for `node_timeout`, or it learns
//!   that it was declared dead) every node up is reported `Down` first; nodes that are still
//!   alive come `Up` again, to the new incarnation, when heard from.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::{debug, warn};

/// One incarnation of a node: its id and the random number it chose when it (re)started.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeKey {
    pub(crate) id: Arc<str>,
    pub(crate) inc: u64,
}

impl NodeKey {
    pub(crate) fn new(id: impl Into<Arc<str>>, inc: u64) -> Self {
        Self { id: id.into(), inc }
    }
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.id, self.inc)
    }
}

/// What the rest of the server learns from the link, in order on one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LinkEvent<B> {
    /// Redis is reachable again (or for the first time).
    Connected,
    /// Redis cannot be reached; nodes stay up until `node_timeout` has passed without it.
    Disconnected,
    /// A node incarnation was heard from: messages can be sent to it.
    Up(NodeKey),
    /// A body from a node incarnation that is up, in the order it sent them.
    Message(NodeKey, B),
    /// A node incarnation is gone: nothing more comes from it, nothing more reaches it.
    Down(NodeKey),
}

/// What the IO task must do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Output<B> {
    /// Hand this event to the server.
    Event(LinkEvent<B>),
    /// Append this envelope to the inbox of this node id (`XADD … MAXLEN ~`).
    Send { to: Arc<str>, envelope: String },
    /// Remove this incarnation from the nodes hash, if the hash still holds it.
    Forget(NodeKey),
    /// Another node declared this incarnation dead: start a new one ([`Link::reincarnate`]).
    DeclaredDead,
}

/// The body of a heartbeat, exactly as sent; bodies of the server must never serialize to this
/// or to [`DEAD`].
pub(crate) const HEARTBEAT: &str = r#"{"t":"hb"}"#;
/// The body of the notice to an incarnation that was declared dead ("start a new one"); sent
/// unsequenced (`seq` 0), to that incarnation.
pub(crate) const DEAD: &str = r#"{"t":"dead"}"#;

#[derive(Serialize)]
struct EnvelopeOut<'a, T: Serialize + ?Sized> {
    from: &'a str,
    inc: u64,
    to_inc: u64,
    seq: u64,
    body: &'a T,
}

#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    from: String,
    inc: u64,
    to_inc: u64,
    seq: u64,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// A node incarnation this one has heard from, in this incarnation.
#[derive(Debug)]
struct Up {
    last_heard_ms: u64,
    /// The sequence number its next envelope to us must carry.
    expect: u64,
}

/// The core of the link; see the module doc.
#[derive(Debug)]
pub(crate) struct Link<B> {
    me: NodeKey,
    node_timeout_ms: u64,
    /// How often a dead incarnation that keeps sending is told so, at most.
    notice_interval_ms: u64,
    up: HashMap<NodeKey, Up>,
    /// The incarnation up for each node id (at most one).
    up_by_id: HashMap<Arc<str>, u64>,
    /// Incarnations listed in the nodes hash but not heard from yet, with when first listed:
    /// heart-beaten so that they hear of us, forgotten after `node_timeout` of silence.
    listed: HashMap<NodeKey, u64>,
    /// The sequence number of the last envelope sent to each destination, in this incarnation.
    sent: HashMap<NodeKey, u64>,
    /// Incarnations declared dead, with when they were last told so. Kept for the life of the
    /// process (a few bytes per death): a dead incarnation must never come back, however late
    /// its envelopes arrive.
    dead: HashMap<NodeKey, Option<u64>>,
    out: VecDeque<Output<B>>,
}

impl<B: Serialize + DeserializeOwned> Link<B> {
    pub(crate) fn new(me: NodeKey, node_timeout_ms: u64, heartbeat_interval_ms: u64) -> Self {
        Self {
            me,
            node_timeout_ms,
            notice_interval_ms: heartbeat_interval_ms.max(1),
            up: HashMap::new(),
            up_by_id: HashMap::new(),
            listed: HashMap::new(),
            sent: HashMap::new(),
            dead: HashMap::new(),
            out: VecDeque::new(),
        }
    }

    pub(crate) fn me(&self) -> &NodeKey {
        &self.me
    }

    /// The node incarnations up now.
    #[cfg(test)]
    pub(crate) fn up(&self) -> impl Iterator<Item = &NodeKey> {
        self.up.keys()
    }

    #[cfg(test)]
    pub(crate) fn is_up(&self, node: &NodeKey) -> bool {
        self.up.contains_key(node)
    }

    /// Queues an event from outside the core (Redis connected or not), in order with its own.
    pub(crate) fn push_event(&mut self, event: LinkEvent<B>) {
        self.out.push_back(Output::Event(event));
    }

    pub(crate) fn poll_output(&mut self) -> Option<Output<B>> {
        self.out.pop_front()
    }

    /// Sends `body` to `to`, after everything sent to it before. Dropped (false) when `to` is
    /// not up: it is dead, or was never heard from in this incarnation.
    pub(crate) fn send(&mut self, to: &NodeKey, body: &B) -> bool {
        if !self.up.contains_key(to) {
            debug!(node = %to, "cluster: message for a node that is not up dropped");
            return false;
        }
        let seq = self.next_seq(to);
        match self.envelope(to.inc, seq, body) {
            Ok(envelope) => {
                self.out.push_back(Output::Send {
                    to: to.id.clone(),
                    envelope,
                });
                true
            }
            Err(error) => {
                // A body that does not serialize is our bug; the sequence number is spent, so
                // the receiver sees a gap rather than a silent skip.
                warn!(node = %to, %error, "cluster: message not serializable, dropped");
                false
            }
        }
    }

    /// Sends `body` to every node up now (serialized once).
    pub(crate) fn broadcast(&mut self, body: &B) {
        let raw = match serde_json::value::to_raw_value(body) {
            Ok(raw) => raw,
            Err(error) => {
                warn!(%error, "cluster: broadcast not serializable, dropped");
                return;
            }
        };
        let mut to: Vec<NodeKey> = self.up.keys().cloned().collect();
        to.sort_unstable();
        for node in to {
            let seq = self.next_seq(&node);
            if let Ok(envelope) = self.envelope(node.inc, seq, &*raw) {
                self.out.push_back(Output::Send {
                    to: node.id.clone(),
                    envelope,
                });
            }
        }
    }

    /// A heartbeat to every node up or listed in the nodes hash.
    pub(crate) fn heartbeat(&mut self) {
        let mut to: Vec<NodeKey> = self.up.keys().chain(self.listed.keys()).cloned().collect();
        to.sort_unstable();
        to.dedup();
        for node in to {
            self.heartbeat_to(&node);
        }
    }

    fn heartbeat_to(&mut self, node: &NodeKey) {
        let seq = self.next_seq(node);
        self.send_control(node, seq, HEARTBEAT);
    }

    /// The nodes hash as read from Redis (node id → incarnation in decimal): whom to heartbeat.
    /// Never ends an incarnation (a read may be older than what was heard since).
    pub(crate) fn handle_nodes(&mut self, nodes: &[(String, String)], now_ms: u64) {
        let mut listed = HashSet::new();
        for (id, inc) in nodes {
            if **id == *self.me.id {
                continue;
            }
            let Ok(inc) = inc.parse::<u64>() else {
                warn!(node = %id, value = %inc, "cluster: nodes hash entry is not an incarnation, ignored");
                continue;
            };
            let key = NodeKey::new(id.as_str(), inc);
            if self.dead.contains_key(&key) {
                // A stale entry (its remover raced its last heartbeat): remove it again.
                self.out.push_back(Output::Forget(key));
                continue;
            }
            if self.up.contains_key(&key) {
                continue;
            }
            listed.insert(key.clone());
            if !self.listed.contains_key(&key) {
                self.listed.insert(key.clone(), now_ms);
                // Heard of at once, not one heartbeat interval later.
                self.heartbeat_to(&key);
            }
        }
        self.listed.retain(|key, _| listed.contains(key));
    }

    /// One envelope read from this node's inbox.
    pub(crate) fn handle_envelope(&mut self, raw: &str, now_ms: u64) {
        let envelope: EnvelopeIn<'_> = match serde_json::from_str(raw) {
            Ok(envelope) => envelope,
            Err(error) => {
                warn!(%error, "cluster: malformed envelope in the inbox, dropped");
                return;
            }
        };
        if *envelope.from == *self.me.id {
            // Another process with our node id, or our own past life: never a peer.
            if envelope.inc != self.me.inc {
                warn!(
                    inc = envelope.inc,
                    "cluster: envelope from another incarnation of this node id, dropped"
                );
            }
            return;
        }
        if envelope.to_inc != 0 && envelope.to_inc != self.me.inc {
            debug!(from = %envelope.from, "cluster: envelope for a past incarnation of this node, dropped");
            return;
        }
        let body = envelope.body.get();
        if envelope.seq == 0 {
            // Unsequenced: a first heartbeat to a node id without a known incarnation, or the
            // notice that we were declared dead.
            if body == DEAD {
                if envelope.to_inc == self.me.inc {
                    warn!(by = %envelope.from, me = %self.me, "cluster: this node was declared dead by another; starting a new incarnation");
                    self.out.push_back(Output::DeclaredDead);
                }
                return;
            }
            if body != HEARTBEAT || envelope.to_inc != 0 {
                warn!(from = %envelope.from, "cluster: unsequenced envelope that is not a first heartbeat, dropped");
                return;
            }
        }
        let key = NodeKey::new(envelope.from, envelope.inc);
        if self.dead.contains_key(&key) {
            self.notify_dead(&key, now_ms);
            return;
        }
        if envelope.seq != 0 && envelope.to_inc == 0 {
            warn!(from = %key, "cluster: sequenced envelope without a destination incarnation, dropped");
            return;
        }
        // A new incarnation of a node id ends the old one first.
        if let Some(old) = self
            .up_by_id
            .get(&key.id)
            .copied()
            .filter(|&old| old != key.inc)
        {
            let old = NodeKey::new(key.id.clone(), old);
            debug!(old = %old, new = %key, "cluster: node restarted as a new incarnation");
            self.declare_dead(&old, "it restarted", now_ms);
        }
        let expect = self.up.get(&key).map_or(1, |up| up.expect);
        if envelope.seq != 0 {
            if envelope.seq < expect {
                debug!(from = %key, seq = envelope.seq, expect, "cluster: duplicate envelope dropped");
                if let Some(up) = self.up.get_mut(&key) {
                    up.last_heard_ms = now_ms;
                }
                return;
            }
            if envelope.seq > expect {
                warn!(from = %key, seq = envelope.seq, expect, "cluster: envelopes from this node were lost (its inbox was trimmed or Redis lost them); declaring it dead");
                self.declare_dead(&key, "envelopes lost", now_ms);
                return;
            }
        }
        if !self.up.contains_key(&key) {
            self.listed.remove(&key);
            self.up_by_id.insert(key.id.clone(), key.inc);
            self.out
                .push_back(Output::Event(LinkEvent::Up(key.clone())));
            if !self.sent.contains_key(&key) {
                // A first contact is answered at once, so that it hears of us too.
                self.heartbeat_to(&key);
            }
        }
        let up = self.up.entry(key.clone()).or_insert(Up {
            last_heard_ms: now_ms,
            expect: 1,
        });
        up.last_heard_ms = now_ms;
        if envelope.seq != 0 {
            up.expect = envelope.seq + 1;
        }
        self.deliver(key, envelope.seq, body);
    }

    fn deliver(&mut self, from: NodeKey, seq: u64, body: &str) {
        if seq == 0 || body == HEARTBEAT {
            return;
        }
        match serde_json::from_str::<B>(body) {
            Ok(body) => self
                .out
                .push_back(Output::Event(LinkEvent::Message(from, body))),
            // A body this build does not understand (a newer node during a rolling upgrade):
            // not a loss in transit, so the node stays up; said loudly.
            Err(error) => warn!(from = %from, %error, "cluster: message not understood, dropped"),
        }
    }

    /// Ends every incarnation unheard for `node_timeout`. Not to be called while Redis is
    /// unreachable (silence then says nothing about the others); see [`Self::redis_back`].
    pub(crate) fn tick(&mut self, now_ms: u64) {
        let timeout = self.node_timeout_ms;
        let mut silent: Vec<NodeKey> = self
            .up
            .iter()
            .filter(|(_, up)| now_ms.saturating_sub(up.last_heard_ms) >= timeout)
            .map(|(key, _)| key.clone())
            .collect();
        silent.sort_unstable();
        for key in silent {
            warn!(node = %key, "cluster: node silent for the node timeout; declaring it dead");
            self.declare_dead(&key, "silent", now_ms);
        }
        let mut unheard: Vec<NodeKey> = self
            .listed
            .iter()
            .filter(|&(_, &since)| now_ms.saturating_sub(since) >= timeout)
            .map(|(key, _)| key.clone())
            .collect();
        unheard.sort_unstable();
        for key in unheard {
            debug!(node = %key, "cluster: listed node never heard from; forgetting it");
            self.declare_dead(&key, "never heard", now_ms);
        }
    }

    /// Redis is reachable again after an outage shorter than `node_timeout`: the silence of the
    /// others was ours, so their clocks start again now.
    pub(crate) fn redis_back(&mut self, now_ms: u64) {
        for up in self.up.values_mut() {
            up.last_heard_ms = now_ms;
        }
        for since in self.listed.values_mut() {
            *since = now_ms;
        }
    }

    /// Starts a new incarnation of this node: every node up is reported down, and everything
    /// sent or expected in the old one is forgotten. The nodes reported down here are not
    /// declared dead (it was this node that was cut off): they come up again when heard from.
    pub(crate) fn reincarnate(&mut self, inc: u64) {
        let mut downs: Vec<NodeKey> = self.up.drain().map(|(key, _)| key).collect();
        downs.sort_unstable();
        for key in downs {
            self.out.push_back(Output::Event(LinkEvent::Down(key)));
        }
        self.up_by_id.clear();
        self.listed.clear();
        self.sent.clear();
        // Sends of the old life still queued would reach the others stamped with it.
        self.out
            .retain(|output| !matches!(output, Output::Send { .. }));
        self.me.inc = inc;
    }

    fn declare_dead(&mut self, key: &NodeKey, why: &'static str, now_ms: u64) {
        debug!(node = %key, why, "cluster: declared dead");
        if self.up.remove(key).is_some() {
            if self.up_by_id.get(&key.id) == Some(&key.inc) {
                self.up_by_id.remove(&key.id);
            }
            self.out
                .push_back(Output::Event(LinkEvent::Down(key.clone())));
        }
        self.listed.remove(key);
        self.sent.remove(key);
        self.dead.insert(key.clone(), None);
        self.out.push_back(Output::Forget(key.clone()));
        self.notify_dead(key, now_ms);
    }

    /// Tells a dead incarnation that it is dead, at most once per heartbeat interval.
    fn notify_dead(&mut self, key: &NodeKey, now_ms: u64) {
        let Some(last) = self.dead.get_mut(key) else {
            return;
        };
        if last.is_some_and(|last| now_ms.saturating_sub(last) < self.notice_interval_ms) {
            return;
        }
        *last = Some(now_ms);
        self.send_control(key, 0, DEAD);
    }

    fn next_seq(&mut self, to: &NodeKey) -> u64 {
        let seq = self.sent.entry(to.clone()).or_insert(0);
        *seq += 1;
        *seq
    }

    fn send_control(&mut self, to: &NodeKey, seq: u64, body: &'static str) {
        // Both bodies are valid JSON literals, so this cannot fail.
        let Ok(body) = serde_json::from_str::<&RawValue>(body) else {
            return;
        };
        if let Ok(envelope) = self.envelope(to.inc, seq, body) {
            self.out.push_back(Output::Send {
                to: to.id.clone(),
                envelope,
            });
        }
    }

    fn envelope<T: Serialize + ?Sized>(
        &self,
        to_inc: u64,
        seq: u64,
        body: &T,
    ) -> serde_json::Result<String> {
        serde_json::to_string(&EnvelopeOut {
            from: &self.me.id,
            inc: self.me.inc,
            to_inc,
            seq,
            body,
        })
    }
}
