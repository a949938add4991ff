//! The local side of an upload: walk the sources (never following symlinks inside a
//! tree) into the ordered list of entries the bundle will carry.

use crate::copy::bundle::{Meta, Mtime, Record};
use crate::error::{Error, Flag, Kind, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The record announcing it; files are `Record::File` with their size.
    pub record: Record,
    /// Where its bytes live locally (files only matter).
    pub source: PathBuf,
}

/// One command-line source, as the receiver needs to know it before the bundle starts.
#[derive(Debug, Clone)]
pub(crate) struct Top {
    /// The name it will have at the destination, or "." for a directory's contents
    /// (a source written with a trailing slash, as rsync does).
    pub name: Vec<u8>,
    pub is_dir: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub tops: Vec<Top>,
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
    pub files: u64,
    pub bytes: u64,
}

impl Plan {
    /// --sync: drop the files whose destination copy (`remote`, one per file in plan
    /// order) has the same SHA-256 as ours. Returns the bundle paths of the files
    /// dropped, so --delete keeps them.
    pub(crate) fn drop_unchanged(&mut self, remote: &[Option<[u8; 32]>]) -> Result<Vec<Vec<u8>>> {
        let mut unchanged = Vec::new();
        let mut remote = remote.iter();
        let mut kept = Vec::with_capacity(self.entries.len());
        for entry in self.entries.drain(..) {
            let Record::File { meta, size } = &entry.record else {
                kept.push(entry);
                continue;
            };
            let same = match remote.next() {
                Some(Some(theirs)) => sha256_file(&entry.source)? == *theirs,
                _ => false,
            };
            if same {
                self.files -= 1;
                self.bytes -= size;
                unchanged.push(meta.path.clone());
            } else {
                kept.push(entry);
            }
        }
        self.entries = kept;
        Ok(unchanged)
    }
}

fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::usage(format!("cannot read {}: {}", path.display(), io_reason(&e))))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)
        .map_err(|e| Error::usage(format!("cannot read {}: {e}", path.display())))?;
    Ok(h.finalize().into())
}

pub(crate) struct Options<'a> {
    pub recursive: bool,
    pub exclude: &'a [String],
}

pub(crate) fn exclusions(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let glob = Glob::new(p).map_err(|e| {
            Error::usage(format!(
                "{} '{p}' is not a valid pattern: {e}",
                Flag::Exclude
            ))
        })?;
        b.add(glob);
    }
    b.build()
        .map_err(|e| Error::usage(format!("{} patterns: {e}", Flag::Exclude)))
}

/// Whether a bundle path (first component: the source's name) is excluded: the glob
/// matches its path below the source or its own name.
pub(crate) fn is_excluded(set: &GlobSet, bundle_path: &[u8]) -> bool {
    let mut parts = bundle_path.splitn(2, |&b| b == b'/');
    let _top = parts.next();
    let Some(rel) = parts.next() else {
        return false; // a source named on the command line is never excluded
    };
    let name = rel.rsplit(|&b| b == b'/').next().unwrap_or(rel);
    set.is_match(OsStr::from_bytes(rel)) || set.is_match(OsStr::from_bytes(name))
}

/// --exclude for a listing from the other side: the records kept (excluded entries and
/// everything under an excluded directory dropped), and for each `Listed` record kept,
/// its position among the original `Listed` records.
pub(crate) fn exclude_listing(records: Vec<Record>, set: &GlobSet) -> (Vec<Record>, Vec<u32>) {
    let mut pruned: Vec<Vec<u8>> = Vec::new();
    let mut index = 0u32;
    let mut listed = Vec::new();
    let mut kept = Vec::with_capacity(records.len());
    for r in records {
        let (path, is_listed) = match &r {
            Record::Dir(m) | Record::Link { meta: m, .. } => (m.path.clone(), false),
            Record::Listed { meta, .. } => (meta.path.clone(), true),
            _ => continue,
        };
        let mine = index;
        if is_listed {
            index += 1;
        }
        let under_pruned = pruned
            .iter()
            .any(|p| path.starts_with(p) && path.get(p.len()) == Some(&b'/'));
        if under_pruned || is_excluded(set, &path) {
            if matches!(r, Record::Dir(_)) {
                pruned.push(path);
            }
            continue;
        }
        if is_listed {
            listed.push(mine);
        }
        kept.push(r);
    }
    (kept, listed)
}

/// Walk `sources` in order. A source ending in `/` that is a directory contributes its
/// contents; otherwise the source itself, under its own name.
pub(crate) fn local(sources: &[PathBuf], opts: &Options) -> Result<Plan> {
    let exclude = exclusions(opts.exclude)?;
    let mut plan = Plan::default();
    for src in sources {
        let meta = std::fs::metadata(src).map_err(|e| {
            Error::new(Kind::Usage, format!("{}: {}", src.display(), io_reason(&e)))
        })?;
        let contents = src.as_os_str().as_bytes().ends_with(b"/") && meta.is_dir();
        let name: Vec<u8> = if contents {
            b".".to_vec()
        } else {
            match clean(src).file_name() {
                Some(n) => n.as_bytes().to_vec(),
                None => b".".to_vec(), // "/" or "..": copy what is inside
            }
        };
        if plan.tops.iter().any(|t| t.name == name) {
            return Err(Error::usage(format!(
                "two sources would land at the same name '{}'",
                String::from_utf8_lossy(&name)
            )));
        }
        if meta.is_dir() {
            if !opts.recursive {
                return Err(Error::usage(format!("{} is a directory", src.display()))
                    .hint(format!("use {} to copy directories", Flag::Recursive)));
            }
            walk(src, &name, &exclude, &mut plan)?;
        } else if meta.is_file() {
            if name == b"." {
                return Err(Error::usage(format!(
                    "{} is not a directory",
                    src.display()
                )));
            }
            plan.files += 1;
            plan.bytes += meta.len();
            plan.entries.push(Entry {
                record: Record::File {
                    meta: meta_of(name.clone(), &meta),
                    size: meta.len(),
                },
                source: src.clone(),
            });
        } else {
            return Err(Error::usage(format!(
                "{} is not a regular file or directory",
                src.display()
            )));
        }
        plan.tops.push(Top {
            name,
            is_dir: meta.is_dir(),
        });
    }
    Ok(plan)
}

fn walk(root: &Path, top: &[u8], exclude: &GlobSet, plan: &mut Plan) -> Result<()> {
    let mut it = walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(true)
        .sort_by_file_name()
        .into_iter();
    while let Some(item) = it.next() {
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                return Err(Error::usage(format!("cannot read {e}"))
                    .hint("check the permissions of the source tree"))
            }
        };
        let rel = item.path().strip_prefix(root).unwrap_or(item.path());
        if item.depth() > 0 && (exclude.is_match(rel) || exclude.is_match(item.file_name())) {
            if item.file_type().is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        let mut path = top.to_vec();
        if !rel.as_os_str().is_empty() {
            path.push(b'/');
            path.extend_from_slice(rel.as_os_str().as_bytes());
        }
        let meta = item
            .metadata()
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", item.path().display())))?;
        let ft = item.file_type();
        let record = if ft.is_dir() {
            Record::Dir(meta_of(path, &meta))
        } else if ft.is_file() {
            plan.files += 1;
            plan.bytes += meta.len();
            Record::File {
                meta: meta_of(path, &meta),
                size: meta.len(),
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(item.path()).map_err(|e| {
                Error::usage(format!("cannot read link {}: {e}", item.path().display()))
            })?;
            Record::Link {
                meta: meta_of(path, &meta),
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else {
            let what = if ft.is_fifo() {
                "a named pipe"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "a device"
            };
            plan.warnings.push(format!(
                "skipped {}: {what}, not a file, directory or symlink",
                item.path().display()
            ));
            continue;
        };
        plan.entries.push(Entry {
            record,
            source: item.path().to_path_buf(),
        });
    }
    Ok(())
}

fn meta_of(path: Vec<u8>, m: &Metadata) -> Meta {
    Meta {
        path,
        mode: m.mode() & 0o7777,
        mtime: Mtime {
            secs: m.mtime(),
            nanos: m.mtime_nsec().clamp(0, 999_999_999) as u32,
        },
    }
}

/// `a/b/` and `a/b/.` name the same directory as `a/b`.
fn clean(p: &Path) -> PathBuf {
    let bytes = p.as_os_str().as_bytes();
    let mut end = bytes.len();
    while end > 1 && bytes[end - 1] == b'/' {
        end -= 1;
    }
    PathBuf::from(OsStr::from_bytes(&bytes[..end]))
}

pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "No such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "Permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(plan: &Plan) -> Vec<String> {
        plan.entries
            .iter()
            .map(|e| match &e.record {
                Record::Dir(m) | Record::File { meta: m, .. } | Record::Link { meta: m, .. } => {
                    String::from_utf8_lossy(&m.path).into_owned()
                }
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn trees_keep_their_name_unless_written_with_a_slash() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("site");
        std::fs::create_dir_all(src.join("css")).unwrap();
        std::fs::write(src.join("index.html"), "hi").unwrap();
        std::fs::write(src.join("css/a.css"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        let opts = Options {
            recursive: true,
            exclude: &[],
        };
        let plan = local(std::slice::from_ref(&src), &opts).unwrap();
        assert_eq!(
            paths(&plan),
            [
                "site",
                "site/css",
                "site/css/a.css",
                "site/index.html",
                "site/link"
            ]
        );
        assert_eq!((plan.files, plan.bytes), (2, 3));
        let mut slash = src.into_os_string();
        slash.push("/");
        let plan = local(&[slash.into()], &opts).unwrap();
        assert_eq!(plan.tops[0].name, b".");
        assert_eq!(paths(&plan)[..2], ["."[..].to_string(), "./css".into()]);
    }

    #[test]
    fn excluded_names_and_directories_are_left_out() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("t/node_modules/x")).unwrap();
        std::fs::write(d.path().join("t/node_modules/x/f"), "").unwrap();
        std::fs::write(d.path().join("t/keep.txt"), "").unwrap();
        std::fs::write(d.path().join("t/drop.log"), "").unwrap();
        let ex = vec!["node_modules".to_string(), "*.log".to_string()];
        let plan = local(
            &[d.path().join("t")],
            &Options {
                recursive: true,
                exclude: &ex,
            },
        )
        .unwrap();
        assert_eq!(paths(&plan), ["t", "t/keep.txt"]);
    }

    #[test]
    fn directories_need_recursion_and_sources_must_exist() {
        let d = tempfile::tempdir().unwrap();
        let opts = Options {
            recursive: false,
            exclude: &[],
        };
        let e = local(&[d.path().to_path_buf()], &opts).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = local(&[d.path().join("missing")], &opts).unwrap_err();
        assert!(e.to_string().contains("No such file"), "{e}");
    }
}
