//! The uprobe target registry: which files mapped on the node are libpq or OpenSSL (told by
//! their exported symbols, never by file name), one attachment per distinct file (dev+inode)
//! however many processes or containers map it, and when to drop it (the last process that
//! mapped it exited). The registry only plans: it returns `TargetAction`s and the loader makes
//! the aya calls.
//!
//! Threading: `lookup`/`record`/`on_process_exit`/`status` are hash-map work, fine under a
//! short lock on the event path. Reading a file (`inspect_file`, and so `on_library_mapped`
//! and `scan_process`, which call it for files not seen before) is blocking I/O: run it on a
//! blocking task (`tokio::task::spawn_blocking`), without the registry's lock held, then hand
//! the result to `record`. A file seen once costs a hash lookup afterwards, interesting or not.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{
    elf::{read_image, read_image_from, BuildId, ElfError, ElfImage, SymbolTable},
    prologue::{
        forward_call, ArgRegister, AttachPoint, Forwarding, Placement, ProbeRequirements,
        RegisterSet,
    },
};

/// What a target file is, decided from the functions it defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LibraryKind {
    Libpq,
    Libssl,
    /// An executable that carries OpenSSL itself (exports `SSL_write`... in `.dynsym`, or
    /// defines them in an unstripped `.symtab`).
    StaticSsl,
}

impl fmt::Display for LibraryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LibraryKind::Libpq => "libpq",
            LibraryKind::Libssl => "libssl",
            LibraryKind::StaticSsl => "static-ssl",
        })
    }
}

/// What a probed function means to the eBPF side: the loader picks the program by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum FunctionRole {
    /// Sends a query; its text is in `text`, the `PGconn *` in rdi.
    Query { text: ArgRegister },
    /// Returns a new `PGconn *` (return probe).
    ConnectionOpened,
    /// `PQfinish(conn)`: the connection identity ends.
    ConnectionClosed,
    /// `(ssl, buf, num[, written])`; captured on return, once the write succeeded.
    TlsWrite { abi: TlsAbi },
    /// `(ssl, buf, num[, readbytes])`; the bytes are there on return.
    TlsRead { abi: TlsAbi },
    /// `SSL_set_fd(ssl, fd)`: ties the `SSL *` to a socket.
    TlsSetFd,
    /// `SSL_free(ssl)`: the `SSL *` identity ends.
    TlsFree,
}

impl FunctionRole {
    /// For reads and writes, how the byte count comes back.
    pub fn tls_abi(self) -> Option<TlsAbi> {
        match self {
            FunctionRole::TlsRead { abi } | FunctionRole::TlsWrite { abi } => Some(abi),
            _ => None,
        }
    }
}

/// How an OpenSSL read or write function reports the bytes it moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsAbi {
    /// `SSL_read`/`SSL_write(ssl, buf, int num)`: the return value.
    Int,
    /// `SSL_read_ex`/`SSL_write_ex(ssl, buf, size_t num, size_t *count)`: 1, and `*count`.
    Ex,
}

/// One function to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionSpec {
    pub name: &'static str,
    pub role: FunctionRole,
    /// Registers the entry program reads: they must be intact at the attach point.
    pub intact: RegisterSet,
    /// A return probe as well (real length on reads, the returned connection).
    pub return_probe: bool,
    /// Part of what identifies the library: a file without it is not this kind.
    pub identifying: bool,
}

impl FunctionSpec {
    pub fn requirements(&self) -> ProbeRequirements {
        ProbeRequirements {
            intact: self.intact,
            stack_unchanged: self.return_probe,
        }
    }
}

const fn spec(
    name: &'static str,
    role: FunctionRole,
    intact: &[ArgRegister],
    return_probe: bool,
    identifying: bool,
) -> FunctionSpec {
    FunctionSpec {
        name,
        role,
        intact: RegisterSet::of(intact),
        return_probe,
        identifying,
    }
}

use ArgRegister::{Rcx, Rdi, Rdx, Rsi};

/// libpq: query text in rsi, or rdx after a statement name (`PQprepare(conn, stmtName,
/// query, ...)`, `PQsendPrepare` likewise). `PQexec` calls `PQsendQuery` through the PLT, so
/// a query is seen by both: the consumer reports it once (KERNEL.md).
pub const LIBPQ_FUNCTIONS: &[FunctionSpec] = &[
    spec(
        "PQexec",
        FunctionRole::Query { text: Rsi },
        &[Rdi, Rsi],
        false,
        true,
    ),
    spec(
        "PQexecParams",
        FunctionRole::Query { text: Rsi },
        &[Rdi, Rsi],
        false,
        false,
    ),
    spec(
        "PQprepare",
        FunctionRole::Query { text: Rdx },
        &[Rdi, Rsi, Rdx],
        false,
        false,
    ),
    spec(
        "PQsendQuery",
        FunctionRole::Query { text: Rsi },
        &[Rdi, Rsi],
        false,
        true,
    ),
    spec(
        "PQsendQueryParams",
        FunctionRole::Query { text: Rsi },
        &[Rdi, Rsi],
        false,
        false,
    ),
    spec(
        "PQsendPrepare",
        FunctionRole::Query { text: Rdx },
        &[Rdi, Rsi, Rdx],
        false,
        false,
    ),
    spec(
        "PQfinish",
        FunctionRole::ConnectionClosed,
        &[Rdi],
        false,
        true,
    ),
    spec(
        "PQconnectdb",
        FunctionRole::ConnectionOpened,
        &[],
        true,
        false,
    ),
    spec(
        "PQconnectStart",
        FunctionRole::ConnectionOpened,
        &[],
        true,
        false,
    ),
];

/// OpenSSL: reads and writes are captured on return (the real length; a write retried after
/// WANT_WRITE is seen once), so each needs a return probe; `_ex` calls store the count
/// through rcx.
pub const LIBSSL_FUNCTIONS: &[FunctionSpec] = &[
    spec(
        "SSL_write",
        FunctionRole::TlsWrite { abi: TlsAbi::Int },
        &[Rdi, Rsi, Rdx],
        true,
        true,
    ),
    spec(
        "SSL_read",
        FunctionRole::TlsRead { abi: TlsAbi::Int },
        &[Rdi, Rsi, Rdx],
        true,
        true,
    ),
    spec(
        "SSL_write_ex",
        FunctionRole::TlsWrite { abi: TlsAbi::Ex },
        &[Rdi, Rsi, Rdx, Rcx],
        true,
        false,
    ),
    spec(
        "SSL_read_ex",
        FunctionRole::TlsRead { abi: TlsAbi::Ex },
        &[Rdi, Rsi, Rdx, Rcx],
        true,
        false,
    ),
    spec(
        "SSL_set_fd",
        FunctionRole::TlsSetFd,
        &[Rdi, Rsi],
        false,
        false,
    ),
    spec("SSL_free", FunctionRole::TlsFree, &[Rdi], false, true),
];

/// The read and write pairs: when `_ex` hands its four arguments over unchanged to the
/// function the other one calls too, one probe (and return probe) on that function serves
/// both (`plan_tls`).
const TLS_PAIRS: [(&str, &str); 2] = [("SSL_read", "SSL_read_ex"), ("SSL_write", "SSL_write_ex")];

/// Functions whose first call is followed when a file is read (`ElfImage::callees`).
const FOLLOWED: [&str; 4] = ["SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex"];

fn wanted_names() -> Vec<&'static str> {
    LIBPQ_FUNCTIONS
        .iter()
        .chain(LIBSSL_FUNCTIONS)
        .map(|f| f.name)
        .collect()
}

/// A file as the kernel names it: device (major:minor as `/proc/<pid>/maps` shows it) and
/// inode. Two containers mapping one image layer see the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

impl FileId {
    /// From a kernel-internal `dev_t` (`MAJOR = dev >> 20`, `MINOR = dev & 0xfffff`), as an
    /// eBPF program reads `inode->i_sb->s_dev`.
    pub fn from_kernel_dev(dev: u32, inode: u64) -> Self {
        FileId {
            major: dev >> 20,
            minor: dev & 0xf_ffff,
            inode,
        }
    }
}

impl FileId {
    /// From `stat`'s `st_dev` (the userspace encoding) and inode.
    pub fn from_stat_dev(dev: u64, inode: u64) -> Self {
        FileId {
            major: libc::major(dev),
            minor: libc::minor(dev),
            inode,
        }
    }

    /// The kernel-internal `dev_t` (the inverse of `from_kernel_dev`), as
    /// `SEEN_EXEC_FILES` keys a file.
    pub fn kernel_dev(&self) -> u32 {
        (self.major << 20) | (self.minor & 0xf_ffff)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:{:x} {}", self.major, self.minor, self.inode)
    }
}

/// A registry-assigned target identity, named in `Detach`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TargetId(pub u64);

/// One probe to attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedProbe {
    pub function: &'static str,
    pub role: FunctionRole,
    /// Entry probe here; when `return_probe`, the uretprobe at the same point (the point was
    /// chosen with the stack untouched, so both share one breakpoint). For a forwarded pair
    /// the point is in the function both forward to (`point.symbol` names it).
    pub point: AttachPoint,
    pub return_probe: bool,
    /// The public functions this probe serves when it sits in the function they forward
    /// to (empty: it serves `function` itself).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub serves: Vec<&'static str>,
}

/// What a file is, once read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    Target(TargetImage),
    Uninteresting,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetImage {
    pub kind: LibraryKind,
    pub build_id: Option<BuildId>,
    pub version: Option<String>,
    pub probes: Vec<PlannedProbe>,
}

/// Everything the loader needs to attach to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachPlan {
    pub id: TargetId,
    /// Where to open the file from the agent: `/proc/<pid>/root/<path in the process>`. Used
    /// at attach time only (the kernel keeps the inode); the process may exit afterwards.
    pub path: PathBuf,
    pub file: FileId,
    pub image: TargetImage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAction {
    Attach(AttachPlan),
    /// Drop every link of this target: no process maps it any more.
    Detach {
        id: TargetId,
        file: FileId,
    },
}

/// Where the registry stands on a mapped file, without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingLookup {
    Target(TargetId),
    Uninteresting,
    /// Not seen yet: `inspect_file` it (blocking), then `record`.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot read /proc/{pid}/maps: {source} (did the process exit?)")]
    Maps { pid: u32, source: std::io::Error },
}

/// Reads `path` (in the agent's view) and decides whether it is a target; blocking I/O, no
/// registry state.
pub fn inspect_file(path: &Path, placement: Placement) -> Result<Inspection, ElfError> {
    classify_image(read_image(path, &wanted_names(), &FOLLOWED)?, placement)
}

/// Reads `path` as process `pid` sees it and decides whether it is a target. Returns the
/// `/proc/<pid>/root/...` path too (what `record` and the attach plan take). Blocking I/O.
pub fn inspect_in_process(
    pid: u32,
    path: &Path,
    placement: Placement,
) -> (PathBuf, Result<Inspection, ElfError>) {
    let open_path = path_in_process_root(pid, path);
    let inspection = open_in_process_root(pid, path)
        .map_err(|source| ElfError::Open {
            path: open_path.clone(),
            source,
        })
        .and_then(|file| read_image_from(file, &open_path, &wanted_names(), &FOLLOWED))
        .and_then(|image| classify_image(image, placement));
    (open_path, inspection)
}

fn classify_image(image: ElfImage, placement: Placement) -> Result<Inspection, ElfError> {
    Ok(match identify(&image) {
        Some(kind) => Inspection::Target(plan_image(kind, image, placement)),
        None => Inspection::Uninteresting,
    })
}

/// Opens `path` inside the process's root with `RESOLVE_IN_ROOT`, so a symlink a container
/// planted (`/usr/lib/libssl.so.3 -> /etc/shadow`) resolves inside the container, not on the
/// host as a plain open of `/proc/<pid>/root/...` would. Non-blocking, in case the path is
/// now a FIFO. Kernels before 5.6 lack openat2: there the plain open is the fallback.
pub fn open_in_process_root(pid: u32, path: &Path) -> std::io::Result<std::fs::File> {
    let root = std::fs::File::open(format!("/proc/{pid}/root"))?;
    open_in_root(&root, path).or_else(|error| {
        if error.raw_os_error() == Some(libc::ENOSYS) {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path_in_process_root(pid, path))
        } else {
            Err(error)
        }
    })
}

/// `path` resolved with `root` as `/`.
fn open_in_root(root: &std::fs::File, path: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let relative = path.strip_prefix("/").unwrap_or(path);
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    match rustix::fs::openat2(
        root,
        relative,
        flags,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(std::fs::File::from(fd)),
        Err(errno) => Err(errno.into()),
    }
}

/// The kind of library `image` is, from the identifying functions it defines.
pub fn identify(image: &ElfImage) -> Option<LibraryKind> {
    let has_all = |specs: &[FunctionSpec]| {
        specs
            .iter()
            .filter(|s| s.identifying)
            .all(|s| image.function(s.name).is_some())
    };
    if has_all(LIBPQ_FUNCTIONS) {
        return Some(LibraryKind::Libpq);
    }
    if has_all(LIBSSL_FUNCTIONS) {
        let from_symtab = image
            .function("SSL_write")
            .is_some_and(|f| f.table == SymbolTable::Symtab);
        return Some(if image.is_executable || from_symtab {
            LibraryKind::StaticSsl
        } else {
            LibraryKind::Libssl
        });
    }
    None
}

fn plan_image(kind: LibraryKind, image: ElfImage, placement: Placement) -> TargetImage {
    let probes = match kind {
        LibraryKind::Libpq => plan_each(&image, LIBPQ_FUNCTIONS, placement),
        LibraryKind::Libssl | LibraryKind::StaticSsl => plan_tls(&image, placement),
    };
    TargetImage {
        kind,
        build_id: image.build_id,
        version: image.version,
        probes,
    }
}

/// One probe per function of `specs` the file defines, each at its own point.
fn plan_each(image: &ElfImage, specs: &[FunctionSpec], placement: Placement) -> Vec<PlannedProbe> {
    specs
        .iter()
        .filter_map(|spec| {
            let function = image.function(spec.name)?;
            Some(PlannedProbe {
                function: spec.name,
                role: spec.role,
                point: placement.point(function, spec.requirements()),
                return_probe: spec.return_probe,
                serves: Vec::new(),
            })
        })
        .collect()
}

/// OpenSSL's probes. Each read/write pair gets one probe in the function both forward to
/// when that is sound and cheaper (`forwarded_pair`), otherwise one on each public
/// function; `SSL_set_fd` and `SSL_free` their own.
fn plan_tls(image: &ElfImage, placement: Placement) -> Vec<PlannedProbe> {
    let mut probes = Vec::new();
    let mut covered: Vec<&str> = Vec::new();
    for (int, ex) in TLS_PAIRS {
        if placement.at_entry {
            break; // the naive placement: every public function at its entry
        }
        if let Some(probe) = forwarded_pair(image, int, ex, placement) {
            covered.extend([int, ex]);
            probes.push(probe);
        }
    }
    let rest: Vec<FunctionSpec> = LIBSSL_FUNCTIONS
        .iter()
        .filter(|spec| !covered.contains(&spec.name))
        .copied()
        .collect();
    probes.extend(plan_each(image, &rest, placement));
    probes
}

/// One probe for a read (or write) pair, in the function `ex` forwards its four arguments to
/// unchanged, when `int` calls that same function first (so it reaches it with the same
/// arguments' meaning: its count through a pointer) and that function's entry is an
/// instruction the kernel emulates, which a return probe can share. `None`: probe the pair
/// itself. Nested calls (a public function reaching the probed one after all) are captured
/// once, by the outermost probe (`rasp-ebpf/src/tls.rs`).
fn forwarded_pair(
    image: &ElfImage,
    int: &'static str,
    ex: &'static str,
    placement: Placement,
) -> Option<PlannedProbe> {
    let spec = LIBSSL_FUNCTIONS.iter().find(|s| s.name == ex)?;
    let target = forward_call(image.function(ex)?, Forwarding::Pure(spec.intact)).ok()?;
    let callee = image.callee_of(ex).filter(|c| c.address == target)?;
    if image.callee_of(int)?.address != target {
        return None;
    }
    let point = placement.point(callee, spec.requirements());
    point.emulated.then_some(PlannedProbe {
        function: ex,
        role: spec.role,
        point,
        return_probe: true,
        serves: vec![int, ex],
    })
}

/// One executable file mapping of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The path inside the process's mount namespace.
    pub path: PathBuf,
    pub file: FileId,
}

/// The distinct file-backed executable mappings in a `/proc/<pid>/maps` text. Deleted files
/// (` (deleted)`) are left out: they cannot be opened by path.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut seen = HashSet::new();
    let mut mappings = Vec::new();
    for line in text.lines() {
        let Some(mapping) = parse_maps_line(line) else {
            continue;
        };
        if seen.insert(mapping.file) {
            mappings.push(mapping);
        }
    }
    mappings
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    // address perms offset dev inode path — the path is the rest and may hold spaces.
    let mut rest = line;
    let mut fields = [""; 5];
    for field in &mut fields {
        rest = rest.trim_start();
        let end = rest.find(' ')?;
        *field = &rest[..end];
        rest = &rest[end..];
    }
    let [_, perms, _, dev, inode] = fields;
    let path = rest.trim_start();
    if perms.as_bytes().get(2) != Some(&b'x') || !path.starts_with('/') {
        return None;
    }
    if path.ends_with(" (deleted)") {
        return None;
    }
    let (major, minor) = dev.split_once(':')?;
    let file = FileId {
        major: u32::from_str_radix(major, 16).ok()?,
        minor: u32::from_str_radix(minor, 16).ok()?,
        inode: inode.parse().ok()?,
    };
    (file.inode != 0).then(|| Mapping {
        path: PathBuf::from(path),
        file,
    })
}

/// `/proc/<pid>/root/<path>`: the file as the process sees it, container or not.
pub fn path_in_process_root(pid: u32, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    PathBuf::from(format!("/proc/{pid}/root")).join(relative)
}

/// Size bounds of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Distinct target files attached at once.
    pub max_targets: usize,
    /// Files remembered as not interesting; the memory is cleared when full.
    pub max_uninteresting: usize,
    /// Processes tracked; a target mapped by a process past this bound is never released.
    pub max_processes: usize,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        RegistryLimits {
            max_targets: 256,
            max_uninteresting: 16_384,
            max_processes: 65_536,
        }
    }
}

/// Counts of what the registry did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RegistryCounters {
    pub inspected: u64,
    pub inspect_errors: u64,
    pub uninteresting_cleared: u64,
    pub targets_refused: u64,
    pub processes_untracked: u64,
}

#[derive(Debug)]
struct Target {
    path: PathBuf,
    file: FileId,
    image: TargetImage,
    processes: HashSet<u32>,
    /// A mapping process could not be tracked: releasing could pull probes from under it.
    pinned: bool,
}

/// One line of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    pub id: TargetId,
    pub kind: LibraryKind,
    pub path: PathBuf,
    pub file: FileId,
    pub build_id: Option<String>,
    pub version: Option<String>,
    pub processes: usize,
    pub pinned: bool,
    pub probes: Vec<PlannedProbe>,
}

#[derive(Debug)]
pub struct TargetRegistry {
    placement: Placement,
    limits: RegistryLimits,
    next_id: u64,
    by_file: HashMap<FileId, TargetId>,
    targets: HashMap<TargetId, Target>,
    uninteresting: HashSet<FileId>,
    processes: HashMap<u32, Vec<TargetId>>,
    counters: RegistryCounters,
}

impl TargetRegistry {
    pub fn new(placement: Placement, limits: RegistryLimits) -> Self {
        TargetRegistry {
            placement,
            limits,
            next_id: 1,
            by_file: HashMap::new(),
            targets: HashMap::new(),
            uninteresting: HashSet::new(),
            processes: HashMap::new(),
            counters: RegistryCounters::default(),
        }
    }

    pub fn placement(&self) -> Placement {
        self.placement
    }

    pub fn counters(&self) -> RegistryCounters {
        self.counters
    }

    pub fn lookup(&self, file: FileId) -> MappingLookup {
        if let Some(id) = self.by_file.get(&file) {
            MappingLookup::Target(*id)
        } else if self.uninteresting.contains(&file) {
            MappingLookup::Uninteresting
        } else {
            MappingLookup::Unknown
        }
    }

    /// Records that `pid` maps `file`, with the result of `inspect_file` on `open_path` when
    /// the file was `Unknown`. Returns `Attach` the first time a target file is seen.
    pub fn record(
        &mut self,
        pid: u32,
        open_path: &Path,
        file: FileId,
        inspection: Result<Inspection, ElfError>,
    ) -> Option<TargetAction> {
        if let Some(id) = self.by_file.get(&file).copied() {
            // Inspected twice concurrently, or already known: count the process only.
            self.track(pid, id);
            return None;
        }
        self.counters.inspected += 1;
        let image = match inspection {
            Ok(Inspection::Target(image)) => image,
            Ok(Inspection::Uninteresting) => {
                self.remember_uninteresting(file);
                return None;
            }
            Err(error) => {
                self.counters.inspect_errors += 1;
                tracing::debug!(pid, path = ?open_path, %file, ?error, "uprobe target not readable");
                // The process may just have exited before we opened the file: try again on
                // the next mapping. A file that opens but does not parse stays ignored.
                if !matches!(error, ElfError::Open { .. }) {
                    self.remember_uninteresting(file);
                }
                return None;
            }
        };
        if self.targets.len() >= self.limits.max_targets {
            self.counters.targets_refused += 1;
            tracing::warn!(pid, path = ?open_path, kind = %image.kind, limit = self.limits.max_targets, "uprobe target bound reached; not attaching");
            return None;
        }
        let id = TargetId(self.next_id);
        self.next_id += 1;
        tracing::info!(pid, path = ?open_path, kind = %image.kind, target = id.0, "uprobe target found");
        self.by_file.insert(file, id);
        self.targets.insert(
            id,
            Target {
                path: open_path.to_owned(),
                file,
                image: image.clone(),
                processes: HashSet::new(),
                pinned: false,
            },
        );
        self.track(pid, id);
        Some(TargetAction::Attach(AttachPlan {
            id,
            path: open_path.to_owned(),
            file,
            image,
        }))
    }

    fn remember_uninteresting(&mut self, file: FileId) {
        if self.uninteresting.len() >= self.limits.max_uninteresting {
            // Forgetting costs one re-read per file; an LRU would cost more on every hit.
            self.uninteresting.clear();
            self.counters.uninteresting_cleared += 1;
        }
        self.uninteresting.insert(file);
    }

    fn track(&mut self, pid: u32, id: TargetId) {
        let tracked =
            self.processes.contains_key(&pid) || self.processes.len() < self.limits.max_processes;
        let Some(target) = self.targets.get_mut(&id) else {
            return;
        };
        if !tracked {
            self.counters.processes_untracked += 1;
            target.pinned = true;
            return;
        }
        if target.processes.insert(pid) {
            self.processes.entry(pid).or_default().push(id);
        }
    }

    /// A library-load event: `path` as the process sees it. Reads the file when it was never
    /// seen (blocking: call from a blocking task, or split into `lookup`/`inspect_file`/
    /// `record`).
    pub fn on_library_mapped(
        &mut self,
        pid: u32,
        path: &Path,
        file: FileId,
    ) -> Option<TargetAction> {
        match self.lookup(file) {
            MappingLookup::Target(id) => {
                self.track(pid, id);
                None
            }
            MappingLookup::Uninteresting => None,
            MappingLookup::Unknown => {
                let (open_path, inspection) = inspect_in_process(pid, path, self.placement);
                self.record(pid, &open_path, file, inspection)
            }
        }
    }

    /// `pid` exec'd `exe` (as it sees it), a file the kernel had not reported before: is it a
    /// target itself (a statically linked server exporting the symbols)? The file is opened
    /// inside the process's root and identified by `fstat`, so no path race can attach to
    /// another file. Blocking when the file is new to the registry.
    pub fn on_executable(&mut self, pid: u32, exe: &Path) -> Option<TargetAction> {
        let file = match open_in_process_root(pid, exe) {
            Ok(file) => file,
            Err(error) => {
                tracing::debug!(pid, exe = %exe.display(), %error, "executable not inspected");
                return None;
            }
        };
        let meta = file.metadata().ok()?;
        let id = FileId::from_stat_dev(meta.dev(), meta.ino());
        match self.lookup(id) {
            MappingLookup::Target(target) => {
                self.track(pid, target);
                None
            }
            MappingLookup::Uninteresting => None,
            MappingLookup::Unknown => {
                let open_path = path_in_process_root(pid, exe);
                let inspection = read_image_from(file, &open_path, &wanted_names(), &FOLLOWED)
                    .and_then(|image| classify_image(image, self.placement));
                self.record(pid, &open_path, id, inspection)
            }
        }
    }

    /// `child` was forked from `parent`: it inherited the parent's mappings (a pre-forking
    /// server loads libpq once, in the parent), so it holds the parent's targets too.
    pub fn on_fork(&mut self, parent: u32, child: u32) {
        let Some(ids) = self.processes.get(&parent).cloned() else {
            return;
        };
        for id in ids {
            self.track(child, id);
        }
    }

    /// Drop a target without a detach (nothing was attached to it): its file is unknown
    /// again, inspected on its next mapping.
    pub fn forget(&mut self, id: TargetId) {
        let Some(target) = self.targets.remove(&id) else {
            return;
        };
        self.by_file.remove(&target.file);
        for pid in target.processes {
            if let Some(ids) = self.processes.get_mut(&pid) {
                ids.retain(|t| *t != id);
                if ids.is_empty() {
                    self.processes.remove(&pid);
                }
            }
        }
    }

    /// The processes known to map a target (the pipeline forwards only their forks, execs
    /// and exits).
    pub fn tracked_processes(&self) -> HashSet<u32> {
        self.processes.keys().copied().collect()
    }

    /// Every executable file mapping of `pid` (at start, for processes already running).
    /// Blocking: reads `/proc` and unseen files.
    pub fn scan_process(&mut self, pid: u32) -> Result<Vec<TargetAction>, TargetError> {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map_err(|source| TargetError::Maps { pid, source })?;
        Ok(parse_maps(&maps)
            .into_iter()
            .filter_map(|mapping| self.on_library_mapped(pid, &mapping.path, mapping.file))
            .collect())
    }

    /// Every process in `/proc` (at agent start). Processes that exit meanwhile, and kernel
    /// threads (no maps), are skipped. Blocking, and the slowest call here: each distinct
    /// executable file on the node is read once.
    pub fn scan_all_processes(&mut self) -> Vec<TargetAction> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let pids: Vec<u32> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        let mut actions = Vec::new();
        for pid in pids {
            match self.scan_process(pid) {
                Ok(found) => actions.extend(found),
                Err(error) => tracing::debug!(pid, %error, "process not scanned"),
            }
        }
        actions
    }

    /// The process is gone (or exec'd: its old mappings are gone too; scan it again after).
    /// Returns `Detach` for each target no other process maps.
    pub fn on_process_exit(&mut self, pid: u32) -> Vec<TargetAction> {
        let Some(ids) = self.processes.remove(&pid) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        for id in ids {
            let Some(target) = self.targets.get_mut(&id) else {
                continue;
            };
            target.processes.remove(&pid);
            if target.processes.is_empty() && !target.pinned {
                if let Some(target) = self.targets.remove(&id) {
                    self.by_file.remove(&target.file);
                    tracing::info!(pid, path = ?target.path, target = id.0, "uprobe target released");
                    actions.push(TargetAction::Detach {
                        id,
                        file: target.file,
                    });
                }
            }
        }
        actions
    }

    /// Every attached target, by id.
    pub fn status(&self) -> Vec<TargetStatus> {
        let mut status: Vec<TargetStatus> = self
            .targets
            .iter()
            .map(|(id, target)| TargetStatus {
                id: *id,
                kind: target.image.kind,
                path: target.path.clone(),
                file: target.file,
                build_id: target.image.build_id.as_ref().map(BuildId::to_string),
                version: target.image.version.clone(),
                processes: target.processes.len(),
                pinned: target.pinned,
                probes: target.image.probes.clone(),
            })
            .collect();
        status.sort_by_key(|s| s.id);
        status
    }
}

#[cfg(test)]
mod tests {
    use super::super::elf::tests::{LIBPQ, LIBSSL};
    use super::*;
    use crate::loader::uprobe::EmulationModel;
    use std::{
        io::Write,
        process::{Child, Command},
        time::{Duration, Instant},
    };

    const MODEL: Placement = Placement::chosen(EmulationModel::CanonicalNops);

    fn file(inode: u64) -> FileId {
        FileId {
            major: 0xfe,
            minor: 0,
            inode,
        }
    }

    fn target_image(path: &str) -> TargetImage {
        match inspect_file(Path::new(path), MODEL).unwrap() {
            Inspection::Target(image) => image,
            Inspection::Uninteresting => panic!("{path} not recognised"),
        }
    }

    #[test]
    fn parses_executable_file_mappings_only() {
        let maps = "\
7f0000000000-7f0000001000 r--p 00000000 fe:00 326305                     /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000001000-7f0000002000 r-xp 00001000 fe:00 326305                     /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000003000-7f0000004000 r-xp 00001000 fe:00 326306                     /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000004000-7f0000005000 r-xp 00000000 103:0a 42                         /opt/my app/lib pq.so (deleted)
7f0000005000-7f0000006000 r-xp 00000000 103:0a 43                         /opt/my app/lib pq.so
7f0000006000-7f0000007000 rw-p 00000000 00:00 0
7fff00000000-7fff00001000 r-xp 00000000 00:00 0                          [vdso]
garbage line";
        let mappings = parse_maps(maps);
        assert_eq!(
            mappings,
            vec![
                Mapping {
                    path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
                    file: file(326305)
                },
                Mapping {
                    path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
                    file: file(326306)
                },
                Mapping {
                    path: "/opt/my app/lib pq.so".into(),
                    file: FileId {
                        major: 0x103,
                        minor: 0xa,
                        inode: 43
                    }
                },
            ]
        );
    }

    #[test]
    fn kernel_dev_and_process_root_paths() {
        let id = FileId::from_kernel_dev((0x103 << 20) | 0xa, 7);
        assert_eq!((id.major, id.minor, id.inode), (0x103, 0xa, 7));
        assert_eq!(
            path_in_process_root(42, Path::new("/usr/lib/libpq.so.5")),
            PathBuf::from("/proc/42/root/usr/lib/libpq.so.5")
        );
    }

    #[test]
    fn process_root_opens_resolve_symlinks_inside_that_root() {
        // A "container root" whose library is an absolute symlink to a host file: resolved
        // inside the root, the host file is out of reach.
        let root_dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(LIBSSL, root_dir.path().join("planted.so")).unwrap();
        assert!(std::fs::File::open(root_dir.path().join("planted.so")).is_ok());
        let root = std::fs::File::open(root_dir.path()).unwrap();
        let error = open_in_root(&root, Path::new("/planted.so")).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
        // Magic links are refused: /proc/self/root would lead back out of any root.
        let pid = std::process::id();
        let magic = format!("/proc/self/root{LIBSSL}");
        assert!(std::fs::File::open(&magic).is_ok());
        assert!(open_in_process_root(pid, Path::new(&magic)).is_err());
        // Our own root is `/`: the real library opens and parses.
        let file = open_in_process_root(pid, Path::new(LIBSSL)).unwrap();
        let image = read_image_from(file, Path::new(LIBSSL), &["SSL_write"], &[]).unwrap();
        assert!(image.function("SSL_write").is_some());
    }

    #[test]
    fn identifies_system_libraries_by_symbols() {
        let pq = target_image(LIBPQ);
        assert_eq!(pq.kind, LibraryKind::Libpq);
        let names: Vec<_> = pq.probes.iter().map(|p| p.function).collect();
        for name in [
            "PQexec",
            "PQsendQuery",
            "PQsendPrepare",
            "PQprepare",
            "PQfinish",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let send = pq
            .probes
            .iter()
            .find(|p| p.function == "PQsendQuery")
            .unwrap();
        assert!(send.point.emulated, "{send:?}");

        let ssl = target_image(LIBSSL);
        assert_eq!(ssl.kind, LibraryKind::Libssl);
        assert!(ssl.version.as_deref().unwrap().starts_with("OPENSSL_3"));
        for probe in &ssl.probes {
            let spec = LIBSSL_FUNCTIONS
                .iter()
                .find(|s| s.name == probe.function)
                .unwrap();
            assert_eq!(probe.return_probe, spec.return_probe);
            // Every point is emulated or the entry (where a return probe is always right).
            assert!(probe.point.emulated || probe.point.offset_in_symbol == 0);
        }
        for other in ["/usr/lib/x86_64-linux-gnu/libcrypto.so.3", "/bin/sleep"] {
            assert_eq!(
                inspect_file(Path::new(other), MODEL).unwrap(),
                Inspection::Uninteresting,
                "{other}"
            );
        }
    }

    #[test]
    fn openssl_3_pairs_are_probed_once_where_they_forward() {
        let ssl = target_image(LIBSSL);
        let served: Vec<(&str, &[&str])> = ssl
            .probes
            .iter()
            .map(|p| (p.function, p.serves.as_slice()))
            .collect();
        // OpenSSL 3.0: SSL_read_ex and SSL_write_ex hand their four arguments to the
        // internal functions SSL_read and SSL_write call too, which open with a `push`.
        for (ex, pair) in [
            ("SSL_read_ex", ["SSL_read", "SSL_read_ex"]),
            ("SSL_write_ex", ["SSL_write", "SSL_write_ex"]),
        ] {
            let probe = ssl.probes.iter().find(|p| p.function == ex).unwrap();
            assert_eq!(probe.serves, pair, "{served:?}");
            assert!(probe.point.emulated && probe.return_probe, "{probe:?}");
            assert_eq!(probe.point.offset_in_symbol, 0);
            assert!(probe.point.symbol.starts_with(&format!("{ex}>@0x")));
            assert_eq!(probe.role.tls_abi(), Some(TlsAbi::Ex));
        }
        let names: Vec<&str> = ssl.probes.iter().map(|p| p.function).collect();
        assert_eq!(
            names,
            ["SSL_read_ex", "SSL_write_ex", "SSL_set_fd", "SSL_free"]
        );

        // The naive placement: each public function at its entry, a return probe on each.
        let naive = Placement {
            model: EmulationModel::CanonicalNops,
            at_entry: true,
        };
        let Inspection::Target(naive) = inspect_file(Path::new(LIBSSL), naive).unwrap() else {
            panic!("libssl not recognised");
        };
        let names: Vec<&str> = naive.probes.iter().map(|p| p.function).collect();
        assert_eq!(
            names,
            [
                "SSL_write",
                "SSL_read",
                "SSL_write_ex",
                "SSL_read_ex",
                "SSL_set_fd",
                "SSL_free"
            ]
        );
        assert!(naive.probes.iter().all(|p| p.point.offset_in_symbol == 0));
    }

    #[test]
    fn one_attachment_per_file_released_with_the_last_process() {
        let mut registry = TargetRegistry::new(MODEL, RegistryLimits::default());
        let pq = file(1);
        let inspection = || Ok(Inspection::Target(target_image(LIBPQ)));
        let Some(TargetAction::Attach(plan)) =
            registry.record(10, Path::new(LIBPQ), pq, inspection())
        else {
            panic!("no attach");
        };
        assert_eq!(plan.file, pq);
        assert_eq!(registry.lookup(pq), MappingLookup::Target(plan.id));
        // A second process, and a racing second inspection of the same file: no new attach.
        assert_eq!(
            registry.on_library_mapped(11, Path::new("/nonexistent"), pq),
            None
        );
        assert_eq!(
            registry.record(12, Path::new(LIBPQ), pq, inspection()),
            None
        );
        // The same process twice counts once.
        assert_eq!(
            registry.on_library_mapped(11, Path::new("/nonexistent"), pq),
            None
        );
        assert_eq!(registry.status()[0].processes, 3);

        assert_eq!(registry.on_process_exit(10), vec![]);
        assert_eq!(registry.on_process_exit(11), vec![]);
        assert_eq!(registry.on_process_exit(999), vec![]);
        assert_eq!(
            registry.on_process_exit(12),
            vec![TargetAction::Detach {
                id: plan.id,
                file: pq
            }]
        );
        assert!(registry.status().is_empty());
        assert_eq!(registry.lookup(pq), MappingLookup::Unknown);
        // Mapped again later: a new attachment under a new id.
        let Some(TargetAction::Attach(again)) =
            registry.record(13, Path::new(LIBPQ), pq, inspection())
        else {
            panic!("no attach");
        };
        assert_ne!(again.id, plan.id);
    }

    #[test]
    fn uninteresting_and_malformed_files_are_read_once() {
        let mut registry = TargetRegistry::new(MODEL, RegistryLimits::default());
        let libc = file(2);
        let path = Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6");
        let result = registry.record(1, path, libc, inspect_file(path, MODEL));
        assert_eq!(result, None);
        assert_eq!(registry.lookup(libc), MappingLookup::Uninteresting);
        // A later mapping is a hash hit: the path is not even opened.
        assert_eq!(
            registry.on_library_mapped(2, Path::new("/nonexistent"), libc),
            None
        );
        assert_eq!(registry.counters().inspected, 1);

        let mut garbage = tempfile::NamedTempFile::new().unwrap();
        garbage.write_all(b"\x7fELF not really").unwrap();
        let bad = file(3);
        let result = registry.record(1, garbage.path(), bad, inspect_file(garbage.path(), MODEL));
        assert_eq!(result, None);
        assert_eq!(registry.lookup(bad), MappingLookup::Uninteresting);
        assert_eq!(registry.counters().inspect_errors, 1);

        // A file that could not be opened (its process already gone) is tried again.
        let gone = file(4);
        assert_eq!(
            registry.on_library_mapped(999_999_999, Path::new("/x.so"), gone),
            None
        );
        assert_eq!(registry.lookup(gone), MappingLookup::Unknown);
    }

    #[test]
    fn bounds_hold() {
        let limits = RegistryLimits {
            max_targets: 1,
            max_uninteresting: 2,
            max_processes: 1,
        };
        let mut registry = TargetRegistry::new(MODEL, limits);
        let ssl = || Ok(Inspection::Target(target_image(LIBSSL)));
        assert!(registry
            .record(1, Path::new(LIBSSL), file(1), ssl())
            .is_some());
        assert_eq!(registry.record(1, Path::new(LIBSSL), file(2), ssl()), None);
        assert_eq!(registry.counters().targets_refused, 1);
        // A second process past the process bound pins the target: never released early.
        assert_eq!(
            registry.on_library_mapped(2, Path::new("/x"), file(1)),
            None
        );
        assert!(registry.status()[0].pinned);
        assert_eq!(registry.on_process_exit(1), vec![]);
        assert_eq!(registry.status().len(), 1);
        for inode in 10..13 {
            registry.record(
                1,
                Path::new("/x"),
                file(inode),
                Ok(Inspection::Uninteresting),
            );
        }
        assert_eq!(registry.counters().uninteresting_cleared, 1);
        assert!(registry.uninteresting.len() <= 2);
    }

    struct Killed(Child);

    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn finds_libssl_in_a_running_process_and_detaches_when_it_exits() {
        let child = Command::new("python3")
            .args(["-c", "import ssl, time; time.sleep(60)"])
            .spawn()
            .expect("python3 is needed for this test");
        let mut child = Killed(child);
        let pid = child.0.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
            if maps.contains("libssl.so") {
                break;
            }
            assert!(Instant::now() < deadline, "python3 never mapped libssl");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut registry = TargetRegistry::new(MODEL, RegistryLimits::default());
        let actions = registry.scan_process(pid).unwrap();
        let plans: Vec<&AttachPlan> = actions
            .iter()
            .filter_map(|a| match a {
                TargetAction::Attach(plan) => Some(plan),
                TargetAction::Detach { .. } => None,
            })
            .collect();
        let ssl = plans
            .iter()
            .find(|p| p.image.kind == LibraryKind::Libssl)
            .expect("libssl target");
        assert!(
            ssl.path.starts_with(format!("/proc/{pid}/root/")),
            "{}",
            ssl.path.display()
        );
        let status = registry.status();
        let line = status.iter().find(|s| s.id == ssl.id).unwrap();
        assert_eq!(line.processes, 1);
        assert!(line
            .probes
            .iter()
            .any(|p| p.function == "SSL_write" || p.serves.contains(&"SSL_write")));
        let json = serde_json::to_value(&status).unwrap();
        let probes = json[0]["probes"].as_array().unwrap();
        assert!(probes.iter().all(|p| p["point"]["file_offset"].is_u64()));
        assert!(probes
            .iter()
            .all(|p| p["point"]["reason"]["kind"].is_string()));
        // Scanning again adds nothing.
        assert_eq!(registry.scan_process(pid).unwrap(), vec![]);

        // The whole-node scan finds the same file (once), whoever else maps it.
        let mut node = TargetRegistry::new(MODEL, RegistryLimits::default());
        let node_actions = node.scan_all_processes();
        let node_ssl = node
            .status()
            .into_iter()
            .find(|s| s.file == ssl.file)
            .expect("whole-node scan found libssl");
        assert!(node_ssl.processes >= 1);
        let attaches = node_actions
            .iter()
            .filter(|a| matches!(a, TargetAction::Attach(p) if p.file == ssl.file))
            .count();
        assert_eq!(attaches, 1);

        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let released = registry.on_process_exit(pid);
        assert!(
            released.contains(&TargetAction::Detach {
                id: ssl.id,
                file: ssl.file
            }),
            "{released:?}"
        );
        assert!(registry.status().is_empty());
    }
}

#[cfg(test)]
mod static_ssl_tests {
    use super::*;
    use crate::loader::uprobe::EmulationModel;
    use std::process::Command;

    /// Builds an executable that defines OpenSSL's entry points itself, as a statically
    /// linked server does; `-rdynamic` puts them in `.dynsym`, without it only the unstripped
    /// `.symtab` has them.
    fn build(dir: &Path, rdynamic: bool) -> PathBuf {
        let source = dir.join("server.c");
        std::fs::write(
            &source,
            "int SSL_write(void *s, const void *b, int n) { return n + (s != b); }\n\
             int SSL_read(void *s, void *b, int n) { return n - (s != b); }\n\
             void SSL_free(void *s) { (void)s; }\n\
             int main(void) { return SSL_write(0, 0, 1) + SSL_read(0, 0, 1); }\n",
        )
        .unwrap();
        let output = dir.join(if rdynamic { "exported" } else { "local" });
        let mut command = Command::new("cc");
        command.arg("-O1").arg("-o").arg(&output).arg(&source);
        if rdynamic {
            command.arg("-rdynamic");
        }
        let status = command.status().expect("this test needs a C compiler (cc)");
        assert!(status.success());
        output
    }

    #[test]
    fn executables_carrying_openssl_are_static_ssl_targets() {
        let dir = tempfile::tempdir().unwrap();
        for rdynamic in [true, false] {
            let path = build(dir.path(), rdynamic);
            let Inspection::Target(image) =
                inspect_file(&path, Placement::chosen(EmulationModel::CanonicalNops)).unwrap()
            else {
                panic!("{} not recognised", path.display());
            };
            assert_eq!(image.kind, LibraryKind::StaticSsl);
            let names: Vec<_> = image.probes.iter().map(|p| p.function).collect();
            assert_eq!(names, ["SSL_write", "SSL_read", "SSL_free"]);
        }
    }
}
