//! Small crash-safe JSON files: the container record, the helper's state and exit files.
//!
//! Each file is written to a temporary sibling, flushed, and renamed over the old one, then
//! the directory is synced: a reader (or a daemon restarted after power loss) sees either the
//! old or the new content, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Errors of the state files.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Writes `value` as JSON to `path` atomically and durably (see the module docs).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    write_json_with(path, value, true)
}

/// Writes `value` as JSON to `path` atomically but without waiting for the disk: for files
/// whose loss on power failure does not matter (what a helper records about a container
/// that a power loss kills anyway). A crashed process still leaves old or new, never torn.
pub fn write_json_volatile<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    write_json_with(path, value, false)
}

fn write_json_with<T: Serialize>(path: &Path, value: &T, durable: bool) -> Result<(), StateError> {
    let data = serde_json::to_vec_pretty(value).map_err(|e| StateError::Parse {
        path: path.to_owned(),
        source: e,
    })?;
    write_file(path, &data, 0o600, durable)
}

/// Writes bytes to `path` atomically and durably with the given mode.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), StateError> {
    write_file(path, data, mode, true)
}

fn write_file(path: &Path, data: &[u8], mode: u32, durable: bool) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tmp_sibling(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    if durable {
        f.sync_all().map_err(err)?;
    }
    drop(f);
    fs::rename(&tmp, path).map_err(err)?;
    if durable {
        File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    }
    Ok(())
}

fn tmp_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| StateError::Parse {
                path: path.to_owned(),
                source: e,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Read {
            path: path.to_owned(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), None);
        write_json(&p, &vec![1u32, 2, 3]).unwrap();
        write_json(&p, &vec![4u32]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), Some(vec![4]));
        assert!(!dir.path().join("x.json.tmp").exists());
    }

    #[test]
    fn corrupt_file_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.json");
        fs::write(&p, b"{not json").unwrap();
        let e = read_json::<Vec<u32>>(&p).unwrap_err().to_string();
        assert!(e.contains("bad.json"), "{e}");
    }
}
