//! KMS session encryption (§6.4): the handshake's JSON, how the 64-byte data key is
//! split between the two directions, which payloads are sealed, and the AES-256-GCM
//! framing (`nonce ‖ ciphertext ‖ tag`, no associated data). Pure: the nonces come from
//! the caller, so the fixed vectors in tests/kms_vectors.rs (computed with Python's
//! `cryptography`, an independent implementation) pin every byte.

use crate::PayloadType;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Bytes of plaintext data key the client asks KMS for: two AES-256 keys.
pub const DATA_KEY_LEN: usize = 64;
pub const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// What sealing adds to a payload.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The encryption context both sides give KMS (plugin `ProcessKMSEncryptionHandshakeAction`,
/// agent `UpdateEncryptionKey`).
pub const CONTEXT_SESSION_ID: &str = "aws:ssm:SessionId";
pub const CONTEXT_TARGET_ID: &str = "aws:ssm:TargetId";

/// Which end of the session a key set belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Agent,
}

/// Whether a message of `payload_type` sent by `from` travels sealed: the client seals
/// only Output; the agent seals Output, StdErr and ExitCode. Handshake, challenge, Size
/// and Flag payloads stay plain (plugin `SendInputDataMessage`, agent
/// `SendStreamDataMessage`).
pub fn is_sealed(payload_type: PayloadType, from: Side) -> bool {
    match from {
        Side::Client => payload_type == PayloadType::Output,
        Side::Agent => matches!(
            payload_type,
            PayloadType::Output | PayloadType::StdErr | PayloadType::ExitCode
        ),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the data key is {0} bytes, not 64")]
    KeyLength(usize),
    #[error("a sealed payload of {0} bytes is shorter than its nonce and tag")]
    TooShort(usize),
    #[error("a sealed payload failed authentication (altered, or sealed with another key)")]
    Authentication,
}

/// One side's two keys: the first half of the data key seals agent → client, the second
/// half client → agent.
pub struct SessionKeys {
    seal: LessSafeKey,
    open: LessSafeKey,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)") // never the key material
    }
}

impl SessionKeys {
    pub fn new(data_key: &[u8], side: Side) -> Result<SessionKeys, CryptoError> {
        if data_key.len() != DATA_KEY_LEN {
            return Err(CryptoError::KeyLength(data_key.len()));
        }
        let (agent_to_client, client_to_agent) = data_key.split_at(DATA_KEY_LEN / 2);
        let (seal, open) = match side {
            Side::Client => (client_to_agent, agent_to_client),
            Side::Agent => (agent_to_client, client_to_agent),
        };
        Ok(SessionKeys {
            seal: aes_key(seal)?,
            open: aes_key(open)?,
        })
    }

    /// `nonce ‖ AES-256-GCM(plaintext) ‖ tag`. A nonce must never repeat under one
    /// session's keys; see [`Nonces`].
    pub fn seal(&self, nonce: [u8; NONCE_LEN], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(NONCE_LEN);
        // Sealing with a valid key and a buffer it may grow cannot fail; an empty result
        // would be refused by the other side's authentication, never accepted.
        if self
            .seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .is_err()
        {
            return Vec::new();
        }
        out.extend_from_slice(&body);
        out
    }

    /// The plaintext of a sealed payload from the other side.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < OVERHEAD {
            return Err(CryptoError::TooShort(sealed.len()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Authentication)?;
        let mut body = body.to_vec();
        let plain = self
            .open
            .open_in_place(nonce, Aad::empty(), &mut body)
            .map_err(|_| CryptoError::Authentication)?;
        let n = plain.len();
        body.truncate(n);
        Ok(body)
    }
}

fn aes_key(bytes: &[u8]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::KeyLength(bytes.len() * 2))
}

/// Nonces as the agent makes them (agent/session/crypto/nonce.go): a random 96-bit start,
/// incremented per message, so none repeats within a session.
#[derive(Debug, Clone)]
pub struct Nonces {
    next: u128,
}

const NONCE_SPACE: u128 = 1 << 96;

impl Nonces {
    pub fn starting_at(start: [u8; NONCE_LEN]) -> Nonces {
        let mut wide = [0u8; 16];
        wide[4..].copy_from_slice(&start);
        Nonces {
            next: u128::from_be_bytes(wide),
        }
    }

    pub fn next_nonce(&mut self) -> [u8; NONCE_LEN] {
        let wide = self.next.to_be_bytes();
        self.next = (self.next + 1) % NONCE_SPACE;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&wide[4..]);
        nonce
    }
}

/// One side's keys with their nonce counter: what each end of an encrypted session
/// keeps. Shared by the threads that send, so the counter sits behind a lock.
pub struct Sealer {
    pub keys: SessionKeys,
    nonces: std::sync::Mutex<Nonces>,
}

impl Sealer {
    /// `start`: the first nonce (the caller picks it at random).
    pub fn new(keys: SessionKeys, start: [u8; NONCE_LEN]) -> Sealer {
        Sealer {
            keys,
            nonces: std::sync::Mutex::new(Nonces::starting_at(start)),
        }
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = self
            .nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_nonce();
        self.keys.seal(nonce, plaintext)
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.keys.open(sealed)
    }
}

/// ActionParameters of the `KMSEncryption` handshake action. `Challenge` is sent by newer
/// agents for an optional acknowledgement this client does not make (docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KmsEncryptionRequest {
    #[serde(rename = "KMSKeyId")]
    pub kms_key_id: String,
    #[serde(rename = "Challenge", default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
}

/// ActionResult of a successful `KMSEncryption` action: the data key as KMS encrypted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KmsEncryptionResponse {
    #[serde(rename = "KMSCipherTextKey", with = "base64_bytes")]
    pub cipher_text_key: Vec<u8>,
    /// Always null from the plugin; kept for the agent's shape.
    #[serde(rename = "KMSCipherTextHash", default)]
    pub cipher_text_hash: Option<String>,
}

/// EncChallengeRequest and EncChallengeResponse (PayloadTypes 8 and 9): a sealed blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncryptionChallenge {
    #[serde(rename = "Challenge", with = "base64_bytes")]
    pub challenge: Vec<u8>,
}

impl EncryptionChallenge {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Go marshals `[]byte` as standard base64.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = Option::<String>::deserialize(d)?.unwrap_or_default();
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Standard base64, as Go's JSON writes `[]byte`.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Vec<u8> {
        (0u8..64).collect()
    }

    #[test]
    fn each_side_opens_what_the_other_sealed_and_not_its_own() {
        let client = SessionKeys::new(&key(), Side::Client).unwrap();
        let agent = SessionKeys::new(&key(), Side::Agent).unwrap();
        let up = client.seal([1; 12], b"to the agent");
        assert_eq!(up.len(), 12 + OVERHEAD);
        assert_eq!(agent.open(&up).unwrap(), b"to the agent");
        assert_eq!(client.open(&up), Err(CryptoError::Authentication));
        let down = agent.seal([2; 12], b"");
        assert_eq!(client.open(&down).unwrap(), b"");
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let client = SessionKeys::new(&key(), Side::Client).unwrap();
        let agent = SessionKeys::new(&key(), Side::Agent).unwrap();
        let sealed = agent.seal([7; 12], b"payload");
        for bit in 0..sealed.len() * 8 {
            let mut t = sealed.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                client.open(&t),
                Err(CryptoError::Authentication),
                "bit {bit}"
            );
        }
        assert_eq!(client.open(&sealed[..27]), Err(CryptoError::TooShort(27)));
    }

    #[test]
    fn keys_must_be_64_bytes() {
        assert_eq!(
            SessionKeys::new(&[0; 32], Side::Client).err(),
            Some(CryptoError::KeyLength(32))
        );
    }

    #[test]
    fn nonces_count_up_and_wrap_within_96_bits() {
        let mut n = Nonces::starting_at([0xff; 12]);
        assert_eq!(n.next_nonce(), [0xff; 12]);
        assert_eq!(n.next_nonce(), [0; 12]);
        let mut m = Nonces::starting_at([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe]);
        m.next_nonce();
        assert_eq!(m.next_nonce()[11], 0xff);
    }

    #[test]
    fn only_data_payloads_are_sealed() {
        assert!(is_sealed(PayloadType::Output, Side::Client));
        assert!(!is_sealed(PayloadType::Size, Side::Client));
        assert!(!is_sealed(PayloadType::EncChallengeResponse, Side::Client));
        assert!(is_sealed(PayloadType::StdErr, Side::Agent));
        assert!(is_sealed(PayloadType::ExitCode, Side::Agent));
        assert!(!is_sealed(PayloadType::HandshakeComplete, Side::Agent));
        assert!(!is_sealed(PayloadType::Flag, Side::Agent));
    }

    #[test]
    fn handshake_json_has_the_agents_shape() {
        let r = KmsEncryptionResponse {
            cipher_text_key: vec![1, 2, 3],
            cipher_text_hash: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"KMSCipherTextKey":"AQID","KMSCipherTextHash":null}"#
        );
        let q: KmsEncryptionRequest =
            serde_json::from_str(r#"{"KMSKeyId":"alias/ssm","Challenge":"YWJj"}"#).unwrap();
        assert_eq!(q.kms_key_id, "alias/ssm");
        let c: EncryptionChallenge = serde_json::from_str(r#"{"Challenge":"AQID"}"#).unwrap();
        assert_eq!(c.challenge, [1, 2, 3]);
        assert_eq!(c.to_json(), br#"{"Challenge":"AQID"}"#);
    }
}
