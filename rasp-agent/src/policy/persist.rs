//! A set applied over the socket (`policy apply`) survives the agent: its files are saved in
//! the state directory (`applied-policies.json`, 0600, written to a temporary file, synced
//! and renamed, the directory synced) and brought back at the next start, so a crash or a
//! restart never silently falls back to the directory's or the built-in rules. The policy
//! directory stays the authority: a reload from it, a rollback, or a directory file newer
//! than the saved set puts the directory's rules back and forgets the saved ones.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "applied-policies.json";

/// Saved sets larger than this are refused at load (a corrupted or planted file).
const MAX_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a saved policy set: {source}")]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {size} bytes, more than a saved set may hold ({MAX_BYTES})")]
    TooLarge { path: PathBuf, size: u64 },
}

/// What `policy apply` was given, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSet {
    /// Seconds since the epoch when it was applied.
    pub saved_unix: u64,
    /// Why it was applied (the request's note).
    pub why: String,
    /// (file name, YAML text), as sent.
    pub files: Vec<(String, String)>,
}

/// The saved-set file in one state directory.
#[derive(Clone, Debug)]
pub struct SavedSets {
    path: PathBuf,
}

impl SavedSets {
    pub fn in_dir(state_dir: &Path) -> SavedSets {
        SavedSets {
            path: state_dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Save `files` as the active applied set, durably.
    pub fn save(&self, files: &[(String, String)], why: &str) -> Result<(), PersistError> {
        let saved = SavedSet {
            saved_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            why: why.to_string(),
            files: files.to_vec(),
        };
        let bytes = serde_json::to_vec(&saved).map_err(|source| PersistError::Format {
            path: self.path.clone(),
            source,
        })?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("creating", &tmp, e))?;
        f.write_all(&bytes).map_err(|e| io("writing", &tmp, e))?;
        f.sync_all().map_err(|e| io("syncing", &tmp, e))?;
        fs::rename(&tmp, &self.path).map_err(|e| io("renaming into", &self.path, e))?;
        sync_dir(dir)
    }

    /// Forget the saved set (the directory or defaults are active again).
    pub fn clear(&self) -> Result<(), PersistError> {
        match fs::remove_file(&self.path) {
            Ok(()) => sync_dir(self.path.parent().unwrap_or(Path::new("."))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("removing", &self.path, e)),
        }
    }

    /// The saved set, if there is one.
    pub fn load(&self) -> Result<Option<SavedSet>, PersistError> {
        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("reading", &self.path, e)),
        };
        if meta.len() > MAX_BYTES {
            return Err(PersistError::TooLarge {
                path: self.path.clone(),
                size: meta.len(),
            });
        }
        let bytes = fs::read(&self.path).map_err(|e| io("reading", &self.path, e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| PersistError::Format {
                path: self.path.clone(),
                source,
            })
    }
}

/// The newest modification time (seconds since the epoch) of the policy files in `dir`.
pub fn newest_mtime(dir: &Path) -> Option<u64> {
    let entries = fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter_map(|m| m.modified().ok())
        .filter_map(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .max()
        .or_else(|| {
            fs::metadata(dir)
                .ok()?
                .modified()
                .ok()?
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs())
        })
}

fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", dir, e))
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> PersistError {
    PersistError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saved_sets_round_trip_privately_and_clear() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let saved = SavedSets::in_dir(&tmp.path().join("state"));
        assert_eq!(saved.load().expect("nothing saved"), None);
        let files = vec![("a.yaml".to_string(), "name: a\n".to_string())];
        saved.save(&files, "test").expect("saves");
        let back = saved.load().expect("loads").expect("saved");
        assert_eq!((back.files, back.why.as_str()), (files, "test"));
        let mode = fs::metadata(saved.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        saved.clear().expect("clears");
        saved.clear().expect("clearing twice is fine");
        assert_eq!(saved.load().expect("cleared"), None);
    }

    #[test]
    fn a_corrupted_or_huge_saved_set_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let saved = SavedSets::in_dir(tmp.path());
        fs::write(saved.path(), b"{\"saved_unix\": 1, \"why\": ").expect("write");
        let e = saved.load().expect_err("torn").to_string();
        assert!(e.contains(FILE_NAME), "{e}");
        let f = fs::File::create(saved.path()).expect("create");
        f.set_len(MAX_BYTES + 1).expect("grow");
        let e = saved.load().expect_err("huge").to_string();
        assert!(e.contains("more than"), "{e}");
    }
}
