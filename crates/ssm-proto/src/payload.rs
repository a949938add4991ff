//! Payload types, flags and the JSON bodies carried inside messages (§2, §4–§6, §9).
//!
//! Struct field order is the order the official Go structs marshal in, so that encoders
//! are byte-exact with the plugin; decoders accept any order and missing optional fields.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadType {
    Output,
    Error,
    Size,
    Parameter,
    HandshakeRequest,
    HandshakeResponse,
    HandshakeComplete,
    EncChallengeRequest,
    EncChallengeResponse,
    Flag,
    StdErr,
    ExitCode,
    Unknown(u32),
}

impl PayloadType {
    pub fn from_u32(v: u32) -> PayloadType {
        match v {
            1 => PayloadType::Output,
            2 => PayloadType::Error,
            3 => PayloadType::Size,
            4 => PayloadType::Parameter,
            5 => PayloadType::HandshakeRequest,
            6 => PayloadType::HandshakeResponse,
            7 => PayloadType::HandshakeComplete,
            8 => PayloadType::EncChallengeRequest,
            9 => PayloadType::EncChallengeResponse,
            10 => PayloadType::Flag,
            11 => PayloadType::StdErr,
            12 => PayloadType::ExitCode,
            other => PayloadType::Unknown(other),
        }
    }

    pub fn as_u32(self) -> u32 {
        match self {
            PayloadType::Output => 1,
            PayloadType::Error => 2,
            PayloadType::Size => 3,
            PayloadType::Parameter => 4,
            PayloadType::HandshakeRequest => 5,
            PayloadType::HandshakeResponse => 6,
            PayloadType::HandshakeComplete => 7,
            PayloadType::EncChallengeRequest => 8,
            PayloadType::EncChallengeResponse => 9,
            PayloadType::Flag => 10,
            PayloadType::StdErr => 11,
            PayloadType::ExitCode => 12,
            PayloadType::Unknown(v) => v,
        }
    }
}

/// PayloadType 10 values (§4.3): a big-endian u32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    DisconnectToPort,
    TerminateSession,
    ConnectToPortError,
    Unknown(u32),
}

impl Flag {
    pub fn encode(self) -> Vec<u8> {
        let v: u32 = match self {
            Flag::DisconnectToPort => 1,
            Flag::TerminateSession => 2,
            Flag::ConnectToPortError => 3,
            Flag::Unknown(v) => v,
        };
        v.to_be_bytes().to_vec()
    }

    /// `None` when the payload is not exactly four bytes.
    pub fn decode(payload: &[u8]) -> Option<Flag> {
        let b: [u8; 4] = payload.try_into().ok()?;
        Some(match u32::from_be_bytes(b) {
            1 => Flag::DisconnectToPort,
            2 => Flag::TerminateSession,
            3 => Flag::ConnectToPortError,
            v => Flag::Unknown(v),
        })
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string keys.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Acknowledge payload (§5.2). Receivers match on the sequence number only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AcknowledgeContent {
    pub acknowledged_message_type: String,
    pub acknowledged_message_id: String,
    pub acknowledged_message_sequence_number: i64,
    pub is_sequential_message: bool,
}

impl AcknowledgeContent {
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// The first, text, websocket frame (§2). Its Debug form hides the token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OpenDataChannelInput {
    pub message_schema_version: String,
    pub request_id: String,
    pub token_value: String,
    pub client_id: String,
    #[serde(default)]
    pub client_version: String,
}

impl std::fmt::Debug for OpenDataChannelInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenDataChannelInput")
            .field("message_schema_version", &self.message_schema_version)
            .field("request_id", &self.request_id)
            .field("token_value", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("client_version", &self.client_version)
            .finish()
    }
}

impl OpenDataChannelInput {
    pub fn to_json(&self) -> String {
        String::from_utf8(to_json(self)).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestedClientAction {
    pub action_type: String,
    #[serde(default)]
    pub action_parameters: Value,
}

/// HandshakeRequest (agent → client, §6.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HandshakeRequest {
    pub agent_version: String,
    #[serde(default)]
    pub requested_client_actions: Vec<RequestedClientAction>,
}

/// ActionParameters of the `SessionType` action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionTypeRequest {
    pub session_type: String,
    #[serde(default)]
    pub properties: Value,
}

pub const ACTION_SESSION_TYPE: &str = "SessionType";
pub const ACTION_KMS_ENCRYPTION: &str = "KMSEncryption";

impl HandshakeRequest {
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }

    /// The requested session type and its properties, if the agent sent one.
    pub fn session_type(&self) -> Option<SessionTypeRequest> {
        self.requested_client_actions
            .iter()
            .find(|a| a.action_type == ACTION_SESSION_TYPE)
            .and_then(|a| serde_json::from_value(a.action_parameters.clone()).ok())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionStatus {
    Success = 1,
    Failed = 2,
    Unsupported = 3,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessedClientAction {
    pub action_type: String,
    pub action_status: i32,
    #[serde(default)]
    pub action_result: Value,
    #[serde(default)]
    pub error: String,
}

/// HandshakeResponse (client → agent, §6.3). `Errors` is `null` when empty, as the
/// plugin emits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HandshakeResponse {
    pub client_version: String,
    #[serde(default)]
    pub processed_client_actions: Vec<ProcessedClientAction>,
    #[serde(default)]
    pub errors: Option<Vec<String>>,
}

impl HandshakeResponse {
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// HandshakeComplete (agent → client, §6.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HandshakeComplete {
    #[serde(default)]
    pub handshake_time_to_complete: i64,
    #[serde(default)]
    pub customer_message: String,
}

impl HandshakeComplete {
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// channel_closed payload (§9). Every field is optional on decode: the service's exact
/// format is unverified.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ChannelClosed {
    pub message_id: String,
    pub created_date: String,
    pub destination_id: String,
    pub session_id: String,
    pub message_type: String,
    pub schema_version: i32,
    pub output: String,
}

impl ChannelClosed {
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// Terminal size (PayloadType 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeData {
    pub cols: u32,
    pub rows: u32,
}

impl SizeData {
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}
