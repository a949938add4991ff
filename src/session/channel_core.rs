//! The reliable channel's state machine, with no I/O: no sockets, no clocks (time is
//! passed in), no randomness (message ids come from a seed the driver picks). The
//! tokio task in `channel.rs` is a thin driver around it, as quinn is around
//! quinn-proto: it feeds frames in with `on_frame`, asks for frames to write with
//! `poll_transmit`, for data to hand up with `poll_deliver`, sleeps until
//! `poll_timeout` to call `handle_timeout`, and calls `on_resumed` after a new socket.
//!
//! Rules (docs/protocol.md, "Reliability"): our messages are numbered from 0 and kept
//! until acknowledged (`reliable::Reliable` decides when to resend and how much may be
//! in flight); every agent data message is acknowledged, duplicates too; early ones
//! are kept (up to `EARLY_CAPACITY`) and handed up in order; `pause_publication` stops
//! new sends and resends, never acks.

use super::reliable::{Reliable, WireStats};
use bytes::Bytes;
use ssm_proto::{AcknowledgeContent, ChannelClosed, Message, MessageType, PayloadType};
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;
use uuid::Uuid;

/// Out-of-order agent messages kept (beyond this they are dropped unacked, and the
/// agent resends them).
pub(crate) const EARLY_CAPACITY: usize = 4096;

/// A frame for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transmit {
    /// A data message (first copy or resend); the driver tells the core whether the
    /// writer took it (`queued`, `not_queued`).
    Data { seq: i64, frame: Bytes },
    /// An acknowledgement: if it is lost, the agent resends and we ack again.
    Ack(Bytes),
}

/// What the agent sent, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    Data(PayloadType, Vec<u8>),
    /// The service closed the channel, with its reason text; nothing follows.
    Closed(String),
}

/// Where message ids and creation times come from: a seed and a wall clock anchored to
/// an `Instant`, both chosen by the driver.
struct Stamps {
    seed: u128,
    issued: u128,
    start: Instant,
    start_millis: u64,
}

impl Stamps {
    fn id(&mut self) -> Uuid {
        self.issued += 1;
        Uuid::from_u128(self.seed.wrapping_add(self.issued))
    }

    fn millis(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.start).as_millis();
        self.start_millis
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

pub(crate) struct Core {
    next_seq: i64,
    reliable: Reliable,
    /// The next agent sequence number to hand up.
    expected: i64,
    early: BTreeMap<i64, Message>,
    paused: bool,
    closed: bool,
    transmit: VecDeque<Transmit>,
    deliver: VecDeque<Delivery>,
    stamps: Stamps,
}

impl Core {
    /// `id_seed`: message ids are this plus a counter (unique within the session, which
    /// is all the agent needs). `start_millis`: the wall clock at `start`, for the
    /// messages' creation dates.
    pub(crate) fn new(
        window_bytes: usize,
        wire: WireStats,
        id_seed: u128,
        start: Instant,
        start_millis: u64,
    ) -> Core {
        Core {
            next_seq: 0,
            reliable: Reliable::new(window_bytes, wire),
            expected: 0,
            early: BTreeMap::new(),
            paused: false,
            closed: false,
            transmit: VecDeque::new(),
            deliver: VecDeque::new(),
            stamps: Stamps {
                seed: id_seed,
                issued: 0,
                start,
                start_millis,
            },
        }
    }

    /// Whether a new message may be sent now (the window has room, no pause).
    pub(crate) fn can_send(&self) -> bool {
        !self.paused && !self.closed && self.reliable.can_send()
    }

    /// Number and frame one message of ours; it is kept until acknowledged.
    pub(crate) fn send(&mut self, payload_type: PayloadType, payload: Vec<u8>, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let len = payload.len();
        let msg = Message::new(
            MessageType::InputStreamData,
            seq,
            0,
            payload_type.as_u32(),
            payload,
            self.stamps.id(),
            self.stamps.millis(now),
        );
        let frame = Bytes::from(msg.encode().unwrap_or_default());
        self.reliable.sent_new(seq, frame.clone(), len);
        self.transmit.push_back(Transmit::Data { seq, frame });
    }

    /// One frame from the socket. Frames that do not decode or fail the plugin's checks
    /// are dropped unacked (the agent resends them).
    pub(crate) fn on_frame(&mut self, frame: &[u8], now: Instant) {
        if self.closed {
            return;
        }
        let Ok(msg) = Message::decode(frame) else {
            tracing::debug!("dropping undecodable frame of {} bytes", frame.len());
            return;
        };
        if msg.validate().is_err() {
            tracing::debug!(
                seq = msg.sequence_number,
                "dropping invalid {}",
                msg.message_type
            );
            return;
        }
        match msg.message_type {
            MessageType::Acknowledge => {
                if let Ok(a) = serde_json::from_slice::<AcknowledgeContent>(&msg.payload) {
                    self.reliable
                        .acked(a.acknowledged_message_sequence_number, now);
                }
            }
            MessageType::OutputStreamData => self.on_data(msg, now),
            MessageType::ChannelClosed => {
                let body: ChannelClosed = serde_json::from_slice(&msg.payload).unwrap_or_default();
                self.closed = true;
                self.deliver.push_back(Delivery::Closed(body.output));
            }
            MessageType::PausePublication => self.paused = true,
            MessageType::StartPublication => self.paused = false,
            _ => {} // agent_session_state and unknown types: ignored
        }
    }

    fn on_data(&mut self, msg: Message, now: Instant) {
        let seq = msg.sequence_number;
        if seq > self.expected && self.early.len() >= EARLY_CAPACITY {
            return;
        }
        self.ack(&msg, now);
        if seq < self.expected {
            // A duplicate: acked again (a lost ack would otherwise stall the agent).
            return;
        }
        if seq > self.expected {
            self.early.insert(seq, msg);
            return;
        }
        self.expected += 1;
        self.hand_up(msg);
        while let Some(next) = self.early.remove(&self.expected) {
            self.expected += 1;
            self.hand_up(next);
        }
    }

    fn ack(&mut self, msg: &Message, now: Instant) {
        let ack = Message::ack_for(msg, self.stamps.id(), self.stamps.millis(now));
        if let Ok(frame) = ack.encode() {
            self.transmit.push_back(Transmit::Ack(Bytes::from(frame)));
        }
    }

    fn hand_up(&mut self, msg: Message) {
        let pt = PayloadType::from_u32(msg.payload_type);
        self.deliver.push_back(Delivery::Data(pt, msg.payload));
    }

    /// The next frame to write, acks and data in the order they arose.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmit.pop_front()
    }

    /// The next message for the consumer, in the agent's order.
    pub(crate) fn poll_deliver(&mut self) -> Option<Delivery> {
        self.deliver.pop_front()
    }

    /// The writer took frame number `frame_no`, carrying `seq`.
    pub(crate) fn queued(&mut self, frame_no: u64, seq: i64) {
        self.reliable.queued(frame_no, seq);
    }

    /// The writer's queue was full: `seq` is due at the next timeout.
    pub(crate) fn not_queued(&mut self, seq: i64) {
        self.reliable.not_queued(seq);
    }

    /// The writer has written every frame up to `frame_no`.
    pub(crate) fn written(&mut self, frame_no: u64, now: Instant) {
        self.reliable.written(frame_no, now);
    }

    /// When `handle_timeout` next has work: None while paused or with nothing waiting
    /// on time. Before it, `handle_timeout` does nothing.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        if self.paused {
            return None;
        }
        self.reliable.next_deadline()
    }

    /// Queue every message whose RTO expired (or that never left); nothing while paused.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.paused {
            return;
        }
        for (seq, frame) in self.reliable.due(now) {
            self.transmit.push_back(Transmit::Data { seq, frame });
        }
    }

    /// A new socket after ResumeSession: acks not yet written are moot (the agent
    /// resends), everything unacknowledged is due now, and a pause ended with the old
    /// connection.
    pub(crate) fn on_resumed(&mut self, now: Instant) {
        self.transmit.clear();
        self.paused = false;
        self.reliable.socket_replaced(now);
    }
}

/// Events and promises for testing the core from outside: the property test below and
/// the fuzz target (fuzz/, through the `fuzzing` feature) drive the same check.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod harness {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone)]
    pub(crate) enum Event {
        /// An agent data message with this sequence number (payload = the number).
        Data(i64),
        Ack(i64),
        Send,
        Written,
        Timeout(u64),
        Resumed,
        Pause,
        Start,
    }

    impl Event {
        /// Two bytes (from a fuzzer or the property test) as one event: data and acks
        /// for the first 40 sequence numbers, timeouts up to ~3 s, weighted towards
        /// what a session mostly sees.
        pub(crate) fn from_bytes(kind: u8, arg: u8) -> Event {
            match kind % 19 {
                0..=5 => Event::Data(i64::from(arg % 40)),
                6..=8 => Event::Ack(i64::from(arg % 40)),
                9..=11 => Event::Send,
                12 | 13 => Event::Written,
                14 | 15 => Event::Timeout(u64::from(arg) * 12),
                16 => Event::Resumed,
                17 => Event::Pause,
                _ => Event::Start,
            }
        }
    }

    pub(crate) fn core(start: Instant) -> Core {
        Core::new(4 << 20, WireStats::default(), 7, start, 1_000)
    }

    pub(crate) fn agent(seq: i64, payload: &[u8]) -> Vec<u8> {
        Message::new(
            MessageType::OutputStreamData,
            seq,
            0,
            PayloadType::Output.as_u32(),
            payload.to_vec(),
            Uuid::from_u128(1000 + seq as u128),
            1,
        )
        .encode()
        .unwrap()
    }

    pub(crate) fn agent_ack(seq: i64) -> Vec<u8> {
        let ours = Message::new(
            MessageType::InputStreamData,
            seq,
            0,
            PayloadType::Output.as_u32(),
            vec![],
            Uuid::from_u128(1),
            1,
        );
        Message::ack_for(&ours, Uuid::from_u128(2), 1)
            .encode()
            .unwrap()
    }

    pub(crate) fn control(kind: MessageType, payload: &[u8]) -> Vec<u8> {
        Message::new(kind, 0, 0, 0, payload.to_vec(), Uuid::from_u128(3), 1)
            .encode()
            .unwrap()
    }

    /// Run `events` against a fresh core and check what it promises, whatever the agent
    /// and the network do: what is handed up is the agent's stream in order without gaps
    /// or repeats, a resend only carries a message of ours that is still unacknowledged
    /// and was sent, and `poll_timeout` is a deadline the driver can sleep until.
    pub(crate) fn check_events(events: &[Event]) -> std::result::Result<(), String> {
        let t = Instant::now();
        let mut c = core(t);
        let mut now = t;
        let (mut frames, mut sent, mut acked) = (0u64, 0i64, std::collections::BTreeSet::new());
        let mut next_up = 0i64;
        for e in events {
            match *e {
                Event::Data(seq) => c.on_frame(&agent(seq, &seq.to_be_bytes()), now),
                Event::Ack(seq) => {
                    c.on_frame(&agent_ack(seq), now);
                    if seq < sent {
                        acked.insert(seq);
                    }
                }
                Event::Send if c.can_send() => {
                    c.send(PayloadType::Output, vec![0; 100], now);
                    sent += 1;
                }
                Event::Send => {}
                Event::Written => c.written(frames, now),
                Event::Timeout(ms) => {
                    now += Duration::from_millis(ms);
                    // The driver sleeps until poll_timeout: nothing may be due before
                    // it, and handling it must move it into the future (no busy loop).
                    let deadline = c.poll_timeout();
                    c.handle_timeout(now);
                    let resent = c
                        .transmit
                        .iter()
                        .any(|t| matches!(t, Transmit::Data { .. }));
                    if resent && deadline.is_none_or(|d| d > now) {
                        return Err(format!(
                            "resent at {now:?} before the deadline {deadline:?}"
                        ));
                    }
                    if let Some(next) = c.poll_timeout().filter(|&d| d <= now) {
                        return Err(format!(
                            "after handling {now:?} the deadline is still {next:?}"
                        ));
                    }
                }
                Event::Resumed => c.on_resumed(now),
                Event::Pause => c.on_frame(&control(MessageType::PausePublication, b""), now),
                Event::Start => c.on_frame(&control(MessageType::StartPublication, b""), now),
            }
            while let Some(tx) = c.poll_transmit() {
                frames += 1;
                if let Transmit::Data { seq, .. } = tx {
                    if seq >= sent {
                        return Err(format!("sent {seq}, which was never handed in"));
                    }
                    if acked.contains(&seq) {
                        return Err(format!("resent {seq} after its ack"));
                    }
                    c.queued(frames, seq);
                }
            }
            while let Some(d) = c.poll_deliver() {
                match d {
                    Delivery::Data(_, b) if b == next_up.to_be_bytes() => next_up += 1,
                    other => return Err(format!("handed up {other:?} where {next_up} was due")),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::harness::*;
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn core(start: Instant) -> Core {
        Core::new(4 << 20, WireStats::default(), 7, start, 1_000)
    }

    /// Which of our seqs were acknowledged by the frames written, and which data went out.
    fn drain(c: &mut Core) -> (Vec<i64>, Vec<i64>) {
        let (mut acks, mut data) = (Vec::new(), Vec::new());
        while let Some(t) = c.poll_transmit() {
            match t {
                Transmit::Ack(f) => {
                    let m = Message::decode(&f).unwrap();
                    let a: AcknowledgeContent = serde_json::from_slice(&m.payload).unwrap();
                    acks.push(a.acknowledged_message_sequence_number);
                }
                Transmit::Data { seq, .. } => data.push(seq),
            }
        }
        (acks, data)
    }

    fn delivered(c: &mut Core) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| c.poll_deliver())
            .map(|d| match d {
                Delivery::Data(_, b) => b,
                Delivery::Closed(r) => format!("closed: {r}").into_bytes(),
            })
            .collect()
    }

    #[test]
    fn duplicates_are_acked_again_and_delivered_once() {
        let t = Instant::now();
        let mut c = core(t);
        c.on_frame(&agent(0, b"a"), t);
        c.on_frame(&agent(0, b"a"), t);
        assert_eq!(drain(&mut c).0, [0, 0]);
        assert_eq!(delivered(&mut c), [b"a".to_vec()]);
    }

    #[test]
    fn early_messages_are_acked_kept_and_delivered_in_order() {
        let t = Instant::now();
        let mut c = core(t);
        c.on_frame(&agent(2, b"c"), t);
        c.on_frame(&agent(1, b"b"), t);
        assert!(delivered(&mut c).is_empty());
        c.on_frame(&agent(0, b"a"), t);
        assert_eq!(drain(&mut c).0, [2, 1, 0]);
        assert_eq!(
            delivered(&mut c),
            [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
    }

    #[test]
    fn beyond_the_reorder_cap_early_messages_are_dropped_unacked() {
        let t = Instant::now();
        let mut c = core(t);
        for seq in 1..=EARLY_CAPACITY as i64 + 1 {
            c.on_frame(&agent(seq, b"x"), t);
        }
        let (acks, _) = drain(&mut c);
        assert_eq!(acks.len(), EARLY_CAPACITY);
        assert!(!acks.contains(&(EARLY_CAPACITY as i64 + 1)));
        // The head arrives: everything kept goes up; the dropped one comes again later.
        c.on_frame(&agent(0, b"x"), t);
        assert_eq!(delivered(&mut c).len(), EARLY_CAPACITY + 1);
        c.on_frame(&agent(EARLY_CAPACITY as i64 + 1, b"y"), t);
        assert_eq!(delivered(&mut c), [b"y".to_vec()]);
    }

    #[test]
    fn the_retransmission_timeout_is_clamped_to_one_second() {
        let t = Instant::now();
        let mut c = core(t);
        c.send(PayloadType::Output, b"hi".to_vec(), t);
        assert_eq!(drain(&mut c).1, [0]);
        c.queued(1, 0);
        c.written(1, t);
        // Acked slowly, once: an RTT of 5 s would give an RTO beyond it.
        c.on_frame(&agent_ack(0), t + Duration::from_secs(5));
        let t1 = t + Duration::from_secs(5);
        c.send(PayloadType::Output, b"again".to_vec(), t1);
        drain(&mut c);
        c.queued(2, 1);
        c.written(2, t1);
        c.handle_timeout(t1 + Duration::from_millis(990));
        assert!(drain(&mut c).1.is_empty());
        c.handle_timeout(t1 + Duration::from_millis(1010));
        assert_eq!(drain(&mut c).1, [1]);
    }

    #[test]
    fn a_message_still_in_our_queue_is_never_resent() {
        let t = Instant::now();
        let mut c = core(t);
        c.send(PayloadType::Output, b"hi".to_vec(), t);
        drain(&mut c);
        c.queued(1, 0);
        c.handle_timeout(t + Duration::from_secs(10));
        assert!(drain(&mut c).1.is_empty());
    }

    #[test]
    fn after_a_resume_everything_unacknowledged_is_resent_at_once() {
        let t = Instant::now();
        let mut c = core(t);
        for i in 0..3u8 {
            c.send(PayloadType::Output, vec![i], t);
        }
        drain(&mut c);
        for seq in 0..3 {
            c.queued(seq as u64 + 1, seq);
        }
        c.written(3, t);
        c.on_frame(&agent_ack(1), t);
        c.on_frame(&agent(0, b"a"), t); // its ack is queued, then the socket is lost
        c.on_resumed(t);
        c.handle_timeout(t);
        assert_eq!(drain(&mut c), (vec![], vec![0, 2]));
    }

    #[test]
    fn a_pause_stops_sends_and_resends_but_not_acks() {
        let t = Instant::now();
        let mut c = core(t);
        c.send(PayloadType::Output, b"x".to_vec(), t);
        drain(&mut c);
        c.queued(1, 0);
        c.written(1, t);
        c.on_frame(&control(MessageType::PausePublication, b""), t);
        assert!(!c.can_send());
        c.handle_timeout(t + Duration::from_secs(5));
        c.on_frame(&agent(0, b"a"), t);
        assert_eq!(drain(&mut c), (vec![0], vec![]));
        c.on_frame(&control(MessageType::StartPublication, b""), t);
        assert!(c.can_send());
        c.handle_timeout(t + Duration::from_secs(5));
        assert_eq!(drain(&mut c).1, [0]);
    }

    #[test]
    fn channel_closed_comes_after_the_data_before_it_and_ends_the_channel() {
        let t = Instant::now();
        let mut c = core(t);
        c.on_frame(&agent(0, b"a"), t);
        let body = ChannelClosed {
            output: "bye".into(),
            ..ChannelClosed::default()
        };
        c.on_frame(&control(MessageType::ChannelClosed, &body.to_json()), t);
        c.on_frame(&agent(1, b"late"), t);
        assert_eq!(delivered(&mut c), [b"a".to_vec(), b"closed: bye".to_vec()]);
        assert!(!c.can_send());
    }

    #[test]
    fn message_ids_and_dates_come_from_the_seed_and_the_clock_given() {
        let t = Instant::now();
        let mut c = core(t);
        c.send(
            PayloadType::Output,
            b"x".to_vec(),
            t + Duration::from_millis(250),
        );
        let Some(Transmit::Data { frame, .. }) = c.poll_transmit() else {
            panic!("a data frame")
        };
        let m = Message::decode(&frame).unwrap();
        assert_eq!(m.message_id, Uuid::from_u128(8));
        assert_eq!(m.created_date, 1_250);
    }

    fn event() -> impl Strategy<Value = Event> {
        any::<(u8, u8)>().prop_map(|(kind, arg)| Event::from_bytes(kind, arg))
    }

    proptest! {
        /// Whatever the agent and the network do, the channel keeps its promises
        /// (harness::check_events says which).
        #[test]
        fn any_sequence_of_events_keeps_the_channel_s_promises(events in prop::collection::vec(event(), 0..300)) {
            if let Err(broken) = check_events(&events) {
                prop_assert!(false, "{}", broken);
            }
        }
    }
}
