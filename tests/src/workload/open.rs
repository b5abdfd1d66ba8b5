//! `open`: openat + close of one path in a tight loop; every op crosses the agent's
//! file-open hook once (and its in-kernel pre-filter decides whether to report it).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{run_for, Report};

/// Opens between clock reads: an open+close is ~1 µs, a clock read ~20 ns.
const BATCH: u32 = 16;

pub fn run(path: &Path, duration: Duration) -> Result<Report> {
    let path_c = c_path(path)?;
    open_close(&path_c).with_context(|| format!("opening {}", path.display()))?;
    let tally = run_for(duration, BATCH, || open_close(&path_c))
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(Report::timed(tally))
}

/// The path as the C string openat wants.
pub fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains a NUL byte", path.display()))
}

/// One op: open read-only, close.
pub fn open_close(path: &CString) -> io::Result<()> {
    // SAFETY: path is NUL-terminated and outlives the call.
    let fd = unsafe {
        libc::openat(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened by us and is closed exactly once. close's result is not
    // checked: for a read-only fd it cannot lose data.
    unsafe { libc::close(fd) };
    Ok(())
}
