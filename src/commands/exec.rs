//! `ssmcp exec TARGET -- CMD…`: run a command as `ssh host cmd` does and exit with its
//! status. Three ways, one chosen here: the exec helper (stdout and stderr apart, stdin
//! forwarded; python3 on the instance), a terminal (`-t`, or when the instance has no
//! python3), or the user's NonInteractiveCommands document (`--document`).

use super::Tracking;
use super::{Context, Signals};
use crate::cli::{ExecArgs, Global};
use crate::error::{Error, Kind, Result};
use crate::progress::{Progress, Reporter};
use crate::remote::piped::{self, Event};
use crate::session::channel::{Channel, ChannelSender, Inbound};
use crate::session::command;
use crate::session::handshake::{self, Start};
use crate::session::{self, Session, SessionSpec};
use ssm_proto::PayloadType;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// How the command runs.
enum Way {
    Piped,
    Terminal,
    Document(String),
}

/// How a piped run ended: with a status, or before starting because there is no python3.
enum Piped {
    Status(i32),
    NoPython,
}

pub async fn run(global: &Global, sessions: &Tracking, args: &ExecArgs) -> Result<i32> {
    let mut signals = Signals::register();
    let reporter = Reporter::plain(global.quiet, global.verbose > 0);
    let ctx = Context::new(global, sessions, &args.target).await?;
    // The first ^C goes to the remote command; a second one gives up on it.
    let (int_tx, mut interrupts) = mpsc::channel(4);
    let (abort_tx, mut abort) = mpsc::channel::<()>(1);
    let watcher = tokio::spawn(async move {
        signals.recv().await;
        let _ = int_tx.send(()).await;
        signals.recv().await;
        let _ = abort_tx.send(()).await;
    });
    let line = args.command.join(" ");
    let mut way = match (&args.document, args.tty) {
        (Some(d), _) => Way::Document(d.clone()),
        (None, true) => Way::Terminal,
        (None, false) => Way::Piped,
    };
    let result = loop {
        let nonce = format!("{:016x}", rand::random::<u64>());
        // A NonInteractiveCommands document execs its command without a shell, so give
        // it one; the terminal gets the status-reporting wrapper.
        let (document, text) = match &way {
            Way::Document(d) => (d.clone(), format!("sh -c {}", command::shell_quote(&line))),
            Way::Terminal => (command::DOCUMENT.to_string(), command::wrap(&line, &nonce)),
            Way::Piped => (
                command::DOCUMENT.to_string(),
                crate::remote::exec_helper_command(&line),
            ),
        };
        let spec = SessionSpec {
            target: ctx.target.instance_id.clone(),
            document,
            parameters: vec![("command".to_string(), text)],
        };
        // ^C while the session opens gives up; a session already started is ended by
        // its drop guard.
        let (session, mut channel, first) = tokio::select! {
            biased;
            r = open(&ctx, &spec) => r?,
            _ = interrupts.recv() => break Err(Error::new(Kind::Interrupted, "interrupted")),
        };
        let outcome = tokio::select! {
            r = relay(&way, &mut channel, first, &nonce, args.no_stdin, &mut interrupts) => r,
            _ = abort.recv() => Err(Error::new(Kind::Interrupted, "interrupted")),
        };
        let end = session.end(None).await;
        if let Some(w) = end.warning {
            reporter.warn(&w);
        }
        match outcome {
            Ok(Piped::NoPython) => {
                reporter.warn("the instance has no python3: running the command in a terminal instead (stderr merged into stdout, stdin not forwarded)");
                way = Way::Terminal;
            }
            Ok(Piped::Status(code)) => break Ok(code),
            Err(e) => break Err(e),
        }
    };
    watcher.abort();
    let _ = (
        tokio::io::stdout().flush().await,
        tokio::io::stderr().flush().await,
    );
    result
}

async fn open(ctx: &Context, spec: &SessionSpec) -> Result<(Session, Channel, Option<Inbound>)> {
    let (session, mut channel) = session::start(&ctx.ssm, spec, ctx.channel.clone()).await?;
    match handshake::perform(&mut channel).await {
        Ok(Start::NoHandshake(first)) => Ok((session, channel, Some(first))),
        Ok(Start::Handshaken(_)) => Ok((session, channel, None)),
        Err(e) => {
            let _ = session.end(Some(&mut channel)).await;
            Err(e)
        }
    }
}

async fn relay(
    way: &Way,
    channel: &mut Channel,
    first: Option<Inbound>,
    nonce: &str,
    no_stdin: bool,
    interrupts: &mut mpsc::Receiver<()>,
) -> Result<Piped> {
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    let status = match way {
        Way::Piped => return relay_piped(channel, first, no_stdin, interrupts).await,
        Way::Terminal => command::StatusSource::Marker(command::MarkerScanner::new(nonce)),
        Way::Document(_) => command::StatusSource::Agent,
    };
    command::relay(channel, first, status, &mut stdout, &mut stderr, interrupts)
        .await
        .map(Piped::Status)
}

/// The helper's session: its frames to stdout and stderr, stdin to it once it is ready,
/// each ^C as SIGINT to the command.
async fn relay_piped(
    channel: &mut Channel,
    first: Option<Inbound>,
    no_stdin: bool,
    interrupts: &mut mpsc::Receiver<()>,
) -> Result<Piped> {
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    let mut decoder = piped::Decoder::default();
    // stdin goes on its own task, so that output is read while a send waits for the
    // window: the command may need its output taken before it reads more input.
    let mut forwarding: Option<tokio::task::JoinHandle<Result<()>>> = None;
    let mut interrupts_open = true;
    let mut next = first;
    let outcome = loop {
        let m = match next.take() {
            Some(m) => m,
            None => tokio::select! {
                m = channel.recv() => m.unwrap_or(Inbound::Closed(String::new())),
                i = interrupts.recv(), if interrupts_open => {
                    match i {
                        Some(()) => channel.sender.send_output(&piped::signal_frame(2)).await?,
                        None => interrupts_open = false,
                    }
                    continue;
                }
            },
        };
        let bytes = match m {
            Inbound::Data(PayloadType::Output, bytes) => bytes,
            Inbound::Data(_, _) => continue,
            Inbound::Closed(reason) => {
                let said = decoder.noise();
                let why = [reason, said]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
                break Err(Error::transfer(format!(
                    "the remote command ended without reporting its exit status{}",
                    if why.is_empty() { String::new() } else { format!(" ({why})") }
                ))
                .hint("the session may have been terminated or timed out on the service side; -t runs the command without the helper"));
            }
            Inbound::Failed(e) => break Err(e),
        };
        let was_ready = decoder.is_ready();
        let mut ended = None;
        for event in decoder.push(&bytes)? {
            match event {
                Event::NoPython => ended = Some(Piped::NoPython),
                Event::Stdout(b) => write(&mut stdout, &b).await?,
                Event::Stderr(b) => write(&mut stderr, &b).await?,
                Event::Exit(code) => ended = Some(Piped::Status(code)),
            }
        }
        if let Some(end) = ended {
            break Ok(end);
        }
        // Only once the helper is ready: what a raw terminal is sent before then is
        // cooked (echoed, edited).
        if !was_ready && decoder.is_ready() {
            let sender = channel.sender.clone();
            forwarding = Some(tokio::spawn(forward_stdin(sender, no_stdin)));
        }
    };
    if let Some(task) = forwarding {
        task.abort();
    }
    outcome
}

/// stdin as frames until its end, then the end frame (`-n`: the end frame at once).
async fn forward_stdin(sender: ChannelSender, no_stdin: bool) -> Result<()> {
    if !no_stdin {
        let mut chunks = super::stdin::chunks(64 * 1024);
        while let Some(chunk) = chunks.recv().await {
            let bytes = match chunk {
                Ok(bytes) => bytes,
                Err(e) => {
                    // The command still needs its end-of-file, or it waits forever.
                    tracing::warn!("reading stdin failed ({e}); the command gets end-of-file");
                    break;
                }
            };
            for piece in bytes.chunks(piped::STDIN_CHUNK) {
                sender.send_output(&piped::stdin_frame(piece)).await?;
            }
        }
    }
    sender.send_output(piped::STDIN_END).await
}

/// The command's output; a closed stdout (`exec … | head`) is the reader's choice, so
/// the rest is dropped rather than reported.
async fn write<W: AsyncWrite + Unpin>(out: &mut W, bytes: &[u8]) -> Result<()> {
    match out.write_all(bytes).await.and(out.flush().await) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::usage(format!(
            "writing the command's output failed: {e}"
        ))),
    }
}
