//! Sessions across nodes (issue 14; README "Cluster mode"): a real redis-server and two
//! `signalling` processes. Two peers of one session registered on different nodes pair and
//! exchange messages both ways; an SSE reconnect with Last-Event-ID on the *other* node replays
//! exactly the missed events; `kill -9` of the session's home node ends the other peer's stream,
//! and a new registration there starts a new session. Every wait is on an event, a log line or
//! an answer, bounded by the support's timeout.

use std::net::SocketAddr;

use serde_json::json;
use tokio::sync::mpsc;

use crate::binary::start_logged;
use crate::support::TIMEOUT;
use crate::support::http::{Api, event, event_with};
use crate::support::redis::RedisServer;

/// One node: its process, its session API and its log lines.
struct Node {
    child: tokio::process::Child,
    api: Api,
    lines: mpsc::UnboundedReceiver<String>,
    name: String,
}

impl Node {
    async fn start(redis: &RedisServer, name: &str) -> Self {
        let url = redis.url();
        let (child, mut lines, _streamer, player, _seen) = start_logged(&[
            "--redis_url",
            &url,
            "--node_id",
            name,
            "--cluster_heartbeat_interval",
            "0.1",
            "--cluster_node_timeout",
            "0.6",
        ])
        .await;
        let (tx, rx) = mpsc::unbounded_channel();
        let tag = name.to_owned();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                eprintln!("[{tag}] {l}");
                let _ = tx.send(l);
            }
        });
        Self {
            child,
            api: api(player),
            lines: rx,
            name: name.to_owned(),
        }
    }

    /// Waits for a log line containing `text`.
    async fn logged(&mut self, text: &str) {
        let found = tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(text) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "{}: no log line with {text:?}", self.name);
    }
}

fn api(player: SocketAddr) -> Api {
    Api {
        base: format!("http://{player}"),
        client: reqwest::Client::new(),
    }
}

#[tokio::test]
async fn sessions_across_nodes() {
    let redis = RedisServer::start().await;
    let mut a = Node::start(&redis, "a").await;
    let mut b = Node::start(&redis, "b").await;
    // Each node knows the other before a request names it.
    a.logged("cluster: node up").await;
    b.logged("cluster: node up").await;

    // The web page registers on A (A becomes the session's home); the phone registers on B.
    a.api.register("room", "web").await;
    let mut web = a.api.events("room", "web").await;
    b.api.register("room", "phone").await;
    web.expect(event("phone", "new-peer")).await;

    // Web → phone through A, read on B; phone → web through B, read on A.
    let offer = json!({"type": "offer", "sdp": "v=0\r\n"});
    a.api
        .send("room", "web", "phone", "offer", offer.clone())
        .await;
    let mut phone = b.api.events("room", "phone").await;
    let offer_id = phone.expect(event_with("web", "offer", offer)).await;
    b.api
        .send("room", "phone", "web", "answer", json!({"sdp": "a"}))
        .await;
    web.expect(event_with("phone", "answer", json!({"sdp": "a"})))
        .await;
    // Either node takes either peer's requests.
    b.api
        .send("room", "web", "phone", "ice-candidate", json!({"c": 1}))
        .await;
    let first_id = phone
        .expect(event_with("web", "ice-candidate", json!({"c": 1})))
        .await;

    // The phone's stream on B goes; two more events come while it is away.
    drop(phone);
    a.api
        .send("room", "web", "phone", "ice-candidate", json!({"c": 2}))
        .await;
    a.api
        .send("room", "web", "phone", "ice-candidate", json!({"c": 3}))
        .await;
    // It comes back on A, the other node, after the offer: the rest is replayed exactly (the
    // same events with the same ids), then new events follow.
    let mut phone = a.api.events_after("room", "phone", Some(&offer_id)).await;
    assert_eq!(
        phone
            .expect(event_with("web", "ice-candidate", json!({"c": 1})))
            .await,
        first_id
    );
    phone
        .expect(event_with("web", "ice-candidate", json!({"c": 2})))
        .await;
    let last = phone
        .expect(event_with("web", "ice-candidate", json!({"c": 3})))
        .await;

    // Back on B with the last id seen: the stream on A is replaced and ends; nothing is
    // replayed, and new events arrive.
    let mut phone_b = b.api.events_after("room", "phone", Some(&last)).await;
    phone.expect_end().await;
    a.api
        .send("room", "web", "phone", "bye", serde_json::Value::Null)
        .await;
    phone_b.expect(event("web", "bye")).await;

    // The home dies: the phone's stream on B ends; its next registration starts a new session
    // there (the web page is not in it).
    a.child.start_kill().expect("kill -9 node a");
    phone_b.expect_end().await;
    b.api.register("room", "phone").await;
    let (status, _) = b
        .api
        .try_send("room", "phone", "web", "offer", json!({}))
        .await;
    assert_eq!(status, 404, "the web page left with its node");
    let mut phone = b.api.events("room", "phone").await;
    b.api.register("room", "tablet").await;
    phone.expect(event("tablet", "new-peer")).await;
}

#[tokio::test]
async fn sessions_pair_across_nodes_again_after_redis_restarts() {
    let mut redis = RedisServer::start().await;
    let mut a = Node::start(&redis, "a").await;
    let mut b = Node::start(&redis, "b").await;
    a.logged("cluster: node up").await;
    b.logged("cluster: node up").await;
    a.api.register("before", "web").await;
    b.api.register("before", "phone").await;

    // Redis restarts empty: each node's connections break, and each reconnects.
    redis.restart().await;
    for node in [&mut a, &mut b] {
        node.logged("cluster: Redis lost").await;
        node.logged("cluster: connected to Redis").await;
    }
    // A new session pairs across the nodes: the home claims work on fresh connections.
    a.api.register("after", "web").await;
    let mut web = a.api.events("after", "web").await;
    b.api.register("after", "phone").await;
    web.expect(event("phone", "new-peer")).await;
    b.api
        .send("after", "phone", "web", "offer", json!({"sdp": "o"}))
        .await;
    web.expect(event_with("phone", "offer", json!({"sdp": "o"})))
        .await;
}
