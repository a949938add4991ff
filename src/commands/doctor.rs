//! `ssmcp doctor TARGET`: check everything a copy needs, before a deploy needs it, and
//! say for each failure what is missing and how to fix it.

use super::Context;
use super::Tracking;
use crate::aws::error as aws_error;
use crate::aws::iam_advice::{own_sessions_fix, Caller};
use crate::aws::run_command::{self, InFlight, Script, Targets};
use crate::cli::{DoctorArgs, Global};
use crate::copy::transport::stream::{Endpoint, Receiver};
use crate::error::{Error, Kind, Result};
use crate::progress::Reporter;
use crate::remote::RunAs;
use crate::session::handshake::{self, HandshakeInfo, Start};
use crate::session::{port, SessionSpec};
use aws_sdk_ssm::types::CommandInvocationStatus;
use serde_json::json;
use ssm_proto::version::agent_compare;
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
    /// For a failure: the class that decides doctor's exit code.
    pub kind: Option<Kind>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
            kind: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
            kind: None,
        }
    }

    fn fail(name: &'static str, e: &Error) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: e.message.clone(),
            fix: e.hint.clone(),
            kind: Some(e.kind),
        }
    }

    fn skip(name: &'static str, why: &str) -> Check {
        Check {
            name,
            status: Status::Skip,
            detail: why.to_string(),
            fix: None,
            kind: None,
        }
    }
}

/// Agent features and the first agent version that has each (ssm-protocol.md §7–§8;
/// port forwarding from the Session Manager documentation).
const FEATURES: &[(&str, &str)] = &[
    ("port forwarding", "2.3.672.0"),
    ("InteractiveCommands (receiver launch, exec)", "2.3.668.0"),
    ("port multiplexing (smux)", "3.0.222.0"),
    ("NonInteractiveCommands", "3.0.1124.0"),
    ("port forwarding to remote hosts", "3.1.1188.0"),
    ("separate stdout/stderr streams", "3.1.1511.0"),
];

pub async fn run(global: &Global, sessions: &Tracking, args: &DoctorArgs) -> Result<i32> {
    let ctx = Context::new(global, sessions, &args.target).await?;
    let mut checks = checks(&ctx, global).await;
    if let Some(bucket) = &args.staging.bucket {
        let instance_ok = checks
            .iter()
            .any(|c| c.name == "instance" && c.status == Status::Ok);
        checks.extend(s3_checks(&ctx, args, bucket, instance_ok).await);
    }
    report(
        &checks,
        args.json,
        &Reporter::plain(global.quiet, global.verbose > 0),
    );
    Ok(checks
        .iter()
        .find(|c| c.status == Status::Fail)
        .and_then(|c| c.kind)
        .map(Kind::exit_code)
        .unwrap_or(0))
}

async fn checks(ctx: &Context, global: &Global) -> Vec<Check> {
    let mut out = Vec::new();
    let region = ctx
        .aws
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "(none)".into());
    let endpoint = global
        .endpoint_url
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_SSM").ok())
        .unwrap_or_else(|| format!("https://ssm.{region}.amazonaws.com"));
    out.push(Check::ok(
        "region and endpoint",
        format!("{region}, SSM at {endpoint}"),
    ));

    // Who we are, and what that means for ${aws:username}-scoped policies.
    let sts = crate::aws::sts_client(&ctx.aws);
    let is_role = match sts.get_caller_identity().send().await {
        Ok(id) => {
            let arn = id.arn().unwrap_or_default();
            let caller = Caller::from_sts(arn, id.user_id().unwrap_or_default());
            out.push(Check::ok(
                "credentials",
                format!("{arn} (account {})", id.account().unwrap_or("?")),
            ));
            out.push(Check::ok("identity", caller.describe()));
            caller.has_no_user_name()
        }
        Err(e) => {
            let e = aws_error::from_sdk("GetCallerIdentity", e);
            out.push(Check::fail("credentials", &e));
            out.push(Check::skip("everything else", "needs working credentials"));
            return out;
        }
    };

    // The instance as SSM sees it.
    let id = ctx.target.instance_id.clone();
    let filter = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
        .key("InstanceIds")
        .values(&id)
        .build();
    let info = match filter {
        Ok(f) => ctx
            .ssm
            .describe_instance_information()
            .filters(f)
            .send()
            .await
            .map_err(|e| aws_error::from_sdk("DescribeInstanceInformation", e)),
        Err(e) => Err(Error::usage(e.to_string())),
    };
    let info = match info {
        Ok(o) => o.instance_information_list().first().cloned(),
        Err(e) => {
            out.push(Check::fail("instance", &e));
            None
        }
    };
    let Some(info) = info else {
        if !out.iter().any(|c| c.status == Status::Fail) {
            let e = Error::new(
                Kind::Target,
                format!("{id} is not a managed instance in {region}"),
            )
            .hint("check the id and the region; the instance needs the SSM agent running and an instance profile with AmazonSSMManagedInstanceCore (hybrid nodes: an activation)");
            out.push(Check::fail("instance", &e));
        }
        out.push(Check::skip("sessions", "needs a managed instance"));
        return out;
    };
    let ping = info
        .ping_status()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let agent = info.agent_version().unwrap_or("0").to_string();
    if ping != "Online" {
        let e = Error::new(
            Kind::Target,
            format!("{id} is managed but its agent is not connected (PingStatus {ping})"),
        )
        .hint("start the instance, or check that the SSM agent runs and can reach the ssm, ssmmessages and ec2messages endpoints (VPC endpoints or outbound HTTPS)");
        out.push(Check::fail("instance", &e));
        out.push(Check::skip("sessions", "needs an Online instance"));
        return out;
    }
    out.push(Check::ok("instance", format!("{id} Online, agent {agent}")));
    let platform = info
        .platform_type()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let platform_name = info.platform_name().unwrap_or_default();
    if platform == "Linux" {
        out.push(Check::ok(
            "platform",
            format!("{platform} ({platform_name})"),
        ));
    } else {
        out.push(Check::warn(
            "platform",
            format!("{platform} ({platform_name})"),
            "ssmcp copies need a Linux (or macOS) instance: its transports run sh",
        ));
    }
    if id.starts_with("mi-") {
        out.push(Check::warn(
            "hybrid node",
            "a managed node outside EC2 (mi-)",
            "Session Manager on hybrid nodes needs the advanced-instances tier (Fleet Manager settings); ssmcp cannot read the tier",
        ));
    }
    let missing: Vec<String> = FEATURES
        .iter()
        .filter(|(_, min)| agent_compare(&agent, min) == Ordering::Less)
        .map(|(f, min)| format!("{f} (needs {min})"))
        .collect();
    if missing.is_empty() {
        out.push(Check::ok("agent features", "all that ssmcp uses"));
    } else {
        let port_missing = agent_compare(&agent, FEATURES[0].1) == Ordering::Less;
        let e = Error::new(
            if port_missing {
                Kind::Target
            } else {
                Kind::Usage
            },
            format!("agent {agent} lacks: {}", missing.join(", ")),
        )
        .hint("update the SSM agent (AWS-UpdateSSMAgent through Run Command)");
        if port_missing {
            out.push(Check::fail("agent features", &e));
            return out;
        }
        out.push(Check::warn(
            "agent features",
            e.message,
            e.hint.unwrap_or_default(),
        ));
    }

    out.push(session_check(ctx, is_role).await);
    out.push(encryption_check(ctx).await);
    out.push(python_check(ctx).await);
    out
}

/// Whether this instance's shell and command sessions are KMS-encrypted, and if so that
/// both ends can use the key: a command session's handshake does it for real (our
/// GenerateDataKey with the session's context, the agent's Decrypt), which also says
/// which end is refused when one is.
async fn encryption_check(ctx: &Context) -> Check {
    const NAME: &str = "session encryption";
    let spec = SessionSpec {
        target: ctx.target.instance_id.clone(),
        document: crate::session::command::DOCUMENT.to_string(),
        // Output, so that a session without a handshake still says so before it ends.
        parameters: vec![("command".to_string(), "echo ssmcp-doctor".to_string())],
    };
    let (session, mut channel) =
        match crate::session::start(&ctx.ssm, &spec, ctx.channel.clone()).await {
            Ok(s) => s,
            Err(e) => return Check::fail(NAME, &e),
        };
    let started = handshake::perform(&mut channel).await;
    let _ = session.end(Some(&mut channel)).await;
    match started {
        Ok(Start::Handshaken(HandshakeInfo {
            kms_key: Some(key), ..
        })) => Check::ok(
            NAME,
            format!("KMS-encrypted with {key}: you may make its data keys (kms:GenerateDataKey) and the instance's role opens them (kms:Decrypt)"),
        ),
        Ok(_) => Check::ok(NAME, "not KMS-encrypted (Session Manager preferences ask for no KMS key)"),
        Err(e) => Check::fail(NAME, &e),
    }
}

/// Start a port session and end it the way copies do: in-band flag, then the API.
async fn session_check(ctx: &Context, is_role: bool) -> Check {
    let spec = SessionSpec {
        target: ctx.target.instance_id.clone(),
        document: "AWS-StartPortForwardingSession".to_string(),
        // Nothing needs to listen: the agent dials only when a connection is opened.
        parameters: vec![("portNumber".to_string(), "9".to_string())],
    };
    let (session, ports, _) = match port::open(&ctx.ssm, &spec, ctx.channel.clone()).await {
        Ok(s) => s,
        Err(e) => return Check::fail("start and end a session", &e),
    };
    let lost = ports.terminate().await;
    let end = session.end_after(lost).await;
    match end.warning {
        None => Check::ok(
            "start and end a session",
            "StartSession, in-band end and the TerminateSession API all work",
        ),
        Some(w) => Check::warn(
            "start and end a session",
            format!(
                "sessions start and end in-band (ssmcp copies work), but {w}{}",
                if is_role {
                    "; this caller has no aws:username, the classic ${aws:username} policy pitfall"
                } else {
                    ""
                }
            ),
            format!(
                "{}; other tools (aws ssm start-session, scp through a ProxyCommand) fail with this policy",
                own_sessions_fix()
            ),
        ),
    }
}

/// Start the receiver as a copy would, and stop it.
async fn python_check(ctx: &Context) -> Check {
    let endpoint = Endpoint {
        ssm: ctx.ssm.clone(),
        instance: ctx.target.instance_id.clone(),
        channel: ctx.channel.clone(),
    };
    match Receiver::start(&endpoint, &RunAs::SessionUser).await {
        Ok(Some(r)) => {
            let _ = r.close(false).await;
            Check::ok(
                "python3 on the instance",
                "present: copies use the stream transport",
            )
        }
        Ok(None) => Check::warn(
            "python3 on the instance",
            "absent: copies fall back to the slower pty transport",
            "install python3 (3.6 or newer) on the instance for full speed",
        ),
        Err(e) => Check::fail("python3 on the instance", &e),
    }
}

/// The S3 transport's needs: the bucket answers (and where it is), and the instance
/// can fetch a presigned URL from it (a probe object, removed afterwards).
async fn s3_checks(
    ctx: &Context,
    args: &DoctorArgs,
    bucket: &str,
    instance_ok: bool,
) -> Vec<Check> {
    let given = args.staging.bucket_region.as_deref();
    let located = crate::copy::transport::s3::locate(&ctx.aws, bucket, given).await;
    if let Err(e) = located.answered {
        return vec![
            Check::fail("s3 bucket", &e),
            Check::skip("instance reaches S3", "needs a reachable bucket"),
        ];
    }
    let here = ctx.aws.region().map(|r| r.to_string());
    let mut out = vec![match (&located.region, &here) {
        (Some(b), Some(h)) if b != h && given.is_none() => Check::ok(
            "s3 bucket",
            format!("{bucket} ({b}, not {h}: ssmcp signs its requests and URLs for {b})"),
        ),
        (Some(b), _) => Check::ok("s3 bucket", format!("{bucket} ({b})")),
        (None, _) => Check::ok("s3 bucket", bucket.to_string()),
    }];
    let s3 = crate::aws::s3_client(&ctx.aws, located.region.as_deref());
    if !instance_ok {
        out.push(Check::skip(
            "instance reaches S3",
            "needs an Online instance",
        ));
        return out;
    }
    let key = format!(
        "{}ssmcp-doctor-{}.txt",
        args.staging.prefix,
        uuid::Uuid::new_v4().simple()
    );
    let staging = crate::copy::transport::s3::StagingObject::new(s3, bucket, &key);
    let check = match instance_fetch(ctx, &staging).await {
        Ok(()) => Check::ok(
            "instance reaches S3",
            "a presigned GET from the instance worked",
        ),
        Err(e) => Check::fail("instance reaches S3", &e),
    };
    let _ = staging.remove().await;
    out.push(check);
    out
}

/// Put a probe object, have the instance fetch it through Run Command, compare.
async fn instance_fetch(
    ctx: &Context,
    staging: &crate::copy::transport::s3::StagingObject,
) -> Result<()> {
    let nonce = format!("ssmcp-probe-{:016x}", rand::random::<u64>());
    staging.put_small(nonce.as_bytes().to_vec()).await?;
    let url = staging
        .presign_get(std::time::Duration::from_secs(300))
        .await?;
    // The URL reaches python on stdin, never a command line.
    let script = format!(
        "python3 -c 'import sys,urllib.request;sys.stdout.write(urllib.request.urlopen(sys.stdin.readline().strip(),timeout=20).read().decode())' <<'SSMCP-URL'\n{url}\nSSMCP-URL\n"
    );
    let targets = Targets::one(&ctx.target.instance_id);
    let probe = Script {
        targets: &targets,
        comment: "ssmcp doctor: can the instance reach S3",
        script,
        max_concurrency: None,
        max_errors: None,
    };
    let command = InFlight::default();
    let id = command.send(&ctx.ssm, &probe).await?;
    let instance = &ctx.target.instance_id;
    let waited = run_command::wait_one(&ctx.ssm, &id, instance);
    let Ok(inv) = tokio::time::timeout(PROBE_WAIT, waited).await else {
        command.cancel(&ctx.ssm).await;
        return Err(Error::new(
            Kind::Target,
            format!(
                "the probe command did not finish within {} s",
                PROBE_WAIT.as_secs()
            ),
        ));
    };
    let inv = inv?;
    if inv.status == CommandInvocationStatus::Success && inv.stdout == nonce {
        return Ok(());
    }
    let last = inv
        .stderr
        .trim()
        .lines()
        .last()
        .unwrap_or("no output")
        .to_string();
    Err(Error::new(
        Kind::Target,
        format!("the instance could not download from S3 ({last})"),
    )
    .hint("the instance needs HTTPS to S3 (a NAT gateway or a VPC gateway endpoint for S3) and python3; it needs no S3 permissions"))
}

/// How long the S3 probe may take on the instance.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(90);

fn report(checks: &[Check], as_json: bool, reporter: &Reporter) {
    if as_json {
        let list: Vec<_> = checks
            .iter()
            .map(|c| {
                json!({
                    "check": c.name,
                    "status": c.status.word().to_lowercase(),
                    "detail": c.detail,
                    "fix": c.fix,
                    "exit_code": c.kind.map(Kind::exit_code),
                })
            })
            .collect();
        let ok = !checks.iter().any(|c| c.status == Status::Fail);
        reporter.out(&json!({"ok": ok, "checks": list}).to_string());
        return;
    }
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(10);
    for c in checks {
        reporter.out(&format!(
            "{:<width$}  {:<4}  {}",
            c.name,
            c.status.word(),
            c.detail
        ));
        if let Some(fix) = &c.fix {
            reporter.out(&format!("{:<width$}        fix: {fix}", ""));
        }
    }
}
