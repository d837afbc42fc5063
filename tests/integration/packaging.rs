//! The service packaging: `packaging/signalling.service` passes `systemd-analyze verify` (no
//! error, no warning) with its `ExecStart` pointed at the binary under test, and says what the
//! server needs from systemd. `systemd-analyze` comes from Debian's `systemd` package
//! (tests/systemd/setup.sh installs it); without it this test fails rather than skips.

use std::process::Command;

const UNIT: &str = include_str!("../../packaging/signalling.service");
const INSTALLED: &str = "/usr/local/bin/signalling";

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    assert!(UNIT.contains(&format!("ExecStart={INSTALLED} ")));
    // verify checks that ExecStart's program exists: the binary under test stands in for it.
    let dir = std::env::temp_dir().join(format!("signalling-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("signalling.service");
    std::fs::write(
        &path,
        UNIT.replace(INSTALLED, env!("CARGO_BIN_EXE_signalling")),
    )
    .expect("write the unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze cannot run ({e}); install it with tests/systemd/setup.sh")
        });
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify: {stderr}");
    // An unknown or misspelt key is only a warning, with a success status.
    assert!(stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn the_systemd_unit_asks_for_what_the_server_does() {
    let directives: Vec<&str> = UNIT
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for wanted in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "User=signalling",
        "LogsDirectory=signalling",
    ] {
        assert!(directives.contains(&wanted), "{wanted} missing");
    }
    for prefix in ["WatchdogSec=", "LimitNOFILE="] {
        assert!(
            directives.iter().any(|d| d.starts_with(prefix)),
            "{prefix} missing"
        );
    }
}
