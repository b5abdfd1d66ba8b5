//! The HTTP endpoint (hyper, HTTP/1.1): `/metrics` in OpenMetrics text, `/healthz` (200
//! while the process serves), `/readyz` (200 once programs are attached and policies are
//! loaded, else 503 and why). Bounded so a misbehaving client cannot hurt the agent: a cap
//! on connections, on header size, on the time to send headers and on a connection's life.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
    task::JoinSet,
};

use super::{Metrics, MetricsError, MetricsSource, Readiness};

/// `--metrics` default: loopback only; a DaemonSet that wants Prometheus to scrape from
/// outside the node says `--metrics 0.0.0.0:9464` (or the pod IP) explicitly.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// Connections served at once; more are closed at accept. A scraper and two probes need 3.
pub(super) const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection (keep-alive included) may live.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Read buffer per connection, which bounds the request line plus headers (hyper answers
/// 431 beyond it). Its minimum is 8 KiB.
const MAX_HEADER_BYTES: usize = 16 << 10;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PLAIN: &str = "text/plain; charset=utf-8";

/// A bound listener, so the caller learns the address (port 0 in tests) before serving.
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsServer {
    pub async fn bind(addr: SocketAddr) -> Result<MetricsServer, MetricsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(MetricsServer { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stop` turns true (or its sender is dropped); open connections are then
    /// cut. Accept errors (out of file descriptors, ...) are logged and retried after a
    /// pause: the metrics endpoint never takes the agent down.
    pub async fn run(
        self,
        metrics: Arc<Metrics>,
        source: Arc<dyn MetricsSource>,
        mut stop: watch::Receiver<bool>,
    ) {
        tracing::info!(addr = %self.addr, "metrics endpoint listening");
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            if *stop.borrow() {
                break;
            }
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                changed = stop.changed() => {
                    if changed.is_err() { break; }
                    continue;
                }
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, limit = MAX_CONNECTIONS, "metrics endpoint: connection refused, too many open");
                continue;
            };
            let (metrics, source) = (metrics.clone(), source.clone());
            connections.spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let response = respond(request.method(), request.uri().path(), &metrics, &*source);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEADER_BYTES)
                    .serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics endpoint: connection ended with an error"),
                    Err(_) => tracing::debug!(%peer, "metrics endpoint: connection outlived its limit, closed"),
                }
                drop(slot);
            });
        }
        connections.shutdown().await;
        tracing::info!(addr = %self.addr, "metrics endpoint stopped");
    }
}

/// Binds `addr` and serves until `stop`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    source: Arc<dyn MetricsSource>,
    stop: watch::Receiver<bool>,
) -> Result<(), MetricsError> {
    MetricsServer::bind(addr)
        .await?
        .run(metrics, source, stop)
        .await;
    Ok(())
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn respond(
    method: &Method,
    path: &str,
    metrics: &Metrics,
    source: &dyn MetricsSource,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET and HEAD\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = match path {
        "/metrics" => match metrics.encode(source.snapshot()) {
            Ok(text) => response(StatusCode::OK, OPENMETRICS, text),
            Err(e) => {
                tracing::error!(error = %e, "metrics endpoint: encoding failed");
                response(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("{e}\n"))
            }
        },
        "/healthz" => response(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" => match source.snapshot().readiness() {
            Readiness::Ready => response(StatusCode::OK, PLAIN, "ready\n".into()),
            Readiness::NotReady(why) => response(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("not ready: {why}\n"),
            ),
        },
        _ => response(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    };
    if method == Method::HEAD {
        *r.body_mut() = Full::new(Bytes::new());
    }
    r
}
