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
    Policy,
};
use crate::{
    loader::{Interest, InterestMaps, LoadError},
    metrics::{Metrics, ReloadResult},
};

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
            .and_then(|policies| self.swap(policies, why).map_err(|e| vec![e]));
        match result {
            Ok(set) => {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = PolicyControl::load_initial(None, Arc::new(Metrics::new())).expect("defaults");
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
