//! Credentials: how a request presents a token, the constant-time comparison every shared-token
//! check uses (`player_token`, `streamer_token`, `sfu_token`, `streamer_tokens`, `admin_token`),
//! and the [`Gate`] each WebSocket port checks upgrades with, which also takes JWTs
//! ([`jwt`]) and says what the token allows (a [`Scope`] of streamer ids).

pub(crate) mod jwt;

use std::borrow::Cow;
use std::sync::Arc;

use subtle::ConstantTimeEq as _;

use crate::config::Config;
use crate::router::Scope;

/// What a port requires of an upgrade. Open (the default) requires nothing.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// A shared token that allows everything (`player_token`, `streamer_token`, `sfu_token`).
    pub(crate) token: Option<Box<str>>,
    /// Tokens that allow only some streamer ids (`streamer_tokens`).
    pub(crate) scoped: Vec<(Box<str>, Scope)>,
    /// JWTs (players), whose `streamers` claim is the scope.
    pub(crate) jwt: Option<Arc<jwt::Verifier>>,
}

/// A port's [`Gate`], replaced whole when the settings are reloaded.
pub(crate) type LiveGate = Arc<arc_swap::ArcSwap<Gate>>;

/// The gates of the three kinds of WebSocket port. The player gate's JWT verifier is also the
/// session API's.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gates {
    pub(crate) player: LiveGate,
    pub(crate) streamer: LiveGate,
    pub(crate) sfu: LiveGate,
}

impl Gates {
    /// The gates `config` asks for; an unreadable or unusable `jwt_public_key` is an error.
    pub(crate) fn load(config: &Config) -> Result<Self, String> {
        let gates = Self::default();
        gates.install(Self::prepare(config)?);
        Ok(gates)
    }

    /// The player, streamer and SFU gates `config` asks for, not yet in force (a reload
    /// prepares them before it announces itself, so a bad key file changes nothing).
    pub(crate) fn prepare(config: &Config) -> Result<[Gate; 3], String> {
        let shared = |token: &str| (!token.is_empty()).then(|| Box::from(token));
        let jwt = jwt::Verifier::new(
            &config.jwt_secret,
            &config.jwt_public_key,
            &config.jwt_audience,
            &config.jwt_issuer,
        )?
        .map(Arc::new);
        let scoped = config
            .streamer_tokens
            .iter()
            .map(|(token, ids)| (Box::from(token.as_str()), Scope::only(ids.iter().cloned())))
            .collect();
        Ok([
            Gate {
                token: shared(&config.player_token),
                scoped: Vec::new(),
                jwt,
            },
            Gate {
                token: shared(&config.streamer_token),
                scoped,
                jwt: None,
            },
            Gate {
                token: shared(&config.sfu_token),
                ..Gate::default()
            },
        ])
    }

    /// Puts prepared gates in force: the next handshake on each port checks against them.
    pub(crate) fn install(&self, [player, streamer, sfu]: [Gate; 3]) {
        self.player.store(Arc::new(player));
        self.streamer.store(Arc::new(streamer));
        self.sfu.store(Arc::new(sfu));
    }
}

/// Why an upgrade was refused, for the one log line (never the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No `?token=` and no `Authorization: Bearer`.
    Missing,
    /// A token that matches no shared token and is no JWT.
    Wrong,
    /// A JWT that does not verify, and why.
    Jwt(jwt::Rejected),
}

impl Denied {
    /// One line for the refusal's body and the log.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Missing => "a token is required (?token= or Authorization: Bearer)",
            Self::Wrong => "the token is not valid here",
            Self::Jwt(why) => why.reason(),
        }
    }
}

/// A gate that requires nothing.
#[cfg(test)]
pub(crate) static OPEN: Gate = Gate {
    token: None,
    scoped: Vec::new(),
    jwt: None,
};

impl Gate {
    pub(crate) fn is_open(&self) -> bool {
        self.token.is_none() && self.scoped.is_empty() && self.jwt.is_none()
    }

    /// What the request's tokens allow, or why none does. An open gate allows everything.
    pub(crate) fn admit<'a>(
        &self,
        query: Option<&'a str>,
        authorization: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Scope, Denied> {
        if self.is_open() {
            return Ok(Scope::all());
        }
        let mut denied = Denied::Missing;
        for candidate in presented(query, authorization) {
            match self.grant(candidate.as_bytes()) {
                Ok(scope) => return Ok(scope),
                // A JWT's own reason says more than "wrong"; keep the first such reason.
                Err(why) if denied == Denied::Missing || matches!(why, Denied::Jwt(_)) => {
                    denied = why;
                }
                Err(_) => {}
            }
        }
        Err(denied)
    }

    fn grant(&self, candidate: &[u8]) -> Result<Scope, Denied> {
        if self
            .token
            .as_deref()
            .is_some_and(|t| same_token(candidate, t))
        {
            return Ok(Scope::all());
        }
        // Every scoped token is compared, so the time taken does not say which one matched.
        let mut granted = None;
        for (token, scope) in &self.scoped {
            if same_token(candidate, token) {
                granted = Some(scope.clone());
            }
        }
        if let Some(scope) = granted {
            return Ok(scope);
        }
        match (&self.jwt, std::str::from_utf8(candidate)) {
            (Some(verifier), Ok(text)) if looks_like_jwt(text) => verifier
                .verify(text)
                .map(|claims| claims.streamers.map_or_else(Scope::all, Scope::only))
                .map_err(Denied::Jwt),
            _ => Err(Denied::Wrong),
        }
    }
}

/// Three base64url parts joined by dots.
pub(crate) fn looks_like_jwt(text: &str) -> bool {
    text.split('.').count() == 3
}

/// The tokens a request presents: each `token` query parameter (URL-decoded), then each
/// `Authorization: Bearer` value (the scheme in any case, the value trimmed).
pub(crate) fn presented<'a>(
    query: Option<&'a str>,
    authorization: impl Iterator<Item = &'a [u8]>,
) -> impl Iterator<Item = Cow<'a, str>> {
    let in_query = query
        .into_iter()
        .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
        .filter(|(name, _)| name == "token")
        .map(|(_, value)| value);
    let bearer = authorization.filter_map(|value| {
        let scheme = value.get(..7)?;
        let token = std::str::from_utf8(value[7..].trim_ascii()).ok()?;
        scheme
            .eq_ignore_ascii_case(b"bearer ")
            .then_some(Cow::Borrowed(token))
    });
    in_query.chain(bearer)
}

/// Whether `given` is `expected`, in time that tells nothing of how much of a guess was right
/// (only, as with any such comparison, whether its length was).
pub(crate) fn same_token(given: &[u8], expected: &str) -> bool {
    bool::from(given.ct_eq(expected.as_bytes()))
}

/// Whether one of the `Authorization` header values is `Bearer <expected>` (the scheme in any
/// case, RFC 7235).
pub(crate) fn bearer_presents<'a>(
    mut authorization: impl Iterator<Item = &'a [u8]>,
    expected: &str,
) -> bool {
    authorization.any(|value| {
        value
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            && same_token(value[7..].trim_ascii(), expected)
    })
}

#[cfg(test)]
mod tests;
