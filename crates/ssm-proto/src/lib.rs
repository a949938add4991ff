//! Session Manager data-channel wire codec.
//!
//! Everything here is pure: bytes in, values out, and back. No sockets, no clocks, no
//! randomness — callers pass in the time and the message ids, which is what lets the
//! unit tests reproduce the official vectors byte for byte. The layout follows
//! `shared/ssm-protocol.md` §3–§7; section numbers in comments refer to it.

// The same rules as ssmcp's lib.rs: no panics on what a peer sends, no printing, and
// crate-private items say so.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![deny(clippy::print_stdout, clippy::print_stderr)]
#![warn(unreachable_pub)]

pub mod kms;
pub mod message;
pub mod payload;
pub mod smux;
pub mod version;

pub use message::{DecodeError, Message, MessageType, ValidationError};
pub use payload::{
    AcknowledgeContent, ActionStatus, ChannelClosed, Flag, HandshakeComplete, HandshakeRequest,
    HandshakeResponse, OpenDataChannelInput, PayloadType, ProcessedClientAction,
    RequestedClientAction, SessionTypeRequest, SizeData,
};

/// The version the official plugin reports and whose agent-side behaviour we implement:
/// above 1.1.70 the agent picks smux for port forwarding, above 1.2.331.0 it turns smux
/// keepalive off (§7.2, §7.4).
pub const CLIENT_VERSION: &str = "1.2.677.0";

/// Largest payload either official side produces for stream data (§5.6).
pub const STREAM_DATA_PAYLOAD_SIZE: usize = 1024;
