//! Rule evaluation. For each event a rule can look at, build the `Subject` (the event plus
//! what the process table knows: parent, ancestors, container), run every policy whose
//! selector applies, and hand each matching rule to the caller as a `Match`: borrowed, so
//! that in a storm the caller can check the match's fold key and build a `Detection` only
//! for the first occurrence. The outcome is filled in by the caller once the action has been
//! taken.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    events::{Argv, BootClock, ContainerIdentity, Event, EventDetail, Text},
    policy::{
        active::PolicySet,
        vocab::{Action, Mode},
        Policy, Rule, Subject,
    },
    process::{
        container, for_each_ancestor, namespaces::HostNamespaces, InlineVec, Process, ProcessTable,
    },
};

use super::{Detection, FoldKey, Outcome, ProcessSummary};

pub struct Engine {
    run_id: u64,
    seq: AtomicU64,
    /// Latency is only meaningful for live events (not replays), whose container the
    /// pipeline has attached (`process::container`).
    live: bool,
    /// The host's namespaces (live: the agent's own; replays: unknown, so "in a container"
    /// rests on the cgroup alone).
    host: HostNamespaces,
}

/// Which of a set's rules to evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rules {
    All,
    /// Only rules on the writer of a stdin pipe: the reader's exec is judged again once
    /// the writer is known (`process::pipes`).
    StdinPeer,
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
            host: if live {
                HostNamespaces::of_agent()
            } else {
                HostNamespaces::default()
            },
        }
    }

    /// The host's namespaces as this engine knows them.
    pub fn host_namespaces(&self) -> &HostNamespaces {
        &self.host
    }

    /// The container of `ev`: what the pipeline attached (live), or for a replayed event
    /// recorded without one, what its cgroup path says.
    fn identity(&self, ev: &Event) -> Option<Arc<ContainerIdentity>> {
        match (&ev.container, self.live) {
            (Some(c), _) => Some(c.clone()),
            (None, true) => None,
            (None, false) => ev
                .cgroup
                .as_deref()
                .and_then(container::identify)
                .map(Arc::new),
        }
    }

    /// Every rule of `set` that matches `ev`, as detections. `table` must already reflect
    /// `ev`.
    pub fn evaluate(
        &self,
        set: &PolicySet,
        ev: &Arc<Event>,
        table: &ProcessTable,
    ) -> Vec<Detection> {
        let mut out = Vec::new();
        self.for_each_match(set, ev, table, |m| out.push(m.detection()));
        out
    }

    /// Call `visit` with every rule of `set` that matches `ev`. `table` must already reflect
    /// `ev`.
    ///
    /// This runs for every event that reaches userspace, so the common case (no rule for
    /// this kind of event, or no match) allocates nothing: policies without a rule for the
    /// event type are skipped before their selector runs, and the ancestry lives on the
    /// stack. A match allocates nothing either until `Match::detection` is called.
    pub fn for_each_match(
        &self,
        set: &PolicySet,
        ev: &Arc<Event>,
        table: &ProcessTable,
        visit: impl FnMut(&Match<'_>),
    ) {
        self.visit_rules(set, ev, table, Rules::All, None, visit)
    }

    /// `for_each_match` over the rules `which` selects.
    pub fn for_each_match_of(
        &self,
        set: &PolicySet,
        ev: &Arc<Event>,
        table: &ProcessTable,
        which: Rules,
        visit: impl FnMut(&Match<'_>),
    ) {
        self.visit_rules(set, ev, table, which, None, visit)
    }

    /// Call `visit` with the rule `policy`/`rule` of `set` as a match of `ev`, whatever
    /// its conditions say: a kernel program already decided it (the kernel matched by
    /// inode, userspace by path, and a hard link or a moved file can tell them apart).
    pub fn for_named_rule(
        &self,
        set: &PolicySet,
        ev: &Arc<Event>,
        table: &ProcessTable,
        (policy, rule): (&str, &str),
        visit: impl FnMut(&Match<'_>),
    ) {
        self.visit_rules(set, ev, table, Rules::All, Some((policy, rule)), visit)
    }

    fn visit_rules(
        &self,
        set: &PolicySet,
        ev: &Arc<Event>,
        table: &ProcessTable,
        which: Rules,
        named: Option<(&str, &str)>,
        mut visit: impl FnMut(&Match<'_>),
    ) {
        // A query is judged by the SQL analyzer first, plaintext by the HTTP stage (peer
        // resolved), in `crate::pipeline`: rules see them with the findings filled in.
        let (tls, http, judged) = match &ev.detail {
            EventDetail::SqlQuery(d) => (None, None, d.analyzed),
            EventDetail::Tls(d) => (Some(d), None, d.analyzed),
            EventDetail::Http(d) => (None, Some(d), true),
            _ => (None, None, true),
        };
        // No rule looks at fork, exit or agent health (`vocab::EVENT_TYPES`): the index
        // has none for them.
        let event_type = ev.kind();
        if !judged || !set.index.has(event_type) {
            return;
        }
        // The image and arguments: the exec's own, or what the table knows of the process.
        let own = table.get(ev.pid);
        let (exe, argv, argv_truncated, pid_ns) = match &ev.detail {
            EventDetail::Exec(d) => (d.exe.as_ref(), &d.argv, d.argv_truncated, d.pid_ns),
            _ => match own {
                Some(p) => (p.exe.as_ref(), &p.argv, p.argv_truncated, p.pid_ns),
                None => (None, &Argv::EMPTY, false, None),
            },
        };
        let script = match &ev.detail {
            EventDetail::Exec(d) => {
                exe.and_then(|e| crate::process::script::script_of(e, &d.argv, d.cwd.as_deref()))
            }
            _ => None,
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
        let mut subject = Subject {
            exe: exe.map(|e| &**e),
            comm: &ev.comm,
            uid: ev.uid,
            parent_exe: parent.and_then(|p| p.exe.as_deref()),
            ancestor_exes: ancestor_exes.as_slice(),
            cgroup: ev.cgroup.as_deref(),
            container_id: identity.as_deref().map(|c| &*c.id),
            pod_uid: identity.as_deref().and_then(|c| c.pod_uid.as_deref()),
            container_name: identity.as_deref().and_then(|c| c.name.as_deref()),
            image: identity.as_deref().and_then(|c| c.image.as_deref()),
            pod_name: identity.as_deref().and_then(|c| c.pod_name.as_deref()),
            namespace: identity.as_deref().and_then(|c| c.namespace.as_deref()),
            in_container: identity.is_some() || self.host.foreign_pid(pid_ns),
            argv_truncated,
            script: script.as_deref(),
            tls,
            http,
            ..Subject::of(event_type, argv)
        };
        describe(&ev.detail, &mut subject);

        let latency_us = || {
            if self.live {
                BootClock::boot_now_ns().saturating_sub(ev.ts_boot_ns) / 1000
            } else {
                0
            }
        };
        let matched = |policy, rule, latency_us| Match {
            engine: self,
            set_version: set.version,
            policy,
            rule,
            event: ev,
            exe,
            argv,
            argv_truncated,
            table,
            parent,
            identity: &identity,
            latency_us,
        };
        if let Some((policy_name, rule_id)) = named {
            let found = set
                .policies
                .iter()
                .find(|p| p.name == policy_name)
                .and_then(|p| p.rules.iter().find(|r| r.id == rule_id).map(|r| (p, r)));
            if let Some((policy, rule)) = found {
                visit(&matched(policy, rule, latency_us()));
            }
            return;
        }
        // Read once per event, not per matching rule: they are the same decision.
        let mut latency = None;
        // Each policy's selector is judged once per event, however many of its rules are
        // candidates (states: 0 not yet, 1 applies, 2 does not).
        let mut applies = [0u8; SELECTOR_MEMO];
        set.index
            .for_each_candidate(&set.policies, &subject, |slot, policy, rule| {
                let applies_here = match applies.get_mut(slot) {
                    Some(state) => {
                        if *state == 0 {
                            *state = if policy.applies_to(&subject) { 1 } else { 2 };
                        }
                        *state == 1
                    }
                    None => policy.applies_to(&subject),
                };
                let selected = which == Rules::All || rule.conditions.uses_stdin_peer();
                if selected && applies_here && rule.matches(&subject) {
                    let latency_us = *latency.get_or_insert_with(latency_us);
                    visit(&matched(policy, rule, latency_us));
                }
            });
    }
}

/// Policies whose selector verdict is remembered per event; beyond, it is judged per rule.
const SELECTOR_MEMO: usize = 256;

/// What the event itself says, into the subject's event-specific fields.
fn describe<'a>(detail: &'a EventDetail, s: &mut Subject<'a>) {
    use crate::events::hooks::Named;
    match detail {
        EventDetail::Exec(d) => {
            s.stdio = d.stdio.as_ref();
            if let Some(peer) = &d.stdin_peer {
                s.stdin_peer_exe = peer.exe.as_deref();
                s.stdin_peer_argv = Some(&peer.argv);
            }
            s.substituted_from_exe = d.substituted_from.as_ref().and_then(|p| p.exe.as_deref());
            s.exe_built_by = d.built_by.as_deref();
        }
        EventDetail::FileOpen(d) => {
            s.path = d.path.as_deref();
            s.access = d.access;
        }
        EventDetail::LibraryLoad(d) => s.path = d.path.as_deref(),
        EventDetail::Connect(d) => s.dest = Some(d.dest()),
        EventDetail::SqlQuery(d) => {
            s.query = Some(d.query.as_str());
            s.sql_findings = d.findings.as_slice();
            s.sql = Some(d);
        }
        EventDetail::FileChange(d) => {
            s.operation = Some(d.operation.name());
            s.path = d.path.as_deref();
            s.path2 = d.new_path.as_deref();
            s.mode = d.mode;
            s.xattr = d.xattr.as_deref();
        }
        EventDetail::Ptrace(d) => {
            s.operation = Some(d.operation.name());
            // A target the table does not know (a thread id, a process gone) is taken as
            // not the caller's: the conservative reading for "attached to someone else".
            s.target_descendant = Some(d.target.as_ref().is_some_and(|t| t.descendant));
            if let Some(t) = &d.target {
                s.target_exe = t.exe.as_deref();
                s.target_same_uid = Some(t.uid == s.uid);
            }
        }
        EventDetail::Namespace(d) => {
            s.operation = Some(d.operation.name());
            s.namespaces = d.namespaces.as_slice();
            s.into_host = d.into_host;
        }
        EventDetail::Mount(d) => {
            s.operation = Some(d.operation.name());
            s.path = d.target.as_deref();
            s.mount_source = d.source.as_deref();
            s.fstype = d.fstype.as_deref();
            s.mount_flags = d.flags;
        }
        EventDetail::UnixConnect(d) => s.path = d.path.as_deref(),
        EventDetail::KernelModule(d) => {
            s.operation = Some(d.operation.name());
            s.path = d.path.as_deref();
        }
        EventDetail::BpfLoad(d) => s.prog_type = Some(d.prog_type.as_str()),
        EventDetail::IoUring(d) => s.operation = Some(d.operation.as_str()),
        EventDetail::Socket(d) => s.operation = Some(d.operation.name()),
        EventDetail::Tls(d) => s.dest = d.endpoints.peer,
        EventDetail::Http(d) => {
            s.path = d.path.as_deref();
            s.dest = d.endpoints.peer;
        }
        EventDetail::Fork(_) | EventDetail::Exit(_) | EventDetail::AgentHealth(_) => {}
    }
}

/// A rule that matched an event, with what the evaluation borrowed to decide it: enough to
/// key it for folding (`fold_key`) or to build its `Detection`.
pub struct Match<'a> {
    engine: &'a Engine,
    set_version: u64,
    pub policy: &'a Policy,
    pub rule: &'a Rule,
    pub event: &'a Arc<Event>,
    exe: Option<&'a Text>,
    argv: &'a Argv,
    argv_truncated: bool,
    table: &'a ProcessTable,
    parent: Option<&'a Process>,
    identity: &'a Option<Arc<ContainerIdentity>>,
    /// From the kernel timestamp of the event to this decision (0 for replays).
    pub latency_us: u64,
}

impl<'a> Match<'a> {
    pub fn mode(&self) -> Mode {
        self.rule.effective_mode(self.policy)
    }

    pub fn action(&self) -> Action {
        self.rule.action
    }

    /// The fold key of the detection this match would become, with this outcome: equal to
    /// `FoldKey::of` that detection once its outcome is set.
    pub fn fold_key<'k>(&'k self, outcome: Outcome, detail: Option<&'k str>) -> FoldKey<'k> {
        FoldKey {
            rule: &self.rule.id,
            policy: &self.policy.name,
            policy_version: self.policy.version,
            policy_set_version: self.set_version,
            mode: self.mode(),
            action: self.rule.action,
            outcome,
            outcome_detail: detail,
            ..FoldKey::event(self.event, self.exe.map(|e| &**e), self.argv)
        }
    }

    /// The full detection (outcome `Alerted` until the caller has acted): a fresh id, the
    /// time, copies of the process and its ancestry.
    pub fn detection(&self) -> Detection {
        let (ev, engine) = (self.event, self.engine);
        Detection {
            id: format!(
                "{:x}-{}",
                engine.run_id,
                engine.seq.fetch_add(1, Ordering::Relaxed)
            ),
            time: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            rule_id: self.rule.id.clone(),
            policy: self.policy.name.clone(),
            policy_version: self.policy.version,
            policy_set_version: self.set_version,
            mode: self.mode(),
            severity: self.rule.severity,
            action: self.rule.action,
            outcome: Outcome::Alerted,
            outcome_detail: None,
            description: self.rule.description.clone(),
            event: match (self.identity, &ev.container) {
                // A replayed event judged with the container its path names: say so.
                (Some(c), None) => Arc::new(Event {
                    container: Some(c.clone()),
                    ..(**ev).clone()
                }),
                _ => ev.clone(),
            },
            process: ProcessSummary {
                pid: ev.pid,
                comm: ev.comm,
                exe: self.exe.cloned(),
                argv: self.argv.clone(),
                argv_truncated: self.argv_truncated,
                uid: Some(ev.uid),
            },
            ancestry: {
                let mut summaries = Vec::new();
                for_each_in_chain(self.table, self.parent, ev.pid, |p| {
                    summaries.push(ProcessSummary {
                        pid: p.pid,
                        comm: p.comm,
                        exe: p.exe.clone(),
                        argv: Argv::default(),
                        argv_truncated: false,
                        uid: Some(p.uid),
                    })
                });
                summaries
            },
            latency_us: self.latency_us,
            count: 1,
            last_time: None,
            kill_scope: (self.rule.action == Action::Kill).then_some(self.rule.scope),
            quarantine_mode: (self.rule.action == Action::Quarantine)
                .then_some(self.rule.quarantine),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::{ExecDetail, FileOpenDetail},
        policy,
    };

    fn event(pid: u32, ppid: u32, detail: EventDetail) -> Arc<Event> {
        Arc::new(Event {
            ts_boot_ns: u64::from(pid),
            uid: 1000,
            gid: 1000,
            comm: "cat".into(),
            cgroup_id: 7,
            cgroup: Some("/user.slice".into()),
            ..Event::new(pid, ppid, detail)
        })
    }

    /// The key the pipeline checks before building a detection must be the key of the
    /// detection it would build: otherwise a storm is never folded early (and every
    /// occurrence is built, as before this existed).
    #[test]
    fn a_matchs_fold_key_is_its_detections() {
        let set = PolicySet::offline(
            policy::default_policies().expect("defaults parse"),
            "test".into(),
        );
        let mut table = ProcessTable::new(64, std::time::Duration::from_secs(30));
        let exec = event(
            500,
            1,
            EventDetail::Exec(ExecDetail {
                exe: Some("/usr/bin/cat".into()),
                filename: "cat".into(),
                argv: ["cat", "/etc/shadow"].into(),
                cwd: Some("/".into()),
                ..ExecDetail::default()
            }),
        );
        table.apply(&exec);
        let open = event(
            500,
            1,
            EventDetail::FileOpen(FileOpenDetail {
                path: Some("/etc/shadow".into()),
                fd: 3,
                flags: Some(0),
                file_flags: 0,
                access: crate::events::Access::READ,
                incomplete: Vec::new(),
            }),
        );
        table.apply(&open);
        let engine = Engine::replay();
        let mut seen = Vec::new();
        engine.for_each_match(&set, &open, &table, |m| {
            let (outcome, detail) = Outcome::without_acting(m.action(), m.mode())
                .unwrap_or((Outcome::After, Some("killed after the event")));
            let mut d = m.detection();
            d.outcome = outcome;
            d.outcome_detail = detail.map(String::from);
            assert_eq!(m.fold_key(outcome, detail), FoldKey::of(&d));
            seen.push(d.rule_id);
        });
        assert_eq!(seen, ["read-shadow-file"]);
    }

    /// Selectors and rules on the runtime's names see what the pipeline attached; a replayed
    /// event recorded without a container is judged (and reported) with what its cgroup path
    /// says, names unknown.
    #[test]
    fn container_names_reach_selectors_and_detections() {
        const CID: &str = "4f1c3b0a5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3";
        let text = "name: shop-guard\nversion: 1\nmode: audit\nselector:\n  namespace: [\"shop\"]\n  in_container: true\nrules:\n  - id: shop-shell\n    severity: high\n    event: exec\n    match:\n      exe: [\"*/sh\"]\n      image: [\"registry.local/shop/*\"]\n      container_name: [\"web\"]\n      pod_name: [\"web-*\"]\n---\nname: containers\nversion: 1\nmode: audit\nrules:\n  - id: any-container-shell\n    severity: low\n    event: exec\n    match:\n      exe: [\"*/sh\"]\n      container_id: [\"4f1c*\"]\n";
        let set = PolicySet::offline(
            policy::parse_policies("t.yaml", text).expect("parses"),
            "test".into(),
        );
        let table = ProcessTable::new(64, std::time::Duration::from_secs(30));
        let sh = |container: Option<ContainerIdentity>, cgroup: &str| {
            let mut e = (*event(
                9,
                1,
                EventDetail::Exec(ExecDetail {
                    exe: Some("/bin/sh".into()),
                    filename: "/bin/sh".into(),
                    argv: ["sh"].into(),
                    cwd: Some("/".into()),
                    ..ExecDetail::default()
                }),
            ))
            .clone();
            e.cgroup = Some(cgroup.into());
            e.container = container.map(Arc::new);
            Arc::new(e)
        };
        let path = format!("/docker/{CID}");
        let named = ContainerIdentity {
            id: CID.into(),
            runtime: crate::events::Runtime::Docker,
            name: Some("web".into()),
            image: Some("registry.local/shop/web:1.4".into()),
            pod_uid: None,
            pod_name: Some("web-0".into()),
            namespace: Some("shop".into()),
        };
        let rules =
            |engine: &Engine, ev: &Arc<Event>| -> Vec<(String, Option<Arc<ContainerIdentity>>)> {
                engine
                    .evaluate(&set, ev, &table)
                    .into_iter()
                    .map(|d| (d.rule_id, d.event.container.clone()))
                    .collect()
            };
        let live = Engine::live();
        let got = rules(&live, &sh(Some(named.clone()), &path));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "shop-shell");
        assert_eq!(got[0].1.as_deref(), Some(&named));
        // Another namespace, another image: only the id rule.
        let mut other = named.clone();
        other.namespace = Some("dev".into());
        let got = rules(&live, &sh(Some(other), &path));
        assert_eq!(
            got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
            ["any-container-shell"]
        );
        // Names not known yet: the id rule fires, the name rules wait.
        let bare = crate::process::container::identify(&path);
        let got = rules(&live, &sh(bare.clone(), &path));
        assert_eq!(
            got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
            ["any-container-shell"]
        );
        // Live events on the host carry no container and match neither.
        assert!(rules(&live, &sh(None, "/user.slice")).is_empty());
        // Replayed without `container`: the path decides, and the detection says so.
        let got = rules(&Engine::replay(), &sh(None, &path));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.as_deref(), bare.as_ref());
    }
}

/// What rule evaluation costs per event on the default policies, for instruction counts
/// (`valgrind --tool=callgrind` on this test, `--ignored`): an exec of an ordinary program
/// with a realistic command line under a shell, and an open no rule matches.
#[cfg(test)]
mod cost {
    use super::*;
    use crate::events::{Access, ExecDetail, FileOpenDetail};

    fn ev(pid: u32, ppid: u32, comm: &str, detail: EventDetail) -> Arc<Event> {
        Arc::new(Event {
            ts_boot_ns: u64::from(pid),
            uid: 1000,
            gid: 1000,
            euid: Some(1000),
            egid: Some(1000),
            cap_effective: Some(0),
            start_ns: u64::from(pid),
            comm: comm.into(),
            cgroup_id: 7,
            cgroup: Some("/user.slice/user-1000.slice/session-1.scope".into()),
            ..Event::new(pid, ppid, detail)
        })
    }

    fn exec(pid: u32, ppid: u32, exe: &str, argv: &[&str]) -> Arc<Event> {
        ev(
            pid,
            ppid,
            exe.rsplit('/').next().unwrap_or(exe),
            EventDetail::Exec(ExecDetail {
                exe: Some(exe.into()),
                filename: exe.into(),
                argv: Argv::new(argv),
                cwd: Some("/home/dev/src/app".into()),
                ..ExecDetail::default()
            }),
        )
    }

    #[test]
    #[ignore = "measurement: run under callgrind"]
    fn rule_evaluation_per_event() {
        let n: u32 = std::env::var("RASP_COST_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        let set = PolicySet::offline(
            crate::policy::default_policies().expect("defaults parse"),
            "cost".into(),
        );
        let mut table = ProcessTable::new(65_536, std::time::Duration::from_secs(30));
        let engine = Engine::replay();
        table.apply(&exec(100, 1, "/usr/bin/bash", &["-bash"]));
        let mut matched = 0usize;
        let started = std::time::Instant::now();
        for i in 0..n {
            let pid = 1000 + i;
            let e = exec(
                pid,
                100,
                "/usr/bin/git",
                &["git", "log", "--oneline", "-n", "20", "--format=%h %s"],
            );
            table.apply(&e);
            engine.for_each_match(&set, &e, &table, |_| matched += 1);
            let o = ev(
                pid,
                100,
                "git",
                EventDetail::FileOpen(FileOpenDetail {
                    path: Some("/etc/gitconfig".into()),
                    fd: 3,
                    flags: Some(0),
                    file_flags: 0,
                    access: Access::READ,
                    incomplete: Vec::new(),
                }),
            );
            engine.for_each_match(&set, &o, &table, |_| matched += 1);
        }
        let per = started.elapsed() / n;
        eprintln!("{n} exec+open pairs, {matched} matches, {per:?} a pair");
        assert_eq!(
            matched, 0,
            "an ordinary git command matches no default rule"
        );
    }
}
