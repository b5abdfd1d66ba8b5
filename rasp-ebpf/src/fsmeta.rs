//! File changes other than opens: mode (chmod family), extended attributes (setxattr
//! family: `security.capability` is a file capability), removal (unlink, rmdir), renames,
//! truncation, times (utimes family), links and symlinks. One program, attached to the
//! exit of every such syscall; `SYSCALL_SHAPES[nr]` (filled by the agent) says which
//! arguments are the operation's locations and attributes.
//!
//! Cheapest test first: a failed call returns at once, then the family's switch and the
//! operation's bit (`HOOK_CHANGE`), then what the operation itself says (setuid bits in a
//! chmod, a watched xattr name, times set to chosen values), then the names (hashed in the
//! record buffer) and, for relative names, their directory's dentries. Only a change some
//! rule can match is sent.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use core::{mem::size_of, ptr::addr_of_mut};
use rasp_common::{
    interest::{
        HINT_CHANGE_ANY, HINT_CHANGE_LEAF, HINT_XATTR, HOOK_CHANGE, HOOK_CHANGE_ALL,
        HOOK_CHMOD_MODES, HOOK_ENABLED, HOOK_XATTR_NAMES,
    },
    limits::{NAME_CAP, NAME_SLOT, PATH_CAP, SYSCALL_SLOTS, XATTR_NAME_CAP},
    offsets::{SyscallShape, TIMES_TIMESPEC, TIMES_TIMEVAL, TIMES_UTIMBUF},
    record::*,
    EventKind, KernelOffsets, LossSite,
};

use crate::{
    event::current_header,
    kernel::{is_agent, offsets, read_user, tp_field},
    location::{
        base_of, base_watched, hints, name_watched, read_user_string, walk_base,
        whole_string_watched, Args, ScanState, SCAN_STATE_AT,
    },
    maps::{hook_word, loss, wake_flags, Draft, SYSCALL_SHAPES},
};

// `sys_exit_*` record offsets (tracefs `format`).
const TP_SYSCALL_NR: usize = 8;
const TP_EXIT_RET: usize = 16;

const AT_REMOVEDIR: u32 = 0x200;
const UTIME_NOW: i64 = (1 << 30) - 1;
const UTIME_OMIT: i64 = (1 << 30) - 2;

const FIXED: u32 = size_of::<FileChangeRecord>() as u32;
/// Names at least this long are not scanned: sent (as cut names are), which keeps the
/// scan's loop, and what the verifier walks of it, bounded.
const NAME_SCANNED: u32 = 512;
/// Masks bounding each payload segment for the verifier (next powers of two of the caps).
const NAME_MASK: u32 = 2 * NAME_CAP as u32 - 1;
const EXTRA_MASK: u32 = 2 * XATTR_NAME_CAP as u32 - 1;
const DIR_MASK: u32 = 2 * PATH_CAP as u32 - 1;
const _: () = assert!(
    (FIXED + 2 * NAME_MASK + EXTRA_MASK + 2 * DIR_MASK) as usize + NAME_SLOT < SCAN_STATE_AT
);

/// Attached to `syscalls/sys_exit_*` of the chmod, setxattr, unlink, rename, truncate,
/// utimes, symlink and link families.
#[tracepoint]
pub fn rasp_file_change(ctx: TracePointContext) -> u32 {
    let ret: i64 = tp_field(&ctx, TP_EXIT_RET);
    if ret != 0 {
        return 0;
    }
    let watched = hook_word(HOOK_CHANGE);
    if watched & HOOK_ENABLED == 0 {
        return 0;
    }
    let nr: i64 = tp_field(&ctx, TP_SYSCALL_NR);
    let Some(shape) = SYSCALL_SHAPES.get((nr as u32) & (SYSCALL_SLOTS - 1)) else {
        return 0;
    };
    let shape = *shape;
    // utimes may turn out to be a touch (times set to now): either bit keeps it.
    let bits = if shape.op == CHANGE_OP_UTIMES as u32 {
        (1 << CHANGE_OP_UTIMES) | (1 << CHANGE_OP_TOUCH)
    } else if shape.op == CHANGE_OP_UNLINK as u32 {
        (1 << CHANGE_OP_UNLINK) | (1 << CHANGE_OP_RMDIR)
    } else {
        1u32 << (shape.op & 31)
    };
    if shape.op == 0 || shape.op >= CHANGE_OPS as u32 || watched & bits == 0 {
        return 0;
    }
    if is_agent() {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    change(o, &shape, watched);
    0
}

/// What the operation's own arguments say: the final operation (unlinkat of a directory
/// is an rmdir, utimes to now is a touch), the mode/flags word, the value, and whether
/// they alone make the change interesting.
struct Attributes {
    op: u16,
    mode: u32,
    value: u64,
    watched: bool,
}

/// Written through `a` (a struct returned by value comes back as a pointer to the
/// caller's stack, which the verifier refuses); returns the operation, so that r0 holds a
/// number at the subprogram's exit (left as it was, it held a stack pointer: refused too).
#[inline(never)]
fn attributes(args: &Args, shape: &SyscallShape, a: &mut Attributes) -> u32 {
    let v = args.get(shape.value);
    *a = Attributes {
        op: shape.op as u16,
        mode: v as u32,
        value: 0,
        watched: false,
    };
    if a.op == CHANGE_OP_CHMOD {
        a.mode &= 0o7777;
        a.watched = a.mode & hook_word(HOOK_CHMOD_MODES) != 0;
    } else if a.op == CHANGE_OP_UNLINK {
        if a.mode & AT_REMOVEDIR != 0 {
            a.op = CHANGE_OP_RMDIR;
        }
    } else if a.op == CHANGE_OP_TRUNCATE {
        a.mode = 0;
        a.value = v;
    } else if a.op == CHANGE_OP_UTIMES {
        let (explicit, mtime) = times(args.get(shape.extra), shape.times);
        if !explicit {
            a.op = CHANGE_OP_TOUCH;
        }
        a.value = mtime;
    }
    u32::from(a.op)
}

/// Were the times set to chosen values (not "now"), and the modification time asked for.
/// An unreadable times argument counts as chosen (sent, not dropped).
#[inline(always)]
fn times(ptr: u64, layout: u8) -> (bool, u64) {
    if ptr == 0 {
        return (false, 0);
    }
    let mut t = [0i64; 4];
    let len = if layout == TIMES_UTIMBUF { 16 } else { 32 };
    if read_user(t.as_mut_ptr() as *mut u8, len, ptr).is_err() {
        loss(LossSite::FileChangeRead, line!());
        return (true, 0);
    }
    if layout == TIMES_TIMESPEC {
        let chosen = |nsec: i64| nsec != UTIME_NOW && nsec != UTIME_OMIT;
        let mtime = if chosen(t[3]) { t[2] } else { t[0] };
        (chosen(t[1]) || chosen(t[3]), mtime as u64)
    } else if layout == TIMES_TIMEVAL {
        (true, t[2] as u64)
    } else {
        (true, t[1] as u64)
    }
}

// The record is built in stages, each out of line, each reading what it needs from the
// draft's fixed part (and `ScanState`) and leaving its results there. The verifier does
// not track what a map value holds, so every path reaches a stage in the same state and
// each stage (the name scans, the dentry walk, the two path rebuilds) is verified once;
// with the values in registers, every split on a failed read or an operation was one more
// pass over all of them, and the program overran the verifier's 1M-instruction budget.

/// A field of the record being built, as the verifier sees memory: any value.
#[inline(always)]
fn field(p: *const u32) -> u32 {
    // SAFETY: `p` points into the draft's fixed part.
    unsafe { core::ptr::read_volatile(p) }
}

/// Stage 1: the descriptors and the names, into the draft (names right after the fixed
/// part); an unreadable name is flagged. `fd` holds the first descriptor, `dir2_len` the
/// second's until `finish` overwrites it.
#[inline(never)]
fn read_names(base: *mut u8, args: &Args, shape: &SyscallShape) -> u32 {
    let rec = base as *mut FileChangeRecord;
    let st = ScanState::of(base);
    let n1 = read_name(base, FIXED, args.get(shape.name), &st, CHANGE_NAME_FAILED);
    let n2 = read_name(
        base,
        FIXED + n1,
        args.get(shape.name2),
        &st,
        CHANGE_NAME2_FAILED,
    );
    // SAFETY: fields of the draft's fixed part.
    unsafe {
        addr_of_mut!((*rec).fd).write(args.get(shape.dirfd) as i32);
        addr_of_mut!((*rec).dir2_len).write(args.get(shape.dirfd2) as u32);
        addr_of_mut!((*rec).name_len).write(n1);
        addr_of_mut!((*rec).name2_len).write(n2);
    }
    0
}

/// A location's name, read into the draft at `at`: its length with the NUL (0 when there
/// is none or it is unreadable: `failed` is then set in the draft's flags word).
#[inline(always)]
fn read_name(base: *mut u8, at: u32, ptr: u64, st: &ScanState, failed: u16) -> u32 {
    if ptr == 0 {
        return 0;
    }
    // SAFETY: `at` + NAME_CAP lies inside the scratch buffer (see the assertion above).
    match read_user_string(
        unsafe { base.add((at & NAME_MASK) as usize) },
        NAME_CAP as u32,
        ptr,
    ) {
        Ok(n) => n & NAME_MASK,
        Err(_) => {
            st.add_flags(failed);
            loss(LossSite::FileChangeRead, line!());
            0
        }
    }
}

/// Is the name (`n` bytes with its NUL, at `name`) watched by its components? A name too
/// long to have been scanned whole counts as watched (sent, not guessed).
#[inline(never)]
fn name_hit(name: *const u8, n: u32, st: &ScanState) -> bool {
    let len = if n > 0 { n - 1 } else { 0 };
    if len >= NAME_SCANNED {
        return true;
    }
    let (Some(leaf), Some(any)) = (hints(HINT_CHANGE_LEAF), hints(HINT_CHANGE_ANY)) else {
        return false;
    };
    len > 0 && name_watched(name, len, leaf, any, st)
}

/// Is the name at `name` (`n` bytes with its NUL) relative to a base (a directory, or
/// the descriptor's own file when empty)?
#[inline(always)]
fn is_relative(name: *const u8, n: u32) -> bool {
    // SAFETY: `name` has at least one byte (the NUL) when n > 0.
    n <= 1 || unsafe { *name } != b'/'
}

/// `ScanState` slots: what to do about the base, and its descriptor.
const PLAN: usize = 0;
const PLAN_FD: usize = 1;
const BASE_SEND: u32 = 1;
const BASE_CHECK: u32 = 2;
const BASE_FILE: u32 = 4;

/// Stage 2: could a location be watched? Its names' components, or the dentries of the one
/// base a relative name is joined to (the first location's if relative, else the
/// second's; two relative names on different descriptors say yes unchecked). A name not
/// read whole says yes.
#[inline(never)]
fn locations_watched(o: &KernelOffsets, base: *mut u8) -> u32 {
    let rec = base as *mut FileChangeRecord;
    let st = ScanState::of(base);
    // SAFETY: fields of the draft's fixed part.
    let (n1, n2, fd1, fd2) = unsafe {
        (
            field(addr_of_mut!((*rec).name_len)) & NAME_MASK,
            field(addr_of_mut!((*rec).name2_len)) & NAME_MASK,
            field(addr_of_mut!((*rec).fd) as *const u32) as i32,
            field(addr_of_mut!((*rec).dir2_len)) as i32,
        )
    };
    if st.flags() & (CHANGE_NAME_FAILED | CHANGE_NAME2_FAILED) != 0
        || n1 >= NAME_CAP as u32
        || n2 >= NAME_CAP as u32
    {
        return 1;
    }
    // SAFETY: inside the scratch buffer.
    let (name1, name2) = unsafe { (base.add(FIXED as usize), base.add((FIXED + n1) as usize)) };
    let rel1 = is_relative(name1, n1);
    let rel2 = n2 > 0 && is_relative(name2, n2);
    let plan = if rel1 && rel2 && fd1 != fd2 {
        BASE_SEND
    } else if rel1 {
        BASE_CHECK | if n1 <= 1 && fd1 >= 0 { BASE_FILE } else { 0 }
    } else if rel2 {
        BASE_CHECK
    } else {
        0
    };
    st.set_slot(PLAN, plan);
    st.set_slot(PLAN_FD, if rel1 { fd1 as u32 } else { fd2 as u32 });
    if name_hit(name1, n1, &st) {
        return 1;
    }
    // SAFETY: re-read from the draft: the second name's start, by the first's length.
    let n1 = field(unsafe { addr_of_mut!((*rec).name_len) }) & NAME_MASK;
    let n2 = field(unsafe { addr_of_mut!((*rec).name2_len) }) & NAME_MASK;
    // SAFETY: inside the scratch buffer.
    if n2 > 0 && name_hit(unsafe { base.add((FIXED + n1) as usize) }, n2, &st) {
        return 1;
    }
    let plan = st.slot(PLAN);
    if plan & BASE_SEND != 0 {
        return 1;
    }
    if plan & BASE_CHECK == 0 {
        return 0;
    }
    match base_of(o, st.slot(PLAN_FD) as i32) {
        Some(b) => u32::from(base_watched(o, &b, st.slot(PLAN) & BASE_FILE != 0)),
        None => 0,
    }
}

/// Stage 3: setxattr's attribute name or symlink's target after the names; whether the
/// attribute name alone makes the change worth sending.
#[inline(never)]
fn read_extra(base: *mut u8, args: &Args, shape: &SyscallShape, op: u32) -> u32 {
    let rec = base as *mut FileChangeRecord;
    let st = ScanState::of(base);
    // SAFETY: fields of the draft's fixed part.
    let at = unsafe {
        FIXED
            + (field(addr_of_mut!((*rec).name_len)) & NAME_MASK)
            + (field(addr_of_mut!((*rec).name2_len)) & NAME_MASK)
    };
    // SAFETY: inside the scratch buffer (see the assertion above).
    let dst = unsafe { base.add(at as usize) };
    let extra = match read_user_string(dst, XATTR_NAME_CAP as u32, args.get(shape.extra)) {
        Ok(n) => n & EXTRA_MASK,
        Err(_) => {
            st.add_flags(CHANGE_EXTRA_FAILED);
            loss(LossSite::FileChangeRead, line!());
            0
        }
    };
    // SAFETY: a field of the draft's fixed part.
    unsafe { addr_of_mut!((*rec).extra_len).write(extra) };
    if op != CHANGE_OP_SETXATTR as u32 || hook_word(HOOK_XATTR_NAMES) & HOOK_ENABLED == 0 {
        return 0;
    }
    let Some(set) = hints(HINT_XATTR) else {
        return 0;
    };
    let len = if extra > 0 { extra - 1 } else { 0 };
    u32::from(whole_string_watched(dst, len, set, &st))
}

#[inline(never)]
fn change(o: &KernelOffsets, shape: &SyscallShape, watched: u32) {
    let Some(draft) = Draft::begin() else { return };
    let base = draft.base();
    let st = ScanState::of(base);
    st.clear_flags();
    let args = Args::read(o);
    read_names(base, &args, shape);
    let located = locations_watched(o, base);

    let mut attr = Attributes {
        op: 0,
        mode: 0,
        value: 0,
        watched: false,
    };
    let op = attributes(&args, shape, &mut attr);
    if watched & (1 << (op & 31)) == 0 {
        return;
    }
    let rec = base as *mut FileChangeRecord;
    let mut extra_hit = 0;
    if op == CHANGE_OP_SETXATTR as u32 || op == CHANGE_OP_SYMLINK as u32 {
        extra_hit = read_extra(base, &args, shape, op);
    } else {
        // SAFETY: a field of the draft's fixed part.
        unsafe { addr_of_mut!((*rec).extra_len).write(0) };
    }
    let send = located != 0
        || extra_hit != 0
        || attr.watched
        || hook_word(HOOK_CHANGE_ALL) & (1 << (op & 31)) != 0;
    if !send {
        return;
    }
    // SAFETY: the fixed part lies at the start of the draft.
    unsafe {
        addr_of_mut!((*rec).op).write(op as u16);
        addr_of_mut!((*rec).mode).write(attr.mode);
        addr_of_mut!((*rec).value).write(attr.value);
    }
    finish(o, &draft);
}

/// Stage 4: the flags the record's names imply, the directories of relative names (or
/// the descriptor's file) after the payload, the lengths and the header; send.
#[inline(never)]
fn finish(o: &KernelOffsets, draft: &Draft) -> u32 {
    let base = draft.base();
    name_flags(base);
    dir_stage::<true>(o, base, 1);
    dir_stage::<false>(o, base, 2);
    let rec = base as *mut FileChangeRecord;
    let st = ScanState::of(base);
    // SAFETY: fields of the draft's fixed part.
    let total = unsafe {
        FIXED
            + (field(addr_of_mut!((*rec).name_len)) & NAME_MASK)
            + (field(addr_of_mut!((*rec).name2_len)) & NAME_MASK)
            + (field(addr_of_mut!((*rec).extra_len)) & EXTRA_MASK)
            + (field(addr_of_mut!((*rec).dir_len)) & DIR_MASK)
            + (field(addr_of_mut!((*rec).dir2_len)) & DIR_MASK)
    };
    // SAFETY: the fixed part lies at the start of the draft.
    unsafe {
        addr_of_mut!((*rec).header).write(current_header(EventKind::FileChange, o, total as usize));
        addr_of_mut!((*rec).flags).write(st.flags());
    }
    draft.send_ref(total, wake_flags(), LossSite::FileChangeSend, line!());
    0
}

/// The flags the names' lengths and the first descriptor imply.
#[inline(never)]
fn name_flags(base: *mut u8) -> u32 {
    let rec = base as *mut FileChangeRecord;
    let st = ScanState::of(base);
    // SAFETY: fields of the draft's fixed part.
    let (fd1, n1, n2) = unsafe {
        (
            field(addr_of_mut!((*rec).fd) as *const u32) as i32,
            field(addr_of_mut!((*rec).name_len)),
            field(addr_of_mut!((*rec).name2_len)),
        )
    };
    // The first location is the descriptor's file itself when there is no name.
    if n1 <= 1 && fd1 >= 0 {
        st.add_flags(CHANGE_FD_FILE);
    }
    if n1 >= NAME_CAP as u32 {
        st.add_flags(CHANGE_NAME_TRUNCATED);
    }
    if n2 >= NAME_CAP as u32 {
        st.add_flags(CHANGE_NAME2_TRUNCATED);
    }
    0
}

/// The base path of location `which` (1 or 2), when its name is relative (or it is the
/// descriptor's file), after what precedes it; its length into `dir_len`/`dir2_len`.
/// `dir2_len` holds the second descriptor until this stage overwrites it.
#[inline(never)]
fn dir_stage<const KEEP_TOP: bool>(o: &KernelOffsets, base: *mut u8, which: u32) -> u32 {
    let rec = base as *mut FileChangeRecord;
    let st = ScanState::of(base);
    // SAFETY: fields of the draft's fixed part.
    let (fd1, fd2, n1, n2, extra) = unsafe {
        (
            field(addr_of_mut!((*rec).fd) as *const u32) as i32,
            field(addr_of_mut!((*rec).dir2_len)) as i32,
            field(addr_of_mut!((*rec).name_len)) & NAME_MASK,
            field(addr_of_mut!((*rec).name2_len)) & NAME_MASK,
            field(addr_of_mut!((*rec).extra_len)) & EXTRA_MASK,
        )
    };
    let first = which == 1;
    // SAFETY: fields of the draft's fixed part.
    let out = unsafe {
        if first {
            addr_of_mut!((*rec).dir_len)
        } else {
            addr_of_mut!((*rec).dir2_len)
        }
    };
    // SAFETY: a field of the draft's fixed part.
    let dir1 = if first {
        0
    } else {
        field(unsafe { addr_of_mut!((*rec).dir_len) }) & DIR_MASK
    };
    let (n, at_name, fd) = if first {
        (n1, FIXED, fd1)
    } else {
        (n2, FIXED + n1, fd2)
    };
    let fd_file = first && st.flags() & CHANGE_FD_FILE != 0;
    // SAFETY: inside the scratch buffer.
    let wanted = fd_file || (n > 1 && is_relative(unsafe { base.add(at_name as usize) }, n));
    if !wanted {
        // SAFETY: a field of the draft's fixed part.
        unsafe { out.write(0) };
        return 0;
    }
    let slot = DirSlot {
        fd,
        at: FIXED + n1 + n2 + extra + dir1,
        cut: if first {
            CHANGE_DIR_TRUNCATED
        } else {
            CHANGE_DIR2_TRUNCATED
        },
        failed: if first {
            CHANGE_NAME_FAILED
        } else {
            CHANGE_NAME2_FAILED
        },
    };
    let len = dir_payload::<KEEP_TOP>(o, base, &slot, &st);
    // SAFETY: a field of the draft's fixed part.
    unsafe { out.write(len) };
    len
}

/// Where a location's base path goes in the draft, and the flags that say it is cut or
/// unreadable (a struct: BPF calls take at most five arguments).
struct DirSlot {
    fd: i32,
    at: u32,
    cut: u16,
    failed: u16,
}

/// The path of a location's base (the directory of a relative name, or the descriptor's
/// file) at `slot.at`; its length.
#[inline(never)]
fn dir_payload<const KEEP_TOP: bool>(
    o: &KernelOffsets,
    base: *mut u8,
    slot: &DirSlot,
    st: &ScanState,
) -> u32 {
    let at = slot.at & 8191;
    let walked = match base_of(o, slot.fd) {
        // SAFETY: `at` + a walk's bound lies inside the scratch buffer (see above).
        Some(b) => walk_base::<KEEP_TOP>(o, &b, unsafe { base.add(at as usize) }),
        None => Err(-9),
    };
    match walked {
        Ok(w) => {
            if w.truncated {
                st.add_flags(slot.cut);
            }
            w.len & DIR_MASK
        }
        Err(_) => {
            st.add_flags(slot.failed);
            loss(LossSite::FileChangeRead, line!());
            0
        }
    }
}
