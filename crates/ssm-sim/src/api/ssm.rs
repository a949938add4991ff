//! The Session Manager operations and DescribeInstanceInformation.

use super::{authorize, ApiError, ApiResult};
use crate::config::{Identity, ACCOUNT_ID};
use crate::documents::{self, DocumentError};
use crate::iam::{Resource, SESSION_OWNER_TAG};
use crate::state::{lock, EndReason, Owner, Session, SimState};
use crate::stats::Stats;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn required<'a>(input: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    input[field].as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::validation(format!(
            "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
            lower_first(field)
        ))
    })
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn random_token() -> String {
    let mut rng = rand::rng();
    (0..96)
        .map(|_| {
            let i = rng.random_range(0..62u8);
            (match i {
                0..=9 => b'0' + i,
                10..=35 => b'a' + i - 10,
                _ => b'A' + i - 36,
            }) as char
        })
        .collect()
}

fn session_arn(state: &SimState, id: &str) -> String {
    format!(
        "arn:aws:ssm:{}:{ACCOUNT_ID}:session/{id}",
        state.config.region
    )
}

/// An EC2 instance's ARN, or a hybrid node's (`mi-`) as Systems Manager names it.
pub fn instance_arn(state: &SimState, id: &str) -> String {
    if id.starts_with("mi-") {
        format!(
            "arn:aws:ssm:{}:{ACCOUNT_ID}:managed-instance/{id}",
            state.config.region
        )
    } else {
        format!(
            "arn:aws:ec2:{}:{ACCOUNT_ID}:instance/{id}",
            state.config.region
        )
    }
}

fn stream_url(state: &SimState, id: &str) -> String {
    format!(
        "{}/v1/data-channel/{id}?role=publish_subscribe",
        lock(&state.gateway_base)
    )
}

/// A document's ARN: AWS-owned documents have no account in theirs.
fn document_arn(state: &SimState, name: &str) -> String {
    let account = if name.starts_with("AWS-") {
        ""
    } else {
        ACCOUNT_ID
    };
    format!(
        "arn:aws:ssm:{}:{account}:document/{name}",
        state.config.region
    )
}

/// The session and the condition keys AWS evaluates for it: the owner tag.
fn session_resource(state: &SimState, id: &str) -> Resource {
    let r = Resource::new(session_arn(state, id), id);
    match state.session(id) {
        Some(s) => r.key(
            &format!("ssm:resourceTag/{SESSION_OWNER_TAG}"),
            &s.owner.user_id,
        ),
        None => r,
    }
}

pub fn start_session(state: &Arc<SimState>, caller: &Identity, input: &Value) -> ApiResult {
    let target = required(input, "Target")?;
    // StartSession is authorized on the instance, and on the document when one is
    // named; without one, `ssm:SessionDocumentAccessCheck` is false, so statements
    // that demand the check do not allow it (docs/simulator.md, "IAM").
    let tags = state.instance(target).map(|i| i.tags).unwrap_or_default();
    let mut resources = vec![Resource::new(instance_arn(state, target), target).tagged(&tags)];
    let named = input["DocumentName"].as_str().filter(|d| !d.is_empty());
    if let Some(doc) = named {
        resources.push(Resource::new(document_arn(state, doc), doc));
    }
    let check = if named.is_some() { "true" } else { "false" };
    authorize(
        state,
        caller,
        "ssm:StartSession",
        &resources,
        &[("ssm:SessionDocumentAccessCheck", check)],
    )?;
    let params: HashMap<String, Vec<String>> =
        serde_json::from_value(input["Parameters"].clone()).unwrap_or_default();
    let doc = documents::resolve(
        input["DocumentName"].as_str(),
        &params,
        &state.config.documents,
    )
    .map_err(|e| match e {
        DocumentError::NotFound(n) => ApiError::new(
            "InvalidDocument",
            format!("Document with name {n} does not exist."),
        ),
        DocumentError::InvalidParameters(m) => ApiError::new("InvalidParameters", m),
    })?;
    let instance = match state.instance(target) {
        Some(i) if i.ping_status == "Online" => i,
        _ => {
            return Err(ApiError::new(
                "TargetNotConnected",
                format!("{target} is not connected."),
            ))
        }
    };
    let suffix: u128 = rand::rng().random::<u128>() & ((1u128 << 68) - 1);
    let id = format!("{}-{:017x}", caller.session_prefix, suffix);
    let token = random_token();
    let session = Session::new(
        id.clone(),
        target.to_string(),
        doc,
        instance,
        Owner {
            arn: caller.arn.clone(),
            user_id: caller.user_id.clone(),
        },
        input["Reason"].as_str().map(str::to_string),
        token.clone(),
    );
    lock(&state.sessions).insert(id.clone(), Arc::new(session));
    Stats::add(&state.stats.sessions_started);
    Ok(json!({"SessionId": id, "TokenValue": token, "StreamUrl": stream_url(state, &id)}))
}

pub fn resume_session(state: &Arc<SimState>, caller: &Identity, input: &Value) -> ApiResult {
    let id = required(input, "SessionId")?;
    authorize(
        state,
        caller,
        "ssm:ResumeSession",
        &[session_resource(state, id)],
        &[],
    )?;
    let Some(session) = state.session(id) else {
        return Err(ApiError::new(
            "DoesNotExistException",
            format!("Session with id {id} does not exist."),
        ));
    };
    if session.is_ended() {
        // The plugin reads a null token as "session timed out" (§1.2).
        return Ok(json!({"SessionId": id}));
    }
    let token = random_token();
    session.set_token(token.clone());
    Stats::add(&state.stats.resumes);
    Ok(json!({"SessionId": id, "TokenValue": token, "StreamUrl": stream_url(state, id)}))
}

pub async fn terminate_session(
    state: &Arc<SimState>,
    caller: &Identity,
    input: &Value,
) -> ApiResult {
    let id = required(input, "SessionId")?;
    authorize(
        state,
        caller,
        "ssm:TerminateSession",
        &[session_resource(state, id)],
        &[],
    )?;
    if let Some(session) = state.session(id) {
        session.end(state, EndReason::Api, "").await;
    }
    Ok(json!({"SessionId": id}))
}

fn session_status(s: &Session) -> &'static str {
    match s.end_info() {
        Some(_) => "Terminated",
        None if s.connections.load(std::sync::atomic::Ordering::Relaxed) > 0 => "Connected",
        None => "Connecting",
    }
}

pub fn describe_sessions(state: &Arc<SimState>, input: &Value) -> ApiResult {
    let want_active = match input["State"].as_str() {
        Some("Active") => true,
        Some("History") => false,
        _ => {
            return Err(ApiError::validation(
                "1 validation error detected: Value at 'state' failed to satisfy constraint: \
                 Member must satisfy enum value set: [Active, History]",
            ))
        }
    };
    let filters: Vec<(String, String)> = input["Filters"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| {
                    Some((
                        f["key"].as_str()?.to_string(),
                        f["value"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut sessions: Vec<Arc<Session>> = lock(&state.sessions).values().cloned().collect();
    sessions.sort_by_key(|s| s.start_date);
    let list: Vec<Value> = sessions
        .iter()
        .filter(|s| s.is_ended() != want_active)
        .filter(|s| {
            filters.iter().all(|(k, v)| match k.as_str() {
                "Target" => &s.target == v,
                "Owner" => &s.owner.arn == v,
                "SessionId" => &s.id == v,
                "Status" => session_status(s) == v,
                _ => true,
            })
        })
        .map(|s| {
            let mut v = json!({
                "SessionId": s.id,
                "Target": s.target,
                "Status": session_status(s),
                "StartDate": epoch_secs(s.start_date),
                "DocumentName": s.document.name,
                "Owner": s.owner.arn,
            });
            if let Some(r) = &s.reason {
                v["Reason"] = json!(r);
            }
            if let Some((_, end)) = s.end_info() {
                v["EndDate"] = json!(epoch_secs(end));
            }
            v
        })
        .collect();
    page(list, input, "Sessions", 200)
}

/// Key/values from both filter shapes: `Filters` ({Key, Values}) and the older
/// `InstanceInformationFilterList` ({key, valueSet}).
fn instance_filters(input: &Value) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let mut out = Vec::new();
    for (list, k, vs) in [
        ("Filters", "Key", "Values"),
        ("InstanceInformationFilterList", "key", "valueSet"),
    ] {
        for f in input[list].as_array().into_iter().flatten() {
            let key = f[k]
                .as_str()
                .ok_or_else(|| ApiError::validation("Filter key is required."))?;
            let values: Vec<String> = f[vs]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if values.is_empty() {
                return Err(ApiError::validation("Filter values must not be empty."));
            }
            out.push((key.to_string(), values));
        }
    }
    Ok(out)
}

pub fn describe_instance_information(state: &Arc<SimState>, input: &Value) -> ApiResult {
    let filters = instance_filters(input)?;
    let instances = lock(&state.instances).clone();
    let mut list = Vec::new();
    for i in &instances {
        let matches = filters.iter().all(|(k, vals)| {
            // Exact matches only: the API reference documents no wildcards for these
            // filters, and a client that relied on them could fail against AWS.
            let any = |x: &str| vals.iter().any(|v| v == x);
            match k.as_str() {
                "InstanceIds" => any(&i.id),
                "PingStatus" => any(&i.ping_status),
                "PlatformTypes" => any(&i.platform_type),
                "AgentVersion" => any(&i.agent_version),
                "ResourceType" => any(if i.id.starts_with("mi-") {
                    "ManagedInstance"
                } else {
                    "EC2Instance"
                }),
                "tag-key" => i.tags.iter().any(|(tk, _)| any(tk)),
                key => match key.strip_prefix("tag:") {
                    Some(tk) => i.tags.iter().any(|(k2, v2)| k2 == tk && any(v2)),
                    None => false,
                },
            }
        });
        if !matches {
            continue;
        }
        let managed = i.id.starts_with("mi-");
        let mut entry = json!({
            "InstanceId": i.id,
            "PingStatus": i.ping_status,
            "LastPingDateTime": epoch_secs(SystemTime::now()),
            "AgentVersion": i.agent_version,
            "IsLatestVersion": false,
            "PlatformType": i.platform_type,
            "PlatformName": i.platform_name,
            "PlatformVersion": "2023",
            "ResourceType": if managed { "ManagedInstance" } else { "EC2Instance" },
            "IPAddress": "127.0.0.1",
            "ComputerName": format!("{}.sim.internal", i.id),
        });
        // AWS fills Name only for hybrid nodes (the activation's DefaultInstanceName);
        // an EC2 instance's Name tag is not part of this answer.
        if managed {
            entry["Name"] = json!(format!("{}-activation", i.id));
        }
        list.push(entry);
    }
    page(list, input, "InstanceInformationList", 50)
}

fn page(list: Vec<Value>, input: &Value, field: &str, default_max: usize) -> ApiResult {
    let max = input["MaxResults"]
        .as_u64()
        .map(|m| m as usize)
        .unwrap_or(default_max)
        .max(1);
    let start: usize = match input["NextToken"].as_str() {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::new("InvalidNextToken", "The specified token isn't valid."))?,
        None => 0,
    };
    let end = (start + max).min(list.len());
    let items: Vec<Value> = list
        .get(start..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let mut out = json!({ field: items });
    if end < list.len() {
        out["NextToken"] = json!(end.to_string());
    }
    Ok(out)
}
