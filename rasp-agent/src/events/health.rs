//! Losses become detections: the kernel's loss counters (`reader::KernelCounters`) are
//! sampled on an interval, and when events were dropped in two intervals running (or many
//! in one), the agent reports its own blind spot as an `agent_health` event and a
//! high-severity detection, so it reaches the journal, exports and metrics like any other
//! finding instead of only a counter in `status`.

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
}
