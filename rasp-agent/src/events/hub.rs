//! Where decoded events go: a bounded buffer of the most recent ones (for `events` without
//! `--follow`), per-kind counters, and a broadcast channel for live followers. Publishing
//! never waits: a follower that falls behind loses its own oldest messages and is told how
//! many (tokio's broadcast `Lagged`), the event path never slows down for it.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::broadcast;

use super::{Event, Kind};

pub struct EventHub {
    recent: Mutex<VecDeque<Arc<Event>>>,
    capacity: usize,
    live: broadcast::Sender<Arc<Event>>,
    received: [AtomicU64; Kind::ALL.len()],
    decode_errors: AtomicU64,
}

/// Which events a client wants.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventFilter {
    pub kind: Option<Kind>,
    pub pid: Option<u32>,
}

impl EventFilter {
    pub fn matches(&self, ev: &Event) -> bool {
        self.kind.is_none_or(|k| ev.kind() == k) && self.pid.is_none_or(|p| ev.pid == p)
    }
}

impl EventHub {
    /// `capacity`: events kept for `events`; `follower_queue`: per-follower backlog before
    /// it starts losing messages.
    pub fn new(capacity: usize, follower_queue: usize) -> Self {
        let (live, _) = broadcast::channel(follower_queue.max(1));
        EventHub {
            recent: Mutex::new(VecDeque::with_capacity(capacity.min(1 << 16))),
            capacity,
            live,
            received: Default::default(),
            decode_errors: AtomicU64::new(0),
        }
    }

    /// Publish a batch drained from the ring buffer (one lock for the whole batch). Empties
    /// `batch` and leaves its capacity to the caller for the next one.
    pub fn publish(&self, batch: &mut Vec<Arc<Event>>) {
        for ev in batch.iter() {
            self.received[ev.kind().index()].fetch_add(1, Ordering::Relaxed);
        }
        if self.live.receiver_count() > 0 {
            for ev in batch.iter() {
                // Err only means nobody is listening any more.
                let _ = self.live.send(ev.clone());
            }
        }
        if self.capacity == 0 {
            batch.clear();
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for ev in batch.drain(..) {
            if recent.len() == self.capacity {
                recent.pop_front();
            }
            recent.push_back(ev);
        }
    }

    pub fn count_decode_error(&self) {
        self.decode_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The most recent matching events, oldest first, at most `limit`.
    pub fn recent(&self, filter: EventFilter, limit: usize) -> Vec<Arc<Event>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Arc<Event>> = recent
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// The most recent events of one cgroup, oldest first, at most `limit`.
    pub fn recent_of_cgroup(&self, cgroup_id: u64, limit: usize) -> Vec<Arc<Event>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Arc<Event>> = recent
            .iter()
            .rev()
            .filter(|e| e.cgroup_id == cgroup_id)
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    pub fn received(&self, kind: Kind) -> u64 {
        self.received[kind.index()].load(Ordering::Relaxed)
    }

    pub fn decode_errors(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn followers(&self) -> usize {
        self.live.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventDetail, ExitDetail, ForkDetail};

    fn ev(pid: u32, fork: bool) -> Arc<Event> {
        let detail = if fork {
            EventDetail::Fork(ForkDetail { parent_tid: 1 })
        } else {
            EventDetail::Exit(ExitDetail {
                exit_code: Some(0),
                signal: None,
                core_dumped: false,
            })
        };
        Arc::new(Event {
            ts_boot_ns: pid as u64,
            ..Event::new(pid, 1, detail)
        })
    }

    #[test]
    fn recent_is_bounded_filtered_and_oldest_first() {
        let hub = EventHub::new(3, 8);
        hub.publish(&mut (1..=5).map(|p| ev(p, p % 2 == 0)).collect());
        let all: Vec<u32> = hub
            .recent(EventFilter::default(), 10)
            .iter()
            .map(|e| e.pid)
            .collect();
        assert_eq!(all, [3, 4, 5]);
        let forks = hub.recent(
            EventFilter {
                kind: Some(Kind::Fork),
                pid: None,
            },
            10,
        );
        assert_eq!(forks.iter().map(|e| e.pid).collect::<Vec<_>>(), [4]);
        let last = hub.recent(EventFilter::default(), 1);
        assert_eq!(last[0].pid, 5);
        assert_eq!(hub.received(Kind::Fork), 2);
        assert_eq!(hub.received(Kind::Exit), 3);
    }

    #[tokio::test]
    async fn slow_follower_is_told_what_it_lost() {
        let hub = EventHub::new(0, 2);
        let mut rx = hub.subscribe();
        hub.publish(&mut (1..=5).map(|p| ev(p, true)).collect());
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 3),
            other => panic!("expected lag, got {other:?}"),
        }
        assert_eq!(rx.recv().await.unwrap().pid, 4);
    }
}
