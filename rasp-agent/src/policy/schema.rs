//! From the positioned YAML tree to typed policies, by hand, so that every complaint names
//! the exact key or value and says what to write instead. All problems of a file are
//! collected; a document with any problem yields no policy.

use super::{
    glob::{Glob, GlobMode},
    matcher::{Access, Conditions, Field},
    net::{Cidr, PortRange, StatusRange},
    vocab::{Action, EventType, KillScope, Mode, QuarantineMode, Severity, EVENT_TYPES},
    yaml::{self, Entry, Kind, Node, Pos},
    Policy, PolicyError, Rule,
};

/// The kernel keeps 15 characters of a task name (TASK_COMM_LEN - 1).
const COMM_MAX: usize = 15;

const POLICY_KEYS: &[&str] = &[
    "name",
    "version",
    "description",
    "mode",
    "selector",
    "shape_learning",
    "rules",
];

/// How long a service's query shapes are learned before `new_shape: true` fires, when the
/// policy does not say (`shape_learning`).
pub const DEFAULT_SHAPE_LEARNING: std::time::Duration = std::time::Duration::from_secs(3600);
const RULE_KEYS: &[&str] = &[
    "id",
    "description",
    "severity",
    "event",
    "match",
    "except",
    "action",
    "scope",
    "quarantine",
    "mode",
];

const MODES: &[(&str, Mode)] = &[("audit", Mode::Audit), ("enforce", Mode::Enforce)];
const SEVERITIES: &[(&str, Severity)] = &[
    ("info", Severity::Info),
    ("low", Severity::Low),
    ("medium", Severity::Medium),
    ("high", Severity::High),
    ("critical", Severity::Critical),
];
const SCOPES: &[(&str, KillScope)] = &[
    ("process", KillScope::Process),
    ("process-group", KillScope::ProcessGroup),
    ("container", KillScope::Container),
];
const QUARANTINE_MODES: &[(&str, QuarantineMode)] = &[
    ("freeze", QuarantineMode::Freeze),
    ("kill", QuarantineMode::Kill),
];
const ACTIONS: &[(&str, Action)] = &[
    ("alert", Action::Alert),
    ("block", Action::Block),
    ("kill", Action::Kill),
    ("quarantine", Action::Quarantine),
];

/// Words people reach for that mean one of our keys.
const ALIASES: &[(&str, &str)] = &[
    ("exception", "except"),
    ("exceptions", "except"),
    ("allow", "except"),
    ("unless", "except"),
    ("matches", "match"),
    ("conditions", "match"),
    ("when", "match"),
    ("type", "event"),
    ("kind", "event"),
    ("event_type", "event"),
    ("level", "severity"),
    ("priority", "severity"),
    ("enforcement", "mode"),
    ("cmd", "cmdline"),
    ("command", "cmdline"),
    ("command_line", "cmdline"),
    ("args", "argv"),
    ("arguments", "argv"),
    ("parent", "parent_exe"),
    ("ancestor", "ancestor_exe"),
    ("ancestors", "ancestor_exe"),
    ("file", "path"),
    ("filename", "path"),
    ("ports", "port"),
    ("cidrs", "cidr"),
    ("ip", "cidr"),
    ("addr", "cidr"),
    ("address", "cidr"),
    ("dest", "cidr"),
    ("flags", "access"),
    ("container", "in_container"),
    ("pod", "pod_name"),
    ("container_image", "image"),
    ("image_name", "image"),
    ("ns", "namespace"),
    ("k8s_namespace", "namespace"),
    ("pod_namespace", "namespace"),
    ("user", "uid"),
    ("uids", "uid"),
    ("exes", "exe"),
    ("paths", "path"),
];

/// A policy name or rule id and where it was written: collected even from documents with
/// problems, so a duplicate is reported in the same run as the other problems.
pub(super) struct Ident {
    pub rule: bool,
    pub value: String,
    pub policy: String,
    pub file: String,
    pub pos: Pos,
}

pub(super) fn parse_file(file: &str, text: &str) -> (Vec<Policy>, Vec<PolicyError>, Vec<Ident>) {
    let mut ctx = Ctx {
        file,
        errors: Vec::new(),
        idents: Vec::new(),
        shape_learning: DEFAULT_SHAPE_LEARNING,
    };
    let (docs, yaml_errors) = yaml::parse(text);
    for e in yaml_errors {
        ctx.err(e.pos, e.message);
    }
    let mut policies = Vec::new();
    let mut seen_doc = false;
    for doc in &docs {
        if doc.kind == Kind::Null {
            continue;
        }
        seen_doc = true;
        if let Some(p) = policy(&mut ctx, doc) {
            policies.push(p);
        }
    }
    if !seen_doc && ctx.errors.is_empty() {
        ctx.err(
            Pos {
                line: 1,
                col: 1,
                index: 0,
            },
            "no policy in this file; a policy is a map with `name`, `version`, `mode` and `rules` (see policies/README.md)",
        );
    }
    (policies, ctx.errors, ctx.idents)
}

struct Ctx<'f> {
    file: &'f str,
    errors: Vec<PolicyError>,
    idents: Vec<Ident>,
    /// The policy being parsed's `shape_learning` (for its `new_shape` conditions).
    shape_learning: std::time::Duration,
}

impl Ctx<'_> {
    fn err(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.col,
            message: message.into(),
        });
    }
}

/// Conditions with where their keys were written.
struct Parsed {
    conds: Conditions,
    keys: Vec<(Field, Pos)>,
    pos: Pos,
    /// No problem found in the block: safe to compare with others.
    clean: bool,
}

impl Parsed {
    fn key_pos(&self, f: Field) -> Option<Pos> {
        self.keys.iter().find(|(k, _)| *k == f).map(|(_, p)| *p)
    }
}

#[derive(Clone, Copy)]
enum Scope {
    Selector,
    /// A rule's `match` or `except`, with its event when that parsed.
    Rule(Option<EventType>),
}

fn policy(ctx: &mut Ctx, node: &Node) -> Option<Policy> {
    let Kind::Map(entries) = &node.kind else {
        ctx.err(
            node.pos,
            format!(
                "a policy must be a map with `name`, `version`, `mode` and `rules`, found {}",
                node.describe()
            ),
        );
        return None;
    };
    let before = ctx.errors.len();
    let (mut name, mut version, mut description, mut mode, mut selector) =
        (None, None, None, None, None);
    let mut rules_entry = None;
    ctx.shape_learning = DEFAULT_SHAPE_LEARNING;
    for e in entries {
        match e.key.as_str() {
            "shape_learning" => {
                if let Some(d) = duration(ctx, e) {
                    ctx.shape_learning = d;
                }
            }
            "name" => name = slug(ctx, e, "policy name", "server-shells"),
            "version" => version = positive_u32(ctx, e),
            "description" => description = text(ctx, e),
            "mode" => mode = enum_value(ctx, e, MODES),
            "selector" => selector = conditions_entry(ctx, e, Scope::Selector, "`selector`"),
            "rules" => rules_entry = Some(e),
            _ => unknown_key(
                ctx,
                e,
                "a policy",
                POLICY_KEYS,
                "put it under `selector:` (which processes the policy applies to) or in a rule's `match:`",
            ),
        }
    }
    let policy_name = name.clone().unwrap_or_default();
    if let Some(n) = &name {
        let pos = entries
            .iter()
            .find(|e| e.key == "name")
            .map_or(node.pos, |e| e.value.pos);
        ctx.idents.push(Ident {
            rule: false,
            value: n.clone(),
            policy: n.clone(),
            file: ctx.file.to_string(),
            pos,
        });
    }
    let mut rules = Vec::new();
    if let Some(e) = rules_entry {
        match &e.value.kind {
            Kind::Seq(items) if items.is_empty() => ctx.err(
                e.value.pos,
                "`rules` is an empty list; add at least one rule (`- id: ...`)",
            ),
            Kind::Seq(items) => {
                for item in items {
                    if let Some(r) = rule(ctx, item, selector.as_ref(), &policy_name) {
                        rules.push(r);
                    }
                }
            }
            Kind::Null => ctx.err(
                e.key_pos,
                "`rules` has no value; add a list of rules, each starting with `- id: ...`",
            ),
            _ => ctx.err(
                e.value.pos,
                format!(
                    "`rules` must be a list of rules (each starting with `- id: ...`), found {}",
                    e.value.describe()
                ),
            ),
        }
    }
    missing(
        ctx,
        node,
        entries,
        "policy",
        &[
            ("name", "add `name: <lowercase-with-dashes>`"),
            (
                "version",
                "add `version: 1` and increase it on every change",
            ),
            (
                "mode",
                "add `mode: audit` (report only) or `mode: enforce` (take the rules' actions)",
            ),
            ("rules", "add `rules:` with at least one rule"),
        ],
    );
    if ctx.errors.len() != before {
        return None;
    }
    Some(Policy {
        name: name?,
        version: version?,
        description,
        mode: mode?,
        selector: selector.map(|p| p.conds).unwrap_or_default(),
        rules,
        file: ctx.file.to_string(),
        line: node.pos.line,
        column: node.pos.col,
    })
}

fn rule(ctx: &mut Ctx, node: &Node, selector: Option<&Parsed>, policy: &str) -> Option<Rule> {
    let Kind::Map(entries) = &node.kind else {
        ctx.err(
            node.pos,
            format!(
                "a rule must be a map with `id`, `severity`, `event` and `match`, found {}",
                node.describe()
            ),
        );
        return None;
    };
    let before = ctx.errors.len();
    let event_entry = entries.iter().find(|e| e.key == "event");
    let events = EVENT_TYPES.map(|ev| (ev.name(), ev));
    let event = event_entry.and_then(|e| enum_value(ctx, e, &events));
    let scope = Scope::Rule(event);
    let (mut id, mut description, mut severity, mut action, mut mode) =
        (None, None, None, None, None);
    let (mut scope_key, mut quarantine_key) = (None, None);
    let mut matched: Option<Parsed> = None;
    let mut excepts: Vec<Parsed> = Vec::new();
    for e in entries {
        match e.key.as_str() {
            "event" => {}
            "id" => {
                id = slug(ctx, e, "rule id", "shell-from-server");
                if let Some(v) = &id {
                    ctx.idents.push(Ident {
                        rule: true,
                        value: v.clone(),
                        policy: policy.to_string(),
                        file: ctx.file.to_string(),
                        pos: e.value.pos,
                    });
                }
            }
            "description" => description = text(ctx, e),
            "severity" => severity = enum_value(ctx, e, SEVERITIES),
            "action" => action = enum_value(ctx, e, ACTIONS),
            "scope" => scope_key = enum_value(ctx, e, SCOPES).map(|s| (s, e.value.pos)),
            "quarantine" => {
                quarantine_key = enum_value(ctx, e, QUARANTINE_MODES).map(|q| (q, e.value.pos))
            }
            "mode" => mode = enum_value(ctx, e, MODES),
            "match" => matched = conditions_entry(ctx, e, scope, "`match`"),
            "except" => excepts = except_blocks(ctx, e, scope),
            _ => unknown_key(
                ctx,
                e,
                "a rule",
                RULE_KEYS,
                "put it under `match:` (or in an `except` block)",
            ),
        }
    }
    // From the vocabulary, so that a new event type is offered as soon as it exists.
    let event_hint = format!(
        "add `event:` with one of {}",
        EVENT_TYPES.map(|t| t.name()).join(", ")
    );
    missing(
        ctx,
        node,
        entries,
        "rule",
        &[
            (
                "id",
                "add `id: <lowercase-with-dashes>`, unique across all policies",
            ),
            (
                "severity",
                "add `severity:` with one of info, low, medium, high, critical",
            ),
            ("event", &event_hint),
        ],
    );
    if let Some((_, pos)) = scope_key.filter(|_| action != Some(Action::Kill)) {
        ctx.err(
            pos,
            "`scope` says what a `kill` kills; this rule's action is not `kill`: remove `scope`, or use `action: kill`",
        );
    }
    if let Some((_, pos)) = quarantine_key.filter(|_| action != Some(Action::Quarantine)) {
        ctx.err(
            pos,
            "`quarantine` says what a quarantine does after cutting the network; this rule's action is not `quarantine`: remove it, or use `action: quarantine`",
        );
    }
    // Blocks that cancel the rule: only judged on blocks that parsed cleanly.
    let empty = Parsed {
        conds: Conditions::default(),
        keys: Vec::new(),
        pos: node.pos,
        clean: true,
    };
    let m = matched.as_ref().unwrap_or(&empty);
    if m.clean {
        for x in excepts.iter().filter(|x| x.clean && !x.conds.is_empty()) {
            if x.conds.covers(&m.conds) {
                ctx.err(
                    x.pos,
                    "this `except` block matches every event the rule's `match` matches, so the rule can never fire; narrow it with a condition `match` does not have, or remove it",
                );
            }
        }
        if let Some(sel) = selector.filter(|s| s.clean) {
            selector_conflicts(ctx, sel, m);
        }
    }
    if ctx.errors.len() != before {
        return None;
    }
    Some(Rule {
        id: id?,
        description,
        severity: severity?,
        event: event?,
        conditions: matched.map(|p| p.conds).unwrap_or_default(),
        exceptions: excepts.into_iter().map(|p| p.conds).collect(),
        action: action.unwrap_or(Action::Alert),
        scope: scope_key.map(|(s, _)| s).unwrap_or_default(),
        quarantine: quarantine_key.map(|(q, _)| q).unwrap_or_default(),
        mode,
        line: node.pos.line,
        column: node.pos.col,
    })
}

/// A field constrained by both the selector and the rule to disjoint literal values: the
/// rule can never fire. The classic case is `selector: exe: nginx` with a rule on `exe: sh`
/// for exec events, where the author meant `parent_exe`.
fn selector_conflicts(ctx: &mut Ctx, sel: &Parsed, m: &Parsed) {
    for (field, rule_pos) in &m.keys {
        let (Some(sv), Some(rv)) = (sel.conds.values(*field), m.conds.values(*field)) else {
            continue;
        };
        let literal = |v: &[String]| v.iter().all(|s| !s.contains(['*', '?', '[', '\\']));
        if !(literal(sv) && literal(rv)) || rv.iter().any(|r| sv.contains(r)) {
            continue;
        }
        let sel_line = sel.key_pos(*field).map_or(sel.pos.line, |p| p.line);
        let hint = if *field == Field::Exe {
            "; to match what those processes start, use `parent_exe` in the rule"
        } else {
            ""
        };
        ctx.err(
            *rule_pos,
            format!(
                "`{}` can never match: the policy's `selector` (line {sel_line}) only admits {}, and this rule requires {}{hint}",
                field.name(),
                show_list(sv),
                show_list(rv)
            ),
        );
    }
}

fn show_list(v: &[String]) -> String {
    v.iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn missing(ctx: &mut Ctx, node: &Node, entries: &[Entry], what: &str, keys: &[(&str, &str)]) {
    for (key, fix) in keys {
        if !entries.iter().any(|e| e.key == *key) {
            ctx.err(node.pos, format!("{what} is missing `{key}`: {fix}"));
        }
    }
}

/// `where_conditions_go`: what to tell someone who wrote a condition key at this level.
fn unknown_key(ctx: &mut Ctx, e: &Entry, what: &str, known: &[&str], where_conditions_go: &str) {
    let key = e.key.as_str();
    if let Some(f) = Field::from_name(key) {
        ctx.err(
            e.key_pos,
            format!("`{}` is a condition: {where_conditions_go}", f.name()),
        );
        return;
    }
    let msg = match suggest(key, known) {
        Some(s) => format!("unknown key `{key}` in {what}; did you mean `{s}`?"),
        None => format!(
            "unknown key `{key}` in {what}; known keys: {}",
            known.join(", ")
        ),
    };
    ctx.err(e.key_pos, msg);
}

/// The known word closest to `word`: same letters in another case, a known alias, or an edit
/// distance small for the word's length.
fn suggest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = word.to_ascii_lowercase().replace('-', "_");
    if let Some(k) = known.iter().find(|k| **k == lower) {
        return Some(k);
    }
    if let Some((_, target)) = ALIASES.iter().find(|(a, _)| *a == lower) {
        if let Some(k) = known.iter().find(|k| *k == target) {
            return Some(k);
        }
    }
    let limit = match lower.chars().count() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    known
        .iter()
        .map(|k| (levenshtein(&lower, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The scalar text of `e`'s value, or an error saying what was expected.
fn scalar<'n>(ctx: &mut Ctx, e: &'n Entry, expected: &str) -> Option<&'n str> {
    match &e.value.kind {
        Kind::Scalar { text, .. } => Some(text),
        Kind::Null => {
            ctx.err(
                e.key_pos,
                format!("`{}` has no value; write {expected}", e.key),
            );
            None
        }
        _ => {
            ctx.err(
                e.value.pos,
                format!(
                    "`{}` must be {expected}, found {}",
                    e.key,
                    e.value.describe()
                ),
            );
            None
        }
    }
}

fn text(ctx: &mut Ctx, e: &Entry) -> Option<String> {
    scalar(ctx, e, "some text (or remove the key)").map(String::from)
}

fn slug(ctx: &mut Ctx, e: &Entry, what: &str, example: &str) -> Option<String> {
    let s = scalar(ctx, e, &format!("a name like `{example}`"))?;
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        return Some(s.to_string());
    }
    let mut fixed = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            fixed.push(c.to_ascii_lowercase());
        } else if !fixed.ends_with('-') {
            fixed.push('-');
        }
    }
    let fixed = fixed.trim_matches('-');
    let fix = if fixed.is_empty() {
        format!("like \"{example}\"")
    } else {
        format!("\"{fixed}\"")
    };
    ctx.err(
        e.value.pos,
        format!("{what} {s:?} may only use lowercase letters, digits and `-`; write {fix}"),
    );
    None
}

/// A duration like `30m`, `1h`, `2h 30m`, `0s`.
fn duration(ctx: &mut Ctx, e: &Entry) -> Option<std::time::Duration> {
    let expected = "a duration like `30m`, `1h` or `0s`";
    let text = scalar(ctx, e, expected)?;
    match humantime::parse_duration(text) {
        Ok(d) => Some(d),
        Err(err) => {
            ctx.err(
                e.value.pos,
                format!("`{}` must be {expected}: {text:?} is not ({err})", e.key),
            );
            None
        }
    }
}

fn positive_u32(ctx: &mut Ctx, e: &Entry) -> Option<u32> {
    let expected = "a positive integer (1, 2, ...)";
    scalar(ctx, e, expected)?;
    let n = match &e.value.kind {
        Kind::Scalar {
            text, plain: true, ..
        } => yaml::parse_int(text),
        _ => None,
    };
    match n.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0) {
        Some(n) => Some(n),
        None => {
            ctx.err(
                e.value.pos,
                format!(
                    "`{}` must be {expected}, found {}",
                    e.key,
                    e.value.describe()
                ),
            );
            None
        }
    }
}

fn enum_value<T: Copy>(ctx: &mut Ctx, e: &Entry, options: &[(&str, T)]) -> Option<T> {
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let expected = format!("one of {}", names.join(", "));
    let s = scalar(ctx, e, &expected)?;
    if let Some((_, v)) = options.iter().find(|(n, _)| *n == s) {
        return Some(*v);
    }
    let hint = suggest(s, &names)
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    ctx.err(
        e.value.pos,
        format!("unknown {} `{s}`; use {expected}{hint}", e.key),
    );
    None
}

fn conditions_entry(ctx: &mut Ctx, e: &Entry, scope: Scope, what: &str) -> Option<Parsed> {
    match &e.value.kind {
        Kind::Null => {
            ctx.err(
                e.key_pos,
                format!(
                    "{what} has no conditions; indent its conditions under it (like `exe: [\"/usr/bin/x\"]`), or remove the key"
                ),
            );
            None
        }
        _ => conditions(ctx, &e.value, scope, what),
    }
}

fn except_blocks(ctx: &mut Ctx, e: &Entry, scope: Scope) -> Vec<Parsed> {
    match &e.value.kind {
        Kind::Null => {
            ctx.err(
                e.key_pos,
                "`except` has no blocks; add a list of condition blocks (`- parent_exe: [...]`), or remove the key",
            );
            Vec::new()
        }
        Kind::Seq(items) if items.is_empty() => {
            ctx.err(
                e.value.pos,
                "`except` is an empty list; add condition blocks (`- parent_exe: [...]`), or remove the key",
            );
            Vec::new()
        }
        Kind::Seq(items) => items
            .iter()
            .filter_map(|n| conditions(ctx, n, scope, "this `except` block"))
            .collect(),
        Kind::Map(_) => conditions(ctx, &e.value, scope, "this `except` block")
            .into_iter()
            .collect(),
        Kind::Scalar { .. } => {
            ctx.err(
                e.value.pos,
                format!(
                    "`except` must be a list of condition blocks (`- parent_exe: [...]`), found {}",
                    e.value.describe()
                ),
            );
            Vec::new()
        }
    }
}

fn conditions(ctx: &mut Ctx, node: &Node, scope: Scope, what: &str) -> Option<Parsed> {
    let Kind::Map(entries) = &node.kind else {
        ctx.err(
            node.pos,
            format!(
                "{what} must be a map of conditions (like `exe: [\"/usr/bin/x\"]`), found {}",
                node.describe()
            ),
        );
        return None;
    };
    let before = ctx.errors.len();
    if entries.is_empty() {
        let fix = match (what, scope) {
            ("`selector`", _) => "remove it to apply the policy to every process".to_string(),
            ("`match`", Scope::Rule(Some(ev))) => {
                format!("remove it to match every {} event", ev.name())
            }
            ("`match`", _) => "remove it to match every event of the rule's type".to_string(),
            _ => "it would exclude every event, so the rule could never fire; add conditions or remove it".to_string(),
        };
        ctx.err(node.pos, format!("{what} is empty; {fix}"));
    }
    let mut conds = Conditions::default();
    let mut keys = Vec::new();
    for e in entries {
        let Some(field) = Field::from_name(&e.key) else {
            let allowed: Vec<&str> = Field::ALL
                .iter()
                .filter(|f| match scope {
                    Scope::Selector => f.in_selector(),
                    Scope::Rule(_) => true,
                })
                .map(|f| f.name())
                .collect();
            let key = e.key.as_str();
            let msg = if matches!(scope, Scope::Rule(_)) && RULE_KEYS.contains(&key) {
                format!(
                    "`{key}` belongs to the rule, not to {what}: move it out one level (to the indentation of `match`)"
                )
            } else if let Some(s) = suggest(key, &allowed) {
                format!("unknown condition `{key}` in {what}; did you mean `{s}`?")
            } else {
                format!(
                    "unknown condition `{key}` in {what}; known conditions: {}",
                    allowed.join(", ")
                )
            };
            ctx.err(e.key_pos, msg);
            continue;
        };
        keys.push((field, e.key_pos));
        match scope {
            Scope::Selector if !field.in_selector() => {
                ctx.err(
                    e.key_pos,
                    format!(
                        "`{}` cannot be used in a selector, which chooses processes by exe, cgroup, container_id, pod_uid, container_name, image, pod_name, namespace, uid and in_container; put it in a rule's `match`",
                        field.name()
                    ),
                );
                continue;
            }
            Scope::Rule(Some(ev)) => {
                if let Some(evs) = field.events() {
                    if !evs.contains(&ev) {
                        let names: Vec<&str> = evs.iter().map(|e| e.name()).collect();
                        ctx.err(
                            e.key_pos,
                            format!(
                                "`{}` never matches `{}` events (only {} events have it), so this rule could never fire; remove it, or use it in a rule with `event: {}`",
                                field.name(),
                                ev.name(),
                                join_and(&names),
                                names[0]
                            ),
                        );
                        continue;
                    }
                }
            }
            _ => {}
        }
        field_values(ctx, &mut conds, field, e, scope);
    }
    if ctx.errors.len() == before {
        operation_conflicts(ctx, &conds, &keys);
    }
    Some(Parsed {
        conds,
        keys,
        pos: node.pos,
        clean: ctx.errors.len() == before,
    })
}

/// Conditions that only one operation of an event has, next to an `operation` list that
/// leaves it out: the rule could never fire.
fn operation_conflicts(ctx: &mut Ctx, conds: &Conditions, keys: &[(Field, Pos)]) {
    let Some(ops) = conds.values(Field::Operation) else {
        return;
    };
    for (field, needs) in [
        (Field::ModeBits, "chmod"),
        (Field::Xattr, "setxattr"),
        (Field::IntoHost, "setns"),
    ] {
        let Some((_, pos)) = keys.iter().find(|(f, _)| *f == field) else {
            continue;
        };
        if !ops.iter().any(|o| o == needs) {
            ctx.err(
                *pos,
                format!(
                    "`{}` is only known for `{needs}`, which the rule's `operation` ({}) leaves out, so this rule could never fire; add `{needs}` to `operation` or remove `{}`",
                    field.name(),
                    show_list(ops),
                    field.name()
                ),
            );
        }
    }
}

/// "a", "a and b", "a, b and c".
fn join_and(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The items of a list-valued condition (a single value counts as a list of one).
fn items<'n>(ctx: &mut Ctx, e: &'n Entry, example: &str) -> Option<Vec<&'n Node>> {
    let name = e.key.as_str();
    match &e.value.kind {
        Kind::Null => {
            ctx.err(
                e.key_pos,
                format!("`{name}` has no value; give a list like `{name}: {example}`, or remove the key"),
            );
            None
        }
        Kind::Seq(items) if items.is_empty() => {
            ctx.err(
                e.value.pos,
                format!("`{name}` is an empty list, so this condition can never match; list at least one value, or remove the key"),
            );
            None
        }
        Kind::Seq(items) => {
            let mut ok = true;
            for item in items {
                if !matches!(item.kind, Kind::Scalar { .. }) {
                    ctx.err(
                        item.pos,
                        format!(
                            "`{name}` items must be single values, found {}",
                            item.describe()
                        ),
                    );
                    ok = false;
                }
            }
            ok.then(|| items.iter().collect())
        }
        Kind::Scalar { .. } => Some(vec![&e.value]),
        Kind::Map(_) => {
            ctx.err(
                e.value.pos,
                format!("`{name}` must be a list like `{name}: {example}`, found a map"),
            );
            None
        }
    }
}

/// Each item of a list field parsed with `parse`, kept with its text; every bad item is an
/// error at its own position (its message after `prefix`). `None` if the value is no list.
fn parse_items<T>(
    ctx: &mut Ctx,
    e: &Entry,
    example: &str,
    parse: fn(&str) -> Result<T, String>,
    prefix: &str,
) -> Option<Vec<(String, T)>> {
    let mut out = Vec::new();
    for item in items(ctx, e, example)? {
        let t = item_text(item);
        match parse(t) {
            Ok(v) => out.push((t.to_string(), v)),
            Err(m) => ctx.err(item.pos, format!("{prefix}{m}")),
        }
    }
    Some(out)
}

fn item_text(n: &Node) -> &str {
    match &n.kind {
        Kind::Scalar { text, .. } => text,
        _ => "",
    }
}

fn field_values(ctx: &mut Ctx, conds: &mut Conditions, field: Field, e: &Entry, scope: Scope) {
    let before = ctx.errors.len();
    if field.is_bool() {
        let name = field.name();
        match &e.value.kind {
            Kind::Scalar {
                text, plain: true, ..
            } if yaml::parse_bool(text).is_some() => {
                conds.set_bool(field, yaml::parse_bool(text) == Some(true));
            }
            Kind::Null => ctx.err(
                e.key_pos,
                format!("`{name}` has no value; write `{name}: true` or `{name}: false`"),
            ),
            _ => ctx.err(
                e.value.pos,
                format!(
                    "`{name}` must be true or false, found {}",
                    e.value.describe()
                ),
            ),
        }
        return;
    }
    let vocabulary = match (field, scope) {
        (Field::Operation, Scope::Rule(Some(ev))) => ev.operations().map(|v| (v, ev.name())),
        // The event did not parse (reported there): nothing to check the names against.
        (Field::Operation, _) => return,
        _ => field.vocabulary().map(|v| (v, "")),
    };
    if let Some((known, event)) = vocabulary {
        let Some(items) = items(ctx, e, "[name]") else {
            return;
        };
        let mut names = Vec::new();
        for item in items {
            let t = item_text(item);
            match known.iter().find(|k| **k == t) {
                Some(k) => names.push(*k),
                None => {
                    let hint = suggest(t, &known)
                        .map(|n| format!(" (did you mean `{n}`?)"))
                        .unwrap_or_default();
                    let whose = if event.is_empty() {
                        String::new()
                    } else {
                        format!(" for `{event}` events")
                    };
                    ctx.err(
                        item.pos,
                        format!(
                            "unknown `{}` value `{t}`{whose}; use any of {}{hint}",
                            field.name(),
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        if ctx.errors.len() == before {
            conds.set_names(field, names);
        }
        return;
    }
    match field {
        Field::Uid => {
            let Some(items) = items(ctx, e, "[0, 1000]") else {
                return;
            };
            let mut uids = Vec::new();
            for item in items {
                let n = match &item.kind {
                    Kind::Scalar {
                        text, plain: true, ..
                    } => yaml::parse_int(text).and_then(|n| u32::try_from(n).ok()),
                    _ => None,
                };
                match n {
                    Some(n) => uids.push(n),
                    None => ctx.err(
                        item.pos,
                        format!(
                            "`uid` values must be numeric user ids (0 to 4294967295), found {}",
                            item.describe()
                        ),
                    ),
                }
            }
            if ctx.errors.len() == before {
                conds.set_uid(uids);
            }
        }
        Field::Access => {
            let Some(items) = items(ctx, e, "[write, create, truncate]") else {
                return;
            };
            let names: Vec<&str> = Access::NAMES.iter().map(|(n, _)| *n).collect();
            let mut access = Access::empty();
            for item in items {
                let t = item_text(item);
                match Access::NAMES.iter().find(|(n, _)| *n == t) {
                    Some((_, a)) => access = access | *a,
                    None => {
                        let hint = suggest(t, &names)
                            .map(|n| format!(" (did you mean `{n}`?)"))
                            .unwrap_or_default();
                        ctx.err(
                            item.pos,
                            format!(
                                "unknown access `{t}`; use any of read, write, create, truncate{hint}"
                            ),
                        );
                    }
                }
            }
            if ctx.errors.len() == before {
                conds.set_access(access);
            }
        }
        Field::NewShape => match &e.value.kind {
            Kind::Scalar {
                text, plain: true, ..
            } if yaml::parse_bool(text) == Some(true) => {
                conds.set_new_shape(ctx.shape_learning);
            }
            Kind::Scalar {
                text, plain: true, ..
            } if yaml::parse_bool(text) == Some(false) => ctx.err(
                e.value.pos,
                "`new_shape: false` would match every query (known shapes and shapes still being learned alike); remove the key",
            ),
            Kind::Null => ctx.err(
                e.key_pos,
                "`new_shape` has no value; write `new_shape: true` (with the policy's `shape_learning: 1h` as the learning window)",
            ),
            _ => ctx.err(
                e.value.pos,
                format!("`new_shape` must be true, found {}", e.value.describe()),
            ),
        },
        Field::SqlStatement => {
            let Some(items) = items(ctx, e, "[ddl, delete]") else {
                return;
            };
            let known = super::vocab::SQL_STATEMENTS;
            let mut kinds = Vec::new();
            for item in items {
                let t = item_text(item);
                if known.contains(&t) {
                    kinds.push(t.to_string());
                } else {
                    let hint = suggest(t, known)
                        .map(|n| format!(" (did you mean `{n}`?)"))
                        .unwrap_or_default();
                    ctx.err(
                        item.pos,
                        format!(
                            "unknown statement kind `{t}`; use any of {}{hint}",
                            known.join(", ")
                        ),
                    );
                }
            }
            if ctx.errors.len() == before {
                conds.set_sql_statements(kinds);
            }
        }
        Field::Port => {
            let parsed = parse_items(ctx, e, "[443, \"8000-9000\"]", PortRange::parse, "");
            if let Some(ports) = parsed.filter(|_| ctx.errors.len() == before) {
                conds.set_ports(ports);
            }
        }
        Field::Cidr => {
            let parsed = parse_items(ctx, e, "[\"169.254.169.254/32\"]", Cidr::parse, "`cidr` ");
            if let Some(cidrs) = parsed.filter(|_| ctx.errors.len() == before) {
                conds.set_cidrs(cidrs);
            }
        }
        Field::Peer => {
            let parsed = parse_items(ctx, e, "[\"10.0.0.0/8\"]", Cidr::parse, "`peer` ");
            if let Some(cidrs) = parsed.filter(|_| ctx.errors.len() == before) {
                conds.set_peers(cidrs);
            }
        }
        Field::Status => {
            let parsed = parse_items(ctx, e, "[401, \"500-599\"]", StatusRange::parse, "");
            if let Some(statuses) = parsed.filter(|_| ctx.errors.len() == before) {
                conds.set_statuses(statuses);
            }
        }
        Field::Direction => {
            let Some(items) = items(ctx, e, "[outbound]") else {
                return;
            };
            let mut directions = Vec::new();
            for item in items {
                let t = item_text(item);
                match crate::events::Direction::from_name(t) {
                    Some(d) => directions.push(d),
                    None => ctx.err(
                        item.pos,
                        format!("unknown direction `{t}`; use inbound (read by the process) or outbound (written by it)"),
                    ),
                }
            }
            if ctx.errors.len() == before {
                conds.set_directions(directions);
            }
        }
        _ => {
            let Some(mode) = field.glob_mode() else {
                return;
            };
            let example = match mode {
                GlobMode::Path => "[\"/usr/bin/x\", \"*/name\"]",
                GlobMode::Text => "[\"pattern*\"]",
            };
            let Some(items) = items(ctx, e, example) else {
                return;
            };
            let mut globs = Vec::new();
            for item in items {
                if let Some(g) = pattern(ctx, field, item) {
                    globs.push(g);
                }
            }
            if ctx.errors.len() == before {
                conds.set_patterns(field, globs);
            }
        }
    }
}

/// One pattern of a glob field, checked for what can never match.
/// `a`, `a and b`, `a, b and c`.
fn pattern(ctx: &mut Ctx, field: Field, item: &Node) -> Option<Glob> {
    let t = item_text(item);
    let wild = |c: char| matches!(c, '*' | '?' | '[');
    if field == Field::SqlFinding && !t.contains(wild) && !super::vocab::SQL_FINDINGS.contains(&t) {
        ctx.err(
            item.pos,
            format!(
                "`sql_finding` {t:?} is not a finding the SQL analyzer reports; one of: {}",
                super::vocab::SQL_FINDINGS.join(", ")
            ),
        );
        return None;
    }
    for (f, known, who) in [
        (
            Field::TlsFinding,
            super::vocab::TLS_FINDINGS,
            "the plaintext scanner",
        ),
        (
            Field::HttpFinding,
            super::vocab::HTTP_FINDINGS,
            "the HTTP stage",
        ),
    ] {
        if field == f && !t.contains(wild) && !known.contains(&t) {
            let hint = suggest(t, known)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            ctx.err(
                item.pos,
                format!(
                    "`{}` {t:?} is not a finding {who} reports{hint}; one of: {}",
                    f.name(),
                    known.join(", ")
                ),
            );
            return None;
        }
    }
    let name = field.name();
    let mode = field.glob_mode().unwrap_or(GlobMode::Text);
    let g = match Glob::new(t, mode) {
        Ok(g) => g,
        Err(ge) => {
            ctx.err(
                item.pos_at(ge.offset),
                format!("`{name}` pattern {t:?} {}", ge.message),
            );
            return None;
        }
    };
    if mode == GlobMode::Path && !(t.starts_with('/') || t.starts_with('*')) {
        let base = t.rsplit('/').next().unwrap_or(t);
        let msg = match field {
            Field::Cgroup => format!(
                "`cgroup` pattern {t:?} is not absolute, so it can never match (cgroup paths start with `/`); write \"/{t}\" or \"*/{base}\""
            ),
            Field::Path => format!(
                "`path` pattern {t:?} is not absolute, so it can never match (file paths in events are absolute); write the full path like \"/etc/{base}\", or \"*/{base}\" for any directory"
            ),
            _ => format!(
                "`{name}` pattern {t:?} is not absolute, so it can never match (executable paths are always absolute); write \"*/{base}\" to match it in any directory, or the full path like \"/usr/bin/{base}\""
            ),
        };
        ctx.err(item.pos, msg);
        return None;
    }
    if field == Field::Comm && g.min_len() > COMM_MAX {
        let short: String = t.chars().take(COMM_MAX).collect();
        ctx.err(
            item.pos,
            format!(
                "`comm` pattern {t:?} needs more than {COMM_MAX} characters, but the kernel keeps only the first {COMM_MAX} of a task name, so it can never match; write \"{short}\" (or \"{short}*\"), or match the full path with `exe`"
            ),
        );
        return None;
    }
    if let Some((allowed, what)) = name_charset(field) {
        // `-` is also in class ranges like `[0-9a-f]`.
        let glob_char = |c: char| "*?[]!^\\-".contains(c);
        if let Some((i, c)) = t
            .char_indices()
            .find(|&(_, c)| !(allowed(c) || glob_char(c)))
        {
            let fix = if c.is_ascii_uppercase() && allowed(c.to_ascii_lowercase()) {
                format!("; write {:?}", t.to_ascii_lowercase())
            } else {
                String::new()
            };
            ctx.err(
                item.pos_at(t[..i].chars().count()),
                format!("`{name}` pattern {t:?} can never match because of {c:?}: {what}{fix}"),
            );
            return None;
        }
    }
    Some(g)
}

/// Which characters a name may hold, and what to say to someone who wrote another.
type Charset = (fn(char) -> bool, &'static str);

/// The characters a runtime or Kubernetes allows in the ids and names these fields match.
fn name_charset(field: Field) -> Option<Charset> {
    let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    match field {
        Field::ContainerId => Some((
            lower_hex,
            "container ids are 64 lowercase hex characters (like \"3f4e…\"), without a runtime prefix such as `docker-`",
        )),
        Field::PodUid => Some((
            |c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-',
            "pod uids are lowercase UUIDs like \"0f1e2d3c-…\"",
        )),
        Field::ContainerName => Some((
            |c| c.is_ascii_alphanumeric() || "_.-".contains(c),
            "container names are letters, digits, `_`, `.` and `-` (Kubernetes container names, or the runtime's own names without docker's leading `/`)",
        )),
        Field::Image => Some((
            |c| c.is_ascii_alphanumeric() || "._/:@-".contains(c),
            "images are written like \"registry.example/team/app:1.4\" or \"app@sha256:…\"",
        )),
        Field::PodName => Some((
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c),
            "pod names are lowercase letters, digits, `-` and `.`",
        )),
        Field::Namespace => Some((
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
            "namespaces are lowercase letters, digits and `-`",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policies;

    /// Every problem of `text`, as `rasp-agent policy validate` prints them.
    fn errors(text: &str) -> Vec<String> {
        match parse_policies("t.yaml", text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    /// `errs` has one line starting with `at` (file:line:column) that contains `text`.
    #[track_caller]
    fn has(errs: &[String], at: &str, text: &str) {
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&format!("t.yaml:{at}: ")) && e.contains(text)),
            "no error at {at} containing {text:?} in:\n{}",
            errs.join("\n")
        );
    }

    /// A policy with one exec rule whose `match` body is `conds` (indented 6 spaces, from
    /// line 9 on).
    fn rule_with(event: &str, conds: &str) -> String {
        format!(
            "name: p\nversion: 1\nmode: audit\nrules:\n  - id: r\n    severity: low\n    event: {event}\n    match:\n{conds}"
        )
    }

    #[test]
    fn valid_policy_parses_with_defaults() {
        let text = rule_with("exec", "      exe: [\"/bin/sh\"]\n");
        let p = parse_policies("t.yaml", &text).expect("valid");
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].line, p[0].column), (1, 1));
        let r = &p[0].rules[0];
        assert_eq!(r.action, Action::Alert, "action defaults to alert");
        assert_eq!(r.mode, None);
        assert_eq!((r.line, r.column), (5, 5));
    }

    #[test]
    fn yaml_syntax_error_has_the_parsers_position() {
        let e = errors("name: p\nversion: 1\n  mode: audit\n");
        has(&e, "3:7", "YAML syntax error");
        let e = errors(&rule_with("exec", "      exe: [*/sh]\n"));
        has(&e, "9:13", "put globs that start with `*` in quotes");
        let e = errors("name: p\n\tversion: 1\n");
        has(&e, "1:7", "indent with spaces");
    }

    #[test]
    fn unknown_keys_suggest_the_closest_known_key() {
        let text = "name: p\nversion: 1\nmode: audit\nrulez: []\nrules:\n  - id: r\n    severty: high\n    severity: high\n    event: exec\n    match:\n      exee: [\"/x\"]\n";
        let e = errors(text);
        has(
            &e,
            "4:1",
            "unknown key `rulez` in a policy; did you mean `rules`?",
        );
        has(
            &e,
            "7:5",
            "unknown key `severty` in a rule; did you mean `severity`?",
        );
        has(
            &e,
            "11:7",
            "unknown condition `exee` in `match`; did you mean `exe`?",
        );
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn wrong_types_say_what_was_found() {
        let e = errors("name: p\nversion: x\nmode: audit\nrules: []\n");
        has(
            &e,
            "2:10",
            "`version` must be a positive integer (1, 2, ...), found string \"x\"",
        );
        has(&e, "4:8", "`rules` is an empty list");
        let e = errors("name: p\nversion: 0\nmode: [audit]\nrules: {}\n");
        has(&e, "2:10", "found number 0");
        has(
            &e,
            "3:7",
            "`mode` must be one of audit, enforce, found a list",
        );
        has(&e, "4:8", "`rules` must be a list of rules");
        let e = errors("name: p\nversion: \"3\"\nmode: audit\nrules: []\n");
        has(&e, "2:10", "found string \"3\"");
        let e = errors(&rule_with(
            "exec",
            "      in_container: yes\n      uid: [root]\n",
        ));
        has(
            &e,
            "9:21",
            "`in_container` must be true or false, found string \"yes\"",
        );
        has(&e, "10:13", "found string \"root\"");
        let e = errors("- a\n- b\n");
        has(&e, "1:1", "a policy must be a map");
    }

    #[test]
    fn bad_enum_values_suggest() {
        let text = "name: p\nversion: 1\nmode: audt\nrules:\n  - id: r\n    severity: hgh\n    event: file-open\n    action: blok\n    match:\n      path: [\"/x\"]\n";
        let e = errors(text);
        has(
            &e,
            "3:7",
            "unknown mode `audt`; use one of audit, enforce (did you mean `audit`?)",
        );
        has(&e, "6:15", "(did you mean `high`?)");
        has(&e, "7:12", "(did you mean `file_open`?)");
        has(&e, "8:13", "(did you mean `block`?)");
    }

    #[test]
    fn missing_required_keys_point_at_the_enclosing_map() {
        let e = errors("name: p\nversion: 1\nrules:\n  - id: r\n    event: exec\n");
        has(&e, "1:1", "policy is missing `mode`: add `mode: audit`");
        has(&e, "4:5", "rule is missing `severity`");
        assert_eq!(e.len(), 2, "{e:?}");
        let e = errors("# a comment\n\nversion: 1\n");
        has(&e, "3:1", "policy is missing `name`");
        has(&e, "3:1", "policy is missing `rules`");
        // The hint names every event type, the application-layer ones too.
        let e = errors("name: p\nversion: 1\nmode: audit\nrules:\n  - id: r\n    severity: low\n");
        has(
            &e,
            "5:5",
            "rule is missing `event`: add `event:` with one of exec, file_open",
        );
        has(&e, "5:5", "sql_query");
        has(&e, "5:5", "io_uring, socket, tls, http");
    }

    #[test]
    fn bad_names_and_ids() {
        let e = errors("name: Server Shells\nversion: 1\nmode: audit\nrules:\n  - id: R_1\n    severity: low\n    event: exec\n");
        has(&e, "1:7", "write \"server-shells\"");
        has(
            &e,
            "5:9",
            "rule id \"R_1\" may only use lowercase letters, digits and `-`; write \"r-1\"",
        );
    }

    #[test]
    fn bad_globs_point_into_the_pattern() {
        let e = errors(&rule_with(
            "exec",
            "      exe: [\"/usr/[abc\"]\n      argv: ['x\\']\n      comm: [\"[z-a]\"]\n",
        ));
        has(&e, "9:19", "has an unclosed `[` at character 6");
        has(&e, "10:16", "ends with a lone `\\`");
        has(&e, "11:16", "has the empty range `z-a`");
    }

    #[test]
    fn bad_cidrs_and_ports() {
        let e = errors(&rule_with(
            "connect",
            "      cidr: [\"10.0.0.1/8\", \"fd00::/129\", \"nope\", \"fd00:ec2::254/128\"]\n      port: [0, \"9000-8000\", 70000, \"http\", 22, \"8000-9000\"]\n",
        ));
        has(
            &e,
            "9:14",
            "has host bits set; write the network address \"10.0.0.0/8\"",
        );
        has(&e, "9:28", "use 0 to 128");
        has(&e, "9:42", "not an IPv4 or IPv6 address");
        has(&e, "10:14", "port 0 is out of range: ports are 1 to 65535");
        has(&e, "10:17", "write it low to high: \"8000-9000\"");
        has(&e, "10:30", "port 70000 is out of range");
        has(&e, "10:37", "\"http\" is not a port");
        assert_eq!(e.len(), 7, "{e:?}");
    }

    #[test]
    fn duplicate_yaml_keys() {
        let e = errors(&rule_with(
            "exec",
            "      exe: [\"/bin/sh\"]\n      exe: [\"/bin/bash\"]\n",
        ));
        has(
            &e,
            "10:7",
            "duplicate key `exe` (first at line 9, column 7)",
        );
    }

    #[test]
    fn duplicate_rule_ids_and_policy_names_name_both_positions() {
        let text = "name: p\nversion: 1\nmode: audit\nrules:\n  - id: r\n    severity: low\n    event: exec\n  - id: r\n    severity: low\n    event: exec\n---\nname: p\nversion: 2\nmode: audit\nrules:\n  - id: q\n    severity: low\n    event: exec\n";
        let e = errors(text);
        has(
            &e,
            "8:9",
            "duplicate rule id `r`: already used at t.yaml:5:9 (policy `p`)",
        );
        has(
            &e,
            "12:7",
            "duplicate policy name `p`: already defined at t.yaml:1:7",
        );
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn conditions_invalid_for_the_event_can_never_match() {
        let e = errors(&rule_with(
            "exec",
            "      path: [\"/etc/passwd\"]\n      port: [22]\n",
        ));
        has(
            &e,
            "9:7",
            "`path` never matches `exec` events (only file_open, library_load, file_change, unix_connect, mount, kernel_module and http events have it)",
        );
        has(&e, "10:7", "`port` never matches `exec` events");
        let e = errors(&rule_with(
            "file_open",
            "      port: [22]\n      path: [\"/x\"]\n",
        ));
        has(&e, "9:7", "use it in a rule with `event: connect`");
        let e = errors(&rule_with("connect", "      access: [read]\n"));
        has(&e, "9:7", "`access` never matches `connect` events");
        let e = errors(&rule_with("library_load", "      access: [write]\n"));
        has(&e, "9:7", "`access` never matches `library_load` events");
    }

    #[test]
    fn empty_lists_and_empty_values_can_never_match() {
        let e = errors(&rule_with("exec", "      exe: []\n      comm:\n"));
        has(
            &e,
            "9:12",
            "`exe` is an empty list, so this condition can never match",
        );
        has(&e, "10:7", "`comm` has no value");
        let e = errors(&rule_with("exec", ""));
        has(&e, "8:5", "`match` has no conditions");
        let e = errors(&rule_with("exec", "      exe: [\"/x\"]\n    except: []\n"));
        has(&e, "10:13", "`except` is an empty list");
    }

    #[test]
    fn relative_exe_and_path_patterns_can_never_match() {
        let e = errors(&rule_with(
            "exec",
            "      exe: [\"nginx\", \"*/ok\", \"/ok\"]\n      parent_exe: [bin/sh]\n      ancestor_exe: [\"?x\"]\n",
        ));
        has(&e, "9:13", "`exe` pattern \"nginx\" is not absolute, so it can never match (executable paths are always absolute); write \"*/nginx\"");
        has(&e, "10:20", "write \"*/sh\" to match it in any directory");
        has(&e, "11:22", "`ancestor_exe` pattern \"?x\" is not absolute");
        assert_eq!(e.len(), 3, "{e:?}");
        let e = errors(&rule_with("file_open", "      path: [\"etc/shadow\"]\n"));
        has(&e, "9:14", "`path` pattern \"etc/shadow\" is not absolute");
    }

    #[test]
    fn comm_longer_than_the_kernel_keeps_can_never_match() {
        let e = errors(&rule_with("exec", "      comm: [\"unattended-upgrade\"]\n"));
        has(&e, "9:14", "write \"unattended-upgr\"");
        assert!(errors(&rule_with("exec", "      comm: [\"unattended-upgr*\"]\n")).is_empty());
    }

    #[test]
    fn except_block_that_covers_match_cancels_the_rule() {
        let e = errors(&rule_with(
            "exec",
            "      exe: [\"/bin/sh\"]\n      uid: [0]\n    except:\n      - exe: [\"/bin/sh\"]\n        uid: [0]\n      - exe: [\"/bin/sh\", \"/bin/bash\"]\n      - exe: [\"/bin/sh\"]\n        comm: [x]\n      - {}\n",
        ));
        has(
            &e,
            "12:9",
            "this `except` block matches every event the rule's `match` matches",
        );
        has(&e, "14:9", "this `except` block matches every event");
        has(&e, "17:9", "this `except` block is empty");
        assert_eq!(e.len(), 3, "the narrower block at line 15 is fine: {e:?}");
    }

    #[test]
    fn conditions_in_the_wrong_place() {
        let text = "name: p\nversion: 1\nmode: audit\nexe: [\"/x\"]\nselector:\n  path: [\"/x\"]\nrules:\n  - id: r\n    severity: low\n    event: exec\n    exe: [\"/x\"]\n    match:\n      severity: low\n";
        let e = errors(text);
        has(&e, "4:1", "`exe` is a condition: put it under `selector:`");
        has(&e, "6:3", "`path` cannot be used in a selector");
        has(&e, "11:5", "`exe` is a condition: put it under `match:`");
        has(&e, "13:7", "`severity` belongs to the rule, not to `match`");
    }

    #[test]
    fn selector_and_rule_that_cannot_both_hold() {
        let text = "name: p\nversion: 1\nmode: audit\nselector:\n  exe: [\"/usr/sbin/nginx\"]\n  in_container: true\nrules:\n  - id: r\n    severity: low\n    event: exec\n    match:\n      exe: [\"/bin/sh\"]\n      in_container: false\n  - id: q\n    severity: low\n    event: exec\n    match:\n      exe: [\"/usr/sbin/nginx\", \"/bin/sh\"]\n";
        let e = errors(text);
        has(&e, "12:7", "use `parent_exe` in the rule");
        has(&e, "13:7", "`in_container` can never match");
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn container_names_images_pods_and_namespaces_are_checked() {
        let e = errors(&rule_with(
            "exec",
            "      container_name: [\"web\", \"k8s_app*\", \"/web\"]\n      image: [\"nginx:1.25\", \"registry.local/app@sha256:*\", \"nginx latest\"]\n      pod_name: [\"web-0\", \"Web-*\"]\n      namespace: [\"prod\", \"kube_system\"]\n",
        ));
        assert_eq!(e.len(), 4, "{e:#?}");
        has(
            &e,
            "9:44",
            "`container_name` pattern \"/web\" can never match because of '/'",
        );
        has(
            &e,
            "10:66",
            "`image` pattern \"nginx latest\" can never match because of ' '",
        );
        has(&e, "11:28", "write \"web-*\"");
        has(
            &e,
            "12:32",
            "`namespace` pattern \"kube_system\" can never match because of '_'",
        );
        // In a selector too; and the aliases say what to write.
        let text = "name: p\nversion: 1\nmode: audit\nselector:\n  namespace: [\"prod\"]\n  image: [\"registry.local/*\"]\n  pod_name: [\"web-*\"]\n  container_name: [\"app\"]\nrules:\n  - id: r\n    severity: low\n    event: exec\n";
        assert!(errors(text).is_empty(), "{:#?}", errors(text));
        let e = errors(&text.replace("  namespace:", "  k8s_namespace:"));
        has(&e, "5:3", "namespace");
    }

    #[test]
    fn container_ids_and_pod_uids_are_lowercase_hex() {
        let e = errors(&rule_with(
            "exec",
            "      container_id: [\"docker-3f4e*\", \"3F4E*\", \"3f4e*\"]\n      pod_uid: [\"0f1e2d3c-*\", \"pod0f1e*\"]\n",
        ));
        has(&e, "9:24", "without a runtime prefix such as `docker-`");
        has(&e, "9:40", "write \"3f4e*\"");
        has(&e, "10:32", "pod uids are lowercase UUIDs");
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn all_errors_of_a_file_are_collected_in_order() {
        let text = "name: p\nversion: -1\nmode: audit\nrules:\n  - id: r\n    severity: hgh\n    event: exec\n    match:\n      exe: [\"x\"]\n---\nname: q\nversion: 1\nmode: nope\nrules:\n  - id: s\n    severity: low\n    event: exec\n";
        let e = errors(text);
        let at: Vec<&str> = e
            .iter()
            .map(|l| l.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            at,
            ["t.yaml:2:10", "t.yaml:6:15", "t.yaml:9:13", "t.yaml:13:7"]
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("severty", RULE_KEYS), Some("severity"));
        assert_eq!(suggest("Severity", RULE_KEYS), Some("severity"));
        assert_eq!(suggest("exceptions", RULE_KEYS), Some("except"));
        assert_eq!(suggest("xyzzy", RULE_KEYS), None);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
