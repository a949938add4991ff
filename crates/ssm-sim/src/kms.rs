//! The account's KMS keys, as much of KMS as Session Manager encryption uses:
//! GenerateDataKey for the client, Decrypt for the agent (§6.4). A ciphertext blob is
//! sealed under a secret of this simulator with the encryption context as associated
//! data, so a blob opens only with the same context and key, as in KMS; it says which key
//! made it, so Decrypt needs no KeyId. Authorization goes through the same policy
//! evaluation as every other action: the caller's policies for GenerateDataKey, the
//! instance role's for the agent's Decrypt.

use crate::config::{Identity, KmsKey, SimConfig, ACCOUNT_ID};
use crate::iam::{self, Resource};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};

const BLOB_MAGIC: &[u8] = b"SIMKMS1";
const KEY_ID_LEN: usize = 36;
const NONCE_LEN: usize = 12;

/// A KMS error in AWS's words: the `__type` and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsError {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> KmsError {
    KmsError {
        code,
        message: message.into(),
    }
}

pub type Context = Vec<(String, String)>;

/// The simulator's KMS: its keys and the secret their material derives from.
pub struct Kms<'a> {
    pub config: &'a SimConfig,
    pub secret: &'a [u8; 32],
}

impl Kms<'_> {
    pub fn key_arn(&self, key: &KmsKey) -> String {
        let region = key.region.as_deref().unwrap_or(&self.config.region);
        format!("arn:aws:kms:{region}:{ACCOUNT_ID}:key/{}", key.id)
    }

    /// Find a key by id, key ARN, `alias/NAME` or alias ARN, in this region only.
    pub fn resolve(&self, key_id: &str) -> Result<&KmsKey, KmsError> {
        let region = &self.config.region;
        let here = |k: &&KmsKey| k.region.as_deref().is_none_or(|r| r == region);
        let (arn_region, name) = match key_id.strip_prefix("arn:aws:kms:") {
            Some(rest) => {
                let mut parts = rest.splitn(3, ':');
                let r = parts.next().unwrap_or_default();
                let _account = parts.next();
                (
                    Some(r.to_string()),
                    parts.next().unwrap_or_default().to_string(),
                )
            }
            None => (None, key_id.to_string()),
        };
        if let Some(r) = &arn_region {
            if r != region {
                return Err(err("NotFoundException", format!("Invalid arn {r}")));
            }
        }
        let found = match name.strip_prefix("alias/") {
            Some(alias) => self
                .config
                .kms_keys
                .iter()
                .filter(here)
                .find(|k| k.aliases.iter().any(|a| a == alias)),
            None => {
                let id = name.strip_prefix("key/").unwrap_or(&name);
                self.config
                    .kms_keys
                    .iter()
                    .filter(here)
                    .find(|k| k.id == id)
            }
        };
        found.ok_or_else(|| {
            if name.starts_with("alias/") {
                err(
                    "NotFoundException",
                    format!("Alias arn:aws:kms:{region}:{ACCOUNT_ID}:{name} is not found."),
                )
            } else {
                err(
                    "NotFoundException",
                    format!("Key 'arn:aws:kms:{region}:{ACCOUNT_ID}:key/{name}' does not exist"),
                )
            }
        })
    }

    fn usable(&self, key: &KmsKey) -> Result<(), KmsError> {
        if key.enabled {
            Ok(())
        } else {
            Err(err(
                "DisabledException",
                format!("{} is disabled.", self.key_arn(key)),
            ))
        }
    }

    /// GenerateDataKey as `caller`: (plaintext, ciphertext blob, key ARN). `dry_run`
    /// checks everything and then answers DryRunOperationException, as KMS does.
    pub fn generate_data_key(
        &self,
        caller: &Identity,
        key_id: &str,
        bytes: usize,
        context: &Context,
        dry_run: bool,
    ) -> Result<(Vec<u8>, Vec<u8>, String), KmsError> {
        if !(1..=1024).contains(&bytes) {
            return Err(err(
                "ValidationException",
                "NumberOfBytes must be between 1 and 1024.",
            ));
        }
        let key = self.resolve(key_id)?;
        let arn = self.key_arn(key);
        let extra = context_keys(context);
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        iam::authorize(
            self.config,
            caller,
            "kms:GenerateDataKey",
            &[Resource::new(arn.clone(), key.id.clone())],
            &extra,
        )
        .map_err(|d| err("AccessDeniedException", d.message))?;
        self.usable(key)?;
        if dry_run {
            return Err(err(
                "DryRunOperationException",
                "The request would have succeeded, but the DryRun option is set.",
            ));
        }
        let plaintext: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
        let blob = self.seal_blob(key, &plaintext, context);
        Ok((plaintext, blob, arn))
    }

    /// Decrypt as the instance `instance_id`'s role (the agent's call), checked against
    /// the instance role's policies.
    pub fn decrypt_as_instance(
        &self,
        instance_id: &str,
        blob: &[u8],
        context: &Context,
    ) -> Result<Vec<u8>, KmsError> {
        let role = format!("arn:aws:sts::{ACCOUNT_ID}:assumed-role/SSMInstanceRole/{instance_id}");
        self.decrypt(blob, context, |arn| {
            let mut cx = crate::policy::Context::default()
                .with("aws:PrincipalArn", &format!("arn:aws:iam::{ACCOUNT_ID}:role/SSMInstanceRole"))
                .with("aws:userid", &format!("AROASSMSIMINSTANCE01:{instance_id}"));
            for (k, v) in context_keys(context) {
                cx.set(&k, &v);
            }
            let policies = &self.config.instance_policies;
            if policies.is_empty()
                || crate::policy::decide(policies, "kms:Decrypt", arn, &cx) == crate::policy::Decision::Allow
            {
                return Ok(());
            }
            Err(err(
                "AccessDeniedException",
                format!("User: {role} is not authorized to perform: kms:Decrypt on resource: {arn} because no identity-based policy allows the kms:Decrypt action"),
            ))
        })
    }

    /// Decrypt as an API caller, checked against the callers' policies.
    pub fn decrypt_as_caller(
        &self,
        caller: &Identity,
        blob: &[u8],
        context: &Context,
    ) -> Result<(Vec<u8>, String), KmsError> {
        let mut arn_out = String::new();
        let plain = self.decrypt(blob, context, |arn| {
            arn_out = arn.to_string();
            let extra = context_keys(context);
            let extra: Vec<(&str, &str)> = extra
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let id = arn.rsplit('/').next().unwrap_or_default();
            iam::authorize(
                self.config,
                caller,
                "kms:Decrypt",
                &[Resource::new(arn, id)],
                &extra,
            )
            .map_err(|d| err("AccessDeniedException", d.message))
        })?;
        Ok((plain, arn_out))
    }

    fn decrypt(
        &self,
        blob: &[u8],
        context: &Context,
        allowed: impl FnOnce(&str) -> Result<(), KmsError>,
    ) -> Result<Vec<u8>, KmsError> {
        let invalid = || err("InvalidCiphertextException", "");
        let rest = blob.strip_prefix(BLOB_MAGIC).ok_or_else(invalid)?;
        if rest.len() < KEY_ID_LEN + NONCE_LEN {
            return Err(invalid());
        }
        let (id, rest) = rest.split_at(KEY_ID_LEN);
        let id = std::str::from_utf8(id).map_err(|_| invalid())?;
        let key = self.resolve(id)?;
        allowed(&self.key_arn(key))?;
        self.usable(key)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| invalid())?;
        let mut body = sealed.to_vec();
        let plain = self
            .material(key)
            .open_in_place(nonce, Aad::from(canonical(context)), &mut body)
            .map_err(|_| invalid())?;
        Ok(plain.to_vec())
    }

    fn material(&self, key: &KmsKey) -> LessSafeKey {
        let bytes = Sha256::new()
            .chain_update(self.secret)
            .chain_update(key.id.as_bytes())
            .finalize();
        // A 32-byte key always makes an AES-256 key.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).unwrap_or_else(|_| unreachable!()))
    }

    fn seal_blob(&self, key: &KmsKey, plaintext: &[u8], context: &Context) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut body = plaintext.to_vec();
        let _ = self.material(key).seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(canonical(context)),
            &mut body,
        );
        let mut blob = BLOB_MAGIC.to_vec();
        blob.extend_from_slice(key.id.as_bytes());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&body);
        blob
    }
}

/// The context as condition keys: `kms:EncryptionContext:KEY`.
fn context_keys(context: &Context) -> Vec<(String, String)> {
    context
        .iter()
        .map(|(k, v)| (format!("kms:EncryptionContext:{k}"), v.clone()))
        .collect()
}

/// Order-independent bytes of an encryption context.
fn canonical(context: &Context) -> Vec<u8> {
    let mut pairs: Vec<_> = context.iter().collect();
    pairs.sort();
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(format!("{}:{k}{}:{v}", k.len(), v.len()).as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(session: &str) -> Context {
        vec![
            ("aws:ssm:SessionId".into(), session.into()),
            ("aws:ssm:TargetId".into(), "i-1".into()),
        ]
    }

    #[test]
    fn a_blob_opens_only_with_its_context_and_an_enabled_key() {
        let mut config = SimConfig::default().with_kms_sessions("ssm");
        let secret = [9u8; 32];
        let kms = Kms {
            config: &config,
            secret: &secret,
        };
        let caller = config.identity.clone();
        let (plain, blob, arn) = kms
            .generate_data_key(&caller, "alias/ssm", 64, &cx("s-1"), false)
            .unwrap();
        assert_eq!(plain.len(), 64);
        assert!(arn.starts_with("arn:aws:kms:us-east-1:123456789012:key/"));
        assert_eq!(
            kms.decrypt_as_instance("i-1", &blob, &cx("s-1")).unwrap(),
            plain
        );
        let wrong = kms
            .decrypt_as_instance("i-1", &blob, &cx("s-2"))
            .unwrap_err();
        assert_eq!(wrong.code, "InvalidCiphertextException");
        let mut flipped = blob.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(kms
            .decrypt_as_instance("i-1", &flipped, &cx("s-1"))
            .is_err());
        // By key id and ARN too; a dry run answers as KMS does.
        let id = config.kms_keys[0].id.clone();
        assert!(kms
            .generate_data_key(&caller, &id, 64, &cx("s"), false)
            .is_ok());
        assert!(kms
            .generate_data_key(&caller, &arn, 64, &cx("s"), false)
            .is_ok());
        let dry = kms
            .generate_data_key(&caller, &arn, 64, &cx("s"), true)
            .unwrap_err();
        assert_eq!(dry.code, "DryRunOperationException");
        config.kms_keys[0].enabled = false;
        let kms = Kms {
            config: &config,
            secret: &secret,
        };
        let off = kms
            .decrypt_as_instance("i-1", &blob, &cx("s-1"))
            .unwrap_err();
        assert_eq!(off.code, "DisabledException");
    }

    #[test]
    fn unknown_and_foreign_keys_are_not_found() {
        let mut config = SimConfig::default();
        config
            .kms_keys
            .push(KmsKey::new("far").in_region("eu-west-1"));
        let secret = [0u8; 32];
        let kms = Kms {
            config: &config,
            secret: &secret,
        };
        let caller = config.identity.clone();
        for key in [
            "alias/nothing",
            "alias/far",
            "arn:aws:kms:eu-west-1:123456789012:alias/far",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
        ] {
            let e = kms
                .generate_data_key(&caller, key, 64, &cx("s"), false)
                .unwrap_err();
            assert_eq!(e.code, "NotFoundException", "{key}");
        }
    }
}
