//! Cluster mode over a real redis-server and three `signalling` processes (issue 14): a
//! streamer on node A, players on B and C; full negotiation both ways across nodes, ids unique
//! across nodes, and node loss (`kill -9`) and Redis loss with exactly one `playerDisconnected`
//! per player. Nodes heart-beat every 100 ms and are dead after 600 ms, so each loss is seen
//! within a second; every wait is on a message, bounded by the support's timeout.

use std::net::SocketAddr;

use crate::binary::start_logged;
use crate::support::redis::RedisServer;
use crate::support::{TestPeer, player_disconnected};

const HEARTBEAT: &str = "0.1";
const NODE_TIMEOUT: &str = "0.6";

/// One node: its process, log lines and addresses.
struct NodeProcess {
    child: tokio::process::Child,
    streamer: SocketAddr,
    player: SocketAddr,
    sfu: SocketAddr,
}

impl NodeProcess {
    async fn start(redis: &RedisServer, name: &str) -> Self {
        Self::start_with(redis, name, &[]).await
    }

    async fn start_with(redis: &RedisServer, name: &str, extra: &[&str]) -> Self {
        let url = redis.url();
        let mut args = vec![
            "--redis_url",
            &url,
            "--node_id",
            name,
            "--cluster_heartbeat_interval",
            HEARTBEAT,
            "--cluster_node_timeout",
            NODE_TIMEOUT,
        ];
        args.extend_from_slice(extra);
        let (child, lines, streamer, player, seen) = start_logged(&args).await;
        let sfu = seen
            .iter()
            .find_map(|l| crate::binary::listening_addr(l, "SFU"))
            .expect("SFU address logged");
        let mut lines = lines;
        let tag = name.to_owned();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                eprintln!("[{tag}] {l}");
            }
        });
        Self {
            child,
            streamer,
            player,
            sfu,
        }
    }

    fn kill(&mut self) {
        self.child.start_kill().expect("kill -9 the node");
    }

    async fn streamer(&self, id: &str) -> TestPeer {
        let mut st = TestPeer::connect(self.streamer, &format!("streamer {id}")).await;
        st.expect_type("config").await;
        st.expect_type("identify").await;
        st.send_json(&format!(r#"{{"type":"endpointId","id":"{id}"}}"#))
            .await;
        st.expect_type("endpointIdConfirm").await;
        st
    }

    async fn player(&self, name: &str) -> TestPeer {
        let mut p = TestPeer::connect(self.player, name).await;
        p.expect_type("config").await;
        p
    }
}

/// Asks for the list until it holds `ids` (in any order: the nodes' order depends on which
/// was heard from first). Another node's entries arrive with its first message after it comes
/// up, which after a Redis outage waits for the reconnect's back-off. A poll of the condition
/// every 20 ms, bounded at 20 s; never a fixed wait.
async fn wait_for_list(p: &mut TestPeer, ids: &[&str]) {
    let mut want: Vec<String> = ids.iter().map(|&id| id.to_owned()).collect();
    want.sort();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut every = tokio::time::interval(std::time::Duration::from_millis(20));
    let mut last = Vec::new();
    while tokio::time::Instant::now() < deadline {
        p.send_json(r#"{"type":"listStreamers"}"#).await;
        let list = p.expect_type("streamerList").await;
        last = serde_json::from_value::<Vec<String>>(list["ids"].clone()).expect("ids");
        last.sort();
        if last == want {
            return;
        }
        every.tick().await;
    }
    panic!("{}: the list never held {want:?} (last {last:?})", p.name);
}

/// The streamer's `playerConnected` for the next player, whose id it returns.
async fn connected_id(st: &mut TestPeer) -> String {
    let v = st.expect_type("playerConnected").await;
    v["playerId"]
        .as_str()
        .expect("a string playerId")
        .to_owned()
}

/// A full negotiation between the streamer and a subscribed player, both ways.
async fn negotiate(st: &mut TestPeer, p: &mut TestPeer, id: &str) {
    let offer = format!(r#"{{"type":"offer","sdp":"v=0 offer","playerId":"{id}"}}"#);
    st.send_json(&offer).await;
    p.expect_text(&offer).await;
    p.send_json(r#"{"type":"answer","sdp":"v=0 answer"}"#).await;
    st.expect_text(&format!(
        r#"{{"type":"answer","sdp":"v=0 answer","playerId":"{id}"}}"#
    ))
    .await;
    let ice =
        format!(r#"{{"type":"iceCandidate","candidate":{{"candidate":"c1"}},"playerId":"{id}"}}"#);
    st.send_json(&ice).await;
    p.expect_text(&ice).await;
    p.send_json(r#"{"type":"iceCandidate","candidate":{"candidate":"c2"}}"#)
        .await;
    st.expect_text(&format!(
        r#"{{"type":"iceCandidate","candidate":{{"candidate":"c2"}},"playerId":"{id}"}}"#
    ))
    .await;
}

async fn subscribe(p: &mut TestPeer, id: &str) {
    p.send_json(&format!(r#"{{"type":"subscribe","streamerId":"{id}"}}"#))
        .await;
}

/// A round trip with the server: every message sent to `peer` before it has arrived.
async fn sync(peer: &mut TestPeer) {
    peer.send_json(r#"{"type":"ping","time":7}"#).await;
    peer.expect_text(r#"{"type":"pong","time":7}"#).await;
}

#[tokio::test]
async fn players_on_two_nodes_negotiate_with_a_streamer_on_a_third() {
    let redis = RedisServer::start().await;
    let a = NodeProcess::start(&redis, "a").await;
    let b = NodeProcess::start(&redis, "b").await;
    let c = NodeProcess::start(&redis, "c").await;
    let mut st = a.streamer("S").await;
    let mut pb = b.player("player on b").await;
    let mut pc = c.player("player on c").await;
    wait_for_list(&mut pb, &["S"]).await;
    wait_for_list(&mut pc, &["S"]).await;
    subscribe(&mut pb, "S").await;
    let id_b = connected_id(&mut st).await;
    negotiate(&mut st, &mut pb, &id_b).await;
    subscribe(&mut pc, "S").await;
    let id_c = connected_id(&mut st).await;
    assert_ne!(id_b, id_c, "player ids are unique across nodes");
    negotiate(&mut st, &mut pc, &id_c).await;
    // Leaving: exactly one playerDisconnected each.
    pb.close().await;
    st.expect_text(&player_disconnected(&id_b)).await;
    pc.send_json(r#"{"type":"unsubscribe"}"#).await;
    st.expect_text(&player_disconnected(&id_c)).await;
    sync(&mut st).await;
}

#[tokio::test]
async fn an_sfu_on_one_node_serves_a_player_on_another_from_a_streamer_on_a_third() {
    let redis = RedisServer::start().await;
    let a = NodeProcess::start(&redis, "a").await;
    let b = NodeProcess::start(&redis, "b").await;
    let c = NodeProcess::start(&redis, "c").await;
    let mut st = a.streamer("S").await;
    let mut sfu = TestPeer::connect(b.sfu, "sfu on b").await;
    sfu.expect_type("config").await;
    sfu.expect_type("identify").await;
    sfu.send_json(r#"{"type":"endpointId","id":"SFU"}"#).await;
    sfu.expect_type("endpointIdConfirm").await;
    wait_for_list(&mut sfu, &["SFU", "S"]).await;
    subscribe(&mut sfu, "S").await;
    let sfu_id = connected_id(&mut st).await;
    // Streamer → SFU and back (F1, F4 keeping the browser's id, F5 with sfuId).
    let offer = format!(r#"{{"type":"offer","sdp":"s","playerId":"{sfu_id}"}}"#);
    st.send_json(&offer).await;
    sfu.expect_text(&offer).await;
    sfu.send_json(r#"{"type":"answer","sdp":"a","playerId":"Player77"}"#)
        .await;
    st.expect_text(r#"{"type":"answer","sdp":"a","playerId":"Player77"}"#)
        .await;
    sfu.send_json(r#"{"type":"streamerDataChannels","playerId":"Player77"}"#)
        .await;
    st.expect_text(&format!(
        r#"{{"type":"streamerDataChannels","playerId":"Player77","sfuId":"{sfu_id}"}}"#
    ))
    .await;
    // A player on C subscribes to the SFU on B.
    let mut pc = c.player("player on c").await;
    sfu.send_json(r#"{"type":"startStreaming"}"#).await;
    wait_for_list(&mut pc, &["S", "SFU"]).await;
    subscribe(&mut pc, "SFU").await;
    let pv = sfu.expect_type("playerConnected").await;
    assert_eq!(pv["sfu"], false);
    let pid = pv["playerId"].as_str().expect("id").to_owned();
    sfu.send_json(&format!(
        r#"{{"type":"offer","sdp":"f","playerId":"{pid}"}}"#
    ))
    .await;
    pc.expect_text(r#"{"type":"offer","sdp":"f"}"#).await; // F3: playerId removed
    // The streamer leaves: the SFU's player is closed first, then the SFU hears of it.
    st.close().await;
    sfu.expect_text(&player_disconnected(&pid)).await;
    sfu.expect_text(r#"{"type":"streamerDisconnected"}"#).await;
    assert_eq!(
        pc.expect_close().await,
        (1000, "streamer disconnected".to_owned())
    );
}

#[tokio::test]
async fn the_same_id_on_two_nodes_gets_the_id_rules_suffix() {
    let redis = RedisServer::start().await;
    let a = NodeProcess::start(&redis, "a").await;
    let b = NodeProcess::start(&redis, "b").await;
    let _first = a.streamer("DefaultStreamer").await;
    let mut pb = b.player("player on b").await;
    wait_for_list(&mut pb, &["DefaultStreamer"]).await;
    let mut second = TestPeer::connect(b.streamer, "second streamer").await;
    second.expect_type("config").await;
    second.expect_type("identify").await;
    second
        .send_json(r#"{"type":"endpointId","id":"DefaultStreamer"}"#)
        .await;
    second
        .expect_text(r#"{"type":"endpointIdConfirm","committedId":"DefaultStreamer1"}"#)
        .await;
    let mut pa = a.player("player on a").await;
    wait_for_list(&mut pa, &["DefaultStreamer", "DefaultStreamer1"]).await;
}

#[tokio::test]
async fn a_killed_node_ends_each_pair_it_held_exactly_once() {
    let redis = RedisServer::start().await;
    let mut a = NodeProcess::start(&redis, "a").await;
    let mut b = NodeProcess::start(&redis, "b").await;
    let c = NodeProcess::start(&redis, "c").await;
    let mut st = a.streamer("S").await;
    let mut on_b = Vec::new();
    for i in 0..3 {
        let mut p = b.player(&format!("player {i} on b")).await;
        wait_for_list(&mut p, &["S"]).await;
        subscribe(&mut p, "S").await;
        on_b.push((connected_id(&mut st).await, p));
    }
    let mut pc = c.player("player on c").await;
    wait_for_list(&mut pc, &["S"]).await;
    subscribe(&mut pc, "S").await;
    let id_c = connected_id(&mut st).await;
    // kill -9 B: the streamer gets one playerDisconnected per player of B, and nothing more.
    b.kill();
    let mut gone: Vec<String> = Vec::new();
    for _ in 0..3 {
        let v = st.expect_type("playerDisconnected").await;
        gone.push(v["playerId"].as_str().expect("id").to_owned());
    }
    gone.sort();
    let mut want: Vec<String> = on_b.iter().map(|(id, _)| id.clone()).collect();
    want.sort();
    assert_eq!(gone, want);
    sync(&mut st).await;
    // C's player is untouched: the negotiation still works.
    negotiate(&mut st, &mut pc, &id_c).await;
    // kill -9 A: C's player sees its streamer gone, and the list empty.
    a.kill();
    assert_eq!(
        pc.expect_close().await,
        (1000, "streamer disconnected".to_owned())
    );
    let mut p2 = c.player("second player on c").await;
    wait_for_list(&mut p2, &[]).await;
}

#[tokio::test]
async fn redis_restarted_mid_run_ends_cross_node_pairs_once_and_then_they_work_again() {
    let mut redis = RedisServer::start().await;
    let a = NodeProcess::start(&redis, "a").await;
    let b = NodeProcess::start(&redis, "b").await;
    let mut st = a.streamer("S").await;
    let mut local = a.player("player on a").await;
    subscribe(&mut local, "S").await;
    let id_local = connected_id(&mut st).await;
    let mut pb = b.player("player on b").await;
    wait_for_list(&mut pb, &["S"]).await;
    subscribe(&mut pb, "S").await;
    let id_b = connected_id(&mut st).await;
    // Redis gone for longer than the node timeout: the cross-node pair ends once on each
    // side; the local pair carries on.
    redis.kill();
    st.expect_text(&player_disconnected(&id_b)).await;
    assert_eq!(
        pb.expect_close().await,
        (1000, "streamer disconnected".to_owned())
    );
    negotiate(&mut st, &mut local, &id_local).await;
    redis.restart().await;
    // Once the nodes are back, a new negotiation across them works.
    let mut pb2 = b.player("second player on b").await;
    wait_for_list(&mut pb2, &["S"]).await;
    subscribe(&mut pb2, "S").await;
    let id_b2 = connected_id(&mut st).await;
    negotiate(&mut st, &mut pb2, &id_b2).await;
    // Nothing more came: no second playerDisconnected for the first player of B.
    sync(&mut st).await;
    // The empty Redis learnt the nodes' player id blocks again (a node starting now takes a
    // new one) and the streamer's id claim. Polled every 20 ms, bounded at 20 s.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut every = tokio::time::interval(std::time::Duration::from_millis(20));
    loop {
        let block: Option<u64> = redis
            .query(redis::cmd("GET").arg("signalling:player_block"))
            .await;
        let claim: Option<String> = redis
            .query(redis::cmd("GET").arg("signalling:streamer:S"))
            .await;
        if block == Some(2) && claim.as_deref().is_some_and(|c| c.starts_with("a/")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "block counter {block:?}, claim {claim:?}"
        );
        every.tick().await;
    }
}

async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("GET");
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("JSON")
}

#[tokio::test]
async fn the_rest_api_of_any_node_shows_the_whole_cluster_with_each_peers_node() {
    let redis = RedisServer::start().await;
    let api = ["--rest_api", "true"];
    let a = NodeProcess::start_with(&redis, "a", &api).await;
    let b = NodeProcess::start_with(&redis, "b", &api).await;
    let c = NodeProcess::start_with(&redis, "c", &api).await;
    let mut st = a.streamer("S").await;
    let mut pa = a.player("player on a").await;
    subscribe(&mut pa, "S").await;
    let id_a = connected_id(&mut st).await;
    let mut pb = b.player("player on b").await;
    wait_for_list(&mut pb, &["S"]).await;
    subscribe(&mut pb, "S").await;
    let id_b = connected_id(&mut st).await;
    let mut pc = c.player("player on c").await;
    wait_for_list(&mut pc, &["S"]).await;
    // Asked on C, which holds neither the streamer nor a subscribed player.
    let status = get_json(c.player, "/api/status").await;
    assert_eq!(status["streamer_count"], 1, "{status}");
    assert_eq!(status["player_count"], 3, "{status}");
    let mut nodes: Vec<(String, u64)> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or_default().to_owned(),
                n["player_count"].as_u64().unwrap_or(9),
            )
        })
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        [
            ("a".to_owned(), 1),
            ("b".to_owned(), 1),
            ("c".to_owned(), 1)
        ]
    );
    let streamers = get_json(c.player, "/api/streamers").await;
    assert_eq!(streamers.as_array().map(Vec::len), Some(1), "{streamers}");
    assert_eq!(streamers[0]["streamerId"], "S");
    assert_eq!(streamers[0]["node"], "a");
    let mut subscribers: Vec<&str> = streamers[0]["subscribers"]
        .as_array()
        .expect("subscribers")
        .iter()
        .filter_map(|s| s["playerId"].as_str())
        .collect();
    subscribers.sort_unstable();
    let mut want = vec![id_a.as_str(), id_b.as_str()];
    want.sort_unstable();
    assert_eq!(subscribers, want);
    let player = get_json(c.player, &format!("/api/players/{id_b}")).await;
    assert_eq!(player["node"], "b", "{player}");
    assert_eq!(player["playerId"], id_b.as_str());
    let players = get_json(a.player, "/api/players").await;
    let mut listed: Vec<(String, String)> = players
        .as_array()
        .expect("players")
        .iter()
        .map(|p| {
            (
                p["node"].as_str().unwrap_or_default().to_owned(),
                p["playerId"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(listed.len(), 3, "{players}");
    assert_eq!(listed[0], ("a".to_owned(), id_a.clone()));
    assert_eq!(listed[1], ("b".to_owned(), id_b.clone()));
    assert_eq!(listed[2].0, "c");
    let missing = reqwest::get(format!("http://{}/api/streamers/nope", b.player))
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    // /metrics of any node: every node's peers.
    let metrics = reqwest::get(format!("http://{}/metrics", b.player))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "signalling_cluster_nodes 3",
        r#"signalling_cluster_peers{node="a",kind="streamers"} 1"#,
        r#"signalling_cluster_peers{node="a",kind="players"} 1"#,
        r#"signalling_cluster_peers{node="b",kind="players"} 1"#,
        r#"signalling_cluster_peers{node="c",kind="players"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn two_streamers_asking_for_one_id_at_once_on_two_nodes_get_distinct_ids() {
    let redis = RedisServer::start().await;
    let a = NodeProcess::start(&redis, "a").await;
    let b = NodeProcess::start(&redis, "b").await;
    for round in 0..5 {
        let id = format!("Race{round}");
        let mut on_a = TestPeer::connect(a.streamer, "streamer on a").await;
        let mut on_b = TestPeer::connect(b.streamer, "streamer on b").await;
        for st in [&mut on_a, &mut on_b] {
            st.expect_type("config").await;
            st.expect_type("identify").await;
        }
        // Both ask before either node can have heard of the other's: Redis decides.
        let ask = format!(r#"{{"type":"endpointId","id":"{id}"}}"#);
        tokio::join!(on_a.send_json(&ask), on_b.send_json(&ask));
        let (got_a, got_b) = tokio::join!(
            on_a.expect_type("endpointIdConfirm"),
            on_b.expect_type("endpointIdConfirm")
        );
        let mut got = [
            got_a["committedId"].as_str().expect("id").to_owned(),
            got_b["committedId"].as_str().expect("id").to_owned(),
        ];
        got.sort();
        assert_eq!(got, [id.clone(), format!("{id}1")], "round {round}");
        let holder: String = redis
            .query(redis::cmd("GET").arg(format!("signalling:streamer:{id}")))
            .await;
        assert!(
            holder.starts_with("a/") || holder.starts_with("b/"),
            "{holder}"
        );
    }
}

/// Sends a signal to the node's process (`kill -STOP`, `kill -CONT`).
fn signal(node: &NodeProcess, name: &str) {
    let pid = node.child.id().expect("node pid").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test]
async fn a_frozen_node_declared_dead_comes_back_as_a_new_node_with_nothing_stale() {
    let redis = RedisServer::start().await;
    let a = NodeProcess::start(&redis, "a").await;
    let b = NodeProcess::start(&redis, "b").await;
    let mut st = a.streamer("S").await;
    let mut pb = b.player("player on b").await;
    wait_for_list(&mut pb, &["S"]).await;
    subscribe(&mut pb, "S").await;
    let id = connected_id(&mut st).await;
    negotiate(&mut st, &mut pb, &id).await;
    // B stops answering (frozen, not dead): A declares it dead after the node timeout.
    signal(&b, "STOP");
    st.expect_text(&player_disconnected(&id)).await;
    // Thawed, B learns it was declared dead: its player's streamer is gone for it too.
    signal(&b, "CONT");
    assert_eq!(
        pb.expect_close().await,
        (1000, "streamer disconnected".to_owned())
    );
    // B comes back as a new node: a new player negotiates, and the streamer hears nothing of
    // the old one (the next thing it gets is the new playerConnected).
    let mut again = b.player("second player on b").await;
    wait_for_list(&mut again, &["S"]).await;
    subscribe(&mut again, "S").await;
    let new_id = connected_id(&mut st).await;
    assert_ne!(new_id, id);
    negotiate(&mut st, &mut again, &new_id).await;
    sync(&mut st).await;
}

/// The next message of `st` that is not a `playerDisconnected` for `watched`; those are counted.
async fn next_counting(st: &mut TestPeer, watched: &str, count: &mut usize) -> serde_json::Value {
    loop {
        let v = st.recv_json().await;
        if !is_disconnect_of(&v, watched) {
            return v;
        }
        *count += 1;
    }
}

fn is_disconnect_of(v: &serde_json::Value, watched: &str) -> bool {
    v["type"] == "playerDisconnected" && v["playerId"] == watched
}

#[tokio::test]
async fn redis_restarted_at_once_loses_and_duplicates_no_player_disconnected() {
    let mut redis = RedisServer::start().await;
    let a = NodeProcess::start(&redis, "a").await;
    let b = NodeProcess::start(&redis, "b").await;
    let mut st = a.streamer("S").await;
    let mut pb = b.player("player on b").await;
    wait_for_list(&mut pb, &["S"]).await;
    subscribe(&mut pb, "S").await;
    let id = connected_id(&mut st).await;
    negotiate(&mut st, &mut pb, &id).await;
    // Redis restarts empty at once: whether the pair survives depends on whether anything was
    // in flight; either way the streamer hears of the player's end exactly once.
    redis.restart().await;
    let mut disconnects = 0;
    let mut p2 = b.player("second player on b").await;
    wait_for_list(&mut p2, &["S"]).await;
    subscribe(&mut p2, "S").await;
    let v = next_counting(&mut st, &id, &mut disconnects).await;
    assert_eq!(v["type"], "playerConnected", "{v}");
    let id2 = v["playerId"].as_str().expect("id").to_owned();
    // The first player leaves if it is still there.
    pb.send_json(r#"{"type":"ping","time":1}"#).await;
    match pb.next_data(crate::support::TIMEOUT).await {
        Some(Ok(_pong)) => pb.close().await,
        Some(Err(close)) => assert_eq!(close, (1000, "streamer disconnected".to_owned())),
        None => panic!("the first player neither answered nor was closed"),
    }
    if disconnects == 0 {
        let v = st.recv_json().await;
        assert!(is_disconnect_of(&v, &id), "{v}");
        disconnects += 1;
    }
    // A later message from B comes after anything B sent before it: no second one is on its way.
    let mut p3 = b.player("third player on b").await;
    subscribe(&mut p3, "S").await;
    let v = next_counting(&mut st, &id, &mut disconnects).await;
    assert_eq!(v["type"], "playerConnected", "{v}");
    assert_ne!(v["playerId"], id2.as_str());
    assert_eq!(disconnects, 1);
}
