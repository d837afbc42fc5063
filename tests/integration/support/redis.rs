//! A real `redis-server` for the cluster tests: one process per [`RedisServer`], on a free
//! 127.0.0.1 port, with nothing persisted (`--save "" --appendonly no`), so a restart comes back
//! empty, as a Redis that lost its memory does. Killed (SIGKILL) on drop.
//! `tests/redis/setup.sh` installs `redis-server` from Debian.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// How long a started redis-server has to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two PING attempts while redis-server starts: it answers within milliseconds, and a
/// connection refused comes back at once, so this only paces the poll.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Ports tried when another process takes the free port first.
const START_ATTEMPTS: usize = 5;

/// A running redis-server; see the module doc.
pub(crate) struct RedisServer {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl RedisServer {
    /// Starts redis-server on a free port and waits until it answers PING.
    pub(crate) async fn start() -> Self {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut server = Self {
                port,
                child: None,
                log: log_path(port),
            };
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                // The port was taken between our probe and redis-server's bind: try another.
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start in {START_ATTEMPTS} attempts: {last_error}");
    }

    /// `redis://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Kills redis-server with SIGKILL (no shutdown, nothing saved) and reaps it. Connections to
    /// it see a reset; new ones are refused until [`RedisServer::restart`].
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means it already exited; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills redis-server if it runs, and starts a new one on the same port, empty; returns once
    /// it answers PING.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn_and_wait().await {
            panic!("redis-server did not restart on port {}: {e}", self.port);
        }
    }

    /// A new connection to it, for a test to look at or change what the nodes keep there.
    pub(crate) async fn connection(&self) -> redis::aio::MultiplexedConnection {
        match connect(&self.url()).await {
            Ok(connection) => connection,
            Err(e) => panic!("cannot connect to redis-server at {}: {e}", self.url()),
        }
    }

    /// Runs one command and returns its reply, for a test.
    pub(crate) async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> T {
        let mut connection = self.connection().await;
        match command.query_async(&mut connection).await {
            Ok(reply) => reply,
            Err(e) => panic!("redis command failed: {e}"),
        }
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        {
            let log = std::fs::File::create(&self.log)
                .map_err(|e| format!("cannot create {}: {e}", self.log.display()))?;
            let err_log = log
                .try_clone()
                .map_err(|e| format!("cannot clone the log file's handle: {e}"))?;
            let child = Command::new("redis-server")
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no", "--loglevel", "warning"])
                // Nothing is written there with persistence off; keep it out of the work tree.
                .arg("--dir")
                .arg(std::env::temp_dir())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err_log)
                .spawn();
            let child = match child {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "redis-server is not installed: run tests/redis/setup.sh (it installs \
                     Debian's redis-server)"
                ),
                Err(e) => panic!("cannot start redis-server: {e}"),
            };
            self.child = Some(child);
            self.wait_for_ping().await
        }
    }

    /// Polls PING until it answers, redis-server exits, or [`READY_TIMEOUT`] passes.
    async fn wait_for_ping(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = self.url();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited ({status}): {}",
                    self.port,
                    std::fs::read_to_string(&self.log)
                        .unwrap_or_default()
                        .trim()
                ));
            }
            let ping = async {
                let mut connection = connect(&url).await?;
                let pong: String = redis::cmd("PING").query_async(&mut connection).await?;
                let info: String = redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut connection)
                    .await?;
                Ok::<_, redis::RedisError>((pong, server_pid(&info)))
            };
            let ours = self.child.as_ref().map(Child::id);
            let last = match tokio::time::timeout(READY_TIMEOUT, ping).await {
                Ok(Ok((pong, pid))) if pong == "PONG" && pid == ours => return Ok(()),
                // Another Redis holds the port (ours is about to exit, failing to bind).
                Ok(Ok((_, Some(pid)))) if Some(pid) != ours => {
                    self.kill();
                    return Err(format!(
                        "port {} is another redis-server's (pid {pid})",
                        self.port
                    ));
                }
                Ok(Ok((pong, _))) => format!("PING answered {pong:?}"),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "PING timed out".to_owned(),
            };
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}: \
                     {last}",
                    self.port
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `process_id` of an `INFO server` reply: which redis-server answered.
fn server_pid(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

/// A port nothing listens on right now (the OS's pick for 127.0.0.1:0).
fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 for a free port");
    listener.local_addr().expect("local address").port()
}

fn log_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!(
        "signalling-test-redis-{}-{port}.log",
        std::process::id()
    ))
}

/// The support's own test: start, PING, restart empty, kill, drop.
#[cfg(test)]
mod tests {
    use super::*;

    async fn ping(url: &str) -> redis::RedisResult<String> {
        let mut connection = connect(url).await?;
        redis::cmd("PING").query_async(&mut connection).await
    }

    #[tokio::test]
    async fn redis_starts_restarts_empty_is_killed_and_dies_with_its_handle() {
        let mut redis = RedisServer::start().await;
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
        assert_eq!(ping(&redis.url()).await.expect("PING"), "PONG");
        let () = redis.query(redis::cmd("SET").arg("k").arg("v")).await;
        let value: Option<String> = redis.query(redis::cmd("GET").arg("k")).await;
        assert_eq!(value.as_deref(), Some("v"));

        let port = redis.port();
        redis.restart().await;
        assert_eq!(redis.port(), port, "a restart keeps the port");
        assert_eq!(ping(&redis.url()).await.expect("PING"), "PONG");
        let value: Option<String> = redis.query(redis::cmd("GET").arg("k")).await;
        assert_eq!(value, None, "a restarted Redis is empty");

        redis.kill();
        assert!(
            ping(&redis.url()).await.is_err(),
            "a killed Redis answers nothing"
        );
        redis.restart().await;
        assert_eq!(ping(&redis.url()).await.expect("PING"), "PONG");

        let other = RedisServer::start().await;
        assert_ne!(other.port(), redis.port());
        let url = redis.url();
        drop(redis);
        assert!(
            ping(&url).await.is_err(),
            "dropping the handle kills redis-server"
        );
        assert_eq!(ping(&other.url()).await.expect("PING"), "PONG");
    }
}
