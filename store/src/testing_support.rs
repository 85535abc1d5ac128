//! Test support that needs the crate's private storage types: runs openraft's own
//! storage conformance suite against the redb log store and state machine. Not API.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use openraft::testing::{StoreBuilder, Suite};

use crate::StoreError;
use crate::crypto::DataKey;
use crate::raft_types::{StorageError, TypeConfig};
use crate::storage::{self, Db, LogStore, StateMachine};

struct Builder {
    base: PathBuf,
    next: AtomicU8,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for Builder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.base.join(format!("store-{n}"));
        let to_sto = |e: storage::DbError| {
            StorageError::from(openraft::StorageIOError::write(openraft::AnyError::new(&e)))
        };
        let db = Db::open(&dir, DataKey::from_bytes([n; 32])).map_err(to_sto)?;
        let (log, sm, _shared, _db) = storage::open_storage(db).map_err(to_sto)?;
        Ok(((), log, sm))
    }
}

/// Runs `openraft::testing::Suite::test_all` on fresh stores under `base` (one directory
/// per store the suite builds). Call it outside a tokio runtime: the suite makes its own.
pub fn run_openraft_suite(base: &Path) -> Result<(), StoreError> {
    let builder = Builder {
        base: base.to_owned(),
        next: AtomicU8::new(1),
    };
    Suite::test_all(builder).map_err(|e| StoreError::Raft {
        raft_id: 0,
        op: "storage conformance suite",
        reason: e.to_string(),
    })
}
