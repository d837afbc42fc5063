//! The `signalling` binary itself: start-up logs every bound address, SIGTERM closes every
//! connection with 1012 and exits 0, and a bad configuration stops start-up naming the key.

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

use crate::support::{CONFIG, TIMEOUT, TestPeer};

pub(crate) fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signalling"));
    command.env_remove("RUST_LOG").kill_on_drop(true);
    command
}

/// The address from a line like "… player port listening on 127.0.0.1:41234".
pub(crate) fn listening_addr(line: &str, role: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once(&format!("{role} port listening on "))?;
    rest.trim().parse().ok()
}

pub(crate) type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStderr>>;

/// Starts the binary on loopback ephemeral ports; returns it, its stderr lines, and the
/// streamer and player addresses it logged.
pub(crate) async fn start(
    extra: &[&str],
) -> (tokio::process::Child, Lines, SocketAddr, SocketAddr) {
    let (child, lines, streamer, player, _) = start_logged(extra).await;
    (child, lines, streamer, player)
}

/// [`start`], also returning the log lines up to the last address.
pub(crate) async fn start_logged(
    extra: &[&str],
) -> (
    tokio::process::Child,
    Lines,
    SocketAddr,
    SocketAddr,
    Vec<String>,
) {
    start_logged_in(None, extra).await
}

/// [`start_logged`] with `dir` as the working directory (where relative paths lead).
pub(crate) async fn start_logged_in(
    dir: Option<&std::path::Path>,
    extra: &[&str],
) -> (
    tokio::process::Child,
    Lines,
    SocketAddr,
    SocketAddr,
    Vec<String>,
) {
    let mut command = binary();
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = command
        .args(LOOPBACK)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the signalling binary");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let (mut streamer, mut player, mut sfu) = (None, None, None);
    let mut seen = Vec::new();
    while streamer.is_none() || player.is_none() || sfu.is_none() {
        let line = next_line(&mut lines).await;
        streamer = streamer.or(listening_addr(&line, "streamer"));
        player = player.or(listening_addr(&line, "player"));
        sfu = sfu.or(listening_addr(&line, "SFU"));
        seen.push(line);
    }
    (
        child,
        lines,
        streamer.expect("streamer"),
        player.expect("player"),
        seen,
    )
}

/// Sends SIGTERM to the server process.
pub(crate) fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("child pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Flags that put every listener on a loopback ephemeral port, with no playerCount and no
/// per-player message rate (tests flood on purpose) nor first-message deadline; a later flag
/// overrides them.
pub(crate) const LOOPBACK: [&str; 14] = [
    "--bind_address",
    "127.0.0.1",
    "--streamer_port",
    "0",
    "--player_port",
    "0",
    "--sfu_port",
    "0",
    "--player_count",
    "false",
    "--messages_per_second",
    "0",
    "--first_message_timeout",
    "0",
];

pub(crate) async fn next_line(lines: &mut Lines) -> String {
    timeout(TIMEOUT, lines.next_line())
        .await
        .expect("a log line within the timeout")
        .expect("read stderr")
        .expect("stderr ended early")
}

#[tokio::test]
async fn bad_input_warning_names_the_connection_role_and_reason() {
    let (_child, mut lines, _streamer, player) = start(&[]).await;
    let mut p = TestPeer::connect(player, "player").await;
    p.expect_text(CONFIG).await;
    p.send_json("this is not json").await;
    p.sync().await;
    let opened = loop {
        let line = next_line(&mut lines).await;
        if line.contains("opened") && line.contains("role=player") {
            break line;
        }
    };
    let conn = opened
        .split("conn{id=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the opened line carries the connection id")
        .to_owned();
    let warning = loop {
        let line = next_line(&mut lines).await;
        if line.contains("WARN") {
            break line;
        }
    };
    assert!(
        warning.contains(&format!("conn{{id={conn} role=player"))
            && warning.contains("bad message ignored: not JSON"),
        "warning line: {warning}"
    );
}

#[tokio::test]
async fn sigterm_closes_every_connection_1012_and_exits_0() {
    sigterm_flow(&["--worker_threads", "2"], 2).await;
}

#[tokio::test]
async fn the_single_threaded_scheduler_serves_and_shuts_down_the_same() {
    sigterm_flow(&["--worker_threads", "1"], 1).await;
}

/// Starts the binary with `extra` flags (it must log `threads` worker threads), connects a
/// streamer and a player (the player's answer reaches the streamer), then SIGTERM: both get
/// 1012 and the process exits 0.
async fn sigterm_flow(extra: &[&str], threads: usize) {
    let (mut child, mut lines, streamer, player, seen) = start_logged(extra).await;
    let running = format!("running on {threads} worker thread(s)");
    assert!(
        seen.iter().any(|l| l.contains(&running)),
        "no `{running}` in {seen:#?}"
    );
    let mut st = TestPeer::connect(streamer, "streamer").await;
    st.expect_text(CONFIG).await;
    st.expect_type("identify").await;
    let mut p = TestPeer::connect(player, "player").await;
    p.expect_text(CONFIG).await;
    st.endpoint_id("S").await;
    p.subscribe("S").await;
    let connected = st.expect_type("playerConnected").await;
    let player_id = connected["playerId"]
        .as_str()
        .expect("a player id")
        .to_owned();
    p.send_json(r#"{"type":"answer","sdp":"x"}"#).await;
    let answer = st.expect_type("answer").await;
    assert_eq!(answer["playerId"], player_id.as_str());
    p.sync().await;
    st.sync().await;

    sigterm(&child);

    assert_eq!(
        st.expect_close().await,
        (1012, "server restarting".to_owned())
    );
    assert_eq!(
        p.expect_close().await,
        (1012, "server restarting".to_owned())
    );
    // Keep draining stderr so the child never blocks on a full pipe.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let exit = timeout(TIMEOUT, child.wait())
        .await
        .expect("the server exits within the timeout")
        .expect("wait for the child");
    assert!(exit.success(), "exit status {exit:?}");
    drain.abort();
}

#[tokio::test]
async fn bad_configuration_stops_start_up_naming_the_key() {
    let output = binary()
        .args(["--max_players", "many"])
        .output()
        .await
        .expect("run the signalling binary");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_players"), "stderr: {stderr}");

    let dir = std::env::temp_dir().join(format!("signalling-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "streamer_port = 0\nno_such_key = 1\n").expect("write config");
    let output = binary()
        .arg("--config")
        .arg(&file)
        .output()
        .await
        .expect("run the signalling binary");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no_such_key"), "stderr: {stderr}");

    // A JWT key that cannot be read, or is not a public key, stops start-up naming it.
    let not_a_key = dir.join("not-a-key.pem");
    std::fs::write(
        &not_a_key,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .expect("write");
    for key in [dir.join("missing.pem"), not_a_key] {
        let output = binary()
            .args(["--bind_address", "127.0.0.1", "--streamer_port", "0"])
            .args(["--player_port", "0", "--sfu_port", "0"])
            .arg("--jwt_public_key")
            .arg(&key)
            .output()
            .await
            .expect("run the signalling binary");
        assert_ne!(output.status.code(), Some(0));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("jwt_public_key") && stderr.contains(&*key.to_string_lossy()),
            "stderr: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_port_in_use_is_named_and_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("addr").port().to_string();
    let output = binary()
        .args(["--bind_address", "127.0.0.1", "--streamer_port", &port])
        .args(["--player_port", "0", "--sfu_port", "0"])
        .output()
        .await
        .expect("run the signalling binary");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("streamer port") && stderr.contains(&port),
        "stderr: {stderr}"
    );
}

/// Under systemd (`Type=notify`), the server sends `READY=1` to `NOTIFY_SOCKET` once every
/// listener is bound: a connection made right after it is served.
#[tokio::test]
async fn ready_is_sent_to_notify_socket_once_every_port_is_bound() {
    let dir = std::env::temp_dir().join(format!("signalling-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = tokio::net::UnixDatagram::bind(&path).expect("bind the notify socket");
    let mut child = binary()
        .env("NOTIFY_SOCKET", &path)
        .args(LOOPBACK)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the signalling binary");
    let mut buf = [0u8; 256];
    let n = timeout(TIMEOUT, socket.recv(&mut buf))
        .await
        .expect("READY=1 within the timeout")
        .expect("recv");
    assert_eq!(
        std::str::from_utf8(&buf[..n]).expect("utf-8").trim(),
        "READY=1"
    );
    // The addresses were logged before it, and each port is serving.
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (mut streamer, mut player) = (None, None);
    while streamer.is_none() || player.is_none() {
        let line = next_line(&mut lines).await;
        streamer = streamer.or(listening_addr(&line, "streamer"));
        player = player.or(listening_addr(&line, "player"));
    }
    let mut peer = TestPeer::connect(player.expect("player"), "player").await;
    peer.expect_type("config").await;
    let mut peer = TestPeer::connect(streamer.expect("streamer"), "streamer").await;
    peer.expect_type("config").await;
    sigterm(&child);
    let status = timeout(TIMEOUT, child.wait())
        .await
        .expect("exit")
        .expect("status");
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A datagram socket to stand in for systemd's `NOTIFY_SOCKET`, in its own temporary folder
/// (removed on drop).
pub(crate) struct NotifySocket {
    dir: std::path::PathBuf,
    pub(crate) path: std::path::PathBuf,
    socket: tokio::net::UnixDatagram,
}

impl NotifySocket {
    pub(crate) fn bind(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("signalling-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = tokio::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        Self { dir, path, socket }
    }

    /// A datagram already there, without waiting.
    pub(crate) fn try_recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.socket.try_recv(buf)
    }

    /// The next datagram's lines, waited for within the timeout.
    pub(crate) async fn next(&self) -> Vec<String> {
        let mut buf = [0u8; 512];
        let n = timeout(TIMEOUT, self.socket.recv(&mut buf))
            .await
            .expect("a notification within the timeout")
            .expect("recv");
        std::str::from_utf8(&buf[..n])
            .expect("utf-8")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The binary as systemd starts it under `WatchdogSec=`: `WATCHDOG_USEC` set and
/// `WATCHDOG_PID` naming its own process (a shell that sets it, then becomes the server).
pub(crate) fn binary_with_watchdog(notify: &NotifySocket, usec: u64, args: &[&str]) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_signalling"))
        .args(LOOPBACK)
        .args(args)
        .env_remove("RUST_LOG")
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", usec.to_string())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Under `WatchdogSec=`, the router's loop sends `WATCHDOG=1` at half the period, again and
/// again, after `READY=1`.
#[tokio::test]
async fn watchdog_pings_arrive_repeatedly_under_watchdog_usec() {
    let notify = NotifySocket::bind("watchdog");
    // 100 ms: a ping every 50 ms.
    let mut child = binary_with_watchdog(&notify, 100_000, &[])
        .spawn()
        .expect("start the signalling binary");
    let mut pings = 0;
    let mut ready = false;
    while pings < 5 {
        for line in notify.next().await {
            match line.as_str() {
                "READY=1" => ready = true,
                "WATCHDOG=1" => {
                    assert!(ready, "READY=1 comes before the first WATCHDOG=1");
                    pings += 1;
                }
                other => panic!("unexpected notification {other:?}"),
            }
        }
    }
    sigterm(&child);
    let status = timeout(TIMEOUT, child.wait())
        .await
        .expect("exit")
        .expect("status");
    assert!(status.success(), "{status}");
}
