//! rasp-agent as a library: every module of the daemon and its CLI, so the binary
//! (`main.rs`), fuzz targets and benchmarks link the same code. The module map follows
//! DESIGN.md: one concern per module.

pub mod api;
pub mod cli;
pub mod daemon;
pub mod detect;
pub mod enforce;
pub mod events;
pub mod loader;
pub mod mask;
pub mod policy;
pub mod process;
pub mod store;
