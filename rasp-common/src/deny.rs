//! What the kernel enforces by itself: the deny maps userspace fills from enforce-mode
//! rules whose every condition the kernel can decide exactly (unlike the interest maps,
//! which are supersets and can only say "send it"), and the verdict a record carries when a
//! program acted on it.
//!
//! A rule becomes kernel entries keyed by what it names: a file by (device, inode), a
//! directory whose whole subtree is covered by (device, inode) with `DENY_SUBTREE`, a file
//! name in any directory (`*/nc`) by its name, a destination by address prefix (LPM trie) or
//! port. Each entry carries the acts it denies, the rule's slot (so the record names the
//! rule), and the rule's remaining kernel-decidable conditions (a uid).

use crate::interest::NameKey;

// ---- acts --------------------------------------------------------------------------------

/// Executing the file (exec of it, or of anything below a denied directory).
pub const ACT_EXEC: u32 = 1 << 0;
/// Opening it with read access.
pub const ACT_OPEN_READ: u32 = 1 << 1;
/// Opening it with write access (or truncating it).
pub const ACT_OPEN_WRITE: u32 = 1 << 2;
/// Creating it (an open that created the file).
pub const ACT_OPEN_CREATE: u32 = 1 << 3;
/// Mapping it executable (a library load, or `mprotect(PROT_EXEC)` of a file mapping).
pub const ACT_MMAP_EXEC: u32 = 1 << 4;
/// Connecting (or sending a datagram) to the address/port.
pub const ACT_CONNECT: u32 = 1 << 5;

// ---- `DenyEntry::flags` ------------------------------------------------------------------

/// The key is a directory: the entry covers everything below it.
pub const DENY_SUBTREE: u32 = 1 << 0;
/// `uid` must equal the acting task's uid for the entry to apply.
pub const DENY_UID: u32 = 1 << 1;

/// Key of `DENY_INODES`: the kernel's `s_dev` (major << 20 | minor) and inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

/// The kernel's encoding of a device number (`new_encode_dev` is for userspace; inside the
/// kernel `s_dev` is `MKDEV(major, minor)` = major << 20 | minor).
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xfffff)
}

/// Value of every deny map: which acts the entry denies, for which rule, on what terms.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DenyEntry {
    /// `ACT_*` bits.
    pub acts: u32,
    /// `DENY_*` bits.
    pub flags: u32,
    /// The rule's slot: `verdict_rule` in the record header (see `rule_slot`).
    pub rule: u32,
    /// With `DENY_UID`: the only uid the entry applies to.
    pub uid: u32,
    /// Destination port ranges for address entries (inclusive, host order); a range of
    /// `0..=65535`, or `nports == 0`, means any port.
    pub ports: [PortSpan; DENY_PORT_SPANS],
    pub nports: u32,
    pub _pad: u32,
}

pub const DENY_PORT_SPANS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortSpan {
    pub lo: u16,
    pub hi: u16,
}

impl DenyEntry {
    /// Does the entry cover `port`?
    #[inline(always)]
    pub fn port_covered(&self, port: u16) -> bool {
        if self.nports == 0 {
            return true;
        }
        let mut i = 0;
        while i < DENY_PORT_SPANS {
            if (i as u32) < self.nports && self.ports[i].lo <= port && port <= self.ports[i].hi {
                return true;
            }
            i += 1;
        }
        false
    }

    /// Does the entry apply to a task with this uid?
    #[inline(always)]
    pub fn uid_covered(&self, uid: u32) -> bool {
        self.flags & DENY_UID == 0 || self.uid == uid
    }
}

/// Key of `DENY_NAMES`: a file name in any directory (`*/nc`, `**/id_rsa`).
pub type DenyNameKey = NameKey;

/// A rule's slot as the kernel reports it: the low 16 bits of the policy set's generation
/// and the rule's index in that set's table of kernel-enforced rules. A record from just
/// before a reload still names the rule of the set that was active when it was decided.
pub const fn rule_slot(generation: u32, index: u32) -> u32 {
    ((generation & 0xffff) << 16) | (index & 0xffff)
}

pub const fn slot_generation(slot: u32) -> u32 {
    slot >> 16
}

pub const fn slot_index(slot: u32) -> u32 {
    slot & 0xffff
}

// ---- `DENY_FILTER[0]`: which acts have entries at all ------------------------------------
// One array lookup tells a hook whether to look further: with no enforce rule for its act,
// a hook pays nothing more.

/// `ACT_*` bits with at least one `DENY_INODES` entry (file or subtree).
pub const FILTER_INODE_ACTS: u32 = 0;
/// `ACT_*` bits with at least one `DENY_SUBTREE` entry: only then are parents walked.
pub const FILTER_SUBTREE_ACTS: u32 = 1;
/// `ACT_*` bits with at least one `DENY_NAMES` entry.
pub const FILTER_NAME_ACTS: u32 = 2;
/// Non-zero when `DENY_V4`/`DENY_V6`/`DENY_PORTS` have entries.
pub const FILTER_NET: u32 = 3;
/// Non-zero when some cgroup is quarantined (`QUARANTINE`).
pub const FILTER_QUARANTINE: u32 = 4;
/// Non-zero when the BPF-LSM hooks enforce: the tracepoint fallbacks (kill at exec, at
/// syscall) stand down, or a refused mmap would also kill its caller.
pub const FILTER_LSM_ENFORCES: u32 = 5;
pub const DENY_FILTER_WORDS: u32 = 8;

/// Directories walked above a file looking for a denied subtree.
pub const DENY_SUBTREE_DEPTH: usize = 24;

/// Capacities of the deny maps (entries userspace may install; the maps hold twice as many
/// so a new set can be installed before the old one is removed).
pub const MAX_DENY_INODES: u32 = 1024;
pub const MAX_DENY_NAMES: u32 = 512;
pub const MAX_DENY_CIDRS: u32 = 512;
pub const MAX_DENY_PORTS: u32 = 256;
/// Cgroups under quarantine at once.
pub const MAX_QUARANTINED: u32 = 256;
/// cgroup levels checked above a task's own cgroup for quarantine.
pub const QUARANTINE_DEPTH: u32 = 16;

// ---- the verdict a record carries (`RecordHeader::verdict`) ------------------------------

/// Nothing was done to the act.
pub const VERDICT_NONE: u32 = 0;
/// A BPF-LSM hook returned -EPERM: the act did not happen, the process lives.
pub const VERDICT_LSM_DENIED: u32 = 1;
/// A cgroup socket hook refused the connect/send (EPERM): nothing left the host.
pub const VERDICT_CGROUP_DENIED: u32 = 2;
/// The exec was committed but the process was killed (SIGKILL from the exec tracepoint)
/// before the new program ran one instruction: no BPF-LSM on this kernel.
pub const VERDICT_KILLED_AT_EXEC: u32 = 3;
/// The system call completed, and the process was killed on its way back to user space
/// (SIGKILL from the syscall tracepoint): it never used the result, but the act happened.
pub const VERDICT_KILLED_AT_SYSCALL: u32 = 4;
/// Refused because the process's cgroup is quarantined (network deny).
pub const VERDICT_QUARANTINED: u32 = 5;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers only, explicit padding.
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::DenyEntry {}
    unsafe impl aya::Pod for super::PortSpan {}
}

const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);
const _: () = assert!(core::mem::size_of::<DenyEntry>() == 40);
