//! IAM advice users paste: the own-session statement ships as a file
//! (docs/policies/own-sessions-statement.json) that the tests load into the simulator,
//! so the text ssmcp prints is the statement the tests prove. Also what a caller's
//! identity means for session policies (doctor).

/// The statement that lets a caller end and resume exactly the sessions it started:
/// a condition on the tag AWS puts on every session (its starter's `aws:userid`).
const OWN_SESSIONS_STATEMENT: &str =
    include_str!("../../docs/policies/own-sessions-statement.json");

/// The statement on one line, ready to paste into a policy's `Statement` list.
pub(crate) fn own_sessions_statement() -> String {
    // Joining the lines keeps the file's order and stays valid JSON (a unit test
    // below parses it back).
    OWN_SESSIONS_STATEMENT
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why the usual resources fail, in one sentence.
pub(crate) const WHY_NOT_SESSION_ID_SCOPING: &str = "a session id starts with the caller's name \
(IAM user name, or role session name such as alice@example.com), so \
\"session/${aws:username}-*\" matches no role session (aws:username is undefined for \
them) and \"session/${aws:userid}-*\" matches none either (a role's aws:userid is \
ROLEID:NAME)";

/// The fix for a refused TerminateSession / ResumeSession, with the statement itself.
pub(crate) fn own_sessions_fix() -> String {
    format!(
        "allow ssm:TerminateSession and ssm:ResumeSession by the session's owner tag instead of \
         by session id: {}; {WHY_NOT_SESSION_ID_SCOPING} (docs/iam.md, docs/policies/session-caller.json)",
        own_sessions_statement()
    )
}

/// What kind of caller an STS ARN names, and what session policies see of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// e.g. "IAM user", "IAM Identity Center (SSO) role session (AWSReservedSSO_Dev_abc)".
    pub kind: String,
    /// `aws:username`: IAM users only.
    pub user_name: Option<String>,
    /// What this caller's session ids start with (before `-` and a random suffix).
    pub session_prefix: String,
    /// `aws:userid`, which is also the value of the session's owner tag.
    pub user_id: String,
}

impl Caller {
    pub(crate) fn from_sts(arn: &str, user_id: &str) -> Caller {
        let resource = arn.splitn(6, ':').nth(5).unwrap_or_default();
        let last = resource.rsplit('/').next().unwrap_or(resource).to_string();
        let (kind, user_name) = if resource.starts_with("user/") {
            ("IAM user".to_string(), Some(last.clone()))
        } else if let Some(rest) = resource.strip_prefix("assumed-role/") {
            let role = rest.split('/').next().unwrap_or_default();
            let kind = if role.starts_with("AWSReservedSSO_") {
                "IAM Identity Center (SSO) role session"
            } else {
                "assumed role session"
            };
            (format!("{kind} ({role})"), None)
        } else if resource.starts_with("federated-user/") {
            ("federated user".to_string(), None)
        } else {
            (resource.to_string(), None)
        };
        Caller {
            kind,
            user_name,
            session_prefix: last,
            user_id: user_id.to_string(),
        }
    }

    /// Role sessions and federated users: the callers `${aws:username}` policies miss.
    pub(crate) fn has_no_user_name(&self) -> bool {
        self.user_name.is_none()
    }

    /// One line for doctor: the caller, its session ids, its owner tag, and what the
    /// two common resource patterns become for it.
    pub(crate) fn describe(&self) -> String {
        let username = match &self.user_name {
            Some(n) => format!("${{aws:username}} = {n}"),
            None => "${aws:username} is undefined for it".to_string(),
        };
        let by_userid = format!("session/{}-*", self.user_id);
        let userid_matches = self.user_id == self.session_prefix;
        format!(
            "{}: session ids start with \"{}-\", their owner tag aws:ssmmessages:session-id = {}; \
             {username}; ${{aws:userid}} = {} (so \"{by_userid}\" {})",
            self.kind,
            self.session_prefix,
            self.user_id,
            self.user_id,
            if userid_matches {
                "matches"
            } else {
                "does not match them"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_printed_is_the_shipped_file() {
        let shipped: serde_json::Value = serde_json::from_str(OWN_SESSIONS_STATEMENT).unwrap();
        let printed: serde_json::Value = serde_json::from_str(&own_sessions_statement()).unwrap();
        assert_eq!(shipped, printed);
        assert!(!own_sessions_statement().contains('\n'));
        let fix = own_sessions_fix();
        assert!(
            fix.contains("ssm:resourceTag/aws:ssmmessages:session-id"),
            "{fix}"
        );
        assert!(fix.contains("\"${aws:userid}\""), "{fix}");
        assert!(
            fix.contains("{ \"Sid\": \"EndAndResumeOwnSessions\", \"Effect\": \"Allow\""),
            "{fix}"
        );
    }

    #[test]
    fn callers_say_what_their_sessions_look_like() {
        let c = Caller::from_sts("arn:aws:iam::1:user/ops/bob", "AIDA1");
        assert_eq!(c.user_name.as_deref(), Some("bob"));
        assert_eq!(c.session_prefix, "bob");
        assert!(!c.has_no_user_name());
        let c = Caller::from_sts(
            "arn:aws:sts::1:assumed-role/AWSReservedSSO_Dev_abc/alice@example.com",
            "AROA1:alice@example.com",
        );
        assert!(c.kind.contains("SSO") && c.has_no_user_name(), "{c:?}");
        assert_eq!(c.session_prefix, "alice@example.com");
        let d = c.describe();
        assert!(d.contains("\"alice@example.com-\""), "{d}");
        assert!(
            d.contains("aws:ssmmessages:session-id = AROA1:alice@example.com"),
            "{d}"
        );
        assert!(d.contains("does not match them"), "{d}");
        let c = Caller::from_sts("arn:aws:sts::1:federated-user/carol", "1:carol");
        assert!(c.kind.contains("federated") && c.has_no_user_name());
        assert_eq!(c.session_prefix, "carol");
    }
}
