//! Accept loops. The streamer and SFU ports speak only WebSocket (tokio-tungstenite handshake);
//! the player port is served by [`crate::http`]. A failed accept is logged and retried: the loop
//! outlives errors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::connection::{self, Shared};
use crate::reframe::Reframe;
use crate::router::{ConnId, Opening, Role};

/// An upgrade not completed within this time is dropped (PROTOCOL.md §1.2).
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// What accept loops share: the connection context, the task tracker, the id counter.
#[derive(Debug, Clone)]
pub struct Acceptor {
    pub shared: Shared,
    pub tracker: TaskTracker,
    pub next_conn: Arc<AtomicU64>,
}

impl Acceptor {
    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }
}

/// The first subprotocol the client offered, which the server selects (PROTOCOL.md §1.2).
pub fn first_subprotocol(value: Option<&HeaderValue>) -> Option<HeaderValue> {
    let first = value?.to_str().ok()?.split(',').next()?.trim();
    if first.is_empty() {
        return None;
    }
    HeaderValue::from_str(first).ok()
}

/// Accepts WebSocket connections for `role` until shutdown.
pub async fn serve_websocket(listener: TcpListener, role: Role, acceptor: Acceptor) {
    loop {
        let accepted = tokio::select! {
            () = acceptor.shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                let acceptor2 = acceptor.clone();
                acceptor
                    .tracker
                    .spawn(handshake(stream, remote, role, acceptor2));
            }
            Err(e) => {
                warn!(role = %role, "accept failed: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handshake(stream: TcpStream, remote: SocketAddr, role: Role, acceptor: Acceptor) {
    let _ = stream.set_nodelay(true);
    let config = acceptor.shared.settings.websocket_config();
    #[allow(clippy::result_large_err)] // The error type is tungstenite's callback signature.
    let select_protocol = |request: &Request, mut response: Response| {
        if let Some(protocol) = first_subprotocol(request.headers().get("sec-websocket-protocol")) {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", protocol);
        }
        Ok(response)
    };
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(
        Reframe::http(stream),
        select_protocol,
        Some(config),
    );
    let ws = tokio::select! {
        () = acceptor.shared.shutdown.cancelled() => return,
        r = tokio::time::timeout(UPGRADE_TIMEOUT, upgrade) => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                debug!(%remote, role = %role, "WebSocket handshake failed: {e}");
                return;
            }
            Err(_) => {
                debug!(%remote, role = %role, "WebSocket upgrade not completed within 10 s; dropped");
                return;
            }
        },
    };
    let conn = acceptor.next_conn_id();
    connection::run(ws, conn, role, Opening::default(), remote, acceptor.shared).await;
}
