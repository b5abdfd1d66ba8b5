//! `rasp-replay`: kernel records, built as the eBPF programs build them, fed through the
//! agent's own pipeline code — decode → cgroup path → process table → rules → fold/store →
//! event hub (and, for queries, the SQL analyzer's judge) — with no ring buffer and no
//! kernel, so that the userspace cost of one event is a deterministic instruction count
//! under `valgrind --tool=callgrind`, and a native run measures how many events a second
//! one core of that code drains.
//!
//! The stages are the rasp-agent library's public types, wired the way `pipeline::run`
//! wires them. `pipeline::decide`/`settle` are private to the agent, so `Pipeline::batch`
//! below repeats their dozen lines: a public per-batch entry point in the agent (taking the
//! table, engine, store, hub, metrics and enforcer) would let this harness call the very
//! function the daemon calls.

pub mod records;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use rasp_agent::detect::{engine::Engine, sql, Detection, Outcome};
use rasp_agent::enforce::Enforcer;
use rasp_agent::events::{
    decode, latency::Latencies, reader::MAX_BATCH, BootClock, Event, EventDetail, EventHub, Kind,
};
use rasp_agent::metrics::Metrics;
use rasp_agent::policy::reload::PolicyControl;
use rasp_agent::process::{
    cgroup::CgroupResolver, container::Containers, runtime::RuntimeSockets, ProcessTable,
};
use rasp_agent::store::{DetectionStore, StoreOptions};
use serde::Serialize;

use records::Task;

/// The cgroup every replayed process sits in, resolved from the resolver's cache as a
/// long-running service's would be.
const CGROUP_ID: u64 = 0x5eed;
const CGROUP_PATH: &str = "/system.slice/orders.service";
/// Live processes in the table before the measured events (children of one shell).
pub const DEFAULT_POPULATION: u32 = 1000;

/// The kinds of event a replay can be made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplayKind {
    /// execve of common tools by the live processes (no rule matches).
    Exec,
    /// New children of the live processes.
    Fork,
    /// The exit of processes forked beforehand (not measured).
    Exit,
    /// Read-only opens of /etc/hosts, which no rule matches.
    OpenUnmatched,
    /// Reads of /etc/shadow by one process: read-shadow-file matches every one and all
    /// but the first fold into one detection.
    OpenFolded,
    /// Executable maps of libssl (no rule matches).
    LibraryLoad,
    /// TCP connects to 10.1.2.3:443 (no rule matches).
    Connect,
    /// PQsendQuery of a benign query whose literal changes (one shape, judged once).
    SqlQuery,
}

/// The agent's event-path stages, as `daemon` builds them for `pipeline::run`.
pub struct Pipeline {
    clock: BootClock,
    cgroups: Arc<CgroupResolver>,
    containers: Arc<Containers>,
    table: RwLock<ProcessTable>,
    policies: PolicyControl,
    engine: Engine,
    store: Arc<DetectionStore>,
    hub: EventHub,
    metrics: Arc<Metrics>,
    latency: Latencies,
    enforcer: Enforcer,
    sql: sql::Analyzer,
    shapes: sql::ShapeCache,
    /// Matches seen, and how many of them folded (never built).
    pub matches: u64,
    pub folded: u64,
    pub decode_errors: u64,
    // Reused between batches, as the pipeline reuses its own.
    shared: Vec<Arc<Event>>,
    detections: Vec<Detection>,
}

impl Pipeline {
    /// The agent's defaults (`rasp-agent run`'s): policies from `policies` or the built-in
    /// set, a 65536-process table with a 30 s exit grace, a 4096-event hub, a detection
    /// store journaling into `state_dir`.
    pub fn new(policies: Option<PathBuf>, state_dir: PathBuf) -> Result<Pipeline> {
        let metrics = Arc::new(Metrics::new());
        let policies = PolicyControl::load_initial(policies, None, metrics.clone())
            .map_err(|problems| anyhow!("policies refused: {}", problems.join("; ")))?;
        let (store, _writer) = DetectionStore::open(StoreOptions::in_dir(&state_dir))
            .context("opening the detection store")?;
        // The maintenance thread and the enricher do not run here (not on the event path):
        // misses stay misses, containers stay unnamed.
        let (cgroups, _maintenance) = CgroupResolver::new(PathBuf::from("/sys/fs/cgroup"));
        cgroups.learn(CGROUP_ID, CGROUP_PATH);
        let (containers, _enricher) = Containers::new(RuntimeSockets::none());
        Ok(Pipeline {
            clock: BootClock::now(),
            cgroups,
            containers,
            table: RwLock::new(ProcessTable::new(65536, Duration::from_secs(30))),
            policies,
            engine: Engine::live(),
            store,
            hub: EventHub::new(4096, 8192),
            metrics,
            latency: Latencies::default(),
            enforcer: Enforcer::new(PathBuf::from("/sys/fs/cgroup"), &state_dir, &[], 30)
                .map_err(|e| anyhow::anyhow!(e))?,
            sql: sql::Analyzer::default(),
            shapes: sql::ShapeCache::new(16384),
            matches: 0,
            folded: 0,
            decode_errors: 0,
            shared: Vec::with_capacity(MAX_BATCH),
            detections: Vec::new(),
        })
    }

    /// Rules in the active set.
    pub fn rules(&self) -> usize {
        let set = self.policies.registry().current();
        set.policies.iter().map(|p| p.rules.len()).sum()
    }

    /// Every record, in batches of the reader's size, as `pipeline::run` takes them.
    pub fn run(&mut self, records: &[Vec<u8>]) {
        let mut batch: Vec<Event> = Vec::with_capacity(MAX_BATCH);
        for chunk in records.chunks(MAX_BATCH) {
            for bytes in chunk {
                match decode(bytes, self.clock) {
                    Ok(ev) => batch.push(ev),
                    Err(_) => {
                        self.decode_errors += 1;
                        self.hub.count_decode_error();
                    }
                }
            }
            self.batch(&mut batch);
        }
    }

    /// `pipeline::run`'s per-batch closure, with the SQL analyzer's stage run inline (the
    /// agent runs it on its own thread behind a bounded queue).
    fn batch(&mut self, batch: &mut Vec<Event>) {
        let (cgroups, containers) = (&self.cgroups, &self.containers);
        self.shared.extend(batch.drain(..).map(|mut ev| {
            let hint = (ev.kind() != Kind::Exit).then_some(ev.pid);
            ev.cgroup = cgroups.resolve(ev.cgroup_id, hint);
            ev.container = containers.of(ev.cgroup_id, ev.cgroup.as_deref());
            Arc::new(ev)
        }));
        let set = self.policies.registry().current();
        let shared = std::mem::take(&mut self.shared);
        for ev in &shared {
            if ev.kind() == Kind::SqlQuery {
                self.analyze_sql(&set, ev);
                continue;
            }
            rasp_agent::write(&self.table).apply(ev);
            self.decide(&set, ev);
        }
        self.shared = shared;
        self.hub.publish(&mut self.shared);
        self.settle();
    }

    /// `pipeline::decide`.
    fn decide(&mut self, set: &rasp_agent::policy::active::PolicySet, ev: &Arc<Event>) {
        let table = rasp_agent::read(&self.table);
        let (store, metrics, latency) = (&self.store, &self.metrics, &self.latency);
        let (mut matches, mut folded) = (0, 0);
        let detections = &mut self.detections;
        self.engine.for_each_match(set, ev, &table, |m| {
            matches += 1;
            latency.detections.record_ns(m.latency_us * 1000);
            metrics.detection(&m.rule.id, m.rule.severity, m.mode());
            let fold =
                Outcome::without_acting(m.action(), m.mode()).is_some_and(|(outcome, detail)| {
                    let fold = store.fold(&m.fold_key(outcome, detail), SystemTime::now());
                    if fold {
                        metrics.action(m.action(), outcome);
                    }
                    fold
                });
            if fold {
                folded += 1;
            } else {
                detections.push(m.detection());
            }
        });
        self.matches += matches;
        self.folded += folded;
    }

    /// `pipeline::settle`.
    fn settle(&mut self) {
        for mut d in self.detections.drain(..) {
            (d.outcome, d.outcome_detail) = self.enforcer.act(&d, &NoKernel);
            self.metrics.action(d.action, d.outcome);
            self.store.submit(d);
        }
    }

    /// The SQL analyzer's stage for one query event (`pipeline::sql_analyzer`).
    fn analyze_sql(&mut self, set: &rasp_agent::policy::active::PolicySet, ev: &Arc<Event>) {
        let EventDetail::SqlQuery(d) = &ev.detail else {
            return;
        };
        let judged = self.sql.judge(&mut self.shapes, &d.query, d.truncated);
        let v = judged.verdict;
        let mut findings: Vec<String> = v.kinds.iter().map(|k| k.name().to_string()).collect();
        if v.injection {
            findings.insert(0, "injection".to_string());
        }
        let mut analyzed = (**ev).clone();
        if let EventDetail::SqlQuery(d) = &mut analyzed.detail {
            d.analyzed = true;
            d.findings = findings;
            d.score_permille = Some((v.score.clamp(0.0, 1.0) * 1000.0) as u16);
            d.shape = Some(format!("{:016x}", judged.shape.0));
        }
        let analyzed = Arc::new(analyzed);
        self.decide(set, &analyzed);
        self.hub.publish(&mut vec![analyzed]);
        self.settle();
    }
}

/// What a replay is made of: records that set the scene (not measured) and the measured
/// ones.
pub struct Replay {
    pub setup: Vec<Vec<u8>>,
    pub measured: Vec<Vec<u8>>,
}

/// Commands the live processes exec: tools and services a host runs, none a rule's match.
const COMMANDS: &[(&str, &[&str])] = &[
    ("/usr/bin/git", &["git", "status", "--short", "--branch"]),
    ("/usr/bin/ls", &["ls", "-la", "/var/log/nginx"]),
    (
        "/usr/bin/python3.11",
        &[
            "python3",
            "manage.py",
            "check",
            "--deploy",
            "--settings=orders.settings.prod",
        ],
    ),
    ("/usr/bin/grep", &["grep", "-rn", "TODO", "src/"]),
    (
        "/usr/bin/curl",
        &[
            "curl",
            "-fsS",
            "--max-time",
            "2",
            "http://127.0.0.1:8080/healthz",
        ],
    ),
];

impl Replay {
    /// `count` measured events of `kind`, among `population` live processes.
    pub fn build(kind: ReplayKind, count: u32, population: u32) -> Result<Replay> {
        if population == 0 || count == 0 {
            bail!("a replay needs at least one live process and one event");
        }
        if u64::from(population) + u64::from(count) > 60_000 {
            bail!("{population} processes + {count} events would overflow the agent's 65536-process table");
        }
        let mut ts = BootClock::boot_now_ns();
        let mut tick = || {
            ts += 1_000;
            ts
        };
        let shell = Task {
            pid: 1000,
            ppid: 1,
            start_ns: 1_000_000,
            uid: 1000,
            cgroup_id: CGROUP_ID,
            comm: "bash",
        };
        let mut setup = vec![records::exec(
            &shell,
            tick(),
            "/usr/bin/bash",
            "/srv/orders",
            &["-bash"],
        )];
        let live: Vec<Task> = (0..population)
            .map(|i| Task {
                pid: 2000 + i,
                ppid: shell.pid,
                start_ns: 2_000_000 + u64::from(i),
                ..shell
            })
            .collect();
        for task in &live {
            setup.push(records::fork(task, tick()));
        }
        let nth = |i: u32| &live[(i % population) as usize];
        // Fresh children for fork/exit, numbered past the live ones.
        let child = |i: u32| Task {
            pid: 100_000 + i,
            ppid: nth(i).pid,
            start_ns: 50_000_000 + u64::from(i),
            ..*nth(i)
        };
        let mut measured = Vec::with_capacity(count as usize);
        match kind {
            ReplayKind::Exec => {
                for i in 0..count {
                    let (exe, argv) = COMMANDS[i as usize % COMMANDS.len()];
                    let task = Task {
                        comm: argv[0],
                        ..*nth(i)
                    };
                    measured.push(records::exec(&task, tick(), exe, "/srv/orders", argv));
                }
            }
            ReplayKind::Fork => {
                for i in 0..count {
                    measured.push(records::fork(&child(i), tick()));
                }
            }
            ReplayKind::Exit => {
                for i in 0..count {
                    setup.push(records::fork(&child(i), tick()));
                }
                for i in 0..count {
                    measured.push(records::exit(&child(i), tick(), 0));
                }
            }
            ReplayKind::OpenUnmatched => {
                for i in 0..count {
                    measured.push(records::open_read(nth(i), tick(), "/etc/hosts", 3));
                }
            }
            ReplayKind::OpenFolded => {
                for _ in 0..count {
                    measured.push(records::open_read(&live[0], tick(), "/etc/shadow", 3));
                }
            }
            ReplayKind::LibraryLoad => {
                for i in 0..count {
                    measured.push(records::library_load(
                        nth(i),
                        tick(),
                        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                        4,
                    ));
                }
            }
            ReplayKind::Connect => {
                for i in 0..count {
                    measured.push(records::connect_v4(nth(i), tick(), [10, 1, 2, 3], 443, 5));
                }
            }
            ReplayKind::SqlQuery => {
                for i in 0..count {
                    let query = format!(
                        "SELECT id, name, email FROM customers WHERE id = {} AND region = 'eu-west'",
                        i % 10_000
                    );
                    measured.push(records::sql_query(nth(i), tick(), 0x5600_0000, &query));
                }
            }
        }
        Ok(Replay { setup, measured })
    }
}

/// The one JSON line `rasp-replay` prints.
#[derive(Debug, Serialize)]
pub struct ReplayReport {
    pub kind: ReplayKind,
    pub events: usize,
    pub population: u32,
    pub rules: usize,
    /// Rule matches among the measured events, and how many of them folded.
    pub matches: u64,
    pub folded: u64,
    pub decode_errors: u64,
    /// Wall time of the measured events on this thread, and per event.
    pub seconds: f64,
    pub ns_per_event: f64,
}

/// Builds the pipeline, sets the scene, then runs the measured records through
/// `measured_phase` (the function callgrind is told to count).
pub fn run(
    kind: ReplayKind,
    count: u32,
    population: u32,
    policies: Option<PathBuf>,
    state_dir: PathBuf,
) -> Result<ReplayReport> {
    let replay = Replay::build(kind, count, population)?;
    let mut pipeline = Pipeline::new(policies, state_dir)?;
    pipeline.run(&replay.setup);
    let (matches, folded) = (pipeline.matches, pipeline.folded);
    let started = Instant::now();
    measured_phase(&mut pipeline, &replay.measured);
    let seconds = started.elapsed().as_secs_f64();
    Ok(ReplayReport {
        kind,
        events: replay.measured.len(),
        population,
        rules: pipeline.rules(),
        matches: pipeline.matches - matches,
        folded: pipeline.folded - folded,
        decode_errors: pipeline.decode_errors,
        seconds,
        ns_per_event: seconds * 1e9 / replay.measured.len() as f64,
    })
}

/// The measured events through the pipeline. Not inlined, so `valgrind --tool=callgrind
/// --toggle-collect='*measured_phase*'` counts exactly this and what it calls.
#[inline(never)]
pub fn measured_phase(pipeline: &mut Pipeline, records: &[Vec<u8>]) {
    pipeline.run(std::hint::black_box(records));
}

/// A replay has no kernel: no network to cut, no recent events to snapshot.
struct NoKernel;

impl rasp_agent::enforce::NetworkCut for NoKernel {
    fn cut(&self, _: u64, _: u32) -> Result<(), String> {
        Err("replay: no kernel".into())
    }

    fn restore(&self, _: u64) -> Result<(), String> {
        Err("replay: no kernel".into())
    }
}

impl rasp_agent::enforce::EnforceContext for NoKernel {
    fn network(&self) -> &dyn rasp_agent::enforce::NetworkCut {
        self
    }

    fn recent_events(&self, _: u64) -> Vec<Arc<Event>> {
        Vec::new()
    }

    fn rule_names_cgroups(&self, _: &str) -> bool {
        false
    }

    fn rule_slot(&self, _: &str) -> u32 {
        0
    }
}
