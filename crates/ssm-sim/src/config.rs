//! What a simulator instance is set up with: instances, identity, deny rules, faults,
//! pacing and timeouts. Everything a test wants to vary is here, so that each test builds
//! its own simulator and nothing is shared between tests.

use std::time::Duration;

/// Test credentials every request must be signed with.
/// The bucket every simulator starts with.
pub const DEFAULT_BUCKET: &str = "ssmcp-sim";
pub const ACCESS_KEY_ID: &str = "AKIASSMSIMEXAMPLE000";
pub const SECRET_ACCESS_KEY: &str = "ssm-sim/secret/key/that/is/not/secret00";
pub const ACCOUNT_ID: &str = "123456789012";
pub const DEFAULT_INSTANCE: &str = "i-0123456789abcdef0";
pub const DEFAULT_AGENT_VERSION: &str = "3.3.987.0";

#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub id: String,
    /// `Online`, `ConnectionLost` or `Inactive`. Sessions to a node that is not Online
    /// fail with TargetNotConnected.
    pub ping_status: String,
    pub agent_version: String,
    pub platform_type: String,
    pub platform_name: String,
    pub tags: Vec<(String, String)>,
    /// Commands this instance does not have (e.g. python3): its processes get a PATH
    /// that leaves them out.
    pub missing_commands: Vec<String>,
    /// A quota in miniature: the instance's processes cannot write files larger than
    /// this (RLIMIT_FSIZE; writes past it fail with EFBIG, like ENOSPC on a full disk).
    pub file_size_limit: Option<u64>,
    /// Commands only this instance has (name, shell script), e.g. a `sudo` with the
    /// instance's own policy.
    pub own_commands: Vec<(String, String)>,
    /// A slow instance: Run Command invocations wait this long (InProgress) before the
    /// command starts, as a busy or distant agent does.
    pub command_delay: std::time::Duration,
    /// Sessions to this instance demand KMS encryption with this key, whatever the
    /// account's preference (`SimConfig::kms_key_id`) says.
    pub kms_key_id: Option<String>,
}

impl InstanceConfig {
    pub fn new(id: &str) -> InstanceConfig {
        InstanceConfig {
            id: id.to_string(),
            ping_status: "Online".into(),
            agent_version: DEFAULT_AGENT_VERSION.into(),
            platform_type: "Linux".into(),
            platform_name: "Amazon Linux".into(),
            tags: Vec::new(),
            missing_commands: Vec::new(),
            file_size_limit: None,
            own_commands: Vec::new(),
            command_delay: std::time::Duration::ZERO,
            kms_key_id: None,
        }
    }

    pub fn kms_key(mut self, key: &str) -> Self {
        self.kms_key_id = Some(key.into());
        self
    }

    pub fn slow(mut self, delay: std::time::Duration) -> Self {
        self.command_delay = delay;
        self
    }

    pub fn command(mut self, name: &str, script: &str) -> Self {
        self.own_commands.push((name.into(), script.into()));
        self
    }

    pub fn file_size_limit(mut self, bytes: u64) -> Self {
        self.file_size_limit = Some(bytes);
        self
    }

    pub fn without(mut self, commands: &[&str]) -> Self {
        self.missing_commands
            .extend(commands.iter().map(|c| c.to_string()));
        self
    }

    pub fn agent_version(mut self, v: &str) -> Self {
        self.agent_version = v.into();
        self
    }

    pub fn offline(mut self) -> Self {
        self.ping_status = "ConnectionLost".into();
        self
    }

    pub fn tag(mut self, k: &str, v: &str) -> Self {
        self.tags.push((k.into(), v.into()));
        self
    }
}

/// Who the caller is, as STS would say, and what AWS names in its error messages.
#[derive(Debug, Clone)]
pub struct Identity {
    pub arn: String,
    pub user_id: String,
    /// The name a session id starts with: the user name, or the role session name.
    pub session_prefix: String,
    /// `aws:username`: only IAM users have one.
    pub user_name: Option<String>,
    /// `aws:PrincipalArn`: the user, the role (not the role session), or the federated user.
    pub principal_arn: String,
    /// The access key this caller signs with; every caller shares `SECRET_ACCESS_KEY`.
    pub access_key_id: String,
}

impl Identity {
    pub fn iam_user(name: &str) -> Identity {
        let arn = format!("arn:aws:iam::{ACCOUNT_ID}:user/{name}");
        Identity {
            principal_arn: arn.clone(),
            arn,
            user_id: "AIDASSMSIMUSER000001".into(),
            session_prefix: name.into(),
            user_name: Some(name.into()),
            access_key_id: ACCESS_KEY_ID.into(),
        }
    }

    /// A federated user (GetFederationToken): `${aws:username}` is undefined for it too.
    pub fn federated(name: &str) -> Identity {
        let arn = format!("arn:aws:sts::{ACCOUNT_ID}:federated-user/{name}");
        Identity {
            principal_arn: arn.clone(),
            arn,
            user_id: format!("{ACCOUNT_ID}:{name}"),
            session_prefix: name.into(),
            user_name: None,
            access_key_id: ACCESS_KEY_ID.into(),
        }
    }

    /// An IAM Identity Center (SSO) role session: `${aws:username}` is undefined for it.
    pub fn sso_role(role: &str, user: &str) -> Identity {
        Identity {
            arn: format!("arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/{user}"),
            principal_arn: format!(
                "arn:aws:iam::{ACCOUNT_ID}:role/aws-reserved/sso.amazonaws.com/{role}"
            ),
            user_id: format!("AROASSMSIMROLE00001:{user}"),
            session_prefix: user.into(),
            user_name: None,
            access_key_id: ACCESS_KEY_ID.into(),
        }
    }

    /// The same caller signing with another access key (a second caller in one test).
    pub fn signing_with(mut self, access_key_id: &str) -> Identity {
        self.access_key_id = access_key_id.into();
        self
    }

    /// `iam-user:NAME`, `sso-role:PERMISSION_SET/USER` or `federated:NAME`, as on the
    /// command line. The SSO role gets the name IAM Identity Center gives it.
    pub fn parse(spec: &str) -> Result<Identity, String> {
        let bad = || {
            format!(
                "--identity {spec:?}: expected iam-user:NAME, sso-role:PERMISSION_SET/USER or federated:NAME"
            )
        };
        let (kind, rest) = spec.split_once(':').ok_or_else(bad)?;
        match kind {
            "iam-user" if !rest.is_empty() => Ok(Identity::iam_user(rest)),
            "federated" if !rest.is_empty() => Ok(Identity::federated(rest)),
            "sso-role" => {
                let (set, user) = rest.split_once('/').ok_or_else(bad)?;
                if set.is_empty() || user.is_empty() {
                    return Err(bad());
                }
                Ok(Identity::sso_role(
                    &format!("AWSReservedSSO_{set}_0123456789abcdef"),
                    user,
                ))
            }
            _ => Err(bad()),
        }
    }
}

/// Answer one API action (optionally only for one resource id) with AccessDenied.
#[derive(Debug, Clone)]
pub struct DenyRule {
    /// e.g. `ssm:TerminateSession`.
    pub action: String,
    /// Only deny when the request's target / session id contains this.
    pub resource_contains: Option<String>,
}

impl DenyRule {
    pub fn action(action: &str) -> DenyRule {
        DenyRule {
            action: action.into(),
            resource_contains: None,
        }
    }
}

/// Answer calls of one API action with ThrottlingException, as AWS does when an
/// account calls too fast: the first `skip` calls pass, the next `count` are throttled,
/// later ones pass again.
#[derive(Debug, Clone)]
pub struct Throttle {
    pub action: String,
    pub skip: u32,
    pub count: u32,
}

impl Throttle {
    /// The first `count` calls are throttled.
    pub fn first(action: &str, count: u32) -> Throttle {
        Throttle::after(action, 0, count)
    }

    /// `skip` calls pass, then `count` are throttled.
    pub fn after(action: &str, skip: u32, count: u32) -> Throttle {
        Throttle {
            action: action.into(),
            skip,
            count,
        }
    }
}

/// Faults on one direction of the data channel. Probabilities are in percent and apply to
/// stream data and acknowledgements only: dropping `channel_closed` would model a
/// different failure (a lost connection), which `cut_after_bytes` covers.
#[derive(Debug, Clone, Default)]
pub struct DirectionFaults {
    pub drop_pct: f64,
    pub duplicate_pct: f64,
    /// Hold a message back and deliver it after the next one.
    pub reorder_pct: f64,
    pub delay: Duration,
    pub jitter: Duration,
    /// Cap in bytes per second of frames through the gateway; 0 is unlimited.
    pub bandwidth: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub seed: u64,
    pub to_client: DirectionFaults,
    pub to_agent: DirectionFaults,
    /// Cut the client's websocket when this many agent→client bytes have crossed it,
    /// counted over the whole session; each point fires once.
    pub cut_after_bytes: Vec<u64>,
    /// Close every client websocket this long after it opened, like the service's
    /// connection lifetime limit.
    pub connection_max_age: Option<Duration>,
    /// Flip one bit in the ciphertext of the Nth (from 1) sealed agent message, its
    /// digest recomputed: what only the encryption's integrity check can catch.
    pub tamper_sealed_output: Option<u64>,
}

/// A customer-owned NonInteractiveCommands document, as made with CreateDocument:
/// `command` parameter, and optionally `separateOutputStream` (§8.1).
/// A symmetric KMS key of the account (`crate::kms`).
#[derive(Debug, Clone)]
pub struct KmsKey {
    /// The key id (a UUID), derived from the first alias so that ARNs are stable.
    pub id: String,
    /// Names without the `alias/` prefix.
    pub aliases: Vec<String>,
    pub enabled: bool,
    /// The key's region when it is not the simulator's: calls in this region do not
    /// find it, as KMS keys are regional.
    pub region: Option<String>,
}

impl KmsKey {
    /// An enabled key known as `alias/NAME` (`name` may carry the prefix).
    pub fn new(name: &str) -> KmsKey {
        let name = name.strip_prefix("alias/").unwrap_or(name);
        let h = <sha2::Sha256 as sha2::Digest>::digest(name.as_bytes());
        let id = uuid::Uuid::from_slice(&h[..16]).unwrap_or_default();
        KmsKey {
            id: id.to_string(),
            aliases: vec![name.to_string()],
            enabled: true,
            region: None,
        }
    }

    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }

    pub fn in_region(mut self, region: &str) -> Self {
        self.region = Some(region.into());
        self
    }
}

#[derive(Debug, Clone)]
pub struct CommandDocument {
    pub name: String,
    pub separate_output_stream: bool,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub region: String,
    pub instances: Vec<InstanceConfig>,
    /// EC2 instances Systems Manager does not manage (no agent, or no instance
    /// profile): only the tagging API sees them, with their tags.
    pub unmanaged_instances: Vec<InstanceConfig>,
    pub identity: Identity,
    /// More callers, each known by its own access key (`Identity::signing_with`), for
    /// tests where one caller meets another's sessions.
    pub other_callers: Vec<Identity>,
    /// Identity policies of every caller. Empty: everything is allowed (but `deny`).
    pub policies: Vec<crate::policy::Policy>,
    /// A shortcut: these actions are refused as if no policy allowed them.
    pub deny: Vec<DenyRule>,
    pub throttle: Vec<Throttle>,
    pub faults: Faults,
    /// Pace output as the real agent does (§12): one message per `pace_interval`.
    pub pacing: bool,
    /// The agent's time per output message: its 1 ms sleep with Go's timer costs about
    /// 1.05–1.2 ms on Linux; 1.1 ms by default.
    pub pace_interval: Duration,
    pub idle_timeout: Duration,
    /// How long the agent waits for the HandshakeResponse (15 s in the real agent).
    pub handshake_timeout: Duration,
    /// Send `channel_closed` with the 112-byte header some gateways use (§3).
    pub short_channel_closed: bool,
    /// Reproduce the agent's shell-output UTF-8 quirks (§8.3).
    pub utf8_quirks: bool,
    /// Home directory per instance for command sessions; `None` keeps the process's own.
    pub home_root: Option<std::path::PathBuf>,
    /// Serve https:// and wss:// with a CA made at start (see `Sim::ca_bundle`).
    pub tls: bool,
    /// Customer documents known besides the AWS-owned ones.
    pub documents: Vec<CommandDocument>,
    /// Session Manager preferences demand KMS encryption with this key: shell and
    /// command sessions then handshake with a KMSEncryption action (§6.1, §6.4).
    pub kms_key_id: Option<String>,
    /// Customer documents whose own `kmsKeyId` input demands KMS: (name, key).
    pub document_kms_keys: Vec<(String, String)>,
    /// The account's KMS keys (GenerateDataKey, Decrypt).
    pub kms_keys: Vec<KmsKey>,
    /// Identity policies of every instance's role, which the agent's KMS Decrypt is
    /// checked against. Empty: the role may do everything.
    pub instance_policies: Vec<crate::policy::Policy>,
    /// The agent sends the encryption challenge after a KMS handshake, as agents since
    /// the challenge's introduction do; off models older agents.
    pub kms_challenge: bool,
    /// Delay before a basic-mode port session's destination is connected; input
    /// arriving meanwhile is refused (not acknowledged), forcing client resends.
    pub port_ready_delay: Duration,
    /// Buckets the S3 server starts with.
    pub s3_buckets: Vec<String>,
    /// Buckets in another region than `region` (created too): requests signed for any
    /// other region get 301 PermanentRedirect with `x-amz-bucket-region`, as S3 answers.
    pub s3_bucket_regions: Vec<(String, String)>,
    /// The most one PUT (object or part) may carry: 5 GiB as in S3; lower it to make
    /// tests reach the limit with small files.
    pub s3_max_put: u64,
    /// Where the S3 server keeps objects; `None` is a temporary directory.
    pub s3_root: Option<std::path::PathBuf>,
    /// The network between the client and AWS, one way: every API request and answer,
    /// every websocket frame and S3 request from this machine takes this long (see
    /// `SimConfig::realistic`). Presigned S3 requests (from the instances, in-region)
    /// and the agent's side are not delayed.
    pub latency: Duration,
    /// What StartSession and ResumeSession take inside the service, beyond the network.
    pub start_session_delay: Duration,
    /// What the agent spends on each input message before it reads the next one (it
    /// validates, digests, acks and writes synchronously); zero is free.
    pub input_cost: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            region: "us-east-1".into(),
            instances: vec![InstanceConfig::new(DEFAULT_INSTANCE)],
            unmanaged_instances: Vec::new(),
            identity: Identity::iam_user("alice"),
            other_callers: Vec::new(),
            policies: Vec::new(),
            deny: Vec::new(),
            throttle: Vec::new(),
            faults: Faults::default(),
            pacing: true,
            pace_interval: Duration::from_micros(1100),
            idle_timeout: Duration::from_secs(20 * 60),
            handshake_timeout: Duration::from_secs(15),
            short_channel_closed: false,
            utf8_quirks: true,
            home_root: None,
            port_ready_delay: Duration::ZERO,
            kms_key_id: None,
            document_kms_keys: Vec::new(),
            kms_keys: Vec::new(),
            instance_policies: Vec::new(),
            kms_challenge: true,
            documents: Vec::new(),
            tls: false,
            s3_buckets: vec![DEFAULT_BUCKET.into()],
            s3_bucket_regions: Vec::new(),
            s3_max_put: 5 << 30,
            s3_root: None,
            latency: Duration::ZERO,
            start_session_delay: Duration::ZERO,
            input_cost: Duration::ZERO,
        }
    }
}

/// The realistic profile's numbers (docs/simulator.md, "Timing like a region"): a client
/// 20 ms one way from the region, 150 ms of service time per StartSession, Run Command
/// reaching the agent 500 ms after SendCommand, and 100 µs of agent work per input
/// message. Assumptions, not measurements of AWS: typical of a client in the same
/// continent as its region, and of the agent's upload rate seen through its own code.
pub const REALISTIC_LATENCY: Duration = Duration::from_millis(20);
pub const REALISTIC_START_SESSION: Duration = Duration::from_millis(150);
pub const REALISTIC_COMMAND_DELIVERY: Duration = Duration::from_millis(500);
pub const REALISTIC_INPUT_COST: Duration = Duration::from_micros(100);

impl SimConfig {
    /// Session Manager preferences that demand KMS encryption with a new, enabled key
    /// `alias/NAME`.
    pub fn with_kms_sessions(mut self, name: &str) -> SimConfig {
        let key = KmsKey::new(name);
        self.kms_key_id = Some(format!("alias/{}", key.aliases[0]));
        self.kms_keys.push(key);
        self
    }

    /// The default simulator with the timing of a real region (pacing on).
    pub fn realistic() -> SimConfig {
        SimConfig::default().with_realistic_timing()
    }

    /// This configuration with network latency, session set-up and Run Command
    /// delivery times like a region's.
    pub fn with_realistic_timing(mut self) -> SimConfig {
        self.latency = REALISTIC_LATENCY;
        self.start_session_delay = REALISTIC_START_SESSION;
        self.input_cost = REALISTIC_INPUT_COST;
        for i in &mut self.instances {
            i.command_delay = i.command_delay.max(REALISTIC_COMMAND_DELIVERY);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_from_the_command_line() {
        let sso = Identity::parse("sso-role:Dev/alice@example.com").unwrap();
        assert_eq!(
            sso.arn,
            "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Dev_0123456789abcdef/alice@example.com"
        );
        assert_eq!(sso.user_id, "AROASSMSIMROLE00001:alice@example.com");
        assert_eq!(sso.session_prefix, "alice@example.com");
        assert_eq!(sso.user_name, None);
        let user = Identity::parse("iam-user:bob").unwrap();
        assert_eq!(user.user_name.as_deref(), Some("bob"));
        let fed = Identity::parse("federated:carol").unwrap();
        assert_eq!(fed.user_id, "123456789012:carol");
        for bad in [
            "alice",
            "sso-role:Dev",
            "sso-role:/x",
            "iam-user:",
            "root:x",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad}");
        }
    }
}
