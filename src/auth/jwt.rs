//! Signed, expiring JWTs (`jwt_secret` for HS256, `jwt_public_key` for RS256 or ES256), checked
//! by `jsonwebtoken`: the signature, `exp` (required), `nbf`, and `aud`/`iss` when set.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// What a valid token grants. Every claim is optional; a missing one limits nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Claims {
    /// The streamer ids a player may see and subscribe to; `"*"` is every one.
    pub(crate) streamers: Option<Vec<String>>,
    /// The sessions of the session API a peer may register in; `"*"` is every one.
    pub(crate) sessions: Option<Vec<String>>,
    /// The one peer id a session-API peer may register and act as.
    pub(crate) peer: Option<String>,
}

impl Claims {
    /// Whether the claims let a session-API peer act as `peer` in `session` (`None`: no
    /// session, `/iceServers`). A missing claim limits nothing.
    pub(crate) fn allows(&self, session: Option<&str>, peer: &str) -> bool {
        let session_ok = match (&self.sessions, session) {
            (Some(allowed), Some(session)) => allowed.iter().any(|s| s == "*" || s == session),
            _ => true,
        };
        session_ok && self.peer.as_deref().is_none_or(|p| p == peer)
    }
}

/// The keys tokens are verified with, and what else they must carry.
pub(crate) struct Verifier {
    /// HS256 with `jwt_secret`.
    secret: Option<DecodingKey>,
    /// RS256 (an RSA key) or ES256 (a P-256 key) with `jwt_public_key`.
    public: Option<(Algorithm, DecodingKey)>,
    audience: Option<String>,
    issuer: Option<String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public", &self.public.as_ref().map(|(alg, _)| alg))
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// Why a token was not accepted, for the log (never the token itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    Expired,
    NotYetValid,
    BadSignature,
    WrongAudience,
    WrongIssuer,
    /// Signed with an algorithm no configured key is for (`none` among them).
    Algorithm,
    Malformed,
}

impl Rejected {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Expired => "the JWT has expired",
            Self::NotYetValid => "the JWT is not valid yet (nbf)",
            Self::BadSignature => "the JWT's signature does not verify",
            Self::WrongAudience => "the JWT's aud is not jwt_audience",
            Self::WrongIssuer => "the JWT's iss is not jwt_issuer",
            Self::Algorithm => "the JWT is signed with an algorithm no configured key is for",
            Self::Malformed => "the token is not a well-formed JWT with an exp claim",
        }
    }
}

impl Verifier {
    /// `None` when neither a secret nor a public key is set. `public_key` is a PEM file.
    pub(crate) fn new(
        secret: &str,
        public_key: &Path,
        audience: &str,
        issuer: &str,
    ) -> Result<Option<Self>, String> {
        let secret = (!secret.is_empty()).then(|| DecodingKey::from_secret(secret.as_bytes()));
        let public = if public_key.as_os_str().is_empty() {
            None
        } else {
            let pem = std::fs::read(public_key).map_err(|e| {
                format!("jwt_public_key: cannot read {}: {e}", public_key.display())
            })?;
            Some(public_key_of(&pem).ok_or_else(|| {
                format!(
                    "jwt_public_key: {} holds no RSA or EC (P-256) public key in PEM",
                    public_key.display()
                )
            })?)
        };
        if secret.is_none() && public.is_none() {
            return Ok(None);
        }
        let text = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        Ok(Some(Self {
            secret,
            public,
            audience: text(audience),
            issuer: text(issuer),
        }))
    }

    /// The claims of `token` if it verifies.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, Rejected> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejected::Malformed)?;
        let key = match header.alg {
            Algorithm::HS256 => self.secret.as_ref(),
            alg => self
                .public
                .as_ref()
                .filter(|(expected, _)| *expected == alg)
                .map(|(_, key)| key),
        }
        .ok_or(Rejected::Algorithm)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // jsonwebtoken checks aud and iss only when a token has them: a required one must
        // also be a required claim, or a token without it passes.
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => Rejected::Expired,
                ErrorKind::ImmatureSignature => Rejected::NotYetValid,
                ErrorKind::InvalidSignature => Rejected::BadSignature,
                ErrorKind::InvalidAudience => Rejected::WrongAudience,
                ErrorKind::InvalidIssuer => Rejected::WrongIssuer,
                ErrorKind::InvalidAlgorithm => Rejected::Algorithm,
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Rejected::WrongAudience,
                ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Rejected::WrongIssuer,
                _ => Rejected::Malformed,
            })
    }
}

/// Seconds of clock difference allowed on `exp` and `nbf`.
pub(crate) const LEEWAY_SECS: u64 = 30;

/// An RSA key is for RS256, a P-256 key for ES256 and a P-384 key for ES384; anything else is
/// refused at start.
fn public_key_of(pem: &[u8]) -> Option<(Algorithm, DecodingKey)> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Some((Algorithm::RS256, key));
    }
    let key = DecodingKey::from_ec_pem(pem).ok()?;
    // jsonwebtoken does not say the curve; the key's DER names it by OID.
    let der = pem_body(pem)?;
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    if has(P256_OID) {
        Some((Algorithm::ES256, key))
    } else if has(P384_OID) {
        Some((Algorithm::ES384, key))
    } else {
        None
    }
}

/// The DER OIDs (tag and length included) of the curves P-256 and P-384.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// The base64 between a PEM file's first BEGIN and END lines, decoded.
fn pem_body(pem: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
