//! Another process's memory, reached the two ways credential dumpers and injectors use:
//! ptrace (attach, peek, poke) and process_vm_readv/writev. Every write puts back the bytes
//! just read, so the target runs on unchanged.

use anyhow::{bail, Context, Result};

/// The start of `pid`'s stack mapping, from /proc/<pid>/maps.
fn stack_of(pid: u32) -> Result<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("reading /proc/{pid}/maps"))?;
    let line = maps
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .with_context(|| format!("no [stack] mapping for pid {pid}"))?;
    let start = line.split('-').next().unwrap_or("");
    u64::from_str_radix(start, 16).with_context(|| format!("bad maps line {line:?}"))
}

pub fn ptrace_poke(pid: u32) -> Result<String> {
    let addr = stack_of(pid)? + 64;
    let p = pid as libc::pid_t;
    // SAFETY: ptrace(2) on a pid of our caller's choosing; failures are checked.
    unsafe {
        if libc::ptrace(libc::PTRACE_ATTACH, p, 0, 0) != 0 {
            bail!("PTRACE_ATTACH {pid}: {}", std::io::Error::last_os_error());
        }
        let mut status = 0;
        libc::waitpid(p, &mut status, libc::__WALL);
        *libc::__errno_location() = 0;
        let word = libc::ptrace(libc::PTRACE_PEEKDATA, p, addr, 0);
        let err = std::io::Error::last_os_error();
        let poked = if err.raw_os_error() == Some(0) {
            libc::ptrace(libc::PTRACE_POKEDATA, p, addr, word)
        } else {
            -1
        };
        let poke_err = std::io::Error::last_os_error();
        libc::ptrace(libc::PTRACE_DETACH, p, 0, 0);
        if poked != 0 {
            bail!("PTRACE_PEEK/POKEDATA at {addr:#x} of {pid}: {poke_err}");
        }
    }
    Ok(format!(
        "attached to {pid}, wrote a word of its stack back unchanged, detached"
    ))
}

pub fn vm_read_write(pid: u32) -> Result<String> {
    let addr = stack_of(pid)? + 64;
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut _,
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut _,
        iov_len: buf.len(),
    };
    // SAFETY: one local and one remote iovec of 8 bytes.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n != 8 {
        bail!(
            "process_vm_readv of {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: as above, the same bytes back.
    let n = unsafe { libc::process_vm_writev(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n != 8 {
        bail!(
            "process_vm_writev of {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(format!("read 8 bytes of {pid}'s stack and wrote them back"))
}
