//! The agent's outgoing half of the data channel (§5): sequence numbers from 0 with SYN
//! on the first, a buffer of unacknowledged messages, and retransmission of the *head
//! only* on the 100 ms tick with the §5.5 RTO — the real agent's behaviour, deliberately
//! including its slowness after losses, so client tests meet it.

use crate::state::{lock, now_millis, Session, SimState};
use crate::stats::Stats;
use ssm_proto::kms::{is_sealed, Sealer, Side, NONCE_LEN};
use ssm_proto::message::FLAG_SYN;
use ssm_proto::{Message, MessageType, PayloadType};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

pub const RESEND_TICK: Duration = Duration::from_millis(100);
const INITIAL_RTO: Duration = Duration::from_millis(200);
const INITIAL_SRTT: f64 = 0.100;
const MAX_RTO: f64 = 1.0;
const CLOCK_GRANULARITY: f64 = 0.010;
/// The agent stops tracking (never retransmits) messages beyond this many (§5.4).
const OUTGOING_CAPACITY: usize = 100_000;

struct Pending {
    seq: i64,
    frame: Vec<u8>,
    last_sent: Instant,
}

struct OutState {
    next_seq: i64,
    buffer: VecDeque<Pending>,
    srtt: f64,
    rttvar: f64,
    rto: Duration,
}

pub struct Outgoing {
    state: Arc<SimState>,
    session: Arc<Session>,
    inner: Mutex<OutState>,
    paused: AtomicBool,
    resumed: Notify,
    /// One schedule per session, shared by its output readers (the agent paces each
    /// session, not each reader).
    pacer: Mutex<super::pace::Pacer>,
    /// The session's keys once a KMS handshake set them; from then on Output, StdErr
    /// and ExitCode leave sealed (§6.4).
    cipher: OnceLock<Sealer>,
    /// Sealed messages sent, for `Faults::tamper_sealed_output`.
    sealed_sent: AtomicU64,
}

impl Outgoing {
    pub fn new(state: Arc<SimState>, session: Arc<Session>) -> Outgoing {
        let interval = state.config.pace_interval;
        Outgoing {
            state,
            session,
            inner: Mutex::new(OutState {
                next_seq: 0,
                buffer: VecDeque::new(),
                srtt: INITIAL_SRTT,
                rttvar: 0.0,
                rto: INITIAL_RTO,
            }),
            paused: AtomicBool::new(false),
            resumed: Notify::new(),
            pacer: Mutex::new(super::pace::Pacer::new(interval)),
            cipher: OnceLock::new(),
            sealed_sent: AtomicU64::new(0),
        }
    }

    /// Seal data payloads from now on.
    pub fn encrypt_with(&self, sealer: Sealer) {
        let _ = self.cipher.set(sealer);
    }

    pub fn sealer(&self) -> Option<&Sealer> {
        self.cipher.get()
    }

    /// The payload as it goes on the wire: sealed when the session is encrypted and the
    /// type is one the agent seals, with one bit flipped if a fault says so.
    fn wire_payload(&self, payload_type: PayloadType, payload: Vec<u8>) -> Vec<u8> {
        let Some(sealer) = self.cipher.get() else {
            return payload;
        };
        if !is_sealed(payload_type, Side::Agent) {
            return payload;
        }
        let mut sealed = sealer.seal(&payload);
        let n = self.sealed_sent.fetch_add(1, Ordering::SeqCst) + 1;
        if self.state.config.faults.tamper_sealed_output == Some(n) {
            // A ciphertext bit past the nonce: only the tag can tell.
            let i = NONCE_LEN.min(sealed.len().saturating_sub(1));
            sealed[i] ^= 0x01;
        }
        sealed
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        if !paused {
            self.resumed.notify_waiters();
        }
    }

    /// Output readers stop while the channel is paused (`IsActive()` false).
    pub async fn wait_active(&self) {
        loop {
            let notified = self.resumed.notified();
            if !self.paused.load(Ordering::SeqCst) || self.session.cancel.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = self.session.cancel.cancelled() => return,
            }
        }
    }

    /// One output message per `pace_interval` on average, as every official sender
    /// loop's 1 ms sleep makes it (§12; see `pace.rs`).
    pub async fn pace(&self) {
        if self.state.config.pacing {
            let until = lock(&self.pacer).after_send(std::time::Instant::now());
            if let Some(at) = until {
                tokio::time::sleep_until(at.into()).await;
            }
        }
    }

    /// Number, remember and transmit one `output_stream_data` message.
    pub async fn send(&self, payload_type: PayloadType, payload: Vec<u8>) {
        if payload.is_empty() && payload_type == PayloadType::Output {
            return; // the agent never sends empty output (§8.3)
        }
        let payload = self.wire_payload(payload_type, payload);
        let frame = {
            let mut st = lock(&self.inner);
            let seq = st.next_seq;
            st.next_seq += 1;
            let flags = if seq == 0 { FLAG_SYN } else { 0 };
            let msg = Message::new(
                MessageType::OutputStreamData,
                seq,
                flags,
                payload_type.as_u32(),
                payload,
                Uuid::new_v4(),
                now_millis(),
            );
            let frame = msg.encode().unwrap_or_default();
            Stats::add(&self.state.stats.agent_stream_messages);
            if st.buffer.len() < OUTGOING_CAPACITY {
                st.buffer.push_back(Pending {
                    seq,
                    frame: frame.clone(),
                    last_sent: Instant::now(),
                });
            }
            frame
        };
        self.session.touch();
        if !self.paused.load(Ordering::SeqCst) {
            self.session.send_to_client(frame).await;
        }
    }

    /// Apply an acknowledgement: drop the first buffered message with that sequence
    /// number and fold the RTT sample into the RTO (§5.5). False only for a sequence
    /// number never sent.
    pub fn acknowledge(&self, seq: i64) -> bool {
        let mut st = lock(&self.inner);
        let Some(pos) = st.buffer.iter().position(|p| p.seq == seq) else {
            // Already acknowledged: a client acks every copy of a message this side
            // resent, so the second ack crossing the first is correct. Only a number
            // never sent is the client's mistake.
            return seq < st.next_seq;
        };
        let Some(p) = st.buffer.remove(pos) else {
            return false;
        };
        let r = p.last_sent.elapsed().as_secs_f64();
        st.rttvar = 0.75 * st.rttvar + 0.25 * (st.srtt - r).abs();
        st.srtt = 0.875 * st.srtt + 0.125 * r;
        let rto = (st.srtt + (4.0 * st.rttvar).max(CLOCK_GRANULARITY)).min(MAX_RTO);
        st.rto = Duration::from_secs_f64(rto);
        true
    }

    pub fn unacked(&self) -> usize {
        lock(&self.inner).buffer.len()
    }

    /// One scheduler tick: resend the oldest unacknowledged message if it timed out.
    pub async fn resend_tick(&self) {
        if self.paused.load(Ordering::SeqCst) {
            return;
        }
        let frame = {
            let mut st = lock(&self.inner);
            let rto = st.rto;
            match st.buffer.front_mut() {
                Some(head) if head.last_sent.elapsed() > rto => {
                    head.last_sent = Instant::now();
                    Some(head.frame.clone())
                }
                _ => None,
            }
        };
        if let Some(frame) = frame {
            Stats::add(&self.state.stats.agent_retransmissions);
            self.session.send_to_client(frame).await;
        }
    }

    /// Wait (at most `limit`) for the client to acknowledge everything, as the agent
    /// does for 2 s before it closes the channel (§9).
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.unacked() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.unacked() == 0
    }
}
