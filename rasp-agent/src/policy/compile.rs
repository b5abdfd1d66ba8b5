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
    Policy, Rule,
};
use crate::loader::interest::Interest;

/// A port range wider than this sends every connect rather than filling the port map.
const MAX_PORTS_PER_RULE: u32 = 1024;

pub fn interest(policies: &[Policy]) -> Interest {
    let mut out = Interest::default();
    for rule in policies.iter().flat_map(|p| &p.rules) {
        match rule.event {
            EventType::Exec => {}
            EventType::FileOpen => file_interest(rule, &mut out),
            EventType::LibraryLoad => library_interest(rule, &mut out),
            EventType::Connect => connect_interest(rule, &mut out),
        }
    }
    out.file_names.sort();
    out.file_names.dedup();
    out.lib_names.sort();
    out.lib_names.dedup();
    out.ports.sort_unstable();
    out.ports.dedup();
    out
}

/// Where a pattern's anchoring literal sits, counted from the end of the path.
enum Anchor {
    /// The file itself (`/etc/shadow` → `shadow`).
    Leaf(String),
    /// Its directory, with one single-component wildcard after it (`/root/.ssh/id_*`).
    Parent(String),
    /// Anywhere above (`/etc/**` → `etc`).
    Deeper(String),
    /// No literal component at all (`**`, `/memfd:*`): only "everything" covers it.
    None,
}

fn anchor(pattern: &str) -> Anchor {
    let components: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let is_literal = |c: &str| {
        Glob::new(c, GlobMode::Path)
            .ok()
            .and_then(|g| g.literal().map(str::to_string))
            .filter(|l| l == c)
    };
    for (from_end, c) in components.iter().rev().enumerate() {
        if let Some(lit) = is_literal(c) {
            let after = &components[components.len() - from_end..];
            return match (from_end, after) {
                (0, _) => Anchor::Leaf(lit),
                (1, [last]) if !last.contains("**") => Anchor::Parent(lit),
                _ => Anchor::Deeper(lit),
            };
        }
    }
    Anchor::None
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
        let (name, read_bits) = match anchor(pattern) {
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
        let mut v = 0;
        if read {
            v |= read_bits;
        }
        if write {
            v |= bits::WRITE_ANY_DEPTH;
        }
        if create {
            v |= bits::CREATE_ANY_DEPTH;
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
        match anchor(pattern) {
            Anchor::Leaf(n) => out.lib_names.push((n, bits::LIB_AT_LEAF)),
            Anchor::Parent(n) => out.lib_names.push((n, bits::LIB_AT_PARENT)),
            Anchor::Deeper(n) => out.lib_names.push((n, bits::LIB_ANY_DEPTH)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(patterns: &[&str]) -> Vec<String> {
        patterns
            .iter()
            .map(|p| match anchor(p) {
                Anchor::Leaf(n) => format!("leaf:{n}"),
                Anchor::Parent(n) => format!("parent:{n}"),
                Anchor::Deeper(n) => format!("deeper:{n}"),
                Anchor::None => "none".into(),
            })
            .collect()
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
                "deeper:etc",
                "leaf:credentials",
                "parent:.ssh",
                "none",
                "none",
                "leaf:token",
                "deeper:tmp",
            ]
        );
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
        assert!(has("etc", bits::WRITE_ANY_DEPTH));
        assert!(!has("tmp", bits::READ_AT_LEAF));
        assert!(i
            .v4
            .iter()
            .any(|(a, l)| a.octets() == [169, 254, 169, 254] && *l == 32));
        assert_eq!(i.connect_flags & bits::CONNECT_ALL, 0);
    }
}
