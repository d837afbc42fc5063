//! Epic's own client library (tests/epic-client/run.mjs, under Node) against the real server.

use std::path::Path;
use std::time::Duration;

use crate::support::TestServer;

#[tokio::test]
async fn epic_client_library_flow_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/epic-client");
    assert!(
        dir.join("node_modules").is_dir(),
        "{} is missing: run tests/epic-client/setup.sh first (needs node and npm)",
        dir.join("node_modules").display()
    );
    let server = TestServer::with_defaults().await;
    let run = tokio::process::Command::new("node")
        .arg("tests/epic-client/run.mjs")
        .current_dir(root)
        .env("STREAMER_URL", format!("ws://{}", server.streamer))
        .env("PLAYER_URL", format!("ws://{}", server.player))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("run.mjs finishes within 90 s")
        .expect("node runs (is it installed?)");
    assert!(
        output.status.success(),
        "run.mjs failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
