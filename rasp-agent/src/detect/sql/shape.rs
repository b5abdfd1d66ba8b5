//! Query shapes: a query's tokens with literal values replaced by their class, lists
//! collapsed and layout normalised, hashed with a fixed-key hash so a shape means the same
//! across restarts and nodes; a bounded cache of verdicts by shape, and the shapes each
//! service has been seen sending, with a learning window.
//!
//! Every decision the analyzer takes is a function of the shape (see `analyze`): literal
//! values are not looked at except for the classes kept here (a zero divisor, dollar
//! quoting, an unterminated literal), comments keep a class marker (a comment that swallows
//! a quote, an inline comment glued to words, an unterminated one), string continuation
//! across a newline is one literal. So a verdict cached for a shape is the verdict of every
//! query of that shape, and an injected payload, which changes tokens, changes the shape.

use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
    time::{Duration, Instant},
};

use super::{
    analyze::Verdict,
    lexer::{StringKind, Token, TokenKind},
};

/// A shape's 64-bit FNV-1a hash (offset basis 0xcbf29ce484222325, prime 0x100000001b3) over
/// the shape text's UTF-8 bytes. Fixed constants, no random key: the same shape hashes the
/// same in every process. Not collision resistant against a chosen input, which is why the
/// cache keys on it only to skip re-analysis, never to allow something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ShapeHash(pub u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl ShapeHash {
    pub fn of(text: &str) -> ShapeHash {
        let mut h = FNV_OFFSET;
        for b in text.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        ShapeHash(h)
    }
}

/// A normalised query text and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub text: String,
    pub hash: ShapeHash,
}

/// The residue a swallowing comment leaves: its body starts with what closes the literal or
/// the clause it cut (`admin'--'`, `1)-- )`, `x'-- -'`), or, glued to the code before it
/// (`1=1--x'`), holds a quote outside a word. A spaced comment with an apostrophe in its
/// prose (`-- customers' totals`, `-- don't`) is a comment.
pub(crate) fn line_comment_swallows(tok: &Token<'_>) -> bool {
    if !tok.space_before {
        return true;
    }
    let body = tok.text.get(2..).unwrap_or("");
    let head = body.trim_start_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
    if matches!(
        head.as_bytes().first(),
        Some(b'\'' | b'"' | b')' | b';' | b'%')
    ) || dollar_tag_at(head)
    {
        return true;
    }
    let b = body.as_bytes();
    !tok.space_before
        && (0..b.len()).any(|i| {
            matches!(b[i], b'\'' | b'"')
                && !(i > 0
                    && b[i - 1].is_ascii_alphabetic()
                    && b.get(i + 1).is_some_and(|n| n.is_ascii_alphabetic()))
        })
}

/// Words a template's tail starts with (` AND paid = false`, ` LIMIT 50`, ` ORDER BY ts`).
const TAIL_WORDS: &[&str] = &[
    "and",
    "or",
    "limit",
    "offset",
    "order",
    "group",
    "having",
    "where",
    "union",
    "returning",
    "desc",
    "asc",
    "nulls",
    "for",
    "fetch",
    "then",
    "else",
    "end",
    "from",
    "into",
    "values",
];

/// A line comment after code on its own line that ends the query and either says nothing
/// (`1--`, `1 -- -`, `1--+`), starts with what a query's tail starts with (`1 -- AND
/// paid = false`, `1-- LIMIT 50`), or is glued to the code before it (`ORDER BY 3-- x`: a
/// comment someone writes has a space before it, a suffix pasted after a value has none):
/// it is there to cut the query, not to explain it.
pub(crate) fn line_comment_cuts(tokens: &[Token<'_>], i: usize) -> bool {
    let Some(tok) = tokens.get(i) else {
        return false;
    };
    if tok.kind != TokenKind::LineComment || i == 0 || i + 1 != tokens.len() || tok.newline_before {
        return false;
    }
    if !tok.space_before {
        return true;
    }
    let body = tok.text.get(2..).unwrap_or("");
    let head = body.trim_start_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
    if head.trim_end().is_empty() {
        return true;
    }
    let word = head
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    TAIL_WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// A number written in hexadecimal (`0x7e`): MySQL's way to spell a string, a syntax error
/// in PostgreSQL 15.
pub(crate) fn hex_number(tok: &Token<'_>) -> bool {
    tok.kind == TokenKind::Number && matches!(tok.text.as_bytes().get(..2), Some(b"0x" | b"0X"))
}

/// `text` starts with a dollar-quote delimiter (`$$`, `$tag$`): what closes a dollar-quoted
/// literal, not prose (`-- $5 off` is no tag).
fn dollar_tag_at(text: &str) -> bool {
    let b = text.as_bytes();
    if b.first() != Some(&b'$') {
        return false;
    }
    let tag = b[1..]
        .iter()
        .take_while(|c| c.is_ascii_alphabetic() || **c == b'_' || **c >= 0x80)
        .count();
    b.get(1 + tag) == Some(&b'$')
}

/// A block comment glued to the tokens on both sides (`UN/**/ION`, `SELECT/**/1`): code
/// never needs that, filters do.
pub(crate) fn block_comment_inline(tokens: &[Token<'_>], i: usize) -> bool {
    let Some(next) = tokens.get(i + 1) else {
        return false;
    };
    i > 0 && !tokens[i].space_before && !next.space_before
}

/// A MySQL-style version comment `/*!50000 ... */`: executed by MySQL, noise for
/// PostgreSQL, and only filter evasion writes it.
pub(crate) fn block_comment_versioned(text: &str) -> bool {
    text.as_bytes().get(2) == Some(&b'!')
}

/// The shape of a token list (as the lexer produced it, comments included).
pub fn shape_of(tokens: &[Token<'_>]) -> Shape {
    let mut out = String::with_capacity(tokens.iter().map(|t| t.text.len().min(16) + 1).sum());
    let mut i = 0;
    let mut values_tuple: Option<(usize, usize)> = None;
    let mut in_values = false;
    while i < tokens.len() {
        let tok = &tokens[i];
        // IN (literal, literal, ...) -> IN (?)
        if tok.is_word("in") {
            if let Some(end) = literal_list_end(tokens, i + 1) {
                push_sep(&mut out);
                out.push_str("IN (?)");
                i = end + 1;
                continue;
            }
        }
        if tok.is_word("values") {
            in_values = true;
            values_tuple = None;
        } else if in_values && tok.is_punct(b'(') && values_tuple.is_none() {
            let start = out.len();
            i = emit_group(&mut out, tokens, i);
            values_tuple = Some((start, out.len()));
            continue;
        } else if in_values && tok.is_punct(b',') && values_tuple.is_some() {
            if tokens.get(i + 1).is_some_and(|t| t.is_punct(b'(')) {
                // A further tuple: kept only if its shape differs from the first.
                let mark = out.len();
                emit_token(&mut out, tokens, i);
                let tuple_start = out.len();
                let next = emit_group(&mut out, tokens, i + 1);
                if let Some((a, b)) = values_tuple {
                    let first = out.get(a..b).unwrap_or("").trim_start();
                    let this = out.get(tuple_start..).unwrap_or("").trim_start();
                    if first == this {
                        out.truncate(mark);
                    }
                }
                i = next;
                continue;
            }
        } else if in_values && !tok.is_comment() {
            in_values = false;
        }
        // ARRAY[literal, ...] -> ARRAY[?]
        if tok.is_word("array") && tokens.get(i + 1).is_some_and(|t| t.is_punct(b'[')) {
            if let Some(end) = literal_list_end_with(tokens, i + 1, b']') {
                push_sep(&mut out);
                out.push_str("ARRAY[?]");
                i = end + 1;
                continue;
            }
        }
        i = emit_one(&mut out, tokens, i);
    }
    let hash = ShapeHash::of(&out);
    Shape { text: out, hash }
}

fn push_sep(out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push(' ');
    }
}

/// Emits token `i` (a whole string continuation, a folded negative number) and returns the
/// index of the next token to emit.
fn emit_one(out: &mut String, tokens: &[Token<'_>], i: usize) -> usize {
    let tok = &tokens[i];
    // Unary minus on a number is part of the literal: `-1` and `1` have one shape.
    if tok.is_op("-")
        && tokens
            .get(i + 1)
            .is_some_and(|t| t.kind == TokenKind::Number)
    {
        let prev = tokens[..i].iter().rev().find(|t| !t.is_comment());
        let unary = match prev {
            None => true,
            Some(p) => {
                matches!(p.kind, TokenKind::Operator | TokenKind::Cast)
                    || (p.kind == TokenKind::Keyword && !p.is_word("null"))
                    || (p.kind == TokenKind::Punct && !p.is_punct(b')') && !p.is_punct(b']'))
            }
        };
        if unary {
            return emit_one(out, tokens, i + 1);
        }
    }
    emit_token(out, tokens, i);
    if matches!(tok.kind, TokenKind::String(_)) && !tok.unterminated {
        // 'a'\n'b' is one literal to PostgreSQL.
        let mut j = i + 1;
        while let Some(t) = tokens.get(j) {
            if string_continues(&tokens[j - 1], t) {
                j += 1;
                if t.unterminated {
                    out.push('!');
                    break;
                }
            } else {
                break;
            }
        }
        return j;
    }
    i + 1
}

fn emit_token(out: &mut String, tokens: &[Token<'_>], i: usize) {
    let tok = &tokens[i];
    let glue = tok.is_punct(b'.')
        || tok.is_punct(b',')
        || tok.is_punct(b')')
        || tok.kind == TokenKind::Cast
        || i.checked_sub(1)
            .and_then(|p| tokens.get(p))
            .is_some_and(|p| p.is_punct(b'.') || p.kind == TokenKind::Cast || p.is_punct(b'('));
    if !glue {
        push_sep(out);
    }
    match tok.kind {
        // Copied, then case-folded in place (ASCII letters only, as before: the bytes of
        // a multi-byte character are never ASCII).
        TokenKind::Keyword => {
            let at = out.len();
            out.push_str(tok.text);
            if let Some(copied) = out.get_mut(at..) {
                copied.make_ascii_uppercase();
            }
        }
        TokenKind::Ident => {
            let at = out.len();
            out.push_str(tok.text);
            if let Some(copied) = out.get_mut(at..) {
                copied.make_ascii_lowercase();
            }
        }
        TokenKind::String(StringKind::Dollar) => out.push_str("$?"),
        TokenKind::String(_) | TokenKind::BitString => out.push('?'),
        TokenKind::Number => out.push_str(if tok.text == "0" && divisor(tokens, i) {
            "0"
        } else if hex_number(tok) {
            "?x"
        } else {
            "?"
        }),
        TokenKind::Param => out.push_str("$?"),
        TokenKind::LineComment => out.push_str(if line_comment_swallows(tok) {
            "--'"
        } else if line_comment_cuts(tokens, i) {
            "--$"
        } else {
            "--"
        }),
        TokenKind::BlockComment => out.push_str(if tok.unterminated {
            "/*"
        } else if block_comment_versioned(tok.text) {
            "/*!*/"
        } else if block_comment_inline(tokens, i) {
            "/*i*/"
        } else {
            "/**/"
        }),
        TokenKind::QuotedIdent
        | TokenKind::Operator
        | TokenKind::Cast
        | TokenKind::Punct
        | TokenKind::Unknown => out.push_str(tok.text),
    }
    if tok.unterminated {
        out.push('!');
    }
    if tok.is_punct(b';') && tokens.get(i + 1).is_some_and(|t| t.newline_before) {
        out.push('\n');
    }
}

/// `'a'` then `'b'` on the next line: one literal to PostgreSQL (a standard string may
/// continue an `E''`, `U&''` or standard one across a newline).
pub(crate) fn string_continues(prev: &Token<'_>, next: &Token<'_>) -> bool {
    matches!(
        prev.kind,
        TokenKind::String(StringKind::Standard | StringKind::Escape | StringKind::Unicode)
    ) && !prev.unterminated
        && next.kind == TokenKind::String(StringKind::Standard)
        && next.newline_before
}

/// A zero the analyzer reads: the divisor of `x/0` or `x/(SELECT 0)`.
pub(crate) fn divisor(tokens: &[Token<'_>], i: usize) -> bool {
    let prev = |k: usize| i.checked_sub(k).and_then(|p| tokens.get(p));
    prev(1).is_some_and(|p| p.is_op("/"))
        || (prev(1).is_some_and(|p| p.is_word("select"))
            && prev(2).is_some_and(|p| p.is_punct(b'('))
            && prev(3).is_some_and(|p| p.is_op("/")))
}

/// Emits a parenthesised group starting at `open` (whole, nested); returns the index after it.
fn emit_group(out: &mut String, tokens: &[Token<'_>], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < tokens.len() {
        let tok = &tokens[i];
        if tok.is_punct(b'(') {
            depth += 1;
        } else if tok.is_punct(b')') {
            depth = depth.saturating_sub(1);
        }
        i = emit_one(out, tokens, i);
        if depth == 0 {
            break;
        }
    }
    i
}

fn literal_list_end(tokens: &[Token<'_>], open: usize) -> Option<usize> {
    if !tokens.get(open)?.is_punct(b'(') {
        return None;
    }
    literal_list_end_with(tokens, open, b')')
}

/// `( lit , lit , ... )` (or `[ ... ]`): the index of the closing token. Negative numbers and
/// casts of literals count as literals; anything else (a name, a subquery) does not.
fn literal_list_end_with(tokens: &[Token<'_>], open: usize, close: u8) -> Option<usize> {
    let mut i = open + 1;
    let mut expect_value = true;
    while let Some(tok) = tokens.get(i) {
        if expect_value {
            if tok.is_op("-") {
                i += 1;
                continue;
            }
            if !(tok.is_literal() || tok.kind == TokenKind::Param) || tok.unterminated {
                return None;
            }
            expect_value = false;
        } else if tok.kind == TokenKind::Cast {
            // literal::type
            i += 1;
            if !tokens.get(i).is_some_and(|t| t.is_name()) {
                return None;
            }
        } else if tok.is_punct(b',') {
            expect_value = true;
        } else if tok.is_punct(close) {
            return Some(i);
        } else {
            return None;
        }
        i += 1;
    }
    None
}

/// Hashes u64 keys that are already hashes: the map needs no second hash.
#[derive(Default)]
pub struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ByShape<V> = HashMap<ShapeHash, V, BuildHasherDefault<PassThroughHasher>>;

/// The tables and functions a query names: like its verdict, a function of its shape
/// (identifiers are kept, only literals are normalised), so cached with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlNames {
    pub tables: Vec<crate::events::Text>,
    pub functions: Vec<crate::events::Text>,
}

struct CacheSlot {
    hash: ShapeHash,
    verdict: Verdict,
    names: std::sync::Arc<SqlNames>,
    referenced: bool,
}

/// Verdicts by shape, bounded, evicted by CLOCK (second chance): a hit sets a slot's bit,
/// the hand clears bits until it finds a slot not used since its last pass.
pub struct ShapeCache {
    slots: Vec<CacheSlot>,
    index: ByShape<usize>,
    hand: usize,
    capacity: usize,
    hits: u64,
    misses: u64,
}

impl ShapeCache {
    pub fn new(capacity: usize) -> ShapeCache {
        let capacity = capacity.max(1);
        ShapeCache {
            slots: Vec::with_capacity(capacity.min(1 << 16)),
            index: ByShape::default(),
            hand: 0,
            capacity,
            hits: 0,
            misses: 0,
        }
    }

    pub fn get(&mut self, hash: ShapeHash) -> Option<Verdict> {
        self.get_with_names(hash).map(|(v, _)| v)
    }

    /// The verdict and the names of a shape judged before.
    pub fn get_with_names(
        &mut self,
        hash: ShapeHash,
    ) -> Option<(Verdict, std::sync::Arc<SqlNames>)> {
        match self.index.get(&hash) {
            Some(&slot) => {
                self.hits += 1;
                let slot = &mut self.slots[slot];
                slot.referenced = true;
                Some((slot.verdict, slot.names.clone()))
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    pub fn insert(&mut self, hash: ShapeHash, verdict: Verdict) {
        self.insert_with_names(hash, verdict, Default::default());
    }

    pub fn insert_with_names(
        &mut self,
        hash: ShapeHash,
        verdict: Verdict,
        names: std::sync::Arc<SqlNames>,
    ) {
        if let Some(&slot) = self.index.get(&hash) {
            self.slots[slot].verdict = verdict;
            self.slots[slot].names = names;
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(hash, self.slots.len());
            self.slots.push(CacheSlot {
                hash,
                verdict,
                names,
                referenced: false,
            });
            return;
        }
        loop {
            let slot = &mut self.slots[self.hand];
            if slot.referenced {
                slot.referenced = false;
                self.hand = (self.hand + 1) % self.capacity;
                continue;
            }
            self.index.remove(&slot.hash);
            *slot = CacheSlot {
                hash,
                verdict,
                names,
                referenced: false,
            };
            self.index.insert(hash, self.hand);
            self.hand = (self.hand + 1) % self.capacity;
            return;
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// (hits, misses) since creation.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

/// Whether a service has sent a shape before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ShapeNovelty {
    Known,
    /// New, while the service is still in its learning window: learned, not remarkable.
    NewDuringLearning,
    /// New after the learning window: the detection can say "never seen from this service".
    /// It is remembered, so it is reported once.
    NewAfterLearning,
}

/// Bounds and the learning window of `ServiceShapes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceShapesConfig {
    pub learning: Duration,
    pub max_services: usize,
    pub max_shapes_per_service: usize,
}

impl Default for ServiceShapesConfig {
    fn default() -> Self {
        ServiceShapesConfig {
            learning: Duration::from_secs(3600),
            max_services: 1024,
            max_shapes_per_service: 4096,
        }
    }
}

struct ServiceEntry {
    first_seen: Instant,
    last_seen: Instant,
    shapes: HashSet<ShapeHash, BuildHasherDefault<PassThroughHasher>>,
}

/// The shapes each service (a caller's key: exe path, container id...) has sent. A full
/// service set stops learning (a new shape is still reported new, not stored); a full
/// service table forgets its least recently seen service, which starts learning again.
pub struct ServiceShapes {
    config: ServiceShapesConfig,
    services: HashMap<String, ServiceEntry>,
}

impl ServiceShapes {
    pub fn new(config: ServiceShapesConfig) -> ServiceShapes {
        ServiceShapes {
            config,
            services: HashMap::new(),
        }
    }

    pub fn observe(&mut self, service: &str, hash: ShapeHash, now: Instant) -> ShapeNovelty {
        if !self.services.contains_key(service) && self.services.len() >= self.config.max_services {
            // Rare (a new service at capacity): a linear scan is cheaper than keeping an
            // LRU order on every observation.
            if let Some(oldest) = self
                .services
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone())
            {
                self.services.remove(&oldest);
            }
        }
        let entry = match self.services.entry(service.to_owned()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => v.insert(ServiceEntry {
                first_seen: now,
                last_seen: now,
                shapes: HashSet::default(),
            }),
        };
        entry.last_seen = entry.last_seen.max(now);
        if entry.shapes.contains(&hash) {
            return ShapeNovelty::Known;
        }
        if entry.shapes.len() < self.config.max_shapes_per_service {
            entry.shapes.insert(hash);
        }
        if now.saturating_duration_since(entry.first_seen) < self.config.learning {
            ShapeNovelty::NewDuringLearning
        } else {
            ShapeNovelty::NewAfterLearning
        }
    }

    /// Like `observe`, for policies that each choose their own learning window: `None`
    /// when `service` has sent this shape before, otherwise how long the service has been
    /// seen (a rule's window is over when this is at least the window). A new shape is
    /// remembered, so it is new once.
    pub fn observe_age(
        &mut self,
        service: &str,
        hash: ShapeHash,
        now: Instant,
    ) -> Option<Duration> {
        let first_seen = self.services.get(service).map(|e| e.first_seen);
        match self.observe(service, hash, now) {
            ShapeNovelty::Known => None,
            _ => Some(now.saturating_duration_since(first_seen.unwrap_or(now))),
        }
    }

    pub fn services(&self) -> usize {
        self.services.len()
    }

    pub fn shapes_of(&self, service: &str) -> usize {
        self.services.get(service).map_or(0, |e| e.shapes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::sql::lexer::{tokenize, LexLimits};

    fn shape(src: &str) -> Shape {
        shape_of(&tokenize(src, LexLimits::default()).tokens)
    }

    #[test]
    fn literals_case_and_layout_normalise() {
        let a = shape("select * from users where name = 'bob' and age > 42");
        let b = shape("SELECT *\n  FROM Users WHERE name='alice' AND age>7 -- note");
        assert_eq!(a.text, "SELECT * FROM users WHERE NAME = ? AND age > ?");
        assert_ne!(a.hash, b.hash, "a comment keeps a marker");
        let c = shape("SELECT * FROM USERS where NAME = E'x\\'y' and AGE > -3");
        assert_eq!(a, c);
    }

    #[test]
    fn lists_collapse() {
        let a = shape("SELECT 1 FROM t WHERE id IN (1, 2, 3) AND x = ANY(ARRAY[4, 5])");
        let b = shape("SELECT 1 FROM t WHERE id IN (7) AND x = ANY(ARRAY[8])");
        assert_eq!(a, b);
        assert!(a.text.contains("IN (?)"), "{}", a.text);
        let v1 = shape("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')");
        let v2 = shape("INSERT INTO t (a, b) VALUES (5, 'q')");
        assert_eq!(v1, v2, "{} / {}", v1.text, v2.text);
        let v3 = shape("INSERT INTO t (a, b) VALUES (5, 'q'), (now(), 'r')");
        assert_ne!(v1, v3);
    }

    #[test]
    fn injected_structure_changes_the_shape() {
        let benign = shape("SELECT * FROM users WHERE name = 'bob'");
        for injected in [
            "SELECT * FROM users WHERE name = '' OR '1'='1'",
            "SELECT * FROM users WHERE name = 'admin'--'",
            "SELECT * FROM users WHERE name = 'x'; DROP TABLE users--'",
            "SELECT * FROM users WHERE name = '' UNION SELECT NULL--'",
            "SELECT * FROM users WHERE name = 'x' 'y'",
        ] {
            assert_ne!(shape(injected).hash, benign.hash, "{injected}");
        }
        // String continuation across a newline is one literal.
        assert_eq!(shape("SELECT * FROM users WHERE name = 'a'\n'b'"), benign);
    }

    #[test]
    fn hash_is_fixed() {
        // FNV-1a test vectors.
        assert_eq!(ShapeHash::of("").0, 0xcbf29ce484222325);
        assert_eq!(ShapeHash::of("a").0, 0xaf63dc4c8601ec8c);
        assert_eq!(ShapeHash::of("foobar").0, 0x85944171f73967e8);
    }

    #[test]
    fn cache_is_bounded_and_keeps_hot_entries() {
        let mut cache = ShapeCache::new(3);
        let v = Verdict::default();
        for h in 0..3 {
            cache.insert(ShapeHash(h), v);
        }
        assert!(cache.get(ShapeHash(0)).is_some());
        cache.insert(ShapeHash(10), v);
        assert_eq!(cache.len(), 3);
        assert!(
            cache.get(ShapeHash(0)).is_some(),
            "referenced entry survives"
        );
        assert!(cache.get(ShapeHash(10)).is_some());
        assert_eq!(
            [1, 2]
                .iter()
                .filter(|&&h| cache.get(ShapeHash(h)).is_some())
                .count(),
            1
        );
        for h in 100..1000 {
            cache.insert(ShapeHash(h), v);
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn service_shapes_learn_then_flag() {
        let t0 = Instant::now();
        let mut shapes = ServiceShapes::new(ServiceShapesConfig {
            learning: Duration::from_secs(60),
            max_services: 2,
            max_shapes_per_service: 2,
        });
        assert_eq!(
            shapes.observe("app", ShapeHash(1), t0),
            ShapeNovelty::NewDuringLearning
        );
        assert_eq!(shapes.observe("app", ShapeHash(1), t0), ShapeNovelty::Known);
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            shapes.observe("app", ShapeHash(2), later),
            ShapeNovelty::NewAfterLearning
        );
        assert_eq!(
            shapes.observe("app", ShapeHash(2), later),
            ShapeNovelty::Known
        );
        // Full: reported new every time, not stored.
        assert_eq!(
            shapes.observe("app", ShapeHash(3), later),
            ShapeNovelty::NewAfterLearning
        );
        assert_eq!(
            shapes.observe("app", ShapeHash(3), later),
            ShapeNovelty::NewAfterLearning
        );
        assert_eq!(shapes.shapes_of("app"), 2);
        // Learning is per service.
        assert_eq!(
            shapes.observe("b", ShapeHash(3), later),
            ShapeNovelty::NewDuringLearning
        );
        // A third service evicts the least recently seen one ("app" at `later`, "b" too:
        // touch "b" later so "app" goes).
        let later2 = later + Duration::from_secs(1);
        shapes.observe("b", ShapeHash(3), later2);
        shapes.observe("c", ShapeHash(1), later2);
        assert_eq!(shapes.services(), 2);
        assert_eq!(shapes.shapes_of("app"), 0);
    }
}
