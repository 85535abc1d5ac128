//! The task session: every node's link between the leader's dispatcher and its worker.
//!
//! A loop of `tasks` calls to the leader: each carries the status changes the worker has
//! not delivered yet and comes back with the full set of tasks assigned to this node,
//! which the worker reconciles against. Without reports the call is a long poll that the
//! dispatcher answers when the assignment changes, so new tasks reach the node at once.
//! When no manager answers, the worker keeps running its tasks and reports pile up; after
//! reconnecting the node re-sends every task's status (the leader may be new, or may have
//! missed reports), so nothing is lost and nothing runs twice.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::SwarmError;
use crate::engine::Engine;
use crate::pki;
use crate::rpc::{TasksRequest, TasksResponse, code, method};
use crate::swarm::Member;
use crate::transport::TransportError;
use crate::worker::{ImageProvider, Worker};

/// How long the dispatcher may hold a call without news.
const LONG_POLL: Duration = Duration::from_secs(5);

/// Starts the session of a member; it ends when the member stops.
pub(crate) fn spawn(member: Arc<Member>, worker: Arc<Worker>) {
    tokio::spawn(run(member, worker));
}

async fn run(member: Arc<Member>, worker: Arc<Worker>) {
    let mut stop = member.stop.subscribe();
    let mut known = 0u64;
    let mut full = true;
    let mut next = 0usize;
    let mut preferred: Option<String> = None;
    let changed = worker.changed();
    loop {
        if *stop.borrow() {
            return;
        }
        let managers = member
            .state
            .read()
            .map(|s| s.managers.clone())
            .unwrap_or_default();
        let Some(target) = preferred
            .take()
            .or_else(|| (!managers.is_empty()).then(|| managers[next % managers.len()].clone()))
        else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            continue;
        };
        let reports = worker.reports(full);
        let wait = if reports.is_empty() && known != 0 {
            LONG_POLL
        } else {
            Duration::ZERO
        };
        let req = TasksRequest {
            node_id: member.node_id(),
            reports: reports.clone(),
            known_version: known,
            wait_ms: wait.as_millis() as u64,
        };
        let call = call(&member, &target, req, wait + Duration::from_secs(3));
        let outcome = tokio::select! {
            r = call => Some(r),
            // A new report while the call waits for news: send it now (the dropped call
            // carried no reports).
            _ = changed.notified(), if wait > Duration::ZERO => None,
            _ = stop.changed() => return,
        };
        let Some(result) = outcome else {
            preferred = Some(target);
            continue;
        };
        match result {
            Ok(resp) => {
                worker.acknowledge(&reports);
                full = false;
                known = resp.version;
                if let Ok(mut p) = member.peers.write() {
                    *p = resp.peers.clone();
                }
                worker.assign(resp.tasks);
                preferred = Some(target);
            }
            Err(SwarmError::Transport(TransportError::Remote {
                code: c, message, ..
            })) if c == code::NOT_LEADER => {
                preferred = (!message.is_empty()).then_some(message);
                if preferred.is_none() {
                    next = next.wrapping_add(1);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                full = true;
                known = 0;
            }
            Err(e) => {
                tracing::debug!(manager = %target, error = %e, "task session call failed; trying another manager");
                full = true;
                known = 0;
                next = next.wrapping_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

async fn call(
    member: &Member,
    target: &str,
    req: TasksRequest,
    timeout: Duration,
) -> Result<TasksResponse, SwarmError> {
    let addr: SocketAddr = target
        .parse()
        .map_err(|_| SwarmError::InvalidArgument(format!("invalid manager address {target}")))?;
    let body = serde_json::to_vec(&req).map_err(|e| SwarmError::Internal(e.to_string()))?;
    let out = member
        .endpoint
        .call_with_timeout(addr, pki::MANAGER_SERVER_NAME, method::TASKS, body, timeout)
        .await
        .map_err(SwarmError::Transport)?;
    serde_json::from_slice(&out).map_err(|e| SwarmError::Internal(e.to_string()))
}

/// Task images: this node's store, else a peer that has the digest (over the cluster
/// link), else the registry.
pub(crate) struct ClusterImages {
    pub engine: Engine,
    pub member: Weak<Member>,
}

impl ImageProvider for ClusterImages {
    fn ensure(
        &self,
        reference: &str,
        registry_auth: &str,
    ) -> BoxFuture<'static, Result<String, String>> {
        let engine = self.engine.clone();
        let member = self.member.clone();
        let reference = reference.to_owned();
        let creds = shoal_image::Credentials::from_registry_auth(registry_auth);
        Box::pin(async move { ensure_image(&engine, member, &reference, creds).await })
    }
}

async fn ensure_image(
    engine: &Engine,
    member: Weak<Member>,
    reference: &str,
    creds: Option<shoal_image::Credentials>,
) -> Result<String, String> {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None if reference.starts_with("sha256:") => ("", Some(reference)),
        None => (reference, None),
    };
    let Some(digest) = digest else {
        // Not pinned: whatever this node has under the name, else a pull.
        if engine.images.get(name).is_ok() {
            return Ok(name.to_owned());
        }
        return pull(engine, name, creds).await;
    };
    if let Some(rec) = crate::node_rpc::find_image(engine, digest) {
        return Ok(rec.id);
    }
    // A peer that has it (an image imported on any node runs on all of them).
    if let Some(m) = member.upgrade() {
        let peers = m.peers.read().map(|p| p.clone()).unwrap_or_default();
        if !peers.is_empty() {
            match crate::node_rpc::fetch_image(
                engine,
                &m.endpoint,
                &m.paths.image_cache(),
                &peers,
                digest,
            )
            .await
            {
                Ok(rec) => {
                    tracing::info!(image = %reference, peers = peers.len(), "image fetched from a peer");
                    if !name.is_empty() && engine.images.get(name).is_err() {
                        // Name it as the service does, without taking a name another
                        // local image has.
                        let _ = engine.images.tag(&rec.id, name).await;
                    }
                    return Ok(rec.id);
                }
                Err(e) => {
                    tracing::debug!(image = %reference, error = %e, "no peer could give the image")
                }
            }
        }
    }
    if name.is_empty() {
        return Err(format!("No such image: {reference}"));
    }
    pull(engine, reference, creds).await
}

async fn pull(
    engine: &Engine,
    reference: &str,
    creds: Option<shoal_image::Credentials>,
) -> Result<String, String> {
    engine
        .images
        .pull(reference, creds, shoal_image::ProgressSink::none())
        .await
        .map(|r| r.id)
        .map_err(|e| format!("No such image: {reference}: {e}"))
}

/// Stops and removes every task container (the node left the swarm: as Docker's, its
/// service containers go with it).
pub(crate) async fn remove_task_containers(engine: &Engine) {
    let ids: Vec<String> = engine
        .runtime
        .list(true)
        .into_iter()
        .filter(|c| {
            c.record
                .config
                .labels
                .contains_key(crate::node_rpc::TASK_LABEL)
        })
        .map(|c| c.record.id.clone())
        .collect();
    let removals = ids.iter().map(|id| async move {
        if let Err(e) = engine.runtime.remove(id, true, false).await {
            tracing::warn!(container = %id, error = %e, "cannot remove a task container");
        }
    });
    futures::future::join_all(removals).await;
}
