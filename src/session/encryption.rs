//! KMS-encrypted sessions, the client's half (§6.4): ask KMS for the session's data key,
//! and seal and open data payloads with it once the handshake has set it. The cipher
//! itself (key split, AES-256-GCM framing) is `ssm_proto::kms`; this module adds the KMS
//! call, its errors in the user's terms, and the state the channel's halves share.

use crate::aws::error as aws_error;
use crate::error::{Error, Kind, Result};
use ssm_proto::kms::{
    is_sealed, Sealer, SessionKeys, Side, CONTEXT_SESSION_ID, CONTEXT_TARGET_ID, DATA_KEY_LEN,
};
use ssm_proto::PayloadType;
use std::sync::{Arc, OnceLock};

/// The session's keys once the handshake set them, shared by every clone of the sending
/// half and by the receiving half: unset, payloads pass as they are.
#[derive(Clone, Default)]
pub(crate) struct Encryption(Arc<OnceLock<Sealer>>);

impl Encryption {
    pub(crate) fn start(&self, keys: SessionKeys) -> Result<()> {
        self.0
            .set(Sealer::new(keys, rand::random()))
            .map_err(|_| Error::protocol("the agent asked for KMS encryption twice"))
    }

    /// What goes on the wire for a payload we send.
    pub(crate) fn outgoing(&self, payload_type: PayloadType, payload: Vec<u8>) -> Vec<u8> {
        match self.0.get() {
            Some(k) if is_sealed(payload_type, Side::Client) => k.seal(&payload),
            _ => payload,
        }
    }

    /// What the agent meant by a payload it sent: opened when the type travels sealed.
    pub(crate) fn incoming(&self, payload_type: PayloadType, payload: Vec<u8>) -> Result<Vec<u8>> {
        match self.0.get() {
            Some(k) if is_sealed(payload_type, Side::Agent) => open(k, &payload),
            _ => Ok(payload),
        }
    }

    /// The encryption challenge: open the agent's bytes and seal them with our key.
    pub(crate) fn answer_challenge(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        let k = self.0.get().ok_or_else(|| {
            Error::protocol("the agent sent an encryption challenge without KMS encryption")
        })?;
        let plain = open(k, sealed)?;
        Ok(k.seal(&plain))
    }
}

/// A sealed payload's plaintext, or the error that stops the session.
fn open(k: &Sealer, sealed: &[u8]) -> Result<Vec<u8>> {
    k.open(sealed).map_err(|e| {
        Error::transfer(format!("a message from the instance failed its integrity check ({e}); the session was stopped and nothing more from it is used"))
            .hint("something between ssmcp and the instance altered the encrypted stream; retry, and if it repeats, check for a proxy that rewrites websocket traffic")
    })
}

/// What the handshake needs to ask KMS for a session's data key: the client, and the
/// encryption context the agent will use to decrypt it.
#[derive(Clone, Debug)]
pub(crate) struct KeyRequest {
    pub kms: aws_sdk_kms::Client,
    pub session_id: String,
    pub target: String,
}

/// A fresh data key: the plaintext for our cipher, the blob for the agent.
pub(crate) struct DataKey {
    pub plaintext: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl KeyRequest {
    pub(crate) async fn data_key(&self, key_id: &str) -> Result<DataKey> {
        let out = self
            .kms
            .generate_data_key()
            .key_id(key_id)
            .number_of_bytes(DATA_KEY_LEN as i32)
            .encryption_context(CONTEXT_SESSION_ID, &self.session_id)
            .encryption_context(CONTEXT_TARGET_ID, &self.target)
            .send()
            .await
            .map_err(|e| kms_error(key_id, e))?;
        let (Some(plain), Some(blob)) = (out.plaintext(), out.ciphertext_blob()) else {
            return Err(Error::protocol("KMS GenerateDataKey returned no key"));
        };
        Ok(DataKey {
            plaintext: plain.as_ref().to_vec(),
            ciphertext: blob.as_ref().to_vec(),
        })
    }
}

/// KMS's refusals, each with what to change. The key is named as the agent named it.
fn kms_error<E, R>(key_id: &str, err: aws_sdk_kms::error::SdkError<E, R>) -> Error
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (code, message) = match &err {
        aws_sdk_kms::error::SdkError::ServiceError(se) => (
            se.err().code().unwrap_or_default().to_string(),
            se.err().message().unwrap_or_default().to_string(),
        ),
        _ => return aws_error::from_sdk("KMS GenerateDataKey", err),
    };
    let preferences = "the key is set in Session Manager preferences (Systems Manager console, Session Manager, Preferences, KMS encryption) or in the session document's kmsKeyId";
    match code.as_str() {
        "AccessDeniedException" => Error::new(
            Kind::Auth,
            format!("KMS refused to make this session's encryption key with {key_id}: {message}"),
        )
        .hint("this account's sessions must be KMS-encrypted: allow kms:GenerateDataKey on that key to the identity named above, in its IAM policy and in the key policy (docs/policies/kms-session-caller.json; docs/iam.md, \"KMS-encrypted sessions\")"),
        "DisabledException" | "KMSInvalidStateException" => Error::new(
            Kind::Target,
            format!("the KMS key {key_id} that this account's sessions must be encrypted with cannot be used: {message}"),
        )
        .hint(format!("enable the key (or cancel its deletion) in KMS, or choose an enabled key; {preferences}")),
        "NotFoundException" => Error::new(
            Kind::Target,
            format!("the KMS key {key_id} that this account's sessions must be encrypted with was not found in this region: {message}"),
        )
        .hint(format!("KMS keys are regional: name a key in the instance's region; {preferences}")),
        _ => aws_error::from_code("KMS GenerateDataKey", &code, &message),
    }
}

/// The cipher for a data key from KMS, on our side of the session.
pub(crate) fn client_keys(data_key: &DataKey) -> Result<SessionKeys> {
    SessionKeys::new(&data_key.plaintext, Side::Client)
        .map_err(|e| Error::protocol(format!("KMS returned an unusable data key: {e}")))
}
