//! `shoal service …` argument checking that needs no daemon: the CLI refuses bad flags
//! with docker's messages and exit codes before it contacts the daemon. Every command
//! points at a socket that does not exist, so a check that wrongly happened after
//! contacting the daemon would show up as a connection error instead.

use std::path::Path;
use std::process::{Command, Output};

fn shoal(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("no-daemon.sock");
    let host = format!("unix://{}", socket.display());
    Command::new(Path::new(env!("CARGO_BIN_EXE_shoal")))
        .arg("-H")
        .arg(&host)
        .args(args)
        .env_remove("SHOAL_HOST")
        .output()
        .expect("run shoal")
}

/// Runs a command that must fail; returns (exit code, stderr).
fn refused(args: &[&str]) -> (i32, String) {
    let o = shoal(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "shoal {args:?} should fail; stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        !err.contains("Cannot connect to the shoal daemon"),
        "shoal {args:?} contacted the daemon before checking its arguments: {err}"
    );
    assert!(
        o.stdout.is_empty(),
        "shoal {args:?} printed to stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    (o.status.code().unwrap_or(-1), err)
}

#[test]
fn bad_replicas_is_a_flag_error() {
    let (code, err) = refused(&["service", "create", "--replicas", "x", "busybox"]);
    assert_eq!(code, 125, "{err}");
    assert_eq!(
        err,
        "invalid argument \"x\" for \"--replicas\" flag: strconv.ParseUint: parsing \"x\": invalid syntax\nSee 'shoal service create --help'.\n"
    );
}

#[test]
fn replicas_only_for_replicated_modes() {
    for mode in ["global", "global-job"] {
        let (code, err) = refused(&[
            "service",
            "create",
            "--mode",
            mode,
            "--replicas",
            "2",
            "busybox",
        ]);
        assert_eq!(code, 1, "{err}");
        assert_eq!(
            err,
            "replicas can only be used with replicated or replicated-job mode\n"
        );
    }
    let (code, err) = refused(&["service", "create", "--max-concurrent", "2", "busybox"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "max-concurrent can only be used with replicated-job mode\n"
    );
}

#[test]
fn bad_values_name_their_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--restart-delay", "5"],
            "invalid argument \"5\" for \"--restart-delay\" flag: time: missing unit in duration \"5\"",
        ),
        (
            &["--update-delay", "soon"],
            "invalid argument \"soon\" for \"--update-delay\" flag: time: invalid duration \"soon\"",
        ),
        (
            &["--limit-memory", "1q"],
            "invalid argument \"1q\" for \"--limit-memory\" flag: invalid suffix: 'q'",
        ),
        (
            &["--reserve-cpu", "one"],
            "invalid argument \"one\" for \"--reserve-cpu\" flag: failed to parse one as a rational number",
        ),
        (
            &["--mount", "type=volume,source=v"],
            "invalid argument \"type=volume,source=v\" for \"--mount\" flag: target is required",
        ),
        (
            &["--placement-pref", "pack=node.labels.zone"],
            "invalid argument \"pack=node.labels.zone\" for \"--placement-pref\" flag: unsupported placement preference pack (only spread is supported)",
        ),
        (
            &["--constraint", "node.role"],
            "invalid argument \"node.role\" for \"--constraint\" flag: constraint expected one operator from ==, !=",
        ),
    ];
    for (flags, message) in cases {
        let mut args = vec!["service", "create"];
        args.extend_from_slice(flags);
        args.push("busybox");
        let (code, err) = refused(&args);
        assert_eq!(code, 125, "{args:?}: {err}");
        assert_eq!(
            err,
            format!("{message}\nSee 'shoal service create --help'.\n"),
            "{args:?}"
        );
    }
}

#[test]
fn conflicting_flags() {
    let (code, err) = refused(&[
        "service",
        "create",
        "--no-healthcheck",
        "--health-cmd",
        "true",
        "busybox",
    ]);
    assert_eq!(code, 1);
    assert_eq!(err, "--no-healthcheck conflicts with --health-* options\n");

    let (code, err) = refused(&[
        "service",
        "update",
        "--rollback",
        "--image",
        "busybox:2",
        "web",
    ]);
    assert_eq!(code, 1);
    assert_eq!(err, "other flags may not be combined with --rollback\n");
}

#[test]
fn missing_env_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.env");
    let (code, err) = refused(&[
        "service",
        "create",
        "--env-file",
        missing.to_str().expect("utf-8 path"),
        "busybox",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!("open {}: ", missing.display())),
        "{err}"
    );
}

#[test]
fn scale_specifiers_are_checked_first() {
    let (code, err) = refused(&["service", "scale", "web"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Invalid scale specifier 'web'.\nSee 'shoal service scale --help'.\n\nUsage:  shoal service scale SERVICE=REPLICAS [SERVICE=REPLICAS...]"),
        "{err}"
    );
    let (_, err) = refused(&["service", "scale", "web=3", "db="]);
    assert!(err.starts_with("Invalid scale specifier 'db='."), "{err}");
}

#[test]
fn filters_must_be_key_value() {
    for args in [
        &["service", "ls", "-f", "name"][..],
        &["service", "ps", "--filter", "desired-state", "web"][..],
        &["node", "ps", "-f", "node"][..],
    ] {
        let (code, err) = refused(args);
        assert_eq!(code, 125, "{args:?}");
        assert!(
            err.contains("bad format of filter (expected name=value)"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn valid_arguments_reach_for_the_daemon() {
    // The other tests' refusals mean something only if valid arguments get as far as the
    // daemon: here they do, and fail for want of one.
    for args in [
        &[
            "service",
            "create",
            "--mode",
            "replicated-job",
            "--replicas",
            "2",
            "--mount",
            "type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770",
            "--restart-delay",
            "1m30s",
            "busybox",
            "true",
        ][..],
        &["service", "ls"][..],
        &["service", "scale", "web=3"][..],
        &["node", "ps"][..],
    ] {
        let o = shoal(args);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("Cannot connect to the shoal daemon"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn service_help_lists_the_verbs() {
    let o = shoal(&["service", "--help"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for verb in [
        "create", "update", "scale", "rollback", "rm", "ls", "ps", "inspect", "logs", "pause",
        "unpause",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(verb)),
            "`service --help` lacks {verb}:\n{out}"
        );
    }
}
