//! A `shoal daemon` under test: its own data, run dir and socket in a temporary directory,
//! started from the real binary, ready when it prints its ready line; plus a CLI runner.
//! It may run inside a given network namespace and a new UTS namespace with its own
//! hostname ([`DaemonOptions::netns`], [`DaemonOptions::hostname`]): the multi-node harness
//! ([`crate::cluster`]) starts its nodes that way.
//!
//! Dropping it force-removes every container it made (containers outlive the daemon by
//! design), stops it, kills stray helpers and unmounts what is left under its directories.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How to start a daemon.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    /// `--insecure-registry` values.
    pub insecure_registries: Vec<String>,
    /// Extra daemon flags (`--log-max-size 1k`, …).
    pub args: Vec<String>,
    /// An explicit `--socket` (default `<run>/shoal.sock`).
    pub socket: Option<PathBuf>,
    /// `--registry-certs-dir` (default: an empty dir of the daemon's).
    pub certs_dir: Option<PathBuf>,
    /// A network namespace (a pinned nsfs file such as `/run/netns/NAME`) the daemon runs
    /// in. Only the network namespace is entered: the daemon keeps the host's mounts, so
    /// cgroups stay visible (unlike `ip netns exec`, which remounts `/sys`).
    pub netns: Option<PathBuf>,
    /// Run the daemon in a new UTS namespace with this hostname (distinct node names on one
    /// host). The test process's own hostname is untouched.
    pub hostname: Option<String>,
    /// Make the daemon's temporary root inside this directory (default: the system's
    /// temporary directory). Keep it short: the socket path must fit in 108 bytes.
    pub root_in: Option<PathBuf>,
}

/// A running daemon under test.
pub struct Daemon {
    /// The temporary root holding everything of this daemon.
    pub root: tempfile::TempDir,
    pub data: PathBuf,
    pub run: PathBuf,
    pub socket: PathBuf,
    /// Client config dir (`SHOAL_CONFIG`) for `login`.
    pub config: PathBuf,
    /// Directory put first in the daemon's PATH: it holds decoy `runc`, `crun`, `docker`,
    /// `containerd` and `ctr` scripts that record any call in [`Daemon::decoy_log`].
    pub decoys: PathBuf,
    pub bin: PathBuf,
    pub log: PathBuf,
    opts: DaemonOptions,
    child: Option<Child>,
}

const DECOYS: &[&str] = &[
    "runc",
    "crun",
    "docker",
    "dockerd",
    "containerd",
    "ctr",
    "containerd-shim",
    "youki",
];

impl Daemon {
    /// Starts a daemon with default options.
    pub fn start(bin: &Path) -> Result<Daemon> {
        Daemon::start_with(bin, DaemonOptions::default())
    }

    /// Starts a daemon.
    pub fn start_with(bin: &Path, opts: DaemonOptions) -> Result<Daemon> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("shoal-test-");
        let root = match &opts.root_in {
            Some(dir) => builder.tempdir_in(dir)?,
            None => builder.tempdir()?,
        };
        let data = root.path().join("data");
        let run = root.path().join("run");
        let config = root.path().join("client");
        let decoys = root.path().join("decoys");
        std::fs::create_dir_all(&decoys)?;
        let log_file = root.path().join("decoy-calls.log");
        for d in DECOYS {
            let p = decoys.join(d);
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\necho \"{d} $*\" >> {}\nexit 1\n",
                    log_file.display()
                ),
            )?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        }
        let socket = opts
            .socket
            .clone()
            .unwrap_or_else(|| run.join("shoal.sock"));
        let mut d = Daemon {
            log: root.path().join("daemon.log"),
            root,
            data,
            run,
            socket,
            config,
            decoys,
            bin: bin.to_owned(),
            opts,
            child: None,
        };
        d.spawn()?;
        Ok(d)
    }

    fn spawn(&mut self) -> Result<()> {
        let certs = self
            .opts
            .certs_dir
            .clone()
            .unwrap_or_else(|| self.root.path().join("certs.d"));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("daemon")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--run-dir")
            .arg(&self.run)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--registry-certs-dir")
            .arg(certs);
        for r in &self.opts.insecure_registries {
            cmd.arg("--insecure-registry").arg(r);
        }
        cmd.args(&self.opts.args);
        // Decoys first; then only what a minimal system has.
        cmd.env(
            "PATH",
            format!("{}:/usr/bin:/bin:/usr/sbin:/sbin", self.decoys.display()),
        );
        cmd.env("RUST_LOG", "info");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        cmd.stdout(Stdio::from(log.try_clone()?))
            .stdin(Stdio::null());
        cmd.stderr(Stdio::piped());
        // Opened before the fork (and close-on-exec): the child only calls setns(2) on it.
        let netns =
            match &self.opts.netns {
                Some(p) => Some(std::fs::File::open(p).with_context(|| {
                    format!("cannot open the network namespace {}", p.display())
                })?),
                None => None,
            };
        let hostname = self.opts.hostname.clone().map(String::into_bytes);
        if netns.is_some() || hostname.is_some() {
            let netns_fd = netns.as_ref().map(|f| f.as_raw_fd());
            // SAFETY: the closure runs between fork and exec and only makes raw syscalls
            // (setns, unshare, sethostname), which are async-signal-safe; it allocates
            // nothing (io::Error::last_os_error is a plain errno wrapper). The fd and the
            // hostname bytes were made before the fork and stay alive until spawn returns.
            unsafe {
                cmd.pre_exec(move || enter_namespaces(netns_fd, hostname.as_deref()));
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let stderr = child.stderr.take().context("no daemon stderr")?;
        let (tx, rx) = mpsc::channel();
        let mut log_out = log;
        std::thread::spawn(move || {
            use std::io::Write;
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log_out, "{line}");
                if !sent && line.contains("shoal daemon ready on") {
                    let _ = tx.send(());
                    sent = true;
                }
            }
        });
        drop(netns);
        self.child = Some(child);
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!("the daemon did not become ready in 30 s; its log:\n{log}");
        }
        Ok(())
    }

    /// `unix://` host URL of the socket.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `shoal` CLI command aimed at this daemon.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("SHOAL_HOST", self.host())
            .env("SHOAL_CONFIG", &self.config)
            .env("DOCKER_CONFIG", self.root.path().join("no-docker-config"))
            .stdin(Stdio::null());
        c
    }

    /// Runs the CLI with `args` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        match self.cli().args(args).output() {
            Ok(o) => o,
            Err(e) => panic!("cannot run {} {args:?}: {e}", self.bin.display()),
        }
    }

    /// Runs the CLI, panics (with its output) unless it succeeds, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        if !o.status.success() {
            panic!(
                "shoal {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log tail:\n{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                self.log_tail(40)
            );
        }
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs the CLI with `input` on its standard input (`swarm unlock` reads the key there).
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = match self
            .cli()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot run {} {args:?}: {e}", self.bin.display()),
        };
        if let Some(mut stdin) = child.stdin.take() {
            // A CLI that exits without reading is fine: its output says why.
            let _ = stdin.write_all(input.as_bytes());
        }
        match child.wait_with_output() {
            Ok(o) => o,
            Err(e) => panic!("cannot wait for {} {args:?}: {e}", self.bin.display()),
        }
    }

    /// Calls the daemon's HTTP API directly, for what Docker's API offers and its CLI has
    /// no flag for: returns the status code and the body.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket)
            .with_context(|| format!("connect to {}", self.socket.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: shoal\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("no HTTP header in the answer to {method} {path}: {text}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no status in the answer to {method} {path}: {head}"))?;
        let chunked = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        Ok((status, body))
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Calls any decoy runtime binary received (empty when shoal never used one).
    pub fn decoy_log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("decoy-calls.log")).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the daemon with SIGKILL (its containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the daemon again on the same directories (after [`Daemon::kill9`]), with
    /// the same binary or another one (an upgrade).
    pub fn restart(&mut self, bin: Option<&Path>) -> Result<()> {
        self.kill9();
        if let Some(b) = bin {
            self.bin = b.to_owned();
        }
        self.spawn()
    }

    /// Waits until `f` holds, polling every 50 ms, up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, f: impl FnMut() -> bool) -> bool {
        crate::cluster::wait_until(timeout, f)
    }
}

/// In a freshly forked child: joins the network namespace `netns_fd`, then a new UTS
/// namespace named `hostname`. Async-signal-safe: raw syscalls only.
pub(crate) fn enter_namespaces(
    netns_fd: Option<RawFd>,
    hostname: Option<&[u8]>,
) -> std::io::Result<()> {
    if let Some(fd) = netns_fd {
        // SAFETY: setns(2) on a descriptor we opened; affects only this (child) process.
        if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if let Some(name) = hostname {
        // SAFETY: unshare(2) of the UTS namespace of this (child) process only.
        if unsafe { libc::unshare(libc::CLONE_NEWUTS) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `name` is a live byte slice; its length is passed alongside.
        if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some()
            && self
                .cli()
                .args(["ps", "-aq", "--filter", "label=com.docker.swarm.task.id"])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty())
        {
            // A swarm node would replace removed task containers: leave first (that also
            // removes them).
            let _ = self.cli().args(["swarm", "leave", "--force"]).output();
        }
        if self.child.is_some()
            && let Ok(o) = self.cli().args(["ps", "-aq", "--no-trunc"]).output()
        {
            for id in String::from_utf8_lossy(&o.stdout).lines() {
                let _ = self.cli().args(["rm", "-f", id]).output();
            }
        }
        self.terminate();
        // Stray helpers (a test that killed the daemon mid-way).
        let marker = self.data.display().to_string();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&marker) {
                    // SAFETY: kill(2) of a process that runs one of our helpers.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        // Workloads whose helper was killed above live on in their cgroups: kill them and
        // remove the cgroups (the daemon removes its parent on a clean stop; a killed one
        // cannot).
        kill_cgroup_tree(&shoal_runtime::cgroups::default_parent(
            &self.data,
            Path::new("/var/lib/shoal"),
        ));
        // Unmount anything left under our root (deepest first).
        let root = self.root.path().display().to_string();
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut mps: Vec<String> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.starts_with(&root))
                .map(str::to_owned)
                .collect();
            mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mps {
                let _ = Command::new("umount").arg("-l").arg(&m).output();
            }
        }
    }
}

/// The body of a `Transfer-Encoding: chunked` answer.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Kills every process in the cgroup subtree `parent` (in every v1 hierarchy, or the v2
/// one) and removes the subtree, deepest first.
pub fn kill_cgroup_tree(parent: &str) {
    let rel = parent.trim_matches('/');
    if rel.is_empty() {
        return;
    }
    let roots: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(rel))
        .chain(std::iter::once(Path::new("/sys/fs/cgroup").join(rel)))
        .filter(|p| p.is_dir())
        .collect();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
        out.push(dir.to_owned());
    }
    let mut dirs = Vec::new();
    for r in &roots {
        walk(r, &mut dirs);
    }
    for _ in 0..50 {
        let mut alive = false;
        for d in &dirs {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                alive = true;
                // SAFETY: kill(2) of a process in this daemon's own cgroup subtree.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Children were pushed before their parents.
    for d in &dirs {
        let _ = std::fs::remove_dir(d);
    }
}
