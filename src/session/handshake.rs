//! The client's half of the handshake (§6): answer the agent's HandshakeRequest and wait
//! for HandshakeComplete before any data is sent (data sent earlier is silently
//! discarded by the agent). Shell-type sessions without KMS skip it: their first message
//! is already output, which is handed back to the caller. With KMS it also makes the
//! session's data key and answers the encryption challenge (§6.4).

use super::channel::{Channel, Inbound};
use super::encryption;
use crate::error::{Error, Kind, Result};
use serde_json::Value;
use ssm_proto::kms::{EncryptionChallenge, KmsEncryptionRequest, KmsEncryptionResponse};
use ssm_proto::payload::{ACTION_KMS_ENCRYPTION, ACTION_SESSION_TYPE};
use ssm_proto::{
    ActionStatus, HandshakeComplete, HandshakeRequest, HandshakeResponse, PayloadType,
    ProcessedClientAction,
};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub(crate) struct HandshakeInfo {
    pub agent_version: String,
    pub session_type: String,
    pub properties: serde_json::Value,
    /// What HandshakeComplete asks to be shown to the user (empty: nothing); the
    /// caller's reporter shows it.
    pub customer_message: String,
    /// The KMS key the session is encrypted with, if the agent asked for encryption.
    pub kms_key: Option<String>,
}

/// The agent gives up after 15 s; we wait a little longer for its first message.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) enum Start {
    Handshaken(HandshakeInfo),
    /// No handshake: this first message is session output.
    NoHandshake(Inbound),
}

pub(crate) async fn perform(channel: &mut Channel) -> Result<Start> {
    let first = recv(channel).await?;
    let Inbound::Data(PayloadType::HandshakeRequest, payload) = first else {
        return Ok(Start::NoHandshake(first));
    };
    let req: HandshakeRequest = serde_json::from_slice(&payload).map_err(|e| {
        Error::protocol(format!(
            "the agent sent an unreadable HandshakeRequest: {e}"
        ))
    })?;
    let mut info = HandshakeInfo {
        agent_version: req.agent_version.clone(),
        ..HandshakeInfo::default()
    };
    let mut refused = None;
    // The key the agent asked us to encrypt with, once we have made its data key.
    let mut kms_key = None;
    let mut actions = Vec::new();
    for a in &req.requested_client_actions {
        let (status, result, error) = match a.action_type.as_str() {
            ACTION_SESSION_TYPE => match req.session_type() {
                Some(st) if known_type(&st.session_type) => {
                    info.session_type = st.session_type;
                    info.properties = st.properties;
                    (ActionStatus::Success, Value::Null, String::new())
                }
                other => {
                    let t = other.map(|s| s.session_type).unwrap_or_default();
                    refused = Some(Error::protocol(format!(
                        "the agent asked for an unknown session type '{t}'"
                    )));
                    (
                        ActionStatus::Failed,
                        Value::Null,
                        format!("unsupported session type {t}"),
                    )
                }
            },
            ACTION_KMS_ENCRYPTION => match encrypt(channel, &req, &a.action_parameters).await {
                Ok((key, result)) => {
                    kms_key = Some(key);
                    (ActionStatus::Success, result, String::new())
                }
                Err(e) => {
                    let said = format!("Failed to process action KMSEncryption: {}", e.message);
                    refused = Some(e);
                    (ActionStatus::Failed, Value::Null, said)
                }
            },
            other => (
                ActionStatus::Unsupported,
                Value::Null,
                format!("unsupported action {other}"),
            ),
        };
        actions.push(ProcessedClientAction {
            action_type: a.action_type.clone(),
            action_status: status as i32,
            action_result: result,
            error,
        });
    }
    let resp = HandshakeResponse {
        client_version: ssm_proto::CLIENT_VERSION.into(),
        processed_client_actions: actions,
        errors: None,
    };
    channel
        .sender
        .send(PayloadType::HandshakeResponse, resp.to_json())
        .await?;
    if let Some(e) = refused {
        return Err(e);
    }
    loop {
        match recv_or_closed(channel).await? {
            Inbound::Closed(o) => {
                // Closed by the agent after it had our data key: it could not use it.
                let e = ended(Inbound::Closed(o));
                return Err(match kms_key.as_deref() {
                    Some(k) => agent_refused_key(k, e),
                    None => e,
                });
            }
            Inbound::Data(PayloadType::HandshakeComplete, payload) => {
                if let Ok(done) = serde_json::from_slice::<HandshakeComplete>(&payload) {
                    info.customer_message = done.customer_message;
                }
                info.kms_key = kms_key;
                return Ok(Start::Handshaken(info));
            }
            Inbound::Data(PayloadType::EncChallengeRequest, payload) => {
                let challenge: EncryptionChallenge =
                    serde_json::from_slice(&payload).map_err(|e| {
                        Error::protocol(format!(
                            "the agent sent an unreadable encryption challenge: {e}"
                        ))
                    })?;
                let answer = EncryptionChallenge {
                    challenge: channel.encryption.answer_challenge(&challenge.challenge)?,
                };
                channel
                    .sender
                    .send(PayloadType::EncChallengeResponse, answer.to_json())
                    .await?;
            }
            Inbound::Data(pt, _) => {
                tracing::debug!("ignoring {pt:?} before HandshakeComplete");
            }
            Inbound::Failed(e) => return Err(e),
        }
    }
}

/// The KMSEncryption action: a 64-byte data key from KMS under the agent's key, with
/// the session's encryption context; our half of it seals from now on (§6.4).
async fn encrypt(
    channel: &Channel,
    req: &HandshakeRequest,
    params: &Value,
) -> Result<(String, Value)> {
    if req.session_type().is_some_and(|t| t.session_type == "Port") {
        // The agent never encrypts port sessions; one that asks is not one we know.
        return Err(Error::protocol(
            "the agent asked for KMS encryption of a port session",
        ));
    }
    let asked: KmsEncryptionRequest = serde_json::from_value(params.clone()).map_err(|e| {
        Error::protocol(format!(
            "the agent's KMSEncryption request is unreadable: {e}"
        ))
    })?;
    let keys = channel.keys.as_ref().ok_or_else(|| {
        Error::protocol("this session must be KMS-encrypted, but no KMS client was set up for it")
    })?;
    let data_key = keys.data_key(&asked.kms_key_id).await?;
    channel
        .encryption
        .start(encryption::client_keys(&data_key)?)?;
    let result = KmsEncryptionResponse {
        cipher_text_key: data_key.ciphertext,
        cipher_text_hash: None,
    };
    Ok((
        asked.kms_key_id,
        serde_json::to_value(result).unwrap_or_default(),
    ))
}

/// The agent ended the session after we sent it a data key: it could not decrypt the
/// key (its role lacks kms:Decrypt, or the key policy refuses it) or our answer.
fn agent_refused_key(key: &str, cause: Error) -> Error {
    Error::new(
        Kind::Target,
        format!("the instance ended the session while setting up KMS encryption with {key} ({})", cause.message),
    )
    .hint("the instance's role (its instance profile) needs kms:Decrypt on that key, in its IAM policy and in the key policy (docs/policies/kms-instance-role.json); the agent's log, /var/log/amazon/ssm/amazon-ssm-agent.log, says which")
}

fn known_type(t: &str) -> bool {
    matches!(
        t,
        "Port" | "Standard_Stream" | "InteractiveCommands" | "NonInteractiveCommands"
    )
}

async fn recv(channel: &mut Channel) -> Result<Inbound> {
    match recv_or_closed(channel).await? {
        Inbound::Closed(o) => Err(ended(Inbound::Closed(o))),
        m => Ok(m),
    }
}

/// The next message, `channel_closed` included; a failed channel, silence and the end
/// of the channel are errors.
async fn recv_or_closed(channel: &mut Channel) -> Result<Inbound> {
    match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, channel.recv()).await {
        Ok(Some(Inbound::Failed(e))) => Err(e),
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(Error::transfer("the data channel closed during the handshake")),
        Err(_) => Err(Error::new(Kind::Target, "the SSM agent did not answer within 30 s")
            .hint("the agent may be stopped or unable to reach ssmmessages; check the instance (ssmcp doctor TARGET)")),
    }
}

fn ended(m: Inbound) -> Error {
    match m {
        Inbound::Closed(o) if !o.is_empty() => {
            Error::transfer(format!("the session was closed: {o}"))
        }
        Inbound::Failed(e) => e,
        _ => Error::transfer("the session was closed by the service before it started"),
    }
}
