//! `rasp-replay`: kernel records, built as the eBPF programs build them, fed through the
//! agent's own pipeline code — decode → cgroup path → process table → rules → fold/store →
//! event hub (and, for queries, the SQL analyzer's judge) — with no ring buffer and no
//! kernel, so that the userspace cost of one event is a deterministic instruction count
//! under `valgrind --tool=callgrind`, and a native run measures how many events a second
//! one core of that code drains.
//!
//! The stages are the rasp-agent library's own: the event path the daemon builds (here
//! without a kernel), and `pipeline::Batches` and `pipeline::SqlStage`, the very code
//! `pipeline::run` and its SQL analyzer thread run, so this harness cannot drift from the
//! daemon.

pub mod records;

use std::path::PathBuf;
use std::sync::{mpsc::Receiver, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rasp_agent::agent::EventPath;
use rasp_agent::detect::{engine::Engine, sql::ServiceShapes};
use rasp_agent::enforce::Enforcer;
use rasp_agent::events::{
    decode, latency::Latencies, reader::MAX_BATCH, BootClock, Event, EventHub,
};
use rasp_agent::loader::uprobe::discovery::{Feed, Sighting};
use rasp_agent::metrics::Metrics;
use rasp_agent::pipeline::{Batches, FaultInjection, SqlStage};
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

/// The agent's event path, as `daemon` builds it for `pipeline::run`, and the pipeline's
/// own batch and SQL stages.
pub struct Pipeline {
    clock: BootClock,
    path: EventPath,
    batches: Batches,
    sql: SqlStage,
    pub decode_errors: u64,
    // The uprobe task that reads the feed does not run here; its queue stays open.
    _sightings: Receiver<Sighting>,
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
        let (uprobe_feed, sightings) = Feed::new();
        // No deny maps are attached to the policies: a quarantine's network cut fails, as
        // it must without a kernel.
        let path = EventPath {
            hub: EventHub::new(4096, 8192),
            latency: Latencies::default(),
            table: RwLock::new(ProcessTable::new(65536, Duration::from_secs(30))),
            policies,
            engine: Engine::live(),
            // Synthesised pids may be real processes': decide, never act.
            enforcer: Enforcer::dry_run(&state_dir, &[], 30).map_err(|e| anyhow!(e))?,
            store,
            metrics,
            sql_shapes: Mutex::new(ServiceShapes::new(Default::default())),
            cgroups,
            containers,
            uprobe_feed,
        };
        Ok(Pipeline {
            clock: BootClock::now(),
            path,
            batches: Batches::new(FaultInjection::default()),
            sql: SqlStage::default(),
            decode_errors: 0,
            _sightings: sightings,
        })
    }

    /// Rules in the active set.
    pub fn rules(&self) -> usize {
        let set = self.path.policies.registry().current();
        set.policies.iter().map(|p| p.rules.len()).sum()
    }

    /// Rule matches so far (every one reaches the store, folded early or submitted), and
    /// how many of them the store folded.
    pub fn matches(&self) -> (u64, u64) {
        let stats = self.path.store.stats();
        (stats.submitted, stats.folded)
    }

    /// Every record, in batches of the reader's size, as `pipeline::run` takes them. The
    /// SQL stage runs inline (the agent runs it on its own thread behind a bounded
    /// queue); the HTTP stage does not run (its own thread in the agent; no replay kind
    /// carries plaintext), so what it is offered is taken and left.
    pub fn run(&mut self, records: &[Vec<u8>]) {
        let mut batch: Vec<Event> = Vec::with_capacity(MAX_BATCH);
        let Pipeline {
            clock,
            path,
            batches,
            sql,
            decode_errors,
            ..
        } = self;
        for chunk in records.chunks(MAX_BATCH) {
            for bytes in chunk {
                match decode(bytes, *clock) {
                    Ok(ev) => batch.push(ev),
                    Err(_) => {
                        *decode_errors += 1;
                        path.hub.count_decode_error();
                    }
                }
            }
            batches.run(
                path,
                &mut batch,
                |ev| {
                    sql.judge(path, &ev);
                    true
                },
                |_| true,
            );
        }
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
    /// Rule matches among the measured events, and how many of them folded into an
    /// earlier detection's aggregate (the store's count: early, before a detection was
    /// built, or when one was submitted).
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
    let (matches, folded) = pipeline.matches();
    let started = Instant::now();
    measured_phase(&mut pipeline, &replay.measured);
    let seconds = started.elapsed().as_secs_f64();
    let (matches_after, folded_after) = pipeline.matches();
    Ok(ReplayReport {
        kind,
        events: replay.measured.len(),
        population,
        rules: pipeline.rules(),
        matches: matches_after - matches,
        folded: folded_after - folded,
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
