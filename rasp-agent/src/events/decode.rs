//! Raw ring-buffer records → `Event`. The only code that interprets record bytes: it checks
//! size, kind and version before reading, and turns the kernel's encodings (leaf-first path
//! components, NUL-separated argv, wait status, file modes, socket addresses) into plain
//! values.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use rasp_common::record::{SqlQueryRecord, TlsRecord};
use rasp_common::{
    limits::{
        ARGV_CAP, FILENAME_CAP, FSTYPE_CAP, MODULE_NAME_CAP, MOUNT_SOURCE_CAP, NAME_CAP, PATH_CAP,
        SQL_QUERY_CAP, SUN_PATH_CAP, TLS_CHUNK, XATTR_NAME_CAP,
    },
    record::{
        self, BpfLoadRecord, FileChangeRecord, IoUringRecord, KernelModuleRecord, MountRecord,
        NamespaceRecord, PtraceRecord, SocketRecord, UnixConnectRecord, RECORD_VERSION,
    },
    ConnectRecord, EventKind, ExecRecord, ExitRecord, FileOpenRecord, ForkRecord,
    LibraryLoadRecord, RecordHeader,
};

use super::{
    hooks::{self, ChangeOp, ModuleOp, MountOp, NsOp, PtraceOp, SocketDetail, SocketOp, Volatile},
    Access, Argv, BpfLoadDetail, Comm, ConnectDetail, Event, EventDetail, ExecDetail, ExitDetail,
    Family, FdKind, FileChangeDetail, FileOpenDetail, ForkDetail, IoUringDetail, KernelAction,
    KernelModuleDetail, KernelVerdict, LibraryLoadDetail, MountDetail, NamespaceDetail, Plaintext,
    PtraceDetail, SqlFunction, SqlQueryDetail, StdioFd, TlsDetail, UnixConnectDetail, WallTime,
};

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
    #[error("{what} {value} in a record is impossible: agent and eBPF object disagree")]
    Invalid { what: &'static str, value: u64 },
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

    /// The wall-clock time of a CLOCK_BOOTTIME stamp (an integer: formatted at the edge).
    pub fn wall(self, boot_ns: u64) -> WallTime {
        let real = boot_ns as i128 + self.offset_ns;
        WallTime(real.clamp(0, u64::MAX as i128) as u64)
    }

    /// CLOCK_BOOTTIME now, in ns: what the kernel stamps events with.
    pub fn boot_now_ns() -> u64 {
        clock_ns(libc::CLOCK_BOOTTIME) as u64
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

/// A record's payload: the bytes after its fixed part, handed out in the order the kernel
/// packed them, each segment checked against what is left.
struct Payload<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Payload<'a> {
    fn after<T>(bytes: &'a [u8], what: &'static str) -> Self {
        Payload {
            rest: bytes.get(std::mem::size_of::<T>()..).unwrap_or(&[]),
            what,
        }
    }

    /// The next `len` bytes, capped at `cap` (a length the kernel cannot produce is an
    /// error, not a longer read).
    fn take(&mut self, len: u32, cap: usize) -> Result<&'a [u8], DecodeError> {
        let len = len as usize;
        if len > cap {
            return Err(DecodeError::Invalid {
                what: self.what,
                value: len as u64,
            });
        }
        if len > self.rest.len() {
            return Err(DecodeError::Short {
                what: self.what,
                len: self.rest.len(),
                need: len,
            });
        }
        let (field, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(field)
    }
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
    // The ring hands back exactly the bytes sent; the header says how many that was.
    let bytes = bytes
        .get(..header.size as usize)
        .ok_or(DecodeError::Short {
            what: "record (header.size)",
            len: bytes.len(),
            need: header.size as usize,
        })?;
    let kind = EventKind::from_u16(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let detail = match kind {
        EventKind::Exec => exec_detail(bytes)?,
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
        EventKind::FileOpen => {
            let r: FileOpenRecord = read_record(bytes, "file open record")?;
            let path = Payload::after::<FileOpenRecord>(bytes, "file open path")
                .take(r.path_len, PATH_CAP)?;
            EventDetail::FileOpen(file_open_detail(&r, path))
        }
        EventKind::LibraryLoad => {
            let r: LibraryLoadRecord = read_record(bytes, "library load record")?;
            let path = Payload::after::<LibraryLoadRecord>(bytes, "library load path")
                .take(r.path_len, PATH_CAP)?;
            let failed = r.flags & record::LIB_PATH_FAILED != 0;
            let truncated = r.flags & record::LIB_PATH_TRUNCATED != 0;
            EventDetail::LibraryLoad(LibraryLoadDetail {
                path: record_path(path, failed, truncated),
                incomplete: if failed || truncated {
                    vec!["path".into()]
                } else {
                    Vec::new()
                },
                dev: r.dev,
                ino: r.ino,
                new_file: r.flags & record::LIB_FILE_NEW != 0,
            })
        }
        EventKind::Connect => {
            let r: ConnectRecord = read_record(bytes, "connect record")?;
            EventDetail::Connect(connect_detail(&r)?)
        }
        EventKind::SqlQuery => {
            let r: SqlQueryRecord = read_record(bytes, "sql query record")?;
            let query = Payload::after::<SqlQueryRecord>(bytes, "sql query text")
                .take(r.query_len, SQL_QUERY_CAP)?;
            let function = match r.function {
                record::SQL_FN_SEND_QUERY => SqlFunction::SendQuery,
                record::SQL_FN_SEND_QUERY_PARAMS => SqlFunction::SendQueryParams,
                record::SQL_FN_SEND_PREPARE => SqlFunction::SendPrepare,
                other => {
                    return Err(DecodeError::Invalid {
                        what: "libpq function",
                        value: other.into(),
                    })
                }
            };
            EventDetail::SqlQuery(SqlQueryDetail {
                truncated: r.flags & record::SQL_QUERY_TRUNCATED != 0,
                unreadable: r.flags & record::SQL_QUERY_FAILED != 0,
                held: r.flags & record::SQL_QUERY_HELD != 0,
                ..SqlQueryDetail::sent(
                    function,
                    r.conn,
                    String::from_utf8_lossy(query).into_owned(),
                )
            })
        }
        EventKind::FileChange => file_change_detail(bytes)?,
        EventKind::Ptrace => {
            let r: PtraceRecord = read_record(bytes, "ptrace record")?;
            let operation = PtraceOp::from_request(r.request).ok_or(DecodeError::Invalid {
                what: "ptrace request",
                value: r.request.into(),
            })?;
            EventDetail::Ptrace(PtraceDetail {
                operation,
                target_pid: r.target,
                addr: Volatile(r.addr),
                target: None,
            })
        }
        EventKind::Namespace => namespace_detail(bytes)?,
        EventKind::Mount => mount_detail(bytes)?,
        EventKind::UnixConnect => {
            let r: UnixConnectRecord = read_record(bytes, "unix connect record")?;
            let mut p = Payload::after::<UnixConnectRecord>(bytes, "unix connect payload");
            let path = p.take(r.path_len, SUN_PATH_CAP)?;
            let dir = p.take(r.dir_len, PATH_CAP)?;
            let failed = r.flags & (record::UNIX_PATH_FAILED | record::UNIX_DIR_FAILED) != 0;
            let dir = (!dir.is_empty()).then(|| leaf_first_path(dir, false));
            EventDetail::UnixConnect(UnixConnectDetail {
                path: (!failed).then(|| join_location(dir.as_deref(), &c_string(path), false)),
                fd: r.fd,
                incomplete: incomplete(&[(failed, "path")]),
            })
        }
        EventKind::KernelModule => {
            let r: KernelModuleRecord = read_record(bytes, "kernel module record")?;
            let name = Payload::after::<KernelModuleRecord>(bytes, "kernel module payload")
                .take(r.name_len, PATH_CAP.max(MODULE_NAME_CAP))?;
            let failed = r.flags & record::MODULE_NAME_FAILED != 0;
            let truncated = r.flags & record::MODULE_NAME_TRUNCATED != 0;
            let (operation, path, module) = match r.op {
                record::MODULE_OP_INIT => (ModuleOp::Load, None, None),
                record::MODULE_OP_FINIT => (
                    ModuleOp::LoadFile,
                    (!failed).then(|| leaf_first_path(name, truncated)),
                    None,
                ),
                record::MODULE_OP_DELETE => {
                    (ModuleOp::Unload, None, (!failed).then(|| c_string(name)))
                }
                other => {
                    return Err(DecodeError::Invalid {
                        what: "module operation",
                        value: other.into(),
                    })
                }
            };
            EventDetail::KernelModule(KernelModuleDetail {
                operation,
                path,
                name: module,
                incomplete: incomplete(&[(failed || truncated, "path")]),
            })
        }
        EventKind::BpfLoad => {
            let r: BpfLoadRecord = read_record(bytes, "bpf load record")?;
            EventDetail::BpfLoad(BpfLoadDetail {
                prog_type: hooks::BPF_PROG_TYPES
                    .get(r.prog_type as usize)
                    .map_or_else(|| r.prog_type.to_string(), |n| n.to_string()),
                prog_name: c_string(&r.prog_name),
                insn_cnt: r.insn_cnt,
                incomplete: incomplete(&[(r.flags & record::BPF_LOAD_ATTR_FAILED != 0, "attr")]),
            })
        }
        EventKind::Socket => {
            let r: SocketRecord = read_record(bytes, "socket record")?;
            let packet = record::socket_class(r.family, r.sock_type)
                == rasp_common::interest::SOCKET_CLASS_PACKET;
            EventDetail::Socket(SocketDetail {
                operation: if packet {
                    SocketOp::Packet
                } else {
                    SocketOp::Raw
                },
                family: hooks::socket_family_name(r.family),
                sock_type: hooks::socket_type_name(r.sock_type),
                // An Ethernet protocol goes in network byte order (htons(ETH_P_ALL)).
                protocol: if r.family == record::AF_PACKET {
                    u32::from(u16::from_be(r.protocol as u16))
                } else {
                    r.protocol
                },
                fd: r.fd,
            })
        }
        EventKind::IoUring => {
            let r: IoUringRecord = read_record(bytes, "io_uring record")?;
            EventDetail::IoUring(IoUringDetail {
                operation: hooks::io_uring_op_name(r.opcode)
                    .map_or_else(|| r.opcode.to_string(), str::to_string),
                opcode: r.opcode,
                sq_thread: r.sq_thread != 0,
                user_data: Volatile(r.user_data),
            })
        }
        EventKind::Tls => EventDetail::Tls(tls_detail(bytes)?),
    };
    let creds_known = header.flags & record::HEADER_CREDS_UNKNOWN == 0;
    Ok(Event {
        time: clock.wall(header.ts_boot_ns),
        ts_boot_ns: header.ts_boot_ns,
        pid: header.pid,
        tid: header.tid,
        ppid: header.ppid,
        uid: header.uid,
        gid: header.gid,
        euid: creds_known.then_some(header.euid),
        egid: creds_known.then_some(header.egid),
        cap_effective: creds_known.then_some(header.cap_effective),
        start_ns: header.start_ns,
        comm: Comm::from_kernel(&header.comm),
        cgroup_id: header.cgroup_id,
        cgroup: None,
        verdict: match header.verdict {
            0 => None,
            v => Some(KernelVerdict {
                action: KernelAction::from_kernel(v).ok_or(DecodeError::Invalid {
                    what: "kernel verdict",
                    value: v.into(),
                })?,
                rule_slot: header.verdict_rule,
            }),
        },
        container: None,
        detail,
    })
}

fn tls_detail(bytes: &[u8]) -> Result<TlsDetail, DecodeError> {
    let r: TlsRecord = read_record(bytes, "tls record")?;
    let data = Payload::after::<TlsRecord>(bytes, "tls plaintext").take(r.data_len, TLS_CHUNK)?;
    let flags = r.flags;
    Ok(TlsDetail {
        direction: if flags & record::TLS_OUTBOUND != 0 {
            super::Direction::Outbound
        } else {
            super::Direction::Inbound
        },
        ssl: r.ssl,
        conn: r.conn_id,
        fd: (r.fd >= 0).then_some(r.fd),
        endpoints: Default::default(),
        offset: r.offset,
        call_len: r.call_len,
        captured: data.len(),
        plaintext: Plaintext::new(data),
        truncated: flags & record::TLS_TRUNCATED != 0,
        unreadable: flags & record::TLS_READ_FAILED != 0,
        closed: flags & record::TLS_CLOSED != 0,
        gap_uncounted: flags & record::TLS_GAP_UNCOUNTED != 0,
        analyzed: false,
        findings: Vec::new(),
    })
}

fn exec_detail(bytes: &[u8]) -> Result<EventDetail, DecodeError> {
    let r: ExecRecord = read_record(bytes, "exec record")?;
    let flags = r.flags;
    let mut payload = Payload::after::<ExecRecord>(bytes, "exec payload");
    // The kernel's packing order: exe, cwd, filename, argv.
    let exe = payload.take(r.exe_len, PATH_CAP)?;
    let cwd = payload.take(r.cwd_len, PATH_CAP)?;
    let filename = payload.take(r.filename_len, FILENAME_CAP)?;
    let argv = payload.take(r.argv_len, ARGV_CAP)?;

    let mut incomplete = Vec::new();
    let refused = flags & record::EXEC_REFUSED != 0;
    let mut note = |bit: u32, name: &str| {
        if flags & bit != 0 {
            incomplete.push(name.to_string());
        }
    };
    if !refused {
        // A refused exec's argv was never there to read.
        note(record::EXEC_ARGV_FAILED, "argv");
    }
    note(record::EXEC_EXE_FAILED | record::EXEC_EXE_TRUNCATED, "exe");
    note(record::EXEC_CWD_FAILED | record::EXEC_CWD_TRUNCATED, "cwd");
    note(record::EXEC_FILENAME_FAILED, "filename");

    let stdio = (flags & record::EXEC_STDIO_FAILED == 0).then(|| {
        r.stdio.map(|fd| StdioFd {
            kind: FdKind::of(fd.mode, fd.family, fd.rdev),
            ino: fd.ino,
        })
    });
    let ns_known = flags & record::EXEC_NS_FAILED == 0;
    Ok(EventDetail::Exec(ExecDetail {
        exe: (flags & record::EXEC_EXE_FAILED == 0)
            .then(|| leaf_first_path(exe, flags & record::EXEC_EXE_TRUNCATED != 0).into()),
        filename: c_string(filename),
        argv: Argv::from_nul_separated(argv),
        argv_truncated: flags & record::EXEC_ARGV_TRUNCATED != 0,
        // A cwd no rule needs is not walked: none, not "unreadable".
        cwd: (flags & (record::EXEC_CWD_FAILED | record::EXEC_CWD_SKIPPED) == 0)
            .then(|| leaf_first_path(cwd, flags & record::EXEC_CWD_TRUNCATED != 0).into()),
        refused,
        incomplete,
        stdio,
        pid_ns: ns_known.then_some(r.pid_ns),
        mnt_ns: ns_known.then_some(r.mnt_ns),
        stdin_peer: None,
        substituted_from: None,
        built_by: None,
        exe_new: flags & record::EXEC_EXE_NEW != 0,
    }))
}

/// The names of the fields whose flag is set.
fn incomplete(fields: &[(bool, &str)]) -> Vec<String> {
    fields
        .iter()
        .filter(|(bad, _)| *bad)
        .map(|(_, name)| name.to_string())
        .collect()
}

fn file_change_detail(bytes: &[u8]) -> Result<EventDetail, DecodeError> {
    let r: FileChangeRecord = read_record(bytes, "file change record")?;
    let operation = ChangeOp::from_kernel(r.op).ok_or(DecodeError::Invalid {
        what: "file change operation",
        value: r.op.into(),
    })?;
    let f = r.flags;
    let mut p = Payload::after::<FileChangeRecord>(bytes, "file change payload");
    // The kernel's packing order: name, name2, extra, dir, dir2.
    let name1 = p.take(r.name_len, NAME_CAP)?;
    let name2 = p.take(r.name2_len, NAME_CAP)?;
    let extra = p.take(r.extra_len, XATTR_NAME_CAP)?;
    let dir1 = p.take(r.dir_len, PATH_CAP)?;
    let dir2 = p.take(r.dir2_len, PATH_CAP)?;
    let dir = |bytes: &[u8], truncated: bool| {
        (!bytes.is_empty()).then(|| leaf_first_path(bytes, truncated))
    };
    let dir1 = dir(dir1, f & record::CHANGE_DIR_TRUNCATED != 0);
    let dir2 = dir(dir2, f & record::CHANGE_DIR2_TRUNCATED != 0);
    let fd_file = f & record::CHANGE_FD_FILE != 0;
    let failed1 = f & record::CHANGE_NAME_FAILED != 0;
    let path = if fd_file {
        dir1.clone()
    } else if failed1 || name1.is_empty() {
        None
    } else {
        Some(join_location(dir1.as_deref(), &c_string(name1), false))
    };
    let failed2 = f & record::CHANGE_NAME2_FAILED != 0;
    let new_path = (!failed2 && !name2.is_empty())
        .then(|| join_location(dir2.as_deref(), &c_string(name2), false));
    let extra_failed = f & record::CHANGE_EXTRA_FAILED != 0;
    let extra = (!extra_failed && !extra.is_empty()).then(|| c_string(extra));
    let op = operation;
    let truncated1 = f & (record::CHANGE_NAME_TRUNCATED | record::CHANGE_DIR_TRUNCATED) != 0;
    let truncated2 = f & (record::CHANGE_NAME2_TRUNCATED | record::CHANGE_DIR2_TRUNCATED) != 0;
    Ok(EventDetail::FileChange(FileChangeDetail {
        operation,
        path,
        new_path,
        mode: (op == ChangeOp::Chmod).then_some(r.mode),
        xattr: if op == ChangeOp::Setxattr {
            extra.clone()
        } else {
            None
        },
        target: if op == ChangeOp::Symlink { extra } else { None },
        length: (op == ChangeOp::Truncate).then_some(r.value),
        mtime: (op == ChangeOp::Utimes).then_some(r.value as i64),
        incomplete: incomplete(&[
            (failed1 || truncated1, "path"),
            (failed2 || truncated2, "new_path"),
            (extra_failed, "extra"),
        ]),
    }))
}

fn namespace_detail(bytes: &[u8]) -> Result<EventDetail, DecodeError> {
    let r: NamespaceRecord = read_record(bytes, "namespace record")?;
    let name =
        Payload::after::<NamespaceRecord>(bytes, "namespace file").take(r.name_len, PATH_CAP)?;
    let operation = match r.op {
        record::NS_OP_SETNS => NsOp::Setns,
        record::NS_OP_UNSHARE => NsOp::Unshare,
        other => {
            return Err(DecodeError::Invalid {
                what: "namespace operation",
                value: other.into(),
            })
        }
    };
    let failed = r.rflags & record::NS_NAME_FAILED != 0;
    // The nsfs file's name, `mnt:[4026531841]` (the walk stops at the internal mount's
    // root, so the path is the name under a `/`).
    let target = (operation == NsOp::Setns && !failed && !name.is_empty()).then(|| {
        leaf_first_path(name, false)
            .trim_start_matches('/')
            .to_string()
    });
    let mut namespaces: Vec<String> = hooks::namespace_names(r.flags)
        .into_iter()
        .map(String::from)
        .collect();
    if namespaces.is_empty() {
        // setns with nstype 0: the file says which (`pid_for_children` is the pid one).
        if let Some(kind) = target.as_deref().and_then(|t| t.split(':').next()) {
            let kind = kind.trim_end_matches("_for_children");
            if hooks::NAMESPACES.iter().any(|(n, _)| *n == kind) {
                namespaces.push(kind.to_string());
            }
        }
    }
    Ok(EventDetail::Namespace(NamespaceDetail {
        operation,
        namespaces,
        target,
        target_ns: (operation == NsOp::Setns && r.target_ino != 0).then_some(r.target_ino),
        into_host: None,
        incomplete: incomplete(&[
            (failed && operation == NsOp::Setns, "target"),
            (r.rflags & record::NS_CALLER_FAILED != 0, "caller"),
        ]),
    }))
}

fn mount_detail(bytes: &[u8]) -> Result<EventDetail, DecodeError> {
    let r: MountRecord = read_record(bytes, "mount record")?;
    let mut p = Payload::after::<MountRecord>(bytes, "mount payload");
    let source = p.take(r.source_len, MOUNT_SOURCE_CAP)?;
    let target = p.take(r.target_len, NAME_CAP)?;
    let fstype = p.take(r.fstype_len, FSTYPE_CAP)?;
    let dir = p.take(r.dir_len, PATH_CAP)?;
    let operation = match r.op {
        record::MOUNT_OP_MOUNT => MountOp::Mount,
        record::MOUNT_OP_FSOPEN => MountOp::Fsopen,
        other => {
            return Err(DecodeError::Invalid {
                what: "mount operation",
                value: other.into(),
            })
        }
    };
    let text = |b: &[u8]| (!b.is_empty()).then(|| c_string(b));
    let dir = (!dir.is_empty())
        .then(|| leaf_first_path(dir, r.rflags & record::MOUNT_TARGET_TRUNCATED != 0));
    Ok(EventDetail::Mount(MountDetail {
        operation,
        source: text(source),
        target: text(target).map(|t| join_location(dir.as_deref(), &t, false)),
        fstype: text(fstype),
        flags: r.flags,
        incomplete: incomplete(&[
            (r.rflags & record::MOUNT_SOURCE_FAILED != 0, "source"),
            (
                r.rflags & (record::MOUNT_TARGET_FAILED | record::MOUNT_TARGET_TRUNCATED) != 0,
                "target",
            ),
            (r.rflags & record::MOUNT_FSTYPE_FAILED != 0, "fstype"),
        ]),
    }))
}

/// A name as a syscall's caller passed it, made absolute: joined to `dir` (the directory
/// it was relative to) when it is relative, with `.` and `..` resolved by name (the
/// kernel resolved them through the dentries; a symlinked directory can differ).
pub fn join_location(dir: Option<&str>, name: &str, fd_file: bool) -> String {
    if fd_file {
        return dir.unwrap_or("/").to_string();
    }
    let joined;
    let full = if name.starts_with('/') {
        name
    } else {
        joined = format!("{}/{name}", dir.unwrap_or(""));
        &joined
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in full.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return "/".to_string();
    }
    let mut out = String::with_capacity(full.len());
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    out
}

/// A leaf-first path buffer and its flags → the path, `None` when the kernel could not read it.
fn record_path(buf: &[u8], failed: bool, truncated: bool) -> Option<String> {
    (!failed).then(|| leaf_first_path(buf, truncated))
}

fn file_open_detail(r: &FileOpenRecord, path: &[u8]) -> FileOpenDetail {
    let failed = r.flags & record::FILE_PATH_FAILED != 0;
    let truncated = r.flags & record::FILE_PATH_TRUNCATED != 0;
    let flags = (r.flags & record::FILE_OPEN_FLAGS_KNOWN != 0).then_some(r.open_flags);
    let mut access = Access::empty();
    let mut grant = |yes: bool, a: Access| {
        if yes {
            access = access | a;
        }
    };
    let write = r.f_mode & record::FMODE_WRITE != 0;
    grant(r.f_mode & record::FMODE_READ != 0, Access::READ);
    grant(write, Access::WRITE);
    grant(r.f_mode & record::FMODE_CREATED != 0, Access::CREATE);
    // O_TRUNC without write access is ignored by the kernel (and undefined by POSIX).
    grant(
        write && flags.is_some_and(|f| f & libc::O_TRUNC as u32 != 0),
        Access::TRUNCATE,
    );
    let mut incomplete = Vec::new();
    if failed || truncated {
        incomplete.push("path".to_string());
    }
    if flags.is_none() {
        incomplete.push("flags".to_string());
    }
    FileOpenDetail {
        path: record_path(path, failed, truncated),
        fd: r.fd,
        flags,
        file_flags: r.f_flags,
        access,
        incomplete,
    }
}

fn connect_detail(r: &ConnectRecord) -> Result<ConnectDetail, DecodeError> {
    let (family, addr) = match r.family {
        record::AF_INET => {
            let [a, b, c, d, ..] = r.addr;
            (Family::Inet, Ipv4Addr::new(a, b, c, d).into())
        }
        record::AF_INET6 => (Family::Inet6, Ipv6Addr::from(r.addr).into()),
        other => {
            return Err(DecodeError::Invalid {
                what: "connect address family",
                value: other.into(),
            })
        }
    };
    Ok(ConnectDetail {
        family,
        addr,
        port: r.port,
        fd: r.fd,
    })
}

/// Bytes up to the first NUL, lossily as UTF-8.
pub fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The kernel writes path components leaf first, each NUL-terminated ("dash\0bin\0usr\0").
/// A path too long for the record keeps its top components after a gap (an empty
/// component): "leaf\0b\0\0x\0tmp\0" is "/tmp/x/…/b/leaf", so `/tmp/**` still matches. The
/// gap is one "…" (U+2026), not "...": a dot-leading component would read as a hidden
/// directory to patterns like `/tmp/**/.*`. A truncated walk that could not reach the root at
/// all starts with "...".
pub fn leaf_first_path(bytes: &[u8], truncated: bool) -> String {
    // One allocation, components taken from the end: no list of parts, and no copy through
    // a lossy conversion when the name is valid UTF-8 (nearly always). The bytes end with
    // the last component's NUL; an empty component before it is the gap.
    let body = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    let gap = !body.is_empty() && body.split(|&b| b == 0).any(<[u8]>::is_empty);
    let mut path = String::with_capacity(bytes.len() + 4);
    if truncated && !gap {
        path.push_str("...");
    }
    if !body.is_empty() {
        for p in body.rsplit(|&b| b == 0) {
            path.push('/');
            if p.is_empty() {
                path.push('…');
            } else {
                match std::str::from_utf8(p) {
                    Ok(s) => path.push_str(s),
                    Err(_) => path.push_str(&String::from_utf8_lossy(p)),
                }
            }
        }
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
            euid: 0,
            egid: 100,
            size: 0,
            cgroup_id: 99,
            start_ns: 123_456,
            cap_effective: 0,
            comm,
            verdict: 0,
            verdict_rule: 0,
        }
    }

    /// A record as the kernel sends it: the fixed part, then the payload segments, with
    /// `header.size` set to the total (the header is every record's first member).
    fn sent<T>(fixed: &T, payload: &[&[u8]]) -> Vec<u8> {
        // SAFETY: test-only view of a repr(C) value's bytes.
        let mut out =
            unsafe { std::slice::from_raw_parts(fixed as *const T as *const u8, size_of::<T>()) }
                .to_vec();
        for p in payload {
            out.extend_from_slice(p);
        }
        let size = (out.len() as u32).to_ne_bytes();
        let at = offset_of!(RecordHeader, size);
        out[at..at + 4].copy_from_slice(&size);
        out
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        sent(v, &[])
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
        assert_eq!(ev.time.to_string(), "2001-09-09T01:46:45.000000000Z");
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
        let argv: &[u8] = b"/bin/sh\0-c\0exit 7\0";
        let exe: &[u8] = b"dash\0bin\0usr\0";
        let cwd: &[u8] = b"";
        let filename: &[u8] = b"/bin/sh\0";
        let r = ExecRecord {
            header: header(EventKind::Exec),
            flags: 0,
            argv_len: argv.len() as u32,
            argv_total: argv.len() as u32,
            filename_len: filename.len() as u32,
            exe_len: exe.len() as u32,
            cwd_len: cwd.len() as u32,
            pid_ns: 4026531836,
            mnt_ns: 4026531841,
            stdio: [record::StdioFd {
                ino: 77,
                rdev: 0,
                mode: record::S_IFIFO | 0o600,
                family: 0,
            }; 3],
        };
        let buf = sent(&r, &[exe, cwd, filename, argv]);
        let ev = decode(&buf, BootClock::now()).unwrap();
        assert_eq!(ev.start_ns, 123_456);
        assert_eq!((ev.euid, ev.egid), (Some(0), Some(100)));
        let EventDetail::Exec(d) = ev.detail else {
            panic!("not exec")
        };
        assert_eq!(d.argv, ["/bin/sh", "-c", "exit 7"]);
        assert_eq!(d.exe.as_deref(), Some("/usr/bin/dash"));
        assert_eq!(d.cwd.as_deref(), Some("/"));
        assert_eq!(d.filename, "/bin/sh");
        assert!(!d.argv_truncated);
        assert!(d.incomplete.is_empty());

        // Lengths that claim more than was sent, or more than the kernel can produce, are
        // errors, never reads past the record.
        let short = &buf[..buf.len() - 1];
        let mut cut = short.to_vec();
        let at = offset_of!(RecordHeader, size);
        cut[at..at + 4].copy_from_slice(&(short.len() as u32).to_ne_bytes());
        assert!(matches!(
            decode(&cut, BootClock::now()),
            Err(DecodeError::Short { .. })
        ));
        assert!(matches!(
            decode(short, BootClock::now()),
            Err(DecodeError::Short { .. })
        ));
        let huge = ExecRecord {
            argv_len: u32::MAX,
            ..r
        };
        assert!(matches!(
            decode(&sent(&huge, &[exe, cwd, filename, argv]), BootClock::now()),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn file_open_record_decodes_access_and_flags() {
        let path = b"passwd\0etc\0";
        let r = FileOpenRecord {
            header: header(EventKind::FileOpen),
            flags: record::FILE_OPEN_FLAGS_KNOWN,
            fd: 5,
            f_flags: libc::O_WRONLY as u32,
            f_mode: record::FMODE_WRITE | record::FMODE_CREATED,
            open_flags: (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u32,
            path_len: path.len() as u32,
        };
        let ev = decode(&sent(&r, &[path]), BootClock::now()).unwrap();
        assert_eq!(ev.kind(), crate::events::Kind::FileOpen);
        let EventDetail::FileOpen(d) = ev.detail else {
            panic!("not a file open")
        };
        assert_eq!(d.path.as_deref(), Some("/etc/passwd"));
        assert_eq!(d.fd, 5);
        assert_eq!(d.access, Access::WRITE | Access::CREATE | Access::TRUNCATE);
        assert_eq!(d.flags, Some(r.open_flags));
        assert_eq!(d.file_flags, libc::O_WRONLY as u32);
        assert!(d.incomplete.is_empty());

        // Read-only, flags unknown, path cut short: no guess at truncation, gaps named.
        let r = FileOpenRecord {
            flags: record::FILE_PATH_TRUNCATED,
            f_mode: record::FMODE_READ,
            f_flags: 0,
            open_flags: libc::O_TRUNC as u32, // not flagged known: ignored
            ..r
        };
        let EventDetail::FileOpen(d) = decode(&sent(&r, &[path]), BootClock::now()).unwrap().detail
        else {
            panic!("not a file open")
        };
        assert_eq!(d.path.as_deref(), Some(".../etc/passwd"));
        assert_eq!(d.access, Access::READ);
        assert_eq!(d.flags, None);
        assert_eq!(d.incomplete, ["path", "flags"]);

        let r = FileOpenRecord {
            flags: record::FILE_PATH_FAILED | record::FILE_OPEN_FLAGS_KNOWN,
            ..r
        };
        let EventDetail::FileOpen(d) = decode(&sent(&r, &[path]), BootClock::now()).unwrap().detail
        else {
            panic!("not a file open")
        };
        assert_eq!(d.path, None);
        assert_eq!(d.incomplete, ["path"]);
    }

    #[test]
    fn library_load_record_decodes_path() {
        let path = b"libfoo.so\0tmp\0";
        let r = LibraryLoadRecord {
            header: header(EventKind::LibraryLoad),
            flags: record::LIB_FILE_NEW,
            fd: 3,
            prot: 5,
            path_len: path.len() as u32,
            dev: (254 << 20) | 1,
            _pad: 0,
            ino: 77,
        };
        let ev = decode(&sent(&r, &[path]), BootClock::now()).unwrap();
        assert_eq!(
            ev.detail,
            EventDetail::LibraryLoad(LibraryLoadDetail {
                path: Some("/tmp/libfoo.so".into()),
                incomplete: vec![],
                dev: (254 << 20) | 1,
                ino: 77,
                new_file: true,
            })
        );
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["kind"], "library_load");
        assert_eq!(json["path"], "/tmp/libfoo.so");
    }

    #[test]
    fn connect_record_decodes_both_families() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[169, 254, 169, 254]);
        let r = ConnectRecord {
            header: header(EventKind::Connect),
            family: record::AF_INET,
            port: 80,
            fd: 7,
            addr,
        };
        let ev = decode(&bytes_of(&r), BootClock::now()).unwrap();
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["kind"], "connect");
        assert_eq!(json["family"], "inet");
        assert_eq!(json["addr"], "169.254.169.254");
        assert_eq!(json["port"], 80);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);

        let v6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let r = ConnectRecord {
            family: record::AF_INET6,
            port: 443,
            addr: v6.octets(),
            ..r
        };
        let EventDetail::Connect(d) = decode(&bytes_of(&r), BootClock::now()).unwrap().detail
        else {
            panic!("not a connect")
        };
        assert_eq!(
            (d.family.name(), d.addr.to_string().as_str(), d.port),
            ("inet6", "2001:db8::1", 443)
        );

        let r = ConnectRecord { family: 1, ..r };
        assert_eq!(
            decode(&bytes_of(&r), BootClock::now()),
            Err(DecodeError::Invalid {
                what: "connect address family",
                value: 1
            })
        );
        // A header alone is too short for any of the other records.
        for kind in [
            EventKind::FileOpen,
            EventKind::LibraryLoad,
            EventKind::Connect,
        ] {
            assert!(matches!(
                decode(&bytes_of(&header(kind)), BootClock::now()),
                Err(DecodeError::Short { .. })
            ));
        }
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
        assert!(Argv::from_nul_separated(b"").is_empty());
        assert_eq!(Argv::from_nul_separated(b"a\0\0b\0"), ["a", "", "b"]);
        assert_eq!(Argv::from_nul_separated(b"a\0partia"), ["a", "partia"]);
        assert_eq!(leaf_first_path(b"", false), "/");
        assert_eq!(leaf_first_path(b"c\0b\0", true), ".../b/c");
        // Top components kept after a gap.
        assert_eq!(
            leaf_first_path(b"lib.so\0d4\0\0d1\0tmp\0", true),
            "/tmp/d1/…/d4/lib.so"
        );
        assert_eq!(
            join_location(Some("/var/log"), "auth.log", false),
            "/var/log/auth.log"
        );
        assert_eq!(
            join_location(Some("/root"), "../var/./log/x", false),
            "/var/log/x"
        );
        assert_eq!(join_location(None, "/a/b/../c", false), "/a/c");
        assert_eq!(join_location(Some("/etc/x"), "", true), "/etc/x");
        assert_eq!(join_location(Some("/"), "..", false), "/");
    }
}
