//! Loading and attaching the eBPF programs: resolve kernel offsets from BTF, load the
//! embedded object with the ring buffer sized as asked, attach each program (a failure is
//! recorded, not fatal, unless nothing attaches), and probe whether BPF-LSM is usable.

pub mod btf;
pub mod env;

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, Lsm},
    Btf, Ebpf, EbpfLoader,
};
use serde::{Deserialize, Serialize};

/// The eBPF object built by `cargo xtask build-ebpf` (empty if the agent was built without).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rasp-ebpf.o"));

/// Tracing programs: (program name in the object, BTF tracepoint).
const TRACEPOINTS: &[(&str, &str)] = &[
    ("rasp_exec", "sched_process_exec"),
    ("rasp_fork", "sched_process_fork"),
    ("rasp_exit", "sched_process_exit"),
];

const LSM_PROBE: (&str, &str) = ("rasp_lsm_probe", "bprm_check_security");

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
}

pub struct LoadOptions {
    pub ring_bytes: u32,
}

pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let kernel_btf = btf::KernelBtf::from_file(std::path::Path::new(btf::KernelBtf::VMLINUX))?;
    let offsets = btf::resolve_offsets(&kernel_btf)?;
    tracing::debug!(?offsets, "kernel offsets resolved from BTF");
    let aya_btf = Btf::from_sys_fs()?;

    let mut ebpf = EbpfLoader::new()
        .btf(Some(&aya_btf))
        .override_global("OFFSETS", &offsets, true)
        .map_max_entries("EVENTS", opts.ring_bytes)
        .load(OBJECT)?;

    let mut programs = Vec::new();
    for (name, tracepoint) in TRACEPOINTS {
        let result = attach_btf_tracepoint(&mut ebpf, name, tracepoint, &aya_btf);
        let hook = format!("tp_btf/{tracepoint}");
        match result {
            Ok(()) => {
                tracing::info!(program = name, hook, "attached");
                programs.push(ProgramStatus {
                    name: name.to_string(),
                    hook,
                    state: ProgramState::Attached,
                    error: None,
                });
            }
            Err(e) => {
                tracing::error!(program = name, hook, error = %e, "attach failed");
                programs.push(ProgramStatus {
                    name: name.to_string(),
                    hook,
                    state: ProgramState::Failed,
                    error: Some(e),
                });
            }
        }
    }
    if programs.iter().all(|p| p.state == ProgramState::Failed) {
        let why: Vec<String> = programs
            .iter()
            .map(|p| format!("{}: {}", p.name, p.error.as_deref().unwrap_or("?")))
            .collect();
        return Err(LoadError::NothingAttached(why.join("; ")));
    }

    let (lsm, probe) = probe_lsm(&mut ebpf, &aya_btf);
    programs.push(probe);
    Ok(Loaded {
        ebpf,
        programs,
        lsm,
    })
}

fn attach_btf_tracepoint(
    ebpf: &mut Ebpf,
    name: &str,
    tracepoint: &str,
    btf: &Btf,
) -> Result<(), String> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} not in the eBPF object"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program.load(tracepoint, btf).map_err(|e| error_chain(&e))?;
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
    pub drops: PerCpuArray<MapData, u64>,
    pub read_errors: PerCpuArray<MapData, u64>,
}

/// Take the ring buffer and the counters out of the loaded object.
pub fn take_maps(ebpf: &mut Ebpf) -> Result<EventMaps, LoadError> {
    let mut take = |name: &'static str| ebpf.take_map(name).ok_or(LoadError::MissingMap(name));
    let ring = RingBuf::try_from(take("EVENTS")?).map_err(|source| LoadError::Map {
        name: "EVENTS",
        source,
    })?;
    let drops = PerCpuArray::try_from(take("DROPS")?).map_err(|source| LoadError::Map {
        name: "DROPS",
        source,
    })?;
    let read_errors =
        PerCpuArray::try_from(take("READ_ERRORS")?).map_err(|source| LoadError::Map {
            name: "READ_ERRORS",
            source,
        })?;
    Ok(EventMaps {
        ring,
        drops,
        read_errors,
    })
}

/// aya errors keep the kernel's verifier log and errno in their sources.
fn error_chain(e: &dyn std::error::Error) -> String {
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
