//! The webhook sink: each detection is one HTTP/1.1 `POST` of its export record
//! (`application/json`) with an `Idempotency-Key` header equal to the record's
//! `idempotency_key`, over a kept-alive connection (reopened whenever it breaks). A 2xx
//! answer — or 409, "already have it" — delivers the record. 400, 413, 415 and 422 say the
//! receiver refuses this record for good: counted and logged, and delivery goes on (one
//! record it cannot take must not stop every later one). Everything else — transport errors,
//! timeouts, 5xx, 429, and 401/403/404, which are a configuration to fix rather than a record
//! to throw away — is retried by the exporter with the position held.

use std::{str::FromStr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    client::conn::http1::{self, SendRequest},
    header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT},
    Method, Request, StatusCode, Uri,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{ExportError, Record};

/// The header carrying the record's idempotency key (as the IETF draft names it).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Most of a response body read (and thrown away) before the connection is reused.
const MAX_RESPONSE_BODY: usize = 64 << 10;

/// Where and how to POST.
#[derive(Clone, Debug)]
pub struct WebhookTarget {
    host: String,
    port: u16,
    /// `host[:port]` as the Host header says it.
    authority: HeaderValue,
    path: String,
    /// The URL as given, for logs and status (with any userinfo removed).
    shown: String,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl WebhookTarget {
    /// Parses an `http://host[:port]/path` URL. `https://` is refused with a way out: this
    /// agent carries no TLS client (see the export docs).
    pub fn parse(
        url: &str,
        authorization: Option<String>,
        timeout: Duration,
    ) -> Result<WebhookTarget, ExportError> {
        let bad = |why: String| ExportError::WebhookUrl {
            url: url.to_string(),
            why,
        };
        let uri = Uri::from_str(url).map_err(|e| bad(e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported by the built-in webhook client: send to a local \
                     forwarder over http (Vector, Fluent Bit on the node), or use \
                     --export-file / --export-stdout with your log shipper"
                        .to_string(),
                ))
            }
            Some(other) => return Err(bad(format!("scheme `{other}` is not http"))),
            None => return Err(bad("no scheme: write http://host:port/path".to_string())),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host".to_string()))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "credentials in the URL would show in `ps` and status: put the Authorization \
                 header value in a file and pass --export-webhook-auth-file"
                    .to_string(),
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host".to_string()));
        }
        let authorization = authorization
            .map(|v| {
                HeaderValue::from_str(v.trim()).map_err(|_| {
                    bad(
                        "the Authorization value is not a valid header value (one line of \
                         visible ASCII)"
                            .to_string(),
                    )
                })
            })
            .transpose()?;
        Ok(WebhookTarget {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: HeaderValue::from_str(authority.as_str()).map_err(|e| bad(e.to_string()))?,
            path: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".to_string()),
            shown: url.to_string(),
            authorization,
            timeout: timeout.max(Duration::from_millis(100)),
        })
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// What the receiver said about one record.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// 2xx, or 409 (it has the key already).
    Delivered,
    /// A status that says this record will never be taken (400, 413, 415, 422).
    Refused(StatusCode),
}

pub struct Webhook {
    target: WebhookTarget,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Webhook {
    pub fn new(target: WebhookTarget) -> Self {
        Webhook { target, conn: None }
    }

    /// POST one record. `Err` is worth retrying (transport error, timeout, 408, 429, 5xx).
    pub async fn post(&mut self, record: &Record) -> Result<Answer, ExportError> {
        let timeout = self.target.timeout;
        match tokio::time::timeout(timeout, self.post_inner(record)).await {
            Ok(r) => {
                if r.is_err() {
                    self.conn = None;
                }
                r
            }
            Err(_) => {
                self.conn = None;
                Err(self.err(format!("no answer within {timeout:?}")))
            }
        }
    }

    async fn post_inner(&mut self, record: &Record) -> Result<Answer, ExportError> {
        let mut conn = match self.conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        conn.ready()
            .await
            .map_err(|e| self.err(format!("connection not usable: {e}")))?;
        let key = HeaderValue::from_str(&record.key).map_err(|_| {
            self.err(format!(
                "idempotency key {:?} is not a header value",
                record.key
            ))
        })?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.target.path.as_str())
            .header(HOST, self.target.authority.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("rasp-agent/", env!("CARGO_PKG_VERSION")),
            )
            .header(IDEMPOTENCY_HEADER, key)
            .body(Full::new(Bytes::copy_from_slice(&record.json)))
            .map_err(|e| self.err(format!("building the request: {e}")))?;
        if let Some(auth) = &self.target.authorization {
            req.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        let resp = conn
            .send_request(req)
            .await
            .map_err(|e| self.err(format!("request failed: {e}")))?;
        let status = resp.status();
        // Read the (small) body so the connection can carry the next request; a large one
        // is not worth it: drop the connection instead.
        let mut body = resp.into_body();
        let mut read = 0usize;
        let mut reusable = true;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    read += f.data_ref().map_or(0, |d| d.len());
                    if read > MAX_RESPONSE_BODY {
                        reusable = false;
                        break;
                    }
                }
                Err(_) => {
                    reusable = false;
                    break;
                }
            }
        }
        if reusable {
            self.conn = Some(conn);
        }
        classify(status).map_err(|why| self.err(why))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ExportError> {
        let t = &self.target;
        let stream = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| self.err(format!("cannot connect to {}:{}: {e}", t.host, t.port)))?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.err(format!("HTTP handshake: {e}")))?;
        // The connection task ends when the connection closes or `send` is dropped.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "webhook connection closed");
            }
        });
        Ok(send)
    }

    fn err(&self, why: String) -> ExportError {
        ExportError::Webhook {
            url: self.target.shown.clone(),
            why,
        }
    }
}

/// What a status means for the record: delivered, refused for good, or worth a retry.
fn classify(status: StatusCode) -> Result<Answer, String> {
    if status.is_success() || status == StatusCode::CONFLICT {
        return Ok(Answer::Delivered);
    }
    let refused = [
        StatusCode::BAD_REQUEST,
        StatusCode::PAYLOAD_TOO_LARGE,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        StatusCode::UNPROCESSABLE_ENTITY,
    ];
    if refused.contains(&status) {
        return Ok(Answer::Refused(status));
    }
    Err(format!("receiver answered {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<WebhookTarget, String> {
        WebhookTarget::parse(url, None, Duration::from_secs(5)).map_err(|e| e.to_string())
    }

    #[test]
    fn urls_parse_or_say_what_is_wrong() {
        let t = parse("http://siem.example:8080/in?src=rasp").expect("parses");
        assert_eq!((t.host.as_str(), t.port), ("siem.example", 8080));
        assert_eq!(t.path, "/in?src=rasp");
        assert_eq!(t.authority, "siem.example:8080");
        let t = parse("http://[::1]/").expect("parses");
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("::1", 80, "/"));
        let t = parse("http://10.0.0.1").expect("parses");
        assert_eq!(t.path, "/");

        let e = parse("https://siem.example/in").expect_err("no TLS");
        assert!(
            e.contains("https is not supported") && e.contains("siem.example"),
            "{e}"
        );
        let e = parse("ftp://x/").expect_err("scheme");
        assert!(e.contains("`ftp`"), "{e}");
        let e = parse("siem.example/in").expect_err("no scheme");
        assert!(e.contains("siem.example/in"), "{e}");
        let e = parse("http://user:pw@siem.example/").expect_err("userinfo");
        assert!(e.contains("--export-webhook-auth-file"), "{e}");
        let e = WebhookTarget::parse("http://x/", Some("Bearer a\nb".into()), Duration::ZERO)
            .expect_err("bad header")
            .to_string();
        assert!(e.contains("Authorization"), "{e}");
    }

    #[test]
    fn statuses_deliver_refuse_or_retry() {
        assert_eq!(classify(StatusCode::OK), Ok(Answer::Delivered));
        assert_eq!(classify(StatusCode::ACCEPTED), Ok(Answer::Delivered));
        assert_eq!(classify(StatusCode::CONFLICT), Ok(Answer::Delivered));
        assert_eq!(
            classify(StatusCode::BAD_REQUEST),
            Ok(Answer::Refused(StatusCode::BAD_REQUEST))
        );
        for retry in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::UNAUTHORIZED,
            StatusCode::NOT_FOUND,
        ] {
            assert!(classify(retry).is_err(), "{retry}");
        }
    }
}
