//! Container and pod identity from real containers: Docker containers started by the test
//! from images built out of this host's own binaries. The agent names each container (id,
//! runtime, name, image) and a detection inside it carries them — with the agent on the
//! host, and with the agent itself in a privileged container sharing the host's PID
//! namespace (as the DaemonSet runs it), in a cgroup namespace of its own. In both, the
//! agent's own lookups on the Docker socket are not reported by the shipped runtime-socket
//! rules, which do report another program's connect.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rasp_tests::docker::{require_docker, Container, Image};
use rasp_tests::{
    agent_bin, output_within, parse_json_lines, require_root, show, unique_name, wait_for,
    workspace_root, Agent,
};
use serde_json::Value;

/// From a container's first event to its names from the Docker API.
const NAMED: Duration = Duration::from_secs(15);
/// From an action to its detection.
const DETECTED: Duration = Duration::from_secs(10);
const PROBE: &str = "/bin/rasp-container-probe";
/// The Docker socket as the agent and the test reach it.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// The default rules on connects to a runtime's socket, from `policies/container-escape.yaml`.
const SOCKET_RULES: [&str; 2] = [
    "container-runtime-socket-connected",
    "container-runtime-socket-connected-in-container",
];

/// The test's policies and the shipped container-escape set (whose runtime-socket rules
/// the agent's own Docker lookups must not trip) into `dir`.
fn write_policies(dir: &Path, image: &str, name: &str) {
    fs::create_dir_all(dir).expect("mkdir policies");
    fs::write(dir.join("containers.yaml"), policies(image, name)).expect("write policy");
    let escape = workspace_root().join("policies/container-escape.yaml");
    fs::copy(&escape, dir.join("container-escape.yaml"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", escape.display()));
}

/// Two policies: one on the container id alone (known from the cgroup path at once), one
/// whose selector names the container by its runtime names (known once Docker answered).
fn policies(image: &str, name: &str) -> String {
    format!(
        "name: rasp-test-containers\n\
         version: 1\n\
         mode: audit\n\
         rules:\n  \
           - id: rasp-test-probe-in-container\n    \
             severity: medium\n    \
             event: exec\n    \
             match:\n      \
               exe: [\"*/rasp-container-probe\"]\n      \
               in_container: true\n    \
             action: alert\n\
         ---\n\
         name: rasp-test-named-container\n\
         version: 1\n\
         mode: audit\n\
         selector:\n  \
           image: [\"{image}\"]\n  \
           container_name: [\"{name}\"]\n\
         rules:\n  \
           - id: rasp-test-probe-in-named-container\n    \
             severity: high\n    \
             event: exec\n    \
             match:\n      \
               exe: [\"*/rasp-container-probe\"]\n    \
             action: alert\n"
    )
}

/// A workload image: sh, sleep and the probe (a copy of `true`), with their libraries.
fn workload_image() -> Image {
    Image::build(
        "workload",
        &[
            (Path::new("/bin/sh"), "/bin/sh"),
            (Path::new("/bin/sleep"), "/bin/sleep"),
            (Path::new("/bin/true"), PROBE),
        ],
        &["/tmp", "/proc", "/sys", "/dev", "/etc"],
    )
}

/// `containers --json` (through `cli`) until `container` is listed with its name; the entry.
fn wait_named(cli: &dyn Fn(&[&str]) -> Vec<Value>, container: &Container) -> Value {
    let mut last = Vec::new();
    wait_for(NAMED, || {
        last = cli(&["containers", "--json"]);
        last.iter()
            .find(|c| c["id"] == container.id.as_str() && c["name"].is_string())
            .cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "the agent did not name container {} ({}) within {NAMED:?}; it lists:\n{}",
            container.name,
            container.id,
            show(&last)
        )
    })
}

/// Checks the identity object the agent reports for `container` from `image`.
fn assert_identity(what: &str, c: &Value, container: &Container, image: &str) {
    assert_eq!(c["id"], container.id.as_str(), "{what}: {c}");
    assert_eq!(c["runtime"], "docker", "{what}: {c}");
    assert_eq!(c["name"], container.name.as_str(), "{what}: {c}");
    assert_eq!(c["image"], image, "{what}: {c}");
}

/// The detections of `rule` whose process is the probe run in `container`.
fn probe_detection(
    cli: &dyn Fn(&[&str]) -> Vec<Value>,
    rule: &str,
    container: &Container,
) -> Value {
    let mut last = Vec::new();
    wait_for(DETECTED, || {
        last = cli(&["detections", "--json", "--rule", rule]);
        last.iter()
            .find(|d| d["event"]["container"]["id"] == container.id.as_str())
            .cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "no {rule} detection from container {} within {DETECTED:?}:\n{}",
            container.id,
            show(&last)
        )
    })
}

fn check_container(cli: &dyn Fn(&[&str]) -> Vec<Value>, image: &Image, workload: &Container) {
    // Its first event (the sleep) makes the agent ask Docker; then it names it.
    let listed = wait_named(cli, workload);
    assert_identity("containers --json", &listed, workload, image.tag());

    // A detection inside the container carries the identity; the rule whose selector uses
    // the runtime's names fires too.
    workload.exec(&[PROBE, "from-the-test"]);
    for rule in [
        "rasp-test-probe-in-container",
        "rasp-test-probe-in-named-container",
    ] {
        let d = probe_detection(cli, rule, workload);
        assert_identity(rule, &d["event"]["container"], workload, image.tag());
        assert_eq!(d["process"]["exe"], PROBE, "{d}");
    }

    // Resolved by handle (one syscall, from any cgroup namespace), not by walking the
    // hierarchy; and named through the runtime.
    let status = cli(&["status", "--json"]).remove(0);
    assert!(
        status["cgroups"]["by_handle"].as_u64() > Some(0),
        "cgroup ids must resolve by handle here: {:#}",
        status["cgroups"]
    );
    assert!(
        status["containers"]["named"].as_u64() >= Some(1),
        "{:#}",
        status["containers"]
    );
}

/// The agent asked Docker over its socket (`check_container` saw the names), yet neither
/// runtime-socket rule names the agent: its own connects are not reported. That the rules
/// are live is shown first by a connect from a program of the test's, which they report.
fn check_agent_not_reported(cli: &dyn Fn(&[&str]) -> Vec<Value>, agent_pid: u32) {
    let python = "/usr/bin/python3";
    assert!(
        Path::new(python).exists(),
        "{python} is needed (Debian package python3)"
    );
    let mut probe = Command::new(python)
        .args([
            "-c",
            &format!("import socket; socket.socket(socket.AF_UNIX).connect_ex({DOCKER_SOCKET:?})"),
        ])
        .spawn()
        .expect("spawn python3");
    let probe_pid = probe.id();
    let status = probe.wait().expect("wait for python3");
    assert!(status.success(), "python3 connect probe: {status}");
    let mut last = Vec::new();
    let seen = wait_for(DETECTED, || {
        last = cli(&["detections", "--json", "--rule", SOCKET_RULES[0]]);
        last.iter()
            .any(|d| d["process"]["pid"].as_u64() == Some(u64::from(probe_pid)))
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "no {} detection of the test's own connect to {DOCKER_SOCKET} (pid {probe_pid}) \
         within {DETECTED:?}:\n{}",
        SOCKET_RULES[0],
        show(&last)
    );
    for rule in SOCKET_RULES {
        let found = cli(&["detections", "--json", "--rule", rule]);
        let agent_own: Vec<Value> = found
            .into_iter()
            .filter(|d| d["process"]["pid"].as_u64() == Some(u64::from(agent_pid)))
            .collect();
        assert!(
            agent_own.is_empty(),
            "{rule} reported the agent's own Docker lookups (pid {agent_pid}):\n{}",
            show(&agent_own)
        );
    }
}

#[test]
fn the_agent_names_a_real_container_and_its_detections_carry_it() {
    require_root();
    require_docker();
    let image = workload_image();
    let name = unique_name("rasp-test-workload");
    let dir = std::env::temp_dir().join(unique_name("rasp-test-container-policies"));
    write_policies(&dir, image.tag(), &name);
    let agent = Agent::start(&["--policies", dir.to_str().expect("utf-8")]);
    let workload = Container::run(&name, &[], image.tag(), &["/bin/sleep", "600"]);
    let cli = |args: &[&str]| agent.cli_json_lines(args);
    check_container(&cli, &image, &workload);
    check_agent_not_reported(&cli, agent.pid());
    let _ = fs::remove_dir_all(&dir);
}

/// The agent binary under test in an image of its own (with its libraries, like `cargo
/// xtask image` does for a dynamic build), run as the DaemonSet runs it: the DaemonSet's
/// capabilities, host PID namespace, read-only root, the host's cgroup tree, bpffs, tracefs
/// and docker socket mounted — and a cgroup namespace of its own, so what other processes'
/// /proc/<pid>/cgroup says is not what it keys on.
#[test]
fn the_agent_in_a_privileged_host_pid_container_names_a_real_container() {
    require_root();
    require_docker();
    let agent_bin = agent_bin();
    let agent_image = Image::build(
        "agent",
        &[(agent_bin.as_path(), "/rasp-agent")],
        &[
            "/etc/rasp/policies",
            "/run/rasp",
            "/var/lib/rasp",
            "/tmp",
            "/proc",
            "/sys",
            "/dev",
        ],
    );
    let image = workload_image();
    // Started before the agent: the agent learns its cgroup from its next event.
    let workload = Container::run(
        &unique_name("rasp-test-workload"),
        &[],
        image.tag(),
        &["/bin/sleep", "600"],
    );

    // The agent's socket, state and policies in a host directory the container mounts: the
    // CLI runs here, on the host, against the socket there.
    let dir = std::env::temp_dir().join(unique_name("rasp-test-agent-in-container"));
    write_policies(&dir.join("policies"), image.tag(), &workload.name);
    let work = format!("{}:/work", dir.display());
    let agent = Container::run(
        &unique_name("rasp-test-agent"),
        &[
            // deploy/daemonset.yaml's security context in docker's words (Docker 20.10 does
            // not know CAP_BPF/CAP_PERFMON: SYS_ADMIN covers them; root here lacks
            // CAP_SYS_RESOURCE, so neither `--privileged` nor that cap can be granted).
            "--cap-drop=ALL",
            "--cap-add=SYS_ADMIN",
            "--cap-add=SYS_PTRACE",
            "--cap-add=KILL",
            "--cap-add=NET_ADMIN",
            "--cap-add=SYS_NICE",
            "--cap-add=DAC_READ_SEARCH",
            "--security-opt=seccomp=unconfined",
            "--read-only",
            "--pid=host",
            "--cgroupns=private",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup",
            "-v",
            "/sys/fs/bpf:/sys/fs/bpf",
            "-v",
            "/sys/kernel/tracing:/sys/kernel/tracing",
            "-v",
            &format!("{DOCKER_SOCKET}:{DOCKER_SOCKET}"),
            "-v",
            &work,
        ],
        agent_image.tag(),
        &[
            "/rasp-agent",
            "run",
            "--policies=/work/policies",
            "--socket=/work/agent.sock",
            "--state-dir=/work/state",
            "--metrics=127.0.0.1:0",
        ],
    );
    let socket = dir.join("agent.sock");
    let guard = AgentContainer {
        container: &agent,
        dir: dir.clone(),
    };
    let cli = |args: &[&str]| cli_json(&agent_bin, &socket, args);
    let up = wait_for(Duration::from_secs(30), || {
        if !agent.running() {
            panic!("the agent's container stopped:\n{}", agent.logs());
        }
        let out = output_within(
            Command::new(&agent_bin)
                .args(["status", "--json", "--socket"])
                .arg(&socket)
                .stdin(Stdio::null()),
            Duration::from_secs(5),
        )?;
        out.status.success().then_some(())
    });
    assert!(
        up.is_some(),
        "the agent in its container did not answer on {}:\n{}",
        socket.display(),
        agent.logs()
    );
    // It really runs in a cgroup namespace of its own.
    let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/cgroup")).ok();
    let theirs = ns(&agent_pid(&agent).to_string());
    assert!(
        theirs.is_some() && theirs != ns("self"),
        "the agent's container must have its own cgroup namespace: {theirs:?} vs {:?}",
        ns("self")
    );

    workload.exec(&["/bin/sh", "-c", "exit 0"]);
    check_container(&cli, &image, &workload);
    check_agent_not_reported(&cli, agent_pid(&agent));
    drop(guard);
}

/// The host pid of the agent container's main process.
fn agent_pid(agent: &Container) -> u32 {
    rasp_tests::docker::docker(&["inspect", "-f", "{{.State.Pid}}", &agent.id])
        .parse()
        .expect("a pid")
}

fn cli_json(bin: &Path, socket: &Path, args: &[&str]) -> Vec<Value> {
    let out = output_within(
        Command::new(bin).args(args).arg("--socket").arg(socket),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|| panic!("`rasp-agent {}` hung", args.join(" ")));
    assert!(
        out.status.success(),
        "`rasp-agent {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_json_lines(&String::from_utf8_lossy(&out.stdout))
}

/// Stops the agent's container with SIGTERM (so it detaches its programs) and prints its
/// log when the test is failing; removes the shared directory.
struct AgentContainer<'a> {
    container: &'a Container,
    dir: PathBuf,
}

impl Drop for AgentContainer<'_> {
    fn drop(&mut self) {
        let _ = output_within(
            Command::new("docker").args(["stop", "-t", "15", &self.container.id]),
            Duration::from_secs(30),
        );
        if std::thread::panicking() {
            eprintln!(
                "--- agent container log ---\n{}--- end ---",
                self.container.logs()
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
