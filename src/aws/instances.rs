//! Finding instances by their Name tag: `name:web-1` (exactly one instance, through
//! DescribeInstanceInformation's tag filter) and `name:web-*` (any number, for uploads
//! to a fleet).
//!
//! No SSM or Run Command API documents wildcards in tag values, so a pattern is matched
//! here: the Resource Groups Tagging API lists every EC2 instance and hybrid node that
//! has a Name tag, with its value, and DescribeInstanceInformation then says which of
//! the matches Systems Manager manages. Instances it does not manage are left out with
//! a warning rather than failing the whole SendCommand (which rejects unknown ids).

use crate::aws::error::from_sdk;
use crate::aws::target::compile;
use crate::error::{Error, Kind, Result};
use aws_sdk_ssm::types::InstanceInformationStringFilter;

/// Run Command's limit on `InstanceIds` in one SendCommand.
pub(crate) const MAX_INSTANCE_IDS: usize = 50;

/// The one managed instance whose Name tag is `name`.
pub(crate) async fn by_name(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<String> {
    let ids = managed_where(ssm, "tag:Name", vec![name.to_string()]).await?;
    match ids.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(Error::new(
            Kind::Target,
            format!("no managed instance has the Name tag '{name}'"),
        )
        .hint("check the name and the region; `aws ssm describe-instance-information` lists what Systems Manager manages")),
        many => Err(Error::usage(format!(
            "{} managed instances have the Name tag '{name}': {}",
            many.len(),
            many.join(", ")
        ))
        .hint("use the instance id, or a pattern (name:web-*) to copy to all of them")),
    }
}

/// The managed instances tagged `key=value`, sorted (for commands ssmcp spreads over
/// instances itself; uploads leave the tag to Run Command).
pub(crate) async fn by_tag(
    ssm: &aws_sdk_ssm::Client,
    key: &str,
    value: &str,
) -> Result<Vec<String>> {
    let mut ids = managed_where(ssm, &format!("tag:{key}"), vec![value.to_string()]).await?;
    if ids.is_empty() {
        return Err(Error::new(
            Kind::Target,
            format!("no managed instance is tagged {key}={value}"),
        )
        .hint("tag keys and values are case-sensitive; check them and the region"));
    }
    ids.sort();
    Ok(ids)
}

/// What a Name pattern matched.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Matched {
    /// Managed instances, sorted: these receive the command.
    pub managed: Vec<String>,
    /// Instances with a matching Name that Systems Manager does not manage.
    pub unmanaged: Vec<String>,
}

impl Matched {
    /// One warning per instance left out.
    pub(crate) fn warnings(&self, pattern: &str) -> Vec<String> {
        self.unmanaged
            .iter()
            .map(|id| format!("{id} is named like '{pattern}' but Systems Manager does not manage it; left out"))
            .collect()
    }

    pub(crate) fn describe(&self, pattern: &str) -> String {
        format!("name:{pattern} is {}", self.managed.join(", "))
    }
}

/// The managed instances whose Name tag matches `pattern`.
pub(crate) async fn by_name_pattern(
    conf: &aws_config::SdkConfig,
    ssm: &aws_sdk_ssm::Client,
    pattern: &str,
) -> Result<Matched> {
    let matcher = compile(pattern)?;
    let tagged = named_instances(&aws_sdk_resourcegroupstagging::Client::new(conf)).await?;
    let mut ids: Vec<String> = tagged
        .into_iter()
        .filter(|(_, name)| matcher.is_match(name))
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Err(Error::new(
            Kind::Target,
            format!("no instance has a Name tag matching '{pattern}'"),
        )
        .hint("patterns use * ? and [..] and are case-sensitive; check the region (`aws ec2 describe-instances --filters Name=tag:Name,Values='PATTERN'` shows what matches)"));
    }
    let managed = managed_among(ssm, &ids).await?;
    let (managed, unmanaged): (Vec<String>, Vec<String>) =
        ids.into_iter().partition(|id| managed.contains(id));
    if managed.is_empty() {
        return Err(Error::new(
            Kind::Target,
            format!(
                "the instances named like '{pattern}' ({}) are not managed by Systems Manager",
                unmanaged.join(", ")
            ),
        )
        .hint("an instance needs a running SSM agent and an instance profile with AmazonSSMManagedInstanceCore (ssmcp doctor TARGET)"));
    }
    if managed.len() > MAX_INSTANCE_IDS {
        return Err(Error::usage(format!(
            "'name:{pattern}' matches {} managed instances; Run Command takes at most {MAX_INSTANCE_IDS} ids in one command",
            managed.len()
        ))
        .hint("narrow the pattern, or tag the instances and use tag:KEY=VALUE, which has no such limit"));
    }
    Ok(Matched { managed, unmanaged })
}

/// Every EC2 instance and hybrid node with a Name tag: (instance id, Name).
async fn named_instances(
    tagging: &aws_sdk_resourcegroupstagging::Client,
) -> Result<Vec<(String, String)>> {
    let has_name = aws_sdk_resourcegroupstagging::types::TagFilter::builder()
        .key("Name")
        .build();
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = tagging
            .get_resources()
            .tag_filters(has_name.clone())
            .resource_type_filters("ec2:instance")
            .resource_type_filters("ssm:managed-instance")
            .set_pagination_token(token.take())
            .send()
            .await
            .map_err(|e| from_sdk("GetResources", e))?;
        for m in page.resource_tag_mapping_list() {
            let id = m.resource_arn().and_then(instance_id_of);
            let name = m
                .tags()
                .iter()
                .find(|t| t.key() == "Name")
                .map(|t| t.value().to_string());
            if let (Some(id), Some(name)) = (id, name) {
                out.push((id, name));
            }
        }
        // The last page carries an empty token rather than none.
        match page.pagination_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

/// `i-…` from an EC2 instance ARN, `mi-…` from a managed-instance ARN.
fn instance_id_of(arn: &str) -> Option<String> {
    let resource = arn.rsplit(':').next()?;
    let id = resource
        .strip_prefix("instance/")
        .or_else(|| resource.strip_prefix("managed-instance/"))?;
    crate::aws::target::is_instance_id(id).then(|| id.to_string())
}

/// Which of `ids` DescribeInstanceInformation knows (managed, whatever their ping).
async fn managed_among(ssm: &aws_sdk_ssm::Client, ids: &[String]) -> Result<Vec<String>> {
    let mut managed = Vec::new();
    // The filter takes at most 50 values at a time.
    for chunk in ids.chunks(MAX_INSTANCE_IDS) {
        managed.extend(managed_where(ssm, "InstanceIds", chunk.to_vec()).await?);
    }
    Ok(managed)
}

/// The managed instances DescribeInstanceInformation lists for one filter, every page.
async fn managed_where(
    ssm: &aws_sdk_ssm::Client,
    key: &str,
    values: Vec<String>,
) -> Result<Vec<String>> {
    let filter = InstanceInformationStringFilter::builder()
        .key(key)
        .set_values(Some(values))
        .build()
        .map_err(|e| Error::usage(format!("bad {key} filter: {e}")))?;
    let mut ids = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = ssm
            .describe_instance_information()
            .filters(filter.clone())
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| from_sdk("DescribeInstanceInformation", e))?;
        ids.extend(
            out.instance_information_list()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_string)),
        );
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(ids),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_instance_and_managed_instance_arns() {
        assert_eq!(
            instance_id_of("arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"),
            Some("i-0123456789abcdef0".into())
        );
        assert_eq!(
            instance_id_of(
                "arn:aws:ssm:eu-west-1:123456789012:managed-instance/mi-0123456789abcdef0"
            ),
            Some("mi-0123456789abcdef0".into())
        );
        assert_eq!(instance_id_of("arn:aws:ec2:us-east-1:1:volume/vol-1"), None);
        assert_eq!(instance_id_of("arn:aws:ec2:us-east-1:1:instance/web"), None);
    }
}
