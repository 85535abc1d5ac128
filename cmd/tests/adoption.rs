//! End-to-end tests of daemon restarts: containers outlive a daemon killed with SIGKILL and
//! are re-adopted by the next one (also an upgraded binary), with their PID, logs, stop and
//! exec; containers that ended meanwhile show their real exit and output.

mod common;

use std::io::BufRead;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use shoal_testkit::daemon::Daemon;

/// The last `tickN` number in a container's logs.
fn last_tick(d: &Daemon, name: &str) -> u64 {
    logs(d, name)
        .lines()
        .filter_map(|l| l.strip_prefix("tick")?.parse().ok())
        .max()
        .unwrap_or(0)
}

const TICKER: &str = "i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.1; done";

/// A host directory bind-mounted at /sig: the test creates files there to make the
/// container act while no daemon runs.
fn signal_dir(d: &Daemon) -> (std::path::PathBuf, String) {
    let dir = d.root.path().join("sig");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = format!("{}:/sig", dir.display());
    (dir, spec)
}

/// Requirement 7: containers keep running while the daemon is dead (SIGKILL); after the
/// restart `ps` shows them running with the same PID, `logs -f` sees new lines, `exec`
/// and `stop` work.
#[test]
fn containers_survive_daemon_kill() {
    let mut d = daemon();
    let id = run_d(&d, &["--name", "survivor", "busybox", "sh", "-c", TICKER]);
    let other = run_d(&d, &["--name", "other", "busybox", "sleep", "1000"]);
    let other_pid = pid(&d, "other");
    let pid = pid(&d, "survivor");
    assert!(d.wait_for(Duration::from_secs(10), || last_tick(&d, "survivor") >= 2));

    d.kill9();
    let log_file = d
        .data
        .join("containers")
        .join(&id)
        .join("logs/container.log");
    let size_before = std::fs::metadata(&log_file).unwrap().len();
    std::thread::sleep(Duration::from_millis(600));
    assert!(alive(pid), "the container died with the daemon");
    assert!(alive(other_pid));
    // The container's output is still collected while no daemon runs.
    assert!(
        std::fs::metadata(&log_file).unwrap().len() > size_before,
        "no log written while the daemon was down"
    );

    d.restart(None).unwrap();
    let ps = d.ok(&["ps", "-q", "--no-trunc"]);
    let mut listed: Vec<&str> = ps.lines().collect();
    listed.sort();
    let mut want = vec![id.as_str(), other.as_str()];
    want.sort();
    assert_eq!(listed, want, "ps after restart");
    let st = &inspect(&d, "survivor")["State"];
    assert_eq!(st["Status"], "running", "{st}");
    assert_eq!(st["Pid"], pid, "{st}");
    assert_eq!(inspect(&d, "other")["State"]["Pid"], other_pid);

    // logs -f streams lines written after the restart and ends when the container stops.
    let seen = last_tick(&d, "survivor");
    let mut child = d
        .cli()
        .args(["logs", "-f", "--tail", "0", "survivor"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let n: u64 = line.strip_prefix("tick").unwrap().parse().unwrap();
    assert!(n > seen, "logs -f printed an old line {line} (had {seen})");

    assert_eq!(exec_ok(&d, "survivor", &["echo", "exec-ok"]), "exec-ok\n");
    d.ok(&["stop", "-t", "1", "survivor"]);
    let st = &inspect(&d, "survivor")["State"];
    assert_eq!(st["Status"], "exited");
    assert_eq!(st["ExitCode"], 137);
    assert!(!alive(pid));
    // logs -f ended with the container.
    assert!(
        d.wait_for(Duration::from_secs(10), || child
            .try_wait()
            .unwrap()
            .is_some()),
        "logs -f did not end after stop"
    );
    d.ok(&["kill", "other"]);
    assert!(!alive(other_pid));
    assert_eq!(d.decoy_log(), "");
}

/// Requirement 7: a container that exits while the daemon is down is shown exited with its
/// real exit code and its final output after the restart; a `--rm` one is removed.
#[test]
fn exit_while_daemon_down() {
    let mut d = daemon();
    let (sig, bind) = signal_dir(&d);
    run_d(
        &d,
        &[
            "--name",
            "leaver",
            "-v",
            &bind,
            "busybox",
            "sh",
            "-c",
            "echo started; while [ ! -f /sig/go ]; do sleep 0.05; done; echo last-words; echo on-stderr >&2; exit 42",
        ],
    );
    let rm_id = run_d(
        &d,
        &[
            "--rm",
            "-v",
            &bind,
            "busybox",
            "sh",
            "-c",
            "while [ ! -f /sig/go ]; do sleep 0.05; done; exit 3",
        ],
    );
    let rm_pid = pid(&d, &rm_id);
    let pid = pid(&d, "leaver");
    wait_log(&d, "leaver", "started", 10);

    d.kill9();
    std::fs::write(sig.join("go"), "").unwrap();
    let gone = d.wait_for(Duration::from_secs(10), || !alive(pid) && !alive(rm_pid));
    assert!(gone, "the containers did not exit");
    d.restart(None).unwrap();

    let st = &inspect(&d, "leaver")["State"];
    assert_eq!(st["Status"], "exited", "{st}");
    assert_eq!(st["ExitCode"], 42, "{st}");
    assert_eq!(st["Running"], false);
    assert_ne!(st["FinishedAt"], "0001-01-01T00:00:00Z");
    assert!(
        d.ok(&["ps", "-a", "--filter", "name=leaver"])
            .contains("Exited (42)")
    );
    let o = d.run(&["logs", "leaver"]);
    assert_eq!(stdout(&o), "started\nlast-words\n");
    assert_eq!(stderr(&o), "on-stderr\n");
    assert_eq!(d.ok(&["container", "wait", "leaver"]), "42\n");

    assert!(
        d.wait_for(Duration::from_secs(10), || !d
            .ok(&["ps", "-aq", "--no-trunc"])
            .contains(&rm_id)),
        "the --rm container that exited while the daemon was down was not removed"
    );
    assert!(!d.data.join("containers").join(&rm_id).exists());
    // The exited container starts again under the new daemon.
    std::fs::remove_file(sig.join("go")).unwrap();
    d.ok(&["start", "leaver"]);
    assert_eq!(status(&d, "leaver"), "running");
    std::fs::write(sig.join("go"), "").unwrap();
    assert_eq!(wait_exited(&d, "leaver", 10), 42);
}

/// Requirement 7: an upgrade — the daemon restarted from a copy of the binary at another
/// path — adopts the running containers.
#[test]
fn upgrade_adopts_containers() {
    let mut d = daemon();
    let id = run_d(&d, &["--name", "old-timer", "busybox", "sh", "-c", TICKER]);
    let pid = pid(&d, "old-timer");
    let copy = d.root.path().join("bin-v2/shoal");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(bin(), &copy).unwrap();

    d.restart(Some(&copy)).unwrap();
    let exe = std::fs::read_link(format!("/proc/{}/exe", d.pid().unwrap())).unwrap();
    assert_eq!(exe, copy, "the daemon did not restart from the copy");
    let st = &inspect(&d, "old-timer")["State"];
    assert_eq!(st["Status"], "running");
    assert_eq!(st["Pid"], pid);
    let seen = last_tick(&d, "old-timer");
    assert!(
        d.wait_for(Duration::from_secs(10), || last_tick(&d, "old-timer")
            > seen)
    );
    assert_eq!(exec_ok(&d, &id, &["echo", "upgraded"]), "upgraded\n");
    // New containers work under the new binary too.
    let o = d.run(&["run", "--rm", "busybox", "echo", "new"]);
    assert_eq!(stdout(&o), "new\n", "{}", show(&o));
    d.ok(&["stop", "-t", "1", "old-timer"]);
    assert_eq!(inspect(&d, "old-timer")["State"]["ExitCode"], 137);
    assert!(!alive(pid));
}

/// Requirement 7: several restarts in a row, and a paused container stays paused across one.
#[test]
fn repeated_restarts_and_paused_state() {
    let mut d = daemon();
    run_d(&d, &["--name", "steady", "busybox", "sh", "-c", TICKER]);
    run_d(&d, &["--name", "frozen", "busybox", "sh", "-c", TICKER]);
    let pid = pid(&d, "steady");
    d.ok(&["container", "pause", "frozen"]);
    let frozen_at = last_tick(&d, "frozen");
    for _ in 0..3 {
        d.restart(None).unwrap();
        assert_eq!(inspect(&d, "steady")["State"]["Pid"], pid);
    }
    let st = &inspect(&d, "frozen")["State"];
    assert_eq!(st["Paused"], true, "{st}");
    assert_eq!(last_tick(&d, "frozen"), frozen_at, "a paused container ran");
    d.ok(&["container", "unpause", "frozen"]);
    assert!(
        d.wait_for(Duration::from_secs(10), || last_tick(&d, "frozen")
            > frozen_at)
    );
    // Killing an adopted container reports its exit at once.
    d.ok(&["kill", "steady"]);
    assert_eq!(inspect(&d, "steady")["State"]["ExitCode"], 137);
    assert!(!alive(pid));
}
