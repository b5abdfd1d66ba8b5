//! Records the kernel submits to the one `EVENTS` ring buffer. Each starts with a
//! `RecordHeader` whose `kind` says which struct follows and whose `version` changes when any
//! layout here changes. The structs are the fixed part, `#[repr(C)]`, explicit padding,
//! 8-byte aligned; records with strings (exec, file open, library load) are followed by a
//! packed payload of exactly the bytes used, in the order and with the lengths the fixed part
//! gives: the kernel builds them in a per-CPU scratch buffer and sends only `header.size`
//! bytes, never a padded maximum.

use crate::limits::COMM_LEN;

/// Bump when any record layout changes; the agent refuses records of another version.
pub const RECORD_VERSION: u16 = 6;

/// What a record describes. Also the index into the per-CPU drop counters.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    FileOpen = 4,
    LibraryLoad = 5,
    Connect = 6,
    SqlQuery = 7,
    Tls = 8,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::Exec,
        EventKind::Fork,
        EventKind::Exit,
        EventKind::FileOpen,
        EventKind::LibraryLoad,
        EventKind::Connect,
        EventKind::SqlQuery,
        EventKind::Tls,
    ];

    pub const fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(EventKind::Exec),
            2 => Some(EventKind::Fork),
            3 => Some(EventKind::Exit),
            4 => Some(EventKind::FileOpen),
            5 => Some(EventKind::LibraryLoad),
            6 => Some(EventKind::Connect),
            7 => Some(EventKind::SqlQuery),
            8 => Some(EventKind::Tls),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Exec => "exec",
            EventKind::Fork => "fork",
            EventKind::Exit => "exit",
            EventKind::FileOpen => "file_open",
            EventKind::LibraryLoad => "library_load",
            EventKind::Connect => "connect",
            EventKind::SqlQuery => "sql_query",
            EventKind::Tls => "tls",
        }
    }
}

/// Common to every record. `tid`/`pid` are the kernel's pid/tgid: `pid` is the process id
/// user space knows, `tid` the thread. `ppid` is the real parent's process id.
/// `(start_ns, pid)` is the process's exec id: unlike the pid it is never reused.
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
    /// Real ids.
    pub uid: u32,
    pub gid: u32,
    /// Effective ids (`cred->euid/egid`): differ from the real ones after a setuid exec.
    pub euid: u32,
    pub egid: u32,
    /// Bytes of this record as sent: the fixed part plus its payload.
    pub size: u32,
    /// cgroup v2 id (the inode number of the cgroup's directory in the cgroup2 mount).
    pub cgroup_id: u64,
    /// The process's start (`group_leader->start_boottime`, CLOCK_BOOTTIME ns, as
    /// `/proc/<pid>/stat` field 22 counts it in ticks).
    pub start_ns: u64,
    /// `cred->cap_effective`: a non-root process holding capabilities is visible.
    pub cap_effective: u64,
    pub comm: [u8; COMM_LEN],
    /// What a program did to the act (`deny::VERDICT_*`; 0: nothing).
    pub verdict: u32,
    /// With a verdict: the slot of the rule that decided it (`deny::rule_slot`).
    pub verdict_rule: u32,
}

/// The parent pid could not be read (kernel memory read failed).
pub const HEADER_PPID_UNKNOWN: u32 = 1 << 0;
/// The credentials (euid, egid, capabilities) could not be read.
pub const HEADER_CREDS_UNKNOWN: u32 = 1 << 1;
/// The process start time could not be read: `start_ns` is 0.
pub const HEADER_START_UNKNOWN: u32 = 1 << 2;

/// A successful execve/execveat, seen from the new image (`sched_process_exec`). Payload:
/// `exe_len` bytes of exe, `cwd_len` of cwd (paths as components leaf first, each
/// NUL-terminated), `filename_len` of the name passed to execve (NUL-terminated),
/// `argv_len` of argv (NUL separated, trailing NUL included).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecRecord {
    pub header: RecordHeader,
    /// `EXEC_*` flags.
    pub flags: u32,
    pub argv_len: u32,
    /// Full size of the argv block in the new process (`arg_end - arg_start`).
    pub argv_total: u32,
    pub filename_len: u32,
    /// The executable actually mapped (the interpreter for #! scripts).
    pub exe_len: u32,
    pub cwd_len: u32,
}

pub const EXEC_ARGV_TRUNCATED: u32 = 1 << 0;
pub const EXEC_ARGV_FAILED: u32 = 1 << 1;
pub const EXEC_EXE_TRUNCATED: u32 = 1 << 2;
pub const EXEC_EXE_FAILED: u32 = 1 << 3;
pub const EXEC_CWD_TRUNCATED: u32 = 1 << 4;
pub const EXEC_CWD_FAILED: u32 = 1 << 5;
pub const EXEC_FILENAME_FAILED: u32 = 1 << 6;
/// No rule needs the working directory: it was not walked (`cwd_len` is 0).
pub const EXEC_CWD_SKIPPED: u32 = 1 << 7;
/// The exec was refused before it happened (BPF-LSM `bprm_check_security`): the process
/// keeps its old image, and the new one's argv and cwd were never read.
pub const EXEC_REFUSED: u32 = 1 << 8;
/// The executable's file (dev+inode) was not in `SEEN_EXEC_FILES` (or is a uprobe target
/// there): the agent inspects it for libpq/OpenSSL symbols (a statically linked server).
pub const EXEC_EXE_NEW: u32 = 1 << 9;

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

/// A successful open (open, openat, creat, openat2), seen at syscall exit with the new fd,
/// sent only when the interest maps say some rule may care (see `interest`). Payload:
/// `path_len` bytes of path (components leaf first, each NUL-terminated).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileOpenRecord {
    pub header: RecordHeader,
    /// `FILE_*` flags.
    pub flags: u32,
    /// The descriptor the open returned.
    pub fd: i32,
    /// `file->f_flags`: access mode and status flags. The kernel clears O_CREAT, O_EXCL,
    /// O_NOCTTY and O_TRUNC from it after the open; `open_flags` has them.
    pub f_flags: u32,
    /// `file->f_mode` (`FMODE_*`): what the open actually granted.
    pub f_mode: u32,
    /// The flags the caller passed (creat: O_CREAT|O_WRONLY|O_TRUNC), valid with
    /// `FILE_OPEN_FLAGS_KNOWN`.
    pub open_flags: u32,
    pub path_len: u32,
}

pub const FILE_PATH_TRUNCATED: u32 = 1 << 0;
pub const FILE_PATH_FAILED: u32 = 1 << 1;
pub const FILE_OPEN_FLAGS_KNOWN: u32 = 1 << 2;

// `f_mode` bits (include/linux/fs.h); stable for decades, part of what userspace decodes.
pub const FMODE_READ: u32 = 1 << 0;
pub const FMODE_WRITE: u32 = 1 << 1;
/// This open created the file.
pub const FMODE_CREATED: u32 = 1 << 20;

/// A file mapped executable (`mmap` with PROT_EXEC of a file descriptor): a shared library
/// being loaded by ld.so or dlopen. The main executable and ld.so itself are mapped by the
/// kernel at exec and produce no record. Sent when a library rule may care (the interest
/// maps) or, flagged `LIB_FILE_NEW`, when the file is new to `SEEN_EXEC_FILES`, whatever
/// the rules. Payload: `path_len` bytes of path.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LibraryLoadRecord {
    pub header: RecordHeader,
    /// `LIB_*` flags.
    pub flags: u32,
    pub fd: i32,
    /// mmap's `prot` argument.
    pub prot: u32,
    pub path_len: u32,
    /// The file: `inode->i_sb->s_dev` (kernel `dev_t`) and `inode->i_ino`.
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

pub const LIB_PATH_TRUNCATED: u32 = 1 << 0;
pub const LIB_PATH_FAILED: u32 = 1 << 1;
/// The file was not in `SEEN_EXEC_FILES` (first executable mapping since the agent started,
/// or since the entry was evicted or released), or it is a uprobe target there: the agent's
/// uprobe task inspects it.
pub const LIB_FILE_NEW: u32 = 1 << 2;

/// A connect(2) attempt to an AF_INET/AF_INET6 address, seen at syscall entry: whether it
/// succeeded is not known here.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectRecord {
    pub header: RecordHeader,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    pub fd: i32,
    /// Destination address in network byte order; AF_INET uses the first 4 bytes.
    pub addr: [u8; 16],
}

/// A query handed to libpq (uprobe on `PQsendQuery`, `PQsendQueryParams` or
/// `PQsendPrepare`, which `PQexec`, `PQexecParams` and `PQprepare` call: each query is seen
/// once). Payload: `query_len` bytes of query text, without its NUL.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SqlQueryRecord {
    pub header: RecordHeader,
    /// `SQL_FN_*`: which libpq function.
    pub function: u32,
    /// `SQL_*` flags.
    pub flags: u32,
    /// The `PGconn *`: one connection's queries share it.
    pub conn: u64,
    pub query_len: u32,
    pub _pad: u32,
}

pub const SQL_FN_SEND_QUERY: u32 = 1;
pub const SQL_FN_SEND_QUERY_PARAMS: u32 = 2;
pub const SQL_FN_SEND_PREPARE: u32 = 3;

/// The query was longer than the capture bound (`limits::SQL_QUERY_CAP`).
pub const SQL_QUERY_TRUNCATED: u32 = 1 << 0;
/// The query text could not be read from the process's memory (or was a null pointer).
pub const SQL_QUERY_FAILED: u32 = 1 << 1;
/// The calling thread is held (stopped) until the agent decides (`hold`); the record came
/// through the decision ring.
pub const SQL_QUERY_HELD: u32 = 1 << 2;

/// Plaintext an application handed to OpenSSL (`SSL_write`, `SSL_write_ex`) or got back
/// from it (`SSL_read`, `SSL_read_ex`), captured when the call returned, within the capture
/// bounds (`tls`). One call may be sent as several records (`limits::TLS_CHUNK` each).
/// Payload: `data_len` bytes of plaintext. A record with `TLS_CLOSED` (`SSL_free`) has none.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TlsRecord {
    pub header: RecordHeader,
    /// The `SSL *`: with the pid and `conn_id`, the connection.
    pub ssl: u64,
    /// `tls::TlsConn::id`: tells a reused `SSL *` address from the connection before it.
    pub conn_id: u64,
    /// Bytes of this direction moved before the first byte of this record: a gap between
    /// records is what the bounds (or a lost record) left out.
    pub offset: u64,
    /// Bytes the call moved (read or written), captured or not.
    pub call_len: u64,
    /// `TLS_*` flags.
    pub flags: u32,
    /// The socket fd under the `SSL *`, -1 while unknown.
    pub fd: i32,
    pub data_len: u32,
    pub _pad: u32,
}

/// Written by the application (`SSL_write*`); without it, read (`SSL_read*`).
pub const TLS_OUTBOUND: u32 = 1 << 0;
/// The call's data goes on past this record's end but was not captured (a bound bit).
pub const TLS_TRUNCATED: u32 = 1 << 1;
/// The plaintext could not be read from the process's memory: `data_len` is 0.
pub const TLS_READ_FAILED: u32 = 1 << 2;
/// `SSL_free`: the connection ended; no data.
pub const TLS_CLOSED: u32 = 1 << 3;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all repr(C), integer fields and byte arrays only, explicit padding, so every
    // bit pattern is a valid value.
    unsafe impl aya::Pod for super::RecordHeader {}
    unsafe impl aya::Pod for super::ExecRecord {}
    unsafe impl aya::Pod for super::ForkRecord {}
    unsafe impl aya::Pod for super::ExitRecord {}
    unsafe impl aya::Pod for super::FileOpenRecord {}
    unsafe impl aya::Pod for super::LibraryLoadRecord {}
    unsafe impl aya::Pod for super::ConnectRecord {}
    unsafe impl aya::Pod for super::SqlQueryRecord {}
    unsafe impl aya::Pod for super::TlsRecord {}
}

/// Per-CPU scratch where a record with a payload is built before `bpf_ringbuf_output`
/// sends its used bytes. A power of two so a length can be masked for the verifier; large
/// enough for the biggest exec (fixed part, two paths of up to `PATH_CAP` each with a
/// component slot of slack, filename, argv) with room for the application-layer records
/// (query text, TLS plaintext chunks) that come next.
pub const SCRATCH_BYTES: usize = 16384;

#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Scratch {
    pub bytes: [u8; SCRATCH_BYTES],
}

// Layout checks: the kernel sends these sizes (plus payloads) and the agent decodes by them.
const _: () = assert!(core::mem::size_of::<RecordHeader>() == 96);
const _: () = assert!(core::mem::size_of::<ExecRecord>() == 120);
const _: () = assert!(core::mem::size_of::<ForkRecord>() == 104);
const _: () = assert!(core::mem::size_of::<ExitRecord>() == 104);
const _: () = assert!(core::mem::size_of::<FileOpenRecord>() == 120);
const _: () = assert!(core::mem::size_of::<LibraryLoadRecord>() == 128);
const _: () = assert!(core::mem::size_of::<ConnectRecord>() == 120);
const _: () = assert!(core::mem::size_of::<SqlQueryRecord>() == 120);
const _: () = assert!(core::mem::size_of::<TlsRecord>() == 144);
