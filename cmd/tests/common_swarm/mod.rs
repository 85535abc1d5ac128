//! Helpers for multi-node tests: a cluster of real daemons in network namespaces
//! (testkit's `TestNet`), formed with the CLI, and readers of services and tasks through
//! the daemon's API.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use shoal_testkit::cluster::{TestNet, wait_until};

/// The cluster port every test node listens on.
pub const PORT: u16 = 4242;

/// A network of `n` namespaces with the shoal under test.
pub fn net(label: &str, n: usize) -> TestNet {
    TestNet::new(label, n)
        .expect("create the test network")
        .with_bin(Path::new(env!("CARGO_BIN_EXE_shoal")))
}

/// Starts every daemon.
pub fn start_all(t: &mut TestNet) {
    for i in 0..t.len() {
        t.start(i, &[]).expect("start daemon");
    }
}

/// `swarm init` on node `i` with a short heartbeat so tests see Down quickly.
pub fn init(t: &TestNet, i: usize, extra: &[&str]) -> String {
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

/// The join token of `role`, asked of `manager`.
pub fn token(t: &TestNet, manager: usize, role: &str) -> String {
    t.ok(manager, &["swarm", "join-token", "-q", role])
        .trim()
        .to_owned()
}

/// `swarm join` of node `i` through `manager`'s address; the CLI's output.
pub fn try_join(t: &TestNet, i: usize, manager: usize, token: &str) -> std::process::Output {
    let addr = t.addr(i, PORT);
    let remote = t.addr(manager, PORT);
    t.run(
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

/// `swarm join` that must succeed.
pub fn join(t: &TestNet, i: usize, manager: usize, token: &str) -> String {
    let o = try_join(t, i, manager, token);
    assert!(
        o.status.success(),
        "join of node{i} failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        t.daemon(i).log_tail(30)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `node ls` as JSON rows.
pub fn nodes(t: &TestNet, i: usize) -> Vec<Value> {
    let out = t.ok(i, &["node", "ls", "--format", "json"]);
    out.lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// Forms a cluster of `managers` managers and `workers` workers (node 0 initializes) and
/// waits until every node is Ready.
pub fn form(label: &str, managers: usize, workers: usize, extra_init: &[&str]) -> TestNet {
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

/// A GET on node `i`'s API, parsed.
pub fn get(t: &TestNet, i: usize, path: &str) -> Value {
    let (code, body) = t.daemon(i).api("GET", path, None).expect("api call");
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("json")
}

/// Every task of a service (by name), as Docker's API shows them.
pub fn tasks(t: &TestNet, i: usize, service: &str) -> Vec<Value> {
    let f = format!("{{\"service\":[\"{service}\"]}}");
    let path = format!("/tasks?filters={}", urlencode(&f));
    get(t, i, &path).as_array().cloned().unwrap_or_default()
}

/// Tasks of a service that run (desired and observed Running).
pub fn running(t: &TestNet, i: usize, service: &str) -> Vec<Value> {
    tasks(t, i, service)
        .into_iter()
        .filter(|x| x["DesiredState"] == "running" && x["Status"]["State"] == "running")
        .collect()
}

/// A service as Docker's API shows it.
pub fn service(t: &TestNet, i: usize, name: &str) -> Value {
    get(t, i, &format!("/services/{name}"))
}

/// Node ID → index in the TestNet (hostnames are `node<i>`).
pub fn node_index(t: &TestNet, i: usize, node_id: &str) -> Option<usize> {
    get(t, i, "/nodes")
        .as_array()?
        .iter()
        .find(|n| n["ID"] == node_id)?["Description"]["Hostname"]
        .as_str()?
        .strip_prefix("node")?
        .parse()
        .ok()
}

/// How many running tasks of a service each node index has.
pub fn spread(t: &TestNet, i: usize, service: &str) -> Vec<usize> {
    let mut counts = vec![0; t.len()];
    for task in running(t, i, service) {
        if let Some(n) = node_index(t, i, task["NodeID"].as_str().unwrap_or_default()) {
            counts[n] += 1;
        }
    }
    counts
}

/// Waits until `n` tasks of the service run.
pub fn wait_running(t: &TestNet, i: usize, service: &str, n: usize, within: Duration) {
    assert!(
        wait_until(within, || running(t, i, service).len() == n),
        "{n} running tasks of {service}: {:#?}",
        tasks(t, i, service)
    );
}

/// Imports busybox on node `i`.
pub fn import_busybox(t: &TestNet, i: usize, archive: &Path) {
    let out = t.ok(i, &["image", "import", archive.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: busybox:latest");
}

/// Containers (all) on node `i` whose name starts with `prefix`, as `ps` JSON rows.
pub fn containers(t: &TestNet, i: usize, prefix: &str) -> Vec<Value> {
    t.ok(i, &["ps", "-a", "--format", "json"])
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|c| c["Names"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .collect()
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
