//! Translate AWS SDK errors into ssmcp errors with a cause and a remedy. Messages quote
//! what AWS said (action, resource) but never credentials, tokens or URLs.

use crate::error::{Error, Flag, Kind};
use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

pub(crate) fn from_sdk<E, R>(operation: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            from_code(
                operation,
                e.code().unwrap_or("Unknown"),
                e.message().unwrap_or(""),
            )
        }
        SdkError::TimeoutError(_) => Error::new(
            Kind::Unavailable,
            format!("{operation}: the request to AWS timed out"),
        )
        .hint("check network access to the SSM endpoint and retry"),
        _ => {
            let text = DisplayErrorContext(&err).to_string();
            if text.contains("credential") || text.contains("Credentials") {
                Error::new(Kind::Auth, format!("{operation}: no usable AWS credentials were found"))
                    .hint(format!("configure credentials (aws configure, aws sso login --profile P, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), or pass {}", Flag::Profile))
            } else if text.contains("certificate") {
                Error::new(
                    Kind::Unavailable,
                    format!("{operation}: the endpoint's TLS certificate was not trusted"),
                )
                .hint("if a proxy or firewall inspects TLS, set AWS_CA_BUNDLE to its CA certificate (PEM), as for the AWS CLI")
            } else if text.contains("region") {
                Error::usage(format!("{operation}: no AWS region is configured")).hint(format!(
                    "pass {}, set AWS_REGION, or add the region to the target as i-….REGION",
                    Flag::Region
                ))
            } else {
                Error::new(
                    Kind::Unavailable,
                    format!(
                        "{operation}: cannot reach the AWS endpoint ({})",
                        first_line(&text)
                    ),
                )
                .hint(format!(
                    "check network access, proxy settings and AWS_ENDPOINT_URL_SSM / {}",
                    Flag::EndpointUrl
                ))
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

pub(crate) fn from_code(operation: &str, code: &str, message: &str) -> Error {
    let said = if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {message}")
    };
    match code {
        "AccessDeniedException" => {
            let hint = if message.contains("ssm:TerminateSession") || message.contains("ssm:ResumeSession") {
                crate::aws::iam_advice::own_sessions_fix()
            } else {
                let action = quoted_action(message).unwrap_or_else(|| format!("ssm:{operation}"));
                format!("grant {action} on that resource to the identity named above (see docs/iam.md for minimal policies)")
            };
            Error::new(Kind::Auth, format!("{operation} was denied by IAM: {message}")).hint(hint)
        }
        "TargetNotConnected" | "InvalidInstanceId" | "InvalidTarget" => Error::new(
            Kind::Target,
            format!("{operation}: the instance is not reachable through SSM ({said})"),
        )
        .hint("check that the instance id and region are right, the SSM agent runs and the instance shows as Online in Fleet Manager (ssmcp doctor TARGET)"),
        "ThrottlingException" | "ThrottledException" | "TooManyUpdates" | "RequestLimitExceeded" => Error::new(
            Kind::Unavailable,
            format!("{operation}: AWS throttled the request after retries ({said})"),
        )
        .hint(format!("wait a little and retry, or lower {}", Flag::Parallel)),
        "ExpiredTokenException" | "ExpiredToken" | "UnrecognizedClientException"
        | "InvalidSignatureException" | "InvalidClientTokenId" | "SignatureDoesNotMatch" => Error::new(
            Kind::Auth,
            format!("{operation}: AWS rejected the credentials ({said})"),
        )
        .hint("refresh them (aws sso login --profile P) or check the access key and secret; a clock more than 5 minutes off also causes this"),
        "InvalidDocument" | "InvalidParameters" | "ValidationException" => Error::usage(format!(
            "{operation}: AWS rejected the request ({said})"
        )),
        // S3 names its errors differently from SSM.
        // HEAD requests have no body, so S3's code is only the HTTP status's name.
        "AccessDenied" | "AllAccessDisabled" | "Forbidden" => Error::new(
            Kind::Auth,
            format!("{operation} was denied ({said})"),
        )
        .hint(format!("the S3 transport needs the permissions in docs/policies/s3-transport-caller.json on the bucket and staging prefix given by {} (docs/iam.md)", Flag::Bucket)),
        "NoSuchBucket" | "NotFound" => Error::usage(format!("{operation}: the bucket does not exist ({said})"))
            .hint(format!("check {} / SSMCP_BUCKET; ssmcp does not create buckets", Flag::Bucket)),
        "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => Error::usage(format!(
            "{operation}: the bucket is in another region ({said})"
        ))
        .hint(format!("pass the bucket's region with {}", Flag::BucketRegion)),
        "DoesNotExistException" => Error::new(Kind::Transfer, format!("{operation}: {said}")),
        _ => Error::new(Kind::Transfer, format!("{operation} failed: {said}")),
    }
}

/// The action AWS names in "is not authorized to perform: ssm:X on resource".
fn quoted_action(message: &str) -> Option<String> {
    let rest = message.split("perform: ").nth(1)?;
    Some(rest.split_whitespace().next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminate_denial_points_at_the_owner_tag() {
        let e = from_code(
            "TerminateSession",
            "AccessDeniedException",
            "User: arn:aws:sts::1:assumed-role/AWSReservedSSO_X/alice is not authorized to perform: ssm:TerminateSession on resource: arn:aws:ssm:us-east-1:1:session/alice-1",
        );
        assert_eq!(e.kind, Kind::Auth);
        let hint = e.hint.unwrap();
        assert!(
            hint.contains("ssm:resourceTag/aws:ssmmessages:session-id"),
            "{hint}"
        );
    }

    #[test]
    fn start_denial_names_action() {
        let e = from_code(
            "StartSession",
            "AccessDeniedException",
            "User: arn:aws:iam::1:user/bob is not authorized to perform: ssm:StartSession on resource: arn:aws:ec2:us-east-1:1:instance/i-1 because no identity-based policy allows the ssm:StartSession action",
        );
        assert!(e.message.contains("arn:aws:ec2:us-east-1:1:instance/i-1"));
        assert!(e.hint.unwrap().starts_with("grant ssm:StartSession"));
    }
}
