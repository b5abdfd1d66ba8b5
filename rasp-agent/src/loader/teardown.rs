//! Detaching at exit without holding the exit up. Closing a tracepoint or uprobe attachment
//! makes the kernel wait for RCU grace periods under a lock the closes share (measured here:
//! 60-140 ms a close, one after the other even from 32 threads at once), and the agent holds
//! some sixty of them: stopping took 5-6 s, all of it after the journal and the socket were
//! done. The enforcing programs (BPF-LSM, the quarantine egress filter) are detached here,
//! so nothing the agent decided outlives it; the observing ones are handed to a child
//! process that holds the last references and exits once this process has let go of its
//! own, so the kernel releases them in the child's exit while the agent is already gone.

use std::{io, os::fd::AsRawFd, os::fd::OwnedFd};

use aya::{
    programs::{trace_point::TracePointLink, uprobe::UProbeLink, Program},
    Ebpf,
};

/// An attachment the agent took out of its program, so it closes on its own.
pub enum OwnedLink {
    TracePoint(TracePointLink),
    UProbe(UProbeLink),
}

/// Detach the enforcing programs, then let a child process release everything else.
pub fn detach_all(mut ebpf: Ebpf, links: Vec<OwnedLink>) {
    let started = std::time::Instant::now();
    let mut enforcing = 0;
    for (_, program) in ebpf.programs_mut() {
        if matches!(program, Program::Lsm(_) | Program::CgroupSkb(_)) {
            enforcing += 1;
            unload(program);
        }
    }
    let handed = match Handover::start() {
        Ok(handover) => {
            drop(links);
            drop(ebpf);
            handover.finish();
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "no child to release the probes: detaching here (slow)");
            drop(links);
            drop(ebpf);
            false
        }
    };
    tracing::debug!(
        enforcing,
        handed_to_child = handed,
        ms = started.elapsed().as_millis() as u64,
        "detached"
    );
}

fn unload(program: &mut Program) {
    let result = match program {
        Program::Lsm(p) => p.unload(),
        Program::CgroupSkb(p) => p.unload(),
        _ => return,
    };
    if let Err(e) = result {
        // NotLoaded: a program that never loaded (its failure is in `status`).
        tracing::trace!(error = %e, "unload");
    }
}

/// A forked child holding a copy of every descriptor until `finish`.
struct Handover {
    /// Closing it tells the child this process has dropped its own references.
    release: OwnedFd,
}

impl Handover {
    fn start() -> io::Result<Handover> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two descriptors it creates.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both are descriptors pipe2 just created, owned once each.
        let (wait, release) = unsafe {
            use std::os::fd::FromRawFd;
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        };
        // SAFETY: the child calls only async-signal-safe functions (close, read, _exit,
        // errno)
        // before it exits, as a multi-threaded parent's child must.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                // SAFETY: the child's copies; nothing else in the child uses them.
                unsafe {
                    libc::close(release.as_raw_fd());
                    // Whoever reads the agent's output sees its end when the agent exits.
                    for fd in 0..=2 {
                        libc::close(fd);
                    }
                    let mut byte = 0u8;
                    // EOF once the parent closes `release`; EINTR: read again.
                    while libc::read(wait.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) < 0
                        && *libc::__errno_location() == libc::EINTR
                    {}
                    // Exiting closes the inherited descriptors: the kernel detaches here.
                    libc::_exit(0)
                }
            }
            child => {
                drop(wait);
                tracing::debug!(child, "probes handed to a child process to release");
                Ok(Handover { release })
            }
        }
    }

    /// This process has dropped its references: let the child go.
    fn finish(self) {
        drop(self.release);
    }
}
