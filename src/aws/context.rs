//! What a command that works on one instance starts from: the AWS configuration (with
//! AWS_CA_BUNDLE trusted), the SSM client, the resolved target and the settings of every
//! data channel it opens.

use crate::aws::target::Target;
use crate::aws::trust::Trust;
use crate::aws::{self, AwsOptions};
use crate::cli::Global;
use crate::copy::transport::stream::Endpoint;
use crate::error::{Flag, Result};
use crate::session::channel::ChannelConfig;
use crate::session::Tracking;

pub(crate) struct Context {
    pub ssm: aws_sdk_ssm::Client,
    /// The loaded configuration, for clients of other services (STS for doctor).
    pub aws: aws_config::SdkConfig,
    pub target: Target,
    /// Settings for every data channel this command opens (TLS trust included).
    pub channel: ChannelConfig,
}

impl Context {
    /// Resolve the target and load AWS configuration; region and profile given in the
    /// target (`i-….REGION.PROFILE`) win over the global flags.
    pub(crate) async fn new(global: &Global, sessions: &Tracking, target: &str) -> Result<Context> {
        Context::of(global, sessions, Target::parse(target)?).await
    }

    /// As `new`, for a target already parsed.
    pub(crate) async fn of(
        global: &Global,
        sessions: &Tracking,
        target: Target,
    ) -> Result<Context> {
        let (conf, ssm, trust) = load_aws(
            global,
            target.region.clone().or_else(|| global.region.clone()),
            target.profile.clone().or_else(|| global.profile.clone()),
        )
        .await?;
        let mut target = target;
        if let Some(name) = &target.name {
            target.instance_id = crate::aws::instances::by_name(&ssm, name).await?;
        }
        let kms = crate::aws::kms_client(&conf);
        Ok(Context {
            ssm,
            aws: conf,
            target,
            channel: ChannelConfig {
                tls: trust.websocket_tls()?,
                cleanup: sessions.cleanup.clone(),
                wire: sessions.wire.clone(),
                kms: Some(kms),
                ..ChannelConfig::default()
            },
        })
    }

    /// Where this command's sessions go and how they are opened.
    pub(crate) fn endpoint(&self) -> Endpoint {
        Endpoint {
            ssm: self.ssm.clone(),
            instance: self.target.instance_id.clone(),
            channel: self.channel.clone(),
        }
    }
}

/// AWS configuration and the SSM client, trusting AWS_CA_BUNDLE as the AWS CLI does.
pub(crate) async fn load_aws(
    global: &Global,
    region: Option<String>,
    profile: Option<String>,
) -> Result<(aws_config::SdkConfig, aws_sdk_ssm::Client, Trust)> {
    if let Some(r) = &region {
        check_region(r)?;
    }
    let opts = AwsOptions {
        region,
        profile,
        endpoint_url: global.endpoint_url.clone(),
    };
    let trust = Trust::from_env()?;
    let conf = aws::load(&opts, trust.sdk_http_client()?).await;
    let ssm = aws::ssm_client(&conf, opts.endpoint_url.as_deref());
    Ok((conf, ssm, trust))
}

/// A region name as AWS spells them (eu-west-1, us-gov-west-1, cn-north-1): refuse
/// anything else before the SDK turns it into a confusing endpoint or "no region" error.
fn check_region(region: &str) -> Result<()> {
    let b = region.as_bytes();
    let shaped = (3..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_digit()
        && b.contains(&b'-')
        && !region.contains("--")
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if shaped {
        return Ok(());
    }
    Err(crate::error::Error::usage(format!(
        "{region:?} is not an AWS region name"
    ))
    .hint(format!("regions look like eu-west-1; check {}, AWS_REGION, the target's .REGION part and the profile's region", Flag::Region)))
}
