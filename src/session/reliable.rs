//! The sending half of the data channel's reliability, with no I/O: which messages are
//! unacknowledged, when each one actually left for the socket, which are due for a
//! resend, the RTT estimate and how many bytes may be in flight. The channel task does
//! the I/O and passes the time in.
//!
//! A message is timed from when the socket writer took it, not from when it was
//! queued: time spent behind other frames in our own queue is not the path's, and
//! counting it made queueing look like loss (most of an upload was sent twice). The
//! window follows what the path carries: it grows while the RTT stays near the least
//! seen and shrinks when it climbs, so the agent's inbox never holds more than about a
//! round trip of data and an ack never arrives later than the RTO.

use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Floor for the RTO. The §5.5 formula goes down to SRTT + 10 ms; the agent's own
/// resend scheduler ticks at 100 ms, so nothing is gained below that.
pub(crate) const MIN_RTO: Duration = Duration::from_millis(100);
pub(crate) const MAX_RTO: Duration = Duration::from_secs(1);
const INITIAL_RTO: Duration = Duration::from_millis(200);
/// Bytes in flight before any RTT is known, and the least the window shrinks to.
pub(crate) const INITIAL_WINDOW: usize = 256 << 10;
pub(crate) const MIN_WINDOW: usize = 64 << 10;
/// Queueing the window allows beyond the least RTT, so that scheduling noise on a fast
/// path does not starve it.
const MIN_QUEUE_DELAY: f64 = 0.010;
/// The window carries this many times the best recent rate over (least RTT + the
/// allowance above).
const WINDOW_GAIN: f64 = 1.5;
/// Rounds of delivery-rate samples kept (the best of them sizes the window, so a round
/// in which the sender had nothing to send does not shrink it).
const RATE_ROUNDS: usize = 8;

/// Wire counters of one command, shared by all its sessions (the `-v` and `--json`
/// summaries report them).
#[derive(Debug, Clone, Default)]
pub struct WireStats(Arc<WireCounters>);

#[derive(Debug, Default)]
struct WireCounters {
    sent: AtomicU64,
    retransmitted: AtomicU64,
    duplicate_acks: AtomicU64,
}

/// A snapshot of `WireStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireSnapshot {
    /// Distinct data messages sent.
    pub sent: u64,
    /// Extra copies sent because no ack came in time.
    pub retransmitted: u64,
    /// Acks for messages already acknowledged (the agent's answer to a needless copy).
    pub duplicate_acks: u64,
}

impl WireStats {
    pub fn snapshot(&self) -> WireSnapshot {
        WireSnapshot {
            sent: self.0.sent.load(Ordering::Relaxed),
            retransmitted: self.0.retransmitted.load(Ordering::Relaxed),
            duplicate_acks: self.0.duplicate_acks.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where the latest copy of a message is.
#[derive(Clone, Copy)]
enum Copy {
    /// In our queue, not yet taken by the socket writer: never resent from there.
    Queued,
    /// Taken by the writer at this instant.
    OnWire(Instant),
    /// Could not be queued (the writer's queue was full): sent at the next check, and
    /// not counted as a retransmission, since no copy left.
    Unsent,
    /// On the wire of a socket that was lost: resent at the next check.
    Lost,
}

struct Pending {
    frame: Bytes,
    len: usize,
    copy: Copy,
    /// Copies sent after the first.
    retries: u32,
}

/// The RTT estimator of §5.5 (RFC 6298's), plus the least RTT seen.
struct Rtt {
    srtt: Option<f64>,
    rttvar: f64,
    rto: Duration,
    min: Option<f64>,
}

impl Rtt {
    fn sample(&mut self, r: f64) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2.0;
            }
            Some(s) => {
                self.rttvar = 0.75 * self.rttvar + 0.25 * (s - r).abs();
                self.srtt = Some(0.875 * s + 0.125 * r);
            }
        }
        self.min = Some(self.min.map_or(r, |m| m.min(r)));
        let s = self.srtt.unwrap_or(r);
        self.rto =
            Duration::from_secs_f64(s + (4.0 * self.rttvar).max(0.010)).clamp(MIN_RTO, MAX_RTO);
    }
}

pub(crate) struct Reliable {
    unacked: BTreeMap<i64, Pending>,
    unacked_bytes: usize,
    /// Data messages handed to the socket writer and not yet taken by it, by the
    /// writer's frame number (every frame counts, acks included).
    queued: VecDeque<(u64, i64)>,
    /// Copies in the order the writer took them, with when: the front one still on the
    /// wire holds the next RTO deadline. Entries of copies since acked or resent are
    /// dropped when they reach the front.
    on_wire: VecDeque<(Instant, i64)>,
    /// Some copy could not be queued; it goes at the writer's next progress report.
    unsent: bool,
    /// When copies that never left or were on a lost socket became due.
    due_since: Option<Instant>,
    rtt: Rtt,
    window: usize,
    max_window: usize,
    /// The current measuring round: when it began and the bytes acked since.
    round_start: Option<Instant>,
    round_bytes: usize,
    /// Delivery rates of recent rounds, bytes per second.
    rates: VecDeque<f64>,
    stats: WireStats,
}

impl Reliable {
    pub(crate) fn new(max_window: usize, stats: WireStats) -> Reliable {
        Reliable {
            unacked: BTreeMap::new(),
            unacked_bytes: 0,
            queued: VecDeque::new(),
            on_wire: VecDeque::new(),
            unsent: false,
            due_since: None,
            rtt: Rtt {
                srtt: None,
                rttvar: 0.0,
                rto: INITIAL_RTO,
                min: None,
            },
            window: INITIAL_WINDOW.min(max_window),
            max_window,
            round_start: None,
            round_bytes: 0,
            rates: VecDeque::new(),
            stats,
        }
    }

    /// Whether a new message may be sent now.
    pub(crate) fn can_send(&self) -> bool {
        self.unacked_bytes < self.window
    }

    #[cfg(test)]
    fn window(&self) -> usize {
        self.window
    }

    #[cfg(test)]
    fn rto(&self) -> Duration {
        self.rtt.rto
    }

    /// A new message was built: keep it until acknowledged.
    pub(crate) fn sent_new(&mut self, seq: i64, frame: Bytes, len: usize) {
        WireStats::add(&self.stats.0.sent);
        self.unacked_bytes += len;
        self.unacked.insert(
            seq,
            Pending {
                frame,
                len,
                copy: Copy::Queued,
                retries: 0,
            },
        );
    }

    /// The writer got frame number `frame_no` carrying `seq` (a first copy or a resend).
    pub(crate) fn queued(&mut self, frame_no: u64, seq: i64) {
        self.queued.push_back((frame_no, seq));
    }

    /// A copy of `seq` could not be queued (the writer's queue was full): it is due
    /// when the writer next reports progress (its queue has room again).
    pub(crate) fn not_queued(&mut self, seq: i64) {
        if let Some(p) = self.unacked.get_mut(&seq) {
            p.copy = Copy::Unsent;
            self.unsent = true;
        }
    }

    /// The writer has taken every frame up to `frame_no` (it reports this after each
    /// flush): those messages are on the wire from `now`.
    pub(crate) fn written(&mut self, frame_no: u64, now: Instant) {
        while let Some(&(n, seq)) = self.queued.front() {
            if n > frame_no {
                break;
            }
            self.queued.pop_front();
            if let Some(p) = self.unacked.get_mut(&seq) {
                if matches!(p.copy, Copy::Queued) {
                    p.copy = Copy::OnWire(now);
                    self.on_wire.push_back((now, seq));
                }
            }
        }
        if self.unsent {
            self.due_since.get_or_insert(now);
        }
    }

    /// A new socket after a lost one: whatever was in flight may be lost, so every
    /// unacknowledged message is due now.
    pub(crate) fn socket_replaced(&mut self, now: Instant) {
        self.queued.clear();
        self.on_wire.clear();
        for p in self.unacked.values_mut() {
            if !matches!(p.copy, Copy::Unsent) {
                p.copy = Copy::Lost;
            }
        }
        if !self.unacked.is_empty() {
            self.due_since.get_or_insert(now);
        }
    }

    /// When `due` next has something to send, if anything is waiting for time at all:
    /// the oldest copy on the wire's RTO expiry, or a copy that is due already. Before
    /// this instant `due` returns nothing, so the driver may sleep until it.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&(t, seq)) = self.on_wire.front() {
            let current = self
                .unacked
                .get(&seq)
                .is_some_and(|p| matches!(p.copy, Copy::OnWire(sent) if sent == t));
            if current {
                break;
            }
            self.on_wire.pop_front();
        }
        let expiry = self.on_wire.front().map(|&(t, _)| t + self.rtt.rto);
        match (self.due_since, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The agent acknowledged `seq`.
    pub(crate) fn acked(&mut self, seq: i64, now: Instant) {
        let Some(p) = self.unacked.remove(&seq) else {
            WireStats::add(&self.stats.0.duplicate_acks);
            return;
        };
        self.unacked_bytes -= p.len;
        // Karn's rule: only a message sent once gives an unambiguous sample; one still
        // in our queue (acked before we saw the writer take it) gives none either.
        if let (0, Copy::OnWire(sent)) = (p.retries, p.copy) {
            self.rtt.sample(now.duration_since(sent).as_secs_f64());
        }
        self.measure(p.len, now);
    }

    /// Once per round trip: measure the delivery rate of that round, and size the window
    /// to carry the best recent rate over the least RTT plus a small queue. A window that
    /// limits the rate measures less than it could carry, so it grows (×1.5 or more a
    /// round) until the path is full; a full path measures its own rate, and the window
    /// then holds about `WINDOW_GAIN` × (least RTT + `MIN_QUEUE_DELAY`) of it: the queue
    /// in front of the agent stays near a round trip and acks arrive well inside the RTO.
    fn measure(&mut self, len: usize, now: Instant) {
        let (Some(srtt), Some(min)) = (self.rtt.srtt, self.rtt.min) else {
            return;
        };
        let start = *self.round_start.get_or_insert(now);
        self.round_bytes += len;
        let elapsed = now.duration_since(start).as_secs_f64();
        if elapsed < srtt.max(0.005) {
            return;
        }
        let rate = self.round_bytes as f64 / elapsed;
        self.round_start = Some(now);
        self.round_bytes = 0;
        if self.rates.len() == RATE_ROUNDS {
            self.rates.pop_front();
        }
        self.rates.push_back(rate);
        let best = self.rates.iter().copied().fold(0.0, f64::max);
        let target = WINDOW_GAIN * best * (min + MIN_QUEUE_DELAY);
        self.window = (target as usize).clamp(MIN_WINDOW, self.max_window.max(MIN_WINDOW));
    }

    /// Messages on the wire for the RTO or longer without an ack, on a lost socket, or
    /// not yet sent: (re)send them now (any order is fine for the agent). Each is marked
    /// as waiting in the queue again.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(i64, Bytes)> {
        let rto = self.rtt.rto;
        self.unsent = false;
        self.due_since = None;
        let mut out = Vec::new();
        for (seq, p) in self.unacked.iter_mut() {
            let resend = match p.copy {
                Copy::Queued => continue,
                Copy::OnWire(t) if now.saturating_duration_since(t) < rto => continue,
                Copy::OnWire(_) | Copy::Lost => true,
                Copy::Unsent => false,
            };
            if resend {
                p.retries += 1;
                WireStats::add(&self.stats.0.retransmitted);
            }
            p.copy = Copy::Queued;
            out.push((*seq, p.frame.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Bytes {
        Bytes::from_static(b"frame")
    }

    #[test]
    fn a_message_waiting_in_our_queue_is_never_resent() {
        let t0 = Instant::now();
        let mut r = Reliable::new(4 << 20, WireStats::default());
        r.sent_new(0, frame(), 1024);
        r.queued(1, 0);
        // Long past any RTO, but the writer has not taken it: not lost, queued.
        assert!(r.due(t0 + Duration::from_secs(5)).is_empty());
        r.written(1, t0 + Duration::from_secs(5));
        assert!(r
            .due(t0 + Duration::from_secs(5) + INITIAL_RTO / 2)
            .is_empty());
        let again = r.due(t0 + Duration::from_secs(6));
        assert_eq!(again.len(), 1);
        assert_eq!(r.stats.snapshot().retransmitted, 1);
    }

    #[test]
    fn a_copy_that_never_left_is_sent_without_counting_as_a_resend() {
        let t0 = Instant::now();
        let mut r = Reliable::new(4 << 20, WireStats::default());
        r.sent_new(0, frame(), 1024);
        r.not_queued(0);
        // It waits for the writer to make room, not for a timer.
        assert_eq!(r.next_deadline(), None);
        r.written(0, t0);
        assert_eq!(r.next_deadline(), Some(t0));
        assert_eq!(r.due(t0).len(), 1);
        assert_eq!(r.stats.snapshot().retransmitted, 0);
        r.queued(1, 0);
        r.written(1, t0);
        r.acked(0, t0 + Duration::from_millis(30));
        assert!(r.rtt.srtt.is_some(), "a first copy gives an RTT sample");
        // After a lost socket, what was on the wire is resent and counted.
        r.sent_new(1, frame(), 1024);
        r.queued(2, 1);
        r.written(2, t0);
        let later = t0 + Duration::from_millis(5);
        r.socket_replaced(later);
        assert_eq!(r.next_deadline(), Some(later));
        assert_eq!(r.due(later).len(), 1);
        assert_eq!(r.stats.snapshot().retransmitted, 1);
    }

    /// The driver sleeps until `next_deadline`: it is the oldest copy's RTO expiry, it
    /// moves on when that copy is acknowledged or resent, and `due` finds nothing before
    /// it and something at it.
    #[test]
    fn the_next_deadline_is_the_oldest_copy_on_the_wire() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut r = Reliable::new(4 << 20, WireStats::default());
        assert_eq!(r.next_deadline(), None);
        for seq in 0..3 {
            r.sent_new(seq, frame(), 1024);
            r.queued(seq as u64 + 1, seq);
        }
        assert_eq!(
            r.next_deadline(),
            None,
            "nothing times out in our own queue"
        );
        r.written(1, ms(0));
        r.written(3, ms(10));
        assert_eq!(r.next_deadline(), Some(ms(0) + INITIAL_RTO));
        r.acked(0, ms(40));
        let rto = r.rto();
        assert_eq!(r.next_deadline(), Some(ms(10) + rto));
        assert!(r.due(ms(10) + rto - Duration::from_millis(1)).is_empty());
        assert_eq!(r.due(ms(10) + rto).len(), 2);
        assert_eq!(
            r.next_deadline(),
            None,
            "both resent copies wait in our queue"
        );
        r.queued(4, 1);
        r.queued(5, 2);
        r.written(5, ms(500));
        r.acked(1, ms(520));
        assert_eq!(r.next_deadline(), Some(ms(500) + r.rto()));
        r.acked(2, ms(530));
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn the_rtt_is_measured_from_the_socket_not_the_queue() {
        let t0 = Instant::now();
        let mut r = Reliable::new(4 << 20, WireStats::default());
        r.sent_new(0, frame(), 1024);
        r.queued(1, 0);
        r.written(1, t0 + Duration::from_millis(900));
        r.acked(0, t0 + Duration::from_millis(940));
        let srtt = r.rtt.srtt.unwrap();
        assert!((srtt - 0.040).abs() < 1e-9, "{srtt}");
        // RFC 6298's first sample: RTTVAR = R/2, RTO = SRTT + 4 RTTVAR.
        assert_eq!(r.rto(), Duration::from_millis(120));
    }

    #[test]
    fn duplicate_acks_are_counted_and_resends_give_no_rtt_sample() {
        let t0 = Instant::now();
        let stats = WireStats::default();
        let mut r = Reliable::new(4 << 20, stats.clone());
        r.sent_new(0, frame(), 10);
        r.queued(1, 0);
        r.written(1, t0);
        assert_eq!(r.due(t0 + Duration::from_secs(1)).len(), 1);
        r.queued(2, 0);
        r.written(2, t0 + Duration::from_secs(1));
        r.acked(0, t0 + Duration::from_millis(1010));
        assert!(r.rtt.srtt.is_none(), "Karn's rule");
        r.acked(0, t0 + Duration::from_millis(1020));
        assert_eq!(
            stats.snapshot(),
            WireSnapshot {
                sent: 1,
                retransmitted: 1,
                duplicate_acks: 1
            }
        );
    }

    /// Drive `Reliable` over a path that carries `rate` bytes/s behind a fixed `base`
    /// RTT, with a queue in front of the agent. Returns (throughput, worst smoothed RTT
    /// after the start, final window); asserts no message is ever resent.
    fn over_a_path(base: f64, rate: f64, secs: f64) -> (f64, f64, usize) {
        let msg = 1024usize;
        let mut r = Reliable::new(4 << 20, WireStats::default());
        let t0 = Instant::now();
        let (mut seq, mut frame_no) = (0i64, 0u64);
        let mut flight: VecDeque<(i64, f64)> = VecDeque::new();
        let (mut agent_free, mut now, mut worst_rtt) = (0.0f64, 0.0f64, 0.0f64);
        let mut acked = 0usize;
        while now < secs {
            while r.can_send() {
                r.sent_new(seq, frame(), msg);
                frame_no += 1;
                r.queued(frame_no, seq);
                r.written(frame_no, t0 + Duration::from_secs_f64(now));
                // Half the base RTT to the agent, its queue, then half back.
                agent_free = agent_free.max(now + base / 2.0) + msg as f64 / rate;
                flight.push_back((seq, agent_free + base / 2.0));
                seq += 1;
            }
            let (s, at) = flight.pop_front().unwrap();
            now = now.max(at);
            if now > secs / 2.0 {
                worst_rtt = worst_rtt.max(r.rtt.srtt.unwrap());
            }
            r.acked(s, t0 + Duration::from_secs_f64(now));
            acked += msg;
            let resent = r.due(t0 + Duration::from_secs_f64(now));
            assert!(resent.is_empty(), "a spurious resend at {now}");
        }
        (acked as f64 / now, worst_rtt, r.window())
    }

    #[test]
    fn the_window_follows_the_path_keeps_the_queue_short_and_fills_the_pipe() {
        for (base, rate) in [
            (0.040, 2e6),
            (0.040, 10e6),
            (0.010, 10e6),
            (0.002, 60e6),
            (0.100, 5e6),
        ] {
            let (throughput, worst_rtt, window) = over_a_path(base, rate, 3.0);
            assert!(
                throughput > rate * 0.9,
                "{base} s, {rate} B/s: only {throughput:.0} B/s (window {window})"
            );
            let most = WINDOW_GAIN * rate * (base + MIN_QUEUE_DELAY) * 1.2;
            assert!(
                (window as f64) < most + MIN_WINDOW as f64,
                "{base} s, {rate} B/s: window {window}"
            );
            assert!(
                worst_rtt < 2.0 * (base + MIN_QUEUE_DELAY),
                "{base} s, {rate} B/s: the queue grew to an RTT of {worst_rtt}"
            );
        }
    }
}
