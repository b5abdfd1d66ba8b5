//! The process table: every process on the node with its image, arguments, identity and
//! cgroup, seeded from /proc at start and kept current by exec/fork/exit events. Bounded:
//! exited processes stay for a grace period (so late questions about them still answer),
//! then are reaped; past `max` entries the oldest exited, then oldest seen, go first.
//! Beside it: cgroup ids resolved to paths (`cgroup`), and the container and pod each cgroup
//! belongs to (`container`, named through the runtimes' sockets, `runtime`).

pub mod cgroup;
pub mod container;
pub mod namespaces;
pub mod pipes;
pub mod procfs;
pub mod provenance;
pub mod runtime;
pub mod script;
pub mod sockets;

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    path::Path,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::events::{Argv, Comm, Event, EventDetail, Text};
use cgroup::CgroupResolver;

/// Ancestry walks stop here even if the table had a cycle (pid reuse can make one).
const MAX_ANCESTRY: usize = 128;
/// A full table frees this fraction of its bound at once (see `evict_batch`).
const EVICT_FRACTION: usize = 32;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub comm: Comm,
    pub exe: Option<Text>,
    pub argv: Argv,
    /// argv was longer than the capture bound: `argv` is its start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub argv_truncated: bool,
    pub cwd: Option<Text>,
    pub uid: u32,
    pub gid: u32,
    /// The PID and mount namespaces (inode numbers), from the exec record or /proc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mnt_ns: Option<u32>,
    /// Effective ids from the kernel's last record of this process (`None` if unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub euid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egid: Option<u32>,
    /// The process's start (CLOCK_BOOTTIME ns; 0 when unknown): with `pid`, its exec id.
    /// An exit whose start differs belongs to another process that had the same pid.
    #[serde(default)]
    pub start_ns: u64,
    pub cgroup_id: u64,
    pub cgroup: Option<Text>,
    /// When the process (or its current image) appeared, CLOCK_BOOTTIME ns.
    pub start_boot_ns: Option<u64>,
    pub exited: Option<Exited>,
    /// Known from the /proc seed only (no event seen yet).
    pub from_proc: bool,
    #[serde(skip)]
    pub exited_at: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exited {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub ts_boot_ns: u64,
}

/// Parents of `pid`, nearest first, as far as `lookup` knows them. Bounded and cycle-safe:
/// pid reuse can make the parent links loop.
pub fn ancestry<'a>(pid: u32, lookup: impl Fn(u32) -> Option<&'a Process>) -> Vec<&'a Process> {
    let mut out = Vec::new();
    for_each_ancestor(pid, lookup, |p| out.push(p));
    out
}

/// `ancestry` without collecting: `visit` gets each parent, nearest first. Allocates nothing
/// for chains up to `INLINE` deep (the event path walks one per event).
pub fn for_each_ancestor<'a>(
    pid: u32,
    lookup: impl Fn(u32) -> Option<&'a Process>,
    mut visit: impl FnMut(&'a Process),
) {
    let mut seen = InlineVec::new(0u32);
    let mut cur = lookup(pid);
    while let Some(p) = cur {
        if seen.as_slice().len() >= MAX_ANCESTRY || p.ppid == 0 || p.ppid == p.pid {
            break;
        }
        cur = lookup(p.ppid).filter(|q| q.pid != pid && !seen.as_slice().contains(&q.pid));
        if let Some(q) = cur {
            seen.push(q.pid);
            visit(q);
        }
    }
}

/// Items kept inline up to this many, on the heap beyond.
pub const INLINE: usize = 16;

/// A vector that keeps its first `INLINE` items on the stack (slots start out as copies of
/// `filler`) and spills to the heap only beyond that: for per-event scratch lists.
pub struct InlineVec<T: Copy> {
    inline: [T; INLINE],
    len: usize,
    spill: Vec<T>,
}

impl<T: Copy> InlineVec<T> {
    pub fn new(filler: T) -> Self {
        InlineVec {
            inline: [filler; INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    pub fn push(&mut self, v: T) {
        if !self.spill.is_empty() {
            self.spill.push(v);
        } else if self.len < INLINE {
            self.inline[self.len] = v;
            self.len += 1;
        } else {
            self.spill.extend_from_slice(&self.inline);
            self.spill.push(v);
        }
    }

    pub fn as_slice(&self) -> &[T] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }
}

impl Process {
    /// Is a record with process start `start_ns` about this process, not an earlier or later
    /// one with the same pid? Unknown starts (0) cannot tell and say yes.
    pub fn same_incarnation(&self, start_ns: u64) -> bool {
        self.start_ns == 0 || start_ns == 0 || self.start_ns == start_ns
    }

    /// A process (or a new image of one) that `ev` just started, running `exe`.
    fn started(ev: &Event, exe: Option<Text>, argv: Argv, cwd: Option<Text>) -> Self {
        Process {
            pid: ev.pid,
            ppid: ev.ppid,
            comm: ev.comm,
            exe,
            argv,
            argv_truncated: false,
            cwd,
            uid: ev.uid,
            gid: ev.gid,
            pid_ns: None,
            mnt_ns: None,
            euid: ev.euid,
            egid: ev.egid,
            start_ns: ev.start_ns,
            cgroup_id: ev.cgroup_id,
            cgroup: ev.cgroup.clone(),
            start_boot_ns: Some(ev.ts_boot_ns),
            exited: None,
            from_proc: false,
            exited_at: None,
        }
    }
}

/// Hash for pid keys: one multiply instead of SipHash. Every event looks up its process and
/// its ancestors, so SipHash showed in profiles; pids are small kernel-assigned integers, not
/// chosen by a remote party, so flooding one bucket would take owning the pid allocator.
#[derive(Default)]
pub struct PidHasher(u64);

impl Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b) | self.0 << 8);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing; fold the high half down so both ends of the hash vary.
        let h = (n ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

pub type PidMap<V> = HashMap<u32, V, BuildHasherDefault<PidHasher>>;

pub struct ProcessTable {
    procs: PidMap<Process>,
    max: usize,
    grace: Duration,
    evicted: u64,
}

impl ProcessTable {
    pub fn new(max: usize, grace: Duration) -> Self {
        ProcessTable {
            procs: PidMap::default(),
            max: max.max(1),
            grace,
            evicted: 0,
        }
    }

    /// Fill the table from `<proc>`, resolving cgroup ids through `cgroups`.
    pub fn seed_from_proc(&mut self, proc: &Path, cgroups: &CgroupResolver) -> usize {
        let mut n = 0;
        for pid in procfs::list_pids(proc) {
            let Some(mut p) = procfs::read_process(proc, pid) else {
                continue;
            };
            if let Some(path) = &p.cgroup {
                if let Some(id) = cgroups.inode_of(path) {
                    p.cgroup_id = id;
                    cgroups.learn(id, path);
                }
            }
            self.insert(p);
            n += 1;
        }
        n
    }

    fn insert(&mut self, p: Process) {
        if self.procs.len() >= self.max && !self.procs.contains_key(&p.pid) {
            self.evict_batch();
        }
        self.procs.insert(p.pid, p);
    }

    /// Bring the table up to date with one event.
    pub fn apply(&mut self, ev: &Event) {
        match &ev.detail {
            // A refused exec changed nothing: the process runs its old image.
            EventDetail::Exec(d) if d.refused => {}
            EventDetail::Exec(d) => {
                let mut p = Process::started(ev, d.exe.clone(), d.argv.clone(), d.cwd.clone());
                p.argv_truncated = d.argv_truncated;
                p.pid_ns = d.pid_ns;
                p.mnt_ns = d.mnt_ns;
                self.insert(p);
            }
            EventDetail::Fork(_) => {
                // The child runs its parent's image, in its namespaces, until it execs.
                let parent = self.procs.get(&ev.ppid);
                let mut child = Process::started(
                    ev,
                    parent.and_then(|p| p.exe.clone()),
                    parent.map(|p| p.argv.clone()).unwrap_or_default(),
                    parent.and_then(|p| p.cwd.clone()),
                );
                if let Some(parent) = parent {
                    child.argv_truncated = parent.argv_truncated;
                    child.pid_ns = parent.pid_ns;
                    child.mnt_ns = parent.mnt_ns;
                }
                self.insert(child);
            }
            EventDetail::Exit(d) => {
                if let Some(p) = self
                    .procs
                    .get_mut(&ev.pid)
                    .filter(|p| p.same_incarnation(ev.start_ns))
                {
                    p.exited = Some(Exited {
                        exit_code: d.exit_code,
                        signal: d.signal,
                        ts_boot_ns: ev.ts_boot_ns,
                    });
                    p.exited_at = Some(Instant::now());
                }
            }
            // What a process touches does not change what it is.
            _ => {}
        }
    }

    /// Drop exited processes older than the grace period; returns how many went.
    pub fn reap(&mut self, now: Instant) -> usize {
        let before = self.procs.len();
        let grace = self.grace;
        self.procs
            .retain(|_, p| p.exited_at.is_none_or(|t| now.duration_since(t) < grace));
        before - self.procs.len()
    }

    /// Make room: the oldest exited processes go first, then the oldest by start time. One
    /// pass over the table frees a batch (1/32 of the bound), so a table held at its bound by
    /// a fork storm costs a constant amount per insert, not a scan each.
    fn evict_batch(&mut self) {
        let want = (self.max / EVICT_FRACTION).max(1);
        let mut exited: Vec<(Instant, u32)> = self
            .procs
            .values()
            .filter_map(|p| Some((p.exited_at?, p.pid)))
            .collect();
        let mut victims: Vec<u32> = if exited.len() > want {
            exited.select_nth_unstable(want - 1);
            exited[..want].iter().map(|&(_, pid)| pid).collect()
        } else {
            exited.iter().map(|&(_, pid)| pid).collect()
        };
        if victims.len() < want {
            let more = want - victims.len();
            let mut live: Vec<(u64, u32)> = self
                .procs
                .values()
                .filter(|p| p.exited_at.is_none())
                .map(|p| (p.start_boot_ns.unwrap_or(0), p.pid))
                .collect();
            if live.len() > more {
                live.select_nth_unstable(more - 1);
                live.truncate(more);
            }
            victims.extend(live.iter().map(|&(_, pid)| pid));
        }
        for pid in victims {
            if self.procs.remove(&pid).is_some() {
                self.evicted += 1;
            }
        }
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Process> {
        self.procs.values()
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn exited(&self) -> usize {
        self.procs.values().filter(|p| p.exited.is_some()).count()
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ExecDetail, ExitDetail, ForkDetail};

    fn event(pid: u32, ppid: u32, detail: EventDetail) -> Event {
        Event {
            ts_boot_ns: pid as u64,
            comm: format!("c{pid}").as_str().into(),
            cgroup_id: 1,
            cgroup: Some("/".into()),
            ..Event::new(pid, ppid, detail)
        }
    }

    fn exec(pid: u32, ppid: u32, exe: &str) -> Event {
        event(
            pid,
            ppid,
            EventDetail::Exec(ExecDetail {
                exe: Some(exe.into()),
                filename: exe.into(),
                argv: [exe].into(),
                cwd: Some("/".into()),
                ..ExecDetail::default()
            }),
        )
    }

    #[test]
    fn fork_inherits_then_exec_replaces_then_exit_marks() {
        let mut t = ProcessTable::new(100, Duration::from_secs(30));
        t.apply(&exec(10, 1, "/bin/bash"));
        t.apply(&event(
            11,
            10,
            EventDetail::Fork(ForkDetail { parent_tid: 10 }),
        ));
        assert_eq!(t.get(11).unwrap().exe.as_deref(), Some("/bin/bash"));
        t.apply(&exec(11, 10, "/usr/bin/ls"));
        assert_eq!(t.get(11).unwrap().exe.as_deref(), Some("/usr/bin/ls"));
        let exit = ExitDetail {
            exit_code: Some(2),
            signal: None,
            core_dumped: false,
        };
        t.apply(&event(11, 10, EventDetail::Exit(exit)));
        assert_eq!(
            t.get(11).unwrap().exited.as_ref().unwrap().exit_code,
            Some(2)
        );
        assert_eq!(t.exited(), 1);
    }

    #[test]
    fn inline_vec_spills_past_its_inline_capacity() {
        let mut v = InlineVec::new(0u32);
        assert!(v.as_slice().is_empty());
        for i in 0..(INLINE as u32 + 5) {
            v.push(i);
        }
        assert!(v.as_slice().iter().copied().eq(0..(INLINE as u32 + 5)));
    }

    #[test]
    fn ancestry_is_nearest_first_and_cycle_safe() {
        let mut t = ProcessTable::new(100, Duration::from_secs(30));
        t.apply(&exec(1, 0, "/sbin/init"));
        t.apply(&exec(10, 1, "/bin/bash"));
        t.apply(&exec(20, 10, "/bin/sh"));
        let chain: Vec<u32> = ancestry(20, |p| t.get(p)).iter().map(|p| p.pid).collect();
        assert_eq!(chain, [10, 1]);
        // A cycle (pid reuse gone wrong) must terminate.
        t.apply(&exec(1, 20, "/sbin/init"));
        let chain: Vec<u32> = ancestry(20, |p| t.get(p)).iter().map(|p| p.pid).collect();
        assert_eq!(chain, [10, 1]);
        let chain: Vec<u32> = ancestry(10, |p| t.get(p)).iter().map(|p| p.pid).collect();
        assert_eq!(chain, [1, 20]);
    }

    #[test]
    fn reaps_after_grace_and_bounds_size() {
        let mut t = ProcessTable::new(3, Duration::from_secs(30));
        for pid in 1..=3 {
            t.apply(&exec(pid, 0, "/x"));
        }
        let exit = ExitDetail {
            exit_code: Some(0),
            signal: None,
            core_dumped: false,
        };
        t.apply(&event(2, 0, EventDetail::Exit(exit)));
        assert_eq!(t.reap(Instant::now()), 0);
        // Full: inserting a fourth evicts the exited one first.
        t.apply(&exec(4, 0, "/x"));
        assert_eq!(t.len(), 3);
        assert!(t.get(2).is_none());
        assert_eq!(t.evicted(), 1);
        // Then the oldest live one.
        t.apply(&exec(5, 0, "/x"));
        assert!(t.get(1).is_none());
        let exit = ExitDetail {
            exit_code: Some(0),
            signal: None,
            core_dumped: false,
        };
        t.apply(&event(3, 0, EventDetail::Exit(exit)));
        assert_eq!(t.reap(Instant::now() + Duration::from_secs(31)), 1);
        assert!(t.get(3).is_none());
    }

    /// At its bound under a stream of new processes, the table evicts in batches: the
    /// number of processes stays at or below the bound, the oldest go first, and the count
    /// of evictions adds up.
    #[test]
    fn a_full_table_evicts_oldest_in_batches() {
        let max = 640;
        let mut t = ProcessTable::new(max, Duration::from_secs(30));
        for pid in 1..=(3 * max as u32) {
            t.apply(&exec(pid, 0, "/x"));
            assert!(t.len() <= max);
        }
        assert_eq!(t.evicted() as usize + t.len(), 3 * max);
        // The newest processes are all still there.
        for pid in (3 * max as u32 - max as u32 / 2)..=(3 * max as u32) {
            assert!(t.get(pid).is_some(), "pid {pid} evicted");
        }
    }
}
