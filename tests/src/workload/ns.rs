//! `namespace`: unshare(CLONE_NEWUTS) then setns(2) back into the UTS namespace this
//! process started in; ops = pairs. Both cross issue 19's namespace hook: the unshare is
//! dropped by its in-kernel flag filter unless a rule names a new UTS namespace, the setns
//! is judged by the agent (which namespace was entered, from the descriptor's nsfs file).
//! Needs CAP_SYS_ADMIN (root). A UTS namespace is the cheapest to create and leaves the
//! process's mounts, network and PIDs as they were.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{Context, Result};

use super::{run_for, Report};

/// Pairs between clock reads.
const BATCH: u32 = 8;

pub fn run(duration: Duration) -> Result<Report> {
    let own = open_ns("/proc/self/ns/uts").context("opening /proc/self/ns/uts")?;
    let tally = run_for(duration, BATCH, || {
        // SAFETY: plain syscall; affects only this (single-threaded) process's UTS namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWUTS) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `own` is an open nsfs descriptor of a UTS namespace.
        if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWUTS) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })
    .context("unshare(CLONE_NEWUTS) + setns back (needs root: CAP_SYS_ADMIN)")?;
    Ok(Report::timed(tally))
}

fn open_ns(path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(io::Error::other)?;
    // SAFETY: c is NUL-terminated and outlives the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened and nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
