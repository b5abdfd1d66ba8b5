//! Shared harness for rasp's integration scenarios: start the real `rasp-agent` binary as
//! root, act with real processes (optionally inside a fresh cgroup), then ask the agent's
//! CLI what the kernel reported. Every wait is a poll with a deadline, never a fixed sleep.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod docker;
pub mod https;
pub mod sql;
pub mod webhook;

/// How long the agent gets to answer `status` after `run` was started: a readiness bound,
/// not a performance claim (the start is a few seconds here; a loaded 2-vCPU machine with
/// a QEMU guest and a benchmark beside it took over 20 s to verify the programs).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the agent gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// No single CLI call may take longer than this; a hung agent fails the test instead of
/// hanging the suite.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A name no other test of this run (or of a concurrent run) uses: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// The workspace root (the directory above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate lives inside the workspace")
        .to_path_buf()
}

/// The agent binary under test: `$RASP_AGENT_BIN`, else the workspace's release build.
pub fn agent_bin() -> PathBuf {
    let bin = match std::env::var_os("RASP_AGENT_BIN") {
        Some(path) => PathBuf::from(path),
        None => workspace_root().join("target/release/rasp-agent"),
    };
    if !bin.is_file() {
        panic!(
            "agent binary not found at {}: build it with `cargo xtask build`",
            bin.display()
        );
    }
    bin
}

/// Scenarios load eBPF programs through the agent: without root they cannot say anything,
/// so they fail loudly rather than pass by skipping.
/// A shared library any program can load or preload harmlessly (libm), wherever this
/// distribution keeps it.
pub fn harmless_library() -> &'static str {
    [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
        "/usr/lib/aarch64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("no libm.so.6 to load")
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test needs root: it loads eBPF programs; run `cargo xtask test` as root");
    }
}

/// Calls `probe` every 50 ms until it returns `Some`, or `None` once `timeout` has passed
/// (the probe always runs at least once, and once more at the deadline).
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// Runs `cmd` with stdout and stderr captured; `None` (after killing it) if it has not
/// exited within `timeout`.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {cmd:?}: {err}"));
    // Drain both pipes while waiting, or a chatty child blocks on a full pipe.
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    match wait_child(&mut child, timeout) {
        Some(status) => Some(Output {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Waits for `child` to exit, at most `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    wait_for(timeout, || child.try_wait().expect("try_wait on a child"))
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory preconditions; the pid is one of our own children.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ESRCH),
            "kill({pid}, {signal}): {err}"
        );
    }
}

/// Parses JSON lines (blank lines ignored); panics with the offending line.
pub fn parse_json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line:?}"))
        })
        .collect()
}

/// Renders values one a line, for failure messages.
pub fn show(values: &[Value]) -> String {
    if values.is_empty() {
        return "  (nothing)".to_string();
    }
    values.iter().map(|v| format!("  {v}\n")).collect()
}

/// Agents run side by side in tests: each gets its own metrics port (the kernel picks one;
/// `status` says which) unless the test names one.
fn metrics_default(extra_args: &[&str]) -> &'static [&'static str] {
    if extra_args.contains(&"--metrics") {
        &[]
    } else {
        &["--metrics", "127.0.0.1:0"]
    }
}

/// `s` percent-encoded for a URL's query (RFC 3986 unreserved characters kept).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A running `rasp-agent run` with its own socket, state directory and log, in a fresh
/// directory under /tmp. Dropping it stops the agent (SIGTERM, then SIGKILL); when the
/// test is failing, the agent's log is printed and the directory kept.
pub struct Agent {
    bin: PathBuf,
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent with `extra_args` after the socket and state-dir options, and waits
    /// until `status` answers.
    pub fn start(extra_args: &[&str]) -> Agent {
        Agent::start_with(extra_args, None)
    }

    /// `start`, with the agent itself inside `cgroup` (as a supervisor would place it).
    pub fn start_in(cgroup: &Cgroup, extra_args: &[&str]) -> Agent {
        Agent::start_with(extra_args, Some(cgroup))
    }

    fn start_with(extra_args: &[&str], cgroup: Option<&Cgroup>) -> Agent {
        let bin = agent_bin();
        let dir = std::env::temp_dir().join(unique_name("rasp-test"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", dir.display()));
        let socket = dir.join("agent.sock");
        let log = dir.join("agent.log");
        let log_file = fs::File::create(&log)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", log.display()));
        let mut command = match cgroup {
            Some(cg) => cg.command(&bin),
            None => Command::new(&bin),
        };
        let child = command
            .arg("run")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(metrics_default(extra_args))
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", bin.display()));
        let mut agent = Agent {
            bin,
            child,
            dir,
            socket,
            log,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        let mut last_answer = String::new();
        let ready = wait_for(START_TIMEOUT, || {
            if let Some(status) = self.child.try_wait().expect("try_wait on the agent") {
                panic!(
                    "agent exited during startup ({status}); log {}:\n{}",
                    self.log.display(),
                    self.log_text()
                );
            }
            let mut status = self.command(&["status", "--json"]);
            match output_within(&mut status, Duration::from_secs(5)) {
                Some(out) if out.status.success() => Some(()),
                Some(out) => {
                    last_answer = String::from_utf8_lossy(&out.stderr).into_owned();
                    None
                }
                None => {
                    last_answer = "`status` did not answer within 5 s".to_string();
                    None
                }
            }
        });
        if ready.is_none() {
            panic!(
                "agent not ready after {:?}; last `status` said: {last_answer}\nlog {}:\n{}",
                started.elapsed(),
                self.log.display(),
                self.log_text()
            );
        }
    }

    /// Wait up to `timeout` for the agent to exit on its own; its status, or `None`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// This agent's private directory (socket, state dir, log); scenarios may put their own
    /// files here.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything the agent wrote to stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|err| format!("(cannot read log: {err})"))
    }

    /// `<bin> <args> --socket <sock>`, not started: for clients a scenario wants to manage
    /// itself (e.g. a `--follow` stream).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).arg("--socket").arg(&self.socket);
        cmd
    }

    /// Runs a CLI command against this agent and returns its output, whatever its status.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_within(args, CLI_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "`rasp-agent {}` did not answer within {CLI_TIMEOUT:?}",
                args.join(" ")
            )
        })
    }

    /// Like [`Agent::cli`], but `None` if the command takes longer than `timeout`.
    pub fn cli_within(&self, args: &[&str], timeout: Duration) -> Option<Output> {
        output_within(&mut self.command(args), timeout)
    }

    /// Runs a CLI command that must succeed and print JSON lines.
    pub fn cli_json_lines(&self, args: &[&str]) -> Vec<Value> {
        let out = self.cli(args);
        if !out.status.success() {
            panic!(
                "`rasp-agent {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse_json_lines(&String::from_utf8_lossy(&out.stdout))
    }

    /// `status --json`: one object.
    pub fn status(&self) -> Value {
        let mut lines = self.cli_json_lines(&["status", "--json"]);
        assert_eq!(
            lines.len(),
            1,
            "status --json must print one object:\n{}",
            show(&lines)
        );
        lines.remove(0)
    }

    /// `events --json` plus `filter` (e.g. `["--pid", "42"]`).
    pub fn events(&self, filter: &[&str]) -> Vec<Value> {
        let mut args = vec!["events", "--json"];
        args.extend_from_slice(filter);
        self.cli_json_lines(&args)
    }

    fn stop(&mut self) -> Option<ExitStatus> {
        send_signal(self.child.id(), libc::SIGTERM);
        match wait_child(&mut self.child, STOP_TIMEOUT) {
            Some(status) => Some(status),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                None
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let stopped = self.stop();
        if thread::panicking() {
            eprintln!(
                "--- agent log ({}; directory kept) ---\n{}--- end of agent log ---",
                self.log.display(),
                self.log_text()
            );
            return;
        }
        if stopped.is_none() {
            panic!(
                "agent did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed); log:\n{}",
                self.log_text()
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A fresh cgroup v2 directory for the processes of one scenario, so the events they cause
/// carry a cgroup nobody else uses. Dropping it kills whatever still runs inside, then
/// removes it.
pub struct Cgroup {
    path: PathBuf,
    in_hierarchy: String,
}

impl Cgroup {
    /// Creates `<cgroup2 mount>/rasp-test-<pid>-<n>-<name>`.
    pub fn new(name: &str) -> Cgroup {
        let mount = cgroup2_mount();
        let dir_name = format!("{}-{name}", unique_name("rasp-test"));
        let path = mount.join(&dir_name);
        fs::create_dir(&path)
            .unwrap_or_else(|err| panic!("cannot create cgroup {}: {err}", path.display()));
        Cgroup {
            path,
            in_hierarchy: format!("/{dir_name}"),
        }
    }

    /// The directory in the mounted cgroup2 filesystem.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path inside the cgroup2 hierarchy, as the agent reports it: `/rasp-test-...`.
    pub fn path_in_hierarchy(&self) -> &str {
        &self.in_hierarchy
    }

    /// The cgroup id the kernel reports (`bpf_get_current_cgroup_id`): the directory's
    /// inode number in cgroup2fs.
    pub fn id(&self) -> u64 {
        fs::metadata(&self.path)
            .unwrap_or_else(|err| panic!("stat {}: {err}", self.path.display()))
            .ino()
    }

    /// A command whose process joins this cgroup before it execs, so even its exec event
    /// carries the cgroup.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let procs = CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes())
            .expect("cgroup path has no NUL");
        let mut cmd = Command::new(program);
        // SAFETY: between fork and exec only async-signal-safe calls are allowed; the
        // closure uses open/write/close on a path allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Writing "0" moves the writing process itself.
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if written != 1 {
                    return Err(err);
                }
                Ok(())
            });
        }
        cmd
    }

    /// Process ids currently in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // SIGKILL cannot hurry a task already in its exit: an agent's teardown child spends
        // seconds there while the kernel detaches the probes it held (longer on a loaded
        // machine).
        let emptied = wait_for(Duration::from_secs(30), || {
            let procs = self.procs();
            for &pid in &procs {
                send_signal(pid, libc::SIGKILL);
            }
            procs.is_empty().then_some(())
        });
        // rmdir can briefly fail with EBUSY while the last tasks finish exiting.
        let removed = wait_for(Duration::from_secs(5), || fs::remove_dir(&self.path).ok());
        if (emptied.is_none() || removed.is_none()) && !thread::panicking() {
            panic!(
                "cannot clean up cgroup {} (still in it: {:?})",
                self.path.display(),
                self.procs()
            );
        }
    }
}

/// A cgroup named like a Docker container's (`docker-<64 hex>.scope` at the end of the leaf
/// name), which the agent recognizes as a container; returns the id it must report.
pub fn container_cgroup() -> (Cgroup, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    let seed = unique_name("c");
    let mix = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let id = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        0xfeed_0000_0000_0000u64 | u64::from(std::process::id()),
        nanos,
        mix,
        nanos ^ mix
    );
    (Cgroup::new(&format!("docker-{id}.scope")), id)
}

/// A loopback TCP port free when asked (the kernel's pick; bound and released).
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// The cgroup2 mount point, from /proc/mounts (hybrid layouts mount it at
/// /sys/fs/cgroup/unified, pure v2 ones at /sys/fs/cgroup).
pub fn cgroup2_mount() -> PathBuf {
    let mounts = fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    mounts
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_field(target)))
        })
        .expect("no cgroup2 filesystem in /proc/mounts: the agent needs cgroup v2")
}

/// /proc/mounts writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Our real ancestry from /proc, nearest parent first, ending at pid 1 (or where /proc
/// stops answering).
pub fn proc_ancestors(pid: u32) -> Vec<u32> {
    let mut chain = Vec::new();
    let mut current = pid;
    while let Some(parent) = proc_ppid(current) {
        if parent == 0 || chain.contains(&parent) {
            break;
        }
        chain.push(parent);
        current = parent;
    }
    chain
}

fn proc_ppid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The running kernel's release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("read /proc/sys/kernel/osrelease")
        .trim()
        .to_string()
}

/// How long `spawn_detached` waits for its process to report its pid.
const DETACHED_TIMEOUT: Duration = Duration::from_secs(5);

/// The inner shell of [`spawn_detached`]: by the time its `sleep` ends the outer shell has
/// exited and this one has been reparented, so it reports its pid and parent (read with the
/// `read` builtin: no child process) and replaces itself with the command.
const DETACHED_INNER: &str = r#"sleep 0.3; read -r _pid _comm _state ppid _rest < /proc/self/stat; echo "$$ $ppid" > "$RASP_DETACHED_PIDFILE"; eval "exec $RASP_DETACHED_CMD""#;

/// Runs `cmdline` the way an intruder's command runs: not below this test (and so not below
/// `cargo`, which several default rules except as an ancestor). An outer `/bin/sh` starts an
/// inner one in the background and exits; the orphaned inner shell is reparented (to init)
/// and then `exec`s `cmdline`, so the returned pid is the pid of the command itself.
/// `cmdline` is a simple shell command (it follows `exec`; use `sh -c '...'` for pipelines).
/// It is passed through the environment, so neither shell's argv contains it and rules that
/// look at command lines see it only in the command's own exec. With `cgroup`, the outer shell
/// joins it before it execs, so every process of the chain is in it. Stdio is /dev/null.
pub fn spawn_detached(cmdline: &str, cgroup: Option<&Cgroup>) -> u32 {
    let pidfile = std::env::temp_dir().join(format!("{}.pid", unique_name("rasp-detached")));
    let _ = fs::remove_file(&pidfile);
    let mut outer = match cgroup {
        Some(cgroup) => cgroup.command("/bin/sh"),
        None => Command::new("/bin/sh"),
    };
    outer
        .args(["-c", r#"/bin/sh -c "$RASP_DETACHED_INNER" & exit 0"#])
        .env("RASP_DETACHED_INNER", DETACHED_INNER)
        .env("RASP_DETACHED_CMD", cmdline)
        .env("RASP_DETACHED_PIDFILE", &pidfile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = outer
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start /bin/sh for {cmdline:?}: {err}"));
    let status = wait_child(&mut child, DETACHED_TIMEOUT)
        .unwrap_or_else(|| panic!("the outer shell for {cmdline:?} did not exit"));
    assert!(status.success(), "outer shell for {cmdline:?}: {status}");
    let (pid, ppid) = wait_for(DETACHED_TIMEOUT, || {
        let text = fs::read_to_string(&pidfile).ok()?;
        let line = text.strip_suffix('\n')?;
        let (pid, ppid) = line.split_once(' ')?;
        Some((pid.parse::<u32>().ok()?, ppid.parse::<u32>().ok()?))
    })
    .unwrap_or_else(|| {
        panic!(
            "the detached shell for {cmdline:?} did not report its pid in {} within \
             {DETACHED_TIMEOUT:?}",
            pidfile.display()
        )
    });
    let _ = fs::remove_file(&pidfile);
    let us = std::process::id();
    assert!(
        ppid != us && !proc_ancestors(ppid).contains(&us),
        "{cmdline:?} (pid {pid}) is still below this test (parent {ppid}): the detached \
         shell was not reparented"
    );
    pid
}

/// Whether `pid` has exited (no /proc entry, or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Files and directories a scenario makes outside its agent's directory (under /opt, /etc,
/// /dev/shm, /root/.ssh ...). Only what it created is recorded, and dropping it removes
/// that, newest first; nothing that existed before is touched.
#[derive(Default)]
pub struct Scratch {
    created: Vec<PathBuf>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch::default()
    }

    /// A new directory `<parent>/rasp-test-<pid>-<n>` (and `parent` if missing).
    pub fn unique_dir(&mut self, parent: impl AsRef<Path>) -> PathBuf {
        self.dir(parent.as_ref().join(unique_name("rasp-test")))
    }

    /// Creates `path` and its missing parents, recording each one created.
    pub fn dir(&mut self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        let mut missing = Vec::new();
        let mut cursor = Some(path);
        while let Some(p) = cursor {
            if p.exists() {
                break;
            }
            missing.push(p.to_path_buf());
            cursor = p.parent();
        }
        for p in missing.into_iter().rev() {
            fs::create_dir(&p).unwrap_or_else(|err| panic!("mkdir {}: {err}", p.display()));
            self.created.push(p);
        }
        path.to_path_buf()
    }

    /// Writes a new file (which must not exist yet) with `mode`, creating its parents.
    pub fn file(&mut self, path: impl AsRef<Path>, contents: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = path.as_ref();
        if let Some(parent) = path.parent() {
            self.dir(parent);
        }
        assert!(
            !path.exists(),
            "{} already exists; refusing to replace it",
            path.display()
        );
        fs::write(path, contents).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        self.created.push(path.to_path_buf());
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|err| panic!("chmod {}: {err}", path.display()));
        path.to_path_buf()
    }

    /// Copies `from` to a new file `to` (mode 0755), creating its parents.
    pub fn copy(&mut self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> PathBuf {
        let from = from.as_ref();
        let bytes = fs::read(from).unwrap_or_else(|err| panic!("read {}: {err}", from.display()));
        self.file(to, &bytes, 0o755)
    }

    /// Records `path` for removal: something a scenario's own process is about to create.
    pub fn adopt(&mut self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        assert!(
            !path.exists(),
            "{} already exists; refusing to adopt it",
            path.display()
        );
        self.created.push(path.to_path_buf());
        path.to_path_buf()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for path in self.created.iter().rev() {
            let result = match fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
                Ok(_) => fs::remove_file(path),
                Err(_) => Ok(()),
            };
            if let Err(err) = result {
                eprintln!("note: cannot remove {}: {err}", path.display());
            }
        }
    }
}

impl Agent {
    /// `detections --json` plus `filter` (e.g. `["--rule", "exec-from-tmp"]`).
    pub fn detections(&self, filter: &[&str]) -> Vec<Value> {
        let mut args = vec!["detections", "--json"];
        args.extend_from_slice(filter);
        self.cli_json_lines(&args)
    }

    /// The agent's state directory (`--state-dir`): the detection journal lives here.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Stops the agent with SIGTERM (it must exit on its own), then starts a new one on the
    /// same socket, state directory and log, with `extra_args`, and waits until it answers.
    /// Returns how the old one exited.
    pub fn restart(&mut self, extra_args: &[&str]) -> ExitStatus {
        let status = self.stop().unwrap_or_else(|| {
            panic!(
                "agent did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed); log:\n{}",
                self.log_text()
            )
        });
        self.start_again(extra_args);
        status
    }

    /// Starts a new agent on the same socket, state directory and log after this one has
    /// exited (or died), with `extra_args`, and waits until it answers.
    pub fn start_again(&mut self, extra_args: &[&str]) {
        let log_file = fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|err| panic!("cannot reopen {}: {err}", self.log.display()));
        self.child = Command::new(&self.bin)
            .arg("run")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(metrics_default(extra_args))
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", self.bin.display()));
        self.wait_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_fields_are_unescaped() {
        assert_eq!(
            unescape_mount_field(r"/mnt/with\040space"),
            "/mnt/with space"
        );
        assert_eq!(unescape_mount_field(r"/plain"), "/plain");
        assert_eq!(unescape_mount_field(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn own_ancestry_reaches_init() {
        let chain = proc_ancestors(std::process::id());
        assert_eq!(chain.last(), Some(&1), "ancestors: {chain:?}");
    }
}
