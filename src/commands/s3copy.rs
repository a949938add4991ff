//! Copies through S3 and Run Command. Uploads, to one instance or a fleet: the bundle is
//! uploaded once, each instance pulls it with a presigned GET (it needs no S3
//! permissions) and places it with the same receiver the stream transport uses, under
//! Run Command's own rate control. Downloads, from one instance: the receiver uploads
//! the listing and the files' bytes with a presigned PUT, ssmcp places them as a
//! session download would. The object is removed on every way out.

use super::fleet::{self, Outcome};
use super::Signals;
use crate::aws;
use crate::aws_error::from_sdk;
use crate::cli::CopyArgs;
use crate::error::{Error, Kind, Result};
use crate::instances;
use crate::plan::Plan;
use crate::progress::Reporter;
use crate::remote::{run_command_script, sudo_refusal, RunAs, RunMode};
use crate::target::Fleet;
use crate::transport::s3::{self, Staging};
use crate::transport::stream::{self, push_request, Pull};
use crate::transport::{remote_failure, PlaceOptions, Progress, Summary};
use aws_sdk_ssm::types::{CommandInvocationStatus, CommandStatus, Target as RunTarget};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// How long the presigned URL works. Instances start at most MaxConcurrency at a time,
/// so the last may start well after the first; the object is deleted when the run
/// ends, which ends the URL's use sooner.
const URL_LIFETIME: Duration = Duration::from_secs(60 * 60);
const RESULT_MARKER: &str = "\u{1e}SSMCP-RESULT ";
const TAIL: usize = 600;

/// Where the command goes, in the terms Run Command takes.
pub enum Destination {
    /// Instance ids (at most 50); `label` says how they were chosen.
    Instances { ids: Vec<String>, label: String },
    /// Every instance with this tag, found by Run Command itself.
    Tag { key: String, value: String },
}

impl Destination {
    pub fn one(id: &str) -> Destination {
        Destination::Instances {
            ids: vec![id.to_string()],
            label: id.to_string(),
        }
    }

    /// A parsed fleet as Run Command targets; Name patterns are looked up now, and
    /// matching instances Systems Manager does not manage are left out with a warning.
    pub async fn of_fleet(
        fleet: Fleet,
        conf: &aws_config::SdkConfig,
        ssm: &aws_sdk_ssm::Client,
        reporter: &Reporter,
        show_warnings: bool,
    ) -> Result<Destination> {
        let label = fleet.describe();
        Ok(match fleet {
            Fleet::Instances(ids) => Destination::Instances { ids, label },
            Fleet::Tag { key, value } => Destination::Tag { key, value },
            Fleet::Named(pattern) => {
                let found = instances::by_name_pattern(conf, ssm, &pattern).await?;
                for w in found.warnings(&pattern) {
                    warn(reporter, show_warnings, &w);
                }
                reporter.note(&found.describe(&pattern));
                Destination::Instances {
                    label: format!("{} ({} instances)", label, found.managed.len()),
                    ids: found.managed,
                }
            }
        })
    }

    fn describe(&self) -> String {
        match self {
            Destination::Instances { label, .. } => label.clone(),
            Destination::Tag { key, value } => format!("the instances tagged {key}={value}"),
        }
    }
}

pub struct Job<'a> {
    pub ssm: &'a aws_sdk_ssm::Client,
    pub conf: &'a aws_config::SdkConfig,
    pub destination: Destination,
    pub run_as: &'a RunAs,
    pub plan: &'a Plan,
    pub dest: &'a [u8],
    pub args: &'a CopyArgs,
    pub quiet: bool,
}

pub struct DownloadJob<'a> {
    pub ssm: &'a aws_sdk_ssm::Client,
    pub conf: &'a aws_config::SdkConfig,
    pub instance: String,
    pub run_as: &'a RunAs,
    pub pull: Pull<'a>,
    pub args: &'a CopyArgs,
    pub quiet: bool,
}

/// A download through S3: the instance lists the sources and uploads them, with their
/// bytes, through a presigned PUT; ssmcp reads the object and places it as a download
/// over sessions would be placed (same verification, same commit).
pub async fn download(
    job: DownloadJob<'_>,
    signals: &mut Signals,
    reporter: &Reporter,
) -> Result<Summary> {
    if !job.args.exclude.is_empty() || job.args.dry_run {
        return Err(Error::usage(
            "--exclude and --dry-run are not supported for downloads through S3",
        )
        .hint("leave out --transport s3; downloads over sessions honour both"));
    }
    let staging = staging(job.conf, job.args, reporter).await?;
    let command = InFlight::default();
    let spool = Mutex::new(None);
    let work = export_and_receive(&job, &staging, &command, &spool, reporter);
    let show = !job.quiet && !job.args.json;
    let outcome = guarded(job.ssm, &staging, &command, work, signals, reporter, show).await;
    // Failed or interrupted between the two commands (or during the second, which
    // removes the spool itself unless it was cancelled first): the instance drops it.
    if let (Some(name), Err(_)) = (forget(&spool), &outcome) {
        discard_spool(&job, &name).await;
    }
    outcome
}

async fn export_and_receive(
    job: &DownloadJob<'_>,
    staging: &Staging,
    command: &InFlight,
    kept_spool: &Current,
    reporter: &Reporter,
) -> Result<Summary> {
    reporter.note(&format!(
        "transport s3: {} uploads the files to s3://{}/{}",
        job.instance, staging.bucket, staging.key
    ));
    let put_limit = put_limit()?;
    let mut request = stream::list_request(&job.pull);
    let (url, headers) = staging.presign_put(URL_LIFETIME).await?;
    request["url"] = json!(url);
    request["headers"] = json!(headers);
    request["put_limit"] = json!(put_limit);
    let answer = run_on_instance(job, RunMode::Export, &request, command, reporter).await?;
    // Too big for one PUT: the instance kept its spool and now uploads it in parts.
    if let Some(spool) = answer["spool"].as_str() {
        remember(kept_spool, spool);
        let size = answer["bytes"].as_u64().unwrap_or(0);
        upload_spool_in_parts(job, staging, spool, size, put_limit, command, reporter).await?;
        // The second command removed it.
        forget(kept_spool);
    }
    let mut body = tokio::io::BufReader::new(staging.read().await?);
    let (summary, warnings) = stream::receive_spooled(&mut body, &job.pull, reporter).await?;
    for w in warnings {
        warn(reporter, !job.quiet && !job.args.json, &w);
    }
    Ok(summary)
}

/// Run the receiver in `mode` on the download's instance; its answer when it succeeded.
async fn run_on_instance(
    job: &DownloadJob<'_>,
    mode: RunMode,
    request: &Value,
    command: &InFlight,
    reporter: &Reporter,
) -> Result<Value> {
    let script = run_command_script(job.run_as, mode, &request.to_string());
    let command_id = send(
        job.ssm,
        &Destination::one(&job.instance),
        job.args,
        &script,
        command,
    )
    .await?;
    let results = wait(job.ssm, &command_id, job.run_as, reporter).await?;
    let failed: Vec<&Outcome> = results.iter().filter(|o| !o.ok).collect();
    if results.is_empty() {
        return Err(Error::protocol(
            "Run Command reported no invocation for the instance",
        ));
    }
    if !failed.is_empty() {
        return Err(fleet::failure(&results, &failed));
    }
    Ok(results
        .into_iter()
        .next()
        .and_then(|o| o.answer)
        .unwrap_or_default())
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
        .hint("download over sessions instead (leave out --transport s3)"));
    }
    Ok((part, parts))
}

/// The second command of a big download: S3 takes the spool in parts, through part
/// URLs the instance fetches from the run's own key (a list of URLs would make the
/// command too long), and ssmcp completes the upload from the ETags the instance saw.
async fn upload_spool_in_parts(
    job: &DownloadJob<'_>,
    staging: &Staging,
    spool: &str,
    size: u64,
    put_limit: u64,
    command: &InFlight,
    reporter: &Reporter,
) -> Result<()> {
    let (part_size, parts) = cut_in_parts(size, put_limit)?;
    reporter.note(&format!(
        "transport s3: {size} bytes is more than one PUT takes; the instance uploads {parts} parts of up to {part_size} bytes"
    ));
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
    let plan = json!({"part_size": part_size, "urls": urls, "headers": headers});
    staging.put_small(plan.to_string().into_bytes()).await?;
    let request = json!({"spool": spool, "url": staging.presign_get(URL_LIFETIME).await?});
    let answer = run_on_instance(job, RunMode::Parts, &request, command, reporter).await?;
    let etags: Vec<String> = answer["etags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    if etags.len() as u64 != parts || etags.iter().any(String::is_empty) {
        return Err(Error::protocol(format!(
            "the instance reported {} part ETags for {parts} parts",
            etags.len()
        ))
        .hint("nothing was placed; retry, or download over sessions (leave out --transport s3)"));
    }
    staging.complete_presigned_parts(&upload_id, &etags).await
}

/// Best effort, without waiting: have the instance remove a spool no command will
/// upload now (a receiver that cannot run leaves it to the next export's reaping).
async fn discard_spool(job: &DownloadJob<'_>, spool: &str) {
    let request = json!({ "spool": spool });
    let script = run_command_script(job.run_as, RunMode::Parts, &request.to_string());
    let unwatched = InFlight::default();
    let _ = send(
        job.ssm,
        &Destination::one(&job.instance),
        job.args,
        &script,
        &unwatched,
    )
    .await;
}

/// What is under way, where cleanup after an interrupt can find it: the Run Command
/// command to cancel, the spool an instance holds.
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
    args: &CopyArgs,
    reporter: &Reporter,
) -> Result<Staging> {
    let where_ = &args.staging;
    let bucket = where_.bucket.clone().ok_or_else(|| {
        Error::usage("the s3 transport needs a bucket to stage the upload in")
            .hint("pass --bucket NAME or set SSMCP_BUCKET; ssmcp removes what it puts there")
    })?;
    let region = match &where_.bucket_region {
        Some(r) => Some(r.clone()),
        // Only the region matters here: HeadBucket needs s3:ListBucket, copies do not.
        None => s3::locate(conf, &bucket, None).await.region,
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
    Ok(Staging::journaled(s3, &bucket, &key, region)?.encrypt_with(args.sse_kms_key.clone()))
}

/// --sync and --delete compare with the destination, which needs a session to it.
fn no_session_only_flags(args: &CopyArgs) -> Result<()> {
    if args.sync || args.delete {
        return Err(Error::usage(
            "--sync and --delete need a session to the instance and do not work through S3",
        )
        .hint("copy to one instance with --transport stream, or leave out --sync/--delete"));
    }
    Ok(())
}

/// Run `work` until it ends or ^C; then cancel the command on ^C (so no instance starts
/// on a vanishing object) and remove the object on every way out.
async fn guarded<T>(
    ssm: &aws_sdk_ssm::Client,
    staging: &Staging,
    command: &InFlight,
    work: impl std::future::Future<Output = Result<T>>,
    signals: &mut Signals,
    reporter: &Reporter,
    show_warnings: bool,
) -> Result<T> {
    let outcome = tokio::select! {
        biased;
        r = work => r,
        _ = signals.recv() => Err(Error::new(Kind::Interrupted, "interrupted")),
    };
    if let Err(e) = &outcome {
        if e.kind == Kind::Interrupted {
            // Cancel the command (so no instance starts on a vanishing object) and let
            // it end before the object goes: an instance still uploading its export
            // would otherwise put the object back after it was removed.
            if let Some(id) = command.settle().await {
                let _ = ssm.cancel_command().command_id(&id).send().await;
                let over = async {
                    while !command_over(ssm, &id).await.unwrap_or(true) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                if tokio::time::timeout(CANCEL_WAIT, over).await.is_err() {
                    tracing::debug!("command {id} still running after it was cancelled");
                }
            }
        }
    }
    let left = staging.remove().await;
    for w in &left {
        warn(reporter, show_warnings, w);
    }
    match outcome {
        // Say only what is true: the object is gone only when removing it worked.
        Err(e) if e.kind == Kind::Interrupted && left.is_empty() => Err(Error::new(
            Kind::Interrupted,
            "interrupted; the staged object was removed and nothing partial was left in place",
        )),
        Err(e) if e.kind == Kind::Interrupted => Err(Error::new(
            Kind::Interrupted,
            "interrupted; nothing partial was left in place, but the staging bucket still holds what the warnings above name",
        )
        .hint("run `ssmcp gc` to remove it")),
        other => other,
    }
}

/// A warning as a note event, and on stderr unless --json or -q.
fn warn(reporter: &Reporter, on_stderr: bool, w: &str) {
    reporter.note(&format!("warning: {w}"));
    if on_stderr {
        eprintln!("ssmcp: warning: {w}");
    }
}

pub async fn upload(job: Job<'_>, signals: &mut Signals, reporter: &Reporter) -> Result<Summary> {
    no_session_only_flags(job.args)?;
    let staging = staging(job.conf, job.args, reporter).await?;
    reporter.plan(job.plan.files, job.plan.bytes);
    // The command under way, where an interrupt can find it.
    let command = InFlight::default();
    let work = stage_and_run(&job, &staging, &command, reporter);
    let show = !job.quiet && !job.args.json;
    let results = guarded(job.ssm, &staging, &command, work, signals, reporter, show).await?;
    fleet::report(&results, reporter, job.args.json || job.quiet);
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

async fn stage_and_run(
    job: &Job<'_>,
    staging: &Staging,
    command: &InFlight,
    reporter: &Reporter,
) -> Result<Vec<Outcome>> {
    reporter.note(&format!(
        "transport s3: staging the bundle in s3://{}/{} ({})",
        staging.bucket,
        staging.key,
        job.destination.describe()
    ));
    let staged = staging
        .upload(job.plan, job.args.compress, limit(job.args), reporter)
        .await?;
    reporter.note(&format!(
        "staged {} bytes; the instances pull it now",
        staged.bytes
    ));
    let url = staging.presign_get(URL_LIFETIME).await?;
    let place = PlaceOptions {
        preserve: job.args.preserve,
        atomic: job.args.atomic,
    };
    let mut request = push_request(job.plan, job.dest, &place, job.args.compress);
    request["url"] = json!(url);
    let script = run_command_script(job.run_as, RunMode::Pull, &request.to_string());
    let command_id = send(job.ssm, &job.destination, job.args, &script, command).await?;
    wait(job.ssm, &command_id, job.run_as, reporter).await
}

/// How long cleanup after ^C waits for a cancelled command to end.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// The Run Command command under way, where cleanup after an interrupt finds it, even
/// while SendCommand is still in flight: the call runs as its own task, which notes the
/// id whether or not the copy that sent it is still waiting.
#[derive(Default)]
struct InFlight {
    id: std::sync::Arc<Mutex<Option<String>>>,
    sending: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl InFlight {
    /// The command's id once any SendCommand in flight has answered (bounded).
    async fn settle(&self) -> Option<String> {
        let sending = self
            .sending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = sending {
            let _ = tokio::time::timeout(CANCEL_WAIT, task).await;
        }
        self.id.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

async fn send(
    ssm: &aws_sdk_ssm::Client,
    destination: &Destination,
    args: &CopyArgs,
    script: &str,
    inflight: &InFlight,
) -> Result<String> {
    let mut req = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .comment(format!("ssmcp {} copy", env!("CARGO_PKG_VERSION")))
        .parameters("commands", vec![script.to_string()])
        .max_concurrency(&args.max_concurrency)
        .max_errors(&args.max_errors);
    req = match destination {
        Destination::Instances { ids, .. } => req.set_instance_ids(Some(ids.clone())),
        Destination::Tag { key, value } => req.targets(
            RunTarget::builder()
                .key(format!("tag:{key}"))
                .values(value)
                .build(),
        ),
    };
    let (answer, answered) = tokio::sync::oneshot::channel();
    let slot = inflight.id.clone();
    let task = tokio::spawn(async move {
        let sent = req
            .send()
            .await
            .map_err(|e| from_sdk("SendCommand", e))
            .and_then(|out| {
                out.command()
                    .and_then(|c| c.command_id())
                    .map(str::to_string)
                    .ok_or_else(|| Error::protocol("SendCommand returned no command id"))
            });
        if let Ok(id) = &sent {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
        }
        let _ = answer.send(sent);
    });
    *inflight.sending.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    answered
        .await
        .map_err(|_| Error::protocol("the SendCommand call was abandoned"))?
}

/// Poll until the command is over, reporting each instance as it finishes.
async fn wait(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
    run_as: &RunAs,
    reporter: &Reporter,
) -> Result<Vec<Outcome>> {
    let mut finished: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut pause = Duration::from_millis(200);
    loop {
        let over = command_over(ssm, command_id).await?;
        for (instance, status) in invocations(ssm, command_id).await? {
            if finished.contains_key(&instance) || !invocation_over(&status) {
                continue;
            }
            let outcome = outcome_of(ssm, command_id, &instance, &status, run_as).await?;
            match &outcome.failure {
                None => reporter.note(&format!(
                    "{instance}: finished ({} files, {} bytes)",
                    outcome.files, outcome.bytes
                )),
                Some(e) => reporter.note(&format!("{instance}: failed: {}", e.message)),
            }
            finished.insert(instance, outcome);
        }
        if over {
            return Ok(finished.into_values().collect());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(Duration::from_secs(3));
    }
}

async fn command_over(ssm: &aws_sdk_ssm::Client, command_id: &str) -> Result<bool> {
    let out = ssm
        .list_commands()
        .command_id(command_id)
        .send()
        .await
        .map_err(|e| from_sdk("ListCommands", e))?;
    Ok(out.commands().iter().any(|c| {
        !matches!(
            c.status(),
            Some(CommandStatus::Pending | CommandStatus::InProgress | CommandStatus::Cancelling)
                | None
        )
    }))
}

async fn invocations(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
) -> Result<Vec<(String, CommandInvocationStatus)>> {
    let mut out = Vec::new();
    let mut pages = ssm
        .list_command_invocations()
        .command_id(command_id)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| from_sdk("ListCommandInvocations", e))?;
        for inv in page.command_invocations() {
            if let (Some(id), Some(status)) = (inv.instance_id(), inv.status()) {
                out.push((id.to_string(), status.clone()));
            }
        }
    }
    Ok(out)
}

fn invocation_over(status: &CommandInvocationStatus) -> bool {
    !matches!(
        status,
        CommandInvocationStatus::Pending
            | CommandInvocationStatus::InProgress
            | CommandInvocationStatus::Delayed
            | CommandInvocationStatus::Cancelling
    )
}

async fn outcome_of(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
    instance: &str,
    status: &CommandInvocationStatus,
    run_as: &RunAs,
) -> Result<Outcome> {
    let inv = ssm
        .get_command_invocation()
        .command_id(command_id)
        .instance_id(instance)
        .send()
        .await
        .map_err(|e| from_sdk("GetCommandInvocation", e))?;
    let stdout = inv.standard_output_content().unwrap_or_default();
    let stderr = inv.standard_error_content().unwrap_or_default();
    let details = inv.status_details().unwrap_or_default();
    let instance = instance.to_string();
    let result: Option<Value> = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_MARKER))
        .and_then(|j| serde_json::from_str(j).ok());
    Ok(match result {
        Some(r) if r["ok"].as_bool() == Some(true) => {
            let files = r["files"].as_u64().unwrap_or(0);
            let bytes = r["bytes"].as_u64().unwrap_or(0);
            Outcome {
                answer: Some(r),
                ..Outcome::done(instance, files, bytes)
            }
        }
        Some(r) => {
            let class = r["class"].as_str().unwrap_or("protocol");
            let message = r["error"].as_str().unwrap_or("failed");
            Outcome::failed(instance, receiver_failure(class, message))
        }
        None => Outcome::failed(
            instance,
            sudo_refusal(run_as, stderr)
                .unwrap_or_else(|| no_result(status, details, inv.response_code(), stderr)),
        ),
    })
}

fn receiver_failure(class: &str, message: &str) -> Error {
    if class == "fetch" {
        return Error::new(Kind::Target, format!("on the instance: {message}")).hint(
            "the instance must reach S3 over HTTPS (a NAT gateway, or a VPC gateway endpoint for S3)",
        );
    }
    remote_failure(class, message)
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
            "not started: more instances failed than --max-errors allows, so Run Command stopped starting new ones",
        ),
        (CommandInvocationStatus::TimedOut, _) => {
            Error::new(Kind::Transfer, "the copy timed out on the instance")
        }
        _ if code == 127 => Error::new(
            Kind::Target,
            "the instance has no python3, which the s3 transport needs",
        )
        .hint("install python3 (3.6 or newer) on the instance, or copy with --transport pty"),
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

/// `-l` is in Kbit/s, as scp's.
fn limit(args: &CopyArgs) -> Option<u64> {
    args.limit.map(|kbit| kbit * 1000 / 8)
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
