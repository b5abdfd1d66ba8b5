//! io_uring submissions. Operations submitted through a ring (openat, connect, accept,
//! send, read ...) never pass the syscall tracepoints the file and network hooks use: the
//! gap the public "curing" rootkit hides in. `io_uring_submit_req` fires for every
//! request, in the submitting task (or its SQPOLL thread, a thread of the same process),
//! with the request: its opcode is read through the BTF offset, and only the opcodes some
//! rule names (`HOOK_IO_URING_OPS_*`) are sent. A raw BTF tracepoint: no syscall slow path.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use core::mem::size_of;
use rasp_common::{
    interest::{HOOK_ENABLED, HOOK_IO_URING, HOOK_IO_URING_OPS_HI, HOOK_IO_URING_OPS_LO},
    offsets::OFFSET_UNKNOWN,
    record::IoUringRecord,
    EventKind, LossSite,
};

use crate::{
    event::current_header,
    kernel::{current_task, fresh, is_agent, offsets, read_u32, read_u64, Kptr},
    maps::{hook_word, loss, wake_flags, EVENTS},
};

/// `PF_IO_WORKER`: io_uring's worker and SQPOLL threads.
const PF_IO_WORKER: u32 = 0x10;

#[btf_tracepoint(function = "io_uring_submit_req")]
pub fn rasp_io_uring(ctx: BtfTracePointContext) -> i32 {
    // io_uring_submit_req(struct io_kiocb *req)
    if hook_word(HOOK_IO_URING) & HOOK_ENABLED == 0 {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    let at = fresh(&o.io_kiocb_opcode);
    if at == OFFSET_UNKNOWN {
        return 0;
    }
    let req: Kptr = ctx.arg(0);
    // The opcode is a u8: read the word it starts and keep its low byte.
    let Ok(word) = read_u32(req, at) else {
        return 0;
    };
    let opcode = word & 0xff;
    let ops = if opcode < 32 {
        hook_word(HOOK_IO_URING_OPS_LO) >> opcode
    } else {
        hook_word(HOOK_IO_URING_OPS_HI) >> (opcode & 31)
    };
    if opcode >= 64 || ops & 1 == 0 || is_agent() {
        return 0;
    }
    let user_data_at = fresh(&o.io_kiocb_user_data);
    let user_data = if user_data_at == OFFSET_UNKNOWN {
        0
    } else {
        read_u64(req, user_data_at).unwrap_or(0)
    };
    let task_flags = read_u32(current_task(), o.task_flags).unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<IoUringRecord>(0) else {
        loss(LossSite::IoUringReserve, line!());
        return 0;
    };
    entry.write(IoUringRecord {
        header: current_header(EventKind::IoUring, o, size_of::<IoUringRecord>()),
        opcode,
        sq_thread: u32::from(task_flags & PF_IO_WORKER != 0),
        user_data,
    });
    entry.submit(wake_flags());
    0
}
