//! Route tests of [`layer`]: each header on a plain and a TLS router, on every response (404s
//! included), and left alone where a route set its own.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use tower::ServiceExt;

use super::*;

fn settings(hsts: u64, frame_ancestors: &str) -> SecurityHeaders {
    SecurityHeaders {
        hsts_max_age: Duration::from_secs(hsts),
        frame_ancestors: frame_ancestors.to_owned(),
    }
}

fn routes() -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { "home" }))
        .route(
            "/own",
            get(|| async {
                (
                    [
                        (header::CONTENT_SECURITY_POLICY, "default-src 'self'"),
                        (header::X_CONTENT_TYPE_OPTIONS, "own"),
                        (header::STRICT_TRANSPORT_SECURITY, "max-age=5"),
                    ],
                    "own",
                )
                    .into_response()
            }),
        )
}

async fn headers(router: axum::Router, path: &str) -> (StatusCode, HeaderMap) {
    let request = Request::builder().uri(path).body(Body::empty()).unwrap();
    let response = router.oneshot(request).await.unwrap();
    (response.status(), response.headers().clone())
}

fn get_header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn plain_http_gets_nosniff_and_frame_ancestors_but_no_hsts() {
    let router = layer(routes(), &settings(31_536_000, "*"), false);
    let (status, headers) = headers(router, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get_header(&headers, &header::X_CONTENT_TYPE_OPTIONS),
        Some("nosniff")
    );
    assert_eq!(
        get_header(&headers, &header::CONTENT_SECURITY_POLICY),
        Some("frame-ancestors *")
    );
    assert_eq!(
        get_header(&headers, &header::STRICT_TRANSPORT_SECURITY),
        None
    );
}

#[tokio::test]
async fn tls_gets_hsts_with_the_configured_max_age() {
    let router = layer(routes(), &settings(31_536_000, "*"), true);
    let (_, headers) = headers(router, "/").await;
    assert_eq!(
        get_header(&headers, &header::STRICT_TRANSPORT_SECURITY),
        Some("max-age=31536000")
    );
    assert_eq!(
        get_header(&headers, &header::X_CONTENT_TYPE_OPTIONS),
        Some("nosniff")
    );
}

#[tokio::test]
async fn a_zero_max_age_sends_no_hsts_even_over_tls() {
    let router = layer(routes(), &settings(0, "*"), true);
    let (_, headers) = headers(router, "/").await;
    assert_eq!(
        get_header(&headers, &header::STRICT_TRANSPORT_SECURITY),
        None
    );
}

#[tokio::test]
async fn an_empty_frame_ancestors_sends_no_content_security_policy() {
    let router = layer(routes(), &settings(60, " "), true);
    let (_, headers) = headers(router, "/").await;
    assert_eq!(get_header(&headers, &header::CONTENT_SECURITY_POLICY), None);
    assert_eq!(
        get_header(&headers, &header::X_CONTENT_TYPE_OPTIONS),
        Some("nosniff")
    );
}

#[tokio::test]
async fn frame_ancestors_sources_are_sent_as_given() {
    let router = layer(
        routes(),
        &settings(0, "'self' https://app.example.com"),
        false,
    );
    let (_, headers) = headers(router, "/").await;
    assert_eq!(
        get_header(&headers, &header::CONTENT_SECURITY_POLICY),
        Some("frame-ancestors 'self' https://app.example.com")
    );
}

#[tokio::test]
async fn every_response_gets_them_a_404_included() {
    let router = layer(routes(), &settings(60, "*"), true);
    let (status, headers) = headers(router, "/missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        get_header(&headers, &header::X_CONTENT_TYPE_OPTIONS),
        Some("nosniff")
    );
    assert_eq!(
        get_header(&headers, &header::CONTENT_SECURITY_POLICY),
        Some("frame-ancestors *")
    );
    assert_eq!(
        get_header(&headers, &header::STRICT_TRANSPORT_SECURITY),
        Some("max-age=60")
    );
}

#[tokio::test]
async fn a_header_a_route_set_itself_is_kept() {
    let router = layer(routes(), &settings(60, "*"), true);
    let (_, headers) = headers(router, "/own").await;
    assert_eq!(
        get_header(&headers, &header::CONTENT_SECURITY_POLICY),
        Some("default-src 'self'")
    );
    assert_eq!(
        get_header(&headers, &header::X_CONTENT_TYPE_OPTIONS),
        Some("own")
    );
    assert_eq!(
        get_header(&headers, &header::STRICT_TRANSPORT_SECURITY),
        Some("max-age=5")
    );
    assert_eq!(
        headers
            .get_all(header::CONTENT_SECURITY_POLICY)
            .iter()
            .count(),
        1
    );
}
