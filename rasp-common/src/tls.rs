//! OpenSSL plaintext capture: what the TLS uprobes keep between calls and what userspace
//! configures. The record itself is `record::TlsRecord`.
//!
//! A read's bytes exist only when the call returns, so entry probes save the call's
//! arguments per thread (`TlsCall`, in a slot of an array indexed by thread id, see
//! `call_slot`) and return probes capture. Each
//! `SSL *` of a process has a `TlsConn`: its stream offsets per direction (so userspace sees
//! the gaps a capture bound leaves), its capture budget, and its socket fd once known.
//!
//! The fd is learned without reading OpenSSL's structures (their layout changed in 3.2): an
//! entry probe on an `SSL *` whose fd is unknown arms its CPU's `TlsArmed` slot with the
//! thread id; the first `read`/`write`/`sendto`/`recvfrom` that thread makes on that CPU
//! before the call returns is the socket under the `SSL *` (OpenSSL's socket BIO calls them
//! on the fd). The syscall stores the fd in the thread's own `TlsCall` and frees the slot at
//! once: a read that then blocks does not hold it, and another thread's call on that CPU
//! cannot take the fd away before the return probe. A thread that migrated (or was
//! preempted by another SSL call) between entry and syscall is missed that time and armed
//! again on its next call. `SSL_set_fd(ssl, fd)` gives the fd directly when the
//! application uses it.

/// `TLS_CONFIG` words userspace writes before attaching the probes.
pub const CONFIG_CALL_CAP: u32 = 0;
/// Bytes captured per connection per direction in one burst (a run of calls in the same
/// direction: a request, a response); a call in the other direction starts a new burst.
pub const CONFIG_CONN_BUDGET: u32 = 1;
pub const CONFIG_WORDS: u32 = 4;

/// `TLS_STATS` slots (per CPU): what the capture bounds did.
/// Calls captured (at least one record sent).
pub const STAT_CALLS_CAPTURED: u32 = 0;
/// Calls whose data was longer than the per-call cap (cut, flagged `TLS_TRUNCATED`).
pub const STAT_CALLS_CUT_BY_CAP: u32 = 1;
/// Calls cut short because the burst budget ran out mid-call.
pub const STAT_CALLS_CUT_BY_BUDGET: u32 = 2;
/// Calls not captured at all: the burst budget was spent.
pub const STAT_CALLS_OVER_BUDGET: u32 = 3;
/// Plaintext bytes the bounds left out.
pub const STAT_BYTES_SKIPPED: u32 = 4;
/// Plaintext bytes captured.
pub const STAT_BYTES_CAPTURED: u32 = 5;
/// Calls that moved no bytes (errors, WANT_READ/WANT_WRITE retries): nothing to capture.
pub const STAT_CALLS_EMPTY: u32 = 6;
/// Over-budget calls of the `ABI_EX` kind whose byte count was not read (reading it from
/// the caller's memory cost more than the rest of the return probe): their bytes are in
/// neither `STAT_BYTES_SKIPPED` nor the stream offsets (`TlsConn::uncounted`).
pub const STAT_CALLS_UNCOUNTED: u32 = 7;
pub const STAT_SLOTS: u32 = 8;

/// Direction indices in `TlsConn` (and the `TLS_OUTBOUND` flag's meaning).
pub const DIR_INBOUND: u32 = 0;
pub const DIR_OUTBOUND: u32 = 1;

/// How the probed function returns its byte count.
/// `SSL_read`/`SSL_write(ssl, buf, int num)`: the return value is the byte count.
pub const ABI_INT: u32 = 1;
/// `SSL_read_ex`/`SSL_write_ex(ssl, buf, size_t num, size_t *count)` and the internal
/// functions both forward to: returns 1 on success, the count is stored through `count`.
pub const ABI_EX: u32 = 2;

/// Key of `TLS_CONNS`: an `SSL *` is an address in one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsConnKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

/// One `SSL *`'s capture state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsConn {
    /// When the kernel first saw it (CLOCK_BOOTTIME ns): with the tgid and the pointer, the
    /// connection's identity (a freed `SSL *` whose address is reused is another one).
    pub id: u64,
    /// Plaintext bytes moved so far, per direction: the stream offset of the next call.
    pub bytes: [u64; 2],
    /// Bytes captured in the current burst, per direction.
    pub burst: [u32; 2],
    /// The socket under it, -1 while unknown.
    pub fd: i32,
    /// The direction of the last call plus one (0: none yet).
    pub last_dir: u32,
    /// Bit `1 << dir`: an over-budget call in that direction moved bytes `bytes[dir]` does
    /// not count (`STAT_CALLS_UNCOUNTED`). The next record of that direction carries
    /// `record::TLS_GAP_UNCOUNTED` and clears it.
    pub uncounted: u32,
    pub _pad: u32,
}

/// A call between its entry and return probes, in its thread's slot (`call_slot`; reads
/// and writes in separate arrays: a write from a signal handler inside a read does not
/// clobber it). The slot stays with the thread after the call: no map insert or delete per
/// call, and the thread's last fd-known `SSL *` spares the entry probe a connection lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsCall {
    /// pid_tgid of the thread that last used the slot. Another thread whose id maps to the
    /// same slot takes it over (a counted loss if a call was in flight).
    pub owner: u64,
    pub ssl: u64,
    pub buf: u64,
    pub num: u64,
    /// `size_t *` the count is stored through (`ABI_EX`), 0 otherwise.
    pub count_ptr: u64,
    /// The `SSL *` whose socket fd was known when the owner's last call returned.
    pub known_ssl: u64,
    /// `ABI_*`.
    pub abi: u32,
    /// The CPU whose `TLS_ARMED` slot this call armed, `NOT_ARMED` if none.
    pub armed_cpu: u32,
    /// The socket the thread's first socket syscall inside the call used, -1 until then.
    pub fd: i32,
    /// 1 between entry and return, 0 otherwise.
    pub in_call: u32,
}

/// The `TLS_READS`/`TLS_WRITES` slot of a thread: its id modulo the array's size.
#[inline(always)]
pub fn call_slot(pid_tgid: u64) -> u32 {
    (pid_tgid as u32) & (MAX_TLS_CALLS - 1)
}

pub const NOT_ARMED: u32 = u32::MAX;

/// One CPU's slot in `TLS_ARMED`: a thread inside an SSL call whose socket is unknown.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsArmed {
    /// Thread id (the kernel's pid); 0: disarmed.
    pub tid: u32,
    pub _pad: u32,
}

/// Slots in `TLS_ARMED` (CPUs at most; a CPU numbered beyond never arms).
pub const MAX_ARMED_CPUS: u32 = 1024;
/// `SSL *`s tracked at once (an LRU: an evicted one starts over with a new id, its offsets
/// from 0, and userspace sees a new stream).
pub const MAX_TLS_CONNS: u32 = 16384;
/// Per-thread call slots, per direction (a power of two: `call_slot` masks the thread id).
/// Two threads share a slot only if their ids are equal modulo this; threads of one
/// process are numbered close together.
pub const MAX_TLS_CALLS: u32 = 16384;
const _: () = assert!(MAX_TLS_CALLS.is_power_of_two());

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers only, explicit padding.
    unsafe impl aya::Pod for super::TlsConnKey {}
    unsafe impl aya::Pod for super::TlsConn {}
    unsafe impl aya::Pod for super::TlsCall {}
    unsafe impl aya::Pod for super::TlsArmed {}
}

const _: () = assert!(core::mem::size_of::<TlsConnKey>() == 16);
const _: () = assert!(core::mem::size_of::<TlsConn>() == 48);
const _: () = assert!(core::mem::size_of::<TlsCall>() == 64);
const _: () = assert!(core::mem::size_of::<TlsArmed>() == 8);
