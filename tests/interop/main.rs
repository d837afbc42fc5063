//! Real clients through the real server: Epic's Pixel Streaming frontend (npm, UE 5.5–5.7) as
//! players and a WebRTC streamer page of ours, in headless Chromium, driven by
//! `tests/interop/run.mjs`; also the server's built-in player and demo streamer pages
//! (`src/http/pages/`), with each other and with Epic's frontend. One test per scenario, so each counts in the test summary.
//!
//! Needs what `tests/interop/setup.sh` installs (Debian's chromium and redis-server, `npm ci`); a missing piece
//! fails the test, it is never skipped. The runner starts this crate's `signalling` binary on
//! ephemeral loopback ports itself. Chromium is heavy, so the scenarios run one at a time.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

/// One Chromium at a time: the tests of this binary run in parallel threads otherwise.
static CHROMIUM: Mutex<()> = Mutex::new(());

/// Runs one scenario of run.mjs; its summary line goes straight to the terminal (stderr).
fn scenario(name: &str) {
    scenario_with(name, &[]);
}

/// [`scenario`] with more arguments for run.mjs.
fn scenario_with(name: &str, extra: &[&std::ffi::OsStr]) {
    let _one_at_a_time = CHROMIUM.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    assert!(
        dir.join("node_modules").is_dir(),
        "{} is missing: run tests/interop/setup.sh first (needs node, npm and root for apt-get)",
        dir.join("node_modules").display()
    );
    let chromium = std::env::var("INTEROP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run tests/interop/setup.sh first (it installs Debian's chromium)"
    );
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-screenshots");
    let output = Command::new("node")
        .arg(dir.join("run.mjs"))
        .args([
            "--server",
            env!("CARGO_BIN_EXE_signalling"),
            "--scenario",
            name,
        ])
        .arg("--screenshots")
        .arg(&screenshots)
        .args(extra)
        .env("WATCHDOG_S", "150")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("node runs (is it installed?)");
    assert!(
        output.status.success(),
        "interop scenario {name} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn one_streamer_three_players_play_and_send_input() {
    scenario("three-players");
}

#[test]
fn one_streamer_three_players_with_the_ue5_6_frontend() {
    scenario("three-players-ue5.6");
}

#[test]
fn one_streamer_three_players_with_the_ue5_5_frontend() {
    scenario("three-players-ue5.5");
}

#[test]
fn a_player_closing_its_page_gives_one_player_disconnected() {
    scenario("player-leaves");
}

#[test]
fn a_player_subscribes_to_the_second_of_two_streamers() {
    scenario("two-streamers");
}

#[test]
fn a_player_gets_the_stream_back_after_its_streamer_reconnects() {
    scenario("streamer-reconnects");
}

#[test]
fn max_players_one_refuses_the_second_player() {
    scenario("max-players");
}

#[test]
fn frontend_keepalive_at_one_second_runs_without_a_drop() {
    scenario("keepalive");
}

#[test]
fn fault_proxy_makes_the_matching_checks_fail() {
    scenario("self-check");
}

#[test]
fn built_in_streamer_page_and_two_built_in_players_play_and_send_input() {
    scenario("builtin-pages");
}

#[test]
fn epic_frontend_plays_the_built_in_demo_streamer() {
    scenario("epic-plays-demo-streamer");
}

/// Cluster mode (issue 14): a redis-server and two nodes; the streamer page on node A, three
/// Epic players (ue5.7) on node B; then one of them leaves.
#[test]
fn three_players_on_node_b_play_a_streamer_on_node_a_and_one_leaves() {
    scenario("three-players-across-nodes");
}

/// The built-in pages' scripts (embedded in the binary) are valid JavaScript: `node --check`.
#[test]
fn built_in_page_scripts_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/pages");
    for name in ["input.js", "player.js", "streamer.js"] {
        let output = Command::new("node")
            .arg("--check")
            .arg(dir.join(name))
            .stdin(Stdio::null())
            .output()
            .expect("node runs (is it installed?)");
        assert!(
            output.status.success(),
            "{name} does not parse:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn built_in_player_shows_each_failure_and_recovers_by_itself() {
    scenario("builtin-player-recovers");
}

#[test]
fn built_in_pages_over_https_and_wss_with_a_self_signed_certificate() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-tls");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    scenario_with(
        "builtin-pages",
        &[
            "--tls-cert".as_ref(),
            cert_path.as_os_str(),
            "--tls-key".as_ref(),
            key_path.as_os_str(),
        ],
    );
}
