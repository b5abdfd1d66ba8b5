//! cgroup v2 ids → paths. The kernel reports `bpf_get_current_cgroup_id()`, the inode number
//! of the cgroup's directory in the cgroup2 filesystem. An id the cache does not know is
//! resolved on the spot by opening the directory by its file handle (cgroupfs hands out the
//! id as the handle: one `open_by_handle_at` and a `readlink`, no directory walk, and it
//! works from a cgroup namespace of the agent's own as long as the host's hierarchy is
//! mounted). Where that is refused (no CAP_DAC_READ_SEARCH), the process's own
//! `/proc/<pid>/cgroup` is tried, and failing both the id is handed to `CgroupMaintenance`,
//! which walks the hierarchy on its own thread — never the event path — and also forgets
//! cgroups that are gone, so the cache shrinks with them.

use std::{
    collections::HashMap,
    fs::{self, File},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::container::Containers;
use crate::events::Text;

/// Walking the whole hierarchy again sooner than this after a miss is not worth it.
const RESCAN_INTERVAL: Duration = Duration::from_millis(200);
/// Bounds for one rescan: a pathological hierarchy cannot keep the maintenance thread busy.
const RESCAN_MAX_DIRS: usize = 100_000;
/// Cached paths; past it the cache starts over (gone cgroups are normally forgotten long
/// before, by the maintenance pass).
const MAX_CACHED: usize = 65_536;
/// How often cached ids are checked for cgroups that are gone.
const PRUNE_INTERVAL: Duration = Duration::from_secs(30);
/// Ids waiting for a rescan; past it a miss is not queued (the next event of that cgroup
/// asks again).
const RESCAN_QUEUE: usize = 1024;
/// `FILEID_KERNFS`: the handle type cgroupfs (kernfs) uses; the handle is the 64-bit id.
const FILEID_KERNFS: libc::c_int = 0xfe;

/// Numbers for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupStats {
    pub cached: usize,
    /// Ids resolved through their file handle / from /proc / by a rescan.
    pub by_handle: u64,
    pub by_proc: u64,
    pub rescans: u64,
    /// Ids still unknown after a rescan (created and gone in between, or outside the mount).
    pub unresolved: u64,
    /// Cached ids dropped because their cgroup is gone.
    pub forgotten: u64,
}

#[derive(Default)]
struct Counters {
    by_handle: AtomicU64,
    by_proc: AtomicU64,
    rescans: AtomicU64,
    unresolved: AtomicU64,
    forgotten: AtomicU64,
}

/// The id → path cache and the quick ways to fill it; shared by the event path (resolve),
/// process seeding and the maintenance thread.
pub struct CgroupResolver {
    mount: PathBuf,
    /// The mount's root directory, for `open_by_handle_at`.
    root: Option<File>,
    /// Cleared the first time the kernel refuses a handle lookup for lack of privilege.
    handles_work: AtomicBool,
    cache: Mutex<HashMap<u64, Text>>,
    misses: mpsc::SyncSender<u64>,
    counters: Counters,
}

impl CgroupResolver {
    /// The resolver for the cgroup2 hierarchy mounted at `mount`, and the maintenance work
    /// to run on a thread of its own (`CgroupMaintenance::run`).
    pub fn new(mount: PathBuf) -> (Arc<CgroupResolver>, CgroupMaintenance) {
        let (tx, rx) = mpsc::sync_channel(RESCAN_QUEUE);
        let root = File::open(&mount).ok();
        let resolver = Arc::new(CgroupResolver {
            mount,
            root,
            handles_work: AtomicBool::new(true),
            cache: Mutex::new(HashMap::new()),
            misses: tx,
            counters: Counters::default(),
        });
        let maintenance = CgroupMaintenance {
            resolver: resolver.clone(),
            misses: rx,
            last_scan: None,
            last_prune: Instant::now(),
        };
        (resolver, maintenance)
    }

    /// Path of cgroup `id` inside the hierarchy ("/" for the root), using `pid` (a process
    /// in that cgroup) as a hint. On the event path: a cache hit, else one handle lookup (or
    /// one small /proc read); an id neither resolves is queued for the maintenance thread
    /// and `None` is returned at once.
    pub fn resolve(&self, id: u64, pid: Option<u32>) -> Option<Text> {
        if let Some(p) = crate::lock(&self.cache).get(&id) {
            return Some(p.clone());
        }
        let found = self
            .by_handle(id)
            .inspect(|_| {
                self.counters.by_handle.fetch_add(1, Ordering::Relaxed);
            })
            .or_else(|| {
                let path = proc_cgroup_path(Path::new("/proc"), pid?)?;
                (self.inode_of(&path) == Some(id)).then(|| {
                    self.counters.by_proc.fetch_add(1, Ordering::Relaxed);
                    path
                })
            });
        match found {
            Some(path) => {
                let path = Text::from(path);
                self.learn_text(id, path.clone());
                Some(path)
            }
            None => {
                // Full: this id waits for its cgroup's next event.
                let _ = self.misses.try_send(id);
                None
            }
        }
    }

    /// cgroup id of a path inside the hierarchy.
    pub fn inode_of(&self, path: &str) -> Option<u64> {
        let full = self.mount.join(path.trim_start_matches('/'));
        fs::metadata(full).ok().map(|m| m.ino())
    }

    /// Remember a path we already know (from /proc at seeding time).
    pub fn learn(&self, id: u64, path: &str) {
        self.learn_text(id, path.into());
    }

    fn learn_text(&self, id: u64, path: Text) {
        let mut cache = crate::lock(&self.cache);
        if cache.len() >= MAX_CACHED && !cache.contains_key(&id) {
            cache.clear();
        }
        cache.insert(id, path);
    }

    pub fn stats(&self) -> CgroupStats {
        let c = &self.counters;
        CgroupStats {
            cached: crate::lock(&self.cache).len(),
            by_handle: c.by_handle.load(Ordering::Relaxed),
            by_proc: c.by_proc.load(Ordering::Relaxed),
            rescans: c.rescans.load(Ordering::Relaxed),
            unresolved: c.unresolved.load(Ordering::Relaxed),
            forgotten: c.forgotten.load(Ordering::Relaxed),
        }
    }

    /// `open_by_handle_at(root, {FILEID_KERNFS, id})`, then the directory's path from
    /// `/proc/self/fd`: the path relative to the mount.
    fn by_handle(&self, id: u64) -> Option<String> {
        if !self.handles_work.load(Ordering::Relaxed) {
            return None;
        }
        let root = self.root.as_ref()?;
        #[repr(C)]
        struct KernfsHandle {
            handle_bytes: libc::c_uint,
            handle_type: libc::c_int,
            id: u64,
        }
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id,
        };
        // SAFETY: `handle` is a `struct file_handle` header followed by its 8 bytes of
        // `f_handle`, alive for the call; the returned fd is owned below.
        let fd = unsafe {
            libc::open_by_handle_at(
                root.as_raw_fd(),
                (&mut handle as *mut KernfsHandle).cast(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS)
            ) {
                self.handles_work.store(false, Ordering::Relaxed);
                tracing::info!(error = %e, "cgroup ids cannot be opened by handle here; resolving them from /proc and by walking the hierarchy");
            }
            return None;
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nothing else.
        let dir = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let link = fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
        let rel = link.strip_prefix(&self.mount).ok()?;
        let rel = rel.to_str()?;
        Some(format!("/{rel}"))
    }
}

/// The resolver's slow work, on a thread of its own: walks the hierarchy for ids the quick
/// ways missed (at most every `RESCAN_INTERVAL`), and every `PRUNE_INTERVAL` forgets cached
/// cgroups — paths and container identities — whose directory is gone.
pub struct CgroupMaintenance {
    resolver: Arc<CgroupResolver>,
    misses: mpsc::Receiver<u64>,
    last_scan: Option<Instant>,
    last_prune: Instant,
}

impl CgroupMaintenance {
    /// Runs until `stop` says so (checked at least every second).
    pub fn run(mut self, containers: &Containers, stop: &dyn Fn() -> bool) {
        while !stop() {
            match self.misses.recv_timeout(Duration::from_secs(1)) {
                Ok(id) => {
                    let mut wanted = vec![id];
                    wanted.extend(self.misses.try_iter());
                    self.rescan_for(&wanted);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if self.last_prune.elapsed() >= PRUNE_INTERVAL {
                self.prune(containers);
            }
        }
    }

    fn rescan_for(&mut self, wanted: &[u64]) {
        let r = &self.resolver;
        let cache_has = |id: &u64| crate::lock(&r.cache).contains_key(id);
        let wanted: Vec<u64> = wanted.iter().copied().filter(|id| !cache_has(id)).collect();
        if wanted.is_empty() {
            return;
        }
        if let Some(t) = self.last_scan {
            let wait = RESCAN_INTERVAL.saturating_sub(t.elapsed());
            std::thread::sleep(wait);
        }
        self.last_scan = Some(Instant::now());
        r.counters.rescans.fetch_add(1, Ordering::Relaxed);
        let found = walk(&r.mount);
        let mut cache = crate::lock(&r.cache);
        if cache.len() + found.len() > MAX_CACHED {
            cache.clear();
        }
        for id in &wanted {
            if !found.contains_key(id) {
                r.counters.unresolved.fetch_add(1, Ordering::Relaxed);
            }
        }
        cache.extend(found);
    }

    /// Forget cached ids whose cgroup directory is gone (or now has another inode).
    fn prune(&mut self, containers: &Containers) {
        self.last_prune = Instant::now();
        let r = &self.resolver;
        let cached: Vec<(u64, Text)> = crate::lock(&r.cache)
            .iter()
            .map(|(id, p)| (*id, p.clone()))
            .collect();
        let gone: Vec<u64> = cached
            .into_iter()
            .filter(|(id, path)| r.inode_of(path) != Some(*id))
            .map(|(id, _)| id)
            .collect();
        if !gone.is_empty() {
            let mut cache = crate::lock(&r.cache);
            for id in &gone {
                cache.remove(id);
            }
            r.counters
                .forgotten
                .fetch_add(gone.len() as u64, Ordering::Relaxed);
        }
        // Every cgroup the registry knows had its path from this cache; what the cache no
        // longer has is gone for both.
        let live: std::collections::HashSet<u64> = crate::lock(&r.cache).keys().copied().collect();
        containers.retain(|id| live.contains(&id));
        tracing::debug!(forgotten = gone.len(), "cgroup caches pruned");
    }
}

/// Every directory of the hierarchy at `mount`, by inode (bounded by `RESCAN_MAX_DIRS`).
fn walk(mount: &Path) -> HashMap<u64, Text> {
    let mut out = HashMap::new();
    let mut stack = vec![(mount.to_path_buf(), String::from("/"))];
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
        out.insert(meta.ino(), Text::from(rel.as_str()));
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
    out
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
    fn a_rescan_off_the_event_path_resolves_directories_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let ino = fs::metadata(dir.path().join("a/b")).unwrap().ino();
        let root_ino = fs::metadata(dir.path()).unwrap().ino();
        let (r, mut m) = CgroupResolver::new(dir.path().to_path_buf());
        // Not cgroupfs: no handle, no /proc hint; the miss is queued, not walked here.
        assert_eq!(r.resolve(ino, None), None);
        assert_eq!(r.resolve(root_ino, None), None);
        let queued: Vec<u64> = m.misses.try_iter().collect();
        assert_eq!(queued, vec![ino, root_ino]);
        m.rescan_for(&queued);
        assert_eq!(r.resolve(ino, None).as_deref(), Some("/a/b"));
        assert_eq!(r.resolve(root_ino, None).as_deref(), Some("/"));
        assert_eq!(r.inode_of("/a/b"), Some(ino));
        m.rescan_for(&[u64::MAX]);
        let s = r.stats();
        assert_eq!((s.rescans, s.unresolved), (2, 1));

        // The directory goes: the next pass forgets it.
        fs::remove_dir(dir.path().join("a/b")).unwrap();
        let (containers, _) = Containers::new(super::super::runtime::RuntimeSockets::none());
        m.prune(&containers);
        assert_eq!(r.resolve(ino, None), None);
        assert_eq!(r.stats().forgotten, 1);
    }
}
