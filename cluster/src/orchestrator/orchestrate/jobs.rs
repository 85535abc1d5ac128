//! Jobs: tasks that run to completion. A replicated job completes `total_completions`
//! tasks, at most `max_concurrent` at a time, one slot per completion; a global job
//! completes one task on every suitable node. Each update of a job starts a new iteration
//! (`job_status.job_iteration`, set by the API): tasks of older iterations are stopped
//! and no longer counted. A completed task is never restarted; a failed one follows the
//! restart policy (default `on-failure`) in its slot. Jobs have no rolling updates.

use std::collections::{BTreeMap, BTreeSet};

use shoal_store::model::{Availability, Service, Task, TaskState};

use super::global::{Fit, by_node};
use super::slots::{self, Rules, Slot, SlotState};
use super::{Restart, Work, by_age, job_iteration, reaper};

/// Splits a job's tasks into those of the current iteration and stops the live ones of
/// older iterations.
fn current_iteration<'a>(w: &mut Work<'a>, service: &Service, tasks: &[&'a Task]) -> Vec<&'a Task> {
    let iteration = job_iteration(service);
    let mut current = Vec::new();
    for t in tasks {
        if t.job_iteration.unwrap_or(0) == iteration {
            current.push(*t);
        } else if t.desired_state <= TaskState::Running {
            let to = if t.status.state == TaskState::Complete {
                TaskState::Complete
            } else {
                TaskState::Shutdown
            };
            w.set_desired(t, to);
        }
    }
    current
}

/// Runs a replicated job: fills slots 1..=total_completions, at most `max_concurrent`
/// running (or restarting) at once.
pub(super) fn replicated<'a>(
    w: &mut Work<'a>,
    service: &'a Service,
    tasks: &[&'a Task],
    max_concurrent: u64,
    total_completions: u64,
) {
    let rules = Rules {
        is_job: true,
        check_version: false,
        follow_node_loss: true,
        restart: true,
        refill_stopped: false,
    };
    let current = current_iteration(w, service, tasks);
    let mut groups: BTreeMap<u64, Vec<&'a Task>> = BTreeMap::new();
    for t in &current {
        if t.slot == 0 {
            w.remove(t);
        } else {
            groups.entry(t.slot).or_default().push(t);
        }
    }
    for list in groups.values_mut() {
        list.sort_by(|a, b| by_age(a, b));
    }
    for t in &current {
        slots::retire(w, t, &rules);
    }
    let all: Vec<Slot<'a>> = groups
        .iter()
        .map(|(&slot, list)| Slot {
            slot,
            node_id: "",
            state: slots::evaluate(w, service, list, &rules),
            tasks: list.clone(),
            updatable: false,
        })
        .collect();
    for s in &all {
        if s.state == SlotState::Live {
            slots::resolve_duplicates(w, service, &s.tasks);
        }
    }
    slots::realise(w, service, &all);

    // Slots running or about to run again count against max-concurrent.
    let mut active = all
        .iter()
        .filter(|s| {
            matches!(
                s.state,
                SlotState::Live
                    | SlotState::Stopping
                    | SlotState::Replace(_)
                    | SlotState::RestartAt(_)
            )
        })
        .count() as u64;
    let used: BTreeSet<u64> = all
        .iter()
        .filter(|s| s.state != SlotState::Empty)
        .map(|s| s.slot)
        .collect();
    let mut n = 1;
    while active < max_concurrent && n <= total_completions {
        if !used.contains(&n) {
            w.create(service, n, "", Restart::default());
            active += 1;
        }
        n += 1;
    }

    w.propagate_pause(service, tasks);
    let mut history: BTreeMap<u64, Vec<&'a Task>> = BTreeMap::new();
    for t in tasks {
        if t.slot != 0 {
            history.entry(t.slot).or_default().push(t);
        }
    }
    for list in history.values() {
        reaper::reap_slot(w, list);
    }
}

/// Runs a global job: one completion on every node that suits it.
pub(super) fn global<'a>(w: &mut Work<'a>, service: &'a Service, tasks: &[&'a Task]) {
    let fit = Fit::new(service);
    // Tasks of any run on a node that left the cluster go with it.
    for t in tasks {
        if !t.node_id.is_empty() && w.node(&t.node_id).is_none() {
            w.delete(t);
        }
    }
    let current = current_iteration(w, service, tasks);
    let groups = by_node(w, &current);
    let mut all: Vec<Slot<'a>> = Vec::new();
    for (&node_id, list) in &groups {
        let Some(node) = w.node(node_id) else {
            for t in list {
                w.delete(t);
            }
            continue;
        };
        if !fit.keeps(node) {
            for t in list {
                if w.task(t).desired_state <= TaskState::Running {
                    w.set_desired(t, TaskState::Shutdown);
                }
            }
            continue;
        }
        let paused = node.spec.availability == Availability::Pause;
        let rules = Rules {
            is_job: true,
            check_version: false,
            follow_node_loss: false,
            restart: !paused,
            refill_stopped: true,
        };
        for t in list {
            slots::retire(w, t, &rules);
        }
        let mut state = slots::evaluate(w, service, list, &rules);
        if state == SlotState::Empty && fit.takes_new(node) {
            state = SlotState::Replace(Restart::default());
        }
        all.push(Slot {
            slot: 0,
            node_id,
            tasks: list.clone(),
            state,
            updatable: false,
        });
    }
    for s in &all {
        if s.state == SlotState::Live {
            slots::resolve_duplicates(w, service, &s.tasks);
        }
    }
    slots::realise(w, service, &all);

    w.propagate_pause(service, tasks);
    let mut history: BTreeMap<&'a str, Vec<&'a Task>> = BTreeMap::new();
    for t in tasks {
        if !t.node_id.is_empty() && !w.is_deleted(t) {
            history.entry(t.node_id.as_str()).or_default().push(t);
        }
    }
    for list in history.values() {
        reaper::reap_slot(w, list);
    }
}
