//! What each hook the agent uses costs an operation, measured in instructions in a BPF-LSM
//! guest (the host refuses LSM programs): exec, fork+exit, watched and unwatched opens, an
//! executable library mapping, a loopback connect, a libpq call, and issue 19's hooks (file
//! changes, AF_UNIX connects, namespaces, process_vm_readv, io_uring), each under nothing
//! attached, the tracepoint floor (empty programs on the agent's hooks), the LSM floor (the
//! LSM counterparts instead of the syscall tracepoints) and the real agent. The guest clock
//! counts instructions, so a rate is an instruction budget: the same loop gives the same
//! number to four digits whatever the host is doing. One boot; configurations and
//! operations interleaved and rotated round by round.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::guest::{Guest, GuestClock, GuestRun};
use super::initramfs::parse_ldd;
use crate::command::{self, human};
use crate::workspace::Workspace;

/// A file nothing in the default policies watches: the agent's in-kernel pre-filter drops
/// its opens, so what is measured is the hook, not the event path.
const UNWATCHED_FILE: &str = "/etc/hostname";
/// The default `read-shadow-file` rule fires on every open: event, match, folded detection.
const WATCHED_FILE: &str = "/etc/shadow";
/// libpq as Debian installs it (package libpq5), put at the same path in the guest.
const LIBPQ: &str = "/lib/x86_64-linux-gnu/libpq.so.5";
/// Guest seconds the libpq workload waits before its loop: the agent finds libpq in a
/// process's maps on its periodic scan (every 5 s) and attaches then.
const LIBPQ_WARMUP_SECONDS: u32 = 7;

/// How long a floor or the agent gets to attach in the guest; the verifier runs slowly
/// under emulation (the agent needs ~10 s on an idle host).
const ATTACH_WAIT: Duration = Duration::from_secs(120);

/// Instruction counting, 4 ns an instruction (250 M a guest second, about what TCG
/// emulates per host second here): the same run gives the same rate to four digits,
/// however busy the host is, where host time wandered ±20% between rounds.
const CLOCK: GuestClock = GuestClock::Instructions { shift: 2 };

/// Host seconds the timeout allows for each guest second of an op's run: TCG on this
/// shared 2-vCPU host ran about 2 host s per guest s when quiet, and about 16 with other
/// builds beside it (load average 9), where the old allowance of 1 timed the guest out.
/// Only a bound on a hung guest.
const HOST_PER_GUEST_SECOND: f64 = 16.0;

/// Relative spread between rounds up to which a row counts as repeatable.
const REPEATABLE: f64 = 0.001;

/// The ways the hooks are watched, in the order of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HookConfig {
    NoPrograms,
    TracepointFloor,
    LsmFloor,
    Agent,
}

impl HookConfig {
    pub const ALL: [HookConfig; 4] = [
        HookConfig::NoPrograms,
        HookConfig::TracepointFloor,
        HookConfig::LsmFloor,
        HookConfig::Agent,
    ];

    /// The configuration's name in the guest script and its result lines.
    pub fn id(self) -> &'static str {
        match self {
            HookConfig::NoPrograms => "none",
            HookConfig::TracepointFloor => "tracepoint_floor",
            HookConfig::LsmFloor => "lsm_floor",
            HookConfig::Agent => "agent",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            HookConfig::NoPrograms => "no programs",
            HookConfig::TracepointFloor => "tracepoint floor",
            HookConfig::LsmFloor => "LSM floor",
            HookConfig::Agent => "agent (default policies)",
        }
    }

    fn from_id(id: &str) -> Option<HookConfig> {
        HookConfig::ALL.into_iter().find(|config| config.id() == id)
    }
}

/// One operation the guest times, as `rasp-workload` runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HookOp {
    pub key: &'static str,
    /// What one op is and which of the agent's hooks it crosses.
    pub about: &'static str,
    /// `rasp-workload` arguments before `--seconds`; `{libc}` is the guest's libc path,
    /// `{warmup}` the libpq warm-up.
    args: &'static str,
}

pub const OPS: [HookOp; 13] = [
    HookOp {
        key: "exec",
        about: "fork + execv(/bin/true) + wait: sched_process_exec/fork/exit (+ bprm_check_security under LSM)",
        args: "exec",
    },
    HookOp {
        key: "fork",
        about: "fork + _exit + wait, no exec: sched_process_fork/exit",
        args: "fork",
    },
    HookOp {
        key: "open-unwatched",
        about: "openat+close of /etc/hostname, which no rule watches: sys_exit_openat (file_open under LSM), dropped by the kernel filter",
        args: "open --path /etc/hostname",
    },
    HookOp {
        key: "open-watched",
        about: "openat+close of /etc/shadow: read-shadow-file fires every time (event, match, folded detection)",
        args: "open --path /etc/shadow",
    },
    HookOp {
        key: "mmap",
        about: "mmap(PROT_EXEC) + munmap of libc: sys_enter_mmap (mmap_file under LSM), not a watched library",
        args: "mmap --path {libc}",
    },
    HookOp {
        key: "connect",
        about: "loopback TCP connect + close (in-process acceptor): sys_enter_connect (socket_connect under LSM)",
        args: "tcp",
    },
    HookOp {
        key: "libpq",
        about: "PQsendQuery on a connection that never connected (refused inside libpq, no server): the agent's libpq uprobe, query text read and sent as an sql_query record, analysed by the agent; the floors have no uprobe",
        args: "libpq --warmup {warmup}",
    },
    // The issue-19 hooks. Syscall tracepoints at exit in both the tracepoint floor and the
    // agent; the LSM floor has no counterpart for them (only its sched programs and, for
    // opens and connects, file_open and socket_connect run), so its column is near zero.
    HookOp {
        key: "chmod",
        about: "chmod of a file in /tmp, mode flipping 0600/0644: the file-change hook (sys_exit_chmod), dropped by its in-kernel filter (no setuid bit, no watched path)",
        args: "chmod --dir /tmp",
    },
    HookOp {
        key: "file-change",
        about: "a temp-file save in /tmp: create (openat O_CREAT) + close, chmod, rename, unlink: sys_exit_openat once and the file-change hook three times, all dropped in the kernel",
        args: "file-change --dir /tmp",
    },
    HookOp {
        key: "unix-connect",
        about: "AF_UNIX connect + close to a socket in /tmp (in-process acceptor): sys_enter_connect's AF_UNIX branch reads the path, no runtime socket, dropped (socket_connect under LSM)",
        args: "unix-connect --dir /tmp",
    },
    HookOp {
        key: "namespace",
        about: "unshare(CLONE_NEWUTS) + setns back into the first UTS namespace: sys_exit_unshare (dropped by the flag filter: rules name user namespaces) and sys_exit_setns (sent: an event the agent judges, no match)",
        args: "namespace",
    },
    HookOp {
        key: "vm-read",
        about: "process_vm_readv of 64 bytes from a paused child: sys_exit_process_vm_readv, which the process-memory policy names: every op an event the agent judges",
        args: "vm-read",
    },
    HookOp {
        key: "io-uring-open",
        about: "IORING_OP_OPENAT + close of /etc/hostname through one ring: tp_btf/io_uring_submit_req (in both floors; file_open too under LSM), openat is named by the io-uring policy: every op an event and a folded detection",
        args: "io-uring-open --path /etc/hostname",
    },
];

impl HookOp {
    fn from_key(key: &str) -> Option<HookOp> {
        OPS.into_iter().find(|op| op.key == key)
    }
}

/// A configuration that could not run in a round (could not attach, a workload failed).
pub struct Failure {
    pub config: HookConfig,
    pub round: usize,
    /// The operation, or `None` when the configuration never got to run any.
    pub op: Option<&'static str>,
    pub message: String,
}

pub struct VmHookBench {
    /// `uname -r` in the guest.
    pub kernel_release: String,
    /// The guest's active LSMs.
    pub lsms: String,
    /// Host wall time from starting QEMU to the guest's `/init`.
    pub boot: Duration,
    /// Host wall time of the whole guest run.
    pub elapsed: Duration,
    pub rounds: usize,
    /// Guest seconds each run lasted (see `clock`).
    pub seconds: f64,
    /// What a guest second is.
    pub clock: GuestClock,
    /// Ops per guest second, by (operation, configuration), one per round that ran.
    pub rates: BTreeMap<(&'static str, HookConfig), Vec<f64>>,
    pub failures: Vec<Failure>,
    /// The line each floor printed once attached (which programs on which hooks).
    pub floor_reports: Vec<(HookConfig, String)>,
    /// `rasp-agent status --json` after the agent's first round: its programs as loaded in
    /// the guest, the events its pre-filters let through, its uprobe targets.
    pub agent_status: Option<String>,
    /// What the guest said about itself (BPF JIT on, CPU model).
    pub notes: Vec<String>,
    pub serial_log: PathBuf,
}

impl VmHookBench {
    /// What one guest boot is, before its result lines are taken in.
    fn empty(run: &GuestRun, rounds: usize, seconds: f64) -> VmHookBench {
        VmHookBench {
            kernel_release: run.kernel_release.clone(),
            lsms: run.lsms.clone(),
            boot: run.boot,
            elapsed: run.elapsed,
            rounds,
            seconds,
            clock: CLOCK,
            rates: BTreeMap::new(),
            failures: Vec::new(),
            floor_reports: Vec::new(),
            agent_status: None,
            notes: Vec::new(),
            serial_log: run.serial_log.clone(),
        }
    }

    pub fn rates(&self, op: &str, config: HookConfig) -> &[f64] {
        self.rates
            .iter()
            .find(|((key, c), _)| *key == op && *c == config)
            .map_or(&[], |(_, rates)| rates.as_slice())
    }

    /// Emulated instructions one op takes, for each round, when the guest clock counts
    /// instructions; empty under host time.
    pub fn instructions(&self, op: &str, config: HookConfig) -> Vec<f64> {
        let GuestClock::Instructions { shift } = self.clock else {
            return Vec::new();
        };
        let per_second = 1e9 / f64::from(1u32 << shift);
        self.rates(op, config)
            .iter()
            .filter(|rate| **rate > 0.0)
            .map(|rate| per_second / rate)
            .collect()
    }

    /// Median instructions per op.
    pub fn instructions_per_op(&self, op: &str, config: HookConfig) -> Option<f64> {
        median(&self.instructions(op, config))
    }

    /// Instructions `config` adds to each op over no programs (medians).
    pub fn added(&self, op: &str, config: HookConfig) -> Option<f64> {
        Some(
            self.instructions_per_op(op, config)?
                - self.instructions_per_op(op, HookConfig::NoPrograms)?,
        )
    }

    /// How far apart the two closest rounds are, relative to their mean: "two runs agree
    /// to this". `None` with fewer than two rounds.
    pub fn agreement(&self, op: &str, config: HookConfig) -> Option<f64> {
        let mut values = self.instructions(op, config);
        values.sort_by(f64::total_cmp);
        values
            .windows(2)
            .map(|pair| (pair[1] - pair[0]) / ((pair[0] + pair[1]) / 2.0))
            .min_by(f64::total_cmp)
    }
}

/// Boot one guest with `agent` and `workload` (`rasp-workload`) and time every operation
/// for `seconds` under each configuration, `rounds` times, configurations and operations
/// rotating each round. A configuration that cannot attach is reported in `failures` and
/// skipped afterwards; the others still run.
pub fn hook_bench(
    ws: &Workspace,
    agent: &Path,
    workload: &Path,
    rounds: usize,
    seconds: f64,
) -> Result<VmHookBench> {
    if rounds == 0 || !seconds.is_finite() || seconds <= 0.0 {
        bail!("hook_bench needs at least one round and a positive duration (got {rounds} rounds of {seconds} s)");
    }
    for (binary, build) in [
        (agent, "cargo xtask build"),
        (
            workload,
            "cargo build --release -p rasp-tests --bin rasp-workload",
        ),
    ] {
        if !binary.is_file() {
            bail!("{} not found: build it with `{build}`", binary.display());
        }
    }
    let libpq = std::fs::canonicalize(LIBPQ).with_context(|| {
        format!(
            "{LIBPQ} not found (the libpq uprobe's workload needs it): apt-get install -y libpq5"
        )
    })?;
    let libc = libc_path(workload)?;
    let mut guest = Guest::new(ws, "hook-bench")?;
    guest.set_clock(CLOCK);
    guest.add_binary(agent, "bin/rasp-agent")?;
    guest.add_binary(workload, "bin/rasp-workload")?;
    guest.add_binary(&libpq, LIBPQ)?;
    guest.add_file(UNWATCHED_FILE, "guest\n");
    guest.add_file(WATCHED_FILE, "root:*:19000:0:99999:7:::\n");

    // Boot, then per round and configuration: an attach, every op (libpq with its
    // warm-up), a stop.
    let per_config = OPS.len() as f64 * (seconds * HOST_PER_GUEST_SECOND + 10.0) + 60.0;
    let per_round = HookConfig::ALL.len() as f64 * per_config;
    let timeout = Duration::from_secs_f64(180.0 + ATTACH_WAIT.as_secs_f64() * 3.0)
        + Duration::from_secs_f64(per_round * rounds as f64);
    let run = guest.boot(&script(rounds, seconds, &libc), timeout)?;
    if run.script_status != 0 {
        bail!(
            "the guest's benchmark script failed (status {}); serial log: {}",
            run.script_status,
            run.serial_log.display()
        );
    }

    let mut bench = VmHookBench::empty(&run, rounds, seconds);
    for line in &run.results {
        bench.take(line);
    }
    Ok(bench)
}

/// The libc `workload` links (its path is the same in the guest): the mmap op maps it.
fn libc_path(workload: &Path) -> Result<String> {
    let output = command::capture(Command::new("ldd").arg(workload))
        .context("ldd (libc-bin) is needed to find the guest's libc")?;
    parse_ldd(&String::from_utf8_lossy(&output.stdout))
        .into_iter()
        .find(|lib| {
            lib.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("libc.so"))
        })
        .map(|lib| lib.display().to_string())
        .with_context(|| format!("`ldd {}` lists no libc.so", workload.display()))
}

impl VmHookBench {
    /// One result line of the guest script.
    fn take(&mut self, line: &str) {
        let mut words = line.splitn(5, ' ');
        let kind = words.next().unwrap_or_default();
        let config = words.next().and_then(HookConfig::from_id);
        let round: usize = words
            .next()
            .and_then(|round| round.parse().ok())
            .unwrap_or(0);
        match (kind, config) {
            ("rate", Some(config)) => {
                let Some(op) = words.next().and_then(HookOp::from_key) else {
                    return;
                };
                let json = words.next().unwrap_or_default();
                match json_number(json, "rate") {
                    Some(rate) => self.rates.entry((op.key, config)).or_default().push(rate),
                    None => self.failures.push(Failure {
                        config,
                        round,
                        op: Some(op.key),
                        message: format!("the workload printed no rate: {json}"),
                    }),
                }
            }
            ("fail", Some(config)) => {
                let op = words.next().and_then(HookOp::from_key).map(|op| op.key);
                self.failures.push(Failure {
                    config,
                    round,
                    op,
                    // The guest flattens stderr lines into one: keep single spaces.
                    message: words
                        .next()
                        .unwrap_or_default()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                });
            }
            ("floor", Some(config)) => {
                let rest = line.splitn(3, ' ').nth(2).unwrap_or_default();
                self.floor_reports.push((config, rest.to_string()));
            }
            ("note", _) => {
                let note = line.strip_prefix("note ").unwrap_or_default();
                self.notes.push(note.to_string());
            }
            ("agent_status", _) => {
                let json = line.strip_prefix("agent_status ").unwrap_or_default();
                self.agent_status = Some(json.to_string());
            }
            _ => {}
        }
    }
}

/// The guest script: helpers, then `run_config CONFIG ROUND` lines, the configuration
/// order rotating by one each round (so none always runs first, cold, or right after the
/// agent), and inside each the operations rotating too.
fn script(rounds: usize, seconds: f64, libc: &str) -> String {
    let mut ops = String::new();
    for op in OPS {
        let _ = write!(ops, " {}", op.key);
    }
    let mut args = String::new();
    for op in OPS {
        let _ = writeln!(
            args,
            "        {}) set -- {} ;;",
            op.key,
            op.args
                .replace("{libc}", libc)
                .replace("{warmup}", &LIBPQ_WARMUP_SECONDS.to_string())
        );
    }
    let mut script = format!(
        r#"S={seconds}
WAIT_TENTHS={wait}
SOCKET=/tmp/rasp/agent.sock
OPS="{ops}"
agent_status_reported=0
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
result note bpf_jit_enable=$(cat /proc/sys/net/core/bpf_jit_enable 2>/dev/null || echo unknown) cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

oneline() {{ tr '\n' ' ' | cut -c1-400; }}

# Running and not a zombie (an exited background job stays in /proc until `wait`).
alive() {{ [ -e /proc/$1/status ] && ! grep -q '^State:[[:space:]]*Z' /proc/$1/status; }}

# wait_ready PID CHECK: 0 once CHECK succeeds, 1 if PID exited first, 2 on timeout.
wait_ready() {{
    i=0
    while [ $i -lt $WAIT_TENTHS ]; do
        $2 && return 0
        alive $1 || return 1
        sleep 0.1
        i=$((i + 1))
    done
    return 2
}}

# SIGTERM, up to 20 s to exit (the floor and the agent detach on it), then SIGKILL.
stop() {{
    kill -TERM $1 2>/dev/null
    i=0
    while alive $1 && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
    alive $1 && kill -KILL $1 2>/dev/null
    wait $1 2>/dev/null
}}

# workload CFG ROUND OP
workload() {{
    wcfg=$1; wround=$2; wop=$3
    case $wop in
{args}    esac
    if out=$(/bin/rasp-workload "$@" --seconds $S 2>/tmp/workload.err); then
        result rate $wcfg $wround $wop "$(echo "$out" | tail -n 1)"
    else
        result fail $wcfg $wround $wop "workload failed: $(tail -n 5 /tmp/workload.err | oneline)"
    fi
}}

# every_op CFG ROUND: each operation once, starting ROUND places into the list.
every_op() {{
    n=0
    for op in $OPS; do n=$((n + 1)); done
    skip=$(( ($2 - 1) % n ))
    first=""; rest=""; i=0
    for op in $OPS; do
        if [ $i -lt $skip ]; then rest="$rest $op"; else first="$first $op"; fi
        i=$((i + 1))
    done
    for op in $first $rest; do workload $1 $2 $op; done
}}

floor_ready() {{ grep -q '"floor":' /tmp/floor.out; }}

run_floor() {{
    cfg=$1; round=$2; shift 2
    /bin/rasp-agent floor "$@" >/tmp/floor.out 2>/tmp/floor.err &
    pid=$!
    wait_ready $pid floor_ready
    ready=$?
    if [ $ready = 0 ] && grep -q '"floor":"attached"' /tmp/floor.out; then
        if [ "$(eval echo \${{shown_$cfg:-0}})" = 0 ]; then
            result floor $cfg "$(head -n 1 /tmp/floor.out)"
            eval "shown_$cfg=1"
        fi
        every_op $cfg $round
        stop $pid
        return
    fi
    stop $pid
    case $ready in
        0) why="did not attach: $(head -n 1 /tmp/floor.out) $(tail -n 3 /tmp/floor.err | oneline)" ;;
        1) why="exited before attaching: $(head -n 1 /tmp/floor.out) $(tail -n 5 /tmp/floor.err | oneline)" ;;
        *) why="not attached after $((WAIT_TENTHS / 10)) s: $(tail -n 5 /tmp/floor.err | oneline)" ;;
    esac
    result fail $cfg $round - "$why"
    eval "skip_$cfg=1"
}}

agent_ready() {{
    timeout 10 /bin/rasp-agent status --socket $SOCKET --json >/tmp/status.json 2>/tmp/status.err
}}

run_agent() {{
    round=$1
    rm -rf /tmp/rasp
    mkdir -p /tmp/rasp
    /bin/rasp-agent run --socket $SOCKET --state-dir /tmp/rasp/state --metrics 127.0.0.1:0 >/dev/null 2>/tmp/agent.err &
    pid=$!
    wait_ready $pid agent_ready
    ready=$?
    if [ $ready = 0 ]; then
        every_op agent $round
        if [ $agent_status_reported = 0 ] && agent_ready; then
            result agent_status "$(cat /tmp/status.json)"
            agent_status_reported=1
        fi
        stop $pid
        return
    fi
    stop $pid
    case $ready in
        1) why="exited during startup: $(tail -n 5 /tmp/agent.err | oneline)" ;;
        *) why="status not answering after $((WAIT_TENTHS / 10)) s: $(tail -n 3 /tmp/status.err | oneline) $(tail -n 3 /tmp/agent.err | oneline)" ;;
    esac
    result fail agent $round - "$why"
    eval "skip_agent=1"
}}

run_config() {{
    [ "$(eval echo \${{skip_$1:-0}})" = 1 ] && return
    case $1 in
        none) every_op none $2 ;;
        tracepoint_floor) run_floor tracepoint_floor $2 ;;
        lsm_floor) run_floor lsm_floor $2 --lsm ;;
        agent) run_agent $2 ;;
    esac
}}

"#,
        wait = ATTACH_WAIT.as_secs() * 10,
    );
    // A first run is slower than all later ones (the guest is still settling after boot):
    // one unmeasured run so round 1 is not the odd one out.
    let _ = writeln!(
        script,
        "/bin/rasp-workload open --path {UNWATCHED_FILE} --seconds $S >/dev/null 2>&1"
    );
    let configs = HookConfig::ALL;
    for round in 0..rounds {
        for step in 0..configs.len() {
            let config = configs[(round + step) % configs.len()];
            let _ = writeln!(script, "run_config {} {}", config.id(), round + 1);
        }
    }
    script.push_str("exit 0\n");
    script
}

/// The number after `"key":` in a flat JSON object (xtask parses nothing else).
fn json_number(json: &str, key: &str) -> Option<f64> {
    let tag = format!("\"{key}\":");
    let at = json.find(&tag)? + tag.len();
    let rest = json[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `hook=state` of each program in `rasp-agent status --json` (objects with `"hook"` then
/// `"state"`), for a one-line summary.
fn program_states(status: &str) -> Vec<String> {
    let mut states = Vec::new();
    let mut rest = status;
    while let Some(at) = rest.find("\"hook\":\"") {
        rest = &rest[at + 8..];
        let Some(end) = rest.find('"') else { break };
        let hook = &rest[..end];
        let state = rest
            .find("\"state\":\"")
            .map(|at| &rest[at + 9..])
            .and_then(|state| state.split('"').next())
            .unwrap_or("?");
        states.push(format!("{hook}={state}"));
    }
    states
}

/// Events received per kind in `rasp-agent status --json`, `kind=N` for each kind seen.
fn events_received(status: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(status) else {
        return Vec::new();
    };
    let Some(kinds) = value.get("events").and_then(|e| e.as_object()) else {
        return Vec::new();
    };
    kinds
        .iter()
        .filter_map(|(kind, stats)| {
            let received = stats.get("received")?.as_u64()?;
            Some(format!("{kind}={received}"))
        })
        .collect()
}

/// `kind path: probes attached` for each uprobe target in `rasp-agent status --json`.
fn uprobe_targets(status: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(status) else {
        return Vec::new();
    };
    let Some(targets) = value.get("uprobe_targets").and_then(|t| t.as_array()) else {
        return Vec::new();
    };
    targets
        .iter()
        .map(|t| {
            let text = |key: &str| t.get(key).and_then(|v| v.as_str()).unwrap_or("?");
            let attached = t
                .get("attached")
                .and_then(|a| a.as_array())
                .map_or(0, Vec::len);
            format!("{} {}: {attached} probes", text("kind"), text("path"))
        })
        .collect()
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|r| r.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// Markdown: the table of instructions per op and added per configuration, then what ran.
impl fmt::Display for VmHookBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "QEMU/TCG guest, kernel {} (lsm={}), one vCPU, booted in {}; {} rounds of {} guest s per operation and configuration, {} in all. ",
            self.kernel_release,
            self.lsms,
            human(self.boot),
            self.rounds,
            self.seconds,
            human(self.elapsed)
        )?;
        match self.clock {
            GuestClock::Host => writeln!(f, "Guest clock: host time (not instruction counts).\n")?,
            GuestClock::Instructions { shift } => writeln!(
                f,
                "Guest clock: instruction counting, 1 guest s = {:.0} M emulated instructions, so instructions per op = that ÷ the op's rate; everything the guest runs meanwhile counts, the agent's own userspace included.\n",
                1000.0 / f64::from(1u32 << shift)
            )?,
        }
        write!(f, "| operation | no programs: insns/op |")?;
        for config in &HookConfig::ALL[1..] {
            write!(f, " {}: added |", config.label())?;
        }
        writeln!(f)?;
        writeln!(f, "|---|---|---|---|---|")?;
        let base_of = |op: &str| self.instructions_per_op(op, HookConfig::NoPrograms);
        for op in OPS {
            let base = base_of(op.key).map_or("—".to_string(), |i| format!("{i:.0}"));
            write!(f, "| **{}** — {} | {base} |", op.key, op.about)?;
            for config in &HookConfig::ALL[1..] {
                let cell = match (self.added(op.key, *config), base_of(op.key)) {
                    (Some(added), Some(base)) if base > 0.0 => {
                        format!("{added:+.0} ({:+.1}%)", added / base * 100.0)
                    }
                    _ => "—".into(),
                };
                write!(f, " {cell} |")?;
            }
            writeln!(f)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Repeatability: each round's instructions per op, and how far apart the two closest rounds are (**bold** where that is over {:.1}%).\n",
            REPEATABLE * 100.0
        )?;
        write!(f, "| operation |")?;
        for config in HookConfig::ALL {
            write!(f, " {} |", config.label())?;
        }
        writeln!(f)?;
        writeln!(f, "|---|---|---|---|---|")?;
        for op in OPS {
            write!(f, "| {} |", op.key)?;
            for config in HookConfig::ALL {
                let values: Vec<String> = self
                    .instructions(op.key, config)
                    .iter()
                    .map(|i| format!("{i:.0}"))
                    .collect();
                let agree = self.agreement(op.key, config).map_or(String::new(), |a| {
                    let text = format!("{:.2}%", a * 100.0);
                    if a > REPEATABLE {
                        format!(" (**{text}**)")
                    } else {
                        format!(" ({text})")
                    }
                });
                let shown = if values.is_empty() {
                    "—".to_string()
                } else {
                    values.join(" / ")
                };
                write!(f, " {shown}{agree} |")?;
            }
            writeln!(f)?;
        }
        writeln!(f)?;
        for (config, report) in &self.floor_reports {
            writeln!(f, "- {}: `{report}`", config.label())?;
        }
        if let Some(status) = &self.agent_status {
            writeln!(
                f,
                "- agent programs in the guest: {}",
                program_states(status).join(" ")
            )?;
            writeln!(
                f,
                "- agent events received in its first round: {}",
                events_received(status).join(" ")
            )?;
            let targets = uprobe_targets(status);
            writeln!(
                f,
                "- agent uprobe targets: {}",
                if targets.is_empty() {
                    "none".to_string()
                } else {
                    targets.join("; ")
                }
            )?;
        }
        for note in &self.notes {
            writeln!(f, "- guest: {note}")?;
        }
        for failure in &self.failures {
            writeln!(
                f,
                "- failed: {} (round {}{}): {}",
                failure.config.label(),
                failure.round,
                failure.op.map(|op| format!(", {op}")).unwrap_or_default(),
                failure.message
            )?;
        }
        writeln!(f, "- serial log: {}", self.serial_log.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not a unit test: boots QEMU for several minutes, as root. For tuning a hook without
    /// the whole `cargo xtask bench`: `RASP_AGENT_BIN=... cargo test -p xtask --
    /// --ignored vm_hook --nocapture` (binaries default to target/release).
    #[test]
    #[ignore = "boots a QEMU guest for minutes; run by hand as root"]
    fn vm_hook_instructions() {
        let ws = Workspace::locate();
        let bin = |var: &str, name: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| ws.host_target_dir().join("release").join(name))
        };
        let agent = bin("RASP_AGENT_BIN", "rasp-agent");
        let workload = bin("RASP_WORKLOAD_BIN", "rasp-workload");
        let rounds = std::env::var("RASP_VM_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(2);
        match hook_bench(&ws, &agent, &workload, rounds, 1.0) {
            Ok(bench) => println!("{bench}"),
            Err(e) => panic!("hook bench: {e:#}"),
        }
    }

    fn bench(results: &[&str]) -> VmHookBench {
        let run = GuestRun {
            kernel_release: "6.12.117+deb12-cloud-amd64".into(),
            lsms: "bpf".into(),
            boot: Duration::from_secs(4),
            elapsed: Duration::from_secs(60),
            results: Vec::new(),
            script_status: 0,
            serial_log: PathBuf::from("x.log"),
        };
        let mut bench = VmHookBench::empty(&run, 2, 2.0);
        for line in results {
            bench.take(line);
        }
        bench
    }

    #[test]
    fn result_lines_become_instructions_failures_and_status() {
        let bench = bench(&[
            r#"rate none 1 open-unwatched {"workload":"open","ops":200,"seconds":2.0,"rate":50000.0}"#,
            r#"rate none 2 open-unwatched {"workload":"open","ops":200,"seconds":2.0,"rate":50005.0}"#,
            r#"rate tracepoint_floor 1 open-unwatched {"workload":"open","rate":25000.0}"#,
            r#"rate agent 1 exec {"workload":"exec","rate":100.0}"#,
            r#"fail lsm_floor 1 - exited before attaching:  error: lsm refused "#,
            r#"fail agent 2 libpq workload failed: cannot load libpq.so.5"#,
            r#"agent_status {"programs":[{"name":"a","hook":"lsm/file_open","state":"attached","error":null}],"events":{"file_open":{"received":3,"dropped":0}},"uprobe_targets":[{"kind":"libpq","path":"/lib/libpq.so.5","attached":[{},{}]}]}"#,
        ]);
        assert_eq!(
            bench.rates("open-unwatched", HookConfig::NoPrograms),
            &[50000.0, 50005.0]
        );
        // 250 M instructions a guest second (shift 2): 5000 at 50000 ops/s.
        let base = bench
            .instructions_per_op("open-unwatched", HookConfig::NoPrograms)
            .unwrap();
        assert!((base - 4999.75).abs() < 0.01, "{base}");
        let added = bench
            .added("open-unwatched", HookConfig::TracepointFloor)
            .unwrap();
        assert!((added - 5000.25).abs() < 0.01, "{added}");
        // The two rounds differ by 0.01%.
        let agree = bench
            .agreement("open-unwatched", HookConfig::NoPrograms)
            .unwrap();
        assert!((agree - 1e-4).abs() < 1e-6, "{agree}");
        assert_eq!(bench.agreement("exec", HookConfig::Agent), None);
        assert_eq!(bench.added("exec", HookConfig::Agent), None);
        assert_eq!(bench.failures.len(), 2);
        assert_eq!(bench.failures[0].config, HookConfig::LsmFloor);
        assert_eq!(bench.failures[0].op, None);
        assert_eq!(
            bench.failures[0].message,
            "exited before attaching: error: lsm refused"
        );
        assert_eq!(bench.failures[1].op, Some("libpq"));
        let shown = bench.to_string();
        assert!(shown.contains("lsm/file_open=attached"), "{shown}");
        assert!(shown.contains("file_open=3"), "{shown}");
        assert!(shown.contains("libpq /lib/libpq.so.5: 2 probes"), "{shown}");
        assert!(shown.contains("| **open-unwatched** —"), "{shown}");
        assert!(shown.contains("+5000 (+100.0%)"), "{shown}");
        assert!(
            shown.contains("| open-unwatched | 5000 / 5000 (0.01%) | 10000 |"),
            "{shown}"
        );
    }

    #[test]
    fn script_rotates_configurations_and_operations_each_round() {
        let script = script(2, 1.0, "/lib/x86_64-linux-gnu/libc.so.6");
        let order: Vec<&str> = script
            .lines()
            .filter(|line| line.starts_with("run_config "))
            .collect();
        assert_eq!(
            order,
            [
                "run_config none 1",
                "run_config tracepoint_floor 1",
                "run_config lsm_floor 1",
                "run_config agent 1",
                "run_config tracepoint_floor 2",
                "run_config lsm_floor 2",
                "run_config agent 2",
                "run_config none 2",
            ]
        );
        assert!(script.starts_with("S=1\n"));
        assert!(
            script.contains("        mmap) set -- mmap --path /lib/x86_64-linux-gnu/libc.so.6 ;;")
        );
        assert!(script.contains(&format!(
            "libpq) set -- libpq --warmup {LIBPQ_WARMUP_SECONDS} ;;"
        )));
        assert!(script.contains("--metrics 127.0.0.1:0"));
    }

    #[test]
    fn json_number_reads_plain_and_exponent_forms() {
        assert_eq!(
            json_number(r#"{"rate":1234.5,"ops":3}"#, "rate"),
            Some(1234.5)
        );
        assert_eq!(json_number(r#"{"rate": 1e3}"#, "rate"), Some(1000.0));
        assert_eq!(json_number(r#"{"ops":3}"#, "rate"), None);
    }
}
