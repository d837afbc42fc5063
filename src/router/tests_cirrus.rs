//! Unit tests of the Cirrus (UE4.27–5.4) behaviours of the routing core: `max_player_count`,
//! coalesced `playerCount` updates, `?OfferToReceive` and `subscribe_at_connect`, and the counts
//! the matchmaker client reads.

use proptest::prelude::*;
use protocol::Inbound;

use super::*;

pub(super) struct Harness {
    router: Router,
    next_conn: u64,
}

impl Harness {
    pub(super) fn with(config: RouterConfig) -> Self {
        Self {
            router: Router::new(config),
            next_conn: 1,
        }
    }

    pub(super) fn open_with(&mut self, role: Role, opening: Opening) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.router.handle_opened_with(conn, role, opening);
        conn
    }

    pub(super) fn open(&mut self, role: Role) -> ConnId {
        self.open_with(role, Opening::default())
    }

    pub(super) fn msg(&mut self, conn: ConnId, text: &str) {
        let message = Inbound::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        self.router.handle_message(conn, message, || 0);
    }

    pub(super) fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.router.poll_output()).collect()
    }

    /// A streamer identified as `id`; outputs drained.
    pub(super) fn streamer(&mut self, id: &str) -> ConnId {
        let conn = self.open(Role::Streamer);
        self.msg(conn, &format!(r#"{{"type":"endpointId","id":"{id}"}}"#));
        self.drain();
        conn
    }
}

pub(super) fn sent(out: &[Output]) -> Vec<(ConnId, &str)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, text, .. } => Some((*to, text.as_str())),
            _ => None,
        })
        .collect()
}

pub(super) fn closes(out: &[Output]) -> Vec<(ConnId, u16, &str)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Close { conn, code, reason } => Some((*conn, *code, reason.as_str())),
            _ => None,
        })
        .collect()
}

fn count(n: usize) -> String {
    format!(r#"{{"type":"playerCount","count":{n}}}"#)
}

const CONFIG: &str = r#"{"type":"config","peerConnectionOptions":{},"protocolVersion":"1.3.0"}"#;

fn capped(max: Option<u32>) -> Harness {
    Harness::with(RouterConfig {
        max_player_count: max,
        player_count: false,
        ..RouterConfig::default()
    })
}

fn updating() -> Harness {
    Harness::with(RouterConfig {
        player_count: true,
        player_count_updates: true,
        ..RouterConfig::default()
    })
}

// ---- max_player_count ----

#[test]
fn max_player_count_closes_the_player_over_it_1013_with_cirrus_reason_before_config() {
    let mut h = capped(Some(2));
    let a = h.open(Role::Player);
    let b = h.open(Role::Player);
    assert_eq!(sent(&h.drain()), [(a, CONFIG), (b, CONFIG)]);
    let c = h.open(Role::Player);
    let out = h.drain();
    assert_eq!(sent(&out), [], "a refused player gets no config");
    assert_eq!(
        closes(&out),
        [(c, 1013, "too many connections. max: 2, current: 2")]
    );
    assert!(!h.router.is_open(c));
    assert_eq!(h.router.counts().players, 2);
    // Its own close event later is ignored; a slot freed admits the next one.
    h.router.handle_closed(c);
    h.router.handle_closed(a);
    let d = h.open(Role::Player);
    assert_eq!(sent(&h.drain()), [(d, CONFIG)]);
    assert_eq!(h.router.counts().players, 2);
}

#[test]
fn max_player_count_counts_players_only_across_all_streamers() {
    let mut h = capped(Some(1));
    let _s1 = h.streamer("A");
    let _s2 = h.streamer("B");
    let _f = h.open(Role::Sfu);
    let p = h.open(Role::Player);
    h.msg(p, r#"{"type":"subscribe","streamerId":"A"}"#);
    h.drain();
    let q = h.open(Role::Player);
    assert_eq!(
        closes(&h.drain()),
        [(q, 1013, "too many connections. max: 1, current: 1")]
    );
    // Streamers and SFUs are never capped.
    let _s3 = h.open(Role::Streamer);
    let _f2 = h.open(Role::Sfu);
    assert_eq!(closes(&h.drain()), []);
}

#[test]
fn max_player_count_zero_refuses_every_player_and_none_is_unlimited() {
    let mut h = capped(Some(0));
    let p = h.open(Role::Player);
    assert_eq!(
        closes(&h.drain()),
        [(p, 1013, "too many connections. max: 0, current: 0")]
    );
    let mut h = capped(None);
    for _ in 0..1000 {
        h.open(Role::Player);
    }
    assert_eq!(closes(&h.drain()), []);
    assert_eq!(h.router.counts().players, 1000);
}

// ---- playerCount updates ----

#[test]
fn player_count_updates_reach_every_player_whose_count_is_stale_once_per_flush() {
    let mut h = updating();
    let a = h.open(Role::Player);
    let b = h.open(Role::Player);
    let c = h.open(Role::Player);
    let out = h.drain();
    assert_eq!(
        sent(&out),
        [
            (a, CONFIG),
            (a, count(1).as_str()),
            (b, CONFIG),
            (b, count(2).as_str()),
            (c, CONFIG),
            (c, count(3).as_str()),
        ]
    );
    assert!(h.router.player_count_due());
    h.router.handle_player_count_tick();
    let three = count(3);
    assert_eq!(
        sent(&h.drain()),
        [(a, three.as_str()), (b, three.as_str())],
        "c already has 3"
    );
    assert!(!h.router.player_count_due());
    h.router.handle_player_count_tick();
    assert_eq!(h.drain(), [], "nothing changed");

    h.router.handle_closed(b);
    assert!(h.router.player_count_due());
    h.router.handle_player_count_tick();
    let two = count(2);
    assert_eq!(sent(&h.drain()), [(a, two.as_str()), (c, two.as_str())]);

    // A join and a leave between flushes: the count is back where it was, nobody is told.
    let d = h.open(Role::Player);
    h.drain();
    h.router.handle_closed(d);
    h.router.handle_player_count_tick();
    assert_eq!(h.drain(), []);
}

#[test]
fn player_count_updates_are_off_by_default_and_without_player_count() {
    for config in [
        RouterConfig::default(),
        RouterConfig {
            player_count: false,
            player_count_updates: true,
            ..RouterConfig::default()
        },
    ] {
        let mut h = Harness::with(config);
        h.open(Role::Player);
        h.open(Role::Player);
        h.drain();
        assert!(!h.router.player_count_due());
        h.router.handle_player_count_tick();
        assert_eq!(h.drain(), []);
    }
}

#[test]
fn streamers_and_sfus_neither_change_the_count_nor_get_it() {
    let mut h = updating();
    let p = h.open(Role::Player);
    h.router.handle_player_count_tick();
    h.drain();
    let st = h.streamer("S");
    let f = h.open(Role::Sfu);
    assert!(!h.router.player_count_due());
    h.router.handle_closed(st);
    h.router.handle_closed(f);
    h.drain();
    assert!(!h.router.player_count_due());
    let _ = p;
}

#[test]
fn a_burst_of_ten_thousand_joins_costs_one_update_per_player() {
    const N: usize = 10_000;
    let mut h = updating();
    let players: Vec<ConnId> = (0..N).map(|_| h.open(Role::Player)).collect();
    h.router.handle_player_count_tick();
    let out = h.drain();
    let counts = out
        .iter()
        .filter(|o| matches!(o, Output::Send { text, .. } if text.as_str().starts_with(r#"{"type":"playerCount""#)))
        .count();
    // One at connect each, then one flush to every player but the last: 2N - 1, where sending
    // on every change (Cirrus) would be N(N+1)/2 = 50,005,000.
    assert_eq!(counts, 2 * N - 1);
    let last = count(N);
    let final_counts = sent(&out)
        .into_iter()
        .filter(|(_, t)| *t == last.as_str())
        .count();
    assert_eq!(final_counts, N, "every player ends with the current count");
    // A burst of leaves: one message to each player that stays.
    for &p in &players[..N / 2] {
        h.router.handle_closed(p);
    }
    h.router.handle_player_count_tick();
    assert_eq!(h.drain().len(), N / 2);
}

#[derive(Debug, Clone)]
enum CountOp {
    Join,
    Leave(usize),
    Streamer,
    Flush,
}

fn count_op() -> impl Strategy<Value = CountOp> {
    prop_oneof![
        4 => Just(CountOp::Join),
        3 => any::<usize>().prop_map(CountOp::Leave),
        1 => Just(CountOp::Streamer),
        2 => Just(CountOp::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// After every flush each open player has been sent the current count last; between two
    /// flushes a player gets at most one `playerCount` (plus the one at connect), and never the
    /// same count twice in a row.
    #[test]
    fn after_each_flush_every_player_knows_the_count_at_one_message_per_flush(
        ops in prop::collection::vec(count_op(), 1..200),
    ) {
        let mut h = updating();
        let mut open: Vec<ConnId> = Vec::new();
        let mut last: HashMap<ConnId, String> = HashMap::default();
        let mut since_flush: HashMap<ConnId, usize> = HashMap::default();
        for op in ops {
            match op {
                CountOp::Join => {
                    let p = h.open(Role::Player);
                    open.push(p);
                }
                CountOp::Leave(i) => {
                    if !open.is_empty() {
                        let p = open.remove(i % open.len());
                        h.router.handle_closed(p);
                        last.remove(&p);
                        since_flush.remove(&p);
                    }
                }
                CountOp::Streamer => {
                    h.open(Role::Streamer);
                }
                CountOp::Flush => {
                    since_flush.clear();
                    h.router.handle_player_count_tick();
                }
            }
            for (to, text) in sent(&h.drain()) {
                if !text.starts_with(r#"{"type":"playerCount""#) {
                    continue;
                }
                prop_assert!(open.contains(&to), "playerCount to a player that left");
                prop_assert_ne!(last.get(&to).map(String::as_str), Some(text), "same count twice");
                last.insert(to, text.to_owned());
                let n = since_flush.entry(to).or_default();
                *n += 1;
                prop_assert!(*n <= 1, "two playerCount to {to} without a flush between");
            }
            if matches!(op, CountOp::Flush) {
                let current = count(open.len());
                for p in &open {
                    prop_assert_eq!(last.get(p).map(String::as_str), Some(current.as_str()));
                }
            }
            prop_assert_eq!(h.router.counts().players, open.len());
        }
    }
}

// ---- OfferToReceive ----

#[test]
fn offer_to_receive_player_is_announced_with_send_offer_false() {
    let mut h = capped(None);
    let st = h.streamer("S");
    let browser = h.open_with(
        Role::Player,
        Opening {
            offer_to_receive: true,
            ..Opening::default()
        },
    );
    let normal = h.open(Role::Player);
    h.drain();
    h.msg(browser, r#"{"type":"subscribe","streamerId":"S"}"#);
    h.msg(normal, r#"{"type":"subscribe","streamerId":"S"}"#);
    assert_eq!(
        sent(&h.drain()),
        [
            (
                st,
                r#"{"type":"playerConnected","dataChannel":true,"sfu":false,"playerId":"Player0","sendOffer":false}"#
            ),
            (
                st,
                r#"{"type":"playerConnected","dataChannel":true,"sfu":false,"playerId":"Player1"}"#
            ),
        ]
    );
}

#[test]
fn offer_to_receive_player_that_offers_unsubscribed_is_announced_then_its_offer_forwarded() {
    // UE4.27-era pages with BrowserSendOffer offer at once, without subscribing (§8).
    let mut h = capped(None);
    let st = h.streamer("S");
    let browser = h.open_with(
        Role::Player,
        Opening {
            offer_to_receive: true,
            ..Opening::default()
        },
    );
    h.drain();
    h.msg(browser, r#"{"type":"offer","sdp":"o"}"#);
    assert_eq!(
        sent(&h.drain()),
        [
            (
                st,
                r#"{"type":"playerConnected","dataChannel":true,"sfu":false,"playerId":"Player0","sendOffer":false}"#
            ),
            (st, r#"{"type":"offer","sdp":"o","playerId":"Player0"}"#),
        ]
    );
}

// ---- subscribe_at_connect ----

fn at_connect() -> Harness {
    Harness::with(RouterConfig {
        subscribe_at_connect: true,
        player_count: false,
        ..RouterConfig::default()
    })
}

#[test]
fn subscribe_at_connect_announces_the_player_to_the_first_streamer_after_its_config() {
    let mut h = at_connect();
    let f = h.open(Role::Sfu);
    let first = h.streamer("First");
    let _second = h.streamer("Second");
    h.drain();
    let p = h.open(Role::Player);
    assert_eq!(
        sent(&h.drain()),
        [
            (p, CONFIG),
            (
                first,
                r#"{"type":"playerConnected","dataChannel":true,"sfu":false,"playerId":"Player1"}"#
            ),
        ],
        "the SFU ahead in the table is skipped: Cirrus 5.0/5.1 told its streamer"
    );
    let _ = f;
    // The streamer's offer reaches the page, which never subscribed.
    h.msg(first, r#"{"type":"offer","playerId":"Player1","sdp":"o"}"#);
    assert_eq!(
        sent(&h.drain()),
        [(p, r#"{"type":"offer","playerId":"Player1","sdp":"o"}"#)]
    );
    // A later explicit subscribe moves it, with the usual pair of messages.
    h.msg(p, r#"{"type":"subscribe","streamerId":"Second"}"#);
    let out = h.drain();
    assert_eq!(
        sent(&out)[0],
        (
            first,
            r#"{"type":"playerDisconnected","playerId":"Player1"}"#
        )
    );
    assert_eq!(sent(&out).len(), 2);
}

#[test]
fn subscribe_at_connect_without_a_streamer_closes_1013_as_cirrus() {
    let mut h = at_connect();
    let _f = h.open(Role::Sfu);
    h.drain();
    let p = h.open(Role::Player);
    let out = h.drain();
    assert_eq!(sent(&out), []);
    assert_eq!(closes(&out), [(p, 1013, "Streamer is not connected")]);
    assert_eq!(h.router.counts().players, 0);
}

#[test]
fn subscribe_at_connect_to_a_full_streamer_fails_and_the_player_stays() {
    let mut h = Harness::with(RouterConfig {
        subscribe_at_connect: true,
        player_count: false,
        max_players: 1,
        ..RouterConfig::default()
    });
    let _st = h.streamer("S");
    let _p = h.open(Role::Player);
    h.drain();
    let q = h.open(Role::Player);
    assert_eq!(
        sent(&h.drain()),
        [
            (q, CONFIG),
            (
                q,
                r#"{"type":"subscribeFailed","message":"Streamer S is full. Max players = 1."}"#
            ),
        ]
    );
    assert!(h.router.is_open(q));
}

// ---- counts ----

#[test]
fn counts_follow_streamer_port_and_player_port_connections() {
    let mut h = capped(None);
    assert_eq!(h.router.counts(), Counts::default());
    let s = h.open(Role::Streamer);
    let _f = h.open(Role::Sfu);
    let p = h.open(Role::Player);
    let _q = h.open(Role::Player);
    assert_eq!(
        h.router.counts(),
        Counts {
            streamers: 1,
            players: 2
        }
    );
    h.router.handle_closed(s);
    h.router.handle_closed(p);
    assert_eq!(
        h.router.counts(),
        Counts {
            streamers: 0,
            players: 1
        }
    );
}
