//! VFS structures: from a descriptor to its `struct file`, and up a path's dentries the way
//! the kernel's `prepend_path` walks them: up `d_parent` to the mount root, across to the
//! parent mount's mountpoint, until the task's root (so paths are what the process itself
//! sees, container roots included). `bpf_d_path` is not allowed in tracepoint programs,
//! hence the walk. One ascent serves both the path rebuilt into a record (`walk_path`) and
//! the interest pre-filter that looks component names up in a map (`names_interest`).
//!
//! An unwatched open pays for the pre-filter, so its reads are counted. Measured here
//! (bpf_stats): `bpf_probe_read_kernel` ~40 ns for 8 bytes, a plain load through a BTF
//! pointer ~1 ns. The pre-filter therefore reads with `Btf` loads: the fd table from
//! `bpf_get_current_task_btf`, the file (a cast of its fd slot, see `file_of_fd`) and mounts cast
//! with `bpf_rdonly_cast`. Records are rare and rebuilt with helper reads (`Probe`), which
//! work on any pointer.

use core::mem::MaybeUninit;

use aya_ebpf::maps::{Array, HashMap};

use crate::kernel::{
    btf_load, fresh, rdonly_cast, read_kernel, read_kernel_str, read_ptr, read_u32, Kptr,
};
use crate::maps::{filter_word, forget};
use rasp_common::{
    interest::{name_hint, DepthMasks, NameKey, FILTER_LENGTHS, MASK_SLOTS},
    limits::{NAME_KEY_LEN, NAME_SLOT, PATH_CAP, PATH_DEPTH},
    KernelOffsets,
};

/// How an ascent reads kernel memory.
pub trait Mem {
    fn ptr(base: Kptr, off: u32) -> Result<Kptr, i32>;
    fn u32(base: Kptr, off: u32) -> Result<u32, i32>;
    /// The `struct mount` a `struct vfsmount *` is embedded in.
    fn mount_of(o: &KernelOffsets, mnt: Kptr) -> Kptr;
}

/// `bpf_probe_read_kernel`: any pointer, ~40 ns a read.
pub struct Probe;

impl Mem for Probe {
    #[inline(always)]
    fn ptr(base: Kptr, off: u32) -> Result<Kptr, i32> {
        read_ptr(base, off)
    }

    #[inline(always)]
    fn u32(base: Kptr, off: u32) -> Result<u32, i32> {
        read_u32(base, off)
    }

    #[inline(always)]
    fn mount_of(o: &KernelOffsets, mnt: Kptr) -> Kptr {
        mnt.wrapping_sub(fresh(&o.mount_mnt) as usize)
    }
}

/// Plain loads: every pointer must be a BTF pointer (see `kernel::btf_load`). Never fails
/// (a fault reads as zero).
pub struct Btf;

impl Mem for Btf {
    #[inline(always)]
    fn ptr(base: Kptr, off: u32) -> Result<Kptr, i32> {
        Ok(btf_load(base, off))
    }

    #[inline(always)]
    fn u32(base: Kptr, off: u32) -> Result<u32, i32> {
        Ok(btf_load(base, off))
    }

    /// `container_of` would be a negative offset from a BTF pointer, which the verifier
    /// refuses to dereference: cast the address instead.
    #[inline(always)]
    fn mount_of(o: &KernelOffsets, mnt: Kptr) -> Kptr {
        rdonly_cast(
            mnt.wrapping_sub(fresh(&o.mount_mnt) as usize),
            fresh(&o.btf_mount),
        )
    }
}

/// `current->files->fdt->fd[fd]` (`task` is the current task as a BTF pointer),
/// bounds-checked against `fdt->max_fds` as `fcheck` does, as a BTF pointer; `None` when no
/// file is open there. Read at a syscall tracepoint of the task that owns the table, so the
/// slot holds the file the syscall just installed or is about to use; a close racing from
/// another thread can at worst show a newer file or garbage, and garbage read through a BTF
/// pointer reads as zeroes, never faults.
///
/// No helper call: the fd array is a `struct file **`, which BTF loads cannot index (the
/// verifier refuses a variable offset on a BTF pointer), so the slot's address is cast to
/// some struct whose first member is a pointer, and that pointer loaded: the verifier
/// checks the load against the struct's BTF, the JIT makes it a fault-safe load, and the
/// 8 bytes are the slot's `struct file *`. `struct mount` serves (its first member,
/// `mnt_hash.next`, has been a pointer on every kernel); `struct file`'s first member is
/// 4 bytes since 6.13. A `bpf_probe_read_kernel` here cost as much as the rest of an
/// unwatched open's walk.
#[inline(always)]
pub fn file_of_fd(o: &KernelOffsets, task: Kptr, fd: u32) -> Option<Kptr> {
    let files: Kptr = btf_load(task, fresh(&o.task_files));
    let fdt: Kptr = btf_load(files, fresh(&o.files_fdt));
    let max_fds: u32 = btf_load(fdt, fresh(&o.fdtable_max_fds));
    if fd >= max_fds {
        return None;
    }
    let fds: Kptr = btf_load(fdt, fresh(&o.fdtable_fd));
    // max_fds ≤ NR_OPEN (1 << 20), so fd * 8 fits in u32.
    let slot = rdonly_cast(
        fds.wrapping_add(fd.wrapping_mul(8) as usize),
        fresh(&o.btf_mount),
    );
    let file: Kptr = btf_load(slot, 0);
    if file.is_null() {
        return None;
    }
    Some(rdonly_cast(file, fresh(&o.btf_file)))
}

/// `file` (a BTF pointer to a `struct file`) as `SEEN_EXEC_FILES` keys it: plain loads, the
/// verifier types each pointer member it follows (`f_inode`, `i_sb`). A fault reads as
/// zero (inode 0 is no real file; the agent ignores it).
#[inline(always)]
pub fn file_identity(o: &KernelOffsets, file: Kptr) -> rasp_common::discovery::ExecFileKey {
    let inode: Kptr = btf_load(file, fresh(&o.file_f_inode));
    let sb: Kptr = btf_load(inode, fresh(&o.inode_sb));
    rasp_common::discovery::ExecFileKey {
        dev: btf_load(sb, fresh(&o.sb_dev)),
        _pad: 0,
        ino: btf_load(inode, fresh(&o.inode_ino)),
    }
}

/// What the hooks need from a `struct file` (a BTF pointer). `repr(C)` with the pointers
/// first: the verifier tracks a BTF pointer only as a whole 8-byte register or stack slot,
/// and a layout the compiler chose split one into halves ("pointer arithmetic with >>=").
#[repr(C)]
pub struct FileView {
    pub file: Kptr,
    /// `f_path.mnt` (a `struct vfsmount *`) and `f_path.dentry`, BTF pointers.
    pub mnt: Kptr,
    pub dentry: Kptr,
    /// `f_flags`: the access mode and status flags.
    pub flags: u32,
}

impl FileView {
    #[inline(always)]
    pub fn of(o: &KernelOffsets, file: Kptr) -> Self {
        let path = fresh(&o.file_f_path);
        FileView {
            file,
            flags: btf_load(file, fresh(&o.file_f_flags)),
            mnt: btf_load(file, path + fresh(&o.path_mnt)),
            dentry: btf_load(file, path + fresh(&o.path_dentry)),
        }
    }

    /// The file's identity (`f_inode->i_sb->s_dev`, `f_inode->i_ino`), plain loads.
    #[inline(always)]
    pub fn identity(&self, o: &KernelOffsets) -> rasp_common::discovery::ExecFileKey {
        file_identity(o, self.file)
    }

    /// `f_mode`: what the open granted (`FMODE_READ`, `FMODE_WRITE`, `FMODE_CREATED`).
    #[inline(always)]
    pub fn mode(&self, o: &KernelOffsets) -> u32 {
        btf_load(self.file, fresh(&o.file_f_mode))
    }
}

/// One step up a path.
pub enum Up {
    /// A component: its dentry, name pointer and length; the ascent moved to its parent.
    Name { dentry: Kptr, name: Kptr, len: u32 },
    /// Moved from a mount's root to where it is mounted; no component consumed.
    Crossed,
    /// Reached the root (the task's, or the mount namespace's).
    Root,
}

/// A position in the dentry tree, climbing towards a root, reading with `M`.
pub struct Ascent<M: Mem> {
    /// The `struct mount` the position is in (the same pointer type before and after a
    /// crossing, which keeps the verifier's states mergeable), and its root dentry.
    mount: Kptr,
    mnt_root: Kptr,
    dentry: Kptr,
    /// (`struct vfsmount *`, `struct dentry *`) to stop at. `None` (the top of the mount
    /// namespace) must be known at compile time where pointers are BTF pointers: compared
    /// with null, the compiler merges the two tests into `(dentry | mnt) == 0`, and the
    /// verifier forbids arithmetic on pointers.
    root: Option<(Kptr, Kptr)>,
    _mem: core::marker::PhantomData<M>,
}

impl<M: Mem> Ascent<M> {
    /// Start at (`mnt`, `dentry`), a `struct vfsmount *` and a `struct dentry *`. Stop at
    /// `root` (the task's `fs->root` as (mnt, dentry)), or with `None` at the top of the
    /// mount namespace.
    #[inline(always)]
    pub fn new(
        o: &KernelOffsets,
        mnt: Kptr,
        dentry: Kptr,
        root: Option<(Kptr, Kptr)>,
    ) -> Result<Self, i32> {
        let mount = M::mount_of(o, mnt);
        Ok(Ascent {
            mount,
            mnt_root: M::ptr(mount, fresh(&o.mount_mnt) + fresh(&o.vfsmount_root))?,
            dentry,
            root,
            _mem: core::marker::PhantomData,
        })
    }

    #[inline(always)]
    pub fn step(&mut self, o: &KernelOffsets) -> Result<Up, i32> {
        if let Some((root_mnt, root_dentry)) = self.root {
            let mnt = self.mount.wrapping_add(fresh(&o.mount_mnt) as usize);
            if self.dentry == root_dentry && mnt == root_mnt {
                return Ok(Up::Root);
            }
        }
        if self.dentry == self.mnt_root {
            let mount = self.mount;
            let parent = M::ptr(mount, fresh(&o.mount_parent))?;
            if parent == mount {
                // The root of this mount namespace (or an internal mount: memfd, pipes).
                return Ok(Up::Root);
            }
            self.dentry = M::ptr(mount, fresh(&o.mount_mountpoint))?;
            self.mount = parent;
            self.mnt_root = M::ptr(parent, fresh(&o.mount_mnt) + fresh(&o.vfsmount_root))?;
            return Ok(Up::Crossed);
        }
        let dentry = self.dentry;
        let parent = M::ptr(dentry, fresh(&o.dentry_parent))?;
        // A dentry that is its own parent without being the mount's root is a pseudo file
        // (memfd, anonymous shmem): it has a name but no directory. Report the name, then
        // continue from the mount's root, which ends the walk (those mounts are internal).
        // This is what d_path shows too ("/memfd:name (deleted)").
        self.dentry = if parent == dentry {
            self.mnt_root
        } else {
            parent
        };
        Ok(Up::Name {
            dentry,
            name: M::ptr(dentry, fresh(&o.dentry_name_ptr))?,
            len: M::u32(dentry, fresh(&o.dentry_name_len))?,
        })
    }
}

/// `PATH_DEPTH` as the verifier sees it (a constant in frozen read-only data) but the
/// compiler does not: unrolled, a walk's iterations each got their own stack slots.
#[no_mangle]
static WALK_DEPTH: u32 = PATH_DEPTH as u32;

#[inline(always)]
fn walk_depth() -> u32 {
    // SAFETY: volatile read of our own global.
    unsafe { core::ptr::read_volatile(&WALK_DEPTH) }
}

/// Steps a walk climbs on, without copying, to find the top of a path that did not fit.
#[no_mangle]
static TOP_DEPTH: u32 = 24;

#[inline(always)]
fn top_depth() -> u32 {
    // SAFETY: volatile read of our own global.
    unsafe { core::ptr::read_volatile(&TOP_DEPTH) }
}

const KEY_WORDS: usize = NAME_KEY_LEN / 8;

/// A name key as words, filled in place: no zeroed copy (LLVM turns those into `memset`
/// calls, which the verifier walks byte by byte, per component of every walk).
#[repr(C, align(8))]
struct AlignedKey([u64; KEY_WORDS]);

impl AlignedKey {
    /// Make `key` the interest-map key of a component: the first `NAME_KEY_LEN - 1` bytes of
    /// its name, zero padded, as `interest::name_key` builds it in userspace. One helper
    /// read; building it from the dentry's inline name with plain loads instead made the
    /// verifier's state count explode (>1M instructions), and the length and first-byte
    /// tests before it keep this read rare.
    #[inline(always)]
    fn fill(key: &mut MaybeUninit<AlignedKey>, name: Kptr, len: u32) -> Result<&AlignedKey, i32> {
        let words = key.as_mut_ptr() as *mut u64;
        for i in 0..KEY_WORDS {
            // SAFETY: `i` < KEY_WORDS words of the key. Volatile: word stores, not a memset.
            unsafe { core::ptr::write_volatile(words.add(i), 0) };
        }
        let n = if len < NAME_KEY_LEN as u32 - 1 {
            len
        } else {
            NAME_KEY_LEN as u32 - 1
        };
        if n > 0 {
            // Masked for the verifier to 1..=NAME_KEY_LEN; `n` ≤ NAME_KEY_LEN - 1 keeps the
            // last byte zero.
            let size = ((n - 1) & (NAME_KEY_LEN as u32 - 1)) + 1;
            read_kernel(words as *mut u8, size, name)?;
        }
        // SAFETY: every word was written above.
        Ok(unsafe { key.assume_init_ref() })
    }

    #[inline(always)]
    fn as_name_key(&self) -> &NameKey {
        // SAFETY: same size, u8 has no alignment or validity requirements.
        unsafe { &*(self.0.as_ptr() as *const NameKey) }
    }
}

/// The name-map key (`interest::name_key`) of `dentry`'s own name, handed to `use_key`.
#[inline(always)]
pub fn with_name_key<R>(
    o: &KernelOffsets,
    dentry: Kptr,
    use_key: impl FnOnce(&NameKey) -> R,
) -> Result<R, i32> {
    let name = read_ptr(dentry, o.dentry_name_ptr)?;
    let len = read_u32(dentry, o.dentry_name_len)?;
    let mut key = MaybeUninit::<AlignedKey>::uninit();
    let key = AlignedKey::fill(&mut key, name, len)?;
    Ok(use_key(key.as_name_key()))
}

pub struct PathWalk {
    /// Bytes written: components leaf first, each NUL-terminated.
    pub len: u32,
    /// The walk could not write every component: the path is too long or too deep. When
    /// the root was still reached, the top components are kept after an empty component
    /// (a lone NUL, the gap): `leaf\0…\0\0top2\0top1\0` is `/top1/top2/…/leaf`, so rules
    /// anchored at the top (`/tmp/**`) still see where the file is. Without the gap the
    /// top is unknown.
    pub truncated: bool,
}

/// Written components may be cut back to the last boundary at or below this offset, so
/// that a gap and two whole top components (`NAME_SLOT` each) still fit in `PATH_CAP`.
const KEEP_FROM: u32 = PATH_CAP as u32 - 2 * NAME_SLOT as u32 - 1;

/// Rebuild `path` (a `struct path *`) relative to `root` (the task's `fs->root`) into `buf`,
/// which has `PATH_CAP` bytes followed by at least `NAME_SLOT` bytes of record (see
/// `ExecRecord::_slack`).
#[inline(always)]
pub fn walk_path<const KEEP_TOP: bool>(
    o: &KernelOffsets,
    path: Kptr,
    root: Kptr,
    buf: *mut u8,
) -> Result<PathWalk, i32> {
    let mnt = read_ptr(path, o.path_mnt)?;
    let dentry = read_ptr(path, o.path_dentry)?;
    walk_from_::<KEEP_TOP>(o, mnt, dentry, root, buf)
}

/// `value` through a volatile stack slot: the optimizer can no longer prove a range for
/// it and drop a mask the verifier needs (it knew `at <= 511`, so `at & 1023` went away,
/// and the verifier, which did not know, refused the store).
#[inline(always)]
fn opaque(value: u32) -> u32 {
    let slot = value;
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&slot) }
}

/// Copy the component name at `name` into `buf` at `at` (at most `slot` bytes, 1 ≤ slot ≤
/// `NAME_SLOT`); bytes written with the NUL.
#[inline(always)]
fn copy_name(buf: *mut u8, at: u32, slot: u32, name: Kptr) -> Result<u32, i32> {
    // Masks for the verifier: offset < PATH_CAP, size in 1..=NAME_SLOT; the record's
    // slack after the buffer covers the sum.
    let at = opaque(at) & (PATH_CAP as u32 - 1);
    let size = ((slot - 1) & (NAME_SLOT as u32 - 1)) + 1;
    // SAFETY: `at + size` < PATH_CAP + NAME_SLOT, inside the record (see above).
    let n = read_kernel_str(unsafe { buf.add(at as usize) }, size, name)?;
    if n == 0 {
        return Err(-1);
    }
    Ok(n)
}

/// `walk_path` from a (`struct vfsmount *`, `struct dentry *`) pair already read. A path
/// that does not fit keeps its leaf side up to `KEEP_FROM`, then the walk climbs on
/// without copying (up to another `TOP_DEPTH` steps) and writes the gap and the two
/// components below the root: four long directories under /tmp still read `/tmp/…`.
#[inline(always)]
pub fn walk_from(
    o: &KernelOffsets,
    mnt: Kptr,
    dentry: Kptr,
    root: Kptr,
    buf: *mut u8,
) -> Result<PathWalk, i32> {
    walk_from_::<true>(o, mnt, dentry, root, buf)
}

/// `walk_from` without the climb to the top: a path that does not fit keeps its leaf side.
#[inline(always)]
pub fn walk_from_leaf(
    o: &KernelOffsets,
    mnt: Kptr,
    dentry: Kptr,
    root: Kptr,
    buf: *mut u8,
) -> Result<PathWalk, i32> {
    walk_from_::<false>(o, mnt, dentry, root, buf)
}

/// `walk_from`; without `KEEP_TOP` a path that does not fit keeps only its leaf side (the
/// second climb costs the verifier as much as the first: exec's cwd walk goes without it,
/// so that the exec program stays within the verifier's budget).
#[inline(always)]
fn walk_from_<const KEEP_TOP: bool>(
    o: &KernelOffsets,
    mnt: Kptr,
    dentry: Kptr,
    root: Kptr,
    buf: *mut u8,
) -> Result<PathWalk, i32> {
    let walk = climb::<KEEP_TOP>(o, mnt, dentry, root, buf)?;
    // Whichever step the walk ended at, the code after it is verified once (`forget`).
    let packed = forget(u64::from(walk.len) | u64::from(walk.truncated) << 32);
    Ok(PathWalk {
        len: packed as u32 & (2 * PATH_CAP as u32 - 1),
        truncated: packed >> 32 != 0,
    })
}

/// The walk itself (see `walk_from_`).
#[inline(always)]
fn climb<const KEEP_TOP: bool>(
    o: &KernelOffsets,
    mnt: Kptr,
    dentry: Kptr,
    root: Kptr,
    buf: *mut u8,
) -> Result<PathWalk, i32> {
    let root = (read_ptr(root, o.path_mnt)?, read_ptr(root, o.path_dentry)?);
    let mut up = Ascent::<Probe>::new(o, mnt, dentry, Some(root))?;
    let mut off: u32 = 0;
    // The last component boundary at or below KEEP_FROM.
    let mut mark: u32 = 0;
    // The first component that did not fit (null while everything fits).
    let mut skipped: Kptr = core::ptr::null();

    for _ in 0..walk_depth() {
        let name = match up.step(o)? {
            Up::Name { name, .. } => name,
            Up::Crossed => continue,
            Up::Root => {
                return Ok(PathWalk {
                    len: off,
                    truncated: false,
                })
            }
        };
        // Tested on `off` rather than on what remains (the same test: `off` ≤ PATH_CAP, as
        // `n` ≤ `slot` ≤ what remains): the verifier then learns a bound for `off` on some
        // paths, and fewer of its states differ (-7% for the exec hook).
        if off > PATH_CAP as u32 - 2 {
            skipped = name;
            break;
        }
        let remaining = PATH_CAP as u32 - off;
        let slot = if remaining < NAME_SLOT as u32 {
            remaining
        } else {
            NAME_SLOT as u32
        };
        let n = copy_name(buf, off, slot, name)?;
        if n == slot && slot < NAME_SLOT as u32 {
            // Cut by the end of the buffer: this component did not fit.
            skipped = name;
            break;
        }
        off += n;
        if off <= KEEP_FROM {
            mark = off;
        }
    }
    if !KEEP_TOP {
        return Ok(PathWalk {
            len: off,
            truncated: true,
        });
    }
    // Too long or too deep: climb on to the root without copying, remembering the two
    // components nearest to it. The copy may have ended at any of its steps, each leaving
    // other exact lengths behind: forgotten (`forget`), the climb is verified once rather
    // than once per step (it was half of what the verifier walked for an open); the masks
    // bound the lengths again.
    let kept = forget(u64::from(off) | u64::from(mark) << 32);
    let off = kept as u32 & (2 * PATH_CAP as u32 - 1);
    let mark = (kept >> 32) as u32 & (2 * PATH_CAP as u32 - 1);
    let (mut top, mut below_top, mut more) = (skipped, core::ptr::null::<u8>(), false);
    for _ in 0..top_depth() {
        match up.step(o)? {
            Up::Name { name, .. } => {
                more |= !below_top.is_null();
                below_top = top;
                top = name;
            }
            Up::Crossed => continue,
            Up::Root => {
                if top.is_null() {
                    // The first loop ended just below the root: nothing was left out.
                    return Ok(PathWalk {
                        len: off,
                        truncated: false,
                    });
                }
                // Cut back to the mark if need be (room for two whole components), then
                // the gap if anything is left out, then the top components.
                let mut at = if off > KEEP_FROM { mark } else { off };
                let gap = more || at < off;
                if gap {
                    let g = opaque(at) & (PATH_CAP as u32 - 1);
                    // SAFETY: inside the buffer (masked).
                    unsafe { *buf.add(g as usize) = 0 };
                    at += 1;
                }
                if !below_top.is_null() {
                    at += copy_name(buf, at, NAME_SLOT as u32, below_top)?;
                }
                at += copy_name(buf, at, NAME_SLOT as u32, top)?;
                return Ok(PathWalk {
                    len: at,
                    truncated: gap,
                });
            }
        }
    }
    // Deeper than PATH_DEPTH + TOP_DEPTH: the top is unknown.
    Ok(PathWalk {
        len: if off > KEEP_FROM { mark } else { off },
        truncated: true,
    })
}

/// Interest bits to test at each depth of a path (`interest::DepthMasks`: the leaf, its
/// parent, every component above; `top` bits count only for the first component below the
/// task's root, `/lib` of `/lib/x`, not of `/var/lib/x`); with `memfd` set (0 or 1, a flag
/// without a branch for the verifier to split on) that component also counts when its name
/// starts with `interest::MEMFD_PREFIX`.
pub struct WalkMasks {
    pub depth: DepthMasks,
    pub memfd: u32,
}

/// A `*_FILTER` array's summary of the installed names, per mask (`FILTER_LENGTHS`,
/// `FILTER_NAME_HINTS`): a component whose length, or whose hint (`interest::name_hint`),
/// no name installed for the mask has is not looked up; a depth whose mask has no length
/// at all is not walked.
pub struct NameSummary<'f> {
    pub filter: &'f Array<u32>,
}

impl NameSummary<'_> {
    /// The lengths of the names installed for `mask` (0: nothing to find with it).
    #[inline(always)]
    pub fn lengths(&self, mask: u32) -> u32 {
        filter_word(self.filter, FILTER_LENGTHS + (mask & (MASK_SLOTS - 1)))
    }

    /// Could a name installed for `mask` have this length and first two bytes?
    #[inline(always)]
    pub fn hinted(&self, len: u32, first_two: u16, mask: u32) -> bool {
        let (word, bit) = name_hint(len, first_two as u8, (first_two >> 8) as u8, mask);
        filter_word(self.filter, word) & bit != 0
    }
}

/// The current task's root (`fs->root`) as (`struct vfsmount *`, `struct dentry *`) BTF
/// pointers, where a walk stops: paths are matched in userspace as the task sees them, so
/// a chroot's own `/lib` is at the top and the host's components above it do not count.
/// A task without `fs` (exiting) reads as (null, null), which no position equals: its walk
/// goes on to the namespace root.
#[inline(always)]
fn task_root_btf(o: &KernelOffsets, task: Kptr) -> (Kptr, Kptr) {
    let fs: Kptr = btf_load(task, fresh(&o.task_fs));
    let root = fresh(&o.fs_root);
    (
        btf_load(fs, root + fresh(&o.path_mnt)),
        btf_load(fs, root + fresh(&o.path_dentry)),
    )
}

/// `interest::MEMFD_PREFIX` as the little-endian word its 6 bytes load as.
const MEMFD_WORD: u64 = u64::from_le_bytes([b'm', b'e', b'm', b'f', b'd', b':', 0, 0]);

/// Does the name at `name` (`len` bytes) start with `interest::MEMFD_PREFIX`? One helper
/// read, only for names long enough: the top component of ordinary libraries (`usr`,
/// `lib`, `opt`, `home`) is shorter, so this is rarely paid.
#[inline(always)]
fn is_memfd_name(name: Kptr, len: u32) -> Result<bool, i32> {
    if len < rasp_common::interest::MEMFD_PREFIX.len() as u32 {
        return Ok(false);
    }
    let mut word = 0u64;
    read_kernel(&mut word as *mut u64 as *mut u8, 6, name)?;
    Ok(word == MEMFD_WORD)
}

/// Does some component of the path at (`mnt`, `dentry`), BTF pointers, carry one of the
/// bits `masks` asks for at its depth in `names`? Climbs to the task's root (see
/// `task_root_btf`; `task` is the current task as a BTF pointer). Per component: plain
/// loads, a length test, a hint test on the first two bytes (one array word), and a hash
/// lookup only for names that pass both for the depth's mask. Stops where no mask has a
/// name left to find, so a read-only open without `*_ANY_DEPTH` interest looks at two
/// names at most; `top` bits and `memfd` need the last component before the root, so with
/// either the walk goes up to it.
#[inline(always)]
pub fn names_interest(
    o: &KernelOffsets,
    task: Kptr,
    mnt: Kptr,
    dentry: Kptr,
    names: &HashMap<NameKey, u32>,
    summary: &NameSummary,
    masks: &WalkMasks,
) -> Result<bool, i32> {
    let top = masks.depth.top;
    // The lengths of the names each depth can find; 0 where there is none. `top` bits are
    // in every mask, so with top names the walk goes to the root.
    let above_lengths = summary.lengths(masks.depth.above);
    let lengths = summary.lengths(masks.depth.leaf);
    if lengths | summary.lengths(masks.depth.parent) | above_lengths | masks.memfd == 0 {
        return Ok(false);
    }
    let mut up = Ascent::<Btf>::new(o, mnt, dentry, Some(task_root_btf(o, task)))?;
    // What a step hands the next (`Carried`): the mask for the current component and the
    // next one, shifted along (rather than counting depth), the current mask's lengths,
    // and the `top` bits of the last component seen (from its lookup). Through `forget`:
    // every step starts from the same verifier state. Kept as they were, the values
    // differed by the path that led there (constant masks until the second component,
    // ranges the step's tests narrowed), the verifier, which prunes only states whose
    // values it can prove alike, walked every later step once per difference: ~80% of
    // what it walked for the library hook.
    let mut carried = Carried::forget(masks.depth.leaf, masks.depth.parent, lengths, 0);
    // The last component's dentry (null before the first), the top one when the root is
    // reached: a pointer, which carries no range (its name's length did).
    let mut last: Kptr = core::ptr::null();
    for _ in 0..walk_depth() {
        let (mask, next, lengths, last_top) = carried.get();
        let next_lengths = summary.lengths(next);
        if lengths | next_lengths | above_lengths | masks.memfd == 0 {
            return Ok(false);
        }
        let (dentry, name, len) = match up.step(o)? {
            Up::Name { dentry, name, len } => (dentry, name, len),
            Up::Crossed => continue,
            Up::Root => {
                if last_top != 0 {
                    return Ok(true);
                }
                if masks.memfd != 0 {
                    if last.is_null() {
                        return Ok(false);
                    }
                    return is_memfd_name(
                        btf_load(last, fresh(&o.dentry_name_ptr)),
                        btf_load(last, fresh(&o.dentry_name_len)),
                    );
                }
                return Ok(false);
            }
        };
        last = dentry;
        let mut found_top = 0;
        let bucket = if len < 31 { len } else { 31 };
        // A name stored in the dentry can be tested on its first two bytes with a plain
        // load; a long one (stored outside) passes, its read decides.
        let inline = fresh(&o.dentry_inline_name);
        if lengths & (1 << bucket) != 0
            && (name != dentry.wrapping_add(inline as usize)
                || summary.hinted(len, btf_load(dentry, inline), mask))
        {
            let mut slot = MaybeUninit::uninit();
            let key = AlignedKey::fill(&mut slot, name, len)?;
            // SAFETY: the value is a plain u32 read at once.
            if let Some(bits) = unsafe { names.get(key.as_name_key()) } {
                let bits = *bits;
                // `top` bits are in the mask but count only at the root (below).
                if bits & mask & !top != 0 {
                    return Ok(true);
                }
                found_top = bits & top;
            }
        }
        carried = Carried::forget(next, masks.depth.above, next_lengths, found_top);
    }
    // Deeper than the walk while names were still to be found: a watched name may sit
    // above what was read (a library fifty directories below /tmp). Sent, not guessed:
    // the agent decides on the path it rebuilds, which keeps the top components.
    Ok(true)
}

/// `names_interest`'s state from one step to the next, as one word through `forget`:
/// masks and `top` bits are below `MASK_SLOTS` (7 bits), lengths a 32-bit word.
struct Carried(u64);

impl Carried {
    #[inline(always)]
    fn forget(mask: u32, next: u32, lengths: u32, last_top: u32) -> Self {
        let slots = u64::from(MASK_SLOTS - 1);
        Carried(forget(
            u64::from(mask) & slots
                | (u64::from(next) & slots) << 8
                | (u64::from(last_top) & slots) << 16
                | u64::from(lengths) << 32,
        ))
    }

    /// (mask, next, lengths, last_top).
    #[inline(always)]
    fn get(&self) -> (u32, u32, u32, u32) {
        let w = self.0;
        (
            w as u32 & 0xff,
            (w >> 8) as u32 & 0xff,
            (w >> 32) as u32,
            (w >> 16) as u32 & 0xff,
        )
    }
}

/// A cheaper, coarser `names_interest` for the issue-19 hooks: could any component of the
/// path at (`mnt`, `dentry`) (BTF pointers) be a watched name? Only the length and the
/// two-byte hint are tested, never the name itself, so a component whose hint collides
/// says yes (~4% of unrelated names): the record is then sent and userspace decides. No key
/// read, no map lookup: what the verifier walks per component stays small enough for a
/// program that also checks two names and rebuilds two paths. `leaf` is the mask of the
/// first component, `above` of every other. A path deeper than `TOP_DEPTH` (24) says yes:
/// working directories are rarely that deep, and the verifier walks every step.
#[inline(never)]
pub fn names_hinted(
    o: &KernelOffsets,
    task: Kptr,
    base: &(Kptr, Kptr),
    summary: &NameSummary,
    masks: u64,
) -> bool {
    let (leaf, above) = (masks as u32, (masks >> 32) as u32);
    let above_lengths = summary.lengths(above);
    let mut lengths = summary.lengths(leaf);
    let mut mask = leaf;
    if lengths | above_lengths == 0 {
        return false;
    }
    let Ok(mut up) = Ascent::<Btf>::new(o, base.0, base.1, Some(task_root_btf(o, task))) else {
        return true;
    };
    for _ in 0..top_depth() {
        let (dentry, name, len) = match up.step(o) {
            Ok(Up::Name { dentry, name, len }) => (dentry, name, len),
            Ok(Up::Crossed) => continue,
            Ok(Up::Root) => return false,
            Err(_) => return true,
        };
        let bucket = if len < 31 { len } else { 31 };
        let inline = fresh(&o.dentry_inline_name);
        if lengths & (1 << bucket) != 0
            && (name != dentry.wrapping_add(inline as usize)
                || summary.hinted(len, btf_load(dentry, inline), mask))
        {
            return true;
        }
        lengths = above_lengths;
        mask = above;
    }
    true
}
