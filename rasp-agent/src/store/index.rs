//! The recent detections in memory, for `rasp-agent detections`: bounded, newest last, with
//! the filters the CLI offers. Loaded from the journal at start so it survives a restart.

use std::{collections::VecDeque, sync::Arc, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{detect::Detection, policy::vocab::Severity};

/// Which detections a client wants. All filters are optional and combine with AND.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectionQuery {
    /// Only detections at or after this time; an aggregate counts by the time of its last
    /// folded occurrence. On the wire: RFC 3339 (`DetectionQuery::parse_since` also takes
    /// "10m" for ten minutes ago).
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub since: Option<SystemTime>,
    /// Only this severity and above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    /// Only this rule id (exact match: ids are short and listed by `policy list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The most recent N matching; all that are kept when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
#[error("bad --since {input:?}: expected an RFC 3339 time (2026-01-02T15:04:05Z) or a duration ago (90s, 10m, 2h, 1day)")]
pub struct BadSince {
    pub input: String,
}

impl DetectionQuery {
    /// `--since`: an absolute RFC 3339 time (UTC, `Z` or no offset) or a duration before
    /// `now` in humantime's syntax ("10m", "2h 30m").
    pub fn parse_since(input: &str, now: SystemTime) -> Result<SystemTime, BadSince> {
        let s = input.trim();
        if let Ok(t) = humantime::parse_rfc3339_weak(s) {
            return Ok(t);
        }
        humantime::parse_duration(s)
            .ok()
            .map(|ago| now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH))
            .ok_or_else(|| BadSince {
                input: input.to_string(),
            })
    }

    /// The filters that depend on the detection alone (severity, rule): what a live stream
    /// applies, where `since` and `limit` have no meaning.
    pub fn admits(&self, d: &Detection) -> bool {
        self.min_severity.is_none_or(|m| d.severity >= m)
            && self.rule.as_deref().is_none_or(|r| d.rule_id == r)
    }

    fn matches(&self, e: &Indexed) -> bool {
        // A detection whose time does not parse is never hidden by `since`.
        self.since.is_none_or(|s| e.at.is_none_or(|at| at >= s)) && self.admits(&e.d)
    }
}

struct Indexed {
    /// Parsed once at insert: `last_time` for an aggregate, else `time`.
    at: Option<SystemTime>,
    d: Arc<Detection>,
}

pub struct DetectionIndex {
    entries: VecDeque<Indexed>,
    capacity: usize,
}

impl DetectionIndex {
    pub fn new(capacity: usize) -> Self {
        DetectionIndex {
            entries: VecDeque::with_capacity(capacity.min(1 << 14)),
            capacity,
        }
    }

    /// Add the newest detection, forgetting the oldest beyond the capacity.
    pub fn push(&mut self, d: Arc<Detection>) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        let time = d.last_time.as_deref().unwrap_or(&d.time);
        let at = humantime::parse_rfc3339_weak(time).ok();
        self.entries.push_back(Indexed { at, d });
    }

    /// The most recent `limit` matches, oldest first.
    pub fn query(&self, q: &DetectionQuery) -> Vec<Arc<Detection>> {
        let mut out: Vec<Arc<Detection>> = self
            .entries
            .iter()
            .rev()
            .filter(|e| q.matches(e))
            .take(q.limit.unwrap_or(usize::MAX))
            .map(|e| e.d.clone())
            .collect();
        out.reverse();
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `Option<SystemTime>` as an RFC 3339 string (what the CLI and people read), not serde's
/// default `{secs_since_epoch, nanos_since_epoch}`.
mod rfc3339_opt {
    use super::*;
    use serde::{de::Error, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_rfc3339_weak(&s).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::tests::{sample, t0};

    fn idx(n: u64) -> DetectionIndex {
        let mut index = DetectionIndex::new(100);
        for i in 0..n {
            let rule = if i % 3 == 0 {
                "shadow-read"
            } else {
                "exec-tmp"
            };
            let mut d = sample(i, rule, "/bin/sh");
            d.severity = match i % 4 {
                0 => Severity::Low,
                1 => Severity::Medium,
                2 => Severity::High,
                _ => Severity::Critical,
            };
            index.push(Arc::new(d));
        }
        index
    }

    fn ids(v: &[Arc<Detection>]) -> Vec<String> {
        v.iter().map(|d| d.id.clone()).collect()
    }

    #[test]
    fn bounded_newest_last() {
        let mut index = DetectionIndex::new(3);
        for i in 0..5 {
            index.push(Arc::new(sample(i, "r", "/bin/sh")));
        }
        assert_eq!(index.len(), 3);
        let all = index.query(&DetectionQuery::default());
        assert_eq!(ids(&all), ["id-2", "id-3", "id-4"]);
    }

    #[test]
    fn filters_combine_and_limit_takes_the_most_recent() {
        let index = idx(20);
        let q = |f: fn(&mut DetectionQuery)| {
            let mut q = DetectionQuery::default();
            f(&mut q);
            ids(&index.query(&q))
        };
        assert_eq!(q(|_| {}).len(), 20);
        assert_eq!(
            q(|q| q.limit = Some(2)),
            ["id-18", "id-19"],
            "most recent, oldest first"
        );
        assert_eq!(
            q(|q| q.rule = Some("shadow-read".into())),
            ["id-0", "id-3", "id-6", "id-9", "id-12", "id-15", "id-18"]
        );
        assert_eq!(
            q(|q| q.min_severity = Some(Severity::Critical)),
            ["id-3", "id-7", "id-11", "id-15", "id-19"]
        );
        // sample(i) happened at t0() + i s.
        assert_eq!(
            q(|q| q.since = Some(t0() + Duration::from_secs(17))),
            ["id-17", "id-18", "id-19"]
        );
        assert_eq!(
            q(|q| {
                q.rule = Some("shadow-read".into());
                q.min_severity = Some(Severity::High);
                q.since = Some(t0() + Duration::from_secs(5));
                q.limit = Some(1);
            }),
            ["id-18"]
        );
        assert!(
            q(|q| q.rule = Some("shadow".into())).is_empty(),
            "exact ids"
        );
    }

    #[test]
    fn aggregates_count_by_their_last_time() {
        let mut index = DetectionIndex::new(10);
        let mut agg = sample(0, "r", "/bin/sh");
        agg.last_time = Some(humantime::format_rfc3339(t0() + Duration::from_secs(60)).to_string());
        index.push(Arc::new(agg));
        let q = DetectionQuery {
            since: Some(t0() + Duration::from_secs(30)),
            ..Default::default()
        };
        assert_eq!(index.query(&q).len(), 1);
    }

    #[test]
    fn since_parses_times_and_durations_and_round_trips() {
        let now = t0() + Duration::from_secs(3600);
        assert_eq!(
            DetectionQuery::parse_since("10m", now).expect("duration"),
            now - Duration::from_secs(600)
        );
        let t = DetectionQuery::parse_since("2027-01-15T08:00:00Z", now).expect("time");
        assert_eq!(
            humantime::format_rfc3339(t).to_string(),
            "2027-01-15T08:00:00Z"
        );
        assert!(DetectionQuery::parse_since("yesterday-ish", now).is_err());

        let q = DetectionQuery {
            since: Some(t),
            min_severity: Some(Severity::High),
            rule: Some("r".into()),
            limit: Some(5),
        };
        let json = serde_json::to_value(&q).expect("json");
        assert_eq!(json["since"], "2027-01-15T08:00:00Z");
        assert_eq!(json["min_severity"], "high");
        let back: DetectionQuery = serde_json::from_value(json).expect("parses");
        assert_eq!(back, q);
        let empty: DetectionQuery = serde_json::from_str("{}").expect("parses");
        assert_eq!(empty, DetectionQuery::default());
    }
}
