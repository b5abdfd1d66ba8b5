//! `io-uring-open`: IORING_OP_OPENAT + close of one file through a ring set up before the
//! loop; ops = opens. No open(2) syscall is made, so the syscall file-open hook never sees
//! these: the `io_uring_submit_req` tracepoint does (issue 19), and the io-uring policy
//! names openat, so every op is an event and a match for the agent.

use std::ffi::CString;
use std::io;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use io_uring::{opcode, types, IoUring};

use super::open::c_path;
use super::{run_for, Report};

/// Opens between clock reads.
const BATCH: u32 = 16;

pub fn run(path: &Path, duration: Duration) -> Result<Report> {
    let file = c_path(path)?;
    let mut ring = IoUring::new(8).context("io_uring_setup (is io_uring disabled here?)")?;
    let tally = run_for(duration, BATCH, || open_close(&mut ring, &file))
        .with_context(|| format!("opening {} through io_uring", path.display()))?;
    Ok(Report::timed(tally))
}

fn open_close(ring: &mut IoUring, path: &CString) -> io::Result<()> {
    let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
        .flags(libc::O_RDONLY | libc::O_CLOEXEC)
        .build();
    // SAFETY: `path` outlives the submission: its completion is awaited below.
    unsafe { ring.submission().push(&open) }
        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    ring.submit_and_wait(1)?;
    let res = ring
        .completion()
        .next()
        .ok_or_else(|| io::Error::other("io_uring gave no completion"))?
        .result();
    if res < 0 {
        return Err(io::Error::from_raw_os_error(-res));
    }
    // SAFETY: the descriptor io_uring opened for us, closed exactly once.
    unsafe { libc::close(res) };
    Ok(())
}
