//! Reaching into other processes and into the kernel: ptrace attach/seize/poke and
//! process_vm_readv/writev (credential theft from memory, code injection), kernel module
//! loads and unloads, BPF program loads by processes other than the agent, and packet and
//! raw IP sockets (sniffing). At syscall exit, successful calls only; each family has its
//! switch in `HOOK_FILTER`.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use core::{mem::size_of, ptr::addr_of_mut};
use rasp_common::{
    interest::{
        HOOK_BPF, HOOK_ENABLED, HOOK_MODULE, HOOK_PTRACE, HOOK_SOCKET, PTRACE_CLASS_ATTACH,
        PTRACE_CLASS_POKE, PTRACE_CLASS_SEIZE, PTRACE_CLASS_VM_READ, PTRACE_CLASS_VM_WRITE,
    },
    limits::{MODULE_NAME_CAP, PATH_CAP, SYSCALL_SLOTS},
    record::*,
    EventKind, KernelOffsets, LossSite,
};

use crate::{
    event::current_header,
    kernel::{current_task_btf, is_agent, offsets, read_user, tp_field},
    location::{read_user_string, syscall_arg, walk_base},
    maps::{hook_word, loss, wake_flags, Draft, EVENTS, SYSCALL_SHAPES},
    vfs::{file_of_fd, FileView},
};

const TP_SYSCALL_NR: usize = 8;
const TP_EXIT_RET: usize = 16;

/// The shape's operation for this syscall number (0: not ours).
#[inline(always)]
fn op_of(ctx: &TracePointContext) -> u32 {
    let nr: i64 = tp_field(ctx, TP_SYSCALL_NR);
    SYSCALL_SHAPES
        .get((nr as u32) & (SYSCALL_SLOTS - 1))
        .map_or(0, |s| s.op)
}

/// The shape op of ptrace(2) itself (its request is in the first argument).
pub const OP_PTRACE: u32 = 1;

/// Attached to `syscalls/sys_exit_ptrace`, `sys_exit_process_vm_readv` and
/// `sys_exit_process_vm_writev`.
#[tracepoint]
pub fn rasp_ptrace(ctx: TracePointContext) -> u32 {
    let ret: i64 = tp_field(&ctx, TP_EXIT_RET);
    if ret < 0 {
        return 0;
    }
    let watched = hook_word(HOOK_PTRACE);
    if watched & HOOK_ENABLED == 0 {
        return 0;
    }
    let op = op_of(&ctx);
    if op == 0 {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    let (request, target, addr) = if op == OP_PTRACE {
        (
            syscall_arg(o, 0) as u32,
            syscall_arg(o, 1) as u32,
            syscall_arg(o, 2),
        )
    } else {
        (op, syscall_arg(o, 0) as u32, 0)
    };
    let class = match request {
        PTRACE_ATTACH => PTRACE_CLASS_ATTACH,
        PTRACE_SEIZE => PTRACE_CLASS_SEIZE,
        PTRACE_POKETEXT | PTRACE_POKEDATA | PTRACE_POKEUSER => PTRACE_CLASS_POKE,
        PTRACE_VM_READ => PTRACE_CLASS_VM_READ,
        PTRACE_VM_WRITE => PTRACE_CLASS_VM_WRITE,
        _ => 0,
    };
    if watched & class == 0 || is_agent() {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<PtraceRecord>(0) else {
        loss(LossSite::PtraceReserve, line!());
        return 0;
    };
    entry.write(PtraceRecord {
        header: current_header(EventKind::Ptrace, o, size_of::<PtraceRecord>()),
        request,
        target,
        addr,
    });
    entry.submit(wake_flags());
    0
}

const MODULE_FIXED: u32 = size_of::<KernelModuleRecord>() as u32;
const PATH_MASK: u32 = 2 * PATH_CAP as u32 - 1;

/// Attached to `syscalls/sys_exit_init_module`, `sys_exit_finit_module` and
/// `sys_exit_delete_module` (absent on kernels built without module support: nothing to
/// watch there).
#[tracepoint]
pub fn rasp_kernel_module(ctx: TracePointContext) -> u32 {
    let ret: i64 = tp_field(&ctx, TP_EXIT_RET);
    if ret != 0 {
        return 0;
    }
    let watched = hook_word(HOOK_MODULE);
    let op = op_of(&ctx);
    if watched & HOOK_ENABLED == 0 || op == 0 || watched & (1 << (op & 31)) == 0 {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    module(o, op);
    0
}

#[inline(never)]
fn module(o: &KernelOffsets, op: u32) {
    let Some(draft) = Draft::begin() else { return };
    let base = draft.base();
    let mut flags = 0u32;
    let mut fd = -1i32;
    // SAFETY: the payload starts after the fixed part, inside the draft.
    let dst = unsafe { base.add(MODULE_FIXED as usize) };
    let name_len = if op == MODULE_OP_FINIT {
        fd = syscall_arg(o, 0) as i32;
        let file = if fd >= 0 {
            file_of_fd(o, current_task_btf(), fd as u32)
        } else {
            None
        };
        let walked = match file {
            Some(f) => {
                let view = FileView::of(o, f);
                walk_base::<true>(o, &(view.mnt, view.dentry), dst)
            }
            None => Err(-9),
        };
        match walked {
            Ok(w) => {
                if w.truncated {
                    flags |= MODULE_NAME_TRUNCATED;
                }
                w.len & PATH_MASK
            }
            Err(_) => {
                flags |= MODULE_NAME_FAILED;
                loss(LossSite::ModuleRead, line!());
                0
            }
        }
    } else if op == MODULE_OP_DELETE {
        match read_user_string(dst, MODULE_NAME_CAP as u32, syscall_arg(o, 0)) {
            Ok(n) => n & (2 * MODULE_NAME_CAP as u32 - 1),
            Err(_) => {
                flags |= MODULE_NAME_FAILED;
                loss(LossSite::ModuleRead, line!());
                0
            }
        }
    } else {
        0
    };
    let total = MODULE_FIXED + name_len;
    let rec = base as *mut KernelModuleRecord;
    // SAFETY: the fixed part lies at the start of the draft.
    unsafe {
        addr_of_mut!((*rec).header).write(current_header(
            EventKind::KernelModule,
            o,
            total as usize,
        ));
        addr_of_mut!((*rec).op).write(op);
        addr_of_mut!((*rec).flags).write(flags);
        addr_of_mut!((*rec).fd).write(fd);
        addr_of_mut!((*rec).name_len).write(name_len);
    }
    draft.send(total, wake_flags(), LossSite::ModuleSend, line!());
}

/// The part of `union bpf_attr` BPF_PROG_LOAD uses that the record keeps (through
/// `expected_attach_type` at byte 68).
const ATTR_READ: u32 = 72;

/// Attached to `syscalls/sys_exit_bpf`: a program load returns its new descriptor.
#[tracepoint]
pub fn rasp_bpf(ctx: TracePointContext) -> u32 {
    let ret: i64 = tp_field(&ctx, TP_EXIT_RET);
    if ret < 0 {
        return 0;
    }
    if hook_word(HOOK_BPF) & HOOK_ENABLED == 0 {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    if syscall_arg(o, 0) as u32 != BPF_PROG_LOAD || is_agent() {
        return 0;
    }
    let uattr = syscall_arg(o, 1);
    let size = syscall_arg(o, 2) as u32;
    let mut attr = [0u8; ATTR_READ as usize];
    let mut flags = 0u32;
    // Read no more than the caller handed the kernel; the rest stays zero, as the kernel
    // treats it.
    let want = if size < ATTR_READ { size } else { ATTR_READ };
    let read = if want >= ATTR_READ {
        read_user(attr.as_mut_ptr(), ATTR_READ, uattr)
    } else if want >= 64 {
        read_user(attr.as_mut_ptr(), 64, uattr)
    } else if want >= 8 {
        read_user(attr.as_mut_ptr(), 8, uattr)
    } else {
        Err(-22)
    };
    if read.is_err() {
        flags |= BPF_LOAD_ATTR_FAILED;
        loss(LossSite::BpfRead, line!());
    }
    let word = |at: usize| u32::from_ne_bytes([attr[at], attr[at + 1], attr[at + 2], attr[at + 3]]);
    let mut prog_name = [0u8; 16];
    prog_name.copy_from_slice(&attr[48..64]);
    let Some(mut entry) = EVENTS.reserve::<BpfLoadRecord>(0) else {
        loss(LossSite::BpfReserve, line!());
        return 0;
    };
    entry.write(BpfLoadRecord {
        header: current_header(EventKind::BpfLoad, o, size_of::<BpfLoadRecord>()),
        prog_type: word(0),
        insn_cnt: word(4),
        expected_attach_type: word(68),
        flags,
        prog_name,
    });
    entry.submit(wake_flags());
    0
}

/// Attached to `syscalls/sys_exit_socket`: a packet or raw IP socket was created. Every
/// socket(2) on the node runs this; the common case is one array load (the family's switch)
/// and, when some rule watches, three argument loads and a compare.
#[tracepoint]
pub fn rasp_socket(ctx: TracePointContext) -> u32 {
    let ret: i64 = tp_field(&ctx, TP_EXIT_RET);
    if ret < 0 {
        return 0;
    }
    let watched = hook_word(HOOK_SOCKET);
    if watched & HOOK_ENABLED == 0 {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    let family = syscall_arg(o, 0) as u32;
    let sock_type = syscall_arg(o, 1) as u32 & SOCK_TYPE_MASK;
    if watched & socket_class(family, sock_type) == 0 || is_agent() {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<SocketRecord>(0) else {
        loss(LossSite::SocketReserve, line!());
        return 0;
    };
    entry.write(SocketRecord {
        header: current_header(EventKind::Socket, o, size_of::<SocketRecord>()),
        family,
        sock_type,
        protocol: syscall_arg(o, 2) as u32,
        fd: ret as i32,
    });
    entry.submit(wake_flags());
    0
}
