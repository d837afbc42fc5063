//! Wilbur's REST API over real sockets (README, "REST API"): a streamer, an SFU and players
//! connected through the server, then `GET /api/...` over HTTP reflects them, and a disconnect
//! afterwards. Off by default, where `/api` is a 404 and WebSocket upgrades on it still work.

use serde_json::{Value, json};

use crate::support::http::Api;
use crate::support::{CONFIG, TestPeer, TestServer, config, player_connected, player_disconnected};

async fn server_with_rest_api() -> TestServer {
    TestServer::start(signalling::config::Config {
        rest_api: true,
        ..config()
    })
    .await
}

#[tokio::test]
async fn streamers_and_players_connected_through_the_server_are_listed() {
    let server = server_with_rest_api().await;
    let api = Api::new(&server);
    let mut streamer = server.streamer("DefaultStreamer").await;
    let mut sfu = server.sfu().await;
    sfu.endpoint_id("SFU").await;
    sfu.subscribe("DefaultStreamer").await;
    streamer
        .expect_text(&player_connected("Player0", true))
        .await;
    let _p1 = server
        .subscribed_player(&mut streamer, "DefaultStreamer", "Player1")
        .await;
    let mut p2 = server.player().await;
    p2.subscribe("SFU").await;
    sfu.expect_text(&player_connected("Player2", false)).await;
    let _idle = server.player().await;

    let player = |id: &str, kind: &str, to: Option<&str>| {
        let mut p = json!({"playerId": id, "type": kind, "remoteAddress": "127.0.0.1"});
        if let Some(to) = to {
            p["subscribedTo"] = json!(to);
        }
        p
    };
    let expected_default = json!({
        "streamerId": "DefaultStreamer",
        "type": "Streamer",
        "streaming": true,
        "remoteAddress": "127.0.0.1",
        "subscribers": [
            player("Player0", "SFU", Some("DefaultStreamer")),
            player("Player1", "Player", Some("DefaultStreamer")),
        ],
    });
    let expected_sfu = json!({
        "streamerId": "SFU",
        "type": "SFU",
        "streaming": true,
        "remoteAddress": "127.0.0.1",
        "subscribers": [player("Player2", "Player", Some("SFU"))],
    });
    assert_eq!(
        api.get("/api/streamers").await,
        (200, json!([expected_default.clone(), expected_sfu]))
    );
    // The readiness check Epic's deployments poll.
    assert_eq!(
        api.get("/api/streamers/DefaultStreamer").await,
        (200, expected_default)
    );
    assert_eq!(
        api.get("/api/players").await,
        (
            200,
            json!([
                player("Player0", "SFU", Some("DefaultStreamer")),
                player("Player1", "Player", Some("DefaultStreamer")),
                player("Player2", "Player", Some("SFU")),
                player("Player3", "Player", None),
            ])
        )
    );
    let (status, body) = api.get("/api/status").await;
    assert_eq!(status, 200);
    assert_eq!(
        (&body["streamer_count"], &body["player_count"]),
        (&json!(2), &json!(4))
    );

    // Player2 leaves: once its SFU has been told, every answer reflects it.
    p2.close().await;
    sfu.expect_text(&player_disconnected("Player2")).await;
    assert_eq!(
        api.get("/api/players/Player2").await,
        (404, json!({"message": "No player ID matches Player2."}))
    );
    assert_eq!(
        api.get("/api/streamers/SFU").await.1["subscribers"],
        json!([])
    );
    assert_eq!(api.get("/api/status").await.1["player_count"], 3);

    // The streamer leaves: it is gone, and its player with it.
    streamer.close().await;
    sfu.expect_type("streamerDisconnected").await;
    assert_eq!(
        api.get("/api/streamers/DefaultStreamer").await,
        (
            404,
            json!({"message": "No streamer id matches DefaultStreamer."})
        )
    );
    let ids: Vec<Value> = match api.get("/api/players").await {
        (200, Value::Array(players)) => {
            players.into_iter().map(|p| p["playerId"].clone()).collect()
        }
        other => panic!("players: {other:?}"),
    };
    assert_eq!(ids, [json!("Player0"), json!("Player3")]);
}

#[tokio::test]
async fn config_reports_the_ports_as_bound() {
    let server = server_with_rest_api().await;
    let (status, body) = Api::new(&server).get("/api/config").await;
    assert_eq!(status, 200);
    assert_eq!(body["config"]["playerPort"], server.player.port());
    assert_eq!(body["config"]["streamerPort"], server.streamer.port());
    assert_eq!(body["config"]["sfuPort"], server.sfu.port());
}

#[tokio::test]
async fn off_by_default_the_api_is_404_and_upgrades_on_its_paths_still_work() {
    let server = TestServer::with_defaults().await;
    let api = Api::new(&server);
    for path in ["/api/status", "/api/streamers", "/api/api-definition"] {
        assert_eq!(api.get(path).await.0, 404, "{path}");
    }
    for server in [server, server_with_rest_api().await] {
        let url = format!("ws://{}/api/status", server.player);
        let mut player = TestPeer::connect_url(&url, "player").await;
        player.expect_text(CONFIG).await;
    }
}
