//! What an `open()` costs under each way of watching it, measured in a BPF-LSM guest
//! because the host refuses LSM programs: nothing attached, the tracepoint floor (empty
//! programs on the agent's hooks, `sys_exit_openat` among them, which puts every syscall
//! on the tracing slow path), the LSM floor (an empty `lsm/file_open` instead), and the
//! real agent. One boot, configurations interleaved round by round so a noisy host shifts
//! them all alike; under software emulation absolute rates mean little, ratios do.

use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

use super::guest::{Guest, GuestClock, GuestRun};
use crate::command::human;
use crate::workspace::Workspace;

/// A file nothing in the default policies watches: the agent's in-kernel pre-filter drops
/// its opens, so what is measured is the hook, not the event path.
const PROBE_FILE: &str = "/etc/hostname";

/// How long a floor or the agent gets to attach in the guest; the verifier runs slowly
/// under emulation (the agent needs ~10 s on an idle host).
const ATTACH_WAIT: Duration = Duration::from_secs(120);

/// Instruction counting, 4 ns an instruction (250 M a guest second, about what TCG
/// emulates per host second here): the same run gives the same rate to four digits,
/// however busy the host is, where host time wandered ±20% between rounds. Rates are then
/// emulated-instruction budgets, so ratios say how many more instructions a hook adds.
const CLOCK: GuestClock = GuestClock::Instructions { shift: 2 };

/// The ways an open is watched, in the order of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenConfig {
    NoPrograms,
    TracepointFloor,
    LsmFloor,
    Agent,
}

impl OpenConfig {
    pub const ALL: [OpenConfig; 4] = [
        OpenConfig::NoPrograms,
        OpenConfig::TracepointFloor,
        OpenConfig::LsmFloor,
        OpenConfig::Agent,
    ];

    /// The configuration's name in the guest script and its result lines.
    pub fn id(self) -> &'static str {
        match self {
            OpenConfig::NoPrograms => "none",
            OpenConfig::TracepointFloor => "tracepoint_floor",
            OpenConfig::LsmFloor => "lsm_floor",
            OpenConfig::Agent => "agent",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            OpenConfig::NoPrograms => "no programs",
            OpenConfig::TracepointFloor => "tracepoint floor",
            OpenConfig::LsmFloor => "LSM floor (file_open)",
            OpenConfig::Agent => "agent (default policies)",
        }
    }

    fn from_id(id: &str) -> Option<OpenConfig> {
        OpenConfig::ALL.into_iter().find(|config| config.id() == id)
    }
}

/// The rates one configuration reached, one per round it ran.
pub struct ConfigRates {
    pub config: OpenConfig,
    /// open+close pairs per second (guest wall clock).
    pub rates: Vec<f64>,
}

/// A round a configuration could not run (could not attach, workload failed).
pub struct ConfigFailure {
    pub config: OpenConfig,
    pub round: usize,
    pub message: String,
}

pub struct VmOpenBench {
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
    /// Every configuration, in `OpenConfig::ALL` order, with the rates it reached.
    pub configs: Vec<ConfigRates>,
    pub failures: Vec<ConfigFailure>,
    /// The line each floor printed once attached (which programs on which hooks).
    pub floor_reports: Vec<(OpenConfig, String)>,
    /// `rasp-agent status --json` after the agent's first round: its programs as loaded
    /// in the guest and the events its pre-filters let through.
    pub agent_status: Option<String>,
    /// What the guest said about itself (BPF JIT on, CPU model).
    pub notes: Vec<String>,
    pub serial_log: PathBuf,
}

impl VmOpenBench {
    /// What one guest boot is, before its result lines are taken in.
    fn empty(run: &GuestRun, rounds: usize, seconds: f64) -> VmOpenBench {
        VmOpenBench {
            kernel_release: run.kernel_release.clone(),
            lsms: run.lsms.clone(),
            boot: run.boot,
            elapsed: run.elapsed,
            rounds,
            seconds,
            clock: CLOCK,
            configs: OpenConfig::ALL
                .into_iter()
                .map(|config| ConfigRates {
                    config,
                    rates: Vec::new(),
                })
                .collect(),
            failures: Vec::new(),
            floor_reports: Vec::new(),
            agent_status: None,
            notes: Vec::new(),
            serial_log: run.serial_log.clone(),
        }
    }

    pub fn rates(&self, config: OpenConfig) -> &[f64] {
        self.configs
            .iter()
            .find(|rates| rates.config == config)
            .map_or(&[], |rates| &rates.rates)
    }

    pub fn median(&self, config: OpenConfig) -> Option<f64> {
        median(self.rates(config))
    }

    /// Median rate relative to the median with no programs: 1.0 is free, 0.5 halves it.
    pub fn ratio(&self, config: OpenConfig) -> Option<f64> {
        let base = self.median(OpenConfig::NoPrograms)?;
        let rate = self.median(config)?;
        (base > 0.0).then(|| rate / base)
    }

    /// Emulated instructions one open+close takes (median), when the guest clock counts
    /// instructions; `None` under host time.
    pub fn instructions_per_op(&self, config: OpenConfig) -> Option<f64> {
        let GuestClock::Instructions { shift } = self.clock else {
            return None;
        };
        let per_second = 1e9 / f64::from(1u32 << shift);
        let rate = self.median(config)?;
        (rate > 0.0).then(|| per_second / rate)
    }
}

/// Boot one guest with `agent` and `workload` (`rasp-workload`) and run `workload open`
/// for `seconds` under each configuration, `rounds` times, the order rotating each round.
/// A configuration that cannot attach is reported in `failures` and skipped afterwards;
/// the others still run.
pub fn open_bench(
    ws: &Workspace,
    agent: &Path,
    workload: &Path,
    rounds: usize,
    seconds: f64,
) -> Result<VmOpenBench> {
    if rounds == 0 || !seconds.is_finite() || seconds <= 0.0 {
        bail!("open_bench needs at least one round and a positive duration (got {rounds} rounds of {seconds} s)");
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
    let mut guest = Guest::new(ws, "open-bench")?;
    guest.set_clock(CLOCK);
    guest.add_binary(agent, "bin/rasp-agent")?;
    guest.add_binary(workload, "bin/rasp-workload")?;
    guest.add_file(PROBE_FILE, "guest\n");

    // Boot, then per round: each configuration's run, up to three attaches, stops.
    let per_round = OpenConfig::ALL.len() as f64 * (seconds + 15.0) + 3.0 * 40.0;
    let timeout = Duration::from_secs_f64(180.0 + ATTACH_WAIT.as_secs_f64() * 3.0)
        + Duration::from_secs_f64(per_round * rounds as f64);
    let run = guest.boot(&script(rounds, seconds), timeout)?;
    if run.script_status != 0 {
        bail!(
            "the guest's benchmark script failed (status {}); serial log: {}",
            run.script_status,
            run.serial_log.display()
        );
    }

    let mut bench = VmOpenBench::empty(&run, rounds, seconds);
    for line in &run.results {
        bench.take(line);
    }
    Ok(bench)
}

impl VmOpenBench {
    /// One result line of the guest script.
    fn take(&mut self, line: &str) {
        let mut words = line.splitn(4, ' ');
        let kind = words.next().unwrap_or_default();
        let config = words.next().and_then(OpenConfig::from_id);
        match (kind, config) {
            ("rate", Some(config)) => {
                let round = words
                    .next()
                    .and_then(|round| round.parse().ok())
                    .unwrap_or(0);
                let json = words.next().unwrap_or_default();
                match json_number(json, "rate") {
                    Some(rate) => {
                        if let Some(rates) = self.configs.iter_mut().find(|r| r.config == config) {
                            rates.rates.push(rate);
                        }
                    }
                    None => self.failures.push(ConfigFailure {
                        config,
                        round,
                        message: format!("the workload printed no rate: {json}"),
                    }),
                }
            }
            ("fail", Some(config)) => {
                let round = words
                    .next()
                    .and_then(|round| round.parse().ok())
                    .unwrap_or(0);
                self.failures.push(ConfigFailure {
                    config,
                    round,
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
                let rest: Vec<&str> = words.collect();
                self.floor_reports.push((config, rest.join(" ")));
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

/// The guest script: helpers, then `run_config CONFIG ROUND` lines, the order rotating by
/// one each round so no configuration always runs first (cold) or after the agent.
fn script(rounds: usize, seconds: f64) -> String {
    let mut script = format!(
        r#"S={seconds}
WAIT_TENTHS={wait}
SOCKET=/tmp/rasp/agent.sock
agent_status_reported=0
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

workload() {{
    if out=$(/bin/rasp-workload open --path {probe} --seconds $S 2>/tmp/workload.err); then
        result rate $1 $2 "$(echo "$out" | tail -n 1)"
    else
        result fail $1 $2 "workload failed: $(tail -n 5 /tmp/workload.err | oneline)"
    fi
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
        workload $cfg $round
        stop $pid
        return
    fi
    stop $pid
    case $ready in
        0) why="did not attach: $(head -n 1 /tmp/floor.out) $(tail -n 3 /tmp/floor.err | oneline)" ;;
        1) why="exited before attaching: $(head -n 1 /tmp/floor.out) $(tail -n 5 /tmp/floor.err | oneline)" ;;
        *) why="not attached after $((WAIT_TENTHS / 10)) s: $(tail -n 5 /tmp/floor.err | oneline)" ;;
    esac
    result fail $cfg $round "$why"
    eval "skip_$cfg=1"
}}

agent_ready() {{
    timeout 10 /bin/rasp-agent status --socket $SOCKET --json >/tmp/status.json 2>/tmp/status.err
}}

run_agent() {{
    round=$1
    rm -rf /tmp/rasp
    mkdir -p /tmp/rasp
    /bin/rasp-agent run --socket $SOCKET --state-dir /tmp/rasp/state >/dev/null 2>/tmp/agent.err &
    pid=$!
    wait_ready $pid agent_ready
    ready=$?
    if [ $ready = 0 ]; then
        workload agent $round
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
    result fail agent $round "$why"
    eval "skip_agent=1"
}}

run_config() {{
    [ "$(eval echo \${{skip_$1:-0}})" = 1 ] && return
    case $1 in
        none) workload none $2 ;;
        tracepoint_floor) run_floor tracepoint_floor $2 ;;
        lsm_floor) run_floor lsm_floor $2 --lsm ;;
        agent) run_agent $2 ;;
    esac
}}

"#,
        wait = ATTACH_WAIT.as_secs() * 10,
        probe = PROBE_FILE,
    );
    // A first run is slower than all later ones (the guest is still settling after boot):
    // one unmeasured run so round 1 is not the odd one out.
    let _ = writeln!(
        script,
        "/bin/rasp-workload open --path {PROBE_FILE} --seconds $S >/dev/null 2>&1"
    );
    let configs = OpenConfig::ALL;
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

fn median(rates: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = rates.iter().copied().filter(|r| r.is_finite()).collect();
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

impl fmt::Display for VmOpenBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "open+close of {PROBE_FILE} in a QEMU/TCG guest, kernel {} (lsm={}), booted in {}, \
             {} rounds of {} s, {} in all",
            self.kernel_release,
            self.lsms,
            human(self.boot),
            self.rounds,
            self.seconds,
            human(self.elapsed)
        )?;
        match self.clock {
            GuestClock::Host => writeln!(f, "guest clock: host time")?,
            GuestClock::Instructions { shift } => writeln!(
                f,
                "guest clock: instruction counting, 1 guest s = {:.0} M emulated instructions",
                1000.0 / f64::from(1u32 << shift)
            )?,
        }
        writeln!(
            f,
            "{:<26} {:>13} {:>7} {:>9} {:>7}  rates (ops/s)",
            "configuration", "median ops/s", "ratio", "insns/op", "added"
        )?;
        let base = self.instructions_per_op(OpenConfig::NoPrograms);
        let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_string());
        for config in OpenConfig::ALL {
            let median = or_dash(self.median(config).map(|m| format!("{m:.0}")));
            let ratio = or_dash(self.ratio(config).map(|r| format!("{r:.3}")));
            let insns = self.instructions_per_op(config);
            let added = or_dash(
                insns
                    .zip(base)
                    .map(|(insns, base)| format!("{:+.0}", insns - base)),
            );
            let insns = or_dash(insns.map(|i| format!("{i:.0}")));
            let listed: Vec<String> = self
                .rates(config)
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect();
            writeln!(
                f,
                "{:<26} {median:>13} {ratio:>7} {insns:>9} {added:>7}  {}",
                config.label(),
                listed.join(" ")
            )?;
        }
        for (config, report) in &self.floor_reports {
            writeln!(f, "{}: {report}", config.label())?;
        }
        if let Some(status) = &self.agent_status {
            let file_opens = status
                .find("\"file_open\":")
                .and_then(|at| json_number(&status[at..], "received"));
            writeln!(
                f,
                "agent programs in the guest: {}; file_open events received: {}",
                program_states(status).join(" "),
                file_opens.map_or("?".to_string(), |n| format!("{n:.0}"))
            )?;
        }
        for note in &self.notes {
            writeln!(f, "guest: {note}")?;
        }
        for failure in &self.failures {
            writeln!(
                f,
                "failed: {} (round {}): {}",
                failure.config.label(),
                failure.round,
                failure.message
            )?;
        }
        write!(f, "serial log: {}", self.serial_log.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not a unit test: boots QEMU for ~3.5 min, as root. For tuning the agent's open()
    /// program without the whole `cargo xtask bench`: `RASP_AGENT_BIN=... cargo test -p
    /// xtask -- --ignored vm_open --nocapture` (binaries default to target/release).
    #[test]
    #[ignore = "boots a QEMU guest for minutes; run by hand as root"]
    fn vm_open_instructions() {
        let ws = Workspace::locate();
        let bin = |var: &str, name: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| ws.host_target_dir().join("release").join(name))
        };
        let agent = bin("RASP_AGENT_BIN", "rasp-agent");
        let workload = bin("RASP_WORKLOAD_BIN", "rasp-workload");
        match open_bench(&ws, &agent, &workload, 3, 2.0) {
            Ok(bench) => println!("{bench}"),
            Err(e) => panic!("open bench: {e:#}"),
        }
    }

    fn bench(results: &[&str]) -> VmOpenBench {
        let run = GuestRun {
            kernel_release: "6.12.117+deb12-cloud-amd64".into(),
            lsms: "bpf".into(),
            boot: Duration::from_secs(4),
            elapsed: Duration::from_secs(60),
            results: Vec::new(),
            script_status: 0,
            serial_log: PathBuf::from("x.log"),
        };
        let mut bench = VmOpenBench::empty(&run, 2, 2.0);
        for line in results {
            bench.take(line);
        }
        bench
    }

    #[test]
    fn result_lines_become_rates_failures_and_ratios() {
        let bench = bench(&[
            r#"rate none 1 {"workload":"open","ops":200,"seconds":2.0,"rate":100.0}"#,
            r#"rate none 2 {"workload":"open","ops":200,"seconds":2.0,"rate":120.0}"#,
            r#"rate tracepoint_floor 1 {"workload":"open","rate":55.0}"#,
            r#"fail lsm_floor 1 exited before attaching:  error: lsm refused "#,
            r#"agent_status {"programs":[{"name":"a","hook":"lsm/file_open","state":"attached","error":null}],"events":{"file_open":{"received":3,"dropped":0}}}"#,
        ]);
        assert_eq!(bench.rates(OpenConfig::NoPrograms), &[100.0, 120.0]);
        assert_eq!(bench.median(OpenConfig::NoPrograms), Some(110.0));
        assert_eq!(bench.ratio(OpenConfig::TracepointFloor), Some(0.5));
        assert_eq!(bench.ratio(OpenConfig::LsmFloor), None);
        // 250 M instructions a guest second (shift 2) at 110 ops/s.
        let insns = bench.instructions_per_op(OpenConfig::NoPrograms).unwrap();
        assert!((insns - 250e6 / 110.0).abs() < 1.0, "{insns}");
        assert_eq!(bench.failures.len(), 1);
        assert_eq!(bench.failures[0].config, OpenConfig::LsmFloor);
        assert_eq!(
            bench.failures[0].message,
            "exited before attaching: error: lsm refused"
        );
        let shown = bench.to_string();
        assert!(shown.contains("lsm/file_open=attached"), "{shown}");
        assert!(shown.contains("file_open events received: 3"), "{shown}");
    }

    #[test]
    fn script_rotates_the_order_each_round() {
        let script = script(2, 2.0);
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
        assert!(script.starts_with("S=2\n"));
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
