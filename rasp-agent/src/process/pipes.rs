//! Who feeds whom through a pipe. Exec records carry the inode of each standard descriptor;
//! a pipe's two ends share it. A process whose exec put pipe P on its stdout is P's writer;
//! a shell that starts with P on its stdin reads what that writer prints (`curl … | sh`,
//! `base64 -d | bash`, `nc -l 4444 | sh`). The two execs of a pipeline race: when the
//! reader comes first, its exec waits here (bounded, briefly) and is handed back when the
//! writer appears, so the rules that look at the writer can judge it then.
//!
//! A writer whose pipe no exec takes as stdin is read by its parent itself: a command
//! substitution (`$(curl …)`). The parent's next children are told which program that was
//! (`bash -c "$(curl …)"`, `env -i sh -c "$(wget -qO- …)"`): `substituted_from`.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::events::{Event, Peer};

/// Pipes whose writer is remembered; the oldest are forgotten first.
const MAX_WRITERS: usize = 8192;
/// Readers waiting for their writer, and for how long.
const MAX_READERS: usize = 1024;
const READER_WAIT: Duration = Duration::from_secs(10);
/// Unread pipes (a substitution's, or a reader not seen yet) remembered.
const MAX_SUBSTITUTIONS: usize = 4096;
/// How long after a substituted writer's exec its parent's children are linked to it: the
/// download and the exec that runs it follow each other at once.
pub const SUBSTITUTION_WINDOW: Duration = Duration::from_secs(10);

/// A pipe's writer: the process (pid, start) whose exec had it on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writer {
    pub pid: u32,
    pub start_ns: u64,
}

#[derive(Default)]
pub struct PipeTable {
    writers: HashMap<u64, Writer>,
    writer_order: VecDeque<u64>,
    readers: HashMap<u64, (Arc<Event>, Instant)>,
    reader_order: VecDeque<u64>,
    /// Pipes whose writer exec'd with no reader: the writer, and when.
    unread: HashMap<u64, Unread>,
    unread_order: VecDeque<u64>,
    /// By process: the latest unread pipe written by a child (or grandchild: a pipeline
    /// inside a substitution runs in a subshell) of it.
    latest_unread: HashMap<u32, u64>,
}

struct Unread {
    writer: Peer,
    at: Instant,
    /// The writer's parent and grandparent (0: unknown), the keys in `latest_unread`.
    readers: [u32; 2],
    /// An exec took the pipe as stdin after all (kept until evicted, so that
    /// `latest_unread` is cleaned with it).
    read: bool,
}

impl PipeTable {
    pub fn new() -> Self {
        PipeTable::default()
    }

    /// The writer of pipe `ino`, if its exec was seen.
    pub fn writer(&self, ino: u64) -> Option<Writer> {
        self.writers.get(&ino).copied()
    }

    /// Pipe `ino` is the stdout of a process that just exec'd: it is the writer. Returns the
    /// exec of a reader that was waiting for it.
    pub fn set_writer(&mut self, ino: u64, writer: Writer) -> Option<Arc<Event>> {
        if self.writers.insert(ino, writer).is_none() {
            self.writer_order.push_back(ino);
            while self.writer_order.len() > MAX_WRITERS {
                if let Some(old) = self.writer_order.pop_front() {
                    self.writers.remove(&old);
                }
            }
        }
        let (reader, since) = self.readers.remove(&ino)?;
        (since.elapsed() < READER_WAIT).then_some(reader)
    }

    /// A reader's exec (stdin pipe `ino`) whose writer is not known yet: kept until
    /// `set_writer` for that pipe, or until it is too old or crowded out.
    pub fn wait_for_writer(&mut self, ino: u64, reader: Arc<Event>, now: Instant) {
        if self.readers.insert(ino, (reader, now)).is_none() {
            self.reader_order.push_back(ino);
        }
        while self.reader_order.len() > MAX_READERS
            || self
                .reader_order
                .front()
                .and_then(|i| self.readers.get(i))
                .is_some_and(|(_, t)| now.duration_since(*t) >= READER_WAIT)
        {
            match self.reader_order.pop_front() {
                Some(old) => {
                    self.readers.remove(&old);
                }
                None => break,
            }
        }
    }

    /// A child of `parent` (a grandchild of `grandparent`, 0 if unknown) just exec'd with
    /// pipe `ino` on its stdout and no reader waiting for it: until an exec takes `ino` as
    /// stdin, the parent (or, for a pipeline in a substitution, the grandparent) may be
    /// reading it itself.
    pub fn note_unread(
        &mut self,
        parent: u32,
        grandparent: u32,
        ino: u64,
        writer: Peer,
        now: Instant,
    ) {
        let readers = [parent, grandparent];
        let entry = Unread {
            writer,
            at: now,
            readers,
            read: false,
        };
        if self.unread.insert(ino, entry).is_none() {
            self.unread_order.push_back(ino);
        }
        for r in readers.into_iter().filter(|r| *r != 0) {
            self.latest_unread.insert(r, ino);
        }
        while self.unread_order.len() > MAX_SUBSTITUTIONS {
            let Some(old) = self.unread_order.pop_front() else {
                break;
            };
            if let Some(gone) = self.unread.remove(&old) {
                for r in gone.readers {
                    if self.latest_unread.get(&r) == Some(&old) {
                        self.latest_unread.remove(&r);
                    }
                }
            }
        }
    }

    /// An exec took pipe `ino` as stdin: a pipeline, not a substitution.
    pub fn note_read(&mut self, ino: u64) {
        if let Some(u) = self.unread.get_mut(&ino) {
            u.read = true;
        }
    }

    /// The writer whose output `process` read itself shortly before `now`, if any.
    pub fn substituted_for(&self, process: u32, now: Instant) -> Option<&Peer> {
        let ino = self.latest_unread.get(&process)?;
        self.unread
            .get(ino)
            .filter(|u| !u.read && now.saturating_duration_since(u.at) < SUBSTITUTION_WINDOW)
            .map(|u| &u.writer)
    }

    pub fn len(&self) -> (usize, usize) {
        (self.writers.len(), self.readers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventDetail, ExitDetail};

    fn event(pid: u32) -> Arc<Event> {
        let exit = EventDetail::Exit(ExitDetail {
            exit_code: Some(0),
            signal: None,
            core_dumped: false,
        });
        Arc::new(Event {
            comm: "sh".into(),
            ..Event::new(pid, 1, exit)
        })
    }

    #[test]
    fn a_reader_waits_for_its_writer_and_is_handed_back_once() {
        let mut t = PipeTable::new();
        let w = Writer {
            pid: 10,
            start_ns: 5,
        };
        assert_eq!(t.set_writer(7, w), None);
        assert_eq!(t.writer(7), Some(w));
        t.wait_for_writer(9, event(11), Instant::now());
        let back = t.set_writer(
            9,
            Writer {
                pid: 12,
                start_ns: 6,
            },
        );
        assert_eq!(back.map(|e| e.pid), Some(11));
        assert!(t
            .set_writer(
                9,
                Writer {
                    pid: 12,
                    start_ns: 6
                }
            )
            .is_none());
    }

    #[test]
    fn waiting_readers_are_bounded_and_expire() {
        let mut t = PipeTable::new();
        let start = Instant::now();
        for i in 0..(MAX_READERS as u64 + 10) {
            t.wait_for_writer(i, event(i as u32), start);
        }
        assert_eq!(t.len().1, MAX_READERS);
        t.wait_for_writer(
            1 << 40,
            event(1),
            start + READER_WAIT + Duration::from_secs(1),
        );
        assert_eq!(t.len().1, 1, "the expired ones went");
    }

    fn peer(pid: u32, exe: &str) -> Peer {
        Peer {
            pid,
            exe: Some(exe.into()),
            argv: crate::events::Argv::new(&[exe.to_string()]),
        }
    }

    #[test]
    fn a_substitution_is_linked_to_the_readers_next_children_and_a_pipeline_is_not() {
        let mut t = PipeTable::new();
        let now = Instant::now();
        // `bash -c "$(curl …)"` in shell 100 (child of 1): curl writes pipe 7, nobody execs
        // with it on stdin.
        t.note_unread(100, 1, 7, peer(101, "/usr/bin/curl"), now);
        let linked = t.substituted_for(100, now + Duration::from_millis(5));
        assert_eq!(linked.map(|p| p.pid), Some(101));
        // Too late: not linked.
        assert!(t.substituted_for(100, now + SUBSTITUTION_WINDOW).is_none());
        // `curl … | sh`: the reader's exec takes pipe 8 as stdin.
        t.note_unread(200, 1, 8, peer(201, "/usr/bin/curl"), now);
        t.note_read(8);
        assert!(t.substituted_for(200, now).is_none());
        // A pipeline inside a substitution (`$(echo … | base64 -d)`) runs in a subshell
        // (300, child of 100): the shell that started the subshell reads it.
        t.note_unread(300, 100, 9, peer(301, "/usr/bin/base64"), now);
        assert_eq!(t.substituted_for(100, now).map(|p| p.pid), Some(301));
        assert_eq!(t.substituted_for(300, now).map(|p| p.pid), Some(301));
    }

    #[test]
    fn unread_pipes_are_bounded() {
        let mut t = PipeTable::new();
        let now = Instant::now();
        for i in 0..(MAX_SUBSTITUTIONS as u64 * 2) {
            t.note_unread(i as u32 + 10, 1, i, peer(1, "/usr/bin/curl"), now);
        }
        assert_eq!(t.unread.len(), MAX_SUBSTITUTIONS);
        assert!(t.latest_unread.len() <= MAX_SUBSTITUTIONS + 1);
        assert!(
            t.substituted_for(10, now).is_none(),
            "the oldest is forgotten"
        );
    }
}
