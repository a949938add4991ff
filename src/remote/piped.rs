//! The exec helper's line protocol (exec_helper.py has the grammar): what ssmcp sends it
//! and what it sends back, without I/O. Everything on the terminal is printable ASCII,
//! so neither the pty nor the agent's UTF-8 handling (§8.3) can change a byte.

use crate::error::{Error, Result};
use base64::Engine;

/// The helper's first line, once its terminal is raw.
const READY: &[u8] = b"\x1eSSMCP-EXEC-READY\n";
/// Bytes of stdin per frame: 1020 base64 characters, so each frame is one message of at
/// most 1 KiB, what every official client sends.
pub(crate) const STDIN_CHUNK: usize = 765;
/// Longest line accepted from the helper (its frames are under 1.1 KiB).
const MAX_LINE: usize = 64 * 1024;
/// Output kept while waiting for READY, to quote if the helper never starts.
const MAX_NOISE: usize = 4 * 1024;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// A frame of stdin.
pub(crate) fn stdin_frame(bytes: &[u8]) -> Vec<u8> {
    let mut line = b"I".to_vec();
    line.extend(b64().encode(bytes).into_bytes());
    line.push(b'\n');
    line
}

/// stdin has ended.
pub(crate) const STDIN_END: &[u8] = b"Z\n";

/// Deliver signal `n` to the command (its process group).
pub(crate) fn signal_frame(n: i32) -> Vec<u8> {
    format!("S{n}\n").into_bytes()
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command's status (128+N for signal N); the last event.
    Exit(i32),
    /// The instance has no python3 (the launcher said so instead of starting).
    NoPython,
}

/// Turns the session's output into events.
#[derive(Default)]
pub(crate) struct Decoder {
    ready: bool,
    buf: Vec<u8>,
    /// What came before READY (a shell profile's output, an error).
    noise: Vec<u8>,
}

impl Decoder {
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<Event>> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        if !self.ready {
            if let Some(at) = find(&self.buf, READY) {
                self.noise.extend_from_slice(&self.buf[..at]);
                self.buf.drain(..at + READY.len());
                self.ready = true;
            } else if find(&self.buf, super::NO_PYTHON).is_some() {
                self.buf.clear();
                events.push(Event::NoPython);
                return Ok(events);
            } else {
                // Keep what could still be the start of a marker.
                let keep = READY.len().max(super::NO_PYTHON.len());
                if self.buf.len() > keep {
                    let cut = self.buf.len() - keep;
                    let room = MAX_NOISE.saturating_sub(self.noise.len());
                    self.noise.extend_from_slice(&self.buf[..cut.min(room)]);
                    self.buf.drain(..cut);
                }
                return Ok(events);
            }
        }
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            events.push(parse(&line[..line.len() - 1])?);
        }
        if self.buf.len() > MAX_LINE {
            return Err(protocol("a line longer than 64 KiB"));
        }
        Ok(events)
    }

    /// Whether the helper has started (stdin may be sent from now on).
    pub(crate) fn is_ready(&self) -> bool {
        self.ready
    }

    /// What the instance printed before the helper started (for an error message).
    pub(crate) fn noise(&self) -> String {
        String::from_utf8_lossy(&self.noise).trim().to_string()
    }
}

fn parse(line: &[u8]) -> Result<Event> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (kind, rest) = line
        .split_first()
        .ok_or_else(|| protocol("an empty line"))?;
    let data = || {
        b64()
            .decode(rest)
            .map_err(|_| protocol("a frame that is not base64"))
    };
    match kind {
        b'O' => Ok(Event::Stdout(data()?)),
        b'E' => Ok(Event::Stderr(data()?)),
        b'X' => std::str::from_utf8(rest)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Event::Exit)
            .ok_or_else(|| protocol("an exit status that is not a number")),
        _ => Err(protocol("a line of unknown kind")),
    }
}

fn protocol(what: &str) -> Error {
    Error::new(
        crate::error::Kind::Protocol,
        format!("the exec helper on the instance sent {what}"),
    )
    .hint("run the command again; if it persists, use -t (a terminal, stderr merged) and report it")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_before_ready_is_noise_and_frames_after_it_are_events() {
        let mut d = Decoder::default();
        assert_eq!(d.push(b"profile says hi\r\n\x1eSSMCP-EXE").unwrap(), []);
        let stdout = stdin_frame(b"\x00\xef\xbf\xbd\r\n")[1..].to_vec();
        let mut rest = b"C-READY\nO".to_vec();
        rest.extend(&stdout);
        rest.extend(b"EaGk=\nX3");
        let got = d.push(&rest).unwrap();
        assert_eq!(
            got,
            [
                Event::Stdout(b"\x00\xef\xbf\xbd\r\n".to_vec()),
                Event::Stderr(b"hi".to_vec())
            ]
        );
        assert_eq!(d.push(b"\n").unwrap(), [Event::Exit(3)]);
        assert_eq!(d.noise(), "profile says hi");
    }

    #[test]
    fn no_python_is_recognised_and_garbage_is_an_error() {
        let mut d = Decoder::default();
        assert_eq!(
            d.push(b"\x1eSSMCP-NO-PYTHON3\r\n").unwrap(),
            [Event::NoPython]
        );
        let mut d = Decoder::default();
        d.push(READY).unwrap();
        assert!(d.push(b"O!!!\n").is_err());
        let mut d = Decoder::default();
        d.push(READY).unwrap();
        assert!(d.push(&vec![b'O'; MAX_LINE + 1]).is_err());
    }

    #[test]
    fn frames_stay_within_one_kib() {
        let f = stdin_frame(&[0xff; STDIN_CHUNK]);
        assert!(f.len() <= 1024, "{}", f.len());
        assert_eq!(signal_frame(2), b"S2\n");
    }
}
