//! One act per invocation, for enforcement checks that need a syscall no shell tool makes
//! (in the BPF-LSM guest, where only busybox exists): an open, an executable mapping, an
//! mprotect to executable, an open submitted through io_uring, a TCP connect. Prints one
//! line, `ok` or `error <errno> <message>`, and exits 0 either way: the caller judges the
//! answer; a signal death is the only non-answer.

use std::{
    ffi::CString,
    io,
    net::{SocketAddr, TcpStream},
    os::unix::ffi::OsStrExt,
    path::PathBuf,
    time::Duration,
};

use clap::{Parser, Subcommand};
use io_uring::{opcode, types, IoUring};

#[derive(Parser)]
#[command(
    name = "rasp-probe",
    about = "One act per call, for enforcement checks"
)]
struct Cli {
    #[command(subcommand)]
    act: Act,
}

#[derive(Subcommand)]
enum Act {
    /// open(FILE, O_RDONLY)
    Open { file: PathBuf },
    /// mmap(FILE, PROT_READ|PROT_EXEC, MAP_PRIVATE)
    MmapExec { file: PathBuf },
    /// mmap(FILE, PROT_READ, MAP_PRIVATE), then mprotect(PROT_READ|PROT_EXEC)
    MprotectExec { file: PathBuf },
    /// IORING_OP_OPENAT(FILE, O_RDONLY) through io_uring: no open(2) syscall at all
    IoUringOpen { file: PathBuf },
    /// TCP connect to ADDR:PORT (2 s timeout)
    Connect { addr: SocketAddr },
}

fn main() {
    let answer = match Cli::parse().act {
        Act::Open { file } => std::fs::File::open(file).map(drop),
        Act::MmapExec { file } => map(&file, false),
        Act::MprotectExec { file } => map(&file, true),
        Act::IoUringOpen { file } => uring_open(&file),
        Act::Connect { addr } => {
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop)
        }
    };
    match answer {
        Ok(()) => println!("ok"),
        Err(e) => println!("error {} {e}", e.raw_os_error().unwrap_or(0)),
    }
}

fn map(file: &std::path::Path, then_protect: bool) -> io::Result<()> {
    let f = std::fs::File::open(file)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let first = if then_protect {
        libc::PROT_READ
    } else {
        libc::PROT_READ | libc::PROT_EXEC
    };
    // SAFETY: a fresh private mapping of our own open file; unmapped below.
    let addr = unsafe { libc::mmap(std::ptr::null_mut(), 4096, first, libc::MAP_PRIVATE, fd, 0) };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let result = if then_protect {
        // SAFETY: the mapping made above, one page.
        if unsafe { libc::mprotect(addr, 4096, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    } else {
        Ok(())
    };
    // SAFETY: as above.
    unsafe { libc::munmap(addr, 4096) };
    result
}

fn uring_open(file: &std::path::Path) -> io::Result<()> {
    let path = CString::new(file.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL"))?;
    let mut ring = IoUring::new(4)?;
    let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
        .flags(libc::O_RDONLY | libc::O_CLOEXEC)
        .build();
    // SAFETY: `path` outlives the submission (we wait for its completion below).
    unsafe { ring.submission().push(&open) }
        .map_err(|_| io::Error::other("submission queue full"))?;
    ring.submit_and_wait(1)?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| io::Error::other("no completion"))?;
    let res = cqe.result();
    if res < 0 {
        return Err(io::Error::from_raw_os_error(-res));
    }
    // SAFETY: the descriptor io_uring opened for us.
    unsafe { libc::close(res) };
    Ok(())
}
