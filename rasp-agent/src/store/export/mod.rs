//! Export sinks: detections leave the node as versioned JSON records (docs/exports.md) on
//! stdout, in a file, or POSTed to a webhook. Every sink tails the detection journal by
//! offset (`tail`), never the in-memory broadcast (which drops for slow followers by design):
//! what reached the journal reaches every sink, at least once, in journal order, across
//! receiver outages and agent restarts. Each record carries an idempotency key (field, and a
//! header for the webhook) so a receiver drops the repeats at-least-once delivery implies.
//!
//! A sink is one task: read a batch of lines from its position (blocking pool), turn each
//! into a record (through the masking layer), deliver (retrying with exponential backoff
//! while the position stays put), save the new position. The journal writer wakes the tasks
//! after each write; nothing here is on the event path.

mod lines;
pub mod tail;
mod webhook;

use std::{
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::{sync::watch, task::JoinHandle};

pub use lines::rotated_name;
use lines::{FileSink, LineSink};
use tail::{lag_bytes, JournalTail, Position, PositionFile, Start, TailError};
pub use webhook::IDEMPOTENCY_HEADER;
use webhook::{Answer, Webhook, WebhookTarget};

/// The record format's name and version, in every record's `format` field. A change that a
/// consumer could trip over (a field renamed, removed or retyped) is a new version.
pub const FORMAT: &str = "rasp.detection.v1";

/// Journal lines read (and delivered) per batch.
const BATCH_LINES: usize = 512;
/// Without a wake-up from the journal writer, look again after this long (a sink may have
/// been stopped by an error while nothing was written).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// On shutdown, how long a sink may keep delivering what is journaled before it stops (what
/// is left goes out after the next start, from the saved position).
const DRAIN_DEADLINE: Duration = Duration::from_secs(3);
/// First pause before a retry; doubled per failure up to `--export-retry-max`.
const RETRY_MIN: Duration = Duration::from_millis(250);
/// Delivery errors are logged at most this often per sink (counters see them all).
const LOG_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export to stdout: {source}")]
    Stdout { source: std::io::Error },
    #[error("export file: {op} {}: {source}", path.display())]
    File {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--export-webhook {url}: {why}")]
    WebhookUrl { url: String, why: String },
    #[error("webhook {url}: {why}")]
    Webhook { url: String, why: String },
    #[error("--export-webhook-auth-file {}: {source}", path.display())]
    AuthFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node name {name:?} ({from}) cannot go into an idempotency key: use letters, digits, `.`, `-`, `_` (at most 253), e.g. --export-node $(hostname -s)")]
    NodeName { name: String, from: &'static str },
    #[error("creating {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tail(#[from] TailError),
    #[error("export task: {0}")]
    Task(String),
}

/// `rasp-agent run` flags for exports (flattened into `RunArgs`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ExportArgs {
    /// Write every detection as a JSON line (record format rasp.detection.v1) on stdout,
    /// for the node's log shipper. Logs stay on stderr.
    #[arg(long)]
    pub export_stdout: bool,
    /// Append every detection as a JSON line to this file (for Fluent Bit, Vector,
    /// Filebeat); rotated to PATH.1 at --export-file-max-bytes.
    #[arg(long, value_name = "PATH")]
    pub export_file: Option<PathBuf>,
    /// Rotate the export file when it would grow past this.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub export_file_max_bytes: u64,
    /// POST every detection to this http:// URL, at least once, with an Idempotency-Key
    /// header; undelivered detections wait in the journal across outages and restarts.
    #[arg(long, value_name = "URL")]
    pub export_webhook: Option<String>,
    /// File holding the webhook's Authorization header value (e.g. `Bearer …`); read at
    /// start, kept out of the command line.
    #[arg(long, value_name = "PATH")]
    pub export_webhook_auth_file: Option<PathBuf>,
    /// Seconds a webhook request may take before it is retried.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub export_webhook_timeout: u64,
    /// Longest pause between two delivery attempts (seconds); pauses start at 250 ms and
    /// double.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub export_retry_max: u64,
    /// Node name in records and idempotency keys. Default: $NODE_NAME (the DaemonSet sets
    /// it from spec.nodeName), else the host name.
    #[arg(long, value_name = "NAME")]
    pub export_node: Option<String>,
}

impl ExportArgs {
    pub fn any(&self) -> bool {
        self.export_stdout || self.export_file.is_some() || self.export_webhook.is_some()
    }
}

/// The kinds of sink, as metric labels and in status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    Stdout,
    File,
    Webhook,
}

impl SinkKind {
    pub const ALL: [SinkKind; 3] = [SinkKind::Stdout, SinkKind::File, SinkKind::Webhook];

    pub const fn name(self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::File => "file",
            SinkKind::Webhook => "webhook",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Where sinks count what became of their records (the metrics registry implements it).
pub trait ExportCounter: Send + Sync {
    fn export(&self, sink: SinkKind, result: ExportResult, n: u64);
}

/// What became of journal lines at a sink (metric label `result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExportResult {
    /// Written (stdout, file) or accepted by the receiver.
    Delivered,
    /// A delivery attempt failed and will be repeated.
    Retried,
    /// The receiver refused the record for good (webhook 400/413/415/422).
    Refused,
    /// The journal line did not parse as a detection (torn by a crash); skipped.
    Unreadable,
    /// The journal rotated past the sink's position: an unknown number of detections
    /// skipped (counted once per gap).
    Gap,
}

impl ExportResult {
    pub const ALL: [ExportResult; 5] = [
        ExportResult::Delivered,
        ExportResult::Retried,
        ExportResult::Refused,
        ExportResult::Unreadable,
        ExportResult::Gap,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            ExportResult::Delivered => "delivered",
            ExportResult::Retried => "retried",
            ExportResult::Refused => "refused",
            ExportResult::Unreadable => "unreadable",
            ExportResult::Gap => "gap",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One sink's numbers, shared with `status`.
pub struct ExportStats {
    kind: SinkKind,
    target: String,
    counts: [AtomicU64; ExportResult::ALL.len()],
    lag_bytes: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A sink as `status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportStatus {
    pub sink: String,
    pub target: String,
    pub delivered: u64,
    pub retried: u64,
    pub refused: u64,
    pub unreadable: u64,
    pub gaps: u64,
    /// Journal bytes past the sink's position: what it still has to deliver.
    pub lag_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl ExportStats {
    fn new(kind: SinkKind, target: String) -> Self {
        ExportStats {
            kind,
            target,
            counts: Default::default(),
            lag_bytes: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    fn count(&self, counter: &dyn ExportCounter, result: ExportResult, n: u64) {
        if n > 0 {
            self.counts[result.index()].fetch_add(n, Ordering::Relaxed);
            counter.export(self.kind, result, n);
        }
    }

    pub fn status(&self) -> ExportStatus {
        let c = |r: ExportResult| self.counts[r.index()].load(Ordering::Relaxed);
        ExportStatus {
            sink: self.kind.name().to_string(),
            target: self.target.clone(),
            delivered: c(ExportResult::Delivered),
            retried: c(ExportResult::Retried),
            refused: c(ExportResult::Refused),
            unreadable: c(ExportResult::Unreadable),
            gaps: c(ExportResult::Gap),
            lag_bytes: self.lag_bytes.load(Ordering::Relaxed),
            last_error: crate::lock(&self.last_error).clone(),
        }
    }
}

/// One detection ready to leave: its idempotency key and its record, serialized.
#[derive(Clone, Debug)]
pub struct Record {
    pub key: String,
    pub json: Vec<u8>,
}

/// The export record (format `rasp.detection.v1`). Field order is the serialization order.
#[derive(Serialize)]
struct ExportRecord<'a> {
    format: &'static str,
    /// `<node>:<detection id>`: the same detection always gets the same key.
    idempotency_key: &'a str,
    node: &'a str,
    /// The detection as journaled (and as `rasp-agent detections --json` prints it).
    detection: &'a serde_json::Value,
}

/// A journal line → its export record, through the masking layer. The same line always
/// gives the same bytes: a repeat delivery is byte-identical.
pub fn record_of(node: &str, line: &[u8]) -> Option<Record> {
    let mut detection: serde_json::Value = serde_json::from_slice(line).ok()?;
    let id = detection.get("id")?.as_str()?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let key = format!("{node}:{id}");
    // The journal is written masked already; masking again is idempotent and keeps the rule
    // that nothing leaves without passing the one masking layer.
    crate::mask::shared().mask_json(&mut detection);
    let json = serde_json::to_vec(&ExportRecord {
        format: FORMAT,
        idempotency_key: &key,
        node,
        detection: &detection,
    })
    .ok()?;
    Some(Record { key, json })
}

/// The node name for keys: `--export-node`, else $NODE_NAME, else the host name; checked.
fn node_name(args: &ExportArgs) -> Result<String, ExportError> {
    let (name, from) = match (&args.export_node, std::env::var("NODE_NAME")) {
        (Some(n), _) => (n.clone(), "--export-node"),
        (None, Ok(n)) if !n.is_empty() => (n, "$NODE_NAME"),
        _ => (
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            "the host name",
        ),
    };
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err(ExportError::NodeName { name, from })
    }
}

/// FNV-1a of a sink's target: position files of two different files (or URLs) never mix,
/// and a URL does not appear in a file name.
fn target_tag(target: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in target.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

enum Sink {
    /// Lent to the blocking pool for each write.
    Lines(Option<LineSink>),
    Webhook(Webhook),
}

struct Exporter {
    sink: Sink,
    /// Lent to the blocking pool for each read.
    tail: Option<JournalTail>,
    progress: Progress,
    report: Report,
    node: Arc<str>,
    retry_max: Duration,
}

/// The sink's saved position.
struct Progress {
    file: PositionFile,
    saved: Option<Position>,
    /// The state directory (the journal's).
    journal_dir: PathBuf,
}

/// Counting and (rate-limited) logging of what a sink does.
struct Report {
    stats: Arc<ExportStats>,
    counter: Arc<dyn ExportCounter>,
    last_log: Option<Instant>,
}

/// Shutting down with detections still undelivered: they wait in the journal for the next
/// start (the position says where).
struct Stopped;

/// The running sinks.
pub struct Exports {
    tasks: Vec<JoinHandle<()>>,
    stats: Vec<Arc<ExportStats>>,
    stop: watch::Sender<bool>,
}

impl Exports {
    /// Check every export flag and start one task per sink. Errors (a file that cannot be
    /// opened, a bad URL, an unreadable auth file) stop the agent at start, naming what.
    /// `journal_written` ticks after each journal write.
    pub fn start(
        args: &ExportArgs,
        state_dir: &Path,
        counter: Arc<dyn ExportCounter>,
        journal_written: watch::Receiver<u64>,
    ) -> Result<Exports, ExportError> {
        let (stop, stop_rx) = watch::channel(false);
        let mut exports = Exports {
            tasks: Vec::new(),
            stats: Vec::new(),
            stop,
        };
        if !args.any() {
            return Ok(exports);
        }
        let node: Arc<str> = node_name(args)?.into();
        let dir = state_dir.join("export");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| ExportError::StateDir {
                path: dir.clone(),
                source,
            })?;
        let mut sinks: Vec<(SinkKind, String, Sink)> = Vec::new();
        if args.export_stdout {
            sinks.push((
                SinkKind::Stdout,
                "stdout".into(),
                Sink::Lines(Some(LineSink::Stdout)),
            ));
        }
        if let Some(path) = &args.export_file {
            let file = FileSink::open(path.clone(), args.export_file_max_bytes)?;
            sinks.push((
                SinkKind::File,
                path.display().to_string(),
                Sink::Lines(Some(LineSink::File(file))),
            ));
        }
        if let Some(url) = &args.export_webhook {
            let auth =
                match &args.export_webhook_auth_file {
                    Some(path) => Some(std::fs::read_to_string(path).map_err(|source| {
                        ExportError::AuthFile {
                            path: path.clone(),
                            source,
                        }
                    })?),
                    None => None,
                };
            let target =
                WebhookTarget::parse(url, auth, Duration::from_secs(args.export_webhook_timeout))?;
            sinks.push((
                SinkKind::Webhook,
                target.shown().to_string(),
                Sink::Webhook(Webhook::new(target)),
            ));
        }
        for (kind, target, sink) in sinks {
            let positions = PositionFile::new(dir.join(format!(
                "{}-{}.position",
                kind.name(),
                target_tag(&target)
            )));
            let saved = match positions.load() {
                Ok(p) => p,
                Err(e) => {
                    // Resend what the journal holds rather than risk missing any of it.
                    tracing::warn!(error = %e, sink = kind.name(), "export position unreadable: starting from the oldest journaled detection");
                    None
                }
            };
            let start = if positions.path().exists() {
                Start::Oldest
            } else {
                Start::End
            };
            tracing::info!(sink = kind.name(), target = %target, position = ?saved, "export sink started");
            let stats = Arc::new(ExportStats::new(kind, target));
            let exporter = Exporter {
                sink,
                tail: Some(JournalTail::new(state_dir, saved.clone(), start)),
                progress: Progress {
                    file: positions,
                    saved,
                    journal_dir: state_dir.to_path_buf(),
                },
                report: Report {
                    stats: stats.clone(),
                    counter: counter.clone(),
                    last_log: None,
                },
                node: node.clone(),
                retry_max: Duration::from_secs(args.export_retry_max).max(RETRY_MIN),
            };
            exports.stats.push(stats);
            exports.tasks.push(tokio::spawn(
                exporter.run(journal_written.clone(), stop_rx.clone()),
            ));
        }
        Ok(exports)
    }

    pub fn stats(&self) -> Vec<Arc<ExportStats>> {
        self.stats.clone()
    }

    /// Deliver what the journal holds (each sink for at most `DRAIN_DEADLINE`), save the
    /// positions, and stop. Call after the journal writer has finished.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "export task failed");
            }
        }
    }
}

impl Exporter {
    async fn run(mut self, mut written: watch::Receiver<u64>, mut stop: watch::Receiver<bool>) {
        let mut drain_until: Option<Instant> = None;
        let mut failures = 0u32;
        loop {
            if drain_until.is_none() && *stop.borrow() {
                drain_until = Some(Instant::now() + DRAIN_DEADLINE);
            }
            let (records, end, more) = match self.read().await {
                Ok(batch) => batch,
                Err(e) => {
                    self.report.failed(&e);
                    failures += 1;
                    match retry_wait(failures, self.retry_max, &mut drain_until, &mut stop).await {
                        Ok(()) => continue,
                        Err(Stopped) => break,
                    }
                }
            };
            failures = 0;
            if records.is_empty() {
                self.progress.save(end, &mut self.report);
                if drain_until.is_some() {
                    break;
                }
                if !more {
                    tokio::select! {
                        _ = written.changed() => {}
                        _ = stop.changed() => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                    }
                }
                continue;
            }
            let delivered = match &self.sink {
                Sink::Lines(_) => {
                    self.deliver_lines(records, &mut drain_until, &mut stop)
                        .await
                }
                Sink::Webhook(_) => {
                    self.deliver_webhook(records, &mut drain_until, &mut stop)
                        .await
                }
            };
            if delivered.is_err() {
                break;
            }
            self.progress.save(end, &mut self.report);
        }
        self.progress.update_lag(&self.report);
        let stats = &self.report.stats;
        tracing::info!(
            sink = stats.kind.name(),
            lag_bytes = stats.lag_bytes.load(Ordering::Relaxed),
            "export sink stopped"
        );
    }

    /// The next batch: records with the position after each, the position after the batch,
    /// and whether more may be waiting right now.
    async fn read(&mut self) -> Result<ReadBatch, ExportError> {
        let mut tail = self
            .tail
            .take()
            .ok_or_else(|| ExportError::Task("journal reader lost by an earlier failure".into()))?;
        let node = self.node.clone();
        let (tail, out) = tokio::task::spawn_blocking(move || {
            let out = tail.read(BATCH_LINES).map(|batch| {
                let more = batch.lines.len() >= BATCH_LINES;
                let mut unreadable = batch.oversized;
                let records: Vec<(Record, Position)> = batch
                    .lines
                    .into_iter()
                    .filter_map(|line| match record_of(&node, &line.bytes) {
                        Some(r) => Some((r, line.end)),
                        None => {
                            unreadable += 1;
                            None
                        }
                    })
                    .collect();
                (records, batch.end, more, unreadable, batch.gaps)
            });
            (tail, out)
        })
        .await
        .map_err(|e| ExportError::Task(e.to_string()))?;
        self.tail = Some(tail);
        let (records, end, more, unreadable, gaps) = out?;
        let report = &self.report;
        report.count(ExportResult::Unreadable, unreadable);
        if gaps > 0 {
            report.count(ExportResult::Gap, gaps);
            *crate::lock(&report.stats.last_error) = Some(
                "the journal rotated past this sink's position: detections were skipped \
                 (raise --journal-max-bytes/--journal-keep, or fix the receiver sooner)"
                    .to_string(),
            );
        }
        Ok((records, end, more))
    }

    /// Write the batch (stdout or file), retrying the whole batch until it is written.
    async fn deliver_lines(
        &mut self,
        records: Vec<(Record, Position)>,
        drain_until: &mut Option<Instant>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let n = records.len() as u64;
        let all: Arc<Vec<Record>> = Arc::new(records.into_iter().map(|(r, _)| r).collect());
        let mut failures = 0u32;
        loop {
            match self.write_lines(all.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    let retry = Retry::new(failures, self.retry_max);
                    retry
                        .after(&e, n, &mut self.report, &self.progress, drain_until, stop)
                        .await?;
                }
            }
        }
        self.report.count(ExportResult::Delivered, n);
        self.report.recovered();
        Ok(())
    }

    async fn write_lines(&mut self, records: Arc<Vec<Record>>) -> Result<(), ExportError> {
        let Sink::Lines(slot) = &mut self.sink else {
            return Err(ExportError::Task("not a line sink".into()));
        };
        let mut sink = slot
            .take()
            .ok_or_else(|| ExportError::Task("line sink lost by an earlier failure".into()))?;
        let (sink, out) = tokio::task::spawn_blocking(move || {
            let mut buf = Vec::new();
            let out = sink.write(&records, &mut buf);
            (sink, out)
        })
        .await
        .map_err(|e| ExportError::Task(e.to_string()))?;
        *slot = Some(sink);
        out
    }

    /// POST each record in order; a failure is retried (with backoff) until it is delivered
    /// or refused for good, and the position is saved after each.
    async fn deliver_webhook(
        &mut self,
        records: Vec<(Record, Position)>,
        drain_until: &mut Option<Instant>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let Sink::Webhook(hook) = &mut self.sink else {
            return Ok(());
        };
        for (record, after) in records {
            let mut failures = 0u32;
            loop {
                match hook.post(&record).await {
                    Ok(Answer::Delivered) => {
                        self.report.count(ExportResult::Delivered, 1);
                        self.report.recovered();
                        break;
                    }
                    Ok(Answer::Refused(status)) => {
                        self.report.count(ExportResult::Refused, 1);
                        tracing::warn!(key = %record.key, %status, "webhook refused a detection for good; going on with the next");
                        break;
                    }
                    Err(e) => {
                        failures += 1;
                        let retry = Retry::new(failures, self.retry_max);
                        retry
                            .after(&e, 1, &mut self.report, &self.progress, drain_until, stop)
                            .await?;
                    }
                }
            }
            self.progress.save(Some(after), &mut self.report);
        }
        Ok(())
    }
}

type ReadBatch = (Vec<(Record, Position)>, Option<Position>, bool);

/// The `failures`-th failed attempt in a row at delivering something.
struct Retry {
    failures: u32,
    retry_max: Duration,
}

impl Retry {
    fn new(failures: u32, retry_max: Duration) -> Self {
        Retry {
            failures,
            retry_max,
        }
    }

    /// After an attempt at `n` records failed with `e`: count and log it, then wait the
    /// backoff (`retry_wait`).
    async fn after(
        &self,
        e: &ExportError,
        n: u64,
        report: &mut Report,
        progress: &Progress,
        drain_until: &mut Option<Instant>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        report.failed(e);
        progress.update_lag(report);
        report.count(ExportResult::Retried, n);
        retry_wait(self.failures, self.retry_max, drain_until, stop).await
    }
}

/// After a failed attempt: stop if draining for shutdown and out of time, else wait the
/// backoff (a stop cuts it short and starts the drain clock).
async fn retry_wait(
    failures: u32,
    retry_max: Duration,
    drain_until: &mut Option<Instant>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Stopped> {
    let delay = backoff(failures, retry_max);
    if drain_until.is_some() {
        // Draining: keep trying, briefly.
        tokio::time::sleep(delay.min(Duration::from_millis(200))).await;
    } else {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            *drain_until = Some(Instant::now() + DRAIN_DEADLINE);
        }
    }
    match drain_until {
        Some(t) if Instant::now() >= *t => Err(Stopped),
        _ => Ok(()),
    }
}

impl Progress {
    fn save(&mut self, position: Option<Position>, report: &mut Report) {
        let Some(position) = position else { return };
        if self.saved.as_ref() != Some(&position) {
            match self.file.save(&position) {
                Ok(()) => self.saved = Some(position),
                Err(e) => report.failed(&ExportError::Tail(e)),
            }
        }
        self.update_lag(report);
    }

    /// Journal bytes past the saved position, for `status` (a few `stat`s of the journal
    /// files: cheap enough for after each batch and each failed attempt).
    fn update_lag(&self, report: &Report) {
        if let Some(pos) = &self.saved {
            let lag = lag_bytes(&self.journal_dir, pos);
            report.stats.lag_bytes.store(lag, Ordering::Relaxed);
        }
    }
}

impl Report {
    fn count(&self, result: ExportResult, n: u64) {
        self.stats.count(&*self.counter, result, n);
    }

    fn failed(&mut self, e: &ExportError) {
        *crate::lock(&self.stats.last_error) = Some(e.to_string());
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            self.last_log = Some(now);
            tracing::warn!(sink = self.stats.kind.name(), error = %e, "export delivery failed; retrying (the detections wait in the journal)");
        }
    }

    fn recovered(&mut self) {
        let mut last = crate::lock(&self.stats.last_error);
        if last.is_some() {
            *last = None;
            drop(last);
            self.last_log = None;
            tracing::info!(sink = self.stats.kind.name(), "export delivering again");
        }
    }
}

/// Exponential backoff: `RETRY_MIN` × 2^(failures−1), at most `max`, with up to a quarter
/// less at random so that the agents of a cluster do not retry in step.
fn backoff(failures: u32, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = RETRY_MIN.saturating_mul(1u32 << exp).min(max);
    let jitter = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(failures);
        h.finish() % 1000
    };
    base - base.mul_f64(jitter as f64 / 4000.0)
}

#[cfg(test)]
mod tests;
