//! ssmcp: copies and port forwarding to EC2 and hybrid instances through AWS Systems
//! Manager Session Manager, speaking the data-channel protocol itself.
//!
//! The binary needs `cli` and `commands`; the integration tests reach into a few
//! copy-engine types (`copy::bundle`, `copy::leftovers`) and `error::Kind`. Everything
//! else is crate-private, so what nothing uses shows up as dead code.

// Nothing a user or the network controls may panic the client; tests may unwrap.
// These are crate attributes rather than a Cargo.toml [lints] table because a table
// reaches every test and bench target too, each of which would then need an allow.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
// Only the reporter (progress.rs) writes to stdout and stderr.
#![deny(clippy::print_stdout, clippy::print_stderr)]
// Crate-private items say so, so that what nothing uses shows up as dead code.
#![warn(unreachable_pub)]

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
