//! Evaluation: what the engine knows about one event (`Subject`) against compiled conditions.
//! Runs on every event, so everything is decided at load time: globs are compiled, exact
//! names and `**/name` patterns go into hash sets, ports are ranges, CIDRs are masks.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
};

pub use crate::events::Access;
use crate::events::Argv;

use super::{
    glob::{Glob, GlobMode},
    net::{Cidr, PortRange},
    vocab::EventType,
};

/// What the engine knows about one event, borrowed from the event and the process table.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub event: EventType,
    pub exe: Option<&'a str>,
    pub comm: &'a str,
    pub argv: &'a Argv,
    pub uid: u32,
    pub parent_exe: Option<&'a str>,
    /// Nearest first, parent included.
    pub ancestor_exes: &'a [&'a str],
    pub cgroup: Option<&'a str>,
    /// Set for processes in a container; `in_container` conditions test this.
    pub container_id: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
    /// Names from the container runtime (absent until the agent has asked it, and for
    /// runtimes it cannot ask).
    pub container_name: Option<&'a str>,
    pub image: Option<&'a str>,
    pub pod_name: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// file_open, library_load.
    pub path: Option<&'a str>,
    /// file_open; empty otherwise.
    pub access: Access,
    /// connect.
    pub dest: Option<SocketAddr>,
    /// SQL events: the query text and the analyzer's finding names (`vocab::SQL_FINDINGS`).
    pub query: Option<&'a str>,
    pub sql_findings: &'a [String],
    /// SQL events: the analyzed query (statements, tables, functions, shape novelty).
    pub sql: Option<&'a crate::events::SqlQueryDetail>,
}

/// A condition key, as written in `match`, `except` and `selector`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Exe,
    Comm,
    Argv,
    Cmdline,
    ParentExe,
    AncestorExe,
    Uid,
    InContainer,
    Cgroup,
    ContainerId,
    PodUid,
    ContainerName,
    Image,
    PodName,
    Namespace,
    Path,
    Access,
    Port,
    Cidr,
    Query,
    SqlFinding,
    SqlStatement,
    SqlTable,
    SqlFunction,
    NewShape,
}

impl Field {
    pub const ALL: [Field; 25] = [
        Field::Exe,
        Field::Comm,
        Field::Argv,
        Field::Cmdline,
        Field::ParentExe,
        Field::AncestorExe,
        Field::Uid,
        Field::InContainer,
        Field::Cgroup,
        Field::ContainerId,
        Field::PodUid,
        Field::ContainerName,
        Field::Image,
        Field::PodName,
        Field::Namespace,
        Field::Path,
        Field::Access,
        Field::Port,
        Field::Cidr,
        Field::Query,
        Field::SqlFinding,
        Field::SqlStatement,
        Field::SqlTable,
        Field::SqlFunction,
        Field::NewShape,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Exe => "exe",
            Field::Comm => "comm",
            Field::Argv => "argv",
            Field::Cmdline => "cmdline",
            Field::ParentExe => "parent_exe",
            Field::AncestorExe => "ancestor_exe",
            Field::Uid => "uid",
            Field::InContainer => "in_container",
            Field::Cgroup => "cgroup",
            Field::ContainerId => "container_id",
            Field::PodUid => "pod_uid",
            Field::ContainerName => "container_name",
            Field::Image => "image",
            Field::PodName => "pod_name",
            Field::Namespace => "namespace",
            Field::Path => "path",
            Field::Access => "access",
            Field::Port => "port",
            Field::Cidr => "cidr",
            Field::Query => "query",
            Field::SqlFinding => "sql_finding",
            Field::SqlStatement => "sql_statement",
            Field::SqlTable => "sql_table",
            Field::SqlFunction => "sql_function",
            Field::NewShape => "new_shape",
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Selectors choose processes, so they take only what identifies one.
    pub fn in_selector(self) -> bool {
        matches!(
            self,
            Field::Exe
                | Field::Cgroup
                | Field::ContainerId
                | Field::PodUid
                | Field::ContainerName
                | Field::Image
                | Field::PodName
                | Field::Namespace
                | Field::Uid
                | Field::InContainer
        )
    }

    /// The events that carry this field; `None`: all of them.
    pub fn events(self) -> Option<&'static [EventType]> {
        match self {
            Field::Path => Some(&[EventType::FileOpen, EventType::LibraryLoad]),
            Field::Access => Some(&[EventType::FileOpen]),
            Field::Port | Field::Cidr => Some(&[EventType::Connect]),
            Field::Query
            | Field::SqlFinding
            | Field::SqlStatement
            | Field::SqlTable
            | Field::SqlFunction
            | Field::NewShape => Some(&[EventType::SqlQuery]),
            _ => None,
        }
    }

    /// Glob flavour for pattern fields; `None` for typed fields.
    pub fn glob_mode(self) -> Option<GlobMode> {
        match self {
            Field::Exe | Field::ParentExe | Field::AncestorExe | Field::Path | Field::Cgroup => {
                Some(GlobMode::Path)
            }
            Field::Comm
            | Field::Argv
            | Field::Cmdline
            | Field::ContainerId
            | Field::PodUid
            | Field::ContainerName
            | Field::Image
            | Field::PodName
            | Field::Namespace
            | Field::Query
            | Field::SqlFinding
            | Field::SqlTable
            | Field::SqlFunction => Some(GlobMode::Text),
            _ => None,
        }
    }
}

/// Patterns of one field, any of which may match.
#[derive(Clone, Debug, Default)]
pub(super) struct PatternSet {
    exact: HashSet<String>,
    /// `**/name`: matched on the last component of the input.
    basenames: HashSet<String>,
    globs: Vec<Glob>,
}

/// Below this many exact names a linear scan beats hashing.
const SET_THRESHOLD: usize = 4;

impl PatternSet {
    pub(super) fn new(globs: Vec<Glob>) -> PatternSet {
        let mut set = PatternSet::default();
        let exact = globs.iter().filter(|g| g.literal().is_some()).count();
        let names = globs
            .iter()
            .filter(|g| g.dir_suffix().is_some_and(|s| !s.contains('/')))
            .count();
        for g in globs {
            if exact > SET_THRESHOLD {
                if let Some(l) = g.literal() {
                    set.exact.insert(l.to_string());
                    continue;
                }
            }
            if names > SET_THRESHOLD {
                if let Some(n) = g.dir_suffix().filter(|s| !s.contains('/')) {
                    set.basenames.insert(n.to_string());
                    continue;
                }
            }
            set.globs.push(g);
        }
        set
    }

    /// One string per pattern that every match of that pattern contains; `None` when some
    /// pattern has no literal at all (`*`), so nothing can be required of the input.
    fn required_literals(&self) -> Option<Vec<&str>> {
        let mut out: Vec<&str> = self.exact.iter().map(String::as_str).collect();
        out.extend(self.basenames.iter().map(String::as_str));
        for g in &self.globs {
            out.push(g.required_literal()?);
        }
        Some(out)
    }

    fn matches(&self, s: &str) -> bool {
        (!self.exact.is_empty() && self.exact.contains(s))
            || (!self.basenames.is_empty()
                && self
                    .basenames
                    .contains(s.rsplit_once('/').map_or(s, |(_, b)| b)))
            || self.globs.iter().any(|g| g.is_match(s))
    }
}

/// Conditions of a `match`, an `except` block or a selector: every field given must match
/// (AND), any value within a field may (OR). A field the event does not have (no parent
/// known, no path) does not match.
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    exe: Option<PatternSet>,
    comm: Option<PatternSet>,
    argv: Option<PatternSet>,
    cmdline: Option<PatternSet>,
    parent_exe: Option<PatternSet>,
    ancestor_exe: Option<PatternSet>,
    cgroup: Option<PatternSet>,
    container_id: Option<PatternSet>,
    pod_uid: Option<PatternSet>,
    container_name: Option<PatternSet>,
    image: Option<PatternSet>,
    pod_name: Option<PatternSet>,
    namespace: Option<PatternSet>,
    path: Option<PatternSet>,
    query: Option<PatternSet>,
    sql_finding: Option<PatternSet>,
    sql_table: Option<PatternSet>,
    sql_function: Option<PatternSet>,
    /// Statement kind names (`vocab::SQL_STATEMENTS`), any of which may match.
    sql_statement: Option<Vec<String>>,
    /// `new_shape: true`: a shape its service never sent, once the service has been seen
    /// this long (the policy's `shape_learning`).
    new_shape: Option<std::time::Duration>,
    uid: Option<Vec<u32>>,
    in_container: Option<bool>,
    access: Option<Access>,
    port: Option<Vec<PortRange>>,
    cidr: Option<Vec<Cidr>>,
    /// Each field's values as written: for display and for comparing blocks.
    source: BTreeMap<Field, Vec<String>>,
}

impl Conditions {
    /// No field given: matches everything.
    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    /// The fields given, in `Field` order.
    pub(super) fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.source.keys().copied()
    }

    pub(super) fn values(&self, field: Field) -> Option<&[String]> {
        self.source.get(&field).map(Vec::as_slice)
    }

    pub(super) fn set_patterns(&mut self, field: Field, globs: Vec<Glob>) {
        let source = globs.iter().map(|g| g.as_str().to_string()).collect();
        let set = PatternSet::new(globs);
        let slot = match field {
            Field::Exe => &mut self.exe,
            Field::Comm => &mut self.comm,
            Field::Argv => &mut self.argv,
            Field::Cmdline => &mut self.cmdline,
            Field::ParentExe => &mut self.parent_exe,
            Field::AncestorExe => &mut self.ancestor_exe,
            Field::Cgroup => &mut self.cgroup,
            Field::ContainerId => &mut self.container_id,
            Field::PodUid => &mut self.pod_uid,
            Field::ContainerName => &mut self.container_name,
            Field::Image => &mut self.image,
            Field::PodName => &mut self.pod_name,
            Field::Namespace => &mut self.namespace,
            Field::Path => &mut self.path,
            Field::Query => &mut self.query,
            Field::SqlFinding => &mut self.sql_finding,
            Field::SqlTable => &mut self.sql_table,
            Field::SqlFunction => &mut self.sql_function,
            _ => return,
        };
        *slot = Some(set);
        self.source.insert(field, source);
    }

    pub(super) fn set_sql_statements(&mut self, kinds: Vec<String>) {
        self.source.insert(Field::SqlStatement, kinds.clone());
        self.sql_statement = Some(kinds);
    }

    pub(super) fn set_new_shape(&mut self, learning: std::time::Duration) {
        self.source.insert(
            Field::NewShape,
            vec![format!(
                "true after {}",
                humantime::format_duration(learning)
            )],
        );
        self.new_shape = Some(learning);
    }

    pub(super) fn set_uid(&mut self, uids: Vec<u32>) {
        self.source
            .insert(Field::Uid, uids.iter().map(u32::to_string).collect());
        self.uid = Some(uids);
    }

    pub(super) fn set_in_container(&mut self, b: bool) {
        self.source.insert(Field::InContainer, vec![b.to_string()]);
        self.in_container = Some(b);
    }

    pub(super) fn set_access(&mut self, a: Access) {
        self.source
            .insert(Field::Access, a.names().map(String::from).collect());
        self.access = Some(a);
    }

    pub(super) fn set_ports(&mut self, ports: Vec<(String, PortRange)>) {
        self.source
            .insert(Field::Port, ports.iter().map(|(s, _)| s.clone()).collect());
        self.port = Some(ports.into_iter().map(|(_, p)| p).collect());
    }

    pub(super) fn set_cidrs(&mut self, cidrs: Vec<(String, Cidr)>) {
        self.source
            .insert(Field::Cidr, cidrs.iter().map(|(s, _)| s.clone()).collect());
        self.cidr = Some(cidrs.into_iter().map(|(_, c)| c).collect());
    }

    /// True when every event that matches `other` also matches `self`, judged on the values
    /// as written: each field of `self` is in `other` with a subset of `self`'s values.
    /// Used to find an `except` block that cancels its rule's `match`.
    pub(super) fn covers(&self, other: &Conditions) -> bool {
        self.source.iter().all(|(field, mine)| {
            other
                .source
                .get(field)
                .is_some_and(|theirs| theirs.iter().all(|t| mine.contains(t)))
        })
    }

    /// Literals that must occur in one field for these conditions to hold: the field (among
    /// those a multi-pattern scan reads: exe, comm, argv/cmdline, parent_exe, path) whose
    /// patterns all carry a literal, preferring the one whose shortest literal is longest
    /// (the most selective). `None`: no such field; the conditions are always evaluated.
    pub(super) fn required_literals(&self) -> Option<(Field, Vec<&str>)> {
        let fields = [
            (Field::Exe, &self.exe),
            (Field::Comm, &self.comm),
            (Field::Argv, &self.argv),
            (Field::Cmdline, &self.cmdline),
            (Field::ParentExe, &self.parent_exe),
            (Field::Path, &self.path),
        ];
        fields
            .into_iter()
            .filter_map(|(f, set)| Some((f, set.as_ref()?.required_literals()?)))
            .filter(|(_, lits)| !lits.is_empty())
            .max_by_key(|(_, lits)| lits.iter().map(|l| l.len()).min().unwrap_or(0))
    }

    pub fn matches(&self, s: &Subject) -> bool {
        // Cheap integer tests first, then hash lookups and globs, cmdline last.
        if let Some(uids) = &self.uid {
            if !uids.contains(&s.uid) {
                return false;
            }
        }
        if let Some(b) = self.in_container {
            if s.container_id.is_some() != b {
                return false;
            }
        }
        if let Some(a) = self.access {
            if !s.access.intersects(a) {
                return false;
            }
        }
        if let Some(ports) = &self.port {
            match s.dest {
                Some(d) if ports.iter().any(|r| r.contains(d.port())) => {}
                _ => return false,
            }
        }
        if let Some(cidrs) = &self.cidr {
            match s.dest {
                Some(d) if cidrs.iter().any(|c| c.contains(d.ip())) => {}
                _ => return false,
            }
        }
        let one = |set: &Option<PatternSet>, v: Option<&str>| match set {
            None => true,
            Some(set) => v.is_some_and(|v| set.matches(v)),
        };
        if !(one(&self.path, s.path)
            && one(&self.exe, s.exe)
            && one(&self.comm, Some(s.comm))
            && one(&self.parent_exe, s.parent_exe)
            && one(&self.cgroup, s.cgroup)
            && one(&self.container_id, s.container_id)
            && one(&self.pod_uid, s.pod_uid)
            && one(&self.container_name, s.container_name)
            && one(&self.image, s.image)
            && one(&self.pod_name, s.pod_name)
            && one(&self.namespace, s.namespace))
        {
            return false;
        }
        if !one(&self.query, s.query) {
            return false;
        }
        if let Some(set) = &self.sql_finding {
            if !s.sql_findings.iter().any(|f| set.matches(f)) {
                return false;
            }
        }
        if self.sql_statement.is_some()
            || self.sql_table.is_some()
            || self.sql_function.is_some()
            || self.new_shape.is_some()
        {
            let Some(sql) = s.sql else {
                return false;
            };
            if let Some(kinds) = &self.sql_statement {
                if !sql
                    .statements
                    .iter()
                    .any(|k| kinds.iter().any(|w| **k == **w))
                {
                    return false;
                }
            }
            if let Some(set) = &self.sql_table {
                if !sql.tables.iter().any(|t| set.matches(t)) {
                    return false;
                }
            }
            if let Some(set) = &self.sql_function {
                if !sql.functions.iter().any(|f| set.matches(f)) {
                    return false;
                }
            }
            if let Some(learning) = self.new_shape {
                match &sql.new_shape {
                    Some(n) if n.service_age_ms >= learning.as_millis() as u64 => {}
                    _ => return false,
                }
            }
        }
        if let Some(set) = &self.ancestor_exe {
            if !s.ancestor_exes.iter().any(|a| set.matches(a)) {
                return false;
            }
        }
        if let Some(set) = &self.argv {
            if !s.argv.iter().any(|a| set.matches(a)) {
                return false;
            }
        }
        // The arguments are kept joined by spaces: the command line costs nothing to build.
        if let Some(set) = &self.cmdline {
            if !set.matches(s.argv.joined()) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_sets_use_hashes_past_the_threshold_and_agree_with_globs() {
        let pats = [
            "**/a", "**/b", "**/c", "**/d", "**/e", "**/f", "/x/y", "/x/z", "/q/1", "/q/2", "/q/3",
            "/q/4", "/tmp/**",
        ];
        let globs: Vec<Glob> = pats
            .iter()
            .map(|p| Glob::new(p, GlobMode::Path).unwrap())
            .collect();
        let set = PatternSet::new(globs.clone());
        assert!(!set.exact.is_empty() && !set.basenames.is_empty());
        for input in [
            "/usr/bin/a",
            "/f",
            "/x/y",
            "/x/w",
            "/q/4",
            "/tmp/k",
            "/usr/bin/aa",
            "a",
        ] {
            assert_eq!(
                set.matches(input),
                globs.iter().any(|g| g.is_match(input)),
                "{input}"
            );
        }
    }
}
