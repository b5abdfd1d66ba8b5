//! Drains the `EVENTS` ring buffer on a thread of its own: sleep in `poll(2)` until the
//! kernel signals data, take everything that is there, hand it on in batches, and during a
//! storm let records pile up for a moment between passes so that one wakeup carries many
//! events instead of one. Also reads the kernel's per-CPU drop and read-error counters for
//! `status`.
//!
//! Why a thread and not a tokio task: the kernel wakes the consumer whenever it has caught
//! up, so at a few thousand events a second every event was its own epoll wakeup, tokio task
//! poll and thread switch — measured at ~2/3 of the agent's CPU in a fork storm. A plain
//! thread can sleep a precise sub-millisecond interval between passes (tokio's timer has a
//! 1 ms granularity) and never hops between workers.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use rasp_common::{loss::LossEffect, LossSite};

use super::{decode, latency::Histogram, BootClock, DecodeError, Event, Kind};

/// Most events handed on at once: bounds the batch buffer and how long the process table
/// lock is held per batch, and keeps the per-batch allocations small enough to be recycled
/// by the allocator instead of consolidated (1024 showed `malloc_consolidate` in profiles).
pub const MAX_BATCH: usize = 256;

/// Data arriving sooner than this after the reader started waiting means a storm: after the
/// pass, wait this long before the next one, so that records accumulate. Adds at most this
/// much latency, only under load (an isolated event is still taken at once), and caps
/// wakeups at ~1000/s. A thread switch costs ~15 µs on the 2-core VM we measure on, so
/// shorter waits showed up as tens of percent of the agent's CPU in a fork storm; at
/// 1M events/s a millisecond of ~1.4 KiB file records is ~1.4 MiB, well inside the ring.
pub const COALESCE: Duration = Duration::from_millis(1);

/// The pause after a storm pass that held only bulk records (`Kind::is_bulk`: exec, fork,
/// exit, query, plaintext), which the kernel sent without a wakeup and so may wait for the
/// deadline anyway. Under an exec storm (~1000 execs/s) passes 1 ms apart were one thread
/// switch per exec, a third of the agent's CPU; 5 ms apart they carry five times the
/// events each. A pass with any record that asked for a wakeup keeps `COALESCE`.
pub const BULK_COALESCE: Duration = Duration::from_millis(5);

/// Longest the reader sleeps with records pending: exec, fork and exit records are sent
/// without a wakeup (a wakeup is an interrupt per record), so this bounds their latency
/// when no file, library or connect record comes along to wake the reader. An idle agent
/// pays 100 empty wakeups a second for it.
pub const DEADLINE: Duration = Duration::from_millis(10);

/// Bytes taken off the ring per event kind: with the received counts, the mean record
/// size, and so how many events the ring holds.
#[derive(Default)]
pub struct RecordBytes([std::sync::atomic::AtomicU64; Kind::ALL.len()]);

impl RecordBytes {
    fn add(&self, kind: Kind, n: usize) {
        self.0[kind.index()].fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self, kind: Kind) -> u64 {
        self.0[kind.index()].load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Wakes the reader out of `poll` for shutdown (an eventfd).
pub struct StopSignal {
    fd: OwnedFd,
}

impl StopSignal {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is checked and then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        Ok(StopSignal {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Ask the reader to return (idempotent).
    pub fn raise(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own eventfd. A full counter (EAGAIN)
        // still leaves the fd readable, which is all the reader looks at.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// Drain `ring` until `stop` is raised. Every record is decoded (failures go to `on_error`)
/// and its kernel→dequeue latency recorded in `latency`; `deliver` gets the decoded events in
/// batches of at most `MAX_BATCH` and drains the vector it is given (its capacity is reused).
/// Blocks: run it on a thread of its own.
pub fn drain(
    mut ring: RingBuf<MapData>,
    clock: BootClock,
    stop: &StopSignal,
    latency: &Histogram,
    bytes: &RecordBytes,
    mut deliver: impl FnMut(&mut Vec<Event>),
    mut on_error: impl FnMut(DecodeError),
) -> io::Result<()> {
    let mut batch: Vec<Event> = Vec::with_capacity(MAX_BATCH);
    // Records stamped before we started reading waited for the agent to start, not for the
    // pipeline: they would make the since-start percentiles meaningless.
    let started_ns = BootClock::boot_now_ns();
    loop {
        let waiting_since = Instant::now();
        match wait(ring.as_fd().as_raw_fd(), stop, DEADLINE)? {
            Wake::Stop => return Ok(()),
            Wake::Interrupted => continue,
            Wake::Ready => {}
        }
        // Data that came while we were busy or within COALESCE of waiting: a storm.
        let storm = waiting_since.elapsed() < COALESCE;
        let mut urgent = false;
        while let Some(item) = ring.next() {
            match decode(&item, clock) {
                Ok(ev) => {
                    urgent |= !ev.kind().is_bulk();
                    bytes.add(ev.kind(), item.len());
                    if ev.ts_boot_ns >= started_ns {
                        latency.record_since(ev.ts_boot_ns, BootClock::boot_now_ns());
                    }
                    batch.push(ev);
                }
                Err(e) => on_error(e),
            }
            drop(item);
            if batch.len() >= MAX_BATCH {
                deliver(&mut batch);
                batch.clear();
            }
        }
        if !batch.is_empty() {
            deliver(&mut batch);
            batch.clear();
        }
        if storm {
            std::thread::sleep(if urgent { COALESCE } else { BULK_COALESCE });
        }
    }
}

/// Why `wait` returned.
pub enum Wake {
    /// The ring has data, or the deadline passed.
    Ready,
    /// A signal interrupted the wait: wait again.
    Interrupted,
    /// `stop` was raised.
    Stop,
}

/// Sleep until the ring buffer `ring_fd` has data, `deadline` passes, or `stop` is raised.
pub fn wait(ring_fd: RawFd, stop: &StopSignal, deadline: Duration) -> io::Result<Wake> {
    let mut fds = [
        libc::pollfd {
            fd: ring_fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfds, and their count.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            deadline.as_millis() as libc::c_int,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(Wake::Interrupted);
        }
        return Err(e);
    }
    Ok(if fds[1].revents != 0 {
        Wake::Stop
    } else {
        Wake::Ready
    })
}

/// The kernel's loss counters: per `LossSite`, summed over CPUs, with the line of the last
/// loss at each site.
pub struct KernelCounters {
    losses: PerCpuArray<MapData, u64>,
    lines: Array<MapData, u32>,
}

/// One site's losses since the programs were loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteLoss {
    pub site: LossSite,
    pub count: u64,
    /// Source line in rasp-ebpf of the most recent loss there.
    pub line: u32,
}

impl KernelCounters {
    pub fn new(losses: PerCpuArray<MapData, u64>, lines: Array<MapData, u32>) -> Self {
        KernelCounters { losses, lines }
    }

    /// Every site that lost something (a map read that fails counts as nothing lost there:
    /// the maps are ours and fixed-size, so that would be an agent bug, logged).
    pub fn sites(&self) -> Vec<SiteLoss> {
        LossSite::ALL
            .iter()
            .filter_map(|&site| {
                let count: u64 = match self.losses.get(&(site as u32), 0) {
                    Ok(v) => v.iter().sum(),
                    Err(e) => {
                        tracing::warn!(site = site.name(), error = %e, "loss counter unreadable");
                        0
                    }
                };
                (count > 0).then(|| SiteLoss {
                    site,
                    count,
                    line: self.lines.get(&(site as u32), 0).unwrap_or(0),
                })
            })
            .collect()
    }
}

/// Per-kind totals of `sites`: (events dropped, events sent incomplete).
pub fn per_kind(sites: &[SiteLoss], kind: Kind) -> (u64, u64) {
    sites
        .iter()
        .filter(|s| s.site.kind().map(Kind::from_kernel) == Some(kind))
        .fold((0, 0), |(d, i), s| match s.site.effect() {
            LossEffect::Dropped => (d + s.count, i),
            LossEffect::Incomplete => (d, i + s.count),
        })
}
