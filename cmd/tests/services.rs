//! Multi-node tests of services: real daemons in network namespaces, real containers,
//! the orchestrators, scheduler, dispatcher and agents end to end through the CLI.

mod common;
mod common_swarm;

use std::time::{Duration, Instant};

use common::busybox_archive;
use common_swarm::*;
use shoal_testkit::cluster::{TestNet, wait_until};

/// A cluster with busybox imported on every node.
fn cluster(label: &str, managers: usize, workers: usize) -> TestNet {
    let t = form(label, managers, workers, &[]);
    for i in 0..t.len() {
        import_busybox(&t, i, busybox_archive());
    }
    t
}

fn create(t: &TestNet, i: usize, args: &[&str]) -> String {
    let mut a = vec!["service", "create", "-d"];
    a.extend_from_slice(args);
    t.ok(i, &a).trim().to_owned()
}

/// 6 replicas over 3 nodes land 2 per node; scaling to 9 keeps the spread even, scaling to
/// 2 leaves 2; `service ls` and `service ps` show Docker's columns.
#[test]
fn replicas_spread_and_scale() {
    let t = cluster("svc-spread", 1, 2);
    let id = create(
        &t,
        0,
        &[
            "--name",
            "web",
            "--replicas",
            "6",
            "--stop-grace-period",
            "1s",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    assert_eq!(id.len(), 25, "service ID: {id}");
    wait_running(&t, 0, "web", 6, Duration::from_secs(60));
    assert_eq!(spread(&t, 0, "web"), vec![2, 2, 2]);
    // Containers really run on each node, named as Docker names them.
    for i in 0..3 {
        let cs = containers(&t, i, "web.");
        assert_eq!(cs.len(), 2, "node{i}: {cs:?}");
        assert!(cs.iter().all(|c| c["State"] == "running"), "{cs:?}");
    }
    let ls = t.ok(0, &["service", "ls"]);
    let mut lines = ls.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("ID")
            && header.contains("NAME")
            && header.contains("MODE")
            && header.contains("REPLICAS")
            && header.contains("IMAGE")
            && header.contains("PORTS"),
        "{ls}"
    );
    let row = lines.next().unwrap_or_default();
    assert!(
        row.contains("web") && row.contains("replicated") && row.contains("6/6"),
        "{ls}"
    );
    assert!(
        row.contains("busybox:latest") && !row.contains("@sha256"),
        "{ls}"
    );

    t.ok(0, &["service", "scale", "-d", "web=9"]);
    wait_running(&t, 0, "web", 9, Duration::from_secs(60));
    assert_eq!(spread(&t, 0, "web"), vec![3, 3, 3]);

    t.ok(0, &["service", "scale", "-d", "web=2"]);
    wait_running(&t, 0, "web", 2, Duration::from_secs(60));
    // Removed slots' containers stop.
    assert!(
        wait_until(Duration::from_secs(30), || (0..3)
            .map(|i| containers(&t, i, "web.")
                .iter()
                .filter(|c| c["State"] == "running")
                .count())
            .sum::<usize>()
            == 2),
        "2 running containers left"
    );
    let ps = t.ok(0, &["service", "ps", "web"]);
    assert!(ps.starts_with("ID"), "{ps}");
    for col in [
        "NAME",
        "IMAGE",
        "NODE",
        "DESIRED STATE",
        "CURRENT STATE",
        "ERROR",
        "PORTS",
    ] {
        assert!(
            ps.lines().next().unwrap_or_default().contains(col),
            "{col}: {ps}"
        );
    }
    assert!(ps.contains("Running"), "{ps}");
    // Filters and -q (Docker's): desired state, node, ID, name; a bad value is refused.
    let live = t.ok(
        0,
        &[
            "service",
            "ps",
            "-q",
            "--filter",
            "desired-state=running",
            "web",
        ],
    );
    assert_eq!(live.lines().count(), 2, "{live}");
    let on_node0 = t.ok(
        0,
        &[
            "service",
            "ps",
            "-q",
            "--filter",
            "node=node0",
            "--filter",
            "desired-state=running",
            "web",
        ],
    );
    assert_eq!(
        on_node0.lines().count(),
        spread(&t, 0, "web")[0],
        "{on_node0}"
    );
    let one = live.lines().next().unwrap_or_default();
    let by_id = t.ok(
        0,
        &[
            "service",
            "ps",
            "-q",
            "--filter",
            &format!("id={one}"),
            "web",
        ],
    );
    assert_eq!(by_id.trim(), one);
    let by_name = t.ok(
        0,
        &[
            "service",
            "ps",
            "--filter",
            "name=web.1",
            "--format",
            "{{.Name}}",
            "web",
        ],
    );
    assert!(
        by_name
            .lines()
            .all(|l| l.trim_start_matches("\\_ ").trim() == "web.1"),
        "{by_name}"
    );
    let bad = t.run(
        0,
        &["service", "ps", "--filter", "desired-state=sleeping", "web"],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("sleeping"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // rm: every task's container goes away.
    t.ok(0, &["service", "rm", "web"]);
    assert!(
        wait_until(Duration::from_secs(30), || (0..3)
            .all(|i| containers(&t, i, "web.").is_empty())),
        "containers removed"
    );
    assert!(
        wait_until(Duration::from_secs(10), || tasks(&t, 0, "web").is_empty()),
        "tasks reaped"
    );
}

/// A worker is killed: its tasks are rescheduled on the others once it is Down; draining a
/// node moves its tasks away; activating it again takes new tasks only.
#[test]
fn killed_worker_and_drain_move_tasks() {
    let mut t = cluster("svc-resched", 1, 2);
    create(
        &t,
        0,
        &[
            "--name",
            "app",
            "--replicas",
            "4",
            "--stop-grace-period",
            "1s",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    wait_running(&t, 0, "app", 4, Duration::from_secs(60));
    assert_eq!(spread(&t, 0, "app").iter().sum::<usize>(), 4);
    t.kill9(2);
    let started = Instant::now();
    assert!(
        wait_until(Duration::from_secs(40), || {
            let s = spread(&t, 0, "app");
            s[2] == 0 && s[0] + s[1] == 4
        }),
        "tasks of the killed node rescheduled: {:?} {:#?}",
        spread(&t, 0, "app"),
        tasks(&t, 0, "app")
    );
    eprintln!(
        "killed worker -> tasks rescheduled in {:?}",
        started.elapsed()
    );
    // Drain node1: all four go to node0.
    t.ok(0, &["node", "update", "--availability", "drain", "node1"]);
    assert!(
        wait_until(Duration::from_secs(40), || spread(&t, 0, "app")
            == vec![4, 0, 0]),
        "drained: {:?}",
        spread(&t, 0, "app")
    );
    assert!(
        wait_until(Duration::from_secs(20), || containers(&t, 1, "app.")
            .iter()
            .all(|c| c["State"] != "running")),
        "drained node's containers stopped"
    );
}

/// Global services run one task per eligible node and follow nodes joining, being drained
/// and leaving.
#[test]
fn global_service_follows_nodes() {
    let mut t = net("svc-global", 3);
    start_all(&mut t);
    init(&t, 0, &[]);
    for i in 0..3 {
        import_busybox(&t, i, busybox_archive());
    }
    let wt = token(&t, 0, "worker");
    join(&t, 1, 0, &wt);
    create(
        &t,
        0,
        &[
            "--name",
            "agent",
            "--mode",
            "global",
            "--stop-grace-period",
            "1s",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    wait_running(&t, 0, "agent", 2, Duration::from_secs(60));
    join(&t, 2, 0, &wt);
    wait_running(&t, 0, "agent", 3, Duration::from_secs(60));
    assert_eq!(spread(&t, 0, "agent"), vec![1, 1, 1]);
    let ls = t.ok(0, &["service", "ls"]);
    assert!(ls.contains("global") && ls.contains("3/3"), "{ls}");
    t.ok(0, &["node", "update", "--availability", "drain", "node1"]);
    wait_running(&t, 0, "agent", 2, Duration::from_secs(30));
    assert_eq!(spread(&t, 0, "agent"), vec![1, 0, 1]);
    // node2 leaves: its task goes with it.
    t.ok(2, &["swarm", "leave"]);
    assert!(
        wait_until(Duration::from_secs(30), || containers(&t, 2, "agent.")
            .is_empty()),
        "the leaving node's task container is removed"
    );
}

/// A task that exits non-zero is replaced in the same slot, up to the restart policy's
/// maximum attempts; `ps` shows the history with Docker's states and error.
#[test]
fn restart_policy_limits() {
    let t = cluster("svc-restart", 1, 0);
    create(
        &t,
        0,
        &[
            "--name",
            "crash",
            "--restart-condition",
            "on-failure",
            "--restart-delay",
            "100ms",
            "--restart-max-attempts",
            "2",
            "busybox",
            "sh",
            "-c",
            "exit 3",
        ],
    );
    // First run + 2 restarts = 3 failed tasks, then nothing.
    assert!(
        wait_until(Duration::from_secs(40), || tasks(&t, 0, "crash")
            .iter()
            .filter(|x| x["Status"]["State"] == "failed")
            .count()
            == 3),
        "{:#?}",
        tasks(&t, 0, "crash")
    );
    std::thread::sleep(Duration::from_secs(2));
    let all = tasks(&t, 0, "crash");
    assert_eq!(all.len(), 3, "no more attempts: {all:#?}");
    assert!(all.iter().all(|x| x["Slot"] == 1), "{all:#?}");
    assert!(
        all.iter()
            .all(|x| x["Status"]["Err"] == "task: non-zero exit (3)"),
        "{all:#?}"
    );
    let ps = t.ok(0, &["service", "ps", "crash"]);
    assert!(ps.contains("Failed"), "{ps}");
    assert!(ps.contains("\"task: non-zero exit (3)\""), "{ps}");
    assert!(ps.contains("\\_ crash.1"), "history rows: {ps}");
    // Without -d, create waits for convergence and fails, with the task's error, when a
    // slot gets no replacement.
    let o = t.run(
        0,
        &[
            "service",
            "create",
            "--name",
            "never",
            "--restart-max-attempts",
            "1",
            "--restart-delay",
            "0s",
            "busybox",
            "sh",
            "-c",
            "exit 4",
        ],
    );
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("task: non-zero exit (4)"), "{err}");
    // A task that completes with condition none is not restarted.
    create(
        &t,
        0,
        &[
            "--name",
            "once",
            "--restart-condition",
            "none",
            "busybox",
            "true",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(30), || tasks(&t, 0, "once")
            .iter()
            .any(|x| x["Status"]["State"] == "complete")),
        "{:#?}",
        tasks(&t, 0, "once")
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(tasks(&t, 0, "once").len(), 1);
}

/// Rolling updates: stop-first and start-first replace every task with the new spec; a
/// failing update pauses; one with failure action rollback returns to the previous spec.
#[test]
fn rolling_update_pause_and_rollback() {
    let t = cluster("svc-update", 1, 1);
    create(
        &t,
        0,
        &[
            "--name",
            "roll",
            "--replicas",
            "3",
            "--stop-grace-period",
            "0s",
            "--update-delay",
            "0s",
            "--update-monitor",
            "1s",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    wait_running(&t, 0, "roll", 3, Duration::from_secs(60));
    // stop-first (default), parallelism 1.
    t.ok(0, &["service", "update", "-d", "--env-add", "V=2", "roll"]);
    assert!(
        wait_until(Duration::from_secs(60), || {
            let s = service(&t, 0, "roll");
            s["UpdateStatus"]["State"] == "completed"
        }),
        "{:#}",
        service(&t, 0, "roll")
    );
    let run = running(&t, 0, "roll");
    assert_eq!(run.len(), 3);
    assert!(
        run.iter()
            .all(|x| x["Spec"]["ContainerSpec"]["Env"][0] == "V=2"),
        "{run:#?}"
    );
    // start-first, parallelism 2.
    t.ok(
        0,
        &[
            "service",
            "update",
            "-d",
            "--update-order",
            "start-first",
            "--update-parallelism",
            "2",
            "--env-add",
            "V=3",
            "roll",
        ],
    );
    assert!(
        wait_until(
            Duration::from_secs(60),
            || service(&t, 0, "roll")["UpdateStatus"]["State"] == "completed"
                && running(&t, 0, "roll")
                    .iter()
                    .all(|x| x["Spec"]["ContainerSpec"]["Env"]
                        .as_array()
                        .is_some_and(|e| e.iter().any(|v| v == "V=3")))
        ),
        "{:#}",
        service(&t, 0, "roll")
    );
    // A failing update (the new command exits at once) pauses.
    t.ok(
        0,
        &[
            "service",
            "update",
            "-d",
            "--update-failure-action",
            "pause",
            "--args",
            "sh -c 'exit 1'",
            "roll",
        ],
    );
    assert!(
        wait_until(
            Duration::from_secs(60),
            || service(&t, 0, "roll")["UpdateStatus"]["State"] == "paused"
        ),
        "{:#}",
        service(&t, 0, "roll")
    );
    let msg = service(&t, 0, "roll")["UpdateStatus"]["Message"].clone();
    assert!(
        msg.as_str().is_some_and(
            |m| m.contains("update paused due to failure or early termination of task")
        ),
        "{msg}"
    );
    // Fix it by rolling back by hand: the previous spec comes back.
    t.ok(0, &["service", "rollback", "-d", "roll"]);
    assert!(
        wait_until(Duration::from_secs(60), || {
            let s = service(&t, 0, "roll");
            s["UpdateStatus"]["State"] == "rollback_completed" && running(&t, 0, "roll").len() == 3
        }),
        "{:#}",
        service(&t, 0, "roll")
    );
    // failure action rollback: the service returns to sleep by itself.
    t.ok(
        0,
        &[
            "service",
            "update",
            "-d",
            "--update-failure-action",
            "rollback",
            "--args",
            "sh -c 'exit 1'",
            "roll",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(90), || {
            let s = service(&t, 0, "roll");
            s["UpdateStatus"]["State"] == "rollback_completed" && running(&t, 0, "roll").len() == 3
        }),
        "{:#}",
        service(&t, 0, "roll")
    );
    let s = service(&t, 0, "roll");
    assert_eq!(
        s["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"][0], "sleep",
        "{s:#}"
    );
}

/// A task whose health check starts failing is failed and replaced; `ps` shows health.
#[test]
fn unhealthy_task_is_replaced() {
    let t = cluster("svc-health", 1, 0);
    create(
        &t,
        0,
        &[
            "--name",
            "hc",
            "--health-cmd",
            "test -f /tmp/ok",
            "--health-interval",
            "300ms",
            "--health-retries",
            "2",
            "--stop-grace-period",
            "0s",
            "busybox",
            "sh",
            "-c",
            "touch /tmp/ok; sleep 3; rm /tmp/ok; sleep 3600",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(30), || tasks(&t, 0, "hc")
            .iter()
            .any(|x| x["Status"]["Health"] == "healthy")),
        "{:#?}",
        tasks(&t, 0, "hc")
    );
    let ps = t.ok(0, &["service", "ps", "hc"]);
    assert!(ps.contains("(healthy)"), "{ps}");
    assert!(
        wait_until(Duration::from_secs(40), || {
            let all = tasks(&t, 0, "hc");
            all.iter().any(|x| x["Status"]["State"] == "failed")
                && all
                    .iter()
                    .any(|x| x["Status"]["State"] == "running" && x["DesiredState"] == "running")
        }),
        "{:#?}",
        tasks(&t, 0, "hc")
    );
}

/// Jobs run to completion and are not restarted; max-concurrent bounds the parallel tasks.
#[test]
fn jobs_run_to_completion() {
    let t = cluster("svc-jobs", 1, 1);
    create(
        &t,
        0,
        &[
            "--name",
            "batch",
            "--mode",
            "replicated-job",
            "--replicas",
            "4",
            "--max-concurrent",
            "2",
            "busybox",
            "sh",
            "-c",
            "sleep 1",
        ],
    );
    let mut max_live = 0;
    assert!(
        wait_until(Duration::from_secs(60), || {
            let all = tasks(&t, 0, "batch");
            let live = all
                .iter()
                .filter(|x| x["Status"]["State"] == "running")
                .count();
            max_live = max_live.max(live);
            all.iter()
                .filter(|x| x["Status"]["State"] == "complete")
                .count()
                == 4
        }),
        "{:#?}",
        tasks(&t, 0, "batch")
    );
    assert!(max_live <= 2, "max concurrent: {max_live}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        tasks(&t, 0, "batch").len(),
        4,
        "completed job tasks are not restarted"
    );
    let ls = t.ok(0, &["service", "ls"]);
    assert!(
        ls.contains("replicated job") && ls.contains("(4/4 completed)"),
        "{ls}"
    );
    create(
        &t,
        0,
        &[
            "--name",
            "everywhere",
            "--mode",
            "global-job",
            "busybox",
            "true",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(60), || tasks(&t, 0, "everywhere")
            .iter()
            .filter(|x| x["Status"]["State"] == "complete")
            .count()
            == 2),
        "{:#?}",
        tasks(&t, 0, "everywhere")
    );
}

/// `service logs` merges the output of tasks on several nodes with Docker's prefix.
#[test]
fn logs_from_several_nodes() {
    let t = cluster("svc-logs", 1, 1);
    create(
        &t,
        0,
        &[
            "--name",
            "talk",
            "--replicas",
            "2",
            "--stop-grace-period",
            "0s",
            "busybox",
            "sh",
            "-c",
            "echo hello from $(hostname); sleep 3600",
        ],
    );
    wait_running(&t, 0, "talk", 2, Duration::from_secs(60));
    assert_eq!(spread(&t, 0, "talk"), vec![1, 1]);
    assert!(
        wait_until(Duration::from_secs(20), || t
            .ok(0, &["service", "logs", "talk"])
            .lines()
            .filter(|l| l.contains("hello from"))
            .count()
            == 2),
        "{}",
        t.ok(0, &["service", "logs", "talk"])
    );
    let out = t.ok(0, &["service", "logs", "talk"]);
    for node in ["node0", "node1"] {
        assert!(
            out.lines().any(|l| l.starts_with("talk.")
                && l.contains(&format!("@{node}"))
                && l.contains("| hello from")),
            "{out}"
        );
    }
    let raw = t.ok(0, &["service", "logs", "--raw", "talk"]);
    assert!(raw.lines().all(|l| l.starts_with("hello from")), "{raw}");
}

/// A worker cut off from the managers keeps its tasks running; after healing, its agent
/// reconciles: the tasks are still the same (none ran twice, none was lost).
#[test]
fn cut_off_agent_keeps_tasks_and_reconciles() {
    let t = cluster("svc-cut", 1, 1);
    create(
        &t,
        0,
        &[
            "--name",
            "keep",
            "--replicas",
            "2",
            "--constraint",
            "node.role==worker",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    wait_running(&t, 0, "keep", 2, Duration::from_secs(60));
    let before: Vec<String> = containers(&t, 1, "keep.")
        .iter()
        .map(|c| c["ID"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(before.len(), 2);
    t.cut(1).expect("cut the worker off");
    // Long enough for the manager to mark it Down (3 × 1 s heartbeats) and more.
    std::thread::sleep(Duration::from_secs(6));
    let during = containers(&t, 1, "keep.");
    assert!(
        during.iter().filter(|c| c["State"] == "running").count() == 2,
        "tasks keep running while cut off: {during:?}"
    );
    t.heal(1).expect("heal");
    assert!(
        wait_until(Duration::from_secs(30), || running(&t, 0, "keep").len()
            == 2
            && nodes(&t, 0).iter().all(|n| n["Status"] == "Ready")),
        "{:#?}",
        tasks(&t, 0, "keep")
    );
    // No task runs twice and none is lost: exactly the two running tasks have running
    // containers on the worker (the only node the constraint allows).
    assert!(
        wait_until(Duration::from_secs(30), || {
            let live: Vec<String> = running(&t, 0, "keep")
                .iter()
                .map(|x| x["ID"].as_str().unwrap_or_default().to_owned())
                .collect();
            let on_node: Vec<String> = containers(&t, 1, "keep.")
                .iter()
                .filter(|c| c["State"] == "running")
                .map(|c| c["Names"].as_str().unwrap_or_default().to_owned())
                .collect();
            live.len() == 2
                && on_node.len() == 2
                && live
                    .iter()
                    .all(|id| on_node.iter().any(|n| n.ends_with(id.as_str())))
        }),
        "tasks {:#?} containers {:?}",
        tasks(&t, 0, "keep"),
        containers(&t, 1, "keep.")
    );
    eprintln!("containers before the cut: {before:?}");
}

/// An image imported on one node only runs on the others: they fetch it from the peer over
/// the cluster link (no registry exists here).
#[test]
fn image_imported_once_runs_everywhere() {
    let mut t = net("svc-image", 3);
    start_all(&mut t);
    init(&t, 0, &[]);
    let wt = token(&t, 0, "worker");
    join(&t, 1, 0, &wt);
    join(&t, 2, 0, &wt);
    import_busybox(&t, 0, busybox_archive());
    assert!(
        wait_until(Duration::from_secs(30), || nodes(&t, 0)
            .iter()
            .all(|n| n["Status"] == "Ready")),
        "nodes ready"
    );
    create(
        &t,
        0,
        &[
            "--name",
            "spread",
            "--replicas",
            "3",
            "--stop-grace-period",
            "0s",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    wait_running(&t, 0, "spread", 3, Duration::from_secs(90));
    assert_eq!(spread(&t, 0, "spread"), vec![1, 1, 1]);
    for i in 1..3 {
        let imgs = t.ok(i, &["image", "ls"]);
        assert!(imgs.contains("busybox"), "node{i}: {imgs}");
    }
}

/// `service pause` freezes every task's container (cgroup freezer) and `ps` says so;
/// `unpause` thaws them. `node ps` lists a node's tasks; `inspect --pretty` reads as
/// Docker's.
#[test]
fn pause_unpause_node_ps_and_inspect() {
    let t = cluster("svc-pause", 1, 0);
    create(
        &t,
        0,
        &[
            "--name",
            "frozen",
            "--replicas",
            "2",
            "--stop-grace-period",
            "0s",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    wait_running(&t, 0, "frozen", 2, Duration::from_secs(60));
    t.ok(0, &["service", "pause", "frozen"]);
    assert!(
        wait_until(Duration::from_secs(20), || running(&t, 0, "frozen")
            .iter()
            .all(|x| x["Status"]["Paused"] == true)),
        "{:#?}",
        tasks(&t, 0, "frozen")
    );
    let cs = containers(&t, 0, "frozen.");
    assert!(cs.iter().all(|c| c["State"] == "paused"), "{cs:?}");
    let ps = t.ok(0, &["service", "ps", "frozen"]);
    assert_eq!(ps.matches("(paused)").count(), 2, "{ps}");
    t.ok(0, &["service", "unpause", "frozen"]);
    assert!(
        wait_until(Duration::from_secs(20), || containers(&t, 0, "frozen.")
            .iter()
            .all(|c| c["State"] == "running")),
        "{:?}",
        containers(&t, 0, "frozen.")
    );
    assert!(
        wait_until(Duration::from_secs(20), || running(&t, 0, "frozen")
            .iter()
            .all(|x| x["Status"]["Paused"] != true)),
        "{:#?}",
        tasks(&t, 0, "frozen")
    );
    let nps = t.ok(0, &["node", "ps", "node0"]);
    assert!(
        nps.lines()
            .next()
            .is_some_and(|h| h.contains("DESIRED STATE")),
        "{nps}"
    );
    assert_eq!(nps.matches("frozen.").count(), 2, "{nps}");
    let pretty = t.ok(0, &["service", "inspect", "--pretty", "frozen"]);
    for want in [
        "ID:",
        "Name:\t\tfrozen",
        "Service Mode:\tReplicated",
        "Replicas:\t2",
        "Image:",
    ] {
        assert!(pretty.contains(want), "{want:?} in\n{pretty}");
    }
}

/// A task no node can take stays pending with the scheduler's explanation in `ps`
/// ERROR, and is placed as soon as a node qualifies.
#[test]
fn unschedulable_tasks_are_explained_then_placed() {
    let t = cluster("svc-sched", 1, 1);
    create(
        &t,
        0,
        &[
            "--name",
            "east",
            "--constraint",
            "node.labels.zone==east",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    let pending_err = || {
        tasks(&t, 0, "east")
            .first()
            .map(|x| (x["Status"]["State"].clone(), x["Status"]["Err"].clone()))
    };
    assert!(
        wait_until(Duration::from_secs(20), || {
            pending_err().is_some_and(|(s, e)| {
                s == "pending"
                    && e == "no suitable node (scheduling constraints not satisfied on 2 nodes)"
            })
        }),
        "{:?}",
        pending_err()
    );
    let ps = t.ok(0, &["service", "ps", "east"]);
    assert!(
        ps.contains("Pending") && ps.contains("\"no suitable node"),
        "{ps}"
    );
    let full = t.ok(0, &["service", "ps", "--no-trunc", "east"]);
    assert!(
        full.contains("\"no suitable node (scheduling constraints not satisfied on 2 nodes)\""),
        "{full}"
    );
    t.ok(0, &["node", "update", "--label-add", "zone=east", "node1"]);
    wait_running(&t, 0, "east", 1, Duration::from_secs(30));
    assert_eq!(spread(&t, 0, "east"), vec![0, 1]);
    // The label goes: the task no longer fits its node and is moved (here: nowhere).
    t.ok(0, &["node", "update", "--label-rm", "zone", "node1"]);
    assert!(
        wait_until(Duration::from_secs(30), || running(&t, 0, "east")
            .is_empty()
            && tasks(&t, 0, "east").iter().any(|x| x["Status"]["State"]
                == "pending"
                && x["DesiredState"] == "running")),
        "{:#?}",
        tasks(&t, 0, "east")
    );
    t.ok(0, &["node", "update", "--label-add", "zone=east", "node1"]);
    wait_running(&t, 0, "east", 1, Duration::from_secs(30));
    // Reservations no node can meet.
    create(
        &t,
        0,
        &[
            "--name",
            "huge",
            "--reserve-memory",
            "100T",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(20), || tasks(&t, 0, "huge")
            .first()
            .is_some_and(
                |x| x["Status"]["Err"] == "no suitable node (insufficient resources on 2 nodes)"
            )),
        "{:#?}",
        tasks(&t, 0, "huge")
    );
    // A spread preference over a label: zone a has one node, zone b one node → 2 and 2.
    t.ok(0, &["node", "update", "--label-add", "rack=a", "node0"]);
    t.ok(0, &["node", "update", "--label-add", "rack=b", "node1"]);
    create(
        &t,
        0,
        &[
            "--name",
            "racked",
            "--replicas",
            "4",
            "--placement-pref",
            "spread=node.labels.rack",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    wait_running(&t, 0, "racked", 4, Duration::from_secs(60));
    assert_eq!(spread(&t, 0, "racked"), vec![2, 2]);
    // At most one per node.
    create(
        &t,
        0,
        &[
            "--name",
            "solo",
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    wait_running(&t, 0, "solo", 2, Duration::from_secs(60));
    assert!(
        wait_until(Duration::from_secs(20), || tasks(&t, 0, "solo").iter().any(
            |x| x["Status"]["State"] == "pending"
                && x["Status"]["Err"]
                    .as_str()
                    .is_some_and(|e| e.contains("max replicas per node"))
        )),
        "{:#?}",
        tasks(&t, 0, "solo")
    );
}

/// `service logs -f` keeps printing new lines from every node.
#[test]
fn logs_follow() {
    use std::io::BufRead;
    let t = cluster("svc-logsf", 1, 1);
    create(
        &t,
        0,
        &[
            "--name",
            "ticker",
            "--replicas",
            "2",
            "--stop-grace-period",
            "0s",
            "busybox",
            "sh",
            "-c",
            "while true; do echo tick $(hostname); sleep 0.3; done",
        ],
    );
    wait_running(&t, 0, "ticker", 2, Duration::from_secs(60));
    let mut child = t
        .cli(0)
        .args(["service", "logs", "-f", "--tail", "0", "ticker"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs -f");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = std::collections::BTreeSet::new();
    while Instant::now() < deadline && seen.len() < 2 {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200))
            && l.contains("| tick ")
            && let Some(node) = l
                .split('@')
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
        {
            seen.insert(node.to_owned());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen.len(), 2, "followed lines from both nodes: {seen:?}");
}

/// The container flags reach the task's container: env (and env file), labels, workdir,
/// user, hostname template, volume and tmpfs mounts, read-only root, limits, capabilities,
/// entrypoint.
#[test]
fn container_flags_reach_the_task() {
    let t = cluster("svc-flags", 1, 0);
    let env_file = t.dir().join("svc.env");
    std::fs::write(&env_file, "FROM_FILE=yes\n# comment\n").unwrap();
    let env_file = env_file.to_str().unwrap().to_owned();
    create(
        &t,
        0,
        &[
            "--name",
            "flags",
            "--stop-grace-period",
            "0s",
            "-e",
            "GREETING=hi",
            "--env-file",
            &env_file,
            "--container-label",
            "tier=edge",
            "--label",
            "team=ops",
            "-w",
            "/data",
            "-u",
            "1000:1000",
            "--hostname",
            "{{.Service.Name}}-{{.Task.Slot}}",
            "--mount",
            "type=volume,source=flagsdata,target=/data",
            "--mount",
            "type=tmpfs,target=/scratch,tmpfs-size=1m",
            "--read-only",
            "--limit-memory",
            "32m",
            "--limit-pids",
            "50",
            "--cap-drop",
            "ALL",
            "--entrypoint",
            "sh",
            "busybox",
            "-c",
            "echo env=$GREETING/$FROM_FILE; echo id=$(id -u):$(id -g); echo host=$(hostname); echo pwd=$(pwd); \
             touch /rootfs-test 2>/dev/null && echo rw || echo ro; \
             grep -c ' /scratch ' /proc/mounts; \
             cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
             grep CapEff /proc/self/status; sleep 3600",
        ],
    );
    wait_running(&t, 0, "flags", 1, Duration::from_secs(60));
    let logs = || t.ok(0, &["service", "logs", "--raw", "flags"]);
    assert!(
        wait_until(Duration::from_secs(20), || logs().contains("CapEff")),
        "{}",
        logs()
    );
    let out = logs();
    for want in [
        "env=hi/yes",
        "id=1000:1000",
        "host=flags-1",
        "pwd=/data",
        "ro",
        "33554432",
        "CapEff:\t0000000000000000",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    let c = &containers(&t, 0, "flags.")[0];
    let labels = c["Labels"].as_str().unwrap_or_default();
    assert!(labels.contains("tier=edge"), "{labels}");
    assert!(
        labels.contains("com.docker.swarm.service.name=flags"),
        "{labels}"
    );
    let vols = t.ok(0, &["volume", "ls", "-q"]);
    assert!(vols.lines().any(|v| v == "flagsdata"), "{vols}");
}

/// A worker's daemon is killed and restarted: its agent re-adopts the running task
/// containers; nothing runs twice.
#[test]
fn restarted_worker_daemon_keeps_its_tasks() {
    let mut t = cluster("svc-restart-d", 1, 1);
    create(
        &t,
        0,
        &[
            "--name",
            "stay",
            "--replicas",
            "2",
            "--constraint",
            "node.role==worker",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    wait_running(&t, 0, "stay", 2, Duration::from_secs(60));
    let ids = |t: &TestNet| -> Vec<String> {
        let mut v: Vec<String> = containers(t, 1, "stay.")
            .iter()
            .filter(|c| c["State"] == "running")
            .map(|c| c["ID"].as_str().unwrap_or_default().to_owned())
            .collect();
        v.sort();
        v
    };
    let before = ids(&t);
    assert_eq!(before.len(), 2);
    t.kill9(1);
    t.restart(1).expect("restart the worker's daemon");
    assert!(
        wait_until(Duration::from_secs(30), || nodes(&t, 0)
            .iter()
            .all(|n| n["Status"] == "Ready")
            && running(&t, 0, "stay").len() == 2),
        "{:#?}",
        tasks(&t, 0, "stay")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ids(&t), before, "the same containers run, none twice");
    assert_eq!(running(&t, 0, "stay").len(), 2);
}

/// `service rollback` during a slow rolling update stops the update and returns to the
/// previous spec.
#[test]
fn rollback_during_an_update() {
    let t = cluster("svc-rb", 1, 0);
    create(
        &t,
        0,
        &[
            "--name",
            "slow",
            "--replicas",
            "3",
            "--stop-grace-period",
            "0s",
            "--update-delay",
            "30s",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    wait_running(&t, 0, "slow", 3, Duration::from_secs(60));
    t.ok(0, &["service", "update", "-d", "--env-add", "V=2", "slow"]);
    // One task updated, then the 30 s delay.
    assert!(
        wait_until(Duration::from_secs(30), || running(&t, 0, "slow")
            .iter()
            .filter(|x| x["Spec"]["ContainerSpec"]["Env"][0] == "V=2")
            .count()
            == 1),
        "{:#?}",
        tasks(&t, 0, "slow")
    );
    assert_eq!(service(&t, 0, "slow")["UpdateStatus"]["State"], "updating");
    let started = Instant::now();
    let out = t.ok(0, &["service", "rollback", "-d", "slow"]);
    assert!(out.contains("slow"), "{out}");
    assert!(
        wait_until(Duration::from_secs(25), || {
            let s = service(&t, 0, "slow");
            s["UpdateStatus"]["State"] == "rollback_completed"
                && running(&t, 0, "slow").len() == 3
                && running(&t, 0, "slow")
                    .iter()
                    .all(|x| x["Spec"]["ContainerSpec"].get("Env").is_none())
        }),
        "{:#}\n{:#?}",
        service(&t, 0, "slow"),
        tasks(&t, 0, "slow")
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the rollback did not wait out the update delay"
    );
}
