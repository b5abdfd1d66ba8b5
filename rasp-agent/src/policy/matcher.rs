//! Evaluation: what the engine knows about one event (`Subject`) against compiled conditions.
//! Runs on every event, so everything is decided at load time: globs are compiled, exact
//! names and `**/name` patterns go into hash sets, ports are ranges, CIDRs are masks.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
};

pub use crate::events::Access;
use crate::events::{Argv, StdioFd};

use super::{
    glob::{Glob, GlobMode},
    net::{Cidr, PortRange, StatusRange},
    vocab::EventType,
};
use crate::events::{Direction, HttpDetail, TlsDetail};

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
    /// file_open, library_load; the request's path for http.
    pub path: Option<&'a str>,
    /// file_open; empty otherwise.
    pub access: Access,
    /// connect: the destination; tls and http: the peer.
    pub dest: Option<SocketAddr>,
    /// SQL events: the query text and the analyzer's finding names (`vocab::SQL_FINDINGS`).
    pub query: Option<&'a str>,
    pub sql_findings: &'a [String],
    /// In a container: its cgroup names one, or its PID namespace is not the host's.
    pub in_container: bool,
    /// The process's argv was longer than the capture bound.
    pub argv_truncated: bool,
    /// file_change: the second name (rename's and link's new name); `path` conditions
    /// match either.
    pub path2: Option<&'a str>,
    /// The operation's name (`events::hooks` vocabularies), for events that have one.
    pub operation: Option<&'a str>,
    /// file_change (chmod): the new mode.
    pub mode: Option<u32>,
    /// file_change (setxattr): the attribute's name.
    pub xattr: Option<&'a str>,
    /// ptrace: the target as the process table knows it.
    pub target_exe: Option<&'a str>,
    pub target_descendant: Option<bool>,
    pub target_same_uid: Option<bool>,
    /// namespace: the namespaces concerned, and for setns whether they are the host's.
    pub namespaces: &'a [String],
    pub into_host: Option<bool>,
    /// mount.
    pub mount_source: Option<&'a str>,
    pub fstype: Option<&'a str>,
    pub mount_flags: u64,
    /// bpf_load: the program type's name.
    pub prog_type: Option<&'a str>,
    /// exec: descriptors 0, 1, 2, the writer of a stdin pipe, the script an interpreter
    /// runs (resolved against the working directory).
    pub stdio: Option<&'a [StdioFd; 3]>,
    pub stdin_peer_exe: Option<&'a str>,
    pub stdin_peer_argv: Option<&'a Argv>,
    /// exec: the program whose output the parent had just read through a command
    /// substitution (`bash -c "$(curl …)"`).
    pub substituted_from_exe: Option<&'a str>,
    pub script: Option<&'a str>,
    /// exec: the program that named this executable as its output shortly before.
    pub exe_built_by: Option<&'a str>,
    /// SQL events: the analyzed query (statements, tables, functions, shape novelty).
    pub sql: Option<&'a crate::events::SqlQueryDetail>,
    /// TLS events: the chunk with the HTTP stage's findings.
    pub tls: Option<&'a TlsDetail>,
    /// HTTP events.
    pub http: Option<&'a HttpDetail>,
}

impl<'a> Subject<'a> {
    /// An event of type `event` with `argv` and nothing else known: the base the engine
    /// and tests fill in.
    pub fn of(event: EventType, argv: &'a Argv) -> Subject<'a> {
        Subject {
            event,
            exe: None,
            comm: "",
            argv,
            uid: 0,
            parent_exe: None,
            ancestor_exes: &[],
            cgroup: None,
            container_id: None,
            pod_uid: None,
            container_name: None,
            image: None,
            pod_name: None,
            namespace: None,
            path: None,
            access: Access::empty(),
            dest: None,
            query: None,
            sql_findings: &[],
            in_container: false,
            argv_truncated: false,
            path2: None,
            operation: None,
            mode: None,
            xattr: None,
            target_exe: None,
            target_descendant: None,
            target_same_uid: None,
            namespaces: &[],
            into_host: None,
            mount_source: None,
            fstype: None,
            mount_flags: 0,
            prog_type: None,
            stdio: None,
            stdin_peer_exe: None,
            stdin_peer_argv: None,
            substituted_from_exe: None,
            script: None,
            exe_built_by: None,
            sql: None,
            tls: None,
            http: None,
        }
    }
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
    Operation,
    ModeBits,
    Xattr,
    TargetExe,
    TargetDescendant,
    TargetSameUid,
    Namespaces,
    IntoHost,
    MountSource,
    Fstype,
    MountFlags,
    ProgType,
    Stdin,
    Stdout,
    Stderr,
    Stdio,
    StdinPeerExe,
    StdinPeerArgv,
    SubstitutedFromExe,
    ArgvTruncated,
    Script,
    ExeBuiltBy,
    Direction,
    Peer,
    Method,
    Host,
    Status,
    TlsFinding,
    HttpFinding,
}

impl Field {
    pub const ALL: [Field; 54] = [
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
        Field::Operation,
        Field::ModeBits,
        Field::Xattr,
        Field::TargetExe,
        Field::TargetDescendant,
        Field::TargetSameUid,
        Field::Namespaces,
        Field::IntoHost,
        Field::MountSource,
        Field::Fstype,
        Field::MountFlags,
        Field::ProgType,
        Field::Stdin,
        Field::Stdout,
        Field::Stderr,
        Field::Stdio,
        Field::StdinPeerExe,
        Field::StdinPeerArgv,
        Field::SubstitutedFromExe,
        Field::ArgvTruncated,
        Field::Script,
        Field::ExeBuiltBy,
        Field::Direction,
        Field::Peer,
        Field::Method,
        Field::Host,
        Field::Status,
        Field::TlsFinding,
        Field::HttpFinding,
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
            Field::Operation => "operation",
            Field::ModeBits => "mode_bits",
            Field::Xattr => "xattr",
            Field::TargetExe => "target_exe",
            Field::TargetDescendant => "target_descendant",
            Field::TargetSameUid => "target_same_uid",
            Field::Namespaces => "namespaces",
            Field::IntoHost => "into_host",
            Field::MountSource => "mount_source",
            Field::Fstype => "fstype",
            Field::MountFlags => "mount_flags",
            Field::ProgType => "prog_type",
            Field::Stdin => "stdin",
            Field::Stdout => "stdout",
            Field::Stderr => "stderr",
            Field::Stdio => "stdio",
            Field::StdinPeerExe => "stdin_peer_exe",
            Field::StdinPeerArgv => "stdin_peer_argv",
            Field::SubstitutedFromExe => "substituted_from_exe",
            Field::ArgvTruncated => "argv_truncated",
            Field::Script => "script",
            Field::ExeBuiltBy => "exe_built_by",
            Field::Direction => "direction",
            Field::Peer => "peer",
            Field::Method => "method",
            Field::Host => "host",
            Field::Status => "status",
            Field::TlsFinding => "tls_finding",
            Field::HttpFinding => "http_finding",
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
        use EventType as E;
        match self {
            Field::Path => Some(&[
                E::FileOpen,
                E::LibraryLoad,
                E::FileChange,
                E::UnixConnect,
                E::Mount,
                E::KernelModule,
                E::Http,
            ]),
            Field::Access => Some(&[E::FileOpen]),
            Field::Port | Field::Cidr => Some(&[E::Connect]),
            Field::Query
            | Field::SqlFinding
            | Field::SqlStatement
            | Field::SqlTable
            | Field::SqlFunction
            | Field::NewShape => Some(&[E::SqlQuery]),
            Field::Operation => Some(&[
                E::FileChange,
                E::Ptrace,
                E::Namespace,
                E::Mount,
                E::KernelModule,
                E::IoUring,
                E::Socket,
            ]),
            Field::ModeBits | Field::Xattr => Some(&[E::FileChange]),
            Field::TargetExe | Field::TargetDescendant | Field::TargetSameUid => Some(&[E::Ptrace]),
            Field::Namespaces | Field::IntoHost => Some(&[E::Namespace]),
            Field::MountSource | Field::Fstype | Field::MountFlags => Some(&[E::Mount]),
            Field::ProgType => Some(&[E::BpfLoad]),
            Field::Stdin
            | Field::Stdout
            | Field::Stderr
            | Field::Stdio
            | Field::StdinPeerExe
            | Field::StdinPeerArgv
            | Field::SubstitutedFromExe
            | Field::Script
            | Field::ExeBuiltBy => Some(&[E::Exec]),
            Field::Direction | Field::Peer => Some(&[E::Tls, E::Http]),
            Field::Method | Field::Host | Field::Status | Field::HttpFinding => Some(&[E::Http]),
            Field::TlsFinding => Some(&[E::Tls]),
            _ => None,
        }
    }

    /// The names a name-list field accepts (`operation` depends on the event: see
    /// `EventType::operations`); `None` for other fields.
    pub fn vocabulary(self) -> Option<Vec<&'static str>> {
        use crate::events::hooks;
        let names = |v: &[(&'static str, u32)]| v.iter().map(|(n, _)| *n).collect();
        Some(match self {
            Field::ModeBits => names(hooks::MODE_BITS),
            Field::Namespaces => names(hooks::NAMESPACES),
            Field::MountFlags => hooks::MOUNT_FLAGS.iter().map(|(n, _)| *n).collect(),
            Field::ProgType => hooks::BPF_PROG_TYPES.to_vec(),
            Field::Stdin | Field::Stdout | Field::Stderr | Field::Stdio => {
                crate::events::FdKind::policy_names()
            }
            _ => return None,
        })
    }

    /// Fields written `true` or `false`.
    pub fn is_bool(self) -> bool {
        matches!(
            self,
            Field::InContainer
                | Field::TargetDescendant
                | Field::TargetSameUid
                | Field::IntoHost
                | Field::ArgvTruncated
        )
    }

    /// Glob flavour for pattern fields; `None` for typed fields.
    pub fn glob_mode(self) -> Option<GlobMode> {
        match self {
            Field::Exe
            | Field::ParentExe
            | Field::AncestorExe
            | Field::Path
            | Field::Cgroup
            | Field::TargetExe
            | Field::StdinPeerExe
            | Field::SubstitutedFromExe
            | Field::Script
            | Field::ExeBuiltBy => Some(GlobMode::Path),
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
            | Field::SqlFunction
            | Field::Xattr
            | Field::MountSource
            | Field::Fstype
            | Field::StdinPeerArgv
            | Field::Method
            | Field::Host
            | Field::TlsFinding
            | Field::HttpFinding => Some(GlobMode::Text),
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
    xattr: Option<PatternSet>,
    target_exe: Option<PatternSet>,
    mount_source: Option<PatternSet>,
    fstype: Option<PatternSet>,
    stdin_peer_exe: Option<PatternSet>,
    stdin_peer_argv: Option<PatternSet>,
    substituted_from_exe: Option<PatternSet>,
    script: Option<PatternSet>,
    exe_built_by: Option<PatternSet>,
    /// Name-list fields: `operation`, `namespaces`, `prog_type`, and the descriptor kinds
    /// of stdin, stdout, stderr and any of them (`stdio`).
    operation: Option<Vec<&'static str>>,
    namespaces: Option<Vec<&'static str>>,
    prog_type: Option<Vec<&'static str>>,
    fd_kinds: [Option<Vec<&'static str>>; 4],
    /// Bit masks from names: any bit set matches.
    mode_bits: Option<u32>,
    mount_flags: Option<u64>,
    target_descendant: Option<bool>,
    target_same_uid: Option<bool>,
    into_host: Option<bool>,
    argv_truncated: Option<bool>,
    method: Option<PatternSet>,
    host: Option<PatternSet>,
    tls_finding: Option<PatternSet>,
    http_finding: Option<PatternSet>,
    direction: Option<Vec<Direction>>,
    peer: Option<Vec<Cidr>>,
    status: Option<Vec<StatusRange>>,
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
            Field::Xattr => &mut self.xattr,
            Field::TargetExe => &mut self.target_exe,
            Field::MountSource => &mut self.mount_source,
            Field::Fstype => &mut self.fstype,
            Field::StdinPeerExe => &mut self.stdin_peer_exe,
            Field::StdinPeerArgv => &mut self.stdin_peer_argv,
            Field::SubstitutedFromExe => &mut self.substituted_from_exe,
            Field::Script => &mut self.script,
            Field::ExeBuiltBy => &mut self.exe_built_by,
            Field::Method => &mut self.method,
            Field::Host => &mut self.host,
            Field::TlsFinding => &mut self.tls_finding,
            Field::HttpFinding => &mut self.http_finding,
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

    /// A `true`/`false` field.
    pub(super) fn set_bool(&mut self, field: Field, b: bool) {
        let slot = match field {
            Field::InContainer => &mut self.in_container,
            Field::TargetDescendant => &mut self.target_descendant,
            Field::TargetSameUid => &mut self.target_same_uid,
            Field::IntoHost => &mut self.into_host,
            Field::ArgvTruncated => &mut self.argv_truncated,
            _ => return,
        };
        *slot = Some(b);
        self.source.insert(field, vec![b.to_string()]);
    }

    /// A name-list field, its names already checked against its vocabulary.
    pub(super) fn set_names(&mut self, field: Field, names: Vec<&'static str>) {
        use crate::events::hooks;
        self.source
            .insert(field, names.iter().map(|n| n.to_string()).collect());
        let mask = |table: &[(&str, u32)]| {
            table
                .iter()
                .filter(|(n, _)| names.contains(n))
                .fold(0u32, |m, (_, bit)| m | bit)
        };
        match field {
            Field::Operation => self.operation = Some(names),
            Field::Namespaces => self.namespaces = Some(names),
            Field::ProgType => self.prog_type = Some(names),
            Field::Stdin => self.fd_kinds[0] = Some(names),
            Field::Stdout => self.fd_kinds[1] = Some(names),
            Field::Stderr => self.fd_kinds[2] = Some(names),
            Field::Stdio => self.fd_kinds[3] = Some(names),
            Field::ModeBits => self.mode_bits = Some(mask(hooks::MODE_BITS)),
            Field::MountFlags => {
                self.mount_flags = Some(
                    hooks::MOUNT_FLAGS
                        .iter()
                        .filter(|(n, _)| names.contains(n))
                        .fold(0u64, |m, (_, bit)| m | bit),
                )
            }
            _ => {}
        }
    }

    /// Whether these conditions look at the writer of a stdin pipe (which may be learnt
    /// after the reader's exec: the pipeline evaluates such rules again then).
    pub fn uses_stdin_peer(&self) -> bool {
        self.stdin_peer_exe.is_some() || self.stdin_peer_argv.is_some()
    }

    /// Whether the rule looks at `substituted_from_exe` (the pipeline then remembers
    /// which pipes were read by the writer's parent).
    pub fn uses_substitution(&self) -> bool {
        self.substituted_from_exe.is_some()
    }

    /// `mode_bits` as a mask, for the kernel filter.
    pub(super) fn mode_mask(&self) -> Option<u32> {
        self.mode_bits
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

    pub(super) fn set_directions(&mut self, directions: Vec<Direction>) {
        self.source.insert(
            Field::Direction,
            directions.iter().map(|d| d.name().to_string()).collect(),
        );
        self.direction = Some(directions);
    }

    pub(super) fn set_peers(&mut self, cidrs: Vec<(String, Cidr)>) {
        self.source
            .insert(Field::Peer, cidrs.iter().map(|(s, _)| s.clone()).collect());
        self.peer = Some(cidrs.into_iter().map(|(_, c)| c).collect());
    }

    pub(super) fn set_statuses(&mut self, statuses: Vec<(String, StatusRange)>) {
        self.source.insert(
            Field::Status,
            statuses.iter().map(|(s, _)| s.clone()).collect(),
        );
        self.status = Some(statuses.into_iter().map(|(_, r)| r).collect());
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
            if s.in_container != b {
                return false;
            }
        }
        if let Some(b) = self.argv_truncated {
            if s.argv_truncated != b {
                return false;
            }
        }
        if !self.hook_fields_match(s) {
            return false;
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
        // A rename or link matches on either name.
        let path_ok = match &self.path {
            None => true,
            Some(set) => {
                s.path.is_some_and(|p| set.matches(p)) || s.path2.is_some_and(|p| set.matches(p))
            }
        };
        if !(path_ok
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
        if !self.tls_http_match(s) {
            return false;
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

    /// The conditions of the issue-19 events (and exec's descriptors). Each field the event
    /// does not have fails its condition.
    fn hook_fields_match(&self, s: &Subject) -> bool {
        let one = |set: &Option<PatternSet>, v: Option<&str>| match set {
            None => true,
            Some(set) => v.is_some_and(|v| set.matches(v)),
        };
        let flag = |want: Option<bool>, have: Option<bool>| want.is_none() || want == have;
        let listed = |names: &Option<Vec<&'static str>>, v: Option<&str>| match names {
            None => true,
            Some(names) => v.is_some_and(|v| names.contains(&v)),
        };
        if !(listed(&self.operation, s.operation)
            && listed(&self.prog_type, s.prog_type)
            && flag(self.target_descendant, s.target_descendant)
            && flag(self.target_same_uid, s.target_same_uid)
            && flag(self.into_host, s.into_host))
        {
            return false;
        }
        if let Some(mask) = self.mode_bits {
            if s.mode.is_none_or(|m| m & mask == 0) {
                return false;
            }
        }
        if let Some(mask) = self.mount_flags {
            if s.mount_flags & mask == 0 {
                return false;
            }
        }
        if let Some(names) = &self.namespaces {
            if !s.namespaces.iter().any(|n| names.contains(&n.as_str())) {
                return false;
            }
        }
        for (i, kinds) in self.fd_kinds.iter().enumerate() {
            let Some(kinds) = kinds else { continue };
            let Some(fds) = s.stdio else { return false };
            let hit = |fd: &StdioFd| kinds.iter().any(|k| fd.kind.matches_name(k));
            let ok = if i < 3 {
                hit(&fds[i])
            } else {
                fds.iter().any(hit)
            };
            if !ok {
                return false;
            }
        }
        if let Some(set) = &self.stdin_peer_argv {
            if !s
                .stdin_peer_argv
                .is_some_and(|a| a.iter().any(|x| set.matches(x)))
            {
                return false;
            }
        }
        one(&self.xattr, s.xattr)
            && one(&self.target_exe, s.target_exe)
            && one(&self.mount_source, s.mount_source)
            && one(&self.fstype, s.fstype)
            && one(&self.stdin_peer_exe, s.stdin_peer_exe)
            && one(&self.substituted_from_exe, s.substituted_from_exe)
            && one(&self.script, s.script)
            && one(&self.exe_built_by, s.exe_built_by)
    }
}

impl Conditions {
    /// The TLS and HTTP conditions (all hold when none is given).
    fn tls_http_match(&self, s: &Subject) -> bool {
        if let Some(directions) = &self.direction {
            let direction = s.tls.map(|t| t.direction).or(s.http.map(|h| h.direction));
            if !direction.is_some_and(|d| directions.contains(&d)) {
                return false;
            }
        }
        if let Some(peers) = &self.peer {
            match s.dest {
                Some(d) if peers.iter().any(|c| c.contains(d.ip())) => {}
                _ => return false,
            }
        }
        if let Some(set) = &self.tls_finding {
            let found = s
                .tls
                .is_some_and(|t| t.findings.iter().any(|f| set.matches(&f.kind)));
            if !found {
                return false;
            }
        }
        if self.method.is_none()
            && self.host.is_none()
            && self.status.is_none()
            && self.http_finding.is_none()
        {
            return true;
        }
        let Some(h) = s.http else {
            return false;
        };
        let one = |set: &Option<PatternSet>, v: Option<&str>| match set {
            None => true,
            Some(set) => v.is_some_and(|v| set.matches(v)),
        };
        if !(one(&self.method, h.method.as_deref()) && one(&self.host, h.host.as_deref())) {
            return false;
        }
        if let Some(ranges) = &self.status {
            if !h
                .status
                .is_some_and(|st| ranges.iter().any(|r| r.contains(st)))
            {
                return false;
            }
        }
        if let Some(set) = &self.http_finding {
            if !h.findings.iter().any(|f| set.matches(&f.kind)) {
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
