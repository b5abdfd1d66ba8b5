//! The kernel's deny maps, taken out of the loaded object and written from a `DenyTable`
//! (`policy::deny` decides what goes in). A new plan goes in before the old entries come
//! out, so a reload never opens a moment with less enforced than both sets; the filter
//! words (which acts have entries) are widened first and narrowed last. Quarantined
//! cgroups live in their own map, kept across plans.

use std::collections::HashSet;

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, MapError},
    Ebpf,
};
use rasp_common::{
    deny::{
        self as k, DenyEntry, InodeKey, DENY_FILTER_WORDS, FILTER_INODE_ACTS, FILTER_NAME_ACTS,
        FILTER_NET, FILTER_QUARANTINE, FILTER_SUBTREE_ACTS, MAX_DENY_CIDRS, MAX_DENY_INODES,
        MAX_DENY_NAMES, MAX_DENY_PORTS, MAX_QUARANTINED,
    },
    interest::NameKey,
};

use super::LoadError;

/// What the kernel accepts, as the loader found it: which enforcing hooks attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCapabilities {
    /// BPF-LSM programs are attached.
    pub lsm: bool,
    /// The cgroup connect/sendmsg hooks are attached.
    pub cgroup_socket: bool,
}

/// A rule the kernel enforces, by its slot in a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRule {
    pub policy: String,
    pub rule: String,
}

/// The deny maps' contents for one policy set (`policy::deny` decides them).
#[derive(Clone, Debug, Default)]
pub struct DenyTable {
    /// Low 16 bits of the policy set version: the generation in every slot.
    pub generation: u32,
    /// Slot index → rule.
    pub rules: Vec<KernelRule>,
    pub inodes: Vec<(InodeKey, DenyEntry)>,
    pub names: Vec<(NameKey, DenyEntry)>,
    pub v4: Vec<(u32, [u8; 4], DenyEntry)>,
    pub v6: Vec<(u32, [u8; 16], DenyEntry)>,
    pub ports: Vec<(u16, DenyEntry)>,
}

#[derive(Debug, thiserror::Error)]
pub enum DenyError {
    #[error("{what}: {count} entries, the kernel map holds {max}")]
    Capacity {
        what: &'static str,
        count: usize,
        max: u32,
    },
    #[error("writing {what}: {source}")]
    Map {
        what: &'static str,
        source: MapError,
    },
}

fn map_err(what: &'static str) -> impl Fn(MapError) -> DenyError {
    move |source| DenyError::Map { what, source }
}

pub struct DenyMaps {
    inodes: HashMap<MapData, InodeKey, DenyEntry>,
    names: HashMap<MapData, NameKey, DenyEntry>,
    filter: Array<MapData, u32>,
    v4: LpmTrie<MapData, [u8; 4], DenyEntry>,
    v6: LpmTrie<MapData, [u8; 16], DenyEntry>,
    ports: HashMap<MapData, u16, DenyEntry>,
    quarantine: HashMap<MapData, u64, u32>,
    /// What the last plan installed (to remove what the next one drops).
    installed: Installed,
}

#[derive(Default)]
struct Installed {
    inodes: HashSet<InodeKey>,
    names: HashSet<NameKey>,
    v4: HashSet<(u32, [u8; 4])>,
    v6: HashSet<(u32, [u8; 16])>,
    ports: HashSet<u16>,
}

impl DenyMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<DenyMaps, LoadError> {
        fn take<T>(
            ebpf: &mut Ebpf,
            name: &'static str,
            conv: impl FnOnce(aya::maps::Map) -> Result<T, MapError>,
        ) -> Result<T, LoadError> {
            let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
            conv(map).map_err(|source| LoadError::Map { name, source })
        }
        Ok(DenyMaps {
            inodes: take(ebpf, "DENY_INODES", HashMap::try_from)?,
            names: take(ebpf, "DENY_NAMES", HashMap::try_from)?,
            filter: take(ebpf, "DENY_FILTER", Array::try_from)?,
            v4: take(ebpf, "DENY_V4", LpmTrie::try_from)?,
            v6: take(ebpf, "DENY_V6", LpmTrie::try_from)?,
            ports: take(ebpf, "DENY_PORTS", HashMap::try_from)?,
            quarantine: take(ebpf, "QUARANTINE", HashMap::try_from)?,
            installed: Installed::default(),
        })
    }

    /// Whether a plan fits the maps (checked before anything is written).
    pub fn check_capacity(plan: &DenyTable) -> Result<(), DenyError> {
        for (what, count, max) in [
            (
                "denied files and directories",
                plan.inodes.len(),
                MAX_DENY_INODES,
            ),
            ("denied file names", plan.names.len(), MAX_DENY_NAMES),
            ("denied IPv4 blocks", plan.v4.len(), MAX_DENY_CIDRS),
            ("denied IPv6 blocks", plan.v6.len(), MAX_DENY_CIDRS),
            ("denied ports", plan.ports.len(), MAX_DENY_PORTS),
        ] {
            if count > max as usize {
                return Err(DenyError::Capacity { what, count, max });
            }
        }
        Ok(())
    }

    pub fn apply(&mut self, plan: &DenyTable) -> Result<(), DenyError> {
        Self::check_capacity(plan)?;
        let mut acts = [0u32; 3]; // inode, subtree, name acts
        for (_, e) in &plan.inodes {
            acts[0] |= e.acts;
            if e.flags & k::DENY_SUBTREE != 0 {
                acts[1] |= e.acts;
            }
        }
        for (_, e) in &plan.names {
            acts[2] |= e.acts;
        }
        let net = u32::from(!plan.v4.is_empty() || !plan.v6.is_empty() || !plan.ports.is_empty());
        // Widen the switches to the union of old and new before entries change.
        let old = self.filter_words();
        self.set_filter(FILTER_INODE_ACTS, old[0] | acts[0])?;
        self.set_filter(FILTER_SUBTREE_ACTS, old[1] | acts[1])?;
        self.set_filter(FILTER_NAME_ACTS, old[2] | acts[2])?;
        self.set_filter(FILTER_NET, old[3] | net)?;

        let mut next = Installed::default();
        for (key, e) in &plan.inodes {
            self.inodes
                .insert(key, e, 0)
                .map_err(map_err("DENY_INODES"))?;
            next.inodes.insert(*key);
        }
        for (key, e) in &plan.names {
            self.names
                .insert(key, e, 0)
                .map_err(map_err("DENY_NAMES"))?;
            next.names.insert(*key);
        }
        for (prefix, addr, e) in &plan.v4 {
            self.v4
                .insert(&Key::new(*prefix, *addr), e, 0)
                .map_err(map_err("DENY_V4"))?;
            next.v4.insert((*prefix, *addr));
        }
        for (prefix, addr, e) in &plan.v6 {
            self.v6
                .insert(&Key::new(*prefix, *addr), e, 0)
                .map_err(map_err("DENY_V6"))?;
            next.v6.insert((*prefix, *addr));
        }
        for (port, e) in &plan.ports {
            self.ports
                .insert(port, e, 0)
                .map_err(map_err("DENY_PORTS"))?;
            next.ports.insert(*port);
        }
        // Then the stale entries go (a failed removal only leaves a stricter kernel).
        for key in self.installed.inodes.difference(&next.inodes) {
            let _ = self.inodes.remove(key);
        }
        for key in self.installed.names.difference(&next.names) {
            let _ = self.names.remove(key);
        }
        for (prefix, addr) in self.installed.v4.difference(&next.v4) {
            let _ = self.v4.remove(&Key::new(*prefix, *addr));
        }
        for (prefix, addr) in self.installed.v6.difference(&next.v6) {
            let _ = self.v6.remove(&Key::new(*prefix, *addr));
        }
        for port in self.installed.ports.difference(&next.ports) {
            let _ = self.ports.remove(port);
        }
        self.installed = next;
        // Narrow the switches to what is installed now.
        self.set_filter(FILTER_INODE_ACTS, acts[0])?;
        self.set_filter(FILTER_SUBTREE_ACTS, acts[1])?;
        self.set_filter(FILTER_NAME_ACTS, acts[2])?;
        self.set_filter(FILTER_NET, net)?;
        Ok(())
    }

    /// Switch every deny check off (the entries stay): at exit, before the programs are
    /// released, which happens in a child after the agent has gone (`teardown`). Nothing
    /// the agent decided may be enforced once it has stopped, least of all on an inode
    /// number a deleted denied file gave back.
    pub fn stand_down(&mut self) -> Result<(), DenyError> {
        for word in [
            FILTER_INODE_ACTS,
            FILTER_SUBTREE_ACTS,
            FILTER_NAME_ACTS,
            FILTER_NET,
            FILTER_QUARANTINE,
        ] {
            self.set_filter(word, 0)?;
        }
        Ok(())
    }

    /// Say whether the BPF-LSM hooks enforce (the tracepoint fallbacks then stand down).
    pub fn set_lsm_enforces(&mut self, yes: bool) -> Result<(), DenyError> {
        self.set_filter(rasp_common::deny::FILTER_LSM_ENFORCES, u32::from(yes))
    }

    /// Cut `cgroup_id` (and every cgroup below it) off the network; `rule` names why.
    pub fn quarantine(&mut self, cgroup_id: u64, rule: u32) -> Result<(), DenyError> {
        if self.quarantine.keys().count() >= MAX_QUARANTINED as usize {
            return Err(DenyError::Capacity {
                what: "quarantined cgroups",
                count: MAX_QUARANTINED as usize + 1,
                max: MAX_QUARANTINED,
            });
        }
        self.quarantine
            .insert(cgroup_id, rule, 0)
            .map_err(map_err("QUARANTINE"))?;
        self.set_filter(FILTER_QUARANTINE, 1)
    }

    /// Give `cgroup_id` its network back.
    pub fn release(&mut self, cgroup_id: u64) -> Result<(), DenyError> {
        match self.quarantine.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("QUARANTINE")(e)),
        }
        let any = self.quarantine.keys().next().is_some();
        self.set_filter(FILTER_QUARANTINE, u32::from(any))
    }

    pub fn quarantined(&self) -> Vec<u64> {
        self.quarantine.keys().filter_map(Result::ok).collect()
    }

    fn filter_words(&self) -> [u32; 4] {
        let get = |i: u32| self.filter.get(&i, 0).unwrap_or(0);
        [
            get(FILTER_INODE_ACTS),
            get(FILTER_SUBTREE_ACTS),
            get(FILTER_NAME_ACTS),
            get(FILTER_NET),
        ]
    }

    fn set_filter(&mut self, index: u32, value: u32) -> Result<(), DenyError> {
        debug_assert!(index < DENY_FILTER_WORDS);
        self.filter
            .set(index, value, 0)
            .map_err(map_err("DENY_FILTER"))
    }
}
