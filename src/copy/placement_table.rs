//! tests/fixtures/placement.json for the Rust implementations of the placement rules:
//! the local destination of downloads (local_dest.rs) and the pty upload's generated
//! script (transport/pty.rs). The instance-side receiver runs the same rows from
//! src/remote/test_receiver.py. Each implementation supplies how it places one row; the
//! table, the before-state, the comparison and the verdict live here once.

use crate::copy::bundle::{Meta, Mtime, Record};
use crate::error::Kind;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Which side of a copy places the files; rows may expect different outcomes per side.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Upload,
    Download,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Expect {
    Both(String),
    PerSide { upload: String, download: String },
}

#[derive(Deserialize)]
pub(crate) struct Row {
    pub(crate) name: String,
    before: Vec<String>,
    /// Relative to the destination's root (the test's temporary directory).
    pub(crate) dest: String,
    /// The command-line sources, as typed.
    pub(crate) sources: Vec<String>,
    /// `["D", path]`, `["F", path, content]`, `["L", path, target]`.
    records: Vec<Vec<String>>,
    expect: Expect,
    after: Vec<String>,
    #[serde(default)]
    recursive: Option<bool>,
}

#[derive(Deserialize)]
struct Table {
    rows: Vec<Row>,
}

/// The table's rows.
pub(crate) fn rows() -> Vec<Row> {
    let table: Table =
        serde_json::from_str(include_str!("../../tests/fixtures/placement.json")).unwrap();
    assert!(table.rows.len() >= 40, "the table has lost rows");
    table.rows
}

impl Row {
    /// The records as a transfer carries them; files as `File` with their size (a
    /// download's listing turns them into `Listed`).
    pub(crate) fn records(&self) -> Vec<Record> {
        self.records
            .iter()
            .map(|r| {
                let meta = Meta {
                    path: r[1].as_bytes().to_vec(),
                    mode: if r[0] == "D" { 0o40755 } else { 0o100644 },
                    mtime: Mtime { secs: 0, nanos: 0 },
                };
                match r[0].as_str() {
                    "D" => Record::Dir(meta),
                    "L" => Record::Link {
                        meta,
                        target: r[2].as_bytes().to_vec(),
                    },
                    _ => Record::File {
                        meta,
                        size: r[2].len() as u64,
                    },
                }
            })
            .collect()
    }

    /// The contents of the file records, in order.
    pub(crate) fn contents(&self) -> Vec<&[u8]> {
        self.records
            .iter()
            .filter(|r| r[0] == "F")
            .map(|r| r[2].as_bytes())
            .collect()
    }

    /// Whether the copy was recursive (-r): said by the row, or implied by a directory.
    pub(crate) fn recursive(&self) -> bool {
        self.recursive
            .unwrap_or_else(|| self.records.iter().any(|r| r[0] == "D"))
    }

    /// Whether source `name` is a directory (it has a directory record of its own).
    pub(crate) fn source_is_dir(&self, name: &str) -> bool {
        self.records.iter().any(|r| r[0] == "D" && r[1] == name)
    }

    /// Build the before-state under `root`, let `place` place the row there (returning
    /// the failure class, if it refused), and check the outcome and the tree after.
    pub(crate) fn run(
        &self,
        side: Side,
        place: impl FnOnce(&Path) -> Result<(), Kind>,
    ) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for spec in &self.before {
            build(root, spec);
        }
        let before = tree(root);
        let got = match place(root) {
            Ok(()) => "ok",
            Err(Kind::Usage) => "usage",
            Err(Kind::Write) => "write",
            Err(Kind::Protocol) => "protocol",
            Err(Kind::Transfer) => "transfer",
            Err(other) => return Err(format!("failed as {other:?}")),
        };
        let want = match (&self.expect, side) {
            (Expect::Both(w), _) => w,
            (Expect::PerSide { upload, .. }, Side::Upload) => upload,
            (Expect::PerSide { download, .. }, Side::Download) => download,
        };
        if got != want {
            return Err(format!("{got} (wanted {want})"));
        }
        if got != "ok" {
            return if tree(root) == before {
                Ok(())
            } else {
                Err("the tree changed after a refusal".into())
            };
        }
        for spec in &self.after {
            if !holds(root, spec) {
                return Err(format!("after: {spec:?} does not hold"));
            }
        }
        Ok(())
    }
}

/// Run every row through `run_row`; one failure report naming every row that failed.
pub(crate) fn every_row(mut run_row: impl FnMut(&Row) -> Result<(), String>) {
    let wrong: Vec<String> = rows()
        .iter()
        .filter_map(|row| run_row(row).err().map(|why| format!("{}: {why}", row.name)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// One after-state entry: `!p` absent, `p/` a directory, `p=content` a file (not a
/// link), `p->target` a link.
fn holds(root: &Path, spec: &str) -> bool {
    if let Some(absent) = spec.strip_prefix('!') {
        fs::symlink_metadata(root.join(absent)).is_err()
    } else if let Some((path, target)) = spec.split_once("->") {
        fs::read_link(root.join(path)).is_ok_and(|t| t.as_os_str().as_bytes() == target.as_bytes())
    } else if let Some(d) = spec.strip_suffix('/') {
        root.join(d).is_dir()
    } else if let Some((path, content)) = spec.split_once('=') {
        let p = root.join(path);
        !p.is_symlink() && fs::read(&p).is_ok_and(|c| c == content.as_bytes())
    } else {
        false
    }
}

/// One before-state entry: `p/` a directory, `p=content` a file, `p->target` a link.
fn build(root: &Path, spec: &str) {
    let path = spec
        .split_once("->")
        .map(|(p, _)| p)
        .or_else(|| spec.strip_suffix('/'))
        .or_else(|| spec.split_once('=').map(|(p, _)| p))
        .unwrap();
    let at = root.join(path);
    if let Some(parent) = at.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    if let Some((_, target)) = spec.split_once("->") {
        std::os::unix::fs::symlink(target, &at).unwrap();
    } else if spec.ends_with('/') {
        fs::create_dir_all(&at).unwrap();
    } else if let Some((_, content)) = spec.split_once('=') {
        fs::write(&at, content).unwrap();
    }
}

/// Everything under `root`: path, kind, content or target.
fn tree(root: &Path) -> BTreeSet<(PathBuf, u8, Vec<u8>)> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .flatten()
        .map(|e| {
            let p = e.path().to_path_buf();
            let t = e.file_type();
            if t.is_symlink() {
                let target = fs::read_link(&p).unwrap();
                (p, b'l', target.as_os_str().as_bytes().to_vec())
            } else if t.is_dir() {
                (p, b'd', Vec::new())
            } else {
                let c = fs::read(&p).unwrap();
                (p, b'f', c)
            }
        })
        .collect()
}
