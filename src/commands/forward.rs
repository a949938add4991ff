//! `ssmcp forward TARGET [LOCAL:]REMOTE`: like `aws ssm start-session` with a port
//! forwarding document, several local connections at once (mux mode).

use super::Tracking;
use super::{Context, Signals};
use crate::cli::{ForwardArgs, Global};
use crate::error::{Error, Result};
use crate::progress::{Progress, Reporter};
use crate::session::port::{self, Ended, PortSession};
use crate::session::SessionSpec;
use tokio::net::TcpListener;

fn parse_ports(spec: &str) -> Result<(u16, u16)> {
    let bad = || {
        Error::usage(format!("'{spec}' is not a port specification"))
            .hint("use REMOTE_PORT or LOCAL_PORT:REMOTE_PORT, e.g. 8080:80")
    };
    let (local, remote) = match spec.split_once(':') {
        Some((l, r)) => (l.parse().map_err(|_| bad())?, r.parse().map_err(|_| bad())?),
        None => (0, spec.parse().map_err(|_| bad())?),
    };
    if remote == 0 {
        return Err(bad());
    }
    Ok((local, remote))
}

pub async fn run(global: &Global, sessions: &Tracking, args: &ForwardArgs) -> Result<i32> {
    let mut signals = Signals::register();
    let reporter = Reporter::plain(global.quiet, global.verbose > 0);
    let (local, remote) = parse_ports(&args.ports)?;
    let ctx = Context::new(global, sessions, &args.target).await?;
    let listener = TcpListener::bind((args.bind.as_str(), local))
        .await
        .map_err(|e| {
            Error::usage(format!("cannot listen on {}:{local}: {e}", args.bind))
                .hint("pick another local port, or 0 for any free one")
        })?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::usage(format!("cannot listen: {e}")))?;
    let mut params = vec![("portNumber".to_string(), remote.to_string())];
    let document = match &args.remote_host {
        Some(h) => {
            params.push(("host".to_string(), h.clone()));
            "AWS-StartPortForwardingSessionToRemoteHost"
        }
        None => "AWS-StartPortForwardingSession",
    };
    let spec = SessionSpec {
        target: ctx.target.instance_id.clone(),
        document: document.into(),
        parameters: params,
    };
    let (session, ports, info) = port::open(&ctx.ssm, &spec, ctx.channel.clone()).await?;
    if !info.customer_message.is_empty() {
        reporter.info(&info.customer_message);
    }
    reporter.info(&format!(
        "Port {} opened for session {} ({:?} mode, agent {}). Ctrl-C to stop.",
        local_addr.port(),
        session.id,
        ports.mode,
        info.agent_version
    ));
    let outcome = tokio::select! {
        biased;
        _ = signals.recv() => Ok(0),
        ended = ports.closed() => match ended {
            Ended::Failed(e) => Err(e),
            _ => Ok(0),
        },
        r = accept_loop(&listener, &ports) => r,
        _ = report_refused(&ports, &reporter) => Ok(0),
    };
    let lost = ports.terminate().await;
    let end = session.end_after(lost).await;
    if let Some(w) = end.warning {
        reporter.warn(&w);
    }
    outcome
}

/// Say so each time the agent could not connect a local connection to the port (it
/// then closes that connection); never resolves.
async fn report_refused(ports: &PortSession, reporter: &Reporter) {
    let mut refused = ports.connect_errors();
    while refused.changed().await.is_ok() {
        reporter.warn("the agent could not connect to the destination port (ConnectToPortError)");
    }
    std::future::pending::<()>().await;
}

async fn accept_loop(listener: &TcpListener, ports: &PortSession) -> Result<i32> {
    loop {
        let (mut tcp, _) = listener
            .accept()
            .await
            .map_err(|e| Error::transfer(format!("accepting a local connection failed: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut stream = ports.open_stream().await?;
        tokio::spawn(async move {
            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ports;

    #[test]
    fn port_specs() {
        assert_eq!(parse_ports("80").unwrap(), (0, 80));
        assert_eq!(parse_ports("8080:80").unwrap(), (8080, 80));
        assert!(parse_ports("0").is_err());
        assert!(parse_ports("x:80").is_err());
        assert!(parse_ports("70000").is_err());
    }
}
