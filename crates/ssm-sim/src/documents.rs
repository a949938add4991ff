//! The AWS-owned session documents the simulator knows, with their parameters and the
//! `properties` the agent receives after substitution (§7.1, §8.1).

use serde_json::{json, Map, Value};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    Port,
    StandardStream,
    InteractiveCommands,
    NonInteractiveCommands,
}

impl SessionType {
    pub fn plugin_name(self) -> &'static str {
        match self {
            SessionType::Port => "Port",
            SessionType::StandardStream => "Standard_Stream",
            SessionType::InteractiveCommands => "InteractiveCommands",
            SessionType::NonInteractiveCommands => "NonInteractiveCommands",
        }
    }

    /// Whether the agent handshakes before starting the plugin (§6.1; no KMS here).
    pub fn requires_handshake(self) -> bool {
        matches!(
            self,
            SessionType::Port | SessionType::NonInteractiveCommands
        )
    }
}

#[derive(Debug, Clone)]
pub struct ResolvedDocument {
    pub name: String,
    pub session_type: SessionType,
    /// The handshake's `Properties` (null for shell and command types).
    pub properties: Value,
    /// For command types: the command line.
    pub command: Option<String>,
    /// NonInteractiveCommands streams stdout (PT 1), stderr (PT 11) and the exit code
    /// (PT 12) live instead of merged output after exit.
    pub separate_output_stream: bool,
}

pub const DEFAULT_SHELL_DOCUMENT: &str = "SSM-SessionManagerRunShell";

#[derive(Debug, PartialEq, Eq)]
pub enum DocumentError {
    NotFound(String),
    InvalidParameters(String),
}

/// Resolve a StartSession request's document and parameters.
pub fn resolve(
    name: Option<&str>,
    params: &HashMap<String, Vec<String>>,
    custom: &[crate::config::CommandDocument],
) -> Result<ResolvedDocument, DocumentError> {
    let name = name.unwrap_or(DEFAULT_SHELL_DOCUMENT);
    let one = |k: &str| params.get(k).and_then(|v| v.first()).cloned();
    if let Some(doc) = custom.iter().find(|d| d.name == name) {
        if let Some(bad) = params.keys().find(|k| k.as_str() != "command") {
            return Err(DocumentError::InvalidParameters(format!(
                "Parameter \"{bad}\" is not defined in document {name}."
            )));
        }
        let command = one("command").ok_or_else(|| {
            DocumentError::InvalidParameters("Required parameter \"command\" is missing.".into())
        })?;
        return Ok(ResolvedDocument {
            name: name.to_string(),
            session_type: SessionType::NonInteractiveCommands,
            properties: Value::Null,
            command: Some(command),
            separate_output_stream: doc.separate_output_stream,
        });
    }
    let allowed: &[&str] = match name {
        "AWS-StartPortForwardingSession" => &["portNumber", "localPortNumber"],
        "AWS-StartPortForwardingSessionToRemoteHost" => &["host", "portNumber", "localPortNumber"],
        "AWS-StartSSHSession" => &["portNumber"],
        "AWS-StartInteractiveCommand" | "AWS-StartNonInteractiveCommand" => &["command"],
        DEFAULT_SHELL_DOCUMENT => &[],
        other => return Err(DocumentError::NotFound(other.to_string())),
    };
    if let Some(bad) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(DocumentError::InvalidParameters(format!(
            "Parameter \"{bad}\" is not defined in document {name}."
        )));
    }
    let port = |default: &str| one("portNumber").unwrap_or_else(|| default.to_string());
    let local = one("localPortNumber").unwrap_or_else(|| "0".into());
    let (session_type, properties, command) = match name {
        "AWS-StartPortForwardingSession" => (
            SessionType::Port,
            json!({"localPortNumber": local, "portNumber": port("80"), "type": "LocalPortForwarding"}),
            None,
        ),
        "AWS-StartPortForwardingSessionToRemoteHost" => {
            let host = one("host").ok_or_else(|| {
                DocumentError::InvalidParameters(
                    "Required parameter \"host\" is missing.".to_string(),
                )
            })?;
            (
                SessionType::Port,
                json!({"host": host, "localPortNumber": local, "portNumber": port("80"), "type": "LocalPortForwarding"}),
                None,
            )
        }
        "AWS-StartSSHSession" => (
            SessionType::Port,
            Value::Object(Map::from_iter([(
                "portNumber".to_string(),
                json!(port("22")),
            )])),
            None,
        ),
        "AWS-StartInteractiveCommand" | "AWS-StartNonInteractiveCommand" => {
            let command = one("command").ok_or_else(|| {
                DocumentError::InvalidParameters(
                    "Required parameter \"command\" is missing.".to_string(),
                )
            })?;
            let t = if name == "AWS-StartInteractiveCommand" {
                SessionType::InteractiveCommands
            } else {
                SessionType::NonInteractiveCommands
            };
            (t, Value::Null, Some(command))
        }
        _ => (SessionType::StandardStream, Value::Null, None),
    };
    Ok(ResolvedDocument {
        name: name.to_string(),
        session_type,
        properties,
        command,
        separate_output_stream: false,
    })
}
