//! The binary as Epic's scripts, Dockerfile and config files start it: Wilbur's and Cirrus's
//! argument lists and config.json files are accepted, each setting that does nothing here warns
//! exactly once, and a misspelt flag stops start-up naming the nearest one.

use std::net::{Ipv6Addr, SocketAddr};
use std::process::Stdio;

use std::path::PathBuf;

use crate::binary::{binary, start_logged, start_logged_in};
use crate::support::{CONFIG, TestPeer};

const STUN: &str = r#"{"iceServers":[{"urls":["stun:stun.l.google.com:19302"]}]}"#;

/// A fresh directory for one test: the binary's working directory, or its files.
fn temp_dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "signalling-drop-in-{}-{name}-{n}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The warnings among the start-up lines.
fn warnings(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.contains(" WARN ")).collect()
}

/// Starts the binary with `args` after the loopback flags, checks a player gets `config` on the
/// player port, and that the warnings are exactly one for each of `no_effect`.
async fn starts_with(args: &[&str], no_effect: &[&str]) -> PathBuf {
    let dir = temp_dir("cwd");
    let (child, _lines, _streamer, player, seen) = start_logged_in(Some(&dir), args).await;
    let warned = warnings(&seen);
    for flag in no_effect {
        let about: Vec<_> = warned.iter().filter(|w| w.contains(flag)).collect();
        assert_eq!(
            about.len(),
            1,
            "one warning about {flag} for {args:?}: {warned:#?}"
        );
    }
    assert_eq!(warned.len(), no_effect.len(), "{args:?}: {warned:#?}");
    let mut p = TestPeer::connect(player, "player").await;
    let config = p.recv_text().await;
    assert!(config.starts_with(r#"{"type":"config""#), "{config}");
    drop(child);
    dir
}

/// Whether the server wrote a daily log file under `dir/logs` (Wilbur's `log_folder`, Cirrus's
/// `LogToFile`).
fn wrote_log_file(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir.join("logs")).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("server-") && name.ends_with(".log")
        })
    })
}

#[tokio::test]
async fn epic_start_sh_and_the_dockerfile_entrypoint() {
    // platform_scripts/bash/start.sh's SERVER_ARGS after expansion (default STUN server); the
    // Dockerfile's entrypoint runs start.sh, so passes the same.
    let peer_options = format!("--peer_options={STUN}");
    starts_with(
        &[
            "--serve",
            "--https_redirect",
            "--console_messages",
            "verbose",
            "--log_config",
            "--public_ip=203.0.113.7",
            &peer_options,
        ],
        &["--serve"],
    )
    .await;
}

#[tokio::test]
async fn npm_start() {
    // SignallingWebServer/package.json: "node ./dist/index.js --serve --console_messages verbose
    // --log_config --https_redirect".
    starts_with(
        &[
            "--serve",
            "--console_messages",
            "verbose",
            "--log_config",
            "--https_redirect",
        ],
        &["--serve"],
    )
    .await;
}

#[tokio::test]
async fn docker_start_wilbur_sh() {
    // platform_scripts/bash/docker-start-wilbur.sh runs the container with these two.
    let peer_options = format!("--peerConnectionOptions={STUN}");
    starts_with(&[&peer_options, "--publicIp=203.0.113.7"], &[]).await;
}

#[tokio::test]
async fn cirrus_start_signalling_server_sh() {
    // UE5.4 platform_scripts/bash/Start_SignallingServer.sh, after eval.
    let peer_options = format!("--peerConnectionOptions={STUN}");
    starts_with(&[&peer_options, "--PublicIp=203.0.113.7"], &[]).await;
}

#[tokio::test]
async fn wilbur_and_cirrus_config_json() {
    let dir = temp_dir("files");
    let wilbur = dir.join("wilbur.json");
    std::fs::write(&wilbur, include_str!("../fixtures/wilbur-config.json")).expect("write");
    let cwd = starts_with(
        &["--config_file", wilbur.to_str().expect("utf-8")],
        &["`serve`"],
    )
    .await;
    assert!(wrote_log_file(&cwd), "Wilbur's log_folder \"logs\"");
    let cirrus = dir.join("cirrus.json");
    std::fs::write(&cirrus, include_str!("../fixtures/cirrus-config.json")).expect("write");
    let cwd = starts_with(
        &["--configFile", cirrus.to_str().expect("utf-8")],
        &["`EnableWebserver`"],
    )
    .await;
    assert!(wrote_log_file(&cwd), "Cirrus's LogToFile");
}

#[tokio::test]
async fn a_misspelt_flag_exits_2_naming_the_nearest() {
    let output = binary()
        .args(["--player_prot", "80"])
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run the binary");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--player_prot") && stderr.contains("--player_port"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_default_address_serves_ipv6_and_ipv4() {
    let (child, _lines, _streamer, player, seen) = start_logged(&["--bind_address", "::"]).await;
    let v4 = SocketAddr::from(([127, 0, 0, 1], player.port()));
    let mut p = TestPeer::connect(v4, "player").await;
    p.expect_text(CONFIG).await;
    if player.is_ipv6() {
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, player.port()));
        let mut p = TestPeer::connect(v6, "player").await;
        p.expect_text(CONFIG).await;
    } else {
        // A host without IPv6: the fallback says so.
        assert!(seen.iter().any(|l| l.contains("no IPv6")), "{seen:#?}");
    }
    drop(child);
}
