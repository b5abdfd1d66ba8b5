//! Actions taken from userspace, each with an honest outcome: what was done and when
//! relative to the event. What the kernel refuses by itself (`policy::deny`, BPF-LSM and
//! cgroup hooks) never gets here; here are the rest: `block` of an act the kernel could not
//! decide (killed after the event), `kill` with its scope (process, process group,
//! container), and `quarantine` (network cut, snapshot, freeze or kill of the cgroup).
//! Every action passes the safety guards (`safety`) and a per-rule rate limit (`limit`).

pub mod hold;
pub mod limit;
pub mod quarantine;
pub mod safety;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use crate::{
    detect::{Detection, Outcome},
    events::Event,
    policy::vocab::{Action, KillScope, Mode, QuarantineMode},
    process::procfs,
};
pub use quarantine::{NetworkCut, Quarantined};

/// What acting needs from the rest of the agent.
pub trait EnforceContext {
    /// Cuts and restores a cgroup's network in the kernel.
    fn network(&self) -> &dyn NetworkCut;
    /// The last events of a cgroup, for a quarantine's snapshot.
    fn recent_events(&self, cgroup_id: u64) -> Vec<Arc<Event>>;
    /// Whether the rule chooses cgroups itself (only then may it act on a login session).
    fn rule_names_cgroups(&self, rule_id: &str) -> bool;
    /// The kernel slot of the rule, for the quarantine map (0 when it has none).
    fn rule_slot(&self, rule_id: &str) -> u32;
}

pub struct Enforcer {
    cgroup2: PathBuf,
    /// Decide as usual but act on nothing (`dry_run`): for replays of synthesised events,
    /// whose pids may be real processes'.
    dry_run: bool,
    safety: safety::Safety,
    limiter: Mutex<limit::RateLimiter>,
    book: Mutex<quarantine::QuarantineBook>,
}

impl Enforcer {
    pub fn new(
        cgroup2: PathBuf,
        state_dir: &Path,
        protected_cgroups: &[String],
        actions_per_minute: usize,
    ) -> Result<Self, String> {
        Ok(Enforcer {
            cgroup2,
            dry_run: false,
            safety: safety::Safety::current(protected_cgroups)?,
            limiter: Mutex::new(limit::RateLimiter::new(actions_per_minute)),
            book: Mutex::new(quarantine::QuarantineBook::open(state_dir)),
        })
    }

    /// An enforcer that decides every action (rate limits included) and carries out none:
    /// each enforce-mode action is reported as `audited`, "dry run: would …".
    pub fn dry_run(
        state_dir: &Path,
        protected_cgroups: &[String],
        actions_per_minute: usize,
    ) -> Result<Self, String> {
        let mut enforcer = Enforcer::new(
            PathBuf::from("/nonexistent-cgroup2"),
            state_dir,
            protected_cgroups,
            actions_per_minute,
        )?;
        enforcer.dry_run = true;
        Ok(enforcer)
    }

    /// Actions refused by the per-rule rate limit since start.
    pub fn rate_limited(&self) -> u64 {
        crate::lock(&self.limiter).limited()
    }

    pub fn quarantined(&self) -> Vec<Quarantined> {
        crate::lock(&self.book).list()
    }

    /// Lift a quarantine (`cgroup` as `quarantined` lists it: path or id).
    pub fn release(&self, cgroup: &str, net: &dyn NetworkCut) -> Result<Quarantined, String> {
        crate::lock(&self.book).release(&self.cgroup2, cgroup, net)
    }

    /// Forget quarantines whose cgroup is gone (`QuarantineBook::forget_gone`).
    pub fn forget_gone(&self, net: &dyn NetworkCut) -> Vec<Quarantined> {
        crate::lock(&self.book).forget_gone(&self.cgroup2, net)
    }

    /// Take `d`'s action (its rule matched, no kernel program acted on it).
    pub fn act(&self, d: &Detection, ctx: &dyn EnforceContext) -> (Outcome, Option<String>) {
        let ev = &d.event;
        match (d.action, d.mode) {
            (Action::Alert, _) => (Outcome::Alerted, None),
            (a, Mode::Audit) => match Outcome::without_acting(a, Mode::Audit) {
                Some((o, detail)) => (o, detail.map(String::from)),
                None => (
                    Outcome::Audited,
                    Some(format!("audit mode: would {}", a.effect())),
                ),
            },
            (action, Mode::Enforce) => {
                if !crate::lock(&self.limiter).allow(&d.rule_id, Instant::now()) {
                    let per = crate::lock(&self.limiter).per_minute();
                    return (
                        Outcome::Failed,
                        Some(format!(
                            "not acted on: this rule reached its limit of {per} actions a minute (--actions-per-minute)"
                        )),
                    );
                }
                if self.dry_run {
                    return (
                        Outcome::Audited,
                        Some(format!("dry run: would {}", action.effect())),
                    );
                }
                match action {
                    Action::Block => outcome(
                        self.kill_process(ev),
                        "the kernel could not decide this event: process killed after it",
                    ),
                    Action::Kill => match d.kill_scope.unwrap_or_default() {
                        KillScope::Process => {
                            outcome(self.kill_process(ev), "process killed after the event")
                        }
                        KillScope::ProcessGroup => self.kill_group(ev),
                        KillScope::Container => self.kill_container(d, ctx),
                    },
                    Action::Quarantine => self.quarantine(d, ctx),
                    Action::Alert => (Outcome::Alerted, None),
                }
            }
        }
    }

    fn kill_process(&self, ev: &Event) -> Result<(), String> {
        self.safety
            .check_process(ev.pid)
            .map_err(|r| r.to_string())?;
        kill(ev)
    }

    fn kill_group(&self, ev: &Event) -> (Outcome, Option<String>) {
        let result = (|| {
            self.safety
                .check_process(ev.pid)
                .map_err(|r| r.to_string())?;
            // The group of the process the event is about, checked against pid reuse first.
            same_process(ev)?;
            // SAFETY: getpgid takes a plain pid.
            let pgid = unsafe { libc::getpgid(ev.pid as libc::pid_t) };
            if pgid <= 0 {
                return Err(format!(
                    "pid {} is gone: {}",
                    ev.pid,
                    std::io::Error::last_os_error()
                ));
            }
            self.safety
                .check_group(pgid as u32)
                .map_err(|r| r.to_string())?;
            // SAFETY: kill with a negative pid signals the group; plain integers.
            if unsafe { libc::kill(-pgid, libc::SIGKILL) } != 0 {
                return Err(format!(
                    "kill process group {pgid}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(format!("process group {pgid} killed after the event"))
        })();
        match result {
            Ok(detail) => (Outcome::After, Some(detail)),
            Err(e) => (Outcome::Failed, Some(e)),
        }
    }

    fn kill_container(&self, d: &Detection, ctx: &dyn EnforceContext) -> (Outcome, Option<String>) {
        let result = (|| {
            let cgroup = d
                .event
                .cgroup
                .as_deref()
                .ok_or("the process's cgroup is unknown")?;
            self.safety
                .check_cgroup(cgroup, ctx.rule_names_cgroups(&d.rule_id))
                .map_err(|r| r.to_string())?;
            let file = self
                .cgroup2
                .join(cgroup.trim_start_matches('/'))
                .join("cgroup.kill");
            std::fs::write(&file, "1").map_err(|e| {
                format!(
                    "writing {}: {e} (cgroup.kill needs Linux 5.14 or later)",
                    file.display()
                )
            })?;
            Ok::<_, String>(format!(
                "every process of cgroup {cgroup} killed (cgroup.kill)"
            ))
        })();
        match result {
            Ok(detail) => (Outcome::After, Some(detail)),
            Err(e) => (Outcome::Failed, Some(e)),
        }
    }

    fn quarantine(&self, d: &Detection, ctx: &dyn EnforceContext) -> (Outcome, Option<String>) {
        let ev = &d.event;
        let Some(cgroup) = ev.cgroup.as_deref() else {
            return (
                Outcome::Failed,
                Some("the process's cgroup is unknown".into()),
            );
        };
        if let Err(r) = self
            .safety
            .check_cgroup(cgroup, ctx.rule_names_cgroups(&d.rule_id))
        {
            return (Outcome::Failed, Some(r.to_string()));
        }
        let recent = ctx.recent_events(ev.cgroup_id);
        let mode = d.quarantine_mode.unwrap_or(QuarantineMode::Freeze);
        let result = crate::lock(&self.book).quarantine(
            &self.cgroup2,
            cgroup,
            ev.cgroup_id,
            &d.rule_id,
            ctx.rule_slot(&d.rule_id),
            mode,
            ctx.network(),
            &recent,
        );
        match result {
            Ok(q) => (
                Outcome::After,
                Some(format!(
                    "cgroup {cgroup} quarantined: {}",
                    q.steps.join("; ")
                )),
            ),
            Err(e) => (Outcome::Failed, Some(e)),
        }
    }
}

fn outcome(result: Result<(), String>, done: &str) -> (Outcome, Option<String>) {
    match result {
        Ok(()) => (Outcome::After, Some(done.to_string())),
        Err(e) => (Outcome::Failed, Some(e)),
    }
}

/// Is `ev.pid` still the process of the event (not a newer one that reused the pid)?
fn same_process(ev: &Event) -> Result<(), String> {
    let started_after = procfs::start_boot_ns(ev.pid).is_some_and(|start| start > ev.ts_boot_ns);
    if started_after {
        return Err(format!(
            "pid {} was reused by a newer process; not killed",
            ev.pid
        ));
    }
    Ok(())
}

/// SIGKILL the event's process, through a pidfd so a recycled pid is never hit: the pidfd
/// pins one process, and a process that started after the event cannot be the one we mean.
fn kill(ev: &Event) -> Result<(), String> {
    let pid = ev.pid;
    if pid <= 1 || pid == std::process::id() {
        return Err(format!("refusing to kill pid {pid}"));
    }
    // SAFETY: plain syscalls with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(format!(
            "pid {pid} is gone: {}",
            std::io::Error::last_os_error()
        ));
    }
    let fd = fd as libc::c_int;
    let result = same_process(ev).and_then(|()| {
        // SAFETY: fd is our pidfd; null siginfo is allowed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<u8>(),
                0,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(format!(
                "kill pid {pid}: {}",
                std::io::Error::last_os_error()
            ))
        }
    });
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Outcome;

    struct NoContext;

    impl NetworkCut for NoContext {
        fn cut(&self, _: u64, _: u32) -> Result<(), String> {
            Err("no network in this test".into())
        }
        fn restore(&self, _: u64) -> Result<(), String> {
            Err("no network in this test".into())
        }
    }

    impl EnforceContext for NoContext {
        fn network(&self) -> &dyn NetworkCut {
            self
        }
        fn recent_events(&self, _: u64) -> Vec<Arc<Event>> {
            Vec::new()
        }
        fn rule_names_cgroups(&self, _: &str) -> bool {
            false
        }
        fn rule_slot(&self, _: &str) -> u32 {
            0
        }
    }

    /// A dry run decides (the rate limit too) and acts on nothing: a kill of this very
    /// test process in enforce mode leaves it running, reported as what it would have done.
    #[test]
    fn a_dry_run_decides_without_acting() {
        let state = tempfile::tempdir().expect("tempdir");
        let enforcer = Enforcer::dry_run(state.path(), &[], 1).expect("enforcer");
        let mut d = crate::store::tests::sample(1, "r", "/bin/sh");
        Arc::make_mut(&mut d.event).pid = std::process::id();
        d.action = Action::Kill;
        d.mode = Mode::Enforce;
        let (outcome, detail) = enforcer.act(&d, &NoContext);
        assert_eq!(outcome, Outcome::Audited);
        assert_eq!(detail.as_deref(), Some("dry run: would kill the process"));
        let (outcome, detail) = enforcer.act(&d, &NoContext);
        assert_eq!(outcome, Outcome::Failed, "{detail:?}");
    }

    /// The fold key checked before a detection exists carries these details; the detection
    /// carries the enforcer's. Unequal, storms would never fold early (only slower, not wrong).
    #[test]
    fn outcomes_without_acting_are_the_enforcers() {
        let state = tempfile::tempdir().expect("tempdir");
        let enforcer =
            Enforcer::new("/nonexistent-cgroup2".into(), state.path(), &[], 30).expect("enforcer");
        for action in [
            Action::Alert,
            Action::Block,
            Action::Kill,
            Action::Quarantine,
        ] {
            for mode in [Mode::Audit, Mode::Enforce] {
                let Some((outcome, detail)) = Outcome::without_acting(action, mode) else {
                    assert_eq!(mode, Mode::Enforce);
                    assert_ne!(action, Action::Alert);
                    continue;
                };
                // Audit and alert never look at the process; a pid no one has keeps it so.
                let mut d = crate::store::tests::sample(1, "r", "/bin/sh");
                Arc::make_mut(&mut d.event).pid = u32::MAX;
                d.action = action;
                d.mode = mode;
                let (o, detail_now) = enforcer.act(&d, &NoContext);
                assert_eq!(
                    (outcome, detail),
                    (o, detail_now.as_deref()),
                    "{action:?} {mode:?}"
                );
            }
        }
    }

    /// A rule over its rate limit records its matches without acting.
    #[test]
    fn the_rate_limit_bites_and_says_so() {
        let state = tempfile::tempdir().expect("tempdir");
        let enforcer =
            Enforcer::new("/nonexistent-cgroup2".into(), state.path(), &[], 1).expect("enforcer");
        let mut d = crate::store::tests::sample(1, "r", "/bin/sh");
        Arc::make_mut(&mut d.event).pid = u32::MAX; // gone: the first action fails, counted
        d.action = Action::Kill;
        d.mode = Mode::Enforce;
        let (first, _) = enforcer.act(&d, &NoContext);
        assert_eq!(first, Outcome::Failed);
        let (second, detail) = enforcer.act(&d, &NoContext);
        assert_eq!(second, Outcome::Failed);
        assert!(detail.is_some_and(|s| s.contains("limit of 1 actions a minute")));
        assert_eq!(enforcer.rate_limited(), 1);
    }
}
