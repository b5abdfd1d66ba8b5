//! Namespaces by inode number: a process's from `/proc/<pid>/ns/*` (exec records carry
//! them from the kernel), and the host's, which are the agent's own (it runs in the host's
//! namespaces; PID 1's are not readable on every host). A process whose PID namespace is
//! not the host's runs in a container or sandbox, whatever its cgroup is called.

use std::path::Path;

/// The inode of `<proc dir>/ns/<kind>` (a `kind:[inode]` link); `None` if unreadable.
pub fn inode(proc_dir: &Path, kind: &str) -> Option<u32> {
    let link = std::fs::read_link(proc_dir.join("ns").join(kind)).ok()?;
    parse(&link.to_string_lossy())
}

/// `mnt:[4026531841]` → 4026531841.
pub fn parse(link: &str) -> Option<u32> {
    link.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

/// The host's namespaces, by type name (`mnt`, `pid`, `net` ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostNamespaces {
    pub by_kind: Vec<(&'static str, u32)>,
}

impl HostNamespaces {
    /// The agent's own namespaces: the host's, since it runs there.
    pub fn of_agent() -> Self {
        let dir = Path::new("/proc/self");
        HostNamespaces {
            by_kind: crate::events::hooks::NAMESPACES
                .iter()
                .filter_map(|(kind, _)| Some((*kind, inode(dir, kind)?)))
                .collect(),
        }
    }

    pub fn get(&self, kind: &str) -> Option<u32> {
        self.by_kind
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, i)| *i)
    }

    /// Is `pid_ns` known and not the host's PID namespace?
    pub fn foreign_pid(&self, pid_ns: Option<u32>) -> bool {
        match (self.get("pid"), pid_ns) {
            (Some(host), Some(ns)) => host != ns,
            _ => false,
        }
    }

    /// Is `ino` one of the host's namespaces (of any type)?
    pub fn is_host(&self, ino: u32) -> bool {
        self.by_kind.iter().any(|(_, i)| *i == ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_and_the_agent_has_host_namespaces() {
        assert_eq!(parse("mnt:[4026531841]"), Some(4026531841));
        assert_eq!(parse("pid_for_children:[1]"), Some(1));
        assert_eq!(parse("garbage"), None);
        let host = HostNamespaces::of_agent();
        let pid = host.get("pid").expect("/proc/self/ns/pid is readable");
        assert!(!host.foreign_pid(Some(pid)));
        assert!(host.foreign_pid(Some(pid.wrapping_add(1))));
        assert!(!host.foreign_pid(None), "unknown is not foreign");
        assert!(host.is_host(pid));
    }
}
