//! The agent runs as root, but root's capabilities are far more than it uses: loading a
//! kernel module, raw I/O ports, changing uids, the clock or the audit configuration are
//! never part of its work, and an attacker who took over the process should not inherit
//! them. `drop_unneeded` removes every capability outside `KEPT` from the bounding set (so
//! nothing the agent executes, the hold watchdog included, can regain it) and from the
//! permitted, effective and inheritable sets, and clears the ambient set. It runs before
//! the daemon starts any thread: capabilities are per thread, and threads inherit them when
//! they are created.
//!
//! What is kept and why (the DaemonSet's securityContext lists the same, minus what only a
//! plain root daemon on a host needs: CHOWN, FOWNER, DAC_OVERRIDE, NET_BIND_SERVICE,
//! IPC_LOCK):
//! - BPF, PERFMON: load programs and maps, attach tracepoints and uprobes (uprobes attach
//!   for as long as the agent runs, as libraries are found).
//! - SYS_ADMIN: mounting tracefs/bpffs/securityfs when missing, cgroup attach on older
//!   kernels, `bpf_send_signal` and other helpers that kernels gate on it.
//! - NET_ADMIN: the cgroup skb and sock_addr programs that cut a quarantined cgroup off.
//! - SYS_PTRACE, DAC_READ_SEARCH: `/proc/<pid>/maps`, `exe` and `root/...` of every process
//!   (uprobe targets in containers), and hold-and-refuse on held queries.
//! - KILL: kill and stop processes of any user. DAC_OVERRIDE: freeze or kill cgroups
//!   delegated to a user (rootless containers), whose files root does not own.
//! - SYS_RESOURCE, IPC_LOCK: RLIMIT_MEMLOCK on kernels before 5.11. SYS_NICE: the ring
//!   reader's priority (`--drain-nice`).
//! - CHOWN, FOWNER: the socket's group (`--socket-group`) and the state directory's mode
//!   on a directory another user created. NET_BIND_SERVICE: `--metrics` on a port < 1024.

use std::fmt;

/// Capability numbers (linux/capability.h) the agent keeps.
const KEPT: &[(u32, &str)] = &[
    (0, "CHOWN"),
    (1, "DAC_OVERRIDE"),
    (2, "DAC_READ_SEARCH"),
    (3, "FOWNER"),
    (5, "KILL"),
    (10, "NET_BIND_SERVICE"),
    (12, "NET_ADMIN"),
    (14, "IPC_LOCK"),
    (19, "SYS_PTRACE"),
    (21, "SYS_ADMIN"),
    (23, "SYS_NICE"),
    (24, "SYS_RESOURCE"),
    (38, "PERFMON"),
    (39, "BPF"),
];

/// Names of the capabilities the kernels we know define, for the log; numbers above are
/// dropped too (as `cap<N>`).
const NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// `CAP_SETPCAP`: needed to shrink the bounding set, so it goes last.
const SETPCAP: u32 = 8;

/// The highest capability this kernel knows (`/proc/sys/kernel/cap_last_cap`), or the
/// highest we know if it cannot be read.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &u32| n < 64)
        .unwrap_or(NAMES.len() as u32 - 1)
}

/// A capability's name as the kernel headers spell it (without `CAP_`).
pub fn name(cap: u32) -> String {
    NAMES
        .get(cap as usize)
        .map_or_else(|| format!("cap{cap}"), |n| (*n).to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("dropping CAP_{cap} from the bounding set: {source}")]
    Bounding { cap: String, source: std::io::Error },
    #[error("reading this thread's capabilities (capget): {0}")]
    Get(std::io::Error),
    #[error("setting this thread's capabilities (capset): {0}")]
    Set(std::io::Error),
    #[error("clearing the ambient capabilities: {0}")]
    Ambient(std::io::Error),
}

/// What `drop_unneeded` left: the kept set as a bit mask and the names dropped.
#[derive(Debug, Clone, Default)]
pub struct Dropped {
    pub kept: u64,
    pub dropped: Vec<String>,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept: Vec<String> = (0..64)
            .filter(|c| self.kept & (1 << c) != 0)
            .map(name)
            .collect();
        write!(f, "kept {}", kept.join(","))
    }
}

/// The bit mask of the capabilities kept.
pub fn kept_mask() -> u64 {
    KEPT.iter().fold(0, |m, (c, _)| m | 1 << c)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

fn capget() -> Result<[CapData; 2], PrivilegeError> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and two data words as capget(2) takes for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if r != 0 {
        return Err(PrivilegeError::Get(std::io::Error::last_os_error()));
    }
    Ok(data)
}

fn capset(data: &[CapData; 2]) -> Result<(), PrivilegeError> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: as in `capget`; the kernel only reads `data`.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if r != 0 {
        return Err(PrivilegeError::Set(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn drop_bounding(cap: u32) -> Result<(), PrivilegeError> {
    // SAFETY: prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        let err = std::io::Error::last_os_error();
        // EINVAL: the kernel does not know this capability; nothing to drop.
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(PrivilegeError::Bounding {
                cap: name(cap),
                source: err,
            });
        }
    }
    Ok(())
}

/// Drop every capability outside `KEPT` from this thread (see the module's text). Call it
/// before any other thread exists.
pub fn drop_unneeded() -> Result<Dropped, PrivilegeError> {
    let keep = kept_mask();
    let last = last_cap();
    let mut dropped = Vec::new();
    let had = capget()?;
    let permitted = u64::from(had[0].permitted) | u64::from(had[1].permitted) << 32;
    // Without SETPCAP (a container that was not given it) the bounding set cannot shrink,
    // and is already what the runtime granted; the other sets still can.
    let bounding = permitted & (1 << SETPCAP) != 0;
    for cap in (0..=last).filter(|&c| c != SETPCAP && keep & (1 << c) == 0) {
        if bounding {
            drop_bounding(cap)?;
        }
        if permitted & (1 << cap) != 0 {
            dropped.push(name(cap));
        }
    }
    // SAFETY: prctl with integer arguments.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // EINVAL: a kernel without ambient capabilities (before 4.3) has none to clear.
    if r != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(PrivilegeError::Ambient(err));
        }
    }
    if bounding {
        drop_bounding(SETPCAP)?;
        dropped.push(name(SETPCAP));
    }
    let mut data = had;
    for (i, word) in data.iter_mut().enumerate() {
        let mask = (keep >> (32 * i)) as u32;
        word.effective &= mask;
        word.permitted &= mask;
        word.inheritable = 0;
    }
    capset(&data)?;
    let now = capget()?;
    Ok(Dropped {
        kept: u64::from(now[0].effective) | u64::from(now[1].effective) << 32,
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kernel_numbering() {
        assert_eq!(name(0), "CHOWN");
        assert_eq!(name(16), "SYS_MODULE");
        assert_eq!(name(21), "SYS_ADMIN");
        assert_eq!(name(39), "BPF");
        assert_eq!(name(40), "CHECKPOINT_RESTORE");
        assert_eq!(name(41), "cap41");
        for (cap, n) in KEPT {
            assert_eq!(name(*cap), *n, "KEPT entry {cap}");
        }
    }

    #[test]
    fn the_kept_set_leaves_out_what_takes_over_a_node() {
        let keep = kept_mask();
        for cap in [6, 7, 8, 16, 17, 18, 22, 25, 27, 31] {
            assert_eq!(keep & (1 << cap), 0, "CAP_{} must not be kept", name(cap));
        }
        for cap in [5, 12, 19, 21, 38, 39] {
            assert_ne!(keep & (1 << cap), 0, "CAP_{} is needed", name(cap));
        }
    }
}
