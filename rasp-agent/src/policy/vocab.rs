//! The words policies are written in, shared by the policy engine, detections and the CLI.

use serde::{Deserialize, Serialize};

/// Whether a rule's action is taken (`enforce`) or only reported (`audit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Audit,
    Enforce,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

/// What a matching rule does in enforce mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Report only, whatever the mode.
    Alert,
    /// Refuse the operation (kernel deny where available).
    Block,
    /// Kill the process.
    Kill,
    /// Cut the workload off: network deny and freeze of its cgroup.
    Quarantine,
}

/// What a `kill` action kills.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillScope {
    /// The process that did it.
    #[default]
    Process,
    /// Its whole process group: a pipeline like `sh -i | nc` dies together.
    ProcessGroup,
    /// Every process of its container (`cgroup.kill` of its cgroup).
    Container,
}

impl KillScope {
    pub fn name(self) -> &'static str {
        match self {
            KillScope::Process => "process",
            KillScope::ProcessGroup => "process-group",
            KillScope::Container => "container",
        }
    }
}

/// What a `quarantine` action does to the workload after cutting its network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineMode {
    /// `cgroup.freeze`: every process stops where it is, kept for forensics.
    #[default]
    Freeze,
    /// `cgroup.kill`: every process dies.
    Kill,
}

/// The event a rule looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Exec,
    FileOpen,
    Connect,
    LibraryLoad,
    /// A query sent through libpq, with the SQL analyzer's findings.
    SqlQuery,
    /// chmod, setxattr, unlink, rmdir, rename, truncate, utimes, symlink, link.
    FileChange,
    /// ptrace attach/seize/poke, process_vm_readv/writev.
    Ptrace,
    /// setns, unshare.
    Namespace,
    /// mount, fsopen.
    Mount,
    /// connect to an AF_UNIX socket path.
    UnixConnect,
    /// init_module, finit_module, delete_module.
    KernelModule,
    /// bpf(BPF_PROG_LOAD).
    BpfLoad,
    /// A request submitted through io_uring.
    IoUring,
}

impl EventType {
    /// Every event type with its name in policies (`event:`) and events.
    pub const ALL: [(&'static str, EventType); 13] = [
        ("exec", EventType::Exec),
        ("file_open", EventType::FileOpen),
        ("connect", EventType::Connect),
        ("library_load", EventType::LibraryLoad),
        ("sql_query", EventType::SqlQuery),
        ("file_change", EventType::FileChange),
        ("ptrace", EventType::Ptrace),
        ("namespace", EventType::Namespace),
        ("mount", EventType::Mount),
        ("unix_connect", EventType::UnixConnect),
        ("kernel_module", EventType::KernelModule),
        ("bpf_load", EventType::BpfLoad),
        ("io_uring", EventType::IoUring),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, e)| *e == self)
            .map_or("?", |(n, _)| n)
    }

    /// What `operation:` may name for this event type; `None`: the event has no operation.
    pub fn operations(self) -> Option<Vec<&'static str>> {
        use crate::events::hooks::{self, ChangeOp, ModuleOp, MountOp, Named, NsOp, PtraceOp};
        Some(match self {
            EventType::FileChange => ChangeOp::names(),
            EventType::Ptrace => PtraceOp::names(),
            EventType::Namespace => NsOp::names(),
            EventType::Mount => MountOp::names(),
            EventType::KernelModule => ModuleOp::names(),
            EventType::IoUring => hooks::IO_URING_OPS.to_vec(),
            _ => return None,
        })
    }
}

/// What `sql_finding` can name: the SQL analyzer's finding kinds (`detect::sql`, a test
/// there keeps the lists equal) and `injection`, its verdict that the findings together
/// make the query an injection.
pub const SQL_FINDINGS: &[&str] = &[
    "injection",
    "tautology",
    "union_extraction",
    "stacked_statement",
    "comment_truncation",
    "time_based",
    "error_based",
    "catalog_probe",
    "file_access",
    "obfuscation",
    "inline_query",
    "malformed",
    "foreign_dialect",
];

/// What `sql_statement` can name: the SQL analyzer's statement kinds (`detect::sql`,
/// `StatementKind::name`; a test keeps the lists equal). `ddl` is CREATE, ALTER, DROP,
/// TRUNCATE, GRANT, REVOKE, COMMENT; `transaction` BEGIN/COMMIT/ROLLBACK/SAVEPOINT;
/// `session` SET/RESET/SHOW.
pub const SQL_STATEMENTS: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "merge",
    "ddl",
    "copy",
    "transaction",
    "session",
    "do",
    "call",
    "explain",
    "other",
];

impl Action {
    /// What the action does, for "would ..." in audit mode and simulation.
    pub fn effect(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Block => "block",
            Action::Kill => "kill the process",
            Action::Quarantine => "quarantine the workload",
        }
    }
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}
