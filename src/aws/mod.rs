//! Loading AWS configuration the way the AWS CLI does: environment, shared config and
//! SSO profiles through aws-config, with --region / --profile / --endpoint-url on top.
//! `AWS_ENDPOINT_URL_SSM` (and friends) are honoured by the SDK itself. The
//! submodules are the rest of the AWS plumbing: what a command starts from, error
//! mapping, TLS trust, targets and instances, Run Command, the S3 journal, IAM advice.

pub(crate) mod context;
pub(crate) mod error;
pub(crate) mod iam_advice;
pub(crate) mod instances;
pub(crate) mod journal;
pub(crate) mod run_command;
pub(crate) mod target;
pub(crate) mod trust;

use aws_config::BehaviorVersion;

#[derive(Debug, Clone, Default)]
pub(crate) struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

pub(crate) async fn load(
    opts: &AwsOptions,
    http: Option<aws_sdk_ssm::config::SharedHttpClient>,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(client) = http {
        loader = loader.http_client(client);
    }
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &opts.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    loader.load().await
}

/// The SSM client; `--endpoint-url` applies to SSM only (a VPC endpoint for SSM must not
/// redirect STS), `AWS_ENDPOINT_URL_<SERVICE>` per service as the SDK reads them.
pub(crate) fn ssm_client(
    conf: &aws_config::SdkConfig,
    endpoint_url: Option<&str>,
) -> aws_sdk_ssm::Client {
    let mut b = aws_sdk_ssm::config::Builder::from(conf);
    if let Some(e) = endpoint_url {
        b = b.endpoint_url(e);
    }
    aws_sdk_ssm::Client::from_conf(b.build())
}

/// KMS, for sessions that Session Manager preferences require to be encrypted;
/// `AWS_ENDPOINT_URL_KMS` reaches a VPC endpoint.
pub(crate) fn kms_client(conf: &aws_config::SdkConfig) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(conf)
}

pub(crate) fn sts_client(conf: &aws_config::SdkConfig) -> aws_sdk_sts::Client {
    aws_sdk_sts::Client::new(conf)
}

/// The S3 client; `bucket_region` when the bucket lives elsewhere than the instances
/// (presigned URLs must be signed for the bucket's own region).
pub(crate) fn s3_client(
    conf: &aws_config::SdkConfig,
    bucket_region: Option<&str>,
) -> aws_sdk_s3::Client {
    let mut b = aws_sdk_s3::config::Builder::from(conf);
    if let Some(r) = bucket_region {
        b = b.region(aws_config::Region::new(r.to_string()));
    }
    aws_sdk_s3::Client::from_conf(b.build())
}
