//! Rolling updates and rollbacks (SwarmKit's update supervisor), read back each pass from
//! the tasks: a task *made by the update* has the service's current spec version, was
//! created after the update started and is no restart of another (restart attempt 0). The
//! API starts an update by setting `update_status` to Updating (or RollbackStarted, with
//! the specs swapped); from then on each pass:
//!
//! - counts the failures of tasks made by the update and applies the failure action once
//!   their share of the slots exceeds the max failure ratio ([`check_failures`]);
//! - replaces the tasks of up to `parallelism` slots at a time, a slot being busy until its
//!   new task reaches Running, and each worker resting `delay` after its slot;
//! - marks the update completed once no slot runs an old task and the last new task has
//!   run for `delay` + `monitor` ([`step`]).
//!
//! Failures are counted for the whole update rather than within `monitor` of each task
//! starting: tasks do not record when they started running.

use chrono::{DateTime, Utc};
use shoal_store::model::{Service, Task, TaskState, UpdateConfig, UpdateState, UpdateStatus};

use super::slots::{Slot, SlotState, is_dirty, is_outdated};
use super::{Restart, Work, after, by_age, created};

/// The update or rollback settings in force for `state`.
fn config(service: &Service, state: UpdateState) -> UpdateConfig {
    let c = if state.is_rollback() {
        &service.spec.rollback_config
    } else {
        &service.spec.update_config
    };
    c.clone().unwrap_or_default()
}

/// Whether the update in progress made this task.
fn made_by_update(service: &Service, status: &UpdateStatus, t: &Task) -> bool {
    t.restart_attempt == 0
        && t.spec_version == service.spec_version
        && created(t) >= status.started_at.unwrap_or_default()
}

/// Whether a task ended by itself (anything but being told to stop) before it had run
/// for the monitor window (a task that never ran counts too).
fn failed(t: &Task, monitor: std::time::Duration) -> bool {
    let early = match (t.status.started_at, t.status.timestamp) {
        (Some(started), Some(ended)) => (ended - started).to_std().unwrap_or_default() <= monitor,
        _ => true,
    };
    t.status.state.is_terminal()
        && !matches!(t.status.state, TaskState::Shutdown | TaskState::Remove)
        && early
}

/// Applies the failure action when too many tasks made by the update in progress failed:
/// pause it, or roll back to the previous spec (an update only; a failing rollback
/// pauses). `total` is the number of slots of the service. Changes `service` in place.
pub(super) fn check_failures(w: &Work<'_>, service: &mut Service, tasks: &[&Task], total: usize) {
    let Some(status) = service.update_status.clone() else {
        return;
    };
    if !status.state.in_progress() {
        return;
    }
    let cfg = config(service, status.state);
    let failures: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| made_by_update(service, &status, t) && failed(t, cfg.monitor()))
        .collect();
    // The failure that tipped it (the latest one).
    let Some(last) = failures.iter().max_by(|a, b| {
        a.status
            .timestamp
            .cmp(&b.status.timestamp)
            .then_with(|| by_age(a, b))
    }) else {
        return;
    };
    if failures.len() as f64 / total.max(1) as f64 <= cfg.max_failure_ratio {
        return;
    }
    let id = &last.id;
    let rolling_back = status.state.is_rollback();
    let mut status = status;
    match cfg.failure_action.as_str() {
        "continue" => return,
        "rollback" if rolling_back => {
            // Never roll back a rollback.
            status.state = UpdateState::RollbackPaused;
            status.message =
                format!("rollback paused due to failure or early termination of task {id}");
        }
        "rollback" if service.previous_spec.is_some() => {
            let previous = service.previous_spec.take().unwrap_or_default();
            service.previous_spec = Some(std::mem::replace(&mut service.spec, previous));
            service.spec_version += 1;
            status.state = UpdateState::RollbackStarted;
            status.started_at = Some(w.now);
            status.completed_at = None;
            status.message =
                format!("update rolled back due to failure or early termination of task {id}");
        }
        // `pause`, and `rollback` without a spec to return to.
        _ => {
            status.state = if rolling_back {
                UpdateState::RollbackPaused
            } else {
                UpdateState::Paused
            };
            status.message =
                format!("update paused due to failure or early termination of task {id}");
        }
    }
    service.update_status = Some(status);
}

/// One pass of the update in progress over the slots that stay (sorted by slot or node).
pub(super) fn step<'a>(w: &mut Work<'a>, service: &mut Service, slots: &[Slot<'a>]) {
    let Some(status) = service.update_status.clone() else {
        return;
    };
    if !status.state.in_progress() {
        return;
    }
    let cfg = config(service, status.state);
    let now = w.now;

    // When the workers got free: each task made by the update frees its worker when it
    // reaches Running (or ends), and the worker then rests `delay`.
    let mut last_done: Option<DateTime<Utc>> = None;
    let mut resting = 0usize;
    let mut next_free: Option<DateTime<Utc>> = None;
    let mut busy = 0usize;
    for s in slots {
        for t in &s.tasks {
            if w.is_deleted(t) {
                continue;
            }
            let t = w.task(t);
            if !made_by_update(service, &status, t) || t.status.state < TaskState::Running {
                continue;
            }
            let done = t.status.timestamp.unwrap_or_else(|| created(t));
            last_done = last_done.max(Some(done));
            let free = after(done, cfg.delay());
            if free > now {
                resting += 1;
                next_free = Some(next_free.map_or(free, |n| n.min(free)));
            }
        }
        if in_progress(w, service, &status, s) {
            busy += 1;
        }
    }

    let candidates: Vec<&Slot<'a>> = slots
        .iter()
        .filter(|s| s.updatable && s.state == SlotState::Live && only_dirty(w, service, s))
        .collect();
    let free = if cfg.parallelism == 0 {
        usize::MAX
    } else {
        usize::try_from(cfg.parallelism)
            .unwrap_or(usize::MAX)
            .saturating_sub(busy + resting)
    };
    if candidates.len() > free
        && let Some(at) = next_free
    {
        w.wake(at);
    }
    let mut started = 0usize;
    for s in candidates.into_iter().take(free) {
        start(w, service, &cfg, s);
        started += 1;
    }

    let dirty_left = slots
        .iter()
        .any(|s| s.updatable && live(w, s).any(|t| is_dirty(w, service, w.task(t))));
    if started > 0 || busy > 0 || dirty_left {
        return;
    }
    let settled = last_done.map(|d| after(after(d, cfg.delay()), cfg.monitor()));
    match settled {
        Some(at) if at > now => w.wake(at),
        _ => {
            let mut status = status;
            if status.state.is_rollback() {
                status.state = UpdateState::RollbackCompleted;
                status.message = "rollback completed".to_owned();
            } else {
                status.state = UpdateState::Completed;
                status.message = "update completed".to_owned();
            }
            status.completed_at = Some(now);
            service.update_status = Some(status);
        }
    }
}

/// The slot's live tasks (as this pass left them).
fn live<'a, 's>(w: &'s Work<'a>, s: &'s Slot<'a>) -> impl Iterator<Item = &'a Task> + 's {
    s.tasks
        .iter()
        .copied()
        .filter(move |t| !w.is_deleted(t) && w.task(t).is_runnable())
}

/// Whether every live task of the slot must be replaced (and there is one).
fn only_dirty(w: &Work<'_>, service: &Service, s: &Slot<'_>) -> bool {
    let mut any = false;
    for t in live(w, s) {
        if !is_dirty(w, service, w.task(t)) {
            return false;
        }
        any = true;
    }
    any
}

/// Whether the slot occupies an update worker: its new task has not reached Running yet
/// (next to the old one, start-first), or its old task is being stopped or was just
/// stopped (stop-first).
fn in_progress(w: &Work<'_>, service: &Service, status: &UpdateStatus, s: &Slot<'_>) -> bool {
    match s.state {
        SlotState::Live => {
            let pair = live(w, s).any(|t| is_dirty(w, service, w.task(t)));
            live(w, s).any(|t| {
                let t = w.task(t);
                t.status.state < TaskState::Running
                    && !is_dirty(w, service, t)
                    && (pair || made_by_update(service, status, t))
            })
        }
        SlotState::Stopping | SlotState::Replace(_) => s
            .tasks
            .iter()
            .filter(|t| !w.is_deleted(t) && w.task(t).desired_state < TaskState::Remove)
            .max_by(|a, b| by_age(a, b))
            .is_some_and(|n| is_outdated(service, w.task(n))),
        _ => false,
    }
}

/// Starts replacing a slot's tasks: start-first creates the new task next to the old one
/// (shut down once the new one runs); stop-first stops the old one, and the new one is
/// made once it stopped (at once when it never reached a node).
fn start<'a>(w: &mut Work<'a>, service: &Service, cfg: &UpdateConfig, s: &Slot<'a>) {
    if cfg.start_first() {
        w.create(service, s.slot, s.node_id, Restart::default());
        return;
    }
    let old: Vec<&'a Task> = live(w, s).collect();
    let mut stopped = true;
    for t in old {
        let cur = w.task(t);
        if cur.status.state >= TaskState::Assigned && w.node_usable(&cur.node_id) {
            stopped = false;
        }
        w.set_desired(t, TaskState::Shutdown);
    }
    if stopped {
        w.create(service, s.slot, s.node_id, Restart::default());
    }
}
