//! PostgreSQL for the SQL scenarios: a throw-away server (initdb + pg_ctl on a unix socket in
//! a temp dir, as the `postgres` user), `psql`, and the Python drivers `cargo xtask setup`
//! installs into `target/sql-drivers-venv` (psycopg2-binary with its bundled libpq, psycopg 3
//! in pure-Python mode on the system libpq).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use serde_json::Value;

use crate::{output_within, unique_name, workspace_root, Agent};

/// A throw-away PostgreSQL on a unix socket; stopped and removed on drop.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = newest_postgres_bin();
        let dir = std::env::temp_dir().join(unique_name("rasp-pg"));
        fs::create_dir_all(&dir).expect("create the PostgreSQL dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        let pg = Postgres { bin, dir };
        let data = pg.dir.join("data");
        pg.as_postgres(&[
            pg.bin.join("initdb").to_str().unwrap_or_default(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-D",
            data.to_str().unwrap_or_default(),
        ]);
        let options = format!(
            "-k {} -c listen_addresses='' -c log_statement=all",
            pg.dir.display()
        );
        pg.as_postgres(&[
            pg.bin.join("pg_ctl").to_str().unwrap_or_default(),
            "-D",
            data.to_str().unwrap_or_default(),
            "-o",
            &options,
            "-l",
            pg.dir.join("server.log").to_str().unwrap_or_default(),
            "-w",
            "start",
        ]);
        pg
    }

    pub fn as_postgres(&self, argv: &[&str]) {
        let out = output_within(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(argv),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|| panic!("{argv:?} did not finish"));
        assert!(
            out.status.success(),
            "{argv:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `psql -c QUERY` as a client of this server; its pid and output.
    pub fn psql(&self, query: &str) -> (u32, Output) {
        let child = Command::new("psql")
            .args([
                "-h",
                self.dir.to_str().unwrap_or_default(),
                "-U",
                "postgres",
            ])
            .args(["-X", "-q", "-c", query])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start psql (Debian package postgresql-client)");
        let pid = child.id();
        let out = child.wait_with_output().expect("psql output");
        (pid, out)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn newest_postgres_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = fs::read_dir(root)
        .unwrap_or_else(|e| {
            panic!(
                "no {} ({e}): `cargo xtask setup` installs postgresql",
                root.display()
            )
        })
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("no PostgreSQL with initdb under {}", root.display()))
}

impl Postgres {
    /// The directory holding the server's unix socket (libpq's `host`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log (statements are logged: `log_statement=all`).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs `sql` through psql and returns its trimmed stdout (`-tA`), panicking on failure.
    pub fn query(&self, sql: &str) -> String {
        let out = output_within(
            Command::new("psql")
                .args([
                    "-h",
                    self.dir.to_str().unwrap_or_default(),
                    "-U",
                    "postgres",
                ])
                .args(["-X", "-q", "-tA", "-c", sql]),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("psql {sql:?} did not finish"));
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The driver venv's python (`cargo xtask setup` creates it).
pub fn driver_python() -> PathBuf {
    let python = workspace_root().join("target/sql-drivers-venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: `cargo xtask setup` installs psycopg2-binary and psycopg into it",
        python.display()
    );
    python
}

/// Detections of `rule` whose process is `pid`.
pub fn detections_for(agent: &Agent, rule: &str, pid: u32) -> Vec<Value> {
    agent
        .detections(&["--rule", rule])
        .into_iter()
        .filter(|d| d["process"]["pid"] == serde_json::json!(pid))
        .collect()
}

/// The libpq targets in `status` with attached probes that `pid` is known to map, or whose
/// path contains `path_part`.
pub fn libpq_target(agent: &Agent, path_part: &str) -> Option<Value> {
    agent.status()["uprobe_targets"]
        .as_array()?
        .iter()
        .find(|t| {
            t["kind"] == "libpq"
                && t["path"].as_str().is_some_and(|p| p.contains(path_part))
                && t["attached"].as_array().is_some_and(|a| !a.is_empty())
        })
        .cloned()
}
