//! A multi-node test network on one host, for cluster tests with real daemons.
//!
//! [`TestNet::new`] makes a Linux bridge on the host (`sh<4 hex>`, holding `.1` of a /24
//! unique to this TestNet), `n` network namespaces pinned at `/run/netns/shoal-<hex>-<i>`
//! (so `ip -n` works on them), and one veth pair per node: the host end `sh<hex>n<i>` on the
//! bridge, the other end `eth0` in the namespace with address `.10+i`. Namespaces have
//! loopback up and **no default route**: traffic stays between the nodes (and the host's
//! bridge address).
//!
//! [`TestNet::start`] runs the real `shoal daemon` in node `i`'s network namespace and in a
//! new UTS namespace named `node<i>`, through the single-daemon harness ([`Daemon`]): the
//! daemon keeps the host's mounts (cgroups stay visible), its socket lives on the host
//! filesystem and the CLI runs on the host.
//!
//! Failures to inject: [`TestNet::kill9`] / [`TestNet::restart`] a daemon,
//! [`TestNet::cut`] / [`TestNet::heal`] a node's link (host end down/up: the node loses every
//! peer), [`TestNet::partition`] / [`TestNet::heal_partition`] two groups of nodes with an
//! nftables table of the `bridge` family on the host (frames between the groups' bridge
//! ports are dropped: IPv4, IPv6 and ARP alike).
//!
//! Unique names come from the bridge: creating link `sh<hex>` is atomic, so whoever creates
//! it owns that id, its subnet `10.<128 + hex/256>.<hex%256>.0/24`, its namespaces and its
//! nft table `bridge shoal_<hex>`. TestNets in parallel tests or parallel test processes
//! therefore never collide. The bridge's alias records the owning pid and directory: a
//! later [`TestNet::new`] tears down what a killed test process left behind.
//!
//! Dropping a TestNet (also while a test panics) removes the partition table, drops the
//! daemons (removing their containers), kills any process left in its namespaces, deletes
//! the veths, the bridge and the namespaces, and its temporary directory.

use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use rustix::mount::UnmountFlags;
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use crate::daemon::{Daemon, DaemonOptions, enter_namespaces};

/// Where namespaces are pinned (as `ip netns add` does), so `ip -n NAME` reaches them.
const NETNS_DIR: &str = "/run/netns";
/// First word of the bridge alias marking a TestNet's bridge.
const ALIAS_TAG: &str = "shoal-testnet";
/// Ids are 15 bits: the subnet is `10.<128 + id / 256>.<id % 256>.0/24`.
const ID_SPACE: u32 = 0x8000;
/// Most nodes one TestNet holds (addresses `.10` to `.209`).
const MAX_NODES: usize = 200;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A bridge, `n` network namespaces wired to it, and the daemons started in them.
pub struct TestNet {
    id: u16,
    label: String,
    bin: PathBuf,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

struct Node {
    netns_name: String,
    netns: PathBuf,
    veth: String,
    ip: Ipv4Addr,
    daemon: Option<Daemon>,
}

/// Everything a TestNet creates on the host, captured before it is dropped, to check that
/// nothing is left afterwards ([`Footprint::leftovers`]). Serializable, to hand it over
/// from a child process.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Footprint {
    pub bridge: String,
    pub veths: Vec<String>,
    pub netns: Vec<PathBuf>,
    /// nsfs inode numbers of the namespaces: a process still in one is a leftover.
    pub netns_inodes: Vec<u64>,
    /// `bridge <name>` of the partition table.
    pub nft_table: String,
    pub dir: PathBuf,
    /// Pids of the daemons running when the footprint was taken.
    pub daemon_pids: Vec<u32>,
}

impl Footprint {
    /// What still exists of the TestNet, described (empty when all is gone).
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for link in std::iter::once(&self.bridge).chain(&self.veths) {
            if link_exists(link) {
                left.push(format!("link {link}"));
            }
        }
        for ns in &self.netns {
            if ns.exists() {
                left.push(format!("netns pin {}", ns.display()));
            }
        }
        match Command::new("nft").args(["list", "tables"]).output() {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout);
                if text
                    .lines()
                    .any(|l| l.trim() == format!("table {}", self.nft_table))
                {
                    left.push(format!("nft table {}", self.nft_table));
                }
            }
            Err(e) => left.push(format!("cannot run nft list tables: {e}")),
        }
        if self.dir.exists() {
            left.push(format!("directory {}", self.dir.display()));
        }
        for pid in &self.daemon_pids {
            if process_alive(*pid as i32) {
                left.push(format!("daemon process {pid}"));
            }
        }
        for pid in pids_in_netns(&self.netns_inodes) {
            left.push(format!("process {pid} in a test namespace"));
        }
        left
    }
}

impl TestNet {
    /// Creates the bridge and `n` wired namespaces. `label` only names the temporary
    /// directory (`shoal-net-<label>-…`) and the bridge alias, to tell TestNets apart when
    /// debugging. The `shoal` binary defaults to [`shoal_bin`]; see [`TestNet::with_bin`].
    pub fn new(label: &str, n: usize) -> Result<TestNet> {
        ensure!(
            n <= MAX_NODES,
            "a TestNet holds at most {MAX_NODES} nodes, not {n}"
        );
        reap_stale();
        let label: String = label
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(16)
            .collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-net-{label}-"))
            .tempdir()
            .context("cannot create the TestNet directory")?;
        let id = claim_bridge(&label, dir.path())?;
        // From here on, Drop removes whatever exists, also after an error below.
        let mut net = TestNet {
            id,
            label,
            bin: shoal_bin().unwrap_or_else(default_bin_path),
            nodes: Vec::with_capacity(n),
            dir,
        };
        for i in 0..n {
            net.add_node(i)?;
        }
        Ok(net)
    }

    /// Uses `bin` as the `shoal` binary (e.g. `env!("CARGO_BIN_EXE_shoal")` in the cmd
    /// crate's tests).
    pub fn with_bin(mut self, bin: impl Into<PathBuf>) -> TestNet {
        self.bin = bin.into();
        self
    }

    fn add_node(&mut self, i: usize) -> Result<()> {
        let hex = self.hex();
        let octets = self.subnet_octets();
        let node = Node {
            netns_name: format!("shoal-{hex}-{i}"),
            netns: Path::new(NETNS_DIR).join(format!("shoal-{hex}-{i}")),
            veth: format!("sh{hex}n{i}"),
            ip: Ipv4Addr::new(octets[0], octets[1], octets[2], 10 + i as u8),
            daemon: None,
        };
        let (netns_name, netns, veth, ip) = (
            node.netns_name.clone(),
            node.netns.clone(),
            node.veth.clone(),
            node.ip,
        );
        self.nodes.push(node);
        create_netns(&netns)?;
        ip_batch(
            None,
            &[
                format!("link add {veth} type veth peer name eth0 netns {netns_name}"),
                format!("link set {veth} master {} up", self.bridge_name()),
            ],
        )?;
        ip_batch(
            Some(&netns_name),
            &[
                "link set lo up".to_owned(),
                format!("addr add {ip}/24 dev eth0"),
                "link set eth0 up".to_owned(),
            ],
        )
    }

    fn hex(&self) -> String {
        format!("{:04x}", self.id)
    }

    fn subnet_octets(&self) -> [u8; 3] {
        subnet_of(self.id)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the TestNet has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The label given to [`TestNet::new`] (sanitized).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The TestNet's temporary directory (daemons' directories live in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `shoal` binary daemons are started from.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Node `i`'s address (`10.x.y.(10+i)`). Panics when `i` is out of range.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.nodes[i].ip
    }

    /// `"<ip(i)>:<port>"`.
    pub fn addr(&self, i: usize, port: u16) -> String {
        format!("{}:{port}", self.ip(i))
    }

    /// The host's address on the bridge (`.1`).
    pub fn bridge_ip(&self) -> Ipv4Addr {
        let o = self.subnet_octets();
        Ipv4Addr::new(o[0], o[1], o[2], 1)
    }

    /// The TestNet's subnet in CIDR notation (`10.x.y.0/24`).
    pub fn subnet(&self) -> String {
        let o = self.subnet_octets();
        format!("{}.{}.{}.0/24", o[0], o[1], o[2])
    }

    /// The host bridge's name.
    pub fn bridge_name(&self) -> String {
        format!("sh{}", self.hex())
    }

    /// Host end of node `i`'s veth pair.
    pub fn veth_name(&self, i: usize) -> &str {
        &self.nodes[i].veth
    }

    /// Node `i`'s namespace name, for `ip -n NAME …`.
    pub fn netns_name(&self, i: usize) -> &str {
        &self.nodes[i].netns_name
    }

    /// Node `i`'s namespace file (`/run/netns/NAME`), for `nsenter --net=PATH`.
    pub fn netns_path(&self, i: usize) -> &Path {
        &self.nodes[i].netns
    }

    /// The nftables table partitions live in (`bridge shoal_<hex>`), as `nft` names it.
    pub fn nft_table(&self) -> String {
        format!("bridge shoal_{}", self.hex())
    }

    /// What this TestNet made on the host, for checking clean-up after it is dropped.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            bridge: self.bridge_name(),
            veths: self.nodes.iter().map(|n| n.veth.clone()).collect(),
            netns: self.nodes.iter().map(|n| n.netns.clone()).collect(),
            netns_inodes: self
                .nodes
                .iter()
                .filter_map(|n| fs::metadata(&n.netns).ok().map(|m| m.ino()))
                .collect(),
            nft_table: self.nft_table(),
            dir: self.dir.path().to_owned(),
            daemon_pids: self
                .nodes
                .iter()
                .filter_map(|n| n.daemon.as_ref().and_then(Daemon::pid))
                .collect(),
        }
    }

    // ----- daemons -----------------------------------------------------------------------

    /// Starts `shoal daemon <extra_args>` in node `i` (hostname `node<i>`), waiting until it
    /// is ready. Fails if one already runs there.
    pub fn start(&mut self, i: usize, extra_args: &[&str]) -> Result<()> {
        self.start_with(
            i,
            DaemonOptions {
                args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
                ..DaemonOptions::default()
            },
        )
    }

    /// [`TestNet::start`] with full options; `netns` and `root_in` are set by the TestNet,
    /// `hostname` defaults to `node<i>`.
    pub fn start_with(&mut self, i: usize, mut opts: DaemonOptions) -> Result<()> {
        ensure!(
            i < self.nodes.len(),
            "no node {i} (the TestNet has {})",
            self.nodes.len()
        );
        ensure!(
            self.bin.is_file(),
            "the shoal binary {} is missing: build it first (cargo build -p shoal)",
            self.bin.display()
        );
        ensure!(
            self.nodes[i].daemon.is_none(),
            "node{i} already runs a daemon"
        );
        opts.netns = Some(self.nodes[i].netns.clone());
        opts.hostname.get_or_insert_with(|| format!("node{i}"));
        opts.root_in = Some(self.dir.path().to_owned());
        let d = Daemon::start_with(&self.bin, opts).with_context(|| format!("starting node{i}"))?;
        self.nodes[i].daemon = Some(d);
        Ok(())
    }

    /// Node `i`'s daemon. Panics if none was started.
    pub fn daemon(&self, i: usize) -> &Daemon {
        match &self.nodes[i].daemon {
            Some(d) => d,
            None => panic!("node{i} runs no daemon: call start({i}, …) first"),
        }
    }

    /// Node `i`'s daemon, mutable. Panics if none was started.
    pub fn daemon_mut(&mut self, i: usize) -> &mut Daemon {
        match &mut self.nodes[i].daemon {
            Some(d) => d,
            None => panic!("node{i} runs no daemon: call start({i}, …) first"),
        }
    }

    /// A `shoal` CLI command (on the host) aimed at node `i`'s daemon.
    pub fn cli(&self, i: usize) -> Command {
        self.daemon(i).cli()
    }

    /// Runs the CLI against node `i` and returns its output.
    pub fn run(&self, i: usize, args: &[&str]) -> Output {
        self.daemon(i).run(args)
    }

    /// Runs the CLI against node `i`, panics (with the output and the daemon's log) unless
    /// it succeeds; returns stdout.
    pub fn ok(&self, i: usize, args: &[&str]) -> String {
        self.daemon(i).ok(args)
    }

    /// SIGKILLs node `i`'s daemon (its containers keep running).
    pub fn kill9(&mut self, i: usize) {
        self.daemon_mut(i).kill9();
    }

    /// Starts node `i`'s daemon again: same binary, arguments, directories, namespace and
    /// hostname (a running one is SIGKILLed first).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.daemon_mut(i)
            .restart(None)
            .with_context(|| format!("restarting node{i}"))
    }

    /// Stops node `i`'s daemon for good (as dropping it does: its containers are removed,
    /// it gets SIGTERM). [`TestNet::start`] may start a new one, on new directories.
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].daemon.take();
    }

    // ----- inside the namespaces ---------------------------------------------------------

    /// A command that runs `program` inside node `i`'s network namespace (only that
    /// namespace: mounts, hostname and cgroups are the host's).
    pub fn exec(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        let ns = File::open(&self.nodes[i].netns)
            .with_context(|| format!("cannot open {}", self.nodes[i].netns.display()))?;
        let mut cmd = Command::new(program);
        // SAFETY: the closure only calls setns(2) (async-signal-safe) on a descriptor it owns
        // and that stays open as long as the Command (the closure holds the File).
        unsafe {
            cmd.pre_exec(move || enter_namespaces(Some(ns.as_raw_fd()), None));
        }
        Ok(cmd)
    }

    /// Runs `f` on a dedicated OS thread that entered node `i`'s network namespace, and
    /// returns its result. Sockets made by `f` stay in that namespace wherever they are
    /// used afterwards.
    pub fn in_netns<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = &self.nodes[i].netns;
        let ns = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        std::thread::scope(|s| {
            let h = s.spawn(move || -> Result<T> {
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(LinkNameSpaceType::Network),
                )
                .with_context(|| format!("cannot enter {}", path.display()))?;
                Ok(f())
            });
            match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Whether a UDP datagram from node `from` reaches node `to` and its echo comes back,
    /// within `timeout` (a fresh echo socket in `to`, a fresh client socket in `from`;
    /// probes are re-sent every 100 ms).
    pub fn udp_reachable(&self, from: usize, to: usize, timeout: Duration) -> Result<bool> {
        let (from_ip, to_ip) = (self.ip(from), self.ip(to));
        let server = self.in_netns(to, || UdpSocket::bind((to_ip, 0)))??;
        let client = self.in_netns(from, || UdpSocket::bind((from_ip, 0)))??;
        let target = server.local_addr()?;
        server.set_read_timeout(Some(Duration::from_millis(50)))?;
        client.set_read_timeout(Some(Duration::from_millis(100)))?;
        let done = AtomicBool::new(false);
        let reached = std::thread::scope(|s| {
            s.spawn(|| {
                let mut buf = [0u8; 64];
                while !done.load(Ordering::Relaxed) {
                    if let Ok((n, peer)) = server.recv_from(&mut buf) {
                        let _ = server.send_to(&buf[..n], peer);
                    }
                }
            });
            let deadline = Instant::now() + timeout;
            let mut reached = false;
            while !reached && Instant::now() < deadline {
                // A send may fail outright (no carrier): that is "unreachable", retried.
                let _ = client.send_to(b"shoal-probe", target);
                let mut buf = [0u8; 64];
                while let Ok((n, src)) = client.recv_from(&mut buf) {
                    if src == target && &buf[..n] == b"shoal-probe" {
                        reached = true;
                        break;
                    }
                }
            }
            done.store(true, Ordering::Relaxed);
            reached
        });
        Ok(reached)
    }

    // ----- failures ----------------------------------------------------------------------

    /// Cuts node `i` off: the host end of its veth goes down, so it reaches no peer (and
    /// no peer reaches it). Its daemon keeps running and its CLI still works.
    pub fn cut(&self, i: usize) -> Result<()> {
        ip_batch(None, &[format!("link set {} down", self.nodes[i].veth)])
    }

    /// Undoes [`TestNet::cut`].
    pub fn heal(&self, i: usize) -> Result<()> {
        ip_batch(None, &[format!("link set {} up", self.nodes[i].veth)])
    }

    /// Drops every frame between the nodes of `a` and those of `b`, both ways (IPv4, IPv6,
    /// ARP); traffic within a group is untouched. Partitions add up until
    /// [`TestNet::heal_partition`].
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Result<()> {
        for i in a.iter().chain(b) {
            ensure!(
                *i < self.nodes.len(),
                "no node {i} (the TestNet has {})",
                self.nodes.len()
            );
        }
        ensure!(
            !a.is_empty() && !b.is_empty(),
            "a partition needs two non-empty groups"
        );
        if let Some(i) = a.iter().find(|i| b.contains(i)) {
            bail!("node {i} is in both groups of the partition");
        }
        let set = |g: &[usize]| {
            let names: Vec<String> = g
                .iter()
                .map(|i| format!("\"{}\"", self.nodes[*i].veth))
                .collect();
            format!("{{ {} }}", names.join(", "))
        };
        let (sa, sb) = (set(a), set(b));
        let table = self.nft_table();
        // The bridge family's forward hook sees each bridged frame with its in and out
        // ports (flooded frames once per out port), before br_netfilter's IP hooks.
        nft(&format!(
            "table {table} {{\n\
             \tchain partition {{ type filter hook forward priority -200; policy accept; }}\n\
             }}\n\
             add rule {table} partition iifname {sa} oifname {sb} drop\n\
             add rule {table} partition iifname {sb} oifname {sa} drop\n"
        ))
    }

    /// Same as [`TestNet::partition`] (the name the design brief uses).
    pub fn drop_between(&self, a: &[usize], b: &[usize]) -> Result<()> {
        self.partition(a, b)
    }

    /// Removes every partition (deletes the TestNet's nft table; fine if there is none).
    pub fn heal_partition(&self) -> Result<()> {
        delete_nft_table(&self.nft_table())
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        // Heal first so daemons shutting down can still talk to each other.
        if let Err(e) = self.heal_partition() {
            problems.push(format!("{e:#}"));
        }
        for n in &mut self.nodes {
            // Daemon's Drop: containers removed, process stopped, its mounts undone.
            n.daemon.take();
        }
        problems.extend(teardown(self.id, self.dir.path()));
        if !problems.is_empty() {
            eprintln!(
                "TestNet {} ({}): clean-up problems: {problems:?}",
                self.label,
                self.bridge_name()
            );
        }
    }
}

/// Waits until `f` holds, polling every 50 ms, up to `timeout`; returns whether it held.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The `shoal` binary of this workspace's debug build, if it exists: `$SHOAL_BIN`, else
/// `<target dir>/x86_64-unknown-linux-gnu/debug/shoal` (target dir: `$CARGO_TARGET_DIR` or
/// the workspace's `target/`).
pub fn shoal_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SHOAL_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    Some(default_bin_path()).filter(|p| p.is_file())
}

fn default_bin_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("x86_64-unknown-linux-gnu/debug/shoal")
}

// ----- host plumbing -------------------------------------------------------------------

/// `10.<128 + id / 256>.<id % 256>`.
fn subnet_of(id: u16) -> [u8; 3] {
    [10, 128 + (id >> 8) as u8, (id & 0xff) as u8]
}

/// Finds a free id and creates its bridge (the creation is the lock), with `.1` of the
/// subnet, an alias naming the owner, and up.
fn claim_bridge(label: &str, dir: &Path) -> Result<u16> {
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    let start = (h.finish() % u64::from(ID_SPACE)) as u32;
    let routes = host_routes();
    for k in 0..256 {
        let id = ((start + k * 97) % ID_SPACE) as u16;
        let o = subnet_of(id);
        let net = u32::from(Ipv4Addr::new(o[0], o[1], o[2], 0));
        if routes
            .iter()
            .any(|(dst, mask)| overlaps(net, 0xffff_ff00, *dst, *mask))
        {
            continue;
        }
        let bridge = format!("sh{id:04x}");
        if link_exists(&bridge) {
            continue;
        }
        let out = Command::new("ip")
            .args(["link", "add", &bridge, "type", "bridge"])
            .output()
            .context("cannot run ip")?;
        if !out.status.success() {
            if link_exists(&bridge) {
                continue; // another TestNet took it between the check and the add
            }
            bail!(
                "ip link add {bridge} type bridge failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let alias = format!(
            "{ALIAS_TAG} pid={} dir={} label={label}",
            std::process::id(),
            dir.display()
        );
        let setup = ip_batch(
            None,
            &[
                format!("link set {bridge} alias \"{alias}\""),
                format!("addr add {}.{}.{}.1/24 dev {bridge}", o[0], o[1], o[2]),
                format!("link set {bridge} up"),
            ],
        );
        if let Err(e) = setup {
            let _ = Command::new("ip").args(["link", "del", &bridge]).output();
            return Err(e);
        }
        return Ok(id);
    }
    bail!("no free TestNet id found (256 tries)")
}

/// Whether two IPv4 networks overlap.
fn overlaps(a: u32, amask: u32, b: u32, bmask: u32) -> bool {
    let m = amask & bmask;
    a & m == b & m
}

/// The host's IPv4 routes (main table) as (destination, mask), default route excluded.
fn host_routes() -> Vec<(u32, u32)> {
    parse_routes(&fs::read_to_string("/proc/net/route").unwrap_or_default())
}

/// Parses `/proc/net/route`.
fn parse_routes(text: &str) -> Vec<(u32, u32)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The kernel prints the network-order value as a host-order number.
            let (dst, mask) = (u32::from_be(dst), u32::from_be(mask));
            (mask != 0).then_some((dst, mask))
        })
        .collect()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Runs `ip [-n NETNS] -batch -` with `lines`.
fn ip_batch(netns: Option<&str>, lines: &[String]) -> Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["-batch", "-"]);
    run_with_stdin(cmd, &lines.join("\n")).with_context(|| {
        format!(
            "ip {}: {lines:?}",
            netns.map(|n| format!("-n {n}")).unwrap_or_default()
        )
    })
}

/// Runs `nft -f -` with `script`.
fn nft(script: &str) -> Result<()> {
    let mut cmd = Command::new("nft");
    cmd.args(["-f", "-"]);
    run_with_stdin(cmd, script).with_context(|| format!("nft -f - <<{script}"))
}

/// Deletes an nft table, existing or not (declaring it first makes the delete safe).
fn delete_nft_table(table: &str) -> Result<()> {
    nft(&format!("table {table}\ndelete table {table}\n"))
}

fn run_with_stdin(mut cmd: Command, input: &str) -> Result<()> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    stdin.write_all(input.as_bytes())?;
    drop(stdin);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates a network namespace pinned at `path` (which must not exist).
fn create_netns(path: &Path) -> Result<()> {
    fs::create_dir_all(NETNS_DIR).with_context(|| format!("cannot create {NETNS_DIR}"))?;
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let p = path.to_owned();
    let pinned = std::thread::Builder::new()
        .name("testnet-netns".into())
        .spawn(move || -> io::Result<()> {
            // SAFETY: only this short-lived thread's network namespace changes; it exits
            // right after pinning it.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
            rustix::mount::mount_bind(Path::new("/proc/thread-self/ns/net"), &p)?;
            Ok(())
        })?
        .join()
        .map_err(|_| anyhow!("the namespace thread for {} panicked", path.display()))?;
    if let Err(e) = pinned {
        let _ = fs::remove_file(path);
        return Err(e).with_context(|| format!("cannot create the namespace {}", path.display()));
    }
    Ok(())
}

/// Unpins and removes a namespace file; a missing one is fine.
fn remove_netns(path: &Path) -> Result<()> {
    match rustix::mount::unmount(path, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => bail!("cannot unmount {}: {e}", path.display()),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            bail!("cannot remove {}: {e}", path.display())
        }
        _ => Ok(()),
    }
}

fn process_alive(pid: i32) -> bool {
    // A zombie is dead for our purposes (PID 1 here may not reap it).
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Live processes whose network namespace is one of `inodes`.
fn pids_in_netns(inodes: &[u64]) -> Vec<i32> {
    if inodes.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|pid| *pid != me)
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| inodes.contains(&m.ino()))
        })
        .filter(|pid| process_alive(*pid))
        .collect()
}

fn kill(pid: i32) {
    // SAFETY: kill(2) with a plain pid; a stale pid just fails.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Removes everything of TestNet `id` on the host: processes left in its namespaces, its
/// nft table, veths, bridge and namespace pins. Returns what failed.
fn teardown(id: u16, dir: &Path) -> Vec<String> {
    let hex = format!("{id:04x}");
    let mut problems = Vec::new();
    let ns_prefix = format!("shoal-{hex}-");
    let pins: Vec<PathBuf> = fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&ns_prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    let inodes: Vec<u64> = pins
        .iter()
        .filter_map(|p| fs::metadata(p).ok().map(|m| m.ino()))
        .collect();
    // Stray processes: left in our namespaces, or running from our directory.
    let marker = dir.display().to_string();
    for pid in pids_in_netns(&inodes) {
        kill(pid);
    }
    for pid in all_pids() {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if pid != std::process::id() as i32 && String::from_utf8_lossy(&cmdline).contains(&marker) {
            kill(pid);
        }
    }
    if let Err(e) = delete_nft_table(&format!("bridge shoal_{hex}")) {
        problems.push(format!("{e:#}"));
    }
    let veth_prefix = format!("sh{hex}n");
    let links: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&veth_prefix))
                .collect()
        })
        .unwrap_or_default();
    for link in links.iter().chain(std::iter::once(&format!("sh{hex}"))) {
        if !link_exists(link) {
            continue;
        }
        let out = Command::new("ip").args(["link", "del", link]).output();
        match out {
            // Deleting one end of a veth pair removes the other, maybe concurrently.
            Ok(o) if o.status.success() || !link_exists(link) => {}
            Ok(o) => problems.push(format!(
                "ip link del {link}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => problems.push(format!("cannot run ip link del {link}: {e}")),
        }
    }
    for p in pins {
        if let Err(e) = remove_netns(&p) {
            problems.push(format!("{e:#}"));
        }
    }
    problems
}

/// Tears down TestNets whose owning process is gone (a test binary killed mid-way): found
/// by their bridge alias. Best effort; containers such a run left are not removed.
fn reap_stale() {
    let Ok(rd) = fs::read_dir("/sys/class/net") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix("sh")
            .filter(|h| h.len() == 4)
            .and_then(|h| u16::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        let alias = fs::read_to_string(e.path().join("ifalias")).unwrap_or_default();
        let mut words = alias.split_whitespace();
        if words.next() != Some(ALIAS_TAG) {
            continue;
        }
        let mut pid = None;
        let mut dir = None;
        for w in words {
            if let Some(p) = w.strip_prefix("pid=") {
                pid = p.parse::<i32>().ok();
            } else if let Some(d) = w.strip_prefix("dir=") {
                dir = Some(PathBuf::from(d));
            }
        }
        let (Some(pid), Some(dir)) = (pid, dir) else {
            continue;
        };
        // A live owner keeps it. So does a missing directory: the owner may live in another
        // pid and mount namespace (a killed owner leaves its directory behind).
        if Path::new(&format!("/proc/{pid}")).exists() || !dir.is_dir() {
            continue;
        }
        eprintln!("TestNet: removing {name}, left by the dead process {pid}");
        let problems = teardown(id, &dir);
        // Daemons' cgroup parents (their containers, if any, are not removed).
        if let Ok(rd) = fs::read_dir(&dir) {
            for d in rd.flatten() {
                shoal_runtime::cgroups::remove_parent(&shoal_runtime::cgroups::default_parent(
                    &d.path().join("data"),
                    Path::new("/var/lib/shoal"),
                ));
            }
        }
        unmount_under(&dir);
        let _ = fs::remove_dir_all(&dir);
        if !problems.is_empty() {
            eprintln!("TestNet: stale {name}: {problems:?}");
        }
    }
}

/// Lazily unmounts everything mounted under `dir` (deepest first).
fn unmount_under(dir: &Path) {
    let root = dir.display().to_string();
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut mps: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&root))
        .collect();
    mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mps {
        let _ = rustix::mount::unmount(m, UnmountFlags::DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_follow_ids() {
        assert_eq!(subnet_of(0), [10, 128, 0]);
        assert_eq!(subnet_of(0x1a2b), [10, 128 + 0x1a, 0x2b]);
        assert_eq!(subnet_of(0x7fff), [10, 255, 255]);
    }

    #[test]
    fn overlap_of_networks() {
        let net = |a, b, c, d| u32::from(Ipv4Addr::new(a, b, c, d));
        // 10.0.0.0/8 contains 10.200.3.0/24.
        assert!(overlaps(
            net(10, 200, 3, 0),
            0xffff_ff00,
            net(10, 0, 0, 0),
            0xff00_0000
        ));
        // A host route inside the /24.
        assert!(overlaps(
            net(10, 200, 3, 0),
            0xffff_ff00,
            net(10, 200, 3, 7),
            0xffff_ffff
        ));
        assert!(!overlaps(
            net(10, 200, 3, 0),
            0xffff_ff00,
            net(10, 200, 4, 0),
            0xffff_ff00
        ));
        assert!(!overlaps(
            net(10, 200, 3, 0),
            0xffff_ff00,
            net(192, 0, 2, 0),
            0xffff_ff00
        ));
    }

    #[test]
    fn routes_are_parsed_in_network_order() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    br0\t0000800A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_routes(text),
                vec![
                    (u32::from(Ipv4Addr::new(192, 0, 2, 0)), 0xffff_ff00),
                    (u32::from(Ipv4Addr::new(10, 128, 0, 0)), 0xffff_0000),
                ]
            );
        }
    }
}
