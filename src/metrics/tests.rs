use super::*;

#[test]
fn every_message_type_maps_to_its_own_index() {
    for (i, name) in MESSAGE_TYPES.iter().enumerate() {
        assert_eq!(message_type(name), i, "{name}");
    }
    assert_eq!(message_type("somethingElse"), OTHER);
    assert_eq!(MESSAGE_TYPES[OFFER], "offer");
    assert_eq!(MESSAGE_TYPES[SUBSCRIBE], "subscribe");
}

#[test]
fn outgoing_type_reads_the_type_key_wherever_it_is() {
    let offer = message_type("offer");
    assert_eq!(outgoing_type(r#"{"type":"offer","sdp":"v=0"}"#), offer);
    assert_eq!(
        outgoing_type(r#"{"playerId":"1","sdp":"v=0","type":"offer"}"#),
        offer
    );
    // A quoted "type" inside a string value is escaped, so it is not taken for the key.
    assert_eq!(
        outgoing_type(r#"{"sdp":"a=\"type\":\"answer\"","type":"offer"}"#),
        offer
    );
    assert_eq!(
        outgoing_type(r#"{ "type" : "offer" }"#),
        offer,
        "spaces: parsed"
    );
    assert_eq!(outgoing_type(r#"{"type":"madeUp"}"#), OTHER);
    assert_eq!(outgoing_type("not json"), OTHER);
    assert_eq!(outgoing_type(r#"{"type":"unterminated"#), OTHER);
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn counts_show_in_the_rendered_text() {
    let m = Metrics::new();
    m.opened(Role::Player);
    m.opened(Role::Player);
    m.closed(Role::Player, Some(1000));
    m.closed(Role::Streamer, Some(4321));
    m.message(message_type("offer"), Direction::Out);
    m.auth_failure(Role::Sfu);
    m.rate_limited(Limit::MaxMessageSize);
    m.queue_full();
    let text = m.render(Tables {
        router: Some((2, 3)),
        sessions: Some((4, 5)),
        cluster: Some(vec![
            (
                std::sync::Arc::from("a"),
                crate::cluster::bridge::Answer::Counts(crate::router::snapshot::ApiCounts {
                    streamers: 6,
                    players: 7,
                }),
            ),
            (
                std::sync::Arc::from(r#"b"\"#),
                crate::cluster::bridge::Answer::Counts(crate::router::snapshot::ApiCounts {
                    streamers: 0,
                    players: 8,
                }),
            ),
        ]),
    });
    let at = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
    assert_eq!(at(r#"signalling_connections{role="player"}"#), 1.0);
    assert_eq!(at("signalling_cluster_nodes"), 2.0);
    assert_eq!(
        at(r#"signalling_cluster_peers{node="a",kind="streamers"}"#),
        6.0
    );
    assert_eq!(
        at(r#"signalling_cluster_peers{node="a",kind="players"}"#),
        7.0
    );
    // A quote and a backslash in a node id are escaped as the text format says.
    assert_eq!(
        at(r#"signalling_cluster_peers{node="b\"\\",kind="players"}"#),
        8.0
    );
    assert_eq!(at(r#"signalling_connections_total{role="player"}"#), 2.0);
    assert_eq!(
        at(r#"signalling_closes_total{role="player",code="1000"}"#),
        1.0
    );
    assert_eq!(
        at(r#"signalling_closes_total{role="streamer",code="other"}"#),
        1.0
    );
    assert_eq!(
        at(r#"signalling_messages_total{type="offer",direction="out"}"#),
        1.0
    );
    assert_eq!(
        at(r#"signalling_messages_total{type="offer",direction="in"}"#),
        0.0
    );
    assert_eq!(at(r#"signalling_auth_failures_total{role="sfu"}"#), 1.0);
    assert_eq!(
        at(r#"signalling_rate_limited_total{limit="max_message_size"}"#),
        1.0
    );
    assert_eq!(at("signalling_queue_full_total"), 1.0);
    assert_eq!(at("signalling_streamers"), 2.0);
    assert_eq!(at("signalling_subscriptions"), 3.0);
    assert_eq!(at("signalling_sse_sessions"), 4.0);
    assert_eq!(at("signalling_sse_events_queued"), 5.0);
    let version = format!(
        r#"signalling_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(at(&version), 1.0);
}

#[test]
fn a_negotiation_is_observed_once_per_subscribe() {
    let m = Metrics::new();
    let pending = Negotiation::default();
    m.offer_delivered(&pending); // an offer without a subscribe: nothing
    m.negotiation_started(&pending);
    m.negotiation_started(&pending); // the latest start wins: still one pending
    m.offer_delivered(&pending);
    m.offer_delivered(&pending); // a second offer (renegotiation) is not a new sample
    let text = m.render(Tables::default());
    assert_eq!(
        sample(&text, "signalling_negotiation_seconds_count"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"signalling_negotiation_seconds_bucket{le="+Inf"}"#),
        Some(1.0)
    );
}

#[test]
fn router_refusals_count_their_growth() {
    use crate::router::Refusals;
    let m = Metrics::new();
    let zero = Refusals::default();
    let one = Refusals {
        max_players: 1,
        max_player_count: 0,
    };
    let three = Refusals {
        max_players: 3,
        max_player_count: 2,
    };
    m.router_refusals(zero, one);
    m.router_refusals(one, three);
    let text = m.render(Tables::default());
    assert_eq!(
        sample(
            &text,
            r#"signalling_rate_limited_total{limit="max_players"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"signalling_rate_limited_total{limit="max_player_count"}"#
        ),
        Some(2.0)
    );
}
