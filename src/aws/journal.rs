//! What S3 copies created and have not removed yet, kept on this machine so that
//! `ssmcp gc` can remove what a killed run (SIGKILL, power loss) left in a bucket. One
//! small file per run, written before anything is created in S3 and removed once the
//! run's cleanup succeeded, so concurrent runs never share a file.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Entry {
    pub bucket: String,
    pub key: String,
    /// The bucket's region when it was given (--bucket-region).
    pub region: Option<String>,
    /// A multipart upload under way, to abort.
    pub upload_id: Option<String>,
    /// Seconds since the epoch, for the report.
    pub created: u64,
    /// The ssmcp process that made it; gc leaves the entries of live runs alone.
    #[serde(default)]
    pub pid: u32,
}

impl Entry {
    /// Whether the run that wrote this entry may still be working on it.
    pub(crate) fn owner_alive(&self) -> bool {
        if self.pid == 0 || self.pid == std::process::id() {
            return false;
        }
        crate::copy::leftovers::alive(self.pid)
    }
}

/// One run's entry on disk.
pub(crate) struct EntryFile {
    path: PathBuf,
    entry: Entry,
}

/// `$XDG_STATE_HOME/ssmcp/staged`, else `~/.local/state/ssmcp/staged`.
pub(crate) fn dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(base.join("ssmcp/staged"))
}

impl EntryFile {
    /// Note `entry` before it is created in S3.
    pub(crate) fn create(entry: Entry) -> Result<EntryFile> {
        let dir = dir().ok_or_else(|| {
            Error::usage("neither XDG_STATE_HOME nor HOME is set, so ssmcp cannot keep its journal")
        })?;
        // Only this user may read it: it names buckets, keys and upload ids.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| cannot_write(&dir, &e))?;
        // Made by an older ssmcp with the umask's mode: close it now.
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        let path = dir.join(format!("{}.json", uuid::Uuid::new_v4().simple()));
        let record = EntryFile { path, entry };
        record.save()?;
        Ok(record)
    }

    /// An entry found on disk (by `pending`), to finish what its run could not.
    pub(crate) fn adopt(path: PathBuf, entry: Entry) -> EntryFile {
        EntryFile { path, entry }
    }

    pub(crate) fn entry(&self) -> &Entry {
        &self.entry
    }

    pub(crate) fn set_upload(&mut self, upload_id: Option<String>) -> Result<()> {
        self.entry.upload_id = upload_id;
        self.save()
    }

    /// Everything was removed: the run leaves no trace (nor a half-saved update).
    pub(crate) fn forget(self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.path.with_extension("tmp"));
    }

    /// Write to a temporary name and rename, so a crash never leaves half an entry.
    fn save(&self) -> Result<()> {
        let tmp = self.path.with_extension("tmp");
        let json = serde_json::to_vec(&self.entry)
            .map_err(|e| Error::protocol(format!("cannot encode the journal entry: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| cannot_write(&self.path, &e))
    }
}

fn cannot_write(path: &Path, e: &std::io::Error) -> Error {
    Error::new(
        crate::error::Kind::Write,
        format!("cannot write ssmcp's journal {}: {e}", path.display()),
    )
    .hint("ssmcp notes what it stages in S3 there so `ssmcp gc` can remove it after a crash; set XDG_STATE_HOME to a writable directory")
}

/// Every run that has not cleaned up after itself: (file, entry). Unreadable files are
/// left alone and reported by the caller as they are found.
///
/// A run killed between writing an update and renaming it into place leaves the update
/// as `ID.tmp` beside `ID.json`; the update is the newer state (it may be the only
/// place a multipart upload's id was noted), so it wins when it reads whole. A `.tmp`
/// that does not read whole was cut off mid-write and says nothing the `.json` lacks.
pub(crate) fn pending() -> Vec<(PathBuf, std::result::Result<Entry, String>)> {
    dir().map(|d| pending_in(&d)).unwrap_or_default()
}

fn pending_in(dir: &Path) -> Vec<(PathBuf, std::result::Result<Entry, String>)> {
    let Ok(list) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let read = |p: &Path| -> std::result::Result<Entry, String> {
        std::fs::read(p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    };
    let mut runs: Vec<PathBuf> = list
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "tmp"))
        .map(|p| p.with_extension("json"))
        .collect();
    runs.sort();
    runs.dedup();
    runs.into_iter()
        .filter_map(|json| match read(&json.with_extension("tmp")) {
            Ok(update) => Some((json, Ok(update))),
            Err(_) if json.exists() => Some((json.clone(), read(&json))),
            Err(_) => {
                // Cut off while the run's first entry was written: S3 has nothing yet.
                let _ = std::fs::remove_file(json.with_extension("tmp"));
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(upload: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&Entry {
            bucket: "b".into(),
            key: "k".into(),
            region: None,
            upload_id: upload.map(str::to_string),
            created: 1,
            pid: 0,
        })
        .unwrap()
    }

    #[test]
    fn an_update_cut_off_before_its_rename_still_counts() {
        let d = tempfile::tempdir().unwrap();
        // Run a: killed after writing its update (with the upload id), before renaming.
        std::fs::write(d.path().join("a.json"), entry(None)).unwrap();
        std::fs::write(d.path().join("a.tmp"), entry(Some("up-1"))).unwrap();
        // Run b: killed mid-way through writing an update; its entry stands.
        std::fs::write(d.path().join("b.json"), entry(Some("up-2"))).unwrap();
        std::fs::write(d.path().join("b.tmp"), b"{\"bucket\":").unwrap();
        // Run c: killed while its first entry was written; nothing was in S3 yet.
        std::fs::write(d.path().join("c.tmp"), b"{").unwrap();
        let found: Vec<(String, Option<String>)> = pending_in(d.path())
            .into_iter()
            .map(|(p, e)| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, e.unwrap().upload_id)
            })
            .collect();
        assert_eq!(
            found,
            [
                ("a.json".to_string(), Some("up-1".to_string())),
                ("b.json".to_string(), Some("up-2".to_string())),
            ]
        );
        assert!(!d.path().join("c.tmp").exists());
        let record = EntryFile::adopt(
            d.path().join("a.json"),
            Entry {
                bucket: "b".into(),
                key: "k".into(),
                region: None,
                upload_id: None,
                created: 1,
                pid: 0,
            },
        );
        record.forget();
        assert!(!d.path().join("a.json").exists() && !d.path().join("a.tmp").exists());
    }
}
