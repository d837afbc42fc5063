//! Unit tests of the writer thread, the escaping of peer text and the warning budget.

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
    let (writer, guard) = Batched::start("test", 1 << 20, out.clone(), Arc::default());
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
    let (writer, guard) = Batched::start("test", 1000, out.clone(), Arc::default());
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
