//! Two headless Chromium pages (tests/sessions-browser/run.mjs, playwright-core on
//! /usr/bin/chromium) pair through the session API and reach connectionState "connected" with
//! a data channel message each way, forced through a real coturn relay.

use std::path::Path;
use std::time::Duration;

use crate::support::TestServer;
use crate::support::turn::Coturn;
use crate::turn::config_for;

#[tokio::test]
async fn two_chromium_pages_connect_through_the_turn_relay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/sessions-browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "{} is missing: run tests/sessions-browser/setup.sh first",
        dir.join("node_modules").display()
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run tests/sessions-browser/setup.sh first"
    );
    let coturn = Coturn::start("browser-test-secret").await;
    let server = TestServer::start(config_for(&coturn)).await;
    let run = tokio::process::Command::new("node")
        .arg("run.mjs")
        .current_dir(&dir)
        .env("SIGNALLING_URL", format!("http://{}", server.player))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("run.mjs finishes within 90 s")
        .expect("node runs (is it installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("sessions-browser: ok"),
        "run.mjs failed ({}):\n{stdout}\n{stderr}\ncoturn log:\n{}",
        output.status,
        coturn.log()
    );
    for step in ["connected", "relay pair", "received \"hello from"] {
        assert!(stdout.contains(step), "no `{step}` step:\n{stdout}");
    }
}
