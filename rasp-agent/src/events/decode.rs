//! Raw ring-buffer records → `Event`. The only code that interprets record bytes: it checks
//! size, kind and version before reading, and turns the kernel's encodings (leaf-first path
//! components, NUL-separated argv, wait status) into plain values.

use std::time::{Duration, SystemTime};

use rasp_common::{
    record::{self, RECORD_VERSION},
    EventKind, ExecRecord, ExitRecord, ForkRecord, RecordHeader,
};

use super::{Event, EventDetail, ExecDetail, ExitDetail, ForkDetail};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {what} ({need} bytes)")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("record kind {0} is unknown to this agent")]
    UnknownKind(u16),
    #[error("record version {found} does not match the agent's {expected}: agent and eBPF object are from different builds")]
    Version { found: u16, expected: u16 },
}

/// Converts the kernel's CLOCK_BOOTTIME stamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    /// Realtime minus boottime at agent start, in ns.
    offset_ns: i128,
}

impl BootClock {
    pub fn now() -> Self {
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        BootClock {
            offset_ns: real - boot,
        }
    }

    #[cfg(test)]
    pub fn with_offset(offset_ns: i128) -> Self {
        BootClock { offset_ns }
    }

    pub fn to_system_time(self, boot_ns: u64) -> SystemTime {
        let real = boot_ns as i128 + self.offset_ns;
        if real <= 0 {
            SystemTime::UNIX_EPOCH
        } else {
            SystemTime::UNIX_EPOCH + Duration::from_nanos(real as u64)
        }
    }

    pub fn rfc3339(self, boot_ns: u64) -> String {
        humantime::format_rfc3339_nanos(self.to_system_time(boot_ns)).to_string()
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Copy a Pod record out of possibly unaligned bytes.
fn read_record<T: aya::Pod>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            what,
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked above; T is Pod (any bit pattern valid); unaligned read.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

/// Decode one ring-buffer record. `cgroup` is left `None`: the pipeline resolves it.
pub fn decode(bytes: &[u8], clock: BootClock) -> Result<Event, DecodeError> {
    let header: RecordHeader = read_record(bytes, "header")?;
    if header.version != RECORD_VERSION {
        return Err(DecodeError::Version {
            found: header.version,
            expected: RECORD_VERSION,
        });
    }
    let kind = EventKind::from_u16(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let detail = match kind {
        EventKind::Exec => {
            // ExecRecord is large: decode in place instead of copying it to the stack.
            exec_detail(bytes)?
        }
        EventKind::Fork => {
            let r: ForkRecord = read_record(bytes, "fork record")?;
            EventDetail::Fork(ForkDetail {
                parent_tid: r.parent_tid,
            })
        }
        EventKind::Exit => {
            let r: ExitRecord = read_record(bytes, "exit record")?;
            EventDetail::Exit(ExitDetail::from_wait_status(r.exit_code))
        }
    };
    Ok(Event {
        time: clock.rfc3339(header.ts_boot_ns),
        ts_boot_ns: header.ts_boot_ns,
        pid: header.pid,
        tid: header.tid,
        ppid: header.ppid,
        uid: header.uid,
        gid: header.gid,
        comm: c_string(&header.comm),
        cgroup_id: header.cgroup_id,
        cgroup: None,
        detail,
    })
}

fn exec_detail(bytes: &[u8]) -> Result<EventDetail, DecodeError> {
    let need = std::mem::size_of::<ExecRecord>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            what: "exec record",
            len: bytes.len(),
            need,
        });
    }
    let field = |offset: usize, len: usize| &bytes[offset..offset + len];
    let u32_at = |offset: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(field(offset, 4));
        u32::from_ne_bytes(b)
    };
    use std::mem::offset_of;
    let flags = u32_at(offset_of!(ExecRecord, flags));
    let argv_len = u32_at(offset_of!(ExecRecord, argv_len)) as usize;
    let filename_len = u32_at(offset_of!(ExecRecord, filename_len)) as usize;
    let exe_len = u32_at(offset_of!(ExecRecord, exe_len)) as usize;
    let cwd_len = u32_at(offset_of!(ExecRecord, cwd_len)) as usize;

    let argv = field(
        offset_of!(ExecRecord, argv),
        argv_len.min(rasp_common::limits::ARGV_CAP),
    );
    let filename = field(
        offset_of!(ExecRecord, filename),
        filename_len.min(rasp_common::limits::FILENAME_CAP),
    );
    let exe = field(
        offset_of!(ExecRecord, exe),
        exe_len.min(rasp_common::limits::PATH_CAP),
    );
    let cwd = field(
        offset_of!(ExecRecord, cwd),
        cwd_len.min(rasp_common::limits::PATH_CAP),
    );

    let mut incomplete = Vec::new();
    let mut note = |bit: u32, name: &str| {
        if flags & bit != 0 {
            incomplete.push(name.to_string());
        }
    };
    note(record::EXEC_ARGV_FAILED, "argv");
    note(record::EXEC_EXE_FAILED | record::EXEC_EXE_TRUNCATED, "exe");
    note(record::EXEC_CWD_FAILED | record::EXEC_CWD_TRUNCATED, "cwd");
    note(record::EXEC_FILENAME_FAILED, "filename");

    Ok(EventDetail::Exec(ExecDetail {
        exe: (flags & record::EXEC_EXE_FAILED == 0)
            .then(|| leaf_first_path(exe, flags & record::EXEC_EXE_TRUNCATED != 0)),
        filename: c_string(filename),
        argv: split_argv(argv),
        argv_truncated: flags & record::EXEC_ARGV_TRUNCATED != 0,
        cwd: (flags & record::EXEC_CWD_FAILED == 0)
            .then(|| leaf_first_path(cwd, flags & record::EXEC_CWD_TRUNCATED != 0)),
        incomplete,
    }))
}

/// Bytes up to the first NUL, lossily as UTF-8.
pub fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// NUL-separated argv (as in /proc/<pid>/cmdline) → arguments. A trailing NUL ends the
/// last argument; a block cut short keeps its partial last argument.
pub fn split_argv(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The kernel writes path components leaf first, each NUL-terminated ("dash\0bin\0usr\0").
/// A truncated walk did not reach the root: the result starts with "...".
pub fn leaf_first_path(bytes: &[u8], truncated: bool) -> String {
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == 0).filter(|p| !p.is_empty()).collect();
    parts.reverse();
    let mut path = String::with_capacity(bytes.len() + 4);
    if truncated {
        path.push_str("...");
    }
    for p in &parts {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(p));
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    fn header(kind: EventKind) -> RecordHeader {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"bash");
        RecordHeader {
            kind: kind as u16,
            version: RECORD_VERSION,
            flags: 0,
            ts_boot_ns: 5_000_000_000,
            tid: 42,
            pid: 42,
            ppid: 7,
            uid: 1000,
            gid: 100,
            _pad0: 0,
            cgroup_id: 99,
            comm,
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a repr(C) value's bytes.
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }.to_vec()
    }

    #[test]
    fn exit_record_decodes() {
        let r = ExitRecord {
            header: header(EventKind::Exit),
            exit_code: 3 << 8,
            _pad: 0,
        };
        let ev = decode(
            &bytes_of(&r),
            BootClock::with_offset(1_000_000_000_000_000_000),
        )
        .unwrap();
        assert_eq!(ev.pid, 42);
        assert_eq!(ev.ppid, 7);
        assert_eq!(ev.comm, "bash");
        assert_eq!(ev.time, "2001-09-09T01:46:45.000000000Z");
        assert_eq!(
            ev.detail,
            EventDetail::Exit(ExitDetail {
                exit_code: Some(3),
                signal: None,
                core_dumped: false
            })
        );
    }

    #[test]
    fn exec_record_decodes_paths_and_argv() {
        let mut buf = vec![0u8; size_of::<ExecRecord>()];
        let h = header(EventKind::Exec);
        buf[..size_of::<RecordHeader>()].copy_from_slice(&bytes_of(&h));
        let put = |buf: &mut Vec<u8>, off: usize, data: &[u8]| {
            buf[off..off + data.len()].copy_from_slice(data)
        };
        let argv = b"/bin/sh\0-c\0exit 7\0";
        let exe = b"dash\0bin\0usr\0";
        let cwd = b"";
        put(&mut buf, offset_of!(ExecRecord, argv), argv);
        put(&mut buf, offset_of!(ExecRecord, exe), exe);
        put(&mut buf, offset_of!(ExecRecord, filename), b"/bin/sh\0");
        put(
            &mut buf,
            offset_of!(ExecRecord, argv_len),
            &(argv.len() as u32).to_ne_bytes(),
        );
        put(
            &mut buf,
            offset_of!(ExecRecord, exe_len),
            &(exe.len() as u32).to_ne_bytes(),
        );
        put(
            &mut buf,
            offset_of!(ExecRecord, cwd_len),
            &(cwd.len() as u32).to_ne_bytes(),
        );
        put(
            &mut buf,
            offset_of!(ExecRecord, filename_len),
            &8u32.to_ne_bytes(),
        );
        let ev = decode(&buf, BootClock::now()).unwrap();
        let EventDetail::Exec(d) = ev.detail else {
            panic!("not exec")
        };
        assert_eq!(d.argv, ["/bin/sh", "-c", "exit 7"]);
        assert_eq!(d.exe.as_deref(), Some("/usr/bin/dash"));
        assert_eq!(d.cwd.as_deref(), Some("/"));
        assert_eq!(d.filename, "/bin/sh");
        assert!(!d.argv_truncated);
        assert!(d.incomplete.is_empty());
    }

    #[test]
    fn short_unknown_and_foreign_records_are_errors() {
        assert!(matches!(
            decode(&[0u8; 10], BootClock::now()),
            Err(DecodeError::Short { .. })
        ));
        let mut h = header(EventKind::Exit);
        h.kind = 77;
        assert_eq!(
            decode(&bytes_of(&h), BootClock::now()),
            Err(DecodeError::UnknownKind(77))
        );
        let mut h = header(EventKind::Exit);
        h.version = RECORD_VERSION + 1;
        assert!(matches!(
            decode(&bytes_of(&h), BootClock::now()),
            Err(DecodeError::Version { .. })
        ));
        // A header alone is too short for an exec record.
        let h = header(EventKind::Exec);
        assert!(matches!(
            decode(&bytes_of(&h), BootClock::now()),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn argv_and_path_edge_cases() {
        assert!(split_argv(b"").is_empty());
        assert_eq!(split_argv(b"a\0\0b\0"), ["a", "", "b"]);
        assert_eq!(split_argv(b"a\0partia"), ["a", "partia"]);
        assert_eq!(leaf_first_path(b"", false), "/");
        assert_eq!(leaf_first_path(b"c\0b\0", true), ".../b/c");
    }
}
