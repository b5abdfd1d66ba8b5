//! A PostgreSQL lexer over `&str`, modelled on the server's own scanner (scan.l): every token
//! is a byte span of the input (zero-copy), unterminated literals and comments are tokens
//! flagged as such, and the scan is one forward pass that stops at a token cap. It never
//! panics: every token boundary falls on an ASCII byte or the end, so slices stay valid UTF-8.

/// What a token is. Keywords are classified case-insensitively against PostgreSQL's keyword
/// list; anything else that looks like a name is an identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Keyword,
    Ident,
    /// `"name"` (also `U&"name"`): never a keyword, case kept.
    QuotedIdent,
    String(StringKind),
    /// `B'0101'` or `X'1F'`.
    BitString,
    Number,
    /// `$1`, `$2`...
    Param,
    Operator,
    /// `::`, the cast operator, kept apart from the other operators.
    Cast,
    /// One of `( ) [ ] , ; : .`
    Punct,
    LineComment,
    BlockComment,
    /// A byte the grammar has no place for (`\`, `{`, a control character...).
    Unknown,
}

/// The lexical form of a string literal; the analyzer cares about dollar quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringKind {
    /// `'..'` with `''` escapes (standard_conforming_strings on); also `N'..'`.
    Standard,
    /// `E'..'`, backslash escapes.
    Escape,
    /// `U&'..'`.
    Unicode,
    /// `$$..$$` or `$tag$..$tag$`.
    Dollar,
}

/// One token: its kind, its text (a slice of the input), where it starts, and the layout
/// that preceded it (comments are tokens; whitespace is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'q> {
    pub kind: TokenKind,
    pub text: &'q str,
    pub start: usize,
    /// A string, quoted identifier or block comment that reached the end of the input open.
    pub unterminated: bool,
    /// Whitespace (of any kind) directly before this token.
    pub space_before: bool,
    /// A newline in the whitespace directly before this token.
    pub newline_before: bool,
}

impl<'q> Token<'q> {
    pub fn end(&self) -> usize {
        self.start + self.text.len()
    }

    /// A keyword (or, for the words PostgreSQL does not reserve, an identifier) spelled `word`.
    /// `word` must be lowercase ASCII.
    #[inline]
    pub fn is_word(&self, word: &str) -> bool {
        matches!(self.kind, TokenKind::Keyword | TokenKind::Ident)
            && self.text.eq_ignore_ascii_case(word)
    }

    pub fn is_punct(&self, c: u8) -> bool {
        self.kind == TokenKind::Punct && self.text.as_bytes().first() == Some(&c)
    }

    pub fn is_op(&self, op: &str) -> bool {
        self.kind == TokenKind::Operator && self.text == op
    }

    pub fn is_comment(&self) -> bool {
        matches!(self.kind, TokenKind::LineComment | TokenKind::BlockComment)
    }

    /// A literal value: string, bit string or number.
    pub fn is_literal(&self) -> bool {
        matches!(
            self.kind,
            TokenKind::String(_) | TokenKind::BitString | TokenKind::Number
        )
    }

    /// A name: identifier, quoted identifier, or keyword (PostgreSQL lets most keywords
    /// name columns and functions).
    pub fn is_name(&self) -> bool {
        matches!(
            self.kind,
            TokenKind::Ident | TokenKind::QuotedIdent | TokenKind::Keyword
        )
    }
}

/// The lexer's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LexLimits {
    /// Bytes of input examined; the rest is ignored (cut on a character boundary).
    pub max_bytes: usize,
    /// Tokens produced; lexing stops there.
    pub max_tokens: usize,
}

impl Default for LexLimits {
    fn default() -> Self {
        // 8 KiB is the capture bound of the libpq probes; 4096 tokens is more than 8 KiB of
        // real SQL produces (a token is rarely under 2 bytes with its separator).
        LexLimits {
            max_bytes: 8 * 1024,
            max_tokens: 4096,
        }
    }
}

/// The tokens of one input, and whether a limit cut the input short.
#[derive(Debug, Clone, Default)]
pub struct Lexed<'q> {
    pub tokens: Vec<Token<'q>>,
    /// A limit stopped the lexer before the end of the input.
    pub capped: bool,
}

/// PostgreSQL's keywords (src/include/parser/kwlist.h, all categories), sorted, lowercase.
/// The classification only separates words from names for the analyzer and the shapes.
const KEYWORDS: &[&str] = &[
    "abort",
    "absolute",
    "access",
    "action",
    "add",
    "admin",
    "after",
    "aggregate",
    "all",
    "also",
    "alter",
    "always",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asensitive",
    "assertion",
    "assignment",
    "asymmetric",
    "at",
    "atomic",
    "attach",
    "attribute",
    "authorization",
    "backward",
    "before",
    "begin",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "breadth",
    "by",
    "cache",
    "call",
    "called",
    "cascade",
    "cascaded",
    "case",
    "cast",
    "catalog",
    "chain",
    "char",
    "character",
    "characteristics",
    "check",
    "checkpoint",
    "class",
    "close",
    "cluster",
    "coalesce",
    "collate",
    "collation",
    "column",
    "columns",
    "comment",
    "comments",
    "commit",
    "committed",
    "compression",
    "concurrently",
    "configuration",
    "conflict",
    "connection",
    "constraint",
    "constraints",
    "content",
    "continue",
    "conversion",
    "copy",
    "cost",
    "create",
    "cross",
    "csv",
    "cube",
    "current",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "cursor",
    "cycle",
    "data",
    "database",
    "day",
    "deallocate",
    "dec",
    "decimal",
    "declare",
    "default",
    "defaults",
    "deferrable",
    "deferred",
    "definer",
    "delete",
    "delimiter",
    "delimiters",
    "depends",
    "depth",
    "desc",
    "detach",
    "dictionary",
    "disable",
    "discard",
    "distinct",
    "do",
    "document",
    "domain",
    "double",
    "drop",
    "each",
    "else",
    "enable",
    "encoding",
    "encrypted",
    "end",
    "enum",
    "escape",
    "event",
    "except",
    "exclude",
    "excluding",
    "exclusive",
    "execute",
    "exists",
    "explain",
    "expression",
    "extension",
    "external",
    "extract",
    "false",
    "family",
    "fetch",
    "filter",
    "finalize",
    "first",
    "float",
    "following",
    "for",
    "force",
    "foreign",
    "forward",
    "freeze",
    "from",
    "full",
    "function",
    "functions",
    "generated",
    "global",
    "grant",
    "granted",
    "greatest",
    "group",
    "grouping",
    "groups",
    "handler",
    "having",
    "header",
    "hold",
    "hour",
    "identity",
    "if",
    "ilike",
    "immediate",
    "immutable",
    "implicit",
    "import",
    "in",
    "include",
    "including",
    "increment",
    "index",
    "indexes",
    "inherit",
    "inherits",
    "initially",
    "inline",
    "inner",
    "inout",
    "input",
    "insensitive",
    "insert",
    "instead",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "invoker",
    "is",
    "isnull",
    "isolation",
    "join",
    "json",
    "key",
    "label",
    "language",
    "large",
    "last",
    "lateral",
    "leading",
    "leakproof",
    "least",
    "left",
    "level",
    "like",
    "limit",
    "listen",
    "load",
    "local",
    "localtime",
    "localtimestamp",
    "location",
    "lock",
    "locked",
    "logged",
    "mapping",
    "match",
    "matched",
    "materialized",
    "maxvalue",
    "merge",
    "method",
    "minute",
    "minvalue",
    "mode",
    "month",
    "move",
    "name",
    "names",
    "national",
    "natural",
    "nchar",
    "new",
    "next",
    "nfc",
    "nfd",
    "nfkc",
    "nfkd",
    "no",
    "none",
    "normalize",
    "normalized",
    "not",
    "nothing",
    "notify",
    "notnull",
    "nowait",
    "null",
    "nullif",
    "nulls",
    "numeric",
    "object",
    "of",
    "off",
    "offset",
    "oids",
    "old",
    "on",
    "only",
    "operator",
    "option",
    "options",
    "or",
    "order",
    "ordinality",
    "others",
    "out",
    "outer",
    "over",
    "overlaps",
    "overlay",
    "overriding",
    "owned",
    "owner",
    "parallel",
    "parameter",
    "parser",
    "partial",
    "partition",
    "passing",
    "password",
    "placing",
    "plans",
    "policy",
    "position",
    "preceding",
    "precision",
    "prepare",
    "prepared",
    "preserve",
    "primary",
    "prior",
    "privileges",
    "procedural",
    "procedure",
    "procedures",
    "program",
    "publication",
    "quote",
    "range",
    "read",
    "real",
    "reassign",
    "recheck",
    "recursive",
    "ref",
    "references",
    "referencing",
    "refresh",
    "reindex",
    "relative",
    "release",
    "rename",
    "repeatable",
    "replace",
    "replica",
    "reset",
    "restart",
    "restrict",
    "return",
    "returning",
    "returns",
    "revoke",
    "right",
    "role",
    "rollback",
    "rollup",
    "routine",
    "routines",
    "row",
    "rows",
    "rule",
    "savepoint",
    "schema",
    "schemas",
    "scroll",
    "search",
    "second",
    "security",
    "select",
    "sequence",
    "sequences",
    "serializable",
    "server",
    "session",
    "session_user",
    "set",
    "setof",
    "sets",
    "share",
    "show",
    "similar",
    "simple",
    "skip",
    "smallint",
    "snapshot",
    "some",
    "sql",
    "stable",
    "standalone",
    "start",
    "statement",
    "statistics",
    "stdin",
    "stdout",
    "storage",
    "stored",
    "strict",
    "strip",
    "subscription",
    "substring",
    "support",
    "symmetric",
    "sysid",
    "system",
    "system_user",
    "table",
    "tables",
    "tablesample",
    "tablespace",
    "temp",
    "template",
    "temporary",
    "text",
    "then",
    "ties",
    "time",
    "timestamp",
    "to",
    "trailing",
    "transaction",
    "transform",
    "treat",
    "trigger",
    "trim",
    "true",
    "truncate",
    "trusted",
    "type",
    "types",
    "uescape",
    "unbounded",
    "uncommitted",
    "unencrypted",
    "union",
    "unique",
    "unknown",
    "unlisten",
    "unlogged",
    "until",
    "update",
    "user",
    "using",
    "vacuum",
    "valid",
    "validate",
    "validator",
    "value",
    "values",
    "varchar",
    "variadic",
    "varying",
    "verbose",
    "version",
    "view",
    "views",
    "volatile",
    "when",
    "where",
    "whitespace",
    "window",
    "with",
    "within",
    "without",
    "work",
    "wrapper",
    "write",
    "xml",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
    "year",
    "yes",
    "zone",
];

/// Whether `word` is a PostgreSQL keyword (ASCII case-insensitive).
pub fn is_keyword(word: &str) -> bool {
    // Longest keyword is 17 bytes; a stack buffer avoids an allocation per identifier.
    let bytes = word.as_bytes();
    if bytes.is_empty() || bytes.len() > 24 {
        return false;
    }
    let mut buf = [0u8; 24];
    let mut hash = FNV_OFFSET;
    for (slot, &b) in buf.iter_mut().zip(bytes) {
        if !b.is_ascii() {
            return false;
        }
        *slot = b.to_ascii_lowercase();
        hash = fnv_step(hash, *slot);
    }
    keyword_table().contains(&buf[..bytes.len()], hash)
}

const FNV_OFFSET: u32 = 0x811c_9dc5;

#[inline]
fn fnv_step(hash: u32, b: u8) -> u32 {
    (hash ^ b as u32).wrapping_mul(0x0100_0193)
}

/// `KEYWORDS` in an open-addressed table (a binary search over the ~490 words was a fifth
/// of the instructions the judge spent on a short query).
struct KeywordTable {
    /// Index into `KEYWORDS` plus one; 0: empty.
    slots: Vec<u16>,
    mask: usize,
}

impl KeywordTable {
    fn build() -> KeywordTable {
        let size = (KEYWORDS.len() * 2).next_power_of_two();
        let mut table = KeywordTable {
            slots: vec![0; size],
            mask: size - 1,
        };
        for (i, word) in KEYWORDS.iter().enumerate() {
            let hash = word.bytes().fold(FNV_OFFSET, fnv_step);
            let mut at = hash as usize & table.mask;
            while table.slots[at] != 0 {
                at = (at + 1) & table.mask;
            }
            table.slots[at] = i as u16 + 1;
        }
        table
    }

    fn contains(&self, lower: &[u8], hash: u32) -> bool {
        let mut at = hash as usize & self.mask;
        // At most half full: an empty slot ends every probe sequence.
        loop {
            match self.slots[at] {
                0 => return false,
                i => {
                    if KEYWORDS[i as usize - 1].as_bytes() == lower {
                        return true;
                    }
                }
            }
            at = (at + 1) & self.mask;
        }
    }
}

fn keyword_table() -> &'static KeywordTable {
    static TABLE: std::sync::OnceLock<KeywordTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(KeywordTable::build)
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

fn is_op_char(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
    )
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Lex `src` within `limits`.
pub fn tokenize(src: &str, limits: LexLimits) -> Lexed<'_> {
    let mut cut = src.len().min(limits.max_bytes);
    while !src.is_char_boundary(cut) {
        cut -= 1;
    }
    let text = &src[..cut];
    let mut scanner = Scanner {
        src: text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    let mut tokens = Vec::with_capacity((text.len() / 4).min(limits.max_tokens));
    let mut capped = cut < src.len();
    loop {
        let (space_before, newline_before) = scanner.skip_space();
        if scanner.pos >= scanner.bytes.len() {
            break;
        }
        if tokens.len() >= limits.max_tokens {
            capped = true;
            break;
        }
        let start = scanner.pos;
        let (kind, unterminated) = scanner.next_kind();
        // Every branch of next_kind advances by at least one byte and stops on an ASCII
        // byte or the end, so `start..pos` is a valid, non-empty char range.
        let end = scanner.pos.max(start + 1).min(scanner.bytes.len());
        scanner.pos = end;
        tokens.push(Token {
            kind,
            text: text.get(start..end).unwrap_or(""),
            start,
            unterminated,
            space_before,
            newline_before,
        });
    }
    Lexed { tokens, capped }
}

struct Scanner<'q> {
    src: &'q str,
    bytes: &'q [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn skip_space(&mut self) -> (bool, bool) {
        let start = self.pos;
        let mut newline = false;
        while let Some(b) = self.peek(0) {
            if !is_space(b) {
                break;
            }
            newline |= b == b'\n' || b == b'\r';
            self.pos += 1;
        }
        (self.pos > start, newline)
    }

    fn next_kind(&mut self) -> (TokenKind, bool) {
        let Some(b) = self.peek(0) else {
            return (TokenKind::Unknown, false);
        };
        let start = self.pos;
        let next = self.peek(1);
        match b {
            b'-' if next == Some(b'-') => {
                self.line_comment();
                (TokenKind::LineComment, false)
            }
            b'/' if next == Some(b'*') => (TokenKind::BlockComment, !self.block_comment()),
            b'\'' => {
                self.pos += 1;
                (
                    TokenKind::String(StringKind::Standard),
                    !self.quoted(b'\'', false),
                )
            }
            b'"' => {
                self.pos += 1;
                (TokenKind::QuotedIdent, !self.quoted(b'"', false))
            }
            b'e' | b'E' if next == Some(b'\'') => {
                self.pos += 2;
                (
                    TokenKind::String(StringKind::Escape),
                    !self.quoted(b'\'', true),
                )
            }
            b'n' | b'N' if next == Some(b'\'') => {
                self.pos += 2;
                (
                    TokenKind::String(StringKind::Standard),
                    !self.quoted(b'\'', false),
                )
            }
            b'b' | b'B' | b'x' | b'X' if next == Some(b'\'') => {
                self.pos += 2;
                (TokenKind::BitString, !self.quoted(b'\'', false))
            }
            b'u' | b'U' if next == Some(b'&') && matches!(self.peek(2), Some(b'\'' | b'"')) => {
                let quote = self.peek(2).unwrap_or(b'\'');
                self.pos += 3;
                let closed = self.quoted(quote, false);
                let kind = if quote == b'"' {
                    TokenKind::QuotedIdent
                } else {
                    TokenKind::String(StringKind::Unicode)
                };
                (kind, !closed)
            }
            b'$' => self.dollar(),
            b'0'..=b'9' => {
                self.number();
                (TokenKind::Number, false)
            }
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) => {
                self.number();
                (TokenKind::Number, false)
            }
            b':' if next == Some(b':') => {
                self.pos += 2;
                (TokenKind::Cast, false)
            }
            b':' if next == Some(b'=') => {
                self.pos += 2;
                (TokenKind::Operator, false)
            }
            b'(' | b')' | b'[' | b']' | b',' | b';' | b':' | b'.' => {
                self.pos += 1;
                (TokenKind::Punct, false)
            }
            _ if is_ident_start(b) => {
                self.pos += 1;
                while self.peek(0).is_some_and(is_ident_cont) {
                    self.pos += 1;
                }
                let word = self.src.get(start..self.pos).unwrap_or("");
                if is_keyword(word) {
                    (TokenKind::Keyword, false)
                } else {
                    (TokenKind::Ident, false)
                }
            }
            _ if is_op_char(b) => {
                self.operator();
                (TokenKind::Operator, false)
            }
            _ => {
                self.pos += 1;
                (TokenKind::Unknown, false)
            }
        }
    }

    fn line_comment(&mut self) {
        while let Some(b) = self.peek(0) {
            if b == b'\n' || b == b'\r' {
                break;
            }
            self.pos += 1;
        }
    }

    /// A nested `/* */` comment; false when the input ends inside it.
    fn block_comment(&mut self) -> bool {
        self.pos += 2;
        let mut depth = 1usize;
        while let Some(b) = self.peek(0) {
            match (b, self.peek(1)) {
                (b'/', Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                (b'*', Some(b'/')) => {
                    depth -= 1;
                    self.pos += 2;
                    if depth == 0 {
                        return true;
                    }
                }
                _ => self.pos += 1,
            }
        }
        false
    }

    /// The body of a quoted literal after its opening quote; a doubled quote is an escaped
    /// quote, and with `backslash` a backslash escapes the next byte. False when unclosed.
    fn quoted(&mut self, quote: u8, backslash: bool) -> bool {
        while let Some(b) = self.peek(0) {
            if backslash && b == b'\\' {
                // Skip the escaped byte only when it is ASCII: a multi-byte character after
                // a backslash is consumed by the ordinary path, byte by byte.
                if self.peek(1).is_some_and(|n| n.is_ascii()) {
                    self.pos += 2;
                } else {
                    self.pos += 1;
                }
                continue;
            }
            self.pos += 1;
            if b == quote {
                if self.peek(0) == Some(quote) {
                    self.pos += 1;
                    continue;
                }
                return true;
            }
        }
        false
    }

    /// `$1`, `$tag$...$tag$`, `$$...$$`, or a lone `$` (not valid SQL: Unknown).
    fn dollar(&mut self) -> (TokenKind, bool) {
        let start = self.pos;
        let next = self.peek(1);
        if next.is_some_and(|n| n.is_ascii_digit()) {
            self.pos += 1;
            while self.peek(0).is_some_and(|n| n.is_ascii_digit()) {
                self.pos += 1;
            }
            return (TokenKind::Param, false);
        }
        // A tag is an identifier without `$`, not starting with a digit.
        let mut tag_end = start + 1;
        if self.bytes.get(tag_end).copied().is_some_and(is_ident_start) {
            while self
                .bytes
                .get(tag_end)
                .copied()
                .is_some_and(|c| is_ident_start(c) || c.is_ascii_digit())
            {
                tag_end += 1;
            }
        }
        if self.bytes.get(tag_end) != Some(&b'$') {
            self.pos += 1;
            return (TokenKind::Unknown, false);
        }
        let delimiter = &self.bytes[start..=tag_end];
        self.pos = tag_end + 1;
        let body = &self.bytes[self.pos..];
        match find(body, delimiter) {
            Some(at) => {
                self.pos += at + delimiter.len();
                (TokenKind::String(StringKind::Dollar), false)
            }
            None => {
                self.pos = self.bytes.len();
                (TokenKind::String(StringKind::Dollar), true)
            }
        }
    }

    fn digits(&mut self, accept: fn(u8) -> bool) {
        while let Some(b) = self.peek(0) {
            if accept(b) || (b == b'_' && self.peek(1).is_some_and(accept)) {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// Decimal (`1`, `1.5`, `.5`, `1e10`, `1_000`) and prefixed (`0x1F`, `0o17`, `0b101`).
    fn number(&mut self) {
        if self.peek(0) == Some(b'0') {
            let accept: Option<fn(u8) -> bool> = match self.peek(1) {
                Some(b'x' | b'X') => Some(|c: u8| c.is_ascii_hexdigit()),
                Some(b'o' | b'O') => Some(|c: u8| (b'0'..=b'7').contains(&c)),
                Some(b'b' | b'B') => Some(|c: u8| c == b'0' || c == b'1'),
                _ => None,
            };
            if let Some(accept) = accept {
                if self.peek(2).is_some_and(accept) {
                    self.pos += 2;
                    self.digits(accept);
                    return;
                }
            }
        }
        self.digits(|c| c.is_ascii_digit());
        // `1..10` is not a fraction: PostgreSQL reads the first dot only when no dot follows.
        if self.peek(0) == Some(b'.') && self.peek(1) != Some(b'.') {
            self.pos += 1;
            self.digits(|c| c.is_ascii_digit());
        }
        if matches!(self.peek(0), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.peek(1), Some(b'+' | b'-')));
            if self.peek(1 + sign).is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1 + sign;
                self.digits(|c| c.is_ascii_digit());
            }
        }
    }

    /// An operator run, cut where a comment starts; a multi-character operator may end in
    /// `+` or `-` only if it holds one of `~!@#%^&|`?` (so `=-1` is `=` then `-`).
    fn operator(&mut self) {
        let start = self.pos;
        while let Some(b) = self.peek(0) {
            if !is_op_char(b) {
                break;
            }
            if self.pos > start
                && ((b == b'-' && self.peek(1) == Some(b'-'))
                    || (b == b'/' && self.peek(1) == Some(b'*')))
            {
                break;
            }
            self.pos += 1;
        }
        let run = &self.bytes[start..self.pos];
        if run.len() > 1 && !run.iter().any(|c| b"~!@#%^&|`?".contains(c)) {
            let mut end = self.pos;
            while end > start + 1 && matches!(self.bytes[end - 1], b'+' | b'-') {
                end -= 1;
            }
            self.pos = end;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(TokenKind, &str, bool)> {
        tokenize(src, LexLimits::default())
            .tokens
            .into_iter()
            .map(|t| (t.kind, t.text, t.unterminated))
            .collect()
    }

    #[test]
    fn keywords_are_case_insensitive_and_names_are_identifiers() {
        let toks = kinds("SeLeCt username FROM users");
        assert_eq!(toks[0].0, TokenKind::Keyword);
        assert_eq!(toks[1].0, TokenKind::Ident);
        assert_eq!(toks[2].0, TokenKind::Keyword);
        assert_eq!(toks[3], (TokenKind::Ident, "users", false));
        assert!(
            KEYWORDS.windows(2).all(|w| w[0] < w[1]),
            "keyword list sorted"
        );
    }

    #[test]
    fn the_keyword_table_holds_every_keyword_and_nothing_else() {
        for word in KEYWORDS {
            assert!(is_keyword(word), "{word}");
            assert!(is_keyword(&word.to_ascii_uppercase()), "{word}");
            // One byte more or less is another word (unless that is a keyword too).
            let longer = format!("{word}x");
            assert_eq!(is_keyword(&longer), KEYWORDS.contains(&longer.as_str()));
            let shorter = &word[..word.len() - 1];
            assert_eq!(is_keyword(shorter), KEYWORDS.contains(&shorter));
        }
        for word in [
            "",
            "users",
            "selec",
            "selectt",
            "pg_sleep",
            "sélect",
            "x".repeat(30).as_str(),
        ] {
            assert!(!is_keyword(word), "{word}");
        }
    }

    #[test]
    fn standard_strings_double_their_quotes() {
        let toks = kinds("'it''s' 'a'");
        assert_eq!(toks[0].1, "'it''s'");
        assert_eq!(toks[1].1, "'a'");
        // A backslash is an ordinary character in a standard string.
        assert_eq!(kinds(r"'a\' OR 1=1")[0].1, r"'a\'");
    }

    #[test]
    fn escape_strings_take_backslashes() {
        let toks = kinds(r"E'it\'s' x");
        assert_eq!(
            toks[0],
            (TokenKind::String(StringKind::Escape), r"E'it\'s'", false)
        );
        assert_eq!(toks[1].1, "x");
    }

    #[test]
    fn unicode_bit_and_national_strings() {
        let toks = kinds("U&'d\\0061t' B'0101' X'1F' N'x' U&\"col\"");
        assert_eq!(toks[0].0, TokenKind::String(StringKind::Unicode));
        assert_eq!(toks[1].0, TokenKind::BitString);
        assert_eq!(toks[2].0, TokenKind::BitString);
        assert_eq!(toks[3].0, TokenKind::String(StringKind::Standard));
        assert_eq!(toks[4].0, TokenKind::QuotedIdent);
    }

    #[test]
    fn dollar_quotes_with_and_without_tags() {
        let toks = kinds("$$a 'b' $x$ c$$ $fn$ body $$ inner $fn$ $1");
        assert_eq!(
            toks[0],
            (
                TokenKind::String(StringKind::Dollar),
                "$$a 'b' $x$ c$$",
                false
            )
        );
        assert_eq!(toks[1].1, "$fn$ body $$ inner $fn$");
        assert_eq!(toks[2].0, TokenKind::Param);
        let open = kinds("SELECT $q$ never closed");
        assert!(open[1].2, "unterminated dollar quote");
    }

    #[test]
    fn quoted_identifiers_are_never_keywords() {
        let toks = kinds(r#""select"."Weird ""x""""#);
        assert_eq!(toks[0].0, TokenKind::QuotedIdent);
        assert_eq!(toks[1].1, ".");
        assert_eq!(toks[2].1, r#""Weird ""x""""#);
    }

    #[test]
    fn comments_line_and_nested_block() {
        let toks = kinds("a -- rest\nb /* x /* y */ z */ c /* open");
        assert_eq!(toks[1], (TokenKind::LineComment, "-- rest", false));
        assert_eq!(
            toks[3],
            (TokenKind::BlockComment, "/* x /* y */ z */", false)
        );
        assert_eq!(toks[5], (TokenKind::BlockComment, "/* open", true));
        // A comment inside an operator run ends the operator.
        let toks = kinds("1=--x");
        assert_eq!(toks[1].1, "=");
        assert_eq!(toks[2].0, TokenKind::LineComment);
    }

    #[test]
    fn numeric_forms() {
        for n in [
            "1", "1.5", ".5", "1e10", "1.5E-3", "0x1F", "0o17", "0b101", "1_000", "5.",
        ] {
            let toks = kinds(n);
            assert_eq!(toks.len(), 1, "{n}: {toks:?}");
            assert_eq!(toks[0].0, TokenKind::Number, "{n}");
        }
        let toks = kinds("1..10");
        assert_eq!(toks[0].1, "1");
    }

    #[test]
    fn operators_casts_and_punctuation() {
        let toks = kinds("a::int>=-1 <> b || c ->> 'k' @> x");
        let texts: Vec<&str> = toks.iter().map(|t| t.1).collect();
        assert_eq!(
            texts,
            ["a", "::", "int", ">=", "-", "1", "<>", "b", "||", "c", "->>", "'k'", "@>", "x"]
        );
        assert_eq!(toks[1].0, TokenKind::Cast);
        let toks = kinds("f(a, b[1]);");
        assert!(toks.iter().filter(|t| t.0 == TokenKind::Punct).count() == 6);
    }

    #[test]
    fn unterminated_literals_are_flagged() {
        assert!(kinds("SELECT 'abc")[1].2);
        assert!(kinds("SELECT \"abc")[1].2);
        assert!(kinds("SELECT E'abc\\'")[1].2);
    }

    #[test]
    fn limits_cap_the_work() {
        let src = "a ".repeat(100);
        let lexed = tokenize(
            &src,
            LexLimits {
                max_bytes: 8192,
                max_tokens: 10,
            },
        );
        assert_eq!(lexed.tokens.len(), 10);
        assert!(lexed.capped);
        // A byte cap inside a multi-byte character backs off to its start.
        let lexed = tokenize(
            "'é'",
            LexLimits {
                max_bytes: 2,
                max_tokens: 10,
            },
        );
        assert!(lexed.capped);
        assert_eq!(lexed.tokens[0].text, "'");
    }

    #[test]
    fn never_panics_on_odd_input() {
        let samples = [
            "",
            "$",
            "$$",
            "$a",
            "$a$",
            "'",
            "E'\\",
            "U&",
            "U&'",
            "/*",
            "--",
            "0x",
            "1e",
            "1e+",
            "\u{0}\u{7f}é€😀",
            "é'é",
            "E'\\é'",
            "::",
            "\\",
            "{}",
            "$1$",
            "x$y$",
            ".",
            "..",
        ];
        for s in samples {
            let lexed = tokenize(s, LexLimits::default());
            let total: usize = lexed.tokens.iter().map(|t| t.text.len()).sum();
            assert!(total <= s.len());
        }
        // Every byte position of a mixed string as a starting point.
        let mixed = "SELECT E'\\'é' || $t$x$t$ /* é */ \"q\" -- é\n1.5e3 U&'\\00e9'";
        for i in 0..mixed.len() {
            if mixed.is_char_boundary(i) {
                let _ = tokenize(&mixed[i..], LexLimits::default());
            }
        }
    }

    #[test]
    fn layout_flags() {
        let toks = tokenize("a\n b c", LexLimits::default()).tokens;
        assert!(!toks[0].space_before);
        assert!(toks[1].newline_before && toks[1].space_before);
        assert!(toks[2].space_before && !toks[2].newline_before);
    }
}
