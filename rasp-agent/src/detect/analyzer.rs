//! The seam between the event pipeline and heavy analysis (SQL, HTTP): each analyzer runs on
//! its own thread behind a bounded queue. The pipeline only ever `offer`s work, which never
//! blocks: a full queue drops that work item and counts it (the analyzer's loss, visible in
//! `status` and metrics), so a slow analyzer can never back up into the ring buffer and
//! cost the kernel's events. Decisions that must land within a millisecond (a held query)
//! do not queue here; they take the pipeline's fast path.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
        Arc,
    },
    thread::JoinHandle,
};

use serde::{Deserialize, Serialize};

/// An analyzer's counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyzerStats {
    /// Work items accepted into the queue.
    pub queued: u64,
    /// Work items dropped because the queue was full (or the analyzer had stopped).
    pub dropped: u64,
    /// Work items the analyzer finished.
    pub done: u64,
    /// The queue's bound.
    pub capacity: usize,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    dropped: AtomicU64,
    done: AtomicU64,
}

/// The pipeline's handle on one analyzer.
pub struct AnalyzerQueue<W: Send + 'static> {
    name: &'static str,
    tx: SyncSender<W>,
    counters: Arc<Counters>,
    capacity: usize,
    worker: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the {name} analyzer thread: {source}")]
pub struct AnalyzerStartError {
    name: &'static str,
    source: std::io::Error,
}

impl<W: Send + 'static> AnalyzerQueue<W> {
    /// Start `name`'s thread, which runs `analyze` on each work item in arrival order.
    pub fn start(
        name: &'static str,
        capacity: usize,
        mut analyze: impl FnMut(W) + Send + 'static,
    ) -> Result<Self, AnalyzerStartError> {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::sync_channel::<W>(capacity);
        let counters = Arc::new(Counters::default());
        let done = counters.clone();
        let worker = std::thread::Builder::new()
            .name(format!("rasp-{name}"))
            .spawn(move || {
                // Ends when every sender is gone (the queue was dropped).
                for work in rx {
                    analyze(work);
                    done.done.fetch_add(1, Ordering::Relaxed);
                }
            })
            .map_err(|source| AnalyzerStartError { name, source })?;
        Ok(AnalyzerQueue {
            name,
            tx,
            counters,
            capacity,
            worker: Some(worker),
        })
    }

    /// Hand `work` over without waiting; `false` if it was dropped (counted).
    pub fn offer(&self, work: W) -> bool {
        offer(&self.tx, &self.counters, work)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Another producer's handle (the decision thread's, beside the pipeline's). The queue's
    /// drop waits for its worker, which ends when every sender is gone: a sender must not
    /// outlive the thread that uses it.
    pub fn sender(&self) -> AnalyzerSender<W> {
        AnalyzerSender {
            tx: self.tx.clone(),
            counters: self.counters.clone(),
        }
    }

    pub fn stats(&self) -> AnalyzerStats {
        self.stats_handle().stats()
    }

    /// A handle `status` and metrics read the counters through, from any thread.
    pub fn stats_handle(&self) -> AnalyzerStatsHandle {
        AnalyzerStatsHandle {
            counters: self.counters.clone(),
            capacity: self.capacity,
        }
    }
}

/// A second producer for an analyzer: offers exactly as `AnalyzerQueue::offer` does.
pub struct AnalyzerSender<W> {
    tx: SyncSender<W>,
    counters: Arc<Counters>,
}

impl<W> AnalyzerSender<W> {
    pub fn offer(&self, work: W) -> bool {
        offer(&self.tx, &self.counters, work)
    }
}

fn offer<W>(tx: &SyncSender<W>, counters: &Counters, work: W) -> bool {
    match tx.try_send(work) {
        Ok(()) => {
            counters.queued.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// Reads an analyzer's counters without its queue.
#[derive(Clone)]
pub struct AnalyzerStatsHandle {
    counters: Arc<Counters>,
    capacity: usize,
}

impl AnalyzerStatsHandle {
    pub fn stats(&self) -> AnalyzerStats {
        AnalyzerStats {
            queued: self.counters.queued.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            done: self.counters.done.load(Ordering::Relaxed),
            capacity: self.capacity,
        }
    }
}

impl<W: Send + 'static> Drop for AnalyzerQueue<W> {
    /// Let the analyzer finish what is queued, then join it (a panic in it is reported).
    /// Not while the owner unwinds: another producer (`sender`) may keep the worker alive
    /// until the agent stops, and the agent stops only once the panicking thread has ended.
    fn drop(&mut self) {
        let (tx, _) = mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        if std::thread::panicking() {
            return;
        }
        if let Some(worker) = self.worker.take() {
            if worker.join().is_err() {
                tracing::error!(analyzer = self.name, "analyzer thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    #[test]
    fn a_slow_analyzer_drops_its_own_work_and_never_blocks_the_offerer() {
        // The analyzer blocks until released: the queue fills, then offers drop.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (g, s) = (gate.clone(), seen.clone());
        let queue = AnalyzerQueue::start("test", 4, move |n: u32| {
            let (lock, cv) = &*g;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            s.lock().unwrap().push(n);
        })
        .unwrap();
        let started = Instant::now();
        let accepted = (0..100).filter(|&n| queue.offer(n)).count();
        assert!(started.elapsed() < Duration::from_secs(1), "offer blocked");
        // 4 in the queue, at most 1 taken by the worker before it blocked.
        assert!((4..=5).contains(&accepted), "accepted {accepted}");
        let stats = queue.stats();
        assert_eq!(stats.queued as usize, accepted);
        assert_eq!(stats.dropped as usize, 100 - accepted);
        {
            let (lock, cv) = &*gate;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        drop(queue); // drains and joins
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), accepted);
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "arrival order kept: {seen:?}"
        );
    }
}
