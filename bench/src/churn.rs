//! `churn`: one streamer; players join (config → subscribe), get the streamer's offer and leave,
//! in a loop with bounded concurrency for `--duration` seconds. The streamer answers each
//! `playerConnected` with an offer and counts, per player id, one `playerConnected` per
//! subscribe and one `playerDisconnected` per `playerConnected`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::time::timeout;

use crate::peers::{Counts, UntilStopped, await_listed, identify, next_skipping_count, sdp};
use crate::util::{self, CpuMark, Ws, kind};
use crate::{Cli, Report};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Seconds of joining and leaving.
    #[arg(long, default_value_t = 5.0, value_parser = util::positive_seconds)]
    duration: f64,
    /// Players joining or leaving at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Size of each offer's SDP in bytes.
    #[arg(long, default_value_t = 3000)]
    sdp_bytes: usize,
}

/// What the streamer has seen, shared with the coordinator.
#[derive(Default)]
struct Seen {
    disconnected: AtomicU64,
    progress: Notify,
}

#[derive(Default)]
struct PlayerSeen {
    connected: u64,
    disconnected: u64,
}

/// Answers every `playerConnected` with an offer and checks the connect/disconnect pairs until
/// stopped (see [`UntilStopped`]).
async fn streamer_loop(
    mut ws: Ws,
    sdp_bytes: usize,
    seen: Arc<Seen>,
    stop: watch::Receiver<bool>,
) -> (Counts, u64) {
    let mut counts = Counts::default();
    let mut players: HashMap<String, PlayerSeen> = HashMap::new();
    let offer_sdp = sdp(sdp_bytes, None);
    let mut messages = UntilStopped::new(stop);
    while let Some(v) = messages.next(&mut ws, "churn: streamer", &mut counts).await {
        let Some(id) = v.get("playerId").and_then(Value::as_str).map(str::to_owned) else {
            counts.unexpected += 1;
            eprintln!("churn: streamer: unexpected {v}");
            continue;
        };
        let p = players.entry(id.clone()).or_default();
        match kind(&v) {
            "playerConnected" if p.connected == 0 => {
                p.connected += 1;
                let offer = json!({"type": "offer", "playerId": id, "sdp": offer_sdp});
                if let Err(e) = util::send_json(&mut ws, &offer).await {
                    counts.failed += 1;
                    eprintln!("churn: streamer: send: {e:#}");
                    break;
                }
            }
            "playerDisconnected" if p.connected == 1 && p.disconnected == 0 => {
                p.disconnected += 1;
                seen.disconnected.fetch_add(1, Ordering::AcqRel);
                seen.progress.notify_one();
            }
            _ => {
                counts.unexpected += 1;
                eprintln!("churn: streamer: unexpected {v}");
            }
        }
    }
    let connected = players.values().filter(|p| p.connected > 0).count() as u64;
    for (id, p) in &players {
        if p.connected > 0 && p.disconnected == 0 {
            counts.lost += 1;
            eprintln!("churn: streamer: no playerDisconnected for {id}");
        }
    }
    (counts, connected)
}

/// One join/leave cycle: Ok once the player got its offer and closed.
async fn cycle(url: &str, streamer_id: &str, sdp_bytes: usize) -> Result<()> {
    let mut ws = util::connect(url).await?;
    let v = util::recv_json(&mut ws, util::recv_timeout())
        .await
        .context("config")?;
    if kind(&v) != "config" {
        bail!("expected config, got {v}");
    }
    util::send_json(
        &mut ws,
        &json!({"type": "subscribe", "streamerId": streamer_id}),
    )
    .await?;
    let v = next_skipping_count(&mut ws).await.context("offer")?;
    if kind(&v) != "offer" || v["sdp"].as_str().map_or(0, str::len) != sdp_bytes {
        bail!("expected an offer of {sdp_bytes} bytes, got {v}");
    }
    ws.close(None).await?;
    Ok(())
}

pub(crate) async fn run(cli: &Cli, args: &Args) -> Result<Report> {
    if args.concurrency == 0 {
        bail!("churn needs --concurrency above zero");
    }
    let pid = cli.server_pid;
    let total_cpu = CpuMark::now(pid)?;
    let streamer_id = "BenchChurn";
    let streamer = identify(&cli.streamer, streamer_id).await?;
    await_listed(cli, &[streamer_id.to_owned()]).await?;
    let seen = Arc::new(Seen::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let streamer = tokio::spawn(streamer_loop(
        streamer,
        args.sdp_bytes,
        Arc::clone(&seen),
        stop_rx,
    ));

    let cpu = CpuMark::now(pid)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let cycles = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let workers = (0..args.concurrency).map(|_| {
        let (url, cycles, failures) = (
            cli.player.clone(),
            Arc::clone(&cycles),
            Arc::clone(&failures),
        );
        let sdp_bytes = args.sdp_bytes;
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let began = Instant::now();
                match cycle(&url, streamer_id, sdp_bytes).await {
                    Ok(()) => {
                        latencies.push(began.elapsed());
                        cycles.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(e) => {
                        if failures.fetch_add(1, Ordering::AcqRel) < 5 {
                            eprintln!("churn: player: {e:#}");
                        }
                    }
                }
            }
            latencies
        })
    });
    let mut latencies = Vec::new();
    for w in join_all(workers).await {
        latencies.extend(w.context("player task")?);
    }
    let elapsed = start.elapsed();
    let completed = cycles.load(Ordering::Acquire);

    // Every player that got its offer has closed: wait for the last playerDisconnected.
    while seen.disconnected.load(Ordering::Acquire) < completed {
        if timeout(util::recv_timeout(), seen.progress.notified())
            .await
            .is_err()
        {
            break;
        }
    }
    let settled = start.elapsed();
    let (server_s, _) = cpu.since(pid)?;
    let _ = stop_tx.send(true);
    let (mut counts, connected) = streamer.await.context("streamer task")?;
    counts.failed += failures.load(Ordering::Acquire);
    let disconnected = seen.disconnected.load(Ordering::Acquire);
    // Offers only follow playerConnected, so this can only fail if ids were reused.
    counts.lost += completed.saturating_sub(connected);
    let (server_cpu_s, generator_cpu_s) = total_cpu.since(pid)?;

    let (p50, p99, max) = util::percentiles(&mut latencies);
    let per_s = completed as f64 / elapsed.as_secs_f64().max(1e-9);
    let server_us_per_cycle = server_s
        .filter(|_| completed > 0)
        .map(|s| s * 1e6 / completed as f64);
    eprintln!(
        "churn: {completed} join/leave cycles in {:.3} s = {per_s:.0}/s; cycle p50 {p50:.0} µs p99 {p99:.0} µs max {max:.0} µs; {connected} playerConnected, {disconnected} playerDisconnected (settled after {:.3} s)",
        elapsed.as_secs_f64(),
        settled.as_secs_f64()
    );
    if let Some(us) = server_us_per_cycle {
        eprintln!("server CPU: {us:.1} µs per cycle (connect, subscribe, offer, leave)");
    }
    Ok(Report {
        scenario: "churn",
        params: json!({
            "duration_s": args.duration,
            "concurrency": args.concurrency,
            "sdp_bytes": args.sdp_bytes,
            "threads": cli.threads,
        }),
        results: json!({
            "cycles": completed,
            "elapsed_s": elapsed.as_secs_f64(),
            "cycles_per_s": per_s,
            "latency_us": {"p50": p50, "p99": p99, "max": max},
            "player_connected": connected,
            "player_disconnected": disconnected,
            "server_cpu_us_per_cycle": server_us_per_cycle,
        }),
        lost: counts.lost,
        unexpected: counts.unexpected,
        failed: counts.failed,
        server_cpu_s,
        generator_cpu_s,
    })
}
