//! `unix-connect`: AF_UNIX stream connect + close against an acceptor thread in this
//! process, on a socket path of its own in a directory no rule watches: every op crosses
//! the connect hook's AF_UNIX branch once (issue 19: it reads the socket path and sends
//! only what a rule's socket paths could match, such as a container runtime's socket).

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::tcp::{accept_and_close, connect_to};
use super::{run_for, Report};

/// Connects between clock reads.
const BATCH: u32 = 8;

pub fn run(dir: &Path, duration: Duration) -> Result<Report> {
    let path = dir.join(format!("rasp-workload-unix.{}.sock", std::process::id()));
    let addr = unix_addr(&path)?;
    let listener =
        Listener::bind(&path, &addr).with_context(|| format!("listening on {}", path.display()))?;
    let fd = listener.fd.as_raw_fd();
    // The acceptor runs until the process exits; it holds no state worth tearing down.
    thread::Builder::new()
        .name("acceptor".into())
        .spawn(move || accept_and_close(fd))
        .context("starting the acceptor thread")?;
    let tally = run_for(duration, BATCH, || connect(&addr).map(drop))
        .with_context(|| format!("connecting to {}", path.display()))?;
    Ok(Report::timed(tally).with("socket", path.display().to_string()))
}

/// The listening socket, its path removed when dropped.
struct Listener {
    fd: OwnedFd,
    path: PathBuf,
}

impl Listener {
    fn bind(path: &Path, addr: &libc::sockaddr_un) -> io::Result<Listener> {
        let fd = socket()?;
        // SAFETY: addr is a valid sockaddr_un and its size is passed with it.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (addr as *const libc::sockaddr_un).cast(),
                mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if bound != 0 {
            return Err(io::Error::last_os_error());
        }
        let listener = Listener {
            fd,
            path: path.to_path_buf(),
        };
        // SAFETY: plain syscall on a socket we own.
        if unsafe { libc::listen(listener.fd.as_raw_fd(), libc::SOMAXCONN) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(listener)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Gone already only if someone else removed it: nothing to report.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn connect(addr: &libc::sockaddr_un) -> io::Result<OwnedFd> {
    let sock = socket()?;
    connect_to(&sock, addr)?;
    Ok(sock)
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd it returns is owned by the OwnedFd below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `path` as a socket address; refused when it does not fit `sun_path` with its NUL.
fn unix_addr(path: &Path) -> Result<libc::sockaddr_un> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        bail!(
            "socket path {} is too long for AF_UNIX ({} bytes at most) or has a NUL",
            path.display(),
            addr.sun_path.len() - 1
        );
    }
    for (slot, byte) in addr.sun_path.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_and_removes_its_socket() {
        let dir = std::env::temp_dir();
        let report = run(&dir, Duration::from_millis(20)).expect("connects");
        let line = report.to_string();
        assert!(line.contains("\"rate\":"), "{line}");
        let path = dir.join(format!("rasp-workload-unix.{}.sock", std::process::id()));
        assert!(!path.exists(), "{} left behind", path.display());
    }

    #[test]
    fn a_path_too_long_is_refused_with_its_name() {
        let long = Path::new("/tmp").join("x".repeat(200));
        let err = unix_addr(&long).expect_err("too long");
        assert!(err.to_string().contains("too long"), "{err}");
    }
}
