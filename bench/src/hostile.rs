//! `hostile`: S streamers, each with P well-behaved players relaying iceCandidate-sized
//! messages at a paced rate both ways (as `relay --rate`), and one flooding player that, once
//! negotiated, sends 1 KiB iceCandidates to its streamer as fast as it can and never reads.
//! Each streamer reads, and stops reading once for `--pause-ms` if asked.
//!
//! Reported: the well-behaved players' one-way latency and losses (any loss fails the run);
//! whether each streamer survived (a streamer closed fails the run, and so does a well-behaved
//! player closed); what became of each flooder (closed with which code, or slowed: how long
//! its writes were held up); and the server's RSS before, at its peak (sampled during the run)
//! and after.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::future::select_all;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::peers::{Counts, await_listed, identify};
use crate::relay::{self, Probe, REPORTED, ReaderOutcome, Shared, Stream, Target};
use crate::util::{self, CpuMark, Ws};
use crate::{Cli, Report};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Streamers, each with its own players and one flooder.
    #[arg(short = 's', long, default_value_t = 2)]
    streamers: usize,
    /// Well-behaved players per streamer.
    #[arg(short = 'p', long, default_value_t = 10)]
    players: usize,
    /// Well-behaved messages per second per streamer, both directions together (half each way).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0, value_parser = util::positive_seconds)]
    duration: f64,
    /// Each streamer stops reading once, for this many milliseconds (0: it never pauses).
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// Seconds after sending starts at which the streamers' pause begins.
    #[arg(long, default_value_t = 1.0, value_parser = util::positive_seconds)]
    pause_at: f64,
    /// Size in bytes of each flooding iceCandidate.
    #[arg(long, default_value_t = 1024)]
    flood_bytes: usize,
}

/// An iceCandidate of `bytes` bytes (when `bytes` is large enough), as a player sends it.
fn flood_message(bytes: usize) -> String {
    let head = r#"{"type":"iceCandidate","candidate":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.66 9 typ host x="#;
    let tail = r#"","sdpMid":"0","sdpMLineIndex":0}}"#;
    let pad = bytes.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// A close as the peer saw it: the close frame's code and reason, or 1006 without a frame.
fn close_of(message: Option<Result<Message, impl std::fmt::Display>>) -> Option<(u16, String)> {
    match message {
        Some(Ok(Message::Close(Some(frame)))) => {
            Some((u16::from(frame.code), frame.reason.as_str().to_owned()))
        }
        Some(Ok(Message::Close(None))) => Some((1005, String::new())),
        Some(Ok(_)) => None,
        Some(Err(_)) | None => Some((1006, String::new())),
    }
}

/// What the streamer's reader hands back.
struct StreamerOutcome {
    relayed: ReaderOutcome,
    /// The flooder's messages that reached the streamer.
    flood_received: u64,
    /// The pong to the ping sent after the run arrived: the streamer is still served.
    survived: bool,
    closed: Option<(u16, String)>,
}

/// Reads a streamer's messages: the well-behaved players' (checked and timed as in `relay`)
/// and the flooder's (counted). It stops reading once for `pause`; once told to stop, it reads
/// on until the pong to the ping the coordinator sends then.
async fn streamer_reader(
    mut stream: Stream,
    ids: HashMap<String, usize>,
    flooder_id: String,
    players: usize,
    shared: Arc<Shared>,
    mut pause: Option<(tokio::time::Instant, Duration)>,
    mut stop: watch::Receiver<bool>,
) -> StreamerOutcome {
    let mut out = StreamerOutcome {
        relayed: ReaderOutcome {
            latencies: Vec::new(),
            counts: Counts::default(),
        },
        flood_received: 0,
        survived: false,
        closed: None,
    };
    let counts = &mut out.relayed.counts;
    let mut expected = vec![0u64; players.max(1)];
    // Far off until the stop; then the time the pong may take.
    let mut give_up = tokio::time::Instant::now() + Duration::from_secs(86_400);
    let mut stopping = false;
    loop {
        let pause_start = pause.map(|(at, _)| at);
        let msg = tokio::select! {
            msg = stream.next() => msg,
            () = sleep_until(pause_start.unwrap_or(give_up)), if pause.is_some() => {
                if let Some((_, length)) = pause.take() {
                    // The pause itself: nothing is read meanwhile.
                    sleep(length).await;
                }
                continue;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                give_up = tokio::time::Instant::now() + util::recv_timeout();
                continue;
            }
            () = sleep_until(give_up), if stopping => {
                eprintln!("hostile: streamer: no pong within {:?} after the run", util::recv_timeout());
                counts.failed += 1;
                break;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            other => {
                if let Some(close) = close_of(other) {
                    eprintln!("hostile: streamer closed: {close:?}");
                    out.closed = Some(close);
                } else {
                    eprintln!("hostile: streamer got a binary message");
                }
                counts.failed += 1;
                break;
            }
        };
        let Ok(probe) = serde_json::from_str::<Probe>(text.as_str()) else {
            counts.unexpected += 1;
            if counts.unexpected <= REPORTED {
                eprintln!("hostile: streamer: unparsable {text}");
            }
            continue;
        };
        if probe.kind == "pong" {
            // Only the coordinator's ping after the run is answered with a pong.
            out.survived = true;
            break;
        }
        if probe.player_id == Some(flooder_id.as_str()) {
            out.flood_received += 1;
            continue;
        }
        let index = probe.player_id.and_then(|id| ids.get(id).copied());
        let (Some(index), "iceCandidate", Some(seq), Some(sent_ns)) =
            (index, probe.kind, probe.seq, probe.sent_ns)
        else {
            counts.unexpected += 1;
            if counts.unexpected <= REPORTED {
                eprintln!("hostile: streamer: unexpected {text}");
            }
            continue;
        };
        let now_ns = shared.epoch.elapsed().as_nanos() as u64;
        out.relayed
            .latencies
            .push(Duration::from_nanos(now_ns.saturating_sub(sent_ns)));
        if seq != expected[index] {
            counts.unexpected += 1;
            if counts.unexpected <= REPORTED {
                eprintln!(
                    "hostile: streamer: sequence {seq} where {} was due (player {index})",
                    expected[index]
                );
            }
        }
        expected[index] = seq + 1;
        shared.received(&shared.up);
    }
    out
}

/// What became of a flooder.
struct FloodOutcome {
    sent: u64,
    /// The longest time one write waited: how long the server held the flooder off.
    longest_write: Duration,
    /// Time spent in writes that waited over a millisecond.
    blocked: Duration,
    /// Still writing (held off) when the run ended.
    blocked_at_end: bool,
    closed: Option<(u16, String)>,
    /// Answered a ping after the run: still connected.
    answered: bool,
}

/// Sends `text` as fast as the socket takes it until `deadline`, reading nothing; then, once
/// told to stop, finds out whether the server closed it (its close frame) or still serves it
/// (a ping answered).
async fn flooder(
    mut ws: Ws,
    text: String,
    deadline: tokio::time::Instant,
    mut stop: watch::Receiver<bool>,
) -> FloodOutcome {
    let mut out = FloodOutcome {
        sent: 0,
        longest_write: Duration::ZERO,
        blocked: Duration::ZERO,
        blocked_at_end: false,
        closed: None,
        answered: false,
    };
    let message = Message::text(text);
    let mut write_failed = false;
    while tokio::time::Instant::now() < deadline {
        let started = Instant::now();
        // `feed` writes to the socket whenever tungstenite's write buffer fills, so it waits
        // exactly when the server stops reading this connection.
        let result = timeout_at(deadline, ws.feed(message.clone())).await;
        let took = started.elapsed();
        out.longest_write = out.longest_write.max(took);
        if took > Duration::from_millis(1) {
            out.blocked += took;
        }
        match result {
            Ok(Ok(())) => out.sent += 1,
            Ok(Err(_)) => {
                write_failed = true;
                break;
            }
            Err(_) => {
                out.blocked_at_end = true;
                break;
            }
        }
    }
    let _ = stop.wait_for(|stop| *stop).await;
    // Whatever the server sent is in the receive buffer, its close frame last.
    let ping = Message::text(r#"{"type":"ping","time":1}"#);
    let sent_ping = !write_failed
        && matches!(
            timeout(util::recv_timeout(), ws.send(ping)).await,
            Ok(Ok(()))
        );
    let until = tokio::time::Instant::now() + util::recv_timeout();
    loop {
        match timeout_at(until, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Text(text)))) => {
                if sent_ping && text.as_str().contains(r#""type":"pong""#) {
                    out.answered = true;
                    break;
                }
            }
            Ok(other) => {
                if let Some(close) = close_of(other) {
                    out.closed = Some(close);
                    break;
                }
            }
        }
    }
    out
}

/// Samples the server's RSS every 10 ms until `done`; returns the largest reading in KiB.
async fn rss_peak(pid: u32, done: Arc<AtomicBool>) -> Option<u64> {
    let mut peak = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    while !done.load(Ordering::Acquire) {
        ticker.tick().await;
        if let Ok(kib) = util::rss_kib(pid) {
            peak = peak.max(Some(kib));
        }
    }
    peak
}

/// One streamer with its players and flooder, connected and negotiated.
struct Group {
    id: String,
    streamer: Ws,
    players: Vec<(Ws, String)>,
    flooder: (Ws, String),
}

async fn connect_group(cli: &Cli, args: &Args, index: usize) -> Result<Group> {
    let id = format!("BenchHostile{index}");
    let mut streamer = identify(&cli.streamer, &id).await?;
    await_listed(cli, std::slice::from_ref(&id)).await?;
    let mut players = Vec::with_capacity(args.players);
    for p in 0..args.players {
        players.push(relay::join(cli, &mut streamer, &id, p).await?);
    }
    // The flooder negotiates like any player before it floods.
    let flooder = relay::join(cli, &mut streamer, &id, args.players).await?;
    Ok(Group {
        id,
        streamer,
        players,
        flooder,
    })
}

pub(crate) async fn run(cli: &Cli, args: &Args) -> Result<Report> {
    if args.streamers == 0 || args.players == 0 || args.rate == 0 {
        bail!("hostile needs --streamers, --players and --rate above zero");
    }
    let pid = cli.server_pid;
    let total_cpu = CpuMark::now(pid)?;
    let mut groups = Vec::with_capacity(args.streamers);
    for index in 0..args.streamers {
        groups.push(
            connect_group(cli, args, index)
                .await
                .with_context(|| format!("streamer {index}"))?,
        );
    }
    let rss_before = pid.map(util::rss_kib).transpose()?;
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = pid.map(|pid| tokio::spawn(rss_peak(pid, Arc::clone(&sampling))));

    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu = CpuMark::now(pid)?;
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.duration);
    let pause = (args.pause_ms > 0).then(|| {
        (
            tokio::time::Instant::now() + Duration::from_secs_f64(args.pause_at),
            Duration::from_millis(args.pause_ms),
        )
    });
    let each_way = args.rate as f64 / 2.0;
    let flood = flood_message(args.flood_bytes);
    let mut running = Vec::with_capacity(groups.len());
    for group in groups {
        let shared = Arc::new(Shared::new(1));
        let mut player_sinks = Vec::new();
        let mut player_readers = Vec::new();
        let (mut up_targets, mut down_targets) = (Vec::new(), Vec::new());
        let mut ids = HashMap::new();
        for (index, (ws, player_id)) in group.players.into_iter().enumerate() {
            let (sink, stream) = ws.split();
            player_sinks.push(sink);
            up_targets.push(Target {
                sink: index,
                player_id: None,
                seq: 0,
            });
            down_targets.push(Target {
                sink: 0,
                player_id: Some(player_id.clone()),
                seq: 0,
            });
            player_readers.push(tokio::spawn(relay::reader(
                stream,
                HashMap::from([(player_id.clone(), 0)]),
                1,
                Arc::clone(&shared),
                false,
                stop_rx.clone(),
            )));
            ids.insert(player_id, index);
        }
        let (streamer_sink, streamer_stream) = group.streamer.split();
        let streamer_reader = tokio::spawn(streamer_reader(
            streamer_stream,
            ids,
            group.flooder.1.clone(),
            up_targets.len(),
            Arc::clone(&shared),
            pause,
            stop_rx.clone(),
        ));
        let up_writer = tokio::spawn(relay::writer(
            player_sinks,
            up_targets,
            Arc::clone(&shared),
            true,
            Some(each_way),
            deadline,
        ));
        let down_writer = tokio::spawn(relay::writer(
            vec![streamer_sink],
            down_targets,
            Arc::clone(&shared),
            false,
            Some(each_way),
            deadline,
        ));
        let flooder = tokio::spawn(flooder(
            group.flooder.0,
            flood.clone(),
            deadline,
            stop_rx.clone(),
        ));
        running.push((
            group.id,
            shared,
            player_readers,
            streamer_reader,
            up_writer,
            down_writer,
            flooder,
        ));
    }

    let mut counts = Counts::default();
    let mut groups_done = Vec::with_capacity(running.len());
    for (id, shared, player_readers, streamer_reader, up_writer, down_writer, flooder) in running {
        let (up_sinks, up_counts) = up_writer.await.context("up writer")?;
        let (down_sinks, down_counts) = down_writer.await.context("down writer")?;
        counts.add(&up_counts);
        counts.add(&down_counts);
        groups_done.push((
            id,
            shared,
            player_readers,
            streamer_reader,
            flooder,
            up_sinks,
            down_sinks,
        ));
    }
    let sending = start.elapsed();

    // Drain: every well-behaved message sent must arrive; give up once nothing arrives
    // anywhere for the receive timeout.
    for (_, shared, ..) in &groups_done {
        shared.draining.store(true, Ordering::Release);
    }
    while groups_done
        .iter()
        .any(|(_, shared, ..)| shared.up.outstanding() + shared.down.outstanding() > 0)
    {
        let progress = groups_done
            .iter()
            .map(|(_, shared, ..)| Box::pin(shared.progress.notified()));
        if timeout(util::recv_timeout(), select_all(progress))
            .await
            .is_err()
        {
            break;
        }
    }
    let drained = start.elapsed();
    // Is each streamer still served? Its reader waits for the pong to this.
    for (_, _, _, _, _, _, down_sinks) in &mut groups_done {
        for sink in down_sinks {
            let _ = sink
                .send(Message::text(r#"{"type":"ping","time":1}"#))
                .await;
        }
    }
    let _ = stop_tx.send(true);

    let (mut up_lat, mut down_lat) = (Vec::new(), Vec::new());
    let (mut up_sent, mut up_received, mut down_sent, mut down_received) = (0, 0, 0, 0);
    let mut streamers = Vec::new();
    let mut flooders = Vec::new();
    let mut sockets = Vec::new();
    for (id, shared, player_readers, streamer_reader, flooder, up_sinks, down_sinks) in groups_done
    {
        for reader in player_readers {
            let outcome = reader.await.context("player reader")?;
            counts.add(&outcome.counts);
            down_lat.extend(outcome.latencies);
        }
        let st = streamer_reader.await.context("streamer reader")?;
        counts.add(&st.relayed.counts);
        up_lat.extend(st.relayed.latencies);
        let fl = flooder.await.context("flooder")?;
        let sends = |d: &relay::Direction| {
            (
                d.sent.load(Ordering::Acquire),
                d.received.load(Ordering::Acquire),
            )
        };
        let ((us, ur), (ds, dr)) = (sends(&shared.up), sends(&shared.down));
        counts.lost += us.saturating_sub(ur) + ds.saturating_sub(dr);
        (up_sent, up_received) = (up_sent + us, up_received + ur);
        (down_sent, down_received) = (down_sent + ds, down_received + dr);
        let close_json = |c: &Option<(u16, String)>| {
            c.as_ref().map_or(
                Value::Null,
                |(code, reason)| json!({"code": code, "reason": reason}),
            )
        };
        streamers.push(json!({
            "id": id,
            "survived": st.survived,
            "closed": close_json(&st.closed),
            "flood_received": st.flood_received,
        }));
        let outcome = match (&fl.closed, fl.answered) {
            (Some(_), _) => "closed",
            (None, true) => "open",
            (None, false) => "no answer",
        };
        flooders.push(json!({
            "streamer": id,
            "outcome": outcome,
            "closed": close_json(&fl.closed),
            "sent": fl.sent,
            "per_s": fl.sent as f64 / sending.as_secs_f64().max(1e-9),
            "longest_write_ms": fl.longest_write.as_secs_f64() * 1e3,
            "blocked_s": fl.blocked.as_secs_f64(),
            "blocked_at_end": fl.blocked_at_end,
        }));
        sockets.push((up_sinks, down_sinks));
    }
    sampling.store(true, Ordering::Release);
    let rss_peak = match sampler {
        Some(task) => task.await.context("RSS sampler")?,
        None => None,
    };
    let (server_cpu_s, _) = cpu.since(pid)?;

    // Close every connection of the run, then let the server release them before reading RSS.
    for (up_sinks, down_sinks) in &mut sockets {
        for sink in up_sinks.iter_mut().chain(down_sinks.iter_mut()) {
            let _ = timeout(Duration::from_secs(1), sink.close()).await;
        }
    }
    drop(sockets);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = pid.map(util::rss_kib).transpose()?;
    let (_, generator_cpu_s) = total_cpu.since(pid)?;

    let secs = sending.as_secs_f64().max(1e-9);
    let (up_p50, up_p99, up_max) = util::percentiles(&mut up_lat);
    let (down_p50, down_p99, down_max) = util::percentiles(&mut down_lat);
    let survived = streamers.iter().filter(|s| s["survived"] == true).count();
    let flooders_closed = flooders.iter().filter(|f| f["outcome"] == "closed").count();
    let mib = |kib: Option<u64>| {
        kib.map_or_else(|| "n/a".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
    };
    eprintln!(
        "hostile ({} streamers × {} players at {} msg/s each, pause {} ms at {} s, {}-byte flood): \
         player→streamer {up_received}/{up_sent}, one-way p50 {up_p50:.0} µs p99 {up_p99:.0} µs max {up_max:.0} µs",
        args.streamers, args.players, args.rate, args.pause_ms, args.pause_at, args.flood_bytes
    );
    eprintln!(
        "hostile: streamer→player {down_received}/{down_sent}, one-way p50 {down_p50:.0} µs p99 {down_p99:.0} µs max {down_max:.0} µs; drained in {:.3} s",
        (drained - sending).as_secs_f64()
    );
    eprintln!("hostile: streamers survived {survived}/{}", args.streamers);
    for (s, f) in streamers.iter().zip(&flooders) {
        let streamer = if s["survived"] == true {
            "survived".to_owned()
        } else {
            format!("LOST (close {})", s["closed"])
        };
        let flooder = match f["outcome"].as_str() {
            Some("closed") => format!("closed {}", f["closed"]),
            Some(outcome) => outcome.to_owned(),
            None => String::new(),
        };
        eprintln!(
            "hostile: {}: streamer {streamer}, got {} flood messages; flooder {flooder}: sent {} ({:.0}/s), longest write {:.1} ms, {:.2} s in writes held over 1 ms{}",
            s["id"].as_str().unwrap_or(""),
            s["flood_received"],
            f["sent"],
            f["per_s"].as_f64().unwrap_or(0.0),
            f["longest_write_ms"].as_f64().unwrap_or(0.0),
            f["blocked_s"].as_f64().unwrap_or(0.0),
            if f["blocked_at_end"] == true {
                ", held off when the run ended"
            } else {
                ""
            },
        );
    }
    eprintln!(
        "hostile: server RSS before {} MiB, peak {} MiB, after {} MiB",
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after)
    );
    Ok(Report {
        scenario: "hostile",
        params: json!({
            "streamers": args.streamers,
            "players": args.players,
            "rate": args.rate,
            "duration_s": args.duration,
            "pause_ms": args.pause_ms,
            "pause_at_s": args.pause_at,
            "flood_bytes": args.flood_bytes,
            "threads": cli.threads,
        }),
        results: json!({
            "sending_s": secs,
            "up": {"sent": up_sent, "received": up_received,
                   "latency_us": {"p50": up_p50, "p99": up_p99, "max": up_max}},
            "down": {"sent": down_sent, "received": down_received,
                     "latency_us": {"p50": down_p50, "p99": down_p99, "max": down_max}},
            "streamers_survived": survived,
            "flooders_closed": flooders_closed,
            "streamers": streamers,
            "flooders": flooders,
            "rss_kib": {"before": rss_before, "peak": rss_peak, "after": rss_after,
                        "peak_growth": rss_before.zip(rss_peak).map(|(b, p)| p.saturating_sub(b))},
        }),
        lost: counts.lost,
        unexpected: counts.unexpected,
        failed: counts.failed,
        server_cpu_s,
        generator_cpu_s,
    })
}
