//! Where the kernel side can lose or damage an event: every failed reserve, failed read,
//! missing offset table or busy scratch buffer has a `LossSite`, counted per CPU (atomic
//! adds) in `LOSSES` with the source line of its last occurrence in `LOSS_LINES`. The agent
//! sums them per kind for `status` and turns sustained losses into agent-health detections:
//! a drop is never silent.

use crate::record::EventKind;

/// One place a program can lose (or send incomplete) an event. The value indexes the maps.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossSite {
    /// The offset table was not filled: nothing can be read.
    OffsetsUnset = 1,
    /// Both per-CPU scratch slots were in use (a program preempted twice over).
    ScratchBusy = 2,
    ExecSend = 3,
    ExecArgvRead = 4,
    ExecFilenameRead = 5,
    ExecExeWalk = 6,
    ExecCwdWalk = 7,
    ForkRead = 8,
    ForkReserve = 9,
    ExitRead = 10,
    ExitReserve = 11,
    FileFilterRead = 12,
    FileSend = 13,
    FilePathWalk = 14,
    LibFilterRead = 15,
    LibSend = 16,
    LibPathWalk = 17,
    ConnectRead = 18,
    ConnectReserve = 19,
    SqlSend = 20,
    SqlRead = 21,
    // Hold and decide (libpq): a flagged query that could not be held ran unheld.
    HoldTableFull = 22,
    HoldSend = 23,
    // Overload: low-value records give way while the ring fills, so what rules match on
    // (files, libraries, connects, queries, verdicts, new executables) still finds room.
    ForkShed = 24,
    ExitShed = 25,
    ExecShed = 26,
    // Issue-19 hooks: their own block, so sites added above stay unnumbered-around.
    /// A user string (a path, an xattr name) or a directory walk for a file change failed.
    FileChangeRead = 32,
    FileChangeSend = 33,
    PtraceReserve = 34,
    NamespaceSend = 35,
    NamespaceRead = 36,
    MountSend = 37,
    MountRead = 38,
    UnixSend = 39,
    UnixRead = 40,
    ModuleSend = 41,
    ModuleRead = 42,
    BpfReserve = 43,
    BpfRead = 44,
    IoUringReserve = 45,
    /// The descriptor table of a new process could not be read (`stdio` zeroed).
    ExecStdioRead = 46,
    /// Its namespaces could not be read.
    ExecNsRead = 47,
    // OpenSSL plaintext (the `rasp_ssl_*` programs).
    TlsSend = 48,
    TlsRead = 49,
    /// The byte count of an `_ex` call could not be read through its pointer.
    TlsCount = 50,
    /// A call's arguments or a connection's state could not be stored: the call is lost.
    TlsState = 51,
    /// Packet and raw sockets (`rasp_socket`).
    SocketReserve = 52,
}

/// Slots in `LOSSES`/`LOSS_LINES` (site values are below it).
pub const LOSS_SLOTS: u32 = 64;

/// Whether a site loses the whole event or sends it with a field missing (flagged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossEffect {
    /// The event never reached the agent.
    Dropped,
    /// The event was sent with a field missing (and a flag saying which).
    Incomplete,
}

impl LossSite {
    pub const ALL: [LossSite; 47] = [
        LossSite::OffsetsUnset,
        LossSite::ScratchBusy,
        LossSite::ExecSend,
        LossSite::ExecArgvRead,
        LossSite::ExecFilenameRead,
        LossSite::ExecExeWalk,
        LossSite::ExecCwdWalk,
        LossSite::ForkRead,
        LossSite::ForkReserve,
        LossSite::ExitRead,
        LossSite::ExitReserve,
        LossSite::FileFilterRead,
        LossSite::FileSend,
        LossSite::FilePathWalk,
        LossSite::LibFilterRead,
        LossSite::LibSend,
        LossSite::LibPathWalk,
        LossSite::ConnectRead,
        LossSite::ConnectReserve,
        LossSite::SqlSend,
        LossSite::SqlRead,
        LossSite::HoldTableFull,
        LossSite::HoldSend,
        LossSite::ForkShed,
        LossSite::ExitShed,
        LossSite::ExecShed,
        LossSite::FileChangeRead,
        LossSite::FileChangeSend,
        LossSite::PtraceReserve,
        LossSite::NamespaceSend,
        LossSite::NamespaceRead,
        LossSite::MountSend,
        LossSite::MountRead,
        LossSite::UnixSend,
        LossSite::UnixRead,
        LossSite::ModuleSend,
        LossSite::ModuleRead,
        LossSite::BpfReserve,
        LossSite::BpfRead,
        LossSite::IoUringReserve,
        LossSite::ExecStdioRead,
        LossSite::ExecNsRead,
        LossSite::TlsSend,
        LossSite::TlsRead,
        LossSite::TlsCount,
        LossSite::TlsState,
        LossSite::SocketReserve,
    ];

    /// The event kind it loses, `None` for sites shared by every program.
    pub const fn kind(self) -> Option<EventKind> {
        use LossSite::*;
        Some(match self {
            OffsetsUnset | ScratchBusy => return None,
            ExecSend | ExecArgvRead | ExecFilenameRead | ExecExeWalk | ExecCwdWalk
            | ExecStdioRead | ExecNsRead | ExecShed => EventKind::Exec,
            ForkRead | ForkReserve | ForkShed => EventKind::Fork,
            ExitRead | ExitReserve | ExitShed => EventKind::Exit,
            FileFilterRead | FileSend | FilePathWalk => EventKind::FileOpen,
            LibFilterRead | LibSend | LibPathWalk => EventKind::LibraryLoad,
            ConnectRead | ConnectReserve => EventKind::Connect,
            SqlSend | SqlRead | HoldTableFull | HoldSend => EventKind::SqlQuery,
            FileChangeRead | FileChangeSend => EventKind::FileChange,
            PtraceReserve => EventKind::Ptrace,
            NamespaceSend | NamespaceRead => EventKind::Namespace,
            MountSend | MountRead => EventKind::Mount,
            UnixSend | UnixRead => EventKind::UnixConnect,
            ModuleSend | ModuleRead => EventKind::KernelModule,
            BpfReserve | BpfRead => EventKind::BpfLoad,
            IoUringReserve => EventKind::IoUring,
            SocketReserve => EventKind::Socket,
            TlsSend | TlsRead | TlsCount | TlsState => EventKind::Tls,
        })
    }

    /// The program (by its name in the object) the site is in.
    pub const fn program(self) -> &'static str {
        match self.kind() {
            None => "any",
            Some(EventKind::Exec) => "rasp_exec",
            Some(EventKind::Fork) => "rasp_fork",
            Some(EventKind::Exit) => "rasp_exit",
            Some(EventKind::FileOpen) => "rasp_file_open",
            Some(EventKind::LibraryLoad) => "rasp_library_load",
            Some(EventKind::Connect) => "rasp_connect",
            Some(EventKind::SqlQuery) => "rasp_pq_*",
            Some(EventKind::FileChange) => "rasp_file_change",
            Some(EventKind::Ptrace) => "rasp_ptrace",
            Some(EventKind::Namespace) => "rasp_namespace",
            Some(EventKind::Mount) => "rasp_mount",
            Some(EventKind::UnixConnect) => "rasp_unix_connect|rasp_connect",
            Some(EventKind::KernelModule) => "rasp_kernel_module",
            Some(EventKind::BpfLoad) => "rasp_bpf",
            Some(EventKind::IoUring) => "rasp_io_uring",
            Some(EventKind::Socket) => "rasp_socket",
            Some(EventKind::Tls) => "rasp_ssl_*",
        }
    }

    pub const fn effect(self) -> LossEffect {
        use LossSite::*;
        match self {
            ExecArgvRead | ExecFilenameRead | ExecExeWalk | ExecCwdWalk | FilePathWalk
            | LibPathWalk | SqlRead | HoldTableFull | HoldSend | FileChangeRead | NamespaceRead
            | MountRead | UnixRead | ModuleRead | BpfRead | ExecStdioRead | ExecNsRead
            | TlsRead => LossEffect::Incomplete,
            _ => LossEffect::Dropped,
        }
    }

    /// What went wrong, for people.
    pub const fn what(self) -> &'static str {
        use LossSite::*;
        match self {
            OffsetsUnset => "kernel offset table not filled",
            ScratchBusy => "per-CPU scratch buffer busy",
            ExecSend | FileSend | LibSend | SqlSend | FileChangeSend | NamespaceSend
            | MountSend | UnixSend | ModuleSend | TlsSend => "ring buffer full (output failed)",
            ForkReserve | ExitReserve | ConnectReserve | PtraceReserve | BpfReserve
            | IoUringReserve | SocketReserve => "ring buffer full (reserve failed)",
            ExecArgvRead => "argv read failed",
            ExecFilenameRead => "exec filename read failed",
            ExecExeWalk => "exe path walk failed",
            ExecCwdWalk => "cwd path walk failed",
            ForkRead => "child task read failed",
            ExitRead => "exiting task read failed",
            FileFilterRead | LibFilterRead => "pre-filter path walk failed",
            FilePathWalk | LibPathWalk => "path walk failed",
            ConnectRead => "socket address read failed",
            SqlRead => "query text read failed",
            HoldTableFull => "held-query table full: a flagged query ran unheld",
            HoldSend => "decision ring full: a flagged query ran unheld",
            ForkShed | ExitShed => "shed: ring buffer over half full (low-priority record)",
            ExecShed => "shed: ring buffer over three quarters full (exec of a known file)",
            FileChangeRead => "file change name or directory read failed",
            NamespaceRead => "namespace file path or caller namespaces read failed",
            MountRead => "mount source, target or type read failed",
            UnixRead => "socket path or working directory read failed",
            ModuleRead => "module file path or name read failed",
            BpfRead => "bpf attribute block read failed",
            ExecStdioRead => "new process's descriptor table read failed",
            ExecNsRead => "new process's namespaces read failed",
            TlsRead => "plaintext read failed",
            TlsCount => "byte count read failed",
            TlsState => "call or connection state not stored",
        }
    }

    pub const fn name(self) -> &'static str {
        use LossSite::*;
        match self {
            OffsetsUnset => "offsets_unset",
            ScratchBusy => "scratch_busy",
            ExecSend => "exec_send",
            ExecArgvRead => "exec_argv_read",
            ExecFilenameRead => "exec_filename_read",
            ExecExeWalk => "exec_exe_walk",
            ExecCwdWalk => "exec_cwd_walk",
            ForkRead => "fork_read",
            ForkReserve => "fork_reserve",
            ExitRead => "exit_read",
            ExitReserve => "exit_reserve",
            FileFilterRead => "file_filter_read",
            FileSend => "file_send",
            FilePathWalk => "file_path_walk",
            LibFilterRead => "lib_filter_read",
            LibSend => "lib_send",
            LibPathWalk => "lib_path_walk",
            ConnectRead => "connect_read",
            ConnectReserve => "connect_reserve",
            SqlSend => "sql_send",
            SqlRead => "sql_read",
            HoldTableFull => "hold_table_full",
            HoldSend => "hold_send",
            ForkShed => "fork_shed",
            ExitShed => "exit_shed",
            ExecShed => "exec_shed",
            FileChangeRead => "file_change_read",
            FileChangeSend => "file_change_send",
            PtraceReserve => "ptrace_reserve",
            NamespaceSend => "namespace_send",
            NamespaceRead => "namespace_read",
            MountSend => "mount_send",
            MountRead => "mount_read",
            UnixSend => "unix_send",
            UnixRead => "unix_read",
            ModuleSend => "module_send",
            ModuleRead => "module_read",
            BpfReserve => "bpf_reserve",
            BpfRead => "bpf_read",
            IoUringReserve => "io_uring_reserve",
            ExecStdioRead => "exec_stdio_read",
            ExecNsRead => "exec_ns_read",
            TlsSend => "tls_send",
            TlsRead => "tls_read",
            TlsCount => "tls_count",
            TlsState => "tls_state",
            SocketReserve => "socket_reserve",
        }
    }
}

const _: () = assert!((LossSite::ExecShed as u32) < LOSS_SLOTS);
const _: () = assert!((LossSite::ExecNsRead as u32) < LOSS_SLOTS);
const _: () = assert!((LossSite::SocketReserve as u32) < LOSS_SLOTS);
