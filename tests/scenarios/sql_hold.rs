//! Hold and decide on libpq, end to end: an application (psycopg2-binary, its bundled
//! libpq) in a cgroup of its own, selected by an enforcing `sql_query` policy. An injected
//! stacked statement is held in the kernel before a byte leaves, refused by the agent (the
//! query register cleared: libpq fails the call itself), and never reaches the server —
//! the table it would have changed is unchanged and the server's statement log never saw
//! it — while the application gets an error and keeps its connection. Ordinary queries are
//! never held. With the agent SIGKILLed during a hold, the watchdog continues the held
//! thread (fail-open) and the application runs on.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use rasp_tests::{
    require_root,
    sql::{detections_for, driver_python, libpq_target, Postgres},
    wait_for, Agent, Cgroup,
};

/// Reads queries from stdin, one a line, runs each on one connection with
/// `cursor.execute(line)` (the text is the query: an app that pasted user input into it),
/// and answers `ok <first value>` or `error <message>` on one line.
const APP: &str = r#"
import sys
import psycopg2
print("imported", flush=True)
sys.stdin.readline()
conn = psycopg2.connect(host=sys.argv[1], user="postgres", dbname="postgres")
conn.autocommit = True
print("connected", flush=True)
for line in sys.stdin:
    try:
        with conn.cursor() as cur:
            cur.execute(line.rstrip("\n"))
            row = cur.fetchone() if cur.description else None
        print("ok", row[0] if row else "-", flush=True)
    except Exception as e:
        print("error", str(e).strip().replace("\n", " "), flush=True)
"#;

struct App {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl App {
    fn start(agent: &Agent, pg: &Postgres, cgroup: &Cgroup) -> App {
        let script = agent.dir().join("held-app.py");
        std::fs::write(&script, APP).expect("write the app");
        let mut command = cgroup.command(driver_python());
        let mut child = command
            .arg(&script)
            .arg(pg.socket_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the app");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut app = App { child, out };
        assert_eq!(app.line(), "imported");
        app
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out
            .read_line(&mut line)
            .expect("read the app's answer");
        line.trim().to_string()
    }

    fn send(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{text}").expect("write to the app");
        stdin.flush().expect("flush");
    }

    fn run(&mut self, query: &str) -> String {
        self.send(query);
        self.line()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn enforcing_policy(agent_dir: &std::path::Path, cgroup: &Cgroup, action: &str) -> String {
    let dir = agent_dir.join("policies");
    std::fs::create_dir_all(&dir).expect("policy dir");
    std::fs::write(
        dir.join("hold.yaml"),
        format!(
            "name: sql-hold\nversion: 1\nmode: enforce\nselector:\n  cgroup: [\"{}\"]\nrules:\n  - id: sql-injection-{action}\n    severity: high\n    event: sql_query\n    match:\n      sql_finding: [injection]\n    action: {action}\n",
            cgroup.path_in_hierarchy()
        ),
    )
    .expect("write the policy");
    dir.display().to_string()
}

/// Starts PostgreSQL with `accounts`, the agent on an enforcing policy for `cgroup`, and
/// the app in it, connected and under hold.
fn setup(cgroup: &Cgroup, action: &str, extra: &[&str]) -> (Postgres, Agent, App) {
    let pg = Postgres::start();
    pg.query(
        "DROP TABLE IF EXISTS accounts; \
         CREATE TABLE accounts (name text PRIMARY KEY, balance int NOT NULL); \
         INSERT INTO accounts VALUES ('alice', 100)",
    );
    let scratch = std::env::temp_dir().join(rasp_tests::unique_name("rasp-hold-policy"));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let policies = enforcing_policy(&scratch, cgroup, action);
    let mut args = vec!["--policies", policies.as_str()];
    args.extend_from_slice(extra);
    let agent = Agent::start(&args);
    assert_eq!(agent.status()["sql_hold"]["enabled"], true);
    let mut app = App::start(&agent, &pg, cgroup);
    wait_for(Duration::from_secs(10), || {
        libpq_target(&agent, "psycopg2_binary.libs/libpq-")
    })
    .unwrap_or_else(|| panic!("bundled libpq not attached: {}", agent.status()));
    let pid = app.pid();
    wait_for(Duration::from_secs(10), || {
        agent.status()["sql_hold"]["processes"]
            .as_array()?
            .iter()
            .any(|p| p == &serde_json::json!(pid))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("pid {pid} never under hold: {}", agent.status()["sql_hold"]));
    app.send("go");
    assert_eq!(app.line(), "connected");
    (pg, agent, app)
}

const STACKED: &str = "SELECT balance FROM accounts WHERE name = 'alice'; UPDATE accounts SET balance = 0 WHERE name = 'alice'--'";
const BENIGN: &str = "SELECT balance FROM accounts WHERE name = 'alice'";

#[test]
fn an_injected_stacked_statement_is_refused_before_it_leaves() {
    require_root();
    let cgroup = Cgroup::new(&rasp_tests::unique_name("rasp-hold"));
    let (pg, agent, mut app) = setup(&cgroup, "block", &[]);
    let pid = app.pid();

    // Ordinary queries run, and are never held.
    assert_eq!(app.run(BENIGN), "ok 100");
    assert_eq!(
        app.run("SELECT count(*) FROM accounts WHERE balance BETWEEN 1 AND 500"),
        "ok 1"
    );

    let answer = app.run(STACKED);
    assert!(
        answer.starts_with("error") && answer.contains("null pointer"),
        "the app should get libpq's own error, got {answer:?}"
    );
    // The connection is still usable, and the UPDATE never ran.
    assert_eq!(app.run(BENIGN), "ok 100");
    assert_eq!(
        pg.query("SELECT balance FROM accounts WHERE name = 'alice'"),
        "100"
    );
    assert!(
        !pg.log().contains("UPDATE accounts SET balance = 0"),
        "the server saw the injected statement:\n{}",
        pg.log()
    );

    let detection = wait_for(Duration::from_secs(10), || {
        detections_for(&agent, "sql-injection-block", pid)
            .into_iter()
            .next()
    })
    .unwrap_or_else(|| panic!("no detection for the refused query: {}", agent.log_text()));
    assert_eq!(detection["outcome"], "held", "{detection}");
    let detail = detection["outcome_detail"].as_str().unwrap_or_default();
    assert!(detail.contains("refused"), "{detection}");
    assert_eq!(detection["event"]["held"], true, "{detection}");
    assert_eq!(detection["event"]["query"], STACKED);
    eprintln!(
        "hold: {detail}; kernel to decision {} us",
        detection["latency_us"]
    );
    // The benign queries were seen, not held.
    let held: Vec<_> = agent
        .events(&["--kind", "sql_query", "--pid", &pid.to_string()])
        .into_iter()
        .filter(|e| e["held"] == true)
        .collect();
    assert_eq!(held.len(), 1, "{}", rasp_tests::show(&held));
}

#[test]
fn kill_in_enforce_mode_kills_before_the_query_leaves() {
    require_root();
    let cgroup = Cgroup::new(&rasp_tests::unique_name("rasp-hold-kill"));
    let (pg, agent, mut app) = setup(&cgroup, "kill", &[]);
    let pid = app.pid();
    assert_eq!(app.run(BENIGN), "ok 100");
    app.send(STACKED);
    let status = rasp_tests::wait_child(&mut app.child, Duration::from_secs(10))
        .expect("the app was not killed");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert_eq!(
        pg.query("SELECT balance FROM accounts WHERE name = 'alice'"),
        "100"
    );
    let detection = wait_for(Duration::from_secs(10), || {
        detections_for(&agent, "sql-injection-kill", pid)
            .into_iter()
            .next()
    })
    .expect("a detection for the killed query");
    assert_eq!(detection["outcome"], "held");
    assert!(detection["outcome_detail"]
        .as_str()
        .is_some_and(|d| d.contains("killed")));
}

/// The agent dies (SIGKILL) while a thread is held: its watchdog continues the thread
/// (fail-open) as soon as it sees the agent gone, not when the bound passes (30 s here:
/// an answer within 15 s can only come from the agent's death), and the application runs on.
#[test]
fn an_agent_killed_during_a_hold_leaves_the_app_running() {
    require_root();
    let cgroup = Cgroup::new(&rasp_tests::unique_name("rasp-hold-death"));
    let (pg, mut agent, mut app) = setup(
        &cgroup,
        "block",
        &["--fault-hold-no-decision", "--hold-bound-ms", "30000"],
    );
    let watchdog = agent.status()["sql_hold"]["watchdog_pid"]
        .as_u64()
        .expect("watchdog pid") as u32;
    app.send(STACKED);
    // The thread is stopped: the app's process state is T.
    let stopped = wait_for(Duration::from_secs(5), || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", app.pid())).ok()?;
        let state = stat.rsplit(") ").next()?.chars().next()?;
        (state == 'T').then_some(())
    });
    assert!(stopped.is_some(), "the app was never stopped");
    let killed_at = Instant::now();
    rasp_tests::send_signal(agent.pid(), libc::SIGKILL);
    let _ = agent.wait_exit(Duration::from_secs(10));
    let answer = app.line();
    let waited = killed_at.elapsed();
    eprintln!("agent killed -> app answered {answer:?} after {waited:?}");
    // Fail-open: the query ran.
    assert!(answer.starts_with("ok"), "{answer}");
    assert!(
        waited < Duration::from_secs(15),
        "released after {waited:?}: by the 30 s bound, not by the agent's death"
    );
    assert_eq!(app.run(BENIGN), "ok 0");
    assert_eq!(
        pg.query("SELECT balance FROM accounts WHERE name = 'alice'"),
        "0"
    );
    // The watchdog leaves once the agent is gone.
    let gone = wait_for(Duration::from_secs(10), || {
        rasp_tests::process_gone(watchdog).then_some(())
    });
    assert!(
        gone.is_some(),
        "the watchdog (pid {watchdog}) outlived its agent"
    );
}

/// The kernel's pre-check decides as the library's `precheck` does, query by query: one
/// query per tell, queries whose keywords sit inside literals (standard, `E''` with an
/// escaped quote, dollar-quoted), and a tell just inside and just past the bytes checked.
/// A query is held exactly when the library finds a tell in it.
#[test]
fn the_kernel_holds_exactly_what_the_precheck_flags() {
    use rasp_common::hold::{
        precheck, PRECHECK_BYTES, TELL_COMMENT, TELL_CONSTANT_PREDICATE, TELL_DELAY, TELL_UNION,
    };
    require_root();
    let cgroup = Cgroup::new(&rasp_tests::unique_name("rasp-hold-tells"));
    let (_pg, agent, mut app) = setup(&cgroup, "block", &[]);
    let pid = app.pid();
    let base = "SELECT balance FROM accounts WHERE name = '";
    // A query of `len` bytes ending in a tell: the pre-check's last byte, or past it.
    let ending_in_tell = |len: usize| {
        let tell = "' OR 1=1";
        format!("{base}{}{tell}", "x".repeat(len - base.len() - tell.len()))
    };
    let inside = ending_in_tell(PRECHECK_BYTES as usize);
    let past = ending_in_tell(PRECHECK_BYTES as usize + 8);
    let cases: Vec<(String, u32)> = vec![
        (format!("{base}x' OR '1'='1'"), TELL_CONSTANT_PREDICATE),
        (format!("{base}' UNION SELECT 1"), TELL_UNION),
        (format!("{base}alice' -- note"), TELL_COMMENT),
        (
            format!("{base}alice' AND 1=(SELECT 1 FROM pg_sleep(0))"),
            TELL_DELAY,
        ),
        (inside.clone(), TELL_CONSTANT_PREDICATE),
        (format!("{base}it''s -- or union; select 1 or 1=1'"), 0),
        (
            "SELECT balance FROM accounts WHERE name = E'a\\' OR 1=1 --'".to_string(),
            0,
        ),
        ("SELECT $$ union select 1 or 1=1 -- $$".to_string(), 0),
        (past.clone(), 0),
    ];
    for (query, tell) in &cases {
        let found = precheck(query.as_bytes());
        assert_eq!(
            found & tell,
            *tell,
            "the case does not exercise its tell: {query:?}"
        );
        if *tell == 0 {
            assert_eq!(found, 0, "a benign case with a tell: {query:?}");
        }
        let answer = app.run(query);
        eprintln!("{:.60}… -> {answer}", query);
    }
    let events = wait_for(Duration::from_secs(10), || {
        let events = agent.events(&["--kind", "sql_query", "--pid", &pid.to_string()]);
        cases
            .iter()
            .all(|(q, _)| events.iter().any(|e| e["query"] == q.as_str()))
            .then_some(events)
    })
    .unwrap_or_else(|| panic!("not every query was reported: {}", agent.log_text()));
    for (query, tell) in &cases {
        let held: Vec<bool> = events
            .iter()
            .filter(|e| e["query"] == query.as_str())
            .map(|e| e["held"] == true)
            .collect();
        assert_eq!(
            held,
            vec![*tell != 0],
            "held by the kernel vs tell {tell:#x} for {query:?}"
        );
    }
}
