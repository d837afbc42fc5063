//! Security headers on every HTTP response of the player port: `X-Content-Type-Options`, a
//! `Content-Security-Policy` of `frame-ancestors` only, and HSTS over TLS. It sets nothing a
//! route already set, and never touches the request.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::error;

#[cfg(test)]
#[path = "headers_tests.rs"]
mod tests;

/// What [`layer`] adds; built from the `hsts_max_age` and `frame_ancestors` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SecurityHeaders {
    /// `Strict-Transport-Security: max-age=N` over TLS; zero sends none.
    pub(crate) hsts_max_age: Duration,
    /// CSP `frame-ancestors` sources (`*` lets any page embed the player); empty sends none.
    pub(crate) frame_ancestors: String,
}

/// `router` with the security headers added to each response that lacks them; HSTS only when
/// the router is served `over_tls` (a browser ignores it over plain HTTP anyway).
pub(crate) fn layer(
    router: axum::Router,
    headers: &SecurityHeaders,
    over_tls: bool,
) -> axum::Router {
    let mut router = add(
        router,
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let sources = headers.frame_ancestors.trim();
    if !sources.is_empty() {
        // The config's validation refuses control characters, the only bytes a header value
        // cannot hold; should one get through, the header is left out rather than the server.
        match HeaderValue::from_str(&format!("frame-ancestors {sources}")) {
            Ok(value) => router = add(router, header::CONTENT_SECURITY_POLICY, value),
            Err(_) => error!(
                frame_ancestors = sources,
                "frame_ancestors is not a valid header value; no Content-Security-Policy is sent"
            ),
        }
    }
    let max_age = headers.hsts_max_age.as_secs();
    if over_tls && max_age > 0 {
        router = add(
            router,
            header::STRICT_TRANSPORT_SECURITY,
            max_age_value(max_age),
        );
    }
    router
}

fn add(router: axum::Router, name: HeaderName, value: HeaderValue) -> axum::Router {
    router.layer(SetResponseHeaderLayer::if_not_present(name, value))
}

fn max_age_value(seconds: u64) -> HeaderValue {
    // Digits and ASCII only: always a valid header value.
    HeaderValue::from_str(&format!("max-age={seconds}"))
        .unwrap_or(HeaderValue::from_static("max-age=0"))
}
