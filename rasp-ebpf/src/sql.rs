//! libpq: the text of every query an application hands to libpq, from uprobes on the three
//! functions every query path meets (`PQexec` → `PQsendQuery`, `PQexecParams` →
//! `PQsendQueryParams`, `PQprepare` → `PQsendPrepare`, through the PLT), so each query is
//! reported once. The agent picks each attach point (an instruction the kernel emulates,
//! with the argument registers still intact) and attaches these per library file.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_FORCE_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_attach_cookie, bpf_ktime_get_boot_ns, bpf_probe_read_user_str,
            bpf_send_signal_thread,
        },
    },
    macros::uprobe,
    programs::ProbeContext,
    EbpfContext,
};
use core::{mem::size_of, ptr::addr_of_mut};
use rasp_common::{
    hold::{HeldQuery, PrecheckState, PRECHECK_BYTES},
    limits::SQL_QUERY_CAP,
    record::{
        SqlQueryRecord, SQL_FN_SEND_PREPARE, SQL_FN_SEND_QUERY, SQL_FN_SEND_QUERY_PARAMS,
        SQL_QUERY_FAILED, SQL_QUERY_HELD, SQL_QUERY_TRUNCATED,
    },
    EventKind, LossSite,
};

use crate::{
    event::current_header,
    kernel::{is_agent, offsets, IterNum},
    maps::{loss, quiet_flags, Draft, DECISIONS, HELD, HOLD_TGIDS, PRECHECK_STATE},
};

const SIGCONT: u32 = 18;
const SIGSTOP: u32 = 19;

const SQL_FIXED: u32 = size_of::<SqlQueryRecord>() as u32;
const _: () = assert!(SQL_FIXED as usize + SQL_QUERY_CAP <= rasp_common::record::SCRATCH_BYTES);

/// One program for the three functions; the attach cookie says which (`SQL_FN_*`), and so
/// which register holds the query. Three copies of the same body cost the verifier three
/// times (about 540k instructions each, half of the agent's start).
/// - `PQsendQuery(PGconn *conn, const char *query)`
/// - `PQsendQueryParams(PGconn *conn, const char *command, int nParams, ...)`
/// - `PQsendPrepare(PGconn *conn, const char *stmtName, const char *query, ...)`
#[uprobe]
pub fn rasp_pq_send(ctx: ProbeContext) -> u32 {
    // SAFETY: the helper reads the cookie of the link that ran this program.
    let function = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32;
    // Both argument registers are read at their fixed offsets, volatile: the compiler would
    // otherwise select the offset and load once from a moved context pointer, which the
    // verifier refuses.
    // SAFETY: `regs` is the probe's register frame; fixed fields of it are read.
    let (second, third) = unsafe {
        (
            core::ptr::read_volatile(core::ptr::addr_of!((*ctx.regs).rsi)),
            core::ptr::read_volatile(core::ptr::addr_of!((*ctx.regs).rdx)),
        )
    };
    let query: u64 = match function {
        SQL_FN_SEND_QUERY | SQL_FN_SEND_QUERY_PARAMS => second,
        SQL_FN_SEND_PREPARE => third,
        _ => {
            // Attached without a cookie: no way to tell where the query is.
            loss(LossSite::SqlRead, line!());
            return 0;
        }
    };
    capture(&ctx, function, query)
}

#[inline(always)]
fn capture(ctx: &ProbeContext, function: u32, query: u64) -> u32 {
    if is_agent() {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    let conn: u64 = ctx.arg(0).unwrap_or(0);
    let Some(draft) = Draft::begin() else {
        return 0;
    };
    let base = draft.base();
    let mut flags = 0u32;
    let query_len = if query == 0 {
        // libpq refuses a null query itself ("command string is a null pointer").
        flags |= SQL_QUERY_FAILED;
        0
    } else {
        // SAFETY: `base + SQL_FIXED .. + SQL_QUERY_CAP` lies inside the scratch buffer.
        let n = unsafe {
            bpf_probe_read_user_str(
                base.add(SQL_FIXED as usize) as *mut _,
                SQL_QUERY_CAP as u32,
                query as *const _,
            )
        };
        if n <= 0 {
            flags |= SQL_QUERY_FAILED;
            loss(LossSite::SqlRead, line!());
            0
        } else {
            // `n` counts the NUL; a string that filled the buffer may go on beyond it.
            let len = (n as u32 - 1) & (SQL_QUERY_CAP as u32 - 1);
            if n as usize >= SQL_QUERY_CAP {
                flags |= SQL_QUERY_TRUNCATED;
            }
            len
        }
    };
    let total = SQL_FIXED + query_len;
    let rec = base as *mut SqlQueryRecord;
    let header = current_header(EventKind::SqlQuery, o, total as usize);
    let start_ns = header.start_ns;
    // SAFETY: the fixed part lies at the start of the draft.
    unsafe {
        addr_of_mut!((*rec).header).write(header);
        addr_of_mut!((*rec).function).write(function);
        addr_of_mut!((*rec).flags).write(flags);
        addr_of_mut!((*rec).conn).write(conn);
        addr_of_mut!((*rec).query_len).write(query_len);
        addr_of_mut!((*rec)._pad).write(0);
    }
    // Held processes only (one hash lookup for every other caller): a query with a tell
    // stops its thread before libpq sends a byte.
    if query_len > 0 && held_process() {
        // SAFETY: the text follows the fixed part in the draft.
        let tells = precheck(unsafe { base.add(SQL_FIXED as usize) }, query_len);
        if tells != 0 && hold(&draft, rec, total, function, tells, start_ns) {
            return 0;
        }
    }
    // No wakeup: a query record waits for the next record that wakes the reader, or for the
    // reader's 10 ms deadline, as TLS records do. Waking the reader for each query was an
    // interrupt per query (here an IPI: 13 of the program's 16 µs a query); held queries go
    // to the decision ring with a forced wakeup above.
    draft.send(total, quiet_flags(), LossSite::SqlSend, line!());
    0
}

#[inline(always)]
fn held_process() -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: presence is all that is read.
    unsafe { HOLD_TGIDS.get(&tgid) }.is_some()
}

/// The pre-check's tells over the first `PRECHECK_BYTES` of the query at `text` (in the
/// draft). An open-coded iterator (`bpf_iter_num`): the verifier checks the body until the
/// loop's state converges, not once per byte (a plain loop over 512 bytes ran out of its
/// 1M-instruction budget; `bpf_loop` needs BTF func_info this object does not carry). The
/// state machine lives in a per-CPU map slot and each byte is a call of `precheck_byte`:
/// values loaded from a map are unknown to the verifier, and whatever the state machine
/// computed stays in the callee's frame, gone when it returns, so the loop's head sees the
/// same verifier state every iteration and converges in two passes. (With the body inline,
/// Linux 6.12 compared the stale constants the body left in registers and stack slots at
/// the loop's head, never converged, and refused the program after 1M instructions; 6.15
/// and later see they are dead.)
#[inline(always)]
fn precheck(text: *const u8, len: u32) -> u32 {
    let Some(slot) = PRECHECK_STATE.get_ptr_mut(0) else {
        return 0;
    };
    let n = if len < PRECHECK_BYTES {
        len
    } else {
        PRECHECK_BYTES
    };
    // SAFETY: a valid per-CPU slot of our own map (uprobes run with migration disabled; a
    // preempting program on this CPU cannot reach this code: it is only the query probes,
    // which do not nest).
    unsafe { core::ptr::write_volatile(slot, PrecheckState::default()) };
    let mut it = IterNum(0);
    it.new(0, n as i32);
    while let Some(i) = it.next() {
        // SAFETY: `text` is the query's start in the draft; the index is masked inside the
        // checked bytes, which lie inside the scratch buffer.
        let c = unsafe { *text.add((i as u32 & (PRECHECK_BYTES - 1)) as usize) };
        precheck_byte(slot, c);
    }
    it.destroy();
    // SAFETY: as above.
    let mut state = unsafe { core::ptr::read_volatile(slot) };
    state.finish()
}

/// One byte of the pre-check on the state in `slot` (see `precheck`: not inlined so the
/// state machine's values never reach the loop's head).
#[inline(never)]
fn precheck_byte(slot: *mut PrecheckState, c: u8) {
    // SAFETY: `slot` is the pre-check's per-CPU map slot (see `precheck`).
    unsafe {
        let mut state = core::ptr::read_volatile(slot);
        state.step(c);
        core::ptr::write_volatile(slot, state);
    }
}

/// Stop the calling thread and hand the record to the decision ring. False (nothing
/// held, the caller sends the record as usual) when the held table is full.
#[inline(always)]
fn hold(
    draft: &Draft,
    rec: *mut SqlQueryRecord,
    total: u32,
    function: u32,
    tells: u32,
    start_ns: u64,
) -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let held = HeldQuery {
        pid: (pid_tgid >> 32) as u32,
        tid,
        start_ns,
        // SAFETY: helper without arguments.
        held_at_ns: unsafe { bpf_ktime_get_boot_ns() },
        function,
        tells,
    };
    if HELD.insert(&tid, &held, BPF_NOEXIST as u64).is_err() {
        loss(LossSite::HoldTableFull, line!());
        return false;
    }
    // The signal first: it takes effect when this probe returns to user space, before the
    // next instruction of libpq. A record the agent read before the stop was queued could
    // otherwise be answered (SIGCONT) before the SIGSTOP it should cancel.
    // SAFETY: helper with a signal number.
    unsafe { bpf_send_signal_thread(SIGSTOP) };
    // SAFETY: the flags word of the record in the draft.
    unsafe { addr_of_mut!((*rec).flags).write((*rec).flags | SQL_QUERY_HELD) };
    if draft.output(&DECISIONS, total, BPF_RB_FORCE_WAKEUP as u64) {
        return true;
    }
    // No decision can come: continue (a pending SIGCONT discards the pending SIGSTOP).
    // SAFETY: as above.
    unsafe { bpf_send_signal_thread(SIGCONT) };
    let _ = HELD.remove(&tid);
    loss(LossSite::HoldSend, line!());
    // SAFETY: as above.
    unsafe { addr_of_mut!((*rec).flags).write((*rec).flags & !SQL_QUERY_HELD) };
    false
}
