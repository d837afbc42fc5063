//! `[ice]` over real sockets: `GET /iceServers` in each configuration, and the per-peer TURN
//! credentials in every Pixel Streaming `config` message.

use serde_json::{Value, json};
use signalling::config::Config;
use signalling::ice::{turn_rest_credential, unix_now};

use crate::support::http::Api;
use crate::support::{self, TestPeer, TestServer};

const SECRET: &str = "test-secret";

fn with_secret() -> Config {
    let parsed = Config::from_toml_str(&format!(
        r#"
        peer_options = '{{"iceServers":[{{"urls":["stun:extra.example:3478"]}}],"iceTransportPolicy":"all"}}'
        [ice]
        stun_urls = ["stun:127.0.0.1:3478"]
        turn_urls = ["turn:127.0.0.1:3478?transport=udp"]
        turn_secret = "{SECRET}"
        credential_lifetime = 600
        "#
    ))
    .expect("valid config");
    Config {
        peer_options: parsed.peer_options,
        ice: parsed.ice,
        ..support::config()
    }
}

/// Checks one TURN REST entry: fresh expiry, the id, and the HMAC of the username, for a
/// player's `credential_lifetime` (600 s here).
fn assert_turn_rest(entry: &Value, id: &str) {
    assert_turn_rest_for(entry, id, 600);
}

/// Streamers and SFUs get config once and may stay for months: 10 years, as Epic gives them.
const LONG_LIFETIME: u64 = 10 * 365 * 24 * 60 * 60;

fn assert_turn_rest_for(entry: &Value, id: &str, lifetime: u64) {
    let username = entry["username"].as_str().expect("username");
    let (expiry, name) = username.split_once(':').expect("expiry:id");
    assert_eq!(name, id);
    let expiry: u64 = expiry.parse().expect("unix time");
    let now = unix_now();
    assert!(
        (now + lifetime - 10..=now + lifetime + 1).contains(&expiry),
        "{expiry} is not now + {lifetime}"
    );
    assert_eq!(entry["credential"], turn_rest_credential(SECRET, username));
    assert_eq!(entry["credentials"], entry["credential"]);
    assert_eq!(entry["ttl"], lifetime);
    assert_eq!(
        entry["urls"],
        json!(["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp"])
    );
}

#[tokio::test]
async fn ice_servers_with_a_secret_are_fresh_per_request() {
    let server = TestServer::start(with_secret()).await;
    let api = Api::new(&server);
    let (status, body) = api.get("/iceServers?peerId=phone").await;
    assert_eq!(status, 200);
    assert_turn_rest(&body, "phone");
    let (_, anonymous) = api.get("/iceServers").await;
    assert_turn_rest(&anonymous, "anonymous");
    assert_eq!(api.get("/iceServers?peerId=a:b").await.0, 400);
}

#[tokio::test]
async fn ice_servers_static_stun_only_and_none() {
    let stun = Config {
        ice: Config::from_toml_str("[ice]\nstun_urls = [\"stun:127.0.0.1:3478\"]")
            .expect("valid")
            .ice,
        ..support::config()
    };
    let server = TestServer::start(stun).await;
    assert_eq!(
        Api::new(&server).get("/iceServers").await,
        (200, json!({"urls": ["stun:127.0.0.1:3478"]}))
    );

    let fixed = Config {
        ice: Config::from_toml_str(
            "[ice]\nturn_urls = [\"turn:127.0.0.1:3478\"]\nturn_username = \"u\"\nturn_credential = \"p\"",
        )
        .expect("valid")
        .ice,
        ..support::config()
    };
    let server = TestServer::start(fixed).await;
    assert_eq!(
        Api::new(&server).get("/iceServers").await,
        (
            200,
            json!({"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "p",
                   "credentials": "p", "ttl": 86400})
        )
    );

    let server = TestServer::with_defaults().await;
    assert_eq!(
        Api::new(&server).get("/iceServers").await,
        (200, json!({"urls": []}))
    );
}

#[tokio::test]
async fn config_messages_carry_each_peers_own_turn_credentials() {
    let server = TestServer::start(with_secret()).await;
    let mut player = TestPeer::connect(server.player, "player").await;
    let config = player.expect_type("config").await;
    let options = &config["peerConnectionOptions"];
    assert_eq!(options["iceTransportPolicy"], "all", "peer_options kept");
    let servers = options["iceServers"].as_array().expect("iceServers");
    assert_eq!(servers[0], json!({"urls": ["stun:extra.example:3478"]}));
    assert_turn_rest(&servers[1], "Player0");

    let mut streamer = TestPeer::connect(server.streamer, "streamer").await;
    let config = streamer.expect_type("config").await;
    assert_turn_rest_for(
        &config["peerConnectionOptions"]["iceServers"][1],
        "UnknownStreamer",
        LONG_LIFETIME,
    );
    let mut sfu = TestPeer::connect(server.sfu, "sfu").await;
    let config = sfu.expect_type("config").await;
    assert_turn_rest_for(
        &config["peerConnectionOptions"]["iceServers"][1],
        "UnknownStreamer1",
        LONG_LIFETIME,
    );
}
