//! STS over the query protocol (form-encoded POST, XML answers), as much as ssmcp
//! needs: GetCallerIdentity for the caller who signed (`doctor`; AWS requires no
//! permission for it, so policies and deny rules never apply), and the unsigned
//! AssumeRoleWithWebIdentity that CI jobs' OIDC credentials go through (any non-empty
//! token is taken; the credentials returned are the configured identity's).

use super::ApiError;
use crate::config::{Identity, ACCOUNT_ID};

pub const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// `Action=…` from a form body.
pub fn action(body: &[u8]) -> Option<String> {
    field(body, "Action")
}

/// One form field, decoded.
fn field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body).find_map(|(k, v)| (k == name).then(|| v.into_owned()))
}

/// Whether a request needs no signature (AssumeRoleWithWebIdentity is how unsigned
/// callers get credentials).
pub fn unsigned(body: &[u8]) -> bool {
    action(body).as_deref() == Some("AssumeRoleWithWebIdentity")
}

/// Credentials for a web identity: the configured identity's key, valid for an hour.
pub fn assume_role_with_web_identity(id: &Identity, body: &[u8]) -> Result<String, ApiError> {
    let role = field(body, "RoleArn").unwrap_or_default();
    let session = field(body, "RoleSessionName").unwrap_or_else(|| "web-identity".into());
    let token = field(body, "WebIdentityToken").unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::new(
            "InvalidIdentityToken",
            "The web identity token that was passed is empty.",
        ));
    }
    if !role.starts_with("arn:aws:iam::") || !role.contains(":role/") {
        return Err(ApiError::validation(format!("{role:?} is not a role ARN.")));
    }
    let role_name = role.rsplit('/').next().unwrap_or_default();
    let expires = iso8601(std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
    Ok(format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"{NAMESPACE}\">\
         <AssumeRoleWithWebIdentityResult><Credentials>\
         <AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
         <SessionToken>ssm-sim-web-identity-session</SessionToken><Expiration>{expires}</Expiration>\
         </Credentials><AssumedRoleUser>\
         <Arn>arn:aws:sts::{ACCOUNT_ID}:assumed-role/{}/{}</Arn><AssumedRoleId>AROASSMSIMWEBID0001:{}</AssumedRoleId>\
         </AssumedRoleUser><SubjectFromWebIdentityToken>ssm-sim</SubjectFromWebIdentityToken>\
         </AssumeRoleWithWebIdentityResult>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>\
         </AssumeRoleWithWebIdentityResponse>",
        xml(&id.access_key_id),
        xml(crate::config::SECRET_ACCESS_KEY),
        xml(role_name),
        xml(&session),
        xml(&session),
        uuid::Uuid::new_v4()
    ))
}

/// `YYYY-MM-DDThh:mm:ssZ`, as STS writes Expiration.
fn iso8601(t: std::time::SystemTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from(t)
        .format(&fmt)
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_forms() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_590_400);
        assert_eq!(iso8601(t), "2025-12-01T12:00:00Z");
        assert_eq!(iso8601(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let body = b"Action=AssumeRoleWithWebIdentity&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fdeploy&WebIdentityToken=a.b.c";
        assert!(unsigned(body));
        assert_eq!(
            field(body, "RoleArn").unwrap(),
            "arn:aws:iam::1:role/deploy"
        );
        let id = Identity::iam_user("alice");
        let xml = assume_role_with_web_identity(&id, body).unwrap();
        assert!(
            xml.contains("<AccessKeyId>AKIASSMSIMEXAMPLE000</AccessKeyId>"),
            "{xml}"
        );
        assert!(xml.contains("assumed-role/deploy/web-identity"), "{xml}");
        let empty =
            b"Action=AssumeRoleWithWebIdentity&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fdeploy";
        assert_eq!(
            assume_role_with_web_identity(&id, empty).unwrap_err().code,
            "InvalidIdentityToken"
        );
    }
}
