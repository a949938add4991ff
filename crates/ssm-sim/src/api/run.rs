//! Run Command: SendCommand, GetCommandInvocation, ListCommandInvocations and
//! CancelCommand for `AWS-RunShellScript`, whose commands run for real with `sh` in each
//! simulated instance's home (its PATH and file size limit included). Rate control as
//! the service documents it: at most MaxConcurrency targets at once; once more than
//! MaxErrors invocations failed, no new targets are started and the rest are Cancelled
//! (the user guide does not name the status of never-started invocations; we chose the
//! one a client must already handle, see docs/simulator.md). Output is truncated to
//! 24,000 characters of stdout and 8,000 of stderr, as GetCommandInvocation does.

use super::ssm::instance_arn;
use super::{authorize, ApiError, ApiResult};
use crate::agent::shell::{instance_path, ProcessEnv};
use crate::config::{Identity, InstanceConfig};
use crate::iam::Resource;
use crate::state::{lock, SimState};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

pub const DOCUMENT: &str = "AWS-RunShellScript";
const STDOUT_LIMIT: usize = 24_000;
const STDERR_LIMIT: usize = 8_000;

#[derive(Debug, Clone)]
pub struct Invocation {
    pub instance: String,
    /// The API's Status …
    pub status: &'static str,
    /// … and its StatusDetails, which say more (e.g. "Undeliverable" under "Failed").
    pub details: &'static str,
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

pub struct CommandRecord {
    pub id: String,
    pub targets: Vec<String>,
    pub max_concurrency: String,
    pub max_errors: String,
    pub requested: SystemTime,
    pub invocations: Mutex<Vec<Invocation>>,
    pub cancel: CancellationToken,
}

/// All commands of this simulator, by id.
#[derive(Default)]
pub struct Commands {
    pub map: Mutex<HashMap<String, Arc<CommandRecord>>>,
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// "10" or "10%" of `total`, at least `floor`.
fn limit(spec: &str, total: usize, floor: usize) -> Result<usize, ApiError> {
    let bad = || ApiError::validation(format!("'{spec}' is not a number or a percentage"));
    let n = match spec.strip_suffix('%') {
        Some(p) => {
            let pct: usize = p.parse().map_err(|_| bad())?;
            (total * pct).div_ceil(100)
        }
        None => spec.parse().map_err(|_| bad())?,
    };
    Ok(n.max(floor))
}

fn targets(state: &SimState, input: &Value) -> Result<Vec<InstanceConfig>, ApiError> {
    let instances = lock(&state.instances).clone();
    if let Some(ids) = input["InstanceIds"].as_array() {
        return ids
            .iter()
            .filter_map(Value::as_str)
            .map(|id| {
                instances
                    .iter()
                    .find(|i| i.id == id)
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::new(
                            "InvalidInstanceId",
                            "Instances not in a valid state for account",
                        )
                    })
            })
            .collect();
    }
    let mut out = Vec::new();
    for t in input["Targets"].as_array().into_iter().flatten() {
        let key = t["Key"].as_str().unwrap_or_default();
        let values: Vec<&str> = t["Values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for i in &instances {
            let hit = match key {
                "InstanceIds" => values.contains(&i.id.as_str()),
                k => match k.strip_prefix("tag:") {
                    Some(tk) => i
                        .tags
                        .iter()
                        .any(|(k2, v2)| k2 == tk && values.contains(&v2.as_str())),
                    None => {
                        return Err(ApiError::validation(format!(
                            "Target key {k} is not supported"
                        )))
                    }
                },
            };
            if hit && !out.iter().any(|o: &InstanceConfig| o.id == i.id) {
                out.push(i.clone());
            }
        }
    }
    Ok(out)
}

pub fn send_command(state: &Arc<SimState>, caller: &Identity, input: &Value) -> ApiResult {
    let document = input["DocumentName"].as_str().unwrap_or_default();
    if document != DOCUMENT {
        return Err(ApiError::new(
            "InvalidDocument",
            format!("Document {document} does not exist in your account"),
        ));
    }
    let region = &state.config.region;
    authorize(
        state,
        caller,
        "ssm:SendCommand",
        &[Resource::new(
            format!("arn:aws:ssm:{region}::document/{DOCUMENT}"),
            DOCUMENT,
        )],
        &[],
    )?;
    // Constraints the API reference states for SendCommand.
    if input["Comment"]
        .as_str()
        .is_some_and(|c| c.chars().count() > 100)
    {
        return Err(ApiError::validation(
            "1 validation error detected: Value at 'comment' failed to satisfy constraint: Member must have length less than or equal to 100",
        ));
    }
    if input["Targets"].as_array().is_some_and(|t| t.len() > 5) {
        return Err(ApiError::validation(
            "1 validation error detected: Value at 'targets' failed to satisfy constraint: Member must have length less than or equal to 5",
        ));
    }
    if input["InstanceIds"]
        .as_array()
        .is_some_and(|t| t.len() > 50)
    {
        return Err(ApiError::validation(
            "1 validation error detected: Value at 'instanceIds' failed to satisfy constraint: Member must have length less than or equal to 50",
        ));
    }
    let lines: Vec<String> = input["Parameters"]["commands"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if lines.is_empty() {
        return Err(ApiError::new(
            "InvalidParameters",
            "Parameter \"commands\" is required.",
        ));
    }
    let targets = targets(state, input)?;
    if targets.is_empty() {
        return Err(ApiError::new("InvalidInstanceId", "No targets matched."));
    }
    let instances: Vec<Resource> = targets
        .iter()
        .map(|t| Resource::new(instance_arn(state, &t.id), &t.id).tagged(&t.tags))
        .collect();
    authorize(state, caller, "ssm:SendCommand", &instances, &[])?;
    let max_concurrency = input["MaxConcurrency"].as_str().unwrap_or("50").to_string();
    let max_errors = input["MaxErrors"].as_str().unwrap_or("0").to_string();
    let concurrency = limit(&max_concurrency, targets.len(), 1)?;
    let errors_allowed = limit(&max_errors, targets.len(), 0)?;
    let record = Arc::new(CommandRecord {
        id: uuid::Uuid::new_v4().to_string(),
        targets: targets.iter().map(|t| t.id.clone()).collect(),
        max_concurrency,
        max_errors,
        requested: SystemTime::now(),
        invocations: Mutex::new(
            targets
                .iter()
                .map(|t| Invocation {
                    instance: t.id.clone(),
                    status: "Pending",
                    details: "Pending",
                    code: -1,
                    stdout: String::new(),
                    stderr: String::new(),
                })
                .collect(),
        ),
        cancel: CancellationToken::new(),
    });
    lock(&state.commands.map).insert(record.id.clone(), record.clone());
    tokio::spawn(run_all(
        state.clone(),
        record.clone(),
        targets,
        lines.join("\n"),
        concurrency,
        errors_allowed,
    ));
    Ok(json!({ "Command": command_json(&record) }))
}

async fn run_all(
    state: Arc<SimState>,
    record: Arc<CommandRecord>,
    targets: Vec<InstanceConfig>,
    script: String,
    concurrency: usize,
    errors_allowed: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut running = Vec::new();
    for (i, target) in targets.into_iter().enumerate() {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            _ = record.cancel.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        let failed = lock(&record.invocations)
            .iter()
            .filter(|v| counts_as_error(v))
            .count();
        if failed > errors_allowed || record.cancel.is_cancelled() {
            break;
        }
        let (state, record, script) = (state.clone(), record.clone(), script.clone());
        running.push(tokio::spawn(async move {
            let _permit = permit;
            let result = run_one(&state, &target, &script, &record.cancel).await;
            lock(&record.invocations)[i] = result;
        }));
    }
    for r in running {
        let _ = r.await;
    }
    // Whatever never started is not going to.
    for inv in lock(&record.invocations).iter_mut() {
        if inv.status == "Pending" {
            inv.status = "Cancelled";
            inv.details = "Cancelled";
        }
    }
}

async fn run_one(
    state: &SimState,
    target: &InstanceConfig,
    script: &str,
    cancel: &CancellationToken,
) -> Invocation {
    let mut inv = Invocation {
        instance: target.id.clone(),
        status: "InProgress",
        details: "In Progress",
        code: -1,
        stdout: String::new(),
        stderr: String::new(),
    };
    if target.ping_status != "Online" {
        // The service cannot deliver to a node whose agent is not connected. Such
        // invocations do not count against MaxErrors.
        inv.status = "Failed";
        inv.details = "Undeliverable";
        return inv;
    }
    tokio::select! {
        _ = tokio::time::sleep(target.command_delay) => {}
        _ = cancel.cancelled() => {
            inv.status = "Cancelled";
            inv.details = "Cancelled";
            return inv;
        }
    }
    let home = state.config.home_root.as_ref().map(|r| r.join(&target.id));
    if let Some(h) = &home {
        let _ = std::fs::create_dir_all(h);
    }
    let penv = ProcessEnv {
        path: instance_path(target, state.config.home_root.as_deref())
            .ok()
            .flatten(),
        home,
        file_size_limit: target.file_size_limit,
    };
    let mut cmd = tokio::process::Command::new("sh");
    // As the agent does (agent/executers/executers_unix.go): the script leads its own
    // process group, and cancelling kills the whole group with SIGKILL, so children the
    // script started (a python3 uploading to S3) die with it.
    cmd.arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    penv.apply(&mut cmd);
    let output = match cmd.spawn() {
        Err(e) => Err(e),
        Ok(child) => {
            let group = child.id().and_then(|p| i32::try_from(p).ok());
            tokio::select! {
                // A script that has already exited finished before the cancel reached
                // it: Success, as the agent reports it, not a coin toss with the cancel.
                biased;
                o = child.wait_with_output() => o,
                _ = cancel.cancelled() => {
                    if let Some(pgid) = group {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(pgid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    inv.status = "Cancelled";
                    inv.details = "Cancelled";
                    return inv;
                }
            }
        }
    };
    match output {
        Ok(o) => {
            inv.code = i64::from(o.status.code().unwrap_or(-1));
            inv.status = if o.status.success() {
                "Success"
            } else {
                "Failed"
            };
            inv.details = inv.status;
            inv.stdout = truncate(&o.stdout, STDOUT_LIMIT);
            inv.stderr = truncate(&o.stderr, STDERR_LIMIT);
        }
        Err(e) => {
            inv.status = "Failed";
            inv.details = "Failed";
            inv.stderr = e.to_string();
        }
    }
    inv
}

/// Failed and execution timeouts count against MaxErrors; undeliverable ones do not.
fn counts_as_error(i: &Invocation) -> bool {
    matches!(i.status, "Failed" | "TimedOut") && i.details != "Undeliverable"
}

fn truncate(bytes: &[u8], chars: usize) -> String {
    String::from_utf8_lossy(bytes).chars().take(chars).collect()
}

fn command_json(r: &CommandRecord) -> Value {
    let invs = lock(&r.invocations);
    let done = invs
        .iter()
        .filter(|i| !matches!(i.status, "Pending" | "InProgress"))
        .count();
    let errors = invs.iter().filter(|i| counts_as_error(i)).count();
    let status = if done < invs.len() {
        "InProgress"
    } else if invs.iter().all(|i| i.status == "Success") {
        "Success"
    } else if r.cancel.is_cancelled() {
        "Cancelled"
    } else if errors > 0 {
        "Failed"
    } else {
        "Incomplete"
    };
    json!({
        "CommandId": r.id,
        "DocumentName": DOCUMENT,
        "InstanceIds": r.targets,
        "RequestedDateTime": epoch(r.requested),
        "Status": status,
        "StatusDetails": status,
        "MaxConcurrency": r.max_concurrency,
        "MaxErrors": r.max_errors,
        "TargetCount": invs.len(),
        "CompletedCount": done,
        "ErrorCount": errors,
    })
}

fn record(state: &SimState, input: &Value) -> Result<Arc<CommandRecord>, ApiError> {
    let id = input["CommandId"].as_str().unwrap_or_default();
    lock(&state.commands.map)
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::new("InvalidCommandId", "The command ID isn't valid."))
}

pub fn get_command_invocation(state: &Arc<SimState>, input: &Value) -> ApiResult {
    let r = record(state, input)?;
    let instance = input["InstanceId"].as_str().unwrap_or_default();
    let invs = lock(&r.invocations);
    let inv = invs
        .iter()
        .find(|i| i.instance == instance)
        .ok_or_else(|| ApiError::new("InvocationDoesNotExist", "The invocation doesn't exist."))?;
    Ok(json!({
        "CommandId": r.id,
        "InstanceId": inv.instance,
        "DocumentName": DOCUMENT,
        "PluginName": "aws:runShellScript",
        "ResponseCode": inv.code,
        "Status": inv.status,
        "StatusDetails": inv.details,
        "StandardOutputContent": inv.stdout,
        "StandardErrorContent": inv.stderr,
    }))
}

pub fn list_command_invocations(state: &Arc<SimState>, input: &Value) -> ApiResult {
    let r = record(state, input)?;
    let details = input["Details"].as_bool().unwrap_or(false);
    let only = input["InstanceId"].as_str();
    let list: Vec<Value> = lock(&r.invocations)
        .iter()
        .filter(|i| only.is_none_or(|o| o == i.instance))
        .map(|i| {
            let mut v = json!({
                "CommandId": r.id,
                "InstanceId": i.instance,
                "DocumentName": DOCUMENT,
                "Status": i.status,
                "StatusDetails": i.details,
                "RequestedDateTime": epoch(r.requested),
            });
            if details {
                v["CommandPlugins"] = json!([{
                    "Name": "aws:runShellScript",
                    "Status": i.status,
                    "ResponseCode": i.code,
                    "Output": i.stdout,
                }]);
            }
            v
        })
        .collect();
    Ok(json!({ "CommandInvocations": list }))
}

pub fn cancel_command(state: &Arc<SimState>, input: &Value) -> ApiResult {
    let r = record(state, input)?;
    r.cancel.cancel();
    Ok(json!({}))
}

pub fn list_commands(state: &Arc<SimState>, input: &Value) -> ApiResult {
    let r = record(state, input)?;
    Ok(json!({ "Commands": [command_json(&r)] }))
}
