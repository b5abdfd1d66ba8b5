//! Enforce-mode `block` rules → the kernel's deny maps (`rasp_common::deny`). Unlike the
//! interest pre-filters, a deny entry is an exact decision taken without userspace, so a
//! rule goes to the kernel only when the kernel can decide *every* condition it has: its
//! target (an executable, a file, a library, a destination) named by exact path, by
//! directory subtree (`/dir/**`) or by file name in any directory (`*/nc`), an access mode,
//! address blocks and ports, and at most one uid. Anything else (argv, ancestry, globs in
//! the middle of a path, exceptions, selectors on containers) keeps the rule in userspace,
//! where it acts after the event, and `policy validate --kernel`, `status` and every
//! detection say so (`Rung`).
//!
//! Paths are resolved on the host (through `/proc/1/root` when the agent runs in a mount
//! namespace of its own) to (device, inode): a file replaced after a reload (a new inode) is
//! not covered until the next reload; name entries cover every directory, containers'
//! included.

use std::{
    fmt,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use rasp_common::{
    deny::{self as k, DenyEntry, InodeKey, PortSpan, DENY_PORT_SPANS},
    interest::{name_key, NameKey},
    limits::NAME_KEY_LEN,
};
use serde::{Deserialize, Serialize};

use super::{
    glob::{Glob, GlobMode},
    matcher::Field,
    net::{Cidr, PortRange},
    vocab::{Action, EventType, Mode},
    Policy, Rule,
};

/// What the running kernel can do about a rule's act, best first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rung", rename_all = "snake_case")]
pub enum Rung {
    /// BPF-LSM refuses it (-EPERM) before it happens; the process lives.
    Lsm,
    /// A cgroup socket hook refuses the connect/send (EPERM).
    CgroupSocket,
    /// Killed in the kernel at exec, before the new program runs (no BPF-LSM).
    KillAtExec,
    /// Killed in the kernel on the way back from the syscall: the act happened (no BPF-LSM).
    KillAtSyscall,
    /// Decided in userspace after the event: the process is killed afterwards.
    Userspace { reason: String },
}

impl Rung {
    /// Does the act not happen at all?
    pub fn prevents(&self) -> bool {
        matches!(self, Rung::Lsm | Rung::CgroupSocket | Rung::KillAtExec)
    }

    /// For people: what enforcing this rule does on this kernel.
    pub fn describe(&self) -> String {
        match self {
            Rung::Lsm => "refused in the kernel (BPF-LSM, EPERM); the process lives".into(),
            Rung::CgroupSocket => "refused in the kernel (cgroup socket hook, EPERM)".into(),
            Rung::KillAtExec => {
                "process killed in the kernel at exec, before the program runs (no BPF-LSM)"
                    .into()
            }
            Rung::KillAtSyscall => {
                "process killed in the kernel after the call, before it returns (no BPF-LSM): the act happens"
                    .into()
            }
            Rung::Userspace { reason } => {
                format!("decided in userspace after the event, process killed afterwards ({reason})")
            }
        }
    }
}

pub use crate::loader::deny::{DenyTable, KernelCapabilities, KernelRule};

/// A set's deny plan: what goes into the kernel's maps, and what the kernel does (or would
/// do) about each `block` rule.
#[derive(Clone, Debug, Default)]
pub struct DenyPlan {
    /// The maps' contents, and which rule each slot names.
    pub table: DenyTable,
    /// Every enforce-mode `block` rule and what the kernel does about it.
    pub rungs: Vec<(String, Rung)>,
    /// Every audit-mode `block` rule and what the kernel would do about it in enforce mode
    /// (nothing is installed for them): the words of their `audited` detections.
    pub audit_rungs: Vec<(String, Rung)>,
}

impl DenyPlan {
    /// "audit mode: would ..." for an audit-mode `block` rule of this plan.
    pub fn audit_text(&self, rule_id: &str) -> Option<String> {
        let (_, rung) = self.audit_rungs.iter().find(|(r, _)| r == rule_id)?;
        Some(format!("audit mode: would block ({})", rung.describe()))
    }
}

/// Why a rule stays in userspace.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NotDecidable(String);

impl fmt::Display for NotDecidable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn no(why: impl Into<String>) -> NotDecidable {
    NotDecidable(why.into())
}

/// A rule's kernel entries before keys from other rules are merged in.
#[derive(Default)]
struct Entries {
    inodes: Vec<(InodeKey, DenyEntry)>,
    names: Vec<(NameKey, DenyEntry)>,
    v4: Vec<(u32, [u8; 4], DenyEntry)>,
    v6: Vec<(u32, [u8; 16], DenyEntry)>,
    ports: Vec<(u16, DenyEntry)>,
}

/// Resolves a path as the host sees it, to (device, inode) and whether it is a directory.
pub trait Resolver {
    fn resolve(&self, path: &str) -> Option<(InodeKey, bool)>;
    /// Mount points strictly below `dir` (their roots are other filesystems' inodes).
    fn mounts_below(&self, dir: &str) -> Vec<String>;
}

/// The host's filesystem, through `/proc/1/root` when that is readable (the agent in a
/// container with the host PID namespace), else the agent's own root.
pub struct HostFs {
    root: PathBuf,
}

impl HostFs {
    pub fn detect() -> HostFs {
        let host = Path::new("/proc/1/root");
        let root = match std::fs::metadata(host.join(".")) {
            Ok(_) => host.to_path_buf(),
            Err(_) => PathBuf::from("/"),
        };
        HostFs { root }
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

impl Resolver for HostFs {
    fn resolve(&self, path: &str) -> Option<(InodeKey, bool)> {
        let meta = std::fs::metadata(self.full(path)).ok()?;
        let dev = meta.dev();
        Some((
            InodeKey {
                ino: meta.ino(),
                dev: k::kernel_dev(libc::major(dev), libc::minor(dev)),
                _pad: 0,
            },
            meta.is_dir(),
        ))
    }

    fn mounts_below(&self, dir: &str) -> Vec<String> {
        let Ok(text) = std::fs::read_to_string("/proc/1/mountinfo")
            .or_else(|_| std::fs::read_to_string("/proc/self/mountinfo"))
        else {
            return Vec::new();
        };
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        text.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(unescape_mountinfo)
            .filter(|m| m.starts_with(&prefix))
            .collect()
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The deny plan of a set: every enforce-mode `block` rule the kernel can decide, in slots;
/// the rung of every enforce-mode `block` rule given `caps`.
pub fn plan(
    policies: &[Policy],
    set_version: u64,
    caps: KernelCapabilities,
    fs: &dyn Resolver,
) -> DenyPlan {
    let mut out = DenyPlan::default();
    out.table.generation = (set_version & 0xffff) as u32;
    for policy in policies {
        for rule in &policy.rules {
            if rule.action != Action::Block {
                continue;
            }
            if rule.effective_mode(policy) != Mode::Enforce {
                // Judged as if enforced, against a scratch plan: nothing is installed.
                let rung = match rule_entries(policy, rule, 0, out.table.generation, fs) {
                    Err(reason) => Rung::Userspace {
                        reason: reason.to_string(),
                    },
                    Ok(_) => kernel_rung(rule.event, caps),
                };
                out.audit_rungs.push((rule.id.clone(), rung));
                continue;
            }
            let rung = match rule_entries(
                policy,
                rule,
                out.table.rules.len() as u32,
                out.table.generation,
                fs,
            ) {
                Err(reason) => Rung::Userspace {
                    reason: reason.to_string(),
                },
                Ok(entries) => match merge(&mut out.table, entries) {
                    Err(reason) => Rung::Userspace {
                        reason: reason.to_string(),
                    },
                    Ok(()) => {
                        out.table.rules.push(KernelRule {
                            policy: policy.name.clone(),
                            rule: rule.id.clone(),
                        });
                        kernel_rung(rule.event, caps)
                    }
                },
            };
            out.rungs.push((rule.id.clone(), rung));
        }
    }
    out
}

/// What the kernel gives a decidable rule of this event type.
fn kernel_rung(event: EventType, caps: KernelCapabilities) -> Rung {
    match (event, caps.lsm) {
        (_, true) => Rung::Lsm,
        (EventType::Connect, false) if caps.cgroup_socket => Rung::CgroupSocket,
        (EventType::Connect, false) => Rung::Userspace {
            reason: "neither BPF-LSM nor the cgroup socket hooks are attached".into(),
        },
        (EventType::Exec, false) => Rung::KillAtExec,
        (EventType::FileOpen | EventType::LibraryLoad, false) => Rung::KillAtSyscall,
        (EventType::SqlQuery, false) => Rung::Userspace {
            reason: "queries are held and decided in userspace".into(),
        },
        (EventType::Tls | EventType::Http, false) => Rung::Userspace {
            reason: "plaintext is judged in userspace after the call returned".into(),
        },
        // `rule_entries` refuses these: never reached with a plan entry.
        (_, false) => Rung::Userspace {
            reason: OBSERVED_ONLY.into(),
        },
    }
}

/// Why a rule on the issue-19 events stays in userspace: their hooks observe (at syscall
/// exit, after the act); no kernel program refuses them yet.
const OBSERVED_ONLY: &str =
    "this event is observed after the act (syscall exit); no kernel program refuses it yet";

/// Add `e` to the plan unless one of its keys is already another rule's, or the kernel's
/// maps would overflow (then the rule stays in userspace rather than half-installed).
fn merge(out: &mut DenyTable, e: Entries) -> Result<(), NotDecidable> {
    for (what, have, add, max) in [
        (
            "denied files",
            out.inodes.len(),
            e.inodes.len(),
            k::MAX_DENY_INODES,
        ),
        (
            "denied file names",
            out.names.len(),
            e.names.len(),
            k::MAX_DENY_NAMES,
        ),
        (
            "denied IPv4 blocks",
            out.v4.len(),
            e.v4.len(),
            k::MAX_DENY_CIDRS,
        ),
        (
            "denied IPv6 blocks",
            out.v6.len(),
            e.v6.len(),
            k::MAX_DENY_CIDRS,
        ),
        (
            "denied ports",
            out.ports.len(),
            e.ports.len(),
            k::MAX_DENY_PORTS,
        ),
    ] {
        if have + add > max as usize {
            return Err(no(format!(
                "the kernel's map of {what} is full ({max} entries)"
            )));
        }
    }
    let taken = |rule: u32| {
        let index = k::slot_index(rule) as usize;
        out.rules
            .get(index)
            .map(|r| r.rule.clone())
            .unwrap_or_default()
    };
    for (key, _) in &e.inodes {
        if let Some((_, other)) = out.inodes.iter().find(|(k2, _)| k2 == key) {
            return Err(no(format!(
                "its file is also denied by rule `{}` (one kernel entry per file)",
                taken(other.rule)
            )));
        }
    }
    for (key, _) in &e.names {
        if let Some((_, other)) = out.names.iter().find(|(k2, _)| k2 == key) {
            return Err(no(format!(
                "its file name is also denied by rule `{}` (one kernel entry per name)",
                taken(other.rule)
            )));
        }
    }
    for (p, a, _) in &e.v4 {
        if let Some((_, _, other)) = out.v4.iter().find(|(p2, a2, _)| p2 == p && a2 == a) {
            return Err(no(format!(
                "its address block is also denied by rule `{}`",
                taken(other.rule)
            )));
        }
    }
    for (p, a, _) in &e.v6 {
        if let Some((_, _, other)) = out.v6.iter().find(|(p2, a2, _)| p2 == p && a2 == a) {
            return Err(no(format!(
                "its address block is also denied by rule `{}`",
                taken(other.rule)
            )));
        }
    }
    for (port, _) in &e.ports {
        if let Some((_, other)) = out.ports.iter().find(|(p2, _)| p2 == port) {
            return Err(no(format!(
                "its port is also denied by rule `{}`",
                taken(other.rule)
            )));
        }
    }
    out.inodes.extend(e.inodes);
    out.names.extend(e.names);
    out.v4.extend(e.v4);
    out.v6.extend(e.v6);
    out.ports.extend(e.ports);
    Ok(())
}

fn rule_entries(
    policy: &Policy,
    rule: &Rule,
    index: u32,
    generation: u32,
    fs: &dyn Resolver,
) -> Result<Entries, NotDecidable> {
    if !rule.exceptions.is_empty() {
        return Err(no("it has exceptions, which only userspace evaluates"));
    }
    if index > 0xffff {
        return Err(no("more than 65535 kernel rules"));
    }
    let mut uid = None;
    for field in policy.selector.fields() {
        match field {
            Field::Uid => uid = Some(single_uid(policy.selector.values(field))?),
            other => {
                return Err(no(format!(
                    "its policy's selector uses `{}`, which only userspace evaluates",
                    other.name()
                )))
            }
        }
    }
    let target = match rule.event {
        EventType::Exec => Field::Exe,
        EventType::FileOpen | EventType::LibraryLoad => Field::Path,
        EventType::Connect => Field::Cidr,
        EventType::SqlQuery => return Err(no("queries are held and decided in userspace")),
        EventType::FileChange
        | EventType::Ptrace
        | EventType::Namespace
        | EventType::Mount
        | EventType::UnixConnect
        | EventType::KernelModule
        | EventType::BpfLoad
        | EventType::IoUring
        | EventType::Socket => return Err(no(OBSERVED_ONLY)),
        EventType::Tls | EventType::Http => {
            return Err(no(
                "plaintext is judged in userspace after the call returned",
            ))
        }
        EventType::Fork | EventType::Exit | EventType::AgentHealth => {
            return Err(no("policies cannot name this event"))
        }
    };
    for field in rule.conditions.fields() {
        match field {
            Field::Uid => {
                let u = single_uid(rule.conditions.values(field))?;
                if uid.is_some_and(|s| s != u) {
                    return Err(no("its policy and rule name different uids"));
                }
                uid = Some(u);
            }
            f if f == target => {}
            Field::Access if rule.event == EventType::FileOpen => {}
            Field::Port if rule.event == EventType::Connect => {}
            other => {
                return Err(no(format!(
                    "it matches on `{}`, which only userspace evaluates",
                    other.name()
                )))
            }
        }
    }
    let mut entry = DenyEntry {
        rule: k::rule_slot(generation, index),
        ..DenyEntry::default()
    };
    if let Some(u) = uid {
        entry.flags |= k::DENY_UID;
        entry.uid = u;
    }
    match rule.event {
        EventType::Exec => {
            entry.acts = k::ACT_EXEC;
            file_entries(rule.conditions.values(Field::Exe), entry, fs)
        }
        EventType::LibraryLoad => {
            entry.acts = k::ACT_MMAP_EXEC;
            file_entries(rule.conditions.values(Field::Path), entry, fs)
        }
        EventType::FileOpen => {
            entry.acts = open_acts(rule.conditions.values(Field::Access));
            file_entries(rule.conditions.values(Field::Path), entry, fs)
        }
        EventType::Connect => {
            entry.acts = k::ACT_CONNECT;
            net_entries(
                rule.conditions.values(Field::Cidr),
                rule.conditions.values(Field::Port),
                entry,
            )
        }
        // Refused with the target above.
        _ => unreachable!("returned above"),
    }
}

fn single_uid(values: Option<&[String]>) -> Result<u32, NotDecidable> {
    match values {
        Some([one]) => one
            .parse()
            .map_err(|_| no(format!("uid {one:?} is not a number"))),
        _ => Err(no("it names several uids (the kernel entry holds one)")),
    }
}

/// The acts of a file rule's `access` list (all of them when absent).
fn open_acts(access: Option<&[String]>) -> u32 {
    let Some(access) = access else {
        return k::ACT_OPEN_READ | k::ACT_OPEN_WRITE | k::ACT_OPEN_CREATE;
    };
    access.iter().fold(0, |acts, a| {
        acts | match a.as_str() {
            "read" => k::ACT_OPEN_READ,
            "write" | "truncate" => k::ACT_OPEN_WRITE,
            "create" => k::ACT_OPEN_CREATE,
            _ => 0,
        }
    })
}

fn file_entries(
    patterns: Option<&[String]>,
    entry: DenyEntry,
    fs: &dyn Resolver,
) -> Result<Entries, NotDecidable> {
    let Some(patterns) = patterns else {
        return Err(no(
            "it names no file (denying every file is not done in the kernel)",
        ));
    };
    let mut out = Entries::default();
    for pattern in patterns {
        let glob = Glob::new(pattern, GlobMode::Path)
            .map_err(|e| no(format!("pattern {pattern:?}: {e}")))?;
        if let Some(path) = glob.literal() {
            let Some((key, _)) = fs.resolve(path) else {
                return Err(no(format!(
                    "{path} does not exist on this host (files are denied by inode)"
                )));
            };
            out.inodes.push((key, entry));
        } else if let Some(dir) = glob.subtree_dir() {
            let Some((key, true)) = fs.resolve(dir) else {
                return Err(no(format!(
                    "{dir} is not a directory on this host (subtrees are denied by the directory's inode)"
                )));
            };
            let subtree = DenyEntry {
                flags: entry.flags | k::DENY_SUBTREE,
                ..entry
            };
            out.inodes.push((key, subtree));
            // Other filesystems mounted below: their roots are not the directory's
            // descendants in the dentry tree the kernel walks.
            for mount in fs.mounts_below(dir) {
                if let Some((key, true)) = fs.resolve(&mount) {
                    out.inodes.push((key, subtree));
                }
            }
        } else if let Some(name) = glob.dir_suffix().filter(|n| !n.contains('/')) {
            if name.len() >= NAME_KEY_LEN - 1 {
                return Err(no(format!(
                    "file name {name:?} is longer than the kernel's name keys ({} bytes)",
                    NAME_KEY_LEN - 2
                )));
            }
            out.names.push((name_key(name.as_bytes()), entry));
        } else {
            return Err(no(format!(
                "pattern {pattern:?} is neither an exact path, a `/dir/**` subtree nor a `*/name` file name"
            )));
        }
    }
    Ok(out)
}

fn net_entries(
    cidrs: Option<&[String]>,
    ports: Option<&[String]>,
    mut entry: DenyEntry,
) -> Result<Entries, NotDecidable> {
    let mut spans = Vec::new();
    for p in ports.unwrap_or(&[]) {
        let r = PortRange::parse(p).map_err(|e| no(format!("port {p:?}: {e}")))?;
        spans.push(PortSpan { lo: r.lo, hi: r.hi });
    }
    let mut out = Entries::default();
    match cidrs {
        Some(cidrs) => {
            if spans.len() > DENY_PORT_SPANS {
                return Err(no(format!(
                    "it names more than {DENY_PORT_SPANS} port ranges with its addresses"
                )));
            }
            for (i, s) in spans.iter().enumerate() {
                entry.ports[i] = *s;
            }
            entry.nports = spans.len() as u32;
            for c in cidrs {
                match Cidr::parse(c).map_err(|e| no(format!("cidr {c:?}: {e}")))? {
                    Cidr::V4 { net, mask } => {
                        out.v4.push((mask.count_ones(), net.to_be_bytes(), entry))
                    }
                    Cidr::V6 { net, mask } => {
                        out.v6.push((mask.count_ones(), net.to_be_bytes(), entry))
                    }
                }
            }
        }
        None => {
            let total: u32 = spans.iter().map(|s| u32::from(s.hi - s.lo) + 1).sum();
            if spans.is_empty() {
                return Err(no(
                    "it names no address or port (denying every connect is not done in the kernel)",
                ));
            }
            if total > k::MAX_DENY_PORTS {
                return Err(no(format!(
                    "its ports cover {total} values; the kernel holds {} per set",
                    k::MAX_DENY_PORTS
                )));
            }
            for s in spans {
                for port in s.lo..=s.hi {
                    out.ports.push((port, entry));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A fake host: paths with inodes, directories, mounts.
    struct Fs {
        files: HashMap<&'static str, (u64, bool)>,
        mounts: Vec<&'static str>,
    }

    impl Resolver for Fs {
        fn resolve(&self, path: &str) -> Option<(InodeKey, bool)> {
            self.files.get(path).map(|&(ino, dir)| {
                (
                    InodeKey {
                        ino,
                        dev: 7,
                        _pad: 0,
                    },
                    dir,
                )
            })
        }

        fn mounts_below(&self, dir: &str) -> Vec<String> {
            let prefix = format!("{dir}/");
            self.mounts
                .iter()
                .filter(|m| m.starts_with(&prefix))
                .map(|m| m.to_string())
                .collect()
        }
    }

    fn fs() -> Fs {
        Fs {
            files: HashMap::from([
                ("/usr/bin/nc", (10, false)),
                ("/tmp", (20, true)),
                ("/tmp/sub", (21, true)),
                ("/etc/shadow", (30, false)),
            ]),
            mounts: vec!["/tmp/sub"],
        }
    }

    fn policies(yaml: &str) -> Vec<Policy> {
        super::super::parse_files(&[("t.yaml".to_string(), yaml.to_string())])
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    const SET: &str = r#"
name: t
version: 1
mode: enforce
rules:
  - id: no-nc
    severity: high
    event: exec
    match: { exe: ["/usr/bin/nc", "*/ncat"] }
    action: block
  - id: no-tmp-exec
    severity: high
    event: exec
    match: { exe: ["/tmp/**"] }
    action: block
  - id: no-shadow-write
    severity: high
    event: file_open
    match: { path: ["/etc/shadow"], access: [write] }
    action: block
  - id: no-metadata
    severity: high
    event: connect
    match: { cidr: ["169.254.169.254/32"], port: [80] }
    action: block
  - id: argv-rule
    severity: high
    event: exec
    match: { exe: ["*/curl"], argv: ["-o"] }
    action: block
  - id: excepted
    severity: high
    event: exec
    match: { exe: ["*/wget"] }
    except:
      - uid: [0]
    action: block
  - id: alert-only
    severity: low
    event: exec
    match: { exe: ["*/ls"] }
"#;

    #[test]
    fn decidable_rules_become_entries_and_the_rest_say_why_not() {
        let p = policies(SET);
        let plan = plan(&p, 3, KernelCapabilities::default(), &fs());
        let rung = |id: &str| {
            plan.rungs
                .iter()
                .find(|(r, _)| r == id)
                .map(|(_, g)| g.clone())
                .unwrap_or_else(|| panic!("no rung for {id}"))
        };
        assert_eq!(rung("no-nc"), Rung::KillAtExec);
        assert_eq!(rung("no-tmp-exec"), Rung::KillAtExec);
        assert_eq!(rung("no-shadow-write"), Rung::KillAtSyscall);
        assert!(matches!(rung("no-metadata"), Rung::Userspace { .. }));
        assert!(matches!(rung("argv-rule"), Rung::Userspace { reason } if reason.contains("argv")));
        assert!(
            matches!(rung("excepted"), Rung::Userspace { reason } if reason.contains("exceptions"))
        );
        assert!(plan.rungs.iter().all(|(r, _)| r != "alert-only"));
        // The exec rule: one inode, one name; the subtree and the mount below it.
        let nc = plan
            .table
            .inodes
            .iter()
            .find(|(k, _)| k.ino == 10)
            .expect("nc inode");
        assert_eq!(nc.1.acts, k::ACT_EXEC);
        assert_eq!(k::slot_generation(nc.1.rule), 3);
        assert_eq!(
            plan.table.rules[k::slot_index(nc.1.rule) as usize].rule,
            "no-nc"
        );
        assert_eq!(plan.table.names.len(), 1);
        let subtrees: Vec<u64> = plan
            .table
            .inodes
            .iter()
            .filter(|(_, e)| e.flags & k::DENY_SUBTREE != 0)
            .map(|(k, _)| k.ino)
            .collect();
        assert_eq!(subtrees, [20, 21]);
        let shadow = plan
            .table
            .inodes
            .iter()
            .find(|(k, _)| k.ino == 30)
            .expect("shadow");
        assert_eq!(shadow.1.acts, k::ACT_OPEN_WRITE);
        assert_eq!(plan.table.v4.len(), 1);
        assert_eq!(plan.table.v4[0].0, 32);
        assert_eq!(plan.table.v4[0].1, [169, 254, 169, 254]);
        assert_eq!(plan.table.v4[0].2.nports, 1);
        assert!(plan.table.v4[0].2.port_covered(80) && !plan.table.v4[0].2.port_covered(443));
    }

    #[test]
    fn capabilities_choose_the_rung() {
        let p = policies(SET);
        let lsm = KernelCapabilities {
            lsm: true,
            cgroup_socket: true,
        };
        let plan_lsm = plan(&p, 1, lsm, &fs());
        let cg = KernelCapabilities {
            lsm: false,
            cgroup_socket: true,
        };
        let plan_cg = plan(&p, 1, cg, &fs());
        let rung = |plan: &DenyPlan, id: &str| {
            plan.rungs
                .iter()
                .find(|(r, _)| r == id)
                .map(|(_, g)| g.clone())
        };
        assert_eq!(rung(&plan_lsm, "no-nc"), Some(Rung::Lsm));
        assert_eq!(rung(&plan_lsm, "no-metadata"), Some(Rung::Lsm));
        assert_eq!(rung(&plan_cg, "no-metadata"), Some(Rung::CgroupSocket));
        assert!(Rung::CgroupSocket.prevents() && !Rung::KillAtSyscall.prevents());
    }

    #[test]
    fn missing_files_and_shared_keys_stay_in_userspace() {
        let p = policies(
            r#"
name: t
version: 1
mode: enforce
rules:
  - id: a
    severity: high
    event: exec
    match: { exe: ["/usr/bin/nc"] }
    action: block
  - id: b
    severity: high
    event: exec
    match: { exe: ["/usr/bin/nc"] }
    action: block
  - id: c
    severity: high
    event: exec
    match: { exe: ["/opt/missing"] }
    action: block
"#,
        );
        let plan = plan(&p, 1, KernelCapabilities::default(), &fs());
        assert_eq!(plan.rungs[0].1, Rung::KillAtExec);
        assert!(matches!(&plan.rungs[1].1, Rung::Userspace { reason } if reason.contains("`a`")));
        assert!(
            matches!(&plan.rungs[2].1, Rung::Userspace { reason } if reason.contains("does not exist"))
        );
        assert_eq!(plan.table.rules.len(), 1);
    }

    #[test]
    fn audit_block_rules_say_what_enforcing_would_do_and_install_nothing() {
        let p = policies(
            r#"
name: t
version: 1
mode: audit
rules:
  - id: would-block
    severity: high
    event: exec
    match: { exe: ["/usr/bin/nc"] }
    action: block
  - id: would-kill-after
    severity: high
    event: exec
    match: { exe: ["/usr/bin/nc"], argv: ["-e"] }
    action: block
"#,
        );
        let plan = plan(&p, 1, KernelCapabilities::default(), &fs());
        assert!(
            plan.rungs.is_empty() && plan.table.inodes.is_empty() && plan.table.rules.is_empty()
        );
        let text = plan.audit_text("would-block").expect("audit text");
        assert!(
            text.starts_with("audit mode: would block (process killed in the kernel at exec"),
            "{text}"
        );
        let text = plan.audit_text("would-kill-after").expect("audit text");
        assert!(text.contains("decided in userspace"), "{text}");
        assert!(plan.audit_text("nope").is_none());
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/x\\"), r"/x\\");
    }
}
