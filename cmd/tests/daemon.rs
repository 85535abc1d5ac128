//! End-to-end tests of `shoal daemon` and of how the CLI reaches it, through the real
//! binary: node-runtime issue, requirement 1 (daemon flags, isolation of side-by-side
//! daemons, long paths, stale sockets, refusals) and requirement 2 (`-H`/`SHOAL_HOST`,
//! unreachable daemon, `version`, `info`).

mod common_cli;

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common_cli::*;
use serde_json::Value;
use shoal_testkit::daemon::DaemonOptions;
use shoal_testkit::images::ImageBuilder;

/// The one line a CLI prints when it cannot reach the daemon at `socket`.
fn assert_cannot_connect(o: &std::process::Output, socket: &Path, what: &str) {
    assert!(
        !o.status.success(),
        "{what}: must fail when the daemon is unreachable"
    );
    let err = stderr(o);
    assert_eq!(
        err.lines().count(),
        1,
        "{what}: exactly one line on stderr, got {err:?}"
    );
    assert!(err.ends_with('\n'), "{what}: {err:?}");
    let want = format!(
        "Cannot connect to the shoal daemon at unix://{}",
        socket.display()
    );
    assert!(
        err.starts_with(&want),
        "{what}: {err:?} should start with {want:?}"
    );
}

/// Requirement 1: two daemons side by side with their own data dir, run dir and socket do
/// not see each other's images or containers. Requirement 2: `-H unix:///path` and
/// `SHOAL_HOST` pick the daemon (`-H` wins over `SHOAL_HOST`).
#[test]
fn side_by_side_daemons_are_isolated_and_host_selects_one() {
    let a = daemon();
    let b = daemon();
    let id = import_busybox(&a, "busybox:latest");
    let cid = a
        .ok(&["run", "-d", "--name", "web", "busybox", "sleep", "300"])
        .trim()
        .to_owned();
    assert_eq!(cid.len(), 64, "run -d prints the full ID: {cid:?}");

    assert_eq!(a.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    assert_eq!(a.ok(&["ps", "-q", "--no-trunc"]).trim(), cid);
    assert_eq!(b.ok(&["images", "-q"]), "", "b sees no image of a");
    assert_eq!(b.ok(&["ps", "-aq"]), "", "b sees no container of a");
    assert!(
        entries(&b.data.join("images/layers")).is_empty(),
        "b shares no layer dir with a"
    );
    let o = fails(&b, &["rm", "-f", "web"]);
    assert_eq!(
        stderr(&o),
        "Error response from daemon: No such container: web\n"
    );

    // The same name is free in b; a container of b stays invisible to a.
    import_busybox(&b, "busybox:latest");
    let bid = b
        .ok(&["run", "-d", "--name", "web", "busybox", "sleep", "300"])
        .trim()
        .to_owned();
    assert_ne!(bid, cid);
    assert_eq!(a.ok(&["ps", "-aq", "--no-trunc"]).trim(), cid);
    assert_eq!(b.ok(&["ps", "-aq", "--no-trunc"]).trim(), bid);

    // SHOAL_HOST alone picks the daemon.
    for (d, want) in [(&a, &cid), (&b, &bid)] {
        let o = Command::new(bin())
            .env("SHOAL_HOST", d.host())
            .args(["ps", "-q", "--no-trunc"])
            .output()
            .unwrap();
        assert_eq!(stdout(&o).trim(), want.as_str(), "SHOAL_HOST={}", d.host());
    }
    // -H (and --host) win over SHOAL_HOST: b's CLI environment, a's socket.
    for flag in ["-H", "--host"] {
        let o = b
            .cli()
            .args([flag, &a.host(), "ps", "-q", "--no-trunc"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o).trim(), cid, "{flag} picks a over SHOAL_HOST=b");
    }
    // A plain path works for -H as well as unix://.
    let o = Command::new(bin())
        .args([
            "-H",
            a.socket.to_str().unwrap(),
            "images",
            "-q",
            "--no-trunc",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), id);
}

fn long_dir(root: &Path) -> std::path::PathBuf {
    root.join("a".repeat(50))
        .join("b".repeat(50))
        .join("c".repeat(20))
}

/// Requirement 1: a run dir longer than 108 bytes (so its default socket path is too) works
/// for the daemon, the CLI and containers.
#[test]
fn long_run_dir_works() {
    let root = tempfile::Builder::new()
        .prefix("shoal-long-")
        .tempdir()
        .unwrap();
    let run = long_dir(root.path()).join("run");
    let data = root.path().join("data");
    let socket = run.join("shoal.sock");
    assert!(
        run.as_os_str().len() > 108,
        "{} is long enough",
        run.display()
    );
    let mut d = spawn_daemon(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--run-dir",
            run.to_str().unwrap(),
            "--registry-certs-dir",
            root.path().join("certs").to_str().unwrap(),
        ],
        &socket,
        &data,
        &root.path().join("daemon.log"),
        root.path(),
    );
    assert!(
        d.wait_ready(Duration::from_secs(30)),
        "daemon not ready:\n{}",
        d.log_text()
    );
    assert!(
        socket.exists(),
        "the default socket is <run-dir>/shoal.sock"
    );
    assert!(d.ok(&["version"]).contains("Server: shoal"));

    let archive = root.path().join("busybox.tar");
    ImageBuilder::busybox()
        .write_docker_archive(&archive, &["busybox:latest"], false)
        .unwrap();
    d.ok(&["image", "import", archive.to_str().unwrap()]);
    let o = d
        .cli()
        .args(["run", "--rm", "busybox", "echo", "hello"])
        .output()
        .unwrap();
    assert_eq!(
        (stdout(&o).as_str(), o.status.code()),
        ("hello\n", Some(0)),
        "{}",
        stderr(&o)
    );
    let id = d
        .ok(&["run", "-d", "busybox", "sleep", "300"])
        .trim()
        .to_owned();
    let o = d
        .cli()
        .args(["exec", &id, "echo", "inside"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "inside\n", "{}", stderr(&o));
    d.ok(&["rm", "-f", &id]);
    assert_eq!(d.ok(&["ps", "-aq"]), "");
}

/// Requirement 1: `--socket` with a path longer than 108 bytes works.
#[test]
fn long_socket_path_works() {
    let holder = tempfile::Builder::new()
        .prefix("shoal-sock-")
        .tempdir()
        .unwrap();
    let socket = long_dir(holder.path()).join("api").join("shoal.sock");
    assert!(socket.as_os_str().len() > 108);
    let d = daemon_with(DaemonOptions {
        socket: Some(socket.clone()),
        ..DaemonOptions::default()
    });
    assert!(socket.exists());
    import_busybox(&d, "busybox:latest");
    let o = d.run(&["run", "--rm", "busybox", "echo", "ok"]);
    assert_eq!(stdout(&o), "ok\n", "{}", stderr(&o));
    let o = Command::new(bin())
        .args([
            "-H",
            &format!("unix://{}", socket.display()),
            "images",
            "--format",
            "{{.Repository}}",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "busybox\n", "{}", stderr(&o));
}

/// Requirement 1: a daemon started after `kill -9` replaces the stale socket the killed one
/// left behind (and until then the CLI says it cannot connect).
#[test]
fn restart_after_kill9_replaces_stale_socket() {
    let mut d = daemon();
    let id = import_busybox(&d, "busybox:latest");
    d.kill9();
    assert!(d.socket.exists(), "kill -9 leaves the socket file behind");
    assert_cannot_connect(&d.run(&["ps"]), &d.socket, "ps on a stale socket");
    d.restart(None)
        .expect("a new daemon replaces the stale socket");
    assert_eq!(d.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    let o = d.run(&["run", "--rm", "busybox", "echo", "back"]);
    assert_eq!(stdout(&o), "back\n", "{}", stderr(&o));
}

/// Requirement 1: a second daemon on the same data dir is refused with a clear error, and the
/// first keeps serving.
#[test]
fn second_daemon_on_same_data_dir_is_refused() {
    let d = daemon();
    let other = tempfile::tempdir().unwrap();
    let socket = other.path().join("second.sock");
    let mut r = spawn_daemon(
        &[
            "--data-dir",
            d.data.to_str().unwrap(),
            "--run-dir",
            other.path().join("run").to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
        ],
        &socket,
        &d.data,
        &other.path().join("daemon.log"),
        other.path(),
    );
    let status = r
        .wait_exit(Duration::from_secs(20))
        .expect("the second daemon must exit");
    assert!(!status.success());
    let log = r.log_text();
    let want = format!(
        "another shoal daemon is using the data directory {}",
        d.data.display()
    );
    assert!(log.contains(&want), "want {want:?} in:\n{log}");
    assert!(!socket.exists(), "the refused daemon did not listen");
    assert!(
        d.ok(&["info"]).contains("Shoal Root Dir"),
        "the first daemon still serves"
    );
}

/// Requirement 1: a daemon asked to listen on a socket another live daemon serves is refused,
/// and does not take the socket away from it.
#[test]
fn daemon_on_a_live_socket_is_refused() {
    let d = daemon();
    let id = import_busybox(&d, "busybox:latest");
    let other = tempfile::tempdir().unwrap();
    let data = other.path().join("data");
    let mut r = spawn_daemon(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--run-dir",
            other.path().join("run").to_str().unwrap(),
            "--socket",
            d.socket.to_str().unwrap(),
        ],
        &d.socket,
        &data,
        &other.path().join("daemon.log"),
        other.path(),
    );
    let status = r
        .wait_exit(Duration::from_secs(20))
        .expect("the second daemon must exit");
    assert!(!status.success());
    let log = r.log_text();
    let want = format!(
        "another shoal daemon is listening on unix://{}",
        d.socket.display()
    );
    assert!(log.contains(&want), "want {want:?} in:\n{log}");
    assert_eq!(
        d.ok(&["images", "-q", "--no-trunc"]).trim(),
        id,
        "the first daemon keeps its socket"
    );
}

/// Requirement 2: an unreachable daemon (no socket file, or a stale one) makes `ps`,
/// `images` and `info` print exactly one line saying so on stderr and exit non-zero.
#[test]
fn unreachable_daemon_is_one_line_and_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(
        stale.exists(),
        "a closed listener leaves a socket nobody answers on"
    );
    for sock in [&missing, &stale] {
        for cmd in [
            &["ps"][..],
            &["images"],
            &["info"],
            &["ps", "-a"],
            &["image", "ls"],
        ] {
            let o = Command::new(bin())
                .env("SHOAL_HOST", format!("unix://{}", sock.display()))
                .args(cmd)
                .output()
                .unwrap();
            assert_eq!(stdout(&o), "", "{cmd:?}: nothing on stdout");
            assert_cannot_connect(&o, sock, &format!("{cmd:?} on {}", sock.display()));
            let o = Command::new(bin())
                .args(["-H", &format!("unix://{}", sock.display())])
                .args(cmd)
                .output()
                .unwrap();
            assert_cannot_connect(&o, sock, &format!("-H {cmd:?}"));
        }
    }
}

/// Requirement 2: `version` prints the client's and the daemon's version; with the daemon
/// down it prints the client part, then fails.
#[test]
fn version_shows_client_and_daemon() {
    let mut d = daemon();
    let v = env!("CARGO_PKG_VERSION");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let out = d.ok(&["version"]);
    assert!(
        out.starts_with(&format!("Client:\n Version:           {v}\n")),
        "{out}"
    );
    let server = out
        .split_once("Server: shoal\n")
        .map(|x| x.1)
        .unwrap_or_else(|| panic!("no server part:\n{out}"));
    assert!(
        server.contains(&format!("  Version:          {v}\n")),
        "{out}"
    );
    assert!(
        server.contains(&format!("  Kernel Version:   {}\n", kernel.trim())),
        "{out}"
    );
    let j: Value = serde_json::from_str(&d.ok(&["version", "--format", "json"])).unwrap();
    assert_eq!(j["Client"]["Version"], v);
    assert_eq!(j["Server"]["Version"], v);
    assert_eq!(
        d.ok(&["version", "--format", "{{.Server.Version}}"]),
        format!("{v}\n")
    );

    d.terminate();
    let o = d.run(&["version"]);
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!("Client:\n Version:           {v}\n")),
        "{out}"
    );
    assert!(
        !out.contains("Server"),
        "no server part when the daemon is down: {out}"
    );
    assert_cannot_connect(&o, &d.socket, "version");
}

/// The value of the `info` line that starts with `prefix` (leading spaces included).
fn info_line<'a>(info: &'a str, prefix: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{info}"))
}

/// Requirement 2: `info` shows the data dir, cgroup version, kernel, running and stopped
/// container counts, image count, storage used and the WireGuard backend.
#[test]
fn info_shows_node_facts() {
    let d = daemon();
    let empty = d.ok(&["info"]);
    assert_eq!(info_line(&empty, " Images: "), "0");
    assert_eq!(info_line(&empty, " Containers: "), "0");

    let id = import_busybox(&d, "busybox:latest");
    d.ok(&["run", "-d", "--name", "up", "busybox", "sleep", "300"]);
    d.ok(&["run", "--name", "down", "busybox", "true"]);
    let info = d.ok(&["info"]);
    assert_eq!(
        info_line(&info, " Shoal Root Dir: "),
        d.data.to_str().unwrap()
    );
    assert_eq!(info_line(&info, " Run Dir: "), d.run.to_str().unwrap());
    assert_eq!(info_line(&info, " Containers: "), "2");
    assert_eq!(info_line(&info, "  Running: "), "1");
    assert_eq!(info_line(&info, "  Paused: "), "0");
    assert_eq!(info_line(&info, "  Stopped: "), "1");
    assert_eq!(info_line(&info, " Images: "), "1");
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    };
    assert_eq!(info_line(&info, " Cgroup Version: "), cgroup);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(info_line(&info, " Kernel Version: "), kernel.trim());
    let wg = info_line(&info, " WireGuard: ");
    let release = kernel.trim();
    let loadable = std::fs::read_to_string(format!("/lib/modules/{release}/modules.dep"))
        .is_ok_and(|deps| deps.contains("/wireguard.ko"));
    if Path::new("/sys/module/wireguard").exists() || loadable {
        eprintln!("note: this host has the WireGuard module; expecting the kernel backend");
        assert_eq!(wg, "kernel");
    } else if Path::new("/dev/net/tun").exists() {
        assert!(
            wg.starts_with("userspace"),
            "no module, TUN present: {wg:?}"
        );
    } else {
        assert!(wg.starts_with("none"), "{wg:?}");
    }

    // Storage used counts at least the unpacked image.
    let used = info_line(&info, " Storage Used: ");
    assert_ne!(used, "0B");
    let j: Value = serde_json::from_str(&d.ok(&["info", "--format", "json"])).unwrap();
    let size: Value =
        serde_json::from_str(&d.ok(&["image", "inspect", "-f", "{{json .Size}}", &id])).unwrap();
    assert!(size.as_u64().unwrap() > 1_000_000);
    assert!(
        j["StorageUsed"].as_u64().unwrap() >= size.as_u64().unwrap(),
        "StorageUsed {} < image size {size}",
        j["StorageUsed"]
    );
    assert_eq!(j["RootDir"], d.data.to_str().unwrap());
    assert_eq!(j["ContainersRunning"], 1);
    assert_eq!(j["ContainersStopped"], 1);
    assert_eq!(j["Images"], 1);
}
