//! SIGHUP: the binary reads its config file again and puts the new tokens and `peer_options`
//! in force for new connections, announcing `RELOADING=1` then `READY=1` to systemd, while
//! connected peers stay; a broken file is refused with one error line and changes nothing.

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite;

use crate::binary::{LOOPBACK, Lines, NotifySocket, binary, listening_addr, next_line, sigterm};
use crate::support::{TIMEOUT, TestPeer};

/// A config file with this player token and `peer_options` holding `marker`.
fn config_text(token: &str, marker: &str) -> String {
    format!("player_token = \"{token}\"\npeer_options = '{{\"marker\":\"{marker}\"}}'\n")
}

/// Sends SIGHUP to the server process.
fn sighup(child: &tokio::process::Child) {
    let pid = child.id().expect("child pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// The first log line containing `text` (earlier lines are skipped).
async fn line_with(lines: &mut Lines, text: &str) -> String {
    loop {
        let line = next_line(lines).await;
        if line.contains(text) {
            return line;
        }
    }
}

/// A player with `token`: its `config`'s `peerConnectionOptions.marker`.
async fn player_marker(player: SocketAddr, token: &str) -> (TestPeer, String) {
    let mut peer = TestPeer::connect_url(&format!("ws://{player}/?token={token}"), "player").await;
    let config = peer.expect_type("config").await;
    let marker = config["peerConnectionOptions"]["marker"]
        .as_str()
        .expect("marker")
        .to_owned();
    (peer, marker)
}

/// The HTTP status a player upgrade with `token` is refused with.
async fn refused_status(player: SocketAddr, token: &str) -> u16 {
    match tokio_tungstenite::connect_async(format!("ws://{player}/?token={token}")).await {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("token {token:?} was accepted"),
    }
}

/// SIGTERM, and the exit, which must be a success.
async fn stop(mut child: tokio::process::Child) {
    sigterm(&child);
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("exit")
        .expect("status");
    assert!(status.success(), "{status}");
}

/// The binary with `text` as its config file, under a test-bound NOTIFY_SOCKET, once it has
/// said READY=1: the socket, the file, the process and its stderr lines.
async fn start(
    name: &str,
    text: &str,
) -> (
    NotifySocket,
    std::path::PathBuf,
    tokio::process::Child,
    Lines,
) {
    let notify = NotifySocket::bind(name);
    let file = notify.path.with_file_name("signalling.toml");
    std::fs::write(&file, text).expect("write config");
    let mut child = binary()
        .env("NOTIFY_SOCKET", &notify.path)
        .args(LOOPBACK)
        .args(["--config_file", file.to_str().expect("utf-8")])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the signalling binary");
    let lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    assert_eq!(notify.next().await, ["READY=1"]);
    (notify, file, child, lines)
}

#[tokio::test]
async fn sighup_reloads_tokens_and_peer_options_and_refuses_a_broken_file() {
    let (notify, file, child, mut lines) = start("reload", &config_text("old", "first")).await;
    let player = loop {
        if let Some(addr) = listening_addr(&next_line(&mut lines).await, "player") {
            break addr;
        }
    };
    let (mut connected, marker) = player_marker(player, "old").await;
    assert_eq!(marker, "first");

    // A new token and new peer_options, then SIGHUP.
    std::fs::write(&file, config_text("new", "second")).expect("write config");
    sighup(&child);
    let reloading = notify.next().await;
    assert_eq!(reloading[0], "RELOADING=1", "{reloading:?}");
    assert!(
        reloading[1].starts_with("MONOTONIC_USEC=")
            && reloading[1]["MONOTONIC_USEC=".len()..]
                .parse::<u64>()
                .is_ok(),
        "{reloading:?}"
    );
    assert_eq!(notify.next().await, ["READY=1"]);
    let line = line_with(&mut lines, "configuration reloaded").await;
    assert!(
        line.contains("in force now: peer_options, player_token"),
        "{line}"
    );
    assert!(
        !line.contains("\"new\"") && !line.contains("second"),
        "no values: {line}"
    );

    // The connected player stays, and is answered.
    connected.send_json(r#"{"type":"listStreamers"}"#).await;
    connected.expect_type("streamerList").await;
    // A new player needs the new token, and gets the new peer_options.
    assert_eq!(refused_status(player, "old").await, 401);
    let (_new, marker) = player_marker(player, "new").await;
    assert_eq!(marker, "second");

    // A broken file: one error line naming the problem, no RELOADING, nothing changes.
    std::fs::write(&file, "player_token = \n").expect("write config");
    sighup(&child);
    let line = line_with(&mut lines, "reload refused").await;
    assert!(
        line.contains("ERROR") && line.contains("signalling.toml"),
        "{line}"
    );
    let mut buf = [0u8; 64];
    assert!(
        notify.try_recv(&mut buf).is_err(),
        "nothing announced to systemd for a refused reload"
    );
    assert_eq!(refused_status(player, "old").await, 401);
    let (_again, marker) = player_marker(player, "new").await;
    assert_eq!(marker, "second", "the settings in force stay");
    connected.send_json(r#"{"type":"listStreamers"}"#).await;
    connected.expect_type("streamerList").await;

    stop(child).await;
}

/// `log_level` changes on SIGHUP: at `warn` the reload's own info line would not be written;
/// reloaded to `info`, it is.
#[tokio::test]
async fn sighup_changes_the_log_level() {
    let (notify, file, child, mut lines) = start("reload-level", "log_level = \"warn\"\n").await;
    std::fs::write(&file, "log_level = \"info\"\n").expect("write config");
    sighup(&child);
    assert_eq!(notify.next().await[0], "RELOADING=1");
    assert_eq!(notify.next().await, ["READY=1"]);
    // Info lines are written again, the reload's own among them.
    let line = line_with(&mut lines, "configuration reloaded").await;
    assert!(
        line.contains("INFO") && line.contains("configuration reloaded: in force now: log_level"),
        "{line}"
    );
    stop(child).await;
}

/// The abuse limits follow a reload: `upgrades_per_ip_per_minute` turned on refuses this
/// address's next upgrades with 429, turned off again admits them, without a restart.
#[tokio::test]
async fn sighup_puts_new_abuse_limits_in_force() {
    let (notify, file, child, mut lines) =
        start("reload-limits", "upgrades_per_ip_per_minute = 0\n").await;
    let player = loop {
        if let Some(addr) = listening_addr(&next_line(&mut lines).await, "player") {
            break addr;
        }
    };
    let status = |response: String| response.split(' ').nth(1).unwrap_or("").to_owned();
    for _ in 0..5 {
        assert_eq!(status(crate::tokens::upgrade(player, "/", "").await), "101");
    }

    let reload = |text: &'static str| {
        std::fs::write(&file, text).expect("write config");
        sighup(&child);
    };
    reload("upgrades_per_ip_per_minute = 2\n");
    assert_eq!(notify.next().await[0], "RELOADING=1");
    assert_eq!(notify.next().await, ["READY=1"]);
    let line = line_with(&mut lines, "configuration reloaded").await;
    assert!(
        line.contains("in force now: upgrades_per_ip_per_minute"),
        "{line}"
    );
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(status(crate::tokens::upgrade(player, "/", "").await));
    }
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("429"),
        "{statuses:?}"
    );

    reload("upgrades_per_ip_per_minute = 0\n");
    assert_eq!(notify.next().await[0], "RELOADING=1");
    assert_eq!(notify.next().await, ["READY=1"]);
    assert_eq!(status(crate::tokens::upgrade(player, "/", "").await), "101");

    stop(child).await;
}
