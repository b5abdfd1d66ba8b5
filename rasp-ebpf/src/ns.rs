//! Namespaces and mounts: setns(2) (which namespace was entered: the descriptor's nsfs
//! file names it), unshare(2) (which new namespaces), mount(2) and fsopen(2) (what is
//! mounted where). At syscall exit, successful calls only, pre-filtered by the families'
//! switches (`HOOK_NAMESPACE`, `HOOK_UNSHARE_FLAGS`, `HOOK_MOUNT`). Also the namespaces a
//! task is in, which exec records carry so "in a container" does not rest on a cgroup's
//! name alone.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use core::{mem::size_of, ptr::addr_of_mut};
use rasp_common::{
    interest::{HOOK_ENABLED, HOOK_MOUNT, HOOK_NAMESPACE, HOOK_UNSHARE_FLAGS},
    limits::{FSTYPE_CAP, MOUNT_SOURCE_CAP, NAME_CAP, NAME_SLOT, PATH_CAP, SYSCALL_SLOTS},
    record::*,
    EventKind, KernelOffsets, LossSite,
};

use crate::{
    event::current_header,
    kernel::{
        btf_load, current_task, current_task_btf, fresh, is_agent, offsets, read_ptr, read_u32,
        tp_field, Kptr,
    },
    location::{base_of, read_user_string, syscall_arg, walk_base, AT_FDCWD},
    maps::{hook_word, loss, wake_flags, Draft, SYSCALL_SHAPES},
    vfs::{file_of_fd, FileView},
};

const TP_SYSCALL_NR: usize = 8;
const TP_EXIT_RET: usize = 16;

/// The current task's active PID namespace and its mount namespace, as inode numbers.
/// Helper reads: the PID namespace sits at a variable index (`pid->numbers[level]`).
#[inline(always)]
pub fn current_namespaces(o: &KernelOffsets) -> Result<(u32, u32), i32> {
    let task = current_task();
    let nsproxy = read_ptr(task, o.task_nsproxy)?;
    let mnt_ns = read_ptr(nsproxy, o.nsproxy_mnt_ns)?;
    let mnt = read_u32(mnt_ns, o.mnt_ns_inum)?;
    let pid = read_ptr(task, o.task_thread_pid)?;
    let level = read_u32(pid, o.pid_level)? & 31;
    let upid = pid.wrapping_add((o.pid_numbers + level * o.upid_size) as usize);
    let pid_ns = read_ptr(upid, o.upid_ns)?;
    Ok((read_u32(pid_ns, o.pid_ns_inum)?, mnt))
}

/// The shape's operation for this syscall number (0: not ours).
#[inline(always)]
fn op_of(ctx: &TracePointContext) -> u32 {
    let nr: i64 = tp_field(ctx, TP_SYSCALL_NR);
    SYSCALL_SHAPES
        .get((nr as u32) & (SYSCALL_SLOTS - 1))
        .map_or(0, |s| s.op)
}

const NS_FIXED: u32 = size_of::<NamespaceRecord>() as u32;
const PATH_MASK: u32 = 2 * PATH_CAP as u32 - 1;

/// Attached to `syscalls/sys_exit_setns` and `sys_exit_unshare`.
#[tracepoint]
pub fn rasp_namespace(ctx: TracePointContext) -> u32 {
    let ret: i64 = tp_field(&ctx, TP_EXIT_RET);
    if ret != 0 {
        return 0;
    }
    let watched = hook_word(HOOK_NAMESPACE);
    if watched & HOOK_ENABLED == 0 {
        return 0;
    }
    let op = op_of(&ctx);
    if (op != NS_OP_SETNS && op != NS_OP_UNSHARE) || watched & (1 << op) == 0 {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    let flags = syscall_arg(o, if op == NS_OP_SETNS { 1 } else { 0 }) as u32;
    if op == NS_OP_UNSHARE && flags & hook_word(HOOK_UNSHARE_FLAGS) == 0 {
        return 0;
    }
    if is_agent() {
        return 0;
    }
    namespace(o, op, flags);
    0
}

#[inline(never)]
fn namespace(o: &KernelOffsets, op: u32, flags: u32) {
    let Some(draft) = Draft::begin() else { return };
    let base = draft.base();
    let mut rflags = 0u32;
    let (pid_ns, mnt_ns) = match current_namespaces(o) {
        Ok(v) => v,
        Err(_) => {
            rflags |= NS_CALLER_FAILED;
            loss(LossSite::NamespaceRead, line!());
            (0, 0)
        }
    };
    let mut fd = -1i32;
    let mut target_ino = 0u32;
    let mut name_len = 0u32;
    if op == NS_OP_SETNS {
        fd = syscall_arg(o, 0) as i32;
        let file = if fd >= 0 {
            file_of_fd(o, current_task_btf(), fd as u32)
        } else {
            None
        };
        match file {
            Some(file) => {
                let inode: Kptr = btf_load(file, fresh(&o.file_f_inode));
                target_ino = btf_load::<u64>(inode, fresh(&o.inode_ino)) as u32;
                let view = FileView::of(o, file);
                // SAFETY: a walk's bound after the fixed part lies inside the draft.
                let dst = unsafe { base.add(NS_FIXED as usize) };
                match walk_base::<false>(o, &(view.mnt, view.dentry), dst) {
                    Ok(w) => name_len = w.len & PATH_MASK,
                    Err(_) => {
                        rflags |= NS_NAME_FAILED;
                        loss(LossSite::NamespaceRead, line!());
                    }
                }
            }
            None => {
                rflags |= NS_NAME_FAILED;
                loss(LossSite::NamespaceRead, line!());
            }
        }
    }
    let total = NS_FIXED + name_len;
    let rec = base as *mut NamespaceRecord;
    // SAFETY: the fixed part lies at the start of the draft.
    unsafe {
        addr_of_mut!((*rec).header).write(current_header(EventKind::Namespace, o, total as usize));
        addr_of_mut!((*rec).op).write(op);
        addr_of_mut!((*rec).flags).write(flags);
        addr_of_mut!((*rec).fd).write(fd);
        addr_of_mut!((*rec).target_ino).write(target_ino);
        addr_of_mut!((*rec).pid_ns).write(pid_ns);
        addr_of_mut!((*rec).mnt_ns).write(mnt_ns);
        addr_of_mut!((*rec).name_len).write(name_len);
        addr_of_mut!((*rec).rflags).write(rflags);
    }
    draft.send(total, wake_flags(), LossSite::NamespaceSend, line!());
}

const MOUNT_FIXED: u32 = size_of::<MountRecord>() as u32;
const SOURCE_MASK: u32 = 2 * MOUNT_SOURCE_CAP as u32 - 1;
const NAME_MASK: u32 = 2 * NAME_CAP as u32 - 1;
const FSTYPE_MASK: u32 = 2 * FSTYPE_CAP as u32 - 1;
const _: () = assert!(
    (MOUNT_FIXED + SOURCE_MASK + NAME_MASK + FSTYPE_MASK + PATH_MASK) as usize + NAME_SLOT
        < SCRATCH_BYTES
);

/// Attached to `syscalls/sys_exit_mount` and `sys_exit_fsopen`.
#[tracepoint]
pub fn rasp_mount(ctx: TracePointContext) -> u32 {
    let ret: i64 = tp_field(&ctx, TP_EXIT_RET);
    if ret < 0 {
        return 0;
    }
    let watched = hook_word(HOOK_MOUNT);
    if watched & HOOK_ENABLED == 0 {
        return 0;
    }
    let op = op_of(&ctx);
    if (op != MOUNT_OP_MOUNT && op != MOUNT_OP_FSOPEN) || watched & (1 << op) == 0 {
        return 0;
    }
    if is_agent() {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    mount(o, op);
    0
}

/// A user string of at most `cap` bytes at `at`, its length masked by `mask`; a failed read
/// sets `failed` in `flags`.
#[inline(always)]
fn string_at(base: *mut u8, at: u32, cap: u32, ptr: u64, flags: &mut u32, failed: u32) -> u32 {
    if ptr == 0 {
        return 0;
    }
    // SAFETY: the caller keeps `at + cap` inside the draft.
    match read_user_string(unsafe { base.add(at as usize) }, cap, ptr) {
        Ok(n) => n,
        Err(_) => {
            *flags |= failed;
            loss(LossSite::MountRead, line!());
            0
        }
    }
}

#[inline(never)]
fn mount(o: &KernelOffsets, op: u32) {
    let Some(draft) = Draft::begin() else { return };
    let base = draft.base();
    let mut rflags = 0u32;
    let (source_ptr, target_ptr, fstype_ptr, mflags) = if op == MOUNT_OP_MOUNT {
        (
            syscall_arg(o, 0),
            syscall_arg(o, 1),
            syscall_arg(o, 2),
            syscall_arg(o, 3),
        )
    } else {
        (0, 0, syscall_arg(o, 0), 0)
    };
    let source_at = MOUNT_FIXED;
    let source = string_at(
        base,
        source_at,
        MOUNT_SOURCE_CAP as u32,
        source_ptr,
        &mut rflags,
        MOUNT_SOURCE_FAILED,
    ) & SOURCE_MASK;
    let target_at = source_at + source;
    let target = string_at(
        base,
        target_at,
        NAME_CAP as u32,
        target_ptr,
        &mut rflags,
        MOUNT_TARGET_FAILED,
    ) & NAME_MASK;
    let fstype_at = target_at + target;
    let fstype = string_at(
        base,
        fstype_at,
        FSTYPE_CAP as u32,
        fstype_ptr,
        &mut rflags,
        MOUNT_FSTYPE_FAILED,
    ) & FSTYPE_MASK;
    let dir_at = fstype_at + fstype;
    // A relative target is joined with the working directory in userspace.
    // SAFETY: a first byte exists when target > 1.
    let relative = target > 1 && unsafe { *base.add(target_at as usize) } != b'/';
    let mut dir = 0u32;
    if relative {
        let walked = match base_of(o, AT_FDCWD) {
            // SAFETY: inside the draft (see the assertion above).
            Some(b) => walk_base::<true>(o, &b, unsafe { base.add(dir_at as usize) }),
            None => Err(-9),
        };
        match walked {
            Ok(w) => {
                if w.truncated {
                    rflags |= MOUNT_TARGET_TRUNCATED;
                }
                dir = w.len & PATH_MASK;
            }
            Err(_) => {
                rflags |= MOUNT_TARGET_FAILED;
                loss(LossSite::MountRead, line!());
            }
        }
    }
    let total = dir_at + dir;
    let rec = base as *mut MountRecord;
    // SAFETY: the fixed part lies at the start of the draft.
    unsafe {
        addr_of_mut!((*rec).header).write(current_header(EventKind::Mount, o, total as usize));
        addr_of_mut!((*rec).flags).write(mflags);
        addr_of_mut!((*rec).op).write(op);
        addr_of_mut!((*rec).rflags).write(rflags);
        addr_of_mut!((*rec).source_len).write(source);
        addr_of_mut!((*rec).dir_len).write(dir);
        addr_of_mut!((*rec).target_len).write(target);
        addr_of_mut!((*rec).fstype_len).write(fstype);
    }
    draft.send(total, wake_flags(), LossSite::MountSend, line!());
}
