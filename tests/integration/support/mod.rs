//! Test harness: a real server on 127.0.0.1 ephemeral ports ([`TestServer`]) and WebSocket
//! clients that assert what arrives, with timeouts that say what came instead ([`TestPeer`]).
//! It never sleeps to synchronise: [`TestPeer::sync`] is a ping→pong round trip.

pub(crate) mod fault_proxy;
pub(crate) mod http;
pub(crate) mod redis;
pub(crate) mod turn;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use signalling::config::Config;
use signalling::server::Server;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long any single expectation waits before failing.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// The exact `config` message for the default (empty) peer options.
pub(crate) const CONFIG: &str =
    r#"{"type":"config","peerConnectionOptions":{},"protocolVersion":"1.3.0"}"#;
pub(crate) const IDENTIFY: &str = r#"{"type":"identify"}"#;

/// A config for tests: loopback, ephemeral ports, no playerCount (tests that want it turn it on),
/// no per-player message rate (tests flood on purpose) and no first-message deadline (a test's
/// player may wait longer than it on a loaded machine); `limits.rs` turns both on.
pub(crate) fn config() -> Config {
    Config {
        bind_address: Ipv4Addr::LOCALHOST.into(),
        streamer_port: 0,
        player_port: 0,
        sfu_port: 0,
        player_count: false,
        messages_per_second: 0,
        first_message_timeout: std::time::Duration::ZERO,
        ..Config::default()
    }
}

/// A running server; dropping it cancels the server.
pub(crate) struct TestServer {
    pub(crate) streamer: SocketAddr,
    pub(crate) player: SocketAddr,
    pub(crate) sfu: SocketAddr,
    player_count: bool,
    token: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub(crate) async fn start(config: Config) -> Self {
        Self::start_with(config, |_| {}).await
    }

    /// Starts a server after `prepare` has set what no key sets (the limits' window).
    pub(crate) async fn start_with(config: Config, prepare: impl FnOnce(&mut Server)) -> Self {
        let player_count = config.player_count;
        let mut server = Server::bind(config).await.expect("bind the test server");
        prepare(&mut server);
        let (streamer, player, sfu) = (
            server.streamer_addr(),
            server.player_addr(),
            server.sfu_addr(),
        );
        let token = server.shutdown_token();
        let task = tokio::spawn(async move {
            server
                .run_until(std::future::pending())
                .await
                .expect("server run");
        });
        Self {
            streamer,
            player,
            sfu,
            player_count,
            token,
            task: Some(task),
        }
    }

    pub(crate) async fn with_defaults() -> Self {
        Self::start(config()).await
    }

    /// Cancels the shutdown token and waits for `run_until` to return.
    pub(crate) async fn shutdown(mut self) {
        self.token.cancel();
        let task = self.task.take().expect("server task");
        timeout(Duration::from_secs(5), task)
            .await
            .expect("the server stops within 5 s of cancellation")
            .expect("the server task does not panic");
    }

    /// A streamer that identified as `id`; returns the peer and the committed id.
    pub(crate) async fn streamer_as(&self, id: &str) -> (TestPeer, String) {
        let mut st = self.streamer_unidentified().await;
        let committed = st.endpoint_id(id).await;
        (st, committed)
    }

    /// A streamer that must get exactly `id`.
    pub(crate) async fn streamer(&self, id: &str) -> TestPeer {
        let (st, committed) = self.streamer_as(id).await;
        assert_eq!(committed, id, "streamer asked for {id}");
        st
    }

    /// A streamer-port connection that has read `config` and `identify` and sent nothing.
    pub(crate) async fn streamer_unidentified(&self) -> TestPeer {
        let mut st = TestPeer::connect(self.streamer, "streamer").await;
        st.expect_text(CONFIG).await;
        st.expect_text(IDENTIFY).await;
        st
    }

    /// A player that has read `config` (and `playerCount` if on).
    pub(crate) async fn player(&self) -> TestPeer {
        let mut p = TestPeer::connect(self.player, "player").await;
        p.expect_text(CONFIG).await;
        if self.player_count {
            p.expect_type("playerCount").await;
        }
        p
    }

    /// A player subscribed to `streamer_id`; `streamer` receives (and this checks) the exact
    /// playerConnected for `player_id`.
    pub(crate) async fn subscribed_player(
        &self,
        streamer: &mut TestPeer,
        streamer_id: &str,
        player_id: &str,
    ) -> TestPeer {
        let mut p = self.player().await;
        p.subscribe(streamer_id).await;
        streamer
            .expect_text(&player_connected(player_id, false))
            .await;
        p
    }

    /// An SFU-port connection that has read `config` and `identify`.
    pub(crate) async fn sfu(&self) -> TestPeer {
        let mut f = TestPeer::connect(self.sfu, "sfu").await;
        f.expect_text(CONFIG).await;
        f.expect_text(IDENTIFY).await;
        f
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

pub(crate) fn player_connected(player_id: &str, sfu: bool) -> String {
    format!(
        r#"{{"type":"playerConnected","dataChannel":true,"sfu":{sfu},"playerId":"{player_id}"}}"#
    )
}

pub(crate) fn player_disconnected(player_id: &str) -> String {
    format!(r#"{{"type":"playerDisconnected","playerId":"{player_id}"}}"#)
}

pub(crate) fn streamer_list(ids: &[&str]) -> String {
    format!(
        r#"{{"type":"streamerList","ids":{}}}"#,
        serde_json::to_string(ids).unwrap()
    )
}

pub(crate) const STREAMER_DISCONNECTED: (u16, &str) = (1000, "streamer disconnected");

/// Code reported by [`TestPeer::expect_close`] when the TCP connection ended without a close frame.
pub(crate) const NO_CLOSE_FRAME: u16 = 1006;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client. Reading answers the server's Pings (tungstenite does it) and skips them.
pub(crate) struct TestPeer {
    pub(crate) ws: Ws,
    pub(crate) name: String,
}

static SYNC_TIME: AtomicU64 = AtomicU64::new(1_000_000);

impl TestPeer {
    pub(crate) async fn connect(addr: SocketAddr, name: &str) -> Self {
        Self::connect_url(&format!("ws://{addr}/"), name).await
    }

    pub(crate) async fn connect_url(url: &str, name: &str) -> Self {
        let (ws, _) = timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("{name}: connect to {url} timed out"))
            .unwrap_or_else(|e| panic!("{name}: connect to {url}: {e}"));
        Self {
            ws,
            name: name.to_owned(),
        }
    }

    /// Connects offering `Sec-WebSocket-Protocol: protocols`; returns the header S selected.
    pub(crate) async fn connect_with_protocols(
        addr: SocketAddr,
        protocols: &str,
    ) -> (Self, Option<String>) {
        let mut request = format!("ws://{addr}/").into_client_request().unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocols).unwrap(),
        );
        let (ws, response) = timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect timed out")
            .expect("connect");
        let selected = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        (
            Self {
                ws,
                name: "peer".into(),
            },
            selected,
        )
    }

    pub(crate) async fn send_json(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    pub(crate) async fn send(&mut self, message: Message) {
        timeout(TIMEOUT, self.ws.send(message))
            .await
            .unwrap_or_else(|_| panic!("{}: send timed out", self.name))
            .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.name));
    }

    /// Sends a raw frame (e.g. a text frame with invalid UTF-8, or a fragment).
    pub(crate) async fn send_frame(&mut self, payload: Vec<u8>, opcode: OpCode, is_final: bool) {
        self.send(Message::Frame(Frame::message(payload, opcode, is_final)))
            .await;
    }

    pub(crate) async fn send_invalid_utf8_text(&mut self) {
        self.send_frame(
            b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}".to_vec(),
            OpCode::Data(Data::Text),
            true,
        )
        .await;
    }

    /// The next data message as text; fails on timeout, a close or EOF.
    pub(crate) async fn recv_text(&mut self) -> String {
        match self.next_data(TIMEOUT).await {
            Some(Ok(text)) => text,
            Some(Err(close)) => panic!("{}: expected a message, got close {close:?}", self.name),
            None => panic!("{}: no message within {TIMEOUT:?}", self.name),
        }
    }

    pub(crate) async fn recv_json(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", self.name))
    }

    /// The next message, which must have this `type`.
    pub(crate) async fn expect_type(&mut self, type_name: &str) -> Value {
        let value = self.recv_json().await;
        assert_eq!(
            value["type"], type_name,
            "{}: expected a {type_name} message, got {value}",
            self.name
        );
        value
    }

    /// The next message, which must be exactly this text (S's JSON is compact and ordered).
    pub(crate) async fn expect_text(&mut self, expected: &str) {
        let text = self.recv_text().await;
        assert_eq!(text, expected, "{}: unexpected message", self.name);
    }

    /// Waits for the close: (code, reason) of the close frame; (1005, "") for a close frame
    /// without a code; ([`NO_CLOSE_FRAME`], "") for EOF or a reset. Fails on any data message.
    pub(crate) async fn expect_close(&mut self) -> (u16, String) {
        match self.next_data(TIMEOUT).await {
            Some(Err(close)) => close,
            Some(Ok(text)) => panic!("{}: expected a close, got message {text}", self.name),
            None => panic!("{}: no close within {TIMEOUT:?}", self.name),
        }
    }

    /// As [`Self::expect_close`], but skips data messages (for a flooded peer); returns the
    /// close and how many messages it skipped.
    pub(crate) async fn expect_close_skipping_messages(&mut self) -> ((u16, String), usize) {
        let mut skipped = 0;
        loop {
            match self.next_data(TIMEOUT).await {
                Some(Err(close)) => return (close, skipped),
                Some(Ok(_)) => skipped += 1,
                None => panic!(
                    "{}: no close within {TIMEOUT:?} ({skipped} messages)",
                    self.name
                ),
            }
        }
    }

    /// Negative check, only after a sync point: no data message and no close for `duration`.
    /// Keeps reading, so Pings are answered meanwhile.
    pub(crate) async fn expect_silence(&mut self, duration: Duration) {
        match self.next_data(duration).await {
            None => {}
            Some(Ok(text)) => panic!("{}: expected silence, got message {text}", self.name),
            Some(Err(close)) => panic!("{}: expected silence, got close {close:?}", self.name),
        }
    }

    /// A barrier: ping with a fresh time and require the very next message to be its pong.
    /// After it, everything this peer sent before has been routed, and nothing else was queued
    /// for it ahead of the pong.
    pub(crate) async fn sync(&mut self) {
        let time = SYNC_TIME.fetch_add(1, Ordering::Relaxed);
        self.send_json(&format!(r#"{{"type":"ping","time":{time}}}"#))
            .await;
        self.expect_text(&format!(r#"{{"type":"pong","time":{time}}}"#))
            .await;
    }

    /// Sends endpointId and returns the committed id.
    pub(crate) async fn endpoint_id(&mut self, id: &str) -> String {
        self.send_json(&format!(r#"{{"type":"endpointId","id":"{id}"}}"#))
            .await;
        let text = self.recv_text().await;
        let confirm: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", self.name));
        let committed = confirm["committedId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            text,
            format!(r#"{{"type":"endpointIdConfirm","committedId":"{committed}"}}"#),
            "{}: expected endpointIdConfirm",
            self.name
        );
        committed
    }

    pub(crate) async fn subscribe(&mut self, streamer_id: &str) {
        self.send_json(&format!(
            r#"{{"type":"subscribe","streamerId":"{streamer_id}"}}"#
        ))
        .await;
    }

    pub(crate) async fn list_streamers(&mut self) -> String {
        self.send_json(r#"{"type":"listStreamers"}"#).await;
        self.recv_text().await
    }

    /// Sends a close frame (1000) and reads until the server's reply or EOF.
    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = timeout(TIMEOUT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Ends the TCP connection without a close frame (FIN).
    pub(crate) fn drop_tcp(self) {
        drop(self.ws);
    }

    /// Ends the TCP connection with a reset (RST), no close frame.
    pub(crate) fn reset_tcp(self) {
        if let MaybeTlsStream::Plain(tcp) = self.ws.get_ref() {
            tcp.set_zero_linger().expect("SO_LINGER 0");
        }
        drop(self.ws);
    }

    /// The next text or binary message (binary decoded lossily), `Err(close)` on a close or
    /// EOF, `None` on timeout. Pings and Pongs are skipped.
    pub(crate) async fn next_data(
        &mut self,
        wait: Duration,
    ) -> Option<Result<String, (u16, String)>> {
        let deadline = Instant::now() + wait;
        loop {
            let Ok(frame) = timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.ws.next(),
            )
            .await
            else {
                return None;
            };
            return Some(match frame {
                Some(Ok(Message::Text(text))) => Ok(text.as_str().to_owned()),
                Some(Ok(Message::Binary(bytes))) => {
                    Ok(String::from_utf8_lossy(&bytes).into_owned())
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(Some(frame)))) => {
                    Err((u16::from(frame.code), frame.reason.as_str().to_owned()))
                }
                Some(Ok(Message::Close(None))) => Err((1005, String::new())),
                Some(Err(_)) | None => Err((NO_CLOSE_FRAME, String::new())),
            });
        }
    }
}
