use std::sync::Arc;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

fn admit(gate: &Gate, query: Option<&str>, authorization: &[&str]) -> Result<Scope, Denied> {
    gate.admit(query, authorization.iter().map(|a| a.as_bytes()))
}

fn jwt(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

fn exp() -> u64 {
    jsonwebtoken::get_current_timestamp() + 600
}

#[test]
fn an_open_gate_admits_everything() {
    let gate = Gate::default();
    assert_eq!(admit(&gate, None, &[]), Ok(Scope::all()));
    assert_eq!(
        admit(&gate, Some("token=x"), &["Bearer y"]),
        Ok(Scope::all())
    );
}

#[test]
fn shared_and_scoped_tokens_grant_their_scope() {
    let gate = Gate {
        token: Some("shared".into()),
        scoped: vec![
            (
                "tenant-a".into(),
                Scope::only(["a1".to_owned(), "a2".to_owned()]),
            ),
            ("tenant-b".into(), Scope::only(["b".to_owned()])),
        ],
        jwt: None,
    };
    assert_eq!(admit(&gate, Some("token=shared"), &[]), Ok(Scope::all()));
    let a = admit(&gate, None, &["Bearer tenant-a"]).expect("tenant a");
    assert!(a.allows("a1") && a.allows("a2") && !a.allows("b"));
    let b = admit(&gate, Some("x=1&token=tenant-b"), &[]).expect("tenant b");
    assert!(b.allows("b") && !b.allows("a1"));
    assert_eq!(admit(&gate, None, &[]), Err(Denied::Missing));
    assert_eq!(admit(&gate, Some("token=tenant"), &[]), Err(Denied::Wrong));
    assert_eq!(admit(&gate, None, &["Basic shared"]), Err(Denied::Missing));
    // A wrong token beside a right one does not spoil it.
    assert_eq!(
        admit(&gate, Some("token=nope"), &["Bearer shared"]),
        Ok(Scope::all())
    );
}

#[test]
fn a_jwt_grants_its_streamers_claim_and_says_why_it_was_refused() {
    let verifier = jwt::Verifier::new("k", std::path::Path::new(""), "", "")
        .expect("load")
        .map(Arc::new);
    let gate = Gate {
        token: Some("shared".into()),
        scoped: Vec::new(),
        jwt: verifier,
    };
    let limited = jwt("k", json!({"exp": exp(), "streamers": ["s1"]}));
    let scope = admit(&gate, Some(&format!("token={limited}")), &[]).expect("valid");
    assert!(scope.allows("s1") && !scope.allows("s2"));
    let all = jwt("k", json!({"exp": exp(), "streamers": ["s1", "*"]}));
    assert_eq!(
        admit(&gate, None, &[&format!("Bearer {all}")]),
        Ok(Scope::all())
    );
    let unlimited = jwt("k", json!({"exp": exp()}));
    assert_eq!(
        admit(&gate, None, &[&format!("Bearer {unlimited}")]),
        Ok(Scope::all())
    );
    let expired = jwt("k", json!({"exp": 1_000_000}));
    assert_eq!(
        admit(&gate, Some(&format!("token={expired}")), &[]),
        Err(Denied::Jwt(jwt::Rejected::Expired))
    );
    let forged = jwt("not-k", json!({"exp": exp()}));
    assert_eq!(
        admit(&gate, None, &[&format!("Bearer {forged}")]),
        Err(Denied::Jwt(jwt::Rejected::BadSignature))
    );
    // The shared token still works beside JWTs.
    assert_eq!(admit(&gate, Some("token=shared"), &[]), Ok(Scope::all()));
}

#[test]
fn scopes_allow_their_ids_and_a_star_allows_all() {
    assert!(Scope::all().allows("anything"));
    assert!(Scope::only(["*".to_owned()]).is_all());
    let s = Scope::only(["a".to_owned()]);
    assert!(s.allows("a") && !s.allows("A") && !s.allows("") && !s.is_all());
    assert!(!Scope::only([]).allows("a"));
}
