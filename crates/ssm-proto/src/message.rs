//! The binary message that carries every data-channel exchange (§3): a 116-byte header
//! followed by a length field and the payload.

use sha2::{Digest, Sha256};
use thiserror::Error;
use uuid::Uuid;

/// The value writers put into the HeaderLength field: the offset of PayloadLength.
pub const HEADER_LENGTH: u32 = 116;
/// HeaderLength of the short form some gateways use for `channel_closed` (§3).
pub const SHORT_HEADER_LENGTH: u32 = 112;

const TYPE_LEN: usize = 32;
const OFF_TYPE: usize = 4;
const OFF_SCHEMA: usize = 36;
const OFF_CREATED: usize = 40;
const OFF_SEQ: usize = 48;
const OFF_FLAGS: usize = 56;
const OFF_ID: usize = 64;
const OFF_DIGEST: usize = 80;
const OFF_PAYLOAD_TYPE: usize = 112;

/// Flags value that acknowledgements carry (§4.1).
pub const ACK_FLAGS: u64 = 3;
/// Bit 0 of Flags: first message of a stream (the agent sets it on its seq 0).
pub const FLAG_SYN: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageType {
    InputStreamData,
    OutputStreamData,
    Acknowledge,
    ChannelClosed,
    StartPublication,
    PausePublication,
    AgentSessionState,
    /// Anything else: receivers ignore it without acking (§4.1).
    Other(String),
}

impl MessageType {
    pub fn as_str(&self) -> &str {
        match self {
            MessageType::InputStreamData => "input_stream_data",
            MessageType::OutputStreamData => "output_stream_data",
            MessageType::Acknowledge => "acknowledge",
            MessageType::ChannelClosed => "channel_closed",
            MessageType::StartPublication => "start_publication",
            MessageType::PausePublication => "pause_publication",
            MessageType::AgentSessionState => "agent_session_state",
            MessageType::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> MessageType {
        match s {
            "input_stream_data" => MessageType::InputStreamData,
            "output_stream_data" => MessageType::OutputStreamData,
            "acknowledge" => MessageType::Acknowledge,
            "channel_closed" => MessageType::ChannelClosed,
            "start_publication" => MessageType::StartPublication,
            "pause_publication" => MessageType::PausePublication,
            "agent_session_state" => MessageType::AgentSessionState,
            other => MessageType::Other(other.to_string()),
        }
    }

    /// Stream data consumes a sequence number and must be acknowledged (§5.1).
    pub fn is_stream_data(&self) -> bool {
        matches!(
            self,
            MessageType::InputStreamData | MessageType::OutputStreamData
        )
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One data-channel message, decoded. `payload_digest` and `header_length` hold what was
/// on the wire so that receivers can validate; `encode` always writes a fresh digest and
/// the standard header length, as every official writer does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header_length: u32,
    pub message_type: MessageType,
    pub schema_version: u32,
    pub created_date: u64,
    pub sequence_number: i64,
    pub flags: u64,
    pub message_id: Uuid,
    pub payload_digest: [u8; 32],
    pub payload_type: u32,
    /// The PayloadLength field as received. Official readers ignore it; see `payload`.
    pub payload_length: u32,
    pub payload: Vec<u8>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame of {0} bytes is shorter than a message header")]
    Truncated(usize),
    #[error("header length {header_length} does not fit a frame of {frame_len} bytes")]
    BadHeaderLength {
        header_length: u32,
        frame_len: usize,
    },
    #[error("message type is not ASCII")]
    BadMessageType,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("header length is zero")]
    ZeroHeaderLength,
    #[error("message type is empty")]
    EmptyMessageType,
    #[error("created date is zero")]
    ZeroCreatedDate,
    #[error("payload digest does not match the payload")]
    DigestMismatch,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("message type {0:?} is longer than 32 bytes or not ASCII")]
pub struct EncodeError(pub String);

impl Message {
    /// A message with a correct digest and standard header length.
    pub fn new(
        message_type: MessageType,
        sequence_number: i64,
        flags: u64,
        payload_type: u32,
        payload: Vec<u8>,
        message_id: Uuid,
        created_date: u64,
    ) -> Message {
        Message {
            header_length: HEADER_LENGTH,
            message_type,
            schema_version: 1,
            created_date,
            sequence_number,
            flags,
            message_id,
            payload_digest: sha256(&payload),
            payload_type,
            payload_length: payload.len() as u32,
            payload,
        }
    }

    /// The acknowledgement of `acked` (§5.2): seq 0, flags 3, payload type 0.
    pub fn ack_for(acked: &Message, message_id: Uuid, created_date: u64) -> Message {
        let content = crate::payload::AcknowledgeContent {
            acknowledged_message_type: acked.message_type.as_str().to_string(),
            acknowledged_message_id: acked.message_id.to_string(),
            acknowledged_message_sequence_number: acked.sequence_number,
            is_sequential_message: true,
        };
        Message::new(
            MessageType::Acknowledge,
            0,
            ACK_FLAGS,
            0,
            content.to_json(),
            message_id,
            created_date,
        )
    }

    pub fn encoded_len(&self) -> usize {
        HEADER_LENGTH as usize + 4 + self.payload.len()
    }

    /// Serialise with HeaderLength 116 and a digest computed over the payload.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let name = self.message_type.as_str();
        if name.len() > TYPE_LEN || !name.is_ascii() {
            return Err(EncodeError(name.to_string()));
        }
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&HEADER_LENGTH.to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.resize(OFF_TYPE + TYPE_LEN, b' ');
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.created_date.to_be_bytes());
        out.extend_from_slice(&self.sequence_number.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&uuid_to_wire(&self.message_id));
        out.extend_from_slice(&sha256(&self.payload));
        out.extend_from_slice(&self.payload_type.to_be_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// Parse a frame the way both official readers do: the payload is everything after
    /// HeaderLength + 4, fixed fields are read at fixed offsets, and a short (112) header
    /// has no PayloadType (reported as 0).
    pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
        if frame.len() < SHORT_HEADER_LENGTH as usize + 4 {
            return Err(DecodeError::Truncated(frame.len()));
        }
        let header_length = be_u32(frame, 0);
        let payload_start = header_length as usize + 4;
        if header_length < SHORT_HEADER_LENGTH || payload_start > frame.len() {
            return Err(DecodeError::BadHeaderLength {
                header_length,
                frame_len: frame.len(),
            });
        }
        let raw_type = &frame[OFF_TYPE..OFF_TYPE + TYPE_LEN];
        if !raw_type.is_ascii() {
            return Err(DecodeError::BadMessageType);
        }
        let name: String = raw_type
            .iter()
            .map(|&b| b as char)
            .filter(|c| *c != '\0')
            .collect::<String>()
            .trim()
            .to_string();
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&frame[OFF_DIGEST..OFF_DIGEST + 32]);
        let payload_type = if header_length >= HEADER_LENGTH {
            be_u32(frame, OFF_PAYLOAD_TYPE)
        } else {
            0
        };
        Ok(Message {
            header_length,
            message_type: MessageType::parse(&name),
            schema_version: be_u32(frame, OFF_SCHEMA),
            created_date: be_u64(frame, OFF_CREATED),
            sequence_number: be_u64(frame, OFF_SEQ) as i64,
            flags: be_u64(frame, OFF_FLAGS),
            message_id: uuid_from_wire(&frame[OFF_ID..OFF_ID + 16]),
            payload_digest: digest,
            payload_type,
            payload_length: be_u32(frame, header_length as usize),
            payload: frame[payload_start..].to_vec(),
        })
    }

    /// The official plugin's receive-side checks (§3): none for the publication
    /// messages; otherwise non-zero header length and created date, a type, and a
    /// matching digest when the declared length is non-zero.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if matches!(
            self.message_type,
            MessageType::StartPublication | MessageType::PausePublication
        ) {
            return Ok(());
        }
        self.validate_header()?;
        if self.payload_length != 0 && !self.digest_matches() {
            return Err(ValidationError::DigestMismatch);
        }
        Ok(())
    }

    /// The agent's checks, which skip the digest (§3).
    pub fn validate_header(&self) -> Result<(), ValidationError> {
        if self.header_length == 0 {
            return Err(ValidationError::ZeroHeaderLength);
        }
        if self.message_type.as_str().is_empty() {
            return Err(ValidationError::EmptyMessageType);
        }
        if self.created_date == 0 {
            return Err(ValidationError::ZeroCreatedDate);
        }
        Ok(())
    }

    pub fn digest_matches(&self) -> bool {
        sha256(&self.payload) == self.payload_digest
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The wire carries the UUID's RFC-4122 bytes 8..16 first, then 0..8 (§3).
pub fn uuid_to_wire(id: &Uuid) -> [u8; 16] {
    let b = id.as_bytes();
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&b[8..]);
    out[8..].copy_from_slice(&b[..8]);
    out
}

pub fn uuid_from_wire(wire: &[u8]) -> Uuid {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&wire[8..16]);
    b[8..].copy_from_slice(&wire[..8]);
    Uuid::from_bytes(b)
}

fn be_u32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn be_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}
