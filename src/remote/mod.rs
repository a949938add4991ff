//! The instance-side receiver, embedded in the binary, and the command line that starts it
//! in a Session Manager command session.

pub(crate) mod piped;
pub(crate) mod protocol;

use crate::error::Flag;
use base64::Engine;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use std::io::Write;

/// The receiver's source (Python 3.6+, standard library only).
pub(crate) const RECEIVER: &str = include_str!("receiver.py");

/// A raw, silent terminal first (nothing the pty does can touch the markers), then
/// python3, or the NO_PYTHON marker and exit 127.
const RAW_PYTHON3_OR_SAY_SO: &str = "stty raw -echo 2>/dev/null; command -v python3 >/dev/null 2>&1 || { printf '\\036%s\\n' SSMCP-NO-PYTHON3; exit 127; }; ";

/// The exec helper's source (same rules as the receiver's).
pub(crate) const EXEC_HELPER: &str = include_str!("exec_helper.py");

/// Printed by the receiver once it listens: `<RS>SSMCP-READY <port> <token>`.
const READY: &[u8] = b"\x1eSSMCP-READY ";
/// Printed by the launcher when the instance has no python3.
const NO_PYTHON: &[u8] = b"\x1eSSMCP-NO-PYTHON3";

/// Who the receiver runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// The session's own user (ssm-user on EC2 by default).
    SessionUser,
    /// `sudo -n -u USER`; `None` is root (`--sudo`).
    Sudo(Option<String>),
}

/// The command for AWS-StartInteractiveCommand. The receiver travels compressed and
/// base64-encoded inside the command (a few KiB), so nothing is written to the instance.
/// The terminal goes raw and silent first so nothing the pty does can touch our markers.
/// `port`: where the receiver should listen if that port is free (it says where it did).
pub(crate) fn launch_command(run_as: &RunAs, port: Option<u16>) -> String {
    let args = port.map(|p| format!(" port {p}")).unwrap_or_default();
    format!(
        "{RAW_PYTHON3_OR_SAY_SO}exec {}",
        python_receiver(run_as, &args)
    )
}

/// What the receiver does when Run Command starts it (S3 transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunMode {
    /// Fetch a bundle from a presigned GET and place it (uploads).
    Pull,
    /// List sources and PUT them, with their bytes, to a presigned URL (downloads).
    Export,
    /// Upload a spool `Export` kept (too big for one PUT) with presigned part URLs.
    Parts,
}

/// The script for AWS-RunShellScript (S3 transport): the receiver in `mode`, with
/// `request` (one JSON line holding the presigned URL) on its stdin through a here-doc,
/// so the URL never appears on a command line another local user could read with ps.
pub(crate) fn run_command_script(run_as: &RunAs, mode: RunMode, request: &str) -> String {
    let arg = match mode {
        RunMode::Pull => " pull",
        RunMode::Export => " export",
        RunMode::Parts => " parts",
    };
    format!(
        "command -v python3 >/dev/null 2>&1 || {{ echo 'ssmcp: the instance has no python3, which the S3 transport needs' >&2; exit 127; }}\n\
         {} <<'SSMCP-REQUEST'\n{request}\nSSMCP-REQUEST\n",
        python_receiver(run_as, arg)
    )
}

/// `[sudo -n [-u USER]] python3 -c '<receiver>'ARGS`.
fn python_receiver(run_as: &RunAs, args: &str) -> String {
    python_program(RECEIVER, "ssmcp-receiver", run_as, args)
}

/// The command for AWS-StartInteractiveCommand that runs `command` through the exec
/// helper (stdin, stdout and stderr apart; `piped`), or says the instance has no python3.
pub(crate) fn exec_helper_command(command: &str) -> String {
    let arg = base64::engine::general_purpose::STANDARD.encode(command.as_bytes());
    format!(
        "{RAW_PYTHON3_OR_SAY_SO}exec {}",
        python_program(
            EXEC_HELPER,
            "ssmcp-exec",
            &RunAs::SessionUser,
            &format!(" {arg}")
        )
    )
}

/// `[sudo -n [-u USER]] python3 -c '<source, compressed>'ARGS`: nothing is written to
/// the instance.
fn python_program(source: &str, name: &str, run_as: &RunAs, args: &str) -> String {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
    // Writing into a Vec cannot fail.
    let _ = z.write_all(source.as_bytes());
    let packed = base64::engine::general_purpose::STANDARD.encode(z.finish().unwrap_or_default());
    let sudo = match run_as {
        RunAs::SessionUser => String::new(),
        RunAs::Sudo(None) => "sudo -n ".to_string(),
        RunAs::Sudo(Some(u)) => format!("sudo -n -u {} ", crate::session::command::shell_quote(u)),
    };
    format!(
        "{sudo}python3 -c 'import base64,zlib;exec(compile(zlib.decompress(base64.b64decode(\"{packed}\")),\"{name}\",\"exec\"))'{args}"
    )
}

/// When `run_as` went through sudo and what the instance printed is sudo refusing to
/// run without a password: the error to report (the same for every transport).
pub(crate) fn sudo_refusal(run_as: &RunAs, output: &str) -> Option<crate::error::Error> {
    let refused =
        output.contains("password is required") || output.contains("terminal is required");
    (matches!(run_as, RunAs::Sudo(_)) && refused).then(|| {
        crate::error::Error::new(
            crate::error::Kind::Auth,
            "sudo on the instance needs a password, which ssmcp cannot type",
        )
        .hint(format!("allow the session user passwordless sudo (NOPASSWD in sudoers) for python3 and sh, or copy without {} / user@", Flag::Sudo))
    })
}

/// What the launch printed, as far as it can be told yet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Launch {
    Pending,
    Ready { port: u16, token: String },
    NoPython,
}

/// Collects the command session's output until the receiver reports in. Keeps at most
/// `LIMIT` bytes, enough for any sudo or shell complaint we want to quote.
#[derive(Default)]
pub(crate) struct LaunchScanner {
    seen: Vec<u8>,
}

const LIMIT: usize = 16 * 1024;

impl LaunchScanner {
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Launch {
        self.seen.extend_from_slice(bytes);
        if self.seen.len() > LIMIT {
            let cut = self.seen.len() - LIMIT;
            self.seen.drain(..cut);
        }
        if find(&self.seen, NO_PYTHON).is_some() {
            return Launch::NoPython;
        }
        let Some(at) = find(&self.seen, READY) else {
            return Launch::Pending;
        };
        let rest = &self.seen[at + READY.len()..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Launch::Pending;
        };
        let line = String::from_utf8_lossy(&rest[..nl]);
        let mut words = line.split_whitespace();
        match (words.next().and_then(|p| p.parse().ok()), words.next()) {
            (Some(port), Some(token)) => Launch::Ready {
                port,
                token: token.to_string(),
            },
            _ => Launch::Pending,
        }
    }

    /// What the instance printed, for error messages (never contains the token: the
    /// READY line is only ever followed by nothing).
    pub(crate) fn output(&self) -> String {
        let text = String::from_utf8_lossy(&self.seen);
        text.replace('\r', "").trim().to_string()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_is_found_in_pieces() {
        let mut s = LaunchScanner::default();
        assert_eq!(s.push(b"motd\r\n\x1eSSMCP-REA"), Launch::Pending);
        assert_eq!(s.push(b"DY 4242 ab"), Launch::Pending);
        assert_eq!(
            s.push(b"cd\r\n"),
            Launch::Ready {
                port: 4242,
                token: "abcd".into()
            }
        );
    }

    #[test]
    fn missing_python_is_reported() {
        let mut s = LaunchScanner::default();
        assert_eq!(s.push(b"\x1eSSMCP-NO-PYTHON3\r\n"), Launch::NoPython);
    }

    #[test]
    fn the_command_carries_no_marker_text_of_its_own() {
        // If the shell echoed the command, the markers must still not appear in it.
        let cmd = launch_command(&RunAs::Sudo(Some("app user".into())), Some(40000));
        assert!(find(cmd.as_bytes(), READY).is_none());
        assert!(find(cmd.as_bytes(), NO_PYTHON).is_none());
        assert!(cmd.contains("sudo -n -u 'app user' python3"));
        assert!(cmd.ends_with("' port 40000"), "{cmd}");
        // The agent runs it as one `sh -c` argument (Linux caps one at 128 KiB); the
        // guard is far below that, to notice the receiver growing.
        assert!(cmd.len() < 20 * 1024, "{}", cmd.len());
    }
}
