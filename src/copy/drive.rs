//! Open, transfer, close: how the engine drives any transport to one destination, and
//! the one place a copy meets the cancel token.

use super::request::{Choice, CopyRequest, TransportKind};
use crate::aws::context::Context;
use crate::aws::run_command::Targets;
use crate::cli::Global;
use crate::copy::transport::pty::{PtyTransport, Shell};
use crate::copy::transport::s3::S3Transport;
use crate::copy::transport::stream::{Receiver, StreamTransport};
use crate::copy::transport::{Closed, Download, Summary, Transport, Upload};
use crate::error::{Error, Flag, Kind, Result};
use crate::progress::{Progress, Reporter};
use crate::session::Tracking;
use std::future::Future;
use tokio_util::sync::CancellationToken;

/// What every part of one copy shares.
#[derive(Clone, Copy)]
pub struct Run<'a> {
    pub req: &'a CopyRequest,
    pub global: &'a Global,
    pub sessions: &'a Tracking,
    /// Cancelled on ^C / SIGTERM: every transport under way closes in a hurry.
    pub cancel: &'a CancellationToken,
    pub reporter: &'a Reporter,
}

pub fn interrupted() -> Error {
    Error::new(
        Kind::Interrupted,
        "interrupted; nothing partial was left in place",
    )
}

/// Open the chosen transport to one instance. Under `--transport auto` an instance
/// without python3 gets the pty transport, with a warning.
pub(super) async fn open(
    ctx: &Context,
    run: Run<'_>,
    choice: Choice,
) -> Result<Box<dyn Transport>> {
    let req = run.req;
    match choice {
        Choice::S3 => {
            req.check(TransportKind::S3)?;
            let targets = Targets::one(&ctx.target.instance_id);
            Ok(Box::new(S3Transport::new(
                ctx.ssm.clone(),
                ctx.aws.clone(),
                targets,
                req.run_as.clone(),
                req.s3.clone(),
            )))
        }
        Choice::Pty => open_pty(ctx, run, false).await,
        Choice::Stream { fallback } => {
            req.check(TransportKind::Stream)?;
            match Receiver::start_connected(&ctx.endpoint(), &req.run_as).await? {
                Some(started) => Ok(Box::new(StreamTransport::new(started))),
                None if fallback => open_pty(ctx, run, true).await,
                None => Err(Error::new(
                    Kind::Target,
                    "the instance has no python3, which the stream transport needs",
                )
                .hint(format!(
                    "install python3 (3.6 or newer) on the instance, or use {} pty",
                    Flag::Transport
                ))),
            }
        }
    }
}

/// The pty transport, saying so; a fallback the user did not ask for is a warning.
async fn open_pty(ctx: &Context, run: Run<'_>, fell_back: bool) -> Result<Box<dyn Transport>> {
    run.req.check(TransportKind::Pty)?;
    let reporter = run.reporter;
    if run.req.compress {
        reporter.note(&format!(
            "{} is not used by the pty transport (its base64 would hide the savings)",
            Flag::Compress
        ));
    }
    if fell_back {
        let why = "the instance has no python3: falling back to the pty transport (base64 through one terminal session; slower)";
        reporter.warn(why);
    } else {
        reporter.note(&format!(
            "transport pty ({} pty): base64 through one terminal session",
            Flag::Transport
        ));
    }
    let shell = Shell::start(&ctx.endpoint(), &run.req.run_as).await?;
    Ok(Box::new(PtyTransport::new(shell)))
}

pub(super) enum Job<'a> {
    Push(Upload<'a>),
    Pull(Download<'a>),
}

/// Open, transfer, close: the one place a copy meets the cancel token. The transport is
/// closed on every way out; after ^C it is told to hurry.
pub(super) async fn drive(
    run: Run<'_>,
    opening: impl Future<Output = Result<Box<dyn Transport>>>,
    job: Job<'_>,
) -> Result<Summary> {
    let mut transport = tokio::select! {
        biased;
        t = opening => t?,
        _ = run.cancel.cancelled() => return Err(interrupted()),
    };
    // What an upload moves, should it turn out to have finished in spite of an interrupt.
    let planned = match &job {
        Job::Push(up) => Some(Summary {
            files: up.plan.files,
            bytes: up.plan.bytes,
            ..Summary::default()
        }),
        Job::Pull(_) => None,
    };
    let transfer = async {
        match job {
            Job::Push(job) => transport.push(job, run.reporter).await,
            Job::Pull(job) => transport.pull(&job, run.reporter).await,
        }
    };
    let outcome = tokio::select! {
        biased;
        r = transfer => r,
        _ = run.cancel.cancelled() => Err(interrupted()),
    };
    let was_interrupted = matches!(&outcome, Err(e) if e.kind == Kind::Interrupted);
    let closed = transport.close(was_interrupted).await;
    report_closed(run, &closed);
    match (outcome, planned) {
        (Err(e), Some(done)) if e.kind == Kind::Interrupted && closed.completed_anyway => {
            run.reporter.warn(
                "the interrupt came after every instance had placed the files; the copy is complete",
            );
            Ok(done)
        }
        (Err(e), _) if e.kind == Kind::Interrupted => Err(interrupted_leaving(&closed)),
        (other, _) => other,
    }
}

/// The interrupt error, saying only what is true about what was left.
fn interrupted_leaving(closed: &Closed) -> Error {
    match closed.staged_object_removed {
        None => interrupted(),
        Some(true) => Error::new(
            Kind::Interrupted,
            "interrupted; the staged object was removed and nothing partial was left in place",
        ),
        Some(false) => Error::new(
            Kind::Interrupted,
            "interrupted; nothing partial was left in place, but the staging bucket still holds what the warnings above name",
        )
        .hint("run `ssmcp gc` to remove it"),
    }
}

/// Show what closing left behind once per kind, not once per session: warnings that
/// differ only in the session id are one kind.
fn report_closed(run: Run<'_>, closed: &Closed) {
    let mut kinds: Vec<(String, &String, usize)> = Vec::new();
    for w in &closed.warnings {
        let key = without_session_id(w);
        match kinds.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, n)) => *n += 1,
            None => kinds.push((key, w, 0)),
        }
    }
    for (_, first, more) in kinds {
        run.reporter.warn(first);
        if more > 0 {
            run.reporter.warn(&format!(
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
}
