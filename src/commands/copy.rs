//! `ssmcp [OPTIONS] SRC… DEST`: scp-style copies to or from instances. The command line
//! is resolved once into a request, the copy engine runs it, and this is the one place
//! the copy meets ^C / SIGTERM: a signal cancels the engine's token, and the engine
//! closes every transport under way before this returns.

use super::Signals;
use super::Tracking;
use crate::cli::{CopyArgs, Global};
use crate::copy::request::CopyRequest;
use crate::copy::{self, Run};
use crate::error::Result;
use crate::progress::{Progress, Reporter};
use serde_json::json;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

pub async fn run(global: &Global, sessions: &Tracking, args: &CopyArgs) -> Result<i32> {
    let mut signals = Signals::register();
    let reporter = Reporter::new(args.json, global.quiet, global.verbose > 0);
    let started = Instant::now();
    let outcome = match CopyRequest::resolve(args, global.quiet) {
        Ok(req) => {
            let cancel = CancellationToken::new();
            let run = Run {
                req: &req,
                global,
                sessions,
                cancel: &cancel,
                reporter: &reporter,
            };
            let work = copy::copy(run);
            tokio::pin!(work);
            let outcome = tokio::select! {
                biased;
                r = &mut work => r,
                _ = signals.recv() => {
                    cancel.cancel();
                    work.await
                }
            };
            outcome.map(|s| {
                (
                    if req.is_upload() {
                        "upload"
                    } else {
                        "download"
                    },
                    s,
                )
            })
        }
        Err(e) => Err(e),
    };
    reporter.finish();
    match outcome {
        Ok((direction, s)) => {
            let secs = started.elapsed().as_secs_f64();
            let wire = sessions.wire.snapshot();
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
