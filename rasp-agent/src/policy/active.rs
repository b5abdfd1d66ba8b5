//! The active policy set and its history. A set is validated completely before it gets here;
//! swapping it in is one pointer store, so the event path sees either the old set or the new
//! one, never a mix. Every applied set gets the next version number; rollback re-applies the
//! previous set under a new version and says where it came from.

use std::{
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use super::{
    index::RuleIndex,
    vocab::{Action, EventType, Mode, Severity},
    Policy,
};

/// Sets kept for rollback.
const HISTORY: usize = 16;

pub struct PolicySet {
    pub version: u64,
    pub policies: Arc<Vec<Policy>>,
    /// The rules compiled into per-event-type pre-filters (`index`), built with the set.
    pub index: Arc<RuleIndex>,
    /// Where it came from: "built-in defaults", a directory, "apply over the socket", ...
    pub source: String,
    pub applied_at: SystemTime,
    pub restored_from: Option<u64>,
}

/// What `policy list` shows about a set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicySetSummary {
    pub version: u64,
    pub source: String,
    pub applied_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<u64>,
    pub policies: Vec<PolicySummary>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicySummary {
    pub name: String,
    pub version: u32,
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// "file:line:column" of the policy's first key.
    pub location: String,
    pub rules: Vec<RuleSummary>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RuleSummary {
    pub id: String,
    pub event: EventType,
    pub severity: Severity,
    pub action: Action,
    /// The rule's own mode, or the policy's.
    pub mode: Mode,
    pub location: String,
}

impl PolicySet {
    /// A set that is never applied to a running agent (simulation, validation).
    pub fn offline(policies: Vec<Policy>, source: String) -> Self {
        PolicySet {
            version: 0,
            index: Arc::new(RuleIndex::build(&policies)),
            policies: Arc::new(policies),
            source,
            applied_at: SystemTime::now(),
            restored_from: None,
        }
    }

    pub fn summary(&self) -> PolicySetSummary {
        PolicySetSummary {
            version: self.version,
            source: self.source.clone(),
            applied_at: humantime::format_rfc3339_seconds(self.applied_at).to_string(),
            restored_from: self.restored_from,
            policies: self
                .policies
                .iter()
                .map(|p| PolicySummary {
                    name: p.name.clone(),
                    version: p.version,
                    mode: p.mode,
                    description: p.description.clone(),
                    location: format!("{}:{}:{}", p.file, p.line, p.column),
                    rules: p
                        .rules
                        .iter()
                        .map(|r| RuleSummary {
                            id: r.id.clone(),
                            event: r.event,
                            severity: r.severity,
                            action: r.action,
                            mode: r.effective_mode(p),
                            location: format!("{}:{}:{}", p.file, r.line, r.column),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

pub struct PolicyRegistry {
    current: RwLock<Arc<PolicySet>>,
    /// Previously active sets, most recent last.
    history: Mutex<Vec<Arc<PolicySet>>>,
}

impl PolicyRegistry {
    pub fn new(policies: Vec<Policy>, source: String) -> Self {
        let set = PolicySet {
            version: 1,
            index: Arc::new(RuleIndex::build(&policies)),
            policies: Arc::new(policies),
            source,
            applied_at: SystemTime::now(),
            restored_from: None,
        };
        PolicyRegistry {
            current: RwLock::new(Arc::new(set)),
            history: Mutex::new(Vec::new()),
        }
    }

    pub fn current(&self) -> Arc<PolicySet> {
        crate::read(&self.current).clone()
    }

    /// Make `policies` (already validated) the active set.
    pub fn apply(&self, policies: Vec<Policy>, source: String) -> Arc<PolicySet> {
        self.swap(Arc::new(policies), source, None)
    }

    /// Re-apply the set that was active before the current one, under a new version. The
    /// set left goes into the history like any replaced set, so the history stays the true
    /// sequence of what was active, and a second rollback returns to the set the first one
    /// left (as `kubectl rollout undo` does). One critical section: nobody sees the history
    /// or the current set half-changed.
    pub fn rollback(&self) -> Result<Arc<PolicySet>, String> {
        let mut current = crate::write(&self.current);
        let mut history = crate::lock(&self.history);
        let previous = history
            .pop()
            .ok_or_else(|| "no previous policy set to roll back to".to_string())?;
        let set = Arc::new(PolicySet {
            version: current.version + 1,
            // The same rules: the compiled index is shared, not rebuilt.
            index: previous.index.clone(),
            policies: previous.policies.clone(),
            source: previous.source.clone(),
            applied_at: SystemTime::now(),
            restored_from: Some(previous.version),
        });
        let left = std::mem::replace(&mut *current, set.clone());
        push_bounded(&mut history, left);
        Ok(set)
    }

    /// The set `rollback` would restore, without restoring it.
    pub fn previous(&self) -> Option<Arc<PolicySet>> {
        crate::lock(&self.history).last().cloned()
    }

    fn swap(
        &self,
        policies: Arc<Vec<Policy>>,
        source: String,
        restored_from: Option<u64>,
    ) -> Arc<PolicySet> {
        // Compiled before the lock: readers of the current set never wait for it.
        let index = Arc::new(RuleIndex::build(&policies));
        let mut current = crate::write(&self.current);
        let set = Arc::new(PolicySet {
            version: current.version + 1,
            index,
            policies,
            source,
            applied_at: SystemTime::now(),
            restored_from,
        });
        let old = std::mem::replace(&mut *current, set.clone());
        push_bounded(&mut crate::lock(&self.history), old);
        set
    }

    pub fn history(&self) -> Vec<Arc<PolicySet>> {
        crate::lock(&self.history).clone()
    }
}

fn push_bounded(history: &mut Vec<Arc<PolicySet>>, set: Arc<PolicySet>) {
    history.push(set);
    if history.len() > HISTORY {
        history.remove(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(r: &PolicyRegistry) -> Vec<u64> {
        r.history().iter().map(|s| s.version).collect()
    }

    /// Reproduces the double pop: rollback removed the set it restored *and* the set it
    /// left, so a second rollback skipped a set and the history lost one.
    #[test]
    fn rollback_restores_the_set_active_before_the_current_one() {
        let reg = PolicyRegistry::new(Vec::new(), "a".into());
        reg.apply(Vec::new(), "b".into());
        reg.apply(Vec::new(), "c".into());
        assert_eq!(versions(&reg), [1, 2]);
        let set = reg.rollback().expect("b is there");
        assert_eq!(
            (set.version, set.restored_from, set.source.as_str()),
            (4, Some(2), "b")
        );
        assert_eq!(versions(&reg), [1, 3], "the set left (c, 3) is history now");
        assert_eq!(reg.previous().map(|s| s.version), Some(3));
        // The set active before the current one is c: a second rollback undoes the first.
        let set = reg.rollback().expect("c is there");
        assert_eq!(
            (set.version, set.restored_from, set.source.as_str()),
            (5, Some(3), "c")
        );
        assert_eq!(versions(&reg), [1, 4]);
        assert_eq!(reg.current().version, 5);
    }

    #[test]
    fn rollback_without_history_changes_nothing() {
        let reg = PolicyRegistry::new(Vec::new(), "a".into());
        assert!(reg.rollback().is_err());
        assert_eq!(reg.current().version, 1);
        assert!(reg.history().is_empty());
        // The history is bounded, and rollback keeps its length.
        for _ in 0..HISTORY + 3 {
            reg.apply(Vec::new(), "x".into());
        }
        assert_eq!(reg.history().len(), HISTORY);
        reg.rollback().expect("history");
        assert_eq!(reg.history().len(), HISTORY);
    }
}
