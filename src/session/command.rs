//! Command sessions (§8). InteractiveCommands is the only type that streams output while
//! the process runs, but it runs in a pty and reports no exit status, so the command is
//! wrapped: echo and CR/LF translation are turned off, ^C still reaches the process as a
//! signal, and the exit status comes back as a marker line the client strips.

use super::channel::{Channel, Inbound};
use crate::error::{Error, Flag, Result};
use ssm_proto::PayloadType;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

pub(crate) const DOCUMENT: &str = "AWS-StartInteractiveCommand";

/// Quote `s` for a POSIX shell.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The text that runs on the instance. `trap : INT` keeps the wrapper alive after ^C
/// (a handler, not an ignore, so the command still gets the default action) so that it
/// can report the command's status.
pub(crate) fn wrap(command: &str, nonce: &str) -> String {
    format!(
        "trap : INT; stty -echo -onlcr 2>/dev/null; sh -c {}; printf '\\036SSMCP-EXIT-{nonce}:%d\\n' \"$?\"",
        shell_quote(command)
    )
}

/// Finds the exit-status marker in the output stream, passing everything else through.
/// Bytes that might be the start of a marker are held back until they can be decided.
pub(crate) struct MarkerScanner {
    marker: Vec<u8>,
    held: Vec<u8>,
    code: Option<i32>,
}

impl MarkerScanner {
    pub(crate) fn new(nonce: &str) -> MarkerScanner {
        MarkerScanner {
            marker: format!("\x1eSSMCP-EXIT-{nonce}:").into_bytes(),
            held: Vec::new(),
            code: None,
        }
    }

    pub(crate) fn code(&self) -> Option<i32> {
        self.code
    }

    /// Returns the bytes that are certainly command output.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.code.is_some() {
            return Vec::new(); // nothing after the marker is the command's
        }
        self.held.extend_from_slice(bytes);
        if let Some(pos) = find(&self.held, &self.marker) {
            let after = &self.held[pos + self.marker.len()..];
            if let Some(nl) = after.iter().position(|&b| b == b'\n') {
                let digits = String::from_utf8_lossy(&after[..nl]).trim().to_string();
                self.code = digits.parse().ok();
                let out = self.held[..pos].to_vec();
                self.held.clear();
                return out;
            }
            // Marker seen, status not complete yet: keep holding from the marker on.
            let out = self.held[..pos].to_vec();
            self.held.drain(..pos);
            return out;
        }
        // Release all but a tail that could still grow into the marker.
        let keep = (1..self.marker.len().min(self.held.len() + 1))
            .rev()
            .find(|&k| self.held.ends_with(&self.marker[..k]))
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        self.held.drain(..cut).collect()
    }

    /// What is left when the stream ends without a marker.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Where the exit status comes from.
pub(crate) enum StatusSource {
    /// InteractiveCommands: the wrapper's marker line (see [`wrap`]).
    Marker(MarkerScanner),
    /// NonInteractiveCommands with separateOutputStream: the agent's `EXIT_CODE: n`.
    Agent,
}

/// Relay the session until it ends: Output to `out`, StdErr to `err`, each
/// `interrupts` item forwarded as ^C. Returns the remote exit status.
pub(crate) async fn relay<W: AsyncWrite + Unpin, E: AsyncWrite + Unpin>(
    channel: &mut Channel,
    first: Option<Inbound>,
    mut status: StatusSource,
    out: &mut W,
    err: &mut E,
    interrupts: &mut mpsc::Receiver<()>,
) -> Result<i32> {
    let mut reported = None;
    let mut next = first;
    let mut interrupts_open = true;
    loop {
        let m = match next.take() {
            Some(m) => m,
            None => tokio::select! {
                m = channel.recv() => match m {
                    Some(m) => m,
                    None => Inbound::Closed(String::new()),
                },
                i = interrupts.recv(), if interrupts_open => {
                    match i {
                        Some(()) => channel.sender.send(PayloadType::Output, vec![0x03]).await?,
                        None => interrupts_open = false,
                    }
                    continue;
                }
            },
        };
        match m {
            Inbound::Data(PayloadType::Output, bytes) => match &mut status {
                StatusSource::Marker(scanner) => write(out, &scanner.push(&bytes)).await?,
                StatusSource::Agent => write(out, &bytes).await?,
            },
            Inbound::Data(PayloadType::StdErr, bytes) => write(err, &bytes).await?,
            Inbound::Data(PayloadType::ExitCode, bytes) => {
                reported = String::from_utf8_lossy(&bytes)
                    .trim()
                    .strip_prefix("EXIT_CODE:")
                    .and_then(|n| n.trim().parse().ok());
            }
            Inbound::Data(_, _) => {}
            Inbound::Closed(reason) => {
                let code = match &mut status {
                    StatusSource::Marker(scanner) => {
                        write(out, &scanner.finish()).await?;
                        scanner.code()
                    }
                    StatusSource::Agent => reported,
                };
                return code.ok_or_else(|| {
                    let why = if reason.is_empty() { String::new() } else { format!(" ({reason})") };
                    Error::transfer(format!("the remote command ended without reporting its exit status{why}"))
                        .hint(format!("the session may have been terminated or timed out on the service side; with {}, the document must set separateOutputStream", Flag::Document))
                });
            }
            Inbound::Failed(e) => return Err(e),
        }
    }
}

async fn write<W: AsyncWrite + Unpin>(out: &mut W, bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    out.write_all(bytes)
        .await
        .map_err(|e| Error::transfer(format!("cannot write output: {e}")))?;
    out.flush()
        .await
        .map_err(|e| Error::transfer(format!("cannot write output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn marker_is_found_across_chunk_boundaries() {
        let mut s = MarkerScanner::new("abc");
        let stream = b"hello\nworld\x1eSSMCP-EXIT-abc:42\n";
        let mut out = Vec::new();
        for b in stream.chunks(3) {
            out.extend(s.push(b));
        }
        assert_eq!(out, b"hello\nworld");
        assert_eq!(s.code(), Some(42));
    }

    #[test]
    fn near_misses_are_released() {
        let mut s = MarkerScanner::new("abc");
        let mut out = s.push(b"x\x1eSSMCP-EX");
        out.extend(s.push(b"AMPLE\n"));
        out.extend(s.finish());
        assert_eq!(out, b"x\x1eSSMCP-EXAMPLE\n");
        assert_eq!(s.code(), None);
    }
}
