//! The analysis of one query: its statements, the tables and functions it touches, and what
//! an injection did to its structure (a constant predicate joined by OR, a UNION of constants
//! after a query on a real table, a statement stacked after a literal, a comment swallowing
//! the template's tail...), each finding with a confidence so policies can choose.
//!
//! Structure over keywords: words alone (`union`, `or`, `--` inside a literal, `pg_catalog`
//! in psql's own queries) never make a finding; where they sit does. Every decision reads
//! only what the query's shape keeps (token kinds, names, the numbers 0 and 1, comment
//! classes), so a verdict cached by shape is exact (see `shape`).

use super::{
    lexer::{tokenize, LexLimits, StringKind, Token, TokenKind},
    shape::{
        block_comment_inline, block_comment_versioned, hex_number, line_comment_cuts,
        line_comment_swallows, shape_of, string_continues, ShapeCache, ShapeHash, SqlNames,
    },
};

/// The score at which an analysis is an injection (noisy-or of the strongest finding of
/// each kind).
pub const INJECTION_SCORE: f32 = 0.8;

/// The most names (tables, functions) kept per query.
const MAX_NAMES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    /// CREATE, ALTER, DROP, TRUNCATE, GRANT, REVOKE, COMMENT.
    Ddl,
    Copy,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT...
    Transaction,
    /// SET, RESET, SHOW.
    Session,
    Do,
    Call,
    Explain,
    Other,
}

impl StatementKind {
    pub const ALL: [StatementKind; 13] = [
        StatementKind::Select,
        StatementKind::Insert,
        StatementKind::Update,
        StatementKind::Delete,
        StatementKind::Merge,
        StatementKind::Ddl,
        StatementKind::Copy,
        StatementKind::Transaction,
        StatementKind::Session,
        StatementKind::Do,
        StatementKind::Call,
        StatementKind::Explain,
        StatementKind::Other,
    ];

    /// The name policies use (`sql_statement`), as in `policy::vocab::SQL_STATEMENTS`.
    pub const fn name(self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Merge => "merge",
            StatementKind::Ddl => "ddl",
            StatementKind::Copy => "copy",
            StatementKind::Transaction => "transaction",
            StatementKind::Session => "session",
            StatementKind::Do => "do",
            StatementKind::Call => "call",
            StatementKind::Explain => "explain",
            StatementKind::Other => "other",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    fn is_dml(self) -> bool {
        matches!(
            self,
            StatementKind::Select
                | StatementKind::Insert
                | StatementKind::Update
                | StatementKind::Delete
                | StatementKind::Merge
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A constant predicate joined by OR (`OR 1=1`, `OR 'a'='a'`) or AND (`AND 1=2`, a
    /// boolean-blind probe), or a constant CASE WHEN.
    Tautology,
    UnionExtraction,
    StackedStatement,
    CommentTruncation,
    TimeBased,
    ErrorBased,
    CatalogProbe,
    FileAccess,
    Obfuscation,
    /// A scalar subquery concatenated into a literal (`''||(SELECT ...)||''`).
    InlineQuery,
    /// What no application sends: an unterminated literal, two literals side by side,
    /// a `)` with no `(`, a statement starting with a literal.
    Malformed,
    /// Another engine's functions or syntax (`group_concat`, `user()`, `SELECT TOP`): an
    /// application written for PostgreSQL does not send them, a scanner fingerprinting the
    /// engine does.
    ForeignDialect,
}

impl FindingKind {
    /// The name policies use (`sql_finding`), as in `policy::vocab::SQL_FINDINGS`.
    pub const fn name(self) -> &'static str {
        match self {
            FindingKind::Tautology => "tautology",
            FindingKind::UnionExtraction => "union_extraction",
            FindingKind::StackedStatement => "stacked_statement",
            FindingKind::CommentTruncation => "comment_truncation",
            FindingKind::TimeBased => "time_based",
            FindingKind::ErrorBased => "error_based",
            FindingKind::CatalogProbe => "catalog_probe",
            FindingKind::FileAccess => "file_access",
            FindingKind::Obfuscation => "obfuscation",
            FindingKind::InlineQuery => "inline_query",
            FindingKind::Malformed => "malformed",
            FindingKind::ForeignDialect => "foreign_dialect",
        }
    }

    pub const ALL: [FindingKind; 12] = [
        FindingKind::Tautology,
        FindingKind::UnionExtraction,
        FindingKind::StackedStatement,
        FindingKind::CommentTruncation,
        FindingKind::TimeBased,
        FindingKind::ErrorBased,
        FindingKind::CatalogProbe,
        FindingKind::FileAccess,
        FindingKind::Obfuscation,
        FindingKind::InlineQuery,
        FindingKind::Malformed,
        FindingKind::ForeignDialect,
    ];

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of finding kinds, as bits (`FindingKind as u16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, serde::Serialize)]
pub struct FindingKinds(pub u16);

impl FindingKinds {
    pub fn contains(self, kind: FindingKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = FindingKind> {
        FindingKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// Byte offset in the query of the token the finding points at.
    pub offset: usize,
    pub detail: &'static str,
    /// 0..1: how surely this finding means injection rather than unusual SQL.
    pub confidence: f32,
}

/// What a cache keeps of an analysis: enough for a policy's injection and statement-kind
/// conditions without re-analysing.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Verdict {
    pub injection: bool,
    pub score: f32,
    pub kinds: FindingKinds,
    /// Bits of `StatementKind as u16`.
    pub statements: u16,
}

impl Verdict {
    pub fn has_statement(&self, kind: StatementKind) -> bool {
        self.statements & kind.bit() != 0
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Analysis {
    pub statements: Vec<StatementKind>,
    /// Normalised names (unquoted ones lowercased), qualified as written, deduplicated.
    pub tables: Vec<String>,
    pub functions: Vec<String>,
    pub findings: Vec<Finding>,
    /// The lexer's limits cut the query: end-of-text findings are not made.
    pub capped: bool,
    pub shape: ShapeHash,
}

impl Analysis {
    /// Noisy-or of the strongest finding of each kind.
    pub fn score(&self) -> f32 {
        let mut best = [0f32; FindingKind::ALL.len()];
        for f in &self.findings {
            let slot = &mut best[f.kind as usize];
            *slot = slot.max(f.confidence);
        }
        1.0 - best.iter().fold(1.0, |acc, c| acc * (1.0 - c))
    }

    pub fn is_injection(&self) -> bool {
        self.score() >= INJECTION_SCORE
    }

    pub fn kinds(&self) -> FindingKinds {
        FindingKinds(self.findings.iter().fold(0, |acc, f| acc | f.kind.bit()))
    }

    pub fn verdict(&self) -> Verdict {
        let score = self.score();
        Verdict {
            injection: score >= INJECTION_SCORE,
            score,
            kinds: self.kinds(),
            statements: self.statements.iter().fold(0, |acc, k| acc | k.bit()),
        }
    }
}

/// A verdict for one query, from the cache or fresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub shape: ShapeHash,
    pub cached: bool,
    /// The tables and functions it names (cached with the verdict).
    pub names: std::sync::Arc<SqlNames>,
}

/// The analyzer with its limits. Stateless: share it freely.
#[derive(Debug, Clone, Copy, Default)]
pub struct Analyzer {
    pub limits: LexLimits,
}

impl Analyzer {
    pub fn new(limits: LexLimits) -> Analyzer {
        Analyzer { limits }
    }

    /// The full analysis of `query`. `truncated`: the capture was cut (so an open literal
    /// at the end is the capture's doing, not the query's).
    pub fn analyze(&self, query: &str, truncated: bool) -> Analysis {
        let lexed = tokenize(query, self.limits);
        let shape = shape_of(&lexed.tokens);
        let mut analysis = analyze_tokens(&lexed.tokens, lexed.capped || truncated);
        analysis.shape = shape.hash;
        analysis
    }

    /// The verdict of `query`, from `cache` when its shape was judged before.
    pub fn judge(&self, cache: &mut ShapeCache, query: &str, truncated: bool) -> Judgement {
        let lexed = tokenize(query, self.limits);
        let capped = lexed.capped || truncated;
        let mut shape = shape_of(&lexed.tokens).hash;
        // A cut query is judged without its end; keep those verdicts apart.
        if capped {
            shape = ShapeHash(shape.0 ^ 0x9e37_79b9_7f4a_7c15);
        }
        if let Some((verdict, names)) = cache.get_with_names(shape) {
            return Judgement {
                verdict,
                shape,
                cached: true,
                names,
            };
        }
        let analysis = analyze_tokens(&lexed.tokens, capped);
        let verdict = analysis.verdict();
        let names = std::sync::Arc::new(SqlNames {
            tables: analysis.tables.iter().map(|t| t.as_str().into()).collect(),
            functions: analysis
                .functions
                .iter()
                .map(|f| f.as_str().into())
                .collect(),
        });
        cache.insert_with_names(shape, verdict, names.clone());
        Judgement {
            verdict,
            shape,
            cached: false,
            names,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Word lists. Lowercase; matched against the last part of a (qualified) name.

const SLEEP_FUNCS: &[&str] = &["pg_sleep", "pg_sleep_for", "pg_sleep_until"];
/// Delay primitives of other engines: they do not exist in PostgreSQL, so an application
/// never sends them; a scanner probing for the engine does.
const FOREIGN_SLEEP: &[&str] = &["sleep", "benchmark", "waitfor", "dbms_lock", "randomblob"];
const FILE_FUNCS: &[&str] = &[
    "lo_import",
    "lo_export",
    "lo_from_bytea",
    "lo_put",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_file_write",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_send_query",
    "load_file",
    "xp_cmdshell",
    "xp_dirtree",
    "utl_http",
    "utl_inaddr",
];
const XML_ERROR_FUNCS: &[&str] = &[
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "database_to_xml",
    "schema_to_xml",
    "table_to_xml",
    "extractvalue",
    "updatexml",
    "xmltype",
];
/// Functions that reveal the server rather than the application's data.
const PROBE_FUNCS: &[&str] = &[
    "version",
    "current_database",
    "current_schemas",
    "inet_server_addr",
    "inet_server_port",
    "inet_client_addr",
    "pg_postmaster_start_time",
    "pg_backend_pid",
    "has_database_privilege",
    "has_table_privilege",
    "pg_has_role",
    "user_name",
    "db_name",
    "database",
    "schema",
];
/// Functions PostgreSQL does not have and scanners send (MySQL, SQL Server, SQLite).
/// Some could exist as user-defined compatibility functions, so they stay under the
/// injection score alone.
const FOREIGN_FUNCS: &[&str] = &[
    "group_concat",
    "elt",
    "json_keys",
    "make_set",
    "extractvalue",
    "updatexml",
    "ifnull",
    "hex",
    "unhex",
    "mid",
    "if",
    "iif",
    "isnull",
    "nvl",
    "quotename",
    "db_name",
    "user_name",
    "sqlite_version",
    "randomblob",
    "load_extension",
    "char",
    "schema",
    "database",
    "user",
    "system_user",
    "connection_id",
    "last_insert_id",
    "row_count",
    "found_rows",
    "uuid_short",
    "geometrycollection",
    "multipoint",
    "linestring",
    "multilinestring",
    "multipolygon",
    "name_const",
    "rand",
    "crc32",
];

/// The foreign functions no PostgreSQL schema plausibly defines.
const FOREIGN_FUNCS_SURE: &[&str] = &[
    "group_concat",
    "elt",
    "json_keys",
    "make_set",
    "extractvalue",
    "updatexml",
    "load_extension",
    "sqlite_version",
    "randomblob",
    "name_const",
    "binary",
];
/// Packages of other engines (`utl_http.request(...)`).
const FOREIGN_PACKAGES: &[&str] = &[
    "utl_http",
    "utl_inaddr",
    "utl_file",
    "dbms_pipe",
    "dbms_lock",
    "dbms_xmlgen",
    "dbms_java",
    "ctxsys",
    "sys",
    "master",
    "xp",
];
const TYPE_WORDS: &[&str] = &[
    "date",
    "time",
    "timestamp",
    "interval",
    "char",
    "character",
    "varchar",
    "numeric",
    "decimal",
    "int",
    "integer",
    "bigint",
    "smallint",
    "real",
    "float",
    "double",
    "boolean",
    "bit",
    "text",
    "json",
    "xml",
    "nchar",
    "national",
    "varying",
    "precision",
    "zone",
];

/// Words that continue a type name after its first word.
const TYPE_CONTINUATION: &[&str] = &["precision", "varying"];

/// Value keywords that read the session (`OR current_user = 'x'` is constant to the query).
const SESSION_VALUES: &[&str] = &[
    "current_user",
    "session_user",
    "current_role",
    "user",
    "system_user",
    "current_catalog",
    "current_schema",
];
const VALUE_WORDS: &[&str] = &[
    "true",
    "false",
    "null",
    "unknown",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
];
/// Functions an inference probe applies to an extracted value.
const INFERENCE_FUNCS: &[&str] = &[
    "ascii",
    "substr",
    "substring",
    "length",
    "char_length",
    "chr",
    "char",
    "mid",
    "ord",
    "unicode",
    "strpos",
    "bit_length",
];
const SENSITIVE_CATALOG: &[&str] = &[
    "pg_shadow",
    "pg_authid",
    "pg_user",
    "pg_roles",
    "pg_group",
    "pg_auth_members",
    "pg_user_mapping",
    "pg_user_mappings",
    "pg_largeobject",
    "pg_settings",
    "pg_file_settings",
    "pg_hba_file_rules",
    "pg_stat_activity",
];
/// Catalogs of other engines (no PostgreSQL application reads them).
const FOREIGN_CATALOG: &[&str] = &[
    "sysobjects",
    "syscolumns",
    "sysusers",
    "sysdatabases",
    "sysprocesses",
    "sqlite_master",
    "sqlite_schema",
    "all_tables",
    "all_users",
    "all_tab_columns",
    "v$version",
    "sysibm",
    "systables",
    "rdb$fields",
    "rdb$types",
    "rdb$collations",
    "rdb$relations",
    "msysaccessobjects",
    "msysobjects",
];
/// Columns an extraction goes for.
const SECRET_COLUMNS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "usename",
    "rolpassword",
    "password_hash",
    "secret",
];
/// Words after which `name (` is not a function call.
const NOT_FUNCTIONS: &[&str] = &[
    "in",
    "values",
    "exists",
    "any",
    "all",
    "some",
    "over",
    "filter",
    "as",
    "on",
    "using",
    "and",
    "or",
    "not",
    "where",
    "from",
    "select",
    "join",
    "table",
    "into",
    "window",
    "partition",
    "by",
    "within",
    "group",
    "returning",
    "conflict",
    "lateral",
    "union",
    "intersect",
    "except",
    "when",
    "then",
    "else",
    "case",
    "between",
    "like",
    "ilike",
    "is",
    "distinct",
    "with",
    "recursive",
    "set",
    "update",
    "insert",
    "delete",
    "limit",
    "offset",
    "order",
    "having",
    "default",
    "check",
    "unique",
    "primary",
    "references",
    "key",
    "index",
    "do",
    "array",
    "row",
    "only",
    "returns",
    "rows",
    "range",
    "groups",
    "including",
    "excluding",
    "include",
    "matched",
    "cube",
    "rollup",
    "sets",
    "tablesample",
    "to",
    "escape",
    "similar",
    "overlaps",
    "at",
    "zone",
    "view",
    "type",
    "domain",
    "constraint",
    "foreign",
    "exclude",
    "function",
    "procedure",
    "trigger",
    "execute",
    "for",
    "of",
    "if",
    "language",
    "unnest",
];
/// Words before a parenthesised subquery that are not in `NOT_FUNCTIONS`.
const SUBQUERY_OPENERS: &[&str] = &["materialized", "return"];
/// First words of DDL statements.
const DDL_HEADS: &[&str] = &["create", "alter", "drop", "grant", "revoke", "comment"];
const CLAUSE_WORDS: &[&str] = &[
    "then",
    "else",
    "end",
    "when",
    "order",
    "group",
    "limit",
    "offset",
    "union",
    "intersect",
    "except",
    "having",
    "window",
    "returning",
    "from",
    "where",
    "into",
    "fetch",
    "for",
    "on",
    "join",
    "left",
    "right",
    "inner",
    "cross",
    "full",
    "natural",
    "select",
    "do",
    "set",
    "using",
    "as",
    "asc",
    "desc",
    "nulls",
];

fn in_list(word: &str, list: &[&str]) -> bool {
    list.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// The parenthesis at `open` holds a function's arguments (`extract(year FROM x)`), not a
/// subquery or a list. Asked only when a FROM appears inside, so the name lists are not
/// searched at every parenthesis.
fn holds_arguments(toks: &[Token<'_>], open: usize) -> bool {
    open.checked_sub(1)
        .and_then(|p| toks.get(p))
        .is_some_and(|p| p.is_name() && !tok_in(p, NOT_FUNCTIONS) && !tok_in(p, SUBQUERY_OPENERS))
}

fn tok_in(t: &Token<'_>, list: &[&str]) -> bool {
    matches!(t.kind, TokenKind::Keyword | TokenKind::Ident) && in_list(t.text, list)
}

/// The last part of a name, unquoted, for list matching (`pg_catalog."pg_user"` -> pg_user).
fn bare<'q>(t: &Token<'q>) -> &'q str {
    if t.kind == TokenKind::QuotedIdent {
        t.text
            .trim_start_matches("U&")
            .trim_start_matches('"')
            .trim_end_matches('"')
    } else {
        t.text
    }
}

fn normalise_name(parts: &[Token<'_>]) -> String {
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if p.kind == TokenKind::QuotedIdent {
            out.push_str(&bare(p).replace("\"\"", "\""));
        } else {
            out.extend(p.text.chars().map(|c| c.to_ascii_lowercase()));
        }
    }
    out
}

fn is_catalog_name(parts: &[Token<'_>]) -> bool {
    parts.iter().any(|p| {
        let b = bare(p);
        b.len() > 3 && b.as_bytes()[..3].eq_ignore_ascii_case(b"pg_")
            || b.eq_ignore_ascii_case("information_schema")
            || in_list(b, FOREIGN_CATALOG)
    }) || (parts.len() >= 2 && bare(&parts[0]).eq_ignore_ascii_case("mysql"))
}

/// Numbers are one class to the analyzer (the shape keeps no value): `1=1` and `5=5` are
/// the same structure.
fn numeric(t: &Token<'_>) -> bool {
    t.kind == TokenKind::Number
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clause {
    None,
    Select,
    From,
    Where,
    Having,
    On,
    Group,
    Order,
    Limit,
    Set,
    Values,
    Returning,
}

fn clause_of(t: &Token<'_>) -> Option<Clause> {
    if t.kind != TokenKind::Keyword {
        return None;
    }
    let w = t.text;
    Some(if w.eq_ignore_ascii_case("select") {
        Clause::Select
    } else if w.eq_ignore_ascii_case("from") || w.eq_ignore_ascii_case("join") {
        Clause::From
    } else if w.eq_ignore_ascii_case("where") {
        Clause::Where
    } else if w.eq_ignore_ascii_case("having") {
        Clause::Having
    } else if w.eq_ignore_ascii_case("on") {
        Clause::On
    } else if w.eq_ignore_ascii_case("group") {
        Clause::Group
    } else if w.eq_ignore_ascii_case("order") {
        Clause::Order
    } else if w.eq_ignore_ascii_case("limit") || w.eq_ignore_ascii_case("offset") {
        Clause::Limit
    } else if w.eq_ignore_ascii_case("set") {
        Clause::Set
    } else if w.eq_ignore_ascii_case("values") {
        Clause::Values
    } else if w.eq_ignore_ascii_case("returning") {
        Clause::Returning
    } else {
        return None;
    })
}

/// Code tokens (comments removed) with their nesting depth and clause.
struct Code<'q> {
    toks: Vec<Token<'q>>,
    depth: Vec<u32>,
    clause: Vec<Clause>,
    /// Index of the matching `)` for each `(` (usize::MAX when unclosed).
    close: Vec<usize>,
    /// Whether token i calls a function (computed once: the checks ask it many times).
    call: Vec<bool>,
}

impl<'q> Code<'q> {
    fn new(all: &[Token<'q>]) -> Code<'q> {
        let toks: Vec<Token<'q>> = all.iter().filter(|t| !t.is_comment()).copied().collect();
        let n = toks.len();
        let mut depth = Vec::with_capacity(n);
        let mut clause = Vec::with_capacity(n);
        let mut close = vec![usize::MAX; n];
        let mut opens: Vec<usize> = Vec::new();
        let mut clauses: Vec<Clause> = vec![Clause::None];
        // The statement is DDL: its ON names a table (`CREATE INDEX i ON t (c opclass)`).
        let mut ddl = false;
        for (i, t) in toks.iter().enumerate() {
            let prev = i.checked_sub(1).map(|p| &toks[p]);
            if prev.is_none_or(|p| p.is_punct(b';')) {
                ddl = tok_in(t, DDL_HEADS);
            }
            if t.is_punct(b';') {
                opens.clear();
                clauses.clear();
                clauses.push(Clause::None);
            }
            if t.is_punct(b')') {
                if let Some(o) = opens.pop() {
                    close[o] = i;
                }
                if clauses.len() > 1 {
                    clauses.pop();
                }
            }
            if let Some(c) = clause_of(t) {
                // The FROM of `extract(... FROM x)`, `substring(s FROM 2)`, `IS DISTINCT
                // FROM x` reads no table; the ON of DDL is no join predicate.
                let not_a_clause = (c == Clause::From
                    && t.is_word("from")
                    && (prev.is_some_and(|p| p.is_word("distinct"))
                        || opens.last().is_some_and(|&o| holds_arguments(&toks, o))))
                    || (c == Clause::On && ddl);
                if !not_a_clause {
                    if let Some(top) = clauses.last_mut() {
                        *top = c;
                    }
                }
            }
            depth.push(opens.len() as u32);
            clause.push(clauses.last().copied().unwrap_or(Clause::None));
            if t.is_punct(b'(') {
                opens.push(i);
                let inherited = clauses.last().copied().unwrap_or(Clause::None);
                clauses.push(inherited);
            }
        }
        let mut code = Code {
            toks,
            depth,
            clause,
            close,
            call: Vec::new(),
        };
        code.call = (0..n).map(|i| code.compute_call(i)).collect();
        code
    }

    fn is_call(&self, i: usize) -> bool {
        self.call.get(i).copied().unwrap_or(false)
    }

    fn get(&self, i: usize) -> Option<&Token<'q>> {
        self.toks.get(i)
    }

    fn word(&self, i: usize, w: &str) -> bool {
        self.toks.get(i).is_some_and(|t| t.is_word(w))
    }

    fn punct(&self, i: usize, c: u8) -> bool {
        self.toks.get(i).is_some_and(|t| t.is_punct(c))
    }

    fn compute_call(&self, i: usize) -> bool {
        let Some(t) = self.toks.get(i) else {
            return false;
        };
        if !t.is_name() || !self.punct(i + 1, b'(') || tok_in(t, NOT_FUNCTIONS) {
            return false;
        }
        match i.checked_sub(1).and_then(|p| self.toks.get(p)) {
            Some(p) => {
                !(tok_in(
                    p,
                    &[
                        "into",
                        "table",
                        "references",
                        "on",
                        "index",
                        "exists",
                        "view",
                        "only",
                        "type",
                    ],
                ) || p.kind == TokenKind::Cast)
            }
            None => true,
        }
    }

    /// A call of a function whose bare name is in `list`.
    fn calls(&self, i: usize, list: &[&str]) -> bool {
        self.is_call(i) && self.toks.get(i).is_some_and(|t| in_list(bare(t), list))
    }

    /// The end (exclusive) of a qualified name starting at `i`.
    fn name_end(&self, i: usize) -> usize {
        let mut j = i + 1;
        while self.punct(j, b'.') && self.toks.get(j + 1).is_some_and(|t| t.is_name()) {
            j += 2;
        }
        j
    }

    /// The parts of the qualified name starting at `i`.
    fn name_parts(&self, i: usize) -> Vec<Token<'q>> {
        let end = self.name_end(i);
        (i..end)
            .step_by(2)
            .filter_map(|k| self.toks.get(k).copied())
            .collect()
    }

    /// The end (exclusive) of the type name starting at `i` (after `::` or `AS`): a
    /// qualified name, then only the words that continue a type (`double precision`,
    /// `character varying`, `timestamp with time zone`). Never the `IS NULL OR ...` after it.
    fn type_name_end(&self, i: usize) -> usize {
        if !self.get(i).is_some_and(|t| t.is_name()) {
            return i;
        }
        let mut j = self.name_end(i);
        loop {
            let zone = (self.word(j, "with") || self.word(j, "without"))
                && self.word(j + 1, "time")
                && self.word(j + 2, "zone");
            if zone {
                j += 3;
            } else if self.get(j).is_some_and(|t| tok_in(t, TYPE_CONTINUATION)) {
                j += 1;
            } else {
                return j;
            }
        }
    }

    /// The end (exclusive) of the operand starting at `start`: the next AND/OR, comma,
    /// clause word or closing parenthesis at the operand's own depth.
    fn operand_end(&self, start: usize, limit: usize) -> usize {
        let base = self.depth.get(start).copied().unwrap_or(0);
        let mut between = 0usize;
        let mut case = 0usize;
        let mut i = start;
        while i < limit {
            let t = &self.toks[i];
            let d = self.depth[i];
            if t.is_punct(b')') && d < base {
                return i;
            }
            if t.is_punct(b';') {
                return i;
            }
            if d == base {
                if t.is_word("between") {
                    between += 1;
                } else if t.is_word("case") {
                    case += 1;
                } else if case > 0 && t.is_word("end") {
                    case -= 1;
                } else if t.is_word("and") && between > 0 {
                    between -= 1;
                } else if case == 0
                    && (t.is_word("and")
                        || t.is_word("or")
                        || t.is_punct(b',')
                        || (t.kind == TokenKind::Keyword && tok_in(t, CLAUSE_WORDS)))
                {
                    return i;
                }
            }
            i += 1;
        }
        limit
    }
}

#[derive(Debug, Default)]
struct Operand {
    constant: bool,
    /// Parenthesised as a whole, holding only numbers: a query builder's `(0 = 1)`.
    builder_idiom: bool,
    subquery: bool,
    inference: bool,
    catalog: bool,
    sleep: bool,
    /// `a = a`, the same name on both sides of a comparison.
    self_compare: bool,
    /// A comparison or value with a literal in it (not a bare function call).
    has_literal: bool,
    /// A subquery without FROM: a constant computed by the server (`(SELECT
    /// QUOTE_IDENT(NULL)) IS NULL` asks whether a function exists).
    fromless_subquery: bool,
}

fn classify_operand(code: &Code<'_>, s: usize, e: usize) -> Operand {
    let mut op = Operand::default();
    if s >= e {
        return op;
    }
    let mut column = false;
    let mut values = 0usize;
    let mut all01 = true;
    let mut i = s;
    while i < e {
        let t = &code.toks[i];
        match t.kind {
            TokenKind::Number => {
                values += 1;
                op.has_literal = true;
            }
            TokenKind::String(_) | TokenKind::BitString | TokenKind::Param => {
                values += 1;
                op.has_literal = true;
                all01 = false;
            }
            TokenKind::Cast => {
                // `::type`, possibly `::double precision`, `::character varying(10)`.
                i = code.type_name_end(i + 1).saturating_sub(1).max(i);
            }
            TokenKind::Punct if t.is_punct(b'(') && code.word(i + 1, "select") => {
                op.subquery = true;
                values += 1;
                all01 = false;
                let close = code.close[i].min(e);
                let inner = code.depth[i + 1];
                if !(i + 1..close).any(|k| code.depth[k] == inner && code.word(k, "from")) {
                    op.fromless_subquery = true;
                }
                for k in i..close {
                    if code.calls(k, INFERENCE_FUNCS) {
                        op.inference = true;
                    }
                    if code.calls(k, PROBE_FUNCS)
                        || (code.toks[k].kind == TokenKind::Keyword
                            && tok_in(&code.toks[k], SESSION_VALUES))
                    {
                        op.catalog = true;
                    }
                    if code.calls(k, SLEEP_FUNCS) || code.calls(k, FOREIGN_SLEEP) {
                        op.sleep = true;
                    }
                    if code.toks[k].is_name()
                        && code
                            .toks
                            .get(k.wrapping_sub(1))
                            .is_some_and(|p| p.is_word("from") || p.is_word("join"))
                        && is_catalog_name(&code.name_parts(k))
                    {
                        op.catalog = true;
                    }
                }
                i = close;
            }
            TokenKind::Keyword | TokenKind::Ident | TokenKind::QuotedIdent => {
                if t.is_word("exists") {
                    // EXISTS (subquery) is how ORMs filter on related rows.
                    return Operand::default();
                }
                if code.is_call(i) {
                    values += 1;
                    all01 = false;
                    if code.calls(i, INFERENCE_FUNCS) {
                        op.inference = true;
                    }
                    if code.calls(i, SLEEP_FUNCS) || code.calls(i, FOREIGN_SLEEP) {
                        op.sleep = true;
                    }
                    if code.calls(i, PROBE_FUNCS) {
                        op.catalog = true;
                    }
                } else if t.kind == TokenKind::Keyword
                    && (tok_in(t, VALUE_WORDS) || tok_in(t, SESSION_VALUES))
                {
                    values += 1;
                    op.has_literal = true;
                    if !(t.is_word("true") || t.is_word("false")) {
                        all01 = false;
                    }
                } else if t.kind == TokenKind::Keyword
                    && tok_in(
                        t,
                        &[
                            "not",
                            "is",
                            "like",
                            "ilike",
                            "similar",
                            "to",
                            "between",
                            "and",
                            "in",
                            "escape",
                            "distinct",
                            "from",
                            "isnull",
                            "notnull",
                            "any",
                            "all",
                            "some",
                            "cast",
                            "as",
                            "case",
                            "when",
                            "then",
                            "else",
                            "end",
                            "array",
                            "collate",
                            "symmetric",
                        ],
                    )
                {
                    // operator words
                } else if code.get(i + 1).is_some_and(|n| {
                    matches!(n.kind, TokenKind::String(_)) && t.kind != TokenKind::QuotedIdent
                }) {
                    // typed literal: date '...', interval '...'
                } else if code.word(i.wrapping_sub(1), "as") {
                    // CAST(x AS type)
                } else {
                    column = true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    op.self_compare = self_compare(code, s, e);
    op.constant = !column && values > 0;
    op.builder_idiom =
        op.constant && all01 && code.punct(s, b'(') && code.close[s] == e.saturating_sub(1);
    op
}

/// `name op name` with the same (qualified) name on both sides.
fn self_compare(code: &Code<'_>, s: usize, e: usize) -> bool {
    if !code.get(s).is_some_and(|t| t.is_name()) {
        return false;
    }
    let left_end = code.name_end(s);
    let Some(op) = code.get(left_end) else {
        return false;
    };
    if !(op.is_op("=") || op.is_op(">=") || op.is_op("<=") || op.is_word("like")) {
        return false;
    }
    let r = left_end + 1;
    let right_end = code.name_end(r);
    if right_end != e || right_end - r != left_end - s {
        return false;
    }
    (0..left_end - s).all(|k| {
        let (a, b) = (&code.toks[s + k], &code.toks[r + k]);
        a.kind == b.kind && a.text.eq_ignore_ascii_case(b.text)
    })
}

struct Findings {
    list: Vec<Finding>,
}

impl Findings {
    fn add(&mut self, kind: FindingKind, at: &Token<'_>, detail: &'static str, confidence: f32) {
        // One finding per kind and detail is enough evidence; bounded for hostile input.
        if self.list.len() >= 32
            || self
                .list
                .iter()
                .any(|f| f.kind == kind && f.detail == detail && f.confidence >= confidence)
        {
            return;
        }
        self.list.push(Finding {
            kind,
            offset: at.start,
            detail,
            confidence,
        });
    }
}

struct Statement {
    start: usize,
    end: usize,
    kind: StatementKind,
}

fn statement_kind(code: &Code<'_>, s: usize, e: usize) -> StatementKind {
    let Some(first) = code.get(s) else {
        return StatementKind::Other;
    };
    let w = |word: &str| first.is_word(word);
    if w("with") {
        for i in s + 1..e {
            if code.depth[i] == code.depth[s] {
                for (word, kind) in [
                    ("select", StatementKind::Select),
                    ("insert", StatementKind::Insert),
                    ("update", StatementKind::Update),
                    ("delete", StatementKind::Delete),
                    ("merge", StatementKind::Merge),
                ] {
                    if code.word(i, word) {
                        return kind;
                    }
                }
            }
        }
        return StatementKind::Select;
    }
    if w("select") || w("values") || w("table") || first.is_punct(b'(') {
        StatementKind::Select
    } else if w("insert") {
        StatementKind::Insert
    } else if w("update") {
        StatementKind::Update
    } else if w("delete") {
        StatementKind::Delete
    } else if w("merge") {
        StatementKind::Merge
    } else if [
        "create", "alter", "drop", "truncate", "grant", "revoke", "comment", "reindex",
    ]
    .iter()
    .any(|k| w(k))
    {
        StatementKind::Ddl
    } else if w("copy") {
        StatementKind::Copy
    } else if [
        "begin",
        "start",
        "commit",
        "rollback",
        "end",
        "savepoint",
        "release",
        "abort",
    ]
    .iter()
    .any(|k| w(k))
        || (w("prepare") && code.word(s + 1, "transaction"))
    {
        StatementKind::Transaction
    } else if w("set") || w("reset") || w("show") {
        StatementKind::Session
    } else if w("do") {
        StatementKind::Do
    } else if w("call") {
        StatementKind::Call
    } else if w("explain") {
        StatementKind::Explain
    } else {
        StatementKind::Other
    }
}

/// The analysis of a token list (comments included), as `tokenize` made it.
pub fn analyze_tokens(all: &[Token<'_>], capped: bool) -> Analysis {
    let code = Code::new(all);
    let mut f = Findings { list: Vec::new() };
    let mut analysis = Analysis {
        capped,
        ..Analysis::default()
    };

    comment_findings(all, capped, &mut f);
    let n = code.toks.len();

    // Statements.
    let mut statements: Vec<Statement> = Vec::new();
    let mut s = 0;
    for i in 0..=n {
        if i == n || code.toks[i].is_punct(b';') {
            if i > s {
                statements.push(Statement {
                    start: s,
                    end: i,
                    kind: statement_kind(&code, s, i),
                });
            }
            s = i + 1;
        }
    }
    analysis.statements = statements.iter().map(|st| st.kind).collect();

    lexical_findings(&code, capped, &mut f);
    let ends_in_comment = all.last().is_some_and(|t| t.kind == TokenKind::LineComment);
    stacked_findings(&code, &statements, ends_in_comment, &mut f);
    for st in &statements {
        statement_findings(&code, st, statements.len(), &mut f, &mut analysis);
    }
    analysis.findings = f.list;
    analysis
}

fn comment_findings(all: &[Token<'_>], capped: bool, f: &mut Findings) {
    let mut after_code = false;
    for (i, t) in all.iter().enumerate() {
        if !t.is_comment() {
            after_code = true;
            continue;
        }
        match t.kind {
            TokenKind::LineComment if after_code && line_comment_swallows(t) => {
                f.add(
                    FindingKind::CommentTruncation,
                    t,
                    "line comment swallows the rest of a literal or clause",
                    0.9,
                );
            }
            TokenKind::LineComment if after_code && line_comment_cuts(all, i) => {
                f.add(
                    FindingKind::CommentTruncation,
                    t,
                    "line comment cuts the query's tail",
                    0.85,
                );
            }
            TokenKind::BlockComment if t.unterminated && after_code && !capped => {
                f.add(
                    FindingKind::CommentTruncation,
                    t,
                    "unterminated block comment swallows the rest",
                    0.9,
                );
            }
            TokenKind::BlockComment if block_comment_versioned(t.text) => {
                f.add(FindingKind::Obfuscation, t, "MySQL version comment", 0.9);
            }
            TokenKind::BlockComment if block_comment_inline(all, i) => {
                f.add(
                    FindingKind::Obfuscation,
                    t,
                    "inline comment glued between tokens",
                    0.85,
                );
            }
            _ => {}
        }
    }
}

/// What no application sends: unterminated literals, literals side by side, stray `)`.
fn lexical_findings(code: &Code<'_>, capped: bool, f: &mut Findings) {
    let mut depth: i64 = 0;
    for (i, t) in code.toks.iter().enumerate() {
        if t.unterminated && !capped {
            f.add(
                FindingKind::Malformed,
                t,
                "unterminated literal or quoted name",
                0.9,
            );
        }
        if t.is_punct(b'(') {
            depth += 1;
        } else if t.is_punct(b')') {
            depth -= 1;
            if depth < 0 {
                f.add(
                    FindingKind::Malformed,
                    t,
                    "closing parenthesis without an opening one",
                    0.85,
                );
                depth = 0;
            }
        } else if t.is_punct(b';') {
            if depth > 0 {
                f.add(
                    FindingKind::Malformed,
                    t,
                    "a statement ends inside parentheses",
                    0.85,
                );
            }
            depth = 0;
        }
        if let Some(next) = code.get(i + 1) {
            let lit = |x: &Token<'_>| {
                matches!(
                    x.kind,
                    TokenKind::String(_) | TokenKind::Number | TokenKind::BitString
                )
            };
            // 'a'\n'b' is one literal (continuation); 'a' 'b' on one line is an error.
            let continuation = string_continues(t, next);
            if lit(t) && lit(next) && !continuation {
                f.add(
                    FindingKind::Malformed,
                    next,
                    "two literals side by side",
                    0.85,
                );
            }
            let predicate = matches!(
                code.clause[i],
                Clause::Where
                    | Clause::Order
                    | Clause::Group
                    | Clause::Having
                    | Clause::On
                    | Clause::Limit
                    | Clause::Values
                    | Clause::Set
            );
            let name_follows = match next.kind {
                TokenKind::Ident | TokenKind::QuotedIdent => true,
                TokenKind::Keyword => !tok_in(next, AFTER_LITERAL),
                _ => false,
            };
            let name_name = matches!(t.kind, TokenKind::Ident | TokenKind::QuotedIdent)
                && matches!(next.kind, TokenKind::Ident | TokenKind::QuotedIdent)
                && !matches!(code.clause[i], Clause::Order | Clause::Group);
            if (lit(t) || name_name) && predicate && name_follows {
                f.add(
                    FindingKind::Malformed,
                    next,
                    "a name right after a literal in a predicate",
                    0.8,
                );
            }
            // `x 1`: no PostgreSQL construct puts a number after a plain name.
            if t.kind == TokenKind::Ident && next.kind == TokenKind::Number {
                f.add(
                    FindingKind::Malformed,
                    next,
                    "a number right after a name",
                    0.8,
                );
            }
            // (`arr[1:2]` slices after a number, so `:` and `.` count after strings only.)
            let string = matches!(t.kind, TokenKind::String(_));
            if (lit(t) && next.is_punct(b'('))
                || (string && (next.is_punct(b'.') || next.is_punct(b':')))
            {
                f.add(
                    FindingKind::Malformed,
                    next,
                    "a literal followed by a call, field or slice",
                    0.8,
                );
            }
            // Arithmetic or bitwise operators on an untyped string literal (`'a'|'b'`,
            // `''-''`): MySQL idioms, type errors here.
            let typed = i > 0 && {
                let p = &code.toks[i - 1];
                matches!(p.kind, TokenKind::Ident | TokenKind::QuotedIdent)
                    || (p.kind == TokenKind::Keyword && tok_in(p, TYPE_WORDS))
            };
            if matches!(t.kind, TokenKind::String(_))
                && !typed
                && next.kind == TokenKind::Operator
                && STRING_ARITHMETIC.contains(&next.text)
            {
                f.add(
                    FindingKind::Malformed,
                    next,
                    "arithmetic on a string literal",
                    0.8,
                );
            }
            // An operator with nothing on its right, a clause word where a value belongs.
            // (`OPERATOR(pg_catalog.~)` names an operator: `.` or `(` before it.)
            if next.kind == TokenKind::Operator
                && next.text != "*"
                && !(t.is_punct(b'.')
                    || t.kind == TokenKind::Operator
                    || t.is_word("using")
                    || t.is_word("with")
                    || (t.is_punct(b'(') && code.word(i.wrapping_sub(1), "operator")))
                && code.get(i + 2).is_none_or(|after| {
                    after.is_punct(b')')
                        || after.is_punct(b',')
                        || after.is_punct(b';')
                        || tok_in(after, EMPTY_CLAUSE_FOLLOWERS)
                })
            {
                f.add(
                    FindingKind::Malformed,
                    next,
                    "an operator without a right operand",
                    0.8,
                );
            }
            // Literal compared with literal outside a builder's WHERE idiom (`'a' <= 'b'`
            // in a VALUES list, `'1'='1'` anywhere).
            if matches!(t.kind, TokenKind::String(_))
                && next.kind == TokenKind::Operator
                && COMPARISONS.contains(&next.text)
            {
                let mut k = i + 2;
                while code.get(k).is_some_and(|u| u.is_op("+") || u.is_op("-")) {
                    k += 1;
                }
                // `payload->>'k' = 'v'`: the first literal belongs to the operator before it.
                // (`bio = ''=''` chains two comparisons: no operand of the first.)
                let operand_of_op = i > 0
                    && (code.toks[i - 1].kind == TokenKind::Cast
                        || (code.toks[i - 1].kind == TokenKind::Operator
                            && !COMPARISONS.contains(&code.toks[i - 1].text)));
                if code
                    .get(k)
                    .is_some_and(|u| matches!(u.kind, TokenKind::String(_)))
                    && !typed
                    && !operand_of_op
                {
                    f.add(FindingKind::Tautology, next, "two literals compared", 0.8);
                }
            }
        }
    }
    if depth > 0 && !capped {
        if let Some(t) = code.toks.last() {
            f.add(
                FindingKind::Malformed,
                t,
                "the query ends inside parentheses",
                0.8,
            );
        }
    }
    chained_comparisons(code, f);
    clause_order(code, f);
    grammar_findings(code, capped, f);
}

/// Keywords that cannot start a value: after `=`, `LIMIT`, `WHERE` or `IN (` they are a
/// payload's fragment (`= update AND`, `IN (order by)`), a syntax error here.
#[rustfmt::skip]
const NOT_A_VALUE: &[&str] = &[
    "select", "having", "order", "group", "union", "from", "where", "limit", "offset",
    "intersect", "except", "and", "or", "then", "else", "end", "when", "asc", "desc", "as",
    "into", "by", "insert", "update", "delete", "truncate", "drop", "like", "ilike", "in",
    "is", "between", "join", "set", "values", "returning", "window",
];
/// Words a statement cannot end on.
#[rustfmt::skip]
const DANGLING: &[&str] = &[
    "where", "and", "or", "not", "by", "limit", "offset", "having", "union", "intersect",
    "except", "select", "from", "in", "like", "ilike", "between", "then", "when", "else",
    "set", "values", "join", "as", "is",
];
/// Operators PostgreSQL accepts in prefix position (`-1`, `~x`, `@ x`, `|/ 25`, `# path`).
const PREFIX_OPERATORS: &[&str] = &[
    "-", "+", "~", "@", "|/", "||/", "!!", "#", "@-@", "@@", "?-", "?|", "*",
];

/// What PostgreSQL's grammar rejects, and so no application sends: a byte with no place in
/// SQL (`\`, `{`), an empty quoted name, an empty list item, a binary operator or a
/// clause word where a value belongs, a statement ending on `AND` or `=`, a comma in a
/// WHERE, a name after a name in ORDER BY. Scanners send these to provoke errors.
fn grammar_findings(code: &Code<'_>, capped: bool, f: &mut Findings) {
    let n = code.toks.len();
    let mut brackets = 0i64;
    // Per parenthesis level: whether its own clause (not one inherited) is WHERE/HAVING.
    let mut own_where: Vec<bool> = vec![false];
    for (i, t) in code.toks.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| &code.toks[p]);
        let next = code.get(i + 1);
        if t.kind == TokenKind::Unknown {
            f.add(
                FindingKind::Malformed,
                t,
                "a character SQL has no place for",
                0.85,
            );
        }
        if t.kind == TokenKind::QuotedIdent && t.text.ends_with("\"\"") && bare(t).is_empty() {
            f.add(FindingKind::Malformed, t, "an empty quoted name", 0.85);
        }
        match t.text {
            "[" if t.kind == TokenKind::Punct => brackets += 1,
            "]" if t.kind == TokenKind::Punct => brackets -= 1,
            _ => {}
        }
        if t.is_punct(b'(') {
            own_where.push(false);
        } else if t.is_punct(b')') {
            if own_where.len() > 1 {
                own_where.pop();
            }
        } else if t.is_punct(b';') {
            own_where.clear();
            own_where.push(false);
            brackets = 0;
        } else if let Some(c) = clause_of(t).filter(|&c| code.clause[i] == c) {
            // A clause this level's own keyword opened (not `extract(... FROM x)`).
            if let Some(top) = own_where.last_mut() {
                *top = matches!(c, Clause::Where | Clause::Having);
            }
        } else if t.kind == TokenKind::Keyword && tok_in(t, &["window", "for"]) {
            if let Some(top) = own_where.last_mut() {
                *top = false;
            }
        }
        if t.is_punct(b',') {
            let empty_item = prev.is_none_or(|p| p.is_punct(b'(') || p.is_punct(b','))
                || next.is_some_and(|x| x.is_punct(b')'));
            if empty_item {
                f.add(FindingKind::Malformed, t, "an empty list item", 0.85);
            } else if brackets <= 0 && own_where.last() == Some(&true) {
                f.add(
                    FindingKind::Malformed,
                    t,
                    "a comma in a WHERE condition",
                    0.8,
                );
            }
        }
        let Some(next) = next else {
            continue;
        };
        // `= update`, `LIMIT asc`, `IN (order by)`.
        let value_slot = (t.kind == TokenKind::Operator && COMPARISONS.contains(&t.text))
            || (t.kind == TokenKind::Keyword
                && tok_in(t, &["where", "by", "limit", "offset", "having"]));
        let in_list_open = t.is_punct(b'(') && prev.is_some_and(|p| p.is_word("in"));
        // (Unreserved words name functions too: hstore's `delete(h, 'k')`.)
        let call = code.punct(i + 2, b'(')
            && tok_in(next, &["insert", "update", "delete", "truncate", "drop"]);
        let not_a_value = next.kind == TokenKind::Keyword
            && tok_in(next, NOT_A_VALUE)
            && !call
            && !(in_list_open && tok_in(next, &["select", "values"]));
        if (value_slot || in_list_open) && not_a_value {
            f.add(
                FindingKind::Malformed,
                next,
                "a clause word where a value belongs",
                0.8,
            );
        }
        // `= ||6`, `(&x)`, `IN (|| 1)`: an operator that takes no left operand here.
        let operand_slot = value_slot
            || in_list_open
            || (t.is_punct(b'(') && !prev.is_some_and(|p| p.is_word("operator")))
            || (t.kind == TokenKind::Keyword && tok_in(t, &["and", "or", "not", "select"]));
        if operand_slot
            && next.kind == TokenKind::Operator
            && !PREFIX_OPERATORS.contains(&next.text)
        {
            f.add(
                FindingKind::Malformed,
                next,
                "a binary operator where a value belongs",
                0.8,
            );
        }
        // `x % AND`, `id = / AND`: an operator with a conjunction for its right operand.
        if t.kind == TokenKind::Operator
            && t.text != "*"
            && next.kind == TokenKind::Keyword
            && tok_in(
                next,
                &[
                    "and", "or", "then", "else", "end", "when", "asc", "desc", "limit", "offset",
                    "order", "group",
                ],
            )
            && !prev.is_some_and(|p| p.is_word("using") || p.is_word("operator"))
        {
            f.add(
                FindingKind::Malformed,
                t,
                "an operator without a right operand",
                0.8,
            );
        }
        // `ORDER BY x "alias"`: ORDER BY and GROUP BY items take no alias.
        if matches!(code.clause[i], Clause::Order | Clause::Group)
            && matches!(t.kind, TokenKind::Ident | TokenKind::QuotedIdent)
            && matches!(next.kind, TokenKind::Ident | TokenKind::QuotedIdent)
            && !t.is_punct(b'.')
        {
            f.add(
                FindingKind::Malformed,
                next,
                "a name right after a name in ORDER BY or GROUP BY",
                0.8,
            );
        }
    }
    // A statement ending where a value or clause must follow (`... ORDER BY --`, `id = 1 #`).
    if capped {
        return;
    }
    for i in 0..n {
        let end = i + 1 == n || code.punct(i + 1, b';');
        if !end || code.punct(i, b';') {
            continue;
        }
        let t = &code.toks[i];
        let dangling = (t.kind == TokenKind::Operator && t.text != "*")
            || t.is_punct(b',')
            || t.is_punct(b'(')
            || (t.kind == TokenKind::Keyword && tok_in(t, DANGLING));
        if dangling && !code.word(i.wrapping_sub(1), "using") {
            f.add(
                FindingKind::Malformed,
                t,
                "a statement ends where a value belongs",
                0.8,
            );
        }
    }
}

/// `... ORDER BY 1 HAVING 1=2`, `ORDER BY 1 ORDER BY 2`, `LIMIT 1 WHERE`: clauses of one
/// query level come in a fixed order; a clause after a later one is where a payload
/// landed.
fn clause_order(code: &Code<'_>, f: &mut Findings) {
    let mut rank: Vec<u8> = vec![0];
    for (i, t) in code.toks.iter().enumerate() {
        let d = code.depth[i] as usize;
        if rank.len() <= d + 1 {
            rank.resize(d + 2, 0);
        }
        // A new parenthesis level starts fresh.
        if t.is_punct(b'(') {
            rank[d + 1] = 0;
            continue;
        }
        if t.is_punct(b';') {
            rank.iter_mut().for_each(|r| *r = 0);
            continue;
        }
        if t.kind != TokenKind::Keyword {
            continue;
        }
        let by = code.word(i + 1, "by");
        let r = if t.is_word("where") {
            3
        } else if t.is_word("group") && by && !code.word(i.wrapping_sub(1), "within") {
            4
        } else if t.is_word("having") {
            5
        } else if t.is_word("order") && by {
            7
        } else if t.is_word("limit") || t.is_word("offset") {
            8
        } else {
            if tok_in(
                t,
                &[
                    "union",
                    "intersect",
                    "except",
                    "select",
                    "on",
                    "do",
                    "set",
                    "returning",
                    "values",
                    "conflict",
                    "from",
                    "join",
                    "when",
                    "then",
                    "else",
                ],
            ) {
                rank[d] = 0;
            }
            continue;
        };
        let seen = rank[d];
        // LIMIT and OFFSET may come in either order; every other clause once, in order.
        if seen > r || (seen == r && r != 8) {
            f.add(FindingKind::Malformed, t, "a clause out of order", 0.8);
        }
        rank[d] = seen.max(r);
    }
}

fn is_comparison(t: &Token<'_>) -> bool {
    (t.kind == TokenKind::Operator && COMPARISONS.contains(&t.text))
        || (t.kind == TokenKind::Keyword && tok_in(t, &["like", "ilike", "similar"]))
}

/// `a = 'x' != 'y'`, `a = 'x' NOT LIKE 'y'`: comparisons do not chain in PostgreSQL;
/// a second one in the same operand is a payload's (MySQL style) continuation.
fn chained_comparisons(code: &Code<'_>, f: &mut Findings) {
    for (i, t) in code.toks.iter().enumerate() {
        if !is_comparison(t) || code.clause[i] == Clause::Set {
            continue;
        }
        let d = code.depth[i];
        let mut k = i;
        while k > 0 {
            k -= 1;
            let p = &code.toks[k];
            if code.depth[k] < d || p.is_punct(b';') {
                break;
            }
            if code.depth[k] > d {
                continue;
            }
            if p.is_punct(b',')
                || p.is_punct(b'(')
                || (p.kind == TokenKind::Keyword
                    && (tok_in(p, CLAUSE_WORDS)
                        || tok_in(p, &["and", "or", "case", "between", "is", "escape"])))
            {
                break;
            }
            if is_comparison(p) {
                f.add(FindingKind::Malformed, t, "chained comparisons", 0.8);
                break;
            }
        }
    }
}

/// Words that may follow a literal in a predicate.
#[rustfmt::skip]
const AFTER_LITERAL: &[&str] = &[
    "and", "or", "is", "not", "in", "like", "ilike", "similar", "between", "as", "from",
    "where", "group", "order", "limit", "offset", "union", "intersect", "except", "then",
    "else", "end", "when", "asc", "desc", "nulls", "collate", "at", "escape", "on", "join",
    "left", "right", "inner", "full", "cross", "natural", "returning", "for", "fetch",
    "having", "window", "into", "using", "isnull", "notnull", "overlaps", "uescape", "do",
    "set", "rows", "row", "only", "first", "next", "symmetric", "with", "default",
    // routine and role options after a SET or a body, frame and locking clauses
    "language", "immutable", "stable", "volatile", "strict", "security", "cost", "parallel",
    "leakproof", "called", "returns", "valid", "cascade", "restrict", "no", "deferrable",
    "initially", "over", "filter", "within", "preceding", "following", "unbounded",
    "current", "range", "groups", "exclude", "ties", "others", "nowait", "skip", "locked",
    "share", "key", "update", "of", "zone", "time", "second", "minute", "hour", "day",
    "month", "year", "to",
];
const STRING_ARITHMETIC: &[&str] = &[
    "+", "-", "*", "/", "%", "&", "|", "^", "&&", "<<", ">>", "#",
];
const COMPARISONS: &[&str] = &["=", "<>", "!=", "<", ">", "<=", ">="];
const EMPTY_CLAUSE_FOLLOWERS: &[&str] = &[
    "select",
    "having",
    "order",
    "group",
    "union",
    "from",
    "where",
    "limit",
    "offset",
    "intersect",
    "except",
];

fn ends_in_value(code: &Code<'_>, st: &Statement) -> bool {
    st.end > st.start
        && code.get(st.end - 1).is_some_and(|t| {
            t.is_literal() || t.kind == TokenKind::Param || t.is_punct(b')') || t.is_name()
        })
}

/// `ends_in_comment`: the query's last token is a line comment (the payload's `--` eating
/// the template's tail after the stacked statement).
fn stacked_findings(
    code: &Code<'_>,
    statements: &[Statement],
    ends_in_comment: bool,
    f: &mut Findings,
) {
    let Some(first) = statements.first() else {
        return;
    };
    for st in statements.iter().skip(1) {
        let Some(head) = code.get(st.start) else {
            continue;
        };
        if !head.is_name() && !head.is_punct(b'(') {
            f.add(
                FindingKind::Malformed,
                head,
                "a statement starting with a literal",
                0.85,
            );
            continue;
        }
        if st.kind == StatementKind::Transaction {
            continue;
        }
        // Scripts (migrations, dumps) put statements on their own lines; a payload is one line.
        let script = head.newline_before;
        let confidence = if script {
            0.3
        } else if first.kind.is_dml() && ends_in_value(code, first) && st.kind != first.kind {
            0.9
        } else if first.kind.is_dml() && ends_in_comment {
            0.85
        } else if first.kind.is_dml() {
            0.55
        } else {
            0.4
        };
        f.add(
            FindingKind::StackedStatement,
            head,
            "a statement stacked after a query",
            confidence,
        );
    }
}

#[derive(Default)]
struct TableRefs {
    user: Option<usize>,
    catalog: bool,
    sensitive: bool,
}

fn statement_findings(
    code: &Code<'_>,
    st: &Statement,
    statement_count: usize,
    f: &mut Findings,
    analysis: &mut Analysis,
) {
    let (s, e) = (st.start, st.end);
    let mut refs = TableRefs::default();
    let mut chr_calls = 0usize;
    let mut i = s;
    // Names: tables after FROM/JOIN/INTO/UPDATE/TABLE (and commas of a FROM list).
    while i < e {
        let t = &code.toks[i];
        let table_slot = i > s && {
            let p = &code.toks[i - 1];
            (tok_in(
                p,
                &[
                    "from", "join", "into", "update", "table", "truncate", "copy",
                ],
            ) && !(p.is_word("from") && code.clause[i - 1] != Clause::From)
                && !p.is_word("distinct"))
                || (p.is_punct(b',')
                    && code.clause[i - 1] == Clause::From
                    && code.depth[i - 1] == code.depth[i])
                || (p.is_word("only") && code.word(i.wrapping_sub(2), "from"))
        };
        if t.is_name()
            && table_slot
            && !code.is_call(code.name_end(i) - 1)
            && !tok_in(t, &["select", "lateral", "only", "table", "if", "unnest"])
        {
            let parts = code.name_parts(i);
            let catalog = is_catalog_name(&parts);
            if catalog {
                refs.catalog = true;
                if parts
                    .last()
                    .is_some_and(|p| in_list(bare(p), SENSITIVE_CATALOG))
                {
                    refs.sensitive = true;
                }
                if parts.iter().any(|p| in_list(bare(p), FOREIGN_CATALOG))
                    || (parts.len() >= 2 && bare(&parts[0]).eq_ignore_ascii_case("mysql"))
                {
                    f.add(
                        FindingKind::CatalogProbe,
                        t,
                        "another engine's catalog",
                        0.85,
                    );
                }
            } else if refs.user.is_none() {
                refs.user = Some(i);
            }
            push_name(&mut analysis.tables, &parts);
            i = code.name_end(i);
            continue;
        }
        if code.is_call(i) {
            // Record the call by its qualified name (walk back over `schema.`).
            let mut q = i;
            while q >= s + 2 && code.punct(q - 1, b'.') && code.toks[q - 2].is_name() {
                q -= 2;
            }
            push_name(&mut analysis.functions, &code.name_parts(q));
            if code.calls(i, &["chr", "char"]) {
                chr_calls += 1;
            }
        }
        i += 1;
    }

    // Probe functions and session values, judged against the tables the statement reads.
    for i in s..e {
        let t = &code.toks[i];
        if code.calls(i, SLEEP_FUNCS) {
            let alone = statement_count == 1
                && code.word(s, "select")
                && i == s + 1
                && code.close.get(i + 1).is_some_and(|&c| c + 1 == e);
            let conf = if alone { 0.5 } else { 0.9 };
            f.add(FindingKind::TimeBased, t, "pg_sleep in a query", conf);
        }
        if code.calls(i, FOREIGN_SLEEP) || (t.is_word("waitfor") && code.word(i + 1, "delay")) {
            f.add(
                FindingKind::TimeBased,
                t,
                "another engine's delay function",
                0.85,
            );
        }
        if code.calls(i, &["generate_series"])
            && code.depth[i] > code.depth[s]
            && matches!(
                outer_clause(code, i, s),
                Clause::Where
                    | Clause::Having
                    | Clause::Order
                    | Clause::On
                    | Clause::Limit
                    | Clause::Values
                    | Clause::Set
            )
        {
            f.add(
                FindingKind::TimeBased,
                t,
                "generate_series inside a predicate",
                0.8,
            );
        }
        if code.calls(i, FILE_FUNCS) {
            f.add(
                FindingKind::FileAccess,
                t,
                "file, large object or remote access function",
                0.9,
            );
        }
        if (t.is_word("outfile") || t.is_word("dumpfile")) && code.word(i.wrapping_sub(1), "into") {
            f.add(FindingKind::FileAccess, t, "INTO OUTFILE", 0.9);
        }
        if t.kind == TokenKind::Ident && in_list(t.text, FOREIGN_CATALOG) {
            f.add(
                FindingKind::CatalogProbe,
                t,
                "another engine's catalog",
                0.85,
            );
        }
        if t.kind == TokenKind::Ident && tok_in(t, &["xp_cmdshell", "sp_executesql", "sp_oacreate"])
        {
            f.add(
                FindingKind::FileAccess,
                t,
                "another engine's command execution",
                0.9,
            );
        }
        if t.is_word("limit")
            && code.get(i + 1).is_some_and(|n| n.kind == TokenKind::Number)
            && code.punct(i + 2, b',')
        {
            f.add(
                FindingKind::ForeignDialect,
                t,
                "MySQL's LIMIT offset, count",
                0.85,
            );
        }
        if code.calls(i, FOREIGN_FUNCS) || code.calls(i, FOREIGN_FUNCS_SURE) {
            f.add(
                FindingKind::ForeignDialect,
                t,
                "a function PostgreSQL does not have",
                if code.calls(i, FOREIGN_FUNCS_SURE) {
                    0.8
                } else {
                    0.7
                },
            );
        }
        if t.kind == TokenKind::Ident
            && tok_in(t, &["regexp", "rlike", "xor", "div", "sounds"])
            && !code.punct(i + 1, b'(')
            && !code.punct(i.wrapping_sub(1), b'.')
            && i > s
        {
            f.add(
                FindingKind::ForeignDialect,
                t,
                "another engine's operator word",
                0.8,
            );
        }
        if hex_number(t) {
            f.add(
                FindingKind::ForeignDialect,
                t,
                "a hexadecimal number (another engine's string)",
                0.8,
            );
        }
        if t.kind == TokenKind::Operator && t.text.contains('`') {
            f.add(
                FindingKind::ForeignDialect,
                t,
                "another engine's backtick quoting",
                0.85,
            );
        }
        if t.is_op("<=>") {
            f.add(
                FindingKind::ForeignDialect,
                t,
                "another engine's operator",
                0.8,
            );
        }
        if code.is_call(i)
            && i >= s + 2
            && code.punct(i - 1, b'.')
            && tok_in(&code.toks[i - 2], FOREIGN_PACKAGES)
        {
            f.add(
                FindingKind::ForeignDialect,
                t,
                "another engine's package",
                0.85,
            );
        }
        // ASCII(SUBSTRING((SELECT ...), 1, 1)), LENGTH(version()): reading a value out one
        // property at a time.
        if code.calls(i, INFERENCE_FUNCS) {
            let close = code.close.get(i + 1).copied().unwrap_or(usize::MAX).min(e);
            let inner = (i + 2..close).any(|k| {
                (code.punct(k, b'(') && code.word(k + 1, "select"))
                    || code.calls(k, PROBE_FUNCS)
                    || (code.toks[k].kind == TokenKind::Keyword
                        && tok_in(&code.toks[k], SESSION_VALUES))
            });
            if inner {
                f.add(
                    FindingKind::InlineQuery,
                    t,
                    "inference function over a subquery or server information",
                    0.85,
                );
            }
        }
        if t.is_word("top")
            && code.word(i.wrapping_sub(1), "select")
            && code
                .get(i + 1)
                .is_some_and(|n| n.kind == TokenKind::Number || n.is_punct(b'('))
        {
            f.add(FindingKind::ForeignDialect, t, "SELECT TOP", 0.85);
        }
        if t.kind == TokenKind::Operator
            && t.text.ends_with('@')
            && code.get(i + 1).is_some_and(|n| n.is_name())
            && (t.text.len() > 2
                || !code.get(i.wrapping_sub(1)).is_some_and(|p| {
                    p.is_name() || p.is_literal() || p.is_punct(b')') || p.kind == TokenKind::Param
                }))
        {
            f.add(
                FindingKind::ForeignDialect,
                t,
                "a session variable of another engine",
                0.8,
            );
        }
        if code.calls(i, XML_ERROR_FUNCS) {
            f.add(FindingKind::ErrorBased, t, "XML query function", 0.85);
        }
        if code.calls(i, PROBE_FUNCS) {
            let conf = if refs.user.is_some() { 0.75 } else { 0.2 };
            f.add(
                FindingKind::CatalogProbe,
                t,
                "server information function",
                conf,
            );
        }
        if t.is_op("@@")
            && code.get(i + 1).is_some_and(|n| {
                tok_in(
                    n,
                    &[
                        "version",
                        "datadir",
                        "hostname",
                        "servername",
                        "basedir",
                        "user",
                    ],
                )
            })
        {
            f.add(
                FindingKind::CatalogProbe,
                t,
                "another engine's server variable",
                0.85,
            );
        }
        if t.is_op("/")
            && code
                .get(i + 1)
                .is_some_and(|n| n.kind == TokenKind::Number && n.text == "0")
        {
            f.add(FindingKind::ErrorBased, t, "division by zero", 0.85);
        }
        if t.is_op("/")
            && code.punct(i + 1, b'(')
            && code.word(i + 2, "select")
            && code
                .get(i + 3)
                .is_some_and(|n| n.kind == TokenKind::Number && n.text == "0")
        {
            f.add(FindingKind::ErrorBased, t, "division by zero", 0.85);
        }
        if code.calls(i, &["cast"]) {
            cast_findings(code, i, f);
        }
        if t.kind == TokenKind::Cast
            && probe_before(code, i, s)
            && numeric_type(code, i + 1)
            && !array_type(code, i + 1)
        {
            f.add(
                FindingKind::ErrorBased,
                t,
                "server information cast to a number",
                0.9,
            );
        }
        if t.is_op("||") {
            let literal_left = code
                .get(i.wrapping_sub(1))
                .is_some_and(|p| matches!(p.kind, TokenKind::String(_)));
            let sub_right = code.punct(i + 1, b'(') && code.word(i + 2, "select");
            let literal_right = code
                .get(i + 1)
                .is_some_and(|n| matches!(n.kind, TokenKind::String(_)));
            let sub_left = code.punct(i.wrapping_sub(1), b')')
                && (s..i.saturating_sub(1))
                    .rev()
                    .any(|o| code.close[o] == i - 1 && code.word(o + 1, "select"));
            if (literal_left && sub_right) || (sub_left && literal_right) {
                f.add(
                    FindingKind::InlineQuery,
                    t,
                    "subquery concatenated into a literal",
                    0.85,
                );
            }
        }
        if t.is_word("and") || t.is_word("or") || t.is_word("when") {
            predicate_findings(code, i, e, refs.user.is_some(), f);
        }
        if t.is_word("where") || t.is_word("having") {
            let end = code.operand_end(i + 1, e);
            let op = classify_operand(code, i + 1, end);
            // `WHERE 1=1 AND ...` is a query builder's idiom; other constants are not.
            if op.constant && !(op.builder_idiom || all_01(code, i + 1, end)) {
                let conf = if op.inference || op.sleep || op.catalog {
                    0.85
                } else {
                    0.5
                };
                f.add(
                    FindingKind::Tautology,
                    t,
                    "constant predicate opens the WHERE",
                    conf,
                );
            }
        }
        if t.is_word("union") || t.is_word("intersect") || t.is_word("except") {
            union_findings(code, i, e, &refs, f);
        }
    }

    if refs.catalog && st.kind.is_dml() {
        let mixed = refs.user.is_some();
        let conf = match (mixed, refs.sensitive) {
            (true, true) => 0.85,
            (true, false) => 0.6,
            (false, true) => 0.4,
            (false, false) => 0.1,
        };
        if let Some(t) = code.get(s) {
            f.add(FindingKind::CatalogProbe, t, "system catalog read", conf);
        }
    }
    if chr_calls >= 3 {
        if let Some(t) = code.get(s) {
            f.add(
                FindingKind::Obfuscation,
                t,
                "string built from chr() calls",
                0.85,
            );
        }
    }
    for i in s..e {
        let t = &code.toks[i];
        if matches!(t.kind, TokenKind::String(StringKind::Dollar)) && st.kind.is_dml() {
            f.add(
                FindingKind::Obfuscation,
                t,
                "dollar-quoted literal in a plain query",
                0.3,
            );
        }
        if code.calls(i, &["convert_from"]) && code.calls(i + 2, &["decode"]) {
            f.add(FindingKind::Obfuscation, t, "decoded text", 0.5);
        }
    }
    if st.kind == StatementKind::Copy {
        let program = (s..e).any(|i| code.word(i, "program"));
        let file = (s..e).any(|i| {
            (code.word(i, "from") || code.word(i, "to"))
                && code
                    .get(i + 1)
                    .is_some_and(|n| matches!(n.kind, TokenKind::String(_)))
        });
        if let Some(t) = code.get(s) {
            if program {
                f.add(
                    FindingKind::FileAccess,
                    t,
                    "COPY ... PROGRAM runs a shell command",
                    0.95,
                );
            } else if file {
                f.add(
                    FindingKind::FileAccess,
                    t,
                    "COPY to or from a server file",
                    0.85,
                );
            }
        }
    }
    if st.kind == StatementKind::Ddl
        && code.word(s, "create")
        && (s..e).any(|i| code.word(i, "language") && code.word(i + 1, "c"))
    {
        if let Some(t) = code.get(s) {
            f.add(
                FindingKind::FileAccess,
                t,
                "C-language function from a library file",
                0.9,
            );
        }
    }
}

/// Only numbers and booleans: a builder's `1=1`, `0 = 1`, `true`.
/// The clause of the statement's top level that position `i` sits in.
fn outer_clause(code: &Code<'_>, i: usize, s: usize) -> Clause {
    let base = code.depth[s];
    (s..=i)
        .rev()
        .find(|&k| code.depth[k] == base)
        .map_or(Clause::None, |k| code.clause[k])
}

fn all_01(code: &Code<'_>, s: usize, e: usize) -> bool {
    (s..e).all(|i| {
        let t = &code.toks[i];
        !t.is_literal() || numeric(t)
    }) && (s..e).any(|i| numeric(&code.toks[i]) || code.word(i, "true") || code.word(i, "false"))
}

fn push_name(list: &mut Vec<String>, parts: &[Token<'_>]) {
    if list.len() >= MAX_NAMES || parts.is_empty() {
        return;
    }
    let name = normalise_name(parts);
    if !list.contains(&name) {
        list.push(name);
    }
}

fn numeric_type(code: &Code<'_>, i: usize) -> bool {
    code.get(i).is_some_and(|t| {
        tok_in(
            t,
            &[
                "int",
                "integer",
                "int4",
                "int8",
                "int2",
                "bigint",
                "smallint",
                "numeric",
                "decimal",
                "float",
                "float4",
                "float8",
                "real",
                "double",
                "bool",
                "boolean",
                "date",
                "timestamp",
                "inet",
                "money",
                "uuid",
                "json",
                "jsonb",
                "regclass",
            ],
        )
    })
}

/// The type name at `i` is an array type (`integer[]`): a conversion of a set, not the
/// scalar conversion an error-based probe needs to fail.
fn array_type(code: &Code<'_>, i: usize) -> bool {
    code.punct(code.type_name_end(i), b'[')
}

/// Whether what precedes the cast at `cast` is server information (`version()`,
/// `current_user`, a subquery, a chr() chain).
fn probe_before(code: &Code<'_>, cast: usize, s: usize) -> bool {
    let Some(prev) = cast.checked_sub(1).and_then(|p| code.get(p)) else {
        return false;
    };
    if prev.kind == TokenKind::Keyword && tok_in(prev, SESSION_VALUES) {
        return true;
    }
    if prev.is_punct(b')') {
        if let Some(open) = (s..cast - 1).rev().find(|&o| code.close[o] == cast - 1) {
            if code.word(open + 1, "select") {
                return true;
            }
            if open > 0 && (code.calls(open - 1, PROBE_FUNCS) || code.calls(open - 1, &["chr"])) {
                return true;
            }
            return (open..cast).any(|k| code.calls(k, PROBE_FUNCS) || code.word(k, "select"));
        }
    }
    false
}

fn cast_findings(code: &Code<'_>, i: usize, f: &mut Findings) {
    let open = i + 1;
    let close = code.close.get(open).copied().unwrap_or(usize::MAX);
    if close == usize::MAX {
        return;
    }
    let Some(as_at) =
        (open + 1..close).rfind(|&k| code.word(k, "as") && code.depth[k] == code.depth[open] + 1)
    else {
        return;
    };
    if !numeric_type(code, as_at + 1) || array_type(code, as_at + 1) {
        return;
    }
    let probe = (open + 1..as_at).any(|k| {
        code.calls(k, PROBE_FUNCS)
            || code.calls(k, &["chr"])
            || code.word(k, "select")
            || code
                .get(k)
                .is_some_and(|t| t.kind == TokenKind::Keyword && tok_in(t, SESSION_VALUES))
    });
    if probe {
        if let Some(t) = code.get(i) {
            f.add(
                FindingKind::ErrorBased,
                t,
                "server information cast to a number",
                0.9,
            );
        }
    }
}

/// `reads_user`: the statement reads an application table (a catalog subquery in a query
/// over catalogs only is an admin tool's own logic).
fn predicate_findings(code: &Code<'_>, at: usize, e: usize, reads_user: bool, f: &mut Findings) {
    let t = &code.toks[at];
    // The AND of a BETWEEN is not a conjunction.
    if t.is_word("and") {
        let base = code.depth[at];
        let mut k = at;
        while k > 0 {
            k -= 1;
            if code.depth[k] < base {
                break;
            }
            let w = &code.toks[k];
            if code.depth[k] == base {
                if w.is_word("between") {
                    return;
                }
                if w.is_word("and") || w.is_word("or") || w.is_word("where") || w.is_punct(b',') {
                    break;
                }
            }
        }
    }
    // `CASE x WHEN 'r' THEN ...` compares x with a value: the WHEN holds no predicate.
    if t.is_word("when") {
        let base = code.depth[at];
        let case = (0..at)
            .rev()
            .take_while(|&k| code.depth[k] >= base)
            .find(|&k| code.depth[k] == base && code.word(k, "case"));
        if case.is_some_and(|c| !code.word(c + 1, "when")) {
            return;
        }
    }
    let start = at + 1;
    let end = code.operand_end(start, e);
    let op = classify_operand(code, start, end);
    let or = t.is_word("or");
    // What a client's inlined parameters make constant: `OR 'paid' IS NULL` (an optional
    // filter), `CASE WHEN (NULL IS NOT NULL)`, and an empty IN list expanded to
    // `IN (NULL) AND (1 != 1)` or `NOT IN (NULL) OR (1 = 1)` (SQLAlchemy).
    let inlined_parameter = value_null_test(code, start, end)
        || empty_in_list(code, start, end)
        || (op.builder_idiom && at >= 4 && empty_in_list(code, at - 4, at));
    if op.constant && inlined_parameter && !(op.sleep || op.inference || op.catalog) {
        f.add(
            FindingKind::Tautology,
            t,
            "constant predicate from an inlined parameter",
            0.2,
        );
    } else if op.constant {
        if op.sleep {
            f.add(FindingKind::TimeBased, t, "delay in a predicate", 0.9);
        }
        let catalog_probe = op.catalog && (op.has_literal || reads_user);
        let conf = if op.subquery && !(op.inference || catalog_probe || op.sleep) {
            // `AND 0 < (SELECT count(*) ...)`: unusual, not yet an attack; psql's
            // `OR (SELECT c.relkind = 'c' FROM pg_catalog.pg_class c ...)` neither. A
            // constant predicate around a subquery that reads no table computes nothing
            // from the data: a probe of the server (a function's existence, a setting).
            if op.fromless_subquery && op.has_literal {
                0.85
            } else if op.has_literal {
                0.6
            } else {
                0.3
            }
        } else if or {
            0.9
        } else if t.is_word("when") {
            if op.builder_idiom || all_01(code, start, end) {
                0.8
            } else {
                0.85
            }
        } else if op.builder_idiom {
            // Peewee's `AND (0 = 1)` for an empty IN list.
            0.2
        } else {
            0.85
        };
        let detail = if or {
            "OR with a constant predicate"
        } else if t.is_word("when") {
            "CASE WHEN on a constant"
        } else {
            "AND with a constant predicate (boolean probe)"
        };
        f.add(FindingKind::Tautology, t, detail, conf);
    } else if op.self_compare {
        let conf = if or { 0.85 } else { 0.6 };
        f.add(
            FindingKind::Tautology,
            t,
            "a name compared with itself",
            conf,
        );
    }
}

/// Whether a query stands left of the set operation at `at`, at its own depth (`SELECT`,
/// `VALUES`, `TABLE`, or a parenthesised query). `id IN (1 UNION SELECT ...)` or
/// `IN ( UNION ...)` has none: a syntax error only a payload makes.
fn left_arm_is_query(code: &Code<'_>, at: usize) -> bool {
    let d = code.depth[at];
    let mut k = at;
    while k > 0 {
        k -= 1;
        if code.depth[k] < d || code.punct(k, b';') {
            return false;
        }
        if code.depth[k] != d {
            continue;
        }
        if code.word(k, "select") || code.word(k, "values") || code.word(k, "table") {
            return true;
        }
        if code.punct(k, b'(') {
            let mut j = k + 1;
            while code.punct(j, b'(') {
                j += 1;
            }
            if code.word(j, "select") || code.word(j, "values") || code.word(j, "with") {
                return true;
            }
        }
    }
    false
}

/// A parenthesised subquery at `open` reads server information, a catalog or credential
/// columns, sleeps or touches files.
fn subquery_probes(code: &Code<'_>, open: usize) -> bool {
    let close = code
        .close
        .get(open)
        .copied()
        .unwrap_or(usize::MAX)
        .min(code.toks.len());
    (open + 1..close).any(|k| {
        let t = &code.toks[k];
        code.calls(k, PROBE_FUNCS)
            || code.calls(k, &["chr"])
            || code.calls(k, SLEEP_FUNCS)
            || code.calls(k, FILE_FUNCS)
            || (t.kind == TokenKind::Keyword && tok_in(t, SESSION_VALUES))
            || (t.is_name() && in_list(bare(t), SECRET_COLUMNS))
            || (t.is_name()
                && code
                    .get(k.wrapping_sub(1))
                    .is_some_and(|p| p.is_word("from") || p.is_word("join"))
                && is_catalog_name(&code.name_parts(k)))
    })
}

/// `value IS [NOT] NULL` on one literal, parameter or NULL (cast or parenthesised): the null
/// test of a client's optional parameter, inlined.
fn value_null_test(code: &Code<'_>, s: usize, e: usize) -> bool {
    let (mut s, mut e) = (s, e);
    while s + 1 < e && code.punct(s, b'(') && code.close[s] == e - 1 {
        s += 1;
        e -= 1;
    }
    let value = code
        .get(s)
        .is_some_and(|t| t.is_literal() || t.kind == TokenKind::Param || t.is_word("null"));
    if !value || s >= e {
        return false;
    }
    let mut i = s + 1;
    while code.get(i).is_some_and(|t| t.kind == TokenKind::Cast) {
        i = code.type_name_end(i + 1);
    }
    if !code.word(i, "is") {
        return false;
    }
    i += 1;
    if code.word(i, "not") {
        i += 1;
    }
    code.word(i, "null") && i + 1 == e
}

/// `IN (NULL)` within `s..e`: how a client expands an empty list.
fn empty_in_list(code: &Code<'_>, s: usize, e: usize) -> bool {
    (s..e.saturating_sub(3)).any(|i| {
        code.word(i, "in")
            && code.punct(i + 1, b'(')
            && code.word(i + 2, "null")
            && code.punct(i + 3, b')')
    })
}

fn union_findings(code: &Code<'_>, at: usize, e: usize, refs: &TableRefs, f: &mut Findings) {
    let t = &code.toks[at];
    let mut i = at + 1;
    if code.word(i, "all") || code.word(i, "distinct") {
        i += 1;
    }
    while code.punct(i, b'(') {
        i += 1;
    }
    // A set operation after ORDER BY or LIMIT of the same query level is a syntax error:
    // the payload landed in the ORDER BY or LIMIT.
    if matches!(
        code.clause[at.saturating_sub(1)],
        Clause::Order | Clause::Limit
    ) && code.depth[at.saturating_sub(1)] == code.depth[at]
    {
        f.add(
            FindingKind::UnionExtraction,
            t,
            "UNION after ORDER BY or LIMIT",
            0.85,
        );
    }
    if !code.word(i, "select") {
        return;
    }
    // A union after a query on the application's own tables, not inside psql's catalog
    // queries or a report over constants.
    if !left_arm_is_query(code, at) {
        f.add(
            FindingKind::Malformed,
            t,
            "a set operation without a query on its left",
            0.85,
        );
        return;
    }
    let left_user = refs.user.is_some_and(|u| u < at);
    i += 1;
    if code.word(i, "distinct") || code.word(i, "all") {
        i += 1;
    }
    let base = code.depth.get(i).copied().unwrap_or(0);
    let mut items = 0usize;
    let mut data_items = 0usize;
    let mut probe_items = 0usize;
    let mut number_items = 0usize;
    // Items that are scalar subqueries over application tables
    // (`SELECT (SELECT t.id FROM t LIMIT 1) AS a UNION SELECT (SELECT ...)`).
    let mut subquery_items = 0usize;
    let mut secret = false;
    let mut item_start = i;
    let mut item_data = false;
    let mut item_probe = false;
    let mut item_subquery = false;
    let mut k = i;
    let list_end = loop {
        let tok = match code.get(k) {
            Some(tok) if k < e => tok,
            _ => {
                if k > item_start {
                    items += 1;
                    data_items += usize::from(item_data && !item_probe);
                    probe_items += usize::from(item_probe);
                    subquery_items += usize::from(item_subquery && !item_data && !item_probe);
                    number_items += usize::from(
                        k == item_start + 1 && code.toks[item_start].kind == TokenKind::Number,
                    );
                }
                break k;
            }
        };
        let d = code.depth[k];
        if d < base
            || (d == base
                && (tok.is_punct(b',')
                    || (tok.kind == TokenKind::Keyword
                        && tok_in(
                            tok,
                            &[
                                "from",
                                "where",
                                "group",
                                "order",
                                "limit",
                                "union",
                                "intersect",
                                "except",
                                "into",
                                "having",
                                "offset",
                                "fetch",
                                "window",
                            ],
                        ))))
        {
            if k > item_start {
                items += 1;
                data_items += usize::from(item_data && !item_probe);
                probe_items += usize::from(item_probe);
                subquery_items += usize::from(item_subquery && !item_data && !item_probe);
                number_items += usize::from(
                    k == item_start + 1 && code.toks[item_start].kind == TokenKind::Number,
                );
            }
            if !(d == base && tok.is_punct(b',')) {
                break k;
            }
            item_start = k + 1;
            item_data = false;
            item_probe = false;
            item_subquery = false;
            k += 1;
            continue;
        }
        if code.is_call(k) {
            if code.calls(k, PROBE_FUNCS)
                || code.calls(k, &["chr"])
                || code.calls(k, SLEEP_FUNCS)
                || code.calls(k, FILE_FUNCS)
            {
                item_probe = true;
            }
        } else if tok.is_punct(b'(') && code.word(k + 1, "select") {
            if subquery_probes(code, k) {
                item_probe = true;
            } else {
                item_subquery = true;
            }
            k = code.close[k].max(k).saturating_add(1);
            continue;
        } else if tok.kind == TokenKind::Keyword && tok_in(tok, SESSION_VALUES) {
            item_probe = true;
        } else if tok.is_name()
            && !(tok.kind == TokenKind::Keyword
                && (tok_in(tok, VALUE_WORDS)
                    || tok_in(
                        tok,
                        &[
                            "as", "case", "when", "then", "else", "end", "cast", "distinct", "not",
                            "is", "and", "or",
                        ],
                    )))
        {
            let after_cast = code
                .get(k.wrapping_sub(1))
                .is_some_and(|p| p.kind == TokenKind::Cast || p.is_word("as"));
            if !after_cast {
                item_data = true;
                if in_list(bare(tok), SECRET_COLUMNS) {
                    secret = true;
                }
            }
        } else if tok.is_op("*") {
            item_data = true;
        }
        k += 1;
    };
    let from_catalog = code.word(list_end, "from")
        && code.get(list_end + 1).is_some_and(|n| n.is_name())
        && is_catalog_name(&code.name_parts(list_end + 1));
    let no_from_or_func = !code.word(list_end, "from") || code.is_call(list_end + 1);
    if !left_user || (items > 0 && subquery_items == items) {
        return;
    }
    if items > 0 && data_items > 0 && !code.word(list_end, "from") {
        // Columns with nothing to select them from: the arm swallowed the template's tail.
        f.add(
            FindingKind::UnionExtraction,
            t,
            "UNION SELECT naming columns without FROM",
            0.85,
        );
    } else if items > 0 && data_items == 0 && (no_from_or_func || from_catalog) {
        f.add(
            FindingKind::UnionExtraction,
            t,
            "UNION SELECT of constants after a table query",
            0.9,
        );
    } else if from_catalog {
        f.add(
            FindingKind::UnionExtraction,
            t,
            "UNION SELECT from a system catalog",
            0.9,
        );
    } else if probe_items > 0 {
        f.add(
            FindingKind::UnionExtraction,
            t,
            "UNION SELECT of server information",
            0.85,
        );
    } else if number_items >= 2 {
        // `UNION SELECT 1,2,username,4`: numbers padding the column count.
        f.add(
            FindingKind::UnionExtraction,
            t,
            "UNION SELECT padded with numbers",
            0.85,
        );
    } else if secret {
        f.add(
            FindingKind::UnionExtraction,
            t,
            "UNION SELECT of credential columns",
            0.8,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_names_are_the_policy_vocabulary_and_serde() {
        for k in FindingKind::ALL {
            assert!(
                crate::policy::vocab::SQL_FINDINGS.contains(&k.name()),
                "{k:?}"
            );
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
        assert_eq!(
            crate::policy::vocab::SQL_FINDINGS.len(),
            FindingKind::ALL.len() + 1
        );
        let names: Vec<&str> = StatementKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, crate::policy::vocab::SQL_STATEMENTS);
        for k in StatementKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
    }

    fn analyze(q: &str) -> Analysis {
        Analyzer::default().analyze(q, false)
    }

    fn has(q: &str, kind: FindingKind) -> bool {
        let a = analyze(q);
        a.findings
            .iter()
            .any(|f| f.kind == kind && f.confidence >= 0.75)
    }

    #[test]
    fn statement_kinds_tables_functions() {
        let a = analyze(
            "WITH r AS (SELECT id FROM \"app\".\"Orders\" o JOIN customers c ON c.id = o.cid) \
             UPDATE totals SET n = coalesce(lower(x), 'a') FROM r WHERE totals.id = r.id; \
             DROP TABLE old",
        );
        assert_eq!(a.statements, [StatementKind::Update, StatementKind::Ddl]);
        for t in ["app.Orders", "customers", "totals", "r", "old"] {
            assert!(a.tables.iter().any(|x| x == t), "{t} in {:?}", a.tables);
        }
        assert!(a.functions.iter().any(|x| x == "coalesce"));
        assert!(a.functions.iter().any(|x| x == "lower"));
        assert!(!a.functions.iter().any(|x| x == "totals"));
    }

    #[test]
    fn tautologies() {
        assert!(has(
            "SELECT * FROM users WHERE name = '' OR '1'='1'",
            FindingKind::Tautology
        ));
        assert!(has(
            "SELECT * FROM users WHERE id = 1 OR 1=1",
            FindingKind::Tautology
        ));
        assert!(has(
            "SELECT * FROM users WHERE id = 1 OR true",
            FindingKind::Tautology
        ));
        assert!(has(
            "SELECT * FROM users WHERE id = 1 OR 2>1",
            FindingKind::Tautology
        ));
        assert!(has(
            "SELECT * FROM users WHERE name = '' OR ''=''",
            FindingKind::Tautology
        ));
        assert!(has(
            "SELECT * FROM users WHERE id = 5 AND 1=2",
            FindingKind::Tautology
        ));
        assert!(has(
            "SELECT * FROM u WHERE id = 5 AND 8231=8231",
            FindingKind::Tautology
        ));
        assert!(has(
            "SELECT * FROM u WHERE a = 'x' OR NOT 31=32",
            FindingKind::Tautology
        ));
        assert!(has(
            "SELECT * FROM u WHERE a = 'x' OR a=a",
            FindingKind::Tautology
        ));
        assert!(has(
            "SELECT * FROM u WHERE id = 1 AND ASCII(SUBSTRING((SELECT passwd FROM pg_shadow LIMIT 1),1,1))>64",
            FindingKind::Tautology
        ));
    }

    #[test]
    fn builder_idioms_are_not_tautologies() {
        for q in [
            "SELECT * FROM t WHERE 1=1 AND name = 'x'",
            "SELECT * FROM t WHERE 1 = 1",
            "SELECT * FROM \"t\" WHERE (\"t\".\"a\" = 1) AND (0 = 1)",
            "SELECT * FROM t WHERE a BETWEEN 1 AND 10 AND b = 2",
            "SELECT * FROM t WHERE a = 1 AND EXISTS (SELECT 1 FROM u WHERE u.t = t.id)",
            "SELECT * FROM t WHERE a = 1 AND b::date = '2020-01-01'",
            "SELECT * FROM t WHERE a = 1 AND created > now() - interval '1 day'",
        ] {
            let a = analyze(q);
            assert!(!a.is_injection(), "{q}: {:?}", a.findings);
        }
    }

    #[test]
    fn literals_hold_anything() {
        for q in [
            "SELECT * FROM t WHERE note = 'x'' OR ''1''=''1'' -- ; DROP TABLE t; UNION SELECT 1'",
            "INSERT INTO posts (body) VALUES (E'it\\'s 1=1 or union select -- /*')",
            "SELECT * FROM t WHERE body LIKE '%union select null%' AND a = $1",
        ] {
            let a = analyze(q);
            assert!(a.findings.is_empty(), "{q}: {:?}", a.findings);
        }
    }

    #[test]
    fn unions() {
        assert!(has(
            "SELECT name FROM products WHERE id = 1 UNION ALL SELECT NULL,NULL--",
            FindingKind::UnionExtraction
        ));
        assert!(has(
            "SELECT name FROM products WHERE id = 1 UNION SELECT usename FROM pg_user",
            FindingKind::UnionExtraction
        ));
        assert!(!analyze(
            "SELECT a, b FROM t1 WHERE x = 1 UNION ALL SELECT a, sum(b) FROM t2 GROUP BY a"
        )
        .is_injection());
        assert!(!analyze("SELECT 1 AS n UNION ALL SELECT 2").is_injection());
    }

    #[test]
    fn stacked_and_comments() {
        assert!(analyze("SELECT * FROM users WHERE id = 1; DROP TABLE users").is_injection());
        assert!(
            analyze("SELECT * FROM users WHERE name = 'a'; SELECT pg_sleep(5)--'").is_injection()
        );
        assert!(has(
            "SELECT * FROM users WHERE name = 'admin'--'",
            FindingKind::CommentTruncation
        ));
        assert!(
            !analyze("CREATE TABLE a (id int);\nCREATE INDEX ON a (id);\nDROP TABLE b;")
                .is_injection()
        );
        assert!(!analyze("SELECT 1 -- a trailing note").is_injection());
    }

    #[test]
    fn admin_queries_keep_low_findings() {
        let a = analyze("SELECT version()");
        assert!(!a.is_injection());
        let a = analyze(
            "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN \
             pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname \
             OPERATOR(pg_catalog.~) '^(users)$' COLLATE pg_catalog.default AND \
             pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3;",
        );
        assert!(!a.is_injection(), "{:?}", a.findings);
        let a = analyze("SELECT pg_sleep(1)");
        assert!(!a.is_injection());
        assert!(a.findings.iter().any(|f| f.kind == FindingKind::TimeBased));
    }

    #[test]
    fn file_error_time_obfuscation() {
        assert!(has("COPY t FROM PROGRAM 'id'", FindingKind::FileAccess));
        assert!(!analyze("COPY t (a, b) TO STDOUT").is_injection());
        assert!(has(
            "SELECT * FROM t WHERE id = 1 AND 1=CAST(version() AS int)",
            FindingKind::ErrorBased
        ));
        assert!(has(
            "SELECT * FROM t WHERE id = 1 AND 1=(SELECT current_user)::int",
            FindingKind::ErrorBased
        ));
        assert!(has(
            "SELECT * FROM t WHERE id = 1 AND 1=1/0",
            FindingKind::ErrorBased
        ));
        assert!(has(
            "SELECT pg_read_file('/etc/passwd')",
            FindingKind::FileAccess
        ));
        assert!(has(
            "SELECT * FROM t WHERE id=1 AND (SELECT 1 FROM pg_sleep(5)) = 1",
            FindingKind::TimeBased
        ));
        assert!(has(
            "SELECT * FROM t WHERE a = CHR(65)||CHR(66)||CHR(67)",
            FindingKind::Obfuscation
        ));
        assert!(has(
            "SELECT * FROM t WHERE a = 1 UN/**/ION SEL/**/ECT 1",
            FindingKind::Obfuscation
        ));
    }

    #[test]
    fn judge_uses_the_cache_and_agrees_with_analyze() {
        let analyzer = Analyzer::default();
        let mut cache = ShapeCache::new(16);
        let q1 = "SELECT * FROM users WHERE name = 'bob'";
        let q2 = "SELECT * FROM users WHERE name = 'alice'";
        let j1 = analyzer.judge(&mut cache, q1, false);
        let j2 = analyzer.judge(&mut cache, q2, false);
        assert!(!j1.cached && j2.cached);
        assert_eq!(j1.verdict, analyzer.analyze(q2, false).verdict());
        let bad = "SELECT * FROM users WHERE name = 'bob' OR 'a'='a'";
        let j3 = analyzer.judge(&mut cache, bad, false);
        assert!(!j3.cached && j3.verdict.injection);
    }
}
