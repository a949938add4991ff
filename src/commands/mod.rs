//! One module per subcommand, each a short orchestration over session/ and friends.

pub mod exec;
pub mod forward;

use crate::aws::{self, AwsOptions};
use crate::cli::Global;
use crate::error::Result;
use crate::session::channel::ChannelConfig;
use crate::target::Target;
use crate::trust::Trust;

pub struct Context {
    pub ssm: aws_sdk_ssm::Client,
    pub target: Target,
    pub quiet: bool,
    /// Settings for every data channel this command opens (TLS trust included).
    pub channel: ChannelConfig,
}

impl Context {
    /// Resolve the target and load AWS configuration; region and profile given in the
    /// target (`i-….REGION.PROFILE`) win over the global flags.
    pub async fn new(global: &Global, target: &str) -> Result<Context> {
        let target = Target::parse(target)?;
        let opts = AwsOptions {
            region: target.region.clone().or_else(|| global.region.clone()),
            profile: target.profile.clone().or_else(|| global.profile.clone()),
            endpoint_url: global.endpoint_url.clone(),
        };
        let trust = Trust::from_env()?;
        let conf = aws::load(&opts, trust.sdk_http_client()?).await;
        Ok(Context {
            ssm: aws::ssm_client(&conf),
            target,
            quiet: global.quiet,
            channel: ChannelConfig {
                tls: trust.websocket_tls()?,
                ..ChannelConfig::default()
            },
        })
    }

    pub fn info(&self, msg: &str) {
        if !self.quiet {
            eprintln!("ssmcp: {msg}");
        }
    }

    pub fn warn(&self, msg: &str) {
        if !self.quiet {
            eprintln!("ssmcp: warning: {msg}");
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
