//! Incremental HTTP/1.x parsing of one TLS connection's plaintext, both directions, as the
//! OpenSSL hooks hand it over in chunks. Heads are parsed with `httparse`; bodies are skipped
//! by their framing (Content-Length, chunked), and the first bytes of form and JSON request
//! bodies are kept for their parameters. Buffering is bounded; HTTP/2 is recognised, not parsed.

use std::collections::VecDeque;

/// Which way the bytes went (`Inbound` read, `Outbound` written). A server reads requests,
/// a client writes them: each message's kind is decided by its bytes, not by the direction.
pub use crate::events::Direction;

fn index(dir: Direction) -> usize {
    match dir {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

fn other(dir: Direction) -> Direction {
    match dir {
        Direction::Inbound => Direction::Outbound,
        Direction::Outbound => Direction::Inbound,
    }
}

/// What one direction of a connection carries, once its first bytes are seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Http1,
    /// Connection preface or frames: reported, not parsed.
    Http2,
    /// Neither (or a tunnel after CONNECT / 101 Switching Protocols).
    Other,
}

/// Bounds that keep a connection's cost flat whatever the peer sends.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request/response head buffered; beyond it the head is reported truncated.
    pub head_cap: usize,
    /// Bytes of a form or JSON request body kept for parameters.
    pub body_capture: usize,
    /// Parameters kept per source (query, form, JSON).
    pub max_params: usize,
    /// Bytes kept of one parameter value or header value.
    pub max_value_len: usize,
    /// Requests remembered per direction to frame their responses (HEAD has no body).
    pub max_pending: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            head_cap: 16 * 1024,
            body_capture: 8 * 1024,
            max_params: 64,
            max_value_len: 4 * 1024,
            max_pending: 32,
        }
    }
}

/// The headers detections and evidence need, not all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct HeaderSubset {
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// Whether an `Authorization` header was sent (its value is a credential: never kept).
    pub authorization: bool,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HttpRequest {
    pub direction: Direction,
    pub method: String,
    /// The target without its query string, percent-decoded.
    pub path: String,
    /// The raw target as sent (what traversal checks look at before normalisation).
    pub raw_target: String,
    #[serde(serialize_with = "params_as_objects")]
    pub query: Vec<(String, String)>,
    #[serde(serialize_with = "params_as_objects")]
    pub form: Vec<(String, String)>,
    /// Top-level string values of a JSON object body.
    #[serde(serialize_with = "params_as_objects")]
    pub json: Vec<(String, String)>,
    pub headers: HeaderSubset,
    /// The head or the captured body was cut by a bound.
    pub truncated: bool,
}

impl HttpRequest {
    /// Every parameter with where it came from.
    pub fn params(&self) -> impl Iterator<Item = (ParamSource, &str, &str)> {
        let q = self
            .query
            .iter()
            .map(|(k, v)| (ParamSource::Query, k.as_str(), v.as_str()));
        let f = self
            .form
            .iter()
            .map(|(k, v)| (ParamSource::Form, k.as_str(), v.as_str()));
        let j = self
            .json
            .iter()
            .map(|(k, v)| (ParamSource::Json, k.as_str(), v.as_str()));
        q.chain(f).chain(j)
    }
}

/// Parameters serialize as `[{"name": "value"}, …]`: order and repeats are kept, and the
/// masking layer's rule for secret-named keys (`Masker::mask_json`) sees each name, so a
/// `password` form field is masked whatever its value looks like.
fn params_as_objects<S: serde::Serializer>(
    params: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::{SerializeMap, SerializeSeq};
    struct One<'a>(&'a str, &'a str);
    impl serde::Serialize for One<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry(self.0, self.1)?;
            m.end()
        }
    }
    let mut seq = serializer.serialize_seq(Some(params.len()))?;
    for (k, v) in params {
        seq.serialize_element(&One(k, v))?;
    }
    seq.end()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamSource {
    Query,
    Form,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HttpResponse {
    pub direction: Direction,
    pub status: u16,
    pub truncated: bool,
}

// Requests dominate and move once into the detectors: boxing them would add an allocation
// per request to save stack bytes nobody is short of.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "message", rename_all = "snake_case")]
pub enum HttpMessage {
    Request(HttpRequest),
    Response(HttpResponse),
    /// Once per direction, when its first bytes say what it carries.
    Protocol {
        direction: Direction,
        protocol: Protocol,
    },
}

/// Counts of where bounds bit or the stream could not be followed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamStats {
    pub heads_truncated: u64,
    pub bodies_truncated: u64,
    /// Bytes the caller said were not captured (kernel capture bounds).
    pub gap_bytes: u64,
    /// Times the stream lost message boundaries (bad head, gap inside a head).
    pub desyncs: u64,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
}

#[derive(Debug)]
enum State {
    Detect,
    Head,
    Body {
        framing: Framing,
        /// A request waiting for its body's parameters.
        pending: Option<Box<HttpRequest>>,
    },
    /// HTTP/2 or a tunnel: nothing more to parse.
    Done,
    /// Boundaries lost; waits for a chunk that starts like a head.
    Lost,
}

#[derive(Debug)]
struct HalfStream {
    state: State,
    /// Unparsed head bytes, a chunk-size line, or a captured body.
    buf: Vec<u8>,
    /// A chunk-size or trailer line split across chunks (bounded at 256 bytes).
    line: Vec<u8>,
    body_truncated: bool,
}

impl HalfStream {
    fn new() -> Self {
        HalfStream {
            state: State::Detect,
            buf: Vec::new(),
            line: Vec::new(),
            body_truncated: false,
        }
    }
}

/// One connection's parser: both directions and the requests awaiting responses.
#[derive(Debug)]
pub struct HttpStream {
    limits: HttpLimits,
    halves: [HalfStream; 2],
    /// Per direction, whether each request not yet answered was a HEAD.
    pending_head: [VecDeque<bool>; 2],
    stats: StreamStats,
}

impl Default for HttpStream {
    fn default() -> Self {
        Self::new(HttpLimits::default())
    }
}

impl HttpStream {
    pub fn new(limits: HttpLimits) -> Self {
        HttpStream {
            limits,
            halves: [HalfStream::new(), HalfStream::new()],
            pending_head: [VecDeque::new(), VecDeque::new()],
            stats: StreamStats::default(),
        }
    }

    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Feeds one captured chunk; complete messages are appended to `out`.
    pub fn feed(&mut self, dir: Direction, mut data: &[u8], out: &mut Vec<HttpMessage>) {
        while !data.is_empty() {
            let used = self.step(dir, data, out);
            // Every step consumes at least one byte or ends the chunk, so this terminates.
            if used == 0 {
                break;
            }
            data = &data[used.min(data.len())..];
        }
    }

    /// Tells the parser that `missing` bytes of this direction were not captured (`None`:
    /// an unknown number). Skipped bodies absorb a known gap; a gap inside a head, or an
    /// unknown one in a framed body, loses the boundaries until a new head shows. A request
    /// waiting for its body is emitted, flagged truncated.
    pub fn gap(&mut self, dir: Direction, missing: Option<usize>, out: &mut Vec<HttpMessage>) {
        if let Some(missing) = missing {
            self.stats.gap_bytes += missing as u64;
        }
        let half = &mut self.halves[index(dir)];
        let missing = missing.map_or(u64::MAX, |m| m as u64);
        let lost = match &mut half.state {
            State::Done | State::Lost => false,
            State::Body { framing, pending } => {
                if pending.is_some() {
                    half.body_truncated = true;
                }
                match framing {
                    Framing::UntilClose => false,
                    Framing::Length(rem) | Framing::Chunked(ChunkState::Data(rem)) => {
                        if missing < *rem {
                            *rem -= missing;
                            false
                        } else {
                            true
                        }
                    }
                    Framing::Chunked(_) => true,
                }
            }
            State::Detect | State::Head => true,
        };
        if lost {
            self.emit_pending(dir, out);
            self.desync(dir);
        }
    }

    /// Processes a prefix of `data`; returns how many bytes it consumed.
    fn step(&mut self, dir: Direction, data: &[u8], out: &mut Vec<HttpMessage>) -> usize {
        let limits = self.limits;
        let half = &mut self.halves[index(dir)];
        match &mut half.state {
            State::Done => data.len(),
            State::Lost => {
                if looks_like_head_start(data) {
                    half.state = State::Head;
                    self.step_head(dir, data, out)
                } else {
                    data.len()
                }
            }
            State::Detect => {
                // Decide on the first bytes, then replay them through the head parser.
                let take = data
                    .len()
                    .min(H2_PREFACE.len().saturating_sub(half.buf.len()));
                half.buf.extend_from_slice(&data[..take]);
                let Some(protocol) = detect_protocol(&half.buf) else {
                    return take;
                };
                out.push(HttpMessage::Protocol {
                    direction: dir,
                    protocol,
                });
                let probe = std::mem::take(&mut half.buf);
                if protocol == Protocol::Http1 {
                    half.state = State::Head;
                    self.feed(dir, &probe, out);
                    take
                } else {
                    half.state = State::Done;
                    data.len()
                }
            }
            State::Head => self.step_head(dir, data, out),
            State::Body { .. } => self.step_body(dir, data, out, limits),
        }
    }

    fn step_head(&mut self, dir: Direction, data: &[u8], out: &mut Vec<HttpMessage>) -> usize {
        let limits = self.limits;
        let half = &mut self.halves[index(dir)];
        // Blank lines between pipelined messages are allowed (RFC 9112 §2.2).
        if half.buf.is_empty() {
            let blank = data
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                return blank;
            }
        }
        let old = half.buf.len();
        let room = limits.head_cap.saturating_sub(old);
        let take = data.len().min(room);
        half.buf.extend_from_slice(&data[..take]);
        let search_from = old.saturating_sub(3);
        let end = find(&half.buf[search_from..], b"\r\n\r\n")
            .map(|p| search_from + p + 4)
            .or_else(|| find(&half.buf[search_from..], b"\n\n").map(|p| search_from + p + 2));
        let (head_len, truncated) = match end {
            Some(e) => (e, false),
            None if half.buf.len() >= limits.head_cap => (half.buf.len(), true),
            None => return take.max(1).min(data.len()),
        };
        let consumed = head_len - old;
        let head = std::mem::take(&mut half.buf);
        let head = &head[..head_len];
        if truncated {
            self.stats.heads_truncated += 1;
        }
        self.on_head(dir, head, truncated, out);
        if truncated {
            // The rest of this head and its body cannot be framed.
            let half = &mut self.halves[index(dir)];
            half.state = State::Lost;
            self.stats.desyncs += 1;
            return data.len();
        }
        consumed.max(1)
    }

    fn on_head(
        &mut self,
        dir: Direction,
        head: &[u8],
        truncated: bool,
        out: &mut Vec<HttpMessage>,
    ) {
        let limits = self.limits;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        if head.starts_with(b"HTTP/") {
            let mut resp = httparse::Response::new(&mut headers);
            let parsed = resp.parse(head);
            let complete = matches!(parsed, Ok(httparse::Status::Complete(_)));
            let Some(status) = resp.code.filter(|_| parsed.is_ok()) else {
                self.desync(dir);
                return;
            };
            out.push(HttpMessage::Response(HttpResponse {
                direction: dir,
                status,
                truncated: truncated || !complete,
            }));
            // This direction's responses answer the other direction's requests.
            let was_head = if (100..200).contains(&status) {
                false
            } else {
                self.pending_head[index(other(dir))]
                    .pop_front()
                    .unwrap_or(false)
            };
            let framing = if status == 101 {
                self.halves[index(dir)].state = State::Done;
                return;
            } else if (100..200).contains(&status) || status == 204 || status == 304 || was_head {
                None
            } else {
                Some(body_framing(resp.headers).unwrap_or(Framing::UntilClose))
            };
            self.enter_body(dir, framing, None);
            return;
        }
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(head);
        let (Some(method), Some(target)) = (req.method, req.path) else {
            self.desync(dir);
            return;
        };
        if parsed.is_err() && !truncated {
            self.desync(dir);
            return;
        }
        let complete = matches!(parsed, Ok(httparse::Status::Complete(_)));
        let mut subset = HeaderSubset::default();
        for h in req.headers.iter().take_while(|h| !h.name.is_empty()) {
            let value = || Some(bounded_lossy(h.value, 512));
            if h.name.eq_ignore_ascii_case("host") {
                subset.host = value();
            } else if h.name.eq_ignore_ascii_case("user-agent") {
                subset.user_agent = value();
            } else if h.name.eq_ignore_ascii_case("authorization") {
                subset.authorization = true;
            } else if h.name.eq_ignore_ascii_case("content-type") {
                subset.content_type = value();
            }
        }
        let (raw_path, raw_query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let mut query = Vec::new();
        if let Some(q) = raw_query {
            parse_urlencoded(q.as_bytes(), &limits, &mut query);
        }
        let request = HttpRequest {
            direction: dir,
            method: method.to_owned(),
            path: truncate_string(
                decode_component(raw_path.as_bytes(), false),
                limits.max_value_len,
            ),
            raw_target: truncate_string(target.to_owned(), limits.max_value_len),
            query,
            form: Vec::new(),
            json: Vec::new(),
            headers: subset,
            truncated: truncated || !complete,
        };
        let pending = &mut self.pending_head[index(dir)];
        if pending.len() >= limits.max_pending {
            pending.pop_front();
        }
        pending.push_back(method == "HEAD");
        if method == "CONNECT" {
            // A tunnel follows: its bytes are not HTTP.
            out.push(HttpMessage::Request(request));
            self.halves[index(dir)].state = State::Done;
            return;
        }
        if !complete {
            out.push(HttpMessage::Request(request));
            return;
        }
        let framing = body_framing(req.headers);
        let wants_body = framing.is_some_and(|f| f != Framing::Length(0))
            && request
                .headers
                .content_type
                .as_deref()
                .is_some_and(|ct| is_form(ct) || is_json(ct));
        if wants_body {
            self.enter_body(dir, framing, Some(Box::new(request)));
        } else {
            out.push(HttpMessage::Request(request));
            self.enter_body(dir, framing, None);
        }
    }

    fn enter_body(
        &mut self,
        dir: Direction,
        framing: Option<Framing>,
        pending: Option<Box<HttpRequest>>,
    ) {
        let half = &mut self.halves[index(dir)];
        half.buf.clear();
        half.line.clear();
        half.body_truncated = false;
        half.state = match framing {
            None | Some(Framing::Length(0)) => State::Head,
            Some(framing) => State::Body { framing, pending },
        };
    }

    fn desync(&mut self, dir: Direction) {
        let half = &mut self.halves[index(dir)];
        half.buf.clear();
        half.line.clear();
        half.state = State::Lost;
        self.stats.desyncs += 1;
    }

    fn step_body(
        &mut self,
        dir: Direction,
        data: &[u8],
        out: &mut Vec<HttpMessage>,
        limits: HttpLimits,
    ) -> usize {
        let half = &mut self.halves[index(dir)];
        let State::Body { framing, pending } = &mut half.state else {
            return 0;
        };
        let capturing = pending.is_some();
        let capture = |half_buf: &mut Vec<u8>, truncated: &mut bool, bytes: &[u8]| {
            if capturing {
                let room = limits.body_capture.saturating_sub(half_buf.len());
                if bytes.len() > room {
                    *truncated = true;
                }
                half_buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        };
        let (used, finished) = match framing {
            Framing::UntilClose => {
                capture(&mut half.buf, &mut half.body_truncated, data);
                (data.len(), false)
            }
            Framing::Length(rem) => {
                let n = (data.len() as u64).min(*rem) as usize;
                capture(&mut half.buf, &mut half.body_truncated, &data[..n]);
                *rem -= n as u64;
                (n, *rem == 0)
            }
            Framing::Chunked(cs) => match *cs {
                ChunkState::Data(rem) => {
                    let n = (data.len() as u64).min(rem) as usize;
                    capture(&mut half.buf, &mut half.body_truncated, &data[..n]);
                    *cs = if rem == n as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(rem - n as u64)
                    };
                    (n, false)
                }
                ChunkState::DataEnd => {
                    // The CRLF after a chunk's data.
                    let n = data
                        .iter()
                        .take(2)
                        .take_while(|&&b| b == b'\r' || b == b'\n')
                        .count();
                    if n == 0 {
                        // Not a CRLF: framing is wrong.
                        (0, false)
                    } else {
                        if data[..n].contains(&b'\n') {
                            *cs = ChunkState::Size;
                        }
                        (n, false)
                    }
                }
                ChunkState::Size | ChunkState::Trailer => {
                    let size_line = *cs == ChunkState::Size;
                    let nl = data.iter().position(|&b| b == b'\n');
                    let part = &data[..nl.unwrap_or(data.len())];
                    if half.line.len() + part.len() > 256 {
                        self.desync(dir);
                        return data.len();
                    }
                    half.line.extend_from_slice(part);
                    let Some(nl) = nl else {
                        return data.len();
                    };
                    let line = std::mem::take(&mut half.line);
                    if size_line {
                        match parse_chunk_size(&line) {
                            Some(0) => *cs = ChunkState::Trailer,
                            Some(n) => *cs = ChunkState::Data(n),
                            None => self.desync(dir),
                        }
                    } else if line.iter().all(|&b| b == b'\r') {
                        self.finish_body(dir, out);
                    }
                    return nl + 1;
                }
            },
        };
        if used == 0 {
            self.desync(dir);
            return data.len();
        }
        let half = &mut self.halves[index(dir)];
        let capture_full = half.body_truncated || half.buf.len() >= limits.body_capture;
        if finished {
            self.finish_body(dir, out);
        } else if capture_full {
            // Report now with what is kept; keep skipping the rest of the body.
            self.emit_pending(dir, out);
        }
        used
    }

    /// The body ended: the pending request (if any) is emitted, the next head awaited.
    fn finish_body(&mut self, dir: Direction, out: &mut Vec<HttpMessage>) {
        self.emit_pending(dir, out);
        let half = &mut self.halves[index(dir)];
        half.buf.clear();
        half.line.clear();
        half.body_truncated = false;
        half.state = State::Head;
    }

    fn emit_pending(&mut self, dir: Direction, out: &mut Vec<HttpMessage>) {
        let limits = self.limits;
        let half = &mut self.halves[index(dir)];
        let State::Body { pending, .. } = &mut half.state else {
            return;
        };
        let Some(mut req) = pending.take() else {
            return;
        };
        let body = std::mem::take(&mut half.buf);
        if half.body_truncated {
            req.truncated = true;
            self.stats.bodies_truncated += 1;
        }
        let ct = req.headers.content_type.as_deref().unwrap_or("");
        if is_form(ct) {
            parse_urlencoded(&body, &limits, &mut req.form);
        } else if is_json(ct) && !half.body_truncated {
            json_top_level_strings(&body, &limits, &mut req.json);
        }
        out.push(HttpMessage::Request(*req));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What the first bytes of a direction carry; `None` while more bytes could change the answer
/// (always decided by the preface's length, 24 bytes).
fn detect_protocol(buf: &[u8]) -> Option<Protocol> {
    let decided = buf.len() >= H2_PREFACE.len();
    if buf.starts_with(H2_PREFACE) {
        return Some(Protocol::Http2);
    }
    if H2_PREFACE.starts_with(buf) && !decided {
        return None;
    }
    // A server's first HTTP/2 bytes: a SETTINGS frame on stream 0 (RFC 9113 §3.4).
    if buf.len() >= 9 {
        let len = u32::from(buf[0]) << 16 | u32::from(buf[1]) << 8 | u32::from(buf[2]);
        if buf[3] == 0x04 && buf[4] & !1 == 0 && buf[5..9] == [0, 0, 0, 0] && len % 6 == 0 {
            return Some(Protocol::Http2);
        }
    } else if buf.first() == Some(&0) {
        return None;
    }
    if buf.starts_with(b"HTTP/") {
        return Some(Protocol::Http1);
    }
    if b"HTTP/".starts_with(buf) {
        return None;
    }
    let token = buf
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_')
        .count();
    match buf.get(token) {
        Some(b' ') if (3..=20).contains(&token) => Some(Protocol::Http1),
        None if token < 20 && !decided => None,
        _ => Some(Protocol::Other),
    }
}

/// Whether a chunk starts a request or response head (used to regain boundaries).
fn looks_like_head_start(data: &[u8]) -> bool {
    if data.starts_with(b"HTTP/1.") {
        return true;
    }
    let token = data
        .iter()
        .take(12)
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    (3..=10).contains(&token)
        && data.get(token) == Some(&b' ')
        && data
            .get(token + 1)
            .is_some_and(|&b| b == b'/' || b == b'*' || b == b'h')
}

fn body_framing(headers: &[httparse::Header<'_>]) -> Option<Framing> {
    let mut length = None;
    for h in headers.iter().take_while(|h| !h.name.is_empty()) {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked as the final coding frames the body, whatever Content-Length says.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Some(Framing::Chunked(ChunkState::Size));
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
    }
    length.map(Framing::Length)
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits: Vec<u8> = line
        .iter()
        .copied()
        .take_while(|b| b.is_ascii_hexdigit())
        .collect();
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    let rest = &line[digits.len()..];
    if !rest.iter().all(|&b| b == b'\r') && !matches!(rest.first(), Some(b';' | b' ' | b'\t')) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&digits).ok()?, 16).ok()
}

fn is_form(content_type: &str) -> bool {
    content_type
        .get(..33)
        .is_some_and(|p| p.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        // Bytes, not a str slice: the header is lossy UTF-8 and may end in multi-byte
        // characters, where `len() - 5` is no char boundary (found by fuzz target `http`).
        || essence.len() > 5
            && essence.as_bytes()[essence.len() - 5..].eq_ignore_ascii_case(b"+json")
}

fn bounded_lossy(bytes: &[u8], max: usize) -> String {
    truncate_string(
        String::from_utf8_lossy(&bytes[..bytes.len().min(max + 4)]).into_owned(),
        max,
    )
}

fn truncate_string(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Percent-decoding; `plus_is_space` for form and query encoding. Malformed escapes stay as
/// they are (servers differ; keeping them shows what was sent).
pub fn percent_decode(input: &[u8], plus_is_space: bool) -> Vec<u8> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => match (
                input.get(i + 1).and_then(|&b| hex(b)),
                input.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A decoded URL component as text: one allocation when there is nothing to decode.
fn decode_component(raw: &[u8], plus_is_space: bool) -> String {
    if raw.contains(&b'%') || plus_is_space && raw.contains(&b'+') {
        String::from_utf8_lossy(&percent_decode(raw, plus_is_space)).into_owned()
    } else {
        String::from_utf8_lossy(raw).into_owned()
    }
}

fn parse_urlencoded(input: &[u8], limits: &HttpLimits, out: &mut Vec<(String, String)>) {
    for pair in input.split(|&b| b == b'&') {
        if out.len() >= limits.max_params {
            break;
        }
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(p) => (&pair[..p], &pair[p + 1..]),
            None => (pair, &b""[..]),
        };
        let decode = |b: &[u8]| {
            let raw = &b[..b.len().min(limits.max_value_len * 3)];
            truncate_string(decode_component(raw, true), limits.max_value_len)
        };
        out.push((decode(k), decode(v)));
    }
}

fn json_top_level_strings(body: &[u8], limits: &HttpLimits, out: &mut Vec<(String, String)>) {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return;
    };
    for (k, v) in map {
        if out.len() >= limits.max_params {
            break;
        }
        if let serde_json::Value::String(s) = v {
            out.push((
                truncate_string(k, limits.max_value_len),
                truncate_string(s, limits.max_value_len),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_ending_in_multibyte_characters_are_not_json() {
        // `len() - 5` falls inside the first '€' (bytes 2..5): this used to panic.
        assert!(!is_json("ab€€"));
        assert!(!is_json(
            "application/x-www-form-urlencoded\u{fffd}\u{fffd}"
        ));
        assert!(is_json("application/vnd.api+JSON; charset=utf-8"));
        assert!(!is_form("€€€€€€€€€€€€"));
    }

    fn feed_all(
        stream: &mut HttpStream,
        dir: Direction,
        data: &[u8],
        chunk: usize,
    ) -> Vec<HttpMessage> {
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            stream.feed(dir, c, &mut out);
        }
        out
    }

    fn requests(msgs: &[HttpMessage]) -> Vec<&HttpRequest> {
        msgs.iter()
            .filter_map(|m| match m {
                HttpMessage::Request(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn statuses(msgs: &[HttpMessage]) -> Vec<u16> {
        msgs.iter()
            .filter_map(|m| match m {
                HttpMessage::Response(r) => Some(r.status),
                _ => None,
            })
            .collect()
    }

    const FORM_POST: &[u8] = b"POST /login?next=%2Fhome&q=a+b HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: curl/8.5\r\nAuthorization: Bearer abc\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 32\r\n\r\nuser=bob&pass=it%27s+me&remember\
GET /admin HTTP/1.1\r\nHost: shop.example\r\n\r\n";

    #[test]
    fn request_line_headers_query_and_form_in_any_chunking() {
        for chunk in [1, 2, 7, 64, 4096] {
            let mut s = HttpStream::default();
            let msgs = feed_all(&mut s, Direction::Inbound, FORM_POST, chunk);
            assert_eq!(
                msgs.first(),
                Some(&HttpMessage::Protocol {
                    direction: Direction::Inbound,
                    protocol: Protocol::Http1
                }),
                "chunk {chunk}"
            );
            let reqs = requests(&msgs);
            assert_eq!(reqs.len(), 2, "chunk {chunk}: {msgs:?}");
            let r = reqs[0];
            assert_eq!(r.method, "POST");
            assert_eq!(r.path, "/login");
            assert_eq!(
                r.query,
                [("next".into(), "/home".into()), ("q".into(), "a b".into())]
            );
            assert_eq!(
                r.form,
                [
                    ("user".into(), "bob".into()),
                    ("pass".into(), "it's me".into()),
                    ("remember".into(), String::new())
                ]
            );
            assert_eq!(r.headers.host.as_deref(), Some("shop.example"));
            assert_eq!(r.headers.user_agent.as_deref(), Some("curl/8.5"));
            assert!(r.headers.authorization);
            assert!(!r.truncated);
            assert_eq!(reqs[1].path, "/admin");
            assert!(!reqs[1].headers.authorization);
        }
    }

    #[test]
    fn responses_framed_by_length_and_chunked_and_head() {
        let mut s = HttpStream::default();
        // A client: it writes requests and reads responses.
        let mut out = Vec::new();
        s.feed(Direction::Outbound, b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n", &mut out);
        let resp: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n\
HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n11\r\nHTTP/1.1 999 no\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n\
HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nabc";
        for chunk in [1, 3, 1000] {
            let mut s2 = HttpStream::default();
            let mut o = Vec::new();
            s2.feed(
                Direction::Outbound,
                b"HEAD /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
                &mut o,
            );
            let msgs = feed_all(&mut s2, Direction::Inbound, resp, chunk);
            // The HEAD's response has a Content-Length but no body: 5000 bytes are not skipped.
            assert_eq!(statuses(&msgs), [200, 401, 403], "chunk {chunk}");
        }
        assert_eq!(requests(&out).len(), 3);
    }

    #[test]
    fn json_body_top_level_strings() {
        let body = br#"{"q":"1' OR '1'='1","n":3,"nested":{"x":"y"}}"#;
        let mut req = format!(
            "PUT /api/items HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let mut s = HttpStream::default();
        let msgs = feed_all(&mut s, Direction::Inbound, &req, 5);
        let r = requests(&msgs);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].json, [("q".to_string(), "1' OR '1'='1".to_string())]);
    }

    #[test]
    fn chunked_form_body() {
        let req = b"POST /f HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n4\r\na=1&\r\n3\r\nb=2\r\n0\r\n\r\n";
        let mut s = HttpStream::default();
        let msgs = feed_all(&mut s, Direction::Inbound, req, 2);
        let r = requests(&msgs);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].form,
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn bounded_body_capture_and_head_cap() {
        let limits = HttpLimits {
            head_cap: 256,
            body_capture: 16,
            ..HttpLimits::default()
        };
        let mut s = HttpStream::new(limits);
        let mut req = b"POST /f HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n".to_vec();
        req.extend(std::iter::repeat_n(b'a', 100_000));
        req.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        let msgs = feed_all(&mut s, Direction::Inbound, &req, 4096);
        let r = requests(&msgs);
        assert_eq!(r.len(), 2);
        assert!(r[0].truncated);
        assert_eq!(r[0].form[0].0.len(), 16);
        assert_eq!(r[1].path, "/next");
        assert_eq!(s.stats().bodies_truncated, 1);

        let mut big = b"GET /x HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'h', 1000));
        let mut s = HttpStream::new(limits);
        let msgs = feed_all(&mut s, Direction::Inbound, &big, 100);
        let r = requests(&msgs);
        assert_eq!(r.len(), 1);
        assert!(r[0].truncated);
        assert_eq!(s.stats().heads_truncated, 1);
        assert!(s.halves[0].buf.capacity() <= 4 * 256);
        // A later chunk that starts a head resynchronises the stream.
        let mut out = Vec::new();
        s.feed(Direction::Inbound, b"GET /again HTTP/1.1\r\n\r\n", &mut out);
        assert_eq!(requests(&out)[0].path, "/again");
    }

    #[test]
    fn gaps_inside_bodies_are_absorbed() {
        let mut s = HttpStream::default();
        let mut out = Vec::new();
        s.feed(
            Direction::Inbound,
            b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n0123",
            &mut out,
        );
        s.gap(Direction::Inbound, Some(9000), &mut out);
        s.feed(Direction::Inbound, &[b'x'; 996], &mut out);
        s.feed(
            Direction::Inbound,
            b"HTTP/1.1 403 Forbidden\r\n\r\n",
            &mut out,
        );
        assert_eq!(statuses(&out), [200, 403]);
        assert_eq!(s.stats().desyncs, 0);
        assert_eq!(s.stats().gap_bytes, 9000);
    }

    #[test]
    fn http2_preface_and_settings_frames() {
        let mut s = HttpStream::default();
        let mut out = Vec::new();
        let mut client = H2_PREFACE.to_vec();
        client.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        for c in client.chunks(5) {
            s.feed(Direction::Outbound, c, &mut out);
        }
        s.feed(Direction::Inbound, &[0, 0, 0, 4, 0, 0, 0, 0, 0], &mut out);
        assert_eq!(
            out,
            [
                HttpMessage::Protocol {
                    direction: Direction::Outbound,
                    protocol: Protocol::Http2
                },
                HttpMessage::Protocol {
                    direction: Direction::Inbound,
                    protocol: Protocol::Http2
                }
            ]
        );
        let mut s = HttpStream::default();
        let mut out = Vec::new();
        s.feed(
            Direction::Inbound,
            b"\x16\x03\x01 not http at all, some binary protocol",
            &mut out,
        );
        assert_eq!(
            out,
            [HttpMessage::Protocol {
                direction: Direction::Inbound,
                protocol: Protocol::Other
            }]
        );
    }

    #[test]
    fn arbitrary_chunks_never_panic_and_stay_bounded() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let pieces: [&[u8]; 12] = [
            b"GET / HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"Content-Length: 5\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"\r\n",
            b"Content-Type: application/json\r\n",
            b"{\"a\":\"b\"}",
            b"ff\r\n",
            b"0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"Content-Type: application/x-www-form-urlencoded\r\n",
            b"a=%zz&b=%41+",
        ];
        let limits = HttpLimits {
            head_cap: 512,
            body_capture: 64,
            ..HttpLimits::default()
        };
        for _ in 0..300 {
            let mut s = HttpStream::new(limits);
            let mut out = Vec::new();
            for _ in 0..60 {
                let dir = if next() % 2 == 0 {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                };
                let r = next();
                let mut chunk = Vec::new();
                if r % 3 == 0 {
                    let n = (next() % 300) as usize;
                    chunk.extend((0..n).map(|_| next() as u8));
                } else {
                    chunk.extend_from_slice(pieces[(r >> 8) as usize % pieces.len()]);
                }
                if r % 17 == 0 {
                    s.gap(dir, Some((next() % 5000) as usize), &mut out);
                }
                s.feed(dir, &chunk, &mut out);
                for h in &s.halves {
                    assert!(h.buf.len() <= limits.head_cap.max(limits.body_capture));
                    assert!(h.line.len() <= 256);
                }
                out.clear();
            }
        }
    }
}
