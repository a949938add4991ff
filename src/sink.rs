//! The local side of a download: where each entry of a remote manifest lands, staged
//! under temporary names and put in place only when every byte has been verified. The
//! same rules as the instance-side receiver (remote/receiver.py), because a compromised
//! or buggy instance must not be able to write outside the destination either.

use crate::bundle::{components, Mtime, Record};
use crate::error::{Error, Kind, Result};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Top-level source name -> where it lands.
pub type Roots = HashMap<Vec<u8>, PathBuf>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Claim {
    Dir,
    File,
    Link,
}

/// A file being received: its temporary name and where it goes.
#[derive(Debug)]
pub struct Staged {
    pub temp: PathBuf,
    pub final_path: PathBuf,
    pub size: u64,
    pub mode: u32,
    pub mtime: Mtime,
}

pub struct Stage {
    roots: Roots,
    tag: String,
    preserve: bool,
    umask: u32,
    created: Vec<PathBuf>,
    claims: HashMap<PathBuf, Claim>,
    dirs: Vec<(PathBuf, u32, Mtime, bool)>,
    pub files: Vec<Staged>,
    links: Vec<(PathBuf, PathBuf)>,
}

/// scp/rsync rules for where sources land (see docs/transports.md): an existing
/// directory receives each source under its name; otherwise one source becomes `dest`,
/// and `dest/` is created to receive the sources.
pub fn resolve(dest: &Path, tops: &[(Vec<u8>, bool)]) -> Result<(Roots, Option<PathBuf>)> {
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

impl Stage {
    /// Stage a listing from the other side (directories, files as empty temporaries,
    /// links), in order: `files[k]` is the k-th `Listed` record. Returns the stage and
    /// the number of files and bytes to fetch.
    pub fn for_listing(
        dest: &Path,
        records: &[Record],
        preserve: bool,
    ) -> Result<(Stage, u64, u64)> {
        let mut tops: Vec<(Vec<u8>, bool)> = Vec::new();
        for r in records {
            let (path, is_dir) = match r {
                Record::Dir(m) => (&m.path, true),
                Record::Listed { meta, .. } | Record::Link { meta, .. } => (&meta.path, false),
                _ => continue,
            };
            let first = components(path)?[0].to_vec();
            if !tops.iter().any(|(n, _)| *n == first) {
                tops.push((first, is_dir));
            }
        }
        let mut stage = Stage::new(dest, &tops, preserve)?;
        let (mut files, mut bytes) = (0, 0);
        for r in records {
            match r {
                Record::Dir(m) => stage.directory(&m.path, m.mode, m.mtime)?,
                Record::Listed { meta, size } => {
                    stage.file(&meta.path, *size, meta.mode, meta.mtime)?;
                    files += 1;
                    bytes += size;
                }
                Record::Link { meta, target } => stage.link(&meta.path, target, meta.mtime)?,
                _ => {}
            }
        }
        Ok((stage, files, bytes))
    }

    pub fn new(dest: &Path, tops: &[(Vec<u8>, bool)], preserve: bool) -> Result<Stage> {
        let (roots, create) = resolve(dest, tops)?;
        let umask = read_umask();
        let mut stage = Stage {
            roots,
            tag: format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
            preserve,
            umask,
            created: Vec::new(),
            claims: HashMap::new(),
            dirs: Vec::new(),
            files: Vec::new(),
            links: Vec::new(),
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

    fn claim(&mut self, path: &Path, kind: Claim) -> Result<()> {
        if let Some(prev) = self.claims.get(path) {
            if !(kind == Claim::Dir && *prev == Claim::Dir) {
                return Err(Error::protocol(format!(
                    "the instance sent {} twice",
                    path.display()
                )));
            }
        }
        let mut parent = path.parent();
        while let Some(p) = parent {
            if matches!(self.claims.get(p), Some(Claim::File | Claim::Link)) {
                return Err(Error::protocol(format!(
                    "refusing to write through the symlink {}",
                    p.display()
                )));
            }
            parent = p.parent();
        }
        self.claims.insert(path.to_path_buf(), kind);
        Ok(())
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
        self.claim(&final_path, kind)?;
        let parent = match parts.split_last() {
            Some((_, dirs)) => self.ensure_dirs(&root, dirs)?,
            None => root.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        Ok((parent, final_path))
    }

    fn temp_name(&self, parent: &Path, final_path: &Path, suffix: &str) -> PathBuf {
        let name = final_path.file_name().map(OsStr::as_bytes).unwrap_or(b"x");
        let mut t = b".".to_vec();
        t.extend_from_slice(&name[..name.len().min(180)]);
        t.extend_from_slice(format!(".ssmcp-{}.{suffix}", self.tag).as_bytes());
        parent.join(OsStr::from_bytes(&t))
    }

    fn directory(&mut self, rel: &[u8], mode: u32, mtime: Mtime) -> Result<()> {
        let (root, parts) = self.target(rel)?;
        let mut p = root.clone();
        for c in &parts {
            p.push(OsStr::from_bytes(c));
        }
        self.claim(&p, Claim::Dir)?;
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
        self.files.push(Staged {
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
    pub fn commit(&mut self) -> Result<()> {
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
    pub fn abort(&mut self) {
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

impl Drop for Stage {
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
fn read_umask() -> u32 {
    let old = set_umask(0o022);
    set_umask(old);
    old
}

fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask(2) has no memory-safety preconditions.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// A local write failure: permission and space problems get their own hints.
pub fn write_error(what: &str, path: &Path, e: &std::io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
            "check the permissions of the destination"
        }
        Some(libc::ENOSPC | libc::EDQUOT) => "free some space at the destination",
        _ => "check the destination",
    };
    Error::new(
        Kind::Write,
        format!("{what} {}: {}", path.display(), crate::plan::io_reason(e)),
    )
    .hint(hint)
}
