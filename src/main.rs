//! The `signalling` binary: flags → Config → logging → Server::run → exit code.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::process::ExitCode;

use signalling::config::{self, LoadError, Loaded};
use signalling::logging::Settings;
use signalling::reload::ReloadFrom;
use signalling::server::Server;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let Loaded { config, warnings } = match config::load_args(args.clone()) {
        Ok(loaded) => loaded,
        // Usage, a misspelt flag (with the nearest one), --help and --version, as clap prints them.
        Err(LoadError::Cli(e)) => e.exit(),
        Err(LoadError::Config(e)) => {
            // Logging is not set up yet: its level is part of the configuration.
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Declared before the runtime, so dropped after it: the last lines are flushed on exit.
    let logging = match signalling::logging::init(&Settings::from_config(&config)) {
        Ok(logging) => logging,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    if config.log_config {
        for line in config.describe() {
            tracing::info!("config: {line}");
        }
    }

    let (mut builder, threads) = runtime_builder(config.worker_threads);
    tracing::info!("running on {threads} worker thread(s)");
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::spawn(logging.report_dropped_lines());
        // SIGHUP reads the same flags and files again.
        let levels = logging.levels();
        let reload = ReloadFrom {
            source: Box::new(move || reload(&args)),
            log_levels: Box::new(move |config| levels.apply(&Settings::from_config(config))),
        };
        let server = Server::bind(config).await?.reload_from(reload);
        // Every listener is bound: tell systemd (Type=notify) the service is up. Nothing is
        // sent without NOTIFY_SOCKET, as outside systemd.
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            tracing::warn!("cannot tell systemd the server is ready: {e}");
        }
        server.run().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration again, from the flags and files given at start; the error is one line.
fn reload(args: &[std::ffi::OsString]) -> Result<config::Config, String> {
    match config::load_args(args.iter().cloned()) {
        Ok(Loaded { config, warnings }) => {
            for warning in &warnings {
                tracing::warn!("{warning}");
            }
            Ok(config)
        }
        Err(LoadError::Cli(e)) => Err(e.to_string().trim().to_owned()),
        Err(LoadError::Config(e)) => Err(e.to_string()),
    }
}

/// The async runtime for `worker_threads` (0: one per CPU this process may run on), and its
/// thread count. On one thread the single-threaded scheduler does the same work with no
/// cross-thread handoffs.
fn runtime_builder(worker_threads: usize) -> (tokio::runtime::Builder, usize) {
    let threads = match worker_threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n,
    };
    if threads == 1 {
        (tokio::runtime::Builder::new_current_thread(), 1)
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        (builder, threads)
    }
}
