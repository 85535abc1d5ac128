//! End-to-end tests of resource limits through cgroups: memory (OOM kill), pids, CPU
//! quota; checked on the cgroup files of the host and by what the workload experiences.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1024 * 1024;

/// The cgroup directory of a container for a v1 controller, or its v2 directory.
fn container_cgroup(pid: i32, v1_controller: &str) -> std::path::PathBuf {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        // cgroup v2: one line "0::/path".
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let path = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        return Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    }
    cgroup_dir(pid, v1_controller)
        .unwrap_or_else(|| panic!("no v1 {v1_controller} controller for pid {pid}"))
}

fn v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Requirement 6: `--memory 32m` is the cgroup's limit; a process allocating beyond it is
/// OOM-killed: exit 137, `OOMKilled` true; stdout carries no warning.
#[test]
fn memory_limit_and_oom_kill() {
    let d = daemon();
    let id = run_d(
        &d,
        &["--name", "capped", "-m", "32m", "busybox", "sleep", "1000"],
    );
    let pid = pid(&d, "capped");
    let dir = container_cgroup(pid, "memory");
    assert!(dir.ends_with(&id), "{}", dir.display());
    if v2() {
        assert_eq!(read_trim(&dir.join("memory.max")), (32 * MIB).to_string());
    } else {
        assert_eq!(
            read_trim(&dir.join("memory.limit_in_bytes")),
            (32 * MIB).to_string()
        );
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            // Docker's default: as much swap as memory.
            assert_eq!(read_trim(&memsw), (64 * MIB).to_string());
        }
    }
    let stats = d.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}",
        "capped",
    ]);
    assert!(stats.trim().ends_with("/ 32MiB"), "{stats}");

    // A shell variable doubling until it cannot: really allocated memory.
    let o = d.run(&[
        "run",
        "--name",
        "hog",
        "-m",
        "32m",
        "busybox",
        "sh",
        "-c",
        "echo start; x=a; while true; do x=$x$x; done",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", show(&o));
    assert_eq!(
        stdout(&o),
        "start\n",
        "stdout of run carries only the container's output"
    );
    let st = &inspect(&d, "hog")["State"];
    assert_eq!(st["OOMKilled"], true, "{st}");
    assert_eq!(st["ExitCode"], 137, "{st}");
    assert_eq!(st["Status"], "exited");
    assert!(
        d.ok(&["ps", "-a", "--filter", "name=hog"])
            .contains("Exited (137)")
    );

    // The same work without a limit is not killed (it is the limit that did it).
    let o = d.run(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "x=a; i=0; while [ $i -lt 26 ]; do x=$x$x; i=$((i+1)); done; echo ${#x}",
    ]);
    assert_eq!(stdout(&o), "67108864\n", "{}", show(&o));
    // A container killed by a plain SIGKILL is not reported as OOM-killed.
    d.ok(&["kill", "capped"]);
    assert_eq!(inspect(&d, "capped")["State"]["OOMKilled"], false);
}

/// Requirement 6: under `--pids-limit 20` a fork loop is stopped: forks fail, the
/// container survives, its process count stays at or below 20.
#[test]
fn pids_limit_stops_fork_loop() {
    let d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "forker",
            "--pids-limit",
            "20",
            "busybox",
            "sh",
            "-c",
            // The loop runs in a subshell, which a failed fork ends; the container's main
            // process then replaces itself (no fork needed) and lives on.
            "(i=0; while [ $i -lt 100 ]; do sleep 1000 & i=$((i+1)); done); echo loop-ended; exec sleep 1000",
        ],
    );
    wait_log(&d, "forker", "loop-ended", 20);
    let l = logs(&d, "forker");
    assert!(l.contains("can't fork"), "no fork failed: {l}");
    assert_eq!(
        status(&d, "forker"),
        "running",
        "the container did not survive"
    );
    let forker = pid(&d, "forker");
    let dir = container_cgroup(forker, "pids");
    assert_eq!(read_trim(&dir.join("pids.max")), "20");
    let current: u64 = read_trim(&dir.join("pids.current")).parse().unwrap();
    assert!((15..=20).contains(&current), "pids.current {current}");
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert!(procs.lines().count() <= 20);
    let pids_col = d.ok(&["stats", "--no-stream", "--format", "{{.PIDs}}", "forker"]);
    let n: u64 = pids_col.trim().parse().unwrap();
    assert!((15..=20).contains(&n), "stats PIDS {n}");
    assert_eq!(inspect(&d, "forker")["HostConfig"]["PidsLimit"], 20);

    // Without the limit the same loop forks them all.
    run_d(
        &d,
        &[
            "--name",
            "free",
            "busybox",
            "sh",
            "-c",
            "i=0; while [ $i -lt 30 ]; do sleep 1000 & i=$((i+1)); done; echo done-forking; wait",
        ],
    );
    wait_log(&d, "free", "done-forking", 20);
    let dir = container_cgroup(pid(&d, "free"), "pids");
    let current: u64 = read_trim(&dir.join("pids.current")).parse().unwrap();
    assert_eq!(current, 31);
    assert!(!logs(&d, "free").contains("can't fork"));
}

/// Requirement 6: `--cpus 0.5` sets a 50 ms quota per 100 ms period, and a busy loop gets
/// no more than about half a CPU.
#[test]
fn cpu_quota() {
    let d = daemon();
    run_d(
        &d,
        &[
            "--name",
            "spinner",
            "--cpus",
            "0.5",
            "busybox",
            "sh",
            "-c",
            "while true; do :; done",
        ],
    );
    let pid = pid(&d, "spinner");
    let dir = if v2() {
        let dir = container_cgroup(pid, "cpu");
        assert_eq!(read_trim(&dir.join("cpu.max")), "50000 100000");
        dir
    } else {
        let dir = container_cgroup(pid, "cpu");
        assert_eq!(read_trim(&dir.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read_trim(&dir.join("cpu.cfs_period_us")), "100000");
        container_cgroup(pid, "cpuacct")
    };
    let usage_of = cpu_usage_ns;
    // Let it settle, then measure over two seconds.
    std::thread::sleep(Duration::from_millis(300));
    let (u0, t0) = (usage_of(&dir), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (u1, t1) = (usage_of(&dir), Instant::now());
    let cpus = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
    assert!(
        cpus <= 0.6,
        "a busy loop under --cpus 0.5 used {cpus:.2} CPUs"
    );
    assert!(cpus >= 0.05, "the busy loop did not run ({cpus:.2} CPUs)");
    assert_eq!(
        inspect(&d, "spinner")["HostConfig"]["NanoCpus"],
        500_000_000
    );
}

/// CPU time used by the cgroup at `dir` in nanoseconds (v2 `cpu.stat` or v1 `cpuacct.usage`).
fn cpu_usage_ns(dir: &Path) -> u64 {
    if v2() {
        let text = std::fs::read_to_string(dir.join("cpu.stat")).unwrap();
        let usec: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .unwrap()
            .parse()
            .unwrap();
        usec * 1000
    } else {
        read_trim(&dir.join("cpuacct.usage")).parse().unwrap()
    }
}
