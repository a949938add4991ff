//! Ways to move a bundle between this machine and instances, behind one trait. Each
//! transport takes a local plan (uploads) or remote sources (downloads), reports
//! progress as events (none of them knows about the terminal), and when closed ends
//! what it opened and says what it could not clean up.

pub(crate) mod pty;
pub(crate) mod s3;
pub(crate) mod send;
pub(crate) mod stream;
pub(crate) mod zlib;

use crate::copy::local_dest::Requested;
use crate::copy::local_source::Plan;
use crate::error::Result;
pub(crate) use crate::progress::Progress;
use crate::progress::Reporter;
use std::path::Path;
use std::time::{Duration, Instant};

/// One way of copying, opened to its destination (one instance; for S3 uploads, a
/// fleet). The copy engine drives any of them the same way: one `push` or `pull`, then
/// `close` on every way out, ^C included.
#[async_trait::async_trait(?Send)]
pub(crate) trait Transport {
    /// Place `job.plan` at `job.dest` on the instance(s).
    async fn push(&mut self, job: Upload<'_>, reporter: &Reporter) -> Result<Summary>;
    /// List the sources on the instance and fetch them into `job.pull.dest` (with
    /// `dry_run`, only list them).
    async fn pull(&mut self, job: &Download<'_>, reporter: &Reporter) -> Result<Summary>;
    /// End every session, command and object this transport opened (`interrupted`:
    /// without waiting long for a clean end).
    async fn close(self: Box<Self>, interrupted: bool) -> Closed;
}

/// What an upload asks of a transport.
pub(crate) struct Upload<'a> {
    pub plan: Plan,
    /// The remote destination as typed.
    pub dest: &'a [u8],
    pub place: PlaceOptions,
    /// `-l`, in bytes per second.
    pub limit: Option<u64>,
    /// -C: the bundle travels zlib-compressed.
    pub compress: bool,
    /// --sync: leave out the files the destination already has.
    pub sync: bool,
    /// --delete: remove from the destination what the sources do not have.
    pub delete: bool,
}

/// What a download asks of a transport.
pub(crate) struct Download<'a> {
    pub pull: Pull<'a>,
    /// --exclude, matched against the listing.
    pub exclude: &'a globset::GlobSet,
    /// --dry-run: list, do not fetch.
    pub dry_run: bool,
    /// --parallel: how many sessions may carry the bytes.
    pub sessions: DownloadSessions,
}

/// How many port sessions a download's bytes may use (`--parallel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownloadSessions {
    /// No `--parallel`: grow with the size of the download (`stream::Manifest::connections`).
    Auto,
    /// `--parallel N`: at most N.
    AtMost(usize),
}

/// The sources of a download and how they land.
#[derive(Clone, Copy)]
pub(crate) struct Pull<'a> {
    /// Remote paths as typed; a trailing `/` on a directory means its contents.
    pub sources: &'a [Vec<u8>],
    pub recursive: bool,
    pub dest: &'a Path,
    pub preserve: bool,
    /// -C: file ranges travel zlib-compressed.
    pub compress: bool,
}

impl Pull<'_> {
    /// What a listing for this download may contain.
    pub(crate) fn requested(&self) -> Requested<'_> {
        Requested {
            sources: self.sources,
            recursive: self.recursive,
        }
    }
}

/// What closing a transport left behind.
#[derive(Debug, Default)]
pub(crate) struct Closed {
    /// For the user: sessions whose end the API refused, objects that stayed.
    pub warnings: Vec<String>,
    /// For transports that stage an object in S3: whether it is gone now.
    pub staged_object_removed: Option<bool>,
    /// An upload that an interrupt came too late to stop: every destination had placed
    /// everything (the S3 transport learns this only by polling, so the window is real).
    pub completed_anyway: bool,
}

impl Closed {
    pub(crate) fn warnings(warnings: Vec<String>) -> Closed {
        Closed {
            warnings,
            ..Closed::default()
        }
    }
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

/// Keeps a sender under `-l` (bytes per second).
pub(crate) struct Limiter {
    rate: Option<u64>,
    start: Instant,
    sent: u64,
}

impl Limiter {
    pub(crate) fn new(bytes_per_sec: Option<u64>) -> Limiter {
        Limiter {
            rate: bytes_per_sec.filter(|r| *r > 0),
            start: Instant::now(),
            sent: 0,
        }
    }

    pub(crate) async fn take(&mut self, n: usize) {
        let Some(rate) = self.rate else { return };
        self.sent += n as u64;
        let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}
