//! The dispatcher: every node's session with the leader.
//!
//! Nodes (managers too) send a heartbeat every period; the leader records it, marks the
//! node Ready (with its latest description), and tells it the manager addresses, the role
//! the cluster wants for it, and whether it needs a new certificate. A node that misses
//! heartbeats for three periods is marked Down. A new leader gives every node that grace
//! period again before judging. The leader also finishes a root CA rotation once every node
//! holds a certificate of the new root.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use shoal_store::model::{self as m, Cluster, Node, Task, TaskState};
use shoal_store::{Action, Object, Proposal};

use crate::SwarmError;
use crate::manager::{Manager, roots_of};
use crate::pki;
use crate::rpc::{
    HeartbeatRequest, HeartbeatResponse, PeerNode, TaskReport, TasksRequest, TasksResponse,
};

/// How many missed periods make a node Down.
const GRACE_PERIODS: u32 = 3;

/// Leader-side heartbeat bookkeeping.
#[derive(Default)]
pub struct Dispatcher {
    /// Last heartbeat per node ID.
    seen: Mutex<HashMap<String, Instant>>,
    /// Since when this manager leads (None while following).
    leading_since: Mutex<Option<Instant>>,
}

impl Dispatcher {
    fn record(&self, node_id: &str) {
        if let Ok(mut s) = self.seen.lock() {
            s.insert(node_id.to_owned(), Instant::now());
        }
    }
}

fn period(c: &Cluster) -> Duration {
    let p = c.spec.dispatcher.heartbeat_period;
    if p.is_zero() {
        Duration::from_secs(5)
    } else {
        p
    }
}

/// Handles one heartbeat (on the leader; a follower answers "not leader" with the leader's
/// address so the node moves on).
pub(crate) async fn heartbeat(
    mgr: &Manager,
    req: HeartbeatRequest,
) -> Result<HeartbeatResponse, SwarmError> {
    let status = mgr.store().status();
    if status.leader != Some(mgr.raft_id()) {
        return Err(SwarmError::NotLeader(
            status.leader_addr.unwrap_or_default(),
        ));
    }
    mgr.dispatcher.record(&req.node_id);
    let cluster = mgr.cluster()?;
    if cluster.removed_nodes.contains(&req.node_id) {
        return Err(SwarmError::Removed(req.node_id));
    }
    let node = mgr
        .store()
        .get::<Node>(&req.node_id)?
        .ok_or_else(|| SwarmError::Removed(req.node_id.clone()))?;
    let host = crate::swarm::host_of(&req.addr);
    let changed = node.status.state != m::NodeState::Ready
        || node.status.addr != host
        || node.cluster_addr != req.addr
        || node.description != req.description
        || node.role != req.role;
    if changed {
        let desc = req.description.clone();
        let role = req.role;
        let cluster_addr = req.addr.clone();
        mgr.modify::<Node, _>(&req.node_id, move |n| {
            n.cluster_addr = cluster_addr.clone();
            n.status = m::NodeStatus {
                state: m::NodeState::Ready,
                message: String::new(),
                addr: host.clone(),
            };
            n.description = desc.clone();
            n.role = role;
            Ok(())
        })
        .await?;
    }
    let roots = roots_of(&cluster);
    let roots_digest = pki::bundle_digest(&roots);
    // A new certificate is due when the role changed or a rotation is under way and the
    // node's certificate is not from the new root yet.
    let cert_role = node.certificate.role;
    let rotating = cluster
        .root_ca
        .rotation
        .as_ref()
        .is_some_and(|r| !pki::issued_by(&node.certificate.certificate_pem, &r.ca_cert_pem));
    Ok(HeartbeatResponse {
        period_ms: period(&cluster).as_millis() as u64,
        managers: mgr.manager_addrs(),
        desired_role: node.spec.role,
        raft_id: node.manager_status.as_ref().map_or(0, |s| s.raft_id),
        roots: (roots_digest != req.roots_digest).then_some(roots),
        renew: cert_role != node.spec.role || rotating,
    })
}

/// The leader's background work: down detection, the leader flag on manager nodes, and
/// finishing CA rotations.
pub(crate) async fn leader_loop(mgr: Weak<Manager>) {
    loop {
        let Some(m) = mgr.upgrade() else { return };
        let wait = match tick(&m).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "dispatcher tick failed");
                Duration::from_secs(1)
            }
        };
        drop(m);
        tokio::time::sleep(wait).await;
    }
}

async fn tick(mgr: &Manager) -> Result<Duration, SwarmError> {
    let leading = mgr.is_leader();
    let since = {
        let mut l = mgr
            .dispatcher
            .leading_since
            .lock()
            .map_err(|_| SwarmError::Internal("dispatcher lock poisoned".into()))?;
        match (leading, *l) {
            (true, None) => {
                *l = Some(Instant::now());
                if let Ok(mut s) = mgr.dispatcher.seen.lock() {
                    s.clear();
                }
            }
            (false, Some(_)) => *l = None,
            _ => {}
        }
        *l
    };
    let Some(since) = since else {
        return Ok(Duration::from_millis(500));
    };
    let cluster = mgr.cluster()?;
    let p = period(&cluster);
    let expiry = p * GRACE_PERIODS;
    let nodes = mgr.store().list::<Node>()?;
    let now = Instant::now();
    let mut updates = Vec::new();
    let leader_raft = mgr.store().status().leader;
    for n in &nodes {
        let seen = mgr
            .dispatcher
            .seen
            .lock()
            .ok()
            .and_then(|s| s.get(&n.id).copied());
        let last = seen.unwrap_or(since);
        let expired = now.duration_since(last) > expiry;
        let mut changed = n.clone();
        if expired && n.status.state != m::NodeState::Down {
            changed.status.state = m::NodeState::Down;
            changed.status.message = "heartbeat failure".into();
        }
        if let Some(ms) = changed.manager_status.as_mut() {
            let is_leader = Some(ms.raft_id) == leader_raft;
            if ms.leader != is_leader {
                ms.leader = is_leader;
            }
            ms.reachability = if is_leader || changed.status.state == m::NodeState::Ready {
                m::Reachability::Reachable
            } else {
                m::Reachability::Unreachable
            };
        }
        if serde_json::to_value(&changed).ok() != serde_json::to_value(n).ok() {
            updates.push(Action::Update(Object::Node(changed)));
        }
    }
    // A rotation is done once every node has a certificate of the new root.
    if let Some(rot) = &cluster.root_ca.rotation
        && nodes
            .iter()
            .all(|n| pki::issued_by(&n.certificate.certificate_pem, &rot.ca_cert_pem))
    {
        let mut c = cluster.clone();
        let new_digest = pki::RootCa::from_pem(&rot.ca_cert_pem, &rot.ca_key_pem)?.digest();
        c.root_ca = m::RootCa {
            ca_cert_pem: rot.ca_cert_pem.clone(),
            ca_key_pem: rot.ca_key_pem.clone(),
            ca_cert_digest: new_digest.clone(),
            join_tokens: m::JoinTokens {
                worker: pki::JoinToken::with_digest(&c.root_ca.join_tokens.worker, &new_digest),
                manager: pki::JoinToken::with_digest(&c.root_ca.join_tokens.manager, &new_digest),
            },
            rotation: None,
        };
        tracing::info!("root CA rotation complete");
        updates.push(Action::Update(Object::Cluster(c)));
    }
    if !updates.is_empty() {
        // Individual conflicts are resolved on the next tick.
        for a in updates {
            let _ = mgr
                .propose(Proposal {
                    actions: vec![a],
                    at: Utc::now(),
                })
                .await;
        }
    }
    Ok((p / 2).max(Duration::from_millis(200)))
}

/// Handles a node's `tasks` call (on the leader): writes the statuses it reports (a status
/// only moves forward), then answers with every task assigned to it, holding the call up
/// to `wait_ms` while that set is unchanged (a long poll: assignments reach nodes at once).
pub(crate) async fn tasks(mgr: &Manager, req: TasksRequest) -> Result<TasksResponse, SwarmError> {
    let status = mgr.store().status();
    if status.leader != Some(mgr.raft_id()) {
        return Err(SwarmError::NotLeader(
            status.leader_addr.unwrap_or_default(),
        ));
    }
    let mut events = mgr.store().subscribe();
    let had_reports = !req.reports.is_empty();
    if had_reports {
        write_reports(mgr, &req.node_id, req.reports).await?;
    }
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(req.wait_ms.min(MAX_TASKS_WAIT_MS));
    loop {
        let (version, tasks) = assigned(mgr, &req.node_id)?;
        if had_reports || req.known_version == 0 || version != req.known_version {
            return Ok(TasksResponse {
                version,
                tasks,
                peers: peers(mgr, &req.node_id)?,
            });
        }
        // Wait for a change to one of this node's tasks.
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => {
                    return Ok(TasksResponse {
                        version,
                        tasks,
                        peers: peers(mgr, &req.node_id)?,
                    });
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => break,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    return Err(SwarmError::NotLeader(String::new()));
                }
                Ok(Ok(ev)) => {
                    if let Object::Task(t) = &ev.object
                        && t.node_id == req.node_id
                    {
                        break;
                    }
                }
            }
        }
    }
}

/// The ready nodes other than `node_id`.
fn peers(mgr: &Manager, node_id: &str) -> Result<Vec<PeerNode>, SwarmError> {
    Ok(mgr
        .store()
        .list::<Node>()?
        .into_iter()
        .filter(|n| n.id != node_id && n.status.state == m::NodeState::Ready)
        .filter(|n| !n.cluster_addr.is_empty())
        .map(|n| PeerNode {
            node_id: n.id,
            addr: n.cluster_addr,
        })
        .collect())
}

/// The longest a `tasks` call is held.
const MAX_TASKS_WAIT_MS: u64 = 10_000;

/// The tasks assigned to a node and a fingerprint of what the node acts on (so its own
/// status writes do not wake its long poll).
fn assigned(mgr: &Manager, node_id: &str) -> Result<(u64, Vec<Task>), SwarmError> {
    use std::hash::{Hash, Hasher};
    let mut tasks: Vec<Task> = mgr
        .store()
        .list::<Task>()?
        .into_iter()
        .filter(|t| t.node_id == node_id && t.status.state >= TaskState::Assigned)
        .collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for t in &tasks {
        (&t.id, t.desired_state, t.paused, t.spec_version).hash(&mut h);
    }
    // Never 0: that means "nothing known yet".
    Ok((h.finish().max(1), tasks))
}

/// Writes reported statuses: forward-only, batched, retried per task on a conflict.
async fn write_reports(
    mgr: &Manager,
    node_id: &str,
    reports: Vec<TaskReport>,
) -> Result<(), SwarmError> {
    let mut updates = Vec::new();
    for r in &reports {
        let Some(mut t) = mgr.store().get::<Task>(&r.task_id)? else {
            continue;
        };
        if t.node_id != node_id || !advances(&t.status, &r.status) {
            continue;
        }
        t.status = r.status.clone();
        updates.push(t);
    }
    for chunk in updates.chunks(64) {
        let p = Proposal {
            actions: chunk
                .iter()
                .map(|t| Action::Update(Object::Task(t.clone())))
                .collect(),
            at: Utc::now(),
        };
        match mgr.propose(p).await {
            Ok(_) => {}
            Err(SwarmError::Conflict(_)) => {
                // Someone else (the orchestrator) wrote one of them: one by one.
                for t in chunk {
                    let status = t.status.clone();
                    let r = mgr
                        .modify::<Task, _>(&t.id, move |cur| {
                            if advances(&cur.status, &status) {
                                cur.status = status.clone();
                            }
                            Ok(())
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::debug!(task = %t.id, error = %e, "status report not written");
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a reported status should replace the stored one: a later state, or the same
/// state with new details (health, pause, container).
fn advances(stored: &m::TaskStatus, reported: &m::TaskStatus) -> bool {
    reported.state > stored.state || (reported.state == stored.state && reported != stored)
}
