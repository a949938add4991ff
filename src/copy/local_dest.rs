//! The local side of a download: where each entry of a remote manifest lands, staged
//! under temporary names and put in place only when every byte has been verified. The
//! same rules as the instance-side receiver (remote/receiver.py), because a compromised
//! or buggy instance must not be able to write outside the destination either.

use crate::copy::bundle::{components, Mtime, Record};
use crate::copy::claims::{Claim, Claims};
use crate::error::{Error, Kind, Result};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Top-level source name -> where it lands.
pub(crate) type Roots = HashMap<Vec<u8>, PathBuf>;

/// A file being received: its temporary name and where it goes.
#[derive(Debug)]
pub(crate) struct StagedFile {
    pub temp: PathBuf,
    pub final_path: PathBuf,
    pub size: u64,
    pub mode: u32,
    pub mtime: Mtime,
}

pub(crate) struct DownloadStage {
    roots: Roots,
    tag: String,
    preserve: bool,
    umask: u32,
    created: Vec<PathBuf>,
    claims: Claims,
    dirs: Vec<(PathBuf, u32, Mtime, bool)>,
    pub files: Vec<StagedFile>,
    links: Vec<(PathBuf, PathBuf)>,
    /// Directories already searched for temporaries of killed runs.
    reaped_in: std::collections::HashSet<PathBuf>,
    /// What that search removed.
    pub reaped: Vec<PathBuf>,
}

/// scp/rsync rules for where sources land (see docs/transports.md): an existing
/// directory receives each source under its name; otherwise one source becomes `dest`,
/// and `dest/` is created to receive the sources.
pub(crate) fn resolve(dest: &Path, tops: &[(Vec<u8>, bool)]) -> Result<(Roots, Option<PathBuf>)> {
    let wants_dir = dest.as_os_str().as_bytes().ends_with(b"/");
    let under = |d: &Path| -> Roots {
        tops.iter()
            .map(|(n, _)| {
                let p = if n == b"." {
                    d.to_path_buf()
                } else {
                    d.join(OsStr::from_bytes(n))
                };
                (n.clone(), p)
            })
            .collect()
    };
    if dest.is_dir() {
        return Ok((under(dest), None));
    }
    if fs::symlink_metadata(dest).is_ok() {
        if tops.len() != 1 || tops[0].1 {
            return Err(Error::usage(format!(
                "{} exists and is not a directory",
                dest.display()
            )));
        }
        return Ok((under_single(tops, dest), None));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(Error::usage(format!(
            "the destination directory {} does not exist",
            parent.display()
        )));
    }
    if tops.len() == 1 && !wants_dir {
        return Ok((under_single(tops, dest), None));
    }
    if !wants_dir {
        return Err(Error::usage(format!(
            "{} is not a directory (several sources need one; end it with / to create it)",
            dest.display()
        )));
    }
    Ok((under(dest), Some(dest.to_path_buf())))
}

fn under_single(tops: &[(Vec<u8>, bool)], dest: &Path) -> Roots {
    let clean = PathBuf::from(OsStr::from_bytes(
        dest.as_os_str()
            .as_bytes()
            .strip_suffix(b"/")
            .unwrap_or(dest.as_os_str().as_bytes()),
    ));
    HashMap::from([(tops[0].0.clone(), clean)])
}

/// What a download asked the instance for: the remote sources as typed and whether
/// directories may come. A listing may hold only what this request can produce
/// (docs/transports.md, "What a download accepts"): the rule that keeps a hostile
/// instance from writing anything the user did not name (scp's CVE-2019-6111 class).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Requested<'a> {
    pub sources: &'a [Vec<u8>],
    pub recursive: bool,
}

/// The name a source's entries carry at the top of a listing, as the receiver and the pty
/// lister derive it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TopName {
    /// `dir/` or `/`: the directory's contents, listed under `.`.
    Contents,
    /// The source's last path component, known from what the user typed.
    Known(Vec<u8>),
    /// `~` (or an empty remote path): the remote home, whose name only the instance knows.
    Home,
}

fn top_name(source: &[u8]) -> TopName {
    if source.ends_with(b"/") && source.len() > 1 {
        return TopName::Contents;
    }
    let trimmed = source.strip_suffix(b"/").unwrap_or(source);
    if trimmed.is_empty() {
        return TopName::Contents;
    }
    if trimmed == b"~" {
        return TopName::Home;
    }
    let base = trimmed.rsplit(|&b| b == b'/').next().unwrap_or(trimmed);
    if base == b"." {
        TopName::Contents
    } else {
        TopName::Known(base.to_vec())
    }
}

/// Most entries a listing may hold. Each costs memory until the download ends (its path
/// and metadata, a temporary file), so a peer must not be able to declare unbounded
/// numbers of them; a tree this large is better copied in parts or through S3.
pub(crate) const MAX_ENTRIES: usize = 2_000_000;
/// No single file is larger than this (1 PiB); a size beyond it is a lie.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 50;

fn outside(path: &[u8]) -> Error {
    Error::protocol(format!(
        "the instance sent a path outside the requested sources: {}",
        String::from_utf8_lossy(path)
    ))
    .hint("nothing was written; the instance may be compromised or its ssmcp receiver modified")
}

/// Check a listing against the request before anything is created: every entry belongs
/// to a requested source, a file source is that one file and nothing else, directories
/// only with -r, sizes that can be true. Returns the top names in order of appearance,
/// each with whether it is a directory and whether only the instance chose its name.
fn check_listing(
    records: &[Record],
    requested: Requested<'_>,
) -> Result<Vec<(Vec<u8>, bool, bool)>> {
    if records.len() > MAX_ENTRIES {
        return Err(Error::protocol(format!(
            "the instance listed {} entries, more than ssmcp accepts in one download ({MAX_ENTRIES})",
            records.len()
        ))
        .hint("copy the tree in parts (one subdirectory per copy)"));
    }
    let expected: Vec<TopName> = requested.sources.iter().map(|s| top_name(s)).collect();
    let mut homes_left = expected.iter().filter(|t| **t == TopName::Home).count();
    // name, is a directory, named by the instance, a whole-file source
    let mut tops: Vec<(Vec<u8>, bool, bool)> = Vec::new();
    for r in records {
        let (path, kind) = match r {
            Record::Dir(m) => (&m.path, Claim::Dir),
            Record::Listed { meta, .. } => (&meta.path, Claim::File),
            Record::Link { meta, .. } => (&meta.path, Claim::Link),
            _ => continue,
        };
        let parts = components(path)?;
        let name = parts[0];
        let at_top = parts.len() == 1;
        match tops.iter().position(|(n, _, _)| n == name) {
            Some(i) => {
                // Entries below a source only when that source is a directory.
                if at_top || !tops[i].1 {
                    return Err(outside(path));
                }
            }
            None => {
                // A source's own entry comes first, and it is a file or a directory.
                if !at_top || kind == Claim::Link {
                    return Err(outside(path));
                }
                let known = if name == b"." {
                    expected.contains(&TopName::Contents)
                } else {
                    expected.contains(&TopName::Known(name.to_vec()))
                };
                let by_instance = !known;
                if by_instance {
                    // Only `~` lets the instance name a top, once per `~`, a directory.
                    if homes_left == 0 || name == b"." || kind != Claim::Dir {
                        return Err(outside(path));
                    }
                    homes_left -= 1;
                }
                if kind == Claim::Dir && !requested.recursive {
                    return Err(Error::protocol(format!(
                        "the instance listed the directory {} although -r was not given",
                        String::from_utf8_lossy(path)
                    )));
                }
                if kind == Claim::File && name == b"." {
                    return Err(outside(path));
                }
                tops.push((name.to_vec(), kind == Claim::Dir, by_instance));
            }
        }
        if let Record::Listed { size, .. } = r {
            if *size > MAX_FILE_BYTES {
                return Err(Error::protocol(format!(
                    "the instance declared {} as {size} bytes, more than any file can be",
                    String::from_utf8_lossy(path)
                )));
            }
        }
    }
    Ok(tops)
}

/// Bytes free for an unprivileged writer on the filesystem holding `dir`, when known.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

impl DownloadStage {
    /// Stage a listing from the other side (directories, files as empty temporaries,
    /// links), in order: `files[k]` is the k-th `Listed` record. Everything is checked
    /// against `requested` and against the space at the destination first, so a lying
    /// instance gets nothing created. Returns the stage and the files and bytes to fetch.
    pub(crate) fn for_listing(
        dest: &Path,
        records: &[Record],
        preserve: bool,
        requested: Requested<'_>,
    ) -> Result<(DownloadStage, u64, u64)> {
        let tops = check_listing(records, requested)?;
        let bytes: u64 = records
            .iter()
            .map(|r| match r {
                Record::Listed { size, .. } => *size,
                _ => 0,
            })
            .fold(0u64, u64::saturating_add);
        let room = if dest.is_dir() {
            dest.to_path_buf()
        } else {
            match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            }
        };
        if let Some(free) = free_bytes(&room) {
            if bytes > free {
                return Err(Error::new(
                    Kind::Write,
                    format!(
                        "the download is {bytes} bytes, but {} has only {free} bytes free",
                        room.display()
                    ),
                )
                .hint("free some space at the destination, or download to another filesystem"));
            }
        }
        let shape: Vec<(Vec<u8>, bool)> = tops.iter().map(|(n, d, _)| (n.clone(), *d)).collect();
        let mut stage = DownloadStage::new(dest, &shape, preserve)?;
        // An instance may name the remote home as it likes, but not pick which existing
        // directory here its files merge into.
        for (name, _, by_instance) in &tops {
            let root = &stage.roots[name];
            if *by_instance && root.as_path() != dest && fs::symlink_metadata(root).is_ok() {
                return Err(Error::usage(format!(
                    "the instance names its home directory {}, which already exists here",
                    root.display()
                ))
                .hint("name the remote directory by its path (TARGET:/home/USER), or copy its contents (TARGET:~/) into a directory you choose"));
            }
        }
        let mut files = 0;
        for r in records {
            match r {
                Record::Dir(m) => stage.directory(&m.path, m.mode, m.mtime)?,
                Record::Listed { meta, size } => {
                    stage.file(&meta.path, *size, meta.mode, meta.mtime)?;
                    files += 1;
                }
                Record::Link { meta, target } => stage.link(&meta.path, target, meta.mtime)?,
                _ => {}
            }
        }
        Ok((stage, files, bytes))
    }

    pub(crate) fn new(
        dest: &Path,
        tops: &[(Vec<u8>, bool)],
        preserve: bool,
    ) -> Result<DownloadStage> {
        let (roots, create) = resolve(dest, tops)?;
        let umask = read_umask();
        let mut stage = DownloadStage {
            roots,
            tag: format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
            preserve,
            umask,
            created: Vec::new(),
            claims: Claims::default(),
            dirs: Vec::new(),
            files: Vec::new(),
            links: Vec::new(),
            reaped_in: Default::default(),
            reaped: Vec::new(),
        };
        if let Some(d) = create {
            stage.mkdir(&d)?;
        }
        Ok(stage)
    }

    fn target(&self, rel: &[u8]) -> Result<(PathBuf, Vec<Vec<u8>>)> {
        let parts = components(rel)?;
        let root = self.roots.get(parts[0]).ok_or_else(|| {
            Error::protocol(format!(
                "the instance sent a path outside the requested sources: {}",
                String::from_utf8_lossy(rel)
            ))
        })?;
        Ok((
            root.clone(),
            parts[1..].iter().map(|p| p.to_vec()).collect(),
        ))
    }

    fn mkdir(&mut self, path: &Path) -> Result<()> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(|e| write_error("cannot create directory", path, &e))?;
        self.created.push(path.to_path_buf());
        Ok(())
    }

    /// Make `root/parts…` real directories, never passing through a symlink below root.
    fn ensure_dirs(&mut self, root: &Path, parts: &[Vec<u8>]) -> Result<PathBuf> {
        if fs::symlink_metadata(root).is_err() {
            self.mkdir(root)?;
        }
        let mut path = root.to_path_buf();
        for (i, p) in std::iter::once(None)
            .chain(parts.iter().map(Some))
            .enumerate()
        {
            if let Some(p) = p {
                path.push(OsStr::from_bytes(p));
            }
            match fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.mkdir(&path)?;
                    continue;
                }
                Err(e) => return Err(write_error("cannot inspect", &path, &e)),
                Ok(m) if m.file_type().is_symlink() && i > 0 => {
                    return Err(Error::protocol(format!(
                        "refusing to write through the symlink {}",
                        path.display()
                    )))
                }
                Ok(_) => {}
            }
            if !path.is_dir() {
                return Err(Error::usage(format!(
                    "{} exists and is not a directory",
                    path.display()
                )));
            }
        }
        Ok(path)
    }

    fn place(&mut self, rel: &[u8], kind: Claim) -> Result<(PathBuf, PathBuf)> {
        let (root, parts) = self.target(rel)?;
        let mut final_path = root.clone();
        for p in &parts {
            final_path.push(OsStr::from_bytes(p));
        }
        self.claims.claim(&final_path, kind)?;
        let parent = match parts.split_last() {
            Some((_, dirs)) => self.ensure_dirs(&root, dirs)?,
            None => root.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        Ok((parent, final_path))
    }

    /// A temporary beside `final_path`, named for this process (crate::copy::leftovers). The
    /// first time a directory receives one, what killed runs left in it is removed.
    fn temp_name(&mut self, parent: &Path, final_path: &Path, suffix: &str) -> PathBuf {
        if self.reaped_in.insert(parent.to_path_buf()) {
            for gone in crate::copy::leftovers::reap(parent) {
                tracing::info!("removed {}, left by a killed ssmcp run", gone.display());
                self.reaped.push(gone);
            }
        }
        let name = final_path.file_name().map(OsStr::as_bytes).unwrap_or(b"x");
        let t = crate::copy::leftovers::temp_name(name, std::process::id(), &self.tag, suffix);
        parent.join(OsStr::from_bytes(&t))
    }

    fn directory(&mut self, rel: &[u8], mode: u32, mtime: Mtime) -> Result<()> {
        let (root, parts) = self.target(rel)?;
        let mut p = root.clone();
        for c in &parts {
            p.push(OsStr::from_bytes(c));
        }
        self.claims.claim(&p, Claim::Dir)?;
        let path = self.ensure_dirs(&root, &parts)?;
        let created = self.created.contains(&path);
        self.dirs.push((path, mode, mtime, created));
        Ok(())
    }

    /// Create the (empty) temporary file for a manifest entry, appended to `files`.
    fn file(&mut self, rel: &[u8], size: u64, mode: u32, mtime: Mtime) -> Result<()> {
        let (parent, final_path) = self.place(rel, Claim::File)?;
        if final_path.is_dir() && !is_symlink(&final_path) {
            return Err(Error::usage(format!(
                "cannot overwrite directory {} with a file",
                final_path.display()
            )));
        }
        let temp = self.temp_name(&parent, &final_path, "tmp");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
            .map_err(|e| write_error("cannot create", &final_path, &e))?;
        self.files.push(StagedFile {
            temp,
            final_path,
            size,
            mode,
            mtime,
        });
        Ok(())
    }

    fn link(&mut self, rel: &[u8], target: &[u8], mtime: Mtime) -> Result<()> {
        let (parent, final_path) = self.place(rel, Claim::Link)?;
        let temp = self.temp_name(&parent, &final_path, "lnk");
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &temp)
            .map_err(|e| write_error("cannot create symlink", &final_path, &e))?;
        if self.preserve {
            // The link's own time (never its target's); a rename keeps it.
            let _ = set_mtime(&temp, mtime);
        }
        self.links.push((temp, final_path));
        Ok(())
    }

    /// Put everything in place: modes and times on the temporaries, then renames, then
    /// directory metadata deepest first (children would otherwise bump a parent's mtime).
    pub(crate) fn commit(&mut self) -> Result<()> {
        for f in &self.files {
            if self.preserve {
                set_mtime(&f.temp, f.mtime)
                    .map_err(|e| write_error("cannot set the time of", &f.final_path, &e))?;
            }
            let mode = if self.preserve {
                f.mode & 0o7777
            } else {
                f.mode & 0o777 & !self.umask
            };
            fs::set_permissions(&f.temp, fs::Permissions::from_mode(mode))
                .map_err(|e| write_error("cannot set the mode of", &f.final_path, &e))?;
        }
        let moves: Vec<(PathBuf, PathBuf)> = self
            .files
            .iter()
            .map(|f| (f.temp.clone(), f.final_path.clone()))
            .chain(self.links.iter().cloned())
            .collect();
        // Check every destination before the first rename, so a conflict moves nothing.
        if let Some((_, d)) = moves.iter().find(|(_, d)| d.is_dir() && !is_symlink(d)) {
            return Err(Error::usage(format!(
                "cannot overwrite directory {}",
                d.display()
            )));
        }
        for (temp, final_path) in &moves {
            fs::rename(temp, final_path)
                .map_err(|e| write_error("cannot place", final_path, &e))?;
        }
        self.files.clear();
        self.links.clear();
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
        for (path, mode, mtime, created) in &dirs {
            if self.preserve {
                let _ = set_mtime(path, *mtime);
                let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777));
            } else if *created {
                let _ = fs::set_permissions(
                    path,
                    fs::Permissions::from_mode(mode & 0o777 & !self.umask),
                );
            }
        }
        self.created.clear();
        Ok(())
    }

    /// Remove every temporary and every directory this stage created.
    pub(crate) fn abort(&mut self) {
        for f in self.files.drain(..) {
            let _ = fs::remove_file(&f.temp);
        }
        for (t, _) in self.links.drain(..) {
            let _ = fs::remove_file(&t);
        }
        for d in self.created.drain(..).rev() {
            let _ = fs::remove_dir(&d);
        }
    }
}

impl Drop for DownloadStage {
    fn drop(&mut self) {
        self.abort(); // no-op after commit
    }
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
}

fn set_mtime(path: &Path, mtime: Mtime) -> std::io::Result<()> {
    let t = filetime::FileTime::from_unix_time(mtime.secs, mtime.nanos);
    filetime::set_symlink_file_times(path, t, t)
}

/// umask(2) is the only way to read the mask: set it and put it back at once.
/// The process's umask. Linux (4.7+) shows it in /proc/self/status, which reads it
/// without changing it; setting and restoring it instead is a race with every other
/// thread creating files meanwhile, so that is only the fallback.
fn read_umask() -> u32 {
    let shown = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        });
    shown.unwrap_or_else(|| {
        use nix::sys::stat::{umask, Mode};
        let old = umask(Mode::from_bits_truncate(0o022));
        umask(old);
        old.bits() as u32
    })
}

/// A local write failure: permission and space problems get their own hints.
pub(crate) fn write_error(what: &str, path: &Path, e: &std::io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
            "check the permissions of the destination"
        }
        Some(libc::ENOSPC | libc::EDQUOT) => "free some space at the destination",
        _ => "check the destination",
    };
    Error::new(
        Kind::Write,
        format!(
            "{what} {}: {}",
            path.display(),
            crate::copy::local_source::io_reason(e)
        ),
    )
    .hint(hint)
}

/// A bundle's bytes, as any instance might send them, through the bundle reader into a
/// download stage in a scratch directory: the check the property test below and the
/// fuzz target (fuzz/, through the `fuzzing` feature) share.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod harness {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Nothing may appear outside the destination, nor in it but under the requested
    /// sources' names: not through `..` or absolute paths, not through links the listing
    /// makes, not through the one already there (`dest/escape -> ../outside`, never a
    /// source's name, so never followed).
    pub(crate) fn check_bundle(wire: &[u8], two_sources: bool) -> std::result::Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let outside = root.join("outside");
        fs::create_dir(&outside).unwrap();
        let dest = root.join("dest");
        fs::create_dir(&dest).unwrap();
        std::os::unix::fs::symlink("../outside", dest.join("escape")).unwrap();

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut reader = wire;
        let mut listing = Vec::new();
        while let Ok(r) = runtime.block_on(Record::read(&mut reader)) {
            listing.push(r);
        }
        let sources: Vec<Vec<u8>> = if two_sources {
            vec![b"/srv/a".to_vec(), b"/srv/b".to_vec()]
        } else {
            vec![b"/srv/a".to_vec()]
        };
        let requested = Requested {
            sources: &sources,
            recursive: true,
        };
        if let Ok((mut stage, _, _)) = DownloadStage::for_listing(&dest, &listing, false, requested)
        {
            for staged in &stage.files {
                fs::write(&staged.temp, b"x").unwrap();
            }
            let _ = stage.commit();
        }
        let escaped: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        if !escaped.is_empty() {
            return Err(format!("written outside the destination: {escaped:?}"));
        }
        let top: Vec<_> = fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if top.len() != 2 {
            return Err(format!("written beside the destination: {top:?}"));
        }
        // Inside it, only under the sources' own names (what the request named).
        let named: &[&str] = if two_sources {
            &["a", "b", "escape"]
        } else {
            &["a", "escape"]
        };
        let stray: Vec<_> = fs::read_dir(&dest)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| !named.iter().any(|ok| n == *ok))
            .collect();
        if !stray.is_empty() {
            return Err(format!(
                "written where the request named nothing: {stray:?}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::bundle::Meta;

    fn meta(path: &str) -> Meta {
        Meta {
            path: path.as_bytes().to_vec(),
            mode: 0o644,
            mtime: Mtime { secs: 0, nanos: 0 },
        }
    }
    fn d(p: &str) -> Record {
        Record::Dir(meta(p))
    }
    fn f(p: &str, size: u64) -> Record {
        Record::Listed {
            meta: meta(p),
            size,
        }
    }
    fn l(p: &str) -> Record {
        Record::Link {
            meta: meta(p),
            target: b"/etc".to_vec(),
        }
    }

    /// Stage `listing` for a download of `sources` into `dest`; it must be refused.
    fn refused(dest: &Path, listing: &[Record], sources: &[Vec<u8>], recursive: bool) -> Error {
        let requested = Requested { sources, recursive };
        DownloadStage::for_listing(dest, listing, false, requested)
            .err()
            .expect("refused")
    }

    /// (sources, -r, listing, accepted?)
    #[test]
    fn a_listing_holds_only_what_the_request_can_produce() {
        let cases: Vec<(&[&str], bool, Vec<Record>, bool)> = vec![
            // A single file is that file and nothing else.
            (&["d/real.txt"], false, vec![f("real.txt", 3)], true),
            (
                &["d/real.txt"],
                false,
                vec![f("real.txt", 3), f(".bashrc", 3)],
                false,
            ),
            (&["d/real.txt"], false, vec![f(".bashrc", 3)], false),
            (
                &["d/real.txt"],
                false,
                vec![f("real.txt", 3), f("real.txt/x", 3)],
                false,
            ),
            (&["d/real.txt"], false, vec![d("real.txt")], false),
            // -r DIR: only entries under the directory's own name.
            (
                &["/srv/app"],
                true,
                vec![d("app"), f("app/a", 1), l("app/l")],
                true,
            ),
            (
                &["/srv/app"],
                true,
                vec![d("app"), f("app/a", 1), f("other", 1)],
                false,
            ),
            (&["/srv/app"], true, vec![f("app/a", 1), d("app")], false),
            (&["/srv/app/"], true, vec![d("."), f("./a", 1)], true),
            (&["/srv/app/"], true, vec![d("."), f("x", 1)], false),
            (&["/srv/app/"], true, vec![f(".", 1)], false),
            (&["/srv/app"], true, vec![l("app")], false),
            (&["/srv/app"], false, vec![d("app")], false),
            // Two sources, each under its own name.
            (
                &["a", "b/c"],
                true,
                vec![f("a", 1), d("c"), f("c/x", 1)],
                true,
            ),
            (
                &["a", "b/c"],
                true,
                vec![f("a", 1), d("c"), f("a2", 1)],
                false,
            ),
            // ~: the instance names the home directory, once, as a directory.
            (&["~"], true, vec![d("ssm-user"), f("ssm-user/x", 1)], true),
            (&["~"], true, vec![d("ssm-user"), d("other")], false),
            (&["~"], true, vec![f(".bashrc", 1)], false),
            (&["~/"], true, vec![d("."), f("./x", 1)], true),
            // Unsafe paths stay refused.
            (&["/srv/app"], true, vec![d("app"), f("app/../x", 1)], false),
            (
                &["/srv/app"],
                true,
                vec![d("app"), f("/etc/passwd", 1)],
                false,
            ),
            // Sizes that cannot be true.
            (&["big"], false, vec![f("big", 1 << 62)], false),
        ];
        for (i, (sources, recursive, records, ok)) in cases.into_iter().enumerate() {
            let sources: Vec<Vec<u8>> = sources.iter().map(|s| s.as_bytes().to_vec()).collect();
            let got = check_listing(
                &records,
                Requested {
                    sources: &sources,
                    recursive,
                },
            );
            assert_eq!(
                got.is_ok(),
                ok,
                "case {i}: {:?} -> {:?}",
                records,
                got.err()
            );
            if let Err(e) = got {
                assert_eq!(e.kind, Kind::Protocol, "case {i}");
            }
        }
    }

    #[test]
    fn an_extra_entry_leaves_the_destination_untouched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".bashrc"), b"mine").unwrap();
        let sources = vec![b"d/real.txt".to_vec()];
        let listing = [f("real.txt", 3), f(".bashrc", 5)];
        let err = refused(dir.path(), &listing, &sources, false);
        assert_eq!(err.kind, Kind::Protocol);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(".bashrc")]);
        assert_eq!(fs::read(dir.path().join(".bashrc")).unwrap(), b"mine");
    }

    #[test]
    fn more_than_the_free_space_is_refused_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let sources = vec![b"huge".to_vec()];
        let free = free_bytes(dir.path()).expect("statvfs works here");
        // Well beyond the free space: other processes free and fill the disk meanwhile.
        let listing = [f("huge", free * 2 + (1 << 30))];
        let err = refused(dir.path(), &listing, &sources, false);
        assert_eq!(err.kind, Kind::Write, "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_home_directory_may_not_be_named_after_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(".ssh")).unwrap();
        let sources = vec![b"~".to_vec()];
        let listing = [d(".ssh"), f(".ssh/authorized_keys", 3)];
        let err = refused(dir.path(), &listing, &sources, true);
        assert_eq!(err.kind, Kind::Usage, "{err}");
        assert_eq!(fs::read_dir(dir.path().join(".ssh")).unwrap().count(), 0);
    }

    /// tests/fixtures/placement.json, download side: the same rows the receiver's
    /// tests run for uploads (src/remote/test_receiver.py) and the pty upload's script.
    #[test]
    fn the_placement_table_holds_for_downloads() {
        use crate::copy::placement_table::{every_row, Side};
        every_row(|row| {
            // A download's listing announces files without their bytes.
            let listing: Vec<Record> = row
                .records()
                .into_iter()
                .map(|r| match r {
                    Record::File { meta, size } => Record::Listed { meta, size },
                    other => other,
                })
                .collect();
            let sources: Vec<Vec<u8>> = row
                .sources
                .iter()
                .map(|s| format!("src/{s}").into_bytes())
                .collect();
            let requested = Requested {
                sources: &sources,
                recursive: row.recursive(),
            };
            row.run(Side::Download, |root| {
                let dest = root.join(&row.dest);
                let (mut stage, _, _) =
                    DownloadStage::for_listing(&dest, &listing, false, requested)
                        .map_err(|e| e.kind)?;
                for (staged, content) in stage.files.iter().zip(row.contents()) {
                    fs::write(&staged.temp, content).unwrap();
                }
                stage.commit().map_err(|e| e.kind)
            })
        });
    }

    mod hostile {
        use super::*;
        use proptest::prelude::*;

        /// Paths an instance could send: mostly under a requested source (so that the
        /// rest of the path is looked at), with the pieces that escape, and the name of
        /// a symlink that already points out of the destination.
        fn path() -> impl Strategy<Value = String> {
            let first = prop::sample::select(vec!["a", "a", "a", "b", "..", "", "/tmp", "escape"]);
            let piece = prop::sample::select(vec!["x", "..", "..", ".", "", "escape", "a"]);
            (first, prop::collection::vec(piece, 0..4)).prop_map(|(first, rest)| {
                std::iter::once(first)
                    .chain(rest)
                    .collect::<Vec<_>>()
                    .join("/")
            })
        }

        fn record() -> impl Strategy<Value = Record> {
            let target = prop::sample::select(vec!["..", "/tmp", "../outside", "a"]);
            (0..3u8, path(), target, 0..4u64).prop_map(|(kind, path, target, size)| {
                let meta = Meta {
                    path: path.into_bytes(),
                    mode: 0o644,
                    mtime: Mtime { secs: 0, nanos: 0 },
                };
                match kind {
                    0 => Record::Dir(meta),
                    1 => Record::Listed { meta, size },
                    _ => Record::Link {
                        meta,
                        target: target.as_bytes().to_vec(),
                    },
                }
            })
        }

        /// A dot-dot entry under a source is refused; were it let through (as when
        /// `components` was broken on purpose to try this check), it would land beside
        /// the source, and check_bundle says so.
        #[test]
        fn a_dot_dot_entry_lands_nowhere() {
            let m = |p: &str| Meta {
                path: p.as_bytes().to_vec(),
                mode: 0o644,
                mtime: Mtime { secs: 0, nanos: 0 },
            };
            let wire: Vec<u8> = [
                Record::Dir(m("a")),
                Record::Listed {
                    meta: m("a/../x"),
                    size: 1,
                },
            ]
            .iter()
            .flat_map(|r| r.encode())
            .collect();
            super::super::harness::check_bundle(&wire, false).unwrap();
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

            /// Whatever a listing holds, and however its bytes are damaged on the way
            /// (the bundle reader in front of the stage), nothing is written outside the
            /// destination: not through `..` or absolute paths, not through links the
            /// listing makes, not through the one that already points out.
            #[test]
            fn nothing_lands_outside_the_destination(
                records in prop::collection::vec(record(), 1..5),
                flip in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
                two_sources in any::<bool>(),
            ) {
                // Most listings start with a source's own entry, as a real one does, so
                // that what follows is looked at at all.
                let start = Record::Dir(Meta {
                    path: b"a".to_vec(),
                    mode: 0o755,
                    mtime: Mtime { secs: 0, nanos: 0 },
                });
                let mut wire: Vec<u8> = std::iter::once(&start)
                    .chain(&records)
                    .flat_map(|r| r.encode())
                    .collect();
                if let Some((at, byte)) = flip {
                    let i = at.index(wire.len());
                    wire[i] ^= byte;
                }
                if let Err(broken) = super::super::harness::check_bundle(&wire, two_sources) {
                    prop_assert!(false, "{}", broken);
                }
            }
        }
    }
}
