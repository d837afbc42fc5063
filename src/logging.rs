//! Log output: one tracing-subscriber to stderr, filtered by `log_level` or `RUST_LOG`.
//! Owns only the subscriber setup; what gets logged is decided where it happens.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogLevel;

/// Installs the global subscriber: `level` everywhere, unless `RUST_LOG` is set, in which case
/// its directives (e.g. `signalling=debug,hyper=warn`) replace the level. Writes to stderr.
///
/// Never panics. An invalid `RUST_LOG` falls back to `level` with a warning, and a second call
/// (a subscriber already installed, as in tests) does nothing.
pub fn init(level: LogLevel) {
    let mut bad_rust_log = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => match EnvFilter::try_new(&directives) {
            Ok(filter) => filter,
            Err(e) => {
                bad_rust_log = Some((directives, e));
                EnvFilter::new(level.as_filter())
            }
        },
        _ => EnvFilter::new(level.as_filter()),
    };
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person watching; they garble log files and journald.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .is_ok();
    if let (true, Some((directives, e))) = (installed, bad_rust_log) {
        tracing::warn!(
            "ignoring RUST_LOG={directives:?} ({e}); logging at {}",
            level.as_filter()
        );
    }
}
