//! A detection: a rule matched an event. Everything an operator needs to judge it without
//! going back to the host: the rule and policy (with versions), what was done about it, the
//! full event, the process and its ancestry, where it ran, and how fast we decided.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{
    events::{Argv, Comm, Event, Text},
    policy::vocab::{Action, KillScope, Mode, QuarantineMode, Severity},
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Unique within this node: agent start time (unix ms) and a sequence number.
    pub id: String,
    /// Wall-clock time of the decision (RFC 3339).
    pub time: String,
    pub rule_id: String,
    pub policy: String,
    pub policy_version: u32,
    /// Version of the whole applied policy set (increments on every apply/reload).
    pub policy_set_version: u64,
    pub mode: Mode,
    pub severity: Severity,
    pub action: Action,
    pub outcome: Outcome,
    /// Why the outcome is what it is ("audit mode: would kill", the kill error, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Shared with the event buffer and the other detections of the same event.
    pub event: Arc<Event>,
    pub process: ProcessSummary,
    /// Parents, nearest first, as far as the process table knows them.
    pub ancestry: Vec<ProcessSummary>,
    /// From the kernel timestamp of the event to the decision, in microseconds.
    pub latency_us: u64,
    /// Identical detections folded into this one (1 when alone).
    pub count: u64,
    /// For an aggregate: time of the last folded occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<String>,
    /// What the rule's action targets: the kill scope of `kill`, the step after the network
    /// cut of `quarantine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_scope: Option<KillScope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_mode: Option<QuarantineMode>,
}

/// What happened as a result, honestly: did the kernel stop it, or did we act after?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Action `alert`: reported, nothing else to do.
    Alerted,
    /// Audit mode: the action was not taken (`outcome_detail` says what it would have been).
    Audited,
    /// The kernel denied the operation before it happened.
    Prevented,
    /// The process was paused, then allowed or killed.
    Held,
    /// It happened; then we killed or quarantined.
    After,
    /// The action was attempted and failed (`outcome_detail` says why).
    Failed,
}

impl Outcome {
    /// The outcome's name, as in JSON and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Alerted => "alerted",
            Outcome::Audited => "audited",
            Outcome::Prevented => "prevented",
            Outcome::Held => "held",
            Outcome::After => "after",
            Outcome::Failed => "failed",
        }
    }

    /// The outcome (and its detail) of a rule whose action does nothing to the process — an
    /// alert, or any action in audit mode — known before the detection is built, so that
    /// its fold key can be checked first. `None`: the action acts, and only acting tells
    /// the outcome. The details are the enforcer's words (a test holds them equal).
    pub fn without_acting(action: Action, mode: Mode) -> Option<(Outcome, Option<&'static str>)> {
        match (action, mode) {
            (Action::Alert, _) => Some((Outcome::Alerted, None)),
            (Action::Block, Mode::Audit) => {
                Some((Outcome::Audited, Some("audit mode: would block")))
            }
            (Action::Kill, Mode::Audit) => {
                Some((Outcome::Audited, Some("audit mode: would kill the process")))
            }
            (Action::Quarantine, Mode::Audit) => Some((
                Outcome::Audited,
                Some("audit mode: would quarantine the workload"),
            )),
            (_, Mode::Enforce) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessSummary {
    pub pid: u32,
    pub comm: Comm,
    pub exe: Option<Text>,
    #[serde(default, skip_serializing_if = "Argv::is_empty")]
    pub argv: Argv,
    /// argv was longer than the capture bound: `argv` is its start, and rules on the
    /// command line saw only that (`argv_truncated` conditions match it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub argv_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}
