//! The copy engine: a resolved request (request.rs) driven through a transport. One
//! upload or download chooses its transport in one place (with the reason when the
//! user did not name it), opens it, runs it against the command's cancel token, and
//! closes it on every way out; downloads from several instances get a transport per
//! instance (gather.rs). Nothing here knows which transport it drives.

pub mod bundle;
mod claims;
mod drive;
mod gather;
pub mod leftovers;
pub(crate) mod local_dest;
pub(crate) mod local_source;
#[cfg(test)]
mod placement_table;
pub(crate) mod request;
pub(crate) mod transport;

pub use drive::{interrupted, Run};

use crate::aws::context::{load_aws, Context};
use crate::error::Result;

use crate::aws::target::Target;
use crate::copy::transport::s3::{self, S3Transport};
use crate::copy::transport::{Download, Pull, Summary, Transport, Upload};
use crate::progress::{Progress, Reporter};
use drive::{drive, open, Job};
use request::{Direction, TransportKind, Where};
use std::path::Path;

/// Copy as `run.req` says.
pub async fn copy(run: Run<'_>) -> Result<Summary> {
    match &run.req.direction {
        Direction::Upload { sources, dest } => upload(run, sources, dest).await,
        Direction::Download { sources, dest } => match &run.req.at {
            Where::One(target) => download(run, target.clone(), sources, dest).await,
            Where::Fleet(fleet) => {
                // The instances' own progress would fight over one bar; the table
                // reports them.
                let silent = Reporter::new(false, true, false);
                let each = Run {
                    reporter: if run.req.dry_run {
                        run.reporter
                    } else {
                        &silent
                    },
                    ..run
                };
                let one = |id: String, into: std::path::PathBuf| async move {
                    download(each, Target::parse(&id)?, sources, &into).await
                };
                gather::download(run, fleet.clone(), dest, one).await
            }
        },
    }
}

async fn upload(run: Run<'_>, sources: &[std::path::PathBuf], dest: &[u8]) -> Result<Summary> {
    let req = run.req;
    let plan = local_source::local(
        sources,
        &local_source::Options {
            recursive: req.recursive,
            exclude: &req.exclude_patterns,
        },
    )?;
    if req.dry_run {
        let records = plan.entries.iter().map(|e| &e.record);
        let (files, bytes) = run
            .reporter
            .dry_run(records, &String::from_utf8_lossy(dest));
        return Ok(Summary {
            files,
            bytes,
            ..Summary::default()
        });
    }
    if let Some(asked) = req.asked() {
        req.check(asked)?;
    }
    let (choice, why) = req.choose(plan.bytes);
    let warnings = plan.warnings.clone();
    let job = Upload {
        plan,
        dest,
        place: req.place.clone(),
        limit: req.limit,
        compress: req.compress,
        sync: req.sync,
        delete: req.delete,
    };
    match &req.at {
        Where::Fleet(fleet) => {
            for w in &warnings {
                run.reporter.warn(w);
            }
            req.check(TransportKind::S3)?;
            let g = run.global;
            let (conf, ssm, _) = load_aws(g, g.region.clone(), g.profile.clone()).await?;
            let targets = s3::fleet_targets(fleet.clone(), &conf, &ssm, run.reporter).await?;
            let transport =
                S3Transport::new(ssm, conf, targets, req.run_as.clone(), req.s3.clone());
            let opened = async { Ok(Box::new(transport) as Box<dyn Transport>) };
            drive(run, opened, Job::Push(job)).await
        }
        Where::One(target) => {
            let ctx = Context::of(run.global, run.sessions, target.clone()).await?;
            for w in &warnings {
                run.reporter.warn(w);
            }
            if let Some(why) = why {
                run.reporter.note(&why);
            }
            drive(run, open(&ctx, run, choice), Job::Push(job)).await
        }
    }
}

/// A download from one instance.
async fn download(
    run: Run<'_>,
    target: Target,
    sources: &[Vec<u8>],
    dest: &Path,
) -> Result<Summary> {
    let req = run.req;
    if let Some(asked) = req.asked() {
        req.check(asked)?;
    }
    let ctx = Context::of(run.global, run.sessions, target).await?;
    let (choice, _) = req.choose(0);
    let job = Download {
        pull: Pull {
            sources,
            recursive: req.recursive,
            dest,
            preserve: req.place.preserve,
            compress: req.compress,
        },
        exclude: &req.exclude,
        dry_run: req.dry_run,
        sessions: req.sessions,
    };
    drive(run, open(&ctx, run, choice), Job::Pull(job)).await
}
