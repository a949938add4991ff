//! Temporaries that a killed run left behind. A run that is SIGKILLed (or loses its
//! machine) cannot clean up, so every temporary carries its owner's process id in its
//! name, `.NAME.ssmcp-PID-TAG.tmp` (`.lnk` for links), and the next run that writes into
//! the same directory removes those whose owner is gone. Age is the second net: a pid can
//! be reused, so a temporary older than [`MAX_AGE`] goes whoever owns that pid now.
//! receiver.py applies the same rule on the instance (docs/transports.md).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// No copy keeps a temporary this long; one this old is left over, whatever its pid says.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

const MARK: &[u8] = b".ssmcp-";

/// The temporary's name for `final_name` owned by process `pid`: hidden, recognisable,
/// and short enough for any filesystem (the final name is cut at 180 bytes).
pub fn temp_name(final_name: &[u8], pid: u32, tag: &str, suffix: &str) -> Vec<u8> {
    let mut t = b".".to_vec();
    t.extend_from_slice(&final_name[..final_name.len().min(180)]);
    t.extend_from_slice(MARK);
    t.extend_from_slice(format!("{pid}-{tag}.{suffix}").as_bytes());
    t
}

/// The owning pid of one of our temporaries, or None for any other name.
pub fn owner(name: &[u8]) -> Option<u32> {
    let rest = name.strip_prefix(b".")?;
    let at = rest.windows(MARK.len()).rposition(|w| w == MARK)?;
    let tail = std::str::from_utf8(&rest[at + MARK.len()..]).ok()?;
    let (stem, suffix) = tail.rsplit_once('.')?;
    if suffix != "tmp" && suffix != "lnk" {
        return None;
    }
    let (pid, tag) = stem.split_once('-')?;
    if tag.len() != 12 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// Whether process `pid` exists (EPERM: it does, as another user's).
pub fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// Remove the temporaries in `dir` whose owner is gone (or that are older than
/// [`MAX_AGE`]); never ours, never a directory, never through a symlink. Returns what
/// was removed. Unreadable directories and vanished entries are skipped silently: this
/// is housekeeping, never a reason to fail a copy.
pub fn reap(dir: &Path) -> Vec<PathBuf> {
    let me = std::process::id();
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    let now = SystemTime::now();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = owner(name.as_bytes()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > MAX_AGE);
        if (old || !alive(pid)) && std::fs::remove_file(e.path()).is_ok() {
            removed.push(dir.join(OsStr::from_bytes(name.as_bytes())));
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_owner() {
        let n = temp_name(b"report.csv", 4242, "0123456789ab", "tmp");
        assert_eq!(n, b".report.csv.ssmcp-4242-0123456789ab.tmp");
        assert_eq!(owner(&n), Some(4242));
        assert_eq!(
            owner(&temp_name(
                b"a.ssmcp-1-0123456789ab.tmp",
                7,
                "abcdefabcdef",
                "lnk"
            )),
            Some(7)
        );
        for other in [
            &b"report.csv"[..],
            b".report.csv.ssmcp-0123456789ab.tmp", // an older run's name: no owner
            b".x.ssmcp-12-0123456789ab.new",
            b".x.ssmcp-12-xyz.tmp",
            b"x.ssmcp-12-0123456789ab.tmp",
            b".x.ssmcp-0-0123456789ab.tmp",
        ] {
            assert_eq!(owner(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn only_dead_owners_temporaries_are_reaped() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that is certainly gone: a child that has been waited for.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let name = |pid| {
            dir.path().join(OsStr::from_bytes(&temp_name(
                b"f",
                pid,
                "0123456789ab",
                "tmp",
            )))
        };
        let (gone, mine, other, unrelated) = (
            name(dead),
            name(std::process::id()),
            name(1),
            dir.path().join("f"),
        );
        for p in [&gone, &mine, &other, &unrelated] {
            std::fs::write(p, b"x").unwrap();
        }
        let removed = reap(dir.path());
        assert_eq!(removed, vec![gone.clone()]);
        assert!(!gone.exists() && mine.exists() && other.exists() && unrelated.exists());
        // Age is the second net: pid 1 is alive, but a day-old temporary goes.
        let old = filetime::FileTime::from_unix_time(0, 0);
        filetime::set_file_mtime(&other, old).unwrap();
        assert_eq!(reap(dir.path()), vec![other]);
    }
}
