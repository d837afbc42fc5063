//! The link's core without Redis: a simulated set of nodes whose inboxes are queues, driven by
//! hand (one test per rule) and by proptest (random sends, deliveries, losses, duplicates,
//! timeouts, restarts and Redis outages, with the link's invariants checked throughout).

use std::collections::{HashMap, HashSet, VecDeque};

use proptest::prelude::*;

use super::link::{DEAD, HEARTBEAT, Link, LinkEvent, NodeKey, Output};

const TIMEOUT: u64 = 5_000;
const HEARTBEAT_MS: u64 = 1_000;

/// One process of the simulation: its link and what it reported.
struct Node {
    link: Link<u64>,
    /// Every event, with this node's incarnation when it was reported, and whether it was a
    /// `Down` of this node's own new incarnation (not a death of the other).
    events: Vec<(u64, LinkEvent<u64>, bool)>,
    declared_dead: usize,
    /// How many of `events` the test has looked at.
    seen: usize,
}

/// Nodes `n0`, `n1`, … with one inbox each, and the nodes hash.
struct Net {
    nodes: Vec<Node>,
    inboxes: Vec<VecDeque<String>>,
    /// The last envelope appended to each inbox (a retried write appends it again).
    last_appended: Vec<Option<String>>,
    hash: HashMap<String, u64>,
    now: u64,
    next_inc: u64,
    next_body: u64,
    /// What each incarnation sent to each incarnation, accepted by its link, in order.
    sent: HashMap<(NodeKey, NodeKey), Vec<u64>>,
    /// Processes ended by a restart, kept for the checks.
    past: Vec<Node>,
}

fn id(i: usize) -> String {
    format!("n{i}")
}

impl Net {
    fn new(count: usize) -> Self {
        let mut net = Self {
            nodes: Vec::new(),
            inboxes: vec![VecDeque::new(); count],
            last_appended: vec![None; count],
            hash: HashMap::new(),
            now: 0,
            next_inc: 100,
            next_body: 1,
            sent: HashMap::new(),
            past: Vec::new(),
        };
        for i in 0..count {
            let inc = net.inc();
            net.nodes.push(Node {
                link: Link::new(NodeKey::new(id(i), inc), TIMEOUT, HEARTBEAT_MS),
                events: Vec::new(),
                declared_dead: 0,
                seen: 0,
            });
            net.hash.insert(id(i), inc);
        }
        net
    }

    fn inc(&mut self) -> u64 {
        self.next_inc += 1;
        self.next_inc
    }

    fn key(&self, i: usize) -> NodeKey {
        self.nodes[i].link.me().clone()
    }

    /// Carries out node `i`'s outputs.
    fn pump(&mut self, i: usize) {
        while let Some(output) = self.nodes[i].link.poll_output() {
            match output {
                Output::Event(event) => {
                    let inc = self.nodes[i].link.me().inc;
                    self.nodes[i].events.push((inc, event, false));
                }
                Output::Send { to, envelope } => {
                    let to: usize = to[1..].parse().expect("node id");
                    self.inboxes[to].push_back(envelope.clone());
                    self.last_appended[to] = Some(envelope);
                }
                Output::Forget(node) => {
                    if self.hash.get(&*node.id) == Some(&node.inc) {
                        self.hash.remove(&*node.id);
                    }
                }
                Output::DeclaredDead => {
                    self.nodes[i].declared_dead += 1;
                    self.reincarnate(i);
                }
            }
        }
    }

    /// Node `i` starts a new incarnation (Redis lost for the timeout, or declared dead): its
    /// reader starts from the end of its inbox, and it lists itself again.
    fn reincarnate(&mut self, i: usize) {
        let inc = self.inc();
        let old = self.nodes[i].link.me().inc;
        self.nodes[i].link.reincarnate(inc);
        while let Some(output) = self.nodes[i].link.poll_output() {
            match output {
                Output::Event(event) => self.nodes[i].events.push((old, event, true)),
                other => panic!("reincarnate gave {other:?}"),
            }
        }
        self.inboxes[i].clear();
        self.hash.insert(id(i), inc);
    }

    /// Node `i`'s process is killed and started again: a new link, nothing remembered.
    fn restart(&mut self, i: usize) {
        let inc = self.inc();
        let node = std::mem::replace(
            &mut self.nodes[i],
            Node {
                link: Link::new(NodeKey::new(id(i), inc), TIMEOUT, HEARTBEAT_MS),
                events: Vec::new(),
                declared_dead: 0,
                seen: 0,
            },
        );
        self.past.push(node);
        self.inboxes[i].clear();
        self.hash.insert(id(i), inc);
    }

    fn send(&mut self, from: usize, to: &NodeKey) -> Option<u64> {
        let body = self.next_body;
        self.next_body += 1;
        let accepted = self.nodes[from].link.send(to, &body);
        self.pump(from);
        accepted.then(|| {
            self.sent
                .entry((self.key(from), to.clone()))
                .or_default()
                .push(body);
            body
        })
    }

    fn deliver(&mut self, i: usize, count: usize) {
        for _ in 0..count {
            let Some(envelope) = self.inboxes[i].pop_front() else {
                break;
            };
            let now = self.now;
            self.nodes[i].link.handle_envelope(&envelope, now);
            self.pump(i);
        }
    }

    fn deliver_all(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.nodes.len() {
                if !self.inboxes[i].is_empty() {
                    any = true;
                    self.deliver(i, usize::MAX);
                }
            }
            if !any {
                break;
            }
        }
    }

    fn heartbeat(&mut self, i: usize) {
        let me = self.key(i);
        self.hash.insert(me.id.to_string(), me.inc);
        let listing: Vec<(String, String)> = self
            .hash
            .iter()
            .map(|(id, inc)| (id.clone(), inc.to_string()))
            .collect();
        let now = self.now;
        self.nodes[i].link.handle_nodes(&listing, now);
        self.nodes[i].link.heartbeat();
        self.pump(i);
    }

    fn heartbeat_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.heartbeat(i);
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        for i in 0..self.nodes.len() {
            let now = self.now;
            self.nodes[i].link.tick(now);
            self.pump(i);
        }
    }

    /// Every node hears every other: heartbeats both ways, delivered.
    fn mesh(&mut self) {
        self.heartbeat_all();
        self.deliver_all();
        self.heartbeat_all();
        self.deliver_all();
    }

    /// The events node `i` reported since the last call.
    fn events(&mut self, i: usize) -> Vec<LinkEvent<u64>> {
        let node = &mut self.nodes[i];
        let new = node.events[node.seen..]
            .iter()
            .map(|(_, e, _)| e.clone())
            .collect();
        node.seen = node.events.len();
        new
    }

    /// The link's invariants over everything reported so far (see the module doc).
    fn check(&self) {
        for node in self.nodes.iter().chain(&self.past) {
            check_node(node, &self.sent);
        }
    }
}

fn check_node(node: &Node, sent: &HashMap<(NodeKey, NodeKey), Vec<u64>>) {
    // Per (own incarnation, other incarnation): Up, Message*, Down?, nothing else.
    #[derive(PartialEq, Debug)]
    enum State {
        Up,
        Down,
    }
    let mut state: HashMap<(u64, NodeKey), State> = HashMap::new();
    let mut delivered: HashMap<(u64, NodeKey), Vec<u64>> = HashMap::new();
    // Incarnations this process declared dead (not Down because of its own new incarnation).
    let mut dead: HashSet<NodeKey> = HashSet::new();
    for (me, event, own) in &node.events {
        match event {
            LinkEvent::Up(key) => {
                assert!(
                    !dead.contains(key),
                    "{key} came up again after it was declared dead"
                );
                let other_up = state
                    .iter()
                    .find(|((inc, k), s)| *inc == *me && k.id == key.id && **s == State::Up);
                assert_eq!(
                    other_up, None,
                    "{key} up while another incarnation of it is"
                );
                let previous = state.insert((*me, key.clone()), State::Up);
                assert_eq!(previous, None, "{key} up twice in incarnation {me}");
            }
            LinkEvent::Message(key, body) => {
                assert_eq!(
                    state.get(&(*me, key.clone())),
                    Some(&State::Up),
                    "message from {key} that is not up"
                );
                delivered.entry((*me, key.clone())).or_default().push(*body);
            }
            LinkEvent::Down(key) => {
                let previous = state.insert((*me, key.clone()), State::Down);
                assert_eq!(previous, Some(State::Up), "Down of {key} that was not up");
                if !own {
                    dead.insert(key.clone());
                }
            }
            LinkEvent::Connected | LinkEvent::Disconnected => {}
        }
    }
    let id = node.link.me().id.clone();
    for ((me, from), bodies) in delivered {
        let sent = &sent[&(from.clone(), NodeKey::new(id.clone(), me))];
        assert!(
            sent.starts_with(&bodies),
            "{from} → {id}/{me}: delivered {bodies:?}, sent {sent:?}: not the same beginning"
        );
    }
}

fn up_key(net: &Net, at: usize, of: usize) -> NodeKey {
    net.nodes[at]
        .link
        .up()
        .find(|key| *key.id == *id(of))
        .cloned()
        .unwrap_or_else(|| panic!("n{of} is not up at n{at}"))
}

#[test]
fn nodes_listed_in_the_hash_hear_each_other_and_come_up() {
    let mut net = Net::new(2);
    net.mesh();
    let (k0, k1) = (net.key(0), net.key(1));
    assert_eq!(net.events(0), vec![LinkEvent::Up(k1)]);
    assert_eq!(net.events(1), vec![LinkEvent::Up(k0)]);
    net.check();
}

#[test]
fn envelopes_carry_sender_receiver_incarnations_and_a_sequence_per_destination() {
    let mut net = Net::new(2);
    let (k0, k1) = (net.key(0), net.key(1));
    // n1's first heartbeat to n0: n0 brings n1 up and answers at once.
    let first = format!(
        r#"{{"from":"n1","inc":{},"to_inc":{},"seq":1,"body":{HEARTBEAT}}}"#,
        k1.inc, k0.inc
    );
    net.nodes[0].link.handle_envelope(&first, 0);
    net.pump(0);
    assert_eq!(net.events(0), vec![LinkEvent::Up(k1.clone())]);
    net.send(0, &k1).expect("sent");
    let sent: Vec<String> = net.inboxes[1].drain(..).collect();
    assert_eq!(
        sent,
        vec![
            format!(
                r#"{{"from":"n0","inc":{},"to_inc":{},"seq":1,"body":{{"t":"hb"}}}}"#,
                k0.inc, k1.inc
            ),
            format!(
                r#"{{"from":"n0","inc":{},"to_inc":{},"seq":2,"body":1}}"#,
                k0.inc, k1.inc
            ),
        ]
    );
}

#[test]
fn messages_arrive_once_and_in_order_per_destination() {
    let mut net = Net::new(3);
    net.mesh();
    for i in 0..3 {
        net.events(i);
    }
    let (k1, k2) = (net.key(1), net.key(2));
    let to1: Vec<u64> = (0..5).filter_map(|_| net.send(0, &k1)).collect();
    let to2: Vec<u64> = (0..3).filter_map(|_| net.send(0, &k2)).collect();
    // A retried write: the last envelope to n1 is appended twice.
    let again = net.last_appended[1].clone().expect("appended");
    net.inboxes[1].push_back(again);
    net.deliver(2, usize::MAX);
    net.deliver(1, usize::MAX);
    let k0 = net.key(0);
    let bodies = |events: Vec<LinkEvent<u64>>| -> Vec<u64> {
        events
            .into_iter()
            .map(|e| match e {
                LinkEvent::Message(from, body) if from == k0 => body,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    };
    assert_eq!(bodies(net.events(1)), to1);
    assert_eq!(bodies(net.events(2)), to2);
    net.check();
}

#[test]
fn a_gap_downs_the_sender_once_and_tells_it_that_it_is_dead() {
    let mut net = Net::new(2);
    net.mesh();
    net.events(0);
    net.events(1);
    let (k0, k1) = (net.key(0), net.key(1));
    let first = net.send(0, &k1).expect("sent");
    net.send(0, &k1).expect("sent");
    net.send(0, &k1).expect("sent");
    // The second is lost (MAXLEN trimmed it, or Redis restarted empty).
    net.inboxes[1].remove(1);
    net.deliver(1, usize::MAX);
    assert_eq!(
        net.events(1),
        vec![
            LinkEvent::Message(k0.clone(), first),
            LinkEvent::Down(k0.clone())
        ]
    );
    // Later envelopes of the dead incarnation are dropped and never bring it back.
    net.heartbeat(0);
    net.send(0, &k1);
    net.deliver(1, usize::MAX);
    assert_eq!(net.events(1), vec![]);
    // The dead incarnation was told, and starts a new one: n1 goes down for it, and the new
    // incarnation comes up at n1 as a new node.
    assert!(net.inboxes[0].iter().any(|e| e.contains(DEAD)));
    net.deliver(0, usize::MAX);
    assert_eq!(net.nodes[0].declared_dead, 1);
    assert_eq!(net.events(0), vec![LinkEvent::Down(k1.clone())]);
    let new0 = net.key(0);
    assert_ne!(new0, k0);
    net.mesh();
    assert_eq!(net.events(1), vec![LinkEvent::Up(new0.clone())]);
    assert_eq!(net.events(0), vec![LinkEvent::Up(k1)]);
    net.check();
}

#[test]
fn a_silent_node_goes_down_once_after_the_timeout() {
    let mut net = Net::new(2);
    net.mesh();
    net.events(1);
    let k0 = net.key(0);
    net.advance(TIMEOUT - 1);
    assert_eq!(net.events(1), vec![]);
    net.advance(1);
    assert_eq!(net.events(1), vec![LinkEvent::Down(k0.clone())]);
    net.advance(TIMEOUT);
    assert_eq!(net.events(1), vec![]);
    // It was paused, not gone: it speaks again, stays dead, and is told to start anew.
    net.inboxes[1].clear();
    net.heartbeat(0);
    net.deliver(1, usize::MAX);
    assert_eq!(net.events(1), vec![]);
    net.deliver(0, usize::MAX);
    assert_eq!(net.nodes[0].declared_dead, 1);
    net.check();
}

#[test]
fn hearing_from_a_node_resets_its_clock() {
    let mut net = Net::new(2);
    net.mesh();
    net.events(1);
    net.events(0);
    for _ in 0..10 {
        net.advance(TIMEOUT - 1);
        net.heartbeat_all();
        net.deliver_all();
    }
    assert_eq!(net.events(0), vec![]);
    assert_eq!(net.events(1), vec![]);
    net.check();
}

#[test]
fn a_new_incarnation_downs_the_old_one_first_and_the_old_one_never_comes_back() {
    let mut net = Net::new(2);
    net.mesh();
    net.events(1);
    let old = net.key(0);
    // Envelopes of the old life still in n1's inbox, behind the new one's.
    net.heartbeat(0);
    let stale = net.inboxes[1].pop_back().expect("a heartbeat");
    net.restart(0);
    let new = net.key(0);
    net.heartbeat(0);
    net.deliver(1, usize::MAX);
    assert_eq!(
        net.events(1),
        vec![LinkEvent::Down(old.clone()), LinkEvent::Up(new.clone())]
    );
    net.inboxes[1].push_back(stale);
    net.deliver(1, usize::MAX);
    assert_eq!(net.events(1), vec![]);
    assert!(net.nodes[1].link.is_up(&new));
    assert!(!net.nodes[1].link.is_up(&old));
    net.check();
}

#[test]
fn an_envelope_for_a_past_incarnation_of_the_receiver_is_dropped() {
    let mut net = Net::new(2);
    net.mesh();
    net.events(1);
    let k1 = net.key(1);
    net.send(0, &k1).expect("sent");
    let for_old = net.inboxes[1].pop_back().expect("sent");
    net.reincarnate(1);
    net.events(1);
    net.inboxes[1].push_back(for_old);
    net.deliver(1, usize::MAX);
    assert_eq!(net.events(1), vec![]);
}

#[test]
fn a_new_incarnation_of_this_node_downs_every_node_up_and_they_come_back_when_heard() {
    let mut net = Net::new(3);
    net.mesh();
    for i in 0..3 {
        net.events(i);
    }
    let (k1, k2) = (net.key(1), net.key(2));
    net.reincarnate(0);
    assert_eq!(
        net.events(0),
        vec![LinkEvent::Down(k1.clone()), LinkEvent::Down(k2.clone())]
    );
    // Sends to them now are dropped: they are not up in the new incarnation.
    assert_eq!(net.send(0, &k1), None);
    net.mesh();
    let mut ups = net.events(0);
    ups.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(ups, vec![LinkEvent::Up(k1.clone()), LinkEvent::Up(k2)]);
    // They see the new incarnation as a new node, the old one down.
    let new0 = net.key(0);
    assert!(net.nodes[1].link.is_up(&new0));
    assert!(net.send(0, &k1).is_some());
    net.check();
}

#[test]
fn a_message_for_a_node_that_is_not_up_is_dropped() {
    let mut net = Net::new(2);
    let k1 = net.key(1);
    assert_eq!(net.send(0, &k1), None);
    assert!(net.inboxes[1].is_empty());
}

#[test]
fn a_listed_node_never_heard_from_is_forgotten_after_the_timeout() {
    let mut net = Net::new(2);
    // n1 is listed but never reads its inbox: it crashed before anyone heard it.
    net.heartbeat(0);
    net.advance(TIMEOUT);
    assert_eq!(net.hash.get("n1"), None);
    net.inboxes[1].clear();
    net.heartbeat(0);
    assert!(net.inboxes[1].is_empty(), "heart-beating a forgotten node");
    assert_eq!(net.events(0), vec![]);
}

#[test]
fn the_nodes_hash_is_cleaned_of_a_dead_incarnation_but_not_of_its_successor() {
    let mut net = Net::new(2);
    net.mesh();
    let k0 = net.key(0);
    net.advance(TIMEOUT);
    let forgets: Vec<_> = std::iter::from_fn(|| net.nodes[1].link.poll_output()).collect();
    assert!(forgets.is_empty(), "pumped already");
    assert!(!net.hash.contains_key("n0") || net.hash["n0"] != k0.inc);
    net.restart(0);
    let new = net.key(0);
    // A stale read of the hash that still lists the dead incarnation: removed again, only if
    // it still holds it.
    net.nodes[1]
        .link
        .handle_nodes(&[("n0".into(), k0.inc.to_string())], 0);
    net.pump(1);
    assert_eq!(net.hash.get("n0"), Some(&new.inc));
}

#[test]
fn malformed_envelopes_and_unsequenced_impostors_are_dropped() {
    let mut net = Net::new(2);
    net.mesh();
    net.events(1);
    let (k0, k1) = (net.key(0), net.key(1));
    for raw in [
        "not json".to_owned(),
        r#"{"from":"n0"}"#.to_owned(),
        // An unsequenced body: only first heartbeats and death notices go unsequenced.
        format!(
            r#"{{"from":"n0","inc":{},"to_inc":{},"seq":0,"body":7}}"#,
            k0.inc, k1.inc
        ),
        // A death notice for another incarnation of n1, or for none.
        format!(
            r#"{{"from":"n0","inc":{},"to_inc":1,"seq":0,"body":{DEAD}}}"#,
            k0.inc
        ),
        format!(
            r#"{{"from":"n0","inc":{},"to_inc":0,"seq":0,"body":{DEAD}}}"#,
            k0.inc
        ),
    ] {
        net.nodes[1].link.handle_envelope(&raw, 0);
        net.pump(1);
    }
    assert_eq!(net.events(1), vec![]);
    assert_eq!(net.nodes[1].declared_dead, 0);
    assert!(net.nodes[1].link.is_up(&k0));
    // A body this build does not understand is dropped, the sender stays up, and the next
    // message still arrives.
    let up = net.nodes[0].link.send(&k1, &5);
    assert!(up);
    let envelope = net.nodes[0].link.poll_output();
    let Some(Output::Send { envelope, .. }) = envelope else {
        panic!("no envelope")
    };
    net.nodes[1]
        .link
        .handle_envelope(&envelope.replace(r#""body":5"#, r#""body":"five""#), 0);
    net.pump(1);
    assert_eq!(net.events(1), vec![]);
    net.send(0, &k1).expect("sent");
    net.deliver(1, usize::MAX);
    assert!(matches!(net.events(1)[..], [LinkEvent::Message(_, _)]));
    assert!(net.nodes[1].link.is_up(&k0));
    let _ = HEARTBEAT;
}

#[test]
fn a_first_heartbeat_without_a_known_incarnation_brings_the_sender_up() {
    let mut net = Net::new(2);
    let k0 = net.key(0);
    let raw = format!(
        r#"{{"from":"n0","inc":{},"to_inc":0,"seq":0,"body":{HEARTBEAT}}}"#,
        k0.inc
    );
    net.nodes[1].link.handle_envelope(&raw, 0);
    net.pump(1);
    assert_eq!(net.events(1), vec![LinkEvent::Up(k0)]);
}

#[derive(Debug, Clone)]
enum Op {
    Send(usize, usize),
    /// A send to the first incarnation ever seen of that node id (often dead by now).
    SendStale(usize, usize),
    Deliver(usize, usize),
    Lose(usize),
    Duplicate(usize),
    Heartbeat(usize),
    Advance(u64),
    Outage(usize),
    Restart(usize),
}

const NODES: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    let node = 0..NODES;
    prop_oneof![
        8 => (node.clone(), node.clone()).prop_map(|(a, b)| Op::Send(a, b)),
        1 => (node.clone(), node.clone()).prop_map(|(a, b)| Op::SendStale(a, b)),
        8 => (node.clone(), 1..5usize).prop_map(|(a, n)| Op::Deliver(a, n)),
        1 => node.clone().prop_map(Op::Lose),
        1 => node.clone().prop_map(Op::Duplicate),
        4 => node.clone().prop_map(Op::Heartbeat),
        2 => prop_oneof![Just(1u64), Just(1_000), Just(TIMEOUT)].prop_map(Op::Advance),
        1 => node.clone().prop_map(Op::Outage),
        1 => node.prop_map(Op::Restart),
    ]
}

fn run(ops: &[Op]) -> Net {
    let mut net = Net::new(NODES);
    let mut first_seen: HashMap<usize, NodeKey> = HashMap::new();
    for i in 0..NODES {
        first_seen.insert(i, net.key(i));
    }
    for op in ops {
        match *op {
            Op::Send(a, b) => {
                let up: Vec<NodeKey> = net.nodes[a]
                    .link
                    .up()
                    .filter(|key| *key.id == *id(b))
                    .cloned()
                    .collect();
                for key in up {
                    net.send(a, &key);
                }
            }
            Op::SendStale(a, b) => {
                let key = first_seen[&b].clone();
                net.send(a, &key);
            }
            Op::Deliver(i, n) => net.deliver(i, n),
            Op::Lose(i) => {
                net.inboxes[i].pop_front();
            }
            Op::Duplicate(i) => {
                if let Some(again) = net.last_appended[i].clone() {
                    net.inboxes[i].push_back(again);
                }
            }
            Op::Heartbeat(i) => net.heartbeat(i),
            Op::Advance(ms) => net.advance(ms),
            Op::Outage(i) => net.reincarnate(i),
            Op::Restart(i) => net.restart(i),
        }
        net.check();
    }
    net
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever happens: per incarnation pair Up, Message*, Down; every message delivered once,
    /// in the order sent, and never past a lost one; a dead incarnation never up again.
    #[test]
    fn the_link_keeps_order_once_delivery_and_death(ops in proptest::collection::vec(op(), 1..120)) {
        run(&ops);
    }

    /// Without losses or silence, every node ends up with every other up, and everything sent
    /// between incarnations that stay up is delivered.
    #[test]
    fn without_faults_everything_sent_arrives(sends in proptest::collection::vec((0..NODES, 0..NODES), 0..60)) {
        let mut net = Net::new(NODES);
        net.mesh();
        for (a, b) in sends {
            if a != b {
                let key = up_key(&net, a, b);
                net.send(a, &key);
            }
        }
        net.deliver_all();
        net.check();
        for a in 0..NODES {
            for b in 0..NODES {
                if a == b { continue; }
                let delivered: Vec<u64> = net.nodes[b].events.iter().filter_map(|(_, e, _)| match e {
                    LinkEvent::Message(from, body) if *from == net.key(a) => Some(*body),
                    _ => None,
                }).collect();
                let sent = net.sent.get(&(net.key(a), net.key(b))).cloned().unwrap_or_default();
                prop_assert_eq!(delivered, sent);
            }
        }
    }
}
