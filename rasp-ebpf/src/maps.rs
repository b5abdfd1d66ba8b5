//! Maps shared by every program: the ring buffer all records go to, the per-CPU counters
//! that make losses visible (the agent sums them per kind for `status`), and the interest
//! maps userspace fills from the policies so programs drop what no rule can match
//! (`rasp_common::interest` has the bits).

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use rasp_common::{
    interest::{NameKey, FILTER_FLAGS, FILTER_WORDS},
    limits::{
        DEFAULT_RING_BYTES, KIND_SLOTS, MAX_CONNECT_CIDRS, MAX_CONNECT_PORTS, MAX_FILE_NAMES,
        MAX_LIB_NAMES,
    },
    EventKind,
};

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

// Interest maps hold twice the entries userspace may install, so a reload can add the new
// set before removing the old one (never a moment with less watched than either set).

/// Path component name → `interest::READ_*` / `WRITE_ANY_DEPTH` / `CREATE_ANY_DEPTH` bits.
#[map]
pub static FILE_NAMES: HashMap<NameKey, u32> = HashMap::with_max_entries(2 * MAX_FILE_NAMES, 0);

/// `[FILTER_FLAGS]`: `interest::FILE_*` switches; `[FILTER_NAME_LENGTHS]`,
/// `[FILTER_NAME_BITS]`: what the installed names look like.
#[map]
pub static FILE_FILTER: Array<u32> = Array::with_max_entries(FILTER_WORDS, 0);

/// Path component name → `interest::LIB_*` depth bits.
#[map]
pub static LIB_NAMES: HashMap<NameKey, u32> = HashMap::with_max_entries(2 * MAX_LIB_NAMES, 0);

/// As `FILE_FILTER`, with `interest::LIB_ENABLED | LIB_ALL | LIB_FULL_WALK` switches.
#[map]
pub static LIB_FILTER: Array<u32> = Array::with_max_entries(FILTER_WORDS, 0);

/// `[FILTER_FLAGS]`: `interest::CONNECT_ENABLED | CONNECT_ALL`.
#[map]
pub static CONNECT_FILTER: Array<u32> = Array::with_max_entries(1, 0);

/// Destination port (host order) → `interest::PRESENT`.
#[map]
pub static CONNECT_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(2 * MAX_CONNECT_PORTS, 0);

/// IPv4 destination prefixes (address bytes in network order) → `interest::PRESENT`.
#[map]
pub static CONNECT_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(2 * MAX_CONNECT_CIDRS, 0);

/// IPv6 destination prefixes → `interest::PRESENT`.
#[map]
pub static CONNECT_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(2 * MAX_CONNECT_CIDRS, 0);

/// The flags word of a `*_FILTER` array; 0 (nothing wanted) if the lookup fails.
#[inline(always)]
pub fn filter_flags(filter: &Array<u32>) -> u32 {
    filter_word(filter, FILTER_FLAGS)
}

/// A word of a `*_FILTER` array (array lookups are inlined by the verifier: a few loads).
#[inline(always)]
pub fn filter_word(filter: &Array<u32>, index: u32) -> u32 {
    filter.get(index).copied().unwrap_or(0)
}

/// Is `addr` inside a watched prefix?
#[inline(always)]
pub fn watched_v4(addr: [u8; 4]) -> bool {
    CONNECT_V4.get(&Key::new(32, addr)).is_some()
}

#[inline(always)]
pub fn watched_v6(addr: [u8; 16]) -> bool {
    CONNECT_V6.get(&Key::new(128, addr)).is_some()
}
