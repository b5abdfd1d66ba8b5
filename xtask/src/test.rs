//! `cargo xtask test [--unit]`: the one entry point for every check, in order: setup, build,
//! fmt, clippy, unit tests, a short run of every fuzz target, integration tests. The first failing stage stops the run.
//! `--unit` leaves out the integration tests (they need root); nothing is skipped silently.

use std::time::Instant;

use anyhow::{bail, Result};

use crate::build::{self, EBPF_OBJ_VAR};
use crate::command::{self, human};
use crate::fuzz;
use crate::setup;
use crate::workspace::{Profile, Workspace};

/// The integration tests' harness starts this binary.
const AGENT_BIN_VAR: &str = "RASP_AGENT_BIN";

pub fn run(ws: &Workspace, unit_only: bool) -> Result<()> {
    // Checked before anything is built, so a non-root run fails in a second, not after
    // minutes of compiling.
    if !unit_only && !command::is_root() {
        bail!(
            "integration tests need root (they load eBPF programs): run as root, \
             or `cargo xtask test --unit` for everything but them"
        );
    }

    let profile = Profile::Release;
    let ebpf_object = ws.ebpf_object(profile);
    let agent_bin = ws.agent_bin(profile);
    let mut stages = Stages::new(if unit_only { 5 } else { 8 });

    stages.run("setup", || {
        setup::run()?;
        // The container scenarios start real containers.
        if unit_only {
            Ok(())
        } else {
            setup::docker_daemon(&ws.host_target_dir().join("dockerd.log"))
        }
    })?;
    stages.run("build", || build::build_all(ws, profile).map(drop))?;
    stages.run("fmt", || {
        let mut fmt = command::host_cargo();
        fmt.current_dir(ws.root())
            .args(["fmt", "--all", "--", "--check"]);
        command::run(&mut fmt)
    })?;
    stages.run("clippy", || {
        let mut clippy = command::host_cargo();
        clippy
            .current_dir(ws.root())
            .args([
                "clippy",
                "--workspace",
                "--exclude",
                "rasp-ebpf",
                "--all-targets",
            ])
            .arg("--target-dir")
            .arg(ws.host_target_dir())
            .args(["--", "-D", "warnings"])
            .env(EBPF_OBJ_VAR, &ebpf_object);
        command::run(&mut clippy)
    })?;
    stages.run("unit tests", || {
        let mut unit = command::host_cargo();
        unit.current_dir(ws.root())
            .args([
                "test",
                "--release",
                "-p",
                "rasp-common",
                "-p",
                "rasp-agent",
                "-p",
                "xtask",
            ])
            .arg("--target-dir")
            .arg(ws.host_target_dir())
            .env(EBPF_OBJ_VAR, &ebpf_object);
        command::run(&mut unit)?;
        // The benchmark's workload driver has unit tests too; `--bins` leaves the root-only
        // integration scenarios to the next stage.
        let mut bins = command::host_cargo();
        bins.current_dir(ws.root())
            .args(["test", "--release", "-p", "rasp-tests", "--bins"])
            .arg("--target-dir")
            .arg(ws.host_target_dir());
        command::run(&mut bins)
    })?;
    if unit_only {
        eprintln!("test: fuzz targets and integration tests not run (--unit)");
    } else {
        stages.run("fuzz (short)", || fuzz::short(ws, &ebpf_object))?;
        stages.run("integration tests", || {
            // Same root check as above, here too in case privileges changed on the way.
            if !command::is_root() {
                bail!("integration tests need root (they load eBPF programs): run as root");
            }
            // One at a time: every scenario starts its own agent, and agents share the
            // kernel's tracepoints and the default socket path.
            let mut integration = command::host_cargo();
            integration
                .current_dir(ws.root())
                .args(["test", "--release", "-p", "rasp-tests"])
                .arg("--target-dir")
                .arg(ws.host_target_dir())
                .args(["--", "--test-threads=1"])
                .env(EBPF_OBJ_VAR, &ebpf_object)
                .env(AGENT_BIN_VAR, &agent_bin);
            command::run(&mut integration)
        })?;
        stages.run("vm tests (BPF-LSM guest)", || vm_checks(ws))?;
    }
    stages.finish();
    Ok(())
}

/// `cargo xtask vm-test`: setup, build, then the guest checks.
pub fn vm_test(ws: &Workspace) -> Result<()> {
    setup::run()?;
    build::build_all(ws, Profile::Release)?;
    vm_checks(ws)
}

/// The BPF-LSM guest: the agent and the probe binary it drives.
fn vm_checks(ws: &Workspace) -> Result<()> {
    let mut probe = command::host_cargo();
    probe
        .current_dir(ws.root())
        .args([
            "build",
            "--release",
            "-p",
            "rasp-tests",
            "--bin",
            "rasp-probe",
        ])
        .arg("--target-dir")
        .arg(ws.host_target_dir());
    command::run(&mut probe)?;
    let probe = ws.host_target_dir().join("release/rasp-probe");
    crate::vm::enforce_test(ws, &ws.agent_bin(Profile::Release), &probe)
}

/// Numbered banners and a duration for each stage.
struct Stages {
    total: usize,
    done: usize,
    started: Instant,
}

impl Stages {
    fn new(total: usize) -> Self {
        Stages {
            total,
            done: 0,
            started: Instant::now(),
        }
    }

    fn run(&mut self, name: &str, stage: impl FnOnce() -> Result<()>) -> Result<()> {
        self.done += 1;
        let label = format!("[{}/{}] {name}", self.done, self.total);
        eprintln!("\n==> {label}");
        let started = Instant::now();
        let result = stage();
        let elapsed = human(started.elapsed());
        match &result {
            Ok(()) => eprintln!("<== {label}: ok ({elapsed})"),
            Err(_) => eprintln!("<== {label}: FAILED ({elapsed})"),
        }
        result.map_err(|err| err.context(format!("test stage `{name}` failed")))
    }

    fn finish(&self) {
        eprintln!(
            "\ntest: {} stages passed in {}",
            self.done,
            human(self.started.elapsed())
        );
    }
}
