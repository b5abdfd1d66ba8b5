//! Attaching the libpq and OpenSSL programs to the targets the registry finds, and keeping
//! their links: the one place that turns an `AttachPlan` into aya calls. The three libpq
//! send functions carry every query (`PQexec`, `PQexecParams` and `PQprepare` call them), so
//! only they are probed, each query is reported once, and one program serves all three
//! (an attach cookie says which). OpenSSL's reads and writes get an
//! entry and a return program each (on the public functions, or once on the function a
//! pair forwards to), `SSL_set_fd` and `SSL_free` an entry program.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap as KernelHashMap, MapData},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
        UProbe,
    },
    Ebpf,
};
use rasp_common::{
    discovery::{ExecFileKey, SEEN_TARGET},
    record::{SQL_FN_SEND_PREPARE, SQL_FN_SEND_QUERY, SQL_FN_SEND_QUERY_PARAMS},
};
use serde::{Deserialize, Serialize};

use super::{
    discovery::Sighting,
    targets::{inspect_file, RegistryLimits},
    targets::{FunctionRole, PlannedProbe, TlsAbi},
    FileId, Placement, TargetAction, TargetId, TargetRegistry, TargetStatus,
};
use crate::loader::{teardown::OwnedLink, verify::Verified, ProgramState, ProgramStatus};

/// How a target was found.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// The scan of every process's maps (and the system library directories) at start.
    StartScan,
    /// A library load the kernel reported as a file it had not seen (`LIB_FILE_NEW`).
    LibraryLoad,
    /// An exec of an executable the kernel had not seen.
    Exec,
    /// The slow safety-net rescan: a sighting was lost (queue full, or a race).
    Rescan,
}

/// The one libpq program: the attach cookie (`SQL_FN_*`) tells it which function it sits
/// in, and so which register holds the query.
pub const LIBPQ_PROGRAM: &str = "rasp_pq_send";

/// libpq function → the cookie `LIBPQ_PROGRAM` is attached with there.
pub const LIBPQ_FUNCTIONS: [(&str, u32); 3] = [
    ("PQsendQuery", SQL_FN_SEND_QUERY),
    ("PQsendQueryParams", SQL_FN_SEND_QUERY_PARAMS),
    ("PQsendPrepare", SQL_FN_SEND_PREPARE),
];

/// Every uprobe program, for the loader's parallel verification at start.
pub const PROGRAMS: [&str; 9] = [
    LIBPQ_PROGRAM,
    TLS_PROGRAMS[0],
    TLS_PROGRAMS[1],
    TLS_PROGRAMS[2],
    TLS_PROGRAMS[3],
    TLS_PROGRAMS[4],
    TLS_PROGRAMS[5],
    TLS_PROGRAMS[6],
    TLS_PROGRAMS[7],
];

/// OpenSSL's programs, loaded at start and attached per target (`programs_for`).
const TLS_PROGRAMS: [&str; 8] = [
    "rasp_ssl_read_enter",
    "rasp_ssl_read_ex_enter",
    "rasp_ssl_read_return",
    "rasp_ssl_write_enter",
    "rasp_ssl_write_ex_enter",
    "rasp_ssl_write_return",
    "rasp_ssl_set_fd",
    "rasp_ssl_free",
];

/// What is attached for a planned probe.
struct ProbePrograms {
    entry: &'static str,
    /// Attached first at the same point (an entry firing with no return program behind it
    /// would leave its call saved until the LRU forgets it).
    ret: Option<&'static str>,
    /// For the entry program: which function it sits in.
    cookie: Option<u64>,
}

/// The programs of a planned probe.
fn programs_for(probe: &PlannedProbe) -> Option<ProbePrograms> {
    use FunctionRole::*;
    let both = |entry, ret| ProbePrograms {
        entry,
        ret: Some(ret),
        cookie: None,
    };
    let entry = |entry| ProbePrograms {
        entry,
        ret: None,
        cookie: None,
    };
    Some(match probe.role {
        Query { .. } => {
            let (_, function) = LIBPQ_FUNCTIONS.iter().find(|(f, _)| *f == probe.function)?;
            ProbePrograms {
                entry: LIBPQ_PROGRAM,
                ret: None,
                cookie: Some(u64::from(*function)),
            }
        }
        TlsRead { abi: TlsAbi::Int } => both("rasp_ssl_read_enter", "rasp_ssl_read_return"),
        TlsRead { abi: TlsAbi::Ex } => both("rasp_ssl_read_ex_enter", "rasp_ssl_read_return"),
        TlsWrite { abi: TlsAbi::Int } => both("rasp_ssl_write_enter", "rasp_ssl_write_return"),
        TlsWrite { abi: TlsAbi::Ex } => both("rasp_ssl_write_ex_enter", "rasp_ssl_write_return"),
        TlsSetFd => entry("rasp_ssl_set_fd"),
        TlsFree => entry("rasp_ssl_free"),
        ConnectionOpened | ConnectionClosed => return None,
    })
}

/// Where a system's own libpq and libssl live before any process maps them: looked at once
/// at start so the first `psql` or TLS client after the agent starts is already covered (a
/// uprobe is per file, for every process that maps it later). Names are only the
/// candidates; symbols decide.
const LIBRARY_DIRS: [&str; 5] = [
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
];

/// File name prefixes of `LIBRARY_DIRS` entries worth reading.
const LIBRARY_PREFIXES: [&str; 2] = ["libpq", "libssl"];

/// One attached probe, for `status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachedProbe {
    /// The probed function (`SSL_read_ex>@0x352d0`: code `SSL_read_ex` calls, no symbol).
    pub function: String,
    pub offset_in_symbol: u64,
    pub file_offset: u64,
    pub instruction: String,
    /// The kernel emulates the probed instruction (cheap) rather than single-stepping it.
    pub emulated: bool,
    /// A return probe shares the point.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub return_probe: bool,
    /// The public functions this probe serves, when it sits in code they forward to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serves: Vec<String>,
}

/// A target as `status` shows it: what the registry knows and what is really attached.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UprobeTargetReport {
    /// `libpq`, `libssl`, `static_ssl`.
    pub kind: String,
    /// Where the agent opened it from (`/proc/<pid>/root/...` for a process's copy).
    pub path: String,
    /// `major:minor inode`: one attachment per distinct file.
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Processes known to map it.
    pub processes: usize,
    pub attached: Vec<AttachedProbe>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// How it was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_by: Option<FoundBy>,
    /// From the kernel's timestamp of the mapping (or exec) that revealed it to the end of
    /// its attach calls, in microseconds (found by library load or exec only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_latency_us: Option<u64>,
}

pub struct Uprobes {
    registry: TargetRegistry,
    /// Each target's attachments, owned: dropping one detaches it (and at exit they go to
    /// `teardown::detach_all` with the others).
    links: HashMap<TargetId, Vec<OwnedLink>>,
    attached: HashMap<TargetId, Vec<AttachedProbe>>,
    errors: HashMap<TargetId, Vec<String>>,
    found: HashMap<TargetId, (FoundBy, Option<u64>)>,
    /// The kernel's `SEEN_EXEC_FILES`: targets are marked so every mapping of them is
    /// reported, and unmarked when released so the next mapping is reported again.
    seen: Option<KernelHashMap<MapData, ExecFileKey, u32>>,
}

impl Uprobes {
    /// Load (not attach) the libpq and OpenSSL programs; one status line each.
    /// `verified`: what the loader's parallel pass already loaded.
    pub fn load(ebpf: &mut Ebpf, verified: &Verified) -> (Uprobes, Vec<ProgramStatus>) {
        let names = [(LIBPQ_PROGRAM, "libpq")]
            .into_iter()
            .chain(TLS_PROGRAMS.iter().map(|name| (*name, "libssl")));
        let statuses = names
            .map(|(name, library)| {
                let loaded = program(ebpf, name).and_then(|p| {
                    verified.ensure(name, || {
                        p.load().map_err(|e| crate::loader::error_chain(&e))
                    })
                });
                match loaded {
                    Ok(()) => ProgramStatus {
                        name: name.to_string(),
                        hook: format!("uprobe/{library} (attached per library file)"),
                        state: ProgramState::Loaded,
                        error: None,
                    },
                    Err(e) => {
                        tracing::error!(program = name, error = %e, "uprobe program did not load");
                        ProgramStatus {
                            name: name.to_string(),
                            hook: format!("uprobe/{library}"),
                            state: ProgramState::Failed,
                            error: Some(e),
                        }
                    }
                }
            })
            .collect();
        let seen = ebpf
            .take_map("SEEN_EXEC_FILES")
            .ok_or("map SEEN_EXEC_FILES missing from the eBPF object".to_string())
            .and_then(|m| KernelHashMap::try_from(m).map_err(|e| e.to_string()));
        let seen = match seen {
            Ok(map) => Some(map),
            Err(e) => {
                tracing::error!(error = %e, "libraries loaded after start will only be found by the slow rescan");
                None
            }
        };
        let uprobes = Uprobes {
            registry: TargetRegistry::new(
                Placement::of_running_kernel(),
                RegistryLimits::default(),
            ),
            links: HashMap::new(),
            attached: HashMap::new(),
            errors: HashMap::new(),
            found: HashMap::new(),
            seen,
        };
        (uprobes, statuses)
    }

    /// Find targets in every running process and (`with_library_dirs`) the system library
    /// directories, and attach to new ones. Blocking: reads /proc and ELF files.
    pub fn scan(&mut self, ebpf: &mut Ebpf, with_library_dirs: bool) {
        let by = if with_library_dirs {
            FoundBy::StartScan
        } else {
            FoundBy::Rescan
        };
        for action in self.registry.scan_all_processes() {
            self.apply(ebpf, action, by, None);
        }
        // After the processes' targets are attached (or forgotten, when their process
        // exited before the attach could open the file), so the system's copies are held.
        if with_library_dirs {
            for action in self.library_dir_candidates() {
                self.apply(ebpf, action, by, None);
            }
        }
    }

    /// Act on one sighting from the pipeline. Blocking when it names a file never seen.
    pub fn on_sighting(&mut self, ebpf: &mut Ebpf, sighting: Sighting) {
        match sighting {
            Sighting::Mapped {
                pid,
                path,
                file,
                ts_boot_ns,
            } => {
                if let Some(action) = self.registry.on_library_mapped(pid, &path, file) {
                    self.apply(ebpf, action, FoundBy::LibraryLoad, Some(ts_boot_ns));
                }
            }
            Sighting::Exec {
                pid,
                exe,
                ts_boot_ns,
            } => {
                // The old image and its mappings are gone.
                for action in self.registry.on_process_exit(pid) {
                    self.apply(ebpf, action, FoundBy::Exec, None);
                }
                if let Some(exe) = exe {
                    if let Some(action) = self.registry.on_executable(pid, &exe) {
                        self.apply(ebpf, action, FoundBy::Exec, Some(ts_boot_ns));
                    }
                }
            }
            Sighting::Fork { parent, child } => self.registry.on_fork(parent, child),
            Sighting::Exit { pid } => self.on_exit(ebpf, pid),
        }
    }

    /// The processes that map a target (for the pipeline's filter).
    /// Every attachment, for closing them all at once at exit (`teardown::detach_all`).
    pub fn into_links(self) -> Vec<OwnedLink> {
        self.links.into_values().flatten().collect()
    }

    pub fn tracked_processes(&self) -> std::collections::HashSet<u32> {
        self.registry.tracked_processes()
    }

    fn mark_seen(&mut self, file: FileId, target: bool) {
        let Some(seen) = self.seen.as_mut() else {
            return;
        };
        let key = ExecFileKey {
            dev: file.kernel_dev(),
            _pad: 0,
            ino: file.inode,
        };
        let result = if target {
            seen.insert(key, SEEN_TARGET, 0)
        } else {
            seen.remove(&key)
        };
        if let Err(e) = result {
            // Not found on removal: evicted already, which is the same thing.
            if target {
                tracing::warn!(%file, error = %e, "could not mark a uprobe target in SEEN_EXEC_FILES");
            }
        }
    }

    fn library_dir_candidates(&mut self) -> Vec<TargetAction> {
        let agent = std::process::id();
        let mut actions = Vec::new();
        for dir in LIBRARY_DIRS {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let candidate = LIBRARY_PREFIXES.iter().any(|p| name.starts_with(p));
                if !(candidate && name.contains(".so")) {
                    continue;
                }
                let path: PathBuf = entry.path();
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let file = FileId {
                    major: libc::major(meta.dev()),
                    minor: libc::minor(meta.dev()),
                    inode: meta.ino(),
                };
                match self.registry.lookup(file) {
                    super::targets::MappingLookup::Unknown => {}
                    super::targets::MappingLookup::Target(_) => {
                        // Found in a process's maps first: held by the agent as well, so
                        // that process's exit does not release the system's own copy.
                        self.registry.on_library_mapped(agent, &path, file);
                        continue;
                    }
                    super::targets::MappingLookup::Uninteresting => continue,
                }
                let inspected = inspect_file(&path, self.registry.placement());
                // Held by the agent itself: a file on disk stays attached while it runs.
                if let Some(action) = self.registry.record(agent, &path, file, inspected) {
                    actions.push(action);
                }
            }
        }
        actions
    }

    fn apply(
        &mut self,
        ebpf: &mut Ebpf,
        action: TargetAction,
        by: FoundBy,
        since_boot_ns: Option<u64>,
    ) {
        match action {
            TargetAction::Attach(plan) => {
                self.mark_seen(plan.file, true);
                let mut links = Vec::new();
                let mut attached = Vec::new();
                let mut errors = Vec::new();
                for probe in &plan.image.probes {
                    let Some(programs) = programs_for(probe) else {
                        continue;
                    };
                    let ret = programs.ret;
                    let mut probe_links = Vec::new();
                    let mut failed = None;
                    let order = ret
                        .map(|name| (name, None))
                        .into_iter()
                        .chain([(programs.entry, programs.cookie)]);
                    for (name, cookie) in order {
                        match attach_one(ebpf, name, &plan.path, probe.point.file_offset, cookie) {
                            Ok(link) => probe_links.push(OwnedLink::UProbe(link)),
                            Err(e) => {
                                failed = Some(format!("{} ({name}): {e}", probe.point.symbol));
                                break;
                            }
                        }
                    }
                    if let Some(e) = failed {
                        tracing::warn!(function = probe.function, path = ?plan.path, error = %e, "uprobe attach failed");
                        errors.push(e);
                        drop(probe_links);
                        continue;
                    }
                    links.extend(probe_links);
                    attached.push(AttachedProbe {
                        function: probe.point.symbol.clone(),
                        offset_in_symbol: probe.point.offset_in_symbol,
                        file_offset: probe.point.file_offset,
                        instruction: probe.point.instruction.clone(),
                        emulated: probe.point.emulated,
                        return_probe: ret.is_some(),
                        serves: probe.serves.iter().map(|s| s.to_string()).collect(),
                    });
                }
                if links.is_empty() && !errors.is_empty() {
                    // Typically the process whose root the path goes through exited before
                    // the attach opened it: forget the file, so its next mapping (or the
                    // system library directories) brings it back.
                    tracing::info!(target = plan.id.0, path = ?plan.path, "no probe attached; target forgotten until mapped again");
                    self.registry.forget(plan.id);
                    self.mark_seen(plan.file, false);
                    return;
                }
                let latency_us = since_boot_ns
                    .map(|ts| crate::events::BootClock::boot_now_ns().saturating_sub(ts) / 1000);
                tracing::info!(target = plan.id.0, kind = %plan.image.kind, path = ?plan.path, probes = attached.len(), found_by = ?by, latency_us, "uprobes attached");
                self.found.insert(plan.id, (by, latency_us));
                self.links.insert(plan.id, links);
                self.attached.insert(plan.id, attached);
                self.errors.insert(plan.id, errors);
            }
            TargetAction::Detach { id, file } => {
                self.mark_seen(file, false);
                self.found.remove(&id);
                drop(self.links.remove(&id));
                self.attached.remove(&id);
                self.errors.remove(&id);
            }
        }
    }

    /// A process exited: drop what only it mapped.
    pub fn on_exit(&mut self, ebpf: &mut Ebpf, pid: u32) {
        for action in self.registry.on_process_exit(pid) {
            self.apply(ebpf, action, FoundBy::Rescan, None);
        }
    }

    pub fn report(&self) -> Vec<UprobeTargetReport> {
        self.registry
            .status()
            .into_iter()
            .map(|t: TargetStatus| UprobeTargetReport {
                kind: serde_json::to_value(t.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                path: t.path.display().to_string(),
                file: t.file.to_string(),
                build_id: t.build_id.clone(),
                version: t.version.clone(),
                processes: t.processes,
                attached: self.attached.get(&t.id).cloned().unwrap_or_default(),
                errors: self.errors.get(&t.id).cloned().unwrap_or_default(),
                found_by: self.found.get(&t.id).map(|(by, _)| *by),
                attach_latency_us: self.found.get(&t.id).and_then(|(_, l)| *l),
            })
            .collect()
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} not in the eBPF object"))?
        .try_into()
        .map_err(|e| format!("{e}"))
}

fn attach_one(
    ebpf: &mut Ebpf,
    name: &str,
    path: &Path,
    file_offset: u64,
    cookie: Option<u64>,
) -> Result<UProbeLink, String> {
    let program = program(ebpf, name)?;
    let point = UProbeAttachPoint {
        location: UProbeAttachLocation::AbsoluteOffset(file_offset),
        cookie,
    };
    let id = program
        .attach(point, path, UProbeScope::AllProcesses)
        .map_err(|e| crate::loader::error_chain(&e))?;
    // Owned: a released target drops its own, and at exit all go to `teardown`.
    program
        .take_link(id)
        .map_err(|e| crate::loader::error_chain(&e))
}
