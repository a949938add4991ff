//! The client's half of the handshake (§6): answer the agent's HandshakeRequest and wait
//! for HandshakeComplete before any data is sent (data sent earlier is silently
//! discarded by the agent). Shell-type sessions without KMS skip it: their first message
//! is already output, which is handed back to the caller.

use super::channel::{Channel, Inbound};
use crate::error::{Error, Kind, Result};
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
    let actions = req
        .requested_client_actions
        .iter()
        .map(|a| {
            let (status, error) = match a.action_type.as_str() {
                ACTION_SESSION_TYPE => match req.session_type() {
                    Some(st) if known_type(&st.session_type) => {
                        info.session_type = st.session_type;
                        info.properties = st.properties;
                        (ActionStatus::Success, String::new())
                    }
                    other => {
                        let t = other.map(|s| s.session_type).unwrap_or_default();
                        refused = Some(Error::protocol(format!("the agent asked for an unknown session type '{t}'")));
                        (ActionStatus::Failed, format!("unsupported session type {t}"))
                    }
                },
                ACTION_KMS_ENCRYPTION => {
                    refused = Some(Error::new(
                        Kind::Protocol,
                        "Session Manager preferences in this account require KMS encryption, which ssmcp does not support yet",
                    ).hint("turn off KMS encryption in the Session Manager preferences (Systems Manager console, Session Manager, Preferences); S3 staging, which needs no session encryption, is planned"));
                    (ActionStatus::Failed, "KMS encryption is not supported by this client".into())
                }
                other => (ActionStatus::Unsupported, format!("unsupported action {other}")),
            };
            ProcessedClientAction {
                action_type: a.action_type.clone(),
                action_status: status as i32,
                action_result: serde_json::Value::Null,
                error,
            }
        })
        .collect();
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
        match recv(channel).await? {
            Inbound::Data(PayloadType::HandshakeComplete, payload) => {
                if let Ok(done) = serde_json::from_slice::<HandshakeComplete>(&payload) {
                    info.customer_message = done.customer_message;
                }
                return Ok(Start::Handshaken(info));
            }
            Inbound::Data(pt, _) => {
                tracing::debug!("ignoring {pt:?} before HandshakeComplete");
            }
            other => return Err(ended(other)),
        }
    }
}

fn known_type(t: &str) -> bool {
    matches!(
        t,
        "Port" | "Standard_Stream" | "InteractiveCommands" | "NonInteractiveCommands"
    )
}

async fn recv(channel: &mut Channel) -> Result<Inbound> {
    match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, channel.inbound.recv()).await {
        Ok(Some(Inbound::Closed(o))) => Err(ended(Inbound::Closed(o))),
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
