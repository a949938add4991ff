//! Results of one copy over several instances: each instance's outcome, the table and
//! `instance` events that report them, the error that sums them up, and Run Command's
//! rate-control numbers (`--max-concurrency`, `--max-errors`) where ssmcp applies them
//! itself.

use crate::error::{Error, Flag, Kind, Result};
use crate::progress::Reporter;
use serde_json::{json, Value};

/// One instance's outcome.
pub(crate) struct Outcome {
    pub instance: String,
    pub ok: bool,
    pub files: u64,
    pub bytes: u64,
    /// Why it failed, and the error it maps to.
    pub failure: Option<Error>,
    /// What the instance's receiver answered when it succeeded (S3 transport).
    pub answer: Option<Value>,
}

impl Outcome {
    pub(crate) fn done(instance: String, files: u64, bytes: u64) -> Outcome {
        Outcome {
            instance,
            ok: true,
            files,
            bytes,
            failure: None,
            answer: None,
        }
    }

    pub(crate) fn failed(instance: String, why: Error) -> Outcome {
        Outcome {
            instance,
            ok: false,
            files: 0,
            bytes: 0,
            failure: Some(why),
            answer: None,
        }
    }
}

/// Each instance as an `instance` event, and as a table for people when there are
/// several.
pub(crate) fn report(results: &[Outcome], reporter: &Reporter) {
    for o in results {
        reporter.event(json!({
            "event": "instance",
            "instance": o.instance,
            "ok": o.ok,
            "files": o.files,
            "bytes": o.bytes,
            "error": o.failure.as_ref().map(|e| e.message.clone()),
            "exit_code": o.failure.as_ref().map_or(0, |e| e.kind.exit_code()),
        }));
    }
    if results.len() < 2 {
        return;
    }
    let mut table = format!(
        "{:<22} {:<7} {:>7} {:>14}  DETAIL\n",
        "INSTANCE", "RESULT", "FILES", "BYTES"
    );
    for o in results {
        let detail = o.failure.as_ref().map(|e| e.message.as_str()).unwrap_or("");
        table.push_str(&format!(
            "{:<22} {:<7} {:>7} {:>14}  {detail}\n",
            o.instance,
            if o.ok { "ok" } else { "FAILED" },
            o.files,
            o.bytes
        ));
    }
    reporter.table(&table);
}

/// The error for a run in which some instances failed: which, and why.
pub(crate) fn failure(results: &[Outcome], failed: &[&Outcome]) -> Error {
    let first = failed[0].failure.as_ref();
    if results.len() == 1 {
        if let Some(e) = first {
            return e.clone();
        }
    }
    let names: Vec<String> = failed
        .iter()
        .map(|o| {
            let why = o
                .failure
                .as_ref()
                .map(|e| e.message.as_str())
                .unwrap_or("failed");
            format!("{} ({why})", o.instance)
        })
        .collect();
    Error::new(
        first.map_or(Kind::Transfer, |e| e.kind),
        format!(
            "{} of {} instances failed: {}",
            failed.len(),
            results.len(),
            names.join("; ")
        ),
    )
    .hint("the other instances have the files; rerun the copy for the failed ones")
}

/// A rate-control value as Run Command takes it: a number, or a percentage of `total`
/// (rounded up, and at least `floor`).
pub(crate) fn count_of(spec: &str, total: usize, floor: usize, flag: Flag) -> Result<usize> {
    let bad = || {
        Error::usage(format!("{flag} '{spec}' is not a number or a percentage"))
            .hint(format!("e.g. {flag} 5 or {flag} 20%"))
    };
    let n = match spec.strip_suffix('%') {
        Some(p) => {
            let pct: usize = p.parse().map_err(|_| bad())?;
            if pct > 100 {
                return Err(bad());
            }
            (total * pct).div_ceil(100)
        }
        None => spec.parse().map_err(|_| bad())?,
    };
    Ok(n.max(floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_control_values() {
        assert_eq!(count_of("5", 20, 1, Flag::MaxConcurrency).unwrap(), 5);
        assert_eq!(count_of("10%", 15, 1, Flag::MaxConcurrency).unwrap(), 2);
        assert_eq!(count_of("0", 15, 1, Flag::MaxConcurrency).unwrap(), 1);
        assert_eq!(count_of("0", 15, 0, Flag::MaxErrors).unwrap(), 0);
        assert!(count_of("x", 15, 0, Flag::MaxErrors).is_err());
        assert!(count_of("120%", 15, 0, Flag::MaxErrors).is_err());
    }
}
