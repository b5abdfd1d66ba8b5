//! The agent's userspace cost per event, two ways, both off the kernel: `rasp-replay` (the
//! agent's pipeline stages fed records built as the eBPF programs build them) under
//! `valgrind --tool=callgrind`, counting only the measured events — a deterministic
//! instruction budget per event kind — and natively, round after round, for the host time
//! an event takes and so the events a second one core of pipeline drains. The same counts
//! with 1k, 10k and 50k live processes in the table say whether per-event cost is flat in
//! the number of processes.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::command;

/// Measured events of the two callgrind runs whose difference is the per-event count: the
/// difference leaves out what happens once (the first batch before a fold window opens,
/// a query shape judged for the first time, the cgroup path cached).
pub const FEW: u32 = 2000;
pub const MANY: u32 = 6000;
/// Events per native run: long enough (tens of ms) that a clock read is nothing.
pub const NATIVE_EVENTS: u32 = 20_000;
/// Live processes for the population scaling (the defaults' table holds 65536).
pub const POPULATIONS: [u32; 3] = [1_000, 10_000, 50_000];
/// The kinds the population scaling counts.
const SCALING_KINDS: [&str; 3] = ["exec", "fork", "open-folded"];

/// One kind of event, and the issue-15 budget it is held to on the host.
pub struct Kind {
    pub key: &'static str,
    pub about: &'static str,
    /// Host time a single event may take in the agent's userspace (µs).
    pub target_us: Option<f64>,
}

pub const KINDS: [Kind; 8] = [
    Kind {
        key: "exec",
        about: "execve of a common tool (git, ls, python3, grep, curl) by a live process; no rule matches",
        target_us: Some(15.0),
    },
    Kind {
        key: "fork",
        about: "a new child of a live process",
        target_us: Some(1.0),
    },
    Kind {
        key: "exit",
        about: "the exit of a child forked before",
        target_us: Some(1.0),
    },
    Kind {
        key: "open-unmatched",
        about: "read-only open of /etc/hosts; no rule matches",
        target_us: Some(1.0),
    },
    Kind {
        key: "open-folded",
        about: "read of /etc/shadow by one process: read-shadow-file matches, the detection folds",
        target_us: Some(1.5),
    },
    Kind {
        key: "library-load",
        about: "executable map of libssl.so.3; no rule matches",
        target_us: Some(1.0),
    },
    Kind {
        key: "connect",
        about: "TCP connect to 10.1.2.3:443; no rule matches",
        target_us: Some(1.0),
    },
    Kind {
        key: "sql-query",
        about: "PQsendQuery of a benign query, one shape with changing literals (SQL judge, cache hit, no match)",
        target_us: None,
    },
];

/// What one `rasp-replay` run printed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReplayLine {
    pub events: u64,
    pub rules: u64,
    pub matches: u64,
    pub folded: u64,
    pub decode_errors: u64,
    pub ns_per_event: f64,
}

pub fn parse_line(line: &str) -> Result<ReplayLine> {
    let value: Value = serde_json::from_str(line.trim()).context("not JSON")?;
    let int = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_u64)
            .with_context(|| format!("no `{key}`"))
    };
    Ok(ReplayLine {
        events: int("events")?,
        rules: int("rules")?,
        matches: int("matches")?,
        folded: int("folded")?,
        decode_errors: int("decode_errors")?,
        ns_per_event: value
            .get("ns_per_event")
            .and_then(Value::as_f64)
            .context("no `ns_per_event`")?,
    })
}

/// One kind's measurements.
pub struct KindCost {
    pub kind: &'static Kind,
    /// Callgrind: instructions per event, marginal (MANY − FEW runs), from two
    /// independent pairs of runs (they agree when the count is deterministic).
    pub instructions: [f64; 2],
    /// What the MANY run reported (matches and folds among its events).
    pub line: ReplayLine,
    /// Native ns per event, one per round.
    pub native_ns: Vec<f64>,
}

impl KindCost {
    pub fn instructions(&self) -> f64 {
        (self.instructions[0] + self.instructions[1]) / 2.0
    }

    /// |a − b| / mean of the two independent counts.
    pub fn agreement(&self) -> f64 {
        let [a, b] = self.instructions;
        if a + b == 0.0 {
            return 0.0;
        }
        (a - b).abs() / ((a + b) / 2.0)
    }
}

/// Instructions per event of a kind with a given number of live processes.
pub struct PopulationCost {
    pub kind: &'static str,
    pub population: u32,
    pub instructions: f64,
}

pub struct UserspaceReport {
    pub valgrind: String,
    pub rules: u64,
    pub kinds: Vec<KindCost>,
    pub populations: Vec<PopulationCost>,
    pub notes: Vec<String>,
}

pub fn run(replay: &Path, rounds: usize) -> Result<UserspaceReport> {
    let valgrind = command::find_program("valgrind", &command::tool_path(&[]))
        .context("valgrind not found: apt-get install -y valgrind")?;
    let version = command::capture(Command::new(&valgrind).arg("--version"))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let scratch = std::env::temp_dir().join(format!("rasp-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let counter = Callgrind {
        valgrind: &valgrind,
        replay,
        out: &scratch,
    };
    let mut kinds = Vec::new();
    let mut notes = Vec::new();
    let mut rules = 0;
    for kind in &KINDS {
        eprintln!("bench: callgrind + native replay of {}", kind.key);
        let population = 1_000;
        let first = counter.per_event(kind.key, population)?;
        let second = counter.per_event(kind.key, population)?;
        rules = first.1.rules;
        let mut native_ns = Vec::new();
        for _ in 0..rounds {
            let line = native(replay, kind.key, NATIVE_EVENTS)?;
            native_ns.push(line.ns_per_event);
        }
        if first.1.decode_errors > 0 {
            notes.push(format!(
                "{}: {} records failed to decode",
                kind.key, first.1.decode_errors
            ));
        }
        kinds.push(KindCost {
            kind,
            instructions: [first.0, second.0],
            line: first.1,
            native_ns,
        });
    }
    let mut populations = Vec::new();
    for population in POPULATIONS {
        for kind in SCALING_KINDS {
            eprintln!("bench: callgrind replay of {kind} with {population} live processes");
            let (instructions, _) = counter.per_event(kind, population)?;
            populations.push(PopulationCost {
                kind,
                population,
                instructions,
            });
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(UserspaceReport {
        valgrind: version,
        rules,
        kinds,
        populations,
        notes,
    })
}

struct Callgrind<'a> {
    valgrind: &'a Path,
    replay: &'a Path,
    out: &'a Path,
}

impl Callgrind<'_> {
    /// Marginal instructions per event of `kind` (the MANY run minus the FEW run, over the
    /// difference in events), and what the MANY run reported.
    fn per_event(&self, kind: &str, population: u32) -> Result<(f64, ReplayLine)> {
        let (few, _) = self.count(kind, FEW, population)?;
        let (many, line) = self.count(kind, MANY, population)?;
        if many <= few {
            bail!("callgrind counted {many} instructions for {MANY} {kind} events but {few} for {FEW}: the measured phase was not found (demangling?)");
        }
        Ok(((many - few) as f64 / f64::from(MANY - FEW), line))
    }

    /// Instructions in `measured_phase` (and what it calls) for `count` events.
    fn count(&self, kind: &str, count: u32, population: u32) -> Result<(u64, ReplayLine)> {
        let out = self
            .out
            .join(format!("{kind}-{count}-{population}.callgrind"));
        let mut cmd = Command::new(self.valgrind);
        cmd.args([
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=*measured_phase*",
        ])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(self.replay)
        .args(replay_args(kind, count, population));
        let line = run_replay(&mut cmd)?;
        let text =
            std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
        let total = summary_instructions(&text)
            .with_context(|| format!("no `summary:` line in {}", out.display()))?;
        Ok((total, line))
    }
}

fn replay_args(kind: &str, count: u32, population: u32) -> Vec<String> {
    vec![
        "--kind".into(),
        kind.into(),
        "--count".into(),
        count.to_string(),
        "--population".into(),
        population.to_string(),
    ]
}

/// One native run.
fn native(replay: &Path, kind: &str, count: u32) -> Result<ReplayLine> {
    let mut cmd = Command::new(replay);
    cmd.args(replay_args(kind, count, 1_000));
    run_replay(&mut cmd)
}

/// Runs `rasp-replay` (or valgrind running it) and reads its one JSON line.
fn run_replay(cmd: &mut Command) -> Result<ReplayLine> {
    let output = command::capture(cmd)?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            command::display(cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse_line(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("{} printed no result line", command::display(cmd)))
}

/// The `summary: N` line of a callgrind output file (events: Ir only).
fn summary_instructions(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("summary:"))
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_line_and_callgrind_summary() {
        let line = parse_line(r#"{"kind":"exec","events":6000,"population":1000,"rules":63,"matches":0,"folded":0,"decode_errors":0,"seconds":0.05,"ns_per_event":8100.5}"#).expect("valid");
        assert_eq!((line.events, line.rules, line.matches), (6000, 63, 0));
        assert_eq!(line.ns_per_event, 8100.5);
        assert!(parse_line(r#"{"kind":"exec"}"#).is_err());
        let out = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 122588577\ntotals: 122588577\n";
        assert_eq!(summary_instructions(out), Some(122_588_577));
        assert_eq!(summary_instructions("events: Ir\n"), None);
    }

    #[test]
    fn agreement_is_relative_to_the_mean() {
        let cost = KindCost {
            kind: &KINDS[0],
            instructions: [1000.0, 1001.0],
            line: ReplayLine::default(),
            native_ns: Vec::new(),
        };
        assert!((cost.agreement() - 1.0 / 1000.5).abs() < 1e-12);
        assert_eq!(cost.instructions(), 1000.5);
    }
}
