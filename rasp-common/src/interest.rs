//! The in-kernel pre-filters' vocabulary: what userspace writes into the interest maps and
//! what the programs test before reserving a record. The kernel answers "could any rule care
//! about this?" cheaply and as a superset; userspace rules make the exact decision.
//!
//! Files and libraries are filtered by path component *names* (a hash lookup per component,
//! no string prefix matching in the kernel): a rule on `/etc/shadow` installs `shadow` with
//! `READ_AT_LEAF`, a rule on writes under `/usr` installs `usr` with `WRITE_ANY_DEPTH`.
//! Connects are filtered by destination port and by address prefix (LPM tries).

use crate::limits::NAME_KEY_LEN;

/// Key of `FILE_NAMES` / `LIB_NAMES`: one path component, NUL-terminated, zero padded.
pub type NameKey = [u8; NAME_KEY_LEN];

/// The map key for a path component: its first `NAME_KEY_LEN - 1` bytes, zero padded. The
/// kernel builds the same key from a dentry name with a bounded string read, so both sides
/// truncate identically.
pub const fn name_key(name: &[u8]) -> NameKey {
    let mut key = [0u8; NAME_KEY_LEN];
    let mut i = 0;
    while i < name.len() && i < NAME_KEY_LEN - 1 {
        key[i] = name[i];
        i += 1;
    }
    key
}

// ---- `FILE_NAMES` values: which opens a component name makes interesting -------------------
// "Read" means the file was opened with read access (FMODE_READ), "write" with write access
// (FMODE_WRITE), "create" that this open created it (FMODE_CREATED). An open with several
// accesses is interesting if any of them is.

/// A read whose final component (the file itself) has this name: `shadow`, `credentials`.
pub const READ_AT_LEAF: u32 = 1 << 0;
/// A read whose parent directory has this name: `.ssh` (any key in it).
pub const READ_AT_PARENT: u32 = 1 << 1;
/// A read with this name anywhere in the path (up to `PATH_DEPTH` components). Costs a walk
/// of the whole path on every read-only open, so it is only consulted while
/// `FILE_READ_FULL_WALK` is set (`InterestMaps::apply` sets it when some name needs it).
pub const READ_ANY_DEPTH: u32 = 1 << 2;
/// A write with this name anywhere in the path: `etc`, `bin`, `usr`, `boot`.
pub const WRITE_ANY_DEPTH: u32 = 1 << 3;
/// A creation with this name anywhere in the path (also for O_CREAT|O_RDONLY).
pub const CREATE_ANY_DEPTH: u32 = 1 << 4;
/// A write whose first component below the task's root has this name: `/lib/**` installs
/// `lib` with this bit, so `/lib/x` is sent and `/var/lib/x` is not (with
/// `WRITE_ANY_DEPTH`, every write below /var/lib was).
pub const WRITE_AT_TOP: u32 = 1 << 5;
/// A creation whose first component below the task's root has this name.
pub const CREATE_AT_TOP: u32 = 1 << 6;
/// Every bit meaningful in `FILE_NAMES`.
pub const FILE_NAME_BITS: u32 = READ_AT_LEAF
    | READ_AT_PARENT
    | READ_ANY_DEPTH
    | WRITE_ANY_DEPTH
    | CREATE_ANY_DEPTH
    | WRITE_AT_TOP
    | CREATE_AT_TOP;

// ---- `FILE_FILTER[0]`: global switches for file_open ---------------------------------------

/// Any file rule at all. Clear: the program returns after one array lookup (the common,
/// cheapest path).
pub const FILE_ENABLED: u32 = 1 << 0;
/// Every successful open with read access is sent (no name check).
pub const FILE_ALL_READ: u32 = 1 << 1;
/// Every successful open with write access, or that created the file, is sent.
pub const FILE_ALL_WRITE: u32 = 1 << 2;
/// Read-only opens walk the whole path for `READ_ANY_DEPTH` names, not just leaf and parent.
pub const FILE_READ_FULL_WALK: u32 = 1 << 3;

// ---- `LIB_NAMES` values: which executable mappings a component name makes interesting -----

/// The library file itself has this name: `libpq.so.5`.
pub const LIB_AT_LEAF: u32 = 1 << 0;
/// Its directory has this name.
pub const LIB_AT_PARENT: u32 = 1 << 1;
/// This name anywhere in its path: `tmp`, `shm` (libraries loaded from writable places).
/// Consulted while `LIB_FULL_WALK` is set.
pub const LIB_ANY_DEPTH: u32 = 1 << 2;
pub const LIB_NAME_BITS: u32 = LIB_AT_LEAF | LIB_AT_PARENT | LIB_ANY_DEPTH;

// ---- `LIB_FILTER[0]` -------------------------------------------------------------------------

pub const LIB_ENABLED: u32 = 1 << 0;
/// Every executable file mapping is sent.
pub const LIB_ALL: u32 = 1 << 1;
/// Walk the whole path for `LIB_ANY_DEPTH` names.
pub const LIB_FULL_WALK: u32 = 1 << 2;
/// Every executable mapping whose first component below the task's root starts with
/// `MEMFD_PREFIX`: files from `memfd_create` (the kernel names their dentry `memfd:NAME`
/// and the path rebuilt from it is `/memfd:NAME`), and anything under a root directory so
/// named. What a `/memfd:**` pattern needs, without `LIB_ALL` (every mapping of every
/// dynamic exec).
pub const LIB_MEMFD: u32 = 1 << 3;

/// The name prefix the kernel gives `memfd_create` files (`mm/memfd.c`: "memfd:" + name;
/// hugetlbfs-backed memfds too).
pub const MEMFD_PREFIX: &[u8; 6] = b"memfd:";

// ---- `CONNECT_FILTER[0]` ---------------------------------------------------------------------

pub const CONNECT_ENABLED: u32 = 1 << 0;
/// Every AF_INET/AF_INET6 connect attempt is sent.
pub const CONNECT_ALL: u32 = 1 << 1;

// ---- Which bits each depth of a walk tests ------------------------------------------------

/// The interest bits a walk tests at the leaf, at the parent, and at every component above.
/// Each includes `top`, the bits that count only at the first component below the task's
/// root: any component may turn out to be that one when the walk reaches the root, so each
/// is looked up for them too (one length word, one hint test per component). The same
/// function runs in the kernel (from the open's mode) and in the agent (for every mode, to
/// know which masks the kernel can ask with: `FILTER_LENGTHS` and the hints are kept per
/// mask).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthMasks {
    pub leaf: u32,
    pub parent: u32,
    pub above: u32,
    pub top: u32,
}

/// `value` if `bit` is 1, 0 if it is 0, without a branch.
#[inline(always)]
const fn all_if(bit: u32, value: u32) -> u32 {
    0u32.wrapping_sub(bit) & value
}

/// The masks of a file open. `read`, `write`, `created` (the open's FMODE bits) and
/// `full_walk` (`FILE_READ_FULL_WALK` in the switches) are 0 or 1. Without branches: each
/// branch would hand the verifier another set of constant masks to walk the whole path
/// with (8 combinations of read, write and created), which overflowed its 1M-instruction
/// budget.
#[inline(always)]
pub const fn file_open_masks(read: u32, write: u32, created: u32, full_walk: u32) -> DepthMasks {
    let top = all_if(write, WRITE_AT_TOP) | all_if(created, CREATE_AT_TOP);
    let change = all_if(write, WRITE_ANY_DEPTH) | all_if(created, CREATE_ANY_DEPTH) | top;
    DepthMasks {
        leaf: all_if(read, READ_AT_LEAF | READ_ANY_DEPTH) | change,
        parent: all_if(read, READ_AT_PARENT | READ_ANY_DEPTH) | change,
        above: all_if(read & full_walk, READ_ANY_DEPTH) | change,
        top,
    }
}

/// The masks of an executable mapping; `full_walk` (`LIB_FULL_WALK`) is 0 or 1.
#[inline(always)]
pub const fn library_masks(full_walk: u32) -> DepthMasks {
    DepthMasks {
        leaf: LIB_AT_LEAF | LIB_ANY_DEPTH,
        parent: LIB_AT_PARENT | LIB_ANY_DEPTH,
        above: all_if(full_walk, LIB_ANY_DEPTH),
        top: 0,
    }
}

/// Every mask a walk can test with for the file hook (`file_open_masks` over every mode
/// and both walk settings) and for the library hook: what the agent builds the per-mask
/// summaries for.
pub fn file_open_mask_set() -> impl Iterator<Item = u32> {
    (0..16u32).flat_map(|i| {
        let m = file_open_masks(i & 1, (i >> 1) & 1, (i >> 2) & 1, (i >> 3) & 1);
        [m.leaf, m.parent, m.above]
    })
}

pub fn library_mask_set() -> impl Iterator<Item = u32> {
    (0..2u32).flat_map(|w| {
        let m = library_masks(w);
        [m.leaf, m.parent, m.above]
    })
}

// ---- The `FILE_FILTER` / `LIB_FILTER` arrays (`CONNECT_FILTER` has only the flags) ------

/// The `*_ENABLED | *_ALL...` switches.
pub const FILTER_FLAGS: u32 = 0;
/// First of `MASK_SLOTS` words, one per mask a walk can test with (masks are below
/// `MASK_SLOTS`: 7 name bits): word `FILTER_LENGTHS + mask` has bit `min(len, 31)` set for
/// every installed name of `len` bytes whose bits meet `mask`. A component of another
/// length is never looked up, and a depth whose word is 0 is not walked: for a read-only
/// open, `etc` (installed for writes below /etc) is not a length or hint the read masks
/// know, so it costs no lookup; with only write rules a read-only open reads no dentry.
pub const FILTER_LENGTHS: u32 = 1;
pub const MASK_SLOTS: u32 = 128;
/// First of `NAME_HINT_WORDS` words, an 8192-bit set: for every installed name and every
/// mask its bits meet, the bit of `name_hint` (its length, first two bytes and the mask,
/// hashed). Tested, for names stored inline in the dentry (shorter than ~40 bytes), with a
/// plain load before a name's bytes are read for the lookup: a name installed for writes
/// only does not pass for a read, and with the shipped policies' ~300 (name, mask) pairs
/// ~4% of unrelated components pass.
pub const FILTER_NAME_HINTS: u32 = FILTER_LENGTHS + MASK_SLOTS;
pub const NAME_HINT_WORDS: u32 = 256;
/// Words in `FILE_FILTER` and `LIB_FILTER`.
pub const FILTER_WORDS: u32 = FILTER_NAME_HINTS + NAME_HINT_WORDS;

/// The `FILTER_NAME_HINTS` (word index, bit) of a name of `len` bytes starting with `b0`,
/// `b1` (`b1` is 0 for a one-byte name: names are NUL-terminated), looked up for `mask`.
/// Lengths are capped at 31 as keys are. The same function runs in the kernel and in the
/// agent.
#[inline(always)]
pub const fn name_hint(len: u32, b0: u8, b1: u8, mask: u32) -> (u32, u32) {
    let len = if len < 31 { len } else { 31 };
    let h = len.wrapping_mul(0x9e37_79b1)
        ^ (b0 as u32).wrapping_mul(0x85eb_ca6b)
        ^ (b1 as u32).wrapping_mul(0xc2b2_ae35)
        ^ mask.wrapping_mul(0x27d4_eb2f);
    let index = h >> 19; // the top 13 bits: 0..8192
    (FILTER_NAME_HINTS + (index >> 5), 1 << (index & 31))
}

/// The `FILTER_LENGTHS` bit of a name.
pub const fn name_length_bit(len: usize) -> u32 {
    1 << if len < 31 { len } else { 31 }
}

/// Value stored in `CONNECT_PORTS` and the address tries (presence is what counts).
pub const PRESENT: u8 = 1;

// ---- Issue-19 hooks: `HOOK_FILTER` words -------------------------------------------------
// One word per hook family (or per attribute filter of one); bit 0 of a family's word
// (`HOOK_ENABLED`) is its switch: clear, its program returns after one array lookup.

pub const HOOK_ENABLED: u32 = 1 << 0;
/// File changes: `HOOK_ENABLED` and `1 << op` for each `record::CHANGE_OP_*` some rule
/// watches.
pub const HOOK_CHANGE: u32 = 0;
/// `1 << op` for the operations sent whatever their path (a rule with no `path`).
pub const HOOK_CHANGE_ALL: u32 = 1;
/// Mode bits that make a chmod interesting by themselves (`mode_bits` without `path`).
pub const HOOK_CHMOD_MODES: u32 = 2;
/// `HOOK_ENABLED`: setxattr names are tested against `HINT_XATTR` (an `xattr` condition
/// without `path`).
pub const HOOK_XATTR_NAMES: u32 = 3;
/// AF_UNIX connects: `HOOK_ENABLED`, `HOOK_ALL` (every path).
pub const HOOK_UNIX: u32 = 4;
/// ptrace and process_vm: `HOOK_ENABLED` and `PTRACE_CLASS_*` bits.
pub const HOOK_PTRACE: u32 = 5;
/// setns/unshare: `HOOK_ENABLED` and `1 << NS_OP_*`.
pub const HOOK_NAMESPACE: u32 = 6;
/// `CLONE_NEW*` flags that make an unshare interesting; `u32::MAX`: every unshare.
pub const HOOK_UNSHARE_FLAGS: u32 = 7;
/// mount/fsopen: `HOOK_ENABLED` and `1 << MOUNT_OP_*`.
pub const HOOK_MOUNT: u32 = 8;
/// Kernel modules: `HOOK_ENABLED` and `1 << MODULE_OP_*`.
pub const HOOK_MODULE: u32 = 9;
/// bpf(BPF_PROG_LOAD): `HOOK_ENABLED`.
pub const HOOK_BPF: u32 = 10;
/// io_uring submissions: `HOOK_ENABLED`; the opcodes sent are the bits of the next two
/// words (`IORING_OP_*` 0..31, 32..63).
pub const HOOK_IO_URING: u32 = 11;
pub const HOOK_IO_URING_OPS_LO: u32 = 12;
pub const HOOK_IO_URING_OPS_HI: u32 = 13;
/// Packet and raw sockets: `HOOK_ENABLED` and `SOCKET_CLASS_*` bits.
pub const HOOK_SOCKET: u32 = 14;
pub const HOOK_WORDS: u32 = 16;
/// In a family word: every event of the family, no path filter.
pub const HOOK_ALL: u32 = 1 << 1;
/// In `HOOK_UNIX`: some rule is anchored on a directory (`/run/containerd/**`), so a
/// relative socket path, whose directory the program does not walk, is sent.
pub const HOOK_UNIX_DIRS: u32 = 1 << 2;

pub const PTRACE_CLASS_ATTACH: u32 = 1 << 1;
pub const PTRACE_CLASS_SEIZE: u32 = 1 << 2;
pub const PTRACE_CLASS_POKE: u32 = 1 << 3;
pub const PTRACE_CLASS_VM_READ: u32 = 1 << 4;
pub const PTRACE_CLASS_VM_WRITE: u32 = 1 << 5;

/// `AF_PACKET`, or `SOCK_PACKET`: link-layer frames.
pub const SOCKET_CLASS_PACKET: u32 = 1 << 1;
/// `SOCK_RAW` on `AF_INET`/`AF_INET6`: IP packets with their headers.
pub const SOCKET_CLASS_RAW: u32 = 1 << 2;

// ---- Path names passed to syscalls: hashed components ------------------------------------
// A name a syscall is given (`/var/log/auth.log`, `.bash_history`) is a user string, not
// a dentry chain. The kernel reads it once (it goes into the record anyway) and hashes each
// component (FNV-1a, bytes between `/`s) in one branch-free pass, testing the hash in a
// bit set of watched names: the last component against the `*_LEAF` set, every component
// against the `*_ANY` set. No false negatives; ~1% false positives at a few hundred names.
// Names relative to a directory also walk that directory's dentries (`PATH_NAMES`, the
// same machinery as file opens).

/// Words of one hint set in `PATH_HINTS` (8192 bits).
pub const PATH_HINT_WORDS: usize = 128;
/// The hint sets (entries of `PATH_HINTS`).
pub const HINT_CHANGE_LEAF: u32 = 0;
pub const HINT_CHANGE_ANY: u32 = 1;
pub const HINT_UNIX_LEAF: u32 = 2;
pub const HINT_UNIX_ANY: u32 = 3;
/// Whole extended-attribute names (`security.capability`), hashed as one component.
pub const HINT_XATTR: u32 = 4;
pub const HINT_SETS: u32 = 5;

pub const FNV_BASIS: u32 = 0x811c_9dc5;
pub const FNV_PRIME: u32 = 0x0100_0193;

/// FNV-1a of a component, as the kernel computes it byte by byte.
pub const fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h = FNV_BASIS;
    let mut i = 0;
    while i < bytes.len() {
        h = (h ^ bytes[i] as u32).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// (word, bit) of a component hash in a hint set: its top 13 bits.
#[inline(always)]
pub const fn path_hint(hash: u32) -> (u32, u32) {
    let index = hash >> 19;
    (index >> 6, index & 63)
}

/// A hint set: one `PATH_HINTS` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathHints {
    pub words: [u64; PATH_HINT_WORDS],
}

// `PATH_NAMES` bits: directory components (dentries) of a location, looked up like file
// opens' `FILE_NAMES` (summaries in `PATH_FILTER`, same layout as `FILE_FILTER`).

/// The file itself has this name (an fd-based change: fchmod, ftruncate ...).
pub const PATH_CHANGE_LEAF: u32 = 1 << 0;
/// A directory (or the file) anywhere in a changed file's path.
pub const PATH_CHANGE_ANY: u32 = 1 << 1;
pub const PATH_NAME_BITS: u32 = PATH_CHANGE_LEAF | PATH_CHANGE_ANY;

/// The masks a walk tests: the directory a relative name is in (every component is above
/// the named file), and a descriptor's own file.
pub const fn change_dir_masks() -> DepthMasks {
    DepthMasks {
        leaf: PATH_CHANGE_ANY,
        parent: PATH_CHANGE_ANY,
        above: PATH_CHANGE_ANY,
        top: 0,
    }
}

pub const fn change_file_masks() -> DepthMasks {
    DepthMasks {
        leaf: PATH_CHANGE_LEAF | PATH_CHANGE_ANY,
        parent: PATH_CHANGE_ANY,
        above: PATH_CHANGE_ANY,
        top: 0,
    }
}

pub fn path_mask_set() -> impl Iterator<Item = u32> {
    [change_dir_masks(), change_file_masks()]
        .into_iter()
        .flat_map(|m| [m.leaf, m.parent, m.above])
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), an array of u64, every bit pattern valid.
    unsafe impl aya::Pod for super::PathHints {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_keys_truncate_to_31_bytes_and_pad() {
        let k = name_key(b"shadow");
        assert_eq!(&k[..7], b"shadow\0");
        assert!(k[6..].iter().all(|&b| b == 0));
        let long = [b'x'; 40];
        let k = name_key(&long);
        assert!(k[..31].iter().all(|&b| b == b'x'));
        assert_eq!(
            k[31], 0,
            "always NUL-terminated, like the kernel's bounded read"
        );
        assert_eq!(
            name_key(&long[..31]),
            k,
            "names sharing 31 bytes share a key"
        );
    }

    #[test]
    fn name_hints_stay_in_their_words_and_spread() {
        let mut seen = [0u32; NAME_HINT_WORDS as usize];
        for name in [
            "tmp", "etc", "usr", "bin", "lib", "ssh", ".ssh", "shadow", "x",
        ] {
            let b = name.as_bytes();
            let (word, bit) = name_hint(b.len() as u32, b[0], *b.get(1).unwrap_or(&0), 5);
            assert!((FILTER_NAME_HINTS..FILTER_WORDS).contains(&word));
            assert_eq!(bit.count_ones(), 1);
            seen[(word - FILTER_NAME_HINTS) as usize] |= bit;
        }
        let distinct: u32 = seen.iter().map(|w| w.count_ones()).sum();
        assert!(distinct >= 8, "{distinct} distinct bits for 9 names");
        assert_ne!(
            name_hint(3, b'e', b't', 5),
            name_hint(3, b'e', b't', 6),
            "the mask is part of the hint"
        );
        assert_eq!(
            name_hint(40, b'a', b'b', 5),
            name_hint(31, b'a', b'b', 5),
            "lengths cap at 31"
        );
    }

    #[test]
    fn fnv_hints_stay_in_their_set() {
        assert_eq!(fnv1a(b""), FNV_BASIS);
        // The published FNV-1a 32-bit vector for "a".
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        for name in [".bash_history", "log", "docker.sock", "security.capability"] {
            let (word, bit) = path_hint(fnv1a(name.as_bytes()));
            assert!((word as usize) < PATH_HINT_WORDS && bit < 64, "{name}");
        }
    }

    #[test]
    fn masks_stay_below_the_slots_and_read_masks_ignore_writes() {
        for m in file_open_mask_set()
            .chain(library_mask_set())
            .chain(path_mask_set())
        {
            assert!(m < MASK_SLOTS, "{m:#x}");
        }
        let read_only = file_open_masks(1, 0, 0, 1);
        assert_eq!(read_only.leaf, READ_AT_LEAF | READ_ANY_DEPTH);
        assert_eq!(read_only.parent, READ_AT_PARENT | READ_ANY_DEPTH);
        assert_eq!(read_only.above, READ_ANY_DEPTH);
        assert_eq!(read_only.top, 0);
        assert_eq!(file_open_masks(1, 0, 0, 0).above, 0);
        let write = file_open_masks(0, 1, 0, 0);
        assert_eq!(write.above, WRITE_ANY_DEPTH | WRITE_AT_TOP);
        assert_eq!(write.top, WRITE_AT_TOP);
    }
}
