//! Credential stuffing and login floods: per client (the peer address the caller names),
//! 401/403 answers counted in a sliding window; crossing N within T alerts once, and again
//! only after the client's count fell back below N. Memory is bounded: the least recently
//! seen client is forgotten first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Time as seen by the detector, injected so tests step it by hand.
pub trait Clock {
    /// Monotonic time since an arbitrary origin.
    fn now(&self) -> Duration;
}

/// The process's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodConfig {
    /// Failed answers within `window` that make a flood.
    pub threshold: u32,
    pub window: Duration,
    /// Clients tracked at once.
    pub max_clients: usize,
}

impl Default for FloodConfig {
    /// 20 refusals in 60 s: far above a person mistyping a password, well below what a
    /// stuffing tool sends (hundreds a minute).
    fn default() -> Self {
        FloodConfig {
            threshold: 20,
            window: Duration::from_secs(60),
            max_clients: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloodAlert<K> {
    pub client: K,
    /// Failures counted within the window when it fired.
    pub failures: u32,
    pub window: Duration,
    /// When the first failure of the window was seen.
    pub first_at: Duration,
    pub at: Duration,
}

#[derive(Debug)]
struct ClientState {
    /// Times of the latest failures, at most `threshold` of them (older ones cannot matter).
    failures: VecDeque<Duration>,
    /// Alerted and not yet back below the threshold.
    alerted: bool,
    /// Key into the recency index.
    seen: (Duration, u64),
}

/// Whether a status is a refused login.
pub fn is_auth_failure(status: u16) -> bool {
    status == 401 || status == 403
}

#[derive(Debug)]
pub struct LoginFloodDetector<K, C = MonotonicClock> {
    config: FloodConfig,
    clock: C,
    clients: HashMap<K, ClientState>,
    /// Clients by last activity, oldest first, for eviction in O(log n).
    recency: BTreeMap<(Duration, u64), K>,
    seq: u64,
    evicted: u64,
}

impl<K: Hash + Eq + Clone> LoginFloodDetector<K, MonotonicClock> {
    pub fn new(config: FloodConfig) -> Self {
        Self::with_clock(config, MonotonicClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> LoginFloodDetector<K, C> {
    pub fn with_clock(config: FloodConfig, clock: C) -> Self {
        LoginFloodDetector {
            config: FloodConfig {
                threshold: config.threshold.max(1),
                max_clients: config.max_clients.max(1),
                ..config
            },
            clock,
            clients: HashMap::new(),
            recency: BTreeMap::new(),
            seq: 0,
            evicted: 0,
        }
    }

    pub fn tracked_clients(&self) -> usize {
        self.clients.len()
    }

    /// Clients forgotten to keep within `max_clients`.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// One response to `client`; an alert when this one makes the window cross the threshold.
    pub fn observe(&mut self, client: &K, status: u16) -> Option<FloodAlert<K>> {
        if !is_auth_failure(status) {
            return None;
        }
        let now = self.clock.now();
        let threshold = self.config.threshold as usize;
        let window = self.config.window;
        self.seq += 1;
        let seen = (now, self.seq);
        if !self.clients.contains_key(client) {
            while self.clients.len() >= self.config.max_clients {
                let Some((_, oldest)) = self.recency.pop_first() else {
                    break;
                };
                self.clients.remove(&oldest);
                self.evicted += 1;
            }
            self.clients.insert(
                client.clone(),
                ClientState {
                    failures: VecDeque::with_capacity(threshold.min(64)),
                    alerted: false,
                    seen,
                },
            );
        } else if let Some(state) = self.clients.get(client) {
            self.recency.remove(&state.seen);
        }
        self.recency.insert(seen, client.clone());
        let state = self.clients.get_mut(client)?;
        state.seen = seen;
        while state
            .failures
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= window)
        {
            state.failures.pop_front();
        }
        if state.failures.len() < threshold {
            // Back below the threshold within the window: the next crossing alerts again.
            state.alerted = state.alerted && state.failures.len() + 1 >= threshold;
        }
        if state.failures.len() == threshold {
            state.failures.pop_front();
        }
        state.failures.push_back(now);
        if state.failures.len() >= threshold && !state.alerted {
            state.alerted = true;
            return Some(FloodAlert {
                client: client.clone(),
                failures: state.failures.len() as u32,
                window,
                first_at: state.failures.front().copied().unwrap_or(now),
                at: now,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::net::{IpAddr, Ipv4Addr};
    use std::rc::Rc;

    #[derive(Clone, Default)]
    struct ManualClock(Rc<Cell<Duration>>);

    impl ManualClock {
        fn advance(&self, d: Duration) {
            self.0.set(self.0.get() + d);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Duration {
            self.0.get()
        }
    }

    fn detector(
        threshold: u32,
        window_s: u64,
        max: usize,
    ) -> (LoginFloodDetector<IpAddr, ManualClock>, ManualClock) {
        let clock = ManualClock::default();
        let d = LoginFloodDetector::with_clock(
            FloodConfig {
                threshold,
                window: Duration::from_secs(window_s),
                max_clients: max,
            },
            clock.clone(),
        );
        (d, clock)
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn alerts_once_when_n_failures_fall_within_the_window() {
        let (mut d, clock) = detector(5, 10, 16);
        let mut alerts = Vec::new();
        for _ in 0..50 {
            clock.advance(Duration::from_millis(100));
            if let Some(a) = d.observe(&ip(1), 401) {
                alerts.push(a);
            }
        }
        assert_eq!(
            alerts.len(),
            1,
            "one alert per crossing, not one per failure"
        );
        assert_eq!(alerts[0].failures, 5);
        assert_eq!(alerts[0].at, Duration::from_millis(500));
        assert_eq!(alerts[0].first_at, Duration::from_millis(100));
        // Successes are not failures.
        assert!(d.observe(&ip(2), 200).is_none());
        assert_eq!(d.tracked_clients(), 1);
    }

    #[test]
    fn slow_failures_never_alert_and_a_new_burst_alerts_again() {
        let (mut d, clock) = detector(3, 10, 16);
        for _ in 0..20 {
            clock.advance(Duration::from_secs(6));
            assert!(d.observe(&ip(1), 403).is_none());
        }
        // A burst: alerts once.
        let burst: Vec<_> = (0..6)
            .filter_map(|_| {
                clock.advance(Duration::from_millis(10));
                d.observe(&ip(1), 401)
            })
            .collect();
        assert_eq!(burst.len(), 1);
        // Quiet longer than the window, then another burst: a new crossing, a new alert.
        clock.advance(Duration::from_secs(30));
        let again: Vec<_> = (0..6)
            .filter_map(|_| {
                clock.advance(Duration::from_millis(10));
                d.observe(&ip(1), 401)
            })
            .collect();
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn clients_are_counted_apart_and_bounded() {
        let (mut d, clock) = detector(3, 60, 4);
        // Two failures each from many clients: nobody crosses, memory stays at 4.
        for round in 0..2 {
            for n in 0..100u8 {
                clock.advance(Duration::from_millis(1));
                assert!(d.observe(&ip(n), 401).is_none(), "round {round} client {n}");
            }
        }
        assert_eq!(d.tracked_clients(), 4);
        assert!(d.evicted() >= 196);
        // Each round evicted everyone (100 clients through 4 slots), so the kept clients,
        // the most recent, start again from one failure: two more make three.
        assert!(d.observe(&ip(99), 401).is_none());
        assert!(d.observe(&ip(99), 401).is_some());
        // An evicted client starts from zero.
        assert!(d.observe(&ip(0), 401).is_none());
    }
}
