//! Rule evaluation. For each event a rule can look at, build the `Subject` (the event plus
//! what the process table knows: parent, ancestors, container), run every policy whose
//! selector applies, and turn each matching rule into a `Detection`. The outcome is filled
//! in by the caller once the action has been taken.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    events::{BootClock, Event, EventDetail},
    policy::{active::PolicySet, vocab::EventType, Access, Subject},
    process::{ancestry, container, Process, ProcessTable},
};

use super::{Detection, Outcome, ProcessSummary};

pub struct Engine {
    run_id: u64,
    seq: AtomicU64,
    /// Latency is only meaningful for live events (not replays).
    live: bool,
}

impl Engine {
    pub fn live() -> Self {
        Self::new(true)
    }

    pub fn replay() -> Self {
        Self::new(false)
    }

    fn new(live: bool) -> Self {
        let run_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Engine {
            run_id,
            seq: AtomicU64::new(0),
            live,
        }
    }

    /// Every rule of `set` that matches `ev`. `table` must already reflect `ev`.
    pub fn evaluate(&self, set: &PolicySet, ev: &Event, table: &ProcessTable) -> Vec<Detection> {
        let (event_type, path, access, dest) = match &ev.detail {
            EventDetail::Exec(_) => (EventType::Exec, None, Access::default(), None),
            EventDetail::FileOpen(d) => (
                EventType::FileOpen,
                d.path.as_deref(),
                access_of(&d.access),
                None,
            ),
            EventDetail::LibraryLoad(d) => (
                EventType::LibraryLoad,
                d.path.as_deref(),
                Access::default(),
                None,
            ),
            EventDetail::Connect(d) => (EventType::Connect, None, Access::default(), d.dest()),
            EventDetail::Fork(_) | EventDetail::Exit(_) => return Vec::new(),
        };
        // The image and arguments: the exec's own, or what the table knows of the process.
        let (exe, argv) = match &ev.detail {
            EventDetail::Exec(d) => (d.exe.as_deref(), d.argv.as_slice()),
            _ => match table.get(ev.pid) {
                Some(p) => (p.exe.as_deref(), p.argv.as_slice()),
                None => (None, &[][..]),
            },
        };
        // Parents from the table, nearest first (the parent itself included).
        let parent = table.get(ev.ppid).filter(|p| p.pid != ev.pid);
        let mut chain: Vec<&Process> = parent.into_iter().collect();
        if let Some(p) = parent {
            chain.extend(
                ancestry(p.pid, |pid| table.get(pid))
                    .into_iter()
                    .filter(|a| a.pid != ev.pid),
            );
        }
        let ancestor_exes: Vec<&str> = chain.iter().filter_map(|p| p.exe.as_deref()).collect();
        let identity = ev
            .cgroup
            .as_deref()
            .map(container::identify)
            .unwrap_or_default();
        let subject = Subject {
            event: event_type,
            exe,
            comm: &ev.comm,
            argv,
            uid: ev.uid,
            parent_exe: parent.and_then(|p| p.exe.as_deref()),
            ancestor_exes: &ancestor_exes,
            cgroup: ev.cgroup.as_deref(),
            container_id: identity.container_id.as_deref(),
            pod_uid: identity.pod_uid.as_deref(),
            path,
            access,
            dest,
        };

        let mut out = Vec::new();
        for policy in set.policies.iter().filter(|p| p.applies_to(&subject)) {
            for rule in policy.rules.iter().filter(|r| r.matches(&subject)) {
                let latency_us = if self.live {
                    BootClock::boot_now_ns().saturating_sub(ev.ts_boot_ns) / 1000
                } else {
                    0
                };
                out.push(Detection {
                    id: format!(
                        "{:x}-{}",
                        self.run_id,
                        self.seq.fetch_add(1, Ordering::Relaxed)
                    ),
                    time: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                    rule_id: rule.id.clone(),
                    policy: policy.name.clone(),
                    policy_version: policy.version,
                    policy_set_version: set.version,
                    mode: rule.effective_mode(policy),
                    severity: rule.severity,
                    action: rule.action,
                    outcome: Outcome::Alerted,
                    outcome_detail: None,
                    description: rule.description.clone(),
                    event: ev.clone(),
                    process: ProcessSummary {
                        pid: ev.pid,
                        comm: ev.comm.clone(),
                        exe: exe.map(String::from),
                        argv: argv.to_vec(),
                        uid: Some(ev.uid),
                    },
                    ancestry: chain
                        .iter()
                        .map(|p| ProcessSummary {
                            pid: p.pid,
                            comm: p.comm.clone(),
                            exe: p.exe.clone(),
                            argv: Vec::new(),
                            uid: Some(p.uid),
                        })
                        .collect(),
                    container_id: identity.container_id.clone(),
                    pod_uid: identity.pod_uid.clone(),
                    latency_us,
                    count: 1,
                    last_time: None,
                });
            }
        }
        out
    }
}

/// The event's access names ("read", "write", ...) as the policy's `Access` set.
fn access_of(names: &[String]) -> Access {
    Access::NAMES
        .iter()
        .filter(|(name, _)| names.iter().any(|n| n == name))
        .fold(Access::empty(), |set, &(_, a)| set | a)
}
