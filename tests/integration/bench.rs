//! The `signalling-bench` load generator (issue 4) run briefly against the real server: every
//! scenario must finish with nothing lost, and non-loopback URLs must be refused.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::process::Command;

use crate::support::{TestServer, config};

/// Runs `signalling-bench ARGS` through cargo (it is another workspace package); returns the
/// exit code and stdout.
async fn bench(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO"))
        .args(["run", "-q", "-p", "signalling-bench", "--"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run cargo");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    (
        output.status.code(),
        String::from_utf8(output.stdout).expect("UTF-8 stdout"),
    )
}

fn urls(server: &TestServer) -> [String; 6] {
    let url = |a: SocketAddr| format!("ws://{a}");
    [
        "--streamer".into(),
        url(server.streamer),
        "--player".into(),
        url(server.player),
        "--server-pid".into(),
        std::process::id().to_string(),
    ]
}

/// The JSON line, checked for a clean run.
fn clean_report(code: Option<i32>, stdout: &str, scenario: &str) -> Value {
    assert_eq!(code, Some(0), "bench exit status; stdout: {stdout}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON line on stdout");
    assert_eq!(report["scenario"], scenario);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["unexpected"], 0);
    assert_eq!(report["failed"], 0);
    assert!(report["server_cpu_s"].is_number(), "{report}");
    assert!(report["generator_cpu_s"].is_number(), "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_scenario_opens_every_connection() {
    let server = TestServer::start(config()).await;
    let mut args: Vec<String> = urls(&server).into();
    args.extend(["connect", "-n", "50", "--concurrency", "10"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout) = bench(&args).await;
    let report = clean_report(code, &stdout, "connect");
    assert_eq!(report["results"]["connections"], 50);
    assert!(report["results"]["rss_kib"]["held"].is_u64(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_scenario_negotiates_and_sees_every_disconnect() {
    let server = TestServer::start(config()).await;
    let mut args: Vec<String> = urls(&server).into();
    args.extend(["subscribe", "-s", "2", "-p", "5"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout) = bench(&args).await;
    let report = clean_report(code, &stdout, "subscribe");
    assert_eq!(report["results"]["negotiations"], 10);
    assert_eq!(report["results"]["player_disconnected"], 10);
}

#[tokio::test]
async fn non_loopback_urls_are_refused_with_exit_code_2() {
    for (flag, url) in [
        ("--player", "ws://10.1.2.3:1"),
        ("--streamer", "ws://10.1.2.3:1"),
        ("--player", "ws://[2001:db8::1]:1"),
        ("--player", "ws://example.com:1"),
    ] {
        // Nothing listens at 10.1.2.3; a refusal is immediate, a connection attempt would
        // fail with exit status 1 after a timeout.
        let (code, stdout) = bench(&[flag, url, "connect", "-n", "1"]).await;
        assert_eq!(code, Some(2), "{flag} {url}");
        assert!(stdout.is_empty(), "no report for a refused URL: {stdout}");
    }
}
