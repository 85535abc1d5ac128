//! The leader's reconcile loop: keeps every service's tasks true to its spec.
//!
//! Level-triggered: whenever the store changes (debounced) or a decision asked to be
//! re-made at some time (restart delay, update delay, monitor window), the leader reads a
//! [`View`], runs the orchestrators, the allocator and the scheduler (pure functions in
//! [`crate::orchestrator`]), and proposes the changes. Every update carries the version it
//! was decided on, so a decision made on stale state is refused and made again on the next
//! round; a new leader simply starts reconciling from the replicated state.

use std::sync::Weak;
use std::time::Duration;

use chrono::Utc;
use shoal_store::model::{Cluster, Node, Service, StoredObject, Task, TaskState};
use shoal_store::{Action, Object, Proposal};

use crate::SwarmError;
use crate::manager::Manager;
use crate::orchestrator::{self, Plan, View};

/// Changes proposed in one Raft entry at most (entries stay small; a conflict only voids
/// its own batch).
const BATCH: usize = 64;

/// How long to gather store events before reconciling (coalesces bursts, e.g. 100 tasks
/// reporting Running).
const DEBOUNCE: Duration = Duration::from_millis(15);

/// Reconciles even when nothing happens, as a safety net.
const IDLE: Duration = Duration::from_secs(2);

/// Runs while the manager lives; acts only while it leads.
pub(crate) async fn run(mgr: Weak<Manager>) {
    let Some(m) = mgr.upgrade() else { return };
    let mut events = m.store().subscribe();
    drop(m);
    let mut wait = Duration::from_millis(100);
    loop {
        // Sleep until an event or the wake-up time.
        tokio::select! {
            r = events.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                    return;
                }
                tokio::time::sleep(DEBOUNCE).await;
                // Drain what piled up meanwhile.
                while events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(m) = mgr.upgrade() else { return };
        if !m.is_leader() {
            wait = Duration::from_millis(500);
            continue;
        }
        wait = match round(&m).await {
            Ok(Some(at)) => (at - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_millis(5), IDLE),
            Ok(None) => IDLE,
            Err(e) => {
                tracing::debug!(error = %e, "reconcile round failed");
                Duration::from_millis(200)
            }
        };
    }
}

/// One round: decide and propose. Returns when the next round is due at the latest.
async fn round(mgr: &Manager) -> Result<Option<chrono::DateTime<Utc>>, SwarmError> {
    let view = read_view(mgr)?;
    let mut no_ids = None;
    let plan = decide(view, &mut || match crate::pki::new_node_id() {
        Ok(id) => id,
        Err(e) => {
            no_ids.get_or_insert(e);
            String::new()
        }
    });
    if let Some(e) = no_ids {
        // Without randomness no task can be named: propose nothing this round.
        return Err(SwarmError::Pki(e));
    }
    if plan.is_empty() {
        return Ok(plan.wake_at);
    }
    let wake = plan.wake_at;
    propose_plan(mgr, plan).await;
    // Something changed: the resulting events trigger the next round.
    Ok(wake)
}

fn read_view(mgr: &Manager) -> Result<View, SwarmError> {
    let store = mgr.store();
    let cluster = store
        .list::<Cluster>()?
        .into_iter()
        .next()
        .unwrap_or_default();
    Ok(View {
        cluster,
        nodes: store.list::<Node>()?,
        services: store.list::<Service>()?,
        tasks: store.list::<Task>()?,
        now: Utc::now(),
    })
}

/// Orchestrate, allocate, schedule: the whole decision on one view (pure).
pub(crate) fn decide(mut view: View, ids: &mut dyn orchestrator::IdSource) -> Plan {
    let mut plan = orchestrator::orchestrate(&view, ids);
    // Apply the orchestrators' decisions to the view the scheduler sees.
    for t in &plan.update_tasks {
        if let Some(slot) = view.tasks.iter_mut().find(|x| x.id == t.id) {
            *slot = t.clone();
        }
    }
    view.tasks
        .retain(|t| !plan.delete_tasks.iter().any(|d| d.id == t.id));
    // Allocator: nothing to reserve until networking; new tasks become Pending. They
    // carry their service's registry credentials to the node.
    for t in &mut plan.create_tasks {
        if let Some(s) = view.services.iter().find(|s| s.id == t.service_id) {
            t.registry_auth = s.registry_auth.clone();
        }
        if t.status.state == TaskState::New {
            t.status.state = TaskState::Pending;
            t.status.message = "pending task scheduling".into();
        }
    }
    let created = plan.create_tasks.len();
    view.tasks.extend(plan.create_tasks.iter().cloned());
    // Tasks of earlier rounds still New (an older version's leftovers) move on too.
    let mut allocated = Vec::new();
    for t in view
        .tasks
        .iter_mut()
        .filter(|t| t.status.state == TaskState::New)
    {
        t.status.state = TaskState::Pending;
        t.status.message = "pending task scheduling".into();
        allocated.push(t.id.clone());
    }
    let scheduled = orchestrator::schedule(&view);
    // Merge: scheduled versions of tasks created in this round replace the creates;
    // others become updates (replacing any orchestrator update of the same task).
    let first_new = view.tasks.len() - created;
    let new_ids: std::collections::HashSet<&str> = view.tasks[first_new..]
        .iter()
        .map(|t| t.id.as_str())
        .collect();
    for t in scheduled {
        if new_ids.contains(t.id.as_str()) {
            if let Some(c) = plan.create_tasks.iter_mut().find(|c| c.id == t.id) {
                *c = t;
            }
        } else if let Some(u) = plan.update_tasks.iter_mut().find(|u| u.id == t.id) {
            *u = t;
        } else {
            plan.update_tasks.push(t);
        }
    }
    for id in allocated {
        if !plan.update_tasks.iter().any(|u| u.id == id)
            && let Some(t) = view.tasks.iter().find(|t| t.id == id)
        {
            plan.update_tasks.push(t.clone());
        }
    }
    plan
}

/// Proposes a plan in batches; a refused batch is logged and redone next round.
async fn propose_plan(mgr: &Manager, plan: Plan) {
    let mut actions: Vec<Action> = Vec::new();
    // Services first (rollbacks change what tasks should be), then tasks.
    actions.extend(
        plan.update_services
            .into_iter()
            .map(|s| Action::Update(Object::Service(s))),
    );
    actions.extend(
        plan.update_tasks
            .into_iter()
            .map(|t| Action::Update(Object::Task(t))),
    );
    actions.extend(
        plan.create_tasks
            .into_iter()
            .map(|t| Action::Create(Object::Task(t))),
    );
    actions.extend(plan.delete_tasks.into_iter().map(|t| Action::Delete {
        kind: <Task as StoredObject>::KIND,
        version: Some(t.meta.version),
        id: t.id,
    }));
    for chunk in actions.chunks(BATCH) {
        let n = chunk.len();
        if let Err(e) = mgr
            .propose(Proposal {
                actions: chunk.to_vec(),
                at: Utc::now(),
            })
            .await
        {
            tracing::debug!(error = %e, actions = n, "reconcile batch refused; redoing next round");
        }
    }
}
