//! Log output and what peers may put in it. Owns the subscriber setup (stderr as text or JSON
//! lines, and the optional daily log files, each through its own non-blocking, lossy writer
//! thread with its own level), the report of the lines they dropped, the escaping of every
//! peer-controlled value that reaches a log line ([`peer_str`], [`peer_text`]), the
//! signalling-message lines of `console_messages` ([`MessageLog`]) and the per-connection
//! warning budget ([`WarnLimiter`]). What gets logged is decided where it happens; nothing here
//! ever waits for the log, and nothing here logs the configuration.

mod file;
mod json;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_output;
mod text;

use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use protocol::PlayerIdValue;
use tracing::info;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, filter::LevelFilter, reload};

use crate::config::{Config, ConsoleMessages, LogFormat, LogLevel};
use crate::router::{ConnId, Role};
use json::{Clock, Date, JsonFields, JsonFormat};
use text::TextFields;

/// Bytes of log lines that may wait for each writer thread (stderr's, the files'). Past this
/// new lines are dropped (and counted) instead of slowing the task that logs them. A line is a
/// few hundred bytes (every peer value in it is cut to [`PEER_STR_MAX`]);
/// `console_messages = "verbose"` or `"formatted"` lines hold a whole message each. A thread
/// writes one batch while the next gathers, so each destination holds at most twice this.
pub(crate) const LOG_BUFFER_BYTES: usize = 4 << 20;

/// How long the writer thread lets lines gather after the first one of a batch: lines logged
/// together leave in one `write()`, and a busy server wakes the thread at most this often.
const BATCH_DELAY: Duration = Duration::from_millis(10);

/// How long exit waits for each destination's last lines to be written (stderr or the disk
/// may be stuck).
const EXIT_FLUSH: Duration = Duration::from_millis(1300);

/// How often the count of dropped lines is looked at.
const DROP_REPORT_PERIOD: Duration = Duration::from_secs(1);

/// What [`init`] sets up. `main` builds it from the configuration ([`Settings::from_config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// stderr's level, unless `RUST_LOG` is set.
    pub level: LogLevel,
    pub format: LogFormat,
    /// The daily log files, if any.
    pub file: Option<FileSettings>,
}

/// The daily log files: `server-YYYY-MM-DD.log` (UTC) in `folder`, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    /// Created if missing.
    pub folder: PathBuf,
    /// The files' level; neither `log_level` nor `RUST_LOG` changes it.
    pub level: LogLevel,
    /// Days of files kept, today's included; older ones are deleted at start and at each
    /// rotation. 0 keeps them all.
    pub retention_days: u32,
}

impl Settings {
    /// `log_level`, `log_format`, and files when `log_folder` is not empty.
    pub fn from_config(config: &Config) -> Self {
        let file = (!config.log_folder.as_os_str().is_empty()).then(|| FileSettings {
            folder: config.log_folder.clone(),
            level: config.log_level_file,
            retention_days: config.log_retention_days,
        });
        Self {
            level: config.log_level,
            format: config.log_format,
            file,
        }
    }
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot write log files in {}: {source}", folder.display())]
    Folder { folder: PathBuf, source: io::Error },
}

/// Installs the global subscriber. stderr gets `settings.level`, unless `RUST_LOG` is set, in
/// which case its directives (e.g. `signalling=debug,hyper=warn`) replace the level; the log
/// files, if any, get their own level. Each destination has a writer thread: a task that logs
/// only appends the line to a buffer, and when the thread cannot keep up (stderr a full pipe,
/// a slow terminal or disk) new lines are dropped and counted (see
/// [`Logging::report_dropped_lines`]).
///
/// Fails only if the log folder cannot be created or today's file cannot be opened. Never
/// panics. An invalid `RUST_LOG` falls back to the level with a warning, and a second call (a
/// subscriber already installed, as in tests) installs nothing.
///
/// Keep the returned [`Logging`] alive until the end of `main`: dropping it reports the last
/// dropped lines and flushes what is queued (waiting 1.3 s at most, even with stderr stuck).
pub fn init(settings: &Settings) -> Result<Logging, LogError> {
    let mut bad_rust_log = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => match EnvFilter::try_new(&directives) {
            Ok(filter) => filter,
            Err(e) => {
                bad_rust_log = Some((directives, e));
                EnvFilter::new(settings.level.as_filter())
            }
        },
        _ => EnvFilter::new(settings.level.as_filter()),
    };
    let ansi = io::stderr().is_terminal();
    let (subscriber, mut logging) =
        build(settings, filter, json::system_clock(), io::stderr(), ansi)?;
    // RUST_LOG's directives rule stderr until a restart; a reload changes only the files'.
    logging.levels.rust_log = std::env::var("RUST_LOG").is_ok_and(|d| !d.trim().is_empty());
    let installed = subscriber.try_init().is_ok();
    if let (true, Some((directives, e))) = (installed, bad_rust_log) {
        tracing::warn!(
            "ignoring RUST_LOG={directives:?} ({e}); logging at {}",
            settings.level.as_filter()
        );
    }
    if let (true, Some(file)) = (installed, &settings.file) {
        info!(
            "log files in {} at level {}, kept {}",
            file.folder.display(),
            file.level.as_filter(),
            match file.retention_days {
                0 => "forever".to_owned(),
                days => format!("{days} day(s)"),
            }
        );
    }
    Ok(logging)
}

/// The subscriber [`init`] installs, writing stderr's lines to `console` and timing lines with
/// `clock` (tests pass their own of both), and the [`Logging`] that owns its writer threads.
fn build(
    settings: &Settings,
    console_filter: EnvFilter,
    clock: Clock,
    console: impl io::Write + Send + 'static,
    ansi: bool,
) -> Result<(impl tracing::Subscriber + Send + Sync, Logging), LogError> {
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    // The files first: a folder that cannot be written stops start-up before any thread runs.
    let files = match &settings.file {
        Some(file) => {
            let today = Date::of(clock());
            let daily =
                file::DailyFiles::open(&file.folder, file.retention_days, today, dropped.clone())
                    .map_err(|source| LogError::Folder {
                    folder: file.folder.clone(),
                    source,
                })?;
            let (writer, worker) =
                Batched::start("log-file-writer", LOG_BUFFER_BYTES, daily, dropped.clone());
            workers.push(worker);
            Some((writer, level_filter(file.level)))
        }
        None => None,
    };
    let (writer, worker) = Batched::start("log-writer", LOG_BUFFER_BYTES, console, dropped.clone());
    // Last: at exit stderr is flushed last, after the report of lines the files dropped.
    workers.push(worker);
    // Behind reload handles, so SIGHUP can change the levels ([`Levels`]).
    let (console_filter, console_handle) = reload::Layer::new(console_filter);
    let console_layer = match settings.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(TextFields)
            .with_writer(writer)
            // Colour codes only for a person watching; they garble log files and journald.
            .with_ansi(ansi)
            .with_filter(console_filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields)
            .event_format(JsonFormat::new(clock.clone()))
            .with_writer(writer)
            .with_ansi(false)
            .with_filter(console_filter)
            .boxed(),
    };
    let mut file_handle = None;
    let file_layer = files.map(|(writer, level)| {
        let (level, handle) = reload::Layer::new(level);
        file_handle = Some(handle);
        tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields)
            .event_format(JsonFormat::new(clock))
            .with_writer(writer)
            .with_ansi(false)
            .with_filter(level)
    });
    let subscriber = Registry::default().with(console_layer).with(file_layer);
    let levels = Levels {
        console: Arc::new(move |level: LogLevel| {
            console_handle
                .reload(EnvFilter::new(level.as_filter()))
                .map_err(|e| e.to_string())
        }),
        file: file_handle.map(|handle| {
            Arc::new(move |level: LogLevel| {
                handle
                    .reload(level_filter(level))
                    .map_err(|e| e.to_string())
            }) as SetLevel
        }),
        rust_log: false,
    };
    Ok((
        subscriber,
        Logging {
            dropped,
            reported: Arc::default(),
            workers,
            levels,
        },
    ))
}

/// Sets one destination's level.
type SetLevel = Arc<dyn Fn(LogLevel) -> Result<(), String> + Send + Sync>;

/// The running subscriber's levels, changeable while it runs (a SIGHUP reload).
#[derive(Clone)]
pub struct Levels {
    console: SetLevel,
    /// The log files' level, when there are files.
    file: Option<SetLevel>,
    /// stderr follows `RUST_LOG`, which a reload does not change.
    rust_log: bool,
}

impl fmt::Debug for Levels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Levels")
            .field("file", &self.file.is_some())
            .field("rust_log", &self.rust_log)
            .finish_non_exhaustive()
    }
}

impl Levels {
    /// Puts `settings`' levels in force: stderr's (unless `RUST_LOG` set it) and the files'.
    /// A failure is logged and changes nothing.
    pub fn apply(&self, settings: &Settings) {
        let set = |what: &str, setter: &SetLevel, level: LogLevel| {
            if let Err(e) = setter(level) {
                tracing::warn!("cannot change the {what} log level: {e}");
            }
        };
        if !self.rust_log {
            set("stderr", &self.console, settings.level);
        }
        if let (Some(file), Some(setter)) = (&settings.file, &self.file) {
            set("file", setter, file.level);
        }
    }
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

// ---- signalling messages ----

/// Which way a signalling message went, for its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From the peer to the server.
    Incoming,
    /// From the server to the peer.
    Outgoing,
}

/// One connection's `console_messages` lines: one line per signalling message, as Wilbur logs
/// them. The text is `> type` or `< type` (or the whole message); the line also carries
/// `direction` (`incoming`/`outgoing`), `sender` and `receiver` (`server`, or the peer as
/// `player#3`) and the message's `type`, which the JSON formats write as fields (the text
/// format leaves them out: the text says it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessageLog {
    pub(crate) mode: ConsoleMessages,
    pub(crate) conn: ConnId,
    pub(crate) role: Role,
}

/// The peer of a connection as a message line names it: `player#3`.
struct Peer(Role, ConnId);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.0, self.1)
    }
}

impl MessageLog {
    /// A message the peer sent, parsed; `type_name` is its `type`.
    pub(crate) fn incoming(&self, type_name: &str, text: &str) {
        if self.mode != ConsoleMessages::Off {
            self.log(Direction::Incoming, type_name, text);
        }
    }

    /// A message on its way to the peer.
    pub(crate) fn outgoing(&self, text: &str) {
        if self.mode != ConsoleMessages::Off {
            let type_name = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
                .unwrap_or_default();
            self.log(Direction::Outgoing, &type_name, text);
        }
    }

    fn log(&self, direction: Direction, type_name: &str, text: &str) {
        let peer = Peer(self.role, self.conn);
        let (arrow, name, sender, receiver) = match direction {
            Direction::Incoming => (">", "incoming", &peer as &dyn fmt::Display, &"server" as _),
            Direction::Outgoing => ("<", "outgoing", &"server" as _, &peer as &dyn fmt::Display),
        };
        let kind = peer_str_bare(type_name);
        macro_rules! line {
            ($($text:tt)+) => {
                info!(
                    target: "signalling::connection",
                    direction = name,
                    sender = %sender,
                    receiver = %receiver,
                    "type" = %kind,
                    $($text)+
                )
            };
        }
        match self.mode {
            ConsoleMessages::Off => {}
            ConsoleMessages::Basic => line!("{arrow} {}", peer_str(type_name)),
            ConsoleMessages::Verbose => line!("{arrow} {}", peer_text(text, false)),
            ConsoleMessages::Formatted => {
                // Pretty JSON keeps its line breaks (JSON strings cannot hold a raw one, so each
                // line after the first is indented or a closing bracket); anything else is
                // escaped.
                match serde_json::from_str::<serde_json::Value>(text)
                    .and_then(|v| serde_json::to_string_pretty(&v))
                {
                    Ok(pretty) => line!("{arrow} {}", peer_text(&pretty, true)),
                    Err(_) => line!("{arrow} {}", peer_text(text, false)),
                }
            }
        }
    }
}

// ---- the writer ----
//
// Written here rather than taken from tracing-appender: its non-blocking writer hands each line
// to its thread through a channel and wakes the thread for it, one futex wake and context
// switch per line. With a line as a connection opens and one as it closes, that cost 8 µs of
// server CPU per join/leave cycle in the churn benchmark (70.4 against 62.5 µs, interleaved
// runs); batching lines for 10 ms brings it back to what writing inline cost.

/// Lines waiting for the writer thread.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
    /// Closed for exit: later lines are not written, and not counted either (the exit report
    /// gives what was dropped while the server ran).
    exiting: bool,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// The writer thread waits here for the first line of a batch, or for the close.
    ready: Condvar,
    dropped: Arc<AtomicUsize>,
    limit: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one line, or drops and counts it if the buffer is full. Never waits on IO.
    fn push(&self, line: &[u8]) {
        let mut pending = self.lock();
        if pending.exiting {
            return;
        }
        if pending.closed || pending.bytes.len() + line.len() > self.limit {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let first = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(line);
        drop(pending);
        if first {
            self.ready.notify_one();
        }
    }
}

/// The `MakeWriter` the subscriber writes each formatted line to.
#[derive(Debug, Clone)]
struct Batched(Arc<Shared>);

impl Batched {
    /// Starts the writer thread `name` writing to `out`, counting lines it drops in `dropped`.
    fn start(
        name: &str,
        limit: usize,
        out: impl io::Write + Send + 'static,
        dropped: Arc<AtomicUsize>,
    ) -> (Self, WriterGuard) {
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            ready: Condvar::new(),
            dropped,
            limit,
        });
        let (done_tx, done) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                write_batches(&thread_shared, out);
                let _ = done_tx.send(());
            });
        if spawned.is_err() {
            // No thread: lines are dropped and counted, as when the output is stuck.
            shared.lock().closed = true;
        }
        (
            Self(Arc::clone(&shared)),
            WriterGuard {
                shared,
                done: Some(done),
            },
        )
    }

    #[cfg(test)]
    fn dropped(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.0.dropped)
    }
}

/// The writer thread: waits for a first line, lets more gather for [`BATCH_DELAY`], then writes
/// them all at once; until the guard closes the buffer and it is written out.
fn write_batches(shared: &Shared, mut out: impl io::Write) {
    let mut batch = Vec::new();
    loop {
        {
            let mut pending = shared.lock();
            while pending.bytes.is_empty() && !pending.closed {
                pending = shared
                    .ready
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if pending.bytes.is_empty() {
                return;
            }
            if !pending.closed {
                drop(pending);
                std::thread::sleep(BATCH_DELAY);
                pending = shared.lock();
            }
            std::mem::swap(&mut batch, &mut pending.bytes);
        }
        // A failed write loses this batch, not the next.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > 64 * 1024 {
            batch = Vec::new();
        }
    }
}

/// One formatted line on its way to the buffer.
#[derive(Debug)]
struct LineWriter<'a>(&'a Shared);

impl io::Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // tracing-subscriber formats a whole line and writes it with one call.
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(&self.0)
    }
}

/// Closes the buffer when dropped and waits (at most [`EXIT_FLUSH`]) for the thread to write
/// what is in it.
#[derive(Debug)]
struct WriterGuard {
    shared: Arc<Shared>,
    done: Option<mpsc::Receiver<()>>,
}

impl WriterGuard {
    /// No more lines: the thread writes what it has, then ends.
    fn close(&self) {
        let mut pending = self.shared.lock();
        pending.closed = true;
        pending.exiting = true;
        drop(pending);
        self.shared.ready.notify_one();
    }

    /// Waits for the thread to end, until `deadline` at most.
    fn wait(&mut self, deadline: Instant) {
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.close();
        self.wait(Instant::now() + EXIT_FLUSH);
    }
}

/// The running log writers. Dropping it logs the lines dropped since the last report, then
/// flushes the writer threads.
#[derive(Debug)]
pub struct Logging {
    /// Lines dropped by every writer together.
    dropped: Arc<AtomicUsize>,
    /// Dropped lines the periodic report has logged (so the one at exit gives only the rest).
    reported: Arc<AtomicUsize>,
    workers: Vec<WriterGuard>,
    levels: Levels,
}

impl Logging {
    /// A way to change the levels while the server runs (SIGHUP).
    pub fn levels(&self) -> Levels {
        self.levels.clone()
    }

    /// Runs for the life of the server: once a second, if lines were dropped and the writer
    /// has kept up since (no new drops for a period), logs "N log lines dropped".
    pub fn report_dropped_lines(&self) -> impl Future<Output = ()> + Send + 'static {
        let counter = self.dropped.clone();
        let reported = self.reported.clone();
        let mut report = DropReport::default();
        async move {
            let mut ticks = tokio::time::interval(DROP_REPORT_PERIOD);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let count = counter.load(Ordering::Relaxed);
                if let Some(lines) = report.due(count) {
                    log_dropped(lines);
                    report.sent(count, counter.load(Ordering::Relaxed));
                    reported.store(report.reported, Ordering::Relaxed);
                }
            }
        }
    }
}

impl Drop for Logging {
    fn drop(&mut self) {
        // The files first (their last batch may drop lines, to be counted in the report), then
        // the report, then stderr, each writer within its own bound.
        let (console, files) = match self.workers.split_last_mut() {
            Some((console, files)) => (Some(console), files),
            None => (None, &mut [][..]),
        };
        for worker in files.iter() {
            worker.close();
        }
        let deadline = Instant::now() + EXIT_FLUSH;
        for worker in files {
            worker.wait(deadline);
        }
        // The lines dropped since the last periodic report. If even this line finds the
        // buffer full, retry briefly: exit is the last chance, and the wait is bounded
        // (20 × 10 ms) whatever the writer does.
        let report = DropReport {
            reported: self.reported.load(Ordering::Relaxed),
            last_seen: 0,
        };
        let mut count = self.dropped.load(Ordering::Relaxed);
        for _ in 0..20 {
            let Some(lines) = report.due_at_exit(count) else {
                break;
            };
            log_dropped(lines);
            let after = self.dropped.load(Ordering::Relaxed);
            if after == count {
                break;
            }
            // This report was dropped too (it counts): try again with it included.
            count = after;
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(console) = console {
            console.close();
            console.wait(Instant::now() + EXIT_FLUSH);
        }
    }
}

fn log_dropped(lines: usize) {
    tracing::warn!("{lines} log lines dropped: the log output could not keep up");
}

/// When to report dropped lines (the rule of [`Logging::report_dropped_lines`]), apart from
/// the clock and the counter so it can be tested.
#[derive(Debug, Default)]
struct DropReport {
    /// Dropped lines already reported.
    reported: usize,
    /// The counter at the previous look.
    last_seen: usize,
}

impl DropReport {
    /// A periodic look at the counter: lines to report now, if some were dropped since the
    /// last report and none since the previous look (the writer keeps up again).
    fn due(&mut self, count: usize) -> Option<usize> {
        let settled = count == self.last_seen;
        self.last_seen = count;
        (settled && count > self.reported).then(|| count - self.reported)
    }

    /// The report for `count` was logged; `after` is the counter right after. If it grew, the
    /// report itself (or another line) was dropped: it counts, and is reported next time.
    fn sent(&mut self, count: usize, after: usize) {
        if after == count {
            self.reported = count;
        }
        self.last_seen = after;
    }

    /// At exit there is no next look: whatever is unreported.
    fn due_at_exit(&self, count: usize) -> Option<usize> {
        (count > self.reported).then(|| count - self.reported)
    }
}

// ---- peer-controlled text ----

/// Longest rendering of one peer value in a log line, in bytes, escapes included and quotes
/// and the cut marker not.
pub(crate) const PEER_STR_MAX: usize = 128;

/// A peer-controlled string as a log line shows it: quoted, escaped (no control character, no
/// line break, no bidi override), and cut after [`PEER_STR_MAX`] bytes with a marker saying how
/// much was cut: `"abc…"…(+1048448 bytes)`. Use it for every id, type name, reason or error
/// text a peer chose (`%peer_str(&id)` as a field, `{}` in a message).
pub(crate) fn peer_str(s: &str) -> PeerStr<'_> {
    PeerStr {
        text: s,
        quoted: true,
    }
}

/// [`peer_str`] without the quotes, for text that reads as part of the sentence around it (a
/// parse error that may quote the input). Quotes and backslashes in it are still escaped.
pub(crate) fn peer_str_bare(s: &str) -> PeerStr<'_> {
    PeerStr {
        text: s,
        quoted: false,
    }
}

/// A whole peer message (`console_messages`): escaped like [`peer_str`] but not quoted, not
/// cut, and leaving `"` and `\` alone so JSON stays readable. With `keep_newlines`, `\n` stays
/// a line break: for the server's own pretty-printed JSON, whose strings cannot hold a raw
/// newline, so every line after the first starts with indentation or a closing bracket.
pub(crate) fn peer_text(s: &str, keep_newlines: bool) -> PeerText<'_> {
    PeerText {
        text: s,
        keep_newlines,
    }
}

/// A `playerId` as a peer sent it, for a log line: a string or number through [`peer_str`]
/// (a JSON number's digits are the peer's too, and can be a MiB long).
pub(crate) fn peer_player_id(value: &PlayerIdValue) -> PeerPlayerId<'_> {
    PeerPlayerId(value)
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerStr<'a> {
    text: &'a str,
    quoted: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerPlayerId<'a>(&'a PlayerIdValue);

impl fmt::Display for PeerPlayerId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            PlayerIdValue::Absent => f.write_str("(none)"),
            PlayerIdValue::String(s) => peer_str(s).fmt(f),
            // Unquoted, as the number it is.
            PlayerIdValue::Number(n) => peer_str_bare(n).fmt(f),
            PlayerIdValue::Other => f.write_str("(not a string or number)"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerText<'a> {
    text: &'a str,
    keep_newlines: bool,
}

/// How one character is written in a log line. By hand rather than `str::escape_debug`: that
/// also escapes combining marks (harmless, but common in names) and always escapes quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    Raw(char),
    Short(&'static str),
    Unicode(char),
}

impl Escape {
    fn of(c: char, escape_quotes: bool) -> Self {
        match c {
            '\n' => Self::Short("\\n"),
            '\r' => Self::Short("\\r"),
            '\t' => Self::Short("\\t"),
            '"' if escape_quotes => Self::Short("\\\""),
            '\\' if escape_quotes => Self::Short("\\\\"),
            // C0, DEL and C1 (ESC, CSI, NEL, …), the Unicode line and paragraph separators, and
            // the bidirectional marks and overrides that reorder what a reader sees.
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}'
                        | '\u{2029}'
                        | '\u{061c}'
                        | '\u{200e}'
                        | '\u{200f}'
                        | '\u{202a}'..='\u{202e}'
                        | '\u{2066}'..='\u{2069}'
                ) =>
            {
                Self::Unicode(c)
            }
            c => Self::Raw(c),
        }
    }

    fn len(self) -> usize {
        match self {
            Self::Raw(c) => c.len_utf8(),
            Self::Short(s) => s.len(),
            // `\u{` + hex digits + `}`
            Self::Unicode(c) => 4 + (32 - (c as u32 | 1).leading_zeros()).div_ceil(4) as usize,
        }
    }

    fn write(self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Raw(c) => f.write_char(c),
            Self::Short(s) => f.write_str(s),
            Self::Unicode(c) => write!(f, "\\u{{{:x}}}", c as u32),
        }
    }
}

impl fmt::Display for PeerStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = if self.quoted { "\"" } else { "" };
        f.write_str(quote)?;
        let mut used = 0;
        for (at, c) in self.text.char_indices() {
            let escape = Escape::of(c, true);
            used += escape.len();
            if used > PEER_STR_MAX {
                return write!(f, "{quote}…(+{} bytes)", self.text.len() - at);
            }
            escape.write(f)?;
        }
        f.write_str(quote)
    }
}

impl fmt::Display for PeerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Runs that need no escape are written whole: verbose lines can be a MiB.
        let mut run = 0;
        for (at, c) in self.text.char_indices() {
            if c == '\n' && self.keep_newlines {
                continue;
            }
            let escape = Escape::of(c, false);
            if escape != Escape::Raw(c) {
                f.write_str(&self.text[run..at])?;
                escape.write(f)?;
                run = at + c.len_utf8();
            }
        }
        f.write_str(&self.text[run..])
    }
}

// ---- warnings a peer causes ----

/// Warnings a connection gets logged in full before they are only counted.
pub(crate) const WARNINGS_IN_FULL: u64 = 5;

/// One connection's warning budget: the first [`WARNINGS_IN_FULL`] are logged, later ones only
/// counted, except the 8th, 16th, 32nd, … which are logged with the count of those left out
/// since the last one logged. A flood of n bad messages costs about 5 + log2(n) lines, and the
/// rule needs no clock, so the sans-IO router can keep one per connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct WarnLimiter {
    seen: u64,
    suppressed: u64,
}

/// Whether to log a warning, and what to add to its line: empty, or the number of warnings
/// from the same connection left out since the last one logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Suppressed(u64);

impl WarnLimiter {
    /// Counts one warning. `Some` if it is to be logged, with the note for its line.
    pub(crate) fn check(&mut self) -> Option<Suppressed> {
        self.seen = self.seen.saturating_add(1);
        if self.seen <= WARNINGS_IN_FULL {
            Some(Suppressed(0))
        } else if self.seen.is_power_of_two() {
            Some(Suppressed(std::mem::take(&mut self.suppressed)))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// The warnings counted but not logged since the last one logged, for a last line when the
    /// connection ends (`None` if there are none).
    pub(crate) fn take_suppressed(&mut self) -> Option<Suppressed> {
        match std::mem::take(&mut self.suppressed) {
            0 => None,
            n => Some(Suppressed(n)),
        }
    }
}

impl Suppressed {
    pub(crate) fn count(self) -> u64 {
        self.0
    }
}

/// `; N more warnings from this connection suppressed`, or nothing.
impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, "; {n} more warnings from this connection suppressed"),
        }
    }
}
