//! SQL through libpq, end to end: a real PostgreSQL started here (initdb + pg_ctl on a unix
//! socket in a temp dir, as the `postgres` user), real `psql` clients, the real agent with
//! its default policies. The agent finds the system libpq by its symbols, its uprobes hand
//! over each query once, the analyzer judges it, and the `sql_query` rules decide.

use std::time::Duration;

use rasp_tests::{
    require_root,
    sql::{detections_for, Postgres},
    wait_for, Agent,
};
use serde_json::Value;

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

/// A python process that dlopens `library` with ctypes, then (on a line on stdin) connects
/// to `pg` and sends `query` through `PQexec`, then exits on end of input.
fn ctypes_client(library: &std::path::Path, pg: &Postgres, query: &str) -> std::process::Child {
    let script = format!(
        r#"
import ctypes, sys
pq = ctypes.CDLL({lib:?})
pq.PQconnectdb.restype = ctypes.c_void_p
pq.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
pq.PQexec.restype = ctypes.c_void_p
pq.PQstatus.argtypes = [ctypes.c_void_p]
print("loaded", flush=True)
sys.stdin.readline()
conn = pq.PQconnectdb({conninfo:?}.encode())
assert pq.PQstatus(conn) == 0, "connection failed"
pq.PQexec(conn, {query:?}.encode())
print("sent", flush=True)
sys.stdin.readline()
"#,
        lib = library.display().to_string(),
        conninfo = format!(
            "host={} user=postgres dbname=postgres",
            pg.socket_dir().display()
        ),
    );
    std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start /usr/bin/python3 (Debian package python3)")
}

fn read_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    let out = child.stdout.as_mut().expect("piped stdout");
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("read the client's stdout");
    line.trim().to_string()
}

fn write_line(child: &mut std::process::Child) {
    use std::io::Write;
    let stdin = child.stdin.as_mut().expect("piped stdin");
    stdin.write_all(b"go\n").expect("write the client's stdin");
    stdin.flush().expect("flush");
}

/// A PostgreSQL server and an agent whose start-up scan is over (the system's libpq is
/// listed): from then on only library loads find new files.
fn postgres_and_scanned_agent() -> (Postgres, Agent) {
    let pg = Postgres::start();
    let agent = Agent::start(&[]);
    wait_for(Duration::from_secs(30), || {
        rasp_tests::sql::libpq_target(&agent, "libpq.so")
    })
    .expect("the system libpq is attached by the start-up scan");
    (pg, agent)
}

/// A copy of the system libpq at `to`: a file (an inode) the agent has never seen.
fn copy_system_libpq(to: &std::path::Path) {
    std::fs::copy("/usr/lib/x86_64-linux-gnu/libpq.so.5", to)
        .expect("copy the system libpq (Debian package libpq5)");
}

/// A libpq the agent has never seen (a copy: a new inode), dlopened long after the agent
/// started, is found from the kernel's library-load record, not from a rescan (`found_by`
/// says which; the latency from the mmap is in `status`, measured, not asserted), its
/// queries captured with the right pid, and released when its only process exits.
#[test]
fn a_libpq_dlopened_after_start_is_found_by_its_library_load() {
    require_root();
    let (pg, agent) = postgres_and_scanned_agent();
    let copy = agent.dir().join("libpq-private-copy.so.5");
    copy_system_libpq(&copy);
    let mut client = ctypes_client(&copy, &pg, "SELECT 'found by its library load' AS marker");
    let pid = client.id();
    assert_eq!(read_line(&mut client), "loaded");
    let target = wait_for(Duration::from_secs(5), || {
        rasp_tests::sql::libpq_target(&agent, "libpq-private-copy")
    })
    .unwrap_or_else(|| {
        panic!(
            "the dlopened copy was not attached: {}",
            agent.status()["uprobe_targets"]
        )
    });
    assert_eq!(target["found_by"], "library_load", "{target}");
    assert_eq!(
        target["path"],
        format!("/proc/{pid}/root{}", copy.display()),
        "{target}"
    );
    let latency = target["attach_latency_us"].as_u64().expect("latency");
    // Reported, not asserted: how fast is a benchmark's question (a loaded machine took
    // 440 ms once); what must hold is that the query sent next is captured (below).
    eprintln!("dlopen -> attached: {latency} us");
    write_line(&mut client);
    assert_eq!(read_line(&mut client), "sent");
    let event = wait_for(Duration::from_secs(10), || {
        agent
            .events(&["--kind", "sql_query", "--pid", &pid.to_string()])
            .into_iter()
            .find(|e| e["analyzed"] == true)
    })
    .unwrap_or_else(|| panic!("no query from pid {pid} through the copy"));
    assert_eq!(
        event["query"],
        "SELECT 'found by its library load' AS marker"
    );
    write_line(&mut client);
    let _ = client.wait();
    let released = wait_for(Duration::from_secs(10), || {
        rasp_tests::sql::libpq_target(&agent, "libpq-private-copy")
            .is_none()
            .then_some(())
    });
    assert!(
        released.is_some(),
        "the copy stayed attached after its process exited: {}",
        agent.status()["uprobe_targets"]
    );
}

/// A libpq file deleted while a process maps it and the agent is attached, then replaced at
/// the same path by a new copy (a package upgrade does both): the attachment lives on the
/// inode, so the first process's next query is still captured; the new file is a new target
/// (another inode) found when the next process maps it, and each goes away with its process.
#[test]
fn a_libpq_deleted_or_replaced_while_attached_keeps_being_watched() {
    require_root();
    let (pg, agent) = postgres_and_scanned_agent();
    let path = agent.dir().join("libpq-upgraded.so.5");
    copy_system_libpq(&path);
    let target_of = |pid: u32, not_file: Option<&Value>| {
        wait_for(Duration::from_secs(10), || {
            agent.status()["uprobe_targets"]
                .as_array()?
                .iter()
                .find(|t| {
                    t["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with(&format!("/proc/{pid}/root")))
                        && t["path"]
                            .as_str()
                            .is_some_and(|p| p.contains("libpq-upgraded"))
                        && Some(&t["file"]) != not_file
                        && t["attached"].as_array().is_some_and(|a| !a.is_empty())
                })
                .cloned()
        })
    };

    let mut old = ctypes_client(&path, &pg, "SELECT 'through the deleted file' AS marker");
    let old_pid = old.id();
    assert_eq!(read_line(&mut old), "loaded");
    let old_target = target_of(old_pid, None).unwrap_or_else(|| {
        panic!(
            "the first copy was not attached: {}",
            agent.status()["uprobe_targets"]
        )
    });
    // The upgrade: the file goes, a new one takes its path.
    std::fs::remove_file(&path).expect("delete the mapped copy");
    copy_system_libpq(&path);

    write_line(&mut old);
    assert_eq!(read_line(&mut old), "sent");
    let captured = wait_for(Duration::from_secs(10), || {
        agent
            .events(&["--kind", "sql_query", "--pid", &old_pid.to_string()])
            .into_iter()
            .find(|e| e["query"] == "SELECT 'through the deleted file' AS marker")
    });
    assert!(
        captured.is_some(),
        "the query through the deleted file was not captured; targets: {}",
        agent.status()["uprobe_targets"]
    );

    let mut new = ctypes_client(&path, &pg, "SELECT 'through the new file' AS marker");
    let new_pid = new.id();
    assert_eq!(read_line(&mut new), "loaded");
    let new_target = target_of(new_pid, Some(&old_target["file"])).unwrap_or_else(|| {
        panic!(
            "the replacement (a new inode) was not attached: {}",
            agent.status()["uprobe_targets"]
        )
    });
    assert_ne!(new_target["file"], old_target["file"], "{new_target}");
    write_line(&mut new);
    assert_eq!(read_line(&mut new), "sent");
    let captured = wait_for(Duration::from_secs(10), || {
        agent
            .events(&["--kind", "sql_query", "--pid", &new_pid.to_string()])
            .into_iter()
            .find(|e| e["query"] == "SELECT 'through the new file' AS marker")
    });
    assert!(
        captured.is_some(),
        "the query through the new file was not captured"
    );

    // Each target goes when its only process does; the agent keeps serving.
    for mut client in [old, new] {
        write_line(&mut client);
        let _ = client.wait();
    }
    let released = wait_for(Duration::from_secs(10), || {
        agent.status()["uprobe_targets"]
            .as_array()?
            .iter()
            .all(|t| {
                !t["path"]
                    .as_str()
                    .is_some_and(|p| p.contains("libpq-upgraded"))
            })
            .then_some(())
    });
    assert!(
        released.is_some(),
        "a copy stayed attached after its process exited: {}",
        agent.status()["uprobe_targets"]
    );
}

/// An executable that carries libpq's entry points itself (a statically linked client),
/// exec'd after start, is found from the exec and probed: its own `PQsendQuery` is captured.
#[test]
fn a_static_executable_exporting_libpq_is_found_at_exec() {
    require_root();
    let agent = Agent::start(&[]);
    let source = agent.dir().join("static-pq.c");
    std::fs::write(
        &source,
        r#"
#include <stdio.h>
#include <string.h>
volatile int sink;
__attribute__((noinline)) int PQsendQuery(void *conn, const char *query) {
    sink = (int)strlen(query) + (conn != 0);
    return 1;
}
__attribute__((noinline)) void *PQexec(void *conn, const char *query) {
    PQsendQuery(conn, query);
    return conn;
}
__attribute__((noinline)) void PQfinish(void *conn) { sink = conn != 0; }
int main(void) {
    char line[16];
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return 1;
    PQexec((void *)0x1234, "SELECT 'from a static libpq' AS marker");
    PQfinish((void *)0x1234);
    printf("sent\n");
    fflush(stdout);
    fgets(line, sizeof line, stdin);
    return 0;
}
"#,
    )
    .expect("write the C source");
    let binary = agent.dir().join("static-pq");
    let built = std::process::Command::new("cc")
        .args(["-O1", "-rdynamic", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("this test needs a C compiler (cc, Debian package gcc)");
    assert!(built.success());
    let mut child = std::process::Command::new(&binary)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the static client");
    let pid = child.id();
    assert_eq!(read_line(&mut child), "ready");
    let target = wait_for(Duration::from_secs(5), || {
        rasp_tests::sql::libpq_target(&agent, "static-pq")
    })
    .unwrap_or_else(|| {
        panic!(
            "the executable was not found as a libpq target: {}",
            agent.status()["uprobe_targets"]
        )
    });
    assert_eq!(target["found_by"], "exec", "{target}");
    write_line(&mut child);
    assert_eq!(read_line(&mut child), "sent");
    let event = wait_for(Duration::from_secs(10), || {
        agent
            .events(&["--kind", "sql_query", "--pid", &pid.to_string()])
            .into_iter()
            .next()
    })
    .unwrap_or_else(|| panic!("no query captured from the static executable (pid {pid})"));
    assert_eq!(event["query"], "SELECT 'from a static libpq' AS marker");
    assert_eq!(event["function"], "PQsendQuery");
    write_line(&mut child);
    let _ = child.wait();
}

/// Each of the three probed functions hands over its own query, named as that function:
/// one kernel program serves all three, told apart by its attach cookie, and `PQsendPrepare`
/// has the query in its third argument (the second is the statement's name). A ctypes
/// client calls `PQexec`, `PQexecParams` and `PQprepare` on the system libpq.
#[test]
fn each_libpq_entry_point_reports_its_own_query() {
    require_root();
    let (pg, agent) = postgres_and_scanned_agent();
    let conninfo = format!(
        "host={} user=postgres dbname=postgres",
        pg.socket_dir().display()
    );
    let script = format!(
        r#"
import ctypes
pq = ctypes.CDLL("libpq.so.5")
pq.PQconnectdb.restype = ctypes.c_void_p
pq.PQstatus.argtypes = [ctypes.c_void_p]
pq.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
pq.PQexec.restype = ctypes.c_void_p
pq.PQexecParams.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p,
                            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
pq.PQexecParams.restype = ctypes.c_void_p
pq.PQprepare.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                         ctypes.c_void_p]
pq.PQprepare.restype = ctypes.c_void_p
conn = pq.PQconnectdb({conninfo:?}.encode())
assert pq.PQstatus(conn) == 0, "connection failed"
pq.PQexec(conn, b"SELECT 'through PQexec' AS marker")
pq.PQexecParams(conn, b"SELECT 'through PQexecParams' AS marker", 0, None, None, None, None, 0)
pq.PQprepare(conn, b"rasp_statement_name", b"SELECT 'through PQprepare' AS marker", 0, None)
"#
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("run /usr/bin/python3 (Debian package python3)");
    assert!(
        out.status.success(),
        "the ctypes client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = [
        ("PQsendQuery", "SELECT 'through PQexec' AS marker"),
        (
            "PQsendQueryParams",
            "SELECT 'through PQexecParams' AS marker",
        ),
        ("PQsendPrepare", "SELECT 'through PQprepare' AS marker"),
    ];
    let got = wait_for(Duration::from_secs(10), || {
        let events = agent.events(&["--kind", "sql_query"]);
        let pairs: Vec<(String, String)> = events
            .iter()
            .filter(|e| e["query"].as_str().is_some_and(|q| q.contains("'through ")))
            .map(|e| {
                (
                    e["function"].as_str().unwrap_or_default().to_string(),
                    e["query"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        (pairs.len() >= want.len()).then_some(pairs)
    })
    .unwrap_or_else(|| {
        panic!(
            "not every entry point's query was captured: {:?}",
            agent.events(&["--kind", "sql_query"])
        )
    });
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(f, q)| (f.to_string(), q.to_string()))
        .collect();
    assert_eq!(got, want, "each query once, named by its own function");
}
