//! What enforcement never touches, whatever a rule says: the agent itself and its
//! ancestors, PID 1, kernel threads, the cgroups the agent and its ancestors live in, login
//! session scopes (unless the rule names cgroups itself), and what the operator protected
//! (`--protect-cgroup`). A refusal is an outcome that says why, never a silent skip.

use std::path::Path;

use crate::policy::glob::{Glob, GlobMode};

/// Why an action was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused to act on {what}: {why}")]
pub struct Refusal {
    pub what: String,
    pub why: &'static str,
}

pub struct Safety {
    agent_pid: u32,
    /// The agent's ancestors' pids (its parent, supervisor, ... up to PID 1).
    ancestors: Vec<u32>,
    /// cgroup paths (in the cgroup2 hierarchy) of the agent and its ancestors.
    cgroups: Vec<String>,
    protected: Vec<Glob>,
}

impl Safety {
    /// The agent as it runs now; `protected` are cgroup path globs from the command line.
    pub fn current(protected: &[String]) -> Result<Safety, String> {
        let agent_pid = std::process::id();
        let mut ancestors = Vec::new();
        let mut cgroups = Vec::new();
        let mut pid = agent_pid;
        for _ in 0..64 {
            if let Some(cg) = crate::process::cgroup::proc_cgroup_path(Path::new("/proc"), pid) {
                if !cgroups.contains(&cg) {
                    cgroups.push(cg);
                }
            }
            let Some(ppid) = parent_of(pid) else { break };
            if ppid == 0 || ppid == pid {
                break;
            }
            ancestors.push(ppid);
            pid = ppid;
        }
        let protected = protected
            .iter()
            .map(|p| {
                Glob::new(p, GlobMode::Path).map_err(|e| format!("--protect-cgroup {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Safety {
            agent_pid,
            ancestors,
            cgroups,
            protected,
        })
    }

    /// May a process be signalled?
    pub fn check_process(&self, pid: u32) -> Result<(), Refusal> {
        let refuse = |why| {
            Err(Refusal {
                what: format!("pid {pid}"),
                why,
            })
        };
        if pid == self.agent_pid {
            return refuse("it is the agent itself");
        }
        if pid <= 1 {
            return refuse("PID 1 (init) and the idle task are never killed");
        }
        if self.ancestors.contains(&pid) {
            return refuse("it is one of the agent's ancestors (its supervisor)");
        }
        if is_kernel_thread(pid) {
            return refuse("it is a kernel thread");
        }
        Ok(())
    }

    /// May a whole process group be signalled?
    pub fn check_group(&self, pgid: u32) -> Result<(), Refusal> {
        let own = current_pgid();
        if pgid <= 1 || Some(pgid) == own {
            return Err(Refusal {
                what: format!("process group {pgid}"),
                why: "it is the agent's own group, or init's",
            });
        }
        if self.ancestors.contains(&pgid) {
            return Err(Refusal {
                what: format!("process group {pgid}"),
                why: "it is led by one of the agent's ancestors",
            });
        }
        Ok(())
    }

    /// May a cgroup be frozen, killed or cut off? `named_by_rule`: the rule chooses cgroups
    /// itself (`cgroup` in its selector or match), which is what allows session scopes.
    pub fn check_cgroup(&self, cgroup: &str, named_by_rule: bool) -> Result<(), Refusal> {
        let refuse = |why| {
            Err(Refusal {
                what: format!("cgroup {cgroup}"),
                why,
            })
        };
        let cg = cgroup.trim_end_matches('/');
        if cg.is_empty() || cg == "/" {
            return refuse("it is the root cgroup: every process on the node");
        }
        for own in &self.cgroups {
            let own = own.trim_end_matches('/');
            // The agent's cgroup, or one above it (acting on it reaches the agent too).
            if own == cg || own.starts_with(&format!("{cg}/")) {
                return refuse("the agent (or its supervisor) runs in it or below it");
            }
        }
        if self.protected.iter().any(|g| g.is_match(cg)) {
            return refuse("it is protected (--protect-cgroup)");
        }
        if !named_by_rule && is_login_session(cg) {
            return refuse(
                "it is a login session scope; a rule must name it (`cgroup` condition) to act on one",
            );
        }
        if cg == "/init.scope" || cg.ends_with("/init.scope") {
            return refuse("it holds PID 1");
        }
        Ok(())
    }
}

/// systemd's login sessions: `/user.slice/user-1000.slice/session-3.scope`.
fn is_login_session(cgroup: &str) -> bool {
    cgroup
        .rsplit('/')
        .next()
        .is_some_and(|leaf| leaf.starts_with("session-") && leaf.ends_with(".scope"))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    crate::process::procfs::parse_stat(&stat).map(|s| s.ppid)
}

/// Kernel threads have no memory map: their `/proc/<pid>/exe` does not resolve and their
/// parent is kthreadd (2), or they are kthreadd itself.
fn is_kernel_thread(pid: u32) -> bool {
    if pid == 2 {
        return true;
    }
    parent_of(pid) == Some(2) && std::fs::read_link(format!("/proc/{pid}/exe")).is_err()
}

fn current_pgid() -> Option<u32> {
    // SAFETY: getpgrp has no preconditions and cannot fail.
    let g = unsafe { libc::getpgrp() };
    u32::try_from(g).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safety() -> Safety {
        Safety {
            agent_pid: 4242,
            ancestors: vec![4000, 1],
            cgroups: vec!["/system.slice/rasp.service".into()],
            protected: vec![Glob::new("/system.slice/sshd.service", GlobMode::Path).unwrap()],
        }
    }

    #[test]
    fn the_agent_its_ancestors_and_init_are_never_killed() {
        let s = safety();
        assert!(s.check_process(4242).is_err());
        assert!(s.check_process(4000).is_err());
        assert!(s.check_process(1).is_err());
        assert!(s.check_process(0).is_err());
        assert!(s.check_group(1).is_err());
        assert!(s.check_group(4000).is_err());
    }

    #[test]
    fn cgroups_that_hold_the_agent_or_sessions_are_refused() {
        let s = safety();
        let refused = |cg: &str, named| s.check_cgroup(cg, named).is_err();
        assert!(refused("/", false));
        assert!(refused("/system.slice/rasp.service", true));
        assert!(refused("/system.slice", true), "above the agent");
        assert!(refused("/system.slice/sshd.service", true), "protected");
        assert!(refused("/init.scope", true));
        assert!(refused(
            "/user.slice/user-1000.slice/session-3.scope",
            false
        ));
        assert!(!refused(
            "/user.slice/user-1000.slice/session-3.scope",
            true
        ));
        assert!(!refused("/docker/4f1c", false));
        assert!(!refused("/system.slice/nginx.service", false));
    }
}
