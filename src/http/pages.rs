//! The built-in pages, embedded in the binary: a player page and a demo streamer page
//! (`src/http/pages/`), served at `/signalling/player` and `/signalling/streamer` always, and
//! at `/` whenever the static files do not answer it (`serve` off, or no `index.html` nor
//! homepage in `http_root`). Also `/signalling/config.json`, which tells the streamer page the
//! streamer port the server bound. Never reads a file at run time.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, LazyLock};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};

use super::static_files::{self, Files};

/// What the pages need to know about the server, set once at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// The streamer port the server bound (not the configured 0), for the streamer page.
    pub streamer_port: u16,
    /// Whether the streamer port speaks TLS (`wss://`).
    pub streamer_tls: bool,
}

/// One embedded file, with what is sent with it.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
}

const PLAYER_HTML: Asset = Asset {
    body: include_bytes!("pages/player.html"),
    content_type: "text/html; charset=utf-8",
};
const STREAMER_HTML: Asset = Asset {
    body: include_bytes!("pages/streamer.html"),
    content_type: "text/html; charset=utf-8",
};
const PLAYER_JS: Asset = Asset {
    body: include_bytes!("pages/player.js"),
    content_type: "text/javascript; charset=utf-8",
};
const STREAMER_JS: Asset = Asset {
    body: include_bytes!("pages/streamer.js"),
    content_type: "text/javascript; charset=utf-8",
};
const INPUT_JS: Asset = Asset {
    body: include_bytes!("pages/input.js"),
    content_type: "text/javascript; charset=utf-8",
};
const PAGES_CSS: Asset = Asset {
    body: include_bytes!("pages/pages.css"),
    content_type: "text/css; charset=utf-8",
};

/// A strong ETag from the bytes: the pages change only with the binary, so a hash of the
/// content is exact. `DefaultHasher` is stable within one build, which is all an ETag needs.
fn etag(body: &[u8]) -> HeaderValue {
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// `If-None-Match` names this ETag (or `*`).
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(Ok(list)) = headers.get(header::IF_NONE_MATCH).map(|v| v.to_str()) else {
        return false;
    };
    let ours = etag.to_str().unwrap_or_default();
    list.trim() == "*"
        || list
            .split(',')
            .any(|tag| tag.trim().trim_start_matches("W/") == ours)
}

/// Sends `body` as `content_type` with its ETag, or 304 when the client has it. Clients
/// revalidate every time (`no-cache`): a new binary's pages show at once, and a 304 is cheap.
fn send(
    headers: &HeaderMap,
    body: Bytes,
    etag: &HeaderValue,
    content_type: &'static str,
) -> Response {
    let common = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if not_modified(headers, etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// A route serving one fixed body; its ETag is computed once, here.
fn fixed(body: Bytes, content_type: &'static str) -> MethodRouter {
    let etag = etag(&body);
    get(move |headers: HeaderMap| async move { send(&headers, body, &etag, content_type) })
}

fn asset(asset: &'static Asset) -> MethodRouter {
    fixed(Bytes::from_static(asset.body), asset.content_type)
}

/// The pages' routes. `get` also answers `HEAD` (axum drops the body).
pub(crate) fn routes(settings: Settings) -> axum::Router {
    axum::Router::new()
        .route("/signalling/player", asset(&PLAYER_HTML))
        .route("/signalling/streamer", asset(&STREAMER_HTML))
        .route("/signalling/player.js", asset(&PLAYER_JS))
        .route("/signalling/streamer.js", asset(&STREAMER_JS))
        .route("/signalling/input.js", asset(&INPUT_JS))
        .route("/signalling/pages.css", asset(&PAGES_CSS))
        .route(
            "/signalling/config.json",
            fixed(Bytes::from(config_json(settings)), "application/json"),
        )
}

/// `{"streamerPort":8888,"streamerTls":false}`.
fn config_json(settings: Settings) -> String {
    serde_json::json!({
        "streamerPort": settings.streamer_port,
        "streamerTls": settings.streamer_tls,
    })
    .to_string()
}

/// The static files, and for a `GET /` they do not answer (404), the player page.
pub(crate) async fn static_files_or_player(files: Arc<Files>, request: Request) -> Response {
    static PLAYER_ETAG: LazyLock<HeaderValue> = LazyLock::new(|| etag(PLAYER_HTML.body));
    let root =
        request.uri().path() == "/" && matches!(*request.method(), Method::GET | Method::HEAD);
    let headers = root.then(|| request.headers().clone());
    let response = static_files::serve(files, request).await;
    match headers {
        Some(headers) if response.status() == StatusCode::NOT_FOUND => send(
            &headers,
            Bytes::from_static(PLAYER_HTML.body),
            &PLAYER_ETAG,
            PLAYER_HTML.content_type,
        ),
        _ => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_strong_and_differ_by_content() {
        let a = etag(b"a");
        assert!(a.to_str().unwrap().starts_with('"'));
        assert_ne!(a, etag(b"b"));
        assert_eq!(a, etag(b"a"));
    }

    #[test]
    fn if_none_match_takes_lists_weak_forms_and_star() {
        let ours = etag(b"page");
        let tag = ours.to_str().unwrap().to_owned();
        for (value, expected) in [
            (tag.clone(), true),
            (format!("W/{tag}"), true),
            (format!("\"x\", {tag}"), true),
            ("*".to_owned(), true),
            ("\"other\"".to_owned(), false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::IF_NONE_MATCH,
                HeaderValue::from_str(&value).unwrap(),
            );
            assert_eq!(not_modified(&headers, &ours), expected, "{value}");
        }
        assert!(!not_modified(&HeaderMap::new(), &ours));
    }

    #[test]
    fn config_json_names_the_bound_port() {
        assert_eq!(
            config_json(Settings {
                streamer_port: 40123,
                streamer_tls: true
            }),
            r#"{"streamerPort":40123,"streamerTls":true}"#
        );
    }
}
