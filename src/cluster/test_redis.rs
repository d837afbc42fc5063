//! A real `redis-server` for tests, on an ephemeral port of 127.0.0.1, without persistence,
//! killed when dropped. Never skips: without `redis-server` the test fails and says how to
//! install it.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a start may take before the test fails.
const START_BOUND: Duration = Duration::from_secs(20);

pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts one on a free port and waits until it accepts commands.
    pub(crate) async fn start() -> Self {
        // A port the OS just gave out and took back: free unless something takes it between.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(port).await
    }

    /// Starts one on `port` (empty: nothing is saved between runs).
    pub(crate) async fn start_on(port: u16) -> Self {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install it with tests/redis/setup.sh")
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Redis says when it accepts connections: wait for that line, not for a time.
        let ready = tokio::time::timeout(START_BOUND, async {
            while let Some(line) = lines.next_line().await.expect("redis-server output") {
                if line.contains("Ready to accept connections") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "redis-server on port {port} did not start");
        // Keep reading its log, so that a full pipe never stalls it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let server = Self {
            child: Some(child),
            port,
        };
        let mut conn = server.connection().await;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("PING");
        assert_eq!(pong, "PONG");
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("URL")
            .get_multiplexed_async_connection()
            .await
            .expect("a connection to the test's redis-server")
    }

    /// Kills it (SIGKILL: nothing is saved, clients see their connections drop).
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }

    /// Kills it and starts an empty one on the same port.
    pub(crate) async fn restart(&mut self) {
        self.kill().await;
        *self = Self::start_on(self.port).await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
