//! End-to-end tests of container health checks against the real `shoal` binary and kernel:
//! `--health-*` flags and the image's HEALTHCHECK run inside the container like `exec`;
//! `State.Health` in `inspect` (status, failing streak, the last five probes), the status in
//! `ps`; timeouts kill the probe; the start period; `NONE`; pause, stop and daemon restart.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;
use serde_json::{Value, json};
use shoal_testkit::daemon::Daemon;
use shoal_testkit::images::{HealthcheckOptions, ImageBuilder};

/// `State.Health` of a container (`Null` when absent).
fn health(d: &Daemon, name: &str) -> Value {
    inspect(d, name)["State"]["Health"].clone()
}

/// Polls `State.Health` until `f` holds (up to `secs`); returns the matching value.
fn wait_health(d: &Daemon, name: &str, secs: u64, mut f: impl FnMut(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let h = health(d, name);
        if f(&h) {
            return h;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{name}: health never matched in {secs} s; last: {h:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not a time: {v}: {e}"))
        .with_timezone(&Utc)
}

fn log_len(h: &Value) -> usize {
    h["Log"].as_array().map_or(0, Vec::len)
}

/// The `ps` STATUS column of container `name`.
fn ps_status(d: &Daemon, name: &str) -> String {
    let out = d.ok(&["ps", "-a", "--format", "{{.Names}}|{{.Status}}"]);
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}|")))
        .unwrap_or_else(|| panic!("{name} not in ps: {out}"))
        .to_owned()
}

/// A passing check makes the container healthy after about one interval; inspect shows
/// Docker's `State.Health` with the probe log; `ps` shows `(healthy)`.
#[test]
fn passing_check_becomes_healthy() {
    let d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "ok",
            "--health-cmd",
            "echo probe-out; echo probe-err >&2",
            "--health-interval",
            "200ms",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let h = wait_health(&d, "ok", 10, |h| h["Status"] == "healthy");
    assert_eq!(h["FailingStreak"], 0, "{h:#}");
    let log = h["Log"].as_array().unwrap();
    assert!(!log.is_empty(), "{h:#}");
    let first = &log[0];
    assert_eq!(first["ExitCode"], 0, "{h:#}");
    let out = first["Output"].as_str().unwrap();
    assert!(
        out.contains("probe-out\n") && out.contains("probe-err\n"),
        "stdout and stderr are both kept: {out:?}"
    );
    // The first probe waits one interval after the start, and takes well under a second.
    let started = time(&inspect(&d, "ok")["State"]["StartedAt"]);
    let (start, end) = (time(&first["Start"]), time(&first["End"]));
    let after = (start - started).num_milliseconds();
    assert!(
        (190..3000).contains(&after),
        "first probe {after} ms after start"
    );
    assert!(end >= start);
    assert!((end - start).num_milliseconds() < 2000);

    let st = ps_status(&d, "ok");
    assert!(st.starts_with("Up ") && st.ends_with(" (healthy)"), "{st}");
}

/// A failing check turns the container unhealthy only after `retries` consecutive
/// failures; `ps` shows `(unhealthy)`.
#[test]
fn failing_check_becomes_unhealthy_after_retries() {
    let d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "bad",
            "--health-cmd",
            "echo nope; exit 3",
            "--health-interval",
            "200ms",
            "--health-retries",
            "3",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let mut seen = Vec::new();
    let h = wait_health(&d, "bad", 15, |h| {
        seen.push((
            h["Status"].as_str().unwrap_or_default().to_owned(),
            h["FailingStreak"].as_u64().unwrap_or(0),
        ));
        h["Status"] == "unhealthy"
    });
    for (status, streak) in &seen {
        match status.as_str() {
            "starting" => assert!(*streak < 3, "{seen:?}"),
            "unhealthy" => assert!(*streak >= 3, "{seen:?}"),
            other => panic!("unexpected status {other}: {seen:?}"),
        }
    }
    assert!(h["FailingStreak"].as_u64().unwrap() >= 3, "{h:#}");
    for e in h["Log"].as_array().unwrap() {
        assert_eq!(e["ExitCode"], 3, "{h:#}");
        assert_eq!(e["Output"], "nope\n", "{h:#}");
    }
    let st = ps_status(&d, "bad");
    assert!(st.ends_with(" (unhealthy)"), "{st}");
    // It keeps running: unhealthy does not stop a plain container (Docker's behaviour).
    assert_eq!(status(&d, "bad"), "running");
}

/// A probe that outlives its timeout is killed (not waited for) and counts as a failure
/// with Docker's message.
#[test]
fn timeout_counts_as_failure_and_kills_the_probe() {
    let d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "slow",
            "--health-cmd",
            "exec sleep 5",
            "--health-interval",
            "200ms",
            "--health-timeout",
            "300ms",
            "--health-retries",
            "1",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let h = wait_health(&d, "slow", 15, |h| h["Status"] == "unhealthy");
    let e = &h["Log"][0];
    assert_eq!(e["ExitCode"], -1, "{h:#}");
    assert_eq!(
        e["Output"], "Health check exceeded timeout (300ms)",
        "{h:#}"
    );
    let took = (time(&e["End"]) - time(&e["Start"])).num_milliseconds();
    assert!(
        (300..4000).contains(&took),
        "a timed-out probe took {took} ms"
    );
    // The killed probes do not pile up in the container: at most the one running now.
    std::thread::sleep(Duration::from_millis(500));
    let ps = exec_ok(&d, "slow", &["ps"]);
    let probes = ps.lines().filter(|l| l.contains("sleep 5")).count();
    assert!(probes <= 1, "probes left running:\n{ps}");
}

/// The image's HEALTHCHECK runs by default; `--no-healthcheck` (`Test: ["NONE"]`) disables
/// it: no `State.Health`, no health in `ps`.
#[test]
fn image_check_runs_and_none_disables_it() {
    let d = daemon();
    import(
        &d,
        ImageBuilder::busybox().healthcheck(
            &["CMD", "true"],
            HealthcheckOptions {
                interval: Some(Duration::from_millis(200)),
                ..HealthcheckOptions::default()
            },
        ),
        "checked:latest",
    );
    run_d(&d, &["--name", "img", "checked", "sleep", "1000"]);
    run_d(
        &d,
        &[
            "--name",
            "off",
            "--no-healthcheck",
            "checked",
            "sleep",
            "1000",
        ],
    );
    wait_health(&d, "img", 10, |h| h["Status"] == "healthy");
    // Long enough for several intervals of the image's check.
    std::thread::sleep(Duration::from_millis(800));
    let off = inspect(&d, "off");
    assert_eq!(off["Config"]["Healthcheck"]["Test"], json!(["NONE"]));
    assert!(off["State"].get("Health").is_none(), "{:#}", off["State"]);
    let st = ps_status(&d, "off");
    assert!(st.starts_with("Up ") && !st.contains('('), "{st}");
    // The runtime's own containers without any check have no Health either.
    run_d(&d, &["--name", "plain", "busybox", "sleep", "1000"]);
    assert!(inspect(&d, "plain")["State"].get("Health").is_none());
}

/// Failures inside the start period do not count before the first pass: with one retry the
/// container would be unhealthy at once without it.
#[test]
fn start_period_ignores_early_failures() {
    let d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "slowstart",
            "--health-cmd",
            "test -f /tmp/ready",
            "--health-interval",
            "200ms",
            "--health-start-interval",
            "200ms",
            "--health-start-period",
            "5s",
            "--health-retries",
            "1",
            "busybox",
            "sh",
            "-c",
            "sleep 2; touch /tmp/ready; exec sleep 1000",
        ],
    );
    let mut seen = Vec::new();
    let h = wait_health(&d, "slowstart", 15, |h| {
        seen.push((
            h["Status"].as_str().unwrap_or_default().to_owned(),
            h["FailingStreak"].as_u64().unwrap_or(0),
            log_len(h),
        ));
        h["Status"] == "healthy"
    });
    assert!(
        seen.iter()
            .all(|(s, streak, _)| s != "unhealthy" && *streak == 0),
        "{seen:?}"
    );
    // Failed probes were run (and logged) while starting.
    assert!(
        seen.iter().any(|(s, _, n)| s == "starting" && *n >= 2),
        "{seen:?}"
    );
    let log = h["Log"].as_array().unwrap();
    assert_eq!(log.last().unwrap()["ExitCode"], 0, "{h:#}");
    assert!(log.iter().any(|e| e["ExitCode"] == 1), "{h:#}");

    // After the start period a failure counts at once (retries 1).
    exec_ok(&d, "slowstart", &["rm", "/tmp/ready"]);
    wait_health(&d, "slowstart", 10, |h| h["Status"] == "unhealthy");
}

/// No probe runs while the container is paused; they resume on unpause. A stopped
/// container keeps its last health (as Docker shows it); a restart starts over at
/// `starting` and keeps the log.
#[test]
fn paused_skips_probes_stop_keeps_health_restart_starts_over() {
    let d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "cycle",
            "--health-cmd",
            "test -f /tmp/ok",
            "--health-interval",
            "200ms",
            "--health-retries",
            "1000",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let h = wait_health(&d, "cycle", 10, |h| log_len(h) >= 2);
    assert_eq!(h["Status"], "starting", "{h:#}");
    exec_ok(&d, "cycle", &["touch", "/tmp/ok"]);
    wait_health(&d, "cycle", 10, |h| h["Status"] == "healthy");

    d.ok(&["pause", "cycle"]);
    let last_start = |d: &Daemon| {
        let h = health(d, "cycle");
        h["Log"][log_len(&h) - 1]["Start"].clone()
    };
    // A probe finishing as the container froze may still land; then nothing.
    std::thread::sleep(Duration::from_millis(300));
    let start_before = last_start(&d);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(last_start(&d), start_before, "a probe ran while paused");
    d.ok(&["unpause", "cycle"]);
    d.wait_for(Duration::from_secs(10), || last_start(&d) != start_before);
    assert_ne!(last_start(&d), start_before, "probes did not resume");

    // Failing now, but far from the retries: still healthy, with a streak.
    exec_ok(&d, "cycle", &["rm", "/tmp/ok"]);
    wait_health(&d, "cycle", 10, |h| h["FailingStreak"].as_u64() >= Some(1));
    d.ok(&["stop", "-t", "0", "cycle"]);
    let stopped = health(&d, "cycle");
    assert_eq!(stopped["Status"], "healthy", "{stopped:#}");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(health(&d, "cycle"), stopped, "probes ran after stop");

    // A new run: `starting` again (the check fails, so it stays there), the log kept.
    d.ok(&["start", "cycle"]);
    let h = health(&d, "cycle");
    assert_eq!(h["Status"], "starting", "{h:#}");
    assert!(log_len(&h) >= 1, "the log is kept across a restart: {h:#}");
    exec_ok(&d, "cycle", &["touch", "/tmp/ok"]);
    let h = wait_health(&d, "cycle", 10, |h| h["Status"] == "healthy");
    assert_eq!(h["FailingStreak"], 0, "{h:#}");
}

/// A running container re-adopted by a restarted daemon gets its monitor back.
#[test]
fn readopted_container_is_monitored() {
    let mut d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "kept",
            "--health-cmd",
            "test ! -f /tmp/sick",
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    wait_health(&d, "kept", 10, |h| h["Status"] == "healthy");
    d.restart(None).unwrap();
    let h = wait_health(&d, "kept", 10, |h| h["Status"] == "healthy");
    assert_eq!(h["FailingStreak"], 0);
    exec_ok(&d, "kept", &["touch", "/tmp/sick"]);
    wait_health(&d, "kept", 10, |h| h["Status"] == "unhealthy");
}

/// Durations below 1 ms are refused at create, with Docker's message.
#[test]
fn too_short_interval_is_refused() {
    let d = daemon();
    let o = d.run(&[
        "run",
        "-d",
        "--health-cmd",
        "true",
        "--health-interval",
        "500us",
        "busybox",
        "sleep",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", show(&o));
    assert!(
        stderr(&o).contains("Interval in Healthcheck cannot be less than 1ms"),
        "{}",
        show(&o)
    );
}
