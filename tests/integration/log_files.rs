//! Log files and JSON lines from the binary itself (issue 11): with `log_folder` set, a
//! streamer and a player negotiating leave one JSON object per line in
//! `server-YYYY-MM-DD.log`, signalling-message lines among them with direction, sender,
//! receiver and type; with `log_format = "json"` stderr carries the same shape.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::timeout;

use crate::binary::{LOOPBACK, Lines, binary, next_line, sigterm, start_logged};
use crate::support::{CONFIG, TIMEOUT, TestPeer};

/// A folder under the system's temporary one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "signalling-log-files-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the temporary folder");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a config file into `dir` and returns its path.
fn config_file(dir: &Path, text: &str) -> String {
    let path = dir.join("signalling.toml");
    std::fs::write(&path, text).expect("write the config file");
    path.display().to_string()
}

/// A streamer and a player: subscribe, then an offer to the player and an answer back.
async fn negotiate(streamer: std::net::SocketAddr, player: std::net::SocketAddr) {
    let mut st = TestPeer::connect(streamer, "streamer").await;
    st.expect_text(CONFIG).await;
    st.expect_type("identify").await;
    st.endpoint_id("S").await;
    let mut p = TestPeer::connect(player, "player").await;
    p.expect_text(CONFIG).await;
    p.subscribe("S").await;
    let connected = st.expect_type("playerConnected").await;
    let player_id = connected["playerId"]
        .as_str()
        .expect("a player id")
        .to_owned();
    st.send_json(&format!(
        r#"{{"type":"offer","sdp":"v=0","playerId":"{player_id}"}}"#
    ))
    .await;
    p.expect_type("offer").await;
    p.send_json(r#"{"type":"answer","sdp":"v=0"}"#).await;
    st.expect_type("answer").await;
}

/// SIGTERM, then waits for the exit (which flushes the logs), draining stderr meanwhile.
async fn stop(mut child: tokio::process::Child, mut lines: Lines) {
    sigterm(&child);
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let exit = timeout(TIMEOUT, child.wait())
        .await
        .expect("the server exits within the timeout")
        .expect("wait for the child");
    assert!(exit.success(), "exit status {exit:?}");
    let _ = drain.await;
}

fn parse_lines(text: &str, source: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{source}: not a JSON line ({e}): {line:?}"))
        })
        .collect()
}

/// The signalling-message line of `direction` whose type is `type_name` and whose
/// connection has `role`; checks its fields against the connection's.
fn message_line<'a>(lines: &'a [Value], direction: &str, type_name: &str, role: &str) -> &'a Value {
    let line = lines
        .iter()
        .find(|l| l["direction"] == direction && l["type"] == type_name && l["role"] == role)
        .unwrap_or_else(|| panic!("no {direction} {type_name} line of a {role} in {lines:#?}"));
    assert_eq!(line["event"], "proto_message");
    assert_eq!(line["level"], "info");
    let peer = format!(
        "{role}{}",
        line["id"].as_str().expect("the connection id, a string")
    );
    let (sender, receiver) = match direction {
        "incoming" => (peer.as_str(), "server"),
        _ => ("server", peer.as_str()),
    };
    assert_eq!(line["sender"], sender, "{line}");
    assert_eq!(line["receiver"], receiver, "{line}");
    line
}

#[tokio::test]
async fn the_log_file_holds_json_lines_with_each_connection_and_its_signalling_messages() {
    let dir = TempDir::new("file");
    let folder = dir.0.join("logs");
    let config = config_file(
        &dir.0,
        &format!(
            "log_folder = {:?}\nconsole_messages = \"basic\"\n",
            folder.display().to_string()
        ),
    );
    let (child, lines, streamer, player, seen) = start_logged(&["--config", &config]).await;
    // stderr keeps the text format.
    assert!(
        seen.iter()
            .any(|l| l.contains("INFO") && l.contains("log files in")),
        "{seen:#?}"
    );
    negotiate(streamer, player).await;
    stop(child, lines).await;

    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .expect("the log folder exists")
        .map(|e| {
            e.expect("a folder entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect();
    names.sort();
    // One file per UTC day (two if this test ran over midnight).
    assert!(
        !names.is_empty()
            && names.len() <= 2
            && names
                .iter()
                .all(|n| n.starts_with("server-") && n.ends_with(".log")),
        "{names:?}"
    );
    let mut lines = Vec::new();
    for name in &names {
        let text = std::fs::read_to_string(folder.join(name)).expect("read the log file");
        lines.extend(parse_lines(&text, name));
    }
    for line in &lines {
        for key in ["timestamp", "level", "event", "message", "target"] {
            assert!(line[key].is_string(), "no {key} in {line}");
        }
        let date = &line["timestamp"].as_str().unwrap_or_default()[..10];
        assert!(names.contains(&format!("server-{date}.log")), "{line}");
    }
    // Each connection's lines carry its id and role.
    let opened: Vec<&Value> = lines.iter().filter(|l| l["message"] == "opened").collect();
    assert_eq!(opened.len(), 2, "{lines:#?}");
    for line in opened {
        assert!(
            line["id"].as_str().is_some_and(|id| id.starts_with('#')),
            "{line}"
        );
        assert!(
            line["role"] == "streamer" || line["role"] == "player",
            "{line}"
        );
    }
    // The offer: in from the streamer, out to the player; the answer the other way.
    let offer_in = message_line(&lines, "incoming", "offer", "streamer");
    assert_eq!(offer_in["message"], r#"> "offer""#);
    message_line(&lines, "outgoing", "offer", "player");
    message_line(&lines, "incoming", "answer", "player");
    let answer_out = message_line(&lines, "outgoing", "answer", "streamer");
    assert_eq!(answer_out["message"], r#"< "answer""#);
}

#[tokio::test]
async fn log_format_json_writes_the_same_json_lines_to_stderr() {
    let dir = TempDir::new("stderr");
    let config = config_file(
        &dir.0,
        "log_format = \"json\"\nconsole_messages = \"basic\"\n",
    );
    let mut child = binary()
        .args(LOOPBACK)
        .args(["--config", &config])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the signalling binary");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let (mut streamer, mut player) = (None, None);
    while streamer.is_none() || player.is_none() {
        let line = next_line(&mut lines).await;
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stderr: not a JSON line ({e}): {line:?}"));
        let message = value["message"].as_str().expect("a message").to_owned();
        let addr = |role: &str| {
            message
                .strip_prefix(&format!("{role} port listening on "))
                .and_then(|a| a.parse().ok())
        };
        streamer = streamer.or(addr("streamer"));
        player = player.or(addr("player"));
    }
    let (streamer, player) = (streamer.expect("streamer"), player.expect("player"));
    negotiate(streamer, player).await;
    // Every line up to the answer's outgoing line parses; that one carries its fields.
    loop {
        let line = next_line(&mut lines).await;
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stderr: not a JSON line ({e}): {line:?}"));
        if value["direction"] == "outgoing" && value["type"] == "answer" {
            message_line(&[value], "outgoing", "answer", "streamer");
            break;
        }
    }
    stop(child, lines).await;
}
