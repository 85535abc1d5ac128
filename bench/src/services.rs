//! shoal's services benchmark, side by side with Docker Swarm on the same machine.
//!
//! Every round, on each system: `service create -d --replicas N --stop-grace-period 0s`
//! of busybox `sleep 3600` until all N tasks run; `service scale -d web=0` until no task
//! container runs; `service scale -d web=N` until all N run again; `service rm` until every
//! task container is gone. Times start just before the CLI is spawned (its own start-up
//! counts, as for a user) and end when a poll (every 50 ms, through each node's API socket:
//! `GET /tasks?filters=…` on the manager, `GET /containers/json` on every node) first sees
//! the goal. A reference without orchestration follows on 1-node systems: N plain
//! containers created and started through the API, 16 at a time, then force-removed.
//!
//! Systems: shoal on 1 node and on a 3-node cluster (1 manager + 2 workers), real daemons
//! each in its own network namespace (testkit's `TestNet`), busybox imported on each node;
//! Docker Swarm on 1 node: Debian's `docker.io` (installed here with apt if `dockerd` is
//! missing), started by this program in its own data root, exec root, socket and cgroup
//! parent, inside a network namespace of its own (`--iptables=false --bridge=none`: the
//! host's network is untouched), the same busybox archive loaded, the service created by
//! image ID with `--no-resolve-image` (by tag Swarm asks a registry for every task).
//! Several dockerds cannot easily run side by side here, so shoal's 3-node figures are set
//! against Docker's 1-node figures, and the output says so.
//!
//! Run: `cargo build --release -p shoal -p shoal-bench && target/x86_64-unknown-linux-gnu/release/shoal-bench-services [--rounds R] [--replicas N] [--shoal PATH] [--no-docker] [--no-cluster] [--logs DIR]`.
//! Needs root. Everything it starts goes when it ends, also after an error: the daemons
//! and TestNets by their destructors, Docker by [`DockerEngine`]'s.

mod http;
mod stats;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use http::Reply;
use serde_json::Value;
use shoal_testkit::cluster::TestNet;
use shoal_testkit::images::ImageBuilder;
use stats::{ms, percentile};

/// The service every round creates.
const SERVICE: &str = "web";
/// Pause between two polls of the APIs.
const POLL: Duration = Duration::from_millis(50);
/// Longest one measured phase may take before the round fails.
const PHASE_LIMIT: Duration = Duration::from_secs(300);
/// Longest a CLI call may take.
const CLI_LIMIT: Duration = Duration::from_secs(120);
/// Longest the tasks of a removed service may stay listed before the next round starts.
const REAP_LIMIT: Duration = Duration::from_secs(60);
/// Per-request socket timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Swarm port of every shoal node.
const PORT: u16 = 4242;
/// The target from the issue: shoal under a tenth of Docker Swarm's time.
const TARGET_RATIO: f64 = 0.1;

struct Args {
    rounds: usize,
    replicas: usize,
    shoal: PathBuf,
    docker: bool,
    cluster: bool,
    /// Where to keep the daemons' logs.
    logs: Option<PathBuf>,
}

const USAGE: &str = "usage: shoal-bench-services [--rounds R] [--replicas N] [--shoal PATH] [--no-docker] [--no-cluster] [--logs DIR]\n\
    \n\
    --rounds R     rounds on each system (default 3)\n\
    --replicas N   replicas of the service (default 100)\n\
    --shoal PATH   the shoal binary (default: next to this one)\n\
    --no-docker    skip the Docker Swarm reference\n\
    --no-cluster   skip shoal's 3-node cluster\n\
    --logs DIR     keep the daemons' logs (shoal's and dockerd's) in DIR";

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rounds: 3,
        replicas: 100,
        shoal: std::env::current_exe()?.with_file_name("shoal"),
        docker: true,
        cluster: true,
        logs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().context("--rounds needs a number")?.parse()?,
            "--replicas" => a.replicas = it.next().context("--replicas needs a number")?.parse()?,
            "--shoal" => a.shoal = PathBuf::from(it.next().context("--shoal needs a path")?),
            "--no-docker" => a.docker = false,
            "--no-cluster" => a.cluster = false,
            "--logs" => a.logs = Some(PathBuf::from(it.next().context("--logs needs a path")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    ensure!(a.rounds > 0, "--rounds must be at least 1");
    ensure!(a.replicas > 0, "--replicas must be at least 1");
    Ok(a)
}

// ----- a tiny HTTP/1.1 client over a unix socket -----------------------------------------

/// One request without a body.
fn request(sock: &Path, method: &str, path: &str) -> Result<Reply> {
    request_with(sock, method, path, None)
}

/// One request with an optional JSON body.
fn request_with(sock: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Reply> {
    http::request(sock, method, path, body, REQUEST_TIMEOUT)
}

/// A GET that must answer 200 with JSON.
fn get_json(sock: &Path, path: &str) -> Result<Value> {
    let r = request(sock, "GET", path)?;
    ensure!(
        r.status == 200,
        "GET {path} on {}: {} {}",
        sock.display(),
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    serde_json::from_slice(&r.body).with_context(|| format!("GET {path}: not JSON"))
}

/// Percent-encodes a query value.
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

// ----- processes -------------------------------------------------------------------------

/// Runs `cmd` to its end within `limit`; its stdout, or an error with its output.
fn run_cmd(mut cmd: Command, what: &str, limit: Duration) -> Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().with_context(|| format!("cannot run {what}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // The receiver may be gone after a timeout: nothing to tell then.
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(r) => r.with_context(|| format!("cannot wait for {what}"))?,
        Err(_) => {
            // SAFETY: kill(2) of our own child, not yet reaped (its waiter still blocks).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            bail!("{what} did not finish within {limit:?}");
        }
    };
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first executable named `bin` in PATH or the usual system directories.
fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(bin))
        .find(|f| f.is_file())
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a NUL-separated command line mentions `marker`.
fn cmdline_mentions(cmdline: &[u8], marker: &str) -> bool {
    !marker.is_empty()
        && cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(marker))
}

/// Processes (other than this one) whose command line mentions `marker`.
fn pids_mentioning(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|p| *p != me)
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| cmdline_mentions(&c, marker))
        })
        .collect()
}

/// The `Pss:` of `/proc/PID/smaps_rollup`, in kB.
fn pss_kb(rollup: &str) -> Option<u64> {
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// Memory of an engine: its processes (those mentioning `marker`) and their summed PSS.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Footprint {
    processes: usize,
    pss_kb: u64,
}

fn footprint(marker: &str) -> Footprint {
    let pids = pids_mentioning(marker);
    let pss_kb = pids
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|r| pss_kb(&r))
        .sum();
    Footprint {
        processes: pids.len(),
        pss_kb,
    }
}

// ----- the systems under test ------------------------------------------------------------

/// One swarm to measure, reached through its CLI and its nodes' API sockets.
struct System {
    name: String,
    /// The CLI and the environment aiming it at the manager.
    cli: PathBuf,
    cli_env: Vec<(String, String)>,
    /// API socket of the manager (task views).
    manager: PathBuf,
    /// API socket of every node (container views).
    nodes: Vec<PathBuf>,
    /// Image reference and the `service create` flags around it.
    image: String,
    create_flags: Vec<String>,
    /// A string in the command line of every process of the engine (for its memory).
    marker: String,
    /// Also measure plain containers (1-node systems).
    plain: bool,
}

impl System {
    /// Runs the CLI; its stdout.
    fn cli(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new(&self.cli);
        c.args(args);
        for (k, v) in &self.cli_env {
            c.env(k, v);
        }
        run_cmd(
            c,
            &format!("{} {}", self.cli.display(), args.join(" ")),
            CLI_LIMIT,
        )
    }

    /// The service's tasks with desired state running (Docker's API shape).
    fn desired_running(&self) -> Result<Vec<Value>> {
        self.tasks_where(&format!(
            "{{\"service\":[\"{SERVICE}\"],\"desired-state\":[\"running\"]}}"
        ))
    }

    /// Every listed task of the service.
    fn tasks(&self) -> Result<Vec<Value>> {
        self.tasks_where(&format!("{{\"service\":[\"{SERVICE}\"]}}"))
    }

    /// `GET /tasks?filters=…`; none when the service does not exist (Docker answers 404
    /// to a filter naming an unknown service).
    fn tasks_where(&self, filters: &str) -> Result<Vec<Value>> {
        let path = format!("/tasks?filters={}", urlencode(filters));
        let r = request(&self.manager, "GET", &path)?;
        if r.status == 404 {
            return Ok(Vec::new());
        }
        ensure!(
            r.status == 200,
            "GET {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let v: Value =
            serde_json::from_slice(&r.body).with_context(|| format!("GET {path}: not JSON"))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Tasks of the service whose observed state is running, whatever their desired state.
    fn observed_running(&self) -> Result<usize> {
        Ok(self
            .tasks()?
            .iter()
            .filter(|t| t["Status"]["State"] == "running")
            .count())
    }

    /// The service's containers on each node (running ones, or all).
    fn containers(&self, all: bool) -> Result<Vec<usize>> {
        let path = if all {
            "/containers/json?all=1"
        } else {
            "/containers/json"
        };
        self.nodes
            .iter()
            .map(|s| Ok(task_containers(&get_json(s, path)?)))
            .collect()
    }

    /// Task states with counts and the first error, for failure messages.
    fn task_summary(&self) -> String {
        match self.tasks() {
            Ok(ts) => summarize_tasks(&ts),
            Err(e) => format!("cannot list tasks: {e:#}"),
        }
    }
}

/// How many containers of a `GET /containers/json` list belong to the service (Docker and
/// shoal both name task containers `web.<slot>.<task id>`).
fn task_containers(list: &Value) -> usize {
    let prefix = format!("{SERVICE}.");
    list.as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| {
                    c["Names"].as_array().is_some_and(|ns| {
                        ns.iter().any(|n| {
                            n.as_str()
                                .is_some_and(|n| n.trim_start_matches('/').starts_with(&prefix))
                        })
                    })
                })
                .count()
        })
        .unwrap_or(0)
}

/// "desired/state count, …; first error: …".
fn summarize_tasks(tasks: &[Value]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut error = None;
    for t in tasks {
        let key = format!(
            "{}/{}",
            t["DesiredState"].as_str().unwrap_or("?"),
            t["Status"]["State"].as_str().unwrap_or("?")
        );
        *counts.entry(key).or_default() += 1;
        if error.is_none()
            && let Some(e) = t["Status"]["Err"].as_str().filter(|e| !e.is_empty())
        {
            error = Some(e.to_owned());
        }
    }
    let mut s = format!("{} tasks (desired/state): ", tasks.len());
    s.push_str(
        &counts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if let Some(e) = error {
        s.push_str(&format!("; first error: {e}"));
    }
    s
}

// ----- measuring -------------------------------------------------------------------------

/// One timed operation: its total and the moments of its steps, from the start.
#[derive(Clone, Debug, Default)]
struct Measure {
    total: Duration,
    steps: Vec<(&'static str, Duration)>,
}

/// The four operations of one round.
#[derive(Clone, Debug, Default)]
struct Round {
    create: Measure,
    scale_down: Measure,
    scale_up: Measure,
    remove: Measure,
    /// Plain containers through the API (no orchestration), on 1-node systems.
    plain_start: Option<Measure>,
    plain_remove: Option<Measure>,
    /// The engine's memory with every task running (after the create).
    memory: Option<Footprint>,
    /// Running task containers per node, after the create.
    spread: Vec<usize>,
}

/// Picks one operation's measure out of a round (none if not measured there).
type OpOf = fn(&Round) -> Option<&Measure>;

/// The operations, in the order of a round, with their labels.
const OPS: [(&str, OpOf); 6] = [
    ("create N -> N running", |r| Some(&r.create)),
    ("scale N -> 0 (none running)", |r| Some(&r.scale_down)),
    ("scale 0 -> N running", |r| Some(&r.scale_up)),
    ("rm (containers gone)", |r| Some(&r.remove)),
    ("plain: N x create+start", |r| r.plain_start.as_ref()),
    ("plain: N x rm -f", |r| r.plain_remove.as_ref()),
];

/// Plain containers are created and removed this many at a time (as many as shoal's
/// agent starts at once).
const PLAIN_PARALLEL: usize = 16;

/// Polls `probe` every [`POLL`] until it returns `Some`, at most [`PHASE_LIMIT`].
fn poll<T>(what: &str, sys: &System, mut probe: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = probe()? {
            return Ok(v);
        }
        if t0.elapsed() > PHASE_LIMIT {
            bail!(
                "{}: {what} not reached within {PHASE_LIMIT:?}; {}",
                sys.name,
                sys.task_summary()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Task states before a node has the task (Docker's names, as the API writes them).
const UNASSIGNED: [&str; 3] = ["new", "allocated", "pending"];

/// Of tasks that should run: how many a node has been given, and how many run.
fn assigned_and_running(tasks: &[Value]) -> (usize, usize) {
    let state = |t: &Value| t["Status"]["State"].as_str().unwrap_or("").to_owned();
    let assigned = tasks
        .iter()
        .filter(|t| {
            let s = state(t);
            !s.is_empty() && !UNASSIGNED.contains(&s.as_str())
        })
        .count();
    let running = tasks.iter().filter(|t| state(t) == "running").count();
    (assigned, running)
}

/// Waits until `n` tasks run; marks when all are assigned to nodes, and when the first,
/// half and all of them run.
fn until_running(sys: &System, n: usize, t0: Instant, m: &mut Measure) -> Result<()> {
    let (mut assigned, mut first, mut half) = (None, None, None);
    let all = poll(&format!("{n} running tasks"), sys, || {
        let (a, r) = assigned_and_running(&sys.desired_running()?);
        let now = t0.elapsed();
        if a >= n {
            assigned.get_or_insert(now);
        }
        if r >= 1 {
            first.get_or_insert(now);
        }
        if r * 2 >= n {
            half.get_or_insert(now);
        }
        Ok((r >= n).then_some(now))
    })?;
    m.steps.push(("all assigned", assigned.unwrap_or(all)));
    m.steps.push(("first running", first.unwrap_or(all)));
    m.steps.push(("half running", half.unwrap_or(all)));
    m.steps.push(("all running", all));
    m.total = all;
    Ok(())
}

fn create(sys: &System, n: usize) -> Result<Measure> {
    let replicas = n.to_string();
    let mut args = vec![
        "service",
        "create",
        "-d",
        "--name",
        SERVICE,
        "--replicas",
        &replicas,
        "--stop-grace-period",
        "0s",
    ];
    args.extend(sys.create_flags.iter().map(String::as_str));
    args.extend([sys.image.as_str(), "sleep", "3600"]);
    let mut m = Measure::default();
    let t0 = Instant::now();
    sys.cli(&args)?;
    m.steps.push(("CLI returned", t0.elapsed()));
    until_running(sys, n, t0, &mut m)?;
    Ok(m)
}

fn scale_up(sys: &System, n: usize) -> Result<Measure> {
    let mut m = Measure::default();
    let to = format!("{SERVICE}={n}");
    let t0 = Instant::now();
    sys.cli(&["service", "scale", "-d", &to])?;
    m.steps.push(("CLI returned", t0.elapsed()));
    until_running(sys, n, t0, &mut m)?;
    Ok(m)
}

fn scale_down(sys: &System) -> Result<Measure> {
    let mut m = Measure::default();
    let to = format!("{SERVICE}=0");
    let t0 = Instant::now();
    sys.cli(&["service", "scale", "-d", &to])?;
    m.steps.push(("CLI returned", t0.elapsed()));
    let (mut api, mut stopped) = (None, None);
    let done = poll("no running task container", sys, || {
        if api.is_none() && sys.observed_running()? == 0 {
            api = Some(t0.elapsed());
        }
        if stopped.is_none() && sys.containers(false)?.iter().sum::<usize>() == 0 {
            stopped = Some(t0.elapsed());
        }
        Ok(api.zip(stopped).map(|(a, s)| a.max(s)))
    })?;
    let (api, stopped) = (api.unwrap_or(done), stopped.unwrap_or(done));
    m.steps.push(("API: no task in state running", api));
    m.steps.push(("no container running", stopped));
    m.total = stopped;
    Ok(m)
}

fn remove(sys: &System) -> Result<Measure> {
    let mut m = Measure::default();
    let t0 = Instant::now();
    sys.cli(&["service", "rm", SERVICE])?;
    m.steps.push(("CLI returned", t0.elapsed()));
    let gone = poll("every task container removed", sys, || {
        Ok((sys.containers(true)?.iter().sum::<usize>() == 0).then(|| t0.elapsed()))
    })?;
    m.steps.push(("containers gone", gone));
    m.total = gone;
    // Not part of the figure: the tasks leaving the API (the next round needs it).
    let deadline = Instant::now() + REAP_LIMIT;
    loop {
        if sys.tasks()?.is_empty() {
            m.steps.push(("API: tasks gone", t0.elapsed()));
            break;
        }
        if Instant::now() > deadline {
            println!(
                "  note: {}: tasks still listed {REAP_LIMIT:?} after service rm: {}",
                sys.name,
                sys.task_summary()
            );
            break;
        }
        std::thread::sleep(POLL);
    }
    Ok(m)
}

/// Runs `job(i)` for every `i < n`, [`PLAIN_PARALLEL`] at a time; the results in order.
fn parallel<T: Send>(n: usize, job: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|sc| -> Result<()> {
        let workers: Vec<_> = (0..PLAIN_PARALLEL.min(n))
            .map(|_| {
                sc.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        let v = job(i)?;
                        // A poisoned lock means another worker panicked: that panic is
                        // re-raised by the join below.
                        if let Ok(mut o) = out.lock() {
                            o[i] = Some(v);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            match w.join() {
                Ok(r) => r?,
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        Ok(())
    })?;
    let out = out
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a worker panicked"))?;
    out.into_iter()
        .enumerate()
        .map(|(i, v)| v.with_context(|| format!("job {i} gave no result")))
        .collect()
}

/// The reference without orchestration: `n` containers like the tasks (`sleep 3600`,
/// network `none`: a namespace with loopback only) created and started through the manager
/// node's API, [`PLAIN_PARALLEL`] at a time; then all removed with `force`.
fn plain(sys: &System, n: usize) -> Result<(Measure, Measure)> {
    let sock = &sys.manager;
    let body = serde_json::json!({
        "Image": sys.image,
        "Cmd": ["sleep", "3600"],
        "HostConfig": {"NetworkMode": "none"},
    });
    let t0 = Instant::now();
    let ids = parallel(n, |i| {
        let path = format!("/containers/create?name=plain-{i}");
        let r = request_with(sock, "POST", &path, Some(&body))?;
        ensure!(
            r.status == 201,
            "POST {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let v: Value = serde_json::from_slice(&r.body)?;
        let id = v["Id"]
            .as_str()
            .context("no Id in the create answer")?
            .to_owned();
        let path = format!("/containers/{id}/start");
        let r = request(sock, "POST", &path)?;
        ensure!(
            r.status == 204,
            "POST {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        Ok(id)
    })?;
    let started = Measure {
        total: t0.elapsed(),
        steps: vec![("all started", t0.elapsed())],
    };
    let t0 = Instant::now();
    parallel(ids.len(), |i| {
        let path = format!("/containers/{}?force=1", ids[i]);
        let r = request(sock, "DELETE", &path)?;
        ensure!(
            r.status == 204,
            "DELETE {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        Ok(())
    })?;
    let removed = Measure {
        total: t0.elapsed(),
        steps: vec![("all removed", t0.elapsed())],
    };
    Ok((started, removed))
}

fn round(sys: &System, n: usize) -> Result<Round> {
    let create = create(sys, n)?;
    let memory = Some(footprint(&sys.marker));
    let spread = sys.containers(false)?;
    let scale_down = scale_down(sys)?;
    let scale_up = scale_up(sys, n)?;
    let remove = remove(sys)?;
    let (plain_start, plain_remove) = if sys.plain {
        let (a, b) = plain(sys, n)?;
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    Ok(Round {
        create,
        scale_down,
        scale_up,
        remove,
        plain_start,
        plain_remove,
        memory,
        spread,
    })
}

/// R rounds on `sys`, printing each as it ends.
fn rounds(sys: &System, args: &Args) -> Result<Vec<Round>> {
    println!("{}:", sys.name);
    let mut out = Vec::new();
    for r in 1..=args.rounds {
        let round = round(sys, args.replicas)?;
        let plain = match (&round.plain_start, &round.plain_remove) {
            (Some(a), Some(b)) => format!(
                "  plain start {}  plain rm {}",
                secs(a.total),
                secs(b.total)
            ),
            _ => String::new(),
        };
        println!(
            "  round {r}: create {}  scale->0 {}  scale->N {}  rm {}{plain}  (per node after create: {:?})",
            secs(round.create.total),
            secs(round.scale_down.total),
            secs(round.scale_up.total),
            secs(round.remove.total),
            round.spread,
        );
        out.push(round);
    }
    Ok(out)
}

// ----- shoal -----------------------------------------------------------------------------

/// `n` shoal daemons in their own namespaces: node0 initializes the swarm, the others join
/// as workers; busybox imported on every node. Returns once every node is Ready.
fn shoal_swarm(bin: &Path, label: &str, n: usize, archive: &Path) -> Result<TestNet> {
    let mut net = TestNet::new(label, n)?.with_bin(bin);
    for i in 0..n {
        net.start(i, &[])?;
    }
    let cli = |i: usize, args: &[&str]| -> Result<String> {
        let mut c = net.cli(i);
        c.args(args);
        run_cmd(
            c,
            &format!("shoal {} on node{i}", args.join(" ")),
            CLI_LIMIT,
        )
        .with_context(|| format!("node{i}'s log tail:\n{}", net.daemon(i).log_tail(30)))
    };
    let addr = net.addr(0, PORT);
    cli(
        0,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &addr,
            "--listen-addr",
            &addr,
        ],
    )?;
    let token = cli(0, &["swarm", "join-token", "-q", "worker"])?
        .trim()
        .to_owned();
    for i in 1..n {
        let (a, remote) = (net.addr(i, PORT), net.addr(0, PORT));
        cli(
            i,
            &[
                "swarm",
                "join",
                "--token",
                &token,
                "--advertise-addr",
                &a,
                "--listen-addr",
                &a,
                &remote,
            ],
        )?;
    }
    let archive = archive.to_str().context("archive path is not UTF-8")?;
    for i in 0..n {
        let out = cli(i, &["image", "import", archive])?;
        ensure!(
            out.contains("busybox:latest"),
            "node{i}: unexpected import output {out:?}"
        );
    }
    let sock = net.daemon(0).socket.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = get_json(&sock, "/nodes")?;
        let ready = nodes
            .as_array()
            .map(|ns| {
                ns.iter()
                    .filter(|x| x["Status"]["State"] == "ready")
                    .count()
            })
            .unwrap_or(0);
        if ready == n {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{label}: {ready} of {n} nodes ready after 60 s: {nodes}"
        );
        std::thread::sleep(POLL);
    }
    Ok(net)
}

fn shoal_system(net: &TestNet, name: &str) -> System {
    let d = net.daemon(0);
    System {
        name: name.to_owned(),
        cli: d.bin.clone(),
        cli_env: vec![
            ("SHOAL_HOST".into(), d.host()),
            ("SHOAL_CONFIG".into(), d.config.display().to_string()),
        ],
        manager: d.socket.clone(),
        nodes: (0..net.len())
            .map(|i| net.daemon(i).socket.clone())
            .collect(),
        image: "busybox".into(),
        create_flags: Vec::new(),
        marker: net.dir().display().to_string(),
        plain: net.len() == 1,
    }
}

fn shoal_version(bin: &Path) -> String {
    let mut c = Command::new(bin);
    c.arg("--version");
    run_cmd(c, "shoal --version", CLI_LIMIT)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e:#})"))
}

// ----- Docker Swarm ----------------------------------------------------------------------

/// The engine's binary, as Debian's `docker.io` installs it (in `/usr/sbin`).
const DOCKERD: &str = "dockerd";

/// Makes sure `dockerd` exists, installing Debian's `docker.io` if needed; its path.
fn ensure_dockerd() -> Result<PathBuf> {
    if let Some(p) = which(DOCKERD) {
        return Ok(p);
    }
    println!(
        "dockerd not found: installing Debian's docker.io (apt-get install -y --no-install-recommends docker.io)"
    );
    let install = || {
        let mut c = Command::new("apt-get");
        c.args(["install", "-y", "--no-install-recommends", "docker.io"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_cmd(c, "apt-get install docker.io", Duration::from_secs(600))
    };
    if let Err(first) = install() {
        println!("  install failed ({first:#}); running apt-get update and trying again");
        let mut c = Command::new("apt-get");
        c.arg("update");
        run_cmd(c, "apt-get update", Duration::from_secs(600))?;
        install()?;
    }
    which(DOCKERD).context("docker.io installed but no dockerd found")
}

/// Host paths a dockerd may create outside the roots it is given; those this run creates
/// are removed afterwards.
const HOST_PATHS: &[&str] = &[
    "/etc/docker",
    "/etc/docker/key.json",
    "/run/containerd",
    "/run/docker",
    "/var/run/docker.sock",
    "/var/lib/docker",
    "/var/lib/containerd",
];

/// A dockerd of our own, in a network namespace of its own (a 1-node TestNet without a
/// shoal daemon), with its own data root, exec root, socket and cgroup parent. Dropping it
/// removes the services and containers, stops dockerd (and the containerd it started), kills
/// whatever is left of them, unmounts, and removes what it created.
struct DockerEngine {
    child: Option<Child>,
    /// Short root holding data, exec root, socket, pidfile, config and log.
    root: tempfile::TempDir,
    sock: PathBuf,
    client: PathBuf,
    client_config: PathBuf,
    log: PathBuf,
    /// `--cgroup-parent` (absolute, under every hierarchy's root).
    cgroup_parent: String,
    /// Of [`HOST_PATHS`], those that did not exist before dockerd started.
    new_host_paths: Vec<PathBuf>,
    /// The image's ID (config digest).
    image_id: String,
    version: String,
    /// Declared last: dropped after the engine is stopped.
    net: TestNet,
}

impl DockerEngine {
    /// Starts dockerd, initializes a swarm, loads `archive` (whose image ID is `image_id`).
    fn start(dockerd: &Path, archive: &Path, image_id: &str) -> Result<DockerEngine> {
        let net = TestNet::new("docker", 1)?;
        let root = tempfile::Builder::new().prefix("sbd-").tempdir()?;
        let r = root.path();
        let (data, exec, sock) = (r.join("data"), r.join("exec"), r.join("docker.sock"));
        let config = r.join("daemon.json");
        // Its identity key would go to /etc/docker/key.json otherwise.
        let conf = serde_json::json!({"deprecated-key-path": r.join("key.json")});
        std::fs::write(&config, format!("{conf}\n"))?;
        let client_config = r.join("client");
        std::fs::create_dir_all(&client_config)?;
        let client = ["/usr/bin/docker"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .or_else(|| which("docker"))
            .context("no docker client (Debian's docker.io installs /usr/bin/docker)")?;
        let new_host_paths = HOST_PATHS
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        let cgroup_parent = format!("/shoal-bench-docker-{}", std::process::id());
        let log = r.join("dockerd.log");
        let logf = std::fs::File::create(&log)?;
        let mut cmd = net.exec(0, dockerd)?;
        cmd.arg("--data-root")
            .arg(&data)
            .arg("--exec-root")
            .arg(&exec)
            .arg("--pidfile")
            .arg(r.join("dockerd.pid"))
            .arg("--config-file")
            .arg(&config)
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--cgroup-parent",
                &cgroup_parent,
            ])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone()?))
            .stderr(Stdio::from(logf));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", dockerd.display()))?;
        let mut engine = DockerEngine {
            child: Some(child),
            root,
            sock,
            client,
            client_config,
            log,
            cgroup_parent,
            new_host_paths,
            image_id: image_id.to_owned(),
            version: String::new(),
            net,
        };
        engine.wait_ready()?;
        let v = get_json(&engine.sock, "/version")?;
        engine.version = format!(
            "Docker Engine {} (API {}), {}",
            v["Version"].as_str().unwrap_or("?"),
            v["ApiVersion"].as_str().unwrap_or("?"),
            v["Components"]
                .as_array()
                .map(|cs| cs
                    .iter()
                    .filter(|c| c["Name"] != "Engine")
                    .map(|c| format!(
                        "{} {}",
                        c["Name"].as_str().unwrap_or("?"),
                        c["Version"].as_str().unwrap_or("?")
                    ))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        );
        let ip = engine.net.ip(0).to_string();
        engine.cli(&["swarm", "init", "--advertise-addr", &ip])?;
        let archive = archive.to_str().context("archive path is not UTF-8")?;
        engine.cli(&["load", "-i", archive])?;
        let r = request(&engine.sock, "GET", &format!("/images/{image_id}/json"))?;
        ensure!(
            r.status == 200,
            "docker load did not give image {image_id}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        Ok(engine)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                bail!(
                    "dockerd exited ({status}) before answering; its log tail:\n{}",
                    self.log_tail(30)
                );
            }
            if request(&self.sock, "GET", "/_ping").is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "dockerd did not answer on {} within 60 s; its log tail:\n{}",
                    self.sock.display(),
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn cli_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "DOCKER_HOST".into(),
                format!("unix://{}", self.sock.display()),
            ),
            (
                "DOCKER_CONFIG".into(),
                self.client_config.display().to_string(),
            ),
        ]
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new(&self.client);
        c.args(args);
        for (k, v) in self.cli_env() {
            c.env(k, v);
        }
        run_cmd(c, &format!("docker {}", args.join(" ")), CLI_LIMIT)
            .with_context(|| format!("dockerd log tail:\n{}", self.log_tail(20)))
    }

    fn system(&self) -> System {
        System {
            name: "Docker Swarm, 1 node".into(),
            cli: self.client.clone(),
            cli_env: self.cli_env(),
            manager: self.sock.clone(),
            nodes: vec![self.sock.clone()],
            image: self.image_id.clone(),
            create_flags: vec!["--no-resolve-image".into()],
            marker: self.root.path().display().to_string(),
            plain: true,
        }
    }

    /// Stops the engine, then copies its log into `dir` (if any).
    fn stop_and_keep_log(mut self, dir: Option<&Path>) {
        self.stop();
        if let Some(dir) = dir {
            keep_logs(dir, [("dockerd.log".to_owned(), self.log.clone())]);
        }
    }

    /// Stops everything; best effort (it runs on error paths too), problems printed.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            self.sweep();
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            // Services first (else Swarm restarts their containers), then containers.
            let _ = request(&self.sock, "DELETE", &format!("/services/{SERVICE}"));
            if let Ok(list) = get_json(&self.sock, "/containers/json?all=1")
                && let Some(cs) = list.as_array()
            {
                for id in cs.iter().filter_map(|c| c["Id"].as_str()) {
                    let _ = request(
                        &self.sock,
                        "DELETE",
                        &format!("/containers/{id}?force=1&v=1"),
                    );
                }
            }
            let _ = request(&self.sock, "POST", "/swarm/leave?force=1");
            // SAFETY: kill(2) of our own child, not yet reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(40);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if matches!(child.try_wait(), Ok(None)) {
            eprintln!("dockerd did not stop within 40 s of SIGTERM: killing it");
            let _ = child.kill();
        }
        let _ = child.wait();
        self.sweep();
    }

    /// Kills whatever is left (containerd, shims, task processes), unmounts what is left
    /// under the root, removes the cgroups and the host paths this run created.
    fn sweep(&mut self) {
        let marker = self.root.path().display().to_string();
        for pid in pids_mentioning(&marker) {
            eprintln!("killing leftover Docker process {pid}");
            // SAFETY: kill(2) of a process of the engine we started (its command line
            // names our private root).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let groups = cgroup_dirs(&self.cgroup_parent);
        for _ in 0..50 {
            let mut pids = Vec::new();
            for g in &groups {
                pids.extend(cgroup_procs(g));
            }
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) of a process inside our own dockerd's cgroup parent.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for g in &groups {
            remove_cgroup_tree(g);
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for mp in mounts_under(&mountinfo, self.root.path()) {
            let Ok(c) = CString::new(mp.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: umount2(2) with a valid NUL-terminated path under our private root.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                eprintln!(
                    "cannot unmount {}: {}",
                    mp.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        for p in &self.new_host_paths {
            if p.exists() {
                let r = if p.is_dir() {
                    std::fs::remove_dir_all(p)
                } else {
                    std::fs::remove_file(p)
                };
                if let Err(e) = r {
                    eprintln!("cannot remove {} (made by dockerd): {e}", p.display());
                }
            }
        }
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The cgroup directories named `parent` in every mounted hierarchy (v1 and v2).
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    let base = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![base.join(rel)];
    if let Ok(rd) = std::fs::read_dir(base) {
        for e in rd.flatten() {
            // Skip the `cpu` → `cpu,cpuacct` style symlinks: the real directory is listed too.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path().join(rel));
            }
        }
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

/// Pids in a cgroup and all below it.
fn cgroup_procs(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_procs(&e.path()));
            }
        }
    }
    pids
}

/// Removes a cgroup and its children (deepest first).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("cannot remove cgroup {}: {e}", dir.display());
    }
}

/// Mount points under `root` in a `/proc/self/mountinfo` text, deepest first.
fn mounts_under(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    let mut mps: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(root))
        .collect();
    mps.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    mps.dedup();
    mps
}

// ----- reporting -------------------------------------------------------------------------

/// Copies logs into `dir` under the given names (best effort: also on error paths).
fn keep_logs(dir: &Path, logs: impl IntoIterator<Item = (String, PathBuf)>) {
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return;
    }
    for (name, from) in logs {
        if let Err(e) = std::fs::copy(&from, dir.join(&name)) {
            eprintln!("cannot keep {} as {name}: {e}", from.display());
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Median, min and max of a series.
fn spread3(s: &[Duration]) -> (Duration, Duration, Duration) {
    (percentile(s, 0.5), percentile(s, 0.0), percentile(s, 1.0))
}

/// "median (min–max)".
fn cell(s: &[Duration]) -> String {
    if s.is_empty() {
        return "-".into();
    }
    let (med, lo, hi) = spread3(s);
    format!(
        "{:.3} s ({:.3}-{:.3})",
        med.as_secs_f64(),
        lo.as_secs_f64(),
        hi.as_secs_f64()
    )
}

/// "0.123 (8.1x faster)" for shoal's median over the reference's.
fn ratio(shoal: Duration, reference: Duration) -> String {
    let (s, r) = (shoal.as_secs_f64(), reference.as_secs_f64());
    if s <= 0.0 || r <= 0.0 {
        return "-".into();
    }
    let q = s / r;
    if q <= 1.0 {
        format!("{q:.3} ({:.1}x faster)", r / s)
    } else {
        format!("{q:.3} ({:.1}x slower)", q)
    }
}

fn totals(rounds: &[Round], op: OpOf) -> Vec<Duration> {
    rounds
        .iter()
        .filter_map(|r| op(r).map(|m| m.total))
        .collect()
}

/// A side-by-side table of medians (min–max) and the ratio of the first column to the
/// second.
fn print_table(title: &str, a: (&str, &[Round]), b: Option<(&str, &[Round])>) {
    println!("{title}");
    let w = 30;
    print!("{:<28} {:>w$}", "", a.0);
    if let Some((bn, _)) = b {
        print!(" {:>w$} {:>24}", bn, "ratio (shoal/Docker)");
    }
    println!();
    for (label, op) in OPS {
        let sa = totals(a.1, op);
        if sa.is_empty() && b.is_none_or(|(_, rb)| totals(rb, op).is_empty()) {
            continue;
        }
        print!("{label:<28} {:>w$}", cell(&sa));
        if let Some((_, rb)) = b {
            let sb = totals(rb, op);
            print!(
                " {:>w$} {:>24}",
                cell(&sb),
                ratio(percentile(&sa, 0.5), percentile(&sb, 0.5))
            );
        }
        println!();
    }
}

/// Medians of each step of each operation on one system.
fn print_steps(name: &str, rounds: &[Round]) {
    println!("{name}: steps (median time from the start of the operation):");
    for (label, op) in OPS {
        let Some(first) = rounds.first().and_then(op) else {
            continue;
        };
        let steps: Vec<String> = first
            .steps
            .iter()
            .map(|(step, _)| {
                let s: Vec<Duration> = rounds
                    .iter()
                    .filter_map(op)
                    .filter_map(|m| m.steps.iter().find(|(n, _)| n == step).map(|x| x.1))
                    .collect();
                format!("{step} {:.0} ms", ms(percentile(&s, 0.5)))
            })
            .collect();
        println!("  {label:<28} {}", steps.join(", "));
    }
    let mem: Vec<Footprint> = rounds.iter().filter_map(|r| r.memory).collect();
    if let Some(m) = mem.last() {
        println!(
            "  memory with every task running: {} engine processes, {:.1} MB PSS (task processes not counted)",
            m.processes,
            m.pss_kb as f64 / 1024.0
        );
    }
}

/// Whether shoal meets the target on each service operation.
fn verdict(shoal: &[Round], docker: &[Round]) {
    for (label, op) in OPS.into_iter().take(4) {
        let (s, d) = (
            percentile(&totals(shoal, op), 0.5),
            percentile(&totals(docker, op), 0.5),
        );
        let q = s.as_secs_f64() / d.as_secs_f64().max(1e-9);
        println!(
            "  {label:<28} {q:.3} of Docker's time: {}",
            if q < TARGET_RATIO { "met" } else { "NOT met" }
        );
    }
}

fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    format!(
        "kernel {}, {cpus} CPUs, {:.1} GB RAM, load average {}",
        kernel.trim(),
        mem_kb as f64 / 1024.0 / 1024.0,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if !args.shoal.is_file() {
        bail!(
            "no shoal binary at {}: build it (cargo build --release -p shoal) or pass --shoal",
            args.shoal.display()
        );
    }
    let started = Instant::now();
    let n = args.replicas;
    println!(
        "shoal services bench: {n} replicas of busybox `sleep 3600`, --stop-grace-period 0s, \
         {} rounds, polls every {} ms",
        args.rounds,
        POLL.as_millis()
    );
    println!("date: {}", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"));
    println!("machine: {}", machine());
    println!(
        "shoal: {} ({})",
        args.shoal.display(),
        shoal_version(&args.shoal)
    );
    println!();

    let work = tempfile::Builder::new().prefix("sbs-").tempdir()?;
    let archive = work.path().join("busybox.tar");
    let built = ImageBuilder::busybox()
        .write_docker_archive(&archive, &["busybox:latest"], false)
        .context("cannot write the busybox archive")?;

    let shoal_rounds = |label: &str, n: usize, name: &str| -> Result<Vec<Round>> {
        let net = shoal_swarm(&args.shoal, label, n, &archive)?;
        let r = rounds(&shoal_system(&net, name), &args);
        if let Some(dir) = &args.logs {
            keep_logs(
                dir,
                (0..n).map(|i| (format!("{label}-node{i}.log"), net.daemon(i).log.clone())),
            );
        }
        r
    };
    let one = shoal_rounds("svc-1n", 1, "shoal, 1 node")?;
    let three = if args.cluster {
        Some(shoal_rounds(
            "svc-3n",
            3,
            "shoal, 3 nodes (1 manager + 2 workers)",
        )?)
    } else {
        None
    };

    let mut docker_version = None;
    let docker = if !args.docker {
        println!("Docker Swarm reference: SKIPPED (--no-docker)");
        None
    } else {
        match ensure_dockerd() {
            Err(e) => {
                println!("!!! SKIPPED: docker.io not installable: {e:#}");
                None
            }
            Ok(dockerd) => match DockerEngine::start(&dockerd, &archive, &built.config_digest) {
                Err(e) => {
                    println!("!!! SKIPPED: Docker Swarm could not start: {e:#}");
                    None
                }
                Ok(engine) => {
                    docker_version = Some(engine.version.clone());
                    let r = rounds(&engine.system(), &args);
                    engine.stop_and_keep_log(args.logs.as_deref());
                    Some(r?)
                }
            },
        }
    };

    println!();
    println!(
        "==== results: median (min-max) of {} rounds, {n} replicas ====",
        args.rounds
    );
    if let Some(v) = &docker_version {
        println!(
            "Docker: {v}; dockerd in its own data root and network namespace, \
             --iptables=false --bridge=none; service by image ID with --no-resolve-image"
        );
    }
    println!();
    print_table(
        "1 node:",
        ("shoal, 1 node", &one),
        docker.as_deref().map(|d| ("Docker Swarm, 1 node", d)),
    );
    if let Some(three) = &three {
        println!();
        let title = if docker.is_some() {
            "shoal on 3 nodes (1 manager + 2 workers) vs Docker Swarm on 1 node \
             (no 3-node Docker cluster on this machine):"
        } else {
            "shoal on 3 nodes (1 manager + 2 workers):"
        };
        print_table(
            title,
            ("shoal, 3 nodes", three),
            docker.as_deref().map(|d| ("Docker Swarm, 1 node", d)),
        );
    }
    println!();
    print_steps("shoal, 1 node", &one);
    if let Some(three) = &three {
        print_steps("shoal, 3 nodes", three);
    }
    if let Some(d) = &docker {
        print_steps("Docker Swarm, 1 node", d);
        println!();
        println!("target: shoal under a tenth of Docker Swarm's time (1 node vs 1 node):");
        verdict(&one, d);
    }
    println!();
    println!(
        "total time: {:.0} s; {}",
        started.elapsed().as_secs_f64(),
        machine()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_filters() {
        assert_eq!(
            urlencode("{\"service\":[\"web\"]}"),
            "%7B%22service%22%3A%5B%22web%22%5D%7D"
        );
        assert_eq!(urlencode("a-b_c.d~"), "a-b_c.d~");
    }

    #[test]
    fn counts_only_the_services_containers() {
        let list = json!([
            {"Names": ["/web.1.abc"]},
            {"Names": ["/web.12.def"]},
            {"Names": ["web.3.x"]},
            {"Names": ["/webby.1.abc"]},
            {"Names": ["/other"]},
            {"Names": []},
            {}
        ]);
        assert_eq!(task_containers(&list), 3);
        assert_eq!(task_containers(&json!({})), 0);
    }

    #[test]
    fn counts_assigned_and_running_tasks() {
        let t = |st: &str| json!({"Status": {"State": st}});
        let ts = vec![
            t("new"),
            t("pending"),
            t("assigned"),
            t("preparing"),
            t("running"),
            t("running"),
            json!({}),
        ];
        assert_eq!(assigned_and_running(&ts), (4, 2));
        assert_eq!(assigned_and_running(&[]), (0, 0));
    }

    #[test]
    fn summarizes_tasks() {
        let ts = vec![
            json!({"DesiredState": "running", "Status": {"State": "running"}}),
            json!({"DesiredState": "running", "Status": {"State": "running"}}),
            json!({"DesiredState": "shutdown", "Status": {"State": "failed", "Err": "boom"}}),
        ];
        assert_eq!(
            summarize_tasks(&ts),
            "3 tasks (desired/state): running/running 2, shutdown/failed 1; first error: boom"
        );
        assert_eq!(summarize_tasks(&[]), "0 tasks (desired/state): ");
    }

    #[test]
    fn finds_mounts_under_a_root_deepest_first() {
        let info = "22 1 0:21 / /tmp/sbd-x rw - tmpfs t rw\n\
                    30 22 0:40 / /tmp/sbd-x/data/overlay2/abc/merged rw - overlay o rw\n\
                    31 22 0:41 / /tmp/sbd-x/exec/netns/ingress_sbox rw - nsfs n rw\n\
                    32 1 0:42 / /tmp/sbd-xy rw - tmpfs t rw\n\
                    33 1 0:43 / /tmp/other rw - tmpfs t rw\n";
        assert_eq!(
            mounts_under(info, Path::new("/tmp/sbd-x")),
            vec![
                PathBuf::from("/tmp/sbd-x/data/overlay2/abc/merged"),
                PathBuf::from("/tmp/sbd-x/exec/netns/ingress_sbox"),
                PathBuf::from("/tmp/sbd-x"),
            ]
        );
    }

    #[test]
    fn matches_command_lines_and_reads_pss() {
        assert!(cmdline_mentions(
            b"containerd-shim\0-address\0/tmp/sbd-x/exec/c.sock\0",
            "/tmp/sbd-x"
        ));
        assert!(!cmdline_mentions(b"sleep\x003600\0", "/tmp/sbd-x"));
        assert!(!cmdline_mentions(b"anything\0", ""));
        assert_eq!(
            pss_kb("Rss:   100 kB\nPss:                1234 kB\nPss_Anon: 5 kB\n"),
            Some(1234)
        );
        assert_eq!(pss_kb("Rss: 1 kB\n"), None);
    }

    #[test]
    fn ratios_and_cells() {
        let ms = Duration::from_millis;
        assert_eq!(ratio(ms(500), ms(5000)), "0.100 (10.0x faster)");
        assert_eq!(ratio(ms(3000), ms(1000)), "3.000 (3.0x slower)");
        assert_eq!(ratio(ms(0), ms(1000)), "-");
        assert_eq!(
            cell(&[ms(3000), ms(1000), ms(2000)]),
            "2.000 s (1.000-3.000)"
        );
        assert_eq!(cell(&[]), "-");
    }

    #[test]
    fn parallel_jobs_keep_their_order_and_fail_as_a_whole() {
        let out = parallel(50, |i| Ok(i * 2)).unwrap();
        assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(parallel(0, Ok).unwrap(), Vec::<usize>::new());
        let e = parallel(40, |i| {
            ensure!(i != 17, "job {i} failed");
            Ok(i)
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "job 17 failed");
    }

    #[test]
    fn runs_commands_with_a_limit() {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "echo hi"]);
        assert_eq!(run_cmd(c, "echo", Duration::from_secs(10)).unwrap(), "hi\n");
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "echo oops >&2; exit 3"]);
        let e = run_cmd(c, "failing", Duration::from_secs(10)).unwrap_err();
        assert!(format!("{e:#}").contains("oops"), "{e:#}");
        let mut c = Command::new("/bin/sleep");
        c.arg("30");
        let t = Instant::now();
        assert!(run_cmd(c, "sleep", Duration::from_millis(200)).is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
