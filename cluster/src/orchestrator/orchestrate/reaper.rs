//! The task reaper: deletes tasks that were told to go away once they stopped, and trims
//! each slot's history to the cluster's task history retention limit (SwarmKit's
//! taskreaper: a slot keeps at most `limit` tasks, the live one included; the oldest dead
//! ones go first; a negative limit keeps everything).

use shoal_store::model::{Task, TaskState};

use super::{Work, by_age};

/// Reaps one slot (a replica number, or a node for global modes); `tasks` are the slot's
/// stored tasks, oldest first.
pub(super) fn reap_slot<'a>(w: &mut Work<'a>, tasks: &[&'a Task]) {
    // Tasks desired Remove (scale-down, deleted services) go once nothing runs them.
    // Tasks changed in this pass wait for the next one (one write per task per plan).
    for t in tasks {
        if !w.is_deleted(t)
            && !w.is_changed(t)
            && t.desired_state >= TaskState::Remove
            && w.removable(t)
        {
            w.delete(t);
        }
    }
    let limit = w
        .view
        .cluster
        .spec
        .orchestration
        .task_history_retention_limit;
    let Ok(limit) = usize::try_from(limit) else {
        return;
    };
    let mut rest: Vec<&'a Task> = tasks
        .iter()
        .copied()
        .filter(|t| !w.is_deleted(t) && w.task(t).desired_state < TaskState::Remove)
        .collect();
    rest.sort_by(|a, b| by_age(a, b));
    let mut count = rest.len();
    // The newest task of a slot always stays: it tells what the slot needs next.
    rest.pop();
    for t in rest {
        if count <= limit {
            break;
        }
        if w.is_changed(t) || !dead(w, t) {
            continue;
        }
        w.delete(t);
        count -= 1;
    }
}

/// Whether a task is history: not desired to run, and ended (or never reached a node, or
/// its node is gone).
fn dead(w: &Work<'_>, t: &Task) -> bool {
    t.desired_state > TaskState::Running
        && (t.status.state.is_terminal()
            || t.status.state < TaskState::Assigned
            || (!t.node_id.is_empty() && w.node(&t.node_id).is_none()))
}
