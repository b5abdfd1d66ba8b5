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
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Make `policies` (already validated) the active set.
    pub fn apply(&self, policies: Vec<Policy>, source: String) -> Arc<PolicySet> {
        self.swap(Arc::new(policies), source, None)
    }

    /// Re-apply the set that was active before the current one.
    pub fn rollback(&self) -> Result<Arc<PolicySet>, String> {
        let previous = {
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            history
                .pop()
                .ok_or_else(|| "no previous policy set to roll back to".to_string())?
        };
        let set = self.swap(
            previous.policies.clone(),
            previous.source.clone(),
            Some(previous.version),
        );
        // The set we just left must not become the next rollback target: pop it again.
        self.history.lock().unwrap_or_else(|p| p.into_inner()).pop();
        Ok(set)
    }

    fn swap(
        &self,
        policies: Arc<Vec<Policy>>,
        source: String,
        restored_from: Option<u64>,
    ) -> Arc<PolicySet> {
        // Compiled before the lock: readers of the current set never wait for it.
        let index = Arc::new(RuleIndex::build(&policies));
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let set = Arc::new(PolicySet {
            version: current.version + 1,
            index,
            policies,
            source,
            applied_at: SystemTime::now(),
            restored_from,
        });
        let old = std::mem::replace(&mut *current, set.clone());
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.push(old);
        if history.len() > HISTORY {
            history.remove(0);
        }
        set
    }

    pub fn history(&self) -> Vec<Arc<PolicySet>> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
