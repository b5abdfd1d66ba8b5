//! The workloads and how each one is run: most by `rasp-workload` (tests/src/bin), which
//! prints one JSON line with its rate; pgbench against the bench's PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::postgres::Postgres;

/// A file no default rule watches (created in the scratch directory) and one that the
/// default `read-shadow-file` rule does: every open of it is an event and a detection.
pub const WATCHED_FILE: &str = "/etc/shadow";
/// Unwatched files outside /tmp: the kernel filter walks /etc and /usr paths further (the
/// default rules watch writes below both), so their reads cost it more than a /tmp read.
pub const UNWATCHED_ETC: &str = "/etc/passwd";
pub const UNWATCHED_USR_LIB: &str = "/usr/lib/os-release";
/// Distinct files the distinct-path workloads cycle through (`{}` in a path is the index),
/// so no per-path cache or detection fold sees one path over and over.
pub const DISTINCT_FILES: u32 = 4096;

pub struct Workload {
    pub key: &'static str,
    pub about: &'static str,
    pub unit: &'static str,
    /// The lowest acceptable ratio to no agent (issue 10's targets), if one is set.
    pub target: Option<f64>,
    how: How,
}

/// The workloads `--only` names (all of them for none): a workload's key, or a family
/// prefix no workload is named (`open` for every open-* workload, `pgbench`).
pub fn select(only: &[String]) -> Vec<Workload> {
    let all = all();
    let keys: Vec<&str> = all.iter().map(|w| w.key).collect();
    let exact = |k: &str| keys.contains(&k);
    all.into_iter()
        .filter(|w| {
            only.is_empty()
                || only.iter().any(|k| {
                    w.key == k
                        || (!exact(k)
                            && w.key
                                .strip_prefix(k.as_str())
                                .is_some_and(|rest| rest.starts_with('-')))
                })
        })
        .collect()
}

enum How {
    /// `rasp-workload ARGS --seconds S`; `{unwatched}` stands for the unwatched file,
    /// `{scratch}` for the bench's scratch directory (no rule watches it),
    /// `{distinct_unwatched}` / `{distinct_watched}` for the distinct-file patterns and
    /// `{distinct}` for their count.
    Tool(&'static [&'static str]),
    PgBench(&'static [&'static str]),
}

pub fn all() -> Vec<Workload> {
    vec![
        Workload {
            key: "exec",
            about: "fork+exec /bin/true loop",
            unit: "execs/s",
            target: Some(0.97),
            how: How::Tool(&["exec"]),
        },
        Workload {
            key: "open-unwatched",
            about: "openat+close of a file no rule watches",
            unit: "opens/s",
            target: Some(0.80),
            how: How::Tool(&["open", "--path", "{unwatched}"]),
        },
        Workload {
            key: "open-unwatched-etc",
            about: "openat+close of /etc/passwd (no rule watches its reads)",
            unit: "opens/s",
            target: Some(0.80),
            how: How::Tool(&["open", "--path", UNWATCHED_ETC]),
        },
        Workload {
            key: "open-unwatched-usrlib",
            about: "openat+close of /usr/lib/os-release (no rule watches its reads)",
            unit: "opens/s",
            target: Some(0.80),
            how: How::Tool(&["open", "--path", UNWATCHED_USR_LIB]),
        },
        Workload {
            key: "open-unwatched-distinct",
            about: "openat+close cycling 4096 distinct unwatched files under /tmp",
            unit: "opens/s",
            target: Some(0.80),
            how: How::Tool(&["open", "--path", "{distinct_unwatched}", "--distinct", "{distinct}"]),
        },
        Workload {
            key: "open-watched-distinct",
            about: "openat+close cycling 4096 distinct `*/.aws/credentials` files (each a match of its own)",
            unit: "opens/s",
            target: None,
            how: How::Tool(&["open", "--path", "{distinct_watched}", "--distinct", "{distinct}"]),
        },
        Workload {
            key: "open-watched",
            about: "openat+close of /etc/shadow (a rule fires on every open)",
            unit: "opens/s",
            target: None,
            how: How::Tool(&["open", "--path", WATCHED_FILE]),
        },
        Workload {
            key: "tcp",
            about: "loopback TCP connect+accept loop",
            unit: "connects/s",
            target: Some(0.95),
            how: How::Tool(&["tcp"]),
        },
        Workload {
            key: "file-change",
            about: "a temp-file save under /tmp (create, chmod, rename, unlink) no rule watches: issue 19's file-change hook three times and an open per cycle",
            unit: "cycles/s",
            target: None,
            how: How::Tool(&["file-change", "--dir", "{scratch}"]),
        },
        Workload {
            key: "tls-writes",
            about: "1 KiB SSL_write in one openssl session",
            unit: "writes/s",
            target: Some(0.90),
            how: How::Tool(&["tls-writes", "--size", "1024"]),
        },
        Workload {
            key: "tls-handshakes",
            about: "full TLS handshakes against openssl s_server",
            unit: "handshakes/s",
            target: None,
            how: How::Tool(&["tls-handshakes"]),
        },
        Workload {
            key: "pgbench-select",
            about: "pgbench -S (select only), 2 clients, local socket",
            unit: "tps",
            target: Some(0.97),
            how: How::PgBench(&["-S", "-c", "2", "-j", "2"]),
        },
        Workload {
            key: "pgbench-tpcb",
            about: "pgbench default (TPC-B-like), 2 clients, local socket",
            unit: "tps",
            target: Some(0.97),
            how: How::PgBench(&["-c", "2", "-j", "2"]),
        },
    ]
}

/// What one run of a workload measured.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub rate: f64,
    pub ops: u64,
    /// CPU seconds the workload itself spent (its children's included), when it reports
    /// them: hook costs land here whether or not the machine was busy.
    pub cpu_secs: Option<f64>,
}

pub struct Runner<'a> {
    pub workload_bin: PathBuf,
    pub scratch: PathBuf,
    pub unwatched: PathBuf,
    pub files: &'a DistinctFiles,
    pub postgres: Option<&'a Postgres>,
}

/// The distinct files, created under the scratch directory: `DIR/unwatched/N/file.txt`
/// (no rule watches them) and `DIR/watched/N/.aws/credentials` (the default
/// `read-cloud-credentials` rule matches every one, each with its own path).
pub struct DistinctFiles {
    pub unwatched: String,
    pub watched: String,
    pub count: u32,
}

impl DistinctFiles {
    pub fn create(scratch: &Path, count: u32) -> Result<DistinctFiles> {
        let unwatched = scratch.join("distinct/unwatched/{}/file.txt");
        let watched = scratch.join("distinct/watched/{}/.aws/credentials");
        let files = DistinctFiles {
            unwatched: unwatched.to_string_lossy().into_owned(),
            watched: watched.to_string_lossy().into_owned(),
            count,
        };
        for pattern in [&files.unwatched, &files.watched] {
            for i in 0..count {
                let path = PathBuf::from(pattern.replace("{}", &i.to_string()));
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(&path, "a bench file\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Ok(files)
    }
}

impl Runner<'_> {
    pub fn run(&self, workload: &Workload, seconds: f64) -> Result<Measured> {
        match &workload.how {
            How::Tool(args) => {
                let args: Vec<String> = args
                    .iter()
                    .map(|arg| {
                        arg.replace("{unwatched}", &self.unwatched.to_string_lossy())
                            .replace("{scratch}", &self.scratch.to_string_lossy())
                            .replace("{distinct_unwatched}", &self.files.unwatched)
                            .replace("{distinct_watched}", &self.files.watched)
                            .replace("{distinct}", &self.files.count.to_string())
                    })
                    .collect();
                run_tool(&self.workload_bin, &args, seconds)
            }
            How::PgBench(args) => {
                let Some(pg) = self.postgres else {
                    bail!("{}: no PostgreSQL cluster was started", workload.key);
                };
                let (rate, ops) = pg.pgbench_tps(args, seconds)?;
                Ok(Measured {
                    rate,
                    ops,
                    cpu_secs: None,
                })
            }
        }
    }
}

/// Runs `rasp-workload ARGS --seconds S` and reads its one JSON line.
pub fn run_tool<S: AsRef<std::ffi::OsStr>>(
    bin: &Path,
    args: &[S],
    seconds: f64,
) -> Result<Measured> {
    let output = Command::new(bin)
        .args(args)
        .arg("--seconds")
        .arg(format!("{seconds}"))
        .output()
        .with_context(|| format!("starting {}", bin.display()))?;
    let shown = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    if !output.status.success() {
        bail!(
            "rasp-workload {shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let line = String::from_utf8_lossy(&output.stdout);
    parse_line(line.trim()).with_context(|| format!("rasp-workload {shown} printed {line:?}"))
}

pub fn parse_line(line: &str) -> Result<Measured> {
    let value: Value = serde_json::from_str(line).context("not JSON")?;
    let rate = value
        .get("rate")
        .and_then(Value::as_f64)
        .context("no numeric `rate`")?;
    let ops = value.get("ops").and_then(Value::as_u64).unwrap_or(0);
    let cpu_secs = value.get("cpu_seconds").and_then(Value::as_f64).map(|own| {
        own + value
            .get("children_cpu_seconds")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    });
    Ok(Measured {
        rate,
        ops,
        cpu_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_line() {
        let m =
            parse_line(r#"{"workload":"open","ops":10,"seconds":2.0,"rate":5.0}"#).expect("valid");
        assert_eq!((m.rate, m.ops), (5.0, 10));
        assert!(parse_line(r#"{"workload":"open"}"#).is_err());
        assert!(parse_line("garbage").is_err());
    }

    #[test]
    fn only_selects_a_key_or_its_family() {
        let picked = |keys: &[&str]| -> Vec<&'static str> {
            let only: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            select(&only).iter().map(|w| w.key).collect()
        };
        assert_eq!(picked(&["exec"]), ["exec"]);
        // A key that names a workload is that workload, not a family.
        assert_eq!(picked(&["open-watched"]), ["open-watched"]);
        assert!(picked(&["open"]).len() >= 6);
        assert!(picked(&["open"]).iter().all(|k| k.starts_with("open-")));
        assert!(picked(&["ope"]).is_empty());
        assert_eq!(picked(&[]).len(), all().len());
    }

    #[test]
    fn keys_are_unique() {
        let keys: std::collections::BTreeSet<_> = all().iter().map(|w| w.key).collect();
        assert_eq!(keys.len(), all().len());
    }
}
