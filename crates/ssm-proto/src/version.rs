//! Version comparisons that steer protocol behaviour (§7.2, §7.4). The agent and the
//! plugin compare differently, and a simulator or client that gets this wrong picks the
//! wrong port mode, so both rules live here, apart.

use std::cmp::Ordering;

/// The agent's rule (amazon-ssm-agent versionutil `Compare`, strict): semantic-version
/// ordering when both strings are `MAJOR.MINOR.PATCH[-pre][+build]`, otherwise
/// component by component — numerically when both components are numbers, as text
/// otherwise — and on a tie the version with fewer components is lower. An empty
/// version therefore sorts below every real one.
pub fn agent_compare(this: &str, other: &str) -> Ordering {
    if let (Some(a), Some(b)) = (SemVer::parse(this), SemVer::parse(other)) {
        return a.cmp(&b);
    }
    let a: Vec<&str> = this.split('.').collect();
    let b: Vec<&str> = other.split('.').collect();
    for (x, y) in a.iter().zip(b.iter()) {
        let ord = match (x.parse::<i64>(), y.parse::<i64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            _ => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// The plugin's rule (session-manager-plugin versionutil): both versions must have the
/// same number of dot-separated integer components, else the feature is treated as
/// unsupported (`None`).
pub fn plugin_compare(this: &str, other: &str) -> Option<Ordering> {
    let a: Option<Vec<u64>> = this.split('.').map(|c| c.parse().ok()).collect();
    let b: Option<Vec<u64>> = other.split('.').map(|c| c.parse().ok()).collect();
    let (a, b) = (a?, b?);
    if a.len() != b.len() {
        return None;
    }
    Some(a.cmp(&b))
}

/// `this > other` by the plugin's rule; unsupported comparisons are `false`.
pub fn plugin_greater(this: &str, other: &str) -> bool {
    plugin_compare(this, other) == Some(Ordering::Greater)
}

#[derive(Debug, PartialEq, Eq)]
struct SemVer {
    core: [u64; 3],
    pre: Option<String>,
}

impl SemVer {
    fn parse(s: &str) -> Option<SemVer> {
        let s = s.split('+').next()?;
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) if !p.is_empty() => (c, Some(p.to_string())),
            Some(_) => return None,
            None => (s, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3 {
            return None;
        }
        let mut n = [0u64; 3];
        for (slot, p) in n.iter_mut().zip(parts) {
            if p.is_empty() || (p.len() > 1 && p.starts_with('0')) {
                return None;
            }
            *slot = p.parse().ok()?;
        }
        Some(SemVer { core: n, pre })
    }
}

impl PartialOrd for SemVer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SemVer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core
            .cmp(&other.core)
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_rule_matches_reference_examples() {
        assert_eq!(agent_compare("1.2.677.0", "1.1.70"), Ordering::Greater);
        assert_eq!(agent_compare("1.2.331.0", "1.2.331.0"), Ordering::Equal);
        assert_eq!(agent_compare("1.2.332.0", "1.2.331.0"), Ordering::Greater);
        assert_eq!(agent_compare("", "1.1.70"), Ordering::Less);
        // A semver-looking client version is compared as semver: 0.1.0 < 1.1.70.
        assert_eq!(agent_compare("0.1.0", "1.1.70"), Ordering::Less);
        assert_eq!(agent_compare("1.1.70", "1.1.70.0"), Ordering::Less);
        assert_eq!(agent_compare("1.10.0", "1.9.0"), Ordering::Greater);
        assert_eq!(agent_compare("1.0.0-rc1", "1.0.0"), Ordering::Less);
    }

    #[test]
    fn plugin_rule_needs_equal_component_counts() {
        assert!(plugin_greater("3.3.987.0", "3.0.196.0"));
        assert!(!plugin_greater("3.0.196.0", "3.0.196.0"));
        assert!(!plugin_greater("3.3.987", "3.0.196.0"));
        assert!(!plugin_greater("", "3.0.196.0"));
        assert_eq!(
            plugin_compare("2.3.722.0", "2.3.722.0"),
            Some(Ordering::Equal)
        );
    }
}
