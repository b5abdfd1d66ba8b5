//! libpq: the text of every query an application hands to libpq, from uprobes on the three
//! functions every query path meets (`PQexec` → `PQsendQuery`, `PQexecParams` →
//! `PQsendQueryParams`, `PQprepare` → `PQsendPrepare`, through the PLT), so each query is
//! reported once. The agent picks each attach point (an instruction the kernel emulates,
//! with the argument registers still intact) and attaches these per library file.

use aya_ebpf::{
    helpers::generated::bpf_probe_read_user_str, macros::uprobe, programs::ProbeContext,
};
use core::{mem::size_of, ptr::addr_of_mut};
use rasp_common::{
    limits::SQL_QUERY_CAP,
    record::{
        SqlQueryRecord, SQL_FN_SEND_PREPARE, SQL_FN_SEND_QUERY, SQL_FN_SEND_QUERY_PARAMS,
        SQL_QUERY_FAILED, SQL_QUERY_TRUNCATED,
    },
    EventKind, LossSite,
};

use crate::{
    event::current_header,
    kernel::{is_agent, offsets},
    maps::{loss, wake_flags, Draft},
};

const SQL_FIXED: u32 = size_of::<SqlQueryRecord>() as u32;
const _: () = assert!(SQL_FIXED as usize + SQL_QUERY_CAP <= rasp_common::record::SCRATCH_BYTES);

/// `PQsendQuery(PGconn *conn, const char *query)`.
#[uprobe]
pub fn rasp_pq_send_query(ctx: ProbeContext) -> u32 {
    let query: u64 = ctx.arg(1).unwrap_or(0);
    capture(&ctx, SQL_FN_SEND_QUERY, query)
}

/// `PQsendQueryParams(PGconn *conn, const char *command, int nParams, ...)`.
#[uprobe]
pub fn rasp_pq_send_query_params(ctx: ProbeContext) -> u32 {
    let query: u64 = ctx.arg(1).unwrap_or(0);
    capture(&ctx, SQL_FN_SEND_QUERY_PARAMS, query)
}

/// `PQsendPrepare(PGconn *conn, const char *stmtName, const char *query, ...)`.
#[uprobe]
pub fn rasp_pq_send_prepare(ctx: ProbeContext) -> u32 {
    let query: u64 = ctx.arg(2).unwrap_or(0);
    capture(&ctx, SQL_FN_SEND_PREPARE, query)
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
    // SAFETY: the fixed part lies at the start of the draft.
    unsafe {
        addr_of_mut!((*rec).header).write(current_header(EventKind::SqlQuery, o, total as usize));
        addr_of_mut!((*rec).function).write(function);
        addr_of_mut!((*rec).flags).write(flags);
        addr_of_mut!((*rec).conn).write(conn);
        addr_of_mut!((*rec).query_len).write(query_len);
        addr_of_mut!((*rec)._pad).write(0);
    }
    draft.send(total, wake_flags(), LossSite::SqlSend, line!());
    0
}
