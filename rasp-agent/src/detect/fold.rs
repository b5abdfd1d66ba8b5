//! The identity of a detection for storm folding. It lives with the detection (the engine
//! builds it from a match before any detection exists; the store folds on it), so the store
//! depends on detect and never the other way round.

use serde::Serialize;

use super::{Detection, Outcome};
use crate::{
    events::{Argv, Event, EventDetail},
    policy::vocab::{Action, Mode},
};

/// What makes two detections "identical" for folding: the same rule of the same policy
/// version and policy set, with the same mode, action and outcome (including its detail), by
/// the same program (`process.exe` + `process.argv`), on the same event minus its volatile
/// fields (`time`, `ts_boot_ns`, `pid`, `tid`, `ppid`: they differ between occurrences of the
/// same behaviour), i.e. uid, gid, comm, cgroup id and path (hence container and pod), and
/// the whole kind-specific detail (kind, then exe/argv/cwd of an exec, a file path, a
/// destination...), so future event kinds fold correctly without touching this type.
/// Not in the key: `id`, `time`, `latency_us`, `description` (rule text), `ancestry` (it
/// carries pids; a rule that cares about the parent already matched on it), `process.pid`.
///
/// Borrowed, compared field by field and hashed (never serialized on the event path): it is
/// built for every detection of a storm, from a `Detection` (`of`) or, before one exists,
/// from the event and the matching rule (`detect::engine::Match::fold_key`). Both must give
/// equal keys for equal detections; the engine's tests check that they do.
#[derive(Debug, PartialEq, Eq, Hash, Serialize)]
pub struct FoldKey<'a> {
    pub rule: &'a str,
    pub policy: &'a str,
    pub policy_version: u32,
    pub policy_set_version: u64,
    pub mode: Mode,
    pub action: Action,
    pub outcome: Outcome,
    pub outcome_detail: Option<&'a str>,
    pub exe: Option<&'a str>,
    pub argv: &'a Argv,
    pub uid: u32,
    pub gid: u32,
    pub euid: Option<u32>,
    pub egid: Option<u32>,
    pub cap_effective: Option<u64>,
    pub comm: &'a str,
    pub cgroup_id: u64,
    pub cgroup: Option<&'a str>,
    pub detail: &'a EventDetail,
}

impl<'a> FoldKey<'a> {
    pub fn of(d: &'a Detection) -> Self {
        FoldKey {
            rule: &d.rule_id,
            policy: &d.policy,
            policy_version: d.policy_version,
            policy_set_version: d.policy_set_version,
            mode: d.mode,
            action: d.action,
            outcome: d.outcome,
            outcome_detail: d.outcome_detail.as_deref(),
            ..FoldKey::event(&d.event, d.process.exe.as_deref(), &d.process.argv)
        }
    }

    /// The process and event fields; the rule fields are placeholders for the caller to set.
    pub fn event(ev: &'a Event, exe: Option<&'a str>, argv: &'a Argv) -> Self {
        FoldKey {
            rule: "",
            policy: "",
            policy_version: 0,
            policy_set_version: 0,
            mode: Mode::Audit,
            action: Action::Alert,
            outcome: Outcome::Alerted,
            outcome_detail: None,
            exe,
            argv,
            uid: ev.uid,
            gid: ev.gid,
            euid: ev.euid,
            egid: ev.egid,
            cap_effective: ev.cap_effective,
            comm: &ev.comm,
            cgroup_id: ev.cgroup_id,
            cgroup: ev.cgroup.as_deref(),
            detail: &ev.detail,
        }
    }
}
