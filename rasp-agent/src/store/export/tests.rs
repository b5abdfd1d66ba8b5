use std::{collections::BTreeMap, sync::atomic::AtomicUsize};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::*;
use crate::store::{tests::sample, DetectionStore, StoreOptions};

/// What the sinks counted, per sink and result.
#[derive(Default)]
struct Counted(Mutex<BTreeMap<(&'static str, usize), u64>>);

impl ExportCounter for Counted {
    fn export(&self, sink: SinkKind, result: ExportResult, n: u64) {
        *crate::lock(&self.0)
            .entry((sink.name(), result.index()))
            .or_default() += n;
    }
}

impl Counted {
    fn of(&self, sink: SinkKind, result: ExportResult) -> u64 {
        crate::lock(&self.0)
            .get(&(sink.name(), result.index()))
            .copied()
            .unwrap_or(0)
    }
}

#[test]
fn a_record_is_versioned_keyed_masked_and_the_same_every_time() {
    let mut d = sample(7, "r", "/bin/sh");
    d.description = Some("key AKIAIOSFODNN7EXAMPLE in a description".into());
    // Unmasked on purpose: a journal line from an older agent, or written by hand.
    let line = serde_json::to_vec(&d).expect("json");
    let a = record_of("node-1", &line).expect("a record");
    let b = record_of("node-1", &line).expect("a record");
    assert_eq!(a.json, b.json, "a repeat delivery is byte-identical");
    assert_eq!(a.key, "node-1:id-7");
    let v: serde_json::Value = serde_json::from_slice(&a.json).expect("json");
    assert_eq!(v["format"], FORMAT);
    assert_eq!(v["idempotency_key"], "node-1:id-7");
    assert_eq!(v["node"], "node-1");
    assert_eq!(v["detection"]["rule_id"], "r");
    assert_eq!(v["detection"]["id"], "id-7");
    let text = String::from_utf8_lossy(&a.json);
    assert!(!text.contains("AKIAIOSFODNN7EXAMPLE"), "unmasked: {text}");
    assert!(text.contains("AKIA****"), "{text}");
    // The format starts every line, for shippers that route on a prefix.
    assert!(text.starts_with(r#"{"format":"rasp.detection.v1","idempotency_key":"#));

    assert!(record_of("n", b"{torn").is_none());
    assert!(record_of("n", br#"{"no":"id"}"#).is_none());
    assert!(record_of("n", br#"{"id":"has space"}"#).is_none());
}

#[test]
fn node_names_that_cannot_be_keys_are_refused() {
    let args = |n: &str| ExportArgs {
        export_node: Some(n.into()),
        ..Default::default()
    };
    assert_eq!(
        node_name(&args("ip-10-0-0-1.ec2.internal")).expect("ok"),
        "ip-10-0-0-1.ec2.internal"
    );
    for bad in ["", "a b", "node\r\nX-Evil: 1", &"n".repeat(254)] {
        let e = node_name(&args(bad)).expect_err(bad).to_string();
        assert!(e.contains("--export-node"), "{e}");
    }
}

#[test]
fn backoff_doubles_up_to_the_cap_with_jitter_below() {
    let max = Duration::from_secs(30);
    for (failures, base) in [(1, 250), (2, 500), (3, 1000), (8, 30_000), (40, 30_000)] {
        let d = backoff(failures, max).as_millis() as u64;
        assert!(
            d <= base && d >= base * 3 / 4,
            "{failures}: {d} ms vs {base}"
        );
    }
}

/// A webhook receiver for tests: records every request's idempotency key and body; answers
/// 503 to the first `fail_first` requests, then 200 (or `status` when set).
struct Receiver {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start(addr: &str, fail_first: usize, keys: Arc<Mutex<Vec<String>>>) -> Receiver {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let task = {
            let (keys, requests) = (keys.clone(), requests.clone());
            tokio::spawn(async move {
                // Owned here: aborting the receiver drops (and cuts) every connection.
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let Ok((conn, _)) = listener.accept().await else {
                        return;
                    };
                    let (keys, requests) = (keys.clone(), requests.clone());
                    connections.spawn(serve(conn, keys, requests, fail_first));
                }
            })
        };
        Receiver {
            addr,
            requests,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/ingest", self.addr)
    }

    /// Stops listening and cuts every open connection.
    fn stop(self) -> std::net::SocketAddr {
        self.task.abort();
        self.addr
    }
}

async fn serve(
    mut conn: tokio::net::TcpStream,
    keys: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicUsize>,
    fail_first: usize,
) {
    let mut buf = Vec::new();
    loop {
        // Headers.
        let (head_len, key, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                assert_eq!(req.method, Some("POST"));
                assert_eq!(req.path, Some("/ingest"));
                let find = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                let len: usize = find("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                break (n, find(IDEMPOTENCY_HEADER).unwrap_or_default(), len);
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        while buf.len() < head_len + body_len {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        }
        let body: serde_json::Value =
            serde_json::from_slice(&buf[head_len..head_len + body_len]).expect("a JSON body");
        assert_eq!(
            body["idempotency_key"],
            key.as_str(),
            "header and field agree"
        );
        buf.drain(..head_len + body_len);
        let n = requests.fetch_add(1, Ordering::Relaxed);
        let answer: &[u8] = if n < fail_first {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        } else {
            crate::lock(&keys).push(key);
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        };
        if conn.write_all(answer).await.is_err() {
            return;
        }
    }
}

fn webhook_args(url: String) -> ExportArgs {
    ExportArgs {
        export_webhook: Some(url),
        export_webhook_timeout: 2,
        export_retry_max: 1,
        export_node: Some("test-node".into()),
        ..Default::default()
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn counts(keys: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k.clone()).or_insert(0) += 1;
    }
    m
}

/// Every detection reaches the receiver through a 503 phase, an outage with the receiver
/// gone, and a restart of the sink (as an agent restart would), each key at least once and
/// — with the position saved after each delivery — exactly once here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_delivers_every_detection_across_outages_and_restarts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("state");
    let mut opts = StoreOptions::in_dir(&dir);
    opts.fold_window = Duration::ZERO;
    let (store, writer) = DetectionStore::open(opts).expect("opens");
    let (stop_tx, stop_rx) = watch::channel(false);
    let journal = tokio::spawn(writer.run(stop_rx));
    let counted = Arc::new(Counted::default());
    let keys = Arc::new(Mutex::new(Vec::new()));

    let receiver = Receiver::start("127.0.0.1:0", 5, keys.clone()).await;
    let exports = Exports::start(
        &webhook_args(receiver.url()),
        &dir,
        counted.clone(),
        store.journal_written(),
    )
    .expect("starts");
    for i in 0..20 {
        store.submit(sample(i, "r", &format!("/bin/p{i}")));
    }
    let stats = exports.stats()[0].clone();
    wait_until("20 delivered", || stats.status().delivered >= 20).await;
    assert!(
        receiver.requests.load(Ordering::Relaxed) >= 25,
        "the 503s were retried"
    );
    let status = stats.status();
    assert_eq!((status.delivered, status.retried), (20, 5), "{status:?}");

    // The receiver goes away; detections keep coming; it comes back on the same port.
    let addr = receiver.stop();
    for i in 20..30 {
        store.submit(sample(i, "r", &format!("/bin/p{i}")));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(crate::lock(&keys).len(), 20);
    let receiver = Receiver::start(&addr.to_string(), 0, keys.clone()).await;
    wait_until("30 delivered", || crate::lock(&keys).len() >= 30).await;

    // The sink stops (agent shutdown) with the receiver down: what is journaled meanwhile
    // waits on disk and goes out after the restart.
    exports.finish().await;
    let addr = receiver.stop();
    for i in 30..40 {
        store.submit(sample(i, "r", &format!("/bin/p{i}")));
    }
    wait_until("40 journaled", || store.stats().written >= 40).await;
    let _receiver = Receiver::start(&addr.to_string(), 0, keys.clone()).await;
    let exports = Exports::start(
        &webhook_args(format!("http://{addr}/ingest")),
        &dir,
        counted.clone(),
        store.journal_written(),
    )
    .expect("restarts");
    wait_until("40 delivered", || crate::lock(&keys).len() >= 40).await;
    exports.finish().await;
    let _ = stop_tx.send(true);
    journal.await.expect("journal task").expect("journal ok");

    let got = counts(&crate::lock(&keys));
    let want: Vec<String> = (0..40).map(|i| format!("test-node:id-{i}")).collect();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>().len(), 40);
    for k in &want {
        assert_eq!(got.get(k), Some(&1), "{k}: {got:?}");
    }
    assert_eq!(counted.of(SinkKind::Webhook, ExportResult::Delivered), 40);
    assert!(counted.of(SinkKind::Webhook, ExportResult::Retried) >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_sink_holds_every_detection_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("state");
    let out = tmp.path().join("detections-export.jsonl");
    let mut opts = StoreOptions::in_dir(&dir);
    opts.fold_window = Duration::ZERO;
    // Small journal files: the sink follows several rotations.
    opts.max_bytes = 8 << 10;
    opts.keep = 50;
    let (store, writer) = DetectionStore::open(opts).expect("opens");
    let (stop_tx, stop_rx) = watch::channel(false);
    let journal = tokio::spawn(writer.run(stop_rx));
    let args = ExportArgs {
        export_file: Some(out.clone()),
        export_file_max_bytes: 64 << 20,
        export_node: Some("n1".into()),
        ..Default::default()
    };
    let exports = Exports::start(
        &args,
        &dir,
        Arc::new(Counted::default()),
        store.journal_written(),
    )
    .expect("starts");
    for i in 0..300 {
        store.submit(sample(i, "r", &format!("/bin/p{i}")));
    }
    let _ = stop_tx.send(true);
    journal.await.expect("journal task").expect("journal ok");
    exports.finish().await;
    let text = std::fs::read_to_string(&out).expect("export file");
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["detection"]["id"].as_str().expect("id").to_string()
        })
        .collect();
    let want: Vec<String> = (0..300).map(|i| format!("id-{i}")).collect();
    assert_eq!(ids, want);
}
