//! Unit tests of what reaches each destination: the JSON line format (every line parsed with
//! serde_json), the text format's message lines, the level of each destination, the daily
//! files' rotation at midnight (the clock is injected) and their retention.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::{debug, error, info_span, warn};

use super::json::{Date, Timestamp};
use super::*;

/// A console that keeps what is written.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// A clock the test sets, in milliseconds since 1970.
#[derive(Clone, Default)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn at(time: SystemTime) -> Self {
        let clock = Self::default();
        clock.set(time);
        clock
    }
    fn set(&self, time: SystemTime) {
        let ms = time.duration_since(UNIX_EPOCH).unwrap().as_millis();
        self.0.store(u64::try_from(ms).unwrap(), Ordering::Relaxed);
    }
    fn clock(&self) -> Clock {
        let ms = Arc::clone(&self.0);
        Arc::new(move || UNIX_EPOCH + Duration::from_millis(ms.load(Ordering::Relaxed)))
    }
}

fn date(text: &str) -> Date {
    Date::parse(text.as_bytes()).unwrap()
}

/// `date` at `ms` milliseconds into the day.
fn at(date_text: &str, ms: u64) -> SystemTime {
    date(date_text).start() + Duration::from_millis(ms)
}

const LAST_MS: u64 = 86_400_000 - 1;

/// A folder under the system's temporary one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "signalling-logging-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn names(&self) -> BTreeSet<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    console: Capture,
    clock: TestClock,
}

/// Runs `f` with the subscriber [`build`] makes from `settings` (stderr at `console_level`),
/// then drops the [`Logging`], which flushes every writer thread. Each test logs from its own
/// callsites, so a scoped subscriber sees all of them.
fn run(
    settings: &Settings,
    console_level: &str,
    clock: TestClock,
    f: impl FnOnce(&TestClock),
) -> Result<Run, LogError> {
    let console = Capture::default();
    let (subscriber, logging) = build(
        settings,
        EnvFilter::new(console_level),
        clock.clock(),
        console.clone(),
        false,
    )?;
    tracing::subscriber::with_default(subscriber, || {
        f(&clock);
        drop(logging);
    });
    Ok(Run { console, clock })
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect()
}

fn settings(format: LogFormat, file: Option<FileSettings>) -> Settings {
    Settings {
        level: LogLevel::Info,
        format,
        file,
    }
}

fn conn_span() -> tracing::Span {
    info_span!(
        "conn",
        id = %ConnId(3),
        role = %Role::Player,
        remote = %"127.0.0.1:5000"
    )
}

#[test]
fn json_lines_parse_with_every_field_present_and_typed() {
    let clock = TestClock::at(at("2026-11-30", LAST_MS));
    let out = run(&settings(LogFormat::Json, None), "info", clock, |_| {
        tracing::info!("server started");
        let _conn = conn_span().entered();
        tracing::info!("opened");
        warn!(code = 1008u16, clean = false, "closed: {}", peer_str("bye"));
        let messages = MessageLog {
            mode: ConsoleMessages::Basic,
            conn: ConnId(3),
            role: Role::Player,
        };
        messages.incoming("offer", r#"{"type":"offer","sdp":"v=0"}"#);
        messages.outgoing(r#"{"type":"answer","sdp":"v=0"}"#);
    })
    .unwrap();
    let lines = json_lines(&out.console.text());
    assert_eq!(lines.len(), 5, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["timestamp"], "2026-11-30T23:59:59.999Z");
        assert!(line["level"].is_string() && line["target"].is_string());
        assert!(line["message"].is_string(), "{line}");
    }
    // Outside any connection: no id or role.
    assert_eq!(lines[0]["level"], "info");
    assert_eq!(lines[0]["event"], "message");
    assert_eq!(lines[0]["message"], "server started");
    assert!(lines[0].get("id").is_none() && lines[0].get("role").is_none());
    // Inside: the connection's span fields, and the event's own with their JSON types.
    assert_eq!(lines[1]["message"], "opened");
    assert_eq!(lines[1]["id"], "#3");
    assert_eq!(lines[1]["role"], "player");
    assert_eq!(lines[1]["remote"], "127.0.0.1:5000");
    assert_eq!(lines[2]["level"], "warn");
    assert_eq!(lines[2]["message"], r#"closed: "bye""#);
    assert_eq!(lines[2]["code"], 1008);
    assert_eq!(lines[2]["clean"], false);
    assert_eq!(lines[2]["role"], "player");
    // Signalling messages: Wilbur's `event`, and direction, sender, receiver and type.
    let incoming = &lines[3];
    assert_eq!(incoming["event"], "proto_message");
    assert_eq!(incoming["direction"], "incoming");
    assert_eq!(incoming["sender"], "player#3");
    assert_eq!(incoming["receiver"], "server");
    assert_eq!(incoming["type"], "offer");
    assert_eq!(incoming["message"], r#"> "offer""#);
    assert_eq!(incoming["id"], "#3");
    let outgoing = &lines[4];
    assert_eq!(outgoing["event"], "proto_message");
    assert_eq!(outgoing["direction"], "outgoing");
    assert_eq!(outgoing["sender"], "server");
    assert_eq!(outgoing["receiver"], "player#3");
    assert_eq!(outgoing["type"], "answer");
    assert_eq!(outgoing["message"], r#"< "answer""#);
}

#[test]
fn json_strings_are_escaped_so_no_value_ends_the_line_or_reaches_the_terminal() {
    let hostile = "a\nb\r\"q\"\\ \u{1b}[2J \u{7f}\u{9b} \u{2028}\u{2029} \u{202e}rtl\u{2066} 流";
    let clock = TestClock::at(at("2026-11-30", 0));
    let out = run(&settings(LogFormat::Json, None), "info", clock, |_| {
        warn!(raw = hostile, "{hostile}");
        let messages = MessageLog {
            mode: ConsoleMessages::Verbose,
            conn: ConnId(4),
            role: Role::Streamer,
        };
        messages.incoming(hostile, &format!(r#"{{"type":"x","a":"{hostile}"}}"#));
    })
    .unwrap();
    let text = out.console.text();
    assert_eq!(text.lines().count(), 2, "{text}");
    for c in text.chars() {
        assert!(
            c == '\n' || Escape::of(c, false) == Escape::Raw(c),
            "{c:?} written raw in {text}"
        );
    }
    let lines = json_lines(&text);
    // The JSON escapes give back exactly what was logged.
    assert_eq!(lines[0]["raw"], hostile);
    assert_eq!(lines[0]["message"], hostile);
    // A peer's type is escaped as the text format does it, then as JSON.
    assert_eq!(lines[1]["type"], peer_str_bare(hostile).to_string());
    assert_eq!(lines[1]["sender"], "streamer#4");
}

#[test]
fn timestamps_are_rfc3339_utc_with_milliseconds_and_dates_round_trip() {
    let t = |secs: u64, ms: u64| {
        Timestamp(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms)).to_string()
    };
    assert_eq!(t(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(t(951_825_600, 7), "2000-02-29T12:00:00.007Z");
    assert_eq!(t(1_798_761_599, 999), "2026-12-31T23:59:59.999Z");
    assert_eq!(t(4_107_542_399, 1), "2100-02-28T23:59:59.001Z");
    assert_eq!(t(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    // Before 1970 (a clock set wrong) shows as 1970, not garbage.
    assert_eq!(
        Timestamp(UNIX_EPOCH - Duration::from_secs(5)).to_string(),
        "1970-01-01T00:00:00.000Z"
    );
    // Every day from 1970 to 2300 formats and parses back to itself, one day apart.
    let mut previous: Option<Date> = None;
    for day in 0..120_000u64 {
        let d = Date::of(UNIX_EPOCH + Duration::from_secs(day * 86_400));
        let text = d.to_string();
        assert_eq!(Date::parse(text.as_bytes()), Some(d), "{text}");
        if let Some(p) = previous {
            assert_eq!(d.minus_days(1), p);
        }
        previous = Some(d);
    }
    for bad in [
        "2026-02-29",
        "2100-02-29",
        "2026-13-01",
        "2026-00-10",
        "2026-04-31",
        "2026-01-00",
        "2026-1-010",
        "20261-01-01",
        "2026-01-01x",
        "abcd-ef-gh",
    ] {
        assert_eq!(Date::parse(bad.as_bytes()), None, "{bad}");
    }
    assert!(Date::parse(b"2000-02-29").is_some());
}

#[test]
fn the_text_format_keeps_its_message_lines_and_leaves_the_structured_fields_out() {
    let clock = TestClock::at(at("2026-11-30", 0));
    let out = run(&settings(LogFormat::Text, None), "info", clock, |_| {
        let _conn = conn_span().entered();
        let messages = MessageLog {
            mode: ConsoleMessages::Basic,
            conn: ConnId(3),
            role: Role::Player,
        };
        messages.incoming("offer", r#"{"type":"offer"}"#);
        warn!(code = 1008u16, "closed");
    })
    .unwrap();
    let text = out.console.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("conn{id=#3 role=player remote=127.0.0.1:5000}")
            && lines[0].ends_with(r#": > "offer""#),
        "{}",
        lines[0]
    );
    for hidden in ["direction", "sender", "receiver", "type="] {
        assert!(!lines[0].contains(hidden), "{}", lines[0]);
    }
    // Other fields are still shown.
    assert!(lines[1].ends_with("closed code=1008"), "{}", lines[1]);
}

/// The levels each destination got lines at.
fn levels(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["level"].as_str().unwrap()).collect()
}

#[test]
fn each_destination_has_its_own_level() {
    for (console_level, file_level, console_expected, file_expected) in [
        (
            "warn",
            LogLevel::Debug,
            vec!["warn", "error"],
            vec!["debug", "info", "warn", "error"],
        ),
        (
            "debug",
            LogLevel::Error,
            vec!["debug", "info", "warn", "error"],
            vec!["error"],
        ),
    ] {
        let dir = TempDir::new(&format!("levels-{console_level}"));
        let file = FileSettings {
            folder: dir.0.clone(),
            level: file_level,
            retention_days: 14,
        };
        let clock = TestClock::at(at("2026-11-30", 1000));
        let out = run(
            &settings(LogFormat::Json, Some(file)),
            console_level,
            clock,
            |_| {
                debug!("one");
                tracing::info!("two");
                warn!("three");
                error!("four");
            },
        )
        .unwrap();
        let console = json_lines(&out.console.text());
        assert_eq!(levels(&console), console_expected, "console");
        let file = json_lines(&dir.read("server-2026-11-30.log"));
        assert_eq!(levels(&file), file_expected, "file");
    }
}

#[test]
fn lines_before_and_after_midnight_land_in_their_days_files_and_expired_files_go() {
    let dir = TempDir::new("rotation");
    // Today is 2026-11-30; with 14 days kept, 2026-11-17 is the oldest kept at start.
    for name in [
        "server-2026-11-16.log",
        "server-2026-11-17.log",
        "server-2026-11-18.log",
        "server-2020-01-01.log",
        // Not ours: left alone whatever their age.
        "server-2020-01-01.log.gz",
        "server-2025-02-29.log",
        "Server-2020-01-01.log",
        "notes.txt",
    ] {
        std::fs::write(dir.file(name), "old\n").unwrap();
    }
    std::fs::create_dir(dir.file("server-2019-01-01.log")).unwrap();
    // An operator's link is not one of our files either.
    std::os::unix::fs::symlink(dir.file("notes.txt"), dir.file("server-2019-02-02.log")).unwrap();
    let file = FileSettings {
        folder: dir.0.clone(),
        level: LogLevel::Info,
        retention_days: 14,
    };
    let clock = TestClock::at(at("2026-11-30", LAST_MS - 1));
    let settings = settings(LogFormat::Text, Some(file));
    let mut after_start = None;
    run(&settings, "info", clock, |clock| {
        after_start = Some(dir.names());
        tracing::info!("first");
        clock.set(at("2026-11-30", LAST_MS));
        tracing::info!("last of the day");
        clock.set(at("2026-12-01", 0));
        tracing::info!("first of the next");
        // A line stamped before the open file's day (a thread racing over midnight) stays
        // in the open file: files only move forward.
        clock.set(at("2026-11-30", LAST_MS));
        tracing::info!("late");
        clock.set(at("2026-12-01", 5));
        tracing::info!("next");
    })
    .unwrap();
    let unrelated = [
        "Server-2020-01-01.log",
        "notes.txt",
        "server-2019-01-01.log",
        "server-2019-02-02.log",
        "server-2020-01-01.log.gz",
        "server-2025-02-29.log",
    ];
    let expected_at_start: BTreeSet<String> = unrelated
        .iter()
        .chain(&[
            "server-2026-11-17.log",
            "server-2026-11-18.log",
            "server-2026-11-30.log",
        ])
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(after_start.unwrap(), expected_at_start, "at start");
    let expected_after: BTreeSet<String> = unrelated
        .iter()
        .chain(&[
            "server-2026-11-18.log",
            "server-2026-11-30.log",
            "server-2026-12-01.log",
        ])
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(dir.names(), expected_after, "after the rotation");
    let messages = |name: &str| -> Vec<String> {
        json_lines(&dir.read(name))
            .iter()
            .map(|l| l["message"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        messages("server-2026-11-30.log"),
        ["first", "last of the day"]
    );
    assert_eq!(
        messages("server-2026-12-01.log"),
        ["first of the next", "late", "next"]
    );
    assert_eq!(dir.read("notes.txt"), "old\n");
}

#[test]
fn retention_zero_keeps_every_file() {
    let dir = TempDir::new("keep-all");
    std::fs::write(dir.file("server-1999-01-01.log"), "old\n").unwrap();
    let file = FileSettings {
        folder: dir.0.clone(),
        level: LogLevel::Info,
        retention_days: 0,
    };
    let clock = TestClock::at(at("2026-11-30", 0));
    run(
        &settings(LogFormat::Text, Some(file)),
        "info",
        clock,
        |clock| {
            clock.set(at("2026-12-01", 0));
            tracing::info!("rotated");
        },
    )
    .unwrap();
    assert!(dir.names().contains("server-1999-01-01.log"));
    assert!(dir.names().contains("server-2026-12-01.log"));
}

#[test]
fn a_folder_that_cannot_be_created_stops_start_up_naming_it() {
    let dir = TempDir::new("not-a-folder");
    let blocker = dir.file("file");
    std::fs::write(&blocker, "").unwrap();
    let file = FileSettings {
        folder: blocker.join("logs"),
        level: LogLevel::Info,
        retention_days: 14,
    };
    let clock = TestClock::at(at("2026-11-30", 0));
    let Err(e) = run(
        &settings(LogFormat::Text, Some(file)),
        "info",
        clock,
        |_| {},
    ) else {
        panic!("start-up succeeded");
    };
    assert!(
        e.to_string()
            .contains(&blocker.join("logs").display().to_string()),
        "{e}"
    );
}

#[test]
fn a_day_whose_file_cannot_be_opened_drops_and_counts_its_lines() {
    let dir = TempDir::new("unopenable");
    // The next day's file name is taken by a folder.
    std::fs::create_dir(dir.file("server-2026-12-01.log")).unwrap();
    let file = FileSettings {
        folder: dir.0.clone(),
        level: LogLevel::Info,
        retention_days: 14,
    };
    let clock = TestClock::at(at("2026-11-30", LAST_MS));
    let out = run(
        &settings(LogFormat::Json, Some(file)),
        "info",
        clock,
        |clock| {
            tracing::info!("kept");
            clock.set(at("2026-12-01", 0));
            tracing::info!("lost 1");
            tracing::info!("lost 2");
        },
    )
    .unwrap();
    let kept = json_lines(&dir.read("server-2026-11-30.log"));
    assert_eq!(kept.len(), 1);
    // At exit the count is reported on the console (the file is still unwritable).
    let console = json_lines(&out.console.text());
    let report = console.last().unwrap();
    assert_eq!(report["level"], "warn");
    assert_eq!(
        report["message"],
        "2 log lines dropped: the log output could not keep up"
    );
    let _ = out.clock;
}
