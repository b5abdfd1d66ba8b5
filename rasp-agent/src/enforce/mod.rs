//! Actions. Each returns an honest outcome: what was done and when relative to the event.
//! Until the kernel-side deny paths land (BPF-LSM, syscall-entry signals, cgroup connect),
//! `block` on an event that already happened falls back to killing the process afterwards,
//! and says so.

pub mod hold;

use std::{fs, path::PathBuf};

use crate::{
    detect::Outcome,
    events::Event,
    policy::vocab::{Action, Mode},
    process::procfs,
};

pub struct Enforcer {
    cgroup2: PathBuf,
}

impl Enforcer {
    pub fn new(cgroup2: PathBuf) -> Self {
        Enforcer { cgroup2 }
    }

    pub fn act(&self, action: Action, mode: Mode, ev: &Event) -> (Outcome, Option<String>) {
        match (action, mode) {
            (Action::Alert, _) => (Outcome::Alerted, None),
            (a, Mode::Audit) => (
                Outcome::Audited,
                Some(format!("audit mode: would {}", a.effect())),
            ),
            (Action::Kill, Mode::Enforce) => outcome(kill(ev), "killed after the event"),
            (Action::Block, Mode::Enforce) => outcome(
                kill(ev),
                "no kernel deny path for this event yet: killed after the event",
            ),
            (Action::Quarantine, Mode::Enforce) => match self.freeze(ev) {
                Ok(cgroup) => (Outcome::After, Some(format!("cgroup {cgroup} frozen"))),
                Err(e) => (Outcome::Failed, Some(e)),
            },
        }
    }

    /// Freeze the event's cgroup (cgroup v2 `cgroup.freeze`): the workload stops, its
    /// processes and memory stay for forensics.
    fn freeze(&self, ev: &Event) -> Result<String, String> {
        let cgroup = ev
            .cgroup
            .as_deref()
            .ok_or("the process's cgroup is unknown")?;
        if cgroup == "/" {
            return Err("the process is in the root cgroup, which cannot be frozen".into());
        }
        let file = self
            .cgroup2
            .join(cgroup.trim_start_matches('/'))
            .join("cgroup.freeze");
        fs::write(&file, "1").map_err(|e| format!("writing {}: {e}", file.display()))?;
        Ok(cgroup.to_string())
    }
}

fn outcome(result: Result<(), String>, done: &str) -> (Outcome, Option<String>) {
    match result {
        Ok(()) => (Outcome::After, Some(done.to_string())),
        Err(e) => (Outcome::Failed, Some(e)),
    }
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
    let started_after = procfs::start_boot_ns(pid).is_some_and(|start| start > ev.ts_boot_ns);
    let result = if started_after {
        Err(format!(
            "pid {pid} was reused by a newer process; not killed"
        ))
    } else {
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
    };
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    result
}
