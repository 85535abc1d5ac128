//! End-to-end tests of named, anonymous and bind-mounted volumes: the `volume` commands with
//! Docker's output, data kept across containers, read-only mounts, removal rules.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// Requirement 9: `volume create/ls/inspect/rm/prune` with Docker's output.
#[test]
fn volume_commands() {
    let d = daemon();
    assert_eq!(d.ok(&["volume", "create", "alpha"]), "alpha\n");
    assert_eq!(
        d.ok(&["volume", "create", "--label", "team=b", "beta"]),
        "beta\n"
    );
    // Creating an existing volume again is fine and keeps it.
    assert_eq!(d.ok(&["volume", "create", "alpha"]), "alpha\n");
    let anon = d.ok(&["volume", "create"]);
    let anon = anon.trim();
    assert_eq!(anon.len(), 64, "{anon}");

    let ls = d.ok(&["volume", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["DRIVER", "VOLUME", "NAME"]
    );
    assert!(lines[0].starts_with("DRIVER    VOLUME NAME"), "{ls}");
    let mut rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    rows.sort();
    let mut want = vec![
        vec!["local", "alpha"],
        vec!["local", "beta"],
        vec!["local", anon],
    ];
    want.sort();
    assert_eq!(rows, want, "{ls}");
    let mut q: Vec<String> = d
        .ok(&["volume", "ls", "-q"])
        .lines()
        .map(str::to_owned)
        .collect();
    q.sort();
    let mut want_q = vec!["alpha".to_owned(), "beta".to_owned(), anon.to_owned()];
    want_q.sort();
    assert_eq!(q, want_q);

    let v: Value = serde_json::from_str(&d.ok(&["volume", "inspect", "beta"])).unwrap();
    let v = &v[0];
    assert_eq!(v["Name"], "beta");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Labels"]["team"], "b");
    let mp = v["Mountpoint"].as_str().unwrap();
    assert!(mp.starts_with(d.data.to_str().unwrap()), "{mp}");
    assert!(std::path::Path::new(mp).is_dir());
    assert!(
        chrono::DateTime::parse_from_rfc3339(v["CreatedAt"].as_str().unwrap()).is_ok(),
        "{v}"
    );
    assert_eq!(
        d.ok(&["volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "alpha"]),
        "alpha local\n"
    );
    let o = d.run(&["volume", "inspect", "nope"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("No such volume: nope"), "{}", show(&o));

    assert_eq!(d.ok(&["volume", "rm", "alpha"]), "alpha\n");
    assert!(
        !std::path::Path::new(mp)
            .parent()
            .unwrap()
            .with_file_name("alpha")
            .exists()
    );
    let o = d.run(&["volume", "rm", "alpha"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no such volume"), "{}", show(&o));
    let o = d.run(&["volume", "create", "bad/name"]);
    assert!(!o.status.success(), "{}", show(&o));

    // prune removes unused volumes and keeps one a container uses.
    run_d(&d, &["-v", "beta:/data", "busybox", "sleep", "1000"]);
    std::fs::write(
        std::path::Path::new(mp)
            .parent()
            .unwrap()
            .with_file_name(anon)
            .join("_data/f"),
        "12345",
    )
    .unwrap();
    let out = d.ok(&["volume", "prune", "-f"]);
    assert!(out.starts_with("Deleted Volumes:\n"), "{out}");
    assert!(out.contains(&format!("\n{anon}\n")), "{out}");
    assert!(!out.contains("beta"), "{out}");
    assert!(
        out.trim_end().ends_with("Total reclaimed space: 5B"),
        "{out}"
    );
    assert_eq!(d.ok(&["volume", "ls", "-q"]), "beta\n");

    // Docker 23+: without --all, prune keeps unused *named* volumes; --all removes them.
    d.ok(&["volume", "create", "gamma"]);
    let out = d.ok(&["volume", "prune", "-f"]);
    assert!(!out.contains("gamma"), "{out}");
    assert!(d.ok(&["volume", "ls", "-q"]).contains("gamma"));
    let out = d.ok(&["volume", "prune", "-a", "-f"]);
    assert!(out.contains("\ngamma\n"), "{out}");
    assert_eq!(d.ok(&["volume", "ls", "-q"]), "beta\n");
}

/// Requirement 9: `-v name:/data` creates the volume on first use; data written by one
/// container is read by the next; `:ro` refuses writes.
#[test]
fn named_volume_keeps_data() {
    let d = daemon();
    let o = d.run(&[
        "run",
        "--rm",
        "-v",
        "store:/data",
        "busybox",
        "sh",
        "-c",
        "echo persisted > /data/f; ls /data",
    ]);
    assert_eq!(stdout(&o), "f\n", "{}", show(&o));
    assert_eq!(d.ok(&["volume", "ls", "-q"]), "store\n");
    let o = d.run(&[
        "run",
        "--rm",
        "-v",
        "store:/elsewhere",
        "busybox",
        "cat",
        "/elsewhere/f",
    ]);
    assert_eq!(stdout(&o), "persisted\n", "{}", show(&o));
    let mp = d.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "store"]);
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(mp.trim()).join("f")).unwrap(),
        "persisted\n"
    );

    let o = d.run(&[
        "run",
        "--rm",
        "-v",
        "store:/data:ro",
        "busybox",
        "sh",
        "-c",
        "cat /data/f; echo x > /data/g",
    ]);
    assert_eq!(stdout(&o), "persisted\n");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Read-only file system"), "{}", show(&o));
    assert!(!std::path::Path::new(mp.trim()).join("g").exists());
    // Two containers share one volume live.
    let a = run_d(&d, &["-v", "store:/data", "busybox", "sleep", "1000"]);
    let b = run_d(&d, &["-v", "store:/data", "busybox", "sleep", "1000"]);
    exec_ok(&d, &a, &["sh", "-c", "echo shared > /data/live"]);
    assert_eq!(exec_ok(&d, &b, &["cat", "/data/live"]), "shared\n");
    let mounts = &inspect(&d, &a)["Mounts"];
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Name"], "store");
    assert_eq!(mounts[0]["Destination"], "/data");
}

/// Requirement 9: `-v /hostdir:/path` bind mounts, read-write and `:ro`.
#[test]
fn bind_mounts() {
    let d = daemon();
    let host = d.root.path().join("share");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("from-host"), "hello from host\n").unwrap();
    let spec = format!("{}:/share", host.display());
    let o = d.run(&[
        "run",
        "--rm",
        "-v",
        &spec,
        "busybox",
        "sh",
        "-c",
        "cat /share/from-host; echo hi > /share/from-container",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(stdout(&o), "hello from host\n");
    assert_eq!(
        std::fs::read_to_string(host.join("from-container")).unwrap(),
        "hi\n"
    );

    let ro = format!("{}:/share:ro", host.display());
    let o = d.run(&[
        "run",
        "--rm",
        "-v",
        &ro,
        "busybox",
        "sh",
        "-c",
        "cat /share/from-host; echo x > /share/nope",
    ]);
    assert_eq!(stdout(&o), "hello from host\n");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Read-only file system"), "{}", show(&o));
    assert!(!host.join("nope").exists());
    // The read-only flag holds for the host's mount too (not only inside).
    let id = run_d(&d, &["-v", &ro, "busybox", "sleep", "1000"]);
    let mi = exec_ok(&d, &id, &["cat", "/proc/self/mountinfo"]);
    let line = mi
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/share"))
        .unwrap();
    assert!(
        line.split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{line}"
    );
    // A missing host directory is created, as Docker does.
    let fresh = d.root.path().join("fresh/dir");
    let spec = format!("{}:/f", fresh.display());
    let o = d.run(&["run", "--rm", "-v", &spec, "busybox", "touch", "/f/made"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(fresh.join("made").exists());

    let o = d.run(&["run", "--rm", "-v", "relative:dir:/x", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", show(&o));
}

/// Requirement 9: `volume rm` of a volume a container uses is refused with a clear error.
#[test]
fn volume_in_use_is_not_removed() {
    let d = daemon();
    let id = run_d(
        &d,
        &[
            "--name",
            "user1",
            "-v",
            "busy:/data",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let o = d.run(&["volume", "rm", "busy"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("remove busy: volume is in use"), "{e}");
    assert!(e.contains(&id[..12]), "the error names the container: {e}");
    let o = d.run(&["volume", "rm", "-f", "busy"]);
    assert!(
        !o.status.success(),
        "forced removal of an in-use volume: {}",
        show(&o)
    );
    // A stopped container still holds it, as with Docker.
    d.ok(&["stop", "-t", "0", "user1"]);
    assert!(!d.run(&["volume", "rm", "busy"]).status.success());
    d.ok(&["rm", "user1"]);
    assert_eq!(d.ok(&["volume", "rm", "busy"]), "busy\n");
}

/// Requirement 9: `rm -v` removes a container's anonymous volumes (`-v /data`) but not its
/// named ones; plain `rm` keeps them; `--rm` removes them; also after a daemon restart.
#[test]
fn anonymous_volumes_removed_with_rm_v() {
    let mut d = daemon();
    let anon_of = |d: &shoal_testkit::daemon::Daemon, id: &str| -> String {
        let m = &inspect(d, id)["Mounts"];
        let m = m
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Destination"] == "/data")
            .unwrap();
        assert_eq!(m["Type"], "volume");
        m["Name"].as_str().unwrap().to_owned()
    };
    let vols = |d: &shoal_testkit::daemon::Daemon| -> String { d.ok(&["volume", "ls", "-q"]) };

    let c1 = run_d(
        &d,
        &[
            "-v",
            "/data",
            "-v",
            "keepme:/named",
            "busybox",
            "sh",
            "-c",
            "echo x > /data/f",
        ],
    );
    let v1 = anon_of(&d, &c1);
    assert_eq!(v1.len(), 64);
    assert!(vols(&d).contains(&v1));
    wait_exited(&d, &c1, 10);
    d.ok(&["rm", "-v", &c1]);
    assert!(!vols(&d).contains(&v1), "rm -v left the anonymous volume");
    assert!(vols(&d).contains("keepme"), "rm -v removed a named volume");

    let c2 = run_d(&d, &["-v", "/data", "busybox", "true"]);
    let v2 = anon_of(&d, &c2);
    wait_exited(&d, &c2, 10);
    d.ok(&["rm", &c2]);
    assert!(
        vols(&d).contains(&v2),
        "plain rm removed the anonymous volume"
    );

    let c3 = run_d(
        &d,
        &["--rm", "-v", "/data", "busybox", "sh", "-c", "sleep 0.5"],
    );
    let v3 = anon_of(&d, &c3);
    assert!(
        d.wait_for(Duration::from_secs(10), || !vols(&d).contains(&v3)),
        "--rm left the anonymous volume"
    );

    // Across a daemon restart the daemon still knows which volumes are anonymous.
    let c4 = run_d(&d, &["-v", "/data", "busybox", "sleep", "1000"]);
    let v4 = anon_of(&d, &c4);
    d.restart(None).unwrap();
    d.ok(&["rm", "-f", "-v", &c4]);
    assert!(
        !vols(&d).contains(&v4),
        "rm -v after a restart left the anonymous volume"
    );
}

/// Requirement 9 (Docker's mount order): a volume or bind mount over /etc does not hide
/// the container's /etc/hostname, /etc/hosts and /etc/resolv.conf, which Docker mounts
/// after (over) the user's mounts.
#[test]
fn mount_over_etc_keeps_hostname_files() {
    let d = daemon();
    let host = d.root.path().join("etc");
    std::fs::create_dir_all(&host).unwrap();
    let spec = format!("{}:/etc", host.display());
    let o = d.run(&[
        "run",
        "--rm",
        "-h",
        "etcbox",
        "-v",
        &spec,
        "busybox",
        "sh",
        "-c",
        "cat /etc/hostname; grep -q '^127.0.0.1.*localhost' /etc/hosts && echo hosts-ok",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(stdout(&o), "etcbox\nhosts-ok\n");
}

/// Docker's volume copy-up: a new named volume mounted over a directory of the image starts
/// with the image's files (owner and mode kept); a volume that already has data is left
/// alone, and bind mounts are never filled.
#[test]
fn empty_named_volume_is_seeded_from_the_image() {
    let d = daemon();
    // The image's /etc holds passwd and group.
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        "etcvol:/etc",
        "busybox",
        "sh",
        "-c",
        "ls /etc; stat -c '%u %g %a' /etc/passwd",
    ]);
    assert!(out.contains("passwd"), "{out}");
    assert!(out.contains("group"), "{out}");
    // Data written now persists, and the next mount does not copy over it.
    d.ok(&[
        "run",
        "--rm",
        "-v",
        "etcvol:/etc",
        "busybox",
        "sh",
        "-c",
        "echo changed > /etc/passwd",
    ]);
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        "etcvol:/etc",
        "busybox",
        "cat",
        "/etc/passwd",
    ]);
    assert_eq!(out, "changed\n");
    // A bind mount of an empty host dir gets none of the image's files (only the mount
    // points of /etc/hostname, /etc/hosts and /etc/resolv.conf, as with Docker).
    let host = d.root.path().join("bind-empty");
    std::fs::create_dir_all(&host).unwrap();
    let spec = format!("{}:/etc", host.display());
    d.ok(&["run", "--rm", "-v", &spec, "busybox", "true"]);
    assert!(!host.join("passwd").exists());
    assert!(!host.join("group").exists());
}
