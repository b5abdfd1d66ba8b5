//! Offline replay: recorded events (the `events --json` format) through a policy set, with a
//! process table rebuilt from the same events, so ancestry conditions work as they do live.
//! Nothing is enforced; each detection says what would have been done.

use std::{io::BufRead, sync::Arc};

use crate::{
    events::Event,
    policy::{
        active::PolicySet,
        vocab::{Action, Mode},
    },
    process::ProcessTable,
};

use super::{engine::Engine, Detection, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{file}:{line}: not an event: {message}")]
    BadLine {
        file: String,
        line: usize,
        message: String,
    },
    #[error("reading {file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Default)]
pub struct Replay {
    pub events: usize,
    pub detections: Vec<Detection>,
}

/// Replay JSON lines from `input` (named `file` in errors). `{"kind":"lost",...}` markers
/// from a live stream are skipped; anything else that is not an event is an error.
pub fn replay(set: &PolicySet, file: &str, input: impl BufRead) -> Result<Replay, ReplayError> {
    let engine = Engine::replay();
    // Replays keep every process: nothing is reaped by wall-clock time here.
    let mut table = ProcessTable::new(usize::MAX, std::time::Duration::MAX);
    let mut out = Replay::default();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|source| ReplayError::Io {
            file: file.into(),
            source,
        })?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ReplayError::BadLine {
                file: file.into(),
                line: i + 1,
                message: e.to_string(),
            })?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("lost") {
            continue;
        }
        let ev: Arc<Event> = serde_json::from_value(value).map_err(|e| ReplayError::BadLine {
            file: file.into(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.events += 1;
        table.apply(&ev);
        for mut d in engine.evaluate(set, &ev, &table) {
            (d.outcome, d.outcome_detail) = dry_run(d.action, d.mode);
            out.detections.push(d);
        }
    }
    Ok(out)
}

/// What the live agent would report for an action that does nothing, and for one that acts
/// what it would have done.
fn dry_run(action: Action, mode: Mode) -> (Outcome, Option<String>) {
    match Outcome::without_acting(action, mode) {
        Some((outcome, detail)) => (outcome, detail.map(String::from)),
        None => (
            Outcome::Audited,
            Some(format!("simulation: would {}", action.effect())),
        ),
    }
}
