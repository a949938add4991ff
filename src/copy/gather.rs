//! Downloads from several instances (`ssmcp -r i-a,i-b:/var/log/app ./logs`, `tag:K=V`,
//! `name:web-*`). Each instance's files land in `DEST/<instance id>/`, as Ansible's
//! fetch does, so instances holding the same paths cannot overwrite one another.
//! Every instance is an ordinary download (same transports, verification and cleanup);
//! this module only spreads them with `--max-concurrency`, stops starting new ones past
//! `--max-errors` or on ^C, and reports each instance.

use super::drive::{interrupted, Run};
use crate::aws::context::load_aws;
use crate::aws::instances;
use crate::aws::target::Fleet;
use crate::commands::fleet::{self, Outcome};
use crate::copy::transport::Summary;
use crate::error::{Error, Flag, Kind, Result};
use crate::progress::Progress;
use futures_util::StreamExt;
use std::ffi::OsString;
use std::future::Future;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Download from every instance of `fleet` with `one(instance id, its directory)`.
pub(super) async fn download<F, Fut>(
    run: Run<'_>,
    fleet: Fleet,
    dest: &Path,
    one: F,
) -> Result<Summary>
where
    F: Fn(String, PathBuf) -> Fut,
    Fut: Future<Output = Result<Summary>>,
{
    let req = run.req;
    let reporter = run.reporter;
    if !dest.is_dir() {
        return Err(Error::usage(format!(
            "a download from {} goes into a directory with one subdirectory per instance; '{}' is not an existing directory",
            fleet.describe(),
            dest.display()
        ))
        .hint("create it first (mkdir -p DEST)"));
    }
    let ids = instances_of(run, fleet).await?;
    let parallel = if req.dry_run {
        1
    } else {
        fleet::count_of(&req.max_concurrency, ids.len(), 1, Flag::MaxConcurrency)?
    };
    let max_errors = fleet::count_of(&req.max_errors, ids.len(), 0, Flag::MaxErrors)?;
    reporter.note(&format!(
        "downloading from {} instances, {parallel} at a time, into {}/<instance id>/",
        ids.len(),
        dest.display()
    ));
    let stop = AtomicBool::new(false);
    let failures = AtomicUsize::new(0);
    let each = |id: String| {
        let (stop, failures, one) = (&stop, &failures, &one);
        async move {
            if stop.load(Ordering::SeqCst) || run.cancel.is_cancelled() {
                return not_started(id);
            }
            match one(id.clone(), instance_dir(dest, &id)).await {
                Ok(s) => Outcome::done(id, s.files, s.bytes),
                Err(e) => {
                    if failures.fetch_add(1, Ordering::SeqCst) + 1 > max_errors
                        || e.kind == Kind::Interrupted
                    {
                        stop.store(true, Ordering::SeqCst);
                    }
                    Outcome::failed(id, e)
                }
            }
        }
    };
    let mut results = futures_util::stream::iter(ids)
        .map(each)
        .buffer_unordered(parallel)
        .collect::<Vec<Outcome>>()
        .await;
    results.sort_by(|a, b| a.instance.cmp(&b.instance));
    fleet::report(&results, reporter);
    let interrupted_run = run.cancel.is_cancelled()
        || results.iter().any(|o| {
            o.failure
                .as_ref()
                .is_some_and(|e| e.kind == Kind::Interrupted)
        });
    if interrupted_run {
        return Err(interrupted());
    }
    let failed: Vec<&Outcome> = results.iter().filter(|o| !o.ok).collect();
    if failed.is_empty() {
        return Ok(Summary {
            files: results.iter().map(|o| o.files).sum(),
            bytes: results.iter().map(|o| o.bytes).sum(),
            ..Summary::default()
        });
    }
    let mut err = fleet::failure(&results, &failed);
    // The class is that of the first instance that failed, not of one never started.
    if let Some(kind) = failed
        .iter()
        .filter_map(|o| o.failure.as_ref())
        .find(|e| !e.message.starts_with(NOT_STARTED))
        .map(|e| e.kind)
    {
        err.kind = kind;
    }
    Err(err)
}

const NOT_STARTED: &str = "not started";

fn not_started(id: String) -> Outcome {
    Outcome::failed(
        id,
        Error::new(
            Kind::Transfer,
            format!(
                "{NOT_STARTED}: the run stopped ({} reached, or interrupted)",
                Flag::MaxErrors
            ),
        ),
    )
}

/// `DEST/<id>/`: the trailing slash makes the download create it, with the usual rules
/// inside (a directory source lands as `DEST/<id>/NAME`).
fn instance_dir(dest: &Path, id: &str) -> PathBuf {
    let mut bytes = dest.as_os_str().to_owned().into_vec();
    if !bytes.ends_with(b"/") {
        bytes.push(b'/');
    }
    bytes.extend_from_slice(id.as_bytes());
    bytes.push(b'/');
    PathBuf::from(OsString::from_vec(bytes))
}

async fn instances_of(run: Run<'_>, fleet: Fleet) -> Result<Vec<String>> {
    let g = run.global;
    let aws = || load_aws(g, g.region.clone(), g.profile.clone());
    match fleet {
        Fleet::Instances(ids) => Ok(ids),
        Fleet::Tag { key, value } => {
            let (_, ssm, _) = aws().await?;
            instances::by_tag(&ssm, &key, &value).await
        }
        Fleet::Named(pattern) => {
            let (conf, ssm, _) = aws().await?;
            let found = instances::by_name_pattern(&conf, &ssm, &pattern).await?;
            for w in found.warnings(&pattern) {
                run.reporter.warn(&w);
            }
            run.reporter.note(&found.describe(&pattern));
            Ok(found.managed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_instance_gets_a_directory_of_its_own() {
        assert_eq!(
            instance_dir(Path::new("logs"), "i-0123"),
            PathBuf::from("logs/i-0123/")
        );
        assert_eq!(
            instance_dir(Path::new("logs/"), "i-0123").as_os_str(),
            "logs/i-0123/"
        );
    }
}
