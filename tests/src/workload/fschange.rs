//! `chmod` and `file-change`: the file changes issue 19 hooks at syscall exit (chmod,
//! rename, unlink ... one program on every such tracepoint), on a file of this process's
//! own in a directory no rule watches, so what an op costs is the hook and its in-kernel
//! filter, as for the mode and rename traffic of builds and package managers.
//!
//! The file is named after this process (`rasp-workload-change.PID`, and `.PID.renamed`
//! for the rename's target), created before the loop and removed after it.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::open::c_path;
use super::{run_for, Report};

/// Ops between clock reads: a chmod is ~1 µs, a whole change cycle a few.
const BATCH: u32 = 16;

/// chmod(2) of one file, flipping its mode between 0600 and 0644; ops = chmods.
pub fn run_chmod(dir: &Path, duration: Duration) -> Result<Report> {
    let file = Scratch::new(dir)?;
    let mut flip = false;
    let tally = run_for(duration, BATCH, || {
        flip = !flip;
        chmod(&file.path, if flip { 0o600 } else { 0o644 })
    })
    .with_context(|| format!("chmod of {}", file.shown.display()))?;
    Ok(Report::timed(tally).with("dir", dir.display().to_string()))
}

/// What a temp-file save does: create (openat O_CREAT|O_EXCL) + close, chmod, rename
/// over a second name, unlink it; ops = cycles (each crosses the file-open hook once and
/// the file-change hook three times).
pub fn run_change(dir: &Path, duration: Duration) -> Result<Report> {
    let file = Scratch::new(dir)?;
    // The loop creates it afresh each time.
    remove(&file.path).with_context(|| format!("removing {}", file.shown.display()))?;
    let tally = run_for(duration, BATCH, || {
        create(&file.path)?;
        chmod(&file.path, 0o600)?;
        // SAFETY: both paths are NUL-terminated and outlive the call.
        if unsafe { libc::rename(file.path.as_ptr(), file.renamed.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        remove(&file.renamed)
    })
    .with_context(|| {
        format!(
            "create/chmod/rename/unlink of {} in {}",
            file.shown.display(),
            dir.display()
        )
    })?;
    Ok(Report::timed(tally).with("dir", dir.display().to_string()))
}

/// This process's file in `dir`, created now and removed (with its renamed twin) on drop.
struct Scratch {
    shown: PathBuf,
    path: CString,
    renamed_shown: PathBuf,
    renamed: CString,
}

impl Scratch {
    fn new(dir: &Path) -> Result<Scratch> {
        let shown = dir.join(format!("rasp-workload-change.{}", std::process::id()));
        let path = c_path(&shown)?;
        let renamed_shown = dir.join(format!(
            "rasp-workload-change.{}.renamed",
            std::process::id()
        ));
        let renamed = c_path(&renamed_shown)?;
        create(&path).with_context(|| format!("creating {}", shown.display()))?;
        Ok(Scratch {
            shown,
            path,
            renamed_shown,
            renamed,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Either may be gone already (the loop removes both in turn): nothing to report.
        let _ = std::fs::remove_file(&self.shown);
        let _ = std::fs::remove_file(&self.renamed_shown);
    }
}

fn create(path: &CString) -> io::Result<()> {
    // SAFETY: path is NUL-terminated and outlives the call.
    let fd = unsafe {
        libc::openat(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened by us and is closed exactly once; nothing was written.
    unsafe { libc::close(fd) };
    Ok(())
}

fn chmod(path: &CString, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: path is NUL-terminated and outlives the call.
    if unsafe { libc::chmod(path.as_ptr(), mode) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn remove(path: &CString) -> io::Result<()> {
    // SAFETY: path is NUL-terminated and outlives the call.
    if unsafe { libc::unlink(path.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_cycles_leave_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("rasp-fschange-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let report = run_change(&dir, Duration::from_millis(20)).expect("cycles");
        assert!(report.to_string().contains("\"rate\":"));
        let report = run_chmod(&dir, Duration::from_millis(20)).expect("chmods");
        assert!(report.to_string().contains("\"ops\":"));
        let left: Vec<_> = std::fs::read_dir(&dir).expect("dir").collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_directory_is_named() {
        let err = run_chmod(Path::new("/nonexistent/rasp"), Duration::from_millis(5))
            .expect_err("no such dir");
        assert!(format!("{err:#}").contains("/nonexistent/rasp"), "{err:#}");
    }
}
