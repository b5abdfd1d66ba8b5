//! Taint without instrumentation: a process read an HTTP request, and soon after sent a SQL
//! query in which one of the request's parameter values changes the query's token structure
//! — the value spans more than one token, or breaks out of the literal it was put in. That
//! is an injection confirmed by the application itself, not guessed from the payload's
//! look: a benign value (a name, a number, `O'Brien` properly escaped) always lands inside
//! one token, and a value sent as a bound parameter (`PQsendQueryParams` with `$1`) is not
//! in the query text at all.
//!
//! Per process (exec id) the tracker keeps the recent values that *could* change a query's
//! structure (they hold a quote, an operator, a comment or white space), for `ttl`, bounded
//! in number; and the recent queries, so a query that reached the agent before the request
//! that caused it (the decision ring is faster than the bulk ring) is still linked.

use std::collections::{HashMap, VecDeque};

use crate::{
    detect::sql::{tokenize, LexLimits},
    events::SqlFunction,
};

use super::parse::{HttpRequest, ParamSource};

/// A process: its pid and start time (the exec id; a reused pid is another process).
pub type ProcessKey = (u32, u64);

#[derive(Debug, Clone, Copy)]
pub struct TaintConfig {
    /// How long a request's values (and a query) are remembered, in kernel time.
    pub ttl_ns: u64,
    /// Values remembered per process (the oldest go first).
    pub per_process: usize,
    /// Queries remembered per process, for requests that reach the agent after them.
    pub queries_per_process: usize,
    /// Processes tracked; when full, the process seen least recently is forgotten.
    pub processes: usize,
    /// Shortest value tracked (shorter ones match too much by chance).
    pub min_len: usize,
}

impl Default for TaintConfig {
    fn default() -> Self {
        TaintConfig {
            // A web handler queries within milliseconds of reading its request; ten seconds
            // covers slow handlers and a loaded agent without keeping stale values.
            ttl_ns: 10_000_000_000,
            per_process: 64,
            queries_per_process: 16,
            processes: 4096,
            min_len: 3,
        }
    }
}

/// Where a tainted value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaintSource<E> {
    pub at_ns: u64,
    pub method: String,
    pub path: String,
    pub param: String,
    pub source: ParamSource,
    pub value: String,
    /// What the caller keeps with a request (its connection's endpoints).
    pub context: E,
}

/// A request's value found changing a query's structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaintLink<E> {
    pub request: TaintSource<E>,
    pub query: String,
    pub query_at_ns: u64,
    /// How the query was sent.
    pub function: SqlFunction,
}

#[derive(Debug, Clone)]
struct SeenQuery {
    at_ns: u64,
    query: String,
    function: SqlFunction,
}

#[derive(Debug)]
struct ProcessTaint<E> {
    values: VecDeque<TaintSource<E>>,
    queries: VecDeque<SeenQuery>,
    last_ns: u64,
}

#[derive(Debug)]
pub struct TaintTracker<E> {
    config: TaintConfig,
    processes: HashMap<ProcessKey, ProcessTaint<E>>,
}

impl<E: Clone> TaintTracker<E> {
    pub fn new(config: TaintConfig) -> Self {
        TaintTracker {
            config,
            processes: HashMap::new(),
        }
    }

    pub fn tracked_processes(&self) -> usize {
        self.processes.len()
    }

    /// A request `process` read at `at_ns`: remember its values that could change a query,
    /// and link them to queries already seen that were sent after it.
    pub fn request(
        &mut self,
        process: ProcessKey,
        at_ns: u64,
        req: &HttpRequest,
        context: &E,
    ) -> Vec<TaintLink<E>> {
        let config = self.config;
        let candidates: Vec<TaintSource<E>> = req
            .params()
            .filter(|(_, _, v)| could_change_structure(v, config.min_len))
            .map(|(source, name, value)| TaintSource {
                at_ns,
                method: req.method.clone(),
                path: req.path.clone(),
                param: name.to_string(),
                source,
                value: value.to_string(),
                context: context.clone(),
            })
            .collect();
        if candidates.is_empty() {
            return Vec::new();
        }
        let entry = self.entry(process, at_ns);
        let mut links = Vec::new();
        for q in &entry.queries {
            if q.at_ns < at_ns || q.at_ns - at_ns > config.ttl_ns {
                continue;
            }
            for c in &candidates {
                if changes_structure(&q.query, &c.value) {
                    links.push(TaintLink {
                        request: c.clone(),
                        query: q.query.clone(),
                        query_at_ns: q.at_ns,
                        function: q.function,
                    });
                }
            }
        }
        for c in candidates {
            if entry.values.len() >= config.per_process {
                entry.values.pop_front();
            }
            entry.values.push_back(c);
        }
        links
    }

    /// A query `process` sent at `at_ns`: link it to remembered values that change its
    /// structure (each value once per query, to the latest request that carried it), and
    /// remember it for requests still to come.
    pub fn query(
        &mut self,
        process: ProcessKey,
        at_ns: u64,
        query: &str,
        function: SqlFunction,
    ) -> Vec<TaintLink<E>> {
        let config = self.config;
        // Only processes that read requests are tracked: most queries cost a hash miss.
        let Some(entry) = self.processes.get_mut(&process) else {
            return Vec::new();
        };
        entry.last_ns = entry.last_ns.max(at_ns);
        while entry
            .values
            .front()
            .is_some_and(|v| at_ns.saturating_sub(v.at_ns) > config.ttl_ns)
        {
            entry.values.pop_front();
        }
        // A value is linked to the latest request that carried it: the one the handler
        // was serving (the same payload sent earlier to a safe endpoint is not the cause).
        let mut links: Vec<TaintLink<E>> = Vec::new();
        for v in entry.values.iter().rev() {
            if v.at_ns > at_ns || links.iter().any(|l| l.request.value == v.value) {
                continue;
            }
            if changes_structure(query, &v.value) {
                links.push(TaintLink {
                    request: v.clone(),
                    query: query.to_string(),
                    query_at_ns: at_ns,
                    function,
                });
            }
        }
        if entry.queries.len() >= config.queries_per_process {
            entry.queries.pop_front();
        }
        entry.queries.push_back(SeenQuery {
            at_ns,
            query: query.to_string(),
            function,
        });
        links
    }

    fn entry(&mut self, process: ProcessKey, at_ns: u64) -> &mut ProcessTaint<E> {
        if !self.processes.contains_key(&process) && self.processes.len() >= self.config.processes {
            // Forget the process heard from least recently (a scan, only when full).
            if let Some(oldest) = self
                .processes
                .iter()
                .min_by_key(|(_, p)| p.last_ns)
                .map(|(k, _)| *k)
            {
                self.processes.remove(&oldest);
            }
        }
        let entry = self
            .processes
            .entry(process)
            .or_insert_with(|| ProcessTaint {
                values: VecDeque::new(),
                queries: VecDeque::new(),
                last_ns: at_ns,
            });
        entry.last_ns = entry.last_ns.max(at_ns);
        entry
    }
}

/// A value made only of letters, digits and `_`, `-`, `.`, `@` lands in one token wherever
/// it is put (inside a literal or as one word): it cannot change a query's structure.
fn could_change_structure(value: &str, min_len: usize) -> bool {
    value.len() >= min_len
        && value
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@') || b >= 0x80))
}

/// Occurrences of a value checked per query.
const MAX_OCCURRENCES: usize = 8;

/// Does `value`, where it occurs in `query`, span more than one token (it closed a literal,
/// added an operator, a keyword, a comment)? An occurrence inside one token — a string
/// literal, a number, a name — is how a value looks when the query is built safely.
pub fn changes_structure(query: &str, value: &str) -> bool {
    if value.is_empty() || value.len() > query.len() {
        return false;
    }
    let mut occurrences = query.match_indices(value).take(MAX_OCCURRENCES).peekable();
    if occurrences.peek().is_none() {
        return false;
    }
    let lexed = tokenize(query, LexLimits::default());
    occurrences.any(|(start, _)| {
        let end = start + value.len();
        let overlapping = lexed
            .tokens
            .iter()
            .filter(|t| t.start < end && t.end() > start)
            .take(2)
            .count();
        overlapping > 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::http::parse::{Direction, HttpMessage, HttpStream};

    fn request(raw: &str) -> HttpRequest {
        let mut stream = HttpStream::default();
        let mut out = Vec::new();
        stream.feed(Direction::Inbound, raw.as_bytes(), &mut out);
        out.into_iter()
            .find_map(|m| match m {
                HttpMessage::Request(r) => Some(r),
                _ => None,
            })
            .expect("a request")
    }

    #[test]
    fn values_that_break_out_change_the_structure() {
        for (query, value) in [
            (
                "SELECT * FROM users WHERE name = 'x' OR '1'='1'",
                "x' OR '1'='1",
            ),
            ("SELECT * FROM items WHERE id = 1 OR 1=1", "1 OR 1=1"),
            (
                "SELECT * FROM t WHERE id = 1; DROP TABLE t",
                "1; DROP TABLE t",
            ),
            (
                "SELECT * FROM t WHERE name = 'admin'--' AND pw = 'x'",
                "admin'--",
            ),
            (
                "SELECT a FROM t WHERE b = '' UNION SELECT passwd FROM u--'",
                "' UNION SELECT passwd FROM u--",
            ),
            (
                "SELECT * FROM t WHERE id = 1/**/or/**/1=1",
                "1/**/or/**/1=1",
            ),
        ] {
            assert!(changes_structure(query, value), "{query} <- {value}");
        }
    }

    #[test]
    fn values_inside_one_token_do_not() {
        for (query, value) in [
            ("SELECT * FROM users WHERE name = 'O''Brien'", "O'Brien"),
            (
                "SELECT * FROM users WHERE name = 'hello world'",
                "hello world",
            ),
            ("SELECT * FROM items WHERE id = 42", "42"),
            ("SELECT * FROM t WHERE note = 'a -- b; c'", "a -- b; c"),
            ("SELECT * FROM t WHERE name LIKE '%smith%'", "%smith%"),
            // Parameterized: the value is not in the text.
            ("SELECT * FROM users WHERE name = $1", "x' OR '1'='1"),
        ] {
            assert!(!changes_structure(query, value), "{query} <- {value}");
        }
    }

    #[test]
    fn links_a_request_to_the_query_it_reached_and_not_the_safe_one() {
        let mut t: TaintTracker<()> = TaintTracker::new(TaintConfig::default());
        let p = (10, 1);
        let req = request(
            "GET /search?name=x%27%20OR%20%271%27%3D%271&page=2 HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        assert!(t.request(p, 1_000, &req, &()).is_empty());
        // Only the value that could change a query is kept (page=2 cannot).
        assert_eq!(t.processes[&p].values.len(), 1);
        let safe = t.query(
            p,
            2_000,
            "SELECT * FROM users WHERE name = $1",
            SqlFunction::SendQueryParams,
        );
        assert!(safe.is_empty());
        let links = t.query(
            p,
            3_000,
            "SELECT * FROM users WHERE name = 'x' OR '1'='1'",
            SqlFunction::SendQuery,
        );
        assert_eq!(links.len(), 1);
        let l = &links[0];
        assert_eq!(
            (
                l.request.method.as_str(),
                l.request.path.as_str(),
                l.request.param.as_str()
            ),
            ("GET", "/search", "name")
        );
        assert_eq!(l.request.source, ParamSource::Query);
        assert_eq!(l.function, SqlFunction::SendQuery);
        // Another process's query is not linked.
        assert!(t
            .query(
                (11, 1),
                3_000,
                "SELECT 1 WHERE 'x' OR '1'='1'",
                SqlFunction::SendQuery
            )
            .is_empty());
        // Past the ttl the value is forgotten.
        let late = 3_000 + TaintConfig::default().ttl_ns + 1_001;
        assert!(t
            .query(
                p,
                late,
                "SELECT * FROM users WHERE name = 'x' OR '1'='1'",
                SqlFunction::SendQuery
            )
            .is_empty());
    }

    #[test]
    fn the_same_payload_sent_to_a_safe_endpoint_first_is_not_the_cause() {
        let mut t: TaintTracker<()> = TaintTracker::new(TaintConfig::default());
        let p = (10, 1);
        let value = "x%27%20OR%20%271%27%3D%271";
        let safe = request(&format!(
            "GET /safe?name={value} HTTP/1.1\r\nHost: a\r\n\r\n"
        ));
        let item = request(&format!(
            "GET /item?name={value} HTTP/1.1\r\nHost: a\r\n\r\n"
        ));
        t.request(p, 1_000, &safe, &());
        assert!(t
            .query(
                p,
                1_500,
                "SELECT * FROM items WHERE name = $1",
                SqlFunction::SendQueryParams
            )
            .is_empty());
        t.request(p, 2_000, &item, &());
        let links = t.query(
            p,
            2_500,
            "SELECT * FROM items WHERE name = 'x' OR '1'='1'",
            SqlFunction::SendQuery,
        );
        let [link] = &links[..] else {
            panic!("{links:?}")
        };
        assert_eq!(link.request.path, "/item");
    }

    #[test]
    fn a_query_seen_before_its_request_is_linked_when_the_request_arrives() {
        let mut t: TaintTracker<()> = TaintTracker::new(TaintConfig::default());
        let p = (10, 1);
        // The process must be known first (it read a request before).
        let first = request("GET /a?q=ab%27c HTTP/1.1\r\n\r\n");
        t.request(p, 100, &first, &());
        assert!(t
            .query(
                p,
                2_000,
                "SELECT 1 FROM t WHERE id = 7 OR 1=1",
                SqlFunction::SendQuery
            )
            .is_empty());
        let req = request("GET /item?id=7%20OR%201%3D1 HTTP/1.1\r\n\r\n");
        let links = t.request(p, 1_500, &req, &());
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].request.param, "id");
        // A query sent before the request cannot come from it.
        let mut t: TaintTracker<()> = TaintTracker::new(TaintConfig::default());
        t.request(p, 100, &first, &());
        t.query(
            p,
            1_000,
            "SELECT 1 FROM t WHERE id = 7 OR 1=1",
            SqlFunction::SendQuery,
        );
        assert!(t.request(p, 1_500, &req, &()).is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let config = TaintConfig {
            per_process: 4,
            processes: 3,
            ..TaintConfig::default()
        };
        let mut t: TaintTracker<()> = TaintTracker::new(config);
        for pid in 0..10u32 {
            for i in 0..10 {
                let req = request(&format!("GET /?v=a%27{i} HTTP/1.1\r\n\r\n"));
                t.request((pid, 0), u64::from(pid) * 100 + i, &req, &());
            }
        }
        assert_eq!(t.tracked_processes(), 3);
        assert!(t.processes.values().all(|p| p.values.len() <= 4));
    }
}
