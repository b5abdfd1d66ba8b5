//! `open`: openat + close of one path, or of many distinct ones in turn, in a tight loop;
//! every op crosses the agent's file-open hook once (and its in-kernel pre-filter decides
//! whether to report it).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{run_for, Report};

/// Opens between clock reads: an open+close is ~1 µs, a clock read ~20 ns.
const BATCH: u32 = 16;

pub fn run(path: &Path, distinct: u32, duration: Duration) -> Result<Report> {
    let paths = PathCycle::new(path, distinct)?;
    let mut next = 0u64;
    let tally = run_for(duration, BATCH, || {
        let path = paths.get(next);
        next += 1;
        open_close(path)
    })
    .with_context(|| format!("opening {}", path.display()))?;
    Ok(Report::timed(tally).with("distinct", distinct))
}

/// The files an open loop goes through in turn: one path, or `distinct` of them with `{}`
/// in the pattern standing for 0..distinct. Each is opened once up front, so a missing one
/// fails before the timed loop.
pub struct PathCycle {
    paths: Vec<CString>,
}

impl PathCycle {
    pub fn new(pattern: &Path, distinct: u32) -> Result<PathCycle> {
        let text = pattern.to_string_lossy();
        if distinct > 1 && !text.contains("{}") {
            bail!(
                "--distinct {distinct} needs `{{}}` in the path, got {}",
                pattern.display()
            );
        }
        let mut paths = Vec::with_capacity(distinct as usize);
        for i in 0..distinct {
            let path = if distinct > 1 {
                Path::new(&*text.replace("{}", &i.to_string())).to_path_buf()
            } else {
                pattern.to_path_buf()
            };
            let c = c_path(&path)?;
            open_close(&c).with_context(|| format!("opening {}", path.display()))?;
            paths.push(c);
        }
        Ok(PathCycle { paths })
    }

    /// The `n`-th path of the cycle.
    pub fn get(&self, n: u64) -> &CString {
        &self.paths[(n % self.paths.len() as u64) as usize]
    }

    pub fn count(&self) -> usize {
        self.paths.len()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_goes_through_every_distinct_file_in_turn() {
        let dir = std::env::temp_dir().join(format!("rasp-path-cycle-{}", std::process::id()));
        for i in 0..3 {
            let sub = dir.join(i.to_string());
            std::fs::create_dir_all(&sub).expect("temp dir");
            std::fs::write(sub.join("f"), "x").expect("temp file");
        }
        let pattern = dir.join("{}/f");
        let cycle = PathCycle::new(&pattern, 3).expect("three files");
        assert_eq!(cycle.count(), 3);
        let name = |n| cycle.get(n).to_string_lossy().into_owned();
        assert!(name(0).ends_with("/0/f"), "{}", name(0));
        assert!(name(2).ends_with("/2/f"));
        assert_eq!(name(4), name(1));
        // A fourth file is missing: refused before any timed loop.
        assert!(PathCycle::new(&pattern, 4).is_err());
        // Many files need a placeholder.
        assert!(PathCycle::new(&dir.join("0/f"), 2).is_err());
        assert_eq!(PathCycle::new(&dir.join("0/f"), 1).expect("one").count(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }
}
