//! The configurations each workload runs under, started and stopped around a round's
//! workloads: nothing, the floor (the agent's hooks with empty programs), the peers (bpftrace
//! printing every event, bpftrace filtering in the kernel like the default policies,
//! libbpf-tools' execsnoop + opensnoop), all to /dev/null, and the agent on its defaults.

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
    BpftraceFiltered,
    LibbpfTools,
    Agent,
}

/// The filtered bpftrace peer's script, beside the unfiltered one.
const BPFTRACE_FILTERED_SCRIPT: &str = "bpftrace-peer-filtered.bt";
/// libbpf-tools' CO-RE tracers as packaged by Debian (`/usr/sbin`), default options: every
/// exec and every open printed, filtered in the kernel only by what their flags select.
const LIBBPF_TOOLS: [&str; 2] = ["execsnoop", "opensnoop"];

impl Config {
    pub const ALL: [Config; 6] = [
        Config::None,
        Config::Floor,
        Config::Bpftrace,
        Config::BpftraceFiltered,
        Config::LibbpfTools,
        Config::Agent,
    ];
    /// The other tracers the agent is compared with, head to head.
    pub const PEERS: [Config; 3] = [
        Config::Bpftrace,
        Config::BpftraceFiltered,
        Config::LibbpfTools,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Config::None => "no agent",
            Config::Floor => "floor (empty programs)",
            Config::Bpftrace => "bpftrace peer (every event)",
            Config::BpftraceFiltered => "bpftrace peer (filtered in kernel)",
            Config::LibbpfTools => "libbpf-tools execsnoop + opensnoop",
            Config::Agent => "rasp-agent",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Config::None => "none",
            Config::Floor => "floor",
            Config::Bpftrace => "bpftrace",
            Config::BpftraceFiltered => "bpftrace-filtered",
            Config::LibbpfTools => "libbpf-tools",
            Config::Agent => "agent",
        }
    }

    /// The configuration exactly as it is started (paths relative to the workspace), for
    /// the report.
    pub fn command_line(self) -> String {
        match self {
            Config::None => "nothing".into(),
            Config::Floor => "rasp-agent floor".into(),
            Config::Bpftrace => format!("bpftrace xtask/assets/{BPFTRACE_SCRIPT} > /dev/null"),
            Config::BpftraceFiltered => {
                format!("bpftrace xtask/assets/{BPFTRACE_FILTERED_SCRIPT} > /dev/null")
            }
            Config::LibbpfTools => LIBBPF_TOOLS
                .iter()
                .map(|tool| format!("/usr/sbin/{tool} > /dev/null"))
                .collect::<Vec<_>>()
                .join(" & "),
            Config::Agent => {
                "rasp-agent run --socket DIR/agent.sock --state-dir DIR/state (built-in default policies)"
                    .into()
            }
        }
    }
}

/// The unfiltered bpftrace peer's script, in `xtask/assets`.
pub const BPFTRACE_SCRIPT: &str = "bpftrace-peer.bt";

/// Binaries and files the configurations need.
pub struct Tools {
    pub agent: PathBuf,
    /// `xtask/assets`, where the bpftrace scripts are.
    pub assets: PathBuf,
    /// The workspace's `policies/`, the shipped defaults as files.
    pub default_policies: PathBuf,
    pub scratch: PathBuf,
}

/// How long a configuration may take to be ready (bpftrace compiles its script with LLVM;
/// the agent parses the kernel's BTF twice).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A started configuration (one process, or several for libbpf-tools); stopped (SIGTERM,
/// then SIGKILL) when dropped.
pub struct Running {
    pub config: Config,
    /// Each process with its log file.
    children: Vec<(Child, PathBuf)>,
    socket: Option<PathBuf>,
    agent: PathBuf,
}

impl Running {
    fn new(config: Config, tools: &Tools) -> Running {
        Running {
            config,
            children: Vec::new(),
            socket: None,
            agent: tools.agent.clone(),
        }
    }

    /// Fails, with the end of its log, if a started process has already exited.
    fn fail_if_exited(&mut self, what: &str) -> Result<()> {
        for (child, log) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("{what} ({status}){}", log_tail(Some(log)));
            }
        }
        Ok(())
    }

    /// The (first) process whose CPU and memory the workload's cost is charged to.
    pub fn pid(&self) -> Option<u32> {
        self.children.first().map(|(child, _)| child.id())
    }

    /// Every process of the configuration: their CPU and memory add up.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(child, _)| child.id()).collect()
    }

    /// The first line of a process's log that contains `needle`, without terminal colours.
    pub fn log_line_with(&self, needle: &str) -> Option<String> {
        self.children.iter().find_map(|(_, log)| {
            let text = std::fs::read_to_string(log).ok()?;
            text.lines()
                .find(|line| line.contains(needle))
                .map(strip_ansi)
        })
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
        let mut died = Vec::new();
        for (child, log) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                died.push(format!(
                    "exited during the run ({status}){}",
                    log_tail(Some(log))
                ));
            } else {
                signal(child.id(), libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut stuck = false;
        for (mut child, _) in self.children.drain(..) {
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    child.kill().ok();
                    child.wait().ok();
                    stuck = true;
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        if !died.is_empty() {
            bail!("{}: {}", self.config.label(), died.join("; "));
        }
        if stuck {
            bail!(
                "{} did not stop within 15 s of SIGTERM",
                self.config.label()
            );
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for (child, _) in &mut self.children {
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
        Config::Bpftrace => start_bpftrace(&mut running, tools, BPFTRACE_SCRIPT)?,
        Config::BpftraceFiltered => start_bpftrace(&mut running, tools, BPFTRACE_FILTERED_SCRIPT)?,
        Config::LibbpfTools => start_libbpf_tools(&mut running, tools)?,
        Config::Agent => start_agent(&mut running, tools, &[], &[])?,
    }
    Ok(running)
}

fn log_file(tools: &Tools, name: &str) -> Result<(PathBuf, File)> {
    let path = tools.scratch.join(format!("{name}.log"));
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok((path, file))
}

/// `rasp-agent floor`: prints one JSON line once every hook is attached.
fn start_floor(running: &mut Running, tools: &Tools) -> Result<()> {
    let (log, log_handle) = log_file(tools, Config::Floor.key())?;
    let mut child = Command::new(&tools.agent)
        .arg("floor")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_handle)
        .spawn()
        .with_context(|| format!("starting {} floor", tools.agent.display()))?;
    let stdout = child.stdout.take().context("floor stdout")?;
    running.children.push((child, log.clone()));
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
            log_tail(Some(&log))
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
/// /dev/null for a fair peer; readiness is seen instead in its perf-event fds.
fn start_bpftrace(running: &mut Running, tools: &Tools, script: &str) -> Result<()> {
    let (log, log_handle) = log_file(tools, running.config.key())?;
    let child = Command::new("bpftrace")
        .arg(tools.assets.join(script))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_handle)
        .spawn()
        .context("starting bpftrace (apt package bpftrace; `cargo xtask bench` installs it)")?;
    running.children.push((child, log));
    wait_attached(running)
}

/// execsnoop and opensnoop side by side, the pair covering what the agent's exec and open
/// hooks see; their stdout (a header once attached, then one line per event) to /dev/null.
fn start_libbpf_tools(running: &mut Running, tools: &Tools) -> Result<()> {
    for tool in LIBBPF_TOOLS {
        let (log, log_handle) = log_file(tools, tool)?;
        let child = Command::new(format!("/usr/sbin/{tool}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_handle)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {tool} (apt package libbpf-tools; `cargo xtask bench` installs it)"
                )
            })?;
        running.children.push((child, log));
    }
    wait_attached(running)
}

/// Ready once every process holds perf-event fds (one per attached probe or perf-buffer
/// CPU) and their number has not grown for a second.
fn wait_attached(running: &mut Running) -> Result<()> {
    let label = running.config.label();
    let started = Instant::now();
    let mut last = (Vec::new(), Instant::now());
    while started.elapsed() < READY_TIMEOUT {
        running.fail_if_exited(&format!("{label} exited while attaching"))?;
        let fds: Vec<usize> = running
            .pids()
            .into_iter()
            .map(|pid| procfs::perf_event_fds(pid).unwrap_or(0))
            .collect();
        if fds != last.0 {
            last = (fds, Instant::now());
        } else if fds.iter().all(|n| *n > 0) && last.1.elapsed() > Duration::from_secs(1) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    let logs: String = running
        .children
        .iter()
        .map(|(_, log)| log_tail(Some(log)))
        .collect();
    bail!("{label} attached no probes within {READY_TIMEOUT:?}{logs}")
}

/// The agent with extra environment (e.g. `RASP_INTEREST_ALL=1` for a pure event storm).
pub fn start_agent_with_env(tools: &Tools, env: &[(&str, &str)]) -> Result<Running> {
    start_agent_with(tools, env, &[])
}

/// The agent with extra environment and extra `run` arguments (e.g. `--policies DIR`).
pub fn start_agent_with(tools: &Tools, env: &[(&str, &str)], args: &[&str]) -> Result<Running> {
    let mut running = Running::new(Config::Agent, tools);
    start_agent(&mut running, tools, env, args)?;
    Ok(running)
}

/// The agent on its built-in default policies, with a private socket and state directory.
fn start_agent(
    running: &mut Running,
    tools: &Tools,
    env: &[(&str, &str)],
    args: &[&str],
) -> Result<()> {
    let (log, log_handle) = log_file(tools, Config::Agent.key())?;
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
        // Any free port: another agent on the machine may hold the default one.
        .args(["--metrics", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log_handle.try_clone()?)
        .stderr(log_handle)
        .spawn()
        .with_context(|| format!("starting {} run", tools.agent.display()))?;
    running.children.push((child, log));
    running.socket = Some(socket.clone());
    let started = Instant::now();
    let mut last_error = String::new();
    while started.elapsed() < READY_TIMEOUT {
        running.fail_if_exited("rasp-agent exited during start")?;
        // The agent answers before its first uprobe scan is done: the TLS workloads are
        // measured with the system libssl's probes attached, never before.
        match agent_status(&tools.agent, &socket) {
            Ok(status) if libssl_probed(&status) => return Ok(()),
            Ok(_) => last_error = "no libssl target with attached probes yet".to_string(),
            Err(e) => last_error = format!("{e:#}"),
        }
        thread::sleep(Duration::from_millis(200));
    }
    bail!("rasp-agent not ready after {READY_TIMEOUT:?}: {last_error}")
}

/// `status` lists a libssl with attached probes.
fn libssl_probed(status: &Value) -> bool {
    status["uprobe_targets"].as_array().is_some_and(|targets| {
        targets.iter().any(|t| {
            t["kind"] == "libssl" && t["attached"].as_array().is_some_and(|a| !a.is_empty())
        })
    })
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

/// `line` without ANSI escape sequences (tracing colours its output).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_colours_are_stripped() {
        let line = "\u{1b}[2m2026-12-03T07:20:23Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m not updated";
        assert_eq!(strip_ansi(line), "2026-12-03T07:20:23Z ERROR not updated");
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn every_configuration_has_its_own_key_and_a_command_line() {
        let keys: std::collections::BTreeSet<_> = Config::ALL.iter().map(|c| c.key()).collect();
        assert_eq!(keys.len(), Config::ALL.len());
        assert!(Config::PEERS.iter().all(|p| Config::ALL.contains(p)));
        assert!(Config::LibbpfTools
            .command_line()
            .contains("/usr/sbin/opensnoop"));
    }
}
