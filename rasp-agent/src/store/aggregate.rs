//! Storm folding: identical detections within a window become one line with a count, so a
//! process retrying an exec a thousand times a second cannot flood the journal. The first
//! occurrence passes at once (an operator sees it immediately); later identical ones are only
//! counted, and when the window closes one aggregate reports how many were folded.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    detect::{Detection, Outcome},
    events::EventDetail,
    policy::vocab::{Action, Mode},
};

/// What makes two detections "identical" for folding: the same rule of the same policy
/// version and policy set, with the same mode, action and outcome (including its detail), by
/// the same program (`process.exe` + `process.argv`) in the same container/pod, on the same
/// event minus its volatile fields (`time`, `ts_boot_ns`, `pid`, `tid`, `ppid`: they differ
/// between occurrences of the same behaviour), i.e. uid, gid, comm, cgroup id and path, and
/// the whole kind-specific detail (kind, then exe/argv/cwd of an exec, a file path, a
/// destination...), so future event kinds fold correctly without touching this function.
/// Not in the key: `id`, `time`, `latency_us`, `description` (rule text), `ancestry` (it
/// carries pids; a rule that cares about the parent already matched on it), `process.pid`.
///
/// Serialized from borrowed fields in one pass (no clone, no `serde_json::Value`): this runs
/// on every `submit`, so it is the cost of the folding path.
#[cfg(test)]
pub fn fold_key(d: &Detection) -> String {
    // Only fails for maps with non-string keys, which none of these types has; an empty key
    // would merely fold more eagerly, never lose a detection.
    serde_json::to_string(&FoldKey::of(d)).unwrap_or_default()
}

/// `fold_key` written into `buf` (cleared first), for lookups without a new string.
fn fold_key_into(d: &Detection, buf: &mut Vec<u8>) {
    buf.clear();
    // As in `fold_key`; writing to a Vec cannot fail otherwise.
    let _ = serde_json::to_writer(&mut *buf, &FoldKey::of(d));
}

impl<'a> FoldKey<'a> {
    fn of(d: &'a Detection) -> Self {
        let e = &d.event;
        FoldKey {
            rule: &d.rule_id,
            policy: &d.policy,
            policy_version: d.policy_version,
            policy_set_version: d.policy_set_version,
            mode: d.mode,
            action: d.action,
            outcome: d.outcome,
            outcome_detail: &d.outcome_detail,
            exe: &d.process.exe,
            argv: &d.process.argv,
            container_id: &d.container_id,
            pod_uid: &d.pod_uid,
            uid: e.uid,
            gid: e.gid,
            comm: &e.comm,
            cgroup_id: e.cgroup_id,
            cgroup: &e.cgroup,
            detail: &e.detail,
        }
    }
}

#[derive(Serialize)]
struct FoldKey<'a> {
    rule: &'a str,
    policy: &'a str,
    policy_version: u32,
    policy_set_version: u64,
    mode: Mode,
    action: Action,
    outcome: Outcome,
    outcome_detail: &'a Option<String>,
    exe: &'a Option<String>,
    argv: &'a [String],
    container_id: &'a Option<String>,
    pod_uid: &'a Option<String>,
    uid: u32,
    gid: u32,
    comm: &'a str,
    cgroup_id: u64,
    cgroup: &'a Option<String>,
    detail: &'a EventDetail,
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
    closes: Instant,
    folded: u64,
    last_time: Option<String>,
}

pub struct Aggregator {
    window: Duration,
    max_keys: usize,
    /// Keyed by `fold_key`'s bytes.
    open: HashMap<Box<[u8]>, Window>,
    /// Where `offer` builds the key: in a storm of identical detections every one is keyed
    /// and then folded, and allocating, hashing and freeing a fresh key string each time
    /// showed at ~25% of the agent's CPU. A key is copied only to open a window.
    scratch: Vec<u8>,
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
            open: HashMap::new(),
            scratch: Vec::new(),
            ready: Vec::new(),
            stats: FoldStats::default(),
        }
    }

    /// `Some(d)`: write it now (a first occurrence, or unfoldable). `None`: it was folded and
    /// will be reported by an aggregate when its window closes.
    pub fn offer(&mut self, d: Detection, now: Instant) -> Option<Detection> {
        let mut key = std::mem::take(&mut self.scratch);
        fold_key_into(&d, &mut key);
        let pass = self.offer_keyed(d, &key, now);
        self.scratch = key;
        pass
    }

    fn offer_keyed(&mut self, d: Detection, key: &[u8], now: Instant) -> Option<Detection> {
        if let Some(w) = self.open.get_mut(key) {
            if now < w.closes {
                w.folded += 1;
                w.last_time = Some(d.time);
                self.stats.folded += 1;
                return None;
            }
            // Its window closed before anyone called `expire`: report it, start a new one.
            if let Some(w) = self.open.remove(key) {
                self.close(w);
            }
        }
        if self.open.len() >= self.max_keys {
            self.stats.overflow += 1;
            return Some(d);
        }
        self.open.insert(
            key.into(),
            Window {
                first: d.clone(),
                closes: now + self.window,
                folded: 0,
                last_time: None,
            },
        );
        Some(d)
    }

    /// Aggregates of the windows closed by `now`, oldest window first.
    pub fn expire(&mut self, now: Instant) -> Vec<Detection> {
        let mut due: Vec<(Instant, Box<[u8]>)> = self
            .open
            .iter()
            .filter(|(_, w)| w.closes <= now)
            .map(|(k, w)| (w.closes, k.clone()))
            .collect();
        due.sort();
        for (_, key) in due {
            if let Some(w) = self.open.remove(&key) {
                self.close(w);
            }
        }
        std::mem::take(&mut self.ready)
    }

    /// Close every window now (shutdown): the aggregates of all that folded anything.
    pub fn flush_all(&mut self) -> Vec<Detection> {
        let mut all: Vec<Window> = self.open.drain().map(|(_, w)| w).collect();
        all.sort_by_key(|w| w.closes);
        for w in all {
            self.close(w);
        }
        std::mem::take(&mut self.ready)
    }

    pub fn stats(&self) -> FoldStats {
        self.stats
    }

    pub fn open_keys(&self) -> usize {
        self.open.len()
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
        agg.last_time = w.last_time;
        self.stats.aggregates += 1;
        self.ready.push(agg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::sample;

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

    /// Top-level event fields left out of the key on purpose.
    const VOLATILE_EVENT_FIELDS: [&str; 5] = ["time", "ts_boot_ns", "pid", "tid", "ppid"];

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
        ev.time = "2026-02-02T00:00:00Z".into();
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
            variant(4, |d| d.process.argv.push("-c".into())),
            variant(5, |d| d.container_id = Some("abc".into())),
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
