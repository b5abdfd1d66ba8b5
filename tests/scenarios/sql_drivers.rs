//! Real drivers, real attack tool: psycopg2-binary (its own bundled libpq, found when the
//! import loads it) and psycopg 3 in pure-Python mode (the system libpq, through ctypes),
//! from the venv `cargo xtask setup` makes; a small HTTPS web app on Python's http.server
//! and ssl module (the system libssl, whose plaintext the agent reads too) with an
//! injectable endpoint and a parameterized one, attacked by sqlmap (Debian's package) and a
//! scripted set of sqlmap-style payloads. Every attack produces a SQL detection naming the
//! app's pid; ordinary traffic and ORM-style parameterized queries produce none. Besides
//! `/item` (a quoted string) the app pastes its parameter into a number (`/byid`), a LIKE
//! pattern in parentheses (`/search`), an ORDER BY (`/sorted`) and an INSERT's values
//! (`/visit`): the contexts `tests/sqlmap/run.sh` attacks with every sqlmap technique for
//! the per-statement measurement (`detect::sql::sqlmap` in rasp-agent).

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use rasp_tests::{
    https::{curl, Cert},
    output_within, require_root,
    sql::{detections_for, driver_python, libpq_target, Postgres},
    url_encode, wait_for, Agent,
};
use serde_json::Value;

/// The app: `python app.py DRIVER SOCKET_DIR CERT KEY`. Imports its driver, prints `imported`, waits
/// for a line on stdin (the test waits until the driver's libpq is probed), connects, runs
/// ORM-style start-up queries, prints `listening PORT`, and serves until killed.
const APP: &str = r#"
import json, os, ssl, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
driver, host, cert, key = sys.argv[1:5]
if driver == "psycopg2":
    import psycopg2 as db
    def connect():
        c = db.connect(host=host, user="postgres", dbname="postgres")
        c.autocommit = True
        return c
else:
    os.environ["PSYCOPG_IMPL"] = "python"
    import psycopg as db
    def connect():
        return db.connect(host=host, user="postgres", dbname="postgres", autocommit=True)
print("imported", flush=True)
sys.stdin.readline()
conn = connect()
with conn.cursor() as cur:
    # What an ORM sends: quoted identifiers, parameters, LIMIT, IN lists, quotes in data.
    cur.execute('SELECT "items"."id", "items"."name", "items"."price" FROM "items" '
                'WHERE "items"."price" > %s ORDER BY "items"."name" ASC LIMIT 21', (1,))
    cur.execute('SELECT COUNT(*) AS "__count" FROM "items" WHERE "items"."name" IN (%s, %s)',
                ("apple", "it's -- or union"))
    cur.execute('UPDATE "items" SET "price" = %s WHERE "items"."name" = %s', (3, "apple"))

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        name = urllib.parse.parse_qs(url.query).get("name", [""])[0]
        try:
            with conn.cursor() as cur:
                if url.path == "/item":
                    cur.execute("SELECT id, name, price FROM items WHERE name = '" + name + "'")
                elif url.path == "/byid":
                    cur.execute("SELECT id, name, price FROM items WHERE id = " + name)
                elif url.path == "/search":
                    cur.execute("SELECT id, name FROM items WHERE (name LIKE '%" + name + "%') ORDER BY id")
                elif url.path == "/sorted":
                    cur.execute("SELECT id, name, price FROM items ORDER BY " + name)
                elif url.path == "/visit":
                    cur.execute("INSERT INTO visits (who, at) VALUES ('" + name + "', now())")
                elif url.path == "/safe":
                    cur.execute("SELECT id, name, price FROM items WHERE name = %s", (name,))
                else:
                    self.send_response(404); self.end_headers(); return
                rows = cur.fetchall() if cur.description else []
            body, code = json.dumps([list(map(str, r)) for r in rows]).encode(), 200
        except Exception as e:
            body, code = str(e).encode(), 500
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server = HTTPServer(("127.0.0.1", 0), Handler)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
"#;

struct App {
    child: Child,
    port: u16,
}

impl App {
    /// Starts the app with `driver`, waits until the libpq it loads (`libpq_path_part`) is
    /// probed and it serves.
    fn start(agent: &Agent, pg: &Postgres, driver: &str, libpq_path_part: &str) -> App {
        let script = agent.dir().join("app.py");
        std::fs::write(&script, APP).expect("write app.py");
        let cert = Cert::new(agent.dir());
        let mut child = Command::new(driver_python())
            .arg(&script)
            .arg(driver)
            .arg(pg.socket_dir())
            .arg(&cert.cert)
            .arg(&cert.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the web app");
        assert_eq!(line(&mut child), "imported");
        let target = wait_for(Duration::from_secs(10), || {
            libpq_target(agent, libpq_path_part)
        })
        .unwrap_or_else(|| {
            panic!(
                "{driver}'s libpq ({libpq_path_part}) not attached: {}",
                agent.status()["uprobe_targets"]
            )
        });
        eprintln!(
            "{driver}: libpq {} found by {} ({} us)",
            target["path"], target["found_by"], target["attach_latency_us"]
        );
        let stdin = child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("release the app");
        stdin.flush().expect("flush");
        let listening = line(&mut child);
        let port = listening
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("app said {listening:?}"));
        App { child, port }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The app's base URL.
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// GET `path?name=<value url-encoded>` over HTTPS: the status.
    fn get(&self, path: &str, value: &str) -> u16 {
        let url = format!("{}{path}?name={}", self.url(), url_encode(value));
        curl(&[url])
            .first()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read the app's stdout");
    line.trim().to_string()
}

fn items_table(pg: &Postgres) {
    pg.query(
        "DROP TABLE IF EXISTS items; \
         CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price int NOT NULL); \
         INSERT INTO items (name, price) VALUES ('apple', 3), ('banana', 2), ('O''Reilly', 9); \
         DROP TABLE IF EXISTS visits; CREATE TABLE visits (who text, at timestamptz)",
    );
}

fn queries_of(agent: &Agent, pid: u32) -> Vec<Value> {
    agent
        .events(&[
            "--kind",
            "sql_query",
            "--pid",
            &pid.to_string(),
            "--limit",
            "100000",
        ])
        .into_iter()
        .filter(|e| e["analyzed"] == true)
        .collect()
}

/// Waits until `pid` has sent a query containing `needle` (analyzed), and returns it.
fn query_containing(agent: &Agent, pid: u32, needle: &str) -> Value {
    wait_for(Duration::from_secs(15), || {
        queries_of(agent, pid)
            .into_iter()
            .find(|e| e["query"].as_str().is_some_and(|q| q.contains(needle)))
    })
    .unwrap_or_else(|| {
        panic!(
            "no query containing {needle:?} from pid {pid}; its queries: {:?}",
            queries_of(agent, pid)
                .iter()
                .map(|e| e["query"].clone())
                .collect::<Vec<_>>()
        )
    })
}

/// Ordinary traffic, then sqlmap-style payloads by hand, then sqlmap itself: the ordinary
/// part detects nothing, every attack is a detection naming the app's pid.
fn attack_the_app(driver: &str, libpq_path_part: &str, placeholder: &str) {
    require_root();
    let pg = Postgres::start();
    items_table(&pg);
    let agent = Agent::start(&[]);
    wait_for(Duration::from_secs(30), || libpq_target(&agent, "libpq.so"))
        .expect("the start-up scan attaches the system libpq");
    let app = App::start(&agent, &pg, driver, libpq_path_part);
    let pid = app.pid();

    // The app's own ORM-style queries: captured with the right pid and text, not flagged.
    let orm = query_containing(&agent, pid, "\"__count\"");
    let text = orm["query"].as_str().unwrap_or_default();
    assert!(text.contains(placeholder), "{driver} sent {text:?}");
    // Ordinary traffic to both endpoints, quotes and all on the parameterized one.
    for name in ["apple", "banana"] {
        assert_eq!(app.get("/item", name), 200);
    }
    for name in ["apple", "O'Reilly", "it's -- or union select"] {
        assert_eq!(app.get("/safe", name), 200);
    }
    // And to the other injectable endpoints, with the values they expect.
    for (path, value) in [
        ("/byid", "2"),
        ("/search", "an"),
        ("/sorted", "price DESC, name"),
        ("/visit", "carol"),
    ] {
        assert_eq!(app.get(path, value), 200, "{path}?name={value}");
    }
    query_containing(&agent, pid, "VALUES ('carol'");
    let banana = query_containing(&agent, pid, "WHERE name = 'banana'");
    // The analyzer's facts ride on the event: statement kind, tables, shape novelty.
    assert_eq!(
        banana["statements"],
        serde_json::json!(["select"]),
        "{banana}"
    );
    assert_eq!(banana["tables"], serde_json::json!(["items"]), "{banana}");
    let item_queries: Vec<Value> = queries_of(&agent, pid)
        .into_iter()
        .filter(|e| {
            e["query"]
                .as_str()
                .is_some_and(|q| q.starts_with("SELECT id, name, price FROM items WHERE name = '"))
        })
        .collect();
    // The first /item query was a shape new to this service (its executable); the second,
    // the same shape with another literal, was not.
    assert!(
        item_queries.iter().any(|e| e["new_shape"]["service"]
            .as_str()
            .is_some_and(|s| s.starts_with("exe:"))),
        "{}",
        rasp_tests::show(&item_queries)
    );
    assert!(
        item_queries.iter().any(|e| e["new_shape"].is_null()),
        "{}",
        rasp_tests::show(&item_queries)
    );
    let ordinary = queries_of(&agent, pid).len();
    assert!(ordinary >= 8, "{ordinary} queries seen from the app");
    let flagged = detections_for(&agent, "sql-injection", pid);
    assert!(
        flagged.is_empty(),
        "ordinary traffic flagged: {}",
        rasp_tests::show(&flagged)
    );

    // Payloads from sqlmap's boundaries and tests, through the injectable endpoint: each
    // one is its own detection (a distinct query), each names the app.
    let payloads = [
        ("apple' OR '1'='1", "tautology"),
        ("apple' AND 4825=4825 AND 'oMqa'='oMqa", "tautology"),
        (
            "apple' UNION ALL SELECT NULL,NULL,(CHR(113)||CHR(118))-- -",
            "union_extraction",
        ),
        ("apple';SELECT PG_SLEEP(0)--", "stacked_statement"),
        (
            "apple' AND 1234=CAST((CHR(113))||(SELECT version())::text AS NUMERIC)-- x",
            "error_based",
        ),
    ];
    for (payload, _) in &payloads {
        app.get("/item", payload);
    }
    for (payload, finding) in &payloads {
        let expected = format!("SELECT id, name, price FROM items WHERE name = '{payload}'");
        let found = wait_for(Duration::from_secs(15), || {
            detections_for(&agent, "sql-injection", pid)
                .into_iter()
                .find(|d| d["event"]["query"] == expected.as_str())
        })
        .unwrap_or_else(|| {
            panic!(
                "payload {payload:?} not detected for pid {pid}; detections: {}",
                rasp_tests::show(&detections_for(&agent, "sql-injection", pid))
            )
        });
        let findings = found["event"]["findings"].to_string();
        assert!(findings.contains(finding), "{payload:?}: {findings}");
    }
    // The agent read the requests inside TLS too: an injected parameter that reached the
    // query is linked request → query.
    wait_for(Duration::from_secs(15), || {
        detections_for(&agent, "sql-injection-confirmed", pid)
            .into_iter()
            .next()
    })
    .unwrap_or_else(|| {
        panic!(
            "no sql-injection-confirmed detection for {driver}'s app {pid}: {}",
            rasp_tests::show(&agent.events(&["--kind", "http", "--pid", &pid.to_string()]))
        )
    });
    // The same payloads through the parameterized endpoint are data: no detection.
    let before = detections_for(&agent, "sql-injection", pid).len();
    for (payload, _) in &payloads {
        assert_eq!(app.get("/safe", payload), 200);
    }
    query_containing(&agent, pid, "PG_SLEEP(0)--");
    assert_eq!(
        detections_for(&agent, "sql-injection", pid).len(),
        before,
        "a parameterized query was flagged"
    );

    // sqlmap itself, non-interactive: boolean-blind and UNION on the quoted string, and
    // error-based too on the number (no quote to close: the payloads end in a glued
    // comment, `1 ORDER BY 3-- x`, or a constant probe). Each run is detected.
    let mut before = before;
    for (target, techniques) in [("item?name=apple", "BU"), ("byid?name=1", "BEU")] {
        let out_dir = agent.dir().join("sqlmap");
        let url = format!("{}/{target}", app.url());
        let run = output_within(
            Command::new("sqlmap")
                .args(["-u", &url, "-p", "name", "--batch", "--flush-session"])
                .arg(format!("--technique={techniques}"))
                // Pre-opened connections stall the app's single-threaded TLS accept.
                .args([
                    "--dbms=PostgreSQL",
                    "--disable-coloring",
                    "--disable-precon",
                ])
                .arg(format!("--output-dir={}", out_dir.display()))
                .env("HOME", agent.dir()),
            Duration::from_secs(300),
        )
        .expect("sqlmap finished within 5 minutes (Debian package sqlmap)");
        let said = String::from_utf8_lossy(&run.stdout);
        assert!(
            said.contains("is vulnerable") || said.contains("injectable"),
            "sqlmap found nothing to attack at /{target}: {said}"
        );
        let detections = detections_for(&agent, "sql-injection", pid);
        let from_sqlmap = detections.len() - before;
        eprintln!(
            "{driver}: sqlmap --technique={techniques} on /{target} produced {from_sqlmap} new \
             sql-injection detections"
        );
        assert!(
            from_sqlmap > 0,
            "sqlmap's queries to /{target} produced no detection"
        );
        assert!(detections
            .iter()
            .all(|d| d["process"]["pid"] == serde_json::json!(pid)));
        before = detections.len();
    }
}

#[test]
fn psycopg2_binary_with_its_bundled_libpq_under_attack() {
    attack_the_app(
        "psycopg2",
        "psycopg2_binary.libs/libpq-",
        "'it''s -- or union'",
    );
}

#[test]
fn psycopg3_on_the_system_libpq_under_attack() {
    attack_the_app("psycopg", "libpq.so", "$2");
}

/// The bundled libpq is a file of its own: its own target, found when the import loaded
/// it (not by the start-up scan), and the sql-injection detection's evidence carries the
/// right pid and text.
#[test]
fn psycopg2_bundled_libpq_is_its_own_target() {
    require_root();
    let pg = Postgres::start();
    items_table(&pg);
    let agent = Agent::start(&[]);
    wait_for(Duration::from_secs(30), || libpq_target(&agent, "libpq.so"))
        .expect("the start-up scan attaches the system libpq");
    let app = App::start(&agent, &pg, "psycopg2", "psycopg2_binary.libs/libpq-");
    let target = libpq_target(&agent, "psycopg2_binary.libs/libpq-").expect("attached");
    assert_eq!(target["found_by"], "library_load", "{target}");
    let path = target["path"].as_str().unwrap_or_default();
    assert!(
        path.starts_with(&format!("/proc/{}/root/", app.pid()))
            && Path::new(path).file_name().is_some(),
        "{target}"
    );
    assert!(target["attached"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p["function"] == "PQsendQuery")));
}
