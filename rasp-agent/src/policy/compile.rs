//! Policies → the kernel's pre-filter (`loader::interest::Interest`): for every rule on
//! file opens, library loads and connects, what the kernel must let through so the rule can
//! be decided in userspace. Always a superset: selectors and exceptions are ignored here, and
//! a path pattern is reduced to one literal component it cannot match without.

use std::net::IpAddr;

use rasp_common::interest as bits;

use super::{
    glob::{Glob, GlobMode},
    matcher::Field,
    net::{Cidr, PortRange},
    vocab::EventType,
    Policy, PolicyError, Rule,
};
use crate::events::hooks::{self, ChangeOp, ModuleOp, MountOp, Named, NsOp, PtraceOp, SocketOp};
use crate::loader::interest::HookInterest;
use crate::loader::{Interest, OverCapacity, Usage};

/// A port range this wide or wider sends every connect rather than filling the port map
/// (which holds `limits::MAX_CONNECT_PORTS`: one range must never fill most of it).
const MAX_PORTS_PER_RULE: u32 = 128;

pub fn interest(policies: &[Policy]) -> Interest {
    let mut out = Interest::default();
    for rule in policies.iter().flat_map(|p| &p.rules) {
        rule_interest(rule, &mut out);
    }
    out.hooks.path_names.sort();
    out.hooks.path_names.dedup();
    out.hooks.hints.sort();
    out.hooks.hints.dedup();
    out.file_names.sort();
    out.file_names.dedup();
    out.lib_names.sort();
    out.lib_names.dedup();
    out.ports.sort_unstable();
    out.ports.dedup();
    out
}

fn rule_interest(rule: &Rule, out: &mut Interest) {
    match rule.event {
        EventType::Exec => {}
        EventType::FileOpen => file_interest(rule, out),
        EventType::LibraryLoad => library_interest(rule, out),
        EventType::Connect => connect_interest(rule, out),
        // Queries are captured for every libpq; no kernel filter to widen.
        // and plaintext for every libssl.
        EventType::SqlQuery | EventType::Tls | EventType::Http => {}
        EventType::FileChange => change_interest(rule, &mut out.hooks),
        EventType::UnixConnect => unix_interest(rule, &mut out.hooks),
        EventType::Ptrace => ptrace_interest(rule, &mut out.hooks),
        EventType::Namespace => namespace_interest(rule, &mut out.hooks),
        EventType::Mount => op_interest::<MountOp>(rule, &mut out.hooks, bits::HOOK_MOUNT),
        EventType::KernelModule => op_interest::<ModuleOp>(rule, &mut out.hooks, bits::HOOK_MODULE),
        EventType::BpfLoad => out.hooks.words[bits::HOOK_BPF as usize] |= bits::HOOK_ENABLED,
        EventType::IoUring => io_uring_interest(rule, &mut out.hooks),
        EventType::Socket => socket_interest(rule, &mut out.hooks),
        // Not in `vocab::EVENT_TYPES`: no rule looks at them.
        EventType::Fork | EventType::Exit | EventType::AgentHealth => {}
    }
}

/// A set whose pre-filter does not fit the kernel maps (`rasp_common::limits`) cannot be
/// applied: its file, library or connect rules would silently get no events. One error per
/// map that overflows, at the rule that first takes it past its capacity, with the set's
/// total.
pub fn capacity_errors(policies: &[Policy]) -> Vec<PolicyError> {
    let mut usage = Usage::default();
    let mut first: Vec<(OverCapacity, &Policy, &Rule)> = Vec::new();
    for policy in policies {
        for rule in &policy.rules {
            let mut one = Interest::default();
            rule_interest(rule, &mut one);
            usage.add(&one);
            for over in usage.over_capacity() {
                if !first.iter().any(|(o, _, _)| o.what == over.what) {
                    first.push((over, policy, rule));
                }
            }
        }
    }
    let totals = usage.over_capacity();
    first
        .into_iter()
        .map(|(over, policy, rule)| {
            let needed = totals
                .iter()
                .find(|t| t.what == over.what)
                .map_or(over.needed, |t| t.needed);
            PolicyError {
                file: policy.file.clone(),
                line: rule.line,
                column: rule.column,
                message: format!(
                    "rule `{}` takes the kernel pre-filter for {} past its capacity: the set needs {needed}, the kernel map holds {}; the rules from here on would get no events. Use fewer distinct values, or wider patterns (a port range of {MAX_PORTS_PER_RULE} or more, a shorter CIDR prefix, a pattern anchored on a shared directory)",
                    rule.id, over.what, over.capacity
                ),
            }
        })
        .collect()
}

/// Where a pattern's anchoring literal sits, counted from the end of the path.
#[derive(Debug, PartialEq, Eq)]
enum Anchor {
    /// The file itself (`/etc/shadow` → `shadow`).
    Leaf(String),
    /// Its directory, with one single-component wildcard after it (`/root/.ssh/id_*`).
    Parent(String),
    /// Anywhere above (`/etc/cron.d/**` → `cron.d`).
    Deeper(String),
    /// No literal component at all (`**`, `/memfd:*`): only "everything" covers it.
    None,
}

/// A pattern's anchor, and whether that literal is the first component of a pattern rooted
/// at `/` (`/lib/**`, `/etc/**`): then a match has it right below the root, which the
/// kernel can test (`WRITE_AT_TOP`) instead of "at any depth".
fn anchor(pattern: &str) -> (Anchor, bool) {
    let components: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let is_literal = |c: &str| {
        Glob::new(c, GlobMode::Path)
            .ok()
            .and_then(|g| g.literal().map(str::to_string))
            .filter(|l| l == c)
    };
    for (from_end, c) in components.iter().rev().enumerate() {
        if let Some(lit) = is_literal(c) {
            let at_top = pattern.starts_with('/') && from_end + 1 == components.len();
            let after = &components[components.len() - from_end..];
            let anchor = match (from_end, after) {
                (0, _) => Anchor::Leaf(lit),
                (1, [last]) if !last.contains("**") => Anchor::Parent(lit),
                _ => Anchor::Deeper(lit),
            };
            return (anchor, at_top);
        }
    }
    (Anchor::None, false)
}

/// A pattern every match of which starts with `/memfd:`: its first component, right below
/// the root, starts with `interest::MEMFD_PREFIX`, which the kernel tests for itself
/// (`LIB_MEMFD`). Nothing in `/memfd:` is a glob metacharacter, so the prefix is literal.
fn is_memfd_pattern(pattern: &str) -> bool {
    pattern
        .strip_prefix('/')
        .is_some_and(|rest| rest.as_bytes().starts_with(bits::MEMFD_PREFIX))
}

fn paths(rule: &Rule) -> Option<&[String]> {
    rule.conditions.values(Field::Path)
}

fn file_interest(rule: &Rule, out: &mut Interest) {
    let access = rule.conditions.values(Field::Access);
    let wants = |name: &str| access.is_none_or(|a| a.iter().any(|v| v == name));
    let read = wants("read");
    let write = wants("write") || wants("truncate");
    let create = wants("create");
    let Some(patterns) = paths(rule) else {
        if read {
            out.file_flags |= bits::FILE_ALL_READ;
        }
        if write || create {
            out.file_flags |= bits::FILE_ALL_WRITE;
        }
        return;
    };
    for pattern in patterns {
        let (anchor, at_top) = anchor(pattern);
        let (name, read_bits) = match anchor {
            Anchor::Leaf(n) => (n, bits::READ_AT_LEAF),
            Anchor::Parent(n) => (n, bits::READ_AT_PARENT),
            Anchor::Deeper(n) => (n, bits::READ_ANY_DEPTH),
            Anchor::None => {
                if read {
                    out.file_flags |= bits::FILE_ALL_READ;
                }
                if write || create {
                    out.file_flags |= bits::FILE_ALL_WRITE;
                }
                continue;
            }
        };
        // Reads keep the anchor's own bit; a change is tested at the top where the
        // pattern puts the name there, at any depth otherwise.
        let (write_bit, create_bit) = if at_top {
            (bits::WRITE_AT_TOP, bits::CREATE_AT_TOP)
        } else {
            (bits::WRITE_ANY_DEPTH, bits::CREATE_ANY_DEPTH)
        };
        let mut v = 0;
        if read {
            v |= read_bits;
        }
        if write {
            v |= write_bit;
        }
        if create {
            v |= create_bit;
        }
        out.file_names.push((name, v));
    }
}

fn library_interest(rule: &Rule, out: &mut Interest) {
    let Some(patterns) = paths(rule) else {
        out.lib_flags |= bits::LIB_ALL;
        return;
    };
    for pattern in patterns {
        match anchor(pattern).0 {
            Anchor::Leaf(n) => out.lib_names.push((n, bits::LIB_AT_LEAF)),
            Anchor::Parent(n) => out.lib_names.push((n, bits::LIB_AT_PARENT)),
            Anchor::Deeper(n) => out.lib_names.push((n, bits::LIB_ANY_DEPTH)),
            Anchor::None if is_memfd_pattern(pattern) => out.lib_flags |= bits::LIB_MEMFD,
            Anchor::None => out.lib_flags |= bits::LIB_ALL,
        }
    }
}

fn connect_interest(rule: &Rule, out: &mut Interest) {
    let ports = rule.conditions.values(Field::Port);
    let cidrs = rule.conditions.values(Field::Cidr);
    if ports.is_none() && cidrs.is_none() {
        out.connect_flags |= bits::CONNECT_ALL;
        return;
    }
    // A rule with both needs both to match; sending on either is the superset. With only
    // one of them, that one alone decides.
    if let (Some(ports), None) | (Some(ports), Some(_)) = (ports, cidrs) {
        for p in ports {
            let Ok(range) = PortRange::parse(p) else {
                continue;
            };
            let (lo, hi) = (range.lo, range.hi);
            if u32::from(hi) - u32::from(lo) >= MAX_PORTS_PER_RULE {
                out.connect_flags |= bits::CONNECT_ALL;
                continue;
            }
            out.ports.extend(lo..=hi);
        }
    }
    for c in cidrs.unwrap_or_default() {
        let Ok(cidr) = Cidr::parse(c) else { continue };
        match cidr.network() {
            (IpAddr::V4(a), len) => {
                out.v4.push((a, len));
                // The same destination through a dual-stack socket: ::ffff:a.b.c.d.
                out.v6.push((a.to_ipv6_mapped(), 96 + len));
            }
            (IpAddr::V6(a), len) => out.v6.push((a, len)),
        }
    }
}

/// The operations a rule names, or every one of the vocabulary when it names none.
fn operations<T: Named + PartialEq>(rule: &Rule) -> Vec<T> {
    match rule.conditions.values(Field::Operation) {
        Some(names) => names.iter().filter_map(|n| T::from_name(n)).collect(),
        None => T::NAMES.iter().map(|(_, v)| *v).collect(),
    }
}

fn word(h: &mut HookInterest, index: u32) -> &mut u32 {
    &mut h.words[index as usize]
}

/// File changes: the operations' bits; then per rule, what makes a change of it worth
/// sending without looking at its path (mode bits, an xattr name, or nothing: every such
/// change), or the names its path patterns cannot match without.
fn change_interest(rule: &Rule, h: &mut HookInterest) {
    let ops: Vec<ChangeOp> = operations(rule);
    let op_bits = ops.iter().fold(0u32, |m, op| m | 1 << op.kernel());
    *word(h, bits::HOOK_CHANGE) |= bits::HOOK_ENABLED | op_bits;
    if let Some(patterns) = paths(rule) {
        for pattern in patterns {
            match anchor(pattern).0 {
                Anchor::Leaf(n) => {
                    h.hints.push((bits::HINT_CHANGE_LEAF, n.clone()));
                    h.path_names.push((n, bits::PATH_CHANGE_LEAF));
                }
                Anchor::Parent(n) | Anchor::Deeper(n) => {
                    h.hints.push((bits::HINT_CHANGE_ANY, n.clone()));
                    h.path_names.push((n, bits::PATH_CHANGE_ANY));
                }
                Anchor::None => *word(h, bits::HOOK_CHANGE_ALL) |= op_bits,
            }
        }
        return;
    }
    for op in ops {
        let bit = 1u32 << op.kernel();
        match op {
            ChangeOp::Chmod if rule.conditions.mode_mask().is_some() => {
                *word(h, bits::HOOK_CHMOD_MODES) |= rule.conditions.mode_mask().unwrap_or(0);
            }
            ChangeOp::Setxattr => match rule.conditions.values(Field::Xattr) {
                Some(names) if names.iter().all(|n| is_literal(n, GlobMode::Text)) => {
                    *word(h, bits::HOOK_XATTR_NAMES) |= bits::HOOK_ENABLED;
                    h.hints
                        .extend(names.iter().map(|n| (bits::HINT_XATTR, n.clone())));
                }
                _ => *word(h, bits::HOOK_CHANGE_ALL) |= bit,
            },
            _ => *word(h, bits::HOOK_CHANGE_ALL) |= bit,
        }
    }
}

fn is_literal(pattern: &str, mode: GlobMode) -> bool {
    Glob::new(pattern, mode)
        .ok()
        .and_then(|g| g.literal().map(|l| l == pattern))
        .unwrap_or(false)
}

fn unix_interest(rule: &Rule, h: &mut HookInterest) {
    *word(h, bits::HOOK_UNIX) |= bits::HOOK_ENABLED;
    let Some(patterns) = paths(rule) else {
        *word(h, bits::HOOK_UNIX) |= bits::HOOK_ALL;
        return;
    };
    for pattern in patterns {
        match anchor(pattern).0 {
            Anchor::Leaf(n) => h.hints.push((bits::HINT_UNIX_LEAF, n)),
            Anchor::Parent(n) | Anchor::Deeper(n) => {
                h.hints.push((bits::HINT_UNIX_ANY, n));
                *word(h, bits::HOOK_UNIX) |= bits::HOOK_UNIX_DIRS;
            }
            Anchor::None => *word(h, bits::HOOK_UNIX) |= bits::HOOK_ALL,
        }
    }
}

fn ptrace_interest(rule: &Rule, h: &mut HookInterest) {
    let classes = operations::<PtraceOp>(rule)
        .iter()
        .fold(0u32, |m, op| m | op.class());
    *word(h, bits::HOOK_PTRACE) |= bits::HOOK_ENABLED | classes;
}

fn namespace_interest(rule: &Rule, h: &mut HookInterest) {
    use rasp_common::record::{NS_OP_SETNS, NS_OP_UNSHARE};
    let ops: Vec<NsOp> = operations(rule);
    for op in &ops {
        let bit = match op {
            NsOp::Setns => NS_OP_SETNS,
            NsOp::Unshare => NS_OP_UNSHARE,
        };
        *word(h, bits::HOOK_NAMESPACE) |= bits::HOOK_ENABLED | 1 << bit;
    }
    if ops.contains(&NsOp::Unshare) {
        let flags = match rule.conditions.values(Field::Namespaces) {
            Some(names) => hooks::NAMESPACES
                .iter()
                .filter(|(n, _)| names.iter().any(|x| x == n))
                .fold(0u32, |m, (_, bit)| m | bit),
            None => u32::MAX,
        };
        *word(h, bits::HOOK_UNSHARE_FLAGS) |= flags;
    }
}

/// Families switched per operation, `1 << MOUNT_OP_*` / `MODULE_OP_*`.
fn op_interest<T: Named + PartialEq + KernelOp>(rule: &Rule, h: &mut HookInterest, index: u32) {
    for op in operations::<T>(rule) {
        *word(h, index) |= bits::HOOK_ENABLED | 1 << op.kernel_op();
    }
}

/// The kernel's number of an operation (its bit in the family's word).
trait KernelOp {
    fn kernel_op(self) -> u32;
}

impl KernelOp for MountOp {
    fn kernel_op(self) -> u32 {
        use rasp_common::record as r;
        match self {
            MountOp::Mount => r::MOUNT_OP_MOUNT,
            MountOp::Fsopen => r::MOUNT_OP_FSOPEN,
        }
    }
}

impl KernelOp for ModuleOp {
    fn kernel_op(self) -> u32 {
        use rasp_common::record as r;
        match self {
            ModuleOp::Load => r::MODULE_OP_INIT,
            ModuleOp::LoadFile => r::MODULE_OP_FINIT,
            ModuleOp::Unload => r::MODULE_OP_DELETE,
        }
    }
}

/// Packet and raw sockets: the classes the rule names (both without `operation`).
fn socket_interest(rule: &Rule, h: &mut HookInterest) {
    for op in operations::<SocketOp>(rule) {
        *word(h, bits::HOOK_SOCKET) |= bits::HOOK_ENABLED
            | match op {
                SocketOp::Packet => bits::SOCKET_CLASS_PACKET,
                SocketOp::Raw => bits::SOCKET_CLASS_RAW,
            };
    }
}

fn io_uring_interest(rule: &Rule, h: &mut HookInterest) {
    *word(h, bits::HOOK_IO_URING) |= bits::HOOK_ENABLED;
    let opcodes: Vec<u32> = match rule.conditions.values(Field::Operation) {
        Some(names) => names
            .iter()
            .filter_map(|n| hooks::io_uring_opcode(n))
            .collect(),
        None => (0..64).collect(),
    };
    for op in opcodes {
        let (index, bit) = if op < 32 {
            (bits::HOOK_IO_URING_OPS_LO, op)
        } else {
            (bits::HOOK_IO_URING_OPS_HI, op - 32)
        };
        *word(h, index) |= 1 << bit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(patterns: &[&str]) -> Vec<String> {
        patterns
            .iter()
            .map(|p| {
                let (anchor, at_top) = anchor(p);
                let top = if at_top { "@top" } else { "" };
                match anchor {
                    Anchor::Leaf(n) => format!("leaf:{n}{top}"),
                    Anchor::Parent(n) => format!("parent:{n}{top}"),
                    Anchor::Deeper(n) => format!("deeper:{n}{top}"),
                    Anchor::None => format!("none{top}"),
                }
            })
            .collect()
    }

    fn rule(yaml: &str) -> Vec<Policy> {
        let text = format!(
            "name: t\nversion: 1\nmode: audit\nrules:\n  - id: r\n    severity: low\n{yaml}"
        );
        super::super::parse_policies("t.yaml", &text).expect("test policy parses")
    }

    #[test]
    fn anchors_pick_the_literal_a_match_cannot_avoid() {
        assert_eq!(
            names(&[
                "/etc/shadow",
                "/root/.ssh/id_*",
                "/etc/**",
                "*/.aws/credentials",
                "/home/*/.ssh/id_*",
                "**",
                "/memfd:*",
                "/var/run/secrets/**/token",
                "/tmp/*/x*/y*",
            ]),
            [
                "leaf:shadow",
                "parent:.ssh",
                "deeper:etc@top",
                "leaf:credentials",
                "parent:.ssh",
                "none",
                "none",
                "leaf:token",
                "deeper:tmp@top",
            ]
        );
        assert_eq!(
            names(&[
                "/etc",
                "/etc/*",
                "/var/lib/**",
                "*/lib/**",
                "**/lib/**",
                "/**/lib/**"
            ]),
            [
                "leaf:etc@top",
                "parent:etc@top",
                "deeper:lib",
                "deeper:lib",
                "deeper:lib",
                "deeper:lib",
            ]
        );
    }

    #[test]
    fn root_anchored_writes_are_tested_at_the_top() {
        let i = interest(&rule(
            "    event: file_open\n    match:\n      path: [\"/lib/**\", \"/var/spool/cron/**\"]\n      access: [write, create]\n",
        ));
        assert_eq!(
            i.file_names,
            [
                (
                    "cron".to_string(),
                    bits::WRITE_ANY_DEPTH | bits::CREATE_ANY_DEPTH
                ),
                ("lib".to_string(), bits::WRITE_AT_TOP | bits::CREATE_AT_TOP),
            ]
        );
        // Reads keep their anchor: no read bit is tested at the top.
        let i = interest(&rule(
            "    event: file_open\n    match:\n      path: [\"/etc/**\"]\n",
        ));
        assert_eq!(
            i.file_names,
            [(
                "etc".to_string(),
                bits::READ_ANY_DEPTH | bits::WRITE_AT_TOP | bits::CREATE_AT_TOP
            )]
        );
    }

    #[test]
    fn memfd_library_patterns_use_the_kernel_memfd_test() {
        assert!(is_memfd_pattern("/memfd:**"));
        assert!(is_memfd_pattern("/memfd:doublemapper*"));
        assert!(!is_memfd_pattern("memfd:**"));
        assert!(!is_memfd_pattern("*/memfd:**"));
        assert!(!is_memfd_pattern("/memfd*"));
        assert!(!is_memfd_pattern("/tmp/memfd:x"));
        let i = interest(&rule(
            "    event: library_load\n    match:\n      path: [\"/memfd:**\"]\n",
        ));
        assert_eq!((i.lib_flags, i.lib_names.len()), (bits::LIB_MEMFD, 0));
        // A pattern that could match anywhere still needs every mapping.
        let i = interest(&rule(
            "    event: library_load\n    match:\n      path: [\"**/memfd:*\"]\n",
        ));
        assert_eq!(i.lib_flags, bits::LIB_ALL);
    }

    fn parse(text: &str) -> Result<Vec<Policy>, Vec<PolicyError>> {
        super::super::parse_policies("cap.yaml", text)
    }

    #[test]
    fn a_set_past_a_kernel_map_capacity_is_a_positioned_error() {
        use rasp_common::limits::{MAX_CONNECT_PORTS, MAX_FILE_NAMES};
        // 400 ports in each of two rules (ranges below the every-connect width): the second
        // takes the port map past 512.
        let text = "name: cap\nversion: 1\nmode: audit\nrules:\n\
            \x20 - id: first\n    severity: low\n    event: connect\n    match:\n      port: [\"1000-1099\", \"1100-1199\", \"1200-1299\", \"1300-1399\"]\n\
            \x20 - id: second\n    severity: low\n    event: connect\n    match:\n      port: [\"2000-2099\", \"2100-2199\", \"2200-2299\", \"2300-2399\"]\n";
        let errors = parse(text).expect_err("800 ports do not fit");
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!((e.line, e.column), (10, 5), "{e}");
        assert!(e.message.contains("rule `second`"), "{e}");
        assert!(
            e.message.contains(&format!(
                "needs 800, the kernel map holds {MAX_CONNECT_PORTS}"
            )),
            "{e}"
        );

        // File names: one over the map, across two policies; the error names the total.
        let names = |from: u32, to: u32| {
            (from..to)
                .map(|i| format!("\"/srv/f{i}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let half = MAX_FILE_NAMES / 2;
        let text = format!(
            "name: a\nversion: 1\nmode: audit\nrules:\n  - id: a\n    severity: low\n    event: file_open\n    match:\n      path: [{}]\n\
             ---\nname: b\nversion: 1\nmode: audit\nrules:\n  - id: b\n    severity: low\n    event: file_open\n    match:\n      path: [{}]\n",
            names(0, half),
            names(half, MAX_FILE_NAMES + 1)
        );
        let errors = parse(&text).expect_err("one file name too many");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("rule `b`"), "{}", errors[0]);
        assert!(
            errors[0].message.contains(&format!(
                "needs {}, the kernel map holds {MAX_FILE_NAMES}",
                MAX_FILE_NAMES + 1
            )),
            "{}",
            errors[0]
        );
        // Exactly at capacity is fine.
        let text = format!(
            "name: a\nversion: 1\nmode: audit\nrules:\n  - id: a\n    severity: low\n    event: file_open\n    match:\n      path: [{}]\n",
            names(0, MAX_FILE_NAMES)
        );
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn default_policies_keep_unrelated_opens_out_of_the_kernel_filter() {
        let policies = super::super::default_policies().expect("defaults load");
        let i = interest(&policies);
        // No default file rule needs every read or write: the names decide.
        assert_eq!(
            i.file_flags & (bits::FILE_ALL_READ | bits::FILE_ALL_WRITE),
            0,
            "{i:?}"
        );
        let has = |n: &str, bit: u32| i.file_names.iter().any(|(k, v)| k == n && v & bit != 0);
        assert!(has("shadow", bits::READ_AT_LEAF));
        assert!(has(".ssh", bits::READ_AT_PARENT));
        assert!(has("etc", bits::WRITE_AT_TOP));
        assert!(!has("tmp", bits::READ_AT_LEAF));
        // `/lib/**` and friends: at the top only, so /var/lib and /usr/local/lib writes
        // are decided by the names alone.
        for top in ["lib", "usr", "bin", "sbin", "boot", "etc"] {
            assert!(has(top, bits::WRITE_AT_TOP), "{top}: {i:?}");
            assert!(!has(top, bits::WRITE_ANY_DEPTH), "{top}: {i:?}");
        }
        // Libraries: names plus the memfd test, never every executable mapping.
        assert_eq!(i.lib_flags, bits::LIB_MEMFD, "{i:?}");
        assert!(i
            .lib_names
            .iter()
            .any(|(k, v)| k == "shm" && *v == bits::LIB_ANY_DEPTH));
        assert!(i
            .v4
            .iter()
            .any(|(a, l)| a.octets() == [169, 254, 169, 254] && *l == 32));
        assert_eq!(i.connect_flags & bits::CONNECT_ALL, 0);
    }

    /// The issue-19 hooks under the defaults: every family switched on, and each filtered
    /// by what the rules say, never "send everything" for the hot file changes.
    #[test]
    fn default_policies_filter_the_new_hooks_in_the_kernel() {
        use rasp_common::record as r;
        let policies = super::super::default_policies().expect("defaults load");
        let h = interest(&policies).hooks;
        let w = |i: u32| h.words[i as usize];
        for family in [
            bits::HOOK_CHANGE,
            bits::HOOK_UNIX,
            bits::HOOK_PTRACE,
            bits::HOOK_NAMESPACE,
            bits::HOOK_MOUNT,
            bits::HOOK_MODULE,
            bits::HOOK_BPF,
            bits::HOOK_IO_URING,
            bits::HOOK_SOCKET,
        ] {
            assert_ne!(w(family) & bits::HOOK_ENABLED, 0, "family word {family}");
        }
        // Both socket classes, and nothing else (a stream or datagram socket never leaves).
        assert_eq!(
            w(bits::HOOK_SOCKET),
            bits::HOOK_ENABLED | bits::SOCKET_CLASS_PACKET | bits::SOCKET_CLASS_RAW
        );
        // Unlinks, renames and truncations are sent only for watched names.
        for op in [
            r::CHANGE_OP_UNLINK,
            r::CHANGE_OP_RENAME,
            r::CHANGE_OP_TRUNCATE,
        ] {
            assert_ne!(w(bits::HOOK_CHANGE) & 1 << op, 0, "op {op} watched");
            assert_eq!(
                w(bits::HOOK_CHANGE_ALL) & 1 << op,
                0,
                "op {op} path-filtered"
            );
        }
        // chmod by its setuid bit, setxattr by the capability attribute's name.
        assert_eq!(w(bits::HOOK_CHMOD_MODES), 0o4000);
        assert_eq!(w(bits::HOOK_XATTR_NAMES), bits::HOOK_ENABLED);
        let hinted = |set: u32, name: &str| h.hints.iter().any(|(s, n)| *s == set && n == name);
        assert!(hinted(bits::HINT_XATTR, "security.capability"));
        assert!(hinted(bits::HINT_CHANGE_LEAF, ".bash_history"));
        assert!(hinted(bits::HINT_CHANGE_ANY, "log"));
        assert!(hinted(bits::HINT_UNIX_LEAF, "docker.sock"));
        assert_eq!(w(bits::HOOK_UNIX) & bits::HOOK_ALL, 0);
        // Only user namespaces make an unshare worth sending.
        assert_eq!(w(bits::HOOK_UNSHARE_FLAGS), 0x1000_0000);
        // io_uring: openat (18) and connect (16), not read (22).
        let ops = w(bits::HOOK_IO_URING_OPS_LO);
        assert_ne!(ops & 1 << 18, 0);
        assert_ne!(ops & 1 << 16, 0);
        assert_eq!(ops & 1 << 22, 0);
    }
}
