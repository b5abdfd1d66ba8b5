//! SQL through libpq, end to end: a real PostgreSQL started here (initdb + pg_ctl on a unix
//! socket in a temp dir, as the `postgres` user), real `psql` clients, the real agent with
//! its default policies. The agent finds the system libpq by its symbols, its uprobes hand
//! over each query once, the analyzer judges it, and the `sql_query` rules decide.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use rasp_tests::{output_within, require_root, unique_name, wait_for, Agent};
use serde_json::Value;

/// A throw-away PostgreSQL on a unix socket; stopped and removed on drop.
struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
}

impl Postgres {
    fn start() -> Postgres {
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
        let options = format!("-k {} -c listen_addresses=''", pg.dir.display());
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

    fn as_postgres(&self, argv: &[&str]) {
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
    fn psql(&self, query: &str) -> (u32, Output) {
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

fn detections_for(agent: &Agent, rule: &str, pid: u32) -> Vec<Value> {
    agent
        .detections(&["--rule", rule])
        .into_iter()
        .filter(|d| d["process"]["pid"] == serde_json::json!(pid))
        .collect()
}

#[test]
fn injected_queries_are_detected_and_ordinary_ones_are_not() {
    require_root();
    let pg = Postgres::start();
    let agent = Agent::start(&[]);
    // The system libpq is found by its symbols and probed before any client runs.
    let target = wait_for(Duration::from_secs(10), || {
        let status = agent.status();
        status["uprobe_targets"]
            .as_array()?
            .iter()
            .find(|t| {
                t["kind"] == "libpq" && t["attached"].as_array().is_some_and(|a| !a.is_empty())
            })
            .cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "no libpq target attached: {}",
            agent.status()["uprobe_targets"]
        )
    });
    let functions: Vec<&str> = target["attached"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["function"].as_str())
        .collect();
    assert_eq!(
        functions,
        ["PQsendQuery", "PQsendQueryParams", "PQsendPrepare"],
        "{target}"
    );

    let injected = "SELECT relname FROM pg_class WHERE relname = '' OR '1'='1' --'";
    let (pid, out) = pg.psql(injected);
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = wait_for(Duration::from_secs(10), || {
        detections_for(&agent, "sql-injection", pid)
            .into_iter()
            .next()
    })
    .unwrap_or_else(|| {
        panic!(
            "no sql-injection detection for psql pid {pid}; its sql events: {:?}",
            agent.events(&["--kind", "sql_query", "--pid", &pid.to_string()])
        )
    });
    let event = &found["event"];
    assert_eq!(event["kind"], "sql_query");
    assert_eq!(event["function"], "PQsendQuery");
    assert_eq!(event["query"], injected);
    let findings: Vec<&str> = event["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        findings.contains(&"injection") && findings.contains(&"tautology"),
        "{found}"
    );

    // Ordinary SQL, with quotes, `or`, `union` and `--` inside its literals: seen, not flagged.
    let benign = "SELECT relname FROM pg_class WHERE relname = 'it''s or union -- not sql' \
                  AND relkind IN ('r', 'v') ORDER BY relname LIMIT 5";
    let (pid, out) = pg.psql(benign);
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = wait_for(Duration::from_secs(10), || {
        agent
            .events(&["--kind", "sql_query", "--pid", &pid.to_string()])
            .into_iter()
            .find(|e| e["analyzed"] == true)
    })
    .unwrap_or_else(|| panic!("the benign query was not captured and analyzed"));
    assert_eq!(seen["query"], benign);
    assert!(
        detections_for(&agent, "sql-injection", pid).is_empty(),
        "benign query flagged: {:?}",
        detections_for(&agent, "sql-injection", pid)
    );

    // Reading a server file from SQL.
    let (pid, _) = pg.psql("SELECT pg_read_file('/etc/hostname')");
    let file = wait_for(Duration::from_secs(10), || {
        detections_for(&agent, "sql-file-or-program-access", pid)
            .into_iter()
            .next()
    });
    assert!(file.is_some(), "pg_read_file not detected");
}
