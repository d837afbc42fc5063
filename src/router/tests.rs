//! Unit tests of the routing core against PROTOCOL.md, without sockets: a [`Harness`] feeds
//! inputs to the [`Router`] and the tests compare its outputs, in order, with the exact texts
//! and close codes the protocol prescribes.

use proptest::prelude::*;
use protocol::Inbound;
use serde_json::value::RawValue;

use super::*;
use crate::config::PlayerIdStyle;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct Harness {
    router: Router,
    next_conn: u64,
    /// The clock handed to `handle_message`.
    now_ms: u64,
}

impl Harness {
    fn new() -> Self {
        Self::with(RouterConfig::default())
    }

    fn with(config: RouterConfig) -> Self {
        Self {
            router: Router::new(config),
            next_conn: 1,
            now_ms: 0,
        }
    }

    fn max_players(n: u32) -> Self {
        Self::with(RouterConfig {
            max_players: n,
            ..RouterConfig::default()
        })
    }

    fn numeric() -> Self {
        Self::with(RouterConfig {
            player_id_style: PlayerIdStyle::Numeric,
            ..RouterConfig::default()
        })
    }

    /// Accepts a connection on the port of `role`; ConnIds increase from 1.
    fn open(&mut self, role: Role) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.router.handle_opened(conn, role);
        conn
    }

    /// One message from `conn`, parsed as the connection task would.
    fn msg(&mut self, conn: ConnId, text: &str) {
        let message = Inbound::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let now = self.now_ms;
        self.router.handle_message(conn, message, || now);
    }

    fn close(&mut self, conn: ConnId) {
        self.router.handle_closed(conn);
    }

    fn tick(&mut self, now_ms: u64) {
        self.router.handle_tick(now_ms);
    }

    /// The outputs, with every charge set to `Receiver`: most tests check what is sent, and
    /// `drain_charged` tests who pays for it.
    fn drain(&mut self) -> Vec<Output> {
        self.drain_charged()
            .into_iter()
            .map(|o| match o {
                Output::Send { to, text, .. } => Output::Send {
                    to,
                    text,
                    charge: Charge::Receiver,
                },
                other => other,
            })
            .collect()
    }

    fn drain_charged(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.router.poll_output()).collect()
    }

    /// A streamer that identified as `id` (and got exactly that id); outputs drained.
    fn streamer(&mut self, id: &str) -> ConnId {
        let conn = self.open(Role::Streamer);
        self.msg(conn, &format!(r#"{{"type":"endpointId","id":"{id}"}}"#));
        let out = self.drain();
        assert_eq!(
            texts(&out, conn).last().copied(),
            Some(format!(r#"{{"type":"endpointIdConfirm","committedId":"{id}"}}"#).as_str())
        );
        conn
    }

    /// An SFU that identified as `id`; outputs drained.
    fn sfu(&mut self, id: &str) -> ConnId {
        let conn = self.open(Role::Sfu);
        self.msg(conn, &format!(r#"{{"type":"endpointId","id":"{id}"}}"#));
        self.drain();
        conn
    }

    /// An idle player; outputs drained.
    fn player(&mut self) -> ConnId {
        let conn = self.open(Role::Player);
        self.drain();
        conn
    }

    /// A player (or SFU) subscribed to `id`; outputs drained.
    fn subscribe(&mut self, conn: ConnId, id: &str) {
        self.msg(
            conn,
            &format!(r#"{{"type":"subscribe","streamerId":"{id}"}}"#),
        );
        let out = self.drain();
        assert!(
            out.iter().any(|o| matches!(o, Output::Send { text, .. }
                if text.as_str().starts_with(r#"{"type":"playerConnected""#))),
            "subscribe to {id} failed: {out:?}"
        );
    }

    /// A new player subscribed to `id`; outputs drained.
    fn player_on(&mut self, id: &str) -> ConnId {
        let conn = self.player();
        self.subscribe(conn, id);
        conn
    }

    fn list(&mut self, conn: ConnId) -> String {
        self.msg(conn, r#"{"type":"listStreamers"}"#);
        let out = self.drain();
        assert_eq!(out.len(), 1, "{out:?}");
        texts(&out, conn)[0].to_owned()
    }
}

fn send(to: ConnId, text: &str) -> Output {
    Output::Send {
        to,
        text: text.to_owned().into(),
        charge: Charge::Receiver,
    }
}

fn close(conn: ConnId, code: u16, reason: &str) -> Output {
    Output::Close {
        conn,
        code,
        reason: reason.to_owned(),
    }
}

/// The texts sent to `conn`, in order.
fn texts(out: &[Output], conn: ConnId) -> Vec<&str> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, text, .. } if *to == conn => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The close outputs, in order.
fn closes(out: &[Output]) -> Vec<(ConnId, u16, &str)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Close { conn, code, reason } => Some((*conn, *code, reason.as_str())),
            _ => None,
        })
        .collect()
}

fn connected(id: &str) -> String {
    format!(r#"{{"type":"playerConnected","dataChannel":true,"sfu":false,"playerId":"{id}"}}"#)
}

fn sfu_connected(id: &str) -> String {
    format!(r#"{{"type":"playerConnected","dataChannel":true,"sfu":true,"playerId":"{id}"}}"#)
}

fn disconnected(id: &str) -> String {
    format!(r#"{{"type":"playerDisconnected","playerId":"{id}"}}"#)
}

const CONFIG: &str = r#"{"type":"config","peerConnectionOptions":{},"protocolVersion":"1.3.0"}"#;
const IDENTIFY: &str = r#"{"type":"identify"}"#;
const STREAMER_DISCONNECTED: &str = r#"{"type":"streamerDisconnected"}"#;

// ---------------------------------------------------------------------------------------------
// §2 Connection sequences
// ---------------------------------------------------------------------------------------------

#[test]
fn streamer_gets_config_then_identify() {
    let mut h = Harness::new();
    let st = h.open(Role::Streamer);
    assert_eq!(h.drain(), [send(st, CONFIG), send(st, IDENTIFY)]);
}

#[test]
fn config_carries_peer_options_verbatim() {
    let options = r#"{"iceServers":[{"urls":["stun:stun.l.google.com:19302"]}],"x":1.50}"#;
    let mut h = Harness::with(RouterConfig {
        peer_options: RawValue::from_string(options.to_owned()).unwrap(),
        ..RouterConfig::default()
    });
    let p = h.open(Role::Player);
    let out = h.drain();
    assert_eq!(
        texts(&out, p)[0],
        format!(
            r#"{{"type":"config","peerConnectionOptions":{options},"protocolVersion":"1.3.0"}}"#
        )
    );
}

/// A reload: a player that connects afterwards gets the new `peer_options`; one connected
/// before keeps its session, gets nothing new, and the tables are untouched.
#[test]
fn reconfigure_gives_new_peers_the_new_config_and_leaves_connected_ones_alone() {
    let before = r#"{"a":1}"#;
    let after = r#"{"b":2}"#;
    let config_text = |options: &str| {
        format!(
            r#"{{"type":"config","peerConnectionOptions":{options},"protocolVersion":"1.3.0"}}"#
        )
    };
    let mut h = Harness::with(RouterConfig {
        peer_options: RawValue::from_string(before.to_owned()).unwrap(),
        player_count: false,
        ..RouterConfig::default()
    });
    let st = h.open(Role::Streamer);
    let old = h.open(Role::Player);
    let out = h.drain();
    assert_eq!(texts(&out, old), [config_text(before)]);
    assert!(texts(&out, st).iter().any(|t| t.contains("identify")));
    h.router.handle_reconfigure(RouterConfig {
        peer_options: RawValue::from_string(after.to_owned()).unwrap(),
        player_count: false,
        max_players: 1,
        ..RouterConfig::default()
    });
    assert_eq!(h.drain(), [], "a reload sends nothing by itself");
    let new = h.open(Role::Player);
    assert_eq!(texts(&h.drain(), new), [config_text(after)]);
    assert_eq!(
        h.router.counts().players,
        2,
        "the connected player is still there"
    );
}

/// Mints `{"urls":["turn:t"],"username":"<id>"}`, `"<id>/long"` for a long-lived credential:
/// the username shows which peer it was for and which lifetime it was asked for.
#[derive(Debug)]
struct FixedIce;

impl crate::router::IceSource for FixedIce {
    fn ice_server(
        &self,
        id: &str,
        lifetime: crate::router::CredentialLifetime,
    ) -> serde_json::Value {
        let username = match lifetime {
            crate::router::CredentialLifetime::Player => id.to_owned(),
            crate::router::CredentialLifetime::Long => format!("{id}/long"),
        };
        serde_json::json!({"urls": ["turn:t"], "username": username})
    }
}

#[test]
fn config_carries_each_peers_own_ice_server_merged_into_peer_options() {
    let options = r#"{"iceServers":[{"urls":["stun:s"]}],"iceTransportPolicy":"relay"}"#;
    let mut h = Harness::with(RouterConfig {
        peer_options: RawValue::from_string(options.to_owned()).unwrap(),
        ice: Some(std::sync::Arc::new(FixedIce)),
        ..RouterConfig::default()
    });
    let p0 = h.open(Role::Player);
    let p1 = h.open(Role::Player);
    let st = h.open(Role::Streamer);
    let f = h.open(Role::Sfu);
    let out = h.drain();
    let config = |id: &str| {
        format!(
            r#"{{"type":"config","peerConnectionOptions":{{"iceServers":[{{"urls":["stun:s"]}},{{"urls":["turn:t"],"username":"{id}"}}],"iceTransportPolicy":"relay"}},"protocolVersion":"1.3.0"}}"#
        )
    };
    assert_eq!(
        texts(&out, p0),
        [
            config("Player0"),
            r#"{"type":"playerCount","count":1}"#.to_owned()
        ]
    );
    assert_eq!(texts(&out, p1)[0], config("Player1"));
    assert_eq!(
        texts(&out, st),
        [config("UnknownStreamer/long"), IDENTIFY.to_owned()]
    );
    // Streamers and SFUs get config once and keep it: their credentials are long-lived.
    assert_eq!(texts(&out, f)[0], config("UnknownStreamer1/long"));

    // Without iceServers in peer_options, the list is created.
    let mut h = Harness::with(RouterConfig {
        ice: Some(std::sync::Arc::new(FixedIce)),
        ..RouterConfig::default()
    });
    let p = h.open(Role::Player);
    assert_eq!(
        texts(&h.drain(), p)[0],
        r#"{"type":"config","peerConnectionOptions":{"iceServers":[{"urls":["turn:t"],"username":"Player0"}]},"protocolVersion":"1.3.0"}"#
    );
}

#[test]
fn sfu_gets_config_then_identify() {
    let mut h = Harness::new();
    let f = h.open(Role::Sfu);
    assert_eq!(h.drain(), [send(f, CONFIG), send(f, IDENTIFY)]);
}

#[test]
fn player_gets_config_then_player_count_including_itself() {
    let mut h = Harness::new();
    let p1 = h.open(Role::Player);
    assert_eq!(
        h.drain(),
        [
            send(p1, CONFIG),
            send(p1, r#"{"type":"playerCount","count":1}"#)
        ]
    );
    // Streamers and SFUs are not counted; the count is not re-sent to p1.
    h.open(Role::Streamer);
    h.open(Role::Sfu);
    h.drain();
    let p2 = h.open(Role::Player);
    assert_eq!(
        h.drain(),
        [
            send(p2, CONFIG),
            send(p2, r#"{"type":"playerCount","count":2}"#)
        ]
    );
}

#[test]
fn player_count_counts_only_open_players() {
    let mut h = Harness::new();
    let p1 = h.player();
    let _p2 = h.player();
    h.close(p1);
    assert_eq!(h.drain(), []);
    let p3 = h.open(Role::Player);
    assert_eq!(
        texts(&h.drain(), p3),
        [CONFIG, r#"{"type":"playerCount","count":2}"#]
    );
}

#[test]
fn no_player_count_when_player_count_is_false() {
    let mut h = Harness::with(RouterConfig {
        player_count: false,
        ..RouterConfig::default()
    });
    let p = h.open(Role::Player);
    assert_eq!(h.drain(), [send(p, CONFIG)]);
}

#[test]
fn seed_streamer_and_player_flow_exact_texts() {
    let mut h = Harness::new();
    let st = h.open(Role::Streamer);
    assert_eq!(h.drain(), [send(st, CONFIG), send(st, IDENTIFY)]);
    h.msg(
        st,
        r#"{"type":"endpointId","id":"DefaultStreamer","protocolVersion":"1.1.0"}"#,
    );
    assert_eq!(
        h.drain(),
        [send(
            st,
            r#"{"type":"endpointIdConfirm","committedId":"DefaultStreamer"}"#
        )]
    );
    h.msg(st, r#"{"type":"ping","time":1767225600}"#);
    assert_eq!(
        h.drain(),
        [send(st, r#"{"type":"pong","time":1767225600}"#)]
    );

    let p = h.open(Role::Player);
    assert_eq!(
        h.drain(),
        [
            send(p, CONFIG),
            send(p, r#"{"type":"playerCount","count":1}"#)
        ]
    );
    h.msg(p, r#"{"type":"listStreamers"}"#);
    assert_eq!(
        h.drain(),
        [send(
            p,
            r#"{"type":"streamerList","ids":["DefaultStreamer"]}"#
        )]
    );
    h.msg(p, r#"{"type":"subscribe","streamerId":"DefaultStreamer"}"#);
    assert_eq!(h.drain(), [send(st, &connected("Player0"))]);
    let offer = r#"{"type":"offer","playerId":"Player0","sdp":"v=0\r\n"}"#;
    h.msg(st, offer);
    assert_eq!(h.drain(), [send(p, offer)]);
    h.msg(
        p,
        r#"{"type":"answer","sdp":"v=0\r\n","minBitrateBps":0,"maxBitrateBps":0}"#,
    );
    assert_eq!(
        h.drain(),
        [send(
            st,
            r#"{"type":"answer","sdp":"v=0\r\n","minBitrateBps":0,"maxBitrateBps":0,"playerId":"Player0"}"#
        )]
    );
    let ice = r#"{"type":"iceCandidate","playerId":"Player0","candidate":{"candidate":"c","sdpMid":"0","sdpMLineIndex":0}}"#;
    h.msg(st, ice);
    assert_eq!(h.drain(), [send(p, ice)]);
    h.msg(
        p,
        r#"{"type":"iceCandidate","candidate":{"candidate":"d","sdpMid":"0","sdpMLineIndex":0}}"#,
    );
    assert_eq!(
        h.drain(),
        [send(
            st,
            r#"{"type":"iceCandidate","candidate":{"candidate":"d","sdpMid":"0","sdpMLineIndex":0},"playerId":"Player0"}"#
        )]
    );
    h.msg(p, r#"{"type":"unsubscribe"}"#);
    assert_eq!(h.drain(), [send(st, &disconnected("Player0"))]);
}

// ---------------------------------------------------------------------------------------------
// §3 Message catalogue
// ---------------------------------------------------------------------------------------------

/// St "DefaultStreamer" with SFU "SFU" (Player1) and player Player0 subscribed; Player2
/// subscribed to the SFU.
struct Fixture {
    h: Harness,
    st: ConnId,
    f: ConnId,
    p_st: ConnId,
    p_f: ConnId,
}

fn fixture() -> Fixture {
    let mut h = Harness::new();
    let st = h.streamer("DefaultStreamer");
    let p_st = h.player_on("DefaultStreamer"); // Player0
    let f = h.sfu("SFU"); // Player1
    h.subscribe(f, "DefaultStreamer");
    let p_f = h.player_on("SFU"); // Player2
    Fixture {
        h,
        st,
        f,
        p_st,
        p_f,
    }
}

#[test]
fn types_a_role_may_not_send_are_ignored() {
    let streamer_may_not = [
        r#"{"type":"listStreamers"}"#,
        r#"{"type":"subscribe","streamerId":"SFU"}"#,
        r#"{"type":"unsubscribe"}"#,
        r#"{"type":"dataChannelRequest","playerId":"Player0"}"#,
        r#"{"type":"peerDataChannelsReady","playerId":"Player0"}"#,
        r#"{"type":"peerDataChannels","playerId":"Player0","sendStreamId":2}"#,
        r#"{"type":"streamerDataChannels","playerId":"Player0"}"#,
        r#"{"type":"startStreaming"}"#,
        r#"{"type":"stopStreaming"}"#,
        r#"{"type":"stats","data":{}}"#,
    ];
    let player_may_not = [
        r#"{"type":"endpointId","id":"Sneaky"}"#,
        r#"{"type":"disconnectPlayer","playerId":"Player2"}"#,
        r#"{"type":"peerDataChannels","playerId":"Player2"}"#,
        r#"{"type":"streamerDataChannels","playerId":"Player2"}"#,
        r#"{"type":"startStreaming"}"#,
        r#"{"type":"stopStreaming"}"#,
    ];
    let sfu_may_not = [
        r#"{"type":"iceCandidate","playerId":"Player2","candidate":{}}"#,
        r#"{"type":"disconnectPlayer","playerId":"Player2"}"#,
        r#"{"type":"layerPreference","playerId":"Player2","spatialLayer":1}"#,
        r#"{"type":"dataChannelRequest"}"#,
        r#"{"type":"peerDataChannelsReady"}"#,
        r#"{"type":"stats"}"#,
    ];
    let mut fx = fixture();
    // Idle players too: a forbidden type must not auto-subscribe them.
    let idle = fx.h.player();
    for (sender, list) in [
        (fx.st, &streamer_may_not[..]),
        (fx.p_st, &player_may_not[..]),
        (idle, &player_may_not[..]),
        (fx.f, &sfu_may_not[..]),
    ] {
        for text in list {
            fx.h.msg(sender, text);
            assert_eq!(fx.h.drain(), [], "{sender} sent {text}");
        }
    }
    // Nothing changed: everybody is still connected and subscribed as before.
    assert_eq!(fx.h.router.connection_count(), 5);
    assert_eq!(
        fx.h.list(fx.f),
        r#"{"type":"streamerList","ids":["DefaultStreamer","SFU"]}"#
    );
    let offer = r#"{"type":"offer","playerId":"Player0","sdp":"x"}"#;
    fx.h.msg(fx.st, offer);
    assert_eq!(fx.h.drain(), [send(fx.p_st, offer)]);
    fx.h.msg(fx.f, r#"{"type":"offer","playerId":"Player2","sdp":"y"}"#);
    assert_eq!(
        fx.h.drain(),
        [send(fx.p_f, r#"{"type":"offer","sdp":"y"}"#)]
    );
}

#[test]
fn stats_from_a_player_is_ignored() {
    let mut fx = fixture();
    fx.h.msg(fx.p_st, r#"{"type":"stats","data":{"bitrate":5}}"#);
    let idle = fx.h.player();
    fx.h.msg(idle, r#"{"type":"stats"}"#);
    assert_eq!(fx.h.drain(), []);
}

#[test]
fn server_only_types_are_ignored_from_every_role() {
    let server_only = [
        r#"{"type":"config","peerConnectionOptions":{}}"#,
        r#"{"type":"identify"}"#,
        r#"{"type":"endpointIdConfirm","committedId":"X"}"#,
        r#"{"type":"streamerIdChanged","newID":"X"}"#,
        r#"{"type":"playerCount","count":3}"#,
        r#"{"type":"streamerList","ids":[]}"#,
        r#"{"type":"subscribeFailed","message":"m"}"#,
        r#"{"type":"playerConnected","dataChannel":true,"sfu":false,"playerId":"Player0"}"#,
        r#"{"type":"playerDisconnected","playerId":"Player0"}"#,
        r#"{"type":"streamerDisconnected"}"#,
    ];
    let mut fx = fixture();
    for sender in [fx.st, fx.f, fx.p_st, fx.p_f] {
        for text in server_only {
            fx.h.msg(sender, text);
            assert_eq!(fx.h.drain(), [], "{sender} sent {text}");
        }
    }
    assert_eq!(fx.h.router.connection_count(), 4);
}

#[test]
fn unknown_types_are_ignored_and_the_connection_kept() {
    let mut fx = fixture();
    for sender in [fx.st, fx.f, fx.p_st] {
        fx.h.msg(sender, r#"{"type":"someFutureThing","playerId":"Player0"}"#);
        assert_eq!(fx.h.drain(), []);
        fx.h.msg(sender, r#"{"type":"ping","time":5}"#);
        assert_eq!(fx.h.drain(), [send(sender, r#"{"type":"pong","time":5}"#)]);
    }
}

#[test]
fn pong_gets_no_reply_from_any_role() {
    let mut fx = fixture();
    for sender in [fx.st, fx.f, fx.p_st] {
        fx.h.msg(sender, r#"{"type":"pong","time":5}"#);
        assert_eq!(fx.h.drain(), []);
    }
}

#[test]
fn messages_after_close_are_discarded() {
    let mut fx = fixture();
    fx.h.close(fx.p_st);
    assert_eq!(fx.h.drain(), [send(fx.st, &disconnected("Player0"))]);
    fx.h.msg(fx.p_st, r#"{"type":"offer","sdp":"x"}"#);
    fx.h.msg(fx.p_st, r#"{"type":"ping"}"#);
    fx.h.close(fx.p_st);
    assert_eq!(fx.h.drain(), []);
}

#[test]
fn opening_a_connection_twice_is_ignored() {
    let mut h = Harness::new();
    let st = h.streamer("A");
    h.router.handle_opened(st, Role::Player);
    assert_eq!(h.drain(), []);
    assert_eq!(h.router.describe(st).as_deref(), Some("A"));
}

// ---------------------------------------------------------------------------------------------
// §4 Forwarding
// ---------------------------------------------------------------------------------------------

#[test]
fn f1_streamer_offer_reaches_its_player_unchanged_with_unknown_keys_in_order() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    let text = r#"{"zeta":1,"type":"offer","big":12345678901234567,"f":1.0,"playerId":"Player0","sdp":"v=0","nested":{"b":[1,2.50],"a":null}}"#;
    h.msg(st, text);
    assert_eq!(h.drain(), [send(p, text)]);
}

#[test]
fn f1_answer_and_ice_candidate_from_streamer_keep_player_id() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    for text in [
        r#"{"type":"answer","playerId":"Player0","sdp":"a"}"#,
        r#"{"type":"iceCandidate","playerId":"Player0","candidate":{"candidate":"c"}}"#,
    ] {
        h.msg(st, text);
        assert_eq!(h.drain(), [send(p, text)]);
    }
}

#[test]
fn f1_without_player_id_is_dropped() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    h.player_on("S");
    h.msg(st, r#"{"type":"offer","sdp":"v=0"}"#);
    h.msg(st, r#"{"type":"iceCandidate","candidate":{}}"#);
    assert_eq!(h.drain(), []);
}

#[test]
fn f1_unknown_or_unsubscribed_target_is_dropped() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    let idle = h.player(); // Player1
    h.msg(st, r#"{"type":"offer","playerId":"Player9","sdp":"v=0"}"#);
    h.msg(st, r#"{"type":"offer","playerId":"Player1","sdp":"v=0"}"#);
    h.msg(st, r#"{"type":"offer","playerId":null,"sdp":"v=0"}"#);
    h.msg(st, r#"{"type":"offer","playerId":0,"sdp":"v=0"}"#); // "0" is nobody in wilbur style
    assert_eq!(h.drain(), []);
    // Once the subscription has ended, nothing is routed under it.
    h.msg(p, r#"{"type":"unsubscribe"}"#);
    h.drain();
    h.msg(st, r#"{"type":"offer","playerId":"Player0","sdp":"v=0"}"#);
    assert_eq!(h.drain(), []);
    let _ = idle;
}

#[test]
fn f1_streamer_addressing_another_streamers_player_is_dropped() {
    let mut h = Harness::new();
    let a = h.streamer("A");
    let _b = h.streamer("B");
    let pa = h.player_on("A"); // Player0
    let _pb = h.player_on("B"); // Player1
    h.msg(a, r#"{"type":"offer","playerId":"Player1","sdp":"v=0"}"#);
    h.msg(
        a,
        r#"{"type":"iceCandidate","playerId":"Player1","candidate":{}}"#,
    );
    assert_eq!(h.drain(), []);
    h.msg(a, r#"{"type":"offer","playerId":"Player0","sdp":"v=0"}"#);
    assert_eq!(
        h.drain(),
        [send(
            pa,
            r#"{"type":"offer","playerId":"Player0","sdp":"v=0"}"#
        )]
    );
}

#[test]
fn f1_numeric_player_id_matches_by_decimal_form_and_is_kept_as_sent() {
    let mut h = Harness::numeric();
    let st = h.streamer("S");
    let p = h.player_on("S");
    assert_eq!(h.router.describe(p).as_deref(), Some("1"));
    for text in [
        r#"{"type":"offer","playerId":1,"sdp":"v=0"}"#,
        r#"{"type":"offer","playerId":1.0,"sdp":"v=0"}"#,
        r#"{"type":"offer","playerId":"1","sdp":"v=0"}"#,
        r#"{"type":"iceCandidate","playerId":1e0,"candidate":{}}"#,
    ] {
        h.msg(st, text);
        assert_eq!(h.drain(), [send(p, text)], "{text}");
    }
    for text in [
        r#"{"type":"offer","playerId":1.5,"sdp":"v=0"}"#,
        r#"{"type":"offer","playerId":-1,"sdp":"v=0"}"#,
        r#"{"type":"offer","playerId":true,"sdp":"v=0"}"#,
        r#"{"type":"offer","playerId":[1],"sdp":"v=0"}"#,
        r#"{"type":"offer","playerId":2,"sdp":"v=0"}"#,
    ] {
        h.msg(st, text);
        assert_eq!(h.drain(), [], "{text}");
    }
}

#[test]
fn disconnect_player_matches_a_numeric_player_id_by_decimal_form() {
    let mut h = Harness::numeric();
    let st = h.streamer("S");
    h.player(); // "1", idle
    let p2 = h.player_on("S"); // "2"
    h.msg(st, r#"{"type":"disconnectPlayer","playerId":2.0}"#);
    let out = h.drain();
    assert_eq!(
        closes(&out),
        [(p2, 1011, "disconnected by streamer")],
        "{out:?}"
    );
}

#[test]
fn f2_player_messages_reach_its_entry_with_player_id_added_last_or_replaced_in_place() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    let cases = [
        (
            r#"{"type":"offer","sdp":"v=0","x":1}"#,
            r#"{"type":"offer","sdp":"v=0","x":1,"playerId":"Player0"}"#,
        ),
        (
            r#"{"type":"answer","sdp":"v=0"}"#,
            r#"{"type":"answer","sdp":"v=0","playerId":"Player0"}"#,
        ),
        (
            r#"{"type":"iceCandidate","candidate":{"candidate":"c"}}"#,
            r#"{"type":"iceCandidate","candidate":{"candidate":"c"},"playerId":"Player0"}"#,
        ),
        (
            r#"{"type":"dataChannelRequest"}"#,
            r#"{"type":"dataChannelRequest","playerId":"Player0"}"#,
        ),
        (
            r#"{"type":"peerDataChannelsReady"}"#,
            r#"{"type":"peerDataChannelsReady","playerId":"Player0"}"#,
        ),
        (
            r#"{"type":"layerPreference","playerId":"","spatialLayer":0,"temporalLayer":0}"#,
            r#"{"type":"layerPreference","playerId":"Player0","spatialLayer":0,"temporalLayer":0}"#,
        ),
        (
            r#"{"playerId":"Player7","type":"answer","sdp":"s"}"#,
            r#"{"playerId":"Player0","type":"answer","sdp":"s"}"#,
        ),
        (
            r#"{"type":"answer","playerId":12,"sdp":"s"}"#,
            r#"{"type":"answer","playerId":"Player0","sdp":"s"}"#,
        ),
    ];
    for (input, expected) in cases {
        h.msg(p, input);
        assert_eq!(h.drain(), [send(st, expected)], "{input}");
    }
}

#[test]
fn f3_sfu_offer_and_peer_data_channels_reach_its_player_without_player_id() {
    let mut fx = fixture();
    fx.h.msg(
        fx.f,
        r#"{"type":"offer","playerId":"Player2","sdp":"s","sfu":true,"scalabilityMode":"L1T1"}"#,
    );
    assert_eq!(
        fx.h.drain(),
        [send(
            fx.p_f,
            r#"{"type":"offer","sdp":"s","sfu":true,"scalabilityMode":"L1T1"}"#
        )]
    );
    fx.h.msg(
        fx.f,
        r#"{"type":"peerDataChannels","sendStreamId":2,"recvStreamId":3,"playerId":"Player2"}"#,
    );
    assert_eq!(
        fx.h.drain(),
        [send(
            fx.p_f,
            r#"{"type":"peerDataChannels","sendStreamId":2,"recvStreamId":3}"#
        )]
    );
}

#[test]
fn f3_to_a_player_not_on_this_sfu_or_without_player_id_is_dropped() {
    let mut fx = fixture();
    fx.h.msg(fx.f, r#"{"type":"offer","playerId":"Player0","sdp":"s"}"#);
    fx.h.msg(fx.f, r#"{"type":"offer","sdp":"s"}"#);
    fx.h.msg(fx.f, r#"{"type":"peerDataChannels","playerId":"Player9"}"#);
    fx.h.msg(fx.f, r#"{"type":"peerDataChannels"}"#);
    assert_eq!(fx.h.drain(), []);
}

#[test]
fn f4_sfu_answer_keeps_a_named_player_id_else_gets_the_sfus_id() {
    let mut fx = fixture();
    let cases = [
        (
            r#"{"type":"answer","sdp":"s"}"#,
            r#"{"type":"answer","sdp":"s","playerId":"Player1"}"#,
        ),
        (
            r#"{"type":"answer","playerId":"","sdp":"s"}"#,
            r#"{"type":"answer","playerId":"Player1","sdp":"s"}"#,
        ),
        (
            r#"{"type":"answer","playerId":0,"sdp":"s"}"#,
            r#"{"type":"answer","playerId":"Player1","sdp":"s"}"#,
        ),
        (
            r#"{"type":"answer","playerId":null,"sdp":"s"}"#,
            r#"{"type":"answer","playerId":"Player1","sdp":"s"}"#,
        ),
        (
            r#"{"type":"answer","playerId":"Player2","sdp":"s"}"#,
            r#"{"type":"answer","playerId":"Player2","sdp":"s"}"#,
        ),
        (
            r#"{"type":"answer","playerId":7,"sdp":"s"}"#,
            r#"{"type":"answer","playerId":7,"sdp":"s"}"#,
        ),
    ];
    for (input, expected) in cases {
        fx.h.msg(fx.f, input);
        assert_eq!(fx.h.drain(), [send(fx.st, expected)], "{input}");
    }
}

#[test]
fn f4_f5_from_an_unsubscribed_sfu_are_dropped() {
    let mut h = Harness::new();
    h.streamer("S");
    let f = h.sfu("SFU");
    h.msg(f, r#"{"type":"answer","sdp":"s"}"#);
    h.msg(f, r#"{"type":"streamerDataChannels","playerId":"Player1"}"#);
    assert_eq!(h.drain(), []);
}

#[test]
fn f5_streamer_data_channels_get_sfu_id() {
    let mut fx = fixture();
    let cases = [
        (
            r#"{"type":"streamerDataChannels","playerId":"Player2","sendStreamId":4,"recvStreamId":5}"#,
            r#"{"type":"streamerDataChannels","playerId":"Player2","sendStreamId":4,"recvStreamId":5,"sfuId":"Player1"}"#,
        ),
        (
            r#"{"type":"streamerDataChannels","sfuId":"zzz","sendStreamId":4}"#,
            r#"{"type":"streamerDataChannels","sfuId":"Player1","sendStreamId":4,"playerId":"Player1"}"#,
        ),
    ];
    for (input, expected) in cases {
        fx.h.msg(fx.f, input);
        assert_eq!(fx.h.drain(), [send(fx.st, expected)], "{input}");
    }
}

#[test]
fn f6_streamer_layer_preference_goes_unchanged_to_every_subscribed_sfu_only() {
    let mut fx = fixture();
    let f2 = fx.h.sfu("SFU2"); // Player3
    fx.h.subscribe(f2, "DefaultStreamer");
    let text =
        r#"{"type":"layerPreference","spatialLayer":1,"temporalLayer":2,"playerId":"Player2"}"#;
    fx.h.msg(fx.st, text);
    assert_eq!(fx.h.drain(), [send(fx.f, text), send(f2, text)]);
}

#[test]
fn f6_with_no_sfu_subscribed_is_dropped() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    h.player_on("S");
    h.msg(st, r#"{"type":"layerPreference","spatialLayer":1}"#);
    assert_eq!(h.drain(), []);
}

// ---------------------------------------------------------------------------------------------
// §5 Ids
// ---------------------------------------------------------------------------------------------

#[test]
fn player_ids_count_players_and_sfus_and_are_never_reused() {
    let mut h = Harness::new();
    let p0 = h.player();
    h.open(Role::Streamer); // entries take no player id
    let f1 = h.open(Role::Sfu);
    h.close(p0);
    let p2 = h.player();
    assert_eq!(
        h.router.describe(f1).as_deref(),
        Some("UnknownStreamer1/Player1")
    );
    assert_eq!(h.router.describe(p2).as_deref(), Some("Player2"));
}

#[test]
fn numeric_style_player_ids_start_at_one() {
    let mut h = Harness::numeric();
    let p = h.player();
    let f = h.open(Role::Sfu);
    let q = h.player();
    assert_eq!(h.router.describe(p).as_deref(), Some("1"));
    assert_eq!(h.router.describe(f).as_deref(), Some("UnknownStreamer/2"));
    assert_eq!(h.router.describe(q).as_deref(), Some("3"));
}

/// Runs one row of the §5 table: `others` identify in order, then the requester (which first
/// identifies as `current` if given) sends `request`.
fn id_row(others: &[&str], current: Option<&str>, request: &str) -> (String, Vec<String>) {
    let mut h = Harness::new();
    let mut requester = None;
    if let Some(current) = current {
        // The requester connects first so that it holds `current`.
        let r = h.open(Role::Streamer);
        h.msg(r, &format!(r#"{{"type":"endpointId","id":"{current}"}}"#));
        requester = Some(r);
    }
    for other in others {
        let c = h.open(Role::Streamer);
        h.msg(c, &format!(r#"{{"type":"endpointId","id":"{other}"}}"#));
    }
    let requester = requester.unwrap_or_else(|| h.open(Role::Streamer));
    // Pin the ids the setup produced.
    let listed: Vec<String> = h
        .router
        .table
        .iter()
        .filter(|&&c| c != requester)
        .map(|&c| h.router.describe(c).unwrap())
        .collect();
    assert_eq!(listed, others, "setup");
    let watcher = h.player_on(&h.router.describe(requester).unwrap());
    h.drain();
    h.msg(
        requester,
        &format!(r#"{{"type":"endpointId","id":"{request}"}}"#),
    );
    let out = h.drain();
    let id = h.router.describe(requester).unwrap();
    assert_eq!(
        texts(&out, requester),
        [format!(
            r#"{{"type":"endpointIdConfirm","committedId":"{id}"}}"#
        )]
    );
    let to_watcher = texts(&out, watcher)
        .into_iter()
        .map(str::to_owned)
        .collect();
    (id, to_watcher)
}

fn changed(id: &str) -> Vec<String> {
    vec![format!(r#"{{"type":"streamerIdChanged","newID":"{id}"}}"#)]
}

#[test]
fn id_row_none_then_default_streamer() {
    assert_eq!(
        id_row(&[], None, "DefaultStreamer"),
        ("DefaultStreamer".into(), changed("DefaultStreamer"))
    );
}

#[test]
fn id_row_taken_gets_suffix_one() {
    assert_eq!(
        id_row(&["DefaultStreamer"], None, "DefaultStreamer"),
        ("DefaultStreamer1".into(), changed("DefaultStreamer1"))
    );
}

#[test]
fn id_row_two_taken_gets_suffix_two() {
    assert_eq!(
        id_row(
            &["DefaultStreamer", "DefaultStreamer1"],
            None,
            "DefaultStreamer"
        )
        .0,
        "DefaultStreamer2"
    );
}

#[test]
fn id_row_highest_suffix_plus_one_not_the_free_name() {
    assert_eq!(
        id_row(
            &["DefaultStreamer1", "DefaultStreamer2"],
            None,
            "DefaultStreamer"
        )
        .0,
        "DefaultStreamer3"
    );
}

#[test]
fn id_row_three_unidentified_streamers_get_unknown_streamer_ids() {
    let mut h = Harness::new();
    let f = h.open(Role::Sfu); // takes UnknownStreamer
    let a = h.open(Role::Streamer);
    let b = h.open(Role::Streamer);
    let c = h.open(Role::Streamer);
    h.drain();
    h.close(f);
    h.drain();
    let ids: Vec<_> = [a, b, c]
        .iter()
        .map(|&x| h.router.describe(x).unwrap())
        .collect();
    assert_eq!(
        ids,
        ["UnknownStreamer1", "UnknownStreamer2", "UnknownStreamer3"]
    );

    let mut h = Harness::new();
    let ids: Vec<_> = (0..3)
        .map(|_| {
            let x = h.open(Role::Streamer);
            h.router.describe(x).unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        ["UnknownStreamer", "UnknownStreamer1", "UnknownStreamer2"]
    );
}

#[test]
fn id_row_resending_own_id_keeps_it_without_streamer_id_changed() {
    assert_eq!(
        id_row(
            &["DefaultStreamer1"],
            Some("DefaultStreamer"),
            "DefaultStreamer"
        ),
        ("DefaultStreamer".into(), vec![])
    );
}

#[test]
fn id_row_suffixed_requester_asking_for_base_keeps_its_id() {
    // Setup: the requester connected first as DefaultStreamer, so arrange it the other way:
    // another streamer holds DefaultStreamer, the requester got DefaultStreamer1.
    let mut h = Harness::new();
    h.streamer("DefaultStreamer");
    let r = h.open(Role::Streamer);
    h.msg(r, r#"{"type":"endpointId","id":"DefaultStreamer"}"#);
    let w = h.player_on("DefaultStreamer1");
    h.drain();
    h.msg(r, r#"{"type":"endpointId","id":"DefaultStreamer"}"#);
    assert_eq!(
        h.drain(),
        [send(
            r,
            r#"{"type":"endpointIdConfirm","committedId":"DefaultStreamer1"}"#
        )]
    );
    let _ = w;
}

#[test]
fn id_row_trailing_digit_request_taken_gets_smallest_free_k() {
    assert_eq!(id_row(&["Streamer1"], None, "Streamer1").0, "Streamer11");
    assert_eq!(id_row(&["A1", "A11"], None, "A1").0, "A12");
}

#[test]
fn id_row_all_digit_id() {
    assert_eq!(id_row(&["123"], None, "123").0, "123124");
}

#[test]
fn id_suffixes_are_unbounded_decimals() {
    assert_eq!(
        id_row(&["S99999999999999999999999"], None, "S").0,
        "S100000000000000000000000"
    );
}

#[test]
fn empty_endpoint_id_means_unknown_streamer() {
    let mut h = Harness::new();
    let st = h.open(Role::Streamer);
    h.drain();
    h.msg(st, r#"{"type":"endpointId","id":""}"#);
    assert_eq!(
        h.drain(),
        [send(
            st,
            r#"{"type":"endpointIdConfirm","committedId":"UnknownStreamer"}"#
        )]
    );
}

#[test]
fn rename_sends_streamer_id_changed_to_every_subscriber_who_stays_subscribed() {
    let mut fx = fixture();
    fx.h.msg(fx.st, r#"{"type":"endpointId","id":"Renamed"}"#);
    let change = r#"{"type":"streamerIdChanged","newID":"Renamed"}"#;
    assert_eq!(
        fx.h.drain(),
        [
            send(
                fx.st,
                r#"{"type":"endpointIdConfirm","committedId":"Renamed"}"#
            ),
            send(fx.p_st, change),
            send(fx.f, change),
        ]
    );
    // Still subscribed: routing works, and the old id is gone.
    fx.h.msg(fx.st, r#"{"type":"offer","playerId":"Player0","sdp":"s"}"#);
    assert_eq!(fx.h.drain().len(), 1);
    let q = fx.h.player();
    fx.h.msg(q, r#"{"type":"subscribe","streamerId":"DefaultStreamer"}"#);
    assert_eq!(
        fx.h.drain(),
        [send(
            q,
            r#"{"type":"subscribeFailed","message":"Streamer DefaultStreamer does not exist."}"#
        )]
    );
    fx.h.subscribe(q, "Renamed");
}

#[test]
fn endpoint_id_without_a_string_id_is_ignored() {
    let mut h = Harness::new();
    let st = h.open(Role::Streamer);
    let p = h.player();
    h.drain();
    h.msg(st, r#"{"type":"endpointId"}"#);
    h.msg(st, r#"{"type":"endpointId","id":5}"#);
    h.msg(st, r#"{"type":"endpointId","id":null}"#);
    assert_eq!(h.drain(), []);
    // Still unlisted (streaming stays false) and still UnknownStreamer.
    assert_eq!(h.list(p), r#"{"type":"streamerList","ids":[]}"#);
    assert_eq!(h.router.describe(st).as_deref(), Some("UnknownStreamer"));
}

#[test]
fn ids_longer_than_256_bytes_are_refused_and_256_is_kept() {
    let mut h = Harness::new();
    let st = h.open(Role::Streamer);
    let p = h.player();
    h.drain();
    let long = "L".repeat(257);
    h.msg(st, &format!(r#"{{"type":"endpointId","id":"{long}"}}"#));
    assert_eq!(h.drain(), [], "ignored: no endpointIdConfirm");
    assert_eq!(h.router.describe(st).as_deref(), Some("UnknownStreamer"));
    h.msg(
        p,
        &format!(r#"{{"type":"subscribe","streamerId":"{long}"}}"#),
    );
    assert_eq!(
        h.drain(),
        [send(
            p,
            r#"{"type":"subscribeFailed","message":"Missing or invalid field streamerId."}"#
        )]
    );
    let longest = "L".repeat(256);
    h.msg(st, &format!(r#"{{"type":"endpointId","id":"{longest}"}}"#));
    assert_eq!(h.router.describe(st), Some(longest.clone()));
    h.drain();
    h.subscribe(p, &longest);
}

#[test]
fn the_streamer_list_follows_every_change_of_the_table() {
    let mut h = Harness::new();
    let p = h.player();
    assert_eq!(h.list(p), r#"{"type":"streamerList","ids":[]}"#);
    let a = h.streamer("A");
    assert_eq!(h.list(p), r#"{"type":"streamerList","ids":["A"]}"#);
    h.msg(a, r#"{"type":"endpointId","id":"B"}"#);
    h.drain();
    assert_eq!(h.list(p), r#"{"type":"streamerList","ids":["B"]}"#);
    let f = h.sfu("SFU");
    h.msg(f, r#"{"type":"stopStreaming"}"#);
    h.drain();
    assert_eq!(h.list(p), r#"{"type":"streamerList","ids":["B"]}"#);
    h.msg(f, r#"{"type":"startStreaming"}"#);
    h.drain();
    assert_eq!(h.list(p), r#"{"type":"streamerList","ids":["B","SFU"]}"#);
    h.close(a);
    h.drain();
    assert_eq!(h.list(p), r#"{"type":"streamerList","ids":["SFU"]}"#);
}

#[test]
fn streamer_list_for_players_holds_streaming_entries_in_table_order() {
    let mut h = Harness::new();
    let _unidentified = h.open(Role::Streamer); // UnknownStreamer, not streaming
    h.streamer("B");
    let f = h.sfu("SFU");
    h.streamer("A");
    let p = h.player();
    assert_eq!(
        h.list(p),
        r#"{"type":"streamerList","ids":["B","SFU","A"]}"#
    );
    // stopStreaming unlists the SFU, startStreaming lists it again, in place.
    h.msg(f, r#"{"type":"stopStreaming"}"#);
    assert_eq!(h.drain(), []);
    assert_eq!(h.list(p), r#"{"type":"streamerList","ids":["B","A"]}"#);
    h.msg(f, r#"{"type":"startStreaming"}"#);
    assert_eq!(h.drain(), []);
    assert_eq!(
        h.list(p),
        r#"{"type":"streamerList","ids":["B","SFU","A"]}"#
    );
}

#[test]
fn streamer_list_for_an_sfu_holds_every_entry_including_itself() {
    let mut h = Harness::new();
    h.open(Role::Streamer); // UnknownStreamer
    h.streamer("B");
    let f = h.open(Role::Sfu); // UnknownStreamer1, not yet identified
    h.drain();
    assert_eq!(
        h.list(f),
        r#"{"type":"streamerList","ids":["UnknownStreamer","B","UnknownStreamer1"]}"#
    );
}

#[test]
fn a_renamed_entry_keeps_its_table_position() {
    let mut h = Harness::new();
    let a = h.streamer("A");
    h.streamer("B");
    let p = h.player();
    h.msg(a, r#"{"type":"endpointId","id":"Z"}"#);
    h.drain();
    assert_eq!(h.list(p), r#"{"type":"streamerList","ids":["Z","B"]}"#);
    // The old id is free again.
    h.streamer("A");
}

#[test]
fn an_unidentified_streamer_accepts_an_explicit_subscribe() {
    let mut h = Harness::new();
    let st = h.open(Role::Streamer);
    h.drain();
    let p = h.player();
    h.msg(p, r#"{"type":"subscribe","streamerId":"UnknownStreamer"}"#);
    assert_eq!(h.drain(), [send(st, &connected("Player0"))]);
}

// ---------------------------------------------------------------------------------------------
// §6 Subscriptions
// ---------------------------------------------------------------------------------------------

#[test]
fn subscribe_without_a_string_streamer_id_fails_and_changes_nothing() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    for text in [
        r#"{"type":"subscribe"}"#,
        r#"{"type":"subscribe","streamerId":5}"#,
        r#"{"type":"subscribe","streamerId":null}"#,
    ] {
        h.msg(p, text);
        assert_eq!(
            h.drain(),
            [send(
                p,
                r#"{"type":"subscribeFailed","message":"Missing or invalid field streamerId."}"#
            )]
        );
    }
    h.msg(p, r#"{"type":"answer","sdp":"s"}"#);
    assert_eq!(
        h.drain(),
        [send(
            st,
            r#"{"type":"answer","sdp":"s","playerId":"Player0"}"#
        )]
    );
}

#[test]
fn subscribe_to_an_unknown_id_fails_and_keeps_the_existing_subscription() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    h.msg(p, r#"{"type":"subscribe","streamerId":"Nope"}"#);
    assert_eq!(
        h.drain(),
        [send(
            p,
            r#"{"type":"subscribeFailed","message":"Streamer Nope does not exist."}"#
        )]
    );
    h.msg(st, r#"{"type":"offer","playerId":"Player0","sdp":"s"}"#);
    assert_eq!(h.drain().len(), 1);
}

#[test]
fn resubscribe_to_the_same_entry_ends_then_restarts_the_subscription() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    h.msg(p, r#"{"type":"subscribe","streamerId":"S"}"#);
    assert_eq!(
        h.drain(),
        [
            send(st, &disconnected("Player0")),
            send(st, &connected("Player0"))
        ]
    );
}

#[test]
fn resubscribe_to_another_entry_tells_the_old_one_first() {
    let mut h = Harness::new();
    let a = h.streamer("A");
    let b = h.streamer("B");
    let p = h.player_on("A");
    h.msg(p, r#"{"type":"subscribe","streamerId":"B"}"#);
    assert_eq!(
        h.drain(),
        [
            send(a, &disconnected("Player0")),
            send(b, &connected("Player0"))
        ]
    );
    h.msg(a, r#"{"type":"offer","playerId":"Player0","sdp":"s"}"#);
    assert_eq!(h.drain(), []);
}

#[test]
fn subscribe_does_not_check_streaming() {
    let mut h = Harness::new();
    let f = h.sfu("SFU");
    h.msg(f, r#"{"type":"stopStreaming"}"#);
    let p = h.player();
    h.msg(p, r#"{"type":"subscribe","streamerId":"SFU"}"#);
    assert_eq!(h.drain(), [send(f, &connected("Player1"))]);
}

#[test]
fn max_players_refuses_a_player_beyond_the_limit_who_stays_idle() {
    let mut h = Harness::max_players(1);
    let st = h.streamer("S");
    let _p0 = h.player_on("S");
    let p1 = h.player();
    h.msg(p1, r#"{"type":"subscribe","streamerId":"S"}"#);
    let full = r#"{"type":"subscribeFailed","message":"Streamer S is full. Max players = 1."}"#;
    assert_eq!(h.drain(), [send(p1, full)]);
    // Idle: a streamer cannot reach it, and unsubscribe tells nobody.
    h.msg(st, r#"{"type":"offer","playerId":"Player1","sdp":"s"}"#);
    h.msg(p1, r#"{"type":"unsubscribe"}"#);
    assert_eq!(h.drain(), []);
}

#[test]
fn max_players_slot_is_freed_by_ending_a_subscription() {
    let mut h = Harness::max_players(1);
    let st = h.streamer("S");
    let p0 = h.player_on("S");
    // Re-subscribing to the same full streamer ends the old subscription first (step 3).
    h.msg(p0, r#"{"type":"subscribe","streamerId":"S"}"#);
    assert_eq!(
        h.drain(),
        [
            send(st, &disconnected("Player0")),
            send(st, &connected("Player0"))
        ]
    );
    h.msg(p0, r#"{"type":"unsubscribe"}"#);
    h.drain();
    h.player_on("S");
}

#[test]
fn max_players_failure_after_leaving_the_old_entry_leaves_the_player_idle() {
    let mut h = Harness::max_players(1);
    h.streamer("A");
    let b = h.streamer("B");
    h.player_on("A"); // Player0
    let p1 = h.player_on("B");
    h.msg(p1, r#"{"type":"subscribe","streamerId":"A"}"#);
    assert_eq!(
        h.drain(),
        [
            send(b, &disconnected("Player1")),
            send(
                p1,
                r#"{"type":"subscribeFailed","message":"Streamer A is full. Max players = 1."}"#
            )
        ]
    );
    h.msg(p1, r#"{"type":"unsubscribe"}"#);
    assert_eq!(h.drain(), []);
}

#[test]
fn max_players_neither_counts_nor_refuses_sfus_and_does_not_cap_sfu_entries() {
    let mut h = Harness::max_players(1);
    let st = h.streamer("S");
    let f = h.sfu("SFU"); // Player0
    h.player_on("S"); // Player1 takes the only slot
    h.msg(f, r#"{"type":"subscribe","streamerId":"S"}"#);
    assert_eq!(h.drain(), [send(st, &sfu_connected("Player0"))]);
    h.player_on("SFU");
    h.player_on("SFU");
}

#[test]
fn sfu_subscribing_to_itself_is_ignored() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let f = h.sfu("SFU");
    h.subscribe(f, "S");
    h.msg(f, r#"{"type":"subscribe","streamerId":"SFU"}"#);
    assert_eq!(h.drain(), []);
    // Its upstream subscription is untouched.
    h.msg(f, r#"{"type":"answer","sdp":"s"}"#);
    assert_eq!(
        h.drain(),
        [send(
            st,
            r#"{"type":"answer","sdp":"s","playerId":"Player0"}"#
        )]
    );
}

#[test]
fn sfu_subscribe_sends_player_connected_with_sfu_true_and_unknown_id_fails() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let f = h.sfu("SFU");
    h.msg(f, r#"{"type":"subscribe","streamerId":"S"}"#);
    assert_eq!(h.drain(), [send(st, &sfu_connected("Player0"))]);
    h.msg(f, r#"{"type":"subscribe","streamerId":"T"}"#);
    assert_eq!(
        h.drain(),
        [send(
            f,
            r#"{"type":"subscribeFailed","message":"Streamer T does not exist."}"#
        )]
    );
}

#[test]
fn sfu_resubscribe_tells_the_old_streamer() {
    let mut h = Harness::new();
    let a = h.streamer("A");
    let b = h.streamer("B");
    let f = h.sfu("SFU");
    h.subscribe(f, "A");
    h.msg(f, r#"{"type":"subscribe","streamerId":"B"}"#);
    assert_eq!(
        h.drain(),
        [
            send(a, &disconnected("Player0")),
            send(b, &sfu_connected("Player0"))
        ]
    );
}

#[test]
fn e1_unsubscribe_sends_one_player_disconnected_and_keeps_the_player() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    h.msg(p, r#"{"type":"unsubscribe"}"#);
    assert_eq!(h.drain(), [send(st, &disconnected("Player0"))]);
    h.msg(p, r#"{"type":"unsubscribe"}"#);
    assert_eq!(h.drain(), []);
    assert_eq!(h.router.connection_count(), 2);
}

#[test]
fn e3_e4_e7_e8_connection_ending_sends_one_player_disconnected() {
    // The IO layer reports peer close, socket error, queue overflow (after its 1008 frame) and
    // frame errors (after its 1009/1007 frame) all as handle_closed.
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    h.close(p);
    assert_eq!(h.drain(), [send(st, &disconnected("Player0"))]);
    h.close(p);
    assert_eq!(h.drain(), []);
    assert_eq!(h.router.connection_count(), 1);
}

#[test]
fn e5_protocol_ping_failure_drops_and_sends_one_player_disconnected() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    h.tick(1);
    h.drain();
    h.tick(2);
    assert_eq!(
        h.drain(),
        [Output::Drop { conn: p }, send(st, &disconnected("Player0"))]
    );
    h.close(p); // the IO layer reports the dropped socket
    assert_eq!(h.drain(), []);
}

#[test]
fn e6_disconnect_player_closes_1011_and_sends_one_player_disconnected() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    h.msg(
        st,
        r#"{"type":"disconnectPlayer","playerId":"Player0","reason":"kicked"}"#,
    );
    assert_eq!(
        h.drain(),
        [close(p, 1011, "kicked"), send(st, &disconnected("Player0"))]
    );
    h.close(p);
    h.msg(p, r#"{"type":"offer"}"#);
    assert_eq!(h.drain(), []);
}

#[test]
fn e9_sfu_stop_streaming_ends_its_players_and_keeps_the_sfu_upstream() {
    let mut fx = fixture();
    let p3 = fx.h.player_on("SFU"); // Player3
    fx.h.msg(fx.f, r#"{"type":"stopStreaming"}"#);
    assert_eq!(
        fx.h.drain(),
        [
            send(fx.f, &disconnected("Player2")),
            close(fx.p_f, 1000, "streamer disconnected"),
            send(fx.f, &disconnected("Player3")),
            close(p3, 1000, "streamer disconnected"),
        ]
    );
    fx.h.msg(fx.f, r#"{"type":"answer","sdp":"s"}"#);
    assert_eq!(
        fx.h.drain(),
        [send(
            fx.st,
            r#"{"type":"answer","sdp":"s","playerId":"Player1"}"#
        )]
    );
    // Closing the already-closed players reports nothing more.
    fx.h.close(fx.p_f);
    fx.h.close(p3);
    assert_eq!(fx.h.drain(), []);
}

#[test]
fn e10_sfu_unsubscribe_tells_its_upstream() {
    let mut fx = fixture();
    fx.h.msg(fx.f, r#"{"type":"unsubscribe"}"#);
    assert_eq!(fx.h.drain(), [send(fx.st, &disconnected("Player1"))]);
}

#[test]
fn e10_sfu_closing_closes_its_players_then_tells_its_upstream() {
    // §7.13
    let mut fx = fixture();
    fx.h.close(fx.f);
    assert_eq!(
        fx.h.drain(),
        [
            close(fx.p_f, 1000, "streamer disconnected"),
            send(fx.st, &disconnected("Player1")),
        ]
    );
    let p = fx.h.player();
    assert_eq!(
        fx.h.list(p),
        r#"{"type":"streamerList","ids":["DefaultStreamer"]}"#
    );
}

#[test]
fn e10_sfu_dropped_by_disconnect_player_closes_its_players() {
    let mut fx = fixture();
    fx.h.msg(fx.st, r#"{"type":"disconnectPlayer","playerId":"Player1"}"#);
    assert_eq!(
        fx.h.drain(),
        [
            close(fx.f, 1011, "disconnected by streamer"),
            close(fx.p_f, 1000, "streamer disconnected"),
            send(fx.st, &disconnected("Player1")),
        ]
    );
}

#[test]
fn streamer_leaving_closes_its_players_and_leaves_others_untouched() {
    let mut h = Harness::new();
    let a = h.streamer("A");
    let b = h.streamer("B");
    let pa1 = h.player_on("A");
    let pb = h.player_on("B");
    let pa2 = h.player_on("A");
    let idle = h.player();
    h.close(a);
    assert_eq!(
        h.drain(),
        [
            close(pa1, 1000, "streamer disconnected"),
            close(pa2, 1000, "streamer disconnected"),
        ]
    );
    h.close(pa1);
    h.close(pa2);
    assert_eq!(h.drain(), []);
    h.msg(b, r#"{"type":"offer","playerId":"Player1","sdp":"s"}"#);
    assert_eq!(
        h.drain(),
        [send(
            pb,
            r#"{"type":"offer","playerId":"Player1","sdp":"s"}"#
        )]
    );
    assert_eq!(h.list(idle), r#"{"type":"streamerList","ids":["B"]}"#);
    // The id is free again.
    h.streamer("A");
}

#[test]
fn streamer_leaving_tells_each_sfu_its_players_left_before_streamer_disconnected() {
    // §7.11 ordering, with a direct player and two SFUs.
    let mut fx = fixture();
    let p3 = fx.h.player_on("SFU"); // Player3
    let f2 = fx.h.sfu("SFU2"); // Player4
    fx.h.subscribe(f2, "DefaultStreamer");
    let p5 = fx.h.player_on("SFU2"); // Player5
    fx.h.close(fx.st);
    assert_eq!(
        fx.h.drain(),
        [
            close(fx.p_st, 1000, "streamer disconnected"),
            send(fx.f, &disconnected("Player2")),
            close(fx.p_f, 1000, "streamer disconnected"),
            send(fx.f, &disconnected("Player3")),
            close(p3, 1000, "streamer disconnected"),
            send(fx.f, STREAMER_DISCONNECTED),
            send(f2, &disconnected("Player5")),
            close(p5, 1000, "streamer disconnected"),
            send(f2, STREAMER_DISCONNECTED),
        ]
    );
    // The SFUs stay connected, idle and unlisted; their stopStreaming has no effect.
    fx.h.msg(fx.f, r#"{"type":"stopStreaming"}"#);
    fx.h.msg(fx.f, r#"{"type":"answer","sdp":"s"}"#);
    assert_eq!(fx.h.drain(), []);
    let p = fx.h.player();
    assert_eq!(fx.h.list(p), r#"{"type":"streamerList","ids":[]}"#);
    assert_eq!(
        fx.h.list(fx.f),
        r#"{"type":"streamerList","ids":["SFU","SFU2"]}"#
    );
}

#[test]
fn disconnect_player_uses_the_default_reason_when_absent_empty_or_not_a_string() {
    for extra in [
        "",
        r#","reason":"""#,
        r#","reason":42"#,
        r#","reason":null"#,
    ] {
        let mut h = Harness::new();
        let st = h.streamer("S");
        let p = h.player_on("S");
        h.msg(
            st,
            &format!(r#"{{"type":"disconnectPlayer","playerId":"Player0"{extra}}}"#),
        );
        assert_eq!(
            closes(&h.drain()),
            [(p, 1011, "disconnected by streamer")],
            "{extra}"
        );
    }
}

#[test]
fn disconnect_player_cuts_a_long_reason_to_123_bytes_at_a_char_boundary() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    let q = h.player_on("S");
    // 1 + 61 × "é" (2 bytes) + "é" = 125 bytes; the cut falls inside the last "é".
    let reason = format!("x{}", "é".repeat(62));
    assert_eq!(reason.len(), 125);
    h.msg(
        st,
        &format!(r#"{{"type":"disconnectPlayer","playerId":"Player0","reason":"{reason}"}}"#),
    );
    let out = h.drain();
    let cut = format!("x{}", "é".repeat(61));
    assert_eq!(cut.len(), 123);
    assert_eq!(closes(&out), [(p, 1011, cut.as_str())]);
    // Exactly 123 bytes is kept whole; a huge reason with escapes is cut too.
    let exact = "a".repeat(123);
    h.msg(
        st,
        &format!(r#"{{"type":"disconnectPlayer","playerId":"Player1","reason":"{exact}"}}"#),
    );
    assert_eq!(closes(&h.drain()), [(q, 1011, exact.as_str())]);
    let r = h.player_on("S");
    let big = format!(r#"{{\"type\":\"bad\"}}{}"#, "€".repeat(100));
    h.msg(
        st,
        &format!(r#"{{"type":"disconnectPlayer","playerId":"Player2","reason":"{big}"}}"#),
    );
    let out = h.drain();
    let (conn, code, reason) = closes(&out)[0];
    assert_eq!((conn, code), (r, 1011));
    assert!(
        reason.len() <= 123 && reason.len() > 120,
        "{}",
        reason.len()
    );
    assert!(reason.starts_with(r#"{"type":"bad"}€"#));
}

#[test]
fn disconnect_player_for_an_unknown_or_foreign_target_is_ignored() {
    let mut h = Harness::new();
    let a = h.streamer("A");
    h.streamer("B");
    h.player_on("B"); // Player0
    h.player(); // Player1, idle
    for text in [
        r#"{"type":"disconnectPlayer","playerId":"Player0"}"#,
        r#"{"type":"disconnectPlayer","playerId":"Player1"}"#,
        r#"{"type":"disconnectPlayer","playerId":"Player9"}"#,
        r#"{"type":"disconnectPlayer"}"#,
        r#"{"type":"disconnectPlayer","playerId":null}"#,
    ] {
        h.msg(a, text);
        assert_eq!(h.drain(), [], "{text}");
    }
    assert_eq!(h.router.connection_count(), 4);
}

// ---------------------------------------------------------------------------------------------
// §7 SFU end to end
// ---------------------------------------------------------------------------------------------

#[test]
fn sfu_full_flow_steps_1_to_13() {
    let mut h = Harness::new();
    let st = h.streamer("DefaultStreamer");
    // 1
    let f = h.open(Role::Sfu);
    assert_eq!(h.drain(), [send(f, CONFIG), send(f, IDENTIFY)]);
    h.msg(f, r#"{"type":"endpointId","id":"SFU"}"#);
    assert_eq!(
        h.drain(),
        [send(
            f,
            r#"{"type":"endpointIdConfirm","committedId":"SFU"}"#
        )]
    );
    // 2
    assert_eq!(
        h.list(f),
        r#"{"type":"streamerList","ids":["DefaultStreamer","SFU"]}"#
    );
    h.msg(f, r#"{"type":"subscribe","streamerId":"DefaultStreamer"}"#);
    assert_eq!(
        h.drain(),
        [send(
            st,
            r#"{"type":"playerConnected","dataChannel":true,"sfu":true,"playerId":"Player0"}"#
        )]
    );
    // 3
    let offer = r#"{"type":"offer","sdp":"o","playerId":"Player0"}"#;
    h.msg(st, offer);
    assert_eq!(h.drain(), [send(f, offer)]);
    let ice = r#"{"type":"iceCandidate","playerId":"Player0","candidate":{}}"#;
    h.msg(st, ice);
    assert_eq!(h.drain(), [send(f, ice)]);
    h.msg(f, r#"{"type":"answer","sdp":"a"}"#);
    assert_eq!(
        h.drain(),
        [send(
            st,
            r#"{"type":"answer","sdp":"a","playerId":"Player0"}"#
        )]
    );
    h.msg(f, r#"{"type":"startStreaming"}"#);
    assert_eq!(h.drain(), []);
    // 4
    let p = h.player(); // Player1
    assert_eq!(
        h.list(p),
        r#"{"type":"streamerList","ids":["DefaultStreamer","SFU"]}"#
    );
    h.msg(p, r#"{"type":"subscribe","streamerId":"SFU"}"#);
    assert_eq!(
        h.drain(),
        [send(
            f,
            r#"{"type":"playerConnected","dataChannel":true,"sfu":false,"playerId":"Player1"}"#
        )]
    );
    // 5
    h.msg(
        f,
        r#"{"type":"offer","playerId":"Player1","sdp":"s","sfu":true,"scalabilityMode":"L1T1"}"#,
    );
    assert_eq!(
        h.drain(),
        [send(
            p,
            r#"{"type":"offer","sdp":"s","sfu":true,"scalabilityMode":"L1T1"}"#
        )]
    );
    // 6
    h.msg(p, r#"{"type":"answer","sdp":"pa"}"#);
    assert_eq!(
        h.drain(),
        [send(
            f,
            r#"{"type":"answer","sdp":"pa","playerId":"Player1"}"#
        )]
    );
    h.msg(p, r#"{"type":"dataChannelRequest"}"#);
    assert_eq!(
        h.drain(),
        [send(
            f,
            r#"{"type":"dataChannelRequest","playerId":"Player1"}"#
        )]
    );
    // 7
    h.msg(
        f,
        r#"{"type":"peerDataChannels","playerId":"Player1","sendStreamId":2,"recvStreamId":3}"#,
    );
    assert_eq!(
        h.drain(),
        [send(
            p,
            r#"{"type":"peerDataChannels","sendStreamId":2,"recvStreamId":3}"#
        )]
    );
    // 8
    h.msg(p, r#"{"type":"peerDataChannelsReady"}"#);
    assert_eq!(
        h.drain(),
        [send(
            f,
            r#"{"type":"peerDataChannelsReady","playerId":"Player1"}"#
        )]
    );
    h.msg(
        f,
        r#"{"type":"streamerDataChannels","playerId":"Player1","sendStreamId":4,"recvStreamId":5}"#,
    );
    assert_eq!(
        h.drain(),
        [send(
            st,
            r#"{"type":"streamerDataChannels","playerId":"Player1","sendStreamId":4,"recvStreamId":5,"sfuId":"Player0"}"#
        )]
    );
    // 9
    h.msg(
        p,
        r#"{"type":"layerPreference","spatialLayer":1,"temporalLayer":0,"playerId":""}"#,
    );
    assert_eq!(
        h.drain(),
        [send(
            f,
            r#"{"type":"layerPreference","spatialLayer":1,"temporalLayer":0,"playerId":"Player1"}"#
        )]
    );
    let lp =
        r#"{"type":"layerPreference","spatialLayer":2,"temporalLayer":1,"playerId":"Player1"}"#;
    h.msg(st, lp);
    assert_eq!(h.drain(), [send(f, lp)]);
    // 10
    h.close(p);
    assert_eq!(
        h.drain(),
        [send(
            f,
            r#"{"type":"playerDisconnected","playerId":"Player1"}"#
        )]
    );
    // 12 (before 11, so that both can be shown with one SFU)
    let p2 = h.player_on("SFU"); // Player2
    h.msg(f, r#"{"type":"stopStreaming"}"#);
    assert_eq!(
        h.drain(),
        [
            send(f, &disconnected("Player2")),
            close(p2, 1000, "streamer disconnected"),
        ]
    );
    let watcher = h.player(); // Player3
    assert_eq!(
        h.list(watcher),
        r#"{"type":"streamerList","ids":["DefaultStreamer"]}"#
    );
    h.msg(st, offer);
    assert_eq!(h.drain(), [send(f, offer)], "F stays subscribed upstream");
    // 11
    h.msg(f, r#"{"type":"startStreaming"}"#);
    let p4 = h.player_on("SFU"); // Player4
    h.close(st);
    assert_eq!(
        h.drain(),
        [
            send(f, &disconnected("Player4")),
            close(p4, 1000, "streamer disconnected"),
            send(f, STREAMER_DISCONNECTED),
        ]
    );
    assert_eq!(h.list(watcher), r#"{"type":"streamerList","ids":[]}"#);
    h.msg(f, r#"{"type":"stopStreaming"}"#);
    assert_eq!(h.drain(), []);
    // 13: a new upstream, a player, then F leaves.
    let st2 = h.streamer("DefaultStreamer");
    h.subscribe(f, "DefaultStreamer");
    h.msg(f, r#"{"type":"startStreaming"}"#);
    let p5 = h.player_on("SFU"); // Player5
    h.close(f);
    assert_eq!(
        h.drain(),
        [
            close(p5, 1000, "streamer disconnected"),
            send(st2, r#"{"type":"playerDisconnected","playerId":"Player0"}"#),
        ]
    );
    assert_eq!(
        h.list(watcher),
        r#"{"type":"streamerList","ids":["DefaultStreamer"]}"#
    );
    h.msg(watcher, r#"{"type":"subscribe","streamerId":"SFU"}"#);
    assert_eq!(
        h.drain(),
        [send(
            watcher,
            r#"{"type":"subscribeFailed","message":"Streamer SFU does not exist."}"#
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// §8 Auto-subscribe
// ---------------------------------------------------------------------------------------------

#[test]
fn auto_subscribe_with_an_empty_table_closes_1013() {
    let mut h = Harness::new();
    let p = h.player();
    h.msg(p, r#"{"type":"offer","sdp":"s"}"#);
    assert_eq!(h.drain(), [close(p, 1013, "no streamer connected")]);
    h.msg(p, r#"{"type":"offer","sdp":"s"}"#);
    assert_eq!(h.drain(), []);
    assert_eq!(h.router.connection_count(), 0);
}

#[test]
fn auto_subscribe_picks_the_first_entry_in_table_order_and_sends_player_connected_first() {
    let mut h = Harness::new();
    let first = h.open(Role::Streamer); // unidentified, not streaming: still picked
    h.streamer("B");
    h.drain();
    let p = h.player();
    h.msg(p, r#"{"type":"offer","sdp":"s"}"#);
    assert_eq!(
        h.drain(),
        [
            send(first, &connected("Player0")),
            send(first, r#"{"type":"offer","sdp":"s","playerId":"Player0"}"#),
        ]
    );
    // Now subscribed: the next message goes straight through.
    h.msg(p, r#"{"type":"iceCandidate","candidate":{}}"#);
    assert_eq!(
        h.drain(),
        [send(
            first,
            r#"{"type":"iceCandidate","candidate":{},"playerId":"Player0"}"#
        )]
    );
}

#[test]
fn auto_subscribe_may_pick_an_sfu() {
    let mut h = Harness::new();
    let f = h.sfu("SFU");
    h.streamer("S");
    let p = h.player();
    h.msg(p, r#"{"type":"dataChannelRequest"}"#);
    assert_eq!(
        h.drain(),
        [
            send(f, &connected("Player1")),
            send(f, r#"{"type":"dataChannelRequest","playerId":"Player1"}"#),
        ]
    );
}

#[test]
fn auto_subscribe_runs_for_every_f2_type_and_after_unsubscribe() {
    for text in [
        r#"{"type":"offer"}"#,
        r#"{"type":"answer"}"#,
        r#"{"type":"iceCandidate"}"#,
        r#"{"type":"dataChannelRequest"}"#,
        r#"{"type":"peerDataChannelsReady"}"#,
        r#"{"type":"layerPreference"}"#,
    ] {
        let mut h = Harness::new();
        let st = h.streamer("S");
        let p = h.player_on("S");
        h.msg(p, r#"{"type":"unsubscribe"}"#);
        assert_eq!(h.drain(), [send(st, &disconnected("Player0"))]);
        h.msg(p, text);
        let out = h.drain();
        assert_eq!(texts(&out, st)[0], connected("Player0"), "{text}");
        assert_eq!(out.len(), 2, "{text}");
    }
}

#[test]
fn auto_subscribe_to_a_full_entry_fails_drops_the_message_and_stays_idle() {
    let mut h = Harness::max_players(1);
    let st = h.streamer("S");
    h.player_on("S");
    let p = h.player();
    let full = r#"{"type":"subscribeFailed","message":"Streamer S is full. Max players = 1."}"#;
    h.msg(p, r#"{"type":"offer","sdp":"s"}"#);
    assert_eq!(h.drain(), [send(p, full)]);
    h.msg(p, r#"{"type":"answer","sdp":"s"}"#);
    assert_eq!(h.drain(), [send(p, full)]);
    h.msg(st, r#"{"type":"offer","playerId":"Player1","sdp":"s"}"#);
    assert_eq!(h.drain(), []);
    assert_eq!(h.router.connection_count(), 3);
}

// ---------------------------------------------------------------------------------------------
// §9 Liveness
// ---------------------------------------------------------------------------------------------

#[test]
fn ping_gets_pong_echoing_the_time_token_unchanged_from_every_role() {
    let mut fx = fixture();
    for sender in [fx.st, fx.f, fx.p_st] {
        for time in [
            "17672256000001234",
            "1767225600",
            "1767225600.0",
            "1.5e3",
            r#""abc""#,
            "-3",
            "{\"a\":[1,2]}",
        ] {
            fx.h.msg(sender, &format!(r#"{{"type":"ping","time":{time}}}"#));
            assert_eq!(
                fx.h.drain(),
                [send(sender, &format!(r#"{{"type":"pong","time":{time}}}"#))]
            );
        }
    }
}

#[test]
fn ping_with_missing_or_null_time_gets_pong_time_zero() {
    let mut h = Harness::new();
    let p = h.player();
    h.msg(p, r#"{"type":"ping"}"#);
    h.msg(p, r#"{"type":"ping","time":null}"#);
    let pong = r#"{"type":"pong","time":0}"#;
    assert_eq!(h.drain(), [send(p, pong), send(p, pong)]);
}

#[test]
fn tick_pings_only_players_with_the_given_time() {
    let mut h = Harness::new();
    h.streamer("S");
    h.sfu("SFU");
    let p = h.player();
    let q = h.player_on("S");
    h.tick(1767225600000);
    let ping = r#"{"type":"ping","time":1767225600000}"#;
    assert_eq!(h.drain(), [send(p, ping), send(q, ping)]);
}

#[test]
fn pong_clears_the_pending_protocol_ping() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    for now in 1..5u64 {
        h.tick(now);
        assert_eq!(
            h.drain(),
            [send(p, &format!(r#"{{"type":"ping","time":{now}}}"#))]
        );
        h.msg(p, &format!(r#"{{"type":"pong","time":{now}}}"#));
        assert_eq!(h.drain(), []);
    }
    let _ = st;
}

#[test]
fn no_pong_by_next_tick_drops_the_player_and_tells_its_streamer() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let silent = h.player_on("S"); // Player0
    let answering = h.player_on("S"); // Player1
    h.tick(10);
    h.drain();
    h.msg(answering, r#"{"type":"pong","time":10}"#);
    let late = h.player(); // connected after the first ping: gets one now, not dropped
    h.tick(20);
    assert_eq!(
        h.drain(),
        [
            send(answering, r#"{"type":"ping","time":20}"#),
            send(late, r#"{"type":"ping","time":20}"#),
            Output::Drop { conn: silent },
            send(st, &disconnected("Player0")),
        ]
    );
    assert_eq!(h.router.connection_count(), 3);
    // A ping from the player (not a pong) does not count as answering.
    h.msg(late, r#"{"type":"ping","time":1}"#);
    h.msg(answering, r#"{"type":"pong"}"#);
    h.drain();
    h.tick(30);
    assert_eq!(
        h.drain(),
        [
            send(answering, r#"{"type":"ping","time":30}"#),
            Output::Drop { conn: late },
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Property: the playerConnected/playerDisconnected invariant and table consistency
// ---------------------------------------------------------------------------------------------

use super::invariants::{Fields, IDS, Op, Settings, Value, run_ops};

fn op() -> impl Strategy<Value = Op> {
    let role = prop_oneof![Just(Role::Streamer), Just(Role::Player), Just(Role::Sfu)];
    let c = 0u8..64;
    let ids = 0..IDS.len() as u8;
    let leaf = prop_oneof![
        Just(Value::Absent),
        (0u8..10).prop_map(Value::Player),
        ids.clone().prop_map(Value::Id),
        ".{0,4}".prop_map(Value::String),
        (-2i64..12).prop_map(Value::Number),
        (-1.5f64..12.5).prop_map(Value::Float),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
    ];
    let value = prop_oneof![
        4 => leaf.clone(),
        1 => prop::collection::vec(leaf, 0..3).prop_map(Value::Array),
    ];
    let fields = (0u8..24, value.clone(), value.clone(), value.clone(), value).prop_map(
        |(ty, player_id, id, time, extra)| Fields {
            ty,
            player_id,
            id,
            time,
            extra,
        },
    );
    prop_oneof![
        4 => (role, any::<bool>()).prop_map(|(r, o)| Op::Open(r, o)),
        2 => (c.clone(), ids.clone()).prop_map(|(c, i)| Op::EndpointId(c, i)),
        4 => (c.clone(), ids).prop_map(|(c, i)| Op::Subscribe(c, i)),
        1 => c.clone().prop_map(Op::Unsubscribe),
        2 => c.clone().prop_map(Op::PlayerOffer),
        1 => (c.clone(), 0u8..10).prop_map(|(c, p)| Op::EntryOffer(c, p)),
        1 => c.clone().prop_map(Op::Answer),
        2 => (c.clone(), 0u8..10).prop_map(|(c, p)| Op::DisconnectPlayer(c, p)),
        1 => c.clone().prop_map(Op::StartStreaming),
        1 => c.clone().prop_map(Op::StopStreaming),
        2 => c.clone().prop_map(Op::Pong),
        3 => c.clone().prop_map(Op::Close),
        1 => Just(Op::Tick(1000)),
        1 => Just(Op::CountTick),
        2 => (c.clone(), fields).prop_map(|(c, f)| Op::Message(c, f)),
        1 => (c, "[{}\\[\\]\":,a-z ]{0,12}").prop_map(|(c, t)| Op::Text(c, t)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_player_connected_gets_exactly_one_player_disconnected(
        ops in prop::collection::vec(op(), 1..120),
        max_players in 0u32..3,
        numeric in any::<bool>(),
        max_player_count in prop::option::of(0u32..4),
        subscribe_at_connect in any::<bool>(),
        player_count_updates in any::<bool>(),
    ) {
        let settings = Settings {
            max_players,
            numeric,
            max_player_count,
            subscribe_at_connect,
            player_count_updates,
        };
        run_ops(&ops, &settings).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn sfu_cycle_terminates_and_keeps_the_invariant() {
    // Two SFUs subscribed to each other: ending either must not loop.
    let ops = [
        Op::Open(Role::Sfu, false),
        Op::Open(Role::Sfu, false),
        Op::EndpointId(0, 0), // "A"
        Op::EndpointId(1, 1), // "B"
        Op::Subscribe(0, 1),
        Op::Subscribe(1, 0),
        Op::Open(Role::Player, false),
        Op::Subscribe(2, 0),
        Op::StopStreaming(0),
        Op::Subscribe(0, 1),
        Op::Subscribe(1, 0),
        Op::Close(0),
    ];
    run_ops(&ops, &Settings::default()).unwrap();
}

#[test]
fn forwarded_messages_are_sent_compact_and_repeated_keys_take_the_last_value() {
    let mut h = Harness::new();
    let st = h.streamer("S");
    let p = h.player_on("S");
    h.msg(
        st,
        "{ \"type\" : \"offer\" ,\n \"playerId\" : \"Player0\", \"sdp\" : \"a b\", \"x\" : [ 1 , { } ] }",
    );
    assert_eq!(
        h.drain(),
        [send(
            p,
            r#"{"type":"offer","playerId":"Player0","sdp":"a b","x":[1,{}]}"#
        )]
    );
    h.msg(
        p,
        "{ \"type\" : \"answer\" , \"playerId\" : \"\", \"sdp\" : \"a b\" }",
    );
    assert_eq!(
        h.drain(),
        [send(
            st,
            r#"{"type":"answer","playerId":"Player0","sdp":"a b"}"#
        )]
    );
    // JSON.parse semantics: the last playerId counts, so this names nobody.
    h.msg(
        st,
        r#"{"type":"offer","playerId":"Player0","playerId":"Player9","sdp":"s"}"#,
    );
    assert_eq!(h.drain(), []);
    h.msg(p, "{ \"type\" : \"ping\" , \"time\" : 12 }");
    assert_eq!(h.drain(), [send(p, r#"{"type":"pong","time":12}"#)]);
}
