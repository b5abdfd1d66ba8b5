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
    Policy,
};
use crate::{
    loader::InterestMaps,
    metrics::{Metrics, ReloadResult},
};

pub struct PolicyControl {
    registry: PolicyRegistry,
    /// The directory watched and reloaded, `None` for the built-in defaults.
    dir: Option<PathBuf>,
    /// The kernel pre-filters; their lock is also the lock every change of set takes.
    interest: Mutex<Option<InterestMaps>>,
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
