//! Drains the `EVENTS` ring buffer on tokio's `AsyncFd`: wake on readiness, take everything
//! that is there as one batch, hand the batch on. Also reads the kernel's per-CPU drop and
//! read-error counters for `status`.

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::io::{unix::AsyncFd, Interest};
use tokio::sync::watch;

use super::{decode, BootClock, Event, Kind};

/// Drain `ring` until `shutdown` flips, calling `deliver` once per batch of decoded events
/// (records that do not decode are counted by `on_error` and skipped).
pub async fn drain(
    ring: RingBuf<MapData>,
    clock: BootClock,
    mut shutdown: watch::Receiver<bool>,
    mut deliver: impl FnMut(Vec<Event>),
    mut on_error: impl FnMut(super::DecodeError),
) -> std::io::Result<()> {
    // SAFETY: the RingBuf owns its map fd and returns that same fd for as long as it lives,
    // and the AsyncFd owns the RingBuf.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    loop {
        let mut guard = tokio::select! {
            guard = fd.readable_mut() => guard?,
            _ = shutdown.changed() => return Ok(()),
        };
        let ring = guard.get_inner_mut();
        let mut batch = Vec::new();
        while let Some(item) = ring.next() {
            match decode(&item, clock) {
                Ok(ev) => batch.push(ev),
                Err(e) => on_error(e),
            }
            // Bound the batch so one storm cannot starve the rest of the runtime.
            if batch.len() >= 4096 {
                break;
            }
        }
        if batch.len() < 4096 {
            guard.clear_ready();
        }
        if !batch.is_empty() {
            deliver(batch);
        }
        if *shutdown.borrow() {
            return Ok(());
        }
    }
}

/// The kernel's per-CPU counters (drops on failed reserve, fields it could not read).
pub struct KernelCounters {
    drops: PerCpuArray<MapData, u64>,
    read_errors: PerCpuArray<MapData, u64>,
}

impl KernelCounters {
    pub fn new(drops: PerCpuArray<MapData, u64>, read_errors: PerCpuArray<MapData, u64>) -> Self {
        KernelCounters { drops, read_errors }
    }

    fn sum(map: &PerCpuArray<MapData, u64>, kind: Kind) -> u64 {
        map.get(&kind.kernel_slot(), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    pub fn dropped(&self, kind: Kind) -> u64 {
        Self::sum(&self.drops, kind)
    }

    pub fn read_errors(&self, kind: Kind) -> u64 {
        Self::sum(&self.read_errors, kind)
    }
}
