//! `relay`: one streamer and P players, each subscribed and offered; then the players and the
//! streamer exchange iceCandidate-sized messages for `--duration` seconds, flat out with a
//! window of messages in flight per direction, or paced at a fixed `--rate` (both directions
//! together, half each way). Every message carries a per-player sequence number and its send
//! time on the one monotonic clock this process shares, so the receiver checks order and loss
//! and measures one-way latency.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{MissedTickBehavior, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::peers::{Counts, await_listed, identify, next_skipping_count, sdp};
use crate::util::{self, CpuMark, Ws, kind};
use crate::{Cli, Report};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Players, all subscribed to the one streamer.
    #[arg(short = 'p', long, default_value_t = 10)]
    players: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0, value_parser = util::positive_seconds)]
    duration: f64,
    /// Messages per second, both directions together (half each way); 0 = flat out.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Flat out: messages in flight per direction.
    #[arg(long, default_value_t = 256)]
    window: usize,
}

/// One direction's shared counters.
pub(crate) struct Direction {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    /// Flat out: a permit per message that may be in flight.
    window: Semaphore,
}

impl Direction {
    fn new(window: usize) -> Self {
        Self {
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            window: Semaphore::new(window),
        }
    }

    pub(crate) fn outstanding(&self) -> u64 {
        let sent = self.sent.load(Ordering::Acquire);
        sent.saturating_sub(self.received.load(Ordering::Acquire))
    }
}

/// One streamer's relay: both directions, and the clock send times are read on.
pub(crate) struct Shared {
    pub(crate) epoch: Instant,
    pub(crate) up: Direction,
    pub(crate) down: Direction,
    /// Set once the writers stopped: receivers then report progress on `progress`.
    pub(crate) draining: AtomicBool,
    pub(crate) progress: Notify,
}

impl Shared {
    /// `window`: messages in flight per direction when flat out (unused when paced).
    pub(crate) fn new(window: usize) -> Self {
        Self {
            epoch: Instant::now(),
            up: Direction::new(window),
            down: Direction::new(window),
            draining: AtomicBool::new(false),
            progress: Notify::new(),
        }
    }

    pub(crate) fn received(&self, dir: &Direction) {
        dir.received.fetch_add(1, Ordering::AcqRel);
        dir.window.add_permits(1);
        if self.draining.load(Ordering::Acquire) {
            self.progress.notify_one();
        }
    }
}

/// The fields a receiver reads; everything else in the message is carried but not parsed.
#[derive(Deserialize)]
pub(crate) struct Probe<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: &'a str,
    #[serde(rename = "playerId")]
    pub(crate) player_id: Option<&'a str>,
    #[serde(rename = "benchSeq")]
    pub(crate) seq: Option<u64>,
    #[serde(rename = "benchT")]
    pub(crate) sent_ns: Option<u64>,
}

/// An iceCandidate as a browser sends it (≈ 240 bytes), plus the sequence number and send time.
fn message(seq: u64, sent_ns: u64, player_id: Option<&str>) -> String {
    let to = player_id.map_or_else(String::new, |id| format!(r#","playerId":"{id}""#));
    format!(
        r#"{{"type":"iceCandidate","candidate":{{"candidate":"candidate:{seq} 1 udp 2122260223 192.0.2.1 {port} typ host generation 0 ufrag Xy7q network-id 1","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"Xy7q"}}{to},"benchSeq":{seq},"benchT":{sent_ns}}}"#,
        port = 50000 + seq % 10000,
    )
}

/// Who a writer sends to: the socket (index into its sinks) and the `playerId` to add.
pub(crate) struct Target {
    pub(crate) sink: usize,
    pub(crate) player_id: Option<String>,
    pub(crate) seq: u64,
}

pub(crate) type Sink = SplitSink<Ws, Message>;
pub(crate) type Stream = SplitStream<Ws>;

/// Sends until `deadline`, round-robin over `targets`; returns its sinks (kept open) and counts.
pub(crate) async fn writer(
    mut sinks: Vec<Sink>,
    mut targets: Vec<Target>,
    shared: Arc<Shared>,
    up: bool,
    rate: Option<f64>,
    deadline: tokio::time::Instant,
) -> (Vec<Sink>, Counts) {
    let mut counts = Counts::default();
    let dir = if up { &shared.up } else { &shared.down };
    let mut dirty = vec![false; sinks.len()];
    let mut next = 0;
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    'send: loop {
        let due = match rate {
            Some(per_s) => {
                for (sink, d) in sinks.iter_mut().zip(&mut dirty) {
                    if std::mem::take(d) && sink.flush().await.is_err() {
                        counts.failed += 1;
                    }
                }
                ticker.tick().await;
                (per_s * start.elapsed().as_secs_f64()) as u64
            }
            None => u64::MAX,
        };
        while dir.sent.load(Ordering::Acquire) < due {
            if tokio::time::Instant::now() >= deadline {
                break 'send;
            }
            if rate.is_none() {
                match dir.window.try_acquire() {
                    Ok(permit) => permit.forget(),
                    Err(_) => {
                        for (sink, d) in sinks.iter_mut().zip(&mut dirty) {
                            if std::mem::take(d) && sink.flush().await.is_err() {
                                counts.failed += 1;
                            }
                        }
                        match timeout_at(deadline, dir.window.acquire()).await {
                            Ok(Ok(permit)) => permit.forget(),
                            _ => break 'send,
                        }
                    }
                }
            }
            let count = targets.len();
            let target = &mut targets[next];
            next = (next + 1) % count;
            let sent_ns = shared.epoch.elapsed().as_nanos() as u64;
            let text = message(target.seq, sent_ns, target.player_id.as_deref());
            target.seq += 1;
            if let Err(e) = sinks[target.sink].feed(Message::text(text)).await {
                eprintln!("relay: send: {e}");
                counts.failed += 1;
                break 'send;
            }
            dirty[target.sink] = true;
            dir.sent.fetch_add(1, Ordering::AcqRel);
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    for sink in &mut sinks {
        if sink.flush().await.is_err() {
            counts.failed += 1;
        }
    }
    (sinks, counts)
}

/// Unexpected messages each reader describes on stderr; the rest are only counted.
pub(crate) const REPORTED: u64 = 5;

/// What a reader hands back: one-way latencies and counts.
pub(crate) struct ReaderOutcome {
    pub(crate) latencies: Vec<Duration>,
    pub(crate) counts: Counts,
}

/// Reads relayed messages until told to stop. `ids` maps the `playerId`s this reader may see
/// to a sender index: for the streamer every player's id; for a player its own id (the server
/// may keep `playerId` on what a streamer sends), which may also be absent.
pub(crate) async fn reader(
    mut stream: Stream,
    ids: HashMap<String, usize>,
    players: usize,
    shared: Arc<Shared>,
    up: bool,
    mut stop: watch::Receiver<bool>,
) -> ReaderOutcome {
    let mut out = ReaderOutcome {
        latencies: Vec::new(),
        counts: Counts::default(),
    };
    let mut expected = vec![0u64; players.max(1)];
    let who = if up { "streamer" } else { "player" };
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = stop.changed() => break,
        };
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(other)) => {
                eprintln!("relay: {who} got {other:?}");
                out.counts.unexpected += 1;
                continue;
            }
            Some(Err(e)) => {
                eprintln!("relay: {who}: {e}");
                out.counts.failed += 1;
                break;
            }
            None => {
                eprintln!("relay: {who}: connection closed");
                out.counts.failed += 1;
                break;
            }
        };
        let Ok(probe) = serde_json::from_str::<Probe>(text.as_str()) else {
            out.counts.unexpected += 1;
            if out.counts.unexpected <= REPORTED {
                eprintln!("relay: {who}: unparsable {text}");
            }
            continue;
        };
        if !up && probe.kind == "playerCount" {
            continue;
        }
        let index = match (up, probe.player_id) {
            (_, Some(id)) => ids.get(id).copied(),
            (false, None) => Some(0),
            (true, None) => None,
        };
        let (Some(index), "iceCandidate", Some(seq), Some(sent_ns)) =
            (index, probe.kind, probe.seq, probe.sent_ns)
        else {
            out.counts.unexpected += 1;
            if out.counts.unexpected <= REPORTED {
                eprintln!("relay: {who}: unexpected {text}");
            }
            continue;
        };
        let now_ns = shared.epoch.elapsed().as_nanos() as u64;
        out.latencies
            .push(Duration::from_nanos(now_ns.saturating_sub(sent_ns)));
        if seq != expected[index] {
            out.counts.unexpected += 1;
            if out.counts.unexpected <= REPORTED {
                eprintln!(
                    "relay: {who}: sequence {seq} where {} was due (player {index})",
                    expected[index]
                );
            }
        }
        expected[index] = seq + 1;
        shared.received(if up { &shared.up } else { &shared.down });
    }
    out
}

/// Connects player `index`, subscribes it and has the streamer offer; returns the player's
/// socket and the id the server gave it.
pub(crate) async fn join(
    cli: &Cli,
    streamer: &mut Ws,
    streamer_id: &str,
    index: usize,
) -> Result<(Ws, String)> {
    let mut ws = util::connect(&cli.player).await?;
    let v = util::recv_json(&mut ws, util::recv_timeout())
        .await
        .context("config")?;
    if kind(&v) != "config" {
        bail!("player {index}: expected config, got {v}");
    }
    util::send_json(
        &mut ws,
        &json!({"type": "subscribe", "streamerId": streamer_id}),
    )
    .await?;
    let v = util::recv_json(streamer, util::recv_timeout())
        .await
        .context("playerConnected")?;
    let Some(id) = v["playerId"]
        .as_str()
        .filter(|_| kind(&v) == "playerConnected")
    else {
        bail!("player {index}: streamer expected playerConnected, got {v}");
    };
    let id = id.to_owned();
    util::send_json(
        streamer,
        &json!({"type": "offer", "playerId": id, "sdp": sdp(3000, None)}),
    )
    .await?;
    let v = next_skipping_count(&mut ws).await.context("offer")?;
    if kind(&v) != "offer" {
        bail!("player {index}: expected offer, got {v}");
    }
    Ok((ws, id))
}

pub(crate) async fn run(cli: &Cli, args: &Args) -> Result<Report> {
    if args.players == 0 || args.window == 0 {
        bail!("relay needs --players and --window above zero");
    }
    let pid = cli.server_pid;
    let total_cpu = CpuMark::now(pid)?;
    let streamer_id = "BenchRelay";
    let mut streamer = identify(&cli.streamer, streamer_id).await?;
    await_listed(cli, &[streamer_id.to_owned()]).await?;
    let mut players = Vec::new();
    let mut ids = HashMap::new();
    for index in 0..args.players {
        let (ws, id) = join(cli, &mut streamer, streamer_id, index).await?;
        ids.insert(id.clone(), index);
        players.push((ws, id));
    }

    let shared = Arc::new(Shared::new(args.window));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = Vec::new();
    let mut player_sinks = Vec::new();
    let mut down_targets = Vec::new();
    let mut up_targets = Vec::new();
    for (index, (ws, id)) in players.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        player_sinks.push(sink);
        down_targets.push(Target {
            sink: 0,
            player_id: Some(id.clone()),
            seq: 0,
        });
        up_targets.push(Target {
            sink: index,
            player_id: None,
            seq: 0,
        });
        readers.push(tokio::spawn(reader(
            stream,
            HashMap::from([(id.clone(), 0)]),
            1,
            Arc::clone(&shared),
            false,
            stop_rx.clone(),
        )));
    }
    let (streamer_sink, streamer_stream) = streamer.split();
    readers.push(tokio::spawn(reader(
        streamer_stream,
        ids,
        args.players,
        Arc::clone(&shared),
        true,
        stop_rx.clone(),
    )));

    let cpu = CpuMark::now(pid)?;
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.duration);
    let each_way = (args.rate > 0).then_some(args.rate as f64 / 2.0);
    let up_writer = tokio::spawn(writer(
        player_sinks,
        up_targets,
        Arc::clone(&shared),
        true,
        each_way,
        deadline,
    ));
    let down_writer = tokio::spawn(writer(
        vec![streamer_sink],
        down_targets,
        Arc::clone(&shared),
        false,
        each_way,
        deadline,
    ));
    let (sinks_up, up_counts) = up_writer.await.context("up writer")?;
    let (sinks_down, down_counts) = down_writer.await.context("down writer")?;
    let sending = start.elapsed();

    // Drain: wait until every message sent has arrived, or until nothing arrives for a while.
    shared.draining.store(true, Ordering::Release);
    while shared.up.outstanding() + shared.down.outstanding() > 0 {
        if timeout(util::recv_timeout(), shared.progress.notified())
            .await
            .is_err()
        {
            break;
        }
    }
    let elapsed = start.elapsed();
    let (server_s, _) = cpu.since(pid)?;
    let _ = stop_tx.send(true);
    let mut counts = Counts::default();
    counts.add(&up_counts);
    counts.add(&down_counts);
    let (mut up_lat, mut down_lat) = (Vec::new(), Vec::new());
    let last = readers.len() - 1;
    for (i, r) in readers.into_iter().enumerate() {
        let outcome = r.await.context("reader task")?;
        counts.add(&outcome.counts);
        if i == last {
            up_lat = outcome.latencies;
        } else {
            down_lat.extend(outcome.latencies);
        }
    }
    drop((sinks_up, sinks_down));
    let (up_sent, down_sent) = (
        shared.up.sent.load(Ordering::Acquire),
        shared.down.sent.load(Ordering::Acquire),
    );
    let (up_received, down_received) = (
        shared.up.received.load(Ordering::Acquire),
        shared.down.received.load(Ordering::Acquire),
    );
    counts.lost += up_sent.saturating_sub(up_received) + down_sent.saturating_sub(down_received);
    let (server_cpu_s, generator_cpu_s) = total_cpu.since(pid)?;

    let secs = sending.as_secs_f64().max(1e-9);
    let (up_p50, up_p99, up_max) = util::percentiles(&mut up_lat);
    let (down_p50, down_p99, down_max) = util::percentiles(&mut down_lat);
    let relayed = up_received + down_received;
    let server_us_per_message = server_s
        .filter(|_| relayed > 0)
        .map(|s| s * 1e6 / relayed as f64);
    let mode = if args.rate > 0 {
        format!("at {} msg/s", args.rate)
    } else {
        format!("flat out, window {}", args.window)
    };
    eprintln!(
        "relay ({mode}, {} players): player→streamer {up_received}/{up_sent} = {:.0}/s, one-way p50 {up_p50:.0} µs p99 {up_p99:.0} µs max {up_max:.0} µs",
        args.players,
        up_received as f64 / secs
    );
    eprintln!(
        "relay: streamer→player {down_received}/{down_sent} = {:.0}/s, one-way p50 {down_p50:.0} µs p99 {down_p99:.0} µs max {down_max:.0} µs; drained in {:.3} s",
        down_received as f64 / secs,
        (elapsed - sending).as_secs_f64()
    );
    if let Some(us) = server_us_per_message {
        eprintln!("server CPU: {us:.2} µs per message relayed");
    }
    Ok(Report {
        scenario: "relay",
        params: json!({
            "players": args.players,
            "duration_s": args.duration,
            "rate": args.rate,
            "window": args.window,
            "threads": cli.threads,
        }),
        results: json!({
            "sending_s": secs,
            "up": {"sent": up_sent, "received": up_received, "per_s": up_received as f64 / secs,
                   "latency_us": {"p50": up_p50, "p99": up_p99, "max": up_max}},
            "down": {"sent": down_sent, "received": down_received, "per_s": down_received as f64 / secs,
                     "latency_us": {"p50": down_p50, "p99": down_p99, "max": down_max}},
            "messages_per_s": relayed as f64 / secs,
            "server_cpu_us_per_message": server_us_per_message,
        }),
        lost: counts.lost,
        unexpected: counts.unexpected,
        failed: counts.failed,
        server_cpu_s,
        generator_cpu_s,
    })
}
