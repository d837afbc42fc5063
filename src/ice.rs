//! ICE servers for peers, from `[ice]`: the one `iceServers` entry `GET /iceServers` returns and
//! every `config` message carries, with static or TURN REST credentials (coturn's
//! `use-auth-secret`): username `<expiry unix time>:<id>`, credential
//! base64(HMAC-SHA1(secret, username)). Pure functions of the time passed in, except
//! [`LiveIce`], which reads the wall clock for the router.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;

use crate::config::IceConfig;
use crate::router::{CredentialLifetime, IceSource};

/// How TURN credentials are made.
#[derive(Clone, PartialEq, Eq)]
enum TurnAuth {
    /// No TURN: STUN only.
    None,
    Static {
        username: String,
        credential: String,
    },
    /// Time-limited credentials minted with this shared secret.
    Secret(String),
}

impl fmt::Debug for TurnAuth {
    // Secrets and passwords stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Static { username, .. } => write!(f, "Static {{ username: {username:?}, .. }}"),
            Self::Secret(_) => f.write_str("Secret(..)"),
        }
    }
}

/// Seconds a streamer's or an SFU's time-limited TURN credential is good for: 10 years, as
/// Epic's servers give them, since they get `config` once and may stay for months.
pub(crate) const LONG_LIFETIME_SECS: u64 = 10 * 365 * 24 * 60 * 60;

/// The configured ICE servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ice {
    urls: Vec<String>,
    auth: TurnAuth,
    lifetime_secs: u64,
}

/// One `RTCIceServer` entry. `credentials` repeats `credential` under the name the original
/// design of the session API used; `ttl` is how long the credential is good for, in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

impl Ice {
    pub fn new(config: &IceConfig) -> Self {
        let auth = if config.turn_urls.is_empty() {
            TurnAuth::None
        } else if !config.turn_secret.is_empty() {
            TurnAuth::Secret(config.turn_secret.clone())
        } else {
            TurnAuth::Static {
                username: config.turn_username.clone(),
                credential: config.turn_credential.clone(),
            }
        };
        let urls = config
            .stun_urls
            .iter()
            .chain(if auth == TurnAuth::None {
                &[][..]
            } else {
                &config.turn_urls[..]
            })
            .cloned()
            .collect();
        Self {
            urls,
            auth,
            lifetime_secs: config.credential_lifetime.as_secs().max(1),
        }
    }

    /// No STUN and no TURN configured.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The entry for the peer (or player) known as `id`, at `now_unix` seconds, its
    /// credential good for `credential_lifetime`.
    pub fn server(&self, id: &str, now_unix: u64) -> IceServer {
        self.server_for(id, now_unix, self.lifetime_secs)
    }

    /// The entry for `id` with a credential good for `lifetime_secs`.
    fn server_for(&self, id: &str, now_unix: u64, lifetime_secs: u64) -> IceServer {
        let (username, credential) = match &self.auth {
            TurnAuth::None => {
                return IceServer {
                    urls: self.urls.clone(),
                    username: None,
                    credential: None,
                    credentials: None,
                    ttl: None,
                };
            }
            TurnAuth::Static {
                username,
                credential,
            } => (username.clone(), credential.clone()),
            TurnAuth::Secret(secret) => {
                let username = turn_rest_username(now_unix + lifetime_secs, id);
                let credential = turn_rest_credential(secret, &username);
                (username, credential)
            }
        };
        IceServer {
            urls: self.urls.clone(),
            username: Some(username),
            credentials: Some(credential.clone()),
            credential: Some(credential),
            ttl: Some(lifetime_secs),
        }
    }
}

/// `<expiry unix time>:<id>`, as coturn's `use-auth-secret` expects.
pub fn turn_rest_username(expiry_unix: u64, id: &str) -> String {
    format!("{expiry_unix}:{id}")
}

/// base64(HMAC-SHA1(secret, username)).
pub fn turn_rest_credential(secret: &str, username: &str) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Seconds since the Unix epoch by the wall clock (TURN servers compare expiry with theirs).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The router's [`IceSource`]: the configured servers with credentials minted now.
#[derive(Debug)]
pub struct LiveIce(pub Arc<Ice>);

impl IceSource for LiveIce {
    fn ice_server(&self, id: &str, lifetime: CredentialLifetime) -> serde_json::Value {
        let server = match lifetime {
            CredentialLifetime::Player => self.0.server(id, unix_now()),
            CredentialLifetime::Long => self.0.server_for(id, unix_now(), LONG_LIFETIME_SECS),
        };
        serde_json::to_value(server).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> IceConfig {
        crate::config::Config::from_toml_str(text).unwrap().ice
    }

    #[test]
    fn turn_rest_credential_matches_the_published_construction() {
        // Computed independently: printf '%s' 1700000000:alice |
        //   openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(
            turn_rest_credential("secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
    }

    #[test]
    fn secret_mints_credentials_per_id_and_time() {
        let ice = Ice::new(&config(
            "[ice]\nstun_urls = [\"stun:s:3478\"]\nturn_urls = [\"turn:t:3478\"]\nturn_secret = \"secret\"\ncredential_lifetime = 600",
        ));
        let server = ice.server("alice", 1_699_999_400);
        assert_eq!(server.urls, vec!["stun:s:3478", "turn:t:3478"]);
        assert_eq!(server.username.as_deref(), Some("1700000000:alice"));
        assert_eq!(
            server.credential.as_deref(),
            Some("d8soP47RbdIKLDUOpnJPVQyq5Ts=")
        );
        assert_eq!(server.credentials, server.credential);
        assert_eq!(server.ttl, Some(600));
        assert_ne!(
            ice.server("bob", 1_699_999_400).credential,
            server.credential
        );
        let json = serde_json::to_value(&server).unwrap();
        assert_eq!(
            json.as_object().unwrap().keys().collect::<Vec<_>>(),
            vec!["credential", "credentials", "ttl", "urls", "username"]
        );
    }

    #[test]
    fn streamers_and_sfus_get_ten_year_credentials_and_players_credential_lifetime() {
        let ice = Arc::new(Ice::new(&config(
            "[ice]\nturn_urls = [\"turn:t:3478\"]\nturn_secret = \"secret\"\ncredential_lifetime = 600",
        )));
        let live = LiveIce(ice.clone());
        for (lifetime, secs) in [
            (CredentialLifetime::Player, 600),
            (CredentialLifetime::Long, 315_360_000),
        ] {
            let before = unix_now();
            let entry = live.ice_server("S", lifetime);
            let after = unix_now();
            assert_eq!(entry["ttl"], secs, "{lifetime:?}");
            let username = entry["username"].as_str().unwrap();
            let (expiry, id) = username.split_once(':').unwrap();
            let expiry: u64 = expiry.parse().unwrap();
            assert_eq!(id, "S");
            assert!(
                (before + secs..=after + secs).contains(&expiry),
                "{lifetime:?} {expiry}"
            );
            // The credential is the TURN REST one for that username, whatever its lifetime.
            assert_eq!(
                entry["credential"],
                turn_rest_credential("secret", username)
            );
        }
    }

    #[test]
    fn static_credentials_and_stun_only() {
        let ice = Ice::new(&config(
            "[ice]\nturn_urls = [\"turns:t:5349\"]\nturn_username = \"u\"\nturn_credential = \"p\"",
        ));
        let server = ice.server("x", 0);
        assert_eq!(server.username.as_deref(), Some("u"));
        assert_eq!(server.credential.as_deref(), Some("p"));
        assert_eq!(server.ttl, Some(86_400));

        let stun = Ice::new(&config("[ice]\nstun_urls = [\"stun:s:1\"]"));
        assert_eq!(
            serde_json::to_string(&stun.server("x", 0)).unwrap(),
            r#"{"urls":["stun:s:1"]}"#
        );
        assert!(Ice::new(&config("")).is_empty());
        assert!(
            !format!("{ice:?}").contains("\"p\""),
            "no password in Debug"
        );
    }
}
