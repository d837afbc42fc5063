//! Peer behaviour shared by the scenarios: loss counters, realistic SDP and ICE messages, a
//! streamer's identify handshake, and reading past the optional `playerCount`.

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::Cli;
use crate::util::{self, Ws, kind};

#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) lost: u64,
    pub(crate) unexpected: u64,
    pub(crate) failed: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, other: &Self) {
        self.lost += other.lost;
        self.unexpected += other.unexpected;
        self.failed += other.failed;
    }
}

/// An SDP of exactly `bytes` bytes (when `bytes` is large enough) carrying `token` if given.
pub(crate) fn sdp(bytes: usize, token: Option<usize>) -> String {
    let mut s = String::from("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\n");
    if let Some(t) = token {
        s.push_str(&format!("a=bench-token:{t}\r\n"));
    }
    s.push_str("a=x:");
    while s.len() + 2 < bytes {
        s.push('x');
    }
    s.push_str("\r\n");
    s
}

pub(crate) fn token_of(sdp: &str) -> Option<usize> {
    let rest = sdp.split("a=bench-token:").nth(1)?;
    rest.split("\r\n").next()?.parse().ok()
}

pub(crate) fn candidate(k: usize, player_id: Option<&str>) -> Value {
    let mut v = json!({
        "type": "iceCandidate",
        "candidate": {
            "candidate": format!("candidate:{k} 1 udp 2122260223 192.0.2.1 {} typ host generation 0", 50000 + k),
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        },
    });
    if let Some(id) = player_id {
        v["playerId"] = json!(id);
    }
    v
}

/// Connects a streamer and identifies it as `id`; fails unless the server confirms exactly `id`.
pub(crate) async fn identify(url: &str, id: &str) -> Result<Ws> {
    let mut ws = util::connect(url).await?;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let v = util::recv_json(&mut ws, util::recv_timeout()).await?;
        seen.push(kind(&v).to_owned());
    }
    seen.sort();
    if seen != ["config", "identify"] {
        bail!("streamer {id}: expected config and identify, got {seen:?}");
    }
    util::send_json(
        &mut ws,
        &json!({"type": "endpointId", "id": id, "protocolVersion": "1.1.0"}),
    )
    .await?;
    let v = util::recv_json(&mut ws, util::recv_timeout()).await?;
    if kind(&v) != "endpointIdConfirm" || v["committedId"] != id {
        bail!("streamer {id}: expected endpointIdConfirm for {id}, got {v}");
    }
    Ok(ws)
}

/// Receives the next message, skipping one `playerCount` (an optional server setting).
pub(crate) async fn next_skipping_count(ws: &mut Ws) -> Result<Value> {
    let v = util::recv_json(ws, util::recv_timeout()).await?;
    if kind(&v) == "playerCount" {
        return util::recv_json(ws, util::recv_timeout()).await;
    }
    Ok(v)
}

/// A streamer's messages until the coordinator says stop; then a protocol ping goes out and
/// messages are still handed over until its pong. The server sends in order, so whatever it
/// sent this streamer before the pong (a late duplicate `playerDisconnected`) is seen.
pub(crate) struct UntilStopped {
    stop: watch::Receiver<bool>,
    stopping: bool,
}

impl UntilStopped {
    pub(crate) fn new(stop: watch::Receiver<bool>) -> Self {
        Self {
            stop,
            stopping: false,
        }
    }

    /// The next message; None once the pong after the stop arrived, or after a failure, which
    /// is counted in `counts` and reported under `who`.
    pub(crate) async fn next(
        &mut self,
        ws: &mut Ws,
        who: &str,
        counts: &mut Counts,
    ) -> Option<Value> {
        match self.next_result(ws).await? {
            Ok(v) => Some(v),
            Err(e) => {
                counts.failed += 1;
                eprintln!("{who}: {e:#}");
                None
            }
        }
    }

    async fn next_result(&mut self, ws: &mut Ws) -> Option<Result<Value>> {
        loop {
            let wait = if self.stopping {
                util::recv_timeout()
            } else {
                Duration::from_secs(86_400)
            };
            let v = tokio::select! {
                v = util::recv_json(ws, wait) => v,
                _ = self.stop.changed(), if !self.stopping => {
                    self.stopping = true;
                    let ping = json!({"type": "ping", "time": 1});
                    if let Err(e) = util::send_json(ws, &ping).await {
                        return Some(Err(e));
                    }
                    continue;
                }
            };
            if self.stopping && v.as_ref().is_ok_and(|v| kind(v) == "pong") {
                return None;
            }
            return Some(v);
        }
    }
}

/// The longest a cluster run waits for the player's node to list its streamers: the nodes find
/// each other within a heartbeat or two (default 1 s each), this is only a failure bound.
const LISTED_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two `listStreamers` while waiting; it only paces the poll.
const LISTED_POLL: Duration = Duration::from_millis(20);

/// With `--cluster`, waits until a player on `cli.player` (another node than `cli.streamer`'s)
/// is offered every one of `ids` in `listStreamers`, so that subscribing to them works; the
/// remote node's streamers reach the list with its messages. Without `--cluster`, returns at
/// once: the single-node figures do not pay for a connection they do not need.
pub(crate) async fn await_listed(cli: &Cli, ids: &[String]) -> Result<()> {
    if !cli.cluster {
        return Ok(());
    }
    let mut ws = util::connect(&cli.player).await?;
    let v = util::recv_json(&mut ws, util::recv_timeout()).await?;
    if kind(&v) != "config" {
        bail!("cluster: a player expected config, got {v}");
    }
    let deadline = tokio::time::Instant::now() + LISTED_TIMEOUT;
    let mut every = tokio::time::interval(LISTED_POLL);
    loop {
        util::send_json(&mut ws, &json!({"type": "listStreamers"})).await?;
        let v = next_skipping_count(&mut ws).await?;
        if kind(&v) != "streamerList" {
            bail!("cluster: expected streamerList, got {v}");
        }
        let listed = v["ids"].as_array().is_some_and(|listed| {
            ids.iter()
                .all(|id| listed.iter().any(|l| l.as_str() == Some(id.as_str())))
        });
        if listed {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "cluster: after {LISTED_TIMEOUT:?} the player's node still lists {} and not all of {ids:?}",
                v["ids"]
            );
        }
        every.tick().await;
    }
    ws.close(None).await?;
    Ok(())
}
