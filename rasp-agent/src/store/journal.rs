//! The detection journal: `detections.jsonl` in the state directory, one `Detection` per line,
//! append-only, rotated by size into `detections.jsonl.1` … `.N` (oldest deleted).
//!
//! Durability: each batch is handed to the kernel in one `write` when the batch ends (an agent
//! crash loses nothing already written), and `fsync`ed at most every `sync_interval`, so a
//! machine crash or power loss loses at most the last interval. A batch is written from our
//! own buffer instead of a `BufWriter` because a `BufWriter` hides how much of its buffer
//! reached the file: on a failed write (disk full) we cut the file back to the last whole
//! line and count exactly which detections were lost, so the file never holds a half line
//! followed by good ones.

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use super::StoreError;
use crate::detect::Detection;

pub const FILE_NAME: &str = "detections.jsonl";

/// Read size when walking a journal file backwards.
const BLOCK: u64 = 64 * 1024;

pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    /// None after a failed rotation/open; reopened on the next write.
    file: Option<File>,
    /// Bytes in the current file, all of them whole lines.
    len: u64,
    max_bytes: u64,
    keep: usize,
    sync_interval: Duration,
    /// Bytes written since the last fsync.
    dirty: bool,
    last_sync: Instant,
    buf: Vec<u8>,
    line: Vec<u8>,
}

/// What one `append` did. Errors are returned, not logged: the writer rate-limits logging.
#[derive(Debug, Default)]
pub struct Appended {
    pub written: u64,
    /// Detections that did not reach the file (write error, rotation failure).
    pub lost: u64,
    pub errors: Vec<StoreError>,
}

impl Journal {
    /// Open (create) `dir/detections.jsonl` for appending. The directory is created with mode
    /// 0700 when missing, the file is 0600 (evidence may be sensitive even masked). A torn last
    /// line left by a crash is terminated with a newline so the next line starts clean (the
    /// fragment is skipped and counted by `load_recent`).
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        keep: usize,
        sync_interval: Duration,
    ) -> Result<Self, StoreError> {
        create_dir(dir)?;
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            path: dir.join(FILE_NAME),
            file: None,
            len: 0,
            max_bytes: max_bytes.max(1),
            keep,
            sync_interval,
            dirty: false,
            last_sync: Instant::now(),
            buf: Vec::with_capacity(256 * 1024),
            line: Vec::with_capacity(4096),
        };
        journal.open_current()?;
        Ok(journal)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the current file.
    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// Append a batch, rotating first whenever the next line would push the file past
    /// `max_bytes` (a single line larger than the bound gets a file of its own). The bytes
    /// reach the kernel before this returns; fsync is separate (`sync_due`, `sync`).
    pub fn append<'a>(&mut self, batch: impl IntoIterator<Item = &'a Arc<Detection>>) -> Appended {
        let mut out = Appended::default();
        let mut buf = std::mem::take(&mut self.buf);
        let mut line = std::mem::take(&mut self.line);
        buf.clear();
        let mut lines = 0u64;
        for d in batch {
            line.clear();
            // Secrets in evidence (argv, paths) are masked before they reach the disk.
            let masked = crate::mask::shared().to_masked_json(&**d);
            if let Err(e) = masked.and_then(|v| serde_json::to_writer(&mut line, &v)) {
                out.lost += 1;
                out.errors.push(StoreError::Encode {
                    id: d.id.clone(),
                    source: e,
                });
                continue;
            }
            line.push(b'\n');
            let pending = self.len + buf.len() as u64;
            if pending > 0 && pending + line.len() as u64 > self.max_bytes {
                self.commit(&buf, lines, &mut out);
                buf.clear();
                lines = 0;
                if let Err(e) = self.rotate() {
                    out.errors.push(e);
                }
            }
            buf.extend_from_slice(&line);
            lines += 1;
        }
        self.commit(&buf, lines, &mut out);
        // Keep the buffers for the next batch unless a storm of huge lines grew them.
        buf.clear();
        if buf.capacity() > 4 << 20 {
            buf.shrink_to(256 * 1024);
        }
        self.buf = buf;
        self.line = line;
        out
    }

    /// Whether unsynced bytes are older than the sync interval.
    pub fn sync_due(&self, now: Instant) -> bool {
        self.dirty && now.duration_since(self.last_sync) >= self.sync_interval
    }

    /// fsync the current file if anything was written since the last one.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        self.last_sync = Instant::now();
        self.dirty = false;
        match &self.file {
            Some(f) => f.sync_data().map_err(|e| io_err("syncing", &self.path, e)),
            None => Ok(()),
        }
    }

    /// Write one batch's bytes; on failure cut the file back to its last whole line.
    fn commit(&mut self, bytes: &[u8], lines: u64, out: &mut Appended) {
        if lines == 0 {
            return;
        }
        if self.file.is_none() {
            if let Err(e) = self.open_current() {
                out.lost += lines;
                out.errors.push(e);
                return;
            }
        }
        let Some(file) = self.file.as_mut() else {
            out.lost += lines;
            return;
        };
        match file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                self.dirty = true;
                out.written += lines;
            }
            Err(e) => {
                out.lost += lines;
                out.errors.push(io_err("appending to", &self.path, e));
                // Shrinking works on a full disk; O_APPEND puts the next write at the new end.
                if let Err(e) = file.set_len(self.len) {
                    out.errors
                        .push(io_err("truncating torn write in", &self.path, e));
                    // Unknown length now: reopen (and re-terminate the tail) before the next write.
                    self.file = None;
                }
            }
        }
    }

    /// detections.jsonl → .1 → .2 … → .keep (deleted beyond). With keep = 0 the full file is
    /// simply deleted.
    fn rotate(&mut self) -> Result<(), StoreError> {
        if let Some(f) = self.file.take() {
            // The rotated file keeps its inode: make what it holds durable before letting go.
            if self.dirty {
                let _ = f.sync_data();
            }
        }
        self.dirty = false;
        self.len = 0;
        if self.keep == 0 {
            remove_if_exists(&self.path)?;
        } else {
            remove_if_exists(&rotated(&self.dir, self.keep))?;
            for i in (1..self.keep).rev() {
                rename_if_exists(&rotated(&self.dir, i), &rotated(&self.dir, i + 1))?;
            }
            rename_if_exists(&self.path, &rotated(&self.dir, 1))?;
        }
        self.open_current()?;
        sync_dir(&self.dir)
    }

    fn open_current(&mut self) -> Result<(), StoreError> {
        let path = &self.path;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io_err("opening", path, e))?;
        // An existing file may predate us with looser permissions.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err("setting mode 0600 on", path, e))?;
        let mut len = file
            .metadata()
            .map_err(|e| io_err("reading metadata of", path, e))?
            .len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.read_exact_at(&mut last, len - 1)
                .map_err(|e| io_err("reading", path, e))?;
            if last[0] != b'\n' {
                file.write_all(b"\n")
                    .map_err(|e| io_err("terminating torn last line of", path, e))?;
                len += 1;
                self.dirty = true;
            }
        }
        self.len = len;
        self.file = Some(file);
        Ok(())
    }
}

/// The last `limit` detections in the journal in `dir`, oldest first, and how many lines
/// were skipped because they did not parse (a torn last line after a crash, corruption).
/// Files are read backwards from the end, newest file first, only as far as needed. A missing
/// journal is empty, not an error; I/O errors on a file that exists are.
pub fn load_recent(dir: &Path, limit: usize) -> Result<(Vec<Detection>, u64), StoreError> {
    let mut out = Vec::new();
    let mut skipped = 0u64;
    if limit == 0 {
        return Ok((out, skipped));
    }
    let mut files = vec![dir.join(FILE_NAME)];
    files.extend(rotated_files(dir)?);
    for path in files {
        if out.len() >= limit {
            break;
        }
        read_backwards(&path, limit, &mut out, &mut skipped)?;
    }
    out.reverse();
    Ok((out, skipped))
}

/// `detections.jsonl.N` in `dir`, by N ascending (newest first). Listed rather than probed in
/// sequence: a crash in the middle of a rotation can leave a gap.
fn rotated_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", dir, e)),
    };
    let prefix = format!("{FILE_NAME}.");
    let mut numbered: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    Ok(numbered.into_iter().map(|(_, p)| p).collect())
}

/// Parse lines from the end of `path` into `out` (newest first) until `out` holds `limit`.
fn read_backwards(
    path: &Path,
    limit: usize,
    out: &mut Vec<Detection>,
    skipped: &mut u64,
) -> Result<(), StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("opening", path, e)),
    };
    let mut pos = file
        .metadata()
        .map_err(|e| io_err("reading metadata of", path, e))?
        .len();
    // Bytes of the file from `pos` up to the start of the last line handed out: the head of
    // a line whose beginning lies further back.
    let mut carry: Vec<u8> = Vec::new();
    while pos > 0 && out.len() < limit {
        let n = BLOCK.min(pos);
        pos -= n;
        let mut block = vec![0u8; n as usize];
        file.read_exact_at(&mut block, pos)
            .map_err(|e| io_err("reading", path, e))?;
        block.extend_from_slice(&carry);
        carry = block;
        let mut end = carry.len();
        while out.len() < limit {
            let Some(nl) = carry[..end].iter().rposition(|&b| b == b'\n') else {
                break;
            };
            parse_line(&carry[nl + 1..end], out, skipped);
            end = nl;
        }
        carry.truncate(end);
    }
    if pos == 0 && out.len() < limit {
        parse_line(&carry, out, skipped);
    }
    Ok(())
}

fn parse_line(line: &[u8], out: &mut Vec<Detection>, skipped: &mut u64) {
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    match serde_json::from_slice::<Detection>(line) {
        Ok(d) => out.push(d),
        Err(_) => *skipped += 1,
    }
}

pub fn rotated(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{FILE_NAME}.{n}"))
}

/// The state directory is the agent's alone (0700), also when it existed before with a
/// looser mode (the builder's mode only applies to directories it creates): detections
/// carry command lines and paths.
fn create_dir(dir: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err("creating directory", dir, e))?;
    let mode = fs::metadata(dir)
        .map_err(|e| io_err("reading directory mode", dir, e))?
        .permissions()
        .mode()
        & 0o777;
    if mode != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err("restricting directory mode to 0700", dir, e))?;
        tracing::warn!(dir = %dir.display(), was = format!("{mode:o}"), "state directory mode restricted to 0700");
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path, e)),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> Result<(), StoreError> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("rotating", from, e)),
        _ => Ok(()),
    }
}

/// Make renames and file creation durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing directory", dir, e))
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::sample;

    fn arcs(ds: impl IntoIterator<Item = Detection>) -> Vec<Arc<Detection>> {
        ds.into_iter().map(Arc::new).collect()
    }

    fn ids(ds: &[Detection]) -> Vec<String> {
        ds.iter().map(|d| d.id.clone()).collect()
    }

    fn open(dir: &Path, max_bytes: u64, keep: usize) -> Journal {
        Journal::open(dir, max_bytes, keep, Duration::from_secs(1)).expect("journal opens")
    }

    #[test]
    fn append_then_load_round_trips_in_order() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state");
        let batch = arcs((0..50).map(|i| sample(i, "rule-a", &format!("/bin/x{i}"))));
        {
            let mut j = open(&dir, 64 << 20, 4);
            let a = j.append(&batch);
            assert_eq!((a.written, a.lost), (50, 0));
            assert!(a.errors.is_empty());
            assert!(j.sync_due(Instant::now() + Duration::from_secs(2)));
            j.sync().expect("sync");
            assert!(!j.sync_due(Instant::now() + Duration::from_secs(2)));
        }
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o600);

        // A state directory that existed with a looser mode, and a journal file someone
        // made world-readable, are restricted on open.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::set_permissions(dir.join(FILE_NAME), fs::Permissions::from_mode(0o644)).expect("chmod");
        drop(open(&dir, 64 << 20, 4));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o600);

        let (all, skipped) = load_recent(&dir, 1000).expect("loads");
        assert_eq!(skipped, 0);
        assert_eq!(all.len(), 50);
        assert_eq!(all[7], *batch[7]);
        let (last, _) = load_recent(&dir, 3).expect("loads");
        assert_eq!(ids(&last), ["id-47", "id-48", "id-49"]);
        // A missing journal is empty.
        let (none, skipped) = load_recent(&tmp.path().join("nope"), 10).expect("loads");
        assert!(none.is_empty() && skipped == 0);
    }

    #[test]
    fn torn_last_line_is_skipped_counted_and_terminated() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        {
            let mut j = open(dir, 64 << 20, 4);
            j.append(&arcs((0..3).map(|i| sample(i, "r", "/bin/sh"))));
        }
        // A crash in the middle of a line, and a line of garbage before it.
        let path = dir.join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"not json\n{\"id\":\"id-99\",\"time\":\"20")
            .expect("write");
        drop(f);
        let (got, skipped) = load_recent(dir, 10).expect("loads");
        assert_eq!(ids(&got), ["id-0", "id-1", "id-2"]);
        assert_eq!(skipped, 2);

        // Reopening terminates the torn line: the next detection is intact.
        let mut j = open(dir, 64 << 20, 4);
        j.append(&arcs([sample(3, "r", "/bin/sh")]));
        let (got, skipped) = load_recent(dir, 10).expect("loads");
        assert_eq!(ids(&got), ["id-0", "id-1", "id-2", "id-3"]);
        assert_eq!(skipped, 2);
    }

    #[test]
    fn rotates_at_the_size_bound_and_keeps_keep_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let line_len = serde_json::to_vec(&sample(0, "r", "/bin/sh"))
            .expect("json")
            .len() as u64
            + 1;
        // Room for 10 lines of this size per file (ids vary by a digit or two: keep a margin).
        let max = line_len * 10 + 30;
        let mut j = open(dir, max, 2);
        // One detection per append and a few large batches: both paths must rotate.
        for i in 0..25 {
            j.append(&arcs([sample(i, "r", "/bin/sh")]));
        }
        j.append(&arcs((25..60).map(|i| sample(i, "r", "/bin/sh"))));
        for p in [dir.join(FILE_NAME), rotated(dir, 1), rotated(dir, 2)] {
            let len = fs::metadata(&p).expect("exists").len();
            assert!(len <= max, "{} is {len} bytes > {max}", p.display());
            assert_eq!(
                fs::metadata(&p).expect("stat").permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(!rotated(dir, 3).exists(), "only `keep` rotated files");
        assert!(j.bytes() <= max);

        // The newest 25 span the current file and both rotated ones, in order.
        let (got, skipped) = load_recent(dir, 25).expect("loads");
        assert_eq!(skipped, 0);
        let want: Vec<String> = (35..60).map(|i| format!("id-{i}")).collect();
        assert_eq!(ids(&got), want);
        // Asking for more than is kept returns what is kept: three files of 10.
        let (got, _) = load_recent(dir, 1000).expect("loads");
        assert_eq!(got.len(), 30);
        assert_eq!(got[0].id, "id-30");
    }

    #[test]
    fn long_lines_cross_read_blocks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let mut j = open(dir, 64 << 20, 1);
        let big = |i: u64| {
            let mut d = sample(i, "r", "/bin/sh");
            d.description = Some("x".repeat(100_000 + i as usize));
            d
        };
        j.append(&arcs((0..5).map(big)));
        let (got, skipped) = load_recent(dir, 3).expect("loads");
        assert_eq!(skipped, 0);
        assert_eq!(ids(&got), ["id-2", "id-3", "id-4"]);
        assert_eq!(got[2], big(4));
    }
}
