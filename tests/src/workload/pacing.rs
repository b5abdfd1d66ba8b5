//! Pacing for `storm`: how many ops a thread may run now, or how long to wait, so that it
//! holds a target rate in small batches instead of one sleep per op (a sleep costs more
//! than an open, and timer slack would cap the rate far below the target).

use std::time::Duration;

/// Ops a batch is sized for: about a millisecond of the target rate.
const BATCH_PERIOD: f64 = 0.001;
/// Bounds on a batch: at least one op, and never so many that one batch is a burst.
const MAX_BATCH: u64 = 256;
/// How far a thread may fall behind before the missed ops are written off instead of made
/// up: catching up a long stall at full speed would be a burst well above the target.
const MAX_LAG_PERIOD: f64 = 0.010;
/// Ops per step when unpaced.
const UNPACED_BATCH: u64 = 64;

/// What a thread does next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Run this many ops now.
    Run(u64),
    /// Nothing is due yet: sleep this long.
    Wait(Duration),
}

/// One thread's schedule: op `n` is due at `n / rate` seconds after the start.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Ops per second; 0 = unpaced.
    rate: f64,
    batch: u64,
    max_lag: u64,
    /// Ops that were due but written off because the thread fell too far behind.
    missed: u64,
}

impl Pacer {
    pub fn new(rate: f64) -> Self {
        if rate <= 0.0 {
            return Pacer {
                rate: 0.0,
                batch: UNPACED_BATCH,
                max_lag: 0,
                missed: 0,
            };
        }
        let batch = ((rate * BATCH_PERIOD).ceil() as u64).clamp(1, MAX_BATCH);
        let max_lag = ((rate * MAX_LAG_PERIOD).ceil() as u64).max(batch);
        Pacer {
            rate,
            batch,
            max_lag,
            missed: 0,
        }
    }

    /// The next step for a thread that has completed `done` ops `elapsed` after its start.
    pub fn next(&mut self, done: u64, elapsed: Duration) -> Step {
        if self.rate == 0.0 {
            return Step::Run(self.batch);
        }
        // The epsilon keeps float error (10_000 * 1.001 = 10_009.99…) from losing an op.
        let scheduled = (self.rate * elapsed.as_secs_f64() + 1e-6).floor() as u64;
        let mut due = scheduled.saturating_sub(self.missed);
        if due > done + self.max_lag {
            self.missed += due - (done + self.max_lag);
            due = done + self.max_lag;
        }
        if due > done {
            return Step::Run((due - done).min(self.batch));
        }
        // Sleep until a whole batch is due, not a single op.
        let next_due = (done + self.missed + self.batch) as f64 / self.rate;
        Step::Wait(Duration::from_secs_f64(
            (next_due - elapsed.as_secs_f64()).max(0.0),
        ))
    }

    /// Ops written off so far because the thread could not keep up.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

/// The share of a total rate one of `threads` threads runs at.
pub fn per_thread_rate(total: f64, threads: u32) -> f64 {
    if threads == 0 {
        0.0
    } else {
        total / f64::from(threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A wait of `expected` give or take a microsecond (float rounding).
    fn waits(step: Step, expected: Duration) -> bool {
        match step {
            Step::Wait(d) => d.abs_diff(expected) <= Duration::from_micros(1),
            Step::Run(_) => false,
        }
    }

    #[test]
    fn unpaced_always_runs() {
        let mut pacer = Pacer::new(0.0);
        assert_eq!(pacer.next(0, ms(0)), Step::Run(UNPACED_BATCH));
        assert_eq!(pacer.next(1_000_000, ms(1)), Step::Run(UNPACED_BATCH));
        assert_eq!(pacer.missed(), 0);
    }

    #[test]
    fn waits_for_a_whole_batch_at_the_start() {
        // 10k/s: batches of 10 ops, one per millisecond.
        let mut pacer = Pacer::new(10_000.0);
        assert!(waits(pacer.next(0, ms(0)), ms(1)));
        assert_eq!(pacer.next(0, ms(1)), Step::Run(10));
        assert!(waits(pacer.next(10, ms(1)), ms(1)));
    }

    #[test]
    fn a_small_lag_is_caught_up_in_batches() {
        let mut pacer = Pacer::new(10_000.0);
        // 5 ms in, nothing done yet: 50 ops due, run them 10 at a time.
        assert_eq!(pacer.next(0, ms(5)), Step::Run(10));
        assert_eq!(pacer.next(40, ms(5)), Step::Run(10));
        assert!(waits(pacer.next(50, ms(5)), ms(1)));
        assert_eq!(pacer.missed(), 0);
    }

    #[test]
    fn a_long_stall_is_written_off_not_replayed_as_a_burst() {
        let mut pacer = Pacer::new(10_000.0);
        // 1 s stalled: 10_000 due, but only 10 ms (100 ops) worth may be caught up.
        assert_eq!(pacer.next(0, ms(1000)), Step::Run(10));
        assert_eq!(pacer.missed(), 9_900);
        assert!(waits(pacer.next(100, ms(1000)), ms(1)));
        // Back on schedule afterwards: 1 ms later, one batch is due again.
        assert_eq!(pacer.next(100, ms(1001)), Step::Run(10));
    }

    #[test]
    fn slow_rates_run_single_ops_between_sleeps() {
        let mut pacer = Pacer::new(100.0);
        assert!(waits(pacer.next(0, ms(0)), ms(10)));
        assert_eq!(pacer.next(0, ms(10)), Step::Run(1));
        assert!(waits(pacer.next(1, ms(10)), ms(10)));
    }

    #[test]
    fn huge_rates_cap_the_batch() {
        let pacer = Pacer::new(10_000_000.0);
        assert_eq!(pacer.batch, MAX_BATCH);
        assert!(pacer.max_lag >= pacer.batch);
    }

    #[test]
    fn following_the_steps_holds_the_rate() {
        // Simulate a thread whose ops take no time: after 1 s it has done exactly the
        // scheduled number of ops, never more.
        let mut pacer = Pacer::new(2_500.0);
        let mut done = 0u64;
        let mut now = Duration::ZERO;
        while now < Duration::from_secs(1) {
            match pacer.next(done, now) {
                Step::Run(n) => done += n,
                Step::Wait(d) => now += d.max(Duration::from_micros(1)),
            }
        }
        assert!((2_490..=2_500).contains(&done), "{done}");
        assert_eq!(pacer.missed(), 0);
    }

    #[test]
    fn total_rate_is_split_evenly() {
        assert_eq!(per_thread_rate(10_000.0, 4), 2_500.0);
        assert_eq!(per_thread_rate(0.0, 2), 0.0);
        assert_eq!(per_thread_rate(1.0, 0), 0.0);
    }
}
