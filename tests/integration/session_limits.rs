//! The session API against hostile clients (issue 10), over real sockets: ids `.` and `..`,
//! one address's share of `max_sessions`, a body trickled a byte at a time, an event stream
//! whose client never reads, and the server's memory (the `signalling` binary's VmHWM from
//! `/proc`) while peers do the worst they can.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use signalling::config::Config;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::support::http::{Api, event};
use crate::support::{self, TIMEOUT, TestServer};

async fn server_with(change: impl FnOnce(&mut Config)) -> (TestServer, Api) {
    let mut config = support::config();
    change(&mut config);
    let server = TestServer::start(config).await;
    let api = Api::new(&server);
    (server, api)
}

/// Sends `request` (which should ask for `connection: close`) on a new connection; the status
/// and the body as JSON (`Null` if it is not JSON).
async fn raw(addr: SocketAddr, request: &str) -> (u16, Value) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    timeout(TIMEOUT, tcp.read_to_end(&mut out))
        .await
        .expect("the answer within the timeout")
        .expect("read");
    parse_response(&out)
}

fn parse_response(bytes: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(bytes);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or(Value::Null, |(_, body)| {
            serde_json::from_str(body).unwrap_or(Value::Null)
        });
    (status, body)
}

#[tokio::test]
async fn ids_dot_and_dot_dot_are_refused_400() {
    let (server, api) = server_with(|_| {}).await;
    api.register("s", "a").await;
    // Written by hand: an HTTP client library resolves dot segments before sending.
    let body = r#"{"target":"..","type":"x"}"#;
    let requests = [
        "POST /register/./a HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".to_owned(),
        "POST /register/../a HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".to_owned(),
        "POST /register/s/. HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".to_owned(),
        "POST /register/s/.. HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".to_owned(),
        "GET /events/s/.. HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".to_owned(),
        "DELETE /register/../a HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".to_owned(),
        "GET /iceServers?peerId=.. HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".to_owned(),
        format!(
            "POST /message/s/a HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    ];
    for request in &requests {
        let (status, body) = raw(server.player, request).await;
        let line = request.lines().next().unwrap_or_default();
        assert_eq!(status, 400, "{line}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("may not be \".\" or \"..\""),
            "{line}: {body}"
        );
    }
    // Nothing was created, and the rest carries on.
    assert_eq!(api.open_events("..", "a", None).await.status(), 404);
    api.register("s", "b").await;
}

/// A client of `server` whose connections come from `ip` (any 127/8 address is this host).
fn api_from(server: &TestServer, ip: Ipv4Addr) -> Api {
    Api {
        base: format!("http://{}", server.player),
        client: reqwest::Client::builder()
            .local_address(IpAddr::V4(ip))
            .build()
            .expect("client"),
    }
}

#[tokio::test]
async fn one_address_cannot_create_more_than_its_share_of_sessions() {
    let (server, _) = server_with(|c| {
        c.sessions.max_sessions = 10;
        c.sessions.max_sessions_per_address = 3;
    })
    .await;
    let greedy = api_from(&server, Ipv4Addr::new(127, 0, 0, 1));
    let other = api_from(&server, Ipv4Addr::new(127, 0, 0, 2));
    for n in 0..3 {
        greedy.register(&format!("g{n}"), "a").await;
    }
    let (status, body) = greedy.try_register("g3", "a").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["limit"], "max_sessions_per_address", "{body}");
    assert_eq!(body["max"], 3, "{body}");
    // Another address has its own share, and may join the greedy one's sessions.
    for n in 0..3 {
        other.register(&format!("o{n}"), "a").await;
    }
    other.register("g0", "b").await;
    greedy.register("o0", "b").await;
    // The share follows the sessions' lifetime: g0 lives on (b is in it) after its creator left…
    assert_eq!(greedy.unregister("g0", "a").await.0, 200);
    assert_eq!(greedy.try_register("g3", "a").await.0, 429);
    // …and frees a place once it is gone.
    assert_eq!(other.unregister("g0", "b").await.0, 200);
    greedy.register("g3", "a").await;
}

#[tokio::test]
async fn a_body_trickled_a_byte_at_a_time_is_cut_with_408() {
    let (server, api) = server_with(|c| {
        c.sessions.body_read_timeout = Duration::from_millis(300);
    })
    .await;
    api.register("s", "a").await;
    let mut tcp = TcpStream::connect(server.player).await.expect("connect");
    tcp.write_all(
        b"POST /message/s/a HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
          content-length: 100000\r\n\r\n{",
    )
    .await
    .expect("head");
    let (mut reader, mut writer) = tcp.split();
    let mut answer = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    let mut sent = 0;
    timeout(TIMEOUT, async {
        loop {
            tokio::select! {
                _ = pace.tick() => {
                    // Pacing the attacker, not synchronising: the answer is what ends the loop.
                    if writer.write_all(b" ").await.is_ok() {
                        sent += 1;
                    }
                }
                read = reader.read_to_end(&mut answer) => {
                    read.expect("read the answer");
                    break;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no answer within {TIMEOUT:?} ({sent} bytes trickled)"));
    let (status, body) = parse_response(&answer);
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["limit"], "body_read_timeout", "{body}");
    // Everything else carries on.
    api.register("s", "b").await;
    api.send("s", "b", "a", "x", json!(1)).await;
}

/// A payload of `len` characters, so that one message is a little under `max_body_bytes`.
fn payload(len: usize) -> Value {
    Value::String("x".repeat(len))
}

/// Opens `GET /events/{session}/{peer}` on a socket with a 4 KiB receive buffer and never reads.
async fn never_reading_stream(addr: SocketAddr, session: &str, peer: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut tcp = socket.connect(addr).await.expect("connect");
    tcp.write_all(format!("GET /events/{session}/{peer} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .await
        .expect("request");
    tcp
}

#[tokio::test]
async fn an_event_stream_whose_client_never_reads_is_closed_after_the_write_timeout() {
    let (server, api) = server_with(|c| {
        c.sessions.stream_write_timeout = Duration::from_millis(500);
        c.sessions.idle_timeout = Duration::from_secs(1);
    })
    .await;
    api.register("s", "watcher").await;
    let mut watcher = api.events("s", "watcher").await;
    api.register("s", "sink").await;
    watcher.expect(event("sink", "new-peer")).await;
    let mut sink = never_reading_stream(server.player, "s", "sink").await;
    api.register("s", "sender").await;
    watcher.expect(event("sender", "new-peer")).await;
    // Until the stream stalls, then until the sink's undelivered events reach its byte budget.
    let mut refused = None;
    for _ in 0..400 {
        let (status, body) = api
            .try_send("s", "sender", "sink", "m", payload(60_000))
            .await;
        if status == 429 {
            refused = Some(body);
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let refused = refused.expect("the sink's byte budget refuses a message");
    assert_eq!(refused["limit"], "max_peer_event_bytes", "{refused}");
    // The stream closes once nothing could be written for 500 ms; then the sink, without a
    // stream, goes idle and is removed after 1 s. (The sender may expire first.)
    loop {
        let (_, data) = watcher.next().await;
        if data == event("sink", "peer-left") {
            break;
        }
        assert_eq!(data, event("sender", "peer-left"));
    }
    // The TCP connection is closed: what the kernel held is readable, then the end.
    let mut rest = Vec::new();
    match timeout(TIMEOUT, sink.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Err(_) => panic!("the sink's connection is still open after {TIMEOUT:?}"),
    }
}

/// The `signalling` binary on loopback ephemeral ports with a `--config` file, so that its
/// memory is its own.
struct ServerProcess {
    child: Child,
    pid: u32,
    player: SocketAddr,
}

impl ServerProcess {
    async fn start(name: &str, toml: &str) -> Self {
        let path = format!("{}/{name}.toml", env!("CARGO_TARGET_TMPDIR"));
        std::fs::write(&path, toml).expect("write the config file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_signalling"))
            .args(["--config", &path, "--bind_address", "127.0.0.1"])
            .args([
                "--streamer_port",
                "0",
                "--player_port",
                "0",
                "--sfu_port",
                "0",
            ])
            .env("RUST_LOG", "warn,signalling::server=info")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the signalling binary");
        let pid = child.id().expect("pid");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let player = loop {
            let line = timeout(TIMEOUT, lines.next_line())
                .await
                .expect("a log line within the timeout")
                .expect("read stderr")
                .expect("the server exited early");
            if let Some((_, addr)) = line.split_once("player port listening on ") {
                break addr.trim().parse().expect("an address");
            }
        };
        // Keep reading, so that the server never waits on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, pid, player }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }

    /// Resets the peak (VmHWM) to the present RSS, and returns that RSS in KiB.
    fn reset_peak(&self) -> u64 {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").expect("clear_refs");
        self.status_kib("VmRSS:")
    }

    fn peak_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn api(&self) -> Api {
        Api {
            base: format!("http://{}", self.player),
            client: reqwest::Client::new(),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

const MIB: u64 = 1024;

/// The budget under test: every session's events together (`max_event_bytes`).
const EVENT_BUDGET_MIB: u64 = 8;

/// What a server costs beyond its event budget in these scenarios, measured: the other
/// allocations of tens of requests in flight (bodies, parsed payloads, SSE frames), the
/// allocator's per-thread arenas, and for never-reading streams what hyper has taken from the
/// body (see the README, "What a client can cost").
const SLACK_MIB: u64 = 12;

const MEMORY_CONFIG: &str = "[sessions]\nmax_event_bytes = 8388608\n";

/// Peak RSS growth since `base`, checked against the budget plus `extra` MiB.
fn assert_within(server: &ServerProcess, base: u64, extra: u64, what: &str) {
    let peak = server.peak_kib();
    let growth = peak.saturating_sub(base);
    let bound = (EVENT_BUDGET_MIB + SLACK_MIB + extra) * MIB;
    eprintln!("{what}: RSS {base} KiB before, peak {peak} KiB: +{growth} KiB (bound {bound} KiB)");
    assert!(
        growth <= bound,
        "{what}: the server grew by {growth} KiB, over {bound} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_within_the_budget_when_sixteen_peers_read_everything() {
    let server = ServerProcess::start("memory-readers", MEMORY_CONFIG).await;
    let api = server.api();
    let peers: Vec<String> = (0..16).map(|n| format!("p{n}")).collect();
    for peer in &peers {
        api.register("big", peer).await;
    }
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let mut readers = Vec::new();
    for (n, peer) in peers.iter().enumerate() {
        let mut events = api.events("big", peer).await;
        let seen = seen_tx.clone();
        readers.push(tokio::spawn(async move {
            loop {
                let (_, data) = events.next().await;
                if data["type"] == "m" {
                    let _ = seen.send(n);
                }
            }
        }));
    }
    // Each round, every peer sends one 60 kB message to the next and it is read before the
    // next round: nothing is ever refused, and every event is delivered.
    let round = |api: Api| {
        let peers = peers.clone();
        async move {
            let sends = (0..peers.len()).map(|n| {
                let (from, to) = (peers[n].clone(), peers[(n + 1) % peers.len()].clone());
                let api = api.clone();
                async move { api.send("big", &from, &to, "m", payload(60_000)).await }
            });
            join_all(sends).await;
        }
    };
    round(api.clone()).await;
    for _ in 0..16 {
        timeout(TIMEOUT, seen_rx.recv()).await.expect("read");
    }
    let base = server.reset_peak();
    for _ in 0..64 {
        round(api.clone()).await;
        for _ in 0..16 {
            timeout(TIMEOUT, seen_rx.recv())
                .await
                .expect("every message is read");
        }
    }
    // 64 × 16 × 60 kB = 59 MiB went through; what is kept for replay stays within the budget.
    assert_within(&server, base, 0, "16 peers reading everything");
    // Stopped before the server is, so that none sees its connection end.
    for reader in readers {
        reader.abort();
        let _ = reader.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_within_the_budget_when_peers_never_open_their_streams() {
    let server = ServerProcess::start("memory-closed", MEMORY_CONFIG).await;
    let api = server.api();
    let peers: Vec<String> = (0..16).map(|n| format!("p{n}")).collect();
    for peer in &peers {
        api.register("big", peer).await;
    }
    api.register("big2", "sender").await;
    let base = server.reset_peak();
    // p0 sends 60 kB messages to the others, none of which ever opens its stream: each
    // keeps at most its own budget, all of them together at most the server's.
    let mut limits = Vec::new();
    for _ in 0..40 {
        let sends = peers[1..].iter().map(|to| {
            let api = api.clone();
            async move { api.try_send("big", "p0", to, "m", payload(60_000)).await }
        });
        for (status, body) in join_all(sends).await {
            if status == 429 {
                limits.push(body["limit"].as_str().unwrap_or_default().to_owned());
            } else {
                assert_eq!(status, 200, "{body}");
            }
        }
    }
    assert_within(&server, base, 0, "600 messages to peers that never read");
    assert!(
        limits.iter().any(|l| l == "max_event_bytes"),
        "the server budget refused messages: {limits:?}"
    );
    // While the budget is full, a bystander's large message is refused as well.
    let (status, body) = api
        .try_send("big2", "sender", "sender", "m", payload(60_000))
        .await;
    assert_eq!((status, &body["limit"]), (429, &json!("max_event_bytes")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_within_the_budget_with_event_streams_that_never_read() {
    let server = ServerProcess::start("memory-stalled", MEMORY_CONFIG).await;
    let api = server.api();
    api.register("s", "sender").await;
    let sinks: Vec<String> = (0..10).map(|n| format!("sink{n}")).collect();
    let mut streams = Vec::new();
    for sink in &sinks {
        api.register("s", sink).await;
        streams.push(never_reading_stream(server.player, "s", sink).await);
    }
    let base = server.reset_peak();
    let mut accepted = 0;
    for _ in 0..80 {
        let sends = sinks.iter().map(|to| {
            let api = api.clone();
            async move { api.try_send("s", "sender", to, "m", payload(60_000)).await }
        });
        for (status, body) in join_all(sends).await {
            match status {
                200 => accepted += 1,
                429 => {}
                _ => panic!("{status} {body}"),
            }
        }
    }
    eprintln!("{accepted} of 800 messages accepted");
    // Each stalled stream also holds what hyper took from its body before the socket filled:
    // at most 64 KiB and one event (README, "What a peer or a client can cost the server").
    assert_within(&server, base, 2, "10 event streams that never read");
    drop(streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_within_the_budget_when_sessions_fill_it() {
    // The table alone: every peer is counted at a fixed cost, which must not be below its real
    // one.
    let server = ServerProcess::start(
        "memory-table",
        "[sessions]\nmax_event_bytes = 8388608\nmax_sessions = 100000\nmax_sessions_per_address = 0\nregistrations_per_minute = 0\n",
    )
    .await;
    let api = server.api();
    let base = server.reset_peak();
    // Two-peer sessions until the budget refuses one, 64 sessions at a time.
    let mut sessions = 0;
    'create: loop {
        let batch = (sessions..sessions + 64).map(|n| {
            let api = api.clone();
            async move {
                let a = api.try_register(&format!("s{n}"), "a").await;
                let b = api.try_register(&format!("s{n}"), "b").await;
                (a, b)
            }
        });
        for ((a, _), (b, body)) in join_all(batch).await {
            if a != 200 || b != 200 {
                assert_eq!(body["limit"], "max_event_bytes", "{body}");
                break 'create;
            }
            sessions += 1;
        }
        assert!(sessions < 100_000, "the budget never refused a session");
    }
    eprintln!("{sessions} two-peer sessions");
    assert_within(&server, base, 0, "sessions filling the budget");
}
