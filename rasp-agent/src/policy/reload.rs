//! Changing the active policy set: `policy apply`, `policy rollback`, SIGHUP and directory
//! changes all go through `PolicyControl`, which validates first (a bad set leaves the
//! active one in place and says why) and swaps the set and the kernel pre-filters under one
//! lock, so two changes at once can never leave one set active with the other's filters.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use tokio::sync::watch;

use super::{
    active::{PolicyRegistry, PolicySet, PolicySetSummary},
    deny::{DenyPlan, HostFs, KernelCapabilities, KernelRule, Rung},
    Policy,
};
use crate::{
    loader::{deny::DenyMaps, InterestMaps},
    metrics::{Metrics, ReloadResult},
};

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

pub struct PolicyControl {
    registry: PolicyRegistry,
    /// The directory watched and reloaded, `None` for the built-in defaults.
    dir: Option<PathBuf>,
    /// The kernel pre-filters; their lock is also the lock every change of set takes.
    interest: Mutex<Option<InterestMaps>>,
    deny: Mutex<DenyState>,
    /// Problems of the last reload that was refused (the previous set stayed active).
    reload_errors: Mutex<Vec<String>>,
    metrics: std::sync::Arc<Metrics>,
}

/// What the policies' sources say, as a list of `file:line:column` problems.
pub type Problems = Vec<String>;

impl PolicyControl {
    /// Load the directory (or the defaults) for the start: a broken set stops the agent
    /// before anything is loaded into the kernel.
    pub fn load_initial(
        dir: Option<PathBuf>,
        metrics: std::sync::Arc<Metrics>,
    ) -> Result<Self, Problems> {
        let initial = load(dir.as_deref()).map_err(|errors| to_strings(&errors))?;
        Ok(PolicyControl {
            registry: PolicyRegistry::new(initial, source(dir.as_deref(), "start")),
            dir,
            interest: Mutex::new(None),
            deny: Mutex::new(DenyState::default()),
            reload_errors: Mutex::new(Vec::new()),
            metrics,
        })
    }

    /// Hand over the kernel pre-filters (after load) and point them at the active set.
    pub fn attach_interest(&self, maps: InterestMaps) {
        let mut interest = crate::lock(&self.interest);
        *interest = Some(maps);
        Self::compile_into(&mut interest, &self.registry.current());
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

    /// The rule a kernel verdict names (`rasp_common::deny::rule_slot`).
    pub fn kernel_rule(&self, slot: u32) -> Option<KernelRule> {
        let generation = rasp_common::deny::slot_generation(slot);
        let index = rasp_common::deny::slot_index(slot) as usize;
        let deny = crate::lock(&self.deny);
        deny.plans
            .iter()
            .rev()
            .find(|p| p.generation == generation)
            .and_then(|p| p.rules.get(index).cloned())
    }

    /// The kernel slot of a rule in the active deny plan, or a fresh one naming it for a
    /// quarantine (a rule without kernel entries still needs its verdicts attributed).
    pub fn slot_of(&self, rule_id: &str) -> Option<u32> {
        let deny = crate::lock(&self.deny);
        let plan = deny.plans.back()?;
        plan.rules
            .iter()
            .position(|r| r.rule == rule_id)
            .map(|i| rasp_common::deny::rule_slot(plan.generation, i as u32))
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
        let policies = super::parse_files(files).map_err(|errors| {
            self.metrics.policy_reload(ReloadResult::Refused);
            to_strings(&errors)
        })?;
        self.metrics.policy_reload(ReloadResult::Applied);
        Ok(self.swap(policies, why).summary())
    }

    pub fn rollback(&self) -> Result<PolicySetSummary, String> {
        let mut interest = crate::lock(&self.interest);
        let set = self.registry.rollback()?;
        Self::compile_into(&mut interest, &set);
        Self::deny_into(&mut crate::lock(&self.deny), &set);
        self.metrics.policy_reload(ReloadResult::RolledBack);
        tracing::info!(version = set.version, restored_from = ?set.restored_from, "policy set rolled back");
        Ok(set.summary())
    }

    /// Reload the directory (or the defaults) and swap it in, or keep the active set and
    /// remember why not.
    pub fn reload(&self, why: &str) {
        match load(self.dir.as_deref()) {
            Ok(policies) => {
                let set = self.swap(policies, source(self.dir.as_deref(), why));
                crate::lock(&self.reload_errors).clear();
                self.metrics.policy_reload(ReloadResult::Applied);
                tracing::info!(version = set.version, why, "policies reloaded");
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "policy reload refused; the active set stays");
                }
                *crate::lock(&self.reload_errors) = to_strings(&errors);
                self.metrics.policy_reload(ReloadResult::Refused);
            }
        }
    }

    fn swap(&self, policies: Vec<Policy>, source: String) -> std::sync::Arc<PolicySet> {
        let mut interest = crate::lock(&self.interest);
        let set = self.registry.apply(policies, source);
        Self::compile_into(&mut interest, &set);
        Self::deny_into(&mut crate::lock(&self.deny), &set);
        tracing::info!(version = set.version, source = %set.source, "policy set active");
        set
    }

    /// Point the kernel pre-filters at what `set` needs. On failure the previous filters
    /// stay, and that is logged loudly: the new set's file, library and connect rules may
    /// then miss events.
    fn compile_into(interest: &mut Option<InterestMaps>, set: &PolicySet) {
        let Some(maps) = interest.as_mut() else {
            return; // not loaded yet: attach_interest compiles the active set
        };
        let wanted = super::compile::interest(&set.policies);
        match maps.apply(&wanted) {
            Ok(()) => {
                tracing::debug!(version = set.version, interest = ?wanted, "kernel pre-filters updated")
            }
            Err(e) => {
                tracing::error!(version = set.version, error = %e, "kernel pre-filters NOT updated")
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
        if let Some(maps) = state.maps.as_mut() {
            if let Err(e) = maps.apply(&plan) {
                tracing::error!(version = set.version, error = %e, "kernel deny maps NOT updated");
            }
        }
        state.plans.push_back(std::sync::Arc::new(plan));
        while state.plans.len() > PLAN_HISTORY {
            state.plans.pop_front();
        }
    }

    /// Reload on SIGHUP, and when the policy directory's files change (polled: cheap, and
    /// works on every filesystem, unlike inotify on some overlay and network mounts).
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

fn to_strings(errors: &[super::PolicyError]) -> Problems {
    errors.iter().map(|e| e.to_string()).collect()
}

fn source(dir: Option<&Path>, why: &str) -> String {
    match dir {
        Some(d) => format!("{} ({why})", d.display()),
        None => format!("built-in defaults ({why})"),
    }
}

impl crate::enforce::NetworkCut for PolicyControl {
    fn cut(&self, cgroup_id: u64, rule_slot: u32) -> Result<(), String> {
        self.quarantine_cgroup(cgroup_id, rule_slot)
    }

    fn restore(&self, cgroup_id: u64) -> Result<(), String> {
        self.release_cgroup(cgroup_id)
    }
}
