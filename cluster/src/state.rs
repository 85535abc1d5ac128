//! What a node keeps on disk about its swarm membership (`<data>/swarm/`).
//!
//! ```text
//! swarm/node.json        identity: node ID, cluster ID, role, Raft ID, addresses, managers
//! swarm/pki/node.crt     certificate chain (leaf first)
//! swarm/pki/ca.crt       trusted root CA certificates
//! swarm/pki/node.key     the node's private key (workers)
//! swarm/pki/node.key.sealed  the same, sealed with the Raft data key (managers: readable
//!                        only once the manager is unlocked)
//! swarm/keys.json        the Raft data key, wrapped by the key-encryption key
//! swarm/raft/            the replicated store (managers)
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shoal_store::crypto::DataKey;
use shoal_store::model::Role;

/// Errors of the node state files.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// The node's identity in its swarm (`node.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeState {
    pub node_id: String,
    pub cluster_id: String,
    /// The role the node currently runs as.
    pub role: Role,
    /// Raft ID while a manager (0 otherwise).
    pub raft_id: u64,
    /// Local address of the cluster port (`ip:port`).
    pub listen_addr: String,
    /// Address other nodes use (`ip:port`).
    pub advertise_addr: String,
    /// Known manager addresses, to find the cluster after a restart.
    pub managers: Vec<String>,
}

/// The paths of `<data>/swarm`.
#[derive(Clone, Debug)]
pub struct SwarmPaths {
    pub root: PathBuf,
}

impl SwarmPaths {
    /// The layout under a daemon's data dir.
    pub fn new(data_dir: &Path) -> SwarmPaths {
        SwarmPaths {
            root: data_dir.join("swarm"),
        }
    }
    pub fn node_json(&self) -> PathBuf {
        self.root.join("node.json")
    }
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }
    pub fn chain(&self) -> PathBuf {
        self.pki().join("node.crt")
    }
    pub fn roots(&self) -> PathBuf {
        self.pki().join("ca.crt")
    }
    pub fn key_plain(&self) -> PathBuf {
        self.pki().join("node.key")
    }
    pub fn key_sealed(&self) -> PathBuf {
        self.pki().join("node.key.sealed")
    }
    /// Where the key store (`keys.json`) lives.
    pub fn keys_dir(&self) -> PathBuf {
        self.root.clone()
    }
    /// The replicated store's directory.
    pub fn raft(&self) -> PathBuf {
        self.root.join("raft")
    }
    /// Image archives made for and fetched from peers.
    pub fn image_cache(&self) -> PathBuf {
        self.root.join("image-cache")
    }

    /// Whether this node is part of a swarm (it has an identity on disk).
    pub fn exists(&self) -> bool {
        self.node_json().exists()
    }

    /// Reads the identity.
    pub fn load(&self) -> Result<Option<NodeState>, StateError> {
        let p = self.node_json();
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StateError::Corrupt {
                    path: p,
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read { path: p, source }),
        }
    }

    /// Writes the identity (atomically, durably).
    pub fn save(&self, s: &NodeState) -> Result<(), StateError> {
        let data = serde_json::to_vec_pretty(s).map_err(|e| StateError::Corrupt {
            path: self.node_json(),
            message: e.to_string(),
        })?;
        write_private(&self.node_json(), &data)
    }

    /// Stores the certificate chain and roots, and the key: in clear for a worker, sealed
    /// with the data key for a manager (so a locked manager cannot use it).
    pub fn save_tls(
        &self,
        chain_pem: &str,
        roots_pem: &str,
        key_pem: &str,
        dek: Option<&DataKey>,
    ) -> Result<(), StateError> {
        write_private(&self.chain(), chain_pem.as_bytes())?;
        write_private(&self.roots(), roots_pem.as_bytes())?;
        match dek {
            Some(k) => {
                let sealed =
                    shoal_store::crypto::seal(k.as_bytes(), key_pem.as_bytes(), b"node.key");
                write_private(&self.key_sealed(), &sealed)?;
                let _ = fs::remove_file(self.key_plain());
            }
            None => {
                write_private(&self.key_plain(), key_pem.as_bytes())?;
                let _ = fs::remove_file(self.key_sealed());
            }
        }
        Ok(())
    }

    /// Reads the certificate chain, roots and key (`dek` opens a sealed key).
    pub fn load_tls(&self, dek: Option<&DataKey>) -> Result<(String, String, String), StateError> {
        let read = |p: PathBuf| {
            fs::read_to_string(&p).map_err(|source| StateError::Read { path: p, source })
        };
        let chain = read(self.chain())?;
        let roots = read(self.roots())?;
        let key = if self.key_plain().exists() {
            read(self.key_plain())?
        } else {
            let p = self.key_sealed();
            let sealed = fs::read(&p).map_err(|source| StateError::Read {
                path: p.clone(),
                source,
            })?;
            let Some(k) = dek else {
                return Err(StateError::Corrupt {
                    path: p,
                    message: "the key is sealed and the node is locked".into(),
                });
            };
            let plain =
                shoal_store::crypto::open(k.as_bytes(), &sealed, b"node.key").map_err(|e| {
                    StateError::Corrupt {
                        path: p.clone(),
                        message: e.to_string(),
                    }
                })?;
            String::from_utf8(plain).map_err(|e| StateError::Corrupt {
                path: p,
                message: e.to_string(),
            })?
        };
        Ok((chain, roots, key))
    }

    /// Removes everything of the swarm (leave).
    pub fn wipe(&self) -> Result<(), StateError> {
        match fs::remove_dir_all(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Write {
                path: self.root.clone(),
                source,
            }),
        }
    }
}

/// Writes a file atomically with mode 0600 and fsyncs it.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), StateError> {
    use std::io::Write;
    let err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}
