//! A throw-away PostgreSQL cluster for the pgbench workloads: Debian's server binaries, run
//! as the `postgres` user (initdb refuses root), reachable only on a unix socket in the
//! bench's scratch directory, with fsync off so the disk's noise stays out of the ratios.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::command;

pub const DATABASE: &str = "bench";
const PORT: &str = "54329";
const USER: &str = "postgres";

pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
}

impl Postgres {
    /// initdb, start, create the pgbench tables (scale 5: ~75 MB, fits in shared buffers).
    pub fn start(scratch: &Path) -> Result<Postgres> {
        let bin = server_bin_dir()?;
        let dir = scratch.join("postgres");
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // The postgres user must reach the directory: every parent needs o+x.
        for parent in dir.ancestors().skip(1) {
            if parent == Path::new("/") {
                break;
            }
            let mode = fs::metadata(parent)?.permissions().mode();
            if mode & 0o001 == 0 {
                bail!(
                    "{} is not searchable by others (mode {mode:o}); the postgres user needs to reach {}",
                    parent.display(),
                    dir.display()
                );
            }
        }
        command::run(Command::new("chown").arg(USER).arg(&dir))?;
        let pg = Postgres { bin, dir };
        pg.as_postgres("initdb")
            .args(["-A", "trust", "-U", USER, "-D"])
            .arg(pg.data())
            .output()
            .context("initdb")
            .and_then(checked("initdb"))?;
        let options = format!(
            "-c listen_addresses='' -k {} -p {PORT} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c shared_buffers=256MB",
            pg.dir.display()
        );
        pg.as_postgres("pg_ctl")
            .arg("-D")
            .arg(pg.data())
            .args(["-o", &options, "-l"])
            .arg(pg.dir.join("server.log"))
            .args(["-w", "start"])
            .output()
            .context("pg_ctl start")
            .and_then(checked("pg_ctl start"))?;
        pg.client("createdb")
            .arg(DATABASE)
            .output()
            .context("createdb")
            .and_then(checked("createdb"))?;
        pg.client("pgbench")
            .args(["-i", "-q", "-s", "5", DATABASE])
            .output()
            .context("pgbench -i")
            .and_then(checked("pgbench -i"))?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn as_postgres(&self, program: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", USER, "--"]).arg(self.bin.join(program));
        cmd
    }

    /// A client tool connected to this cluster through its socket directory.
    pub fn client(&self, program: &str) -> Command {
        let mut cmd = self.as_postgres(program);
        cmd.arg("-h").arg(&self.dir).args(["-p", PORT]);
        cmd
    }

    /// `pgbench ARGS -T seconds` and its "tps = N (without initial connection time)".
    pub fn pgbench_tps(&self, args: &[&str], seconds: f64) -> Result<(f64, u64)> {
        let secs = seconds.round().max(1.0) as u64;
        let output = self
            .client("pgbench")
            .args(args)
            .args(["-T", &secs.to_string(), DATABASE])
            .output()
            .context("pgbench")?;
        if !output.status.success() {
            bail!(
                "pgbench {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        parse_pgbench(&text).with_context(|| format!("pgbench printed no tps line:\n{text}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// (tps, transactions processed) out of pgbench's summary.
fn parse_pgbench(text: &str) -> Option<(f64, u64)> {
    let tps = text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("tps = ")?;
        rest.split_whitespace().next()?.parse().ok()
    })?;
    let transactions = text
        .lines()
        .find_map(|line| {
            let rest = line
                .trim()
                .strip_prefix("number of transactions actually processed: ")?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    Some((tps, transactions))
}

fn checked(what: &'static str) -> impl Fn(std::process::Output) -> Result<()> {
    move |output| {
        if output.status.success() {
            Ok(())
        } else {
            bail!(
                "{what} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim()
            )
        }
    }
}

/// The newest /usr/lib/postgresql/N/bin holding `initdb` and `pgbench`.
fn server_bin_dir() -> Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .with_context(|| {
            format!(
                "no {} (apt package postgresql; `cargo xtask setup` installs it)",
                root.display()
            )
        })?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pgbench").exists()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).with_context(|| {
        format!(
            "no PostgreSQL with initdb and pgbench under {}",
            root.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_summary() {
        let text = "transaction type: <builtin: select only>\n\
                    number of transactions actually processed: 41234/41234\n\
                    latency average = 0.048 ms\n\
                    tps = 20617.123456 (without initial connection time)\n";
        assert_eq!(parse_pgbench(text), Some((20617.123456, 41234)));
        assert_eq!(parse_pgbench("nothing"), None);
    }
}
