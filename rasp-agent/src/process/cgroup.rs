//! cgroup v2 ids → paths. The kernel reports `bpf_get_current_cgroup_id()`, which is the
//! inode number of the cgroup's directory in the cgroup2 mount. We resolve an id from the
//! process's own `/proc/<pid>/cgroup` when we can (one small read, checked by inode), and
//! otherwise by rescanning the hierarchy (rate-limited), caching what we learn.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::events::Text;

/// Walking the whole hierarchy again sooner than this after a miss is not worth it.
const RESCAN_INTERVAL: Duration = Duration::from_millis(200);
/// Bounds for one rescan: a pathological hierarchy cannot stall the event path for long.
const RESCAN_MAX_DIRS: usize = 100_000;

pub struct CgroupResolver {
    mount: PathBuf,
    cache: HashMap<u64, Text>,
    last_scan: Option<Instant>,
}

impl CgroupResolver {
    pub fn new(mount: PathBuf) -> Self {
        CgroupResolver {
            mount,
            cache: HashMap::new(),
            last_scan: None,
        }
    }

    /// Path of cgroup `id` inside the hierarchy ("/" for the root), using `pid` (a process
    /// in that cgroup) as a hint.
    pub fn resolve(&mut self, id: u64, pid: Option<u32>) -> Option<Text> {
        if let Some(p) = self.cache.get(&id) {
            return Some(p.clone());
        }
        if let Some(pid) = pid {
            if let Some(path) = proc_cgroup_path(Path::new("/proc"), pid) {
                if self.inode_of(&path) == Some(id) {
                    let path = Text::from(path);
                    self.cache.insert(id, path.clone());
                    return Some(path);
                }
            }
        }
        let due = self
            .last_scan
            .is_none_or(|t| t.elapsed() >= RESCAN_INTERVAL);
        if due {
            self.rescan();
            return self.cache.get(&id).cloned();
        }
        None
    }

    /// cgroup id of a path inside the hierarchy.
    pub fn inode_of(&self, path: &str) -> Option<u64> {
        let full = self.mount.join(path.trim_start_matches('/'));
        fs::metadata(full).ok().map(|m| m.ino())
    }

    /// Remember a path we already know (from /proc at seeding time).
    pub fn learn(&mut self, id: u64, path: &str) {
        self.cache.insert(id, path.into());
    }

    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        // Deleted cgroups keep their ids out of reach: start the cache afresh.
        self.cache.clear();
        let mut stack = vec![(self.mount.clone(), String::from("/"))];
        let mut seen = 0usize;
        while let Some((dir, rel)) = stack.pop() {
            seen += 1;
            if seen > RESCAN_MAX_DIRS {
                tracing::warn!(
                    max = RESCAN_MAX_DIRS,
                    "cgroup hierarchy too large; rescan cut short"
                );
                break;
            }
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            self.cache.insert(meta.ino(), rel.as_str().into());
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let child_rel = if rel == "/" {
                        format!("/{name}")
                    } else {
                        format!("{rel}/{name}")
                    };
                    stack.push((entry.path(), child_rel));
                }
            }
        }
    }
}

/// The cgroup v2 path of `pid` from `<proc>/<pid>/cgroup` (the "0::" line).
pub fn proc_cgroup_path(proc: &Path, pid: u32) -> Option<String> {
    let text = fs::read_to_string(proc.join(pid.to_string()).join("cgroup")).ok()?;
    parse_cgroup_v2_line(&text)
}

pub fn parse_cgroup_v2_line(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix("0::")).map(|p| {
        // A process in a cgroup removed since shows " (deleted)".
        p.strip_suffix(" (deleted)").unwrap_or(p).to_string()
    })
}

/// The first cgroup2 mount point in a /proc/mounts text.
pub fn find_cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_src, target, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_field(target)))
    })
}

/// /proc/mounts escapes space, tab, newline and backslash as octal.
pub fn unescape_mount_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        if b[i] == b'\\' && octal {
            let digit = |k: usize| u32::from(b[i + k] - b'0');
            out.push((digit(1) * 64 + digit(2) * 8 + digit(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_layout() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            find_cgroup2_mount(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(find_cgroup2_mount("proc /proc proc rw 0 0\n"), None);
        assert_eq!(unescape_mount_field("/a\\040b"), "/a b");
    }

    #[test]
    fn parses_v2_line_among_v1_lines() {
        let text = "12:pids:/user.slice\n0::/user.slice/session-1.scope\n";
        assert_eq!(
            parse_cgroup_v2_line(text).as_deref(),
            Some("/user.slice/session-1.scope")
        );
        assert_eq!(
            parse_cgroup_v2_line("0::/gone (deleted)\n").as_deref(),
            Some("/gone")
        );
        assert_eq!(parse_cgroup_v2_line("1:cpu:/\n"), None);
    }

    #[test]
    fn rescan_resolves_directories_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let ino = fs::metadata(dir.path().join("a/b")).unwrap().ino();
        let root_ino = fs::metadata(dir.path()).unwrap().ino();
        let mut r = CgroupResolver::new(dir.path().to_path_buf());
        assert_eq!(r.resolve(ino, None).as_deref(), Some("/a/b"));
        assert_eq!(r.resolve(root_ino, None).as_deref(), Some("/"));
        assert_eq!(r.inode_of("/a/b"), Some(ino));
        // Unknown ids right after a scan do not trigger another walk, and resolve to None.
        assert_eq!(r.resolve(u64::MAX, None), None);
    }
}
