//! What one transfer may claim at its destination, whichever side places it: every path
//! once (a directory may be announced again), and nothing below a file or a symlink the
//! same transfer put there. The second rule is what stops a stream from planting a link
//! and then writing through it. Used by the local destination of downloads and by the
//! pty upload's script builder; the instance-side receiver (remote/receiver.py, `Stage`)
//! applies the same rule, and tests/fixtures/placement.json holds all three to it.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Claim {
    Dir,
    File,
    Link,
}

/// The paths a transfer has claimed so far, and as what.
#[derive(Default, Debug)]
pub(crate) struct Claims {
    claimed: HashMap<PathBuf, Claim>,
}

impl Claims {
    /// Claim `path` as `kind`, or say why the transfer may not.
    pub(crate) fn claim(&mut self, path: &Path, kind: Claim) -> Result<()> {
        if let Some(prev) = self.claimed.get(path) {
            if !(kind == Claim::Dir && *prev == Claim::Dir) {
                return Err(Error::protocol(format!(
                    "the transfer names {} twice",
                    path.display()
                )));
            }
        }
        for parent in path.ancestors().skip(1) {
            if matches!(self.claimed.get(parent), Some(Claim::File | Claim::Link)) {
                return Err(Error::protocol(format!(
                    "refusing to write through the symlink or file {}",
                    parent.display()
                )));
            }
        }
        self.claimed.insert(path.to_path_buf(), kind);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn each_path_once_and_nothing_below_a_file_or_link() {
        // (claims in order, whether the last is accepted)
        let cases: &[(&[(&str, Claim)], bool)] = &[
            (&[("a", Claim::Dir), ("a", Claim::Dir)], true),
            (&[("a", Claim::Dir), ("a/f", Claim::File)], true),
            (&[("a/f", Claim::File), ("a", Claim::Dir)], true),
            (&[("a", Claim::File), ("a", Claim::File)], false),
            (&[("a", Claim::File), ("a", Claim::Dir)], false),
            (&[("a", Claim::Dir), ("a", Claim::Link)], false),
            (&[("a", Claim::Link), ("a/x", Claim::File)], false),
            (&[("a", Claim::Link), ("a/b/c", Claim::Dir)], false),
            (&[("a", Claim::File), ("a/x", Claim::File)], false),
            (&[("a", Claim::Link), ("ab", Claim::File)], true),
        ];
        for (i, (claims, ok)) in cases.iter().enumerate() {
            let mut c = Claims::default();
            let (last, first) = claims.split_last().unwrap();
            for (p, k) in first {
                c.claim(Path::new(p), *k).unwrap();
            }
            let got = c.claim(Path::new(last.0), last.1);
            assert_eq!(got.is_ok(), *ok, "case {i}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.kind, Kind::Protocol);
            }
        }
    }
}
