//! ssmcp's entry point: parse, dispatch, map the outcome to an exit code.

use clap::Parser;
use ssmcp::cli::{Cli, Command};
use ssmcp::commands;

/// How long an exiting ssmcp waits for the ends of sessions it could not end in line.
const CLEANUP_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; every other command-line
            // error is the usage class (64), as documented, not clap's own 2.
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    // The SDK's own log lines (credential chain WARNs and the like) reach users only
    // with -vv: ssmcp says what went wrong in its own words.
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "ssmcp=error",
        (_, 0) => "ssmcp=warn",
        (_, 1) => "ssmcp=info",
        _ => "ssmcp=debug,warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SSMCP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ssmcp: cannot start the async runtime: {e}");
            std::process::exit(70);
        }
    };
    let sessions = commands::Tracking::default();
    let result = runtime.block_on(async {
        match &cli.command {
            Some(Command::Forward(a)) => commands::forward::run(&cli.global, &sessions, a).await,
            Some(Command::Exec(a)) => commands::exec::run(&cli.global, &sessions, a).await,
            Some(Command::Proxy(a)) => commands::proxy::run(&cli.global, &sessions, a).await,
            Some(Command::SshConfig(a)) => commands::proxy::ssh_config(a),
            Some(Command::Completions(a)) => commands::docs::completions(a),
            Some(Command::Man) => commands::docs::man(),
            Some(Command::Doctor(a)) => commands::doctor::run(&cli.global, &sessions, a).await,
            Some(Command::Gc(a)) => commands::gc::run(&cli.global, a).await,
            None => commands::copy::run(&cli.global, &sessions, &cli.copy).await,
        }
    });
    // Sessions whose start or use was cancelled (^C) are still being ended: finish that,
    // bounded, so no session outlives the process. Then don't wait for stray tasks.
    if !runtime.block_on(sessions.cleanup.finish(CLEANUP_BOUND)) {
        tracing::warn!("some sessions may still be open; they end at the service's idle timeout");
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => std::process::exit(code),
        // ssh prints a ProxyCommand's stderr before its own error: one line each.
        Err(e) if matches!(cli.command, Some(Command::Proxy(_))) => {
            eprintln!("ssmcp: {}", commands::proxy::one_line(&e.to_string()));
            std::process::exit(e.kind.exit_code());
        }
        Err(e) => {
            eprintln!("ssmcp: {e}");
            std::process::exit(e.kind.exit_code());
        }
    }
}

/// Colour the log only on a terminal, and never when NO_COLOR is set to anything
/// (no-color.org).
fn colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    std::io::IsTerminal::is_terminal(&std::io::stderr()) && !no_color
}
