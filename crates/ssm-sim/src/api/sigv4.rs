//! SigV4 verification of API requests: recompute the signature with the aws-sigv4 crate
//! over the headers the client says it signed, and compare.

use crate::config::{SimConfig, SECRET_ACCESS_KEY};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use std::time::{Duration, SystemTime};

/// AWS rejects requests signed more than 15 minutes away from its clock.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
pub struct AuthError {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> AuthError {
    AuthError {
        code,
        message: message.into(),
    }
}

struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let mut scope = credential?.split('/');
    let auth = Authorization {
        access_key: scope.next()?,
        date: scope.next()?,
        region: scope.next()?,
        service: scope.next()?,
        signed_headers: signed?.split(';').collect(),
        signature: signature?,
    };
    (scope.next()? == "aws4_request").then_some(auth)
}

fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let dt = time::PrimitiveDateTime::parse(s, &fmt).ok()?.assume_utc();
    let secs = u64::try_from(dt.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A request whose signature checked out.
pub struct Verified {
    pub region: String,
    /// Which caller signed it (see `iam::caller`).
    pub access_key: String,
}

/// Check one request against the access keys of the configured callers.
pub fn verify(
    method: &str,
    uri: &str,
    headers: &http::HeaderMap,
    body: &[u8],
    expected_service: &str,
    config: &SimConfig,
) -> Result<Verified, AuthError> {
    let missing = || {
        err(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )
    };
    let auth_value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(missing)?;
    let auth = parse_authorization(auth_value).ok_or_else(|| {
        err(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders'.",
        )
    })?;
    if crate::iam::caller(config, auth.access_key).is_none() {
        return Err(err(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| err("IncompleteSignatureException", "Missing X-Amz-Date header."))?;
    let time = parse_amz_date(amz_date)
        .ok_or_else(|| err("IncompleteSignatureException", "Bad X-Amz-Date header."))?;
    if !amz_date.starts_with(auth.date) || auth.service != expected_service {
        return Err(err(
            "InvalidSignatureException",
            "Credential should be scoped to a valid region and service.",
        ));
    }
    let skew = SystemTime::now()
        .duration_since(time)
        .unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Err(err(
            "InvalidSignatureException",
            format!("Signature expired: {amz_date} is now earlier or later than the allowed 15 minute window."),
        ));
    }
    let session_token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let identity = Credentials::new(
        auth.access_key,
        SECRET_ACCESS_KEY,
        session_token,
        None,
        "ssm-sim",
    )
    .into();
    let signed: Vec<(&str, &str)> = auth
        .signed_headers
        .iter()
        .filter(|h| !matches!(**h, "x-amz-date" | "x-amz-security-token"))
        .filter_map(|h| Some((*h, headers.get(*h)?.to_str().ok()?)))
        .collect();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(auth.service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| err("InternalFailure", e.to_string()))?
        .into();
    let signable = SignableRequest::new(method, uri, signed.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| err("InvalidSignatureException", e.to_string()))?;
    let computed = sign(signable, &params)
        .map_err(|e| err("InvalidSignatureException", e.to_string()))?
        .signature()
        .to_string();
    if computed != auth.signature {
        return Err(err(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(Verified {
        region: auth.region.to_string(),
        access_key: auth.access_key.to_string(),
    })
}
