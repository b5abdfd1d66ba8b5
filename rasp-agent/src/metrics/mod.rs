//! Prometheus metrics: a registry of typed counters that producers (pipeline, enforcer,
//! policy reloads, analyzers) increment where things happen, plus gauges and histograms
//! read from the daemon at scrape time through [`MetricsSource`], served over HTTP with
//! `/healthz` and `/readyz` (see `endpoint`).
//!
//! Label values are always bounded: event kinds, analyzer names, rule ids of the policy
//! set, severities, modes, actions, outcomes. Never pids, paths or container ids.

mod endpoint;
mod self_usage;
mod source;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::{
    detect::Outcome,
    policy::vocab::{Action, Mode, Severity},
    store::export::{ExportCounter, ExportResult, SinkKind},
};

pub use endpoint::{serve, MetricsServer, DEFAULT_ADDR};
pub use source::{
    DeferredSource, KindCounts, MetricsSource, PolicyState, ProcessCounts, ProgramCounts,
    Readiness, SourceSnapshot,
};

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {addr}: {source} (is another agent or exporter using the port? pick one with --metrics ADDR)")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("encoding the metrics failed")]
    Encode(#[from] std::fmt::Error),
}

/// Analyzers that sit behind bounded queues and drop their own work when full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Analyzer {
    Sql,
    Http,
}

impl Analyzer {
    pub const ALL: [Analyzer; 2] = [Analyzer::Sql, Analyzer::Http];

    fn label(self) -> &'static str {
        match self {
            Analyzer::Sql => "sql",
            Analyzer::Http => "http",
        }
    }

    fn index(self) -> usize {
        match self {
            Analyzer::Sql => 0,
            Analyzer::Http => 1,
        }
    }
}

pub use crate::policy::reload::ReloadResult;

/// Label and counter slot of each reload result.
fn reload_label(r: ReloadResult) -> &'static str {
    match r {
        ReloadResult::Applied => "applied",
        ReloadResult::Refused => "refused",
        ReloadResult::RolledBack => "rolled_back",
    }
}

fn reload_index(r: ReloadResult) -> usize {
    match r {
        ReloadResult::Applied => 0,
        ReloadResult::Refused => 1,
        ReloadResult::RolledBack => 2,
    }
}

const RELOAD_RESULTS: [ReloadResult; 3] = [
    ReloadResult::Applied,
    ReloadResult::Refused,
    ReloadResult::RolledBack,
];

/// The policy control counts its reloads here.
impl crate::policy::reload::ReloadSink for Metrics {
    fn policy_reload(&self, result: ReloadResult) {
        Metrics::policy_reload(self, result);
    }
}

/// The export sinks count what became of their records here.
impl ExportCounter for Metrics {
    fn export(&self, sink: SinkKind, result: ExportResult, n: u64) {
        self.exports[sink.index()][result.index()].inc_by(n);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AnalyzerLabels {
    analyzer: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DetectionLabels {
    /// A rule id of the policy set: bounded by what the operator wrote, never by traffic.
    rule: String,
    severity: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ExportLabels {
    sink: &'static str,
    result: &'static str,
}

const ACTIONS: [Action; 4] = [
    Action::Alert,
    Action::Block,
    Action::Kill,
    Action::Quarantine,
];
const OUTCOMES: [Outcome; 6] = [
    Outcome::Alerted,
    Outcome::Audited,
    Outcome::Prevented,
    Outcome::Held,
    Outcome::After,
    Outcome::Failed,
];

fn action_label(a: Action) -> &'static str {
    match a {
        Action::Alert => "alert",
        Action::Block => "block",
        Action::Kill => "kill",
        Action::Quarantine => "quarantine",
    }
}

fn action_index(a: Action) -> usize {
    match a {
        Action::Alert => 0,
        Action::Block => 1,
        Action::Kill => 2,
        Action::Quarantine => 3,
    }
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Alerted => 0,
        Outcome::Audited => 1,
        Outcome::Prevented => 2,
        Outcome::Held => 3,
        Outcome::After => 4,
        Outcome::Failed => 5,
    }
}

fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

fn mode_label(m: Mode) -> &'static str {
    match m {
        Mode::Audit => "audit",
        Mode::Enforce => "enforce",
    }
}

/// The counters producers increment, and the registry they are encoded from.
///
/// Counters whose labels are all enums are created up front and kept as handles, so
/// incrementing one is a single relaxed atomic add: no lock, no allocation, no map lookup.
/// Detections are labelled by rule id, which only the policy set knows; that family is
/// looked up at increment time (prometheus-client's own short read lock, uncontended except
/// against a scrape, and one small `String` for the key). Detections are rare next to
/// events, and repeats folded by the store are still one call each.
pub struct Metrics {
    registry: Registry,
    analyzer_dropped: [Counter; Analyzer::ALL.len()],
    detections: Family<DetectionLabels, Counter>,
    actions: [[Counter; OUTCOMES.len()]; ACTIONS.len()],
    reloads: [Counter; RELOAD_RESULTS.len()],
    exports: [[Counter; ExportResult::ALL.len()]; SinkKind::ALL.len()],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Prefix of every metric the agent itself defines (`process_*` follow Prometheus'
/// conventions for process metrics instead).
pub const PREFIX: &str = "rasp";

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix(PREFIX);

        let analyzer: Family<AnalyzerLabels, Counter> = Family::default();
        registry.register(
            "analyzer_queue_dropped",
            "Work items an analyzer's bounded queue refused (the kernel's events are never dropped for it)",
            analyzer.clone(),
        );
        let analyzer_dropped = Analyzer::ALL.map(|a| {
            analyzer.get_or_create_owned(&AnalyzerLabels {
                analyzer: a.label(),
            })
        });

        let detections: Family<DetectionLabels, Counter> = Family::default();
        registry.register(
            "detections",
            "Rule matches, per rule id, severity and mode (folded repeats included)",
            detections.clone(),
        );

        let action_family: Family<ActionLabels, Counter> = Family::default();
        registry.register(
            "actions",
            "Actions decided, per action and honest outcome",
            action_family.clone(),
        );
        let actions = ACTIONS.map(|a| {
            OUTCOMES.map(|o| {
                action_family.get_or_create_owned(&ActionLabels {
                    action: action_label(a),
                    outcome: o.name(),
                })
            })
        });

        let reload_family: Family<ReloadLabels, Counter> = Family::default();
        registry.register(
            "policy_reloads",
            "Policy set loads, per result",
            reload_family.clone(),
        );
        let reloads = RELOAD_RESULTS.map(|r| {
            reload_family.get_or_create_owned(&ReloadLabels {
                result: reload_label(r),
            })
        });

        let export_family: Family<ExportLabels, Counter> = Family::default();
        registry.register(
            "export_records",
            "Detections per export sink and what became of them (delivered, retried, refused, unreadable journal lines, gaps where the journal rotated past the sink)",
            export_family.clone(),
        );
        let exports = SinkKind::ALL.map(|sink| {
            ExportResult::ALL.map(|result| {
                export_family.get_or_create_owned(&ExportLabels {
                    sink: sink.name(),
                    result: result.name(),
                })
            })
        });

        Metrics {
            registry: root,
            exports,
            analyzer_dropped,
            detections,
            actions,
            reloads,
        }
    }

    /// An analyzer's queue was full and it dropped a work item.
    pub fn analyzer_dropped(&self, analyzer: Analyzer) {
        self.analyzer_dropped[analyzer.index()].inc();
    }

    /// A rule matched (call once per match, folded or not).
    pub fn detection(&self, rule_id: &str, severity: Severity, mode: Mode) {
        self.detections
            .get_or_create(&DetectionLabels {
                rule: rule_id.to_owned(),
                severity: severity_label(severity),
                mode: mode_label(mode),
            })
            .inc();
    }

    /// The enforcer (or the fold shortcut) settled a detection's outcome.
    pub fn action(&self, action: Action, outcome: Outcome) {
        self.actions[action_index(action)][outcome_index(outcome)].inc();
    }

    /// A policy set load finished.
    pub fn policy_reload(&self, result: ReloadResult) {
        self.reloads[reload_index(result)].inc();
    }

    /// The whole exposition: the producers' counters, then what `source` reports now and
    /// the agent's own CPU and memory, in OpenMetrics text (ends with `# EOF`).
    pub fn encode(&self, snapshot: SourceSnapshot) -> Result<String, MetricsError> {
        let mut text = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode_registry(&mut text, &self.registry)?;
        let mut scrape = Registry::default();
        scrape.register_collector(Box::new(source::SnapshotCollector::new(
            snapshot,
            self_usage::SelfUsage::read(),
        )));
        prometheus_client::encoding::text::encode_registry(&mut text, &scrape)?;
        prometheus_client::encoding::text::encode_eof(&mut text)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests;
