//! Ways to move a bundle between this machine and an instance. Each transport takes a
//! local plan (uploads) or remote sources (downloads) and reports progress as events;
//! none of them knows about the terminal.

pub mod pty;
pub mod s3;
pub mod send;
pub mod stream;
pub mod zlib;

use crate::error::{Error, Kind};
use std::time::{Duration, Instant};

/// Progress events; `progress.rs` renders them as bars or JSON lines.
pub trait Progress: Send + Sync {
    /// The whole job is known: how many files and bytes will move.
    fn plan(&self, files: u64, bytes: u64);
    /// More bytes moved (and were verified or are being verified).
    fn advance(&self, bytes: u64);
    /// One file is complete on the receiving side (staged, verified).
    fn file_done(&self, path: &[u8], bytes: u64);
    /// Something the user should know (transport chosen, skipped entries).
    fn note(&self, text: &str);
    /// Something the user must hear about even without -v (a source that grew).
    fn warn(&self, text: &str);
}

/// Uploads: how the receiver should place what it gets.
#[derive(Debug, Clone, Default)]
pub struct PlaceOptions {
    /// -p: modes and modification times exactly as the source.
    pub preserve: bool,
    /// --atomic: build each directory tree beside its destination and swap it in.
    pub atomic: bool,
}

/// What a finished copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    pub bytes: u64,
    /// --sync: files left alone because the destination already had them.
    pub unchanged: u64,
    /// --delete: entries removed from the destination.
    pub deleted: u64,
}

/// What to do after a digest mismatch, whichever side found it.
pub const DAMAGED: &str =
    "the bytes were damaged on the way; nothing was put in place, run the copy again";

/// A failure the receiver reported, by its class (see remote/receiver.py).
pub fn remote_failure(class: &str, message: &str) -> Error {
    let (kind, hint) = match class {
        "permission" => (
            Kind::Write,
            Some("the session's user cannot write there; use --sudo or user@ to write as another user"),
        ),
        "space" => (Kind::Write, Some("free some space on the instance")),
        "write" => (Kind::Write, None),
        "usage" | "source" => (Kind::Usage, None),
        "integrity" => (Kind::Transfer, Some(DAMAGED)),
        "aborted" => (Kind::Transfer, None),
        _ => (Kind::Protocol, None),
    };
    let e = Error::new(kind, format!("on the instance: {message}"));
    match hint {
        Some(h) => e.hint(h),
        None => e,
    }
}

/// Keeps a sender under `-l` (bytes per second).
pub struct Limiter {
    rate: Option<u64>,
    start: Instant,
    sent: u64,
}

impl Limiter {
    pub fn new(bytes_per_sec: Option<u64>) -> Limiter {
        Limiter {
            rate: bytes_per_sec.filter(|r| *r > 0),
            start: Instant::now(),
            sent: 0,
        }
    }

    pub async fn take(&mut self, n: usize) {
        let Some(rate) = self.rate else { return };
        self.sent += n as u64;
        let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}
