//! The event pipeline: ring buffer → decode → cgroup path → process table → rules → hub,
//! enforcement, store. Runs on a thread of its own (see `reader`), one batch at a time with
//! reused buffers. The process table's write lock is taken per event to apply it, and
//! released before the rules run (they read the table under its read lock), so clients and
//! the reaper never wait for rule evaluation. A match that repeats an open fold window is
//! only counted (`DetectionStore::fold`): a storm of identical detections costs about what
//! the same events cost without a rule. Heavy analysis (SQL, HTTP) does not run here: it
//! goes to `detect::analyzer` queues, which drop their own work when full, never events.

use std::{sync::Arc, time::SystemTime};

use anyhow::{Context, Result};

use super::{
    reader::{self, StopSignal},
    BootClock, Event, Kind,
};
use crate::{agent::Agent, detect::Outcome, process::cgroup::CgroupResolver};

/// Test-only fault injection: the pipeline panics on an exec whose comm is this, so a
/// scenario can prove that a dead pipeline takes the agent down instead of leaving the
/// socket answering while nothing is detected.
#[derive(Clone, Debug, Default)]
pub struct FaultInjection {
    pub panic_on_exec_comm: Option<String>,
}

pub fn run(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    agent: Arc<Agent>,
    mut cgroups: CgroupResolver,
    stop: &StopSignal,
    faults: FaultInjection,
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
        &agent.record_bytes,
        |batch| {
            shared.extend(batch.drain(..).map(|mut ev| {
                // The exiting process's /proc entry is going away; the id is enough.
                let hint = (ev.kind() != Kind::Exit).then_some(ev.pid);
                ev.cgroup = cgroups.resolve(ev.cgroup_id, hint);
                Arc::new(ev)
            }));
            let set = agent.policies.registry().current();
            for ev in &shared {
                if let Some(comm) = &faults.panic_on_exec_comm {
                    if ev.kind() == Kind::Exec && &ev.comm == comm {
                        panic!("fault injection: pipeline panic on exec of {comm}");
                    }
                }
                crate::write(&agent.table).apply(ev);
                let table = crate::read(&agent.table);
                agent.engine.for_each_match(&set, ev, &table, |m| {
                    agent.latency.detections.record_ns(m.latency_us * 1000);
                    agent
                        .metrics
                        .detection(&m.rule.id, m.rule.severity, m.mode());
                    // Nothing to do to the process: the outcome is known, so a repeat of an
                    // open fold window is counted there and never built. An action that acts
                    // always gets its own detection and acts.
                    let folded = Outcome::without_acting(m.action(), m.mode()).is_some_and(
                        |(outcome, detail)| {
                            let folded = agent
                                .store
                                .fold(&m.fold_key(outcome, detail), SystemTime::now());
                            if folded {
                                agent.metrics.action(m.action(), outcome);
                            }
                            folded
                        },
                    );
                    if !folded {
                        detections.push(m.detection());
                    }
                });
            }
            agent.hub.publish(&mut shared);
            for mut d in detections.drain(..) {
                (d.outcome, d.outcome_detail) = agent.enforcer.act(d.action, d.mode, &d.event);
                agent.metrics.action(d.action, d.outcome);
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
