//! The socket protocol, shared by the server and the CLI: one JSON object per line each way.
//! A request is `{"cmd": ...}`; a reply is `{"ok": true, ...}` or `{"ok": false, "error": ...}`.
//! After a `follow` reply the server streams `{"event": {...}}` and `{"lost": N}` lines.

use std::{collections::BTreeMap, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::{
    detect::Detection,
    events::{latency::LatencyReport, Event, Kind},
    loader::{LsmStatus, ProgramStatus},
    policy::{active::PolicySetSummary, vocab::Severity},
    process::{cgroup::CgroupStats, container::ContainerEntry, container::ContainerStats, Process},
    store::StoreStats,
};

/// Longest request line the server reads; longer ones get an error reply.
/// (Policy sets travel in one request, hence the size.)
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// The same for `--socket-group` members, who cannot send policy sets.
pub const MAX_READER_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status {},
    Events {
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        kind: Option<Kind>,
        #[serde(default)]
        pid: Option<u32>,
        /// Most recent N (without `follow`); the server's buffer size when absent.
        #[serde(default)]
        limit: Option<usize>,
    },
    Processes {},
    Containers {},
    Detections {
        #[serde(default)]
        follow: bool,
        /// RFC 3339 time, or a duration ago such as "10m", "2h".
        #[serde(default)]
        since: Option<String>,
        #[serde(default)]
        severity: Option<Severity>,
        #[serde(default)]
        rule: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    },
    PolicyList {},
    /// Validate `files` as one complete set and make it active, or change nothing.
    PolicyApply {
        files: Vec<PolicyFile>,
    },
    PolicyRollback {},
    /// Cgroups under quarantine.
    QuarantineList {},
    /// Lift a quarantine: restore the cgroup's network and thaw it (root only).
    QuarantineRelease {
        /// The cgroup's path in the cgroup2 hierarchy, or its id, as `QuarantineList` shows.
        cgroup: String,
    },
}

impl Request {
    /// The `cmd` name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status {} => "status",
            Request::Events { .. } => "events",
            Request::Processes {} => "processes",
            Request::Containers {} => "containers",
            Request::Detections { .. } => "detections",
            Request::PolicyList {} => "policy_list",
            Request::PolicyApply { .. } => "policy_apply",
            Request::PolicyRollback {} => "policy_rollback",
            Request::QuarantineList {} => "quarantine_list",
            Request::QuarantineRelease { .. } => "quarantine_release",
        }
    }

    /// Requests that change what the agent enforces or detects: root only. Everything else
    /// only reads (and what it returns has passed the masking layer).
    pub fn changes_state(&self) -> bool {
        match self {
            Request::PolicyApply { .. }
            | Request::PolicyRollback {}
            | Request::QuarantineRelease { .. } => true,
            Request::Status {}
            | Request::Events { .. }
            | Request::Processes {}
            | Request::Containers {}
            | Request::Detections { .. }
            | Request::PolicyList {}
            | Request::QuarantineList {} => false,
        }
    }
}

/// A policy file sent by the CLI: its name (for error positions) and its text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyFile {
    pub name: String,
    pub text: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Arc<Event>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<Process>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<ContainerEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detections: Option<Vec<Arc<Detection>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<PolicyListing>,
    /// Every problem found in a rejected policy set, "file:line:column: message".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_errors: Option<Vec<String>>,
    /// Set on the reply that starts a live stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantines: Option<Vec<crate::enforce::Quarantined>>,
}

impl Reply {
    pub fn error(msg: impl Into<String>) -> Self {
        Reply {
            ok: false,
            error: Some(msg.into()),
            ..Default::default()
        }
    }
}

/// One line of a live stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamItem {
    Event(Arc<Event>),
    Detection(Arc<Detection>),
    /// This client fell behind and missed this many items.
    Lost(u64),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub agent_version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub kernel_release: String,
    pub lsm: LsmStatus,
    pub programs: Vec<ProgramStatus>,
    pub ring_buffer_bytes: u32,
    /// Per event kind: received by the agent, dropped in the kernel (ring buffer full, or a
    /// read the pre-filter needed failed), and records sent with a field the kernel could not
    /// read. `losses` says where.
    pub events: BTreeMap<String, KindStats>,
    /// Records the agent could not decode.
    pub decode_errors: u64,
    pub event_buffer: usize,
    pub followers: usize,
    pub processes: ProcessStats,
    pub cgroup2_mount: String,
    /// cgroup ids resolved to paths, and how.
    #[serde(default)]
    pub cgroups: CgroupStats,
    /// Containers known by cgroup, and the runtime lookups that name them.
    #[serde(default)]
    pub containers: ContainerStats,
    pub socket: String,
    pub state_dir: String,
    /// What the agent did to or noticed about its environment at start.
    pub environment: Vec<String>,
    pub policy_set_version: u64,
    pub policy_source: String,
    /// Why the last reload was refused (the previous set stayed active); empty when fine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_reload_errors: Vec<String>,
    pub detections: StoreStats,
    /// Kernel→dequeue latency of every event and kernel→decision latency of every detection,
    /// since start (percentiles, and raw bucket counts a client can diff between snapshots).
    #[serde(default)]
    pub latency: LatencyReport,
    /// Where the kernel side lost or damaged events: every site with a count since load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub losses: Vec<LossReport>,
    /// The event pipeline's health: `running`, or why it stopped (the agent then exits).
    #[serde(default)]
    pub pipeline: String,
    /// The Prometheus endpoint's address.
    #[serde(default)]
    pub metrics_addr: String,
    /// libpq/OpenSSL files found by their symbols, with the probes attached to each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uprobe_targets: Vec<crate::loader::uprobe::attach::UprobeTargetReport>,
    /// Per analyzer (`sql`): work queued, dropped because its queue was full, done.
    #[serde(default)]
    pub analyzers: BTreeMap<String, crate::detect::analyzer::AnalyzerStats>,
    /// What this kernel lets the agent enforce, and per enforce-mode `block` rule what
    /// enforcing it does here.
    #[serde(default)]
    pub enforcement: EnforcementReport,
    /// Hold and decide on libpq: whether it runs, its watchdog, the processes under hold.
    #[serde(default)]
    pub sql_hold: SqlHoldReport,
    /// The OpenSSL plaintext capture: its bounds and what they did since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_capture: Option<crate::loader::tls::CaptureStats>,
    /// The HTTP stage on that plaintext: connections followed, messages, taint links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_stage: Option<crate::detect::http::stage::StageStats>,
    /// Export sinks: delivered, retried, refused, journal bytes still to deliver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<crate::store::export::ExportStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnforcementReport {
    /// BPF-LSM hooks attached (refuse before the act, -EPERM).
    pub lsm: bool,
    /// cgroup connect/sendmsg hooks attached (refuse connects and datagrams, EPERM).
    pub cgroup_socket: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleEnforcement>,
    /// Userspace actions refused by the per-rule rate limit since start.
    #[serde(default)]
    pub rate_limited: u64,
    /// Cgroups under quarantine now.
    #[serde(default)]
    pub quarantined: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleEnforcement {
    pub rule: String,
    #[serde(flatten)]
    pub rung: crate::policy::deny::Rung,
    pub description: String,
}

/// `status`'s view of hold and decide (`enforce::hold`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SqlHoldReport {
    /// Maps loaded and watchdog running: flagged queries of held processes are held.
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog_pid: Option<u32>,
    /// Processes (pids) whose flagged queries are held: they map libpq and an enforcing
    /// `sql_query` rule's policy selects them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<u32>,
    /// Held queries decided since start.
    #[serde(default)]
    pub decided: u64,
}

/// One kernel loss site: which program, what failed, how often, where last.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LossReport {
    pub site: String,
    pub program: String,
    /// The event kind lost, when the site is specific to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `dropped` (the event never arrived) or `incomplete` (sent with a field missing).
    pub effect: String,
    pub what: String,
    pub count: u64,
    /// Source line in rasp-ebpf of the last occurrence.
    pub line: u32,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct KindStats {
    pub received: u64,
    pub dropped: u64,
    pub read_errors: u64,
    /// Ring-buffer bytes of the records received (records are sent at their used length).
    #[serde(default)]
    pub bytes: u64,
}

/// The active policy set and the ones `policy rollback` can go back to (newest last).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyListing {
    pub active: PolicySetSummary,
    pub history: Vec<PolicySetSummary>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct ProcessStats {
    pub tracked: usize,
    pub exited: usize,
    pub evicted: u64,
}

/// Parse one request line, with an error that says what a valid one looks like.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_string())?;
    serde_json::from_str(text.trim()).map_err(|e| {
        format!(
            "invalid request ({e}); send one JSON object per line, e.g. {{\"cmd\":\"status\"}}, \
             {{\"cmd\":\"events\",\"kind\":\"exec\",\"limit\":10}}, {{\"cmd\":\"processes\"}}; \
             known cmds: status, events, processes, containers, detections, policy_list, \
             policy_apply, policy_rollback"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_reject_clearly() {
        assert_eq!(
            parse_request(br#"{"cmd":"status"}"#),
            Ok(Request::Status {})
        );
        assert_eq!(
            parse_request(br#"{"cmd":"events","kind":"exec","pid":5}"#),
            Ok(Request::Events {
                follow: false,
                kind: Some(Kind::Exec),
                pid: Some(5),
                limit: None
            })
        );
        let e = parse_request(b"not json").unwrap_err();
        assert!(e.contains("invalid request"), "{e}");
        let e = parse_request(br#"{"cmd":"nope"}"#).unwrap_err();
        assert!(e.contains("nope"), "{e}");
        let e = parse_request(br#"{"cmd":"events","kind":"bogus"}"#).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = parse_request(br#"{"cmd":"status","extra":1}"#).unwrap_err();
        assert!(e.contains("extra"), "{e}");
        assert!(parse_request(b"\xff\xfe").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn stream_items_are_tagged() {
        let s = serde_json::to_string(&StreamItem::Lost(3)).unwrap();
        assert_eq!(s, r#"{"lost":3}"#);
    }
}
