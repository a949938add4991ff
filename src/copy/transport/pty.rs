//! The "pty" transport, for instances without python3: everything travels through one
//! AWS-StartInteractiveCommand session whose terminal is raw and silent. ssmcp sends
//! shell scripts (templates in pty/*.sh, run by `sh`, using coreutils: head, base64, sha256sum,
//! mv, chmod, touch, find) and the file bytes as base64; the instance answers with
//! marker lines. Same guarantees as the stream transport: SHA-256 per file, temporary
//! names, everything renamed into place only after every file verified. Slower: base64
//! costs a third more bytes and downloads use one paced session.

use super::{Closed, Download, Limiter, PlaceOptions, Progress, Pull, Summary, Transport, Upload};
use crate::copy::bundle::{components, Meta, Mtime, Record};
use crate::copy::claims::{Claim, Claims};
use crate::copy::local_dest::{DownloadStage, Requested};
use crate::copy::local_source::Plan;
use crate::copy::transport::stream::Endpoint;
use crate::error::DAMAGED;
use crate::error::{Error, Kind, Result};
use crate::progress::Reporter;
use crate::remote::protocol::remote_failure;
use crate::remote::{sudo_refusal, RunAs};
use crate::session::channel::{Channel, Inbound};
use crate::session::handshake::{self, Start};
use crate::session::{self, command, Session, SessionSpec};
use base64::Engine;
use sha2::{Digest, Sha256};
use ssm_proto::PayloadType;
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;

const MARK: &[u8] = b"\x1eSSMCP-PTY ";
/// Bytes of a file read per step (a multiple of 3, so base64 chunks concatenate).
const CHUNK: usize = 3 * 64 * 1024;
/// How long to wait for the shell to report in after the session starts.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Output kept for error messages.
const KEEP: usize = 8 * 1024;
/// Longest marker line (a FAIL with its message) and longest other line (a download's
/// base64 listing: 2,000,000 entries of ~100 bytes) accepted from the instance.
const MAX_MARKER: usize = 64 * 1024;
const MAX_LINE: usize = 512 * 1024 * 1024;

/// Quote bytes for a POSIX shell (any byte but NUL survives).
fn sq(b: &[u8]) -> Vec<u8> {
    let mut out = vec![b'\''];
    for &c in b {
        if c == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(c);
        }
    }
    out.push(b'\'');
    out
}

/// A remote path as a shell word: `~` and relative paths are under `$HOME`.
fn remote_path(p: &[u8]) -> Vec<u8> {
    if p == b"~" {
        return b"\"$HOME\"".to_vec();
    }
    let rel = p
        .strip_prefix(b"~/")
        .or(if p.starts_with(b"/") { None } else { Some(p) });
    match rel {
        Some(r) => [&b"\"$HOME\"/"[..], &sq(r)].concat(),
        None => sq(p),
    }
}

/// The shell that runs our scripts. It reads a length line and that many bytes of script
/// from the terminal, runs it, reports its status, and waits for the next; length 0 ends.
fn launch_command(run_as: &RunAs) -> String {
    let sh = match run_as {
        RunAs::SessionUser => "sh".to_string(),
        RunAs::Sudo(None) => "sudo -n sh".to_string(),
        RunAs::Sudo(Some(u)) => format!("sudo -n -u {} sh", command::shell_quote(u)),
    };
    format!(
        "stty raw -echo -iexten 2>/dev/null; T=$(mktemp) || exit 1; trap 'rm -f \"$T\"' EXIT; \
         printf '\\036%s\\n' 'SSMCP-PTY READY'; \
         while IFS= read -r n && [ \"$n\" -gt 0 ]; do head -c \"$n\" > \"$T\"; chmod 644 \"$T\"; {sh} \"$T\"; printf '\\036%s %d\\n' 'SSMCP-PTY DONE' $?; done"
    )
}

/// The command session and what it printed.
pub(crate) struct Shell {
    session: Session,
    channel: Channel,
    /// Output not yet consumed by a reader, oldest first.
    pending: VecDeque<u8>,
    /// The tail of everything printed, for error messages.
    said: Vec<u8>,
    /// Who the scripts run as (a sudo refusal is told apart from other failures).
    run_as: RunAs,
}

impl Shell {
    pub(crate) async fn start(endpoint: &Endpoint, run_as: &RunAs) -> Result<Shell> {
        let spec = SessionSpec {
            target: endpoint.instance.clone(),
            document: command::DOCUMENT.to_string(),
            parameters: vec![("command".to_string(), launch_command(run_as))],
        };
        let (session, mut channel) =
            session::start(&endpoint.ssm, &spec, endpoint.channel.clone()).await?;
        let mut pending = VecDeque::new();
        match handshake::perform(&mut channel).await {
            Ok(Start::NoHandshake(Inbound::Data(_, b))) => pending.extend(b),
            Ok(_) => {}
            Err(e) => {
                let _ = session.end(Some(&mut channel)).await;
                return Err(e);
            }
        }
        let mut shell = Shell {
            session,
            channel,
            pending,
            said: Vec::new(),
            run_as: run_as.clone(),
        };
        match tokio::time::timeout(READY_TIMEOUT, shell.marker()).await {
            Ok(Ok(m)) if m == b"READY" => Ok(shell),
            Ok(Ok(_)) => Err(shell
                .fail(Error::protocol(
                    "the instance's shell said something unexpected",
                ))
                .await),
            Ok(Err(e)) => {
                let e = sudo_refusal(run_as, &shell.output()).unwrap_or(e);
                Err(shell.fail(e).await)
            }
            Err(_) => Err(shell
                .fail(Error::new(
                    Kind::Target,
                    "the instance's shell did not start in time",
                ))
                .await),
        }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.said)
            .replace('\r', "")
            .trim()
            .to_string()
    }

    /// End the session after a failure, returning the error to report.
    async fn fail(mut self, e: Error) -> Error {
        let _ = self.session.end(Some(&mut self.channel)).await;
        e
    }

    /// Tell the shell to exit and end the session (`hurry`: after ^C, without waiting
    /// long for it). Returns warnings for the user.
    pub(crate) async fn close(mut self, hurry: bool) -> Vec<String> {
        let _ = self.send(b"0\n").await;
        self.session
            .end_within(Some(&mut self.channel), session::end_wait(hurry))
            .await
            .warning
            .into_iter()
            .collect()
    }

    async fn send(&self, bytes: &[u8]) -> Result<()> {
        for chunk in bytes.chunks(self.channel.sender.max_payload()) {
            self.channel
                .sender
                .send(PayloadType::Output, chunk.to_vec())
                .await?;
        }
        Ok(())
    }

    /// Run a script: the loop in [`launch_command`] reads its length, then it.
    async fn run_script(&self, script: &[u8]) -> Result<()> {
        self.send(format!("{}\n", script.len()).as_bytes()).await?;
        self.send(script).await
    }

    /// More output from the instance; an error once the session has ended.
    async fn fill(&mut self) -> Result<()> {
        loop {
            match self.channel.recv().await {
                Some(Inbound::Data(PayloadType::Output, b)) => {
                    self.said.extend_from_slice(&b);
                    if self.said.len() > KEEP {
                        let cut = self.said.len() - KEEP;
                        self.said.drain(..cut);
                    }
                    self.pending.extend(b);
                    return Ok(());
                }
                Some(Inbound::Data(..)) => {}
                Some(Inbound::Failed(e)) => return Err(e),
                Some(Inbound::Closed(_)) | None => {
                    let said = self.output();
                    return Err(Error::transfer(if said.is_empty() {
                        "the instance's shell ended unexpectedly".to_string()
                    } else {
                        format!("the instance's shell ended unexpectedly: {said}")
                    }));
                }
            }
        }
    }

    /// The text after the next marker, up to its newline; anything before it is dropped
    /// (it is still in `said` for error messages).
    async fn marker(&mut self) -> Result<Vec<u8>> {
        loop {
            let hay = self.pending.make_contiguous();
            if let Some(at) = find(hay, MARK) {
                let rest = &hay[at + MARK.len()..];
                if let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                    let text = rest[..nl]
                        .strip_suffix(b"\r")
                        .unwrap_or(&rest[..nl])
                        .to_vec();
                    self.pending.drain(..at + MARK.len() + nl + 1);
                    return Ok(text);
                }
                if rest.len() > MAX_MARKER {
                    // A marker line is short; an endless one is not ours.
                    return Err(Error::protocol(
                        "the instance sent an unterminated marker line",
                    ));
                }
            } else if hay.len() > MARK.len() {
                // Keep only what could still be the start of a marker.
                let keep = MARK.len() - 1;
                let cut = hay.len() - keep;
                self.pending.drain(..cut);
            }
            self.fill().await?;
        }
    }

    /// Output up to (not including) the next newline, at most [`MAX_LINE`] bytes: the
    /// longest is the base64 listing of a download, bounded like any listing.
    async fn line(&mut self) -> Result<Vec<u8>> {
        loop {
            if self.pending.len() > MAX_LINE {
                return Err(Error::protocol(format!(
                    "the instance sent a line longer than {MAX_LINE} bytes"
                ))
                .hint(
                    "a listing this long is more than one download takes; copy the tree in parts",
                ));
            }
            if let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
                let mut l: Vec<u8> = self.pending.drain(..=nl).collect();
                l.pop();
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
                return Ok(l);
            }
            self.fill().await?;
        }
    }

    /// Decode one line of base64 output into `path` as it arrives (memory stays bounded
    /// whatever the file size); returns the byte count and the SHA-256 in hex.
    async fn decode_line_into(
        &mut self,
        path: &Path,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<(u64, String)> {
        use std::io::Write;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|e| crate::copy::local_dest::write_error("cannot write", path, &e))?;
        let mut hash = Sha256::new();
        let mut quads: Vec<u8> = Vec::new();
        let mut total = 0u64;
        loop {
            if self.pending.is_empty() {
                self.fill().await?;
            }
            let nl = self.pending.iter().position(|&b| b == b'\n');
            let take = nl.unwrap_or(self.pending.len());
            quads.extend(self.pending.drain(..take));
            if nl.is_some() {
                self.pending.pop_front();
                if quads.last() == Some(&b'\r') {
                    quads.pop();
                }
            }
            let whole = if nl.is_some() {
                quads.len()
            } else {
                quads.len() / 4 * 4
            };
            let data = b64
                .decode(&quads[..whole])
                .map_err(|_| Error::protocol("a file's base64 from the instance is damaged"))?;
            quads.drain(..whole);
            hash.update(&data);
            out.write_all(&data)
                .map_err(|e| crate::copy::local_dest::write_error("cannot write", path, &e))?;
            total += data.len() as u64;
            if total > size {
                // More than the listing declared: stop before it fills the disk.
                return Err(Error::transfer(format!(
                    "the instance sent more than the {size} bytes it listed for {}",
                    path.display()
                )));
            }
            progress.advance(data.len() as u64);
            if nl.is_some() {
                return Ok((total, hex::encode(hash.finalize())));
            }
        }
    }

    /// Wait for the script's `OK …` / `FAIL class message` marker, then its DONE.
    async fn outcome(&mut self) -> Result<Vec<u8>> {
        loop {
            let m = self.marker().await?;
            if let Some(rest) = m.strip_prefix(b"OK") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest).to_vec();
                self.marker().await?; // DONE 0
                return Ok(rest);
            }
            if let Some(rest) = m.strip_prefix(b"FAIL ") {
                let _ = self.marker().await; // DONE
                return Err(reported_failure(rest));
            }
            if m.starts_with(b"DONE") {
                return Err(self.script_failed());
            }
        }
    }

    /// Wait for the marker `want`; a failure the script reports, or a script that ended
    /// without reaching it, is an error.
    async fn until(&mut self, want: &[u8]) -> Result<()> {
        loop {
            let m = self.marker().await?;
            if m == want {
                return Ok(());
            }
            if let Some(rest) = m.strip_prefix(b"FAIL ") {
                let _ = self.marker().await; // DONE
                return Err(reported_failure(rest));
            }
            if m.starts_with(b"DONE") {
                return Err(self.script_failed());
            }
        }
    }

    /// A script ended without saying OK or FAIL: sudo refused, or a tool is missing.
    fn script_failed(&self) -> Error {
        let said = self.output();
        if let Some(e) = sudo_refusal(&self.run_as, &said) {
            return e;
        }
        let last = said
            .lines()
            .rev()
            .find(|l| !l.contains("SSMCP-PTY"))
            .unwrap_or("no output");
        Error::new(Kind::Target, format!("a script failed on the instance: {last}")).hint(
            "the pty transport needs sh and GNU coreutils (head, base64, sha256sum, mv, touch) and find",
        )
    }
}

/// What a script's `FAIL class message` marker says, as an error.
fn reported_failure(rest: &[u8]) -> Error {
    let text = String::from_utf8_lossy(rest);
    let (class, message) = text.split_once(' ').unwrap_or(("write", &text));
    remote_failure(class, message)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The scripts are shell templates (src/copy/transport/pty/*.sh, linted by shellcheck in
/// scripts/test). What varies is data, written before the template as assignments and as
/// functions made only of calls with quoted words (`sq`), so no path is ever code.
const PRELUDE: &[u8] = include_bytes!("pty/prelude.sh");
const UPLOAD: &[u8] = include_bytes!("pty/upload.sh");
const LIST: &[u8] = include_bytes!("pty/list.sh");
const SEND: &[u8] = include_bytes!("pty/send.sh");

/// A script: the prelude, the data, the template.
fn script(data: &[u8], template: &[u8]) -> Vec<u8> {
    [PRELUDE, data, template].concat()
}

/// `NAME() { CALLS :; }`: a function of data calls (`:` keeps an empty body valid).
fn data_function(s: &mut Vec<u8>, name: &str, calls: &[u8]) {
    s.extend_from_slice(format!("{name}() {{\n").as_bytes());
    s.extend_from_slice(calls);
    s.extend_from_slice(b":\n}\n");
}

/// A call of a template function: the name, then each argument as one quoted word.
fn call(s: &mut Vec<u8>, name: &str, args: &[&[u8]]) {
    s.extend_from_slice(name.as_bytes());
    for a in args {
        s.push(b' ');
        s.extend(sq(a));
    }
    s.push(b'\n');
}

/// `set -- WORD...`: the template's positional parameters.
fn set_words(s: &mut Vec<u8>, words: impl Iterator<Item = Vec<u8>>) {
    s.extend_from_slice(b"set --");
    for w in words {
        s.push(b' ');
        s.extend(w);
    }
    s.push(b'\n');
}

fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

fn mtime_word(m: &Mtime) -> Vec<u8> {
    format!("{}.{:09}", m.secs, m.nanos).into_bytes()
}

/// Build the upload script (template pty/upload.sh): the plan, checked against the same
/// placement rules as a stream from elsewhere (claims.rs), becomes the data the template
/// acts on phase by phase.
fn upload_script(plan: &Plan, dest: &[u8], place: &PlaceOptions, tag: &str) -> Result<Vec<u8>> {
    let total: u64 = plan.bytes;
    let n = plan.tops.len();
    let mut data = b"D=".to_vec();
    data.extend(remote_path(
        dest.strip_suffix(b"/")
            .filter(|d| !d.is_empty())
            .unwrap_or(dest),
    ));
    let wants_dir = dest.ends_with(b"/") && dest.len() > 1;
    let single_file = n == 1 && !plan.tops[0].is_dir;
    data.extend_from_slice(
        format!(
            "\nSLASH={} SINGLE_FILE={} TAG={tag} B64={} PRESERVE={}\n",
            flag(wants_dir),
            flag(single_file),
            total.div_ceil(3) * 4,
            flag(place.preserve),
        )
        .as_bytes(),
    );
    set_words(&mut data, plan.tops.iter().map(|t| sq(&t.name)));

    let mut claims = Claims::default();
    let mut seen: HashSet<(usize, Vec<u8>)> = HashSet::new();
    let mut made: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut make = Vec::new();
    let mut entries = Vec::new();
    let mut dirs: Vec<(usize, Vec<u8>, usize, &Meta)> = Vec::new();
    let mut files = 0u64;
    for e in &plan.entries {
        let (meta, claim) = match &e.record {
            Record::Dir(m) => (m, Claim::Dir),
            Record::File { meta, .. } => (meta, Claim::File),
            Record::Link { meta, .. } => (meta, Claim::Link),
            _ => continue,
        };
        let parts = components(&meta.path)?;
        let top = plan
            .tops
            .iter()
            .position(|t| t.name == parts[0])
            .ok_or_else(|| Error::protocol("an entry outside the sources"))?;
        // What the entry claims, as the tops lie in a destination directory.
        let under: &[&[u8]] = if parts[0] == b"." {
            &parts[1..]
        } else {
            &parts
        };
        claims.claim(&claim_path(under), claim)?;
        // The directories the entry needs, the top's root first: its parents, and itself
        // when it is one; each as its path below the top's root.
        let below = &parts[1..];
        let dirs_needed = if claim == Claim::Dir {
            parts.len()
        } else {
            parts.len() - 1
        };
        for depth in 0..dirs_needed {
            let rel = below[..depth].join(&b'/');
            if seen.insert((top, rel.clone())) {
                let kind: &[u8] = if depth == 0 { b"t" } else { b"d" };
                let number = made.len().to_string();
                call(
                    &mut make,
                    "mk",
                    &[number.as_bytes(), kind, top.to_string().as_bytes(), &rel],
                );
                made.push((top, rel));
            }
        }
        // A file or link names its parent below the root and its own name; one that is
        // a top itself (a single-file source) has neither.
        let (parent, name) = match below.split_last() {
            Some((name, parent)) => (parent.join(&b'/'), name.to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        let top_word = top.to_string();
        match &e.record {
            Record::Dir(_) if place.preserve => {
                dirs.push((top, below.join(&b'/'), below.len(), meta));
            }
            Record::File { size, .. } => {
                files += 1;
                let mode = if place.preserve {
                    meta.mode & 0o7777
                } else {
                    meta.mode & 0o777
                };
                call(
                    &mut entries,
                    "file",
                    &[
                        top_word.as_bytes(),
                        &parent,
                        &name,
                        size.to_string().as_bytes(),
                        format!("{mode:o}").as_bytes(),
                        &mtime_word(&meta.mtime),
                    ],
                );
            }
            Record::Link { target, .. } => call(
                &mut entries,
                "link",
                &[
                    top_word.as_bytes(),
                    &parent,
                    &name,
                    target,
                    &mtime_word(&meta.mtime),
                ],
            ),
            _ => {}
        }
    }
    // Directory metadata deepest first, so setting a child's time leaves its parent's.
    dirs.sort_by_key(|(_, _, depth, _)| std::cmp::Reverse(*depth));
    for (top, rel, _, meta) in &dirs {
        call(
            &mut entries,
            "dir",
            &[
                top.to_string().as_bytes(),
                rel,
                format!("{:o}", meta.mode & 0o7777).as_bytes(),
                &mtime_word(&meta.mtime),
            ],
        );
    }
    make.extend_from_slice(&entries);
    data_function(&mut data, "plan", &make);
    let mut unmake = Vec::new();
    for (number, (top, rel)) in made.iter().enumerate().rev() {
        call(
            &mut unmake,
            "unmk",
            &[
                number.to_string().as_bytes(),
                top.to_string().as_bytes(),
                rel,
            ],
        );
    }
    data_function(&mut data, "unmade", &unmake);
    data.extend_from_slice(format!("NFILES={files} TOTAL={total}\n").as_bytes());
    Ok(script(&data, UPLOAD))
}

/// A claim's key: the entry's path below the destination directory.
fn claim_path(parts: &[&[u8]]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    parts
        .iter()
        .map(|p| std::ffi::OsStr::from_bytes(p))
        .collect()
}

/// The pty transport opened on one instance: one terminal session.
pub(crate) struct PtyTransport {
    shell: Shell,
}

impl PtyTransport {
    pub(crate) fn new(shell: Shell) -> PtyTransport {
        PtyTransport { shell }
    }
}

#[async_trait::async_trait(?Send)]
impl Transport for PtyTransport {
    async fn push(&mut self, job: Upload<'_>, reporter: &Reporter) -> Result<Summary> {
        reporter.plan(job.plan.files, job.plan.bytes);
        push(
            &mut self.shell,
            &job.plan,
            job.dest,
            &job.place,
            job.limit,
            reporter,
        )
        .await
    }

    async fn pull(&mut self, job: &Download<'_>, reporter: &Reporter) -> Result<Summary> {
        pull(&mut self.shell, job, reporter).await
    }

    async fn close(self: Box<Self>, interrupted: bool) -> Closed {
        Closed::warnings(self.shell.close(interrupted).await)
    }
}

async fn push(
    shell: &mut Shell,
    plan: &Plan,
    dest: &[u8],
    place: &PlaceOptions,
    limit: Option<u64>,
    progress: &dyn Progress,
) -> Result<Summary> {
    let tag = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let script = upload_script(plan, dest, place, &tag)?;
    shell.run_script(&script).await?;
    // The script resolves the destination first; it may refuse before asking for data.
    shell.until(b"SEND").await?;
    // Send while watching the output: a script that fails mid-way (disk full) says so
    // and stops reading, and our sends would otherwise wait for it forever.
    let sender = shell.channel.sender.clone();
    let sending = send_data(sender, plan, Limiter::new(limit), progress);
    tokio::pin!(sending);
    let ok = tokio::select! {
        sent = &mut sending => {
            sent?;
            shell.outcome().await?
        }
        early = shell.outcome() => {
            early?;
            return Err(Error::protocol("the instance finished before all data was sent"));
        }
    };
    let text = String::from_utf8_lossy(&ok);
    let mut counts = text.split_whitespace().map(str::parse::<u64>);
    match (counts.next(), counts.next()) {
        (Some(Ok(files)), Some(Ok(bytes))) => Ok(Summary {
            files,
            bytes,
            ..Summary::default()
        }),
        _ => Err(Error::protocol(format!(
            "the instance's shell reported {text:?} where the files and bytes placed were due"
        ))),
    }
}

/// Every file's bytes as one base64 stream, then one SHA-256 line per file.
async fn send_data(
    sender: crate::session::channel::ChannelSender,
    plan: &Plan,
    mut limiter: Limiter,
    progress: &dyn Progress,
) -> Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let send = |bytes: Vec<u8>| {
        let sender = sender.clone();
        async move {
            for chunk in bytes.chunks(sender.max_payload()) {
                sender.send(PayloadType::Output, chunk.to_vec()).await?;
            }
            Ok::<(), Error>(())
        }
    };
    let mut digests = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    for e in &plan.entries {
        let Record::File { meta, size } = &e.record else {
            continue;
        };
        let cannot_read = |err: std::io::Error| {
            Error::usage(format!("cannot read {}: {err}", e.source.display()))
        };
        let mut f = tokio::fs::File::open(&e.source)
            .await
            .map_err(cannot_read)?;
        let mut hash = Sha256::new();
        let mut left = *size;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = f.read(&mut buf[..want]).await.map_err(cannot_read)?;
            if n == 0 {
                return Err(Error::transfer(format!(
                    "{} shrank while it was being copied; nothing was put in place",
                    e.source.display()
                )));
            }
            hash.update(&buf[..n]);
            carry.extend_from_slice(&buf[..n]);
            let whole = carry.len() / 3 * 3;
            limiter.take(n).await;
            send(b64.encode(&carry[..whole]).into_bytes()).await?;
            carry.drain(..whole);
            progress.advance(n as u64);
            left -= n as u64;
        }
        if f.read(&mut buf[..1]).await.is_ok_and(|n| n > 0) {
            progress.warn(&format!(
                "{} grew while it was being copied; its first {size} bytes (its size when the copy began) were copied",
                e.source.display()
            ));
        }
        digests.push(hex::encode(hash.finalize()));
        progress.file_done(&meta.path, *size);
    }
    send(b64.encode(&carry).into_bytes()).await?;
    let mut lines = digests.join("\n").into_bytes();
    lines.push(b'\n');
    send(lines).await
}

// ------------------------------------------------------------------------- download

/// List the sources with find, base64-encoded (template pty/list.sh).
fn list_script(sources: &[Vec<u8>], recursive: bool) -> Vec<u8> {
    let mut data = format!("RECURSIVE={}\n", flag(recursive)).into_bytes();
    let mut calls = Vec::new();
    for src in sources {
        let contents = src.ends_with(b"/") && src.len() > 1;
        calls.extend_from_slice(format!("src {} ", flag(contents)).as_bytes());
        calls.extend(remote_path(trailing_slash_off(src)));
        calls.push(b'\n');
    }
    data_function(&mut data, "sources", &calls);
    script(&data, LIST)
}

/// A source as typed without its trailing `/` (`/` itself stays).
fn trailing_slash_off(src: &[u8]) -> &[u8] {
    src.strip_suffix(b"/")
        .filter(|p| !p.is_empty())
        .unwrap_or(src)
}

/// Parse the listing into manifest records (paths relative to the top names).
fn parse_listing(raw: &[u8]) -> Result<(Vec<Record>, Vec<String>)> {
    let bad = || Error::protocol("the instance's file listing is malformed");
    let mut fields = raw.split(|&b| b == 0);
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    let mut top = Vec::new();
    while let Some(f) = fields.next() {
        if f.is_empty() {
            continue;
        }
        if let Some(flag) = f.strip_prefix(b"T") {
            let base = fields.next().ok_or_else(bad)?;
            top = if flag == b"1" {
                b".".to_vec()
            } else {
                base.to_vec()
            };
            continue;
        }
        let link = fields.next().ok_or_else(bad)?;
        let text = f;
        // "%y %m %T@ %s " then the relative path (which may contain spaces).
        let mut parts = text.splitn(5, |&b| b == b' ');
        let kind = parts.next().ok_or_else(bad)?;
        let mode = u32::from_str_radix(
            std::str::from_utf8(parts.next().ok_or_else(bad)?).map_err(|_| bad())?,
            8,
        )
        .map_err(|_| bad())?;
        let mtime = parse_mtime(parts.next().ok_or_else(bad)?).ok_or_else(bad)?;
        let size: u64 = std::str::from_utf8(parts.next().ok_or_else(bad)?)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let rel = parts.next().unwrap_or_default();
        let mut path = top.clone();
        if !rel.is_empty() {
            path.push(b'/');
            path.extend_from_slice(rel);
        }
        let meta = Meta { path, mode, mtime };
        match kind {
            b"d" => records.push(Record::Dir(meta)),
            b"f" => records.push(Record::Listed { meta, size }),
            b"l" => records.push(Record::Link {
                meta,
                target: link.to_vec(),
            }),
            _ => warnings.push(format!(
                "skipped {}: not a regular file, directory or symlink",
                String::from_utf8_lossy(&meta.path)
            )),
        }
    }
    Ok((records, warnings))
}

fn parse_mtime(b: &[u8]) -> Option<Mtime> {
    let s = std::str::from_utf8(b).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let mut nanos = frac.chars().take(9).collect::<String>();
    while nanos.len() < 9 {
        nanos.push('0');
    }
    Some(Mtime {
        secs: secs.parse().ok()?,
        nanos: nanos.parse().ok()?,
    })
}

async fn pull(shell: &mut Shell, job: &Download<'_>, progress: &dyn Progress) -> Result<Summary> {
    let Pull {
        sources,
        recursive,
        dest,
        preserve,
        ..
    } = job.pull;
    shell.run_script(&list_script(sources, recursive)).await?;
    shell.until(b"LIST").await?;
    let encoded = shell.line().await?;
    shell.outcome().await?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&encoded)
        .map_err(|_| Error::protocol("the instance's file listing is not base64"))?;
    let (records, skipped) = parse_listing(&raw)?;
    let (records, _) = crate::copy::local_source::exclude_listing(records, job.exclude);
    for w in &skipped {
        progress.warn(&format!("on the instance: {w}"));
    }
    let (mut stage, files, bytes) =
        DownloadStage::for_listing(dest, &records, preserve, Requested { sources, recursive })?;
    progress.plan(files, bytes);
    // Which remote file each listed one is: its source (top I in the script, in the
    // order the listing named the sources) and its path below it.
    let mut tops: Vec<&[u8]> = Vec::new();
    let mut listed: Vec<&[u8]> = Vec::new();
    let mut remote: Vec<(usize, Vec<u8>)> = Vec::new();
    for r in &records {
        let path = match r {
            Record::Dir(m) | Record::Listed { meta: m, .. } | Record::Link { meta: m, .. } => {
                &m.path
            }
            _ => continue,
        };
        let parts = components(path)?;
        let top = match tops.iter().position(|t| *t == parts[0]) {
            Some(i) => i,
            None => {
                tops.push(parts[0]);
                tops.len() - 1
            }
        };
        if let Record::Listed { .. } = r {
            listed.push(path);
            remote.push((top, parts[1..].join(&b'/')));
        }
    }
    if !listed.is_empty() {
        shell.run_script(&send_script(sources, &remote)).await?;
        for (i, (path, staged)) in listed.iter().zip(&stage.files).enumerate() {
            let m = shell.marker().await?;
            if m.starts_with(b"FAIL ") || m.starts_with(b"DONE") {
                return Err(Error::transfer(format!(
                    "reading {} on the instance failed: {}",
                    String::from_utf8_lossy(path),
                    shell.output().lines().last().unwrap_or("")
                )));
            }
            if m != format!("F {i}").as_bytes() {
                return Err(Error::protocol("the instance sent files out of order"));
            }
            let (got, digest) = shell
                .decode_line_into(&staged.temp, staged.size, progress)
                .await?;
            let said = shell.line().await?;
            if got != staged.size {
                return Err(Error::transfer(format!(
                    "{} changed size while it was being copied",
                    String::from_utf8_lossy(path)
                )));
            }
            if digest.as_bytes() != &said[..said.len().min(64)] {
                return Err(Error::transfer(format!(
                    "SHA-256 mismatch in {}",
                    String::from_utf8_lossy(path)
                ))
                .hint(DAMAGED));
            }
            progress.file_done(path, got);
        }
        shell.outcome().await?;
    }
    stage.commit()?;
    Ok(Summary {
        files,
        bytes,
        ..Summary::default()
    })
}

/// Print each file as `F i`, its base64 on one line, then its SHA-256 (template
/// pty/send.sh); `files` are (top, path below the top).
fn send_script(sources: &[Vec<u8>], files: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut data = Vec::new();
    set_words(
        &mut data,
        sources.iter().map(|s| remote_path(trailing_slash_off(s))),
    );
    let mut calls = Vec::new();
    for (i, (top, rel)) in files.iter().enumerate() {
        call(
            &mut calls,
            "f",
            &[i.to_string().as_bytes(), top.to_string().as_bytes(), rel],
        );
    }
    data_function(&mut data, "files", &calls);
    script(&data, SEND)
}

/// A listing is whatever the instance's `find` printed: any bytes at all parse or are
/// refused, never panic, and what parses is handed on as listing records only. Shared
/// by the property test below and the fuzz target (fuzz/, the `fuzzing` feature).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_listing_bytes(raw: &[u8]) -> std::result::Result<(), String> {
    if let Ok((records, _)) = parse_listing(raw) {
        for r in records {
            if !matches!(
                r,
                Record::Dir(_) | Record::Listed { .. } | Record::Link { .. }
            ) {
                return Err(format!("a listing produced {r:?}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_anything_but_nul() {
        assert_eq!(sq(b"it's"), b"'it'\\''s'");
        assert_eq!(remote_path(b"~"), b"\"$HOME\"");
        assert_eq!(remote_path(b"~/a b"), b"\"$HOME\"/'a b'");
        assert_eq!(remote_path(b"rel"), b"\"$HOME\"/'rel'");
        assert_eq!(remote_path(b"/abs"), b"'/abs'");
    }

    #[test]
    fn listings_parse_with_odd_names() {
        let raw = b"T0\0site\0d 755 1500000000.5 4096 \0\0f 644 1500000001.0000000001 3 a b\nc\0\0l 777 1.0 1 ln\0target\0p 644 1.0 0 fifo\0\0";
        let (records, warnings) = parse_listing(raw).unwrap();
        assert_eq!(records.len(), 3);
        assert!(
            matches!(&records[1], Record::Listed { meta, size: 3 } if meta.path == b"site/a b\nc" && meta.mtime.nanos == 0)
        );
        assert!(
            matches!(&records[0], Record::Dir(m) if m.mtime.nanos == 500_000_000 && m.mode == 0o755)
        );
        assert!(matches!(&records[2], Record::Link { target, .. } if target == b"target"));
        assert_eq!(warnings.len(), 1);
    }

    proptest::proptest! {
        /// Bytes drawn from what listings are made of (check_listing_bytes).
        #[test]
        fn any_listing_parses_or_is_refused(raw in proptest::collection::vec(
            proptest::sample::select(vec![0u8, b' ', b'T', b'0', b'1', b'd', b'f', b'l', b'.', b'7', b'/', b'a']),
            0..200,
        )) {
            if let Err(broken) = check_listing_bytes(&raw) {
                proptest::prop_assert!(false, "{}", broken);
            }
        }
    }

    /// tests/fixtures/placement.json, pty upload side: the script ssmcp generates, run by
    /// this machine's `sh` with GNU coreutils (what the transport needs on an instance),
    /// fed the base64 and digests the terminal would carry.
    #[test]
    fn the_placement_table_holds_for_pty_uploads() {
        use crate::copy::local_source::{Entry, Top};
        use crate::copy::placement_table::{every_row, Side};
        use std::io::Write;
        every_row(|row| {
            let contents = row.contents();
            let plan = Plan {
                tops: row
                    .sources
                    .iter()
                    .map(|s| Top {
                        name: s.as_bytes().to_vec(),
                        is_dir: row.source_is_dir(s),
                    })
                    .collect(),
                entries: row
                    .records()
                    .into_iter()
                    .map(|record| Entry {
                        record,
                        source: PathBuf::new(),
                    })
                    .collect(),
                files: contents.len() as u64,
                bytes: contents.iter().map(|c| c.len() as u64).sum(),
                ..Plan::default()
            };
            row.run(Side::Upload, |root| {
                let place = PlaceOptions {
                    preserve: false,
                    atomic: false,
                };
                let script =
                    upload_script(&plan, row.dest.as_bytes(), &place, "t0").map_err(|e| e.kind)?;
                let mut terminal = base64::engine::general_purpose::STANDARD
                    .encode(contents.concat())
                    .into_bytes();
                for c in &contents {
                    terminal.extend(hex::encode(Sha256::digest(c)).bytes());
                    terminal.push(b'\n');
                }
                let mut file = tempfile::NamedTempFile::new().unwrap();
                file.write_all(&script).unwrap();
                let mut sh = std::process::Command::new("sh")
                    .arg(file.path())
                    .current_dir(root)
                    .env("HOME", root)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                // A script that refuses early stops reading; the rest of the input is moot.
                let _ = sh.stdin.take().unwrap().write_all(&terminal);
                let out = sh.wait_with_output().unwrap();
                let said = out.stdout;
                for line in said.split(|&b| b == b'\n') {
                    if let Some(rest) = line.strip_prefix(MARK) {
                        if let Some(failure) = rest.strip_prefix(b"FAIL ") {
                            return Err(reported_failure(failure).kind);
                        }
                        if rest.starts_with(b"OK") {
                            return Ok(());
                        }
                    }
                }
                panic!(
                    "{}: no outcome: {}",
                    row.name,
                    String::from_utf8_lossy(&said)
                );
            })
        });
    }
}
