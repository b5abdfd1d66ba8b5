//! The OpenSSL capture's kernel side as the agent drives it: the capture bounds written to
//! `TLS_CONFIG` before any probe attaches, the tracepoint that learns each `SSL *`'s socket
//! (`rasp_common::tls`), and the counters of what the bounds did (`TLS_STATS`) for `status`
//! and metrics. The uprobes themselves attach per library file (`uprobe::attach`).

use aya::{
    maps::{Array, MapData, PerCpuArray},
    Ebpf,
};
use rasp_common::{
    limits::{TLS_CALL_CAP_MAX, TLS_DEFAULT_CALL_CAP, TLS_DEFAULT_CONN_BUDGET},
    tls::{
        CONFIG_CALL_CAP, CONFIG_CONN_BUDGET, STAT_BYTES_CAPTURED, STAT_BYTES_SKIPPED,
        STAT_CALLS_CAPTURED, STAT_CALLS_CUT_BY_BUDGET, STAT_CALLS_CUT_BY_CAP, STAT_CALLS_EMPTY,
        STAT_CALLS_OVER_BUDGET, STAT_CALLS_UNCOUNTED,
    },
};
use serde::{Deserialize, Serialize};

use super::{teardown::OwnedLink, verify::Verified, LoadError, ProgramStatus};

/// The program that learns sockets, and the syscalls OpenSSL's socket BIOs (and custom
/// BIOs on plain sockets) make: each passes the fd first.
pub(crate) const SOCKET_IO_PROGRAM: &str = "rasp_tls_socket_io";
const SOCKET_IO_TRACEPOINTS: [&str; 4] = [
    "sys_enter_read",
    "sys_enter_write",
    "sys_enter_sendto",
    "sys_enter_recvfrom",
];

/// How much plaintext the probes capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureBounds {
    /// Bytes of each `SSL_read`/`SSL_write` call (at most `TLS_CALL_CAP_MAX`).
    pub call_cap: u32,
    /// Bytes per connection and direction in one burst (a request, a response).
    pub burst_budget: u32,
}

impl Default for CaptureBounds {
    fn default() -> Self {
        CaptureBounds {
            call_cap: TLS_DEFAULT_CALL_CAP,
            burst_budget: TLS_DEFAULT_CONN_BUDGET,
        }
    }
}

/// Parses `--tls-call-cap`: 1 byte to `TLS_CALL_CAP_MAX`.
pub fn parse_call_cap(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a byte count: {e}"))?;
    if v == 0 || v > TLS_CALL_CAP_MAX {
        return Err(format!(
            "{v} bytes: the per-call capture must be between 1 and {TLS_CALL_CAP_MAX} (two {}-byte records a call)",
            rasp_common::limits::TLS_CHUNK
        ));
    }
    Ok(v)
}

/// Parses `--tls-burst-budget`: at least 1 byte.
pub fn parse_burst_budget(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a byte count: {e}"))?;
    if v == 0 {
        return Err("0 bytes would capture nothing; give at least 1".to_string());
    }
    Ok(v)
}

/// What the capture bounds did since the programs loaded, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStats {
    pub bounds: CaptureBounds,
    /// Calls with at least one record sent.
    pub calls_captured: u64,
    /// Calls longer than the per-call cap (their records flagged truncated).
    pub calls_cut_by_cap: u64,
    /// Calls cut short by the burst budget.
    pub calls_cut_by_budget: u64,
    /// Calls not captured at all: the burst budget was spent.
    pub calls_over_budget: u64,
    /// Calls that moved nothing (errors, WANT_READ/WANT_WRITE).
    pub calls_empty: u64,
    /// Over-budget calls whose byte count was not read (in `calls_over_budget` too; their
    /// bytes are not in `bytes_skipped`).
    #[serde(default)]
    pub calls_uncounted: u64,
    pub bytes_captured: u64,
    /// Plaintext bytes the bounds left out.
    pub bytes_skipped: u64,
}

/// The capture's maps, held by the agent.
pub struct TlsCapture {
    bounds: CaptureBounds,
    stats: PerCpuArray<MapData, u64>,
}

impl TlsCapture {
    /// Write the bounds, take the counters and attach the socket-learning tracepoint (one
    /// status per syscall). Before any uprobe attaches: a probe never sees unset bounds.
    /// `verified`: what the loader's parallel pass loaded; the socket hooks' links go to
    /// `links` (closed at exit with the others).
    pub fn start(
        ebpf: &mut Ebpf,
        bounds: CaptureBounds,
        verified: &Verified,
        links: &mut Vec<OwnedLink>,
    ) -> Result<(TlsCapture, Vec<ProgramStatus>), LoadError> {
        // Borrowed, not taken: the programs still to load refer to it.
        let map = ebpf
            .map_mut("TLS_CONFIG")
            .ok_or(LoadError::MissingMap("TLS_CONFIG"))?;
        let mut config: Array<&mut MapData, u32> =
            Array::try_from(map).map_err(|source| LoadError::Map {
                name: "TLS_CONFIG",
                source,
            })?;
        for (word, value) in [
            (CONFIG_CALL_CAP, bounds.call_cap),
            (CONFIG_CONN_BUDGET, bounds.burst_budget),
        ] {
            config
                .set(word, value, 0)
                .map_err(|source| LoadError::Map {
                    name: "TLS_CONFIG",
                    source,
                })?;
        }
        let stats = take(ebpf, "TLS_STATS")?;
        let statuses = attach_socket_io(ebpf, verified, links);
        Ok((TlsCapture { bounds, stats }, statuses))
    }

    pub fn stats(&self) -> CaptureStats {
        let sum = |slot: u32| -> u64 {
            match self.stats.get(&slot, 0) {
                Ok(v) => v.iter().sum(),
                Err(e) => {
                    tracing::warn!(slot, error = %e, "TLS capture counter unreadable");
                    0
                }
            }
        };
        CaptureStats {
            bounds: self.bounds,
            calls_captured: sum(STAT_CALLS_CAPTURED),
            calls_cut_by_cap: sum(STAT_CALLS_CUT_BY_CAP),
            calls_cut_by_budget: sum(STAT_CALLS_CUT_BY_BUDGET),
            calls_over_budget: sum(STAT_CALLS_OVER_BUDGET),
            calls_empty: sum(STAT_CALLS_EMPTY),
            calls_uncounted: sum(STAT_CALLS_UNCOUNTED),
            bytes_captured: sum(STAT_BYTES_CAPTURED),
            bytes_skipped: sum(STAT_BYTES_SKIPPED),
        }
    }
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, LoadError> {
    let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { name, source })
}

fn attach_socket_io(
    ebpf: &mut Ebpf,
    verified: &Verified,
    links: &mut Vec<OwnedLink>,
) -> Vec<ProgramStatus> {
    super::attach_syscall_program(
        ebpf,
        SOCKET_IO_PROGRAM,
        &SOCKET_IO_TRACEPOINTS,
        verified,
        links,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked_where_they_are_given() {
        assert_eq!(parse_call_cap("4096"), Ok(4096));
        assert_eq!(parse_call_cap("16384"), Ok(TLS_CALL_CAP_MAX));
        assert!(parse_call_cap("16385")
            .unwrap_err()
            .contains("between 1 and 16384"));
        assert!(parse_call_cap("0").is_err());
        assert!(parse_call_cap("4k")
            .unwrap_err()
            .contains("not a byte count"));
        assert_eq!(parse_burst_budget("65536"), Ok(65536));
        assert!(parse_burst_budget("0")
            .unwrap_err()
            .contains("capture nothing"));
    }
}
