//! End-to-end tests of container isolation with Docker's defaults: namespaces, networking
//! modes, capabilities, the seccomp profile, masked and read-only paths, the minimal /dev,
//! a read-only root; and several daemons side by side.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

/// Docker's default capability set as /proc/<pid>/status prints it.
const DOCKER_CAPS: u64 = 0xa80425fb;
const CAP_NET_RAW: u64 = 1 << 13;
const CAP_SYS_ADMIN: u64 = 1 << 21;

/// Reads `field` (hex) from a `/proc/<pid>/status` text.
fn status_hex(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .split_whitespace()
        .nth(1)
        .unwrap()
}

/// `run --rm` that must succeed; returns its stdout.
fn run_ok(d: &shoal_testkit::daemon::Daemon, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    let o = d.run(&all);
    assert!(o.status.success(), "run {args:?}: {}", show(&o));
    stdout(&o)
}

fn ns(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

// ----- namespaces ---------------------------------------------------------------------------

/// Requirement 5: pid, uts, ipc, mount and network namespaces of its own; the workload is
/// PID 1 and sees no host process; the hostname is the short ID, or `--hostname`.
#[test]
fn namespaces_pid_uts_ipc_mount_net() {
    let d = daemon();
    let id = run_d(&d, &["--name", "boxed", "busybox", "sleep", "1000"]);
    let pid = pid(&d, "boxed").to_string();
    for kind in ["pid", "uts", "ipc", "mnt", "net"] {
        assert_ne!(
            ns(&pid, kind),
            ns("self", kind),
            "{kind} namespace shared with the host"
        );
    }
    // Docker keeps the host's user namespace.
    assert_eq!(ns(&pid, "user"), ns("self", "user"));

    // PID 1 is the workload; only the container's processes are visible.
    assert_eq!(
        exec_ok(&d, "boxed", &["cat", "/proc/1/cmdline"]),
        "sleep\u{0}1000\u{0}"
    );
    let pids = exec_ok(&d, "boxed", &["sh", "-c", "ls /proc | grep '^[0-9]*$'"]);
    let pids: Vec<&str> = pids.lines().collect();
    // sleep, sh and ls (the grep is a pipe sibling: 4 at most).
    assert!(pids.len() <= 4, "host processes visible: {pids:?}");
    assert!(pids.contains(&"1"));
    let daemon_pid = d.pid().unwrap().to_string();
    let o = exec(&d, "boxed", &["kill", "-0", &daemon_pid]);
    // The daemon's host PID either does not exist inside or is one of the container's own.
    assert!(
        !o.status.success() || pids.contains(&daemon_pid.as_str()),
        "the daemon is visible from inside"
    );
    assert_eq!(run_ok(&d, &["busybox", "sh", "-c", "echo $$"]), "1\n");

    // UTS: the short ID by default, the host's name untouched.
    assert_eq!(
        exec_ok(&d, "boxed", &["hostname"]),
        format!("{}\n", &id[..12])
    );
    assert_eq!(
        exec_ok(&d, "boxed", &["cat", "/etc/hostname"]),
        format!("{}\n", &id[..12])
    );
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        run_ok(&d, &["--hostname", "box1", "busybox", "hostname"]),
        "box1\n"
    );
    assert_eq!(
        run_ok(&d, &["-h", "box2", "busybox", "cat", "/etc/hostname"]),
        "box2\n"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name
    );

    // IPC: a System V queue made in one container is not seen by another.
    let a = run_d(&d, &["busybox", "sleep", "1000"]);
    let b = run_d(&d, &["busybox", "sleep", "1000"]);
    assert_ne!(ns(&pid_of(&d, &a), "ipc"), ns(&pid_of(&d, &b), "ipc"));
    assert_ne!(ns(&pid_of(&d, &a), "ipc"), ns(&pid, "ipc"));

    // Mount: a tmpfs mounted inside (with SYS_ADMIN) is not seen by the host.
    let o = d.run(&[
        "run",
        "-d",
        "--name",
        "mounter",
        "--cap-add",
        "SYS_ADMIN",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo mounted && sleep 1000",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    wait_log(&d, "mounter", "mounted", 10);
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains("/mnt/t "),
        "the container's mount leaked to the host"
    );
    let inside = exec_ok(&d, "mounter", &["cat", "/proc/self/mountinfo"]);
    assert!(inside.contains(" /mnt/t "), "{inside}");
    // And the host's own mounts are not listed inside.
    assert!(!inside.contains(d.root.path().to_str().unwrap()) || inside.contains(" / "));
}

fn pid_of(d: &shoal_testkit::daemon::Daemon, id: &str) -> String {
    pid(d, id).to_string()
}

/// Requirement 5: `--network none` gives only loopback, up, where 127.0.0.1 works;
/// `--network host` sees the host's interfaces.
#[test]
fn network_none_and_host() {
    let d = daemon();
    let links = run_ok(&d, &["busybox", "sh", "-c", "ls /sys/class/net"]);
    assert_eq!(links, "lo\n");
    let lo = run_ok(&d, &["busybox", "ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    let addr = run_ok(&d, &["busybox", "ip", "-o", "addr"]);
    assert!(addr.contains("127.0.0.1/8"), "{addr}");
    // A server and a client on 127.0.0.1 inside one container.
    let out = run_ok(
        &d,
        &[
            "busybox",
            "sh",
            "-c",
            "nc -l -p 8080 > /tmp/got & for i in $(seq 50); do echo ping-over-lo | nc 127.0.0.1 8080 && break; sleep 0.1; done; wait; cat /tmp/got",
        ],
    );
    assert_eq!(out, "ping-over-lo\n");
    // The same port on the host is unaffected by the container's listener (own netns).
    let inspect_net = inspect(&d, &run_d(&d, &["busybox", "sleep", "100"]));
    assert_eq!(inspect_net["HostConfig"]["NetworkMode"], "none");

    // Host networking: the host's interfaces and network namespace.
    let mut host_links: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    host_links.sort();
    let inside = run_ok(
        &d,
        &["--network", "host", "busybox", "ls", "/sys/class/net"],
    );
    let mut inside: Vec<String> = inside.split_whitespace().map(str::to_owned).collect();
    inside.sort();
    assert_eq!(inside, host_links);
    let id = run_d(&d, &["--network", "host", "busybox", "sleep", "1000"]);
    let p = pid_of(&d, &id);
    assert_eq!(ns(&p, "net"), ns("self", "net"));
    assert_ne!(
        ns(&p, "uts"),
        ns("self", "uts"),
        "host networking keeps its own UTS"
    );
    // With host networking the hostname is the host's.
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(exec_ok(&d, &id, &["hostname"]), host_name);

    let o = d.run(&["run", "--rm", "--network", "bogus", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", show(&o));
}

// ----- capabilities and seccomp -------------------------------------------------------------

/// Requirement 5: Docker's default capabilities; `--cap-add`, `--cap-drop`, `--cap-drop ALL`;
/// a non-root user has none effective.
#[test]
fn capabilities() {
    let d = daemon();
    let s = run_ok(&d, &["busybox", "cat", "/proc/self/status"]);
    for f in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(status_hex(&s, f), DOCKER_CAPS, "{f}: {s}");
    }
    assert_eq!(status_hex(&s, "CapInh"), 0);
    assert_eq!(status_hex(&s, "CapAmb"), 0);

    let s = run_ok(
        &d,
        &[
            "--cap-drop",
            "NET_RAW",
            "busybox",
            "cat",
            "/proc/self/status",
        ],
    );
    assert_eq!(status_hex(&s, "CapEff"), DOCKER_CAPS & !CAP_NET_RAW);
    assert_eq!(status_hex(&s, "CapBnd"), DOCKER_CAPS & !CAP_NET_RAW);
    // Names with or without CAP_, any case.
    let s = run_ok(
        &d,
        &[
            "--cap-add",
            "cap_sys_admin",
            "--cap-drop",
            "CAP_NET_RAW",
            "busybox",
            "cat",
            "/proc/self/status",
        ],
    );
    assert_eq!(
        status_hex(&s, "CapEff"),
        (DOCKER_CAPS | CAP_SYS_ADMIN) & !CAP_NET_RAW
    );
    let s = run_ok(
        &d,
        &["--cap-drop", "ALL", "busybox", "cat", "/proc/self/status"],
    );
    assert_eq!(status_hex(&s, "CapEff"), 0);
    assert_eq!(status_hex(&s, "CapBnd"), 0);
    let s = run_ok(
        &d,
        &[
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CHOWN",
            "busybox",
            "cat",
            "/proc/self/status",
        ],
    );
    assert_eq!(status_hex(&s, "CapEff"), 1);
    // Dropping CHOWN really takes the power away.
    let o = d.run(&[
        "run",
        "--rm",
        "--cap-drop",
        "CHOWN",
        "busybox",
        "chown",
        "1000",
        "/tmp",
    ]);
    assert!(
        !o.status.success(),
        "chown worked without CAP_CHOWN: {}",
        show(&o)
    );
    run_ok(&d, &["busybox", "chown", "1000", "/tmp"]);

    let s = run_ok(&d, &["-u", "1000", "busybox", "cat", "/proc/self/status"]);
    assert_eq!(status_hex(&s, "CapEff"), 0);
    assert_eq!(status_hex(&s, "CapBnd"), DOCKER_CAPS);

    let o = d.run(&["run", "--rm", "--cap-add", "NOT_A_CAP", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", show(&o));
    assert!(stderr(&o).contains("NOT_A_CAP"), "{}", show(&o));
}

/// Requirement 5: Docker's default seccomp profile is active: filter mode, user namespaces
/// and `unshare -u` refused, `mount` refused; with SYS_ADMIN mount and unshare work.
#[test]
fn seccomp_default_profile() {
    let d = daemon();
    let s = run_ok(&d, &["busybox", "cat", "/proc/self/status"]);
    assert_eq!(status_field(&s, "Seccomp"), "2", "{s}");
    assert_eq!(status_field(&s, "Seccomp_filters"), "1", "{s}");

    let o = d.run(&["run", "--rm", "busybox", "unshare", "-u", "true"]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        show(&o)
    );
    let o = d.run(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /mnt && mount -t tmpfs none /mnt",
    ]);
    assert!(!o.status.success(), "{}", show(&o));
    let e = stderr(&o);
    assert!(
        e.contains("Operation not permitted") || e.contains("permission denied"),
        "{}",
        show(&o)
    );

    // A user namespace needs no capability at all, so only the seccomp profile refuses it
    // (when the host allows them: checked first).
    let host = std::process::Command::new("unshare")
        .args(["-U", "true"])
        .output();
    match host {
        Ok(h) if h.status.success() => {
            let o = d.run(&["run", "--rm", "busybox", "unshare", "-U", "true"]);
            assert!(
                !o.status.success(),
                "seccomp let a user namespace through: {}",
                show(&o)
            );
            assert!(
                stderr(&o).contains("Operation not permitted"),
                "{}",
                show(&o)
            );
        }
        _ => eprintln!(
            "NOTE seccomp_default_profile: the host refuses user namespaces; that check is skipped"
        ),
    }

    // With SYS_ADMIN Docker's profile allows mount and unshare.
    let out = run_ok(
        &d,
        &[
            "--cap-add",
            "SYS_ADMIN",
            "busybox",
            "sh",
            "-c",
            "mkdir -p /mnt && mount -t tmpfs none /mnt && grep ' /mnt ' /proc/self/mountinfo | wc -l; unshare -u hostname inner && echo unshared",
        ],
    );
    assert_eq!(out, "1\nunshared\n");
}

/// Requirement 5: as with Docker, `no_new_privileges` is off unless asked for (setuid and
/// file-capability programs of the image must keep working), for the workload and `exec`.
#[test]
fn no_new_privileges_off_by_default() {
    let d = daemon();
    let s = run_ok(&d, &["busybox", "cat", "/proc/self/status"]);
    assert_eq!(status_field(&s, "NoNewPrivs"), "0", "{s}");
    let id = run_d(&d, &["busybox", "sleep", "1000"]);
    let s = exec_ok(&d, &id, &["cat", "/proc/self/status"]);
    assert_eq!(status_field(&s, "NoNewPrivs"), "0", "exec: {s}");
}

// ----- paths and /dev ----------------------------------------------------------------------

/// Requirement 5: masked paths read empty, /proc/sys and /proc/sysrq-trigger are read-only.
#[test]
fn masked_and_readonly_paths() {
    let d = daemon();
    let id = run_d(&d, &["--name", "masked", "busybox", "sleep", "1000"]);
    // Host-side sanity: these have content on the host.
    for p in ["/proc/timer_list", "/proc/interrupts"] {
        assert!(
            !std::fs::read(p).unwrap().is_empty(),
            "{p} is empty on the host"
        );
        let o = exec(&d, &id, &["cat", p]);
        assert!(stdout(&o).is_empty(), "{p} readable inside: {}", show(&o));
    }
    let o = exec(&d, &id, &["cat", "/proc/keys"]);
    assert!(
        stdout(&o).is_empty(),
        "/proc/keys readable inside: {}",
        show(&o)
    );
    for p in ["/proc/kcore"] {
        if std::path::Path::new(p).exists() {
            let o = exec(&d, &id, &["sh", "-c", &format!("wc -c < {p}")]);
            assert_eq!(stdout(&o).trim(), "0", "{p}: {}", show(&o));
        } else {
            eprintln!(
                "NOTE masked_and_readonly_paths: the host has no {p}; its mask is not checked"
            );
        }
    }
    // Masked directories are empty.
    let fw = exec_ok(&d, &id, &["ls", "-A", "/sys/firmware"]);
    assert_eq!(fw, "", "/sys/firmware lists {fw}");
    assert!(std::fs::read_dir("/sys/firmware").unwrap().count() > 0);
    let o = exec(&d, &id, &["sh", "-c", "touch /sys/firmware/x"]);
    assert!(!o.status.success());

    // Read-only /proc/sys (and sysrq-trigger when the host has it).
    let o = exec(
        &d,
        &id,
        &["sh", "-c", "echo evil > /proc/sys/kernel/hostname"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Read-only file system"), "{}", show(&o));
    let o = exec(&d, &id, &["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"]);
    assert!(!o.status.success());
    if std::path::Path::new("/proc/sysrq-trigger").exists() {
        let o = exec(&d, &id, &["sh", "-c", "echo h > /proc/sysrq-trigger"]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("Read-only file system"), "{}", show(&o));
    } else {
        eprintln!("NOTE masked_and_readonly_paths: the host has no /proc/sysrq-trigger");
    }
    let mi = exec_ok(&d, &id, &["cat", "/proc/self/mountinfo"]);
    let sys_line = mi
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/proc/sys"))
        .unwrap_or_else(|| panic!("/proc/sys is no mount: {mi}"));
    assert!(
        sys_line
            .split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{sys_line}"
    );
    // Reading still works.
    assert_eq!(
        exec_ok(&d, &id, &["cat", "/proc/sys/kernel/hostname"]),
        format!("{}\n", &id[..12])
    );
}

/// Requirement 5: a minimal /dev (null, zero, full, random, urandom, tty, pts, shm, mqueue,
/// fd links), none of the host's disks, and device access denied by the device cgroup.
#[test]
fn minimal_dev() {
    let d = daemon();
    let list = run_ok(&d, &["busybox", "ls", "-A", "/dev"]);
    let inside: BTreeSet<&str> = list.split_whitespace().collect();
    for want in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "fd", "stdin",
        "stdout", "stderr", "ptmx",
    ] {
        assert!(inside.contains(want), "/dev lacks {want}: {inside:?}");
    }
    let allowed: BTreeSet<&str> = [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "fd", "stdin",
        "stdout", "stderr", "ptmx", "console", "core",
    ]
    .into();
    let extra: Vec<&&str> = inside.difference(&allowed).collect();
    assert!(extra.is_empty(), "unexpected /dev entries: {extra:?}");
    // None of the host's block devices.
    for e in std::fs::read_dir("/dev").unwrap().flatten() {
        use std::os::unix::fs::FileTypeExt;
        if e.file_type().unwrap().is_block_device() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !inside.contains(name.as_str()),
                "host disk /dev/{name} visible"
            );
        }
    }
    let links = run_ok(
        &d,
        &[
            "busybox",
            "sh",
            "-c",
            "for l in /dev/fd /dev/stdin /dev/stdout /dev/stderr; do readlink $l; done",
        ],
    );
    assert_eq!(
        links,
        "/proc/self/fd\n/proc/self/fd/0\n/proc/self/fd/1\n/proc/self/fd/2\n"
    );
    let out = run_ok(
        &d,
        &[
            "busybox",
            "sh",
            "-c",
            "head -c 4 /dev/zero | wc -c; head -c 8 /dev/urandom | wc -c; echo x > /dev/null && echo null-ok; echo x > /dev/full || echo full-refused",
        ],
    );
    assert_eq!(out, "4\n8\nnull-ok\nfull-refused\n");
    // Even a device node made inside cannot be opened: the device cgroup denies it.
    if let Some(disk) = std::fs::read_dir("/dev").unwrap().flatten().find_map(|e| {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let md = e.metadata().ok()?;
        md.file_type().is_block_device().then(|| {
            let rdev = md.rdev();
            (libc::major(rdev), libc::minor(rdev))
        })
    }) {
        let (maj, min) = disk;
        let o = d.run(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            &format!("mknod /tmp/disk b {maj} {min} && head -c 1 /tmp/disk | wc -c"),
        ]);
        assert!(!stdout(&o).contains('1'), "read a host disk: {}", show(&o));
        assert!(
            stderr(&o).contains("Operation not permitted"),
            "{}",
            show(&o)
        );
    }
}

/// Requirement 5: `--read-only` root: writes to / fail, a `--tmpfs` (with its size) and
/// /dev/shm stay writable.
#[test]
fn read_only_root_with_tmpfs() {
    let d = daemon();
    let o = d.run(&["run", "--rm", "--read-only", "busybox", "touch", "/newfile"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Read-only file system"), "{}", show(&o));
    let o = d.run(&["run", "--rm", "--read-only", "busybox", "touch", "/tmp/x"]);
    assert!(!o.status.success(), "{}", show(&o));

    let out = run_ok(
        &d,
        &[
            "--read-only",
            "--tmpfs",
            "/tmp:size=1m",
            "busybox",
            "sh",
            "-c",
            "echo hi > /tmp/x && cat /tmp/x; df -k /tmp | tail -1 | awk '{print $2}'; \
             head -c 2000000 /dev/zero > /tmp/big 2>/dev/null || echo full; \
             echo shm > /dev/shm/y && cat /dev/shm/y; df -k /dev/shm | tail -1 | awk '{print $2}'",
        ],
    );
    assert_eq!(out, "hi\n1024\nfull\nshm\n65536\n");
    // Without --read-only the root is writable, and a tmpfs is not executable.
    run_ok(&d, &["busybox", "touch", "/newfile"]);
    let o = d.run(&[
        "run",
        "--rm",
        "--tmpfs",
        "/run",
        "busybox",
        "sh",
        "-c",
        "cp /bin/busybox /run/bb && /run/bb true",
    ]);
    assert!(!o.status.success(), "a tmpfs allowed exec: {}", show(&o));
}

// ----- several daemons ----------------------------------------------------------------------

/// Requirement 10: two daemons side by side each list only their own containers, use
/// different cgroup parents, and removing every container of one leaves the other's running.
#[test]
fn daemons_side_by_side() {
    let d1 = daemon();
    let d2 = daemon();
    assert_ne!(d1.socket, d2.socket);
    let a = run_d(&d1, &["--name", "same-name", "busybox", "sleep", "1000"]);
    let b = run_d(&d2, &["--name", "same-name", "busybox", "sleep", "1000"]);
    let a2 = run_d(&d1, &["busybox", "sleep", "1000"]);
    let mut l1: Vec<String> = d1
        .ok(&["ps", "-aq", "--no-trunc"])
        .lines()
        .map(str::to_owned)
        .collect();
    l1.sort();
    let mut want = vec![a.clone(), a2.clone()];
    want.sort();
    assert_eq!(l1, want);
    assert_eq!(d2.ok(&["ps", "-aq", "--no-trunc"]).trim(), b);
    let o = d2.run(&["inspect", &a]);
    assert!(!o.status.success(), "daemon 2 knows daemon 1's container");

    let pa = pid(&d1, &a);
    let pb = pid(&d2, &b);
    let ca = cgroup_dir(pa, "memory").unwrap();
    let cb = cgroup_dir(pb, "memory").unwrap();
    assert!(ca.ends_with(&a), "{}", ca.display());
    assert!(cb.ends_with(&b), "{}", cb.display());
    assert_ne!(ca.parent(), cb.parent(), "same cgroup parent");

    for id in d1.ok(&["ps", "-aq"]).lines() {
        d1.ok(&["rm", "-f", id]);
    }
    assert_eq!(d1.ok(&["ps", "-aq"]), "");
    assert!(!alive(pa));
    assert!(
        alive(pb),
        "removing daemon 1's containers killed daemon 2's"
    );
    assert_eq!(status(&d2, "same-name"), "running");
    assert_eq!(exec_ok(&d2, "same-name", &["echo", "still"]), "still\n");
    // Stopping daemon 1 entirely does not touch daemon 2's either.
    drop(d1);
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(pb));
    assert_eq!(status(&d2, "same-name"), "running");
}
