//! `-C`: zlib streams inside a connection to the receiver. Each compressed stream is
//! complete (ends with zlib's own end marker), so a reader knows where it stops and
//! what follows it on the connection is left untouched for the next reader.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Output produced per compression step.
const OUT: usize = 64 * 1024;

/// Writes either as is or through one zlib stream (finished by [`Out::finish`]).
pub(crate) struct Out<'a, W> {
    w: &'a mut W,
    z: Option<(Compress, Vec<u8>)>,
}

impl<'a, W: AsyncWrite + Unpin> Out<'a, W> {
    pub(crate) fn new(w: &'a mut W, compress: bool) -> Self {
        let z = compress.then(|| {
            (
                Compress::new(Compression::default(), true),
                Vec::with_capacity(OUT),
            )
        });
        Out { w, z }
    }

    pub(crate) async fn put(&mut self, mut data: &[u8]) -> io::Result<()> {
        let Some((z, buf)) = &mut self.z else {
            return self.w.write_all(data).await;
        };
        while !data.is_empty() {
            buf.clear();
            let before = z.total_in();
            z.compress_vec(data, buf, FlushCompress::None)
                .map_err(io::Error::other)?;
            data = &data[(z.total_in() - before) as usize..];
            self.w.write_all(buf).await?;
        }
        Ok(())
    }

    /// End the zlib stream (if any) and flush.
    pub(crate) async fn finish(&mut self) -> io::Result<()> {
        if let Some((z, buf)) = &mut self.z {
            loop {
                buf.clear();
                let status = z
                    .compress_vec(&[], buf, FlushCompress::Finish)
                    .map_err(io::Error::other)?;
                self.w.write_all(buf).await?;
                if status == Status::StreamEnd {
                    break;
                }
            }
        }
        self.w.flush().await
    }
}

/// Reads one complete zlib stream from a buffered reader, consuming exactly its bytes.
pub(crate) struct Inflate<'a, R> {
    inner: &'a mut R,
    z: Decompress,
    done: bool,
}

impl<'a, R: AsyncBufRead + Unpin> Inflate<'a, R> {
    pub(crate) fn new(inner: &'a mut R) -> Self {
        Inflate {
            inner,
            z: Decompress::new(true),
            done: false,
        }
    }

    /// After the last expected record: the stream must end here.
    pub(crate) async fn finish(&mut self) -> io::Result<()> {
        use tokio::io::AsyncReadExt;
        let mut probe = [0u8; 1];
        match self.read(&mut probe).await? {
            0 => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more compressed data than records",
            )),
        }
    }
}

impl<R: AsyncBufRead + Unpin> AsyncRead for Inflate<'_, R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.done || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // zlib may hold output it had no room for: drain it before waiting for input
            // that may never come (the sender has sent everything).
            let out0 = this.z.total_out();
            let status = this
                .z
                .decompress(&[], buf.initialize_unfilled(), FlushDecompress::None)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let produced = (this.z.total_out() - out0) as usize;
            buf.advance(produced);
            if status == Status::StreamEnd {
                this.done = true;
            }
            if produced > 0 || this.done {
                return Poll::Ready(Ok(()));
            }
            let input = ready!(Pin::new(&mut *this.inner).poll_fill_buf(cx))?;
            if input.is_empty() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the compressed stream ended early",
                )));
            }
            let (in0, out0) = (this.z.total_in(), this.z.total_out());
            let status = this
                .z
                .decompress(input, buf.initialize_unfilled(), FlushDecompress::None)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let consumed = (this.z.total_in() - in0) as usize;
            let produced = (this.z.total_out() - out0) as usize;
            Pin::new(&mut *this.inner).consume(consumed);
            buf.advance(produced);
            if status == Status::StreamEnd {
                this.done = true;
            }
            if produced > 0 || this.done {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, BufReader};

    #[tokio::test]
    async fn streams_round_trip_and_leave_what_follows() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
        let mut wire = Vec::new();
        {
            let mut out = Out::new(&mut wire, true);
            out.put(&data[..1000]).await.unwrap();
            out.put(&data[1000..]).await.unwrap();
            out.finish().await.unwrap();
        }
        assert!(wire.len() < data.len() / 10, "{}", wire.len());
        wire.extend_from_slice(b"next");
        let mut r = BufReader::with_capacity(333, &wire[..]);
        let mut got = Vec::new();
        let mut z = Inflate::new(&mut r);
        z.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        let mut rest = String::new();
        r.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "next");
    }

    #[tokio::test]
    async fn output_held_by_zlib_is_delivered_without_more_input() {
        // Highly compressible: a few input bytes hold far more output than one read.
        let data = vec![b'a'; 1 << 20];
        let mut wire = Vec::new();
        let mut out = Out::new(&mut wire, true);
        out.put(&data).await.unwrap();
        out.finish().await.unwrap();
        let mut r = BufReader::new(&wire[..]);
        let mut z = Inflate::new(&mut r);
        let mut got = vec![0u8; data.len()];
        for chunk in got.chunks_mut(4096) {
            z.read_exact(chunk).await.unwrap();
        }
        z.finish().await.unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn damaged_streams_are_errors() {
        let mut wire = Vec::new();
        let mut out = Out::new(&mut wire, true);
        out.put(b"hello hello hello").await.unwrap();
        out.finish().await.unwrap();
        let n = wire.len();
        wire[n / 2] ^= 0xff;
        let mut r = BufReader::new(&wire[..]);
        let mut got = Vec::new();
        assert!(Inflate::new(&mut r).read_to_end(&mut got).await.is_err());
    }
}
