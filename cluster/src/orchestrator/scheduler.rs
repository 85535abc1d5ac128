//! The scheduler: places pending tasks on nodes, as SwarmKit's scheduler does.
//!
//! A pending task without a node gets the best eligible node; a pending task that already
//! names its node (global modes) is only checked against that node. A node is eligible
//! when it passes every filter of SwarmKit's pipeline, in its order:
//!
//! 1. ready: status Ready, availability Active, membership accepted;
//! 2. resources: the task's CPU/memory reservations fit in what the node offers minus the
//!    reservations of the tasks on it (skipped for tasks reserving nothing);
//! 3. constraints: every `Placement.Constraints` entry matches;
//! 4. platform: one of `Placement.Platforms` (if any) is the node's;
//! 5. max replicas: fewer than `Placement.MaxReplicas` active tasks of the service on it.
//!
//! "On the node" means assigned to it and not yet ended (Assigned ..= Running), whatever
//! the desired state: a task being stopped still holds its reservation until it has
//! stopped, as in SwarmKit. "Active" tasks (the counts used to spread, and for max
//! replicas) are those on the node whose desired state is still Running or earlier.
//!
//! Among eligible nodes the choice is SwarmKit's: spread preferences first (the nodes are
//! grouped by the value of each `spread` label, level by level; nodes without the label
//! form their own group; the group with the fewest active tasks of the service wins),
//! then a node with 5 or more recent failures of this service version is avoided, then
//! the fewest active tasks of the service on the node, then the fewest active tasks in
//! total, then the node ID (for determinism). Tasks are placed one at a time in slot
//! order and every placement updates the counts, so replicas spread evenly.
//!
//! A task no node can take stays Pending with Docker's explanation in `status.err`
//! (`no suitable node (insufficient resources on 2 nodes)`); a refused preset task gets
//! SwarmKit's explanation in `status.message` instead. Explanations are worked out on the
//! state after every placement of the call and written only when they change, so calling
//! again on the result (or on an unchanged cluster) gives no writes.

use std::cmp::Reverse;
use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use shoal_store::model::{
    Availability, Membership, Node, NodeState, Placement, Resources, Task, TaskState,
};

use super::View;
use super::constraint::{self, Constraint};

/// `status.message` of a task the scheduler placed.
pub const ASSIGNED_MESSAGE: &str = "scheduler assigned task to node";
/// `status.message` of a task whose preset node (global modes) was confirmed (SwarmKit's
/// wording).
pub const PREASSIGNED_MESSAGE: &str = "scheduler confirmed task can run on preassigned node";
/// Prefix of `status.err` of a task no node can take.
pub const NO_SUITABLE_NODE: &str = "no suitable node";

/// Failures of a service version on a node within [`failure_window`] from which the
/// node is avoided (SwarmKit's `maxFailures`).
const MAX_FAILURES: u32 = 5;

/// How far back failures count (SwarmKit's `monitorFailures`).
fn failure_window() -> TimeDelta {
    TimeDelta::minutes(5)
}

/// Decides where pending tasks go; returns the tasks it changed (placed, or whose
/// explanation for not being placed changed), in a deterministic order.
pub fn schedule(view: &View) -> Vec<Task> {
    let mut state = ClusterState::new(view);

    let mut preset = Vec::new();
    let mut unassigned = Vec::new();
    for t in &view.tasks {
        if t.status.state != TaskState::Pending || t.desired_state > TaskState::Running {
            continue;
        }
        if t.node_id.is_empty() {
            unassigned.push(t);
        } else {
            preset.push(t);
        }
    }

    // What each task needs; decisions refer to it by index.
    let mut reqs: Vec<Requirements> = Vec::new();
    let mut decisions: Vec<Decision> = Vec::new();

    // Preset tasks first, as SwarmKit confirms them before it schedules the queue.
    preset.sort_by(|a, b| {
        (&a.service_id, &a.node_id, &a.id).cmp(&(&b.service_id, &b.node_id, &b.id))
    });
    for t in preset {
        let req = Requirements::of(t);
        match state.confirm_preset(t, &req) {
            Some(node) => decisions.push(Decision::Placed {
                task: t,
                node,
                message: PREASSIGNED_MESSAGE,
            }),
            None if state.by_id.contains_key(t.node_id.as_str()) => {
                decisions.push(Decision::PresetRefused {
                    task: t,
                    req: reqs.len(),
                });
                reqs.push(req);
            }
            // The node is gone: the orchestrator replaces the task.
            None => {}
        }
    }

    unassigned.sort_by(|a, b| {
        (&a.service_id, a.spec_version, a.slot, &a.id).cmp(&(
            &b.service_id,
            b.spec_version,
            b.slot,
            &b.id,
        ))
    });
    // Tasks of one service version with the same placement and reservations form a group:
    // they are judged by the same filters and spread together.
    let mut rest = &unassigned[..];
    while let Some(first) = rest.first() {
        let len = rest
            .iter()
            .position(|t| !same_group(first, t))
            .unwrap_or(rest.len());
        let (group, tail) = rest.split_at(len);
        let req = Requirements::of(first);
        let before = decisions.len();
        state.schedule_group(group, &req, reqs.len(), &mut decisions);
        if decisions[before..]
            .iter()
            .any(|d| matches!(d, Decision::Unplaced { .. }))
        {
            reqs.push(req);
        }
        rest = tail;
    }

    // Explanations are worked out on the final state: placements only take room away, so
    // a task refused earlier in the call is still refused, and the next call, which
    // starts from this state, finds the same words (no writes when nothing changed).
    let mut explanations: Vec<Option<String>> = vec![None; reqs.len()];
    let mut placed = 0usize;
    let changed: Vec<Task> = decisions
        .into_iter()
        .filter_map(|d| match d {
            Decision::Placed {
                task,
                node,
                message,
            } => {
                placed += 1;
                Some(assigned(
                    task,
                    &state.nodes[node].node.id,
                    message,
                    view.now,
                ))
            }
            Decision::PresetRefused { task, req } => {
                let why = state.explain_preset(task, &reqs[req])?;
                (task.status.message != why).then(|| {
                    let mut t = task.clone();
                    t.status.message = why;
                    t.status.timestamp = Some(view.now);
                    t
                })
            }
            Decision::Unplaced { task, req } => {
                let err = explanations[req].get_or_insert_with(|| state.explain_group(&reqs[req]));
                (task.status.err != *err).then(|| {
                    let mut t = task.clone();
                    t.status.err = err.clone();
                    t.status.timestamp = Some(view.now);
                    t
                })
            }
        })
        .collect();

    tracing::debug!(
        candidates = unassigned.len(),
        placed,
        changed = changed.len(),
        nodes = state.nodes.len(),
        "scheduled pending tasks"
    );
    changed
}

fn same_group(a: &Task, b: &Task) -> bool {
    a.service_id == b.service_id
        && a.spec_version == b.spec_version
        && a.spec.placement == b.spec.placement
        && a.spec.reservations() == b.spec.reservations()
}

/// What the call decided for one task, in output order.
enum Decision<'a> {
    /// Assigned to the node of that index, with that message.
    Placed {
        task: &'a Task,
        node: usize,
        message: &'static str,
    },
    /// Its preset node cannot take it; `req` indexes its requirements.
    PresetRefused { task: &'a Task, req: usize },
    /// No node can take it; `req` indexes its group's requirements.
    Unplaced { task: &'a Task, req: usize },
}

/// A filter of the pipeline, in SwarmKit's order (the index into failure counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    Ready = 0,
    Resources = 1,
    Constraints = 2,
    Platform = 3,
    MaxReplicas = 4,
}

const FILTERS: [Filter; 5] = [
    Filter::Ready,
    Filter::Resources,
    Filter::Constraints,
    Filter::Platform,
    Filter::MaxReplicas,
];

impl Filter {
    /// SwarmKit's `Explain` for this filter failing on `nodes` nodes.
    fn explain(self, nodes: usize) -> String {
        let s = if nodes == 1 { "" } else { "s" };
        match self {
            Filter::Ready => format!("{nodes} node{s} not available for new tasks"),
            Filter::Resources => format!("insufficient resources on {nodes} node{s}"),
            Filter::Constraints => {
                format!("scheduling constraints not satisfied on {nodes} node{s}")
            }
            Filter::Platform => format!("unsupported platform on {nodes} node{s}"),
            Filter::MaxReplicas => "max replicas per node limit exceed".to_owned(),
        }
    }
}

/// SwarmKit's pipeline `Explain`: each filter that failed, the most failures first (ties
/// in pipeline order), joined by `; `. Empty when nothing failed (no nodes at all).
fn explain(failures: &[usize; 5]) -> String {
    let mut failed: Vec<Filter> = FILTERS
        .into_iter()
        .filter(|f| failures[*f as usize] > 0)
        .collect();
    failed.sort_by_key(|f| Reverse(failures[*f as usize]));
    failed
        .iter()
        .map(|f| f.explain(failures[*f as usize]))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One node and what is placed on it, kept up to date as tasks are placed.
struct NodeSlot<'a> {
    node: &'a Node,
    /// Passes the ready filter.
    available: bool,
    /// What the node offers minus the reservations of the tasks on it (may be negative if
    /// the node shrank).
    free: Resources,
    /// Active tasks of every service on the node.
    active: u32,
}

/// The scheduler's picture of the cluster for one call.
struct ClusterState<'a> {
    /// Sorted by node ID, so an index order is the ID order.
    nodes: Vec<NodeSlot<'a>>,
    by_id: HashMap<&'a str, usize>,
    /// Active tasks of each service, per node index.
    per_service: HashMap<&'a str, Vec<u32>>,
    /// Recent failures (Failed/Rejected within the window) of each service version, per
    /// node index; only tasks the scheduler placed (not global ones) count.
    failures: HashMap<(&'a str, u64), Vec<u32>>,
}

impl<'a> ClusterState<'a> {
    fn new(view: &'a View) -> Self {
        let mut sorted: Vec<&Node> = view.nodes.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        let nodes: Vec<NodeSlot> = sorted
            .into_iter()
            .map(|node| NodeSlot {
                node,
                available: node.status.state == NodeState::Ready
                    && node.spec.availability == Availability::Active
                    && node.spec.membership == Membership::Accepted,
                free: node.description.resources.clone(),
                active: 0,
            })
            .collect();
        let by_id: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.node.id.as_str(), i))
            .collect();
        let mut state = ClusterState {
            nodes,
            by_id,
            per_service: HashMap::new(),
            failures: HashMap::new(),
        };
        let since = view.now - failure_window();
        let n = state.nodes.len();
        for t in &view.tasks {
            if t.node_id.is_empty() {
                continue;
            }
            let Some(&j) = state.by_id.get(t.node_id.as_str()) else {
                continue;
            };
            let s = t.status.state;
            if (TaskState::Assigned..=TaskState::Running).contains(&s) {
                let r = t.spec.reservations();
                let free = &mut state.nodes[j].free;
                free.nano_cpus = free.nano_cpus.saturating_sub(r.nano_cpus);
                free.memory_bytes = free.memory_bytes.saturating_sub(r.memory_bytes);
                if t.desired_state <= TaskState::Running {
                    state.nodes[j].active += 1;
                    state
                        .per_service
                        .entry(t.service_id.as_str())
                        .or_insert_with(|| vec![0; n])[j] += 1;
                }
            } else if matches!(s, TaskState::Failed | TaskState::Rejected)
                && t.slot > 0
                && t.status.timestamp.is_some_and(|at| at >= since)
            {
                state
                    .failures
                    .entry((t.service_id.as_str(), t.spec_version))
                    .or_insert_with(|| vec![0; n])[j] += 1;
            }
        }
        state
    }

    /// Active tasks of the service on the node.
    fn service_tasks(&self, service_id: &str, j: usize) -> u32 {
        self.per_service.get(service_id).map_or(0, |c| c[j])
    }

    /// Confirms a task on its preset node (SwarmKit's `taskFitNode`) and returns the
    /// node's index; None when the node cannot take it or is gone.
    fn confirm_preset(&mut self, t: &'a Task, req: &Requirements) -> Option<usize> {
        let j = *self.by_id.get(t.node_id.as_str())?;
        let static_fail = req.static_fail(self.nodes[j].node);
        let count = self.service_tasks(&t.service_id, j);
        if first_failure(&self.nodes[j], req, static_fail, count).is_some() {
            return None;
        }
        let n = self.nodes.len();
        self.per_service
            .entry(t.service_id.as_str())
            .or_insert_with(|| vec![0; n])[j] += 1;
        place(&mut self.nodes[j], req);
        tracing::trace!(task = %t.id, node = %t.node_id, "confirmed preset node");
        Some(j)
    }

    /// Why the preset node cannot take the task (SwarmKit puts this in the message).
    fn explain_preset(&self, t: &Task, req: &Requirements) -> Option<String> {
        let j = *self.by_id.get(t.node_id.as_str())?;
        let static_fail = req.static_fail(self.nodes[j].node);
        let count = self.service_tasks(&t.service_id, j);
        first_failure(&self.nodes[j], req, static_fail, count).map(|f| f.explain(1))
    }

    /// The `status.err` for a task of the group no node can take.
    fn explain_group(&self, req: &Requirements) -> String {
        let mut failures = [0usize; 5];
        for (j, slot) in self.nodes.iter().enumerate() {
            let count = self.service_tasks(&req.service_id, j);
            if let Some(f) = first_failure(slot, req, req.static_fail(slot.node), count) {
                failures[f as usize] += 1;
            }
        }
        let why = explain(&failures);
        if why.is_empty() {
            NO_SUITABLE_NODE.to_owned()
        } else {
            format!("{NO_SUITABLE_NODE} ({why})")
        }
    }

    /// Places the tasks of one group one by one, best node first.
    fn schedule_group(
        &mut self,
        group: &[&'a Task],
        req: &Requirements,
        req_index: usize,
        out: &mut Vec<Decision<'a>>,
    ) {
        let n = self.nodes.len();
        let static_fail: Vec<Option<Filter>> =
            self.nodes.iter().map(|s| req.static_fail(s.node)).collect();
        let recent: Vec<u32> = match self
            .failures
            .get(&(req.service_id.as_str(), req.spec_version))
        {
            // Only decisive once a node has reached the limit.
            Some(f) => f
                .iter()
                .map(|&c| if c >= MAX_FAILURES { c } else { 0 })
                .collect(),
            None => vec![0; n],
        };
        let Some(first) = group.first() else {
            return;
        };
        let counts = self
            .per_service
            .entry(first.service_id.as_str())
            .or_insert_with(|| vec![0; n]);
        let mut levels = spread_levels(&self.nodes, &req.placement, counts);

        // Once no node can take a task of the group, none can take the next one either
        // (placing nothing changes nothing).
        let mut full = false;
        for &t in group {
            let best = if full {
                None
            } else {
                let mut best: Option<usize> = None;
                for j in 0..n {
                    if first_failure(&self.nodes[j], req, static_fail[j], counts[j]).is_some() {
                        continue;
                    }
                    let better = match best {
                        None => true,
                        Some(b) => {
                            let key = |i: usize| (recent[i], counts[i], self.nodes[i].active);
                            match levels
                                .iter()
                                .map(|l| l.count(j).cmp(&l.count(b)))
                                .find(|o| o.is_ne())
                            {
                                Some(o) => o.is_lt(),
                                // Ties keep the earlier node: the lower ID.
                                None => key(j) < key(b),
                            }
                        }
                    };
                    if better {
                        best = Some(j);
                    }
                }
                best
            };
            match best {
                Some(j) => {
                    counts[j] += 1;
                    for l in &mut levels {
                        l.add(j);
                    }
                    place(&mut self.nodes[j], req);
                    tracing::trace!(task = %t.id, node = %self.nodes[j].node.id, "assigned task");
                    out.push(Decision::Placed {
                        task: t,
                        node: j,
                        message: ASSIGNED_MESSAGE,
                    });
                }
                None => {
                    full = true;
                    out.push(Decision::Unplaced {
                        task: t,
                        req: req_index,
                    });
                }
            }
        }
    }
}

/// The first filter the node fails for a task, None when the task can go there.
fn first_failure(
    slot: &NodeSlot,
    req: &Requirements,
    static_fail: Option<Filter>,
    service_tasks: u32,
) -> Option<Filter> {
    if !slot.available {
        return Some(Filter::Ready);
    }
    let r = &req.reservations;
    if (r.nano_cpus != 0 || r.memory_bytes != 0)
        && (r.nano_cpus > slot.free.nano_cpus || r.memory_bytes > slot.free.memory_bytes)
    {
        return Some(Filter::Resources);
    }
    if static_fail.is_some() {
        return static_fail;
    }
    let max = req.placement.max_replicas;
    if max > 0 && u64::from(service_tasks) >= max {
        return Some(Filter::MaxReplicas);
    }
    None
}

/// Accounts a task placed on the node.
fn place(slot: &mut NodeSlot, req: &Requirements) {
    slot.active += 1;
    slot.free.nano_cpus = slot
        .free
        .nano_cpus
        .saturating_sub(req.reservations.nano_cpus);
    slot.free.memory_bytes = slot
        .free
        .memory_bytes
        .saturating_sub(req.reservations.memory_bytes);
}

/// The task, assigned to the node.
fn assigned(t: &Task, node_id: &str, message: &str, now: DateTime<Utc>) -> Task {
    let mut t = t.clone();
    t.node_id = node_id.to_owned();
    t.status.state = TaskState::Assigned;
    t.status.message = message.to_owned();
    t.status.err.clear();
    t.status.timestamp = Some(now);
    t
}

/// What the filters look at in a task.
struct Requirements {
    service_id: String,
    spec_version: u64,
    placement: Placement,
    /// None when a constraint does not parse (the API refuses those; a task that has one
    /// anyway matches no node).
    constraints: Option<Vec<Constraint>>,
    reservations: Resources,
}

impl Requirements {
    fn of(t: &Task) -> Self {
        let placement = t.spec.placement();
        let constraints = match constraint::parse_all(&placement.constraints) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(task = %t.id, error = %e, "task has an invalid constraint");
                None
            }
        };
        Requirements {
            service_id: t.service_id.clone(),
            spec_version: t.spec_version,
            placement,
            constraints,
            reservations: t.spec.reservations(),
        }
    }

    /// The constraint and platform filters, which depend only on the node.
    fn static_fail(&self, node: &Node) -> Option<Filter> {
        match &self.constraints {
            Some(cs) if constraint::matches_all(cs, node) => {}
            _ => return Some(Filter::Constraints),
        }
        if !constraint::platform_matches(node, &self.placement.platforms) {
            return Some(Filter::Platform);
        }
        None
    }
}

/// One level of the spread tree: which branch each node is in (branches are label-value
/// paths from the root, so `zone=a/rack=1` differs from `zone=b/rack=1`), and the active
/// tasks of the service in each branch (on every node, eligible or not).
struct SpreadLevel {
    branch_of: Vec<usize>,
    counts: Vec<u32>,
}

impl SpreadLevel {
    fn count(&self, node: usize) -> u32 {
        self.counts[self.branch_of[node]]
    }

    fn add(&mut self, node: usize) {
        self.counts[self.branch_of[node]] += 1;
    }
}

/// The spread tree of a placement's preferences over the nodes. Descriptors other than
/// `node.labels.X` / `engine.labels.X` are ignored, as SwarmKit does.
fn spread_levels(nodes: &[NodeSlot], placement: &Placement, counts: &[u32]) -> Vec<SpreadLevel> {
    let labels: Vec<(bool, &str)> = placement
        .preferences
        .iter()
        .filter_map(|p| {
            let d = p.spread.spread_descriptor.as_str();
            constraint::label_name(d, "node.labels.")
                .map(|l| (true, l))
                .or_else(|| constraint::label_name(d, "engine.labels.").map(|l| (false, l)))
        })
        .collect();
    if labels.is_empty() {
        return Vec::new();
    }
    // Each node's path of label values; a missing label is "" (its own branch).
    let paths: Vec<Vec<&str>> = nodes
        .iter()
        .map(|s| {
            labels
                .iter()
                .map(|&(node_label, name)| {
                    let map = if node_label {
                        &s.node.spec.labels
                    } else {
                        &s.node.description.engine.labels
                    };
                    map.get(name).map_or("", String::as_str)
                })
                .collect()
        })
        .collect();
    (0..labels.len())
        .map(|depth| {
            let mut ids: HashMap<&[&str], usize> = HashMap::new();
            let branch_of: Vec<usize> = paths
                .iter()
                .map(|p| {
                    let next = ids.len();
                    *ids.entry(&p[..=depth]).or_insert(next)
                })
                .collect();
            let mut branch_counts = vec![0u32; ids.len()];
            for (j, &b) in branch_of.iter().enumerate() {
                branch_counts[b] += counts[j];
            }
            SpreadLevel {
                branch_of,
                counts: branch_counts,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use shoal_store::model::{
        NodeDescription, NodeSpec, NodeStatus, PlacementPreference, Platform, PlatformSpec,
        Reservation, ResourceRequirements, Role, SpreadOver, TaskStatus,
    };

    use super::*;

    const GIB: i64 = 1 << 30;
    const CPU: i64 = 1_000_000_000;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    /// A ready, active, accepted worker with 4 CPUs and 8 GiB.
    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            spec: NodeSpec {
                membership: Membership::Accepted,
                availability: Availability::Active,
                ..Default::default()
            },
            description: NodeDescription {
                hostname: format!("host-{id}"),
                platform: Platform {
                    architecture: "x86_64".into(),
                    os: "linux".into(),
                },
                resources: Resources {
                    nano_cpus: 4 * CPU,
                    memory_bytes: 8 * GIB,
                },
                ..Default::default()
            },
            status: NodeStatus {
                state: NodeState::Ready,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn labelled(id: &str, labels: &[(&str, &str)]) -> Node {
        let mut n = node(id);
        n.spec.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>();
        n
    }

    /// A pending, unassigned task of a replicated service.
    fn task(service: &str, slot: u64) -> Task {
        Task {
            id: format!("{service}-t{slot}"),
            service_id: service.into(),
            service_name: service.into(),
            spec_version: 1,
            slot,
            desired_state: TaskState::Running,
            status: TaskStatus {
                state: TaskState::Pending,
                message: "pending task scheduling".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn tasks(service: &str, n: u64) -> Vec<Task> {
        (1..=n).map(|s| task(service, s)).collect()
    }

    /// A task of the service already running on the node.
    fn running(service: &str, slot: u64, node: &str) -> Task {
        let mut t = task(service, slot);
        t.id = format!("{service}-run{slot}");
        t.node_id = node.into();
        t.status.state = TaskState::Running;
        t
    }

    fn with_placement(mut ts: Vec<Task>, p: Placement) -> Vec<Task> {
        for t in &mut ts {
            t.spec.placement = Some(p.clone());
        }
        ts
    }

    fn with_reservation(mut ts: Vec<Task>, nano_cpus: i64, memory_bytes: i64) -> Vec<Task> {
        for t in &mut ts {
            t.spec.resources = Some(ResourceRequirements {
                limits: None,
                reservations: Some(Reservation {
                    nano_cpus,
                    memory_bytes,
                }),
            });
        }
        ts
    }

    fn constraints(cs: &[&str]) -> Placement {
        Placement {
            constraints: cs.iter().map(|c| (*c).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn spread(labels: &[&str]) -> Placement {
        Placement {
            preferences: labels
                .iter()
                .map(|l| PlacementPreference {
                    spread: SpreadOver {
                        spread_descriptor: (*l).to_owned(),
                    },
                })
                .collect(),
            ..Default::default()
        }
    }

    fn view(nodes: Vec<Node>, tasks: Vec<Task>) -> View {
        View {
            nodes,
            tasks,
            now: now(),
            ..Default::default()
        }
    }

    /// (task id, node id) of the tasks placed.
    fn placements(out: &[Task]) -> Vec<(String, String)> {
        out.iter()
            .filter(|t| t.status.state == TaskState::Assigned)
            .map(|t| (t.id.clone(), t.node_id.clone()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(t, n)| ((*t).to_owned(), (*n).to_owned()))
            .collect()
    }

    /// (task id, err) of the tasks left pending.
    fn errors(out: &[Task]) -> Vec<(String, String)> {
        out.iter()
            .filter(|t| t.status.state == TaskState::Pending)
            .map(|t| (t.id.clone(), t.status.err.clone()))
            .collect()
    }

    fn apply(view: &mut View, changed: Vec<Task>) {
        for c in changed {
            let slot = view.tasks.iter_mut().find(|t| t.id == c.id).unwrap();
            *slot = c;
        }
    }

    /// Per node, how many tasks of the output went there.
    fn per_node(out: &[Task]) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for t in out.iter().filter(|t| t.status.state == TaskState::Assigned) {
            *m.entry(t.node_id.clone()).or_default() += 1;
        }
        m
    }

    #[test]
    fn spreads_six_replicas_over_three_nodes() {
        let v = view(vec![node("n3"), node("n1"), node("n2")], tasks("web", 6));
        let out = schedule(&v);
        assert_eq!(
            placements(&out),
            pairs(&[
                ("web-t1", "n1"),
                ("web-t2", "n2"),
                ("web-t3", "n3"),
                ("web-t4", "n1"),
                ("web-t5", "n2"),
                ("web-t6", "n3"),
            ])
        );
        for t in &out {
            assert_eq!(t.status.state, TaskState::Assigned);
            assert_eq!(t.status.message, "scheduler assigned task to node");
            assert_eq!(t.status.err, "");
            assert_eq!(t.status.timestamp, Some(now()));
            assert_eq!(t.desired_state, TaskState::Running);
        }
    }

    #[test]
    fn assigned_task_loses_its_old_error() {
        let mut t = task("web", 1);
        t.status.err = "no suitable node (1 node not available for new tasks)".into();
        let out = schedule(&view(vec![node("n1")], vec![t]));
        assert_eq!(placements(&out), pairs(&[("web-t1", "n1")]));
        assert_eq!(out[0].status.err, "");
    }

    #[test]
    fn fewest_tasks_of_the_service_then_fewest_in_total() {
        let mut ts = vec![
            running("web", 1, "n1"),
            running("web", 2, "n1"),
            running("db", 1, "n2"),
            running("db", 2, "n2"),
            running("db", 3, "n2"),
        ];
        ts.extend(tasks("web", 5).into_iter().skip(2));
        let out = schedule(&view(vec![node("n1"), node("n2"), node("n3")], ts));
        // n2 and n3 have no web task; n3 has fewer tasks in total, so it comes first.
        assert_eq!(
            placements(&out),
            pairs(&[("web-t3", "n3"), ("web-t4", "n2"), ("web-t5", "n3")])
        );
    }

    #[test]
    fn only_active_tasks_count() {
        let mut ts = Vec::new();
        // On n1: a web task being shut down, one that failed, one that completed: none
        // counts, so n1 is as empty as n2 and wins on its ID.
        let mut stopping = running("web", 1, "n1");
        stopping.desired_state = TaskState::Shutdown;
        ts.push(stopping);
        let mut failed = running("web", 2, "n1");
        failed.status.state = TaskState::Failed;
        ts.push(failed);
        let mut done = running("web", 3, "n1");
        done.status.state = TaskState::Complete;
        ts.push(done);
        ts.push(task("web", 4));
        let out = schedule(&view(vec![node("n2"), node("n1")], ts));
        assert_eq!(placements(&out), pairs(&[("web-t4", "n1")]));
    }

    #[test]
    fn constraints_select_nodes() {
        let mut m = labelled("m1", &[("zone", "a")]);
        m.role = Role::Manager;
        let nodes = vec![
            m,
            labelled("w1", &[("zone", "b"), ("disk", "ssd")]),
            labelled("w2", &[("zone", "a")]),
            node("w3"),
        ];
        let case = |cs: &[&str], n: u64| {
            let v = view(
                nodes.clone(),
                with_placement(tasks("s", n), constraints(cs)),
            );
            per_node(&schedule(&v))
        };
        let counts = |list: &[(&str, usize)]| {
            list.iter()
                .map(|(n, c)| ((*n).to_owned(), *c))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(case(&["node.role==manager"], 3), counts(&[("m1", 3)]));
        assert_eq!(
            case(&["node.role!=manager"], 3),
            counts(&[("w1", 1), ("w2", 1), ("w3", 1)])
        );
        assert_eq!(
            case(&["node.labels.zone==a"], 4),
            counts(&[("m1", 2), ("w2", 2)])
        );
        assert_eq!(
            case(&["node.labels.zone==A", "node.role==worker"], 2),
            counts(&[("w2", 2)])
        );
        // A missing label: `==` fails, `!=` matches.
        assert_eq!(case(&["node.labels.disk==ssd"], 2), counts(&[("w1", 2)]));
        assert_eq!(
            case(&["node.labels.disk!=ssd"], 3),
            counts(&[("m1", 1), ("w2", 1), ("w3", 1)])
        );
        assert_eq!(case(&["node.hostname==host-w3"], 2), counts(&[("w3", 2)]));
        assert_eq!(
            case(&["node.id!=m1", "node.id!=w1", "node.id!=w2"], 1),
            counts(&[("w3", 1)])
        );
        assert_eq!(case(&["engine.labels.x==y"], 1), counts(&[]));
    }

    #[test]
    fn unavailable_nodes_are_skipped() {
        let mut drained = node("n1");
        drained.spec.availability = Availability::Drain;
        let mut paused = node("n2");
        paused.spec.availability = Availability::Pause;
        let mut down = node("n3");
        down.status.state = NodeState::Down;
        let mut pending = node("n4");
        pending.spec.membership = Membership::Pending;
        let mut disconnected = node("n5");
        disconnected.status.state = NodeState::Disconnected;
        let unavailable = vec![drained, paused, down, pending, disconnected];

        let mut nodes = unavailable.clone();
        nodes.push(node("n6"));
        let out = schedule(&view(nodes, tasks("web", 3)));
        assert_eq!(
            placements(&out),
            pairs(&[("web-t1", "n6"), ("web-t2", "n6"), ("web-t3", "n6")])
        );

        let out = schedule(&view(unavailable, tasks("web", 2)));
        let err = "no suitable node (5 nodes not available for new tasks)";
        assert_eq!(errors(&out), pairs(&[("web-t1", err), ("web-t2", err)]));
        assert!(out.iter().all(|t| t.node_id.is_empty()
            && t.status.timestamp == Some(now())
            && t.status.message == "pending task scheduling"));
    }

    #[test]
    fn reservations_exhaust_a_node() {
        let mut small = node("n1");
        small.description.resources = Resources {
            nano_cpus: 2 * CPU,
            memory_bytes: GIB,
        };
        let ts = with_reservation(tasks("web", 3), CPU, 256 << 20);
        let out = schedule(&view(vec![small.clone()], ts));
        assert_eq!(
            placements(&out),
            pairs(&[("web-t1", "n1"), ("web-t2", "n1")])
        );
        assert_eq!(
            errors(&out),
            pairs(&[(
                "web-t3",
                "no suitable node (insufficient resources on 1 node)"
            )])
        );

        // Memory counts too, and a task being stopped still holds its reservation until it
        // has stopped.
        let mut ts = with_reservation(vec![running("db", 1, "n1")], 0, 768 << 20);
        ts[0].desired_state = TaskState::Shutdown;
        ts.extend(with_reservation(tasks("web", 1), 0, 512 << 20));
        let out = schedule(&view(vec![small.clone()], ts.clone()));
        assert_eq!(
            errors(&out),
            pairs(&[(
                "web-t1",
                "no suitable node (insufficient resources on 1 node)"
            )])
        );
        ts[0].status.state = TaskState::Shutdown;
        let out = schedule(&view(vec![small], ts));
        assert_eq!(placements(&out), pairs(&[("web-t1", "n1")]));
    }

    #[test]
    fn reservations_move_tasks_to_nodes_with_room() {
        let mut n1 = node("n1");
        n1.description.resources.nano_cpus = CPU;
        let mut ts = with_reservation(vec![running("db", 1, "n1")], CPU, 0);
        ts.extend(with_reservation(tasks("web", 2), CPU, 0));
        // n1 is full: both go to n2 even though n1 has no web task.
        let out = schedule(&view(vec![n1, node("n2")], ts));
        assert_eq!(
            placements(&out),
            pairs(&[("web-t1", "n2"), ("web-t2", "n2")])
        );
    }

    #[test]
    fn tasks_without_reservations_ignore_full_nodes() {
        let mut n1 = node("n1");
        n1.description.resources = Resources::default();
        let out = schedule(&view(vec![n1], tasks("web", 1)));
        assert_eq!(placements(&out), pairs(&[("web-t1", "n1")]));
    }

    #[test]
    fn max_replicas_per_node() {
        let p = Placement {
            max_replicas: 1,
            ..Default::default()
        };
        let out = schedule(&view(
            vec![node("n1"), node("n2")],
            with_placement(tasks("web", 3), p.clone()),
        ));
        assert_eq!(
            placements(&out),
            pairs(&[("web-t1", "n1"), ("web-t2", "n2")])
        );
        assert_eq!(
            errors(&out),
            pairs(&[(
                "web-t3",
                "no suitable node (max replicas per node limit exceed)"
            )])
        );

        // Counted with tasks already running; other services do not count.
        let mut ts = with_placement(vec![running("web", 1, "n1")], p.clone());
        ts.push(running("db", 1, "n2"));
        ts.extend(with_placement(tasks("web", 3).split_off(1), p));
        let out = schedule(&view(vec![node("n1"), node("n2")], ts));
        assert_eq!(placements(&out), pairs(&[("web-t2", "n2")]));
        assert_eq!(
            errors(&out),
            pairs(&[(
                "web-t3",
                "no suitable node (max replicas per node limit exceed)"
            )])
        );
    }

    #[test]
    fn spread_over_uneven_zones() {
        let nodes = vec![
            labelled("n1", &[("zone", "a")]),
            labelled("n2", &[("zone", "a")]),
            labelled("n3", &[("zone", "b")]),
        ];
        let out = schedule(&view(
            nodes.clone(),
            with_placement(tasks("web", 4), spread(&["node.labels.zone"])),
        ));
        assert_eq!(
            placements(&out),
            pairs(&[
                ("web-t1", "n1"),
                ("web-t2", "n3"),
                ("web-t3", "n2"),
                ("web-t4", "n3"),
            ])
        );

        // Nodes without the label form their own group.
        let mut nodes = nodes;
        nodes.push(node("n4"));
        let out = schedule(&view(
            nodes.clone(),
            with_placement(tasks("web", 6), spread(&["node.labels.zone"])),
        ));
        let got = per_node(&out);
        assert_eq!(got["n4"], 2);
        assert_eq!(got["n3"], 2);
        assert_eq!(got["n1"] + got["n2"], 2);

        // Tasks already running count per zone, on every node of the zone.
        let mut ts = with_placement(
            vec![running("web", 1, "n1"), running("web", 2, "n2")],
            spread(&["node.labels.zone"]),
        );
        ts.extend(with_placement(
            tasks("web", 4).split_off(2),
            spread(&["node.labels.zone"]),
        ));
        let out = schedule(&view(nodes, ts));
        assert_eq!(
            placements(&out),
            pairs(&[("web-t3", "n3"), ("web-t4", "n4")])
        );
    }

    #[test]
    fn spread_skips_zones_without_room_and_nests() {
        let mut b = labelled("n3", &[("zone", "b"), ("rack", "1")]);
        b.spec.availability = Availability::Drain;
        let nodes = vec![
            labelled("n1", &[("zone", "a"), ("rack", "1")]),
            labelled("n2", &[("zone", "a"), ("rack", "2")]),
            b,
            labelled("n4", &[("zone", "c"), ("rack", "1")]),
            labelled("n5", &[("zone", "c"), ("rack", "1")]),
        ];
        let p = spread(&["node.labels.zone", "node.labels.rack"]);
        let out = schedule(&view(nodes, with_placement(tasks("web", 4), p)));
        // Zone b has no available node: a and c share the tasks; within a, the racks
        // share; within c (one rack), the nodes.
        assert_eq!(
            placements(&out),
            pairs(&[
                ("web-t1", "n1"),
                ("web-t2", "n4"),
                ("web-t3", "n2"),
                ("web-t4", "n5"),
            ])
        );
    }

    #[test]
    fn spread_over_engine_labels_and_unknown_descriptors() {
        let mut n1 = node("n1");
        n1.description.engine.labels.insert("dc".into(), "x".into());
        let mut n2 = node("n2");
        n2.description.engine.labels.insert("dc".into(), "x".into());
        let mut n3 = node("n3");
        n3.description.engine.labels.insert("dc".into(), "y".into());
        let nodes = vec![n1, n2, n3];
        let out = schedule(&view(
            nodes.clone(),
            with_placement(tasks("web", 2), spread(&["engine.labels.dc"])),
        ));
        assert_eq!(
            placements(&out),
            pairs(&[("web-t1", "n1"), ("web-t2", "n3")])
        );
        // A descriptor Swarm cannot spread over is ignored.
        let out = schedule(&view(
            nodes,
            with_placement(tasks("web", 2), spread(&["node.hostname"])),
        ));
        assert_eq!(
            placements(&out),
            pairs(&[("web-t1", "n1"), ("web-t2", "n2")])
        );
    }

    fn global(service: &str, node: &str) -> Task {
        let mut t = task(service, 0);
        t.id = format!("{service}-{node}");
        t.node_id = node.into();
        t
    }

    #[test]
    fn preset_node_accepted_or_refused() {
        let mut drained = node("n2");
        drained.spec.availability = Availability::Drain;
        let mut full = node("n3");
        full.description.resources.memory_bytes = GIB;
        let ts = with_reservation(
            vec![
                global("agent", "n1"),
                global("agent", "n2"),
                global("agent", "n3"),
                global("agent", "gone"),
            ],
            0,
            2 * GIB,
        );
        let mut v = view(vec![node("n1"), drained, full], ts);
        let out = schedule(&v);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].id, "agent-n1");
        assert_eq!(out[0].node_id, "n1");
        assert_eq!(out[0].status.state, TaskState::Assigned);
        assert_eq!(
            out[0].status.message,
            "scheduler confirmed task can run on preassigned node"
        );
        assert_eq!(out[0].status.timestamp, Some(now()));
        assert_eq!(
            (
                out[1].id.as_str(),
                out[1].status.state,
                out[1].status.message.as_str()
            ),
            (
                "agent-n2",
                TaskState::Pending,
                "1 node not available for new tasks"
            )
        );
        assert_eq!(
            (
                out[2].id.as_str(),
                out[2].status.state,
                out[2].status.message.as_str()
            ),
            (
                "agent-n3",
                TaskState::Pending,
                "insufficient resources on 1 node"
            )
        );
        assert_eq!(out[1].node_id, "n2");
        assert_eq!(out[2].status.timestamp, Some(now()));

        // Nothing changed: nothing to write; the task for a node that is gone is left to
        // the orchestrator.
        apply(&mut v, out);
        assert_eq!(schedule(&v), vec![]);

        // A preset task takes its node's resources before unassigned tasks are placed.
        let mut v = view(
            vec![node("n1")],
            with_reservation(vec![global("agent", "n1")], 3 * CPU, 0),
        );
        v.tasks
            .extend(with_reservation(tasks("web", 2), 2 * CPU, 0));
        let out = schedule(&v);
        assert_eq!(placements(&out), pairs(&[("agent-n1", "n1")]));
        assert_eq!(
            errors(&out),
            pairs(&[
                (
                    "web-t1",
                    "no suitable node (insufficient resources on 1 node)"
                ),
                (
                    "web-t2",
                    "no suitable node (insufficient resources on 1 node)"
                ),
            ])
        );
    }

    #[test]
    fn preset_node_checks_constraints_and_max_replicas() {
        let p = Placement {
            constraints: vec!["node.role==manager".into()],
            max_replicas: 1,
            ..Default::default()
        };
        let mut m = node("m1");
        m.role = Role::Manager;
        let mut ts = with_placement(vec![global("agent", "m1"), global("agent", "n1")], p);
        ts.push(ts[0].clone());
        ts[2].id = "agent-m1-second".into();
        let out = schedule(&view(vec![m, node("n1")], ts));
        let got: Vec<(&str, TaskState, &str)> = out
            .iter()
            .map(|t| (t.id.as_str(), t.status.state, t.status.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "agent-m1",
                    TaskState::Assigned,
                    "scheduler confirmed task can run on preassigned node"
                ),
                (
                    "agent-m1-second",
                    TaskState::Pending,
                    "max replicas per node limit exceed"
                ),
                (
                    "agent-n1",
                    TaskState::Pending,
                    "scheduling constraints not satisfied on 1 node"
                ),
            ]
        );
    }

    #[test]
    fn explanations_are_dockers() {
        let mut drained = node("n1");
        drained.spec.availability = Availability::Drain;
        let nodes = vec![drained, node("n2"), node("n3")];
        let out = schedule(&view(
            nodes.clone(),
            with_placement(tasks("web", 1), constraints(&["node.role==manager"])),
        ));
        assert_eq!(
            errors(&out),
            pairs(&[(
                "web-t1",
                "no suitable node (scheduling constraints not satisfied on 2 nodes; \
                 1 node not available for new tasks)"
            )])
        );

        // Ties keep the pipeline's order.
        let mut nodes2 = nodes.clone();
        nodes2.truncate(2);
        let out = schedule(&view(
            nodes2,
            with_placement(tasks("web", 1), constraints(&["node.role==manager"])),
        ));
        assert_eq!(
            errors(&out),
            pairs(&[(
                "web-t1",
                "no suitable node (1 node not available for new tasks; \
                 scheduling constraints not satisfied on 1 node)"
            )])
        );

        let p = Placement {
            platforms: vec![PlatformSpec {
                architecture: "arm64".into(),
                os: "linux".into(),
            }],
            ..Default::default()
        };
        let out = schedule(&view(nodes.clone(), with_placement(tasks("web", 1), p)));
        assert_eq!(
            errors(&out),
            pairs(&[(
                "web-t1",
                "no suitable node (unsupported platform on 2 nodes; \
                 1 node not available for new tasks)"
            )])
        );

        let out = schedule(&view(
            nodes.clone(),
            with_reservation(tasks("web", 1), 0, 64 * GIB),
        ));
        assert_eq!(
            errors(&out),
            pairs(&[(
                "web-t1",
                "no suitable node (insufficient resources on 2 nodes; \
                 1 node not available for new tasks)"
            )])
        );

        // No nodes at all.
        let out = schedule(&view(vec![], tasks("web", 1)));
        assert_eq!(errors(&out), pairs(&[("web-t1", "no suitable node")]));

        // A constraint that does not parse matches no node.
        let out = schedule(&view(
            nodes,
            with_placement(tasks("web", 1), constraints(&["node.role=manager"])),
        ));
        assert_eq!(
            errors(&out),
            pairs(&[(
                "web-t1",
                "no suitable node (scheduling constraints not satisfied on 2 nodes; \
                 1 node not available for new tasks)"
            )])
        );
    }

    #[test]
    fn explanation_follows_the_cluster() {
        // Placed tasks change what the next ones see: the first fills n1, the second is
        // explained with the resources, and once n2 joins it goes there.
        let mut n1 = node("n1");
        n1.description.resources.nano_cpus = CPU;
        let ts = with_reservation(tasks("web", 2), CPU, 0);
        let mut v = view(vec![n1], ts);
        let out = schedule(&v);
        assert_eq!(placements(&out), pairs(&[("web-t1", "n1")]));
        assert_eq!(
            errors(&out),
            pairs(&[(
                "web-t2",
                "no suitable node (insufficient resources on 1 node)"
            )])
        );
        apply(&mut v, out);
        assert_eq!(schedule(&v), vec![]);

        let mut n2 = node("n2");
        n2.spec.availability = Availability::Pause;
        v.nodes.push(n2);
        let out = schedule(&v);
        assert_eq!(
            errors(&out),
            pairs(&[(
                "web-t2",
                "no suitable node (1 node not available for new tasks; \
                 insufficient resources on 1 node)"
            )])
        );
        apply(&mut v, out);
        v.nodes[1].spec.availability = Availability::Active;
        let out = schedule(&v);
        assert_eq!(placements(&out), pairs(&[("web-t2", "n2")]));
        apply(&mut v, out);
        assert_eq!(schedule(&v), vec![]);
    }

    #[test]
    fn explanations_are_made_after_every_placement() {
        // When web-t2 is judged, n1 only fails on max replicas; worker-t1 is placed after
        // it (services go in ID order) and takes the memory web-t2 would need. The
        // explanation written is the one that holds at the end, so the next call finds
        // nothing to change.
        let mut n1 = node("n1");
        n1.description.resources.memory_bytes = 4 * GIB;
        let mut n2 = node("n2");
        n2.status.state = NodeState::Down;
        let web = with_placement(
            with_reservation(tasks("web", 2), 0, 2 * GIB),
            Placement {
                max_replicas: 1,
                ..Default::default()
            },
        );
        let mut ts = with_reservation(tasks("worker", 1), 0, GIB / 2);
        ts.extend(web);
        let mut v = view(vec![n1, n2], ts);
        let out = schedule(&v);
        assert_eq!(
            placements(&out),
            pairs(&[("web-t1", "n1"), ("worker-t1", "n1")])
        );
        assert_eq!(
            errors(&out),
            pairs(&[(
                "web-t2",
                "no suitable node (1 node not available for new tasks; \
                 insufficient resources on 1 node)"
            )])
        );
        apply(&mut v, out);
        assert_eq!(schedule(&v), vec![]);
    }

    #[test]
    fn only_pending_tasks_are_candidates() {
        let mut new = task("web", 1);
        new.status.state = TaskState::New;
        let mut stopping = task("web", 2);
        stopping.desired_state = TaskState::Shutdown;
        let assigned = running("web", 3, "n1");
        let out = schedule(&view(vec![node("n1")], vec![new, stopping, assigned]));
        assert_eq!(out, vec![]);
    }

    #[test]
    fn nodes_with_recent_failures_are_avoided() {
        let failure = |i: u64, ago_secs: i64| {
            let mut t = running("web", 10 + i, "n1");
            t.id = format!("failed{i}");
            t.status.state = TaskState::Failed;
            t.status.timestamp = Some(now() - TimeDelta::seconds(ago_secs));
            t
        };
        // n2 already runs a web task, so n1 is preferred...
        let base = vec![running("web", 1, "n2"), task("web", 2)];
        let mut ts = base.clone();
        ts.extend((0..4).map(|i| failure(i, 10)));
        let out = schedule(&view(vec![node("n1"), node("n2")], ts));
        assert_eq!(placements(&out), pairs(&[("web-t2", "n1")]));
        // ...until the service failed 5 times on n1 within 5 minutes...
        let mut ts = base.clone();
        ts.extend((0..5).map(|i| failure(i, 10)));
        let out = schedule(&view(vec![node("n1"), node("n2")], ts));
        assert_eq!(placements(&out), pairs(&[("web-t2", "n2")]));
        // ...not if the failures are older, or of another version of the service.
        let mut ts = base.clone();
        ts.extend((0..5).map(|i| failure(i, 301)));
        let out = schedule(&view(vec![node("n1"), node("n2")], ts));
        assert_eq!(placements(&out), pairs(&[("web-t2", "n1")]));
        let mut ts = base;
        ts.extend((0..5).map(|i| {
            let mut f = failure(i, 10);
            f.spec_version = 0;
            f
        }));
        let out = schedule(&view(vec![node("n1"), node("n2")], ts));
        assert_eq!(placements(&out), pairs(&[("web-t2", "n1")]));
    }

    #[test]
    fn unchanged_cluster_gives_no_writes() {
        let mut v = view(
            vec![node("n1"), node("n2")],
            with_placement(
                tasks("web", 5),
                Placement {
                    max_replicas: 2,
                    ..Default::default()
                },
            ),
        );
        let out = schedule(&v);
        assert_eq!(out.len(), 5);
        assert_eq!(placements(&out).len(), 4);
        apply(&mut v, out);
        assert_eq!(schedule(&v), vec![]);
        assert_eq!(schedule(&view(vec![], vec![])), vec![]);
    }

    #[test]
    fn input_order_does_not_matter() {
        let nodes = vec![
            labelled("n1", &[("zone", "a")]),
            labelled("n2", &[("zone", "b")]),
            labelled("n3", &[("zone", "a")]),
            node("n4"),
        ];
        let mut ts = with_placement(tasks("web", 7), spread(&["node.labels.zone"]));
        ts.extend(tasks("db", 5));
        ts.extend(with_reservation(tasks("big", 3), 3 * CPU, 0));
        let v = view(nodes.clone(), ts.clone());
        let out = schedule(&v);
        let mut rev_nodes = nodes;
        rev_nodes.reverse();
        ts.reverse();
        assert_eq!(schedule(&view(rev_nodes, ts)), out);
        assert_eq!(schedule(&v), out);
    }

    #[test]
    fn thousand_tasks_on_hundred_nodes_is_fast() {
        let nodes: Vec<Node> = (0..100)
            .map(|i| {
                let mut n = labelled(
                    &format!("n{i:03}"),
                    &[
                        ("zone", ["a", "b", "c"][i % 3]),
                        ("rack", ["1", "2"][i % 2]),
                    ],
                );
                if i % 10 == 0 {
                    n.role = Role::Manager;
                }
                n
            })
            .collect();
        let mut ts = Vec::new();
        for s in 0..10 {
            let name = format!("svc{s}");
            let mut batch = tasks(&name, 100);
            let p = match s % 4 {
                0 => spread(&["node.labels.zone", "node.labels.rack"]),
                1 => constraints(&["node.role!=manager", "node.labels.zone!=c"]),
                2 => Placement {
                    max_replicas: 1,
                    ..Default::default()
                },
                _ => Placement::default(),
            };
            batch = with_placement(batch, p);
            if s % 3 == 0 {
                batch = with_reservation(batch, CPU / 10, 64 << 20);
            }
            ts.extend(batch);
        }
        let v = view(nodes, ts);
        // The best of three runs, so a busy machine does not fail the test.
        let (out, took) = (0..3)
            .map(|_| {
                let start = Instant::now();
                let out = schedule(&v);
                (out, start.elapsed())
            })
            .min_by_key(|(_, took)| *took)
            .unwrap();
        assert_eq!(placements(&out).len(), 1000);
        let per = per_node(&out);
        assert_eq!(per.len(), 100);
        // Even across nodes: 10 services × 100 tasks; constrained ones go to fewer nodes.
        assert!(per.values().all(|&c| (7..=14).contains(&c)), "{per:?}");
        assert!(
            took.as_millis() < 100,
            "scheduling 1000 tasks on 100 nodes took {took:?}"
        );
    }

    mod property {
        //! Random clusters and services thrown at the scheduler. After applying its output
        //! to the view, these must hold (checked by [`check_invariants`], which recomputes
        //! everything naively from the final tasks):
        //!
        //! 1. It only touches candidates (Pending, desired ≤ Running): each output task has
        //!    the ID of one, and differs from it only in `node_id` (unassigned ones only)
        //!    and `status`; it is either Assigned with the scheduler's message, an empty
        //!    err and `now`, or still Pending with its node unchanged.
        //! 2. A task placed in this call is on a node that, in the final state, is ready
        //!    (Ready, Active, accepted), matches the task's constraints and platforms, and
        //!    holds at most `max_replicas` active tasks of the service.
        //! 3. A node that received a task with a reservation ends with the reservations of
        //!    all tasks on it (Assigned ..= Running, any desired state) within its
        //!    resources, in both CPU and memory.
        //! 4. An unassigned candidate left Pending has `status.err` starting with
        //!    `no suitable node`, and no node is eligible for it in the final state
        //!    (placements only take room away, so this holds for the moment it was
        //!    judged too); with no nodes at all its err is exactly `no suitable node`.
        //! 5. Evenness: for a service without reservations, max replicas or preferences,
        //!    every node that received a task of it in this call ends with at most one
        //!    active task of the service more than the least loaded node eligible for it.
        //!    With a spread preference over `zone` (and no reservations or max replicas),
        //!    the same holds between zone groups (nodes without the label are one group)
        //!    among the groups that have an eligible node.
        //! 6. Determinism and idempotence: the same view gives the same output, also with
        //!    nodes and tasks in reverse order; scheduling the result again changes
        //!    nothing.
        use proptest::prelude::*;

        use super::*;

        const ZONES: [Option<&str>; 4] = [None, Some("a"), Some("b"), Some("c")];
        const CONSTRAINTS: [&str; 8] = [
            "node.role==manager",
            "node.role!=manager",
            "node.labels.zone==a",
            "node.labels.zone!=b",
            "node.labels.disk==ssd",
            "node.platform.arch==x86_64",
            "node.hostname!=host-n0",
            "engine.labels.gpu!=yes",
        ];

        fn arb_node(i: usize) -> impl Strategy<Value = Node> {
            (
                prop::sample::select(vec![
                    NodeState::Ready,
                    NodeState::Ready,
                    NodeState::Ready,
                    NodeState::Down,
                    NodeState::Disconnected,
                ]),
                prop::sample::select(vec![
                    Availability::Active,
                    Availability::Active,
                    Availability::Active,
                    Availability::Pause,
                    Availability::Drain,
                ]),
                prop::bool::weighted(0.9),
                any::<bool>(),
                0..ZONES.len(),
                any::<bool>(),
                prop::sample::select(vec![0, CPU, 2 * CPU, 4 * CPU]),
                prop::sample::select(vec![0, GIB, 4 * GIB]),
                prop::bool::weighted(0.8),
                any::<bool>(),
            )
                .prop_map(
                    move |(state, avail, accepted, manager, zone, ssd, cpus, mem, x86, gpu)| {
                        let mut n = node(&format!("n{i}"));
                        n.status.state = state;
                        n.spec.availability = avail;
                        n.spec.membership = if accepted {
                            Membership::Accepted
                        } else {
                            Membership::Pending
                        };
                        n.role = if manager { Role::Manager } else { Role::Worker };
                        if let Some(z) = ZONES[zone] {
                            n.spec.labels.insert("zone".into(), z.into());
                        }
                        if ssd {
                            n.spec.labels.insert("disk".into(), "ssd".into());
                        }
                        if gpu {
                            n.description
                                .engine
                                .labels
                                .insert("gpu".into(), "yes".into());
                        }
                        n.description.resources = Resources {
                            nano_cpus: cpus,
                            memory_bytes: mem,
                        };
                        if !x86 {
                            n.description.platform.architecture = "aarch64".into();
                        }
                        n
                    },
                )
        }

        #[derive(Clone, Debug)]
        struct ServiceGen {
            replicas: u64,
            constraint: Option<usize>,
            cpu: i64,
            mem: i64,
            max_replicas: u64,
            spread: bool,
            arm_only: bool,
            /// Per slot: 0 pending, 1 already placed (on node `placed_on % nodes`),
            /// 2 placed but being shut down, 3 failed long ago.
            slot_kinds: Vec<(u8, usize)>,
        }

        fn arb_service() -> impl Strategy<Value = ServiceGen> {
            (
                0u64..=12,
                prop::option::weighted(0.5, 0..CONSTRAINTS.len()),
                prop::sample::select(vec![0, 0, CPU / 2, CPU, 3 * CPU]),
                prop::sample::select(vec![0, 0, 512 << 20, 2 * GIB]),
                prop::sample::select(vec![0u64, 0, 1, 2, 3]),
                prop::bool::weighted(0.3),
                prop::bool::weighted(0.1),
                prop::collection::vec((0u8..4, 0usize..8), 12),
            )
                .prop_map(
                    |(
                        replicas,
                        constraint,
                        cpu,
                        mem,
                        max_replicas,
                        spread,
                        arm_only,
                        slot_kinds,
                    )| {
                        ServiceGen {
                            replicas,
                            constraint,
                            cpu,
                            mem,
                            max_replicas,
                            spread,
                            arm_only,
                            slot_kinds,
                        }
                    },
                )
        }

        fn build(
            nodes: Vec<Node>,
            services: &[ServiceGen],
            global_tasks: Option<(i64, Vec<bool>)>,
        ) -> View {
            let mut ts = Vec::new();
            for (si, s) in services.iter().enumerate() {
                let name = format!("s{si}");
                let mut p = Placement {
                    constraints: s
                        .constraint
                        .map(|c| vec![CONSTRAINTS[c].to_owned()])
                        .unwrap_or_default(),
                    max_replicas: s.max_replicas,
                    ..Default::default()
                };
                if s.spread {
                    p.preferences = spread(&["node.labels.zone"]).preferences;
                }
                if s.arm_only {
                    p.platforms = vec![PlatformSpec {
                        architecture: "arm64".into(),
                        os: "linux".into(),
                    }];
                }
                let batch =
                    with_reservation(with_placement(tasks(&name, s.replicas), p), s.cpu, s.mem);
                for (mut t, &(kind, on)) in batch.into_iter().zip(&s.slot_kinds) {
                    if !nodes.is_empty() && kind > 0 {
                        t.node_id = nodes[on % nodes.len()].id.clone();
                        t.status.state = TaskState::Running;
                        match kind {
                            2 => t.desired_state = TaskState::Shutdown,
                            3 => {
                                t.status.state = TaskState::Failed;
                                t.status.timestamp = Some(now() - TimeDelta::hours(1));
                            }
                            _ => {}
                        }
                    }
                    ts.push(t);
                }
            }
            if let Some((mem, on)) = global_tasks {
                for (n, &present) in nodes.iter().zip(&on) {
                    if present {
                        ts.extend(with_reservation(vec![global("g", &n.id)], 0, mem));
                    }
                }
            }
            view(nodes, ts)
        }

        fn arb_view() -> impl Strategy<Value = View> {
            (1usize..=8)
                .prop_flat_map(|n| {
                    let nodes: Vec<_> = (0..n).map(arb_node).collect();
                    (
                        nodes,
                        prop::collection::vec(arb_service(), 1..=4),
                        prop::option::of((
                            prop::sample::select(vec![0, GIB, 3 * GIB]),
                            prop::collection::vec(any::<bool>(), n),
                        )),
                    )
                })
                .prop_map(|(nodes, services, global)| build(nodes, &services, global))
        }

        fn on_node(t: &Task) -> bool {
            !t.node_id.is_empty()
                && (TaskState::Assigned..=TaskState::Running).contains(&t.status.state)
        }

        fn active(t: &Task) -> bool {
            on_node(t) && t.desired_state <= TaskState::Running
        }

        fn ready(n: &Node) -> bool {
            n.status.state == NodeState::Ready
                && n.spec.availability == Availability::Active
                && n.spec.membership == Membership::Accepted
        }

        /// Constraints and platforms (what does not depend on other tasks).
        fn matches(n: &Node, t: &Task) -> bool {
            let p = t.spec.placement();
            constraint::parse_all(&p.constraints).is_ok_and(|cs| cs.iter().all(|c| c.matches(n)))
                && constraint::platform_matches(n, &p.platforms)
        }

        fn service_count(tasks: &[Task], service: &str, node: &str) -> u64 {
            tasks
                .iter()
                .filter(|t| active(t) && t.service_id == service && t.node_id == node)
                .count() as u64
        }

        /// Naive eligibility of a node for a task, given every task in `tasks`.
        fn eligible(n: &Node, t: &Task, tasks: &[Task]) -> bool {
            if !ready(n) || !matches(n, t) {
                return false;
            }
            let r = t.spec.reservations();
            if r.nano_cpus != 0 || r.memory_bytes != 0 {
                let (mut cpu, mut mem) = (0, 0);
                for o in tasks.iter().filter(|o| on_node(o) && o.node_id == n.id) {
                    let or = o.spec.reservations();
                    cpu += or.nano_cpus;
                    mem += or.memory_bytes;
                }
                let res = &n.description.resources;
                if cpu + r.nano_cpus > res.nano_cpus || mem + r.memory_bytes > res.memory_bytes {
                    return false;
                }
            }
            let max = t.spec.placement().max_replicas;
            max == 0 || service_count(tasks, &t.service_id, &n.id) < max
        }

        fn check_invariants(before: &View, out: &[Task]) -> Result<(), TestCaseError> {
            let mut after = before.clone();
            for o in out {
                let orig = before.tasks.iter().find(|t| t.id == o.id);
                let Some(orig) = orig else {
                    return Err(TestCaseError::fail(format!("unknown task {}", o.id)));
                };
                // 1. Only candidates, only node and status touched.
                prop_assert_eq!(orig.status.state, TaskState::Pending);
                prop_assert!(orig.desired_state <= TaskState::Running);
                let mut same = o.clone();
                same.node_id = orig.node_id.clone();
                same.status = orig.status.clone();
                prop_assert_eq!(&same, orig);
                match o.status.state {
                    TaskState::Assigned => {
                        prop_assert!(!o.node_id.is_empty());
                        prop_assert!(orig.node_id.is_empty() || orig.node_id == o.node_id);
                        prop_assert_eq!(o.status.err.as_str(), "");
                        prop_assert_eq!(o.status.timestamp, Some(before.now));
                        let msg = if orig.node_id.is_empty() {
                            ASSIGNED_MESSAGE
                        } else {
                            PREASSIGNED_MESSAGE
                        };
                        prop_assert_eq!(o.status.message.as_str(), msg);
                    }
                    TaskState::Pending => {
                        prop_assert_eq!(&o.node_id, &orig.node_id);
                        prop_assert!(o.status != orig.status);
                    }
                    s => return Err(TestCaseError::fail(format!("state {s}"))),
                }
                *after.tasks.iter_mut().find(|t| t.id == o.id).unwrap() = o.clone();
            }
            let placed: Vec<&Task> = out
                .iter()
                .filter(|t| t.status.state == TaskState::Assigned)
                .collect();
            let node = |id: &str| after.nodes.iter().find(|n| n.id == id).unwrap();

            // 2. Placed tasks are on eligible nodes.
            for t in &placed {
                let n = node(&t.node_id);
                prop_assert!(ready(n), "{} on unavailable {}", t.id, n.id);
                prop_assert!(matches(n, t), "{} on {} against its placement", t.id, n.id);
                let max = t.spec.placement().max_replicas;
                if max > 0 {
                    let c = service_count(&after.tasks, &t.service_id, &n.id);
                    prop_assert!(c <= max, "{} tasks of {} on {}", c, t.service_id, n.id);
                }
            }
            // 3. No over-commitment where reserving tasks were placed.
            for t in &placed {
                let r = t.spec.reservations();
                if r.nano_cpus == 0 && r.memory_bytes == 0 {
                    continue;
                }
                let n = node(&t.node_id);
                let (mut cpu, mut mem) = (0, 0);
                for o in after
                    .tasks
                    .iter()
                    .filter(|o| on_node(o) && o.node_id == n.id)
                {
                    cpu += o.spec.reservations().nano_cpus;
                    mem += o.spec.reservations().memory_bytes;
                }
                prop_assert!(cpu <= n.description.resources.nano_cpus, "cpu on {}", n.id);
                prop_assert!(
                    mem <= n.description.resources.memory_bytes,
                    "mem on {}",
                    n.id
                );
            }
            // 4. Pending ones have no eligible node, and say so.
            for t in &after.tasks {
                let candidate = t.status.state == TaskState::Pending
                    && t.desired_state <= TaskState::Running
                    && t.node_id.is_empty();
                if !candidate {
                    continue;
                }
                prop_assert!(
                    t.status.err.starts_with(NO_SUITABLE_NODE),
                    "err {:?}",
                    t.status.err
                );
                if after.nodes.is_empty() {
                    prop_assert_eq!(t.status.err.as_str(), NO_SUITABLE_NODE);
                }
                for n in &after.nodes {
                    prop_assert!(
                        !eligible(n, t, &after.tasks),
                        "{} left pending ({}) but {} is eligible",
                        t.id,
                        t.status.err,
                        n.id
                    );
                }
            }
            // 5. Evenness.
            for t in &placed {
                let p = t.spec.placement();
                let r = t.spec.reservations();
                if p.max_replicas > 0 || r.nano_cpus != 0 || r.memory_bytes != 0 {
                    continue;
                }
                let candidates: Vec<&Node> = after
                    .nodes
                    .iter()
                    .filter(|n| ready(n) && matches(n, t))
                    .collect();
                if p.preferences.is_empty() {
                    let min = candidates
                        .iter()
                        .map(|n| service_count(&after.tasks, &t.service_id, &n.id))
                        .min()
                        .unwrap();
                    let mine = service_count(&after.tasks, &t.service_id, &t.node_id);
                    prop_assert!(
                        mine <= min + 1,
                        "{} on {}: {} > {} + 1",
                        t.id,
                        t.node_id,
                        mine,
                        min
                    );
                } else {
                    let zone = |n: &Node| n.spec.labels.get("zone").cloned().unwrap_or_default();
                    let zone_count = |z: &str| -> u64 {
                        after
                            .nodes
                            .iter()
                            .filter(|n| zone(n) == z)
                            .map(|n| service_count(&after.tasks, &t.service_id, &n.id))
                            .sum()
                    };
                    let min = candidates
                        .iter()
                        .map(|n| zone_count(&zone(n)))
                        .min()
                        .unwrap();
                    let mine = zone_count(&zone(node(&t.node_id)));
                    prop_assert!(
                        mine <= min + 1,
                        "{} in zone of {}: {} > {} + 1",
                        t.id,
                        t.node_id,
                        mine,
                        min
                    );
                }
            }
            // 6. Determinism and idempotence.
            let mut reversed = before.clone();
            reversed.nodes.reverse();
            reversed.tasks.reverse();
            prop_assert_eq!(&schedule(&reversed), out);
            prop_assert_eq!(&schedule(before), out);
            prop_assert_eq!(schedule(&after), vec![]);
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn scheduler_invariants(v in arb_view()) {
                let out = schedule(&v);
                check_invariants(&v, &out)?;
            }
        }
    }
}
