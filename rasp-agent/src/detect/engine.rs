//! Rule evaluation. For each event a rule can look at, build the `Subject` (the event plus
//! what the process table knows: parent, ancestors, container), run every policy whose
//! selector applies, and turn each matching rule into a `Detection`. The outcome is filled
//! in by the caller once the action has been taken.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    events::{BootClock, Event, EventDetail},
    policy::{active::PolicySet, vocab::EventType, Access, Policy, Subject},
    process::{
        container::{self, ContainerIdentity},
        for_each_ancestor, InlineVec, Process, ProcessTable,
    },
};

use super::{Detection, Outcome, ProcessSummary};

/// Bound on cached container identities (one per cgroup seen); cleared when reached.
const IDENTITY_CACHE: usize = 4096;

pub struct Engine {
    run_id: u64,
    seq: AtomicU64,
    /// Latency is only meaningful for live events (not replays).
    live: bool,
    /// Container identity per cgroup id: parsing the cgroup path on every event showed in
    /// profiles, and a cgroup's path (hence identity) does not change while its id lives.
    identities: Mutex<HashMap<u64, ContainerIdentity>>,
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
            identities: Mutex::new(HashMap::new()),
        }
    }

    fn identity(&self, ev: &Event) -> ContainerIdentity {
        let Some(cgroup) = ev.cgroup.as_deref() else {
            return ContainerIdentity::default();
        };
        let mut cache = self.identities.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = cache.get(&ev.cgroup_id) {
            return id.clone();
        }
        let id = container::identify(cgroup);
        if cache.len() >= IDENTITY_CACHE {
            cache.clear();
        }
        // Replayed events may carry no cgroup id; do not let them share one entry.
        if ev.cgroup_id != 0 {
            cache.insert(ev.cgroup_id, id.clone());
        }
        id
    }

    /// Every rule of `set` that matches `ev`. `table` must already reflect `ev`.
    ///
    /// This runs for every event that reaches userspace, so the common case (no rule for
    /// this kind of event, or no match) allocates nothing: policies without a rule for the
    /// event type are skipped before their selector runs, and the ancestry lives on the
    /// stack.
    pub fn evaluate(
        &self,
        set: &PolicySet,
        ev: &Arc<Event>,
        table: &ProcessTable,
    ) -> Vec<Detection> {
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
        let wanted = |p: &&Policy| p.rules.iter().any(|r| r.event == event_type);
        if !set.policies.iter().any(|p| wanted(&p)) {
            return Vec::new();
        }
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
        let mut ancestor_exes = InlineVec::new("");
        for_each_in_chain(table, parent, ev.pid, |p| {
            if let Some(e) = p.exe.as_deref() {
                ancestor_exes.push(e);
            }
        });
        let identity = self.identity(ev);
        let subject = Subject {
            event: event_type,
            exe,
            comm: &ev.comm,
            argv,
            uid: ev.uid,
            parent_exe: parent.and_then(|p| p.exe.as_deref()),
            ancestor_exes: ancestor_exes.as_slice(),
            cgroup: ev.cgroup.as_deref(),
            container_id: identity.container_id.as_deref(),
            pod_uid: identity.pod_uid.as_deref(),
            path,
            access,
            dest,
        };

        let mut out = Vec::new();
        for policy in set
            .policies
            .iter()
            .filter(wanted)
            .filter(|p| p.applies_to(&subject))
        {
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
                    ancestry: {
                        let mut summaries = Vec::new();
                        for_each_in_chain(table, parent, ev.pid, |p| {
                            summaries.push(ProcessSummary {
                                pid: p.pid,
                                comm: p.comm.clone(),
                                exe: p.exe.clone(),
                                argv: Vec::new(),
                                uid: Some(p.uid),
                            })
                        });
                        summaries
                    },
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

/// The parent, then its ancestors, nearest first, leaving out `skip` (the event's own process,
/// which pid reuse can put in its own ancestry).
fn for_each_in_chain<'t>(
    table: &'t ProcessTable,
    parent: Option<&'t Process>,
    skip: u32,
    mut visit: impl FnMut(&'t Process),
) {
    let Some(p) = parent else { return };
    visit(p);
    for_each_ancestor(
        p.pid,
        |pid| table.get(pid),
        |a| {
            if a.pid != skip {
                visit(a)
            }
        },
    );
}

/// The event's access names ("read", "write", ...) as the policy's `Access` set.
fn access_of(names: &[String]) -> Access {
    Access::NAMES
        .iter()
        .filter(|(name, _)| names.iter().any(|n| n == name))
        .fold(Access::empty(), |set, &(_, a)| set | a)
}
