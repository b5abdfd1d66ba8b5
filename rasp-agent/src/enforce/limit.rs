//! Per-rule bound on enforcement: a rule that suddenly matches everything (a bad policy, an
//! attacker provoking it) may act at most `per_minute` times a minute; past that its
//! matches are recorded, counted and not acted on, so a policy mistake cannot take the node
//! down by itself. Kernel-side denials are not limited: refusing an act harms nothing.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

const WINDOW: Duration = Duration::from_secs(60);
/// Rules tracked at once; the least recently acting is forgotten beyond.
const MAX_RULES: usize = 4096;

pub struct RateLimiter {
    per_minute: usize,
    recent: HashMap<String, VecDeque<Instant>>,
    limited: u64,
}

impl RateLimiter {
    /// `per_minute` 0: no limit.
    pub fn new(per_minute: usize) -> Self {
        RateLimiter {
            per_minute,
            recent: HashMap::new(),
            limited: 0,
        }
    }

    /// May `rule` act now? Counts the action when it may, the refusal when not.
    pub fn allow(&mut self, rule: &str, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        if !self.recent.contains_key(rule) && self.recent.len() >= MAX_RULES {
            let stalest = self
                .recent
                .iter()
                .min_by_key(|(_, q)| q.back().copied())
                .map(|(r, _)| r.clone());
            if let Some(r) = stalest {
                self.recent.remove(&r);
            }
        }
        let q = self.recent.entry(rule.to_string()).or_default();
        while q.front().is_some_and(|&t| now.duration_since(t) >= WINDOW) {
            q.pop_front();
        }
        if q.len() >= self.per_minute {
            self.limited += 1;
            return false;
        }
        q.push_back(now);
        true
    }

    pub fn per_minute(&self) -> usize {
        self.per_minute
    }

    /// Actions refused by the limit since start.
    pub fn limited(&self) -> u64 {
        self.limited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_acts_at_most_n_times_a_minute_and_recovers() {
        let mut l = RateLimiter::new(3);
        let t0 = Instant::now();
        assert!((0..3).all(|i| l.allow("r", t0 + Duration::from_secs(i))));
        assert!(!l.allow("r", t0 + Duration::from_secs(10)));
        assert!(l.allow("other", t0 + Duration::from_secs(10)), "per rule");
        assert_eq!(l.limited(), 1);
        assert!(
            l.allow("r", t0 + Duration::from_secs(61)),
            "the window moved"
        );
        assert!(RateLimiter::new(0).allow("r", t0));
    }
}
