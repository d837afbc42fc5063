//! Cirrus's matchmaker client (`UseMatchmaker`): reports this server to Epic's Matchmaker
//! (UE5.4 `Matchmaker/matchmaker.js`) over one TCP connection, as Cirrus did. It owns that
//! connection and its reconnects; it never touches the router: it reads the counts the router
//! task publishes (a `watch`, so a slow or absent Matchmaker never holds the router up).
//!
//! The wire format is Cirrus's: each message is `JSON.stringify` of an object, written on the
//! raw socket with no framing. Epic's Matchmaker parses each TCP read (`data` event) as one JSON
//! object and drops the connection when a read holds two, so messages go out one per write,
//! with Nagle off and [`WRITE_GAP`] between them.
//!
//! [`Reporter`] is the sans-IO part: it keeps what the Matchmaker believes (whether a streamer is
//! connected, how many clients) and turns the router's counts into the next message to send.

use std::io;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::router::Counts;

/// Cirrus's `matchmakerKeepAliveInterval`: a `ping` this often while connected.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(30);
/// The longest wait between reconnect attempts (unless `retry_interval` is longer).
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A connect attempt or a write that takes longer than this fails (a black-holed address would
/// otherwise hold the client for the OS's TCP timeout, minutes).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time between two messages, so each reaches Epic's Matchmaker in its own read (see the module
/// doc). With the Matchmaker's one-player-per-server use a change is one or two messages.
pub(crate) const WRITE_GAP: Duration = Duration::from_millis(10);

/// Where the Matchmaker is and what this server reports about itself.
#[derive(Debug, Clone)]
pub(crate) struct MatchmakerSettings {
    /// `MatchmakerAddress`: host name or IP address.
    pub(crate) address: String,
    /// `MatchmakerPort`.
    pub(crate) port: u16,
    /// `MatchmakerRetryInterval`: the wait before reconnecting; failed attempts double it, up
    /// to [`MAX_RETRY`] (or this, if longer).
    pub(crate) retry_interval: Duration,
    /// `PublicIp`: the address the Matchmaker sends players to.
    pub(crate) public_ip: String,
    /// The player port players reach this server on.
    pub(crate) player_port: u16,
    /// Whether that port serves HTTPS.
    pub(crate) https: bool,
    /// Time between `ping`s ([`KEEPALIVE`]; shorter in tests).
    pub(crate) keepalive: Duration,
}

/// Cirrus's `connect` message, with its keys in Cirrus's order.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename = "connect", rename_all = "camelCase")]
struct Connect<'a> {
    address: &'a str,
    https: bool,
    port: u16,
    ready: bool,
    player_connected: bool,
}

/// A message after `connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message {
    StreamerConnected,
    StreamerDisconnected,
    ClientConnected,
    ClientDisconnected,
    Ping,
}

impl Message {
    /// The exact text Cirrus wrote.
    pub(crate) fn json(self) -> &'static str {
        match self {
            Self::StreamerConnected => r#"{"type":"streamerConnected"}"#,
            Self::StreamerDisconnected => r#"{"type":"streamerDisconnected"}"#,
            Self::ClientConnected => r#"{"type":"clientConnected"}"#,
            Self::ClientDisconnected => r#"{"type":"clientDisconnected"}"#,
            Self::Ping => r#"{"type":"ping"}"#,
        }
    }
}

/// What the Matchmaker has been told, and the next message that brings it to the router's
/// counts. Sans-IO: the task hands it counts and writes what it returns.
///
/// The Matchmaker keeps `ready` (a flag: `streamerConnected` sets it, `streamerDisconnected`
/// clears it) and `numConnectedClients` (one up per `clientConnected`, one down per
/// `clientDisconnected`; `connect` sets it to 1 if `playerConnected`, else 0). It offers a server
/// only while `ready` and with no clients.
#[derive(Debug, Default)]
pub(crate) struct Reporter {
    /// Streamers the Matchmaker has heard connect (it keeps only whether any are).
    streamers: usize,
    /// Its `numConnectedClients`.
    clients: usize,
}

impl Reporter {
    /// The `connect` message for a new connection with `counts`; what the Matchmaker knows
    /// starts over from it.
    pub(crate) fn connect(&mut self, counts: Counts, settings: &MatchmakerSettings) -> String {
        self.streamers = counts.streamers;
        self.clients = counts.players.min(1);
        let connect = Connect {
            address: &settings.public_ip,
            https: settings.https,
            port: settings.player_port,
            ready: counts.streamers > 0,
            player_connected: counts.players > 0,
        };
        // A struct of strings, bools and integers always serializes.
        serde_json::to_string(&connect).unwrap_or_default()
    }

    /// The next message that brings the Matchmaker closer to `counts`, if any; the caller
    /// sends it and asks again.
    ///
    /// - One `streamerConnected` per streamer that connects (Cirrus sent one per streamer).
    /// - `streamerDisconnected` only when the last streamer leaves. *Differs from Cirrus*, which
    ///   sent one per streamer leaving: Epic's Matchmaker then marks the server not ready while
    ///   other streamers are still connected.
    /// - One `clientConnected` / `clientDisconnected` per player joining / leaving. After a
    ///   reconnect, `connect` says only whether a player is connected (the Matchmaker counts 1);
    ///   the remaining players follow as `clientConnected`, so its count stays exact and drops
    ///   to 0 when they have all left. *Differs from Cirrus*, whose Matchmaker count went
    ///   negative there and never offered the server again.
    pub(crate) fn next(&mut self, counts: Counts) -> Option<Message> {
        if counts.streamers > self.streamers {
            self.streamers += 1;
            return Some(Message::StreamerConnected);
        }
        if counts.streamers < self.streamers {
            let was_ready = self.streamers > 0;
            self.streamers = counts.streamers;
            if was_ready && counts.streamers == 0 {
                return Some(Message::StreamerDisconnected);
            }
        }
        if counts.players > self.clients {
            self.clients += 1;
            return Some(Message::ClientConnected);
        }
        if counts.players < self.clients {
            self.clients -= 1;
            return Some(Message::ClientDisconnected);
        }
        None
    }
}

/// Keeps a connection to the Matchmaker until `shutdown`, reconnecting with back-off.
pub(crate) async fn run(
    settings: MatchmakerSettings,
    mut counts: watch::Receiver<Counts>,
    shutdown: CancellationToken,
) {
    let target = format!("{}:{}", settings.address, settings.port);
    let retry = settings.retry_interval.max(Duration::from_millis(1));
    let mut delay = retry;
    loop {
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return,
            attempt = timeout(IO_TIMEOUT, TcpStream::connect(target.as_str())) => attempt,
        };
        match attempt {
            Ok(Ok(stream)) => {
                info!(matchmaker = %target, "connected to the Matchmaker");
                delay = retry;
                match session(stream, &settings, &mut counts, &shutdown).await {
                    Ok(End::Shutdown) => return,
                    Ok(End::Closed) => {
                        info!(matchmaker = %target, "the Matchmaker closed the connection")
                    }
                    Err(e) => warn!(matchmaker = %target, "Matchmaker connection failed: {e}"),
                }
            }
            Ok(Err(e)) => warn!(matchmaker = %target, "cannot connect to the Matchmaker: {e}"),
            Err(_) => {
                warn!(matchmaker = %target, "cannot connect to the Matchmaker: no answer within {IO_TIMEOUT:?}")
            }
        }
        info!(matchmaker = %target, "reconnecting to the Matchmaker in {delay:?}");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = delay.saturating_mul(2).min(MAX_RETRY.max(retry));
    }
}

enum End {
    Shutdown,
    Closed,
}

/// One connection: `connect`, then every change and a `ping` each keepalive period, until the
/// Matchmaker closes it, a write fails, or the server shuts down (or the router ends).
async fn session(
    stream: TcpStream,
    settings: &MatchmakerSettings,
    counts: &mut watch::Receiver<Counts>,
    shutdown: &CancellationToken,
) -> io::Result<End> {
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let mut reporter = Reporter::default();
    let current = *counts.borrow_and_update();
    write(&mut writer, &reporter.connect(current, settings)).await?;
    let mut ping = tokio::time::interval_at(
        Instant::now() + settings.keepalive,
        settings.keepalive.max(Duration::from_millis(1)),
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The Matchmaker sends nothing; reading only tells when it closes.
    let mut sink = [0u8; 256];
    loop {
        loop {
            let now = *counts.borrow_and_update();
            let Some(message) = reporter.next(now) else {
                break;
            };
            tokio::time::sleep(WRITE_GAP).await;
            write(&mut writer, message.json()).await?;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(End::Shutdown),
            changed = counts.changed() => if changed.is_err() {
                return Ok(End::Shutdown);
            },
            _ = ping.tick() => {
                tokio::time::sleep(WRITE_GAP).await;
                write(&mut writer, Message::Ping.json()).await?;
            }
            read = reader.read(&mut sink) => if read? == 0 {
                return Ok(End::Closed);
            },
        }
    }
}

async fn write(writer: &mut OwnedWriteHalf, text: &str) -> io::Result<()> {
    match timeout(IO_TIMEOUT, writer.write_all(text.as_bytes())).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the Matchmaker took nothing for 10 s",
        )),
    }
}

#[cfg(test)]
mod tests;
