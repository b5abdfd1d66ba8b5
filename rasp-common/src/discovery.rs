//! Finding uprobe targets from library loads instead of rescanning every process: the
//! kernel remembers which executable files (dev+inode) it has reported in `SEEN_EXEC_FILES`
//! (an LRU hash) and reports a file only the first time it is mapped executable (mmap with
//! PROT_EXEC, or exec), so the agent inspects each distinct file once. Files the agent has
//! found to be uprobe targets are marked `SEEN_TARGET`: every mapping of those is reported,
//! so the agent knows every process that uses them and never detaches from under one.

/// Key of `SEEN_EXEC_FILES`: the file as the kernel names it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ExecFileKey {
    /// `inode->i_sb->s_dev`, the kernel's `dev_t` (`MAJOR = dev >> 20`).
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// Reported once, then quiet.
pub const SEEN_QUIET: u32 = 0;
/// A uprobe target: every mapping is reported (so the agent counts the processes using it).
pub const SEEN_TARGET: u32 = 1;

/// Entries of `SEEN_EXEC_FILES`. An evicted file is reported again on its next mapping: one
/// more hash lookup in the agent, never a missed library.
pub const MAX_SEEN_EXEC_FILES: u32 = 16384;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers only, explicit padding.
    unsafe impl aya::Pod for super::ExecFileKey {}
}

const _: () = assert!(core::mem::size_of::<ExecFileKey>() == 16);
