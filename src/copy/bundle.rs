//! The one streaming format every transport carries: records for directories, files,
//! symlinks and file ranges, each file's (or range's) bytes followed by their SHA-256.
//! The instance-side receiver (remote/receiver.py) speaks the same format; the layout is
//! documented in docs/transports.md. Integers are big-endian; paths are raw bytes.

use crate::error::{Error, Result};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Size of a SHA-256 digest trailing each file's or range's bytes.
pub const DIGEST_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mtime {
    pub secs: i64,
    pub nanos: u32,
}

/// What every entry carries besides its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Relative path; the first component names the top-level source ("." for a
    /// directory's contents).
    pub path: Vec<u8>,
    pub mode: u32,
    pub mtime: Mtime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Dir(Meta),
    /// A file whose `size` bytes and digest follow immediately (uploads).
    File {
        meta: Meta,
        size: u64,
    },
    /// A file in a download manifest; its bytes come later as ranges.
    Listed {
        meta: Meta,
        size: u64,
    },
    Link {
        meta: Meta,
        target: Vec<u8>,
    },
    /// `len` bytes of manifest file `index` from `offset`, then their digest.
    Range {
        index: u32,
        offset: u64,
        len: u64,
    },
    /// Something the sender skipped and the user should hear about.
    Warning(String),
    /// The sender gave up; the receiver must discard everything staged.
    Abort(String),
    End {
        count: u64,
    },
}

impl Record {
    /// The record's header bytes (content and digest, where they follow, are not part of it).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Record::Dir(m) => {
                out.push(b'D');
                put_meta(&mut out, m);
            }
            Record::File { meta, size } | Record::Listed { meta, size } => {
                out.push(if matches!(self, Record::File { .. }) {
                    b'F'
                } else {
                    b'M'
                });
                put_meta(&mut out, meta);
                out.extend_from_slice(&size.to_be_bytes());
            }
            Record::Link { meta, target } => {
                out.push(b'L');
                put_bytes16(&mut out, &meta.path);
                put_bytes16(&mut out, target);
                put_times(&mut out, meta);
            }
            Record::Range { index, offset, len } => {
                out.push(b'R');
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
            }
            Record::Warning(text) | Record::Abort(text) => {
                out.push(if matches!(self, Record::Warning(_)) {
                    b'W'
                } else {
                    b'X'
                });
                put_bytes16(&mut out, truncated(text.as_bytes()));
            }
            Record::End { count } => {
                out.push(b'E');
                out.extend_from_slice(&count.to_be_bytes());
            }
        }
        out
    }

    /// Read one record header. Content that follows File and Range is left in `r`.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Record> {
        let tag = r.read_u8().await.map_err(cut)?;
        Ok(match tag {
            b'D' => Record::Dir(read_meta(r).await?),
            b'F' | b'M' => {
                let meta = read_meta(r).await?;
                let size = r.read_u64().await.map_err(cut)?;
                if tag == b'F' {
                    Record::File { meta, size }
                } else {
                    Record::Listed { meta, size }
                }
            }
            b'L' => {
                let path = read_bytes16(r).await?;
                let target = read_bytes16(r).await?;
                let (mode, mtime) = read_times(r).await?;
                Record::Link {
                    meta: Meta { path, mode, mtime },
                    target,
                }
            }
            b'R' => Record::Range {
                index: r.read_u32().await.map_err(cut)?,
                offset: r.read_u64().await.map_err(cut)?,
                len: r.read_u64().await.map_err(cut)?,
            },
            b'W' | b'X' => {
                let text = String::from_utf8_lossy(&read_bytes16(r).await?).into_owned();
                if tag == b'W' {
                    Record::Warning(text)
                } else {
                    Record::Abort(text)
                }
            }
            b'E' => Record::End {
                count: r.read_u64().await.map_err(cut)?,
            },
            other => {
                return Err(Error::protocol(format!(
                    "unknown bundle record 0x{other:02x} from the instance"
                )))
            }
        })
    }
}

/// Split a bundle path into components, refusing anything that could escape the
/// destination: absolute paths, `..`, empty or `.` components (except a lone leading
/// `.`, which names a directory's contents), NUL bytes.
pub fn components(path: &[u8]) -> Result<Vec<&[u8]>> {
    let unsafe_path = || {
        Error::protocol(format!(
            "refusing an unsafe path from the other side: {}",
            String::from_utf8_lossy(path)
        ))
    };
    if path.is_empty() || path[0] == b'/' || path.contains(&0) {
        return Err(unsafe_path());
    }
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || *p == b".." || (*p == b"." && i > 0) {
            return Err(unsafe_path());
        }
    }
    Ok(parts)
}

fn cut(e: std::io::Error) -> Error {
    Error::transfer(format!("the data stream ended early: {e}"))
}

fn truncated(b: &[u8]) -> &[u8] {
    &b[..b.len().min(60_000)]
}

fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    // Paths are bounded by PATH_MAX long before 64 KiB; longer input is cut, and then
    // refused by the other side's path checks rather than silently misframed.
    let b = &b[..b.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_times(out: &mut Vec<u8>, m: &Meta) {
    out.extend_from_slice(&m.mode.to_be_bytes());
    out.extend_from_slice(&m.mtime.secs.to_be_bytes());
    out.extend_from_slice(&m.mtime.nanos.to_be_bytes());
}

fn put_meta(out: &mut Vec<u8>, m: &Meta) {
    put_bytes16(out, &m.path);
    put_times(out, m);
}

async fn read_bytes16<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>> {
    let n = r.read_u16().await.map_err(cut)?;
    let mut b = vec![0; n as usize];
    r.read_exact(&mut b).await.map_err(cut)?;
    Ok(b)
}

async fn read_times<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u32, Mtime)> {
    let mode = r.read_u32().await.map_err(cut)?;
    let secs = r.read_i64().await.map_err(cut)?;
    let nanos = r.read_u32().await.map_err(cut)?;
    if nanos >= 1_000_000_000 {
        return Err(Error::protocol(
            "a bundle timestamp has nanoseconds out of range",
        ));
    }
    Ok((mode, Mtime { secs, nanos }))
}

async fn read_meta<R: AsyncRead + Unpin>(r: &mut R) -> Result<Meta> {
    let path = read_bytes16(r).await?;
    let (mode, mtime) = read_times(r).await?;
    Ok(Meta { path, mode, mtime })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &[u8]) -> Meta {
        Meta {
            path: path.to_vec(),
            mode: 0o644,
            mtime: Mtime {
                secs: 1_700_000_000,
                nanos: 5,
            },
        }
    }

    #[tokio::test]
    async fn every_record_round_trips() {
        let records = vec![
            Record::Dir(meta(b"top")),
            Record::File {
                meta: meta(b"top/a b\n\xff"),
                size: 7,
            },
            Record::Listed {
                meta: meta(b"x"),
                size: u64::MAX,
            },
            Record::Link {
                meta: meta(b"top/l"),
                target: b"../elsewhere".to_vec(),
            },
            Record::Range {
                index: 3,
                offset: 1 << 40,
                len: 9,
            },
            Record::Warning("skipped a fifo".into()),
            Record::Abort("gone".into()),
            Record::End { count: 6 },
        ];
        for rec in records {
            let bytes = rec.encode();
            let mut r = &bytes[..];
            assert_eq!(Record::read(&mut r).await.unwrap(), rec);
            assert!(r.is_empty());
        }
    }

    #[tokio::test]
    async fn truncated_records_are_errors() {
        let bytes = Record::File {
            meta: meta(b"abc"),
            size: 1,
        }
        .encode();
        for n in 0..bytes.len() {
            let mut r = &bytes[..n];
            assert!(Record::read(&mut r).await.is_err(), "prefix {n}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            &b"/etc"[..],
            b"a/../b",
            b"..",
            b"a//b",
            b"a/",
            b"a/./b",
            b"",
            b"a\0b",
        ] {
            assert!(
                components(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(components(b".").unwrap(), vec![&b"."[..]]);
        assert_eq!(components(b"./a").unwrap().len(), 2);
        assert_eq!(components(b"a b/\xff").unwrap().len(), 2);
    }
}
