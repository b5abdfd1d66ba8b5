//! The journal read as a queue. A sink's place in it is a `Position`: which journal file (its
//! inode, checked against the id of the file's first detection, since inode numbers are reused
//! once a rotated file is deleted) and the byte offset just past the last line the sink has
//! delivered. Rotation renames `detections.jsonl` to `.1`, `.1` to `.2` …, so a file keeps its
//! inode while it moves: the reader follows it by inode, finishes it, and goes on with the next
//! newer one. The journal's own retention (`--journal-max-bytes` × (`--journal-keep` + 1)) is
//! the bound on what a sink can fall behind; a position the journal has rotated away is a
//! counted gap, never a silent one.
//!
//! Only whole lines are handed out: the writer appends a batch in one `write`, and a reader
//! that catches it half-way waits for the rest.

use std::{
    fs::{self, File},
    io,
    os::unix::fs::{FileExt, MetadataExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::store::journal::FILE_NAME;

/// First read size; doubled for a line longer than that, up to `MAX_LINE`.
const CHUNK: usize = 256 * 1024;
/// A journal line longer than this is skipped (and counted): no detection is that large.
const MAX_LINE: usize = 32 << 20;
/// Files examined when looking for a position (the journal keeps `keep` + 1).
const MAX_FILES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("export position file {}: {why}", path.display())]
    Position { path: PathBuf, why: String },
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> TailError {
    TailError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a sink is in the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Inode of the journal file (it keeps it through renames).
    pub inode: u64,
    /// Byte offset just past the last line delivered.
    pub offset: u64,
    /// Id of the detection on the file's first line: tells a file from a later one that got
    /// the same inode number. Empty when the file had no readable first line yet.
    #[serde(default)]
    pub first_id: String,
}

/// A whole journal line and the position just past it.
#[derive(Debug)]
pub struct Line {
    pub bytes: Vec<u8>,
    pub end: Position,
}

/// What one `read` found.
#[derive(Debug, Default)]
pub struct Batch {
    pub lines: Vec<Line>,
    /// The position had been rotated out of the journal before it was read: what it held
    /// after the offset is lost to this sink. Reading went on at the oldest file kept.
    pub gaps: u64,
    /// Lines longer than `MAX_LINE`, skipped.
    pub oversized: u64,
    /// Where reading stands after this batch (its last line's end, or further when the tail
    /// of the batch was skipped or a file was finished).
    pub end: Option<Position>,
}

/// Where a sink with no saved position starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// After everything journaled so far: a new sink gets new detections, not the history.
    End,
    /// At the oldest line kept: nothing the journal still holds is missed.
    Oldest,
}

/// The open file a tail is reading, and where.
struct Reading {
    file: File,
    inode: u64,
    first_id: String,
    offset: u64,
}

pub struct JournalTail {
    dir: PathBuf,
    reading: Option<Reading>,
    /// Where to resume when nothing is open (from the position file, or after a gap).
    resume: Option<Position>,
    /// The file was found rotated at end of file: read it once more, then move on.
    finishing: bool,
    buf: Vec<u8>,
}

impl JournalTail {
    /// A reader of the journal in `dir`, resuming at `from` (a saved position) or, when
    /// there is none, at `start` — taken now, not at the first read: a sink started before
    /// the first detection is written must not skip it.
    pub fn new(dir: impl Into<PathBuf>, from: Option<Position>, start: Start) -> Self {
        let dir = dir.into();
        let resume = match (from, start) {
            (Some(p), _) => Some(p),
            (None, Start::Oldest) => None,
            (None, Start::End) => {
                let current = dir.join(FILE_NAME);
                match fs::metadata(&current) {
                    Ok(m) => Some(Position {
                        inode: m.ino(),
                        offset: m.len(),
                        first_id: first_id_at(&current).unwrap_or_default(),
                    }),
                    // No journal yet: everything it will hold is new.
                    Err(_) => None,
                }
            }
        };
        JournalTail {
            dir,
            reading: None,
            resume,
            finishing: false,
            buf: Vec::new(),
        }
    }

    /// The position just past what has been handed out.
    pub fn position(&self) -> Option<Position> {
        match &self.reading {
            Some(r) => Some(Position {
                inode: r.inode,
                offset: r.offset,
                first_id: r.first_id.clone(),
            }),
            None => self.resume.clone(),
        }
    }

    /// Up to `max_lines` whole lines (at least one if any is there), or none when the
    /// journal has nothing past the position yet.
    pub fn read(&mut self, max_lines: usize) -> Result<Batch, TailError> {
        let mut batch = Batch::default();
        // Each turn either hands out lines, opens a file or moves to the next one: bounded
        // by the number of files, plus one pass to finish a rotated one.
        for _ in 0..MAX_FILES * 2 + 2 {
            if self.reading.is_none() && !self.open(&mut batch)? {
                break;
            }
            let Some(r) = self.reading.as_mut() else {
                break;
            };
            let got = read_lines(&r.file, &mut r.offset, max_lines, &mut self.buf, &mut batch)
                .map_err(|e| io_err("reading", &self.dir.join(FILE_NAME), e))?;
            if r.first_id.is_empty() {
                r.first_id = first_id(&r.file).unwrap_or_default();
            }
            if got {
                self.finishing = false;
                break;
            }
            // End of file. The current journal file: wait for more. A rotated one: it will
            // not grow any more once it is seen rotated, so read it once more (a batch may
            // have landed between the last read and the rename), then go on.
            let inode = r.inode;
            if self.current_inode() == Some(inode) {
                self.finishing = false;
                break;
            }
            if !self.finishing {
                self.finishing = true;
                continue;
            }
            self.finishing = false;
            let next = self.next_newer(inode);
            self.reading = None;
            self.resume = None;
            match next {
                Some(path) => self.open_path(&path, 0)?,
                None => {
                    // The file was deleted while we read it: whatever sat between it and the
                    // oldest file kept is gone.
                    batch.gaps += 1;
                    self.open_oldest()?;
                }
            }
        }
        batch.end = self.position();
        // Lines of one batch come from one file: reading stops at the first that yields any.
        if let Some(end) = &batch.end {
            for line in &mut batch.lines {
                line.end.inode = end.inode;
                line.end.first_id.clone_from(&end.first_id);
            }
        }
        Ok(batch)
    }

    /// Open the file to resume in; `false` when the journal has no file yet.
    fn open(&mut self, batch: &mut Batch) -> Result<bool, TailError> {
        if let Some(pos) = self.resume.clone() {
            let found = self.files().into_iter().find(|(path, m)| {
                m.ino() == pos.inode
                    && m.len() >= pos.offset
                    && (pos.first_id.is_empty()
                        || first_id_at(path).as_deref() == Some(&pos.first_id))
            });
            return match found {
                Some((path, _)) => {
                    self.open_path(&path, pos.offset)?;
                    Ok(self.reading.is_some())
                }
                None => {
                    tracing::warn!(
                        inode = pos.inode,
                        offset = pos.offset,
                        dir = %self.dir.display(),
                        "export position no longer in the journal (rotated away while the sink \
                         was behind, or the journal was removed): going on from the oldest file kept"
                    );
                    batch.gaps += 1;
                    self.resume = None;
                    self.open_oldest()
                }
            };
        }
        // No position: `new` turned `Start::End` into one, so this is "from the oldest".
        self.open_oldest()
    }

    fn open_oldest(&mut self) -> Result<bool, TailError> {
        match self.files().pop() {
            Some((path, _)) => {
                self.open_path(&path, 0)?;
                Ok(self.reading.is_some())
            }
            None => Ok(false),
        }
    }

    /// Open `path` at `offset`. A file that vanished in between is skipped (`reading`
    /// stays empty and the next `read` looks again).
    fn open_path(&mut self, path: &Path, offset: u64) -> Result<(), TailError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("opening", path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| io_err("reading metadata of", path, e))?;
        let first_id = first_id(&file).unwrap_or_default();
        self.reading = Some(Reading {
            file,
            inode: meta.ino(),
            first_id,
            offset: offset.min(meta.len()),
        });
        Ok(())
    }

    fn files(&self) -> Vec<(PathBuf, fs::Metadata)> {
        journal_files(&self.dir)
    }

    fn current_inode(&self) -> Option<u64> {
        fs::metadata(self.dir.join(FILE_NAME)).ok().map(|m| m.ino())
    }

    /// The file written after the one with `inode` (`None` if that one is gone).
    fn next_newer(&self, inode: u64) -> Option<PathBuf> {
        let files = self.files();
        let i = files.iter().position(|(_, m)| m.ino() == inode)?;
        if i == 0 {
            // It is the current file again (renamed back? never): read on from it.
            return Some(files[0].0.clone());
        }
        Some(files[i - 1].0.clone())
    }
}

/// Bytes journaled in `dir` past `pos`: what a sink at `pos` still has to deliver (all of
/// the journal if `pos` is not in it any more).
pub fn lag_bytes(dir: &Path, pos: &Position) -> u64 {
    let files = journal_files(dir);
    let Some(i) = files.iter().position(|(_, m)| m.ino() == pos.inode) else {
        return files.iter().map(|(_, m)| m.len()).sum();
    };
    let own = files[i].1.len().saturating_sub(pos.offset);
    own + files[..i].iter().map(|(_, m)| m.len()).sum::<u64>()
}

/// The journal files, newest first: the current one, then `.1`, `.2` … (by number; a crash
/// during rotation can leave a gap in the numbering).
fn journal_files(dir: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let current = dir.join(FILE_NAME);
    if let Ok(m) = fs::metadata(&current) {
        out.push((current, m));
    }
    let prefix = format!("{FILE_NAME}.");
    let mut numbered: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((n, e.path()))
        })
        .take(MAX_FILES)
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    for (_, path) in numbered {
        if let Ok(m) = fs::metadata(&path) {
            out.push((path, m));
        }
    }
    out
}

/// Read whole lines from `offset` into `batch`; `true` if any line (or skipped line) moved
/// the offset.
fn read_lines(
    file: &File,
    offset: &mut u64,
    max_lines: usize,
    buf: &mut Vec<u8>,
    batch: &mut Batch,
) -> io::Result<bool> {
    let mut want = CHUNK;
    loop {
        buf.resize(want, 0);
        let n = read_at_most(file, buf, *offset)?;
        let data = &buf[..n];
        let Some(last_nl) = data.iter().rposition(|&b| b == b'\n') else {
            if n < want {
                // A partial line at the end: the rest is still being written.
                return Ok(false);
            }
            if want >= MAX_LINE {
                // A line this long is not a detection: skip to its end.
                batch.oversized += 1;
                return skip_line(file, offset, buf);
            }
            want *= 2;
            continue;
        };
        let mut start = 0;
        let mut moved = false;
        for line in data[..=last_nl].split_inclusive(|&b| b == b'\n') {
            if batch.lines.len() >= max_lines.max(1) {
                break;
            }
            start += line.len();
            moved = true;
            let text = &line[..line.len() - 1];
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            batch.lines.push(Line {
                bytes: text.to_vec(),
                end: Position {
                    inode: 0,
                    offset: *offset + start as u64,
                    first_id: String::new(),
                },
            });
        }
        *offset += start as u64;
        if buf.capacity() > 4 * CHUNK {
            buf.truncate(CHUNK);
            buf.shrink_to(CHUNK);
        }
        return Ok(moved);
    }
}

/// Move `offset` past the next newline (an oversized line); `true` if it moved.
fn skip_line(file: &File, offset: &mut u64, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.resize(CHUNK, 0);
    loop {
        let n = read_at_most(file, buf, *offset)?;
        if n == 0 {
            return Ok(false);
        }
        if let Some(nl) = buf[..n].iter().position(|&b| b == b'\n') {
            *offset += nl as u64 + 1;
            return Ok(true);
        }
        *offset += n as u64;
    }
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// The id of the detection on the file's first line, if that line is whole and readable.
fn first_id(file: &File) -> Option<String> {
    let mut head = vec![0u8; 64 * 1024];
    let n = read_at_most(file, &mut head, 0).ok()?;
    let nl = head[..n].iter().position(|&b| b == b'\n')?;
    serde_json::from_slice::<IdOnly>(&head[..nl])
        .ok()
        .map(|d| d.id)
}

fn first_id_at(path: &Path) -> Option<String> {
    first_id(&File::open(path).ok()?)
}

/// The saved position of one sink: `<state dir>/export/<sink>.position`, replaced
/// atomically (write a temporary file, rename over). Not fsynced on every save: after a
/// power loss a stale position means the lines after it are delivered again (at least once,
/// the idempotency key makes it harmless); a position past the end of a file cut short by
/// the crash is caught when resuming (`len >= offset`).
pub struct PositionFile {
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct SavedPosition {
    version: u32,
    #[serde(flatten)]
    position: Position,
}

impl PositionFile {
    pub fn new(path: PathBuf) -> Self {
        PositionFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved position; `None` if there is none yet. A file that does not parse is an
    /// error (the caller decides where to start instead).
    pub fn load(&self) -> Result<Option<Position>, TailError> {
        let text = match fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &self.path, e)),
        };
        let saved: SavedPosition =
            serde_json::from_slice(&text).map_err(|e| TailError::Position {
                path: self.path.clone(),
                why: format!("does not parse ({e})"),
            })?;
        if saved.version != 1 {
            return Err(TailError::Position {
                path: self.path.clone(),
                why: format!("version {} is not one this agent knows (1)", saved.version),
            });
        }
        Ok(Some(saved.position))
    }

    pub fn save(&self, position: &Position) -> Result<(), TailError> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.path.with_extension("position.tmp");
        let saved = SavedPosition {
            version: 1,
            position: position.clone(),
        };
        let text = serde_json::to_vec(&saved).map_err(|e| TailError::Position {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err("creating", &tmp, e))?;
        io::Write::write_all(&mut f, &text).map_err(|e| io_err("writing", &tmp, e))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(|e| io_err("replacing", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::store::{journal::Journal, tests::sample};

    fn append(j: &mut Journal, range: std::ops::Range<u64>) {
        let batch: Vec<_> = range.map(|i| Arc::new(sample(i, "r", "/bin/sh"))).collect();
        let a = j.append(&batch);
        assert_eq!(a.lost, 0, "{:?}", a.errors);
    }

    fn ids(batch: &Batch) -> Vec<String> {
        batch
            .lines
            .iter()
            .map(|l| {
                serde_json::from_slice::<IdOnly>(&l.bytes)
                    .expect("a detection line")
                    .id
            })
            .collect()
    }

    fn read_all(tail: &mut JournalTail) -> (Vec<String>, u64) {
        let mut out = Vec::new();
        let mut gaps = 0;
        loop {
            let b = tail.read(7).expect("reads");
            gaps += b.gaps;
            if b.lines.is_empty() {
                return (out, gaps);
            }
            out.extend(ids(&b));
        }
    }

    fn want(range: std::ops::Range<u64>) -> Vec<String> {
        range.map(|i| format!("id-{i}")).collect()
    }

    fn line_len() -> u64 {
        serde_json::to_vec(
            &crate::mask::shared()
                .to_masked_json(&sample(10, "r", "/bin/sh"))
                .expect("json"),
        )
        .expect("json")
        .len() as u64
            + 1
    }

    #[test]
    fn follows_the_current_file_and_its_rotations_by_inode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        // About ten lines a file, four rotated files kept.
        let mut j =
            Journal::open(dir, line_len() * 10 + 30, 4, Duration::from_secs(1)).expect("journal");
        append(&mut j, 0..3);
        let mut tail = JournalTail::new(dir, None, Start::End);
        assert_eq!(
            read_all(&mut tail),
            (vec![], 0),
            "starts after what is there"
        );
        append(&mut j, 3..5);
        assert_eq!(read_all(&mut tail), (want(3..5), 0));
        // Three rotations while the reader is idle: it finishes its file (now `.3`), then
        // `.2`, `.1`, the current one, in order, nothing twice.
        append(&mut j, 10..40);
        assert_eq!(read_all(&mut tail), (want(10..40), 0));
        append(&mut j, 40..42);
        assert_eq!(read_all(&mut tail), (want(40..42), 0));
    }

    #[test]
    fn a_saved_position_resumes_exactly_and_a_rotated_away_one_is_a_gap() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let mut j =
            Journal::open(dir, line_len() * 10 + 30, 1, Duration::from_secs(1)).expect("journal");
        append(&mut j, 0..5);
        let mut tail = JournalTail::new(dir, None, Start::Oldest);
        let b = tail.read(3).expect("reads");
        assert_eq!(ids(&b), want(0..3));
        let saved = PositionFile::new(dir.join("sink.position"));
        saved
            .save(&b.end.clone().expect("position"))
            .expect("saves");
        drop(tail);

        // Restart: resumes after line 2, even after the file moved to `.1`.
        append(&mut j, 5..15);
        let pos = saved.load().expect("loads").expect("a position");
        let mut tail = JournalTail::new(dir, Some(pos.clone()), Start::End);
        assert_eq!(read_all(&mut tail), (want(3..15), 0));

        // Far behind: two more rotations with keep = 1 delete the position's file.
        append(&mut j, 15..40);
        let mut tail = JournalTail::new(dir, Some(pos), Start::End);
        let (got, gaps) = read_all(&mut tail);
        assert_eq!(gaps, 1, "{got:?}");
        assert_eq!(got.last().map(String::as_str), Some("id-39"));
        assert!(!got.contains(&"id-3".to_string()));
    }

    #[test]
    fn a_half_written_line_waits_for_its_end() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let mut j = Journal::open(dir, 64 << 20, 1, Duration::from_secs(1)).expect("journal");
        append(&mut j, 0..2);
        let mut tail = JournalTail::new(dir, None, Start::Oldest);
        assert_eq!(read_all(&mut tail).0, want(0..2));
        let path = dir.join(FILE_NAME);
        let line = serde_json::to_vec(&sample(2, "r", "/bin/sh")).expect("json");
        let f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        io::Write::write_all(&mut &f, &line[..20]).expect("half");
        assert_eq!(read_all(&mut tail).0, Vec::<String>::new());
        io::Write::write_all(&mut &f, &line[20..]).expect("rest");
        io::Write::write_all(&mut &f, b"\n").expect("newline");
        assert_eq!(read_all(&mut tail).0, want(2..3));
    }

    #[test]
    fn a_position_file_that_does_not_parse_says_so() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = PositionFile::new(tmp.path().join("x.position"));
        assert_eq!(p.load().expect("missing is fine"), None);
        fs::write(p.path(), b"{nope").expect("write");
        let e = p.load().expect_err("garbage").to_string();
        assert!(
            e.contains("x.position") && e.contains("does not parse"),
            "{e}"
        );
        fs::write(p.path(), br#"{"version":9,"inode":1,"offset":2}"#).expect("write");
        let e = p.load().expect_err("future version").to_string();
        assert!(e.contains("version 9"), "{e}");
    }
}
