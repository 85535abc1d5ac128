//! The multi-node harness on the real kernel: namespaces, veths and a bridge, UDP between
//! nodes, link cuts and nftables partitions, real `shoal` daemons in the namespaces, and
//! clean-up (also after a panic). Needs root; the daemon tests need the debug `shoal`
//! binary (`cargo build -p shoal`).

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use shoal_testkit::cluster::{Footprint, TestNet, shoal_bin, wait_until};
use shoal_testkit::images::ImageBuilder;

/// Generous: a positive check returns as soon as it holds; a loaded machine can stall.
const UP: Duration = Duration::from_secs(20);
const DOWN: Duration = Duration::from_millis(800);

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: the multi-node harness needs root (namespaces, links, nftables)");
        return false;
    }
    true
}

fn shoal() -> Option<PathBuf> {
    let bin = shoal_bin();
    if bin.is_none() {
        eprintln!(
            "SKIP: the shoal binary is missing (target/x86_64-unknown-linux-gnu/debug/shoal): \
             build it first with `cargo build -p shoal`"
        );
    }
    bin
}

/// Drops `net` and asserts nothing of it is left on the host.
fn drop_and_check(net: TestNet) {
    let fp = net.footprint();
    drop(net);
    assert_clean(&fp);
}

fn assert_clean(fp: &Footprint) {
    let left = fp.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    let links = cmd(Command::new("ip").args(["-o", "link"]));
    assert!(!links.contains(&fp.bridge), "{links}");
    let netns = cmd(Command::new("ip").arg("netns"));
    for p in &fp.netns {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(!netns.contains(&*name), "{netns}");
    }
}

fn cmd(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn reach(net: &TestNet, from: usize, to: usize, timeout: Duration) -> bool {
    net.udp_reachable(from, to, timeout).unwrap()
}

#[test]
fn namespaces_see_only_lo_and_eth0_with_their_address() {
    if !is_root() {
        return;
    }
    let net = TestNet::new("ifs", 3).unwrap();
    assert_eq!(net.len(), 3);
    let subnet = net.subnet();
    assert!(
        subnet.starts_with("10.") && subnet.ends_with(".0/24"),
        "{subnet}"
    );
    for i in 0..3 {
        let ns = net.netns_name(i).to_owned();
        let links = cmd(Command::new("ip").args(["-n", &ns, "-o", "link"]));
        let names: Vec<&str> = links
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap())
            .collect();
        assert_eq!(names, ["lo", "eth0"], "{links}");
        assert!(links.contains("lo: <LOOPBACK,UP"), "{links}");
        let addrs = cmd(Command::new("ip").args(["-n", &ns, "-o", "-4", "addr"]));
        let mut got: Vec<String> = addrs
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{} {}", f[1], f[3])
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "eth0 ".to_owned() + &format!("{}/24", net.ip(i)),
                "lo 127.0.0.1/8".into()
            ]
        );
        assert_eq!(net.ip(i).octets()[3], 10 + i as u8);
        // No default route: nothing leaves the test network.
        let routes = cmd(Command::new("ip").args(["-n", &ns, "-4", "route"]));
        assert!(!routes.contains("default"), "{routes}");
        assert_eq!(routes.lines().count(), 1, "{routes}");
        // exec() runs inside the namespace and nowhere else.
        let inside = cmd(net
            .exec(i, "ip")
            .unwrap()
            .args(["-o", "-4", "addr", "show", "eth0"]));
        assert!(inside.contains(&format!("{}/24", net.ip(i))), "{inside}");
        // The host end sits on the bridge.
        let veth = cmd(Command::new("ip").args(["-o", "link", "show", net.veth_name(i)]));
        assert!(
            veth.contains(&format!("master {}", net.bridge_name())),
            "{veth}"
        );
    }
    // The host's bridge holds .1.
    let br = cmd(Command::new("ip").args(["-o", "-4", "addr", "show", &net.bridge_name()]));
    assert!(br.contains(&format!("{}/24", net.bridge_ip())), "{br}");
    // A node's sockets live in its namespace: binding its address works there, not on a
    // peer's namespace.
    let ip0 = net.ip(0);
    assert!(
        net.in_netns(0, || UdpSocket::bind((ip0, 0)).is_ok())
            .unwrap()
    );
    assert!(
        !net.in_netns(1, || UdpSocket::bind((ip0, 0)).is_ok())
            .unwrap()
    );
    drop_and_check(net);
}

#[test]
fn udp_between_nodes_cut_heal_and_partition() {
    if !is_root() {
        return;
    }
    let net = TestNet::new("udp", 3).unwrap();
    for (a, b) in [(0, 1), (1, 0), (0, 2), (1, 2), (2, 1)] {
        assert!(reach(&net, a, b, UP), "{a} -> {b}");
    }

    // Cut node 1: it reaches nobody, the others still reach each other.
    net.cut(1).unwrap();
    assert!(!reach(&net, 0, 1, DOWN));
    assert!(!reach(&net, 1, 0, DOWN));
    assert!(!reach(&net, 2, 1, DOWN));
    assert!(reach(&net, 0, 2, UP));
    net.heal(1).unwrap();
    assert!(
        wait_until(UP, || reach(&net, 0, 1, DOWN)),
        "heal(1) did not restore 0 -> 1"
    );
    assert!(reach(&net, 1, 2, UP));

    // Partition {0} | {1, 2}.
    net.partition(&[0], &[1, 2]).unwrap();
    let tables = cmd(Command::new("nft").args(["list", "tables"]));
    assert!(
        tables
            .lines()
            .any(|l| l.trim() == format!("table {}", net.nft_table())),
        "{tables}"
    );
    for (a, b) in [(0, 1), (1, 0), (0, 2), (2, 0)] {
        assert!(!reach(&net, a, b, DOWN), "{a} -> {b} crosses the partition");
    }
    assert!(reach(&net, 1, 2, UP));
    assert!(reach(&net, 2, 1, UP));
    net.heal_partition().unwrap();
    let tables = cmd(Command::new("nft").args(["list", "tables"]));
    assert!(!tables.contains(&net.nft_table()), "{tables}");
    for (a, b) in [(0, 1), (1, 0), (0, 2), (2, 0)] {
        assert!(reach(&net, a, b, UP), "{a} -> {b} after heal_partition");
    }
    // Healing twice is fine; bad partitions are refused.
    net.heal_partition().unwrap();
    assert!(net.partition(&[0], &[0, 1]).is_err());
    assert!(net.partition(&[0], &[3]).is_err());
    assert!(net.partition(&[], &[1]).is_err());

    // Partitions add up: {0}|{1} then {1}|{2} leaves only 0 <-> 2.
    net.drop_between(&[0], &[1]).unwrap();
    net.drop_between(&[1], &[2]).unwrap();
    assert!(!reach(&net, 0, 1, DOWN));
    assert!(!reach(&net, 2, 1, DOWN));
    assert!(reach(&net, 0, 2, UP));
    drop_and_check(net);
}

#[test]
fn two_testnets_at_once_do_not_collide() {
    if !is_root() {
        return;
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| TestNet::new("a", 2).unwrap());
        let b = s.spawn(|| TestNet::new("b", 2).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.bridge_name(), b.bridge_name());
    assert_ne!(a.subnet(), b.subnet());
    assert_ne!(a.nft_table(), b.nft_table());
    for i in 0..2 {
        assert_ne!(a.netns_path(i), b.netns_path(i));
        assert_ne!(a.veth_name(i), b.veth_name(i));
        assert_ne!(a.ip(i), b.ip(i));
    }
    assert!(reach(&a, 0, 1, UP));
    assert!(reach(&b, 0, 1, UP));
    // A partition of one leaves the other alone.
    a.partition(&[0], &[1]).unwrap();
    assert!(!reach(&a, 0, 1, DOWN));
    assert!(reach(&b, 0, 1, UP));
    // One TestNet's node has no route to the other's.
    let other = b.addr(0, 9);
    let sent = a
        .in_netns(0, || {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.send_to(b"x", &other)
        })
        .unwrap();
    assert_eq!(
        sent.map_err(|e| e.raw_os_error()).unwrap_err(),
        Some(libc::ENETUNREACH)
    );
    let fa = a.footprint();
    drop(a);
    assert_clean(&fa);
    // b is unaffected by a's teardown.
    assert!(reach(&b, 1, 0, UP));
    drop_and_check(b);
}

#[test]
fn clean_up_after_a_panic() {
    if !is_root() {
        return;
    }
    let bin = shoal_bin();
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::panic::catch_unwind(move || {
        let mut net = TestNet::new("panic", 2).unwrap();
        net.partition(&[0], &[1]).unwrap();
        net.cut(1).unwrap();
        if let Some(bin) = bin {
            net = net.with_bin(bin);
            net.start(0, &[]).unwrap();
        } else {
            eprintln!("note: no shoal binary, the panic test runs without a daemon");
        }
        tx.send(net.footprint()).unwrap();
        panic!("deliberate panic with a live TestNet");
    });
    assert!(r.is_err());
    let fp = rx.recv().unwrap();
    assert_clean(&fp);
}

#[test]
fn daemons_run_in_their_namespaces() {
    if !is_root() {
        return;
    }
    let Some(bin) = shoal() else {
        return;
    };
    let mut net = TestNet::new("daemons", 3).unwrap().with_bin(&bin);
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for i in 0..3 {
        net.start(i, &[]).unwrap();
    }
    assert!(
        net.start(0, &[]).is_err(),
        "a second daemon on node0 was accepted"
    );
    let self_mnt = std::fs::metadata("/proc/self/ns/mnt").unwrap().ino();
    let self_net = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    for i in 0..3 {
        let name = net.ok(i, &["info", "--format", "{{.Name}}"]);
        assert_eq!(name.trim(), format!("node{i}"));
        assert!(!net.ok(i, &["version"]).is_empty());
        // In the node's network namespace, in the host's mount namespace (cgroups visible).
        let pid = net.daemon(i).pid().unwrap();
        let ns = |kind: &str| {
            std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
                .unwrap()
                .ino()
        };
        let pin = std::fs::metadata(net.netns_path(i)).unwrap().ino();
        assert_eq!(ns("net"), pin);
        assert_ne!(ns("net"), self_net);
        assert_eq!(ns("mnt"), self_mnt);
        let cg = net.ok(i, &["info", "--format", "{{.CgroupVersion}}"]);
        assert!(["1", "2"].contains(&cg.trim()), "{cg}");
        // Data and socket under the TestNet's directory.
        assert!(net.daemon(i).data.starts_with(net.dir()));
    }
    // The test's own hostname is untouched.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name
    );

    // A container runs on node1 (cgroups work from inside the namespace).
    let archive = net.dir().join("busybox.tar");
    ImageBuilder::busybox()
        .write_docker_archive(&archive, &["busybox:latest"], false)
        .unwrap();
    net.ok(1, &["image", "import", archive.to_str().unwrap()]);
    net.ok(1, &["run", "--rm", "busybox", "true"]);
    let o = net.run(1, &["run", "--rm", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");

    // kill9 + restart: same directories (the image is still there), same namespace, name.
    net.kill9(1);
    assert!(!net.run(1, &["version"]).status.success());
    net.restart(1).unwrap();
    assert_eq!(
        net.ok(1, &["info", "--format", "{{.Name}}"]).trim(),
        "node1"
    );
    let pid = net.daemon(1).pid().unwrap();
    assert_eq!(
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .unwrap()
            .ino(),
        std::fs::metadata(net.netns_path(1)).unwrap().ino()
    );
    assert!(net.ok(1, &["images", "-q"]).lines().count() >= 1);
    net.ok(1, &["run", "--rm", "busybox", "true"]);

    // A cut node's daemon still answers its (host-side) CLI.
    net.cut(2).unwrap();
    assert_eq!(
        net.ok(2, &["info", "--format", "{{.Name}}"]).trim(),
        "node2"
    );
    // Nodes reach each other's daemon addresses over the bridge (UDP probes).
    assert!(reach(&net, 0, 1, UP));
    assert!(!reach(&net, 0, 2, DOWN));

    // stop() drops a daemon; start() makes a new one.
    net.stop(0);
    net.start(0, &[]).unwrap();
    assert_eq!(
        net.ok(0, &["info", "--format", "{{.Name}}"]).trim(),
        "node0"
    );
    drop_and_check(net);
}

const HELPER_ENV: &str = "SHOAL_TESTNET_STALE_HELPER";

/// Run by `stale_testnets_are_reaped` in a child process, which it then SIGKILLs.
#[test]
#[ignore = "helper of stale_testnets_are_reaped, run by it in a child process"]
fn helper_hold_a_testnet_until_killed() {
    if std::env::var_os(HELPER_ENV).is_none() {
        eprintln!("SKIP: only meant to run as the child of stale_testnets_are_reaped");
        return;
    }
    let mut net = TestNet::new("stale", 2).unwrap();
    if let Some(bin) = shoal_bin() {
        net = net.with_bin(bin);
        net.start(0, &[]).unwrap();
    }
    net.partition(&[0], &[1]).unwrap();
    println!(
        "FOOTPRINT {}",
        serde_json::to_string(&net.footprint()).unwrap()
    );
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn stale_testnets_are_reaped() {
    if !is_root() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_hold_a_testnet_until_killed",
            "--nocapture",
        ])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut fp: Option<Footprint> = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(json) = line.strip_prefix("FOOTPRINT ") {
            fp = Some(serde_json::from_str(json).unwrap());
            break;
        }
    }
    let fp = match fp {
        Some(fp) => fp,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the helper printed no footprint");
        }
    };
    // Everything exists while its owner lives (and no TestNet::new reaps it)...
    assert!(
        std::path::Path::new("/sys/class/net")
            .join(&fp.bridge)
            .exists()
    );
    assert!(fp.netns.iter().all(|p| p.exists()));
    assert!(fp.dir.is_dir());
    if shoal_bin().is_some() {
        // Its daemon, orphaned by the kill, must go too.
        assert_eq!(fp.daemon_pids.len(), 1);
        assert!(std::path::Path::new(&format!("/proc/{}", fp.daemon_pids[0])).exists());
    }
    // ...then the owner dies without cleaning up (SIGKILL).
    child.kill().unwrap();
    child.wait().unwrap();
    // The next TestNet (of any test) tears it down.
    let net = TestNet::new("reaper", 1).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || fp.leftovers().is_empty()),
        "left behind by the killed process: {:?}",
        fp.leftovers()
    );
    drop_and_check(net);
}
