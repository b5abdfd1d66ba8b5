//! `mmap`: an executable, private mapping of a library file and its unmapping, as a dynamic
//! loader maps a library's code: every op crosses the agent's library-load hook once
//! (`sys_enter_mmap`, or `mmap_file` under BPF-LSM). The file is opened once, so the open
//! hook is not in the loop.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::open::c_path;
use super::{run_for, Report};

/// Maps between clock reads: a map+unmap is a few µs.
const BATCH: u32 = 16;

pub fn run(path: &Path, duration: Duration) -> Result<Report> {
    let c = c_path(path)?;
    // SAFETY: c is NUL-terminated; the fd is checked, then owned.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("opening {}", path.display()));
    }
    // SAFETY: a fresh fd nobody else owns.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    let page = 4096;
    let tally = run_for(duration, BATCH, || {
        // SAFETY: a new private read+exec mapping of one page of our own fd; nothing else
        // refers to the address, and it is unmapped right away.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: exactly the mapping made above.
        unsafe { libc::munmap(addr, page) };
        Ok(())
    })
    .with_context(|| format!("mapping {} executable", path.display()))?;
    Ok(Report::timed(tally))
}
