//! Copies through S3 and Run Command. Uploads, to one instance or a fleet: the bundle is
//! uploaded once, each instance pulls it with a presigned GET (it needs no S3
//! permissions) and places it with the same receiver the stream transport uses, under
//! Run Command's own rate control. Downloads, from one instance: the receiver uploads
//! the listing and the files' bytes with a presigned PUT, ssmcp places them as a
//! session download would. The object is removed on every way out.

mod staging;

pub(crate) use staging::{locate, StagingObject};

use crate::aws;
use crate::aws::instances;
use crate::aws::run_command::{self, InFlight, Invocation, Script, Targets};
use crate::aws::target::Fleet;
use crate::cli::StagingArgs;
use crate::commands::fleet::{self, Outcome};
use crate::copy::transport::stream::{self, push_request};
use crate::copy::transport::{Closed, Download, Progress, Pull, Summary, Transport, Upload};
use crate::error::{Error, Flag, Kind, Result};
use crate::progress::Reporter;
use crate::remote::protocol::{self, Counted, Exported, PartPlan, Parts, PartsUploaded, Request};
use crate::remote::{run_command_script, sudo_refusal, RunAs, RunMode};
use aws_sdk_ssm::types::CommandInvocationStatus;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;

/// How long the presigned URL works. Instances start at most MaxConcurrency at a time,
/// so the last may start well after the first; the object is deleted when the run
/// ends, which ends the URL's use sooner.
const URL_LIFETIME: Duration = Duration::from_secs(60 * 60);
const RESULT_MARKER: &str = "\u{1e}SSMCP-RESULT ";
const TAIL: usize = 600;

/// A parsed fleet as Run Command targets; Name patterns are looked up now, and
/// matching instances Systems Manager does not manage are left out with a warning.
pub(crate) async fn fleet_targets(
    fleet: Fleet,
    conf: &aws_config::SdkConfig,
    ssm: &aws_sdk_ssm::Client,
    reporter: &Reporter,
) -> Result<Targets> {
    let label = fleet.describe();
    Ok(match fleet {
        Fleet::Instances(ids) => Targets::Instances { ids, label },
        Fleet::Tag { key, value } => Targets::Tag { key, value },
        Fleet::Named(pattern) => {
            let found = instances::by_name_pattern(conf, ssm, &pattern).await?;
            for w in found.warnings(&pattern) {
                reporter.warn(&w);
            }
            reporter.note(&found.describe(&pattern));
            Targets::Instances {
                label: format!("{} ({} instances)", label, found.managed.len()),
                ids: found.managed,
            }
        }
    })
}

/// How S3 copies stage and run, from the command line.
#[derive(Clone)]
pub struct S3Options {
    pub staging: StagingArgs,
    /// --sse-kms-key for the staged object.
    pub sse_kms_key: Option<String>,
    /// Run Command's rate control.
    pub max_concurrency: String,
    pub max_errors: String,
}

/// The S3 transport opened to its instances: the staging object (once the copy has
/// created it), the Run Command command under way, the spool an instance holds.
pub(crate) struct S3Transport {
    ssm: aws_sdk_ssm::Client,
    conf: aws_config::SdkConfig,
    targets: Targets,
    run_as: RunAs,
    options: S3Options,
    staging: Option<StagingObject>,
    command: InFlight,
    spool: Current,
    /// The command under way places an upload (as opposed to exporting a download).
    placing: bool,
}

impl S3Transport {
    pub(crate) fn new(
        ssm: aws_sdk_ssm::Client,
        conf: aws_config::SdkConfig,
        targets: Targets,
        run_as: RunAs,
        options: S3Options,
    ) -> S3Transport {
        S3Transport {
            ssm,
            conf,
            targets,
            run_as,
            options,
            staging: None,
            command: InFlight::default(),
            spool: Mutex::new(None),
            placing: false,
        }
    }

    /// The run's object, created (in the journal first) on first use.
    async fn staging(&mut self, reporter: &Reporter) -> Result<&StagingObject> {
        if self.staging.is_none() {
            self.staging = Some(staging(&self.conf, &self.options, reporter).await?);
        }
        self.staging
            .as_ref()
            .ok_or_else(|| Error::protocol("no staging object"))
    }

    fn script(&self, mode: RunMode, request: &impl Serialize) -> Result<String> {
        let line = serde_json::to_string(request).map_err(|e| Error::protocol(e.to_string()))?;
        Ok(run_command_script(&self.run_as, mode, &line))
    }

    fn command<'a>(&'a self, script: String, targets: &'a Targets) -> Script<'a> {
        Script {
            targets,
            comment: COMMENT,
            script,
            max_concurrency: Some(&self.options.max_concurrency),
            max_errors: Some(&self.options.max_errors),
        }
    }
}

const COMMENT: &str = concat!("ssmcp ", env!("CARGO_PKG_VERSION"), " copy");

#[async_trait::async_trait(?Send)]
impl Transport for S3Transport {
    /// The bundle is staged once; each instance pulls it through a presigned GET and
    /// places it with the receiver, under Run Command's rate control.
    async fn push(&mut self, job: Upload<'_>, reporter: &Reporter) -> Result<Summary> {
        reporter.plan(job.plan.files, job.plan.bytes);
        self.placing = true;
        let results = self.stage_and_run(&job, reporter).await?;
        fleet::report(&results, reporter);
        let failed: Vec<&Outcome> = results.iter().filter(|o| !o.ok).collect();
        if failed.is_empty() {
            let first = results.first();
            return Ok(Summary {
                files: first.map_or(0, |o| o.files),
                bytes: first.map_or(0, |o| o.bytes),
                ..Summary::default()
            });
        }
        Err(fleet::failure(&results, &failed))
    }

    /// The instance lists the sources and uploads them, with their bytes, through a
    /// presigned PUT; ssmcp reads the object and places it as a download over sessions
    /// would be placed (same verification, same commit).
    async fn pull(&mut self, job: &Download<'_>, reporter: &Reporter) -> Result<Summary> {
        // The instance's export spools the ranges uncompressed (receiver.py's `export`
        // reads without "compress"), so what comes back must be read as plain ranges.
        let pull = Pull {
            compress: false,
            ..job.pull
        };
        self.export_and_receive(&pull, reporter).await
    }

    /// After ^C, cancel the command first (so no instance starts on a vanishing object)
    /// and let it end before the object goes: an instance still uploading its export
    /// would otherwise put the object back after it was removed. A spool an instance
    /// still holds is dropped; the object is removed on every way out.
    async fn close(self: Box<Self>, interrupted: bool) -> Closed {
        let succeeded = interrupted && self.command.cancel(&self.ssm).await;
        if let Some(name) = forget(&self.spool) {
            self.discard_spool(&name).await;
        }
        let Some(staging) = &self.staging else {
            return Closed::default();
        };
        let left = staging.remove().await;
        Closed {
            staged_object_removed: Some(left.is_empty()),
            warnings: left,
            completed_anyway: succeeded && self.placing,
        }
    }
}

impl S3Transport {
    async fn export_and_receive(
        &mut self,
        pull: &Pull<'_>,
        reporter: &Reporter,
    ) -> Result<Summary> {
        let instance = self.targets.describe();
        let staging = self.staging(reporter).await?;
        reporter.note(&format!(
            "transport s3: {instance} uploads the files to s3://{}/{}",
            staging.bucket, staging.key
        ));
        let put_limit = put_limit()?;
        let (url, headers) = staging.presign_put(URL_LIFETIME).await?;
        let request = Request::List(protocol::List {
            export: Some(protocol::Export {
                url,
                headers,
                put_limit,
            }),
            ..stream::list_request(pull)
        });
        let answer: Exported = self
            .run_on_instance(RunMode::Export, &request, reporter)
            .await?;
        // Too big for one PUT: the instance kept its spool and now uploads it in parts.
        if let Some(spool) = &answer.spool {
            remember(&self.spool, spool);
            self.upload_spool_in_parts(spool, answer.bytes, put_limit, reporter)
                .await?;
            // The second command removed it.
            forget(&self.spool);
        }
        let staging = self.staging(reporter).await?;
        let mut body = tokio::io::BufReader::new(staging.read().await?);
        let (summary, warnings) = stream::receive_spooled(&mut body, pull, reporter).await?;
        for w in warnings {
            reporter.warn(&w);
        }
        Ok(summary)
    }

    /// Run the receiver in `mode` on the download's instance; its answer when it succeeded.
    async fn run_on_instance<T: DeserializeOwned>(
        &self,
        mode: RunMode,
        request: &impl Serialize,
        reporter: &Reporter,
    ) -> Result<T> {
        let command = self.command(self.script(mode, request)?, &self.targets);
        let command_id = self.command.send(&self.ssm, &command).await?;
        let results = self.wait(&command_id, reporter).await?;
        let failed: Vec<&Outcome> = results.iter().filter(|o| !o.ok).collect();
        if results.is_empty() {
            return Err(Error::protocol(
                "Run Command reported no invocation for the instance",
            ));
        }
        if !failed.is_empty() {
            return Err(fleet::failure(&results, &failed));
        }
        let answer = results.into_iter().next().and_then(|o| o.answer);
        protocol::answer_of(answer.unwrap_or_default())
    }

    /// The second command of a big download: S3 takes the spool in parts, through part
    /// URLs the instance fetches from the run's own key (a list of URLs would make the
    /// command too long), and ssmcp completes the upload from the ETags the instance saw.
    async fn upload_spool_in_parts(
        &mut self,
        spool: &str,
        size: u64,
        put_limit: u64,
        reporter: &Reporter,
    ) -> Result<()> {
        let (part_size, parts) = cut_in_parts(size, put_limit)?;
        reporter.note(&format!(
            "transport s3: {size} bytes is more than one PUT takes; the instance uploads {parts} parts of up to {part_size} bytes"
        ));
        let staging = self.staging(reporter).await?;
        let upload_id = staging.start_presigned_parts().await?;
        let mut urls = Vec::new();
        let mut headers = Vec::new();
        for number in 1..=parts {
            let number = i32::try_from(number).map_err(|_| Error::protocol("too many parts"))?;
            let (url, h) = staging
                .presign_part(&upload_id, number, URL_LIFETIME)
                .await?;
            urls.push(url);
            headers = h;
        }
        let plan = PartPlan {
            part_size,
            urls,
            headers,
        };
        let plan = serde_json::to_vec(&plan).map_err(|e| Error::protocol(e.to_string()))?;
        staging.put_small(plan).await?;
        let request = Parts {
            spool: spool.to_string(),
            url: Some(staging.presign_get(URL_LIFETIME).await?),
        };
        let PartsUploaded { etags } = self
            .run_on_instance(RunMode::Parts, &request, reporter)
            .await?;
        if etags.len() as u64 != parts || etags.iter().any(String::is_empty) {
            return Err(Error::protocol(format!(
                "the instance reported {} part ETags for {parts} parts",
                etags.len()
            ))
            .hint(format!(
                "nothing was placed; retry, or download over sessions (leave out {} s3)",
                Flag::Transport
            )));
        }
        self.staging(reporter)
            .await?
            .complete_presigned_parts(&upload_id, &etags)
            .await
    }

    /// Best effort, without waiting: have the instance remove a spool no command will
    /// upload now (a receiver that cannot run leaves it to the next export's reaping).
    async fn discard_spool(&self, spool: &str) {
        let request = Parts {
            spool: spool.to_string(),
            url: None,
        };
        let Ok(script) = self.script(RunMode::Parts, &request) else {
            return;
        };
        let command = self.command(script, &self.targets);
        let unwatched = InFlight::default();
        let _ = unwatched.send(&self.ssm, &command).await;
    }

    async fn stage_and_run(
        &mut self,
        job: &Upload<'_>,
        reporter: &Reporter,
    ) -> Result<Vec<Outcome>> {
        let targets = self.targets.describe();
        let staging = self.staging(reporter).await?;
        reporter.note(&format!(
            "transport s3: staging the bundle in s3://{}/{} ({targets})",
            staging.bucket, staging.key,
        ));
        let staged = staging
            .upload(&job.plan, job.compress, job.limit, reporter)
            .await?;
        reporter.note(&format!(
            "staged {} bytes; the instances pull it now",
            staged.bytes
        ));
        let url = staging.presign_get(URL_LIFETIME).await?;
        let request = Request::Push(protocol::Push {
            url: Some(url),
            ..push_request(&job.plan, job.dest, &job.place, job.compress, &[], false)
        });
        let command = self.command(self.script(RunMode::Pull, &request)?, &self.targets);
        let command_id = self.command.send(&self.ssm, &command).await?;
        self.wait(&command_id, reporter).await
    }

    /// Follow the command, reporting each instance as it finishes; outcomes by instance.
    async fn wait(&self, command_id: &str, reporter: &Reporter) -> Result<Vec<Outcome>> {
        let mut outcomes = Vec::new();
        run_command::wait(&self.ssm, command_id, |inv| {
            let outcome = outcome_of(inv, &self.run_as);
            match &outcome.failure {
                None => reporter.note(&format!(
                    "{}: finished ({} files, {} bytes)",
                    inv.instance, outcome.files, outcome.bytes
                )),
                Some(e) => reporter.note(&format!("{}: failed: {}", inv.instance, e.message)),
            }
            outcomes.push(outcome);
        })
        .await?;
        outcomes.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(outcomes)
    }
}

/// S3's ceiling for one PUT. `SSMCP_S3_PUT_LIMIT` (bytes) lowers it, for S3-compatible
/// stores with a smaller one, and for tests that reach it with small files.
fn put_limit() -> Result<u64> {
    const S3_MAX_PUT: u64 = 5 << 30;
    match std::env::var("SSMCP_S3_PUT_LIMIT") {
        Err(_) => Ok(S3_MAX_PUT),
        Ok(v) => match v.parse::<u64>() {
            Ok(n) if (MIN_PART..=S3_MAX_PUT).contains(&n) => Ok(n),
            _ => Err(Error::usage(format!(
                "SSMCP_S3_PUT_LIMIT={v} is not a size in bytes between 5 MiB and 5 GiB"
            ))),
        },
    }
}

/// S3's smallest part but the last, and its most parts per upload.
const MIN_PART: u64 = 5 << 20;
const MAX_PARTS: u64 = 10_000;

/// How a spool of `size` bytes is cut: (part size, parts). A few big parts (the
/// instance sends four at a time), each at most `put_limit`, on MiB boundaries.
fn cut_in_parts(size: u64, put_limit: u64) -> Result<(u64, u64)> {
    const MIB: u64 = 1 << 20;
    let wanted = size.div_ceil(4).div_ceil(MIB) * MIB;
    let part = wanted.clamp(MIN_PART, put_limit.max(MIN_PART));
    let parts = size.div_ceil(part).max(1);
    if parts > MAX_PARTS {
        return Err(Error::usage(format!(
            "{size} bytes is more than S3 takes in one multipart upload ({MAX_PARTS} parts of {part} bytes)"
        ))
        .hint(format!(
            "download over sessions instead (leave out {} s3)",
            Flag::Transport
        )));
    }
    Ok((part, parts))
}

/// The spool an instance holds between the two commands of a big download, where
/// cleanup after a failure or an interrupt can find it.
type Current = Mutex<Option<String>>;

fn remember(current: &Current, what: &str) {
    *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(what.to_string());
}

fn forget(current: &Current) -> Option<String> {
    current.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// The run's object in the bucket, noted in the journal before anything exists.
async fn staging(
    conf: &aws_config::SdkConfig,
    options: &S3Options,
    reporter: &Reporter,
) -> Result<StagingObject> {
    let where_ = &options.staging;
    let bucket = where_.bucket.clone().ok_or_else(|| {
        Error::usage("the s3 transport needs a bucket to stage the upload in").hint(format!(
            "pass {} NAME or set SSMCP_BUCKET; ssmcp removes what it puts there",
            Flag::Bucket
        ))
    })?;
    let region = match &where_.bucket_region {
        Some(r) => Some(r.clone()),
        // Only the region matters here: HeadBucket needs s3:ListBucket, copies do not.
        None => locate(conf, &bucket, None).await.region,
    };
    let ours = conf.region().map(|r| r.to_string());
    if let (Some(theirs), Some(ours)) = (&region, &ours) {
        if theirs != ours && where_.bucket_region.is_none() {
            reporter.note(&format!(
                "the bucket {bucket} is in {theirs}: S3 requests and presigned URLs go there"
            ));
        }
    }
    let s3 = aws::s3_client(conf, region.as_deref());
    let key = format!(
        "{}ssmcp-{}.bundle",
        where_.prefix,
        uuid::Uuid::new_v4().simple()
    );
    Ok(StagingObject::journaled(s3, &bucket, &key, region)?
        .encrypt_with(options.sse_kms_key.clone()))
}

/// What one instance's invocation says about its copy: the receiver's result line, or
/// why there is none.
fn outcome_of(inv: &Invocation, run_as: &RunAs) -> Outcome {
    let instance = inv.instance.clone();
    let result: Option<Value> = inv
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_MARKER))
        .and_then(|j| serde_json::from_str(j).ok());
    match result {
        Some(r) => match protocol::answer_of::<Counted>(r.clone()) {
            Ok(Counted { files, bytes }) => Outcome {
                answer: Some(r),
                ..Outcome::done(instance, files, bytes)
            },
            Err(e) => Outcome::failed(instance, e),
        },
        None => Outcome::failed(
            instance,
            sudo_refusal(run_as, &inv.stderr).unwrap_or_else(|| {
                no_result(&inv.status, &inv.details, inv.response_code, &inv.stderr)
            }),
        ),
    }
}

/// An invocation that ended without the receiver's result line.
fn no_result(status: &CommandInvocationStatus, details: &str, code: i32, stderr: &str) -> Error {
    match (status, details) {
        (_, "Undeliverable") => Error::new(
            Kind::Target,
            "the instance is not connected to Systems Manager (Undeliverable)",
        )
        .hint("check that it runs and shows as Online (ssmcp doctor TARGET)"),
        (CommandInvocationStatus::Cancelled, _) => Error::new(
            Kind::Transfer,
            format!("not started: more instances failed than {} allows, so Run Command stopped starting new ones", Flag::MaxErrors),
        ),
        (CommandInvocationStatus::TimedOut, _) => {
            Error::new(Kind::Transfer, "the copy timed out on the instance")
        }
        _ if code == 127 => Error::new(
            Kind::Target,
            "the instance has no python3, which the s3 transport needs",
        )
        .hint(format!(
            "install python3 (3.6 or newer) on the instance, or copy with {} pty",
            Flag::Transport
        )),
        _ => Error::new(
            Kind::Transfer,
            format!(
                "the copy ended with exit code {code} ({details}){}",
                tail(stderr)
            ),
        ),
    }
}

/// The end of the command's error output, for the report.
fn tail(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        return String::new();
    }
    let cut = t.len().saturating_sub(TAIL);
    let start = (cut..t.len()).find(|&i| t.is_char_boundary(i)).unwrap_or(0);
    format!(": {}", &t[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spools_are_cut_in_a_few_parts_within_s3s_limits() {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        assert_eq!(cut_in_parts(6 * GIB, 5 * GIB).unwrap(), (1536 * MIB, 4));
        assert_eq!(cut_in_parts(100 * GIB, 5 * GIB).unwrap(), (5 * GIB, 20));
        assert_eq!(cut_in_parts(20 * MIB, 6 * MIB).unwrap(), (5 * MIB, 4));
        assert_eq!(cut_in_parts(7 * MIB, 6 * MIB).unwrap(), (5 * MIB, 2));
        assert!(cut_in_parts(60_000 * GIB, 5 * GIB).is_err());
    }
}
