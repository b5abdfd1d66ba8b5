//! The agent alone under load: a ramp of paced open storms (the highest rate it drains with
//! no drop, the drop rate beyond, its CPU per event and the latency from kernel to decision
//! under load), then its idle memory with 10k live processes in the table (each exec'd with
//! a service-like command line of its own).

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use super::config::{self, Running, Tools};
use super::processes::{wait_tracked, Hold};
use super::procfs;
use super::stats::Histogram;
use super::workload::{self, DistinctFiles, WATCHED_FILE};

/// Paced storm rates tried in order (opens/s); the ramp ends with an unpaced step.
const RAMP: &[f64] = &[
    25_000.0,
    50_000.0,
    100_000.0,
    200_000.0,
    400_000.0,
    800_000.0,
    1_600_000.0,
];
const STEP_SECONDS: f64 = 2.0;
/// Live processes for the idle-memory measurement.
const HOLD_PROCESSES: u32 = 10_000;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EventTotals {
    pub received: u64,
    pub dropped: u64,
}

/// Received and dropped summed over every event kind in a `status --json`.
pub fn event_totals(status: &Value) -> EventTotals {
    let mut totals = EventTotals::default();
    if let Some(kinds) = status.get("events").and_then(Value::as_object) {
        for stats in kinds.values() {
            totals.received += stats.get("received").and_then(Value::as_u64).unwrap_or(0);
            totals.dropped += stats.get("dropped").and_then(Value::as_u64).unwrap_or(0);
        }
    }
    totals
}

/// A latency histogram since the agent started, out of `status --json`: bucket bounds are
/// `latency.bounds_us`, counts `latency.<which>.buckets` with one more entry for "> last
/// bound" (given an infinite bound here).
pub fn latency_histogram(status: &Value, which: &str) -> Option<Histogram> {
    let latency = status.get("latency")?;
    let mut bounds_us = latency
        .get("bounds_us")?
        .as_array()?
        .iter()
        .map(Value::as_f64)
        .collect::<Option<Vec<f64>>>()?;
    bounds_us.push(f64::INFINITY);
    let counts = latency
        .get(which)?
        .get("buckets")?
        .as_array()?
        .iter()
        .map(Value::as_u64)
        .collect::<Option<Vec<u64>>>()?;
    (bounds_us.len() == counts.len()).then_some(Histogram { bounds_us, counts })
}

#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

fn latency_between(before: &Value, after: &Value, which: &str) -> Option<Latency> {
    let window = Histogram::window(
        &latency_histogram(before, which)?,
        &latency_histogram(after, which)?,
    )?;
    Some(Latency {
        count: window.total(),
        p50_us: window.quantile_us(0.50)?,
        p99_us: window.quantile_us(0.99)?,
        max_us: window.max_us()?,
    })
}

#[derive(Clone, Debug)]
pub struct StormStep {
    /// Paced rate asked of the generator (None: as fast as it goes).
    pub target: Option<f64>,
    /// Generator threads.
    pub threads: u32,
    /// Opens per second the generator achieved.
    pub generated: f64,
    /// Records per second the agent received.
    pub drained: f64,
    pub received: u64,
    pub dropped: u64,
    pub agent_cpu_secs: f64,
    pub wall_secs: f64,
    pub events_latency: Option<Latency>,
    pub detections_latency: Option<Latency>,
}

impl StormStep {
    /// "50000/s" or "unpaced, 2 threads".
    pub fn pacing(&self) -> String {
        match self.target {
            Some(t) => format!("{t:.0}/s"),
            None if self.threads == 1 => "unpaced".into(),
            None => format!("unpaced, {} threads", self.threads),
        }
    }

    pub fn drop_pct(&self) -> f64 {
        drop_pct(self.received, self.dropped)
    }

    /// The agent's CPU during the step, in % of one core.
    pub fn agent_cpu_pct(&self) -> f64 {
        self.agent_cpu_secs * 100.0 / self.wall_secs.max(1e-3)
    }

    pub fn cpu_us_per_event(&self) -> Option<f64> {
        (self.received > 0).then(|| self.agent_cpu_secs * 1e6 / self.received as f64)
    }
}

pub struct StormSeries {
    pub title: &'static str,
    pub about: &'static str,
    pub steps: Vec<StormStep>,
}

impl StormSeries {
    /// The highest drained rate among steps without a single drop.
    pub fn max_without_drops(&self) -> Option<f64> {
        self.steps
            .iter()
            .filter(|s| s.dropped == 0 && s.received > 0)
            .map(|s| s.drained)
            .max_by(f64::total_cmp)
    }
}

pub struct IdleReport {
    pub rss_kib_before: u64,
    pub rss_kib_with_processes: u64,
    pub processes_tracked: u64,
    pub held: u32,
}

pub struct StormReport {
    pub series: Vec<StormSeries>,
    pub idle: Option<IdleReport>,
    pub notes: Vec<String>,
}

/// The files a storm opens: a path, or a `{}` pattern and how many files it names.
pub struct StormFiles {
    pub path: String,
    pub distinct: u32,
}

/// A storm series: title, what it is, the agent's extra environment, the files opened.
pub type StormPlan = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    StormFiles,
);

/// The three kinds of storm: a watched file (every open a folded detection), distinct
/// watched files (a detection each), an unwatched file with every open reported (events
/// only, no rule).
pub fn plans(tools: &Tools, distinct: &DistinctFiles) -> [StormPlan; 3] {
    let one = |path: String| StormFiles { path, distinct: 1 };
    [
        (
            "detections",
            "opens of /etc/shadow: every one an event, a rule match and a (folded) detection",
            &[],
            one(WATCHED_FILE.to_string()),
        ),
        (
            "detections, distinct files",
            "opens cycling 4096 distinct `*/.aws/credentials` files: every one an event and a match of read-cloud-credentials with its own path, so each file opens its own fold window (a new detection per file every 10 s window, not one for the storm)",
            &[],
            StormFiles {
                path: distinct.watched.clone(),
                distinct: distinct.count,
            },
        ),
        (
            "events only",
            "opens of an unwatched file with RASP_INTEREST_ALL=1: every open an event, no rule matches",
            &[("RASP_INTEREST_ALL", "1")],
            one(tools.scratch.join("unwatched.txt").display().to_string()),
        ),
    ]
}

pub fn run(tools: &Tools, workload_bin: &Path, distinct: &DistinctFiles) -> Result<StormReport> {
    let mut notes = Vec::new();
    let mut series = Vec::new();
    for (title, about, env, files) in plans(tools, distinct) {
        eprintln!("bench: storm ramp ({title})");
        let agent = config::start_agent_with_env(tools, env)?;
        let steps = ramp(&agent, workload_bin, &files, &mut notes);
        if let Err(e) = agent.stop() {
            notes.push(format!("storm ({title}): {e:#}"));
        }
        series.push(StormSeries {
            title,
            about,
            steps: steps?,
        });
    }
    let idle = match idle_with_processes(tools, workload_bin) {
        Ok(idle) => Some(idle),
        Err(e) => {
            notes.push(format!("idle RSS with {HOLD_PROCESSES} processes: {e:#}"));
            None
        }
    };
    Ok(StormReport {
        series,
        idle,
        notes,
    })
}

fn ramp(
    agent: &Running,
    workload_bin: &Path,
    files: &StormFiles,
    notes: &mut Vec<String>,
) -> Result<Vec<StormStep>> {
    let path = &files.path;
    let mut steps = Vec::new();
    for &target in RAMP {
        let step = storm_step(agent, workload_bin, files, Some(target), 1)?;
        let saturated = step.generated < 0.8 * target;
        steps.push(step);
        if saturated {
            // The generator can't go faster: the unpaced steps are the ones left to run.
            notes.push(format!(
                "storm on {path}: one generator thread saturated below {target:.0} opens/s"
            ));
            break;
        }
    }
    // Beyond: one thread as fast as it goes, then two (the generator takes both cores).
    steps.push(storm_step(agent, workload_bin, files, None, 1)?);
    steps.push(storm_step(agent, workload_bin, files, None, 2)?);
    Ok(steps)
}

pub fn storm_step(
    agent: &Running,
    workload_bin: &Path,
    files: &StormFiles,
    target: Option<f64>,
    threads: u32,
) -> Result<StormStep> {
    let pid = agent.pid().context("agent has no pid")?;
    // Let the previous step's backlog drain before the counters are read.
    thread::sleep(Duration::from_millis(500));
    let before = agent.agent_status()?;
    let cpu_before = procfs::cpu_seconds(pid)?;
    let began = Instant::now();
    let rate = target.unwrap_or(0.0);
    let args = [
        "storm".to_string(),
        "--path".to_string(),
        files.path.clone(),
        "--distinct".to_string(),
        files.distinct.to_string(),
        "--rate".to_string(),
        format!("{rate:.0}"),
        "--threads".to_string(),
        threads.to_string(),
    ];
    let measured = workload::run_tool(workload_bin, &args, STEP_SECONDS)?;
    // The ring buffer may still hold the tail of the storm.
    thread::sleep(Duration::from_millis(500));
    let wall_secs = began.elapsed().as_secs_f64() - 0.5;
    let after = agent.agent_status()?;
    let cpu_after = procfs::cpu_seconds(pid)?;
    let (b, a) = (event_totals(&before), event_totals(&after));
    let received = a.received.saturating_sub(b.received);
    let step = StormStep {
        target,
        threads,
        generated: measured.rate,
        drained: received as f64 / wall_secs.max(1e-3),
        received,
        dropped: a.dropped.saturating_sub(b.dropped),
        agent_cpu_secs: cpu_after - cpu_before,
        wall_secs,
        events_latency: latency_between(&before, &after, "events"),
        detections_latency: latency_between(&before, &after, "detections"),
    };
    eprintln!(
        "bench:   {} generated {:>9.0}/s drained {:>9.0}/s dropped {} ({:.2}%)",
        step.pacing(),
        step.generated,
        step.drained,
        step.dropped,
        step.drop_pct()
    );
    Ok(step)
}

/// The agent's RSS idle, then with `HOLD_PROCESSES` live processes it tracks.
fn idle_with_processes(tools: &Tools, workload_bin: &Path) -> Result<IdleReport> {
    eprintln!("bench: idle RSS with {HOLD_PROCESSES} live processes");
    let agent = config::start_agent_with_env(tools, &[])?;
    let pid = agent.pid().context("agent has no pid")?;
    thread::sleep(Duration::from_secs(2));
    let rss_kib_before = procfs::status_kib(pid, "VmRSS")?;
    let result = (|| -> Result<IdleReport> {
        let hold = Hold::start(workload_bin, HOLD_PROCESSES)?;
        // The forks and execs are events: wait until the table has them, then let the
        // agent settle.
        let tracked = wait_tracked(&agent, HOLD_PROCESSES)?;
        thread::sleep(Duration::from_secs(3));
        let idle = IdleReport {
            rss_kib_before,
            rss_kib_with_processes: procfs::status_kib(pid, "VmRSS")?,
            processes_tracked: tracked,
            held: HOLD_PROCESSES,
        };
        hold.stop()?;
        Ok(idle)
    })();
    agent.stop()?;
    result
}

/// Share of `received + dropped` that was dropped, in percent.
pub fn drop_pct(received: u64, dropped: u64) -> f64 {
    let total = received + dropped;
    if total == 0 {
        0.0
    } else {
        dropped as f64 * 100.0 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counters_and_latency() {
        let before: Value = serde_json::json!({
            "events": {"exec": {"received": 5, "dropped": 1}, "file_open": {"received": 10, "dropped": 0}},
            "latency": {"bounds_us": [10, 100], "events": {"buckets": [1, 0, 0]}}
        });
        let after: Value = serde_json::json!({
            "events": {"exec": {"received": 6, "dropped": 1}, "file_open": {"received": 110, "dropped": 3}},
            "latency": {"bounds_us": [10, 100], "events": {"buckets": [51, 49, 1]}}
        });
        assert_eq!(
            event_totals(&after),
            EventTotals {
                received: 116,
                dropped: 4
            }
        );
        let l = latency_between(&before, &after, "events").expect("window");
        assert_eq!((l.count, l.p50_us, l.p99_us), (100, 10.0, 100.0));
        assert!(l.max_us.is_infinite());
        assert!(latency_between(&before, &after, "detections").is_none());
    }
}
