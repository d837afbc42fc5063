//! The binary as Epic's scripts, Dockerfile and config files start it: Wilbur's and Cirrus's
//! argument lists and config.json files are accepted, the homepage is served from the http_root
//! they name, each setting that does nothing here warns exactly once, and a misspelt flag stops
//! start-up naming the nearest one.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::binary::{binary, start_logged, start_logged_in};
use crate::support::{CONFIG, TestPeer};

const STUN: &str = r#"{"iceServers":[{"urls":["stun:stun.l.google.com:19302"]}]}"#;
const HOMEPAGE: &str = "<!doctype html><title>player</title>";

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

/// What `GET /` should answer.
#[derive(Debug, PartialEq)]
enum Home {
    /// The homepage from the http_root.
    Served,
    /// The built-in player page: not serving, or the http_root is missing.
    BuiltIn,
}

/// Starts the binary with `args` after the loopback flags, in a fresh working directory holding
/// Wilbur's default `www/player.html`; checks that a player gets `config`, that `GET /` answers
/// as `home` says, and that the warnings are exactly one about each of `warnings`. Returns the
/// working directory.
async fn starts_with(args: &[&str], warnings: &[&str], home: Home) -> PathBuf {
    let dir = temp_dir("cwd");
    std::fs::create_dir_all(dir.join("www")).expect("www");
    std::fs::write(dir.join("www").join("player.html"), HOMEPAGE).expect("homepage");
    let (child, _lines, _streamer, player, seen) = start_logged_in(Some(&dir), args).await;
    let warned: Vec<&String> = seen.iter().filter(|l| l.contains(" WARN ")).collect();
    for about in warnings {
        let n = warned.iter().filter(|w| w.contains(about)).count();
        assert_eq!(n, 1, "one warning about {about} for {args:?}: {warned:#?}");
    }
    assert_eq!(warned.len(), warnings.len(), "{args:?}: {warned:#?}");
    let mut p = TestPeer::connect(player, "player").await;
    let config = p.recv_text().await;
    assert!(config.starts_with(r#"{"type":"config""#), "{config}");
    let response = reqwest::get(format!("http://{player}/"))
        .await
        .expect("GET /");
    let status = response.status().as_u16();
    let body = response.text().await.expect("body");
    match home {
        Home::Served => assert_eq!((status, body.as_str()), (200, HOMEPAGE), "{args:?}"),
        Home::BuiltIn => assert!(
            status == 200 && body.contains("<script src=\"/signalling/player.js\"></script>"),
            "{args:?}: {status} {body}"
        ),
    }
    drop(child);
    dir
}

/// Whether the server wrote a daily log file under `dir/logs` (Wilbur's `log_folder`, Cirrus's
/// `LogToFile`).
fn wrote_log_file(dir: &Path) -> bool {
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
    let args = [
        "--serve",
        "--https_redirect",
        "--console_messages",
        "verbose",
        "--log_config",
        "--public_ip=203.0.113.7",
        &peer_options,
    ];
    starts_with(&args, &[], Home::Served).await;
    // start.sh --frontend-dir DIR adds --http_root='DIR' (quotes removed by its eval).
    let frontend = temp_dir("frontend");
    std::fs::write(frontend.join("player.html"), HOMEPAGE).expect("homepage");
    std::fs::remove_dir_all(frontend.join("www")).ok();
    let http_root = format!("--http_root={}", frontend.display());
    let mut with_root = args.to_vec();
    with_root.push(&http_root);
    starts_with(&with_root, &[], Home::Served).await;
}

#[tokio::test]
async fn npm_start() {
    // SignallingWebServer/package.json: "node ./dist/index.js --serve --console_messages verbose
    // --log_config --https_redirect".
    let args = [
        "--serve",
        "--console_messages",
        "verbose",
        "--log_config",
        "--https_redirect",
    ];
    starts_with(&args, &[], Home::Served).await;
}

#[tokio::test]
async fn docker_start_wilbur_sh() {
    // platform_scripts/bash/docker-start-wilbur.sh runs the container with these two.
    let peer_options = format!("--peerConnectionOptions={STUN}");
    let args = [peer_options.as_str(), "--publicIp=203.0.113.7"];
    starts_with(&args, &[], Home::BuiltIn).await;
}

#[tokio::test]
async fn cirrus_start_signalling_server_sh() {
    // UE5.4 platform_scripts/bash/Start_SignallingServer.sh, after its eval; Cirrus served its
    // web pages unless told not to (EnableWebserver).
    let peer_options = format!("--peerConnectionOptions={STUN}");
    let args = [
        peer_options.as_str(),
        "--PublicIp=203.0.113.7",
        "--EnableWebserver",
        "--HttpPort=0",
    ];
    starts_with(&args, &[], Home::Served).await;
}

#[tokio::test]
async fn settings_without_effect_warn_once_each() {
    let args = ["--stdin", "--save", "--stdin"];
    starts_with(&args, &["--stdin", "--save"], Home::BuiltIn).await;
}

#[tokio::test]
async fn wilbur_and_cirrus_config_json() {
    let files = temp_dir("files");
    let wilbur = files.join("wilbur.json");
    std::fs::write(&wilbur, include_str!("../fixtures/wilbur-config.json")).expect("write");
    let wilbur = wilbur.to_str().expect("utf-8");
    // As shipped: its Windows http_root is missing here, which is said once.
    let cwd = starts_with(&["--config_file", wilbur], &["http_root"], Home::BuiltIn).await;
    assert!(wrote_log_file(&cwd), "Wilbur's log_folder \"logs\"");
    // With the folder the operator's scripts give.
    starts_with(
        &["--config_file", wilbur, "--http_root", "www"],
        &[],
        Home::Served,
    )
    .await;
    let cirrus = files.join("cirrus.json");
    std::fs::write(&cirrus, include_str!("../fixtures/cirrus-config.json")).expect("write");
    let cirrus = cirrus.to_str().expect("utf-8");
    let cwd = starts_with(&["--configFile", cirrus], &[], Home::Served).await;
    assert!(wrote_log_file(&cwd), "Cirrus's LogToFile");
}

#[tokio::test]
async fn a_misspelt_flag_exits_2_naming_the_nearest() {
    for (typo, nearest) in [
        ("--player_prot", "--player_port"),
        ("--serv", "--serve"),
        ("--HttpPrt", "--HttpPort"),
    ] {
        let output = binary()
            .args([typo, "80"])
            .stderr(Stdio::piped())
            .output()
            .await
            .expect("run the binary");
        assert_eq!(output.status.code(), Some(2), "{typo}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(typo) && stderr.contains(nearest),
            "{stderr}"
        );
    }
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
