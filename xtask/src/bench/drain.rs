//! Drain capacity, measured: the agent held to one core (every thread pinned to CPU 0 with
//! `taskset`), generator processes opening files as fast as they can — first from the
//! other core only, then from both (the agent's drain thread runs at nice −10, so it keeps
//! its core) — until they outrun it. Each step reports what was generated, what the agent
//! took off the ring per second, what the kernel dropped, and the agent's CPU: the highest
//! rate drained without a drop is a measurement, and where drops begin the agent's core is
//! the limit.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::config::{self, Running, Tools};
use super::procfs;
use super::storm::{event_totals, StormFiles};
use super::workload::{self, DistinctFiles};

/// Seconds each generator step runs.
pub const STEP_SECONDS: f64 = 3.0;
/// The core the agent gets; generators pinned away from it get the other.
const AGENT_CPU: &str = "0";
const GENERATOR_CPU: &str = "1";

/// (generator processes, pinned to the other core?) for each step, in order.
const STEPS: [(u32, bool); 4] = [(1, true), (2, true), (2, false), (4, false)];

pub struct DrainStep {
    pub generators: u32,
    /// Generators held to the other core (else they may run on both).
    pub pinned: bool,
    /// Opens per second, all generators together.
    pub generated: f64,
    /// Records per second the agent took off the ring.
    pub drained: f64,
    pub received: u64,
    pub dropped: u64,
    /// The agent's CPU over the step, in % of one core.
    pub agent_cpu_pct: f64,
}

/// Agent CPU (% of its core) from which a step with drops counts as the agent's limit.
const SATURATED_PCT: f64 = 90.0;

impl DrainStep {
    /// The agent's CPU per record it received (µs).
    pub fn cpu_us_per_event(&self) -> Option<f64> {
        (self.received > 0 && self.drained > 0.0).then(|| self.agent_cpu_pct * 1e4 / self.drained)
    }

    pub fn drop_pct(&self) -> f64 {
        super::storm::drop_pct(self.received, self.dropped)
    }
}

pub struct DrainSeries {
    pub title: &'static str,
    pub about: &'static str,
    pub steps: Vec<DrainStep>,
}

impl DrainSeries {
    /// The highest drained rate among steps without a single drop.
    pub fn without_drops(&self) -> Option<f64> {
        self.steps
            .iter()
            .filter(|s| s.dropped == 0 && s.received > 0)
            .map(|s| s.drained)
            .max_by(f64::total_cmp)
    }

    /// Some step dropped records with the agent's core (nearly) full: it, not the
    /// generators, was the limit.
    pub fn saturated(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.dropped > 0 && s.agent_cpu_pct >= SATURATED_PCT)
    }

    /// The highest drained rate of any step (with drops, the agent's core was the limit).
    pub fn at_most(&self) -> Option<f64> {
        self.steps.iter().map(|s| s.drained).max_by(f64::total_cmp)
    }
}

pub struct DrainReport {
    pub series: Vec<DrainSeries>,
    pub notes: Vec<String>,
}

pub fn run(tools: &Tools, workload_bin: &Path, distinct: &DistinctFiles) -> Result<DrainReport> {
    let taskset = crate::command::find_program("taskset", &crate::command::tool_path(&[]))
        .context("taskset not found: apt-get install -y util-linux")?;
    let mut series = Vec::new();
    let mut notes = Vec::new();
    for (title, about, env, files) in super::storm::plans(tools, distinct) {
        eprintln!("bench: drain capacity on one core ({title})");
        let agent = config::start_agent_with_env(tools, env)?;
        let steps = pin_agent(&taskset, &agent).and_then(|()| {
            let mut steps = Vec::new();
            for (generators, pinned) in STEPS {
                steps.push(step(
                    &taskset,
                    &agent,
                    workload_bin,
                    &files,
                    generators,
                    pinned,
                )?);
            }
            Ok(steps)
        });
        if let Err(e) = agent.stop() {
            notes.push(format!("drain ({title}): {e:#}"));
        }
        series.push(DrainSeries {
            title,
            about,
            steps: steps?,
        });
    }
    Ok(DrainReport { series, notes })
}

/// Every thread of the agent, and any it starts later, on `AGENT_CPU`.
fn pin_agent(taskset: &Path, agent: &Running) -> Result<()> {
    let pid = agent.pid().context("agent has no pid")?;
    let output = crate::command::capture(
        Command::new(taskset)
            .args(["--all-tasks", "--cpu-list", "-p", AGENT_CPU])
            .arg(pid.to_string()),
    )?;
    if !output.status.success() {
        bail!(
            "taskset could not pin the agent (pid {pid}) to CPU {AGENT_CPU}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn step(
    taskset: &Path,
    agent: &Running,
    workload_bin: &Path,
    files: &StormFiles,
    generators: u32,
    pinned: bool,
) -> Result<DrainStep> {
    let pid = agent.pid().context("agent has no pid")?;
    // Let the previous step's backlog drain before the counters are read.
    thread::sleep(Duration::from_millis(500));
    let before = event_totals(&agent.agent_status()?);
    let cpu_before = procfs::cpu_seconds(pid)?;
    let began = Instant::now();
    let children: Vec<Child> = (0..generators)
        .map(|_| {
            let mut cmd = if pinned {
                let mut cmd = Command::new(taskset);
                cmd.args(["--cpu-list", GENERATOR_CPU]).arg(workload_bin);
                cmd
            } else {
                Command::new(workload_bin)
            };
            cmd.args(["storm", "--path", &files.path, "--distinct"])
                .arg(files.distinct.to_string())
                .args(["--rate", "0", "--threads", "1", "--seconds"])
                .arg(STEP_SECONDS.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting a storm generator")
        })
        .collect::<Result<_>>()?;
    let mut generated = 0.0;
    let mut failure = None;
    for child in children {
        let output = child
            .wait_with_output()
            .context("waiting for a generator")?;
        if !output.status.success() {
            failure.get_or_insert(format!(
                "a storm generator failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
            continue;
        }
        generated += workload::parse_line(String::from_utf8_lossy(&output.stdout).trim())?.rate;
    }
    if let Some(failure) = failure {
        bail!("{failure}");
    }
    // The ring buffer may still hold the tail of the storm.
    thread::sleep(Duration::from_millis(500));
    let wall = began.elapsed().as_secs_f64() - 0.5;
    let after = event_totals(&agent.agent_status()?);
    let cpu = procfs::cpu_seconds(pid)? - cpu_before;
    let received = after.received.saturating_sub(before.received);
    let step = DrainStep {
        generators,
        pinned,
        generated,
        drained: received as f64 / wall.max(1e-3),
        received,
        dropped: after.dropped.saturating_sub(before.dropped),
        agent_cpu_pct: cpu * 100.0 / wall.max(1e-3),
    };
    eprintln!(
        "bench:   {generators} generator(s){} generated {:>9.0}/s drained {:>9.0}/s dropped {} ({:.2}%), agent {:.0}% of a core",
        if pinned { " on CPU 1" } else { "" },
        step.generated,
        step.drained,
        step.dropped,
        step.drop_pct(),
        step.agent_cpu_pct
    );
    Ok(step)
}
