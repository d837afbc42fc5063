//! A deliberately broken server for tests of the benchmark: a WebSocket proxy in front of the
//! real server that silently drops chosen server→client messages.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Decides, per server→client text message, whether the proxy drops it.
pub(crate) type DropRule = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Listens on an ephemeral loopback port; each connection is relayed to `upstream`. Dropping
/// the proxy stops accepting.
pub(crate) struct FaultProxy {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FaultProxy {
    pub(crate) async fn start(upstream: SocketAddr, drop_rule: DropRule) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(relay(tcp, upstream, Arc::clone(&drop_rule)));
            }
        });
        Self { addr, task }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays one connection both ways until either side ends.
async fn relay(tcp: tokio::net::TcpStream, upstream: SocketAddr, drop_rule: DropRule) {
    let Ok(client) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let Ok((server, _)) = tokio_tungstenite::connect_async(format!("ws://{upstream}")).await else {
        return;
    };
    let (mut client_tx, mut client_rx) = client.split();
    let (mut server_tx, mut server_rx) = server.split();
    let up = async {
        while let Some(Ok(msg)) = client_rx.next().await {
            let close = msg.is_close();
            if server_tx.send(msg).await.is_err() || close {
                break;
            }
        }
    };
    let down = async {
        while let Some(Ok(msg)) = server_rx.next().await {
            if let Message::Text(text) = &msg
                && drop_rule(text.as_str())
            {
                continue;
            }
            let close = msg.is_close();
            if client_tx.send(msg).await.is_err() || close {
                break;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
