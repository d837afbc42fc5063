//! Pixel Streaming signalling messages, as `../shared/PROTOCOL.md` defines them.
//!
//! This crate owns the wire format only: the messages the server creates ([`message`]), incoming
//! messages parsed just far enough to route them while every other byte is kept ([`relay`],
//! [`inbound`]), and the close codes the server uses ([`close`]). It does no IO, so the server,
//! its tests and the benchmark share it.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod close;
pub mod inbound;
pub mod message;
pub mod number;
pub mod relay;

pub use inbound::{ForwardKind, Inbound, ParseError, PlayerIdValue};
pub use message::ServerMessage;
pub use relay::{MAX_NESTING_DEPTH, Relay};

/// The protocol version the server announces in `config`.
pub const PROTOCOL_VERSION: &str = "1.3.0";
