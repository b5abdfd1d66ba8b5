//! BENCHMARKS.md: the tables and every target marked met or not, out of `Results`.

use std::fmt::Write as _;

use super::config::Config;
use super::stats::{overhead, paired_ratio, Summary};
use super::storm::{Latency, StormReport};
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
    /// Behind on the median, but the two configurations' per-round ratios overlap: this run
    /// cannot tell them apart.
    WithinNoise,
    NotMeasured,
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
    let _ = writeln!(out, "- design: {}; each round starts every configuration in turn (order rotated per round) and runs every workload under it; ratios are per round against that round's no-agent run, then the median over rounds.", r.args_summary);
    let _ = writeln!(out, "- configurations: **no agent**; **floor** = `rasp-agent floor`, the agent's very hooks (sched_process_exec/fork/exit BTF tracepoints, sys_exit_open*/sys_enter_mmap/sys_enter_connect) with empty programs; **bpftrace peer** = `xtask/assets/bpftrace-peer.bt`, the same probes printing one line per event to /dev/null; **rasp-agent** = `rasp-agent run` on its built-in default policies (audit mode).\n");

    let mut targets: Vec<Target> = Vec::new();
    throughput_table(&mut out, r, &mut targets);
    workload_cpu_table(&mut out, r);
    cost_table(&mut out, r);
    if let Some(storm) = &r.storm {
        storm_section(&mut out, storm, &mut targets);
    }

    if let Some(vm) = &r.vm {
        let _ = writeln!(
            out,
            "## open() in a BPF-LSM guest: tracepoint floor vs `lsm/file_open`\n"
        );
        let _ = writeln!(out, "The host refuses LSM programs, so this runs in QEMU (software emulation, one vCPU) with `lsm=…,bpf`: `rasp-workload open` on an unwatched file under no programs, the tracepoint floor, the LSM floor (`rasp-agent floor --lsm`: file_open, mmap_file, socket_connect, bprm_check_security instead of the syscall tracepoints) and the agent. The guest clock counts instructions, so the ratios are instruction budgets, repeatable to 0.1%.\n");
        let _ = writeln!(out, "```\n{}```\n", vm);
    }

    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| target | measured | |");
    let _ = writeln!(out, "|---|---|---|");
    for (what, measured, met) in &targets {
        let mark = match met {
            Verdict::Met => "met",
            Verdict::NotMet => "**not met**",
            Verdict::WithinNoise => "not met on the median; within this run's noise",
            Verdict::NotMeasured => "not measured",
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

fn rates(r: &Results, workload: &'static str, config: Config) -> Vec<f64> {
    samples(r, workload, config)
        .iter()
        .map(|s| s.rate)
        .collect()
}

/// A ratio's table cell: median and spread over rounds.
fn ratio_cell(ratio: Option<Summary>) -> String {
    ratio.map_or("—".into(), |s| {
        format!("{:.3} ±{:.1}%", s.median, s.spread_pct())
    })
}

fn samples<'a>(r: &'a Results, workload: &'static str, config: Config) -> &'a [Sample] {
    r.samples
        .get(&(workload, config.key()))
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn ratio(r: &Results, workload: &'static str, config: Config) -> Option<Summary> {
    paired_ratio(
        &rates(r, workload, config),
        &rates(r, workload, Config::None),
    )
}

fn throughput_table(out: &mut String, r: &Results, targets: &mut Vec<Target>) {
    let _ = writeln!(
        out,
        "## Throughput: ratio to no agent (median over rounds, spread = (max − min)/median)\n"
    );
    let _ = writeln!(
        out,
        "| workload | no agent | floor | bpftrace peer | rasp-agent | target |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for w in &r.workloads {
        let base = Summary::of(&rates(r, w.key, Config::None));
        let base_cell = base.map_or("—".into(), |s| {
            format!("{:.0} {} ±{:.1}%", s.median, w.unit, s.spread_pct())
        });
        let cell = |config| ratio_cell(ratio(r, w.key, config));
        let target = w.target.map_or("—".into(), |t| format!("≥ {t:.2}"));
        let _ = writeln!(
            out,
            "| {} — {} | {} | {} | {} | {} | {} |",
            w.key,
            w.about,
            base_cell,
            cell(Config::Floor),
            cell(Config::Bpftrace),
            cell(Config::Agent),
            target
        );
        let agent = ratio(r, w.key, Config::Agent);
        if let Some(t) = w.target {
            targets.push((
                format!("{}: rasp-agent ≥ {t:.2} of no agent", w.key),
                agent.map_or("—".into(), |s| format!("{:.3}", s.median)),
                agent.map(|s| s.median >= t).into(),
            ));
        }
        let peer = ratio(r, w.key, Config::Bpftrace);
        targets.push((
            format!("{}: rasp-agent cheaper than the bpftrace peer", w.key),
            match (agent, peer) {
                (Some(a), Some(p)) => format!("{:.3} vs {:.3}", a.median, p.median),
                _ => "—".into(),
            },
            match (agent, peer) {
                (Some(a), Some(p)) if a.median >= p.median => Verdict::Met,
                (Some(a), Some(p)) if a.max >= p.min => Verdict::WithinNoise,
                (Some(_), Some(_)) => Verdict::NotMet,
                _ => Verdict::NotMeasured,
            },
        ));
        if w.key == "open-unwatched" {
            let floor = ratio(r, w.key, Config::Floor);
            let (measured, met) = match (agent, floor) {
                (Some(a), Some(f)) => {
                    let floor_cost = overhead(f.median);
                    let own = overhead(a.median) - floor_cost;
                    let allowed = MAX_COST_OVER_FLOOR * floor_cost.max(0.0);
                    (
                        format!(
                            "floor adds {:.1}% per open, the agent {:.1}% more (allowed {:.1}%)",
                            floor_cost * 100.0,
                            own * 100.0,
                            allowed * 100.0
                        ),
                        Verdict::from(Some(own <= allowed)),
                    )
                }
                _ => ("—".into(), Verdict::NotMeasured),
            };
            targets.push((
                format!(
                    "{}: agent's cost over the floor ≤ {MAX_COST_OVER_FLOOR}× the floor's",
                    w.key
                ),
                measured,
                met,
            ));
        }
    }
    let _ = writeln!(out);
}

/// The workload's own CPU per operation, as a ratio no-agent / configuration (1.0 = free,
/// like the throughput ratios): what the hooks add to each operation, less sensitive than
/// throughput to the other tenants of a shared machine.
fn workload_cpu_table(out: &mut String, r: &Results) {
    let per_op = |key: &'static str, config: Config| -> Vec<f64> {
        samples(r, key, config)
            .iter()
            .map(|s| s.workload_cpu_us_per_op.unwrap_or(f64::NAN))
            .collect()
    };
    let rows: Vec<_> = r
        .workloads
        .iter()
        .filter(|w| Summary::of(&per_op(w.key, Config::None)).is_some())
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Workload CPU per operation: no agent ÷ configuration (median over rounds)\n"
    );
    let _ = writeln!(out, "The workload's own user+system time per operation (children included), so hook costs charged to it show even when the machine's other tenants move the throughput. 1.000 = nothing added.\n");
    let _ = writeln!(
        out,
        "| workload | no agent | floor | bpftrace peer | rasp-agent |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for w in rows {
        let base = per_op(w.key, Config::None);
        // Inverted so that, like throughput, lower means costlier.
        let cell = |config| ratio_cell(paired_ratio(&base, &per_op(w.key, config)));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            w.key,
            Summary::of(&base).map_or("—".into(), |s| format!("{:.2} µs/op", s.median)),
            cell(Config::Floor),
            cell(Config::Bpftrace),
            cell(Config::Agent)
        );
    }
    let _ = writeln!(out);
}

fn cost_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "## What the tracer itself spends (median over rounds)\n"
    );
    let _ = writeln!(out, "CPU is the tracer process's user+system time during the workload (% of one core; µs per workload operation); peak RSS is its VmHWM, reset before each workload. Kernel-side program time is charged to the workload and shows in the ratios above.\n");
    let _ = writeln!(
        out,
        "| workload | rasp-agent CPU | rasp-agent peak RSS | drops | bpftrace CPU | bpftrace peak RSS |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for w in &r.workloads {
        let agent = samples(r, w.key, Config::Agent);
        let peer = samples(r, w.key, Config::Bpftrace);
        let drops: u64 = agent.iter().filter_map(|s| s.dropped).sum();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            w.key,
            cpu_cell(agent),
            rss_cell(agent),
            drops,
            cpu_cell(peer),
            rss_cell(peer)
        );
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
        // What the CPU cost per event allows if the agent had a core to itself (the storm
        // generator takes the other): the agent's drain capacity, as opposed to the rate this
        // machine can generate.
        let cheapest = series
            .steps
            .iter()
            .filter(|s| s.received >= 10_000)
            .filter_map(|s| s.cpu_us_per_event())
            .min_by(f64::total_cmp);
        let fastest_generator = series
            .steps
            .iter()
            .map(|s| s.generated)
            .max_by(f64::total_cmp);
        if let (Some(cpu), Some(generated)) = (cheapest, fastest_generator) {
            let _ = writeln!(
                out,
                "At its lowest cost here, {cpu:.2} µs of agent CPU per event, one core of agent time drains ≈ {:.0} events/s; the generator peaked at {generated:.0} opens/s.",
                1e6 / cpu
            );
        }
        let _ = writeln!(out);
        if let Some(b) = best {
            best_drain = Some(best_drain.map_or(b, |x: f64| x.max(b)));
        }
    }
    targets.push((
        format!("≥ {MIN_DRAIN_EVENTS_PER_SEC:.0} events/s drained without drops (2 cores)"),
        best_drain.map_or("—".into(), |b| format!("{b:.0} events/s")),
        best_drain.map(|b| b >= MIN_DRAIN_EVENTS_PER_SEC).into(),
    ));
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
