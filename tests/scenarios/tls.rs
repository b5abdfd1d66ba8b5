//! OpenSSL plaintext, end to end on one agent: real `openssl s_server`/`s_client` (both
//! directions captured, each naming its peer; an AWS key sent inside TLS detected and masked
//! in every output the agent writes), then a small HTTPS service (Python http.server + ssl,
//! psycopg 3 on the system libpq) against a real PostgreSQL: a login flood of 401s is
//! detected, an injected parameter that reaches SQL is linked request → query, and the same
//! value on the parameterized endpoint is not.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use rasp_tests::{
    https::{curl, Cert},
    require_root,
    sql::{detections_for, driver_python, libpq_target, Postgres},
    url_encode, wait_for, Agent,
};
use serde_json::Value;

/// AWS's documented example key id.
const KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const MASKED_KEY: &str = "AKIA****************";
/// Visa's test number (Luhn-valid).
const CARD: &str = "4111111111111111";

#[test]
fn openssl_plaintext_http_and_taint_to_sql() {
    require_root();
    let pg = Postgres::start();
    pg.query(
        "DROP TABLE IF EXISTS items; \
         CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL); \
         INSERT INTO items (name) VALUES ('apple'), ('banana')",
    );
    let agent = Agent::start(&[]);
    // The start-up scan attaches the system libssl and libpq (the agent answers `status`
    // before it is done).
    wait_for(Duration::from_secs(30), || {
        Some(()).filter(|()| attached(&agent, "libssl", "libssl.so"))
    })
    .unwrap_or_else(|| {
        panic!(
            "the system libssl is not attached: {}",
            agent.status()["uprobe_targets"]
        )
    });
    wait_for(Duration::from_secs(30), || libpq_target(&agent, "libpq.so"))
        .expect("the start-up scan attaches the system libpq");
    let cert = Cert::new(agent.dir());

    openssl_both_ways_and_a_key_masked_everywhere(&agent, &cert);
    https_service_flood_and_taint(&agent, &cert, &pg);

    // What the capture bounds and the stage did is visible in `status`.
    let status = agent.status();
    assert!(
        status["tls_capture"]["calls_captured"].as_u64() >= Some(4),
        "{}",
        status["tls_capture"]
    );
    assert!(
        status["http_stage"]["taint_links"].as_u64() >= Some(1),
        "{}",
        status["http_stage"]
    );
    // No TLS record was lost on the way.
    assert_eq!(
        status["events"]["tls"]["dropped"], 0,
        "TLS records dropped: {}",
        status["events"]["tls"]
    );
}

/// `openssl s_server -rev` echoes each line reversed: the client writes the key and reads
/// the echo, the server reads the key and writes the echo; four captured chunks, each with
/// the other end's address.
fn openssl_both_ways_and_a_key_masked_everywhere(agent: &Agent, cert: &Cert) {
    let port = free_port();
    // `-rev`: each line read is written back reversed. It ends on end of input: its stdin
    // stays open until the test is done.
    let mut server = Command::new("openssl")
        .args(["s_server", "-rev", "-quiet"])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(&cert.cert)
        .arg("-key")
        .arg(&cert.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server (Debian package openssl)");
    let server_pid = server.id();
    let _server = KillOnDrop(&mut server);

    let line = format!("hello {KEY} card {CARD} over tls");
    let reversed: String = line.chars().rev().collect();
    // Until the server listens, a client fails to connect and is started again.
    let mut client = None;
    for _ in 0..20 {
        let mut c = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-connect",
                &format!("127.0.0.1:{port}"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_client");
        let stdin = c.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to s_client");
        stdin.flush().expect("flush");
        let out = c.stdout.take().expect("stdout");
        match read_line_within(out, Duration::from_secs(10)) {
            Some(echo) if echo.trim() == reversed => {
                client = Some(c);
                break;
            }
            other => {
                eprintln!("s_client got {other:?}; retrying");
                let _ = c.kill();
                let _ = c.wait();
                thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let mut client = client.expect("s_client never got the echo from s_server");
    let client_pid = client.id();
    let _client = KillOnDrop(&mut client);

    let server_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let chunks = |pid: u32, min: usize| {
        wait_for(Duration::from_secs(10), || {
            let found: Vec<Value> = agent
                .events(&["--kind", "tls", "--pid", &pid.to_string()])
                .into_iter()
                .filter(|e| e["closed"] != true)
                .collect();
            (found.len() >= min).then_some(found)
        })
        .unwrap_or_else(|| {
            panic!(
                "fewer than {min} plaintext chunks of pid {pid}: {:?}",
                agent.events(&["--kind", "tls", "--pid", &pid.to_string()])
            )
        })
    };
    let client_chunks = chunks(client_pid, 2);
    let server_chunks = chunks(server_pid, 2);
    let find = |chunks: &[Value], direction: &str, text: &str| -> Value {
        chunks
            .iter()
            .find(|e| {
                e["direction"] == direction
                    && e["plaintext"].as_str().is_some_and(|p| p.contains(text))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {direction} chunk with {text:?}: {chunks:?}"))
    };
    let masked_line = format!("hello {MASKED_KEY} card ");
    let sent = find(&client_chunks, "outbound", &masked_line);
    let echoed = find(&client_chunks, "inbound", &reversed);
    let read = find(&server_chunks, "inbound", &masked_line);
    let written = find(&server_chunks, "outbound", &reversed);
    // The client's peer is the server's port; the server's peer is the client's local end.
    for chunk in [&sent, &echoed] {
        assert_eq!(chunk["peer"], server_addr.to_string(), "{chunk}");
    }
    let client_local = sent["local"].as_str().expect("client local address");
    for chunk in [&read, &written] {
        assert_eq!(chunk["peer"], client_local, "{chunk}");
        assert_eq!(chunk["local"], server_addr.to_string(), "{chunk}");
    }
    assert_eq!(sent["call_len"], line.len() + 1, "{sent}");
    assert_eq!(sent["findings"][0]["kind"], "aws_access_key_id", "{sent}");
    assert_eq!(sent["findings"][0]["sample"], MASKED_KEY, "{sent}");

    // Detected, within a second of the write by the agent's own clocks.
    let detection = wait_for(Duration::from_secs(10), || {
        detections_for(agent, "secret-leaving-over-tls", client_pid)
            .into_iter()
            .next()
    })
    .unwrap_or_else(|| {
        panic!(
            "no secret-leaving-over-tls detection for s_client {client_pid}: {:?}",
            agent.detections(&[])
        )
    });
    assert_eq!(detection["event"]["peer"], server_addr.to_string());
    let delay = seconds_between(
        detection["event"]["time"].as_str().unwrap_or_default(),
        detection["time"].as_str().unwrap_or_default(),
    );
    eprintln!("secret-leaving-over-tls: detected {delay:.3} s after the write");
    assert!(
        delay < 1.0,
        "detected {delay} s after the write: {detection}"
    );

    // Masked in every output: events, detections (JSON and tables), the journal, the log.
    let mut outputs = vec![
        (
            "events --json".to_string(),
            serde_json::to_string(&client_chunks).unwrap_or_default(),
        ),
        (
            "events --json (server)".to_string(),
            serde_json::to_string(&server_chunks).unwrap_or_default(),
        ),
        ("detections --json".to_string(), detection.to_string()),
    ];
    let table = |args: &[&str]| {
        let out = agent.cli(args);
        (
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let events_table = table(&["events", "--kind", "tls"]);
    assert!(
        events_table.1.contains(MASKED_KEY),
        "`events` shows no masked key:\n{}",
        events_table.1
    );
    outputs.push(events_table);
    outputs.push(table(&["detections", "--rule", "secret-leaving-over-tls"]));
    let journal = agent.state_dir().join("detections.jsonl");
    let on_disk = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&journal)
            .ok()
            .filter(|t| t.contains("secret-leaving-over-tls"))
    })
    .unwrap_or_else(|| panic!("journal {} has no TLS detection", journal.display()));
    outputs.push(("journal".to_string(), on_disk));
    outputs.push(("agent log".to_string(), agent.log_text()));
    // The card number leaving is personal data: its own rule, masked the same way.
    let card = wait_for(Duration::from_secs(10), || {
        detections_for(agent, "personal-data-leaving-over-tls", client_pid)
            .into_iter()
            .next()
    })
    .unwrap_or_else(|| panic!("no personal-data-leaving-over-tls detection for s_client"));
    outputs.push(("detections --json (card)".to_string(), card.to_string()));
    for (name, text) in &outputs {
        assert!(!text.contains(KEY), "the key is unmasked in {name}");
        assert!(
            !text.contains(CARD),
            "the card number is unmasked in {name}"
        );
    }
}

/// The service: `/login` refuses every attempt (401), `/item?name=` builds its SQL from the
/// parameter, `/safe?name=` binds it (psycopg 3 sends `$1` with PQsendQueryParams), `/big`
/// answers 128 KiB in 64 writes (twice the default burst budget).
const APP: &str = r#"
import os, ssl, sys, urllib.parse
os.environ["PSYCOPG_IMPL"] = "python"
import psycopg
from http.server import BaseHTTPRequestHandler, HTTPServer
host, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
conn = psycopg.connect(host=host, user="postgres", dbname="postgres", autocommit=True)

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        name = urllib.parse.parse_qs(url.query).get("name", [""])[0]
        if url.path == "/login":
            return self.reply(401, b"no")
        if url.path == "/big":
            chunk = b"z" * 2048
            self.send_response(200)
            self.send_header("Content-Length", str(64 * len(chunk)))
            self.end_headers()
            for _ in range(64):
                self.wfile.write(chunk)
            return
        try:
            with conn.cursor() as cur:
                if url.path == "/item":
                    cur.execute("SELECT id, name FROM items WHERE name = '" + name + "'")
                elif url.path == "/safe":
                    cur.execute("SELECT id, name FROM items WHERE name = %s", (name,))
                else:
                    return self.reply(404, b"")
                rows = cur.fetchall()
            self.reply(200, repr(rows).encode())
        except Exception as e:
            self.reply(500, str(e).encode())

context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server = HTTPServer(("127.0.0.1", 0), Handler)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
"#;

fn https_service_flood_and_taint(agent: &Agent, cert: &Cert, pg: &Postgres) {
    let script = agent.dir().join("https_app.py");
    std::fs::write(&script, APP).expect("write https_app.py");
    let mut app = Command::new(driver_python())
        .arg(&script)
        .arg(pg.socket_dir())
        .arg(&cert.cert)
        .arg(&cert.key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the HTTPS app");
    let pid = app.id();
    let stdout = app.stdout.take().expect("stdout");
    let _app = KillOnDrop(&mut app);
    let listening = read_line_within(stdout, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the HTTPS app did not start"));
    let port: u16 = listening
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("app said {listening:?}"));
    let base = format!("https://127.0.0.1:{port}");

    // A login flood: 25 refusals on one keep-alive connection (the default threshold is 20
    // a minute per client), after a download past the burst budget: the kernel stops
    // counting the download's bytes once nothing of it is captured, and the parser must
    // find the first refusal's head after that gap of unknown length.
    let uncounted_before = agent.status()["tls_capture"]["calls_uncounted"]
        .as_u64()
        .unwrap_or(0);
    let logins: Vec<String> = std::iter::once(format!("{base}/big"))
        .chain((0..25).map(|i| format!("{base}/login?user=admin&try={i}")))
        .collect();
    let codes = curl(&logins);
    assert_eq!(codes.first().map(String::as_str), Some("200"), "{codes:?}");
    assert!(codes[1..].iter().all(|c| c == "401"), "{codes:?}");
    let uncounted = agent.status()["tls_capture"]["calls_uncounted"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        uncounted > uncounted_before,
        "the download's over-budget writes were counted after all ({uncounted_before} → \
         {uncounted}): the unknown-gap path was not exercised"
    );
    let flood = wait_for(Duration::from_secs(10), || {
        detections_for(agent, "login-flood", pid).into_iter().next()
    })
    .unwrap_or_else(|| panic!("no login-flood detection for the app {pid}"));
    let event = &flood["event"];
    assert_eq!(event["status"], 401, "{flood}");
    assert!(event["refusals"].as_u64() >= Some(20), "{flood}");
    assert!(
        event["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "the flood names its client: {flood}"
    );

    // The same payload to the parameterized endpoint, then to the one that pastes it.
    let payload = "x' OR '1'='1";
    let encoded = url_encode(payload);
    let codes = curl(&[
        format!("{base}/safe?name={encoded}"),
        format!("{base}/item?name=apple"),
        format!("{base}/item?name={encoded}"),
    ]);
    assert_eq!(codes, ["200", "200", "200"]);
    let linked = wait_for(Duration::from_secs(10), || {
        let found = detections_for(agent, "sql-injection-confirmed", pid);
        (!found.is_empty()).then_some(found)
    })
    .unwrap_or_else(|| {
        panic!(
            "no sql-injection-confirmed detection for the app {pid}: {:?}",
            agent.events(&["--kind", "http", "--pid", &pid.to_string()])
        )
    });
    // Exactly the injected request: not the parameterized one, not the benign value.
    let [link] = &linked[..] else {
        panic!("expected one linked injection: {linked:?}")
    };
    let event = &link["event"];
    assert_eq!(event["message"], "taint", "{link}");
    assert_eq!(event["method"], "GET", "{link}");
    assert_eq!(event["path"], "/item", "{link}");
    assert_eq!(event["params"], serde_json::json!(["name"]), "{link}");
    assert_eq!(event["findings"][0]["param"], "name", "{link}");
    assert_eq!(event["query_function"], "PQsendQuery", "{link}");
    assert!(
        event["query"]
            .as_str()
            .is_some_and(|q| q.starts_with("SELECT id, name FROM items WHERE name = 'x'")),
        "{link}"
    );
    assert!(
        event["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{link}"
    );
    // The payload itself is a tell-tale in the request, whatever the endpoint did with it.
    wait_for(Duration::from_secs(10), || {
        detections_for(agent, "injection-in-https-request", pid)
            .into_iter()
            .next()
    })
    .unwrap_or_else(|| panic!("no injection-in-https-request detection for the app {pid}"));
    // The parameterized query did reach the agent, and carries no link.
    let queries = agent.events(&[
        "--kind",
        "sql_query",
        "--pid",
        &pid.to_string(),
        "--limit",
        "100000",
    ]);
    assert!(
        queries
            .iter()
            .any(|e| e["query"].as_str().is_some_and(|q| q.contains("= $1"))),
        "the /safe query was not captured: {queries:?}"
    );
}

fn attached(agent: &Agent, kind: &str, path_part: &str) -> bool {
    agent.status()["uprobe_targets"]
        .as_array()
        .is_some_and(|targets| {
            targets.iter().any(|t| {
                t["kind"] == kind
                    && t["path"].as_str().is_some_and(|p| p.contains(path_part))
                    && t["attached"].as_array().is_some_and(|a| !a.is_empty())
            })
        })
}

struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The first line `out` prints within `timeout` (read on a thread that ends with the pipe).
fn read_line_within(out: ChildStdout, timeout: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(timeout).ok().filter(|l| !l.is_empty())
}

/// Seconds from RFC 3339 time `a` to `b` (UTC, same or next day).
fn seconds_between(a: &str, b: &str) -> f64 {
    let of_day = |t: &str| -> f64 {
        let clock = t
            .split_once('T')
            .map(|(_, c)| c.trim_end_matches('Z'))
            .unwrap_or_else(|| panic!("not an RFC 3339 time: {t:?}"));
        let parts: Vec<f64> = clock
            .split(':')
            .map(|p| p.parse().unwrap_or_else(|_| panic!("bad time {t:?}")))
            .collect();
        parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
    };
    (of_day(b) - of_day(a)).rem_euclid(86_400.0)
}
