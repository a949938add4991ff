//! `ssmcp gc`: remove what S3 copies left in their buckets when they were killed before
//! their own cleanup (SIGKILL, a crash, a lost machine), as noted in ssmcp's journal.
//! Entries of runs still alive are left alone.

use super::load_aws;
use crate::aws;
use crate::aws::journal::{self, EntryFile};
use crate::cli::{GcArgs, Global};
use crate::copy::transport::s3::StagingObject;
use crate::error::{Error, Kind, Result};
use crate::progress::{Progress, Reporter};

pub async fn run(global: &Global, args: &GcArgs) -> Result<i32> {
    let reporter = Reporter::plain(global.quiet, global.verbose > 0);
    let pending = journal::pending();
    if pending.is_empty() {
        reporter.info("nothing to clean up");
        return Ok(0);
    }
    let (conf, _, _) = load_aws(global, global.region.clone(), global.profile.clone()).await?;
    let mut left = 0;
    for (path, entry) in pending {
        let entry = match entry {
            Ok(e) => e,
            Err(why) => {
                reporter.warn(&format!(
                    "cannot read the journal entry {}: {why}; look at it and remove it by hand",
                    path.display()
                ));
                left += 1;
                continue;
            }
        };
        let what = format!(
            "s3://{}/{}{}",
            entry.bucket,
            entry.key,
            if entry.upload_id.is_some() {
                " (unfinished multipart upload)"
            } else {
                ""
            }
        );
        if entry.owner_alive() {
            reporter.info(&format!(
                "{what} belongs to a copy still running (pid {}); left alone",
                entry.pid
            ));
            continue;
        }
        if args.dry_run {
            reporter.out(&format!("would remove {what}"));
            continue;
        }
        let s3 = aws::s3_client(&conf, entry.region.as_deref());
        let staging = StagingObject::adopt(s3, EntryFile::adopt(path, entry));
        staging.abort_listed_uploads().await;
        let warnings = staging.remove().await;
        if warnings.is_empty() {
            reporter.out(&format!("removed {what}"));
        } else {
            for w in warnings {
                reporter.warn(&w);
            }
            left += 1;
        }
    }
    if left > 0 {
        return Err(Error::new(
            Kind::Transfer,
            format!("{left} journal entr{} could not be cleaned up", if left == 1 { "y" } else { "ies" }),
        )
        .hint("they stay in the journal; fix the cause above (credentials, permissions) and run ssmcp gc again"));
    }
    Ok(0)
}
