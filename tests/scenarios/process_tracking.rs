//! Process tracking scenarios: real processes exec, fork and exit (in a fresh cgroup), and
//! the agent must report exactly what happened — pids, argv, the executable actually mapped,
//! exit codes and signals, ancestry — within a second.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rasp_tests::{
    proc_ancestors, require_root, send_signal, show, unique_name, wait_child, wait_for, Agent,
    Cgroup,
};
use serde_json::{json, Value};

/// How long after an event happens the agent may take to show it.
const REPORT_DEADLINE: Duration = Duration::from_secs(1);
/// How long a short-lived child may take to run.
const CHILD_DEADLINE: Duration = Duration::from_secs(10);

fn canonical(path: &str) -> String {
    fs::canonicalize(path)
        .unwrap_or_else(|err| panic!("canonicalize {path}: {err}"))
        .to_string_lossy()
        .into_owned()
}

fn our_pid() -> u64 {
    u64::from(std::process::id())
}

fn pid_of(value: &Value) -> Option<u64> {
    value["pid"].as_u64()
}

fn is_kind(event: &Value, kind: &str) -> bool {
    event["kind"] == kind
}

/// Fields every event carries, whatever its kind.
fn assert_common_fields(event: &Value) {
    for key in [
        "pid",
        "tid",
        "ppid",
        "uid",
        "gid",
        "ts_boot_ns",
        "cgroup_id",
    ] {
        assert!(event[key].is_u64(), "{key} must be a number in {event}");
    }
    for key in ["time", "comm"] {
        assert!(event[key].is_string(), "{key} must be a string in {event}");
    }
    assert!(
        event["time"].as_str().unwrap_or("").contains('T'),
        "time must be RFC3339 in {event}"
    );
    assert!(
        event["cgroup"].is_string() || event["cgroup"].is_null(),
        "cgroup must be a path or null in {event}"
    );
}

fn assert_in_cgroup(event: &Value, cgroup: &Cgroup) {
    assert_eq!(
        event["cgroup"],
        json!(cgroup.path_in_hierarchy()),
        "cgroup path in {event}"
    );
    assert_eq!(
        event["cgroup_id"],
        json!(cgroup.id()),
        "cgroup id in {event}"
    );
}

#[test]
fn exec_and_exit_in_a_fresh_cgroup() {
    require_root();
    let agent = Agent::start(&[]);
    let cgroup = Cgroup::new("exec-exit");
    let marker = unique_name("rasp-marker");

    let mut child = cgroup
        .command("/bin/sh")
        .args(["-c", "exit 7", &marker])
        .spawn()
        .expect("spawn /bin/sh");
    let pid = u64::from(child.id());
    let status = wait_child(&mut child, CHILD_DEADLINE).expect("sh -c 'exit 7' exits");
    assert_eq!(status.code(), Some(7), "sh exit status");

    let pid_arg = pid.to_string();
    let mut received = Vec::new();
    let found = wait_for(REPORT_DEADLINE, || {
        received = agent.events(&["--pid", &pid_arg]);
        let exec = received.iter().rfind(|e| {
            is_kind(e, "exec")
                && e["argv"].as_array().and_then(|a| a.last()) == Some(&json!(marker))
        })?;
        let exit = received.iter().rfind(|e| {
            is_kind(e, "exit") && e["ts_boot_ns"].as_u64() >= exec["ts_boot_ns"].as_u64()
        })?;
        Some((exec.clone(), exit.clone()))
    });
    let (exec, exit) = found.unwrap_or_else(|| {
        panic!(
            "no exec+exit for pid {pid} within {REPORT_DEADLINE:?} of its exit; received:\n{}",
            show(&received)
        )
    });

    assert_common_fields(&exec);
    assert_eq!(exec["pid"], json!(pid), "exec pid: {exec}");
    assert_eq!(exec["tid"], json!(pid), "exec tid: {exec}");
    assert_eq!(exec["ppid"], json!(our_pid()), "exec ppid: {exec}");
    assert_eq!(exec["uid"], json!(0), "exec uid: {exec}");
    assert_eq!(exec["gid"], json!(0), "exec gid: {exec}");
    assert_eq!(exec["comm"], json!("sh"), "exec comm (after exec): {exec}");
    assert_eq!(
        exec["argv"],
        json!(["/bin/sh", "-c", "exit 7", marker]),
        "exec argv: {exec}"
    );
    assert_eq!(exec["argv_truncated"], json!(false), "{exec}");
    assert_eq!(exec["filename"], json!("/bin/sh"), "exec filename: {exec}");
    assert_eq!(exec["exe"], json!(canonical("/bin/sh")), "exec exe: {exec}");
    let cwd = std::env::current_dir().expect("current dir");
    assert_eq!(
        exec["cwd"],
        json!(cwd.to_string_lossy()),
        "exec cwd: {exec}"
    );
    assert_in_cgroup(&exec, &cgroup);

    assert_common_fields(&exit);
    assert_eq!(exit["pid"], json!(pid), "exit pid: {exit}");
    assert_eq!(exit["exit_code"], json!(7), "exit code: {exit}");
    assert_eq!(exit["signal"], Value::Null, "exit signal: {exit}");
    assert_eq!(exit["core_dumped"], json!(false), "{exit}");
    assert_in_cgroup(&exit, &cgroup);
}

#[test]
fn exit_by_signal() {
    require_root();
    let agent = Agent::start(&[]);
    let cgroup = Cgroup::new("exit-signal");

    let mut child = cgroup
        .command("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let pid = u64::from(child.id());
    child.kill().expect("SIGKILL sleep");
    let status = wait_child(&mut child, CHILD_DEADLINE).expect("killed sleep is reaped");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );

    let pid_arg = pid.to_string();
    let mut received = Vec::new();
    let exit = wait_for(REPORT_DEADLINE, || {
        received = agent.events(&["--kind", "exit", "--pid", &pid_arg]);
        received.last().cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "no exit event for pid {pid} within {REPORT_DEADLINE:?} of SIGKILL; received:\n{}",
            show(&received)
        )
    });

    assert_common_fields(&exit);
    assert_eq!(exit["kind"], json!("exit"), "{exit}");
    assert_eq!(exit["pid"], json!(pid), "exit pid: {exit}");
    assert_eq!(
        exit["exit_code"],
        Value::Null,
        "exit code of a killed process: {exit}"
    );
    assert_eq!(exit["signal"], json!(libc::SIGKILL), "exit signal: {exit}");
    assert_eq!(exit["core_dumped"], json!(false), "{exit}");
    assert_in_cgroup(&exit, &cgroup);
}

#[test]
fn fork_then_exec_in_the_child() {
    require_root();
    let agent = Agent::start(&[]);
    let cgroup = Cgroup::new("fork");

    // Not the last command, so dash forks for /bin/true instead of exec'ing over itself.
    let mut child = cgroup
        .command("/bin/sh")
        .args(["-c", "/bin/true; exit 0"])
        .spawn()
        .expect("spawn /bin/sh");
    let sh = u64::from(child.id());
    let status = wait_child(&mut child, CHILD_DEADLINE).expect("sh exits");
    assert_eq!(status.code(), Some(0), "sh exit status");

    let mut received = Vec::new();
    let found = wait_for(REPORT_DEADLINE, || {
        received = agent.events(&[]);
        let fork = received
            .iter()
            .rfind(|e| is_kind(e, "fork") && e["ppid"] == json!(sh))?;
        let child_pid = pid_of(fork)?;
        let exec = received
            .iter()
            .rfind(|e| is_kind(e, "exec") && pid_of(e) == Some(child_pid))?;
        let exit = received
            .iter()
            .rfind(|e| is_kind(e, "exit") && pid_of(e) == Some(child_pid))?;
        Some((fork.clone(), exec.clone(), exit.clone()))
    });
    let (fork, exec, exit) = found.unwrap_or_else(|| {
        panic!(
            "no fork by sh (pid {sh}) followed by an exec and exit of the child within \
             {REPORT_DEADLINE:?}; received:\n{}",
            show(&received)
        )
    });

    assert_common_fields(&fork);
    let true_pid = pid_of(&fork).expect("fork pid");
    assert_ne!(true_pid, sh, "the fork event describes the child: {fork}");
    assert_eq!(
        fork["tid"],
        json!(true_pid),
        "a forked process's first thread: {fork}"
    );
    assert_eq!(fork["ppid"], json!(sh), "{fork}");
    assert_eq!(
        fork["parent_tid"],
        json!(sh),
        "sh is single-threaded: {fork}"
    );
    assert_in_cgroup(&fork, &cgroup);

    assert_common_fields(&exec);
    assert_eq!(exec["ppid"], json!(sh), "exec ppid: {exec}");
    assert_eq!(
        exec["exe"],
        json!(canonical("/bin/true")),
        "exec exe: {exec}"
    );
    assert_eq!(
        exec["filename"],
        json!("/bin/true"),
        "exec filename: {exec}"
    );
    assert_eq!(exec["argv"], json!(["/bin/true"]), "exec argv: {exec}");
    assert_eq!(exec["comm"], json!("true"), "exec comm: {exec}");
    assert_in_cgroup(&exec, &cgroup);

    assert_eq!(exit["exit_code"], json!(0), "/bin/true exit: {exit}");
    assert_eq!(exit["signal"], Value::Null, "/bin/true exit: {exit}");
}

/// Walks `node` down the chain `pids` (root first): each node on the way must have exactly
/// one child, the next one on the chain. Returns the last node.
fn follow_chain<'a>(node: &'a Value, pids: &[u64], whole: &Value) -> &'a Value {
    let (first, rest) = pids.split_first().expect("non-empty chain");
    assert_eq!(pid_of(node), Some(*first), "chain {pids:?} in tree {whole}");
    if rest.is_empty() {
        return node;
    }
    let children = node["children"]
        .as_array()
        .unwrap_or_else(|| panic!("children must be an array in {node}"));
    let child_pids: Vec<_> = children.iter().map(pid_of).collect();
    assert_eq!(
        child_pids,
        vec![Some(rest[0])],
        "with --pid, pid {first} shows only the next process of the chain; tree {whole}"
    );
    follow_chain(&children[0], rest, whole)
}

#[test]
fn process_tree_shows_real_ancestry() {
    require_root();
    let agent = Agent::start(&[]);
    let cgroup = Cgroup::new("tree");

    let mut child = cgroup
        .command("/bin/sh")
        .args(["-c", "sleep 30 & wait"])
        .spawn()
        .expect("spawn /bin/sh");
    let sh = u64::from(child.id());

    let mut received = Vec::new();
    let sleep = wait_for(Duration::from_secs(5), || {
        received = agent.events(&["--kind", "exec"]);
        received
            .iter()
            .rfind(|e| e["ppid"] == json!(sh) && e["argv"][0] == "sleep")
            .and_then(pid_of)
    })
    .unwrap_or_else(|| {
        panic!(
            "no exec of sleep by sh (pid {sh}) within 5 s; received:\n{}",
            show(&received)
        )
    });
    let sleep_arg = sleep.to_string();

    // Our own ancestry, which the agent can only know from what it saw or scanned.
    let mut true_chain = vec![sh, our_pid()];
    true_chain.extend(
        proc_ancestors(std::process::id())
            .into_iter()
            .map(u64::from),
    );

    let mut lines = Vec::new();
    let process = wait_for(REPORT_DEADLINE, || {
        lines = agent.cli_json_lines(&["processes", "--json", "--pid", &sleep_arg]);
        lines.iter().find(|p| pid_of(p) == Some(sleep)).cloned()
    })
    .unwrap_or_else(|| panic!("processes --pid {sleep} did not list it:\n{}", show(&lines)));
    assert_eq!(
        lines.len(),
        1,
        "processes --pid prints one process:\n{}",
        show(&lines)
    );

    assert_eq!(process["ppid"], json!(sh), "{process}");
    assert_eq!(process["comm"], json!("sleep"), "{process}");
    assert_eq!(process["exe"], json!(canonical("/bin/sleep")), "{process}");
    assert_eq!(process["argv"], json!(["sleep", "30"]), "{process}");
    assert_eq!(process["uid"], json!(0), "{process}");
    assert_eq!(
        process["exited"],
        Value::Null,
        "sleep is still running: {process}"
    );
    assert_in_cgroup(&process, &cgroup);

    let ancestors = process["ancestors"]
        .as_array()
        .unwrap_or_else(|| panic!("ancestors must be an array in {process}"));
    let ancestor_pids: Vec<u64> = ancestors.iter().filter_map(pid_of).collect();
    assert_eq!(
        ancestor_pids.len(),
        ancestors.len(),
        "every ancestor has a pid: {process}"
    );
    assert!(
        ancestor_pids.len() >= 2 && true_chain.starts_with(&ancestor_pids),
        "ancestors must start [sh {sh}, us {}] and follow the real chain {true_chain:?}; got \
         {ancestor_pids:?}",
        our_pid()
    );
    assert_eq!(ancestors[0]["comm"], json!("sh"), "{process}");
    assert_eq!(
        ancestors[0]["exe"],
        json!(canonical("/bin/sh")),
        "{process}"
    );
    if let Some(exe) = ancestors[1]["exe"].as_str() {
        let ours = fs::canonicalize(std::env::current_exe().expect("current exe"))
            .expect("canonicalize current exe");
        assert_eq!(Path::new(exe), ours, "our own executable: {process}");
    }
    if ancestor_pids.last() != Some(&1) {
        eprintln!(
            "note: the agent knows the ancestry only up to pid {:?} (real chain {true_chain:?})",
            ancestor_pids.last()
        );
    }

    let trees = agent.cli_json_lines(&["processes", "--tree", "--json", "--pid", &sleep_arg]);
    assert_eq!(
        trees.len(),
        1,
        "with --pid the tree has one root (the chain down to {sleep}):\n{}",
        show(&trees)
    );
    let mut chain: Vec<u64> = ancestor_pids.iter().rev().copied().collect();
    chain.push(sleep);
    let leaf = follow_chain(&trees[0], &chain, &trees[0]);
    assert_eq!(leaf["comm"], json!("sleep"), "{leaf}");
    assert_eq!(leaf["children"], json!([]), "sleep has no children: {leaf}");

    send_signal(sleep as u32, libc::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn long_argv_is_truncated_not_lost() {
    require_root();
    let agent = Agent::start(&[]);
    let cgroup = Cgroup::new("argv");

    let args: Vec<String> = (0..100)
        .map(|i| format!("{:-<60}", format!("arg{i:03}")))
        .collect();
    let total: usize = args.iter().map(|a| a.len() + 1).sum();
    assert!(
        total > 5000,
        "the scenario needs > 5000 bytes of argv, has {total}"
    );

    let mut child = cgroup
        .command("/bin/echo")
        .args(&args)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn /bin/echo");
    let pid = u64::from(child.id());
    let status = wait_child(&mut child, CHILD_DEADLINE).expect("echo exits");
    assert!(status.success(), "echo: {status}");

    let pid_arg = pid.to_string();
    let mut received = Vec::new();
    let exec = wait_for(REPORT_DEADLINE, || {
        received = agent.events(&["--kind", "exec", "--pid", &pid_arg]);
        received.last().cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "no exec event for echo (pid {pid}) within {REPORT_DEADLINE:?}; received:\n{}",
            show(&received)
        )
    });

    assert_eq!(exec["exe"], json!(canonical("/bin/echo")), "{exec}");
    assert_eq!(exec["argv_truncated"], json!(true), "{exec}");
    let argv: Vec<&str> = exec["argv"]
        .as_array()
        .unwrap_or_else(|| panic!("argv must be an array in {exec}"))
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap_or_else(|| panic!("argv holds strings: {exec}"))
        })
        .collect();
    let joined = argv.join(" ");
    assert!(
        joined.len() <= 4096,
        "truncated argv must fit 4096 bytes, has {}: {exec}",
        joined.len()
    );
    assert!(argv.len() >= 2, "the first arguments must survive: {exec}");
    assert!(argv.len() <= args.len(), "{exec}");

    let mut sent = vec!["/bin/echo"];
    sent.extend(args.iter().map(String::as_str));
    let (last, whole) = argv.split_last().expect("argv not empty");
    assert_eq!(
        whole,
        &sent[..whole.len()],
        "arguments before the cut are intact"
    );
    assert!(
        sent[whole.len()].starts_with(last),
        "the last kept argument {last:?} is a prefix of {:?}",
        sent[whole.len()]
    );
}

#[test]
fn status_reports_programs_and_counters() {
    require_root();
    let ring_buffer_bytes: u64 = 4 * 1024 * 1024;
    let agent = Agent::start(&["--ring-buffer-size", &ring_buffer_bytes.to_string()]);

    let mut child = std::process::Command::new("/bin/true")
        .spawn()
        .expect("spawn /bin/true");
    let started = Instant::now();
    wait_child(&mut child, CHILD_DEADLINE).expect("/bin/true exits");

    let mut status = Value::Null;
    let counted = wait_for(REPORT_DEADLINE, || {
        status = agent.status();
        let events = &status["events"];
        let counted = ["exec", "fork", "exit"]
            .iter()
            .all(|kind| events[kind]["received"].as_u64() > Some(0));
        counted.then_some(())
    });
    assert!(
        counted.is_some(),
        "exec/fork/exit received counters still 0 {:?} after running /bin/true: {status:#}",
        started.elapsed()
    );

    let programs = status["programs"]
        .as_array()
        .unwrap_or_else(|| panic!("programs must be an array: {status:#}"));
    for name in ["rasp_exec", "rasp_fork", "rasp_exit"] {
        let program = programs
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("program {name} missing: {status:#}"));
        assert_eq!(program["state"], json!("attached"), "{program}");
        assert_eq!(program["error"], Value::Null, "{program}");
        assert!(
            program["hook"].as_str().is_some_and(|h| !h.is_empty()),
            "hook must be named: {program}"
        );
    }
    for program in programs {
        let state = program["state"].as_str().unwrap_or("");
        assert!(
            ["attached", "loaded", "failed"].contains(&state),
            "unknown program state: {program}"
        );
        if state == "failed" {
            assert!(
                program["error"].as_str().is_some_and(|e| !e.is_empty()),
                "a failed program says why: {program}"
            );
        }
    }

    assert_eq!(
        status["ring_buffer_bytes"],
        json!(ring_buffer_bytes),
        "{status:#}"
    );
    for kind in ["exec", "fork", "exit"] {
        for counter in ["received", "dropped", "read_errors"] {
            assert!(
                status["events"][kind][counter].is_u64(),
                "events.{kind}.{counter} must be a number: {status:#}"
            );
        }
    }
    assert!(status["lsm"]["available"].is_boolean(), "{status:#}");
    assert!(status["lsm"]["reason"].is_string(), "{status:#}");
    if status["lsm"]["available"] == false {
        assert_ne!(
            status["lsm"]["reason"],
            json!(""),
            "say why LSM is unavailable"
        );
    }
    assert_eq!(
        status["kernel_release"],
        json!(rasp_tests::kernel_release()),
        "{status:#}"
    );
    assert!(status["uptime_secs"].is_number(), "{status:#}");
}
