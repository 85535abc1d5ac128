//! Helpers shared by the node-runtime end-to-end tests: a daemon with busybox imported,
//! images with a custom config, and small polling and parsing helpers.
//!
//! Every test file includes this module and uses a different subset of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use shoal_testkit::daemon::{Daemon, DaemonOptions};
use shoal_testkit::images::ImageBuilder;

/// The `shoal` binary under test.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_shoal"))
}

/// The plain busybox image as a `docker save` archive, written once per test process.
pub fn busybox_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(dir).unwrap();
        let tmp = dir.join(format!("busybox.tar.{}", std::process::id()));
        ImageBuilder::busybox()
            .write_docker_archive(&tmp, &["busybox:latest"], false)
            .unwrap();
        // Other test binaries may write the same (deterministic) archive at the same time:
        // the rename is atomic, so readers always see a whole one.
        let path = dir.join("busybox.tar");
        std::fs::rename(&tmp, &path).unwrap();
        path
    })
}

/// A daemon with `busybox:latest` imported.
pub fn daemon() -> Daemon {
    daemon_with(DaemonOptions::default())
}

/// A daemon started with `opts`, with `busybox:latest` imported.
pub fn daemon_with(opts: DaemonOptions) -> Daemon {
    let d = Daemon::start_with(bin(), opts).unwrap();
    let out = d.ok(&["image", "import", busybox_archive().to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: busybox:latest");
    d
}

/// Imports an image built by `b` under `tag`.
pub fn import(d: &Daemon, b: ImageBuilder, tag: &str) {
    let archive = d
        .root
        .path()
        .join(format!("{}.tar", tag.replace([':', '/'], "_")));
    b.write_docker_archive(&archive, &[tag], false).unwrap();
    let out = d.ok(&["image", "import", archive.to_str().unwrap()]);
    assert_eq!(out.trim(), format!("Loaded image: {tag}"));
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Formats an output for an assertion message.
pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

/// `run -d` with `args` (everything after `run -d`); returns the full container ID.
pub fn run_d(d: &Daemon, args: &[&str]) -> String {
    let mut all = vec!["run", "-d"];
    all.extend_from_slice(args);
    let id = d.ok(&all).trim().to_owned();
    assert_eq!(id.len(), 64, "run -d prints the full ID, got {id:?}");
    id
}

/// `inspect` of one container as JSON.
pub fn inspect(d: &Daemon, name: &str) -> Value {
    let out = d.ok(&["inspect", name]);
    let v: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect JSON: {e}: {out}"));
    v.as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_else(|| panic!("inspect printed no object: {out}"))
}

/// The host PID of a running container's workload.
pub fn pid(d: &Daemon, name: &str) -> i32 {
    let v = inspect(d, name);
    let pid = v["State"]["Pid"].as_i64().unwrap_or(0) as i32;
    assert!(pid > 0, "container {name} has no pid: {}", v["State"]);
    pid
}

/// `exec` in a container; returns the output.
pub fn exec(d: &Daemon, name: &str, cmd: &[&str]) -> Output {
    let mut all = vec!["exec", name];
    all.extend_from_slice(cmd);
    d.run(&all)
}

/// `exec` that must succeed; returns its stdout.
pub fn exec_ok(d: &Daemon, name: &str, cmd: &[&str]) -> String {
    let o = exec(d, name, cmd);
    assert!(o.status.success(), "exec {cmd:?} in {name}: {}", show(&o));
    stdout(&o)
}

/// `logs` (stdout and stderr merged) of a container.
pub fn logs(d: &Daemon, name: &str) -> String {
    let o = d.run(&["logs", name]);
    assert!(o.status.success(), "logs {name}: {}", show(&o));
    format!("{}{}", stdout(&o), stderr(&o))
}

/// Waits (up to `secs`) until the container's logs contain `text`.
pub fn wait_log(d: &Daemon, name: &str, text: &str, secs: u64) {
    let found = d.wait_for(Duration::from_secs(secs), || logs(d, name).contains(text));
    assert!(
        found,
        "{name}'s logs never showed {text:?}; logs:\n{}",
        logs(d, name)
    );
}

/// The container's `State.Status`.
pub fn status(d: &Daemon, name: &str) -> String {
    inspect(d, name)["State"]["Status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The container's `State.Status`, or `None` while it does not exist.
pub fn try_status(d: &Daemon, name: &str) -> Option<String> {
    let o = d.run(&["inspect", "-f", "{{.State.Status}}", name]);
    o.status.success().then(|| stdout(&o).trim().to_owned())
}

/// Waits (up to `secs`) until the container has exited; returns its exit code.
pub fn wait_exited(d: &Daemon, name: &str, secs: u64) -> i64 {
    let done = d.wait_for(Duration::from_secs(secs), || status(d, name) == "exited");
    assert!(
        done,
        "{name} did not exit in {secs} s: {}",
        inspect(d, name)["State"]
    );
    inspect(d, name)["State"]["ExitCode"].as_i64().unwrap()
}

/// Whether a host process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command.
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X"),
        Err(_) => false,
    }
}

/// The cgroup v1 directory of `pid` for `controller` (e.g. `memory`, `pids`, `cpu,cpuacct`),
/// read from `/proc/<pid>/cgroup`. `None` when the host has no such v1 controller.
pub fn cgroup_dir(pid: i32, controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        if ctrls.split(',').any(|c| c == controller) {
            let base = Path::new("/sys/fs/cgroup").join(ctrls);
            let base = if base.exists() {
                base
            } else {
                Path::new("/sys/fs/cgroup").join(controller)
            };
            return Some(base.join(path.trim_start_matches('/')));
        }
    }
    None
}

/// Reads a small file and trims it.
pub fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_owned()
}
