//! The configurations each workload runs under, started and stopped around a round's
//! workloads: nothing, the floor (the agent's hooks with empty programs), the bpftrace peer
//! printing every event to /dev/null, and the real agent on its default policies.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::procfs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    None,
    Floor,
    Bpftrace,
    Agent,
}

impl Config {
    pub const ALL: [Config; 4] = [Config::None, Config::Floor, Config::Bpftrace, Config::Agent];
    /// The other tracers the agent is compared with, head to head.
    pub const PEERS: [Config; 1] = [Config::Bpftrace];

    pub fn label(self) -> &'static str {
        match self {
            Config::None => "no agent",
            Config::Floor => "floor (empty programs)",
            Config::Bpftrace => "bpftrace peer",
            Config::Agent => "rasp-agent",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Config::None => "none",
            Config::Floor => "floor",
            Config::Bpftrace => "bpftrace",
            Config::Agent => "agent",
        }
    }
}

/// Binaries and files the configurations need.
pub struct Tools {
    pub agent: PathBuf,
    pub bpftrace_script: PathBuf,
    pub scratch: PathBuf,
}

/// How long a configuration may take to be ready (bpftrace compiles its script with LLVM;
/// the agent parses the kernel's BTF twice).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A started configuration; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Running {
    pub config: Config,
    child: Option<Child>,
    log: Option<PathBuf>,
    socket: Option<PathBuf>,
    agent: PathBuf,
}

impl Running {
    fn new(config: Config, tools: &Tools) -> Running {
        Running {
            config,
            child: None,
            log: None,
            socket: None,
            agent: tools.agent.clone(),
        }
    }

    /// Fails, with the end of its log, if the started process has already exited.
    fn fail_if_exited(&mut self, what: &str) -> Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                bail!("{what} ({status}){}", log_tail(self.log.as_deref()));
            }
        }
        Ok(())
    }
    /// The process whose CPU and memory the workload's cost is charged to, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `rasp-agent status --json` of the running agent.
    pub fn agent_status(&self) -> Result<Value> {
        let Some(socket) = &self.socket else {
            bail!("{} has no agent socket", self.config.label());
        };
        agent_status(&self.agent, socket)
    }

    /// Stops the configuration and fails if it had died on its own before.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited during the run ({status}){}",
                self.config.label(),
                log_tail(self.log.as_deref())
            );
        }
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        child.kill().ok();
        child.wait().ok();
        bail!(
            "{} did not stop within 15 s of SIGTERM",
            self.config.label()
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

pub fn start(config: Config, tools: &Tools) -> Result<Running> {
    let mut running = Running::new(config, tools);
    match config {
        Config::None => {}
        Config::Floor => start_floor(&mut running, tools)?,
        Config::Bpftrace => start_bpftrace(&mut running, tools)?,
        Config::Agent => start_agent(&mut running, tools, &[])?,
    }
    Ok(running)
}

fn log_file(tools: &Tools, config: Config) -> Result<(PathBuf, File)> {
    let path = tools.scratch.join(format!("{}.log", config.key()));
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok((path, file))
}

/// `rasp-agent floor`: prints one JSON line once every hook is attached.
fn start_floor(running: &mut Running, tools: &Tools) -> Result<()> {
    let (log, log_handle) = log_file(tools, Config::Floor)?;
    let mut child = Command::new(&tools.agent)
        .arg("floor")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_handle)
        .spawn()
        .with_context(|| format!("starting {} floor", tools.agent.display()))?;
    let stdout = child.stdout.take().context("floor stdout")?;
    running.child = Some(child);
    running.log = Some(log);
    let (send, recv) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        send.send(first).ok();
        // Keep the pipe open and drained until the floor exits.
        for _ in lines {}
    });
    let line = match recv.recv_timeout(READY_TIMEOUT) {
        Ok(Some(Ok(line))) => line,
        Ok(_) => bail!(
            "rasp-agent floor exited before attaching{}",
            log_tail(running.log.as_deref())
        ),
        Err(_) => bail!("rasp-agent floor did not attach within {READY_TIMEOUT:?}"),
    };
    let report: Value = serde_json::from_str(&line)
        .with_context(|| format!("rasp-agent floor printed {line:?}, not JSON"))?;
    if report.get("floor").and_then(Value::as_str) != Some("attached") {
        bail!("rasp-agent floor said {line}");
    }
    Ok(())
}

/// bpftrace writes "Attaching N probes..." and every event to stdout, which must go to
/// /dev/null for a fair peer; readiness is seen instead in its perf-event fds (one per
/// attached probe), once their number has stopped growing.
fn start_bpftrace(running: &mut Running, tools: &Tools) -> Result<()> {
    let (log, log_handle) = log_file(tools, Config::Bpftrace)?;
    let child = Command::new("bpftrace")
        .arg(&tools.bpftrace_script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_handle)
        .spawn()
        .context("starting bpftrace (apt package bpftrace; `cargo xtask bench` installs it)")?;
    let pid = child.id();
    running.child = Some(child);
    running.log = Some(log);
    let started = Instant::now();
    let mut last = (0, Instant::now());
    while started.elapsed() < READY_TIMEOUT {
        running.fail_if_exited("bpftrace exited")?;
        let fds = procfs::perf_event_fds(pid).unwrap_or(0);
        if fds != last.0 {
            last = (fds, Instant::now());
        } else if fds > 0 && last.1.elapsed() > Duration::from_secs(1) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "bpftrace attached no probes within {READY_TIMEOUT:?}{}",
        log_tail(running.log.as_deref())
    )
}

/// The agent with extra environment (e.g. `RASP_INTEREST_ALL=1` for a pure event storm).
pub fn start_agent_with_env(tools: &Tools, env: &[(&str, &str)]) -> Result<Running> {
    let mut running = Running::new(Config::Agent, tools);
    start_agent(&mut running, tools, env)?;
    Ok(running)
}

/// The agent on its built-in default policies, with a private socket and state directory.
fn start_agent(running: &mut Running, tools: &Tools, env: &[(&str, &str)]) -> Result<()> {
    let (log, log_handle) = log_file(tools, Config::Agent)?;
    let dir = tools.scratch.join("agent");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let socket = dir.join("agent.sock");
    let child = Command::new(&tools.agent)
        .arg("run")
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log_handle.try_clone()?)
        .stderr(log_handle)
        .spawn()
        .with_context(|| format!("starting {} run", tools.agent.display()))?;
    running.child = Some(child);
    running.log = Some(log);
    running.socket = Some(socket.clone());
    let started = Instant::now();
    let mut last_error = String::new();
    while started.elapsed() < READY_TIMEOUT {
        running.fail_if_exited("rasp-agent exited during start")?;
        match agent_status(&tools.agent, &socket) {
            Ok(_) => return Ok(()),
            Err(e) => last_error = format!("{e:#}"),
        }
        thread::sleep(Duration::from_millis(200));
    }
    bail!("rasp-agent not answering after {READY_TIMEOUT:?}: {last_error}")
}

pub fn agent_status(agent: &Path, socket: &Path) -> Result<Value> {
    let output = Command::new(agent)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()
        .with_context(|| format!("running {} status", agent.display()))?;
    if !output.status.success() {
        bail!(
            "rasp-agent status: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).context("rasp-agent status printed no JSON")
}

pub fn signal(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill has no memory preconditions; a stale pid at worst gets ESRCH.
        unsafe { libc::kill(pid, signal) };
    }
}

fn log_tail(log: Option<&Path>) -> String {
    let Some(log) = log else {
        return String::new();
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("; last lines of {}:\n{tail}", log.display())
}
