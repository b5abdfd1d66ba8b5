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
    let policies = policy_dir(
        &mut scratch,
        &format!(
            r#"  - id: deny-read
    severity: high
    event: file_open
    match: {{ path: ["{}"], access: [read] }}
    action: block
"#,
            secret.display()
        ),
    );
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
