//! The part every record shares: its `RecordHeader`, filled from the task the event is about
//! (process events) or from the current task (file, library and network events). `size` is
//! the record's fixed part; senders of payloads set the total before sending.

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::{bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns},
};
use rasp_common::{
    record::{
        RecordHeader, HEADER_CREDS_UNKNOWN, HEADER_PPID_UNKNOWN, HEADER_START_UNKNOWN,
        RECORD_VERSION,
    },
    EventKind, KernelOffsets,
};

use crate::kernel::{current_task, read_ptr, read_u32, read_u64, Kptr};

/// Header for `task`; uid/gid, cgroup and comm come from the current task, which is `task`
/// itself (exec, exit) or the parent whose copies the child inherits (fork).
#[inline(always)]
pub fn header(kind: EventKind, o: &KernelOffsets, task: Kptr, size: usize) -> RecordHeader {
    let tid = read_u32(task, o.task_pid).unwrap_or(0);
    let pid = read_u32(task, o.task_tgid).unwrap_or(0);
    with_ids(kind, o, task, tid, pid, size)
}

/// Header for the current task, whose ids come from a helper instead of memory reads.
#[inline(always)]
pub fn current_header(kind: EventKind, o: &KernelOffsets, size: usize) -> RecordHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    with_ids(
        kind,
        o,
        current_task(),
        pid_tgid as u32,
        (pid_tgid >> 32) as u32,
        size,
    )
}

#[inline(always)]
fn with_ids(
    kind: EventKind,
    o: &KernelOffsets,
    task: Kptr,
    tid: u32,
    pid: u32,
    size: usize,
) -> RecordHeader {
    let mut flags = 0;
    let ppid = match read_ptr(task, o.task_real_parent).and_then(|p| read_u32(p, o.task_tgid)) {
        Ok(v) => v,
        Err(_) => {
            flags |= HEADER_PPID_UNKNOWN;
            0
        }
    };
    // Effective ids and capabilities from the task's own credentials (for a fork, the
    // child's copy, made before this tracepoint).
    let (euid, egid, cap_effective) = match read_ptr(task, o.task_cred).and_then(|c| {
        Ok((
            read_u32(c, o.cred_euid)?,
            read_u32(c, o.cred_egid)?,
            read_u64(c, o.cred_cap_effective)?,
        ))
    }) {
        Ok(v) => v,
        Err(_) => {
            flags |= HEADER_CREDS_UNKNOWN;
            (u32::MAX, u32::MAX, 0)
        }
    };
    let start_ns =
        match read_ptr(task, o.task_group_leader).and_then(|l| read_u64(l, o.task_start_time)) {
            Ok(v) => v,
            Err(_) => {
                flags |= HEADER_START_UNKNOWN;
                0
            }
        };
    let uid_gid = bpf_get_current_uid_gid();
    RecordHeader {
        kind: kind as u16,
        version: RECORD_VERSION,
        flags,
        // SAFETY: helpers without arguments.
        ts_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        tid,
        pid,
        ppid,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        euid,
        egid,
        size: size as u32,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        start_ns,
        cap_effective,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        verdict: 0,
        verdict_rule: 0,
    }
}
