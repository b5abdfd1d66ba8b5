//! How the agent's per-event cost grows with live processes: the agent on its defaults
//! with 1k, 10k and 50k idle processes held by `rasp-workload hold --exec` (each exec'd
//! with a service-like command line of its own, ~190 bytes of argv), its CPU per exec of
//! `rasp-workload exec` and per event of a paced watched-open storm, and its RSS. Flat
//! means the table's lookups, not a walk over it, are what events pay for.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::config::{self, Running, Tools};
use super::procfs;
use super::scaling::{exec_cost, storm_cost};
use super::storm::StormFiles;
use super::workload::WATCHED_FILE;

/// Live processes held in each step.
pub const COUNTS: [u32; 3] = [1_000, 10_000, 50_000];
/// pid_max the largest step needs (with the rest of the machine's tasks beside it).
const PID_MAX_NEEDED: u64 = 131_072;

pub struct ProcessStep {
    pub held: u32,
    /// Processes the agent's table held when measured.
    pub tracked: u64,
    pub mean_argv_bytes: f64,
    /// Agent CPU per exec (µs) and per watched open (µs), with that storm's drained rate.
    pub exec_us: f64,
    pub watched_us: f64,
    pub watched_rate: f64,
    pub rss_kib: u64,
    /// The agent's CPU while nothing runs, in % of a core, over `IDLE_SECONDS`: what its
    /// periodic work (the uprobe rescan of every process's maps, reaping) costs with this
    /// many processes.
    pub idle_cpu_pct: f64,
}

/// Long enough to hold two of the agent's 5 s uprobe rescans.
pub const IDLE_SECONDS: u64 = 10;

pub struct ProcessReport {
    pub steps: Vec<ProcessStep>,
    pub notes: Vec<String>,
}

pub fn run(tools: &Tools, workload_bin: &Path) -> Result<ProcessReport> {
    let mut notes = Vec::new();
    let restore = raise_pid_max(&mut notes)?;
    let mut steps = Vec::new();
    let mut result = Ok(());
    for held in COUNTS {
        eprintln!("bench: agent cost per event with {held} live processes");
        match step(tools, workload_bin, held) {
            Ok(step) => steps.push(step),
            Err(e) => {
                result = Err(e.context(format!("with {held} live processes")));
                break;
            }
        }
    }
    if let Some(old) = restore {
        if let Err(e) = std::fs::write(PID_MAX, old.to_string()) {
            notes.push(format!("could not restore {PID_MAX} to {old}: {e}"));
        }
    }
    if let Err(e) = result {
        if steps.is_empty() {
            return Err(e);
        }
        notes.push(format!("{e:#}"));
    }
    Ok(ProcessReport { steps, notes })
}

const PID_MAX: &str = "/proc/sys/kernel/pid_max";

/// Raises pid_max for the largest step; the old value, to restore, if it was raised.
fn raise_pid_max(notes: &mut Vec<String>) -> Result<Option<u64>> {
    let text = std::fs::read_to_string(PID_MAX).with_context(|| format!("reading {PID_MAX}"))?;
    let old: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("{PID_MAX} is not a number: {text:?}"))?;
    if old >= PID_MAX_NEEDED {
        return Ok(None);
    }
    std::fs::write(PID_MAX, PID_MAX_NEEDED.to_string()).with_context(|| {
        format!("raising {PID_MAX} from {old} to {PID_MAX_NEEDED} for 50k live processes")
    })?;
    notes.push(format!(
        "{PID_MAX} raised from {old} to {PID_MAX_NEEDED} for the run, restored after"
    ));
    Ok(Some(old))
}

fn step(tools: &Tools, workload_bin: &Path, held: u32) -> Result<ProcessStep> {
    let agent = config::start_agent_with_env(tools, &[])?;
    let measured = (|| -> Result<ProcessStep> {
        let hold = Hold::start(workload_bin, held)?;
        let tracked = wait_tracked(&agent, held)?;
        // Let the exec burst's events drain and the table settle.
        thread::sleep(Duration::from_secs(2));
        let pid = agent.pid().context("agent has no pid")?;
        let idle_before = procfs::cpu_seconds(pid)?;
        thread::sleep(Duration::from_secs(IDLE_SECONDS));
        let idle_cpu_pct = (procfs::cpu_seconds(pid)? - idle_before) * 100.0 / IDLE_SECONDS as f64;
        let exec_us = exec_cost(&agent, workload_bin)?;
        let files = StormFiles {
            path: WATCHED_FILE.to_string(),
            distinct: 1,
        };
        let (watched_us, watched_rate) = storm_cost(&agent, workload_bin, &files)?;
        let rss_kib = procfs::status_kib(pid, "VmRSS")?;
        let mean_argv_bytes = hold.mean_argv_bytes;
        hold.stop()?;
        Ok(ProcessStep {
            held,
            tracked,
            mean_argv_bytes,
            exec_us,
            watched_us,
            watched_rate,
            rss_kib,
            idle_cpu_pct,
        })
    })();
    let stopped = agent.stop();
    let step = measured?;
    stopped?;
    Ok(step)
}

/// Until the agent's table holds at least `held` processes (the forks and execs are events).
pub fn wait_tracked(agent: &Running, held: u32) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = agent.agent_status()?;
        let tracked = status
            .pointer("/processes/tracked")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if tracked >= u64::from(held) {
            return Ok(tracked);
        }
        if Instant::now() >= deadline {
            bail!("the agent's table holds {tracked} processes, not the {held} held, after 120 s");
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// `rasp-workload hold --exec`, ready.
pub struct Hold {
    child: Child,
    mean_argv_bytes: f64,
}

impl Hold {
    pub fn start(workload_bin: &Path, count: u32) -> Result<Hold> {
        let mut child = Command::new(workload_bin)
            .args(["hold", "--exec", "--count", &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting rasp-workload hold --exec")?;
        let stdout = child.stdout.take().context("hold's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading hold's ready line")?;
        let value: Value = match serde_json::from_str(line.trim()) {
            Ok(value) => value,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("rasp-workload hold printed {line:?} instead of its ready line");
            }
        };
        Ok(Hold {
            child,
            mean_argv_bytes: value
                .get("mean_argv_bytes")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        })
    }

    /// EOF on its stdin: it kills and reaps its children, then exits.
    pub fn stop(mut self) -> Result<()> {
        drop(self.child.stdin.take());
        let status = self
            .child
            .wait()
            .context("waiting for rasp-workload hold")?;
        if !status.success() {
            bail!("rasp-workload hold exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // Only on an error path (stop consumed it otherwise): its children die with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
