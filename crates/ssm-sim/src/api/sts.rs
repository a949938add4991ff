//! STS over the query protocol (form-encoded POST, XML answers), as much as ssmcp's
//! `doctor` needs: GetCallerIdentity for the caller who signed. AWS requires no
//! permission for it, so policies and deny rules never apply.

use super::ApiError;
use crate::config::{Identity, ACCOUNT_ID};

pub const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// `Action=…` from a form body (the only field we need).
pub fn action(body: &[u8]) -> Option<String> {
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action=").map(str::to_string))
}

pub fn dispatch(id: &Identity, body: &[u8]) -> Result<String, ApiError> {
    match action(body).as_deref() {
        Some("GetCallerIdentity") => {
            Ok(format!(
                "<GetCallerIdentityResponse xmlns=\"{NAMESPACE}\">\
                 <GetCallerIdentityResult><Arn>{}</Arn><UserId>{}</UserId><Account>{ACCOUNT_ID}</Account></GetCallerIdentityResult>\
                 <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>\
                 </GetCallerIdentityResponse>",
                xml(&id.arn),
                xml(&id.user_id),
                uuid::Uuid::new_v4()
            ))
        }
        other => Err(ApiError::new(
            "InvalidAction",
            format!(
                "The simulator does not implement STS action {}.",
                other.unwrap_or("(none)")
            ),
        )),
    }
}

pub fn error_body(e: &ApiError) -> String {
    format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>Sender</Type><Code>{}</Code>\
         <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        xml(&e.code),
        xml(&e.message),
        uuid::Uuid::new_v4()
    )
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
