//! Target syntax: `i-0abc…`, `mi-0abc…`, `i-0abc….REGION[.PROFILE]` (the region and
//! profile ride along with the id, as in ssh config aliases), and `name:NAME` (the
//! instance's Name tag, looked up when the command runs).

use crate::error::{Error, Result};
use globset::{Glob, GlobMatcher};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Empty until a `name:` target is resolved.
    pub instance_id: String,
    /// The Name tag to look up, for `name:NAME`.
    pub name: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target> {
        if let Some(name) = s.strip_prefix("name:") {
            if name.is_empty() {
                return Err(Error::usage(
                    "'name:' needs the instance's Name tag, e.g. name:web-1",
                ));
            }
            if is_pattern(name) {
                return Err(Error::usage(format!(
                    "'{s}' is a pattern that can match several instances; this needs one"
                ))
                .hint("patterns are for uploads to several instances (through S3); give one instance's Name or id here"));
            }
            return Ok(Target {
                instance_id: String::new(),
                name: Some(name.to_string()),
                region: None,
                profile: None,
            });
        }
        let mut parts = s.splitn(3, '.');
        let id = parts.next().unwrap_or_default();
        let region = parts.next().map(str::to_string);
        let profile = parts.next().map(str::to_string);
        if !is_instance_id(id) {
            return Err(Error::usage(format!(
                "'{s}' is not an instance target"
            ))
            .hint("use an EC2 instance id (i-0123456789abcdef0), a managed node id (mi-…), optionally followed by .REGION or .REGION.PROFILE"));
        }
        if region.as_deref() == Some("") || profile.as_deref() == Some("") {
            return Err(Error::usage(format!(
                "'{s}' has an empty region or profile part"
            )));
        }
        Ok(Target {
            instance_id: id.to_string(),
            name: None,
            region,
            profile,
        })
    }
}

/// Several instances for one upload (S3 transport): `i-a,i-b,…`, `tag:KEY=VALUE` or a
/// Name pattern `name:web-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fleet {
    Instances(Vec<String>),
    Tag {
        key: String,
        value: String,
    },
    /// Looked up when the command runs (`crate::aws::instances::by_name_pattern`).
    Named(String),
}

impl Fleet {
    /// `None` when `s` names one instance (or nothing a fleet can be).
    pub fn parse(s: &str) -> Option<Result<Fleet>> {
        if let Some(pattern) = s.strip_prefix("name:") {
            if !is_pattern(pattern) {
                return None;
            }
            return Some(compile(pattern).map(|_| Fleet::Named(pattern.into())));
        }
        if let Some(kv) = s.strip_prefix("tag:") {
            return Some(match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok(Fleet::Tag {
                    key: k.to_string(),
                    value: v.to_string(),
                }),
                _ => Err(Error::usage(format!(
                    "'{s}' needs a tag key and value, e.g. tag:Role=web"
                ))),
            });
        }
        if !s.contains(',') {
            return None;
        }
        let ids: Vec<String> = s.split(',').map(str::to_string).collect();
        Some(match ids.iter().find(|id| !is_instance_id(id)) {
            Some(bad) => Err(Error::usage(format!(
                "'{bad}' in '{s}' is not an instance id"
            ))
            .hint("list instance ids separated by commas (i-a,i-b); name: targets and .REGION suffixes name one instance each")),
            None if ids.len() > 50 => Err(Error::usage(format!(
                "{} instances listed; Run Command takes at most 50 ids",
                ids.len()
            ))
            .hint("tag the instances and use tag:KEY=VALUE instead")),
            None => Ok(Fleet::Instances(ids)),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Fleet::Instances(ids) => format!("{} instances", ids.len()),
            Fleet::Tag { key, value } => format!("the instances tagged {key}={value}"),
            Fleet::Named(p) => format!("the instances named like '{p}'"),
        }
    }
}

/// `i-` or `mi-` followed by 8 or 17 hex digits, as EC2 and SSM issue them.
pub(crate) fn is_instance_id(s: &str) -> bool {
    let hex = s.strip_prefix("i-").or_else(|| s.strip_prefix("mi-"));
    matches!(hex, Some(h) if (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether a `name:` value is a pattern (several instances) rather than one name.
pub(crate) fn is_pattern(name: &str) -> bool {
    name.contains(['*', '?', '['])
}

pub(crate) fn compile(pattern: &str) -> Result<GlobMatcher> {
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| Error::usage(format!("'name:{pattern}' is not a valid pattern: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleets_are_lists_or_tags() {
        assert!(Fleet::parse("i-0123456789abcdef0").is_none());
        assert_eq!(
            Fleet::parse("i-01234567,i-89abcdef").unwrap().unwrap(),
            Fleet::Instances(vec!["i-01234567".into(), "i-89abcdef".into()])
        );
        assert_eq!(
            Fleet::parse("tag:Role=web").unwrap().unwrap(),
            Fleet::Tag {
                key: "Role".into(),
                value: "web".into()
            }
        );
        assert!(Fleet::parse("tag:Role").unwrap().is_err());
        assert_eq!(
            Fleet::parse("name:web-*").unwrap().unwrap(),
            Fleet::Named("web-*".into())
        );
        assert!(Fleet::parse("name:web-1").is_none());
        assert!(Fleet::parse("name:web-[").unwrap().is_err());
        assert!(Target::parse("name:web-*").is_err());
        assert!(Fleet::parse("i-01234567,web").unwrap().is_err());
    }

    #[test]
    fn parses_plain_and_qualified_targets() {
        let t = Target::parse("i-0123456789abcdef0").unwrap();
        assert_eq!(t.instance_id, "i-0123456789abcdef0");
        assert_eq!(t.region, None);
        let t = Target::parse("mi-0123456789abcdef0.eu-west-1.prod").unwrap();
        assert_eq!(t.region.as_deref(), Some("eu-west-1"));
        assert_eq!(t.profile.as_deref(), Some("prod"));
        assert!(Target::parse("i-12345678").is_ok());
    }

    #[test]
    fn rejects_non_ids() {
        for bad in [
            "web-1",
            "i-xyz",
            "i-0123",
            "i-0123456789abcdef0.",
            "",
            "i-0123456789abcdef0..p",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_are_told_from_names() {
        assert!(is_pattern("web-*"));
        assert!(is_pattern("web-?"));
        assert!(is_pattern("web-[12]"));
        assert!(!is_pattern("web-1"));
        assert!(compile("web-*").unwrap().is_match("web-10"));
        assert!(!compile("web-?").unwrap().is_match("web-10"));
        assert!(compile("web-[").is_err());
    }
}
