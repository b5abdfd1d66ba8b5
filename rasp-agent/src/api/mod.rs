//! The local unix-socket API. One instance per socket (an exclusive lock beside it), mode
//! 0600 (0660 with a configured group), peers checked by SO_PEERCRED. Each connection is its
//! own task: a bad request gets an error reply and the connection stays usable; a follower
//! reads from its own bounded broadcast queue, so a slow client only ever loses its own
//! messages.

pub mod protocol;

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{
        unix::{OwnedReadHalf, OwnedWriteHalf},
        UnixListener, UnixStream,
    },
    sync::{broadcast, watch, Semaphore},
};

use crate::{
    detect::Detection,
    events::{hub::EventFilter, Event},
    policy::{active::PolicySetSummary, vocab::Severity},
    process::Process,
    store::index::DetectionQuery,
};
use protocol::{
    parse_request, PolicyFile, PolicyListing, Reply, Request, Status, StreamItem, MAX_REQUEST_BYTES,
};

/// Connections served at once; more get an error reply and are closed.
const MAX_CLIENTS: usize = 64;

/// What the API serves; implemented by the daemon.
pub trait Backend: Send + Sync + 'static {
    fn status(&self) -> Status;
    fn recent_events(&self, filter: EventFilter, limit: Option<usize>) -> Vec<Arc<Event>>;
    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>>;
    fn processes(&self) -> Vec<Process>;
    /// Recent detections; `since` is RFC 3339 or a duration ago ("10m"). Err: a bad filter.
    fn detections(&self, filter: &DetectionFilter) -> Result<Vec<Arc<Detection>>, String>;
    fn subscribe_detections(&self) -> broadcast::Receiver<Arc<Detection>>;
    fn policy_listing(&self) -> PolicyListing;
    /// Validate the files as one complete set and swap it in; Err lists every problem.
    fn policy_apply(&self, files: Vec<PolicyFile>) -> Result<PolicySetSummary, Vec<String>>;
    fn policy_rollback(&self) -> Result<PolicySetSummary, String>;
    fn quarantine_list(&self) -> Vec<crate::enforce::Quarantined>;
    fn quarantine_release(&self, cgroup: &str) -> Result<crate::enforce::Quarantined, String>;
}

/// The filters of a `detections` request.
#[derive(Clone, Debug, Default)]
pub struct DetectionFilter {
    pub since: Option<String>,
    pub severity: Option<Severity>,
    pub rule: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("another rasp-agent is already running on socket {socket} ({holder}); stop it first or pass a different --socket")]
    AlreadyRunning { socket: PathBuf, holder: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ApiError + 'a {
    move |source| ApiError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Who may talk to the agent.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    /// Members of this group (primary gid of the peer) are allowed besides root.
    pub group: Option<u32>,
}

/// The bound socket plus the lock that makes it ours. Dropping it removes both files.
pub struct Endpoint {
    path: PathBuf,
    lock_path: PathBuf,
    _lock: File,
    listener: Option<std::os::unix::net::UnixListener>,
}

impl Endpoint {
    /// Take the socket: lock `<path>.lock` (fails if another agent holds it), replace a
    /// stale socket file, bind, and restrict the mode.
    pub fn bind(path: &Path, access: Access) -> Result<Endpoint, ApiError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err("creating socket directory", dir))?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("opening lock file", &lock_path))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "pid unknown".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(ApiError::AlreadyRunning {
                socket: path.to_path_buf(),
                holder,
            });
        }
        lock.set_len(0)
            .map_err(io_err("writing lock file", &lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(io_err("writing lock file", &lock_path))?;

        // We hold the lock, so a socket file left here belongs to a dead agent.
        match fs::remove_file(path) {
            Ok(()) => tracing::info!(socket = %path.display(), "removed stale socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing stale socket", path)(e)),
        }
        let listener =
            std::os::unix::net::UnixListener::bind(path).map_err(io_err("binding socket", path))?;
        let mode = if access.group.is_some() { 0o660 } else { 0o600 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io_err("setting socket mode", path))?;
        if let Some(gid) = access.group {
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(io_err("setting socket group", path))?;
        }
        listener
            .set_nonblocking(true)
            .map_err(io_err("configuring socket", path))?;
        Ok(Endpoint {
            path: path.to_path_buf(),
            lock_path,
            _lock: lock,
            listener: Some(listener),
        })
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.listener.take();
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Accept and serve connections until `shutdown` flips.
pub async fn serve(
    endpoint: &mut Endpoint,
    access: Access,
    backend: Arc<dyn Backend>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ApiError> {
    let std_listener = endpoint
        .listener
        .take()
        .expect("serve is called once per endpoint");
    let listener =
        UnixListener::from_std(std_listener).map_err(io_err("listening on", &endpoint.path))?;
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut stop = shutdown.clone();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(reject(
                stream,
                format!("too many clients (limit {MAX_CLIENTS}); try again later"),
            ));
            continue;
        };
        let backend = backend.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_client(stream, access, backend, shutdown).await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            drop(permit);
        });
    }
    Ok(())
}

async fn reject(mut stream: UnixStream, why: String) {
    let _ = stream.write_all(&line(&Reply::error(why))).await;
}

/// Every reply, event and detection leaves through here, masked (`crate::mask`).
fn line<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let masked = crate::mask::shared().to_masked_json(value);
    let mut out = masked
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_else(|e| {
            format!(r#"{{"ok":false,"error":"reply could not be encoded: {e}"}}"#).into_bytes()
        });
    out.push(b'\n');
    out
}

fn peer_allowed(stream: &UnixStream, access: Access) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("cannot read peer credentials: {e}"))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if cred.uid() == 0 || cred.uid() == me || access.group == Some(cred.gid()) {
        return Ok(());
    }
    Err(match access.group {
        Some(g) => format!(
            "permission denied: uid {} is neither root nor in group {g}",
            cred.uid()
        ),
        None => format!("permission denied: uid {} is not root", cred.uid()),
    })
}

async fn serve_client(
    stream: UnixStream,
    access: Access,
    backend: Arc<dyn Backend>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    if let Err(why) = peer_allowed(&stream, access) {
        tracing::warn!(reason = %why, "refused client");
        reject(stream, why).await;
        return Ok(());
    }
    // Requests that change what the agent does to workloads are root's alone.
    let peer_uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    loop {
        let request = match read_request_line(&mut rd, &mut buf).await? {
            RequestLine::Eof => return Ok(()),
            RequestLine::TooLong => {
                let msg = format!("request longer than {MAX_REQUEST_BYTES} bytes");
                wr.write_all(&line(&Reply::error(msg))).await?;
                continue;
            }
            RequestLine::Line if buf.iter().all(u8::is_ascii_whitespace) => continue,
            RequestLine::Line => parse_request(&buf),
        };
        let request = match request {
            Ok(r) => r,
            Err(msg) => {
                wr.write_all(&line(&Reply::error(msg))).await?;
                continue;
            }
        };
        match request {
            Request::Status {} => {
                let reply = Reply {
                    ok: true,
                    status: Some(backend.status()),
                    ..Default::default()
                };
                wr.write_all(&line(&reply)).await?;
            }
            Request::Processes {} => {
                let reply = Reply {
                    ok: true,
                    processes: Some(backend.processes()),
                    ..Default::default()
                };
                wr.write_all(&line(&reply)).await?;
            }
            Request::Events {
                follow: false,
                kind,
                pid,
                limit,
            } => {
                let events = backend.recent_events(EventFilter { kind, pid }, limit);
                let reply = Reply {
                    ok: true,
                    events: Some(events),
                    ..Default::default()
                };
                wr.write_all(&line(&reply)).await?;
            }
            Request::Events {
                follow: true,
                kind,
                pid,
                ..
            } => {
                // A follower streams until it hangs up; the connection is then done.
                let rx = backend.subscribe();
                let start = Reply {
                    ok: true,
                    follow: Some(true),
                    ..Default::default()
                };
                wr.write_all(&line(&start)).await?;
                let filter = EventFilter { kind, pid };
                let select =
                    move |e: Arc<Event>| filter.matches(&e).then_some(StreamItem::Event(e));
                return follow(rx, select, rd, wr, shutdown).await;
            }
            Request::Detections {
                follow: streaming,
                since,
                severity,
                rule,
                limit,
            } => {
                let filter = DetectionFilter {
                    since,
                    severity,
                    rule,
                    limit,
                };
                // Subscribe before reading the backlog so nothing falls in between.
                let rx = streaming.then(|| backend.subscribe_detections());
                let reply = match backend.detections(&filter) {
                    Ok(d) => Reply {
                        ok: true,
                        detections: Some(d),
                        follow: rx.as_ref().map(|_| true),
                        ..Default::default()
                    },
                    Err(e) => Reply::error(e),
                };
                wr.write_all(&line(&reply)).await?;
                if let (true, Some(rx)) = (reply.ok, rx) {
                    // Live: `since` and `limit` only apply to the backlog above.
                    let live = DetectionQuery {
                        min_severity: filter.severity,
                        rule: filter.rule,
                        ..Default::default()
                    };
                    let select = move |d: Arc<Detection>| {
                        live.admits(&d).then_some(StreamItem::Detection(d))
                    };
                    return follow(rx, select, rd, wr, shutdown).await;
                }
            }
            Request::PolicyList {} => {
                let listing = backend.policy_listing();
                let reply = Reply {
                    ok: true,
                    policies: Some(listing),
                    ..Default::default()
                };
                wr.write_all(&line(&reply)).await?;
            }
            Request::PolicyApply { files } => {
                let reply = match backend.policy_apply(files) {
                    Ok(set) => active_set_reply(set),
                    Err(errors) => Reply {
                        error: Some(format!(
                            "policy set rejected ({} problem{}); the active set is unchanged",
                            errors.len(),
                            if errors.len() == 1 { "" } else { "s" }
                        )),
                        policy_errors: Some(errors),
                        ..Default::default()
                    },
                };
                wr.write_all(&line(&reply)).await?;
            }
            Request::PolicyRollback {} => {
                let reply = match backend.policy_rollback() {
                    Ok(set) => active_set_reply(set),
                    Err(e) => Reply::error(e),
                };
                wr.write_all(&line(&reply)).await?;
            }
            Request::QuarantineList {} => {
                let reply = Reply {
                    ok: true,
                    quarantines: Some(backend.quarantine_list()),
                    ..Default::default()
                };
                wr.write_all(&line(&reply)).await?;
            }
            Request::QuarantineRelease { cgroup } => {
                let reply = if peer_uid != 0 {
                    Reply::error(format!(
                        "permission denied: releasing a quarantine needs root (uid {peer_uid})"
                    ))
                } else {
                    match backend.quarantine_release(&cgroup) {
                        Ok(q) => Reply {
                            ok: true,
                            quarantines: Some(vec![q]),
                            ..Default::default()
                        },
                        Err(e) => Reply::error(e),
                    }
                };
                wr.write_all(&line(&reply)).await?;
            }
        }
    }
}

fn active_set_reply(set: PolicySetSummary) -> Reply {
    let listing = PolicyListing {
        active: set,
        history: Vec::new(),
    };
    Reply {
        ok: true,
        policies: Some(listing),
        ..Default::default()
    }
}

enum RequestLine {
    Line,
    TooLong,
    Eof,
}

/// Read one line into `buf` without ever holding more than `MAX_REQUEST_BYTES`.
async fn read_request_line(
    rd: &mut BufReader<OwnedReadHalf>,
    buf: &mut Vec<u8>,
) -> std::io::Result<RequestLine> {
    buf.clear();
    let mut too_long = false;
    loop {
        let avail = rd.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() && !too_long {
                RequestLine::Eof
            } else {
                RequestLine::Line
            });
        }
        let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        if !too_long && buf.len() + chunk <= MAX_REQUEST_BYTES {
            buf.extend_from_slice(&avail[..chunk]);
        } else {
            too_long = true;
            buf.clear();
        }
        rd.consume(chunk + usize::from(done));
        if done {
            return Ok(if too_long {
                RequestLine::TooLong
            } else {
                RequestLine::Line
            });
        }
    }
}

/// Stream `rx` to the client until it hangs up: `select` turns an item into a line (or
/// skips it); a lag becomes a `lost` line, so a slow client knows what it missed.
async fn follow<T: Clone>(
    mut rx: broadcast::Receiver<T>,
    select: impl Fn(T) -> Option<StreamItem>,
    mut rd: BufReader<OwnedReadHalf>,
    mut wr: OwnedWriteHalf,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut scratch = [0u8; 256];
    loop {
        let item = tokio::select! {
            r = rx.recv() => match r {
                Ok(v) => match select(v) {
                    Some(item) => item,
                    None => continue,
                },
                Err(broadcast::error::RecvError::Lagged(n)) => StreamItem::Lost(n),
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            // Anything the client sends now is ignored; EOF means it hung up.
            n = rd.read(&mut scratch) => match n {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
            _ = shutdown.changed() => return Ok(()),
        };
        wr.write_all(&line(&item)).await?;
    }
}
