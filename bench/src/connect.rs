//! `connect`: N idle player connections, each held open until `config` arrives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::future::join_all;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::util::{self, CpuMark, Ws};
use crate::{Cli, Report};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Number of player connections.
    #[arg(short = 'n', long, default_value_t = 1000)]
    n: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
}

enum Outcome {
    Ok(Box<Ws>, Duration),
    /// Connected, but the first message was not `config`.
    Unexpected(String),
    Failed(String),
}

async fn open_one(url: String) -> Outcome {
    let start = Instant::now();
    let mut ws = match util::connect(&url).await {
        Ok(ws) => ws,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };
    match util::recv_json(&mut ws, util::recv_timeout()).await {
        Ok(v) if util::kind(&v) == "config" => Outcome::Ok(Box::new(ws), start.elapsed()),
        Ok(v) => Outcome::Unexpected(format!("expected config, got {v}")),
        Err(e) => Outcome::Failed(format!("waiting for config: {e:#}")),
    }
}

pub(crate) async fn run(cli: &Cli, args: &Args) -> Result<Report> {
    let pid = cli.server_pid;
    let rss_before = pid.map(util::rss_kib).transpose()?;
    let cpu = CpuMark::now(pid)?;
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let start = Instant::now();
    let tasks = (0..args.n).map(|_| {
        let permits = Arc::clone(&permits);
        let url = cli.player.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            open_one(url).await
        })
    });
    let outcomes = join_all(tasks).await;
    let elapsed = start.elapsed();
    let (mut held, mut latencies, mut unexpected, mut failed) = (Vec::new(), Vec::new(), 0, 0);
    for outcome in outcomes {
        match outcome {
            Ok(Outcome::Ok(ws, latency)) => {
                held.push(ws);
                latencies.push(latency);
            }
            Ok(Outcome::Unexpected(why)) => {
                unexpected += 1;
                eprintln!("unexpected: {why}");
            }
            Ok(Outcome::Failed(why)) => {
                failed += 1;
                eprintln!("failed: {why}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("failed: task {e}");
            }
        }
    }
    let connected = held.len();
    // Let the server settle (accept bookkeeping, playerCount sends) before reading RSS.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_held = pid.map(util::rss_kib).transpose()?;
    join_all(held.iter_mut().map(|ws| ws.close(None))).await;
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = pid.map(util::rss_kib).transpose()?;
    let (server_cpu_s, generator_cpu_s) = cpu.since(pid)?;

    let (p50, p99, max) = util::percentiles(&mut latencies);
    let per_s = connected as f64 / elapsed.as_secs_f64();
    let kib_per_conn = rss_before
        .zip(rss_held)
        .filter(|_| connected > 0)
        .map(|(b, h)| (h as f64 - b as f64) / connected as f64);
    let server_cpu_us_per_conn = server_cpu_s
        .filter(|_| connected > 0)
        .map(|s| s * 1e6 / connected as f64);
    eprintln!(
        "connect: {connected}/{} connections in {:.3} s = {per_s:.0}/s; connect→config p50 {p50:.0} µs p99 {p99:.0} µs max {max:.0} µs",
        args.n,
        elapsed.as_secs_f64()
    );
    if let (Some(b), Some(h), Some(a)) = (rss_before, rss_held, rss_after) {
        eprintln!(
            "server RSS: before {b} KiB, held {h} KiB, after {a} KiB; {:.2} KiB per idle connection",
            kib_per_conn.unwrap_or(0.0)
        );
    }
    if let Some(us) = server_cpu_us_per_conn {
        eprintln!("server CPU: {us:.1} µs per connection (open + config + close)");
    }
    Ok(Report {
        scenario: "connect",
        params: json!({"n": args.n, "concurrency": args.concurrency, "threads": cli.threads}),
        results: json!({
            "connections": connected,
            "elapsed_s": elapsed.as_secs_f64(),
            "connections_per_s": per_s,
            "latency_us": {"p50": p50, "p99": p99, "max": max},
            "rss_kib": {"before": rss_before, "held": rss_held, "after": rss_after},
            "kib_per_idle_connection": kib_per_conn,
            "server_cpu_us_per_connection": server_cpu_us_per_conn,
        }),
        lost: 0,
        unexpected,
        failed,
        server_cpu_s,
        generator_cpu_s,
    })
}
