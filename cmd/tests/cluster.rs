//! Multi-node tests of the cluster core: real daemons in network namespaces (testkit's
//! `TestNet`), joined over QUIC with mutual TLS, state replicated with Raft.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_testkit::cluster::{TestNet, wait_until};

const PORT: u16 = 4242;

fn net(label: &str, n: usize) -> TestNet {
    TestNet::new(label, n)
        .expect("create the test network")
        .with_bin(Path::new(env!("CARGO_BIN_EXE_shoal")))
}

fn start_all(t: &mut TestNet) {
    for i in 0..t.len() {
        t.start(i, &[]).expect("start daemon");
    }
}

/// `swarm init` on node `i` with a short heartbeat so tests see Down quickly.
fn init(t: &TestNet, i: usize, extra: &[&str]) -> String {
    let addr = t.addr(i, PORT);
    let mut args = vec![
        "swarm",
        "init",
        "--advertise-addr",
        &addr,
        "--listen-addr",
        &addr,
        "--dispatcher-heartbeat",
        "1s",
    ];
    args.extend_from_slice(extra);
    t.ok(i, &args)
}

fn token(t: &TestNet, manager: usize, role: &str) -> String {
    t.ok(manager, &["swarm", "join-token", "-q", role])
        .trim()
        .to_owned()
}

fn join(t: &TestNet, i: usize, manager: usize, token: &str) -> String {
    let addr = t.addr(i, PORT);
    let remote = t.addr(manager, PORT);
    t.ok(
        i,
        &[
            "swarm",
            "join",
            "--token",
            token,
            "--advertise-addr",
            &addr,
            "--listen-addr",
            &addr,
            &remote,
        ],
    )
}

fn nodes(t: &TestNet, i: usize) -> Vec<Value> {
    let out = t.ok(i, &["node", "ls", "--format", "json"]);
    out.lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// Forms a cluster of `managers` managers and `workers` workers (node 0 initializes).
fn form(label: &str, managers: usize, workers: usize, extra_init: &[&str]) -> TestNet {
    let mut t = net(label, managers + workers);
    start_all(&mut t);
    init(&t, 0, extra_init);
    let mt = token(&t, 0, "manager");
    let wt = token(&t, 0, "worker");
    for i in 1..managers {
        let out = join(&t, i, 0, &mt);
        assert_eq!(out.trim(), "This node joined a swarm as a manager.");
    }
    for i in managers..managers + workers {
        let out = join(&t, i, 0, &wt);
        assert_eq!(out.trim(), "This node joined a swarm as a worker.");
    }
    let n = managers + workers;
    assert!(
        wait_until(Duration::from_secs(30), || {
            let ns = nodes(&t, 0);
            ns.len() == n && ns.iter().all(|x| x["Status"] == "Ready")
        }),
        "all nodes Ready: {:?}",
        nodes(&t, 0)
    );
    t
}

/// The index (in the TestNet) of the current leader, from a manager's `node ls`.
fn leader(t: &TestNet, ask: usize) -> Option<usize> {
    let out = t.run(
        ask,
        &["node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.ends_with(" Leader"))
        .and_then(|l| l.strip_prefix("node"))
        .and_then(|l| l.split(' ').next())
        .and_then(|i| i.parse().ok())
}

/// Issue 3: 3 managers + 2 workers form a cluster; every manager answers with the same
/// view (one Leader, two Reachable, five Ready nodes); workers refuse manager commands with
/// Docker's message; `info` has the Swarm section.
#[test]
fn three_managers_two_workers_form_a_cluster() {
    let t = form("form", 3, 2, &[]);
    for m in 0..3 {
        let ns = nodes(&t, m);
        assert_eq!(ns.len(), 5, "{ns:?}");
        let leaders = ns.iter().filter(|n| n["ManagerStatus"] == "Leader").count();
        assert_eq!(leaders, 1, "{ns:?}");
        assert!(
            wait_until(Duration::from_secs(10), || nodes(&t, m)
                .iter()
                .filter(|n| n["ManagerStatus"] == "Reachable")
                .count()
                == 2),
            "{:?}",
            nodes(&t, m)
        );
        // `*` marks the node the CLI talks to.
        let me: Vec<&Value> = ns.iter().filter(|n| n["Self"] == true).collect();
        assert_eq!(me.len(), 1);
        assert_eq!(me[0]["Hostname"], format!("node{m}"));
    }
    let table = t.ok(0, &["node", "ls"]);
    assert!(
        table.starts_with("ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n"),
        "{table}"
    );
    for w in 3..5 {
        let o = t.run(w, &["node", "ls"]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("This node is not a swarm manager"), "{err}");
    }
    let info = t.ok(1, &["info"]);
    assert!(info.contains(" Swarm: active"), "{info}");
    assert!(info.contains("  Is Manager: true"), "{info}");
    assert!(info.contains("  Managers: 3"), "{info}");
    assert!(info.contains("  Nodes: 5"), "{info}");
    let winfo = t.ok(4, &["info"]);
    assert!(winfo.contains("  Is Manager: false"), "{winfo}");
}

/// Issue 3: the leader is killed; another manager becomes leader and accepts writes; the old
/// leader is reported down/unreachable.
#[test]
fn killed_leader_is_replaced() {
    let mut t = form("failover", 3, 0, &[]);
    let old = leader(&t, 0).expect("a leader");
    let other = (old + 1) % 3;
    t.kill9(old);
    let started = Instant::now();
    let target = format!("node{other}");
    let mut wrote = false;
    while started.elapsed() < Duration::from_secs(20) {
        let o = t.run(
            other,
            &["node", "update", "--label-add", "after=failover", &target],
        );
        if o.status.success() {
            wrote = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(wrote, "no write accepted after the leader died");
    eprintln!("leader kill -> accepted write: {:?}", started.elapsed());
    let new = leader(&t, other).expect("a new leader");
    assert_ne!(new, old);
    let n: Value = serde_json::from_str(&t.ok(other, &["node", "inspect", &target])).unwrap();
    assert_eq!(n[0]["Spec"]["Labels"]["after"], "failover");
}
