//! Named volumes (`local` driver): a directory per volume under `<data>/volumes/<name>/_data`
//! with its metadata beside it, kept across containers.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{names, state};

/// Errors of the volume store.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("invalid volume name {0:?}: names must match [a-zA-Z0-9][a-zA-Z0-9_.-]+")]
    InvalidName(String),
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("remove {name}: volume is in use - [{containers}]")]
    InUse { name: String, containers: String },
    #[error("volume {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    State(#[from] state::StateError),
}

/// Docker's volume object, as `volume inspect` prints it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    pub created_at: DateTime<Utc>,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    pub mountpoint: PathBuf,
    pub name: String,
    pub options: BTreeMap<String, String>,
    pub scope: String,
}

/// The volumes of one node.
#[derive(Clone, Debug)]
pub struct VolumeStore {
    root: PathBuf,
}

const META: &str = "volume.json";

/// The label Docker puts on anonymous volumes (`-v /path`); `volume prune` without `--all`
/// removes only those.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

impl Volume {
    /// Whether the volume was created without a name.
    pub fn is_anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }
}

impl VolumeStore {
    /// Opens (creating) the store at `root`.
    pub fn open(root: PathBuf) -> Result<Self, VolumeError> {
        fs::create_dir_all(&root).map_err(|source| VolumeError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(VolumeStore { root })
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates a volume; an existing one with the same name is returned as it is (Docker's
    /// behaviour for the `local` driver).
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume, VolumeError> {
        let mut labels = labels;
        let name = match name {
            Some(n) => n.to_owned(),
            None => {
                labels.insert(ANONYMOUS_LABEL.to_owned(), String::new());
                names::new_id()
            }
        };
        if !names::valid(&name) {
            return Err(VolumeError::InvalidName(name));
        }
        if let Ok(v) = self.get(&name) {
            return Ok(v);
        }
        let dir = self.dir(&name);
        let data = dir.join("_data");
        fs::create_dir_all(&data).map_err(|source| VolumeError::Io {
            path: data.clone(),
            source,
        })?;
        let v = Volume {
            created_at: Utc::now(),
            driver: "local".into(),
            labels,
            mountpoint: data,
            name,
            options: BTreeMap::new(),
            scope: "local".into(),
        };
        state::write_json(&dir.join(META), &v)?;
        Ok(v)
    }

    /// Looks a volume up by name.
    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        if !names::valid(name) {
            return Err(VolumeError::NotFound(name.to_owned()));
        }
        state::read_json(&self.dir(name).join(META))?
            .ok_or_else(|| VolumeError::NotFound(name.to_owned()))
    }

    /// All volumes, by name.
    pub fn list(&self) -> Vec<Volume> {
        let mut out: Vec<Volume> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| self.get(&e.file_name().to_string_lossy()).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Removes a volume and its data. `users` are the containers using it (refused unless
    /// empty, even with force, as Docker does).
    pub fn remove(&self, name: &str, users: &[String]) -> Result<(), VolumeError> {
        self.get(name)?;
        if !users.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_owned(),
                containers: users.join(", "),
            });
        }
        let dir = self.dir(name);
        fs::remove_dir_all(&dir).map_err(|source| VolumeError::Io { path: dir, source })
    }

    /// Disk usage of a volume's data in bytes.
    pub fn size(&self, v: &Volume) -> u64 {
        dir_size(&v.mountpoint)
    }
}

/// Bytes used by the regular files under `p` (symlinks not followed).
pub fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        let d = tempfile::tempdir().unwrap();
        let s = VolumeStore::open(d.path().join("v")).unwrap();
        let v = s.create(Some("data"), BTreeMap::new()).unwrap();
        fs::write(v.mountpoint.join("f"), "hello").unwrap();
        // Creating again keeps the data.
        let again = s.create(Some("data"), BTreeMap::new()).unwrap();
        assert_eq!(again, v);
        assert_eq!(s.size(&v), 5);
        assert_eq!(s.list().len(), 1);
        assert!(matches!(
            s.remove("data", &["web".into()]),
            Err(VolumeError::InUse { .. })
        ));
        s.remove("data", &[]).unwrap();
        assert!(matches!(s.get("data"), Err(VolumeError::NotFound(_))));
        assert!(matches!(
            s.create(Some("../x"), BTreeMap::new()),
            Err(VolumeError::InvalidName(_))
        ));
        assert!(matches!(s.get("../x"), Err(VolumeError::NotFound(_))));
    }
}
