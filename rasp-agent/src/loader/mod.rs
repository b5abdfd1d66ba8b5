//! Loading and attaching the eBPF programs: resolve kernel offsets from BTF, load the
//! embedded object with the ring buffer sized as asked, attach each program (a failure is
//! recorded, not fatal, unless no process program attaches), and probe whether BPF-LSM is
//! usable. The interest maps that steer the file/library/connect pre-filters are handed
//! out as `InterestMaps` (`interest.rs`).

pub mod btf;
pub mod deny;
pub mod env;
pub mod floor;
pub mod interest;
pub mod kfunc;
pub mod privileges;
pub mod shapes;
pub mod teardown;
pub mod tls;
pub mod uprobe;
pub mod verify;

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        trace_point::TracePointLink, BtfTracePoint, CgroupAttachMode, CgroupSkb,
        CgroupSkbAttachType, CgroupSockAddr, Lsm, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use rasp_common::{offsets::NO_SYSCALL, SyscallNumbers};
use serde::{Deserialize, Serialize};

pub use interest::{Interest, InterestMaps, OverCapacity, Usage};

/// The eBPF object built by `cargo xtask build-ebpf` (empty if the agent was built without).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rasp-ebpf.o"));

/// The program every process's identity comes from (what it runs, its argv, its parent).
pub const EXEC_PROGRAM: &str = "rasp_exec";

/// Tracing programs: (program name in the object, BTF tracepoint).
const TRACEPOINTS: &[(&str, &str)] = &[
    (EXEC_PROGRAM, "sched_process_exec"),
    ("rasp_fork", "sched_process_fork"),
    ("rasp_exit", "sched_process_exit"),
    // Not a syscall: requests submitted through io_uring, which no syscall hook sees.
    ("rasp_io_uring", "io_uring_submit_req"),
];

/// Syscall tracepoint programs: (program, tracepoints in category `syscalls`). One program
/// serves every syscall of a family; a tracepoint this kernel lacks (no `open`/`creat` on
/// arm64, no `openat2` before 5.6) is recorded as failed and the others still attach.
const SYSCALL_TRACEPOINTS: &[(&str, &[&str])] = &[
    (
        "rasp_file_open",
        &[
            "sys_exit_openat",
            "sys_exit_open",
            "sys_exit_creat",
            "sys_exit_openat2",
        ],
    ),
    ("rasp_library_load", &["sys_enter_mmap"]),
    ("rasp_connect", &["sys_enter_connect"]),
    // AF_UNIX connects only, in place of `rasp_connect` where the cgroup hooks observe
    // IPv4/6 connects (`CONNECT_TRACEPOINT_PROGRAM`).
    (UNIX_CONNECT_PROGRAM, &["sys_enter_connect"]),
    // The issue-19 hooks, at syscall exit (successful calls; the caller's strings are
    // resident by then). `SYSCALL_SHAPES` says how each reads its arguments. The legacy
    // path-only calls (chmod, unlink, rename, utime ...) exist on x86_64 only.
    (
        "rasp_file_change",
        &[
            "sys_exit_chmod",
            "sys_exit_fchmod",
            "sys_exit_fchmodat",
            "sys_exit_fchmodat2",
            "sys_exit_setxattr",
            "sys_exit_lsetxattr",
            "sys_exit_fsetxattr",
            "sys_exit_unlink",
            "sys_exit_unlinkat",
            "sys_exit_rmdir",
            "sys_exit_rename",
            "sys_exit_renameat",
            "sys_exit_renameat2",
            "sys_exit_truncate",
            "sys_exit_ftruncate",
            "sys_exit_utime",
            "sys_exit_utimes",
            "sys_exit_futimesat",
            "sys_exit_utimensat",
            "sys_exit_symlink",
            "sys_exit_symlinkat",
            "sys_exit_link",
            "sys_exit_linkat",
        ],
    ),
    (
        "rasp_ptrace",
        &[
            "sys_exit_ptrace",
            "sys_exit_process_vm_readv",
            "sys_exit_process_vm_writev",
        ],
    ),
    ("rasp_namespace", &["sys_exit_setns", "sys_exit_unshare"]),
    ("rasp_mount", &["sys_exit_mount", "sys_exit_fsopen"]),
    // Absent on kernels built without module support (no module can be loaded there).
    (
        "rasp_kernel_module",
        &[
            "sys_exit_init_module",
            "sys_exit_finit_module",
            "sys_exit_delete_module",
        ],
    ),
    ("rasp_bpf", &["sys_exit_bpf"]),
    // Packet and raw IP sockets (sniffers, packet crafters).
    ("rasp_socket", &["sys_exit_socket"]),
];

const LSM_PROBE: (&str, &str) = ("rasp_lsm_probe", "bprm_check_security");

/// BPF-LSM programs that refuse what a deny rule names, attached where the kernel accepts
/// LSM programs: (program, hook).
const LSM_HOOKS: &[(&str, &str)] = &[
    ("rasp_lsm_exec", "bprm_check_security"),
    ("rasp_lsm_file_open", "file_open"),
    ("rasp_lsm_mmap_file", "mmap_file"),
    ("rasp_lsm_file_mprotect", "file_mprotect"),
    ("rasp_lsm_connect", "socket_connect"),
];

/// cgroup socket programs, attached to the cgroup2 root (every process): (program, hook).
/// Where `connect4`/`connect6` attach they also observe connects (the kernel's own copy of
/// the address), and the `sys_enter_connect` tracepoint is left out.
const CGROUP_SOCK_HOOKS: &[(&str, &str)] = &[
    ("rasp_connect4", "connect4"),
    ("rasp_connect6", "connect6"),
    ("rasp_sendmsg4", "sendmsg4"),
    ("rasp_sendmsg6", "sendmsg6"),
];

/// The tracepoint program the cgroup connect hooks replace.
const CONNECT_TRACEPOINT_PROGRAM: &str = "rasp_connect";
/// The AF_UNIX half of it, attached only where the cgroup hooks replace it (they do not see
/// AF_UNIX connects).
const UNIX_CONNECT_PROGRAM: &str = "rasp_unix_connect";
/// The egress program that drops quarantined cgroups' packets.
const QUARANTINE_EGRESS_PROGRAM: &str = "rasp_quarantine_egress";

/// Diagnostic switch: `RASP_INTEREST_ALL=1` makes the kernel send every open, executable
/// mapping and connect (`Interest::all()`), on top of whatever interest the policies later
/// apply. For checking the hooks by hand; it floods the ring buffer on a busy host.
const INTEREST_ALL_ENV: &str = "RASP_INTEREST_ALL";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this rasp-agent was built without its eBPF object: build with `cargo xtask build`")]
    NoObject,
    #[error("reading kernel BTF: {0}")]
    KernelBtf(#[from] btf::BtfError),
    #[error("loading kernel BTF for aya: {0}")]
    AyaBtf(#[from] aya::BtfError),
    #[error("loading the eBPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("map {0} missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("no program could be attached: {0}")]
    NothingAttached(String),
    #[error("linking kernel function calls: {0}")]
    Kfunc(String),
    #[error("invalid kernel interest ({what}): {reason}")]
    Interest { what: &'static str, reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgramState {
    Attached,
    /// Loaded into the kernel but deliberately not attached (capability probes).
    Loaded,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProgramStatus {
    pub name: String,
    pub hook: String,
    pub state: ProgramState,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LsmStatus {
    pub available: bool,
    /// Why (not): the active LSM list, or the kernel's answer to loading a probe program.
    pub reason: String,
    pub active: Vec<String>,
}

pub struct Loaded {
    /// Owns programs and links: dropping it detaches everything (nothing is pinned).
    pub ebpf: Ebpf,
    pub programs: Vec<ProgramStatus>,
    pub lsm: LsmStatus,
    /// The pre-filters' maps, empty (nothing sent) until `InterestMaps::apply`.
    pub interest: InterestMaps,
    /// The deny maps, empty (nothing enforced) until a plan is applied.
    pub deny: deny::DenyMaps,
    /// Which enforcing hooks attached: what the deny plan can count on.
    pub caps: deny::KernelCapabilities,
    /// Attachments taken out of their programs, released at exit by `teardown::detach_all`
    /// (the TLS socket hooks add theirs).
    pub links: Vec<teardown::OwnedLink>,
    /// What the parallel verification loaded: the uprobe and TLS programs are attached later.
    pub verified: verify::Verified,
}

pub struct LoadOptions {
    pub ring_bytes: u32,
    /// The cgroup2 mount, where the cgroup socket programs attach.
    pub cgroup2: std::path::PathBuf,
    /// Fault injection: programs treated as refused by the verifier (not loaded), as an
    /// older kernel refuses some (`--fault-refuse-program`).
    pub refuse: Vec<String>,
}

pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let (mut ebpf, aya_btf) = open(opts.ring_bytes)?;
    let (lsm, probe) = probe_lsm(&mut ebpf, &aya_btf);
    let jobs = parallel_jobs(lsm.available);
    let verified = verify::verify_in_parallel(&mut ebpf, &aya_btf, &jobs, &opts.refuse);
    let mut programs =
        attach_sched_tracepoints(&mut ebpf, &aya_btf, &|name| name.to_string(), &verified);
    if programs.iter().all(|p| p.state == ProgramState::Failed) {
        let why: Vec<String> = programs
            .iter()
            .map(|p| format!("{}: {}", p.name, p.error.as_deref().unwrap_or("?")))
            .collect();
        return Err(LoadError::NothingAttached(why.join("; ")));
    }

    let cgroup_statuses = attach_cgroup_sock(&mut ebpf, &opts.cgroup2, &verified);
    let cgroup_socket = cgroup_statuses
        .iter()
        .all(|p| p.state == ProgramState::Attached);
    programs.extend(cgroup_statuses);
    programs.push(attach_quarantine_egress(
        &mut ebpf,
        &opts.cgroup2,
        &verified,
    ));
    let mut links = Vec::new();
    programs.extend(attach_syscall_tracepoints(
        &mut ebpf,
        &|name| name.to_string(),
        cgroup_socket,
        &verified,
        &mut links,
    ));

    let mut interest = InterestMaps::take(&mut ebpf)?;
    if std::env::var_os(INTEREST_ALL_ENV).is_some_and(|v| v == "1") {
        tracing::warn!(
            env = INTEREST_ALL_ENV,
            "diagnostic: the kernel sends every open, executable mapping and connect"
        );
        interest.force_all(&Interest::default())?;
    }

    programs.push(probe);
    let mut lsm_attached = false;
    if lsm.available {
        let statuses = attach_lsm(&mut ebpf, &aya_btf, &verified);
        lsm_attached = statuses.iter().all(|p| p.state == ProgramState::Attached);
        programs.extend(statuses);
    }
    log_verifier_cost(&ebpf);
    let deny = deny::DenyMaps::take(&mut ebpf)?;
    Ok(Loaded {
        ebpf,
        programs,
        lsm,
        interest,
        deny,
        caps: deny::KernelCapabilities {
            lsm: lsm_attached,
            cgroup_socket,
        },
        links,
        verified,
    })
}

/// The object with kernel offsets, the agent's tgid and syscall numbers filled in and
/// its maps created (nothing verified or attached yet), and the kernel's BTF.
fn open(ring_bytes: u32) -> Result<(Ebpf, Btf), LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let kernel_btf = btf::KernelBtf::from_file(std::path::Path::new(btf::KernelBtf::VMLINUX))?;
    let offsets = btf::resolve_offsets(&kernel_btf)?;
    tracing::debug!(?offsets, "kernel offsets resolved from BTF");
    let aya_btf = Btf::from_sys_fs()?;

    // The file and library pre-filters call bpf_rdonly_cast, the SQL hold pre-check the
    // numeric iterator. A kernel without one of them (bpf_rdonly_cast: Linux < 6.2, the
    // iterator: < 6.4) leaves its placeholder, the verifier refuses the programs that call
    // it, and `status` says so; the other programs load as usual.
    let mut linked: Option<kfunc::AlignedObject> = None;
    for (placeholder, name) in rasp_common::offsets::KFUNC_PLACEHOLDERS {
        match kernel_btf.func_id(name) {
            Ok(id) => {
                let from = linked.as_ref().map_or(OBJECT, |o| o.bytes());
                let (object, calls) = kfunc::link(from, placeholder, id)?;
                tracing::debug!(calls, btf_id = id, kfunc = name, "kfunc calls linked");
                linked = Some(object);
            }
            Err(e) => {
                tracing::warn!(kfunc = name, error = %e, "programs calling it will not load");
            }
        }
    }
    let object = linked;
    let object = object.as_ref().map_or(OBJECT, |o| o.bytes());

    let agent_tgid = std::process::id();
    let syscalls = syscall_numbers();
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&aya_btf))
        .override_global("OFFSETS", &offsets, true)
        .override_global("AGENT_TGID", &agent_tgid, true)
        .override_global("SYSCALLS", &syscalls, true)
        .map_max_entries("EVENTS", ring_bytes)
        .load(object)?;

    fill_shapes(&mut ebpf)?;
    Ok((ebpf, aya_btf))
}

/// The programs the agent loads at start, for the parallel verification: every one except
/// the IPv4/6 connect tracepoint, which only a kernel without the cgroup connect hooks
/// needs (loaded then, on its own), and the LSM programs where BPF-LSM is not usable. The
/// uprobe programs (attached per library file later) and the TLS socket hooks are in.
fn parallel_jobs(lsm: bool) -> Vec<verify::Job<'static>> {
    let named = |name| verify::Job { name, hook: None };
    let hooked = |(name, hook): &(&'static str, &'static str)| verify::Job {
        name,
        hook: Some(hook),
    };
    let mut jobs: Vec<verify::Job<'static>> = TRACEPOINTS.iter().map(hooked).collect();
    jobs.extend(CGROUP_SOCK_HOOKS.iter().map(|(name, _)| named(name)));
    jobs.push(named(QUARANTINE_EGRESS_PROGRAM));
    jobs.extend(
        SYSCALL_TRACEPOINTS
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| *name != CONNECT_TRACEPOINT_PROGRAM)
            .map(named),
    );
    jobs.extend(uprobe::attach::PROGRAMS.iter().copied().map(named));
    jobs.push(named(tls::SOCKET_IO_PROGRAM));
    if lsm {
        jobs.extend(LSM_HOOKS.iter().map(hooked));
    }
    jobs
}

/// Write `SYSCALL_SHAPES` (how each issue-19 syscall passes its arguments) before any of
/// those programs is attached.
fn fill_shapes(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    let name = "SYSCALL_SHAPES";
    let map = ebpf.map_mut(name).ok_or(LoadError::MissingMap(name))?;
    let mut shapes: aya::maps::Array<&mut MapData, rasp_common::offsets::SyscallShape> =
        aya::maps::Array::try_from(map).map_err(|source| LoadError::Map { name, source })?;
    for (nr, shape) in shapes::syscall_shapes() {
        let Ok(index) = u32::try_from(nr) else {
            continue;
        };
        shapes
            .set(index, shape, 0)
            .map_err(|source| LoadError::Map { name, source })?;
    }
    Ok(())
}

/// Attach the BPF-LSM enforcing programs (only called when the probe loaded).
fn attach_lsm(ebpf: &mut Ebpf, btf: &Btf, verified: &verify::Verified) -> Vec<ProgramStatus> {
    LSM_HOOKS
        .iter()
        .map(|(name, hook)| {
            let result = ebpf
                .program_mut(name)
                .ok_or_else(|| format!("program {name} not in the eBPF object"))
                .and_then(|p| <&mut Lsm>::try_from(p).map_err(|e| e.to_string()))
                .and_then(|p| {
                    verified.ensure(name, || p.load(hook, btf).map_err(|e| error_chain(&e)))?;
                    p.attach().map_err(|e| error_chain(&e))?;
                    Ok(())
                });
            program_status(name, format!("lsm/{hook}"), result)
        })
        .collect()
}

/// The egress program that drops packets of quarantined cgroups' existing connections.
fn attach_quarantine_egress(
    ebpf: &mut Ebpf,
    cgroup2: &std::path::Path,
    verified: &verify::Verified,
) -> ProgramStatus {
    const NAME: &str = QUARANTINE_EGRESS_PROGRAM;
    let result = std::fs::File::open(cgroup2)
        .map_err(|e| format!("opening the cgroup2 root {}: {e}", cgroup2.display()))
        .and_then(|root| {
            let p: &mut CgroupSkb = ebpf
                .program_mut(NAME)
                .ok_or_else(|| format!("program {NAME} not in the eBPF object"))?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            verified.ensure(NAME, || p.load().map_err(|e| error_chain(&e)))?;
            // As for the socket hooks: a link, alongside other programs (see there).
            p.attach(root, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
                .map_err(|e| error_chain(&e))?;
            Ok(())
        });
    program_status(NAME, "cgroup_skb/egress".to_string(), result)
}

/// Attach the cgroup socket programs to the cgroup2 root, alongside any other program
/// there (systemd's, another agent's).
fn attach_cgroup_sock(
    ebpf: &mut Ebpf,
    cgroup2: &std::path::Path,
    verified: &verify::Verified,
) -> Vec<ProgramStatus> {
    let root = std::fs::File::open(cgroup2)
        .map_err(|e| format!("opening the cgroup2 root {}: {e}", cgroup2.display()));
    CGROUP_SOCK_HOOKS
        .iter()
        .map(|(name, hook)| {
            let result = root.as_ref().map_err(Clone::clone).and_then(|root| {
                let p: &mut CgroupSockAddr = ebpf
                    .program_mut(name)
                    .ok_or_else(|| format!("program {name} not in the eBPF object"))?
                    .try_into()
                    .map_err(|e| format!("{e}"))?;
                verified.ensure(name, || p.load().map_err(|e| error_chain(&e)))?;
                // As a BPF link (kernel ≥ 5.7) the attachment always coexists with other
                // programs on the cgroup; link_create takes no ALLOW_MULTI flag (EINVAL), and
                // aya passes the mode as that flag, so `Single` (0) is the multi-program form.
                p.attach(root, CgroupAttachMode::Single)
                    .map_err(|e| error_chain(&e))?;
                Ok(())
            });
            program_status(name, format!("cgroup/{hook}"), result)
        })
        .collect()
}

/// Attach the programs named in `TRACEPOINTS` to their BTF tracepoints. `program` maps the
/// table's name to the one in `ebpf` (the benchmark floor's empty programs are named
/// differently, on the same hooks).
fn attach_sched_tracepoints(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &dyn Fn(&str) -> String,
    verified: &verify::Verified,
) -> Vec<ProgramStatus> {
    TRACEPOINTS
        .iter()
        .map(|(name, tracepoint)| {
            let name = program(name);
            let result = attach_btf_tracepoint(ebpf, &name, tracepoint, btf, verified);
            program_status(&name, format!("tp_btf/{tracepoint}"), result)
        })
        .collect()
}

/// Load and attach the programs named in `SYSCALL_TRACEPOINTS`, one status per hook;
/// `program` as in `attach_sched_tracepoints`.
fn attach_syscall_tracepoints(
    ebpf: &mut Ebpf,
    program: &dyn Fn(&str) -> String,
    cgroup_connect: bool,
    verified: &verify::Verified,
    links: &mut Vec<teardown::OwnedLink>,
) -> Vec<ProgramStatus> {
    let mut statuses = Vec::new();
    for (name, tracepoints) in SYSCALL_TRACEPOINTS {
        // With the cgroup connect hooks, they observe IPv4/6 connects and the tracepoint
        // only AF_UNIX ones; without, one program serves both.
        let replaced = if cgroup_connect {
            CONNECT_TRACEPOINT_PROGRAM
        } else {
            UNIX_CONNECT_PROGRAM
        };
        if *name == replaced {
            unload(ebpf, &program(name));
            continue;
        }
        statuses.extend(attach_syscall_program(
            ebpf,
            &program(name),
            tracepoints,
            verified,
            links,
        ));
    }
    statuses
}

/// Load program `name` (unless `verified` did) and attach it to each of `tracepoints` in
/// category `syscalls`, keeping the links in `links`; one status per tracepoint.
pub(crate) fn attach_syscall_program(
    ebpf: &mut Ebpf,
    name: &str,
    tracepoints: &[&str],
    verified: &verify::Verified,
    links: &mut Vec<teardown::OwnedLink>,
) -> Vec<ProgramStatus> {
    let hook = |tracepoint: &str| format!("tracepoint/syscalls/{tracepoint}");
    match load_verified_tracepoint(ebpf, name, verified) {
        Ok(loaded) => tracepoints
            .iter()
            .map(|tracepoint| {
                let result = attach_tracepoint(loaded, tracepoint)
                    .map(|link| links.push(teardown::OwnedLink::TracePoint(link)));
                program_status(name, hook(tracepoint), result)
            })
            .collect(),
        // Not loaded (the verifier's answer is in the error): every hook it serves fails.
        Err(e) => tracepoints
            .iter()
            .map(|tracepoint| program_status(name, hook(tracepoint), Err(e.clone())))
            .collect(),
    }
}

/// What the verifier walked for each loaded program (the kernel's limit is 1M per program):
/// the margin a change to a program has left, in the log at start.
fn log_verifier_cost(ebpf: &Ebpf) {
    for (name, program) in ebpf.programs() {
        if let Some(insns) = program
            .info()
            .ok()
            .and_then(|i| i.verified_instruction_count())
        {
            tracing::debug!(program = name, verified_insns = insns, "verifier cost");
        }
    }
}

pub(crate) fn program_status(
    name: &str,
    hook: String,
    result: Result<(), String>,
) -> ProgramStatus {
    match result {
        Ok(()) => {
            tracing::info!(program = name, hook, "attached");
            ProgramStatus {
                name: name.to_string(),
                hook,
                state: ProgramState::Attached,
                error: None,
            }
        }
        Err(e) => {
            let e = shorten_verifier_log(e);
            tracing::error!(program = name, hook, error = %e, "attach failed");
            ProgramStatus {
                name: name.to_string(),
                hook,
                state: ProgramState::Failed,
                error: Some(e),
            }
        }
    }
}

/// A refused program's error carries the whole verifier log (megabytes when it ran out of
/// instructions). Status keeps the head (the error) and the tail (the verifier's summary:
/// where it stopped, instructions processed, stack depth).
fn shorten_verifier_log(e: String) -> String {
    const HEAD: usize = 512;
    const TAIL: usize = 2048;
    if e.len() <= HEAD + TAIL + 64 {
        return e;
    }
    let head_end = (0..=HEAD)
        .rev()
        .find(|&i| e.is_char_boundary(i))
        .unwrap_or(0);
    let tail_start = (e.len() - TAIL..e.len())
        .find(|&i| e.is_char_boundary(i))
        .unwrap_or(e.len());
    format!(
        "{} [... {} bytes of verifier log omitted ...] {}",
        &e[..head_end],
        tail_start - head_end,
        &e[tail_start..]
    )
}

/// The open family's numbers on the architecture the agent was built for (the kernel's).
fn syscall_numbers() -> SyscallNumbers {
    let nr = |n: libc::c_long| u32::try_from(n).unwrap_or(NO_SYSCALL);
    #[cfg(target_arch = "x86_64")]
    let (open, creat) = (nr(libc::SYS_open), nr(libc::SYS_creat));
    #[cfg(not(target_arch = "x86_64"))]
    let (open, creat) = (NO_SYSCALL, NO_SYSCALL);
    SyscallNumbers {
        open,
        openat: nr(libc::SYS_openat),
        creat,
        openat2: nr(libc::SYS_openat2),
    }
}

fn load_verified_tracepoint<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
    verified: &verify::Verified,
) -> Result<&'a mut TracePoint, String> {
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} not in the eBPF object"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    verified.ensure(name, || program.load().map_err(|e| error_chain(&e)))?;
    Ok(program)
}

/// Unload a tracepoint program the parallel pass loaded but this kernel does not attach.
fn unload(ebpf: &mut Ebpf, name: &str) {
    let Some(program) = ebpf.program_mut(name) else {
        return;
    };
    if let Ok(p) = <&mut TracePoint>::try_from(program) {
        // NotLoaded when the pass never loaded it: nothing to give back.
        let _ = p.unload();
    }
}

/// Attach `program` to `syscalls/<tracepoint>`; the link is the caller's to keep (dropping
/// it detaches), so that at exit `teardown` can release them all.
fn attach_tracepoint(program: &mut TracePoint, tracepoint: &str) -> Result<TracePointLink, String> {
    let id = program.attach("syscalls", tracepoint).map_err(|e| {
        let chain = error_chain(&e);
        if !chain.contains("No such file or directory") {
            return chain;
        }
        // A syscall compiled out of this kernel has no tracepoint: say which and why.
        let hint = if tracepoint.contains("module") {
            ": this kernel has no module support (no /proc/modules), so no module can be loaded and there is nothing to watch"
        } else {
            ": the syscall is not built into this kernel (or not on this architecture)"
        };
        format!("no such tracepoint syscalls/{tracepoint}{hint} ({chain})")
    })?;
    program.take_link(id).map_err(|e| error_chain(&e))
}

fn attach_btf_tracepoint(
    ebpf: &mut Ebpf,
    name: &str,
    tracepoint: &str,
    btf: &Btf,
    verified: &verify::Verified,
) -> Result<(), String> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} not in the eBPF object"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    verified.ensure(name, || {
        program.load(tracepoint, btf).map_err(|e| error_chain(&e))
    })?;
    program.attach().map_err(|e| error_chain(&e))?;
    Ok(())
}

/// BPF-LSM needs `bpf` in the active LSM list and a kernel that accepts LSM programs (this
/// project's CI kernel lists `bpf` but refuses the load with EPERM). Load the probe program,
/// never attach it: the answer is what enforcement will be able to use.
fn probe_lsm(ebpf: &mut Ebpf, btf: &Btf) -> (LsmStatus, ProgramStatus) {
    let (name, hook) = LSM_PROBE;
    let mut status = ProgramStatus {
        name: name.to_string(),
        hook: format!("lsm/{hook}"),
        state: ProgramState::Failed,
        error: None,
    };
    let active: Vec<String> = match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(s) => s
            .trim()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Err(e) => {
            let reason =
                format!("cannot read /sys/kernel/security/lsm ({e}): is securityfs mounted?");
            status.error = Some(reason.clone());
            return (
                LsmStatus {
                    available: false,
                    reason,
                    active: vec![],
                },
                status,
            );
        }
    };
    if !active.iter().any(|l| l == "bpf") {
        let reason = format!(
            "bpf is not in the active LSM list ({}); boot with lsm={},bpf",
            active.join(","),
            active.join(",")
        );
        status.error = Some(reason.clone());
        return (
            LsmStatus {
                available: false,
                reason,
                active,
            },
            status,
        );
    }
    let loaded = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} not in the eBPF object"))
        .and_then(|p| <&mut Lsm>::try_from(p).map_err(|e| e.to_string()))
        .and_then(|p| p.load(hook, btf).map_err(|e| error_chain(&e)));
    match loaded {
        Ok(()) => {
            status.state = ProgramState::Loaded;
            let reason = "bpf is an active LSM and the kernel accepts LSM programs".to_string();
            (
                LsmStatus {
                    available: true,
                    reason,
                    active,
                },
                status,
            )
        }
        Err(e) => {
            let reason = format!("bpf is an active LSM but the kernel refused an LSM program: {e}");
            status.error = Some(e);
            (
                LsmStatus {
                    available: false,
                    reason,
                    active,
                },
                status,
            )
        }
    }
}

/// The maps the agent reads: the ring buffer and the kernel's loss counters.
pub struct EventMaps {
    pub ring: RingBuf<MapData>,
    /// Per-CPU loss counts per `rasp_common::LossSite`.
    pub losses: PerCpuArray<MapData, u64>,
    /// The source line of each site's last loss.
    pub loss_lines: aya::maps::Array<MapData, u32>,
}

/// Take the ring buffer and the counters out of the loaded object.
pub fn take_maps(ebpf: &mut Ebpf) -> Result<EventMaps, LoadError> {
    let mut take = |name: &'static str| ebpf.take_map(name).ok_or(LoadError::MissingMap(name));
    let ring = RingBuf::try_from(take("EVENTS")?).map_err(|source| LoadError::Map {
        name: "EVENTS",
        source,
    })?;
    let losses = PerCpuArray::try_from(take("LOSSES")?).map_err(|source| LoadError::Map {
        name: "LOSSES",
        source,
    })?;
    let loss_lines =
        aya::maps::Array::try_from(take("LOSS_LINES")?).map_err(|source| LoadError::Map {
            name: "LOSS_LINES",
            source,
        })?;
    Ok(EventMaps {
        ring,
        losses,
        loss_lines,
    })
}

/// aya errors keep the kernel's verifier log and errno in their sources.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// The ring buffer size must be a power of two and a multiple of the page size.
pub fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let v: u64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a byte count: {e}"))?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    if v < page || !v.is_power_of_two() || v > (1 << 30) {
        return Err(format!(
            "{v} bytes: the ring buffer size must be a power of two between {page} (one page) and 1073741824"
        ));
    }
    Ok(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_verifier_logs_keep_head_and_tail() {
        let short = "refused: R1 invalid mem access".to_string();
        assert_eq!(shorten_verifier_log(short.clone()), short);
        let long = format!(
            "Argument list too long: {}processed 1000001 insns",
            "0: r1 = r2\n".repeat(100_000)
        );
        let s = shorten_verifier_log(long);
        assert!(s.len() < 3000, "{}", s.len());
        assert!(s.starts_with("Argument list too long"));
        assert!(s.ends_with("processed 1000001 insns"));
        assert!(s.contains("bytes of verifier log omitted"));
    }

    #[test]
    fn ring_size_validation() {
        assert_eq!(parse_ring_bytes("8388608"), Ok(8 << 20));
        assert!(parse_ring_bytes("1000")
            .unwrap_err()
            .contains("power of two"));
        assert!(parse_ring_bytes("12288").is_err());
        assert!(parse_ring_bytes("lots")
            .unwrap_err()
            .contains("not a byte count"));
    }
}
