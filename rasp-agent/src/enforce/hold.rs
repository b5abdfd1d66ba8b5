//! Hold and decide on libpq (`rasp_common::hold` has the kernel's half). The kernel stops a
//! thread whose query the pre-check flagged, in a process listed in `HOLD_TGIDS`; here the
//! agent decides within a millisecond what happens to it:
//!
//! - continue: `SIGCONT`, the query goes out;
//! - refuse: `PTRACE_SEIZE` + `PTRACE_INTERRUPT` the held thread, clear the register that
//!   holds the query (rsi, rdx for `PQsendPrepare`), detach, `SIGCONT`: libpq fails the
//!   call itself ("command string is a null pointer") and the connection stays usable;
//!   if the thread cannot be traced (another tracer, gdb/strace), kill instead;
//! - kill: `SIGKILL`, nothing reaches the server.
//!
//! The hold's bound survives the agent: `rasp-agent hold-watchdog`, a separate process
//! started with the `HELD` map's descriptor, continues every thread held longer than the
//! bound and, once the agent is gone, every held thread (fail-open), then exits. Whoever
//! deletes a thread's `HELD` entry decides it, so the agent and the watchdog never both act.
//! Chosen over seizing every eligible process in advance (one tracer per process: gdb and
//! strace would stop working, and every signal the application receives would stop it
//! until the agent answered) and over a pinned map (it outlives the agent, but nothing
//! would read it).

use std::{
    collections::HashSet,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    time::Duration,
};

use aya::{
    maps::{HashMap as KernelHashMap, Map, MapData, RingBuf},
    Ebpf,
};
use rasp_common::hold::HeldQuery;

use crate::{
    detect::Outcome,
    events::{BootClock, Event, EventDetail},
    policy::{
        active::PolicySet,
        vocab::{Action, EventType, Mode},
        Subject,
    },
    process::{container::Containers, ProcessTable},
};

/// Default bound on a hold: past it the watchdog continues the thread (fail-open). Far
/// above a decision's cost (~0.1-1 ms here), short enough that a stuck agent is a hiccup.
pub const DEFAULT_BOUND: Duration = Duration::from_millis(2000);

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("map {0} missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("duplicating the HELD map's descriptor for the watchdog: {0}")]
    Dup(std::io::Error),
    #[error("starting the hold watchdog {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
}

/// What the decision comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Refuse,
    Kill,
}

/// The verdict of the rules that matched a held query: the strongest enforcing action.
/// `block` refuses the call, `kill` (and `quarantine`, which has no query-level form)
/// kills; audit-mode and alert-only matches continue it.
pub fn verdict_of(matches: impl IntoIterator<Item = (Action, Mode)>) -> Verdict {
    let mut verdict = Verdict::Continue;
    for (action, mode) in matches {
        if mode != Mode::Enforce {
            continue;
        }
        match action {
            Action::Alert => {}
            Action::Block => {
                if verdict == Verdict::Continue {
                    verdict = Verdict::Refuse;
                }
            }
            Action::Kill | Action::Quarantine => verdict = Verdict::Kill,
        }
    }
    verdict
}

/// The kernel maps of holding: which processes may be held, the held threads, and the
/// decision ring.
pub struct HoldMaps {
    pub tgids: KernelHashMap<MapData, u32, u32>,
    pub held: KernelHashMap<MapData, u32, HeldQuery>,
    pub decisions: RingBuf<MapData>,
    /// A descriptor of `HELD` without close-on-exec, for the watchdog.
    pub held_fd_for_watchdog: OwnedFd,
}

impl HoldMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<HoldMaps, HoldError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(HoldError::MissingMap(name));
        let tgids = take("HOLD_TGIDS")?;
        let held = take("HELD")?;
        let decisions = take("DECISIONS")?;
        let raw = match &held {
            Map::HashMap(data) => data.fd().as_fd().as_raw_fd(),
            _ => return Err(HoldError::MissingMap("HELD (a hash map)")),
        };
        // SAFETY: dup of a descriptor we own; the copy is owned by the OwnedFd below.
        let copy = unsafe { libc::dup(raw) };
        if copy < 0 {
            return Err(HoldError::Dup(std::io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let held_fd_for_watchdog = unsafe { OwnedFd::from_raw_fd(copy) };
        let map_err = |name| move |source| HoldError::Map { name, source };
        Ok(HoldMaps {
            tgids: KernelHashMap::try_from(tgids).map_err(map_err("HOLD_TGIDS"))?,
            held: KernelHashMap::try_from(held).map_err(map_err("HELD"))?,
            decisions: RingBuf::try_from(decisions).map_err(map_err("DECISIONS"))?,
            held_fd_for_watchdog,
        })
    }
}

/// Start `rasp-agent hold-watchdog` with the `HELD` map's descriptor: it outlives the agent.
pub fn spawn_watchdog(held_fd: OwnedFd, bound: Duration) -> Result<u32, HoldError> {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let child = std::process::Command::new(&exe)
        .arg("hold-watchdog")
        .arg("--agent-pid")
        .arg(std::process::id().to_string())
        .arg("--held-fd")
        .arg(held_fd.as_raw_fd().to_string())
        .arg("--bound-ms")
        .arg(bound.as_millis().to_string())
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|source| HoldError::Spawn { exe, source })?;
    // The child has its copy (inherited: no close-on-exec); ours closes here.
    drop(held_fd);
    Ok(child.id())
}

/// Which processes are held: those mapping libpq (the uprobe task's tracked processes)
/// that some policy in enforce mode with a blocking or killing `sql_query` rule selects.
pub struct HoldScope {
    tgids: KernelHashMap<MapData, u32, u32>,
    installed: HashSet<u32>,
}

impl HoldScope {
    pub fn new(tgids: KernelHashMap<MapData, u32, u32>) -> HoldScope {
        HoldScope {
            tgids,
            installed: HashSet::new(),
        }
    }

    /// Make `HOLD_TGIDS` the processes of `candidates` that `set` would hold.
    pub fn sync(
        &mut self,
        set: &PolicySet,
        table: &ProcessTable,
        containers: &Containers,
        candidates: &HashSet<u32>,
    ) {
        let wanted: HashSet<u32> = candidates
            .iter()
            .copied()
            .filter(|pid| held_by(set, table, containers, *pid))
            .collect();
        for pid in wanted.difference(&self.installed) {
            if let Err(e) = self.tgids.insert(pid, 1, 0) {
                tracing::warn!(pid, error = %e, "could not put a process under hold");
            }
        }
        for pid in self.installed.difference(&wanted) {
            let _ = self.tgids.remove(pid);
        }
        if wanted != self.installed {
            tracing::info!(held = wanted.len(), "processes under SQL hold");
        }
        self.installed = wanted;
    }

    /// The processes under hold, sorted.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.installed.iter().copied().collect();
        pids.sort_unstable();
        pids
    }
}

/// Does `set` hold `pid`'s flagged queries? By the policies' selectors (the rules' own
/// conditions are judged when a query is held).
fn held_by(set: &PolicySet, table: &ProcessTable, containers: &Containers, pid: u32) -> bool {
    let enforcing = |p: &crate::policy::Policy| {
        p.rules.iter().any(|r| {
            r.event == EventType::SqlQuery
                && r.effective_mode(p) == Mode::Enforce
                && matches!(r.action, Action::Block | Action::Kill | Action::Quarantine)
        })
    };
    if !set.policies.iter().any(enforcing) {
        return false;
    }
    let Some(process) = table.get(pid) else {
        return false;
    };
    let identity = containers.of(process.cgroup_id, process.cgroup.as_deref());
    let identity = identity.as_deref();
    let subject = Subject {
        exe: process.exe.as_deref(),
        comm: &process.comm,
        uid: process.uid,
        cgroup: process.cgroup.as_deref(),
        container_id: identity.map(|c| &*c.id),
        pod_uid: identity.and_then(|c| c.pod_uid.as_deref()),
        container_name: identity.and_then(|c| c.name.as_deref()),
        image: identity.and_then(|c| c.image.as_deref()),
        pod_name: identity.and_then(|c| c.pod_name.as_deref()),
        namespace: identity.and_then(|c| c.namespace.as_deref()),
        in_container: identity.is_some(),
        argv_truncated: process.argv_truncated,
        ..Subject::of(EventType::SqlQuery, &process.argv)
    };
    set.policies
        .iter()
        .any(|p| enforcing(p) && p.applies_to(&subject))
}

/// Carries out decisions on held threads.
pub struct Holds {
    held: KernelHashMap<MapData, u32, HeldQuery>,
}

impl Holds {
    pub fn new(held: KernelHashMap<MapData, u32, HeldQuery>) -> Holds {
        Holds { held }
    }

    /// Act on the held query `ev` (its record came through the decision ring). Returns the
    /// outcome and what happened, for every detection of this event.
    pub fn decide(&mut self, ev: &Event, verdict: Verdict) -> (Outcome, String) {
        let tid = ev.tid;
        // Ours to decide only if the watchdog has not released it (bound passed).
        let entry = match self.held.get(&tid, 0) {
            Ok(entry) if entry.pid == ev.pid && entry.start_ns == ev.start_ns => entry,
            _ => {
                return (
                    Outcome::Failed,
                    "released by the hold bound before the decision (fail-open): the query ran"
                        .into(),
                )
            }
        };
        if self.held.remove(&tid).is_err() {
            return (
                Outcome::Failed,
                "released by the hold bound before the decision (fail-open): the query ran".into(),
            );
        }
        let held_us = BootClock::boot_now_ns().saturating_sub(entry.held_at_ns) / 1000;
        let pid = ev.pid;
        match verdict {
            Verdict::Continue => match signal(pid, ev.start_ns, libc::SIGCONT) {
                Ok(()) => (Outcome::Held, format!("held {held_us} us, then allowed")),
                Err(e) => (
                    Outcome::Failed,
                    format!("could not continue pid {pid}: {e}"),
                ),
            },
            Verdict::Kill => match signal(pid, ev.start_ns, libc::SIGKILL) {
                Ok(()) => (
                    Outcome::Held,
                    format!("held {held_us} us, then killed: the query never left"),
                ),
                Err(e) => (Outcome::Failed, format!("kill pid {pid}: {e}")),
            },
            Verdict::Refuse => {
                let register = if query_in_rdx(ev) { "rdx" } else { "rsi" };
                match refuse(pid, tid, register == "rdx") {
                    Ok(()) => {
                        let continued = signal(pid, ev.start_ns, libc::SIGCONT);
                        let note = match continued {
                            Ok(()) => String::new(),
                            Err(e) => format!(" (SIGCONT failed: {e})"),
                        };
                        (
                            Outcome::Held,
                            format!(
                                "held {held_us} us, then refused: {register} cleared, libpq failed the call itself and the connection stays usable{note}"
                            ),
                        )
                    }
                    Err(why) => {
                        // Cannot refuse (typically another tracer): stop the query anyway.
                        match signal(pid, ev.start_ns, libc::SIGKILL) {
                            Ok(()) => (
                                Outcome::Held,
                                format!("held {held_us} us; refusing failed ({why}), so killed: the query never left"),
                            ),
                            Err(e) => (
                                Outcome::Failed,
                                format!("refusing failed ({why}) and kill failed ({e})"),
                            ),
                        }
                    }
                }
            }
        }
    }
}

/// `PQsendPrepare(conn, name, query, ...)` has the query in rdx; the others in rsi.
fn query_in_rdx(ev: &Event) -> bool {
    matches!(&ev.detail, EventDetail::SqlQuery(d) if d.function == crate::events::SqlFunction::SendPrepare)
}

/// Signal `pid` through a pidfd, unless the pid now names a process started after
/// `start_ns` (a recycled pid is never signalled).
fn signal(pid: u32, start_ns: u64, sig: libc::c_int) -> Result<(), String> {
    // SAFETY: plain syscalls with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(format!(
            "pid {pid} is gone: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    if start_ns != 0 {
        if let Some(start) = crate::process::procfs::start_boot_ns(pid) {
            // /proc's start time has tick resolution; the kernel's is in ns.
            if start > start_ns + 20_000_000 {
                return Err(format!("pid {pid} was reused by a newer process"));
            }
        }
    }
    // SAFETY: our pidfd; a null siginfo is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<u8>(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// Clear the query argument of the stopped thread `tid` (KERNEL.md, "Hold and decide"):
/// seize, interrupt, wait for the stop, zero rsi (or rdx), detach. The thread is left in
/// its group stop; the caller continues it.
fn refuse(pid: u32, tid: u32, rdx: bool) -> Result<(), String> {
    let tid = tid as libc::pid_t;
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: ptrace requests on a thread id with null or stack-owned data.
    unsafe {
        if libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) != 0 {
            return Err(os("PTRACE_SEIZE"));
        }
        let result = (|| {
            if libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) != 0 {
                return Err(os("PTRACE_INTERRUPT"));
            }
            let mut status = 0;
            if libc::waitpid(tid, &mut status, libc::__WALL) != tid {
                return Err(os("waitpid"));
            }
            let mut regs: libc::user_regs_struct = std::mem::zeroed();
            if libc::ptrace(libc::PTRACE_GETREGS, tid, 0, &mut regs as *mut _) != 0 {
                return Err(os("PTRACE_GETREGS"));
            }
            if rdx {
                regs.rdx = 0;
            } else {
                regs.rsi = 0;
            }
            if libc::ptrace(libc::PTRACE_SETREGS, tid, 0, &regs as *const _) != 0 {
                return Err(os("PTRACE_SETREGS"));
            }
            Ok(())
        })();
        if libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0) != 0 && result.is_ok() {
            return Err(os("PTRACE_DETACH"));
        }
        tracing::debug!(pid, tid, rdx, ok = result.is_ok(), "held thread refused");
        result
    }
}

/// `rasp-agent hold-watchdog`: the hold's bound, in a process of its own.
#[derive(clap::Args, Debug)]
pub struct WatchdogArgs {
    /// The agent: once it is gone, every held thread is continued and the watchdog exits.
    #[arg(long)]
    pub agent_pid: u32,
    /// An inherited descriptor of the kernel's `HELD` map.
    #[arg(long)]
    pub held_fd: i32,
    /// Continue a thread held longer than this (milliseconds).
    #[arg(long, default_value_t = DEFAULT_BOUND.as_millis() as u64)]
    pub bound_ms: u64,
}

/// How often the watchdog looks (a hold outlives its bound by at most this).
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// The watchdog's loop: release holds past the bound; when the agent is gone, release them
/// all (a few more passes, for probes that fired as the agent died), then exit.
pub fn run_watchdog(args: &WatchdogArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    // Not in the agent's session: a terminal's signals for the agent leave it running.
    // SAFETY: setsid has no memory-safety preconditions.
    unsafe { libc::setsid() };
    // SAFETY: the descriptor was handed to us by the agent, open across exec.
    let fd = unsafe { OwnedFd::from_raw_fd(args.held_fd) };
    let data = MapData::from_fd(fd).context("the HELD map descriptor")?;
    let mut held: KernelHashMap<MapData, u32, HeldQuery> =
        KernelHashMap::try_from(Map::HashMap(data)).context("the HELD map")?;
    // SAFETY: plain syscall.
    let agent = unsafe { libc::syscall(libc::SYS_pidfd_open, args.agent_pid as libc::c_int, 0) };
    anyhow::ensure!(
        agent >= 0,
        "agent pid {} is not running: {}",
        args.agent_pid,
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor we own.
    let agent = unsafe { OwnedFd::from_raw_fd(agent as libc::c_int) };
    let bound_ns = args.bound_ms.saturating_mul(1_000_000);
    let mut passes_after_agent = None;
    loop {
        let mut poll = libc::pollfd {
            fd: agent.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut poll, 1, WATCH_EVERY.as_millis() as libc::c_int) };
        let agent_gone = n > 0 && poll.revents != 0;
        if agent_gone && passes_after_agent.is_none() {
            passes_after_agent = Some(20u32);
        }
        let now = BootClock::boot_now_ns();
        let due: Vec<(u32, HeldQuery)> = held
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, h)| agent_gone || now.saturating_sub(h.held_at_ns) >= bound_ns)
            .collect();
        for (tid, h) in due {
            // Whoever deletes the entry decides: the agent may have just taken it.
            if held.remove(&tid).is_err() {
                continue;
            }
            let result = signal(h.pid, h.start_ns, libc::SIGCONT);
            eprintln!(
                "rasp-agent hold-watchdog: pid {} tid {tid} held {} ms, continued{} ({})",
                h.pid,
                now.saturating_sub(h.held_at_ns) / 1_000_000,
                if agent_gone {
                    ", the agent is gone"
                } else {
                    ""
                },
                match result {
                    Ok(()) => "fail-open".to_string(),
                    Err(e) => e,
                }
            );
        }
        if let Some(left) = passes_after_agent.as_mut() {
            if *left == 0 {
                return Ok(());
            }
            *left -= 1;
            std::thread::sleep(WATCH_EVERY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strongest_enforcing_action_wins() {
        use Action::*;
        use Mode::*;
        assert_eq!(verdict_of([]), Verdict::Continue);
        assert_eq!(
            verdict_of([(Alert, Enforce), (Block, Audit)]),
            Verdict::Continue
        );
        assert_eq!(verdict_of([(Block, Enforce)]), Verdict::Refuse);
        assert_eq!(
            verdict_of([(Block, Enforce), (Kill, Enforce), (Block, Enforce)]),
            Verdict::Kill
        );
        assert_eq!(
            verdict_of([(Kill, Audit), (Block, Enforce)]),
            Verdict::Refuse
        );
    }
}
