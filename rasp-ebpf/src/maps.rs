//! Maps shared by every program: the ring buffer all records go to, and the per-CPU
//! counters that make losses visible (the agent sums them per kind for `status`).

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use rasp_common::{limits::DEFAULT_RING_BYTES, limits::KIND_SLOTS, EventKind};

/// One ring buffer for all events; the agent sets its size at load (`--ring-buffer-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Records that could not be reserved (ring buffer full), per event kind.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(KIND_SLOTS, 0);

/// Records sent with a field that could not be read (flagged in the record), per event kind.
#[map]
pub static READ_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(KIND_SLOTS, 0);

#[inline(always)]
fn bump(counters: &PerCpuArray<u64>, kind: EventKind) {
    if let Some(slot) = counters.get_ptr_mut(kind as u32) {
        // SAFETY: per-CPU slot, programs on one CPU do not preempt each other here.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub fn count_drop(kind: EventKind) {
    bump(&DROPS, kind);
}

#[inline(always)]
pub fn count_read_error(kind: EventKind) {
    bump(&READ_ERRORS, kind);
}
