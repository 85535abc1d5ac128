//! Pulls from a real `docker-registry` (Debian's distribution 2.8) on 127.0.0.1: manifest
//! kinds, multi-arch, compression, by digest, TLS, token and basic auth, login,
//! tampered content, hostile layers, concurrent pulls and resume after kill -9.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use shoal_image::{Credentials, ImageError, ImageRecord, ImageStore, Platform, ProgressSink};
use shoal_testkit::hostile;
use shoal_testkit::images::{BuiltImage, Compression, ImageBuilder, host_arch, multi_arch_layout};
use shoal_testkit::registry::{
    CountingProxy, PushFormat, Registry, RegistryOptions as RegOpts, http_get,
};
use shoal_testkit::tls::TestCa;
use shoal_testkit::token::TokenIssuer;

const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A registry, or None (after saying why) when the host lacks the tools.
fn registry(opts: RegOpts) -> Option<Registry> {
    if missing_tools(&["docker-registry", "skopeo"]) {
        return None;
    }
    Some(Registry::start(opts).expect("start docker-registry"))
}

/// Pushes `img` to `reg` as `dest` (`repo:tag`) and returns what was built.
fn push(reg: &Registry, img: &ImageBuilder, dest: &str, format: PushFormat) -> BuiltImage {
    let dir = tempfile::tempdir().unwrap();
    let built = img.write_oci_layout(dir.path(), None, None).unwrap();
    reg.push_layout(dir.path(), dest, format, false).unwrap();
    built
}

/// The digest the registry serves for `repo:tag` (plain HTTP, no auth).
fn served_digest(reg: &Registry, repo: &str, tag: &str) -> String {
    let accept = format!(
        "{OCI_MANIFEST}, {DOCKER_V2}, application/vnd.oci.image.index.v1+json, \
         application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let resp = http_get(
        &format!("http://{}/v2/{repo}/manifests/{tag}", reg.addr),
        &[("Accept", accept.as_str())],
    )
    .unwrap();
    assert_eq!(resp.status, 200);
    resp.header("Docker-Content-Digest").unwrap().to_string()
}

async fn pull(store: &ImageStore, reference: &str) -> Result<ImageRecord, ImageError> {
    store.pull(reference, None, ProgressSink::none()).await
}

fn hex(d: &str) -> &str {
    d.trim_start_matches("sha256:")
}

/// The registry's storage file of a blob.
fn registry_blob(reg: &Registry, digest: &str) -> std::path::PathBuf {
    let h = hex(digest);
    reg.storage_dir
        .join("docker/registry/v2/blobs/sha256")
        .join(&h[..2])
        .join(h)
        .join("data")
}

fn flip_last_byte(path: &Path) {
    let mut data = fs::read(path).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0x55;
    fs::write(path, data).unwrap();
}

/// Asserts that `statuses` contains `expected` in this order (other lines may interleave).
fn assert_in_order(statuses: &[String], expected: &[&str]) {
    let mut it = statuses.iter();
    for want in expected {
        assert!(
            it.any(|s| s == want),
            "missing {want:?} in order in {statuses:?}"
        );
    }
}

/// Requirement: pull an OCI manifest and a Docker schema 2 manifest from a plain-HTTP
/// registry listed as insecure; records, layer dirs and Docker's progress messages; a
/// second pull is "Already exists" / "Image is up to date".
#[tokio::test(flavor = "multi_thread")]
async fn pulls_oci_and_docker_v2s2_manifests() {
    let Some(reg) = registry(RegOpts::default()) else {
        return;
    };
    let img = ImageBuilder::busybox().layer_files(&[("etc/motd", "hello", 0o644)]);
    let built = push(&reg, &img, "library/busybox:latest", PushFormat::Oci);
    push(&reg, &img, "v2/busybox:1", PushFormat::DockerV2S2);
    let v2_digest = served_digest(&reg, "v2/busybox", "1");

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &[&reg.addr]).await;
    let reference = format!("{}/library/busybox:latest", reg.addr);
    let (sink, mut rx) = progress();
    let image = store.pull(&reference, None, sink).await.unwrap();
    assert_eq!(image.id, built.config_digest);
    assert_eq!(image.manifest_digest, built.manifest_digest);
    assert_eq!(image.manifest_media_type, OCI_MANIFEST);
    assert_eq!(image.repo_tags, vec![reference.clone()]);
    assert_eq!(
        image.repo_digests,
        vec![format!(
            "{}/library/busybox@{}",
            reg.addr, built.manifest_digest
        )]
    );
    assert_eq!(
        (image.os.as_str(), image.architecture.as_str()),
        ("linux", host_arch())
    );
    assert_eq!(
        image.created.unwrap().to_rfc3339(),
        "2024-01-01T00:00:00+00:00"
    );
    let dirs = store.layer_dirs(&image);
    assert!(dirs[0].join("bin/busybox").is_file());
    assert_eq!(fs::read(dirs[1].join("etc/motd")).unwrap(), b"hello");
    assert!(store.has_blob(&built.manifest_digest));

    let events = drain(&mut rx);
    let layer = built.layer_digests[0][7..19].to_string();
    let for_layer: Vec<String> = events
        .iter()
        .filter(|e| e.id.as_deref() == Some(layer.as_str()))
        .map(|e| e.status.clone())
        .collect();
    assert_in_order(
        &for_layer,
        &[
            "Pulling fs layer",
            "Downloading",
            "Verifying Checksum",
            "Download complete",
            "Extracting",
            "Pull complete",
        ],
    );
    let downloading = events
        .iter()
        .rfind(|e| e.status == "Downloading" && e.id.as_deref() == Some(layer.as_str()))
        .unwrap();
    assert_eq!(downloading.current, downloading.total);
    let all: Vec<String> = events.iter().map(|e| e.status.clone()).collect();
    assert_eq!(all[0], "Pulling from library/busybox");
    assert_eq!(events[0].id.as_deref(), Some("latest"));
    assert_eq!(
        &all[all.len() - 2..],
        &[
            format!("Digest: {}", built.manifest_digest),
            format!("Status: Downloaded newer image for {reference}"),
        ]
    );

    // Again: nothing downloaded.
    let (sink, mut rx) = progress();
    let again = store.pull(&reference, None, sink).await.unwrap();
    assert_eq!(again, image);
    let all: Vec<String> = drain(&mut rx).into_iter().map(|e| e.status).collect();
    assert!(
        all.iter().filter(|s| *s == "Already exists").count() == 2,
        "{all:?}"
    );
    assert!(!all.iter().any(|s| s == "Downloading"), "{all:?}");
    assert_eq!(
        all.last().unwrap(),
        &format!("Status: Image is up to date for {reference}")
    );

    // Docker schema 2: same config and layers, other manifest.
    // Pulled into the same store it is the same image (same config): the record keeps
    // its first manifest and gains the new names.
    let v2 = pull(&store, &format!("{}/v2/busybox:1", reg.addr))
        .await
        .unwrap();
    assert_eq!(v2.id, image.id, "same config: same image");
    assert!(
        v2.repo_digests
            .contains(&format!("{}/v2/busybox@{v2_digest}", reg.addr))
    );
    assert_eq!(
        v2.repo_tags,
        vec![reference.clone(), format!("{}/v2/busybox:1", reg.addr)]
    );
    let v2_fresh = open(&dir.path().join("fresh"), &[&reg.addr]).await;
    let v2_only = pull(&v2_fresh, &format!("{}/v2/busybox:1", reg.addr))
        .await
        .unwrap();
    assert_eq!(v2_only.manifest_media_type, DOCKER_V2);
    assert_eq!(v2_only.manifest_digest, v2_digest);
    assert_eq!(v2_only.id, image.id);
    let diff_ids: Vec<_> = v2_only.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(diff_ids, built.diff_ids);
    assert!(
        v2_fresh.layer_dirs(&v2_only)[0]
            .join("bin/busybox")
            .is_file()
    );
}

/// Requirement: a multi-arch index resolves to the node platform (amd64 here: the
/// `/arch` marker in the unpacked layer says so); another platform picks its own entry;
/// a platform the index lacks fails with a clear error.
#[tokio::test(flavor = "multi_thread")]
async fn multi_arch_index_picks_the_node_platform() {
    let Some(reg) = registry(RegOpts::default()) else {
        return;
    };
    let arch_image = |arch: &str, variant: Option<&str>| {
        let b = ImageBuilder::empty()
            .layer_files(&[("arch", arch, 0o644)])
            .architecture(arch);
        match variant {
            Some(v) => b.variant(v),
            None => b,
        }
    };
    let layout = tempfile::tempdir().unwrap();
    let (index_digest, built) = multi_arch_layout(
        layout.path(),
        "latest",
        &[
            arch_image("arm64", Some("v8")),
            arch_image(host_arch(), None),
            arch_image("arm", Some("v7")),
        ],
    )
    .unwrap();
    reg.push_layout(layout.path(), "multi/arch:latest", PushFormat::Oci, true)
        .unwrap();
    let reference = format!("{}/multi/arch:latest", reg.addr);

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &[&reg.addr]).await;
    let image = pull(&store, &reference).await.unwrap();
    assert_eq!(image.architecture, host_arch());
    assert_eq!(image.manifest_digest, built[1].manifest_digest);
    assert_eq!(
        image.repo_digests,
        vec![format!("{}/multi/arch@{index_digest}", reg.addr)],
        "the list digest is recorded, as Docker does"
    );
    let marker = store.layer_dirs(&image)[0].join("arch");
    assert_eq!(fs::read_to_string(marker).unwrap(), host_arch());
    // By the list digest too.
    let by_list = pull(&store, &format!("{}/multi/arch@{index_digest}", reg.addr))
        .await
        .unwrap();
    assert_eq!(by_list.id, image.id);

    for (arch, variant, want) in [("arm64", Some("v8"), 0usize), ("arm", Some("v7"), 2)] {
        let store = ImageStore::open(shoal_image::StoreOptions {
            root: dir.path().join(arch),
            registry: shoal_image::RegistryOptions {
                insecure: vec![reg.addr.clone()],
                certs_dir: None,
                platform: Platform {
                    os: "linux".into(),
                    architecture: arch.into(),
                    variant: variant.map(str::to_string),
                },
            },
        })
        .await
        .unwrap();
        let image = pull(&store, &reference).await.unwrap();
        assert_eq!(image.manifest_digest, built[want].manifest_digest);
        let marker = store.layer_dirs(&image)[0].join("arch");
        assert_eq!(fs::read_to_string(marker).unwrap(), arch);
    }

    let store = ImageStore::open(shoal_image::StoreOptions {
        root: dir.path().join("s390x"),
        registry: shoal_image::RegistryOptions {
            insecure: vec![reg.addr.clone()],
            certs_dir: None,
            platform: Platform {
                os: "linux".into(),
                architecture: "s390x".into(),
                variant: None,
            },
        },
    })
    .await
    .unwrap();
    let err = pull(&store, &reference).await.unwrap_err();
    assert!(matches!(err, ImageError::Platform { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no matching manifest for linux/s390x") && msg.contains("linux/arm64/v8"),
        "{msg}"
    );
    assert!(store.list().is_empty());
}

/// Requirement: gzip, zstd and uncompressed layers; pull by digest.
#[tokio::test(flavor = "multi_thread")]
async fn compressions_and_pull_by_digest() {
    let Some(reg) = registry(RegOpts::default()) else {
        return;
    };
    let img = ImageBuilder::busybox()
        .layer_files(&[("z", "zstd layer", 0o644)])
        .layer_compression(Compression::Zstd)
        .layer_files(&[("p", "plain layer", 0o644)])
        .layer_compression(Compression::None);
    let built = push(&reg, &img, "mixed/img:1", PushFormat::Oci);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &[&reg.addr]).await;

    let by_digest = format!("{}/mixed/img@{}", reg.addr, built.manifest_digest);
    let image = pull(&store, &by_digest).await.unwrap();
    assert!(image.repo_tags.is_empty(), "a digest pull adds no tag");
    assert_eq!(image.repo_digests, vec![by_digest.clone()]);
    let media: Vec<_> = image.layers.iter().map(|l| l.media_type.as_str()).collect();
    assert_eq!(
        media,
        [Compression::Gzip, Compression::Zstd, Compression::None].map(|c| c.media_type())
    );
    let dirs = store.layer_dirs(&image);
    assert_eq!(fs::read(dirs[1].join("z")).unwrap(), b"zstd layer");
    assert_eq!(fs::read(dirs[2].join("p")).unwrap(), b"plain layer");
    assert_eq!(store.get(&by_digest).unwrap().id, image.id);

    // Then by tag: same image, now tagged.
    let tagged = pull(&store, &format!("{}/mixed/img:1", reg.addr))
        .await
        .unwrap();
    assert_eq!(tagged.id, image.id);
    assert_eq!(tagged.repo_tags, vec![format!("{}/mixed/img:1", reg.addr)]);

    // rmi of the last tag also drops the repository's digest and deletes the image.
    let events = store
        .remove(&format!("{}/mixed/img:1", reg.addr), false, &|_| false)
        .await
        .unwrap();
    assert_eq!(
        events,
        vec![
            shoal_image::RemoveEvent::Untagged(format!("{}/mixed/img:1", reg.addr)),
            shoal_image::RemoveEvent::Untagged(by_digest.clone()),
            shoal_image::RemoveEvent::Deleted(image.id.clone()),
        ]
    );
    assert_store_empty(&store);

    // Errors a user understands.
    let unknown_tag = format!("{}/mixed/img:nope", reg.addr);
    let err = pull(&store, &unknown_tag).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("manifest for {unknown_tag} not found: manifest unknown")
    );
    let missing = format!("{}/mixed/img@sha256:{}", reg.addr, "0".repeat(64));
    assert!(matches!(
        pull(&store, &missing).await.unwrap_err(),
        ImageError::ManifestUnknown { .. }
    ));
    assert!(matches!(
        pull(&store, "Not A Reference").await.unwrap_err(),
        ImageError::InvalidReference { .. }
    ));
}

/// Requirement: HTTPS is the default: without `insecure` a plain-HTTP registry fails with
/// a clear error and nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn plain_http_needs_insecure() {
    let Some(reg) = registry(RegOpts::default()) else {
        return;
    };
    push(
        &reg,
        &ImageBuilder::busybox(),
        "library/busybox:latest",
        PushFormat::Oci,
    );
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &[]).await;
    let err = pull(&store, &format!("{}/library/busybox:latest", reg.addr))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Tls { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("server gave HTTP response to HTTPS client"),
        "{err}"
    );
    assert_store_empty(&store);
}

/// Requirement: an HTTPS registry with a private CA fails without certs_dir (x509
/// unknown authority) and works with `certs_dir/<127.0.0.1:port>/ca.crt`.
#[tokio::test(flavor = "multi_thread")]
async fn https_registry_with_certs_dir() {
    let ca = TestCa::new(&[]).unwrap();
    let tls_dir = tempfile::tempdir().unwrap();
    let (ca_crt, crt, key) = ca.write_to(tls_dir.path()).unwrap();
    let Some(reg) = registry(RegOpts {
        tls: Some((crt, key)),
        ..Default::default()
    }) else {
        return;
    };
    push(
        &reg,
        &ImageBuilder::busybox(),
        "library/busybox:latest",
        PushFormat::Oci,
    );
    let reference = format!("{}/library/busybox:latest", reg.addr);

    let dir = tempfile::tempdir().unwrap();
    let untrusting = open(&dir.path().join("a"), &[]).await;
    let err = pull(&untrusting, &reference).await.unwrap_err();
    assert!(matches!(err, ImageError::Tls { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("x509: certificate signed by unknown authority"),
        "{err}"
    );
    assert_store_empty(&untrusting);

    let certs = dir.path().join("certs.d");
    fs::create_dir_all(certs.join(&reg.addr)).unwrap();
    fs::copy(&ca_crt, certs.join(&reg.addr).join("ca.crt")).unwrap();
    // Another registry's directory does not count.
    fs::create_dir_all(certs.join("127.0.0.1:1")).unwrap();
    let trusting = open_with(&dir.path().join("b"), &[], Some(certs)).await;
    let image = pull(&trusting, &reference).await.unwrap();
    assert!(trusting.layer_dirs(&image)[0].join("bin/busybox").is_file());
}

/// Requirement: token auth — anonymous pulls of `public/…` go through the bearer flow
/// (the issuer saw the request), a private repository fails with Docker's "pull access
/// denied", works with credentials; `login` accepts good and refuses bad credentials.
#[tokio::test(flavor = "multi_thread")]
async fn token_auth_registry() {
    // Push to an open registry, then serve the same storage behind token auth.
    let Some(open_reg) = registry(RegOpts::default()) else {
        return;
    };
    push(
        &open_reg,
        &ImageBuilder::busybox(),
        "public/busybox:latest",
        PushFormat::Oci,
    );
    push(
        &open_reg,
        &ImageBuilder::busybox(),
        "private/busybox:latest",
        PushFormat::Oci,
    );
    let issuer =
        TokenIssuer::start(&[("alice", "s3cret")], "shoal-registry", "shoal-issuer").unwrap();
    let reg = Registry::start(RegOpts {
        storage_dir: Some(open_reg.storage_dir.clone()),
        token: Some(issuer.token_registry_config()),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &[&reg.addr]).await;

    let public = pull(&store, &format!("{}/public/busybox:latest", reg.addr))
        .await
        .unwrap();
    assert!(
        issuer
            .issued()
            .contains(&(None, "repository:public/busybox:pull".to_string())),
        "anonymous token fetched: {:?}",
        issuer.issued()
    );

    let private = format!("{}/private/busybox:latest", reg.addr);
    let err = pull(&store, &private).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "pull access denied for {}/private/busybox, repository does not exist or may \
             require authorization",
            reg.addr
        )
    );
    let alice = Credentials {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    let image = store
        .pull(&private, Some(alice.clone()), ProgressSink::none())
        .await
        .unwrap();
    assert_eq!(image.id, public.id);
    assert!(
        issuer
            .issued()
            .iter()
            .any(|(u, _)| u.as_deref() == Some("alice"))
    );
    let wrong = Credentials {
        username: "alice".into(),
        password: "wrong".into(),
    };
    let err = store
        .pull(&private, Some(wrong.clone()), ProgressSink::none())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");

    store.login(&reg.addr, &alice).await.unwrap();
    let err = store.login(&reg.addr, &wrong).await.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
}

/// Requirement: basic-auth (htpasswd) registries: anonymous pull refused, pull with
/// credentials works, `login` verifies credentials.
#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_registry_and_login() {
    let Some(reg) = registry(RegOpts {
        htpasswd: Some(("bob".into(), "hunter2".into())),
        ..Default::default()
    }) else {
        return;
    };
    push(
        &reg,
        &ImageBuilder::busybox(),
        "team/app:1",
        PushFormat::Oci,
    );
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &[&reg.addr]).await;
    let reference = format!("{}/team/app:1", reg.addr);
    let err = pull(&store, &reference).await.unwrap_err();
    assert!(matches!(err, ImageError::PullAccessDenied { .. }), "{err}");
    let bob = Credentials {
        username: "bob".into(),
        password: "hunter2".into(),
    };
    store
        .pull(&reference, Some(bob.clone()), ProgressSink::none())
        .await
        .unwrap();
    store.login(&reg.addr, &bob).await.unwrap();
    let bad = Credentials {
        username: "bob".into(),
        password: "nope".into(),
    };
    let err = store.login(&reg.addr, &bad).await.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string().contains("incorrect username or password"),
        "{err}"
    );
}

/// Requirement: every blob is verified — a corrupted layer blob or a manifest that does
/// not match its digest fails with DigestMismatch and nothing unverified is stored (no
/// record, no layer, no partial, the bad blob absent).
#[tokio::test(flavor = "multi_thread")]
async fn tampered_registry_content_is_refused() {
    let Some(reg) = registry(RegOpts::default()) else {
        return;
    };
    let img = ImageBuilder::empty().layer_files(&[("f", "x".repeat(4096).as_str(), 0o644)]);
    let built = push(&reg, &img, "bad/layer:1", PushFormat::Oci);
    flip_last_byte(&registry_blob(&reg, &built.layer_digests[0]));
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &[&reg.addr]).await;
    let err = pull(&store, &format!("{}/bad/layer:1", reg.addr))
        .await
        .unwrap_err();
    match &err {
        ImageError::DigestMismatch { expected, .. } => {
            assert_eq!(expected, &built.layer_digests[0])
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(store.list().is_empty());
    assert!(!store.has_blob(&built.layer_digests[0]));
    assert_eq!(names(&store.root().join("layers")), BTreeSet::new());
    assert_eq!(names(&store.root().join("ingest")), BTreeSet::new());
    // What was verified (the config) is collectable.
    store.gc().await.unwrap();
    assert_store_empty(&store);

    // A manifest whose content no longer matches its digest.
    let other = ImageBuilder::empty()
        .layer_files(&[("g", "y", 0o644)])
        .label("m", "1");
    let built = push(&reg, &other, "bad/manifest:1", PushFormat::Oci);
    let manifest_file = registry_blob(&reg, &built.manifest_digest);
    let mut json = fs::read(&manifest_file).unwrap();
    json.push(b'\n');
    fs::write(&manifest_file, json).unwrap();
    for reference in [
        format!("{}/bad/manifest@{}", reg.addr, built.manifest_digest),
        format!("{}/bad/manifest:1", reg.addr),
    ] {
        let err = pull(&store, &reference).await.unwrap_err();
        assert!(
            matches!(err, ImageError::DigestMismatch { .. }),
            "{reference}: {err:?}"
        );
    }
    assert_store_empty(&store);
}

/// Requirement: a hostile layer fails the pull with an error naming the entry; no
/// record, no layer dir, no temporary dir; nothing escapes.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_layer_via_pull() {
    let Some(reg) = registry(RegOpts::default()) else {
        return;
    };
    let img = ImageBuilder::empty()
        .layer_files(&[("fine", "ok", 0o644)])
        .layer_tar(hostile::dotdot_file());
    push(&reg, &img, "evil/image:1", PushFormat::Oci);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/b/store");
    let store = open(&root, &[&reg.addr]).await;
    let err = pull(&store, &format!("{}/evil/image:1", reg.addr))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unpack { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&hostile::marker("dotdot_file")),
        "{err}"
    );
    assert!(store.list().is_empty());
    assert!(!root.join("images.json").exists());
    let layers = names(&root.join("layers"));
    assert!(layers.iter().all(|l| !l.starts_with(".tmp")), "{layers:?}");
    assert!(hostile::find_markers(dir.path(), 8).is_empty());
    store.gc().await.unwrap();
    assert_store_empty(&store);
}

/// Requirement: two simultaneous pulls of the same image share the work: each blob is
/// fetched from the registry exactly once (counted by a proxy), one of them waits, both
/// succeed with the same record.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_fetch_each_blob_once() {
    let Some(reg) = registry(RegOpts::default()) else {
        return;
    };
    let img = ImageBuilder::busybox()
        .layer_files(&[("a", "1", 0o644)])
        .layer_files(&[("b", "2", 0o644)]);
    let built = push(&reg, &img, "shared/img:1", PushFormat::Oci);
    let proxy = CountingProxy::start(&reg.addr).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &[&proxy.addr]).await;
    let reference = format!("{}/shared/img:1", proxy.addr);
    // Hold the big layer so both pulls are in flight at the same time.
    proxy.stall_after(hex(&built.layer_digests[0]), 64 * 1024);
    let (sink1, mut rx1) = progress();
    let (sink2, mut rx2) = progress();
    let (s1, r1) = (store.clone(), reference.clone());
    let first = tokio::spawn(async move { s1.pull(&r1, None, sink1).await });
    assert!(tokio::task::block_in_place(
        || proxy.wait_stalled(Duration::from_secs(30))
    ));
    let (s2, r2) = (store.clone(), reference.clone());
    let second = tokio::spawn(async move { s2.pull(&r2, None, sink2).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.release();
    let (a, b) = (
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    );
    assert_eq!(a, b);
    for digest in built.layer_digests.iter().chain([&built.config_digest]) {
        assert_eq!(
            proxy.count("GET", &format!("/blobs/{digest}")),
            1,
            "{digest} fetched once: {:?}",
            proxy.requests()
        );
    }
    let statuses: Vec<String> = drain(&mut rx1)
        .into_iter()
        .chain(drain(&mut rx2))
        .map(|e| e.status)
        .collect();
    assert!(statuses.iter().any(|s| s == "Waiting"), "{statuses:?}");
    assert_eq!(names(&store.root().join("layers")).len(), 3);
}

const CHILD_ENV: &str = "SHOAL_IMAGE_TEST_CHILD_PULL";

/// Not a test by itself: the body of the child process `resume_after_kill_9` starts (the
/// test binary re-executed with `CHILD_ENV` = "root|insecure|reference"). Without that
/// variable it returns at once.
#[tokio::test(flavor = "multi_thread")]
async fn child_pull_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (root, insecure, reference) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let store = open(Path::new(root), &[insecure]).await;
    let result = pull(&store, reference).await;
    eprintln!("child pull ended (it should have been killed first): {result:?}");
}

/// Requirement: a pull killed halfway (kill -9 of the pulling process) leaves no partial
/// blob in `blobs/`, no image record, no half layer dir; the next pull resumes from
/// `ingest/*.partial` with `Range: bytes=N-` and succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn resume_after_kill_9() {
    let Some(reg) = registry(RegOpts::default()) else {
        return;
    };
    let built = push(
        &reg,
        &ImageBuilder::busybox(),
        "resume/me:1",
        PushFormat::Oci,
    );
    let layer = built.layer_digests[0].clone();
    let proxy = CountingProxy::start(&reg.addr).unwrap();
    const LET_THROUGH: u64 = 300_000;
    proxy.stall_after(hex(&layer), LET_THROUGH);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let reference = format!("{}/resume/me:1", proxy.addr);

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_pull_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!("{}|{}|{reference}", root.display(), proxy.addr),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stalled = tokio::task::block_in_place(|| proxy.wait_stalled(Duration::from_secs(60)));
    assert!(stalled, "download never stalled");
    let partial = root.join(format!("ingest/{}.partial", hex(&layer)));
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::metadata(&partial).map_or(0, |m| m.len()) < LET_THROUGH {
        assert!(
            Instant::now() < deadline,
            "partial never reached {LET_THROUGH} bytes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    proxy.release();

    let size = fs::metadata(&partial).unwrap().len();
    assert_eq!(size, LET_THROUGH);
    assert!(
        !root.join("blobs/sha256").join(hex(&layer)).exists(),
        "no unverified blob"
    );
    assert!(!root.join("images.json").exists(), "no record");
    assert_eq!(names(&root.join("layers")), BTreeSet::new(), "no layer dir");

    proxy.clear();
    let store = open(&root, &[&proxy.addr]).await;
    let image = pull(&store, &reference).await.unwrap();
    assert_eq!(image.id, built.config_digest);
    assert!(store.layer_dirs(&image)[0].join("bin/busybox").is_file());
    let ranges: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(hex(&layer)))
        .collect();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert_eq!(
        ranges[0].range.as_deref(),
        Some(format!("bytes={size}-").as_str())
    );
    assert_eq!(
        names(&root.join("ingest")),
        BTreeSet::new(),
        "partial consumed"
    );
}
