//! Control-socket scenarios: one agent per socket, a protocol that survives bad requests,
//! clients that cannot stall the event path or each other, and a clear error without agent.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use rasp_tests::{agent_bin, output_within, require_root, show, wait_child, wait_for, Agent};
use serde_json::Value;

#[test]
fn second_instance_on_the_same_socket_refuses() {
    require_root();
    let agent = Agent::start(&[]);

    let mut second = Command::new(agent_bin());
    second
        .arg("run")
        .arg("--socket")
        .arg(agent.socket())
        .arg("--state-dir")
        .arg(agent.dir().join("second-state"));
    let out = output_within(&mut second, Duration::from_secs(10))
        .expect("a second agent on a live socket must give up within 10 s, not run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "second agent must fail; stderr: {stderr}"
    );
    assert!(
        stderr.contains("already running"),
        "second agent must say the first is already running; stderr: {stderr}"
    );

    // The loser must not have taken the socket away from the winner.
    let status = agent.status();
    assert!(status["uptime_secs"].is_number(), "{status}");
}

/// One request/response on an open connection.
fn request(stream: &mut UnixStream, reader: &mut impl BufRead, line: &str) -> Value {
    stream
        .write_all(line.as_bytes())
        .unwrap_or_else(|err| panic!("send {line:?}: {err}"));
    let mut answer = String::new();
    let n = reader
        .read_line(&mut answer)
        .unwrap_or_else(|err| panic!("no answer to {line:?}: {err}"));
    assert!(n > 0, "agent closed the connection after {line:?}");
    serde_json::from_str(&answer)
        .unwrap_or_else(|err| panic!("answer to {line:?} is not JSON ({err}): {answer:?}"))
}

fn error_of(answer: &Value) -> &str {
    assert_eq!(answer["ok"], Value::Bool(false), "{answer}");
    let error = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("error must be a string: {answer}"));
    assert!(!error.is_empty(), "error must say what was wrong: {answer}");
    error
}

#[test]
fn bad_requests_get_an_error_and_the_connection_survives() {
    require_root();
    let agent = Agent::start(&[]);

    let mut stream = UnixStream::connect(agent.socket()).expect("connect to the agent socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));

    let garbage = request(&mut stream, &mut reader, "this is not json\n");
    error_of(&garbage);

    let status = request(&mut stream, &mut reader, "{\"cmd\":\"status\"}\n");
    assert_eq!(
        status["ok"],
        Value::Bool(true),
        "status after garbage: {status}"
    );

    let unknown = request(&mut stream, &mut reader, "{\"cmd\":\"nope\"}\n");
    let error = error_of(&unknown).to_lowercase();
    assert!(
        error.contains("nope") || error.contains("unknown"),
        "an unknown command is named as such: {unknown}"
    );

    let again = request(&mut stream, &mut reader, "{\"cmd\":\"status\"}\n");
    assert_eq!(
        again["ok"],
        Value::Bool(true),
        "status after unknown cmd: {again}"
    );
}

/// Bytes waiting in a pipe, unread.
fn pipe_backlog(fd: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n as usize
}

fn exec_received(status: &Value) -> u64 {
    status["events"]["exec"]["received"]
        .as_u64()
        .unwrap_or_else(|| panic!("events.exec.received must be a number: {status}"))
}

#[test]
fn a_stuck_follower_blocks_neither_events_nor_other_clients() {
    require_root();
    let agent = Agent::start(&[]);

    let follower_log = fs::File::create(agent.dir().join("follower.log")).expect("follower log");
    let mut follower = agent
        .command(&["events", "--follow", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(follower_log)
        .spawn()
        .expect("spawn the follower");
    let follower_out = follower.stdout.take().expect("piped stdout");

    // Wait until the follower streams (it then holds a live subscription), never reading it.
    let streaming = wait_for(Duration::from_secs(10), || {
        let mut poke = Command::new("/bin/true").spawn().expect("spawn /bin/true");
        let _ = poke.wait();
        (pipe_backlog(&follower_out) > 0).then_some(())
    });
    assert!(
        streaming.is_some(),
        "the follower printed nothing within 10 s; its stderr: {}",
        fs::read_to_string(agent.dir().join("follower.log")).unwrap_or_default()
    );

    let before = exec_received(&agent.status());
    let execs: u64 = 2000;
    let mut storm = Command::new("/bin/sh")
        .args([
            "-c",
            &format!("i=0; while [ $i -lt {execs} ]; do /bin/true; i=$((i+1)); done"),
        ])
        .spawn()
        .expect("spawn the exec loop");
    let status = wait_child(&mut storm, Duration::from_secs(120)).expect("exec loop finishes");
    assert!(status.success(), "exec loop: {status}");

    // Precondition: the follower really is stuck behind a full pipe.
    let backlog = pipe_backlog(&follower_out);
    assert!(
        backlog >= 32 * 1024,
        "the follower should be stuck behind a full pipe, but only {backlog} bytes wait"
    );

    let mut last = Value::Null;
    let counted = wait_for(Duration::from_secs(10), || {
        last = agent.status();
        (exec_received(&last) >= before + execs).then_some(())
    });
    assert!(
        counted.is_some(),
        "the agent must keep consuming events while a client is stuck: exec.received went \
         from {before} to {} for {execs} execs: {last:#}",
        exec_received(&last)
    );

    let out = agent
        .cli_within(
            &["events", "--json", "--kind", "exec", "--limit", "5"],
            Duration::from_secs(5),
        )
        .expect("another client must be answered within 5 s while the follower is stuck");
    assert!(
        out.status.success(),
        "events --limit 5: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = rasp_tests::parse_json_lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        events.len(),
        5,
        "--limit 5 after {execs} execs:\n{}",
        show(&events)
    );
    assert!(
        events.iter().all(|e| e["kind"] == "exec"),
        "--kind exec:\n{}",
        show(&events)
    );

    let out = agent
        .cli_within(&["status", "--json"], Duration::from_secs(5))
        .expect("status must answer within 5 s while the follower is stuck");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
    assert!(
        status["events"]["exec"]["dropped"].is_u64(),
        "kernel-side drops must be reported: {status:#}"
    );

    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn clients_without_an_agent_say_so() {
    require_root();
    let socket = format!("/tmp/nonexistent-{}.sock", std::process::id());
    let _ = fs::remove_file(&socket);
    for command in [
        &["status"][..],
        &["status", "--json"],
        &["events", "--json"],
        &["processes", "--json"],
    ] {
        let mut cmd = Command::new(agent_bin());
        cmd.args(command).arg("--socket").arg(&socket);
        let out = output_within(&mut cmd, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{command:?} without an agent must fail fast"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{command:?} without an agent must fail; stderr: {stderr}"
        );
        assert!(
            stderr.contains("is the agent running"),
            "{command:?} must ask whether the agent runs; stderr: {stderr}"
        );
    }
}
