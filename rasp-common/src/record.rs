//! Records the kernel submits to the one `EVENTS` ring buffer. Each starts with a
//! `RecordHeader` whose `kind` says which struct follows and whose `version` changes when any
//! layout here changes. The structs are the fixed part, `#[repr(C)]`, explicit padding,
//! 8-byte aligned; records with strings (exec, file open, library load) are followed by a
//! packed payload of exactly the bytes used, in the order and with the lengths the fixed part
//! gives: the kernel builds them in a per-CPU scratch buffer and sends only `header.size`
//! bytes, never a padded maximum.

use crate::limits::COMM_LEN;

/// Bump when any record layout changes; the agent refuses records of another version.
pub const RECORD_VERSION: u16 = 7;

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
    // Issue-19 hooks (file changes, process access, namespaces, mounts, AF_UNIX connects,
    // kernel modules, BPF loads, io_uring), numbered apart so other kinds can be added
    // below 16 without renumbering.
    FileChange = 16,
    Ptrace = 17,
    Namespace = 18,
    Mount = 19,
    UnixConnect = 20,
    KernelModule = 21,
    BpfLoad = 22,
    IoUring = 23,
    // Packet and raw IP sockets (socket(2)): what sniffers and packet crafters open.
    Socket = 24,
    // OpenSSL plaintext (uprobes on SSL_read/SSL_write and their _ex forms).
    Tls = 8,
}

impl EventKind {
    pub const ALL: [EventKind; 17] = [
        EventKind::Exec,
        EventKind::Fork,
        EventKind::Exit,
        EventKind::FileOpen,
        EventKind::LibraryLoad,
        EventKind::Connect,
        EventKind::SqlQuery,
        EventKind::FileChange,
        EventKind::Ptrace,
        EventKind::Namespace,
        EventKind::Mount,
        EventKind::UnixConnect,
        EventKind::KernelModule,
        EventKind::BpfLoad,
        EventKind::IoUring,
        EventKind::Socket,
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
            16 => Some(EventKind::FileChange),
            17 => Some(EventKind::Ptrace),
            18 => Some(EventKind::Namespace),
            19 => Some(EventKind::Mount),
            20 => Some(EventKind::UnixConnect),
            21 => Some(EventKind::KernelModule),
            22 => Some(EventKind::BpfLoad),
            23 => Some(EventKind::IoUring),
            24 => Some(EventKind::Socket),
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
            EventKind::FileChange => "file_change",
            EventKind::Ptrace => "ptrace",
            EventKind::Namespace => "namespace",
            EventKind::Mount => "mount",
            EventKind::UnixConnect => "unix_connect",
            EventKind::KernelModule => "kernel_module",
            EventKind::BpfLoad => "bpf_load",
            EventKind::IoUring => "io_uring",
            EventKind::Socket => "socket",
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
    /// Inode numbers of the new process's active PID namespace and its mount namespace
    /// (`/proc/<pid>/ns/{pid,mnt}`): a process whose PID namespace is not the host's runs
    /// in a container or sandbox whatever its cgroup is named. 0 when unread
    /// (`EXEC_NS_FAILED`).
    pub pid_ns: u32,
    pub mnt_ns: u32,
    /// What descriptors 0, 1 and 2 refer to as the new image starts: a shell whose stdin
    /// is a socket, or a pipe shared with a downloader, is told by these, not by its argv.
    pub stdio: [StdioFd; 3],
}

/// One standard descriptor of a new process (see `ExecRecord::stdio`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StdioFd {
    /// The inode number: both ends of a pipe (and a named FIFO's readers and writers)
    /// share it, which is how userspace finds who feeds whom.
    pub ino: u64,
    /// `i_rdev` of character and block devices (the kernel's dev_t: major << 20 | minor).
    pub rdev: u32,
    /// `i_mode`: the file type is in the `S_IFMT` bits. 0: the descriptor is not open.
    pub mode: u16,
    /// For sockets, the address family (`AF_INET`, `AF_INET6`, `AF_UNIX`, ...); else 0.
    pub family: u16,
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
/// The namespace inodes could not be read (`pid_ns`/`mnt_ns` are 0).
pub const EXEC_NS_FAILED: u32 = 1 << 10;
/// The descriptor table could not be read (`stdio` is zeroed).
pub const EXEC_STDIO_FAILED: u32 = 1 << 11;

/// `S_IFMT` and the file types `StdioFd::mode` and `FileChangeRecord` carry.
pub const S_IFMT: u16 = 0o170000;
pub const S_IFSOCK: u16 = 0o140000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFIFO: u16 = 0o010000;
pub const AF_UNIX: u16 = 1;

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
/// Calls before this record moved bytes `offset` does not count (`tls::TlsConn::uncounted`):
/// the gap before it has an unknown length.
pub const TLS_GAP_UNCOUNTED: u32 = 1 << 4;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

// ---- Issue-19 records ---------------------------------------------------------------------
// Syscalls seen at entry (the outcome is not known there: each record is an attempt). A
// file named by a syscall is a *location*: the name as the caller passed it (a user string,
// up to `limits::NAME_CAP` bytes, NUL-terminated) and, when that name is relative or empty,
// the path of the directory (or file) it is relative to, rebuilt from the dirfd's file or
// the working directory like other paths (components leaf first). Userspace joins them.

/// A change to a file's metadata or name: chmod family, setxattr family, unlink/rmdir,
/// rename family, truncate/ftruncate, utimes family, symlink, link. Sent when the
/// operation's own attributes (`HOOK_CHMOD_MODES`, watched xattr names, explicit times)
/// or one of its locations is watched. Payload: `dir_len` bytes of the first location's
/// directory, `name_len` of its name, `dir2_len` and `name2_len` of the second location
/// (rename's and link's new name), `extra_len` of the operation's string (setxattr: the
/// attribute name; symlink: the link's target). Packed in the order name, name2, extra,
/// dir, dir2 (names are read first: they decide whether the record is sent).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileChangeRecord {
    pub header: RecordHeader,
    /// `CHANGE_OP_*`.
    pub op: u16,
    /// `CHANGE_*` flags.
    pub flags: u16,
    /// chmod: the new mode; rename/unlink/link/utimes: the syscall's flags argument;
    /// setxattr: its flags.
    pub mode: u32,
    /// truncate: the new length; utimes: the modification time asked for (seconds).
    pub value: u64,
    /// The descriptor the first location is relative to (`AT_FDCWD` = -100), or the file
    /// itself for fd-based calls (fchmod, fsetxattr, ftruncate, futimens).
    pub fd: i32,
    pub dir_len: u32,
    pub name_len: u32,
    pub dir2_len: u32,
    pub name2_len: u32,
    pub extra_len: u32,
}

pub const CHANGE_OP_CHMOD: u16 = 1;
pub const CHANGE_OP_SETXATTR: u16 = 2;
pub const CHANGE_OP_UNLINK: u16 = 3;
pub const CHANGE_OP_RMDIR: u16 = 4;
pub const CHANGE_OP_RENAME: u16 = 5;
pub const CHANGE_OP_TRUNCATE: u16 = 6;
/// Times set to values the caller chose (timestomping; also `cp -p`, `tar x`).
pub const CHANGE_OP_UTIMES: u16 = 7;
/// Times set to now (`touch`).
pub const CHANGE_OP_TOUCH: u16 = 8;
pub const CHANGE_OP_SYMLINK: u16 = 9;
pub const CHANGE_OP_LINK: u16 = 10;
/// Operations are below this (they index bit masks).
pub const CHANGE_OPS: u16 = 11;

/// The first location's name was longer than `NAME_CAP` (cut).
pub const CHANGE_NAME_TRUNCATED: u16 = 1 << 0;
/// The first location's name or directory could not be read.
pub const CHANGE_NAME_FAILED: u16 = 1 << 1;
pub const CHANGE_NAME2_TRUNCATED: u16 = 1 << 2;
pub const CHANGE_NAME2_FAILED: u16 = 1 << 3;
pub const CHANGE_EXTRA_FAILED: u16 = 1 << 4;
/// `dir` is the descriptor's file itself (an fd-based call, or an empty name with
/// `AT_EMPTY_PATH`), not a directory to join the name to.
pub const CHANGE_FD_FILE: u16 = 1 << 5;
/// The first (second) location's directory path did not fit: it keeps its top
/// components after a gap (see `rasp-ebpf` vfs.rs), or none if deeper than the walk.
pub const CHANGE_DIR_TRUNCATED: u16 = 1 << 6;
pub const CHANGE_DIR2_TRUNCATED: u16 = 1 << 7;

/// ptrace(2) requests a record carries (`ptrace.h`); `PTRACE_VM_*` are not ptrace
/// requests but process_vm_readv/writev(2), which read or write another process's memory
/// the same way.
pub const PTRACE_POKETEXT: u32 = 4;
pub const PTRACE_POKEDATA: u32 = 5;
pub const PTRACE_POKEUSER: u32 = 6;
pub const PTRACE_ATTACH: u32 = 16;
pub const PTRACE_SEIZE: u32 = 0x4206;
pub const PTRACE_VM_READ: u32 = 0x1_0000;
pub const PTRACE_VM_WRITE: u32 = 0x1_0001;

/// A process reaching into another: ptrace attach/seize/poke, process_vm_readv/writev.
/// The target's identity (its executable, whether it descends from the caller, its uid)
/// is resolved in userspace from the process table.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PtraceRecord {
    pub header: RecordHeader,
    /// `PTRACE_*` above.
    pub request: u32,
    /// The target process (or thread) id, as the caller named it.
    pub target: u32,
    /// ptrace: the address argument (where a poke writes).
    pub addr: u64,
}

pub const NS_OP_SETNS: u32 = 1;
pub const NS_OP_UNSHARE: u32 = 2;

/// setns(2) or unshare(2). Payload: `name_len` bytes, setns only: the path of the
/// descriptor's file, which for a namespace file is the nsfs name (`mnt:[4026531841]`),
/// for a pidfd `anon_inode:[pidfd]`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NamespaceRecord {
    pub header: RecordHeader,
    /// `NS_OP_*`.
    pub op: u32,
    /// setns: the `nstype` argument; unshare: its flags (`CLONE_NEW*`).
    pub flags: u32,
    /// setns: the descriptor.
    pub fd: i32,
    /// setns: the inode of the descriptor's file (a namespace file's is the namespace's id).
    pub target_ino: u32,
    /// The caller's PID and mount namespaces before the call.
    pub pid_ns: u32,
    pub mnt_ns: u32,
    pub name_len: u32,
    /// `NS_*` flags.
    pub rflags: u32,
}

pub const NS_NAME_FAILED: u32 = 1 << 0;
pub const NS_CALLER_FAILED: u32 = 1 << 1;

pub const MOUNT_OP_MOUNT: u32 = 1;
/// fsopen(2), the new mount API's first step: only the filesystem type is known.
pub const MOUNT_OP_FSOPEN: u32 = 2;

/// mount(2) or fsopen(2). Payload: `source_len` bytes of the source string, `target_len`
/// of the target as passed, `fstype_len` of the filesystem type, then `dir_len` of the
/// working directory when the target is relative.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MountRecord {
    pub header: RecordHeader,
    /// mount: `MS_*` flags.
    pub flags: u64,
    /// `MOUNT_OP_*`.
    pub op: u32,
    /// `MOUNT_*` flags.
    pub rflags: u32,
    pub source_len: u32,
    pub dir_len: u32,
    pub target_len: u32,
    pub fstype_len: u32,
}

pub const MOUNT_SOURCE_FAILED: u32 = 1 << 0;
pub const MOUNT_TARGET_FAILED: u32 = 1 << 1;
pub const MOUNT_FSTYPE_FAILED: u32 = 1 << 2;
pub const MOUNT_TARGET_TRUNCATED: u32 = 1 << 3;

/// connect(2) to an AF_UNIX path (`/run/docker.sock`), at entry. Abstract-namespace
/// addresses have no path and are not reported. Payload: `path_len` bytes of sun_path
/// (NUL-terminated), then `dir_len` of the working directory when the path is relative.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnixConnectRecord {
    pub header: RecordHeader,
    pub fd: i32,
    /// `UNIX_*` flags.
    pub flags: u32,
    pub dir_len: u32,
    pub path_len: u32,
}

pub const UNIX_PATH_FAILED: u32 = 1 << 0;
pub const UNIX_DIR_FAILED: u32 = 1 << 1;

pub const MODULE_OP_INIT: u32 = 1;
pub const MODULE_OP_FINIT: u32 = 2;
pub const MODULE_OP_DELETE: u32 = 3;

/// init_module(2) (an image in memory), finit_module(2) (from a file descriptor),
/// delete_module(2). Payload: `name_len` bytes: finit, the descriptor's path (leaf first);
/// delete, the module's name.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelModuleRecord {
    pub header: RecordHeader,
    /// `MODULE_OP_*`.
    pub op: u32,
    /// `MODULE_*` flags.
    pub flags: u32,
    pub fd: i32,
    pub name_len: u32,
}

pub const MODULE_NAME_FAILED: u32 = 1 << 0;
pub const MODULE_NAME_TRUNCATED: u32 = 1 << 1;

/// bpf(BPF_PROG_LOAD) by a process other than the agent: a program entering the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BpfLoadRecord {
    pub header: RecordHeader,
    /// `bpf_attr.prog_type` (`BPF_PROG_TYPE_*`).
    pub prog_type: u32,
    pub insn_cnt: u32,
    pub expected_attach_type: u32,
    /// `BPF_LOAD_*` flags.
    pub flags: u32,
    /// `bpf_attr.prog_name`, NUL-padded.
    pub prog_name: [u8; 16],
}

/// The attribute block could not be read (only the process is known).
pub const BPF_LOAD_ATTR_FAILED: u32 = 1 << 0;

/// socket(2) that returned a packet socket (`AF_PACKET`, or `SOCK_PACKET` of any family)
/// or a raw IP socket (`SOCK_RAW` on `AF_INET`/`AF_INET6`): sniffers (tcpdump, tshark,
/// libpcap, scapy) and packet crafters open these; ordinary network code never does.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketRecord {
    pub header: RecordHeader,
    pub family: u32,
    /// The type without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`.
    pub sock_type: u32,
    /// As passed: for `AF_PACKET` an Ethernet protocol in network byte order.
    pub protocol: u32,
    /// The new socket's descriptor.
    pub fd: i32,
}

pub const AF_PACKET: u32 = 17;
pub const SOCK_RAW: u32 = 3;
pub const SOCK_PACKET: u32 = 10;
/// The type bits of socket(2)'s second argument (the rest are flags).
pub const SOCK_TYPE_MASK: u32 = 0xf;

/// The `interest::SOCKET_CLASS_*` of a socket (`sock_type` without flags), 0 for the
/// sockets no rule can name. The kernel filters by it; the agent names the event by it.
#[inline(always)]
pub const fn socket_class(family: u32, sock_type: u32) -> u32 {
    use crate::interest::{SOCKET_CLASS_PACKET, SOCKET_CLASS_RAW};
    if family == AF_PACKET || sock_type == SOCK_PACKET {
        SOCKET_CLASS_PACKET
    } else if sock_type == SOCK_RAW && (family == AF_INET as u32 || family == AF_INET6 as u32) {
        SOCKET_CLASS_RAW
    } else {
        0
    }
}
pub const BPF_PROG_LOAD: u32 = 5;

/// A request submitted to an io_uring (`io_uring_submit_req`): file and network
/// operations through io_uring never pass the syscall tracepoints the other hooks use.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IoUringRecord {
    pub header: RecordHeader,
    /// `IORING_OP_*`.
    pub opcode: u32,
    /// Submitted by one of the process's io_uring worker threads (SQPOLL) rather than by
    /// the thread that queued it.
    pub sq_thread: u32,
    /// The submitter's tag for the request (`sqe.user_data`).
    pub user_data: u64,
}

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
    unsafe impl aya::Pod for super::StdioFd {}
    unsafe impl aya::Pod for super::FileChangeRecord {}
    unsafe impl aya::Pod for super::PtraceRecord {}
    unsafe impl aya::Pod for super::NamespaceRecord {}
    unsafe impl aya::Pod for super::MountRecord {}
    unsafe impl aya::Pod for super::UnixConnectRecord {}
    unsafe impl aya::Pod for super::KernelModuleRecord {}
    unsafe impl aya::Pod for super::BpfLoadRecord {}
    unsafe impl aya::Pod for super::SocketRecord {}
    unsafe impl aya::Pod for super::IoUringRecord {}
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
const _: () = assert!(core::mem::size_of::<ExecRecord>() == 176);
const _: () = assert!(core::mem::size_of::<ForkRecord>() == 104);
const _: () = assert!(core::mem::size_of::<ExitRecord>() == 104);
const _: () = assert!(core::mem::size_of::<FileOpenRecord>() == 120);
const _: () = assert!(core::mem::size_of::<LibraryLoadRecord>() == 128);
const _: () = assert!(core::mem::size_of::<ConnectRecord>() == 120);
const _: () = assert!(core::mem::size_of::<SqlQueryRecord>() == 120);
const _: () = assert!(core::mem::size_of::<StdioFd>() == 16);
const _: () = assert!(core::mem::size_of::<FileChangeRecord>() == 136);
const _: () = assert!(core::mem::size_of::<PtraceRecord>() == 112);
const _: () = assert!(core::mem::size_of::<NamespaceRecord>() == 128);
const _: () = assert!(core::mem::size_of::<MountRecord>() == 128);
const _: () = assert!(core::mem::size_of::<UnixConnectRecord>() == 112);
const _: () = assert!(core::mem::size_of::<KernelModuleRecord>() == 112);
const _: () = assert!(core::mem::size_of::<BpfLoadRecord>() == 128);
const _: () = assert!(core::mem::size_of::<SocketRecord>() == 112);
const _: () = assert!(core::mem::size_of::<IoUringRecord>() == 112);
const _: () = assert!(core::mem::size_of::<TlsRecord>() == 144);
