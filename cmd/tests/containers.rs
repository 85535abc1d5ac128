//! End-to-end tests of the container verbs against the real `shoal` binary and kernel:
//! foreground and detached `run`, exit codes, `ps`, `logs`, `stop`, `kill`, `rm`, `exec`,
//! `inspect`, `stats`, `wait`, `pause`, the image configuration, log rotation, and that no
//! other container runtime binary is ever used.

mod common;

use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use shoal_testkit::daemon::DaemonOptions;
use shoal_testkit::images::{HealthcheckOptions, ImageBuilder};

// ----- run ---------------------------------------------------------------------------------

/// Requirement 1: foreground `run` streams stdout and stderr separately, nothing else on
/// stdout, and exits with the container's code (0 and 3); `--rm` leaves nothing behind.
#[test]
fn foreground_run_separates_streams_and_passes_exit_code() {
    let d = daemon();
    let o = d.run(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out1; echo err1 >&2; echo out2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(stdout(&o), "out1\nout2\n");
    assert_eq!(stderr(&o), "err1\n");

    let o = d.run(&["run", "--rm", "busybox", "echo", "hello"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(stdout(&o), "hello\n");
    assert_eq!(stderr(&o), "");

    // A big burst of output arrives complete and in order.
    let o = d.run(&["run", "--rm", "busybox", "seq", "1", "20000"]);
    assert_eq!(o.status.code(), Some(0));
    let expected: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    assert!(stdout(&o) == expected, "seq output differs");

    assert_eq!(d.ok(&["ps", "-aq"]), "", "--rm left a container behind");
}

/// Requirement 1: stdout of `run` carries only the container's output even when the image
/// is pulled first (pull progress and notices go to stderr).
#[test]
fn run_with_pull_keeps_stdout_clean() {
    let reg = match shoal_testkit::registry::Registry::start(Default::default()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("SKIP run_with_pull_keeps_stdout_clean: no docker-registry: {e}");
            return;
        }
    };
    let d = daemon_with(DaemonOptions {
        insecure_registries: vec![reg.addr.clone()],
        ..Default::default()
    });
    let layout = d.root.path().join("layout");
    ImageBuilder::busybox()
        .write_oci_layout(&layout, Some("latest"), None)
        .unwrap();
    reg.push_layout(
        &layout,
        "bb:1",
        shoal_testkit::registry::PushFormat::Oci,
        false,
    )
    .unwrap();
    let image = format!("{}/bb:1", reg.addr);
    let o = d.run(&["run", "--rm", &image, "echo", "only-this"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(stdout(&o), "only-this\n");
    assert!(
        stderr(&o).contains(&format!("Unable to find image '{image}' locally")),
        "{}",
        show(&o)
    );
}

/// Requirement 1: a foreground `run` whose container is killed exits with 137.
#[test]
fn foreground_run_exits_137_after_kill() {
    let d = daemon();
    let child = d
        .cli()
        .args(["run", "--name", "victim", "busybox", "sleep", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        d.wait_for(Duration::from_secs(10), || try_status(&d, "victim")
            .as_deref()
            == Some("running")),
        "container never ran"
    );
    d.ok(&["kill", "victim"]);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(137), "{}", show(&o));
    assert_eq!(inspect(&d, "victim")["State"]["ExitCode"], 137);
}

/// Requirement 1: a missing command exits 127 with a message naming it, and `--rm` removes
/// the container that could not start.
#[test]
fn missing_command_exits_127() {
    let d = daemon();
    let o = d.run(&["run", "--rm", "busybox", "no-such-command-xyz"]);
    assert_eq!(o.status.code(), Some(127), "{}", show(&o));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("no-such-command-xyz"), "{}", show(&o));
    assert!(
        d.wait_for(Duration::from_secs(5), || d.ok(&["ps", "-aq"]).is_empty()),
        "--rm left the failed container behind: {}",
        d.ok(&["ps", "-a"])
    );

    // Detached too.
    let o = d.run(&["run", "-d", "--rm", "busybox", "no-such-command-xyz"]);
    assert_eq!(o.status.code(), Some(127), "{}", show(&o));
    assert!(stderr(&o).contains("no-such-command-xyz"), "{}", show(&o));
    assert_eq!(
        d.ok(&["ps", "-aq"]),
        "",
        "run -d --rm left the failed container"
    );

    // Without --rm the container stays, created, with Docker's exit code 127.
    let o = d.run(&["run", "--name", "nocmd", "busybox", "no-such-command-xyz"]);
    assert_eq!(o.status.code(), Some(127), "{}", show(&o));
    let st = &inspect(&d, "nocmd")["State"];
    assert_eq!(st["ExitCode"], 127, "{st}");
    assert_eq!(st["Running"], false);
    assert!(
        st["Error"]
            .as_str()
            .unwrap()
            .contains("no-such-command-xyz"),
        "{st}"
    );
}

/// Requirement 1: `-d` prints the full ID; `--rm -d` removes the container after it exits.
#[test]
fn detached_run_prints_full_id() {
    let d = daemon();
    let id = run_d(&d, &["busybox", "sleep", "1000"]);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(d.ok(&["ps", "-q", "--no-trunc"]).trim(), id);
    assert_eq!(d.ok(&["ps", "-q"]).trim(), &id[..12]);
    assert_eq!(inspect(&d, &id[..12])["Id"], id.as_str());

    let gone = run_d(&d, &["--rm", "busybox", "true"]);
    assert!(
        d.wait_for(Duration::from_secs(10), || !d
            .ok(&["ps", "-aq", "--no-trunc"])
            .contains(&gone)),
        "run -d --rm left the container behind"
    );
}

/// Requirement 1: a name in use gives Docker's conflict error and exit code 125.
#[test]
fn name_conflict_is_refused_with_125() {
    let d = daemon();
    let id = run_d(&d, &["--name", "web", "busybox", "sleep", "1000"]);
    let o = d.run(&["run", "--name", "web", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", show(&o));
    assert_eq!(stdout(&o), "");
    let want = format!(
        "Conflict. The container name \"/web\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    );
    assert!(stderr(&o).contains(&want), "{}", show(&o));
    // Also for `create`, and the first container is untouched.
    let o = d.run(&["create", "--name", "web", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", show(&o));
    assert_eq!(d.ok(&["ps", "-aq", "--no-trunc"]).trim(), id);
}

// ----- no other runtime ------------------------------------------------------------------

/// Requirement 2: no runc/crun/docker/containerd binary is used for run, exec, stop, kill
/// and rm; the helper runs from a sealed memfd (CVE-2019-5736).
#[test]
fn no_external_runtime_and_sealed_helper() {
    let d = daemon();
    let id = run_d(&d, &["--name", "sealed", "busybox", "sleep", "1000"]);
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(d.data.join("containers").join(&id).join("state.json")).unwrap(),
    )
    .unwrap();
    let shim = state["shim_pid"].as_i64().unwrap() as i32;
    assert!(alive(shim));
    let exe = std::fs::read_link(format!("/proc/{shim}/exe")).unwrap();
    assert_eq!(exe.to_str().unwrap(), "/memfd:shoal (deleted)");
    // The memfd is sealed: it cannot be written or resized, and the seals are final.
    let f = std::fs::File::open(format!("/proc/{shim}/exe")).unwrap();
    // SAFETY: fcntl(F_GET_SEALS) on an open descriptor.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    let want = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    assert_eq!(seals & want, want, "seals {seals:#x}");
    assert!(
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{shim}/exe"))
            .is_err(),
        "the helper's executable is writable"
    );

    assert_eq!(exec_ok(&d, "sealed", &["echo", "in"]), "in\n");
    d.ok(&["stop", "-t", "1", "sealed"]);
    d.ok(&["start", "sealed"]);
    d.ok(&["kill", "sealed"]);
    d.ok(&["rm", "-f", "sealed"]);
    let o = d.run(&["run", "--rm", "busybox", "true"]);
    assert!(o.status.success());
    assert_eq!(d.decoy_log(), "", "an external runtime binary was called");
    // The decoys are really on the daemon's PATH: prove they record calls.
    assert!(d.decoys.join("runc").exists());
}

// ----- ps -----------------------------------------------------------------------------------

/// Requirement 3: `ps` shows running containers, `ps -a` also exited ones with their code,
/// `-q` only IDs, `--no-trunc` full IDs and commands.
#[test]
fn ps_variants() {
    let d = daemon();
    let running = run_d(&d, &["--name", "runner", "busybox", "sleep", "1000"]);
    let exited = run_d(&d, &["--name", "quitter", "busybox", "sh", "-c", "exit 3"]);
    wait_exited(&d, "quitter", 10);

    let ps = d.ok(&["ps"]);
    let lines: Vec<&str> = ps.lines().collect();
    assert_eq!(lines.len(), 2, "{ps}");
    for h in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(lines[0].contains(h), "{ps}");
    }
    assert!(lines[1].starts_with(&running[..12]), "{ps}");
    assert!(
        lines[1].contains("busybox") && lines[1].contains("runner"),
        "{ps}"
    );
    assert!(lines[1].contains("\"sleep 1000\""), "{ps}");
    assert!(lines[1].contains("Up "), "{ps}");

    let all = d.ok(&["ps", "-a"]);
    assert_eq!(all.lines().count(), 3, "{all}");
    let q = all.lines().find(|l| l.contains("quitter")).unwrap();
    assert!(q.starts_with(&exited[..12]), "{all}");
    assert!(q.contains("Exited (3)"), "{all}");

    assert_eq!(d.ok(&["ps", "-q"]), format!("{}\n", &running[..12]));
    let mut aq: Vec<String> = d.ok(&["ps", "-aq"]).lines().map(str::to_owned).collect();
    aq.sort();
    let mut want = vec![running[..12].to_owned(), exited[..12].to_owned()];
    want.sort();
    assert_eq!(aq, want);

    let nt = d.ok(&["ps", "--no-trunc"]);
    assert!(nt.lines().nth(1).unwrap().starts_with(&running), "{nt}");
    assert_eq!(d.ok(&["ps", "-q", "--no-trunc"]), format!("{running}\n"));
}

// ----- logs ---------------------------------------------------------------------------------

/// Requirement 3: `logs` keeps stdout and stderr apart; `--tail N`, `-t` and `--since`.
#[test]
fn logs_tail_timestamps_since() {
    let d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "talker",
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2; sleep 2; echo late",
        ],
    );
    assert_eq!(wait_exited(&d, "talker", 15), 0);
    let o = d.run(&["logs", "talker"]);
    assert_eq!(stdout(&o), "line1\nline2\nline3\nline4\nline5\nlate\n");
    assert_eq!(stderr(&o), "oops\n");

    let o = d.run(&["logs", "--tail", "2", "talker"]);
    assert_eq!(stdout(&o), "late\n", "{}", show(&o));
    // The last two records are `oops` (stderr) and `late`, or `line5` and `late` when the
    // helper read stderr first; either way `late` is last and nothing older than line5.
    assert!(
        stderr(&o) == "oops\n" || stderr(&o).is_empty(),
        "{}",
        show(&o)
    );
    let o = d.run(&["logs", "--tail", "1", "talker"]);
    assert_eq!(stdout(&o), "late\n");
    assert_eq!(stderr(&o), "");
    let o = d.run(&["logs", "--tail", "0", "talker"]);
    assert_eq!(stdout(&o), "");

    let o = d.run(&["logs", "-t", "talker"]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6);
    let mut times = Vec::new();
    for l in &lines {
        let (ts, text) = l.split_once(' ').unwrap();
        let t = chrono::DateTime::parse_from_rfc3339(ts)
            .unwrap_or_else(|e| panic!("bad timestamp {ts:?}: {e}"));
        assert!(text.starts_with("line") || text == "late", "{l}");
        times.push(t);
    }
    let gap = times[5] - times[4];
    assert!(
        gap >= chrono::Duration::milliseconds(1500),
        "the late line was written 2 s later, timestamps say {gap}"
    );

    // --since a moment between the early lines and the late one: only the late line.
    let between = times[4] + chrono::Duration::milliseconds(1000);
    let since = between.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let o = d.run(&["logs", "--since", &since, "talker"]);
    assert_eq!(stdout(&o), "late\n", "{}", show(&o));
    assert_eq!(stderr(&o), "");
    // Unix seconds work too.
    let secs = format!(
        "{}.{:09}",
        between.timestamp(),
        between.timestamp_subsec_nanos()
    );
    let o = d.run(&["logs", "--since", &secs, "talker"]);
    assert_eq!(stdout(&o), "late\n", "{}", show(&o));
}

/// Requirement 3: `logs -f` streams lines written later and ends when the container exits.
#[test]
fn logs_follow_streams_and_ends_at_exit() {
    let d = daemon();
    let id = run_d(
        &d,
        &[
            "busybox",
            "sh",
            "-c",
            "echo first; while [ ! -f /tmp/go ]; do sleep 0.05; done; echo second; \
             while [ ! -f /tmp/end ]; do sleep 0.05; done; echo third; exit 5",
        ],
    );
    let mut child = d
        .cli()
        .args(["logs", "-f", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(next(), "first");
    exec_ok(&d, &id, &["touch", "/tmp/go"]);
    assert_eq!(next(), "second");
    // Still following: no more output and the command has not ended.
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "logs -f ended early");
    exec_ok(&d, &id, &["touch", "/tmp/end"]);
    assert_eq!(next(), "third");
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "logs -f did not end when the container exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(st.success());
    assert_eq!(inspect(&d, &id)["State"]["ExitCode"], 5);
}

/// Requirement 8: the daemon's `--log-max-size 1k --log-max-files 2` caps a chatty
/// container's logs at two files of about 1 KiB; `logs` shows the newest lines; the files
/// are JSON lines with `log`, `stream` and `time`.
#[test]
fn logs_are_capped_and_rotated() {
    let d = daemon_with(DaemonOptions {
        args: vec![
            "--log-max-size".into(),
            "1k".into(),
            "--log-max-files".into(),
            "2".into(),
        ],
        ..Default::default()
    });
    // ~50 KB: 1000 lines of 50 bytes.
    let id = run_d(
        &d,
        &[
            "busybox",
            "sh",
            "-c",
            "i=0; while [ $i -lt 1000 ]; do i=$((i+1)); printf 'line %04d xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\\n' $i; done; echo bye >&2",
        ],
    );
    assert_eq!(wait_exited(&d, &id, 30), 0);
    let dir = d.data.join("containers").join(&id).join("logs");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        !files.is_empty() && files.len() <= 2,
        "log files: {files:?}"
    );
    let mut total = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        // At most the size limit plus one record (one line of JSON).
        assert!(
            text.len() <= 1024 + 200,
            "{} is {} bytes",
            f.display(),
            text.len()
        );
        total += text.len();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", f.display()));
            let stream = v["stream"].as_str().unwrap();
            assert!(stream == "stdout" || stream == "stderr", "{line}");
            assert!(v["log"].as_str().unwrap().ends_with('\n'), "{line}");
            chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).unwrap();
        }
    }
    assert!(total < 3000, "{total} bytes kept for 50 KB of output");
    let o = d.run(&["logs", &id]);
    let out = stdout(&o);
    assert!(
        out.ends_with("line 1000 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"),
        "{out}"
    );
    assert!(
        !out.contains("line 0001 "),
        "the oldest lines were not rotated away"
    );
    assert_eq!(stderr(&o), "bye\n");
}

// ----- stop, kill, rm ---------------------------------------------------------------------

/// Requirement 3: `stop -t 1` of a process that ignores SIGTERM kills it after the grace
/// period (137); one that exits on SIGTERM stops at once with its own code.
#[test]
fn stop_signal_then_kill_after_grace() {
    let d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "stubborn",
            "busybox",
            "sh",
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    run_d(
        &d,
        &[
            "--name",
            "polite",
            "busybox",
            "sh",
            "-c",
            "trap 'echo bye; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    wait_log(&d, "stubborn", "ready", 10);
    wait_log(&d, "polite", "ready", 10);

    let t = Instant::now();
    d.ok(&["stop", "-t", "1", "stubborn"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "killed before the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(6), "stop took {took:?}");
    let st = &inspect(&d, "stubborn")["State"];
    assert_eq!(st["Status"], "exited");
    assert_eq!(st["ExitCode"], 137, "{st}");

    // Default grace (10 s) but it exits on TERM: quick, with its own code.
    let t = Instant::now();
    d.ok(&["stop", "polite"]);
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "stop of a TERM-handling container took {took:?}"
    );
    assert_eq!(inspect(&d, "polite")["State"]["ExitCode"], 7);
    assert!(logs(&d, "polite").contains("bye"));
}

/// Requirement 3 (what `stop` relies on): the workload and exec'd processes start with
/// default signal dispositions: nothing the daemon or the helper ignores is inherited (an
/// ignored SIGTERM cannot even be trapped by a shell).
#[test]
fn signals_not_ignored_in_container() {
    let d = daemon();
    let sig_ign = |status: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with("SigIgn:")).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let id = run_d(&d, &["busybox", "sleep", "1000"]);
    let pid = pid(&d, &id);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    // Signals 1-31; glibc's internal 32 and 33 are its own business.
    assert_eq!(
        sig_ign(&status) & 0x7fff_ffff,
        0,
        "the workload ignores signals: {status}"
    );
    let status = exec_ok(&d, &id, &["cat", "/proc/self/status"]);
    assert_eq!(
        sig_ign(&status) & 0x7fff_ffff,
        0,
        "an exec'd process ignores signals: {status}"
    );
}

/// Requirement 3: the default grace period is 10 s before SIGKILL.
#[test]
fn stop_default_grace_is_ten_seconds() {
    let d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "slowpoke",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got-term' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    wait_log(&d, "slowpoke", "ready", 10);
    let t = Instant::now();
    d.ok(&["stop", "slowpoke"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(9500) && took < Duration::from_secs(20),
        "stop took {took:?}, expected the 10 s grace period"
    );
    assert_eq!(inspect(&d, "slowpoke")["State"]["ExitCode"], 137);
    // The stop signal did arrive first.
    assert!(logs(&d, "slowpoke").contains("got-term"));
}

/// Requirement 3: `--stop-timeout` on run, `--stop-signal` and the image's StopSignal are
/// honoured by `stop`; `stop -s` overrides them.
#[test]
fn stop_signal_and_timeout_are_honoured() {
    let d = daemon();
    import(
        &d,
        ImageBuilder::busybox().stop_signal("SIGUSR2"),
        "usr2:latest",
    );
    let script = |sig: &str, code: u32| {
        format!(
            "trap '' TERM; trap 'exit {code}' {sig}; echo ready; while true; do sleep 0.1; done"
        )
    };
    let s1 = script("USR1", 21);
    let s2 = script("USR2", 22);
    run_d(
        &d,
        &[
            "--name",
            "flagsig",
            "--stop-signal",
            "SIGUSR1",
            "busybox",
            "sh",
            "-c",
            &s1,
        ],
    );
    run_d(&d, &["--name", "imagesig", "usr2", "sh", "-c", &s2]);
    run_d(
        &d,
        &[
            "--name",
            "stopsig",
            "busybox",
            "sh",
            "-c",
            &script("HUP", 23),
        ],
    );
    run_d(
        &d,
        &[
            "--name",
            "timeout2",
            "--stop-timeout",
            "2",
            "busybox",
            "sh",
            "-c",
            &script("USR1", 0),
        ],
    );
    for n in ["flagsig", "imagesig", "stopsig", "timeout2"] {
        wait_log(&d, n, "ready", 10);
    }
    assert_eq!(inspect(&d, "imagesig")["Config"]["StopSignal"], "SIGUSR2");
    assert_eq!(inspect(&d, "flagsig")["Config"]["StopSignal"], "SIGUSR1");

    for (name, code) in [("flagsig", 21), ("imagesig", 22)] {
        let t = Instant::now();
        d.ok(&["stop", "-t", "20", name]);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{name} was not stopped by its signal"
        );
        assert_eq!(inspect(&d, name)["State"]["ExitCode"], code, "{name}");
    }
    let t = Instant::now();
    d.ok(&["stop", "-s", "HUP", "-t", "20", "stopsig"]);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(inspect(&d, "stopsig")["State"]["ExitCode"], 23);

    // --stop-timeout 2 (TERM is ignored): killed after about 2 s, not 10.
    let t = Instant::now();
    d.ok(&["stop", "timeout2"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(7),
        "{took:?}"
    );
    assert_eq!(inspect(&d, "timeout2")["State"]["ExitCode"], 137);
}

/// Requirement 3: `kill -s USR1` reaches a trap in the container, which keeps running;
/// plain `kill` (SIGKILL) returns once the container is dead, so `rm` right after works.
#[test]
fn kill_sends_signals() {
    let d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "trapper",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got-usr1' USR1; echo ready; while true; do sleep 0.1; done",
        ],
    );
    wait_log(&d, "trapper", "ready", 10);
    d.ok(&["kill", "-s", "USR1", "trapper"]);
    wait_log(&d, "trapper", "got-usr1", 10);
    d.ok(&["kill", "--signal", "SIGUSR1", "trapper"]);
    assert!(d.wait_for(
        Duration::from_secs(10),
        || logs(&d, "trapper").matches("got-usr1").count() == 2
    ));
    assert_eq!(status(&d, "trapper"), "running");

    let o = d.run(&["kill", "-s", "NOSUCHSIG", "trapper"]);
    assert!(!o.status.success(), "{}", show(&o));
    assert_eq!(status(&d, "trapper"), "running");

    d.ok(&["kill", "trapper"]);
    let st = &inspect(&d, "trapper")["State"];
    assert_eq!(
        st["Status"], "exited",
        "kill returned before the container died: {st}"
    );
    assert_eq!(st["ExitCode"], 137);
    d.ok(&["rm", "trapper"]);
    let o = d.run(&["kill", "trapper"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("No such container: trapper"),
        "{}",
        show(&o)
    );
}

/// Requirement 3: `rm` refuses a running container, `rm -f` kills and removes it.
#[test]
fn rm_force_removes_running_container() {
    let d = daemon();
    let id = run_d(&d, &["--name", "doomed", "busybox", "sleep", "1000"]);
    let pid = pid(&d, "doomed");
    let o = d.run(&["rm", "doomed"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("You cannot remove a running container"),
        "{}",
        show(&o)
    );
    assert!(alive(pid));
    d.ok(&["rm", "-f", "doomed"]);
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    assert!(!alive(pid), "the workload survived rm -f");
    assert!(!d.data.join("containers").join(&id).exists());
    // The name is free again.
    run_d(&d, &["--name", "doomed", "busybox", "true"]);
}

// ----- exec -------------------------------------------------------------------------------

/// Requirement 3: `exec` with `-e`, `-u`, `-w`; the exit code passes through and the
/// output streams stay apart; the process is in the container's namespaces.
#[test]
fn exec_options_and_exit_code() {
    let d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "host1",
            "-e",
            "FROM_RUN=1",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let o = exec(
        &d,
        "host1",
        &["sh", "-c", "echo to-out; echo to-err >&2; exit 42"],
    );
    assert_eq!(o.status.code(), Some(42), "{}", show(&o));
    assert_eq!(stdout(&o), "to-out\n");
    assert_eq!(stderr(&o), "to-err\n");

    let out = exec_ok(
        &d,
        "host1",
        &["sh", "-c", "echo $FROM_RUN; echo $HOME; pwd; id"],
    );
    assert_eq!(out, "1\n/root\n/\nuid=0(root) gid=0(root) groups=0(root)\n");

    let o = d.run(&[
        "exec",
        "-e",
        "A=b c",
        "-e",
        "FROM_RUN=2",
        "-u",
        "tester",
        "-w",
        "/tmp",
        "host1",
        "sh",
        "-c",
        "echo $A; echo $FROM_RUN; pwd; id; echo $HOME",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        stdout(&o),
        "b c\n2\n/tmp\nuid=1000(tester) gid=1000(tester) groups=1000(tester),2000(extra)\n/home/tester\n"
    );
    let out = d.ok(&["exec", "-u", "1234:5678", "host1", "id"]);
    assert_eq!(out, "uid=1234 gid=5678 groups=5678\n");

    // The exec'd process shares the workload's pid namespace (sleep is PID 1).
    let out = exec_ok(&d, "host1", &["cat", "/proc/1/cmdline"]);
    assert_eq!(out, "sleep\u{0}1000\u{0}");

    let o = exec(&d, "host1", &["no-such-binary-abc"]);
    assert_eq!(o.status.code(), Some(127), "{}", show(&o));
    assert!(stderr(&o).contains("no-such-binary-abc"), "{}", show(&o));

    let o = d.run(&["exec", "-u", "nosuchuser", "host1", "true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nosuchuser"), "{}", show(&o));

    d.ok(&["stop", "-t", "0", "host1"]);
    let o = exec(&d, "host1", &["true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not running"), "{}", show(&o));
}

// ----- inspect, stats, wait, pause ---------------------------------------------------------

/// Requirement 3: `inspect` shows the state, configuration, host configuration, mounts and
/// name as Docker does.
#[test]
fn inspect_shows_state_and_config() {
    let d = daemon();
    let vol_dir = d.root.path().join("hostdir");
    std::fs::create_dir_all(&vol_dir).unwrap();
    let bind = format!("{}:/host:ro", vol_dir.display());
    let id = run_d(
        &d,
        &[
            "--name",
            "looked-at",
            "-e",
            "K=V",
            "-l",
            "team=a",
            "-w",
            "/tmp",
            "-m",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "50",
            "--cap-drop",
            "NET_RAW",
            "-v",
            "data1:/data",
            "-v",
            &bind,
            "--tmpfs",
            "/scratch:size=1m",
            "--read-only",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let v = inspect(&d, "looked-at");
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(v["Name"], "/looked-at");
    assert_eq!(v["Path"], "sleep");
    assert_eq!(v["Args"], json!(["1000"]));
    let st = &v["State"];
    assert_eq!(st["Status"], "running");
    assert_eq!(st["Running"], true);
    assert_eq!(st["Paused"], false);
    assert_eq!(st["OOMKilled"], false);
    assert_eq!(st["ExitCode"], 0);
    let pid = st["Pid"].as_i64().unwrap() as i32;
    assert!(pid > 0 && alive(pid));
    assert_eq!(
        std::fs::read(format!("/proc/{pid}/cmdline")).unwrap(),
        b"sleep\x001000\x00"
    );
    assert!(chrono::DateTime::parse_from_rfc3339(st["StartedAt"].as_str().unwrap()).is_ok());
    assert_eq!(st["FinishedAt"], "0001-01-01T00:00:00Z");

    let c = &v["Config"];
    assert_eq!(c["Image"], "busybox");
    assert_eq!(c["Cmd"], json!(["sleep", "1000"]));
    assert_eq!(c["WorkingDir"], "/tmp");
    assert_eq!(c["Hostname"], &id[..12]);
    assert_eq!(c["Labels"]["team"], "a");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"K=V"), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");

    let h = &v["HostConfig"];
    assert_eq!(h["Memory"], 64 * 1024 * 1024);
    assert_eq!(h["NanoCpus"], 500_000_000);
    assert_eq!(h["PidsLimit"], 50);
    assert_eq!(h["CapDrop"], json!(["NET_RAW"]));
    assert_eq!(h["ReadonlyRootfs"], true);
    assert_eq!(h["NetworkMode"], "none");
    assert_eq!(h["Tmpfs"]["/scratch"], "size=1m");
    assert_eq!(h["Binds"], json!(["data1:/data", bind]));

    let mounts = v["Mounts"].as_array().unwrap();
    let vol = mounts.iter().find(|m| m["Destination"] == "/data").unwrap();
    assert_eq!(vol["Type"], "volume");
    assert_eq!(vol["Name"], "data1");
    assert_eq!(vol["RW"], true);
    assert_eq!(
        vol["Source"],
        d.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "data1"])
            .trim()
    );
    let b = mounts.iter().find(|m| m["Destination"] == "/host").unwrap();
    assert_eq!(b["Type"], "bind");
    assert_eq!(b["Source"], vol_dir.to_str().unwrap());
    assert_eq!(b["RW"], false);

    // -f templates.
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.Running}} {{.Name}}", "looked-at"])
            .trim(),
        "true /looked-at"
    );

    d.ok(&["kill", "looked-at"]);
    let st = &inspect(&d, "looked-at")["State"];
    assert_eq!(st["Status"], "exited");
    assert_eq!(st["Running"], false);
    assert_eq!(st["Pid"], 0);
    assert_eq!(st["ExitCode"], 137);
    assert_ne!(st["FinishedAt"], "0001-01-01T00:00:00Z");

    let o = d.run(&["inspect", "nonexistent-thing"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("No such object: nonexistent-thing"),
        "{}",
        show(&o)
    );
}

/// Requirement 3: `stats --no-stream` prints a row for a running container with a
/// plausible memory figure and its number of processes.
#[test]
fn stats_no_stream() {
    let d = daemon();
    let id = run_d(
        &d,
        &[
            "--name",
            "busy",
            "-m",
            "100m",
            "busybox",
            "sh",
            "-c",
            "sleep 1000 & sleep 1000 & x=$(head -c 4000000 /dev/zero | tr '\\0' a); echo ready; wait",
        ],
    );
    wait_log(&d, "busy", "ready", 10);
    let out = d.ok(&["stats", "--no-stream"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for h in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(lines[0].contains(h), "{out}");
    }
    assert!(
        lines[1].starts_with(&id[..12]) && lines[1].contains("busy"),
        "{out}"
    );

    let fmt = d.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}|{{.PIDs}}|{{.CPUPerc}}",
        "busy",
    ]);
    let parts: Vec<&str> = fmt.trim().split('|').collect();
    assert_eq!(parts.len(), 3, "{fmt}");
    // sh + 2 sleeps.
    assert_eq!(parts[1], "3", "{fmt}");
    let (usage, limit) = parts[0].split_once(" / ").unwrap();
    assert_eq!(limit, "100MiB", "{fmt}");
    let bytes = parse_size(usage);
    assert!(
        (4_000_000.0..100.0 * 1024.0 * 1024.0).contains(&bytes),
        "memory usage {usage} for a shell holding 4 MB"
    );
    assert!(parts[2].ends_with('%'), "{fmt}");
}

/// Parses `1.5MiB`-style sizes.
fn parse_size(s: &str) -> f64 {
    let idx = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, unit) = s.split_at(idx);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("bad size {s}"));
    n * match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other} in {s}"),
    }
}

/// Requirement 3: `wait` blocks until the container exits and prints its exit code.
#[test]
fn wait_prints_exit_code() {
    let d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "waited",
            "busybox",
            "sh",
            "-c",
            "while [ ! -f /tmp/go ]; do sleep 0.05; done; exit 12",
        ],
    );
    let child = d
        .cli()
        .args(["container", "wait", "waited"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    exec_ok(&d, "waited", &["touch", "/tmp/go"]);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(stdout(&o), "12\n");
    // An exited container answers at once.
    assert_eq!(d.ok(&["container", "wait", "waited"]), "12\n");
}

/// Requirement 3: a paused container makes no progress until unpaused.
#[test]
fn pause_stops_progress() {
    let d = daemon();
    let id = run_d(
        &d,
        &[
            "--name",
            "counter",
            "busybox",
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.02; done",
        ],
    );
    let counter = d.data.join("containers").join(&id).join("upper/tmp/n");
    let read = || {
        std::fs::read_to_string(&counter)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(d.wait_for(Duration::from_secs(10), || read() > 3));
    d.ok(&["container", "pause", "counter"]);
    let st = &inspect(&d, "counter")["State"];
    assert_eq!(st["Paused"], true, "{st}");
    assert!(d.ok(&["ps"]).contains("(Paused)"));
    let a = read();
    std::thread::sleep(Duration::from_millis(500));
    let b = read();
    assert_eq!(a, b, "the counter advanced while paused");
    // exec into a paused container is refused, not left hanging.
    let mut child = d
        .cli()
        .args(["exec", "counter", "true"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            // Thaw it so that the hung exec and the container can be cleaned up.
            d.ok(&["container", "unpause", "counter"]);
            panic!("exec into a paused container hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        stderr(&o).contains("is paused, unpause the container before exec"),
        "{}",
        show(&o)
    );

    d.ok(&["container", "unpause", "counter"]);
    assert_eq!(inspect(&d, "counter")["State"]["Paused"], false);
    assert!(
        d.wait_for(Duration::from_secs(10), || read() > b + 3),
        "no progress after unpause"
    );
    // A paused container can still be stopped.
    d.ok(&["container", "pause", "counter"]);
    d.ok(&["stop", "-t", "1", "counter"]);
    assert_eq!(status(&d, "counter"), "exited");
}

// ----- image configuration -----------------------------------------------------------------

/// Requirement 4: the image's Entrypoint and Cmd, a CMD override, and `--entrypoint`.
#[test]
fn image_entrypoint_and_cmd() {
    let d = daemon();
    import(
        &d,
        ImageBuilder::busybox()
            .entrypoint(&["/bin/echo", "ep"])
            .cmd(&["default-cmd"]),
        "ep:latest",
    );
    let o = d.run(&["run", "--rm", "ep"]);
    assert_eq!(stdout(&o), "ep default-cmd\n", "{}", show(&o));
    let o = d.run(&["run", "--rm", "ep", "a", "b"]);
    assert_eq!(stdout(&o), "ep a b\n", "{}", show(&o));
    // --entrypoint replaces the entrypoint and drops the image's cmd.
    let o = d.run(&["run", "--rm", "--entrypoint", "/bin/echo", "ep"]);
    assert_eq!(stdout(&o), "\n", "{}", show(&o));
    let o = d.run(&["run", "--rm", "--entrypoint", "/bin/echo", "ep", "x"]);
    assert_eq!(stdout(&o), "x\n", "{}", show(&o));
    let v = inspect(&d, &run_d(&d, &["ep"]));
    assert_eq!(v["Config"]["Entrypoint"], json!(["/bin/echo", "ep"]));
    assert_eq!(v["Config"]["Cmd"], json!(["default-cmd"]));
    assert_eq!(v["Path"], "/bin/echo");
    assert_eq!(v["Args"], json!(["ep", "default-cmd"]));
}

/// Requirement 4: image Env plus `-e` overrides and `--env-file`; Docker's HOSTNAME, HOME
/// and PATH.
#[test]
fn image_env_and_overrides() {
    let d = daemon();
    import(
        &d,
        ImageBuilder::busybox()
            .env("FOO", "image")
            .env("BAR", "image"),
        "envy:latest",
    );
    let env_file = d.root.path().join("env.list");
    std::fs::write(&env_file, "# a comment\nFROM_FILE=yes\n\nBAR=file\n").unwrap();
    let id = run_d(
        &d,
        &[
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "BAR=cli",
            "-e",
            "NEW=1",
            "envy",
            "sleep",
            "1000",
        ],
    );
    let out = exec_ok(&d, &id, &["env"]);
    let env: std::collections::BTreeMap<&str, &str> =
        out.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(env.get("FOO"), Some(&"image"), "{out}");
    assert_eq!(env.get("BAR"), Some(&"cli"), "{out}");
    assert_eq!(env.get("NEW"), Some(&"1"), "{out}");
    assert_eq!(env.get("FROM_FILE"), Some(&"yes"), "{out}");
    assert_eq!(env.get("HOME"), Some(&"/root"), "{out}");
    assert_eq!(env.get("HOSTNAME"), Some(&&id[..12]), "{out}");
    assert_eq!(
        env.get("PATH"),
        Some(&"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{out}"
    );
    // The workload itself (PID 1) sees the same.
    let pid1 = exec_ok(&d, &id, &["cat", "/proc/1/environ"]);
    for kv in ["FOO=image", "BAR=cli", "NEW=1", "FROM_FILE=yes"] {
        assert!(
            pid1.split('\0').any(|e| e == kv),
            "{kv} missing in {pid1:?}"
        );
    }
}

/// Requirement 4: the image's WorkingDir, `-w` over it, and a working dir that does not
/// exist yet is created.
#[test]
fn image_workdir() {
    let d = daemon();
    // A layer with a dangling symlink pointing at a host path (absolute).
    let outside = d.root.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let layer = d.root.path().join("layer");
    std::fs::create_dir_all(&layer).unwrap();
    std::os::unix::fs::symlink(&outside, layer.join("linked")).unwrap();
    import(
        &d,
        ImageBuilder::busybox()
            .layer_dir(&layer)
            .workdir("/srv/app"),
        "wd:latest",
    );
    let o = d.run(&["run", "--rm", "wd", "pwd"]);
    assert_eq!(stdout(&o), "/srv/app\n", "{}", show(&o));
    let o = d.run(&["run", "--rm", "-w", "/tmp", "wd", "pwd"]);
    assert_eq!(stdout(&o), "/tmp\n", "{}", show(&o));
    let o = d.run(&["run", "--rm", "-w", "/new/dir", "busybox", "pwd"]);
    assert_eq!(stdout(&o), "/new/dir\n", "{}", show(&o));
    // Through a symlink of the image: created where the symlink points, inside the root,
    // never on the host.
    let o = d.run(&["run", "--rm", "-w", "/linked/dir", "wd", "pwd"]);
    assert_eq!(
        stdout(&o),
        format!("{}/dir\n", outside.display()),
        "{}",
        show(&o)
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "created on the host"
    );
    let o = d.run(&["run", "--rm", "-w", "relative", "busybox", "pwd"]);
    assert_eq!(o.status.code(), Some(125), "{}", show(&o));
    assert!(
        stderr(&o).contains(
            "the working directory 'relative' is invalid, it needs to be an absolute path"
        ),
        "{}",
        show(&o)
    );
    assert_eq!(
        d.ok(&["ps", "-aq"]),
        "",
        "the refused container was created"
    );
}

/// Requirement 4: the image's User (by name, with its groups from /etc/group), `-u` forms,
/// and an unknown user.
#[test]
fn image_user_and_overrides() {
    let d = daemon();
    import(&d, ImageBuilder::busybox().user("tester"), "asuser:latest");
    let o = d.run(&[
        "run",
        "--rm",
        "asuser",
        "sh",
        "-c",
        "id; echo $HOME; grep -E '^(Uid|Gid|Groups)' /proc/self/status",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("uid=1000(tester) gid=1000(tester) groups=1000(tester),2000(extra)")
    );
    assert_eq!(lines.next(), Some("/home/tester"));
    let status: Vec<&str> = lines.collect();
    assert!(
        status[0].split_whitespace().skip(1).all(|v| v == "1000"),
        "{status:?}"
    );
    assert!(
        status[1].split_whitespace().skip(1).all(|v| v == "1000"),
        "{status:?}"
    );
    let mut groups: Vec<&str> = status[2].split_whitespace().skip(1).collect();
    groups.sort();
    assert_eq!(groups, ["1000", "2000"], "{status:?}");

    let o = d.run(&["run", "--rm", "-u", "tester:extra", "busybox", "id"]);
    assert_eq!(
        stdout(&o),
        "uid=1000(tester) gid=2000(extra) groups=2000(extra)\n",
        "{}",
        show(&o)
    );
    let o = d.run(&["run", "--rm", "-u", "1234", "busybox", "id"]);
    assert_eq!(
        stdout(&o),
        "uid=1234 gid=0(root) groups=0(root)\n",
        "{}",
        show(&o)
    );
    let o = d.run(&["run", "--rm", "-u", "root", "asuser", "id", "-u"]);
    assert_eq!(stdout(&o), "0\n", "{}", show(&o));

    let o = d.run(&["run", "--rm", "-u", "ghost", "busybox", "id"]);
    assert_eq!(o.status.code(), Some(125), "{}", show(&o));
    assert_eq!(stdout(&o), "");
    assert!(
        stderr(&o).contains("unable to find user ghost: no matching entries in passwd file"),
        "{}",
        show(&o)
    );
    let o = d.run(&["run", "--rm", "-u", "tester:nogrp", "busybox", "id"]);
    assert_eq!(o.status.code(), Some(125), "{}", show(&o));
    assert!(
        stderr(&o).contains("unable to find group nogrp: no matching entries in group file"),
        "{}",
        show(&o)
    );
}

/// Requirement 4: ExposedPorts and Healthcheck of the image are recorded in `inspect`.
#[test]
fn image_ports_and_healthcheck_recorded() {
    let d = daemon();
    import(
        &d,
        ImageBuilder::busybox()
            .exposed_port("80/tcp")
            .exposed_port("53/udp")
            .healthcheck(
                &["CMD-SHELL", "test -f /tmp/ok"],
                HealthcheckOptions {
                    interval: Some(Duration::from_secs(5)),
                    timeout: Some(Duration::from_secs(2)),
                    start_period: None,
                    retries: Some(4),
                },
            ),
        "svc:latest",
    );
    let id = run_d(&d, &["svc", "sleep", "1000"]);
    let c = &inspect(&d, &id)["Config"];
    assert_eq!(
        c["ExposedPorts"],
        json!({"80/tcp": {}, "53/udp": {}}),
        "{c}"
    );
    let h = &c["Healthcheck"];
    assert_eq!(h["Test"], json!(["CMD-SHELL", "test -f /tmp/ok"]), "{c}");
    assert_eq!(h["Interval"], 5_000_000_000i64);
    assert_eq!(h["Timeout"], 2_000_000_000i64);
    assert_eq!(h["Retries"], 4);
}
