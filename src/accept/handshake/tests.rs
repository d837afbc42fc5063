use proptest::prelude::*;

use super::*;

const UPGRADE: &str = "GET /any/path?x=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

const WS_ONLY: Policy<'static> = Policy {
    serves_http: false,
    origins: &[],
    gate: &crate::auth::OPEN,
};
const HTTP_TOO: Policy<'static> = Policy {
    serves_http: true,
    origins: &[],
    gate: &crate::auth::OPEN,
};

fn verdict(head: &str, policy: Policy<'_>) -> Verdict {
    match classify(head.as_bytes(), policy) {
        Some(Head::Complete { verdict, .. }) => verdict,
        other => panic!("expected a complete head, got {other:?}"),
    }
}

fn accepted(head: &str) -> Accepted {
    match verdict(head, WS_ONLY) {
        Verdict::Upgrade(accepted) => accepted,
        other => panic!("expected an upgrade, got {other:?}"),
    }
}

#[test]
fn an_upgrade_is_answered_with_the_accept_key_and_the_head_length() {
    let head = format!("{UPGRADE}\r\n");
    let with_frame = format!("{head}\u{81}\u{1}");
    match classify(with_frame.as_bytes(), WS_ONLY) {
        Some(Head::Complete {
            len,
            verdict: Verdict::Upgrade(accepted),
        }) => {
            assert_eq!(
                len,
                head.len(),
                "bytes after the head belong to the WebSocket"
            );
            let response = accepted.response();
            assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
            // RFC 6455's example key and its accept value.
            assert!(response.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
            assert!(response.ends_with("\r\n\r\n"));
            assert!(!response.contains("sec-websocket-protocol"));
        }
        other => panic!("expected an upgrade, got {other:?}"),
    }
}

#[test]
fn the_first_offered_subprotocol_is_selected() {
    let head = format!("{UPGRADE}Sec-WebSocket-Protocol: v1.pixelstreaming, other\r\n\r\n");
    assert_eq!(
        accepted(&head).protocol.as_deref(),
        Some("v1.pixelstreaming")
    );
    let bad = format!("{UPGRADE}Sec-WebSocket-Protocol: a b\r\n\r\n");
    assert_eq!(accepted(&bad).protocol, None, "not a token: none selected");
}

#[test]
fn the_upgrade_carries_the_query_of_its_request_target() {
    let head = UPGRADE.replace("?x=1", "?OfferToReceive=true") + "\r\n";
    assert!(accepted(&head).opening.offer_to_receive);
    assert!(!accepted(&format!("{UPGRADE}\r\n")).opening.offer_to_receive);
}

#[test]
fn offer_to_receive_is_read_as_cirrus_read_it() {
    for (query, expected) in [
        (None, false),
        (Some(""), false),
        (Some("x=1"), false),
        (Some("OfferToReceive=true"), true),
        (Some("OfferToReceive"), true),
        (Some("OfferToReceive="), true),
        (Some("a=b&OfferToReceive=1"), true),
        (Some("OfferToReceive=false"), false),
        (Some("OfferToReceive=false&OfferToReceive=true"), false),
        (Some("Offer%54oReceive=true"), true),
        (Some("offertoreceive=true"), false),
    ] {
        assert_eq!(opening(query).offer_to_receive, expected, "query {query:?}");
    }
}

#[test]
fn every_check_refuses_with_its_own_status() {
    let cases: [(String, Refusal); 8] = [
        (UPGRADE.replacen("GET", "POST", 1), NOT_GET),
        (UPGRADE.replace("HTTP/1.1", "HTTP/1.0"), NOT_HTTP_1_1),
        (UPGRADE.replace("Version: 13", "Version: 8"), BAD_VERSION),
        (
            UPGRADE.replace("Sec-WebSocket-Version: 13\r\n", ""),
            BAD_VERSION,
        ),
        (
            UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            BAD_KEY,
        ),
        // 15 bytes, and 24 characters that are not base64.
        (
            UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j"),
            BAD_KEY,
        ),
        (
            UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "!GhlIHNhbXBsZSBub25jZQ=="),
            BAD_KEY,
        ),
        (
            format!("{UPGRADE}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
            BAD_KEY,
        ),
    ];
    for (head, refusal) in cases {
        for policy in [WS_ONLY, HTTP_TOO] {
            assert_eq!(
                verdict(&format!("{head}\r\n"), policy),
                Verdict::Refuse(refusal),
                "{head:?}"
            );
        }
    }
}

#[test]
fn plain_requests_are_http_on_the_player_port_and_426_elsewhere() {
    for head in [
        "GET /iceServers HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /register HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n",
        "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
    ] {
        assert_eq!(verdict(head, HTTP_TOO), Verdict::Http, "{head:?}");
        assert_eq!(
            verdict(head, WS_ONLY),
            Verdict::Refuse(NOT_AN_UPGRADE),
            "{head:?}"
        );
    }
}

#[test]
fn an_incomplete_head_waits_and_an_overlong_or_malformed_one_is_refused() {
    assert_eq!(classify(UPGRADE.as_bytes(), WS_ONLY), None);
    assert_eq!(classify(b"GET / HT", HTTP_TOO), None);
    let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
    assert_eq!(
        classify(long.as_bytes(), HTTP_TOO),
        Some(Head::Refuse(TOO_LARGE))
    );
    let many = format!(
        "GET / HTTP/1.1\r\n{}\r\n",
        "X: 1\r\n".repeat(MAX_HEADERS + 1)
    );
    assert_eq!(
        classify(many.as_bytes(), HTTP_TOO),
        Some(Head::Refuse(TOO_LARGE))
    );
    assert_eq!(
        classify(b"\x16\x03\x01 not http\r\n\r\n", HTTP_TOO),
        Some(Head::Refuse(MALFORMED))
    );
}

#[test]
fn the_origin_list_admits_only_its_origins() {
    let allowed = ["https://app.example.com".to_owned()];
    let policy = Policy {
        serves_http: true,
        origins: &allowed,
        gate: &crate::auth::OPEN,
    };
    let with = |origin: &str| format!("{UPGRADE}Origin: {origin}\r\n\r\n");
    assert!(matches!(
        verdict(&with("https://app.example.com"), policy),
        Verdict::Upgrade(_)
    ));
    assert!(matches!(
        verdict(&with("HTTPS://APP.example.com"), policy),
        Verdict::Upgrade(_)
    ));
    for origin in [
        "https://evil.example.com",
        "https://app.example.com.evil",
        "http://app.example.com",
        "null",
    ] {
        assert_eq!(
            verdict(&with(origin), policy),
            Verdict::Refuse(ORIGIN),
            "{origin}"
        );
    }
    assert_eq!(
        verdict(&format!("{UPGRADE}\r\n"), policy),
        Verdict::Refuse(ORIGIN),
        "no Origin at all"
    );
    assert!(matches!(
        verdict(&format!("{UPGRADE}Origin: https://x\r\n\r\n"), WS_ONLY),
        Verdict::Upgrade(_)
    ));
    assert!(origin_allowed(&["*".to_owned()], None));
}

#[test]
fn a_refusal_is_a_complete_response_with_a_one_line_reason() {
    let response = BAD_VERSION.response();
    assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(response.contains("\r\nsec-websocket-version: 13\r\n"));
    assert!(response.contains("\r\nconnection: close\r\n"));
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    assert_eq!(body, "Sec-WebSocket-Version must be 13\n");
    assert!(head.contains(&format!("content-length: {}", body.len())));
}

#[test]
fn forwarding_headers_are_kept_in_order() {
    let head = format!(
        "{UPGRADE}X-Forwarded-For: 1.0.0.1, 1.0.0.2\r\nforwarded: for=1.0.0.9\r\nx-forwarded-for: 1.0.0.3\r\n\r\n"
    );
    assert_eq!(
        forwarding(head.as_bytes()),
        Forwarding {
            x_forwarded_for: vec![b"1.0.0.1, 1.0.0.2".to_vec(), b"1.0.0.3".to_vec()],
            forwarded: vec![b"for=1.0.0.9".to_vec()],
        }
    );
    assert_eq!(
        forwarding(format!("{UPGRADE}\r\n").as_bytes()),
        Forwarding::default()
    );
}

proptest! {
    /// Whatever arrives, classification never panics, and a verdict, once given, does not
    /// change as more bytes follow (the head's length is fixed by its end).
    #[test]
    fn any_bytes_classify_without_panic_and_more_bytes_change_nothing(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        more in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        if let Some(first) = classify(&bytes, HTTP_TOO) {
            let mut longer = bytes.clone();
            longer.extend(&more);
            prop_assert_eq!(Some(first), classify(&longer, HTTP_TOO));
        }
    }

    /// A valid upgrade cut at any point waits until its end, then is the same upgrade.
    #[test]
    fn a_head_in_pieces_is_classified_once_complete(cut in 0usize..200) {
        let head = format!("{UPGRADE}\r\n");
        let cut = cut.min(head.len() - 1);
        prop_assert_eq!(classify(&head.as_bytes()[..cut], WS_ONLY), None);
        let whole = classify(head.as_bytes(), WS_ONLY);
        prop_assert!(
            matches!(whole, Some(Head::Complete { verdict: Verdict::Upgrade(_), .. })),
            "{:?}",
            whole
        );
    }
}

#[test]
fn a_required_token_is_taken_from_the_query_or_a_bearer_header() {
    let gate = crate::auth::Gate {
        token: Some("s3cret+/=".into()),
        ..Default::default()
    };
    let policy = Policy {
        serves_http: true,
        origins: &[],
        gate: &gate,
    };
    let head =
        |target: &str, extra: &str| UPGRADE.replacen("/any/path?x=1", target, 1) + extra + "\r\n";
    let admitted = |target: &str, extra: &str| {
        matches!(verdict(&head(target, extra), policy), Verdict::Upgrade(_))
    };
    // The query's value is percent-decoded, as URLSearchParams encodes it.
    assert!(admitted("/?token=s3cret%2B%2F%3D", ""));
    assert!(admitted("/?StreamerId=a&token=s3cret%2B%2F%3D", ""));
    assert!(admitted("/", "Authorization: Bearer s3cret+/=\r\n"));
    assert!(admitted("/", "authorization: bearer  s3cret+/= \r\n"));
    for (target, extra) in [
        ("/", ""),
        ("/?token=", ""),
        ("/?token=s3cret", ""),
        ("/?token=s3cret%2B%2F%3Dx", ""),
        ("/?Token=s3cret%2B%2F%3D", ""),
        ("/?x=s3cret%2B%2F%3D", ""),
        ("/", "Authorization: Basic s3cret+/=\r\n"),
        ("/", "Authorization: Bearer\r\n"),
        ("/", "Authorization: Bearer wrong\r\n"),
    ] {
        match verdict(&head(target, extra), policy) {
            Verdict::Refuse(refusal) => assert_eq!(
                (refusal.status, refusal.header),
                (401, UNAUTHORIZED.header),
                "{target} {extra:?}"
            ),
            other => panic!("{target} {extra:?}: {other:?}"),
        }
    }
    // Plain HTTP on the same port is not asked for the token: it guards the upgrade.
    assert_eq!(
        verdict("GET / HTTP/1.1\r\nHost: a\r\n\r\n", policy),
        Verdict::Http
    );
}
