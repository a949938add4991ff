//! KMS's JSON 1.1 API (`TrentService.*`): the two operations Session Manager encryption
//! calls, over `crate::kms`. Blobs travel as base64, as the SDK sends them.

use super::{ApiError, ApiResult};
use crate::config::Identity;
use crate::state::SimState;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

pub const TARGET_PREFIX: &str = "TrentService.";

pub fn dispatch(state: &SimState, caller: &Identity, op: &str, input: &Value) -> ApiResult {
    match op {
        "GenerateDataKey" => generate_data_key(state, caller, input),
        "Decrypt" => decrypt(state, caller, input),
        other => Err(ApiError::new(
            "UnknownOperationException",
            format!("The simulator's KMS does not implement {other}."),
        )),
    }
}

fn generate_data_key(state: &SimState, caller: &Identity, input: &Value) -> ApiResult {
    let key_id = input["KeyId"]
        .as_str()
        .ok_or_else(|| ApiError::validation("KeyId is required."))?;
    let bytes = match (&input["NumberOfBytes"], input["KeySpec"].as_str()) {
        (Value::Number(n), None) => n.as_u64().unwrap_or(0) as usize,
        (Value::Null, Some("AES_256")) => 32,
        (Value::Null, Some("AES_128")) => 16,
        _ => {
            return Err(ApiError::validation(
                "Exactly one of NumberOfBytes and KeySpec (AES_128, AES_256) is required.",
            ))
        }
    };
    let context = encryption_context(input)?;
    let dry_run = input["DryRun"].as_bool().unwrap_or(false);
    let (plain, blob, arn) = state
        .kms()
        .generate_data_key(caller, key_id, bytes, &context, dry_run)
        .map_err(|e| ApiError::new(e.code, e.message))?;
    Ok(json!({
        "KeyId": arn,
        "Plaintext": STANDARD.encode(plain),
        "CiphertextBlob": STANDARD.encode(blob),
    }))
}

fn decrypt(state: &SimState, caller: &Identity, input: &Value) -> ApiResult {
    let blob = input["CiphertextBlob"]
        .as_str()
        .and_then(|b| STANDARD.decode(b).ok())
        .ok_or_else(|| ApiError::validation("CiphertextBlob is required."))?;
    let context = encryption_context(input)?;
    let (plain, arn) = state
        .kms()
        .decrypt_as_caller(caller, &blob, &context)
        .map_err(|e| ApiError::new(e.code, e.message))?;
    Ok(json!({"KeyId": arn, "Plaintext": STANDARD.encode(plain)}))
}

fn encryption_context(input: &Value) -> Result<crate::kms::Context, ApiError> {
    match &input["EncryptionContext"] {
        Value::Null => Ok(Vec::new()),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|v| (k.clone(), v.to_string()))
                    .ok_or_else(|| {
                        ApiError::validation("EncryptionContext values must be strings.")
                    })
            })
            .collect(),
        _ => Err(ApiError::validation("EncryptionContext must be a map.")),
    }
}
