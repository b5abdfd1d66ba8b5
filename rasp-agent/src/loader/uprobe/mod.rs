//! Uprobe targets: which files on the node are libpq or OpenSSL (by their exported symbols),
//! where in each function the probe goes (decoded prologues, `prologue.rs`), and which
//! attachments to make or drop as processes map and unmap them (`targets.rs`). The eBPF
//! programs and the aya attach calls live with the loader; this module only plans.

pub mod attach;
pub mod discovery;
pub mod elf;
pub mod prologue;
pub mod targets;

pub use prologue::{AttachPoint, EmulationModel, Placement};
pub use targets::{
    AttachPlan, FileId, LibraryKind, PlannedProbe, TargetAction, TargetId, TargetRegistry,
    TargetStatus,
};
