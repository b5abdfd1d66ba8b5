//! `rasp-agent run`: wires the pieces together. Order matters: take the socket first (a
//! second agent fails before touching the kernel), prepare the environment, load and attach,
//! seed the process table, then drain events and serve clients until SIGINT/SIGTERM. On the
//! way out everything is detached (nothing is pinned) and the socket removed.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use tokio::sync::{broadcast, watch};

use crate::{
    api::{
        self,
        protocol::{KindStats, PolicyFile, PolicyListing, ProcessStats, Status},
        Access, Backend, DetectionFilter, Endpoint,
    },
    detect::{engine::Engine, Detection, Outcome},
    enforce::Enforcer,
    events::{
        hub::EventFilter,
        latency::Latencies,
        reader::{self, StopSignal},
        BootClock, Event, EventHub, Kind,
    },
    loader::{self, env, LsmStatus, ProgramStatus},
    policy::{
        self,
        active::{PolicyRegistry, PolicySet, PolicySetSummary},
    },
    process::{cgroup::CgroupResolver, Process, ProcessTable},
    store::{index::DetectionQuery, DetectionStore, StoreOptions},
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
}

/// Everything clients can ask about, shared between the event path and the API.
struct Agent {
    started: Instant,
    args: RunArgs,
    kernel_release: String,
    environment: env::Environment,
    programs: Vec<ProgramStatus>,
    lsm: LsmStatus,
    hub: EventHub,
    /// Kernel→dequeue (events) and kernel→decision (detections) latencies since start.
    latency: Latencies,
    table: RwLock<ProcessTable>,
    counters: Mutex<reader::KernelCounters>,
    registry: PolicyRegistry,
    /// Problems of the last reload that was refused (the previous set stayed active).
    reload_errors: Mutex<Vec<String>>,
    engine: Engine,
    enforcer: Enforcer,
    store: Arc<DetectionStore>,
    /// The kernel pre-filters; rewritten whenever the active policy set changes.
    interest: Mutex<loader::InterestMaps>,
}

impl Backend for Agent {
    fn status(&self) -> Status {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let events: BTreeMap<String, KindStats> = Kind::ALL
            .iter()
            .map(|&k| {
                let stats = KindStats {
                    received: self.hub.received(k),
                    dropped: counters.dropped(k),
                    read_errors: counters.read_errors(k),
                };
                (k.name().to_string(), stats)
            })
            .collect();
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        let policy = self.registry.current();
        Status {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            kernel_release: self.kernel_release.clone(),
            lsm: self.lsm.clone(),
            programs: self.programs.clone(),
            ring_buffer_bytes: self.args.ring_buffer_size,
            events,
            decode_errors: self.hub.decode_errors(),
            event_buffer: self.hub.capacity(),
            followers: self.hub.followers(),
            processes: ProcessStats {
                tracked: table.len(),
                exited: table.exited(),
                evicted: table.evicted(),
            },
            cgroup2_mount: self.environment.cgroup2.display().to_string(),
            socket: self.args.socket.display().to_string(),
            state_dir: self.args.state_dir.display().to_string(),
            environment: self.environment.notes.clone(),
            policy_set_version: policy.version,
            policy_source: policy.source.clone(),
            policy_reload_errors: self
                .reload_errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            detections: self.store.stats(),
            latency: self.latency.report(),
        }
    }

    fn recent_events(&self, filter: EventFilter, limit: Option<usize>) -> Vec<Arc<Event>> {
        self.hub.recent(filter, limit.unwrap_or(usize::MAX))
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.hub.subscribe()
    }

    fn processes(&self) -> Vec<Process> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.iter().cloned().collect()
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
        Ok(self.store.query(&query))
    }

    fn subscribe_detections(&self) -> broadcast::Receiver<Arc<Detection>> {
        self.store.subscribe()
    }

    fn policy_listing(&self) -> PolicyListing {
        PolicyListing {
            active: self.registry.current().summary(),
            history: self
                .registry
                .history()
                .iter()
                .map(|s| s.summary())
                .collect(),
        }
    }

    fn policy_apply(&self, files: Vec<PolicyFile>) -> Result<PolicySetSummary, Vec<String>> {
        let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        let files: Vec<(String, String)> = files.into_iter().map(|f| (f.name, f.text)).collect();
        let policies = policy::parse_files(&files)
            .map_err(|errors| errors.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
        let set = self
            .registry
            .apply(policies, format!("policy apply ({})", names.join(", ")));
        self.activate(&set);
        tracing::info!(version = set.version, source = %set.source, "policy set applied");
        Ok(set.summary())
    }

    fn policy_rollback(&self) -> Result<PolicySetSummary, String> {
        let set = self.registry.rollback()?;
        self.activate(&set);
        tracing::info!(version = set.version, restored_from = ?set.restored_from, "policy set rolled back");
        Ok(set.summary())
    }
}

impl Agent {
    /// Point the kernel pre-filters at what `set` needs. On failure the previous filters
    /// stay, and that is logged loudly: the new set's file, library and connect rules may
    /// then miss events.
    fn activate(&self, set: &PolicySet) {
        let interest = policy::compile::interest(&set.policies);
        let mut maps = self.interest.lock().unwrap_or_else(|p| p.into_inner());
        match maps.apply(&interest) {
            Ok(()) => tracing::debug!(
                version = set.version,
                ?interest,
                "kernel pre-filters updated"
            ),
            Err(e) => {
                tracing::error!(version = set.version, error = %e, "kernel pre-filters NOT updated")
            }
        }
    }

    /// Load the policy directory (or the defaults) and swap it in, or keep the active set and
    /// remember why not.
    fn reload(&self, why: &str) {
        let loaded = match &self.args.policies {
            Some(dir) => policy::load_paths(std::slice::from_ref(dir)),
            None => policy::default_policies(),
        };
        match loaded {
            Ok(policies) => {
                let source = policy_source(&self.args.policies, why);
                let set = self.registry.apply(policies, source);
                self.activate(&set);
                self.reload_errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                tracing::info!(version = set.version, why, "policies reloaded");
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "policy reload refused; the active set stays");
                }
                *self.reload_errors.lock().unwrap_or_else(|p| p.into_inner()) =
                    errors.iter().map(|e| e.to_string()).collect();
            }
        }
    }
}

fn policy_source(dir: &Option<PathBuf>, why: &str) -> String {
    match dir {
        Some(d) => format!("{} ({why})", d.display()),
        None => format!("built-in defaults ({why})"),
    }
}

pub async fn run(args: RunArgs) -> Result<()> {
    env::require_root()?;
    let access = Access {
        group: args.socket_group,
    };
    let mut endpoint = Endpoint::bind(&args.socket, access)?;

    // Policies before the kernel: a broken policy directory stops the agent here, with every
    // problem listed, before anything is loaded.
    let initial = match &args.policies {
        Some(dir) => policy::load_paths(std::slice::from_ref(dir)),
        None => policy::default_policies(),
    }
    .map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("the policies do not validate:\n{}", lines.join("\n"))
    })?;
    let mut store_opts = StoreOptions::in_dir(&args.state_dir);
    store_opts.max_bytes = args.journal_max_bytes;
    store_opts.keep = args.journal_keep;
    store_opts.fold_window = Duration::from_secs(args.fold_window);
    let (store, store_writer) = DetectionStore::open(store_opts)?;

    let environment = env::prepare()?;
    let loader::Loaded {
        mut ebpf,
        programs,
        lsm,
        interest,
    } = loader::load(&loader::LoadOptions {
        ring_bytes: args.ring_buffer_size,
    })?;
    let maps = loader::take_maps(&mut ebpf)?;
    // Parsing two copies of vmlinux BTF (ours for offsets, aya's for attaching) leaves
    // megabytes of freed heap behind; hand it back before settling in for the long run.
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };

    // Seed after attaching: a process born in between is seen by both, never by neither.
    let mut cgroups = CgroupResolver::new(environment.cgroup2.clone());
    let mut table = ProcessTable::new(args.max_processes, Duration::from_secs(args.exit_grace));
    let seeded = table.seed_from_proc(std::path::Path::new("/proc"), &mut cgroups);
    tracing::info!(processes = seeded, "process table seeded from /proc");

    let agent = Arc::new(Agent {
        started: Instant::now(),
        kernel_release: env::kernel_release().unwrap_or_default(),
        hub: EventHub::new(args.event_buffer, args.follower_queue),
        latency: Latencies::default(),
        table: RwLock::new(table),
        counters: Mutex::new(reader::KernelCounters::new(maps.drops, maps.read_errors)),
        programs,
        lsm,
        interest: Mutex::new(interest),
        registry: PolicyRegistry::new(initial, policy_source(&args.policies, "start")),
        reload_errors: Mutex::new(Vec::new()),
        engine: Engine::live(),
        enforcer: Enforcer::new(environment.cgroup2.clone()),
        store,
        environment,
        args: args.clone(),
    });
    agent.activate(&agent.registry.current());
    if !agent.lsm.available {
        tracing::warn!(reason = %agent.lsm.reason, "BPF-LSM unavailable; enforcement will use fallbacks");
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_reader = Arc::new(StopSignal::new().context("creating the reader's stop eventfd")?);
    let pipeline = {
        let (agent, stop) = (agent.clone(), stop_reader.clone());
        tokio::task::spawn_blocking(move || pipeline(maps.ring, agent, cgroups, &stop))
    };
    let reaper = tokio::spawn(reap(agent.clone(), stop_rx.clone()));
    let journal = tokio::spawn(store_writer.run(stop_rx.clone()));
    let reloader = tokio::spawn(watch_policies(agent.clone(), stop_rx.clone()));
    let backend: Arc<dyn Backend> = agent.clone();
    let server = tokio::spawn(async move {
        let r = api::serve(&mut endpoint, access, backend, stop_rx).await;
        (endpoint, r)
    });
    tracing::info!(socket = %args.socket.display(), "rasp-agent running");

    let signal = wait_for_signal().await?;
    tracing::info!(signal, "shutting down");
    let _ = stop_tx.send(true);
    stop_reader.raise();
    let (endpoint, served) = server.await.context("socket server task")?;
    served?;
    drop(endpoint); // removes the socket and its lock
    pipeline.await.context("event pipeline task")??;
    reaper.await.context("reaper task")?;
    reloader.await.context("policy watcher task")?;
    journal.await.context("journal task")??;
    drop(ebpf); // detaches every program
    tracing::info!("stopped");
    Ok(())
}

/// Gives the calling thread (only it: a thread id, not the process) nice value `nice`; a
/// refusal is logged, and the agent runs on at the default priority.
fn set_thread_nice(nice: i32) {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    let tid = unsafe { libc::gettid() };
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(nice, error = %e, "could not set the ring-buffer reader's priority");
    } else {
        tracing::debug!(nice, tid, "ring-buffer reader priority set");
    }
}

/// Ring buffer → decode → cgroup path → process table → rules → hub, enforcement, store.
/// Runs on a thread of its own (see `events::reader`), one batch at a time: one process table
/// lock per batch, and the batch buffers are reused, not reallocated per wakeup. A match that
/// repeats an open fold window is only counted (`DetectionStore::fold`): a storm of identical
/// detections costs about what the same events cost without a rule.
fn pipeline(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    agent: Arc<Agent>,
    mut cgroups: CgroupResolver,
    stop: &StopSignal,
) -> Result<()> {
    set_thread_nice(agent.args.drain_nice);
    let clock = BootClock::now();
    let mut shared: Vec<Arc<Event>> = Vec::with_capacity(reader::MAX_BATCH);
    let mut detections = Vec::new();
    reader::drain(
        ring,
        clock,
        stop,
        &agent.latency.events,
        |batch| {
            shared.extend(batch.drain(..).map(|mut ev| {
                // The exiting process's /proc entry is going away; the id is enough.
                let hint = (ev.kind() != Kind::Exit).then_some(ev.pid);
                ev.cgroup = cgroups.resolve(ev.cgroup_id, hint);
                Arc::new(ev)
            }));
            let set = agent.registry.current();
            {
                let mut table = agent.table.write().unwrap_or_else(|p| p.into_inner());
                for ev in &shared {
                    table.apply(ev);
                    agent.engine.for_each_match(&set, ev, &table, |m| {
                        agent.latency.detections.record_ns(m.latency_us * 1000);
                        // Nothing to do to the process: the outcome is known, so a repeat of
                        // an open fold window is counted there and never built. An action
                        // that acts always gets its own detection and acts.
                        let folded = Outcome::without_acting(m.action(), m.mode())
                            .is_some_and(|(outcome, detail)| {
                                agent
                                    .store
                                    .fold(&m.fold_key(outcome, detail), SystemTime::now())
                            });
                        if !folded {
                            detections.push(m.detection());
                        }
                    });
                }
            }
            agent.hub.publish(&mut shared);
            for mut d in detections.drain(..) {
                (d.outcome, d.outcome_detail) = agent.enforcer.act(d.action, d.mode, &d.event);
                if d.outcome != Outcome::Alerted && d.outcome != Outcome::Audited {
                    tracing::warn!(rule = %d.rule_id, pid = d.process.pid, outcome = ?d.outcome, detail = ?d.outcome_detail, "enforced");
                }
                agent.store.submit(d);
            }
        },
        |e| {
            tracing::warn!(error = %e, "undecodable record");
            agent.hub.count_decode_error();
        },
    )
    .context("draining the ring buffer")
}

async fn reap(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let reaped = agent
            .table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .reap(Instant::now());
        if reaped > 0 {
            tracing::trace!(reaped, "exited processes reaped");
        }
    }
}

/// Reload on SIGHUP, and when the policy directory's files change (polled: cheap, and works
/// on every filesystem, unlike inotify on some overlay and network mounts).
async fn watch_policies(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: reload with `policy apply` instead");
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut seen = agent.args.policies.as_deref().map(policy::fingerprint);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                agent.reload("SIGHUP");
                seen = agent.args.policies.as_deref().map(policy::fingerprint);
            }
            _ = tick.tick() => {
                let now = agent.args.policies.as_deref().map(policy::fingerprint);
                if now != seen {
                    seen = now;
                    agent.reload("directory changed");
                }
            }
        }
    }
}

async fn wait_for_signal() -> Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
