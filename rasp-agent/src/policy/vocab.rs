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

/// The event a rule looks at: an event kind. `events::Kind` is the one definition of the
/// kinds and their names (policies, JSON and the CLI spell them alike); rules can name the
/// kinds in `EVENT_TYPES`, not those the agent only tracks or reports about itself (fork,
/// exit, agent_health).
pub use crate::events::Kind as EventType;

/// The event types policies can name (`event:`), in the order errors list them.
pub const EVENT_TYPES: [EventType; 16] = [
    EventType::Exec,
    EventType::FileOpen,
    EventType::Connect,
    EventType::LibraryLoad,
    EventType::SqlQuery,
    EventType::FileChange,
    EventType::Ptrace,
    EventType::Namespace,
    EventType::Mount,
    EventType::UnixConnect,
    EventType::KernelModule,
    EventType::BpfLoad,
    EventType::IoUring,
    EventType::Socket,
    EventType::Tls,
    EventType::Http,
];

/// What `tls_finding` can name: secrets and personal data in plaintext leaving a process
/// (the masking layer's kinds recognised by their own format, `mask::SecretKind`; a test
/// keeps the lists equal).
pub const TLS_FINDINGS: &[&str] = &[
    "aws_access_key_id",
    "aws_secret_key",
    "private_key",
    "jwt",
    "authorization_header",
    "github_token",
    "slack_token",
    "google_api_key",
    "stripe_key",
    "url_credentials",
    "payment_card",
    "iban",
];

/// What `http_finding` can name: the HTTP stage's findings (`detect::http`; a test keeps
/// the lists equal). `sql_injection_confirmed` is a request's value seen changing a query's
/// structure; the others are tell-tales in the request itself, and a login flood.
pub const HTTP_FINDINGS: &[&str] = &[
    "admin_path",
    "sql_injection",
    "path_traversal",
    "command_injection",
    "login_flood",
    "sql_injection_confirmed",
];

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
