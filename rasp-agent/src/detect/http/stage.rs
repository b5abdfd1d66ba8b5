//! The HTTP stage: what runs on the OpenSSL plaintext, off the event path, behind its own
//! analyzer queue (`pipeline`). Per connection (process, `SSL *`, the kernel's connection
//! id) it keeps an incremental HTTP parser fed in stream order (gaps the capture bounds
//! left are skipped by framing), the connection's endpoints (resolved once from its socket
//! fd), and the tail of its last outbound chunk for secrets split across writes. Each chunk
//! comes back analyzed (peer, findings); each request, response, HTTP/2 preface and
//! confirmed injection becomes an `http` detail for the rules. SQL queries pass through
//! here too, in ring order after the requests that caused them, for the taint link.
//!
//! Bounded: connections, flood clients and tainted values are capped, the oldest go first;
//! evidence is masked here already (`mask`), and masked again where it leaves the agent.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use crate::{
    events::{
        Direction, Endpoints, Event, Finding, HttpDetail, HttpMessageKind, SqlQueryDetail,
        TlsDetail,
    },
    mask::Masker,
    process::sockets::{SocketError, SocketTables},
};

use super::{
    flood::{FloodConfig, LoginFloodDetector},
    parse::{HttpLimits, HttpMessage, HttpRequest, HttpResponse, HttpStream, Protocol},
    secrets::{HttpFinding, HttpFindingKind, LeakCarry, RequestInspector, SecretLeakDetector},
    taint::{TaintConfig, TaintLink, TaintTracker},
};

#[derive(Debug, Clone, Copy)]
pub struct StageConfig {
    /// Connections followed at once; the least recently used is dropped first.
    pub max_connections: usize,
    pub http: HttpLimits,
    pub flood: FloodConfig,
    pub taint: TaintConfig,
    /// Times a connection's socket is looked up before its peer is left unknown.
    pub resolve_attempts: u8,
}

impl Default for StageConfig {
    fn default() -> Self {
        StageConfig {
            max_connections: 8192,
            http: HttpLimits::default(),
            flood: FloodConfig::default(),
            taint: TaintConfig::default(),
            resolve_attempts: 3,
        }
    }
}

/// What the stage did, for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StageStats {
    pub connections: usize,
    pub connections_evicted: u64,
    /// Connections whose peer could not be resolved (no fd seen, or the socket was gone).
    pub peers_unresolved: u64,
    /// Plaintext bytes the capture bounds (or lost records) left out, as the stage saw it.
    pub gap_bytes: u64,
    /// Gaps of unknown length (over-budget calls the kernel did not count).
    #[serde(default)]
    pub gaps_uncounted: u64,
    pub requests: u64,
    pub responses: u64,
    pub taint_links: u64,
}

/// A connection: the process's exec id, the `SSL *` and the kernel's id for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnKey {
    pid: u32,
    start_ns: u64,
    ssl: u64,
    conn: u64,
}

struct Connection {
    http: HttpStream,
    /// Next expected stream offset per direction.
    next: [u64; 2],
    outbound_tail: LeakCarry,
    endpoints: Endpoints,
    resolved: bool,
    attempts: u8,
    last_used: u64,
}

/// Whose refused logins are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FloodKey {
    /// This process answered them (a server): per client address and service port.
    Client { client: IpAddr, port: u16 },
    /// This process received them (a client hammering a server): per process and server.
    Refused {
        pid: u32,
        server: Option<SocketAddr>,
    },
}

/// The analyzed chunk and what it revealed.
#[derive(Debug, Default)]
pub struct StageOutput {
    /// The chunk with its endpoints and findings (`analyzed` set).
    pub tls: Option<TlsDetail>,
    pub http: Vec<HttpDetail>,
}

pub struct HttpStage {
    config: StageConfig,
    connections: HashMap<ConnKey, Connection>,
    clock: u64,
    sockets: SocketTables,
    leaks: SecretLeakDetector,
    inspector: RequestInspector,
    floods: LoginFloodDetector<FloodKey>,
    taint: TaintTracker<Endpoints>,
    masker: Masker,
    stats: StageStats,
    messages: Vec<HttpMessage>,
}

impl HttpStage {
    pub fn new(config: StageConfig, proc: &str) -> Self {
        HttpStage {
            config,
            connections: HashMap::new(),
            clock: 0,
            sockets: SocketTables::new(proc),
            leaks: SecretLeakDetector::default(),
            inspector: RequestInspector::default(),
            floods: LoginFloodDetector::new(config.flood),
            taint: TaintTracker::new(config.taint),
            masker: Masker::default(),
            stats: StageStats::default(),
            messages: Vec::new(),
        }
    }

    pub fn stats(&self) -> StageStats {
        StageStats {
            connections: self.connections.len(),
            ..self.stats
        }
    }

    /// One chunk of plaintext (or a connection's end) of process `ev`.
    pub fn tls(&mut self, ev: &Event, d: &TlsDetail) -> StageOutput {
        let key = ConnKey {
            pid: ev.pid,
            start_ns: ev.start_ns,
            ssl: d.ssl,
            conn: d.conn,
        };
        let mut analyzed = d.clone();
        analyzed.analyzed = true;
        if d.closed {
            if let Some(c) = self.connections.remove(&key) {
                analyzed.endpoints = c.endpoints;
            }
            return StageOutput {
                tls: Some(analyzed),
                http: Vec::new(),
            };
        }
        self.clock += 1;
        let clock = self.clock;
        if !self.connections.contains_key(&key) {
            self.make_room();
        }
        let config = self.config;
        let connection = self.connections.entry(key).or_insert_with(|| Connection {
            http: HttpStream::new(config.http),
            next: [0; 2],
            outbound_tail: LeakCarry::default(),
            endpoints: Endpoints::default(),
            resolved: false,
            attempts: 0,
            last_used: clock,
        });
        connection.last_used = clock;
        if !connection.resolved && connection.attempts < config.resolve_attempts {
            if let Some(fd) = d.fd {
                connection.attempts += 1;
                match self.sockets.endpoints(ev.pid, fd) {
                    Ok(e) => {
                        connection.endpoints = e;
                        connection.resolved = true;
                    }
                    Err(error) => {
                        if connection.attempts >= config.resolve_attempts {
                            self.stats.peers_unresolved += 1;
                        }
                        tracing::debug!(pid = ev.pid, fd, %error, "TLS peer not resolved");
                        if matches!(error, SocketError::NotASocket { .. }) {
                            connection.attempts = config.resolve_attempts;
                        }
                    }
                }
            }
        }
        analyzed.endpoints = connection.endpoints;
        let endpoints = connection.endpoints;

        // In stream order: what the bounds left out is a gap the parser skips by framing.
        let dir = d.direction;
        let slot = dir_slot(dir);
        let mut data = d.plaintext.bytes();
        let expected = connection.next[slot];
        if dir == Direction::Outbound && (d.gap_uncounted || d.offset > expected) {
            // A secret's halves on either side of a gap are not one secret.
            connection.outbound_tail = LeakCarry::default();
        }
        if d.gap_uncounted {
            // The offsets undercount by what the gap held: start this direction over here.
            self.stats.gaps_uncounted += 1;
            connection.http.gap(dir, None, &mut self.messages);
        } else if d.offset > expected {
            let missing = (d.offset - expected) as usize;
            self.stats.gap_bytes += missing as u64;
            connection.http.gap(dir, Some(missing), &mut self.messages);
        } else if d.offset < expected {
            // Already seen (a connection state the kernel evicted and re-created starts
            // over at 0, with a new id; this is a repeat): keep only what is new.
            let seen = (expected - d.offset) as usize;
            data = data.get(seen..).unwrap_or(&[]);
        }
        connection.next[slot] = if d.gap_uncounted {
            d.offset + d.plaintext.len() as u64
        } else {
            connection.next[slot].max(d.offset + d.plaintext.len() as u64)
        };
        if !data.is_empty() {
            connection.http.feed(dir, data, &mut self.messages);
        }
        if dir == Direction::Outbound && !data.is_empty() {
            for f in self
                .leaks
                .scan_outbound_stream(&mut connection.outbound_tail, data)
            {
                analyzed.findings.push(finding(&f));
            }
        }
        let mut http = Vec::new();
        let messages = std::mem::take(&mut self.messages);
        for message in &messages {
            if let Some(detail) = self.message(ev, d, endpoints, message) {
                http.push(detail);
            }
        }
        self.messages = messages;
        self.messages.clear();
        // Requests this process read, linked to queries it sent before they reached us.
        StageOutput {
            tls: Some(analyzed),
            http,
        }
    }

    /// A query process `ev` sent: linked to the request values it contains.
    pub fn sql(&mut self, ev: &Event, d: &SqlQueryDetail) -> Vec<HttpDetail> {
        let links = self
            .taint
            .query((ev.pid, ev.start_ns), ev.ts_boot_ns, &d.query, d.function);
        links.into_iter().map(|l| self.taint_detail(l)).collect()
    }

    fn make_room(&mut self) {
        if self.connections.len() < self.config.max_connections {
            return;
        }
        // Only when full: one scan for the least recently used.
        if let Some(oldest) = self
            .connections
            .iter()
            .min_by_key(|(_, c)| c.last_used)
            .map(|(k, _)| *k)
        {
            self.connections.remove(&oldest);
            self.stats.connections_evicted += 1;
        }
    }

    fn message(
        &mut self,
        ev: &Event,
        d: &TlsDetail,
        endpoints: Endpoints,
        message: &HttpMessage,
    ) -> Option<HttpDetail> {
        match message {
            HttpMessage::Request(req) => Some(self.request(ev, d, endpoints, req)),
            HttpMessage::Response(resp) => Some(self.response(ev, d, endpoints, resp)),
            HttpMessage::Protocol {
                direction,
                protocol: Protocol::Http2,
            } => {
                let mut detail =
                    HttpDetail::new(HttpMessageKind::Protocol, *direction, d.ssl, d.conn);
                detail.endpoints = endpoints;
                detail.protocol = Some("h2".into());
                Some(detail)
            }
            // HTTP/1 shows in its requests; other protocols are not HTTP's business.
            HttpMessage::Protocol { .. } => None,
        }
    }

    fn request(
        &mut self,
        ev: &Event,
        d: &TlsDetail,
        endpoints: Endpoints,
        req: &HttpRequest,
    ) -> HttpDetail {
        self.stats.requests += 1;
        let mut detail = HttpDetail::new(HttpMessageKind::Request, req.direction, d.ssl, d.conn);
        detail.endpoints = endpoints;
        detail.protocol = Some("http/1.1".into());
        detail.method = Some(req.method.clone());
        detail.path = Some(req.path.clone());
        detail.host = req.headers.host.clone();
        detail.params = req.params().map(|(_, name, _)| name.to_string()).collect();
        detail.truncated = req.truncated;
        detail.findings = self.inspector.inspect(req).iter().map(finding).collect();
        if req.direction == Direction::Inbound {
            let links = self
                .taint
                .request((ev.pid, ev.start_ns), ev.ts_boot_ns, req, &endpoints);
            for link in links {
                // A query seen before this request: reported with this request's event.
                let linked = self.taint_detail(link);
                detail.findings.extend(linked.findings);
                detail.query = linked.query;
                detail.query_function = linked.query_function;
                detail.after_ms = linked.after_ms;
            }
        }
        detail
    }

    fn response(
        &mut self,
        ev: &Event,
        d: &TlsDetail,
        endpoints: Endpoints,
        resp: &HttpResponse,
    ) -> HttpDetail {
        self.stats.responses += 1;
        let mut detail = HttpDetail::new(HttpMessageKind::Response, resp.direction, d.ssl, d.conn);
        detail.endpoints = endpoints;
        detail.protocol = Some("http/1.1".into());
        detail.status = Some(resp.status);
        detail.truncated = resp.truncated;
        let key = match (resp.direction, endpoints.peer) {
            // Written: this process is the server, the peer its client.
            (Direction::Outbound, Some(peer)) => FloodKey::Client {
                client: peer.ip().to_canonical(),
                port: endpoints.local.map_or(0, |l| l.port()),
            },
            (Direction::Outbound, None) => FloodKey::Refused {
                pid: ev.pid,
                server: None,
            },
            (Direction::Inbound, server) => FloodKey::Refused {
                pid: ev.pid,
                server,
            },
        };
        if let Some(alert) = self.floods.observe(&key, resp.status) {
            detail.refusals = Some(alert.failures);
            detail.window_secs = Some(alert.window.as_secs());
            detail.findings.push(Finding {
                kind: "login_flood".into(),
                param: None,
                source: None,
                sample: format!(
                    "{} refusals (401/403) in {} s",
                    alert.failures,
                    (alert.at - alert.first_at).as_secs()
                ),
            });
        }
        detail
    }

    fn taint_detail(&mut self, link: TaintLink<Endpoints>) -> HttpDetail {
        self.stats.taint_links += 1;
        let r = &link.request;
        let mut detail = HttpDetail::new(HttpMessageKind::Taint, Direction::Inbound, 0, 0);
        detail.endpoints = r.context;
        detail.method = Some(r.method.clone());
        detail.path = Some(r.path.clone());
        detail.params = vec![r.param.clone()];
        detail.findings.push(Finding {
            kind: "sql_injection_confirmed".into(),
            param: Some(r.param.clone()),
            source: Some(source_name(r.source).into()),
            sample: self.masker.mask_str(&r.value).into_owned(),
        });
        detail.query = Some(self.masker.mask_sql(&link.query).into_owned());
        detail.query_function = Some(link.function);
        detail.after_ms = Some(link.query_at_ns.saturating_sub(r.at_ns) / 1_000_000);
        detail
    }
}

fn dir_slot(dir: Direction) -> usize {
    match dir {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

fn source_name(source: super::parse::ParamSource) -> &'static str {
    match source {
        super::parse::ParamSource::Query => "query",
        super::parse::ParamSource::Form => "form",
        super::parse::ParamSource::Json => "json",
    }
}

/// The name a finding has in events and policies (`policy::vocab`).
pub fn finding_name(kind: HttpFindingKind) -> &'static str {
    match kind {
        HttpFindingKind::SecretLeaving(k) => k.name(),
        HttpFindingKind::AdminPath => "admin_path",
        HttpFindingKind::SqlInjection => "sql_injection",
        HttpFindingKind::PathTraversal => "path_traversal",
        HttpFindingKind::CommandInjection => "command_injection",
    }
}

fn finding(f: &HttpFinding) -> Finding {
    Finding {
        kind: finding_name(f.kind).into(),
        param: f.param.clone(),
        source: f.source.map(|s| source_name(s).into()),
        sample: f.sample.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Comm, EventDetail, Plaintext, SqlFunction};

    fn event(pid: u32, ts: u64) -> Event {
        let exit = EventDetail::Exit(crate::events::ExitDetail::from_wait_status(0));
        Event {
            ts_boot_ns: ts,
            start_ns: 7,
            comm: Comm::new("app"),
            cgroup_id: 1,
            ..Event::new(pid, 1, exit)
        }
    }

    fn chunk(direction: Direction, offset: u64, data: &[u8]) -> TlsDetail {
        TlsDetail {
            direction,
            ssl: 0x1000,
            conn: 42,
            fd: None,
            endpoints: Endpoints::default(),
            offset,
            call_len: data.len() as u64,
            captured: data.len(),
            plaintext: Plaintext::new(data),
            truncated: false,
            unreadable: false,
            closed: false,
            gap_uncounted: false,
            analyzed: false,
            findings: Vec::new(),
        }
    }

    fn stage() -> HttpStage {
        HttpStage::new(
            StageConfig {
                flood: FloodConfig {
                    threshold: 3,
                    ..FloodConfig::default()
                },
                ..StageConfig::default()
            },
            "/nonexistent-proc",
        )
    }

    fn kinds(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.kind.as_str()).collect()
    }

    #[test]
    fn a_key_written_out_is_a_masked_finding_even_split_across_writes() {
        let mut s = stage();
        let ev = event(10, 1);
        let head = b"POST /x HTTP/1.1\r\nContent-Length: 30\r\n\r\nkey=AKIAIOSF";
        let first = s.tls(&ev, &chunk(Direction::Outbound, 0, head));
        assert!(first.tls.unwrap().findings.is_empty());
        let second = s.tls(
            &ev,
            &chunk(Direction::Outbound, head.len() as u64, b"ODNN7EXAMPLE&z=1"),
        );
        let tls = second.tls.unwrap();
        assert!(tls.analyzed);
        assert_eq!(kinds(&tls.findings), ["aws_access_key_id"]);
        assert_eq!(tls.findings[0].sample, "AKIA****************");
        // What was read is not "leaving".
        let read = s.tls(
            &event(11, 1),
            &chunk(Direction::Inbound, 0, b"key=AKIAIOSFODNN7EXAMPLE"),
        );
        assert!(read.tls.unwrap().findings.is_empty());
    }

    #[test]
    fn requests_responses_and_floods_become_http_details() {
        let mut s = stage();
        let ev = event(10, 1);
        let out = s.tls(
            &ev,
            &chunk(
                Direction::Inbound,
                0,
                b"GET /actuator/env?q=1%27%20OR%201%3D1-- HTTP/1.1\r\nHost: shop\r\n\r\n",
            ),
        );
        let [req] = &out.http[..] else {
            panic!("{:?}", out.http)
        };
        assert_eq!(req.message, HttpMessageKind::Request);
        assert_eq!(req.method.as_deref(), Some("GET"));
        assert_eq!(req.path.as_deref(), Some("/actuator/env"));
        assert_eq!(req.host.as_deref(), Some("shop"));
        assert_eq!(req.params, ["q"]);
        assert_eq!(kinds(&req.findings), ["admin_path", "sql_injection"]);
        // Three refusals (the test threshold): the third carries the flood.
        let mut offset = 0;
        let mut floods = Vec::new();
        for _ in 0..3 {
            let resp = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
            let out = s.tls(&ev, &chunk(Direction::Outbound, offset, resp));
            offset += resp.len() as u64;
            assert_eq!(out.http[0].status, Some(401));
            floods.extend(out.http.into_iter().filter(|h| !h.findings.is_empty()));
        }
        assert_eq!(floods.len(), 1);
        assert_eq!(kinds(&floods[0].findings), ["login_flood"]);
        assert_eq!(floods[0].refusals, Some(3));
        assert_eq!(s.stats().responses, 3);
    }

    #[test]
    fn gaps_are_skipped_by_framing_and_repeats_dropped() {
        let mut s = stage();
        let ev = event(10, 1);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        let out = s.tls(&ev, &chunk(Direction::Outbound, 0, head));
        assert_eq!(out.http[0].status, Some(200));
        // The bounds skipped the body: the next response parses after the gap.
        let next = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let out = s.tls(
            &ev,
            &chunk(Direction::Outbound, head.len() as u64 + 100000, next),
        );
        assert_eq!(out.http[0].status, Some(404));
        assert_eq!(s.stats().gap_bytes, 100000);
        // A repeat of bytes already seen adds nothing.
        let out = s.tls(
            &ev,
            &chunk(Direction::Outbound, head.len() as u64 + 100000, next),
        );
        assert!(out.http.is_empty());
    }

    #[test]
    fn a_gap_of_unknown_length_resyncs_at_the_next_head() {
        let mut s = stage();
        let ev = event(10, 1);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nzzzz";
        s.tls(&ev, &chunk(Direction::Outbound, 0, head));
        // The kernel stopped counting the body's bytes: the offset says no gap, the flag
        // says there was one. Taken as body, the next head would be lost.
        let next = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno";
        let mut flagged = chunk(Direction::Outbound, head.len() as u64, next);
        flagged.gap_uncounted = true;
        let out = s.tls(&ev, &flagged);
        assert_eq!(out.http.len(), 1, "{:?}", out.http);
        assert_eq!(out.http[0].status, Some(401));
        assert_eq!(s.stats().gaps_uncounted, 1);
        // The direction goes on from the flagged chunk's end.
        let after = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        let out = s.tls(
            &ev,
            &chunk(Direction::Outbound, (head.len() + next.len()) as u64, after),
        );
        assert_eq!(out.http[0].status, Some(403));
    }

    #[test]
    fn a_request_value_reaching_sql_is_linked_and_a_bound_parameter_is_not() {
        let mut s = stage();
        let req = b"GET /item?name=x%27%20OR%20%271%27%3D%271 HTTP/1.1\r\nHost: a\r\n\r\n";
        s.tls(&event(10, 1_000), &chunk(Direction::Inbound, 0, req));
        let query = |text: &str, function| SqlQueryDetail::sent(function, 1, text.into());
        let safe = s.sql(
            &event(10, 2_000),
            &query(
                "SELECT * FROM items WHERE name = $1",
                SqlFunction::SendQueryParams,
            ),
        );
        assert!(safe.is_empty());
        let linked = s.sql(
            &event(10, 3_000),
            &query(
                "SELECT * FROM items WHERE name = 'x' OR '1'='1'",
                SqlFunction::SendQuery,
            ),
        );
        let [t] = &linked[..] else {
            panic!("{linked:?}")
        };
        assert_eq!(t.message, HttpMessageKind::Taint);
        assert_eq!(t.method.as_deref(), Some("GET"));
        assert_eq!(t.path.as_deref(), Some("/item"));
        assert_eq!(kinds(&t.findings), ["sql_injection_confirmed"]);
        assert_eq!(t.findings[0].param.as_deref(), Some("name"));
        assert_eq!(t.query_function, Some(SqlFunction::SendQuery));
        assert!(t
            .query
            .as_deref()
            .unwrap()
            .starts_with("SELECT * FROM items"));
        // Another process's query carries no link.
        assert!(s
            .sql(
                &event(11, 3_000),
                &query(
                    "SELECT * FROM items WHERE name = 'x' OR '1'='1'",
                    SqlFunction::SendQuery
                )
            )
            .is_empty());
    }

    #[test]
    fn http2_is_reported_and_connections_are_bounded() {
        let mut s = HttpStage::new(
            StageConfig {
                max_connections: 2,
                ..StageConfig::default()
            },
            "/nonexistent-proc",
        );
        let out = s.tls(
            &event(10, 1),
            &chunk(
                Direction::Outbound,
                0,
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0",
            ),
        );
        assert_eq!(out.http[0].message, HttpMessageKind::Protocol);
        assert_eq!(out.http[0].protocol.as_deref(), Some("h2"));
        for ssl in 0..5u64 {
            let mut c = chunk(Direction::Outbound, 0, b"GET / HTTP/1.1\r\n\r\n");
            c.ssl = ssl;
            s.tls(&event(10, 1), &c);
        }
        assert_eq!(s.stats().connections, 2);
        assert!(s.stats().connections_evicted >= 3);
        // A closed connection is dropped.
        let mut close = chunk(Direction::Inbound, 0, b"");
        close.ssl = 4;
        close.closed = true;
        s.tls(&event(10, 1), &close);
        assert_eq!(s.stats().connections, 1);
    }

    #[test]
    fn finding_names_are_the_policy_vocabulary() {
        use crate::mask::SecretKind;
        let structured: Vec<&str> = SecretKind::ALL
            .iter()
            .filter(|k| k.is_structured())
            .map(|k| finding_name(HttpFindingKind::SecretLeaving(*k)))
            .collect();
        assert_eq!(structured, crate::policy::vocab::TLS_FINDINGS);
        let mut http: Vec<&str> = [
            HttpFindingKind::AdminPath,
            HttpFindingKind::SqlInjection,
            HttpFindingKind::PathTraversal,
            HttpFindingKind::CommandInjection,
        ]
        .into_iter()
        .map(finding_name)
        .collect();
        http.extend(["login_flood", "sql_injection_confirmed"]);
        let mut vocab = crate::policy::vocab::HTTP_FINDINGS.to_vec();
        vocab.sort();
        http.sort();
        assert_eq!(http, vocab);
    }
}
