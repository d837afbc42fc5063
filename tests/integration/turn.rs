//! A real TURN server (coturn) accepts the credentials `GET /iceServers` hands out and refuses
//! expired or forged ones: coturn's own `turnutils_uclient` allocates a relay with them and
//! passes data through it.

use std::process::Output;
use std::time::Duration;

use signalling::config::Config;
use signalling::ice::{turn_rest_credential, unix_now};
use tokio::process::Command;

use crate::support::http::Api;
use crate::support::turn::Coturn;
use crate::support::{self, TestServer};

const SECRET: &str = "coturn-test-secret";

/// Runs `turnutils_uclient` against `coturn` with these credentials: one client, one message
/// to itself through its relay (`-y`), RTP only (`-c`).
async fn uclient(coturn: &Coturn, username: &str, credential: &str) -> Output {
    let run = Command::new("turnutils_uclient")
        .args(["-u", username, "-w", credential])
        .args(["-p", &coturn.port.to_string()])
        .args([
            "-e",
            "127.0.0.1",
            "-n",
            "1",
            "-m",
            "1",
            "-y",
            "-c",
            "127.0.0.1",
        ])
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("turnutils_uclient finishes within 30 s")
        .expect("turnutils_uclient runs (tests/turn/setup.sh installs coturn)")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub(crate) fn config_for(coturn: &Coturn) -> Config {
    let mut config = support::config();
    config.ice.turn_urls = vec![coturn.url()];
    config.ice.turn_secret = coturn.secret.clone();
    config.ice.credential_lifetime = Duration::from_secs(300);
    config
}

#[tokio::test]
async fn coturn_allocates_a_relay_with_ice_servers_credentials_and_refuses_bad_ones() {
    let coturn = Coturn::start(SECRET).await;
    let server = TestServer::start(config_for(&coturn)).await;
    let (status, body) = Api::new(&server).get("/iceServers?peerId=alice").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["urls"][0], coturn.url());
    let username = body["username"].as_str().expect("username").to_owned();
    let credential = body["credential"].as_str().expect("credential").to_owned();
    assert!(username.ends_with(":alice"), "{username}");

    let good = uclient(&coturn, &username, &credential).await;
    let out = text(&good);
    assert!(
        good.status.success(),
        "allocation refused: {out}\n{}",
        coturn.log()
    );
    let received: u64 = out
        .rsplit("tot_recv_msgs=")
        .next()
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(received > 0, "no data came back through the relay: {out}");
    assert!(
        coturn.log().contains(&format!("username <{username}>"))
            || coturn.log().contains(&username),
        "coturn's log does not name {username}"
    );

    let forged = turn_rest_credential("not-the-secret", &username);
    let refused = uclient(&coturn, &username, &forged).await;
    assert!(!refused.status.success(), "forged credential accepted");
    assert!(
        text(&refused).contains("Cannot complete Allocation"),
        "{}",
        text(&refused)
    );

    let expired = format!("{}:alice", unix_now() - 60);
    let refused = uclient(&coturn, &expired, &turn_rest_credential(SECRET, &expired)).await;
    assert!(!refused.status.success(), "expired credential accepted");
    assert!(
        text(&refused).contains("Cannot complete Allocation"),
        "{}",
        text(&refused)
    );

    // Another peer's credential does not pass as alice's.
    let (_, bob) = Api::new(&server).get("/iceServers?peerId=bob").await;
    let bob_credential = bob["credential"].as_str().expect("credential");
    let refused = uclient(&coturn, &username, bob_credential).await;
    assert!(
        !refused.status.success(),
        "bob's credential accepted for alice"
    );
}
