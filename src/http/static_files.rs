//! Static files on the player port, as Wilbur's `--serve` (`--http_root`, `--homepage`) and
//! Cirrus's `EnableWebserver`, `HomepageFile` and `AdditionalRoutes` serve them: files under the
//! root, `GET /` the root's `index.html` or else the homepage, then each additional route's
//! folder under its URL prefix. Never lists a directory, never serves a file outside its folder
//! or a dotfile, and answers only `GET` and `HEAD`.
//!
//! tower-http's `ServeDir` reads the files (content types, `Last-Modified` and
//! `If-Modified-Since`, ranges, `.br`/`.gz` variants chosen by `Accept-Encoding`). It sends no
//! `ETag`, so one is derived here from the size and modification time it reports, as Express's
//! `serve-static` does (no file is read to make it), and `If-None-Match` is answered with 304.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};
use tracing::{debug, warn};

use super::RemoteAddr;

/// What the static side serves. Relative folders are relative to the working directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticFiles {
    /// Wilbur's `serve`, Cirrus's `EnableWebserver`: serve `root` and the homepage.
    pub enabled: bool,
    /// Wilbur's `http_root` (default `www`).
    pub root: PathBuf,
    /// Wilbur's `homepage`, Cirrus's `HomepageFile` (default `player.html`): a file under
    /// `root` sent for `GET /` when the root has no `index.html`.
    pub homepage: String,
    /// Cirrus's `AdditionalRoutes`: URL prefix (`/images`) → folder, tried in order after the
    /// root. Served whether or not `enabled` is on, as in Cirrus.
    pub additional_routes: Vec<(String, PathBuf)>,
}

impl StaticFiles {
    /// Warnings about folders that do not exist, for start-up: serving goes on (each request
    /// for a file there is a 404), since Epic's shipped `config.json` names a Windows folder.
    pub(crate) fn startup_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "?".to_owned());
        if self.enabled {
            if !self.root.is_dir() {
                warnings.push(format!(
                    "static files: http_root {:?} is not a folder (relative paths start at the \
                     working directory {cwd:?}); GET / will serve the built-in player page and \
                     every other file request will be answered 404",
                    self.root
                ));
            } else if !self.root.join("index.html").is_file()
                && !self.root.join(&self.homepage).is_file()
            {
                warnings.push(format!(
                    "static files: homepage {:?} is not in http_root {:?}; GET / will serve the built-in player page",
                    self.homepage, self.root
                ));
            }
        }
        for (prefix, folder) in &self.additional_routes {
            if !folder.is_dir() {
                warnings.push(format!(
                    "static files: the folder {folder:?} of additional route {prefix:?} is not a \
                     folder (relative paths start at the working directory {cwd:?}); its requests \
                     will be answered 404"
                ));
            }
        }
        warnings
    }

    /// The handler's state, built once.
    pub(crate) fn service(&self) -> Arc<Files> {
        let dir = |folder: &Path| {
            ServeDir::new(folder)
                .precompressed_br()
                .precompressed_gzip()
        };
        Arc::new(Files {
            root: self.enabled.then(|| dir(&self.root)),
            homepage: self.enabled.then(|| {
                (
                    self.homepage.clone(),
                    ServeFile::new(self.root.join(&self.homepage))
                        .precompressed_br()
                        .precompressed_gzip(),
                )
            }),
            routes: self
                .additional_routes
                .iter()
                .map(|(prefix, folder)| (prefix.trim_end_matches('/').to_owned(), dir(folder)))
                .collect(),
        })
    }
}

/// The built services: `None` where serving is off.
#[derive(Debug)]
pub(crate) struct Files {
    root: Option<ServeDir>,
    homepage: Option<(String, ServeFile)>,
    routes: Vec<(String, ServeDir)>,
}

/// Why a path is refused before any file is looked at.
#[derive(Debug, PartialEq, Eq)]
enum BadPath {
    /// `..` or `.` segments, encoded `/` or `\`, a backslash, NUL, bad percent-encoding: 400.
    Malformed(&'static str),
    /// A segment starting with `.` (`.env`, `.git/`): 404, as Express's static files ignore them.
    Dotfile,
}

/// Checks a request path (still percent-encoded) before it reaches the file system. `ServeDir`
/// refuses `..` itself; this also refuses what it would accept on some systems (a backslash is a
/// separator on Windows) and what a well-behaved client never sends.
fn check_path(path: &str) -> Result<(), BadPath> {
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(BadPath::Malformed("an encoded / or \\"));
    }
    let bytes = path.as_bytes();
    // Every `%` must start a two-digit escape: a stray one is refused, not guessed at.
    for (i, _) in path.match_indices('%') {
        if !bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        {
            return Err(BadPath::Malformed("a bad percent-escape"));
        }
    }
    let decoded = percent_decode(bytes);
    let Ok(decoded) = std::str::from_utf8(&decoded) else {
        return Err(BadPath::Malformed("not UTF-8"));
    };
    if decoded.contains(['\\', '\0']) {
        return Err(BadPath::Malformed("a backslash or NUL"));
    }
    for segment in decoded.split('/') {
        if segment == ".." || segment == "." {
            return Err(BadPath::Malformed("a . or .. segment"));
        }
        if segment.starts_with('.') {
            return Err(BadPath::Dotfile);
        }
    }
    Ok(())
}

/// Percent-decoding of a path already checked for well-formed escapes. By hand: the one crate
/// for it (`percent-encoding`) is not otherwise a dependency and this is a loop.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits are at most 0xff.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(u8::MAX));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The static side's handler: the fallback of the player port's routes.
pub(crate) async fn serve(files: Arc<Files>, request: Request) -> Response {
    let serving = files.root.is_some() || !files.routes.is_empty();
    if !serving || !matches!(*request.method(), Method::GET | Method::HEAD) {
        return super::not_found().await;
    }
    let path = request.uri().path().to_owned();
    match check_path(&path) {
        Ok(()) => {}
        Err(BadPath::Dotfile) => return super::not_found().await,
        Err(BadPath::Malformed(why)) => {
            let client = request.extensions().get::<RemoteAddr>().map(|r| r.0);
            warn!(?client, path, "static file path refused (400): {why}");
            return (StatusCode::BAD_REQUEST, "bad path\n").into_response();
        }
    }
    let (mut parts, _body) = request.into_parts();
    // RFC 9110 §13.2.2: with If-None-Match, If-Modified-Since is ignored; ServeDir would
    // otherwise answer 304 for a file whose ETag no longer matches.
    let if_none_match = parts.headers.remove(header::IF_NONE_MATCH);
    if if_none_match.is_some() {
        parts.headers.remove(header::IF_MODIFIED_SINCE);
    }
    if let Some(root) = &files.root {
        let response = attempt(root, &parts, &path).await;
        if response.status() != StatusCode::NOT_FOUND {
            return finish(response, if_none_match.as_ref());
        }
    }
    for (prefix, dir) in &files.routes {
        let Some(rest) = strip_prefix(&path, prefix) else {
            continue;
        };
        let mut response = attempt(dir, &parts, rest).await;
        if response.status() == StatusCode::NOT_FOUND {
            continue;
        }
        // ServeDir redirects `/dir` to `/dir/` knowing only the path it was given.
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| HeaderValue::from_str(&format!("{prefix}{l}")).ok());
        if let Some(location) = location {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return finish(response, if_none_match.as_ref());
    }
    if let Some((name, homepage)) = files.homepage.as_ref().filter(|_| path == "/") {
        let response = attempt(homepage, &parts, "/").await;
        if response.status() == StatusCode::NOT_FOUND {
            debug!(homepage = name, "GET /: the homepage file is missing");
            return (
                StatusCode::NOT_FOUND,
                format!("Unable to locate file {name}\n"),
            )
                .into_response();
        }
        return finish(response, if_none_match.as_ref());
    }
    super::not_found().await
}

/// `path` under `prefix` (a whole segment: `/images` holds `/images/a.png`, not `/imagesX`),
/// as the path to look up in the route's folder.
fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(if rest.is_empty() { "/" } else { rest })
    } else if prefix.is_empty() {
        // The prefix `/` (trimmed to ``) holds every path.
        Some(path)
    } else {
        None
    }
}

/// Asks `dir` for `path`, with the request's method and headers. The URI is the path alone, so
/// a redirect never points at a host the request named.
async fn attempt<S, B>(dir: &S, parts: &Parts, path: &str) -> Response
where
    S: tower::Service<Request, Response = axum::http::Response<B>, Error = Infallible> + Clone,
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let mut request = Request::new(Body::empty());
    *request.method_mut() = parts.method.clone();
    *request.headers_mut() = parts.headers.clone();
    *request.uri_mut() = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    match dir.clone().oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

/// Adds the validators and caching headers to a file response, or turns it into a 304 when
/// `If-None-Match` names its ETag.
fn finish(mut response: Response, if_none_match: Option<&HeaderValue>) -> Response {
    let status = response.status();
    if !(status.is_success() || status == StatusCode::NOT_MODIFIED) {
        return response;
    }
    let headers = response.headers_mut();
    // Whether a .br or .gz variant was sent depends on Accept-Encoding.
    headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    // Express's default: cache, but revalidate every time (a new build must show at once).
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=0"),
    );
    let Some(etag) = etag(headers) else {
        return response;
    };
    let matched = if_none_match.is_some_and(|v| matches_etag(v, &etag));
    headers.insert(header::ETAG, etag);
    if !matched {
        return response;
    }
    let mut not_modified = StatusCode::NOT_MODIFIED.into_response();
    let keep = [
        header::ETAG,
        header::LAST_MODIFIED,
        header::VARY,
        header::CACHE_CONTROL,
    ];
    for name in keep {
        for value in response.headers().get_all(&name) {
            not_modified.headers_mut().append(&name, value.clone());
        }
    }
    not_modified
}

/// A weak ETag from what ServeDir reports: the file's size (the whole file's, for a range), its
/// modification time and its encoding, `W/"size-mtime[-encoding]"` in hex.
fn etag(headers: &HeaderMap) -> Option<HeaderValue> {
    let modified = headers.get(header::LAST_MODIFIED)?.to_str().ok()?;
    let modified = httpdate::parse_http_date(modified).ok()?;
    let secs = modified.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let size: u64 = match headers.get(header::CONTENT_RANGE) {
        Some(range) => range.to_str().ok()?.rsplit_once('/')?.1.parse().ok()?,
        None => headers
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()?,
    };
    let encoding = match headers.get(header::CONTENT_ENCODING) {
        Some(e) => format!("-{}", e.to_str().ok()?),
        None => String::new(),
    };
    HeaderValue::from_str(&format!("W/\"{size:x}-{secs:x}{encoding}\"")).ok()
}

/// `If-None-Match` against our ETag, by weak comparison (RFC 9110 §13.1.2): `*`, or any listed
/// tag whose opaque part equals ours.
fn matches_etag(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let (Ok(list), Ok(ours)) = (if_none_match.to_str(), etag.to_str()) else {
        return false;
    };
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(ours);
    list.trim() == "*" || list.split(',').any(|tag| opaque(tag) == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_are_refused_before_the_file_system() {
        for path in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/%2e%2E/etc/passwd",
            "/..%2fetc%2fpasswd",
            "/%2fetc%2fpasswd",
            "/..%5c..%5cetc",
            "/..\\..\\etc\\passwd",
            "/a/./b",
            "/a%00.html",
            "/%ff.html",
            "/%zz",
            "/%",
            "/a%2",
        ] {
            assert!(
                matches!(check_path(path), Err(BadPath::Malformed(_))),
                "{path}: {:?}",
                check_path(path)
            );
        }
    }

    #[test]
    fn dotfiles_are_hidden_and_ordinary_paths_pass() {
        for path in ["/.env", "/.git/config", "/a/.hidden/b.js", "/%2eenv"] {
            assert_eq!(check_path(path), Err(BadPath::Dotfile), "{path}");
        }
        for path in [
            "/",
            "/player.html",
            "/a/b/c.js",
            "//etc/passwd",
            "/a..b.txt",
            "/caf%C3%A9.png",
            "/with%20space.css",
        ] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"/a%20b%2Fc"), b"/a b/c");
        assert_eq!(percent_decode(b"%C3%A9"), "\u{e9}".as_bytes());
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert_eq!(strip_prefix("/images/a.png", "/images"), Some("/a.png"));
        assert_eq!(strip_prefix("/images", "/images"), Some("/"));
        assert_eq!(strip_prefix("/imagesX/a.png", "/images"), None);
        assert_eq!(strip_prefix("/a.png", ""), Some("/a.png"));
    }

    #[test]
    fn etag_comparison_is_weak_and_accepts_lists_and_star() {
        let ours = HeaderValue::from_static("W/\"1f-5f5e1\"");
        for (header, expected) in [
            ("W/\"1f-5f5e1\"", true),
            ("\"1f-5f5e1\"", true),
            ("\"x\", W/\"1f-5f5e1\"", true),
            ("*", true),
            ("W/\"20-5f5e1\"", false),
            ("", false),
        ] {
            assert_eq!(
                matches_etag(&HeaderValue::from_static(header), &ours),
                expected,
                "{header}"
            );
        }
    }
}
