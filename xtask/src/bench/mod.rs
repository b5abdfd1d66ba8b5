//! `cargo xtask bench`: what the agent costs the workloads it protects, measured side by
//! side in one run. Each round starts every configuration in turn (order rotated per round)
//! and runs every workload under it (order rotated too), so a slow minute of this noisy
//! machine hits all configurations alike; ratios are taken per round against that round's
//! no-agent run, and targets are decided on a rank-based interval over those paired rounds.
//! Then the agent alone: an event storm ramp (the highest rate drained with no drop, the drop
//! rate beyond, latency under load), its idle memory with 10k live processes, its cost per
//! event as the rule count grows, and the BPF-LSM guest's open() comparison. The report
//! goes to BENCHMARKS.md.

mod config;
mod drain;
mod postgres;
mod processes;
mod procfs;
mod report;
mod scaling;
mod stats;
mod storm;
mod userspace;
mod workload;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::build;
use crate::command::{self, human};
use crate::setup;
use crate::workspace::{Profile, Workspace};

use config::{Config, Running, Tools};
use workload::{Measured, Runner, Workload};

/// Pause between a configuration's start and its first workload.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Guest seconds of each operation's run in the guest: its clock counts emulated
/// instructions, so rounds repeat to within 0.1% and short runs suffice.
const VM_SECONDS: f64 = 2.0;
/// Rounds in the guest: deterministic counts need no more than it takes to show two runs
/// agree (and a third to outvote one a periodic agent task happened to land in).
const VM_ROUNDS: usize = 3;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Rounds of every configuration × workload (medians and spreads are over rounds).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds each workload runs per configuration and round.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Only these workloads (comma-separated keys: exec, open-unwatched, open-unwatched-etc,
    /// open-unwatched-usrlib, open-unwatched-distinct, open-watched-distinct, open-watched,
    /// tcp, file-change, tls-writes, tls-handshakes, pgbench-select, pgbench-tpcb; or a
    /// family prefix no workload is named: `open` = every open-*, `pgbench`, `tls`).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Leave out the event storm, the drain capacity on one core and the 10k-process idle
    /// measurement.
    #[arg(long)]
    pub no_storm: bool,
    /// Leave out the rule-count scaling (defaults, ×10, ×100 generated rules) and the
    /// live-process scaling (1k, 10k, 50k processes).
    #[arg(long)]
    pub no_scaling: bool,
    /// Leave out the BPF-LSM QEMU guest.
    #[arg(long)]
    pub no_vm: bool,
    /// Leave out the agent's userspace cost per event (callgrind and native replay).
    #[arg(long)]
    pub no_callgrind: bool,
    /// Where the report goes (relative to the workspace root).
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,
}

/// One workload run under one configuration in one round.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// The round it ran in (0-based): ratios pair samples by this, never by position.
    pub round: usize,
    pub rate: f64,
    pub ops: u64,
    pub wall_secs: f64,
    /// CPU seconds the configuration's own process spent during the run.
    pub cpu_secs: Option<f64>,
    /// Its peak RSS during the run.
    pub peak_rss_kib: Option<u64>,
    /// Events the agent's kernel side dropped during the run.
    pub dropped: Option<u64>,
    /// The workload's own CPU per operation (µs), children included, if it reports it.
    pub workload_cpu_us_per_op: Option<f64>,
}

/// Everything measured, for the report.
pub struct Results {
    pub command_line: String,
    pub args_summary: String,
    pub machine: String,
    /// The peers' versions as installed (`bpftrace --version`, the Debian package's).
    pub peer_versions: String,
    pub commit: String,
    pub started: String,
    pub duration: String,
    pub workloads: Vec<Workload>,
    pub samples: BTreeMap<(&'static str, &'static str), Vec<Sample>>,
    pub storm: Option<storm::StormReport>,
    /// The agent on one core against generators that outrun it.
    pub drain: Option<drain::DrainReport>,
    /// Per-event agent CPU with 1k, 10k, 50k live processes.
    pub processes: Option<processes::ProcessReport>,
    pub scaling: Option<scaling::ScalingReport>,
    /// The BPF-LSM guest's per-hook instruction table, as `vm::hook_bench` prints it.
    pub vm: Option<String>,
    /// Callgrind and native replay of the agent's pipeline, per event kind.
    pub userspace: Option<userspace::UserspaceReport>,
    pub notes: Vec<String>,
}

pub fn run(ws: &Workspace, args: &BenchArgs) -> Result<()> {
    if !command::is_root() {
        bail!("the benchmark loads eBPF programs and runs bpftrace: run it as root");
    }
    if args.rounds == 0 || !args.seconds.is_finite() || args.seconds <= 0.0 {
        bail!("--rounds must be ≥ 1 and --seconds > 0");
    }
    let started = Instant::now();
    let started_at = utc_now();
    setup::run_for_bench()?;
    let artifacts = build::build_all(ws, Profile::Release)?;
    let Binaries {
        workload: workload_bin,
        replay: replay_bin,
    } = build_workload(ws)?;

    let workloads: Vec<Workload> = workload::select(&args.only);
    if workloads.is_empty() {
        let keys: Vec<_> = workload::all().iter().map(|w| w.key).collect();
        bail!(
            "--only {} names no workload; known: {}",
            args.only.join(","),
            keys.join(", ")
        );
    }

    let scratch = PathBuf::from("/tmp/rasp-bench");
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("clearing {}", scratch.display()))?;
    }
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let unwatched = scratch.join("unwatched.txt");
    fs::write(&unwatched, "nothing watches this file\n")
        .with_context(|| format!("writing {}", unwatched.display()))?;
    let distinct = workload::DistinctFiles::create(&scratch, workload::DISTINCT_FILES)?;
    let tools = Tools {
        agent: artifacts.agent_bin.clone(),
        assets: ws.root().join("xtask/assets"),
        default_policies: ws.root().join("policies"),
        scratch: scratch.clone(),
    };

    let needs_pg = workloads.iter().any(|w| w.key.starts_with("pgbench"));
    let pg = if needs_pg {
        eprintln!("bench: starting PostgreSQL for pgbench");
        Some(postgres::Postgres::start(&scratch)?)
    } else {
        None
    };
    let runner = Runner {
        workload_bin: workload_bin.clone(),
        scratch: scratch.clone(),
        unwatched,
        files: &distinct,
        postgres: pg.as_ref(),
    };

    let mut notes = Vec::new();
    let mut samples: BTreeMap<(&'static str, &'static str), Vec<Sample>> = BTreeMap::new();
    for round in 0..args.rounds {
        for config in stats::rotated(&Config::ALL, round) {
            eprintln!(
                "bench: round {}/{} under {}",
                round + 1,
                args.rounds,
                config.label()
            );
            let running = match config::start(config, &tools) {
                Ok(running) => running,
                Err(e) => {
                    notes.push(format!(
                        "round {}: {} could not start: {e:#}",
                        round + 1,
                        config.label()
                    ));
                    continue;
                }
            };
            // Let what a start does (BTF parsing, /proc seeding, compiling a script) finish
            // before the first workload is timed.
            std::thread::sleep(SETTLE);
            // Rotated too, so no workload always runs first after the settle (or last,
            // after its configuration has run the longest).
            let in_order: Vec<&Workload> = workloads.iter().collect();
            for w in stats::rotated(&in_order, round) {
                match measure(&runner, &running, w, round, args.seconds) {
                    Ok(sample) => {
                        eprintln!("bench:   {:<16} {:>12.0} {}", w.key, sample.rate, w.unit);
                        samples
                            .entry((w.key, config.key()))
                            .or_default()
                            .push(sample);
                    }
                    Err(e) => notes.push(format!(
                        "round {}: {} under {}: {e:#}",
                        round + 1,
                        w.key,
                        config.label()
                    )),
                }
            }
            if let Err(e) = running.stop() {
                notes.push(format!("round {}: {e:#}", round + 1));
            }
        }
    }
    drop(pg);

    // Each later stage runs unless its flag leaves it out; one that fails is a note in the
    // report, and the others still run.
    let storm = stage(args.no_storm, &mut notes, "storm", || {
        storm::run(&tools, &workload_bin, &distinct)
    });
    let drain = stage(args.no_storm, &mut notes, "drain capacity", || {
        drain::run(&tools, &workload_bin, &distinct)
    });
    let processes = stage(args.no_scaling, &mut notes, "live-process scaling", || {
        processes::run(&tools, &workload_bin)
    });
    let scaling = stage(args.no_scaling, &mut notes, "rule scaling", || {
        scaling::run(&tools, &workload_bin, &distinct, args.rounds)
    });
    let userspace = stage(
        args.no_callgrind,
        &mut notes,
        "userspace per event (callgrind)",
        || userspace::run(&replay_bin, args.rounds),
    );
    let vm = stage(args.no_vm, &mut notes, "BPF-LSM guest", || {
        eprintln!("bench: BPF-LSM guest (QEMU): every hook's operation under no programs, tracepoint floor, LSM floor, agent");
        crate::vm::hook_bench(
            ws,
            &artifacts.agent_bin,
            &workload_bin,
            VM_ROUNDS,
            VM_SECONDS,
        )
        .map(|vm| vm.to_string())
    });

    let results = Results {
        command_line: command_line(),
        args_summary: format!(
            "{} rounds × {} s per workload and configuration",
            args.rounds, args.seconds
        ),
        machine: procfs::machine_summary()?,
        peer_versions: peer_versions(),
        commit: commit(ws),
        started: started_at,
        duration: human(started.elapsed()),
        workloads,
        samples,
        storm,
        drain,
        processes,
        scaling,
        vm,
        userspace,
        notes,
    };
    let text = report::render(&results);
    let output = ws.root().join(&args.output);
    fs::write(&output, &text).with_context(|| format!("writing {}", output.display()))?;
    println!("{text}");
    eprintln!(
        "bench: wrote {} in {}",
        output.display(),
        human(started.elapsed())
    );
    Ok(())
}

/// `run()` unless `skip`; an error becomes a note naming `what`.
fn stage<T>(
    skip: bool,
    notes: &mut Vec<String>,
    what: &str,
    run: impl FnOnce() -> Result<T>,
) -> Option<T> {
    if skip {
        return None;
    }
    match run() {
        Ok(report) => Some(report),
        Err(e) => {
            notes.push(format!("{what}: {e:#}"));
            None
        }
    }
}

/// One workload under one running configuration, with what the configuration's process
/// spent on it.
fn measure(
    runner: &Runner,
    running: &Running,
    w: &Workload,
    round: usize,
    seconds: f64,
) -> Result<Sample> {
    let pids = running.pids();
    for pid in &pids {
        procfs::reset_peak_rss(*pid)?;
    }
    // Summed over the configuration's processes (libbpf-tools runs two).
    let cpu = |pids: &[u32]| -> Result<Option<f64>> {
        if pids.is_empty() {
            return Ok(None);
        }
        let mut total = 0.0;
        for pid in pids {
            total += procfs::cpu_seconds(*pid)?;
        }
        Ok(Some(total))
    };
    let cpu_before = cpu(&pids)?;
    let drops_before = agent_drops(running);
    let began = Instant::now();
    let Measured {
        rate,
        ops,
        cpu_secs: workload_cpu,
    } = runner.run(w, seconds)?;
    let wall_secs = began.elapsed().as_secs_f64();
    let cpu_after = cpu(&pids)?;
    let peak_rss_kib = if pids.is_empty() {
        None
    } else {
        let mut total = 0;
        for pid in &pids {
            total += procfs::status_kib(*pid, "VmHWM")?;
        }
        Some(total)
    };
    let dropped = match (drops_before, agent_drops(running)) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    Ok(Sample {
        round,
        rate,
        ops,
        wall_secs,
        cpu_secs: cpu_before.zip(cpu_after).map(|(b, a)| a - b),
        peak_rss_kib,
        dropped,
        workload_cpu_us_per_op: workload_cpu
            .filter(|_| ops > 0)
            .map(|cpu| cpu * 1e6 / ops as f64),
    })
}

fn agent_drops(running: &Running) -> Option<u64> {
    if running.config != Config::Agent {
        return None;
    }
    let status = running.agent_status().ok()?;
    Some(storm::event_totals(&status).dropped)
}

/// The bench's own binaries from the tests crate.
struct Binaries {
    /// `rasp-workload`, the workload driver.
    workload: PathBuf,
    /// `rasp-replay`, the agent's pipeline without a kernel.
    replay: PathBuf,
}

/// The workload driver and the replay harness, built in release (the loops measure
/// per-syscall costs; the replay, the agent's release code).
fn build_workload(ws: &Workspace) -> Result<Binaries> {
    let mut cargo = command::host_cargo();
    cargo
        .current_dir(ws.root())
        .args([
            "build",
            "--release",
            "-p",
            "rasp-tests",
            "--bin",
            "rasp-workload",
            "--bin",
            "rasp-replay",
        ])
        .arg("--target-dir")
        .arg(ws.host_target_dir())
        // The replay links the agent library: the same object path as the agent's own
        // build, or its build script reruns and the library is rebuilt every time.
        .env(build::EBPF_OBJ_VAR, ws.ebpf_object(Profile::Release));
    command::run(&mut cargo)?;
    let bin = |name: &str| -> Result<PathBuf> {
        let bin = ws.host_target_dir().join("release").join(name);
        if !bin.exists() {
            bail!("{} was not built", bin.display());
        }
        Ok(bin)
    };
    Ok(Binaries {
        workload: bin("rasp-workload")?,
        replay: bin("rasp-replay")?,
    })
}

fn peer_versions() -> String {
    let bpftrace = Command::new("bpftrace")
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|_| "bpftrace not runnable".into());
    let libbpf_tools = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "libbpf-tools"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{bpftrace}; libbpf-tools {libbpf_tools} (Debian)")
}

/// The command as typed: `cargo xtask bench` and the arguments after `bench`.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

fn commit(ws: &Workspace) -> String {
    let rev = Command::new("git")
        .current_dir(ws.root())
        .args(["rev-parse", "--short=12", "HEAD"])
        .output();
    let Ok(rev) = rev else {
        return "unknown (git not runnable)".into();
    };
    let mut text = String::from_utf8_lossy(&rev.stdout).trim().to_string();
    let dirty = Command::new("git")
        .current_dir(ws.root())
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|out| !out.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        text.push_str(" (with uncommitted changes)");
    }
    text
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default()
}
