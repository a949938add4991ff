//! IAM identity policies: the documented subset parsed strictly, and evaluated the way
//! IAM does (explicit Deny wins, then any Allow, else implicit deny). No I/O: a request
//! is an action, one resource ARN and a context of condition keys.
//!
//! Anything outside the subset is refused when the policy is loaded, never ignored: a
//! simulator that silently skipped a condition would allow what AWS denies.

use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

fn refuse<T>(msg: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError(msg.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No statement allows the request.
    ImplicitDeny,
    /// A Deny statement matches.
    ExplicitDeny,
}

/// `Action` / `NotAction`, `Resource` / `NotResource`: patterns and whether the element
/// is the negated form.
#[derive(Debug, Clone)]
struct Names {
    negated: bool,
    patterns: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    StringEquals,
    StringNotEquals,
    StringLike,
    StringNotLike,
    Bool,
    Null,
}

impl Operator {
    fn parse(name: &str) -> Option<(Operator, bool)> {
        let (base, if_exists) = match name.strip_suffix("IfExists") {
            Some(b) => (b, true),
            None => (name, false),
        };
        let op = match base {
            "StringEquals" => Operator::StringEquals,
            "StringNotEquals" => Operator::StringNotEquals,
            "StringLike" => Operator::StringLike,
            "StringNotLike" => Operator::StringNotLike,
            "Bool" => Operator::Bool,
            "Null" if !if_exists => Operator::Null,
            _ => return None,
        };
        Some((op, if_exists))
    }

    fn negated(self) -> bool {
        matches!(self, Operator::StringNotEquals | Operator::StringNotLike)
    }
}

#[derive(Debug, Clone)]
struct Condition {
    op: Operator,
    if_exists: bool,
    /// Condition key names are case-insensitive: kept lowercased.
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone)]
struct Statement {
    effect: Effect,
    action: Names,
    resource: Names,
    conditions: Vec<Condition>,
}

/// One identity policy document.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    statements: Vec<Statement>,
}

/// What one request looks like to IAM: the action, one resource, and the request
/// context's condition keys (single-valued; keys lowercased).
#[derive(Debug, Clone, Default)]
pub struct Context {
    keys: HashMap<String, String>,
}

impl Context {
    pub fn with(mut self, key: &str, value: &str) -> Context {
        self.keys
            .insert(key.to_ascii_lowercase(), value.to_string());
        self
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.keys
            .insert(key.to_ascii_lowercase(), value.to_string());
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }
}

/// Condition keys the simulator can put in a request context. A policy naming any other
/// key is refused: the simulator could not say what AWS would decide.
fn known_key(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "aws:userid",
        "aws:username",
        "aws:principalarn",
        "ssm:sessiondocumentaccesscheck",
    ];
    EXACT.contains(&key)
        || [
            "ssm:resourcetag/",
            "aws:resourcetag/",
            "kms:encryptioncontext:",
        ]
        .iter()
        .any(|p| key.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
}

/// Policy variables that may appear in Resource and in condition values.
const VARIABLES: &[&str] = &["aws:userid", "aws:username", "aws:principalarn"];

/// One piece of a string with policy variables: literal text, or a variable with an
/// optional default (`${aws:username, 'nobody'}`).
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Var(String, Option<String>),
}

fn pieces(s: &str) -> Result<Vec<Piece>, PolicyError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            out.push(Piece::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return refuse(format!("unterminated policy variable in {s:?}"));
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(',') {
            Some((n, d)) => {
                let d = d.trim();
                let Some(d) = d.strip_prefix('\'').and_then(|d| d.strip_suffix('\'')) else {
                    return refuse(format!(
                        "the default value of ${{{inner}}} must be in single quotes"
                    ));
                };
                (n.trim(), Some(d.to_string()))
            }
            None => (inner.trim(), None),
        };
        let lower = name.to_ascii_lowercase();
        if !VARIABLES.contains(&lower.as_str()) {
            return refuse(format!(
                "policy variable ${{{name}}} is not supported by ssm-sim (supported: \
                 ${{aws:userid}}, ${{aws:username}}, ${{aws:PrincipalArn}})"
            ));
        }
        out.push(Piece::Var(lower, default));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// Replace the variables from the context; `None` when one is undefined and has no
/// default, which makes the element not match, as in IAM.
fn substitute(s: &str, cx: &Context) -> Option<String> {
    // Patterns were validated when the policy was loaded.
    let parts = pieces(s).ok()?;
    let mut out = String::new();
    for p in parts {
        match p {
            Piece::Text(t) => out.push_str(&t),
            Piece::Var(name, default) => out.push_str(cx.get(&name).or(default.as_deref())?),
        }
    }
    Some(out)
}

/// IAM's wildcards: `*` any run of characters, `?` exactly one; nothing else is special
/// (unlike shell globs, `[` and `{` are literal).
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => refuse(format!("{what} must hold strings")),
            })
            .collect(),
        Value::Bool(b) => Ok(vec![b.to_string()]),
        _ => refuse(format!(
            "{what} must be a string or a non-empty list of strings"
        )),
    }
}

fn names(
    st: &serde_json::Map<String, Value>,
    plain: &str,
    negated: &str,
    sid: &str,
) -> Result<Names, PolicyError> {
    match (st.get(plain), st.get(negated)) {
        (Some(v), None) => Ok(Names {
            negated: false,
            patterns: strings(v, &format!("{sid}: {plain}"))?,
        }),
        (None, Some(v)) => Ok(Names {
            negated: true,
            patterns: strings(v, &format!("{sid}: {negated}"))?,
        }),
        _ => refuse(format!(
            "{sid}: a statement needs exactly one of {plain} and {negated}"
        )),
    }
}

fn conditions(v: &Value, sid: &str) -> Result<Vec<Condition>, PolicyError> {
    let Value::Object(ops) = v else {
        return refuse(format!("{sid}: Condition must be an object"));
    };
    let mut out = Vec::new();
    for (op_name, keys) in ops {
        let Some((op, if_exists)) = Operator::parse(op_name) else {
            return refuse(format!(
                "{sid}: condition operator {op_name} is not supported by ssm-sim \
                 (supported: StringEquals, StringNotEquals, StringLike, StringNotLike, Bool, \
                 their IfExists forms, and Null)"
            ));
        };
        let Value::Object(keys) = keys else {
            return refuse(format!(
                "{sid}: {op_name} must map condition keys to values"
            ));
        };
        for (key, values) in keys {
            let lower = key.to_ascii_lowercase();
            if !known_key(&lower) {
                return refuse(format!(
                    "{sid}: condition key {key} is not supported by ssm-sim (supported: \
                     aws:userid, aws:username, aws:PrincipalArn, ssm:resourceTag/KEY, \
                     aws:ResourceTag/KEY, ssm:SessionDocumentAccessCheck)"
                ));
            }
            let values = strings(values, &format!("{sid}: {op_name} {key}"))?;
            for v in &values {
                pieces(v)?;
            }
            if matches!(op, Operator::Null | Operator::Bool)
                && values.iter().any(|v| v != "true" && v != "false")
            {
                return refuse(format!("{sid}: {op_name} takes \"true\" or \"false\""));
            }
            out.push(Condition {
                op,
                if_exists,
                key: lower,
                values,
            });
        }
    }
    Ok(out)
}

impl Policy {
    pub fn parse(name: &str, text: &str) -> Result<Policy, PolicyError> {
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| PolicyError(format!("{name}: not JSON ({e})")))?;
        Policy::from_value(name, &doc).map_err(|e| PolicyError(format!("{name}: {e}")))
    }

    pub fn from_file(path: &std::path::Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError(format!("{}: {e}", path.display())))?;
        Policy::parse(&path.display().to_string(), &text)
    }

    fn from_value(name: &str, doc: &Value) -> Result<Policy, PolicyError> {
        let Value::Object(doc) = doc else {
            return refuse("a policy is a JSON object");
        };
        for k in doc.keys() {
            if !matches!(k.as_str(), "Version" | "Statement" | "Id") {
                return refuse(format!("unknown policy element {k}"));
            }
        }
        // Without Version 2012-10-17 IAM treats ${…} literally; the subset here is
        // the modern language only.
        if doc.get("Version").and_then(Value::as_str) != Some("2012-10-17") {
            return refuse("\"Version\": \"2012-10-17\" is required (policy variables need it)");
        }
        let list = match doc.get("Statement") {
            Some(Value::Array(a)) => a.clone(),
            Some(s @ Value::Object(_)) => vec![s.clone()],
            _ => return refuse("Statement must be an object or a list of them"),
        };
        let mut statements = Vec::new();
        for (i, st) in list.iter().enumerate() {
            let Value::Object(st) = st else {
                return refuse(format!("statement {i} is not an object"));
            };
            let sid = st
                .get("Sid")
                .and_then(Value::as_str)
                .map_or_else(|| format!("statement {i}"), |s| format!("statement {s}"));
            for k in st.keys() {
                if !matches!(
                    k.as_str(),
                    "Sid"
                        | "Effect"
                        | "Action"
                        | "NotAction"
                        | "Resource"
                        | "NotResource"
                        | "Condition"
                ) {
                    return refuse(format!(
                        "{sid}: element {k} is not valid in an identity policy"
                    ));
                }
            }
            let effect = match st.get("Effect").and_then(Value::as_str) {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                _ => return refuse(format!("{sid}: Effect must be \"Allow\" or \"Deny\"")),
            };
            let action = names(st, "Action", "NotAction", &sid)?;
            for a in &action.patterns {
                if a != "*" && !a.contains(':') {
                    return refuse(format!("{sid}: action {a:?} needs a service prefix"));
                }
            }
            let resource = names(st, "Resource", "NotResource", &sid)?;
            for r in &resource.patterns {
                pieces(r)?;
            }
            let conditions = match st.get("Condition") {
                Some(c) => conditions(c, &sid)?,
                None => Vec::new(),
            };
            statements.push(Statement {
                effect,
                action,
                resource,
                conditions,
            });
        }
        Ok(Policy {
            name: name.to_string(),
            statements,
        })
    }
}

impl Names {
    fn matches(&self, candidate: &str, case_insensitive: bool, cx: &Context) -> bool {
        let hit = self.patterns.iter().any(|p| {
            let Some(p) = substitute(p, cx) else {
                return false;
            };
            if case_insensitive {
                wildcard(&p.to_ascii_lowercase(), &candidate.to_ascii_lowercase())
            } else {
                wildcard(&p, candidate)
            }
        });
        hit != self.negated
    }
}

impl Condition {
    fn holds(&self, cx: &Context) -> bool {
        let present = cx.get(&self.key);
        if self.op == Operator::Null {
            // "true": the key must be absent; "false": present. Several values are ORed.
            return self
                .values
                .iter()
                .any(|v| (v == "true") == present.is_none());
        }
        let Some(actual) = present else {
            // IAM: a missing key fails a positive operator and satisfies a negated one;
            // IfExists turns the check off.
            return self.if_exists || self.op.negated();
        };
        let one = |v: &String| -> Option<bool> {
            let v = substitute(v, cx)?;
            Some(match self.op {
                Operator::StringEquals | Operator::StringNotEquals => v == actual,
                Operator::StringLike | Operator::StringNotLike => wildcard(&v, actual),
                Operator::Bool => v.eq_ignore_ascii_case(actual),
                Operator::Null => unreachable!("handled above"),
            })
        };
        // A value whose variable is undefined matches nothing.
        let any = self.values.iter().any(|v| one(v) == Some(true));
        if self.op.negated() {
            !any
        } else {
            any
        }
    }
}

impl Statement {
    fn applies(&self, action: &str, resource: &str, cx: &Context) -> bool {
        self.action.matches(action, true, cx)
            && self.resource.matches(resource, false, cx)
            && self.conditions.iter().all(|c| c.holds(cx))
    }
}

/// IAM's decision over all of a caller's identity policies.
pub fn decide(policies: &[Policy], action: &str, resource: &str, cx: &Context) -> Decision {
    let mut allowed = false;
    for st in policies.iter().flat_map(|p| &p.statements) {
        if st.applies(action, resource, cx) {
            match st.effect {
                Effect::Deny => return Decision::ExplicitDeny,
                Effect::Allow => allowed = true,
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = "arn:aws:ssm:us-east-1:123456789012:session/alice@example.com-0a1b2c";
    const OTHER_SESSION: &str = "arn:aws:ssm:us-east-1:123456789012:session/bob-0a1b2c";
    const INSTANCE: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";
    const SSO_USERID: &str = "AROASSMSIMROLE00001:alice@example.com";

    fn iam_user() -> Context {
        Context::default()
            .with("aws:username", "alice")
            .with("aws:userid", "AIDASSMSIMUSER000001")
    }

    fn sso() -> Context {
        Context::default().with("aws:userid", SSO_USERID)
    }

    fn with_tag(cx: Context, owner: &str) -> Context {
        cx.with("ssm:resourceTag/aws:ssmmessages:session-id", owner)
    }

    fn policy(statements: &str) -> Policy {
        Policy::parse(
            "test",
            &format!(r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#),
        )
        .unwrap()
    }

    const BY_USERNAME: &str = r#"{"Effect":"Allow","Action":"ssm:TerminateSession","Resource":"arn:aws:ssm:*:*:session/${aws:username}-*"}"#;
    const BY_USERID: &str = r#"{"Effect":"Allow","Action":"ssm:TerminateSession","Resource":"arn:aws:ssm:*:*:session/${aws:userid}-*"}"#;
    const BY_TAG: &str = r#"{"Effect":"Allow","Action":["ssm:TerminateSession","ssm:ResumeSession"],"Resource":"arn:aws:ssm:*:*:session/*","Condition":{"StringLike":{"ssm:resourceTag/aws:ssmmessages:session-id":"${aws:userid}"}}}"#;

    #[test]
    fn a_table_of_requests_and_decisions() {
        use Decision::*;
        let alice_session = "arn:aws:ssm:us-east-1:123456789012:session/alice-0a1b2c";
        let deny_after = format!(r#"{BY_TAG},{{"Effect":"Deny","Action":"ssm:*","Resource":"*"}}"#);
        let deny_before = format!(
            r#"{{"Effect":"Deny","Action":"ssm:TerminateSession","Resource":"*"}},{BY_TAG}"#
        );
        #[rustfmt::skip]
        let rows: Vec<(&str, &str, &str, Context, Decision)> = vec![
            // The seed's policy: fine for an IAM user, never for a role session.
            (BY_USERNAME, "ssm:TerminateSession", alice_session, iam_user(), Allow),
            (BY_USERNAME, "ssm:TerminateSession", SESSION, sso(), ImplicitDeny),
            // The old advice: ${aws:userid} carries the role id and a colon.
            (BY_USERID, "ssm:TerminateSession", SESSION, sso(), ImplicitDeny),
            // The tag condition matches whoever started the session, and only them.
            (BY_TAG, "ssm:TerminateSession", SESSION, with_tag(sso(), SSO_USERID), Allow),
            (BY_TAG, "ssm:ResumeSession", SESSION, with_tag(sso(), SSO_USERID), Allow),
            (BY_TAG, "ssm:TerminateSession", OTHER_SESSION, with_tag(sso(), "AROASSMSIMROLE00001:bob"), ImplicitDeny),
            (BY_TAG, "ssm:TerminateSession", alice_session, with_tag(iam_user(), "AIDASSMSIMUSER000001"), Allow),
            // A session without the tag (key absent): a positive operator fails.
            (BY_TAG, "ssm:TerminateSession", SESSION, sso(), ImplicitDeny),
            // Action names are case-insensitive, ARNs are not.
            (r#"{"Effect":"Allow","Action":"SSM:terminatesession","Resource":"*"}"#, "ssm:TerminateSession", SESSION, sso(), Allow),
            (r#"{"Effect":"Allow","Action":"ssm:*","Resource":"arn:aws:SSM:*"}"#, "ssm:TerminateSession", SESSION, sso(), ImplicitDeny),
            // Wildcards: ? is one character, * any run.
            (r#"{"Effect":"Allow","Action":"ssm:?tartSession","Resource":"arn:aws:ec2:*:*:instance/i-*"}"#, "ssm:StartSession", INSTANCE, sso(), Allow),
            (r#"{"Effect":"Allow","Action":"ssm:?StartSession","Resource":"*"}"#, "ssm:StartSession", INSTANCE, sso(), ImplicitDeny),
            // NotAction / NotResource.
            (r#"{"Effect":"Allow","NotAction":"ssm:SendCommand","Resource":"*"}"#, "ssm:StartSession", INSTANCE, sso(), Allow),
            (r#"{"Effect":"Allow","NotAction":"ssm:Start*","Resource":"*"}"#, "ssm:StartSession", INSTANCE, sso(), ImplicitDeny),
            (r#"{"Effect":"Allow","Action":"*","NotResource":"arn:aws:ssm:*:*:session/*"}"#, "ssm:TerminateSession", SESSION, sso(), ImplicitDeny),
            // Explicit deny beats any allow, whatever the order.
            (&deny_after, "ssm:TerminateSession", SESSION, with_tag(sso(), SSO_USERID), ExplicitDeny),
            (&deny_before, "ssm:TerminateSession", SESSION, with_tag(sso(), SSO_USERID), ExplicitDeny),
            // A Deny with an undefined variable does not apply either.
            (r#"{"Effect":"Allow","Action":"ssm:*","Resource":"*"},{"Effect":"Deny","Action":"ssm:*","Resource":"arn:aws:ssm:*:*:session/${aws:username}-*"}"#, "ssm:TerminateSession", SESSION, sso(), Allow),
            // A default value stands in for an undefined variable.
            (r#"{"Effect":"Allow","Action":"ssm:*","Resource":"arn:aws:ssm:*:*:session/${aws:username, 'alice@example.com'}-*"}"#, "ssm:TerminateSession", SESSION, sso(), Allow),
            // Negated operators are satisfied by a missing key; IfExists skips it.
            (r#"{"Effect":"Allow","Action":"ssm:*","Resource":"*","Condition":{"StringNotEquals":{"aws:username":"mallory"}}}"#, "ssm:StartSession", INSTANCE, sso(), Allow),
            (r#"{"Effect":"Allow","Action":"ssm:*","Resource":"*","Condition":{"StringEquals":{"aws:username":"alice"}}}"#, "ssm:StartSession", INSTANCE, sso(), ImplicitDeny),
            (r#"{"Effect":"Allow","Action":"ssm:*","Resource":"*","Condition":{"StringEqualsIfExists":{"aws:username":"alice"}}}"#, "ssm:StartSession", INSTANCE, sso(), Allow),
            (r#"{"Effect":"Allow","Action":"ssm:*","Resource":"*","Condition":{"StringNotLike":{"aws:userid":["AIDA*","*:bob"]}}}"#, "ssm:StartSession", INSTANCE, sso(), Allow),
            (r#"{"Effect":"Allow","Action":"ssm:*","Resource":"*","Condition":{"StringNotLike":{"aws:userid":["AIDA*","*:alice@*"]}}}"#, "ssm:StartSession", INSTANCE, sso(), ImplicitDeny),
            // Condition key names are case-insensitive; values are not.
            (r#"{"Effect":"Allow","Action":"ssm:*","Resource":"*","Condition":{"StringEquals":{"AWS:UserId":"AROASSMSIMROLE00001:alice@example.com"}}}"#, "ssm:StartSession", INSTANCE, sso(), Allow),
            (r#"{"Effect":"Allow","Action":"ssm:*","Resource":"*","Condition":{"StringEquals":{"aws:userid":"aroassmsimrole00001:alice@example.com"}}}"#, "ssm:StartSession", INSTANCE, sso(), ImplicitDeny),
            // Null: the key is absent ("true") or present ("false").
            (r#"{"Effect":"Allow","Action":"ssm:*","Resource":"*","Condition":{"Null":{"aws:username":"true"}}}"#, "ssm:StartSession", INSTANCE, sso(), Allow),
            (r#"{"Effect":"Allow","Action":"ssm:*","Resource":"*","Condition":{"Null":{"aws:username":"true"}}}"#, "ssm:StartSession", INSTANCE, iam_user(), ImplicitDeny),
            // Instance tags, and every condition of a statement must hold (AND).
            (r#"{"Effect":"Allow","Action":"ssm:StartSession","Resource":"*","Condition":{"StringLike":{"ssm:resourceTag/Env":"prod*"},"StringEquals":{"aws:userid":"AROASSMSIMROLE00001:alice@example.com"}}}"#, "ssm:StartSession", INSTANCE, sso().with("ssm:resourceTag/Env", "production"), Allow),
            (r#"{"Effect":"Allow","Action":"ssm:StartSession","Resource":"*","Condition":{"StringLike":{"ssm:resourceTag/Env":"prod*"},"StringEquals":{"aws:userid":"someone-else"}}}"#, "ssm:StartSession", INSTANCE, sso().with("ssm:resourceTag/Env", "production"), ImplicitDeny),
            // The document access check (BoolIfExists, as AWS documents it).
            (r#"{"Effect":"Allow","Action":"ssm:StartSession","Resource":"*","Condition":{"BoolIfExists":{"ssm:SessionDocumentAccessCheck":"true"}}}"#, "ssm:StartSession", INSTANCE, sso().with("ssm:SessionDocumentAccessCheck", "false"), ImplicitDeny),
            (r#"{"Effect":"Allow","Action":"ssm:StartSession","Resource":"*","Condition":{"BoolIfExists":{"ssm:SessionDocumentAccessCheck":"true"}}}"#, "ssm:StartSession", INSTANCE, sso().with("ssm:SessionDocumentAccessCheck", "true"), Allow),
            // No statement for the action at all.
            (r#"{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}"#, "ssm:StartSession", INSTANCE, sso(), ImplicitDeny),
        ];
        for (i, (statements, action, resource, cx, want)) in rows.into_iter().enumerate() {
            let got = decide(&[policy(statements)], action, resource, &cx);
            assert_eq!(got, want, "row {i}: {statements} / {action} on {resource}");
        }
    }

    #[test]
    fn anything_outside_the_subset_is_refused_with_the_reason() {
        #[rustfmt::skip]
        let rows = [
            (r#"{"Statement":[]}"#, "2012-10-17"),
            (r#"{"Version":"2008-10-17","Statement":[]}"#, "2012-10-17"),
            (r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:*","Resource":"*","Principal":"*"}]}"#, "Principal"),
            (r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#, "IpAddress"),
            (r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:*","Resource":"*","Condition":{"ForAnyValue:StringLike":{"aws:TagKeys":"x"}}}]}"#, "ForAnyValue"),
            (r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:*","Resource":"*","Condition":{"StringEquals":{"aws:SourceVpc":"vpc-1"}}}]}"#, "aws:SourceVpc"),
            (r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:*","Resource":"arn:aws:ssm:*:*:session/${aws:PrincipalTag/team}-*"}]}"#, "PrincipalTag"),
            (r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:*","Resource":"arn:${aws:userid"}]}"#, "unterminated"),
            (r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:*"}]}"#, "Resource"),
            (r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:*","NotAction":"s3:*","Resource":"*"}]}"#, "exactly one"),
            (r#"{"Version":"2012-10-17","Statement":[{"Effect":"allow","Action":"ssm:*","Resource":"*"}]}"#, "Effect"),
            (r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"StartSession","Resource":"*"}]}"#, "service prefix"),
        ];
        for (text, reason) in rows {
            let err = Policy::parse("p.json", text).unwrap_err().to_string();
            assert!(
                err.contains(reason) && err.starts_with("p.json: "),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn wildcards_are_iam_s_two_and_nothing_else() {
        assert!(wildcard("a*c", "abbbc"));
        assert!(wildcard("a*", "a"));
        assert!(wildcard("*", ""));
        assert!(wildcard("a?c", "abc"));
        assert!(!wildcard("a?c", "ac"));
        assert!(!wildcard("a*c", "abcd"));
        assert!(wildcard("[ab]", "[ab]"));
        assert!(!wildcard("[ab]", "a"));
        assert!(wildcard("*-*", "alice@example.com-0a1b"));
        assert!(wildcard("**x", "yx"));
    }
}
