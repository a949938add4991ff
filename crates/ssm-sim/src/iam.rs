//! Who is calling, and may they: the caller is found by the access key a request was
//! signed with, and each (action, resource) is decided by the configured identity
//! policies (`crate::policy`, the pure evaluator) and the `--deny` shortcut. The denial
//! reads as AWS's does.
//!
//! With no policy configured every action is allowed (the simulator's default), so that
//! tests which are not about IAM need none.

use crate::config::{Identity, SimConfig};
pub use crate::policy::{Context, Decision, Policy, PolicyError};

/// One resource an action is checked against, with the condition keys it adds to the
/// request context (e.g. its tags).
#[derive(Debug, Clone)]
pub struct Resource {
    pub arn: String,
    /// Matched by `--deny ACTION` rules that name a resource part.
    pub id: String,
    pub context: Vec<(String, String)>,
}

impl Resource {
    pub fn new(arn: impl Into<String>, id: impl Into<String>) -> Resource {
        Resource {
            arn: arn.into(),
            id: id.into(),
            context: Vec::new(),
        }
    }

    /// Tags as `ssm:resourceTag/KEY` and `aws:ResourceTag/KEY`.
    pub fn tagged(mut self, tags: &[(String, String)]) -> Resource {
        for (k, v) in tags {
            self.context
                .push((format!("ssm:resourceTag/{k}"), v.clone()));
            self.context
                .push((format!("aws:ResourceTag/{k}"), v.clone()));
        }
        self
    }

    pub fn key(mut self, key: &str, value: &str) -> Resource {
        self.context.push((key.into(), value.into()));
        self
    }
}

/// The tag AWS puts on every session: the starting caller's `aws:userid`.
pub const SESSION_OWNER_TAG: &str = "aws:ssmmessages:session-id";

/// A refusal in AWS's words.
#[derive(Debug, Clone)]
pub struct Denied {
    pub message: String,
}

/// The caller whose access key signed a request.
pub fn caller<'a>(config: &'a SimConfig, access_key: &str) -> Option<&'a Identity> {
    std::iter::once(&config.identity)
        .chain(&config.other_callers)
        .find(|i| i.access_key_id == access_key)
}

/// The request context's keys that come from the caller.
fn principal_context(caller: &Identity) -> Context {
    let mut cx = Context::default()
        .with("aws:userid", &caller.user_id)
        .with("aws:PrincipalArn", &caller.principal_arn);
    if let Some(name) = &caller.user_name {
        cx.set("aws:username", name);
    }
    cx
}

/// Decide `action` on every resource (all must be allowed, as for StartSession on the
/// instance and the document), with `extra` condition keys of the request itself.
pub fn authorize(
    config: &SimConfig,
    caller: &Identity,
    action: &str,
    resources: &[Resource],
    extra: &[(&str, &str)],
) -> Result<(), Denied> {
    for r in resources {
        let shortcut = config.deny.iter().any(|d| {
            d.action == action
                && d.resource_contains
                    .as_deref()
                    .is_none_or(|p| r.id.contains(p))
        });
        let decision = if shortcut {
            Decision::ImplicitDeny
        } else if config.policies.is_empty() {
            Decision::Allow
        } else {
            let mut cx = principal_context(caller);
            for (k, v) in r
                .context
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(extra.iter().copied())
            {
                cx.set(k, v);
            }
            crate::policy::decide(&config.policies, action, &r.arn, &cx)
        };
        let why = match decision {
            Decision::Allow => continue,
            Decision::ImplicitDeny => {
                format!("because no identity-based policy allows the {action} action")
            }
            Decision::ExplicitDeny => {
                "with an explicit deny in an identity-based policy".to_string()
            }
        };
        return Err(Denied {
            message: format!(
                "User: {} is not authorized to perform: {action} on resource: {} {why}",
                caller.arn, r.arn
            ),
        });
    }
    Ok(())
}
