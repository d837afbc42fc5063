//! Unit tests of the router's warnings: a peer's warnings are under a per-connection budget
//! (`WarnLimiter`), the budget is dropped with the connection, and the peer's values in a
//! warning line are escaped and cut. The log is captured from a scoped tracing subscriber.

use std::cell::RefCell;
use std::io::Write;
use std::sync::Once;

use protocol::Inbound;

use super::*;

thread_local! {
    /// Where this thread's log lines go while a test captures them.
    static CAPTURE: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Writes to the calling thread's capture, if it has one.
struct ThreadCapture;

impl Write for ThreadCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(buffer) = c.borrow_mut().as_mut() {
                buffer.extend_from_slice(bytes);
            }
        });
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Log lines written while `f` runs on this thread. One global subscriber (installed once)
/// writes each thread's lines to that thread's capture: with a scoped subscriber per test,
/// other tests hitting the same callsites on threads without one could leave a callsite's
/// cached interest at "never" (a race in tracing's interest cache), and lines went missing.
fn captured(f: impl FnOnce()) -> Vec<String> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| ThreadCapture)
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the unit tests");
    });
    CAPTURE.with(|c| *c.borrow_mut() = Some(Vec::new()));
    f();
    let bytes = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn msg(router: &mut Router, conn: ConnId, text: &str) {
    router.handle_message(conn, Inbound::parse(text).unwrap(), || 0);
}

#[test]
fn a_flood_of_unknown_types_logs_the_first_five_then_powers_of_two_then_the_rest_at_close() {
    let mut router = Router::new(RouterConfig::default());
    let player = ConnId(1);
    let quiet = ConnId(2);
    let lines = captured(|| {
        router.handle_opened(player, Role::Player);
        router.handle_opened(quiet, Role::Player);
        for n in 0..100 {
            msg(&mut router, player, &format!(r#"{{"type":"flood{n}"}}"#));
        }
        assert_eq!(
            router.warnings.len(),
            1,
            "only the warning connection has a budget"
        );
        router.handle_closed(player);
        assert!(
            router.warnings.is_empty(),
            "the budget leaves with the connection"
        );
    });
    let ignored: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("unknown message type"))
        .collect();
    // 1st–5th, then the 8th, 16th, 32nd and 64th with the count left out before each.
    assert_eq!(ignored.len(), 9, "{lines:#?}");
    for (line, n) in ignored
        .iter()
        .zip(["flood0", "flood1", "flood2", "flood3", "flood4"])
    {
        assert!(line.contains(&format!("\"{n}\"")), "{line}");
        assert!(!line.contains("suppressed"), "{line}");
    }
    for (line, (n, left_out)) in ignored[5..].iter().zip([
        ("flood7", 2),
        ("flood15", 7),
        ("flood31", 15),
        ("flood63", 31),
    ]) {
        assert!(
            line.contains(&format!(
                "\"{n}\"; ignored; {left_out} more warnings from this connection suppressed"
            )),
            "{line}"
        );
    }
    let last = lines.last().unwrap();
    assert!(
        last.contains("36 more warnings from this connection suppressed")
            && last.contains("conn=#1")
            && last.contains("id=\"Player0\""),
        "{last}"
    );
    assert!(lines.iter().all(|l| !l.contains("conn=#2")), "{lines:#?}");
}

#[test]
fn a_warning_for_a_connection_already_gone_keeps_no_budget() {
    let mut router = Router::new(RouterConfig::default());
    let lines = captured(|| router.warn(ConnId(7), "late"));
    assert_eq!(lines.len(), 1);
    assert!(router.warnings.is_empty());
}

#[test]
fn peer_values_in_router_warnings_are_escaped_and_cut() {
    let mut router = Router::new(RouterConfig::default());
    let streamer = ConnId(1);
    let id = format!(
        "S\n2000-01-01T00:00:00Z ERROR forged\u{1b}[2J{}",
        // Longer than a log line shows (128 bytes), within the id limit (256).
        "x".repeat(200)
    );
    let ty = format!("t\r\n\u{1b}]0;title\u{7}{}", "y".repeat(5000));
    let lines = captured(|| {
        router.handle_opened(streamer, Role::Streamer);
        msg(
            &mut router,
            streamer,
            &serde_json::json!({"type": "endpointId", "id": id}).to_string(),
        );
        msg(
            &mut router,
            streamer,
            &serde_json::json!({ "type": ty }).to_string(),
        );
        msg(
            &mut router,
            streamer,
            &serde_json::json!({"type": "offer", "playerId": "p\n".repeat(500)}).to_string(),
        );
    });
    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 2, "{lines:#?}");
    assert_eq!(lines.len(), 2, "no line was split: {lines:#?}");
    for line in &lines {
        assert!(line.len() < 600, "{} bytes: {line}", line.len());
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.contains(r#"id="S\n2000-01-01T00:00:00Z ERROR forged\u{1b}[2Jxxx"#),
            "{line}"
        );
    }
    assert!(warnings[0].contains(r#"unknown message type "t\r\n\u{1b}]0;title\u{7}yyy"#));
    assert!(warnings[0].contains("…(+"), "{}", warnings[0]);
    assert!(
        warnings[1].contains(r#"offer for "p\np\n"#),
        "{}",
        warnings[1]
    );
}

#[test]
fn players_refused_at_connect_are_warned_with_their_connection_id() {
    let mut router = Router::new(RouterConfig {
        max_player_count: Some(0),
        ..RouterConfig::default()
    });
    let lines = captured(|| router.handle_opened(ConnId(7), Role::Player));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("WARN")
            && lines[0].contains("conn=#7")
            && lines[0].contains("role=\"player\"")
            && lines[0].contains("max_player_count 0; closing 1013"),
        "{}",
        lines[0]
    );
    let mut router = Router::new(RouterConfig {
        subscribe_at_connect: true,
        ..RouterConfig::default()
    });
    let lines = captured(|| router.handle_opened(ConnId(8), Role::Player));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("conn=#8") && lines[0].contains("no streamer connected; closing 1013"),
        "{}",
        lines[0]
    );
}
