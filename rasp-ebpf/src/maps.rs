//! Maps shared by every program: the ring buffer all records go to, the per-CPU counters
//! that make losses visible (the agent sums them per kind for `status`), and the interest
//! maps userspace fills from the policies so programs drop what no rule can match
//! (`rasp_common::interest` has the bits).

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::generated::bpf_ringbuf_output,
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use core::intrinsics::{atomic_xadd, AtomicOrdering};
use rasp_common::{
    discovery::{ExecFileKey, MAX_SEEN_EXEC_FILES, SEEN_QUIET, SEEN_TARGET},
    hold::{HeldQuery, PrecheckState, DECISION_RING_BYTES, MAX_HELD, MAX_HOLD_TGIDS},
    interest::{NameKey, PathHints, FILTER_FLAGS, FILTER_WORDS, HINT_SETS, HOOK_WORDS},
    limits::{
        DEFAULT_RING_BYTES, MAX_CONNECT_CIDRS, MAX_CONNECT_PORTS, MAX_FILE_NAMES, MAX_LIB_NAMES,
        MAX_PATH_NAMES, SYSCALL_SLOTS,
    },
    loss::LOSS_SLOTS,
    offsets::SyscallShape,
    record::{Scratch, SCRATCH_BYTES},
    LossSite,
};

/// One ring buffer for all events; the agent sets its size at load (`--ring-buffer-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Events lost or sent incomplete, per `LossSite` (per CPU, atomic adds).
#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_SLOTS, 0);

/// The source line (in rasp-ebpf) of the last loss at each site, so `status` can say where.
#[map]
pub static LOSS_LINES: Array<u32> = Array::with_max_entries(LOSS_SLOTS, 0);

/// Count a loss at `site` (`line`: `line!()` where it happened).
#[inline(always)]
pub fn loss(site: LossSite, line: u32) {
    if let Some(slot) = LOSSES.get_ptr_mut(site as u32) {
        // SAFETY: a valid per-CPU slot of our map. Atomic (the BPF target's core has no
        // atomic types with fetch_add, hence the intrinsic; it compiles to BPF_XADD): a program preempted on this CPU
        // (uprobes run preemptible, with only migration disabled) must not lose a count.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1) };
    }
    if let Some(slot) = LOSS_LINES.get_ptr_mut(site as u32) {
        // SAFETY: a valid slot; a racing store of another line is harmless (either is true).
        unsafe { core::ptr::write_volatile(slot, line) };
    }
}

/// One word per CPU that `forget` passes values through.
#[map]
static FORGET: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `value`, as the verifier sees a load from map memory: an unknown scalar. Where a walk
/// can end at any of its steps, each end leaves a different exact length behind, and the
/// verifier explored everything after the walk once per end (a second walk after the first
/// once per pair, a record's remaining fields once per triple). Forgotten, the ends are one
/// state and the rest is explored once; the caller bounds the value again with a mask
/// before using it as an offset. A program preempted between the store and the load by
/// another on this CPU may read the other's value: a wrong length, still masked, never out
/// of bounds (the same two-instruction window as `Draft::begin`'s). 0 if the slot is
/// missing (it never is).
#[inline(always)]
pub fn forget(value: u64) -> u64 {
    match FORGET.get_ptr_mut(0) {
        // SAFETY: a valid per-CPU slot of our map; volatile so the compiler keeps the
        // round trip.
        Some(slot) => unsafe {
            core::ptr::write_volatile(slot, value);
            core::ptr::read_volatile(slot)
        },
        None => 0,
    }
}

/// Scratch buffers for records with payloads: two per CPU, so a program preempted while it
/// builds a record (possible for uprobes, which run with only migration disabled) does not
/// share its buffer with the program that preempted it. `SCRATCH_DEPTH` says how many are
/// in use on this CPU.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(2, 0);

#[map]
static SCRATCH_DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// A record being built in a scratch buffer; sent with `send`, released on drop.
pub struct Draft {
    base: *mut u8,
    depth: *mut u32,
    level: u32,
}

impl Draft {
    /// Take this CPU's free scratch buffer, or count `ScratchBusy` and give up.
    #[inline(always)]
    pub fn begin() -> Option<Draft> {
        let depth = SCRATCH_DEPTH.get_ptr_mut(0)?;
        // SAFETY: a valid per-CPU slot. Load and store are not one atomic step: a preemption
        // exactly between them can hand both programs the same buffer; the window is two
        // instructions wide, and such a record is at worst garbled, never out of bounds
        // (every length is bounded when it is used, and decoding checks them again).
        let level = unsafe { core::ptr::read_volatile(depth) };
        if level >= 2 {
            loss(LossSite::ScratchBusy, line!());
            return None;
        }
        let Some(slot) = SCRATCH.get_ptr_mut(level) else {
            loss(LossSite::ScratchBusy, line!());
            return None;
        };
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(depth, level + 1) };
        Some(Draft {
            base: slot as *mut u8,
            depth,
            level,
        })
    }

    /// The start of the buffer (`SCRATCH_BYTES` long).
    #[inline(always)]
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// Send the first `len` bytes (bounded to the buffer for the verifier) as one record
    /// with ring-buffer `flags` (`wake_flags()` or `quiet_flags()`); a full ring counts a
    /// loss at `site`.
    #[inline(always)]
    pub fn send(self, len: u32, flags: u64, site: LossSite, line: u32) {
        self.send_ref(len, flags, site, line);
    }

    /// `send` for a draft borrowed by an out-of-line function (its owner releases it).
    #[inline(always)]
    pub fn send_ref(&self, len: u32, flags: u64, site: LossSite, line: u32) {
        if !self.output(&EVENTS, len, flags) {
            loss(site, line);
        }
    }

    /// Output the first `len` bytes to `ring`; false if the ring was full.
    #[inline(always)]
    pub fn output(&self, ring: &RingBuf, len: u32, flags: u64) -> bool {
        let len = len & (SCRATCH_BYTES as u32 - 1);
        // SAFETY: `base..base+len` lies inside this CPU's scratch slot (masked above).
        let r = unsafe {
            bpf_ringbuf_output(
                ring as *const RingBuf as *mut _,
                self.base as *mut _,
                len as u64,
                flags,
            )
        };
        r >= 0
    }
}

impl Drop for Draft {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the per-CPU slot taken in `begin`.
        unsafe { core::ptr::write_volatile(self.depth, self.level) };
    }
}

/// Unconsumed bytes below which a record forces a wakeup (see `wake_flags`).
const FORCE_WAKE_BELOW: u64 = 8192;

/// Wakeup policy for records that matter now (exec, file, library, connect). The kernel's
/// default wakes the reader only when this record is the first it has not consumed; with
/// fork/exit records sent without a wakeup (`QUIET`) in front, an exec would then wait for
/// the reader's deadline. So: if a little data is already pending (the reader is asleep
/// with a few quiet records), force the wakeup; if a lot is pending, the reader is draining
/// or was already woken, and the default (no extra interrupt) is right.
#[inline(always)]
pub fn wake_flags() -> u64 {
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if pending > 0 && pending < FORCE_WAKE_BELOW {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        0
    }
}

/// For records of an act a program just stopped: the reader is woken whatever is pending,
/// so the detection does not wait for the bulk reader's deadline.
#[inline(always)]
pub fn wake_flags_now() -> u64 {
    BPF_RB_FORCE_WAKEUP as u64
}

/// SIGKILL the current task's process; delivered on its way back to user space.
#[inline(always)]
pub fn kill_current() {
    // SAFETY: a helper with a plain integer argument.
    unsafe { aya_ebpf::helpers::generated::bpf_send_signal(9) };
}

/// For the high-volume process records (exec, fork, exit): no wakeup; the next file,
/// library or connect record, or the reader's deadline (`events::reader::DEADLINE`, 10 ms),
/// brings them in, in order. Each avoided wakeup is an interrupt (an IPI in this VM,
/// measured at ~8 µs of the program's run time). Once a quarter of the ring is pending the
/// reader is woken all the same, so a burst cannot fill the ring while it sleeps.
#[inline(always)]
pub fn quiet_flags() -> u64 {
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let size = EVENTS.query(BPF_RB_RING_SIZE as u64);
    if pending > size / 4 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Overload priority: how full the ring may be (in eighths) before a record of a tier gives
/// way. Fork and exit records (the process tree; an exec's header carries its parent, and
/// the reaper finds the dead) yield past half; execs of files already known past three
/// quarters; everything rules match on (file, library, connect, query records, verdicts,
/// new executables) only when the ring is truly full. A storm of processes then leaves a
/// quarter of the ring for the records that make detections. Each shed record is a counted
/// loss at its own site.
pub const SHED_BULK_EIGHTHS: u64 = 4;
pub const SHED_EXEC_EIGHTHS: u64 = 6;

/// Is more than `eighths`/8 of the ring waiting for the reader?
#[inline(always)]
pub fn ring_past(eighths: u64) -> bool {
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let size = EVENTS.query(BPF_RB_RING_SIZE as u64);
    // Ring sizes are below 4 GiB: neither side overflows (and BPF has no 128-bit multiply
    // for a checked one).
    (pending << 3) > size.wrapping_mul(eighths)
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

/// Executable files (dev+inode) already reported to the agent (`rasp_common::discovery`):
/// `SEEN_QUIET` once reported, `SEEN_TARGET` for uprobe targets the agent marked.
#[map]
pub static SEEN_EXEC_FILES: LruHashMap<ExecFileKey, u32> =
    LruHashMap::with_max_entries(MAX_SEEN_EXEC_FILES, 0);

/// Should a mapping of `key` be reported? The first mapping of a file is (it is then
/// remembered, quiet), and every mapping of a target. Two CPUs racing on a new file: the
/// `BPF_NOEXIST` insert lets exactly one of them report it.
#[inline(always)]
pub fn exec_file_news(key: &ExecFileKey) -> bool {
    // SAFETY: the value is a plain u32 read once.
    match unsafe { SEEN_EXEC_FILES.get(key) } {
        Some(v) => *v == SEEN_TARGET,
        None => SEEN_EXEC_FILES
            .insert(key, &SEEN_QUIET, aya_ebpf::bindings::BPF_NOEXIST as u64)
            .is_ok(),
    }
}

/// Processes under an enforcing `sql_query` rule (tgid → 1), filled by the agent: their
/// flagged queries are held (`rasp_common::hold`).
#[map]
pub static HOLD_TGIDS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_HOLD_TGIDS, 0);

/// Held threads (tid → `HeldQuery`): the agent deletes an entry to decide it, the hold
/// watchdog to release it when the hold outlives its bound or the agent.
#[map]
pub static HELD: HashMap<u32, HeldQuery> = HashMap::with_max_entries(MAX_HELD, 0);

/// The hold pre-check's state machine while it runs (see `sql::precheck`).
#[map]
pub static PRECHECK_STATE: PerCpuArray<PrecheckState> = PerCpuArray::with_max_entries(1, 0);

/// Held queries' records: their own ring, each record a forced wakeup, so the agent's
/// decision thread never waits for the bulk ring's deadline.
#[map]
pub static DECISIONS: RingBuf = RingBuf::with_byte_size(DECISION_RING_BYTES, 0);

// ---- Issue-19 hooks -------------------------------------------------------------------------

/// `interest::HOOK_*` words: each hook family's switch and attribute filters.
#[map]
pub static HOOK_FILTER: Array<u32> = Array::with_max_entries(HOOK_WORDS, 0);

/// Directory names watched for the path hooks (`interest::PATH_*` bits), and their
/// summary (`FILE_FILTER`'s layout).
#[map]
pub static PATH_NAMES: HashMap<NameKey, u32> = HashMap::with_max_entries(2 * MAX_PATH_NAMES, 0);

#[map]
pub static PATH_FILTER: Array<u32> = Array::with_max_entries(FILTER_WORDS, 0);

/// Hashed component names (`interest::HINT_*` sets) for names passed to syscalls.
#[map]
pub static PATH_HINTS: Array<PathHints> = Array::with_max_entries(HINT_SETS, 0);

/// How each attached syscall passes its arguments, by syscall number (`SyscallShape`).
#[map]
pub static SYSCALL_SHAPES: Array<SyscallShape> = Array::with_max_entries(SYSCALL_SLOTS, 0);

/// A `HOOK_FILTER` word (0: nothing wanted).
#[inline(always)]
pub fn hook_word(index: u32) -> u32 {
    filter_word(&HOOK_FILTER, index)
}
