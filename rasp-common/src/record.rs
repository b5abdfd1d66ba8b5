//! Records the kernel submits to the one `EVENTS` ring buffer. Each starts with a
//! `RecordHeader` whose `kind` says which struct follows and whose `version` changes when any
//! layout here changes. All fixed size, `#[repr(C)]`, explicit padding, 8-byte aligned.

use crate::limits::{ARGV_CAP, COMM_LEN, FILENAME_CAP, NAME_SLOT, PATH_CAP};

/// Bump when any record layout changes; the agent refuses records of another version.
pub const RECORD_VERSION: u16 = 1;

/// What a record describes. Also the index into the per-CPU drop counters.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Exec, EventKind::Fork, EventKind::Exit];

    pub const fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(EventKind::Exec),
            2 => Some(EventKind::Fork),
            3 => Some(EventKind::Exit),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Exec => "exec",
            EventKind::Fork => "fork",
            EventKind::Exit => "exit",
        }
    }
}

/// Common to every record. `tid`/`pid` are the kernel's pid/tgid: `pid` is the process id
/// user space knows, `tid` the thread. `ppid` is the real parent's process id.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    pub kind: u16,
    pub version: u16,
    /// `HEADER_*` flags.
    pub flags: u32,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME, comparable across suspend.
    pub ts_boot_ns: u64,
    pub tid: u32,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub _pad0: u32,
    /// cgroup v2 id (the inode number of the cgroup's directory in the cgroup2 mount).
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

/// The parent pid could not be read (kernel memory read failed).
pub const HEADER_PPID_UNKNOWN: u32 = 1 << 0;

/// A successful execve/execveat, seen from the new image (`sched_process_exec`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub header: RecordHeader,
    /// `EXEC_*` flags.
    pub flags: u32,
    /// Bytes of `argv` filled (NUL separated, trailing NUL included).
    pub argv_len: u32,
    /// Full size of the argv block in the new process (`arg_end - arg_start`).
    pub argv_total: u32,
    pub filename_len: u32,
    /// Bytes of `exe` filled: path components, leaf first, each NUL-terminated.
    pub exe_len: u32,
    /// Bytes of `cwd` filled, same encoding as `exe`.
    pub cwd_len: u32,
    pub exe: [u8; PATH_CAP],
    pub cwd: [u8; PATH_CAP],
    /// Slack after the path buffers: the verifier checks a component read against the
    /// whole record, so a masked offset plus `NAME_SLOT` must stay inside it. The walk itself
    /// never writes past `PATH_CAP` (it stops and flags truncation first).
    pub _slack: [u8; NAME_SLOT],
    /// The name passed to execve, NUL-terminated (may be relative, or a symlink).
    pub filename: [u8; FILENAME_CAP],
    pub argv: [u8; ARGV_CAP],
}

pub const EXEC_ARGV_TRUNCATED: u32 = 1 << 0;
pub const EXEC_ARGV_FAILED: u32 = 1 << 1;
pub const EXEC_EXE_TRUNCATED: u32 = 1 << 2;
pub const EXEC_EXE_FAILED: u32 = 1 << 3;
pub const EXEC_CWD_TRUNCATED: u32 = 1 << 4;
pub const EXEC_CWD_FAILED: u32 = 1 << 5;
pub const EXEC_FILENAME_FAILED: u32 = 1 << 6;

/// A new process (threads are filtered out in the kernel). The header describes the child;
/// `header.ppid` is the parent that forked it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub header: RecordHeader,
    /// Thread of the parent that called fork/clone.
    pub parent_tid: u32,
    pub _pad: u32,
}

/// The last thread of a process exited (the whole process is gone).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub header: RecordHeader,
    /// `task->exit_code`: wait(2) status, `(code << 8) | signal` with 0x80 for a core dump.
    pub exit_code: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all repr(C), integer fields and byte arrays only, explicit padding, so every
    // bit pattern is a valid value.
    unsafe impl aya::Pod for super::RecordHeader {}
    unsafe impl aya::Pod for super::ExecRecord {}
    unsafe impl aya::Pod for super::ForkRecord {}
    unsafe impl aya::Pod for super::ExitRecord {}
}

// Layout checks: the kernel reserves these sizes and the agent decodes by them.
const _: () = assert!(core::mem::size_of::<RecordHeader>() == 64);
const _: () = assert!(core::mem::size_of::<ExecRecord>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<ForkRecord>() == 72);
const _: () = assert!(core::mem::size_of::<ExitRecord>() == 72);
const _: () = assert!(core::mem::offset_of!(ExecRecord, exe).is_multiple_of(8));
