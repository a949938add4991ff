//! Loading AWS configuration the way the AWS CLI does: environment, shared config and
//! SSO profiles through aws-config, with --region / --profile / --endpoint-url on top.
//! `AWS_ENDPOINT_URL_SSM` (and friends) are honoured by the SDK itself.

use aws_config::BehaviorVersion;

#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

pub async fn load(
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
    if let Some(e) = &opts.endpoint_url {
        loader = loader.endpoint_url(e);
    }
    loader.load().await
}

pub fn ssm_client(conf: &aws_config::SdkConfig) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(conf)
}
