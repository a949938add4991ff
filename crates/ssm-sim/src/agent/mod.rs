//! The simulated SSM agent for one session: receives client messages in order (§5.3),
//! performs the handshake (§6), runs the session plugin and ends the session (§9).

pub mod channel;
pub mod pace;
pub mod port;
pub mod shell;

use crate::documents::SessionType;
use crate::state::{lock, now_millis, EndReason, Session, SimState};
use crate::stats::Stats;
use channel::{Outgoing, RESEND_TICK};
use ssm_proto::kms::{
    self, EncryptionChallenge, KmsEncryptionRequest, KmsEncryptionResponse, SessionKeys, Side,
};
use ssm_proto::payload::{ACTION_KMS_ENCRYPTION, ACTION_SESSION_TYPE};
use ssm_proto::version::agent_compare;
use ssm_proto::{
    AcknowledgeContent, Flag, HandshakeComplete, HandshakeRequest, HandshakeResponse, Message,
    MessageType, PayloadType, RequestedClientAction, SessionTypeRequest, SizeData,
};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

/// Out-of-order client messages the agent keeps (§5.4).
const REORDER_CAPACITY: usize = 100_000;
/// The agent's wait for its output to be acknowledged before closing (§9).
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

/// How a plugin took one input message: only `Ok` is acknowledged (§5.3).
#[derive(Debug)]
pub enum InputResult {
    Ok,
    NotReady,
    Failed(String),
}

enum Plugin {
    Basic(port::Basic),
    Mux(port::Mux),
    Pty(shell::Pty),
    Exec(shell::Exec),
}

enum Phase {
    Handshaking {
        deadline: Instant,
        started: Instant,
    },
    /// A KMS handshake's challenge is out: the client must return these bytes sealed
    /// with its own key (§6.4).
    Challenging {
        deadline: Instant,
        started: Instant,
        challenge: Vec<u8>,
        client_version: String,
    },
    Running(Plugin),
    /// The plugin finished; waiting up to 2 s for the client's last acks.
    Closing {
        deadline: Instant,
        output: String,
    },
}

/// How much of a late timer wake-up the input cost's schedule makes up (see `input_cost`).
const INPUT_CATCH_UP: Duration = Duration::from_millis(5);

struct Agent {
    state: Arc<SimState>,
    session: Arc<Session>,
    out: Arc<Outgoing>,
    expected: i64,
    reorder: BTreeMap<i64, Message>,
    phase: Phase,
    done_tx: mpsc::Sender<String>,
    /// Set when the client's TerminateSession flag arrives.
    terminate: bool,
    /// What handling input costs (`SimConfig::input_cost`), as a schedule.
    input: Option<pace::Pacer>,
}

pub async fn run(state: Arc<SimState>, session: Arc<Session>) {
    let Some(mut inbox) = lock(&session.inbox_rx).take() else {
        return;
    };
    let out = Arc::new(Outgoing::new(state.clone(), session.clone()));
    tokio::spawn(resend_loop(out.clone(), session.clone()));
    tokio::spawn(idle_watchdog(state.clone(), session.clone()));
    let (done_tx, mut done_rx) = mpsc::channel::<String>(4);
    let mut agent = Agent {
        state: state.clone(),
        session: session.clone(),
        out,
        expected: 0,
        reorder: BTreeMap::new(),
        phase: Phase::Handshaking {
            deadline: Instant::now() + state.config.handshake_timeout,
            started: Instant::now(),
        },
        done_tx,
        terminate: false,
        input: (!state.config.input_cost.is_zero())
            .then(|| pace::Pacer::with_catch_up(state.config.input_cost, INPUT_CATCH_UP)),
    };
    if agent.handshakes() {
        agent.send_handshake_request().await;
    } else if let Err(e) = agent.start_plugin(None).await {
        session.end(&state, EndReason::Agent, &e).await;
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = session.cancel.cancelled() => break,
            frame = inbox.recv() => {
                let Some(frame) = frame else { break };
                agent.on_frame(frame).await;
                if agent.terminate {
                    session.end(&state, EndReason::Flag, "").await;
                    break;
                }
            }
            output = done_rx.recv() => {
                if let Phase::Running(_) | Phase::Handshaking { .. } | Phase::Challenging { .. } =
                    agent.phase
                {
                    agent.phase = Phase::Closing {
                        deadline: Instant::now() + CLOSE_DRAIN,
                        output: output.unwrap_or_default(),
                    };
                }
            }
            _ = tick.tick() => {
                match &agent.phase {
                    Phase::Handshaking { deadline, .. } | Phase::Challenging { deadline, .. }
                        if Instant::now() > *deadline =>
                    {
                        session.end(&state, EndReason::Agent, "Handshake timed out.").await;
                        break;
                    }
                    Phase::Closing { deadline, output } => {
                        let drained = agent.out.unacked() == 0;
                        if drained || Instant::now() > *deadline {
                            if !drained {
                                Stats::add(&state.stats.unacked_at_end);
                            }
                            let output = output.clone();
                            session.end(&state, EndReason::Agent, &output).await;
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    // Dropping the plugin kills processes and closes destination sockets.
    session.cancel.cancel();
}

async fn resend_loop(out: Arc<Outgoing>, session: Arc<Session>) {
    let mut tick = tokio::time::interval(RESEND_TICK);
    loop {
        tokio::select! {
            _ = session.cancel.cancelled() => return,
            _ = tick.tick() => out.resend_tick().await,
        }
    }
}

/// The service ends sessions that carry no data for the idle timeout (§9).
async fn idle_watchdog(state: Arc<SimState>, session: Arc<Session>) {
    let limit = state.config.idle_timeout;
    let step = (limit / 10).clamp(Duration::from_millis(20), Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = session.cancel.cancelled() => return,
            _ = tokio::time::sleep(step) => {
                if session.idle_for() > limit {
                    session.end(&state, EndReason::IdleTimeout,
                        "Your session timed out due to inactivity and has been terminated.").await;
                    return;
                }
            }
        }
    }
}

impl Agent {
    /// KMS applies to every type but Port (§6.1). The most specific setting wins: the
    /// instance's, the document's own `kmsKeyId`, then the account's preferences.
    fn kms_key(&self) -> Option<&str> {
        if self.session.document.session_type == SessionType::Port {
            return None;
        }
        let cfg = &self.state.config;
        self.session
            .instance
            .kms_key_id
            .as_deref()
            .or_else(|| {
                cfg.document_kms_keys
                    .iter()
                    .find(|(d, _)| *d == self.session.document.name)
                    .map(|(_, k)| k.as_str())
            })
            .or(cfg.kms_key_id.as_deref())
    }

    fn handshakes(&self) -> bool {
        self.session.document.session_type.requires_handshake() || self.kms_key().is_some()
    }

    async fn send_handshake_request(&self) {
        let doc = &self.session.document;
        let mut actions = vec![RequestedClientAction {
            action_type: ACTION_SESSION_TYPE.into(),
            action_parameters: serde_json::to_value(SessionTypeRequest {
                session_type: doc.session_type.plugin_name().into(),
                properties: doc.properties.clone(),
            })
            .unwrap_or_default(),
        }];
        if let Some(key) = self.kms_key() {
            actions.push(RequestedClientAction {
                action_type: ssm_proto::payload::ACTION_KMS_ENCRYPTION.into(),
                action_parameters: serde_json::to_value(KmsEncryptionRequest {
                    kms_key_id: key.to_string(),
                    challenge: Some(kms::b64(&rand::random::<[u8; 16]>())),
                })
                .unwrap_or_default(),
            });
        }
        let req = HandshakeRequest {
            agent_version: self.session.instance.agent_version.clone(),
            requested_client_actions: actions,
        };
        self.out
            .send(PayloadType::HandshakeRequest, req.to_json())
            .await;
    }

    async fn send_ack(&self, msg: &Message) {
        let ack = Message::ack_for(msg, Uuid::new_v4(), now_millis());
        if let Ok(frame) = ack.encode() {
            Stats::add(&self.state.stats.acks_sent);
            self.session.send_to_client(frame).await;
        }
    }

    async fn on_frame(&mut self, frame: Vec<u8>) {
        let stats = &self.state.stats;
        let msg = match Message::decode(&frame) {
            Ok(m) => m,
            Err(_) => {
                Stats::add(&stats.undecodable_frames);
                return;
            }
        };
        // The agent's own checks: a failing message is dropped without an ack (§3).
        if let Err(e) = msg.validate_header() {
            Stats::add(match e {
                ssm_proto::ValidationError::ZeroCreatedDate => &stats.zero_created_date,
                _ => &stats.bad_header,
            });
            return;
        }
        // Stricter than the agent: count what it would silently accept.
        if msg.header_length != ssm_proto::message::HEADER_LENGTH {
            Stats::add(&stats.bad_header);
        }
        if !msg.digest_matches() {
            Stats::add(&stats.bad_digest);
        }
        if msg.payload_length as usize != msg.payload.len() {
            Stats::add(&stats.payload_length_mismatch);
        }
        match msg.message_type {
            MessageType::Acknowledge => {
                self.out.set_paused(false);
                if let Ok(a) = serde_json::from_slice::<AcknowledgeContent>(&msg.payload) {
                    if !self.out.acknowledge(a.acknowledged_message_sequence_number) {
                        Stats::add(&stats.ack_for_unknown_sequence);
                    }
                }
            }
            MessageType::InputStreamData => {
                Stats::add(&stats.client_stream_messages);
                self.out.set_paused(false);
                self.session.touch();
                self.on_stream_data(msg).await;
                self.input_cost().await;
            }
            MessageType::PausePublication => self.out.set_paused(true),
            MessageType::StartPublication => self.out.set_paused(false),
            _ => {} // unknown types: ignored, not acknowledged
        }
    }

    /// The real agent handles each input message before it reads the next (validate,
    /// digest, ack, write), so its inbox drains at a bounded rate. Charged by schedule:
    /// a sleep per message would round up to whole milliseconds.
    async fn input_cost(&mut self) {
        let Some(pacer) = &mut self.input else {
            return;
        };
        let now = Instant::now();
        if let Some(at) = pacer.after_send(now.into_std()) {
            let at = Instant::from_std(at);
            if at.duration_since(now) >= std::time::Duration::from_millis(1) {
                tokio::time::sleep_until(at).await;
            }
        }
    }

    async fn on_stream_data(&mut self, msg: Message) {
        let seq = msg.sequence_number;
        match seq.cmp(&self.expected) {
            Ordering::Less => {
                // Duplicates are re-acknowledged (§5.3).
                Stats::add(&self.state.stats.duplicate_client_messages);
                self.send_ack(&msg).await;
            }
            Ordering::Greater => {
                if self.reorder.len() < REORDER_CAPACITY && !self.reorder.contains_key(&seq) {
                    self.send_ack(&msg).await;
                    self.reorder.insert(seq, msg);
                } else if self.reorder.contains_key(&seq) {
                    Stats::add(&self.state.stats.duplicate_client_messages);
                    self.send_ack(&msg).await;
                }
            }
            Ordering::Equal => {
                // Acknowledged before it is handled, as the agent's data channel does,
                // so the ack leaves ahead of anything handling it sends (the
                // HandshakeComplete a HandshakeResponse causes, a command's output).
                // A handler that cannot take input yet (a port still dialling) gets
                // neither ack nor advance, and the client resends (§5.3).
                if !self.ready().await {
                    return;
                }
                self.send_ack(&msg).await;
                match self.process(&msg).await {
                    InputResult::Ok => {}
                    InputResult::NotReady | InputResult::Failed(_) => {
                        tracing::debug!(session = %self.session.id, "input {seq} acknowledged but not handled");
                        return;
                    }
                }
                self.expected += 1;
                while let Some(next) = self.reorder.remove(&self.expected) {
                    if let InputResult::NotReady = self.process(&next).await {
                        self.reorder.insert(self.expected, next);
                        break;
                    }
                    self.expected += 1;
                }
            }
        }
    }

    /// Whether the session's handler can take the next input now.
    async fn ready(&self) -> bool {
        match &self.phase {
            Phase::Running(Plugin::Basic(p)) => p.ready().await,
            _ => true,
        }
    }

    async fn process(&mut self, msg: &Message) -> InputResult {
        let pt = PayloadType::from_u32(msg.payload_type);
        match (&self.phase, pt) {
            (Phase::Handshaking { started, .. }, PayloadType::HandshakeResponse) => {
                let started = *started;
                return self.on_handshake_response(&msg.payload, started).await;
            }
            (Phase::Challenging { .. }, PayloadType::EncChallengeResponse) => {
                return self.on_challenge_response(&msg.payload).await;
            }
            (Phase::Handshaking { .. } | Phase::Challenging { .. }, _) => {
                // Acked and silently discarded until HandshakeComplete is sent (§6.2).
                Stats::add(&self.state.stats.data_before_handshake_complete);
                return InputResult::Ok;
            }
            _ => {}
        }
        let Phase::Running(plugin) = &mut self.phase else {
            return InputResult::Ok;
        };
        match pt {
            PayloadType::Output => {
                let opened;
                let input = match self.out.sealer() {
                    None => &msg.payload,
                    Some(s) => match s.open(&msg.payload) {
                        Ok(plain) => {
                            opened = plain;
                            &opened
                        }
                        Err(e) => {
                            // The agent cannot go on with a stream it cannot read.
                            Stats::add(&self.state.stats.undecryptable_client_messages);
                            let why = format!("Error decrypting encrypted text, {e}");
                            let _ = self.done_tx.try_send(why.clone());
                            return InputResult::Failed(why);
                        }
                    },
                };
                match plugin {
                    Plugin::Basic(p) => p.input(input).await,
                    Plugin::Mux(p) => p.input(input).await,
                    Plugin::Pty(p) => p.input(input).await,
                    Plugin::Exec(p) => p.input(input),
                }
            }
            PayloadType::Size => {
                if let (Plugin::Pty(p), Ok(size)) =
                    (plugin, serde_json::from_slice::<SizeData>(&msg.payload))
                {
                    p.resize(size);
                }
                InputResult::Ok
            }
            PayloadType::Flag => {
                match (Flag::decode(&msg.payload), plugin) {
                    // Shell types ignore flags (§1.3); port modes end on TerminateSession.
                    (Some(Flag::TerminateSession), Plugin::Basic(_) | Plugin::Mux(_)) => {
                        self.terminate = true
                    }
                    (Some(Flag::DisconnectToPort), Plugin::Basic(p)) => p.disconnect().await,
                    _ => {}
                }
                InputResult::Ok
            }
            PayloadType::HandshakeResponse | PayloadType::EncChallengeResponse => {
                Stats::add(&self.state.stats.unsolicited_handshake_response);
                InputResult::Ok
            }
            _ => InputResult::Ok, // unknown payload types are acked and ignored (§4.2)
        }
    }

    async fn on_handshake_response(&mut self, payload: &[u8], started: Instant) -> InputResult {
        let Ok(resp) = serde_json::from_slice::<HandshakeResponse>(payload) else {
            return self
                .fail_handshake("Handshake response is not valid JSON.")
                .await;
        };
        let succeeded = |t: &str| {
            resp.processed_client_actions
                .iter()
                .any(|a| a.action_type == t && a.action_status == 1)
        };
        if !succeeded(ACTION_SESSION_TYPE) {
            return self
                .fail_handshake("Client failed the SessionType handshake action.")
                .await;
        }
        if let Some(key) = self.kms_key().map(str::to_string) {
            if let Err(why) = self.set_up_encryption(&resp, &key) {
                return self.fail_handshake(&why).await;
            }
            if self.state.config.kms_challenge {
                return self.send_challenge(started, resp.client_version).await;
            }
        }
        self.complete_handshake(started, &resp.client_version).await
    }

    /// The agent's side of the KMSEncryption action: Decrypt the client's data key as
    /// the instance role, with the session's encryption context (§6.4).
    fn set_up_encryption(&self, resp: &HandshakeResponse, key: &str) -> Result<(), String> {
        let action = resp
            .processed_client_actions
            .iter()
            .find(|a| a.action_type == ACTION_KMS_ENCRYPTION && a.action_status == 1)
            .ok_or("Client failed the KMSEncryption handshake action.")?;
        let result: KmsEncryptionResponse = serde_json::from_value(action.action_result.clone())
            .map_err(|e| format!("Fetching data key failed: {e}"))?;
        let context = vec![
            (kms::CONTEXT_SESSION_ID.to_string(), self.session.id.clone()),
            (
                kms::CONTEXT_TARGET_ID.to_string(),
                self.session.target.clone(),
            ),
        ];
        let plain = self
            .state
            .kms()
            .decrypt_as_instance(&self.session.target, &result.cipher_text_key, &context)
            .map_err(|e| {
                format!("Fetching data key failed: Unable to retrieve data key, Error when decrypting data key {}: {} (key {key})", e.code, e.message)
            })?;
        let keys = SessionKeys::new(&plain, Side::Agent)
            .map_err(|e| format!("Fetching data key failed: {e}"))?;
        self.out
            .encrypt_with(kms::Sealer::new(keys, rand::random()));
        Stats::add(&self.state.stats.kms_sessions);
        Ok(())
    }

    /// 64 random bytes sealed with the agent's key; the client must open them and seal
    /// them again with its own.
    async fn send_challenge(&mut self, started: Instant, client_version: String) -> InputResult {
        let challenge: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
        let Some(sealer) = self.out.sealer() else {
            return self.fail_handshake("Encryption is not set up.").await;
        };
        let request = EncryptionChallenge {
            challenge: sealer.seal(&challenge),
        };
        self.phase = Phase::Challenging {
            deadline: Instant::now() + self.state.config.handshake_timeout,
            started,
            challenge,
            client_version,
        };
        self.out
            .send(PayloadType::EncChallengeRequest, request.to_json())
            .await;
        InputResult::Ok
    }

    async fn on_challenge_response(&mut self, payload: &[u8]) -> InputResult {
        let Phase::Challenging {
            started,
            challenge,
            client_version,
            ..
        } = std::mem::replace(
            &mut self.phase,
            // Until the plugin runs: a failure below still reaches the client as the
            // session's closing output.
            Phase::Handshaking {
                deadline: Instant::now() + self.state.config.handshake_timeout,
                started: Instant::now(),
            },
        )
        else {
            return InputResult::Ok;
        };
        let answered = serde_json::from_slice::<EncryptionChallenge>(payload)
            .ok()
            .and_then(|r| self.out.sealer().and_then(|s| s.open(&r.challenge).ok()));
        if answered.as_deref() != Some(challenge.as_slice()) {
            return self
                .fail_handshake("Encryption challenge does not match!")
                .await;
        }
        Stats::add(&self.state.stats.kms_challenges_passed);
        self.complete_handshake(started, &client_version).await
    }

    async fn complete_handshake(&mut self, started: Instant, client_version: &str) -> InputResult {
        let customer_message = if self.out.sealer().is_some() {
            "This session is encrypted using AWS KMS.".to_string()
        } else {
            String::new()
        };
        let complete = HandshakeComplete {
            handshake_time_to_complete: started.elapsed().as_nanos() as i64,
            customer_message,
        };
        self.out
            .send(PayloadType::HandshakeComplete, complete.to_json())
            .await;
        // The plugin starts at once: data may follow HandshakeComplete immediately.
        match self.start_plugin(Some(client_version)).await {
            Ok(()) => InputResult::Ok,
            Err(e) => {
                let _ = self.done_tx.try_send(e.clone());
                InputResult::Failed(e)
            }
        }
    }

    async fn fail_handshake(&mut self, why: &str) -> InputResult {
        let _ = self.done_tx.try_send(why.to_string());
        InputResult::Failed(why.to_string())
    }

    async fn start_plugin(&mut self, client_version: Option<&str>) -> Result<(), String> {
        let doc = &self.session.document;
        let cfg = &self.state.config;
        let cancel = self.session.cancel.clone();
        let done = self.done_tx.clone();
        let out = self.out.clone();
        let home = cfg.home_root.as_ref().map(|r| r.join(&self.session.target));
        if let Some(h) = &home {
            std::fs::create_dir_all(h).map_err(|e| e.to_string())?;
        }
        let penv = shell::ProcessEnv {
            path: shell::instance_path(&self.session.instance, cfg.home_root.as_deref())?,
            home,
            file_size_limit: self.session.instance.file_size_limit,
        };
        let version = client_version.unwrap_or_default();
        let plugin = match doc.session_type {
            SessionType::Port => {
                let local = doc.properties["type"] == "LocalPortForwarding";
                let agent = self.session.instance.agent_version.as_str();
                // §7.2: smux iff LocalPortForwarding and client ≥ 1.1.70 — on agents
                // that have it (3.0.222.0, RELEASENOTES). Keepalive stays on unless the
                // client is newer than 1.2.331.0, a rule agents have since 3.1.1446.0.
                let agent_has_mux = agent_compare(agent, "3.0.222.0") != Ordering::Less;
                if local && agent_has_mux && agent_compare(version, "1.1.70") != Ordering::Less {
                    let agent_can_disable = agent_compare(agent, "3.1.1446.0") != Ordering::Less;
                    let keepalive = !agent_can_disable
                        || agent_compare(version, "1.2.331.0") != Ordering::Greater;
                    Plugin::Mux(port::Mux::start(
                        out,
                        &doc.properties,
                        keepalive,
                        done,
                        cancel,
                    ))
                } else {
                    Plugin::Basic(port::Basic::start(
                        out,
                        &doc.properties,
                        done,
                        cancel,
                        cfg.port_ready_delay,
                    ))
                }
            }
            SessionType::StandardStream | SessionType::InteractiveCommands => {
                Plugin::Pty(shell::Pty::start(
                    out,
                    doc.command.as_deref(),
                    penv,
                    cfg.utf8_quirks,
                    done,
                    cancel,
                )?)
            }
            SessionType::NonInteractiveCommands => Plugin::Exec(shell::Exec::start(
                out,
                doc.command.as_deref().unwrap_or_default(),
                doc.separate_output_stream,
                penv,
                cfg.utf8_quirks,
                done,
                cancel,
            )?),
        };
        self.phase = Phase::Running(plugin);
        Ok(())
    }
}
