//! `signalling`: a Pixel Streaming signalling server.
//!
//! How the parts fit:
//! - [`accept`] turns sockets into connections on every port: TLS, the WebSocket handshake
//!   with one set of checks, and on the player ports plain HTTP served by the axum app of
//!   [`http`].
//! - Each socket gets a [`connection`] task: frame limits, parsing, liveness, and a bounded
//!   outgoing [`queue`] with its own writer.
//! - One [`router_task`] actor owns the sans-IO [`router::Router`] (the streamer, player and SFU
//!   tables) and every outgoing queue; it never waits on a socket.
//! - [`sessions`] is the HTTP + Server-Sent Events front door's sans-IO core (sessions, peers,
//!   event queues) and the one task that drives it, the router's pattern again.
//! - [`server`] binds everything, spawns the tasks and owns shutdown; at start it raises the
//!   open-file limit (`fd_limit`).
//! - [`config`] layers the embedded `signalling.toml`, a config file (TOML, or Wilbur's or
//!   Cirrus's JSON) and flags, every key declared once.
//! - `matchmaker` reports to Epic's Matchmaker as Cirrus did, when asked to.
//! - `fuzzing` (only in cargo-fuzz builds, `--cfg fuzzing`) is what the targets in `fuzz/` call.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(any(test, fuzzing))]
#[macro_use]
mod check;
pub mod accept;
mod auth;
pub(crate) mod cluster;
pub mod config;
pub mod connection;
mod fd_limit;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod http;
pub mod ice;
pub(crate) mod limits;
pub mod logging;
pub(crate) mod matchmaker;
pub(crate) mod metrics;
pub mod queue;
pub mod reframe;
pub mod reload;
pub mod router;
pub mod router_task;
pub mod server;
pub mod sessions;
pub(crate) mod tls;
