//! Process lifecycle: exec (from the new image), fork (new processes only, threads are
//! dropped here), exit (once per process, when its last thread is gone). BTF tracepoints:
//! they hand us task_struct pointers and, unlike syscall tracepoints, do not put every
//! syscall of every task on the tracing slow path.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use core::{mem::size_of, ptr::addr_of_mut};
use rasp_common::{
    limits::{ARGV_CAP, ARGV_READ_MAX, FILENAME_CAP, PATH_CAP},
    record::*,
    EventKind, LossSite,
};

use rasp_common::{
    deny::{ACT_EXEC, VERDICT_KILLED_AT_EXEC},
    KernelOffsets,
};

use crate::{
    deny::{fallback_file_denied, Fallback},
    event::header,
    kernel::{
        current_task, offsets, read_kernel_str, read_ptr, read_u16, read_u32, read_u64, read_user,
        Kptr,
    },
    maps::{
        exec_file_news, kill_current, loss, quiet_flags, ring_past, wake_flags_now, Draft, EVENTS,
        SHED_BULK_EIGHTHS, SHED_EXEC_EIGHTHS,
    },
    vfs::{walk_path, PathWalk},
};

const EXEC_FIXED: u32 = size_of::<ExecRecord>() as u32;
/// Masks that bound each payload segment's length for the verifier: a walk writes at most
/// `PATH_CAP` bytes, the filename at most `FILENAME_CAP`; the masks are the next powers of
/// two, so the bounds the verifier sees add up inside `SCRATCH_BYTES` (checked below).
const PATH_LEN_MASK: u32 = 2 * PATH_CAP as u32 - 1;
const FILENAME_LEN_MASK: u32 = 2 * FILENAME_CAP as u32 - 1;
const _: () = assert!(
    EXEC_FIXED as usize
        + 2 * (PATH_LEN_MASK as usize)
        + rasp_common::limits::NAME_SLOT
        + FILENAME_LEN_MASK as usize
        + ARGV_CAP
        < SCRATCH_BYTES
);

/// A path walk's length, flags set for truncation or failure (and the failure counted).
#[inline(always)]
fn walked(
    r: Result<PathWalk, i32>,
    flags: &mut u32,
    truncated: u32,
    failed: u32,
    site: LossSite,
) -> u32 {
    match r {
        Ok(w) => {
            if w.truncated {
                *flags |= truncated;
            }
            w.len & PATH_LEN_MASK
        }
        Err(_) => {
            *flags |= failed;
            loss(site, line!());
            0
        }
    }
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn rasp_exec(ctx: BtfTracePointContext) -> i32 {
    // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let task: Kptr = ctx.arg(0);
    let bprm: Kptr = ctx.arg(2);
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    // Enforcement without BPF-LSM (with it, `bprm_check_security` refused the exec and this
    // tracepoint never fires): the exec is committed, and a SIGKILL sent now is delivered
    // on the way back to user space, before the new image runs one instruction.
    let denied = read_ptr(bprm, o.binprm_file).ok().and_then(|file| {
        match fallback_file_denied(o, file, ACT_EXEC) {
            Fallback::Kill(rule) => Some(rule),
            _ => None,
        }
    });
    let new = exe_is_new(o, bprm);
    // Overload: the record of an exec of a known file gives way (the kill above never does).
    if denied.is_none() && !new && ring_past(SHED_EXEC_EIGHTHS) {
        loss(LossSite::ExecShed, line!());
        return 0;
    }
    let Some(draft) = Draft::begin() else {
        if let Some(_rule) = denied {
            kill_current();
        }
        return 0;
    };
    let base = draft.base();
    let rec = base as *mut ExecRecord;
    let mut flags = 0u32;

    // SAFETY: `base` is this CPU's scratch buffer (`SCRATCH_BYTES`); every write below is at
    // an offset bounded so that it stays inside it (see the assertion above).
    let total = unsafe {
        let fs = read_ptr(task, o.task_fs);
        let root = fs.map(|fs| fs.wrapping_add(o.fs_root as usize));
        let mut at = EXEC_FIXED;

        // The executable actually mapped (the interpreter for #! scripts).
        let exe = root.and_then(|root| {
            let file = read_ptr(bprm, o.binprm_file)?;
            walk_path::<true>(
                o,
                file.wrapping_add(o.file_f_path as usize),
                root,
                base.add(at as usize),
            )
        });
        let exe_len = walked(
            exe,
            &mut flags,
            EXEC_EXE_TRUNCATED,
            EXEC_EXE_FAILED,
            LossSite::ExecExeWalk,
        );
        at += exe_len;

        let cwd = fs.and_then(|fs| {
            walk_path::<false>(
                o,
                fs.wrapping_add(o.fs_pwd as usize),
                fs.wrapping_add(o.fs_root as usize),
                base.add(at as usize),
            )
        });
        let cwd_len = walked(
            cwd,
            &mut flags,
            EXEC_CWD_TRUNCATED,
            EXEC_CWD_FAILED,
            LossSite::ExecCwdWalk,
        );
        at += cwd_len;

        let filename_len = match read_ptr(bprm, o.binprm_filename)
            .and_then(|p| read_kernel_str(base.add(at as usize), FILENAME_CAP as u32, p))
        {
            Ok(n) => n & FILENAME_LEN_MASK,
            Err(_) => {
                flags |= EXEC_FILENAME_FAILED;
                loss(LossSite::ExecFilenameRead, line!());
                0
            }
        };
        at += filename_len;

        // argv as the new image sees it: mm->arg_start..arg_end in its own memory.
        let (argv_len, argv_total) = match read_ptr(task, o.task_mm)
            .and_then(|mm| Ok((read_u64(mm, o.mm_arg_start)?, read_u64(mm, o.mm_arg_end)?)))
        {
            Ok((start, end)) if end >= start => {
                let total = end - start;
                let want = if total > ARGV_READ_MAX as u64 {
                    ARGV_READ_MAX as u64
                } else {
                    total
                };
                let len = (want as u32) & (ARGV_CAP as u32 - 1);
                if total > len as u64 {
                    flags |= EXEC_ARGV_TRUNCATED;
                }
                match read_user(base.add(at as usize), len, start) {
                    Ok(()) => (len, total as u32),
                    Err(_) => {
                        flags |= EXEC_ARGV_FAILED;
                        loss(LossSite::ExecArgvRead, line!());
                        (0, total as u32)
                    }
                }
            }
            _ => {
                flags |= EXEC_ARGV_FAILED;
                loss(LossSite::ExecArgvRead, line!());
                (0, 0)
            }
        };
        at += argv_len;

        match crate::ns::current_namespaces(o) {
            Ok((pid_ns, mnt_ns)) => {
                addr_of_mut!((*rec).pid_ns).write(pid_ns);
                addr_of_mut!((*rec).mnt_ns).write(mnt_ns);
            }
            Err(_) => {
                flags |= EXEC_NS_FAILED;
                loss(LossSite::ExecNsRead, line!());
                addr_of_mut!((*rec).pid_ns).write(0);
                addr_of_mut!((*rec).mnt_ns).write(0);
            }
        }
        if stdio(o, rec).is_err() {
            flags |= EXEC_STDIO_FAILED;
            loss(LossSite::ExecStdioRead, line!());
        }

        if new {
            flags |= EXEC_EXE_NEW;
        }
        addr_of_mut!((*rec).header).write(header(EventKind::Exec, o, task, at as usize));
        addr_of_mut!((*rec).flags).write(flags);
        addr_of_mut!((*rec).argv_len).write(argv_len);
        addr_of_mut!((*rec).argv_total).write(argv_total);
        addr_of_mut!((*rec).filename_len).write(filename_len);
        addr_of_mut!((*rec).exe_len).write(exe_len);
        addr_of_mut!((*rec).cwd_len).write(cwd_len);
        at
    };
    let wake = match denied {
        Some(rule) => {
            kill_current();
            // SAFETY: the header lies at the start of the draft, written above.
            unsafe {
                addr_of_mut!((*rec).header.verdict).write(VERDICT_KILLED_AT_EXEC);
                addr_of_mut!((*rec).header.verdict_rule).write(rule);
            }
            wake_flags_now()
        }
        None => quiet_flags(),
    };
    draft.send(total, wake, LossSite::ExecSend, line!());
    0
}

/// What descriptors 0, 1 and 2 of the new image refer to (the exec tracepoint runs in the
/// new process, so its own descriptor table). A descriptor that is not open is mode 0.
/// Helper reads, not BTF loads, like `exe_is_new`: the exec program must load without the
/// `bpf_rdonly_cast` kfunc. Out of line: its own stack frame. `Err`: a read failed (`stdio`
/// is then partly zero).
#[inline(never)]
fn stdio(o: &KernelOffsets, rec: *mut ExecRecord) -> Result<(), i32> {
    let task = current_task();
    let fdt = read_ptr(task, o.task_files).and_then(|files| read_ptr(files, o.files_fdt))?;
    let max_fds = read_u32(fdt, o.fdtable_max_fds)?;
    let fds = read_ptr(fdt, o.fdtable_fd)?;
    for fd in 0..3u32 {
        let mut slot = StdioFd::default();
        let file = if fd < max_fds {
            read_ptr(fds, fd * 8)?
        } else {
            core::ptr::null()
        };
        if !file.is_null() {
            let inode = read_ptr(file, o.file_f_inode)?;
            slot.mode = read_u16(inode, o.inode_i_mode)?;
            slot.ino = read_u64(inode, o.inode_ino)?;
            slot.rdev = read_u32(inode, o.inode_i_rdev)?;
            if slot.mode & S_IFMT == S_IFSOCK {
                // `private_data` of a socket file is its `struct socket`.
                let sk = read_ptr(file, o.file_private_data)
                    .and_then(|sock| read_ptr(sock, o.socket_sk))?;
                slot.family = read_u16(sk, o.sock_family)?;
            }
        }
        // SAFETY: `rec` is the draft's fixed part; `fd` < 3.
        unsafe { addr_of_mut!((*rec).stdio[fd as usize]).write(slot) };
    }
    Ok(())
}

/// An exec the LSM hook refused: the program that would have run (exe, filename), sent
/// from the caller's context with the rule's verdict. No argv: the new image's memory is
/// not the caller's to read.
#[inline(never)]
pub fn send_refused_exec(o: &KernelOffsets, bprm: Kptr, verdict: u32, rule: u32) {
    let Some(draft) = Draft::begin() else {
        return;
    };
    let base = draft.base();
    let rec = base as *mut ExecRecord;
    // No namespaces or descriptors either: the caller keeps its own, which the process
    // table already has.
    let mut flags =
        EXEC_REFUSED | EXEC_CWD_SKIPPED | EXEC_ARGV_FAILED | EXEC_NS_FAILED | EXEC_STDIO_FAILED;
    let task = current_task();
    // SAFETY: as in `rasp_exec`: every write stays inside the scratch buffer.
    let total = unsafe {
        let mut at = EXEC_FIXED;
        let exe = read_ptr(task, o.task_fs).and_then(|fs| {
            let file = read_ptr(bprm, o.binprm_file)?;
            walk_path::<true>(
                o,
                file.wrapping_add(o.file_f_path as usize),
                fs.wrapping_add(o.fs_root as usize),
                base.add(at as usize),
            )
        });
        let exe_len = walked(
            exe,
            &mut flags,
            EXEC_EXE_TRUNCATED,
            EXEC_EXE_FAILED,
            LossSite::ExecExeWalk,
        );
        at += exe_len;
        let filename_len = match read_ptr(bprm, o.binprm_filename)
            .and_then(|p| read_kernel_str(base.add(at as usize), FILENAME_CAP as u32, p))
        {
            Ok(n) => n & FILENAME_LEN_MASK,
            Err(_) => {
                flags |= EXEC_FILENAME_FAILED;
                0
            }
        };
        at += filename_len;
        let mut h = header(EventKind::Exec, o, task, at as usize);
        h.verdict = verdict;
        h.verdict_rule = rule;
        addr_of_mut!((*rec).header).write(h);
        addr_of_mut!((*rec).flags).write(flags);
        addr_of_mut!((*rec).argv_len).write(0);
        addr_of_mut!((*rec).argv_total).write(0);
        addr_of_mut!((*rec).filename_len).write(filename_len);
        addr_of_mut!((*rec).exe_len).write(exe_len);
        addr_of_mut!((*rec).cwd_len).write(0);
        addr_of_mut!((*rec).pid_ns).write(0);
        addr_of_mut!((*rec).mnt_ns).write(0);
        addr_of_mut!((*rec).stdio).write([StdioFd::default(); 3]);
        at
    };
    draft.send(total, wake_flags_now(), LossSite::ExecSend, line!());
}

/// Is the executable new to `SEEN_EXEC_FILES` (or a uprobe target)? Helper reads, not BTF
/// loads: those need the `bpf_rdonly_cast` kfunc, which the exec program must not depend
/// on (it is the one program that has to load everywhere). Four reads, once per exec.
#[inline(always)]
fn exe_is_new(o: &rasp_common::KernelOffsets, bprm: Kptr) -> bool {
    let id = read_ptr(bprm, o.binprm_file)
        .and_then(|file| read_ptr(file, o.file_f_inode))
        .and_then(|inode| {
            let sb = read_ptr(inode, o.inode_sb)?;
            Ok(rasp_common::discovery::ExecFileKey {
                dev: read_u32(sb, o.sb_dev)?,
                _pad: 0,
                ino: read_u64(inode, o.inode_ino)?,
            })
        });
    match id {
        Ok(id) if id.ino != 0 => exec_file_news(&id),
        _ => false,
    }
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn rasp_fork(ctx: BtfTracePointContext) -> i32 {
    // sched_process_fork(struct task_struct *parent, struct task_struct *child)
    let child: Kptr = ctx.arg(1);
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    // A new thread shares its tgid with the caller: not a new process, not our business.
    let (Ok(child_tid), Ok(child_pid)) =
        (read_u32(child, o.task_pid), read_u32(child, o.task_tgid))
    else {
        loss(LossSite::ForkRead, line!());
        return 0;
    };
    if child_tid != child_pid {
        return 0;
    }
    if ring_past(SHED_BULK_EIGHTHS) {
        loss(LossSite::ForkShed, line!());
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<ForkRecord>(0) else {
        loss(LossSite::ForkReserve, line!());
        return 0;
    };
    let parent_tid = read_u32(current_task(), o.task_pid).unwrap_or(0);
    entry.write(ForkRecord {
        header: header(EventKind::Fork, o, child, size_of::<ForkRecord>()),
        parent_tid,
        _pad: 0,
    });
    entry.submit(quiet_flags());
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn rasp_exit(ctx: BtfTracePointContext) -> i32 {
    // sched_process_exit(struct task_struct *p[, bool group_dead]): fires for every thread.
    let task: Kptr = ctx.arg(0);
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    // do_exit() decrements signal->live before this tracepoint: zero means this is the
    // last thread, so the process is gone. Works on kernels without the group_dead arg.
    let live = read_ptr(task, o.task_signal).and_then(|s| read_u32(s, o.signal_live));
    match live {
        Ok(0) => {}
        Ok(_) => return 0,
        Err(_) => {
            loss(LossSite::ExitRead, line!());
            return 0;
        }
    }
    if ring_past(SHED_BULK_EIGHTHS) {
        loss(LossSite::ExitShed, line!());
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<ExitRecord>(0) else {
        loss(LossSite::ExitReserve, line!());
        return 0;
    };
    let exit_code = read_u32(task, o.task_exit_code).unwrap_or(0);
    entry.write(ExitRecord {
        header: header(EventKind::Exit, o, task, size_of::<ExitRecord>()),
        exit_code,
        _pad: 0,
    });
    entry.submit(quiet_flags());
    0
}
