//! ssmcp: copies and port forwarding to EC2 and hybrid instances through AWS Systems
//! Manager Session Manager, speaking the data-channel protocol itself.

pub mod aws;
pub mod aws_error;
pub mod cli;
pub mod commands;
pub mod error;
pub mod session;
pub mod target;
pub mod trust;
