//! `ssmcp [OPTIONS] SRC… DEST`: scp-style copies to or from one instance over the stream
//! transport. Every session opened here is ended on every path out, ^C included.

use super::gather;
use super::s3copy::{self, Destination};
use super::{Context, Signals};
use crate::bundle::Record;
use crate::cli::{CopyArgs, Global, TransportChoice};
use crate::error::{Error, Kind, Result};
use crate::plan::{self, Plan};
use crate::progress::Reporter;
use crate::remote::RunAs;
use crate::target::{Fleet, Target};
use crate::transport::stream::{self, Connection, Endpoint, Manifest, Pull, Push, Receiver};
use crate::transport::{pty, PlaceOptions, Progress, Summary};
use serde_json::json;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

/// One command-line operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Local(PathBuf),
    Remote {
        user: Option<String>,
        target: String,
        path: Vec<u8>,
    },
}

/// `[user@]TARGET:PATH` is remote when TARGET is an instance target (`name:NAME:PATH`
/// included); anything else, or anything starting with `/` or `.`, is a local path.
pub fn parse_operand(arg: &OsStr) -> Operand {
    let b = arg.as_bytes();
    let local = || Operand::Local(PathBuf::from(arg));
    if b.starts_with(b"/") || b.starts_with(b".") {
        return local();
    }
    let (user, rest) = match b.iter().position(|&c| c == b'@') {
        Some(at) if !b[..at].contains(&b':') && !b[..at].contains(&b'/') => {
            (Some(&b[..at]), &b[at + 1..])
        }
        _ => (None, b),
    };
    let labelled = [&b"name:"[..], b"tag:"]
        .into_iter()
        .find(|p| rest.starts_with(p));
    let (target, path) = if let Some(label) = labelled {
        let value = &rest[label.len()..];
        match value.iter().position(|&c| c == b':') {
            Some(c) => (&rest[..label.len() + c], &value[c + 1..]),
            None => return local(),
        }
    } else {
        match rest.iter().position(|&c| c == b':') {
            Some(c) => (&rest[..c], &rest[c + 1..]),
            None => return local(),
        }
    };
    let Ok(target) = std::str::from_utf8(target) else {
        return local();
    };
    if Target::parse(target).is_err() && Fleet::parse(target).is_none() {
        return local();
    }
    let user = user.map(|u| String::from_utf8_lossy(u).into_owned());
    Operand::Remote {
        user: user.filter(|u| !u.is_empty()),
        target: target.to_string(),
        path: if path.is_empty() {
            b"~".to_vec()
        } else {
            path.to_vec()
        },
    }
}

enum Job {
    Upload {
        sources: Vec<PathBuf>,
        target: String,
        user: Option<String>,
        dest: Vec<u8>,
    },
    Download {
        sources: Vec<Vec<u8>>,
        target: String,
        user: Option<String>,
        dest: PathBuf,
    },
}

/// A control character in a remote path is almost always a quoting slip (a trailing
/// newline from `$(...)`), and would create a name nobody can type.
fn check_remote_path(path: &[u8]) -> Result<()> {
    if path.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(Error::usage(format!(
            "the remote path {:?} contains a control character",
            String::from_utf8_lossy(path)
        ))
        .hint("check the quoting: a trailing newline often comes from $(...) or a line read from a file"));
    }
    Ok(())
}

fn job(paths: &[OsString]) -> Result<Job> {
    let ops: Vec<Operand> = paths.iter().map(|p| parse_operand(p)).collect();
    for op in &ops {
        if let Operand::Remote { path, .. } = op {
            check_remote_path(path)?;
        }
    }
    let Some((dest, sources)) = ops.split_last() else {
        return Err(Error::usage("give at least one source and a destination"));
    };
    let remote_sources: Vec<_> = sources
        .iter()
        .filter(|o| matches!(o, Operand::Remote { .. }))
        .collect();
    match dest {
        Operand::Remote { user, target, path } => {
            if !remote_sources.is_empty() {
                return Err(Error::usage(
                    "copying from an instance to an instance is not supported",
                )
                .hint("copy to this machine first, then on to the other instance"));
            }
            let sources = sources
                .iter()
                .map(|o| match o {
                    Operand::Local(p) => p.clone(),
                    Operand::Remote { .. } => PathBuf::new(),
                })
                .collect();
            Ok(Job::Upload {
                sources,
                target: target.clone(),
                user: user.clone(),
                dest: path.clone(),
            })
        }
        Operand::Local(dest) => {
            if remote_sources.is_empty() {
                return Err(Error::usage("neither side is on an instance")
                    .hint("write the remote side as TARGET:PATH, e.g. i-0123456789abcdef0:/tmp/; for local copies use cp"));
            }
            if remote_sources.len() != sources.len() {
                return Err(Error::usage(
                    "sources must all be local (upload) or all on one instance (download)",
                ));
            }
            let mut target_user: Option<(String, Option<String>)> = None;
            let mut paths = Vec::new();
            for o in sources {
                if let Operand::Remote { user, target, path } = o {
                    match &target_user {
                        Some((t, u)) if t != target || u != user => {
                            return Err(Error::usage(
                                "all remote sources must be on the same instance, as the same user",
                            ))
                        }
                        _ => target_user = Some((target.clone(), user.clone())),
                    }
                    paths.push(path.clone());
                }
            }
            let (target, user) = target_user.unwrap_or_default();
            Ok(Job::Download {
                sources: paths,
                target,
                user,
                dest: dest.clone(),
            })
        }
    }
}

fn run_as(user: &Option<String>, sudo: bool) -> RunAs {
    match (user, sudo) {
        (Some(u), _) => RunAs::Sudo(Some(u.clone())),
        (None, true) => RunAs::Sudo(None),
        (None, false) => RunAs::SessionUser,
    }
}

/// Whether a copy ended by ^C / SIGTERM, when its sessions must end without delay.
fn was_interrupted<T>(outcome: &Result<T>) -> bool {
    matches!(outcome, Err(e) if e.kind == Kind::Interrupted)
}

pub(super) fn interrupted() -> Error {
    Error::new(
        Kind::Interrupted,
        "interrupted; nothing partial was left in place",
    )
}

pub async fn run(global: &Global, args: &CopyArgs) -> Result<i32> {
    let mut signals = Signals::register();
    let reporter = Reporter::new(args.json, global.quiet, global.verbose > 0);
    let started = Instant::now();
    let outcome = match job(&args.paths) {
        Ok(Job::Upload {
            sources,
            target,
            user,
            dest,
        }) => {
            let run_as = run_as(&user, args.sudo);
            upload(
                global,
                args,
                &target,
                &run_as,
                &sources,
                &dest,
                &mut signals,
                &reporter,
            )
            .await
            .map(|s| ("upload", s))
        }
        Ok(Job::Download {
            sources,
            target,
            user,
            dest,
        }) => {
            let run_as = run_as(&user, args.sudo);
            let fetch = Fetch {
                global,
                args,
                run_as: &run_as,
                sources: &sources,
                dest: &dest,
            };
            download(fetch, &target, &mut signals, &reporter)
                .await
                .map(|s| ("download", s))
        }
        Err(e) => Err(e),
    };
    reporter.finish();
    match outcome {
        Ok((direction, s)) => {
            let secs = started.elapsed().as_secs_f64();
            let wire = global.wire.snapshot();
            let on_the_wire = if global.verbose > 0 && wire.sent > 0 {
                format!(
                    "; {} messages sent, {} retransmitted ({:.2} %), {} duplicate acks",
                    wire.sent,
                    wire.retransmitted,
                    100.0 * wire.retransmitted as f64 / wire.sent as f64,
                    wire.duplicate_acks
                )
            } else {
                String::new()
            };
            reporter.note(&format!(
                "{direction}: {} files, {} bytes in {secs:.1} s{on_the_wire}",
                s.files, s.bytes
            ));
            reporter.event(json!({
                "event": "summary",
                "direction": direction,
                "files": s.files,
                "bytes": s.bytes,
                "unchanged": s.unchanged,
                "deleted": s.deleted,
                "seconds": secs,
                "bytes_per_second": if secs > 0.0 { s.bytes as f64 / secs } else { 0.0 },
                "dry_run": args.dry_run,
                "wire": {
                    "messages_sent": wire.sent,
                    "retransmitted": wire.retransmitted,
                    "duplicate_acks": wire.duplicate_acks,
                },
            }));
            Ok(0)
        }
        Err(e) => {
            reporter.event(json!({
                "event": "error",
                "message": e.to_string(),
                "exit_code": e.kind.exit_code(),
            }));
            Err(e)
        }
    }
}

fn endpoint(ctx: &Context) -> Endpoint {
    Endpoint {
        ssm: ctx.ssm.clone(),
        instance: ctx.target.instance_id.clone(),
        channel: ctx.channel.clone(),
    }
}

/// Show the API-denied warnings of ended sessions once per kind, not once per session:
/// warnings that differ only in the session id are one kind.
fn report_warnings(ctx: &Context, warnings: Vec<String>) {
    let mut kinds: Vec<(String, &String, usize)> = Vec::new();
    for w in &warnings {
        let key = without_session_id(w);
        match kinds.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, n)) => *n += 1,
            None => kinds.push((key, w, 0)),
        }
    }
    for (_, first, more) in kinds {
        ctx.warn(first);
        if more > 0 {
            ctx.warn(&format!(
                "the same happened for {more} more session(s) of this copy"
            ));
        }
    }
}

/// A warning with its session ids blanked (`session ID ` and `session/ID `).
fn without_session_id(w: &str) -> String {
    let mut out = String::with_capacity(w.len());
    let mut blank = false;
    for word in w.split(' ') {
        if !out.is_empty() {
            out.push(' ');
        }
        if blank {
            out.push_str("ID");
            blank = false;
            continue;
        }
        match word.split_once("session/") {
            Some((before, _)) => {
                out.push_str(before);
                out.push_str("session/ID");
            }
            None => out.push_str(word),
        }
        blank = word == "session";
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn upload(
    global: &Global,
    args: &CopyArgs,
    target: &str,
    run_as: &RunAs,
    sources: &[PathBuf],
    dest: &[u8],
    signals: &mut Signals,
    reporter: &Reporter,
) -> Result<Summary> {
    let plan = plan::local(
        sources,
        &plan::Options {
            recursive: args.recursive,
            exclude: &args.exclude,
        },
    )?;
    if args.dry_run {
        let s = print_entries(plan.entries.iter().map(|e| &e.record), reporter);
        print_total(&s, &String::from_utf8_lossy(dest), reporter);
        return Ok(s);
    }
    if let Some(fleet) = Fleet::parse(target) {
        let fleet = fleet?;
        if matches!(
            args.transport,
            TransportChoice::Stream | TransportChoice::Pty
        ) {
            return Err(Error::usage(format!(
                "an upload to {} goes through S3, not --transport {}",
                fleet.describe(),
                if args.transport == TransportChoice::Pty {
                    "pty"
                } else {
                    "stream"
                }
            ))
            .hint("leave out --transport (or use --transport s3) and give --bucket"));
        }
        for w in &plan.warnings {
            if !global.quiet {
                eprintln!("ssmcp: warning: {w}");
            }
        }
        let (conf, ssm, _) =
            super::load_aws(global, global.region.clone(), global.profile.clone()).await?;
        let show_warnings = !global.quiet && !args.json;
        let destination =
            Destination::of_fleet(fleet, &conf, &ssm, reporter, show_warnings).await?;
        let job = s3copy::Job {
            ssm: &ssm,
            conf: &conf,
            destination,
            run_as,
            plan: &plan,
            dest,
            args,
            quiet: global.quiet,
        };
        return s3copy::upload(job, signals, reporter).await;
    }
    let ctx = Context::new(global, target).await?;
    for w in &plan.warnings {
        ctx.warn(w);
    }
    if wants_s3(args, &plan, reporter) {
        let job = s3copy::Job {
            ssm: &ctx.ssm,
            conf: &ctx.aws,
            destination: Destination::one(&ctx.target.instance_id),
            run_as,
            plan: &plan,
            dest,
            args,
            quiet: global.quiet,
        };
        return s3copy::upload(job, signals, reporter).await;
    }
    let endpoint = endpoint(&ctx);
    let receiver = match args.transport {
        TransportChoice::Pty => None,
        _ => tokio::select! {
            biased;
            r = Receiver::start(&endpoint, run_as) => r?,
            _ = signals.recv() => return Err(interrupted()),
        },
    };
    let Some(receiver) = receiver else {
        no_python_unless_auto(args)?;
        return pty_upload(
            &ctx, args, &endpoint, run_as, &plan, dest, signals, reporter,
        )
        .await;
    };
    reporter.note(
        "transport stream: a python3 receiver on the instance, one port session for the upload",
    );
    let conn = tokio::select! {
        biased;
        c = receiver.connect() => c,
        _ = signals.recv() => Err(interrupted()),
    };
    let mut conn = match conn {
        Ok(c) => c,
        Err(e) => {
            report_warnings(&ctx, receiver.close(e.kind == Kind::Interrupted).await);
            return Err(e);
        }
    };
    let outcome = tokio::select! {
        biased;
        r = push_plan(&mut conn, plan, dest, args, reporter) => r,
        _ = signals.recv() => Err(interrupted()),
    };
    let mut warnings = conn.close().await;
    warnings.extend(receiver.close(was_interrupted(&outcome)).await);
    report_warnings(&ctx, warnings);
    outcome
}

/// Upload `plan` over one connection; with --sync, first leave out what is unchanged.
async fn push_plan(
    conn: &mut Connection,
    mut plan: Plan,
    dest: &[u8],
    args: &CopyArgs,
    reporter: &Reporter,
) -> Result<Summary> {
    let unchanged = if args.sync {
        let theirs = stream::inventory(conn, &plan, dest).await?;
        plan.drop_unchanged(&theirs)?
    } else {
        Vec::new()
    };
    if !unchanged.is_empty() {
        reporter.note(&format!(
            "--sync: {} unchanged file(s) left alone",
            unchanged.len()
        ));
    }
    reporter.plan(plan.files, plan.bytes);
    let job = Push {
        plan: &plan,
        dest,
        place: place_options(args),
        limit: limit(args),
        delete_keeping: args.delete.then_some(unchanged.as_slice()),
        compress: args.compress,
    };
    let mut summary = stream::push(conn, job, reporter).await?;
    summary.unchanged = unchanged.len() as u64;
    Ok(summary)
}

/// Uploads at least this big go through S3 under `--transport auto` when a bucket is
/// configured: a session carries about 1 MB/s, S3 many times that.
const AUTO_S3_BYTES: u64 = 64 * 1024 * 1024;

/// Whether a one-instance upload goes through S3, saying why when it was not asked for.
fn wants_s3(args: &CopyArgs, plan: &Plan, reporter: &Reporter) -> bool {
    match args.transport {
        TransportChoice::S3 => true,
        TransportChoice::Auto
            if args.staging.bucket.is_some()
                && plan.bytes >= AUTO_S3_BYTES
                && !args.sync
                && !args.delete =>
        {
            reporter.note(&format!(
                "transport auto chose s3: {} MiB to upload and a bucket is configured (a session carries about 1 MB/s)",
                plan.bytes >> 20
            ));
            true
        }
        _ => false,
    }
}

/// `-l` is in Kbit/s, as scp's; transports want bytes per second.
fn limit(args: &CopyArgs) -> Option<u64> {
    args.limit.map(|kbit| kbit * 1000 / 8)
}

fn place_options(args: &CopyArgs) -> PlaceOptions {
    PlaceOptions {
        preserve: args.preserve,
        atomic: args.atomic,
    }
}

/// `--transport stream` on an instance without python3 is an error, not a fallback.
fn no_python_unless_auto(args: &CopyArgs) -> Result<()> {
    if args.transport == TransportChoice::Stream {
        return Err(Error::new(
            Kind::Target,
            "the instance has no python3, which the stream transport needs",
        )
        .hint("install python3 (3.6 or newer) on the instance, or use --transport pty"));
    }
    Ok(())
}

/// Say which transport runs and why; a fallback the user did not ask for is a warning.
fn announce_pty(ctx: &Context, args: &CopyArgs, reporter: &Reporter) {
    if args.compress {
        reporter.note("-C is not used by the pty transport (its base64 would hide the savings)");
    }
    if args.transport == TransportChoice::Pty {
        reporter.note("transport pty (--transport pty): base64 through one terminal session");
    } else {
        let why = "the instance has no python3: falling back to the pty transport (base64 through one terminal session; slower)";
        ctx.warn(why);
        reporter.note(why);
    }
}

#[allow(clippy::too_many_arguments)]
async fn pty_upload(
    ctx: &Context,
    args: &CopyArgs,
    endpoint: &Endpoint,
    run_as: &RunAs,
    plan: &Plan,
    dest: &[u8],
    signals: &mut Signals,
    reporter: &Reporter,
) -> Result<Summary> {
    if args.atomic || args.sync || args.delete {
        return Err(Error::usage(
            "--atomic, --sync and --delete need the stream transport (python3 on the instance)",
        ));
    }
    announce_pty(ctx, args, reporter);
    let mut shell = tokio::select! {
        biased;
        s = pty::Shell::start(endpoint, run_as) => s?,
        _ = signals.recv() => return Err(interrupted()),
    };
    reporter.plan(plan.files, plan.bytes);
    let place = place_options(args);
    let outcome = tokio::select! {
        biased;
        r = pty::push(&mut shell, plan, dest, &place, limit(args), reporter) => r,
        _ = signals.recv() => Err(interrupted()),
    };
    report_warnings(ctx, shell.close(was_interrupted(&outcome)).await);
    outcome
}

/// --dry-run: one line (or `plan-entry` event) per entry; returns the files and bytes.
fn print_entries<'a>(records: impl Iterator<Item = &'a Record>, reporter: &Reporter) -> Summary {
    let mut s = Summary::default();
    for r in records {
        let (kind, path, size) = match r {
            Record::Dir(m) => ("dir", &m.path, 0),
            Record::File { meta, size } | Record::Listed { meta, size } => {
                s.files += 1;
                s.bytes += size;
                ("file", &meta.path, *size)
            }
            Record::Link { meta, .. } => ("link", &meta.path, 0),
            _ => continue,
        };
        let path = String::from_utf8_lossy(path);
        if matches!(reporter, Reporter::Json(_)) {
            reporter
                .event(json!({"event": "plan-entry", "kind": kind, "path": path, "bytes": size}));
        } else {
            println!("{kind}\t{size}\t{path}");
        }
    }
    s
}

/// The dry run's last line, where it is not JSON.
fn print_total(s: &Summary, to: &str, reporter: &Reporter) {
    if !matches!(reporter, Reporter::Json(_)) {
        println!("would copy {} files, {} bytes to {to}", s.files, s.bytes);
    }
}

/// What a download fetches and where it puts it, whichever instances it comes from.
#[derive(Clone, Copy)]
pub(super) struct Fetch<'a> {
    pub global: &'a Global,
    pub args: &'a CopyArgs,
    pub run_as: &'a RunAs,
    pub sources: &'a [Vec<u8>],
    pub dest: &'a std::path::Path,
}

async fn download(
    fetch: Fetch<'_>,
    target: &str,
    signals: &mut Signals,
    reporter: &Reporter,
) -> Result<Summary> {
    if fetch.args.sync || fetch.args.delete {
        return Err(Error::usage(
            "--sync and --delete apply to uploads; downloads always copy everything",
        ));
    }
    match Fleet::parse(target) {
        Some(fleet) => gather::download(fetch, fleet?, signals, reporter).await,
        None => download_one(fetch, target, signals, reporter).await,
    }
}

/// A download from one instance, over sessions or through S3.
pub(super) async fn download_one(
    fetch: Fetch<'_>,
    target: &str,
    signals: &mut Signals,
    reporter: &Reporter,
) -> Result<Summary> {
    let Fetch {
        global,
        args,
        run_as,
        sources,
        dest,
    } = fetch;
    let ctx = Context::new(global, target).await?;
    if args.transport == TransportChoice::S3 {
        let job = s3copy::DownloadJob {
            ssm: &ctx.ssm,
            conf: &ctx.aws,
            instance: ctx.target.instance_id.clone(),
            run_as,
            pull: Pull {
                sources,
                recursive: args.recursive,
                dest,
                preserve: args.preserve,
                compress: false,
            },
            args,
            quiet: global.quiet,
        };
        return s3copy::download(job, signals, reporter).await;
    }
    let endpoint = endpoint(&ctx);
    let receiver = match args.transport {
        TransportChoice::Pty => None,
        _ => tokio::select! {
            biased;
            r = Receiver::start(&endpoint, run_as) => r?,
            _ = signals.recv() => return Err(interrupted()),
        },
    };
    let Some(receiver) = receiver else {
        no_python_unless_auto(args)?;
        return pty_download(
            &ctx, args, &endpoint, run_as, sources, dest, signals, reporter,
        )
        .await;
    };
    let job = Pull {
        sources,
        recursive: args.recursive,
        dest,
        preserve: args.preserve,
        compress: args.compress,
    };
    let mut conns: Vec<Connection> = Vec::new();
    let outcome = tokio::select! {
        biased;
        r = fetch_all(&receiver, &mut conns, &job, args, &ctx, reporter) => r,
        _ = signals.recv() => Err(interrupted()),
    };
    let closing = conns.into_iter().map(Connection::close);
    let mut warnings: Vec<String> = futures_util::future::join_all(closing)
        .await
        .into_iter()
        .flatten()
        .collect();
    warnings.extend(receiver.close(was_interrupted(&outcome)).await);
    report_warnings(&ctx, warnings);
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn pty_download(
    ctx: &Context,
    args: &CopyArgs,
    endpoint: &Endpoint,
    run_as: &RunAs,
    sources: &[Vec<u8>],
    dest: &std::path::Path,
    signals: &mut Signals,
    reporter: &Reporter,
) -> Result<Summary> {
    if args.dry_run {
        return Err(Error::usage(
            "--dry-run of a download needs the stream transport (python3 on the instance)",
        ));
    }
    announce_pty(ctx, args, reporter);
    let mut shell = tokio::select! {
        biased;
        s = pty::Shell::start(endpoint, run_as) => s?,
        _ = signals.recv() => return Err(interrupted()),
    };
    let warn = |w: &str| ctx.warn(w);
    let exclude = plan::exclusions(&args.exclude)?;
    let outcome = tokio::select! {
        biased;
        r = pty::pull(&mut shell, sources, args.recursive, &exclude, dest, args.preserve, reporter, &warn) => r,
        _ = signals.recv() => Err(interrupted()),
    };
    report_warnings(ctx, shell.close(was_interrupted(&outcome)).await);
    outcome
}

/// List on one connection, then open up to `--parallel` connections and fetch.
async fn fetch_all(
    receiver: &Receiver,
    conns: &mut Vec<Connection>,
    job: &Pull<'_>,
    args: &CopyArgs,
    ctx: &Context,
    reporter: &Reporter,
) -> Result<Summary> {
    conns.push(receiver.connect().await?);
    let mut manifest: Manifest = stream::list(&mut conns[0], job).await?;
    manifest.exclude(&plan::exclusions(&args.exclude)?);
    for w in &manifest.warnings {
        ctx.warn(&format!("on the instance: {w}"));
    }
    if args.dry_run {
        let s = print_entries(manifest.records.iter(), reporter);
        print_total(&s, &job.dest.display().to_string(), reporter);
        return Ok(s);
    }
    let wanted = manifest.connections(usize::from(args.parallel));
    let extra = (1..wanted).map(|_| receiver.connect());
    for c in futures_util::future::join_all(extra).await {
        conns.push(c?);
    }
    reporter.note(&format!(
        "transport stream: a python3 receiver on the instance, {} port session(s) for the download",
        conns.len()
    ));
    stream::fetch(conns, &manifest, job, reporter).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_of_one_kind_differ_only_in_session_ids() {
        let a = "session alice-1 was ended in-band, but the TerminateSession API call failed: on resource: arn:aws:ssm:r:1:session/alice-1 because";
        let b = "session alice-2 was ended in-band, but the TerminateSession API call failed: on resource: arn:aws:ssm:r:1:session/alice-2 because";
        let c = "session alice-3 may stay open until the service's idle timeout";
        assert_eq!(without_session_id(a), without_session_id(b));
        assert_ne!(without_session_id(a), without_session_id(c));
    }

    fn remote(user: Option<&str>, target: &str, path: &str) -> Operand {
        Operand::Remote {
            user: user.map(str::to_string),
            target: target.into(),
            path: path.as_bytes().to_vec(),
        }
    }

    #[test]
    fn operands_are_remote_only_with_an_instance_target() {
        let p = |s: &str| parse_operand(OsStr::new(s));
        assert_eq!(
            p("i-0123456789abcdef0:/tmp"),
            remote(None, "i-0123456789abcdef0", "/tmp")
        );
        assert_eq!(
            p("app@i-12345678:x"),
            remote(Some("app"), "i-12345678", "x")
        );
        assert_eq!(p("i-12345678:"), remote(None, "i-12345678", "~"));
        assert_eq!(p("name:web-1:/srv"), remote(None, "name:web-1", "/srv"));
        assert_eq!(
            p("i-0123456789abcdef0.eu-west-1.prod:/a:b"),
            remote(None, "i-0123456789abcdef0.eu-west-1.prod", "/a:b")
        );
        for local in [
            "a:b",
            "./i-12345678:x",
            "/i-12345678:x",
            "file",
            "name:web-1",
        ] {
            assert_eq!(p(local), Operand::Local(local.into()), "{local}");
        }
    }
}
