//! `exec`: fork + execv(/bin/true) + waitpid in a loop, the way a shell runs a command, so
//! every op crosses the agent's fork, exec and exit hooks once.

use std::io;
use std::ptr;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{run_for, wait_child_ok, Report};

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
    let children_before = children_cpu_time()?;
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
        wait_child_ok(pid, "/bin/true")
    })
    .context("fork + exec /bin/true")?;
    let children = children_cpu_time()?.saturating_sub(children_before);
    // Most of an exec's cost (and the exec hook's) is spent in the child, not in us.
    Ok(Report::timed(tally).with(
        "children_cpu_seconds",
        (children.as_secs_f64() * 1e4).round() / 1e4,
    ))
}

/// CPU time (user + system) used by all reaped children so far.
fn children_cpu_time() -> Result<Duration> {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Err(io::Error::last_os_error()).context("getrusage(RUSAGE_CHILDREN)");
    }
    let micros = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    Ok(Duration::from_micros(
        micros(usage.ru_utime) + micros(usage.ru_stime),
    ))
}
