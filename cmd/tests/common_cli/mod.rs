//! Shared helpers of the CLI end-to-end tests (daemon.rs, images.rs, registry.rs,
//! output.rs): daemons, images, registries, and an independent model of Docker's table
//! layout. Each test file uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_testkit::daemon::{Daemon, DaemonOptions};
use shoal_testkit::images::{BuiltImage, ImageBuilder};
use shoal_testkit::registry::{REGISTRY_BIN, Registry, RegistryOptions};

/// The `shoal` binary under test.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_shoal"))
}

/// A daemon with default options.
pub fn daemon() -> Daemon {
    Daemon::start(bin()).expect("start shoal daemon")
}

/// A daemon with options.
pub fn daemon_with(opts: DaemonOptions) -> Daemon {
    Daemon::start_with(bin(), opts).expect("start shoal daemon")
}

/// Stdout of an output, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr of an output, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the CLI and asserts it fails; returns the output.
pub fn fails(d: &Daemon, args: &[&str]) -> Output {
    let o = d.run(args);
    assert!(
        !o.status.success(),
        "shoal {args:?} should have failed:\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    o
}

/// Runs a CLI command with `input` on stdin.
pub fn with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn shoal");
    let mut sin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait shoal");
    let _ = writer.join();
    out
}

/// Writes a `docker save` archive of `img` named `tags` into the daemon's temp root.
pub fn docker_archive(
    d: &Daemon,
    file: &str,
    img: &ImageBuilder,
    tags: &[&str],
) -> (PathBuf, BuiltImage) {
    let p = d.root.path().join(file);
    let built = img
        .write_docker_archive(&p, tags, false)
        .expect("write docker archive");
    (p, built)
}

/// Imports a busybox image named `tag` (a `docker save` archive); returns its ID.
pub fn import_busybox(d: &Daemon, tag: &str) -> String {
    let (p, built) = docker_archive(
        d,
        &format!("{}.tar", tag.replace([':', '/'], "_")),
        &ImageBuilder::busybox(),
        &[tag],
    );
    d.ok(&["image", "import", p.to_str().unwrap()]);
    built.config_digest
}

/// The first 12 hex digits of an ID.
pub fn short(id: &str) -> String {
    id.trim_start_matches("sha256:")[..12].to_owned()
}

/// Names in a directory (sorted), hidden ones included; empty when it does not exist.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Lines of text, trailing newline ignored.
pub fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_owned).collect()
}

/// Docker's table layout, modelled independently of the product: Go's `text/tabwriter`
/// as the docker CLI configures it (`NewWriter(out, 10, 1, 3, ' ', 0)`): every cell but the
/// last of a line is padded to the widest cell of its column plus 3, at least 10; the last
/// cell is written as is.
pub fn tabwrite(rows: &[Vec<String>]) -> String {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; ncols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                widths[i] = widths[i].max((c.chars().count() + 3).max(10));
            }
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                out.push_str(&" ".repeat(widths[i] - c.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

/// Splits a table printed by the CLI into cells, using the column starts of its header
/// (`headers` are the header cells, in order).
pub fn split_table(text: &str, headers: &[&str]) -> Vec<Vec<String>> {
    let mut ls = text.lines();
    let head = ls.next().expect("a header line");
    let mut starts = Vec::new();
    let mut from = 0;
    for h in headers {
        let at = head[from..]
            .find(h)
            .unwrap_or_else(|| panic!("header {h:?} in {head:?}"))
            + from;
        starts.push(at);
        from = at + h.len();
    }
    let cut = |line: &str| -> Vec<String> {
        let chars: Vec<char> = line.chars().collect();
        starts
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let e = starts
                    .get(i + 1)
                    .copied()
                    .unwrap_or(chars.len())
                    .min(chars.len());
                chars[s.min(chars.len())..e]
                    .iter()
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect()
    };
    std::iter::once(head).chain(ls).map(cut).collect()
}

/// Asserts `text` is exactly the tabwriter layout of its own cells (split at the header's
/// column starts): proves the alignment rule, whatever the cell values. Returns the rows.
pub fn assert_docker_table(text: &str, headers: &[&str]) -> Vec<Vec<String>> {
    let rows = split_table(text, headers);
    assert_eq!(
        rows[0],
        headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        "header cells of {text:?}"
    );
    assert_eq!(
        tabwrite(&rows),
        text,
        "table layout differs from docker's tabwriter"
    );
    rows
}

/// Skips (loudly) when Debian's docker-registry is missing.
pub fn have_registry() -> bool {
    if Path::new(REGISTRY_BIN).exists() {
        true
    } else {
        eprintln!("SKIP: {REGISTRY_BIN} missing (Debian package docker-registry)");
        false
    }
}

/// A plain-HTTP registry with no auth.
pub fn registry() -> Registry {
    Registry::start(RegistryOptions::default()).expect("start docker-registry")
}

/// A registry serving `storage` with these options.
pub fn registry_on(storage: &Path, mut opts: RegistryOptions) -> Registry {
    opts.storage_dir = Some(storage.to_owned());
    Registry::start(opts).expect("start docker-registry")
}

/// A registry behind a bearer-token issuer, with the plain registry it shares storage
/// with (kept alive) and the image it holds.
pub struct TokenRegistry {
    pub registry: Registry,
    pub plain: Registry,
    pub issuer: shoal_testkit::token::TokenIssuer,
    pub built: BuiltImage,
}

/// A [`TokenRegistry`] whose issuer knows `user`/`password`, holding busybox under each of
/// `repos` (e.g. `private/busybox:latest`).
pub fn token_registry(tmp: &Path, repos: &[&str], user: &str, password: &str) -> TokenRegistry {
    let plain = registry();
    let (dir, built) = layout(tmp, "busybox", &ImageBuilder::busybox());
    for repo in repos {
        plain
            .push_layout(&dir, repo, shoal_testkit::registry::PushFormat::Oci, false)
            .expect("push");
    }
    let issuer = shoal_testkit::token::TokenIssuer::start(
        &[(user, password)],
        "shoal-test-registry",
        "shoal-test-issuer",
    )
    .expect("token issuer");
    let registry = registry_on(
        &plain.storage_dir,
        RegistryOptions {
            token: Some(issuer.token_registry_config()),
            ..RegistryOptions::default()
        },
    );
    TokenRegistry {
        registry,
        plain,
        issuer,
        built,
    }
}

/// Writes `img` as an OCI layout in a fresh dir under `root` and returns that dir.
pub fn layout(root: &Path, name: &str, img: &ImageBuilder) -> (PathBuf, BuiltImage) {
    let dir = root.join(format!("layout-{name}"));
    let built = img
        .write_oci_layout(&dir, Some("latest"), None)
        .expect("write layout");
    (dir, built)
}

/// A `shoal daemon` started by hand (for flags the testkit daemon fixes, and for daemons
/// that are expected to refuse to start). Dropping it removes its containers and kills it.
pub struct RawDaemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub data: PathBuf,
    pub stderr_lines: mpsc::Receiver<String>,
    /// Where the daemon's stderr is appended.
    pub log: PathBuf,
    umount_under: PathBuf,
}

/// Spawns `shoal daemon ARGS`; `socket` and `data` are what `args` name (for the CLI and
/// cleanup), stderr is appended to `log`, mounts under `umount_under` are cleaned on drop.
pub fn spawn_daemon(
    args: &[&str],
    socket: &Path,
    data: &Path,
    log: &Path,
    umount_under: &Path,
) -> RawDaemon {
    let mut cmd = Command::new(bin());
    cmd.arg("daemon");
    cmd.args(args);
    cmd.env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn shoal daemon");
    let err = child.stderr.take().expect("daemon stderr");
    let (tx, rx) = mpsc::channel();
    let log_path = log.to_owned();
    std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .ok();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(f) = f.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            // Nobody may listen any more: keep draining into the log anyway.
            let _ = tx.send(line);
        }
    });
    RawDaemon {
        child: Some(child),
        socket: socket.to_owned(),
        data: data.to_owned(),
        stderr_lines: rx,
        log: log.to_owned(),
        umount_under: umount_under.to_owned(),
    }
}

impl RawDaemon {
    /// Waits for the ready line; false (with the daemon exited or silent) otherwise.
    pub fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.stderr_lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains("shoal daemon ready on") => return true,
                _ => {
                    if let Some(c) = self.child.as_mut()
                        && let Ok(Some(_)) = c.try_wait()
                    {
                        return false;
                    }
                }
            }
        }
        false
    }

    /// Waits for the daemon to exit; its status, or None when it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything the daemon wrote on stderr so far.
    pub fn log_text(&self) -> String {
        // Give the reader thread a moment to append the last lines.
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A CLI command aimed at this daemon.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("SHOAL_HOST", format!("unix://{}", self.socket.display()))
            .env("SHOAL_CONFIG", self.data.join("client-config"))
            .stdin(Stdio::null());
        c
    }

    /// Runs the CLI, panics unless it succeeds, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli().args(args).output().expect("run shoal");
        assert!(
            o.status.success(),
            "shoal {args:?} failed: {}\n{}\ndaemon log:\n{}",
            stdout(&o),
            stderr(&o),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        stdout(&o)
    }
}

impl Drop for RawDaemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            if let Ok(o) = self.cli().args(["ps", "-aq", "--no-trunc"]).output() {
                for id in stdout(&o).lines() {
                    let _ = self.cli().args(["rm", "-f", id]).output();
                }
            }
            let _ = child.kill();
        }
        let _ = child.wait();
        // A killed daemon cannot remove its cgroup parent.
        shoal_testkit::daemon::kill_cgroup_tree(&shoal_runtime::cgroups::default_parent(
            &self.data,
            Path::new("/var/lib/shoal"),
        ));
        let root = self.umount_under.display().to_string();
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
