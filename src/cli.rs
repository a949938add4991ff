//! Command-line definitions only; commands/ decides what they mean.

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ssmcp",
    version,
    about = "Copy files and forward ports to EC2 and hybrid instances through AWS Systems Manager, without SSH",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// AWS region (default: from the profile or AWS_REGION).
    #[arg(long, global = true, env = "AWS_REGION", hide_env_values = true)]
    pub region: Option<String>,
    /// Named profile from the AWS config files, SSO profiles included.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Override the SSM endpoint (AWS_ENDPOINT_URL_SSM works too).
    #[arg(long, global = true)]
    pub endpoint_url: Option<String>,
    /// More detail on stderr (-vv for protocol debugging).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Forward a local TCP port to a port on (or reachable from) the instance.
    Forward(ForwardArgs),
    /// Run a command on the instance, stream its output and exit with its status.
    Exec(ExecArgs),
}

#[derive(Args, Debug)]
pub struct ForwardArgs {
    /// i-…, mi-…, or i-….REGION[.PROFILE]
    pub target: String,
    /// [LOCAL_PORT:]REMOTE_PORT; LOCAL_PORT 0 or absent picks a free port.
    pub ports: String,
    /// Forward to this host as seen from the instance
    /// (AWS-StartPortForwardingSessionToRemoteHost).
    #[arg(long)]
    pub remote_host: Option<String>,
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// i-…, mi-…, or i-….REGION[.PROFILE]
    pub target: String,
    /// Use your own NonInteractiveCommands session document that sets
    /// separateOutputStream: stderr stays separate and the agent reports the exit code.
    /// Default: AWS-StartInteractiveCommand (a pty; stderr merged into stdout).
    #[arg(long)]
    pub document: Option<String>,
    /// The command and its arguments, joined by spaces and run by sh, as ssh does.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}
