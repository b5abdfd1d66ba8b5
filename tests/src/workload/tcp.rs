//! `tcp`: blocking loopback connect + close against an acceptor thread in this process,
//! so every op crosses the agent's connect hook once.
//!
//! The client closes with SO_LINGER 0, i.e. with an RST: neither side then keeps the
//! connection in TIME_WAIT, so a run of any length never exhausts the ephemeral ports
//! (at ~20k connects/s, TIME_WAIT's 60 s would use up the 28k-port range within 2 s).

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{run_for, Report};

/// Connects between clock reads.
const BATCH: u32 = 4;

pub fn run(duration: Duration) -> Result<Report> {
    let (listener, port) = listen_loopback().context("listening on 127.0.0.1")?;
    // The acceptor runs until the process exits; it holds no state worth tearing down.
    thread::Builder::new()
        .name("acceptor".into())
        .spawn(move || accept_and_close(listener.as_raw_fd()))
        .context("starting the acceptor thread")?;
    let tally = run_for(duration, BATCH, || connect_loopback(port).map(drop))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    Ok(Report::timed(tally).with("port", port))
}

/// Accepts and immediately closes every connection on `listener` (TCP or AF_UNIX) until
/// accept fails for good.
pub fn accept_and_close(listener: RawFd) {
    loop {
        // SAFETY: null address pointers are allowed: the peer address is not wanted.
        let fd = unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: fd is a connection we just accepted and close exactly once.
            unsafe { libc::close(fd) };
            continue;
        }
        match io::Error::last_os_error().raw_os_error() {
            // The client's RST can beat accept; the next connection is fine.
            Some(libc::EINTR | libc::ECONNABORTED) => continue,
            _ => return,
        }
    }
}

/// A listening socket on 127.0.0.1 with a kernel-chosen port, and that port. The backlog
/// is the kernel's maximum so a briefly descheduled acceptor never makes SYNs drop (a
/// dropped SYN stalls connect for a whole second).
fn listen_loopback() -> io::Result<(OwnedFd, u16)> {
    let listener = socket()?;
    let addr = loopback(0);
    // SAFETY: addr is a valid sockaddr_in and its size is passed with it.
    let bound = unsafe {
        libc::bind(
            listener.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain syscall on a socket we own.
    if unsafe { libc::listen(listener.as_raw_fd(), libc::SOMAXCONN) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut local: libc::sockaddr_in = loopback(0);
    let mut len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: local and len are valid out-pointers of the advertised size.
    let named = unsafe {
        libc::getsockname(
            listener.as_raw_fd(),
            (&mut local as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    if named != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((listener, u16::from_be(local.sin_port)))
}

/// A blocking TCP connection to 127.0.0.1:`port` that ends with an RST when dropped
/// (SO_LINGER 0), so it leaves no TIME_WAIT behind.
pub fn connect_loopback(port: u16) -> io::Result<OwnedFd> {
    let sock = socket()?;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: linger is a valid struct linger and its size is passed with it.
    let set = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    connect_to(&sock, &loopback(port))?;
    Ok(sock)
}

/// A socket address libc::connect takes as it is: `sockaddr_in`, `sockaddr_un`.
pub trait SocketAddress {}
impl SocketAddress for libc::sockaddr_in {}
impl SocketAddress for libc::sockaddr_un {}

/// Blocking connect(2) of `sock` to `addr`, retried when a signal interrupts it.
pub fn connect_to<A: SocketAddress>(sock: &OwnedFd, addr: &A) -> io::Result<()> {
    loop {
        // SAFETY: addr is one of the sockaddr types (the trait's only implementors) and its
        // size is passed with it.
        let connected = unsafe {
            libc::connect(
                sock.as_raw_fd(),
                (addr as *const A).cast(),
                mem::size_of::<A>() as libc::socklen_t,
            )
        };
        if connected == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd it returns is owned by the OwnedFd below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn loopback(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}
