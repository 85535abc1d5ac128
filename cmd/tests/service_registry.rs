//! Services whose image is only in a registry that needs credentials: with
//! `--with-registry-auth` the node pulls with the client's credentials; without them the
//! task is rejected with the registry's refusal (a single-node swarm on loopback, Debian's
//! `docker-registry` behind a bearer-token issuer).

mod common_cli;

use std::time::Duration;

use common_cli::*;
use serde_json::Value;
use shoal_testkit::cluster::wait_until;
use shoal_testkit::daemon::{Daemon, DaemonOptions};

const USER: &str = "edge";
const PASSWORD: &str = "s3cret-pass";

fn tasks(d: &Daemon, service: &str) -> Vec<Value> {
    let f = format!("%7B%22service%22%3A%5B%22{service}%22%5D%7D");
    let (code, body) = d
        .api("GET", &format!("/tasks?filters={f}"), None)
        .expect("api");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn with_registry_auth_lets_the_node_pull() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tr = token_registry(tmp.path(), &["private/busybox:latest"], USER, PASSWORD);
    let (r, issuer) = (&tr.registry, &tr.issuer);
    let d = daemon_with(DaemonOptions {
        insecure_registries: vec![r.addr.clone()],
        ..DaemonOptions::default()
    });
    d.ok(&[
        "swarm",
        "init",
        "--advertise-addr",
        "127.0.0.1:4377",
        "--listen-addr",
        "127.0.0.1:4377",
    ]);
    let image = format!("{}/private/busybox:latest", r.addr);

    // Without credentials the node cannot pull: the task is rejected with the reason.
    d.ok(&[
        "service", "create", "-d", "--name", "anon", &image, "sleep", "3600",
    ]);
    assert!(
        wait_until(Duration::from_secs(30), || tasks(&d, "anon").iter().any(
            |t| t["Status"]["State"] == "rejected"
                && t["Status"]["Err"]
                    .as_str()
                    .is_some_and(|e| e.contains("pull access denied") || e.contains("denied"))
        )),
        "{:#?}",
        tasks(&d, "anon")
    );
    d.ok(&["service", "rm", "anon"]);

    // Logged in and --with-registry-auth: the credentials travel with the task.
    let mut c = d.cli();
    c.args(["login", "-u", USER, "--password-stdin", &r.addr]);
    let o = with_stdin(c, format!("{PASSWORD}\n").as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    d.ok(&[
        "service",
        "create",
        "-d",
        "--with-registry-auth",
        "--name",
        "authed",
        &image,
        "sleep",
        "3600",
    ]);
    assert!(
        wait_until(Duration::from_secs(30), || tasks(&d, "authed")
            .iter()
            .any(|t| t["Status"]["State"] == "running")),
        "{:#?}",
        tasks(&d, "authed")
    );
    assert!(
        issuer
            .issued()
            .iter()
            .any(|(u, _)| u.as_deref() == Some(USER)),
        "the pull used the user's credentials"
    );
    // The manager pinned the image to the registry's digest (it does not have the image
    // itself), and the credentials are not shown.
    let inspect = d.ok(&["service", "inspect", "authed"]);
    let spec: Value = serde_json::from_str(&inspect).expect("inspect json");
    let pinned = spec[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(pinned.starts_with(&format!("{image}@sha256:")), "{pinned}");
    assert!(
        !inspect.contains(PASSWORD) && !inspect.to_lowercase().contains("registryauth"),
        "{inspect}"
    );
    d.ok(&["service", "rm", "authed"]);
    d.ok(&["swarm", "leave", "--force"]);
}
