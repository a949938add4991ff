//! Run Command: send a shell script to instances (by id or by tag) under the service's
//! own rate control, follow it until it is over, and collect each instance's result.
//! The S3 transport runs the receiver this way; `doctor` runs its S3 probe this way.
//! What an instance's output means is the caller's business.

use crate::aws::error::from_sdk;
use crate::error::{Error, Result};
use aws_sdk_ssm::types::{CommandInvocationStatus, CommandStatus, Target as RunTarget};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long cleanup after ^C waits for SendCommand to answer, and for a cancelled
/// command to end.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Where a command goes, in the terms Run Command takes.
pub(crate) enum Targets {
    /// Instance ids (at most 50); `label` says how they were chosen.
    Instances { ids: Vec<String>, label: String },
    /// Every instance with this tag, found by Run Command itself.
    Tag { key: String, value: String },
}

impl Targets {
    pub(crate) fn one(id: &str) -> Targets {
        Targets::Instances {
            ids: vec![id.to_string()],
            label: id.to_string(),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Targets::Instances { label, .. } => label.clone(),
            Targets::Tag { key, value } => format!("the instances tagged {key}={value}"),
        }
    }
}

/// One `AWS-RunShellScript` command.
pub(crate) struct Script<'a> {
    pub targets: &'a Targets,
    pub comment: &'a str,
    pub script: String,
    /// Run Command's rate control (`N` or `P%`); the service's defaults when `None`.
    pub max_concurrency: Option<&'a str>,
    pub max_errors: Option<&'a str>,
}

/// How one instance's invocation ended.
pub(crate) struct Invocation {
    pub instance: String,
    pub status: CommandInvocationStatus,
    /// StatusDetails, e.g. `Undeliverable`.
    pub details: String,
    pub response_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The command under way, where cleanup after an interrupt finds it even while
/// SendCommand is still in flight: the call runs as its own task, which notes the id
/// whether or not the copy that sent it is still waiting.
#[derive(Default)]
pub(crate) struct InFlight {
    id: Arc<Mutex<Option<String>>>,
    sending: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl InFlight {
    /// Send `script`; its command id.
    pub(crate) async fn send(
        &self,
        ssm: &aws_sdk_ssm::Client,
        script: &Script<'_>,
    ) -> Result<String> {
        let mut req = ssm
            .send_command()
            .document_name("AWS-RunShellScript")
            .comment(script.comment)
            .parameters("commands", vec![script.script.clone()])
            .set_max_concurrency(script.max_concurrency.map(str::to_string))
            .set_max_errors(script.max_errors.map(str::to_string));
        req = match script.targets {
            Targets::Instances { ids, .. } => req.set_instance_ids(Some(ids.clone())),
            Targets::Tag { key, value } => req.targets(
                RunTarget::builder()
                    .key(format!("tag:{key}"))
                    .values(value)
                    .build(),
            ),
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        let slot = self.id.clone();
        let task = tokio::spawn(async move {
            let sent = req
                .send()
                .await
                .map_err(|e| from_sdk("SendCommand", e))
                .and_then(|out| {
                    out.command()
                        .and_then(|c| c.command_id())
                        .map(str::to_string)
                        .ok_or_else(|| Error::protocol("SendCommand returned no command id"))
                });
            if let Ok(id) = &sent {
                *lock(&slot) = Some(id.clone());
            }
            let _ = answer.send(sent);
        });
        *lock(&self.sending) = Some(task);
        answered
            .await
            .map_err(|_| Error::protocol("the SendCommand call was abandoned"))?
    }

    /// Cancel the command under way, if any, and wait (bounded) until it is over: an
    /// instance still working would otherwise act on what the caller removes next.
    /// True when the command had succeeded everywhere before the cancel could stop it
    /// (the caller's poll had not seen that yet): its work is done, not undone.
    pub(crate) async fn cancel(&self, ssm: &aws_sdk_ssm::Client) -> bool {
        let sending = lock(&self.sending).take();
        if let Some(task) = sending {
            let _ = tokio::time::timeout(CANCEL_WAIT, task).await;
        }
        let Some(id) = lock(&self.id).take() else {
            return false;
        };
        let _ = ssm.cancel_command().command_id(&id).send().await;
        let over = async {
            loop {
                match command_status(ssm, &id).await {
                    Ok(Some(s)) if !still_running(&s) => return s == CommandStatus::Success,
                    Ok(_) => {}
                    Err(_) => return false,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        match tokio::time::timeout(CANCEL_WAIT, over).await {
            Ok(succeeded) => succeeded,
            Err(_) => {
                tracing::debug!("command {id} still running after it was cancelled");
                false
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Poll until the command is over, handing each instance's invocation to `finished`
/// as it ends; every invocation, ordered by instance id.
pub(crate) async fn wait(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
    mut finished: impl FnMut(&Invocation),
) -> Result<Vec<Invocation>> {
    let mut over_ones: BTreeMap<String, Invocation> = BTreeMap::new();
    let mut pause = Duration::from_millis(200);
    loop {
        let over = command_over(ssm, command_id).await?;
        for (instance, status) in invocations(ssm, command_id).await? {
            if over_ones.contains_key(&instance) || !invocation_over(&status) {
                continue;
            }
            let inv = invocation(ssm, command_id, &instance, status).await?;
            finished(&inv);
            over_ones.insert(instance, inv);
        }
        if over {
            return Ok(over_ones.into_values().collect());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(Duration::from_secs(3));
    }
}

/// Poll one instance's invocation until it is over. Needs only GetCommandInvocation,
/// which is all `doctor`'s probe asks users to grant (docs/policies/doctor-s3-probe.json).
pub(crate) async fn wait_one(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
    instance: &str,
) -> Result<Invocation> {
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let asked = ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance)
            .send()
            .await;
        let inv = match asked {
            Ok(i) => i,
            // Right after SendCommand the invocation may not exist yet.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_invocation_does_not_exist()) =>
            {
                continue
            }
            Err(e) => return Err(from_sdk("GetCommandInvocation", e)),
        };
        match inv.status() {
            Some(status) if invocation_over(status) => {
                return Ok(Invocation::of(instance, status.clone(), &inv))
            }
            _ => {}
        }
    }
}

async fn command_over(ssm: &aws_sdk_ssm::Client, command_id: &str) -> Result<bool> {
    Ok(command_status(ssm, command_id)
        .await?
        .is_some_and(|s| !still_running(&s)))
}

async fn command_status(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
) -> Result<Option<CommandStatus>> {
    let out = ssm
        .list_commands()
        .command_id(command_id)
        .send()
        .await
        .map_err(|e| from_sdk("ListCommands", e))?;
    Ok(out.commands().first().and_then(|c| c.status().cloned()))
}

fn still_running(status: &CommandStatus) -> bool {
    matches!(
        status,
        CommandStatus::Pending | CommandStatus::InProgress | CommandStatus::Cancelling
    )
}

async fn invocations(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
) -> Result<Vec<(String, CommandInvocationStatus)>> {
    let mut out = Vec::new();
    let mut pages = ssm
        .list_command_invocations()
        .command_id(command_id)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| from_sdk("ListCommandInvocations", e))?;
        for inv in page.command_invocations() {
            if let (Some(id), Some(status)) = (inv.instance_id(), inv.status()) {
                out.push((id.to_string(), status.clone()));
            }
        }
    }
    Ok(out)
}

fn invocation_over(status: &CommandInvocationStatus) -> bool {
    !matches!(
        status,
        CommandInvocationStatus::Pending
            | CommandInvocationStatus::InProgress
            | CommandInvocationStatus::Delayed
            | CommandInvocationStatus::Cancelling
    )
}

async fn invocation(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
    instance: &str,
    status: CommandInvocationStatus,
) -> Result<Invocation> {
    let inv = ssm
        .get_command_invocation()
        .command_id(command_id)
        .instance_id(instance)
        .send()
        .await
        .map_err(|e| from_sdk("GetCommandInvocation", e))?;
    Ok(Invocation::of(instance, status, &inv))
}

impl Invocation {
    fn of(
        instance: &str,
        status: CommandInvocationStatus,
        inv: &aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput,
    ) -> Invocation {
        Invocation {
            instance: instance.to_string(),
            status,
            details: inv.status_details().unwrap_or_default().to_string(),
            response_code: inv.response_code(),
            stdout: inv
                .standard_output_content()
                .unwrap_or_default()
                .to_string(),
            stderr: inv.standard_error_content().unwrap_or_default().to_string(),
        }
    }
}
