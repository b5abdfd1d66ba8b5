//! The agent's state: everything the event pipeline updates and clients ask about, shared
//! between the pipeline thread, the socket server and the housekeeping tasks. Each field is
//! one concern with its own lock (or none), held briefly; `daemon` wires it together.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::{Instant, SystemTime},
};

use tokio::sync::broadcast;

use crate::{
    api::{
        protocol::{KindStats, LossReport, PolicyFile, PolicyListing, ProcessStats, Status},
        Backend, DetectionFilter,
    },
    detect::{engine::Engine, Detection},
    enforce::Enforcer,
    events::{
        hub::EventFilter,
        latency::Latencies,
        reader::{self, SiteLoss},
        Event, EventHub, Kind,
    },
    loader::{
        self, env, uprobe::attach::UprobeTargetReport, LsmStatus, ProgramState, ProgramStatus,
    },
    metrics::{
        KindCounts, Metrics, MetricsSource, PolicyState, ProcessCounts, ProgramCounts,
        SourceSnapshot,
    },
    policy::{active::PolicySetSummary, reload::PolicyControl},
    process::{Process, ProcessTable},
    store::{index::DetectionQuery, DetectionStore},
};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Unix socket the CLI talks to.
    #[arg(long, default_value = crate::cli::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Directory for the agent's state (lock, later the detection journal).
    #[arg(long, default_value = "/var/lib/rasp")]
    pub state_dir: PathBuf,
    /// Ring buffer size in bytes (a power of two, at least one page).
    #[arg(long, default_value_t = rasp_common::limits::DEFAULT_RING_BYTES, value_parser = loader::parse_ring_bytes)]
    pub ring_buffer_size: u32,
    /// Recent events kept in memory for `rasp-agent events`.
    #[arg(long, default_value_t = 4096)]
    pub event_buffer: usize,
    /// Events a live follower may fall behind before it starts losing them.
    #[arg(long, default_value_t = 8192)]
    pub follower_queue: usize,
    /// Seconds an exited process stays in the process table.
    #[arg(long, default_value_t = 30)]
    pub exit_grace: u64,
    /// Upper bound on the process table.
    #[arg(long, default_value_t = 65536)]
    pub max_processes: usize,
    /// Members of this group (gid) may use the socket besides root (socket mode 0660).
    #[arg(long)]
    pub socket_group: Option<u32>,
    /// Policy directory (*.yaml): loaded at start, reloaded on SIGHUP and when its files
    /// change. Without it the shipped default policies run (audit mode).
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// Rotate the detection journal when it reaches this many bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub journal_max_bytes: u64,
    /// Rotated journal files kept.
    #[arg(long, default_value_t = 4)]
    pub journal_keep: usize,
    /// Identical detections within this many seconds of the first are folded into one
    /// aggregate with a count.
    #[arg(long, default_value_t = 10)]
    pub fold_window: u64,
    /// Nice value of the thread that drains the ring buffer (-20..=19). Below the default 0
    /// so a storm from the workloads it watches cannot starve it into dropping events (as
    /// auditd's priority_boost); it only takes CPU when there are events to drain.
    #[arg(long, default_value_t = -10, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub drain_nice: i32,
    /// Test builds of scenarios only: panic the event pipeline on an exec with this comm, to
    /// prove a dead pipeline takes the agent down.
    #[arg(long, hide = true)]
    pub fault_panic_on_exec_comm: Option<String>,
    /// Test builds of scenarios only: never decide a held query, so a scenario can kill the
    /// agent during a hold and show the watchdog's bound (fail-open).
    #[arg(long, hide = true)]
    pub fault_hold_no_decision: bool,
    /// Scenarios only: treat this program as refused by the verifier (repeatable), as an
    /// older kernel refuses some, to show what the agent then reports.
    #[arg(long, hide = true, value_name = "PROGRAM")]
    pub fault_refuse_program: Vec<String>,
    /// Longest a flagged libpq query is held for a decision (milliseconds); past it the
    /// watchdog lets it run (fail-open), also when the agent is dead.
    #[arg(long, default_value_t = crate::enforce::hold::DEFAULT_BOUND.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub hold_bound_ms: u64,
    /// Prometheus endpoint (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, default_value = crate::metrics::DEFAULT_ADDR)]
    pub metrics: std::net::SocketAddr,
    /// cgroups (path globs in the cgroup2 hierarchy) that no kill or quarantine ever touches,
    /// besides the agent's own, its ancestors', PID 1's and login sessions. Repeatable.
    #[arg(long = "protect-cgroup", value_name = "GLOB")]
    pub protect_cgroup: Vec<String>,
    /// Userspace actions (kill, block after the event, quarantine) one rule may take per
    /// minute; past it, matches are recorded as `failed: not acted on`. 0: no limit.
    /// In-kernel denials are not limited.
    #[arg(long, default_value_t = 30)]
    pub actions_per_minute: usize,
    /// Plaintext bytes captured of each SSL_read/SSL_write call (at most 16384; longer
    /// calls are cut and flagged truncated).
    #[arg(long, default_value_t = rasp_common::limits::TLS_DEFAULT_CALL_CAP,
          value_parser = crate::loader::tls::parse_call_cap)]
    pub tls_call_cap: u32,
    /// Plaintext bytes captured per TLS connection and direction in one burst (a request,
    /// a response): the first KiBs of each message, never the rest of a bulk transfer.
    #[arg(long, default_value_t = rasp_common::limits::TLS_DEFAULT_CONN_BUDGET,
          value_parser = crate::loader::tls::parse_burst_budget)]
    pub tls_burst_budget: u32,
    #[command(flatten)]
    pub export: crate::store::export::ExportArgs,
    #[command(flatten)]
    pub runtime_sockets: crate::process::runtime::RuntimeSockets,
}

/// Everything clients can ask about, shared between the event path and the API.
pub struct Agent {
    /// What every event goes through and updates.
    pub path: EventPath,
    pub started: Instant,
    pub args: RunArgs,
    pub kernel_release: String,
    pub environment: env::Environment,
    pub programs: Vec<ProgramStatus>,
    pub lsm: LsmStatus,
    pub counters: Mutex<reader::KernelCounters>,
    pub record_bytes: reader::RecordBytes,
    /// `running`, or why the pipeline stopped.
    pub pipeline: Mutex<String>,
    /// Where the metrics endpoint listens (the bound address: port 0 resolved).
    pub metrics_addr: std::net::SocketAddr,
    /// libpq/OpenSSL files found and what is attached to them (refreshed by the uprobe task).
    pub uprobe_targets: Mutex<Vec<UprobeTargetReport>>,
    /// Hold and decide's state for `status`.
    pub sql_hold: Mutex<crate::api::protocol::SqlHoldReport>,
    /// The SQL analyzer's queue counters, once the pipeline started it.
    pub sql_analyzer: std::sync::OnceLock<crate::detect::analyzer::AnalyzerStatsHandle>,
    /// The HTTP stage's queue counters, once the pipeline started it.
    pub http_analyzer: std::sync::OnceLock<crate::detect::analyzer::AnalyzerStatsHandle>,
    /// What the HTTP stage holds and did, as of its last work item.
    pub http_stage: Mutex<Option<crate::detect::http::stage::StageStats>>,
    /// The OpenSSL capture's bounds and counters (`None`: its maps did not load).
    pub tls_capture: Option<crate::loader::tls::TlsCapture>,
    /// One per export sink (`--export-*`), updated by its task.
    pub exports: Vec<Arc<crate::store::export::ExportStats>>,
}

/// What an event goes through and changes, from its decoded record to the store: the
/// cgroup and container lookups, the process table, the rules and their kernel plan,
/// folding and the detection store, enforcement, the event hub, metrics. `pipeline` works
/// on this part of the agent only, so that `rasp-replay` can build one without a kernel
/// and run the daemon's very code.
pub struct EventPath {
    pub hub: EventHub,
    /// Kernel→dequeue (events) and kernel→decision (detections) latencies since start.
    pub latency: Latencies,
    pub table: RwLock<ProcessTable>,
    pub policies: PolicyControl,
    pub engine: Engine,
    pub enforcer: Enforcer,
    pub store: Arc<DetectionStore>,
    /// Counters the producers increment directly; the rest is read at scrape time
    /// (`Agent`'s `MetricsSource`).
    pub metrics: Arc<Metrics>,
    /// Query shapes seen per service (container, or executable), for `new_shape`.
    pub sql_shapes: Mutex<crate::detect::sql::ServiceShapes>,
    /// cgroup id → path, for the pipeline and the process table.
    pub cgroups: Arc<crate::process::cgroup::CgroupResolver>,
    /// cgroup id → container and pod, named by the enricher task.
    pub containers: Arc<crate::process::container::Containers>,
    /// New executable files and target processes' lifecycles, for the uprobe task.
    pub uprobe_feed: crate::loader::uprobe::discovery::Feed,
}

impl MetricsSource for Agent {
    /// Scrape-time numbers: atomics and the loss counters (a map read, not on the event
    /// path); the process table's read lock is taken for its counts only, and the pipeline
    /// holds its write lock per event, never per batch.
    fn snapshot(&self) -> SourceSnapshot {
        let sites = crate::lock(&self.counters).sites();
        let mut events = [KindCounts::default(); Kind::ALL.len()];
        for k in Kind::ALL {
            let (dropped, read_errors) = reader::per_kind(&sites, k);
            events[k.index()] = KindCounts {
                received: self.path.hub.received(k),
                dropped,
                read_errors,
            };
        }
        let processes = {
            let table = crate::read(&self.path.table);
            ProcessCounts {
                tracked: table.len() as u64,
                exited: table.exited() as u64,
                evicted: table.evicted(),
            }
        };
        let set = self.path.policies.registry().current();
        let count =
            |state: ProgramState| self.programs.iter().filter(|p| p.state == state).count() as u64;
        SourceSnapshot {
            events,
            decode_errors: self.path.hub.decode_errors(),
            processes,
            policy: PolicyState {
                loaded: true,
                set_version: set.version,
                rules: set.policies.iter().map(|p| p.rules.len() as u64).sum(),
                last_reload_errors: self.path.policies.reload_errors().len() as u64,
            },
            programs: ProgramCounts {
                attached: count(ProgramState::Attached),
                loaded: count(ProgramState::Loaded),
                failed: count(ProgramState::Failed),
                uprobe_targets: crate::lock(&self.uprobe_targets)
                    .iter()
                    .filter(|t| !t.attached.is_empty())
                    .count() as u64,
                exec_tracked: self.programs.iter().any(|p| {
                    p.name == crate::loader::EXEC_PROGRAM && p.state == ProgramState::Attached
                }),
            },
            event_latency: self.path.latency.events.snapshot(),
            decision_latency: self.path.latency.detections.snapshot(),
        }
    }
}

fn loss_report(s: &SiteLoss) -> LossReport {
    LossReport {
        site: s.site.name().to_string(),
        program: s.site.program().to_string(),
        kind: s.site.kind().map(|k| k.name().to_string()),
        effect: match s.site.effect() {
            rasp_common::loss::LossEffect::Dropped => "dropped",
            rasp_common::loss::LossEffect::Incomplete => "incomplete",
        }
        .to_string(),
        what: s.site.what().to_string(),
        count: s.count,
        line: s.line,
    }
}

impl Backend for Agent {
    fn status(&self) -> Status {
        let sites = crate::lock(&self.counters).sites();
        let events: BTreeMap<String, KindStats> = Kind::ALL
            .iter()
            .map(|&k| {
                let (dropped, read_errors) = reader::per_kind(&sites, k);
                let stats = KindStats {
                    received: self.path.hub.received(k),
                    dropped,
                    read_errors,
                    bytes: self.record_bytes.get(k),
                };
                (k.name().to_string(), stats)
            })
            .collect();
        let losses = sites.iter().map(loss_report).collect();
        let (tracked, exited, evicted) = {
            let table = crate::read(&self.path.table);
            (table.len(), table.exited(), table.evicted())
        };
        let policy = self.path.policies.registry().current();
        Status {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            kernel_release: self.kernel_release.clone(),
            lsm: self.lsm.clone(),
            programs: self.programs.clone(),
            ring_buffer_bytes: self.args.ring_buffer_size,
            events,
            decode_errors: self.path.hub.decode_errors(),
            event_buffer: self.path.hub.capacity(),
            followers: self.path.hub.followers(),
            processes: ProcessStats {
                tracked,
                exited,
                evicted,
            },
            cgroup2_mount: self.environment.cgroup2.display().to_string(),
            cgroups: self.path.cgroups.stats(),
            containers: self.path.containers.stats(),
            socket: self.args.socket.display().to_string(),
            state_dir: self.args.state_dir.display().to_string(),
            environment: self.environment.notes.clone(),
            policy_set_version: policy.version,
            policy_source: policy.source.clone(),
            policy_reload_errors: self.path.policies.reload_errors(),
            detections: self.path.store.stats(),
            latency: self.path.latency.report(),
            losses,
            pipeline: crate::lock(&self.pipeline).clone(),
            metrics_addr: self.metrics_addr.to_string(),
            uprobe_targets: crate::lock(&self.uprobe_targets).clone(),
            sql_hold: crate::lock(&self.sql_hold).clone(),
            analyzers: [("sql", &self.sql_analyzer), ("http", &self.http_analyzer)]
                .into_iter()
                .filter_map(|(name, h)| Some((name.to_string(), h.get()?.stats())))
                .collect(),
            tls_capture: self.tls_capture.as_ref().map(|c| c.stats()),
            http_stage: *crate::lock(&self.http_stage),
            enforcement: {
                let caps = self.path.policies.capabilities();
                crate::api::protocol::EnforcementReport {
                    lsm: caps.lsm,
                    cgroup_socket: caps.cgroup_socket,
                    rate_limited: self.path.enforcer.rate_limited(),
                    quarantined: self.path.enforcer.quarantined().len(),
                    rules: self
                        .path
                        .policies
                        .rungs()
                        .into_iter()
                        .map(|(rule, rung)| crate::api::protocol::RuleEnforcement {
                            rule,
                            description: rung.describe(),
                            rung,
                        })
                        .collect(),
                }
            },
            exports: self.exports.iter().map(|e| e.status()).collect(),
        }
    }

    fn recent_events(&self, filter: EventFilter, limit: Option<usize>) -> Vec<Arc<Event>> {
        self.path.hub.recent(filter, limit.unwrap_or(usize::MAX))
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.path.hub.subscribe()
    }

    fn containers(&self) -> Vec<crate::process::container::ContainerEntry> {
        self.path.containers.list()
    }

    fn processes(&self) -> Vec<Process> {
        crate::read(&self.path.table).iter().cloned().collect()
    }

    fn detections(&self, filter: &DetectionFilter) -> Result<Vec<Arc<Detection>>, String> {
        let since = match &filter.since {
            Some(s) => {
                Some(DetectionQuery::parse_since(s, SystemTime::now()).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let query = DetectionQuery {
            since,
            min_severity: filter.severity,
            rule: filter.rule.clone(),
            limit: filter.limit,
        };
        Ok(self.path.store.query(&query))
    }

    fn subscribe_detections(&self) -> broadcast::Receiver<Arc<Detection>> {
        self.path.store.subscribe()
    }

    fn policy_listing(&self) -> PolicyListing {
        let registry = self.path.policies.registry();
        PolicyListing {
            active: registry.current().summary(),
            history: registry.history().iter().map(|s| s.summary()).collect(),
        }
    }

    fn policy_apply(&self, files: Vec<PolicyFile>) -> Result<PolicySetSummary, Vec<String>> {
        let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        let files: Vec<(String, String)> = files.into_iter().map(|f| (f.name, f.text)).collect();
        self.path
            .policies
            .apply(&files, format!("policy apply ({})", names.join(", ")))
    }

    fn policy_rollback(&self) -> Result<PolicySetSummary, String> {
        self.path.policies.rollback()
    }

    fn quarantine_list(&self) -> Vec<crate::enforce::Quarantined> {
        self.path.enforcer.quarantined()
    }

    fn quarantine_release(&self, cgroup: &str) -> Result<crate::enforce::Quarantined, String> {
        let released = self.path.enforcer.release(cgroup, &self.path.policies)?;
        tracing::warn!(cgroup = %released.cgroup, steps = ?released.steps, "quarantine released");
        Ok(released)
    }
}

/// The pipeline's enforcer reaches the kernel's network cut, the recent events and the
/// active rules through the event path.
impl crate::enforce::EnforceContext for EventPath {
    fn network(&self) -> &dyn crate::enforce::NetworkCut {
        &self.policies
    }

    fn recent_events(&self, cgroup_id: u64) -> Vec<Arc<Event>> {
        self.hub.recent_of_cgroup(cgroup_id, 200)
    }

    fn rule_names_cgroups(&self, rule_id: &str) -> bool {
        let set = self.policies.registry().current();
        set.policies.iter().any(|p| {
            p.rules
                .iter()
                .any(|r| r.id == rule_id && r.names_cgroups(p))
        })
    }

    fn rule_slot(&self, rule_id: &str) -> u32 {
        self.policies.slot_of(rule_id).unwrap_or(0)
    }
}

/// `AgentHealthDetail::problem` for programs the verifier refused at start.
pub const PROGRAMS_REFUSED: &str = "programs_refused";

impl Agent {
    /// The agent's own blind spot as a detection: journal, exports and metrics see it.
    pub fn report_health(&self, detail: crate::events::AgentHealthDetail) {
        use crate::{
            detect::{Detection, Outcome, ProcessSummary},
            events::{EventDetail, WallTime},
            policy::vocab::{Action, Mode, Severity},
        };
        let now = std::time::SystemTime::now();
        let pid = std::process::id();
        let boot_ns = crate::events::BootClock::boot_now_ns();
        let summary = detail
            .losses
            .iter()
            .map(|(what, n)| format!("{n} × {what}"))
            .collect::<Vec<_>>()
            .join("; ");
        let (rule_id, headline, description) = match detail.problem.as_str() {
            PROGRAMS_REFUSED => (
                "agent-programs-refused",
                "the kernel refused some of the agent's programs",
                "The kernel's verifier refused these programs at start, so what they observe is not seen on this node and the rules on it cannot match (`rasp-agent status` lists every program). Usually a kernel older than the agent needs (bpf_rdonly_cast: Linux 6.2, the numeric iterator: 6.4, the io_uring tracepoint: 6.4) or a verifier limit on this kernel line (`cargo xtask vm-verify` checks another kernel).",
            ),
            "journal_write_failed" => (
                "agent-journal-failure",
                "detections did not reach the journal",
                "The detection journal could not be written (disk full, read-only or missing state directory): detections stay in memory (`rasp-agent detections`) and reach followers, but not the export sinks (they deliver from the journal); they are counted as lost from the journal. Free space or fix the state directory; writing resumes by itself.",
            ),
            _ => (
                "agent-event-loss",
                "the agent lost events",
                "The kernel could not hand the agent every event (ring buffer full, reads failed): detections may be missing for this interval. Raise --ring-buffer-size, check the agent's CPU, or look for an event storm.",
            ),
        };
        let event = Arc::new(Event {
            time: WallTime::from_system(now),
            ts_boot_ns: boot_ns,
            comm: "rasp-agent".into(),
            ..Event::new(
                pid,
                std::os::unix::process::parent_id(),
                EventDetail::AgentHealth(detail),
            )
        });
        self.path.hub.publish(&mut vec![event.clone()]);
        let set = self.path.policies.registry().current();
        let d = Detection {
            id: format!(
                "health-{}",
                now.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0)
            ),
            time: humantime::format_rfc3339_micros(now).to_string(),
            rule_id: rule_id.into(),
            policy: "rasp-agent".into(),
            policy_version: 1,
            policy_set_version: set.version,
            mode: Mode::Audit,
            severity: Severity::High,
            action: Action::Alert,
            outcome: Outcome::Alerted,
            outcome_detail: Some(format!("{headline}: {summary}")),
            description: Some(description.into()),
            event,
            process: ProcessSummary {
                pid,
                comm: "rasp-agent".into(),
                exe: None,
                argv: Default::default(),
                argv_truncated: false,
                uid: Some(0),
            },
            ancestry: Vec::new(),
            latency_us: 0,
            count: 1,
            last_time: None,
            kill_scope: None,
            quarantine_mode: None,
        };
        self.path.metrics.detection(&d.rule_id, d.severity, d.mode);
        self.path.store.submit(d);
    }
}

/// The kernel network cut quarantine needs, through the deny maps the policy control owns.
impl crate::enforce::NetworkCut for crate::policy::reload::PolicyControl {
    fn cut(&self, cgroup_id: u64, rule_slot: u32) -> Result<(), String> {
        self.quarantine_cgroup(cgroup_id, rule_slot)
    }

    fn restore(&self, cgroup_id: u64) -> Result<(), String> {
        self.release_cgroup(cgroup_id)
    }
}
