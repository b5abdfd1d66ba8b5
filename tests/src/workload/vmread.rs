//! `vm-read`: process_vm_readv(2) of 64 bytes from a child of this process (forked before
//! the loop, paused until killed after it); ops = reads. Every op crosses issue 19's
//! ptrace hook, which sends vm_read calls when a rule names them (the process-memory
//! policy does), so each is an event for the agent to judge.

use std::io;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{run_for, Report};

/// Reads between clock reads.
const BATCH: u32 = 16;

/// What is read: the same address in the child, which fork copied.
static SOURCE: [u8; 64] = [0x5a; 64];

pub fn run(duration: Duration) -> Result<Report> {
    let child = Child::fork().context("forking the child to read from")?;
    let mut buf = [0u8; 64];
    let tally = run_for(duration, BATCH, || {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: SOURCE.as_ptr() as *mut libc::c_void,
            iov_len: SOURCE.len(),
        };
        // SAFETY: both iovecs describe valid buffers of the stated length; the remote one
        // is the same static in the child (fork keeps the address space layout).
        let n = unsafe { libc::process_vm_readv(child.pid, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != SOURCE.len() || buf != SOURCE {
            return Err(io::Error::other(format!(
                "process_vm_readv read {n} bytes, not the child's {} bytes",
                SOURCE.len()
            )));
        }
        Ok(())
    })
    .with_context(|| format!("process_vm_readv from child {}", child.pid))?;
    Ok(Report::timed(tally))
}

/// A child blocked in pause(), killed and reaped on drop.
struct Child {
    pid: libc::pid_t,
}

impl Child {
    fn fork() -> io::Result<Child> {
        // SAFETY: this process has one thread; the child only loops in pause and _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            loop {
                // SAFETY: async-signal-safe; SIGKILL ends the child.
                unsafe { libc::pause() };
            }
        }
        Ok(Child { pid })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: our own child; reaped right after so no zombie is left.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_childs_copy() {
        let report = run(Duration::from_millis(20)).expect("reads");
        assert!(report.to_string().contains("\"rate\":"));
    }
}
