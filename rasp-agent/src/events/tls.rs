//! What the OpenSSL probes report (`TlsDetail`, one captured chunk of plaintext) and what
//! the HTTP stage makes of a connection's chunks (`HttpDetail`: a request, a response, a
//! request's value found in a SQL query). The stage fills the fields marked as its own
//! (peer, findings) before rules see the event.

use std::{net::SocketAddr, sync::Arc};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::SqlFunction;

/// Which way plaintext went, seen from the hooked process: `Inbound` was read
/// (`SSL_read`), `Outbound` written (`SSL_write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Inbound, Direction::Outbound];

    pub fn name(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    pub fn from_name(name: &str) -> Option<Direction> {
        Direction::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// Captured plaintext, shared (the stage and the published event hold the same bytes).
/// JSON: the bytes as text (invalid UTF-8 replaced), at most `SHOWN` bytes of them; the
/// masking layer then masks what it finds in that text like in any other string.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Plaintext(pub Arc<[u8]>);

impl Plaintext {
    /// Bytes shown in JSON and tables.
    pub const SHOWN: usize = 1024;

    pub fn new(bytes: &[u8]) -> Self {
        Plaintext(Arc::from(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first `SHOWN` bytes, lossily as text.
    pub fn shown(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0[..self.0.len().min(Self::SHOWN)])
    }

    /// A copy keeping only what is shown: what the event buffer holds on to.
    pub fn shortened(&self) -> Plaintext {
        if self.0.len() <= Self::SHOWN {
            self.clone()
        } else {
            Plaintext::new(&self.0[..Self::SHOWN])
        }
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plaintext({} bytes)", self.0.len())
    }
}

impl Serialize for Plaintext {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown())
    }
}

impl<'de> Deserialize<'de> for Plaintext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Plaintext::new(s.as_bytes()))
    }
}

/// A socket address that serializes as its text form (`1.2.3.4:443`, `[::1]:8443`).
pub mod addr_text {
    use super::*;

    pub fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.collect_str(a),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.map(|s| {
            s.parse()
                .map_err(|e| de::Error::custom(format!("address {s:?}: {e}")))
        })
        .transpose()
    }
}

/// Where an `SSL *` is connected: its socket's two ends, once the stage resolved them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoints {
    /// The other end.
    #[serde(default, with = "addr_text", skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketAddr>,
    /// This process's end.
    #[serde(default, with = "addr_text", skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
}

/// A finding in plaintext or in an HTTP message: its kind, where it was, and a masked
/// sample (never the secret itself).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Finding {
    /// A name from `policy::vocab::TLS_FINDINGS` or `HTTP_FINDINGS`.
    pub kind: String,
    /// The parameter (or `path`) it was in, for request findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// `query`, `form` or `json` for parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub sample: String,
}

/// One chunk of plaintext an application read from or wrote to OpenSSL.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TlsDetail {
    pub direction: Direction,
    /// The `SSL *` (as a number).
    pub ssl: u64,
    /// The kernel's identity of this `SSL *`'s connection (a reused address is a new one).
    pub conn: u64,
    /// The socket under it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    #[serde(flatten)]
    pub endpoints: Endpoints,
    /// Offset of the chunk's first byte in its direction of the connection.
    pub offset: u64,
    /// Bytes the call moved; `plaintext` holds the captured part.
    pub call_len: u64,
    /// Bytes captured (the JSON `plaintext` shows at most `Plaintext::SHOWN` of them).
    pub captured: usize,
    pub plaintext: Plaintext,
    /// A capture bound cut the call: its data goes on past this chunk.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The plaintext could not be read from the process.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
    /// `SSL_free`: the connection ended (no plaintext).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
    /// Calls before this chunk moved bytes `offset` does not count (over-budget calls whose
    /// count the kernel did not read): the gap before it has an unknown length.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gap_uncounted: bool,
    /// Set once the HTTP stage has looked at it; then `findings` are its findings.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub analyzed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

/// What an `http` event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpMessageKind {
    Request,
    Response,
    /// A direction's first bytes said what it carries (HTTP/2 is reported, not parsed).
    Protocol,
    /// A value from a request this process read was found in a SQL query it then sent,
    /// changing the query's structure: a confirmed injection.
    Taint,
}

/// An HTTP message on a TLS connection, or a request linked to a SQL query.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HttpDetail {
    pub message: HttpMessageKind,
    pub direction: Direction,
    pub ssl: u64,
    pub conn: u64,
    #[serde(flatten)]
    pub endpoints: Endpoints,
    /// `http/1.1`, `h2` or `other` (protocol messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The request's path, percent-decoded, without its query string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The `Host` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The request's parameter names (values are evidence only where a finding names one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// Taint: the query the request's value reached (as masked evidence), and how it was
    /// sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_function: Option<SqlFunction>,
    /// Taint: milliseconds from the request to the query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<u64>,
    /// A login flood: refusals counted within the window when it fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusals: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
}

impl HttpDetail {
    /// An empty detail of `message` on a connection, to be filled in.
    pub fn new(message: HttpMessageKind, direction: Direction, ssl: u64, conn: u64) -> Self {
        HttpDetail {
            message,
            direction,
            ssl,
            conn,
            endpoints: Endpoints::default(),
            protocol: None,
            method: None,
            path: None,
            host: None,
            status: None,
            params: Vec::new(),
            truncated: false,
            findings: Vec::new(),
            query: None,
            query_function: None,
            after_ms: None,
            refusals: None,
            window_secs: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_shows_its_start_as_text_and_round_trips() {
        let p = Plaintext::new(b"GET / HTTP/1.1\r\n\xff");
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"GET / HTTP/1.1\\r\\n\u{fffd}\"");
        let long = Plaintext::new(&[b'a'; 3000]);
        assert_eq!(long.shown().len(), Plaintext::SHOWN);
        assert_eq!(long.shortened().len(), Plaintext::SHOWN);
        assert_eq!(
            serde_json::from_str::<Plaintext>(r#""abc""#).unwrap(),
            Plaintext::new(b"abc")
        );
    }

    #[test]
    fn endpoints_serialize_as_text() {
        let e = Endpoints {
            peer: Some("10.1.2.3:443".parse().unwrap()),
            local: Some("[::1]:8443".parse().unwrap()),
        };
        let json = serde_json::to_value(e).unwrap();
        assert_eq!(json["peer"], "10.1.2.3:443");
        assert_eq!(json["local"], "[::1]:8443");
        assert_eq!(serde_json::from_value::<Endpoints>(json).unwrap(), e);
        let none = serde_json::to_value(Endpoints::default()).unwrap();
        assert_eq!(none, serde_json::json!({}));
    }
}
