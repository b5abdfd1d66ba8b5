//! Hold and decide on libpq: for processes under an enforcing `sql_query` rule (userspace
//! lists their tgids in `HOLD_TGIDS`), the query uprobe runs a cheap pre-check over the
//! first `PRECHECK_BYTES` of the text; a query with an injection tell is held — its thread
//! is stopped (`SIGSTOP`) before a byte leaves, `HELD` remembers it, and the record goes to
//! the decision ring (forced wakeup) — until the agent continues, refuses or kills it. The
//! pre-check is one state machine, `PrecheckState::step`, run byte by byte by a bounded loop in
//! the kernel and by the agent's tests over the corpora (false holds measured there).
//!
//! Unflagged queries are never held. A hold is bounded by the agent's hold watchdog, a
//! separate process that outlives the agent: it continues every thread in `HELD` whose
//! hold is older than the bound, or all of them when the agent is gone (fail-open).

/// Bytes of query text the pre-check reads. Injections land in a query's WHERE clause,
/// early in the text for the short queries web handlers send; the analyzer still judges
/// the whole text (an injection past this point is detected, not held).
pub const PRECHECK_BYTES: u32 = 512;

/// Threads held at once (more: the query runs unheld, counted as a loss).
pub const MAX_HELD: u32 = 1024;
/// Processes under an enforcing rule at once.
pub const MAX_HOLD_TGIDS: u32 = 8192;
/// The decision ring: small, since only held queries go there.
pub const DECISION_RING_BYTES: u32 = 256 << 10;

/// A held thread, keyed by its tid in `HELD`: written by the kernel before it stops the
/// thread; whoever deletes the entry (the agent deciding, or the watchdog releasing) owns
/// the decision, so exactly one of them acts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldQuery {
    pub pid: u32,
    pub tid: u32,
    /// The process's start (its exec id with `pid`): a recycled pid is never signalled.
    pub start_ns: u64,
    /// When the thread was stopped (CLOCK_BOOTTIME ns).
    pub held_at_ns: u64,
    /// `record::SQL_FN_*`: which register holds the query (rsi, or rdx for PQsendPrepare).
    pub function: u32,
    /// `TELL_*` bits the pre-check found.
    pub tells: u32,
}

/// A `;` followed by more text outside a literal: a stacked statement.
pub const TELL_STACKED: u32 = 1 << 0;
/// `--` or `/*` outside a literal: a comment that may cut the query's tail.
pub const TELL_COMMENT: u32 = 1 << 1;
/// The word UNION outside a literal.
pub const TELL_UNION: u32 = 1 << 2;
/// OR/AND followed by a literal compared with `=` to the same literal (`OR 1=1`,
/// `OR 'a'='a`, `AND 4825=4825`) or by `<`, `>`, `!` to any literal (`OR 2>1`), or `OR TRUE`.
/// A literal equal to a different one (`AND (0 = 1)`, `AND 4825=4826`) is no tell: ORMs
/// write contradictions for empty IN lists, and the blind probe that needs one also sends
/// its true twin, which is held.
pub const TELL_CONSTANT_PREDICATE: u32 = 1 << 3;
/// A delay function name (`PG_SLEEP`, `SLEEP`, `WAITFOR`).
pub const TELL_DELAY: u32 = 1 << 4;

const WORD_OR: u32 = 1;
const WORD_AND: u32 = 2;

/// The pre-check's state between bytes. Literals are followed as PostgreSQL writes them:
/// standard strings (`''` inside toggles twice), `E'...'` strings with backslash escapes,
/// and `$$...$$` bodies; tagged dollar quotes are not (the pre-check only decides what is
/// worth a hold, the analyzer decides what it is).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrecheckState {
    /// The current word's last 8 bytes, uppercased, packed (0 between words).
    pub word: u64,
    pub tells: u32,
    /// `IN_*`: which literal the text is in.
    pub quote: u32,
    /// A `;` was seen outside a literal, nothing but white space after it yet.
    pub after_semicolon: u32,
    /// `WORD_OR`/`WORD_AND` when that was the last word, 0 otherwise.
    pub last_word: u32,
    /// `PREDICATE_*`: a literal right after OR/AND, waiting for a comparison operator.
    pub predicate: u32,
    pub prev: u32,
    /// The predicate literal being read: its last 8 bytes (quotes included), packed.
    pub literal: u64,
    /// The literal left of a `=` (`PREDICATE_EQUALS`, `PREDICATE_RIGHT`).
    pub left: u64,
}

const IN_NONE: u32 = 0;
const IN_STRING: u32 = 1;
const IN_ESCAPE_STRING: u32 = 2;
/// In an `E''` string, right after a backslash: the next byte is taken as is.
const IN_ESCAPED: u32 = 3;
const IN_DOLLAR: u32 = 4;

const PREDICATE_NONE: u32 = 0;
/// In the literal (a number, or a string) that followed OR/AND.
const PREDICATE_LITERAL: u32 = 1;
/// The literal ended; white space may follow before the operator.
const PREDICATE_AFTER: u32 = 2;
/// `=` followed the literal; white space may follow before the right-hand literal.
const PREDICATE_EQUALS: u32 = 3;
/// In the literal right of the `=`.
const PREDICATE_RIGHT: u32 = 4;

const fn pack(s: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < s.len() {
        v = (v << 8) | s[i] as u64;
        i += 1;
    }
    v
}

const UNION: u64 = pack(b"UNION");
const OR: u64 = pack(b"OR");
const AND: u64 = pack(b"AND");
const TRUE: u64 = pack(b"TRUE");
const PG_SLEEP: u64 = pack(b"PG_SLEEP");
const SLEEP: u64 = pack(b"SLEEP");
const WAITFOR: u64 = pack(b"WAITFOR");
const E: u64 = pack(b"E");

impl PrecheckState {
    /// Feed one byte of query text.
    #[inline(always)]
    pub fn step(&mut self, c: u8) {
        let prev = self.prev as u8;
        self.prev = c as u32;
        match self.quote {
            IN_NONE => {}
            IN_ESCAPED => {
                self.quote = IN_ESCAPE_STRING;
                return;
            }
            IN_DOLLAR => {
                if c == b'$' && prev == b'$' {
                    self.quote = IN_NONE;
                    self.prev = 0;
                }
                return;
            }
            _ => {
                if self.predicate == PREDICATE_LITERAL || self.predicate == PREDICATE_RIGHT {
                    self.literal = (self.literal << 8) | c as u64;
                }
                if c == b'\\' && self.quote == IN_ESCAPE_STRING {
                    self.quote = IN_ESCAPED;
                } else if c == b'\'' {
                    self.quote = IN_NONE;
                    if self.predicate == PREDICATE_LITERAL {
                        self.predicate = PREDICATE_AFTER;
                    } else if self.predicate == PREDICATE_RIGHT {
                        self.compare_sides();
                    }
                }
                return;
            }
        }
        let space = c == b' ' || c == b'\t' || c == b'\n' || c == b'\r';
        if self.after_semicolon != 0 && !space && c != b';' {
            self.tells |= TELL_STACKED;
            self.after_semicolon = 0;
        }
        let upper = if c.is_ascii_lowercase() { c - 32 } else { c };
        let letter = upper.is_ascii_uppercase() || c == b'_';
        let digit = c.is_ascii_digit();
        if letter || (digit && self.word != 0) {
            self.word = (self.word << 8) | upper as u64;
            // A word after the literal or its `=`: `OR 'x' IS NULL`, `AND 1 = id`, not the
            // comparison the tell is about (a later `=` is someone else's).
            if self.predicate == PREDICATE_RIGHT {
                self.compare_sides();
            } else if self.predicate != PREDICATE_LITERAL {
                self.predicate = PREDICATE_NONE;
            }
            return;
        }
        // A literal after OR/AND, then a comparison: `OR 1=1`, `AND 'a'='a`.
        let number = digit || c == b'.';
        if self.predicate == PREDICATE_LITERAL || self.predicate == PREDICATE_RIGHT {
            if number {
                self.literal = (self.literal << 8) | c as u64;
            } else if self.predicate == PREDICATE_LITERAL {
                self.predicate = PREDICATE_AFTER;
            } else {
                self.compare_sides();
            }
        }
        if self.predicate == PREDICATE_AFTER && !space {
            if c == b'=' {
                self.left = self.literal;
                self.predicate = PREDICATE_EQUALS;
            } else {
                if c == b'<' || c == b'>' || c == b'!' {
                    self.tells |= TELL_CONSTANT_PREDICATE;
                }
                self.predicate = PREDICATE_NONE;
            }
        } else if self.predicate == PREDICATE_EQUALS && !space {
            if digit || c == b'\'' {
                self.literal = c as u64;
                self.predicate = PREDICATE_RIGHT;
            } else {
                self.predicate = PREDICATE_NONE;
            }
        }
        // The end of a word (or no word): judge it.
        let mut escape_string = false;
        if self.word != 0 {
            let w = self.word;
            self.word = 0;
            let after = self.last_word;
            self.last_word = 0;
            if w == UNION {
                self.tells |= TELL_UNION;
            } else if w == PG_SLEEP || w == SLEEP || w == WAITFOR {
                self.tells |= TELL_DELAY;
            } else if w == OR {
                self.last_word = WORD_OR;
            } else if w == AND {
                self.last_word = WORD_AND;
            } else if w == TRUE && after == WORD_OR {
                self.tells |= TELL_CONSTANT_PREDICATE;
            } else if w == E {
                escape_string = true;
            }
        }
        if (digit || c == b'\'') && self.last_word != 0 {
            self.literal = c as u64;
            self.predicate = PREDICATE_LITERAL;
        }
        if c == b'\'' {
            self.quote = if escape_string {
                IN_ESCAPE_STRING
            } else {
                IN_STRING
            };
        } else if c == b'$' && prev == b'$' {
            self.quote = IN_DOLLAR;
            self.prev = 0;
        } else if c == b';' {
            self.after_semicolon = 1;
        } else if (c == b'-' && prev == b'-') || (c == b'*' && prev == b'/') {
            self.tells |= TELL_COMMENT;
        }
        if !(space || c == b'(') {
            self.last_word = 0;
        }
    }

    /// The right-hand literal ended: a tell when it is the left one again.
    #[inline(always)]
    fn compare_sides(&mut self) {
        if self.literal == self.left {
            self.tells |= TELL_CONSTANT_PREDICATE;
        }
        self.predicate = PREDICATE_NONE;
    }

    /// The end of the checked text: a word running up to it is judged too.
    #[inline(always)]
    pub fn finish(&mut self) -> u32 {
        self.step(b' ');
        self.tells
    }
}

/// The tells of `text` (its first `PRECHECK_BYTES`), as the kernel finds them.
pub fn precheck(text: &[u8]) -> u32 {
    let mut state = PrecheckState::default();
    let mut i = 0;
    while i < text.len() && i < PRECHECK_BYTES as usize {
        if text[i] == 0 {
            break;
        }
        state.step(text[i]);
        i += 1;
    }
    state.finish()
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers only, no implicit padding.
    unsafe impl aya::Pod for super::HeldQuery {}
}

const _: () = assert!(core::mem::size_of::<HeldQuery>() == 32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_outside_literals_only() {
        for (q, tell) in [
            (
                "SELECT * FROM t WHERE name = 'x' OR '1'='1'",
                TELL_CONSTANT_PREDICATE,
            ),
            (
                "SELECT * FROM t WHERE id = 1 or 1=1",
                TELL_CONSTANT_PREDICATE,
            ),
            (
                "SELECT * FROM t WHERE id = 1 AND 4825=4825",
                TELL_CONSTANT_PREDICATE,
            ),
            (
                "SELECT * FROM t WHERE id = 1 AND (4825 = 4825)-- x",
                TELL_CONSTANT_PREDICATE,
            ),
            (
                "SELECT * FROM t WHERE id = 1 OR 2>1",
                TELL_CONSTANT_PREDICATE,
            ),
            (
                "SELECT * FROM t WHERE a = '' OR 'ab'='ab'",
                TELL_CONSTANT_PREDICATE,
            ),
            (
                "SELECT * FROM t WHERE name = 'a';DELETE FROM t",
                TELL_STACKED,
            ),
            ("SELECT * FROM t WHERE name = 'admin'--'", TELL_COMMENT),
            ("SELECT * FROM t WHERE id = 1/**/", TELL_COMMENT),
            ("SELECT a FROM t WHERE b = '' UnIoN SELECT 1", TELL_UNION),
            ("SELECT 1 WHERE 1=(SELECT 1 FROM PG_SLEEP(5))", TELL_DELAY),
        ] {
            assert_ne!(precheck(q.as_bytes()) & tell, 0, "{q}");
        }
        for q in [
            "SELECT * FROM t WHERE name = 'it''s -- or union; select 1 or 1=1'",
            "SELECT \"t\".\"id\" FROM \"t\" WHERE \"t\".\"a\" = $1 OR \"t\".\"b\" = $2 LIMIT 21",
            "INSERT INTO t (a, b) VALUES ('x', 2);",
            "SELECT orders, android FROM t WHERE x = 'a' ORDER BY y",
            "SELECT * FROM t WHERE ((t.a = 'x') AND (0 = 1))",
            "SELECT * FROM t WHERE a >= 8 AND ('x' IS NULL OR b = 'x')",
            "SELECT * FROM t WHERE a = 1 AND 1 = b",
        ] {
            assert_eq!(precheck(q.as_bytes()), 0, "{q}");
        }
    }

    #[test]
    fn only_the_first_bytes_are_read() {
        let mut q = [b'x'; PRECHECK_BYTES as usize + 32];
        let head = b"SELECT 1 WHERE a = '";
        q[..head.len()].copy_from_slice(head);
        let tail = b"' OR 1=1";
        let at = q.len() - tail.len();
        q[at..].copy_from_slice(tail);
        assert_eq!(precheck(&q), 0);
        assert_ne!(precheck(&q[..head.len() + 1]), u32::MAX);
    }
}
