//! The exposition parsed back (names, labels, values, histogram shape), and the endpoint
//! over real HTTP on loopback.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::watch;

use super::*;
use crate::events::latency::{Histogram, BOUNDS_US};
use crate::events::Kind;

/// Series name with labels → value, for every sample line; panics on a malformed line.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value on {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value on {line:?}")),
        };
        assert!(
            out.insert(series.to_string(), value).is_none(),
            "series twice: {series}"
        );
    }
    out
}

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series}; have {:?}", samples.keys()))
}

fn snapshot_with(
    received_exec: u64,
    dropped_open: u64,
    attached: u64,
    loaded: bool,
) -> SourceSnapshot {
    let mut s = SourceSnapshot::default();
    s.events[Kind::Exec.index()].received = received_exec;
    s.events[Kind::FileOpen.index()].dropped = dropped_open;
    s.events[Kind::Connect.index()].dropped = 1;
    s.processes = ProcessCounts {
        tracked: 321,
        exited: 4,
        evicted: 2,
    };
    s.policy = PolicyState {
        loaded,
        set_version: 7,
        rules: 12,
        last_reload_errors: 0,
    };
    s.programs = ProgramCounts {
        attached,
        loaded: 1,
        failed: 0,
        uprobe_targets: 3,
        exec_tracked: attached > 0,
    };
    s
}

#[test]
fn producer_counters_and_the_snapshot_encode_and_parse_back() {
    let m = Metrics::new();
    for _ in 0..3 {
        m.detection("shell-from-web", Severity::High, Mode::Enforce);
    }
    m.detection("read-shadow", Severity::Critical, Mode::Audit);
    m.action(Action::Kill, Outcome::After);
    m.action(Action::Kill, Outcome::After);
    m.action(Action::Block, Outcome::Audited);
    m.analyzer_dropped(Analyzer::Sql);
    m.policy_reload(ReloadResult::Applied);
    m.policy_reload(ReloadResult::Refused);
    m.policy_reload(ReloadResult::Refused);
    m.export(SinkKind::Webhook, ExportResult::Delivered, 40);
    m.export(SinkKind::Webhook, ExportResult::Retried, 5);

    let mut snap = snapshot_with(42, 5, 9, true);
    let h = Histogram::default();
    h.record_ns(1_500); // 2 µs bucket
    h.record_ns(2_000); // 2 µs bucket
    h.record_ns(700_000); // 800 µs bucket
    h.record_ns(60_000_000_000); // overflow
    snap.event_latency = h.snapshot();

    let text = m.encode(snap).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let s = samples(&text);

    let d = |rule: &str, sev: &str, mode: &str| {
        format!("rasp_detections_total{{rule=\"{rule}\",severity=\"{sev}\",mode=\"{mode}\"}}")
    };
    assert_eq!(sample(&s, &d("shell-from-web", "high", "enforce")), 3.0);
    assert_eq!(sample(&s, &d("read-shadow", "critical", "audit")), 1.0);
    assert_eq!(
        sample(&s, "rasp_actions_total{action=\"kill\",outcome=\"after\"}"),
        2.0
    );
    assert_eq!(
        sample(
            &s,
            "rasp_actions_total{action=\"block\",outcome=\"audited\"}"
        ),
        1.0
    );
    // Every action × outcome exists from the start, at 0: rate() works on the first one.
    assert_eq!(
        sample(
            &s,
            "rasp_actions_total{action=\"quarantine\",outcome=\"failed\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(&s, "rasp_analyzer_queue_dropped_total{analyzer=\"sql\"}"),
        1.0
    );
    assert_eq!(
        sample(&s, "rasp_analyzer_queue_dropped_total{analyzer=\"http\"}"),
        0.0
    );
    assert_eq!(
        sample(&s, "rasp_policy_reloads_total{result=\"refused\"}"),
        2.0
    );
    assert_eq!(
        sample(
            &s,
            "rasp_export_records_total{sink=\"webhook\",result=\"delivered\"}"
        ),
        40.0
    );
    assert_eq!(
        sample(
            &s,
            "rasp_export_records_total{sink=\"file\",result=\"gap\"}"
        ),
        0.0
    );

    assert_eq!(
        sample(&s, "rasp_events_received_total{kind=\"exec\"}"),
        42.0
    );
    assert_eq!(
        sample(&s, "rasp_events_dropped_total{kind=\"file_open\"}"),
        5.0
    );
    assert_eq!(sample(&s, "rasp_ring_buffer_dropped_total"), 6.0);
    assert_eq!(sample(&s, "rasp_process_table_entries"), 321.0);
    assert_eq!(sample(&s, "rasp_process_table_evicted_total"), 2.0);
    assert_eq!(sample(&s, "rasp_policy_set_version"), 7.0);
    assert_eq!(sample(&s, "rasp_programs{state=\"attached\"}"), 9.0);
    assert_eq!(sample(&s, "rasp_uprobe_targets_attached"), 3.0);
    assert_eq!(sample(&s, "rasp_ready"), 1.0);
    assert_eq!(sample(&s, "rasp_build_info{version=\"0.1.0\"}"), 1.0);
    assert!(sample(&s, "process_resident_memory_bytes") > 0.0);
    assert!(sample(&s, "process_cpu_seconds_total") >= 0.0);

    // The histogram: cumulative buckets in seconds, +Inf = count, sum in seconds.
    let b = |le: &str| {
        sample(
            &s,
            &format!("rasp_event_latency_seconds_bucket{{le=\"{le}\"}}"),
        )
    };
    assert_eq!(b("0.000001"), 0.0);
    assert_eq!(b("0.000002"), 2.0);
    assert_eq!(b("0.0006"), 2.0);
    assert_eq!(b("0.0008"), 3.0);
    assert_eq!(b("10.0"), 3.0);
    assert_eq!(b("+Inf"), 4.0);
    assert_eq!(sample(&s, "rasp_event_latency_seconds_count"), 4.0);
    let sum = sample(&s, "rasp_event_latency_seconds_sum");
    assert!((sum - 60.000_703).abs() < 1e-3, "{sum}");
    let buckets = s
        .keys()
        .filter(|k| k.starts_with("rasp_event_latency_seconds_bucket"))
        .count();
    assert_eq!(buckets, BOUNDS_US.len() + 1);
    // An empty histogram is still complete.
    assert_eq!(
        sample(&s, "rasp_decision_latency_seconds_bucket{le=\"+Inf\"}"),
        0.0
    );

    // Each family is described once.
    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let mut dedup = types.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(types.len(), dedup.len(), "{types:?}");
}

#[test]
fn readiness_needs_programs_and_policies() {
    assert_eq!(
        snapshot_with(0, 0, 0, true).readiness(),
        Readiness::NotReady("no eBPF program is attached")
    );
    assert_eq!(
        snapshot_with(0, 0, 3, false).readiness(),
        Readiness::NotReady("no policy set is loaded")
    );
    assert_eq!(snapshot_with(0, 0, 3, true).readiness(), Readiness::Ready);
}

#[test]
fn a_deferred_source_is_not_ready_until_the_daemon_is_set() {
    let deferred = DeferredSource::new();
    assert_eq!(
        deferred.snapshot().readiness(),
        Readiness::NotReady("no eBPF program is attached")
    );
    let daemon = Arc::new(FakeSource::default());
    daemon.attached.store(true, Ordering::Relaxed);
    daemon.exec.store(5, Ordering::Relaxed);
    deferred.set(daemon);
    let s = deferred.snapshot();
    assert_eq!(s.readiness(), Readiness::Ready);
    assert_eq!(s.events[Kind::Exec.index()].received, 5);
}

/// A daemon stand-in whose numbers the test moves.
#[derive(Default)]
struct FakeSource {
    attached: AtomicBool,
    exec: AtomicU64,
}

impl MetricsSource for FakeSource {
    fn snapshot(&self) -> SourceSnapshot {
        let attached = u64::from(self.attached.load(Ordering::Relaxed));
        snapshot_with(self.exec.load(Ordering::Relaxed), 0, attached, true)
    }
}

/// Polls `probe` every 20 ms for up to 5 s.
fn poll<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Some(v) = probe() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// One request over a fresh connection; the raw response (status line, headers, body),
/// empty when the server closed the connection without answering.
fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A refused connection may be reset under our feet: that is an empty answer.
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get(addr: SocketAddr, path: &str) -> String {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_serves_metrics_health_and_readiness_over_http() {
    let metrics = Arc::new(Metrics::new());
    let source = Arc::new(FakeSource::default());
    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.local_addr();
    let (stop_tx, stop_rx) = watch::channel(false);
    let serving = tokio::spawn(server.run(metrics.clone(), source.clone(), stop_rx));

    let checks = {
        let (metrics, source) = (metrics.clone(), source.clone());
        tokio::task::spawn_blocking(move || {
            let health = get(addr, "/healthz");
            assert_eq!(status(&health), 200, "{health}");

            // Not attached yet: 503 and why.
            let ready = get(addr, "/readyz");
            assert_eq!(status(&ready), 503, "{ready}");
            assert!(ready.contains("no eBPF program is attached"), "{ready}");
            source.attached.store(true, Ordering::Relaxed);
            let ready = get(addr, "/readyz");
            assert_eq!(status(&ready), 200, "{ready}");

            source.exec.store(17, Ordering::Relaxed);
            metrics.detection("r1", Severity::Low, Mode::Audit);
            let scrape = get(addr, "/metrics");
            assert_eq!(status(&scrape), 200, "{scrape}");
            assert!(
                scrape.contains("content-type: application/openmetrics-text"),
                "{scrape}"
            );
            let body = scrape.split_once("\r\n\r\n").unwrap().1;
            let s = samples(body.trim_end_matches("# EOF\n"));
            assert_eq!(
                sample(&s, "rasp_events_received_total{kind=\"exec\"}"),
                17.0
            );
            assert_eq!(
                sample(
                    &s,
                    "rasp_detections_total{rule=\"r1\",severity=\"low\",mode=\"audit\"}"
                ),
                1.0
            );

            // Counters move between scrapes.
            source.exec.store(18, Ordering::Relaxed);
            let body = get(addr, "/metrics");
            assert!(
                body.contains("rasp_events_received_total{kind=\"exec\"} 18\n"),
                "{body}"
            );

            // Bad requests get 4xx, and the server keeps serving.
            assert_eq!(status(&get(addr, "/nope")), 404);
            let post = http(
                addr,
                b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            assert_eq!(status(&post), 405, "{post}");
            let garbage = http(addr, b"\x01\x02 nonsense\r\n\r\n");
            assert_eq!(status(&garbage), 400, "{garbage}");
            let huge = format!(
                "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
                "a".repeat(64 << 10)
            );
            let huge = http(addr, huge.as_bytes());
            assert_eq!(status(&huge), 431, "{huge}");
            assert_eq!(status(&get(addr, "/healthz")), 200);

            // Connections past the cap are closed unanswered; freed slots serve again.
            let idle: Vec<TcpStream> = (0..endpoint::MAX_CONNECTIONS)
                .map(|_| TcpStream::connect(addr).unwrap())
                .collect();
            let refused = poll(|| {
                let answer = get(addr, "/healthz");
                answer.is_empty().then_some(())
            });
            assert!(refused.is_some(), "a connection past the cap was served");
            drop(idle);
            let served = poll(|| {
                let answer = get(addr, "/healthz");
                (!answer.is_empty()).then_some(answer)
            });
            assert_eq!(served.map(|a| status(&a)), Some(200));
        })
    };
    checks.await.unwrap();

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("the server stops when told")
        .unwrap();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after stop"
    );
}
