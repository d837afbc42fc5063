//! A real coturn `turnserver` for tests: 127.0.0.1 only, an ephemeral listening port, TURN
//! REST auth (`use-auth-secret`) with a test secret, loopback peers allowed, no CLI, no config
//! file, logs and pid in a temp dir. Killed (and the dir removed) on drop. Missing coturn is a
//! failure, never a skip: `tests/turn/setup.sh` installs it.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::{Instant, timeout};

use super::TIMEOUT;

static NEXT: AtomicU64 = AtomicU64::new(0);

pub(crate) struct Coturn {
    pub(crate) port: u16,
    pub(crate) secret: String,
    pub(crate) dir: PathBuf,
    child: Child,
}

/// A port free on 127.0.0.1 for both UDP and TCP right now (coturn listens on both).
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind UDP 127.0.0.1:0");
        let port = udp.local_addr().expect("local addr").port();
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

impl Coturn {
    pub(crate) async fn start(secret: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "signalling-turn-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir for turnserver");
        let port = free_port();
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "-v",
                "--simple-log",
            ])
            .args(["--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .args(["--use-auth-secret", "--realm=signalling.test"])
            .arg(format!("--static-auth-secret={secret}"))
            .arg("--allow-loopback-peers")
            .arg(format!("--log-file={}", dir.join("turn.log").display()))
            .arg(format!("--pidfile={}", dir.join("turn.pid").display()))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start turnserver ({e}): run tests/turn/setup.sh to install coturn")
            });
        let mut coturn = Self {
            port,
            secret: secret.to_owned(),
            dir,
            child,
        };
        coturn.wait_ready().await;
        coturn
    }

    /// Waits until turnserver answers a STUN Binding request on its port.
    async fn wait_ready(&mut self) {
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind UDP");
        let server = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        // Binding request: type 0x0001, length 0, magic cookie, 12-byte transaction id.
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        request.extend_from_slice(b"signalling12");
        let deadline = Instant::now() + TIMEOUT;
        let mut buf = [0u8; 512];
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("turnserver exited with {status}; log: {}", self.log());
            }
            socket.send_to(&request, server).await.expect("send STUN");
            // Each unanswered probe waits 100 ms for its answer, then probes again.
            if let Ok(Ok((n, _))) =
                timeout(Duration::from_millis(100), socket.recv_from(&mut buf)).await
            {
                if n >= 20 && buf[..2] == [0x01, 0x01] {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "turnserver not answering on 127.0.0.1:{}; log: {}",
                self.port,
                self.log()
            );
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turn.log")).unwrap_or_default()
    }

    /// `turn:127.0.0.1:<port>?transport=udp`.
    pub(crate) fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
