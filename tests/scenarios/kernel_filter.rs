//! Kernel pre-filter scenarios: what the default policies cannot use never leaves the
//! kernel, and what they can still does. An ordinary dynamic exec maps its libraries with
//! no record sent (the `/memfd:**` rule is served by an in-kernel memfd test, not by
//! sending every mapping); a library loaded from a memfd is still reported and detected;
//! writes below /var/lib (or any `lib` that is not right below the root) send nothing,
//! while writes below /lib and /etc, also inside a chroot, are still sent.
//!
//! Absence is checked per process: its exit record is consumed after any record it made
//! (one ring buffer, one reader), so once the exit is visible, a missing record was never
//! sent. A control agent whose policy needs every mapping shows the same exec does produce
//! library records when a rule asks for them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rasp_tests::{
    harmless_library, require_root, show, unique_name, wait_child, wait_for, Agent, Scratch,
};
use serde_json::Value;

/// How long after an event happens the agent may take to show it.
const REPORT_DEADLINE: Duration = Duration::from_secs(2);
/// How long a short-lived child may take to run.
const CHILD_DEADLINE: Duration = Duration::from_secs(10);
const PYTHON: &str = "/usr/bin/python3";
/// `--event-buffer` for these agents: the checks read a process's events back from the
/// agent's recent-events buffer, which another workload on the machine (an open storm on a
/// watched file) could otherwise cycle through before they are read.
const AGENT_ARGS: &[&str] = &["--event-buffer", "262144"];

fn require_program(path: &str, package: &str) {
    if !Path::new(path).exists() {
        panic!("this test needs {path}: apt-get install -y {package}");
    }
}

/// Runs `program args` to completion (it must succeed) and returns its pid.
fn run(program: &str, args: &[&str]) -> u32 {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {program}: {err}"));
    let pid = child.id();
    let status = wait_child(&mut child, CHILD_DEADLINE)
        .unwrap_or_else(|| panic!("{program} {args:?} did not finish"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
    pid
}

/// Waits until the agent has consumed `pid`'s exit record, then returns its events of
/// `kind` (everything it sent before exiting has been read by then).
fn events_before_exit(agent: &Agent, pid: u32, kind: &str) -> Vec<Value> {
    let pid_arg = pid.to_string();
    let exited = wait_for(REPORT_DEADLINE, || {
        let exits = agent.events(&["--kind", "exit", "--pid", &pid_arg]);
        (!exits.is_empty()).then_some(())
    });
    assert!(
        exited.is_some(),
        "no exit event for pid {pid} within {REPORT_DEADLINE:?}; recent events:\n{}",
        show(&agent.events(&["--limit", "50"]))
    );
    agent.events(&["--kind", kind, "--pid", &pid_arg])
}

#[test]
fn ordinary_exec_mappings_send_no_library_records() {
    require_root();
    let agent = Agent::start(AGENT_ARGS);
    // Several execs, so one lucky miss cannot pass the test. A file mapped for the first
    // time since the agent started is reported once, flagged `new_file`, for uprobe
    // discovery (libpq/OpenSSL by their symbols): libc at most on the first exec, never on
    // the next ones, and never unflagged.
    for round in 0..5 {
        let pid = run("/bin/true", &[]);
        let loads = events_before_exit(&agent, pid, "library_load");
        assert!(
            loads.iter().all(|e| e["new_file"] == true) && (round == 0 || loads.is_empty()),
            "/bin/true's libc mapping was sent although no default rule can use it (round {round}):\n{}",
            show(&loads)
        );
    }

    // Control: with a rule on every library, the very same exec is reported, so the
    // absence above is the filter's doing and not a blind spot.
    let mut scratch = Scratch::new();
    let policies = scratch.unique_dir(std::env::temp_dir());
    fs::write(
        policies.join("every-library.yaml"),
        "name: every-library\nversion: 1\ndescription: Every executable file mapping.\n\
         mode: audit\nrules:\n  - id: every-library\n    description: Any library.\n\
         \x20   severity: info\n    event: library_load\n    match:\n      path: [\"**\"]\n\
         \x20   action: alert\n",
    )
    .expect("write the control policy");
    let policies = policies.to_string_lossy();
    let mut args = AGENT_ARGS.to_vec();
    args.extend(["--policies", &policies]);
    let control = Agent::start(&args);
    let pid = run("/bin/true", &[]);
    let loads = events_before_exit(&control, pid, "library_load");
    assert!(
        loads
            .iter()
            .any(|e| e["path"].as_str().is_some_and(|p| p.contains("libc"))),
        "a rule on every library must see /bin/true map libc:\n{}",
        show(&loads)
    );
}

#[test]
fn memfd_library_load_is_still_detected() {
    require_root();
    require_program(PYTHON, "python3");
    let agent = Agent::start(AGENT_ARGS);
    // A short name is stored in the dentry itself, a long one outside it: both are read.
    let short = unique_name("rasp-kf-lib");
    let long = format!("{short}-{}", "x".repeat(80));
    let script = format!(
        "import os, ctypes\n\
         for name in [{short:?}, {long:?}]:\n\
         \x20   fd = os.memfd_create(name, 0)\n\
         \x20   os.write(fd, open({lib:?}, 'rb').read())\n\
         \x20   ctypes.CDLL('/proc/self/fd/%d' % fd)\n",
        lib = harmless_library()
    );
    let pid = run(PYTHON, &["-c", &script]);
    let loads = events_before_exit(&agent, pid, "library_load");
    for name in [&short, &long] {
        let want = format!("/memfd:{name}");
        assert!(
            loads
                .iter()
                .any(|e| e["path"].as_str().is_some_and(|p| p.starts_with(&want))),
            "the memfd library load must be sent as {want}:\n{}\nlibrary_load counters: {}",
            show(&loads),
            agent.status()["events"]["library_load"]
        );
    }
    let pid_arg = pid.to_string();
    let detected = wait_for(REPORT_DEADLINE, || {
        let d = agent.detections(&["--rule", "library-load-from-shm-or-memfd"]);
        d.into_iter()
            .find(|d| d["process"]["pid"].as_u64() == Some(u64::from(pid)))
    });
    assert!(
        detected.is_some(),
        "library-load-from-shm-or-memfd did not fire for pid {pid_arg}; detections:\n{}",
        show(&agent.detections(&[]))
    );
    // Only python's memfd: its ordinary libraries (from /usr/lib) stay in the kernel, but
    // for the first mapping of each file since the agent started, reported once and
    // flagged `new_file` for uprobe discovery.
    let others: Vec<&Value> = loads
        .iter()
        .filter(|e| !e["path"].as_str().is_some_and(|p| p.starts_with("/memfd:")))
        .filter(|e| e["new_file"] != true)
        .collect();
    assert!(
        others.is_empty(),
        "libraries no rule can use were sent:\n{}",
        show(&others.into_iter().cloned().collect::<Vec<_>>())
    );
}

/// A shell command writing `file` (created, truncated), as its own process.
fn write_file(file: &Path) -> u32 {
    run(
        "/bin/sh",
        &["-c", "echo x > \"$1\"", "sh", &file.to_string_lossy()],
    )
}

fn paths(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["path"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn writes_below_var_lib_send_nothing_writes_below_lib_and_etc_do() {
    require_root();
    let agent = Agent::start(AGENT_ARGS);
    let mut scratch = Scratch::new();
    // `lib`, `etc`, `usr`, `bin` and `boot` are watched right below the root only.
    let var = scratch.unique_dir("/var/lib");
    let tmp = scratch.unique_dir("/tmp");
    let quiet: Vec<PathBuf> = vec![
        scratch.adopt(var.join("state")),
        scratch.dir(tmp.join("lib")).join("f"),
        scratch.dir(tmp.join("etc")).join("f"),
        scratch.dir(tmp.join("usr/bin")).join("f"),
        scratch.dir(tmp.join("boot")).join("f"),
    ];
    for file in &quiet {
        let pid = write_file(file);
        let opens = events_before_exit(&agent, pid, "file_open");
        assert!(
            opens.is_empty(),
            "a write to {} was sent although no default rule can use it:\n{}",
            file.display(),
            show(&opens)
        );
    }

    let etc_file = scratch.adopt(Path::new("/etc").join(unique_name("rasp-kf")));
    let lib_dir = ["/lib", "/usr/lib"]
        .into_iter()
        .find(|d| Path::new(d).is_dir())
        .expect("a /lib or /usr/lib directory");
    let lib_file = scratch.adopt(Path::new(lib_dir).join(unique_name("rasp-kf")));
    for file in [&etc_file, &lib_file] {
        let pid = write_file(file);
        let opens = events_before_exit(&agent, pid, "file_open");
        let want = fs::canonicalize(file)
            .unwrap_or_else(|_| file.clone())
            .to_string_lossy()
            .into_owned();
        assert!(
            paths(&opens).contains(&want),
            "the write to {want} must be sent; its opens:\n{}",
            show(&opens)
        );
    }
}

#[test]
fn writes_below_lib_inside_a_chroot_are_sent() {
    require_root();
    require_program(PYTHON, "python3");
    let agent = Agent::start(AGENT_ARGS);
    let mut scratch = Scratch::new();
    // The chroot sits below /tmp: on the host its `lib` is not right below the root, but
    // the process sees /lib/..., which is what the rules match.
    let root = scratch.unique_dir("/tmp");
    scratch.dir(root.join("lib"));
    let name = unique_name("rasp-kf");
    let script = format!(
        "import os\nos.chroot({root:?})\nopen('/lib/{name}', 'w').write('x')\n",
        root = root.to_string_lossy()
    );
    let pid = run(PYTHON, &["-c", &script]);
    let opens = events_before_exit(&agent, pid, "file_open");
    let want = format!("/lib/{name}");
    assert!(
        paths(&opens).contains(&want),
        "the chrooted write to {want} must be sent; its opens:\n{}",
        show(&opens)
    );
}
