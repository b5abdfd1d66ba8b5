//! What the event pipeline tells the uprobe task: a file mapped executable for the first
//! time (the kernel's `LIB_FILE_NEW`), an exec of a new executable, and the forks, execs
//! and exits of processes that map a target (so an attachment is dropped when its last
//! process is gone, and never while a pre-forked child still uses it). The pipeline only
//! `offer`s: a full queue drops the sighting and counts it, never the ring buffer's events;
//! the slow safety-net rescan (`daemon`) catches what a dropped sighting missed.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
        RwLock,
    },
};

use super::FileId;
use crate::events::{Event, EventDetail};

/// Sightings waiting for the uprobe task.
pub const FEED_CAPACITY: usize = 8192;

/// One thing the uprobe task must look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sighting {
    /// `pid` mapped `file` executable (`path` as it sees it); `ts_boot_ns`: when.
    Mapped {
        pid: u32,
        path: PathBuf,
        file: FileId,
        ts_boot_ns: u64,
    },
    /// `pid` exec'd: its old mappings are gone; `exe` is set when the kernel had not
    /// reported that executable before (it may be a statically linked target).
    Exec {
        pid: u32,
        exe: Option<PathBuf>,
        ts_boot_ns: u64,
    },
    Fork {
        parent: u32,
        child: u32,
    },
    Exit {
        pid: u32,
    },
}

/// The pipeline's side of the queue.
pub struct Feed {
    tx: SyncSender<Sighting>,
    /// Processes that map a target, mirrored from the registry by the uprobe task: only
    /// their forks, execs and exits are forwarded (an exec storm costs a set lookup each).
    tracked: RwLock<HashSet<u32>>,
    dropped: AtomicU64,
    sent: AtomicU64,
}

impl Feed {
    pub fn new() -> (Feed, Receiver<Sighting>) {
        let (tx, rx) = mpsc::sync_channel(FEED_CAPACITY);
        (
            Feed {
                tx,
                tracked: RwLock::new(HashSet::new()),
                dropped: AtomicU64::new(0),
                sent: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// Forward what `ev` means for uprobe targets, if anything. Never blocks.
    pub fn observe(&self, ev: &Event) {
        let sighting = match &ev.detail {
            EventDetail::LibraryLoad(d) if d.new_file && d.ino != 0 => match &d.path {
                Some(path) => Sighting::Mapped {
                    pid: ev.pid,
                    path: PathBuf::from(path),
                    file: FileId::from_kernel_dev(d.dev, d.ino),
                    ts_boot_ns: ev.ts_boot_ns,
                },
                None => return,
            },
            EventDetail::Exec(d) => {
                let exe = d.exe.as_deref().filter(|_| d.exe_new).map(PathBuf::from);
                if exe.is_none() && !self.is_tracked(ev.pid) {
                    return;
                }
                Sighting::Exec {
                    pid: ev.pid,
                    exe,
                    ts_boot_ns: ev.ts_boot_ns,
                }
            }
            EventDetail::Fork(_) if self.is_tracked(ev.ppid) => Sighting::Fork {
                parent: ev.ppid,
                child: ev.pid,
            },
            EventDetail::Exit(_) if self.is_tracked(ev.pid) => Sighting::Exit { pid: ev.pid },
            _ => return,
        };
        self.offer(sighting);
    }

    fn offer(&self, sighting: Sighting) {
        match self.tx.try_send(sighting) {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn is_tracked(&self, pid: u32) -> bool {
        crate::read(&self.tracked).contains(&pid)
    }

    /// The uprobe task's mirror of the registry's processes.
    pub fn set_tracked(&self, pids: HashSet<u32>) {
        *crate::write(&self.tracked) = pids;
    }

    /// (sightings queued, sightings dropped on a full queue) since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ExecDetail, ExitDetail, ForkDetail, LibraryLoadDetail};

    fn ev(pid: u32, ppid: u32, detail: EventDetail) -> Event {
        Event {
            ts_boot_ns: 5,
            comm: "python3".into(),
            cgroup_id: 1,
            ..Event::new(pid, ppid, detail)
        }
    }

    #[test]
    fn forwards_new_files_and_only_tracked_lifecycles() {
        let (feed, rx) = Feed::new();
        let lib = |new_file| {
            EventDetail::LibraryLoad(LibraryLoadDetail {
                path: Some("/venv/psycopg2_binary.libs/libpq-a1.so.5.17".into()),
                incomplete: vec![],
                dev: (254 << 20) | 1,
                ino: 42,
                new_file,
            })
        };
        feed.observe(&ev(10, 1, lib(false)));
        feed.observe(&ev(10, 1, lib(true)));
        let exit = || {
            EventDetail::Exit(ExitDetail {
                exit_code: Some(0),
                signal: None,
                core_dumped: false,
            })
        };
        feed.observe(&ev(10, 1, exit()));
        feed.set_tracked([10].into_iter().collect());
        feed.observe(&ev(
            11,
            10,
            EventDetail::Fork(ForkDetail { parent_tid: 10 }),
        ));
        feed.observe(&ev(
            12,
            99,
            EventDetail::Fork(ForkDetail { parent_tid: 99 }),
        ));
        let exec = |exe_new| {
            EventDetail::Exec(ExecDetail {
                exe: Some("/srv/static-server".into()),
                filename: "x".into(),
                argv: Default::default(),
                argv_truncated: false,
                cwd: None,
                refused: false,
                incomplete: vec![],
                exe_new,
                ..ExecDetail::default()
            })
        };
        feed.observe(&ev(13, 1, exec(false)));
        feed.observe(&ev(14, 1, exec(true)));
        feed.observe(&ev(10, 1, exit()));
        let got: Vec<Sighting> = rx.try_iter().collect();
        assert_eq!(
            got,
            vec![
                Sighting::Mapped {
                    pid: 10,
                    path: "/venv/psycopg2_binary.libs/libpq-a1.so.5.17".into(),
                    file: FileId {
                        major: 254,
                        minor: 1,
                        inode: 42
                    },
                    ts_boot_ns: 5,
                },
                Sighting::Fork {
                    parent: 10,
                    child: 11
                },
                Sighting::Exec {
                    pid: 14,
                    exe: Some("/srv/static-server".into()),
                    ts_boot_ns: 5
                },
                Sighting::Exit { pid: 10 },
            ]
        );
        assert_eq!(feed.counts(), (4, 0));
    }
}
