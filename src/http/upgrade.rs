//! The player port's direct path for WebSocket upgrades. Every connection's request head is
//! read here first: an upgrade is answered at once and the socket becomes a player connection
//! without passing through hyper (no HTTP dispatcher, no boxed upgraded stream, one task fewer);
//! any other request goes to hyper with the bytes already read put back in front ([`Rewind`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::HeaderValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::listener::first_subprotocol;
use crate::router::Opening;

/// The most header bytes read before the request is left to hyper, which has its own limits.
pub const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed on the direct path; a request with more is left to hyper.
const MAX_HEADERS: usize = 32;

/// What a complete request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// A valid WebSocket upgrade: the response to send, where the head ends, and what the
    /// request's query asked for.
    Upgrade {
        response: String,
        head_len: usize,
        opening: Opening,
    },
    /// An upgrade that cannot be accepted: a 400 with this reason.
    Reject(&'static str),
    /// Anything else, including what does not parse: hyper answers it.
    Other,
}

/// The `X-Forwarded-For` and `Forwarded` header lines of a request head, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forwarding {
    pub x_forwarded_for: Vec<Vec<u8>>,
    pub forwarded: Vec<Vec<u8>>,
}

/// The forwarding headers of a complete head [`classify`] accepted as an upgrade. Parsed again
/// only when `reverse_proxy` is on, so that [`Head`] (kept in every player connection's task)
/// stays as small as it was.
pub fn forwarding(head: &[u8]) -> Forwarding {
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

/// Classifies the bytes read so far; `None` while the head is incomplete.
pub fn classify(buf: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return (buf.len() >= MAX_HEAD).then_some(Head::Other),
        Err(_) => return Some(Head::Other),
    };
    let values = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &'static str, token: &str| {
        values(name).any(|v| {
            std::str::from_utf8(v)
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !(has_token("connection", "upgrade") && has_token("upgrade", "websocket")) {
        return Some(Head::Other);
    }
    if values("sec-websocket-version").next() != Some(b"13".as_slice()) {
        return Some(Head::Reject("Sec-WebSocket-Version must be 13\n"));
    }
    let Some(key) = values("sec-websocket-key").next() else {
        return Some(Head::Reject("missing Sec-WebSocket-Key\n"));
    };
    let protocol = values("sec-websocket-protocol")
        .next()
        .and_then(|v| HeaderValue::from_bytes(v).ok());
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: {}\r\n",
        derive_accept_key(key)
    );
    if let Some(protocol) =
        first_subprotocol(protocol.as_ref()).and_then(|p| p.to_str().ok().map(str::to_owned))
    {
        response.push_str("sec-websocket-protocol: ");
        response.push_str(&protocol);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    let query = request.path.and_then(|p| p.split_once('?')).map(|(_, q)| q);
    Some(Head::Upgrade {
        response,
        head_len,
        opening: opening(query),
    })
}

/// What a player's WebSocket URL query asks for. Cirrus (UE5.2–5.4) read `OfferToReceive`
/// with `URLSearchParams`: present with any first value but `false` (`?OfferToReceive`,
/// `=true`, `=1`) means the browser makes the offer.
pub fn opening(query: Option<&str>) -> Opening {
    let offer_to_receive = query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(key, _)| key == "OfferToReceive")
            .is_some_and(|(_, value)| value != "false")
    });
    Opening {
        offer_to_receive,
        remote: None,
    }
}

/// A 400 for a refused upgrade, closing the connection.
pub fn bad_request(reason: &str) -> String {
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}",
        reason.len()
    )
}

/// Reads into `buf` until the head is complete (or too long to be one we serve directly).
/// `Ok(None)` when the peer closes first.
pub async fn read_head<S>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<Option<Head>>
where
    S: AsyncRead + Unpin,
{
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(1024);
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
        if let Some(head) = classify(buf) {
            return Ok(Some(head));
        }
    }
}

/// A stream that yields `prefix` before reading from `inner` (bytes read ahead, put back).
pub struct Rewind<S> {
    prefix: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            offset: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.offset..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.offset += n;
            if this.offset == this.prefix.len() {
                this.prefix = Vec::new();
                this.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /any/path?x=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    fn upgrade_response(head: &str) -> (String, usize) {
        match classify(head.as_bytes()) {
            Some(Head::Upgrade {
                response, head_len, ..
            }) => (response, head_len),
            other => panic!("expected an upgrade, got {other:?}"),
        }
    }

    #[test]
    fn offer_to_receive_is_read_as_cirrus_read_it() {
        for (query, expected) in [
            (None, false),
            (Some(""), false),
            (Some("x=1"), false),
            (Some("OfferToReceive=true"), true),
            (Some("OfferToReceive"), true),
            (Some("OfferToReceive="), true),
            (Some("a=b&OfferToReceive=1"), true),
            (Some("OfferToReceive=false"), false),
            (Some("OfferToReceive=false&OfferToReceive=true"), false),
            (Some("Offer%54oReceive=true"), true),
            (Some("offertoreceive=true"), false),
        ] {
            assert_eq!(opening(query).offer_to_receive, expected, "query {query:?}");
        }
    }

    #[test]
    fn the_upgrade_carries_the_query_of_its_request_target() {
        let head = "GET /?OfferToReceive=true HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        match classify(head.as_bytes()) {
            Some(Head::Upgrade { opening, .. }) => assert!(opening.offer_to_receive),
            other => panic!("expected an upgrade, got {other:?}"),
        }
        let plain = format!("{UPGRADE}\r\n");
        match classify(plain.as_bytes()) {
            Some(Head::Upgrade { opening, .. }) => assert!(!opening.offer_to_receive),
            other => panic!("expected an upgrade, got {other:?}"),
        }
    }

    #[test]
    fn an_upgrade_is_answered_with_the_accept_key_and_the_head_length() {
        let head = format!("{UPGRADE}\r\n");
        let (response, len) = upgrade_response(&format!("{head}\u{81}\u{1}"));
        assert_eq!(
            len,
            head.len(),
            "bytes after the head belong to the WebSocket"
        );
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        // RFC 6455's example key and its accept value.
        assert!(response.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(response.ends_with("\r\n\r\n"));
        assert!(!response.contains("sec-websocket-protocol"));
    }

    #[test]
    fn forwarding_headers_are_kept_in_order() {
        let head = format!(
            "{UPGRADE}X-Forwarded-For: 1.0.0.1, 1.0.0.2\r\nforwarded: for=1.0.0.9\r\nx-forwarded-for: 1.0.0.3\r\n\r\n"
        );
        assert!(matches!(
            classify(head.as_bytes()),
            Some(Head::Upgrade { .. })
        ));
        assert_eq!(
            forwarding(head.as_bytes()),
            Forwarding {
                x_forwarded_for: vec![b"1.0.0.1, 1.0.0.2".to_vec(), b"1.0.0.3".to_vec()],
                forwarded: vec![b"for=1.0.0.9".to_vec()],
            }
        );
        assert_eq!(
            forwarding(format!("{UPGRADE}\r\n").as_bytes()),
            Forwarding::default()
        );
    }

    #[test]
    fn the_first_offered_subprotocol_is_selected() {
        let head = format!("{UPGRADE}Sec-WebSocket-Protocol: v1.pixelstreaming, other\r\n\r\n");
        let (response, _) = upgrade_response(&head);
        assert!(response.contains("sec-websocket-protocol: v1.pixelstreaming\r\n"));
    }

    #[test]
    fn an_incomplete_head_waits_and_an_overlong_one_goes_to_hyper() {
        assert_eq!(classify(UPGRADE.as_bytes()), None);
        assert_eq!(classify(b"GET / HT"), None);
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(classify(long.as_bytes()), Some(Head::Other));
    }

    #[test]
    fn plain_requests_and_garbage_go_to_hyper() {
        let get = "GET /iceServers HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(classify(get.as_bytes()), Some(Head::Other));
        let only_upgrade_header = "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(classify(only_upgrade_header.as_bytes()), Some(Head::Other));
        assert_eq!(
            classify(b"\x16\x03\x01 not http\r\n\r\n"),
            Some(Head::Other)
        );
    }

    #[test]
    fn upgrades_without_version_13_or_a_key_are_refused() {
        let v8 = UPGRADE.replace("Version: 13", "Version: 8") + "\r\n";
        assert_eq!(
            classify(v8.as_bytes()),
            Some(Head::Reject("Sec-WebSocket-Version must be 13\n"))
        );
        let no_key =
            UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "") + "\r\n";
        assert_eq!(
            classify(no_key.as_bytes()),
            Some(Head::Reject("missing Sec-WebSocket-Key\n"))
        );
    }

    #[tokio::test]
    async fn rewind_reads_the_prefix_then_the_stream() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world")
            .await
            .expect("write");
        drop(a);
        let mut r = Rewind::new(b"hello".to_vec(), b);
        let mut out = String::new();
        r.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "hello world");
    }
}
