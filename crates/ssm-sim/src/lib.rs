//! ssm-sim: a local stand-in for AWS Systems Manager Session Manager.
//!
//! It serves the SSM JSON API (SigV4-checked) and the data-channel gateway on
//! 127.0.0.1, and runs a simulated agent per session that behaves like the real one
//! (`shared/ssm-protocol.md` §11): real processes in real ptys, real TCP destinations,
//! the agent's reliability rules, pacing, and injectable faults. It depends on
//! `ssm-proto` only — never on the client — so it cannot share the client's bugs.

// The same rules as ssmcp's lib.rs: no panics on what a peer sends, no printing, and
// crate-private items say so.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![deny(clippy::print_stdout, clippy::print_stderr)]
#![warn(unreachable_pub)]

pub mod agent;
pub mod api;
pub mod config;
pub mod documents;
pub mod faults;
pub mod gateway;
pub mod iam;
pub mod kms;
pub mod policy;
pub mod s3;
pub mod state;
pub mod stats;
pub mod tls;

pub use config::{
    DenyRule, DirectionFaults, Faults, Identity, InstanceConfig, SimConfig, Throttle,
};
pub use stats::StatsSnapshot;

use state::{lock, SimState};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running simulator. Dropping it stops its servers.
pub struct Sim {
    state: Arc<SimState>,
    pub api_url: String,
    pub gateway_url: String,
    /// The S3-compatible server (s3s-fs) for the S3 transport.
    pub s3_url: String,
    s3_root: std::path::PathBuf,
    s3_encryption: s3::EncryptionLog,
    _s3_dir: Option<tempfile::TempDir>,
    /// With `tls`: the PEM file of the simulator's CA, for `AWS_CA_BUNDLE`.
    pub ca_bundle: Option<std::path::PathBuf>,
    _ca_dir: Option<tempfile::TempDir>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sim {
    /// Bind ephemeral ports on 127.0.0.1 and start serving.
    pub async fn start(config: SimConfig) -> std::io::Result<Sim> {
        let tls = if config.tls {
            Some(tls::generate().map_err(std::io::Error::other)?)
        } else {
            None
        };
        let mut config = config;
        // The client's network sits in the gateway's frame path as a delay line in
        // each direction: frames keep flowing, each arrives `latency` later.
        config.faults.to_client.delay += config.latency;
        config.faults.to_agent.delay += config.latency;
        let state = Arc::new(SimState::new(config));
        let api = TcpListener::bind("127.0.0.1:0").await?;
        let gw = TcpListener::bind("127.0.0.1:0").await?;
        let (http, ws) = if tls.is_some() {
            ("https", "wss")
        } else {
            ("http", "ws")
        };
        let api_url = format!("{http}://{}", api.local_addr()?);
        let gateway_url = format!("{ws}://{}", gw.local_addr()?);
        *lock(&state.gateway_base) = gateway_url.clone();
        let (ca_dir, ca_bundle) = match &tls {
            Some(t) => {
                let dir = tempfile::tempdir()?;
                let path = dir.path().join("ssm-sim-ca.pem");
                std::fs::write(&path, &t.ca_pem)?;
                (Some(dir), Some(path))
            }
            None => (None, None),
        };
        let (s3_dir, s3_root) = match &state.config.s3_root {
            Some(r) => (None, r.clone()),
            None => {
                let d = tempfile::tempdir()?;
                let r = d.path().to_path_buf();
                (Some(d), r)
            }
        };
        // Plain http even with `tls`: presigned URLs are fetched by commands on the
        // instances, which do not trust the simulator's CA.
        let s3 = TcpListener::bind("127.0.0.1:0").await?;
        let s3_url = format!("http://{}", s3.local_addr()?);
        let s3_encryption = s3::EncryptionLog::default();
        let regions = s3::Regions {
            home: state.config.region.clone(),
            elsewhere: state.config.s3_bucket_regions.clone(),
        };
        let s3_server = s3::serve(
            s3,
            &s3_root,
            &state.config.s3_buckets,
            regions,
            s3_encryption.clone(),
            state.config.s3_max_put,
            state.clone(),
        )
        .await?;
        let acceptor = tls.map(|t| t.acceptor);
        let tasks = vec![
            tokio::spawn(api::serve(api, state.clone(), acceptor.clone())),
            tokio::spawn(gateway::serve(gw, state.clone(), acceptor)),
            tokio::spawn(s3_server),
        ];
        Ok(Sim {
            state,
            api_url,
            gateway_url,
            s3_url,
            s3_root,
            s3_encryption,
            _s3_dir: s3_dir,
            ca_bundle,
            _ca_dir: ca_dir,
            tasks,
        })
    }

    /// The environment of another configured caller (`SimConfig::other_callers`).
    pub fn env_as(&self, caller: &Identity) -> Vec<(String, String)> {
        let mut env = self.env();
        for (k, v) in &mut env {
            if k == "AWS_ACCESS_KEY_ID" {
                *v = caller.access_key_id.clone();
            }
        }
        env
    }

    /// The environment that points a standard AWS client at this simulator.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("AWS_ENDPOINT_URL_SSM".into(), self.api_url.clone()),
            ("AWS_ENDPOINT_URL_STS".into(), self.api_url.clone()),
            ("AWS_ENDPOINT_URL_KMS".into(), self.api_url.clone()),
            ("AWS_ENDPOINT_URL_S3".into(), self.s3_url.clone()),
            (
                "AWS_ENDPOINT_URL_RESOURCE_GROUPS_TAGGING_API".into(),
                self.api_url.clone(),
            ),
            (
                "AWS_ACCESS_KEY_ID".into(),
                self.state.config.identity.access_key_id.clone(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                config::SECRET_ACCESS_KEY.into(),
            ),
            ("AWS_REGION".into(), self.state.config.region.clone()),
            // boto3 (and the AWS CLI v1) read only this one.
            (
                "AWS_DEFAULT_REGION".into(),
                self.state.config.region.clone(),
            ),
        ];
        if let Some(ca) = &self.ca_bundle {
            env.push(("AWS_CA_BUNDLE".into(), ca.display().to_string()));
            // Go programs (the official session-manager-plugin among them) ignore
            // AWS_CA_BUNDLE and read the system roots, which SSL_CERT_FILE replaces.
            env.push(("SSL_CERT_FILE".into(), ca.display().to_string()));
        }
        env
    }

    /// What is left in S3: objects as `bucket/key`, unfinished multipart uploads as
    /// `upload:ID`.
    pub fn s3_leftovers(&self) -> Vec<String> {
        s3::leftovers(&self.s3_root)
    }

    /// Requests that asked for server-side encryption, as `METHOD /bucket/key sse key`.
    pub fn s3_encryption_requests(&self) -> Vec<String> {
        self.s3_encryption
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where the S3 server keeps buckets (one directory each) and upload state.
    pub fn s3_root(&self) -> &std::path::Path {
        &self.s3_root
    }

    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.state.stats.snapshot()
    }

    /// Wait until every started session has ended; false if `limit` passed first.
    pub async fn wait_sessions_closed(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.stats().sessions_open() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn session_ids(&self) -> Vec<String> {
        lock(&self.state.sessions).keys().cloned().collect()
    }

    /// Mark an instance Online or ConnectionLost.
    pub fn set_online(&self, instance: &str, online: bool) {
        for i in lock(&self.state.instances).iter_mut() {
            if i.id == instance {
                i.ping_status = if online { "Online" } else { "ConnectionLost" }.into();
            }
        }
    }

    /// Deliver a raw frame to a session's client as the service would, e.g. a
    /// `pause_publication`.
    pub async fn send_to_client(&self, session_id: &str, frame: Vec<u8>) -> bool {
        match self.state.session(session_id) {
            Some(s) => {
                s.send_to_client(frame).await;
                true
            }
            None => false,
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for s in lock(&self.state.sessions).values() {
            s.cancel.cancel();
        }
    }
}
