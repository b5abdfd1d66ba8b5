//! `cargo xtask test [--unit]`: the one entry point for every check, in order: setup, build,
//! fmt, clippy, unit tests, integration tests, then the results of a short run of every fuzz
//! target and of the BPF-LSM guest (both started after the build and run beside the other
//! stages at the lowest priority). The first failing stage stops the run.
//! `--unit` leaves out the integration tests (they need root); nothing is skipped silently.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

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
    let mut stages = Stages::new(if unit_only { 5 } else { 9 });

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
    // The fuzz targets and the BPF-LSM guest are CPU-bound (libFuzzer, emulation), while
    // the stages after the build leave CPU idle much of the time (the integration tests
    // mostly wait on agents and workloads). Both run beside them from here, at the lowest
    // priority, so they take the CPU the stages leave and not theirs.
    let mut fuzzing = None;
    let mut guest = None;
    if !unit_only {
        stages.run(
            "start the fuzz targets and the BPF-LSM guest (beside the next stages)",
            || {
                fuzzing = Some(Beside::start(
                    ws,
                    "fuzz",
                    &[
                        "fuzz",
                        "--built",
                        "--seconds",
                        &fuzz::SHORT_SECS.to_string(),
                    ],
                )?);
                build_probe(ws)?;
                guest = Some(Beside::start(ws, "vm-test", &["vm-test", "--built"])?);
                Ok(())
            },
        )?;
    }
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
        stages.run("fuzz targets (short run, beside)", || {
            match fuzzing.take() {
                Some(fuzzing) => fuzzing.finish(),
                None => bail!("the fuzz targets were not started"),
            }
        })?;
        stages.run("vm tests (BPF-LSM guest, beside)", || match guest.take() {
            Some(guest) => guest.finish(),
            None => bail!("the BPF-LSM guest was not started"),
        })?;
    }
    stages.finish();
    Ok(())
}

/// `cargo xtask vm-test`: setup, build, then the guest checks; with `built`, only the
/// checks, on what is already built (how `test` starts it beside the integration tests).
pub fn vm_test(ws: &Workspace, built: bool) -> Result<()> {
    if !built {
        setup::run()?;
        build::build_all(ws, Profile::Release)?;
        build_probe(ws)?;
    }
    let probe = ws.host_target_dir().join("release/rasp-probe");
    crate::vm::enforce_test(ws, &ws.agent_bin(Profile::Release), &probe)
}

/// The binary the guest's script drives the kernel with.
fn build_probe(ws: &Workspace) -> Result<()> {
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
    command::run(&mut probe)
}

/// `cargo xtask ARGS` running at nice 19 in its own process group, its output in
/// `target/beside/NAME.out` until `finish` shows it. Dropped unfinished (a failed stage
/// before it), it kills the whole group (QEMU, libFuzzer included).
struct Beside {
    name: &'static str,
    child: Option<std::process::Child>,
    log: PathBuf,
    started: Instant,
}

impl Beside {
    fn start(ws: &Workspace, name: &'static str, args: &[&str]) -> Result<Beside> {
        let exe = std::env::current_exe().context("locating the xtask binary")?;
        let dir = ws.host_target_dir().join("beside");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join(format!("{name}.out"));
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("opening {} twice", log.display()))?;
        let mut cmd = Command::new("nice");
        cmd.args(["-n", "19"])
            .arg(exe)
            .args(args)
            .current_dir(ws.root())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        eprintln!("+ {}  (output: {})", command::display(&cmd), log.display());
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start `nice` (coreutils) for {name}"))?;
        Ok(Beside {
            name,
            child: Some(child),
            log,
            started: Instant::now(),
        })
    }

    /// Wait for the job, show what it printed, and fail if it failed.
    fn finish(mut self) -> Result<()> {
        let name = self.name;
        let Some(mut child) = self.child.take() else {
            bail!("{name} was already reaped");
        };
        let waited = Instant::now();
        let status = child
            .wait()
            .with_context(|| format!("waiting for {name}"))?;
        let output = fs::read_to_string(&self.log).unwrap_or_default();
        eprint!("{output}");
        eprintln!(
            "{name}: ran {} beside the other stages; {} of it after them",
            human(self.started.elapsed()),
            human(waited.elapsed())
        );
        if !status.success() {
            bail!(
                "{name} failed ({status}); its output is above and in {}",
                self.log.display()
            );
        }
        Ok(())
    }
}

impl Drop for Beside {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pgid) = i32::try_from(child.id()) {
                // SAFETY: kill has no memory preconditions; the group is our own child's.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            let _ = child.wait();
        }
    }
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
