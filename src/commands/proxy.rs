//! `ssmcp proxy TARGET [PORT]`: an ssh ProxyCommand. One port session to PORT on the
//! instance, its one stream joined to stdin and stdout, so ssh, scp, sftp, rsync and git
//! run over Session Manager with no plugin and no AWS CLI.
//!
//! stdout carries the forwarded bytes and nothing else: ssh reads it as the server's
//! side of the connection, so a stray byte there breaks the handshake. Everything ssmcp
//! has to say goes to stderr on one line (`main` prints errors that way for this
//! command), where ssh shows it before its own message.

use super::{Context, Signals, Tracking};
use crate::cli::{Global, ProxyArgs, SshConfigArgs};
use crate::error::{Error, Result};
use crate::progress::{Progress, Reporter};
use crate::session::port::{self, Ended};
use crate::session::SessionSpec;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Run until stdin ends, the destination closes the connection or a signal comes (ssh
/// sends SIGHUP when it is done), then end the session (in-band, then the API). Exit 0
/// for any of those ends.
pub async fn run(global: &Global, sessions: &Tracking, args: &ProxyArgs) -> Result<i32> {
    let mut signals = Signals::register();
    let reporter = Reporter::plain(global.quiet, global.verbose > 0);
    let ctx = Context::new(global, sessions, &args.target).await?;
    let spec = SessionSpec {
        target: ctx.target.instance_id.clone(),
        document: args.document.clone(),
        parameters: vec![("portNumber".to_string(), args.port.to_string())],
    };
    let (session, ports, info) = port::open(&ctx.ssm, &spec, ctx.channel.clone()).await?;
    reporter.note(&format!(
        "proxy: session {} to port {} of {} ({}, {:?} mode, agent {})",
        session.id,
        args.port,
        ctx.target.instance_id,
        args.document,
        ports.mode,
        info.agent_version
    ));
    let outcome = match ports.open_stream().await {
        Ok(stream) => {
            let (from_instance, to_instance) = tokio::io::split(stream);
            tokio::select! {
                biased;
                // ssh ends its ProxyCommand with SIGHUP when it is done: a normal end.
                _ = signals.recv() => Ok(0),
                ended = ports.closed() => match ended {
                    Ended::Failed(e) => Err(e),
                    _ => Ok(0),
                },
                r = relay(super::stdin::chunks(64 * 1024), to_instance) => r.map(|()| 0),
                r = relay_out(from_instance, tokio::io::stdout()) => r.map(|()| 0),
            }
        }
        Err(e) => Err(e),
    };
    let lost = ports.terminate().await;
    if let Some(w) = session.end_after(lost).await.warning {
        reporter.warn(&one_line(&w));
    }
    outcome
}

/// Chunks into the session until their sender ends (stdin's EOF).
async fn relay<W>(mut from: mpsc::Receiver<std::io::Result<Vec<u8>>>, mut to: W) -> Result<()>
where
    W: AsyncWrite + Unpin,
{
    while let Some(chunk) = from.recv().await {
        let chunk =
            chunk.map_err(|e| Error::transfer(format!("proxy: reading stdin failed: {e}")))?;
        to.write_all(&chunk)
            .await
            .map_err(|e| Error::transfer(format!("proxy: sending to the instance failed: {e}")))?;
    }
    let _ = to.shutdown().await;
    Ok(())
}

/// Bytes from the session to stdout, flushed as they come (ssh waits on each reply).
async fn relay_out<R, W>(mut from: R, mut to: W) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut from, &mut buf)
            .await
            .map_err(|e| {
                Error::transfer(format!("proxy: reading from the instance failed: {e}"))
            })?;
        if n == 0 {
            return Ok(());
        }
        // stdout gone (ssh exited): the connection is over, not an error to report.
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            return Ok(());
        }
    }
}

/// docs/ssh/config, the block `ssmcp ssh-config` prints (tests run ssh with it).
const SSH_CONFIG: &str = include_str!("../../docs/ssh/config");

/// `ssmcp ssh-config`: docs/ssh/config with this ssmcp's path (or `--ssmcp`) in the
/// ProxyCommands.
pub fn ssh_config(args: &SshConfigArgs) -> Result<i32> {
    let path = match &args.ssmcp {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| {
            Error::usage(format!("cannot tell where this ssmcp is: {e}")).hint("pass --ssmcp PATH")
        })?,
    };
    let path = path
        .to_str()
        .filter(|p| !p.contains(['\'', '"', ' ', '%', '\n']))
        .ok_or_else(|| {
            Error::usage(format!(
                "{} cannot be written into an ssh ProxyCommand as it is",
                path.display()
            ))
            .hint("pass --ssmcp with a path without spaces, quotes or %, e.g. ~/.cargo/bin/ssmcp")
        })?;
    super::docs::emit(SSH_CONFIG.replace("SSMCP", path).as_bytes())
}

/// ssh shows a ProxyCommand's stderr as is; one line per message keeps it readable
/// beside ssh's own.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_fold_onto_one_line() {
        assert_eq!(
            one_line("a\n  hint: {\n \"x\": 1 }\n"),
            "a hint: { \"x\": 1 }"
        );
    }

    #[tokio::test]
    async fn relays_copy_everything_and_stop_at_the_end() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        relay_out(&data[..], &mut out).await.unwrap();
        assert_eq!(out, data);
        let (tx, rx) = mpsc::channel(4);
        let feed = {
            let data = data.clone();
            tokio::spawn(async move {
                for piece in data.chunks(7_000) {
                    tx.send(Ok(piece.to_vec())).await.unwrap();
                }
            })
        };
        let mut out = Vec::new();
        relay(rx, &mut out).await.unwrap();
        feed.await.unwrap();
        assert_eq!(out, data);
    }
}
