//! Faults the agent must survive without losing what it accepted, checked on what really
//! happened: a journal on a full filesystem (a real tmpfs, filled), an agent killed with
//! SIGKILL in the middle of a storm of detections (its journal torn on purpose, as a crash
//! mid-write leaves it), and what the node does while the agent is dead (it fails open:
//! a program the policy kills at exec runs, and is killed again once the agent is back),
//! and its policy directory removed or corrupted under it (refused, the set keeps working).

use std::{
    fs,
    io::Write,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use rasp_tests::{output_within, require_root, send_signal, unique_name, wait_for, Agent, Scratch};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// A tmpfs of `size` mounted on `at` for the life of the value (lazily unmounted on drop,
/// so a still-open journal does not keep it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap_or_else(|e| panic!("mkdir {}: {e}", at.display()));
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("run mount (util-linux)");
        assert!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Write zeros into `path` until the filesystem refuses (ENOSPC): the disk is full.
fn fill(path: &Path) {
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let block = vec![0u8; 64 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
}

/// Run a fresh copy of `cat` named `name` on /etc/shadow: a high-severity
/// `read-shadow-file` detection whose exe is the copy (distinct copies do not fold).
fn read_shadow_as(scratch: &mut Scratch, dir: &Path, name: &str) -> PathBuf {
    let exe = scratch.copy("/bin/cat", dir.join(name));
    let out = output_within(Command::new(&exe).arg("/etc/shadow"), WAIT)
        .unwrap_or_else(|| panic!("{} hung", exe.display()));
    assert!(out.status.success(), "{}: {:?}", exe.display(), out.status);
    exe
}

fn shadow_detection_of(agent: &Agent, exe: &Path) -> Option<Value> {
    agent
        .detections(&["--rule", "read-shadow-file"])
        .into_iter()
        .find(|d| d["process"]["exe"].as_str() == exe.to_str())
}

fn journal_text(dir: &Path) -> String {
    fs::read_to_string(dir.join("detections.jsonl")).unwrap_or_default()
}

#[test]
fn a_full_journal_keeps_detections_in_memory_and_says_so() {
    require_root();
    let mut agent = Agent::start(&[]);
    // The next agent's state directory is a 1 MiB tmpfs.
    let state = agent.state_dir();
    let _tmpfs = Tmpfs::mount(&state, "1m");
    agent.restart(&[]);

    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    fill(&state.join("filler"));
    let readers: Vec<PathBuf> = (0..4)
        .map(|i| read_shadow_as(&mut scratch, &dir, &format!("full-disk-reader-{i}")))
        .collect();

    // Every detection is still answered from memory...
    for exe in &readers {
        let found = wait_for(WAIT, || shadow_detection_of(&agent, exe));
        assert!(
            found.is_some(),
            "{} not in `detections` with the disk full; status {}",
            exe.display(),
            agent.status()
        );
    }
    // ... counted as lost from the journal, and the failure is a detection itself.
    let stats = wait_for(WAIT, || {
        let s = agent.status()["detections"].clone();
        (s["write_lost"].as_u64().unwrap_or(0) > 0).then_some(s)
    })
    .unwrap_or_else(|| panic!("no journal losses counted: {}", agent.status()));
    assert!(
        stats["last_write_error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left")),
        "{stats}"
    );
    let alert = wait_for(WAIT, || {
        agent
            .detections(&["--rule", "agent-journal-failure"])
            .into_iter()
            .next()
    })
    .unwrap_or_else(|| panic!("no agent-journal-failure detection: {}", agent.status()));
    assert_eq!(alert["severity"], "high", "{alert}");
    assert!(
        alert["outcome_detail"]
            .as_str()
            .is_some_and(|s| s.contains("No space left")),
        "{alert}"
    );
    // The journal's last page may still have room for a line or two (tmpfs allocates by
    // page, and the filler cannot take another file's slack): not every detection is kept
    // out, but the disk being full must have kept some.
    let journal = journal_text(&state);
    let written: Vec<&PathBuf> = readers
        .iter()
        .filter(|exe| journal.contains(exe.to_str().unwrap_or("?")))
        .collect();
    assert!(
        written.len() < readers.len(),
        "every detection reached a full disk: {written:?}"
    );

    // Space comes back: writing resumes by itself, the agent never stopped.
    fs::remove_file(state.join("filler")).expect("remove the filler");
    let after = read_shadow_as(&mut scratch, &dir, "after-space-reader");
    let written = wait_for(WAIT, || {
        journal_text(&state)
            .contains(after.to_str().unwrap_or("?"))
            .then_some(())
    });
    assert!(
        written.is_some(),
        "the journal did not resume after space came back: {}",
        agent.status()
    );
    // Every line in it is whole.
    for line in journal_text(&state).lines() {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("torn journal line ({e}): {line}"));
    }
}

/// A policy directory with one enforce-mode rule killing `exe` at exec, and one alerting
/// on every exec below `storm` (the storm's detections).
fn deny_exec_policy(scratch: &mut Scratch, exe: &Path, storm: &Path) -> PathBuf {
    let dir = scratch.unique_dir(std::env::temp_dir());
    let text = format!(
        "name: faults\nversion: 1\nmode: enforce\nrules:\n  - id: faults-deny-exec\n    \
         severity: high\n    event: exec\n    match: {{ exe: [\"{}\"] }}\n    action: block\n  \
         - id: faults-storm\n    severity: low\n    event: exec\n    \
         match: {{ exe: [\"{}/s*\"] }}\n    action: alert\n",
        exe.display(),
        storm.display()
    );
    scratch.file(dir.join("faults.yaml"), text.as_bytes(), 0o644);
    dir
}

fn run_marker(exe: &Path, marker: &Path) -> std::process::ExitStatus {
    output_within(Command::new(exe).arg(marker), WAIT)
        .unwrap_or_else(|| panic!("{} hung", exe.display()))
        .status
}

#[test]
fn sigkill_fails_open_a_restart_recovers_and_a_broken_policy_dir_changes_nothing() {
    require_root();
    let mut scratch = Scratch::new();
    let dir = scratch.unique_dir("/tmp");
    let denied = scratch.copy("/usr/bin/touch", dir.join(unique_name("faults-denied")));
    let policies = deny_exec_policy(&mut scratch, &denied, &dir);
    let policies_arg = policies.to_str().expect("utf-8 path").to_string();
    let mut agent = Agent::start(&["--policies", &policies_arg]);

    let marker = dir.join("enforced.marker");
    let status = run_marker(&denied, &marker);
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "not enforced: {status:?}"
    );
    assert!(!marker.exists());

    // A storm of distinct detections (execs from /tmp), and SIGKILL in the middle of it.
    let storm_bin = scratch.copy("/bin/true", dir.join("storm-true"));
    let storm = Command::new("sh")
        .args([
            "-c",
            &format!(
                "i=0; while [ $i -lt 400 ]; do cp {bin} {dir}/s$i && {dir}/s$i; i=$((i+1)); done",
                bin = storm_bin.display(),
                dir = dir.display()
            ),
        ])
        .spawn()
        .expect("start the storm");
    let state = agent.state_dir();
    let some_written = wait_for(WAIT, || {
        (journal_text(&state).lines().count() >= 20).then_some(())
    });
    assert!(
        some_written.is_some(),
        "no detections journaled: {}",
        agent.status()
    );
    send_signal(agent.pid(), libc::SIGKILL);
    let died = agent.wait_exit(WAIT).expect("the agent dies of SIGKILL");
    assert_eq!(died.signal(), Some(libc::SIGKILL));
    let mut storm = storm;
    let _ = storm.wait();
    for i in 0..400 {
        let _ = fs::remove_file(dir.join(format!("s{i}")));
    }

    // Fail-open: with the agent dead its programs are gone, and the program runs.
    let marker = dir.join("agent-dead.marker");
    let status = run_marker(&denied, &marker);
    assert!(status.success(), "blocked with the agent dead: {status:?}");
    assert!(marker.exists());

    // A crash mid-write leaves half a line: make sure there is one.
    let whole_lines = journal_text(&state).lines().count();
    fs::OpenOptions::new()
        .append(true)
        .open(state.join("detections.jsonl"))
        .and_then(|mut f| f.write_all(br#"{"id":"torn-by-the-crash","rule_id":"exec-fr"#))
        .expect("tear the journal's tail");

    agent.start_again(&["--policies", &policies_arg]);
    let s = agent.status()["detections"].clone();
    assert!(
        s["skipped_lines_at_load"].as_u64().unwrap_or(0) >= 1,
        "the torn line was not noticed: {s}"
    );
    assert!(
        s["loaded_at_start"].as_u64().unwrap_or(0) as usize >= whole_lines.min(100),
        "journaled detections not loaded back ({whole_lines} whole lines): {s}"
    );
    // Its policies are back in force...
    let marker = dir.join("restarted.marker");
    let status = run_marker(&denied, &marker);
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "not enforced after restart: {status:?}"
    );
    assert!(!marker.exists());
    // ... and the next line written after the torn fragment is whole.
    let found = wait_for(WAIT, || {
        journal_text(&state)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|d| d["rule_id"] == "faults-deny-exec")
            .count()
            .ge(&2)
            .then_some(())
    });
    assert!(
        found.is_some(),
        "the detection after the restart is not a whole journal line:\n{}",
        journal_text(&state)
    );

    // The policy directory vanishes under the running agent (a bad deploy, an attacker):
    // the reload is refused with the reason, and the active set keeps enforcing.
    fs::remove_dir_all(&policies).expect("remove the policy directory");
    let refused = wait_for(WAIT, || {
        let s = agent.status();
        s["policy_reload_errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
            .then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "removing the policy directory went unnoticed: {}",
            agent.status()
        )
    });
    assert_eq!(refused["policy_set_version"], 1, "{refused}");
    let marker = dir.join("dir-gone.marker");
    let status = run_marker(&denied, &marker);
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "enforcement lapsed: {status:?}"
    );
    // It comes back corrupted: refused again, with file:line, the set still in force.
    fs::create_dir_all(&policies).expect("recreate");
    fs::write(policies.join("faults.yaml"), "name: faults\nrules: [\n").expect("write");
    let corrupted = wait_for(WAIT, || {
        let errors = agent.status()["policy_reload_errors"].clone();
        errors
            .as_array()
            .and_then(|e| {
                e.iter()
                    .find(|m| m.as_str().is_some_and(|m| m.contains("faults.yaml:")))
            })
            .cloned()
    });
    assert!(
        corrupted.is_some(),
        "corrupted policy not reported: {}",
        agent.status()
    );
    assert_eq!(agent.status()["policy_set_version"], 1);
    let status = run_marker(&denied, &dir.join("corrupted.marker"));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "enforcement lapsed: {status:?}"
    );
}
