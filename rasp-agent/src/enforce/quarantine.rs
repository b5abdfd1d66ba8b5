//! Quarantine of a workload's cgroup: its network is cut in the kernel first (new
//! connects and datagrams refused by the cgroup socket hooks, packets of existing
//! connections dropped at cgroup egress), then a forensic snapshot is written to the state
//! directory (process tree, command lines, executables' sha256, open descriptors, memory
//! maps, sockets, the cgroup's last events), then the cgroup is frozen (`cgroup.freeze`,
//! checked in `cgroup.events`) or killed (`cgroup.kill`). `quarantine list` shows what is
//! quarantined; `quarantine release` lifts the network cut and thaws. Both are recorded in
//! `quarantine.jsonl`.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{events::Event, policy::vocab::QuarantineMode};

/// Processes, descriptors and map lines a snapshot records at most (a fork bomb in the
/// cgroup must not make the snapshot unbounded).
const MAX_PROCESSES: usize = 2048;
const MAX_FDS: usize = 512;
const MAX_MAPS_BYTES: u64 = 256 * 1024;
/// Executables larger than this are named, not hashed.
const MAX_HASH_BYTES: u64 = 512 << 20;
/// How long `cgroup.events` gets to report the cgroup frozen.
const FREEZE_WAIT: Duration = Duration::from_secs(3);

/// Cuts a cgroup's network in the kernel (the deny maps' owner implements it).
pub trait NetworkCut {
    fn cut(&self, cgroup_id: u64, rule_slot: u32) -> Result<(), String>;
    fn restore(&self, cgroup_id: u64) -> Result<(), String>;
}

/// One quarantined cgroup, as `quarantine list` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Quarantined {
    pub cgroup: String,
    pub cgroup_id: u64,
    pub since: String,
    pub rule: String,
    pub mode: QuarantineMode,
    /// What was done, step by step ("network cut", "frozen", ...).
    pub steps: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// The quarantines in effect, kept in `<state>/quarantine/active.json` so a restarted
/// agent can still list and release them (the kernel cut goes with the agent's maps; a
/// frozen cgroup stays frozen until released).
pub struct QuarantineBook {
    dir: PathBuf,
    active: BTreeMap<u64, Quarantined>,
}

impl QuarantineBook {
    pub fn open(state_dir: &Path) -> Self {
        let dir = state_dir.join("quarantine");
        let active = fs::read(dir.join("active.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<Quarantined>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|q| (q.cgroup_id, q))
            .collect();
        QuarantineBook { dir, active }
    }

    pub fn list(&self) -> Vec<Quarantined> {
        self.active.values().cloned().collect()
    }

    pub fn contains(&self, cgroup_id: u64) -> bool {
        self.active.contains_key(&cgroup_id)
    }

    pub fn find(&self, cgroup: &str) -> Option<&Quarantined> {
        let id: Option<u64> = cgroup.parse().ok();
        self.active
            .values()
            .find(|q| q.cgroup == cgroup || Some(q.cgroup_id) == id)
    }

    fn ensure_dir(&self) -> std::io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
    }

    fn save(&self) -> std::io::Result<()> {
        self.ensure_dir()?;
        let list: Vec<&Quarantined> = self.active.values().collect();
        let tmp = self.dir.join("active.json.tmp");
        let bytes = serde_json::to_vec_pretty(&list).map_err(std::io::Error::other)?;
        write_private(&tmp, &bytes)?;
        fs::rename(&tmp, self.dir.join("active.json"))
    }

    /// Append a line to `quarantine.jsonl`: what was done, when, to what.
    fn record(&self, what: &str, q: &Quarantined) {
        let line = serde_json::json!({
            "time": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "what": what,
            "quarantine": q,
        });
        let result = self.ensure_dir().and_then(|()| {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(self.dir.join("quarantine.jsonl"))?;
            writeln!(f, "{line}")
        });
        if let Err(e) = result {
            tracing::error!(error = %e, cgroup = %q.cgroup, what, "quarantine record not written");
        }
    }

    /// Quarantine `cgroup` (a path in the cgroup2 hierarchy mounted at `mount`): network
    /// cut, snapshot, then freeze or kill. Returns what was done, or why it failed (a step
    /// that failed is said; the ones before it stay in effect).
    #[allow(clippy::too_many_arguments)]
    pub fn quarantine(
        &mut self,
        mount: &Path,
        cgroup: &str,
        cgroup_id: u64,
        rule: &str,
        rule_slot: u32,
        mode: QuarantineMode,
        net: &dyn NetworkCut,
        recent: &[Arc<Event>],
    ) -> Result<Quarantined, String> {
        if let Some(q) = self.active.get(&cgroup_id) {
            return Ok(q.clone()); // already: the first quarantine's steps stand
        }
        let dir = mount.join(cgroup.trim_start_matches('/'));
        let mut q = Quarantined {
            cgroup: cgroup.to_string(),
            cgroup_id,
            since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            rule: rule.to_string(),
            mode,
            steps: Vec::new(),
            snapshot: None,
        };
        net.cut(cgroup_id, rule_slot)
            .map_err(|e| format!("cutting the network of {cgroup}: {e}"))?;
        q.steps
            .push("network cut in the kernel (connects, datagrams and egress refused)".into());
        match self.snapshot(&dir, cgroup, cgroup_id, recent) {
            Ok(path) => {
                q.steps
                    .push(format!("snapshot written to {}", path.display()));
                q.snapshot = Some(path.display().to_string());
            }
            Err(e) => q.steps.push(format!("snapshot failed: {e}")),
        }
        let last = match mode {
            QuarantineMode::Freeze => freeze(&dir),
            QuarantineMode::Kill => write_control(&dir, "cgroup.kill", "1")
                .map(|()| "every process killed (cgroup.kill)".to_string()),
        };
        let failed = last.is_err();
        q.steps
            .push(last.unwrap_or_else(|e| format!("FAILED: {e}")));
        self.active.insert(cgroup_id, q.clone());
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "quarantine list not saved");
        }
        self.record("quarantine", &q);
        if failed {
            return Err(q.steps.join("; "));
        }
        Ok(q)
    }

    /// Lift the network cut and thaw. `cgroup`: its path or id as `list` shows it.
    pub fn release(
        &mut self,
        mount: &Path,
        cgroup: &str,
        net: &dyn NetworkCut,
    ) -> Result<Quarantined, String> {
        let Some(q) = self.find(cgroup).cloned() else {
            return Err(format!(
                "{cgroup} is not quarantined (see `rasp-agent quarantine list`)"
            ));
        };
        let mut steps = Vec::new();
        net.restore(q.cgroup_id)
            .map_err(|e| format!("restoring the network of {}: {e}", q.cgroup))?;
        steps.push("network restored".to_string());
        let dir = mount.join(q.cgroup.trim_start_matches('/'));
        if q.mode == QuarantineMode::Freeze {
            match write_control(&dir, "cgroup.freeze", "0") {
                Ok(()) => steps.push("thawed".into()),
                Err(e) if !dir.exists() => steps.push(format!("cgroup gone ({e})")),
                Err(e) => return Err(format!("thawing {}: {e}", q.cgroup)),
            }
        }
        self.active.remove(&q.cgroup_id);
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "quarantine list not saved");
        }
        let mut released = q.clone();
        released.steps = steps;
        self.record("release", &released);
        Ok(released)
    }

    /// Forget the quarantines whose cgroup is gone (removed, or its path now a new cgroup
    /// with another id: a restarted unit), lifting their network cut so the kernel map
    /// does not fill with dead ids; each is logged as `gone`. Returns what was forgotten.
    pub fn forget_gone(&mut self, mount: &Path, net: &dyn NetworkCut) -> Vec<Quarantined> {
        let gone: Vec<u64> = self
            .active
            .values()
            .filter(|q| {
                let dir = mount.join(q.cgroup.trim_start_matches('/'));
                // cgroup2's cgroup id is its directory's inode number.
                fs::metadata(&dir).map_or(true, |m| m.ino() != q.cgroup_id)
            })
            .map(|q| q.cgroup_id)
            .collect();
        let mut forgotten = Vec::new();
        for id in gone {
            let Some(mut q) = self.active.remove(&id) else {
                continue;
            };
            q.steps = vec![
                "cgroup gone: quarantine forgotten".to_string(),
                match net.restore(id) {
                    Ok(()) => "network cut entry removed".to_string(),
                    Err(e) => format!("network cut entry not removed: {e}"),
                },
            ];
            self.record("gone", &q);
            forgotten.push(q);
        }
        if !forgotten.is_empty() {
            if let Err(e) = self.save() {
                tracing::error!(error = %e, "quarantine list not saved");
            }
        }
        forgotten
    }

    fn snapshot(
        &self,
        dir: &Path,
        cgroup: &str,
        cgroup_id: u64,
        recent: &[Arc<Event>],
    ) -> std::io::Result<PathBuf> {
        self.ensure_dir()?;
        let pids = cgroup_pids(dir);
        let processes: Vec<serde_json::Value> = pids.iter().map(|&p| process_facts(p)).collect();
        let events: Vec<&Arc<Event>> = recent.iter().collect();
        let snapshot = serde_json::json!({
            "cgroup": cgroup,
            "cgroup_id": cgroup_id,
            "time": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "processes": processes,
            "processes_truncated": pids.len() >= MAX_PROCESSES,
            "last_events": events,
        });
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = self.dir.join(format!("snapshot-{cgroup_id}-{stamp}.json"));
        let masked = crate::mask::shared()
            .to_masked_json(&snapshot)
            .map_err(std::io::Error::other)?;
        let text = serde_json::to_vec_pretty(&masked).map_err(std::io::Error::other)?;
        write_private(&path, &text)?;
        Ok(path)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn write_control(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Freeze, then wait for `cgroup.events` to say so.
fn freeze(dir: &Path) -> Result<String, String> {
    write_control(dir, "cgroup.freeze", "1")?;
    let started = Instant::now();
    while started.elapsed() < FREEZE_WAIT {
        let events = fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
        if events.lines().any(|l| l.trim() == "frozen 1") {
            return Ok(format!(
                "frozen (cgroup.events: frozen 1 after {} ms)",
                started.elapsed().as_millis()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "cgroup.freeze written but cgroup.events did not report frozen within {} s",
        FREEZE_WAIT.as_secs()
    ))
}

/// Every process in the cgroup and below it, bounded.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut dirs = 0;
    while let Some(d) = stack.pop() {
        dirs += 1;
        if dirs > 10_000 || pids.len() >= MAX_PROCESSES {
            break;
        }
        if let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    pids.truncate(MAX_PROCESSES);
    pids
}

/// What a responder needs about one process; every field best-effort (it may be exiting).
fn process_facts(pid: u32) -> serde_json::Value {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|s| crate::process::procfs::parse_stat(&s));
    let argv = fs::read(proc_dir.join("cmdline"))
        .map(|b| crate::events::Argv::from_nul_separated(&b))
        .unwrap_or_default();
    let exe = fs::read_link(proc_dir.join("exe"))
        .ok()
        .map(|p| p.display().to_string());
    let fds: Vec<String> = fs::read_dir(proc_dir.join("fd"))
        .map(|entries| {
            entries
                .flatten()
                .take(MAX_FDS)
                .filter_map(|e| {
                    let target = fs::read_link(e.path()).ok()?;
                    Some(format!(
                        "{} -> {}",
                        e.file_name().to_string_lossy(),
                        target.display()
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let maps = fs::File::open(proc_dir.join("maps"))
        .map(|f| {
            let mut text = String::new();
            let _ = f.take(MAX_MAPS_BYTES).read_to_string(&mut text);
            text
        })
        .unwrap_or_default();
    serde_json::json!({
        "pid": pid,
        "ppid": stat.as_ref().map(|s| s.ppid),
        "comm": stat.as_ref().map(|s| s.comm.clone()),
        "argv": argv,
        "exe": exe,
        "exe_sha256": sha256_of(&proc_dir.join("exe")),
        "fds": fds,
        "sockets": sockets(pid, &proc_dir),
        "maps": maps,
    })
}

fn sha256_of(path: &Path) -> Option<String> {
    let mut f = fs::File::open(path).ok()?;
    if f.metadata().ok()?.len() > MAX_HASH_BYTES {
        return None;
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Some(
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// The process's sockets, from its fds' socket inodes and its network namespace's tables.
fn sockets(pid: u32, proc_dir: &Path) -> Vec<String> {
    let inodes: Vec<String> = fs::read_dir(proc_dir.join("fd"))
        .map(|entries| {
            entries
                .flatten()
                .take(MAX_FDS)
                .filter_map(|e| {
                    let t = fs::read_link(e.path()).ok()?;
                    let t = t.to_string_lossy();
                    Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for table in ["tcp", "tcp6", "udp", "udp6", "unix"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // tcp/udp: local rem st ... inode at column 9; unix: inode at column 6.
            let inode_col = if table == "unix" { 6 } else { 9 };
            if cols
                .get(inode_col)
                .is_some_and(|i| inodes.iter().any(|s| s == i))
            {
                out.push(format!("{table} {line}", line = line.trim()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeNet {
        cut: Mutex<Vec<u64>>,
    }

    impl NetworkCut for FakeNet {
        fn cut(&self, id: u64, _: u32) -> Result<(), String> {
            self.cut.lock().unwrap().push(id);
            Ok(())
        }
        fn restore(&self, id: u64) -> Result<(), String> {
            self.cut.lock().unwrap().retain(|&c| c != id);
            Ok(())
        }
    }

    /// A quarantined cgroup that goes away (removed, or its path reused by a new cgroup
    /// with another id) is forgotten and its network cut lifted; a live one stays.
    #[test]
    fn quarantines_of_cgroups_that_are_gone_are_forgotten() {
        let state = tempfile::tempdir().unwrap();
        let mount = tempfile::tempdir().unwrap();
        let net = FakeNet::default();
        let mut book = QuarantineBook::open(state.path());
        let mut quarantine = |name: &str| {
            let cg = mount.path().join(name);
            fs::create_dir(&cg).unwrap();
            fs::write(cg.join("cgroup.events"), "populated 0\nfrozen 1\n").unwrap();
            let id = fs::metadata(&cg).unwrap().ino();
            book.quarantine(
                mount.path(),
                &format!("/{name}"),
                id,
                "r",
                5,
                QuarantineMode::Freeze,
                &net,
                &[],
            )
            .expect("quarantined");
            (cg, id)
        };
        let (removed, removed_id) = quarantine("removed");
        let (reused, reused_id) = quarantine("reused");
        let (_live, live_id) = quarantine("live");
        assert!(book.forget_gone(mount.path(), &net).is_empty());

        fs::remove_dir_all(&removed).unwrap();
        // Another cgroup at the same path: the old directory moved aside (its inode still
        // taken) while the new one is made, so the new one cannot get the old number.
        let old = mount.path().join("reused-old");
        fs::rename(&reused, &old).unwrap();
        fs::create_dir(&reused).unwrap();
        fs::remove_dir_all(&old).unwrap();
        assert_ne!(fs::metadata(&reused).unwrap().ino(), reused_id);

        let forgotten: Vec<u64> = book
            .forget_gone(mount.path(), &net)
            .iter()
            .map(|q| q.cgroup_id)
            .collect();
        let mut expected = vec![removed_id, reused_id];
        expected.sort_unstable(); // the book lists by id
        assert_eq!(forgotten, expected);
        assert_eq!(*net.cut.lock().unwrap(), [live_id]);
        assert_eq!(book.list().len(), 1);
        assert_eq!(QuarantineBook::open(state.path()).list().len(), 1);
        let log = fs::read_to_string(state.path().join("quarantine/quarantine.jsonl")).unwrap();
        assert_eq!(log.matches("\"what\":\"gone\"").count(), 2, "{log}");
    }

    #[test]
    fn the_book_survives_a_restart_and_records_both_steps() {
        let state = tempfile::tempdir().unwrap();
        let mount = tempfile::tempdir().unwrap();
        // A fake cgroup directory: writes to its control files just land in files.
        let cg = mount.path().join("workload");
        fs::create_dir(&cg).unwrap();
        fs::write(cg.join("cgroup.procs"), format!("{}\n", std::process::id())).unwrap();
        fs::write(cg.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        let net = FakeNet::default();
        let mut book = QuarantineBook::open(state.path());
        let q = book
            .quarantine(
                mount.path(),
                "/workload",
                77,
                "r",
                5,
                QuarantineMode::Freeze,
                &net,
                &[],
            )
            .expect("quarantined");
        assert_eq!(*net.cut.lock().unwrap(), [77]);
        assert!(q.steps[0].starts_with("network cut"));
        assert!(
            q.steps.last().unwrap().starts_with("frozen"),
            "{:?}",
            q.steps
        );
        let snap = fs::read_to_string(q.snapshot.as_ref().unwrap()).unwrap();
        assert!(
            snap.contains(&format!("\"pid\": {}", std::process::id())),
            "{snap}"
        );
        assert!(snap.contains("exe_sha256"));
        assert_eq!(fs::read_to_string(cg.join("cgroup.freeze")).unwrap(), "1");

        let mut again = QuarantineBook::open(state.path());
        assert_eq!(again.list().len(), 1);
        assert!(again.release(mount.path(), "/nope", &net).is_err());
        let r = again
            .release(mount.path(), "77", &net)
            .expect("released by id");
        assert_eq!(r.steps, ["network restored", "thawed"]);
        assert!(net.cut.lock().unwrap().is_empty());
        assert_eq!(fs::read_to_string(cg.join("cgroup.freeze")).unwrap(), "0");
        let log = fs::read_to_string(state.path().join("quarantine/quarantine.jsonl")).unwrap();
        assert_eq!(log.lines().count(), 2);
        assert!(QuarantineBook::open(state.path()).list().is_empty());
    }
}
