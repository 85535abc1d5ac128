//! Reading a slot: what its tasks say should happen next. This is where SwarmKit's restart
//! supervisor lives (condition, delay, attempts within a window), worked out from the
//! newest task of the slot instead of timers and in-memory history.

use chrono::{DateTime, Utc};
use shoal_store::model::{Service, Task, TaskState};

use super::{Restart, Work, after, by_age, created};
use crate::orchestrator::constraint::node_matches_placement;

/// What a slot needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SlotState {
    /// No task (other than ones being removed).
    Empty,
    /// A task runs or is on its way.
    Live,
    /// The newest task was asked to stop and has not stopped yet: wait for it.
    Stopping,
    /// A new task is needed now.
    Replace(Restart),
    /// The newest task ended; its replacement is due then (the restart delay).
    RestartAt(DateTime<Utc>),
    /// The newest task ended and is not restarted (the restart policy says so).
    Ended,
    /// Jobs: the newest task completed.
    Completed,
}

/// How a mode reads its slots.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rules {
    /// Jobs: a completed task is done, and the restart policy defaults to `on-failure`.
    pub is_job: bool,
    /// Replace a dead slot at once when its newest task was made from an older spec (what
    /// SwarmKit does when it reconciles a changed service).
    pub check_version: bool,
    /// Replace a task whose node is down, drained or gone (replicated services and jobs;
    /// global modes do not move tasks).
    pub follow_node_loss: bool,
    /// Restart tasks that ended (not on paused nodes for global modes).
    pub restart: bool,
    /// Refill at once a slot whose newest task was stopped on request rather than ended
    /// by itself (global modes: a node drained or no longer suitable, then back), as
    /// SwarmKit adds a task to such a node without going through the restart policy.
    pub refill_stopped: bool,
}

/// A slot of a service: its number (replicated, jobs) or node (global), its tasks
/// (stored versions, oldest first) and what it needs.
#[derive(Debug)]
pub(super) struct Slot<'a> {
    pub slot: u64,
    pub node_id: &'a str,
    pub tasks: Vec<&'a Task>,
    pub state: SlotState,
    /// Whether a rolling update may replace the slot's tasks (not on paused nodes).
    pub updatable: bool,
}

/// A live-desired task that ended becomes history: desired Shutdown (Complete for a job
/// task that completed, so `ps` shows it as Docker does). With `follow_node_loss`, so does
/// a task whose node is down, drained or gone.
pub(super) fn retire<'a>(w: &mut Work<'a>, t: &'a Task, rules: &Rules) {
    if w.is_deleted(t) {
        return;
    }
    let cur = w.task(t);
    if cur.desired_state > TaskState::Running {
        return;
    }
    if cur.status.state.is_terminal() {
        let to = if rules.is_job && cur.status.state == TaskState::Complete {
            TaskState::Complete
        } else {
            TaskState::Shutdown
        };
        w.set_desired(t, to);
    } else if rules.follow_node_loss && !w.task_fits(cur) {
        w.set_desired(t, TaskState::Shutdown);
    }
}

/// What the slot needs, from its tasks as this pass left them.
pub(super) fn evaluate<'a>(
    w: &Work<'a>,
    service: &Service,
    tasks: &[&'a Task],
    rules: &Rules,
) -> SlotState {
    let mut newest: Option<&Task> = None;
    for t in tasks {
        if w.is_deleted(t) {
            continue;
        }
        let cur = w.task(t);
        if cur.desired_state >= TaskState::Remove {
            continue;
        }
        if cur.is_runnable() {
            return SlotState::Live;
        }
        if newest.is_none_or(|n| by_age(n, cur).is_lt()) {
            newest = Some(cur);
        }
    }
    let Some(n) = newest else {
        return SlotState::Empty;
    };
    if rules.is_job && n.status.state == TaskState::Complete {
        return SlotState::Completed;
    }
    let outdated = rules.check_version && is_outdated(service, n);
    // Still on its node (it reached one and has not ended).
    if n.status.state >= TaskState::Assigned && !n.status.state.is_terminal() {
        if rules.follow_node_loss && !w.task_fits(n) {
            // Its node is lost: replace it at once. A lost node is not the task's failure,
            // so the slot's restart count carries over.
            return SlotState::Replace(if outdated {
                Restart::default()
            } else {
                Restart {
                    attempt: n.restart_attempt,
                    window_start: n.restart_window_start,
                }
            });
        }
        return SlotState::Stopping;
    }
    if outdated {
        // The service changed since: a fresh task from the new spec, with a fresh restart
        // history (SwarmKit forgets restarts of older spec versions).
        return SlotState::Replace(Restart::default());
    }
    if !rules.restart {
        return SlotState::Ended;
    }
    if rules.refill_stopped
        && (n.status.state == TaskState::Shutdown || n.status.state < TaskState::Assigned)
    {
        return SlotState::Replace(Restart {
            attempt: n.restart_attempt,
            window_start: n.restart_window_start,
        });
    }
    restart_decision(w, n, rules.is_job)
}

/// The restart supervisor's decision for a slot whose newest task `n` ended.
fn restart_decision(w: &Work<'_>, n: &Task, is_job: bool) -> SlotState {
    let policy = n.spec.restart(is_job);
    let state = n.status.state;
    match policy.condition.as_str() {
        "none" => return SlotState::Ended,
        "on-failure" if state == TaskState::Complete => return SlotState::Ended,
        _ => {}
    }
    let ended_at = n.status.timestamp.unwrap_or_else(|| created(n));
    let window = policy.window();
    // Whether the task ended inside the restart window its slot counts in.
    let in_window = window.is_zero()
        || n.restart_window_start
            .is_some_and(|start| ended_at < after(start, window));
    if policy.max_attempts > 0 && n.restart_attempt >= policy.max_attempts && in_window {
        return SlotState::Ended;
    }
    let restart = if in_window {
        Restart {
            attempt: n.restart_attempt + 1,
            window_start: n.restart_window_start,
        }
    } else {
        Restart {
            attempt: 1,
            window_start: Some(w.now),
        }
    };
    // SwarmKit does not apply the restart delay to tasks of drained nodes.
    let delay = if w.node_drained_or_gone(&n.node_id) {
        std::time::Duration::ZERO
    } else {
        policy.delay()
    };
    let due = after(ended_at, delay);
    if due <= w.now {
        SlotState::Replace(restart)
    } else {
        SlotState::RestartAt(due)
    }
}

/// Whether a task was made from another spec than the service's current one.
pub(super) fn is_outdated(service: &Service, t: &Task) -> bool {
    t.spec_version != service.spec_version || t.spec != service.spec.task_template
}

/// Whether a task must be replaced by a rolling update: its spec differs from the
/// service's. As in SwarmKit, a change of the placement alone does not replace a task
/// whose node still satisfies the new placement.
pub(super) fn is_dirty(w: &Work<'_>, service: &Service, t: &Task) -> bool {
    let want = &service.spec.task_template;
    if t.spec == *want {
        return false;
    }
    if t.spec.placement != want.placement && !t.node_id.is_empty() {
        let mut same = t.spec.clone();
        same.placement.clone_from(&want.placement);
        if same == *want {
            return !w
                .node(&t.node_id)
                .is_some_and(|n| node_matches_placement(n, &want.placement()));
        }
    }
    true
}

/// Several live tasks in one slot (a start-first update, or a decision an old leader
/// made): keeps the one to run and shuts the others down. A clean task that runs wins;
/// until one does, the newest clean task and the best dirty one both stay (the update
/// supervisor shuts the old one once the new one runs).
pub(super) fn resolve_duplicates<'a>(w: &mut Work<'a>, service: &Service, tasks: &[&'a Task]) {
    let live: Vec<&'a Task> = tasks
        .iter()
        .copied()
        .filter(|t| !w.is_deleted(t) && w.task(t).is_runnable())
        .collect();
    if live.len() < 2 {
        return;
    }
    let running = |t: &Task| t.status.state == TaskState::Running;
    let best = |pick: &dyn Fn(&Task) -> bool| -> Option<&'a Task> {
        live.iter()
            .copied()
            .filter(|t| pick(w.task(t)))
            .max_by(|a, b| {
                let (a, b) = (w.task(a), w.task(b));
                running(a).cmp(&running(b)).then_with(|| by_age(a, b))
            })
    };
    let keep: Vec<&str> = if let Some(k) = best(&|t| running(t) && !is_dirty(w, service, t)) {
        vec![k.id.as_str()]
    } else {
        [
            best(&|t| !is_dirty(w, service, t)),
            best(&|t| is_dirty(w, service, t)),
        ]
        .into_iter()
        .flatten()
        .map(|t| t.id.as_str())
        .collect()
    };
    for t in live {
        if !keep.contains(&t.id.as_str()) {
            w.set_desired(t, TaskState::Shutdown);
        }
    }
}

/// Creates the tasks slots need now, and asks to be woken when delayed restarts are due.
pub(super) fn realise(w: &mut Work<'_>, service: &Service, slots: &[Slot<'_>]) {
    for s in slots {
        match s.state {
            SlotState::Replace(restart) => w.create(service, s.slot, s.node_id, restart),
            SlotState::RestartAt(at) => w.wake(at),
            _ => {}
        }
    }
}
