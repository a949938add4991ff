//! Faults and pacing on one direction of a client connection: a layer the gateway puts
//! around its frame path. Seeded, so a failing test replays the same decisions.

use crate::config::DirectionFaults;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BinaryHeap;
use std::time::Duration;
use tokio::time::Instant;

/// Most frames a direction holds back for delay or reordering before it stops taking
/// new ones, so a fault setting cannot grow memory without bound.
pub const MAX_HELD: usize = 4096;
/// A frame held for reordering is released after this long if nothing overtakes it.
const REORDER_HOLD: Duration = Duration::from_millis(30);

struct Scheduled {
    at: Instant,
    order: u64,
    frame: Vec<u8>,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.order).cmp(&(self.at, self.order))
    }
}

pub struct FaultLayer {
    cfg: DirectionFaults,
    rng: StdRng,
    queue: BinaryHeap<Scheduled>,
    order: u64,
    held: Option<(Instant, Vec<u8>)>,
    next_free: Instant,
    pub dropped: u64,
}

/// Only stream data and acknowledgements are subject to loss, duplication and
/// reordering; control messages model the service, not the network.
fn is_lossy(frame: &[u8]) -> bool {
    frame.len() >= 36 && {
        let t = &frame[4..36];
        t.starts_with(b"input_stream_data ")
            || t.starts_with(b"output_stream_data ")
            || t.starts_with(b"acknowledge ")
    }
}

impl FaultLayer {
    pub fn new(cfg: DirectionFaults, seed: u64) -> FaultLayer {
        FaultLayer {
            cfg,
            rng: StdRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            order: 0,
            held: None,
            next_free: Instant::now(),
            dropped: 0,
        }
    }

    fn chance(&mut self, pct: f64) -> bool {
        pct > 0.0 && self.rng.random::<f64>() * 100.0 < pct
    }

    pub fn is_full(&self) -> bool {
        self.queue.len() >= MAX_HELD
    }

    fn schedule(&mut self, frame: Vec<u8>) {
        let jitter = if self.cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.cfg.jitter.mul_f64(self.rng.random::<f64>())
        };
        self.order += 1;
        self.queue.push(Scheduled {
            at: Instant::now() + self.cfg.delay + jitter,
            order: self.order,
            frame,
        });
    }

    /// Take one frame in; it is dropped, delayed, duplicated or held back for reordering.
    /// Returns whether it was dropped.
    pub fn push(&mut self, frame: Vec<u8>) -> bool {
        if !is_lossy(&frame) {
            self.schedule(frame);
            return false;
        }
        if self.chance(self.cfg.drop_pct) {
            self.dropped += 1;
            return true;
        }
        if self.chance(self.cfg.duplicate_pct) {
            self.schedule(frame.clone());
        }
        if self.held.is_none() && self.chance(self.cfg.reorder_pct) {
            self.held = Some((Instant::now() + REORDER_HOLD, frame));
            return false;
        }
        self.schedule(frame);
        if let Some((_, h)) = self.held.take() {
            self.schedule(h);
        }
        false
    }

    /// When the next frame may go out (None: nothing is waiting).
    pub fn next_deadline(&self) -> Option<Instant> {
        let q = self.queue.peek().map(|s| s.at.max(self.next_free));
        let h = self.held.as_ref().map(|(at, _)| *at);
        match (q, h) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Frames due now, in delivery order, charged against the bandwidth cap.
    pub fn due(&mut self) -> Vec<Vec<u8>> {
        let now = Instant::now();
        if let Some((at, _)) = &self.held {
            if *at <= now {
                if let Some((_, h)) = self.held.take() {
                    self.schedule(h);
                }
            }
        }
        let mut out = Vec::new();
        while self.next_free <= now && self.queue.peek().is_some_and(|s| s.at <= now) {
            let Some(s) = self.queue.pop() else { break };
            if self.cfg.bandwidth > 0 {
                let cost =
                    Duration::from_secs_f64(s.frame.len() as f64 / self.cfg.bandwidth as f64);
                self.next_free = self.next_free.max(now) + cost;
            }
            out.push(s.frame);
        }
        out
    }
}
