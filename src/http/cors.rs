//! Wilbur's CORS (`--cors`, `--cors_allowed_origins`, `--cors_allowed_methods`,
//! `--cors_allowed_headers`, `--cors_credentials`) as a tower-http `CorsLayer` over every route
//! of the player port except the session API, which keeps its own (`[sessions] cors_origins`).
//! Builds the layer; never sees a request.
//!
//! Wilbur passes these to the `cors` npm package: empty lists mean its defaults, which are any
//! origin (`Access-Control-Allow-Origin: *`), the methods `GET,HEAD,PUT,PATCH,POST,DELETE`, and
//! the request's own `Access-Control-Request-Headers` mirrored back.

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};
use tracing::warn;

/// The `cors` npm package's default methods, which Wilbur keeps when the list is empty.
const DEFAULT_METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::PATCH,
    Method::POST,
    Method::DELETE,
];

/// CORS settings as Wilbur takes them. Empty lists are Wilbur's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    /// `cors`: add CORS headers at all.
    pub enabled: bool,
    /// `cors_allowed_origins`: exact origins (`https://a.example`); empty or `*` is any.
    pub allowed_origins: Vec<String>,
    /// `cors_allowed_methods`: empty is `GET,HEAD,PUT,PATCH,POST,DELETE`.
    pub allowed_methods: Vec<String>,
    /// `cors_allowed_headers`: empty mirrors the request's `Access-Control-Request-Headers`.
    pub allowed_headers: Vec<String>,
    /// `cors_credentials`: `Access-Control-Allow-Credentials: true`, only with listed origins.
    pub credentials: bool,
}

/// A CORS setting that cannot be served; each names its key.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    #[error("cors_allowed_origins: {0:?} is not a valid origin header value")]
    Origin(String),
    #[error("cors_allowed_methods: {0:?} is not an HTTP method")]
    Method(String),
    #[error("cors_allowed_headers: {0:?} is not a header name")]
    Header(String),
    #[error(
        "{key}: `*` cannot be combined with cors_credentials (browsers refuse credentials with a \
         wildcard); list the {what} instead"
    )]
    WildcardWithCredentials {
        key: &'static str,
        what: &'static str,
    },
}

/// Wilbur's `splitCsv`: comma-separated, items trimmed, empty items dropped.
pub fn split_csv(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Cors {
    /// The layer, `None` when CORS is off. With credentials on and any origin allowed, the
    /// credentials header is left out and a warning logged: the `cors` package would send
    /// `Access-Control-Allow-Origin: *` with `Access-Control-Allow-Credentials: true`, which
    /// browsers refuse for credentialed requests and ignore for the others, so leaving it out
    /// changes nothing a browser does. Mirroring the request's origin instead would hand every
    /// website credentialed access, which Wilbur never gave.
    pub(crate) fn layer(&self) -> Result<Option<CorsLayer>, CorsError> {
        if !self.enabled {
            return Ok(None);
        }
        let any_origin =
            self.allowed_origins.is_empty() || self.allowed_origins.iter().any(|o| o == "*");
        let origin = if any_origin {
            AllowOrigin::any()
        } else {
            let list = self
                .allowed_origins
                .iter()
                .map(|o| HeaderValue::from_str(o).map_err(|_| CorsError::Origin(o.clone())))
                .collect::<Result<Vec<_>, _>>()?;
            AllowOrigin::list(list)
        };
        let credentials = self.credentials && !any_origin;
        if self.credentials && any_origin {
            warn!(
                "cors_credentials has no effect while any origin is allowed (browsers refuse \
                 credentials with Access-Control-Allow-Origin: *); list the origins in \
                 cors_allowed_origins to allow credentials"
            );
        }
        let methods = if self.allowed_methods.is_empty() {
            AllowMethods::list(DEFAULT_METHODS)
        } else {
            if credentials && self.allowed_methods.iter().any(|m| m == "*") {
                return Err(CorsError::WildcardWithCredentials {
                    key: "cors_allowed_methods",
                    what: "methods",
                });
            }
            AllowMethods::list(
                self.allowed_methods
                    .iter()
                    .map(|m| {
                        Method::from_bytes(m.as_bytes()).map_err(|_| CorsError::Method(m.clone()))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            )
        };
        let headers = if self.allowed_headers.is_empty() {
            AllowHeaders::mirror_request()
        } else {
            if credentials && self.allowed_headers.iter().any(|h| h == "*") {
                return Err(CorsError::WildcardWithCredentials {
                    key: "cors_allowed_headers",
                    what: "headers",
                });
            }
            AllowHeaders::list(
                self.allowed_headers
                    .iter()
                    .map(|h| {
                        HeaderName::from_bytes(h.as_bytes())
                            .map_err(|_| CorsError::Header(h.clone()))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            )
        };
        Ok(Some(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods(methods)
                .allow_headers(headers)
                .allow_credentials(credentials),
        ))
    }
}
