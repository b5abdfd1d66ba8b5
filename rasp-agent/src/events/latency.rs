//! Latency histograms for the event path: kernel timestamp → userspace dequeue for every
//! event, kernel timestamp → decision for every detection. Fixed log-linear buckets of
//! atomics: recording is a binary search and one relaxed add, no allocation and no lock, so
//! it can run for every event. `status` reports percentiles since start *and* the raw bucket
//! counts with their bounds, so a client can diff two snapshots and get the percentiles of
//! just the window in between (the counters only grow).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Upper bounds (inclusive, µs) of the buckets: 1–10 µs in steps of 1 µs (6/8/10 in the
/// last steps), then ten steps per decade (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 ×10ⁿ, at most
/// a third apart) up to 10 s. One more bucket, past the last bound, counts anything slower.
pub const BOUNDS_US: [u64; 68] = bounds();

const fn bounds() -> [u64; 68] {
    const FIRST: [u64; 8] = [1, 2, 3, 4, 5, 6, 8, 10];
    const STEPS: [u64; 10] = [12, 15, 20, 25, 30, 40, 50, 60, 80, 100];
    let mut out = [0u64; 68];
    let mut i = 0;
    while i < FIRST.len() {
        out[i] = FIRST[i];
        i += 1;
    }
    let mut scale = 1;
    let mut decade = 0;
    while decade < 6 {
        let mut s = 0;
        while s < STEPS.len() {
            out[FIRST.len() + decade * STEPS.len() + s] = STEPS[s] * scale;
            s += 1;
        }
        scale *= 10;
        decade += 1;
    }
    out
}

/// Buckets including the overflow one.
const BUCKETS: usize = BOUNDS_US.len() + 1;

/// One latency distribution. Written by the event path, read by `status` at any time
/// (a reader may see a count a few events ahead of the buckets; it never blocks a writer).
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record_ns(&self, ns: u64) {
        let us = ns.div_ceil(1000);
        let bucket = BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Latency from a kernel CLOCK_BOOTTIME stamp to `now_boot_ns` (0 if the stamp is in the
    /// future, which a clock step could cause).
    pub fn record_since(&self, ts_boot_ns: u64, now_boot_ns: u64) {
        self.record_ns(now_boot_ns.saturating_sub(ts_boot_ns));
    }

    pub fn snapshot(&self) -> LatencyStats {
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count = buckets.iter().sum();
        let max_us = self.max_ns.load(Ordering::Relaxed).div_ceil(1000);
        let q = |p: f64| quantile_us(&buckets, p).map(|b| b.min(max_us));
        LatencyStats {
            count,
            sum_us: self.sum_ns.load(Ordering::Relaxed) / 1000,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: (count > 0).then_some(max_us),
            buckets,
        }
    }
}

/// Upper bound (µs) of the bucket holding the `p` quantile of `buckets` (laid out as
/// `BOUNDS_US` plus overflow); `None` when empty. For the overflow bucket: `u64::MAX`.
pub fn quantile_us(buckets: &[u64], p: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    // The smallest bucket whose cumulative count reaches ceil(p * total) (at least 1).
    let rank = ((p * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, &n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(BOUNDS_US.get(i).copied().unwrap_or(u64::MAX));
        }
    }
    Some(u64::MAX)
}

/// What `status` reports for one distribution. Percentiles are bucket upper bounds (at most
/// a third above the true value past 10 µs), capped at the exact `max_us`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub count: u64,
    pub sum_us: u64,
    pub p50_us: Option<u64>,
    pub p90_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub p999_us: Option<u64>,
    pub max_us: Option<u64>,
    /// Count per bucket, `LatencyReport::bounds_us` order, plus one last bucket for anything
    /// above the last bound. Cumulative since start: subtract two snapshots for a window.
    pub buckets: Vec<u64>,
}

/// Latencies since the agent started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// Inclusive upper bounds of the buckets, µs.
    pub bounds_us: Vec<u64>,
    /// Kernel timestamp → taken off the ring buffer, every event.
    pub events: LatencyStats,
    /// Kernel timestamp → rule matched (decision taken), every detection.
    pub detections: LatencyStats,
}

/// The pipeline's two histograms.
#[derive(Default)]
pub struct Latencies {
    pub events: Histogram,
    pub detections: Histogram,
}

impl Latencies {
    pub fn report(&self) -> LatencyReport {
        LatencyReport {
            bounds_us: BOUNDS_US.to_vec(),
            events: self.events.snapshot(),
            detections: self.detections.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_increase_and_span_one_microsecond_to_ten_seconds() {
        assert!(BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(BOUNDS_US[0], 1);
        assert_eq!(*BOUNDS_US.last().unwrap(), 10_000_000);
        // Past 10 µs no step is wider than a third.
        assert!(BOUNDS_US
            .windows(2)
            .filter(|w| w[0] >= 10)
            .all(|w| w[1] * 3 <= w[0] * 4));
    }

    #[test]
    fn records_land_in_the_right_buckets() {
        let h = Histogram::default();
        h.record_ns(0); // ≤ 1 µs
        h.record_ns(1_000); // exactly 1 µs
        h.record_ns(1_001); // just over: the 2 µs bucket
        h.record_ns(4_500_000); // 4.5 ms: the 5 ms bucket
        h.record_ns(20_000_000_000); // 20 s: overflow
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets.len(), BOUNDS_US.len() + 1);
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[1], 1);
        let five_ms = BOUNDS_US.iter().position(|&b| b == 5_000).unwrap();
        assert_eq!(s.buckets[five_ms], 1);
        assert_eq!(*s.buckets.last().unwrap(), 1);
        assert_eq!(s.max_us, Some(20_000_000));
    }

    #[test]
    fn percentiles_are_bucket_bounds_capped_at_max() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().p99_us, None);
        for _ in 0..98 {
            h.record_ns(3_000);
        }
        h.record_ns(100_000);
        h.record_ns(110_000);
        let s = h.snapshot();
        assert_eq!(s.p50_us, Some(3));
        assert_eq!(s.p90_us, Some(3));
        assert_eq!(s.p99_us, Some(100));
        // The last sample is in the 120 µs bucket but the max is exact.
        assert_eq!(s.p999_us, Some(110));
        assert_eq!(s.max_us, Some(110));
        assert_eq!(s.sum_us, (98 * 3_000 + 210_000) / 1000);
    }

    #[test]
    fn a_window_is_the_difference_of_two_snapshots() {
        let h = Histogram::default();
        for _ in 0..1000 {
            h.record_ns(2_000);
        }
        let before = h.snapshot();
        for _ in 0..10 {
            h.record_ns(7_000_000);
        }
        let after = h.snapshot();
        let window: Vec<u64> = after
            .buckets
            .iter()
            .zip(&before.buckets)
            .map(|(a, b)| a - b)
            .collect();
        assert_eq!(quantile_us(&window, 0.5), Some(8_000));
        assert_eq!(quantile_us(&after.buckets, 0.5), Some(2));
    }
}
