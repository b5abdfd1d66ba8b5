//! Summaries of repeated measurements: median and spread over rounds, ratios to the
//! no-agent baseline paired by round, rank-based intervals for their median with a
//! met / not met / undecided verdict, and percentiles out of a latency histogram window.

use std::collections::BTreeMap;

/// Median, extremes and count of one configuration's samples of one workload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: usize,
}

impl Summary {
    /// `None` for no samples or any non-finite one (a failed run must not look like a rate).
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            samples: n,
        })
    }

    /// (max − min) / median, in percent: how far apart the rounds were.
    pub fn spread_pct(&self) -> f64 {
        if self.median == 0.0 {
            return 0.0;
        }
        (self.max - self.min) / self.median * 100.0
    }
}

/// `items` in round `round`'s order: rotated left by one place a round, so over as many
/// rounds as there are items each one runs in every position once (first after a start,
/// last after the longest run) and no position's bias sticks to one item.
pub fn rotated<T: Clone>(items: &[T], round: usize) -> Vec<T> {
    let mut order = items.to_vec();
    if !order.is_empty() {
        let len = order.len();
        order.rotate_left(round % len);
    }
    order
}

/// One measurement per round, keyed by the round it was taken in: a round where a
/// configuration failed to start simply has no entry, so pairs never shift.
pub type ByRound = BTreeMap<usize, f64>;

/// `f(a, b)` for every round both series have (`None` from `f` drops that round too).
pub fn paired(a: &ByRound, b: &ByRound, f: impl Fn(f64, f64) -> Option<f64>) -> Vec<f64> {
    a.iter()
        .filter_map(|(round, x)| b.get(round).and_then(|y| f(*x, *y)))
        .filter(|v| v.is_finite())
        .collect()
}

/// Per-round ratios `num / den`, rounds matched by id (each pair ran side by side and saw
/// the same machine state); rounds missing on either side, or with `den ≤ 0`, are left out.
pub fn paired_ratios(num: &ByRound, den: &ByRound) -> Vec<f64> {
    paired(num, den, |n, d| (d > 0.0).then(|| n / d))
}

/// Confidence the intervals aim for. With the rank-based interval below it takes 5 rounds
/// (min..max then covers the median with 93.75%); fewer rounds decide nothing.
pub const CONFIDENCE: f64 = 0.90;

/// A distribution-free interval for the median of paired values: the k-th smallest and
/// k-th largest values, k the largest for which the sign test's coverage
/// `1 − 2·P(Binomial(n, ½) < k)` still reaches the wanted confidence. No assumption about
/// how this machine's noise is shaped, only that rounds are independent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub median: f64,
    pub low: f64,
    pub high: f64,
    /// The probability that [low, high] holds the true median (exact, from the binomial).
    pub coverage: f64,
    pub samples: usize,
}

/// What an interval says about "the value is at least `threshold`".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The whole interval is at or above the threshold.
    Met,
    /// The whole interval is below it.
    NotMet,
    /// The interval straddles it, or too few rounds for the wanted confidence.
    Undecided,
}

impl Interval {
    /// `None` for no values or any non-finite one.
    pub fn of_median(values: &[f64], confidence: f64) -> Option<Interval> {
        let median = Summary::of(values)?.median;
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        // k = 1 (min..max) is the widest there is; take it even when it falls short, so the
        // report can show what the rounds span, and let `verdict` refuse to decide.
        let mut k = 1;
        for candidate in (1..=n.div_ceil(2)).rev() {
            if sign_coverage(n, candidate) >= confidence {
                k = candidate;
                break;
            }
        }
        Some(Interval {
            median,
            low: sorted[k - 1],
            high: sorted[n - k],
            coverage: sign_coverage(n, k),
            samples: n,
        })
    }

    /// Met / not met / undecided for "at most `threshold`" (a cost budget), at `confidence`.
    pub fn verdict_at_most(&self, threshold: f64, confidence: f64) -> Verdict {
        if self.coverage < confidence {
            Verdict::Undecided
        } else if self.high <= threshold {
            Verdict::Met
        } else if self.low > threshold {
            Verdict::NotMet
        } else {
            Verdict::Undecided
        }
    }

    /// Met / not met / undecided for "at least `threshold`", at `confidence`.
    pub fn verdict(&self, threshold: f64, confidence: f64) -> Verdict {
        if self.coverage < confidence {
            Verdict::Undecided
        } else if self.low >= threshold {
            Verdict::Met
        } else if self.high < threshold {
            Verdict::NotMet
        } else {
            Verdict::Undecided
        }
    }
}

/// `1 − 2·P(B ≤ k − 1)` for B ~ Binomial(n, ½): the coverage of [x₍ₖ₎, x₍ₙ₋ₖ₊₁₎].
fn sign_coverage(n: usize, k: usize) -> f64 {
    let mut tail = 0.0;
    let mut choose = 1.0; // C(n, 0)
    for i in 0..k {
        tail += choose;
        choose = choose * (n - i) as f64 / (i + 1) as f64;
    }
    (1.0 - 2.0 * tail * 0.5f64.powi(n as i32)).max(0.0)
}

/// Time an operation takes under `config` beyond the baseline, per operation, as a
/// fraction of the baseline's time: 1/ratio − 1 (0.25 = each op takes 25% longer).
pub fn overhead(ratio: f64) -> f64 {
    if ratio <= 0.0 {
        return f64::INFINITY;
    }
    1.0 / ratio - 1.0
}

/// A window of a cumulative latency histogram: bucket upper bounds (µs, ascending) and the
/// counts that fell in each bucket between two snapshots.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub bounds_us: Vec<f64>,
    pub counts: Vec<u64>,
}

impl Histogram {
    /// `after − before`, bucket by bucket; `None` if the two do not have the same buckets.
    pub fn window(before: &Histogram, after: &Histogram) -> Option<Histogram> {
        if before.bounds_us != after.bounds_us || before.counts.len() != after.counts.len() {
            return None;
        }
        let counts = after
            .counts
            .iter()
            .zip(&before.counts)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        Some(Histogram {
            bounds_us: after.bounds_us.clone(),
            counts,
        })
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Upper bound of the bucket holding quantile `q` (0..=1): a conservative percentile.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (count, bound) in self.counts.iter().zip(&self.bounds_us) {
            seen += count;
            if seen >= rank {
                return Some(*bound);
            }
        }
        self.bounds_us.last().copied()
    }

    /// Upper bound of the highest non-empty bucket.
    pub fn max_us(&self) -> Option<f64> {
        self.counts
            .iter()
            .zip(&self.bounds_us)
            .rev()
            .find(|(count, _)| **count > 0)
            .map(|(_, bound)| *bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let odd = Summary::of(&[3.0, 1.0, 2.0]).expect("summary");
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        let even = Summary::of(&[4.0, 1.0, 2.0, 3.0]).expect("summary");
        assert_eq!(even.median, 2.5);
        assert!((even.spread_pct() - 120.0).abs() < 1e-9);
    }

    #[test]
    fn no_summary_for_nothing_or_nan() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }

    fn rounds(values: &[(usize, f64)]) -> ByRound {
        values.iter().copied().collect()
    }

    #[test]
    fn ratios_pair_rounds_by_id_across_a_missing_round() {
        // Round 1 of the configuration failed to start: by position, 45/50 would meet 80/100
        // and every later pair would be off by one.
        let config = rounds(&[(0, 90.0), (2, 80.0), (3, 30.0)]);
        let base = rounds(&[(0, 100.0), (1, 50.0), (2, 100.0), (3, 60.0)]);
        let ratios = paired_ratios(&config, &base);
        assert_eq!(ratios.len(), 3);
        for (got, want) in ratios.iter().zip([0.9, 0.8, 0.5]) {
            assert!((got - want).abs() < 1e-12, "{ratios:?}");
        }
        // A zero baseline is no ratio.
        let zero = rounds(&[(0, 0.0)]);
        assert!(paired_ratios(&config, &zero).is_empty());
        assert!((overhead(0.8) - 0.25).abs() < 1e-9);
    }

    #[test]
    fn rotation_puts_every_item_in_every_position_once() {
        let items = ["a", "b", "c"];
        assert_eq!(rotated(&items, 0), ["a", "b", "c"]);
        assert_eq!(rotated(&items, 1), ["b", "c", "a"]);
        assert_eq!(rotated(&items, 4), ["b", "c", "a"]);
        for position in 0..items.len() {
            let seen: std::collections::BTreeSet<&str> = (0..items.len())
                .map(|r| rotated(&items, r)[position])
                .collect();
            assert_eq!(seen.len(), items.len(), "position {position}");
        }
        assert!(rotated::<u8>(&[], 3).is_empty());
    }

    #[test]
    fn an_interval_that_straddles_the_threshold_decides_nothing() {
        // Six rounds: min..max covers the median with 97%, and here spans 0.95.
        let i = Interval::of_median(&[0.90, 0.93, 0.96, 0.97, 0.99, 1.02], CONFIDENCE)
            .expect("interval");
        assert!(i.coverage >= CONFIDENCE);
        assert_eq!(i.verdict(0.95, CONFIDENCE), Verdict::Undecided);
        assert_eq!(i.verdict_at_most(0.95, CONFIDENCE), Verdict::Undecided);
        assert_eq!(i.verdict(0.85, CONFIDENCE), Verdict::Met);
    }

    #[test]
    fn sign_coverage_is_the_binomial_tail() {
        assert!((sign_coverage(5, 1) - 0.9375).abs() < 1e-12);
        assert!((sign_coverage(4, 1) - 0.875).abs() < 1e-12);
        // n = 10: k = 2 leaves 2·(1 + 10)/1024 outside.
        assert!((sign_coverage(10, 2) - (1.0 - 22.0 / 1024.0)).abs() < 1e-12);
        assert!((sign_coverage(10, 3) - (1.0 - 112.0 / 1024.0)).abs() < 1e-12);
    }

    #[test]
    fn interval_takes_the_innermost_ranks_with_enough_coverage() {
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        let i = Interval::of_median(&values, 0.90).expect("interval");
        // k = 3 covers only 89%, so k = 2: the 2nd smallest and 2nd largest.
        assert_eq!((i.low, i.high, i.median), (2.0, 9.0, 5.5));
        assert!(i.coverage > 0.97);
        let five = Interval::of_median(&[0.9, 1.1, 0.95, 1.0, 1.05], 0.90).expect("interval");
        assert_eq!((five.low, five.high, five.median), (0.9, 1.1, 1.0));
        assert_eq!(Interval::of_median(&[], 0.9), None);
        assert_eq!(Interval::of_median(&[1.0, f64::NAN], 0.9), None);
    }

    #[test]
    fn verdicts() {
        let i = Interval::of_median(&[0.96, 0.97, 0.98, 0.99, 1.0], CONFIDENCE).expect("interval");
        assert_eq!(i.verdict(0.95, CONFIDENCE), Verdict::Met);
        assert_eq!(i.verdict(0.96, CONFIDENCE), Verdict::Met);
        assert_eq!(i.verdict(1.01, CONFIDENCE), Verdict::NotMet);
        assert_eq!(i.verdict(0.975, CONFIDENCE), Verdict::Undecided);
        // Four rounds cannot reach 90%, however tight they are.
        let four = Interval::of_median(&[1.0, 1.0, 1.0, 1.0], CONFIDENCE).expect("interval");
        assert_eq!(four.verdict(0.5, CONFIDENCE), Verdict::Undecided);
        assert_eq!(four.verdict(0.5, 0.85), Verdict::Met);
    }

    #[test]
    fn budget_verdicts_are_the_mirror_image() {
        let i =
            Interval::of_median(&[8.0, 8.2, 8.1, 8.4, 8.3, 8.05], CONFIDENCE).expect("interval");
        assert_eq!(i.verdict_at_most(15.0, CONFIDENCE), Verdict::Met);
        assert_eq!(i.verdict_at_most(8.4, CONFIDENCE), Verdict::Met);
        assert_eq!(i.verdict_at_most(7.9, CONFIDENCE), Verdict::NotMet);
        assert_eq!(i.verdict_at_most(8.2, CONFIDENCE), Verdict::Undecided);
        let four = Interval::of_median(&[1.0; 4], CONFIDENCE).expect("interval");
        assert_eq!(four.verdict_at_most(2.0, CONFIDENCE), Verdict::Undecided);
    }

    #[test]
    fn histogram_window_percentiles() {
        let bounds = vec![1.0, 10.0, 100.0, 1000.0];
        let before = Histogram {
            bounds_us: bounds.clone(),
            counts: vec![5, 0, 0, 0],
        };
        let after = Histogram {
            bounds_us: bounds.clone(),
            counts: vec![5, 90, 9, 1],
        };
        let w = Histogram::window(&before, &after).expect("same buckets");
        assert_eq!(w.total(), 100);
        assert_eq!(w.quantile_us(0.5), Some(10.0));
        assert_eq!(w.quantile_us(0.99), Some(100.0));
        assert_eq!(w.max_us(), Some(1000.0));
        let other = Histogram {
            bounds_us: vec![1.0],
            counts: vec![1],
        };
        assert_eq!(Histogram::window(&other, &after), None);
    }
}
