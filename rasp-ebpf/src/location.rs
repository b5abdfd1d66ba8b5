//! Files named by the caller of a syscall (chmod, unlink, rename, mount, an AF_UNIX
//! connect): a user string, relative to a directory descriptor or the working directory.
//! The string is read once, into the record being built, and judged there: its components
//! are hashed (FNV-1a) in one branch-free pass and tested in the watched-name hint sets
//! (`interest::PATH_HINTS`); a relative name also has its directory's dentries checked
//! against `PATH_NAMES` with the plain-load walk file opens use. Only then is the
//! directory's path rebuilt into the record, for userspace to join with the name.
//!
//! The issue-19 syscall programs run at syscall *exit*: the kernel has copied the caller's
//! strings by then, so their pages are resident (a read at entry fails on a name the
//! program never touched, e.g. in an unread page of .rodata), and only what succeeded is
//! reported. The arguments come from the task's saved registers.

use aya_ebpf::helpers::generated::{bpf_probe_read_user_str, bpf_task_pt_regs};
use rasp_common::{
    interest::{
        change_dir_masks, change_file_masks, fnv1a, path_hint, PathHints, FNV_BASIS, FNV_PRIME,
        PATH_HINT_WORDS,
    },
    limits::NAME_CAP,
    KernelOffsets,
};

use crate::{
    kernel::{btf_load, current_task_btf, fresh, read_ptr, Kptr},
    maps::{PATH_FILTER, PATH_HINTS},
    vfs::{file_of_fd, names_hinted, walk_from, walk_from_leaf, FileView, NameSummary, PathWalk},
};

/// `AT_FDCWD`: a name relative to the working directory.
pub const AT_FDCWD: i32 = -100;

/// Argument `index` (0..6) of the current syscall, from the registers saved at entry.
#[inline(always)]
pub fn syscall_arg(o: &KernelOffsets, index: u8) -> u64 {
    // SAFETY: the current task as a BTF pointer is what bpf_task_pt_regs takes; it returns
    // a BTF pointer to its saved registers.
    let regs = unsafe { bpf_task_pt_regs(current_task_btf() as *mut _) } as Kptr;
    // A constant offset per arm: a BTF pointer takes no variable offset.
    match index {
        0 => btf_load(regs, fresh(&o.regs_args[0])),
        1 => btf_load(regs, fresh(&o.regs_args[1])),
        2 => btf_load(regs, fresh(&o.regs_args[2])),
        3 => btf_load(regs, fresh(&o.regs_args[3])),
        4 => btf_load(regs, fresh(&o.regs_args[4])),
        _ => btf_load(regs, fresh(&o.regs_args[5])),
    }
}

/// All six arguments of the current syscall, for programs that pick them by an index
/// from `SYSCALL_SHAPES` (an index into this array, masked, is a stack read the verifier
/// accepts; a variable offset on the registers' BTF pointer it does not).
#[repr(C)]
pub struct Args([u64; 8]);

impl Args {
    #[inline(always)]
    pub fn read(o: &KernelOffsets) -> Args {
        // SAFETY: as in `syscall_arg`.
        let regs = unsafe { bpf_task_pt_regs(current_task_btf() as *mut _) } as Kptr;
        let at = |i: usize| -> u64 { btf_load(regs, fresh(&o.regs_args[i])) };
        // Slot 6 (`ARG_CWD`) is AT_FDCWD, slot 7 (`ARG_NONE` masked) zero.
        Args([at(0), at(1), at(2), at(3), at(4), at(5), AT_FDCWD as u64, 0])
    }

    /// Argument `index`: 0..6 the syscall's, `ARG_CWD` AT_FDCWD, `ARG_NONE` 0. A mask, not
    /// a test: a branch here split the verifier's states at every use.
    #[inline(always)]
    pub fn get(&self, index: u8) -> u64 {
        self.0[(index & 7) as usize]
    }
}

/// Read the NUL-terminated user string at `ptr` into `dst` (at most `cap` bytes, a
/// constant). Returns its length with the NUL; `Err` for an unreadable or null pointer.
#[inline(always)]
pub fn read_user_string(dst: *mut u8, cap: u32, ptr: u64) -> Result<u32, i32> {
    if ptr == 0 {
        return Err(-14);
    }
    // SAFETY: the caller guarantees `dst..dst+cap` lies inside the record being built.
    let n = unsafe { bpf_probe_read_user_str(dst as *mut _, cap, ptr as *const _) };
    if n <= 0 {
        Err(n as i32)
    } else {
        Ok(n as u32)
    }
}

/// `NAME_CAP` as the verifier sees it (frozen read-only data) but the compiler does not:
/// a scan unrolled a thousand times would be a thousand copies of its body.
#[no_mangle]
static NAME_SCAN: u32 = NAME_CAP as u32;

/// A hint set by index (`interest::HINT_*`).
#[inline(always)]
pub fn hints(set: u32) -> Option<&'static PathHints> {
    PATH_HINTS.get(set)
}

#[inline(always)]
fn hinted(set: &PathHints, hash: u32) -> u64 {
    let (word, bit) = path_hint(hash);
    (set.words[(word as usize) & (PATH_HINT_WORDS - 1)] >> bit) & 1
}

/// Where `name_watched` keeps its running values: the last bytes of the record's scratch
/// buffer, which no payload reaches (see `SCAN_STATE_AT`).
pub struct ScanState(*mut u32);

/// Offset of the scan's state in the scratch buffer; payloads stay below it.
pub const SCAN_STATE_AT: usize = rasp_common::record::SCRATCH_BYTES - 64;

impl ScanState {
    /// The state area of the draft whose buffer starts at `base`.
    #[inline(always)]
    pub fn of(base: *mut u8) -> ScanState {
        // SAFETY: `SCAN_STATE_AT + 32` is inside the scratch buffer.
        ScanState(unsafe { base.add(SCAN_STATE_AT) } as *mut u32)
    }

    /// Loads and stores through the buffer, not registers: the verifier does not track
    /// what a map value holds, so every iteration of a scan has the same abstract state
    /// (with the values in registers it tracked each constant combination and ran out
    /// of its 1M-instruction budget).
    #[inline(always)]
    fn get(&self, i: usize) -> u32 {
        // SAFETY: `i` < 8, inside the state area.
        unsafe { core::ptr::read_volatile(self.0.add(i)) }
    }

    #[inline(always)]
    fn set(&self, i: usize, v: u32) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(self.0.add(i), v) }
    }

    /// A record's flags word, kept here (not in a register) while it is built, for the
    /// same reason as the scan's values.
    #[inline(always)]
    pub fn clear_flags(&self) {
        self.set(FLAGS, 0);
    }

    #[inline(always)]
    pub fn add_flags(&self, f: u16) {
        self.set(FLAGS, self.get(FLAGS) | u32::from(f));
    }

    #[inline(always)]
    pub fn flags(&self) -> u16 {
        self.get(FLAGS) as u16
    }

    /// Free slots (5 and 6) for a caller's own values.
    #[inline(always)]
    pub fn set_slot(&self, i: usize, v: u32) {
        self.set(5 + (i & 1), v);
    }

    #[inline(always)]
    pub fn slot(&self, i: usize) -> u32 {
        self.get(5 + (i & 1))
    }
}

const FLAGS: usize = 7;

const H: usize = 0;
const NZ: usize = 1;
const LAST: usize = 2;
const SEEN: usize = 3;
const HIT: usize = 4;

/// `value` through a volatile stack slot. BPF has no set-on-condition instruction: LLVM
/// lowers a value it recognises as a comparison (`(x - 1) >> 31` of a byte is `x == 0`)
/// or a select (`a & m | b & !m` of a 0/-1 mask) into branches, which split the
/// verifier's states on every byte. Hidden behind this, the arithmetic stays arithmetic.
#[inline(always)]
fn opaque(value: u32) -> u32 {
    let slot = value;
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&slot) }
}

/// Is any component of the name at `name` (`len` bytes before its NUL) in `any`, or its
/// last component in `leaf`? One pass over the bytes, without a branch in the body (the
/// verifier walks each iteration once; a byte that ends a component, a `/` after a
/// non-empty component, only changes which words are combined). Out of line: the loop can
/// end at any byte, and each end would otherwise carry the rest of the caller's program
/// through the verifier again; returning a bool, they meet at the call.
#[inline(never)]
pub fn name_watched(
    name: *const u8,
    len: u32,
    leaf: &PathHints,
    any: &PathHints,
    st: &ScanState,
) -> bool {
    st.set(H, FNV_BASIS);
    st.set(NZ, 0);
    st.set(LAST, FNV_BASIS);
    st.set(SEEN, 0);
    st.set(HIT, 0);
    let bound = unsafe { core::ptr::read_volatile(&NAME_SCAN) };
    for i in 0..bound {
        if i >= len {
            break;
        }
        // SAFETY: `i` < len < NAME_CAP bytes of the string read into the record.
        let c = unsafe { *name.add((i & (NAME_CAP as u32 - 1)) as usize) } as u32;
        let h = st.get(H);
        // 1 when `c` is '/'.
        let slash = (opaque(c ^ b'/' as u32).wrapping_sub(1) >> 31) & 1;
        // A component ends here: a slash after a byte that was not one.
        let end = opaque(slash & st.get(NZ));
        st.set(HIT, st.get(HIT) | (hinted(any, h) as u32 & end));
        let keep = opaque(end.wrapping_neg());
        st.set(LAST, (st.get(LAST) & !keep) | (h & keep));
        st.set(SEEN, st.get(SEEN) | end);
        let inside = opaque((slash ^ 1).wrapping_neg());
        st.set(
            H,
            ((h ^ c).wrapping_mul(FNV_PRIME) & inside) | (FNV_BASIS & !inside),
        );
        st.set(NZ, (slash ^ 1) & 1);
    }
    // The final component, when the name does not end with a slash.
    let h = st.get(H);
    let tail = opaque(st.get(NZ));
    let mut hit = st.get(HIT) as u64 | (hinted(any, h) & tail as u64);
    let keep = opaque(tail.wrapping_neg());
    let last = (st.get(LAST) & !keep) | (h & keep);
    let seen = st.get(SEEN) | tail;
    hit |= hinted(leaf, last) & seen as u64;
    hit != 0
}

/// The hash of a whole NUL-terminated string of `len` bytes (before the NUL), as
/// `interest::fnv1a` computes it: an extended attribute's name. Out of line, as above.
#[inline(never)]
pub fn whole_string_watched(s: *const u8, len: u32, set: &PathHints, st: &ScanState) -> bool {
    st.set(H, FNV_BASIS);
    let bound = unsafe { core::ptr::read_volatile(&NAME_SCAN) };
    for i in 0..bound {
        if i >= len {
            break;
        }
        // SAFETY: as in `name_watched`.
        let c = unsafe { *s.add((i & (NAME_CAP as u32 - 1)) as usize) } as u32;
        st.set(H, (st.get(H) ^ c).wrapping_mul(FNV_PRIME));
    }
    hinted(set, st.get(H)) != 0
}

const _: () = assert!(fnv1a(b"") == FNV_BASIS);

/// Where a location's name is relative to: the working directory or a descriptor's file
/// (a directory, or with an empty name the file itself), as (`struct vfsmount *`,
/// `struct dentry *`) BTF pointers. `None` when the descriptor is not open.
#[inline(always)]
pub fn base_of(o: &KernelOffsets, fd: i32) -> Option<(Kptr, Kptr)> {
    let task = current_task_btf();
    if fd == AT_FDCWD {
        let fs: Kptr = btf_load(task, fresh(&o.task_fs));
        let pwd = fresh(&o.fs_pwd);
        return Some((
            btf_load(fs, pwd + fresh(&o.path_mnt)),
            btf_load(fs, pwd + fresh(&o.path_dentry)),
        ));
    }
    if fd < 0 {
        return None;
    }
    let file = file_of_fd(o, task, fd as u32)?;
    let view = FileView::of(o, file);
    Some((view.mnt, view.dentry))
}

/// Could the directory (or file) at `base` have a watched name at some depth? `file`:
/// the base is the named file itself (its own name is tested as a leaf too). Hints only
/// (`vfs::names_hinted`): a collision sends the record, userspace decides.
#[inline(always)]
pub fn base_watched(o: &KernelOffsets, base: &(Kptr, Kptr), file: bool) -> bool {
    let summary = NameSummary {
        filter: &PATH_FILTER,
    };
    let m = if file {
        change_file_masks()
    } else {
        change_dir_masks()
    };
    names_hinted(
        o,
        current_task_btf(),
        base,
        &summary,
        u64::from(m.leaf) | u64::from(m.above) << 32,
    )
}

/// Rebuild the path of `base` into `dst` (`PATH_CAP` + `NAME_SLOT` bytes of the record),
/// keeping the top components of one too long when `KEEP_TOP` (see `vfs::walk_from`).
#[inline(always)]
pub fn walk_base<const KEEP_TOP: bool>(
    o: &KernelOffsets,
    base: &(Kptr, Kptr),
    dst: *mut u8,
) -> Result<PathWalk, i32> {
    let task: Kptr = crate::kernel::current_task();
    let fs = read_ptr(task, o.task_fs)?;
    let root = fs.wrapping_add(o.fs_root as usize);
    if KEEP_TOP {
        walk_from(o, base.0, base.1, root, dst)
    } else {
        walk_from_leaf(o, base.0, base.1, root, dst)
    }
}
