//! A kernel module loaded by a program of its own (not kmod): finit_module(2) on an open
//! module file.

use std::os::fd::AsRawFd;

use anyhow::{bail, Context, Result};

/// `MODULE_INIT_COMPRESSED_FILE`: the kernel decompresses the file itself.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

pub fn finit(path: &str) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    let compressed = [".xz", ".zst", ".gz"].iter().any(|e| path.ends_with(e));
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    // SAFETY: finit_module(fd, param_values, flags) with an empty parameter string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    };
    if r != 0 {
        bail!("finit_module {path}: {}", std::io::Error::last_os_error());
    }
    Ok(format!("loaded {path}"))
}
