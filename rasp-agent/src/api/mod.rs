//! The local unix-socket API. One instance per socket (an exclusive lock beside it), mode
//! 0600 (0660 with a configured group). Peers are checked by SO_PEERCRED/SO_PEERGROUPS:
//! root and the agent's uid may do everything, `--socket-group` members (primary or
//! supplementary) may only read; requests that change state (`Request::changes_state`)
//! need root. Each connection is its own task: a bad request gets an error reply and the
//! connection stays usable; a follower reads from its own bounded broadcast queue, so a slow
//! client only ever loses its own messages. Every client is bounded: connections per pool
//! and per uid (`admission`), bytes per request, time to send a request, time to take a
//! reply; idle connections make room for new ones.

mod admission;
pub mod peer;
pub mod protocol;

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    os::{
        fd::{AsFd, AsRawFd},
        unix::fs::{OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{
        unix::{OwnedReadHalf, OwnedWriteHalf},
        UnixListener, UnixStream,
    },
    sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore},
};

use crate::{
    detect::Detection,
    events::{hub::EventFilter, Event},
    policy::{active::PolicySetSummary, vocab::Severity},
    process::{container::ContainerEntry, Process},
    store::index::DetectionQuery,
};
use admission::{Admission, Limits, Slot};
use peer::{Peer, Privilege};
use protocol::{
    parse_request, PolicyFile, PolicyListing, Reply, Request, Status, StreamItem,
    MAX_READER_REQUEST_BYTES, MAX_REQUEST_BYTES,
};

/// A connection with nothing asked for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// From a request's first byte to its newline (a slowloris client gets this long).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// For a client to take one reply or stream line (one that stops reading is dropped).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests up to this size need no permit; larger ones (policy sets) take one of
/// `LARGE_REQUESTS`, so a few clients at most hold megabyte buffers at once.
const SMALL_REQUEST_BYTES: usize = 64 * 1024;
const LARGE_REQUESTS: usize = 4;

/// What the API serves; implemented by the daemon.
pub trait Backend: Send + Sync + 'static {
    fn status(&self) -> Status;
    fn recent_events(&self, filter: EventFilter, limit: Option<usize>) -> Vec<Arc<Event>>;
    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>>;
    fn processes(&self) -> Vec<Process>;
    /// Containers known by cgroup, with their runtime's names when known.
    fn containers(&self) -> Vec<ContainerEntry>;
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
    /// Members of this group (primary or supplementary) may read, besides root.
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
    let admission = Admission::new(Limits::DEFAULT);
    let large = Arc::new(Semaphore::new(LARGE_REQUESTS));
    // SAFETY: geteuid cannot fail.
    let agent_uid = unsafe { libc::geteuid() };
    let mut refusals = Refusals::default();
    let mut stop = shutdown.clone();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE/ENFILE leave the connection queued: accepting again at once
                    // would spin. Back off; the backlog waits.
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let peer = match Peer::of(stream.as_fd()) {
            Ok(p) => p,
            Err(e) => {
                refusals.note(&e.to_string(), None);
                refuse(&stream, e.to_string());
                continue;
            }
        };
        let privilege = match peer.privilege(agent_uid, access.group) {
            Ok(p) => p,
            Err(e) => {
                refusals.note(&e.to_string(), Some(&peer));
                refuse(&stream, e.to_string());
                continue;
            }
        };
        let slot = match admission.admit(peer.uid, privilege) {
            Ok(slot) => slot,
            Err(e) => {
                refusals.note(&e.to_string(), Some(&peer));
                refuse(&stream, e.to_string());
                continue;
            }
        };
        let client = Client {
            peer,
            privilege,
            slot,
            large: large.clone(),
        };
        let backend = backend.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let uid = client.peer.uid;
            if let Err(e) = serve_client(stream, client, backend, shutdown).await {
                tracing::debug!(uid, error = %e, "client connection ended with an error");
            }
        });
    }
    Ok(())
}

/// Refused connections are logged at a decaying rate: a flood of them must not become a
/// flood of log lines.
#[derive(Default)]
struct Refusals {
    count: u64,
}

impl Refusals {
    fn note(&mut self, why: &str, peer: Option<&Peer>) {
        self.count += 1;
        if self.count.is_power_of_two() {
            tracing::warn!(
                reason = why,
                uid = peer.map(|p| p.uid),
                pid = peer.and_then(|p| p.pid),
                refused_so_far = self.count,
                "refused client"
            );
        }
    }
}

/// One error line, written only if the socket takes it at once, then the connection is
/// closed: a refused client never costs a task or a wait.
fn refuse(stream: &UnixStream, why: String) {
    let _ = stream.try_write(&line(&Reply::error(why)));
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

/// Write one line, or give up on a client that has not taken it within `WRITE_TIMEOUT`
/// (it stopped reading: a stuck `--follow`, or requests sent without reading replies).
async fn send(wr: &mut OwnedWriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("client took no data for {WRITE_TIMEOUT:?}; dropped"),
        )),
    }
}

/// A served connection: who it is, what it may do, its place in the admission table.
struct Client {
    peer: Peer,
    privilege: Privilege,
    slot: Slot,
    large: Arc<Semaphore>,
}

async fn serve_client(
    stream: UnixStream,
    client: Client,
    backend: Arc<dyn Backend>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let limit = match client.privilege {
        Privilege::Admin => MAX_REQUEST_BYTES,
        Privilege::Reader => MAX_READER_REQUEST_BYTES,
    };
    let mut requests = RequestReader {
        rd: BufReader::new(rd),
        buf: Vec::new(),
        limit,
        large: client.large.clone(),
        permit: None,
    };
    loop {
        let request = match requests.next(&client.slot).await? {
            RequestLine::Eof => return Ok(()),
            RequestLine::Idle | RequestLine::Evicted => {
                // Nothing was asked; a goodbye line is courtesy, never waited for.
                let why = "idle connection closed by the agent; reconnect to continue";
                let _ = wr.try_write(&line(&Reply::error(why)));
                return Ok(());
            }
            RequestLine::Slow => {
                let msg =
                    format!("request not completed within {REQUEST_TIMEOUT:?}; connection closed");
                let _ = wr.try_write(&line(&Reply::error(msg)));
                return Ok(());
            }
            RequestLine::TooLong => {
                let msg = match client.privilege {
                    Privilege::Admin => format!("request longer than {limit} bytes"),
                    Privilege::Reader => format!(
                        "request longer than {limit} bytes (the limit for --socket-group members; \
                         larger requests such as policy_apply need root)"
                    ),
                };
                send(&mut wr, &line(&Reply::error(msg))).await?;
                continue;
            }
            RequestLine::Busy => {
                let msg = format!(
                    "{LARGE_REQUESTS} large requests are being received already; try again shortly"
                );
                send(&mut wr, &line(&Reply::error(msg))).await?;
                continue;
            }
            RequestLine::Line if requests.buf.iter().all(u8::is_ascii_whitespace) => continue,
            RequestLine::Line => parse_request(&requests.buf),
        };
        let request = match request {
            Ok(r) => r,
            Err(msg) => {
                send(&mut wr, &line(&Reply::error(msg))).await?;
                continue;
            }
        };
        if request.changes_state() && client.privilege != Privilege::Admin {
            tracing::warn!(
                uid = client.peer.uid,
                pid = client.peer.pid,
                cmd = request.name(),
                "refused a state-changing request from a --socket-group member"
            );
            let msg = format!(
                "permission denied: {} changes the agent's state and needs root; uid {} may only \
                 read (status, events, processes, detections, policy_list)",
                request.name(),
                client.peer.uid
            );
            send(&mut wr, &line(&Reply::error(msg))).await?;
            continue;
        }
        match request {
            Request::Status {} => {
                let reply = Reply {
                    ok: true,
                    status: Some(backend.status()),
                    ..Default::default()
                };
                send(&mut wr, &line(&reply)).await?;
            }
            Request::Processes {} => {
                let reply = Reply {
                    ok: true,
                    processes: Some(backend.processes()),
                    ..Default::default()
                };
                send(&mut wr, &line(&reply)).await?;
            }
            Request::Containers {} => {
                let reply = Reply {
                    ok: true,
                    containers: Some(backend.containers()),
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
                send(&mut wr, &line(&reply)).await?;
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
                send(&mut wr, &line(&start)).await?;
                let filter = EventFilter { kind, pid };
                let select =
                    move |e: Arc<Event>| filter.matches(&e).then_some(StreamItem::Event(e));
                return follow(rx, select, requests.rd, wr, shutdown).await;
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
                send(&mut wr, &line(&reply)).await?;
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
                    return follow(rx, select, requests.rd, wr, shutdown).await;
                }
            }
            Request::PolicyList {} => {
                let listing = backend.policy_listing();
                let reply = Reply {
                    ok: true,
                    policies: Some(listing),
                    ..Default::default()
                };
                send(&mut wr, &line(&reply)).await?;
            }
            Request::PolicyApply { files } => {
                requests.release_large();
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
                send(&mut wr, &line(&reply)).await?;
            }
            Request::PolicyRollback {} => {
                let reply = match backend.policy_rollback() {
                    Ok(set) => active_set_reply(set),
                    Err(e) => Reply::error(e),
                };
                send(&mut wr, &line(&reply)).await?;
            }
            Request::QuarantineList {} => {
                let reply = Reply {
                    ok: true,
                    quarantines: Some(backend.quarantine_list()),
                    ..Default::default()
                };
                send(&mut wr, &line(&reply)).await?;
            }
            // Root only: `changes_state` above.
            Request::QuarantineRelease { cgroup } => {
                let reply = match backend.quarantine_release(&cgroup) {
                    Ok(q) => Reply {
                        ok: true,
                        quarantines: Some(vec![q]),
                        ..Default::default()
                    },
                    Err(e) => Reply::error(e),
                };
                send(&mut wr, &line(&reply)).await?;
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
    /// Longer than the peer's limit; the rest of the line was read and discarded.
    TooLong,
    /// Would need a large buffer while `LARGE_REQUESTS` are being received; discarded.
    Busy,
    Eof,
    /// No request within `IDLE_TIMEOUT`.
    Idle,
    /// Closed to make room for another client while idle (`admission`).
    Evicted,
    /// A request started but did not end within `REQUEST_TIMEOUT` (slowloris).
    Slow,
}

/// Reads request lines with bounded memory and time: at most `limit` bytes a line, large
/// buffers only with a permit from `large`, a deadline for each line.
struct RequestReader {
    rd: BufReader<OwnedReadHalf>,
    buf: Vec<u8>,
    limit: usize,
    large: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl RequestReader {
    /// The next line into `self.buf`.
    async fn next(&mut self, slot: &Slot) -> std::io::Result<RequestLine> {
        self.release_large();
        if self.rd.buffer().is_empty() {
            slot.set_idle(true);
            let waited = tokio::select! {
                r = tokio::time::timeout(IDLE_TIMEOUT, self.rd.fill_buf()) => match r {
                    Err(_) => Some(RequestLine::Idle),
                    Ok(Err(e)) => return Err(e),
                    Ok(Ok([])) => Some(RequestLine::Eof),
                    Ok(Ok(_)) => None,
                },
                _ = slot.evicted() => Some(RequestLine::Evicted),
            };
            slot.set_idle(false);
            if let Some(r) = waited {
                return Ok(r);
            }
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, self.read_line()).await {
            Ok(r) => r,
            Err(_) => Ok(RequestLine::Slow),
        }
    }

    /// Give back the large-request permit and the memory that went with it.
    fn release_large(&mut self) {
        self.buf.clear();
        if self.permit.take().is_some() || self.buf.capacity() > SMALL_REQUEST_BYTES {
            self.buf = Vec::new();
        }
    }

    /// Read one line into `buf` without ever holding more than `limit` bytes.
    async fn read_line(&mut self) -> std::io::Result<RequestLine> {
        let mut discarded: Option<RequestLine> = None;
        loop {
            let avail = self.rd.fill_buf().await?;
            if avail.is_empty() {
                return Ok(match discarded {
                    Some(d) => d,
                    None if self.buf.is_empty() => RequestLine::Eof,
                    None => RequestLine::Line,
                });
            }
            let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (avail.len(), false),
            };
            if discarded.is_none() {
                let len = self.buf.len() + chunk;
                if len > self.limit {
                    discarded = Some(RequestLine::TooLong);
                } else if len > SMALL_REQUEST_BYTES && self.permit.is_none() {
                    match self.large.clone().try_acquire_owned() {
                        Ok(p) => self.permit = Some(p),
                        Err(_) => discarded = Some(RequestLine::Busy),
                    }
                }
                match discarded {
                    None => self.buf.extend_from_slice(&avail[..chunk]),
                    Some(_) => self.release_large(),
                }
            }
            self.rd.consume(chunk + usize::from(done));
            if done {
                return Ok(discarded.unwrap_or(RequestLine::Line));
            }
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
        send(&mut wr, &line(&item)).await?;
    }
}
