//! `exec`: fork + execv(/bin/true) + waitpid in a loop, the way a shell runs a command, so
//! every op crosses the agent's fork, exec and exit hooks once.

use std::io;
use std::ptr;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{run_for, Report};

const TRUE: &std::ffi::CStr = c"/bin/true";

pub fn run(duration: Duration) -> Result<Report> {
    // SAFETY: TRUE is a NUL-terminated string; access only reads it.
    if unsafe { libc::access(TRUE.as_ptr(), libc::X_OK) } != 0 {
        bail!(
            "{} is not executable: {}",
            TRUE.to_string_lossy(),
            io::Error::last_os_error()
        );
    }
    // Built once: the child must not allocate between fork and exec.
    let argv: [*const libc::c_char; 2] = [TRUE.as_ptr(), ptr::null()];
    let tally = run_for(duration, 1, || {
        // SAFETY: this process has one thread, so the child inherits no lock held by
        // another thread; it only calls execv and _exit, both async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: argv is a NULL-terminated array of NUL-terminated strings.
            unsafe {
                libc::execv(TRUE.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        let status = wait_for(pid)?;
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "/bin/true (pid {pid}) ended with wait status {status:#x}"
            )))
        }
    })
    .context("fork + exec /bin/true")?;
    Ok(Report::timed(tally))
}

/// Reaps `pid`, retrying when a signal interrupts the wait.
fn wait_for(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer for the duration of the call.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
