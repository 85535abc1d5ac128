//! [`Store`]: the replicated store of one manager, and its public surface.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::command::{ApplyOutcome, Event, Proposal};
use crate::crypto::DataKey;
use crate::model::StoredObject;
use crate::network::{self, Network, PeerHealth, RaftTransport};
use crate::raft_types::{NodeId, Raft};
use crate::storage::{self, Db, DbError, Shared};

/// How a manager's store is set up.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Where `state.redb` lives (`<data>/swarm`).
    pub dir: PathBuf,
    /// This manager's Raft ID (unique in the cluster, never reused).
    pub raft_id: u64,
    /// The advertised `ip:port` other managers reach this one at.
    pub addr: String,
    /// Entries between snapshots (Swarm's `--snapshot-interval`, default 10000).
    pub snapshot_interval: u64,
    /// Leader heartbeat period (default 100 ms).
    pub heartbeat: Duration,
    /// Election timeout range (default 300–600 ms). openraft adds a leader lease equal
    /// to the maximum: a follower that loses its leader stands after `max + rand(min,
    /// max)` plus up to 1.5 heartbeats of timer granularity, 0.9–1.35 s with the defaults,
    /// so failover stays under 2 s. (500–1000 ms would give 1.5–2.15 s.)
    pub election_timeout: (Duration, Duration),
    /// Entries kept after a snapshot for slow followers (Swarm default 500).
    pub log_entries_for_slow_followers: u64,
    /// How long a proposal may wait for a leader and a commit before `NoQuorum` (3 s).
    pub propose_timeout: Duration,
    /// How long `add_manager` waits for the new manager to catch up (60 s).
    pub catch_up_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dir: PathBuf::new(),
            raft_id: 0,
            addr: String::new(),
            snapshot_interval: 10_000,
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
            log_entries_for_slow_followers: 500,
            propose_timeout: Duration::from_secs(3),
            catch_up_timeout: Duration::from_secs(60),
        }
    }
}

impl StoreConfig {
    /// Defaults for a manager with this directory, ID and address.
    pub fn new(dir: impl Into<PathBuf>, raft_id: u64, addr: impl Into<String>) -> StoreConfig {
        StoreConfig {
            dir: dir.into(),
            raft_id,
            addr: addr.into(),
            ..StoreConfig::default()
        }
    }
}

/// Errors of the replicated store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// On-disk state (open, read, write, decrypt, decode, wrong data key).
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("invalid store configuration: {reason}")]
    Config { reason: String },
    /// This manager is not the leader: the caller forwards to `leader` (ID, address).
    #[error("this manager is not the Raft leader{}", match leader {
        Some((id, addr)) => format!(": the leader is manager {id} at {addr}"),
        None => " and no leader is known".to_owned(),
    })]
    NotLeader { leader: Option<(u64, String)> },
    /// No leader was elected, or the leader could not commit, within `propose_timeout`.
    #[error(
        "the swarm does not have a quorum of managers: the write was not committed in time. \
         Bring enough managers back, or recover on a surviving manager with \
         `swarm init --force-new-cluster`"
    )]
    NoQuorum,
    #[error(
        "manager {raft_id} did not catch up with the leader within {waited:?} (it has entry {matched:?} of {last})"
    )]
    CatchUpTimeout {
        raft_id: u64,
        matched: Option<u64>,
        last: u64,
        waited: Duration,
    },
    #[error("manager {raft_id} is the last voting manager: it cannot be removed")]
    LastVoter { raft_id: u64 },
    #[error(
        "removing manager {raft_id} would leave {reachable} reachable of {remaining} voting managers: the swarm would lose its quorum"
    )]
    WouldLoseQuorum {
        raft_id: u64,
        reachable: usize,
        remaining: usize,
    },
    #[error("changing the membership of manager {raft_id} failed: {reason}")]
    Membership { raft_id: u64, reason: String },
    /// The store has no membership yet: bootstrap it, or have the leader add it.
    #[error("manager {raft_id} is not part of a cluster yet")]
    NotInCluster { raft_id: u64 },
    #[error("the store of manager {raft_id} is shut down")]
    ShutDown { raft_id: u64 },
    #[error("raft {op} failed on manager {raft_id}: {reason}")]
    Raft {
        raft_id: u64,
        op: &'static str,
        reason: String,
    },
    #[error("manager {raft_id}: timed out after {waited:?} waiting for {what}")]
    Timeout {
        raft_id: u64,
        what: &'static str,
        waited: Duration,
    },
}

/// A manager's part in Raft.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RaftRole {
    Leader,
    #[default]
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

/// A snapshot of this manager's Raft state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RaftStatus {
    pub raft_id: u64,
    pub state: RaftRole,
    pub term: u64,
    pub leader: Option<u64>,
    pub leader_addr: Option<String>,
    /// Index of the last entry in the log (0: none).
    pub last_log_index: u64,
    /// Index of the last applied entry (0: none).
    pub last_applied: u64,
    /// Last index covered by the current snapshot (0: none).
    pub snapshot_index: u64,
    /// Last index purged from the log (0: none): entries up to here only exist in the
    /// snapshot.
    pub purged_index: u64,
    /// Voting managers: ID → address.
    pub voters: BTreeMap<u64, String>,
    /// Non-voting members (managers catching up): ID → address.
    pub learners: BTreeMap<u64, String>,
    /// The leader's view of which members answer (empty on other managers).
    pub reachable: BTreeMap<u64, bool>,
    /// On the leader: how long ago a quorum last acknowledged it.
    pub quorum_ack_age: Option<Duration>,
}

struct Inner {
    raft: Raft,
    cfg: StoreConfig,
    shared: Arc<Shared>,
    health: Arc<PeerHealth>,
    /// True once Raft's tasks let go of the database and it is closed.
    db_closed: Arc<AtomicBool>,
    /// One membership change at a time.
    membership: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    /// Entries between snapshots and entries kept after one; `snapshot_policy_loop`
    /// reads them.
    policy: Arc<SnapshotPolicyKnobs>,
}

/// The snapshot settings that can change while the store runs.
#[derive(Debug)]
struct SnapshotPolicyKnobs {
    interval: AtomicU64,
    keep: AtomicU64,
}

/// The replicated store of one manager. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("raft_id", &self.inner.cfg.raft_id)
            .field("addr", &self.inner.cfg.addr)
            .field("dir", &self.inner.cfg.dir)
            .finish()
    }
}

/// Entries a learner may still lag behind when it is made a voter.
const CATCH_UP_SLACK: u64 = 20;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn raft_config(cfg: &StoreConfig) -> Result<openraft::Config, StoreError> {
    let config = openraft::Config {
        cluster_name: "shoal".to_owned(),
        heartbeat_interval: ms(cfg.heartbeat).max(1),
        election_timeout_min: ms(cfg.election_timeout.0),
        election_timeout_max: ms(cfg.election_timeout.1),
        // Per snapshot chunk; generous for slow links.
        install_snapshot_timeout: 10_000,
        snapshot_max_chunk_size: 1 << 20,
        // Snapshots are triggered by `snapshot_policy_loop`, so the interval can follow
        // the cluster spec (`swarm update --snapshot-interval`) without a restart.
        snapshot_policy: SnapshotPolicy::Never,
        // Purging is `snapshot_policy_loop`'s too (the count follows the cluster spec).
        max_in_snapshot_log_to_keep: u64::MAX,
        ..openraft::Config::default()
    };
    config.validate().map_err(|e| StoreError::Config {
        reason: e.to_string(),
    })
}

/// Opens the database, waiting a little if a previous instance in this process is still
/// letting go of it (its Raft tasks end asynchronously after `shutdown`).
async fn open_db(dir: &Path, dek: DataKey) -> Result<Db, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d = dir.to_owned();
        let k = dek.clone();
        let res = tokio::task::spawn_blocking(move || Db::open(&d, k))
            .await
            .map_err(|source| DbError::Task {
                path: dir.to_owned(),
                source,
            })?;
        match res {
            Err(DbError::Open { source, .. })
                if matches!(*source, redb::DatabaseError::DatabaseAlreadyOpen)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Builds a snapshot each time `interval` entries were applied since the last one (what
/// openraft's `LogsSinceLast` policy does, with settings that can change at run time),
/// then purges the log up to `keep` entries before the snapshot (openraft still holds
/// back entries a follower is being sent). Ends when Raft shuts down.
async fn snapshot_policy_loop(raft: Raft, policy: Arc<SnapshotPolicyKnobs>) {
    let mut rx = raft.metrics();
    // The applied index a snapshot was last asked for: no second request until it exists.
    let mut requested: Option<u64> = None;
    let mut purge_requested = 0;
    loop {
        let (applied, snapshot, purged) = {
            let m = rx.borrow_and_update();
            (
                m.last_applied.map(|l| l.index).unwrap_or(0),
                m.snapshot.map(|l| l.index),
                m.purged.map(|l| l.index),
            )
        };
        let snapshot_index = snapshot.unwrap_or(0);
        if requested.is_some_and(|r| snapshot_index >= r) {
            requested = None;
        }
        let every = policy.interval.load(Ordering::Acquire).max(1);
        if requested.is_none() && applied.saturating_sub(snapshot_index) >= every {
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            requested = Some(applied);
        }
        if let Some(s) = snapshot {
            let keep = policy.keep.load(Ordering::Acquire);
            // Log indexes start at 0 in openraft (index 0 is the initial membership).
            let upto = s.checked_sub(keep);
            if let Some(upto) = upto
                && purged.is_none_or(|p| upto > p)
                && (purge_requested == 0 || upto > purge_requested)
            {
                if raft.trigger().purge_log(upto).await.is_err() {
                    return;
                }
                purge_requested = upto;
            }
        }
        let changed = tokio::time::timeout(Duration::from_secs(5), rx.changed()).await;
        if let Ok(Err(_)) = changed {
            return;
        }
        if changed.is_err() {
            // No progress for a while: a request may have been dropped (e.g. leadership
            // changed while building): ask again.
            requested = None;
            purge_requested = 0;
        }
    }
}

impl Store {
    /// Opens this manager's store (creating it if new) and starts its Raft node. A new
    /// store is uninitialized: call [`Store::bootstrap`] (first manager) or have the
    /// leader [`Store::add_manager`] it.
    pub async fn open(
        cfg: StoreConfig,
        dek: DataKey,
        transport: Arc<dyn RaftTransport>,
    ) -> Result<Store, StoreError> {
        let config = raft_config(&cfg)?;
        let db = open_db(&cfg.dir, dek).await?;
        let (log, sm, shared, db_closed) = storage::open_storage(db)?;
        let window = (cfg.election_timeout.1 * 2).max(Duration::from_secs(1));
        let health = Arc::new(PeerHealth::new(window));
        let backoff = (cfg.heartbeat * 2).min(Duration::from_millis(500));
        let network = Network::new(transport, health.clone(), backoff);
        let raft = Raft::new(cfg.raft_id, Arc::new(config), network, log, sm)
            .await
            .map_err(|e| StoreError::Raft {
                raft_id: cfg.raft_id,
                op: "start",
                reason: e.to_string(),
            })?;
        // A round trip through the Raft core: once it answers, it runs and has published
        // its metrics (status() right after open reflects the state on disk).
        let initialized = raft.is_initialized().await.map_err(|e| StoreError::Raft {
            raft_id: cfg.raft_id,
            op: "start",
            reason: e.to_string(),
        })?;
        tracing::info!(raft_id = cfg.raft_id, addr = %cfg.addr, dir = %cfg.dir.display(), initialized, "store opened");
        let policy = Arc::new(SnapshotPolicyKnobs {
            interval: AtomicU64::new(cfg.snapshot_interval.max(1)),
            keep: AtomicU64::new(cfg.log_entries_for_slow_followers),
        });
        tokio::spawn(snapshot_policy_loop(raft.clone(), policy.clone()));
        Ok(Store {
            inner: Arc::new(Inner {
                raft,
                cfg,
                shared,
                health,
                db_closed,
                membership: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
                policy,
            }),
        })
    }

    /// Sets the entries between snapshots and the entries kept in the log after one for
    /// slow followers (the cluster spec's `Raft.SnapshotInterval` and
    /// `Raft.LogEntriesForSlowFollowers`); takes effect at once.
    pub fn set_snapshot_policy(&self, interval: u64, keep: u64) {
        let p = &self.inner.policy;
        let old_interval = p.interval.swap(interval.max(1), Ordering::AcqRel);
        let old_keep = p.keep.swap(keep, Ordering::AcqRel);
        if old_interval != interval.max(1) || old_keep != keep {
            tracing::info!(
                raft_id = self.id(),
                interval,
                keep,
                "snapshot policy changed"
            );
        }
    }

    fn id(&self) -> u64 {
        self.inner.cfg.raft_id
    }

    fn fatal(&self, op: &'static str, e: openraft::error::Fatal<NodeId>) -> StoreError {
        match e {
            openraft::error::Fatal::Stopped => StoreError::ShutDown { raft_id: self.id() },
            other => StoreError::Raft {
                raft_id: self.id(),
                op,
                reason: other.to_string(),
            },
        }
    }

    fn write_error(
        &self,
        op: &'static str,
        raft_id: u64,
        e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    ) -> StoreError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => StoreError::NotLeader {
                leader: f.leader_id.map(|id| {
                    let addr = f
                        .leader_node
                        .map(|n| n.addr)
                        .or_else(|| self.addr_of(id))
                        .unwrap_or_default();
                    (id, addr)
                }),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                StoreError::Membership {
                    raft_id,
                    reason: c.to_string(),
                }
            }
            RaftError::Fatal(f) => self.fatal(op, f),
        }
    }

    /// A failed wait on the metrics: a timeout, or Raft stopped (with the reason, if it
    /// stopped on an error).
    fn wait_error(
        &self,
        e: openraft::metrics::WaitError,
        op: &'static str,
        what: &'static str,
        waited: Duration,
    ) -> StoreError {
        match e {
            openraft::metrics::WaitError::Timeout(..) => StoreError::Timeout {
                raft_id: self.id(),
                what,
                waited,
            },
            openraft::metrics::WaitError::ShuttingDown => {
                let state = self.inner.raft.metrics().borrow().running_state.clone();
                match state {
                    Err(fatal) => self.fatal(op, fatal),
                    Ok(()) => StoreError::ShutDown { raft_id: self.id() },
                }
            }
        }
    }

    fn addr_of(&self, id: u64) -> Option<String> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// Makes this manager the single voter of a new cluster (`swarm init`). A no-op if the
    /// store is already part of a cluster. Returns once it leads.
    pub async fn bootstrap(&self) -> Result<(), StoreError> {
        let raft = &self.inner.raft;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| self.fatal("bootstrap", e))?;
        if !initialized {
            let mut nodes = BTreeMap::new();
            nodes.insert(
                self.id(),
                BasicNode {
                    addr: self.inner.cfg.addr.clone(),
                },
            );
            match raft.initialize(nodes).await {
                Ok(()) => {}
                // Raced with something that initialized it: fine.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => return Ok(()),
                Err(RaftError::APIError(e)) => {
                    return Err(StoreError::Raft {
                        raft_id: self.id(),
                        op: "bootstrap",
                        reason: e.to_string(),
                    });
                }
                Err(RaftError::Fatal(f)) => return Err(self.fatal("bootstrap", f)),
            }
            let wait = Duration::from_secs(10);
            let me = self.id();
            raft.wait(Some(wait))
                .metrics(
                    |m| m.current_leader == Some(me) && m.state == ServerState::Leader,
                    "leader",
                )
                .await
                .map_err(|e| {
                    self.wait_error(e, "bootstrap", "this manager to lead its new cluster", wait)
                })?;
        }
        Ok(())
    }

    /// Waits until a leader is known: Ok if it is this manager, `NotLeader` if another,
    /// `NoQuorum` at the deadline.
    /// How long one election may take: a follower stands after at most twice the maximum
    /// election timeout, plus timer slack.
    fn election_window(&self) -> Duration {
        (self.inner.cfg.election_timeout.1 * 3).max(Duration::from_millis(1500))
    }

    /// Whether a leader's last acknowledgement from a quorum is too old for it to still
    /// have one (heartbeats go out every `heartbeat`; a few may be lost).
    fn quorum_stale(&self, millis_since_ack: Option<u64>) -> bool {
        let limit = (self.inner.cfg.election_timeout.1 * 2).max(Duration::from_secs(1));
        millis_since_ack.is_some_and(|a| Duration::from_millis(a) > limit)
    }

    /// Returns once this manager leads without a recent quorum acknowledgement (it was cut
    /// off); pending otherwise. Raft reports its metrics at least every tick.
    async fn quorum_lost(&self) {
        let mut rx = self.inner.raft.metrics();
        loop {
            {
                let m = rx.borrow_and_update();
                if m.state == ServerState::Leader && self.quorum_stale(m.millis_since_quorum_ack) {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                // Raft stopped: the write itself reports that.
                std::future::pending::<()>().await;
            }
        }
    }

    async fn ensure_leader(&self, deadline: Instant, started: Instant) -> Result<(), StoreError> {
        let mut rx = self.inner.raft.metrics();
        loop {
            let decision = {
                let m = rx.borrow_and_update();
                if let Err(fatal) = &m.running_state {
                    Some(Err(self.fatal("propose", fatal.clone())))
                } else if m.state == ServerState::Shutdown {
                    Some(Err(StoreError::ShutDown { raft_id: self.id() }))
                } else if m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .next()
                    .is_none()
                {
                    Some(Err(StoreError::NotInCluster { raft_id: self.id() }))
                } else {
                    match m.current_leader {
                        // A leader cut off from its quorum cannot commit: say so now.
                        Some(l)
                            if l == self.id()
                                && m.state == ServerState::Leader
                                && self.quorum_stale(m.millis_since_quorum_ack) =>
                        {
                            Some(Err(StoreError::NoQuorum))
                        }
                        Some(l) if l == self.id() && m.state == ServerState::Leader => Some(Ok(())),
                        Some(l) if l != self.id() => {
                            let addr = m
                                .membership_config
                                .membership()
                                .get_node(&l)
                                .map(|n| n.addr.clone())
                                .unwrap_or_default();
                            Some(Err(StoreError::NotLeader {
                                leader: Some((l, addr)),
                            }))
                        }
                        _ => None,
                    }
                }
            };
            if let Some(d) = decision {
                return d;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => {
                    tracing::debug!(raft_id = self.id(), waited = ?started.elapsed(), "no leader");
                    return Err(StoreError::NoQuorum);
                }
                Ok(Err(_)) => return Err(StoreError::ShutDown { raft_id: self.id() }),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Replicates a proposal and returns how it applied. On a follower: `NotLeader` with
    /// the leader (the caller forwards). Without a leader or quorum: `NoQuorum` after
    /// `propose_timeout` (~3 s), never a hang. (A `NoQuorum` write was not committed in
    /// time; it is normally discarded, but may still apply if the old leader regains its
    /// quorum: retrying with versions is safe.)
    pub async fn propose(&self, p: Proposal) -> Result<ApplyOutcome, StoreError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::ShutDown { raft_id: self.id() });
        }
        let started = Instant::now();
        let deadline = started + self.inner.cfg.propose_timeout;
        // Without a leader, wait out one election (a dead leader is replaced within
        // ~1.4 s with the defaults), not the whole proposal timeout.
        let leaderless = started + self.election_window();
        self.ensure_leader(deadline.min(leaderless), started)
            .await?;
        let write = tokio::select! {
            r = tokio::time::timeout_at(deadline, self.inner.raft.client_write(p)) => r,
            () = self.quorum_lost() => {
                tracing::warn!(raft_id = self.id(), waited = ?started.elapsed(), "leader lost its quorum: proposal refused");
                return Err(StoreError::NoQuorum);
            }
        };
        match write {
            Err(_) => {
                tracing::warn!(
                    raft_id = self.id(),
                    waited = ?started.elapsed(),
                    "proposal not committed in time: no quorum"
                );
                Err(StoreError::NoQuorum)
            }
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(e)) => Err(self.write_error("propose", self.id(), e)),
        }
    }

    /// One object from this manager's state machine (possibly stale on a follower).
    pub fn get<T: StoredObject>(&self, id: &str) -> Result<Option<T>, StoreError> {
        let st = self.inner.shared.read();
        Ok(st
            .objects
            .get(&T::KIND)
            .and_then(|t| t.get(id))
            .and_then(T::from_object)
            .cloned())
    }

    /// Every object of a kind, by ID, from this manager's state machine.
    pub fn list<T: StoredObject>(&self) -> Result<Vec<T>, StoreError> {
        let st = self.inner.shared.read();
        Ok(st
            .objects
            .get(&T::KIND)
            .map(|t| t.values().filter_map(T::from_object).cloned().collect())
            .unwrap_or_default())
    }

    /// Object changes as they are applied on this manager, in order. A receiver that falls
    /// more than ~1024 events behind gets `Lagged` and should re-list.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.shared.events.subscribe()
    }

    /// Adds a manager (on the leader): as a learner first, then, once it has caught up
    /// (by log replication or snapshot install), as a voter. One change at a time.
    /// Idempotent for a manager that is already a voter at `addr`.
    pub async fn add_manager(&self, raft_id: u64, addr: String) -> Result<(), StoreError> {
        let _one = self.inner.membership.lock().await;
        let started = Instant::now();
        let raft = &self.inner.raft;
        self.ensure_leader(started + self.inner.cfg.propose_timeout, started)
            .await?;
        let (is_voter, known_addr) = {
            let m = raft.metrics();
            let m = m.borrow();
            let mem = m.membership_config.membership();
            (
                mem.voter_ids().any(|v| v == raft_id),
                mem.get_node(&raft_id).map(|n| n.addr.clone()),
            )
        };
        let node = BasicNode { addr: addr.clone() };
        if is_voter {
            if known_addr.as_deref() != Some(addr.as_str()) {
                self.change_membership(
                    raft_id,
                    ChangeMembers::SetNodes(BTreeMap::from([(raft_id, node)])),
                    "update a manager's address",
                )
                .await?;
            }
            return Ok(());
        }
        match known_addr {
            None => {
                let fut = raft.add_learner(raft_id, node, false);
                match tokio::time::timeout(self.inner.cfg.propose_timeout, fut).await {
                    Err(_) => return Err(StoreError::NoQuorum),
                    Ok(r) => {
                        r.map_err(|e| self.write_error("add learner", raft_id, e))?;
                    }
                }
            }
            Some(a) if a != addr => {
                self.change_membership(
                    raft_id,
                    ChangeMembers::SetNodes(BTreeMap::from([(raft_id, node)])),
                    "update a learner's address",
                )
                .await?;
            }
            Some(_) => {}
        }
        tracing::info!(raft_id, %addr, "manager added as learner, waiting for it to catch up");
        let wait = self.inner.cfg.catch_up_timeout;
        let deadline = Instant::now() + wait;
        let mut rx = raft.metrics();
        loop {
            let (leader, matched, last) = {
                let m = rx.borrow_and_update();
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&raft_id))
                    .and_then(|l| l.map(|l| l.index));
                (
                    m.state == ServerState::Leader,
                    matched,
                    m.last_log_index.unwrap_or(0),
                )
            };
            if !leader {
                return Err(StoreError::NotLeader {
                    leader: raft
                        .current_leader()
                        .await
                        .map(|l| (l, self.addr_of(l).unwrap_or_default())),
                });
            }
            if matched.is_some_and(|i| i + CATCH_UP_SLACK >= last) {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => {
                    tracing::warn!(
                        raft_id,
                        ?matched,
                        last,
                        "manager did not catch up: removing the learner"
                    );
                    let _ = self
                        .change_membership(
                            raft_id,
                            ChangeMembers::RemoveNodes([raft_id].into()),
                            "remove a learner",
                        )
                        .await;
                    return Err(StoreError::CatchUpTimeout {
                        raft_id,
                        matched,
                        last,
                        waited: wait,
                    });
                }
                Ok(Err(_)) => return Err(StoreError::ShutDown { raft_id: self.id() }),
                Ok(Ok(())) => {}
            }
        }
        self.change_membership(
            raft_id,
            ChangeMembers::AddVoterIds([raft_id].into()),
            "promote a learner",
        )
        .await?;
        tracing::info!(raft_id, %addr, "manager is now a voter");
        Ok(())
    }

    async fn change_membership(
        &self,
        raft_id: u64,
        change: ChangeMembers<NodeId, BasicNode>,
        what: &'static str,
    ) -> Result<(), StoreError> {
        let wait = self.inner.cfg.catch_up_timeout;
        match tokio::time::timeout(wait, self.inner.raft.change_membership(change, false)).await {
            Err(_) => Err(StoreError::Timeout {
                raft_id: self.id(),
                what,
                waited: wait,
            }),
            Ok(r) => r
                .map(|_| ())
                .map_err(|e| self.write_error("change membership", raft_id, e)),
        }
    }

    /// Removes a manager from Raft (on the leader). Refuses to remove the last voter, or a
    /// voter whose removal would leave fewer reachable voters than a quorum. Removing a
    /// manager that is not a member is a no-op.
    pub async fn remove_manager(&self, raft_id: u64) -> Result<(), StoreError> {
        let _one = self.inner.membership.lock().await;
        let started = Instant::now();
        self.ensure_leader(started + self.inner.cfg.propose_timeout, started)
            .await?;
        let (voters, is_member) = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            let mem = m.membership_config.membership();
            (
                mem.voter_ids().collect::<Vec<_>>(),
                mem.get_node(&raft_id).is_some(),
            )
        };
        if !is_member {
            return Ok(());
        }
        if !voters.contains(&raft_id) {
            return self
                .change_membership(
                    raft_id,
                    ChangeMembers::RemoveNodes([raft_id].into()),
                    "remove a learner",
                )
                .await;
        }
        if voters.len() == 1 {
            return Err(StoreError::LastVoter { raft_id });
        }
        let remaining: Vec<u64> = voters.iter().copied().filter(|v| *v != raft_id).collect();
        let reachable = remaining
            .iter()
            .filter(|v| **v == self.id() || self.inner.health.reachable(**v))
            .count();
        if reachable < remaining.len() / 2 + 1 {
            return Err(StoreError::WouldLoseQuorum {
                raft_id,
                reachable,
                remaining: remaining.len(),
            });
        }
        self.change_membership(
            raft_id,
            ChangeMembers::RemoveVoters([raft_id].into()),
            "remove a voter",
        )
        .await?;
        tracing::info!(raft_id, "manager removed");
        Ok(())
    }

    /// This manager's Raft state.
    pub fn status(&self) -> RaftStatus {
        let rx = self.inner.raft.metrics();
        let m = rx.borrow();
        let mem = m.membership_config.membership();
        let addr = |id: u64| {
            mem.get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default()
        };
        let voters: BTreeMap<u64, String> = mem.voter_ids().map(|id| (id, addr(id))).collect();
        let learners: BTreeMap<u64, String> = mem.learner_ids().map(|id| (id, addr(id))).collect();
        let state = match m.state {
            ServerState::Leader => RaftRole::Leader,
            ServerState::Follower => RaftRole::Follower,
            ServerState::Candidate => RaftRole::Candidate,
            ServerState::Learner => RaftRole::Learner,
            ServerState::Shutdown => RaftRole::Shutdown,
        };
        let reachable = if state == RaftRole::Leader {
            mem.nodes()
                .map(|(id, _)| (*id, *id == self.id() || self.inner.health.reachable(*id)))
                .collect()
        } else {
            BTreeMap::new()
        };
        RaftStatus {
            raft_id: self.id(),
            state,
            term: m.current_term,
            leader: m.current_leader,
            leader_addr: m.current_leader.map(addr),
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            voters,
            learners,
            reachable,
            quorum_ack_age: m.millis_since_quorum_ack.map(Duration::from_millis),
        }
    }

    /// Waits (up to `timeout`) until this manager has applied the entry at `index`, so a
    /// write forwarded to the leader is visible in local reads when the caller returns.
    /// Returns whether it was applied in time; a late apply is not an error (the entry is
    /// committed, this replica is just behind).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        self.inner
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.last_applied.is_some_and(|l| l.index >= index),
                "entry applied",
            )
            .await
            .is_ok()
    }

    /// Returns once this manager's view of the leader is no longer `from` (an election
    /// happened, or the leader became known), or the store shut down. Callers waiting on a
    /// leader that may have died race their call against this.
    pub async fn leader_changed(&self, from: Option<u64>) {
        let mut rx = self.inner.raft.metrics();
        loop {
            if rx.borrow_and_update().current_leader != from {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Handles a message another manager's transport delivered; returns the answer to
    /// send back. Never fails: errors are encoded in the answer.
    pub async fn handle_message(&self, message: Vec<u8>) -> Vec<u8> {
        network::handle_message(&self.inner.raft, &message).await
    }

    /// Builds a snapshot now (tests, benchmarks) and waits for it.
    pub async fn snapshot_now(&self) -> Result<(), StoreError> {
        let raft = &self.inner.raft;
        let applied = raft.metrics().borrow().last_applied.map(|l| l.index);
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| self.fatal("snapshot", e))?;
        let wait = Duration::from_secs(30);
        raft.wait(Some(wait))
            .metrics(|m| m.snapshot.map(|l| l.index) >= applied, "snapshot")
            .await
            .map_err(|e| self.wait_error(e, "snapshot", "a snapshot", wait))?;
        Ok(())
    }

    /// Stops this manager's Raft node and closes the database (it can be reopened as soon
    /// as this returns). Reads keep answering from the last state; writes fail with
    /// `ShutDown`.
    pub async fn shutdown(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(raft_id = self.id(), error = %e, "raft did not stop cleanly");
        }
        // Raft's state machine and replication tasks end on their own shortly after the
        // core: wait for them to release the database, so it can be reopened (restart,
        // force-new-cluster) as soon as this returns.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.inner.db_closed.load(Ordering::Acquire) {
            if Instant::now() >= deadline {
                tracing::warn!(
                    raft_id = self.id(),
                    "the database is still in use after shutdown"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(raft_id = self.id(), "store shut down");
    }

    /// Offline, before `open`: keeps the state and makes this manager the only voter in a
    /// new term (`swarm init --force-new-cluster`). On open it leads at once, with every
    /// object it had.
    pub fn force_new_cluster(
        dir: &Path,
        dek: &DataKey,
        raft_id: u64,
        addr: &str,
    ) -> Result<(), StoreError> {
        storage::force_new_cluster(dir, dek, raft_id, addr)?;
        Ok(())
    }
}
