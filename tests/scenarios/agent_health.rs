//! The agent's own health, as an operator sees it: a dead event pipeline takes the agent
//! down loudly; kernel-side losses are counted and located in `status`; the Prometheus
//! endpoint answers and agrees with `status` during a real workload.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use rasp_tests::{require_root, send_signal, wait_for, Agent, Scratch};

/// A panic on the pipeline thread (injected: the hidden fault flag) must end the agent with
/// an error, not leave the socket answering while nothing is detected any more.
#[test]
fn a_dead_pipeline_takes_the_agent_down() {
    require_root();
    let comm = "rasp-boom";
    let mut agent = Agent::start(&["--fault-panic-on-exec-comm", comm]);
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let bin = scratch.copy("/bin/true", dir.join(comm));
    let ran = Command::new(&bin).status().expect("run the trigger");
    assert!(ran.success());
    let status = agent.wait_exit(Duration::from_secs(15)).unwrap_or_else(|| {
        panic!(
            "agent still running after its pipeline panicked; log:\n{}",
            agent.log_text()
        )
    });
    assert!(!status.success(), "agent exited successfully: {status}");
    let log = agent.log_text();
    assert!(
        log.contains("event pipeline panicked"),
        "log does not say why the agent stopped:\n{log}"
    );
}

/// Records the ring buffer has no room for are counted where they were lost (site, program,
/// source line) and added to the kind's drops; the agent catches up afterwards.
#[test]
fn ring_buffer_losses_are_counted_and_located() {
    require_root();
    // One page of ring: a few dozen records.
    let agent = Agent::start(&["--ring-buffer-size", "4096"]);
    // Freeze the reader so the ring fills, then exec far more than it holds.
    send_signal(agent.pid(), libc::SIGSTOP);
    let burst = Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done",
        ])
        .status();
    send_signal(agent.pid(), libc::SIGCONT);
    assert!(burst.expect("run the exec burst").success());

    let status = wait_for(Duration::from_secs(10), || {
        let s = agent.status();
        let dropped = s["events"]["exec"]["dropped"].as_u64().unwrap_or(0)
            + s["events"]["fork"]["dropped"].as_u64().unwrap_or(0)
            + s["events"]["exit"]["dropped"].as_u64().unwrap_or(0);
        (dropped > 0).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "no drops counted after a 300-exec burst into a 4 KiB ring: {}",
            agent.status()
        )
    });
    let losses = status["losses"].as_array().cloned().unwrap_or_default();
    let located: Vec<_> = losses
        .iter()
        .filter(|l| l["effect"] == "dropped" && l["line"].as_u64().unwrap_or(0) > 0)
        .collect();
    assert!(
        located.iter().any(|l| [
            "exec_send",
            "fork_reserve",
            "exit_reserve",
            // Past half a full ring, process records give way before the ring is full.
            "exec_shed",
            "fork_shed",
            "exit_shed",
        ]
        .contains(&l["site"].as_str().unwrap_or(""))),
        "losses not located at a ring-buffer site: {losses:?}"
    );
    for l in &located {
        assert!(
            l["program"]
                .as_str()
                .is_some_and(|p| p.starts_with("rasp_")),
            "{l}"
        );
        assert!(l["count"].as_u64().unwrap_or(0) > 0, "{l}");
    }
    // Drops per kind are the sum of that kind's dropped sites.
    let exec_sites: u64 = losses
        .iter()
        .filter(|l| l["kind"] == "exec" && l["effect"] == "dropped")
        .map(|l| l["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        status["events"]["exec"]["dropped"].as_u64(),
        Some(exec_sites)
    );

    // The loss is a detection too (journal, exports), naming where events were lost.
    let health = wait_for(Duration::from_secs(15), || {
        agent
            .detections(&["--rule", "agent-event-loss"])
            .into_iter()
            .next()
    })
    .unwrap_or_else(|| {
        panic!(
            "no agent-health detection after the losses: {}",
            agent.status()
        )
    });
    assert_eq!(health["severity"], "high", "{health}");
    assert_eq!(health["event"]["kind"], "agent_health", "{health}");
    assert!(
        health["outcome_detail"]
            .as_str()
            .is_some_and(|s| s.contains("ring buffer")),
        "{health}"
    );

    // And the agent still sees what happens next.
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let bin = scratch.copy("/bin/true", dir.join("after-burst"));
    Command::new(&bin).status().expect("run after the burst");
    let seen = wait_for(Duration::from_secs(5), || {
        let execs = agent.events(&["--kind", "exec"]);
        execs
            .iter()
            .any(|e| e["exe"].as_str() == bin.to_str())
            .then_some(())
    });
    assert!(seen.is_some(), "exec after the burst not seen");
}

/// Overload priority: with the reader frozen, a storm of processes fills the ring, and the
/// process records give way (fork/exit past half, execs of known files past three
/// quarters), each shed record counted at its own site. The file read a rule matches on,
/// made by a new executable in the middle of the storm, still finds room and becomes a
/// detection. Without the shedding the storm's records fill the ring and the read is lost.
#[test]
fn a_process_storm_leaves_room_for_what_rules_match() {
    require_root();
    let agent = Agent::start(&["--ring-buffer-size", "65536"]);
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let reader = scratch.copy("/bin/cat", dir.join("storm-reader"));
    let script = format!(
        "i=0; while [ $i -lt 600 ]; do /bin/true; i=$((i+1)); done; \
         {} /etc/shadow >/dev/null; \
         i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i+1)); done",
        reader.display()
    );
    send_signal(agent.pid(), libc::SIGSTOP);
    let storm = Command::new("sh").args(["-c", &script]).status();
    send_signal(agent.pid(), libc::SIGCONT);
    assert!(storm.expect("run the storm").success());

    let found = wait_for(Duration::from_secs(10), || {
        agent
            .detections(&["--rule", "read-shadow-file"])
            .into_iter()
            .find(|d| d["process"]["exe"].as_str() == reader.to_str())
    });
    let status = agent.status();
    let losses = status["losses"].as_array().cloned().unwrap_or_default();
    let shed: u64 = losses
        .iter()
        .filter(|l| {
            ["fork_shed", "exit_shed", "exec_shed"].contains(&l["site"].as_str().unwrap_or(""))
        })
        .map(|l| l["count"].as_u64().unwrap_or(0))
        .sum();
    let found = found.unwrap_or_else(|| {
        panic!(
            "the shadow read made during the storm was lost (losses {losses:?}); detections: {:?}",
            agent.detections(&["--rule", "read-shadow-file"])
        )
    });
    assert!(
        shed > 0,
        "800 execs into a frozen 64 KiB ring shed nothing: {losses:?}"
    );
    assert_eq!(found["severity"], "high", "{found}");
    // Shed records are drops of their kind, and sustained drops an agent-health detection.
    assert!(
        status["events"]["fork"]["dropped"].as_u64().unwrap_or(0) > 0,
        "{}",
        status["events"]
    );
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read response");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"));
    (code, text)
}

/// The value of a sample line `name{labels} value` in an exposition.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[test]
fn metrics_endpoint_serves_and_agrees_with_status() {
    require_root();
    let agent = Agent::start(&[]);
    let addr = agent.status()["metrics_addr"]
        .as_str()
        .expect("status names the metrics address")
        .to_string();
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let (code, body) = http_get(&addr, "/readyz");
    assert_eq!(
        code, 200,
        "not ready with programs attached and policies loaded: {body}"
    );

    let before = agent.status()["events"]["exec"]["received"]
        .as_u64()
        .unwrap_or(0);
    let ran = Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 50 ]; do /bin/true; i=$((i+1)); done",
        ])
        .status()
        .expect("run execs");
    assert!(ran.success());
    let exec_metric = |text: &str| sample(text, "rasp_events_received_total{kind=\"exec\"}");
    let scraped = wait_for(Duration::from_secs(10), || {
        let (_, text) = http_get(&addr, "/metrics");
        exec_metric(&text)
            .filter(|&v| v >= (before + 50) as f64)
            .map(|_| text)
    })
    .unwrap_or_else(|| {
        panic!(
            "scraped exec count never reached {}: {}",
            before + 50,
            http_get(&addr, "/metrics").1
        )
    });
    let after = agent.status()["events"]["exec"]["received"]
        .as_u64()
        .unwrap_or(0);
    let value = exec_metric(&scraped).unwrap_or(0.0);
    assert!(
        value <= after as f64,
        "scrape ({value}) ahead of a later status ({after})"
    );
    for family in [
        "rasp_event_latency_seconds",
        "rasp_process_table",
        "rasp_policy_set_version",
        "process_resident_memory_bytes",
    ] {
        assert!(scraped.contains(family), "no {family} in:\n{scraped}");
    }
    assert!(scraped.trim_end().ends_with("# EOF"));
}

/// Issue 22's reproduced crash: 100 KB of nested `- - - … x` applied over the socket killed
/// the running agent (a stack overflow in the YAML loader). Now it is refused with its
/// position, the active set stays, and the agent keeps serving.
#[test]
fn a_hostile_policy_file_is_refused_and_the_agent_lives() {
    require_root();
    let agent = Agent::start(&[]);
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let deep = format!("{}x\n", "- ".repeat(50_000));
    let file = scratch.file(dir.join("deep.yaml"), deep.as_bytes(), 0o644);
    let before = agent.status()["policy_set_version"].clone();
    let out = agent.cli(&["policy", "apply", file.to_str().unwrap_or_default()]);
    assert!(!out.status.success(), "a hostile policy was applied");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("deep.yaml:1:") && said.contains("nested deeper"),
        "the refusal does not say what and where: {said}"
    );
    let status = agent.status();
    assert_eq!(
        status["policy_set_version"], before,
        "the active set changed"
    );
    assert_eq!(status["pipeline"], "running");
}

/// A capability set from `/proc/<pid>/status` (`CapEff`, `CapBnd`, ...), as a bit mask.
fn capabilities(pid: u32, set: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:\t")))
        .unwrap_or_else(|| panic!("no {set} in /proc/{pid}/status"));
    u64::from_str_radix(line.trim(), 16).unwrap_or_else(|e| panic!("{set} {line}: {e}"))
}

/// An attacker who takes over the agent's process gets what it kept: after start it holds
/// no capability that loads kernel modules, does raw I/O, changes uids or file
/// capabilities, reboots or sets the clock, in any set, and neither does the hold watchdog
/// it executes. What it kept still works: it attaches, sees an exec, and answers.
#[test]
fn the_agent_keeps_only_the_capabilities_it_uses() {
    require_root();
    // CAP_SETGID 6, SETUID 7, SETPCAP 8, SYS_MODULE 16, SYS_RAWIO 17, SYS_CHROOT 18,
    // SYS_BOOT 22, SYS_TIME 25, MKNOD 27, SETFCAP 31, MAC_ADMIN 33.
    let never = [6u32, 7, 8, 16, 17, 18, 22, 25, 27, 31, 33]
        .iter()
        .fold(0u64, |m, c| m | 1 << c);
    // CAP_KILL 5, NET_ADMIN 12, SYS_PTRACE 19, SYS_ADMIN 21, PERFMON 38, BPF 39.
    let needed = [5u32, 12, 19, 21, 38, 39]
        .iter()
        .fold(0u64, |m, c| m | 1 << c);
    let ours = capabilities(std::process::id(), "CapEff");
    assert_eq!(
        ours & never,
        never,
        "the test itself must run with full root capabilities (CapEff {ours:x})"
    );
    let agent = Agent::start(&[]);
    let mut pids = vec![("agent", agent.pid())];
    if let Some(w) = agent.status()["sql_hold"]["watchdog_pid"].as_u64() {
        pids.push(("hold watchdog", w as u32));
    }
    for (what, pid) in &pids {
        for set in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
            let caps = capabilities(*pid, set);
            assert_eq!(
                caps & never,
                0,
                "the {what} (pid {pid}) kept {set} {caps:x}: bits {:x} should be gone",
                caps & never
            );
        }
    }
    let eff = capabilities(agent.pid(), "CapEff");
    assert_eq!(
        eff & needed,
        needed,
        "the agent dropped what it needs: CapEff {eff:x}"
    );
    assert!(
        agent.log_text().contains("capabilities: kept"),
        "the agent should log what it kept:\n{}",
        agent.log_text()
    );
    // Still working with what it kept: a fresh exec is seen.
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let marker = dir.join("caps-probe");
    std::fs::copy("/bin/true", &marker).expect("copy /bin/true");
    let status = Command::new(&marker).status().expect("run the probe");
    assert!(status.success());
    let path = marker.display().to_string();
    let seen = wait_for(Duration::from_secs(10), || {
        agent
            .events(&["--kind", "exec"])
            .into_iter()
            .find(|e| e["exe"].as_str() == Some(path.as_str()))
    });
    assert!(seen.is_some(), "the agent saw no exec of {path}");
}

/// A program the kernel refuses (here by fault injection: older kernel lines refuse some
/// for real, `cargo xtask vm-verify`) is a detection naming it and the verifier's reason;
/// without the exec program `/readyz` says not ready, so a DaemonSet shows the node as
/// blind, while the rest of the agent serves.
#[test]
fn a_refused_program_is_a_detection_and_without_exec_the_agent_is_not_ready() {
    require_root();
    let agent = Agent::start(&["--fault-refuse-program", "rasp_exec"]);
    let health = wait_for(Duration::from_secs(10), || {
        agent
            .detections(&["--rule", "agent-programs-refused"])
            .into_iter()
            .next()
    })
    .unwrap_or_else(|| panic!("no detection for the refused program: {}", agent.log_text()));
    assert_eq!(health["event"]["kind"], "agent_health", "{health}");
    let detail = health["outcome_detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("rasp_exec") && detail.contains("--fault-refuse-program"),
        "{health}"
    );
    let status = agent.status();
    let exec = status["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .find(|p| p["name"] == "rasp_exec")
        .cloned()
        .unwrap_or_default();
    assert_eq!(exec["state"], "failed", "{status}");
    let addr = status["metrics_addr"].as_str().expect("metrics address");
    let (code, body) = http_get(addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("rasp_exec"), "{body}");
    assert_eq!(http_get(addr, "/healthz").0, 200);
}
