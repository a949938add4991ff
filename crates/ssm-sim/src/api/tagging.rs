//! The Resource Groups Tagging API's GetResources, for what ssmcp asks of it: every
//! instance carrying a tag key, with all its tags, so the client can match Name tags
//! against a pattern (no SSM or Run Command API accepts wildcards for tag values).
//!
//! Seen here: the simulated instances (EC2 `i-` and hybrid `mi-`) that carry at least
//! one tag, plus `SimConfig::unmanaged_instances` — EC2 instances without a working
//! agent, which tagging sees and Systems Manager does not.

use super::ssm::instance_arn;
use super::{authorize, ApiError, ApiResult};
use crate::config::Identity;
use crate::iam::Resource;
use crate::state::{lock, SimState};
use serde_json::{json, Value};
use std::sync::Arc;

pub const TARGET_PREFIX: &str = "ResourceGroupsTaggingAPI_20170126.";

pub async fn dispatch(
    state: &Arc<SimState>,
    caller: &Identity,
    op: &str,
    input: &Value,
) -> ApiResult {
    match op {
        "GetResources" => get_resources(state, caller, input),
        other => Err(ApiError::new(
            "UnknownOperationException",
            format!("The simulator does not implement {other}."),
        )),
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new("InvalidParameterException", message)
}

fn get_resources(state: &Arc<SimState>, caller: &Identity, input: &Value) -> ApiResult {
    authorize(
        state,
        caller,
        "tag:GetResources",
        &[Resource::new("*", "")],
        &[],
    )?;
    let per_page = match input.get("ResourcesPerPage") {
        None | Some(Value::Null) => 100,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=100) => n as usize,
            _ => return Err(invalid("ResourcesPerPage must be between 1 and 100.")),
        },
    };
    let filters = tag_filters(input)?;
    let types: Vec<&str> = input["ResourceTypeFilters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut everything = lock(&state.instances).clone();
    everything.extend(state.config.unmanaged_instances.iter().cloned());
    let mut list = Vec::new();
    for i in &everything {
        let arn = instance_arn(state, &i.id);
        let kind = if i.id.starts_with("mi-") {
            ("ssm", "ssm:managed-instance")
        } else {
            ("ec2", "ec2:instance")
        };
        let type_ok = types.is_empty() || types.iter().any(|t| *t == kind.0 || *t == kind.1);
        let tags_ok = filters.iter().all(|(key, values)| {
            i.tags
                .iter()
                .any(|(k, v)| k == key && (values.is_empty() || values.contains(v)))
        });
        if i.tags.is_empty() || !type_ok || !tags_ok {
            continue;
        }
        let tags: Vec<Value> = i
            .tags
            .iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect();
        list.push(json!({"ResourceARN": arn, "Tags": tags}));
    }
    let start: usize = match input["PaginationToken"].as_str() {
        None | Some("") => 0,
        Some(t) => t.parse().map_err(|_| {
            ApiError::new(
                "PaginationTokenExpiredException",
                "The pagination token is not valid.",
            )
        })?,
    };
    let end = (start + per_page).min(list.len());
    let items: Vec<Value> = list
        .get(start..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    // AWS answers an empty token (not a missing one) on the last page.
    let token = if end < list.len() {
        end.to_string()
    } else {
        String::new()
    };
    Ok(json!({"PaginationToken": token, "ResourceTagMappingList": items}))
}

/// `TagFilters`: every filter must match (AND); a filter's values are alternatives
/// (OR), and a filter without values asks only that the key be present.
fn tag_filters(input: &Value) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let Some(list) = input.get("TagFilters").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    if list.len() > 50 {
        return Err(invalid("TagFilters can have at most 50 items."));
    }
    let mut out = Vec::new();
    for f in list {
        let key = f["Key"].as_str().unwrap_or_default();
        if key.is_empty() || key.len() > 128 {
            return Err(invalid("A tag filter's Key must be 1 to 128 characters."));
        }
        let values: Vec<String> = f["Values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        if values.len() > 20 {
            return Err(invalid("A tag filter can have at most 20 values."));
        }
        out.push((key.to_string(), values));
    }
    Ok(out)
}
