//! Writing a local plan as one bundle (see bundle.rs) into any byte sink: a port
//! session to the receiver, or the S3 multipart upload.

use super::zlib::Out;
use super::{Limiter, Progress};
use crate::copy::bundle::Record;
use crate::copy::local_source::Plan;
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWrite};

const CHUNK: usize = 256 * 1024;

/// Files up to this size are read in one go.
const SMALL_FILE: u64 = 64 * 1024;

/// A source that shrank cannot be sent as announced: the transfer fails (the receiver
/// discards everything staged). Not a usage error: nothing was wrong with the command.
fn shrank(path: &Path) -> Error {
    Error::transfer(format!(
        "{} shrank while it was being copied; nothing was put in place",
        path.display()
    ))
    .hint("copy it again once whatever writes it has finished")
}

/// A source that grew is sent as it was when the copy began, as rsync does, and said so.
fn grew(path: &Path, size: u64) -> String {
    format!(
        "{} grew while it was being copied; its first {size} bytes (its size when the copy began) were copied",
        path.display()
    )
}

pub(crate) async fn send_bundle<W: AsyncWrite + Unpin>(
    w: &mut Out<'_, W>,
    plan: &Plan,
    progress: &dyn Progress,
    limiter: &mut Limiter,
    lost: fn(std::io::Error) -> Error,
) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    for entry in &plan.entries {
        w.put(&entry.record.encode()).await.map_err(lost)?;
        let Record::File { meta, size } = &entry.record else {
            continue;
        };
        let cannot_read = |e: std::io::Error| {
            Error::usage(format!(
                "cannot read {}: {}",
                entry.source.display(),
                crate::copy::local_source::io_reason(&e)
            ))
        };
        let mut hash = Sha256::new();
        if *size <= SMALL_FILE {
            // Small files are read in one blocking call: a trip through tokio's blocking
            // pool per open and read costs more than the read (10,000 small files).
            let mut data = std::fs::read(&entry.source).map_err(cannot_read)?;
            if (data.len() as u64) < *size {
                return Err(shrank(&entry.source));
            }
            if data.len() as u64 > *size {
                progress.warn(&grew(&entry.source, *size));
                data.truncate(*size as usize);
            }
            hash.update(&data);
            limiter.take(data.len()).await;
            w.put(&data).await.map_err(lost)?;
            progress.advance(*size);
        } else {
            let mut file = tokio::fs::File::open(&entry.source)
                .await
                .map_err(cannot_read)?;
            let mut left = *size;
            while left > 0 {
                let want = buf.len().min(left as usize);
                let n = file.read(&mut buf[..want]).await.map_err(cannot_read)?;
                if n == 0 {
                    // The receiver is mid-file and cannot be told; dropping the
                    // connection makes it discard everything staged.
                    return Err(shrank(&entry.source));
                }
                hash.update(&buf[..n]);
                limiter.take(n).await;
                w.put(&buf[..n]).await.map_err(lost)?;
                progress.advance(n as u64);
                left -= n as u64;
            }
            if file.read(&mut buf[..1]).await.is_ok_and(|n| n > 0) {
                progress.warn(&grew(&entry.source, *size));
            }
        }
        w.put(&hash.finalize()).await.map_err(lost)?;
        progress.file_done(&meta.path, *size);
    }
    let end = Record::End {
        count: plan.entries.len() as u64,
    };
    w.put(&end.encode()).await.map_err(lost)?;
    w.finish().await.map_err(lost)
}
