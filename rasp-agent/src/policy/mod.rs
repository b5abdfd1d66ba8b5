//! Policies: versioned YAML that people write and review, validated with file:line:column
//! errors that say how to fix them, compiled to matchers that run on every event.
//! `yaml` builds a positioned tree, `schema` turns it into `Policy`/`Rule`, `glob` and `net`
//! are the compiled conditions, `matcher` evaluates them, `defaults` is the shipped set.

pub mod active;
pub mod compile;
mod defaults;
pub mod deny;
pub mod glob;
pub mod index;
pub mod matcher;
pub mod net;
pub mod persist;
pub mod reload;
mod schema;
pub mod vocab;
mod yaml;

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use defaults::default_policies;
pub use matcher::{Access, Conditions, Subject};
use vocab::{Action, EventType, Mode, Severity};

/// One problem in a policy file, where it is and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct PolicyError {
    pub file: String,
    /// 1-based; 0 when the problem is the file itself (unreadable, not UTF-8).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    /// The policy's own version, as its author numbers it.
    pub version: u32,
    pub description: Option<String>,
    pub mode: Mode,
    /// Which processes the policy applies to; empty: all.
    pub selector: Conditions,
    pub rules: Vec<Rule>,
    pub file: String,
    pub line: usize,
    pub column: usize,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub description: Option<String>,
    pub severity: Severity,
    pub event: EventType,
    pub conditions: Conditions,
    /// The event is excluded when any block matches fully.
    pub exceptions: Vec<Conditions>,
    pub action: Action,
    /// What `kill` kills (`scope:`), and what `quarantine` does after the network cut
    /// (`quarantine:`).
    pub scope: vocab::KillScope,
    pub quarantine: vocab::QuarantineMode,
    /// Overrides the policy's mode for this rule.
    pub mode: Option<Mode>,
    pub line: usize,
    pub column: usize,
}

impl Rule {
    pub fn effective_mode(&self, policy: &Policy) -> Mode {
        self.mode.unwrap_or(policy.mode)
    }

    /// Whether the rule or its policy chooses cgroups itself (a `cgroup` condition): what
    /// lets an action reach a login session.
    pub fn names_cgroups(&self, policy: &Policy) -> bool {
        self.conditions.values(matcher::Field::Cgroup).is_some()
            || policy.selector.values(matcher::Field::Cgroup).is_some()
    }

    /// Same event type, every condition holds, and no exception block matches.
    pub fn matches(&self, s: &Subject) -> bool {
        self.event == s.event
            && self.conditions.matches(s)
            && !self.exceptions.iter().any(|x| x.matches(s))
    }
}

impl Policy {
    pub fn applies_to(&self, s: &Subject) -> bool {
        self.selector.matches(s)
    }
}

/// Parse one file's text (several YAML documents allowed). `file` names it in errors.
/// All problems are reported, sorted by position, including rule ids or policy names used
/// twice within the file.
#[cfg(test)]
pub fn parse_policies(file: &str, text: &str) -> Result<Vec<Policy>, Vec<PolicyError>> {
    parse_files(&[(file, text)])
}

/// Parse several files (name, text) as one set: every problem of every file, then the
/// set-wide checks. Errors come in file order, then by position.
pub fn parse_files<N: AsRef<str>, T: AsRef<str>>(
    files: &[(N, T)],
) -> Result<Vec<Policy>, Vec<PolicyError>> {
    let mut order: Vec<&str> = Vec::new();
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    let mut idents = Vec::new();
    for (file, text) in files {
        let file = file.as_ref();
        order.push(file);
        let (p, e, i) = schema::parse_file(file, text.as_ref());
        policies.extend(p);
        errors.extend(e);
        idents.extend(i);
    }
    errors.extend(duplicates(&idents));
    if errors.is_empty() {
        // Only a set that is valid otherwise: its compiled pre-filter must fit the kernel.
        errors.extend(compile::capacity_errors(&policies));
    }
    if errors.is_empty() {
        return Ok(policies);
    }
    let rank = |f: &str| order.iter().position(|o| *o == f).unwrap_or(usize::MAX);
    errors.sort_by_key(|e| (rank(&e.file), e.line, e.column));
    Err(errors)
}

/// The files named by `paths`: files as given, directories as their `*.yaml`/`*.yml`
/// (sorted, not recursive). Every unreadable path is reported, not just the first.
pub fn read_policy_files(paths: &[PathBuf]) -> Result<Vec<(String, String)>, Vec<PolicyError>> {
    let (files, errors) = read_files(paths);
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

fn read_files(paths: &[PathBuf]) -> (Vec<(String, String)>, Vec<PolicyError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let file_error = |p: &Path, message: String| PolicyError {
        file: p.display().to_string(),
        line: 0,
        column: 0,
        message,
    };
    for path in paths {
        if path.is_dir() {
            let entries = match std::fs::read_dir(path) {
                Ok(rd) => rd,
                Err(e) => {
                    errors.push(file_error(path, format!("cannot read directory: {e}")));
                    continue;
                }
            };
            let found = yaml_files(entries);
            if found.is_empty() {
                errors.push(file_error(
                    path,
                    "no policy files (*.yaml, *.yml) in this directory".into(),
                ));
            }
            for f in found {
                match std::fs::read_to_string(&f) {
                    Ok(t) => files.push((f.display().to_string(), t)),
                    Err(e) => errors.push(file_error(&f, format!("cannot read: {e}"))),
                }
            }
        } else {
            match std::fs::read_to_string(path) {
                Ok(t) => files.push((path.display().to_string(), t)),
                Err(e) => errors.push(file_error(path, format!("cannot read: {e}"))),
            }
        }
    }
    (files, errors)
}

/// The policy files of a directory listing: `*.yaml` and `*.yml`, sorted.
fn yaml_files(entries: std::fs::ReadDir) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    found.sort();
    found
}

/// Files and directories (directories: their *.yaml / *.yml, sorted, not recursive); all
/// errors of all files, then the set-wide checks.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Policy>, Vec<PolicyError>> {
    let (files, mut errors) = read_files(paths);
    match parse_files(&files) {
        Ok(policies) if errors.is_empty() => Ok(policies),
        Ok(_) => Err(errors),
        Err(parse_errors) => {
            errors.extend(parse_errors);
            Err(errors)
        }
    }
}

/// What the policy files under `path` look like from outside (name, size, modification
/// time, inode of each): cheap to take every few seconds, and different after any edit,
/// rename or replacement, so a poller can tell when to reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, u64, Option<std::time::SystemTime>, u64)>);

pub fn fingerprint(path: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path).map(yaml_files).unwrap_or_default()
    } else {
        vec![path.to_path_buf()]
    };
    Fingerprint(
        files
            .into_iter()
            .map(|f| {
                let meta = std::fs::metadata(&f).ok();
                let size = meta.as_ref().map_or(0, |m| m.len());
                let mtime = meta.as_ref().and_then(|m| m.modified().ok());
                let ino = meta.as_ref().map_or(0, |m| m.ino());
                (f, size, mtime, ino)
            })
            .collect(),
    )
}

/// Each duplicate is reported at its later occurrence and names the first.
fn duplicates(idents: &[schema::Ident]) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    let mut first: HashMap<(bool, &str), &schema::Ident> = HashMap::new();
    for id in idents {
        let Some(f) = first.get(&(id.rule, id.value.as_str())) else {
            first.insert((id.rule, &id.value), id);
            continue;
        };
        let message = if id.rule {
            let in_policy = if f.policy.is_empty() {
                String::new()
            } else {
                format!(" (policy `{}`)", f.policy)
            };
            format!(
                "duplicate rule id `{}`: already used at {}:{}:{}{in_policy}; rule ids must be unique across all policies, so rename one",
                id.value, f.file, f.pos.line, f.pos.col
            )
        } else {
            format!(
                "duplicate policy name `{}`: already defined at {}:{}:{}; policy names must be unique across the set, so rename one (or remove the stale copy)",
                id.value, f.file, f.pos.line, f.pos.col
            )
        };
        errors.push(PolicyError {
            file: id.file.clone(),
            line: id.pos.line,
            column: id.pos.col,
            message,
        });
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_DOCS: &str = "\
# two policies in one file
name: nginx-guard
version: 3
mode: enforce
selector:
  exe: [\"*/nginx\"]
  uid: [33]
rules:
  - id: nginx-no-etc-writes
    severity: high
    event: file_open
    match:
      path: [\"/etc/**\"]
      access: [write]
    action: block
  - id: nginx-no-metadata
    severity: medium
    event: connect
    match:
      cidr: [\"169.254.169.254/32\"]
      port: [80, \"8000-9000\"]
    mode: audit
---
name: second
version: 1
mode: audit
rules:
  - id: any-exec-of-x
    severity: info
    event: exec
    match:
      exe: [\"/x\"]
";

    fn subject<'a>(event: EventType, exe: &'a str, uid: u32) -> Subject<'a> {
        Subject {
            exe: Some(exe),
            comm: "nginx",
            uid,
            ..Subject::of(event, &crate::events::Argv::EMPTY)
        }
    }

    #[test]
    fn multi_document_file_selectors_and_modes() {
        let ps = parse_policies("two.yaml", TWO_DOCS).expect("valid");
        assert_eq!(ps.len(), 2);
        let (p, q) = (&ps[0], &ps[1]);
        assert_eq!(
            (p.name.as_str(), p.version, p.mode),
            ("nginx-guard", 3, Mode::Enforce)
        );
        assert_eq!((p.file.as_str(), p.line, q.line), ("two.yaml", 2, 24));
        assert_eq!(p.rules[0].effective_mode(p), Mode::Enforce);
        assert_eq!(
            p.rules[1].effective_mode(p),
            Mode::Audit,
            "per-rule override"
        );
        assert_eq!(p.rules[0].action, Action::Block);

        let mut s = subject(EventType::FileOpen, "/usr/sbin/nginx", 33);
        s.path = Some("/etc/passwd");
        s.access = Access::WRITE | Access::CREATE;
        assert!(p.applies_to(&s));
        assert!(p.rules[0].matches(&s));
        assert!(!p.rules[1].matches(&s), "wrong event type");
        s.access = Access::READ;
        assert!(!p.rules[0].matches(&s), "read is not write");
        s.uid = 0;
        assert!(!p.applies_to(&s), "selector: uid");
        let s = subject(EventType::FileOpen, "/usr/sbin/apache2", 33);
        assert!(!p.applies_to(&s), "selector: exe");

        let mut c = subject(EventType::Connect, "/usr/sbin/nginx", 33);
        c.dest = "169.254.169.254:8080".parse().ok();
        assert!(p.rules[1].matches(&c));
        c.dest = "169.254.169.254:443".parse().ok();
        assert!(!p.rules[1].matches(&c), "port outside the list and range");
        c.dest = None;
        assert!(!p.rules[1].matches(&c), "no destination: no match");
        assert!(q.selector.is_empty() && q.applies_to(&c));
    }

    #[test]
    fn sql_rules_on_statements_tables_functions_and_new_shapes() {
        let text = "\
name: orders-db
version: 1
mode: audit
shape_learning: 30m
rules:
  - id: ddl-outside-migrations
    severity: medium
    event: sql_query
    match:
      sql_statement: [ddl, delete]
    except:
      - sql_table: [\"schema_migrations\"]
  - id: file-functions
    severity: high
    event: sql_query
    match:
      sql_function: [\"pg_read_*\", lo_import]
  - id: new-shape
    severity: low
    event: sql_query
    match:
      new_shape: true
";
        let ps = parse_policies("sql.yaml", text).expect("valid");
        let rules = &ps[0].rules;
        let detail =
            |statements: &[&str], tables: &[&str], functions: &[&str], age_ms: Option<u64>| {
                crate::events::SqlQueryDetail {
                    analyzed: true,
                    statements: statements.iter().map(|s| (*s).into()).collect(),
                    tables: tables.iter().map(|s| (*s).into()).collect(),
                    functions: functions.iter().map(|s| (*s).into()).collect(),
                    new_shape: age_ms.map(|service_age_ms| crate::events::NewShape {
                        service: "exe:/srv/app".into(),
                        service_age_ms,
                    }),
                    ..crate::events::SqlQueryDetail::sent(
                        crate::events::SqlFunction::SendQuery,
                        1,
                        String::new(),
                    )
                }
            };
        let fires = |rule: &Rule, d: &crate::events::SqlQueryDetail| {
            let mut s = subject(EventType::SqlQuery, "/srv/app", 0);
            s.sql = Some(d);
            rule.matches(&s)
        };
        let drop_orders = detail(&["ddl"], &["orders"], &[], None);
        let migration = detail(&["ddl"], &["schema_migrations"], &[], None);
        let select = detail(&["select"], &["orders"], &["lower"], None);
        assert!(fires(&rules[0], &drop_orders));
        assert!(!fires(&rules[0], &migration));
        assert!(!fires(&rules[0], &select));
        assert!(fires(
            &rules[1],
            &detail(&["select"], &[], &["pg_read_file"], None)
        ));
        assert!(!fires(&rules[1], &select));
        // New after the window fires; new while learning, or known, does not.
        assert!(fires(
            &rules[2],
            &detail(&["select"], &[], &[], Some(31 * 60_000))
        ));
        assert!(!fires(
            &rules[2],
            &detail(&["select"], &[], &[], Some(60_000))
        ));
        assert!(!fires(&rules[2], &select));
        // Other events never carry SQL facts.
        assert!(!rules[2].matches(&subject(EventType::SqlQuery, "/srv/app", 0)));
    }

    #[test]
    fn sql_conditions_are_validated_with_positions() {
        let text = "\
name: bad-sql
version: 1
mode: audit
shape_learning: soon
rules:
  - id: r1
    severity: low
    event: sql_query
    match:
      sql_statement: [drop]
      new_shape: false
  - id: r2
    severity: low
    event: exec
    match:
      sql_table: [users]
";
        let errors = parse_policies("bad.yaml", text).expect_err("invalid");
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let has = |needle: &str| shown.iter().any(|e| e.contains(needle));
        assert!(
            has("bad.yaml:4:17: `shape_learning` must be a duration"),
            "{shown:#?}"
        );
        assert!(
            has("bad.yaml:10:23: unknown statement kind `drop`"),
            "{shown:#?}"
        );
        assert!(
            has("bad.yaml:11:18: `new_shape: false` would match every query"),
            "{shown:#?}"
        );
        assert!(
            has("bad.yaml:16:7: `sql_table` never matches `exec` events"),
            "{shown:#?}"
        );
    }

    #[test]
    fn exceptions_exclude_when_any_block_matches_fully() {
        let text = "name: p\nversion: 1\nmode: audit\nrules:\n  - id: r\n    severity: low\n    event: exec\n    match:\n      exe: [\"*/sh\"]\n    except:\n      - parent_exe: [\"*/sshd\"]\n        uid: [0]\n      - ancestor_exe: [\"*/cron\"]\n";
        let ps = parse_policies("t.yaml", text).expect("valid");
        let r = &ps[0].rules[0];
        let mut s = subject(EventType::Exec, "/bin/sh", 0);
        assert!(r.matches(&s));
        s.parent_exe = Some("/usr/sbin/sshd");
        assert!(!r.matches(&s), "first block matches fully");
        s.uid = 1000;
        assert!(r.matches(&s), "first block only partly matches");
        let chain = ["/usr/bin/bash", "/usr/sbin/cron"];
        s.ancestor_exes = &chain;
        assert!(!r.matches(&s), "second block");
    }

    #[test]
    fn load_paths_reads_dirs_sorted_and_checks_the_whole_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rule = |name: &str, id: &str| {
            format!("name: {name}\nversion: 1\nmode: audit\nrules:\n  - id: {id}\n    severity: low\n    event: exec\n")
        };
        std::fs::write(dir.path().join("b.yml"), rule("bee", "shared")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), rule("ay", "shared")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
        std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        let errors = load_paths(&[dir.path().to_path_buf()]).expect_err("duplicate id");
        let a = dir.path().join("a.yaml").display().to_string();
        let b = dir.path().join("b.yml").display().to_string();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].to_string(),
            format!("{b}:5:9: duplicate rule id `shared`: already used at {a}:5:9 (policy `ay`); rule ids must be unique across all policies, so rename one")
        );

        std::fs::write(dir.path().join("b.yml"), rule("bee", "own")).unwrap();
        let ps = load_paths(&[dir.path().to_path_buf()]).expect("valid");
        assert_eq!(
            ps.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["ay", "bee"]
        );
        // A file named twice (directly and through its directory) is a duplicate too.
        let errors = load_paths(&[dir.path().to_path_buf(), dir.path().join("a.yaml")])
            .expect_err("same policy twice");
        assert!(errors[0].message.contains("duplicate policy name `ay`"));

        let missing = dir.path().join("nope.yaml");
        let errors =
            load_paths(&[missing.clone(), dir.path().join("notes.txt")]).expect_err("missing");
        assert!(errors[0]
            .to_string()
            .starts_with(&format!("{}: cannot read", missing.display())));
        assert!(
            errors[1].message.contains("a policy must be a map"),
            "{errors:?}"
        );
        let empty = tempfile::tempdir().expect("tempdir");
        let errors = load_paths(&[empty.path().to_path_buf()]).expect_err("empty dir");
        assert!(errors[0].message.contains("no policy files"));
    }

    #[test]
    fn errors_are_sorted_by_file_then_position() {
        let bad = "name: p\nversion: 0\nmode: x\nrules: []\n";
        let errors = parse_files(&[("z.yaml", bad), ("a.yaml", bad)]).expect_err("bad");
        let at: Vec<String> = errors
            .iter()
            .map(|e| format!("{}:{}:{}", e.file, e.line, e.column))
            .collect();
        assert_eq!(
            at,
            [
                "z.yaml:2:10",
                "z.yaml:3:7",
                "z.yaml:4:8",
                "a.yaml:1:7",
                "a.yaml:2:10",
                "a.yaml:3:7",
                "a.yaml:4:8"
            ]
        );
    }

    #[test]
    fn fingerprint_changes_on_edit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, "a").unwrap();
        let before = fingerprint(dir.path());
        assert_eq!(before, fingerprint(dir.path()));
        std::fs::write(&f, "ab").unwrap();
        assert_ne!(before, fingerprint(dir.path()));
        let before = fingerprint(dir.path());
        std::fs::write(dir.path().join("b.yml"), "x").unwrap();
        assert_ne!(before, fingerprint(dir.path()));
        let before = fingerprint(dir.path());
        std::fs::write(dir.path().join("ignored.txt"), "x").unwrap();
        assert_eq!(before, fingerprint(dir.path()));
    }

    #[test]
    fn error_display() {
        let e = PolicyError {
            file: "f.yaml".into(),
            line: 3,
            column: 7,
            message: "m".into(),
        };
        assert_eq!(e.to_string(), "f.yaml:3:7: m");
        let e = PolicyError {
            line: 0,
            column: 0,
            ..e
        };
        assert_eq!(e.to_string(), "f.yaml: m");
    }
}
