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

// ---- The `FILE_FILTER` / `LIB_FILTER` arrays (`CONNECT_FILTER` has only the flags) ------

/// The `*_ENABLED | *_ALL...` switches.
pub const FILTER_FLAGS: u32 = 0;
/// Bit `min(len, 31)` set for every installed name of `len` bytes: a path component of
/// another length is never looked up (most are not, so most cost no hash lookup).
pub const FILTER_NAME_LENGTHS: u32 = 1;
/// The union of the installed names' interest bits: depths no name asks for are not walked
/// (with only write rules, a read-only open reads no dentry at all).
pub const FILTER_NAME_BITS: u32 = 2;
/// First of `NAME_HINT_WORDS` words, a 1024-bit set: for every installed name, the bit of
/// `name_hint` (its length and first two bytes, hashed). Tested, for names stored inline
/// in the dentry (shorter than ~40 bytes), with a plain load before a name's bytes are read
/// for the lookup: with the shipped policies' ~40 names, ~4% of unrelated components pass.
pub const FILTER_NAME_HINTS: u32 = 3;
pub const NAME_HINT_WORDS: u32 = 32;
/// Words in `FILE_FILTER` and `LIB_FILTER`.
pub const FILTER_WORDS: u32 = FILTER_NAME_HINTS + NAME_HINT_WORDS;

/// The `FILTER_NAME_HINTS` (word index, bit) of a name of `len` bytes starting with `b0`,
/// `b1` (`b1` is 0 for a one-byte name: names are NUL-terminated). Lengths are capped at 31
/// as keys are. The same function runs in the kernel and in the agent.
pub const fn name_hint(len: u32, b0: u8, b1: u8) -> (u32, u32) {
    let len = if len < 31 { len } else { 31 };
    let h = len.wrapping_mul(0x9e37_79b1)
        ^ (b0 as u32).wrapping_mul(0x85eb_ca6b)
        ^ (b1 as u32).wrapping_mul(0xc2b2_ae35);
    let index = h >> 22; // the top 10 bits: 0..1024
    (FILTER_NAME_HINTS + (index >> 5), 1 << (index & 31))
}

/// The `FILTER_NAME_LENGTHS` bit of a name.
pub const fn name_length_bit(len: usize) -> u32 {
    1 << if len < 31 { len } else { 31 }
}

/// Value stored in `CONNECT_PORTS` and the address tries (presence is what counts).
pub const PRESENT: u8 = 1;

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
            let (word, bit) = name_hint(b.len() as u32, b[0], *b.get(1).unwrap_or(&0));
            assert!((FILTER_NAME_HINTS..FILTER_WORDS).contains(&word));
            assert_eq!(bit.count_ones(), 1);
            seen[(word - FILTER_NAME_HINTS) as usize] |= bit;
        }
        let distinct: u32 = seen.iter().map(|w| w.count_ones()).sum();
        assert!(distinct >= 8, "{distinct} distinct bits for 9 names");
        assert_eq!(
            name_hint(40, b'a', b'b'),
            name_hint(31, b'a', b'b'),
            "lengths cap at 31"
        );
    }
}
