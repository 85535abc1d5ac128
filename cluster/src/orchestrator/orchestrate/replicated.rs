//! Replicated services: `replicas` slots, each with one live task.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shoal_store::model::{Service, Task, TaskState};

use super::slots::{self, Rules, Slot, SlotState};
use super::{Restart, Work, by_age, reaper, update};

const RULES: Rules = Rules {
    is_job: false,
    check_version: true,
    follow_node_loss: true,
    restart: true,
    refill_stopped: false,
};

/// Keeps `replicas` slots of the service filled.
pub(super) fn run<'a>(w: &mut Work<'a>, stored: &'a Service, tasks: &[&'a Task], replicas: u64) {
    let mut service = stored.clone();
    let total = usize::try_from(replicas).unwrap_or(usize::MAX);
    update::check_failures(w, &mut service, tasks, total);

    let mut groups: BTreeMap<u64, Vec<&'a Task>> = BTreeMap::new();
    for t in tasks {
        if t.slot == 0 {
            // Not a replica (left from another mode): it goes.
            w.remove(t);
        } else {
            groups.entry(t.slot).or_default().push(t);
        }
    }
    for list in groups.values_mut() {
        list.sort_by(|a, b| by_age(a, b));
    }
    for t in tasks {
        slots::retire(w, t, &RULES);
    }

    let all: Vec<Slot<'a>> = groups
        .iter()
        .map(|(&slot, list)| Slot {
            slot,
            node_id: "",
            state: slots::evaluate(w, &service, list, &RULES),
            tasks: list.clone(),
            updatable: true,
        })
        .filter(|s| s.state != SlotState::Empty)
        .collect();
    let used: BTreeSet<u64> = all.iter().map(|s| s.slot).collect();
    let (kept, removed) = choose(w, all, total);
    for s in &removed {
        for t in &s.tasks {
            w.remove(t);
        }
    }

    for s in &kept {
        if s.state == SlotState::Live {
            slots::resolve_duplicates(w, &service, &s.tasks);
        }
    }
    update::step(w, &mut service, &kept);
    slots::realise(w, &service, &kept);

    // Scale up: new slots, lowest free numbers first.
    let mut missing = total.saturating_sub(kept.len());
    let mut n = 1;
    while missing > 0 {
        if !used.contains(&n) {
            w.create(&service, n, "", Restart::default());
            missing -= 1;
        }
        n += 1;
    }

    w.propagate_pause(&service, tasks);
    for list in groups.values() {
        reaper::reap_slot(w, list);
    }
    w.update_service(stored, service);
}

/// Splits the slots into the `replicas` that stay and the ones scale-down removes. As
/// SwarmKit does, it removes from the nodes that run the most tasks of the service first,
/// and prefers removing slots whose task is not running: tasks still waiting for a node,
/// slots between restarts, then slots that ended for good; ties go to higher slot numbers.
fn choose<'a>(
    w: &Work<'a>,
    mut all: Vec<Slot<'a>>,
    replicas: usize,
) -> (Vec<Slot<'a>>, Vec<Slot<'a>>) {
    if all.len() <= replicas {
        return (all, Vec::new());
    }
    struct Rank<'t> {
        tier: u8,
        running: bool,
        node: Option<&'t str>,
        index: usize,
    }
    let mut ranks: Vec<Rank<'_>> = all
        .iter()
        .map(|s| {
            let live: Vec<&Task> = s
                .tasks
                .iter()
                .filter(|t| !w.is_deleted(t) && w.task(t).is_runnable())
                .map(|t| w.task(t))
                .collect();
            let running = live.iter().any(|t| t.status.state == TaskState::Running);
            let node = live
                .iter()
                .copied()
                .max_by(|a, b| by_age(a, b))
                .map(|t| t.node_id.as_str())
                .filter(|n| !n.is_empty());
            let tier = match s.state {
                SlotState::Live if node.is_some() => 0,
                SlotState::Ended | SlotState::Completed => 2,
                _ => 1,
            };
            Rank {
                tier,
                running,
                node,
                index: 0,
            }
        })
        .collect();
    // Number each placed slot as the n-th copy on its node, running ones first.
    let mut order: Vec<usize> = (0..all.len()).filter(|&i| ranks[i].tier == 0).collect();
    order.sort_by_key(|&i| (!ranks[i].running, all[i].slot));
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for i in order {
        if let Some(node) = ranks[i].node {
            let c = per_node.entry(node).or_default();
            *c += 1;
            ranks[i].index = *c;
        }
    }
    let mut idx: Vec<usize> = (0..all.len()).collect();
    idx.sort_by_key(|&i| {
        (
            ranks[i].tier,
            ranks[i].index,
            !ranks[i].running,
            all[i].slot,
        )
    });
    let keep: BTreeSet<usize> = idx.into_iter().take(replicas).collect();
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    for (i, s) in all.drain(..).enumerate() {
        if keep.contains(&i) {
            kept.push(s);
        } else {
            removed.push(s);
        }
    }
    (kept, removed)
}
