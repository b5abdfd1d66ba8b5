//! File hooks: successful opens (exit of open, openat, creat, openat2) and executable file
//! mappings, i.e. library loads (entry of mmap with PROT_EXEC). Both sit on hot syscalls, so
//! the order is cheapest test first: the syscall's own arguments, the interest switch in
//! `*_FILTER` (one array lookup: with no file rules that is all an open costs), then the
//! file (plain BTF loads only: fd slot, mode, path, dentries), then component names against
//! `*_NAMES` (a name's bytes are read and hashed only when its length and first two bytes
//! fit a name watched for this open's access at this depth). Only then is a record reserved.
//! Measured in the instruction-counting guest (`xtask vm`), open+close of /etc/hostname under
//! the shipped policies: 1090 instructions over the empty-program floor with a helper read
//! of the fd slot and one hint set for all accesses (`etc`, watched for writes, cost every
//! read below /etc a name read and a hash lookup), 648 without; on the host (bpf_stats,
//! noisy) ~350 → ~220 ns a run.
use aya_ebpf::{
    helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    macros::tracepoint,
    programs::TracePointContext,
};
use core::{mem::size_of, ptr::addr_of_mut};
use rasp_common::{
    interest::*,
    record::{
        FileOpenRecord, LibraryLoadRecord, FILE_OPEN_FLAGS_KNOWN, FILE_PATH_FAILED,
        FILE_PATH_TRUNCATED, FMODE_CREATED, FMODE_READ, FMODE_WRITE, LIB_FILE_NEW, LIB_PATH_FAILED,
        LIB_PATH_TRUNCATED,
    },
    EventKind, KernelOffsets, LossSite,
};

use rasp_common::deny::{
    ACT_MMAP_EXEC, ACT_OPEN_CREATE, ACT_OPEN_READ, ACT_OPEN_WRITE, VERDICT_KILLED_AT_SYSCALL,
};

use crate::{
    deny::{fallback_file_denied, Fallback},
    event::current_header,
    kernel::{
        current_task, current_task_btf, is_agent, offsets, read_ptr, read_u64, read_user, syscalls,
        tp_field, Kptr,
    },
    maps::{
        exec_file_news, filter_flags, forget, kill_current, loss, wake_flags, wake_flags_now,
        Draft, FILE_FILTER, FILE_NAMES, LIB_FILTER, LIB_NAMES,
    },
    vfs::{file_of_fd, names_interest, walk_from, FileView, NameSummary, PathWalk, WalkMasks},
};

// asm-generic values, shared by x86_64 and arm64.
const O_WRONLY: u32 = 0o1;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const PROT_EXEC: u64 = 0x4;
const MAP_ANONYMOUS: u64 = 0x20;

// Offsets in the syscall tracepoints' records (tracefs `format`; stable ABI).
const TP_SYSCALL_NR: usize = 8;
const TP_EXIT_RET: usize = 16;
const TP_MMAP_PROT: usize = 32;
const TP_MMAP_FLAGS: usize = 40;
const TP_MMAP_FD: usize = 48;

/// Attached to `syscalls/sys_exit_{openat,open,creat,openat2}`.
#[tracepoint]
pub fn rasp_file_open(ctx: TracePointContext) -> u32 {
    let ret: i64 = tp_field(&ctx, TP_EXIT_RET);
    if ret < 0 {
        return 0;
    }
    let filter = filter_flags(&FILE_FILTER);
    if filter & FILE_ENABLED == 0 {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    let fd = ret as u32;
    let task = current_task_btf();
    let Some(file) = file_of_fd(o, task, fd) else {
        return 0; // closed by another thread already
    };
    let view = FileView::of(o, file);
    // Enforcement without BPF-LSM: the open has happened; a SIGKILL now lands before the
    // process returns to user space with the descriptor, so it never reads or writes
    // through it (a truncation or creation already took effect: the record says so).
    let denied = match fallback_file_denied(o, file, open_acts(view.mode(o))) {
        Fallback::Kill(rule) if !is_agent() => Some(rule),
        _ => None, // an open BPF-LSM refused never reaches its syscall's exit
    };
    if let Some(rule) = denied {
        kill_current();
        let nr: i32 = tp_field(&ctx, TP_SYSCALL_NR);
        send_file_open(o, &view, fd, nr, Some((VERDICT_KILLED_AT_SYSCALL, rule)));
        return 0;
    }
    match file_interest(o, task, &view, filter) {
        Verdict::Send => {}
        Verdict::Skip => return 0,
        Verdict::Unknown => {
            // Cannot tell: counted, not sent (a systematic failure must not flood).
            loss(LossSite::FileFilterRead, line!());
            return 0;
        }
    }
    // The agent's own opens (it reads /proc constantly) are dropped here, once chosen,
    // rather than tested first: the test is a helper call every open would pay.
    if is_agent() {
        return 0;
    }
    let nr: i32 = tp_field(&ctx, TP_SYSCALL_NR);
    send_file_open(o, &view, fd, nr, None);
    0
}

/// The deny acts an open with this `f_mode` performs.
#[inline(always)]
pub fn open_acts(mode: u32) -> u32 {
    let mut acts = 0;
    if mode & FMODE_READ != 0 {
        acts |= ACT_OPEN_READ;
    }
    if mode & FMODE_WRITE != 0 {
        acts |= ACT_OPEN_WRITE;
    }
    if mode & FMODE_CREATED != 0 {
        acts |= ACT_OPEN_CREATE;
    }
    acts
}

/// A pre-filter's answer.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Skip = 0,
    Send = 1,
    /// A kernel read failed: the filter could not decide.
    Unknown = 2,
}

/// Is this open interesting? Out of line (a BPF subprogram with its own stack frame): the
/// filter's walk and the record's (`send_file_open`, also out of line) would not fit the
/// 512-byte stack together.
#[inline(never)]
fn file_interest(o: &KernelOffsets, task: Kptr, view: &FileView, filter: u32) -> Verdict {
    let mode = view.mode(o);
    let read = mode & FMODE_READ != 0;
    let write = mode & FMODE_WRITE != 0;
    let created = mode & FMODE_CREATED != 0;
    if (read && filter & FILE_ALL_READ != 0) || ((write || created) && filter & FILE_ALL_WRITE != 0)
    {
        return Verdict::Send;
    }
    let masks = WalkMasks {
        depth: file_open_masks(
            mode & FMODE_READ,
            (mode / FMODE_WRITE) & 1,
            (mode / FMODE_CREATED) & 1,
            (filter / FILE_READ_FULL_WALK) & 1,
        ),
        memfd: 0,
    };
    let summary = NameSummary {
        filter: &FILE_FILTER,
    };
    verdict(names_interest(
        o,
        task,
        view.mnt,
        view.dentry,
        &FILE_NAMES,
        &summary,
        &masks,
    ))
}

#[inline(always)]
fn verdict(r: Result<bool, i32>) -> Verdict {
    match r {
        Ok(true) => Verdict::Send,
        Ok(false) => Verdict::Skip,
        Err(_) => Verdict::Unknown,
    }
}

/// Out of line, see `file_interest`.
const FILE_FIXED: u32 = size_of::<FileOpenRecord>() as u32;
const LIB_FIXED: u32 = size_of::<LibraryLoadRecord>() as u32;
const _: () = assert!(
    (FILE_FIXED as usize) + rasp_common::limits::PATH_CAP + rasp_common::limits::NAME_SLOT
        < rasp_common::record::SCRATCH_BYTES
);

/// Rebuild the opened file's path right after a record's fixed part (`fixed` bytes into the
/// draft); returns the path's length, setting `truncated`/`failed` in `flags`.
#[inline(always)]
fn path_payload(
    o: &KernelOffsets,
    view: &FileView,
    draft: &Draft,
    fixed: u32,
    flags: &mut u32,
    (truncated, failed): (u32, u32),
    site: LossSite,
) -> u32 {
    // SAFETY: `fixed` + a walk's bound (`PATH_CAP` + a component slot) is inside the draft.
    let dst = unsafe { draft.base().add(fixed as usize) };
    match file_path(o, view, dst) {
        Ok(w) => {
            if w.truncated {
                *flags |= truncated;
            }
            w.len & (2 * rasp_common::limits::PATH_CAP as u32 - 1)
        }
        Err(_) => {
            *flags |= failed;
            loss(site, line!());
            0
        }
    }
}

#[inline(never)]
pub fn send_file_open(
    o: &KernelOffsets,
    view: &FileView,
    fd: u32,
    nr: i32,
    verdict: Option<(u32, u32)>,
) {
    let Some(draft) = Draft::begin() else { return };
    let mut flags = 0u32;
    let open_flags = match requested_flags(o, nr) {
        Some(v) => {
            flags |= FILE_OPEN_FLAGS_KNOWN;
            v
        }
        None => 0,
    };
    let path_len = path_payload(
        o,
        view,
        &draft,
        FILE_FIXED,
        &mut flags,
        (FILE_PATH_TRUNCATED, FILE_PATH_FAILED),
        LossSite::FilePathWalk,
    );
    let total = FILE_FIXED + path_len;
    let rec = draft.base() as *mut FileOpenRecord;
    // SAFETY: the fixed part lies at the start of the draft.
    unsafe {
        addr_of_mut!((*rec).header).write(current_header(EventKind::FileOpen, o, total as usize));
        addr_of_mut!((*rec).flags).write(flags);
        addr_of_mut!((*rec).fd).write(fd as i32);
        addr_of_mut!((*rec).f_flags).write(view.flags);
        addr_of_mut!((*rec).f_mode).write(view.mode(o));
        addr_of_mut!((*rec).open_flags).write(open_flags);
        addr_of_mut!((*rec).path_len).write(path_len);
    }
    let wake = match verdict {
        Some((verdict, rule)) => {
            // SAFETY: as above.
            unsafe {
                addr_of_mut!((*rec).header.verdict).write(verdict);
                addr_of_mut!((*rec).header.verdict_rule).write(rule);
            }
            wake_flags_now()
        }
        None => wake_flags(),
    };
    draft.send(total, wake, LossSite::FileSend, line!());
}

#[inline(always)]
fn requested_flags(o: &KernelOffsets, nr: i32) -> Option<u32> {
    let sys = syscalls();
    let nr = nr as u32;
    if nr == sys.creat {
        return Some(O_CREAT | O_WRONLY | O_TRUNC);
    }
    let (arg, how) = if nr == sys.openat {
        (o.regs_arg3, false)
    } else if nr == sys.open {
        (o.regs_arg2, false)
    } else if nr == sys.openat2 {
        (o.regs_arg2, true)
    } else {
        return None;
    };
    // SAFETY: the current task as a BTF pointer is what bpf_task_pt_regs takes.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as Kptr;
    let value = read_u64(regs, arg).ok()?;
    if !how {
        return Some(value as u32);
    }
    // openat2(dfd, path, struct open_how *how, size): `how->flags` is its first u64.
    let mut flags = 0u64;
    read_user(&mut flags as *mut u64 as *mut u8, 8, value).ok()?;
    Some(flags as u32)
}

/// The file's path as the current task sees it, into a record's `PATH_CAP + NAME_SLOT`
/// bytes.
#[inline(always)]
fn file_path(o: &KernelOffsets, view: &FileView, dst: *mut u8) -> Result<PathWalk, i32> {
    let fs = read_ptr(current_task(), o.task_fs)?;
    // The mount as a plain number (`forget`), as the walk reads the mounts above it: left a
    // BTF pointer, it stayed one until the walk's first crossing, and the verifier walked
    // every later step twice (pointer, number).
    walk_from(
        o,
        forget(view.mnt as u64) as Kptr,
        view.dentry,
        fs.wrapping_add(o.fs_root as usize),
        dst,
    )
}

/// Attached to `syscalls/sys_enter_mmap`. ld.so maps each library's code segment with
/// PROT_EXEC from the library's descriptor; the main executable and ld.so itself are mapped
/// by the kernel at exec and never pass here. Two reasons to send a record: a library rule
/// may care (under the shipped policies only libraries below `tmp`/`shm` directories and
/// memfds, `LIB_MEMFD`: an ordinary dynamic exec's mappings cost a walk each and no record),
/// or the file is new to `SEEN_EXEC_FILES` (flagged `LIB_FILE_NEW`: the agent looks for
/// libpq/OpenSSL in it; each distinct file once, whatever the rules).
#[tracepoint]
pub fn rasp_library_load(ctx: TracePointContext) -> u32 {
    let prot: u64 = tp_field(&ctx, TP_MMAP_PROT);
    let map_flags: u64 = tp_field(&ctx, TP_MMAP_FLAGS);
    if prot & PROT_EXEC == 0 || map_flags & MAP_ANONYMOUS != 0 {
        return 0;
    }
    // `unsigned long` in the record, an int to the kernel: -1 for anonymous maps.
    let fd = tp_field::<u64>(&ctx, TP_MMAP_FD) as i32;
    if fd < 0 {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    let task = current_task_btf();
    let Some(file) = file_of_fd(o, task, fd as u32) else {
        return 0; // mmap will fail with EBADF
    };
    let view = FileView::of(o, file);
    // Enforcement without BPF-LSM: the mapping is made when this syscall runs, and the
    // SIGKILL lands before the process returns to user space, so no code of the library
    // runs (ld.so calls its constructors from user space, after mmap returns).
    let denied = match fallback_file_denied(o, file, ACT_MMAP_EXEC) {
        Fallback::Kill(rule) if !is_agent() => Some(rule),
        // The mmap's LSM hook runs after this tracepoint, refuses it and reports it.
        Fallback::LeftToLsm => return 0,
        _ => None,
    };
    // One call of `send_library_load` (each call site is verified anew, path walk and all).
    let (prot_flags, verdict) = match denied {
        Some(rule) => {
            kill_current();
            (prot, verdict_word(VERDICT_KILLED_AT_SYSCALL, rule))
        }
        None => {
            // The agent's own mappings neither report nor mark a file: another process
            // mapping the same library later must still be reported.
            let agent = is_agent();
            let id = view.identity(o);
            let new_file = !agent && id.ino != 0 && exec_file_news(&id);
            let filter = filter_flags(&LIB_FILTER);
            let wanted = if filter & LIB_ENABLED == 0 {
                false
            } else {
                match lib_interest(o, task, &view, filter) {
                    Verdict::Send => true,
                    Verdict::Skip => false,
                    Verdict::Unknown => {
                        loss(LossSite::LibFilterRead, line!());
                        false
                    }
                }
            };
            if agent || !(wanted || new_file) {
                return 0;
            }
            let flags = if new_file { LIB_FILE_NEW } else { 0 };
            (prot | (flags as u64) << 32, 0)
        }
    };
    // Both branches arrive as one state (`forget`): the record is verified once.
    send_library_load(o, &view, fd, forget(prot_flags), forget(verdict));
    0
}

/// Is this executable mapping interesting? Out of line, see `file_interest`.
#[inline(never)]
fn lib_interest(o: &KernelOffsets, task: Kptr, view: &FileView, filter: u32) -> Verdict {
    if filter & LIB_ALL != 0 {
        return Verdict::Send;
    }
    // Flags as 0 or 1, without a branch (see `interest::file_open_masks`).
    let masks = WalkMasks {
        depth: library_masks((filter / LIB_FULL_WALK) & 1),
        memfd: (filter / LIB_MEMFD) & 1,
    };
    let summary = NameSummary {
        filter: &LIB_FILTER,
    };
    verdict(names_interest(
        o,
        task,
        view.mnt,
        view.dentry,
        &LIB_NAMES,
        &summary,
        &masks,
    ))
}

/// A verdict and its rule as one call argument (BPF calls take at most five): 0 for none.
#[inline(always)]
pub fn verdict_word(verdict: u32, rule: u32) -> u64 {
    (verdict as u64) << 32 | rule as u64
}

/// `prot_flags`: mmap's prot in the low half, `LIB_*` flags in the high half; `verdict`:
/// `verdict_word` or 0 (BPF calls take at most five arguments).
#[inline(never)]
pub fn send_library_load(
    o: &KernelOffsets,
    view: &FileView,
    fd: i32,
    prot_flags: u64,
    verdict: u64,
) {
    let prot = prot_flags as u32;
    let mut flags = (prot_flags >> 32) as u32;
    let Some(draft) = Draft::begin() else { return };
    // Loaded again rather than passed: BPF calls take at most five arguments.
    let id = view.identity(o);
    let path_len = path_payload(
        o,
        view,
        &draft,
        LIB_FIXED,
        &mut flags,
        (LIB_PATH_TRUNCATED, LIB_PATH_FAILED),
        LossSite::LibPathWalk,
    );
    let total = LIB_FIXED + path_len;
    let rec = draft.base() as *mut LibraryLoadRecord;
    // SAFETY: the fixed part lies at the start of the draft.
    unsafe {
        addr_of_mut!((*rec).header).write(current_header(
            EventKind::LibraryLoad,
            o,
            total as usize,
        ));
        addr_of_mut!((*rec).flags).write(flags);
        addr_of_mut!((*rec).fd).write(fd);
        addr_of_mut!((*rec).prot).write(prot);
        addr_of_mut!((*rec).path_len).write(path_len);
        addr_of_mut!((*rec).dev).write(id.dev);
        addr_of_mut!((*rec)._pad).write(0);
        addr_of_mut!((*rec).ino).write(id.ino);
    }
    let wake = if verdict != 0 {
        // SAFETY: as above.
        unsafe {
            addr_of_mut!((*rec).header.verdict).write((verdict >> 32) as u32);
            addr_of_mut!((*rec).header.verdict_rule).write(verdict as u32);
        }
        wake_flags_now()
    } else {
        wake_flags()
    };
    draft.send(total, wake, LossSite::LibSend, line!());
}
