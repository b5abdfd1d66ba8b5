//! `rasp-agent run`: wires the pieces together. Order matters: take the socket first (a
//! second agent fails before touching the kernel), prepare the environment, load and attach,
//! seed the process table, then drain events and serve clients until SIGINT/SIGTERM — or
//! until the event pipeline dies, which takes the agent down with an error rather than
//! leaving the socket answering while nothing is detected. On the way out everything is
//! detached (nothing is pinned) and the socket removed.

use std::{
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::sync::watch;

pub use crate::agent::RunArgs;
use crate::{
    agent::{Agent, EventPath},
    api::{self, Access, Backend, Endpoint},
    detect::engine::Engine,
    enforce::{
        hold::{self, HoldMaps, HoldScope, Holds},
        Enforcer,
    },
    events::{
        latency::Latencies,
        reader::{self, StopSignal},
        EventHub,
    },
    loader::{
        self, env,
        uprobe::{attach::Uprobes, discovery::Feed, discovery::Sighting},
    },
    metrics::{self, Metrics},
    pipeline::{self, FaultInjection},
    policy::reload::PolicyControl,
    process::{cgroup::CgroupResolver, container::Containers, ProcessTable},
    store::{export::Exports, DetectionStore, StoreOptions},
};

pub async fn run(args: RunArgs) -> Result<()> {
    env::require_root()?;
    let access = Access {
        group: args.socket_group,
    };
    let mut endpoint = Endpoint::bind(&args.socket, access)?;

    // Policies before the kernel: a broken policy directory stops the agent here, with every
    // problem listed, before anything is loaded.
    let metrics = Arc::new(Metrics::new());
    let policies = PolicyControl::load_initial(
        args.policies.clone(),
        Some(&args.state_dir),
        metrics.clone(),
    )
    .map_err(|problems| {
        anyhow::anyhow!("the policies do not validate:\n{}", problems.join("\n"))
    })?;
    // The endpoint answers from before the programs load: /healthz 200, /readyz 503 until
    // the agent's own numbers are handed over below.
    let (stop_tx, stop_rx) = watch::channel(false);
    let scrape_source = Arc::new(metrics::DeferredSource::new());
    let metrics_server = metrics::MetricsServer::bind(args.metrics)
        .await
        .with_context(|| format!("metrics endpoint on {}", args.metrics))?;
    let metrics_addr = metrics_server.local_addr();
    let metrics_task =
        tokio::spawn(metrics_server.run(metrics.clone(), scrape_source.clone(), stop_rx.clone()));
    let mut store_opts = StoreOptions::in_dir(&args.state_dir);
    store_opts.max_bytes = args.journal_max_bytes;
    store_opts.keep = args.journal_keep;
    store_opts.fold_window = Duration::from_secs(args.fold_window);
    let (store, store_writer) = DetectionStore::open(store_opts)?;
    // Sinks start before anything is detected, so they see every journal write from here on.
    let exports = Exports::start(
        &args.export,
        &args.state_dir,
        metrics.clone(),
        store.journal_written(),
    )?;

    let environment = env::prepare()?;
    let loader::Loaded {
        mut ebpf,
        programs,
        lsm,
        interest,
        deny,
        caps,
        mut links,
        verified,
    } = loader::load(&loader::LoadOptions {
        ring_bytes: args.ring_buffer_size,
        cgroup2: environment.cgroup2.clone(),
        refuse: args.fault_refuse_program.clone(),
    })?;
    let maps = loader::take_maps(&mut ebpf)?;
    // Hold and decide on libpq: the maps, and the watchdog that bounds every hold even
    // if this process dies. Without them queries are still judged, never held.
    let holding = match HoldMaps::take(&mut ebpf) {
        Ok(maps) => {
            let HoldMaps {
                tgids,
                held,
                decisions,
                held_fd_for_watchdog,
            } = maps;
            let bound = Duration::from_millis(args.hold_bound_ms);
            match hold::spawn_watchdog(held_fd_for_watchdog, bound) {
                Ok(pid) => {
                    tracing::info!(
                        watchdog = pid,
                        bound_ms = args.hold_bound_ms,
                        "hold watchdog started"
                    );
                    Some((HoldScope::new(tgids), Holds::new(held), decisions, pid))
                }
                Err(e) => {
                    tracing::error!(error = %e, "no hold watchdog: SQL queries are judged, never held");
                    None
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "no hold maps: SQL queries are judged, never held");
            None
        }
    };
    let mut sql_hold = crate::api::protocol::SqlHoldReport::default();
    let (hold_scope, holds) = match holding {
        Some((scope, holds, ring, watchdog)) => {
            sql_hold.enabled = true;
            sql_hold.watchdog_pid = Some(watchdog);
            (Some(scope), Some((holds, ring)))
        }
        None => (None, None),
    };
    let mut programs = programs;
    // The capture bounds are in the kernel before any OpenSSL probe attaches.
    let bounds = loader::tls::CaptureBounds {
        call_cap: args.tls_call_cap,
        burst_budget: args.tls_burst_budget,
    };
    let tls_capture = match loader::tls::TlsCapture::start(&mut ebpf, bounds, &verified, &mut links)
    {
        Ok((capture, statuses)) => {
            programs.extend(statuses);
            Some(capture)
        }
        Err(e) => {
            tracing::error!(error = %e, "no OpenSSL plaintext capture");
            None
        }
    };
    let (uprobes, uprobe_programs) = Uprobes::load(&mut ebpf, &verified);
    programs.extend(uprobe_programs);
    // Parsing two copies of vmlinux BTF (ours for offsets, aya's for attaching) leaves
    // megabytes of freed heap behind; hand it back before settling in for the long run.
    // SAFETY: malloc_trim only releases free memory.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0)
    };

    // Seed after attaching: a process born in between is seen by both, never by neither.
    let (cgroups, cgroup_maintenance) = CgroupResolver::new(environment.cgroup2.clone());
    let (containers, enricher) = Containers::new(args.runtime_sockets.clone());
    let mut table = ProcessTable::new(args.max_processes, Duration::from_secs(args.exit_grace));
    let seeded = table.seed_from_proc(std::path::Path::new("/proc"), &cgroups);
    tracing::info!(processes = seeded, "process table seeded from /proc");
    let (uprobe_feed, sightings) = Feed::new();

    let path = EventPath {
        hub: EventHub::new(args.event_buffer, args.follower_queue),
        latency: Latencies::default(),
        table: RwLock::new(table),
        policies,
        engine: Engine::live(),
        enforcer: Enforcer::new(
            environment.cgroup2.clone(),
            &args.state_dir,
            &args.protect_cgroup,
            args.actions_per_minute,
        )
        .map_err(|e| anyhow::anyhow!(e))?,
        store,
        metrics,
        sql_shapes: Mutex::new(crate::detect::sql::ServiceShapes::new(Default::default())),
        cgroups,
        containers: containers.clone(),
        uprobe_feed,
    };
    let agent = Arc::new(Agent {
        path,
        started: Instant::now(),
        kernel_release: env::kernel_release().unwrap_or_default(),
        record_bytes: reader::RecordBytes::default(),
        counters: Mutex::new(reader::KernelCounters::new(maps.losses, maps.loss_lines)),
        programs,
        lsm,
        pipeline: Mutex::new("running".to_string()),
        metrics_addr,
        uprobe_targets: Mutex::new(Vec::new()),
        sql_hold: Mutex::new(sql_hold),
        sql_analyzer: std::sync::OnceLock::new(),
        http_analyzer: std::sync::OnceLock::new(),
        http_stage: Mutex::new(None),
        tls_capture,
        exports: exports.stats(),
        environment,
        args: args.clone(),
    });
    agent.path.policies.attach_interest(interest);
    agent.path.policies.attach_deny(deny, caps);
    if !agent.lsm.available {
        tracing::warn!(reason = %agent.lsm.reason, "BPF-LSM unavailable; enforcement will use fallbacks");
    }
    // What this kernel refused is a blind spot of this node: a detection, not only a log.
    let refused = verified.refused();
    if !refused.is_empty() {
        for (program, why) in &refused {
            tracing::error!(program, why, "the kernel refused a program");
        }
        agent.report_health(crate::events::AgentHealthDetail {
            problem: crate::agent::PROGRAMS_REFUSED.to_string(),
            losses: refused
                .into_iter()
                .map(|(program, why)| (format!("{program}: {why}"), 1))
                .collect(),
            interval_secs: 0,
        });
    }

    scrape_source.set(agent.clone());
    // The eBPF object moves behind a lock: the uprobe task attaches to libraries as they
    // are found; dropping it at the end detaches everything.
    let probes = Arc::new(Mutex::new((ebpf, uprobes)));
    let uprobe_task = {
        let (probes, agent, stop) = (probes.clone(), agent.clone(), stop_rx.clone());
        tokio::task::spawn_blocking(move || {
            track_uprobe_targets(&probes, &agent, &sightings, hold_scope, &stop)
        })
    };
    let stop_reader = Arc::new(StopSignal::new().context("creating the reader's stop eventfd")?);
    let faults = FaultInjection {
        panic_on_exec_comm: args.fault_panic_on_exec_comm.clone(),
    };
    // The HTTP stage is fed by both rings: plaintext and queries from the bulk one, held
    // queries from the decision one (it stops once both threads let go of it).
    let http = pipeline::http_stage(agent.clone()).context("starting the HTTP stage")?;
    let _ = agent.http_analyzer.set(http.stats_handle());
    let decisions = holds.map(|(holds, ring)| {
        let (agent, stop, http) = (agent.clone(), stop_reader.clone(), http.sender());
        tokio::task::spawn_blocking(move || {
            pipeline::run_decisions(ring, holds, agent, &stop, http)
        })
    });
    let mut pipeline = {
        let (agent, stop) = (agent.clone(), stop_reader.clone());
        tokio::task::spawn_blocking(move || pipeline::run(maps.ring, agent, &stop, faults, http))
    };
    // Off the event path: cgroup rescans and forgetting gone cgroups (a thread of its own),
    // and asking the runtimes for container names (a task of its own).
    let cgroup_task = {
        let (containers, stop) = (containers.clone(), stop_rx.clone());
        tokio::task::spawn_blocking(move || cgroup_maintenance.run(&containers, &|| *stop.borrow()))
    };
    let enricher_task = tokio::spawn(enricher.run(stop_rx.clone()));
    let reaper = tokio::spawn(reap(agent.clone(), stop_rx.clone()));
    let health = tokio::spawn(watch_losses(agent.clone(), stop_rx.clone()));
    let journal = tokio::spawn(store_writer.run(stop_rx.clone()));
    let reloader = {
        let (agent, stop) = (agent.clone(), stop_rx.clone());
        tokio::spawn(async move { agent.path.policies.watch(stop).await })
    };
    let backend: Arc<dyn Backend> = agent.clone();
    let server = tokio::spawn(async move {
        let r = api::serve(&mut endpoint, access, backend, stop_rx).await;
        (endpoint, r)
    });
    tracing::info!(socket = %args.socket.display(), "rasp-agent running");

    // The pipeline is the agent's reason to exist: if it ends on its own (an error or a
    // panic), say so in `status` for any client still connected, and stop with an error.
    let pipeline_died = tokio::select! {
        signal = wait_for_signal() => {
            tracing::info!(signal = signal?, "shutting down");
            None
        }
        ended = &mut pipeline => {
            let why = match ended {
                Ok(Ok(())) => "the event pipeline stopped unexpectedly".to_string(),
                Ok(Err(e)) => format!("the event pipeline failed: {e:#}"),
                Err(e) => format!("the event pipeline panicked: {e}"),
            };
            tracing::error!(error = %why, "event pipeline died; the agent stops");
            *crate::lock(&agent.pipeline) = why.clone();
            Some(why)
        }
    };
    let _ = stop_tx.send(true);
    stop_reader.raise();
    let (endpoint, served) = server.await.context("socket server task")?;
    served?;
    drop(endpoint); // removes the socket and its lock
    if let Some(why) = pipeline_died {
        detach(&agent, probes, links);
        anyhow::bail!("{why}");
    }
    pipeline.await.context("event pipeline task")??;
    if let Some(decisions) = decisions {
        decisions.await.context("decision task")??;
    }
    reaper.await.context("reaper task")?;
    health.await.context("loss watch task")?;
    reloader.await.context("policy watcher task")?;
    metrics_task.await.context("metrics task")?;
    journal.await.context("journal task")??;
    // After the journal's last write: the sinks deliver what it holds, briefly, and save
    // their positions (the rest goes out after the next start).
    exports.finish().await;
    uprobe_task.await.context("uprobe target task")?;
    cgroup_task.await.context("cgroup maintenance task")?;
    enricher_task.await.context("container enricher task")?;
    detach(&agent, probes, links);
    tracing::info!("stopped");
    Ok(())
}

async fn reap(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let reaped = crate::write(&agent.path.table).reap(Instant::now());
        if reaped > 0 {
            tracing::trace!(reaped, "exited processes reaped");
        }
        // A quarantined container removed (or its unit restarted into a new cgroup).
        for q in agent.path.enforcer.forget_gone(&agent.path.policies) {
            tracing::warn!(cgroup = %q.cgroup, steps = ?q.steps, "quarantined cgroup gone");
        }
    }
}

/// How often the kernel's loss counters are sampled for sustained losses.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Sustained kernel-side event losses become an agent-health detection (journal, exports,
/// metrics), not only a counter in `status`.
async fn watch_losses(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    let mut watch = crate::events::health::LossWatch::default();
    let mut journal = crate::events::health::JournalWatch::default();
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    let mut first = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let sites = crate::lock(&agent.counters).sites();
        if let Some(detail) = watch.sample(&sites, HEALTH_INTERVAL.as_secs(), first) {
            tracing::error!(losses = ?detail.losses, "events are being lost");
            agent.report_health(detail);
        }
        let store = agent.path.store.stats();
        let failed = journal.sample(
            store.write_errors,
            store.write_lost,
            store.last_write_error.as_deref(),
            HEALTH_INTERVAL.as_secs(),
        );
        if let Some(detail) = failed {
            tracing::error!(losses = ?detail.losses, "the detection journal is failing");
            agent.report_health(detail);
        }
        first = false;
    }
}

/// The safety net behind library-load discovery: every running process's maps are read
/// again this often, for a sighting the pipeline dropped (its queue was full) or a mapping
/// the kernel's seen-files map hid (an eviction raced a release). Library loads are found
/// from the kernel's records within milliseconds; this only bounds how long a lost one
/// stays lost. At 5 s the rescan was ~25% of the agent's CPU under an exec storm.
const UPROBE_SAFETY_NET: Duration = Duration::from_secs(300);

/// Sightings handled per hold of the eBPF object's lock.
const SIGHTINGS_PER_PASS: usize = 256;

/// Detach everything at exit without holding the exit up (`loader::teardown`).
/// Another holder of the eBPF object (a task that did not stop) keeps it: only the links
/// this function owns close then, the rest when that holder lets go.
fn detach(
    agent: &Agent,
    probes: Arc<Mutex<(aya::Ebpf, Uprobes)>>,
    mut links: Vec<loader::teardown::OwnedLink>,
) {
    // The observing programs outlive this process by a few seconds (in the child that
    // releases them): they must enforce nothing meanwhile.
    agent.path.policies.stand_down();
    match Arc::try_unwrap(probes) {
        Ok(probes) => {
            let (ebpf, uprobes) = probes
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            links.extend(uprobes.into_links());
            loader::teardown::detach_all(ebpf, links);
        }
        Err(_) => drop(links),
    }
}

/// Find libpq (and OpenSSL) targets: once at start (every process's maps and the system
/// library directories), then from the pipeline's sightings (new executable files, and the
/// forks, execs and exits of processes that map a target), with a rescan every
/// `UPROBE_SAFETY_NET`. Attaches to new targets, detaches from released ones, and
/// publishes the list for `status`. Blocking (reads /proc and ELF files): its own thread,
/// never the event path.
fn track_uprobe_targets(
    probes: &Mutex<(aya::Ebpf, Uprobes)>,
    agent: &Agent,
    sightings: &std::sync::mpsc::Receiver<Sighting>,
    hold_scope: Option<HoldScope>,
    stop: &watch::Receiver<bool>,
) {
    let hold_scope = std::cell::RefCell::new(hold_scope);
    let policy_version = std::cell::Cell::new(0u64);
    // Also what the hold scope is computed from: processes that map a libpq.
    let publish = |uprobes: &Uprobes| {
        *crate::lock(&agent.uprobe_targets) = uprobes.report();
        let tracked = uprobes.tracked_processes();
        if let Some(scope) = hold_scope.borrow_mut().as_mut() {
            let set = agent.path.policies.registry().current();
            policy_version.set(set.version);
            scope.sync(
                &set,
                &crate::read(&agent.path.table),
                &agent.path.containers,
                &tracked,
            );
            crate::lock(&agent.sql_hold).processes = scope.pids();
        }
        agent.path.uprobe_feed.set_tracked(tracked);
    };
    let rescan = |first: bool| {
        let started = Instant::now();
        let mut guard = crate::lock(probes);
        let (ebpf, uprobes) = &mut *guard;
        uprobes.scan(ebpf, first);
        publish(uprobes);
        drop(guard);
        // A scan reads ELF sections of files it has not seen; give that heap back.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free memory.
        unsafe {
            libc::malloc_trim(0)
        };
        tracing::info!(
            first,
            took_ms = started.elapsed().as_millis() as u64,
            "uprobe target scan"
        );
    };
    rescan(true);
    let mut next_scan = Instant::now() + UPROBE_SAFETY_NET;
    loop {
        if *stop.borrow() {
            return;
        }
        match sightings.recv_timeout(Duration::from_millis(200)) {
            Ok(first) => {
                let mut guard = crate::lock(probes);
                let (ebpf, uprobes) = &mut *guard;
                uprobes.on_sighting(ebpf, first);
                for more in sightings.try_iter().take(SIGHTINGS_PER_PASS) {
                    uprobes.on_sighting(ebpf, more);
                }
                publish(uprobes);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        // A new policy set may put other processes under hold.
        if agent.path.policies.registry().current().version != policy_version.get() {
            publish(&crate::lock(probes).1);
        }
        if Instant::now() >= next_scan {
            rescan(false);
            next_scan = Instant::now() + UPROBE_SAFETY_NET;
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
