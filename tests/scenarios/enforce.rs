//! Enforcement on the host kernel, which refuses BPF-LSM (KERNEL.md): what each fallback
//! really does, checked on what the kernel did — a program that never ran (its side effect
//! is missing), a connect that got EPERM while others connect, a reader killed before it
//! printed a byte — and on what the detections say (`prevented` only where the act did not
//! happen). The BPF-LSM paths are checked in the guest (`cargo xtask vm-test`).

use std::{
    fs,
    io::ErrorKind,
    net::{TcpListener, TcpStream, UdpSocket},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use rasp_tests::{
    harmless_library, output_within, require_root, unique_name, wait_for, Agent, Scratch,
};
use serde_json::Value;

const DETECTION_WAIT: Duration = Duration::from_secs(10);

/// A policy directory with one enforce-mode policy holding `rules` (YAML list items).
fn policy_dir(scratch: &mut Scratch, rules: &str) -> PathBuf {
    let dir = scratch.unique_dir(std::env::temp_dir());
    let text = format!("name: enforce-test\nversion: 1\nmode: enforce\nrules:\n{rules}");
    scratch.file(dir.join("enforce.yaml"), text.as_bytes(), 0o644);
    dir
}

/// An enforce policy with one rule, `deny-read`, blocking reads of `file`.
fn deny_read_policy(scratch: &mut Scratch, file: &Path) -> PathBuf {
    policy_dir(
        scratch,
        &format!(
            r#"  - id: deny-read
    severity: high
    event: file_open
    match: {{ path: ["{}"], access: [read] }}
    action: block
"#,
            file.display()
        ),
    )
}

fn start_agent(policies: &Path) -> Agent {
    let policies = policies.to_str().expect("utf-8 path");
    Agent::start(&["--policies", policies])
}

/// The first detection of `rule`, waiting for it.
fn detection(agent: &Agent, rule: &str) -> Value {
    wait_for(DETECTION_WAIT, || {
        agent.detections(&["--rule", rule]).into_iter().next()
    })
    .unwrap_or_else(|| {
        panic!(
            "no detection of {rule}; status: {}\nlog:\n{}",
            agent.status(),
            agent.log_text()
        )
    })
}

fn run(cmd: &mut Command) -> std::process::Output {
    output_within(cmd, Duration::from_secs(20)).unwrap_or_else(|| panic!("{cmd:?} hung"))
}

fn rung_of<'a>(status: &'a Value, rule: &str) -> &'a Value {
    status["enforcement"]["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule"] == rule))
        .unwrap_or_else(|| panic!("{rule} not in status enforcement: {status}"))
}

/// Enforcement ends with the agent: right after it has stopped (its programs are released
/// by a child for a few more seconds), opening a file it denied is no longer punished.
#[test]
fn a_stopped_agent_enforces_nothing() {
    require_root();
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let secret = scratch.file(dir.join("secret.txt"), b"readable again\n", 0o644);
    let policies = deny_read_policy(&mut scratch, &secret);
    let agent = start_agent(&policies);
    let out = run(Command::new("cat").arg(&secret));
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?}", out.status);
    drop(agent);
    let out = run(Command::new("cat").arg(&secret));
    assert!(
        out.status.success(),
        "reading after the agent stopped: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"readable again\n");
}

#[test]
fn a_denied_exec_never_runs_its_program() {
    require_root();
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let denied = scratch.copy("/usr/bin/touch", dir.join("denied-touch"));
    let allowed = scratch.copy("/usr/bin/touch", dir.join("allowed-touch"));
    let sub = scratch.dir(dir.join("sub"));
    let in_subtree = scratch.copy("/usr/bin/touch", sub.join("any-touch"));
    let name = unique_name("rasp-deny");
    let by_name = scratch.copy("/usr/bin/touch", dir.join(&name));
    let policies = policy_dir(
        &mut scratch,
        &format!(
            r#"  - id: deny-exact
    severity: high
    event: exec
    match: {{ exe: ["{}"] }}
    action: block
  - id: deny-subtree
    severity: high
    event: exec
    match: {{ exe: ["{}/**"] }}
    action: block
  - id: deny-name
    severity: high
    event: exec
    match: {{ exe: ["*/{name}"] }}
    action: block
"#,
            denied.display(),
            sub.display()
        ),
    );
    let agent = start_agent(&policies);
    let status = agent.status();
    for rule in ["deny-exact", "deny-subtree", "deny-name"] {
        assert_eq!(rung_of(&status, rule)["rung"], "kill_at_exec", "{status}");
    }

    for (program, rule) in [
        (&denied, "deny-exact"),
        (&in_subtree, "deny-subtree"),
        (&by_name, "deny-name"),
    ] {
        let marker = dir.join(format!("{rule}.marker"));
        let out = run(Command::new(program).arg(&marker));
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "{} was not killed: {:?}",
            program.display(),
            out.status
        );
        assert!(
            !marker.exists(),
            "{} ran: it created {}",
            program.display(),
            marker.display()
        );
        let d = detection(&agent, rule);
        assert_eq!(d["outcome"], "prevented", "{d}");
        assert!(
            d["outcome_detail"]
                .as_str()
                .is_some_and(|s| s.contains("before the new program ran")),
            "{d}"
        );
        assert_eq!(d["event"]["exe"], program.display().to_string(), "{d}");
    }

    // The same program under another name runs.
    let marker = dir.join("allowed.marker");
    let out = run(Command::new(&allowed).arg(&marker));
    assert!(out.status.success(), "{:?}", out.status);
    assert!(marker.exists());
}

#[test]
fn a_denied_connect_gets_eperm_while_others_connect() {
    require_root();
    let denied = TcpListener::bind("127.0.0.1:0").expect("listen");
    let allowed = TcpListener::bind("127.0.0.1:0").expect("listen");
    let denied_port = denied.local_addr().expect("addr").port();
    let allowed_port = allowed.local_addr().expect("addr").port();
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let udp_port = udp.local_addr().expect("addr").port();
    let mut scratch = Scratch::new();
    let policies = policy_dir(
        &mut scratch,
        &format!(
            r#"  - id: deny-port
    severity: high
    event: connect
    match: {{ cidr: ["127.0.0.1/32"], port: [{denied_port}, {udp_port}] }}
    action: block
"#
        ),
    );
    let agent = start_agent(&policies);
    assert_eq!(
        rung_of(&agent.status(), "deny-port")["rung"],
        "cgroup_socket"
    );

    let err = TcpStream::connect(("127.0.0.1", denied_port)).expect_err("denied connect");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    TcpStream::connect(("127.0.0.1", allowed_port)).expect("the other port connects");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let err = sender
        .send_to(b"x", ("127.0.0.1", udp_port))
        .expect_err("denied datagram");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 8];
    assert!(udp.recv(&mut buf).is_err(), "the refused datagram arrived");

    let d = detection(&agent, "deny-port");
    assert_eq!(d["outcome"], "prevented", "{d}");
    assert_eq!(d["process"]["pid"], std::process::id(), "{d}");
    assert_eq!(d["event"]["port"], denied_port, "{d}");
    // The test process itself was refused, and lives on.
}

#[test]
fn a_denied_open_kills_the_reader_before_it_reads() {
    require_root();
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let secret = scratch.file(dir.join("secret.txt"), b"do-not-print\n", 0o644);
    let policies = deny_read_policy(&mut scratch, &secret);
    let agent = start_agent(&policies);
    assert_eq!(
        rung_of(&agent.status(), "deny-read")["rung"],
        "kill_at_syscall"
    );
    let out = run(Command::new("cat").arg(&secret));
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?}", out.status);
    assert!(
        out.stdout.is_empty(),
        "cat printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let d = detection(&agent, "deny-read");
    // The open itself happened: the honest outcome is `after`, not `prevented`.
    assert_eq!(d["outcome"], "after", "{d}");
    assert_eq!(d["event"]["path"], secret.display().to_string(), "{d}");
    // Writing it is not denied.
    fs::write(&secret, b"rewritten\n").expect("write is allowed");
}

#[test]
fn a_denied_library_never_runs_its_code() {
    require_root();
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let lib = scratch.copy(harmless_library(), dir.join("libdenied.so.6"));
    let policies = policy_dir(
        &mut scratch,
        &format!(
            r#"  - id: deny-lib
    severity: high
    event: library_load
    match: {{ path: ["{}/**"] }}
    action: block
"#,
            dir.display()
        ),
    );
    let agent = start_agent(&policies);
    let marker = dir.join("ran.marker");
    let out = run(Command::new("/usr/bin/touch")
        .arg(&marker)
        .env("LD_PRELOAD", &lib));
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?}", out.status);
    assert!(!marker.exists(), "the program ran past its library load");
    let d = detection(&agent, "deny-lib");
    assert_eq!(d["outcome"], "after", "{d}");
}

#[test]
fn rules_the_kernel_cannot_decide_act_in_userspace_and_say_so() {
    require_root();
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let sleeper = scratch.copy("/usr/bin/sleep", dir.join("sleeper"));
    let policies = policy_dir(
        &mut scratch,
        &format!(
            r#"  - id: argv-block
    severity: high
    event: exec
    match: {{ exe: ["{}"], argv: ["37"] }}
    action: block
"#,
            sleeper.display()
        ),
    );
    let agent = start_agent(&policies);
    let status = agent.status();
    let rung = rung_of(&status, "argv-block");
    assert_eq!(rung["rung"], "userspace", "{status}");
    assert!(
        rung["reason"].as_str().is_some_and(|r| r.contains("argv")),
        "{rung}"
    );
    // Not decidable in the kernel: the program starts, and is killed after the event.
    let mut child = Command::new(&sleeper).arg("37").spawn().expect("spawn");
    let status = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten())
        .expect("the process was not killed");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let d = detection(&agent, "argv-block");
    assert_eq!(d["outcome"], "after", "{d}");
}

/// A one-rule policy that acts on the exec of a program named `name` (in any directory).
fn exec_rule(scratch: &mut Scratch, id: &str, name: &str, action_lines: &str) -> PathBuf {
    policy_dir(
        scratch,
        &format!(
            r#"  - id: {id}
    severity: high
    event: exec
    match: {{ exe: ["*/{name}"] }}
{action_lines}
"#
        ),
    )
}

#[test]
fn kill_with_process_group_scope_ends_a_whole_pipeline() {
    use std::os::unix::process::CommandExt;
    require_root();
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let name = unique_name("rasp-pgkill");
    let trigger = scratch.copy("/usr/bin/sleep", dir.join(&name));
    let policies = exec_rule(
        &mut scratch,
        "pipeline-kill",
        &name,
        "    action: kill\n    scope: process-group",
    );
    let agent = start_agent(&policies);
    // `sleep 300 | trigger 300` in a process group of its own (as a shell's job).
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(format!("sleep 300 | {} 300", trigger.display()))
        .process_group(0)
        .spawn()
        .expect("spawn the pipeline");
    let shell_pid = shell.id();
    let status = wait_for(Duration::from_secs(15), || shell.try_wait().ok().flatten())
        .expect("the pipeline's shell was not killed");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let d = detection(&agent, "pipeline-kill");
    assert_eq!(d["outcome"], "after", "{d}");
    assert!(
        d["outcome_detail"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("process group {shell_pid}"))),
        "{d}"
    );
    // Every member of the group is gone, the plain `sleep 300` included.
    let members = wait_for(Duration::from_secs(5), || {
        let left: Vec<u32> = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit(')')
                            .next()?
                            .split_whitespace()
                            .nth(2)?
                            .parse()
                            .ok()
                    })
                    == Some(shell_pid)
            })
            .collect();
        left.is_empty().then_some(())
    });
    assert!(members.is_some(), "members of group {shell_pid} survived");
}

#[test]
fn the_rate_limit_bites_and_is_counted() {
    require_root();
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let name = unique_name("rasp-limited");
    let program = scratch.copy("/usr/bin/sleep", dir.join(&name));
    let policies = exec_rule(&mut scratch, "limited-kill", &name, "    action: kill");
    let dir_arg = policies.to_str().expect("utf-8").to_string();
    let agent = Agent::start(&["--policies", &dir_arg, "--actions-per-minute", "2"]);
    let mut children: Vec<std::process::Child> = (0..4)
        .map(|_| Command::new(&program).arg("60").spawn().expect("spawn"))
        .collect();
    let outcomes = wait_for(Duration::from_secs(15), || {
        let ds = agent.detections(&["--rule", "limited-kill"]);
        (ds.len() >= 4).then_some(ds)
    })
    .expect("four detections");
    let killed = outcomes.iter().filter(|d| d["outcome"] == "after").count();
    let limited = outcomes
        .iter()
        .filter(|d| {
            d["outcome"] == "failed"
                && d["outcome_detail"]
                    .as_str()
                    .is_some_and(|s| s.contains("limit of 2 actions a minute"))
        })
        .count();
    assert_eq!((killed, limited), (2, 2), "{outcomes:?}");
    assert!(agent.status()["enforcement"]["rate_limited"].as_u64() >= Some(2));
    let survivors = children
        .iter_mut()
        .map(|c| c.try_wait().ok().flatten().is_none())
        .filter(|&alive| alive)
        .count();
    assert_eq!(
        survivors, 2,
        "the limited matches must not have been acted on"
    );
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn the_agents_own_cgroup_is_never_acted_on() {
    require_root();
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let name = unique_name("rasp-self");
    let trigger = scratch.copy("/usr/bin/true", dir.join(&name));
    let policies = exec_rule(
        &mut scratch,
        "self-quarantine",
        &name,
        "    action: quarantine",
    );
    let cgroup = rasp_tests::Cgroup::new("agent-home");
    let dir_arg = policies.to_str().expect("utf-8").to_string();
    let agent = Agent::start_in(&cgroup, &["--policies", &dir_arg]);
    let out = run(&mut cgroup.command(&trigger));
    assert!(out.status.success());
    let d = detection(&agent, "self-quarantine");
    assert_eq!(d["outcome"], "failed", "{d}");
    assert!(
        d["outcome_detail"]
            .as_str()
            .is_some_and(|s| s.contains("the agent (or its supervisor) runs in it")),
        "{d}"
    );
    let frozen = fs::read_to_string(cgroup.path().join("cgroup.events")).unwrap_or_default();
    assert!(frozen.contains("frozen 0"), "{frozen}");
    assert!(agent.status()["pipeline"] == "running");
}

/// Bytes received from the connection, in the background.
fn count_received(stream: TcpStream) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::io::Read;
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let mut stream = stream;
        let mut buf = [0u8; 256];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    });
    count
}

#[test]
fn quarantine_cuts_the_network_freezes_snapshots_and_release_restores() {
    use std::sync::atomic::Ordering::Relaxed;
    require_root();
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let name = unique_name("rasp-quarantine");
    let trigger = scratch.copy("/usr/bin/true", dir.join(&name));
    let policies = exec_rule(&mut scratch, "cut-off", &name, "    action: quarantine");
    let agent = start_agent(&policies);
    let cgroup = rasp_tests::Cgroup::new("quarantined");

    // A workload in the cgroup with an established connection, sending a byte every 50 ms.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let sender = format!(
        "import socket,time\ns=socket.create_connection(('127.0.0.1',{port}))\nwhile True:\n  try: s.send(b'x')\n  except OSError: pass\n  time.sleep(0.05)\n"
    );
    let mut worker = cgroup
        .command("python3")
        .args(["-c", &sender])
        .spawn()
        .expect("spawn the worker");
    let (conn, _) = listener.accept().expect("the worker connects");
    let received = count_received(conn);
    wait_for(Duration::from_secs(5), || {
        (received.load(Relaxed) > 3).then_some(())
    })
    .expect("bytes arrive before the quarantine");
    let new_connect = |cg: &rasp_tests::Cgroup| {
        let probe = format!(
            "import socket\ntry:\n  socket.create_connection(('127.0.0.1',{port}),timeout=2); print('ok')\nexcept OSError as e: print('errno', e.errno)\n"
        );
        let out = run(cg.command("python3").args(["-c", &probe]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };

    // The trigger, from inside the cgroup.
    run(&mut cgroup.command(&trigger));
    let d = detection(&agent, "cut-off");
    assert_eq!(d["outcome"], "after", "{d}");
    let events = fs::read_to_string(cgroup.path().join("cgroup.events")).expect("events");
    assert!(events.contains("frozen 1"), "{events}");
    let list = agent.cli_json_lines(&["quarantine", "list", "--json"]);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["cgroup"], cgroup.path_in_hierarchy());
    let snapshot = list[0]["snapshot"]
        .as_str()
        .expect("a snapshot path")
        .to_string();
    let snap = fs::read_to_string(&snapshot).expect("the snapshot exists");
    assert!(
        snap.contains(&format!("\"pid\": {}", worker.id())),
        "the snapshot lacks the worker: {snap}"
    );
    assert!(snap.contains("exe_sha256") && snap.contains("sockets"));

    // Thawed by hand, the workload is still cut off: its sends go nowhere and a new
    // connect is refused.
    fs::write(cgroup.path().join("cgroup.freeze"), "0").expect("thaw by hand");
    std::thread::sleep(Duration::from_millis(300));
    let before = received.load(Relaxed);
    assert_eq!(new_connect(&cgroup), "errno 1");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        received.load(Relaxed),
        before,
        "bytes got through the quarantine"
    );

    // Release: network back (the queued bytes arrive), thawed, listed no more.
    fs::write(cgroup.path().join("cgroup.freeze"), "1").expect("refreeze");
    let out = agent.cli(&["quarantine", "release", cgroup.path_in_hierarchy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = fs::read_to_string(cgroup.path().join("cgroup.events")).expect("events");
    assert!(events.contains("frozen 0"), "{events}");
    assert_eq!(new_connect(&cgroup), "ok");
    wait_for(Duration::from_secs(15), || {
        (received.load(Relaxed) > before).then_some(())
    })
    .expect("the connection carries data again after release");
    assert!(agent
        .cli_json_lines(&["quarantine", "list", "--json"])
        .is_empty());
    let log = agent.state_dir().join("quarantine/quarantine.jsonl");
    let log = fs::read_to_string(&log).expect("quarantine log");
    assert_eq!(log.lines().count(), 2, "{log}");
    let _ = worker.kill();
    let _ = worker.wait();
}

/// A quarantined workload that goes away (its container removed: processes killed, cgroup
/// deleted) is forgotten: the list empties, the kernel's cut entry is lifted, the log says
/// `gone`, and the agent keeps serving.
#[test]
fn a_quarantined_cgroup_that_vanishes_is_forgotten() {
    require_root();
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let name = unique_name("rasp-vanish");
    let trigger = scratch.copy("/usr/bin/true", dir.join(&name));
    let policies = exec_rule(&mut scratch, "cut-off", &name, "    action: quarantine");
    let agent = start_agent(&policies);
    let cgroup = rasp_tests::Cgroup::new("vanishing");
    let mut sleeper = cgroup
        .command("sleep")
        .arg("300")
        .spawn()
        .expect("spawn a workload");
    // Not waited for: the freeze may catch it before it has exited.
    let mut triggered = cgroup.command(&trigger).spawn().expect("run the trigger");
    let d = detection(&agent, "cut-off");
    assert_eq!(d["outcome"], "after", "{d}");
    assert_eq!(
        agent
            .cli_json_lines(&["quarantine", "list", "--json"])
            .len(),
        1
    );

    // The runtime removes the container: every process killed, the cgroup deleted.
    let in_hierarchy = cgroup.path_in_hierarchy().to_string();
    drop(cgroup);
    let _ = sleeper.wait();
    let _ = triggered.wait();

    let forgotten = wait_for(Duration::from_secs(10), || {
        agent
            .cli_json_lines(&["quarantine", "list", "--json"])
            .is_empty()
            .then_some(())
    });
    assert!(
        forgotten.is_some(),
        "the vanished cgroup is still listed: {:?}",
        agent.cli_json_lines(&["quarantine", "list", "--json"])
    );
    let log = agent.state_dir().join("quarantine/quarantine.jsonl");
    let log = fs::read_to_string(&log).expect("quarantine log");
    let gone: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"what\":\"gone\""))
        .collect();
    assert_eq!(gone.len(), 1, "{log}");
    assert!(gone[0].contains("network cut entry removed"), "{log}");
    // Released by hand afterwards: a clear error, and the agent still answers.
    let out = agent.cli(&["quarantine", "release", &in_hierarchy]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not quarantined"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = agent.status();
}

/// Files are denied by inode, so a denied file replaced while the agent runs (a rename over
/// it, as package upgrades do; a delete and re-create) is a file the kernel would not know.
/// The agent follows the path: within a few seconds the new file is denied in the kernel, a
/// deleted one stops being denied there (its inode number can go to any new file) and
/// `status` says the rule is back in userspace, and a file re-created there is denied in
/// the kernel again. Judged on the kernel's verdict in the record of each open: the
/// userspace rule alone also kills `cat`, often before it prints.
#[test]
fn a_denied_file_replaced_while_running_stays_denied() {
    require_root();
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let secret = scratch.file(dir.join("secret.txt"), b"first\n", 0o644);
    let policies = deny_read_policy(&mut scratch, &secret);
    let agent = start_agent(&policies);
    // One read; `Some` when the kernel killed it (its detection carries the verdict).
    let killed_by_kernel = || {
        let child = Command::new("cat")
            .arg(&secret)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start cat");
        let pid = child.id();
        let out = child.wait_with_output().expect("wait for cat");
        if out.status.signal() != Some(libc::SIGKILL) {
            return None;
        }
        // The kernel's record of the open (detections of a repeated act are aggregated).
        let verdict = wait_for(DETECTION_WAIT, || {
            agent
                .events(&["--kind", "file_open", "--pid", &pid.to_string()])
                .into_iter()
                .find(|e| e["path"] == secret.display().to_string())
                .map(|e| e["verdict"]["action"].clone())
        });
        (verdict.is_some_and(|v| v == "killed_at_syscall") && out.stdout.is_empty()).then_some(())
    };
    let in_kernel_within = |what: &str| {
        assert!(
            wait_for(DETECTION_WAIT, killed_by_kernel).is_some(),
            "{what}: not denied in the kernel 10 s later; status: {}",
            rung_of(&agent.status(), "deny-read")
        );
    };
    in_kernel_within("the original file");

    // Replaced by rename: the path names a new inode.
    let staged = dir.join("secret.txt.new");
    fs::write(&staged, b"second\n").expect("write the replacement");
    fs::rename(&staged, &secret).expect("rename over the denied file");
    in_kernel_within("the replacement");

    // Deleted: the rule has nothing to deny in the kernel any more.
    fs::remove_file(&secret).expect("delete the denied file");
    let gone = wait_for(DETECTION_WAIT, || {
        let status = agent.status();
        let rung = rung_of(&status, "deny-read");
        (rung["rung"] == "userspace").then(|| rung.clone())
    });
    assert!(
        gone.is_some(),
        "still denied in the kernel after the file was deleted: {}",
        rung_of(&agent.status(), "deny-read")
    );

    // Re-created at the same path: denied in the kernel again.
    fs::write(&secret, b"third\n").expect("re-create the file");
    in_kernel_within("the re-created file");
    assert_eq!(
        rung_of(&agent.status(), "deny-read")["rung"],
        "kill_at_syscall"
    );
}
