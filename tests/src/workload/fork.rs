//! `fork`: fork + `_exit(0)` in the child + waitpid, with no exec: every op crosses the
//! agent's fork and exit hooks once and nothing else, so their cost stands apart from an
//! exec's.

use std::time::Duration;

use anyhow::{Context, Result};

use super::{run_for, wait_child_ok, Report};

pub fn run(duration: Duration) -> Result<Report> {
    let tally = run_for(duration, 1, || {
        // SAFETY: this process has one thread, and the child only calls _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: async-signal-safe; skips atexit handlers the child must not run.
            unsafe { libc::_exit(0) };
        }
        wait_child_ok(pid, "the forked child")
    })
    .context("fork + exit")?;
    Ok(Report::timed(tally))
}
