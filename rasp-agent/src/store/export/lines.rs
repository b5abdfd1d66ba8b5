//! JSON-lines sinks: stdout (a container's log, read by the node's log shipper) and a file
//! (tailed by Fluent Bit, Vector or Filebeat). A batch reaches the kernel in one `write`; the
//! file is fsynced before the sink's position moves past it, so a power loss can repeat
//! lines but not lose them. The file rotates by size to `PATH.1` (one kept): shippers follow
//! a renamed file by inode and pick up the new one.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use super::{ExportError, Record};

pub enum LineSink {
    Stdout,
    File(FileSink),
}

pub struct FileSink {
    path: PathBuf,
    file: Option<File>,
    len: u64,
    max_bytes: u64,
}

impl LineSink {
    /// Write every record, one line each. On error nothing is assumed written (the caller
    /// retries the whole batch: lines before the failure may appear twice, never zero times).
    pub fn write(&mut self, records: &[Record], buf: &mut Vec<u8>) -> Result<(), ExportError> {
        buf.clear();
        for r in records {
            buf.extend_from_slice(&r.json);
            buf.push(b'\n');
        }
        match self {
            LineSink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(buf)
                    .and_then(|()| out.flush())
                    .map_err(|source| ExportError::Stdout { source })
            }
            LineSink::File(f) => f.write(buf),
        }
    }
}

impl FileSink {
    /// Opens (creates, mode 0600) `path` for appending: a path that cannot be written is an
    /// error at start, not a silent sink.
    pub fn open(path: PathBuf, max_bytes: u64) -> Result<FileSink, ExportError> {
        let mut sink = FileSink {
            path,
            file: None,
            len: 0,
            max_bytes: max_bytes.max(1),
        };
        sink.reopen()?;
        Ok(sink)
    }

    fn reopen(&mut self) -> Result<(), ExportError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| file_err("opening", &self.path, e))?;
        self.len = file
            .metadata()
            .map_err(|e| file_err("reading metadata of", &self.path, e))?
            .len();
        self.file = Some(file);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ExportError> {
        if self.len > 0 && self.len + bytes.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(file_err(
                "opening",
                &self.path,
                io::Error::other("no file after reopening"),
            ));
        };
        let written = file.write_all(bytes).and_then(|()| file.sync_data());
        match written {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Unknown how much landed: reopen (and learn the length) before the retry.
                self.file = None;
                Err(file_err("appending to", &self.path, e))
            }
        }
    }

    fn rotate(&mut self) -> Result<(), ExportError> {
        self.file = None;
        let old = rotated_name(&self.path);
        match fs::rename(&self.path, &old) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_err("rotating", &self.path, e)),
        }
        self.reopen()
    }
}

/// `PATH.1`.
pub fn rotated_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

fn file_err(op: &'static str, path: &Path, source: io::Error) -> ExportError {
    ExportError::File {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u32) -> Record {
        Record {
            key: format!("n:{i}"),
            json: format!("{{\"n\":{i}}}").into_bytes(),
        }
    }

    #[test]
    fn file_sink_appends_lines_and_rotates_by_size() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("out.jsonl");
        let mut sink = LineSink::File(FileSink::open(path.clone(), 36).expect("opens"));
        let mut buf = Vec::new();
        sink.write(&[rec(1), rec(2)], &mut buf).expect("writes");
        sink.write(&[rec(3), rec(4)], &mut buf).expect("writes");
        sink.write(&[rec(5)], &mut buf).expect("writes");
        let now = fs::read_to_string(&path).expect("read");
        let old = fs::read_to_string(rotated_name(&path)).expect("read .1");
        assert_eq!(old, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n");
        assert_eq!(now, "{\"n\":5}\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn an_unwritable_path_is_an_error_naming_it() {
        let e = FileSink::open(PathBuf::from("/nonexistent-dir/out.jsonl"), 1 << 20)
            .err()
            .expect("fails");
        let text = e.to_string();
        assert!(text.contains("/nonexistent-dir/out.jsonl"), "{text}");
    }
}
