//! Start-up raises the soft open-file limit to the hard one (under systemd the soft limit is
//! 1,024): the binary started with a soft limit of 256 logs its new limit and serves 400
//! connections at once.

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

use crate::support::{CONFIG, TIMEOUT, TestPeer};

/// The soft limit the binary starts with, and the connections it must then hold at once.
const LOWERED: u64 = 256;
const CONNECTIONS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_raises_a_low_soft_fd_limit_to_the_hard_one() {
    // This test process holds the 400 client ends: give it room too.
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
    assert!(
        hard >= 2 * CONNECTIONS as u64,
        "the hard open-file limit {hard} is too low for this test"
    );
    rlimit::increase_nofile_limit(hard).expect("raise this test's own soft limit");

    // `sh` lowers only the soft limit, then becomes the server.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -Sn {LOWERED} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_signalling"))
        .args(crate::binary::LOOPBACK)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the signalling binary under sh");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut player = None;
    let limit_line = loop {
        let line = timeout(TIMEOUT, lines.next_line())
            .await
            .expect("a log line within the timeout")
            .expect("read stderr")
            .expect("stderr ended before the file descriptor limit was logged");
        if let Some((_, addr)) = line.split_once("player port listening on ") {
            player = addr.trim().parse::<SocketAddr>().ok();
        }
        if line.contains("file descriptor limit") {
            break line;
        }
    };
    assert!(
        limit_line.contains("INFO")
            && limit_line.contains(&format!(
                "file descriptor limit {hard} (was {LOWERED}): about "
            ))
            && limit_line.ends_with(" connections"),
        "start-up line: {limit_line}"
    );
    let player = player.expect("the player address is logged before the limit");

    let mut peers = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let mut p = TestPeer::connect(player, &format!("player {i}")).await;
        p.expect_text(CONFIG).await;
        peers.push(p);
    }
    // All of them are still served.
    for p in &mut peers {
        p.sync().await;
    }
}
