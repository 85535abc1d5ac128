//! Manager services: the replicated store, the control operations behind `swarm …` and
//! `node …`, the node-facing RPCs (join, renew, heartbeat, Raft), and forwarding of
//! leader-only work to the current Raft leader.
//!
//! Reads come from the local store (a follower may lag a little); writes are proposals that
//! only the leader can replicate: a follower forwards them. Read-modify-write operations
//! carry the version they read (optimistic concurrency) and retry on a conflict.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use shoal_store::crypto::KeyEncryptionKey;
use shoal_store::model::StoredObject;
use shoal_store::model::{self as m, Cluster, ClusterSpec, Node, NodeSpec, Role};
use shoal_store::{Action, ApplyOutcome, Object, Proposal, RaftTransport, Store, StoreError};

use crate::SwarmError;
use crate::dispatcher::Dispatcher;
use crate::pki::{self, JoinToken, RootCa};
use crate::rpc::{
    self, JoinRequest, JoinResponse, LeaderOp, LeaderOpResponse, RenewRequest, RenewResponse, code,
    method,
};
use crate::state::NodeState;
use crate::swarm::{ClusterInfo, Member, host_of, new_raft_id, remote};
use crate::transport::{Endpoint, Peer, RemoteError, TransportError};

/// The store's Raft messages over the cluster port.
pub(crate) struct RaftOverQuic {
    pub endpoint: Endpoint,
}

impl RaftTransport for RaftOverQuic {
    fn call(
        &self,
        target: u64,
        addr: String,
        message: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, shoal_store::TransportError>> {
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let sa: SocketAddr = addr.parse().map_err(|e: std::net::AddrParseError| {
                shoal_store::TransportError::Unreachable {
                    target,
                    addr: addr.clone(),
                    source: Box::new(e),
                }
            })?;
            endpoint
                .call(sa, pki::MANAGER_SERVER_NAME, method::RAFT, message)
                .await
                .map_err(|e| {
                    if e.is_unreachable() {
                        shoal_store::TransportError::Unreachable {
                            target,
                            addr: addr.clone(),
                            source: Box::new(e),
                        }
                    } else {
                        shoal_store::TransportError::Failed {
                            target,
                            addr: addr.clone(),
                            source: Box::new(e),
                        }
                    }
                })
        })
    }
}

/// One row of `node ls` / the body of `node inspect`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeView {
    pub node: Node,
    /// `Leader`, `Reachable`, `Unreachable`, or empty for workers.
    pub manager_status: String,
    pub is_self: bool,
}

/// The manager services of this node.
pub struct Manager {
    member: Weak<Member>,
    store: Store,
    node_id: String,
    cluster_id: String,
    raft_id: u64,
    pub(crate) dispatcher: Dispatcher,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// How long a forwarded leader operation may take before the caller is told there is no
/// quorum.
const LEADER_DEADLINE: Duration = Duration::from_secs(4);

/// How long one forwarded call may wait for the leader: a dead leader must not stall the
/// caller past the election that replaces it (the loop then asks the new leader; proposals
/// are versioned, so a retried one that had landed comes back as a conflict, not twice).
const FORWARD_TIMEOUT: Duration = Duration::from_millis(1500);

impl Manager {
    pub(crate) fn start(member: Weak<Member>, store: Store, state: NodeState) -> Arc<Manager> {
        let mgr = Arc::new(Manager {
            member,
            store,
            node_id: state.node_id,
            cluster_id: state.cluster_id,
            raft_id: state.raft_id,
            dispatcher: Dispatcher::default(),
            tasks: Mutex::new(Vec::new()),
        });
        let bg = tokio::spawn(crate::dispatcher::leader_loop(Arc::downgrade(&mgr)));
        let locker = tokio::spawn(cluster_settings_loop(Arc::downgrade(&mgr)));
        let reconciler = tokio::spawn(crate::reconciler::run(Arc::downgrade(&mgr)));
        if let Ok(mut t) = mgr.tasks.lock() {
            t.push(bg);
            t.push(locker);
            t.push(reconciler);
        }
        mgr
    }

    /// The replicated store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn member(&self) -> Option<Arc<Member>> {
        self.member.upgrade()
    }

    /// This node's ID.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub(crate) fn raft_id(&self) -> u64 {
        self.raft_id
    }

    /// Stops background work and the store.
    pub async fn shutdown(&self) {
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in tasks {
            t.abort();
        }
        self.store.shutdown().await;
    }

    /// Waits until some manager leads (ours or another).
    pub async fn wait_leader(&self, timeout: Duration) -> Result<(), SwarmError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.store.status().leader.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(SwarmError::NoQuorum)
    }

    /// Whether this manager currently leads.
    pub fn is_leader(&self) -> bool {
        self.store.status().leader == Some(self.raft_id)
    }

    // ----- leader forwarding -----------------------------------------------------------

    /// Runs a leader-only operation here when this manager leads, else on the leader.
    pub async fn leader_op(&self, op: LeaderOp) -> Result<LeaderOpResponse, SwarmError> {
        let deadline = Instant::now() + LEADER_DEADLINE;
        loop {
            match self.run_leader_op(&op).await {
                Ok(r) => return Ok(r),
                Err(StoreError::NotLeader {
                    leader: Some((id, addr)),
                }) if id != self.raft_id => {
                    // A dead leader answers nothing: stop waiting as soon as an election
                    // names another one.
                    let forwarded = tokio::select! {
                        r = self.forward(&addr, &op) => r,
                        () = self.store.leader_changed(Some(id)) => {
                            tracing::debug!(old_leader = id, "leader changed while forwarding; retrying");
                            continue;
                        }
                    };
                    match forwarded {
                        Ok(r) => return Ok(r),
                        Err(SwarmError::Transport(TransportError::Remote { code: c, .. }))
                            if c == code::NOT_LEADER && Instant::now() < deadline =>
                        {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(SwarmError::Transport(t))
                            if Instant::now() < deadline && !is_remote(&t) =>
                        {
                            tracing::debug!(error = %t, "leader unreachable; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                // Not a Raft member yet (a joining manager): ask the managers it knows of.
                Err(StoreError::NotInCluster { .. }) => {
                    let known = self
                        .member()
                        .and_then(|m| m.state.read().ok().map(|s| s.managers.clone()))
                        .unwrap_or_default();
                    let mut last = SwarmError::NoQuorum;
                    for addr in &known {
                        match self.forward(addr, &op).await {
                            Ok(r) => return Ok(r),
                            Err(e) => last = e,
                        }
                    }
                    if Instant::now() >= deadline {
                        return Err(last);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                // The store already waited out an election: no quorum is the answer.
                Err(StoreError::NoQuorum) => return Err(SwarmError::NoQuorum),
                Err(StoreError::NotLeader { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(StoreError::NotLeader { .. }) => {
                    return Err(SwarmError::NoQuorum);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn run_leader_op(&self, op: &LeaderOp) -> Result<LeaderOpResponse, StoreError> {
        match op {
            LeaderOp::Propose(p) => Ok(LeaderOpResponse {
                outcome: Some(self.store.propose(p.clone()).await?),
            }),
            LeaderOp::AddManager { raft_id, addr } => {
                self.store.add_manager(*raft_id, addr.clone()).await?;
                // Record where the new manager answers (we lead: propose directly).
                for _ in 0..5 {
                    let node = self.store.list::<Node>()?.into_iter().find(|n| {
                        n.manager_status
                            .as_ref()
                            .is_some_and(|s| s.raft_id == *raft_id)
                    });
                    let Some(mut node) = node else { break };
                    if let Some(s) = node.manager_status.as_mut() {
                        s.addr = addr.clone();
                        s.reachability = m::Reachability::Reachable;
                    }
                    node.role = Role::Manager;
                    let outcome = self
                        .store
                        .propose(Proposal {
                            actions: vec![Action::Update(Object::Node(node))],
                            at: Utc::now(),
                        })
                        .await?;
                    if matches!(outcome, ApplyOutcome::Applied { .. }) {
                        break;
                    }
                }
                Ok(LeaderOpResponse::default())
            }
            LeaderOp::RemoveManager { raft_id } => {
                self.store.remove_manager(*raft_id).await?;
                Ok(LeaderOpResponse::default())
            }
        }
    }

    async fn forward(&self, addr: &str, op: &LeaderOp) -> Result<LeaderOpResponse, SwarmError> {
        let member = self.member().ok_or(SwarmError::NotManager)?;
        let sa: SocketAddr = addr
            .parse()
            .map_err(|_| SwarmError::Internal(format!("invalid leader address {addr}")))?;
        let body = serde_json::to_vec(op).map_err(|e| SwarmError::Internal(e.to_string()))?;
        let out = member
            .endpoint
            .call_with_timeout(
                sa,
                pki::MANAGER_SERVER_NAME,
                method::LEADER_OP,
                body,
                FORWARD_TIMEOUT,
            )
            .await
            .map_err(SwarmError::Transport)?;
        serde_json::from_slice(&out).map_err(|e| SwarmError::Internal(e.to_string()))
    }

    /// Replicates a proposal (on the leader); a conflict or missing object is an error.
    pub async fn propose(&self, p: Proposal) -> Result<u64, SwarmError> {
        let r = self.leader_op(LeaderOp::Propose(p)).await?;
        match r.outcome {
            Some(ApplyOutcome::Applied { index }) => {
                // Read your writes: a forwarded write is visible here once we return.
                if !self.store.wait_applied(index, Duration::from_secs(2)).await {
                    tracing::debug!(index, "write committed but not applied here yet");
                }
                Ok(index)
            }
            Some(ApplyOutcome::Conflict { kind, id, .. }) => {
                Err(SwarmError::Conflict(format!("{kind:?} {id}")))
            }
            Some(ApplyOutcome::Exists { kind, id }) => Err(SwarmError::Conflict(format!(
                "{kind:?} {id} already exists"
            ))),
            Some(ApplyOutcome::NotFound { kind, id }) => {
                Err(SwarmError::NotFound(format!("{kind:?} {id}")))
            }
            None => Err(SwarmError::Internal("the leader gave no outcome".into())),
        }
    }

    /// Read-modify-write of one object with retries on version conflicts (the local store
    /// may lag the leader).
    pub async fn modify<T, F>(&self, id: &str, mut f: F) -> Result<T, SwarmError>
    where
        T: StoredObject,
        F: FnMut(&mut T) -> Result<(), SwarmError>,
    {
        let mut last = SwarmError::Conflict(id.to_owned());
        for attempt in 0..8 {
            let mut obj: T = self
                .store
                .get::<T>(id)?
                .ok_or_else(|| SwarmError::NotFound(id.to_owned()))?;
            f(&mut obj)?;
            match self
                .propose(Proposal {
                    actions: vec![Action::Update(obj.clone().into_object())],
                    at: Utc::now(),
                })
                .await
            {
                Ok(_) => return Ok(obj),
                Err(SwarmError::Conflict(c)) => {
                    last = SwarmError::Conflict(c);
                    tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn modify_nodes_where(
        &self,
        pred: impl Fn(&Node) -> bool,
        f: impl Fn(&mut Node) + Clone,
    ) -> Result<(), SwarmError> {
        let ids: Vec<String> = self
            .store
            .list::<Node>()?
            .into_iter()
            .filter(|n| pred(n))
            .map(|n| n.id)
            .collect();
        for id in ids {
            let f = f.clone();
            self.modify::<Node, _>(&id, move |n| {
                f(n);
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    // ----- reads -----------------------------------------------------------------------

    /// The cluster object.
    pub fn cluster(&self) -> Result<Cluster, SwarmError> {
        self.store
            .get::<Cluster>(&self.cluster_id)?
            .ok_or_else(|| SwarmError::NotFound("cluster".into()))
    }

    /// All nodes with their manager status.
    pub fn nodes(&self) -> Result<Vec<NodeView>, SwarmError> {
        let status = self.store.status();
        let mut out: Vec<NodeView> = self
            .store
            .list::<Node>()?
            .into_iter()
            .map(|n| {
                let manager_status = match &n.manager_status {
                    None => String::new(),
                    Some(s) if Some(s.raft_id) == status.leader => "Leader".into(),
                    Some(s) => {
                        let reachable = if status.leader == Some(self.raft_id) {
                            status.reachable.get(&s.raft_id).copied().unwrap_or(false)
                        } else {
                            n.status.state == m::NodeState::Ready
                        };
                        if reachable {
                            "Reachable".into()
                        } else {
                            "Unreachable".into()
                        }
                    }
                };
                let is_self = n.id == self.node_id;
                NodeView {
                    node: n,
                    manager_status,
                    is_self,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            a.node
                .description
                .hostname
                .cmp(&b.node.description.hostname)
                .then(a.node.id.cmp(&b.node.id))
        });
        Ok(out)
    }

    /// A node by ID, unique ID prefix, hostname, or `self`.
    pub fn node(&self, key: &str) -> Result<Node, SwarmError> {
        if key == "self" {
            return self
                .store
                .get::<Node>(&self.node_id)?
                .ok_or_else(|| SwarmError::NotFound(key.into()));
        }
        let nodes = self.store.list::<Node>()?;
        if let Some(n) = nodes.iter().find(|n| n.id == key) {
            return Ok(n.clone());
        }
        let by_name: Vec<&Node> = nodes
            .iter()
            .filter(|n| n.spec.name == key || n.description.hostname == key)
            .collect();
        if by_name.len() == 1 {
            return Ok(by_name[0].clone());
        }
        let by_prefix: Vec<&Node> = nodes.iter().filter(|n| n.id.starts_with(key)).collect();
        match (by_name.len(), by_prefix.len()) {
            (0, 1) => Ok(by_prefix[0].clone()),
            (0, 0) => Err(SwarmError::NotFound(format!("node {key} not found"))),
            _ => Err(SwarmError::InvalidArgument(format!(
                "node {key} is ambiguous ({} matches)",
                by_name.len().max(by_prefix.len())
            ))),
        }
    }

    /// The `Swarm` part of `info`.
    pub fn cluster_info(&self) -> Result<ClusterInfo, SwarmError> {
        let c = self.cluster()?;
        let nodes = self.store.list::<Node>()?;
        let ca_expiry = pki::cert_der_from_pem(&c.root_ca.ca_cert_pem, "CA certificate")
            .ok()
            .and_then(|d| pki::not_after_of(&d).ok());
        Ok(ClusterInfo {
            id: c.id.clone(),
            managers: nodes
                .iter()
                .filter(|n| n.spec.role == Role::Manager)
                .count(),
            nodes: nodes.len(),
            spec: c.spec.clone(),
            default_addr_pool: c.default_addr_pool.clone(),
            subnet_size: c.subnet_size,
            root_rotation_in_progress: c.root_ca.rotation.is_some(),
            ca_expiry,
        })
    }

    /// Manager addresses, leader first.
    pub fn manager_addrs(&self) -> Vec<String> {
        let status = self.store.status();
        let mut addrs: Vec<(bool, String)> = status
            .voters
            .iter()
            .map(|(id, addr)| (Some(*id) == status.leader, addr.clone()))
            .collect();
        addrs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        addrs.into_iter().map(|(_, a)| a).collect()
    }

    // ----- node operations ---------------------------------------------------------------

    /// `node update`: availability, labels, role (promotion and demotion included).
    pub async fn update_node(
        &self,
        key: &str,
        version: Option<u64>,
        spec: NodeSpec,
    ) -> Result<(), SwarmError> {
        let node = self.node(key)?;
        if let Some(v) = version
            && v != node.meta.version
        {
            return Err(SwarmError::Conflict(format!(
                "node {} is at version {}, not {v}",
                node.id, node.meta.version
            )));
        }
        let old_role = node.spec.role;
        let new_role = spec.role;
        if old_role == Role::Manager && new_role == Role::Worker {
            self.demote(&node).await?;
        }
        let promote_id = (old_role == Role::Worker && new_role == Role::Manager).then(new_raft_id);
        self.modify::<Node, _>(&node.id, |n| {
            n.spec = spec.clone();
            if let Some(raft_id) = promote_id {
                n.manager_status = Some(m::ManagerStatus {
                    raft_id,
                    addr: String::new(),
                    leader: false,
                    reachability: m::Reachability::Unknown,
                });
            }
            if new_role == Role::Worker {
                n.manager_status = None;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Removes a manager from Raft before its node becomes a worker.
    async fn demote(&self, node: &Node) -> Result<(), SwarmError> {
        let status = self.store.status();
        let Some(ms) = &node.manager_status else {
            return Ok(());
        };
        let voters = status.voters.len();
        if voters <= 1 || (voters == 1 && status.voters.contains_key(&ms.raft_id)) {
            return Err(SwarmError::FailedPrecondition(
                "attempting to demote the last manager of the swarm".into(),
            ));
        }
        // Quorum of the remaining managers must be reachable.
        let nodes = self.store.list::<Node>()?;
        let remaining: Vec<&Node> = nodes
            .iter()
            .filter(|n| {
                n.manager_status
                    .as_ref()
                    .is_some_and(|s| s.raft_id != ms.raft_id)
            })
            .collect();
        let reachable = remaining
            .iter()
            .filter(|n| n.status.state == m::NodeState::Ready)
            .count();
        if reachable * 2 <= remaining.len() {
            return Err(SwarmError::FailedPrecondition(format!(
                "can't remove {} from the managers: the remaining managers would lose quorum ({reachable} of {} reachable)",
                node.id,
                remaining.len()
            )));
        }
        self.leader_op(LeaderOp::RemoveManager {
            raft_id: ms.raft_id,
        })
        .await?;
        Ok(())
    }

    /// `node rm`.
    pub async fn remove_node(&self, key: &str, force: bool) -> Result<(), SwarmError> {
        let node = self.node(key)?;
        if node.spec.role == Role::Manager || node.manager_status.is_some() {
            return Err(SwarmError::FailedPrecondition(format!(
                "node {} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal",
                node.id
            )));
        }
        if !force && node.status.state != m::NodeState::Down {
            return Err(SwarmError::FailedPrecondition(format!(
                "node {} is not down and can't be removed",
                node.id
            )));
        }
        let mut cluster = self.cluster()?;
        if !cluster.removed_nodes.contains(&node.id) {
            cluster.removed_nodes.push(node.id.clone());
        }
        self.propose(Proposal {
            actions: vec![
                Action::Delete {
                    kind: m::ObjectKind::Node,
                    id: node.id.clone(),
                    version: Some(node.meta.version),
                },
                Action::Update(Object::Cluster(cluster)),
            ],
            at: Utc::now(),
        })
        .await?;
        Ok(())
    }

    // ----- cluster operations ----------------------------------------------------------

    /// `swarm update` and token rotation. Returns the new unlock key when autolock was just
    /// turned on or its key rotated.
    pub async fn update_cluster(
        &self,
        version: Option<u64>,
        spec: Option<ClusterSpec>,
        rotate_worker_token: bool,
        rotate_manager_token: bool,
        rotate_unlock_key: bool,
    ) -> Result<Option<String>, SwarmError> {
        if let Some(spec) = &spec {
            validate_spec(spec)?;
        }
        let mut new_key = None;
        let id = self.cluster_id.clone();
        self.modify::<Cluster, _>(&id, |c| {
            if let Some(v) = version
                && v != c.meta.version
            {
                return Err(SwarmError::Conflict(format!(
                    "the swarm is at version {}, not {v}",
                    c.meta.version
                )));
            }
            let digest = c.root_ca.ca_cert_digest.clone();
            if rotate_worker_token {
                c.root_ca.join_tokens.worker = JoinToken::generate(&digest)?.to_string();
            }
            if rotate_manager_token {
                c.root_ca.join_tokens.manager = JoinToken::generate(&digest)?.to_string();
            }
            if let Some(spec) = &spec {
                let was = c.spec.encryption.auto_lock_managers;
                c.spec = spec.clone();
                if spec.encryption.auto_lock_managers && !was {
                    let k = KeyEncryptionKey::generate()?.to_unlock_key();
                    c.unlock_key = k.clone();
                    new_key = Some(k);
                } else if !spec.encryption.auto_lock_managers {
                    c.unlock_key.clear();
                }
            }
            if rotate_unlock_key {
                if !c.spec.encryption.auto_lock_managers {
                    return Err(SwarmError::FailedPrecondition(
                        "cannot rotate the unlock key: autolock is not enabled".into(),
                    ));
                }
                let k = KeyEncryptionKey::generate()?.to_unlock_key();
                c.unlock_key = k.clone();
                new_key = Some(k);
            }
            Ok(())
        })
        .await?;
        Ok(new_key)
    }

    /// The current unlock key (`swarm unlock-key`).
    pub fn unlock_key(&self) -> Result<String, SwarmError> {
        let c = self.cluster()?;
        if !c.spec.encryption.auto_lock_managers || c.unlock_key.is_empty() {
            return Err(SwarmError::FailedPrecondition(
                "no unlock key is set".into(),
            ));
        }
        Ok(c.unlock_key)
    }

    /// Starts a root CA rotation (`swarm ca --rotate`): a new root, cross-signed by the old
    /// one so nodes that still trust only the old root keep talking; every node gets a new
    /// certificate; the leader finishes once all have one.
    pub async fn rotate_ca(&self) -> Result<(), SwarmError> {
        let cluster_id = self.cluster_id.clone();
        self.modify::<Cluster, _>(&cluster_id.clone(), |c| {
            if c.root_ca.rotation.is_some() {
                return Err(SwarmError::FailedPrecondition(
                    "a root CA rotation is already in progress".into(),
                ));
            }
            let old = RootCa::from_pem(&c.root_ca.ca_cert_pem, &c.root_ca.ca_key_pem)?;
            let new = RootCa::generate(&cluster_id)?;
            let cross = old.cross_sign(&new)?;
            c.root_ca.rotation = Some(m::RootRotation {
                ca_cert_pem: new.cert_pem().to_owned(),
                ca_key_pem: new.key_pem().to_owned(),
                cross_signed_ca_cert_pem: cross,
            });
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// The root CA certificate(s) trusted now (PEM bundle).
    pub fn roots_pem(&self) -> Result<String, SwarmError> {
        let c = self.cluster()?;
        Ok(roots_of(&c))
    }

    /// After `--force-new-cluster`: this manager is the only one; others are shown down.
    pub(crate) async fn after_force_new_cluster(&self) -> Result<(), SwarmError> {
        let me = self.node_id.clone();
        let raft_id = self.raft_id;
        let member = self.member().ok_or(SwarmError::NotManager)?;
        let addr = member
            .state
            .read()
            .map(|s| s.advertise_addr.clone())
            .unwrap_or_default();
        self.modify_nodes_where(
            |n| n.manager_status.is_some(),
            move |n| {
                if n.id == me {
                    n.manager_status = Some(m::ManagerStatus {
                        raft_id,
                        addr: addr.clone(),
                        leader: true,
                        reachability: m::Reachability::Reachable,
                    });
                } else {
                    // No longer a Raft member: a worker on paper until it rejoins.
                    n.manager_status = None;
                    n.spec.role = Role::Worker;
                    n.status.state = m::NodeState::Down;
                }
            },
        )
        .await
    }

    // ----- node-facing RPCs ------------------------------------------------------------

    /// Routes a call from the cluster port.
    pub(crate) async fn handle(
        &self,
        peer: Peer,
        method: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, RemoteError> {
        match method {
            method::RAFT => {
                self.authorize(&peer, Some(Role::Manager))?;
                Ok(self.store.handle_message(body).await)
            }
            method::LEADER_OP => {
                self.authorize(&peer, Some(Role::Manager))?;
                let op: LeaderOp = decode(&body)?;
                match self.run_leader_op(&op).await {
                    Ok(r) => encode(&r),
                    Err(StoreError::NotLeader { leader }) => Err(remote(
                        code::NOT_LEADER,
                        leader.map(|(_, a)| a).unwrap_or_default(),
                    )),
                    Err(StoreError::NoQuorum) => {
                        Err(remote(code::NO_QUORUM, SwarmError::NoQuorum.to_string()))
                    }
                    Err(e) => Err(remote(code::INTERNAL, e.to_string())),
                }
            }
            method::JOIN => {
                let req: JoinRequest = decode(&body)?;
                let resp = self.handle_join(req).await.map_err(|e| e.to_remote())?;
                encode(&resp)
            }
            method::HEARTBEAT => {
                let id = self.authorize(&peer, None)?;
                let req: rpc::HeartbeatRequest = decode(&body)?;
                if req.node_id != id.node_id {
                    return Err(remote(
                        code::PERMISSION_DENIED,
                        "heartbeat for another node",
                    ));
                }
                let resp = crate::dispatcher::heartbeat(self, req)
                    .await
                    .map_err(|e| e.to_remote())?;
                encode(&resp)
            }
            method::TASKS => {
                let id = self.authorize(&peer, None)?;
                let req: rpc::TasksRequest = decode(&body)?;
                if req.node_id != id.node_id {
                    return Err(remote(code::PERMISSION_DENIED, "tasks of another node"));
                }
                let resp = crate::dispatcher::tasks(self, req)
                    .await
                    .map_err(|e| e.to_remote())?;
                encode(&resp)
            }
            method::RENEW => {
                let id = self.authorize(&peer, None)?;
                let req: RenewRequest = decode(&body)?;
                let resp = self
                    .handle_renew(&id.node_id, req)
                    .await
                    .map_err(|e| e.to_remote())?;
                encode(&resp)
            }
            other => Err(remote(code::INVALID, format!("unknown method {other}"))),
        }
    }

    /// Checks the caller's certificate: same cluster, not removed, and the role if given.
    fn authorize(&self, peer: &Peer, role: Option<Role>) -> Result<pki::NodeIdentity, RemoteError> {
        let Some(id) = peer.identity.clone() else {
            return Err(remote(
                code::PERMISSION_DENIED,
                "a node certificate is required",
            ));
        };
        if id.cluster_id != self.cluster_id {
            return Err(remote(
                code::PERMISSION_DENIED,
                "certificate of another cluster",
            ));
        }
        if let Ok(c) = self.cluster()
            && c.removed_nodes.contains(&id.node_id)
        {
            return Err(remote(
                code::REMOVED,
                format!("node {} was removed from the swarm", id.node_id),
            ));
        }
        if let Some(want) = role
            && id.role != want.into()
        {
            return Err(remote(
                code::PERMISSION_DENIED,
                format!("permission denied: {} is not a manager", id.node_id),
            ));
        }
        Ok(id)
    }

    /// The CA that signs now (the new one during a rotation) and the chain to append.
    fn signer(&self) -> Result<(RootCa, String, String), SwarmError> {
        let c = self.cluster()?;
        let roots = roots_of(&c);
        match &c.root_ca.rotation {
            Some(r) => Ok((
                RootCa::from_pem(&r.ca_cert_pem, &r.ca_key_pem)?,
                // Leaf, the new CA cross-signed by the old one, and the old root: nodes that
                // trust only the old root (and joiners pinning it) can verify the chain.
                format!("{}{}", r.cross_signed_ca_cert_pem, c.root_ca.ca_cert_pem),
                roots,
            )),
            None => Ok((
                RootCa::from_pem(&c.root_ca.ca_cert_pem, &c.root_ca.ca_key_pem)?,
                c.root_ca.ca_cert_pem.clone(),
                roots,
            )),
        }
    }

    async fn handle_join(&self, req: JoinRequest) -> Result<JoinResponse, SwarmError> {
        let c = self.cluster()?;
        let token: JoinToken = req.token.parse().map_err(|_| SwarmError::InvalidToken)?;
        let role = if JoinToken::parse_lossy(&c.root_ca.join_tokens.manager)
            .is_some_and(|t| t.same_as(&token))
        {
            Role::Manager
        } else if JoinToken::parse_lossy(&c.root_ca.join_tokens.worker)
            .is_some_and(|t| t.same_as(&token))
        {
            Role::Worker
        } else {
            return Err(SwarmError::InvalidToken);
        };
        let node_id = pki::new_node_id()?;
        let (ca, chain_tail, roots) = self.signer()?;
        let cert = ca.sign_csr(
            &req.csr,
            &node_id,
            role.into(),
            &self.cluster_id,
            c.spec.ca_config.node_cert_expiry,
        )?;
        let raft_id = if role == Role::Manager {
            new_raft_id()
        } else {
            0
        };
        let node = Node {
            id: node_id.clone(),
            spec: NodeSpec {
                role,
                membership: m::Membership::Accepted,
                availability: m::Availability::Active,
                ..Default::default()
            },
            description: req.description.clone(),
            status: m::NodeStatus {
                state: m::NodeState::Unknown,
                message: String::new(),
                addr: host_of(&req.advertise_addr),
            },
            manager_status: (role == Role::Manager).then(|| m::ManagerStatus {
                raft_id,
                addr: req.advertise_addr.clone(),
                leader: false,
                reachability: m::Reachability::Unknown,
            }),
            certificate: m::NodeCertificate {
                role,
                certificate_pem: cert.clone(),
                expires_at: pki::identity_of_pem(&cert).ok().map(|i| i.not_after),
            },
            role: Role::Worker,
            ..Default::default()
        };
        self.propose(Proposal {
            actions: vec![Action::Create(Object::Node(node))],
            at: Utc::now(),
        })
        .await?;
        Ok(JoinResponse {
            node_id,
            cluster_id: self.cluster_id.clone(),
            role,
            certificate_chain: format!("{cert}{chain_tail}"),
            roots,
            raft_id,
            managers: self.manager_addrs(),
        })
    }

    async fn handle_renew(
        &self,
        node_id: &str,
        req: RenewRequest,
    ) -> Result<RenewResponse, SwarmError> {
        let node = self
            .store
            .get::<Node>(node_id)?
            .ok_or_else(|| SwarmError::NotFound(format!("node {node_id}")))?;
        let c = self.cluster()?;
        let role = node.spec.role;
        let (ca, chain_tail, roots) = self.signer()?;
        let cert = ca.sign_csr(
            &req.csr,
            node_id,
            role.into(),
            &self.cluster_id,
            c.spec.ca_config.node_cert_expiry,
        )?;
        let cert_for_node = cert.clone();
        self.modify::<Node, _>(node_id, move |n| {
            n.certificate = m::NodeCertificate {
                role,
                certificate_pem: cert_for_node.clone(),
                expires_at: pki::identity_of_pem(&cert_for_node)
                    .ok()
                    .map(|i| i.not_after),
            };
            Ok(())
        })
        .await?;
        Ok(RenewResponse {
            certificate_chain: format!("{cert}{chain_tail}"),
            roots,
            role,
        })
    }
}

/// The trusted roots of a cluster (both during a rotation).
pub(crate) fn roots_of(c: &Cluster) -> String {
    match &c.root_ca.rotation {
        Some(r) => format!("{}{}", c.root_ca.ca_cert_pem, r.ca_cert_pem),
        None => c.root_ca.ca_cert_pem.clone(),
    }
}

fn is_remote(e: &TransportError) -> bool {
    matches!(e, TransportError::Remote { .. })
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, RemoteError> {
    serde_json::from_slice(b).map_err(|e| remote(code::INVALID, format!("bad request: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, RemoteError> {
    serde_json::to_vec(v).map_err(|e| remote(code::INTERNAL, e.to_string()))
}

/// Keeps this manager's key store in line with the cluster's autolock setting: with
/// autolock the key-encryption key is the cluster's unlock key and is not kept on disk.
/// Applies the cluster spec's settings that live on each manager (autolock of the keys,
/// snapshot interval) whenever the store changes, and every few seconds.
async fn cluster_settings_loop(mgr: Weak<Manager>) {
    let Some(m0) = mgr.upgrade() else { return };
    let mut events = m0.store.subscribe();
    drop(m0);
    loop {
        let Some(mgr) = mgr.upgrade() else { return };
        if let Err(e) = reconcile_autolock(&mgr) {
            tracing::warn!(error = %e, "cannot apply the autolock setting");
        }
        if let Ok(c) = mgr.cluster() {
            let r = &c.spec.raft;
            mgr.store
                .set_snapshot_policy(r.snapshot_interval, r.log_entries_for_slow_followers);
        }
        drop(mgr);
        if let Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) =
            tokio::time::timeout(Duration::from_secs(5), events.recv()).await
        {
            return;
        }
    }
}

fn reconcile_autolock(mgr: &Manager) -> Result<(), SwarmError> {
    let Some(member) = mgr.member() else {
        return Ok(());
    };
    let Ok(c) = mgr.cluster() else { return Ok(()) };
    let dir = member.paths.keys_dir();
    let current = member.kek.read().ok().and_then(|k| k.clone());
    let Some(current) = current else {
        return Ok(());
    };
    if c.spec.encryption.auto_lock_managers {
        let Ok(wanted) = KeyEncryptionKey::parse_unlock_key(&c.unlock_key) else {
            return Ok(());
        };
        if wanted.to_unlock_key() != current.to_unlock_key() {
            shoal_store::crypto::KeyStore::rotate_kek(&dir, &current, &wanted)?;
            if let Ok(mut k) = member.kek.write() {
                *k = Some(wanted.clone());
            }
        }
        if !shoal_store::crypto::KeyStore::is_locked(&dir) {
            shoal_store::crypto::KeyStore::lock(&dir, &wanted)?;
        }
    } else if shoal_store::crypto::KeyStore::is_locked(&dir) {
        shoal_store::crypto::KeyStore::unlock_permanently(&dir, &current)?;
    }
    Ok(())
}

/// Shortest node certificate validity Swarm accepts.
const MIN_CERT_EXPIRY: Duration = Duration::from_secs(3600);

/// Checks a cluster spec as Swarm's control API does, before anything is stored.
pub(crate) fn validate_spec(spec: &ClusterSpec) -> Result<(), SwarmError> {
    if spec.ca_config.node_cert_expiry < MIN_CERT_EXPIRY {
        return Err(SwarmError::InvalidArgument(
            "minimum certificate expiry time is: 1h0m0s".into(),
        ));
    }
    if spec.raft.snapshot_interval == 0 {
        return Err(SwarmError::InvalidArgument(
            "the snapshot interval must be at least 1 log entry".into(),
        ));
    }
    if !spec.dispatcher.heartbeat_period.is_zero()
        && spec.dispatcher.heartbeat_period < Duration::from_millis(100)
    {
        return Err(SwarmError::InvalidArgument(format!(
            "the dispatcher heartbeat period {:?} is too short: at least 100ms",
            spec.dispatcher.heartbeat_period
        )));
    }
    Ok(())
}
