//! No secret leaves the agent unmasked: a cloud access key and a password on a command line
//! reach the events stream, the detections over the socket and the journal on disk only as
//! masked samples.

use std::{process::Command, time::Duration};

use rasp_tests::{require_root, wait_for, Agent};

/// AWS's documented example key id and a password in `--password=` form.
const KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const PASSWORD: &str = "Hunter2-not-a-real-pass";

#[test]
fn secrets_in_argv_are_masked_in_every_output() {
    require_root();
    let agent = Agent::start(&[]);
    // `head` opens /etc/shadow (a default rule fires on it), then fails on the other
    // arguments: the process's argv carries both secrets into the detection.
    let password_arg = format!("--password={PASSWORD}");
    let _ = Command::new("head")
        .args(["-c1", "--", "/etc/shadow", KEY, &password_arg])
        .output()
        .expect("run head");

    let detection = wait_for(Duration::from_secs(10), || {
        agent
            .detections(&[])
            .into_iter()
            .find(|d| d.to_string().contains("shadow") && d.to_string().contains("AKIA"))
    })
    .unwrap_or_else(|| {
        panic!(
            "no detection for the /etc/shadow read: {:?}",
            agent.detections(&[])
        )
    });
    let text = detection.to_string();
    assert!(!text.contains(KEY), "key unmasked in a detection: {text}");
    assert!(
        !text.contains(PASSWORD),
        "password unmasked in a detection: {text}"
    );
    assert!(
        text.contains("AKIA****************"),
        "no masked sample: {text}"
    );

    let events = agent.events(&["--kind", "exec"]);
    let exec = events
        .iter()
        .find(|e| e.to_string().contains("AKIA"))
        .unwrap_or_else(|| panic!("exec of head not in the events"));
    let text = exec.to_string();
    assert!(
        !text.contains(KEY) && !text.contains(PASSWORD),
        "unmasked event: {text}"
    );

    // The journal is written in batches: wait for the line, then read the whole file.
    let journal = agent.state_dir().join("detections.jsonl");
    let on_disk = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&journal)
            .ok()
            .filter(|t| t.contains("AKIA****"))
    })
    .unwrap_or_else(|| panic!("journal {} has no masked detection", journal.display()));
    assert!(!on_disk.contains(KEY), "key unmasked in the journal");
    assert!(
        !on_disk.contains(PASSWORD),
        "password unmasked in the journal"
    );
}
