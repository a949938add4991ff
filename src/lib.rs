//! ssmcp: copies and port forwarding to EC2 and hybrid instances through AWS Systems
//! Manager Session Manager, speaking the data-channel protocol itself.
//!
//! The binary needs `cli` and `commands`; the integration tests reach into a few
//! copy-engine types (`copy::bundle`, `copy::leftovers`) and `error::Kind`. Everything
//! else is crate-private, so what nothing uses shows up as dead code.

// The workspace's [lints] (Cargo.toml) deny unwrap/expect and printing, and warn of
// unreachable pub items. Unit tests may unwrap; only the reporter (progress.rs) prints.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub(crate) mod aws;
pub mod cli;
pub mod commands;
pub mod copy;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub(crate) mod progress;
pub(crate) mod remote;
pub(crate) mod session;
