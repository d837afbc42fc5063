//! Route tests of [`https_redirect`]: the Location built from Host, path and query for every
//! method, the HTTPS port omitted when it is 443, and 400 for each missing or hostile Host.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt;

use super::*;

async fn ask(
    port: u16,
    method: Method,
    uri: &str,
    hosts: &[&[u8]],
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for host in hosts {
        request = request.header(header::HOST, HeaderValue::from_bytes(host).unwrap());
    }
    let response = https_redirect(port)
        .oneshot(request.body(Body::from("body")).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    (status, location, String::from_utf8(body.to_vec()).unwrap())
}

async fn location(port: u16, uri: &str, host: &str) -> String {
    let (status, location, _) = ask(port, Method::GET, uri, &[host.as_bytes()]).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT, "Host {host:?}");
    location.unwrap()
}

#[tokio::test]
async fn every_method_and_path_is_sent_to_the_https_port_with_308() {
    for method in [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::PATCH,
    ] {
        let (status, location, _) = ask(
            8443,
            method.clone(),
            "/api/streamers?x=1&y=%20",
            &[b"example.com:8080"],
        )
        .await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT, "{method}");
        assert_eq!(
            location.as_deref(),
            Some("https://example.com:8443/api/streamers?x=1&y=%20"),
            "{method}"
        );
    }
}

#[tokio::test]
async fn the_port_is_left_out_for_443_and_kept_otherwise() {
    assert_eq!(
        location(443, "/", "example.com").await,
        "https://example.com/"
    );
    assert_eq!(
        location(443, "/a/b", "example.com:80").await,
        "https://example.com/a/b"
    );
    assert_eq!(
        location(8443, "/", "example.com").await,
        "https://example.com:8443/"
    );
}

#[tokio::test]
async fn ip_hosts_keep_their_form_and_ipv6_its_brackets() {
    assert_eq!(
        location(443, "/p", "127.0.0.1:80").await,
        "https://127.0.0.1/p"
    );
    assert_eq!(
        location(8443, "/p", "[::1]:8080").await,
        "https://[::1]:8443/p"
    );
    assert_eq!(
        location(443, "/p", "[2001:db8::1]").await,
        "https://[2001:db8::1]/p"
    );
}

#[tokio::test]
async fn an_absolute_form_request_uses_the_host_header_and_only_the_uri_path() {
    assert_eq!(
        location(443, "http://other.example/x?y", "example.com").await,
        "https://example.com/x?y"
    );
}

#[tokio::test]
async fn a_missing_or_doubled_host_is_refused_with_400() {
    for hosts in [&[][..], &[&b"a.example"[..], &b"b.example"[..]][..]] {
        let (status, location, body) = ask(443, Method::GET, "/", hosts).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{hosts:?}");
        assert_eq!(location, None);
        assert_eq!(body, "missing or invalid Host header\n");
    }
}

#[tokio::test]
async fn hostile_host_values_are_refused_with_400() {
    let hostile: [&[u8]; 20] = [
        b"",
        b"evil.com/",
        b"evil.com/path",
        b"user@evil.com",
        b"user:pass@evil.com",
        b"evil.com\\x",
        b"evil .com",
        b"evil.com\t",
        b":8080",
        b"evil.com:",
        b"evil.com:99999",
        b"evil.com:80a",
        b"a:b:c",
        b"[::1",
        b"[zz::1]",
        b"[::1]x",
        b"[::1]:",
        b"[fe80::1%25eth0]",
        b"evil.com?x",
        b"\xff\xfe",
    ];
    for host in hostile {
        let (status, location, body) = ask(443, Method::GET, "/", &[host]).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "Host {:?}",
            String::from_utf8_lossy(host)
        );
        assert_eq!(location, None);
        assert_eq!(body, "missing or invalid Host header\n");
    }
}
