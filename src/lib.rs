//! ssmcp: copies and port forwarding to EC2 and hybrid instances through AWS Systems
//! Manager Session Manager, speaking the data-channel protocol itself.

pub mod aws;
pub mod aws_error;
pub mod bundle;
pub mod cli;
pub mod commands;
pub mod context;
pub mod copy;
pub mod error;
pub mod iam_advice;
pub mod instances;
pub mod journal;
pub mod leftovers;
pub mod plan;
pub mod progress;
pub mod remote;
pub mod run_command;
pub mod session;
pub mod sink;
pub mod target;
pub mod transport;
pub mod trust;
