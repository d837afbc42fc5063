//! The WebSocket opening handshake, sans IO: one set of checks (RFC 6455 §4.2.1) for every port
//! and for both ways a request arrives (a connection's first head, parsed here with httparse, or
//! a later request on a kept-alive HTTP connection, parsed by hyper). What comes out is the
//! `101` to write, or a refusal with its status and one-line reason, or "plain HTTP".

use base64::Engine as _;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::auth::Gate;
use crate::router::Opening;

/// The largest request head read before the connection is refused with 431. Browsers send
/// 1 to 4 KiB; 16 KiB leaves room for cookies and proxies' headers.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// The most header lines a head may have (httparse parses into a fixed array).
const MAX_HEADERS: usize = 64;

/// What a port does with a request head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy<'a> {
    /// The port serves plain HTTP besides upgrades (the player ports); the others answer 426.
    pub(crate) serves_http: bool,
    /// Origins allowed to upgrade; empty allows any (and a missing `Origin`).
    pub(crate) origins: &'a [String],
    /// What an upgrade must present (tokens, JWTs); open requires nothing.
    pub(crate) gate: &'a Gate,
}

/// A refused request: its status, the status's reason phrase and a one-line explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) phrase: &'static str,
    pub(crate) reason: &'static str,
    /// One more header line the status calls for (`allow`, `upgrade`, `sec-websocket-version`).
    pub(crate) header: Option<(&'static str, &'static str)>,
}

const fn refusal(status: u16, phrase: &'static str, reason: &'static str) -> Refusal {
    Refusal {
        status,
        phrase,
        reason,
        header: None,
    }
}

pub(crate) const TOO_LARGE: Refusal = refusal(
    431,
    "Request Header Fields Too Large",
    "request head larger than 16384 bytes or 64 header lines",
);
pub(crate) const MALFORMED: Refusal = refusal(400, "Bad Request", "malformed HTTP request head");
pub(crate) const TIMED_OUT: Refusal = refusal(
    408,
    "Request Timeout",
    "request head not complete within handshake_timeout",
);
pub(crate) const NOT_AN_UPGRADE: Refusal = Refusal {
    header: Some(("upgrade", "websocket")),
    ..refusal(
        426,
        "Upgrade Required",
        "this port accepts only WebSocket upgrades",
    )
};
pub(crate) const NOT_GET: Refusal = Refusal {
    header: Some(("allow", "GET")),
    ..refusal(
        405,
        "Method Not Allowed",
        "a WebSocket upgrade must be a GET request",
    )
};
pub(crate) const NOT_HTTP_1_1: Refusal =
    refusal(400, "Bad Request", "a WebSocket upgrade needs HTTP/1.1");
pub(crate) const BAD_VERSION: Refusal = Refusal {
    header: Some(("sec-websocket-version", "13")),
    ..refusal(426, "Upgrade Required", "Sec-WebSocket-Version must be 13")
};
pub(crate) const BAD_KEY: Refusal = refusal(
    400,
    "Bad Request",
    "Sec-WebSocket-Key must be the base64 of 16 bytes",
);
/// The token is missing or not valid; the reason is [`Denied::reason`].
pub(crate) const UNAUTHORIZED: Refusal = Refusal {
    status: 401,
    phrase: "Unauthorized",
    reason: "a valid token is required (?token= or Authorization: Bearer)",
    header: Some(("www-authenticate", "Bearer")),
};
pub(crate) const ORIGIN: Refusal = refusal(
    403,
    "Forbidden",
    "this Origin may not open a player WebSocket",
);

impl Refusal {
    /// The whole response: the status, the extra header, and the reason as a text body.
    pub(crate) fn response(&self) -> String {
        let extra = self
            .header
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .unwrap_or_default();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
             x-content-type-options: nosniff\r\n{extra}connection: close\r\n\r\n{}\n",
            self.status,
            self.phrase,
            self.reason.len() + 1,
            self.reason
        )
    }
}

/// An accepted upgrade: what the `101` carries and what the request's URL asked for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) accept_key: String,
    /// The subprotocol selected: the first one offered (PROTOCOL.md §1.2).
    pub(crate) protocol: Option<String>,
    pub(crate) opening: Opening,
}

impl Accepted {
    /// The `101 Switching Protocols` response.
    pub(crate) fn response(&self) -> String {
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: {}\r\n",
            self.accept_key
        );
        if let Some(protocol) = &self.protocol {
            response.push_str("sec-websocket-protocol: ");
            response.push_str(protocol);
            response.push_str("\r\n");
        }
        response.push_str("\r\n");
        response
    }
}

/// What a request asks for, by the checks of [`check`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Upgrade(Accepted),
    Refuse(Refusal),
    /// A plain HTTP request, on a port that serves HTTP.
    Http,
}

/// The parts of a request the handshake looks at, however it was parsed.
pub(crate) struct Request<'a, H> {
    pub(crate) method: &'a str,
    /// HTTP/1.1 (or later); httparse and hyper both give 1.0 otherwise.
    pub(crate) http_1_1: bool,
    /// The request target's query, if any.
    pub(crate) query: Option<&'a str>,
    /// Every value of a header, by lowercase name.
    pub(crate) headers: H,
}

/// The handshake's checks, in this order: an upgrade at all (else HTTP or 426), GET (405),
/// HTTP/1.1 (400), `Sec-WebSocket-Version: 13` (426), a key that is the base64 of 16 bytes (400),
/// an allowed `Origin` (403), the token when one is required (401).
pub(crate) fn check<'a, H, I>(request: &Request<'a, H>, policy: Policy<'_>) -> Verdict
where
    H: Fn(&'static str) -> I,
    I: Iterator<Item = &'a [u8]>,
{
    let has_token = |name: &'static str, token: &str| {
        (request.headers)(name).any(|v| {
            std::str::from_utf8(v)
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !(has_token("connection", "upgrade") && has_token("upgrade", "websocket")) {
        return if policy.serves_http {
            Verdict::Http
        } else {
            Verdict::Refuse(NOT_AN_UPGRADE)
        };
    }
    if request.method != "GET" {
        return Verdict::Refuse(NOT_GET);
    }
    if !request.http_1_1 {
        return Verdict::Refuse(NOT_HTTP_1_1);
    }
    let one = |name: &'static str| {
        let mut values = (request.headers)(name);
        let first = values.next();
        first.filter(|_| values.next().is_none())
    };
    if one("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13".as_slice()) {
        return Verdict::Refuse(BAD_VERSION);
    }
    let Some(key) = one("sec-websocket-key").map(<[u8]>::trim_ascii) else {
        return Verdict::Refuse(BAD_KEY);
    };
    if !is_valid_key(key) {
        return Verdict::Refuse(BAD_KEY);
    }
    if !origin_allowed(policy.origins, one("origin")) {
        return Verdict::Refuse(ORIGIN);
    }
    let scope = match policy
        .gate
        .admit(request.query, (request.headers)("authorization"))
    {
        Ok(scope) => scope,
        Err(denied) => {
            return Verdict::Refuse(Refusal {
                reason: denied.reason(),
                ..UNAUTHORIZED
            });
        }
    };
    Verdict::Upgrade(Accepted {
        accept_key: derive_accept_key(key),
        protocol: (request.headers)("sec-websocket-protocol")
            .next()
            .and_then(first_subprotocol),
        opening: Opening {
            scope,
            ..opening(request.query)
        },
    })
}

/// RFC 6455 §4.1: the key is a randomly chosen 16-byte value, base64-encoded (24 characters).
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|bytes| bytes.len() == 16)
}

/// Whether `origin` may open a player WebSocket: any when the list is empty or `["*"]`, else an
/// exact match, ASCII case-insensitive (scheme and host are; browsers send them lowercase).
pub(crate) fn origin_allowed(allowed: &[String], origin: Option<&[u8]>) -> bool {
    if allowed.is_empty() || allowed.iter().any(|a| a == "*") {
        return true;
    }
    origin.is_some_and(|origin| {
        allowed
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(origin.trim_ascii()))
    })
}

/// The first subprotocol offered (PROTOCOL.md §1.2), if it is a valid token.
fn first_subprotocol(value: &[u8]) -> Option<String> {
    let first = std::str::from_utf8(value).ok()?.split(',').next()?.trim();
    let token = !first.is_empty()
        && first
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    token.then(|| first.to_owned())
}

/// What a player's WebSocket URL query asks for. Cirrus (UE5.2–5.4) read `OfferToReceive`
/// with `URLSearchParams`: present with any first value but `false` (`?OfferToReceive`,
/// `=true`, `=1`) means the browser makes the offer.
pub(crate) fn opening(query: Option<&str>) -> Opening {
    let offer_to_receive = query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(key, _)| key == "OfferToReceive")
            .is_some_and(|(_, value)| value != "false")
    });
    Opening {
        offer_to_receive,
        ..Opening::default()
    }
}

/// What a connection's first bytes are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// A complete head `len` bytes long, and what to do with it.
    Complete { len: usize, verdict: Verdict },
    /// Refused before the checks: too large or malformed.
    Refuse(Refusal),
}

/// Classifies the bytes read so far; `None` while the head is incomplete.
pub(crate) fn classify(buf: &[u8], policy: Policy<'_>) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Some(Head::Refuse(TOO_LARGE));
        }
        Ok(httparse::Status::Partial) => {
            return (buf.len() >= MAX_HEAD).then_some(Head::Refuse(TOO_LARGE));
        }
        Err(_) => return Some(Head::Refuse(MALFORMED)),
    };
    let path = request.path.unwrap_or("/");
    let fields = &*request.headers;
    let verdict = check(
        &Request {
            method: request.method.unwrap_or(""),
            http_1_1: request.version == Some(1),
            query: path.split_once('?').map(|(_, q)| q),
            headers: |name: &'static str| {
                fields
                    .iter()
                    .filter(move |h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value)
            },
        },
        policy,
    );
    Some(Head::Complete { len, verdict })
}

/// The `X-Forwarded-For` and `Forwarded` header lines of a request head, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Forwarding {
    pub(crate) x_forwarded_for: Vec<Vec<u8>>,
    pub(crate) forwarded: Vec<Vec<u8>>,
}

/// The forwarding headers of a complete head. Parsed again only when `reverse_proxy` is on, so
/// that the common path keeps nothing of them.
pub(crate) fn forwarding(head: &[u8]) -> Forwarding {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    if request.parse(head).is_err() {
        return Forwarding::default();
    }
    let lines = |name: &str| {
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.to_vec())
            .collect()
    };
    Forwarding {
        x_forwarded_for: lines("x-forwarded-for"),
        forwarded: lines("forwarded"),
    }
}

#[cfg(test)]
mod tests;
