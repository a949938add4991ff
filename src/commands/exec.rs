//! `ssmcp exec TARGET -- CMD…`: run a command, stream its output, return its status.

use super::{shutdown_signal, Context};
use crate::cli::{ExecArgs, Global};
use crate::error::{Error, Kind, Result};
use crate::session::channel::ChannelConfig;
use crate::session::command;
use crate::session::handshake::{self, Start};
use crate::session::{self, SessionSpec};
use tokio::sync::mpsc;

pub async fn run(global: &Global, args: &ExecArgs) -> Result<i32> {
    let ctx = Context::new(global, &args.target).await?;
    let nonce = format!("{:016x}", rand::random::<u64>());
    let spec = SessionSpec {
        target: ctx.target.instance_id.clone(),
        document: command::DOCUMENT.into(),
        parameters: vec![(
            "command".to_string(),
            command::wrap(&args.command.join(" "), &nonce),
        )],
    };
    let (session, mut channel) = session::start(&ctx.ssm, &spec, ChannelConfig::default()).await?;
    let first = match handshake::perform(&mut channel).await {
        Ok(Start::NoHandshake(first)) => Some(first),
        Ok(Start::Handshaken(_)) => None,
        Err(e) => {
            let _ = session.end(Some(&mut channel)).await;
            return Err(e);
        }
    };
    // First ^C goes to the remote command; a second one gives up on it.
    let (int_tx, int_rx) = mpsc::channel(4);
    let (abort_tx, mut abort_rx) = mpsc::channel::<()>(1);
    let signals = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = int_tx.send(()).await;
        shutdown_signal().await;
        let _ = abort_tx.send(()).await;
    });
    let mut stdout = tokio::io::stdout();
    let result = tokio::select! {
        r = command::relay(&mut channel, first, &nonce, &mut stdout, int_rx) => r,
        _ = abort_rx.recv() => Err(Error::new(Kind::Interrupted, "interrupted")),
    };
    signals.abort();
    let end = session.end(None).await;
    if let Some(w) = end.warning {
        ctx.warn(&w);
    }
    result
}
