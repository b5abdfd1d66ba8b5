//! The agent prepares its own environment before loading anything: root, tracefs, bpffs,
//! securityfs (to read the active LSM list), the cgroup2 mount, and the memlock limit on
//! kernels that still charge BPF memory to it. Every step is reported in `status`.

use std::{ffi::CString, fs, path::PathBuf};

use crate::process::cgroup::find_cgroup2_mount;

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("rasp-agent run must run as root (it loads eBPF programs); try: sudo rasp-agent run")]
    NotRoot,
    #[error("no cgroup2 mount in /proc/mounts: mount one (mount -t cgroup2 none /sys/fs/cgroup) and retry")]
    NoCgroup2,
    #[error("reading /proc/mounts: {0}")]
    Mounts(std::io::Error),
}

/// What the environment looked like and what we changed.
#[derive(Debug, Clone)]
pub struct Environment {
    pub cgroup2: PathBuf,
    /// One line per step taken or noticed ("mounted tracefs at /sys/kernel/tracing", ...).
    pub notes: Vec<String>,
}

pub fn require_root() -> Result<(), EnvError> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(EnvError::NotRoot);
    }
    Ok(())
}

struct Fs {
    fstype: &'static str,
    target: &'static str,
    /// Another path where an existing mount of this type is just as good.
    alternative: Option<&'static str>,
    why: &'static str,
}

const FILESYSTEMS: &[Fs] = &[
    Fs {
        fstype: "tracefs",
        target: "/sys/kernel/tracing",
        alternative: Some("/sys/kernel/debug/tracing"),
        why: "tracepoint attachment",
    },
    Fs {
        fstype: "bpf",
        target: "/sys/fs/bpf",
        alternative: None,
        why: "bpffs for pinning",
    },
    Fs {
        fstype: "securityfs",
        target: "/sys/kernel/security",
        alternative: None,
        why: "reading the active LSM list",
    },
];

pub fn prepare() -> Result<Environment, EnvError> {
    require_root()?;
    let mut notes = Vec::new();
    let mounts = fs::read_to_string("/proc/mounts").map_err(EnvError::Mounts)?;
    for f in FILESYSTEMS {
        let present = mounts.lines().any(|l| {
            let mut it = l.split_whitespace();
            let (_src, target, fstype) = (it.next(), it.next(), it.next());
            fstype == Some(f.fstype) && (target == Some(f.target) || target == f.alternative)
        });
        if present {
            continue;
        }
        match mount(f.fstype, f.target) {
            Ok(()) => {
                tracing::info!(fstype = f.fstype, target = f.target, why = f.why, "mounted");
                notes.push(format!("mounted {} at {} ({})", f.fstype, f.target, f.why));
            }
            Err(e) => {
                tracing::warn!(fstype = f.fstype, target = f.target, error = %e, "mount failed");
                notes.push(format!(
                    "could not mount {} at {}: {e} ({})",
                    f.fstype, f.target, f.why
                ));
            }
        }
    }
    let cgroup2 = find_cgroup2_mount(&mounts).ok_or(EnvError::NoCgroup2)?;
    notes.push(raise_memlock());
    Ok(Environment { cgroup2, notes })
}

fn mount(fstype: &str, target: &str) -> std::io::Result<()> {
    fs::create_dir_all(target)?;
    let src = CString::new("nodev").expect("static");
    let tgt = CString::new(target)?;
    let ty = CString::new(fstype)?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let r = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Kernels since 5.11 charge BPF memory to the cgroup and ignore RLIMIT_MEMLOCK; older ones
/// need it raised. Failing to raise it is a note, never fatal (root may lack
/// CAP_SYS_RESOURCE, as on our CI machines).
fn raise_memlock() -> String {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        return "RLIMIT_MEMLOCK raised to unlimited".into();
    }
    let err = std::io::Error::last_os_error();
    let accounted = kernel_release()
        .map(|r| release_at_least(&r, 5, 11))
        .unwrap_or(false);
    if accounted {
        format!("RLIMIT_MEMLOCK not raised ({err}); not needed: this kernel charges BPF memory to the cgroup")
    } else {
        tracing::warn!(error = %err, "could not raise RLIMIT_MEMLOCK; map creation may fail on this kernel");
        format!("RLIMIT_MEMLOCK not raised ({err}); this kernel may need it for BPF maps")
    }
}

pub fn kernel_release() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

/// "6.18.44-fc" ≥ (major, minor)?
pub fn release_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let ma: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mi: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (ma, mi) >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_comparison() {
        assert!(release_at_least("6.18.44-fc-v657", 5, 11));
        assert!(release_at_least("5.11.0", 5, 11));
        assert!(!release_at_least("5.10.200-generic", 5, 11));
        assert!(!release_at_least("garbage", 5, 11));
    }
}
