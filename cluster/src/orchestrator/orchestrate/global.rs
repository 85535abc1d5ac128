//! Global services: one task on every node that suits the service.

use std::collections::BTreeMap;

use shoal_store::model::{
    Availability, Membership, Node, NodeState, PlatformSpec, Service, Task, TaskState,
};

use super::slots::{self, Rules, Slot, SlotState};
use super::{Restart, Work, by_age, reaper, update};
use crate::orchestrator::constraint::{Constraint, matches_all, parse_all, platform_matches};

/// Which nodes suit a service (its placement constraints and platforms).
pub(super) struct Fit {
    /// None when the constraints do not parse: no node suits.
    constraints: Option<Vec<Constraint>>,
    platforms: Vec<PlatformSpec>,
}

impl Fit {
    pub(super) fn new(service: &Service) -> Self {
        let placement = service.spec.task_template.placement();
        Fit {
            constraints: parse_all(&placement.constraints).ok(),
            platforms: placement.platforms,
        }
    }

    /// Whether the service's tasks may stay on the node: it is up, not drained, a member,
    /// and satisfies the placement. (A paused node keeps its tasks.)
    pub(super) fn keeps(&self, n: &Node) -> bool {
        n.status.state != NodeState::Down
            && n.spec.availability != Availability::Drain
            && n.spec.membership == Membership::Accepted
            && self
                .constraints
                .as_ref()
                .is_some_and(|cs| matches_all(cs, n))
            && platform_matches(n, &self.platforms)
    }

    /// Whether the node takes new tasks of the service: it keeps them, is active, and is
    /// ready (or not known to be otherwise yet).
    pub(super) fn takes_new(&self, n: &Node) -> bool {
        self.keeps(n)
            && n.spec.availability == Availability::Active
            && matches!(n.status.state, NodeState::Ready | NodeState::Unknown)
    }
}

/// The service's tasks by node (tasks without a node go, as they cannot belong to a global
/// service), over every node of the cluster and every node a task names; oldest first.
pub(super) fn by_node<'a>(
    w: &mut Work<'a>,
    tasks: &[&'a Task],
) -> BTreeMap<&'a str, Vec<&'a Task>> {
    let view = w.view;
    let mut groups: BTreeMap<&'a str, Vec<&'a Task>> = BTreeMap::new();
    for n in &view.nodes {
        groups.entry(n.id.as_str()).or_default();
    }
    for t in tasks {
        if t.node_id.is_empty() {
            w.remove(t);
        } else {
            groups.entry(t.node_id.as_str()).or_default().push(t);
        }
    }
    for list in groups.values_mut() {
        list.sort_by(|a, b| by_age(a, b));
    }
    groups
}

/// Keeps one task of the service on every node that suits it.
pub(super) fn run<'a>(w: &mut Work<'a>, stored: &'a Service, tasks: &[&'a Task]) {
    let mut service = stored.clone();
    let fit = Fit::new(&service);
    let total = w
        .view
        .nodes
        .iter()
        .filter(|n| fit.keeps(n) && n.spec.availability != Availability::Pause)
        .count();
    update::check_failures(w, &mut service, tasks, total);

    let groups = by_node(w, tasks);
    let mut kept: Vec<Slot<'a>> = Vec::new();
    for (&node_id, list) in &groups {
        let Some(node) = w.node(node_id) else {
            // The node left the cluster: its tasks go with it.
            for t in list {
                w.delete(t);
            }
            continue;
        };
        if !fit.keeps(node) {
            // Drained, down, or no longer suitable: stop the service's task there.
            for t in list {
                if w.task(t).desired_state <= TaskState::Running {
                    w.set_desired(t, TaskState::Shutdown);
                }
            }
            continue;
        }
        // A paused node keeps what it runs: no new task, no restart, no update.
        let paused = node.spec.availability == Availability::Pause;
        let rules = Rules {
            is_job: false,
            check_version: !paused,
            follow_node_loss: false,
            restart: !paused,
            refill_stopped: true,
        };
        for t in list {
            slots::retire(w, t, &rules);
        }
        let mut state = slots::evaluate(w, &service, list, &rules);
        if state == SlotState::Empty && fit.takes_new(node) {
            state = SlotState::Replace(Restart::default());
        }
        kept.push(Slot {
            slot: 0,
            node_id,
            tasks: list.clone(),
            state,
            updatable: !paused,
        });
    }

    for s in &kept {
        if s.state == SlotState::Live {
            slots::resolve_duplicates(w, &service, &s.tasks);
        }
    }
    update::step(w, &mut service, &kept);
    slots::realise(w, &service, &kept);

    w.propagate_pause(&service, tasks);
    for list in groups.values() {
        reaper::reap_slot(w, list);
    }
    w.update_service(stored, service);
}
