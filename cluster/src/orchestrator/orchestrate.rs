//! Orchestrators (replicated, global, jobs), restart and update supervisors, task reaper.
//!
//! One pure pass over a [`View`] decides every task change that moves the services towards
//! their specs, as SwarmKit's orchestrators do with their event loops and timers. Nothing
//! is remembered between passes: a pending restart, a rolling update's progress or a
//! slot that must stay empty are all read back from the stored tasks each time (their
//! creation times, states, spec versions and restart counters), so a new leader carries on
//! exactly where the old one stopped, and a plan the store refuses is simply made again.
//!
//! Vocabulary, as in SwarmKit:
//! - a *slot* is a replica number (replicated services and jobs) or a node (global
//!   modes); a slot holds the task that runs now and the dead tasks before it (`ps`
//!   history);
//! - a task is *live* when it is desired to run and has not ended
//!   ([`Task::is_runnable`]);
//! - the *newest* task of a slot is the one created last; when no task of a slot is live,
//!   the newest one decides what happens next (restart after the delay, stay ended, or be
//!   replaced at once because the service changed since).
//!
//! Choices where SwarmKit leaves room or a stateless pass must differ:
//! - scale-down sets desired `Remove` (as SwarmKit), removing first from the nodes with
//!   the most copies, then tasks that are not running, then higher slots; the reaper
//!   deletes them once stopped;
//! - a task whose node is down, drained or gone, or no longer meets the task's placement
//!   constraints (SwarmKit's constraint enforcer), is replaced at once, whatever the
//!   restart policy, and the replacement keeps the slot's restart count (a lost node is
//!   not a failure of the task);
//! - a slot that ended for good (restart policy) stays empty until the service's spec
//!   version changes; then, as SwarmKit's reconcile does, it gets a new task;
//! - a completed job task gets desired `Complete` (what `ps` shows for Docker's jobs);
//! - an automatic rollback swaps `spec` and `previous_spec` (SwarmKit clears the
//!   previous spec) and bumps the spec version;
//! - an update failure is a task made by the update that ends by itself within `monitor`
//!   of first running (`status.started_at`, set by the node), or without ever running.
//!
//! The submodules: `slots` reads a slot (and holds the restart supervisor),
//! `replicated`, `global` and `jobs` run each mode, `update` the rolling updates
//! and rollbacks, `reaper` trims the history.

mod global;
mod jobs;
mod reaper;
mod replicated;
mod slots;
mod update;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use shoal_store::model::{
    Availability, Mode, Node, NodeState, Service, Task, TaskState, TaskStatus,
};

use super::{IdSource, Plan, View};

/// Decides the task changes that move every service towards its spec.
pub fn orchestrate(view: &View, ids: &mut dyn IdSource) -> Plan {
    let mut work = Work::new(view);

    let mut by_service: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in &view.tasks {
        by_service.entry(t.service_id.as_str()).or_default().push(t);
    }
    let services: BTreeMap<&str, &Service> =
        view.services.iter().map(|s| (s.id.as_str(), s)).collect();

    for (service_id, tasks) in &by_service {
        if !service_id.is_empty() && !services.contains_key(service_id) {
            service_deleted(&mut work, tasks);
        }
    }

    let none = Vec::new();
    for (id, service) in &services {
        let tasks = by_service.get(id).unwrap_or(&none);
        match service.spec.mode.get() {
            Mode::Replicated { replicas } => replicated::run(&mut work, service, tasks, replicas),
            Mode::Global => global::run(&mut work, service, tasks),
            Mode::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => jobs::replicated(&mut work, service, tasks, max_concurrent, total_completions),
            Mode::GlobalJob => jobs::global(&mut work, service, tasks),
        }
    }

    work.finish(ids)
}

/// The tasks of a service that no longer exists: each is told to go away (desired
/// `Remove`) and deleted once nothing runs it any more.
fn service_deleted<'a>(w: &mut Work<'a>, tasks: &[&'a Task]) {
    for t in tasks {
        w.remove(t);
    }
}

/// The decisions of one pass, accumulated: modified copies of tasks, deletions,
/// creations and service changes, and the earliest time something becomes due.
struct Work<'a> {
    view: &'a View,
    now: DateTime<Utc>,
    nodes: HashMap<&'a str, &'a Node>,
    /// Task id → (the stored task, the copy with this pass's changes).
    changed: HashMap<&'a str, (&'a Task, Task)>,
    /// Task id → the stored task to delete.
    deleted: HashMap<&'a str, &'a Task>,
    /// New tasks (ids given at the end, in the plan's order).
    created: Vec<Task>,
    services: Vec<Service>,
    wake_at: Option<DateTime<Utc>>,
}

impl<'a> Work<'a> {
    fn new(view: &'a View) -> Self {
        Work {
            view,
            now: view.now,
            nodes: view.nodes.iter().map(|n| (n.id.as_str(), n)).collect(),
            changed: HashMap::new(),
            deleted: HashMap::new(),
            created: Vec::new(),
            services: Vec::new(),
            wake_at: None,
        }
    }

    /// The task as this pass left it so far.
    fn task<'s>(&'s self, t: &'a Task) -> &'s Task {
        self.changed.get(t.id.as_str()).map_or(t, |(_, c)| c)
    }

    fn is_changed(&self, t: &Task) -> bool {
        self.changed.contains_key(t.id.as_str())
    }

    fn is_deleted(&self, t: &Task) -> bool {
        self.deleted.contains_key(t.id.as_str())
    }

    /// A copy of the task to modify (made on first use).
    fn edit(&mut self, t: &'a Task) -> &mut Task {
        &mut self
            .changed
            .entry(t.id.as_str())
            .or_insert_with(|| (t, t.clone()))
            .1
    }

    /// Moves the task's desired state forward to `state` (never back).
    fn set_desired(&mut self, t: &'a Task, state: TaskState) {
        if self.is_deleted(t) || self.task(t).desired_state >= state {
            return;
        }
        self.edit(t).desired_state = state;
    }

    fn set_paused(&mut self, t: &'a Task, paused: bool) {
        if self.is_deleted(t) || self.task(t).paused == paused {
            return;
        }
        self.edit(t).paused = paused;
    }

    /// Deletes the task (any change decided for it earlier in the pass is dropped).
    fn delete(&mut self, t: &'a Task) {
        self.changed.remove(t.id.as_str());
        self.deleted.insert(t.id.as_str(), t);
    }

    /// Takes a task out of service: deleted when nothing can be running it any more,
    /// otherwise desired `Remove` (the agent stops it, then the reaper deletes it).
    fn remove(&mut self, t: &'a Task) {
        if self.is_deleted(t) {
            return;
        }
        if self.removable(self.task(t)) {
            self.delete(t);
        } else {
            self.set_desired(t, TaskState::Remove);
        }
    }

    /// Whether a task can be deleted although it was asked to go away: it ended, never
    /// reached a node, or its node is down or gone (nothing will report on it again).
    fn removable(&self, t: &Task) -> bool {
        t.status.state.is_terminal()
            || t.status.state < TaskState::Assigned
            || t.node_id.is_empty()
            || self
                .node(&t.node_id)
                .is_none_or(|n| n.status.state == NodeState::Down)
    }

    fn node(&self, id: &str) -> Option<&'a Node> {
        self.nodes.get(id).copied()
    }

    /// Whether a replicated task can stay where it is: its node exists, is not down and
    /// not drained. (Unassigned tasks always can.)
    fn node_usable(&self, node_id: &str) -> bool {
        node_id.is_empty()
            || self.node(node_id).is_some_and(|n| {
                n.status.state != NodeState::Down && n.spec.availability != Availability::Drain
            })
    }

    /// Whether a replicated task can stay where it is: its node is usable and still meets
    /// the task's placement constraints (node labels can change under it: SwarmKit's
    /// constraint enforcer moves such tasks).
    fn task_fits(&self, t: &Task) -> bool {
        self.node_usable(&t.node_id)
            && (t.node_id.is_empty()
                || self.node(&t.node_id).is_none_or(|n| {
                    crate::orchestrator::constraint::node_matches_placement(n, &t.spec.placement())
                }))
    }

    /// Whether a task's node is drained or gone (replacements then start without the
    /// restart delay, as SwarmKit does for drained nodes).
    fn node_drained_or_gone(&self, node_id: &str) -> bool {
        !node_id.is_empty()
            && self
                .node(node_id)
                .is_none_or(|n| n.spec.availability == Availability::Drain)
    }

    fn wake(&mut self, at: DateTime<Utc>) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    /// Adds a new task for `service` in `slot` (replicated, jobs) or on `node_id` (global).
    fn create(&mut self, service: &Service, slot: u64, node_id: &str, restart: Restart) {
        self.created.push(Task {
            spec: service.spec.task_template.clone(),
            spec_version: service.spec_version,
            service_id: service.id.clone(),
            service_name: service.spec.name.clone(),
            slot,
            node_id: node_id.to_owned(),
            status: TaskStatus {
                timestamp: Some(self.now),
                state: TaskState::New,
                message: "created".to_owned(),
                ..TaskStatus::default()
            },
            desired_state: TaskState::Running,
            job_iteration: service.spec.mode.is_job().then(|| job_iteration(service)),
            restart_attempt: restart.attempt,
            restart_window_start: restart.window_start,
            paused: service.paused,
            ..Task::default()
        });
    }

    /// Records a changed service (only when it differs from the stored one).
    fn update_service(&mut self, stored: &Service, changed: Service) {
        if *stored != changed {
            self.services.push(changed);
        }
    }

    /// Sets every live task's `paused` flag to the service's.
    fn propagate_pause(&mut self, service: &Service, tasks: &[&'a Task]) {
        for t in tasks {
            if !self.is_deleted(t) && self.task(t).is_runnable() {
                self.set_paused(t, service.paused);
            }
        }
    }

    /// The plan, in a deterministic order (by service, slot, node, task id); new tasks get
    /// their ids in that order.
    fn finish(self, ids: &mut dyn IdSource) -> Plan {
        fn key(t: &Task) -> (&str, u64, &str, &str) {
            (&t.service_id, t.slot, &t.node_id, &t.id)
        }
        let mut create_tasks = self.created;
        create_tasks.sort_by(|a, b| key(a).cmp(&key(b)));
        for t in &mut create_tasks {
            t.id = ids.new_id();
        }
        let mut update_tasks: Vec<Task> = self
            .changed
            .into_values()
            .filter(|(stored, changed)| *stored != changed)
            .map(|(_, changed)| changed)
            .collect();
        update_tasks.sort_by(|a, b| key(a).cmp(&key(b)));
        let mut delete_tasks: Vec<Task> = self.deleted.into_values().cloned().collect();
        delete_tasks.sort_by(|a, b| key(a).cmp(&key(b)));
        let mut update_services = self.services;
        update_services.sort_by(|a, b| a.id.cmp(&b.id));
        Plan {
            create_tasks,
            update_tasks,
            delete_tasks,
            update_services,
            wake_at: self.wake_at,
        }
    }
}

/// The restart bookkeeping a new task starts with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Restart {
    attempt: u64,
    window_start: Option<DateTime<Utc>>,
}

/// The job run that is current (0 before the first update).
fn job_iteration(service: &Service) -> u64 {
    service.job_status.as_ref().map_or(0, |j| j.job_iteration)
}

/// When a task was created: the store's creation time, or (for a task not stored yet)
/// its first status time.
fn created(t: &Task) -> DateTime<Utc> {
    if t.meta.created_at != DateTime::<Utc>::default() {
        t.meta.created_at
    } else {
        t.status.timestamp.unwrap_or_default()
    }
}

/// Orders tasks from oldest to newest (ties by id, for determinism).
fn by_age(a: &Task, b: &Task) -> std::cmp::Ordering {
    created(a).cmp(&created(b)).then_with(|| a.id.cmp(&b.id))
}

/// `t + d`, saturating.
fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
