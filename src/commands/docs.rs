//! `ssmcp completions SHELL` and `ssmcp man`: generated from the clap definitions, so
//! they cannot drift from the command line they describe.

use crate::cli::{Cli, CompletionsArgs};
use crate::error::{Error, Result};
use clap::CommandFactory;
use std::io::Write;

pub fn completions(args: &CompletionsArgs) -> Result<i32> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "ssmcp", &mut out);
    emit(&out)
}

/// The page for `ssmcp` with a section per subcommand (one man page, as scp has).
pub fn man() -> Result<i32> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut out)
        .map_err(|e| Error::usage(format!("cannot render the man page: {e}")))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("ssmcp {}", sub.get_name());
        let sub = sub.clone().bin_name(name.clone());
        let man = clap_mangen::Man::new(sub);
        let _ = writeln!(out, ".SH \"{}\"", name.to_uppercase());
        man.render_description_section(&mut out)
            .and_then(|()| man.render_synopsis_section(&mut out))
            .and_then(|()| man.render_options_section(&mut out))
            .map_err(|e| Error::usage(format!("cannot render the man page: {e}")))?;
    }
    emit(&out)
}

/// Write generated text to stdout (`man`, `completions`, `ssh-config`).
pub(crate) fn emit(bytes: &[u8]) -> Result<i32> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(0),
        // A closed pipe (`ssmcp man | head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Error::usage(format!("cannot write to stdout: {e}"))),
    }
}
