//! The opening handshake holds alike on every port (PROTOCOL.md §1.2): each refusal is an HTTP
//! status with a one-line reason, a frame sent with the request is kept, and a frame that
//! breaks RFC 6455 closes the connection with 1002.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{CONFIG, TIMEOUT, TestServer, config};
use crate::transport::read_response;

const UPGRADE: &str = "GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

fn ports(server: &TestServer) -> [(&'static str, SocketAddr); 3] {
    [
        ("streamer", server.streamer),
        ("player", server.player),
        ("SFU", server.sfu),
    ]
}

/// Sends `bytes` and reads the one response, then requires the server to close.
async fn answer(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("send");
    let response = read_response(&mut tcp).await;
    assert_closed(&mut tcp).await;
    response
}

async fn assert_closed(tcp: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection is closed after a refusal: {read:?} {rest:?}"
    );
}

fn status_and_body(response: &str) -> (&str, &str) {
    let status = response.get(9..12).unwrap_or("");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body)
}

#[tokio::test]
async fn each_bad_upgrade_gets_its_status_and_reason_on_every_port() {
    let server = TestServer::start(config()).await;
    let cases = [
        (
            UPGRADE.replacen("GET", "POST", 1),
            "405",
            "a WebSocket upgrade must be a GET request\n",
        ),
        (
            UPGRADE.replace("HTTP/1.1", "HTTP/1.0"),
            "400",
            "a WebSocket upgrade needs HTTP/1.1\n",
        ),
        (
            UPGRADE.replace("Version: 13", "Version: 8"),
            "426",
            "Sec-WebSocket-Version must be 13\n",
        ),
        (
            UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            "400",
            "Sec-WebSocket-Key must be the base64 of 16 bytes\n",
        ),
        (
            UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
            "400",
            "Sec-WebSocket-Key must be the base64 of 16 bytes\n",
        ),
        (
            format!("{UPGRADE}X: {}\r\n", "a".repeat(20_000)),
            "431",
            "request head larger than 16384 bytes or 64 header lines\n",
        ),
    ];
    for (name, addr) in ports(&server) {
        for (head, status, reason) in &cases {
            let response = answer(addr, format!("{head}\r\n").as_bytes()).await;
            assert_eq!(
                status_and_body(&response),
                (*status, *reason),
                "{name} port, {}: {response}",
                head.lines().next().unwrap_or("")
            );
        }
        let response = answer(
            addr,
            format!("{}\r\n", UPGRADE.replace("Version: 13", "Version: 8")).as_bytes(),
        )
        .await;
        assert!(
            response.contains("sec-websocket-version: 13\r\n"),
            "{response}"
        );
    }
}

#[tokio::test]
async fn plain_http_is_426_on_the_websocket_only_ports() {
    let server = TestServer::start(config()).await;
    for addr in [server.streamer, server.sfu] {
        let response = answer(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(
            status_and_body(&response),
            ("426", "this port accepts only WebSocket upgrades\n"),
            "{response}"
        );
        let response = answer(addr, b"\x16\x03\x01\x00\x05hello\r\n\r\n").await;
        assert_eq!(status_and_body(&response).0, "400", "{response}");
    }
}

/// A masked client text frame.
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | u8::try_from(payload.len()).expect("short")];
    frame.extend(mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads one unmasked server frame: (opcode, payload).
async fn read_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let read = async {
        let mut head = [0u8; 2];
        tcp.read_exact(&mut head).await.expect("a frame header");
        let len = match head[1] & 0x7f {
            126 => {
                let mut ext = [0u8; 2];
                tcp.read_exact(&mut ext).await.expect("length");
                usize::from(u16::from_be_bytes(ext))
            }
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await.expect("a payload");
        (head[0] & 0x0f, payload)
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("a frame in time")
}

async fn read_text(tcp: &mut TcpStream) -> String {
    let (opcode, payload) = read_frame(tcp).await;
    assert_eq!(opcode, 1, "a text frame: {payload:?}");
    String::from_utf8(payload).expect("UTF-8")
}

#[tokio::test]
async fn a_frame_sent_with_the_request_is_kept_on_every_port() {
    let server = TestServer::start(config()).await;
    for (name, addr) in ports(&server) {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let mut bytes = format!("{UPGRADE}\r\n").into_bytes();
        bytes.extend(masked_text(br#"{"type":"ping","time":42}"#));
        tcp.write_all(&bytes).await.expect("send");
        let head = read_response(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{name}: {head}");
        assert_eq!(read_text(&mut tcp).await, CONFIG, "{name}");
        let mut seen = Vec::new();
        loop {
            let text = read_text(&mut tcp).await;
            if text.contains(r#""type":"pong""#) {
                assert!(text.contains(r#""time":42"#), "{name}: {text}");
                break;
            }
            seen.push(text);
            assert!(seen.len() < 5, "{name}: no pong, got {seen:?}");
        }
    }
}

#[tokio::test]
async fn a_frame_breaking_rfc_6455_closes_with_1002_on_every_port() {
    let server = TestServer::start(config()).await;
    for (name, addr) in ports(&server) {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(format!("{UPGRADE}\r\n").as_bytes())
            .await
            .expect("send");
        assert!(read_response(&mut tcp).await.starts_with("HTTP/1.1 101"));
        assert_eq!(read_text(&mut tcp).await, CONFIG, "{name}");
        // An unmasked client frame (RFC 6455 §5.1: the server must fail the connection).
        tcp.write_all(b"\x81\x02{}").await.expect("send");
        let close = loop {
            let (opcode, payload) = read_frame(&mut tcp).await;
            if opcode == 8 {
                break payload;
            }
        };
        assert_eq!(
            close.get(..2),
            Some(&1002u16.to_be_bytes()[..]),
            "{name}: {close:?}"
        );
    }
}

#[tokio::test]
async fn a_head_never_finished_is_answered_408_and_silence_is_dropped() {
    let mut cfg = config();
    cfg.handshake_timeout = Duration::from_millis(200);
    let server = TestServer::start(cfg).await;
    for (name, addr) in ports(&server) {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("send");
        let response = read_response(&mut tcp).await;
        assert_eq!(status_and_body(&response).0, "408", "{name}: {response}");
        assert_closed(&mut tcp).await;
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        assert_closed(&mut silent).await;
    }
}

#[tokio::test]
async fn the_origin_list_guards_the_player_port_only() {
    let mut cfg = config();
    cfg.player_allowed_origins = vec!["https://app.example.com".to_owned()];
    let server = TestServer::start(cfg).await;
    let with = |origin: &str| format!("{UPGRADE}Origin: {origin}\r\n\r\n");
    let refused = answer(server.player, with("https://evil.example.com").as_bytes()).await;
    assert_eq!(
        status_and_body(&refused),
        ("403", "this Origin may not open a player WebSocket\n")
    );
    let refused = answer(server.player, format!("{UPGRADE}\r\n").as_bytes()).await;
    assert_eq!(status_and_body(&refused).0, "403", "no Origin: {refused}");
    for addr in [server.player, server.streamer] {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(with("https://app.example.com").as_bytes())
            .await
            .expect("send");
        let head = read_response(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    }
    let mut tcp = TcpStream::connect(server.streamer).await.expect("connect");
    tcp.write_all(with("https://evil.example.com").as_bytes())
        .await
        .expect("send");
    assert!(
        read_response(&mut tcp).await.starts_with("HTTP/1.1 101"),
        "UE is not a browser"
    );
}
