//! End-to-end registry pulls through the CLI and the daemon, against Debian's
//! `docker-registry` on 127.0.0.1: node-runtime issue, requirement 5 (plain HTTP and
//! `--insecure-registry`, progress output, `-q`, "up to date", implicit pull of `run`,
//! HTTPS with a per-registry CA, bearer tokens, `login`/`logout`, Docker's config.json,
//! zstd/gzip layers, multi-arch index) and requirement 6 (a pull killed halfway).

mod common_cli;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use common_cli::*;
use serde_json::Value;
use shoal_testkit::daemon::{Daemon, DaemonOptions};
use shoal_testkit::images::{Compression, ImageBuilder, host_arch, multi_arch_layout};
use shoal_testkit::registry::{CountingProxy, PushFormat, Registry, RegistryOptions};
use shoal_testkit::tls::TestCa;

fn insecure(addr: &str) -> DaemonOptions {
    DaemonOptions {
        insecure_registries: vec![addr.to_owned()],
        ..DaemonOptions::default()
    }
}

/// A registry holding `busybox:latest` (an OCI manifest with one gzip layer); returns it
/// with the image as built.
fn busybox_registry(tmp: &Path) -> (Registry, shoal_testkit::images::BuiltImage) {
    let r = registry();
    let (dir, built) = layout(tmp, "busybox", &ImageBuilder::busybox());
    r.push_layout(&dir, "busybox:latest", PushFormat::Oci, false)
        .unwrap();
    (r, built)
}

fn short_hex(digest: &str) -> String {
    digest.trim_start_matches("sha256:")[..12].to_owned()
}

/// Requirement 5: a plain-HTTP registry works when named in `--insecure-registry`; without
/// the flag the pull fails with an error about HTTPS/HTTP.
#[test]
fn plain_http_registry_needs_insecure_flag() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (r, built) = busybox_registry(tmp.path());
    let reference = format!("{}/busybox:latest", r.addr);

    let strict = daemon();
    let o = fails(&strict, &["image", "pull", &reference]);
    let err = stderr(&o);
    assert!(
        err.contains("HTTPS") || err.contains("https"),
        "mentions HTTPS: {err}"
    );
    assert!(err.contains("HTTP"), "{err}");
    assert_eq!(strict.ok(&["images", "-q"]), "", "nothing pulled");

    let d = daemon_with(insecure(&r.addr));
    assert_eq!(
        d.ok(&["image", "pull", "-q", &reference]),
        format!("{reference}\n")
    );
    assert_eq!(
        d.ok(&["images", "-q", "--no-trunc"]).trim(),
        built.config_digest
    );
}

/// Requirement 5: progress output when stdout is not a TTY: the tag line, per-layer statuses
/// ("Pull complete"), the digest, "Status: Downloaded newer image for …" and the full
/// reference on the last line; `-q` prints only the reference; pulling again says "Image is
/// up to date".
#[test]
fn pull_progress_quiet_and_up_to_date() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (r, built) = busybox_registry(tmp.path());
    let d = daemon_with(insecure(&r.addr));
    let repo = format!("{}/busybox", r.addr);
    let reference = format!("{repo}:latest");

    let out = d.ok(&["pull", &repo]);
    let ls = lines(&out);
    assert_eq!(ls[0], "Using default tag: latest", "{out}");
    assert_eq!(ls[1], "latest: Pulling from busybox", "{out}");
    assert!(
        !out.contains('\x1b'),
        "no terminal escapes when not a TTY: {out:?}"
    );
    assert!(
        !out.contains("Downloading ["),
        "no progress bars when not a TTY: {out}"
    );
    for layer in &built.layer_digests {
        let done = format!("{}: Pull complete", short_hex(layer));
        assert!(ls.contains(&done), "want {done:?} in:\n{out}");
    }
    assert!(
        ls.contains(&format!("Digest: {}", built.manifest_digest)),
        "{out}"
    );
    assert!(
        ls.contains(&format!("Status: Downloaded newer image for {reference}")),
        "{out}"
    );
    assert_eq!(ls.last().unwrap(), &reference, "{out}");

    let again = d.ok(&["image", "pull", &reference]);
    assert!(
        again.contains(&format!("Status: Image is up to date for {reference}\n")),
        "{again}"
    );
    assert!(!again.contains("Pull complete"), "{again}");
    assert!(again.ends_with(&format!("\n{reference}\n")), "{again}");
    assert_eq!(d.ok(&["pull", "-q", &reference]), format!("{reference}\n"));
    assert_eq!(
        d.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        format!("{reference}\n")
    );

    // The same content under a new name: nothing to download, but the name is new, so
    // Docker says "Downloaded newer image" (not "up to date").
    let (dir, _) = layout(tmp.path(), "busybox-again", &ImageBuilder::busybox());
    r.push_layout(&dir, "other:v2", PushFormat::Oci, false)
        .unwrap();
    let other = format!("{}/other:v2", r.addr);
    let out = d.ok(&["pull", &other]);
    assert!(
        out.contains(&format!(
            "{}: Already exists",
            short_hex(&built.layer_digests[0])
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {other}\n")),
        "{out}"
    );
    assert!(
        !out.starts_with("Using default tag"),
        "{other} names its tag: {out}"
    );
    let out = d.ok(&["pull", &other]);
    assert!(
        out.contains(&format!("Status: Image is up to date for {other}\n")),
        "{out}"
    );

    // A tag the registry does not have.
    let o = fails(&d, &["pull", &format!("{repo}:nosuch")]);
    assert!(stderr(&o).contains("manifest unknown"), "{}", stderr(&o));
}

/// Requirement 5: `run IMAGE` of a missing image pulls it first; the progress goes to
/// stderr ("Unable to find image … locally"), stdout only carries the container's output.
#[test]
fn run_pulls_missing_image_with_progress_on_stderr() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (r, built) = busybox_registry(tmp.path());
    let d = daemon_with(insecure(&r.addr));
    let reference = format!("{}/busybox:latest", r.addr);
    let o = d.run(&["run", "--rm", &reference, "echo", "hello"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello\n");
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!("Unable to find image '{reference}' locally\n")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}: Pull complete",
            short_hex(&built.layer_digests[0])
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("Status: Downloaded newer image for {reference}")),
        "{err}"
    );
    // Now present: no pull, nothing on stderr.
    let o = d.run(&["run", "--rm", &reference, "echo", "again"]);
    assert_eq!((stdout(&o).as_str(), stderr(&o).as_str()), ("again\n", ""));
}

/// Requirement 5: an HTTPS registry signed by a private CA works when
/// `--registry-certs-dir DIR` holds `DIR/127.0.0.1:PORT/ca.crt`, and fails with a
/// certificate error without it.
#[test]
fn https_registry_with_private_ca() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (plain, built) = busybox_registry(tmp.path());
    let ca = TestCa::new(&[]).unwrap();
    let (ca_crt, crt, key) = ca.write_to(&tmp.path().join("tls")).unwrap();
    let r = registry_on(
        &plain.storage_dir,
        RegistryOptions {
            tls: Some((crt, key)),
            ..RegistryOptions::default()
        },
    );
    let reference = format!("{}/busybox:latest", r.addr);

    let untrusting = daemon();
    let o = fails(&untrusting, &["pull", &reference]);
    let err = stderr(&o).to_lowercase();
    assert!(err.contains("certificate"), "a certificate error: {err}");
    assert_eq!(untrusting.ok(&["images", "-q"]), "");

    let certs = tmp.path().join("certs.d");
    std::fs::create_dir_all(certs.join(&r.addr)).unwrap();
    std::fs::copy(&ca_crt, certs.join(&r.addr).join("ca.crt")).unwrap();
    let d = daemon_with(DaemonOptions {
        certs_dir: Some(certs),
        ..DaemonOptions::default()
    });
    let out = d.ok(&["pull", &reference]);
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {reference}")),
        "{out}"
    );
    assert_eq!(
        d.ok(&["images", "-q", "--no-trunc"]).trim(),
        built.config_digest
    );
    let o = d.run(&["run", "--rm", &reference, "echo", "tls"]);
    assert_eq!(stdout(&o), "tls\n", "{}", stderr(&o));
}

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";

fn login(d: &Daemon, addr: &str, password: &str) -> std::process::Output {
    let mut c = d.cli();
    c.args(["login", "-u", USER, "--password-stdin", addr]);
    with_stdin(c, format!("{password}\n").as_bytes())
}

/// Requirement 5: a bearer-token registry: anonymous pull of `public/…` works, a private
/// repository is refused ("pull access denied"); `login --password-stdin` succeeds, stores
/// `<SHOAL_CONFIG>/config.json` (0600, docker's `auths` → base64 `user:pass`) and the
/// private pull works; a wrong password fails and stores nothing; `logout` removes the
/// entry; a docker-format `config.json` in `DOCKER_CONFIG` is accepted as a fallback.
#[test]
fn token_registry_login_logout_and_docker_config_fallback() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tr = token_registry(
        tmp.path(),
        &["public/busybox:latest", "private/busybox:latest"],
        USER,
        PASSWORD,
    );
    let (r, issuer, built) = (&tr.registry, &tr.issuer, &tr.built);
    let d = daemon_with(insecure(&r.addr));
    let public = format!("{}/public/busybox:latest", r.addr);
    let private = format!("{}/private/busybox:latest", r.addr);
    let config = d.config.join("config.json");

    // Anonymous: public yes, private no.
    assert_eq!(d.ok(&["pull", "-q", &public]), format!("{public}\n"));
    let o = fails(&d, &["pull", &private]);
    assert!(
        stderr(&o).contains(&format!(
            "pull access denied for {}/private/busybox",
            r.addr
        )),
        "{}",
        stderr(&o)
    );
    assert!(
        issuer.issued().iter().all(|(u, _)| u.is_none()),
        "anonymous tokens only so far"
    );

    // Wrong password: refused, nothing stored.
    let o = login(&d, &r.addr, "wrong");
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(!stdout(&o).contains("Login Succeeded"));
    assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
    assert!(!config.exists(), "a failed login stores nothing");

    // Right password.
    let o = login(&d, &r.addr, PASSWORD);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "Login Succeeded\n");
    let meta = std::fs::metadata(&config).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "config.json is private"
    );
    let cfg: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let auth = cfg["auths"][r.addr.as_str()]["auth"]
        .as_str()
        .unwrap_or_else(|| panic!("auths entry: {cfg}"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .unwrap();
    assert_eq!(decoded, format!("{USER}:{PASSWORD}").as_bytes());

    let out = d.ok(&["pull", &private]);
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {private}")),
        "{out}"
    );
    assert!(
        issuer
            .issued()
            .iter()
            .any(|(u, _)| u.as_deref() == Some(USER)),
        "the pull used alice's credentials"
    );
    assert_eq!(
        d.ok(&["image", "inspect", "-f", "{{.Id}}", &private])
            .trim(),
        built.config_digest
    );

    // Logout removes the entry; the private pull is refused again.
    let out = d.ok(&["logout", &r.addr]);
    assert!(
        out.contains(&format!("Removing login credentials for {}", r.addr)),
        "{out}"
    );
    let cfg: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert!(cfg["auths"].get(r.addr.as_str()).is_none(), "{cfg}");
    d.ok(&["rmi", &private]);
    let o = fails(&d, &["pull", &private]);
    assert!(stderr(&o).contains("pull access denied"), "{}", stderr(&o));

    // Docker's own config.json (DOCKER_CONFIG) as a fallback.
    let docker_dir = tmp.path().join("docker-config");
    std::fs::create_dir_all(&docker_dir).unwrap();
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        docker_dir.join("config.json"),
        serde_json::to_vec(&serde_json::json!({"auths": {r.addr.as_str(): {"auth": token}}}))
            .unwrap(),
    )
    .unwrap();
    let o = d
        .cli()
        .env("DOCKER_CONFIG", &docker_dir)
        .args(["pull", "-q", &private])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{private}\n"));
    let o = d.run(&["run", "--rm", &private, "echo", "private"]);
    assert_eq!(stdout(&o), "private\n", "{}", stderr(&o));
}

/// Requirement 5: zstd and gzip layers (OCI manifests, and a Docker schema 2 manifest) and a
/// multi-arch index (the host's platform is picked: amd64 here) pull and run.
#[test]
fn zstd_gzip_and_multi_arch_pull_and_run() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let r = registry();
    let zstd = ImageBuilder::busybox()
        .compression(Compression::Zstd)
        .layer_files(&[("/which", "zstd\n", 0o644)]);
    let (dir, _) = layout(tmp.path(), "zstd", &zstd);
    r.push_layout(&dir, "zstd:latest", PushFormat::Oci, false)
        .unwrap();
    let gzip = ImageBuilder::busybox().layer_files(&[("/which", "gzip\n", 0o644)]);
    let (dir, _) = layout(tmp.path(), "gzip", &gzip);
    r.push_layout(&dir, "gzip:latest", PushFormat::Oci, false)
        .unwrap();
    r.push_layout(&dir, "gzip-v2s2:latest", PushFormat::DockerV2S2, false)
        .unwrap();
    let other = if host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let multi_dir = tmp.path().join("multi");
    let (index_digest, _) = multi_arch_layout(
        &multi_dir,
        "latest",
        &[
            ImageBuilder::busybox().architecture(other).layer_files(&[(
                "/arch",
                format!("{other}\n"),
                0o644,
            )]),
            ImageBuilder::busybox()
                .architecture(host_arch())
                .layer_files(&[("/arch", format!("{}\n", host_arch()), 0o644)]),
        ],
    )
    .unwrap();
    r.push_layout_ref(
        &multi_dir,
        Some("latest"),
        "multi:latest",
        PushFormat::Oci,
        true,
    )
    .unwrap();

    let d = daemon_with(insecure(&r.addr));
    for (name, want) in [("zstd", "zstd"), ("gzip", "gzip"), ("gzip-v2s2", "gzip")] {
        let reference = format!("{}/{name}:latest", r.addr);
        let o = d.run(&["run", "--rm", &reference, "cat", "/which"]);
        assert_eq!(stdout(&o), format!("{want}\n"), "{name}: {}", stderr(&o));
    }
    let multi = format!("{}/multi:latest", r.addr);
    let out = d.ok(&["pull", &multi]);
    assert!(
        out.contains(&format!("Digest: {index_digest}")),
        "the index digest is reported: {out}"
    );
    let o = d.run(&["run", "--rm", &multi, "cat", "/arch"]);
    assert_eq!(stdout(&o), format!("{}\n", host_arch()), "{}", stderr(&o));
    assert_eq!(
        d.ok(&["image", "inspect", "-f", "{{.Architecture}}", &multi]),
        format!("{}\n", host_arch())
    );
    if host_arch() != "amd64" {
        eprintln!(
            "note: host is {}, not amd64: the index picked the host's platform",
            host_arch()
        );
    }
    let digests = d.ok(&["image", "inspect", "-f", "{{json .RepoDigests}}", &multi]);
    assert!(
        digests.contains(&format!("{}/multi@{index_digest}", r.addr)),
        "{digests}"
    );
}

/// Requirement 6: a pull killed halfway (a layer stalled mid-download by a proxy, then
/// `kill -9` of the daemon) leaves no partial image; after a restart the pull succeeds,
/// resuming the layer with a `Range` request.
#[test]
fn killed_pull_leaves_no_partial_image_and_resumes() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (r, built) = busybox_registry(tmp.path());
    let proxy = CountingProxy::start(&r.addr).unwrap();
    let layer = built.layer_digests[0].clone();
    const LET_THROUGH: u64 = 256 * 1024;
    proxy.stall_after(&format!("/blobs/{layer}"), LET_THROUGH);
    let mut d = daemon_with(insecure(&proxy.addr));
    let reference = format!("{}/busybox:latest", proxy.addr);

    let mut pull = d
        .cli()
        .args(["pull", &reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        proxy.wait_stalled(Duration::from_secs(30)),
        "the layer download stalled"
    );
    // Wait until the daemon has written what it received.
    let partial = d
        .data
        .join("images/ingest")
        .join(format!("{}.partial", layer.trim_start_matches("sha256:")));
    let written = d.wait_for(Duration::from_secs(10), || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() >= LET_THROUGH / 2)
    });
    assert!(
        written,
        "partial download at {} (ingest: {:?})",
        partial.display(),
        entries(&d.data.join("images/ingest"))
    );
    d.kill9();
    let _ = pull.kill();
    let _ = pull.wait();
    proxy.release();

    d.restart(None).unwrap();
    assert_eq!(
        d.ok(&["image", "ls", "-a", "-q"]),
        "",
        "no partial image after the crash"
    );
    let o = fails(&d, &["image", "inspect", &reference]);
    assert!(stderr(&o).contains("No such image"), "{}", stderr(&o));
    assert_eq!(
        entries(&d.data.join("images/layers")),
        Vec::<String>::new(),
        "no layer committed"
    );

    proxy.clear();
    let out = d.ok(&["pull", &reference]);
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {reference}")),
        "{out}"
    );
    assert_eq!(
        d.ok(&["images", "-q", "--no-trunc"]).trim(),
        built.config_digest
    );
    let ranged: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|q| q.method == "GET" && q.path.contains(&layer))
        .collect();
    assert!(
        ranged.iter().any(|q| q
            .range
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && !r.starts_with("bytes=0-"))),
        "the layer was resumed with a Range request: {ranged:?}"
    );
    assert!(!partial.exists(), "the partial file became the blob");
    let o = d.run(&["run", "--rm", &reference, "echo", "resumed"]);
    assert_eq!(stdout(&o), "resumed\n", "{}", stderr(&o));
}

/// Requirement 5 ("a live progress display per layer on the CLI"): on a terminal, every
/// layer gets its own line that is redrawn in place (cursor movements) with a progress bar,
/// ending in "Pull complete".
#[test]
fn pull_progress_is_live_on_a_terminal() {
    if !have_registry() {
        return;
    }
    if !Path::new("/usr/bin/script").exists() {
        eprintln!("SKIPPED pull_progress_is_live_on_a_terminal: script(1) (util-linux) is missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (r, built) = busybox_registry(tmp.path());
    let d = daemon_with(insecure(&r.addr));
    let reference = format!("{}/busybox:latest", r.addr);
    // script(1) runs the CLI on a pseudo-terminal and copies what it drew to stdout.
    let o = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} pull {reference}", bin().display()),
            "/dev/null",
        ])
        .env("SHOAL_HOST", d.host())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    let layer = short_hex(&built.layer_digests[0]);
    assert!(
        out.contains("\x1b["),
        "cursor movements on a terminal: {out:?}"
    );
    assert!(
        out.contains(&format!("{layer}: Downloading ["))
            || out.contains(&format!("{layer}: Extracting [")),
        "a progress bar for the layer: {out:?}"
    );
    assert!(out.contains(&format!("{layer}: Pull complete")), "{out:?}");
    assert!(out.contains(&reference), "{out:?}");
}
