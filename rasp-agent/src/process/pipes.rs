//! Who feeds whom through a pipe. Exec records carry the inode of each standard descriptor;
//! a pipe's two ends share it. A process whose exec put pipe P on its stdout is P's writer;
//! a shell that starts with P on its stdin reads what that writer prints (`curl … | sh`,
//! `base64 -d | bash`, `nc -l 4444 | sh`). The two execs of a pipeline race: when the
//! reader comes first, its exec waits here (bounded, briefly) and is handed back when the
//! writer appears, so the rules that look at the writer can judge it then.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::events::Event;

/// Pipes whose writer is remembered; the oldest are forgotten first.
const MAX_WRITERS: usize = 8192;
/// Readers waiting for their writer, and for how long.
const MAX_READERS: usize = 1024;
const READER_WAIT: Duration = Duration::from_secs(10);

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
}
