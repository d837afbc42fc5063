//! `signalling-bench`: a load generator for Pixel Streaming signalling servers.
//!
//! It plays streamers and players over real sockets, checks every message it expects, and
//! prints a human summary on stderr and one JSON line on stdout. It only connects to loopback
//! addresses. Exit status: 0 clean run, 1 loss / unexpected message / failure, 2 usage error.

mod churn;
mod connect;
mod hostile;
mod peers;
mod relay;
mod subscribe;
mod tls;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Streamer-port URL of the server under test (loopback only).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8888")]
    streamer: String,
    /// Player-port URL of the server under test (loopback only).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:80")]
    player: String,
    /// PID of the server, for its CPU time and memory from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Another server-side process whose CPU time counts with --server-pid's (a cluster run:
    /// the other node and Redis); repeatable. Memory is still --server-pid's alone.
    #[arg(long = "also-pid", global = true, requires = "server_pid")]
    also_pids: Vec<u32>,
    /// --streamer and --player are two nodes of one cluster: before measuring, wait until the
    /// player's node lists the scenario's streamers. The JSON line says "cluster": true.
    #[arg(long, global = true)]
    cluster: bool,
    /// Generator worker threads (1 = a single-threaded runtime).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Seconds any expected message may take before it counts as lost.
    #[arg(long, global = true, default_value_t = 10.0, value_parser = util::positive_seconds)]
    timeout: f64,
    /// Connect with wss:// (a ws:// URL given is turned into wss://), trusting --tls-ca only.
    #[arg(long, global = true, requires = "tls_ca")]
    tls: bool,
    /// PEM file of the certificate(s) to trust with --tls (the server's self-signed one).
    #[arg(long, global = true, requires = "tls")]
    tls_ca: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Open N idle player connections, each until `config` arrives.
    Connect(connect::Args),
    /// S streamers, P players each: full offer/answer/ICE negotiation, then all players leave.
    Subscribe(subscribe::Args),
    /// One streamer, P players: iceCandidate-sized messages both ways, flat out or at a rate.
    Relay(relay::Args),
    /// Players join, get the offer and leave, in a loop with bounded concurrency.
    Churn(churn::Args),
    /// S streamers with P paced players each, plus one player per streamer flooding 1 KiB
    /// iceCandidates without reading; the streamers may pause. Latency, losses, survivors, RSS.
    Hostile(hostile::Args),
    /// Not a scenario: write a self-signed certificate for localhost, 127.0.0.1 and ::1
    /// (DIR/cert.pem, DIR/key.pem) for a --tls run.
    GenCert(tls::GenCertArgs),
}

/// What a scenario hands back for the JSON line.
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    pub(crate) params: Value,
    pub(crate) results: Value,
    pub(crate) lost: u64,
    pub(crate) unexpected: u64,
    pub(crate) failed: u64,
    pub(crate) server_cpu_s: Option<f64>,
    pub(crate) generator_cpu_s: f64,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Scenario::GenCert(args) = &cli.scenario {
        return match tls::gen_cert(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("signalling-bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(ca) = &cli.tls_ca {
        match tls::client_config(ca) {
            Ok(config) => util::set_tls(config),
            Err(e) => {
                eprintln!("signalling-bench: {e:#}");
                return ExitCode::from(2);
            }
        }
        for url in [&mut cli.streamer, &mut cli.player] {
            if let Some(rest) = url.strip_prefix("ws://") {
                *url = format!("wss://{rest}");
            }
        }
    }
    for url in [&cli.streamer, &cli.player] {
        if url.starts_with("wss://") && !cli.tls {
            eprintln!("signalling-bench: {url}: a wss:// URL needs --tls and --tls-ca");
            return ExitCode::from(2);
        }
        if let Err(e) = util::check_loopback(url) {
            eprintln!("signalling-bench: {e:#}");
            return ExitCode::from(2);
        }
    }
    if cli.threads == 0 {
        eprintln!("signalling-bench: --threads must be at least 1");
        return ExitCode::from(2);
    }
    util::set_recv_timeout(std::time::Duration::from_secs_f64(cli.timeout));
    util::set_also_pids(cli.also_pids.clone());
    match run(&cli) {
        Ok(report) => {
            let line = json!({
                "scenario": report.scenario,
                "tls": cli.tls,
                "cluster": cli.cluster,
                "params": report.params,
                "results": report.results,
                "lost": report.lost,
                "unexpected": report.unexpected,
                "failed": report.failed,
                "server_cpu_s": report.server_cpu_s,
                "generator_cpu_s": report.generator_cpu_s,
            });
            println!("{line}");
            eprintln!(
                "lost {}  unexpected {}  failed {}  server CPU {}  generator CPU {:.3} s",
                report.lost,
                report.unexpected,
                report.failed,
                report
                    .server_cpu_s
                    .map_or_else(|| "n/a".to_owned(), |s| format!("{s:.3} s")),
                report.generator_cpu_s
            );
            if report.lost + report.unexpected + report.failed > 0 {
                eprintln!("signalling-bench: FAILED (losses, unexpected messages or failures)");
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("signalling-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<Report> {
    let runtime = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        match &cli.scenario {
            Scenario::Connect(args) => connect::run(cli, args).await,
            Scenario::Subscribe(args) => subscribe::run(cli, args).await,
            Scenario::Relay(args) => relay::run(cli, args).await,
            Scenario::Churn(args) => churn::run(cli, args).await,
            Scenario::Hostile(args) => hostile::run(cli, args).await,
            Scenario::GenCert(_) => anyhow::bail!("gen-cert is not a scenario"),
        }
    })
}
