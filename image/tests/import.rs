//! Archive import/export: `docker save` and OCI archives (plain and gzip), naming,
//! whiteouts, round trips, sharing of blobs and layers, GC, and hostile layers.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;
use shoal_image::{ImageError, ImageStore, RemoveEvent};
use shoal_testkit::hostile;
use shoal_testkit::images::{Compression, ImageBuilder, tar_dir};

fn never_used(_: &str) -> bool {
    false
}

/// Requirement: import accepts `docker save` archives, plain and gzipped; the image ID is
/// the config digest, RepoTags name it, the layer is unpacked with its diff-id checked.
#[tokio::test(flavor = "multi_thread")]
async fn imports_docker_save_archives_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    for gzip in [false, true] {
        let archive = dir.path().join(format!("busybox-{gzip}.tar"));
        let built = ImageBuilder::busybox()
            .write_docker_archive(&archive, &["busybox:latest"], gzip)
            .unwrap();
        let store = open(&dir.path().join(format!("store-{gzip}")), &[]).await;
        let (sink, mut rx) = progress();
        let file = tokio::fs::File::open(&archive).await.unwrap();
        let images = store.import(file, None, sink).await.unwrap();
        assert_eq!(images.len(), 1);
        let image = &images[0];
        assert_eq!(image.id, built.config_digest);
        assert_eq!(image.repo_tags, vec!["docker.io/library/busybox:latest"]);
        let diff_ids: Vec<_> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
        assert_eq!(diff_ids, built.diff_ids);
        // docker save layers are plain tars: blob digest = diff-id.
        assert_eq!(image.layers[0].blob_digest, built.diff_ids[0]);
        assert!(image.size > 1_000_000, "busybox is > 1 MB: {}", image.size);

        let layer = &store.layer_dirs(image)[0];
        assert!(layer.join("bin/busybox").is_file());
        assert_eq!(
            fs::read_link(layer.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert_eq!(store.get("busybox").unwrap(), *image);
        let config = store.config(image).unwrap();
        assert_eq!(
            config.config().as_ref().unwrap().cmd().as_deref(),
            Some(&["sh".to_string()][..])
        );
        for digest in [
            &image.id,
            &image.manifest_digest,
            &image.layers[0].blob_digest,
        ] {
            assert!(store.has_blob(digest), "{digest} stored");
        }
        let events = drain(&mut rx);
        assert!(
            events
                .iter()
                .any(|e| e.status == "Loading layer" && e.total.is_some())
        );
        assert_eq!(
            events.last().unwrap().status,
            "Loaded image: busybox:latest"
        );
        // Staging is gone.
        assert_eq!(names(&store.root().join("ingest")), BTreeSet::new());
    }
}

/// Requirement: import accepts OCI image-layout archives, plain and gzipped, with gzip,
/// zstd and uncompressed layers; the manifest is kept byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn imports_oci_archives_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let extra = ImageBuilder::busybox()
        .layer_files(&[("etc/zstd", "z", 0o644)])
        .layer_compression(Compression::Zstd)
        .layer_files(&[("etc/plain", "p", 0o600)])
        .layer_compression(Compression::None);
    for gzip in [false, true] {
        let archive = dir.path().join(format!("oci-{gzip}.tar"));
        let built = extra
            .write_oci_archive(
                &archive,
                Some("1.36"),
                Some("docker.io/library/busybox:1.36"),
                gzip,
            )
            .unwrap();
        let store = open(&dir.path().join(format!("store-{gzip}")), &[]).await;
        let image = import_file(&store, &archive, None).await.unwrap().remove(0);
        assert_eq!(image.id, built.config_digest);
        assert_eq!(image.manifest_digest, built.manifest_digest);
        assert_eq!(image.repo_tags, vec!["docker.io/library/busybox:1.36"]);
        let media: Vec<_> = image.layers.iter().map(|l| l.media_type.as_str()).collect();
        assert_eq!(
            media,
            [Compression::Gzip, Compression::Zstd, Compression::None].map(|c| c.media_type())
        );
        let dirs = store.layer_dirs(&image);
        assert_eq!(fs::read(dirs[1].join("etc/zstd")).unwrap(), b"z");
        let plain = fs::metadata(dirs[2].join("etc/plain")).unwrap();
        assert_eq!(plain.mode() & 0o777, 0o600);
        assert_eq!(store.get("busybox:1.36").unwrap().id, image.id);
    }
}

/// Writes `layout` plus a docker `manifest.json` (RepoTags) into one archive, as
/// `docker save` of Docker ≥ 25 does.
fn archive_with_repotags(
    layout: &Path,
    built: &shoal_testkit::images::BuiltImage,
    tags: &[&str],
    out: &Path,
) {
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let manifest = serde_json::json!([{
        "Config": blob(&built.config_digest),
        "RepoTags": tags,
        "Layers": built.layer_digests.iter().map(|d| blob(d)).collect::<Vec<_>>(),
    }]);
    fs::write(
        layout.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    fs::write(out, tar_dir(layout).unwrap()).unwrap();
}

/// Requirement: naming precedence — containerd name > RepoTags > full ref.name; a bare
/// ref.name (`1`) names nothing; `--tag` overrides (and needs a single image).
#[tokio::test(flavor = "multi_thread")]
async fn naming_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store"), &[]).await;
    let image = |label: &str| {
        ImageBuilder::empty()
            .layer_files(&[("hello", "world", 0o644)])
            .label("case", label)
    };
    let import = |archive: std::path::PathBuf, tag: Option<&'static str>| {
        let store = store.clone();
        async move { import_file(&store, &archive, tag).await }
    };

    // containerd name beats a full ref.name.
    let a = dir.path().join("a.tar");
    image("a")
        .write_oci_archive(
            &a,
            Some("example.com/x:2"),
            Some("docker.io/library/named:1"),
            false,
        )
        .unwrap();
    assert_eq!(
        import(a, None).await.unwrap()[0].repo_tags,
        vec!["docker.io/library/named:1"]
    );

    // A full ref.name names the image.
    let b = dir.path().join("b.tar");
    image("b")
        .write_oci_archive(&b, Some("example.com/x:2"), None, false)
        .unwrap();
    assert_eq!(
        import(b, None).await.unwrap()[0].repo_tags,
        vec!["example.com/x:2"]
    );

    // A bare tag as ref.name names nothing: imported by ID.
    let c = dir.path().join("c.tar");
    let built_c = image("c")
        .write_oci_archive(&c, Some("1"), None, false)
        .unwrap();
    let (sink, mut rx) = progress();
    let file = tokio::fs::File::open(&c).await.unwrap();
    let got = store.import(file, None, sink).await.unwrap();
    assert!(got[0].repo_tags.is_empty());
    assert_eq!(
        drain(&mut rx).last().unwrap().status,
        format!("Loaded image ID: {}", built_c.config_digest)
    );
    assert_eq!(
        store.get(&built_c.config_digest).unwrap().id,
        built_c.config_digest
    );

    // RepoTags beat ref.name; the containerd name beats RepoTags.
    let layout = dir.path().join("layout-d");
    let built_d = image("d")
        .write_oci_layout(&layout, Some("example.com/y:3"), None)
        .unwrap();
    let d = dir.path().join("d.tar");
    archive_with_repotags(&layout, &built_d, &["repotag:7"], &d);
    assert_eq!(
        import(d, None).await.unwrap()[0].repo_tags,
        vec!["docker.io/library/repotag:7"]
    );
    let layout = dir.path().join("layout-e");
    let built_e = image("e")
        .write_oci_layout(&layout, Some("1"), Some("docker.io/library/ctrd:8"))
        .unwrap();
    let e = dir.path().join("e.tar");
    archive_with_repotags(&layout, &built_e, &["repotag:9"], &e);
    assert_eq!(
        import(e, None).await.unwrap()[0].repo_tags,
        vec!["docker.io/library/ctrd:8"]
    );

    // --tag overrides every name...
    let f = dir.path().join("f.tar");
    image("f")
        .write_docker_archive(&f, &["ignored:1"], false)
        .unwrap();
    let got = import(f, Some("custom/name:v9")).await.unwrap();
    assert_eq!(got[0].repo_tags, vec!["docker.io/custom/name:v9"]);
    assert!(store.get("ignored:1").is_err());

    // ...and needs an archive with exactly one image.
    let layout = dir.path().join("layout-g");
    image("g1")
        .write_oci_layout(&layout, Some("g:1"), None)
        .unwrap();
    image("g2")
        .write_oci_layout(&layout, Some("g:2"), None)
        .unwrap();
    let g = dir.path().join("g.tar");
    fs::write(&g, tar_dir(&layout).unwrap()).unwrap();
    let before = store.list().len();
    let err = import(g.clone(), Some("one:1")).await.unwrap_err();
    assert!(matches!(err, ImageError::InvalidArchive { .. }), "{err}");
    assert!(err.to_string().contains("exactly one image"), "{err}");
    assert_eq!(store.list().len(), before);
    // Without --tag both images arrive, named by their full ref.names.
    let got = import(g, None).await.unwrap();
    let tags: BTreeSet<_> = got.iter().flat_map(|i| i.repo_tags.clone()).collect();
    assert_eq!(
        tags,
        BTreeSet::from([
            "docker.io/library/g:1".to_string(),
            "docker.io/library/g:2".to_string()
        ])
    );
}

fn raw_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
        }
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Requirement: a multi-layer image with OCI whiteouts yields layer dirs with overlayfs
/// whiteouts (char device 0:0, opaque xattr) that stack into the right merged view.
#[tokio::test(flavor = "multi_thread")]
async fn whiteouts_become_overlay_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store"), &[]).await;
    let archive = dir.path().join("w.tar");
    ImageBuilder::empty()
        .layer_tar(raw_tar(&[
            ("a/", b""),
            ("a/gone", b"1"),
            ("a/kept", b"2"),
            ("b/", b""),
            ("b/old", b"3"),
        ]))
        .layer_tar(raw_tar(&[
            ("a/", b""),
            ("a/.wh.gone", b""),
            ("b/", b""),
            ("b/.wh..wh..opq", b""),
            ("b/new", b"4"),
        ]))
        .write_oci_archive(&archive, None, Some("docker.io/library/wh:1"), false)
        .unwrap();
    let image = import_file(&store, &archive, None).await.unwrap().remove(0);
    let dirs = store.layer_dirs(&image);
    assert_eq!(dirs.len(), 2);
    assert!(dirs[0].join("a/gone").is_file());
    let wh = fs::symlink_metadata(dirs[1].join("a/gone")).unwrap();
    assert!(wh.file_type().is_char_device(), "whiteout is a char device");
    assert_eq!(wh.rdev(), 0);
    assert!(!dirs[1].join("a/.wh.gone").exists());
    let mut buf = [0u8; 8];
    let n = rustix::fs::lgetxattr(dirs[1].join("b"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    assert!(!dirs[1].join("b/.wh..wh..opq").exists());

    // The kernel agrees: stacked as lower dirs they give the merged image.
    let merged = dir.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let lower = std::ffi::CString::new(format!(
        "lowerdir={}:{}",
        dirs[1].display(),
        dirs[0].display()
    ))
    .unwrap();
    let flags = rustix::mount::MountFlags::RDONLY;
    match rustix::mount::mount("overlay", &merged, "overlay", flags, Some(lower.as_c_str())) {
        Ok(()) => {
            let seen = names(&merged.join("a"));
            let seen_b = names(&merged.join("b"));
            rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH).unwrap();
            assert_eq!(seen, BTreeSet::from(["kept".to_string()]));
            assert_eq!(seen_b, BTreeSet::from(["new".to_string()]));
        }
        Err(e) => eprintln!("SKIPPED overlay mount part: cannot mount overlayfs here: {e}"),
    }
}

/// Requirement: export writes an OCI archive with a docker-compatible manifest.json;
/// export → import round-trips (same IDs, names, manifests); skopeo reads the archive both
/// as `oci-archive:` and as `docker-archive:`.
#[tokio::test(flavor = "multi_thread")]
async fn export_import_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store"), &[]).await;
    let docker = dir.path().join("docker.tar");
    ImageBuilder::busybox()
        .write_docker_archive(&docker, &["busybox:latest"], false)
        .unwrap();
    let oci = dir.path().join("oci.tar");
    ImageBuilder::busybox()
        .layer_files(&[("etc/extra", "x", 0o644)])
        .write_oci_archive(&oci, None, Some("localhost:5000/team/app:2"), true)
        .unwrap();
    let a = import_file(&store, &docker, None).await.unwrap().remove(0);
    let b = import_file(&store, &oci, None).await.unwrap().remove(0);

    let exported = dir.path().join("export.tar");
    let out = tokio::fs::File::create(&exported).await.unwrap();
    store
        .export(
            &[
                "busybox".to_string(),
                "localhost:5000/team/app:2".to_string(),
            ],
            out,
        )
        .await
        .unwrap();

    // Structure: oci-layout, index.json with names, manifest.json pointing at blobs.
    let mut entries = BTreeSet::new();
    let mut index = None;
    let mut manifest = None;
    let bytes = fs::read(&exported).unwrap();
    let mut ar = tar::Archive::new(bytes.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        match name.as_str() {
            "index.json" => {
                index = Some(serde_json::from_slice::<serde_json::Value>(&data).unwrap())
            }
            "manifest.json" => {
                manifest = Some(serde_json::from_slice::<serde_json::Value>(&data).unwrap())
            }
            _ => {}
        }
        entries.insert(name);
    }
    assert!(entries.contains("oci-layout"));
    let index = index.unwrap();
    let names_in_index: BTreeSet<_> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["io.containerd.image.name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        names_in_index,
        BTreeSet::from([
            (
                "docker.io/library/busybox:latest".to_string(),
                "latest".to_string()
            ),
            ("localhost:5000/team/app:2".to_string(), "2".to_string()),
        ])
    );
    let manifest = manifest.unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["busybox:latest"])
    );
    assert_eq!(
        manifest[1]["RepoTags"],
        serde_json::json!(["localhost:5000/team/app:2"])
    );
    for m in manifest.as_array().unwrap() {
        assert!(entries.contains(m["Config"].as_str().unwrap()));
        for l in m["Layers"].as_array().unwrap() {
            assert!(entries.contains(l.as_str().unwrap()), "{l}");
        }
    }

    // Round trip into a fresh store.
    let other = open(&dir.path().join("other"), &[]).await;
    let got = import_file(&other, &exported, None).await.unwrap();
    assert_eq!(got.len(), 2);
    for (orig, back) in [(&a, &got[0]), (&b, &got[1])] {
        assert_eq!(orig.id, back.id);
        assert_eq!(orig.repo_tags, back.repo_tags);
        assert_eq!(orig.manifest_digest, back.manifest_digest);
        assert_eq!(orig.layers, back.layers);
    }

    // Independent readers accept it, as OCI layout and as docker save archive.
    if missing_tools(&["skopeo"]) {
        return;
    }
    for (transport, target) in [
        ("oci-archive", format!("{}:2", exported.display())),
        (
            "docker-archive",
            format!("{}:busybox:latest", exported.display()),
        ),
    ] {
        let out = std::process::Command::new("skopeo")
            .args(["--insecure-policy", "inspect", "--config"])
            .arg(format!("{transport}:{target}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            config["rootfs"]["diff_ids"].is_array(),
            "{transport}: {config}"
        );
    }
}

/// Requirement: re-import is idempotent and shares blobs/layers; two images sharing a
/// base layer store it once; rm of one keeps the shared layer, rm of both GCs everything.
#[tokio::test(flavor = "multi_thread")]
async fn sharing_reimport_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store"), &[]).await;
    let one = dir.path().join("one.tar");
    let two = dir.path().join("two.tar");
    let b1 = ImageBuilder::busybox()
        .layer_files(&[("one", "1", 0o644)])
        .write_oci_archive(&one, None, Some("docker.io/library/one:1"), false)
        .unwrap();
    let b2 = ImageBuilder::busybox()
        .layer_files(&[("two", "2", 0o644)])
        .write_docker_archive(&two, &["two:2"], true)
        .unwrap();
    assert_eq!(b1.diff_ids[0], b2.diff_ids[0], "same base layer");

    let first = import_file(&store, &one, None).await.unwrap();
    let snapshot = listing(store.root());
    let again = import_file(&store, &one, None).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(
        listing(store.root()),
        snapshot,
        "re-import changes nothing on disk"
    );
    assert_eq!(store.list().len(), 1);

    import_file(&store, &two, None).await.unwrap();
    let layers = names(&store.root().join("layers"));
    assert_eq!(layers.len(), 3, "base stored once: {layers:?}");
    let usage = store.disk_usage();
    assert!(usage > 1_000_000);

    let events = store.remove("one:1", false, &never_used).await.unwrap();
    assert_eq!(
        events,
        vec![
            RemoveEvent::Untagged("one:1".to_string()),
            RemoveEvent::Deleted(b1.config_digest.clone()),
        ]
    );
    let layers = names(&store.root().join("layers"));
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    assert_eq!(
        layers,
        BTreeSet::from([hex(&b2.diff_ids[0]), hex(&b2.diff_ids[1])])
    );
    assert!(!store.has_blob(&b1.manifest_digest));
    assert!(!store.has_blob(&b1.layer_digests[1]));
    assert!(store.disk_usage() < usage);
    // The remaining image is intact.
    let two_image = store.get("two:2").unwrap();
    assert!(
        store.layer_dirs(&two_image)[0]
            .join("bin/busybox")
            .is_file()
    );

    store.remove("two:2", false, &never_used).await.unwrap();
    assert_store_empty(&store);
    assert_eq!(store.disk_usage(), 0);
}

/// Requirement: every hostile layer from testkit::hostile fails the import with an error
/// naming the entry and leaves nothing behind (directory listing unchanged, no record, no
/// blob, no layer dir, staging removed) — or, for the symlink cases the extractor
/// neutralises by resolving inside the layer, lands entirely inside the layer; host
/// canaries are untouched either way.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_layers_via_import() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = open(&root, &[]).await;
    // Content already present must survive untouched.
    let base = dir.path().join("base.tar");
    ImageBuilder::empty()
        .layer_files(&[("ok", "fine", 0o644)])
        .write_docker_archive(&base, &["base:1"], false)
        .unwrap();
    import_file(&store, &base, None).await.unwrap();
    // Canaries where an escaping whiteout / file could land.
    let canaries = [
        root.join(hostile::marker("whiteout_escape")),
        root.join("layers").join(hostile::marker("whiteout_escape")),
    ];
    for c in &canaries {
        fs::write(c, "canary").unwrap();
    }
    let passwd_before = fs::metadata("/etc/passwd").unwrap();
    let mut neutralised = 0;

    for (case, tar) in hostile::all() {
        let archive = dir.path().join(format!("{case}.tar"));
        ImageBuilder::empty()
            .layer_files(&[("first", "layer", 0o644)])
            .layer_tar(tar)
            .write_oci_archive(
                &archive,
                None,
                Some(&format!("docker.io/library/{}:1", case.replace('_', "-"))),
                false,
            )
            .unwrap();
        let before = listing(&root);
        let records_before = store.list();
        match import_file(&store, &archive, None).await {
            Err(err) => {
                let msg = err.to_string();
                assert!(matches!(err, ImageError::Unpack { .. }), "{case}: {msg}");
                assert!(
                    msg.contains(&hostile::marker(case)),
                    "{case}: error names the entry: {msg}"
                );
                assert_eq!(listing(&root), before, "{case}: nothing left behind");
                assert_eq!(store.list(), records_before, "{case}: no record");
            }
            Ok(images) => {
                // Neutralised: only symlink cases may pass, and their marker is inside
                // the image's own layer.
                assert!(case.starts_with("symlink"), "{case} must be refused");
                let layer = store.layer_dirs(&images[0])[1].clone();
                let found = hostile::find_markers(&layer, 4);
                assert!(!found.is_empty(), "{case}: marker written inside the layer");
                neutralised += 1;
            }
        }
        let outside: Vec<_> = hostile::find_markers(dir.path(), 6)
            .into_iter()
            .filter(|p| !canaries.contains(p) && !p.starts_with(root.join("layers")))
            .collect();
        assert!(outside.is_empty(), "{case}: escaped to {outside:?}");
        assert!(
            hostile::find_markers(Path::new("/tmp"), 0).is_empty(),
            "{case}: host /tmp"
        );
        assert!(
            hostile::find_markers(Path::new("/"), 0).is_empty(),
            "{case}: host /"
        );
        for c in &canaries {
            assert_eq!(
                fs::read_to_string(c).unwrap(),
                "canary",
                "{case}: canary {}",
                c.display()
            );
        }
    }
    let passwd_after = fs::metadata("/etc/passwd").unwrap();
    assert_eq!(
        passwd_before.nlink(),
        passwd_after.nlink(),
        "no hard link to /etc/passwd"
    );
    assert_eq!(passwd_before.len(), passwd_after.len());
    for c in &canaries {
        fs::remove_file(c).unwrap();
    }
    assert_eq!(store.list().len(), 1 + neutralised);
    // GC with refused layers around: only referenced content remains.
    store.gc().await.unwrap();
}

/// Requirement: the archive is read as untrusted data: links inside it are aliases of
/// entries (old `docker save` links identical layers as `../<id>/layer.tar`), other
/// entry kinds (devices, FIFOs) are skipped, and nothing is created from archive names.
#[tokio::test(flavor = "multi_thread")]
async fn docker_save_links_are_aliases_and_devices_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store"), &[]).await;
    let original = dir.path().join("orig.tar");
    // Two identical layers: the second layer.tar becomes a symlink to the first.
    let built = ImageBuilder::empty()
        .layer_files(&[("same", "content", 0o644)])
        .layer_files(&[("same", "content", 0o644)])
        .write_docker_archive(&original, &["linked:1"], false)
        .unwrap();
    assert_eq!(built.diff_ids[0], built.diff_ids[1]);
    let bytes = fs::read(&original).unwrap();
    let mut out = tar::Builder::new(Vec::new());
    let mut first_layer: Option<String> = None;
    let mut ar = tar::Archive::new(bytes.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut header = e.header().clone();
        if name.ends_with("/layer.tar") {
            if let Some(first) = &first_layer {
                let mut link = tar::Header::new_gnu();
                link.set_entry_type(tar::EntryType::Symlink);
                link.set_size(0);
                link.set_mode(0o777);
                link.set_mtime(0);
                out.append_link(&mut link, &name, format!("../{first}"))
                    .unwrap();
                continue;
            }
            first_layer = Some(name.clone());
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.append_data(&mut header, &name, data.as_slice())
            .unwrap();
    }
    // A device node: skipped, never created.
    let mut dev = tar::Header::new_gnu();
    dev.set_entry_type(tar::EntryType::Char);
    dev.set_size(0);
    dev.set_mode(0o666);
    dev.set_mtime(0);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    out.append_data(&mut dev, "evil-null", &[][..]).unwrap();
    let archive = dir.path().join("linked.tar");
    fs::write(&archive, out.into_inner().unwrap()).unwrap();

    let image = import_file(&store, &archive, None).await.unwrap().remove(0);
    assert_eq!(image.id, built.config_digest);
    assert_eq!(image.layers.len(), 2);
    let dirs = store.layer_dirs(&image);
    assert_eq!(dirs[0], dirs[1]);
    assert_eq!(fs::read(dirs[0].join("same")).unwrap(), b"content");
    assert_eq!(names(&store.root().join("ingest")), BTreeSet::new());
    assert!(!store.root().join("evil-null").exists());
}

/// Requirement: a corrupt archive (blob not matching its name, missing blob, garbage)
/// is refused with a clear error and leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn corrupt_archives_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store"), &[]).await;
    let layout = dir.path().join("layout");
    let built = ImageBuilder::empty()
        .layer_files(&[("f", "data", 0o644)])
        .write_oci_layout(&layout, None, Some("docker.io/library/c:1"))
        .unwrap();
    let layer = layout
        .join("blobs/sha256")
        .join(built.layer_digests[0].trim_start_matches("sha256:"));
    let good = fs::read(&layer).unwrap();
    // Tampered layer blob.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    fs::write(&layer, &bad).unwrap();
    let archive = dir.path().join("tampered.tar");
    fs::write(&archive, tar_dir(&layout).unwrap()).unwrap();
    let before = listing(store.root());
    let err = import_file(&store, &archive, None).await.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert_eq!(listing(store.root()), before);
    // Missing blob.
    fs::remove_file(&layer).unwrap();
    fs::write(&archive, tar_dir(&layout).unwrap()).unwrap();
    let err = import_file(&store, &archive, None).await.unwrap_err();
    assert!(
        err.to_string().contains("missing from the archive"),
        "{err}"
    );
    // Not an archive at all.
    let mut f = fs::File::create(&archive).unwrap();
    f.write_all(b"this is not a tar file, not even close...")
        .unwrap();
    drop(f);
    let err = import_file(&store, &archive, None).await.unwrap_err();
    assert!(matches!(err, ImageError::InvalidArchive { .. }), "{err}");
    assert_eq!(listing(store.root()), before);
    assert_store_empty(&store);
}

/// Requirement: the store is usable from many tasks at once: concurrent imports of the
/// same archive both succeed with one record and the layer unpacked once.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_imports_share_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store"), &[]).await;
    let archive = dir.path().join("a.tar");
    ImageBuilder::busybox()
        .write_docker_archive(&archive, &["busybox:latest"], false)
        .unwrap();
    let jobs: Vec<_> = (0..4)
        .map(|_| {
            let (store, archive) = (store.clone(), archive.clone());
            tokio::spawn(async move { import_file(&store, &archive, None).await })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for j in jobs {
        ids.insert(j.await.unwrap().unwrap()[0].id.clone());
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(store.list().len(), 1);
    assert_eq!(names(&store.root().join("layers")).len(), 1);
    assert_eq!(names(&store.root().join("ingest")), BTreeSet::new());
}

/// Requirement: `ImageStore` is `Clone + Send + Sync` and its operations can run on any
/// task (their futures are `Send`). Checked at compile time.
#[allow(dead_code)]
fn store_and_futures_are_send(store: ImageStore) {
    fn send<T: Send>(_: T) {}
    fn shared<T: Send + Sync + Clone>(_: &T) {}
    shared(&store);
    let creds = shoal_image::Credentials {
        username: "u".into(),
        password: "p".into(),
    };
    send(store.pull("x", Some(creds.clone()), shoal_image::ProgressSink::none()));
    send(store.import(tokio::io::empty(), None, shoal_image::ProgressSink::none()));
    send(store.export(&[], tokio::io::sink()));
    send(store.remove("x", false, &|_| false));
    send(store.prune(false, &|_| false));
    send(store.gc());
    send(store.tag("a", "b"));
    send(store.login("x", &creds));
}
