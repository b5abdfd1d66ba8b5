//! BENCHMARKS.md: the tables and every target marked met, not met or undecided (on a
//! paired-round interval), out of `Results`.

use std::fmt::Write as _;

use super::config::Config;
use super::drain::DrainReport;
use super::processes::ProcessReport;
use super::scaling::{self, ScalingReport};
use super::stats::{self, overhead, paired, paired_ratios, ByRound, Interval, Summary, CONFIDENCE};
use super::storm::{Latency, StormReport};
use super::userspace::UserspaceReport;
use super::{Results, Sample};

/// Issue 10's targets that are not per-workload ratios.
const MIN_DRAIN_EVENTS_PER_SEC: f64 = 1_000_000.0;
const MAX_DETECTION_P99_US: f64 = 5_000.0;
const MAX_IDLE_RSS_KIB: u64 = 64 * 1024;
/// Unwatched opens: the agent's cost over the floor at most this many times the floor's.
const MAX_COST_OVER_FLOOR: f64 = 1.5;

/// One target's line: what, the measurement, the verdict.
type Target = (String, String, Verdict);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    Met,
    NotMet,
    /// The paired-round interval straddles the threshold, or there were too few rounds for
    /// the interval to reach `CONFIDENCE`: this run cannot tell.
    Undecided {
        coverage: f64,
    },
    NotMeasured,
    /// Measured, but the measurement could not reach the threshold for a reason other
    /// than the agent (why, for the table).
    Inconclusive(&'static str),
}

impl From<Option<bool>> for Verdict {
    fn from(met: Option<bool>) -> Self {
        match met {
            Some(true) => Verdict::Met,
            Some(false) => Verdict::NotMet,
            None => Verdict::NotMeasured,
        }
    }
}

/// "At least `threshold`", decided on the interval of the median of `values` (paired
/// per-round quantities): the one rule for absolute targets and peer comparisons alike.
fn decide(values: &[f64], threshold: f64) -> (String, Verdict) {
    decide_by(values, |i| i.verdict(threshold, CONFIDENCE))
}

/// "At most `threshold`" (a cost budget), on the same interval.
fn decide_at_most(values: &[f64], threshold: f64) -> (String, Verdict) {
    decide_by(values, |i| i.verdict_at_most(threshold, CONFIDENCE))
}

fn decide_by(values: &[f64], verdict: impl Fn(&Interval) -> stats::Verdict) -> (String, Verdict) {
    let Some(i) = Interval::of_median(values, CONFIDENCE) else {
        return ("—".into(), Verdict::NotMeasured);
    };
    let verdict = match verdict(&i) {
        stats::Verdict::Met => Verdict::Met,
        stats::Verdict::NotMet => Verdict::NotMet,
        stats::Verdict::Undecided => Verdict::Undecided {
            coverage: i.coverage,
        },
    };
    (interval_text(&i), verdict)
}

fn interval_text(i: &Interval) -> String {
    format!(
        "{:.3} [{:.3}, {:.3}] (n={}, {:.0}%)",
        i.median,
        i.low,
        i.high,
        i.samples,
        i.coverage * 100.0
    )
}

pub fn render(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Regenerate with `{}` (as root; it installs what it needs, builds, and rewrites this file).\n",
        r.command_line
    );
    let _ = writeln!(out, "- when: {} (took {})", r.started, r.duration);
    let _ = writeln!(out, "- commit: {}", r.commit);
    let _ = writeln!(out, "- machine: {}", r.machine);
    let _ = writeln!(out, "- design: {}; each round starts every configuration in turn (order rotated per round) and runs every workload under it (order rotated per round too); ratios pair each sample with the no-agent sample of the same round (a round where a configuration failed to start is left out, not shifted), then the median over paired rounds with a rank-based interval.", r.args_summary);
    let _ = writeln!(out, "- peers as installed: {}", r.peer_versions);
    let _ = writeln!(out, "- configurations, exactly as started:");
    for c in Config::ALL {
        let what = match c {
            Config::None => "the baseline",
            Config::Floor => "the agent's very hooks (sched_process_exec/fork/exit and io_uring_submit_req BTF tracepoints; sys_exit_open*/sys_enter_mmap/sys_enter_connect; issue 19's sys_exit_* of the chmod/xattr/unlink/rename/truncate/utimes/link, ptrace/process_vm, setns/unshare, mount, module, bpf and socket families) with empty programs",
            Config::Bpftrace => "the agent's exec/fork/exit, open, mmap and connect probes (not issue 19's file-change, namespace, ptrace, mount, module, bpf and io_uring hooks), every event printed (no in-kernel filter)",
            Config::BpftraceFiltered => "the same probes, sending only what the default policies could match (exec/fork/exit all; watched credential reads; writes under /etc and the system trees; tmp/shm library maps; metadata-address connects), decided in the kernel",
            Config::LibbpfTools => "the minimal CO-RE tracers (every exec and every open printed, ring/perf buffer, no policy)",
            Config::Agent => "on its built-in default policies (audit mode)",
        };
        let _ = writeln!(
            out,
            "  - **{}**: `{}` — {what}",
            c.label(),
            c.command_line()
        );
    }
    let _ = writeln!(out);

    let mut targets: Vec<Target> = Vec::new();
    throughput_table(&mut out, r, &mut targets);
    workload_cpu_table(&mut out, r);
    cost_table(&mut out, r);
    if let Some(storm) = &r.storm {
        storm_section(&mut out, storm, &mut targets);
    }

    if let Some(drain) = &r.drain {
        drain_section(&mut out, drain, &mut targets);
    }

    if let Some(scaling) = &r.scaling {
        scaling_section(&mut out, scaling, &mut targets);
    }

    if let Some(processes) = &r.processes {
        processes_section(&mut out, processes, &mut targets);
    }

    if let Some(userspace) = &r.userspace {
        userspace_section(&mut out, userspace, &mut targets);
    }

    if let Some(vm) = &r.vm {
        let _ = writeln!(
            out,
            "## Kernel budgets per hook: instructions per operation in a BPF-LSM guest\n"
        );
        let _ = writeln!(out, "The deterministic regression budget for the kernel side. The host refuses LSM programs, so this runs in QEMU (software emulation, one vCPU) with `lsm=…,bpf`: each operation under no programs, the tracepoint floor (`rasp-agent floor`: empty programs on the agent's very hooks), the LSM floor (`rasp-agent floor --lsm`: file_open, mmap_file, socket_connect, bprm_check_security instead of the syscall tracepoints; it has no counterpart of issue 19's syscall tracepoints, so on the chmod, file-change, namespace and vm-read rows it runs only the sched and io_uring programs) and the agent on its default policies (which uses the syscall tracepoints; its LSM program is only a capability probe). \"added\" is instructions per operation over no programs (median over rounds).\n");
        let _ = writeln!(out, "{vm}");
    }

    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "Each measured value is the median of per-round paired values with a rank-based (sign-test) interval for it: [low, high] (rounds, coverage). A target is met when the whole interval clears it, not met when the whole interval misses it, undecided otherwise or when the rounds are too few for {:.0}% coverage (5 rounds at least).\n", CONFIDENCE * 100.0);
    let _ = writeln!(out, "| target | measured | |");
    let _ = writeln!(out, "|---|---|---|");
    for (what, measured, met) in &targets {
        let mark = match met {
            Verdict::Met => "met",
            Verdict::NotMet => "**not met**",
            Verdict::Undecided { coverage } if *coverage < CONFIDENCE => {
                "undecided: too few rounds for a 90% interval"
            }
            Verdict::Undecided { .. } => "undecided: the interval straddles the target",
            Verdict::NotMeasured => "not measured",
            Verdict::Inconclusive(why) => why,
        };
        let _ = writeln!(out, "| {what} | {measured} | {mark} |");
    }
    let _ = writeln!(out);

    if !r.notes.is_empty() {
        let _ = writeln!(out, "## Notes from this run\n");
        for note in &r.notes {
            let _ = writeln!(out, "- {}", note.replace('\n', " "));
        }
        let _ = writeln!(out);
    }
    out
}

fn samples<'a>(r: &'a Results, workload: &'static str, config: Config) -> &'a [Sample] {
    r.samples
        .get(&(workload, config.key()))
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `f` of each of a configuration's samples, keyed by round (`None` leaves the round out).
fn by_round(
    r: &Results,
    workload: &'static str,
    config: Config,
    f: impl Fn(&Sample) -> Option<f64>,
) -> ByRound {
    samples(r, workload, config)
        .iter()
        .filter_map(|s| f(s).map(|v| (s.round, v)))
        .collect()
}

fn rates(r: &Results, workload: &'static str, config: Config) -> ByRound {
    by_round(r, workload, config, |s| Some(s.rate))
}

/// Per-round throughput of `config` over the same round's no-agent run.
fn ratios(r: &Results, workload: &'static str, config: Config) -> Vec<f64> {
    paired_ratios(
        &rates(r, workload, config),
        &rates(r, workload, Config::None),
    )
}

/// A ratio's table cell: median over paired rounds and its interval.
fn ratio_cell(values: &[f64]) -> String {
    Interval::of_median(values, CONFIDENCE).map_or("—".into(), |i| {
        format!("{:.3} [{:.3}, {:.3}]", i.median, i.low, i.high)
    })
}

fn throughput_table(out: &mut String, r: &Results, targets: &mut Vec<Target>) {
    let _ = writeln!(
        out,
        "## Throughput: ratio to no agent (median over paired rounds [{:.0}% interval])\n",
        CONFIDENCE * 100.0
    );
    let _ = writeln!(out, "The no-agent column is the rate (median, spread = (max − min)/median); the others are the per-round ratio to that round's no-agent run.\n");
    let traced = &Config::ALL[1..];
    let mut header = String::from("| workload | no agent |");
    for c in traced {
        let _ = write!(header, " {} |", c.label());
    }
    let _ = writeln!(out, "{header} target |");
    let _ = writeln!(out, "|---|---|{}---|", "---|".repeat(traced.len()));
    for w in &r.workloads {
        let base = Summary::of(
            &rates(r, w.key, Config::None)
                .into_values()
                .collect::<Vec<_>>(),
        );
        let base_cell = base.map_or("—".into(), |s| {
            format!("{:.0} {} ±{:.1}%", s.median, w.unit, s.spread_pct())
        });
        let mut row = format!("| {} — {} | {} |", w.key, w.about, base_cell);
        for c in traced {
            let _ = write!(row, " {} |", ratio_cell(&ratios(r, w.key, *c)));
        }
        let target = w.target.map_or("—".into(), |t| format!("≥ {t:.2}"));
        let _ = writeln!(out, "{row} {target} |");

        let agent = ratios(r, w.key, Config::Agent);
        if let Some(t) = w.target {
            let (measured, verdict) = decide(&agent, t);
            targets.push((
                format!("{}: rasp-agent ≥ {t:.2} of no agent", w.key),
                measured,
                verdict,
            ));
        }
        // Against a peer: the agent's throughput over the peer's, round by round (≥ 1 =
        // the agent costs the workload no more than the peer does).
        for peer in Config::PEERS {
            let head_to_head =
                paired_ratios(&rates(r, w.key, Config::Agent), &rates(r, w.key, peer));
            let (measured, verdict) = decide(&head_to_head, 1.0);
            targets.push((
                format!(
                    "{}: rasp-agent no costlier than the {} (agent ÷ peer throughput ≥ 1)",
                    w.key,
                    peer.label()
                ),
                measured,
                verdict,
            ));
        }
        if w.key.starts_with("open-unwatched") {
            targets.push(cost_over_floor(r, w.key));
        }
    }
    let _ = writeln!(out);
}

/// Unwatched opens: the agent's cost beyond the floor's at most `MAX_COST_OVER_FLOOR` times
/// the floor's own, i.e. per round `(1 + MAX) · floor overhead − agent overhead ≥ 0`.
fn cost_over_floor(r: &Results, key: &'static str) -> Target {
    let none = rates(r, key, Config::None);
    let floor_overhead: ByRound = by_round(r, key, Config::Floor, |s| {
        none.get(&s.round)
            .filter(|b| **b > 0.0)
            .map(|b| overhead(s.rate / b))
    });
    let agent_overhead: ByRound = by_round(r, key, Config::Agent, |s| {
        none.get(&s.round)
            .filter(|b| **b > 0.0)
            .map(|b| overhead(s.rate / b))
    });
    let slack = paired(&floor_overhead, &agent_overhead, |f, a| {
        Some((1.0 + MAX_COST_OVER_FLOOR) * f - a)
    });
    let (interval, verdict) = decide(&slack, 0.0);
    let median = |m: &ByRound| {
        Summary::of(&m.values().copied().collect::<Vec<_>>()).map(|s| s.median * 100.0)
    };
    let measured = match (median(&floor_overhead), median(&agent_overhead)) {
        (Some(f), Some(a)) => format!(
            "floor adds {f:.1}% per open, the agent {a:.1}% in all; slack (1+{MAX_COST_OVER_FLOOR})·floor − agent: {interval}"
        ),
        _ => "—".into(),
    };
    (
        format!("{key}: agent's cost over the floor ≤ {MAX_COST_OVER_FLOOR}× the floor's"),
        measured,
        verdict,
    )
}

/// The workload's own CPU per operation, as a ratio no-agent / configuration (1.0 = free,
/// like the throughput ratios): what the hooks add to each operation, less sensitive than
/// throughput to the other tenants of a shared machine.
fn workload_cpu_table(out: &mut String, r: &Results) {
    let per_op = |key: &'static str, config: Config| -> ByRound {
        by_round(r, key, config, |s| s.workload_cpu_us_per_op)
    };
    let rows: Vec<_> = r
        .workloads
        .iter()
        .filter(|w| !per_op(w.key, Config::None).is_empty())
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Workload CPU per operation: no agent ÷ configuration (median over paired rounds [interval])\n"
    );
    let _ = writeln!(out, "The workload's own user+system time per operation (children included), so hook costs charged to it show even when the machine's other tenants move the throughput. 1.000 = nothing added.\n");
    let traced = &Config::ALL[1..];
    let mut header = String::from("| workload | no agent |");
    for c in traced {
        let _ = write!(header, " {} |", c.label());
    }
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "|---|---|{}", "---|".repeat(traced.len()));
    for w in rows {
        let base = per_op(w.key, Config::None);
        let base_median = Summary::of(&base.values().copied().collect::<Vec<_>>());
        let mut row = format!(
            "| {} | {} |",
            w.key,
            base_median.map_or("—".into(), |s| format!("{:.2} µs/op", s.median))
        );
        for c in traced {
            // Inverted so that, like throughput, lower means costlier.
            let _ = write!(
                row,
                " {} |",
                ratio_cell(&paired_ratios(&base, &per_op(w.key, *c)))
            );
        }
        let _ = writeln!(out, "{row}");
    }
    let _ = writeln!(out);
}

fn cost_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "## What the tracer itself spends (median over rounds)\n"
    );
    let _ = writeln!(out, "CPU is the tracer's user+system time during the workload (% of one core; µs per workload operation), summed over its processes; peak RSS is their VmHWM, reset before each workload. Kernel-side program time is charged to the workload and shows in the ratios above.\n");
    let mut header = String::from("| workload | rasp-agent CPU | rasp-agent peak RSS | drops |");
    for peer in Config::PEERS {
        let _ = write!(header, " {} CPU; peak RSS |", peer.label());
    }
    let _ = writeln!(out, "{header}");
    let _ = writeln!(
        out,
        "|---|---|---|---|{}",
        "---|".repeat(Config::PEERS.len())
    );
    for w in &r.workloads {
        let agent = samples(r, w.key, Config::Agent);
        let drops: u64 = agent.iter().filter_map(|s| s.dropped).sum();
        let mut row = format!(
            "| {} | {} | {} | {} |",
            w.key,
            cpu_cell(agent),
            rss_cell(agent),
            drops
        );
        for peer in Config::PEERS {
            let peer = samples(r, w.key, peer);
            let _ = write!(row, " {}; {} |", cpu_cell(peer), rss_cell(peer));
        }
        let _ = writeln!(out, "{row}");
    }
    let _ = writeln!(out);
}

fn cpu_cell(samples: &[Sample]) -> String {
    let pct: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.cpu_secs.map(|c| c / s.wall_secs * 100.0))
        .collect();
    let per_op: Vec<f64> = samples
        .iter()
        .filter(|s| s.ops > 0)
        .filter_map(|s| s.cpu_secs.map(|c| c * 1e6 / s.ops as f64))
        .collect();
    match (Summary::of(&pct), Summary::of(&per_op)) {
        (Some(p), Some(o)) => format!("{:.1}% ({:.2} µs/op)", p.median, o.median),
        (Some(p), None) => format!("{:.1}%", p.median),
        _ => "—".into(),
    }
}

fn rss_cell(samples: &[Sample]) -> String {
    let peaks: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.peak_rss_kib.map(|k| k as f64))
        .collect();
    Summary::of(&peaks).map_or("—".into(), |s| format!("{:.1} MiB", s.max / 1024.0))
}

fn latency_cell(l: Option<Latency>) -> String {
    l.filter(|l| l.count > 0).map_or("—".into(), |l| {
        format!(
            "{} / {} / {} (n={})",
            us(l.p50_us),
            us(l.p99_us),
            us(l.max_us),
            l.count
        )
    })
}

fn us(v: f64) -> String {
    if v.is_infinite() {
        "> 10 s".into()
    } else if v >= 1000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn storm_section(out: &mut String, storm: &StormReport, targets: &mut Vec<Target>) {
    let _ = writeln!(out, "## Event storm: what the agent drains\n");
    let _ = writeln!(out, "`rasp-workload storm` paces open+close from one thread at each rate until it can't keep up, then runs unpaced with one thread and with two (then the generator competes with the agent for both cores); drained = records the agent received per second; latency = kernel timestamp to userspace (events) and to the decision (detections), p50 / p99 / max over the step, bucket upper bounds.\n");
    let mut best_drain: Option<f64> = None;
    let mut worst_p99: Option<f64> = None;
    for series in &storm.series {
        let _ = writeln!(out, "### {} — {}\n", series.title, series.about);
        let _ = writeln!(
            out,
            "| paced at | generated | drained | dropped | agent CPU/event | event latency | detection latency |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for s in &series.steps {
            let _ = writeln!(
                out,
                "| {} | {:.0}/s | {:.0}/s | {} ({:.2}%) | {} | {} | {} |",
                s.pacing(),
                s.generated,
                s.drained,
                s.dropped,
                s.drop_pct(),
                s.cpu_us_per_event().map_or("—".into(), |c| format!(
                    "{c:.2} µs ({:.0}% of a core)",
                    s.agent_cpu_pct()
                )),
                latency_cell(s.events_latency),
                latency_cell(s.detections_latency)
            );
            if let Some(l) = s.detections_latency.filter(|l| l.count > 0) {
                worst_p99 = Some(worst_p99.map_or(l.p99_us, |w: f64| w.max(l.p99_us)));
            }
        }
        let best = series.max_without_drops();
        let _ = writeln!(
            out,
            "\nHighest rate drained without a drop: {}.",
            best.map_or("none".into(), |b| format!("{b:.0} events/s"))
        );
        let _ = writeln!(out);
        if let Some(b) = best {
            best_drain = Some(best_drain.map_or(b, |x: f64| x.max(b)));
        }
    }
    if let Some(b) = best_drain {
        let _ = writeln!(out, "Highest rate drained without a drop over the storm series (agent and generator sharing both cores): {b:.0} events/s; the agent's capacity on one core is measured in the next section.\n");
    }
    targets.push((
        format!(
            "detection latency p99 < {} under the storm",
            us(MAX_DETECTION_P99_US)
        ),
        worst_p99.map_or("—".into(), |p| format!("worst step p99 ≤ {}", us(p))),
        worst_p99.map(|p| p < MAX_DETECTION_P99_US).into(),
    ));

    if let Some(idle) = &storm.idle {
        let _ = writeln!(out, "## Idle memory\n");
        let _ = writeln!(
            out,
            "rasp-agent RSS idle: {:.1} MiB; with {} live processes held by `rasp-workload hold` ({} tracked): {:.1} MiB.\n",
            idle.rss_kib_before as f64 / 1024.0,
            idle.held,
            idle.processes_tracked,
            idle.rss_kib_with_processes as f64 / 1024.0
        );
        targets.push((
            format!(
                "idle RSS < {} MiB with {} live processes",
                MAX_IDLE_RSS_KIB / 1024,
                idle.held
            ),
            format!("{:.1} MiB", idle.rss_kib_with_processes as f64 / 1024.0),
            Verdict::from(Some(idle.rss_kib_with_processes < MAX_IDLE_RSS_KIB)),
        ));
    }
    for note in &storm.notes {
        let _ = writeln!(out, "- {note}");
    }
    if !storm.notes.is_empty() {
        let _ = writeln!(out);
    }
}

fn drain_section(out: &mut String, d: &DrainReport, targets: &mut Vec<Target>) {
    let _ = writeln!(out, "## Drain capacity with the agent on one core\n");
    let _ = writeln!(out, "Every thread of the agent pinned to CPU 0 (`taskset --all-tasks`); `rasp-workload storm --rate 0` generator processes, {} s a step, first pinned to CPU 1, then free to run on both cores (the agent's drain thread runs at nice −10 and keeps its core). drained = records the agent took off the ring per second; dropped = what the kernel could not reserve in the ring (counted per loss site); agent CPU in % of its one core, and per record received. Where drops begin with the agent near 100% of its core, the generators outran it and the highest drop-free rate is its capacity; where they never do, the capacity is above what was drained, and the replay rate (userspace section) is the measured ceiling of the pipeline on one core.\n", super::drain::STEP_SECONDS);
    let mut best: Option<f64> = None;
    let mut saturated = false;
    for series in &d.series {
        let _ = writeln!(out, "### {} — {}\n", series.title, series.about);
        let _ = writeln!(
            out,
            "| generators | generated | drained | dropped | agent CPU | agent CPU per event |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for s in &series.steps {
            let _ = writeln!(
                out,
                "| {}{} | {:.0}/s | {:.0}/s | {} ({:.2}%) | {:.0}% of its core | {} |",
                s.generators,
                if s.pinned {
                    " on the other core"
                } else {
                    " on both cores"
                },
                s.generated,
                s.drained,
                s.dropped,
                s.drop_pct(),
                s.agent_cpu_pct,
                s.cpu_us_per_event()
                    .map_or("—".into(), |us| format!("{us:.2} µs"))
            );
        }
        let without = series.without_drops();
        let _ = writeln!(
            out,
            "\nDrained without a drop: {}; the most drained in any step: {}; {}.\n",
            without.map_or("none".into(), |b| format!("{b:.0} events/s")),
            series
                .at_most()
                .map_or("—".into(), |b| format!("{b:.0} events/s")),
            if series.saturated() {
                "the agent's core was the limit (drops with the agent near 100% of it)"
            } else {
                "the generators never outran the agent (no drops with its core full): its capacity is above what was drained"
            }
        );
        if let Some(b) = without {
            best = Some(best.map_or(b, |x: f64| x.max(b)));
        }
        saturated |= series.saturated();
    }
    for note in &d.notes {
        let _ = writeln!(out, "- {note}");
    }
    let verdict = match best {
        None => Verdict::NotMeasured,
        Some(b) if b >= MIN_DRAIN_EVENTS_PER_SEC => Verdict::Met,
        Some(_) if saturated => Verdict::NotMet,
        Some(_) => Verdict::Inconclusive(
            "undecided: the generators never saturated the agent's core (see the replay rates)",
        ),
    };
    targets.push((
        format!(
            "≥ {MIN_DRAIN_EVENTS_PER_SEC:.0} events/s drained without a drop, live agent on one core"
        ),
        best.map_or("—".into(), |b| {
            format!("{b:.0} events/s (measured, without a drop)")
        }),
        verdict,
    ));
}

/// Live processes: the agent's CPU per event at the most processes over the fewest, at
/// most this to count as flat (host CPU, one measurement per count: noisy).
const MAX_LIVE_GROWTH: f64 = 1.5;

fn processes_section(out: &mut String, p: &ProcessReport, targets: &mut Vec<Target>) {
    let _ = writeln!(out, "## Live-process scaling: agent CPU per event\n");
    let _ = writeln!(out, "The agent on its defaults with N idle processes held by `rasp-workload hold --exec` (each execs busybox `sh -c 'read -r _'` followed by a service-like command line of its own: a JVM with its classpath, a gunicorn, a node server, cron); exec = agent CPU per `rasp-workload exec` fork+exec over {} s; watched = per event of a {:.0}/s paced storm on /etc/shadow (drained rate in brackets). One measurement per N (host CPU time: noisy, see the callgrind table for the deterministic count); CPU per event includes whatever periodic work of the agent falls in the window, which the idle column measures on its own.\n", 2, scaling::PACE);
    let _ = writeln!(
        out,
        "| live processes | tracked by the agent | mean argv | agent CPU idle ({} s) | exec | watched open | agent RSS |",
        super::processes::IDLE_SECONDS
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for s in &p.steps {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} B | {:.1}% of a core | {:.2} µs | {:.2} µs (at {:.0}/s) | {:.1} MiB |",
            s.held,
            s.tracked,
            s.mean_argv_bytes,
            s.idle_cpu_pct,
            s.exec_us,
            s.watched_us,
            s.watched_rate,
            s.rss_kib as f64 / 1024.0
        );
    }
    let _ = writeln!(out);
    for note in &p.notes {
        let _ = writeln!(out, "- {}", note.replace('\n', " "));
    }
    if !p.notes.is_empty() {
        let _ = writeln!(out);
    }
    let (Some(first), Some(last)) = (p.steps.first(), p.steps.last()) else {
        return;
    };
    if first.held == last.held {
        return;
    }
    for (what, a, b) in [
        ("exec", first.exec_us, last.exec_us),
        ("watched open", first.watched_us, last.watched_us),
    ] {
        let growth = (a > 0.0).then(|| b / a);
        targets.push((
            format!(
                "{what}: agent CPU per event flat in live processes ({} ÷ {} processes ≤ {MAX_LIVE_GROWTH})",
                last.held, first.held
            ),
            growth.map_or("—".into(), |g| format!("{g:.2} ({a:.2} → {b:.2} µs, one run each)")),
            growth.map(|g| g <= MAX_LIVE_GROWTH).into(),
        ));
    }
}

/// Live processes: per-event instructions at the most processes over the fewest at most
/// this to count as flat.
const MAX_POPULATION_GROWTH: f64 = 1.10;

fn userspace_section(out: &mut String, u: &UserspaceReport, targets: &mut Vec<Target>) {
    let _ = writeln!(
        out,
        "## Agent userspace per event: callgrind instructions and host time\n"
    );
    let _ = writeln!(out, "`rasp-replay` builds kernel records exactly as the eBPF programs build them (rasp-common's record types, leaf-first paths, packed payloads) and feeds them through the agent library's own pipeline stages — decode, cgroup path, process table, rules ({} in the default set), fold/store, event hub, and for queries the SQL judge — in the reader's batches of {}, with 1000 live processes in the table and no ring buffer. Instructions: `{}` `--tool=callgrind --toggle-collect='*measured_phase*'`, counting only the measured events, per event = (run of {} − run of {}) ÷ {} so one-time work (the first fold window, a new query shape) is left out; two independent pairs of runs, and how far apart they are. Host time: native runs of {} events, one per round, median [{:.0}% interval]; one core drains 10⁶ ÷ that many events a second through these stages (the ring-buffer read and the kernel side not included).\n",
        u.rules,
        256,
        u.valgrind,
        super::userspace::MANY,
        super::userspace::FEW,
        super::userspace::MANY - super::userspace::FEW,
        super::userspace::NATIVE_EVENTS,
        CONFIDENCE * 100.0
    );
    let _ = writeln!(out, "| event | instructions/event | two counts agree to | host µs/event | events/s on one core | budget | matches (folded) in the run |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for k in &u.kinds {
        let host = Interval::of_median(&k.native_ns, CONFIDENCE);
        let host_cell = host.map_or("—".into(), |i| {
            format!(
                "{:.2} [{:.2}, {:.2}]",
                i.median / 1e3,
                i.low / 1e3,
                i.high / 1e3
            )
        });
        let drain = host.map_or("—".into(), |i| format!("{:.0}", 1e9 / i.median));
        let _ = writeln!(
            out,
            "| **{}** — {} | {:.0} | {:.3}% | {} | {} | {} | {} ({}) |",
            k.kind.key,
            k.kind.about,
            k.instructions(),
            k.agreement() * 100.0,
            host_cell,
            drain,
            k.kind.target_us.map_or("—".into(), |t| format!("≤ {t} µs")),
            k.line.matches,
            k.line.folded
        );
        if matches!(k.kind.key, "open-unmatched" | "open-folded") {
            // The pipeline's own drain rate, measured per round: what one core of it takes
            // in when nothing else limits it (the generators on this machine cannot outrun
            // the live agent; see the drain section).
            let rates: Vec<f64> = k
                .native_ns
                .iter()
                .filter(|ns| **ns > 0.0)
                .map(|ns| 1e9 / ns)
                .collect();
            let (measured, verdict) = decide(&rates, MIN_DRAIN_EVENTS_PER_SEC);
            targets.push((
                format!(
                    "{}: ≥ {MIN_DRAIN_EVENTS_PER_SEC:.0} events/s through the pipeline on one core (replay, no ring buffer)",
                    k.kind.key
                ),
                format!("{measured} events/s"),
                verdict,
            ));
        }
        if let Some(budget) = k.kind.target_us {
            let us: Vec<f64> = k.native_ns.iter().map(|ns| ns / 1e3).collect();
            let (measured, verdict) = decide_at_most(&us, budget);
            targets.push((
                format!(
                    "{}: agent userspace ≤ {budget} µs per event on the host ({:.0} instructions, callgrind)",
                    k.kind.key,
                    k.instructions()
                ),
                format!("{measured} µs"),
                verdict,
            ));
        }
    }
    let _ = writeln!(out);
    if !u.populations.is_empty() {
        let _ = writeln!(out, "### Per-event instructions as live processes grow\n");
        let _ = writeln!(out, "The same callgrind count with the table holding more live processes before the measured events (forked from one shell, each with its own entry).\n");
        let pops: Vec<u32> = super::userspace::POPULATIONS.to_vec();
        let mut header = String::from("| event |");
        for p in &pops {
            let _ = write!(header, " {p} processes |");
        }
        let _ = writeln!(out, "{header} most ÷ fewest |");
        let _ = writeln!(out, "|---|{}---|", "---|".repeat(pops.len()));
        let mut kinds: Vec<&str> = Vec::new();
        for p in &u.populations {
            if !kinds.contains(&p.kind) {
                kinds.push(p.kind);
            }
        }
        for kind in kinds {
            let of = |pop: u32| {
                u.populations
                    .iter()
                    .find(|p| p.kind == kind && p.population == pop)
                    .map(|p| p.instructions)
            };
            let mut row = format!("| {kind} |");
            for p in &pops {
                let _ = write!(
                    row,
                    " {} |",
                    of(*p).map_or("—".into(), |i| format!("{i:.0}"))
                );
            }
            let growth = match (
                pops.first().and_then(|p| of(*p)),
                pops.last().and_then(|p| of(*p)),
            ) {
                (Some(a), Some(b)) if a > 0.0 => Some(b / a),
                _ => None,
            };
            let _ = writeln!(
                row,
                " {} |",
                growth.map_or("—".into(), |g| format!("{g:.3}"))
            );
            out.push_str(&row);
            targets.push((
                format!("{kind}: userspace instructions per event flat in live processes (×{} ÷ ×{} ≤ {MAX_POPULATION_GROWTH})", pops.last().copied().unwrap_or(0), pops.first().copied().unwrap_or(0)),
                growth.map_or("—".into(), |g| format!("{g:.3} (callgrind, deterministic)")),
                growth.map(|g| g <= MAX_POPULATION_GROWTH).into(),
            ));
        }
        let _ = writeln!(out);
    }
    for note in &u.notes {
        let _ = writeln!(out, "- {note}");
    }
    if !u.notes.is_empty() {
        let _ = writeln!(out);
    }
}

/// Per-event cost flat in the number of rules: the defaults' cost over the ×100 set's at
/// least this (1 = flat; a rule loop would make it ~0.01).
const MIN_COST_RATIO_X100: f64 = 1.0 / 1.5;

fn scaling_section(out: &mut String, scaling: &ScalingReport, targets: &mut Vec<Target>) {
    let _ = writeln!(out, "## Rule-count scaling: agent CPU per event\n");
    let _ = writeln!(out, "The agent on `--policies DIR`: the shipped files, then with generated rules of the same kinds added (exec by exe or cmdline, file_open reads of a literal path each, library_load and connect prefixes, on literals nothing here touches) to ×10 and ×100 the count; each round runs every set (order rotated). exec = agent CPU per `rasp-workload exec` fork+exec; watched = per event of a {:.0}/s paced storm on /etc/shadow (the median rate it reached in brackets: the generator shares the 2 cores); distinct = the same over 4096 distinct `.aws/credentials` files. Median over rounds [interval].\n", scaling::PACE);
    let _ = writeln!(
        out,
        "| rules | exec | watched open | distinct watched open |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let values = |m: &ByRound| m.values().copied().collect::<Vec<f64>>();
    let cell = |m: &ByRound| {
        Interval::of_median(&values(m), CONFIDENCE).map_or("—".into(), |i| {
            format!("{:.2} µs [{:.2}, {:.2}]", i.median, i.low, i.high)
        })
    };
    let rate = |rates: &[f64]| {
        Summary::of(rates).map_or(String::new(), |s| format!(" (at {:.0}/s)", s.median))
    };
    for row in &scaling.rows {
        let _ = writeln!(
            out,
            "| {} (×{}) | {} | {}{} | {}{} |",
            row.rules,
            row.factor,
            cell(&row.exec_us),
            cell(&row.watched_us),
            rate(&row.watched_rate),
            cell(&row.distinct_us),
            rate(&row.distinct_rate)
        );
    }
    let _ = writeln!(out);
    for note in &scaling.notes {
        let _ = writeln!(out, "- {}", note.replace('\n', " "));
    }
    if !scaling.notes.is_empty() {
        let _ = writeln!(out);
    }
    let base = scaling.rows.iter().find(|r| r.factor == 1);
    let top = scaling
        .rows
        .iter()
        .max_by_key(|r| r.factor)
        .filter(|r| r.factor > 1);
    let (Some(base), Some(top)) = (base, top) else {
        return;
    };
    let metrics: [(&str, &ByRound, &ByRound); 3] = [
        ("exec", &base.exec_us, &top.exec_us),
        ("watched open", &base.watched_us, &top.watched_us),
        ("distinct watched open", &base.distinct_us, &top.distinct_us),
    ];
    let top_factor = top.factor;
    for (what, base, top) in metrics {
        let (measured, verdict) = decide(&paired_ratios(base, top), MIN_COST_RATIO_X100);
        targets.push((
            format!(
                "{what}: agent CPU per event flat in rules (defaults ÷ ×{top_factor} ≥ {MIN_COST_RATIO_X100:.2}, 1 = flat)"
            ),
            measured,
            verdict,
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bench::workload;

    fn sample(round: usize, rate: f64) -> Sample {
        Sample {
            round,
            rate,
            ops: 1000,
            wall_secs: 1.0,
            cpu_secs: None,
            peak_rss_kib: None,
            dropped: None,
            workload_cpu_us_per_op: None,
        }
    }

    fn results(samples: BTreeMap<(&'static str, &'static str), Vec<Sample>>) -> Results {
        Results {
            command_line: "cargo xtask bench".into(),
            args_summary: String::new(),
            machine: String::new(),
            peer_versions: String::new(),
            commit: String::new(),
            started: String::new(),
            duration: String::new(),
            workloads: workload::select(&["exec".to_string()]),
            samples,
            storm: None,
            drain: None,
            processes: None,
            scaling: None,
            vm: None,
            userspace: None,
            notes: Vec::new(),
        }
    }

    #[test]
    fn targets_pair_by_round_and_decide_on_the_interval() {
        let none: Vec<Sample> = (0..6)
            .map(|r| sample(r, 1000.0 + r as f64 * 100.0))
            .collect();
        // The agent failed to start in round 1: its other rounds still pair with their own
        // baseline, every one at 0.99 of it.
        let agent: Vec<Sample> = [0, 2, 3, 4, 5]
            .iter()
            .map(|&r| sample(r, 0.99 * (1000.0 + r as f64 * 100.0)))
            .collect();
        // The peer is far costlier in every round.
        let peer: Vec<Sample> = (0..6).map(|r| sample(r, 500.0)).collect();
        let mut samples = BTreeMap::new();
        samples.insert(("exec", Config::None.key()), none);
        samples.insert(("exec", Config::Agent.key()), agent);
        samples.insert(("exec", Config::Bpftrace.key()), peer);
        let text = render(&results(samples));
        let line = |needle: &str| -> String {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle:?} in\n{text}"))
                .to_string()
        };
        let absolute = line("exec: rasp-agent ≥ 0.97 of no agent");
        assert!(absolute.contains("0.990 [0.990, 0.990] (n=5"), "{absolute}");
        assert!(absolute.ends_with("| met |"), "{absolute}");
        let peer = line("than the bpftrace peer (every event)");
        assert!(peer.ends_with("| met |"), "{peer}");
        // No samples for the other peers: not measured, not a verdict.
        let libbpf = line("than the libbpf-tools");
        assert!(libbpf.ends_with("| not measured |"), "{libbpf}");
    }

    #[test]
    fn too_few_rounds_are_undecided_and_a_clear_miss_is_not_met() {
        let mut samples = BTreeMap::new();
        samples.insert(
            ("exec", Config::None.key()),
            (0..2).map(|r| sample(r, 1000.0)).collect(),
        );
        samples.insert(
            ("exec", Config::Agent.key()),
            (0..2).map(|r| sample(r, 990.0)).collect(),
        );
        let text = render(&results(samples.clone()));
        assert!(text.contains("undecided: too few rounds"), "{text}");
        samples.insert(
            ("exec", Config::None.key()),
            (0..5).map(|r| sample(r, 1000.0)).collect(),
        );
        samples.insert(
            ("exec", Config::Agent.key()),
            (0..5).map(|r| sample(r, 500.0 + r as f64)).collect(),
        );
        let text = render(&results(samples));
        let absolute = text
            .lines()
            .find(|l| l.contains("exec: rasp-agent ≥ 0.97"))
            .expect("target line");
        assert!(absolute.ends_with("| **not met** |"), "{absolute}");
    }

    #[test]
    fn drain_is_not_met_only_when_the_agent_was_the_limit() {
        use crate::bench::drain::{DrainReport, DrainSeries, DrainStep};
        let step = |dropped: u64, cpu: f64| DrainStep {
            generators: 2,
            pinned: false,
            generated: 130_000.0,
            drained: 120_000.0,
            received: 360_000,
            dropped,
            agent_cpu_pct: cpu,
        };
        let report = |steps: Vec<DrainStep>| DrainReport {
            series: vec![DrainSeries {
                title: "events only",
                about: "",
                steps,
            }],
            notes: Vec::new(),
        };
        let verdict = |r: &DrainReport| {
            let mut out = String::new();
            let mut targets = Vec::new();
            drain_section(&mut out, r, &mut targets);
            assert!(
                out.contains("| 2 on both cores | 130000/s | 120000/s |"),
                "{out}"
            );
            targets.pop().expect("a drain target").2
        };
        // No drop and a fifth of a core: the generators were the limit.
        assert!(matches!(
            verdict(&report(vec![step(0, 20.0)])),
            Verdict::Inconclusive(_)
        ));
        // Drops with the core full: the agent was.
        assert_eq!(
            verdict(&report(vec![step(0, 60.0), step(5_000, 99.0)])),
            Verdict::NotMet
        );
    }
}
