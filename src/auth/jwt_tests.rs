//! JWTs signed here with jsonwebtoken's encoder: HS256 with a secret, RS256, ES256 and ES384
//! with the private keys of `src/tls/testdata` (their public halves are in `testdata/`).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("sign")
}

fn hs(secret: &str, claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        claims,
    )
}

fn testdata(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn verifier(secret: &str, public_key: &str, aud: &str, iss: &str) -> Verifier {
    let key = if public_key.is_empty() {
        std::path::PathBuf::new()
    } else {
        testdata(public_key)
    };
    Verifier::new(secret, &key, aud, iss)
        .expect("keys load")
        .expect("a key is set")
}

#[test]
fn no_key_is_no_verifier_and_a_bad_key_file_is_an_error() {
    assert!(
        Verifier::new("", Path::new(""), "", "")
            .expect("nothing to load")
            .is_none()
    );
    let missing = Verifier::new("", Path::new("/nonexistent/key.pem"), "", "").unwrap_err();
    assert!(missing.contains("jwt_public_key: cannot read"), "{missing}");
    // A certificate's private key is not a public key.
    let private =
        Verifier::new("", &testdata("src/tls/testdata/p256-sec1.pem"), "", "").unwrap_err();
    assert!(private.contains("holds no RSA or EC"), "{private}");
}

#[test]
fn hs256_tokens_verify_with_their_claims_and_everything_else_is_rejected() {
    let v = verifier("k3y", "", "", "");
    let exp = now() + 600;
    let claims = v
        .verify(&hs(
            "k3y",
            &json!({"exp": exp, "streamers": ["a", "b"], "sessions": ["s"], "peer": "p", "other": 1}),
        ))
        .expect("valid");
    assert_eq!(
        claims,
        Claims {
            streamers: Some(vec!["a".into(), "b".into()]),
            sessions: Some(vec!["s".into()]),
            peer: Some("p".into()),
        }
    );
    assert_eq!(
        v.verify(&hs("k3y", &json!({"exp": exp}))),
        Ok(Claims::default())
    );
    // Expired (beyond the leeway), not yet valid, forged, missing exp, garbage.
    let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
    assert_eq!(
        v.verify(&hs("k3y", &json!({"exp": now() - leeway - 5}))),
        Err(Rejected::Expired)
    );
    assert_eq!(
        v.verify(&hs("k3y", &json!({"exp": exp, "nbf": now() + leeway + 60}))),
        Err(Rejected::NotYetValid)
    );
    assert_eq!(
        v.verify(&hs("other", &json!({"exp": exp}))),
        Err(Rejected::BadSignature)
    );
    assert_eq!(
        v.verify(&hs("k3y", &json!({"streamers": ["a"]}))),
        Err(Rejected::Malformed)
    );
    assert_eq!(v.verify("a.b.c"), Err(Rejected::Malformed));
    // A claim of the wrong type is not silently dropped.
    assert_eq!(
        v.verify(&hs("k3y", &json!({"exp": exp, "streamers": "a"}))),
        Err(Rejected::Malformed)
    );
    // alg "none": unsigned, never accepted.
    let unsigned = {
        use base64::Engine as _;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&json!({"exp": exp}))
        )
    };
    assert!(v.verify(&unsigned).is_err());
}

#[test]
fn audience_and_issuer_are_checked_when_set() {
    let v = verifier("k3y", "", "signalling", "https://idp.example");
    let exp = now() + 600;
    let good = json!({"exp": exp, "aud": "signalling", "iss": "https://idp.example"});
    assert!(v.verify(&hs("k3y", &good)).is_ok());
    assert_eq!(
        v.verify(&hs(
            "k3y",
            &json!({"exp": exp, "aud": "other", "iss": "https://idp.example"})
        )),
        Err(Rejected::WrongAudience)
    );
    assert_eq!(
        v.verify(&hs(
            "k3y",
            &json!({"exp": exp, "iss": "https://idp.example"})
        )),
        Err(Rejected::WrongAudience),
        "aud missing while required"
    );
    assert_eq!(
        v.verify(&hs(
            "k3y",
            &json!({"exp": exp, "aud": "signalling", "iss": "evil"})
        )),
        Err(Rejected::WrongIssuer)
    );
    assert_eq!(
        v.verify(&hs("k3y", &json!({"exp": exp, "aud": "signalling"}))),
        Err(Rejected::WrongIssuer),
        "iss missing while required"
    );
    // Without jwt_audience a token's aud is not looked at.
    let open = verifier("k3y", "", "", "");
    assert!(
        open.verify(&hs("k3y", &json!({"exp": exp, "aud": "x"})))
            .is_ok()
    );
}

#[test]
fn public_keys_pick_their_algorithm_and_refuse_the_others() {
    let exp = now() + 600;
    let claims = json!({"exp": exp, "streamers": ["*"]});
    for (public, private, alg) in [
        (
            "src/auth/testdata/rsa-public.pem",
            "src/tls/testdata/rsa-pkcs8.pem",
            Algorithm::RS256,
        ),
        (
            "src/auth/testdata/p256-public.pem",
            "src/tls/testdata/p256-pkcs8.pem",
            Algorithm::ES256,
        ),
        (
            "src/auth/testdata/p384-public.pem",
            "src/tls/testdata/p384-pkcs8.pem",
            Algorithm::ES384,
        ),
    ] {
        let pem = std::fs::read(testdata(private)).expect("fixture");
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            _ => EncodingKey::from_ec_pem(&pem),
        }
        .expect("private key");
        let v = verifier("k3y", public, "", "");
        assert!(v.verify(&sign(alg, &key, &claims)).is_ok(), "{alg:?}");
        // The HS256 secret still works beside the public key.
        assert!(v.verify(&hs("k3y", &claims)).is_ok());
        // The public key used as an HMAC secret (the classic confusion) is refused.
        let confused = hs(
            &String::from_utf8_lossy(&std::fs::read(testdata(public)).expect("pem")),
            &claims,
        );
        assert_eq!(v.verify(&confused), Err(Rejected::BadSignature), "{alg:?}");
        // Only the key's own algorithm.
        let other = if alg == Algorithm::RS256 {
            Algorithm::RS384
        } else {
            Algorithm::RS256
        };
        let rsa = EncodingKey::from_rsa_pem(
            &std::fs::read(testdata("src/tls/testdata/rsa-pkcs8.pem")).expect("fixture"),
        )
        .expect("rsa");
        assert_eq!(
            v.verify(&sign(other, &rsa, &claims)),
            Err(Rejected::Algorithm),
            "{alg:?}"
        );
    }
}

#[test]
fn session_claims_limit_sessions_and_the_peer() {
    let c = |sessions: Option<&[&str]>, peer: Option<&str>| Claims {
        streamers: None,
        sessions: sessions.map(|s| s.iter().map(|&x| x.to_owned()).collect()),
        peer: peer.map(str::to_owned),
    };
    assert!(c(None, None).allows(Some("s"), "p"));
    assert!(c(Some(&["s"]), None).allows(Some("s"), "p"));
    assert!(!c(Some(&["s"]), None).allows(Some("t"), "p"));
    assert!(c(Some(&["*"]), None).allows(Some("t"), "p"));
    assert!(!c(Some(&[]), None).allows(Some("s"), "p"));
    assert!(c(None, Some("p")).allows(Some("s"), "p"));
    assert!(!c(None, Some("p")).allows(Some("s"), "q"));
    // /iceServers has no session; the peer claim still binds the id.
    assert!(c(Some(&["s"]), Some("p")).allows(None, "p"));
    assert!(!c(Some(&["s"]), Some("p")).allows(None, "q"));
}
