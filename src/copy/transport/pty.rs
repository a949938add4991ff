//! The "pty" transport, for instances without python3: everything travels through one
//! AWS-StartInteractiveCommand session whose terminal is raw and silent. ssmcp sends
//! shell scripts it generates (run by `sh`, using coreutils: head, base64, sha256sum,
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
            match self.channel.inbound.recv().await {
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

/// Shell functions every script starts with: `fail CLASS MESSAGE` undoes what the script
/// staged (the `cleanup` function each script defines) and reports.
const PRELUDE: &[u8] = br#"set -u
fail() { cleanup; printf '\036SSMCP-PTY FAIL %s %s\n' "$1" "$2"; exit 1; }
trap 'cleanup; exit 1' HUP INT TERM
"#;

// ------------------------------------------------------------------------- upload

/// One file or link of an upload and the names it goes by on the instance.
struct Placed {
    temp: Vec<u8>,
    final_path: Vec<u8>,
}

/// Build the script for an upload: resolve the destination (the same rules as the
/// python receiver), make directories, decode the data into temporaries, verify every
/// digest, then rename everything into place.
fn upload_script(plan: &Plan, dest: &[u8], place: &PlaceOptions, tag: &str) -> Result<Vec<u8>> {
    let mut s = PRELUDE.to_vec();
    let total: u64 = plan.bytes;
    let b64_len = total.div_ceil(3) * 4;
    let wants_dir = dest.ends_with(b"/") && dest.len() > 1;
    let n = plan.tops.len();
    // Roots: R<i> is where top i lands.
    s.extend_from_slice(b"D=");
    s.extend(remote_path(
        dest.strip_suffix(b"/")
            .filter(|d| !d.is_empty())
            .unwrap_or(dest),
    ));
    s.extend_from_slice(b"\nMADE=\ncleanup() { :; }\n");
    let mut into_dir = Vec::new();
    let mut as_dest = Vec::new();
    for (i, t) in plan.tops.iter().enumerate() {
        if t.name == b"." {
            into_dir.extend(format!("R{i}=\"$D\"; ").as_bytes());
        } else {
            into_dir.extend(format!("R{i}=\"$D\"/").as_bytes());
            into_dir.extend(sq(&t.name));
            into_dir.extend_from_slice(b"; ");
        }
        as_dest.extend(format!("R{i}=\"$D\"; ").as_bytes());
    }
    let single_file = n == 1 && !plan.tops[0].is_dir;
    s.extend_from_slice(b"if [ -d \"$D\" ]; then ");
    s.extend_from_slice(&into_dir);
    s.extend_from_slice(b"\nelif [ -e \"$D\" ] || [ -L \"$D\" ]; then ");
    if single_file && !wants_dir {
        s.extend_from_slice(&as_dest);
    } else {
        s.extend_from_slice(b"fail usage \"$D exists and is not a directory\"");
    }
    s.extend_from_slice(b"\nelse [ -d \"$(dirname \"$D\")\" ] || fail usage \"the destination directory $(dirname \"$D\") does not exist\"; ");
    if n == 1 && !wants_dir {
        s.extend_from_slice(&as_dest);
    } else if wants_dir {
        s.extend_from_slice(
            b"mkdir \"$D\" || fail permission \"cannot create directory $D\"; MADE=\"$D\"; ",
        );
        s.extend_from_slice(&into_dir);
    } else {
        s.extend_from_slice(b"fail usage \"$D is not a directory (several sources need one; end it with / to create it)\"");
    }
    s.extend_from_slice(b"\nfi\n");

    // Directories, in plan order, each entry's parents before it: `t` makes a top's root
    // (an existing directory there, or a link to one the destination's owner made, is
    // used as scp does), `d` anything below it and refuses symlinks. Both record what
    // they create (C<n>=1 for the n-th directory) so cleanup can remove exactly that,
    // whatever the names hold. The plan comes from a local walk, but it is
    // held to the same rules as a stream from elsewhere (claims.rs).
    s.extend_from_slice(
        b"t() { if [ -d \"$2\" ]; then :; elif [ -e \"$2\" ] || [ -L \"$2\" ]; then fail usage \"$2 exists and is not a directory\"; \
else mkdir \"$2\" || fail permission \"cannot create directory $2\"; eval \"C$1=1\"; fi; }\n\
d() { if [ -L \"$2\" ]; then fail protocol \"refusing to write through the symlink $2\"; fi; t \"$1\" \"$2\"; }\n",
    );
    let mut claims = Claims::default();
    let mut made: Vec<Vec<u8>> = Vec::new();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut make_dirs = Vec::new();
    let mut files: Vec<(Placed, u64, &Meta)> = Vec::new();
    let mut links: Vec<(Placed, &[u8], &Meta)> = Vec::new();
    let mut dirs: Vec<(Vec<u8>, &Meta)> = Vec::new();
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
        // when it is one. `path` ends as the entry's own shell word.
        let dir_depth = if claim == Claim::Dir {
            parts.len()
        } else {
            parts.len() - 1
        };
        let mut path = format!("\"$R{top}\"").into_bytes();
        for (depth, name) in parts.iter().enumerate().take(dir_depth) {
            if depth > 0 {
                path.push(b'/');
                path.extend(sq(name));
            }
            if seen.insert(path.clone()) {
                let f = if depth == 0 { "t" } else { "d" };
                make_dirs.extend_from_slice(format!("{f} {} ", made.len()).as_bytes());
                make_dirs.extend_from_slice(&path);
                made.push(path.clone());
                make_dirs.push(b'\n');
            }
        }
        if claim != Claim::Dir && parts.len() > 1 {
            path.push(b'/');
            path.extend(sq(parts[parts.len() - 1]));
        }
        match &e.record {
            Record::Dir(_) => dirs.push((path, meta)),
            Record::File { size, .. } => {
                let temp = temp_word(&path, tag, "tmp");
                files.push((
                    Placed {
                        temp,
                        final_path: path,
                    },
                    *size,
                    meta,
                ));
            }
            Record::Link { target, .. } => {
                let temp = temp_word(&path, tag, "lnk");
                links.push((
                    Placed {
                        temp,
                        final_path: path,
                    },
                    target,
                    meta,
                ));
            }
            _ => {}
        }
    }
    // Cleanup removes temporaries and created directories (deepest first); it is in
    // force before the first directory is made.
    s.extend_from_slice(b"cleanup() { rm -f");
    for (p, _, _) in &files {
        s.push(b' ');
        s.extend_from_slice(&p.temp);
    }
    for (p, _, _) in &links {
        s.push(b' ');
        s.extend_from_slice(&p.temp);
    }
    s.extend_from_slice(b";");
    for (n, path) in made.iter().enumerate().rev() {
        s.extend_from_slice(format!(" [ -z \"${{C{n}:-}}\" ] || rmdir ").as_bytes());
        s.extend_from_slice(path);
        s.extend_from_slice(b" 2>/dev/null;");
    }
    s.extend_from_slice(b" [ -z \"$MADE\" ] || rmdir \"$MADE\" 2>/dev/null; :; }\n");
    s.extend_from_slice(&make_dirs);

    // The data: exactly b64_len characters of base64 on the terminal, decoded and cut
    // into the files in order. Nothing may write to the terminal meanwhile.
    s.extend_from_slice(
        format!("printf '\\036%s\\n' 'SSMCP-PTY SEND'\nhead -c {b64_len} | base64 -d | {{ :")
            .as_bytes(),
    );
    for (p, size, _) in &files {
        s.extend_from_slice(format!(" && head -c {size} > ").as_bytes());
        s.extend_from_slice(&p.temp);
    }
    s.extend_from_slice(b"; } 2>/dev/null || W=1\n");
    s.extend_from_slice(b"[ -z \"${W:-}\" ] || fail write \"writing the files failed (disk full or not permitted?)\"\n");
    // Digests follow the data, one line per file.
    s.extend_from_slice(b"BAD=\n");
    for (p, _, _) in &files {
        s.extend_from_slice(b"IFS= read -r h; [ -f ");
        s.extend_from_slice(&p.temp);
        s.extend_from_slice(b" ] && [ \"$(sha256sum < ");
        s.extend_from_slice(&p.temp);
        s.extend_from_slice(b" | cut -c1-64)\" = \"$h\" ] || BAD=1\n");
    }
    s.extend_from_slice(b"[ -z \"$BAD\" ] || fail integrity \"a SHA-256 did not match\"\n");
    // Modes and times on the temporaries, links beside their final names.
    s.extend_from_slice(b"U=$(umask)\n");
    for (p, _, meta) in &files {
        let mode = if place.preserve {
            format!("chmod {:o} ", meta.mode & 0o7777)
        } else {
            format!("chmod $(printf %o $((0{:o} & ~0$U))) ", meta.mode & 0o777)
        };
        s.extend_from_slice(mode.as_bytes());
        s.extend_from_slice(&p.temp);
        s.extend_from_slice(b" || fail permission \"cannot set a mode\"\n");
        if place.preserve {
            s.extend_from_slice(touch(&meta.mtime).as_bytes());
            s.extend_from_slice(&p.temp);
            s.push(b'\n');
        }
    }
    for (p, target, meta) in &links {
        s.extend_from_slice(b"ln -s ");
        s.extend(sq(target));
        s.push(b' ');
        s.extend_from_slice(&p.temp);
        s.extend_from_slice(b" || fail permission \"cannot create a symlink\"\n");
        if place.preserve {
            s.extend_from_slice(touch(&meta.mtime).as_bytes());
            s.extend_from_slice(&p.temp);
            s.push(b'\n');
        }
    }
    // No directory may sit where a file or link goes: check all before the first rename.
    for (p, _, _) in &files {
        check_not_dir(&mut s, &p.final_path);
    }
    for (p, _, _) in &links {
        check_not_dir(&mut s, &p.final_path);
    }
    for (p, _, _) in &files {
        mv(&mut s, &p.temp, &p.final_path);
    }
    for (p, _, _) in &links {
        mv(&mut s, &p.temp, &p.final_path);
    }
    s.extend_from_slice(b"cleanup() { :; }\n");
    // Directory metadata, deepest first.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count()));
    for (path, meta) in &dirs {
        if place.preserve {
            s.extend_from_slice(format!("chmod {:o} ", meta.mode & 0o7777).as_bytes());
            s.extend_from_slice(path);
            s.extend_from_slice(b"; ");
            s.extend_from_slice(touch(&meta.mtime).as_bytes());
            s.extend_from_slice(path);
            s.push(b'\n');
        }
    }
    s.extend_from_slice(
        format!(
            "printf '\\036%s\\n' 'SSMCP-PTY OK {} {}'\n",
            files.len(),
            total
        )
        .as_bytes(),
    );
    Ok(s)
}

/// A claim's key: the entry's path below the destination directory.
fn claim_path(parts: &[&[u8]]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    parts
        .iter()
        .map(|p| std::ffi::OsStr::from_bytes(p))
        .collect()
}

fn touch(m: &Mtime) -> String {
    format!("touch -h -d @{}.{:09} ", m.secs, m.nanos)
}

fn check_not_dir(s: &mut Vec<u8>, path: &[u8]) {
    s.extend_from_slice(b"if [ -d ");
    s.extend_from_slice(path);
    s.extend_from_slice(b" ] && [ ! -L ");
    s.extend_from_slice(path);
    s.extend_from_slice(b" ]; then fail usage \"cannot overwrite a directory with a file\"; fi\n");
}

fn mv(s: &mut Vec<u8>, from: &[u8], to: &[u8]) {
    s.extend_from_slice(b"mv -fT ");
    s.extend_from_slice(from);
    s.push(b' ');
    s.extend_from_slice(to);
    s.extend_from_slice(b" || fail write \"cannot put a file in place\"\n");
}

/// `"$R0"/'a'/'b'` → `"$R0"/'a'/'.b.ssmcp-TAG.tmp'`: the temporary beside the file.
fn temp_word(path: &[u8], tag: &str, ext: &str) -> Vec<u8> {
    // The last word is either `'name'` or the bare root `"$Rn"` (a single file top).
    if let Some(root) = path
        .strip_prefix(b"\"$")
        .and_then(|p| p.strip_suffix(b"\""))
    {
        // A single-file top lands at the root path itself: put the temporary beside it,
        // named for the root, since several tops may land in one directory.
        let mut t = b"\"$(dirname ".to_vec();
        t.extend_from_slice(path);
        t.extend_from_slice(b")\"/.");
        t.extend_from_slice(root);
        t.extend_from_slice(format!(".ssmcp-{tag}.{ext}").as_bytes());
        return t;
    }
    let open = path
        .iter()
        .rposition(|&b| b == b'/')
        .map(|i| i + 1)
        .unwrap_or(0);
    let mut t = path[..open].to_vec();
    // Rebuild the quoted last name with a prefix and suffix inside the quotes.
    let last = &path[open..];
    t.extend_from_slice(b"'.");
    t.extend_from_slice(&last[1..last.len() - 1]);
    t.extend_from_slice(format!(".ssmcp-{tag}.{ext}'").as_bytes());
    t
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

/// List the sources with find, base64-encoded (terminal output must stay ASCII).
fn list_script(sources: &[Vec<u8>], recursive: bool) -> Vec<u8> {
    let mut s = PRELUDE.to_vec();
    s.extend_from_slice(b"cleanup() { :; }\n");
    for (i, src) in sources.iter().enumerate() {
        let contents = src.ends_with(b"/") && src.len() > 1;
        let word = remote_path(
            src.strip_suffix(b"/")
                .filter(|p| !p.is_empty())
                .unwrap_or(src),
        );
        s.extend_from_slice(format!("P{i}=").as_bytes());
        s.extend_from_slice(&word);
        s.push(b'\n');
        s.extend_from_slice(
            format!("[ -e \"$P{i}\" ] || fail source \"$P{i}: No such file or directory\"\n")
                .as_bytes(),
        );
        if !recursive {
            s.extend_from_slice(format!("[ ! -d \"$P{i}\" ] || fail usage \"$P{i} is a directory (use -r to copy directories)\"\n").as_bytes());
        }
        if contents {
            s.extend_from_slice(
                format!("[ -d \"$P{i}\" ] || fail usage \"$P{i} is not a directory\"\n").as_bytes(),
            );
        }
    }
    s.extend_from_slice(b"printf '\\036%s\\n' 'SSMCP-PTY LIST'\n{ ");
    for (i, src) in sources.iter().enumerate() {
        let contents = src.ends_with(b"/") && src.len() > 1;
        // Top marker, then entries: type mode mtime size relpath NUL linktarget NUL.
        s.extend_from_slice(
            format!("printf 'T%s\\0' {}; ", if contents { "1" } else { "0" }).as_bytes(),
        );
        s.extend_from_slice(format!("basename \"$P{i}\" | tr -d '\\n'; printf '\\0'; ").as_bytes());
        s.extend_from_slice(
            format!("find -H \"$P{i}\" -printf '%y %m %T@ %s %P\\0%l\\0'; ").as_bytes(),
        );
    }
    s.extend_from_slice(b"} | base64 -w0 || fail source \"listing failed\"\n");
    s.extend_from_slice(b"printf '\\n\\036%s\\n' 'SSMCP-PTY OK'\n");
    s
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
    // Which remote file each listed one is: its source's path (P<i> in the script, in
    // the order the listing named the sources) plus the rest of its path.
    let mut tops: Vec<&[u8]> = Vec::new();
    let mut listed: Vec<(&[u8], Vec<u8>)> = Vec::new();
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
            let mut word = format!("\"$P{top}\"").into_bytes();
            for p in &parts[1..] {
                word.push(b'/');
                word.extend(sq(p));
            }
            listed.push((path, word));
        }
    }
    if !listed.is_empty() {
        let words: Vec<Vec<u8>> = listed.iter().map(|(_, w)| w.clone()).collect();
        shell.run_script(&send_script(sources, &words)).await?;
        for (i, ((path, _), staged)) in listed.iter().zip(&stage.files).enumerate() {
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

/// Print each file as `F i`, its base64 on one line, then its SHA-256.
fn send_script(sources: &[Vec<u8>], paths: &[Vec<u8>]) -> Vec<u8> {
    let mut s = PRELUDE.to_vec();
    s.extend_from_slice(b"cleanup() { :; }\n");
    for (i, src) in sources.iter().enumerate() {
        s.extend_from_slice(format!("P{i}=").as_bytes());
        s.extend(remote_path(
            src.strip_suffix(b"/")
                .filter(|p| !p.is_empty())
                .unwrap_or(src),
        ));
        s.push(b'\n');
    }
    for (i, p) in paths.iter().enumerate() {
        s.extend_from_slice(
            format!("printf '\\036%s\\n' 'SSMCP-PTY F {i}'; base64 -w0 < ").as_bytes(),
        );
        s.extend_from_slice(p);
        s.extend_from_slice(b" || fail source \"cannot read a file\"; printf '\\n'; sha256sum < ");
        s.extend_from_slice(p);
        s.push(b'\n');
    }
    s.extend_from_slice(b"printf '\\036%s\\n' 'SSMCP-PTY OK'\n");
    s
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
    fn temporaries_sit_beside_their_files() {
        assert_eq!(
            temp_word(b"\"$R0\"/'a'/'b c'", "t", "tmp"),
            b"\"$R0\"/'a'/'.b c.ssmcp-t.tmp'"
        );
        assert_eq!(
            temp_word(b"\"$R1\"", "t", "tmp"),
            b"\"$(dirname \"$R1\")\"/.R1.ssmcp-t.tmp"
        );
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
