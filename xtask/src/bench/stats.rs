//! Summaries of repeated measurements: median and spread over rounds, ratios to the
//! no-agent baseline, and percentiles out of a latency histogram window.

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

/// Per-round ratios `config[i] / baseline[i]` (rounds ran side by side, so each pair saw the
/// same machine state), summarised. Rounds missing on either side are left out.
pub fn paired_ratio(config: &[f64], baseline: &[f64]) -> Option<Summary> {
    let ratios: Vec<f64> = config
        .iter()
        .zip(baseline)
        .filter(|(_, b)| **b > 0.0)
        .map(|(c, b)| c / b)
        .collect();
    Summary::of(&ratios)
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

    #[test]
    fn ratios_pair_rounds() {
        let r = paired_ratio(&[90.0, 45.0, 80.0], &[100.0, 50.0, 100.0]).expect("ratio");
        assert!((r.median - 0.9).abs() < 1e-9);
        assert!((r.min - 0.8).abs() < 1e-9);
        assert!((overhead(0.8) - 0.25).abs() < 1e-9);
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
