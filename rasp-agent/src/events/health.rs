//! Losses become detections: the kernel's loss counters (`reader::KernelCounters`) are
//! sampled on an interval, and when events were dropped in two intervals running (or many
//! in one), the agent reports its own blind spot as an `agent_health` event and a
//! high-severity detection, so it reaches the journal, exports and metrics like any other
//! finding instead of only a counter in `status`. Journal write failures (`JournalWatch`)
//! the same way.

use std::collections::HashMap;

use rasp_common::loss::LossEffect;

use super::{reader::SiteLoss, AgentHealthDetail};

/// Dropped events in one interval that are reported at once (no need to wait for a second).
const BURST: u64 = 100;

#[derive(Default)]
pub struct LossWatch {
    last: HashMap<u32, u64>,
    /// The previous interval dropped events too.
    dropping: bool,
}

impl LossWatch {
    /// Feed the counters sampled now; `Some` when the losses since the last sample are
    /// worth a detection. The first call only records where the counters stand.
    pub fn sample(
        &mut self,
        sites: &[SiteLoss],
        interval_secs: u64,
        first: bool,
    ) -> Option<AgentHealthDetail> {
        let mut losses = Vec::new();
        let mut dropped = 0;
        for s in sites {
            let key = s.site as u32;
            let before = self.last.insert(key, s.count).unwrap_or(0);
            let delta = s.count.saturating_sub(before);
            if delta == 0 || first {
                continue;
            }
            if s.site.effect() == LossEffect::Dropped {
                dropped += delta;
            }
            losses.push((
                format!(
                    "{}: {} (program {}, line {})",
                    s.site.name(),
                    s.site.what(),
                    s.site.program(),
                    s.line
                ),
                delta,
            ));
        }
        let sustained = dropped > 0 && self.dropping;
        self.dropping = dropped > 0;
        (sustained || dropped >= BURST).then(|| AgentHealthDetail {
            problem: "event_loss".to_string(),
            losses,
            interval_secs,
        })
    }
}

/// While the journal keeps failing, a reminder this often (the first failure is reported
/// at once).
const JOURNAL_REMIND_SAMPLES: u32 = 12;

/// Journal failures become detections: disk full, a read-only or vanished state
/// directory. Detections that could not be written stay in memory (`detections` still
/// answers) and reach followers, not the export sinks (they deliver from the journal); this
/// tells the operator the journal is behind.
#[derive(Default)]
pub struct JournalWatch {
    lost: u64,
    errors: u64,
    /// Samples since the last report while failures continue.
    since_report: Option<u32>,
}

impl JournalWatch {
    /// Feed the store's counters (`write_errors`, `write_lost`, the last error) sampled now.
    pub fn sample(
        &mut self,
        errors: u64,
        lost: u64,
        last_error: Option<&str>,
        interval_secs: u64,
    ) -> Option<AgentHealthDetail> {
        let (new_errors, new_lost) = (
            errors.saturating_sub(self.errors),
            lost.saturating_sub(self.lost),
        );
        (self.errors, self.lost) = (errors, lost);
        if new_errors == 0 {
            self.since_report = None;
            return None;
        }
        let due = match self.since_report {
            None => true,
            Some(n) => n + 1 >= JOURNAL_REMIND_SAMPLES,
        };
        if !due {
            self.since_report = self.since_report.map(|n| n + 1);
            return None;
        }
        self.since_report = Some(0);
        Some(AgentHealthDetail {
            problem: "journal_write_failed".to_string(),
            losses: vec![(
                format!(
                    "journal: {} ({new_errors} failed operations)",
                    last_error.unwrap_or("write failed")
                ),
                new_lost,
            )],
            interval_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rasp_common::LossSite;

    fn at(site: LossSite, count: u64) -> SiteLoss {
        SiteLoss {
            site,
            count,
            line: 42,
        }
    }

    #[test]
    fn sustained_or_bursty_drops_are_reported_once_per_interval() {
        let mut w = LossWatch::default();
        assert!(
            w.sample(&[at(LossSite::ExecSend, 500)], 5, true).is_none(),
            "history"
        );
        assert!(
            w.sample(&[at(LossSite::ExecSend, 503)], 5, false).is_none(),
            "one small interval"
        );
        let d = w
            .sample(&[at(LossSite::ExecSend, 505)], 5, false)
            .expect("two intervals running");
        assert_eq!(d.losses.len(), 1);
        assert_eq!(d.losses[0].1, 2);
        assert!(d.losses[0].0.contains("exec_send") && d.losses[0].0.contains("line 42"));
        assert!(
            w.sample(&[at(LossSite::ExecSend, 505)], 5, false).is_none(),
            "quiet again"
        );
        assert!(
            w.sample(&[at(LossSite::FileSend, 200)], 5, false).is_some(),
            "a burst"
        );
        // Incomplete events alone (a path read failed) are counted, not alarming.
        let mut w = LossWatch::default();
        w.sample(&[], 5, true);
        w.sample(&[at(LossSite::FilePathWalk, 10)], 5, false);
        assert!(w
            .sample(&[at(LossSite::FilePathWalk, 20)], 5, false)
            .is_none());
    }

    #[test]
    fn journal_failures_are_reported_at_once_then_reminded() {
        let mut w = JournalWatch::default();
        assert!(w.sample(0, 0, None, 5).is_none());
        let d = w
            .sample(2, 7, Some("appending to /x: No space left on device"), 5)
            .expect("first failure");
        assert_eq!(d.problem, "journal_write_failed");
        assert_eq!(d.losses[0].1, 7);
        assert!(d.losses[0].0.contains("No space left"), "{:?}", d.losses);
        for _ in 1..JOURNAL_REMIND_SAMPLES {
            assert!(w.sample(w.errors + 1, w.lost + 1, None, 5).is_none());
        }
        assert!(
            w.sample(w.errors + 1, w.lost + 1, None, 5).is_some(),
            "reminder"
        );
        // Healthy again, then a new failure is news at once.
        assert!(w.sample(w.errors, w.lost, None, 5).is_none());
        assert!(w.sample(w.errors + 1, w.lost, None, 5).is_some());
    }
}
