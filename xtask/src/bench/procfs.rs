//! What a process costs, read from /proc: CPU seconds (all threads), resident and peak
//! resident memory, with the peak reset between workloads so each gets its own.

use std::fs;

use anyhow::{bail, Context, Result};

/// User + system CPU seconds of the whole thread group so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path}: no ')' after the command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), utime 14 and stime 15.
    let field = |n: usize| -> Result<u64> {
        let text = fields
            .get(n - 3)
            .with_context(|| format!("{path}: only {} fields", fields.len() + 2))?;
        text.parse()
            .with_context(|| format!("{path}: field {n} is {text:?}, not a number"))
    };
    let ticks = field(14)? + field(15)?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Resets the process's peak RSS (VmHWM) to its current RSS (`clear_refs` value 5).
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    fs::write(&path, "5").with_context(|| format!("writing 5 to {path}"))
}

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status_kib(&status, field).with_context(|| format!("{path}: no usable {field} line"))
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// How many perf-event fds a process holds: a tracer that attaches tracepoints through
/// perf_event_open (bpftrace) holds one per attached probe.
pub fn perf_event_fds(pid: u32) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    let entries = fs::read_dir(&dir).with_context(|| format!("listing {dir}"))?;
    let mut count = 0;
    for entry in entries.flatten() {
        if let Ok(target) = fs::read_link(entry.path()) {
            if target.to_string_lossy().contains("perf_event") {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// The CPU model and count, memory and kernel, for the report's header.
pub fn machine_summary() -> Result<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let Some(mem_kib) = parse_status_kib(&meminfo, "MemTotal") else {
        bail!("/proc/meminfo: no MemTotal line");
    };
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading /proc/sys/kernel/osrelease")?;
    Ok(format!(
        "{cpus} × {model}, {:.1} GiB RAM, Linux {}",
        mem_kib as f64 / (1024.0 * 1024.0),
        release.trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_in_kib() {
        let status = "Name:\tx\nVmHWM:\t   51200 kB\nVmRSS:\t  23552 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(51200));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(23552));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn own_cpu_and_memory() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).expect("own stat") >= 0.0);
        assert!(status_kib(pid, "VmRSS").expect("own status") > 0);
    }
}
