//! The plain player port's answer when `https_redirect` is on: every HTTP request is sent to the
//! same host, path and query on the HTTPS port with `308 Permanent Redirect` (which keeps the
//! method and body, unlike 301). WebSocket upgrades never reach it: the accept path serves them
//! first.

use std::net::Ipv6Addr;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[cfg(test)]
#[path = "redirect_tests.rs"]
mod tests;

/// A router answering any method on any path with a redirect to `https://HOST[:https_port]`.
pub(crate) fn https_redirect(https_port: u16) -> axum::Router {
    axum::Router::new()
        .fallback(move |request: Request| async move { redirect(https_port, &request) })
}

fn redirect(https_port: u16, request: &Request) -> Response {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return bad_host();
    };
    let Some(host) = host_without_port(host.as_bytes()) else {
        return bad_host();
    };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    match HeaderValue::try_from(location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => bad_host(),
    }
}

fn bad_host() -> Response {
    (StatusCode::BAD_REQUEST, "missing or invalid Host header\n").into_response()
}

/// The host of a `Host` value (`host`, `host:port`, `[v6]`, `[v6]:port`), brackets kept; `None`
/// unless it is a bare authority. Written by hand because `http::uri::Authority` also takes
/// userinfo (`user@host`) and percent escapes, which must never reach a `Location`.
fn host_without_port(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<Ipv6Addr>().ok()?;
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':')?)
        };
        (&value[..inside.len() + 2], port)
    } else {
        match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        port.parse::<u16>().ok()?;
    }
    let name_ok = host.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    name_ok.then_some(host)
}
