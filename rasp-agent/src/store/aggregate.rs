//! Storm folding: identical detections within a window become one line with a count, so a
//! process retrying an exec a thousand times a second cannot flood the journal. The first
//! occurrence passes at once (an operator sees it immediately); later identical ones are only
//! counted, and when the window closes one aggregate reports how many were folded.
//!
//! Two ways in: `offer` takes a built `Detection`; `fold` takes only its `FoldKey`, borrowed
//! from the event and the rule before any detection is built. In a storm of identical
//! detections nearly every occurrence is folded, so the pipeline asks `fold` first and builds
//! (and `offer`s) a detection only when no window is open for it: building one (id, time,
//! strings, ancestry) and keying it cost ~7 us of the ~10 us each storm event took.

use std::{
    collections::{hash_map::RandomState, HashMap},
    hash::{BuildHasher, BuildHasherDefault, Hasher},
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

use crate::detect::{Detection, FoldKey};

/// The key as JSON: what the tests look at to see which fields it covers.
#[cfg(test)]
pub fn fold_key(d: &Detection) -> String {
    serde_json::to_string(&FoldKey::of(d)).unwrap_or_default()
}

/// Counters for `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FoldStats {
    /// Detections absorbed into an aggregate instead of being written on their own.
    pub folded: u64,
    /// Aggregates produced.
    pub aggregates: u64,
    /// Detections that passed unfolded because `max_keys` windows were already open.
    pub overflow: u64,
}

struct Window {
    first: Detection,
    /// Order of opening: ties between windows closing at the same instant.
    opened: u64,
    closes: Instant,
    folded: u64,
    last: Option<LastSeen>,
}

/// When the last folded occurrence happened: `offer` has its detection's formatted time,
/// `fold` only a clock reading, formatted if and when the window closes.
enum LastSeen {
    Formatted(String),
    At(SystemTime),
}

/// The map's keys are already SipHash values of a `FoldKey` (see `Aggregator::hash`).
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub struct Aggregator {
    window: Duration,
    max_keys: usize,
    /// Keyed SipHash, seeded per agent: paths and argv come from the monitored processes,
    /// and a predictable hash would let them pile every window into one chain.
    hasher: RandomState,
    /// Open windows by the hash of their `FoldKey`; a chain holds the (rare) collisions.
    open: HashMap<u64, Vec<Window>, BuildHasherDefault<Prehashed>>,
    open_len: usize,
    /// The chain of the last window `fold` or `offer` touched. A storm repeats one detection,
    /// and comparing its key with that window's costs less than hashing it (SipHash of the
    /// key was ~10% of the agent's CPU in an /etc/shadow read storm).
    recent: Option<u64>,
    opened: u64,
    /// Aggregates of windows found closed by `offer`, handed out by the next `expire`.
    ready: Vec<Detection>,
    stats: FoldStats,
}

impl Aggregator {
    /// `window`: how long after a first occurrence identical ones are folded into it;
    /// `max_keys`: bound on open windows (memory), beyond which new keys are not folded.
    pub fn new(window: Duration, max_keys: usize) -> Self {
        Aggregator {
            window,
            max_keys,
            hasher: RandomState::new(),
            open: HashMap::default(),
            open_len: 0,
            recent: None,
            opened: 0,
            ready: Vec::new(),
            stats: FoldStats::default(),
        }
    }

    fn hash(&self, key: &FoldKey<'_>) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Where the window for `key` is in its chain, if one is open (or closed but not yet
    /// expired).
    fn find(&self, hash: u64, key: &FoldKey<'_>) -> Option<usize> {
        self.open
            .get(&hash)?
            .iter()
            .position(|w| FoldKey::of(&w.first) == *key)
    }

    /// `find`, trying the most recently used chain before hashing `key`: (hash, position).
    fn locate(&mut self, key: &FoldKey<'_>) -> (u64, Option<usize>) {
        if let Some(hash) = self.recent {
            if let Some(i) = self.find(hash, key) {
                return (hash, Some(i));
            }
        }
        let hash = self.hash(key);
        let found = self.find(hash, key);
        if found.is_some() {
            self.recent = Some(hash);
        }
        (hash, found)
    }

    /// Fold an occurrence known only by its key into the open window for it, if there is one
    /// (`at`: when it happened, for the aggregate's `last_time`). `false`: no such window, or
    /// it has closed: build the detection and `offer` it.
    pub fn fold(&mut self, key: &FoldKey<'_>, now: Instant, at: SystemTime) -> bool {
        let (hash, Some(i)) = self.locate(key) else {
            return false;
        };
        let Some(w) = self.open.get_mut(&hash).and_then(|chain| chain.get_mut(i)) else {
            return false;
        };
        if now >= w.closes {
            return false;
        }
        w.folded += 1;
        w.last = Some(LastSeen::At(at));
        self.stats.folded += 1;
        true
    }

    /// `Some(d)`: write it now (a first occurrence, or unfoldable). `None`: it was folded and
    /// will be reported by an aggregate when its window closes.
    pub fn offer(&mut self, d: Detection, now: Instant) -> Option<Detection> {
        let key = FoldKey::of(&d);
        let (hash, found) = self.locate(&key);
        if let (Some(i), Some(chain)) = (found, self.open.get_mut(&hash)) {
            let w = &mut chain[i];
            if now < w.closes {
                w.folded += 1;
                w.last = Some(LastSeen::Formatted(d.time));
                self.stats.folded += 1;
                return None;
            }
            // Its window closed before anyone called `expire`: report it, start a new one.
            let w = chain.swap_remove(i);
            if chain.is_empty() {
                self.open.remove(&hash);
            }
            self.open_len -= 1;
            self.close(w);
        }
        if self.open_len >= self.max_keys {
            self.stats.overflow += 1;
            return Some(d);
        }
        self.opened += 1;
        self.recent = Some(hash);
        self.open.entry(hash).or_default().push(Window {
            first: d.clone(),
            opened: self.opened,
            closes: now + self.window,
            folded: 0,
            last: None,
        });
        self.open_len += 1;
        Some(d)
    }

    /// Aggregates of the windows closed by `now`, oldest window first.
    pub fn expire(&mut self, now: Instant) -> Vec<Detection> {
        let mut due = Vec::new();
        self.open.retain(|_, chain| {
            let mut i = 0;
            while i < chain.len() {
                if chain[i].closes <= now {
                    due.push(chain.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            !chain.is_empty()
        });
        self.close_all(due)
    }

    /// Close every window now (shutdown): the aggregates of all that folded anything.
    pub fn flush_all(&mut self) -> Vec<Detection> {
        let all = self.open.drain().flat_map(|(_, chain)| chain).collect();
        self.close_all(all)
    }

    pub fn stats(&self) -> FoldStats {
        self.stats
    }

    pub fn open_keys(&self) -> usize {
        self.open_len
    }

    /// Close windows already taken out of `open`, oldest first, after the aggregates of
    /// windows `offer` found closed.
    fn close_all(&mut self, mut windows: Vec<Window>) -> Vec<Detection> {
        self.open_len -= windows.len();
        windows.sort_by_key(|w| (w.closes, w.opened));
        for w in windows {
            self.close(w);
        }
        std::mem::take(&mut self.ready)
    }

    /// The aggregate: the first occurrence with `count` = occurrences folded after it (the
    /// first was already written with count 1), `last_time` of the last one and an id of its
    /// own (the first's id + ".agg": one aggregate per first, so unique).
    fn close(&mut self, w: Window) {
        if w.folded == 0 {
            return;
        }
        let mut agg = w.first;
        agg.id = format!("{}.agg", agg.id);
        agg.count = w.folded;
        agg.last_time = w.last.map(|last| match last {
            LastSeen::Formatted(time) => time,
            LastSeen::At(at) => humantime::format_rfc3339_micros(at).to_string(),
        });
        self.stats.aggregates += 1;
        self.ready.push(agg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Outcome;
    use crate::store::tests::sample;
    use std::time::UNIX_EPOCH;

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn first_passes_the_rest_fold_into_one_aggregate() {
        let mut agg = Aggregator::new(WINDOW, 4096);
        let t0 = Instant::now();
        let first = sample(0, "shell", "/bin/sh");
        assert_eq!(agg.offer(first.clone(), t0), Some(first.clone()));
        for i in 1..1000u64 {
            let mut d = sample(i, "shell", "/bin/sh");
            d.time = format!("2026-01-01T00:00:{:02}Z", i % 60);
            assert_eq!(agg.offer(d, t0 + Duration::from_millis(i)), None);
        }
        assert!(agg.expire(t0 + Duration::from_secs(9)).is_empty());
        let out = agg.expire(t0 + WINDOW);
        assert_eq!(out.len(), 1);
        let a = &out[0];
        assert_eq!(a.count, 999);
        assert_eq!(a.id, "id-0.agg");
        assert_eq!(a.last_time.as_deref(), Some("2026-01-01T00:00:39Z"));
        assert_eq!(a.time, first.time);
        assert_eq!(a.outcome_detail, first.outcome_detail);
        assert_eq!(
            agg.stats(),
            FoldStats {
                folded: 999,
                aggregates: 1,
                overflow: 0
            }
        );
        assert_eq!(agg.open_keys(), 0);
        // The next occurrence opens a new window and passes.
        assert!(agg
            .offer(sample(1000, "shell", "/bin/sh"), t0 + WINDOW)
            .is_some());
    }

    /// The pipeline's path: `fold` before building, `offer` what it could not fold. It
    /// folds exactly what `offer` alone would, and the aggregate's `last_time` is the last
    /// occurrence's, formatted when the window closes.
    #[test]
    fn fold_by_key_counts_like_offer() {
        let mut agg = Aggregator::new(WINDOW, 4096);
        let t0 = Instant::now();
        let first = sample(0, "shell", "/bin/sh");
        let at = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        // Nothing open yet: the caller must build and offer.
        assert!(!agg.fold(&FoldKey::of(&first), t0, at));
        assert!(agg.offer(first.clone(), t0).is_some());
        for i in 1..200u64 {
            let d = sample(i, "shell", "/bin/sh");
            let at = at + Duration::from_secs(i);
            assert!(agg.fold(&FoldKey::of(&d), t0 + Duration::from_millis(i), at));
        }
        // Another key is not folded into it, by either path.
        let other = sample(200, "shell", "/bin/bash");
        assert!(!agg.fold(&FoldKey::of(&other), t0, at));
        assert!(agg.offer(other, t0).is_some());
        // A closed window is not folded into: the caller offers, which reports and reopens.
        let late = sample(201, "shell", "/bin/sh");
        assert!(!agg.fold(&FoldKey::of(&late), t0 + WINDOW, at));
        assert!(agg.offer(late, t0 + WINDOW).is_some());
        let out = agg.expire(t0 + WINDOW);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].id.as_str(), out[0].count), ("id-0.agg", 199));
        assert_eq!(
            out[0].last_time.as_deref(),
            Some("2026-01-01T00:03:19.000000Z")
        );
        assert_eq!(agg.stats().folded, 199);
        assert_eq!(agg.open_keys(), 1);
    }

    /// Top-level event fields left out of the key on purpose.
    const VOLATILE_EVENT_FIELDS: [&str; 6] =
        ["time", "ts_boot_ns", "pid", "tid", "ppid", "start_ns"];

    /// A new top-level `Event` field must be placed: in `FoldKey` or in the volatile list.
    #[test]
    fn fold_key_covers_every_stable_event_field() {
        let d = sample(0, "r", "/bin/sh");
        let event = serde_json::to_value(&d.event).expect("json");
        let detail = serde_json::to_value(&d.event.detail).expect("json");
        let key: serde_json::Value = serde_json::from_str(&fold_key(&d)).expect("key is json");
        let mut missing = Vec::new();
        for field in event.as_object().expect("object").keys() {
            let placed = VOLATILE_EVENT_FIELDS.contains(&field.as_str())
                || detail.get(field).is_some()
                || key.get(field).is_some();
            if !placed {
                missing.push(field.clone());
            }
        }
        assert!(
            missing.is_empty(),
            "event fields neither in the fold key nor volatile: {missing:?}"
        );
    }

    #[test]
    fn a_lone_first_gives_no_aggregate() {
        let mut agg = Aggregator::new(WINDOW, 16);
        let t0 = Instant::now();
        assert!(agg.offer(sample(0, "r", "/bin/sh"), t0).is_some());
        assert!(agg.expire(t0 + WINDOW).is_empty());
        assert_eq!(agg.open_keys(), 0);
    }

    #[test]
    fn different_keys_do_not_fold_volatile_fields_do() {
        let mut agg = Aggregator::new(WINDOW, 4096);
        let t0 = Instant::now();
        let base = sample(0, "r", "/bin/sh");
        assert!(agg.offer(base.clone(), t0).is_some());

        // Same behaviour from another pid at another time, other latency: folds.
        let mut same = sample(1, "r", "/bin/sh");
        let ev = std::sync::Arc::make_mut(&mut same.event);
        ev.pid = 999;
        ev.tid = 999;
        ev.ppid = 998;
        ev.ts_boot_ns = 12345;
        ev.time = crate::events::WallTime(1_770_000_000_000_000_000);
        same.process.pid = 999;
        same.latency_us = 77;
        assert_eq!(fold_key(&same), fold_key(&base));
        assert!(agg.offer(same, t0).is_none());

        // Each of these differs in something that matters.
        let variant = |i: u64, f: fn(&mut Detection)| {
            let mut d = sample(i, "r", "/bin/sh");
            f(&mut d);
            d
        };
        let others = [
            sample(2, "other-rule", "/bin/sh"),
            sample(3, "r", "/bin/bash"),
            variant(4, |d| {
                let mut argv = d.process.argv.to_vec();
                argv.push("-c".into());
                d.process.argv = argv.into();
            }),
            // Another cgroup (another container): a different key.
            variant(5, |d| std::sync::Arc::make_mut(&mut d.event).cgroup_id += 1),
            variant(6, |d| d.outcome = Outcome::Failed),
            variant(7, |d| d.policy_set_version += 1),
            variant(8, |d| {
                std::sync::Arc::make_mut(&mut d.event).cgroup = Some("/other.slice".into())
            }),
            variant(9, |d| {
                if let crate::events::EventDetail::Exec(e) =
                    &mut std::sync::Arc::make_mut(&mut d.event).detail
                {
                    e.cwd = Some("/elsewhere".into());
                }
            }),
        ];
        for d in others {
            assert_ne!(fold_key(&d), fold_key(&base), "{}", d.id);
            assert!(agg.offer(d, t0).is_some());
        }
        let out = agg.flush_all();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].count, 1);
    }

    #[test]
    fn max_keys_bounds_open_windows_and_overflow_passes() {
        let mut agg = Aggregator::new(WINDOW, 3);
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(agg
                .offer(sample(i, "r", &format!("/bin/p{i}")), t0)
                .is_some());
        }
        assert_eq!(agg.open_keys(), 3);
        assert_eq!(agg.stats().overflow, 2);
        // An overflowed key is not folded either: its repeats pass too (never dropped).
        assert!(agg.offer(sample(5, "r", "/bin/p4"), t0).is_some());
        assert_eq!(agg.stats().overflow, 3);
        // Open keys still fold.
        assert!(agg.offer(sample(6, "r", "/bin/p0"), t0).is_none());
        // Expiry frees the slots.
        assert_eq!(agg.expire(t0 + WINDOW).len(), 1);
        assert!(agg.offer(sample(7, "r", "/bin/p4"), t0 + WINDOW).is_some());
        assert_eq!(agg.open_keys(), 1);
    }

    #[test]
    fn a_window_found_closed_by_offer_is_still_reported() {
        let mut agg = Aggregator::new(WINDOW, 16);
        let t0 = Instant::now();
        agg.offer(sample(0, "r", "/bin/sh"), t0);
        agg.offer(sample(1, "r", "/bin/sh"), t0);
        agg.offer(sample(2, "r", "/bin/sh"), t0);
        // No expire() in between: the late one starts a new window and passes.
        let late = agg.offer(sample(3, "r", "/bin/sh"), t0 + WINDOW);
        assert_eq!(late.map(|d| d.id), Some("id-3".to_string()));
        let out = agg.expire(t0 + WINDOW);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].id.as_str(), out[0].count), ("id-0.agg", 2));
        agg.offer(sample(4, "r", "/bin/sh"), t0 + WINDOW);
        let out = agg.flush_all();
        assert_eq!((out[0].id.as_str(), out[0].count), ("id-3.agg", 1));
    }
}
