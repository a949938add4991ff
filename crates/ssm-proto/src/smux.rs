//! smux protocol v1 frames (§7.4): the multiplexing layer that mux-mode port sessions
//! run over the reassembled Output byte stream. Frames are not aligned with data-channel
//! messages, so decoding is incremental.

use thiserror::Error;

pub const VERSION: u8 = 1;
pub const HEADER_SIZE: usize = 8;
/// smux's default MaxFrameSize: writers split data into PSH frames of at most this.
pub const MAX_FRAME_SIZE: usize = 32768;
/// The client's first stream id; later ones add 2.
pub const FIRST_CLIENT_STREAM_ID: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Syn,
    Fin,
    Psh,
    Nop,
    Upd,
}

impl Cmd {
    fn from_u8(v: u8) -> Option<Cmd> {
        Some(match v {
            0 => Cmd::Syn,
            1 => Cmd::Fin,
            2 => Cmd::Psh,
            3 => Cmd::Nop,
            4 => Cmd::Upd,
            _ => return None,
        })
    }

    fn as_u8(self) -> u8 {
        match self {
            Cmd::Syn => 0,
            Cmd::Fin => 1,
            Cmd::Psh => 2,
            Cmd::Nop => 3,
            Cmd::Upd => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub cmd: Cmd,
    pub stream_id: u32,
    pub data: Vec<u8>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SmuxError {
    /// smux closes the whole session on a frame of another version.
    #[error("smux frame has version {0}, expected 1")]
    BadVersion(u8),
    #[error("smux frame has unknown command {0}")]
    BadCmd(u8),
    #[error("smux frame data of {0} bytes exceeds 65535")]
    TooLong(usize),
}

impl Frame {
    pub fn new(cmd: Cmd, stream_id: u32, data: Vec<u8>) -> Frame {
        Frame {
            cmd,
            stream_id,
            data,
        }
    }

    /// Header bytes for a frame carrying `len` data bytes.
    pub fn header(cmd: Cmd, stream_id: u32, len: usize) -> Result<[u8; HEADER_SIZE], SmuxError> {
        let len16 = u16::try_from(len).map_err(|_| SmuxError::TooLong(len))?;
        let mut h = [0u8; HEADER_SIZE];
        h[0] = VERSION;
        h[1] = cmd.as_u8();
        h[2..4].copy_from_slice(&len16.to_le_bytes());
        h[4..8].copy_from_slice(&stream_id.to_le_bytes());
        Ok(h)
    }

    pub fn encode(&self) -> Result<Vec<u8>, SmuxError> {
        let mut out = Vec::with_capacity(HEADER_SIZE + self.data.len());
        out.extend_from_slice(&Frame::header(self.cmd, self.stream_id, self.data.len())?);
        out.extend_from_slice(&self.data);
        Ok(out)
    }
}

/// Incremental decoder: feed arbitrary chunks with `push`, then drain with `next_frame`.
/// It holds at most one partial frame (≤ 65,543 bytes) plus the last chunk pushed, so
/// memory stays bounded as long as callers drain after every push.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>, SmuxError> {
        let avail = &self.buf[self.pos..];
        if avail.len() < HEADER_SIZE {
            return Ok(None);
        }
        if avail[0] != VERSION {
            return Err(SmuxError::BadVersion(avail[0]));
        }
        let cmd = Cmd::from_u8(avail[1]).ok_or(SmuxError::BadCmd(avail[1]))?;
        let len = u16::from_le_bytes([avail[2], avail[3]]) as usize;
        let stream_id = u32::from_le_bytes([avail[4], avail[5], avail[6], avail[7]]);
        if avail.len() < HEADER_SIZE + len {
            return Ok(None);
        }
        let data = avail[HEADER_SIZE..HEADER_SIZE + len].to_vec();
        self.pos += HEADER_SIZE + len;
        Ok(Some(Frame {
            cmd,
            stream_id,
            data,
        }))
    }
}
