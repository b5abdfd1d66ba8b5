//! The issue-19 events (file changes, ptrace, namespaces, mounts, AF_UNIX connects, kernel
//! modules, BPF loads, io_uring) and the typed values they carry: what a standard
//! descriptor is, which operation was done, which namespaces. Each value has one name,
//! used in JSON, in `rasp-agent events` and in policies (`operation: [rename]`,
//! `stdin: [inet_socket]`); the name lists here are what policy validation accepts.

use serde::{Deserialize, Serialize};

/// A vocabulary of named values: `NAMES` in a fixed order, each value's name, and back.
pub trait Named: Sized + Copy + 'static {
    const NAMES: &'static [(&'static str, Self)];

    fn name(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(n, _)| n)
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    fn names() -> Vec<&'static str> {
        Self::NAMES.iter().map(|(n, _)| *n).collect()
    }
}

/// Serde as the value's name.
macro_rules! named_serde {
    ($t:ty, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$t>::from_name(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(concat!("unknown ", $what, " {:?}"), s))
                })
            }
        }
    };
}

// ---- Standard descriptors at exec ---------------------------------------------------------

/// What a descriptor refers to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FdKind {
    #[default]
    Closed,
    File,
    Directory,
    Pipe,
    /// A terminal: a pseudo-terminal, a console or `/dev/tty`.
    Tty,
    /// `/dev/null`.
    Null,
    CharDevice,
    BlockDevice,
    /// An AF_INET/AF_INET6 socket: a network connection (or listener).
    InetSocket,
    UnixSocket,
    /// A socket of another family (netlink, vsock ...).
    OtherSocket,
    Other,
}

impl Named for FdKind {
    const NAMES: &'static [(&'static str, FdKind)] = &[
        ("closed", FdKind::Closed),
        ("file", FdKind::File),
        ("directory", FdKind::Directory),
        ("pipe", FdKind::Pipe),
        ("tty", FdKind::Tty),
        ("null", FdKind::Null),
        ("char_device", FdKind::CharDevice),
        ("block_device", FdKind::BlockDevice),
        ("inet_socket", FdKind::InetSocket),
        ("unix_socket", FdKind::UnixSocket),
        ("other_socket", FdKind::OtherSocket),
        ("other", FdKind::Other),
    ];
}
named_serde!(FdKind, "descriptor kind");

impl FdKind {
    /// From the kernel's `i_mode`, socket family and `i_rdev` (major << 20 | minor).
    pub fn of(mode: u16, family: u16, rdev: u32) -> FdKind {
        use rasp_common::record as r;
        if mode == 0 {
            return FdKind::Closed;
        }
        let (major, minor) = (rdev >> 20, rdev & 0xf_ffff);
        match mode & r::S_IFMT {
            r::S_IFSOCK => match family {
                r::AF_INET | r::AF_INET6 => FdKind::InetSocket,
                r::AF_UNIX => FdKind::UnixSocket,
                _ => FdKind::OtherSocket,
            },
            r::S_IFIFO => FdKind::Pipe,
            r::S_IFREG => FdKind::File,
            r::S_IFDIR => FdKind::Directory,
            r::S_IFBLK => FdKind::BlockDevice,
            r::S_IFCHR => match (major, minor) {
                (1, 3) => FdKind::Null,
                // tty/ttyS (4), /dev/tty and ptmx (5), the pts slaves (136-143).
                (4 | 5 | 136..=143, _) => FdKind::Tty,
                _ => FdKind::CharDevice,
            },
            _ => FdKind::Other,
        }
    }

    pub fn is_socket(self) -> bool {
        matches!(
            self,
            FdKind::InetSocket | FdKind::UnixSocket | FdKind::OtherSocket
        )
    }

    /// Does a policy value name this kind? `socket` is any socket.
    pub fn matches_name(self, name: &str) -> bool {
        self.name() == name || (name == "socket" && self.is_socket())
    }

    /// What policies may write: every kind, and `socket` for any of them.
    pub fn policy_names() -> Vec<&'static str> {
        let mut v = Self::names();
        v.push("socket");
        v
    }
}

/// One standard descriptor of a new process: its kind and inode (a pipe's identity,
/// shared by both ends).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StdioFd {
    pub kind: FdKind,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ino: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A value that differs between occurrences of the same behaviour (an io_uring request's
/// cookie, a ptrace address): reported, but left out of equality and hashing, so storm
/// folding (which keys on the whole event detail) takes detections that differ only in it
/// for one, as it does for pids and times. Without this, every request of a program a
/// rule flags would be a detection of its own.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Volatile<T>(pub T);

impl<T> PartialEq for Volatile<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Volatile<T> {}

impl<T> std::hash::Hash for Volatile<T> {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

fn is_volatile_zero(v: &Volatile<u64>) -> bool {
    v.0 == 0
}

// ---- File changes --------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeOp {
    Chmod,
    Setxattr,
    Unlink,
    Rmdir,
    Rename,
    Truncate,
    /// Times set to chosen values.
    Utimes,
    /// Times set to now.
    Touch,
    Symlink,
    Link,
}

impl Named for ChangeOp {
    const NAMES: &'static [(&'static str, ChangeOp)] = &[
        ("chmod", ChangeOp::Chmod),
        ("setxattr", ChangeOp::Setxattr),
        ("unlink", ChangeOp::Unlink),
        ("rmdir", ChangeOp::Rmdir),
        ("rename", ChangeOp::Rename),
        ("truncate", ChangeOp::Truncate),
        ("utimes", ChangeOp::Utimes),
        ("touch", ChangeOp::Touch),
        ("symlink", ChangeOp::Symlink),
        ("link", ChangeOp::Link),
    ];
}
named_serde!(ChangeOp, "file change");

impl ChangeOp {
    pub fn from_kernel(op: u16) -> Option<ChangeOp> {
        use rasp_common::record as r;
        Some(match op {
            r::CHANGE_OP_CHMOD => ChangeOp::Chmod,
            r::CHANGE_OP_SETXATTR => ChangeOp::Setxattr,
            r::CHANGE_OP_UNLINK => ChangeOp::Unlink,
            r::CHANGE_OP_RMDIR => ChangeOp::Rmdir,
            r::CHANGE_OP_RENAME => ChangeOp::Rename,
            r::CHANGE_OP_TRUNCATE => ChangeOp::Truncate,
            r::CHANGE_OP_UTIMES => ChangeOp::Utimes,
            r::CHANGE_OP_TOUCH => ChangeOp::Touch,
            r::CHANGE_OP_SYMLINK => ChangeOp::Symlink,
            r::CHANGE_OP_LINK => ChangeOp::Link,
            _ => return None,
        })
    }

    /// The kernel's number (its bit in `HOOK_CHANGE`).
    pub fn kernel(self) -> u16 {
        use rasp_common::record as r;
        match self {
            ChangeOp::Chmod => r::CHANGE_OP_CHMOD,
            ChangeOp::Setxattr => r::CHANGE_OP_SETXATTR,
            ChangeOp::Unlink => r::CHANGE_OP_UNLINK,
            ChangeOp::Rmdir => r::CHANGE_OP_RMDIR,
            ChangeOp::Rename => r::CHANGE_OP_RENAME,
            ChangeOp::Truncate => r::CHANGE_OP_TRUNCATE,
            ChangeOp::Utimes => r::CHANGE_OP_UTIMES,
            ChangeOp::Touch => r::CHANGE_OP_TOUCH,
            ChangeOp::Symlink => r::CHANGE_OP_SYMLINK,
            ChangeOp::Link => r::CHANGE_OP_LINK,
        }
    }
}

/// Mode bits a `mode_bits` condition can name.
pub const MODE_BITS: &[(&str, u32)] = &[
    ("setuid", 0o4000),
    ("setgid", 0o2000),
    ("sticky", 0o1000),
    ("world_writable", 0o0002),
    ("group_writable", 0o0020),
    ("executable", 0o0111),
];

// ---- ptrace --------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PtraceOp {
    Attach,
    Seize,
    /// PTRACE_POKETEXT/POKEDATA/POKEUSER: writing into the tracee.
    Poke,
    /// process_vm_readv.
    VmRead,
    /// process_vm_writev.
    VmWrite,
}

impl Named for PtraceOp {
    const NAMES: &'static [(&'static str, PtraceOp)] = &[
        ("attach", PtraceOp::Attach),
        ("seize", PtraceOp::Seize),
        ("poke", PtraceOp::Poke),
        ("vm_read", PtraceOp::VmRead),
        ("vm_write", PtraceOp::VmWrite),
    ];
}
named_serde!(PtraceOp, "ptrace operation");

impl PtraceOp {
    pub fn from_request(request: u32) -> Option<PtraceOp> {
        use rasp_common::record as r;
        Some(match request {
            r::PTRACE_ATTACH => PtraceOp::Attach,
            r::PTRACE_SEIZE => PtraceOp::Seize,
            r::PTRACE_POKETEXT | r::PTRACE_POKEDATA | r::PTRACE_POKEUSER => PtraceOp::Poke,
            r::PTRACE_VM_READ => PtraceOp::VmRead,
            r::PTRACE_VM_WRITE => PtraceOp::VmWrite,
            _ => return None,
        })
    }

    /// Its `interest::PTRACE_CLASS_*` bit.
    pub fn class(self) -> u32 {
        use rasp_common::interest as i;
        match self {
            PtraceOp::Attach => i::PTRACE_CLASS_ATTACH,
            PtraceOp::Seize => i::PTRACE_CLASS_SEIZE,
            PtraceOp::Poke => i::PTRACE_CLASS_POKE,
            PtraceOp::VmRead => i::PTRACE_CLASS_VM_READ,
            PtraceOp::VmWrite => i::PTRACE_CLASS_VM_WRITE,
        }
    }
}

/// The target of a ptrace or process_vm call as the process table knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TargetInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<super::Text>,
    pub uid: u32,
    /// The target descends from the caller (a debugger's own child).
    pub descendant: bool,
}

// ---- Namespaces ----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NsOp {
    Setns,
    Unshare,
}

impl Named for NsOp {
    const NAMES: &'static [(&'static str, NsOp)] =
        &[("setns", NsOp::Setns), ("unshare", NsOp::Unshare)];
}
named_serde!(NsOp, "namespace operation");

/// Namespace types by name, with their `CLONE_NEW*` flags (and the nsfs name prefix).
pub const NAMESPACES: &[(&str, u32)] = &[
    ("mnt", 0x0002_0000),
    ("uts", 0x0400_0000),
    ("ipc", 0x0800_0000),
    ("user", 0x1000_0000),
    ("pid", 0x2000_0000),
    ("net", 0x4000_0000),
    ("cgroup", 0x0200_0000),
    ("time", 0x0000_0080),
];

/// The names of the namespaces in `CLONE_NEW*` flags.
pub fn namespace_names(flags: u32) -> Vec<&'static str> {
    NAMESPACES
        .iter()
        .filter(|(_, bit)| flags & bit != 0)
        .map(|(n, _)| *n)
        .collect()
}

// ---- Mounts, modules, io_uring ------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MountOp {
    Mount,
    Fsopen,
}

impl Named for MountOp {
    const NAMES: &'static [(&'static str, MountOp)] =
        &[("mount", MountOp::Mount), ("fsopen", MountOp::Fsopen)];
}
named_serde!(MountOp, "mount operation");

/// Mount flags a `mount_flags` condition can name (`MS_*`).
pub const MOUNT_FLAGS: &[(&str, u64)] = &[
    ("rdonly", 0x1),
    ("remount", 0x20),
    ("bind", 0x1000),
    ("move", 0x2000),
    ("rec", 0x4000),
    ("private", 0x4_0000),
    ("slave", 0x8_0000),
    ("shared", 0x10_0000),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleOp {
    /// init_module: an image from memory.
    Load,
    /// finit_module: from a file.
    LoadFile,
    Unload,
}

impl Named for ModuleOp {
    const NAMES: &'static [(&'static str, ModuleOp)] = &[
        ("load", ModuleOp::Load),
        ("load_file", ModuleOp::LoadFile),
        ("unload", ModuleOp::Unload),
    ];
}
named_serde!(ModuleOp, "module operation");

/// What kind of socket a `socket` event reports (its `operation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketOp {
    /// `AF_PACKET` (or the legacy `SOCK_PACKET`): link-layer frames, every packet on an
    /// interface (tcpdump, tshark, libpcap, scapy's sniff).
    Packet,
    /// `SOCK_RAW` on `AF_INET`/`AF_INET6`: IP packets with their headers (ping, traceroute,
    /// packet crafters, raw-socket sniffers).
    Raw,
}

impl Named for SocketOp {
    const NAMES: &'static [(&'static str, SocketOp)] =
        &[("packet", SocketOp::Packet), ("raw", SocketOp::Raw)];
}
named_serde!(SocketOp, "socket kind");

/// Address families a `socket` event names (`AF_*`), by number.
pub fn socket_family_name(family: u32) -> String {
    match family {
        2 => "inet".into(),
        10 => "inet6".into(),
        17 => "packet".into(),
        other => other.to_string(),
    }
}

/// Socket types a `socket` event names (`SOCK_*`), by number.
pub fn socket_type_name(sock_type: u32) -> String {
    match sock_type {
        1 => "stream".into(),
        2 => "dgram".into(),
        3 => "raw".into(),
        10 => "packet".into(),
        other => other.to_string(),
    }
}

/// `IORING_OP_*` names, by opcode.
pub const IO_URING_OPS: &[&str] = &[
    "nop",
    "readv",
    "writev",
    "fsync",
    "read_fixed",
    "write_fixed",
    "poll_add",
    "poll_remove",
    "sync_file_range",
    "sendmsg",
    "recvmsg",
    "timeout",
    "timeout_remove",
    "accept",
    "async_cancel",
    "link_timeout",
    "connect",
    "fallocate",
    "openat",
    "close",
    "files_update",
    "statx",
    "read",
    "write",
    "fadvise",
    "madvise",
    "send",
    "recv",
    "openat2",
    "epoll_ctl",
    "splice",
    "provide_buffers",
    "remove_buffers",
    "tee",
    "shutdown",
    "renameat",
    "unlinkat",
    "mkdirat",
    "symlinkat",
    "linkat",
    "msg_ring",
    "fsetxattr",
    "setxattr",
    "fgetxattr",
    "getxattr",
    "socket",
    "uring_cmd",
    "send_zc",
    "sendmsg_zc",
    "read_multishot",
    "waitid",
    "futex_wait",
    "futex_wake",
    "futex_waitv",
    "fixed_fd_install",
    "ftruncate",
    "bind",
    "listen",
    "recv_zc",
    "epoll_wait",
    "readv_fixed",
    "writev_fixed",
    "pipe",
];

pub fn io_uring_op_name(opcode: u32) -> Option<&'static str> {
    IO_URING_OPS.get(opcode as usize).copied()
}

pub fn io_uring_opcode(name: &str) -> Option<u32> {
    IO_URING_OPS
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u32)
}

/// `BPF_PROG_TYPE_*` names, by number.
pub const BPF_PROG_TYPES: &[&str] = &[
    "unspec",
    "socket_filter",
    "kprobe",
    "sched_cls",
    "sched_act",
    "tracepoint",
    "xdp",
    "perf_event",
    "cgroup_skb",
    "cgroup_sock",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "sock_ops",
    "sk_skb",
    "cgroup_device",
    "sk_msg",
    "raw_tracepoint",
    "cgroup_sock_addr",
    "lwt_seg6local",
    "lirc_mode2",
    "sk_reuseport",
    "flow_dissector",
    "cgroup_sysctl",
    "raw_tracepoint_writable",
    "cgroup_sockopt",
    "tracing",
    "struct_ops",
    "ext",
    "lsm",
    "sk_lookup",
    "syscall",
    "netfilter",
];

// ---- The events ----------------------------------------------------------------------------

/// A successful change to a file's mode, attributes, name, length or times. `path` is the
/// file (for rename and link, the old name; for symlink, the link); relative names are
/// joined to the directory they were relative to, `.` and `..` resolved by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileChangeDetail {
    pub operation: ChangeOp,
    pub path: Option<String>,
    /// rename, link: the new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_path: Option<String>,
    /// chmod: the new mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// setxattr: the attribute's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xattr: Option<String>,
    /// symlink: what the link points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// truncate: the new length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// utimes: the modification time set (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
}

/// ptrace attach/seize/poke or process_vm_readv/writev that succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PtraceDetail {
    pub operation: PtraceOp,
    pub target_pid: u32,
    /// POKE*: the address written (not part of the detail's identity: see `Volatile`).
    #[serde(default, skip_serializing_if = "is_volatile_zero")]
    pub addr: Volatile<u64>,
    /// The target as the process table knew it when the event arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetInfo>,
}

/// setns or unshare that succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NamespaceDetail {
    pub operation: NsOp,
    /// Which namespaces (unshare's flags; setns' type from its argument or the file).
    pub namespaces: Vec<String>,
    /// setns: the namespace file's nsfs name (`mnt:[4026531841]`) and inode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ns: Option<u32>,
    /// setns: the namespace entered is one of the host's (the agent's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into_host: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MountDetail {
    pub operation: MountOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flags: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
}

/// A connect attempt to an AF_UNIX socket path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UnixConnectDetail {
    pub path: Option<String>,
    pub fd: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KernelModuleDetail {
    pub operation: ModuleOp,
    /// load_file: the module file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// unload: the module's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BpfLoadDetail {
    /// `BPF_PROG_TYPE_*` by name (`kprobe`, `tracepoint`, `lsm` ...), or its number.
    pub prog_type: String,
    pub prog_name: String,
    pub insn_cnt: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SocketDetail {
    pub operation: SocketOp,
    /// `inet`, `inet6`, `packet`, or the number.
    pub family: String,
    /// `raw`, `dgram`, `packet` ..., or the number.
    pub sock_type: String,
    /// IP protocol (`1` ICMP, `6` TCP ...); for `packet`, the Ethernet protocol in host
    /// order (`3` = ETH_P_ALL: every frame).
    pub protocol: u32,
    pub fd: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IoUringDetail {
    /// The opcode's name (`openat`, `connect` ...), or its number.
    pub operation: String,
    pub opcode: u32,
    /// Submitted by an io_uring worker (SQPOLL) thread of the process.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sq_thread: bool,
    /// The request's cookie (not part of the detail's identity: see `Volatile`).
    pub user_data: Volatile<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_kinds_from_the_kernels_modes() {
        use rasp_common::record as r;
        assert_eq!(FdKind::of(0, 0, 0), FdKind::Closed);
        assert_eq!(FdKind::of(r::S_IFSOCK | 0o777, 2, 0), FdKind::InetSocket);
        assert_eq!(FdKind::of(r::S_IFSOCK, 10, 0), FdKind::InetSocket);
        assert_eq!(FdKind::of(r::S_IFSOCK, 1, 0), FdKind::UnixSocket);
        assert_eq!(FdKind::of(r::S_IFSOCK, 16, 0), FdKind::OtherSocket);
        assert_eq!(FdKind::of(r::S_IFIFO | 0o600, 0, 0), FdKind::Pipe);
        assert_eq!(FdKind::of(r::S_IFCHR, 0, (1 << 20) | 3), FdKind::Null);
        assert_eq!(FdKind::of(r::S_IFCHR, 0, 136 << 20), FdKind::Tty);
        assert_eq!(FdKind::of(r::S_IFCHR, 0, (1 << 20) | 5), FdKind::CharDevice);
        assert_eq!(FdKind::of(r::S_IFREG | 0o644, 0, 0), FdKind::File);
        assert!(FdKind::InetSocket.matches_name("socket"));
        assert!(!FdKind::Pipe.matches_name("socket"));
        assert_eq!(
            serde_json::to_string(&StdioFd {
                kind: FdKind::Pipe,
                ino: 7
            })
            .unwrap(),
            r#"{"kind":"pipe","ino":7}"#
        );
    }

    #[test]
    fn names_round_trip() {
        for (n, op) in ChangeOp::NAMES {
            assert_eq!(ChangeOp::from_kernel(op.kernel()), Some(*op));
            assert_eq!(op.name(), *n);
        }
        assert_eq!(io_uring_op_name(18), Some("openat"));
        assert_eq!(io_uring_opcode("connect"), Some(16));
        assert_eq!(BPF_PROG_TYPES[29], "lsm");
        assert_eq!(namespace_names(0x2002_0000), ["mnt", "pid"]);
        let json = serde_json::to_string(&PtraceOp::VmRead).unwrap();
        assert_eq!(json, "\"vm_read\"");
        assert!(serde_json::from_str::<PtraceOp>("\"peek\"").is_err());
    }

    #[test]
    fn request_cookies_and_addresses_do_not_split_a_detail() {
        use std::hash::{BuildHasher, RandomState};
        let uring = |user_data: u64, opcode: u32| IoUringDetail {
            operation: "openat".into(),
            opcode,
            sq_thread: false,
            user_data: Volatile(user_data),
        };
        let hasher = RandomState::new();
        assert_eq!(uring(1, 18), uring(2, 18));
        assert_eq!(hasher.hash_one(uring(1, 18)), hasher.hash_one(uring(2, 18)));
        assert_ne!(uring(1, 18), uring(1, 16));
        // Still reported as the number it is.
        let json = serde_json::to_value(uring(7, 18)).unwrap();
        assert_eq!(json["user_data"], 7);
        let poke = |addr: u64, target_pid: u32| PtraceDetail {
            operation: PtraceOp::Poke,
            target_pid,
            addr: Volatile(addr),
            target: None,
        };
        assert_eq!(poke(0x1000, 5), poke(0x2000, 5));
        assert_ne!(poke(0x1000, 5), poke(0x1000, 6));
        assert_eq!(serde_json::to_value(poke(0, 5)).unwrap().get("addr"), None);
    }
}
