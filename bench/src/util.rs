//! Shared helpers: loopback URL check, `/proc` readings, latency percentiles, WebSocket IO.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use rustls::ClientConfig;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single expected message may take before it counts as lost (`--timeout`).
static RECV_TIMEOUT: OnceLock<Duration> = OnceLock::new();

/// Sets the wait of [`recv_timeout`]; the first call wins.
pub(crate) fn set_recv_timeout(wait: Duration) {
    let _ = RECV_TIMEOUT.set(wait);
}

/// How long any single expected message may take before it counts as lost (default 10 s).
pub(crate) fn recv_timeout() -> Duration {
    *RECV_TIMEOUT.get_or_init(|| Duration::from_secs(10))
}

/// Linux reports `/proc/PID/stat` times in clock ticks; `sysconf(_SC_CLK_TCK)` is 100 on every
/// mainstream Linux build (USER_HZ), and this crate forbids the unsafe FFI call that would ask.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Returns the host of a `ws://` or `wss://` URL if it is a loopback address, else an error.
pub(crate) fn check_loopback(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or_else(|| anyhow!("{url}: only ws:// and wss:// URLs are supported"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed
            .split(']')
            .next()
            .ok_or_else(|| anyhow!("{url}: bad IPv6 host"))?
    } else {
        authority.split(':').next().unwrap_or("")
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!(
            "{url}: host {host:?} is not a loopback address (127.0.0.0/8, ::1, localhost); refusing to connect"
        );
    }
    Ok(())
}

/// Parses a duration in seconds that is finite and above zero (a clap value parser).
pub(crate) fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds above 0 and at most 86400"
        )),
    }
}

/// Resident set size of `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// CPU seconds (utime + stime, fields 14 and 15 of `/proc/PID/stat`) used so far.
pub(crate) fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces: count fields after its closing ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3, so field n is at index n - 3.
    let tick = |n: usize| -> Result<f64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64)
            .ok_or_else(|| anyhow!("no field {n} in /proc/{pid}/stat"))
    };
    Ok((tick(14)? + tick(15)?) / CLOCK_TICKS_PER_SEC)
}

/// More server-side processes (`--also-pid`) whose CPU time [`CpuMark`] adds to the server's.
static ALSO_PIDS: OnceLock<Vec<u32>> = OnceLock::new();

/// Sets the processes of [`ALSO_PIDS`]; the first call wins.
pub(crate) fn set_also_pids(pids: Vec<u32>) {
    let _ = ALSO_PIDS.set(pids);
}

/// CPU seconds used so far by the server `pid` and every `--also-pid` process together.
fn server_cpu_seconds(pid: u32) -> Result<f64> {
    let mut total = cpu_seconds(&pid.to_string())?;
    for also in ALSO_PIDS.get().map_or(&[][..], Vec::as_slice) {
        total += cpu_seconds(&also.to_string())?;
    }
    Ok(total)
}

/// CPU-time snapshot of the server (if known; with any `--also-pid` processes) and of this
/// generator.
#[derive(Clone, Copy)]
pub(crate) struct CpuMark {
    server: Option<f64>,
    generator: f64,
}

impl CpuMark {
    pub(crate) fn now(server_pid: Option<u32>) -> Result<Self> {
        Ok(Self {
            server: server_pid.map(server_cpu_seconds).transpose()?,
            generator: cpu_seconds("self")?,
        })
    }

    /// (server CPU seconds, generator CPU seconds) since `self`.
    pub(crate) fn since(self, server_pid: Option<u32>) -> Result<(Option<f64>, f64)> {
        let now = Self::now(server_pid)?;
        Ok((
            now.server.zip(self.server).map(|(a, b)| a - b),
            now.generator - self.generator,
        ))
    }
}

/// Latency summary in microseconds: p50, p99, max (nearest-rank); zeros when empty.
pub(crate) fn percentiles(samples: &mut [Duration]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    samples.sort_unstable();
    let rank = |p: f64| {
        let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e6
    };
    (rank(0.50), rank(0.99), rank(1.0))
}

/// The `--tls-ca` trust for `wss://` URLs, set once at start by `--tls`.
static TLS: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// Makes [`connect`] open `wss://` URLs trusting `config`; the first call wins.
pub(crate) fn set_tls(config: Arc<ClientConfig>) {
    let _ = TLS.set(config);
}

/// Opens a WebSocket with Nagle disabled; `wss://` with the `--tls` trust.
pub(crate) async fn connect(url: &str) -> Result<Ws> {
    connect_with(url, TLS.get()).await
}

/// Opens a WebSocket with Nagle disabled; `wss://` trusting `tls` only (never the system's
/// roots). A `ws://` URL goes the plain way it always did: no connector, the `Plain` stream.
pub(crate) async fn connect_with(url: &str, tls: Option<&Arc<ClientConfig>>) -> Result<Ws> {
    let connector = if url.starts_with("wss://") {
        let config = tls.ok_or_else(|| anyhow!("{url}: a wss:// URL needs --tls and --tls-ca"))?;
        Some(Connector::Rustls(Arc::clone(config)))
    } else {
        None
    };
    let (ws, _) = timeout(
        recv_timeout(),
        tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector),
    )
    .await
    .map_err(|_| anyhow!("connect to {url} timed out"))?
    .with_context(|| format!("connect to {url}"))?;
    Ok(ws)
}

/// Next text message parsed as JSON (pings/pongs skipped); error on close, timeout or bad JSON.
pub(crate) async fn recv_json(ws: &mut Ws, wait: Duration) -> Result<Value> {
    loop {
        let msg = timeout(wait, ws.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for a message"))?
            .ok_or_else(|| anyhow!("connection closed"))??;
        match msg {
            Message::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Binary(_) => bail!("unexpected binary message"),
            Message::Close(frame) => bail!("closed by server: {frame:?}"),
        }
    }
}

pub(crate) async fn send_json(ws: &mut Ws, value: &Value) -> Result<()> {
    ws.send(Message::text(value.to_string())).await?;
    Ok(())
}

/// The `type` field of a message, or "".
pub(crate) fn kind(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("")
}
