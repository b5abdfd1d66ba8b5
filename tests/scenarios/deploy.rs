//! Deployment scenarios: every Kubernetes manifest in deploy/ passes `kubernetes-validate
//! --strict` (installed from PyPI into a venv under target/ when missing), the kustomization
//! lists exactly those manifests, the policy ConfigMap carries the shipped policies byte for
//! byte, the agent accepts the flags the manifests and the unit give it, and the systemd unit
//! passes `systemd-analyze verify` without a warning. No root needed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use rasp_tests::{agent_bin, output_within, unique_name, workspace_root};
use serde_json::Value;

const TOOL_DEADLINE: Duration = Duration::from_secs(120);
const INSTALL_DEADLINE: Duration = Duration::from_secs(600);

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

/// Every `*.yaml` under deploy/, sorted, relative to it.
fn yaml_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(path.strip_prefix(base).unwrap_or(&path).to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(&deploy_dir(), &deploy_dir(), &mut out);
    out.sort();
    out
}

/// The Kubernetes manifests: every YAML file but the kustomization (kustomize's own kind,
/// for which the validator has no schema).
fn manifests() -> Vec<PathBuf> {
    yaml_files()
        .into_iter()
        .filter(|p| p.file_name().is_none_or(|n| n != "kustomization.yaml"))
        .collect()
}

fn run(cmd: &mut Command, deadline: Duration) -> Output {
    let shown = format!("{cmd:?}");
    output_within(cmd, deadline).unwrap_or_else(|| panic!("{shown} did not finish in {deadline:?}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The venv holding kubernetes-validate (and PyYAML, its dependency), created and filled on
/// first use; a failure says which step and how to do it by hand.
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = workspace_root().join("target/kubernetes-validate-venv");
        // Its interpreter must still run: a venv outlives the Python it was made from.
        let interpreter_runs = Command::new(venv.join("bin/python"))
            .args(["-c", ""])
            .status()
            .is_ok_and(|s| s.success());
        if interpreter_runs && venv.join("bin/kubernetes-validate").is_file() {
            return venv;
        }
        // Debian's python3 (setup installs it with python3-venv), not whichever is first
        // on PATH.
        let made = run(
            Command::new("/usr/bin/python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
            TOOL_DEADLINE,
        );
        assert!(
            made.status.success(),
            "this test needs python3 with venv (apt-get install python3-venv): {}",
            text(&made.stderr)
        );
        let pip = run(
            Command::new(venv.join("bin/pip")).args(["install", "--quiet", "kubernetes-validate"]),
            INSTALL_DEADLINE,
        );
        assert!(
            pip.status.success(),
            "this test needs kubernetes-validate from PyPI; `{}/bin/pip install kubernetes-validate` failed: {}",
            venv.display(),
            text(&pip.stderr)
        );
        venv
    })
}

/// kubernetes-validate --strict on `files`: (passed, everything it printed).
fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = run(
        Command::new(venv().join("bin/kubernetes-validate"))
            .arg("--strict")
            .args(files),
        TOOL_DEADLINE,
    );
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn every_manifest_passes_kubernetes_validate_strict() {
    let files: Vec<PathBuf> = manifests().iter().map(|p| deploy_dir().join(p)).collect();
    assert!(files.len() >= 4, "too few manifests: {files:?}");
    let (passed, report) = validate(&files);
    assert!(passed, "{report}");
    // One "passed" line per manifest, and not a warning (an unknown kind only warns).
    for f in &files {
        assert!(
            report
                .lines()
                .any(|l| l.contains(&*f.to_string_lossy()) && l.contains("passed")),
            "no pass reported for {}:\n{report}",
            f.display()
        );
    }
    assert!(!report.contains("WARN"), "{report}");
}

#[test]
fn the_validator_is_strict_about_unknown_fields() {
    // The control: the same DaemonSet with one misspelt field must fail, or a pass above
    // means nothing.
    let daemonset = fs::read_to_string(deploy_dir().join("daemonset.yaml")).unwrap();
    assert!(daemonset.contains("      hostPID: true\n"));
    let broken = daemonset.replace("      hostPID: true\n", "      hostPid: true\n");
    let path = std::env::temp_dir().join(format!("{}.yaml", unique_name("rasp-deploy")));
    fs::write(&path, broken).unwrap();
    let (passed, report) = validate(std::slice::from_ref(&path));
    let _ = fs::remove_file(&path);
    assert!(!passed, "a misspelt field passed:\n{report}");
    assert!(report.contains("hostPid"), "{report}");
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let kustomization = fs::read_to_string(deploy_dir().join("kustomization.yaml")).unwrap();
    // `resources:` then `  - path` lines until the next top-level key.
    let mut listed: Vec<PathBuf> = kustomization
        .lines()
        .skip_while(|l| *l != "resources:")
        .skip(1)
        .take_while(|l| l.starts_with(' ') || l.starts_with('#') || l.is_empty())
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(PathBuf::from)
        .collect();
    listed.sort();
    assert_eq!(listed, manifests(), "kustomization.yaml resources");
}

/// `data` of the ConfigMap in `file`, as a real YAML parser reads it (the venv's PyYAML).
fn configmap_data(file: &Path) -> serde_json::Map<String, Value> {
    let script = "import json, sys, yaml; d = yaml.safe_load(open(sys.argv[1])); \
                  assert d['kind'] == 'ConfigMap'; print(json.dumps(d['data']))";
    let out = run(
        Command::new(venv().join("bin/python"))
            .args(["-c", script])
            .arg(file),
        TOOL_DEADLINE,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Object(map)) => map,
        other => panic!("ConfigMap data is not a map: {other:?}"),
    }
}

#[test]
fn the_policy_configmap_carries_the_shipped_policies_verbatim() {
    let data = configmap_data(&deploy_dir().join("policies-v1.yaml"));
    let policies = workspace_root().join("policies");
    let mut shipped: Vec<String> = fs::read_dir(&policies)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    shipped.sort();
    let keys: Vec<String> = data.keys().cloned().collect();
    assert_eq!(
        keys, shipped,
        "regenerate: cargo xtask image --policy-configmap 1"
    );
    for name in &shipped {
        let on_disk = fs::read_to_string(policies.join(name)).unwrap();
        assert_eq!(
            data[name].as_str(),
            Some(on_disk.as_str()),
            "{name} differs from policies/{name}: regenerate with `cargo xtask image --policy-configmap 1`"
        );
    }
}

/// `--flag` names in `args`, without values.
fn flags<'a>(args: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    args.into_iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect()
}

#[test]
fn the_agent_accepts_the_flags_the_deployments_give_it() {
    let help = run(
        Command::new(agent_bin()).args(["run", "--help"]),
        TOOL_DEADLINE,
    );
    assert!(help.status.success(), "{}", text(&help.stderr));
    let help = text(&help.stdout);

    let unit = fs::read_to_string(deploy_dir().join("rasp-agent.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    let mut wanted = flags(exec.split_whitespace());
    for daemonset in ["daemonset.yaml", "canary/daemonset.yaml"] {
        let text = fs::read_to_string(deploy_dir().join(daemonset)).unwrap();
        wanted.extend(flags(
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("- "))
                .filter(|a| a.starts_with("--")),
        ));
    }
    assert!(wanted.contains(&"--metrics".to_string()), "{wanted:?}");
    for flag in wanted {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "`rasp-agent run` has no {flag}:\n{help}"
        );
    }
}

#[test]
fn the_systemd_unit_verifies_without_warnings() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("this test needs systemd-analyze (apt-get install systemd)");
    // verify checks that ExecStart exists: point it at the binary under test, in a copy.
    let unit = fs::read_to_string(deploy_dir().join("rasp-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/rasp-agent run"));
    let unit = unit.replace("/usr/local/bin/rasp-agent", &agent_bin().to_string_lossy());
    let dir = std::env::temp_dir().join(unique_name("rasp-unit"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rasp-agent.service");
    fs::write(&path, unit).unwrap();
    let out = run(
        Command::new(analyze).arg("verify").arg(&path),
        TOOL_DEADLINE,
    );
    let _ = fs::remove_dir_all(&dir);
    // verify exits 0 on directives it ignores; what it prints is what counts.
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
