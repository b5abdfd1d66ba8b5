//! Bounds shared by the kernel and the agent. Every variable-length thing the kernel copies
//! is capped here; the record says when a cap was hit so userspace never guesses.

/// Bytes of argv captured at exec (NUL-separated, as in `/proc/<pid>/cmdline`). Longer
/// argv is cut at this bound and the record carries `EXEC_ARGV_TRUNCATED` and the full size.
pub const ARGV_CAP: usize = 4096;
/// Largest argv read, one less than the buffer so the size can be masked for the verifier.
pub const ARGV_READ_MAX: usize = ARGV_CAP - 1;

/// Bytes for a path rebuilt in the kernel from its dentries (exe, cwd). Components are
/// written leaf first, each NUL-terminated; the agent reverses them.
pub const PATH_CAP: usize = 1024;
/// Longest single path component read (NAME_MAX + NUL).
pub const NAME_SLOT: usize = 256;
/// Dentries and mount crossings walked for one path; deeper paths are flagged truncated.
pub const PATH_DEPTH: usize = 48;

/// Bytes of the file name as passed to execve (`bprm->filename`).
pub const FILENAME_CAP: usize = 256;

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;

/// Bytes of a path component as an interest-map key (`FILE_NAMES`, `LIB_NAMES`): the name,
/// NUL, zero padding. Names longer than `NAME_KEY_LEN - 1` (31) bytes are cut to their first
/// 31 bytes on both sides (`interest::name_key` in userspace, a bounded string read in the
/// kernel), so a long watched name also lets through other names sharing those 31 bytes:
/// the kernel pre-filter is a superset, userspace rules decide exactly.
pub const NAME_KEY_LEN: usize = 32;

/// Interest entries userspace may install per map. The maps hold twice as many so a reload
/// can insert the whole new set before deleting the old one (see `interest`).
pub const MAX_FILE_NAMES: u32 = 512;
pub const MAX_LIB_NAMES: u32 = 256;
pub const MAX_CONNECT_PORTS: u32 = 512;
pub const MAX_CONNECT_CIDRS: u32 = 512;
/// Directory names watched for the issue-19 path hooks (`PATH_NAMES`).
pub const MAX_PATH_NAMES: u32 = 256;

/// Default ring buffer size (bytes); the agent's `--ring-buffer-size` overrides it. Records
/// carry only the bytes they use (an exec ~0.3-0.6 KB, a fork or exit 104 B), so 4 MiB holds
/// about ten times the events the fixed-size records' 8 MiB did; the reader maps the ring
/// twice over, so every MiB here is two of the agent's RSS.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// Bytes of query text captured per libpq call (a power of two: the read length is masked
/// for the verifier). Longer queries are cut and flagged `SQL_QUERY_TRUNCATED`.
pub const SQL_QUERY_CAP: usize = 8192;

/// Bytes of a path name captured as the caller passed it to a syscall (chmod, unlink,
/// rename, mount ...), with its NUL. Longer names are cut and flagged; the kernel filter
/// sends a name it could not see whole.
pub const NAME_CAP: usize = 1024;
/// Bytes of an extended attribute name (XATTR_NAME_MAX is 255) or a symlink target kept.
pub const XATTR_NAME_CAP: usize = 256;
/// `sun_path` of an AF_UNIX address (108 bytes), rounded up to a power of two.
pub const SUN_PATH_CAP: usize = 128;
/// A mount source (device or path) and a filesystem type.
pub const MOUNT_SOURCE_CAP: usize = 256;
pub const FSTYPE_CAP: usize = 64;
/// A kernel module's name (MODULE_NAME_LEN is 56).
pub const MODULE_NAME_CAP: usize = 64;
/// Highest syscall number the hooks' shape table covers (x86_64 and arm64 stay below).
pub const SYSCALL_SLOTS: u32 = 512;
