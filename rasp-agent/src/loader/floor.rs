//! `rasp-agent floor`: the benchmark floor. Loads the embedded `rasp-floor` object (one
//! empty program per hook) and attaches it to exactly the hooks the agent uses — the same
//! `TRACEPOINTS`/`SYSCALL_TRACEPOINTS` tables and attach helpers as `load` — then waits for
//! SIGTERM/SIGINT. What a workload loses under the floor is the price of the hooks alone;
//! the rest of the agent's overhead is our program bodies, the ring buffer and the daemon.
//!
//! `--lsm` is the BPF-LSM variant, for a guest whose kernel accepts LSM programs: every
//! syscall tracepoint is replaced by the LSM hook that sees the same event (`file_open` for
//! the open family, `mmap_file` for executable mappings, `socket_connect` for connects), so
//! no syscall is put on the tracing slow path — which is the real difference between the two
//! designs, not just one hook against another. The sched BTF tracepoints stay (an LSM agent
//! needs them too), and `bprm_check_security` is added: it is where exec enforcement sits,
//! a hook an LSM agent pays for on every exec.

use std::io::Write;

use aya::{programs::Lsm, Btf, Ebpf, EbpfLoader};
use serde::Serialize;

use super::{
    attach_sched_tracepoints, attach_syscall_tracepoints, env, error_chain, program_status,
    ProgramState, ProgramStatus, LSM_PROBE,
};

/// Empty programs on the agent's hooks, built by `cargo xtask build-ebpf` (empty if the
/// agent was built without).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(std::env!("OUT_DIR"), "/rasp-floor.o"));

/// The LSM hook that sees the same events as each of the agent's syscall tracepoint
/// programs: (agent program, LSM hook).
const LSM_COUNTERPARTS: &[(&str, &str)] = &[
    ("rasp_file_open", "file_open"),
    ("rasp_library_load", "mmap_file"),
    ("rasp_connect", "socket_connect"),
];

#[derive(clap::Args, Debug)]
pub struct FloorArgs {
    /// Attach the LSM counterparts of the syscall tracepoints instead (needs a kernel that
    /// accepts BPF-LSM programs).
    #[arg(long)]
    pub lsm: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error(
        "this rasp-agent was built without its floor eBPF object: build with `cargo xtask build`"
    )]
    NoObject,
    #[error(
        "rasp-agent floor must run as root (it loads eBPF programs); try: sudo rasp-agent floor"
    )]
    NotRoot,
    #[error(transparent)]
    Env(#[from] env::EnvError),
    #[error("loading kernel BTF for aya: {0}")]
    AyaBtf(#[from] aya::BtfError),
    #[error("loading the floor eBPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("no floor program could be attached: {0}")]
    NothingAttached(String),
    #[error("{0}")]
    LsmRefused(String),
    #[error("waiting for SIGTERM/SIGINT: {0}")]
    Signals(std::io::Error),
    #[error("writing the attach line to stdout: {0}")]
    Stdout(std::io::Error),
}

/// The one line printed once attached (or when nothing could be).
#[derive(Serialize)]
struct Report<'a> {
    floor: &'static str,
    mode: &'static str,
    programs: Vec<Hooked<'a>>,
    failed: Vec<Failed<'a>>,
}

#[derive(Serialize)]
struct Hooked<'a> {
    program: &'a str,
    hook: &'a str,
}

#[derive(Serialize)]
struct Failed<'a> {
    program: &'a str,
    hook: &'a str,
    error: &'a str,
}

/// Attach, print the report line, block until SIGTERM/SIGINT, detach. Root only.
pub fn run(args: &FloorArgs) -> Result<(), FloorError> {
    // Blocked before anything is attached, so a signal sent as soon as the line is read
    // waits for `sigwait` instead of killing the process with its links half dropped.
    let signals = block_stop_signals().map_err(FloorError::Signals)?;
    if OBJECT.is_empty() {
        return Err(FloorError::NoObject);
    }
    env::require_root().map_err(|_| FloorError::NotRoot)?;
    let environment = env::prepare()?;
    for note in &environment.notes {
        tracing::info!(note = note.as_str(), "environment");
    }
    let btf = Btf::from_sys_fs()?;
    let mut ebpf = EbpfLoader::new().btf(Some(&btf)).load(OBJECT)?;

    let mode = if args.lsm { "lsm" } else { "tracepoint" };
    let mut statuses = attach_sched_tracepoints(
        &mut ebpf,
        &btf,
        &floor_program,
        &super::verify::Verified::default(),
    );
    // The syscall tracepoints' links: held until the floor detaches (dropping one detaches it).
    let mut links = Vec::new();
    if args.lsm {
        statuses.extend(lsm_hooks().map(|hook| {
            let name = lsm_program(hook);
            let result = attach_lsm(&mut ebpf, &name, hook, &btf);
            program_status(&name, format!("lsm/{hook}"), result)
        }));
    } else {
        statuses.extend(attach_syscall_tracepoints(
            &mut ebpf,
            &floor_program,
            false,
            &super::verify::Verified::default(),
            &mut links,
        ));
    }

    let attached = |s: &&ProgramStatus| s.state == ProgramState::Attached;
    let lsm_attached = statuses
        .iter()
        .filter(attached)
        .any(|s| s.hook.starts_with("lsm/"));
    let refusal = if args.lsm && !lsm_attached {
        Some(FloorError::LsmRefused(lsm_refusal(&statuses)))
    } else if !statuses.iter().any(|s| s.state == ProgramState::Attached) {
        Some(FloorError::NothingAttached(failures(&statuses)))
    } else {
        None
    };
    let report = Report {
        floor: if refusal.is_some() {
            "failed"
        } else {
            "attached"
        },
        mode,
        programs: statuses
            .iter()
            .filter(attached)
            .map(|s| Hooked {
                program: &s.name,
                hook: &s.hook,
            })
            .collect(),
        failed: statuses
            .iter()
            .filter(|s| s.state != ProgramState::Attached)
            .map(|s| Failed {
                program: &s.name,
                hook: &s.hook,
                error: s.error.as_deref().unwrap_or(""),
            })
            .collect(),
    };
    print_line(&report).map_err(FloorError::Stdout)?;
    if let Some(e) = refusal {
        return Err(e);
    }

    let signal = wait_for(&signals).map_err(FloorError::Signals)?;
    tracing::info!(signal, "detaching");
    // Nothing is pinned: closing the links and the programs detaches everything.
    super::teardown::detach_all(ebpf, links);
    Ok(())
}

/// The floor's name for one of the agent's programs: `rasp_exec` → `floor_exec`.
fn floor_program(agent_program: &str) -> String {
    let base = agent_program.strip_prefix("rasp_").unwrap_or(agent_program);
    format!("floor_{base}")
}

fn lsm_program(hook: &str) -> String {
    format!("floor_lsm_{hook}")
}

/// The LSM hooks of `--lsm`: the counterparts of the syscall tracepoints, and the hook the
/// agent probes for (and will enforce exec on).
fn lsm_hooks() -> impl Iterator<Item = &'static str> {
    LSM_COUNTERPARTS
        .iter()
        .map(|(_, hook)| *hook)
        .chain(std::iter::once(LSM_PROBE.1))
}

fn attach_lsm(ebpf: &mut Ebpf, name: &str, hook: &str, btf: &Btf) -> Result<(), String> {
    let program: &mut Lsm = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} not in the floor eBPF object"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program.load(hook, btf).map_err(|e| error_chain(&e))?;
    program.attach().map_err(|e| error_chain(&e))?;
    Ok(())
}

fn failures(statuses: &[ProgramStatus]) -> String {
    statuses
        .iter()
        .filter(|s| s.state != ProgramState::Attached)
        .map(|s| {
            format!(
                "{} on {}: {}",
                s.name,
                s.hook,
                s.error.as_deref().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why `--lsm` cannot run here, in words that say where it can.
fn lsm_refusal(statuses: &[ProgramStatus]) -> String {
    let first = statuses
        .iter()
        .find(|s| s.hook.starts_with("lsm/") && s.state != ProgramState::Attached);
    let (hook, error) = first.map_or(("lsm/*", "?"), |s| {
        (s.hook.as_str(), s.error.as_deref().unwrap_or("?"))
    });
    let active = std::fs::read_to_string("/sys/kernel/security/lsm")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown: cannot read /sys/kernel/security/lsm: {e}"));
    let eperm = error.contains(&std::io::Error::from_raw_os_error(libc::EPERM).to_string());
    let why = if !active.split(',').any(|l| l == "bpf") {
        format!("bpf is not in the active LSM list ({active}); boot with lsm={active},bpf")
    } else if eperm {
        format!(
            "the kernel refused to load LSM programs with EPERM (Operation not permitted) \
             although bpf is an active LSM ({active}); this kernel does not allow BPF-LSM: \
             run `rasp-agent floor --lsm` in a BPF-LSM guest (QEMU, see KERNEL.md)"
        )
    } else {
        format!("the kernel refused the LSM programs (active LSMs: {active})")
    };
    format!("no LSM program attached: {why}. First refusal, {hook}: {error}")
}

fn print_line(report: &Report<'_>) -> std::io::Result<()> {
    let line = serde_json::to_string(report).map_err(std::io::Error::other)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Block SIGTERM and SIGINT for this (single) thread, to receive them with `sigwait`.
fn block_stop_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
    }
    // SAFETY: valid set pointer; a null old-set pointer is allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(std::io::Error::from_raw_os_error(r));
    }
    Ok(set)
}

/// The name of the signal that arrived.
fn wait_for(set: &libc::sigset_t) -> std::io::Result<&'static str> {
    let mut signal: libc::c_int = 0;
    // SAFETY: valid pointers; the set's signals are blocked in this thread.
    let r = unsafe { libc::sigwait(set, &mut signal) };
    if r != 0 {
        return Err(std::io::Error::from_raw_os_error(r));
    }
    Ok(if signal == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::{SYSCALL_TRACEPOINTS, TRACEPOINTS};

    /// Every program the floor would look for, named as `run` names them.
    fn floor_programs() -> Vec<String> {
        TRACEPOINTS
            .iter()
            .map(|(name, _)| floor_program(name))
            .chain(
                SYSCALL_TRACEPOINTS
                    .iter()
                    .map(|(name, _)| floor_program(name)),
            )
            .chain(lsm_hooks().map(lsm_program))
            .collect()
    }

    /// The original hooks have LSM counterparts; the issue-19 ones (file changes, ptrace,
    /// namespaces, mounts, modules, bpf) have none in `--lsm` yet: their LSM hooks
    /// (inode_setattr, ptrace_access_check, sb_mount ...) are the enforcement work's.
    #[test]
    fn lsm_counterparts_are_syscall_programs() {
        let agent: Vec<&str> = SYSCALL_TRACEPOINTS.iter().map(|(n, _)| *n).collect();
        for (program, _) in LSM_COUNTERPARTS {
            assert!(
                agent.contains(program),
                "{program} is not a syscall program"
            );
        }
        for program in ["rasp_file_open", "rasp_library_load", "rasp_connect"] {
            assert!(LSM_COUNTERPARTS.iter().any(|(p, _)| *p == program));
        }
    }

    #[test]
    fn floor_names_follow_the_agent_names() {
        assert_eq!(floor_program("rasp_exec"), "floor_exec");
        assert_eq!(floor_program("rasp_file_open"), "floor_file_open");
        assert_eq!(lsm_program("file_open"), "floor_lsm_file_open");
        assert!(lsm_hooks().any(|h| h == "bprm_check_security"));
    }

    /// The embedded object defines every program the tables ask for (its symbol table
    /// carries the names). Needs the object: `cargo xtask test` builds it first.
    #[test]
    fn floor_object_has_every_program() {
        assert!(
            !OBJECT.is_empty(),
            "the floor eBPF object is not embedded: run `cargo xtask test`, which builds it"
        );
        for name in floor_programs() {
            let needle = format!("{name}\0");
            assert!(
                OBJECT.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{name} missing from the floor object"
            );
        }
    }
}
