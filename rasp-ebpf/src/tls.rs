//! OpenSSL: the plaintext applications hand to `SSL_write*` and get back from `SSL_read*`,
//! captured when the call returns (a read's bytes exist only then; a write that failed and
//! is retried is captured once, when it succeeds). Entry probes save the call per thread,
//! return probes capture within the bounds userspace configured (`TLS_CONFIG`), per
//! `SSL *` connection state in `TLS_CONNS` (`rasp_common::tls` explains the fields and how
//! the socket fd is learned without reading OpenSSL's structures). The agent picks where
//! each probe goes: on the internal function that `SSL_read`/`SSL_read_ex` (and the write
//! pair) forward to when its entry is an instruction the kernel emulates, otherwise on the
//! public functions themselves.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_smp_processor_id, bpf_ktime_get_boot_ns},
    },
    macros::{map, tracepoint, uprobe, uretprobe},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use core::{intrinsics::atomic_xadd, intrinsics::AtomicOrdering, mem::size_of, ptr::addr_of_mut};
use rasp_common::{
    limits::{TLS_CALL_CAP_MAX, TLS_CHUNK, TLS_DEFAULT_CALL_CAP, TLS_DEFAULT_CONN_BUDGET},
    record::{
        TlsRecord, TLS_CLOSED, TLS_GAP_UNCOUNTED, TLS_OUTBOUND, TLS_READ_FAILED, TLS_TRUNCATED,
    },
    tls::{
        call_slot, TlsArmed, TlsCall, TlsConn, TlsConnKey, ABI_EX, ABI_INT, CONFIG_CALL_CAP,
        CONFIG_CONN_BUDGET, CONFIG_WORDS, DIR_INBOUND, DIR_OUTBOUND, MAX_ARMED_CPUS, MAX_TLS_CALLS,
        MAX_TLS_CONNS, NOT_ARMED, STAT_BYTES_CAPTURED, STAT_BYTES_SKIPPED, STAT_CALLS_CAPTURED,
        STAT_CALLS_CUT_BY_BUDGET, STAT_CALLS_CUT_BY_CAP, STAT_CALLS_EMPTY, STAT_CALLS_OVER_BUDGET,
        STAT_CALLS_UNCOUNTED, STAT_SLOTS,
    },
    EventKind, LossSite,
};

use crate::{
    event::current_header,
    kernel::{is_agent, offsets, read_user, tp_field},
    maps::{forget, loss, quiet_flags, Draft},
};

/// `[CONFIG_CALL_CAP]`, `[CONFIG_CONN_BUDGET]`: bytes; 0 means the default.
#[map]
static TLS_CONFIG: Array<u32> = Array::with_max_entries(CONFIG_WORDS, 0);

/// What the capture bounds did (`tls::STAT_*`), per CPU.
#[map]
static TLS_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_SLOTS, 0);

#[map]
static TLS_CONNS: LruHashMap<TlsConnKey, TlsConn> = LruHashMap::with_max_entries(MAX_TLS_CONNS, 0);

/// Reads between entry and return, in their thread's slot (`tls::call_slot`). An array, not
/// a hash map keyed by thread: a slot is a load the verifier inlines, where a hash insert
/// and delete per call cost most of what the probes spent (measured in the commit).
#[map]
static TLS_READS: Array<TlsCall> = Array::with_max_entries(MAX_TLS_CALLS, 0);

#[map]
static TLS_WRITES: Array<TlsCall> = Array::with_max_entries(MAX_TLS_CALLS, 0);

/// Per CPU: the thread inside an SSL call whose socket is being learned (`tls::TlsArmed`).
/// An array indexed by CPU rather than a per-CPU map: the return probe, possibly on another
/// CPU, disarms the slot its entry armed.
#[map]
static TLS_ARMED: Array<TlsArmed> = Array::with_max_entries(MAX_ARMED_CPUS, 0);

const TLS_FIXED: u32 = size_of::<TlsRecord>() as u32;
const _: () = assert!(TLS_FIXED as usize + TLS_CHUNK <= rasp_common::record::SCRATCH_BYTES);
/// Records one call may take at the largest cap.
const CHUNKS_PER_CALL: u32 = TLS_CALL_CAP_MAX / TLS_CHUNK as u32;

/// `SSL_read(SSL *ssl, void *buf, int num)`.
#[uprobe]
pub fn rasp_ssl_read_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, &TLS_READS, ABI_INT);
    0
}

/// `SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes)`, and the internal
/// function `SSL_read`/`SSL_read_ex` forward to, which takes the same arguments.
#[uprobe]
pub fn rasp_ssl_read_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, &TLS_READS, ABI_EX);
    0
}

#[uretprobe]
pub fn rasp_ssl_read_return(ctx: RetProbeContext) -> u32 {
    finish(&ctx, &TLS_READS, DIR_INBOUND);
    0
}

/// `SSL_write(SSL *ssl, const void *buf, int num)`.
#[uprobe]
pub fn rasp_ssl_write_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, &TLS_WRITES, ABI_INT);
    0
}

/// `SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written)`, and the internal
/// function the write pair forwards to.
#[uprobe]
pub fn rasp_ssl_write_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, &TLS_WRITES, ABI_EX);
    0
}

#[uretprobe]
pub fn rasp_ssl_write_return(ctx: RetProbeContext) -> u32 {
    finish(&ctx, &TLS_WRITES, DIR_OUTBOUND);
    0
}

/// `SSL_set_fd(SSL *ssl, int fd)`: a connection starts on this socket (a reused `SSL *`
/// starts over as a new connection).
#[uprobe]
pub fn rasp_ssl_set_fd(ctx: ProbeContext) -> u32 {
    if is_agent() {
        return 0;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let fd = ctx.arg::<u64>(1).unwrap_or(u64::MAX) as i32;
    if ssl == 0 || fd < 0 {
        return 0;
    }
    let key = conn_key(ssl);
    let conn = TlsConn {
        // SAFETY: helper without arguments.
        id: unsafe { bpf_ktime_get_boot_ns() },
        fd,
        ..TlsConn::default()
    };
    if TLS_CONNS.insert(&key, &conn, 0).is_err() {
        loss(LossSite::TlsState, line!());
    }
    0
}

/// `SSL_free(SSL *ssl)`: the connection is over; userspace drops its stream.
#[uprobe]
pub fn rasp_ssl_free(ctx: ProbeContext) -> u32 {
    if is_agent() {
        return 0;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let key = conn_key(ssl);
    // SAFETY: a copy of the value, read once.
    let Some(conn) = (unsafe { TLS_CONNS.get(&key) }).copied() else {
        return 0; // never captured from: nothing for userspace to drop
    };
    let _ = TLS_CONNS.remove(&key);
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    let Some(draft) = Draft::begin() else {
        return 0;
    };
    let rec = draft.base() as *mut TlsRecord;
    // SAFETY: the fixed part lies at the start of the draft.
    unsafe {
        write_fixed(rec, o, ssl, &conn, 0, 0, TLS_CLOSED, 0);
    }
    draft.send(TLS_FIXED, quiet_flags(), LossSite::TlsSend, line!());
    0
}

/// Attached to `syscalls/sys_enter_{read,write,sendto,recvfrom}`: the fd is their first
/// argument. Every such call on the node runs this, so the common case is one array load
/// and a compare: is this thread the one armed on this CPU?
#[tracepoint]
pub fn rasp_tls_socket_io(ctx: TracePointContext) -> u32 {
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(slot) = TLS_ARMED.get_ptr_mut(cpu) else {
        return 0;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a valid slot of our own map; a racing write is at worst a missed or stale fd,
    // which userspace checks (the fd must be a socket).
    unsafe {
        if (*slot).tid == 0 || (*slot).tid != pid_tgid as u32 {
            return 0;
        }
        // The slot is free again: the fd goes with the thread's call.
        (*slot).tid = 0;
    }
    let fd = tp_field::<u64>(&ctx, SYSCALL_ARG0) as i32;
    for calls in [&TLS_READS, &TLS_WRITES] {
        if let Some(call) = calls.get_ptr_mut(call_slot(pid_tgid)) {
            // SAFETY: a valid slot of our own map; the owner check keeps another thread's
            // call out.
            unsafe {
                if (*call).owner == pid_tgid
                    && (*call).in_call != 0
                    && (*call).armed_cpu == cpu
                    && (*call).fd < 0
                {
                    (*call).fd = fd;
                    break;
                }
            }
        }
    }
    0
}

/// Offset of a syscall tracepoint's first argument (after the common fields and the nr).
const SYSCALL_ARG0: usize = 16;

#[inline(always)]
fn conn_key(ssl: u64) -> TlsConnKey {
    TlsConnKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        ssl,
    }
}

#[inline(always)]
fn enter(ctx: &ProbeContext, calls: &Array<TlsCall>, abi: u32) {
    if is_agent() {
        return;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let num: u64 = ctx.arg(2).unwrap_or(0);
    if ssl == 0 || buf == 0 {
        return;
    }
    let num = if abi == ABI_INT {
        // An int: negative counts are refused by OpenSSL itself.
        let n = num as i32;
        if n <= 0 {
            return;
        }
        n as u64
    } else {
        num
    };
    let count_ptr: u64 = if abi == ABI_EX {
        ctx.arg(3).unwrap_or(0)
    } else {
        0
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = calls.get_ptr_mut(call_slot(pid_tgid)) else {
        loss(LossSite::TlsState, line!());
        return;
    };
    // SAFETY (every access to `call`): a valid slot of our own map. Only its owner thread
    // writes it, but for a thread whose id maps to the same slot, which takes it over.
    let known_ssl = unsafe {
        if (*call).owner != pid_tgid {
            if (*call).in_call != 0 {
                // Another thread's call in flight (or a thread killed inside one): lost.
                loss(LossSite::TlsState, line!());
            }
            0
        } else {
            (*call).known_ssl
        }
    };
    // Learn the socket while it is unknown (`rasp_common::tls`). The thread's last call on
    // this `SSL *` may already say it is known.
    // SAFETY: presence and one field, read once.
    let fd_known =
        known_ssl == ssl || unsafe { TLS_CONNS.get(&conn_key(ssl)) }.is_some_and(|c| c.fd >= 0);
    let mut armed_cpu = NOT_ARMED;
    if !fd_known {
        // SAFETY: helper without arguments.
        let cpu = unsafe { bpf_get_smp_processor_id() };
        if let Some(slot) = TLS_ARMED.get_ptr_mut(cpu) {
            // SAFETY: a valid slot of our own map.
            unsafe {
                (*slot).tid = pid_tgid as u32;
            }
            armed_cpu = cpu;
        }
    }
    unsafe {
        *call = TlsCall {
            owner: pid_tgid,
            ssl,
            buf,
            num,
            count_ptr,
            known_ssl,
            abi,
            armed_cpu,
            fd: -1,
            in_call: 1,
        };
    }
}

#[inline(always)]
fn finish(ctx: &RetProbeContext, calls: &Array<TlsCall>, dir: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(slot) = calls.get_ptr_mut(call_slot(pid_tgid)) else {
        return;
    };
    // SAFETY: a valid slot of our own map; a copy, then the slot is released.
    let call = unsafe {
        if (*slot).owner != pid_tgid || (*slot).in_call == 0 {
            return; // an entry this probe did not see, or a call taken over (counted)
        }
        (*slot).in_call = 0;
        *slot
    };
    disarm(call.armed_cpu, pid_tgid as u32);
    let ret: i64 = ctx.ret::<i64>() as i32 as i64;
    let key = conn_key(call.ssl);
    let Some(conn) = conn_state(&key) else {
        return;
    };
    let d = (dir & 1) as usize;
    let budget = config(CONFIG_CONN_BUDGET, TLS_DEFAULT_CONN_BUDGET, u32::MAX) as u64;
    // SAFETY (every access to `conn` below): a valid value of our own map. An `SSL *` is
    // used by one thread at a time (OpenSSL objects are not thread-safe), so the plain
    // read-modify-writes do not race in practice; a race costs an offset, never memory.
    let spent = unsafe {
        if call.fd >= 0 && (*conn).fd < 0 {
            (*conn).fd = call.fd;
        }
        // The next call of this thread on this `SSL *` need not look the socket up while
        // it is known (a reused address whose new connection is not is corrected here).
        (*slot).known_ssl = if (*conn).fd >= 0 { call.ssl } else { 0 };
        (*conn).last_dir == dir + 1 && (*conn).burst[d] as u64 >= budget
    };
    if spent && call.abi == ABI_EX && ret == 1 && call.count_ptr != 0 {
        // Nothing of this successful call is captured: its byte count, read from the
        // caller's memory, is not worth what the read costs (measured: more than the rest
        // of the probe). The offsets of this direction undercount from here on, and the
        // next record says so.
        unsafe { (*conn).uncounted |= 1 << d };
        stat(STAT_CALLS_OVER_BUDGET, 1);
        stat(STAT_CALLS_UNCOUNTED, 1);
        return;
    }
    let len: u64 = if call.abi == ABI_INT {
        if ret <= 0 {
            0
        } else {
            ret as u64
        }
    } else if ret == 1 && call.count_ptr != 0 {
        let mut count: u64 = 0;
        if read_user(
            &mut count as *mut u64 as *mut u8,
            size_of::<u64>() as u32,
            call.count_ptr,
        )
        .is_err()
        {
            loss(LossSite::TlsCount, line!());
            return;
        }
        count
    } else {
        0
    };
    // Never more than the caller asked for, whatever the pointer said.
    let len = if len > call.num { call.num } else { len };
    if len == 0 {
        stat(STAT_CALLS_EMPTY, 1);
        return;
    }
    let (offset, burst) = unsafe {
        if (*conn).last_dir != dir + 1 {
            (*conn).burst[d] = 0;
            (*conn).last_dir = dir + 1;
        }
        let offset = (*conn).bytes[d];
        (*conn).bytes[d] = offset + len;
        (offset, (*conn).burst[d] as u64)
    };
    let cap = config(CONFIG_CALL_CAP, TLS_DEFAULT_CALL_CAP, TLS_CALL_CAP_MAX) as u64;
    let room = budget.saturating_sub(burst);
    let mut want = len;
    if want > cap {
        want = cap;
        stat(STAT_CALLS_CUT_BY_CAP, 1);
    }
    if want > room {
        want = room;
        if want == 0 {
            stat(STAT_CALLS_OVER_BUDGET, 1);
        } else {
            stat(STAT_CALLS_CUT_BY_BUDGET, 1);
        }
    }
    if want < len {
        stat(STAT_BYTES_SKIPPED, len - want);
    }
    if want == 0 {
        return;
    }
    // SAFETY: as above; the first record sent says whether uncounted bytes came before.
    let gap = unsafe {
        (*conn).burst[d] = (burst + want) as u32;
        let gap = (*conn).uncounted & (1 << d) != 0;
        (*conn).uncounted &= !(1 << d);
        gap
    };
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return;
    };
    // SAFETY: a copy of the value (the fixed part of every chunk is written from it).
    let snapshot = unsafe { *conn };
    let outbound = if dir == DIR_OUTBOUND { TLS_OUTBOUND } else { 0 };
    let mut sent: u64 = 0;
    for _ in 0..CHUNKS_PER_CALL {
        if sent >= want {
            break;
        }
        let mut n = want - sent;
        if n > TLS_CHUNK as u64 {
            n = TLS_CHUNK as u64;
        }
        let last = sent + n >= want;
        let Some(draft) = Draft::begin() else {
            return;
        };
        let base = draft.base();
        let mut flags = outbound;
        if gap && sent == 0 {
            flags |= TLS_GAP_UNCOUNTED;
        }
        if last && want < len {
            flags |= TLS_TRUNCATED;
        }
        // Through `forget`, then clamped: the compiler knows `n` <= TLS_CHUNK and dropped
        // a clamp it could prove redundant, and Linux 6.12's verifier, which had lost that
        // bound on the way, refused the read ("R2 unbounded memory access"). A clamp on a
        // value the compiler cannot see through stays in the program.
        let data_len = forget(n) as u32;
        let data_len = if data_len > TLS_CHUNK as u32 {
            TLS_CHUNK as u32
        } else {
            data_len
        };
        // SAFETY: `base + TLS_FIXED .. + TLS_CHUNK` lies inside the scratch buffer.
        let read = read_user(
            unsafe { base.add(TLS_FIXED as usize) },
            data_len,
            call.buf + sent,
        );
        let data_len = if read.is_err() {
            loss(LossSite::TlsRead, line!());
            flags |= TLS_READ_FAILED;
            0
        } else {
            data_len
        };
        let rec = base as *mut TlsRecord;
        // SAFETY: the fixed part lies at the start of the draft.
        unsafe {
            write_fixed(
                rec,
                o,
                call.ssl,
                &snapshot,
                offset + sent,
                len,
                flags,
                data_len,
            );
        }
        draft.send(
            TLS_FIXED + data_len,
            quiet_flags(),
            LossSite::TlsSend,
            line!(),
        );
        sent += n;
    }
    stat(STAT_CALLS_CAPTURED, 1);
    stat(STAT_BYTES_CAPTURED, want);
}

/// The connection state of `key`, created (fd unknown, a new id) on first sight.
#[inline(always)]
fn conn_state(key: &TlsConnKey) -> Option<*mut TlsConn> {
    if let Some(conn) = TLS_CONNS.get_ptr_mut(key) {
        return Some(conn);
    }
    let fresh = TlsConn {
        // SAFETY: helper without arguments.
        id: unsafe { bpf_ktime_get_boot_ns() },
        fd: -1,
        ..TlsConn::default()
    };
    // NOEXIST: a racing thread's fresh state (or SSL_set_fd's) wins.
    let _ = TLS_CONNS.insert(key, &fresh, aya_ebpf::bindings::BPF_NOEXIST as u64);
    let conn = TLS_CONNS.get_ptr_mut(key);
    if conn.is_none() {
        loss(LossSite::TlsState, line!());
    }
    conn
}

/// Disarm the slot `cpu` if this thread armed it and made no socket syscall since.
#[inline(always)]
fn disarm(cpu: u32, tid: u32) {
    if cpu == NOT_ARMED {
        return;
    }
    let Some(slot) = TLS_ARMED.get_ptr_mut(cpu) else {
        return;
    };
    // SAFETY: a valid slot of our own map.
    unsafe {
        if (*slot).tid == tid {
            (*slot).tid = 0;
        }
    }
}

/// A `TLS_CONFIG` word: `default` when unset (0), at most `max`.
#[inline(always)]
fn config(word: u32, default: u32, max: u32) -> u32 {
    let v = TLS_CONFIG.get(word).copied().unwrap_or(0);
    if v == 0 {
        default
    } else if v > max {
        max
    } else {
        v
    }
}

#[inline(always)]
fn stat(slot: u32, n: u64) {
    if let Some(p) = TLS_STATS.get_ptr_mut(slot) {
        // SAFETY: a valid per-CPU slot; atomic for the same reason as `maps::loss`.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, n) };
    }
}

/// Fill a record's fixed part.
///
/// # Safety
/// `rec` points at the start of a draft.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn write_fixed(
    rec: *mut TlsRecord,
    o: &rasp_common::KernelOffsets,
    ssl: u64,
    conn: &TlsConn,
    offset: u64,
    call_len: u64,
    flags: u32,
    data_len: u32,
) {
    addr_of_mut!((*rec).header).write(current_header(
        EventKind::Tls,
        o,
        (TLS_FIXED + data_len) as usize,
    ));
    addr_of_mut!((*rec).ssl).write(ssl);
    addr_of_mut!((*rec).conn_id).write(conn.id);
    addr_of_mut!((*rec).offset).write(offset);
    addr_of_mut!((*rec).call_len).write(call_len);
    addr_of_mut!((*rec).flags).write(flags);
    addr_of_mut!((*rec).fd).write(conn.fd);
    addr_of_mut!((*rec).data_len).write(data_len);
    addr_of_mut!((*rec)._pad).write(0);
}
