//! Policy control against the real kernel: a set whose pre-filter does not fit the kernel
//! maps is refused by `policy validate` and by `policy apply` (the old set and its kernel
//! filters stay and keep producing detections), and a rollback restores the set that was
//! active before the current one.

use std::fs;
use std::process::Command;
use std::time::Duration;

use rasp_tests::{require_root, unique_name, wait_for, Agent};
use serde_json::{json, Value};

fn version(agent: &Agent) -> u64 {
    agent.cli_json_lines(&["policy", "list", "--json"])[0]["active"]["version"]
        .as_u64()
        .expect("active version")
}

/// A file-open rule on one file of its own.
fn watch_policy(name: &str, path: &str) -> String {
    format!(
        "name: {name}\nversion: 1\nmode: audit\nrules:\n  - id: {name}-open\n    severity: high\n    event: file_open\n    match:\n      path: [\"{path}\"]\n"
    )
}

/// One rule on more distinct file names than the kernel's name map holds (512).
fn oversized_policy(name: &str) -> String {
    let paths: Vec<String> = (0..600).map(|i| format!("\"/srv/{name}/f{i}\"")).collect();
    format!(
        "name: {name}\nversion: 1\nmode: audit\nrules:\n  - id: {name}-many\n    severity: low\n    event: file_open\n    match:\n      path: [{}]\n",
        paths.join(", ")
    )
}

#[test]
fn a_set_past_the_kernel_maps_capacity_is_refused_and_the_old_filters_keep_working() {
    require_root();
    let agent = Agent::start(&[]);
    let name = unique_name("cap");
    let dir = agent.dir().join(&name);
    fs::create_dir_all(&dir).expect("scratch dir");
    let watched = dir.join(format!("{name}-secret"));
    fs::write(&watched, "x").expect("watched file");
    let watch = dir.join("watch.yaml");
    fs::write(
        &watch,
        watch_policy(&name, watched.to_str().expect("utf-8")),
    )
    .expect("policy");
    let over = dir.join("over.yaml");
    fs::write(&over, oversized_policy(&name)).expect("policy");

    let out = agent.cli(&["policy", "apply", watch.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = version(&agent);

    // validate, offline: a positioned error that names the capacity.
    let mut validate = Command::new(rasp_tests::agent_bin());
    validate.args(["policy", "validate", over.to_str().expect("utf-8")]);
    let out = rasp_tests::output_within(&mut validate, Duration::from_secs(30))
        .expect("validate finishes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "validate must fail: {stdout}");
    assert!(
        stdout.contains(&format!("{}:5:5:", over.display()))
            && stdout.contains("needs 600, the kernel map holds 512"),
        "validate must say where and by how much: {stdout}"
    );

    // apply: refused, the old set stays.
    let out = agent.cli(&["policy", "apply", over.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("past its capacity"),
        "apply of an oversized set must be refused: status {}, stderr {stderr}",
        out.status
    );
    assert_eq!(version(&agent), applied, "the active set changed");

    // The old set's kernel filter still sends its file's opens.
    let mut cat = Command::new("/bin/cat")
        .arg(&watched)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("cat");
    let pid = cat.id();
    cat.wait().expect("cat exits");
    let rule = format!("{name}-open");
    let mut last = Vec::new();
    let found = wait_for(Duration::from_secs(10), || {
        last = agent.detections(&["--rule", &rule]);
        last.iter()
            .find(|d| d["process"]["pid"] == json!(pid))
            .cloned()
    });
    assert!(
        found.is_some(),
        "the open of {} by pid {pid} must still be detected by the old set: {last:?}",
        watched.display()
    );
}

#[test]
fn rollback_restores_the_set_active_before_the_current_one() {
    require_root();
    let agent = Agent::start(&[]);
    let name = unique_name("rb");
    let dir = agent.dir().join(&name);
    fs::create_dir_all(&dir).expect("scratch dir");
    let apply = |which: &str| {
        let file = dir.join(format!("{which}.yaml"));
        fs::write(
            &file,
            watch_policy(&format!("{name}-{which}"), "/nonexistent/x"),
        )
        .expect("policy");
        let out = agent.cli(&["policy", "apply", file.to_str().expect("utf-8")]);
        assert!(out.status.success(), "apply {which}");
        version(&agent)
    };
    let b = apply("b");
    let c = apply("c");
    let rollback = |agent: &Agent| -> Value {
        agent.cli_json_lines(&["policy", "rollback", "--json"])[0]["active"].clone()
    };
    let first = rollback(&agent);
    let brief = |v: &Value| {
        format!(
            "version {} restored_from {} source {}",
            v["version"], v["restored_from"], v["source"]
        )
    };
    assert_eq!(first["restored_from"], json!(b), "{}", brief(&first));
    // The set active before the current one is c: a second rollback undoes the first.
    let second = rollback(&agent);
    assert_eq!(second["restored_from"], json!(c), "{}", brief(&second));
    let names: Vec<&str> = second["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, [format!("{name}-c")], "{}", brief(&second));
}
