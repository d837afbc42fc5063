//! What the cargo-fuzz targets in `fuzz/` call, built only with `--cfg fuzzing` (cargo-fuzz sets
//! it), so the cores stay `pub(crate)` in every other build. Each function takes the fuzzer's
//! bytes, drives one part of the server, and panics when a promise is broken: libFuzzer reports
//! the panic as a crash and keeps the input.

use arbitrary::{Arbitrary, Unstructured};
use protocol::{Inbound, Relay};

use crate::accept::handshake::{self, Head, Policy};
use crate::router::invariants as router_invariants;
use crate::sessions::{self, invariants as sessions_invariants};

/// Events decoded from one input, at most: enough for long sequences, short enough that one
/// input runs in well under a millisecond.
const MAX_OPS: usize = 400;

/// Inbound parsing and the edits the router makes to a forwarded message (`router/forward.rs`):
/// `playerId` set (F2, F4) or removed (F3), `sfuId` set (F5). Every other member keeps its
/// place and its value byte for byte, the result is JSON meaning what the input meant, and it
/// parses back to the same kind with the new `playerId`.
pub fn message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(Inbound::Forward { kind, relay, .. }) = Inbound::parse(text) else {
        return;
    };
    assert_eq!(
        Relay::parse(text).as_ref(),
        Ok(&relay),
        "Inbound and Relay disagree"
    );
    // serde_json refuses numbers beyond f64 (JSON.parse makes them Infinity), so an input it
    // refuses may still be kept: a repeated key's earlier value is dropped, as JSON.parse does.
    if let Ok(original) = serde_json::from_str::<serde_json::Value>(text) {
        let kept = serde_json::from_str::<serde_json::Value>(relay.as_str()).ok();
        assert_eq!(
            Some(original),
            kept,
            "the relay changed what {text:?} means"
        );
    }
    // Compacting is idempotent: what the server sends, read again, is sent the same.
    assert_eq!(
        Relay::parse(relay.as_str())
            .map(Relay::into_string)
            .as_deref(),
        Ok(relay.as_str())
    );
    for (key, id) in [
        ("playerId", Some("Player0")),
        ("playerId", Some("a\"b\\c\u{1}\u{e9}\u{2028}")),
        ("playerId", Some("")),
        ("playerId", None),
        ("sfuId", Some("Player1")),
    ] {
        let mut edited = relay.clone();
        match id {
            Some(id) => edited.set_str(key, id),
            None => edited.remove(key),
        }
        check_edit(&relay, &edited, key, id);
        let reparsed = Inbound::parse(edited.as_str());
        let Ok(Inbound::Forward {
            kind: again,
            player_id,
            ..
        }) = reparsed
        else {
            panic!("{:?} does not parse back: {reparsed:?}", edited.as_str());
        };
        assert_eq!(again, kind);
        if key == "playerId" {
            let expected = match id {
                Some(id) => protocol::PlayerIdValue::String(id.to_owned()),
                None => protocol::PlayerIdValue::Absent,
            };
            assert_eq!(player_id, expected, "in {:?}", edited.as_str());
        }
    }
}

/// `edited` is `before` with `key` set to the string `id` (or removed for `None`), and nothing
/// else changed.
fn check_edit(before: &Relay, edited: &Relay, key: &str, id: Option<&str>) {
    let text = edited.as_str();
    assert!(
        serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok(),
        "not JSON after setting {key}: {text:?}"
    );
    let mut expected: Vec<&str> = before.keys().filter(|k| *k != key).collect();
    if id.is_some() {
        match before.keys().position(|k| k == key) {
            Some(at) => expected.insert(at, key),
            None => expected.push(key),
        }
    }
    assert_eq!(edited.keys().collect::<Vec<_>>(), expected, "in {text:?}");
    for k in before.keys().filter(|k| *k != key) {
        assert_eq!(edited.get(k), before.get(k), "{k} changed in {text:?}");
    }
    let token = id.map(|id| serde_json::to_string(id).unwrap_or_default());
    assert_eq!(edited.get(key), token.as_deref(), "in {text:?}");
}

/// The routing core driven by a sequence of events under settings, both decoded from `data`,
/// with its invariants checked after every step (`router::invariants`).
pub fn router(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(settings) = router_settings(&mut u) else {
        return;
    };
    let Ok(ops) = ops::<router_invariants::Op>(&mut u) else {
        return;
    };
    if let Err(broken) = router_invariants::run_ops(&ops, &settings) {
        panic!("{broken}\nsettings: {settings:?}\nops: {ops:#?}");
    }
}

fn router_settings(u: &mut Unstructured<'_>) -> arbitrary::Result<router_invariants::Settings> {
    Ok(router_invariants::Settings {
        max_players: u32::from(u.int_in_range(0u8..=3)?),
        numeric: u.arbitrary()?,
        max_player_count: Option::<u8>::arbitrary(u)?.map(|n| u32::from(n % 5)),
        subscribe_at_connect: u.arbitrary()?,
        player_count_updates: u.arbitrary()?,
    })
}

/// Up to [`MAX_OPS`] events from the rest of the input.
fn ops<'a, T: Arbitrary<'a>>(u: &mut Unstructured<'a>) -> arbitrary::Result<Vec<T>> {
    u.arbitrary_iter::<T>()?.take(MAX_OPS).collect()
}

/// The sessions core driven by a sequence of requests under limits, both decoded from `data`,
/// with its promises checked after every step (`sessions::invariants`).
pub fn sessions(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((limits, max_payload)) = sessions_limits(&mut u) else {
        return;
    };
    let Ok(ops) = ops::<sessions_invariants::Op>(&mut u) else {
        return;
    };
    if let Err(broken) = sessions_invariants::run(&ops, &limits, max_payload) {
        panic!("{broken}\nlimits: {limits:?}, payloads up to {max_payload}\nops: {ops:#?}");
    }
}

/// Limits as `config::validate` lets an operator set them (the per-peer budget holds the
/// largest message and a `peer-left` reserve, the server-wide one at least that), the stream
/// window and the idle timeout small enough that a short sequence reaches them, and the
/// largest payload.
fn sessions_limits(u: &mut Unstructured<'_>) -> arbitrary::Result<(sessions::Limits, usize)> {
    let max_payload = usize::from(u.int_in_range(1u16..=2000)?);
    let max_peers_per_session = usize::from(u.int_in_range(2u8..=4)?);
    let max_peer_event_bytes =
        max_payload + 256 * max_peers_per_session + 200 + usize::from(u.int_in_range(0u16..=4000)?);
    let limits = sessions::Limits {
        max_sessions: usize::from(u.int_in_range(1u8..=3)?),
        max_sessions_per_address: usize::from(u.int_in_range(0u8..=2)?),
        max_peers_per_session,
        max_queued_events: usize::from(u.int_in_range(1u8..=8)?),
        max_peer_event_bytes,
        max_event_bytes: max_peer_event_bytes + usize::from(u.arbitrary::<u16>()?),
        stream_window_bytes: usize::from(u.int_in_range(1u16..=2000)?),
        idle_timeout_ms: u64::from(u.int_in_range(0u16..=2000)?),
    };
    Ok((limits, max_payload))
}

/// The request-head parser and the handshake's checks on any bytes, under a policy chosen by
/// the first byte: no panic; a head's length is within what was read; and a verdict, once
/// given, stays the same whatever follows (the head alone decides it).
pub fn handshake(data: &[u8]) {
    let [flags, cut_hi, cut_lo, rest @ ..] = data else {
        return;
    };
    let origins = [String::from("https://example.com")];
    let gate = crate::auth::Gate {
        token: Some("s3cret".into()),
        ..crate::auth::Gate::default()
    };
    let open = crate::auth::Gate::default();
    let policy = Policy {
        serves_http: flags & 1 != 0,
        origins: if flags & 2 != 0 { &origins } else { &[] },
        gate: if flags & 4 != 0 { &gate } else { &open },
    };
    let cut = usize::from(u16::from_be_bytes([*cut_hi, *cut_lo])) % (rest.len() + 1);
    let (head, _) = rest.split_at(cut);
    let whole = handshake::classify(rest, policy);
    let Some(first) = handshake::classify(head, policy) else {
        return;
    };
    assert_eq!(
        Some(&first),
        whole.as_ref(),
        "more bytes changed the verdict"
    );
    if let Head::Complete { len, verdict } = &first {
        assert!(
            *len <= head.len(),
            "a head of {len} bytes in {}",
            head.len()
        );
        let own = handshake::classify(&head[..*len], policy);
        assert_eq!(
            own.as_ref(),
            Some(&first),
            "the head alone decides otherwise"
        );
        if let handshake::Verdict::Upgrade(accepted) = verdict {
            let response = accepted.response();
            assert_eq!(
                response.matches("\r\n").count(),
                5 + usize::from(accepted.protocol.is_some()),
                "{response:?}"
            );
        }
        let _ = handshake::forwarding(&head[..*len]);
    }
}
