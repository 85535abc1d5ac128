//! In-process harness: a `RaftTransport` that routes bytes between `Store`s of this
//! process, with switches to cut nodes off, and helpers to build clusters on real redb
//! files in temporary directories.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use shoal_store::crypto::DataKey;
use shoal_store::model::Service;
use shoal_store::{
    Action, ApplyOutcome, Object, Proposal, RaftRole, RaftTransport, Store, StoreConfig,
    StoreError, TransportError,
};

/// The in-process network.
#[derive(Clone, Default)]
pub struct Net {
    inner: Arc<Mutex<NetState>>,
}

#[derive(Default)]
struct NetState {
    stores: HashMap<u64, Store>,
    /// Nodes cut off from everyone.
    isolated: HashSet<u64>,
    /// Messages delivered, per (from, to).
    delivered: HashMap<(u64, u64), u64>,
}

impl Net {
    /// The transport a node `from` uses.
    pub fn link(&self, from: u64) -> Arc<dyn RaftTransport> {
        Arc::new(Link {
            from,
            net: self.clone(),
        })
    }

    pub fn register(&self, id: u64, store: Store) {
        self.inner.lock().unwrap().stores.insert(id, store);
    }

    pub fn unregister(&self, id: u64) {
        self.inner.lock().unwrap().stores.remove(&id);
    }

    /// Cuts `id` off: nothing reaches it, nothing it sends arrives.
    pub fn isolate(&self, id: u64) {
        self.inner.lock().unwrap().isolated.insert(id);
    }

    pub fn heal(&self, id: u64) {
        self.inner.lock().unwrap().isolated.remove(&id);
    }

    fn blocked(&self, from: u64, to: u64) -> bool {
        let st = self.inner.lock().unwrap();
        st.isolated.contains(&from) || st.isolated.contains(&to)
    }

    pub fn delivered(&self, from: u64, to: u64) -> u64 {
        *self
            .inner
            .lock()
            .unwrap()
            .delivered
            .get(&(from, to))
            .unwrap_or(&0)
    }
}

struct Link {
    from: u64,
    net: Net,
}

impl RaftTransport for Link {
    fn call(
        &self,
        target: u64,
        addr: String,
        message: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let from = self.from;
        let net = self.net.clone();
        let store = if net.blocked(from, target) {
            None
        } else {
            net.inner.lock().unwrap().stores.get(&target).cloned()
        };
        Box::pin(async move {
            let unreachable = |why: &'static str| TransportError::Unreachable {
                target,
                addr: addr.clone(),
                source: why.into(),
            };
            let Some(store) = store else {
                return Err(unreachable("no route to the manager"));
            };
            let answer = store.handle_message(message).await;
            // Cut while the message was in flight: the answer is lost.
            if net.blocked(from, target) {
                return Err(unreachable("link cut"));
            }
            *net.inner
                .lock()
                .unwrap()
                .delivered
                .entry((from, target))
                .or_default() += 1;
            Ok(answer)
        })
    }
}

/// A test data key.
pub fn dek(n: u8) -> DataKey {
    DataKey::from_bytes([n; 32])
}

pub fn addr(id: u64) -> String {
    format!("10.0.0.{id}:4242")
}

/// Defaults as the daemon uses them.
pub fn config(dir: &Path, id: u64) -> StoreConfig {
    StoreConfig::new(dir.join(format!("m{id}")), id, addr(id))
}

/// Opens a store and puts it on the network.
pub async fn start(net: &Net, cfg: StoreConfig) -> Store {
    let id = cfg.raft_id;
    let store = Store::open(cfg, dek(id as u8), net.link(id)).await.unwrap();
    net.register(id, store.clone());
    store
}

/// Stops a store and takes it off the network (as a crash would, minus the disk).
pub async fn stop(net: &Net, store: &Store) {
    net.unregister(store.status().raft_id);
    store.shutdown().await;
}

/// A cluster of `n` managers formed as `swarm init` + joins would: bootstrap the first,
/// add the others one at a time.
pub async fn cluster(
    net: &Net,
    dir: &Path,
    n: u64,
    tweak: impl Fn(&mut StoreConfig),
) -> BTreeMap<u64, Store> {
    let mut stores = BTreeMap::new();
    for id in 1..=n {
        let mut cfg = config(dir, id);
        tweak(&mut cfg);
        stores.insert(id, start(net, cfg).await);
    }
    stores[&1].bootstrap().await.unwrap();
    for id in 2..=n {
        stores[&1].add_manager(id, addr(id)).await.unwrap();
    }
    stores
}

pub fn service(id: &str, name: &str) -> Service {
    let mut s = Service {
        id: id.to_owned(),
        ..Default::default()
    };
    s.spec.name = name.to_owned();
    s
}

pub fn create(id: &str, name: &str) -> Proposal {
    Proposal {
        actions: vec![Action::Create(Object::Service(service(id, name)))],
        at: Utc::now(),
    }
}

pub fn update(s: Service) -> Proposal {
    Proposal {
        actions: vec![Action::Update(Object::Service(s))],
        at: Utc::now(),
    }
}

/// Polls `f` until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ID of the leader the given stores agree on (waits for one).
pub async fn leader(stores: &[&Store], timeout: Duration) -> u64 {
    let start = Instant::now();
    loop {
        let leaders: Vec<u64> = stores
            .iter()
            .filter(|s| s.status().state == RaftRole::Leader)
            .map(|s| s.status().raft_id)
            .collect();
        if leaders.len() == 1 {
            let l = leaders[0];
            if stores.iter().all(|s| s.status().leader == Some(l)) {
                return l;
            }
        }
        assert!(
            start.elapsed() < timeout,
            "no agreed leader after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Proposes until accepted (retrying NotLeader/NoQuorum), returns the outcome and when.
pub async fn propose_until_accepted(
    stores: &[&Store],
    p: Proposal,
    timeout: Duration,
) -> (ApplyOutcome, Instant) {
    let start = Instant::now();
    loop {
        for s in stores {
            match s.propose(p.clone()).await {
                Ok(o) => return (o, Instant::now()),
                Err(StoreError::NotLeader { .. }) | Err(StoreError::NoQuorum) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert!(
            start.elapsed() < timeout,
            "no write accepted within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn db_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("m{id}")).join(shoal_store::DB_FILE)
}
