//! The event pipeline: ring buffer → decode → cgroup path and container → process table →
//! rules → hub,
//! enforcement, store. Runs on a thread of its own (see `reader`), one batch at a time with
//! reused buffers. The process table's write lock is taken per event to apply it, and
//! released before the rules run (they read the table under its read lock), so clients and
//! the reaper never wait for rule evaluation. A match that repeats an open fold window is
//! only counted (`DetectionStore::fold`): a storm of identical detections costs about what
//! the same events cost without a rule. Heavy analysis (SQL, HTTP) does not run here: it
//! goes to `detect::analyzer` queues, which drop their own work when full, never events.

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use anyhow::{Context, Result};

use crate::{
    agent::{Agent, EventPath},
    detect::{
        analyzer::{AnalyzerQueue, AnalyzerSender},
        engine::Rules,
        http::stage::{HttpStage, StageConfig},
        sql, Detection, Outcome,
    },
    events::{
        hooks::TargetInfo,
        reader::{self, StopSignal},
        BootClock, Event, EventDetail, FdKind, Kind, Peer,
    },
    process::{
        self,
        pipes::{PipeTable, Writer},
        provenance::BuiltFiles,
    },
};

/// Test-only fault injection: the pipeline panics on an exec whose comm is this, so a
/// scenario can prove that a dead pipeline takes the agent down instead of leaving the
/// socket answering while nothing is detected.
#[derive(Clone, Debug, Default)]
pub struct FaultInjection {
    pub panic_on_exec_comm: Option<String>,
}

/// Queries waiting for the SQL analyzer; past this the analyzer drops (and counts) its own
/// work, never the kernel's events.
const SQL_QUEUE: usize = 4096;
/// Query shapes whose verdict is kept: a shape already judged costs a hash lookup.
const SQL_SHAPES: usize = 16384;
/// Plaintext chunks and queries waiting for the HTTP stage.
const HTTP_QUEUE: usize = 8192;

/// What the HTTP stage works on, in ring order: plaintext chunks, and the queries the same
/// processes sent (for the taint link).
pub enum HttpWork {
    Chunk(Arc<Event>),
    Query(Arc<Event>),
}

pub fn run(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    agent: Arc<Agent>,
    stop: &StopSignal,
    faults: FaultInjection,
    http: AnalyzerQueue<HttpWork>,
) -> Result<()> {
    set_thread_nice(agent.args.drain_nice);
    let sql = sql_analyzer(agent.clone()).context("starting the SQL analyzer")?;
    let _ = agent.sql_analyzer.set(sql.stats_handle());
    let clock = BootClock::now();
    let path = &agent.path;
    let mut batches = Batches::new(faults);
    let drained = reader::drain(
        ring,
        clock,
        stop,
        &path.latency.events,
        &agent.record_bytes,
        |batch| batches.run(path, batch, |ev| sql.offer(ev), |w| http.offer(w)),
        |e| {
            tracing::warn!(error = %e, "undecodable record");
            path.hub.count_decode_error();
        },
    )
    .context("draining the ring buffer");
    drop(sql); // lets the analyzers finish what is queued
    drop(http);
    drained
}

/// The bulk ring's events, a batch at a time on the thread that drains it, with buffers
/// reused between batches: each event gets its cgroup path and container, updates the
/// process table, is enriched and judged by the rules, and is published; queries and
/// plaintext go to their analyzers instead, which publish them judged. `rasp-replay` runs
/// its synthesised batches through this too.
pub struct Batches {
    faults: FaultInjection,
    shared: Vec<Arc<Event>>,
    detections: Vec<Detection>,
    // Owned by this thread: which exec feeds which through a pipe, and which program
    // said it would write which executable.
    pipes: PipeTable,
    built: BuiltFiles,
}

impl Batches {
    pub fn new(faults: FaultInjection) -> Batches {
        Batches {
            faults,
            shared: Vec::with_capacity(reader::MAX_BATCH),
            detections: Vec::new(),
            pipes: PipeTable::new(),
            built: BuiltFiles::new(),
        }
    }

    /// One batch, drained from `batch`. `sql` and `http` take a query or plaintext for
    /// their analyzer, or say they had no room (then it is counted, and a query is
    /// published unjudged from here).
    pub fn run(
        &mut self,
        path: &EventPath,
        batch: &mut Vec<Event>,
        mut sql: impl FnMut(Arc<Event>) -> bool,
        mut http: impl FnMut(HttpWork) -> bool,
    ) {
        self.shared.extend(batch.drain(..).map(|mut ev| {
            // The exiting process's /proc entry is going away; the id is enough.
            let hint = (ev.kind() != Kind::Exit).then_some(ev.pid);
            ev.cgroup = path.cgroups.resolve(ev.cgroup_id, hint);
            ev.container = path.containers.of(ev.cgroup_id, ev.cgroup.as_deref());
            Arc::new(ev)
        }));
        // Queries are judged off this thread, and the analyzer publishes each with its
        // findings (the rules see that one): only a query the analyzer had no room
        // for is published, and counted, from here.
        let set = path.policies.registry().current();
        let peer_rules = set
            .policies
            .iter()
            .flat_map(|p| &p.rules)
            .any(|r| r.conditions.uses_stdin_peer() || r.conditions.uses_substitution());
        // Queries the SQL analyzer took: it publishes each with its findings.
        let mut judged_off_thread: Vec<usize> = Vec::new();
        for (i, ev) in self.shared.iter_mut().enumerate() {
            if let Some(comm) = &self.faults.panic_on_exec_comm {
                if ev.kind() == Kind::Exec && &ev.comm == comm {
                    panic!("fault injection: pipeline panic on exec of {comm}");
                }
            }
            if ev.kind() == Kind::SqlQuery {
                // In order with the plaintext around it: the HTTP stage links a query
                // to the latest request that carried its values (taint).
                offer_http(path, &mut http, HttpWork::Query(ev.clone()));
                // Judged off this thread; the rules see it with the analyzer's findings.
                if sql(ev.clone()) {
                    judged_off_thread.push(i);
                } else {
                    // The analyzer's queue was full: counted, published unjudged.
                    path.metrics.analyzer_dropped(crate::metrics::Analyzer::Sql);
                }
                continue;
            }
            if ev.kind() == Kind::Tls {
                // Parsed, scanned and resolved off this thread, then judged there.
                offer_http(path, &mut http, HttpWork::Chunk(ev.clone()));
                continue;
            }
            crate::write(&path.table).apply(ev);
            let waiting = enrich(path, &mut self.pipes, &mut self.built, ev, peer_rules);
            path.uprobe_feed.observe(ev);
            decide(path, &set, ev, Rules::All, &mut self.detections);
            if let Some(reader) = waiting {
                // A shell's exec that came before its stdin's writer: judged again, by
                // the rules on the writer, now that it is known.
                decide(path, &set, &reader, Rules::StdinPeer, &mut self.detections);
            }
        }
        // Plaintext is published by the HTTP stage, analyzed and cut to what is shown;
        // a query by the SQL analyzer (published once, not twice).
        let mut at = 0;
        self.shared.retain(|ev| {
            let mine = ev.kind() != Kind::Tls && judged_off_thread.binary_search(&at).is_err();
            at += 1;
            mine
        });
        path.hub.publish(&mut self.shared);
        settle(path, &mut self.detections);
    }
}

/// What the agent knows beyond the record, added to the event before rules see it: the
/// target of a ptrace, whether a setns entered the host's namespaces, the writer of an
/// exec's stdin pipe. Returns an earlier exec whose stdin pipe this exec writes, with that
/// writer filled in, for the rules that wait on it.
fn enrich(
    path: &EventPath,
    pipes: &mut PipeTable,
    built: &mut BuiltFiles,
    ev: &mut Arc<Event>,
    peer_rules: bool,
) -> Option<Arc<Event>> {
    let table = crate::read(&path.table);
    let pid = ev.pid;
    let start_ns = ev.start_ns;
    // Just built from the record, so not shared yet.
    let event = Arc::get_mut(ev)?;
    let mut waiting = None;
    match &mut event.detail {
        EventDetail::Ptrace(d) => {
            d.target = table.get(d.target_pid).map(|t| TargetInfo {
                exe: t.exe.clone(),
                uid: t.uid,
                descendant: process::ancestry(t.pid, |p| table.get(p))
                    .iter()
                    .any(|a| a.pid == pid),
            });
        }
        EventDetail::Namespace(d) => {
            let host = path.engine.host_namespaces();
            d.into_host = d.target_ns.map(|ino| host.is_host(ino));
        }
        EventDetail::Exec(d) => {
            let now = Instant::now();
            if let Some(exe) = &d.exe {
                d.built_by = built.builder(exe, now).cloned();
                built.record(exe, &d.argv, d.cwd.as_deref(), now);
            }
            d.substituted_from = pipes.substituted_for(event.ppid, now).cloned();
            let stdio = d.stdio?;
            if stdio[1].kind == FdKind::Pipe && stdio[1].ino != 0 {
                let reader = pipes.set_writer(stdio[1].ino, Writer { pid, start_ns });
                if reader.is_none() && peer_rules {
                    // No reader yet: the parent itself may be reading (a substitution).
                    // (Readers that came first are waiting when `peer_rules`.)
                    let writer = Peer {
                        pid,
                        exe: d.exe.clone(),
                        argv: d.argv.clone(),
                    };
                    let grandparent = table.get(event.ppid).map_or(0, |p| p.ppid);
                    pipes.note_unread(event.ppid, grandparent, stdio[1].ino, writer, now);
                }
                if let Some(reader) = reader {
                    let mut reader = (*reader).clone();
                    if let EventDetail::Exec(r) = &mut reader.detail {
                        r.stdin_peer = Some(Peer {
                            pid,
                            exe: d.exe.clone(),
                            argv: d.argv.clone(),
                        });
                    }
                    waiting = Some(Arc::new(reader));
                }
            }
            if stdio[0].kind == FdKind::Pipe && stdio[0].ino != 0 {
                pipes.note_read(stdio[0].ino);
                let writer = pipes
                    .writer(stdio[0].ino)
                    .and_then(|w| table.get(w.pid).filter(|p| p.same_incarnation(w.start_ns)));
                match writer {
                    Some(w) => {
                        d.stdin_peer = Some(Peer {
                            pid: w.pid,
                            exe: w.exe.clone(),
                            argv: w.argv.clone(),
                        })
                    }
                    None if peer_rules => {
                        pipes.wait_for_writer(stdio[0].ino, Arc::new(event.clone()), Instant::now())
                    }
                    None => {}
                }
            }
        }
        _ => {}
    }
    waiting
}

fn offer_http(path: &EventPath, offer: impl FnOnce(HttpWork) -> bool, work: HttpWork) {
    if !offer(work) {
        path.metrics
            .analyzer_dropped(crate::metrics::Analyzer::Http);
    }
}

/// The HTTP stage (`detect::http::stage`): each chunk comes back with its peer and
/// findings, and each HTTP message (and confirmed injection) as an `http` event; both are
/// judged by the rules and published. Started before the pipeline so the decision thread
/// can hand it held queries too.
pub fn http_stage(
    agent: Arc<Agent>,
) -> Result<AnalyzerQueue<HttpWork>, crate::detect::analyzer::AnalyzerStartError> {
    let mut stage = HttpStage::new(StageConfig::default(), "/proc");
    let mut detections = Vec::new();
    let queue = AnalyzerQueue::start("http", HTTP_QUEUE, move |work: HttpWork| {
        let mut events: Vec<Arc<Event>> = Vec::new();
        match work {
            HttpWork::Chunk(ev) => {
                let EventDetail::Tls(d) = &ev.detail else {
                    return;
                };
                let out = stage.tls(&ev, d);
                if let Some(mut tls) = out.tls {
                    // The event buffer keeps what is shown, not the whole capture.
                    tls.plaintext = tls.plaintext.shortened();
                    events.push(Arc::new(derived(&ev, EventDetail::Tls(tls))));
                }
                events.extend(
                    out.http
                        .into_iter()
                        .map(|h| Arc::new(derived(&ev, EventDetail::Http(h)))),
                );
            }
            HttpWork::Query(ev) => {
                let EventDetail::SqlQuery(d) = &ev.detail else {
                    return;
                };
                events.extend(
                    stage
                        .sql(&ev, d)
                        .into_iter()
                        .map(|h| Arc::new(derived(&ev, EventDetail::Http(h)))),
                );
            }
        }
        *crate::lock(&agent.http_stage) = Some(stage.stats());
        if events.is_empty() {
            return;
        }
        let path = &agent.path;
        let set = path.policies.registry().current();
        for ev in &events {
            decide(path, &set, ev, Rules::All, &mut detections);
        }
        path.hub.publish(&mut events);
        settle(path, &mut detections);
    })?;
    Ok(queue)
}

/// An event the agent made from `ev` (same process, time and place), with `detail`.
fn derived(ev: &Event, detail: EventDetail) -> Event {
    Event {
        time: ev.time,
        ts_boot_ns: ev.ts_boot_ns,
        pid: ev.pid,
        tid: ev.tid,
        ppid: ev.ppid,
        uid: ev.uid,
        gid: ev.gid,
        euid: ev.euid,
        egid: ev.egid,
        cap_effective: ev.cap_effective,
        start_ns: ev.start_ns,
        comm: ev.comm,
        cgroup_id: ev.cgroup_id,
        cgroup: ev.cgroup.clone(),
        container: ev.container.clone(),
        verdict: None,
        detail,
    }
}

/// Evaluate the rules on `ev` (the process table under its read lock) into `detections`.
/// A match whose action does nothing to the process has a known outcome, so a repeat of an
/// open fold window is counted there and never built; an action that acts always gets its
/// own detection and acts.
fn decide(
    path: &EventPath,
    set: &crate::policy::active::PolicySet,
    ev: &Arc<Event>,
    which: Rules,
    detections: &mut Vec<Detection>,
) {
    // A kernel program already acted on this event for one rule: that rule's detection
    // says what the kernel did, and nothing more is done about it here.
    let kernel = ev
        .verdict
        .map(|v| (v, path.policies.kernel_rule(v.rule_slot)));
    let kernel_reported = std::cell::Cell::new(false);
    let table = crate::read(&path.table);
    let mut on_match = |m: &crate::detect::engine::Match<'_>| {
        path.latency.detections.record_ns(m.latency_us * 1000);
        path.metrics
            .detection(&m.rule.id, m.rule.severity, m.mode());
        let by_kernel = match &kernel {
            Some((v, Some(r))) if r.rule == m.rule.id && r.policy == m.policy.name => {
                kernel_reported.set(true);
                Some(kernel_outcome(v.action))
            }
            _ => None,
        };
        // An audit-mode block says what this kernel would have done.
        let audit_text = (m.action() == crate::policy::vocab::Action::Block
            && m.mode() == crate::policy::vocab::Mode::Audit)
            .then(|| path.policies.audit_text(&m.rule.id))
            .flatten();
        let audit = audit_text.as_deref().map(|t| (Outcome::Audited, Some(t)));
        let known = by_kernel
            .or(audit)
            .or_else(|| Outcome::without_acting(m.action(), m.mode()));
        let folded = known.is_some_and(|(outcome, detail)| {
            let folded = path
                .store
                .fold(&m.fold_key(outcome, detail), SystemTime::now());
            if folded {
                path.metrics.action(m.action(), outcome);
            }
            folded
        });
        if !folded {
            let mut d = m.detection();
            if let Some((outcome, detail)) = by_kernel.or(audit) {
                d.outcome = outcome;
                d.outcome_detail = detail.map(String::from);
            }
            detections.push(d);
        }
    };
    path.engine
        .for_each_match_of(set, ev, &table, which, &mut on_match);
    if which != Rules::All {
        return; // a second look at an exec: its kernel verdict was handled the first time
    }
    match &kernel {
        Some((_, Some(r))) if !kernel_reported.get() => {
            // The kernel decided by inode or name what userspace's path globs did not
            // confirm (a hard link, a renamed copy): the kernel's decision stands.
            path.engine
                .for_named_rule(set, ev, &table, (&r.policy, &r.rule), &mut on_match);
        }
        Some((v, None)) => {
            tracing::warn!(slot = v.rule_slot, pid = ev.pid, action = ?v.action, "kernel verdict for a rule no longer known");
        }
        _ => {}
    }
}

/// A kernel verdict as the detection's outcome: `prevented` when the act did not happen.
fn kernel_outcome(action: crate::events::KernelAction) -> (Outcome, Option<&'static str>) {
    let outcome = if action.prevented() {
        Outcome::Prevented
    } else {
        Outcome::After
    };
    (outcome, Some(action.describe()))
}

/// Act on each detection (enforce mode) and hand it to the store.
fn settle(path: &EventPath, detections: &mut Vec<Detection>) {
    for mut d in detections.drain(..) {
        // An outcome already set is the kernel's: it acted, there is nothing left to do.
        if d.outcome == Outcome::Alerted {
            (d.outcome, d.outcome_detail) = path.enforcer.act(&d, path);
        }
        path.metrics.action(d.action, d.outcome);
        if d.outcome != Outcome::Alerted && d.outcome != Outcome::Audited {
            tracing::warn!(rule = %d.rule_id, pid = d.process.pid, outcome = ?d.outcome, detail = ?d.outcome_detail, "enforced");
        }
        path.store.submit(d);
    }
}

/// The SQL analyzer's thread: each query through `SqlStage::judge`.
fn sql_analyzer(
    agent: Arc<Agent>,
) -> Result<AnalyzerQueue<Arc<Event>>, crate::detect::analyzer::AnalyzerStartError> {
    let mut stage = SqlStage::default();
    let queue = AnalyzerQueue::start("sql", SQL_QUEUE, move |ev: Arc<Event>| {
        stage.judge(&agent.path, &ev)
    })?;
    Ok(queue)
}

/// The SQL analyzer stage: judge each query (a known shape is a cache hit), attach the
/// findings, publish the analyzed event, and run the `sql_query` rules on it. The agent
/// runs it on a thread of its own behind a bounded queue, and the decision thread has its
/// own for held queries; `rasp-replay` runs it inline.
pub struct SqlStage {
    analyzer: sql::Analyzer,
    cache: sql::ShapeCache,
    detections: Vec<Detection>,
}

impl Default for SqlStage {
    fn default() -> SqlStage {
        SqlStage {
            analyzer: sql::Analyzer::default(),
            cache: sql::ShapeCache::new(SQL_SHAPES),
            detections: Vec::new(),
        }
    }
}

impl SqlStage {
    /// Judge `ev` (nothing if it is no query), decide on it and publish it.
    pub fn judge(&mut self, path: &EventPath, ev: &Event) {
        let Some(analyzed) = self.analyzed(path, ev) else {
            return;
        };
        let set = path.policies.registry().current();
        decide(path, &set, &analyzed, Rules::All, &mut self.detections);
        path.hub.publish(&mut vec![analyzed]);
        settle(path, &mut self.detections);
    }

    /// `ev` with the SQL analyzer's verdict filled in (`None` if it is no query):
    /// findings, statement kinds, tables and functions (from the shape cache when the
    /// shape was judged before), and whether its service ever sent this shape.
    fn analyzed(&mut self, path: &EventPath, ev: &Event) -> Option<Arc<Event>> {
        let EventDetail::SqlQuery(d) = &ev.detail else {
            return None;
        };
        let judged = self.analyzer.judge(&mut self.cache, &d.query, d.truncated);
        let v = judged.verdict;
        let mut findings: Vec<String> = v.kinds.iter().map(|k| k.name().to_string()).collect();
        if v.injection {
            findings.insert(0, "injection".to_string());
        }
        let new_shape = service_of(path, ev).and_then(|service| {
            let age = crate::lock(&path.sql_shapes).observe_age(
                &service,
                judged.shape,
                std::time::Instant::now(),
            )?;
            Some(crate::events::NewShape {
                service: service.into(),
                service_age_ms: age.as_millis() as u64,
            })
        });
        let mut analyzed = ev.clone();
        if let EventDetail::SqlQuery(d) = &mut analyzed.detail {
            d.analyzed = true;
            d.findings = findings;
            d.score_permille = Some((v.score.clamp(0.0, 1.0) * 1000.0) as u16);
            d.shape = Some(format!("{:016x}", judged.shape.0));
            d.statements = sql::StatementKind::ALL
                .iter()
                .filter(|k| v.has_statement(**k))
                .map(|k| k.name().into())
                .collect();
            d.tables = judged.names.tables.clone();
            d.functions = judged.names.functions.clone();
            d.new_shape = new_shape;
        }
        Some(Arc::new(analyzed))
    }
}

/// Whose query shapes these are: the container, or outside containers the executable.
fn service_of(path: &EventPath, ev: &Event) -> Option<String> {
    if let Some(c) = &ev.container {
        return Some(format!("container:{}", c.id));
    }
    let table = crate::read(&path.table);
    let exe = table.get(ev.pid)?.exe.as_deref()?.to_string();
    Some(format!("exe:{exe}"))
}

/// How long the decision thread sleeps between looks at its stop signal: every held
/// query's record wakes it at once (forced wakeup), so this bounds only shutdown.
const DECISION_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The decision fast path: held queries from their own ring (each record a forced
/// wakeup), judged here on this thread — analyzer, rules, then the hold's verdict
/// (`enforce::hold`) — so the held thread waits for one analysis, never for the bulk
/// ring's deadline or the analyzer's queue. Every rule that matched gets its detection;
/// the enforcing ones carry the hold's outcome.
pub fn run_decisions(
    mut ring: aya::maps::RingBuf<aya::maps::MapData>,
    mut holds: crate::enforce::hold::Holds,
    agent: Arc<Agent>,
    stop: &StopSignal,
    http: AnalyzerSender<HttpWork>,
) -> Result<()> {
    use std::os::fd::{AsFd, AsRawFd};
    let mut sql = SqlStage::default();
    let path = &agent.path;
    let clock = BootClock::now();
    loop {
        match reader::wait(ring.as_fd().as_raw_fd(), stop, DECISION_WAIT)
            .context("waiting on the decision ring")?
        {
            reader::Wake::Stop => return Ok(()),
            reader::Wake::Interrupted => continue,
            reader::Wake::Ready => {}
        }
        while let Some(item) = ring.next() {
            let decoded = crate::events::decode(&item, clock);
            drop(item);
            let mut ev = match decoded {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::error!(error = %e, "undecodable held query: the hold bound releases it");
                    path.hub.count_decode_error();
                    continue;
                }
            };
            ev.cgroup = crate::read(&path.table)
                .get(ev.pid)
                .and_then(|p| p.cgroup.clone());
            // A map lookup (the held process's cgroup has had events before), never a wait.
            ev.container = path.containers.of(ev.cgroup_id, ev.cgroup.as_deref());
            let ev = decide_held(&agent, &mut sql, &mut holds, ev);
            if let Some(ev) = ev {
                // Its request may be in the bulk ring still: the stage links both ways.
                offer_http(path, |w| http.offer(w), HttpWork::Query(ev));
            }
        }
    }
}

fn decide_held(
    agent: &Agent,
    sql: &mut SqlStage,
    holds: &mut crate::enforce::hold::Holds,
    ev: Event,
) -> Option<Arc<Event>> {
    use crate::{enforce::hold, policy::vocab::Action};
    let path = &agent.path;
    let analyzed = sql.analyzed(path, &ev)?;
    let set = path.policies.registry().current();
    let mut detections = Vec::new();
    {
        let table = crate::read(&path.table);
        path.engine.for_each_match(&set, &analyzed, &table, |m| {
            path.latency.detections.record_ns(m.latency_us * 1000);
            path.metrics
                .detection(&m.rule.id, m.rule.severity, m.mode());
            detections.push(m.detection());
        });
    }
    let verdict = hold::verdict_of(detections.iter().map(|d| (d.action, d.mode)));
    let (outcome, detail) = if agent.args.fault_hold_no_decision {
        // Test builds of scenarios only: leave the thread to the hold's bound.
        tracing::warn!(
            pid = analyzed.pid,
            "fault injection: held query left undecided"
        );
        (
            Outcome::Failed,
            "fault injection: left undecided for the hold bound".to_string(),
        )
    } else {
        holds.decide(&analyzed, verdict)
    };
    crate::lock(&agent.sql_hold).decided += 1;
    tracing::info!(pid = analyzed.pid, tid = analyzed.tid, ?verdict, ?outcome, detail = %detail, "held query decided");
    path.hub.publish(&mut vec![analyzed.clone()]);
    let mut others = Vec::new();
    for mut d in detections {
        let acting = d.mode == crate::policy::vocab::Mode::Enforce && d.action != Action::Alert;
        if acting {
            d.outcome = outcome;
            d.outcome_detail = Some(detail.clone());
            path.metrics.action(d.action, d.outcome);
            tracing::warn!(rule = %d.rule_id, pid = d.process.pid, outcome = ?d.outcome, detail = ?d.outcome_detail, "enforced");
            path.store.submit(d);
        } else {
            others.push(d);
        }
    }
    settle(path, &mut others);
    Some(analyzed)
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
