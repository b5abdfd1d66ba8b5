//! Enforcement decided in the kernel: the deny maps userspace fills from enforce-mode rules
//! the kernel can decide exactly (`rasp_common::deny`), and the checks every enforcing hook
//! shares. A hook with no entry for its act pays one array lookup (`DENY_FILTER`).
//!
//! Files are denied by (device, inode) of the file or of a directory above it (a subtree),
//! or by name in any directory; destinations by address prefix or port; whole cgroups by
//! quarantine (network only).

use aya_ebpf::{
    helpers::{bpf_get_current_uid_gid, generated::bpf_get_current_ancestor_cgroup_id},
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie},
};
use rasp_common::{deny::*, interest::NameKey, KernelOffsets};

use crate::{
    kernel::{read_ptr, read_u32, read_u64, Kptr},
    maps::filter_word,
    vfs::with_name_key,
};

#[map]
pub static DENY_INODES: HashMap<InodeKey, DenyEntry> =
    HashMap::with_max_entries(2 * MAX_DENY_INODES, 0);

#[map]
pub static DENY_NAMES: HashMap<NameKey, DenyEntry> =
    HashMap::with_max_entries(2 * MAX_DENY_NAMES, 0);

/// `deny::FILTER_*` words: which acts have entries at all.
#[map]
pub static DENY_FILTER: Array<u32> = Array::with_max_entries(DENY_FILTER_WORDS, 0);

#[map]
pub static DENY_V4: LpmTrie<[u8; 4], DenyEntry> = LpmTrie::with_max_entries(2 * MAX_DENY_CIDRS, 0);

#[map]
pub static DENY_V6: LpmTrie<[u8; 16], DenyEntry> = LpmTrie::with_max_entries(2 * MAX_DENY_CIDRS, 0);

/// Destination port (host order) → entry, for rules on ports with no address.
#[map]
pub static DENY_PORTS: HashMap<u16, DenyEntry> = HashMap::with_max_entries(2 * MAX_DENY_PORTS, 0);

/// cgroup id → the slot of the rule that quarantined it: every process in the cgroup or
/// below it loses the network.
#[map]
pub static QUARANTINE: HashMap<u64, u32> = HashMap::with_max_entries(MAX_QUARANTINED, 0);

#[inline(always)]
fn current_uid() -> u32 {
    bpf_get_current_uid_gid() as u32
}

#[inline(always)]
fn applies(e: &DenyEntry, act: u32, uid: u32) -> bool {
    e.acts & act != 0 && e.uid_covered(uid)
}

/// (device, inode) of a dentry, `None` for a negative dentry or a failed read.
#[inline(always)]
fn inode_key(o: &KernelOffsets, dentry: Kptr) -> Option<InodeKey> {
    let inode = read_ptr(dentry, o.dentry_inode).ok()?;
    if inode.is_null() {
        return None;
    }
    let ino = read_u64(inode, o.inode_ino).ok()?;
    let sb = read_ptr(inode, o.inode_sb).ok()?;
    let dev = read_u32(sb, o.sb_dev).ok()?;
    Some(InodeKey { ino, dev, _pad: 0 })
}

/// The rule slot denying `act` on the file whose `struct path` is at `path`, for the
/// current task; `None`: allowed (or not decidable: a failed read never denies).
/// Out of line: shared by every file hook, with a loop of its own.
#[inline(never)]
pub fn path_denied(o: &KernelOffsets, path: Kptr, act: u32) -> Option<u32> {
    let inode_acts = filter_word(&DENY_FILTER, FILTER_INODE_ACTS);
    let name_acts = filter_word(&DENY_FILTER, FILTER_NAME_ACTS);
    if (inode_acts | name_acts) & act == 0 {
        return None;
    }
    let dentry = read_ptr(path, o.path_dentry).ok()?;
    let uid = current_uid();
    if inode_acts & act != 0 {
        if let Some(key) = inode_key(o, dentry) {
            // SAFETY: the value is copied out before any other map operation.
            if let Some(e) = unsafe { DENY_INODES.get(&key) } {
                if applies(e, act, uid) {
                    return Some(e.rule);
                }
            }
        }
    }
    if name_acts & act != 0 {
        let hit = with_name_key(o, dentry, |key| {
            // SAFETY: as above.
            unsafe { DENY_NAMES.get(key) }
                .filter(|e| applies(e, act, uid))
                .map(|e| e.rule)
        });
        if let Ok(Some(rule)) = hit {
            return Some(rule);
        }
    }
    if filter_word(&DENY_FILTER, FILTER_SUBTREE_ACTS) & act == 0 {
        return None;
    }
    // Directories above the file, on its filesystem (userspace adds the roots of the mounts
    // below a denied directory as entries of their own).
    let mut d = dentry;
    for _ in 0..DENY_SUBTREE_DEPTH {
        let parent = read_ptr(d, o.dentry_parent).ok()?;
        if parent.is_null() || parent == d {
            return None;
        }
        d = parent;
        if let Some(key) = inode_key(o, d) {
            // SAFETY: as above.
            if let Some(e) = unsafe { DENY_INODES.get(&key) } {
                if e.flags & DENY_SUBTREE != 0 && applies(e, act, uid) {
                    return Some(e.rule);
                }
            }
        }
    }
    None
}

/// What a tracepoint that sees an act before (or after) the LSM hooks should do about it.
pub enum Fallback {
    /// Nothing is denied: observe as usual.
    Allow,
    /// No BPF-LSM: kill the caller now (the rule's slot).
    Kill(u32),
    /// BPF-LSM refuses it and reports it: stay silent, or the act is reported twice (and
    /// once without its verdict, as if the kernel had let it through).
    LeftToLsm,
}

#[inline(always)]
pub fn fallback_file_denied(o: &KernelOffsets, file: Kptr, act: u32) -> Fallback {
    match file_denied(o, file, act) {
        None => Fallback::Allow,
        Some(_) if filter_word(&DENY_FILTER, FILTER_LSM_ENFORCES) != 0 => Fallback::LeftToLsm,
        Some(rule) => Fallback::Kill(rule),
    }
}

/// `path_denied` for a `struct file`.
#[inline(always)]
pub fn file_denied(o: &KernelOffsets, file: Kptr, act: u32) -> Option<u32> {
    path_denied(o, file.wrapping_add(o.file_f_path as usize), act)
}

/// Is the current task's cgroup, or one of its ancestors, quarantined? The rule slot.
#[inline(always)]
pub fn quarantined() -> Option<u32> {
    if filter_word(&DENY_FILTER, FILTER_QUARANTINE) == 0 {
        return None;
    }
    for level in 0..QUARANTINE_DEPTH {
        // SAFETY: helper with a plain integer argument; 0 past the task's own depth.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: copied out at once.
        if let Some(rule) = unsafe { QUARANTINE.get(&id) } {
            return Some(*rule);
        }
    }
    None
}

/// The rule slot denying a connect/send to this IPv4 destination.
#[inline(always)]
pub fn v4_denied(addr: [u8; 4], port: u16) -> Option<u32> {
    if filter_word(&DENY_FILTER, FILTER_NET) == 0 {
        return None;
    }
    let uid = current_uid();
    if let Some(e) = DENY_V4.get(&Key::new(32, addr)) {
        if applies(e, ACT_CONNECT, uid) && e.port_covered(port) {
            return Some(e.rule);
        }
    }
    port_denied(port, uid)
}

/// The rule slot denying a connect/send to this IPv6 destination (a v4-mapped one is
/// checked as the IPv4 address it is).
#[inline(always)]
pub fn v6_denied(addr: [u8; 16], port: u16) -> Option<u32> {
    if filter_word(&DENY_FILTER, FILTER_NET) == 0 {
        return None;
    }
    let mapped = addr[..10].iter().all(|&b| b == 0) && addr[10] == 0xff && addr[11] == 0xff;
    if mapped {
        return v4_denied([addr[12], addr[13], addr[14], addr[15]], port);
    }
    let uid = current_uid();
    if let Some(e) = DENY_V6.get(&Key::new(128, addr)) {
        if applies(e, ACT_CONNECT, uid) && e.port_covered(port) {
            return Some(e.rule);
        }
    }
    port_denied(port, uid)
}

#[inline(always)]
fn port_denied(port: u16, uid: u32) -> Option<u32> {
    // SAFETY: copied out at once.
    unsafe { DENY_PORTS.get(&port) }
        .filter(|e| applies(e, ACT_CONNECT, uid))
        .map(|e| e.rule)
}
