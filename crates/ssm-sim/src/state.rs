//! State shared by the API, the gateway and the agents: registered instances and the
//! sessions with their tokens, client link and end reason.

use crate::config::{InstanceConfig, SimConfig};
use crate::documents::ResolvedDocument;
use crate::stats::Stats;
use ssm_proto::{ChannelClosed, Message, MessageType};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Frames in flight from the agent to one websocket connection.
pub const LINK_CAPACITY: usize = 256;
/// Client frames queued for the agent before the gateway stops reading the socket.
pub const INBOX_CAPACITY: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EndReason {
    Flag,
    Api,
    IdleTimeout,
    Agent,
}

pub struct SimState {
    pub config: SimConfig,
    pub stats: Stats,
    pub instances: Mutex<Vec<InstanceConfig>>,
    pub sessions: Mutex<HashMap<String, Arc<Session>>>,
    pub gateway_base: Mutex<String>,
    pub calls_per_action: Mutex<HashMap<String, u32>>,
    /// Run Command commands by id.
    pub commands: crate::api::run::Commands,
    /// What this simulator's KMS key material derives from.
    pub kms_secret: [u8; 32],
}

/// Lock a std mutex, recovering the data if a panicking thread poisoned it: the state
/// here stays consistent between statements, and a test should see the real failure.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimState {
    pub fn new(config: SimConfig) -> SimState {
        SimState {
            instances: Mutex::new(config.instances.clone()),
            config,
            stats: Stats::default(),
            sessions: Mutex::new(HashMap::new()),
            gateway_base: Mutex::new(String::new()),
            calls_per_action: Mutex::new(HashMap::new()),
            commands: Default::default(),
            kms_secret: rand::random(),
        }
    }

    pub fn kms(&self) -> crate::kms::Kms<'_> {
        crate::kms::Kms {
            config: &self.config,
            secret: &self.kms_secret,
        }
    }

    pub fn instance(&self, id: &str) -> Option<InstanceConfig> {
        lock(&self.instances).iter().find(|i| i.id == id).cloned()
    }

    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(id).cloned()
    }
}

pub struct Link {
    pub conn: u64,
    pub tx: mpsc::Sender<Vec<u8>>,
}

/// Who started a session: DescribeSessions shows the ARN; the session's tag
/// `aws:ssmmessages:session-id` holds the user id (what own-session policies match).
#[derive(Debug, Clone)]
pub struct Owner {
    pub arn: String,
    pub user_id: String,
}

pub struct Session {
    pub id: String,
    pub target: String,
    pub document: ResolvedDocument,
    pub instance: InstanceConfig,
    pub owner: Owner,
    pub reason: Option<String>,
    pub start_date: SystemTime,
    token: Mutex<Option<String>>,
    link: Mutex<Option<Link>>,
    end: Mutex<Option<(EndReason, SystemTime)>>,
    /// Cancelled when the session ends; every task of the session watches it.
    pub cancel: CancellationToken,
    pub inbox_tx: mpsc::Sender<Vec<u8>>,
    pub inbox_rx: Mutex<Option<mpsc::Receiver<Vec<u8>>>>,
    pub agent_started: AtomicBool,
    pub connections: AtomicU64,
    /// Agent→client bytes handed to websockets, for `cut_after_bytes`.
    pub bytes_to_client: AtomicU64,
    pub cuts_fired: AtomicU64,
    pub last_activity: Mutex<Instant>,
}

impl Session {
    pub fn new(
        id: String,
        target: String,
        document: ResolvedDocument,
        instance: InstanceConfig,
        owner: Owner,
        reason: Option<String>,
        token: String,
    ) -> Session {
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
        Session {
            id,
            target,
            document,
            instance,
            owner,
            reason,
            start_date: SystemTime::now(),
            token: Mutex::new(Some(token)),
            link: Mutex::new(None),
            end: Mutex::new(None),
            cancel: CancellationToken::new(),
            inbox_tx,
            inbox_rx: Mutex::new(Some(inbox_rx)),
            agent_started: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            cuts_fired: AtomicU64::new(0),
            last_activity: Mutex::new(Instant::now()),
        }
    }

    /// Consume the token if it matches: each token opens one connection.
    pub fn take_token(&self, presented: &str) -> bool {
        let mut t = lock(&self.token);
        if t.as_deref() == Some(presented) && !self.is_ended() {
            *t = None;
            true
        } else {
            false
        }
    }

    pub fn set_token(&self, token: String) {
        *lock(&self.token) = Some(token);
    }

    pub fn attach(&self, link: Link) {
        // Replacing the sender drops the previous connection's link, which ends it.
        *lock(&self.link) = Some(link);
    }

    pub fn detach(&self, conn: u64) {
        let mut l = lock(&self.link);
        if l.as_ref().map(|l| l.conn) == Some(conn) {
            *l = None;
        }
    }

    /// Hand a frame to the current connection, waiting while it is full. Without a
    /// connection the frame is lost, as it would be in the service: the sender's
    /// retransmission recovers it.
    pub async fn send_to_client(&self, frame: Vec<u8>) {
        let tx = lock(&self.link).as_ref().map(|l| l.tx.clone());
        if let Some(tx) = tx {
            let _ = tx.send(frame).await;
        }
    }

    pub fn touch(&self) {
        *lock(&self.last_activity) = Instant::now();
    }

    pub fn idle_for(&self) -> std::time::Duration {
        lock(&self.last_activity).elapsed()
    }

    pub fn is_ended(&self) -> bool {
        lock(&self.end).is_some()
    }

    pub fn end_info(&self) -> Option<(EndReason, SystemTime)> {
        *lock(&self.end)
    }

    /// End the session once: record why, tell the client with `channel_closed`, close
    /// its connection and stop the agent. Later calls are no-ops.
    pub async fn end(&self, state: &SimState, reason: EndReason, output: &str) {
        {
            let mut e = lock(&self.end);
            if e.is_some() {
                return;
            }
            *e = Some((reason, SystemTime::now()));
        }
        let s = &state.stats;
        Stats::add(&s.sessions_ended);
        Stats::add(match reason {
            EndReason::Flag => &s.ended_by_flag,
            EndReason::Api => &s.ended_by_api,
            EndReason::IdleTimeout => &s.ended_by_idle_timeout,
            EndReason::Agent => &s.ended_by_agent,
        });
        tracing::debug!(session = %self.id, ?reason, "session ended");
        let frame = self.channel_closed_frame(output, state.config.short_channel_closed);
        self.send_to_client(frame).await;
        *lock(&self.link) = None;
        self.cancel.cancel();
    }

    fn channel_closed_frame(&self, output: &str, short_header: bool) -> Vec<u8> {
        let id = Uuid::new_v4();
        let now = now_millis();
        let body = ChannelClosed {
            message_id: id.to_string(),
            created_date: now.to_string(),
            destination_id: self.target.clone(),
            session_id: self.id.clone(),
            message_type: "channel_closed".into(),
            schema_version: 1,
            output: output.to_string(),
        };
        let msg = Message::new(MessageType::ChannelClosed, 0, 0, 0, body.to_json(), id, now);
        let mut bytes = msg.encode().unwrap_or_default();
        if short_header && bytes.len() >= 120 {
            // The third-party-reported form: no PayloadType field (§3).
            bytes.drain(112..116);
            bytes[..4].copy_from_slice(&112u32.to_be_bytes());
        }
        bytes
    }
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

pub fn add_bytes(counter: &AtomicU64, n: usize) -> u64 {
    counter.fetch_add(n as u64, Ordering::Relaxed) + n as u64
}
