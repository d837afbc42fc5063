//! `subscribe`: S streamers identify; P players per streamer do what Epic's frontend does
//! (config → listStreamers → subscribe); each streamer answers `playerConnected` with an offer and
//! K ICE candidates, each player replies with an answer and K candidates. Then all players close
//! and every streamer must see exactly one `playerDisconnected` per player.
//!
//! Players do not know the id the server gives them, so each player writes its own token into
//! its answer's SDP (`a=bench-token:N`); the streamer maps the server's playerId to that token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::timeout;

use crate::peers::{
    Counts, UntilStopped, await_listed, candidate, identify, next_skipping_count, sdp, token_of,
};
use crate::util::{self, CpuMark, Ws, kind};
use crate::{Cli, Report};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Streamers.
    #[arg(short = 's', long, default_value_t = 1)]
    streamers: usize,
    /// Players per streamer.
    #[arg(short = 'p', long, default_value_t = 100)]
    players: usize,
    /// Size of each offer's and answer's SDP in bytes.
    #[arg(long, default_value_t = 3000)]
    sdp_bytes: usize,
    /// ICE candidates sent each way per negotiation.
    #[arg(long, default_value_t = 2)]
    candidates: usize,
    /// Players negotiating at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
}

/// What streamers tell the coordinator.
enum Event {
    /// All of player `token`'s candidates arrived at its streamer.
    Done {
        token: usize,
        at: Instant,
    },
    Disconnected,
}

#[derive(Default)]
struct PlayerState {
    answered: bool,
    token: Option<usize>,
    candidates: usize,
    disconnects: u64,
}

async fn streamer_loop(
    mut ws: Ws,
    args: Arc<Args>,
    events: mpsc::UnboundedSender<Event>,
    stop: watch::Receiver<bool>,
) -> Counts {
    let mut counts = Counts::default();
    let mut players: HashMap<String, PlayerState> = HashMap::new();
    let offer_sdp = sdp(args.sdp_bytes, None);
    let unexpected = |why: String, counts: &mut Counts| {
        counts.unexpected += 1;
        eprintln!("streamer: unexpected {why}");
    };
    let mut messages = UntilStopped::new(stop);
    while let Some(v) = messages.next(&mut ws, "streamer", &mut counts).await {
        let Some(id) = v.get("playerId").and_then(Value::as_str).map(str::to_owned) else {
            unexpected(format!("message without playerId: {v}"), &mut counts);
            continue;
        };
        match (kind(&v), players.get_mut(&id)) {
            ("playerConnected", None) => {
                players.insert(id.clone(), PlayerState::default());
                let mut out = vec![json!({"type": "offer", "playerId": id, "sdp": offer_sdp})];
                out.extend((0..args.candidates).map(|k| candidate(k, Some(&id))));
                for m in &out {
                    if let Err(e) = util::send_json(&mut ws, m).await {
                        counts.failed += 1;
                        eprintln!("streamer: send: {e:#}");
                    }
                }
            }
            ("answer", Some(p)) if !p.answered => {
                p.answered = true;
                let sdp = v["sdp"].as_str().unwrap_or("");
                p.token = token_of(sdp);
                if sdp.len() != args.sdp_bytes || p.token.is_none() {
                    unexpected(
                        format!("answer SDP ({} bytes) for {id}", sdp.len()),
                        &mut counts,
                    );
                }
                if args.candidates == 0
                    && let Some(token) = p.token
                {
                    let _ = events.send(Event::Done {
                        token,
                        at: Instant::now(),
                    });
                }
            }
            ("iceCandidate", Some(p)) if p.answered && p.candidates < args.candidates => {
                p.candidates += 1;
                if p.candidates == args.candidates
                    && let Some(token) = p.token
                {
                    let _ = events.send(Event::Done {
                        token,
                        at: Instant::now(),
                    });
                }
            }
            ("playerDisconnected", Some(p)) => {
                p.disconnects += 1;
                if p.disconnects > 1 {
                    unexpected(
                        format!("duplicate playerDisconnected for {id}"),
                        &mut counts,
                    );
                }
                let _ = events.send(Event::Disconnected);
            }
            _ => unexpected(v.to_string(), &mut counts),
        }
    }
    for (id, p) in &players {
        let missing = u64::from(!p.answered)
            + (args.candidates - p.candidates.min(args.candidates)) as u64
            + u64::from(p.disconnects == 0);
        if missing > 0 {
            eprintln!("streamer: lost {missing} message(s) for {id}");
        }
        counts.lost += missing;
    }
    counts
}

struct PlayerOutcome {
    token: usize,
    subscribed_at: Option<Instant>,
    ws: Option<Ws>,
    counts: Counts,
}

/// One player's negotiation. Returns with the socket still open.
async fn player(url: String, streamer_id: String, token: usize, args: Arc<Args>) -> PlayerOutcome {
    let mut out = PlayerOutcome {
        token,
        subscribed_at: None,
        ws: None,
        counts: Counts::default(),
    };
    let mut ws = match util::connect(&url).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("player {token}: {e:#}");
            out.counts.failed += 1;
            return out;
        }
    };
    if let Err(e) = negotiate(&mut ws, &streamer_id, token, &args, &mut out).await {
        eprintln!("player {token}: {e:#}");
        out.counts.lost += 1;
    }
    out.ws = Some(ws);
    out
}

async fn negotiate(
    ws: &mut Ws,
    streamer_id: &str,
    token: usize,
    args: &Args,
    out: &mut PlayerOutcome,
) -> Result<()> {
    let v = util::recv_json(ws, util::recv_timeout())
        .await
        .context("config")?;
    if kind(&v) != "config" {
        out.counts.unexpected += 1;
        bail!("expected config, got {v}");
    }
    util::send_json(ws, &json!({"type": "listStreamers"})).await?;
    let v = next_skipping_count(ws).await.context("streamerList")?;
    let listed = v["ids"]
        .as_array()
        .is_some_and(|ids| ids.iter().any(|i| i == streamer_id));
    if kind(&v) != "streamerList" || !listed {
        out.counts.unexpected += 1;
        bail!("expected streamerList with {streamer_id}, got {v}");
    }
    util::send_json(ws, &json!({"type": "subscribe", "streamerId": streamer_id})).await?;
    out.subscribed_at = Some(Instant::now());
    let v = util::recv_json(ws, util::recv_timeout())
        .await
        .context("offer")?;
    let offer_len = v["sdp"].as_str().map_or(0, str::len);
    if kind(&v) != "offer" || offer_len != args.sdp_bytes {
        out.counts.unexpected += 1;
        bail!("expected an offer of {} bytes, got {v}", args.sdp_bytes);
    }
    let answer_sdp = sdp(args.sdp_bytes, Some(token));
    util::send_json(
        ws,
        &json!({"type": "answer", "sdp": answer_sdp, "minBitrateBps": 0, "maxBitrateBps": 0}),
    )
    .await?;
    for k in 0..args.candidates {
        util::send_json(ws, &candidate(k, None)).await?;
    }
    for k in 0..args.candidates {
        let v = util::recv_json(ws, util::recv_timeout())
            .await
            .with_context(|| format!("candidate {k}"))?;
        if kind(&v) != "iceCandidate" {
            out.counts.unexpected += 1;
            bail!("expected iceCandidate, got {v}");
        }
    }
    Ok(())
}

pub(crate) async fn run(cli: &Cli, args: &Args) -> Result<Report> {
    let args = Arc::new(Args { ..*args });
    let pid = cli.server_pid;
    let total_cpu = CpuMark::now(pid)?;
    let ids: Vec<String> = (0..args.streamers)
        .map(|i| format!("BenchStreamer{i}"))
        .collect();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut streamers = Vec::new();
    for id in &ids {
        let ws = identify(&cli.streamer, id).await?;
        streamers.push(tokio::spawn(streamer_loop(
            ws,
            Arc::clone(&args),
            events_tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(events_tx);
    await_listed(cli, &ids).await?;

    // Negotiations.
    let negotiation_cpu = CpuMark::now(pid)?;
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let start = Instant::now();
    let tasks = (0..args.streamers * args.players).map(|token| {
        let (permits, args) = (Arc::clone(&permits), Arc::clone(&args));
        let (url, id) = (cli.player.clone(), ids[token / args.players].clone());
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            player(url, id, token, args).await
        })
    });
    let mut counts = Counts::default();
    let mut subscribed_at = HashMap::new();
    let mut held = Vec::new();
    for outcome in join_all(tasks).await {
        let outcome = outcome.context("player task")?;
        counts.add(&outcome.counts);
        if let Some(at) = outcome.subscribed_at {
            subscribed_at.insert(outcome.token, at);
        }
        held.extend(outcome.ws);
    }
    let mut done_at = HashMap::new();
    let mut disconnects = 0;
    while done_at.len() < subscribed_at.len() {
        match timeout(util::recv_timeout(), events.recv()).await {
            Ok(Some(Event::Done { token, at })) => {
                if done_at.insert(token, at).is_some() {
                    counts.unexpected += 1;
                }
            }
            Ok(Some(Event::Disconnected)) => disconnects += 1,
            Ok(None) | Err(_) => break,
        }
    }
    let end = done_at.values().max().copied().unwrap_or(start);
    let elapsed = end.duration_since(start);
    let (negotiation_server_s, _) = negotiation_cpu.since(pid)?;
    let mut latencies: Vec<Duration> = subscribed_at
        .iter()
        .filter_map(|(t, sub)| done_at.get(t).map(|d| d.duration_since(*sub)))
        .collect();
    counts.lost += (subscribed_at.len() - latencies.len()) as u64;
    let negotiations = latencies.len();

    // Every player leaves; each streamer must see one playerDisconnected per player.
    let players_open = held.len();
    join_all(held.iter_mut().map(|ws| ws.close(None))).await;
    drop(held);
    while disconnects < players_open {
        match timeout(util::recv_timeout(), events.recv()).await {
            Ok(Some(Event::Disconnected)) => disconnects += 1,
            Ok(Some(Event::Done { .. })) => counts.unexpected += 1,
            Ok(None) | Err(_) => break,
        }
    }
    let _ = stop_tx.send(true);
    for s in join_all(streamers).await {
        counts.add(&s.context("streamer task")?);
    }
    let (server_cpu_s, generator_cpu_s) = total_cpu.since(pid)?;

    let (p50, p99, max) = util::percentiles(&mut latencies);
    let per_s = negotiations as f64 / elapsed.as_secs_f64().max(1e-9);
    let server_us_per_negotiation = negotiation_server_s
        .filter(|_| negotiations > 0)
        .map(|s| s * 1e6 / negotiations as f64);
    eprintln!(
        "subscribe: {negotiations}/{} negotiations in {:.3} s = {per_s:.0}/s; subscribe→candidates at streamer p50 {p50:.0} µs p99 {p99:.0} µs max {max:.0} µs; {disconnects} playerDisconnected",
        args.streamers * args.players,
        elapsed.as_secs_f64()
    );
    if let Some(us) = server_us_per_negotiation {
        eprintln!("server CPU: {us:.1} µs per negotiation (incl. connect)");
    }
    Ok(Report {
        scenario: "subscribe",
        params: json!({
            "streamers": args.streamers,
            "players_per_streamer": args.players,
            "sdp_bytes": args.sdp_bytes,
            "candidates": args.candidates,
            "concurrency": args.concurrency,
            "threads": cli.threads,
        }),
        results: json!({
            "negotiations": negotiations,
            "elapsed_s": elapsed.as_secs_f64(),
            "negotiations_per_s": per_s,
            "latency_us": {"p50": p50, "p99": p99, "max": max},
            "player_disconnected": disconnects,
            "server_cpu_us_per_negotiation": server_us_per_negotiation,
        }),
        lost: counts.lost,
        unexpected: counts.unexpected,
        failed: counts.failed,
        server_cpu_s,
        generator_cpu_s,
    })
}
