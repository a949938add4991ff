//! The agent's output pacing (§12): every sender loop sleeps 1 ms after each message
//! with Go's timer, which costs about 1.05–1.2 ms on Linux, so a real session sends one
//! message per ~1.1 ms. A sleep per message here would cost more than that (tokio's
//! timer wheel rounds every sleep up to whole milliseconds, ~2 ms and more in practice),
//! halving every paced figure. So the simulator paces by a schedule: message k may go
//! at k × interval; a sender that woke late goes again at once until it is back on
//! schedule, but never catches up more than a few intervals (after an idle spell the
//! schedule starts over), so on average it is never faster than the agent.

use std::time::{Duration, Instant};

/// At most this many intervals are made up after a late wake-up or an idle spell.
const MAX_CATCH_UP: u32 = 4;

#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    /// How far behind schedule a late sender may catch up.
    catch_up: Duration,
    /// When the next message may go; None before the first.
    next: Option<Instant>,
}

impl Pacer {
    /// The agent's output pacing: a timer per message, so a late wake-up is mostly lost.
    pub fn new(interval: Duration) -> Pacer {
        Pacer::with_catch_up(interval, interval * MAX_CATCH_UP)
    }

    /// Work that costs `interval` per item with no timer of its own (the agent handling
    /// input): a late wake-up of the simulator's timer, up to `catch_up`, is made up, so
    /// a busy agent runs at exactly one item per interval.
    pub fn with_catch_up(interval: Duration, catch_up: Duration) -> Pacer {
        Pacer {
            interval,
            catch_up,
            next: None,
        }
    }

    /// A message went out at `now`: the instant the sender must wait for before the
    /// next one, or None when it is behind schedule and may send at once.
    pub fn after_send(&mut self, now: Instant) -> Option<Instant> {
        let floor = now.checked_sub(self.catch_up).unwrap_or(now);
        let base = match self.next {
            Some(n) => n.max(floor),
            None => now,
        };
        let next = base + self.interval;
        self.next = Some(next);
        (next > now).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_without_a_timer_makes_up_a_late_wake_up() {
        let t0 = Instant::now();
        let cost = Duration::from_micros(100);
        let mut p = Pacer::with_catch_up(cost, Duration::from_millis(5));
        let mut now = t0;
        let mut done = 0u32;
        // Sleep whenever 1 ms ahead, and always wake 1.5 ms late, as a coarse timer does.
        while now < t0 + Duration::from_secs(1) {
            done += 1;
            if let Some(at) = p.after_send(now) {
                if at.duration_since(now) >= Duration::from_millis(1) {
                    now = at + Duration::from_micros(1500);
                }
            }
        }
        assert!((9_900..=10_100).contains(&done), "{done} items in a second");
    }

    const MS: Duration = Duration::from_millis(1);

    fn interval() -> Duration {
        Duration::from_micros(1100)
    }

    #[test]
    fn on_time_senders_wait_one_interval() {
        let t0 = Instant::now();
        let mut p = Pacer::new(interval());
        assert_eq!(p.after_send(t0), Some(t0 + interval()));
        let t1 = t0 + interval();
        assert_eq!(p.after_send(t1), Some(t1 + interval()));
    }

    #[test]
    fn late_wake_ups_are_caught_up_and_the_average_holds() {
        // A timer that always wakes at the next whole millisecond (tokio's wheel),
        // 10,000 messages: the k-th never goes before k intervals, and the run takes
        // within 1 ms of 10,000 intervals.
        let t0 = Instant::now();
        let mut p = Pacer::new(interval());
        let mut now = t0;
        for k in 1..=10_000u32 {
            if let Some(until) = p.after_send(now) {
                let ahead = until - t0;
                let ticks = ahead.as_nanos().div_ceil(MS.as_nanos()) as u32;
                now = t0 + MS * ticks;
            }
            assert!(now - t0 >= interval() * k - MS, "message {k} early");
        }
        let took = now - t0;
        assert!(took >= interval() * 10_000 - MS, "{took:?}");
        assert!(took <= interval() * 10_000 + MS, "{took:?}");
    }

    #[test]
    fn after_an_idle_spell_only_a_few_go_at_once() {
        let t0 = Instant::now();
        let mut p = Pacer::new(interval());
        p.after_send(t0);
        let later = t0 + Duration::from_secs(10);
        let mut unpaced = 0;
        while p.after_send(later).is_none() {
            unpaced += 1;
            assert!(unpaced <= MAX_CATCH_UP, "burst after idle");
        }
    }
}
