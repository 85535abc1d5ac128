//! Persistence on redb: the Raft log, vote and pointers, the state machine (objects) and
//! the current snapshot, all in `<dir>/state.redb`.
//!
//! Tables (keys in clear, every value sealed with the DEK, AAD = `<table>/<key>`):
//! - `raft_log`: log index (u64) → entry;
//! - `raft_meta`: `vote`, `committed`, `purged` (last purged log id), `applied` (last
//!   applied log id), `membership` (last applied membership), `dek_check` (a known value
//!   that tells a wrong DEK at open);
//! - `objects_<kind>`: object ID → object;
//! - `snapshot`: `meta` and `data` of the current snapshot (only the latest is kept).
//!
//! Every plaintext is a versioned JSON record `{"v":1,"value":…}`; a reader refuses a `v`
//! newer than it knows, and within a version fields evolve through serde defaults.
//! The snapshot `data` is the same bytes that travel to a follower (plaintext there, TLS on
//! the wire; each manager seals with its own DEK).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, CommittedLeaderId, EntryPayload, ErrorSubject, ErrorVerb, Membership, OptionalSend,
    RaftLogReader, RaftSnapshotBuilder, StorageIOError,
};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::command::{self, ApplyOutcome, Event, EventAction, Object, ObjectSource};
use crate::crypto::{self, DataKey};
use crate::model::ObjectKind;
use crate::raft_types::{
    Entry, LogId, Node, NodeId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
    Vote,
};

/// The database file in the store's directory.
pub const DB_FILE: &str = "state.redb";
/// Encoding version of every record this build writes.
const RECORD_VERSION: u32 = 1;

const LOG_TABLE: &str = "raft_log";
const META_TABLE: &str = "raft_meta";
const SNAPSHOT_TABLE: &str = "snapshot";
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new(LOG_TABLE);
const META: TableDefinition<&str, &[u8]> = TableDefinition::new(META_TABLE);
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new(SNAPSHOT_TABLE);

const K_VOTE: &str = "vote";
const K_COMMITTED: &str = "committed";
const K_PURGED: &str = "purged";
const K_APPLIED: &str = "applied";
const K_MEMBERSHIP: &str = "membership";
const K_DEK_CHECK: &str = "dek_check";
const K_SNAP_META: &str = "meta";
const K_SNAP_DATA: &str = "data";
const DEK_CHECK_VALUE: &str = "shoal state.redb";

fn objects_table_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Cluster => "objects_cluster",
        ObjectKind::Node => "objects_node",
        ObjectKind::Service => "objects_service",
        ObjectKind::Task => "objects_task",
        ObjectKind::Network => "objects_network",
        ObjectKind::Secret => "objects_secret",
        ObjectKind::Config => "objects_config",
        ObjectKind::Volume => "objects_volume",
    }
}

fn objects_table(kind: ObjectKind) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(objects_table_name(kind))
}

/// Errors of the on-disk state.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<redb::DatabaseError>,
    },
    #[error("{path}: {op} failed: {source}")]
    Redb {
        path: PathBuf,
        op: &'static str,
        source: Box<redb::Error>,
    },
    #[error(
        "{path}: {table}/{key} cannot be decrypted: it is corrupt, was tampered with, or was written with another data key"
    )]
    Decrypt {
        path: PathBuf,
        table: &'static str,
        key: String,
    },
    #[error("{path}: {table}/{key} cannot be decoded: {source}")]
    Decode {
        path: PathBuf,
        table: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("{path}: {table}/{key} cannot be encoded: {source}")]
    Encode {
        path: PathBuf,
        table: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error(
        "{path}: {table}/{key} has encoding version {version}, newer than this shoal understands: upgrade it"
    )]
    Version {
        path: PathBuf,
        table: &'static str,
        key: String,
        version: u32,
    },
    #[error("{path} was written with another data key: it cannot be opened with this one")]
    WrongDataKey { path: PathBuf },
    #[error("{path} holds no Raft state: nothing to recover")]
    NotInitialized { path: PathBuf },
    #[error("{path}: a storage task failed: {source}")]
    Task {
        path: PathBuf,
        source: tokio::task::JoinError,
    },
}

#[derive(Serialize)]
struct RecordOut<'a, T> {
    v: u32,
    value: &'a T,
}

#[derive(Deserialize)]
struct RecordIn<T> {
    #[serde(default)]
    v: u32,
    value: T,
}

#[derive(Deserialize)]
struct RecordHeader {
    #[serde(default)]
    v: u32,
}

/// Encodes `value` as a versioned record.
pub(crate) fn encode_record<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&RecordOut {
        v: RECORD_VERSION,
        value,
    })
}

/// Why a record could not be read.
pub(crate) enum RecordError {
    Version(u32),
    Decode(serde_json::Error),
}

/// Decodes a versioned record, refusing versions newer than this build's.
pub(crate) fn decode_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    match serde_json::from_slice::<RecordIn<T>>(bytes) {
        Ok(r) if r.v <= RECORD_VERSION => Ok(r.value),
        Ok(r) => Err(RecordError::Version(r.v)),
        Err(e) => match serde_json::from_slice::<RecordHeader>(bytes) {
            Ok(h) if h.v > RECORD_VERSION => Err(RecordError::Version(h.v)),
            _ => Err(RecordError::Decode(e)),
        },
    }
}

/// The snapshot as written (borrowing the state machine).
#[derive(Serialize)]
struct SnapshotBodyOut<'a> {
    last_applied: &'a Option<LogId>,
    last_membership: &'a StoredMembership,
    objects: Vec<&'a Object>,
}

/// The snapshot as read.
#[derive(Deserialize)]
struct SnapshotBodyIn {
    #[serde(default)]
    objects: Vec<Object>,
}

/// All objects, by kind and ID.
pub(crate) type Objects = BTreeMap<ObjectKind, BTreeMap<String, Object>>;

/// The open database and the key its values are sealed with.
pub(crate) struct Db {
    // Fields drop in order: `closed` flips after the database is closed.
    db: Database,
    dek: DataKey,
    path: PathBuf,
    closed: ClosedFlag,
}

/// Set when the [`Db`] holding it is dropped (after its database closed).
struct ClosedFlag(Arc<AtomicBool>);

impl Drop for ClosedFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Db {
    /// Opens (or creates) `<dir>/state.redb`, creates the tables, and checks `dek` is the
    /// key the database was written with.
    pub(crate) fn open(dir: &Path, dek: DataKey) -> Result<Db, DbError> {
        std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|source| DbError::Open {
            path: path.clone(),
            source: Box::new(source),
        })?;
        set_private(&path);
        let this = Db {
            db,
            dek,
            path,
            closed: ClosedFlag(Arc::new(AtomicBool::new(false))),
        };
        this.write(true, "create tables", |tx| {
            tx.open_table(LOG)?;
            tx.open_table(META)?;
            tx.open_table(SNAPSHOT)?;
            for k in ObjectKind::ALL {
                tx.open_table(objects_table(k))?;
            }
            Ok(())
        })?;
        match this.read_meta::<String>(K_DEK_CHECK) {
            Ok(Some(v)) if v == DEK_CHECK_VALUE => {}
            Ok(Some(_)) | Err(DbError::Decrypt { .. }) => {
                return Err(DbError::WrongDataKey { path: this.path });
            }
            Ok(None) => {
                let sealed = this.seal(META_TABLE, K_DEK_CHECK, &DEK_CHECK_VALUE)?;
                this.write(true, "write dek check", move |tx| {
                    tx.open_table(META)?
                        .insert(K_DEK_CHECK, sealed.as_slice())?;
                    Ok(())
                })?;
            }
            Err(e) => return Err(e),
        }
        Ok(this)
    }

    fn redb_err(&self, op: &'static str, e: impl Into<redb::Error>) -> DbError {
        DbError::Redb {
            path: self.path.clone(),
            op,
            source: Box::new(e.into()),
        }
    }

    fn seal<T: Serialize>(
        &self,
        table: &'static str,
        key: &str,
        value: &T,
    ) -> Result<Vec<u8>, DbError> {
        let plain = encode_record(value).map_err(|source| DbError::Encode {
            path: self.path.clone(),
            table,
            key: key.to_owned(),
            source,
        })?;
        Ok(crypto::seal(
            self.dek.as_bytes(),
            &plain,
            format!("{table}/{key}").as_bytes(),
        ))
    }

    fn unseal_raw(
        &self,
        table: &'static str,
        key: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, DbError> {
        crypto::open(
            self.dek.as_bytes(),
            sealed,
            format!("{table}/{key}").as_bytes(),
        )
        .map_err(|_| DbError::Decrypt {
            path: self.path.clone(),
            table,
            key: key.to_owned(),
        })
    }

    fn unseal<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key: &str,
        sealed: &[u8],
    ) -> Result<T, DbError> {
        let plain = self.unseal_raw(table, key, sealed)?;
        decode_record(&plain).map_err(|e| match e {
            RecordError::Version(version) => DbError::Version {
                path: self.path.clone(),
                table,
                key: key.to_owned(),
                version,
            },
            RecordError::Decode(source) => DbError::Decode {
                path: self.path.clone(),
                table,
                key: key.to_owned(),
                source,
            },
        })
    }

    /// Runs `f` in a write transaction and commits it (durably unless `durable` is false).
    fn write(
        &self,
        durable: bool,
        op: &'static str,
        f: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), DbError> {
        let mut tx = self.db.begin_write().map_err(|e| self.redb_err(op, e))?;
        if !durable {
            tx.set_durability(Durability::None)
                .map_err(|e| self.redb_err(op, redb::Error::from(e)))?;
        }
        f(&tx).map_err(|e| self.redb_err(op, e))?;
        tx.commit().map_err(|e| self.redb_err(op, e))
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, DbError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| self.redb_err("read meta", e))?;
        let table = tx
            .open_table(META)
            .map_err(|e| self.redb_err("read meta", e))?;
        let Some(v) = table.get(key).map_err(|e| self.redb_err("read meta", e))? else {
            return Ok(None);
        };
        self.unseal(META_TABLE, key, v.value()).map(Some)
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durable: bool,
    ) -> Result<(), DbError> {
        let sealed = self.seal(META_TABLE, key, value)?;
        self.write(durable, "write meta", move |tx| {
            tx.open_table(META)?.insert(key, sealed.as_slice())?;
            Ok(())
        })
    }

    fn decode_entry(&self, index: u64, sealed: &[u8]) -> Result<Entry, DbError> {
        self.unseal(LOG_TABLE, &index.to_string(), sealed)
    }

    /// Log entries in `range`, in order.
    fn read_log(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, DbError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| self.redb_err("read log", e))?;
        let table = tx
            .open_table(LOG)
            .map_err(|e| self.redb_err("read log", e))?;
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        let iter = table
            .range::<u64>((start, end))
            .map_err(|e| self.redb_err("read log", e))?;
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(|e| self.redb_err("read log", e))?;
            out.push(self.decode_entry(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// The ID of the last entry in the log (ignoring purges).
    fn last_log_id(&self) -> Result<Option<LogId>, DbError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| self.redb_err("read log", e))?;
        let table = tx
            .open_table(LOG)
            .map_err(|e| self.redb_err("read log", e))?;
        match table.last().map_err(|e| self.redb_err("read log", e))? {
            Some((k, v)) => Ok(Some(self.decode_entry(k.value(), v.value())?.log_id)),
            None => Ok(None),
        }
    }

    fn append_log(&self, entries: &[Entry]) -> Result<(), DbError> {
        let mut sealed = Vec::with_capacity(entries.len());
        for e in entries {
            let i = e.log_id.index;
            sealed.push((i, self.seal(LOG_TABLE, &i.to_string(), e)?));
        }
        self.write(true, "append log", move |tx| {
            let mut t = tx.open_table(LOG)?;
            for (i, v) in &sealed {
                t.insert(*i, v.as_slice())?;
            }
            Ok(())
        })
    }

    fn truncate_log(&self, since: u64) -> Result<(), DbError> {
        self.write(true, "truncate log", move |tx| {
            tx.open_table(LOG)?.retain_in(since.., |_, _| false)?;
            Ok(())
        })
    }

    fn purge_log(&self, upto: &LogId) -> Result<(), DbError> {
        let sealed = self.seal(META_TABLE, K_PURGED, upto)?;
        let index = upto.index;
        self.write(true, "purge log", move |tx| {
            tx.open_table(META)?.insert(K_PURGED, sealed.as_slice())?;
            tx.open_table(LOG)?.retain_in(..=index, |_, _| false)?;
            Ok(())
        })
    }

    /// Loads the state machine.
    pub(crate) fn load_state(&self) -> Result<SmState, DbError> {
        let last_applied: Option<LogId> = self.read_meta::<Option<LogId>>(K_APPLIED)?.flatten();
        let membership: StoredMembership = self.read_meta(K_MEMBERSHIP)?.unwrap_or_default();
        let tx = self
            .db
            .begin_read()
            .map_err(|e| self.redb_err("load objects", e))?;
        let mut objects = Objects::new();
        for kind in ObjectKind::ALL {
            let name = objects_table_name(kind);
            let table = tx
                .open_table(objects_table(kind))
                .map_err(|e| self.redb_err("load objects", e))?;
            let mut map = BTreeMap::new();
            for item in table.iter().map_err(|e| self.redb_err("load objects", e))? {
                let (k, v) = item.map_err(|e| self.redb_err("load objects", e))?;
                let id = k.value().to_owned();
                let object: Object = self.unseal(name, &id, v.value())?;
                map.insert(id, object);
            }
            if !map.is_empty() {
                objects.insert(kind, map);
            }
        }
        Ok(SmState {
            last_applied,
            membership,
            objects,
        })
    }

    /// Persists the result of applying entries: changed objects, last applied, membership.
    fn persist_apply(
        &self,
        changes: &BTreeMap<(ObjectKind, String), Option<Object>>,
        last_applied: &Option<LogId>,
        membership: &Option<StoredMembership>,
    ) -> Result<(), DbError> {
        let mut writes = Vec::with_capacity(changes.len());
        for ((kind, id), object) in changes {
            let sealed = match object {
                Some(o) => Some(self.seal(objects_table_name(*kind), id, o)?),
                None => None,
            };
            writes.push((*kind, id.as_str(), sealed));
        }
        let applied = self.seal(META_TABLE, K_APPLIED, last_applied)?;
        let membership = match membership {
            Some(m) => Some(self.seal(META_TABLE, K_MEMBERSHIP, m)?),
            None => None,
        };
        // Not durable by itself: the entries are durable in the log, and openraft re-applies
        // committed entries after the last applied one on restart (the committed pointer
        // is saved). The next durable commit (log append, vote, snapshot, purge) flushes
        // it; a snapshot is only built from, and logs only purged after, applied state.
        self.write(false, "apply", |tx| {
            for (kind, id, sealed) in &writes {
                let mut t = tx.open_table(objects_table(*kind))?;
                match sealed {
                    Some(v) => {
                        t.insert(*id, v.as_slice())?;
                    }
                    None => {
                        t.remove(*id)?;
                    }
                }
            }
            let mut meta = tx.open_table(META)?;
            meta.insert(K_APPLIED, applied.as_slice())?;
            if let Some(m) = &membership {
                meta.insert(K_MEMBERSHIP, m.as_slice())?;
            }
            Ok(())
        })
    }

    /// Keeps a snapshot this manager built as the current one, unless a newer one (an
    /// install from the leader that raced with the build) is already there. Returns
    /// whether it was kept.
    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<bool, DbError> {
        let sealed_meta = self.seal(SNAPSHOT_TABLE, K_SNAP_META, meta)?;
        let sealed_data = crypto::seal(
            self.dek.as_bytes(),
            data,
            format!("{SNAPSHOT_TABLE}/{K_SNAP_DATA}").as_bytes(),
        );
        let op = "save snapshot";
        let tx = self.db.begin_write().map_err(|e| self.redb_err(op, e))?;
        {
            let mut t = tx.open_table(SNAPSHOT).map_err(|e| self.redb_err(op, e))?;
            let current = t
                .get(K_SNAP_META)
                .map_err(|e| self.redb_err(op, e))?
                .map(|v| v.value().to_vec());
            if let Some(bytes) = current {
                let current: SnapshotMeta = self.unseal(SNAPSHOT_TABLE, K_SNAP_META, &bytes)?;
                if current.last_log_id > meta.last_log_id {
                    return Ok(false);
                }
            }
            t.insert(K_SNAP_META, sealed_meta.as_slice())
                .map_err(|e| self.redb_err(op, e))?;
            t.insert(K_SNAP_DATA, sealed_data.as_slice())
                .map_err(|e| self.redb_err(op, e))?;
        }
        tx.commit().map_err(|e| self.redb_err(op, e))?;
        Ok(true)
    }

    /// Replaces the state machine with a snapshot's, and keeps the snapshot as current.
    fn install_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
        objects: &Objects,
    ) -> Result<(), DbError> {
        let mut writes = Vec::new();
        for (kind, table) in objects {
            for (id, o) in table {
                writes.push((
                    *kind,
                    id.as_str(),
                    self.seal(objects_table_name(*kind), id, o)?,
                ));
            }
        }
        let applied = self.seal(META_TABLE, K_APPLIED, &meta.last_log_id)?;
        let membership = self.seal(META_TABLE, K_MEMBERSHIP, &meta.last_membership)?;
        let snap_meta = self.seal(SNAPSHOT_TABLE, K_SNAP_META, meta)?;
        let snap_data = crypto::seal(
            self.dek.as_bytes(),
            data,
            format!("{SNAPSHOT_TABLE}/{K_SNAP_DATA}").as_bytes(),
        );
        self.write(true, "install snapshot", |tx| {
            for kind in ObjectKind::ALL {
                tx.open_table(objects_table(kind))?.retain(|_, _| false)?;
            }
            for (kind, id, sealed) in &writes {
                tx.open_table(objects_table(*kind))?
                    .insert(*id, sealed.as_slice())?;
            }
            let mut m = tx.open_table(META)?;
            m.insert(K_APPLIED, applied.as_slice())?;
            m.insert(K_MEMBERSHIP, membership.as_slice())?;
            let mut s = tx.open_table(SNAPSHOT)?;
            s.insert(K_SNAP_META, snap_meta.as_slice())?;
            s.insert(K_SNAP_DATA, snap_data.as_slice())?;
            Ok(())
        })
    }

    fn current_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, DbError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| self.redb_err("read snapshot", e))?;
        let t = tx
            .open_table(SNAPSHOT)
            .map_err(|e| self.redb_err("read snapshot", e))?;
        let meta = t
            .get(K_SNAP_META)
            .map_err(|e| self.redb_err("read snapshot", e))?;
        let data = t
            .get(K_SNAP_DATA)
            .map_err(|e| self.redb_err("read snapshot", e))?;
        match (meta, data) {
            (Some(m), Some(d)) => {
                let meta: SnapshotMeta = self.unseal(SNAPSHOT_TABLE, K_SNAP_META, m.value())?;
                let data = self.unseal_raw(SNAPSHOT_TABLE, K_SNAP_DATA, d.value())?;
                Ok(Some((meta, data)))
            }
            _ => Ok(None),
        }
    }
}

/// The database holds secrets (sealed, but still): owner-only.
fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot make the store private");
    }
}

/// Runs a blocking database operation off the async threads.
async fn blocking<T, F>(db: &Arc<Db>, f: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce(&Db) -> Result<T, DbError> + Send + 'static,
{
    let db2 = db.clone();
    tokio::task::spawn_blocking(move || f(&db2))
        .await
        .map_err(|source| DbError::Task {
            path: db.path.clone(),
            source,
        })?
}

fn sto_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: DbError) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

// ---------------------------------------------------------------------------------------
// Log store

/// The Raft log and vote (openraft's `RaftLogStorage`), and its reader.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Db>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Db>) -> LogStore {
        LogStore { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let r = (range.start_bound().cloned(), range.end_bound().cloned());
        blocking(&self.db, move |db| db.read_log(r))
            .await
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let (purged, last) = blocking(&self.db, |db| {
            let purged: Option<LogId> = db.read_meta(K_PURGED)?;
            Ok((purged, db.last_log_id()?))
        })
        .await
        .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let last_log_id = match (last, purged) {
            (Some(l), Some(p)) => Some(l.max(p)),
            (l, p) => l.or(p),
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        blocking(&self.db, move |db| db.write_meta(K_VOTE, &vote, true))
            .await
            .map_err(|e| sto_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        blocking(&self.db, |db| db.read_meta(K_VOTE))
            .await
            .map_err(|e| sto_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not durable by itself: it is an optimisation (re-apply on restart), made durable
        // by the next log or vote write.
        blocking(&self.db, move |db| {
            db.write_meta(K_COMMITTED, &committed, false)
        })
        .await
        .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        blocking(&self.db, |db| {
            Ok(db.read_meta::<Option<LogId>>(K_COMMITTED)?.flatten())
        })
        .await
        .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Read, e))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        blocking(&self.db, move |db| db.append_log(&entries))
            .await
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        blocking(&self.db, move |db| db.truncate_log(log_id.index))
            .await
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        blocking(&self.db, move |db| db.purge_log(&log_id))
            .await
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

// ---------------------------------------------------------------------------------------
// State machine

/// The applied state, kept in memory (reads never touch the disk) and on disk.
pub(crate) struct SmState {
    pub(crate) last_applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
    pub(crate) objects: Objects,
}

/// The state machine's state shared with [`crate::Store`] (reads, watches).
pub(crate) struct Shared {
    state: RwLock<SmState>,
    pub(crate) events: broadcast::Sender<Event>,
}

/// Capacity of the watch channel: a watcher further behind gets `Lagged` and re-lists.
pub(crate) const EVENT_CAPACITY: usize = 1024;

impl Shared {
    pub(crate) fn new(state: SmState) -> Shared {
        Shared {
            state: RwLock::new(state),
            events: broadcast::channel(EVENT_CAPACITY).0,
        }
    }

    /// Read access (a poisoned lock still holds consistent data: every writer replaces
    /// whole fields after the disk write succeeded).
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, SmState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, events: Vec<Event>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        for e in events {
            // Only fails without receivers.
            let _ = self.events.send(e);
        }
    }
}

/// Objects as they are with a batch's earlier changes on top.
struct Overlay<'a> {
    base: &'a Objects,
    changes: &'a BTreeMap<(ObjectKind, String), Option<Object>>,
}

impl ObjectSource for Overlay<'_> {
    fn lookup(&self, kind: ObjectKind, id: &str) -> Option<&Object> {
        match self.changes.get(&(kind, id.to_owned())) {
            Some(o) => o.as_ref(),
            None => self.base.lookup(kind, id),
        }
    }
}

fn apply_changes(objects: &mut Objects, changes: BTreeMap<(ObjectKind, String), Option<Object>>) {
    for ((kind, id), object) in changes {
        match object {
            Some(o) => {
                objects.entry(kind).or_default().insert(id, o);
            }
            None => {
                if let Some(t) = objects.get_mut(&kind) {
                    t.remove(&id);
                }
            }
        }
    }
}

/// Events that turn `old` into `new` (after a snapshot install).
fn diff(old: &Objects, new: &Objects, version: u64) -> Vec<Event> {
    let empty = BTreeMap::new();
    let mut events = Vec::new();
    for kind in ObjectKind::ALL {
        let o = old.get(&kind).unwrap_or(&empty);
        let n = new.get(&kind).unwrap_or(&empty);
        let ids: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
        for id in ids {
            let (action, object) = match (o.get(id), n.get(id)) {
                (Some(a), Some(b)) if a == b => continue,
                (Some(_), Some(b)) => (EventAction::Updated, b),
                (None, Some(b)) => (EventAction::Created, b),
                (Some(a), None) => (EventAction::Deleted, a),
                (None, None) => continue,
            };
            events.push(Event {
                kind,
                id: id.clone(),
                action,
                version: match action {
                    EventAction::Deleted => version,
                    _ => object.meta().version,
                },
                object: object.clone(),
            });
        }
    }
    events
}

/// The state machine (openraft's `RaftStateMachine`).
pub(crate) struct StateMachine {
    db: Arc<Db>,
    shared: Arc<Shared>,
}

impl StateMachine {
    pub(crate) fn new(db: Arc<Db>, shared: Arc<Shared>) -> StateMachine {
        StateMachine { db, shared }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let st = self.shared.read();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        let mut changes: BTreeMap<(ObjectKind, String), Option<Object>> = BTreeMap::new();
        let mut events = Vec::new();
        let mut replies = Vec::with_capacity(entries.len());
        let mut membership = None;
        {
            let st = self.shared.read();
            for entry in &entries {
                let index = entry.log_id.index;
                match &entry.payload {
                    EntryPayload::Blank => replies.push(ApplyOutcome::Applied { index }),
                    EntryPayload::Normal(p) => {
                        let view = Overlay {
                            base: &st.objects,
                            changes: &changes,
                        };
                        let (outcome, evs) = command::apply(&view, p, index);
                        for e in &evs {
                            let after = match e.action {
                                EventAction::Deleted => None,
                                _ => Some(e.object.clone()),
                            };
                            changes.insert((e.kind, e.id.clone()), after);
                        }
                        events.extend(evs);
                        replies.push(outcome);
                    }
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                        replies.push(ApplyOutcome::Applied { index });
                    }
                }
            }
        }
        let last_applied = Some(last);
        let (changes, membership) = blocking(&self.db, move |db| {
            db.persist_apply(&changes, &last_applied, &membership)?;
            Ok((changes, membership))
        })
        .await
        .map_err(|e| sto_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        {
            let mut st = self.shared.write();
            apply_changes(&mut st.objects, changes);
            st.last_applied = last_applied;
            if let Some(m) = membership {
                st.membership = m;
            }
        }
        self.shared.send(events);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let sig = Some(meta.signature());
        let body: SnapshotBodyIn = decode_record(&data).map_err(|e| {
            let reason = match e {
                RecordError::Version(v) => {
                    format!("snapshot encoding version {v} is newer than this shoal understands")
                }
                RecordError::Decode(e) => format!("snapshot cannot be decoded: {e}"),
            };
            StorageError::from(StorageIOError::read_snapshot(
                sig.clone(),
                AnyError::error(reason),
            ))
        })?;
        let mut objects = Objects::new();
        for o in body.objects {
            objects
                .entry(o.kind())
                .or_default()
                .insert(o.id().to_owned(), o);
        }
        let meta2 = meta.clone();
        let objects = blocking(&self.db, move |db| {
            db.install_snapshot(&meta2, &data, &objects)?;
            Ok(objects)
        })
        .await
        .map_err(|e| StorageError::from(StorageIOError::write_snapshot(sig, AnyError::new(&e))))?;
        let events = {
            let mut st = self.shared.write();
            let version = meta.last_log_id.map(|l| l.index).unwrap_or(0);
            let events = diff(&st.objects, &objects, version);
            st.objects = objects;
            st.last_applied = meta.last_log_id;
            st.membership = meta.last_membership.clone();
            events
        };
        tracing::info!(snapshot = %meta, changes = events.len(), "installed a snapshot");
        self.shared.send(events);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let snap = blocking(&self.db, |db| db.current_snapshot())
            .await
            .map_err(|e| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(snap.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Builds a snapshot from the in-memory state (openraft's `RaftSnapshotBuilder`).
pub(crate) struct SnapshotBuilder {
    db: Arc<Db>,
    shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (meta, data) = {
            let st = self.shared.read();
            let body = SnapshotBodyOut {
                last_applied: &st.last_applied,
                last_membership: &st.membership,
                objects: st.objects.values().flat_map(|t| t.values()).collect(),
            };
            let data = encode_record(&body).map_err(|e| {
                StorageError::from(StorageIOError::write_snapshot(None, AnyError::new(&e)))
            })?;
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_nanos();
            let snapshot_id = match st.last_applied {
                Some(l) => format!("{}-{}-{nanos}", l.leader_id.term, l.index),
                None => format!("0-0-{nanos}"),
            };
            let meta = SnapshotMeta {
                last_log_id: st.last_applied,
                last_membership: st.membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        let sig = Some(meta.signature());
        let (meta, data) = blocking(&self.db, move |db| {
            if !db.save_snapshot(&meta, &data)? {
                tracing::info!(snapshot = %meta, "a newer snapshot was installed meanwhile: not kept");
            }
            Ok((meta, data))
        })
        .await
        .map_err(|e| StorageError::from(StorageIOError::write_snapshot(sig, AnyError::new(&e))))?;
        tracing::info!(snapshot = %meta, bytes = data.len(), "built a snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Offline recovery

/// `swarm init --force-new-cluster`: keeps the state machine and the log up to the last
/// committed (or applied) entry, drops the uncommitted tail, and appends a membership entry
/// with this manager as the only voter, in a new term, with a committed vote for itself in
/// that term: on open, the node starts as the leader of a one-voter cluster and commits it.
pub(crate) fn force_new_cluster(
    dir: &Path,
    dek: &DataKey,
    raft_id: NodeId,
    addr: &str,
) -> Result<(), DbError> {
    let db = Db::open(dir, dek.clone())?;
    let vote: Option<Vote> = db.read_meta(K_VOTE)?;
    let committed: Option<LogId> = db.read_meta::<Option<LogId>>(K_COMMITTED)?.flatten();
    let purged: Option<LogId> = db.read_meta(K_PURGED)?;
    let applied: Option<LogId> = db.read_meta::<Option<LogId>>(K_APPLIED)?.flatten();
    let last_in_log = db.last_log_id()?;
    if vote.is_none() && last_in_log.is_none() && applied.is_none() && purged.is_none() {
        return Err(DbError::NotInitialized {
            path: db.path.clone(),
        });
    }
    // What is known to be committed: the log up to there is kept.
    let keep = [applied, committed].into_iter().flatten().max();
    if let Some(k) = keep {
        db.truncate_log(k.index + 1)?;
    }
    let last_in_log = db.last_log_id()?;
    let mut last = [last_in_log, purged, applied].into_iter().flatten().max();
    // The log must be contiguous from `purged + 1` to the new entry: if the state machine
    // is ahead of the log (a snapshot was installed), everything up to it counts as purged.
    if let Some(a) = applied
        && last_in_log.max(purged).map(|l| l.index) < Some(a.index)
    {
        db.purge_log(&a)?;
        last = Some(a);
    }
    let last_term = last.map(|l| l.leader_id.term).unwrap_or(0);
    let vote_term = vote.map(|v| v.leader_id.term).unwrap_or(0);
    let term = last_term.max(vote_term) + 1;
    let index = last.map(|l| l.index + 1).unwrap_or(0);
    let log_id = LogId::new(CommittedLeaderId::new(term, raft_id), index);
    let mut nodes = BTreeMap::new();
    nodes.insert(
        raft_id,
        Node {
            addr: addr.to_owned(),
        },
    );
    let membership = Membership::new(vec![BTreeSet::from([raft_id])], nodes);
    let entry = Entry {
        log_id,
        payload: EntryPayload::Membership(membership),
    };
    db.append_log(std::slice::from_ref(&entry))?;
    db.write_meta(K_VOTE, &Vote::new_committed(term, raft_id), true)?;
    tracing::warn!(
        path = %db.path.display(),
        raft_id,
        term,
        index,
        kept_up_to = ?keep.map(|k| k.index),
        "forced a new single-manager cluster"
    );
    Ok(())
}

/// Builds the storage pair on an open database (and the state shared with the store).
/// Builds the storage pair on an open database (and the state shared with the store).
/// The flag turns true once every user of the database is gone and it is closed.
pub(crate) fn open_storage(
    db: Db,
) -> Result<(LogStore, StateMachine, Arc<Shared>, Arc<AtomicBool>), DbError> {
    let state = db.load_state()?;
    let closed = db.closed.0.clone();
    let db = Arc::new(db);
    let shared = Arc::new(Shared::new(state));
    Ok((
        LogStore::new(db.clone()),
        StateMachine::new(db, shared.clone()),
        shared,
        closed,
    ))
}
