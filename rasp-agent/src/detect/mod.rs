//! Rule evaluation: events, enriched from the process table, checked against the active
//! policy set; a match becomes a `Detection` (and, in enforce mode, an action).

pub mod analyzer;
pub mod detection;
pub mod engine;
pub mod fold;
pub mod http;
pub mod simulate;
pub mod sql;

pub use detection::{Detection, Outcome, ProcessSummary};
pub use fold::FoldKey;
