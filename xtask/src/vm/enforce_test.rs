//! `cargo xtask vm-test`: enforcement where BPF-LSM loads. The host kernel refuses LSM
//! programs, so this boots the newest Debian cloud kernel with `lsm=…,bpf` under QEMU, runs
//! the real agent with an enforce policy, and checks what the kernel did: a denied exec,
//! open (also through io_uring, which never makes an open(2) syscall), executable mapping,
//! mprotect to executable and connect fail with EPERM while the process lives; the same
//! acts on other files and ports work; and the agent's detections say `prevented`. Each
//! check prints its own result line.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use super::guest::Guest;
use crate::workspace::Workspace;

/// The agent is ready in ~15 s under emulation (TCG), its ~1M verified instructions most of
/// it; a program the verifier gives up on walks 1M instructions alone, minutes under TCG.
const TIMEOUT: Duration = Duration::from_secs(1800);

/// The checks the guest must report, each exactly once, as `check NAME pass|fail DETAIL`.
const CHECKS: &[&str] = &[
    "lsm_active",
    "agent_ready",
    "programs_loaded",
    "lsm_hooks_attached",
    "exec_denied",
    "exec_allowed",
    "open_denied",
    "open_allowed",
    "io_uring_open_denied",
    "io_uring_open_allowed",
    "mmap_exec_denied",
    "mmap_exec_allowed",
    "mprotect_exec_denied",
    "connect_denied",
    "connect_allowed",
    "detections_prevented",
];

const POLICY: &str = r#"name: vm-enforce
version: 1
mode: enforce
rules:
  - id: deny-exec
    severity: high
    event: exec
    match: { exe: ["/opt/deny/denied-bin"] }
    action: block
  - id: deny-open
    severity: high
    event: file_open
    match: { path: ["/opt/deny/secret.txt"], access: [read] }
    action: block
  - id: deny-map
    severity: high
    event: library_load
    match: { path: ["/opt/deny/lib/**"] }
    action: block
  - id: deny-connect
    severity: high
    event: connect
    match: { cidr: ["127.0.0.1/32"], port: [9] }
    action: block
"#;

/// The guest's script: busybox sh, `result` reports a line.
const SCRIPT: &str = r#"
check() { result check "$@"; }
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
mkdir -p /opt/deny/lib /opt/ok /etc/rasp/policies /tmp/state
cp /bin/busybox /opt/deny/denied-bin
echo secret > /opt/deny/secret.txt
echo public > /opt/ok/public.txt
lib=$(ls /lib/x86_64-linux-gnu/libc.so.6 /usr/lib/x86_64-linux-gnu/libc.so.6 2>/dev/null | head -n1)
cp "$lib" /opt/deny/lib/libtarget.so
cp "$lib" /opt/ok/libtarget.so
cp /policy.yaml /etc/rasp/policies/enforce.yaml

case "$(cat /sys/kernel/security/lsm)" in
  *bpf*) check lsm_active pass "$(cat /sys/kernel/security/lsm)" ;;
  *) check lsm_active fail "$(cat /sys/kernel/security/lsm)" ;;
esac

RASP_LOG=info,rasp_agent::loader=debug /bin/rasp-agent run --policies /etc/rasp/policies \
  --socket /tmp/a.sock --state-dir /tmp/state --metrics 127.0.0.1:0 > /tmp/agent.log 2>&1 &
ready=""
start=$(date +%s)
# Poll the log (a busybox grep) until the agent has loaded and seeded its process table,
# and only then ask over the socket: every `rasp-agent status` is an exec of the agent's
# binary, which under TCG takes seconds of the one vCPU the loading agent needs.
while [ $(( $(date +%s) - start )) -lt 1500 ]; do
  if grep -q "process table seeded" /tmp/agent.log 2>/dev/null \
     && /bin/rasp-agent status --socket /tmp/a.sock --json > /tmp/status.json 2>/dev/null; then
    ready=yes; break
  fi
  grep -q "Error\|ERROR" /tmp/agent.log 2>/dev/null && ! kill -0 $! 2>/dev/null && break
  sleep 2
done
# Where the start went (the serial log keeps these lines; the checks ignore them).
result timing first "$(head -n 1 /tmp/agent.log | cut -c1-40)"
result timing seeded "$(grep -m1 "process table seeded" /tmp/agent.log | cut -c1-40)"
result timing loaded "$(grep -m1 "programs loaded" /tmp/agent.log | cut -c1-300)"
# What the verifier walked for each program on this kernel (the LSM ones only load here),
# how long each took, and why any was refused (the end of the verifier's answer).
sed 's/\x1b\[[0-9;]*m//g' /tmp/agent.log > /tmp/agent.plain
grep "verifier cost\|program verified" /tmp/agent.plain | sed 's/.*program=//' | while read -r line; do
  result timing verified "$line"
done
grep -B4 "did not load\|not loaded\|attach failed\|processed [0-9]* insns\|too large" \
  /tmp/agent.plain | grep -v "^--$" | while read -r line; do
  result timing refused "$(echo "$line" | cut -c1-300)"
done
# Every program the agent verifies at start, this older kernel line included.
verified=$(grep -c "program verified" /tmp/agent.plain)
refused=$(grep "program verified" /tmp/agent.plain | grep "ok=false" | sed 's/.*program=//' | cut -d' ' -f1 | tr '\n' ' ')
if [ "$verified" -gt 0 ] && [ -z "$refused" ]; then check programs_loaded pass "$verified programs"; else
  check programs_loaded fail "$verified verified, refused: ${refused:-none}"; fi
if [ -z "$ready" ]; then
  check agent_ready fail "no status after 1500 s: $(tail -n 5 /tmp/agent.log | tr '\n' ' ')"
  exit 1
fi
check agent_ready pass "after $(( $(date +%s) - start )) s"
hooks=$(grep -o '"hook":"lsm/[a-z_]*","state":"attached"' /tmp/status.json | wc -l)
if [ "$hooks" -ge 5 ]; then check lsm_hooks_attached pass "$hooks"; else
  check lsm_hooks_attached fail "$hooks attached: $(grep -o '"lsm":{[^}]*}' /tmp/status.json)"; fi

# The probe's answer, with its exit status when it did not exit 0 (a signal: 128+N).
probe() {
  answer=$(/bin/rasp-probe "$@" 2>&1)
  status=$?
  if [ $status -ne 0 ]; then answer="$answer (exit $status)"; fi
  echo "$answer"
}
expect() { # NAME EXPECTED ACTUAL
  case "$3" in
    $2) check "$1" pass "$3" ;;
    *) check "$1" fail "expected $2, got: $3" ;;
  esac
}

out=$(/opt/deny/denied-bin echo ran 2>&1); rc=$?
expect exec_denied "126*" "$rc $out"
out=$(/bin/busybox echo ran 2>&1); rc=$?
expect exec_allowed "0 ran" "$rc $out"
expect open_denied "error 1 *" "$(probe open /opt/deny/secret.txt 2>&1)"
expect open_allowed "ok" "$(probe open /opt/ok/public.txt 2>&1)"
expect io_uring_open_denied "error 1 *" "$(probe io-uring-open /opt/deny/secret.txt 2>&1)"
expect io_uring_open_allowed "ok" "$(probe io-uring-open /opt/ok/public.txt 2>&1)"
expect mmap_exec_denied "error 1 *" "$(probe mmap-exec /opt/deny/lib/libtarget.so 2>&1)"
expect mmap_exec_allowed "ok" "$(probe mmap-exec /opt/ok/libtarget.so 2>&1)"
expect mprotect_exec_denied "error 1 *" "$(probe mprotect-exec /opt/deny/lib/libtarget.so 2>&1)"
expect connect_denied "error 1 *" "$(probe connect 127.0.0.1:9 2>&1)"
expect connect_allowed "error 111 *" "$(probe connect 127.0.0.1:10 2>&1)"

sleep 2
/bin/rasp-agent detections --socket /tmp/a.sock --json > /tmp/detections.json 2>&1
missing=""
for rule in deny-exec deny-open deny-map deny-connect; do
  grep "\"rule_id\":\"$rule\"" /tmp/detections.json | grep -q '"outcome":"prevented"' || missing="$missing $rule"
done
if [ -z "$missing" ]; then check detections_prevented pass "$(wc -l < /tmp/detections.json) detections"; else
  check detections_prevented fail "no prevented detection for:$missing; $(head -c 600 /tmp/detections.json)"; fi
kill %1 2>/dev/null
"#;

pub fn enforce_test(ws: &Workspace, agent: &Path, probe: &Path) -> Result<()> {
    for (binary, build) in [
        (agent, "cargo xtask build"),
        (
            probe,
            "cargo build --release -p rasp-tests --bin rasp-probe",
        ),
    ] {
        if !binary.is_file() {
            bail!("{} not found: build it with `{build}`", binary.display());
        }
    }
    let mut guest = Guest::new(ws, "enforce-test")?;
    // The agent verifies its programs on every CPU it has: most of its start under TCG.
    guest.use_host_cpus(4);
    guest.add_binary(agent, "bin/rasp-agent")?;
    guest.add_binary(probe, "bin/rasp-probe")?;
    guest.add_file("policy.yaml", POLICY);
    let run = guest.boot(SCRIPT, TIMEOUT)?;
    let mut failed = Vec::new();
    let mut seen = Vec::new();
    for line in &run.results {
        if line.starts_with("timing ") {
            println!("vm-test: {line}");
        }
        let Some(rest) = line.strip_prefix("check ") else {
            continue;
        };
        let mut words = rest.splitn(3, ' ');
        let (name, verdict, detail) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        println!("vm-test: {name}: {verdict} ({detail})");
        seen.push(name.to_string());
        if verdict != "pass" {
            failed.push(format!("{name}: {detail}"));
        }
    }
    for check in CHECKS {
        if !seen.iter().any(|s| s == check) {
            failed.push(format!("{check}: not reported"));
        }
    }
    println!(
        "vm-test: guest {} (lsm={}), booted in {:.1} s, {} checks, {} failed; serial log {}",
        run.kernel_release,
        run.lsms,
        run.boot.as_secs_f64(),
        seen.len(),
        failed.len(),
        run.serial_log.display()
    );
    if !failed.is_empty() {
        bail!(
            "BPF-LSM enforcement checks failed in the guest:\n  {}\n(serial log: {})",
            failed.join("\n  "),
            run.serial_log.display()
        );
    }
    Ok(())
}
