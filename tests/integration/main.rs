//! Integration tests: the real server on ephemeral loopback ports, driven by WebSocket clients.
//! One binary, one module per flow (PROTOCOL.md section in each module's doc line).

mod support;

mod auto_subscribe;
mod bad_input;
mod bench;
mod binary;
mod browser;
mod cirrus;
mod cluster;
mod cluster_sessions;
mod disconnect_player;
mod drop_in;
mod epic_client;
mod faults;
mod fd_limit;
mod handshake;
mod hostile;
mod ice_servers;
mod jwt;
mod legacy;
mod limits;
mod liveness;
mod log_files;
mod logging;
mod max_players;
mod metrics;
mod packaging;
mod ping;
mod player_leaving;
mod reload;
mod rest_api;
mod routing;
mod session_limits;
mod sessions;
mod sfu;
mod shutdown;
mod streamer_ids;
mod streamer_leaving;
mod tls;
mod tokens;
mod transport;
mod turn;
mod web;
