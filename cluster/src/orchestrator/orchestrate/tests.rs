//! Scenarios through several passes: a small simulator applies each plan to the view (as
//! the store would), and plays the scheduler and the agents by moving task states.

use chrono::{DateTime, TimeDelta, Utc};
use shoal_store::model::{
    Availability, ContainerSpec, Empty, JobStatus, Membership, Node, NodeState, ReplicatedJobMode,
    RestartPolicy, Service, ServiceMode, ServiceSpec, Task, TaskSpec, TaskState, UpdateConfig,
    UpdateState, UpdateStatus,
};

use super::orchestrate;
use crate::orchestrator::{Plan, View};

const SEC: i64 = 1_000_000_000;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

/// The store, scheduler and agents, just enough to run the orchestrator in a loop.
struct Sim {
    view: View,
    next_id: u64,
    version: u64,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            view: View {
                now: t0(),
                ..View::default()
            },
            next_id: 0,
            version: 0,
        }
    }

    fn at(&self, secs: i64) -> DateTime<Utc> {
        t0() + TimeDelta::seconds(secs)
    }

    fn advance(&mut self, secs: i64) {
        self.view.now += TimeDelta::seconds(secs);
    }

    fn add_node(&mut self, id: &str) {
        let mut n = Node {
            id: id.to_owned(),
            ..Node::default()
        };
        n.spec.membership = Membership::Accepted;
        n.status.state = NodeState::Ready;
        n.description.hostname = id.to_owned();
        n.description.platform.os = "linux".to_owned();
        n.description.platform.architecture = "x86_64".to_owned();
        self.view.nodes.push(n);
    }

    fn node_mut(&mut self, id: &str) -> &mut Node {
        self.view.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    fn add_service(&mut self, id: &str, mode: ServiceMode) {
        self.view.services.push(Service {
            id: id.to_owned(),
            spec: ServiceSpec {
                name: id.to_owned(),
                task_template: TaskSpec {
                    container_spec: ContainerSpec {
                        image: "busybox:1".to_owned(),
                        ..ContainerSpec::default()
                    },
                    ..TaskSpec::default()
                },
                mode,
                ..ServiceSpec::default()
            },
            spec_version: 1,
            ..Service::default()
        });
    }

    fn service(&self, id: &str) -> &Service {
        self.view.services.iter().find(|s| s.id == id).unwrap()
    }

    fn service_mut(&mut self, id: &str) -> &mut Service {
        self.view.services.iter_mut().find(|s| s.id == id).unwrap()
    }

    /// Changes the spec as `service update` does: the old spec becomes the previous one,
    /// the version goes up, and a rolling update starts.
    fn update_spec(&mut self, id: &str, change: impl FnOnce(&mut ServiceSpec)) {
        let now = self.view.now;
        let s = self.service_mut(id);
        s.previous_spec = Some(s.spec.clone());
        change(&mut s.spec);
        s.spec_version += 1;
        s.update_status = Some(UpdateStatus {
            state: UpdateState::Updating,
            started_at: Some(now),
            completed_at: None,
            message: "update in progress".to_owned(),
        });
    }

    fn task(&self, id: &str) -> &Task {
        self.view.tasks.iter().find(|t| t.id == id).unwrap()
    }

    fn ids(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.view.tasks.iter().map(|t| t.id.as_str()).collect();
        v.sort();
        v
    }

    /// Sets a task's observed state (as an agent reports it).
    fn set(&mut self, id: &str, state: TaskState) {
        let now = self.view.now;
        let t = self.view.tasks.iter_mut().find(|t| t.id == id).unwrap();
        t.status.state = state;
        t.status.timestamp = Some(now);
        self.version += 1;
        t.meta.version = self.version;
    }

    fn assign(&mut self, id: &str, node: &str) {
        self.view
            .tasks
            .iter_mut()
            .find(|t| t.id == id)
            .unwrap()
            .node_id = node.to_owned();
        self.set(id, TaskState::Assigned);
    }

    /// The scheduler and the agents catch up: tasks without a node get one (round robin
    /// over the nodes by slot), tasks desired to run run, tasks desired to stop stop.
    fn settle(&mut self) {
        let nodes: Vec<String> = self.view.nodes.iter().map(|n| n.id.clone()).collect();
        let work: Vec<(String, TaskState, TaskState, String, u64)> = self
            .view
            .tasks
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    t.desired_state,
                    t.status.state,
                    t.node_id.clone(),
                    t.slot,
                )
            })
            .collect();
        for (id, desired, state, node, slot) in work {
            if state.is_terminal() {
                continue;
            }
            if desired <= TaskState::Running && state < TaskState::Running {
                if node.is_empty() && !nodes.is_empty() {
                    let i = usize::try_from(slot.max(1) - 1).unwrap() % nodes.len();
                    let n = nodes[i].clone();
                    self.assign(&id, &n);
                }
                self.set(&id, TaskState::Running);
            } else if desired > TaskState::Running {
                self.set(&id, TaskState::Shutdown);
            }
        }
    }

    /// One orchestrator pass, applied; returns the plan and a one-line-per-change summary.
    fn round(&mut self) -> (Plan, Vec<String>) {
        let mut next = self.next_id;
        let mut ids = || {
            next += 1;
            format!("t{next}")
        };
        let plan = orchestrate(&self.view, &mut ids);
        self.next_id = next;
        let summary = self.apply(&plan);
        (plan, summary)
    }

    /// The summary of a pass that is expected to change something.
    fn step(&mut self) -> Vec<String> {
        self.round().1
    }

    fn apply(&mut self, plan: &Plan) -> Vec<String> {
        let mut out = Vec::new();
        for t in &plan.update_tasks {
            let old = self
                .view
                .tasks
                .iter_mut()
                .find(|o| o.id == t.id)
                .expect("update of a task that does not exist");
            assert_eq!(old.meta, t.meta, "update must carry the stored meta");
            let mut line = format!("~{}", t.id);
            if old.desired_state != t.desired_state {
                line.push_str(&format!(" {}", t.desired_state));
            }
            if old.paused != t.paused {
                line.push_str(if t.paused { " paused" } else { " unpaused" });
            }
            assert_ne!(*old, *t, "update that changes nothing");
            out.push(line);
            *old = t.clone();
            self.version += 1;
            old.meta.version = self.version;
        }
        for t in &plan.create_tasks {
            let mut line = format!("+{} {}", t.id, t.name());
            if t.restart_attempt > 0 {
                line.push_str(&format!(" #{}", t.restart_attempt));
            }
            out.push(line);
            let mut t = t.clone();
            assert!(self.view.tasks.iter().all(|o| o.id != t.id), "id reused");
            self.version += 1;
            t.meta.version = self.version;
            t.meta.created_at = self.view.now;
            self.view.tasks.push(t);
        }
        for t in &plan.delete_tasks {
            out.push(format!("-{}", t.id));
            let before = self.view.tasks.len();
            self.view.tasks.retain(|o| o.id != t.id);
            assert_eq!(
                before,
                self.view.tasks.len() + 1,
                "delete of a missing task"
            );
        }
        for s in &plan.update_services {
            let old = self
                .view
                .services
                .iter_mut()
                .find(|o| o.id == s.id)
                .unwrap();
            let u = s.update_status.clone().unwrap_or_default();
            out.push(format!("!{} {}: {}", s.id, u.state.as_str(), u.message));
            *old = s.clone();
        }
        out
    }

    /// Asserts that a pass changes nothing (and returns when it wants to be woken).
    fn quiet(&mut self) -> Option<DateTime<Utc>> {
        let (plan, summary) = self.round();
        assert_eq!(summary, Vec::<String>::new(), "expected no change");
        plan.wake_at
    }

    /// Live tasks' names and ids, sorted by name.
    fn live(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .view
            .tasks
            .iter()
            .filter(|t| t.is_runnable())
            .map(|t| format!("{} {}", t.name(), t.id))
            .collect();
        v.sort();
        v
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

fn restart_policy(condition: &str, delay_s: i64, max: u64, window_s: i64) -> Option<RestartPolicy> {
    Some(RestartPolicy {
        condition: condition.to_owned(),
        delay: Some(delay_s * SEC),
        max_attempts: max,
        window: window_s * SEC,
    })
}

fn three_nodes() -> Sim {
    let mut sim = Sim::new();
    for n in ["n1", "n2", "n3"] {
        sim.add_node(n);
    }
    sim
}

// ---------------------------------------------------------------------------------------
// Replicated

#[test]
fn creates_replicas_with_the_service_spec() {
    let mut sim = three_nodes();
    sim.add_service("web", ServiceMode::replicated(3));
    let (plan, summary) = sim.round();
    assert_eq!(summary, s(&["+t1 web.1", "+t2 web.2", "+t3 web.3"]));
    let t = &plan.create_tasks[0];
    let svc = sim.service("web");
    assert_eq!(t.spec, svc.spec.task_template);
    assert_eq!(
        (
            t.spec_version,
            t.service_id.as_str(),
            t.service_name.as_str()
        ),
        (1, "web", "web")
    );
    assert_eq!(
        (t.desired_state, t.status.state),
        (TaskState::Running, TaskState::New)
    );
    assert_eq!(t.status.message, "created");
    assert_eq!(t.status.timestamp, Some(sim.at(0)));
    assert_eq!(
        (t.node_id.as_str(), t.job_iteration, t.restart_attempt),
        ("", None, 0)
    );
    assert_eq!(plan.wake_at, None);
    // Nothing to do until something changes, before and after the tasks run.
    sim.quiet();
    sim.settle();
    sim.quiet();
}

#[test]
fn scale_up_fills_the_lowest_free_slots_and_scale_down_balances_nodes() {
    let mut sim = three_nodes();
    sim.add_service("web", ServiceMode::replicated(3));
    sim.step();
    for id in ["t1", "t2", "t3"] {
        sim.assign(id, "n1");
    }
    sim.settle();
    let scale = |sim: &mut Sim, n: u64| {
        let s = sim.service_mut("web");
        s.spec.mode = ServiceMode::replicated(n);
        s.spec_version += 1;
    };
    scale(&mut sim, 5);
    assert_eq!(sim.step(), s(&["+t4 web.4", "+t5 web.5"]));
    sim.assign("t4", "n2");
    sim.assign("t5", "n3");
    sim.settle();
    sim.quiet();
    // n1 runs slots 1-3: scale-down removes its 2nd and 3rd copies first, then the
    // highest slot.
    scale(&mut sim, 2);
    assert_eq!(sim.step(), s(&["~t2 remove", "~t3 remove", "~t5 remove"]));
    assert_eq!(sim.live(), s(&["web.1 t1", "web.4 t4"]));
    // The reaper deletes them once their agents stopped them.
    sim.settle();
    assert_eq!(sim.step(), s(&["-t2", "-t3", "-t5"]));
    sim.quiet();
    // Scaling up again reuses the freed slot numbers.
    scale(&mut sim, 3);
    assert_eq!(sim.step(), s(&["+t6 web.2"]));
}

#[test]
fn scale_down_prefers_tasks_that_are_not_running() {
    let mut sim = three_nodes();
    sim.add_service("web", ServiceMode::replicated(3));
    sim.step();
    sim.assign("t1", "n1");
    sim.set("t1", TaskState::Running);
    sim.assign("t2", "n2");
    sim.set("t2", TaskState::Running);
    // t3 is still pending (no node): it goes first.
    let s2 = sim.service_mut("web");
    s2.spec.mode = ServiceMode::replicated(2);
    s2.spec_version += 1;
    assert_eq!(sim.step(), s(&["-t3"]));
}

#[test]
fn failed_task_is_replaced_after_the_restart_delay() {
    let mut sim = three_nodes();
    sim.add_service("web", ServiceMode::replicated(1));
    sim.step();
    sim.settle();
    sim.advance(10);
    sim.set("t1", TaskState::Failed);
    // At once: the failed task becomes history; the replacement waits 5 s (the default).
    let (plan, summary) = sim.round();
    assert_eq!(summary, s(&["~t1 shutdown"]));
    assert_eq!(plan.wake_at, Some(sim.at(15)));
    sim.advance(3);
    assert_eq!(sim.quiet(), Some(sim.at(15)));
    sim.advance(2);
    let (plan, summary) = sim.round();
    assert_eq!(summary, s(&["+t2 web.1 #1"]));
    assert_eq!(plan.create_tasks[0].restart_window_start, None);
    assert_eq!(plan.wake_at, None);
    sim.settle();
    sim.quiet();
}

#[test]
fn restart_conditions() {
    // (condition, how the task ends, whether it is replaced)
    let cases = [
        ("any", TaskState::Complete, true),
        ("any", TaskState::Failed, true),
        ("on-failure", TaskState::Complete, false),
        ("on-failure", TaskState::Failed, true),
        ("on-failure", TaskState::Rejected, true),
        ("none", TaskState::Failed, false),
        ("none", TaskState::Complete, false),
    ];
    for (condition, end, replaced) in cases {
        let mut sim = three_nodes();
        sim.add_service("web", ServiceMode::replicated(1));
        sim.service_mut("web").spec.task_template.restart_policy =
            restart_policy(condition, 0, 0, 0);
        sim.step();
        sim.settle();
        sim.set("t1", end);
        let want = if replaced {
            s(&["~t1 shutdown", "+t2 web.1 #1"])
        } else {
            s(&["~t1 shutdown"])
        };
        assert_eq!(sim.step(), want, "{condition} after {end}");
        // A slot that must not restart stays empty (0/1 is right), pass after pass.
        sim.advance(60);
        assert_eq!(sim.quiet(), None, "{condition} after {end}");
    }
}

#[test]
fn ended_slots_are_refilled_when_the_service_changes() {
    let mut sim = three_nodes();
    sim.add_service("web", ServiceMode::replicated(2));
    sim.service_mut("web").spec.task_template.restart_policy = restart_policy("none", 0, 0, 0);
    sim.step();
    sim.settle();
    sim.set("t1", TaskState::Complete);
    sim.set("t2", TaskState::Failed);
    assert_eq!(sim.step(), s(&["~t1 shutdown", "~t2 shutdown"]));
    sim.quiet();
    // As SwarmKit reconciles a changed service: dead slots get new tasks (scale-up too).
    let svc = sim.service_mut("web");
    svc.spec.mode = ServiceMode::replicated(3);
    svc.spec_version += 1;
    assert_eq!(sim.step(), s(&["+t3 web.1", "+t4 web.2", "+t5 web.3"]));
}

#[test]
fn max_attempts_without_a_window_count_forever() {
    let mut sim = three_nodes();
    sim.add_service("web", ServiceMode::replicated(1));
    sim.service_mut("web").spec.task_template.restart_policy = restart_policy("any", 0, 2, 0);
    sim.step();
    sim.settle();
    sim.set("t1", TaskState::Failed);
    assert_eq!(sim.step(), s(&["~t1 shutdown", "+t2 web.1 #1"]));
    sim.settle();
    sim.advance(3600);
    sim.set("t2", TaskState::Failed);
    assert_eq!(sim.step(), s(&["~t2 shutdown", "+t3 web.1 #2"]));
    sim.settle();
    sim.advance(3600);
    sim.set("t3", TaskState::Failed);
    assert_eq!(sim.step(), s(&["~t3 shutdown"]));
    sim.advance(3600);
    sim.quiet();
    // A new spec starts a new count.
    sim.update_spec("web", |spec| {
        spec.task_template.container_spec.image = "busybox:2".into()
    });
    assert_eq!(sim.step(), s(&["+t4 web.1"]));
}

#[test]
fn max_attempts_within_a_window() {
    let mut sim = three_nodes();
    sim.add_service("web", ServiceMode::replicated(1));
    sim.service_mut("web").spec.task_template.restart_policy = restart_policy("any", 0, 1, 10);
    sim.step();
    sim.settle();
    sim.set("t1", TaskState::Failed);
    let (plan, summary) = sim.round();
    assert_eq!(summary, s(&["~t1 shutdown", "+t2 web.1 #1"]));
    assert_eq!(plan.create_tasks[0].restart_window_start, Some(sim.at(0)));
    sim.settle();
    // Fails again 12 s later: outside the window, so the count starts over.
    sim.advance(12);
    sim.set("t2", TaskState::Failed);
    let (plan, summary) = sim.round();
    assert_eq!(summary, s(&["~t2 shutdown", "+t3 web.1 #1"]));
    assert_eq!(plan.create_tasks[0].restart_window_start, Some(sim.at(12)));
    sim.settle();
    // Fails 3 s later: inside the window with the one attempt used: no more restarts.
    sim.advance(3);
    sim.set("t3", TaskState::Failed);
    assert_eq!(sim.step(), s(&["~t3 shutdown"]));
    sim.advance(60);
    sim.quiet();
}

#[test]
fn tasks_of_down_and_drained_nodes_are_replaced_at_once() {
    let mut sim = three_nodes();
    sim.add_service("web", ServiceMode::replicated(2));
    sim.step();
    sim.settle(); // t1 on n1, t2 on n2
    assert_eq!(sim.task("t2").node_id, "n2");
    sim.node_mut("n1").status.state = NodeState::Down;
    assert_eq!(sim.step(), s(&["~t1 shutdown", "+t3 web.1"]));
    sim.node_mut("n2").spec.availability = Availability::Drain;
    assert_eq!(sim.step(), s(&["~t2 shutdown", "+t4 web.2"]));
    sim.assign("t3", "n3");
    sim.assign("t4", "n3");
    sim.settle();
    // t1 never reports again (its node is down): it stays as history.
    sim.quiet();
    assert_eq!(sim.live(), s(&["web.1 t3", "web.2 t4"]));
}

#[test]
fn tasks_on_nodes_that_stop_matching_constraints_are_replaced() {
    let mut sim = three_nodes();
    for n in ["n1", "n2"] {
        sim.node_mut(n)
            .spec
            .labels
            .insert("zone".into(), "a".into());
    }
    sim.add_service("web", ServiceMode::replicated(2));
    sim.service_mut("web").spec.task_template.placement = Some(shoal_store::model::Placement {
        constraints: vec!["node.labels.zone==a".into()],
        ..Default::default()
    });
    sim.step();
    sim.assign("t1", "n1");
    sim.assign("t2", "n2");
    sim.settle();
    // n1's label goes: its task is moved (SwarmKit's constraint enforcer), n2's stays.
    sim.node_mut("n1").spec.labels.remove("zone");
    assert_eq!(sim.step(), s(&["~t1 shutdown", "+t3 web.1"]));
    assert_eq!(sim.step(), Vec::<String>::new());
}

#[test]
fn a_task_failing_on_a_drained_node_restarts_without_delay() {
    let mut sim = three_nodes();
    sim.add_service("web", ServiceMode::replicated(1));
    sim.step();
    sim.settle();
    sim.node_mut("n1").spec.availability = Availability::Drain;
    sim.set("t1", TaskState::Failed);
    assert_eq!(sim.step(), s(&["~t1 shutdown", "+t2 web.1 #1"]));
}

#[test]
fn duplicate_live_tasks_in_a_slot_are_reduced_to_one() {
    let mut sim = three_nodes();
    sim.add_service("web", ServiceMode::replicated(1));
    sim.step();
    sim.settle();
    // An old leader's stale decision left a second task in slot 1.
    let mut dup = sim.task("t1").clone();
    dup.id = "x".into();
    dup.status.state = TaskState::Pending;
    dup.meta.created_at = sim.at(1);
    sim.view.tasks.push(dup);
    assert_eq!(sim.step(), s(&["~x shutdown"]));
    sim.settle();
    sim.quiet();
}

// ---------------------------------------------------------------------------------------
// Global

#[test]
fn global_service_follows_nodes() {
    let mut sim = Sim::new();
    sim.add_node("n1");
    sim.add_node("n2");
    sim.add_service(
        "agent",
        ServiceMode {
            global: Some(Empty {}),
            ..ServiceMode::default()
        },
    );
    let (plan, summary) = sim.round();
    assert_eq!(summary, s(&["+t1 agent.n1", "+t2 agent.n2"]));
    assert_eq!(
        (
            plan.create_tasks[0].slot,
            plan.create_tasks[0].node_id.as_str()
        ),
        (0, "n1")
    );
    sim.settle();
    sim.quiet();
    // A node joins: it gets a task once it is ready.
    sim.add_node("n3");
    sim.node_mut("n3").status.state = NodeState::Disconnected;
    sim.quiet();
    sim.node_mut("n3").status.state = NodeState::Ready;
    assert_eq!(sim.step(), s(&["+t3 agent.n3"]));
    sim.settle();
    // Drained: its task stops, and no new one comes.
    sim.node_mut("n2").spec.availability = Availability::Drain;
    assert_eq!(sim.step(), s(&["~t2 shutdown"]));
    sim.settle();
    sim.quiet();
    // Back to active: a new task.
    sim.node_mut("n2").spec.availability = Availability::Active;
    assert_eq!(sim.step(), s(&["+t4 agent.n2"]));
    sim.settle();
    // Removed from the cluster: its tasks go.
    sim.view.nodes.retain(|n| n.id != "n3");
    assert_eq!(sim.step(), s(&["-t3"]));
    // Paused: keeps its task, but one that fails there is not restarted.
    sim.node_mut("n1").spec.availability = Availability::Pause;
    sim.quiet();
    sim.set("t1", TaskState::Failed);
    assert_eq!(sim.step(), s(&["~t1 shutdown"]));
    sim.advance(60);
    sim.quiet();
    // Active again: restarted (the delay has passed long ago).
    sim.node_mut("n1").spec.availability = Availability::Active;
    assert_eq!(sim.step(), s(&["+t5 agent.n1 #1"]));
    // A node that goes down: its task is shut down (global tasks do not move).
    sim.settle();
    sim.node_mut("n2").status.state = NodeState::Down;
    assert_eq!(sim.step(), s(&["~t4 shutdown"]));
}

#[test]
fn global_service_honours_constraints() {
    let mut sim = three_nodes();
    sim.node_mut("n2")
        .spec
        .labels
        .insert("zone".into(), "b".into());
    sim.add_service(
        "agent",
        ServiceMode {
            global: Some(Empty {}),
            ..ServiceMode::default()
        },
    );
    sim.service_mut("agent").spec.task_template.placement = Some(shoal_store::model::Placement {
        constraints: vec!["node.labels.zone!=b".into()],
        ..Default::default()
    });
    assert_eq!(sim.step(), s(&["+t1 agent.n1", "+t2 agent.n3"]));
    sim.settle();
    // n3 stops matching: its task is shut down.
    sim.node_mut("n3")
        .spec
        .labels
        .insert("zone".into(), "b".into());
    assert_eq!(sim.step(), s(&["~t2 shutdown"]));
}

// ---------------------------------------------------------------------------------------
// Jobs

#[test]
fn replicated_job_runs_total_completions_with_max_concurrent() {
    let mut sim = three_nodes();
    sim.add_service(
        "job",
        ServiceMode {
            replicated_job: Some(ReplicatedJobMode {
                max_concurrent: 2,
                total_completions: 5,
            }),
            ..ServiceMode::default()
        },
    );
    let (plan, summary) = sim.round();
    assert_eq!(summary, s(&["+t1 job.1", "+t2 job.2"]));
    assert_eq!(plan.create_tasks[0].job_iteration, Some(0));
    sim.settle();
    sim.quiet();
    sim.set("t1", TaskState::Complete);
    assert_eq!(sim.step(), s(&["~t1 complete", "+t3 job.3"]));
    sim.settle();
    // A failure is restarted in its slot (on-failure by default, after 5 s), and the slot
    // keeps its place in max-concurrent meanwhile.
    sim.set("t2", TaskState::Failed);
    let (plan, summary) = sim.round();
    assert_eq!(summary, s(&["~t2 shutdown"]));
    assert_eq!(plan.wake_at, Some(sim.at(5)));
    sim.advance(5);
    assert_eq!(sim.step(), s(&["+t4 job.2 #1"]));
    sim.settle();
    for id in ["t3", "t4"] {
        sim.set(id, TaskState::Complete);
    }
    assert_eq!(
        sim.step(),
        s(&["~t4 complete", "~t3 complete", "+t5 job.4", "+t6 job.5"])
    );
    sim.settle();
    for id in ["t5", "t6"] {
        sim.set(id, TaskState::Complete);
    }
    assert_eq!(sim.step(), s(&["~t5 complete", "~t6 complete"]));
    // Done: five completions, nothing more.
    sim.quiet();
    // A new iteration (the API bumps it on update) runs it all again.
    sim.service_mut("job").job_status = Some(JobStatus {
        job_iteration: 1,
        last_execution: None,
    });
    let (plan, summary) = sim.round();
    assert_eq!(summary, s(&["+t7 job.1", "+t8 job.2"]));
    assert_eq!(plan.create_tasks[0].job_iteration, Some(1));
}

#[test]
fn live_tasks_of_an_older_job_iteration_are_stopped() {
    let mut sim = three_nodes();
    sim.add_service(
        "job",
        ServiceMode {
            replicated_job: Some(ReplicatedJobMode {
                max_concurrent: 1,
                total_completions: 1,
            }),
            ..ServiceMode::default()
        },
    );
    sim.step();
    sim.settle();
    sim.service_mut("job").job_status = Some(JobStatus {
        job_iteration: 1,
        last_execution: None,
    });
    assert_eq!(sim.step(), s(&["~t1 shutdown", "+t2 job.1"]));
}

#[test]
fn global_job_completes_once_per_node() {
    let mut sim = Sim::new();
    sim.add_node("n1");
    sim.add_node("n2");
    sim.add_service(
        "once",
        ServiceMode {
            global_job: Some(Empty {}),
            ..ServiceMode::default()
        },
    );
    sim.service_mut("once").spec.task_template.restart_policy =
        restart_policy("on-failure", 0, 0, 0);
    assert_eq!(sim.step(), s(&["+t1 once.n1", "+t2 once.n2"]));
    sim.settle();
    sim.set("t1", TaskState::Complete);
    sim.set("t2", TaskState::Failed);
    assert_eq!(
        sim.step(),
        s(&["~t1 complete", "~t2 shutdown", "+t3 once.n2 #1"])
    );
    sim.settle();
    sim.set("t3", TaskState::Complete);
    assert_eq!(sim.step(), s(&["~t3 complete"]));
    sim.quiet();
    // A node joining later runs it too.
    sim.add_node("n3");
    assert_eq!(sim.step(), s(&["+t4 once.n3"]));
}

// ---------------------------------------------------------------------------------------
// Rolling updates

fn update_config(
    parallelism: u64,
    delay_s: i64,
    order: &str,
    action: &str,
    monitor_s: i64,
) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        delay: delay_s * SEC,
        failure_action: action.to_owned(),
        monitor: monitor_s * SEC,
        max_failure_ratio: 0.0,
        order: order.to_owned(),
    }
}

/// A service of `n` replicas, all running, with an update config.
fn running_service(n: u64, cfg: UpdateConfig) -> Sim {
    let mut sim = three_nodes();
    sim.add_service("web", ServiceMode::replicated(n));
    sim.service_mut("web").spec.update_config = Some(cfg);
    sim.step();
    sim.settle();
    sim.advance(100);
    sim
}

fn new_image(spec: &mut ServiceSpec) {
    spec.task_template.container_spec.image = "busybox:2".into();
}

#[test]
fn stop_first_update_one_at_a_time_with_a_delay() {
    let mut sim = running_service(3, update_config(1, 10, "stop-first", "pause", 5));
    sim.update_spec("web", new_image);
    // Slot 1: the old task stops first.
    assert_eq!(sim.step(), s(&["~t1 shutdown"]));
    sim.quiet();
    sim.settle(); // t1 stopped
    assert_eq!(sim.step(), s(&["+t4 web.1"]));
    assert_eq!(sim.task("t4").spec.container_spec.image, "busybox:2");
    sim.quiet();
    sim.settle(); // t4 runs (at 100 s)
    // The worker rests 10 s before the next slot.
    assert_eq!(sim.quiet(), Some(sim.at(110)));
    sim.advance(10);
    assert_eq!(sim.step(), s(&["~t2 shutdown"]));
    sim.settle();
    assert_eq!(sim.step(), s(&["+t5 web.2"]));
    sim.advance(1);
    sim.settle(); // t5 runs at 111 s
    assert_eq!(sim.quiet(), Some(sim.at(121)));
    sim.advance(10);
    assert_eq!(sim.step(), s(&["~t3 shutdown"]));
    sim.settle();
    assert_eq!(sim.step(), s(&["+t6 web.3"]));
    sim.settle(); // t6 runs at 121 s
    // Completed after the last rest (10 s) and the monitor window (5 s).
    assert_eq!(sim.quiet(), Some(sim.at(136)));
    sim.advance(15);
    assert_eq!(sim.step(), s(&["!web completed: update completed"]));
    let u = sim.service("web").update_status.clone().unwrap();
    assert_eq!(u.completed_at, Some(sim.at(136)));
    sim.quiet();
    assert_eq!(sim.live(), s(&["web.1 t4", "web.2 t5", "web.3 t6"]));
}

#[test]
fn start_first_update_two_at_a_time() {
    let mut sim = running_service(3, update_config(2, 0, "start-first", "pause", 5));
    sim.update_spec("web", new_image);
    // Two new tasks start next to the old ones.
    assert_eq!(sim.step(), s(&["+t4 web.1", "+t5 web.2"]));
    sim.quiet();
    // t4 runs: its old task stops, and slot 3 takes the free worker.
    sim.assign("t4", "n1");
    sim.set("t4", TaskState::Running);
    assert_eq!(sim.step(), s(&["~t1 shutdown", "+t6 web.3"]));
    sim.settle();
    assert_eq!(sim.step(), s(&["~t2 shutdown", "~t3 shutdown"]));
    sim.settle();
    assert_eq!(sim.quiet(), Some(sim.at(105)));
    sim.advance(5);
    assert_eq!(sim.step(), s(&["!web completed: update completed"]));
    assert_eq!(sim.live(), s(&["web.1 t4", "web.2 t5", "web.3 t6"]));
}

#[test]
fn parallelism_zero_updates_every_slot_at_once() {
    let mut sim = running_service(3, update_config(0, 0, "stop-first", "pause", 5));
    sim.update_spec("web", new_image);
    assert_eq!(
        sim.step(),
        s(&["~t1 shutdown", "~t2 shutdown", "~t3 shutdown"])
    );
}

#[test]
fn failing_update_pauses() {
    let mut sim = running_service(3, update_config(1, 0, "stop-first", "pause", 5));
    sim.update_spec("web", new_image);
    sim.step();
    sim.settle();
    assert_eq!(sim.step(), s(&["+t4 web.1"]));
    sim.settle();
    sim.set("t4", TaskState::Failed);
    // Paused, and the failed task is restarted (with the new spec) after the delay.
    let (plan, summary) = sim.round();
    assert_eq!(
        summary,
        s(&[
            "~t4 shutdown",
            "!web paused: update paused due to failure or early termination of task t4"
        ])
    );
    assert_eq!(plan.wake_at, Some(sim.at(105)));
    sim.advance(5);
    assert_eq!(sim.step(), s(&["+t5 web.1 #1"]));
    sim.settle();
    // Slots 2 and 3 keep the old spec while paused.
    sim.quiet();
    assert_eq!(sim.task("t2").desired_state, TaskState::Running);
}

#[test]
fn a_task_failing_after_the_monitor_window_is_not_an_update_failure() {
    let mut sim = running_service(3, update_config(1, 0, "stop-first", "pause", 5));
    sim.update_spec("web", new_image);
    sim.step();
    sim.settle();
    assert_eq!(sim.step(), s(&["+t4 web.1"]));
    sim.settle();
    let now = sim.view.now;
    sim.view
        .tasks
        .iter_mut()
        .find(|t| t.id == "t4")
        .unwrap()
        .status
        .started_at = Some(now);
    sim.advance(10);
    sim.set("t4", TaskState::Failed);
    let (_, summary) = sim.round();
    assert!(summary.iter().all(|l| !l.contains("paused")), "{summary:?}");
    // The same failure inside the window pauses (see `failing_update_pauses`).
}

#[test]
fn failing_update_rolls_back() {
    let mut sim = running_service(3, update_config(1, 0, "stop-first", "rollback", 5));
    let old = sim.service("web").spec.clone();
    sim.update_spec("web", new_image);
    sim.step();
    sim.settle();
    sim.step(); // +t4 web.1
    sim.settle();
    sim.advance(1);
    sim.set("t4", TaskState::Failed);
    // The specs swap and the failed slot gets a task of the old spec at once.
    assert_eq!(
        sim.step(),
        s(&[
            "~t4 shutdown",
            "+t5 web.1",
            "!web rollback_started: update rolled back due to failure or early termination of task t4"
        ])
    );
    let svc = sim.service("web");
    assert_eq!(svc.spec, old);
    assert_eq!(
        svc.previous_spec
            .as_ref()
            .unwrap()
            .task_template
            .container_spec
            .image,
        "busybox:2"
    );
    assert_eq!(svc.spec_version, 3);
    assert_eq!(
        svc.update_status.as_ref().unwrap().started_at,
        Some(sim.at(101))
    );
    assert_eq!(sim.task("t5").spec.container_spec.image, "busybox:1");
    sim.settle();
    // Slots 2 and 3 never changed: the rollback leaves them, and completes after the
    // monitor window.
    assert_eq!(sim.quiet(), Some(sim.at(106)));
    sim.advance(5);
    assert_eq!(
        sim.step(),
        s(&["!web rollback_completed: rollback completed"])
    );
    assert_eq!(sim.live(), s(&["web.1 t5", "web.2 t2", "web.3 t3"]));
}

#[test]
fn failing_rollback_pauses() {
    let mut sim = running_service(1, update_config(1, 0, "stop-first", "rollback", 5));
    sim.service_mut("web").spec.rollback_config =
        Some(update_config(1, 0, "stop-first", "rollback", 5));
    sim.update_spec("web", new_image);
    let s2 = sim.service_mut("web");
    s2.update_status.as_mut().unwrap().state = UpdateState::RollbackStarted;
    sim.step(); // ~t1 shutdown
    sim.settle();
    sim.step(); // +t2
    sim.settle();
    sim.set("t2", TaskState::Rejected);
    assert_eq!(
        sim.step(),
        s(&[
            "~t2 shutdown",
            "!web rollback_paused: rollback paused due to failure or early termination of task t2"
        ])
    );
}

#[test]
fn update_tolerates_failures_up_to_the_ratio() {
    let mut cfg = update_config(1, 0, "stop-first", "pause", 5);
    cfg.max_failure_ratio = 0.5;
    let mut sim = running_service(3, cfg);
    sim.service_mut("web").spec.task_template.restart_policy = restart_policy("any", 0, 0, 0);
    sim.update_spec("web", new_image);
    sim.step();
    sim.settle();
    sim.step(); // +t4 web.1
    sim.settle();
    sim.set("t4", TaskState::Failed);
    // 1 of 3 failed: under 0.5, the update goes on (the worker is free again).
    assert_eq!(
        sim.step(),
        s(&["~t4 shutdown", "~t2 shutdown", "+t5 web.1 #1"])
    );
    sim.settle();
    assert_eq!(sim.step(), s(&["+t6 web.2"]));
    sim.settle();
    sim.set("t6", TaskState::Failed);
    // 2 of 3: over the ratio.
    assert_eq!(
        sim.step(),
        s(&[
            "~t6 shutdown",
            "+t7 web.2 #1",
            "!web paused: update paused due to failure or early termination of task t6"
        ])
    );
}

#[test]
fn rollback_replaces_only_the_tasks_that_changed() {
    let mut sim = running_service(3, update_config(1, 0, "stop-first", "pause", 5));
    sim.update_spec("web", new_image);
    sim.step();
    sim.settle();
    sim.step(); // +t4 web.1 with busybox:2
    sim.settle();
    // The user pauses nothing; they roll back (the API swaps the specs).
    let now = sim.view.now;
    let svc = sim.service_mut("web");
    let prev = svc.previous_spec.take().unwrap();
    svc.previous_spec = Some(std::mem::replace(&mut svc.spec, prev));
    svc.spec_version += 1;
    svc.update_status = Some(UpdateStatus {
        state: UpdateState::RollbackStarted,
        started_at: Some(now),
        completed_at: None,
        message: "manually requested rollback".into(),
    });
    assert_eq!(sim.step(), s(&["~t4 shutdown"]));
    sim.settle();
    assert_eq!(sim.step(), s(&["+t5 web.1"]));
    sim.settle();
    sim.advance(5);
    assert_eq!(
        sim.step(),
        s(&["!web rollback_completed: rollback completed"])
    );
    assert_eq!(sim.live(), s(&["web.1 t5", "web.2 t2", "web.3 t3"]));
}

#[test]
fn update_with_nothing_to_replace_completes_at_once() {
    let mut sim = running_service(2, update_config(1, 0, "stop-first", "pause", 5));
    sim.update_spec("web", |spec| {
        spec.labels
            .insert("a".into(), "b".into())
            .map(drop)
            .unwrap_or(())
    });
    assert_eq!(sim.step(), s(&["!web completed: update completed"]));
}

#[test]
fn paused_update_leaves_dirty_tasks_alone() {
    let mut sim = running_service(2, update_config(1, 0, "stop-first", "pause", 5));
    sim.update_spec("web", new_image);
    sim.service_mut("web").update_status.as_mut().unwrap().state = UpdateState::Paused;
    sim.quiet();
}

#[test]
fn placement_change_keeps_tasks_whose_node_still_fits() {
    let mut sim = running_service(2, update_config(1, 0, "stop-first", "pause", 5));
    sim.update_spec("web", |spec| {
        spec.task_template.placement = Some(shoal_store::model::Placement {
            constraints: vec!["node.hostname!=n2".into()],
            ..Default::default()
        });
    });
    // t1 runs on n1 (fits), t2 on n2 (does not).
    assert_eq!(sim.step(), s(&["~t2 shutdown"]));
}

// ---------------------------------------------------------------------------------------
// Deleted services, reaper, pause

#[test]
fn tasks_of_a_deleted_service_go() {
    let mut sim = three_nodes();
    sim.add_service("web", ServiceMode::replicated(3));
    sim.step();
    sim.settle(); // t1 n1, t2 n2, t3 n3
    sim.set("t2", TaskState::Failed);
    sim.node_mut("n3").status.state = NodeState::Down;
    sim.view.services.clear();
    // Running: told to go; ended or on a down node: deleted.
    assert_eq!(sim.step(), s(&["~t1 remove", "-t2", "-t3"]));
    sim.quiet();
    sim.settle();
    assert_eq!(sim.step(), s(&["-t1"]));
    assert!(sim.view.tasks.is_empty());
}

#[test]
fn reaper_keeps_the_history_limit() {
    let mut sim = three_nodes();
    sim.view
        .cluster
        .spec
        .orchestration
        .task_history_retention_limit = -1;
    sim.add_service("web", ServiceMode::replicated(1));
    sim.service_mut("web").spec.task_template.restart_policy = restart_policy("any", 0, 0, 0);
    sim.step();
    for i in 1..=5 {
        sim.settle();
        sim.advance(1);
        sim.set(&format!("t{i}"), TaskState::Failed);
        sim.step();
    }
    sim.settle();
    sim.quiet();
    // t6 runs; t1..t5 failed. With a limit of 3 the slot keeps 3 tasks: t6 and the two
    // newest dead ones.
    sim.view
        .cluster
        .spec
        .orchestration
        .task_history_retention_limit = 3;
    assert_eq!(sim.step(), s(&["-t1", "-t2", "-t3"]));
    assert_eq!(sim.ids(), vec!["t4", "t5", "t6"]);
    sim.quiet();
    // Next failure: the new dead task pushes the oldest out.
    sim.set("t6", TaskState::Failed);
    assert_eq!(sim.step(), s(&["~t6 shutdown", "+t7 web.1 #6"]));
    assert_eq!(sim.step(), s(&["-t4"]));
}

#[test]
fn reaper_limit_zero_keeps_only_the_newest() {
    let mut sim = three_nodes();
    sim.view
        .cluster
        .spec
        .orchestration
        .task_history_retention_limit = 0;
    sim.add_service("web", ServiceMode::replicated(1));
    sim.service_mut("web").spec.task_template.restart_policy =
        restart_policy("on-failure", 0, 1, 0);
    sim.step();
    sim.settle();
    sim.set("t1", TaskState::Failed);
    sim.step(); // ~t1 shutdown, +t2
    sim.settle();
    assert_eq!(sim.step(), s(&["-t1"]));
    sim.set("t2", TaskState::Failed);
    sim.step(); // ~t2 shutdown, no restart (max attempts)
    // The newest task stays: it says the slot is done.
    sim.quiet();
    assert_eq!(sim.ids(), vec!["t2"]);
}

#[test]
fn negative_history_limit_keeps_everything() {
    let mut sim = three_nodes();
    sim.view
        .cluster
        .spec
        .orchestration
        .task_history_retention_limit = -1;
    sim.add_service("web", ServiceMode::replicated(1));
    sim.service_mut("web").spec.task_template.restart_policy = restart_policy("any", 0, 0, 0);
    sim.step();
    for i in 1..=7 {
        sim.settle();
        sim.set(&format!("t{i}"), TaskState::Failed);
        sim.step();
    }
    sim.settle();
    sim.quiet();
    assert_eq!(sim.view.tasks.len(), 8);
}

#[test]
fn pause_flag_propagates_to_live_tasks() {
    let mut sim = three_nodes();
    sim.add_service("web", ServiceMode::replicated(2));
    sim.step();
    sim.settle();
    sim.service_mut("web").paused = true;
    assert_eq!(sim.step(), s(&["~t1 paused", "~t2 paused"]));
    sim.quiet();
    // New tasks start paused.
    sim.set("t1", TaskState::Failed);
    sim.advance(5);
    let (plan, summary) = sim.round();
    assert_eq!(summary, s(&["~t1 shutdown", "+t3 web.1 #1"]));
    assert!(plan.create_tasks[0].paused);
    sim.service_mut("web").paused = false;
    assert_eq!(sim.step(), s(&["~t3 unpaused", "~t2 unpaused"]));
}

#[test]
fn plans_are_deterministic() {
    let build = || {
        let mut sim = three_nodes();
        for (id, n) in [("b", 2), ("a", 3), ("c", 1)] {
            sim.add_service(id, ServiceMode::replicated(n));
        }
        sim
    };
    let mut one = build();
    let mut two = build();
    two.view.services.reverse();
    let (p1, _) = one.round();
    let (p2, _) = two.round();
    assert_eq!(p1, p2);
    let names: Vec<String> = p1
        .create_tasks
        .iter()
        .map(|t| format!("{} {}", t.id, t.name()))
        .collect();
    assert_eq!(
        names,
        s(&["t1 a.1", "t2 a.2", "t3 a.3", "t4 b.1", "t5 b.2", "t6 c.1"])
    );
}
