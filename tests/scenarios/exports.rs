//! Exports: a webhook receiver started by the test gets every detection, at least once and
//! exactly once by idempotency key, across a receiver restart and an agent restart; the file
//! sink holds every detection. Ground truth is the agent's own journal.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rasp_tests::webhook::{count_by_key, Received, WebhookReceiver};
use rasp_tests::{parse_json_lines, require_root, wait_for, Agent, Scratch};
use serde_json::Value;

/// How long a detection may take to reach a sink (retries back off to at most 1 s here).
const DELIVERY: Duration = Duration::from_secs(20);
const NODE: &str = "rasp-test-node";
const RULE: &str = "rasp-test-export-probe";

fn probe_policy(bin_dir: &Path) -> String {
    format!(
        "name: rasp-test-export\n\
         version: 1\n\
         mode: audit\n\
         rules:\n  \
           - id: {RULE}\n    \
             severity: medium\n    \
             event: exec\n    \
             match:\n      \
               exe: [\"{}/rasp-export-probe\"]\n    \
             action: alert\n",
        bin_dir.display()
    )
}

/// Every detection id in the journal (current file and rotations), oldest first.
fn journal_ids(state_dir: &Path) -> Vec<String> {
    let mut files: Vec<_> = fs::read_dir(state_dir)
        .unwrap_or_else(|err| panic!("read {}: {err}", state_dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("detections.jsonl"))
        })
        .collect();
    // detections.jsonl.N are older than detections.jsonl; higher N older still.
    files.sort_by_key(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        std::cmp::Reverse(
            name.rsplit('.')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0),
        )
    });
    files
        .iter()
        .flat_map(|p| parse_json_lines(&fs::read_to_string(p).unwrap_or_default()))
        .map(|d| {
            d["id"]
                .as_str()
                .expect("a journaled detection has an id")
                .to_string()
        })
        .collect()
}

fn ours(received: &[Received]) -> usize {
    count_by_key(received).len()
}

fn run_probes(probe: &Path, from: usize, n: usize) {
    for i in from..from + n {
        // A distinct argument per run: distinct detections, never folded into one.
        let status = Command::new(probe)
            .arg(format!("run-{i}"))
            .status()
            .unwrap_or_else(|err| panic!("run {}: {err}", probe.display()));
        assert!(status.success(), "{}: {status}", probe.display());
    }
}

fn wait_journaled(agent: &Agent, n: usize) {
    let state = agent.state_dir();
    wait_for(DELIVERY, || (journal_ids(&state).len() >= n).then_some(())).unwrap_or_else(|| {
        panic!(
            "the journal holds {} detections, expected {n}",
            journal_ids(&state).len()
        )
    });
}

fn wait_received(receiver: &WebhookReceiver, n: usize, agent: &Agent) {
    wait_for(DELIVERY, || (ours(&receiver.received()) >= n).then_some(())).unwrap_or_else(|| {
        panic!(
            "the receiver has {} distinct keys, expected {n}; agent status exports: {:#}",
            ours(&receiver.received()),
            agent.status()["exports"]
        )
    });
}

#[test]
fn every_detection_reaches_the_webhook_and_the_file_across_receiver_and_agent_restarts() {
    require_root();
    let mut scratch = Scratch::new();
    let work = scratch.unique_dir("/tmp");
    let bin = scratch.dir(work.join("bin"));
    let probe = scratch.copy("/bin/true", bin.join("rasp-export-probe"));
    let policies = scratch.dir(work.join("policies"));
    fs::write(policies.join("export.yaml"), probe_policy(&bin)).expect("write policy");
    let export_file = work.join("export.jsonl");

    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let receiver = WebhookReceiver::start("127.0.0.1:0".parse().expect("addr"), received.clone());
    let url = receiver.url();
    let args = [
        "--policies",
        policies.to_str().expect("utf-8 path"),
        "--export-webhook",
        &url,
        "--export-file",
        export_file.to_str().expect("utf-8 path"),
        "--export-retry-max",
        "1",
        "--export-node",
        NODE,
    ];
    let mut agent = Agent::start(&args);

    // 1. Delivered as they happen.
    run_probes(&probe, 0, 5);
    wait_received(&receiver, 5, &agent);

    // 2. The receiver goes away: detections wait in the journal, the agent retries, and
    //    they arrive once it is back on the same port.
    let addr = receiver.stop();
    run_probes(&probe, 5, 5);
    wait_journaled(&agent, 10);
    let retrying = wait_for(DELIVERY, || {
        let status = agent.status();
        let sink = status["exports"]
            .as_array()?
            .iter()
            .find(|s| s["sink"] == "webhook")?
            .clone();
        (sink["retried"].as_u64()? > 0 && sink["lag_bytes"].as_u64()? > 0).then_some(sink)
    });
    assert!(
        retrying.is_some(),
        "with the receiver down, status must show retries and a backlog: {:#}",
        agent.status()["exports"]
    );
    assert_eq!(ours(&received.lock().expect("received")), 5);
    let receiver = WebhookReceiver::start(addr, received.clone());
    wait_received(&receiver, 10, &agent);

    // 3. Down again, and the agent restarts meanwhile: the undelivered detections are on
    //    disk (journal + saved position) and go out from the new agent.
    let addr = receiver.stop();
    run_probes(&probe, 10, 5);
    wait_journaled(&agent, 15);
    agent.restart(&args);
    let receiver = WebhookReceiver::start(addr, received.clone());
    run_probes(&probe, 15, 5);
    wait_journaled(&agent, 20);
    wait_received(&receiver, 20, &agent);

    // Every journaled detection arrived, by key; nothing arrived that was not journaled.
    let journal: BTreeSet<String> = journal_ids(&agent.state_dir())
        .into_iter()
        .map(|id| format!("{NODE}:{id}"))
        .collect();
    assert_eq!(journal.len(), 20, "{journal:?}");
    let got = receiver.received();
    let counts = count_by_key(&got);
    let keys: BTreeSet<String> = counts.keys().cloned().collect();
    assert_eq!(keys, journal, "keys received vs journaled");
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "webhook: {} requests, {} distinct keys, {duplicates} repeats (at least once; dropped by key)",
        got.len(),
        keys.len()
    );
    for r in &got {
        assert_eq!(r.body["format"], "rasp.detection.v1", "{}", r.body);
        assert_eq!(r.body["idempotency_key"], r.key.as_str(), "header = field");
        assert_eq!(r.body["node"], NODE);
        assert_eq!(r.body["detection"]["rule_id"], RULE, "{}", r.body);
        let argv = &r.body["detection"]["process"]["argv"];
        assert!(
            argv.as_array().is_some_and(|a| a.len() == 2),
            "the probe's argv: {}",
            r.body
        );
    }

    // The file sink holds every detection too.
    let lines = wait_for(DELIVERY, || {
        let lines = parse_json_lines(&fs::read_to_string(&export_file).ok()?);
        let keys: BTreeSet<String> = lines
            .iter()
            .filter_map(|l| l["idempotency_key"].as_str().map(String::from))
            .collect();
        (keys == journal).then_some(lines)
    })
    .unwrap_or_else(|| {
        panic!(
            "{} does not hold every journaled detection:\n{}",
            export_file.display(),
            fs::read_to_string(&export_file).unwrap_or_default()
        )
    });
    assert!(lines
        .iter()
        .all(|l: &Value| l["format"] == "rasp.detection.v1"));
}
