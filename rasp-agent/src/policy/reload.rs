//! Changing the active policy set: `policy apply`, `policy rollback`, SIGHUP and directory
//! changes all go through `PolicyControl`, which validates first (a bad set, or one whose
//! pre-filter does not fit the kernel maps, leaves the active one in place and says why) and
//! changes the kernel pre-filters and then the set inside one critical section, so two
//! changes at once can never leave one set active with the other's filters. Filters that
//! cannot be written refuse the change: the kernel and the active set never disagree.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::watch;

use super::{
    active::{PolicyRegistry, PolicySet, PolicySetSummary},
    deny::{DenyPlan, HostFs, KernelCapabilities, KernelRule, Rung},
    persist::SavedSets,
    Policy,
};
use crate::loader::{deny::DenyMaps, Interest, InterestMaps, LoadError};

/// Result of loading a policy set (start, SIGHUP, directory change, `policy apply`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReloadResult {
    /// The new set became active.
    Applied,
    /// It did not validate; the previous set stayed active.
    Refused,
    /// `policy rollback` restored an earlier set.
    RolledBack,
}

/// Where reload results are counted (the metrics registry).
pub trait ReloadSink: Send + Sync {
    fn policy_reload(&self, result: ReloadResult);
}

/// Deny plans kept so a verdict from just before a reload still names its rule.
const PLAN_HISTORY: usize = 8;

/// The kernel's deny maps and what was put in them. Locked after `interest`, never before.
#[derive(Default)]
struct DenyState {
    maps: Option<DenyMaps>,
    caps: KernelCapabilities,
    /// Newest last.
    plans: std::collections::VecDeque<std::sync::Arc<DenyPlan>>,
}

/// Where a set's pre-filter goes: the kernel's interest maps in the agent.
pub trait KernelFilter: Send {
    fn apply(&mut self, interest: &Interest) -> Result<(), LoadError>;
}

impl KernelFilter for InterestMaps {
    fn apply(&mut self, interest: &Interest) -> Result<(), LoadError> {
        InterestMaps::apply(self, interest)
    }
}

pub struct PolicyControl {
    registry: PolicyRegistry,
    /// The directory watched and reloaded, `None` for the built-in defaults.
    dir: Option<PathBuf>,
    /// The kernel pre-filters; their lock is also the lock every change of set takes.
    interest: Mutex<Option<Box<dyn KernelFilter>>>,
    deny: Mutex<DenyState>,
    /// Problems of the last reload that was refused (the previous set stayed active).
    reload_errors: Mutex<Vec<String>>,
    metrics: std::sync::Arc<dyn ReloadSink>,
    /// Where a set applied over the socket is kept across restarts (the state directory).
    saved: Option<SavedSets>,
}

/// What the policies' sources say, as a list of `file:line:column` problems.
pub type Problems = Vec<String>;

impl PolicyControl {
    /// Load the directory (or the defaults) for the start: a broken set stops the agent
    /// before anything is loaded into the kernel. With a state directory, a set applied
    /// over the socket before the last stop (or crash) comes back instead, unless the
    /// policy directory changed since; a saved set that no longer loads is reported and
    /// the directory's set used.
    pub fn load_initial(
        dir: Option<PathBuf>,
        state_dir: Option<&Path>,
        metrics: std::sync::Arc<dyn ReloadSink>,
    ) -> Result<Self, Problems> {
        let saved = state_dir.map(SavedSets::in_dir);
        let (initial, origin) = match saved.as_ref().and_then(|s| restore(s, dir.as_deref())) {
            Some(restored) => restored,
            None => (
                load(dir.as_deref()).map_err(|errors| to_strings(&errors))?,
                source(dir.as_deref(), "start"),
            ),
        };
        Ok(PolicyControl {
            registry: PolicyRegistry::new(initial, origin),
            dir,
            interest: Mutex::new(None),
            deny: Mutex::new(DenyState::default()),
            reload_errors: Mutex::new(Vec::new()),
            metrics,
            saved,
        })
    }

    /// Forget a saved applied set: the directory (or defaults) is the active source again.
    fn forget_saved(&self) {
        if let Some(Err(e)) = self.saved.as_ref().map(SavedSets::clear) {
            tracing::error!(error = %e, "the saved applied set could not be removed; it may come back at the next start");
        }
    }

    /// Hand over the kernel pre-filters (after load) and point them at the active set.
    pub fn attach_interest(&self, maps: impl KernelFilter + 'static) {
        let mut interest = crate::lock(&self.interest);
        let filter = interest.insert(Box::new(maps));
        let set = self.registry.current();
        if let Err(e) = filter.apply(&super::compile::interest(&set.policies)) {
            // At start there is no older filter to keep; the set validated, so this is a
            // map error, and the rules that need the filters would get no events.
            tracing::error!(version = set.version, error = %e, "kernel pre-filters NOT set for the initial policy set");
        }
    }

    /// Hand over the deny maps (after load) with what the kernel accepted, and fill them
    /// from the active set.
    pub fn attach_deny(&self, mut maps: DenyMaps, caps: KernelCapabilities) {
        let _interest = crate::lock(&self.interest);
        let mut deny = crate::lock(&self.deny);
        if let Err(e) = maps.set_lsm_enforces(caps.lsm) {
            tracing::error!(error = %e, "could not tell the kernel fallbacks that BPF-LSM enforces");
        }
        deny.maps = Some(maps);
        deny.caps = caps;
        Self::deny_into(&mut deny, &self.registry.current());
    }

    /// At exit: stop every kernel deny check (`DenyMaps::stand_down`).
    pub fn stand_down(&self) {
        let mut deny = crate::lock(&self.deny);
        if let Some(maps) = deny.maps.as_mut() {
            if let Err(e) = maps.stand_down() {
                tracing::error!(error = %e, "kernel deny checks not switched off at exit");
            }
        }
    }

    /// The rule a kernel verdict names (`rasp_common::deny::rule_slot`).
    pub fn kernel_rule(&self, slot: u32) -> Option<KernelRule> {
        let generation = rasp_common::deny::slot_generation(slot);
        let index = rasp_common::deny::slot_index(slot) as usize;
        let deny = crate::lock(&self.deny);
        deny.plans
            .iter()
            .rev()
            .find(|p| p.table.generation == generation)
            .and_then(|p| p.table.rules.get(index).cloned())
    }

    /// The kernel slot of a rule in the active deny plan, or a fresh one naming it for a
    /// quarantine (a rule without kernel entries still needs its verdicts attributed).
    pub fn slot_of(&self, rule_id: &str) -> Option<u32> {
        let deny = crate::lock(&self.deny);
        let plan = deny.plans.back()?;
        plan.table
            .rules
            .iter()
            .position(|r| r.rule == rule_id)
            .map(|i| rasp_common::deny::rule_slot(plan.table.generation, i as u32))
    }

    /// What an audit-mode `block` rule would have done on this kernel, in the words of its
    /// detection (`None`: not an audit-mode block rule of the active set).
    pub fn audit_text(&self, rule_id: &str) -> Option<String> {
        let deny = crate::lock(&self.deny);
        deny.plans.back()?.audit_text(rule_id)
    }

    /// What the kernel does about each enforce-mode `block` rule of the active set.
    pub fn rungs(&self) -> Vec<(String, Rung)> {
        let deny = crate::lock(&self.deny);
        deny.plans
            .back()
            .map(|p| p.rungs.clone())
            .unwrap_or_default()
    }

    /// What the enforcing hooks the kernel accepted make possible.
    pub fn capabilities(&self) -> KernelCapabilities {
        crate::lock(&self.deny).caps
    }

    /// Cut a cgroup off the network in the kernel (`slot` names the rule).
    pub fn quarantine_cgroup(&self, cgroup_id: u64, slot: u32) -> Result<(), String> {
        let mut deny = crate::lock(&self.deny);
        let maps = deny.maps.as_mut().ok_or("the deny maps are not loaded")?;
        maps.quarantine(cgroup_id, slot).map_err(|e| e.to_string())
    }

    pub fn release_cgroup(&self, cgroup_id: u64) -> Result<(), String> {
        let mut deny = crate::lock(&self.deny);
        let maps = deny.maps.as_mut().ok_or("the deny maps are not loaded")?;
        maps.release(cgroup_id).map_err(|e| e.to_string())
    }

    pub fn registry(&self) -> &PolicyRegistry {
        &self.registry
    }

    pub fn reload_errors(&self) -> Vec<String> {
        crate::lock(&self.reload_errors).clone()
    }

    pub fn apply(
        &self,
        files: &[(String, String)],
        why: String,
    ) -> Result<PolicySetSummary, Problems> {
        let result = super::parse_files(files)
            .map_err(|errors| to_strings(&errors))
            .and_then(|policies| self.swap(policies, why.clone()).map_err(|e| vec![e]));
        match result {
            Ok(set) => {
                if let Some(Err(e)) = self.saved.as_ref().map(|s| s.save(files, &why)) {
                    tracing::error!(error = %e, version = set.version, "the applied set is active but could not be saved: a restart will load the policy directory's set");
                }
                self.metrics.policy_reload(ReloadResult::Applied);
                Ok(set.summary())
            }
            Err(problems) => {
                self.metrics.policy_reload(ReloadResult::Refused);
                Err(problems)
            }
        }
    }

    pub fn rollback(&self) -> Result<PolicySetSummary, String> {
        let mut interest = crate::lock(&self.interest);
        let previous = self
            .registry
            .previous()
            .ok_or_else(|| "no previous policy set to roll back to".to_string())?;
        self.filter_for(&mut interest, &previous.policies)?;
        let set = self.registry.rollback()?;
        Self::deny_into(&mut crate::lock(&self.deny), &set);
        self.forget_saved();
        self.metrics.policy_reload(ReloadResult::RolledBack);
        tracing::info!(version = set.version, restored_from = ?set.restored_from, "policy set rolled back");
        Ok(set.summary())
    }

    /// Reload the directory (or the defaults) and swap it in, or keep the active set and
    /// remember why not.
    pub fn reload(&self, why: &str) {
        let result = load(self.dir.as_deref())
            .map_err(|errors| to_strings(&errors))
            .and_then(|policies| {
                self.swap(policies, source(self.dir.as_deref(), why))
                    .map_err(|e| vec![e])
            });
        match result {
            Ok(set) => {
                crate::lock(&self.reload_errors).clear();
                self.forget_saved();
                self.metrics.policy_reload(ReloadResult::Applied);
                tracing::info!(version = set.version, why, "policies reloaded");
            }
            Err(problems) => {
                for e in &problems {
                    tracing::error!(error = %e, "policy reload refused; the active set stays");
                }
                *crate::lock(&self.reload_errors) = problems;
                self.metrics.policy_reload(ReloadResult::Refused);
            }
        }
    }

    /// Filters first, then the set, under the one lock: a set is active only once the
    /// kernel sends what it needs, and a refused filter leaves both as they were.
    fn swap(&self, policies: Vec<Policy>, source: String) -> Result<Arc<PolicySet>, String> {
        let mut interest = crate::lock(&self.interest);
        self.filter_for(&mut interest, &policies)?;
        let set = self.registry.apply(policies, source);
        Self::deny_into(&mut crate::lock(&self.deny), &set);
        tracing::info!(version = set.version, source = %set.source, "policy set active");
        Ok(set)
    }

    /// Point the kernel pre-filters at what `policies` need. On failure, put back what the
    /// active set needs (a failed write may have left part of the new entries) and refuse.
    fn filter_for(
        &self,
        interest: &mut Option<Box<dyn KernelFilter>>,
        policies: &[Policy],
    ) -> Result<(), String> {
        let Some(filter) = interest.as_mut() else {
            return Ok(()); // not loaded yet: attach_interest compiles the active set
        };
        let wanted = super::compile::interest(policies);
        match filter.apply(&wanted) {
            Ok(()) => {
                tracing::debug!(interest = ?wanted, "kernel pre-filters updated");
                Ok(())
            }
            Err(e) => {
                let active = self.registry.current();
                if let Err(again) = filter.apply(&super::compile::interest(&active.policies)) {
                    tracing::error!(version = active.version, error = %again, "kernel pre-filters could not be restored for the active set");
                }
                tracing::error!(error = %e, "kernel pre-filters refused the new set; the active set stays");
                Err(format!(
                    "the kernel pre-filters could not take this set ({e}); the active set is unchanged"
                ))
            }
        }
    }

    /// Put what `set` enforces in the kernel into the deny maps. The plan never overflows
    /// them (rules that do not fit stay in userspace, and say so); a failed map write is
    /// logged loudly and leaves the old entries (a stricter kernel, never a laxer one).
    fn deny_into(state: &mut DenyState, set: &PolicySet) {
        let plan = super::deny::plan(&set.policies, set.version, state.caps, &HostFs::detect());
        for (rule, rung) in &plan.rungs {
            tracing::info!(version = set.version, rule = %rule, enforcement = %rung.describe(), "enforce rule");
        }
        Self::install(state, plan, set.version);
    }

    /// Resolve the active set's denied paths again and put what changed in the kernel.
    /// Files are denied by inode: a denied file replaced since (a package upgrade, a delete
    /// and re-create, a rename over it) is a new inode the kernel would not deny, and the
    /// number of a deleted one can be given to an unrelated file. Run on every tick of
    /// `watch` (2 s); only a resolution that differs touches the maps.
    pub fn refresh_deny(&self) {
        // The lock every change of set takes, so the set cannot change under the plan.
        let _interest = crate::lock(&self.interest);
        let mut deny = crate::lock(&self.deny);
        let set = self.registry.current();
        let plan = super::deny::plan(&set.policies, set.version, deny.caps, &HostFs::detect());
        let unchanged = deny.plans.back().is_some_and(|last| {
            last.table.generation == plan.table.generation
                && last.table.inodes == plan.table.inodes
                && last.rungs == plan.rungs
        });
        if unchanged || deny.maps.is_none() {
            return;
        }
        for (rule, rung) in &plan.rungs {
            tracing::info!(version = set.version, rule = %rule, enforcement = %rung.describe(), "denied paths resolve to other files now: enforce rule");
        }
        Self::install(&mut deny, plan, set.version);
    }

    /// Write `plan` into the deny maps and keep it as the newest.
    fn install(state: &mut DenyState, plan: DenyPlan, version: u64) {
        if let Some(maps) = state.maps.as_mut() {
            if let Err(e) = maps.apply(&plan.table) {
                tracing::error!(version, error = %e, "kernel deny maps NOT updated");
            }
        }
        state.plans.push_back(std::sync::Arc::new(plan));
        while state.plans.len() > PLAN_HISTORY {
            state.plans.pop_front();
        }
    }

    /// Reload on SIGHUP, and when the policy directory's files change (polled: cheap, and
    /// works on every filesystem, unlike inotify on some overlay and network mounts); on
    /// the other ticks, follow denied files that were replaced (`refresh_deny`).
    pub async fn watch(&self, mut stop: watch::Receiver<bool>) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: reload with `policy apply` instead");
                None
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut seen = self.dir.as_deref().map(super::fingerprint);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    self.reload("SIGHUP");
                    seen = self.dir.as_deref().map(super::fingerprint);
                }
                _ = tick.tick() => {
                    let now = self.dir.as_deref().map(super::fingerprint);
                    if now != seen {
                        seen = now;
                        self.reload("directory changed");
                    } else {
                        self.refresh_deny();
                    }
                }
            }
        }
    }
}

fn load(dir: Option<&Path>) -> Result<Vec<Policy>, Vec<super::PolicyError>> {
    match dir {
        Some(dir) => super::load_paths(&[dir.to_path_buf()]),
        None => super::default_policies(),
    }
}

/// The set saved by `policy apply` before the last stop, parsed, with its origin; `None`
/// (and why, in the log) when there is none, the directory is newer, or it does not load.
fn restore(saved: &SavedSets, dir: Option<&Path>) -> Option<(Vec<Policy>, String)> {
    let set = match saved.load() {
        Ok(set) => set?,
        Err(e) => {
            tracing::error!(error = %e, "the saved applied set cannot be read; starting from the policy directory");
            return None;
        }
    };
    let newer = dir
        .and_then(super::persist::newest_mtime)
        .is_some_and(|t| t > set.saved_unix);
    if newer {
        tracing::warn!(dir = ?dir, "the policy directory changed after the last `policy apply`; its set is loaded, the applied one dropped");
        let _ = saved.clear();
        return None;
    }
    match super::parse_files(&set.files) {
        Ok(policies) => {
            tracing::info!(files = set.files.len(), why = %set.why, "restoring the set applied before the last stop");
            Some((
                policies,
                format!("policy apply, restored at start ({})", set.why),
            ))
        }
        Err(errors) => {
            for e in &errors {
                tracing::error!(error = %e, "the saved applied set no longer validates; starting from the policy directory");
            }
            None
        }
    }
}

fn to_strings(errors: &[super::PolicyError]) -> Problems {
    errors.iter().map(|e| e.to_string()).collect()
}

fn source(dir: Option<&Path>, why: &str) -> String {
    match dir {
        Some(d) => format!("{} ({why})", d.display()),
        None => format!("built-in defaults ({why})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reloads counted nowhere: these tests look at the sets and filters.
    struct Uncounted;

    impl ReloadSink for Uncounted {
        fn policy_reload(&self, _: ReloadResult) {}
    }

    /// A kernel filter that remembers what it holds, slowly (to widen any window between
    /// the filter and the set), and refuses interests naming `refuse`.
    #[derive(Clone, Default)]
    struct Recorder {
        holds: Arc<Mutex<Option<Interest>>>,
        refuse: Option<&'static str>,
    }

    impl KernelFilter for Recorder {
        fn apply(&mut self, interest: &Interest) -> Result<(), LoadError> {
            std::thread::sleep(Duration::from_micros(200));
            if let Some(bad) = self.refuse {
                if interest.file_names.iter().any(|(n, _)| n == bad) {
                    *crate::lock(&self.holds) = Some(Interest::default()); // half written
                    return Err(LoadError::Interest {
                        what: "file names",
                        reason: "map update failed (test)".into(),
                    });
                }
            }
            *crate::lock(&self.holds) = Some(interest.clone());
            Ok(())
        }
    }

    fn file(name: &str) -> Vec<(String, String)> {
        vec![(
            format!("{name}.yaml"),
            format!(
                "name: {name}\nversion: 1\nmode: audit\nrules:\n  - id: r\n    severity: low\n    event: file_open\n    match:\n      path: [\"/srv/{name}\"]\n"
            ),
        )]
    }

    fn control(filter: Recorder) -> Arc<PolicyControl> {
        let c = PolicyControl::load_initial(None, None, Arc::new(Uncounted)).expect("defaults");
        c.attach_interest(filter);
        Arc::new(c)
    }

    fn in_sync(c: &PolicyControl, rec: &Recorder) {
        let current = c.registry().current();
        let holds = crate::lock(&rec.holds).clone();
        assert_eq!(
            holds.as_ref(),
            Some(&super::super::compile::interest(&current.policies)),
            "set {} ({}) is active with another set's kernel filters",
            current.version,
            current.source
        );
    }

    /// Two applies and a rollback at once, many times: the filters always end as what
    /// the active set needs (the filter write and the set swap are one critical section).
    #[test]
    fn concurrent_changes_never_leave_a_set_with_another_sets_filters() {
        let rec = Recorder::default();
        let c = control(rec.clone());
        for round in 0..40 {
            let threads: Vec<_> = ["aaa", "bbb", "rollback"]
                .into_iter()
                .map(|what| {
                    let c = c.clone();
                    std::thread::spawn(move || match what {
                        "rollback" => drop(c.rollback()),
                        name => drop(c.apply(&file(name), format!("apply {name}"))),
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("thread");
            }
            in_sync(&c, &rec);
            assert!(c.registry().current().version > round);
        }
    }

    fn policy_names(c: &PolicyControl) -> Vec<String> {
        let set = c.registry().current();
        set.policies.iter().map(|p| p.name.clone()).collect()
    }

    /// A set applied over the socket comes back after a restart (or crash); a reload from
    /// the directory, a rollback, or a directory edited after it make the directory win.
    #[test]
    fn an_applied_set_survives_a_restart_until_the_directory_takes_over() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state");
        let dir = tmp.path().join("policies");
        std::fs::create_dir(&dir).expect("mkdir");
        let (name, text) = file("fromdir").remove(0);
        std::fs::write(dir.join(name), text).expect("write");
        let start = || {
            PolicyControl::load_initial(Some(dir.clone()), Some(&state), Arc::new(Uncounted))
                .expect("loads")
        };
        let c = start();
        assert_eq!(policy_names(&c), ["fromdir"]);
        c.apply(&file("applied"), "apply applied".into())
            .expect("applies");
        drop(c);
        let c = start();
        assert_eq!(policy_names(&c), ["applied"], "restored after the restart");
        assert!(c.registry().current().source.contains("restored"));
        // A SIGHUP reload: the directory is the source again, also after the next start.
        c.reload("SIGHUP");
        assert_eq!(policy_names(&c), ["fromdir"]);
        drop(c);
        assert_eq!(policy_names(&start()), ["fromdir"]);

        // Applied, then the directory edited while the agent was down: the directory wins.
        let c = start();
        c.apply(&file("applied"), "apply again".into())
            .expect("applies");
        drop(c);
        let saved = SavedSets::in_dir(&state);
        let mut set = saved.load().expect("loads").expect("saved");
        set.saved_unix -= 10; // applied ten seconds before the directory's files changed
        std::fs::write(saved.path(), serde_json::to_vec(&set).expect("json")).expect("write");
        assert_eq!(policy_names(&start()), ["fromdir"]);
        assert_eq!(
            saved.load().expect("loads"),
            None,
            "the stale applied set is dropped"
        );

        // A saved set that no longer validates is reported and the directory used.
        std::fs::write(
            saved.path(),
            br#"{"saved_unix":99999999999,"why":"x","files":[["x.yaml","name: [unclosed"]]}"#,
        )
        .expect("write");
        assert_eq!(policy_names(&start()), ["fromdir"]);
    }

    #[test]
    fn a_set_the_kernel_filters_refuse_is_not_applied() {
        let rec = Recorder {
            refuse: Some("bad"),
            ..Recorder::default()
        };
        let c = control(rec.clone());
        c.apply(&file("good"), "apply good".into())
            .expect("good applies");
        let before = c.registry().current().version;

        let problems = c
            .apply(&file("bad"), "apply bad".into())
            .expect_err("refused");
        assert!(
            problems[0].contains("kernel pre-filters could not take this set"),
            "{problems:?}"
        );
        assert_eq!(c.registry().current().version, before, "old set kept");
        in_sync(&c, &rec); // and its filters restored after the half-written attempt

        // Rolling back onto a set the filters refuse is refused the same way.
        c.apply(&file("other"), "apply other".into())
            .expect("other");
        let rec2 = Recorder {
            refuse: Some("good"),
            holds: rec.holds.clone(),
        };
        *crate::lock(&c.interest) = Some(Box::new(rec2.clone()));
        let e = c.rollback().expect_err("rollback onto a refused set");
        assert!(e.contains("active set is unchanged"), "{e}");
        assert_eq!(c.registry().current().source, "apply other");
        in_sync(&c, &rec2);
    }
}
