//! Multi-node tests of the cluster core: real daemons in network namespaces (testkit's
//! `TestNet`), joined over QUIC with mutual TLS, state replicated with Raft.

mod common_swarm;

use std::path::Path;
use std::time::{Duration, Instant};

use common_swarm::*;
use serde_json::Value;
use shoal_testkit::cluster::{TestNet, wait_until};

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
/// leader is reported down and unreachable; the worker's agent follows the new leader (it
/// stays Ready well past the dispatcher's Down deadline).
#[test]
fn killed_leader_is_replaced() {
    let mut t = form("failover", 3, 1, &[]);
    let old = leader(&t, 0).expect("a leader");
    let other = (old + 1) % 3;
    t.kill9(old);
    let started = Instant::now();
    let target = format!("node{other}");
    write_label(&t, other, &target, "after=failover", 20);
    eprintln!("leader kill -> accepted write: {:?}", started.elapsed());
    let new = leader(&t, other).expect("a new leader");
    assert_ne!(new, old);
    assert_eq!(
        label_of(&t, new, &target, "after").as_deref(),
        Some("failover")
    );
    let gone = format!("node{old}");
    assert!(
        wait_until(Duration::from_secs(15), || {
            let n = inspect_node(&t, new, &gone);
            n["Status"]["State"] == "down" && n["ManagerStatus"]["Reachability"] == "unreachable"
        }),
        "{}",
        inspect_node(&t, new, &gone)
    );
    // Three heartbeat periods (1 s here) without a beat would make the worker Down.
    std::thread::sleep(Duration::from_secs(5));
    let w = inspect_node(&t, new, "node3");
    assert_eq!(w["Status"]["State"], "ready", "{w}");
    let table = t.ok(new, &["node", "ls"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains(&gone) && l.contains("Unreachable") && l.contains("Down")),
        "{table}"
    );
}

/// Issue 3: any number of managers: five join one at a time, and survive losing two of
/// them (the leader among them).
#[test]
fn five_managers_survive_two_failures() {
    let mut t = form("five", 5, 0, &[]);
    let ns = nodes(&t, 4);
    assert_eq!(
        ns.iter().filter(|n| n["ManagerStatus"] == "Leader").count(),
        1,
        "{ns:?}"
    );
    let old = leader(&t, 0).expect("a leader");
    let second = (old + 1) % 5;
    t.kill9(old);
    t.kill9(second);
    let alive: Vec<usize> = (0..5).filter(|i| *i != old && *i != second).collect();
    write_label(&t, alive[0], "node0", "survived=two", 20);
    for i in &alive {
        assert!(wait_until(Duration::from_secs(10), || label_of(
            &t, *i, "node0", "survived"
        )
        .as_deref()
            == Some("two")));
    }
    let i = info(&t, alive[1]);
    assert_eq!(i["Swarm"]["Managers"], 5, "{}", i["Swarm"]);
}

// ----- helpers for the tests below ----------------------------------------------------

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `GET /info` of node `i` (Docker's shape, with shoal's `Swarm.Raft` status).
fn info(t: &TestNet, i: usize) -> Value {
    let (code, body) = t.daemon(i).api("GET", "/info", None).expect("GET /info");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("info json")
}

fn inspect_node(t: &TestNet, i: usize, node: &str) -> Value {
    let v: Value =
        serde_json::from_str(&t.ok(i, &["node", "inspect", node])).expect("inspect json");
    v[0].clone()
}

fn label_of(t: &TestNet, i: usize, node: &str, key: &str) -> Option<String> {
    let o = t.run(i, &["node", "inspect", node]);
    if !o.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    v[0]["Spec"]["Labels"][key].as_str().map(str::to_owned)
}

/// Writes (retrying for up to `secs`) a label on `node` through manager `i`.
fn write_label(t: &TestNet, i: usize, node: &str, kv: &str, secs: u64) {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(secs), || {
        let o = t.run(i, &["node", "update", "--label-add", kv, node]);
        let ok = o.status.success();
        last = Some(o);
        ok
    });
    assert!(
        ok,
        "write {kv} via node{i}: {}",
        last.map(|o| stderr(&o)).unwrap_or_default()
    );
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Issue 3: the leader is cut off with no peer; the majority elects a new leader and
/// accepts writes; the old leader refuses writes quickly with the quorum message; after
/// healing it catches up with what the majority wrote and accepts writes again.
#[test]
fn partitioned_minority_refuses_writes_and_catches_up() {
    let t = form("partition", 3, 0, &[]);
    let old = leader(&t, 0).expect("a leader");
    let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    t.partition(&[old], &majority).expect("partition");

    let me = format!("node{old}");
    // Time the first refusal: right after the cut the old leader still believes it leads,
    // and must notice the lost quorum by itself.
    let started = Instant::now();
    let o = t.run(
        old,
        &["node", "update", "--label-add", "side=minority", &me],
    );
    let took = started.elapsed();
    assert!(!o.status.success(), "a write in the minority succeeded");
    let err = stderr(&o);
    assert!(err.contains("does not have a leader"), "{err}");
    assert!(err.contains("--force-new-cluster"), "{err}");
    assert!(took < Duration::from_secs(4), "the refusal took {took:?}");
    eprintln!("minority refused a write in {took:?}");

    let m = majority[0];
    write_label(&t, m, &me, "side=majority", 15);
    let new = leader(&t, m).expect("the majority has a leader");
    assert_ne!(new, old);
    // The majority sees the old leader as unreachable.
    assert!(
        wait_until(Duration::from_secs(10), || {
            inspect_node(&t, m, &me)["ManagerStatus"]["Reachability"] == "unreachable"
        }),
        "{:?}",
        inspect_node(&t, m, &me)
    );

    t.heal_partition().expect("heal");
    assert!(
        wait_until(Duration::from_secs(20), || label_of(&t, old, &me, "side")
            .as_deref()
            == Some("majority")),
        "the healed manager did not catch up: {:?}",
        label_of(&t, old, &me, "side")
    );
    write_label(&t, old, &me, "back=yes", 15);
    assert!(wait_until(Duration::from_secs(10), || {
        inspect_node(&t, m, &me)["ManagerStatus"]["Reachability"] == "reachable"
    }));
}

/// Issue 3: with a short snapshot interval and few entries kept for slow followers, a
/// manager that was down while the log moved past what the leader keeps catches up by
/// installing a snapshot.
#[test]
fn restarted_manager_catches_up_by_snapshot() {
    let mut t = form("snapshot", 3, 0, &["--snapshot-interval", "20"]);
    // Docker's API (not its CLI) sets the entries kept for slow followers.
    let sw: Value =
        serde_json::from_str(&t.daemon(0).api("GET", "/swarm", None).unwrap().1).unwrap();
    let version = sw["Version"]["Index"].as_u64().unwrap();
    let mut spec = sw["Spec"].clone();
    spec["Raft"]["LogEntriesForSlowFollowers"] = 5.into();
    let (code, body) = t
        .daemon(0)
        .api(
            "POST",
            &format!("/swarm/update?version={version}"),
            Some(&spec.to_string()),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");

    let l = leader(&t, 0).expect("a leader");
    let f = (l + 1) % 3;
    let f_last = info(&t, f)["Swarm"]["Raft"]["LastLogIndex"]
        .as_u64()
        .unwrap();
    t.kill9(f);
    let target = format!("node{l}");
    for i in 0..60 {
        write_label(&t, l, &target, &format!("n={i}"), 10);
    }
    let raft = info(&t, l)["Swarm"]["Raft"].clone();
    let purged = raft["PurgedIndex"].as_u64().unwrap();
    assert!(raft["SnapshotIndex"].as_u64().unwrap() > f_last, "{raft}");
    assert!(
        purged > f_last,
        "the leader kept the entries the follower lacks: {raft}, follower at {f_last}"
    );

    t.restart(f).expect("restart");
    assert!(
        wait_until(Duration::from_secs(30), || label_of(&t, f, &target, "n")
            .as_deref()
            == Some("59")),
        "the restarted manager did not catch up: {:?}",
        label_of(&t, f, &target, "n")
    );
    let fr = info(&t, f)["Swarm"]["Raft"].clone();
    assert!(
        fr["SnapshotIndex"].as_u64().unwrap() > f_last,
        "no snapshot installed: {fr}"
    );
    // And it takes part again: a write through it lands everywhere.
    write_label(&t, f, &target, "after=snapshot", 15);
    assert!(wait_until(Duration::from_secs(10), || {
        label_of(&t, (f + 1) % 3, &target, "after").as_deref() == Some("snapshot")
    }));
}

/// Issue 3: `join-token --rotate`: the old token is refused, the new one works, nodes that
/// joined with the old one are unaffected. A token pinning another CA is refused.
#[test]
fn join_token_rotation() {
    let mut t = net("tokens", 3);
    start_all(&mut t);
    init(&t, 0, &[]);
    let old = token(&t, 0, "worker");
    let manager_token = token(&t, 0, "manager");
    join(&t, 1, 0, &old);

    let out = t.ok(0, &["swarm", "join-token", "--rotate", "worker"]);
    assert!(
        out.contains("Successfully rotated worker join token."),
        "{out}"
    );
    let new = token(&t, 0, "worker");
    assert_ne!(new, old);
    assert_eq!(
        token(&t, 0, "manager"),
        manager_token,
        "the manager token changed too"
    );

    let refused = try_join(&t, 2, 0, &old);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("invalid join token"),
        "{}",
        stderr(&refused)
    );
    // The refused node is left as it was: not in a swarm.
    assert_eq!(info(&t, 2)["Swarm"]["LocalNodeState"], "inactive");

    // A token whose CA digest is not the cluster's: the joiner refuses the manager.
    let parts: Vec<&str> = new.split('-').collect();
    let mut digest: Vec<char> = parts[2].chars().collect();
    digest[0] = if digest[0] == 'a' { 'b' } else { 'a' };
    let forged = format!(
        "SWMTKN-1-{}-{}",
        digest.into_iter().collect::<String>(),
        parts[3]
    );
    let o = try_join(&t, 2, 0, &forged);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("CA does not match the join token"),
        "{}",
        stderr(&o)
    );

    join(&t, 2, 0, &new);
    assert!(wait_until(Duration::from_secs(15), || {
        let ns = nodes(&t, 0);
        ns.len() == 3 && ns.iter().all(|n| n["Status"] == "Ready")
    }));
    // node1 (old token) keeps heartbeating: still Ready several periods later.
    std::thread::sleep(Duration::from_secs(4));
    let n1 = inspect_node(&t, 0, "node1");
    assert_eq!(n1["Status"]["State"], "ready", "{n1}");
}

/// Issue 3: requests are authorised by the caller's certificate: a worker cannot call the
/// manager-only methods (raft, leader operations); a removed node's certificate is
/// refused; the removed node leaves the swarm.
#[test]
fn role_authorization() {
    use shoal_cluster::rpc::{code, method};
    use shoal_cluster::transport::{Endpoint, TlsMaterial, TransportError, handler_fn};

    let t = form("authz", 1, 2, &[]);
    let pki = |i: usize| t.daemon(i).data.join("swarm/pki");
    let worker = |i: usize| {
        TlsMaterial::from_pem(
            &std::fs::read_to_string(pki(i).join("ca.crt")).unwrap(),
            &std::fs::read_to_string(pki(i).join("node.crt")).unwrap(),
            &std::fs::read_to_string(pki(i).join("node.key")).unwrap(),
        )
        .expect("worker TLS material")
    };
    // A heartbeat as node `i`'s agent sends it (facts left out).
    let beat = |i: usize| {
        let crt = std::fs::read_to_string(pki(i).join("node.crt")).unwrap();
        let me = shoal_cluster::pki::identity_of_pem(&crt).unwrap();
        serde_json::to_vec(&shoal_cluster::rpc::HeartbeatRequest {
            node_id: me.node_id,
            role: shoal_store::model::Role::Worker,
            addr: t.addr(i, PORT),
            ..Default::default()
        })
        .unwrap()
    };
    let manager_addr: std::net::SocketAddr = t.addr(0, PORT).parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A client endpoint on the host's side of the test bridge (serves nothing).
    let client = |tls: TlsMaterial| {
        let local: std::net::SocketAddr = format!("{}:0", t.bridge_ip()).parse().unwrap();
        let nothing = handler_fn(|_, _, _| async { Ok(Vec::new()) });
        Endpoint::bind(local, Some(tls), nothing).unwrap()
    };
    let remote_code = |r: Result<Vec<u8>, TransportError>| match r {
        Err(TransportError::Remote { code, .. }) => code,
        other => panic!("expected a remote refusal, got {other:?}"),
    };
    rt.block_on(async {
        let ep = client(worker(1));
        let server = shoal_cluster::pki::MANAGER_SERVER_NAME;
        let raft = ep
            .call(manager_addr, server, method::RAFT, b"{}".to_vec())
            .await;
        assert_eq!(remote_code(raft), code::PERMISSION_DENIED);
        let op = ep
            .call(manager_addr, server, method::LEADER_OP, b"{}".to_vec())
            .await;
        assert_eq!(remote_code(op), code::PERMISSION_DENIED);
        // A worker may heartbeat for itself (its agent's next beat restores its facts),
        // but not for another node.
        let hb = ep
            .call(manager_addr, server, method::HEARTBEAT, beat(1))
            .await;
        assert!(hb.is_ok(), "{hb:?}");
        let mut other: Value = serde_json::from_slice(&beat(1)).unwrap();
        other["node_id"] = "someoneelse".into();
        let hb = ep
            .call(
                manager_addr,
                server,
                method::HEARTBEAT,
                other.to_string().into_bytes(),
            )
            .await;
        assert_eq!(remote_code(hb), code::PERMISSION_DENIED);
        ep.shutdown().await;
    });

    // node rm: an up node needs --force; then its certificate is refused.
    let o = t.run(0, &["node", "rm", "node2"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is not down and can't be removed"),
        "{}",
        stderr(&o)
    );
    let material = worker(2);
    let removed_beat = beat(2);
    t.ok(0, &["node", "rm", "--force", "node2"]);
    rt.block_on(async {
        let ep = client(material);
        let hb = ep
            .call(
                manager_addr,
                shoal_cluster::pki::MANAGER_SERVER_NAME,
                method::HEARTBEAT,
                removed_beat,
            )
            .await;
        assert_eq!(remote_code(hb), code::REMOVED);
        ep.shutdown().await;
    });
    // The removed node finds out and leaves; the others are untouched.
    assert!(
        wait_until(
            Duration::from_secs(15),
            || info(&t, 2)["Swarm"]["LocalNodeState"] == "inactive"
        ),
        "{}",
        info(&t, 2)["Swarm"]
    );
    assert_eq!(nodes(&t, 0).len(), 2);
    assert_eq!(inspect_node(&t, 0, "node1")["Status"]["State"], "ready");
}

/// Issue 3: `--autolock`: the raft data and keys are encrypted at rest; after a restart the
/// manager serves nothing until `swarm unlock` gets the right key; `unlock-key --rotate`
/// replaces the key; `swarm update --autolock=false` turns it off.
#[test]
fn autolock_across_restart() {
    let mut t = net("autolock", 1);
    start_all(&mut t);
    // A snapshot after every entry: the snapshot on disk must be sealed too, not just the log.
    let out = init(&t, 0, &["--autolock", "--snapshot-interval", "1"]);
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("SWMKEY-1-"))
        .unwrap_or_else(|| panic!("no unlock key in: {out}"))
        .to_owned();
    assert_eq!(t.ok(0, &["swarm", "unlock-key", "-q"]).trim(), key);
    let secret = "plaintext-canary-5d1f0c";
    // (Retried: the node's first heartbeats update the same object, and a write carrying
    // the version read just before is refused as out of sequence, as Docker's.)
    write_label(&t, 0, "node0", &format!("canary={secret}"), 10);
    // The snapshot holds the canary (the store applies the cluster's interval within a few
    // seconds of opening; a second write triggers it at the latest).
    assert!(
        wait_until(Duration::from_secs(15), || {
            let raft = &info(&t, 0)["Swarm"]["Raft"];
            let (snap, applied) = (raft["SnapshotIndex"].as_u64(), raft["LastApplied"].as_u64());
            if snap.is_some() && snap >= applied {
                return true;
            }
            // Any write will do; a refused one is simply tried again.
            let _ = t.run(0, &["node", "update", "--label-add", "nudge=1", "node0"]);
            false
        }),
        "no snapshot with the canary: {}",
        info(&t, 0)["Swarm"]["Raft"]
    );
    let swarm_dir = t.daemon(0).data.join("swarm");
    for f in files_under(&swarm_dir) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "{} holds plaintext",
            f.display()
        );
        assert!(
            !contains(&bytes, b"BEGIN EC PRIVATE KEY") && !contains(&bytes, b"BEGIN PRIVATE KEY"),
            "{} holds a plaintext private key",
            f.display()
        );
    }

    t.restart(0).expect("restart");
    assert_eq!(info(&t, 0)["Swarm"]["LocalNodeState"], "locked");
    let o = t.run(0, &["node", "ls"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("swarm unlock"), "{}", stderr(&o));
    let bad = "SWMKEY-1-7c37Cc8654o6p38HnroywCi19pllOnGtbdZEgtKxZu8";
    let o = t
        .daemon(0)
        .run_with_input(&["swarm", "unlock"], &format!("{bad}\n"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid key"), "{}", stderr(&o));
    let o = t
        .daemon(0)
        .run_with_input(&["swarm", "unlock"], &format!("{key}\n"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(label_of(&t, 0, "node0", "canary").as_deref(), Some(secret));

    // Rotation: the new key unlocks, the old one no longer does.
    let rotated = t
        .ok(0, &["swarm", "unlock-key", "--rotate", "-q"])
        .trim()
        .to_owned();
    assert_ne!(rotated, key);
    assert!(rotated.starts_with("SWMKEY-1-"));
    // The key store is re-wrapped by the manager shortly after the change.
    std::thread::sleep(Duration::from_secs(2));
    t.restart(0).expect("restart");
    let o = t
        .daemon(0)
        .run_with_input(&["swarm", "unlock"], &format!("{key}\n"));
    assert!(!o.status.success(), "the old key still unlocks");
    let o = t
        .daemon(0)
        .run_with_input(&["swarm", "unlock"], &format!("{rotated}\n"));
    assert!(o.status.success(), "{}", stderr(&o));

    // Autolock off: a restart needs no key.
    t.ok(0, &["swarm", "update", "--autolock=false"]);
    std::thread::sleep(Duration::from_secs(2));
    t.restart(0).expect("restart");
    assert_eq!(info(&t, 0)["Swarm"]["LocalNodeState"], "active");
    assert_eq!(label_of(&t, 0, "node0", "canary").as_deref(), Some(secret));
}

/// Issue 3: two of three managers die: writes fail fast with the quorum message while a
/// container keeps running; `swarm init --force-new-cluster` on the survivor recovers a
/// single-manager cluster with all state.
#[test]
fn force_new_cluster_recovers_the_last_manager() {
    let mut t = form("forcenew", 3, 0, &[]);
    write_label(&t, 0, "node0", "kept=yes", 10);
    // A container on the survivor, started before quorum is lost.
    let archive = t.dir().join("busybox.tar");
    shoal_testkit::images::ImageBuilder::busybox()
        .write_docker_archive(&archive, &["busybox:latest"], false)
        .unwrap();
    t.ok(0, &["image", "import", archive.to_str().unwrap()]);
    t.ok(
        0,
        &["run", "-d", "--name", "keeps", "busybox", "sleep", "1000"],
    );

    t.kill9(1);
    t.kill9(2);
    let started = Instant::now();
    let o = t.run(
        0,
        &["node", "update", "--label-add", "lost=quorum", "node0"],
    );
    let took = started.elapsed();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("does not have a leader"),
        "{}",
        stderr(&o)
    );
    assert!(took < Duration::from_secs(4), "the refusal took {took:?}");
    let state = t.ok(0, &["inspect", "-f", "{{.State.Status}}", "keeps"]);
    assert_eq!(state.trim(), "running");

    let addr = t.addr(0, PORT);
    let out = t.ok(
        0,
        &[
            "swarm",
            "init",
            "--force-new-cluster",
            "--advertise-addr",
            &addr,
            "--listen-addr",
            &addr,
        ],
    );
    assert!(out.contains("Swarm initialized"), "{out}");
    assert_eq!(label_of(&t, 0, "node0", "kept").as_deref(), Some("yes"));
    write_label(&t, 0, "node0", "after=recovery", 10);
    let ns = nodes(&t, 0);
    assert_eq!(
        ns.iter().filter(|n| n["ManagerStatus"] == "Leader").count(),
        1,
        "{ns:?}"
    );
    let i = info(&t, 0);
    assert_eq!(i["Swarm"]["Managers"], 1, "{}", i["Swarm"]);
    let state = t.ok(0, &["inspect", "-f", "{{.State.Status}}", "keeps"]);
    assert_eq!(state.trim(), "running");
    t.ok(0, &["rm", "-f", "keeps"]);
}

/// Issue 3: promote/demote and removal rules, as Docker's: the last manager cannot be
/// demoted; a promoted worker becomes a manager that serves the CLI; a manager must be
/// demoted before removal; a manager leaving needs --force.
#[test]
fn promote_demote_and_remove() {
    let t = form("roles", 1, 2, &[]);
    let o = t.run(0, &["node", "demote", "node0"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("last manager of the swarm"),
        "{}",
        stderr(&o)
    );

    let out = t.ok(0, &["node", "promote", "node1"]);
    assert!(
        out.contains("Node node1 promoted to a manager in the swarm."),
        "{out}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            t.run(1, &["node", "ls"]).status.success()
                && inspect_node(&t, 0, "node1")["ManagerStatus"]["Reachability"] == "reachable"
        }),
        "node1 did not become a manager: {}",
        t.daemon(1).log_tail(30)
    );
    // Its certificate now says manager.
    let crt = std::fs::read_to_string(t.daemon(1).data.join("swarm/pki/node.crt")).unwrap();
    let id = shoal_cluster::pki::identity_of_pem(&crt).unwrap();
    assert_eq!(format!("{:?}", id.role), "Manager");

    let o = t.run(0, &["node", "rm", "--force", "node1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("must be demoted to worker before removal"),
        "{}",
        stderr(&o)
    );
    let o = t.run(1, &["swarm", "leave"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Use `--force` to suppress this message"),
        "{}",
        stderr(&o)
    );

    let out = t.ok(1, &["node", "demote", "node1"]);
    assert!(out.contains("Manager node1 demoted in the swarm."), "{out}");
    assert!(
        wait_until(Duration::from_secs(30), || !t
            .run(1, &["node", "ls"])
            .status
            .success()),
        "node1 still serves manager commands"
    );
    assert!(wait_until(Duration::from_secs(15), || {
        inspect_node(&t, 0, "node1")["Spec"]["Role"] == "worker"
            && inspect_node(&t, 0, "node1")["Status"]["State"] == "ready"
    }));
    let o = t.run(1, &["node", "ls"]);
    assert!(
        stderr(&o).contains("This node is not a swarm manager"),
        "{}",
        stderr(&o)
    );
    // The role change re-issued its certificate as a worker's.
    assert!(
        wait_until(Duration::from_secs(15), || {
            let crt = std::fs::read_to_string(t.daemon(1).data.join("swarm/pki/node.crt"))
                .unwrap_or_default();
            shoal_cluster::pki::identity_of_pem(&crt)
                .is_ok_and(|id| format!("{:?}", id.role) == "Worker")
        }),
        "node1 still holds a manager certificate"
    );

    // A worker leaves; once Down it can be removed without --force.
    t.ok(2, &["swarm", "leave"]);
    assert!(
        wait_until(
            Duration::from_secs(15),
            || inspect_node(&t, 0, "node2")["Status"]["State"] == "down"
        ),
        "{}",
        inspect_node(&t, 0, "node2")
    );
    t.ok(0, &["node", "rm", "node2"]);
    assert_eq!(nodes(&t, 0).len(), 2);
}

/// Issue 3: `swarm ca --rotate` replaces the root CA without downtime: every node gets a
/// certificate from the new root, keeps talking throughout, and the join tokens pin the
/// new CA.
#[test]
fn ca_rotation_keeps_the_cluster_up() {
    let t = form("carotate", 2, 1, &[]);
    let before = token(&t, 0, "worker");
    let old_root = std::fs::read_to_string(t.daemon(2).data.join("swarm/pki/ca.crt")).unwrap();
    let out = t.ok(0, &["swarm", "ca", "--rotate"]);
    assert!(out.contains("BEGIN CERTIFICATE"), "{out}");
    let after = token(&t, 0, "worker");
    assert_ne!(
        before.split('-').nth(2),
        after.split('-').nth(2),
        "tokens still pin the old CA"
    );
    let new_root = std::fs::read_to_string(t.daemon(2).data.join("swarm/pki/ca.crt")).unwrap();
    assert_ne!(
        old_root, new_root,
        "the worker still trusts only the old root"
    );
    let sw: Value =
        serde_json::from_str(&t.daemon(0).api("GET", "/swarm", None).unwrap().1).unwrap();
    assert_eq!(sw["RootRotationInProgress"], false);
    for i in 0..3 {
        let crt = std::fs::read_to_string(t.daemon(i).data.join("swarm/pki/node.crt")).unwrap();
        assert!(
            shoal_cluster::pki::issued_by(&crt, sw["TLSInfo"]["TrustRoot"].as_str().unwrap()),
            "node{i} has no certificate from the new root"
        );
    }
    let ns = nodes(&t, 1);
    assert!(ns.iter().all(|n| n["Status"] == "Ready"), "{ns:?}");
    write_label(&t, 1, "node2", "rotated=yes", 10);
}

/// Issue 3: `swarm init` / `swarm update` settings: bad values are refused with Swarm's
/// message and change nothing; good ones show in `info`'s Swarm section.
#[test]
fn swarm_settings_are_validated_and_shown() {
    let mut t = net("settings", 1);
    t.start(0, &["--label", "zone=edge-a"])
        .expect("start daemon");
    let addr = t.addr(0, PORT);
    let o = t.run(
        0,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &addr,
            "--listen-addr",
            &addr,
            "--cert-expiry",
            "30m",
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("minimum certificate expiry time is: 1h0m0s"),
        "{}",
        stderr(&o)
    );
    assert_eq!(info(&t, 0)["Swarm"]["LocalNodeState"], "inactive");

    init(
        &t,
        0,
        &[
            "--cert-expiry",
            "48h",
            "--snapshot-interval",
            "1234",
            "--task-history-limit",
            "3",
            "--default-addr-pool",
            "10.20.0.0/16",
            "--default-addr-pool-mask-length",
            "26",
        ],
    );
    let text = t.ok(0, &["info"]);
    for want in [
        "   Snapshot Interval: 1234",
        "   Task History Retention Limit: 3",
        "   Heartbeat Period: 1 second",
        "   Expiry Duration: 2 days",
        "  Default Address Pool: 10.20.0.0/16",
        "  SubnetSize: 26",
        &format!("   {addr}"),
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    let o = t.run(0, &["swarm", "update", "--cert-expiry", "10m"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("minimum certificate expiry time is: 1h0m0s"),
        "{}",
        stderr(&o)
    );
    t.ok(0, &["swarm", "update", "--dispatcher-heartbeat", "3s"]);
    let text = t.ok(0, &["info"]);
    assert!(text.contains("   Heartbeat Period: 3 seconds"), "{text}");
    assert!(text.contains("   Expiry Duration: 2 days"), "{text}");
    // Node facts: the engine's labels (daemon --label) and the kernel's hostname.
    let me = inspect_node(&t, 0, "self");
    assert_eq!(
        me["Description"]["Engine"]["Labels"]["zone"], "edge-a",
        "{me}"
    );
    assert_eq!(me["Description"]["Hostname"], "node0", "{me}");
    assert!(text.contains(" Labels:\n  zone=edge-a\n"), "{text}");
    // Availability, as Docker's.
    t.ok(0, &["node", "update", "--availability", "drain", "self"]);
    assert_eq!(inspect_node(&t, 0, "self")["Spec"]["Availability"], "drain");
    let row = t.ok(0, &["node", "ls", "--format", "{{.Availability}}"]);
    assert_eq!(row.trim(), "Drain");
    let o = t.run(0, &["node", "update", "--availability", "sleepy", "self"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("sleepy"), "{}", stderr(&o));
    assert_eq!(inspect_node(&t, 0, "self")["Spec"]["Availability"], "drain");
    // The node certificate follows the configured expiry (48 h, give or take the skew).
    let crt = std::fs::read_to_string(t.daemon(0).data.join("swarm/pki/node.crt")).unwrap();
    let (nb, na) = shoal_cluster::pki::validity_of_pem(&crt).unwrap();
    let hours = (na - nb).num_minutes() as f64 / 60.0;
    assert!(
        (47.9..=48.1).contains(&hours),
        "certificate valid for {hours} h"
    );
}

/// Issue 3: a manager that joined (its endpoint was bound before it had a certificate) and
/// restarts is reached again at once: its stateless resets end the leader's connection to
/// its previous incarnation, instead of the leader waiting for the QUIC idle timeout.
/// Writes through a follower are visible on that follower when the command returns.
#[test]
fn restarted_joined_manager_is_reached_at_once() {
    let mut t = form("redial", 3, 0, &[]);
    let l = leader(&t, 0).expect("a leader");
    let f = (1..3).find(|i| *i != l).expect("a joined follower");
    let target = format!("node{l}");
    // Warm the leader's connection to f.
    write_label(&t, l, &target, "warm=1", 10);
    t.restart(f).expect("restart");
    let started = Instant::now();
    write_label(&t, l, &target, "after=restart", 10);
    assert!(
        wait_until(Duration::from_secs(20), || label_of(
            &t, f, &target, "after"
        )
        .as_deref()
            == Some("restart")),
        "the restarted manager never caught up"
    );
    let took = started.elapsed();
    eprintln!("restarted manager caught up {took:?} after its restart");
    assert!(
        took < Duration::from_secs(4),
        "the leader reached the restarted manager only after {took:?}"
    );

    // Read your writes on a follower, many times in a row.
    let other = (0..3).find(|i| *i != l && *i != f).unwrap();
    for i in 0..20 {
        t.ok(
            other,
            &[
                "node",
                "update",
                "--label-add",
                &format!("seq={i}"),
                &target,
            ],
        );
        assert_eq!(label_of(&t, other, &target, "seq"), Some(i.to_string()));
    }
}
