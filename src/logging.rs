//! Log output and what peers may put in it. Owns the subscriber setup (one non-blocking,
//! lossy writer to stderr and the report of the lines it dropped), the escaping of every
//! peer-controlled value that reaches a log line ([`peer_str`], [`peer_text`]) and the
//! per-connection warning budget ([`WarnLimiter`]). What gets logged is decided where it
//! happens; nothing here ever waits for the log.

use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::Duration;

use protocol::PlayerIdValue;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogLevel;

/// Bytes of log lines that may wait for the writer thread. Past this new lines are dropped (and
/// counted) instead of slowing the task that logs them. A line is a few hundred bytes (every
/// peer value in it is cut to [`PEER_STR_MAX`]); `console_messages = "verbose"` or
/// `"formatted"` lines hold a whole message each. The thread writes one batch while the next
/// gathers, so the log holds at most twice this.
pub(crate) const LOG_BUFFER_BYTES: usize = 4 << 20;

/// How long the writer thread lets lines gather after the first one of a batch: lines logged
/// together leave in one `write()`, and a busy server wakes the thread at most this often.
const BATCH_DELAY: Duration = Duration::from_millis(10);

/// How long exit waits for the last lines to be written (stderr may be stuck).
const EXIT_FLUSH: Duration = Duration::from_millis(1300);

/// How often the count of dropped lines is looked at.
const DROP_REPORT_PERIOD: Duration = Duration::from_secs(1);

/// Installs the global subscriber: `level` everywhere, unless `RUST_LOG` is set, in which case
/// its directives (e.g. `signalling=debug,hyper=warn`) replace the level. Writes to stderr
/// through a writer thread: a task that logs only appends the line to a buffer, and when the
/// thread cannot keep up (stderr a full pipe, a slow terminal) new lines are dropped and counted
/// (see [`Logging::report_dropped_lines`]).
///
/// Never panics. An invalid `RUST_LOG` falls back to `level` with a warning, and a second call
/// (a subscriber already installed, as in tests) installs nothing.
///
/// Keep the returned [`Logging`] alive until the end of `main`: dropping it reports the last
/// dropped lines and flushes what is queued (waiting 1.3 s at most, even with stderr stuck).
#[must_use = "dropping it stops the log writer"]
pub fn init(level: LogLevel) -> Logging {
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
    let (writer, worker) = Batched::start(LOG_BUFFER_BYTES, io::stderr());
    let dropped = writer.dropped();
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
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
    Logging {
        dropped,
        reported: Arc::default(),
        _worker: worker,
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
    /// Starts the writer thread writing to `out`.
    fn start(limit: usize, out: impl io::Write + Send + 'static) -> (Self, WriterGuard) {
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            ready: Condvar::new(),
            dropped: Arc::default(),
            limit,
        });
        let (done_tx, done) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
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

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(EXIT_FLUSH);
        }
    }
}

/// The running log writer. Dropping it logs the lines dropped since the last report, then
/// flushes the writer thread.
#[derive(Debug)]
pub struct Logging {
    dropped: Arc<AtomicUsize>,
    /// Dropped lines the periodic report has logged (so the one at exit gives only the rest).
    reported: Arc<AtomicUsize>,
    // Declared last: dropped after `drop` has queued the final report.
    _worker: WriterGuard,
}

impl Logging {
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
        // At exit, the lines dropped since the last periodic report. If even this line finds
        // the buffer full, retry briefly: exit is the last chance, and the wait is bounded
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::time::Instant;

    use super::*;

    /// An output that keeps what is written, or blocks every write until released.
    #[derive(Clone, Default)]
    struct Out {
        written: Arc<Mutex<Vec<u8>>>,
        stuck: Arc<(Mutex<bool>, Condvar)>,
    }

    impl io::Write for Out {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, released) = &*self.stuck;
            let mut stuck = lock.lock().unwrap();
            while *stuck {
                stuck = released.wait(stuck).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_come_out_whole_and_in_order_and_the_guard_flushes_them() {
        let out = Out::default();
        let (writer, guard) = Batched::start(1 << 20, out.clone());
        for i in 0..1000 {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.written.lock().unwrap().clone()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
        assert_eq!(writer.dropped().load(Ordering::Relaxed), 0);
    }

    #[test]
    fn with_the_output_stuck_lines_past_the_budget_are_dropped_and_counted_without_waiting() {
        let out = Out::default();
        *out.stuck.0.lock().unwrap() = true;
        let (writer, guard) = Batched::start(1000, out.clone());
        let line = [b'x'; 99];
        let started = Instant::now();
        for _ in 0..101 {
            writer.make_writer().write_all(&line).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "logging waited on the output"
        );
        // At most one budget (10 lines) waits and one more is in the stuck write.
        let dropped = writer.dropped().load(Ordering::Relaxed);
        assert!((81..=91).contains(&dropped), "{dropped} dropped");
        assert!(writer.0.lock().bytes.len() <= 1000);
        // Exit does not wait for a stuck output past its bound.
        let exit = Instant::now();
        drop(guard);
        assert!(exit.elapsed() < EXIT_FLUSH + Duration::from_millis(500));
        let (lock, released) = &*out.stuck;
        *lock.lock().unwrap() = false;
        released.notify_all();
    }

    fn shown(s: &str) -> String {
        peer_str(s).to_string()
    }

    #[test]
    fn peer_str_quotes_and_keeps_ordinary_text() {
        assert_eq!(shown("Player0"), r#""Player0""#);
        assert_eq!(shown("Straße u\u{301} 流"), "\"Straße u\u{301} 流\"");
        assert_eq!(shown(""), r#""""#);
    }

    #[test]
    fn peer_str_escapes_line_breaks_controls_quotes_and_bidi() {
        assert_eq!(
            shown("a\nb\r\tc\u{1b}[2J\u{7f}\u{9b}\u{85}"),
            r#""a\nb\r\tc\u{1b}[2J\u{7f}\u{9b}\u{85}""#
        );
        assert_eq!(shown("x\u{2028}y\u{2029}"), r#""x\u{2028}y\u{2029}""#);
        assert_eq!(shown("\u{202e}abc\u{2066}"), r#""\u{202e}abc\u{2066}""#);
        assert_eq!(shown("say \"hi\" \\o/"), r#""say \"hi\" \\o/""#);
        assert_eq!(shown("\0"), r#""\u{0}""#);
    }

    #[test]
    fn peer_str_never_writes_a_raw_control_or_line_break() {
        let all: String = (0..0x3000u32).filter_map(char::from_u32).collect();
        for chunk in all.as_bytes().chunks(64) {
            let chunk = String::from_utf8_lossy(chunk);
            for out in [shown(&chunk), peer_text(&chunk, false).to_string()] {
                assert!(
                    !out.chars().any(|c| Escape::of(c, false) != Escape::Raw(c)),
                    "{out:?}"
                );
            }
        }
    }

    #[test]
    fn peer_str_cuts_long_values_and_says_how_much() {
        let long = "a".repeat(1 << 20);
        let out = shown(&long);
        assert_eq!(
            out,
            format!("\"{}\"…(+{} bytes)", "a".repeat(128), (1 << 20) - 128)
        );
        // Exactly the limit: not cut.
        assert_eq!(
            shown(&"b".repeat(PEER_STR_MAX)),
            format!("\"{}\"", "b".repeat(128))
        );
    }

    #[test]
    fn peer_str_counts_escapes_against_the_limit() {
        // Each ESC renders as 6 bytes: 21 fit in 128, the rest is cut on a character boundary.
        let out = shown(&"\u{1b}".repeat(1000));
        assert_eq!(
            out,
            format!("\"{}\"…(+{} bytes)", "\\u{1b}".repeat(21), 1000 - 21)
        );
        // Multi-byte characters are never split.
        let out = shown(&"流".repeat(100));
        assert_eq!(
            out,
            format!("\"{}\"…(+{} bytes)", "流".repeat(42), 300 - 126)
        );
    }

    #[test]
    fn escape_lengths_match_what_is_written() {
        for c in [
            '\0',
            '\u{1b}',
            '\u{9b}',
            '\u{2028}',
            '\u{10ffff}',
            'a',
            '流',
            '\n',
        ] {
            let escape = Escape::of(c, true);
            struct Written(Escape);
            impl fmt::Display for Written {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    self.0.write(f)
                }
            }
            let out = Written(escape).to_string();
            assert_eq!(out.len(), escape.len(), "{c:?} → {out}");
        }
    }

    #[test]
    fn peer_str_bare_escapes_and_cuts_without_quotes() {
        assert_eq!(
            peer_str_bare("not JSON: \"x\ny\"").to_string(),
            r#"not JSON: \"x\ny\""#
        );
        assert_eq!(
            peer_str_bare(&"z".repeat(200)).to_string(),
            format!("{}…(+72 bytes)", "z".repeat(128))
        );
    }

    #[test]
    fn peer_player_id_shows_strings_quoted_and_numbers_bare_both_cut() {
        let shown = |v: PlayerIdValue| peer_player_id(&v).to_string();
        assert_eq!(shown(PlayerIdValue::String("a\nb".into())), r#""a\nb""#);
        assert_eq!(shown(PlayerIdValue::Number("12".into())), "12");
        assert_eq!(
            shown(PlayerIdValue::Number("9".repeat(1000))),
            format!("{}…(+872 bytes)", "9".repeat(128))
        );
        assert_eq!(shown(PlayerIdValue::Absent), "(none)");
        assert_eq!(shown(PlayerIdValue::Other), "(not a string or number)");
    }

    #[test]
    fn peer_text_escapes_only_what_could_forge_a_line_or_reach_the_terminal() {
        let json = "{\"type\":\"x\",\"a\":\"q\\\"\\n\u{2028}\u{9b}2J\"}";
        assert_eq!(
            peer_text(json, false).to_string(),
            r#"{"type":"x","a":"q\"\n\u{2028}\u{9b}2J"}"#
        );
        assert_eq!(peer_text("a\nb", false).to_string(), r"a\nb");
        assert_eq!(
            peer_text("{\n  \"a\": 1\n}", true).to_string(),
            "{\n  \"a\": 1\n}"
        );
        assert_eq!(
            peer_text("a\r\nb\u{1b}", true).to_string(),
            "a\\r\nb\\u{1b}"
        );
        let long = "x".repeat(10_000);
        assert_eq!(peer_text(&long, false).to_string(), long);
    }

    #[test]
    fn the_first_warnings_are_logged_then_one_per_power_of_two_with_a_count() {
        let mut limiter = WarnLimiter::default();
        let verdicts: Vec<Option<u64>> = (1..=40)
            .map(|_| limiter.check().map(Suppressed::count))
            .collect();
        let logged: Vec<(usize, u64)> = verdicts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|n| (i + 1, n)))
            .collect();
        assert_eq!(
            logged,
            [
                (1, 0),
                (2, 0),
                (3, 0),
                (4, 0),
                (5, 0),
                (8, 2),
                (16, 7),
                (32, 15)
            ]
        );
        // 33rd to 40th: counted, and reported when the connection ends.
        assert_eq!(limiter.take_suppressed().map(Suppressed::count), Some(8));
        assert_eq!(limiter.take_suppressed(), None);
    }

    #[test]
    fn a_flood_of_a_million_warnings_costs_about_twenty_lines_and_loses_no_count() {
        let mut limiter = WarnLimiter::default();
        let mut lines = 0;
        let mut accounted = 0;
        for _ in 0..1_000_000 {
            if let Some(note) = limiter.check() {
                lines += 1;
                accounted += 1 + note.count();
            }
        }
        accounted += limiter.take_suppressed().map_or(0, Suppressed::count);
        assert_eq!(lines, 5 + 17); // 8, 16, …, 2^19
        assert_eq!(accounted, 1_000_000);
    }

    #[test]
    fn suppressed_note_reads_as_a_suffix() {
        assert_eq!(Suppressed(0).to_string(), "");
        assert_eq!(
            Suppressed(7).to_string(),
            "; 7 more warnings from this connection suppressed"
        );
    }

    #[test]
    fn dropped_lines_are_reported_once_the_count_settles() {
        let mut report = DropReport::default();
        assert_eq!(report.due(0), None);
        // Dropping: no report while the count still grows.
        assert_eq!(report.due(10), None);
        assert_eq!(report.due(50), None);
        // Settled: report all 50.
        assert_eq!(report.due(50), Some(50));
        report.sent(50, 50);
        assert_eq!(report.due(50), None);
        // More drops later: only the new ones.
        assert_eq!(report.due(60), None);
        assert_eq!(report.due(60), Some(10));
        // The report line itself was dropped: it counts, and comes again once settled.
        report.sent(60, 61);
        assert_eq!(report.due(61), Some(11));
        report.sent(61, 61);
        assert_eq!(report.due(61), None);
        assert_eq!(report.due_at_exit(61), None);
        assert_eq!(report.due_at_exit(70), Some(9));
    }
}
