//! The benchmark workloads behind `rasp-workload`: command line, result line, and the timed
//! loop they share. Loops call libc directly and never allocate per iteration, because what
//! they measure is the cost the agent's kernel hooks add to each syscall.

mod dl;
mod exec;
mod fork;
mod fschange;
mod hold;
mod libpq;
mod libssl;
mod mmap;
mod ns;
mod open;
mod pacing;
mod storm;
mod tcp;
mod tls;
mod unix;
mod uring;
mod vmread;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Parser)]
#[command(
    name = "rasp-workload",
    about = "Benchmark workloads for cargo xtask bench: one JSON result line on stdout"
)]
pub struct Cli {
    #[command(subcommand)]
    pub workload: Workload,
}

#[derive(Debug, Subcommand, PartialEq)]
pub enum Workload {
    /// fork + execv(/bin/true) + waitpid, as a shell runs a command; ops = completed execs.
    Exec(Timed),
    /// fork + _exit(0) in the child + waitpid, no exec; ops = forks.
    Fork(Timed),
    /// mmap(PROT_READ|PROT_EXEC, MAP_PRIVATE) of a library file + munmap; ops = mappings.
    Mmap {
        /// The file to map (opened once, before the loop).
        #[arg(long)]
        path: PathBuf,
        #[command(flatten)]
        timed: Timed,
    },
    /// PQsendQuery through the system's libpq.so.5 on a connection that failed to connect
    /// (no server: each call enters PQsendQuery, where the uprobe sits, and is refused at
    /// once); ops = calls.
    Libpq {
        /// The query text passed to each call.
        #[arg(
            long,
            default_value = "SELECT id, name, email FROM customers WHERE id = 42"
        )]
        query: String,
        /// Seconds to wait after loading libpq and before the timed loop, so an agent can
        /// attach its uprobes to the newly mapped library.
        #[arg(long, default_value = "0", value_parser = parse_warmup)]
        warmup: Duration,
        #[command(flatten)]
        timed: Timed,
    },
    /// openat(P, O_RDONLY|O_CLOEXEC) + close; ops = opens.
    Open {
        /// File to open (must be readable); with --distinct, `{}` in it is the file's index.
        #[arg(long)]
        path: PathBuf,
        /// Cycle through this many files (`{}` in --path = 0..N-1).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        distinct: u32,
        #[command(flatten)]
        timed: Timed,
    },
    /// Loopback TCP connect + close against an in-process acceptor; ops = connects.
    Tcp(Timed),
    /// chmod(2) of a file of its own in DIR, mode flipping 0600/0644; ops = chmods.
    Chmod {
        /// Where the file is created (and removed after).
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
        #[command(flatten)]
        timed: Timed,
    },
    /// A temp-file save in DIR: create + close, chmod, rename, unlink; ops = cycles.
    FileChange {
        /// Where the files are created (and removed).
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
        #[command(flatten)]
        timed: Timed,
    },
    /// AF_UNIX connect + close against an in-process acceptor on a socket in DIR; ops =
    /// connects.
    UnixConnect {
        /// Where the listening socket is bound (and removed after).
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
        #[command(flatten)]
        timed: Timed,
    },
    /// unshare(CLONE_NEWUTS) + setns back to the starting UTS namespace (root); ops = pairs.
    Namespace(Timed),
    /// process_vm_readv of 64 bytes from a paused child; ops = reads.
    VmRead(Timed),
    /// IORING_OP_OPENAT + close of P through io_uring; ops = opens.
    IoUringOpen {
        /// File to open (must be readable).
        #[arg(long)]
        path: PathBuf,
        #[command(flatten)]
        timed: Timed,
    },
    /// One TLS session to a local `openssl s_server`, SSL_write of --size bytes; ops = writes.
    TlsWrites {
        /// Bytes per SSL_write.
        #[arg(long, default_value_t = 1024, value_parser = parse_write_size)]
        size: usize,
        #[command(flatten)]
        timed: Timed,
    },
    /// New TCP connection + full TLS handshake + shutdown per op to a local `openssl
    /// s_server`; ops = handshakes.
    TlsHandshakes(Timed),
    /// open + close of P from several threads, paced to a total rate; ops = opens.
    Storm {
        /// File to open (a file a policy watches, so every open is an event); with
        /// --distinct, `{}` in it is the file's index.
        #[arg(long)]
        path: PathBuf,
        /// Cycle through this many files (`{}` in --path = 0..N-1).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        distinct: u32,
        /// Target opens per second over all threads; 0 = as fast as possible.
        #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
        rate: f64,
        /// Threads sharing the rate.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
        threads: u32,
        #[command(flatten)]
        timed: Timed,
    },
    /// Fork N children blocked in pause(), print `{"workload":"hold","ready":N}`, then wait
    /// for EOF on stdin or SIGTERM/SIGINT, kill and reap them all.
    Hold {
        /// Children to fork.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// Each child execs busybox `sh -c 'read -r _'` with a service-like command line of
        /// its own (realistic argv lengths), instead of pausing as a clone of this process.
        #[arg(long)]
        exec: bool,
    },
}

/// How long a timed workload runs.
#[derive(Debug, Args, PartialEq)]
pub struct Timed {
    /// Seconds to run (fractions allowed).
    #[arg(long = "seconds", value_name = "SECONDS", default_value = "3", value_parser = parse_seconds)]
    pub duration: Duration,
}

impl Workload {
    /// The name the result line and error messages carry (the subcommand's name).
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Exec(_) => "exec",
            Workload::Fork(_) => "fork",
            Workload::Mmap { .. } => "mmap",
            Workload::Libpq { .. } => "libpq",
            Workload::Open { .. } => "open",
            Workload::Tcp(_) => "tcp",
            Workload::Chmod { .. } => "chmod",
            Workload::FileChange { .. } => "file-change",
            Workload::UnixConnect { .. } => "unix-connect",
            Workload::Namespace(_) => "namespace",
            Workload::VmRead(_) => "vm-read",
            Workload::IoUringOpen { .. } => "io-uring-open",
            Workload::TlsWrites { .. } => "tls-writes",
            Workload::TlsHandshakes(_) => "tls-handshakes",
            Workload::Storm { .. } => "storm",
            Workload::Hold { .. } => "hold",
        }
    }
}

/// Runs one workload to completion and returns its result line, or None for `hold`, which
/// prints its line itself as soon as its children are ready.
pub fn run(workload: Workload) -> Result<Option<Report>> {
    let name = workload.name();
    let report = match workload {
        Workload::Exec(timed) => exec::run(timed.duration),
        Workload::Fork(timed) => fork::run(timed.duration),
        Workload::Mmap { path, timed } => mmap::run(&path, timed.duration),
        Workload::Libpq {
            query,
            warmup,
            timed,
        } => libpq::run(&query, warmup, timed.duration),
        Workload::Open {
            path,
            distinct,
            timed,
        } => open::run(&path, distinct, timed.duration),
        Workload::Tcp(timed) => tcp::run(timed.duration),
        Workload::Chmod { dir, timed } => fschange::run_chmod(&dir, timed.duration),
        Workload::FileChange { dir, timed } => fschange::run_change(&dir, timed.duration),
        Workload::UnixConnect { dir, timed } => unix::run(&dir, timed.duration),
        Workload::Namespace(timed) => ns::run(timed.duration),
        Workload::VmRead(timed) => vmread::run(timed.duration),
        Workload::IoUringOpen { path, timed } => uring::run(&path, timed.duration),
        Workload::TlsWrites { size, timed } => tls::run_writes(size, timed.duration),
        Workload::TlsHandshakes(timed) => tls::run_handshakes(timed.duration),
        Workload::Storm {
            path,
            distinct,
            rate,
            threads,
            timed,
        } => storm::run(&path, distinct, rate, threads, timed.duration),
        Workload::Hold { count, exec } => return hold::run(count, exec),
    }?;
    Ok(Some(report.named(name)))
}

/// The one JSON line a workload prints: `workload`, `ops`, `seconds`, `rate` (ops/s),
/// `cpu_seconds` (this process, all threads), then whatever else that workload knows
/// (`bytes`, `target_rate`, ...).
#[derive(Debug, Serialize)]
pub struct Report {
    workload: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ops: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
    /// CPU time is steadier than wall time when the machine is shared, and shows a hook's
    /// cost even where the rate is bounded by a peer (s_server, the acceptor).
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_seconds: Option<f64>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl Report {
    /// A timed run: `ops` over `seconds`, and the rate they give.
    pub fn timed(tally: Tally) -> Self {
        Report {
            ops: Some(tally.ops),
            seconds: Some(round(tally.elapsed.as_secs_f64(), 4)),
            rate: Some(round(tally.rate(), 1)),
            cpu_seconds: Some(round(tally.cpu.as_secs_f64(), 4)),
            ..Report::untimed()
        }
    }

    /// A result without a timed loop (`hold`): only the fields added with `with`.
    pub fn untimed() -> Self {
        Report {
            workload: "",
            ops: None,
            seconds: None,
            rate: None,
            cpu_seconds: None,
            extra: Map::new(),
        }
    }

    /// Adds a workload-specific field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    pub fn named(mut self, name: &'static str) -> Self {
        self.workload = name;
        self
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&line)
    }
}

/// Rounds for the result line: more digits than that are noise and only make it longer.
fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// What a timed loop did: completed operations, the wall time they took, and the CPU time
/// this process (all its threads) used meanwhile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tally {
    pub ops: u64,
    pub elapsed: Duration,
    pub cpu: Duration,
}

impl Tally {
    /// Operations per second; 0 for an empty interval rather than NaN or infinity.
    pub fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.ops as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Runs `op` until `duration` has passed, reading the clock once every `batch` ops so cheap
/// ops (an open is ~1 µs) are not dominated by the clock read. The error type is
/// `io::Error` because building one from errno does not allocate; callers add context.
pub fn run_for(
    duration: Duration,
    batch: u32,
    mut op: impl FnMut() -> io::Result<()>,
) -> io::Result<Tally> {
    let start = Instant::now();
    let cpu_start = process_cpu_time();
    let mut ops = 0u64;
    loop {
        for _ in 0..batch.max(1) {
            op()?;
            ops += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return Ok(Tally {
                ops,
                elapsed,
                cpu: process_cpu_time().saturating_sub(cpu_start),
            });
        }
    }
}

/// CPU time (user + system) this process has used so far, all threads included.
pub fn process_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: now is a valid out-pointer. This clock cannot fail for our own process; if
    // it somehow did, a zero reads as "no CPU data" rather than aborting a run.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// `--seconds`: a positive, finite number of seconds.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 {
        return Err(format!("seconds must be > 0 and at most 86400, got {text}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `--warmup`: seconds, 0 allowed.
fn parse_warmup(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !seconds.is_finite() || !(0.0..=3600.0).contains(&seconds) {
        return Err(format!("warmup must be 0..=3600 seconds, got {text}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Reaps child `pid` (retrying when a signal interrupts the wait) and fails unless it
/// exited with status 0; `what` names it in the error.
pub fn wait_child_ok(pid: libc::pid_t, what: &str) -> io::Result<()> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer for the duration of the call.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what} (pid {pid}) ended with wait status {status:#x}"
        )))
    }
}

/// `--rate`: opens per second, 0 meaning unpaced.
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a rate in ops/s"))?;
    if !rate.is_finite() || rate < 0.0 {
        return Err(format!("rate must be >= 0 (0 = unpaced), got {text}"));
    }
    Ok(rate)
}

/// `--size`: what one SSL_write takes (an `int`, and at least one byte).
fn parse_write_size(text: &str) -> Result<usize, String> {
    let size: usize = text
        .parse()
        .map_err(|_| format!("`{text}` is not a byte count"))?;
    if size == 0 || size > i32::MAX as usize {
        return Err(format!("size must be 1..={}, got {text}", i32::MAX));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Workload, clap::Error> {
        Cli::try_parse_from(std::iter::once("rasp-workload").chain(args.iter().copied()))
            .map(|cli| cli.workload)
    }

    #[test]
    fn seconds_default_to_three_and_take_fractions() {
        let three = Timed {
            duration: Duration::from_secs(3),
        };
        assert_eq!(parse(&["exec"]).unwrap(), Workload::Exec(three));
        assert_eq!(
            parse(&["tcp", "--seconds", "0.5"]).unwrap(),
            Workload::Tcp(Timed {
                duration: Duration::from_millis(500)
            })
        );
    }

    #[test]
    fn bad_seconds_are_refused() {
        for bad in ["0", "-1", "nan", "inf", "three"] {
            assert!(parse(&["exec", "--seconds", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn open_needs_a_path() {
        assert!(parse(&["open"]).is_err());
        assert_eq!(
            parse(&["open", "--path", "/etc/hostname", "--seconds", "1"]).unwrap(),
            Workload::Open {
                path: "/etc/hostname".into(),
                distinct: 1,
                timed: Timed {
                    duration: Duration::from_secs(1)
                }
            }
        );
        assert!(parse(&["open", "--path", "/tmp/{}", "--distinct", "0"]).is_err());
    }

    #[test]
    fn file_hooks_default_to_tmp_and_io_uring_needs_a_path() {
        match parse(&["file-change"]).unwrap() {
            Workload::FileChange { dir, .. } => assert_eq!(dir, PathBuf::from("/tmp")),
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["unix-connect", "--dir", "/run"]).unwrap() {
            Workload::UnixConnect { dir, .. } => assert_eq!(dir, PathBuf::from("/run")),
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["io-uring-open"]).is_err());
        assert_eq!(parse(&["vm-read"]).unwrap().name(), "vm-read");
        assert_eq!(parse(&["namespace"]).unwrap().name(), "namespace");
    }

    #[test]
    fn storm_defaults_to_two_unpaced_threads() {
        match parse(&["storm", "--path", "/tmp/x"]).unwrap() {
            Workload::Storm { rate, threads, .. } => {
                assert_eq!(rate, 0.0);
                assert_eq!(threads, 2);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["storm", "--path", "/tmp/x", "--threads", "0"]).is_err());
        assert!(parse(&["storm", "--path", "/tmp/x", "--rate", "-5"]).is_err());
    }

    #[test]
    fn tls_write_size_defaults_to_1k_and_fits_an_int() {
        match parse(&["tls-writes"]).unwrap() {
            Workload::TlsWrites { size, .. } => assert_eq!(size, 1024),
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["tls-writes", "--size", "0"]).is_err());
        assert!(parse(&["tls-writes", "--size", "4294967296"]).is_err());
    }

    #[test]
    fn hold_needs_a_positive_count() {
        assert_eq!(
            parse(&["hold", "--count", "10000"]).unwrap(),
            Workload::Hold {
                count: 10000,
                exec: false
            }
        );
        assert!(parse(&["hold"]).is_err());
        assert!(parse(&["hold", "--count", "0"]).is_err());
    }

    #[test]
    fn report_line_starts_with_the_workload_and_carries_the_rate() {
        let report = Report::timed(Tally {
            ops: 500,
            elapsed: Duration::from_millis(250),
            cpu: Duration::from_millis(200),
        })
        .with("threads", 2)
        .named("open");
        let line = report.to_string();
        assert!(
            line.starts_with(
                r#"{"workload":"open","ops":500,"seconds":0.25,"rate":2000.0,"cpu_seconds":0.2,"#
            ),
            "{line}"
        );
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["ops"], 500);
        assert_eq!(value["seconds"], 0.25);
        assert_eq!(value["rate"], 2000.0);
        assert_eq!(value["threads"], 2);
    }

    #[test]
    fn run_for_stops_after_the_duration_and_counts_every_op() {
        let mut calls = 0u64;
        let tally = run_for(Duration::from_millis(20), 7, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(tally.ops, calls);
        assert_eq!(tally.ops % 7, 0);
        assert!(tally.elapsed >= Duration::from_millis(20));
    }

    #[test]
    fn run_for_stops_at_the_first_error() {
        let mut calls = 0;
        let err = run_for(Duration::from_secs(60), 4, || {
            calls += 1;
            if calls == 3 {
                Err(io::Error::from_raw_os_error(libc::ENOENT))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(calls, 3);
    }
}
