//! Route tests of the player port's plain-HTTP side: the whole [`app`] (upgrade middleware,
//! session API, health, CORS, static files) called with `oneshot`, no socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::Response;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::*;
use crate::config::Config;
use crate::ice::Ice;
use crate::router::RouterConfig;
use crate::sessions::{self, Limits};

/// A folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "signalling-web-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `parent/www` with the frontend's usual files, and `parent/secret.txt` outside it.
fn site_dir() -> (TempDir, PathBuf) {
    let dir = TempDir::new();
    dir.write("secret.txt", b"SECRET outside the root");
    dir.write("www/player.html", b"<html>player</html>");
    dir.write("www/app.js", b"console.log('identity');");
    dir.write("www/app.js.br", b"BROTLI BYTES");
    dir.write("www/app.js.gz", b"GZIP BYTES");
    dir.write("www/style.css", b"body{}");
    dir.write("www/module.wasm", b"\0asm\x01\0\0\0");
    dir.write("www/logo.png", b"\x89PNG\r\n\x1a\n");
    dir.write("www/data.json", b"{\"a\":1}");
    dir.write("www/.env", b"TOKEN=dotfile");
    dir.write("www/sub/inner.txt", b"inner");
    let root = dir.path().join("www");
    (dir, root)
}

fn serving(root: &Path) -> Web {
    Web {
        static_files: StaticFiles {
            enabled: true,
            root: root.to_owned(),
            homepage: "player.html".to_owned(),
            additional_routes: Vec::new(),
        },
        ..Web::default()
    }
}

struct TestApp {
    app: axum::Router,
    shutdown: CancellationToken,
}

impl TestApp {
    fn new(web: &Web) -> Self {
        Self::with(web, &Config::default())
    }

    fn with(web: &Web, config: &Config) -> Self {
        let shutdown = CancellationToken::new();
        let (_router, _router_task) = crate::router_task::spawn(
            RouterConfig::default(),
            config.player_protocol_ping,
            config.overflow_timeout,
            shutdown.clone(),
        );
        let s = &config.sessions;
        let (sessions, _sessions_task) = sessions::task::spawn(
            Limits {
                max_sessions: s.max_sessions,
                max_sessions_per_address: s.max_sessions_per_address,
                max_peers_per_session: s.max_peers_per_session,
                max_queued_events: s.max_queued_events,
                max_peer_event_bytes: s.max_peer_event_bytes,
                max_event_bytes: s.max_event_bytes,
                stream_window_bytes: sessions::STREAM_WINDOW_BYTES,
                idle_timeout_ms: 0,
            },
            shutdown.clone(),
        );
        let api = api::Api {
            sessions,
            ice: Arc::new(Ice::new(&config.ice)),
            settings: Arc::new(config.sessions.clone()),
            auth: Default::default(),
        };
        let site = web.build().expect("valid web settings");
        Self {
            app: app(shutdown.clone(), api, None, &site),
            shutdown,
        }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response: Response = self.app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, body.to_vec())
    }

    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        self.request(Method::GET, uri, headers).await
    }

    async fn request(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// Every value of `name`, comma-joined lists split, lowercased.
fn header_tokens(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect()
}

// --- static files ---

#[tokio::test]
async fn files_are_served_with_their_content_types() {
    let (_dir, root) = site_dir();
    let app = TestApp::new(&serving(&root));
    for (path, content_type, body) in [
        (
            "/player.html",
            "text/html",
            b"<html>player</html>".as_slice(),
        ),
        ("/app.js", "text/javascript", b"console.log('identity');"),
        ("/style.css", "text/css", b"body{}"),
        ("/module.wasm", "application/wasm", b"\0asm\x01\0\0\0"),
        ("/logo.png", "image/png", b"\x89PNG\r\n\x1a\n"),
        ("/data.json", "application/json", b"{\"a\":1}"),
        ("/sub/inner.txt", "text/plain", b"inner"),
    ] {
        let (status, headers, got) = app.get(path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let ct = header(&headers, "content-type").unwrap();
        assert!(ct.starts_with(content_type), "{path}: {ct}");
        assert_eq!(got, body, "{path}");
        assert!(
            header(&headers, "etag").unwrap().starts_with("W/\""),
            "{path}"
        );
        assert!(header(&headers, "last-modified").is_some(), "{path}");
    }
}

#[tokio::test]
async fn the_homepage_at_slash_and_index_html_first() {
    let (dir, root) = site_dir();
    let app = TestApp::new(&serving(&root));
    let (status, headers, body) = app.get("/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"<html>player</html>");
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(header(&headers, "etag").is_some());
    // Express's static files come first: the root's index.html wins over the homepage.
    dir.write("www/index.html", b"<html>index</html>");
    let (status, _, body) = app.get("/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"<html>index</html>");
}

/// What only the built-in player page holds.
const BUILT_IN_PLAYER: &str = "<script src=\"/signalling/player.js\"></script>";

fn is_built_in_player(body: &[u8]) -> bool {
    String::from_utf8_lossy(body).contains(BUILT_IN_PLAYER)
}

#[tokio::test]
async fn a_missing_homepage_gives_the_built_in_player_at_the_root() {
    let (_dir, root) = site_dir();
    let mut web = serving(&root);
    web.static_files.homepage = "custom.html".to_owned();
    let app = TestApp::new(&web);
    let (status, headers, body) = app.get("/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(is_built_in_player(&body));
    // Other missing files stay 404.
    let (status, _, _) = app.get("/custom.html", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_homepage_in_http_root_keeps_the_root() {
    let (_dir, root) = site_dir();
    let app = TestApp::new(&serving(&root));
    let (status, _, body) = app.get("/", &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"<html>player</html>"[..])
    );
    // The built-in pages stay at their own paths.
    let (status, _, body) = app.get("/signalling/player", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(is_built_in_player(&body));
}

#[tokio::test]
async fn built_in_pages_are_served_with_types_etags_and_head() {
    let app = TestApp::new(&Web {
        pages: pages::Settings {
            streamer_port: 40123,
            streamer_tls: false,
        },
        ..Web::default()
    });
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", BUILT_IN_PLAYER),
        (
            "/signalling/player",
            "text/html; charset=utf-8",
            BUILT_IN_PLAYER,
        ),
        (
            "/signalling/streamer",
            "text/html; charset=utf-8",
            "<script src=\"/signalling/streamer.js\"></script>",
        ),
        (
            "/signalling/player.js",
            "text/javascript; charset=utf-8",
            "listStreamers",
        ),
        (
            "/signalling/streamer.js",
            "text/javascript; charset=utf-8",
            "endpointId",
        ),
        (
            "/signalling/input.js",
            "text/javascript; charset=utf-8",
            "MouseDown",
        ),
        ("/signalling/pages.css", "text/css; charset=utf-8", "body"),
        (
            "/signalling/config.json",
            "application/json",
            r#"{"streamerPort":40123,"streamerTls":false}"#,
        ),
    ] {
        let (status, headers, body) = app.get(path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(
            header(&headers, "content-type"),
            Some(content_type),
            "{path}"
        );
        assert!(String::from_utf8_lossy(&body).contains(needle), "{path}");
        assert_eq!(
            header(&headers, "cache-control"),
            Some("no-cache"),
            "{path}"
        );
        let etag = header(&headers, "etag").expect("an ETag").to_owned();
        assert!(etag.starts_with('"'), "{path}: a strong ETag, got {etag}");

        let (status, head_headers, head_body) = app.request(Method::HEAD, path, &[]).await;
        assert_eq!(status, StatusCode::OK, "HEAD {path}");
        assert!(head_body.is_empty(), "HEAD {path}");
        assert_eq!(
            header(&head_headers, "etag"),
            Some(etag.as_str()),
            "HEAD {path}"
        );

        let (status, headers, body) = app.get(path, &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(body.is_empty(), "{path}");
        assert_eq!(header(&headers, "etag"), Some(etag.as_str()), "{path}");
        let (status, _, _) = app.get(path, &[("if-none-match", "\"stale\"")]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let (status, _, _) = app.request(Method::POST, "/signalling/player", &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = app.request(Method::POST, "/", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = app.get("/signalling/nope.js", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn missing_files_dotfiles_and_other_methods_are_404() {
    let (_dir, root) = site_dir();
    let app = TestApp::new(&serving(&root));
    for path in [
        "/nope.html",
        "/sub/nope",
        "/.env",
        "/%2eenv",
        "/sub/../.env",
    ] {
        let (status, _, body) = app.get(path, &[]).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
            "{path}: {status}"
        );
        assert!(
            !String::from_utf8_lossy(&body).contains("dotfile"),
            "{path}"
        );
    }
    let (status, _, _) = app.get("/.env", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let (status, _, body) = app.request(method.clone(), "/player.html", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
        assert!(!body.starts_with(b"<html>"), "{method}");
    }
}

#[tokio::test]
async fn traversal_in_every_form_is_refused() {
    let (_dir, root) = site_dir();
    let app = TestApp::new(&serving(&root));
    for path in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/..%2fsecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/..%5Csecret.txt",
        "/%2fetc%2fpasswd",
        "/secret.txt%00.html",
    ] {
        let (status, _, body) = app.get(path, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(!String::from_utf8_lossy(&body).contains("SECRET"), "{path}");
    }
    // An absolute path is a path under the root: nothing there.
    for path in ["//etc/passwd", "///secret.txt"] {
        let (status, _, body) = app.get(path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!String::from_utf8_lossy(&body).contains("SECRET"), "{path}");
    }
    // A backslash cannot be written in a URI by the http crate; on the wire hyper takes it,
    // and the check refuses it (the unit test of check_path covers it).
    assert!(
        "/..\\secret.txt".parse::<axum::http::Uri>().is_err() || {
            let (status, _, _) = app.get("/..\\secret.txt", &[]).await;
            status == StatusCode::BAD_REQUEST
        }
    );
}

#[tokio::test]
async fn directories_are_never_listed() {
    let (_dir, root) = site_dir();
    let app = TestApp::new(&serving(&root));
    let (status, _, body) = app.get("/sub/", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!String::from_utf8_lossy(&body).contains("inner"));
    // Without the slash, a redirect to it (as Express does), never a listing.
    let (status, headers, body) = app.get("/sub", &[]).await;
    assert!(status.is_redirection(), "{status}");
    assert_eq!(header(&headers, "location"), Some("/sub/"));
    assert!(!String::from_utf8_lossy(&body).contains("inner"));
}

#[tokio::test]
async fn precompressed_variants_follow_accept_encoding() {
    let (_dir, root) = site_dir();
    let app = TestApp::new(&serving(&root));
    let mut etags = Vec::new();
    for (accept, encoding, body) in [
        (None, None, b"console.log('identity');".as_slice()),
        (Some("gzip"), Some("gzip"), b"GZIP BYTES"),
        (Some("br"), Some("br"), b"BROTLI BYTES"),
        (Some("gzip, deflate, br"), Some("br"), b"BROTLI BYTES"),
        (Some("br;q=0.1, gzip;q=0.9"), Some("gzip"), b"GZIP BYTES"),
        (Some("identity"), None, b"console.log('identity');"),
    ] {
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("accept-encoding", a)).into_iter().collect();
        let (status, got_headers, got) = app.get("/app.js", &headers).await;
        assert_eq!(status, StatusCode::OK, "{accept:?}");
        assert_eq!(
            header(&got_headers, "content-encoding"),
            encoding,
            "{accept:?}"
        );
        assert_eq!(got, body, "{accept:?}");
        assert!(
            header(&got_headers, "content-type")
                .unwrap()
                .starts_with("text/javascript"),
            "the original's type, {accept:?}"
        );
        assert!(
            header_tokens(&got_headers, "vary").contains(&"accept-encoding".to_owned()),
            "{accept:?}"
        );
        etags.push((encoding, header(&got_headers, "etag").unwrap().to_owned()));
    }
    // Each encoding has its own ETag, so a cache never revalidates one with another.
    let identity = &etags[0].1;
    let gzip = &etags[1].1;
    let br = &etags[2].1;
    assert!(
        identity != gzip && gzip != br && identity != br,
        "{etags:?}"
    );
}

#[tokio::test]
async fn a_variant_of_the_same_size_and_time_has_its_own_etag() {
    let (dir, root) = site_dir();
    let same_time =
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    for name in ["www/same.css", "www/same.css.gz"] {
        let path = dir.write(name, b"16 bytes of css.");
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(same_time)
            .unwrap();
    }
    let app = TestApp::new(&serving(&root));
    let (_, plain, _) = app.get("/same.css", &[]).await;
    let (_, gzip, _) = app.get("/same.css", &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&gzip, "content-encoding"), Some("gzip"));
    assert_eq!(
        header(&plain, "last-modified"),
        header(&gzip, "last-modified")
    );
    assert_ne!(header(&plain, "etag"), header(&gzip, "etag"));
}

#[tokio::test]
async fn etag_revalidation_is_304() {
    let (dir, root) = site_dir();
    let app = TestApp::new(&serving(&root));
    let (_, headers, _) = app.get("/app.js", &[]).await;
    let etag = header(&headers, "etag").unwrap().to_owned();
    let last_modified = header(&headers, "last-modified").unwrap().to_owned();

    let (status, got, body) = app.get("/app.js", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(header(&got, "etag"), Some(etag.as_str()));
    assert_eq!(header(&got, "last-modified"), Some(last_modified.as_str()));
    assert!(header_tokens(&got, "vary").contains(&"accept-encoding".to_owned()));

    let list = format!("\"other\", {etag}");
    let (status, _, _) = app.get("/app.js", &[("if-none-match", &list)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED, "one of a list");
    let (status, _, _) = app.get("/app.js", &[("if-none-match", "*")]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED, "*");

    // A stale ETag gets the file, even with an If-Modified-Since that alone would be a 304.
    let (status, _, body) = app
        .get(
            "/app.js",
            &[
                ("if-none-match", "W/\"0-0\""),
                ("if-modified-since", &last_modified),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"console.log('identity');");

    // The identity ETag does not validate the br variant.
    let (status, _, body) = app
        .get(
            "/app.js",
            &[("if-none-match", &etag), ("accept-encoding", "br")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"BROTLI BYTES");

    // A changed file (another size) has another ETag.
    dir.write("www/app.js", b"console.log('a new build');");
    let (status, got, _) = app.get("/app.js", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(header(&got, "etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn a_range_has_the_whole_files_etag() {
    let (_dir, root) = site_dir();
    let app = TestApp::new(&serving(&root));
    let (_, whole, _) = app.get("/app.js", &[]).await;
    let (status, part, body) = app.get("/app.js", &[("range", "bytes=0-6")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, b"console");
    assert_eq!(header(&part, "etag"), header(&whole, "etag"));
}

#[tokio::test]
async fn if_modified_since_is_304() {
    let (_dir, root) = site_dir();
    let app = TestApp::new(&serving(&root));
    let (_, headers, _) = app.get("/style.css", &[]).await;
    let last_modified = header(&headers, "last-modified").unwrap().to_owned();
    let (status, _, body) = app
        .get("/style.css", &[("if-modified-since", &last_modified)])
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    let (status, _, _) = app
        .get(
            "/style.css",
            &[("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn head_has_the_headers_and_no_body() {
    let (_dir, root) = site_dir();
    let app = TestApp::new(&serving(&root));
    let (_, get_headers, _) = app.get("/player.html", &[]).await;
    for uri in ["/player.html", "/"] {
        let (status, headers, body) = app.request(Method::HEAD, uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(body.is_empty(), "{uri}");
        assert_eq!(header(&headers, "content-length"), Some("19"), "{uri}");
        assert!(
            header(&headers, "content-type")
                .unwrap()
                .starts_with("text/html")
        );
        assert_eq!(
            header(&headers, "etag"),
            header(&get_headers, "etag"),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn serving_off_serves_only_the_built_in_pages() {
    let (_dir, root) = site_dir();
    let mut web = serving(&root);
    web.static_files.enabled = false;
    let app = TestApp::new(&web);
    // With nothing served, a bad path is just another 404 (and no warning); `/` is the
    // built-in player page.
    let (status, _, body) = app.get("/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(is_built_in_player(&body));
    for path in ["/player.html", "/app.js", "/../secret.txt", "/%2e%2e/x"] {
        let (status, _, body) = app.get(path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body, b"not found\n", "{path}");
    }
}

#[tokio::test]
async fn additional_routes_serve_their_folder_under_their_prefix() {
    let (dir, root) = site_dir();
    dir.write("images/a.png", b"\x89PNG image a");
    dir.write("images/deep/b.png", b"\x89PNG image b");
    dir.write("www/only-root.txt", b"root");
    let mut web = serving(&root);
    web.static_files.additional_routes = vec![("/images".to_owned(), dir.path().join("images"))];
    let app = TestApp::new(&web);
    let (status, headers, body) = app.get("/images/a.png", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"\x89PNG image a");
    assert_eq!(header(&headers, "content-type"), Some("image/png"));
    assert!(header(&headers, "etag").is_some());
    let (status, _, body) = app.get("/images/deep/b.png", &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"\x89PNG image b".as_slice())
    );
    // Whole segments only, and the prefix does not reach the root's files.
    for path in ["/imagesa.png", "/images/only-root.txt", "/a.png"] {
        let (status, _, _) = app.get(path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    // A directory's redirect keeps the prefix.
    let (status, headers, _) = app.get("/images/deep", &[]).await;
    assert!(status.is_redirection());
    assert_eq!(header(&headers, "location"), Some("/images/deep/"));
    // Traversal out of the route's folder is refused like the root's.
    let (status, _, body) = app.get("/images/../secret.txt", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!String::from_utf8_lossy(&body).contains("SECRET"));

    // As in Cirrus, additional routes work with the web server itself off.
    web.static_files.enabled = false;
    let app = TestApp::new(&web);
    let (status, _, _) = app.get("/images/a.png", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = app.get("/player.html", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn startup_warns_about_a_missing_root_and_homepage() {
    let (_dir, root) = site_dir();
    let mut files = serving(&root).static_files;
    assert!(files.startup_warnings().is_empty());
    files.homepage = "missing.html".to_owned();
    let warnings = files.startup_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("missing.html"), "{warnings:?}");
    files.root = PathBuf::from("D:\\PixelStreamingInfrastructure\\SignallingWebServer\\www");
    let warnings = files.startup_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("http_root \"D:\\\\PixelStreamingInfrastructure")
            && warnings[0].contains("is not a folder"),
        "names the folder: {warnings:?}"
    );
    files.additional_routes = vec![("/x".to_owned(), PathBuf::from("no/such/folder"))];
    assert_eq!(files.startup_warnings().len(), 2);
    files.enabled = false;
    let warnings = files.startup_warnings();
    assert_eq!(warnings.len(), 1, "only the route's folder: {warnings:?}");
}

// --- health ---

#[tokio::test]
async fn healthz_and_readyz() {
    let app = TestApp::new(&Web::default());
    let (status, headers, body) = app.get("/healthz", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, br#"{"status":"ok"}"#);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let (status, _, body) = app.get("/readyz", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, br#"{"status":"ready"}"#);
    let (status, _, _) = app.request(Method::HEAD, "/readyz", &[]).await;
    assert_eq!(status, StatusCode::OK);

    app.shutdown.cancel();
    let (status, _, body) = app.get("/readyz", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, br#"{"status":"shutting down"}"#);
    let (status, _, _) = app.get("/healthz", &[]).await;
    assert_eq!(status, StatusCode::OK, "alive while shutting down");
}

// --- CORS ---

fn cors(change: impl FnOnce(&mut Cors)) -> Web {
    let mut cors = Cors {
        enabled: true,
        ..Cors::default()
    };
    change(&mut cors);
    Web {
        cors,
        ..Web::default()
    }
}

const ORIGIN: (&str, &str) = ("origin", "https://dashboard.example");

fn preflight<'a>(method: &'a str, headers: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ORIGIN,
        ("access-control-request-method", method),
        ("access-control-request-headers", headers),
    ]
}

#[tokio::test]
async fn cors_off_adds_nothing() {
    let app = TestApp::new(&Web::default());
    let (status, headers, _) = app.get("/healthz", &[ORIGIN]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "access-control-allow-origin").is_none());
    let (status, headers, _) = app
        .request(Method::OPTIONS, "/healthz", &preflight("GET", "x-a"))
        .await;
    assert_ne!(status, StatusCode::OK);
    assert!(header(&headers, "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn cors_defaults_are_the_cors_packages() {
    let (_dir, root) = site_dir();
    let mut web = cors(|_| {});
    web.static_files = serving(&root).static_files;
    let app = TestApp::new(&web);
    // Simple requests: every route but the session API's, 404s included.
    for path in ["/healthz", "/readyz", "/player.html", "/", "/nope"] {
        let (_, headers, _) = app.get(path, &[ORIGIN]).await;
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
        assert!(header(&headers, "access-control-allow-credentials").is_none());
    }
    // A preflight: the default methods, the requested headers mirrored.
    for path in ["/healthz", "/api/status", "/player.html"] {
        let (status, headers, _) = app
            .request(
                Method::OPTIONS,
                path,
                &preflight("PUT", "x-custom, content-type"),
            )
            .await;
        assert!(status.is_success(), "{path}: {status}");
        assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
        assert_eq!(
            header_tokens(&headers, "access-control-allow-methods"),
            ["get", "head", "put", "patch", "post", "delete"],
            "{path}"
        );
        assert_eq!(
            header(&headers, "access-control-allow-headers"),
            Some("x-custom, content-type"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn cors_allowed_origins_reflect_only_listed_ones() {
    let app = TestApp::new(&cors(|c| {
        c.allowed_origins = vec![
            "https://dashboard.example".to_owned(),
            "https://other.example".to_owned(),
        ];
    }));
    let (_, headers, _) = app.get("/healthz", &[ORIGIN]).await;
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://dashboard.example")
    );
    assert!(header_tokens(&headers, "vary").contains(&"origin".to_owned()));
    let (_, headers, _) = app
        .get("/healthz", &[("origin", "https://evil.example")])
        .await;
    assert!(header(&headers, "access-control-allow-origin").is_none());
    let (_, headers, _) = app
        .request(
            Method::OPTIONS,
            "/healthz",
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
    assert!(header(&headers, "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn cors_allowed_methods_and_headers_replace_the_defaults() {
    let app = TestApp::new(&cors(|c| {
        c.allowed_methods = vec!["GET".to_owned(), "POST".to_owned()];
        c.allowed_headers = vec!["X-Token".to_owned(), "Content-Type".to_owned()];
    }));
    let (_, headers, _) = app
        .request(Method::OPTIONS, "/healthz", &preflight("POST", "x-other"))
        .await;
    assert_eq!(
        header_tokens(&headers, "access-control-allow-methods"),
        ["get", "post"]
    );
    assert_eq!(
        header_tokens(&headers, "access-control-allow-headers"),
        ["x-token", "content-type"]
    );
}

#[tokio::test]
async fn cors_credentials_with_listed_origins() {
    let app = TestApp::new(&cors(|c| {
        c.allowed_origins = vec!["https://dashboard.example".to_owned()];
        c.credentials = true;
    }));
    for method in [Method::GET, Method::OPTIONS] {
        let (_, headers, _) = app
            .request(method.clone(), "/healthz", &preflight("GET", "x-a"))
            .await;
        assert_eq!(
            header(&headers, "access-control-allow-credentials"),
            Some("true"),
            "{method}"
        );
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some("https://dashboard.example")
        );
    }
}

#[tokio::test]
async fn cors_credentials_with_any_origin_is_left_out() {
    for origins in [vec![], vec!["*".to_owned()]] {
        let app = TestApp::new(&cors(|c| {
            c.allowed_origins = origins.clone();
            c.credentials = true;
        }));
        let (_, headers, _) = app.get("/healthz", &[ORIGIN]).await;
        assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
        assert!(
            header(&headers, "access-control-allow-credentials").is_none(),
            "{origins:?}"
        );
    }
}

#[test]
fn cors_settings_that_cannot_be_served_are_errors_not_panics() {
    let layer = |change: fn(&mut Cors)| {
        let mut c = Cors {
            enabled: true,
            ..Cors::default()
        };
        change(&mut c);
        c.layer().map(|_| ())
    };
    assert_eq!(
        layer(|c| c.allowed_origins = vec!["https://a.example\n".to_owned()]),
        Err(CorsError::Origin("https://a.example\n".to_owned()))
    );
    assert_eq!(
        layer(|c| c.allowed_methods = vec!["GE T".to_owned()]),
        Err(CorsError::Method("GE T".to_owned()))
    );
    assert_eq!(
        layer(|c| c.allowed_headers = vec!["x:y".to_owned()]),
        Err(CorsError::Header("x:y".to_owned()))
    );
    assert!(matches!(
        layer(|c| {
            c.allowed_origins = vec!["https://a.example".to_owned()];
            c.credentials = true;
            c.allowed_headers = vec!["*".to_owned()];
        }),
        Err(CorsError::WildcardWithCredentials {
            key: "cors_allowed_headers",
            ..
        })
    ));
    assert!(matches!(
        layer(|c| {
            c.allowed_origins = vec!["https://a.example".to_owned()];
            c.credentials = true;
            c.allowed_methods = vec!["*".to_owned()];
        }),
        Err(CorsError::WildcardWithCredentials {
            key: "cors_allowed_methods",
            ..
        })
    ));
    // Wildcards without credentials are fine (the cors package sends them as given).
    assert!(
        layer(|c| {
            c.allowed_methods = vec!["*".to_owned()];
            c.allowed_headers = vec!["*".to_owned()];
        })
        .is_ok()
    );
    assert_eq!(
        cors::split_csv(" https://a.example, ,https://b.example ,"),
        ["https://a.example", "https://b.example"]
    );
}

/// Every combination of the options builds a layer that tower-http accepts (its invalid
/// combinations panic when the layer is applied).
#[tokio::test]
async fn every_cors_combination_serves() {
    for origins in [
        vec![],
        vec!["*".to_owned()],
        vec!["https://a.example".to_owned()],
    ] {
        for methods in [vec![], vec!["*".to_owned()], vec!["GET".to_owned()]] {
            for headers in [vec![], vec!["*".to_owned()], vec!["x-a".to_owned()]] {
                for credentials in [false, true] {
                    let c = Cors {
                        enabled: true,
                        allowed_origins: origins.clone(),
                        allowed_methods: methods.clone(),
                        allowed_headers: headers.clone(),
                        credentials,
                    };
                    if c.layer().is_err() {
                        continue;
                    }
                    let app = TestApp::new(&Web {
                        cors: c,
                        ..Web::default()
                    });
                    let (status, _, _) = app.get("/healthz", &[ORIGIN]).await;
                    assert_eq!(status, StatusCode::OK);
                }
            }
        }
    }
}

#[tokio::test]
async fn session_routes_keep_their_own_cors() {
    let mut config = Config::default();
    config.sessions.cors_origins = vec!["https://sessions.example".to_owned()];
    let web = cors(|c| c.allowed_origins = vec!["https://dashboard.example".to_owned()]);
    let app = TestApp::with(&web, &config);
    // The session API answers its own origins only, with one Access-Control-Allow-Origin.
    let (status, headers, _) = app
        .get("/iceServers", &[("origin", "https://sessions.example")])
        .await;
    assert_eq!(status, StatusCode::OK);
    let values: Vec<_> = headers
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(values, ["https://sessions.example"]);
    let (_, headers, _) = app.get("/iceServers", &[ORIGIN]).await;
    assert!(header(&headers, "access-control-allow-origin").is_none());
    let (_, headers, _) = app
        .request(
            Method::OPTIONS,
            "/register/s/p",
            &[
                ("origin", "https://sessions.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://sessions.example")
    );
    // Every other route has Wilbur's, and not the session API's.
    let (_, headers, _) = app.get("/healthz", &[ORIGIN]).await;
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://dashboard.example")
    );
    let (_, headers, _) = app
        .get("/healthz", &[("origin", "https://sessions.example")])
        .await;
    assert!(header(&headers, "access-control-allow-origin").is_none());

    // With Wilbur's off, the session API's origins do not leak onto other routes.
    let app = TestApp::with(&Web::default(), &config);
    let (_, headers, _) = app
        .get("/healthz", &[("origin", "https://sessions.example")])
        .await;
    assert!(header(&headers, "access-control-allow-origin").is_none());
}
