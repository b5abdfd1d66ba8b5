//! What the daemon reports at scrape time: plain numbers it already keeps (per-kind event
//! counts, kernel drops, the process table's size, the policy set version, programs
//! attached, the latency histograms), turned into gauges, counters and histograms by
//! [`SnapshotCollector`] for one scrape and thrown away.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use super::self_usage::SelfUsage;
use crate::events::{
    latency::{LatencyStats, BOUNDS_US},
    Kind,
};

/// Where scrape-time numbers come from: the daemon implements it.
///
/// `snapshot` runs on the HTTP server's task for every scrape, so it must be cheap and must
/// never take a lock the event path holds (the process table's write lock, the pipeline's
/// batch state): read atomics and counters kept for `status`, or copies refreshed off the
/// event path. A scrape that waits on the pipeline would make the pipeline wait on the
/// scraper.
pub trait MetricsSource: Send + Sync {
    fn snapshot(&self) -> SourceSnapshot;
}

/// A source that exists before the daemon does: the endpoint can serve from the first
/// moment (`/healthz` 200, `/readyz` 503 "no eBPF program is attached") while the programs
/// load, and reports the daemon's numbers once it is [`set`](DeferredSource::set).
#[derive(Default)]
pub struct DeferredSource {
    inner: std::sync::OnceLock<std::sync::Arc<dyn MetricsSource>>,
}

impl DeferredSource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands over to `source`; later calls are ignored (the first daemon stays).
    pub fn set(&self, source: std::sync::Arc<dyn MetricsSource>) {
        let _ = self.inner.set(source);
    }
}

impl MetricsSource for DeferredSource {
    fn snapshot(&self) -> SourceSnapshot {
        self.inner
            .get()
            .map_or_else(SourceSnapshot::default, |s| s.snapshot())
    }
}

/// One kind's event counts since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindCounts {
    /// Taken off the ring buffer and decoded.
    pub received: u64,
    /// Lost in the kernel: the ring buffer had no room (a failed reserve).
    pub dropped: u64,
    /// Sent incomplete: a kernel read or a missing BTF offset failed.
    pub read_errors: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessCounts {
    /// Entries in the process table now (live and recently exited).
    pub tracked: u64,
    /// Of those, processes that exited and wait out their grace period.
    pub exited: u64,
    /// Entries evicted since start because the table was full.
    pub evicted: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// A policy set has been loaded (the shipped defaults count).
    pub loaded: bool,
    /// Version of the active set (increments on every apply, reload and rollback).
    pub set_version: u64,
    /// Rules in the active set.
    pub rules: u64,
    /// Problems of the last refused reload, 0 when the last reload was applied.
    pub last_reload_errors: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramCounts {
    /// eBPF programs attached to their hooks.
    pub attached: u64,
    /// Loaded but deliberately not attached (capability probes).
    pub loaded: u64,
    /// Failed to load or attach.
    pub failed: u64,
    /// Distinct uprobe targets (libraries or executables, by dev+inode) with probes on them.
    pub uprobe_targets: u64,
    /// The exec program is attached: without it no process is known by what it runs, and
    /// most rules cannot match (`/readyz` says not ready).
    pub exec_tracked: bool,
}

/// Everything the daemon reports at one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceSnapshot {
    /// Indexed by `Kind::index()`.
    pub events: [KindCounts; Kind::ALL.len()],
    /// Records the agent could not decode.
    pub decode_errors: u64,
    pub processes: ProcessCounts,
    pub policy: PolicyState,
    pub programs: ProgramCounts,
    /// Kernel timestamp → off the ring buffer, every event (`events::latency`).
    pub event_latency: LatencyStats,
    /// Kernel timestamp → decision, every detection.
    pub decision_latency: LatencyStats,
}

/// Whether the agent does its job yet: `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(&'static str),
}

impl SourceSnapshot {
    pub fn readiness(&self) -> Readiness {
        if self.programs.attached == 0 {
            Readiness::NotReady("no eBPF program is attached")
        } else if !self.programs.exec_tracked {
            Readiness::NotReady(
                "the exec program (rasp_exec) is not attached: see `rasp-agent status`",
            )
        } else if !self.policy.loaded {
            Readiness::NotReady("no policy set is loaded")
        } else {
            Readiness::Ready
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// One scrape's numbers, encoded when the registry is.
#[derive(Debug)]
pub(super) struct SnapshotCollector {
    snapshot: SourceSnapshot,
    usage: Option<SelfUsage>,
}

impl SnapshotCollector {
    pub(super) fn new(snapshot: SourceSnapshot, usage: Option<SelfUsage>) -> Self {
        SnapshotCollector { snapshot, usage }
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> Result<(), std::fmt::Error>
where
    V: prometheus_client::encoding::EncodeGaugeValue + Send + Sync + std::fmt::Debug,
{
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn per_kind(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    events: &[KindCounts; Kind::ALL.len()],
    field: fn(&KindCounts) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for kind in Kind::ALL {
        let labels = KindLabels { kind: kind.name() };
        let metric = family.encode_family(&labels)?;
        ConstCounter::new(field(&events[kind.index()])).encode(metric)?;
    }
    Ok(())
}

/// `events::latency` buckets as a Prometheus histogram in seconds: the same bounds, the
/// overflow bucket as `+Inf`. The buckets are read without a lock while the pipeline adds
/// to them, so `_count` is their sum (not the histogram's own count) to stay consistent.
fn latency_histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    stats: &LatencyStats,
) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> = (0..=BOUNDS_US.len())
        .map(|i| {
            let bound = BOUNDS_US
                .get(i)
                .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
            (bound, stats.buckets.get(i).copied().unwrap_or(0))
        })
        .collect();
    let count = buckets.iter().map(|&(_, n)| n).sum();
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<KindLabels>(stats.sum_us as f64 / 1e6, count, &buckets, None)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.snapshot;
        let e = &mut encoder;
        per_kind(
            e,
            "rasp_events_received",
            "Events taken off the ring buffer, per kind",
            &s.events,
            |k| k.received,
        )?;
        per_kind(
            e,
            "rasp_events_dropped",
            "Events lost in the kernel because the ring buffer was full, per kind",
            &s.events,
            |k| k.dropped,
        )?;
        per_kind(
            e,
            "rasp_events_read_errors",
            "Events sent incomplete (a kernel read or offset failed), per kind",
            &s.events,
            |k| k.read_errors,
        )?;
        counter(
            e,
            "rasp_ring_buffer_dropped",
            "Events lost in the kernel because the ring buffer was full, all kinds",
            s.events.iter().map(|k| k.dropped).sum(),
        )?;
        counter(
            e,
            "rasp_decode_errors",
            "Ring-buffer records the agent could not decode",
            s.decode_errors,
        )?;
        latency_histogram(
            e,
            "rasp_event_latency_seconds",
            "Kernel timestamp to taken off the ring buffer, every event",
            &s.event_latency,
        )?;
        latency_histogram(
            e,
            "rasp_decision_latency_seconds",
            "Kernel timestamp to decision taken, every detection",
            &s.decision_latency,
        )?;
        gauge(
            e,
            "rasp_process_table_entries",
            "Processes in the process table (live and recently exited)",
            s.processes.tracked,
        )?;
        gauge(
            e,
            "rasp_process_table_exited",
            "Exited processes kept for their grace period",
            s.processes.exited,
        )?;
        counter(
            e,
            "rasp_process_table_evicted",
            "Process table entries evicted because the table was full",
            s.processes.evicted,
        )?;
        gauge(
            e,
            "rasp_policy_set_version",
            "Version of the active policy set",
            s.policy.set_version,
        )?;
        gauge(
            e,
            "rasp_policy_rules",
            "Rules in the active policy set",
            s.policy.rules,
        )?;
        gauge(
            e,
            "rasp_policy_last_reload_errors",
            "Problems found by the last refused reload (0: the last reload was applied)",
            s.policy.last_reload_errors,
        )?;
        {
            let mut family = e.encode_descriptor(
                "rasp_programs",
                "eBPF programs, per state",
                None,
                MetricType::Gauge,
            )?;
            let p = &s.programs;
            for (state, n) in [
                ("attached", p.attached),
                ("loaded", p.loaded),
                ("failed", p.failed),
            ] {
                let labels = StateLabels { state };
                ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            e,
            "rasp_uprobe_targets_attached",
            "Distinct binaries or libraries with uprobes attached",
            s.programs.uprobe_targets,
        )?;
        gauge(
            e,
            "rasp_ready",
            "1 when programs are attached and policies loaded (as /readyz)",
            u64::from(s.readiness() == Readiness::Ready),
        )?;
        {
            let mut info =
                e.encode_descriptor("rasp_build", "The agent's version", None, MetricType::Info)?;
            info.encode_info(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })?;
        }
        if let Some(usage) = &self.usage {
            let metric = e.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time the agent used",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(usage.cpu_seconds).encode(metric)?;
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident set size of the agent",
                usage.rss_bytes,
            )?;
            gauge(e, "process_threads", "Threads of the agent", usage.threads)?;
        }
        Ok(())
    }
}
