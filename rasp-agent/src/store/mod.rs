//! Where detections go: folded (a storm becomes one line with a count), indexed in memory for
//! the CLI, fanned out to live followers, and appended to the JSONL journal in the state
//! directory. `DetectionStore::submit` never waits on the disk: the file belongs to one task,
//! `StoreWriter`, fed through a bounded queue; whatever cannot be queued is still indexed and
//! broadcast, and counted.
//!
//! Accounting (exact once the writer has finished; while it runs the difference is in flight):
//! `submitted - folded + aggregates = written + journal_dropped + write_lost`.

pub mod aggregate;
pub mod export;
pub mod index;
pub mod journal;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::{
    sync::{broadcast, mpsc, watch},
    time::MissedTickBehavior,
};

use crate::detect::{Detection, FoldKey};

pub use aggregate::Aggregator;
pub use index::{DetectionIndex, DetectionQuery};
pub use journal::{load_recent, Journal};

/// Detections a live follower may fall behind before it starts losing them (it is told how
/// many, see `subscribe`).
const FOLLOWER_QUEUE: usize = 1024;
/// Most detections written per `write` call.
const BATCH: usize = 1024;
/// Write and queue-full errors are logged at most this often (the counters see them all).
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding detection {id} as JSON: {source}")]
    Encode {
        id: String,
        source: serde_json::Error,
    },
    #[error("detection journal writer task failed: {0}")]
    Writer(String),
}

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The state directory: `detections.jsonl` and its rotations live here.
    pub dir: PathBuf,
    /// Rotate the journal before it would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept (`detections.jsonl.1` … `.keep`), besides the current one.
    pub keep: usize,
    /// Longest time written detections may stay un-fsynced (what a power loss can cost);
    /// zero fsyncs after every batch.
    pub sync_interval: Duration,
    /// Detections waiting for the writer before `submit` starts counting journal drops.
    pub queue: usize,
    /// Recent detections kept in memory (and loaded from the journal at start).
    pub index_size: usize,
    /// Identical detections within this window of the first are folded into it.
    pub fold_window: Duration,
    /// Bound on open fold windows; beyond it new keys pass unfolded.
    pub fold_max_keys: usize,
}

impl StoreOptions {
    /// The defaults, with the journal in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        StoreOptions {
            dir: dir.into(),
            max_bytes: 64 << 20,
            keep: 4,
            sync_interval: Duration::from_secs(1),
            queue: 8192,
            index_size: 10_000,
            fold_window: Duration::from_secs(10),
            fold_max_keys: 4096,
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self::in_dir("/var/lib/rasp")
    }
}

/// Numbers for `status` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Detections handed to `submit`.
    pub submitted: u64,
    /// Absorbed into an aggregate instead of written on their own.
    pub folded: u64,
    /// Aggregate detections produced (each reports its `count`).
    pub aggregates: u64,
    /// Passed unfolded because `fold_max_keys` windows were open.
    pub fold_overflow: u64,
    pub open_folds: usize,
    /// Journal lines written (reached the kernel; fsynced within `sync_interval`).
    pub written: u64,
    /// Not journaled because the writer's queue was full (or the writer had stopped); still
    /// indexed and broadcast.
    pub journal_dropped: u64,
    /// Failed journal operations (write, fsync, rotation).
    pub write_errors: u64,
    /// Detections that did not reach the journal because of those errors.
    pub write_lost: u64,
    /// The most recent of those errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write_error: Option<String>,
    /// Journal lines that did not parse when loading at start (e.g. torn by a crash).
    pub skipped_lines_at_load: u64,
    /// Detections loaded from the journal into the index at start.
    pub loaded_at_start: usize,
    /// Why loading at start failed, if it did (the agent starts with an empty index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
    /// Size of the current journal file.
    pub journal_bytes: u64,
    pub journal_path: String,
    pub index_len: usize,
}

/// Folding state; `closed` once the writer has flushed it for shutdown: later detections pass
/// unfolded (and are counted as journal drops) rather than vanish into a window no one closes.
struct Folding {
    agg: Aggregator,
    closed: bool,
}

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    written: AtomicU64,
    journal_dropped: AtomicU64,
    write_errors: AtomicU64,
    write_lost: AtomicU64,
    journal_bytes: AtomicU64,
    /// Seconds after `opened` (+1) of the last queue-full warning; 0 = never.
    last_drop_log: AtomicU64,
    /// The most recent journal error, for `status` and the agent-health detection.
    last_write_error: Mutex<Option<String>>,
}

/// The detections side of the agent, shared via `Arc` by the pipeline (submit), the API
/// (query, subscribe) and status/metrics (stats).
pub struct DetectionStore {
    folds: Mutex<Folding>,
    index: Mutex<DetectionIndex>,
    live: broadcast::Sender<Arc<Detection>>,
    journal_tx: mpsc::Sender<Arc<Detection>>,
    /// Lines written to the journal so far: ticks after each write, waking the export sinks
    /// that tail it.
    journal_written: watch::Sender<u64>,
    counters: Counters,
    opened: Instant,
    journal_path: PathBuf,
    skipped_lines_at_load: u64,
    loaded_at_start: usize,
    load_error: Option<String>,
}

impl DetectionStore {
    /// Open the journal in `opts.dir` (creating the directory, mode 0700) and load its most
    /// recent detections into the index. A journal that cannot be opened for writing is an
    /// error; one whose history cannot be read is not (logged, reported in `stats`).
    pub fn open(opts: StoreOptions) -> Result<(Arc<DetectionStore>, StoreWriter), StoreError> {
        let journal = Journal::open(&opts.dir, opts.max_bytes, opts.keep, opts.sync_interval)?;
        let (index, loaded_at_start, skipped_lines_at_load, load_error) = load_index(&opts);
        let (live, _) = broadcast::channel(FOLLOWER_QUEUE);
        let (journal_tx, rx) = mpsc::channel(opts.queue.max(1));
        let counters = Counters::default();
        counters
            .journal_bytes
            .store(journal.bytes(), Ordering::Relaxed);
        let store = Arc::new(DetectionStore {
            folds: Mutex::new(Folding {
                agg: Aggregator::new(opts.fold_window, opts.fold_max_keys),
                closed: false,
            }),
            index: Mutex::new(index),
            live,
            journal_tx,
            journal_written: watch::Sender::new(0),
            counters,
            opened: Instant::now(),
            journal_path: journal.path().to_path_buf(),
            skipped_lines_at_load,
            loaded_at_start,
            load_error,
        });
        let writer = StoreWriter {
            store: store.clone(),
            rx,
            journal: Some(journal),
            fold_tick: (opts.fold_window / 10)
                .clamp(Duration::from_millis(10), Duration::from_secs(1)),
            sync_interval: opts.sync_interval.max(Duration::from_millis(1)),
            errors: ErrorLog::default(),
        };
        Ok((store, writer))
    }

    /// The cheap path of a detection storm: if a fold window is open for `key`, count one
    /// more occurrence (at `at`) in it and return `true` — the detection is submitted and
    /// folded without ever being built. `false`: build it and `submit` it. Never blocks on
    /// anything but the fold lock.
    pub fn fold(&self, key: &FoldKey<'_>, at: SystemTime) -> bool {
        let folded = {
            let mut folds = lock(&self.folds);
            !folds.closed && folds.agg.fold(key, Instant::now(), at)
        };
        if folded {
            self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        }
        folded
    }

    /// Never blocks, never waits on disk: folds, indexes, broadcasts to followers, and queues
    /// for the journal; if the journal queue is full the detection is still indexed and
    /// broadcast but counted as `journal_dropped` (never silent).
    pub fn submit(&self, d: Detection) {
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        let pass = {
            let mut folds = lock(&self.folds);
            if folds.closed {
                Some(d)
            } else {
                folds.agg.offer(d, Instant::now())
            }
        };
        let Some(d) = pass else { return };
        let d = Arc::new(d);
        self.publish(&d);
        if let Err(e) = self.journal_tx.try_send(d) {
            self.counters
                .journal_dropped
                .fetch_add(1, Ordering::Relaxed);
            self.warn_dropped(matches!(e, mpsc::error::TrySendError::Closed(_)));
        }
    }

    /// The most recent matching detections, oldest first.
    pub fn query(&self, q: &DetectionQuery) -> Vec<Arc<Detection>> {
        lock(&self.index).query(q)
    }

    /// Ticks (with the number of journal lines written so far) after every journal write:
    /// what the export sinks wait on.
    pub fn journal_written(&self) -> watch::Receiver<u64> {
        self.journal_written.subscribe()
    }

    /// Live detections (first occurrences and aggregates, as journaled) for
    /// `detections --follow`. A follower more than `FOLLOWER_QUEUE` behind loses its oldest
    /// and gets `RecvError::Lagged(n)`, like `EventHub`: the store never waits for it.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Detection>> {
        self.live.subscribe()
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        let (fold, open_folds) = {
            let folds = lock(&self.folds);
            (folds.agg.stats(), folds.agg.open_keys())
        };
        StoreStats {
            submitted: c.submitted.load(Ordering::Relaxed),
            folded: fold.folded,
            aggregates: fold.aggregates,
            fold_overflow: fold.overflow,
            open_folds,
            written: c.written.load(Ordering::Relaxed),
            journal_dropped: c.journal_dropped.load(Ordering::Relaxed),
            write_errors: c.write_errors.load(Ordering::Relaxed),
            write_lost: c.write_lost.load(Ordering::Relaxed),
            last_write_error: lock(&c.last_write_error).clone(),
            skipped_lines_at_load: self.skipped_lines_at_load,
            loaded_at_start: self.loaded_at_start,
            load_error: self.load_error.clone(),
            journal_bytes: c.journal_bytes.load(Ordering::Relaxed),
            journal_path: self.journal_path.display().to_string(),
            index_len: lock(&self.index).len(),
        }
    }

    /// Index and broadcast (the journal is the caller's business).
    fn publish(&self, d: &Arc<Detection>) {
        lock(&self.index).push(d.clone());
        if self.live.receiver_count() > 0 {
            // Err only means nobody is listening any more.
            let _ = self.live.send(d.clone());
        }
    }

    fn warn_dropped(&self, writer_stopped: bool) {
        let now = self.opened.elapsed().as_secs() + 1;
        let last = self.counters.last_drop_log.load(Ordering::Relaxed);
        if (last == 0 || now >= last + LOG_EVERY.as_secs())
            && self
                .counters
                .last_drop_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let dropped = self.counters.journal_dropped.load(Ordering::Relaxed);
            if writer_stopped {
                tracing::warn!(
                    dropped,
                    "detection after the journal writer stopped: kept in memory, not journaled"
                );
            } else {
                tracing::warn!(
                    dropped,
                    "detection journal queue full: detections kept in memory, not journaled"
                );
            }
        }
    }
}

/// The index as the journal left it: (index, loaded, skipped lines, load error).
fn load_index(opts: &StoreOptions) -> (DetectionIndex, usize, u64, Option<String>) {
    let mut index = DetectionIndex::new(opts.index_size);
    let (recent, skipped) = match load_recent(&opts.dir, opts.index_size) {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(error = %e, "cannot load past detections; the index starts empty");
            return (index, 0, 0, Some(e.to_string()));
        }
    };
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "unreadable lines in the detection journal skipped (torn by a crash?)"
        );
    }
    let loaded = recent.len();
    for d in recent {
        index.push(Arc::new(d));
    }
    (index, loaded, skipped, None)
}

/// The task that owns the journal file: drains the queue in batches, writes them, fsyncs on
/// the interval, rotates, writes the aggregates of closed fold windows, and on shutdown
/// drains the queue, flushes every open window and fsyncs. File operations run on tokio's
/// blocking pool so a slow disk never stalls the runtime's workers.
pub struct StoreWriter {
    store: Arc<DetectionStore>,
    rx: mpsc::Receiver<Arc<Detection>>,
    /// Lent to the blocking pool during each file operation.
    journal: Option<Journal>,
    fold_tick: Duration,
    sync_interval: Duration,
    errors: ErrorLog,
}

impl StoreWriter {
    /// Runs until `shutdown` turns true (or its sender goes away). Write errors are counted
    /// and logged, never returned; an error here means the writer itself broke.
    pub async fn run(mut self, shutdown: watch::Receiver<bool>) -> Result<(), StoreError> {
        if let Err(e) = self.serve(shutdown).await {
            // Whatever comes later is indexed and counted as a journal drop, not folded into
            // windows no one will close.
            self.rx.close();
            let orphans = {
                let mut folds = lock(&self.store.folds);
                folds.closed = true;
                folds.agg.flush_all()
            };
            let mut dropped = orphans.len() as u64;
            while self.rx.try_recv().is_ok() {
                dropped += 1;
            }
            let c = &self.store.counters;
            c.journal_dropped.fetch_add(dropped, Ordering::Relaxed);
            tracing::error!(error = %e, "detection journal writer stopped; detections are no longer journaled");
            return Err(e);
        }
        self.finish().await
    }

    async fn serve(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), StoreError> {
        let mut sync = tokio::time::interval(self.sync_interval);
        sync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut expire = tokio::time::interval(self.fold_tick);
        expire.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        while !*shutdown.borrow_and_update() {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                n = self.rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    self.write(std::mem::take(&mut batch)).await?;
                }
                _ = sync.tick() => self.sync_if_due().await?,
                _ = expire.tick() => {
                    let due = lock(&self.store.folds).agg.expire(Instant::now());
                    self.write_aggregates(due).await?;
                }
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(), StoreError> {
        // From here `submit` gets "closed" and counts a journal drop; what is queued is written.
        self.rx.close();
        let mut batch = Vec::with_capacity(BATCH);
        while self.rx.recv_many(&mut batch, BATCH).await > 0 {
            self.write(std::mem::take(&mut batch)).await?;
        }
        let rest = {
            let mut folds = lock(&self.store.folds);
            folds.closed = true;
            folds.agg.flush_all()
        };
        self.write_aggregates(rest).await?;
        let synced = self.with_journal(|j| j.sync()).await?;
        self.account(Default::default(), synced);
        Ok(())
    }

    async fn write_aggregates(&mut self, due: Vec<Detection>) -> Result<(), StoreError> {
        if due.is_empty() {
            return Ok(());
        }
        let due: Vec<Arc<Detection>> = due.into_iter().map(Arc::new).collect();
        for d in &due {
            self.store.publish(d);
        }
        self.write(due).await
    }

    async fn write(&mut self, batch: Vec<Arc<Detection>>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len() as u64;
        let done = self
            .with_journal(move |j| {
                let appended = j.append(&batch);
                let synced = if j.sync_due(Instant::now()) {
                    j.sync()
                } else {
                    Ok(())
                };
                (appended, synced)
            })
            .await;
        let (appended, synced) = match done {
            Ok(done) => done,
            Err(e) => {
                // The batch went down with the task: count it before giving up.
                let c = &self.store.counters;
                c.journal_dropped.fetch_add(n, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.account(appended, synced);
        Ok(())
    }

    async fn sync_if_due(&mut self) -> Result<(), StoreError> {
        let due = self
            .journal
            .as_ref()
            .is_some_and(|j| j.sync_due(Instant::now()));
        if due {
            let synced = self.with_journal(|j| j.sync()).await?;
            self.account(Default::default(), synced);
        }
        Ok(())
    }

    fn account(&mut self, appended: journal::Appended, synced: Result<(), StoreError>) {
        let c = &self.store.counters;
        c.written.fetch_add(appended.written, Ordering::Relaxed);
        c.write_lost.fetch_add(appended.lost, Ordering::Relaxed);
        if appended.written > 0 {
            self.store
                .journal_written
                .send_modify(|n| *n += appended.written);
        }
        if let Some(j) = &self.journal {
            c.journal_bytes.store(j.bytes(), Ordering::Relaxed);
        }
        for e in appended.errors.iter().chain(synced.as_ref().err()) {
            c.write_errors.fetch_add(1, Ordering::Relaxed);
            *lock(&c.last_write_error) = Some(e.to_string());
            self.errors.report(e, c.write_lost.load(Ordering::Relaxed));
        }
    }

    /// Run a file operation on the blocking pool, lending it the journal.
    async fn with_journal<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Journal) -> T + Send + 'static,
    {
        let mut journal = self
            .journal
            .take()
            .ok_or_else(|| StoreError::Writer("journal lost by an earlier failure".into()))?;
        let (journal, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut journal);
            (journal, out)
        })
        .await
        .map_err(|e| StoreError::Writer(e.to_string()))?;
        self.journal = Some(journal);
        Ok(out)
    }
}

/// Logs a write error at most once a minute (disk full produces one per batch).
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn report(&mut self, e: &StoreError, lost_total: u64) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::error!(
            error = %e,
            suppressed = self.suppressed,
            lost_total,
            "detection journal write failed; detections stay in memory, losses are counted"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::{
        detect::{Outcome, ProcessSummary},
        events::{Event, EventDetail, ExecDetail},
        policy::vocab::{Action, Mode, Severity},
    };

    /// 2027-01-15T08:00:00Z: `sample(i, ..)` happened `i` seconds later.
    pub fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// A realistic audit-mode exec detection: `exe -c id` by uid 33 under nginx, with id
    /// `id-{i}`, at `t0() + i` seconds, from pid `4000 + i`.
    pub fn sample(i: u64, rule: &str, exe: &str) -> Detection {
        let time = humantime::format_rfc3339_micros(t0() + Duration::from_secs(i)).to_string();
        let pid = 4000 + i as u32;
        let comm = crate::events::Comm::new(exe.rsplit('/').next().unwrap_or(exe));
        let argv = crate::events::Argv::new([exe, "-c", "id"]);
        Detection {
            id: format!("id-{i}"),
            time: time.clone(),
            rule_id: rule.to_string(),
            policy: "default-server".to_string(),
            policy_version: 3,
            policy_set_version: 7,
            mode: Mode::Audit,
            severity: Severity::High,
            action: Action::Kill,
            outcome: Outcome::Audited,
            outcome_detail: Some("audit mode: would kill".to_string()),
            description: Some("a shell spawned by a network server".to_string()),
            event: Arc::new(Event {
                time: crate::events::WallTime::from_system(t0() + Duration::from_secs(i)),
                ts_boot_ns: 5_000_000_000 + i,
                uid: 33,
                gid: 33,
                comm,
                cgroup_id: 4242,
                cgroup: Some("/system.slice/nginx.service".into()),
                ..Event::new(
                    pid,
                    812,
                    EventDetail::Exec(ExecDetail {
                        exe: Some(exe.into()),
                        filename: exe.to_string(),
                        argv: argv.clone(),
                        cwd: Some("/var/www".into()),
                        ..ExecDetail::default()
                    }),
                )
            }),
            process: ProcessSummary {
                pid,
                comm,
                exe: Some(exe.into()),
                argv,
                argv_truncated: false,
                uid: Some(33),
            },
            ancestry: vec![
                ProcessSummary {
                    pid: 812,
                    comm: "nginx".into(),
                    exe: Some("/usr/sbin/nginx".into()),
                    argv: Default::default(),
                    argv_truncated: false,
                    uid: Some(33),
                },
                ProcessSummary {
                    pid: 1,
                    comm: "systemd".into(),
                    exe: Some("/usr/lib/systemd/systemd".into()),
                    argv: Default::default(),
                    argv_truncated: false,
                    uid: Some(0),
                },
            ],
            latency_us: 180,
            count: 1,
            last_time: None,
            kill_scope: None,
            quarantine_mode: None,
        }
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn store_is_shareable() {
        assert_send_sync::<DetectionStore>();
        fn assert_send<T: Send + 'static>() {}
        assert_send::<StoreWriter>();
    }

    fn stop() -> (watch::Sender<bool>, watch::Receiver<bool>) {
        watch::channel(false)
    }

    fn accounting_holds(s: &StoreStats) {
        assert_eq!(
            s.submitted - s.folded + s.aggregates,
            s.written + s.journal_dropped + s.write_lost,
            "{s:#?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn storm_folds_end_to_end_and_survives_restart() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state");
        let (store, writer) = DetectionStore::open(StoreOptions::in_dir(&dir)).expect("opens");
        let mut follower = store.subscribe();
        let (stop_tx, stop_rx) = stop();
        let task = tokio::spawn(writer.run(stop_rx));

        // 9000 identical (a storm) interleaved with 1000 distinct.
        for i in 0..10_000u64 {
            if i % 10 == 0 {
                store.submit(sample(i, "exec-tmp", &format!("/tmp/x{i}")));
            } else {
                store.submit(sample(i, "shell-from-server", "/bin/sh"));
            }
        }
        let _ = stop_tx.send(true);
        task.await.expect("writer task").expect("writer ok");

        let stats = store.stats();
        accounting_holds(&stats);
        assert_eq!(stats.submitted, 10_000);
        assert_eq!(stats.folded, 8999);
        assert_eq!(stats.aggregates, 1);
        assert_eq!((stats.written, stats.journal_dropped), (1002, 0));
        assert_eq!((stats.write_errors, stats.write_lost), (0, 0));
        assert_eq!(stats.index_len, 1002);
        let size = std::fs::metadata(dir.join(journal::FILE_NAME))
            .expect("journal")
            .len();
        assert_eq!(stats.journal_bytes, size);

        let (lines, skipped) = load_recent(&dir, usize::MAX).expect("loads");
        assert_eq!((lines.len(), skipped), (1002, 0));
        let storm: Vec<&Detection> = lines
            .iter()
            .filter(|d| d.rule_id == "shell-from-server")
            .collect();
        assert_eq!(storm.len(), 2);
        assert_eq!((storm[0].id.as_str(), storm[0].count), ("id-1", 1));
        assert_eq!((storm[1].id.as_str(), storm[1].count), ("id-1.agg", 8999));
        assert_eq!(storm[1].time, storm[0].time);
        assert_eq!(
            storm[1].last_time.as_deref(),
            Some(sample(9999, "", "").time.as_str())
        );
        assert_eq!(
            lines.iter().filter(|d| d.rule_id == "exec-tmp").count(),
            1000
        );
        assert_eq!(lines.last().map(|d| d.id.as_str()), Some("id-1.agg"));

        // The follower saw what the journal got.
        let mut seen = 0;
        while let Ok(d) = follower.try_recv() {
            seen += 1;
            assert!(d.count >= 1);
        }
        assert_eq!(seen, 1002);

        // After shutdown nothing vanishes: it is indexed and counted as a journal drop.
        store.submit(sample(20_000, "shell-from-server", "/bin/sh"));
        let after = store.stats();
        assert_eq!(after.journal_dropped, 1);
        accounting_holds(&after);

        // Restart: the index comes back from the journal.
        let (store, _writer) = DetectionStore::open(StoreOptions::in_dir(&dir)).expect("reopens");
        let s = store.stats();
        assert_eq!(
            (s.loaded_at_start, s.index_len, s.skipped_lines_at_load),
            (1002, 1002, 0)
        );
        let last = store.query(&DetectionQuery {
            rule: Some("shell-from-server".into()),
            ..Default::default()
        });
        assert_eq!(last.len(), 2);
        assert_eq!(last[1].count, 8999);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aggregates_are_written_when_their_window_closes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut opts = StoreOptions::in_dir(tmp.path());
        opts.fold_window = Duration::from_millis(100);
        let (store, writer) = DetectionStore::open(opts).expect("opens");
        let mut follower = store.subscribe();
        let (stop_tx, stop_rx) = stop();
        let task = tokio::spawn(writer.run(stop_rx));
        for i in 0..5 {
            store.submit(sample(i, "r", "/bin/sh"));
        }
        let first = follower.recv().await.expect("first");
        assert_eq!((first.id.as_str(), first.count), ("id-0", 1));
        let agg = tokio::time::timeout(Duration::from_secs(5), follower.recv())
            .await
            .expect("aggregate within the window + a tick")
            .expect("aggregate");
        assert_eq!((agg.id.as_str(), agg.count), ("id-0.agg", 4));
        let _ = stop_tx.send(true);
        task.await.expect("writer task").expect("writer ok");
        assert_eq!(store.stats().written, 2);
    }

    #[tokio::test]
    async fn a_full_queue_is_counted_and_still_indexed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut opts = StoreOptions::in_dir(tmp.path());
        opts.queue = 4;
        // The writer is not running: nothing leaves the queue.
        let (store, _writer) = DetectionStore::open(opts).expect("opens");
        for i in 0..10 {
            store.submit(sample(i, "r", &format!("/bin/p{i}")));
        }
        let s = store.stats();
        assert_eq!((s.submitted, s.journal_dropped, s.index_len), (10, 6, 10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_errors_are_counted_and_the_writer_recovers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state");
        let one = serde_json::to_vec(&sample(10, "r", "/bin/p10"))
            .expect("json")
            .len() as u64;
        let mut opts = StoreOptions::in_dir(&dir);
        opts.max_bytes = one * 3;
        opts.fold_window = Duration::ZERO;
        let (store, writer) = DetectionStore::open(opts).expect("opens");
        let (stop_tx, stop_rx) = stop();
        let task = tokio::spawn(writer.run(stop_rx));
        let wait_written = |n: u64| {
            let store = store.clone();
            async move {
                for _ in 0..500 {
                    let s = store.stats();
                    if s.written + s.write_lost >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("writer stuck: {:#?}", store.stats());
            }
        };
        for i in 10..12 {
            store.submit(sample(i, "r", &format!("/bin/p{i}")));
        }
        wait_written(2).await;
        // The state directory disappears: the next rotation cannot create a file.
        std::fs::remove_dir_all(&dir).expect("rm");
        for i in 12..16 {
            store.submit(sample(i, "r", &format!("/bin/p{i}")));
        }
        wait_written(6).await;
        let s = store.stats();
        assert!(s.write_errors > 0 && s.write_lost > 0, "{s:#?}");
        // It comes back: writing resumes into a fresh file.
        std::fs::create_dir(&dir).expect("mkdir");
        store.submit(sample(16, "r", "/bin/p16"));
        wait_written(7).await;
        let _ = stop_tx.send(true);
        task.await.expect("writer task").expect("writer ok");
        let s = store.stats();
        accounting_holds(&s);
        let (got, _) = load_recent(&dir, 100).expect("loads");
        assert_eq!(got.last().map(|d| d.id.as_str()), Some("id-16"));
    }

    /// Measurements for the issue note (run with `--release -- --nocapture`); nothing timed
    /// is asserted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn measure_journal_size_and_rates() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("m");
        let (store, writer) = DetectionStore::open(StoreOptions::in_dir(&dir)).expect("opens");
        let (stop_tx, stop_rx) = stop();
        let task = tokio::spawn(writer.run(stop_rx));

        // Journal bytes per 1k distinct detections.
        for i in 0..1000u64 {
            store.submit(sample(i, "exec-tmp", &format!("/tmp/payload-{i}")));
        }
        // Storm: identical detections, the folding path. Built beforehand: only `submit` is
        // timed.
        let storm: Vec<Detection> = (0..100_000u64)
            .map(|i| sample(1_000_000 + i, "shell-from-server", "/bin/sh"))
            .collect();
        let n = storm.len() as f64;
        let t = Instant::now();
        for d in storm {
            store.submit(d);
        }
        let storm_rate = n / t.elapsed().as_secs_f64();
        // Distinct detections, submit only (first occurrences up to `fold_max_keys`, then
        // overflow): index, broadcast, queue. The writer drains concurrently.
        let burst: Vec<Detection> = (0..4000u64)
            .map(|i| sample(3_000_000 + i, "exec-tmp", &format!("/tmp/b{i}")))
            .collect();
        let n = burst.len() as f64;
        let t = Instant::now();
        for d in burst {
            store.submit(d);
        }
        let burst_rate = n / t.elapsed().as_secs_f64();
        while store.stats().written + store.stats().journal_dropped < 1000 + 1 + 4000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        // Distinct detections end to end (submitted, indexed, written): the producer waits
        // whenever the writer is a queue behind, so nothing is dropped and the rate is what
        // the disk path sustains.
        let distinct = 100_000u64;
        let before = store.stats().written;
        let t = Instant::now();
        for i in 0..distinct {
            store.submit(sample(2_000_000 + i, "exec-tmp", &format!("/tmp/d{i}")));
            if i % 4096 == 4095 {
                while store.stats().written + 4096 < before + i {
                    tokio::task::yield_now().await;
                }
            }
        }
        while store.stats().written < before + distinct {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sustained = distinct as f64 / t.elapsed().as_secs_f64();
        let _ = stop_tx.send(true);
        task.await.expect("writer task").expect("writer ok");

        let s = store.stats();
        accounting_holds(&s);
        assert_eq!(s.journal_dropped, 0);
        // The first 1000 lines of the journal are the 1k distinct ones.
        let content = std::fs::read(dir.join(journal::FILE_NAME)).expect("journal");
        let first_1k: usize = content
            .split_inclusive(|&b| b == b'\n')
            .take(1000)
            .map(|l| l.len())
            .sum();
        println!(
            "journal: {first_1k} bytes per 1k distinct exec detections ({} B each, 2 ancestors); \
             submit() {storm_rate:.0}/s storm (folded), {burst_rate:.0}/s distinct burst; \
             distinct sustained to the journal incl. building them {sustained:.0}/s; {s:?}",
            first_1k / 1000
        );
    }
}
