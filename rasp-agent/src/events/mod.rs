//! Events: the owned, typed form of what the kernel reported. `decode` is the only place
//! that reads raw record bytes; `reader` drains the ring buffer; `hub` keeps the recent
//! events, counts them per kind and fans them out to live followers.

pub mod decode;
pub mod health;
pub mod hooks;
pub mod hub;
pub mod latency;
pub mod reader;
pub mod tls;
pub mod values;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use decode::{decode, BootClock, DecodeError};
pub use hooks::{
    BpfLoadDetail, FdKind, FileChangeDetail, IoUringDetail, KernelModuleDetail, MountDetail,
    NamespaceDetail, PtraceDetail, SocketDetail, StdioFd, UnixConnectDetail,
};
pub use hub::EventHub;
pub use tls::{Direction, Endpoints, Finding, HttpDetail, HttpMessageKind, Plaintext, TlsDetail};
pub use values::{
    Access, Argv, Comm, ContainerIdentity, Family, Runtime, SqlFunction, Text, WallTime,
};

/// One thing a process did, as the kernel saw it, enriched with its cgroup path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock time (RFC 3339 in JSON), from the boot-time timestamp.
    pub time: WallTime,
    /// CLOCK_BOOTTIME nanoseconds from the kernel.
    pub ts_boot_ns: u64,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Effective ids and capabilities (`None`: the kernel could not read the credentials).
    /// An euid other than the uid is a setuid/setgid transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub euid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_effective: Option<u64>,
    /// The process's start (CLOCK_BOOTTIME ns, 0 when unknown): with `pid`, its exec id,
    /// which a reused pid does not share.
    #[serde(default)]
    pub start_ns: u64,
    pub comm: Comm,
    pub cgroup_id: u64,
    /// Path inside the cgroup2 hierarchy ("/system.slice/x.service"), when resolvable.
    pub cgroup: Option<Text>,
    /// What a kernel program did to the act, and for which rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<KernelVerdict>,
    /// The container (and pod) of a process in one, shared by every event of its cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<std::sync::Arc<ContainerIdentity>>,
    #[serde(flatten)]
    pub detail: EventDetail,
}

/// A kernel program acted on the event itself (`rasp_common::deny`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KernelVerdict {
    pub action: KernelAction,
    /// The deciding rule's slot (`rasp_common::deny::rule_slot`): its policy set generation
    /// and index in that set's kernel rule table.
    pub rule_slot: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelAction {
    /// BPF-LSM refused it (-EPERM): it did not happen, the process lives.
    LsmDenied,
    /// A cgroup socket hook refused the connect or send (EPERM).
    CgroupDenied,
    /// The exec went through but the process was killed before the new program ran.
    KilledAtExec,
    /// The call completed; the process was killed before it returned to user space.
    KilledAtSyscall,
    /// Refused because the process's cgroup is quarantined.
    Quarantined,
}

impl KernelAction {
    pub fn from_kernel(v: u32) -> Option<KernelAction> {
        use rasp_common::deny::*;
        Some(match v {
            VERDICT_LSM_DENIED => KernelAction::LsmDenied,
            VERDICT_CGROUP_DENIED => KernelAction::CgroupDenied,
            VERDICT_KILLED_AT_EXEC => KernelAction::KilledAtExec,
            VERDICT_KILLED_AT_SYSCALL => KernelAction::KilledAtSyscall,
            VERDICT_QUARANTINED => KernelAction::Quarantined,
            _ => return None,
        })
    }

    /// Did the act itself not happen?
    pub fn prevented(self) -> bool {
        !matches!(self, KernelAction::KilledAtSyscall)
    }

    /// What happened, in words, for detections.
    pub fn describe(self) -> &'static str {
        match self {
            KernelAction::LsmDenied => "refused in the kernel by BPF-LSM (EPERM); the process lives",
            KernelAction::CgroupDenied => "refused in the kernel by the cgroup socket hook (EPERM); nothing was sent",
            KernelAction::KilledAtExec => "stopped in the kernel at exec: the process was killed before the new program ran an instruction (no BPF-LSM on this kernel)",
            KernelAction::KilledAtSyscall => "the call completed, then the process was killed in the kernel before it returned to user space (no BPF-LSM on this kernel: the act itself happened)",
            KernelAction::Quarantined => "refused in the kernel: the process's cgroup is quarantined",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventDetail {
    Exec(ExecDetail),
    Fork(ForkDetail),
    Exit(ExitDetail),
    FileOpen(FileOpenDetail),
    LibraryLoad(LibraryLoadDetail),
    Connect(ConnectDetail),
    SqlQuery(SqlQueryDetail),
    FileChange(FileChangeDetail),
    Ptrace(PtraceDetail),
    Namespace(NamespaceDetail),
    Mount(MountDetail),
    UnixConnect(UnixConnectDetail),
    KernelModule(KernelModuleDetail),
    BpfLoad(BpfLoadDetail),
    IoUring(IoUringDetail),
    /// A packet or raw IP socket was created.
    Socket(SocketDetail),
    /// Plaintext an application read from or wrote to OpenSSL.
    Tls(TlsDetail),
    /// Not from the kernel: what the HTTP stage found on a TLS connection.
    Http(HttpDetail),
    /// Not from the kernel: the agent's own health (sustained event losses), so that a
    /// blind spot reaches the journal and exports like any detection.
    AgentHealth(AgentHealthDetail),
}

/// What the agent noticed about itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AgentHealthDetail {
    /// "event_loss" (kernel-side drops) or "journal_write_failed".
    pub problem: String,
    /// Events lost or damaged in the interval, per place ("exec_send: ring buffer full
    /// (output failed), line 182"), and how many.
    pub losses: Vec<(String, u64)>,
    /// The interval the counts cover, in seconds.
    pub interval_secs: u64,
}

/// A query an application handed to libpq. Equality and hashing (what folds repeated
/// detections) leave out `held` and `new_shape`: how this one occurrence was handled, not
/// what the query was.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SqlQueryDetail {
    /// `PQsendQuery`, `PQsendQueryParams` or `PQsendPrepare`.
    pub function: SqlFunction,
    /// The `PGconn *` (as a number): the connection the query goes out on.
    pub conn: u64,
    pub query: String,
    /// Longer than the capture bound (`limits::SQL_QUERY_CAP`): `query` is its start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The text could not be read (or was a null pointer).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
    /// The kernel's pre-check flagged it and stopped the thread until the agent decided
    /// (`enforce::hold`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// Set once the SQL analyzer has judged the query; then `findings` are its finding
    /// names (`policy::vocab::SQL_FINDINGS`, `injection` for its verdict) and
    /// `score_permille` its injection score.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub analyzed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_permille: Option<u16>,
    /// The query's shape (literals normalised) as a stable 64-bit hash, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<String>,
    /// Statement kinds (`policy::vocab::SQL_STATEMENTS`), tables and functions the
    /// analyzer found, names normalised (unquoted ones lowercased).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statements: Vec<Text>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<Text>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<Text>,
    /// Set when this service (its container, or its executable outside containers) had
    /// never sent a query of this shape before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_shape: Option<NewShape>,
}

/// A query shape never seen from its service before.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NewShape {
    /// `container:<id>` or `exe:<path>`.
    pub service: Text,
    /// How long the agent had seen the service send queries (a policy's learning window is
    /// over when this reaches it).
    pub service_age_ms: u64,
}

/// Equality and hashing leave out `exe_new`: it says whether the kernel had reported the
/// file before (for the uprobe task), not what happened, so two execs of one program fold
/// together whichever came first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecDetail {
    /// The executable actually mapped (the interpreter for `#!` scripts), as the process
    /// sees it from its own root.
    pub exe: Option<Text>,
    /// The name passed to execve, possibly relative or a symlink.
    pub filename: String,
    pub argv: Argv,
    /// argv was longer than the capture bound (`rasp_common::limits::ARGV_CAP`).
    pub argv_truncated: bool,
    pub cwd: Option<Text>,
    /// BPF-LSM refused the exec: the process kept its old image (argv was not read).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// Fields the kernel could not read completely ("exe", "cwd", "argv", "filename").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
    /// Descriptors 0, 1 and 2 as the new image starts (stdin, stdout, stderr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdio: Option<[StdioFd; 3]>,
    /// The new process's PID and mount namespaces (inode numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mnt_ns: Option<u32>,
    /// When stdin is a pipe: the process that writes into it, as far as the agent saw it
    /// start (its exec put the same pipe on its stdout). Filled by the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_peer: Option<Peer>,
    /// The program whose output the parent had just read itself, through a command
    /// substitution (`bash -c "$(curl …)"`): the parent's latest child whose stdout was a
    /// pipe no process took as its stdin, seen shortly before. Filled by the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substituted_from: Option<Peer>,
    /// The program that named this executable as its output (`cc -o …`) shortly before,
    /// when the agent saw it run. Filled by the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_by: Option<Text>,
    /// The executable's file was new to the kernel's seen-files map (or is a uprobe target):
    /// the uprobe task inspects it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exe_new: bool,
}

/// Another process an event is linked to (the writer of a shell's stdin pipe).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Peer {
    pub pid: u32,
    pub exe: Option<Text>,
    pub argv: Argv,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ForkDetail {
    /// Thread of the parent that called fork/clone.
    pub parent_tid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExitDetail {
    /// exit(2) status, when the process exited normally.
    pub exit_code: Option<i32>,
    /// Terminating signal, when it was killed.
    pub signal: Option<i32>,
    pub core_dumped: bool,
}

impl ExitDetail {
    /// From the kernel's `task->exit_code` (the wait(2) status word).
    pub fn from_wait_status(status: u32) -> Self {
        let signal = status & 0x7f;
        if signal == 0 {
            ExitDetail {
                exit_code: Some(((status >> 8) & 0xff) as i32),
                signal: None,
                core_dumped: false,
            }
        } else {
            ExitDetail {
                exit_code: None,
                signal: Some(signal as i32),
                core_dumped: status & 0x80 != 0,
            }
        }
    }
}

/// A successful open that the kernel pre-filter let through (some rule may care about it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileOpenDetail {
    /// The opened file as the process sees it from its own root (symlinks resolved; a path
    /// that did not reach the root starts with "..."). `None` if it could not be read.
    pub path: Option<String>,
    /// The descriptor the open returned.
    pub fd: i32,
    /// The flags the caller passed (`O_*`, raw), including O_CREAT/O_TRUNC/O_EXCL; `None`
    /// when they could not be read. For creat(2): O_CREAT|O_WRONLY|O_TRUNC.
    pub flags: Option<u32>,
    /// The open file's `f_flags` (raw): access mode and status flags as the kernel keeps
    /// them, without O_CREAT/O_EXCL/O_NOCTTY/O_TRUNC, which it clears.
    pub file_flags: u32,
    /// What the open granted and did: "read", "write" (from the file's mode), "create" (this
    /// open created the file), "truncate" (O_TRUNC with write access; only known when
    /// `flags` is).
    pub access: Access,
    /// Fields the kernel could not read completely ("path", "flags").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
}

/// A file mapped executable from a descriptor: a shared library loaded by ld.so or dlopen.
/// The main executable and ld.so are mapped by the kernel at exec and do not appear.
/// Equality and hashing leave out `new_file`, as `ExecDetail` leaves out `exe_new`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LibraryLoadDetail {
    /// As in `FileOpenDetail::path`.
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
    /// The file as the kernel names it (`dev` is the kernel's `dev_t`); 0 when unreadable.
    #[serde(default)]
    pub dev: u32,
    #[serde(default)]
    pub ino: u64,
    /// First executable mapping of this file the kernel reported (or a uprobe target's):
    /// sent for the uprobe task whether or not a rule wants library loads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_file: bool,
}

impl SqlQueryDetail {
    /// A query as the application handed it over: read whole, not held, not analyzed yet.
    pub fn sent(function: SqlFunction, conn: u64, query: String) -> SqlQueryDetail {
        SqlQueryDetail {
            function,
            conn,
            query,
            truncated: false,
            unreadable: false,
            held: false,
            analyzed: false,
            findings: Vec::new(),
            score_permille: None,
            shape: None,
            statements: Vec::new(),
            tables: Vec::new(),
            functions: Vec::new(),
            new_shape: None,
        }
    }

    fn key(&self) -> impl PartialEq + std::hash::Hash + '_ {
        (
            (
                self.function,
                self.conn,
                &self.query,
                self.truncated,
                self.unreadable,
            ),
            (
                self.analyzed,
                &self.findings,
                self.score_permille,
                &self.shape,
            ),
            (&self.statements, &self.tables, &self.functions),
        )
    }
}

impl PartialEq for SqlQueryDetail {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for SqlQueryDetail {}

impl std::hash::Hash for SqlQueryDetail {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl ExecDetail {
    fn key(&self) -> impl PartialEq + std::hash::Hash + '_ {
        (
            &self.exe,
            &self.filename,
            &self.argv,
            self.argv_truncated,
            &self.cwd,
            &self.incomplete,
            (
                &self.stdio,
                self.pid_ns,
                self.mnt_ns,
                &self.stdin_peer,
                &self.substituted_from,
                &self.built_by,
            ),
        )
    }
}

impl PartialEq for ExecDetail {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ExecDetail {}

impl std::hash::Hash for ExecDetail {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl LibraryLoadDetail {
    fn key(&self) -> impl PartialEq + std::hash::Hash + '_ {
        (&self.path, &self.incomplete, self.dev, self.ino)
    }
}

impl PartialEq for LibraryLoadDetail {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for LibraryLoadDetail {}

impl std::hash::Hash for LibraryLoadDetail {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

/// A connect(2) *attempt* to an IPv4/IPv6 destination, seen at syscall entry: whether it
/// succeeded is unknown (non-blocking connects complete later, refused ones fail).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectDetail {
    /// "inet" or "inet6" (the socket's address family; a v4-mapped v6 destination stays
    /// "inet6" with an `::ffff:a.b.c.d` address).
    pub family: Family,
    #[serde(with = "values::ip_text")]
    pub addr: IpAddr,
    pub port: u16,
    pub fd: i32,
}

impl ConnectDetail {
    /// The destination, with v4-mapped IPv6 addresses as the IPv4 they are.
    pub fn dest(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.addr.to_canonical(), self.port)
    }
}

/// Event kinds as named on the command line, in JSON and in policies (`policy::vocab::EventType`).
/// (Plain comments on the variants: doc comments would become `--kind` help text.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Kind {
    Exec,
    Fork,
    Exit,
    FileOpen,
    LibraryLoad,
    Connect,
    // A query sent through libpq, with the SQL analyzer's findings.
    SqlQuery,
    // chmod, setxattr, unlink, rmdir, rename, truncate, utimes, symlink, link.
    FileChange,
    // ptrace attach/seize/poke, process_vm_readv/writev.
    Ptrace,
    // setns, unshare.
    Namespace,
    // mount, fsopen.
    Mount,
    // connect to an AF_UNIX socket path.
    UnixConnect,
    // init_module, finit_module, delete_module.
    KernelModule,
    // bpf(BPF_PROG_LOAD).
    BpfLoad,
    // A request submitted through io_uring.
    IoUring,
    // Plaintext read from or written to OpenSSL, with what the HTTP stage found in it.
    Tls,
    // An HTTP message on a TLS connection (or a request linked to a query), with findings.
    Http,
    // What the agent reports about itself (lost events, a failing journal).
    AgentHealth,
    // A packet (AF_PACKET) or raw IP socket created: sniffing, packet crafting.
    Socket,
}

impl Kind {
    /// Kinds the kernel sends without waking the reader (`quiet_flags` in the eBPF
    /// programs): the high-volume process, query and plaintext records, which may wait for
    /// the reader's deadline (`reader::DEADLINE`).
    pub fn is_bulk(self) -> bool {
        matches!(
            self,
            Kind::Exec | Kind::Fork | Kind::Exit | Kind::SqlQuery | Kind::Tls
        )
    }

    pub const ALL: [Kind; 19] = [
        Kind::Exec,
        Kind::Fork,
        Kind::Exit,
        Kind::FileOpen,
        Kind::LibraryLoad,
        Kind::Connect,
        Kind::SqlQuery,
        Kind::FileChange,
        Kind::Ptrace,
        Kind::Namespace,
        Kind::Mount,
        Kind::UnixConnect,
        Kind::KernelModule,
        Kind::BpfLoad,
        Kind::IoUring,
        Kind::Tls,
        Kind::Http,
        Kind::AgentHealth,
        Kind::Socket,
    ];

    pub fn name(self) -> &'static str {
        match self.kernel_kind() {
            Some(k) => k.name(),
            None if self == Kind::Http => "http",
            None => "agent_health",
        }
    }

    /// The operations events of this kind name (what a policy's `operation:` may name);
    /// `None`: the kind has no operation.
    pub fn operations(self) -> Option<Vec<&'static str>> {
        use hooks::{ChangeOp, ModuleOp, MountOp, Named, NsOp, PtraceOp};
        Some(match self {
            Kind::FileChange => ChangeOp::names(),
            Kind::Ptrace => PtraceOp::names(),
            Kind::Namespace => NsOp::names(),
            Kind::Mount => MountOp::names(),
            Kind::KernelModule => ModuleOp::names(),
            Kind::IoUring => hooks::IO_URING_OPS.to_vec(),
            Kind::Socket => hooks::SocketOp::names(),
            _ => return None,
        })
    }

    /// Position in `ALL` (and in per-kind counter arrays sized `ALL.len()`).
    pub fn index(self) -> usize {
        match self {
            Kind::Exec => 0,
            Kind::Fork => 1,
            Kind::Exit => 2,
            Kind::FileOpen => 3,
            Kind::LibraryLoad => 4,
            Kind::Connect => 5,
            Kind::SqlQuery => 6,
            Kind::FileChange => 7,
            Kind::Ptrace => 8,
            Kind::Namespace => 9,
            Kind::Mount => 10,
            Kind::UnixConnect => 11,
            Kind::KernelModule => 12,
            Kind::BpfLoad => 13,
            Kind::IoUring => 14,
            Kind::Tls => 15,
            Kind::Http => 16,
            Kind::AgentHealth => 17,
            Kind::Socket => 18,
        }
    }

    /// The kernel record kind; `None` for what the agent reports about itself.
    fn kernel_kind(self) -> Option<rasp_common::EventKind> {
        use rasp_common::EventKind as K;
        Some(match self {
            Kind::Exec => K::Exec,
            Kind::Fork => K::Fork,
            Kind::Exit => K::Exit,
            Kind::FileOpen => K::FileOpen,
            Kind::LibraryLoad => K::LibraryLoad,
            Kind::Connect => K::Connect,
            Kind::SqlQuery => K::SqlQuery,
            Kind::FileChange => K::FileChange,
            Kind::Ptrace => K::Ptrace,
            Kind::Namespace => K::Namespace,
            Kind::Mount => K::Mount,
            Kind::UnixConnect => K::UnixConnect,
            Kind::KernelModule => K::KernelModule,
            Kind::BpfLoad => K::BpfLoad,
            Kind::IoUring => K::IoUring,
            Kind::Socket => K::Socket,
            Kind::Tls => K::Tls,
            Kind::Http | Kind::AgentHealth => return None,
        })
    }

    /// The userspace kind of a kernel record kind.
    pub fn from_kernel(kind: rasp_common::EventKind) -> Kind {
        use rasp_common::EventKind as K;
        match kind {
            K::Exec => Kind::Exec,
            K::Fork => Kind::Fork,
            K::Exit => Kind::Exit,
            K::FileOpen => Kind::FileOpen,
            K::LibraryLoad => Kind::LibraryLoad,
            K::Connect => Kind::Connect,
            K::SqlQuery => Kind::SqlQuery,
            K::FileChange => Kind::FileChange,
            K::Ptrace => Kind::Ptrace,
            K::Namespace => Kind::Namespace,
            K::Mount => Kind::Mount,
            K::UnixConnect => Kind::UnixConnect,
            K::KernelModule => Kind::KernelModule,
            K::BpfLoad => Kind::BpfLoad,
            K::IoUring => Kind::IoUring,
            K::Socket => Kind::Socket,
            K::Tls => Kind::Tls,
        }
    }
}

impl Event {
    /// An event of process `pid` (its only thread, child of `ppid`) with nothing else known:
    /// time 0, root's ids, no credentials, cgroup, container or verdict. What the agent
    /// reports about itself and what tests make start here, setting what they know with
    /// `Event { .., ..Event::new(..) }`.
    pub fn new(pid: u32, ppid: u32, detail: EventDetail) -> Event {
        Event {
            time: WallTime::default(),
            ts_boot_ns: 0,
            pid,
            tid: pid,
            ppid,
            uid: 0,
            gid: 0,
            euid: None,
            egid: None,
            cap_effective: None,
            start_ns: 0,
            comm: Comm::default(),
            cgroup_id: 0,
            cgroup: None,
            verdict: None,
            container: None,
            detail,
        }
    }

    pub fn kind(&self) -> Kind {
        match self.detail {
            EventDetail::Exec(_) => Kind::Exec,
            EventDetail::Fork(_) => Kind::Fork,
            EventDetail::Exit(_) => Kind::Exit,
            EventDetail::FileOpen(_) => Kind::FileOpen,
            EventDetail::LibraryLoad(_) => Kind::LibraryLoad,
            EventDetail::Connect(_) => Kind::Connect,
            EventDetail::SqlQuery(_) => Kind::SqlQuery,
            EventDetail::FileChange(_) => Kind::FileChange,
            EventDetail::Ptrace(_) => Kind::Ptrace,
            EventDetail::Namespace(_) => Kind::Namespace,
            EventDetail::Mount(_) => Kind::Mount,
            EventDetail::UnixConnect(_) => Kind::UnixConnect,
            EventDetail::KernelModule(_) => Kind::KernelModule,
            EventDetail::BpfLoad(_) => Kind::BpfLoad,
            EventDetail::IoUring(_) => Kind::IoUring,
            EventDetail::Socket(_) => Kind::Socket,
            EventDetail::Tls(_) => Kind::Tls,
            EventDetail::Http(_) => Kind::Http,
            EventDetail::AgentHealth(_) => Kind::AgentHealth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decodes_exit_and_signal() {
        assert_eq!(
            ExitDetail::from_wait_status(7 << 8),
            ExitDetail {
                exit_code: Some(7),
                signal: None,
                core_dumped: false
            }
        );
        assert_eq!(
            ExitDetail::from_wait_status(9),
            ExitDetail {
                exit_code: None,
                signal: Some(9),
                core_dumped: false
            }
        );
        assert_eq!(
            ExitDetail::from_wait_status(0x80 | 11),
            ExitDetail {
                exit_code: None,
                signal: Some(11),
                core_dumped: true
            }
        );
    }

    #[test]
    fn kinds_agree_with_the_kernel_and_serde() {
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
            if let Some(kernel) = k.kernel_kind() {
                assert_eq!(Kind::from_kernel(kernel), *k);
            }
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, k.name(), "CLI/JSON name and kernel name agree");
            let parsed = <Kind as clap::ValueEnum>::from_str(k.name(), false).unwrap();
            assert_eq!(parsed, *k);
        }
    }

    #[test]
    fn discovery_flags_do_not_make_events_different() {
        let exec = |exe_new| ExecDetail {
            exe: Some("/tmp/x".into()),
            filename: "/tmp/x".into(),
            argv: ["/tmp/x"].into(),
            argv_truncated: false,
            cwd: None,
            refused: false,
            incomplete: Vec::new(),
            exe_new,
            ..ExecDetail::default()
        };
        assert_eq!(exec(true), exec(false));
        let hash = |d: &ExecDetail| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            d.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&exec(true)), hash(&exec(false)));
        let mut other = exec(false);
        other.argv = ["/tmp/x", "-v"].into();
        assert_ne!(exec(false), other);
        // The JSON still says it.
        assert_eq!(serde_json::to_value(exec(true)).unwrap()["exe_new"], true);
    }

    #[test]
    fn connect_dest_unmaps_v4_mapped_addresses() {
        let d = ConnectDetail {
            family: Family::Inet6,
            addr: "::ffff:169.254.169.254".parse().unwrap(),
            port: 80,
            fd: 3,
        };
        assert_eq!(d.dest().to_string(), "169.254.169.254:80");
        let d = ConnectDetail {
            family: Family::Inet6,
            addr: "2001:db8::1".parse().unwrap(),
            port: 443,
            fd: 3,
        };
        assert_eq!(d.dest().to_string(), "[2001:db8::1]:443");
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["addr"], "2001:db8::1");
        assert_eq!(json["family"], "inet6");
    }

    #[test]
    fn event_json_round_trips_with_kind_tag() {
        let ev = Event {
            time: WallTime(1_767_225_600_000_000_000),
            ts_boot_ns: 1,
            pid: 10,
            tid: 10,
            ppid: 1,
            uid: 0,
            gid: 0,
            euid: Some(0),
            egid: None,
            cap_effective: Some(u64::MAX >> 23),
            start_ns: 77,
            comm: Comm::new("sh"),
            cgroup_id: 1,
            cgroup: Some("/".into()),
            verdict: None,
            container: None,
            detail: EventDetail::Exit(ExitDetail {
                exit_code: Some(3),
                signal: None,
                core_dumped: false,
            }),
        };
        let json = serde_json::to_value(&ev).expect("serializes");
        assert_eq!(json["kind"], "exit");
        assert_eq!(json["exit_code"], 3);
        let back: Event = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, ev);
    }
}
