//! rasp-agent as a library: every module of the daemon and its CLI, so the binary
//! (`main.rs`), fuzz targets and benchmarks link the same code. The module map follows
//! DESIGN.md: one concern per module.

pub mod agent;
pub mod api;
pub mod cli;
pub mod daemon;
pub mod detect;
pub mod enforce;
pub mod events;
pub mod loader;
pub mod mask;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod process;
pub mod store;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

// One answer to a poisoned lock, everywhere: a panic elsewhere while holding it must not take
// the agent's state with it, so the data is used as it was left (every critical section
// here leaves it consistent at each step).

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
