//! What the kernel pre-filters let through: the policies' needs, compiled by the policy side
//! into an `Interest`, written here into the interest maps the programs consult before they
//! reserve a record (bits in `rasp_common::interest`). Replacing a set never opens a window
//! with less watched than both the old and the new set: new entries go in first, stale ones
//! come out next, the switches change last.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, Ipv6Addr},
};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, MapError},
    Ebpf,
};
use rasp_common::{
    interest::{
        self as bits, file_open_mask_set, fnv1a, library_mask_set, name_hint, name_key,
        name_length_bit, path_hint, NameKey, PathHints, FILTER_FLAGS, FILTER_LENGTHS,
        FILTER_NAME_HINTS, HINT_SETS, HOOK_WORDS, MASK_SLOTS, NAME_HINT_WORDS, PATH_HINT_WORDS,
        PRESENT,
    },
    limits::{MAX_CONNECT_CIDRS, MAX_CONNECT_PORTS, MAX_FILE_NAMES, MAX_LIB_NAMES, MAX_PATH_NAMES},
};

use super::LoadError;

/// Everything the kernel should send for file opens, library loads and connects. Names are
/// single path components (`"shadow"`, `".ssh"`, `"etc"`) with `rasp_common::interest` bits;
/// names longer than 31 bytes match on their first 31 (see `limits::NAME_KEY_LEN`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    /// (component, `READ_AT_LEAF | READ_AT_PARENT | READ_ANY_DEPTH | WRITE_ANY_DEPTH |
    /// CREATE_ANY_DEPTH | WRITE_AT_TOP | CREATE_AT_TOP`).
    pub file_names: Vec<(String, u32)>,
    /// `FILE_ALL_READ | FILE_ALL_WRITE` (and `FILE_ENABLED`/`FILE_READ_FULL_WALK`, which
    /// `apply` also derives: see there).
    pub file_flags: u32,
    /// (component, `LIB_AT_LEAF | LIB_AT_PARENT | LIB_ANY_DEPTH`).
    pub lib_names: Vec<(String, u32)>,
    /// `LIB_ALL | LIB_MEMFD` (`LIB_ENABLED`/`LIB_FULL_WALK` derived).
    pub lib_flags: u32,
    /// `CONNECT_ALL` (`CONNECT_ENABLED` derived).
    pub connect_flags: u32,
    /// Destination ports whose connects are sent.
    pub ports: Vec<u16>,
    /// Destination prefixes whose connects are sent (address, prefix length).
    pub v4: Vec<(Ipv4Addr, u8)>,
    pub v6: Vec<(Ipv6Addr, u8)>,
    /// The issue-19 hooks: switches, directory names, hashed names.
    pub hooks: HookInterest,
}

/// What the issue-19 hooks (file changes, AF_UNIX connects, ptrace, namespaces, mounts,
/// modules, bpf, io_uring) send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookInterest {
    /// The `HOOK_FILTER` words (`interest::HOOK_*`).
    pub words: [u32; HOOK_WORDS as usize],
    /// (directory component, `PATH_*` bits): names looked up on dentry walks.
    pub path_names: Vec<(String, u32)>,
    /// (`HINT_*` set, name): a path component (or a whole xattr name) hashed into a set.
    pub hints: Vec<(u32, String)>,
}

impl HookInterest {
    /// Every hook sends everything (the diagnostic).
    pub fn all() -> Self {
        let mut h = HookInterest::default();
        let w = &mut h.words;
        w[bits::HOOK_CHANGE as usize] = u32::MAX;
        w[bits::HOOK_CHANGE_ALL as usize] = u32::MAX;
        w[bits::HOOK_UNIX as usize] = bits::HOOK_ENABLED | bits::HOOK_ALL;
        w[bits::HOOK_PTRACE as usize] = u32::MAX;
        w[bits::HOOK_NAMESPACE as usize] = u32::MAX;
        w[bits::HOOK_UNSHARE_FLAGS as usize] = u32::MAX;
        w[bits::HOOK_MOUNT as usize] = u32::MAX;
        w[bits::HOOK_MODULE as usize] = u32::MAX;
        w[bits::HOOK_BPF as usize] = bits::HOOK_ENABLED;
        w[bits::HOOK_SOCKET as usize] = u32::MAX;
        w[bits::HOOK_IO_URING as usize] = bits::HOOK_ENABLED;
        w[bits::HOOK_IO_URING_OPS_LO as usize] = u32::MAX;
        w[bits::HOOK_IO_URING_OPS_HI as usize] = u32::MAX;
        h
    }
}

impl Interest {
    /// Everything: each hook sends every event it sees. A diagnostic, never a default: it
    /// puts every open on the ring buffer.
    pub fn all() -> Self {
        Interest {
            file_flags: bits::FILE_ALL_READ | bits::FILE_ALL_WRITE,
            lib_flags: bits::LIB_ALL,
            connect_flags: bits::CONNECT_ALL,
            hooks: HookInterest::all(),
            ..Interest::default()
        }
    }
}

/// How much of each kernel map an interest fills, counted the way `apply` stores it (names
/// cut to their key and merged, prefixes masked, ports deduplicated), growing one rule's
/// interest at a time so the policy side can say which rule went past a map's capacity.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    file_names: BTreeSet<NameKey>,
    lib_names: BTreeSet<NameKey>,
    ports: BTreeSet<u16>,
    v4: BTreeSet<(u8, [u8; 4])>,
    v6: BTreeSet<(u8, [u8; 16])>,
}

/// One kernel map an interest does not fit in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverCapacity {
    /// What the map holds: "file names", "library names", "ports", "IPv4 prefixes",
    /// "IPv6 prefixes (IPv4 rules count twice: also as ::ffff:a.b.c.d)".
    pub what: &'static str,
    pub needed: usize,
    pub capacity: u32,
}

impl Usage {
    pub fn add(&mut self, interest: &Interest) {
        let names = |set: &mut BTreeSet<NameKey>, names: &[(String, u32)]| {
            for (n, bits) in names {
                if *bits != 0 {
                    set.insert(name_key(n.as_bytes()));
                }
            }
        };
        names(&mut self.file_names, &interest.file_names);
        names(&mut self.lib_names, &interest.lib_names);
        self.ports.extend(interest.ports.iter().copied());
        for &(a, p) in &interest.v4 {
            self.v4.insert((p, masked(a.octets(), p.min(32))));
        }
        for &(a, p) in &interest.v6 {
            self.v6.insert((p, masked(a.octets(), p.min(128))));
        }
    }

    /// Every map this usage does not fit in (empty: it fits).
    pub fn over_capacity(&self) -> Vec<OverCapacity> {
        [
            ("file names", self.file_names.len(), MAX_FILE_NAMES),
            ("library names", self.lib_names.len(), MAX_LIB_NAMES),
            ("ports", self.ports.len(), MAX_CONNECT_PORTS),
            ("IPv4 prefixes", self.v4.len(), MAX_CONNECT_CIDRS),
            (
                "IPv6 prefixes (each IPv4 prefix counts here too, as ::ffff:a.b.c.d)",
                self.v6.len(),
                MAX_CONNECT_CIDRS,
            ),
        ]
        .into_iter()
        .filter(|&(_, n, max)| n > max as usize)
        .map(|(what, needed, capacity)| OverCapacity {
            what,
            needed,
            capacity,
        })
        .collect()
    }
}

/// The interest maps, taken out of the loaded object. Dropping them does not empty them: the
/// kernel keeps a map alive while a program uses it.
pub struct InterestMaps {
    file_names: HashMap<MapData, NameKey, u32>,
    file_filter: Array<MapData, u32>,
    lib_names: HashMap<MapData, NameKey, u32>,
    lib_filter: Array<MapData, u32>,
    connect_filter: Array<MapData, u32>,
    ports: HashMap<MapData, u16, u8>,
    v4: LpmTrie<MapData, [u8; 4], u8>,
    v6: LpmTrie<MapData, [u8; 16], u8>,
    hook_filter: Array<MapData, u32>,
    path_names: HashMap<MapData, NameKey, u32>,
    path_filter: Array<MapData, u32>,
    path_hints: Array<MapData, PathHints>,
    /// `RASP_INTEREST_ALL=1` at load (see `loader::INTEREST_ALL_ENV`): every `apply` also
    /// sends everything, so the diagnostic survives the daemon applying its policies.
    force_all: bool,
}

/// The switches and entries one `Interest` becomes, validated before any map is touched.
#[derive(Debug, PartialEq, Eq)]
struct Compiled {
    file_names: BTreeMap<NameKey, u32>,
    file_flags: u32,
    file_summary: Summary,
    lib_names: BTreeMap<NameKey, u32>,
    lib_flags: u32,
    lib_summary: Summary,
    connect_flags: u32,
    ports: BTreeSet<u16>,
    v4: BTreeSet<(u32, [u8; 4])>,
    v6: BTreeSet<(u32, [u8; 16])>,
    hook_words: [u32; HOOK_WORDS as usize],
    path_names: BTreeMap<NameKey, u32>,
    path_summary: Summary,
    path_hints: Vec<PathHints>,
}

/// The `FILTER_LENGTHS` words and the `FILTER_NAME_HINTS` set of a name map: for every
/// mask the kernel can test a depth with, what the names whose bits meet it look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Summary {
    lengths: [u32; MASK_SLOTS as usize],
    hints: [u32; NAME_HINT_WORDS as usize],
}

impl Summary {
    /// `masks`: every mask the hook's program can compute (`interest::*_mask_set`).
    fn of(names: &BTreeMap<NameKey, u32>, masks: impl Iterator<Item = u32>) -> Self {
        let mut s = Summary {
            lengths: [0; MASK_SLOTS as usize],
            hints: [0; NAME_HINT_WORDS as usize],
        };
        let masks: BTreeSet<u32> = masks.filter(|&m| m != 0).collect();
        for (key, &interest) in names {
            // Keys hold at most NAME_KEY_LEN - 1 bytes; a cut name has bit 31, as the
            // kernel files every component of 31 bytes or more.
            let len = key.iter().position(|&b| b == 0).unwrap_or(key.len());
            for &mask in masks.iter().filter(|&&m| m & interest != 0) {
                s.lengths[(mask % MASK_SLOTS) as usize] |= name_length_bit(len);
                let (word, bit) = name_hint(len as u32, key[0], key[1], mask);
                s.hints[(word - FILTER_NAME_HINTS) as usize] |= bit;
            }
        }
        s
    }
}

fn invalid(what: &'static str, reason: String) -> LoadError {
    LoadError::Interest { what, reason }
}

fn compile_names(
    what: &'static str,
    names: &[(String, u32)],
    valid_bits: u32,
    max: u32,
) -> Result<BTreeMap<NameKey, u32>, LoadError> {
    let mut out: BTreeMap<NameKey, u32> = BTreeMap::new();
    for (name, interest) in names {
        if name.is_empty() || name.contains('/') || name.contains('\0') {
            return Err(invalid(
                what,
                format!("{name:?} is not a path component (one name, no '/', not empty)"),
            ));
        }
        if interest & !valid_bits != 0 {
            return Err(invalid(
                what,
                format!(
                    "{name:?}: bits {:#x} mean nothing here",
                    interest & !valid_bits
                ),
            ));
        }
        if *interest == 0 {
            continue;
        }
        // Names cut to the same 31 bytes share one entry: the union of their interest.
        *out.entry(name_key(name.as_bytes())).or_default() |= interest;
    }
    if out.len() > max as usize {
        return Err(invalid(
            what,
            format!("{} names, at most {max} fit the kernel map", out.len()),
        ));
    }
    Ok(out)
}

fn masked<const N: usize>(addr: [u8; N], prefix: u8) -> [u8; N] {
    let mut out = addr;
    for (i, byte) in out.iter_mut().enumerate() {
        let bit = (i * 8) as u32;
        let keep = u32::from(prefix).saturating_sub(bit).min(8);
        *byte &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    out
}

impl Interest {
    fn compile(&self) -> Result<Compiled, LoadError> {
        let file_names = compile_names(
            "file names",
            &self.file_names,
            bits::FILE_NAME_BITS,
            MAX_FILE_NAMES,
        )?;
        let lib_names = compile_names(
            "library names",
            &self.lib_names,
            bits::LIB_NAME_BITS,
            MAX_LIB_NAMES,
        )?;
        let ports: BTreeSet<u16> = self.ports.iter().copied().collect();
        if ports.len() > MAX_CONNECT_PORTS as usize {
            return Err(invalid(
                "ports",
                format!("{} ports, at most {MAX_CONNECT_PORTS}", ports.len()),
            ));
        }
        let mut v4 = BTreeSet::new();
        for &(addr, prefix) in &self.v4 {
            if prefix > 32 {
                return Err(invalid(
                    "IPv4 prefixes",
                    format!("{addr}/{prefix}: longer than 32"),
                ));
            }
            v4.insert((u32::from(prefix), masked(addr.octets(), prefix)));
        }
        let mut v6 = BTreeSet::new();
        for &(addr, prefix) in &self.v6 {
            if prefix > 128 {
                return Err(invalid(
                    "IPv6 prefixes",
                    format!("{addr}/{prefix}: longer than 128"),
                ));
            }
            v6.insert((u32::from(prefix), masked(addr.octets(), prefix)));
        }
        for (what, n) in [("IPv4 prefixes", v4.len()), ("IPv6 prefixes", v6.len())] {
            if n > MAX_CONNECT_CIDRS as usize {
                return Err(invalid(
                    what,
                    format!("{n} prefixes, at most {MAX_CONNECT_CIDRS}"),
                ));
            }
        }

        // The switches a caller could forget are derived: a name or an ALL flag enables the
        // hook, an *_ANY_DEPTH name turns on the full walk it needs. Bits the caller set are
        // kept.
        let any = |names: &BTreeMap<NameKey, u32>, bit: u32| names.values().any(|v| v & bit != 0);
        let mut file_flags = self.file_flags;
        if !file_names.is_empty() || file_flags & (bits::FILE_ALL_READ | bits::FILE_ALL_WRITE) != 0
        {
            file_flags |= bits::FILE_ENABLED;
        }
        if any(&file_names, bits::READ_ANY_DEPTH) {
            file_flags |= bits::FILE_READ_FULL_WALK;
        }
        let mut lib_flags = self.lib_flags;
        if !lib_names.is_empty() || lib_flags & (bits::LIB_ALL | bits::LIB_MEMFD) != 0 {
            lib_flags |= bits::LIB_ENABLED;
        }
        if any(&lib_names, bits::LIB_ANY_DEPTH) {
            lib_flags |= bits::LIB_FULL_WALK;
        }
        let mut connect_flags = self.connect_flags;
        if !ports.is_empty()
            || !v4.is_empty()
            || !v6.is_empty()
            || connect_flags & bits::CONNECT_ALL != 0
        {
            connect_flags |= bits::CONNECT_ENABLED;
        }
        let path_names = compile_names(
            "path names",
            &self.hooks.path_names,
            bits::PATH_NAME_BITS,
            MAX_PATH_NAMES,
        )?;
        let mut path_hints = vec![
            PathHints {
                words: [0; PATH_HINT_WORDS]
            };
            HINT_SETS as usize
        ];
        for (set, name) in &self.hooks.hints {
            let Some(hints) = path_hints.get_mut(*set as usize) else {
                return Err(invalid("path hints", format!("no hint set {set}")));
            };
            if name.is_empty() || (*set != bits::HINT_XATTR && name.contains('/')) {
                return Err(invalid(
                    "path hints",
                    format!("{name:?} is not a path component"),
                ));
            }
            let (word, bit) = path_hint(fnv1a(name.as_bytes()));
            hints.words[word as usize] |= 1 << bit;
        }
        Ok(Compiled {
            hook_words: self.hooks.words,
            path_summary: Summary::of(&path_names, bits::path_mask_set()),
            path_names,
            path_hints,
            file_summary: Summary::of(&file_names, file_open_mask_set()),
            file_names,
            file_flags,
            lib_summary: Summary::of(&lib_names, library_mask_set()),
            lib_names,
            lib_flags,
            connect_flags,
            ports,
            v4,
            v6,
        })
    }
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> LoadError {
    move |source| LoadError::Map { name, source }
}

/// Make a hash map hold exactly `want`: upsert everything wanted, then delete the rest.
fn replace_hash<K, V>(
    name: &'static str,
    map: &mut HashMap<MapData, K, V>,
    want: &BTreeMap<K, V>,
) -> Result<(), LoadError>
where
    K: aya::Pod + Ord,
    V: aya::Pod,
{
    for (k, v) in want {
        map.insert(k, v, 0).map_err(map_err(name))?;
    }
    let present: Vec<K> = map
        .keys()
        .collect::<Result<_, _>>()
        .map_err(map_err(name))?;
    for k in present.iter().filter(|k| !want.contains_key(k)) {
        match map.remove(k) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    Ok(())
}

fn replace_trie<const N: usize>(
    name: &'static str,
    map: &mut LpmTrie<MapData, [u8; N], u8>,
    want: &BTreeSet<(u32, [u8; N])>,
) -> Result<(), LoadError>
where
    [u8; N]: aya::Pod,
{
    for &(prefix, addr) in want {
        map.insert(&Key::new(prefix, addr), PRESENT, 0)
            .map_err(map_err(name))?;
    }
    let present: Vec<Key<[u8; N]>> = map
        .keys()
        .collect::<Result<_, _>>()
        .map_err(map_err(name))?;
    for key in present {
        if !want.contains(&(key.prefix_len(), key.data())) {
            match map.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(name)(e)),
            }
        }
    }
    Ok(())
}

impl InterestMaps {
    /// Keep sending everything whatever `apply` is given (the `RASP_INTEREST_ALL`
    /// diagnostic), from now on.
    pub fn force_all(&mut self, interest: &Interest) -> Result<(), LoadError> {
        self.force_all = true;
        self.apply(interest)
    }

    /// Take the interest maps out of the loaded object (they stay shared with the programs).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(LoadError::MissingMap(name));
        Ok(InterestMaps {
            file_names: HashMap::try_from(take("FILE_NAMES")?).map_err(map_err("FILE_NAMES"))?,
            file_filter: Array::try_from(take("FILE_FILTER")?).map_err(map_err("FILE_FILTER"))?,
            lib_names: HashMap::try_from(take("LIB_NAMES")?).map_err(map_err("LIB_NAMES"))?,
            lib_filter: Array::try_from(take("LIB_FILTER")?).map_err(map_err("LIB_FILTER"))?,
            connect_filter: Array::try_from(take("CONNECT_FILTER")?)
                .map_err(map_err("CONNECT_FILTER"))?,
            ports: HashMap::try_from(take("CONNECT_PORTS")?).map_err(map_err("CONNECT_PORTS"))?,
            v4: LpmTrie::try_from(take("CONNECT_V4")?).map_err(map_err("CONNECT_V4"))?,
            v6: LpmTrie::try_from(take("CONNECT_V6")?).map_err(map_err("CONNECT_V6"))?,
            hook_filter: Array::try_from(take("HOOK_FILTER")?).map_err(map_err("HOOK_FILTER"))?,
            path_names: HashMap::try_from(take("PATH_NAMES")?).map_err(map_err("PATH_NAMES"))?,
            path_filter: Array::try_from(take("PATH_FILTER")?).map_err(map_err("PATH_FILTER"))?,
            path_hints: Array::try_from(take("PATH_HINTS")?).map_err(map_err("PATH_HINTS"))?,
            force_all: false,
        })
    }

    /// Make the kernel filter exactly `interest`. Validated completely first (an invalid
    /// interest changes nothing); then per map: new entries in, stale entries out; switches
    /// last. During the swap the kernel sees old ∪ new entries under the old switches, then
    /// the new entries under the old switches, then the new set: never less than what both
    /// sets agree on. The maps are sized for old ∪ new (twice the `MAX_*` limits). A map
    /// error midway leaves a superset of the new entries in place and the old switches, and
    /// is returned; applying again converges.
    pub fn apply(&mut self, interest: &Interest) -> Result<(), LoadError> {
        let mut c = interest.compile()?;
        if self.force_all {
            let all = Interest::all().compile()?;
            c.file_flags |= all.file_flags;
            c.lib_flags |= all.lib_flags;
            c.connect_flags |= all.connect_flags;
            for (word, all) in c.hook_words.iter_mut().zip(all.hook_words) {
                *word |= all;
            }
        }
        replace_hash("FILE_NAMES", &mut self.file_names, &c.file_names)?;
        replace_hash("LIB_NAMES", &mut self.lib_names, &c.lib_names)?;
        let ports: BTreeMap<u16, u8> = c.ports.iter().map(|&p| (p, PRESENT)).collect();
        replace_hash("CONNECT_PORTS", &mut self.ports, &ports)?;
        replace_trie("CONNECT_V4", &mut self.v4, &c.v4)?;
        replace_trie("CONNECT_V6", &mut self.v6, &c.v6)?;
        replace_hash("PATH_NAMES", &mut self.path_names, &c.path_names)?;
        // Which lengths and bits exist only narrows which components get looked up; the
        // names both sets share are covered by the old summary and the new one alike.
        for (name, filter, summary, flags) in [
            (
                "FILE_FILTER",
                &mut self.file_filter,
                c.file_summary,
                c.file_flags,
            ),
            (
                "LIB_FILTER",
                &mut self.lib_filter,
                c.lib_summary,
                c.lib_flags,
            ),
            ("PATH_FILTER", &mut self.path_filter, c.path_summary, 0),
        ] {
            for (i, &word) in summary.lengths.iter().enumerate() {
                filter
                    .set(FILTER_LENGTHS + i as u32, word, 0)
                    .map_err(map_err(name))?;
            }
            for (i, &word) in summary.hints.iter().enumerate() {
                filter
                    .set(FILTER_NAME_HINTS + i as u32, word, 0)
                    .map_err(map_err(name))?;
            }
            filter.set(FILTER_FLAGS, flags, 0).map_err(map_err(name))?;
        }
        self.connect_filter
            .set(FILTER_FLAGS, c.connect_flags, 0)
            .map_err(map_err("CONNECT_FILTER"))?;
        // Hint sets before the switches that make the programs consult them.
        for (i, hints) in c.path_hints.iter().enumerate() {
            self.path_hints
                .set(i as u32, hints, 0)
                .map_err(map_err("PATH_HINTS"))?;
        }
        for (i, &word) in c.hook_words.iter().enumerate() {
            self.hook_filter
                .set(i as u32, word, 0)
                .map_err(map_err("HOOK_FILTER"))?;
        }
        tracing::info!(
            file_names = c.file_names.len(),
            file_flags = c.file_flags,
            lib_names = c.lib_names.len(),
            lib_flags = c.lib_flags,
            connect_flags = c.connect_flags,
            ports = c.ports.len(),
            v4 = c.v4.len(),
            v6 = c.v6.len(),
            path_names = c.path_names.len(),
            hints = interest.hooks.hints.len(),
            hook_change = c.hook_words[bits::HOOK_CHANGE as usize],
            "kernel interest applied"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_are_derived_and_names_merged() {
        let interest = Interest {
            file_names: vec![
                ("shadow".into(), bits::READ_AT_LEAF),
                ("etc".into(), bits::WRITE_ANY_DEPTH),
                ("shadow".into(), bits::WRITE_ANY_DEPTH),
                ("ignored".into(), 0),
            ],
            lib_names: vec![("tmp".into(), bits::LIB_ANY_DEPTH)],
            ports: vec![22, 22, 443],
            ..Interest::default()
        };
        let c = interest.compile().unwrap();
        assert_eq!(
            c.file_flags,
            bits::FILE_ENABLED,
            "no READ_ANY_DEPTH, no full walk"
        );
        assert_eq!(c.file_names.len(), 2);
        assert_eq!(
            c.file_names[&name_key(b"shadow")],
            bits::READ_AT_LEAF | bits::WRITE_ANY_DEPTH
        );
        assert_eq!(c.lib_flags, bits::LIB_ENABLED | bits::LIB_FULL_WALK);
        assert_eq!(c.connect_flags, bits::CONNECT_ENABLED);
        assert_eq!(c.ports.len(), 2);
        // What a read-only open tests at its leaf, parent and above, and a write at its top.
        let read = bits::file_open_masks(1, 0, 0, 0);
        let write = bits::file_open_masks(0, 1, 0, 0);
        let lengths = |mask: u32| c.file_summary.lengths[mask as usize];
        // "shadow" (6) is read at the leaf and written anywhere; "etc" (3) only written.
        assert_eq!(lengths(read.leaf), 1 << 6);
        assert_eq!(
            lengths(read.parent),
            0,
            "nothing to find at a read's parent"
        );
        assert_eq!(lengths(read.above), 0);
        assert_eq!(lengths(write.leaf), (1 << 6) | (1 << 3));
        assert_eq!(
            c.lib_summary.lengths[bits::library_masks(1).above as usize],
            1 << 3
        );
        // A hint bit per (name, mask) the kernel will look for, and no other.
        let hinted = |name: &str, mask: u32| {
            let b = name.as_bytes();
            let (word, bit) = name_hint(b.len() as u32, b[0], b[1], mask);
            c.file_summary.hints[(word - FILTER_NAME_HINTS) as usize] & bit != 0
        };
        assert!(hinted("shadow", read.leaf));
        assert!(hinted("shadow", write.above));
        assert!(hinted("etc", write.leaf));
        assert!(
            !hinted("etc", read.parent) && !hinted("etc", read.leaf),
            "a write-only name costs reads no lookup"
        );
        let c = Interest::default().compile().unwrap();
        assert_eq!((c.file_flags, c.lib_flags, c.connect_flags), (0, 0, 0));
        let c = Interest::all().compile().unwrap();
        assert_ne!(c.file_flags & bits::FILE_ENABLED, 0);
        assert_ne!(c.lib_flags & bits::LIB_ENABLED, 0);
        assert_ne!(c.connect_flags & bits::CONNECT_ENABLED, 0);
    }

    #[test]
    fn top_names_and_the_memfd_test_enable_their_hooks() {
        let interest = Interest {
            file_names: vec![("lib".into(), bits::WRITE_AT_TOP | bits::CREATE_AT_TOP)],
            lib_flags: bits::LIB_MEMFD,
            ..Interest::default()
        };
        let c = interest.compile().unwrap();
        assert_eq!(
            c.file_flags,
            bits::FILE_ENABLED,
            "top bits need no full walk flag"
        );
        // Any component may be the top one: every depth of a creation looks for "lib", none
        // of a read.
        let created = bits::file_open_masks(0, 0, 1, 0);
        assert_eq!(c.file_summary.lengths[created.above as usize], 1 << 3);
        let read = bits::file_open_masks(1, 0, 0, 1);
        assert_eq!(c.file_summary.lengths[read.leaf as usize], 0);
        assert_eq!(c.lib_flags, bits::LIB_ENABLED | bits::LIB_MEMFD);
        assert!(c.lib_names.is_empty());
        let e = Interest {
            lib_names: vec![("lib".into(), bits::WRITE_AT_TOP)],
            ..Interest::default()
        }
        .compile()
        .unwrap_err()
        .to_string();
        assert!(e.contains("mean nothing"), "{e}");
    }

    #[test]
    fn long_names_fall_in_the_last_length_bucket() {
        let long = "x".repeat(40);
        let interest = Interest {
            file_names: vec![
                (long.clone(), bits::READ_AT_LEAF),
                ("y".repeat(31), bits::READ_AT_LEAF),
                ("z".repeat(30), bits::READ_AT_LEAF),
            ],
            ..Interest::default()
        };
        let c = interest.compile().unwrap();
        let leaf = bits::file_open_masks(1, 0, 0, 0).leaf;
        assert_eq!(c.file_summary.lengths[leaf as usize], (1 << 31) | (1 << 30));
        assert!(c.file_names.contains_key(&name_key(&long.as_bytes()[..31])));
    }

    #[test]
    fn read_any_depth_turns_on_the_full_walk() {
        let interest = Interest {
            file_names: vec![("secrets".into(), bits::READ_ANY_DEPTH)],
            ..Interest::default()
        };
        let c = interest.compile().unwrap();
        assert_eq!(c.file_flags, bits::FILE_ENABLED | bits::FILE_READ_FULL_WALK);
    }

    #[test]
    fn prefixes_are_masked_to_their_length() {
        let interest = Interest {
            v4: vec![
                (Ipv4Addr::new(169, 254, 169, 254), 32),
                (Ipv4Addr::new(10, 1, 2, 3), 8),
                (Ipv4Addr::new(10, 9, 9, 9), 8),
                (Ipv4Addr::new(172, 31, 255, 1), 12),
                (Ipv4Addr::new(1, 2, 3, 4), 0),
            ],
            v6: vec![("fd00::1".parse().unwrap(), 8)],
            ..Interest::default()
        };
        let c = interest.compile().unwrap();
        let v4: Vec<(u32, [u8; 4])> = c.v4.into_iter().collect();
        assert_eq!(
            v4,
            [
                (0, [0, 0, 0, 0]),
                (8, [10, 0, 0, 0]),
                (12, [172, 16, 0, 0]),
                (32, [169, 254, 169, 254]),
            ]
        );
        let (prefix, v6) = c.v6.into_iter().next().unwrap();
        assert_eq!(prefix, 8);
        assert_eq!(v6[0], 0xfd);
        assert!(v6[1..].iter().all(|&b| b == 0));
        assert_eq!(c.connect_flags, bits::CONNECT_ENABLED);
    }

    #[test]
    fn usage_counts_what_compile_stores() {
        let mut u = Usage::default();
        let long = "x".repeat(40);
        u.add(&Interest {
            // Two names cut to the same 31-byte key are one entry; a name with no bits none.
            file_names: vec![
                (format!("{long}a"), bits::READ_AT_LEAF),
                (format!("{long}b"), bits::READ_AT_LEAF),
                ("unused".into(), 0),
            ],
            ports: vec![22, 22, 443],
            v4: vec![
                (Ipv4Addr::new(10, 1, 2, 3), 8),
                (Ipv4Addr::new(10, 9, 9, 9), 8),
            ],
            ..Interest::default()
        });
        assert!(u.over_capacity().is_empty());
        assert_eq!((u.file_names.len(), u.ports.len(), u.v4.len()), (1, 2, 1));
        let ports: Vec<u16> = (1000..=1000 + MAX_CONNECT_PORTS as u16).collect();
        u.add(&Interest {
            ports: ports.clone(),
            ..Interest::default()
        });
        let over = u.over_capacity();
        assert_eq!(over.len(), 1, "{over:?}");
        assert_eq!(over[0].what, "ports");
        assert_eq!(over[0].needed, MAX_CONNECT_PORTS as usize + 3);
        // What usage calls too many, compile refuses too.
        let e = Interest {
            ports,
            ..Interest::default()
        }
        .compile()
        .unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
    }

    #[test]
    fn invalid_interest_is_refused_with_the_reason() {
        let bad = |i: Interest| i.compile().unwrap_err().to_string();
        let e = bad(Interest {
            file_names: vec![("etc/shadow".into(), bits::READ_AT_LEAF)],
            ..Interest::default()
        });
        assert!(e.contains("not a path component"), "{e}");
        let e = bad(Interest {
            file_names: vec![("".into(), bits::READ_AT_LEAF)],
            ..Interest::default()
        });
        assert!(e.contains("not a path component"), "{e}");
        let e = bad(Interest {
            lib_names: vec![("tmp".into(), bits::WRITE_ANY_DEPTH)],
            ..Interest::default()
        });
        assert!(e.contains("mean nothing"), "{e}");
        let e = bad(Interest {
            v4: vec![(Ipv4Addr::LOCALHOST, 33)],
            ..Interest::default()
        });
        assert!(e.contains("longer than 32"), "{e}");
        let many: Vec<(String, u32)> = (0..=MAX_FILE_NAMES)
            .map(|i| (format!("n{i}"), bits::READ_AT_LEAF))
            .collect();
        let e = bad(Interest {
            file_names: many,
            ..Interest::default()
        });
        assert!(e.contains("at most"), "{e}");
    }
}
