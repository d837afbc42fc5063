//! Routers of several nodes joined by ordered links (PROTOCOL.md §13): a model of the cluster
//! with no IO. `Net` carries each router's [`RemoteOut`]s to the node they name, in order per
//! pair of nodes, and delivers them when a test (or the property test) says so, so every
//! interleaving of the two ends of a subscription can be played.

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use protocol::Inbound;

use super::*;

/// What crosses between two nodes: the router's messages, and each node's list of entries.
#[derive(Debug, Clone)]
enum Wire {
    Out(RemoteOut),
    Entries(Vec<RemoteEntry>),
}

/// Several routers; node `i` knows node `j` as `Node(j)`.
struct Net {
    routers: Vec<Router>,
    /// In flight from node i to node j, in order.
    links: BTreeMap<(u32, u32), VecDeque<Wire>>,
    /// Every frame a local connection was sent, with its node: (node, conn, text).
    sent: Vec<(u32, ConnId, String)>,
    /// Every close: (node, conn, code, reason).
    closed: Vec<(u32, ConnId, u16, String)>,
    /// Nodes that are down.
    down: Vec<u32>,
    next_conn: u64,
    /// Redis's id claims: id → node.
    claims: BTreeMap<String, u32>,
    /// Each node's claim work not yet done by Redis, in order.
    claim_jobs: BTreeMap<u32, VecDeque<RemoteOut>>,
}

impl Net {
    fn new(nodes: u32, config: RouterConfig) -> Self {
        Self {
            routers: (0..nodes).map(|_| Router::new(config.clone())).collect(),
            links: BTreeMap::new(),
            sent: Vec::new(),
            closed: Vec::new(),
            down: Vec::new(),
            next_conn: 1,
            claims: BTreeMap::new(),
            claim_jobs: BTreeMap::new(),
        }
    }

    /// Redis runs `node`'s next claim job. True if there was one.
    fn claim_step(&mut self, node: u32) -> bool {
        let Some(job) = self.claim_jobs.get_mut(&node).and_then(VecDeque::pop_front) else {
            return false;
        };
        match job {
            RemoteOut::Claim { entry, id } => {
                let granted = self.claims.get(&id).is_none_or(|&holder| holder == node);
                if granted {
                    self.claims.insert(id.clone(), node);
                }
                self.routers[node as usize].handle_claimed(entry, id, granted);
                self.pump(node);
            }
            RemoteOut::Release { id } if self.claims.get(&id) == Some(&node) => {
                self.claims.remove(&id);
            }
            _ => {}
        }
        true
    }

    /// Ids confirmed under a claim are unique across the live nodes.
    fn claimed_ids_are_unique(&self) -> Result<(), String> {
        let mut seen = BTreeMap::new();
        for (node, router) in self.routers.iter().enumerate() {
            if self.down.contains(&(node as u32)) {
                continue;
            }
            for id in router.claimed_ids() {
                if let Some(other) = seen.insert(id.clone(), node) {
                    return Err(format!("{id} confirmed on nodes {other} and {node}"));
                }
            }
        }
        Ok(())
    }

    fn open(&mut self, node: u32, role: Role) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.routers[node as usize].handle_opened(conn, role);
        self.pump(node);
        conn
    }

    fn msg(&mut self, node: u32, conn: ConnId, text: &str) {
        let message = Inbound::parse(text).expect("test message parses");
        self.routers[node as usize].handle_message(conn, message, || 0);
        self.pump(node);
    }

    fn close(&mut self, node: u32, conn: ConnId) {
        self.routers[node as usize].handle_closed(conn);
        self.pump(node);
    }

    /// Collects node's outputs: local frames to the logs, remote ones onto the links.
    fn pump(&mut self, node: u32) {
        let router = &mut self.routers[node as usize];
        let mut outs = Vec::new();
        while let Some(out) = router.poll_output() {
            outs.push(out);
        }
        let entries = router.take_local_entries();
        for out in outs {
            match out {
                Output::Send { to, text, .. } => self.sent.push((node, to, text.to_string())),
                Output::Close { conn, code, reason } => {
                    self.closed.push((node, conn, code, reason));
                    self.routers[node as usize].handle_closed(conn);
                }
                Output::Drop { conn } => self.closed.push((node, conn, 0, String::new())),
                Output::Remote(out @ (RemoteOut::Claim { .. } | RemoteOut::Release { .. })) => {
                    self.claim_jobs.entry(node).or_default().push_back(out);
                }
                Output::Remote(out) => {
                    let to = remote_node(&out);
                    self.queue(node, to.0, Wire::Out(out));
                }
            }
        }
        if let Some(entries) = entries {
            for other in 0..self.routers.len() as u32 {
                if other != node {
                    self.queue(node, other, Wire::Entries(entries.clone()));
                }
            }
        }
        if !self.routers[node as usize].outputs.is_empty() {
            self.pump(node);
        }
    }

    fn queue(&mut self, from: u32, to: u32, wire: Wire) {
        if self.down.contains(&from) || self.down.contains(&to) {
            return;
        }
        self.links.entry((from, to)).or_default().push_back(wire);
    }

    /// Delivers the next message from `from` to `to`, if any. True if one was delivered.
    fn step(&mut self, from: u32, to: u32) -> bool {
        let Some(wire) = self
            .links
            .get_mut(&(from, to))
            .and_then(VecDeque::pop_front)
        else {
            return false;
        };
        let router = &mut self.routers[to as usize];
        let node = Node(from);
        match wire {
            Wire::Entries(entries) => router.handle_remote_entries(node, entries),
            Wire::Out(out) => match out {
                RemoteOut::Subscribe {
                    player,
                    sub,
                    player_id,
                    streamer_id,
                    sfu,
                    browser_offers,
                    ..
                } => router.handle_remote_subscribe(
                    node,
                    player,
                    sub,
                    player_id,
                    &streamer_id,
                    sfu,
                    browser_offers,
                ),
                RemoteOut::Forward {
                    player, sub, text, ..
                } => {
                    let message = Inbound::parse(&text).expect("forwarded text parses");
                    router.handle_remote_forward(node, player, sub, message, || 0);
                }
                RemoteOut::Unsubscribe { player, sub, .. } => {
                    router.handle_remote_unsubscribe(node, player, sub)
                }
                RemoteOut::Deliver {
                    player, sub, text, ..
                } => router.handle_remote_deliver(node, player, sub, text),
                RemoteOut::Ended {
                    player,
                    sub,
                    ending,
                    ..
                } => router.handle_remote_ended(node, player, sub, ending),
                RemoteOut::Claim { .. } | RemoteOut::Release { .. } => {}
            },
        }
        self.pump(to);
        true
    }

    /// Delivers everything in flight, in order per link, until nothing moves.
    fn settle(&mut self) {
        loop {
            let pairs: Vec<(u32, u32)> = self.links.keys().copied().collect();
            let mut moved = false;
            let nodes: Vec<u32> = self.claim_jobs.keys().copied().collect();
            for node in nodes {
                while self.claim_step(node) {
                    moved = true;
                }
            }
            for (from, to) in pairs {
                while self.step(from, to) {
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// `dead` stops: every other node is told, and what was in flight to or from it is lost.
    fn kill(&mut self, dead: u32) {
        self.down.push(dead);
        self.links.retain(|&(a, b), _| a != dead && b != dead);
        // The survivors remove the dead node's claims; its own jobs never run.
        self.claims.retain(|_, holder| *holder != dead);
        self.claim_jobs.remove(&dead);
        for node in 0..self.routers.len() as u32 {
            if !self.down.contains(&node) {
                self.routers[node as usize].handle_node_down(Node(dead));
                self.pump(node);
            }
        }
    }

    fn streamer(&mut self, node: u32, id: &str) -> ConnId {
        let conn = self.open(node, Role::Streamer);
        self.msg(
            node,
            conn,
            &format!(r#"{{"type":"endpointId","id":"{id}"}}"#),
        );
        self.settle();
        conn
    }

    fn texts(&self, node: u32, conn: ConnId) -> Vec<&str> {
        self.sent
            .iter()
            .filter(|(n, c, _)| *n == node && *c == conn)
            .map(|(_, _, t)| t.as_str())
            .collect()
    }

    fn count(&self, node: u32, conn: ConnId, text: &str) -> usize {
        self.texts(node, conn)
            .iter()
            .filter(|t| **t == text)
            .count()
    }

    fn clear(&mut self) {
        self.sent.clear();
        self.closed.clear();
    }
}

fn remote_node(out: &RemoteOut) -> Node {
    match out {
        RemoteOut::Subscribe { node, .. }
        | RemoteOut::Forward { node, .. }
        | RemoteOut::Unsubscribe { node, .. }
        | RemoteOut::Deliver { node, .. }
        | RemoteOut::Ended { node, .. } => *node,
        RemoteOut::Claim { .. } | RemoteOut::Release { .. } => {
            unreachable!("claims go to Redis, not to a node")
        }
    }
}

fn connected(id: &str) -> String {
    format!(r#"{{"type":"playerConnected","dataChannel":true,"sfu":false,"playerId":"{id}"}}"#)
}

fn disconnected(id: &str) -> String {
    format!(r#"{{"type":"playerDisconnected","playerId":"{id}"}}"#)
}

/// Player ids unique across the nodes, as the cluster layer arranges (a block per node), and
/// entry ids claimed in (a model of) Redis.
fn net(nodes: u32) -> Net {
    let mut net = Net::new(
        nodes,
        RouterConfig {
            claim_ids: true,
            ..RouterConfig::default()
        },
    );
    for (i, router) in net.routers.iter_mut().enumerate() {
        router.next_player = i as u64 * 1000;
    }
    net
}

#[test]
fn a_player_on_one_node_lists_subscribes_and_negotiates_with_a_streamer_on_another() {
    let mut net = net(2);
    let st = net.streamer(0, "Remote");
    let local = net.streamer(1, "Local");
    let p = net.open(1, Role::Player);
    net.msg(1, p, r#"{"type":"listStreamers"}"#);
    assert_eq!(
        net.texts(1, p).last().copied(),
        Some(r#"{"type":"streamerList","ids":["Local","Remote"]}"#)
    );
    net.msg(1, p, r#"{"type":"subscribe","streamerId":"Remote"}"#);
    net.settle();
    assert_eq!(net.count(0, st, &connected("Player1000")), 1);
    assert_eq!(
        net.texts(1, local).len(),
        3,
        "config, identify, endpointIdConfirm only"
    );
    // Each node lists its own players; the streamer's node shows the proxy as a subscriber.
    assert_eq!(net.routers[0].api_counts().players, 0);
    assert!(net.routers[0].players().is_empty());
    assert_eq!(net.routers[1].api_counts().players, 1);
    let listed = net.routers[0].streamers();
    assert_eq!(listed[0].subscribers[0].player_id, "Player1000");
    // Streamer → player: kept as sent (F1).
    let offer = r#"{"type":"offer","sdp":"v=0","playerId":"Player1000"}"#;
    net.msg(0, st, offer);
    net.settle();
    assert_eq!(net.texts(1, p).last().copied(), Some(offer));
    // Player → streamer: playerId set by the streamer's node (F2).
    net.msg(1, p, r#"{"type":"answer","sdp":"v=1","playerId":"x"}"#);
    net.settle();
    assert_eq!(
        net.texts(0, st).last().copied(),
        Some(r#"{"type":"answer","sdp":"v=1","playerId":"Player1000"}"#)
    );
    // The player leaves: exactly one playerDisconnected.
    net.close(1, p);
    net.settle();
    assert_eq!(net.count(0, st, &disconnected("Player1000")), 1);
    assert!(net.routers[0].remote.proxies.is_empty());
    assert_eq!(net.routers[0].connection_count(), 1);
}

#[test]
fn the_streamer_leaving_closes_its_players_on_other_nodes() {
    let mut net = net(3);
    let st = net.streamer(0, "S");
    let p1 = net.open(1, Role::Player);
    let p2 = net.open(2, Role::Player);
    net.msg(1, p1, r#"{"type":"subscribe","streamerId":"S"}"#);
    net.msg(2, p2, r#"{"type":"subscribe","streamerId":"S"}"#);
    net.settle();
    net.close(0, st);
    net.settle();
    let closes: Vec<_> = net
        .closed
        .iter()
        .map(|(n, c, code, r)| (*n, *c, *code, r.as_str()))
        .collect();
    assert_eq!(
        closes,
        [
            (1, p1, 1000, "streamer disconnected"),
            (2, p2, 1000, "streamer disconnected")
        ]
    );
    net.msg(1, ConnId(999), r#"{"type":"listStreamers"}"#);
    let p3 = net.open(1, Role::Player);
    net.msg(1, p3, r#"{"type":"listStreamers"}"#);
    assert_eq!(
        net.texts(1, p3).last().copied(),
        Some(r#"{"type":"streamerList","ids":[]}"#)
    );
}

#[test]
fn disconnect_player_and_max_players_hold_for_players_of_other_nodes() {
    let mut net = Net::new(
        2,
        RouterConfig {
            max_players: 1,
            ..RouterConfig::default()
        },
    );
    net.routers[1].next_player = 1000;
    let st = net.streamer(0, "S");
    let local = net.open(0, Role::Player);
    net.msg(0, local, r#"{"type":"subscribe","streamerId":"S"}"#);
    let p = net.open(1, Role::Player);
    net.msg(1, p, r#"{"type":"subscribe","streamerId":"S"}"#);
    net.settle();
    assert_eq!(
        net.texts(1, p).last().copied(),
        Some(r#"{"type":"subscribeFailed","message":"Streamer S is full. Max players = 1."}"#)
    );
    assert_eq!(net.count(0, st, &connected("Player1000")), 0);
    assert!(
        net.routers[0].remote.proxies.is_empty(),
        "a refused proxy leaves"
    );
    // Room again: the remote player gets in, then the streamer sends it away.
    net.close(0, local);
    net.msg(1, p, r#"{"type":"subscribe","streamerId":"S"}"#);
    net.settle();
    assert_eq!(net.count(0, st, &connected("Player1000")), 1);
    net.msg(
        0,
        st,
        r#"{"type":"disconnectPlayer","playerId":"Player1000","reason":"bye"}"#,
    );
    net.settle();
    assert_eq!(
        net.closed
            .last()
            .map(|(n, c, code, r)| (*n, *c, *code, r.as_str())),
        Some((1, p, 1011, "bye"))
    );
    assert_eq!(net.count(0, st, &disconnected("Player1000")), 1);
}

#[test]
fn a_dead_node_ends_every_pair_it_was_part_of_exactly_once() {
    let mut net = net(3);
    let st_a = net.streamer(0, "A");
    let st_b = net.streamer(1, "B");
    let on_b: Vec<ConnId> = (0..3).map(|_| net.open(1, Role::Player)).collect();
    let on_c = net.open(2, Role::Player);
    for &p in &on_b {
        net.msg(1, p, r#"{"type":"subscribe","streamerId":"A"}"#);
    }
    net.msg(2, on_c, r#"{"type":"subscribe","streamerId":"B"}"#);
    net.settle();
    net.clear();
    // B dies: A's streamer gets one playerDisconnected per player of B; C's player, watching
    // B's streamer, is closed as when a streamer disconnects.
    net.kill(1);
    for id in ["Player1000", "Player1001", "Player1002"] {
        assert_eq!(net.count(0, st_a, &disconnected(id)), 1, "{id}");
    }
    assert_eq!(net.texts(0, st_a).len(), 3);
    assert_eq!(
        net.closed
            .iter()
            .map(|(n, c, code, _)| (*n, *c, *code))
            .collect::<Vec<_>>(),
        [(2, on_c, 1000)]
    );
    assert!(net.routers[0].remote.proxies.is_empty());
    let _ = st_b;
    // The dead node's entries leave every list.
    let p = net.open(2, Role::Player);
    net.msg(2, p, r#"{"type":"listStreamers"}"#);
    assert_eq!(
        net.texts(2, p).last().copied(),
        Some(r#"{"type":"streamerList","ids":["A"]}"#)
    );
}

#[test]
fn ends_that_cross_give_one_player_disconnected_and_nothing_after() {
    let mut net = net(2);
    let st = net.streamer(0, "S");
    let p = net.open(1, Role::Player);
    net.msg(1, p, r#"{"type":"subscribe","streamerId":"S"}"#);
    net.settle();
    // Both ends end the subscription before hearing from the other.
    net.msg(
        0,
        st,
        r#"{"type":"disconnectPlayer","playerId":"Player1000"}"#,
    );
    net.msg(1, p, r#"{"type":"unsubscribe"}"#);
    net.msg(
        0,
        st,
        r#"{"type":"offer","playerId":"Player1000","sdp":"late"}"#,
    );
    net.settle();
    assert_eq!(net.count(0, st, &disconnected("Player1000")), 1);
    assert!(net.texts(1, p).iter().all(|t| !t.contains("late")));
    assert!(
        net.closed.is_empty(),
        "the player had already left on its side"
    );
    // Subscribing again works, under a new subscription.
    net.msg(1, p, r#"{"type":"subscribe","streamerId":"S"}"#);
    net.settle();
    assert_eq!(net.count(0, st, &connected("Player1000")), 2);
}

#[test]
fn an_sfu_on_another_node_follows_the_sfu_rules() {
    let mut net = net(3);
    let st = net.streamer(0, "S");
    let sfu = net.open(2, Role::Sfu);
    net.msg(2, sfu, r#"{"type":"endpointId","id":"SFU"}"#);
    net.msg(2, sfu, r#"{"type":"subscribe","streamerId":"S"}"#);
    net.settle();
    assert_eq!(
        net.texts(0, st).last().copied(),
        Some(r#"{"type":"playerConnected","dataChannel":true,"sfu":true,"playerId":"Player2000"}"#)
    );
    // F4: an SFU's answer keeps the browser's playerId it names.
    net.msg(
        2,
        sfu,
        r#"{"type":"answer","playerId":"Player7","sdp":"x"}"#,
    );
    // F5: streamerDataChannels gets sfuId.
    net.msg(
        2,
        sfu,
        r#"{"type":"streamerDataChannels","playerId":"Player7"}"#,
    );
    net.settle();
    let texts = net.texts(0, st);
    assert_eq!(
        texts[texts.len() - 2],
        r#"{"type":"answer","playerId":"Player7","sdp":"x"}"#
    );
    assert_eq!(
        texts[texts.len() - 1],
        r#"{"type":"streamerDataChannels","playerId":"Player7","sfuId":"Player2000"}"#
    );
    // A player on node 1 watches the SFU on node 2, which watches the streamer on node 0.
    let p = net.open(1, Role::Player);
    net.msg(1, p, r#"{"type":"subscribe","streamerId":"SFU"}"#);
    net.settle();
    assert_eq!(net.count(2, sfu, &connected("Player1000")), 1);
    // The streamer leaves: the SFU loses its upstream (its player closed first, then
    // streamerDisconnected), as it would on one node.
    net.clear();
    net.close(0, st);
    net.settle();
    assert_eq!(net.count(2, sfu, &disconnected("Player1000")), 1);
    assert_eq!(net.count(2, sfu, r#"{"type":"streamerDisconnected"}"#), 1);
    assert_eq!(
        net.closed
            .iter()
            .map(|(n, c, code, _)| (*n, *c, *code))
            .collect::<Vec<_>>(),
        [(1, p, 1000)]
    );
}

#[test]
fn a_subscribe_to_an_id_no_node_has_announced_is_answered_at_once() {
    let mut net = net(2);
    let st = net.open(0, Role::Streamer);
    // Node 1 has not heard of it yet (nothing delivered): the same answer as on one node.
    net.msg(0, st, r#"{"type":"endpointId","id":"S"}"#);
    let p = net.open(1, Role::Player);
    net.msg(1, p, r#"{"type":"subscribe","streamerId":"S"}"#);
    assert_eq!(
        net.texts(1, p).last().copied(),
        Some(r#"{"type":"subscribeFailed","message":"Streamer S does not exist."}"#)
    );
    // Once node 0's list has arrived, the same subscribe reaches the streamer.
    net.settle();
    net.msg(1, p, r#"{"type":"subscribe","streamerId":"S"}"#);
    net.settle();
    assert_eq!(net.count(0, st, &connected("Player1000")), 1);
}

#[test]
fn entry_ids_are_unique_across_the_nodes_that_know_each_other() {
    let mut net = net(2);
    net.streamer(0, "DefaultStreamer");
    let second = net.streamer(1, "DefaultStreamer");
    assert!(
        net.texts(1, second)
            .contains(&r#"{"type":"endpointIdConfirm","committedId":"DefaultStreamer1"}"#),
        "{:?}",
        net.texts(1, second)
    );
}

#[test]
fn two_nodes_asking_for_one_id_at_once_get_it_and_the_id_rules_next() {
    let mut net = net(2);
    let a = net.open(0, Role::Streamer);
    let b = net.open(1, Role::Streamer);
    // Both ask before either has heard of the other: Redis decides.
    net.msg(0, a, r#"{"type":"endpointId","id":"S"}"#);
    net.msg(1, b, r#"{"type":"endpointId","id":"S"}"#);
    assert!(
        net.texts(0, a)
            .iter()
            .all(|t| !t.contains("endpointIdConfirm")),
        "not confirmed before the claim is granted"
    );
    net.claim_step(1);
    net.claim_step(0);
    net.settle();
    assert!(
        net.texts(1, b)
            .contains(&r#"{"type":"endpointIdConfirm","committedId":"S"}"#)
    );
    assert!(
        net.texts(0, a)
            .contains(&r#"{"type":"endpointIdConfirm","committedId":"S1"}"#)
    );
    net.claimed_ids_are_unique().expect("unique");
    // The holder leaves: its claim goes back.
    net.close(1, b);
    net.settle();
    assert_eq!(net.claims.keys().collect::<Vec<_>>(), ["S1"]);
    // The next "S" is S2 by §5's rule (S1 is there), claimed like any other.
    let c = net.open(1, Role::Streamer);
    net.msg(1, c, r#"{"type":"endpointId","id":"S"}"#);
    net.settle();
    assert!(
        net.texts(1, c)
            .contains(&r#"{"type":"endpointIdConfirm","committedId":"S2"}"#)
    );
    assert_eq!(net.claims.get("S2"), Some(&1));
    // A streamer re-sending its own id keeps it, with no new claim.
    net.msg(1, c, r#"{"type":"endpointId","id":"S2"}"#);
    assert_eq!(net.claim_jobs.get(&1).map_or(0, VecDeque::len), 0);
    assert_eq!(
        net.count(1, c, r#"{"type":"endpointIdConfirm","committedId":"S2"}"#),
        2
    );
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    Open {
        node: u32,
    },
    Subscribe {
        player: usize,
        streamer: usize,
    },
    Unsubscribe {
        player: usize,
    },
    ClosePlayer {
        player: usize,
    },
    Offer {
        streamer: usize,
        player: usize,
    },
    Answer {
        player: usize,
    },
    Kick {
        streamer: usize,
        player: usize,
    },
    CloseStreamer {
        streamer: usize,
    },
    Deliver {
        from: u32,
        to: u32,
        n: usize,
    },
    Kill {
        node: u32,
    },
    Settle,
    /// A streamer (re)identifies as one of a few ids.
    Identify {
        streamer: usize,
        id: u8,
    },
    /// Redis runs a node's next claim job.
    ClaimStep {
        node: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3u32).prop_map(|node| Op::Open { node }),
        (0..8usize, 0..4usize).prop_map(|(player, streamer)| Op::Subscribe { player, streamer }),
        (0..8usize).prop_map(|player| Op::Unsubscribe { player }),
        (0..8usize).prop_map(|player| Op::ClosePlayer { player }),
        (0..4usize, 0..8usize).prop_map(|(streamer, player)| Op::Offer { streamer, player }),
        (0..8usize).prop_map(|player| Op::Answer { player }),
        (0..4usize, 0..8usize).prop_map(|(streamer, player)| Op::Kick { streamer, player }),
        (0..4usize).prop_map(|streamer| Op::CloseStreamer { streamer }),
        (0..3u32, 0..3u32, 1..4usize).prop_map(|(from, to, n)| Op::Deliver { from, to, n }),
        (0..3u32).prop_map(|node| Op::Kill { node }),
        Just(Op::Settle),
        (0..4usize, 0..3u8).prop_map(|(streamer, id)| Op::Identify { streamer, id }),
        (0..3u32).prop_map(|node| Op::ClaimStep { node }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random interleavings of players, streamers, messages in flight and node deaths keep
    /// PROTOCOL.md §6's invariant across nodes (each playerConnected a streamer gets is followed
    /// by exactly one playerDisconnected, unless the streamer's connection or node ends first),
    /// and per pair of peers the streamer's messages arrive in the order it sent them.
    #[test]
    fn across_nodes_each_player_connected_gets_one_player_disconnected(
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        let mut net = net(3);
        let streamers: Vec<(u32, ConnId)> = (0..4u32)
            .map(|i| (i % 3, net.streamer(i % 3, &format!("S{i}"))))
            .collect();
        let mut players: Vec<(u32, ConnId)> = Vec::new();
        let mut closed_streamers = Vec::new();
        let mut offers = 0u64;
        for op in ops {
            let live = |node: u32, net: &Net| !net.down.contains(&node);
            match op {
                Op::Open { node } if live(node, &net) && players.len() < 8 => {
                    players.push((node, net.open(node, Role::Player)));
                }
                Op::Subscribe { player, streamer } => {
                    if let Some(&(node, p)) = players.get(player).filter(|(n, _)| live(*n, &net)) {
                        net.msg(node, p, &format!(r#"{{"type":"subscribe","streamerId":"S{streamer}"}}"#));
                    }
                }
                Op::Unsubscribe { player } => {
                    if let Some(&(node, p)) = players.get(player).filter(|(n, _)| live(*n, &net)) {
                        net.msg(node, p, r#"{"type":"unsubscribe"}"#);
                    }
                }
                Op::ClosePlayer { player } => {
                    if let Some(&(node, p)) = players.get(player).filter(|(n, _)| live(*n, &net)) {
                        net.close(node, p);
                    }
                }
                Op::Offer { streamer, player } | Op::Kick { streamer, player } if live(streamers[streamer].0, &net) => {
                    let (node, st) = streamers[streamer];
                    let Some(&(pnode, _)) = players.get(player) else { continue };
                    let id = format!("Player{}", u64::from(pnode) * 1000 + players.iter().take(player).filter(|(n, _)| *n == pnode).count() as u64);
                    offers += 1;
                    let text = if matches!(op, Op::Kick { .. }) {
                        format!(r#"{{"type":"disconnectPlayer","playerId":"{id}"}}"#)
                    } else {
                        format!(r#"{{"type":"offer","playerId":"{id}","n":{offers}}}"#)
                    };
                    net.msg(node, st, &text);
                }
                Op::Answer { player } => {
                    if let Some(&(node, p)) = players.get(player).filter(|(n, _)| live(*n, &net)) {
                        net.msg(node, p, r#"{"type":"answer","sdp":"a"}"#);
                    }
                }
                Op::CloseStreamer { streamer } if live(streamers[streamer].0, &net) => {
                    let (node, st) = streamers[streamer];
                    closed_streamers.push((node, st));
                    net.close(node, st);
                }
                Op::Deliver { from, to, n } => {
                    for _ in 0..n {
                        net.step(from, to);
                    }
                }
                Op::Settle => net.settle(),
                Op::Identify { streamer, id } if live(streamers[streamer].0, &net) => {
                    let (node, st) = streamers[streamer];
                    net.msg(node, st, &format!(r#"{{"type":"endpointId","id":"S{id}"}}"#));
                }
                Op::ClaimStep { node } => {
                    net.claim_step(node);
                }
                Op::Kill { node } if !net.down.contains(&node) && net.down.len() < 2 => net.kill(node),
                _ => {}
            }
            net.claimed_ids_are_unique().map_err(TestCaseError::fail)?;
        }
        // Everyone still up leaves; everything in flight arrives.
        net.settle();
        for &(node, p) in &players {
            if !net.down.contains(&node) {
                net.close(node, p);
            }
        }
        net.settle();
        for &(node, st) in &streamers {
            if net.down.contains(&node) || closed_streamers.contains(&(node, st)) {
                continue;
            }
            let mut open: BTreeMap<String, bool> = BTreeMap::new();
            for text in net.texts(node, st) {
                let v: serde_json::Value = serde_json::from_str(text).expect("json");
                let id = v["playerId"].as_str().unwrap_or_default().to_owned();
                match v["type"].as_str() {
                    Some("playerConnected") => {
                        prop_assert!(!open.get(&id).copied().unwrap_or(false), "{id} connected twice in a row");
                        open.insert(id, true);
                    }
                    Some("playerDisconnected") => {
                        prop_assert!(open.get(&id).copied().unwrap_or(false), "{id} disconnected while not connected");
                        open.insert(id, false);
                    }
                    _ => {}
                }
            }
            prop_assert!(open.values().all(|o| !o), "a playerConnected without its playerDisconnected: {open:?}");
            prop_assert!(net.routers[node as usize].remote.proxies.is_empty());
        }
        // Per pair, offers arrive in the order sent.
        for &(node, p) in &players {
            let ns: Vec<u64> = net
                .texts(node, p)
                .iter()
                .filter_map(|t| serde_json::from_str::<serde_json::Value>(t).ok())
                .filter_map(|v| v["n"].as_u64())
                .collect();
            prop_assert!(ns.windows(2).all(|w| w[0] < w[1]), "out of order: {ns:?}");
        }
    }
}
