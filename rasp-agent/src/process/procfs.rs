//! Reading processes that already exist from /proc, to seed the table at start (events only
//! tell us about what happens after the programs attach).

use std::{fs, path::Path};

use super::Process;

/// One process from `<proc>/<pid>`; `None` if it vanished while we read it.
pub fn read_process(proc: &Path, pid: u32) -> Option<Process> {
    let dir = proc.join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let stat = parse_stat(&stat)?;
    let status = fs::read_to_string(dir.join("status")).ok()?;
    let (uid, gid) = parse_status_ids(&status);
    let argv = fs::read(dir.join("cmdline"))
        .map(|b| crate::events::Argv::from_nul_separated(&b))
        .unwrap_or_default();
    let link = |name: &str| {
        fs::read_link(dir.join(name))
            .ok()
            .map(|p| crate::events::Text::from(p.to_string_lossy()))
    };
    Some(Process {
        pid,
        ppid: stat.ppid,
        comm: crate::events::Comm::new(&stat.comm),
        exe: link("exe"),
        argv,
        argv_truncated: false,
        cwd: link("cwd"),
        uid,
        gid,
        pid_ns: super::namespaces::inode(&dir, "pid"),
        mnt_ns: super::namespaces::inode(&dir, "mnt"),
        cgroup_id: 0,
        cgroup: super::cgroup::proc_cgroup_path(proc, pid).map(Into::into),
        start_boot_ns: Some(ticks_to_ns(stat.start_ticks)),
        // /proc has the start in ticks only; the kernel's records carry nanoseconds, so a
        // seeded process's start stays unknown rather than never matching.
        euid: None,
        egid: None,
        start_ns: 0,
        exited: None,
        from_proc: true,
        exited_at: None,
    })
}

/// Every numeric entry of `<proc>`.
pub fn list_pids(proc: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(proc) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

pub struct Stat {
    pub comm: String,
    pub ppid: u32,
    pub start_ticks: u64,
}

/// `/proc/<pid>/stat`: "pid (comm) state ppid ..."; comm may itself contain ") ", so split
/// at the last ')'. Field 22 is the start time in clock ticks since boot.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let ppid = rest.get(1)?.parse().ok()?;
    let start_ticks = rest.get(19)?.parse().ok()?;
    Some(Stat {
        comm,
        ppid,
        start_ticks,
    })
}

/// Real uid and gid from `/proc/<pid>/status` (what `bpf_get_current_uid_gid` reports).
pub fn parse_status_ids(text: &str) -> (u32, u32) {
    let first = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX)
    };
    (first("Uid:"), first("Gid:"))
}

/// When `pid` started, CLOCK_BOOTTIME ns (clock-tick granularity).
pub fn start_boot_ns(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ticks_to_ns(parse_stat(&stat)?.start_ticks))
}

fn ticks_to_ns(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000_000) / clock_ticks()
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm() {
        let s =
            "1234 (a) b (c)) S 77 1234 1234 0 -1 4194304 100 0 0 0 1 2 0 0 20 0 1 0 5555 1000 100";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.comm, "a) b (c)");
        assert_eq!(st.ppid, 77);
        assert_eq!(st.start_ticks, 5555);
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S").is_none());
    }

    #[test]
    fn status_ids() {
        let s = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
        assert_eq!(parse_status_ids(s), (1000, 100));
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let p = read_process(Path::new("/proc"), me).expect("own /proc entry");
        assert_eq!(p.pid, me);
        assert_eq!(p.ppid, std::os::unix::process::parent_id());
        assert_eq!(
            p.exe.as_deref(),
            std::env::current_exe()
                .ok()
                .as_deref()
                .and_then(|p| p.to_str())
        );
        assert!(!p.argv.is_empty());
        assert!(list_pids(Path::new("/proc")).contains(&me));
    }
}
