//! Kernel records built the way the eBPF programs build them: the `rasp-common` fixed part
//! with every length and flag set as the kernel sets it, then the packed payload (paths
//! leaf first, each component NUL-terminated; argv NUL-separated with its trailing NUL;
//! query text without its NUL), and `header.size` the bytes actually sent.

use std::mem::{offset_of, size_of};

use rasp_common::limits::COMM_LEN;
use rasp_common::record::{
    self, ConnectRecord, EventKind, ExecRecord, ExitRecord, FileOpenRecord, ForkRecord,
    LibraryLoadRecord, RecordHeader, SqlQueryRecord, StdioFd, RECORD_VERSION, S_IFCHR,
};

/// Who a record is about: the header's identity fields.
#[derive(Clone, Copy, Debug)]
pub struct Task {
    pub pid: u32,
    pub ppid: u32,
    pub start_ns: u64,
    pub uid: u32,
    pub cgroup_id: u64,
    pub comm: &'static str,
}

impl Task {
    fn header(&self, kind: EventKind, ts_boot_ns: u64) -> RecordHeader {
        let mut comm = [0u8; COMM_LEN];
        let name = self.comm.as_bytes();
        let n = name.len().min(COMM_LEN - 1);
        comm[..n].copy_from_slice(&name[..n]);
        RecordHeader {
            kind: kind as u16,
            version: RECORD_VERSION,
            flags: 0,
            ts_boot_ns,
            tid: self.pid,
            pid: self.pid,
            ppid: self.ppid,
            uid: self.uid,
            gid: self.uid,
            euid: self.uid,
            egid: self.uid,
            size: 0,
            cgroup_id: self.cgroup_id,
            start_ns: self.start_ns,
            verdict: 0,
            verdict_rule: 0,
            cap_effective: 0,
            comm,
        }
    }
}

/// The fixed part's bytes, then each payload segment, with `header.size` patched to the
/// total: what `bpf_ringbuf_output` hands the agent.
fn sent<T: Copy>(fixed: &T, payload: &[&[u8]]) -> Vec<u8> {
    // SAFETY: T is one of rasp-common's repr(C) records (integers and byte arrays, explicit
    // padding), so all of its bytes are initialised; the slice lives only for this copy.
    let mut out =
        unsafe { std::slice::from_raw_parts(fixed as *const T as *const u8, size_of::<T>()) }
            .to_vec();
    for segment in payload {
        out.extend_from_slice(segment);
    }
    let size = (out.len() as u32).to_ne_bytes();
    let at = offset_of!(RecordHeader, size);
    out[at..at + 4].copy_from_slice(&size);
    out
}

/// "/usr/bin/git" → "git\0bin\0usr\0", as the kernel's dentry walk writes it.
pub fn leaf_first(path: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + 1);
    for component in path.split('/').rev().filter(|c| !c.is_empty()) {
        out.extend_from_slice(component.as_bytes());
        out.push(0);
    }
    out
}

pub fn exec(task: &Task, ts: u64, exe: &str, cwd: &str, argv: &[&str]) -> Vec<u8> {
    let exe = leaf_first(exe);
    let cwd = leaf_first(cwd);
    let mut filename = argv
        .first()
        .copied()
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    filename.push(0);
    let mut args = Vec::new();
    for arg in argv {
        args.extend_from_slice(arg.as_bytes());
        args.push(0);
    }
    let fixed = ExecRecord {
        header: task.header(EventKind::Exec, ts),
        flags: 0,
        argv_len: args.len() as u32,
        argv_total: args.len() as u32,
        filename_len: filename.len() as u32,
        exe_len: exe.len() as u32,
        cwd_len: cwd.len() as u32,
        // The initial namespaces' usual inode numbers, and a terminal on 0-2 (/dev/pts/0).
        pid_ns: 0xEFFF_FFFC,
        mnt_ns: 0xF000_0000,
        stdio: [StdioFd {
            ino: 3,
            rdev: 136 << 20,
            mode: S_IFCHR | 0o620,
            family: 0,
        }; 3],
    };
    // The kernel's packing order: exe, cwd, filename, argv.
    sent(&fixed, &[&exe, &cwd, &filename, &args])
}

/// `child` forked by the thread `child.ppid`.
pub fn fork(child: &Task, ts: u64) -> Vec<u8> {
    let fixed = ForkRecord {
        header: child.header(EventKind::Fork, ts),
        parent_tid: child.ppid,
        _pad: 0,
    };
    sent(&fixed, &[])
}

pub fn exit(task: &Task, ts: u64, wait_status: u32) -> Vec<u8> {
    let fixed = ExitRecord {
        header: task.header(EventKind::Exit, ts),
        exit_code: wait_status,
        _pad: 0,
    };
    sent(&fixed, &[])
}

/// A read-only `openat` that returned `fd`.
pub fn open_read(task: &Task, ts: u64, path: &str, fd: i32) -> Vec<u8> {
    let path = leaf_first(path);
    let fixed = FileOpenRecord {
        header: task.header(EventKind::FileOpen, ts),
        flags: record::FILE_OPEN_FLAGS_KNOWN,
        fd,
        f_flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u32,
        f_mode: record::FMODE_READ,
        open_flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u32,
        path_len: path.len() as u32,
    };
    sent(&fixed, &[&path])
}

/// An executable mapping of `path` through `fd`.
pub fn library_load(task: &Task, ts: u64, path: &str, fd: i32) -> Vec<u8> {
    let path = leaf_first(path);
    let fixed = LibraryLoadRecord {
        header: task.header(EventKind::LibraryLoad, ts),
        flags: 0,
        fd,
        prot: (libc::PROT_READ | libc::PROT_EXEC) as u32,
        path_len: path.len() as u32,
        dev: 0,
        _pad: 0,
        ino: 0,
    };
    sent(&fixed, &[&path])
}

pub fn connect_v4(task: &Task, ts: u64, addr: [u8; 4], port: u16, fd: i32) -> Vec<u8> {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&addr);
    let fixed = ConnectRecord {
        header: task.header(EventKind::Connect, ts),
        family: record::AF_INET,
        port,
        fd,
        addr: bytes,
    };
    sent(&fixed, &[])
}

/// A `PQsendQuery(conn, query)` seen by the libpq uprobe.
pub fn sql_query(task: &Task, ts: u64, conn: u64, query: &str) -> Vec<u8> {
    let fixed = SqlQueryRecord {
        header: task.header(EventKind::SqlQuery, ts),
        function: record::SQL_FN_SEND_QUERY,
        flags: 0,
        conn,
        query_len: query.len() as u32,
        _pad: 0,
    };
    sent(&fixed, &[query.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rasp_agent::events::{decode, BootClock, EventDetail};

    fn task() -> Task {
        Task {
            pid: 4242,
            ppid: 1,
            start_ns: 7_000,
            uid: 1000,
            cgroup_id: 55,
            comm: "git",
        }
    }

    #[test]
    fn the_agent_decodes_every_built_record_to_what_went_in() {
        let clock = BootClock::now();
        let ev = decode(
            &exec(&task(), 1, "/usr/bin/git", "/srv/app", &["git", "status"]),
            clock,
        )
        .expect("exec decodes");
        let EventDetail::Exec(d) = &ev.detail else {
            panic!("{ev:?}")
        };
        assert_eq!(d.exe.as_deref(), Some("/usr/bin/git"));
        assert_eq!(d.cwd.as_deref(), Some("/srv/app"));
        assert_eq!(d.argv, ["git", "status"]);
        assert_eq!(d.filename, "git");
        assert_eq!((ev.pid, ev.ppid, ev.comm.as_str()), (4242, 1, "git"));

        let ev = decode(&open_read(&task(), 2, "/etc/shadow", 3), clock).expect("open");
        let EventDetail::FileOpen(d) = &ev.detail else {
            panic!("{ev:?}")
        };
        assert_eq!(d.path.as_deref(), Some("/etc/shadow"));
        assert_eq!(d.access, rasp_agent::events::Access::READ);
        assert!(d.incomplete.is_empty());

        let ev = decode(&connect_v4(&task(), 3, [10, 1, 2, 3], 443, 5), clock).expect("conn");
        let EventDetail::Connect(d) = &ev.detail else {
            panic!("{ev:?}")
        };
        assert_eq!((d.addr.to_string().as_str(), d.port), ("10.1.2.3", 443));

        let ev = decode(&sql_query(&task(), 4, 9, "SELECT 1"), clock).expect("sql");
        let EventDetail::SqlQuery(d) = &ev.detail else {
            panic!("{ev:?}")
        };
        assert_eq!(
            (d.query.as_str(), d.function.name()),
            ("SELECT 1", "PQsendQuery")
        );

        for bytes in [
            fork(&task(), 5),
            exit(&task(), 6, 0),
            library_load(&task(), 7, "/usr/lib/libssl.so.3", 4),
        ] {
            decode(&bytes, clock).expect("decodes");
        }
    }

    #[test]
    fn paths_are_leaf_first() {
        assert_eq!(leaf_first("/usr/bin/git"), b"git\0bin\0usr\0");
        assert_eq!(leaf_first("/"), b"");
    }
}
