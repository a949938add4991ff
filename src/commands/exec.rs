//! `ssmcp exec TARGET -- CMD…`: run a command, stream its output, return its status.

use super::Tracking;
use super::{Context, Signals};
use crate::cli::{ExecArgs, Global};
use crate::error::{Error, Kind, Result};
use crate::progress::{Progress, Reporter};
use crate::session::command;
use crate::session::handshake::{self, Start};
use crate::session::{self, SessionSpec};
use tokio::sync::mpsc;

pub async fn run(global: &Global, sessions: &Tracking, args: &ExecArgs) -> Result<i32> {
    let mut signals = Signals::register();
    let reporter = Reporter::plain(global.quiet, global.verbose > 0);
    let ctx = Context::new(global, sessions, &args.target).await?;
    let nonce = format!("{:016x}", rand::random::<u64>());
    let line = args.command.join(" ");
    // A NonInteractiveCommands document execs its command without a shell, so give it
    // one; the interactive default gets the status-reporting wrapper instead.
    let (document, text, status) = match &args.document {
        Some(d) => (
            d.clone(),
            format!("sh -c {}", command::shell_quote(&line)),
            command::StatusSource::Agent,
        ),
        None => (
            command::DOCUMENT.to_string(),
            command::wrap(&line, &nonce),
            command::StatusSource::Marker(command::MarkerScanner::new(&nonce)),
        ),
    };
    let spec = SessionSpec {
        target: ctx.target.instance_id.clone(),
        document,
        parameters: vec![("command".to_string(), text)],
    };
    let opening = async {
        let (session, mut channel) = session::start(&ctx.ssm, &spec, ctx.channel.clone()).await?;
        match handshake::perform(&mut channel).await {
            Ok(Start::NoHandshake(first)) => Ok((session, channel, Some(first))),
            Ok(Start::Handshaken(_)) => Ok((session, channel, None)),
            Err(e) => {
                let _ = session.end(Some(&mut channel)).await;
                Err(e)
            }
        }
    };
    // ^C while the session opens gives up; a session already started is ended by its
    // drop guard.
    let (session, mut channel, first) = tokio::select! {
        biased;
        r = opening => r?,
        _ = signals.recv() => return Err(Error::new(Kind::Interrupted, "interrupted")),
    };
    // First ^C goes to the remote command; a second one gives up on it.
    let (int_tx, int_rx) = mpsc::channel(4);
    let (abort_tx, mut abort_rx) = mpsc::channel::<()>(1);
    let watcher = tokio::spawn(async move {
        signals.recv().await;
        let _ = int_tx.send(()).await;
        signals.recv().await;
        let _ = abort_tx.send(()).await;
    });
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    let result = tokio::select! {
        r = command::relay(&mut channel, first, status, &mut stdout, &mut stderr, int_rx) => r,
        _ = abort_rx.recv() => Err(Error::new(Kind::Interrupted, "interrupted")),
    };
    watcher.abort();
    let end = session.end(None).await;
    if let Some(w) = end.warning {
        reporter.warn(&w);
    }
    result
}
