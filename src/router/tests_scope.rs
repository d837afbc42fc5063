//! What a token's [`Scope`] does in the routing core: a player whose JWT names its streamers
//! sees only those in `streamerList` and may subscribe to only those (auto-subscribe included);
//! a streamer whose token names its ids may claim only those with `endpointId`.

use super::tests_cirrus::{Harness, closes, sent};
use super::*;

fn scoped(ids: &[&str]) -> Opening {
    Opening {
        scope: Scope::only(ids.iter().map(|&id| id.to_owned())),
        ..Opening::default()
    }
}

#[test]
fn a_scoped_player_sees_and_subscribes_to_only_its_streamers() {
    let mut h = Harness::with(RouterConfig::default());
    let a = h.streamer("a");
    let _b = h.streamer("b");
    let _c = h.streamer("c");
    let player = h.open_with(Role::Player, scoped(&["a", "c", "gone"]));
    let everyone = h.open(Role::Player);
    h.drain();
    h.msg(player, r#"{"type":"listStreamers"}"#);
    h.msg(everyone, r#"{"type":"listStreamers"}"#);
    let out = h.drain();
    assert_eq!(
        sent(&out),
        [
            (player, r#"{"type":"streamerList","ids":["a","c"]}"#),
            (everyone, r#"{"type":"streamerList","ids":["a","b","c"]}"#),
        ]
    );
    // b exists, but its answer is the one for an id that does not exist.
    h.msg(player, r#"{"type":"subscribe","streamerId":"b"}"#);
    let out = h.drain();
    assert_eq!(
        sent(&out),
        [(
            player,
            r#"{"type":"subscribeFailed","message":"Streamer b does not exist."}"#
        )]
    );
    h.msg(player, r#"{"type":"subscribe","streamerId":"a"}"#);
    let out = h.drain();
    assert!(
        sent(&out)
            .iter()
            .any(|&(to, text)| to == a && text.contains(r#""type":"playerConnected""#)),
        "{out:?}"
    );
}

#[test]
fn auto_subscribe_takes_the_first_streamer_the_token_names() {
    let mut h = Harness::with(RouterConfig::default());
    let _a = h.streamer("a");
    let b = h.streamer("b");
    let player = h.open_with(Role::Player, scoped(&["b"]));
    h.drain();
    // A message for the streamer from an unsubscribed player auto-subscribes it (PROTOCOL.md §8).
    h.msg(player, r#"{"type":"answer","sdp":"x"}"#);
    let out = h.drain();
    let to_b: Vec<&str> = sent(&out)
        .into_iter()
        .filter(|&(to, _)| to == b)
        .map(|(_, text)| text)
        .collect();
    assert!(
        to_b.iter().any(|t| t.contains("playerConnected"))
            && to_b.iter().any(|t| t.contains("answer")),
        "{out:?}"
    );
    // With no streamer it may watch, it is closed as when none is connected.
    let lonely = h.open_with(Role::Player, scoped(&["z"]));
    h.drain();
    h.msg(lonely, r#"{"type":"answer","sdp":"x"}"#);
    let out = h.drain();
    assert_eq!(closes(&out), [(lonely, 1013, "no streamer connected")]);
}

#[test]
fn a_scoped_streamer_claims_only_its_ids() {
    let mut h = Harness::with(RouterConfig::default());
    let tenant = h.open_with(Role::Streamer, scoped(&["mine", "mine-too"]));
    h.drain();
    h.msg(tenant, r#"{"type":"endpointId","id":"mine"}"#);
    let out = h.drain();
    assert!(closes(&out).is_empty(), "{out:?}");
    h.msg(tenant, r#"{"type":"endpointId","id":"mine-too"}"#);
    assert!(closes(&h.drain()).is_empty());
    let intruder = h.open_with(Role::Streamer, scoped(&["mine"]));
    h.drain();
    h.msg(intruder, r#"{"type":"endpointId","id":"theirs"}"#);
    let out = h.drain();
    assert_eq!(
        closes(&out),
        [(intruder, 1008, "streamer id not allowed for this token")]
    );
    // The refused claim changed nothing: the list has the tenant's id only.
    let player = h.open(Role::Player);
    h.drain();
    h.msg(player, r#"{"type":"listStreamers"}"#);
    assert_eq!(
        sent(&h.drain()),
        [(player, r#"{"type":"streamerList","ids":["mine-too"]}"#)]
    );
}
