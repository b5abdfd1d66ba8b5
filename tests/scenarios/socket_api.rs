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

// ---- Bounded clients (issue 22): silent, slow, never reading, too many, too large, and
// readers from --socket-group that try to change state.

/// A gid nobody on the machine uses, for `--socket-group`; the group need not exist.
fn reader_group() -> u32 {
    47_000 + std::process::id() % 1000
}

/// An agent whose `--socket-group` is `reader_group()`; root is required.
fn agent_with_readers() -> (Agent, u32) {
    require_root();
    let g = reader_group();
    (Agent::start(&["--socket-group", &g.to_string()]), g)
}

/// `n` execs of /bin/true, finished.
fn run_execs(n: u64) {
    let mut execs = Command::new("/bin/sh")
        .args([
            "-c",
            &format!("i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"),
        ])
        .spawn()
        .expect("spawn the exec loop");
    let status = wait_child(&mut execs, Duration::from_secs(120)).expect("exec loop finishes");
    assert!(status.success(), "exec loop: {status}");
}

/// Run `cmd` as `uid` with primary group `gid` and exactly the supplementary `groups`.
fn as_user<'a>(cmd: &'a mut Command, uid: u32, gid: u32, groups: &[u32]) -> &'a mut Command {
    use std::os::unix::process::CommandExt;
    let groups: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A raw socket client in a process of its own (so it can run as another user), driven by
/// /usr/bin/python3: `hold N` opens N silent connections and keeps them until its stdin
/// closes; `send` sends its stdin as is and prints the first reply line.
const RAW_CLIENT: &str = r#"
import socket, sys
path, mode = sys.argv[1], sys.argv[2]
if mode == "hold":
    held, refused = [], 0
    for _ in range(int(sys.argv[3])):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            c.connect(path)
            held.append(c)
        except OSError:
            refused += 1
            c.close()
    print(f"connected {len(held)} refused {refused}", flush=True)
    sys.stdin.read()
else:
    data = sys.stdin.buffer.read()
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    c.settimeout(30)
    c.sendall(data)
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = c.recv(65536)
        if not chunk:
            break
        buf += chunk
    sys.stdout.buffer.write(buf)
"#;

const PYTHON: &str = "/usr/bin/python3";

fn require_python() {
    assert!(
        std::path::Path::new(PYTHON).exists(),
        "{PYTHON} is needed for the raw socket clients (cargo xtask setup installs python3)"
    );
}

/// Silent connections held by another process until dropped.
struct Holder {
    child: std::process::Child,
    report: String,
}

impl Holder {
    fn start(socket: &std::path::Path, n: usize, user: Option<(u32, u32, &[u32])>) -> Holder {
        require_python();
        let mut cmd = Command::new(PYTHON);
        cmd.args(["-c", RAW_CLIENT])
            .arg(socket)
            .args(["hold", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((uid, gid, groups)) = user {
            as_user(&mut cmd, uid, gid, groups);
        }
        let mut child = cmd.spawn().expect("spawn the connection holder");
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut report = String::new();
        out.read_line(&mut report).expect("holder reports");
        assert!(
            report.starts_with("connected"),
            "holder failed to start: {report:?}"
        );
        Holder { child, report }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send `bytes` on a fresh connection as `user`, return the first reply line.
fn raw_request_as(socket: &std::path::Path, user: (u32, u32, &[u32]), bytes: &[u8]) -> Value {
    require_python();
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-c", RAW_CLIENT])
        .arg(socket)
        .arg("send")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    as_user(&mut cmd, user.0, user.1, user.2);
    let mut child = cmd.spawn().expect("spawn the raw client");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let bytes = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let out = child.wait_with_output().expect("raw client output");
    let _ = writer.join();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "reply is not JSON ({e}): {text:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn cli_as(agent: &Agent, user: (u32, u32, &[u32]), args: &[&str]) -> std::process::Output {
    let mut cmd = agent.command(args);
    as_user(&mut cmd, user.0, user.1, user.2);
    output_within(&mut cmd, Duration::from_secs(15))
        .unwrap_or_else(|| panic!("`rasp-agent {}` as uid {} hung", args.join(" "), user.0))
}

#[test]
fn silent_clients_lock_nobody_out() {
    let (agent, g) = agent_with_readers();

    // 70 silent connections from root and 70 from a reader: more than the old global 64.
    let root_silent: Vec<UnixStream> = (0..70)
        .map(|i| {
            UnixStream::connect(agent.socket())
                .unwrap_or_else(|e| panic!("silent root connection {i}: {e}"))
        })
        .collect();
    let reader_silent = Holder::start(agent.socket(), 70, Some((65534, 65534, &[g])));

    let out = agent
        .cli_within(&["status", "--json"], Duration::from_secs(5))
        .expect("root's status must answer within 5 s beside 140 silent clients");
    assert!(
        out.status.success(),
        "root's status beside 140 silent clients ({}): {}",
        reader_silent.report.trim(),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli_as(&agent, (65533, 65533, &[g]), &["status", "--json"]);
    assert!(
        out.status.success(),
        "another reader's status beside 140 silent clients: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(root_silent);
}

#[test]
fn socket_group_members_read_but_cannot_change_policies() {
    let (agent, g) = agent_with_readers();
    let policy = agent.dir().join("reader.yaml");
    fs::write(
        &policy,
        "name: reader-try\nversion: 1\nmode: audit\nrules:\n  - id: r\n    severity: low\n    event: exec\n    match:\n      exe: [\"/nonexistent/reader-try\"]\n",
    )
    .expect("write policy");
    let version = |agent: &Agent| {
        agent.cli_json_lines(&["policy", "list", "--json"])[0]["active"]["version"]
            .as_u64()
            .expect("active version")
    };
    let before = version(&agent);

    // Membership through a supplementary group counts, as through the primary one.
    for (who, user) in [
        ("supplementary", (65534, 65534, &[g][..])),
        ("primary", (65533, g, &[][..])),
    ] {
        let out = cli_as(&agent, user, &["status", "--json"]);
        assert!(
            out.status.success(),
            "a member by its {who} group may read status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = cli_as(&agent, user, &["policy", "list", "--json"]);
        assert!(out.status.success(), "{who}: policy list is a read");

        let path = policy.to_str().expect("utf-8 path");
        for args in [&["policy", "apply", path][..], &["policy", "rollback"]] {
            let out = cli_as(&agent, user, args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && stderr.contains("needs root"),
                "{who} member: `{}` must be refused as needing root; status {}, stderr: {stderr}",
                args.join(" "),
                out.status
            );
        }
    }
    assert_eq!(version(&agent), before, "a reader changed the active set");

    let out = cli_as(&agent, (65532, 65532, &[]), &["status", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("permission denied"),
        "a non-member is refused: {stderr}"
    );
}

#[test]
fn oversized_requests_get_an_error_reply() {
    let (agent, g) = agent_with_readers();

    // Root: past the 4 MiB limit, answered, and the connection still serves.
    let mut stream = UnixStream::connect(agent.socket()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut huge = vec![b'x'; 5 << 20];
    huge.push(b'\n');
    let answer = request(
        &mut stream,
        &mut reader,
        std::str::from_utf8(&huge).expect("ascii"),
    );
    assert!(error_of(&answer).contains("longer than"), "{answer}");
    let status = request(&mut stream, &mut reader, "{\"cmd\":\"status\"}\n");
    assert_eq!(status["ok"], Value::Bool(true), "{status}");

    // A reader: 100 KB is past its own limit (only root sends policy sets).
    let mut big = format!("{{\"cmd\":\"status\",\"pad\":\"{}\"}}", "y".repeat(100_000));
    big.push('\n');
    let answer = raw_request_as(agent.socket(), (65534, 65534, &[g]), big.as_bytes());
    let error = error_of(&answer);
    assert!(
        error.contains("longer than 65536"),
        "a reader's 100 KB request: {answer}"
    );
}

#[test]
fn a_slowloris_client_is_cut_off() {
    require_root();
    let agent = Agent::start(&[]);
    let mut stream = UnixStream::connect(agent.socket()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set read timeout");
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    // A request that never ends: a byte a second, for up to 40 s.
    let closed = 'drip: loop {
        if started.elapsed() > Duration::from_secs(40) {
            break 'drip false;
        }
        if stream.write_all(b" ").is_err() {
            break 'drip true;
        }
        let mut buf = [0u8; 4096];
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < deadline {
            match std::io::Read::read(&mut stream, &mut buf) {
                Ok(0) => break 'drip true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break 'drip true,
            }
        }
    };
    let text = String::from_utf8_lossy(&got);
    assert!(
        closed,
        "a request dripping a byte a second was still open after {:?}; got {text:?}",
        started.elapsed()
    );
    assert!(
        text.contains("not completed within"),
        "the slow client is told why: {text:?}"
    );
    let out = agent
        .cli_within(&["status", "--json"], Duration::from_secs(5))
        .expect("status answers");
    assert!(out.status.success());
}

fn followers(agent: &Agent) -> u64 {
    agent.status()["followers"]
        .as_u64()
        .expect("followers is a number")
}

#[test]
fn a_follower_that_never_reads_is_dropped() {
    require_root();
    let agent = Agent::start(&[]);
    let baseline = followers(&agent);
    let mut stuck = UnixStream::connect(agent.socket()).expect("connect");
    stuck
        .write_all(b"{\"cmd\":\"events\",\"follow\":true}\n")
        .expect("send follow");
    let subscribed = wait_for(Duration::from_secs(10), || {
        (followers(&agent) > baseline).then_some(())
    });
    assert!(subscribed.is_some(), "the follower never subscribed");

    // Enough events to fill the socket buffer the client never drains.
    run_execs(2000);

    let mut last = 0;
    let dropped = wait_for(Duration::from_secs(40), || {
        last = followers(&agent);
        (last <= baseline).then_some(())
    });
    assert!(
        dropped.is_some(),
        "a follower that never reads must be dropped once its socket is full; followers {last}, \
         baseline {baseline}"
    );
    drop(stuck);
}

#[test]
fn thousands_of_connections_starve_neither_clients_nor_events() {
    let (agent, g) = agent_with_readers();

    // 3000 from one reader uid, 1000 from root (this process), all silent.
    let readers = Holder::start(agent.socket(), 3000, Some((65534, 65534, &[g])));
    let root_flood: Vec<UnixStream> = (0..1000)
        .filter_map(|_| UnixStream::connect(agent.socket()).ok())
        .collect();

    let before = exec_received(&agent.status());
    let execs = 300;
    run_execs(execs);
    let mut last = Value::Null;
    let counted = wait_for(Duration::from_secs(10), || {
        let out = agent.cli_within(&["status", "--json"], Duration::from_secs(5))?;
        last = serde_json::from_slice(&out.stdout).ok()?;
        (exec_received(&last) >= before + execs).then_some(())
    });
    assert!(
        counted.is_some(),
        "events must keep flowing beside {} root and 3000 reader connections ({}): {last:#}",
        root_flood.len(),
        readers.report.trim()
    );
    let out = cli_as(&agent, (65533, 65533, &[g]), &["status", "--json"]);
    assert!(
        out.status.success(),
        "another reader is served beside the flood: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(root_flood);
}
