//! Unit tests of the REST snapshots ([`Router::query`]) against the tables they read: ids,
//! roles, subscriptions, addresses and order, before and after connections leave.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use protocol::Inbound;

use super::snapshot::{ApiCounts, PlayerInfo, StreamerInfo};
use super::{ConnId, Role, Router, RouterConfig};

fn ip(last: u8) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
}

struct Tables {
    router: Router,
    next: u64,
}

impl Tables {
    fn new() -> Self {
        Self {
            router: Router::new(RouterConfig::default()),
            next: 1,
        }
    }

    /// Opens a connection from 10.0.0.<its conn id>.
    fn open(&mut self, role: Role) -> ConnId {
        let conn = ConnId(self.next);
        self.next += 1;
        let last = u8::try_from(conn.0).unwrap_or(255);
        self.router.handle_opened_from(conn, role, ip(last));
        conn
    }

    fn msg(&mut self, conn: ConnId, text: &str) {
        let message = Inbound::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        self.router.handle_message(conn, message, || 0);
        while self.router.poll_output().is_some() {}
    }

    fn streamer(&mut self, id: &str) -> ConnId {
        let conn = self.open(Role::Streamer);
        self.msg(conn, &format!(r#"{{"type":"endpointId","id":"{id}"}}"#));
        conn
    }

    fn subscribe(&mut self, conn: ConnId, id: &str) {
        self.msg(
            conn,
            &format!(r#"{{"type":"subscribe","streamerId":"{id}"}}"#),
        );
    }
}

fn player(conn: u64, id: &str, role: Role, to: Option<&str>) -> PlayerInfo {
    PlayerInfo {
        conn: ConnId(conn),
        player_id: id.to_owned(),
        role,
        subscribed_to: to.map(str::to_owned),
        remote: ip(u8::try_from(conn).unwrap_or(255)),
    }
}

/// Two streamers, an SFU subscribed to the first, three players: one on each streamer, one on
/// the SFU. Conn ids: s1 = 1, s2 = 2, sfu = 3, players 4, 5, 6. Subscribe order differs from
/// connection order: Player1 (conn 4) subscribes to S1 before the SFU (conn 3) does.
fn two_streamers_three_players_one_sfu() -> Tables {
    let mut t = Tables::new();
    t.streamer("S1");
    t.streamer("S2");
    let sfu = t.open(Role::Sfu);
    t.msg(sfu, r#"{"type":"endpointId","id":"SFU"}"#);
    let (a, b, c) = (
        t.open(Role::Player),
        t.open(Role::Player),
        t.open(Role::Player),
    );
    t.subscribe(b, "S2");
    t.subscribe(a, "S1");
    t.subscribe(sfu, "S1");
    t.subscribe(c, "SFU");
    t
}

#[test]
fn streamers_list_entries_in_connection_order_with_their_subscribers() {
    let t = two_streamers_three_players_one_sfu();
    // The SFU is Player0 (it connected before the players); players are Player1..3.
    let sfu_as_player = player(3, "Player0", Role::Sfu, Some("S1"));
    let expected = vec![
        StreamerInfo {
            streamer_id: "S1".into(),
            role: Role::Streamer,
            streaming: true,
            remote: ip(1),
            // Connection order (Wilbur's registry order), not subscribe order: Player1
            // subscribed first, the SFU connected first.
            subscribers: vec![
                sfu_as_player,
                player(4, "Player1", Role::Player, Some("S1")),
            ],
        },
        StreamerInfo {
            streamer_id: "S2".into(),
            role: Role::Streamer,
            streaming: true,
            remote: ip(2),
            subscribers: vec![player(5, "Player2", Role::Player, Some("S2"))],
        },
        StreamerInfo {
            streamer_id: "SFU".into(),
            role: Role::Sfu,
            streaming: true,
            remote: ip(3),
            subscribers: vec![player(6, "Player3", Role::Player, Some("SFU"))],
        },
    ];
    assert_eq!(t.router.streamers(), expected);
    assert_eq!(t.router.streamer("S2"), Some(expected[1].clone()));
}

#[test]
fn players_list_players_and_sfus_in_connection_order() {
    let t = two_streamers_three_players_one_sfu();
    let expected = vec![
        player(3, "Player0", Role::Sfu, Some("S1")),
        player(4, "Player1", Role::Player, Some("S1")),
        player(5, "Player2", Role::Player, Some("S2")),
        player(6, "Player3", Role::Player, Some("SFU")),
    ];
    assert_eq!(t.router.players(), expected);
    assert_eq!(t.router.player("Player2"), Some(expected[2].clone()));
}

#[test]
fn counts_include_an_sfu_as_both_a_streamer_and_a_player() {
    let t = two_streamers_three_players_one_sfu();
    assert_eq!(
        t.router.api_counts(),
        ApiCounts {
            streamers: 3,
            players: 4
        }
    );
}

#[test]
fn unknown_ids_are_none() {
    let t = two_streamers_three_players_one_sfu();
    assert_eq!(t.router.streamer("Nobody"), None);
    assert_eq!(t.router.player("Player99"), None);
    // A player id is not a streamer id, nor the other way round.
    assert_eq!(t.router.streamer("Player1"), None);
    assert_eq!(t.router.player("S1"), None);
}

#[test]
fn an_unidentified_streamer_is_listed_under_its_placeholder_and_not_streaming() {
    let mut t = Tables::new();
    t.open(Role::Streamer);
    let idle = t.open(Role::Player);
    let streamer = t
        .router
        .streamer("UnknownStreamer")
        .expect("placeholder id");
    assert!(!streamer.streaming);
    assert!(streamer.subscribers.is_empty());
    let p = t.router.player("Player0").expect("idle player");
    assert_eq!(p.subscribed_to, None);
    assert_eq!(p.conn, idle);
}

#[test]
fn a_renamed_streamer_is_reported_under_its_new_id_by_its_subscribers() {
    let mut t = Tables::new();
    let s = t.streamer("Old");
    let p = t.open(Role::Player);
    t.subscribe(p, "Old");
    t.msg(s, r#"{"type":"endpointId","id":"New"}"#);
    assert_eq!(t.router.streamer("Old"), None);
    assert_eq!(
        t.router.player("Player0").and_then(|p| p.subscribed_to),
        Some("New".to_owned())
    );
}

#[test]
fn leaving_connections_disappear_from_every_answer() {
    let mut t = two_streamers_three_players_one_sfu();
    // Player2 (conn 5) leaves; then S1 leaves, which closes Player1 and leaves the SFU idle.
    t.router.handle_closed(ConnId(5));
    t.router.handle_closed(ConnId(1));
    while t.router.poll_output().is_some() {}
    assert_eq!(t.router.player("Player2"), None);
    assert_eq!(t.router.player("Player1"), None, "closed with its streamer");
    let ids: Vec<String> = t
        .router
        .streamers()
        .into_iter()
        .map(|s| s.streamer_id)
        .collect();
    assert_eq!(ids, ["S2", "SFU"]);
    assert_eq!(t.router.streamer("S2").map(|s| s.subscribers), Some(vec![]));
    assert_eq!(
        t.router.players(),
        vec![player(3, "Player0", Role::Sfu, None)],
        "the SFU lost its upstream, so its own player (Player3) was closed too"
    );
    assert_eq!(t.router.streamer("SFU").map(|s| s.streaming), Some(false));
    assert_eq!(
        t.router.api_counts(),
        ApiCounts {
            streamers: 2,
            players: 1
        }
    );
}

#[test]
fn without_an_address_the_remote_is_none() {
    let mut r = Router::new(RouterConfig::default());
    r.handle_opened(ConnId(1), Role::Player);
    assert_eq!(r.player("Player0").and_then(|p| p.remote), None);
}

#[derive(Debug, Clone)]
enum Step {
    Open(u8),
    Identify(usize, u8),
    Subscribe(usize, u8),
    Unsubscribe(usize),
    Close(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..3).prop_map(Step::Open),
        (any::<usize>(), 0u8..3).prop_map(|(c, i)| Step::Identify(c, i)),
        (any::<usize>(), 0u8..3).prop_map(|(c, i)| Step::Subscribe(c, i)),
        any::<usize>().prop_map(Step::Unsubscribe),
        any::<usize>().prop_map(Step::Close),
    ]
}

proptest! {
    /// Whatever happens, the answers agree with each other: counts are list lengths, every
    /// listed id answers a single-id query with the same row, every subscriber names its
    /// streamer and appears in that streamer's list, and lists are in connection order.
    #[test]
    fn snapshots_agree_with_each_other(steps in prop::collection::vec(step(), 1..60)) {
        let mut t = Tables::new();
        let mut opened: Vec<ConnId> = Vec::new();
        for s in steps {
            let pick = |i: usize| opened.get(i % opened.len().max(1)).copied();
            match s {
                Step::Open(r) => {
                    let role = [Role::Streamer, Role::Player, Role::Sfu][usize::from(r)];
                    opened.push(t.open(role));
                }
                Step::Identify(c, i) => if let Some(c) = pick(c) {
                    t.msg(c, &format!(r#"{{"type":"endpointId","id":"S{i}"}}"#));
                },
                Step::Subscribe(c, i) => if let Some(c) = pick(c) {
                    t.subscribe(c, &format!("S{i}"));
                },
                Step::Unsubscribe(c) => if let Some(c) = pick(c) {
                    t.msg(c, r#"{"type":"unsubscribe"}"#);
                },
                Step::Close(c) => if let Some(c) = pick(c) {
                    t.router.handle_closed(c);
                    while t.router.poll_output().is_some() {}
                },
            }
        }
        let streamers = t.router.streamers();
        let players = t.router.players();
        prop_assert_eq!(t.router.api_counts(), ApiCounts { streamers: streamers.len(), players: players.len() });
        prop_assert!(players.windows(2).all(|w| w[0].conn < w[1].conn));
        for p in &players {
            prop_assert!(t.router.is_open(p.conn));
            prop_assert_eq!(t.router.player(&p.player_id), Some(p.clone()));
            if let Some(to) = &p.subscribed_to {
                let s = t.router.streamer(to);
                prop_assert!(s.is_some_and(|s| s.subscribers.contains(p)), "{p:?} not listed by {to}");
            }
        }
        let mut listed = 0;
        for s in &streamers {
            prop_assert_eq!(t.router.streamer(&s.streamer_id), Some(s.clone()));
            prop_assert!(s.subscribers.windows(2).all(|w| w[0].conn < w[1].conn));
            for sub in &s.subscribers {
                prop_assert_eq!(sub.subscribed_to.as_deref(), Some(s.streamer_id.as_str()));
                prop_assert!(players.contains(sub));
            }
            listed += s.subscribers.len();
        }
        prop_assert_eq!(listed, players.iter().filter(|p| p.subscribed_to.is_some()).count());
    }
}
