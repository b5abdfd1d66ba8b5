//! Process lifecycle: exec (from the new image), fork (new processes only, threads are
//! dropped here), exit (once per process, when its last thread is gone). BTF tracepoints:
//! they hand us task_struct pointers and, unlike syscall tracepoints, do not put every
//! syscall of every task on the tracing slow path.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use core::ptr::addr_of_mut;
use rasp_common::{
    limits::{ARGV_CAP, ARGV_READ_MAX, FILENAME_CAP},
    record::*,
    EventKind,
};

use crate::{
    event::header,
    kernel::{
        current_task, offsets, read_kernel_str, read_ptr, read_u32, read_u64, read_user, Kptr,
    },
    maps::{count_drop, count_read_error, EVENTS},
    vfs::walk_path,
};

#[btf_tracepoint(function = "sched_process_exec")]
pub fn rasp_exec(ctx: BtfTracePointContext) -> i32 {
    // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let task: Kptr = ctx.arg(0);
    let bprm: Kptr = ctx.arg(2);
    let Some(o) = offsets() else { return 0 };
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count_drop(EventKind::Exec);
        return 0;
    };
    let rec = entry.as_mut_ptr();
    let mut flags = 0u32;

    // SAFETY: `rec` points at a reserved ExecRecord; fields are written through raw
    // pointers because the memory is not initialised.
    unsafe {
        addr_of_mut!((*rec).header).write(header(EventKind::Exec, &o, task));

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
                let dst = addr_of_mut!((*rec).argv) as *mut u8;
                match read_user(dst, len, start) {
                    Ok(()) => (len, total as u32),
                    Err(_) => {
                        flags |= EXEC_ARGV_FAILED;
                        (0, total as u32)
                    }
                }
            }
            _ => {
                flags |= EXEC_ARGV_FAILED;
                (0, 0)
            }
        };
        addr_of_mut!((*rec).argv_len).write(argv_len);
        addr_of_mut!((*rec).argv_total).write(argv_total);

        let filename_dst = addr_of_mut!((*rec).filename) as *mut u8;
        let filename_len = match read_ptr(bprm, o.binprm_filename)
            .and_then(|p| read_kernel_str(filename_dst, FILENAME_CAP as u32, p))
        {
            Ok(n) => n,
            Err(_) => {
                flags |= EXEC_FILENAME_FAILED;
                0
            }
        };
        addr_of_mut!((*rec).filename_len).write(filename_len);

        let fs = read_ptr(task, o.task_fs);
        let root = fs.map(|fs| fs.wrapping_add(o.fs_root as usize));

        // The executable actually mapped (the interpreter for #! scripts).
        let exe_dst = addr_of_mut!((*rec).exe) as *mut u8;
        let exe = root.and_then(|root| {
            let file = read_ptr(bprm, o.binprm_file)?;
            walk_path(&o, file.wrapping_add(o.file_f_path as usize), root, exe_dst)
        });
        let exe_len = match exe {
            Ok(w) => {
                if w.truncated {
                    flags |= EXEC_EXE_TRUNCATED;
                }
                w.len
            }
            Err(_) => {
                flags |= EXEC_EXE_FAILED;
                0
            }
        };
        addr_of_mut!((*rec).exe_len).write(exe_len);

        let cwd_dst = addr_of_mut!((*rec).cwd) as *mut u8;
        let cwd = fs.and_then(|fs| {
            walk_path(
                &o,
                fs.wrapping_add(o.fs_pwd as usize),
                fs.wrapping_add(o.fs_root as usize),
                cwd_dst,
            )
        });
        let cwd_len = match cwd {
            Ok(w) => {
                if w.truncated {
                    flags |= EXEC_CWD_TRUNCATED;
                }
                w.len
            }
            Err(_) => {
                flags |= EXEC_CWD_FAILED;
                0
            }
        };
        addr_of_mut!((*rec).cwd_len).write(cwd_len);
        addr_of_mut!((*rec).flags).write(flags);
    }
    if flags & (EXEC_ARGV_FAILED | EXEC_EXE_FAILED | EXEC_CWD_FAILED | EXEC_FILENAME_FAILED) != 0 {
        count_read_error(EventKind::Exec);
    }
    entry.submit(0);
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn rasp_fork(ctx: BtfTracePointContext) -> i32 {
    // sched_process_fork(struct task_struct *parent, struct task_struct *child)
    let child: Kptr = ctx.arg(1);
    let Some(o) = offsets() else { return 0 };
    // A new thread shares its tgid with the caller: not a new process, not our business.
    let (Ok(child_tid), Ok(child_pid)) =
        (read_u32(child, o.task_pid), read_u32(child, o.task_tgid))
    else {
        count_read_error(EventKind::Fork);
        return 0;
    };
    if child_tid != child_pid {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<ForkRecord>(0) else {
        count_drop(EventKind::Fork);
        return 0;
    };
    let parent_tid = read_u32(current_task(), o.task_pid).unwrap_or(0);
    entry.write(ForkRecord {
        header: header(EventKind::Fork, &o, child),
        parent_tid,
        _pad: 0,
    });
    entry.submit(0);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn rasp_exit(ctx: BtfTracePointContext) -> i32 {
    // sched_process_exit(struct task_struct *p[, bool group_dead]): fires for every thread.
    let task: Kptr = ctx.arg(0);
    let Some(o) = offsets() else { return 0 };
    // do_exit() decrements signal->live before this tracepoint: zero means this is the
    // last thread, so the process is gone. Works on kernels without the group_dead arg.
    let live = read_ptr(task, o.task_signal).and_then(|s| read_u32(s, o.signal_live));
    match live {
        Ok(0) => {}
        Ok(_) => return 0,
        Err(_) => {
            count_read_error(EventKind::Exit);
            return 0;
        }
    }
    let Some(mut entry) = EVENTS.reserve::<ExitRecord>(0) else {
        count_drop(EventKind::Exit);
        return 0;
    };
    let exit_code = read_u32(task, o.task_exit_code).unwrap_or(0);
    entry.write(ExitRecord {
        header: header(EventKind::Exit, &o, task),
        exit_code,
        _pad: 0,
    });
    entry.submit(0);
    0
}
