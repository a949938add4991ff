//! `ssm-sim`: run the simulator until SIGINT/SIGTERM and print the environment that
//! points AWS clients at it.

use clap::Parser;
use ssm_sim::iam::Policy;
use ssm_sim::{DenyRule, Identity, InstanceConfig, Sim, SimConfig};
use std::io::Write;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "A local AWS Systems Manager Session Manager for tests"
)]
struct Args {
    /// Register a managed instance (repeatable); default: i-0123456789abcdef0.
    #[arg(long = "instance", value_name = "ID")]
    instances: Vec<String>,
    /// Agent version the instances report.
    #[arg(long, default_value = ssm_sim::config::DEFAULT_AGENT_VERSION)]
    agent_version: String,
    /// Turn off the agent's per-message output pacing.
    #[arg(long)]
    fast: bool,
    /// The agent's time per output message, in microseconds (the real agent's 1 ms
    /// sleep costs about 1,050–1,200 µs).
    #[arg(long, default_value_t = 1100, value_name = "MICROS")]
    pace_us: u64,
    /// Deny an API action, e.g. ssm:TerminateSession (repeatable); a shortcut for a
    /// policy that does not allow it.
    #[arg(long = "deny", value_name = "ACTION")]
    deny: Vec<String>,
    /// Timing like a real region: 20 ms one way between this machine and AWS, 150 ms
    /// of service time per StartSession, Run Command delivered after 500 ms.
    #[arg(long)]
    realistic: bool,
    /// Network latency between this machine and AWS, one way, in milliseconds
    /// (overrides --realistic's 20).
    #[arg(long, value_name = "MS")]
    latency_ms: Option<u64>,
    /// Who the caller is: iam-user:NAME, sso-role:PERMISSION_SET/USER or federated:NAME.
    #[arg(long, default_value = "iam-user:alice", value_parser = Identity::parse)]
    identity: Identity,
    /// An identity policy (IAM JSON) for the caller (repeatable). With none, every
    /// action is allowed.
    #[arg(long = "policy", value_name = "FILE")]
    policies: Vec<std::path::PathBuf>,
    /// End sessions idle for this many seconds.
    #[arg(long, default_value_t = 1200)]
    idle_timeout: u64,
    /// Give each instance its own home directory under this folder.
    #[arg(long)]
    home_root: Option<std::path::PathBuf>,
    /// Serve https:// and wss:// with a fresh CA (exported as AWS_CA_BUNDLE and SSL_CERT_FILE).
    #[arg(long)]
    tls: bool,
    /// Register a customer NonInteractiveCommands document with separateOutputStream
    /// (repeatable), e.g. for `ssmcp exec --document NAME`.
    #[arg(long = "separate-streams-document", value_name = "NAME")]
    separate_streams_documents: Vec<String>,
    /// Session Manager preferences demand KMS encryption with the key alias/NAME, which
    /// the simulator's KMS creates (shell and command sessions become encrypted).
    #[arg(long, value_name = "NAME")]
    kms_key: Option<String>,
    /// Agents skip the encryption challenge after a KMS handshake, as older ones do.
    #[arg(long)]
    no_kms_challenge: bool,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("SSM_SIM_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut policies = Vec::new();
    for path in &args.policies {
        match Policy::from_file(path) {
            Ok(p) => policies.push(p),
            Err(e) => {
                eprintln!("ssm-sim: --policy {e}");
                std::process::exit(2);
            }
        }
    }
    let mut config = SimConfig {
        identity: args.identity,
        policies,
        pacing: !args.fast,
        pace_interval: Duration::from_micros(args.pace_us),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        home_root: args.home_root,
        tls: args.tls,
        deny: args.deny.iter().map(|a| DenyRule::action(a)).collect(),
        documents: args
            .separate_streams_documents
            .iter()
            .map(|n| ssm_sim::config::CommandDocument {
                name: n.clone(),
                separate_output_stream: true,
            })
            .collect(),
        ..SimConfig::default()
    };
    if !args.instances.is_empty() {
        config.instances = args
            .instances
            .iter()
            .map(|i| InstanceConfig::new(i))
            .collect();
    }
    for i in &mut config.instances {
        i.agent_version = args.agent_version.clone();
    }
    if let Some(name) = &args.kms_key {
        config = config.with_kms_sessions(name);
    }
    config.kms_challenge = !args.no_kms_challenge;
    if args.realistic {
        config = config.with_realistic_timing();
    }
    if let Some(ms) = args.latency_ms {
        config.latency = Duration::from_millis(ms);
    }
    let sim = match Sim::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ssm-sim: cannot listen on 127.0.0.1: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    for (k, v) in sim.env() {
        let _ = writeln!(out, "export {k}={v}");
    }
    let _ = out.flush();
    drop(out);
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ssm-sim: cannot watch SIGTERM: {e}");
            std::process::exit(1);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
