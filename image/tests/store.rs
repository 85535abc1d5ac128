//! Store semantics: lookup by every name form, tag, Docker `rmi` rules, prune, GC,
//! persistence across reopen and cleanup of interrupted operations.

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::*;
use shoal_image::{ImageError, RemoveEvent};
use shoal_testkit::images::ImageBuilder;

fn never_used(_: &str) -> bool {
    false
}

fn hex(id: &str) -> &str {
    id.trim_start_matches("sha256:")
}

/// Requirement: `get` by short id, full id (with and without `sha256:`), familiar name,
/// full name, name@digest; an ambiguous prefix is an error; unknown names are NotFound.
#[tokio::test(flavor = "multi_thread")]
async fn get_by_every_form() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store"), &[]).await;
    // 17 images in one layout: two IDs must share a first hex digit.
    let layout = dir.path().join("layout");
    for i in 0..17 {
        ImageBuilder::empty()
            .layer_files(&[("f", "same layer", 0o644)])
            .label("n", &i.to_string())
            .write_oci_layout(&layout, Some(&format!("img{i}:1")), None)
            .unwrap();
    }
    let archive = dir.path().join("many.tar");
    fs::write(&archive, shoal_testkit::images::tar_dir(&layout).unwrap()).unwrap();
    let images = import_file(&store, &archive, None).await.unwrap();
    assert_eq!(images.len(), 17);
    assert_eq!(
        fs::read_dir(store.root().join("layers")).unwrap().count(),
        1
    );

    let first = &images[0];
    let id = &first.id;
    for name in [
        id.clone(),
        hex(id).to_string(),
        hex(id)[..12].to_string(),
        format!("sha256:{}", &hex(id)[..12]),
        "img0:1".to_string(),
        "docker.io/library/img0:1".to_string(),
        format!("img0@{}", first.manifest_digest),
    ] {
        assert_eq!(store.get(&name).unwrap().id, *id, "get({name})");
    }
    // A familiar name without tag means :latest, which does not exist.
    assert!(matches!(store.get("img0"), Err(ImageError::NotFound(_))));
    assert!(matches!(store.get("nope:1"), Err(ImageError::NotFound(_))));
    assert_eq!(
        store.get("nope:1").unwrap_err().to_string(),
        "No such image: nope:1"
    );
    // Ambiguous one-digit prefix.
    let mut by_first: std::collections::BTreeMap<char, usize> = Default::default();
    for i in &images {
        *by_first
            .entry(hex(&i.id).chars().next().unwrap())
            .or_default() += 1;
    }
    let (shared, count) = by_first.iter().find(|(_, n)| **n > 1).unwrap();
    match store.get(&shared.to_string()) {
        Err(ImageError::AmbiguousId { count: c, .. }) => assert_eq!(c, *count),
        other => panic!("expected ambiguity, got {other:?}"),
    }
    // A unique prefix works with any length ≥ 1.
    if let Some((unique, _)) = by_first.iter().find(|(_, n)| **n == 1) {
        let expect = images
            .iter()
            .find(|i| hex(&i.id).starts_with(*unique))
            .unwrap();
        assert_eq!(store.get(&unique.to_string()).unwrap().id, expect.id);
    }
}

/// Requirement: `tag` adds a name (moving it off another image); `remove` follows
/// docker rmi: untag while other names remain, delete with the last, by-ID with several
/// tags needs force, in-use images are refused (InUse, docker's wording) and with force
/// only untagged; `prune` removes dangling images (or all unused with `all`).
#[tokio::test(flavor = "multi_thread")]
async fn tag_remove_and_prune_follow_docker() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store"), &[]).await;
    let a_tar = dir.path().join("a.tar");
    let b_tar = dir.path().join("b.tar");
    let a = ImageBuilder::busybox()
        .write_docker_archive(&a_tar, &["busybox:latest"], false)
        .unwrap();
    let b = ImageBuilder::busybox()
        .label("v", "2")
        .write_docker_archive(&b_tar, &["other:1"], false)
        .unwrap();
    import_file(&store, &a_tar, None).await.unwrap();
    import_file(&store, &b_tar, None).await.unwrap();

    store.tag("busybox", "mybox:1").await.unwrap();
    assert_eq!(
        store.get("mybox:1").unwrap().repo_tags,
        vec![
            "docker.io/library/busybox:latest",
            "docker.io/library/mybox:1"
        ]
    );
    // A tag moves: `other:1` now names image a, b is dangling.
    store.tag(&a.config_digest, "other:1").await.unwrap();
    assert_eq!(store.get("other:1").unwrap().id, a.config_digest);
    assert!(store.get(&b.config_digest).unwrap().repo_tags.is_empty());
    assert!(matches!(
        store.tag("busybox", "x@sha256:0000").await,
        Err(ImageError::InvalidReference { .. })
    ));
    assert!(matches!(
        store.tag("missing", "x:1").await,
        Err(ImageError::NotFound(_))
    ));

    // By ID with several tags: must force.
    let err = store
        .remove(&a.config_digest[7..19], false, &never_used)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::MultipleReferences { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("must be forced"), "{err}");
    // One of several tags: untag only.
    assert_eq!(
        store.remove("mybox:1", false, &never_used).await.unwrap(),
        vec![RemoveEvent::Untagged("mybox:1".into())]
    );
    assert_eq!(
        store.remove("other:1", false, &never_used).await.unwrap(),
        vec![RemoveEvent::Untagged("other:1".into())]
    );
    // The last tag of an image a container uses: refused without force.
    let used = |id: &str| id == a.config_digest;
    let err = store.remove("busybox", false, &used).await.unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "conflict: unable to remove repository reference \"busybox\" (must force) - \
             container is using its referenced image {}",
            &hex(&a.config_digest)[..12]
        )
    );
    // Forced: untagged, but kept (dangling) with its layers for the container.
    let layers_before = names(&store.root().join("layers"));
    assert_eq!(
        store.remove("busybox", true, &used).await.unwrap(),
        vec![RemoveEvent::Untagged("busybox:latest".into())]
    );
    let kept = store.get(&a.config_digest).unwrap();
    assert!(kept.repo_tags.is_empty());
    assert_eq!(names(&store.root().join("layers")), layers_before);

    // Prune: both dangling; the used one stays.
    let report = store.prune(false, &used).await.unwrap();
    assert_eq!(
        report.deleted,
        vec![RemoveEvent::Deleted(b.config_digest.clone())]
    );
    assert!(report.space_reclaimed > 0);
    assert!(store.get(&a.config_digest).is_ok());
    // Once unused, prune removes it and everything is collected.
    let report = store.prune(false, &never_used).await.unwrap();
    assert_eq!(
        report.deleted,
        vec![RemoveEvent::Deleted(a.config_digest.clone())]
    );
    assert!(report.space_reclaimed > 1_000_000);
    assert_store_empty(&store);

    // prune --all removes tagged unused images, keeps used ones.
    import_file(&store, &a_tar, None).await.unwrap();
    import_file(&store, &b_tar, None).await.unwrap();
    let report = store.prune(true, &used).await.unwrap();
    assert_eq!(
        report.deleted,
        vec![
            RemoveEvent::Untagged("other:1".into()),
            RemoveEvent::Deleted(b.config_digest.clone())
        ]
    );
    assert_eq!(store.list().len(), 1);
    // Removing by ID deletes with every tag.
    store.tag("busybox", "again:2").await.unwrap();
    let events = store
        .remove(&a.config_digest, true, &never_used)
        .await
        .unwrap();
    assert_eq!(
        events,
        vec![
            RemoveEvent::Untagged("busybox:latest".into()),
            RemoveEvent::Untagged("again:2".into()),
            RemoveEvent::Deleted(a.config_digest.clone()),
        ]
    );
    assert_store_empty(&store);
}

/// Requirement: records are persisted (images.json) and loaded at open; leftovers of
/// interrupted unpacks (`layers/.tmp-*`) and imports (`ingest/import-*`) are removed at
/// open; `gc` drops unreferenced blobs and layer dirs.
#[tokio::test(flavor = "multi_thread")]
async fn reopen_cleanup_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = open(&root, &[]).await;
    let tar = dir.path().join("a.tar");
    ImageBuilder::busybox()
        .write_docker_archive(&tar, &["busybox:latest"], false)
        .unwrap();
    let image = import_file(&store, &tar, None).await.unwrap().remove(0);
    store.tag("busybox", "keep:1").await.unwrap();
    let list = store.list();
    drop(store);

    fs::create_dir_all(root.join("layers/.tmp-deadbeef/etc")).unwrap();
    fs::create_dir_all(root.join("ingest/import-deadbeef")).unwrap();
    fs::write(root.join("ingest/import-deadbeef/00000001"), "x").unwrap();
    let partial = root.join(format!("ingest/{}.partial", "a".repeat(64)));
    fs::write(&partial, "resume me").unwrap();
    // An unreferenced blob and layer, as a crash between unpack and record would leave.
    let stray_blob = root.join("blobs/sha256").join("b".repeat(64));
    fs::write(&stray_blob, "stray").unwrap();
    fs::create_dir_all(root.join("layers").join("c".repeat(64)).join("x")).unwrap();

    let store = open(&root, &[]).await;
    assert_eq!(store.list(), list);
    assert!(!root.join("layers/.tmp-deadbeef").exists());
    assert!(!root.join("ingest/import-deadbeef").exists());
    assert!(partial.exists(), "partial downloads are kept for resume");
    assert!(store.layer_dirs(&image)[0].join("bin/busybox").is_file());

    let freed = store.gc().await.unwrap();
    assert!(freed >= 5, "{freed}");
    assert!(!stray_blob.exists());
    assert!(!root.join("layers").join("c".repeat(64)).exists());
    assert!(partial.exists(), "a fresh partial survives gc");
    assert_eq!(
        names(&root.join("layers")),
        BTreeSet::from([hex(&image.layers[0].diff_id).to_string()])
    );
    assert!(store.has_blob(&image.id) && store.has_blob(&image.manifest_digest));
    assert_eq!(
        store.blob_path(&image.id).unwrap(),
        root.join("blobs/sha256").join(hex(&image.id))
    );
    assert!(store.blob_path("sha256:../../etc/passwd").is_none());
}

/// Requirement: GC never deletes what an in-flight import is about to reference:
/// gc/prune running concurrently with imports leave every imported image complete.
#[tokio::test(flavor = "multi_thread")]
async fn gc_concurrent_with_imports() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store"), &[]).await;
    let mut archives = Vec::new();
    for i in 0..4 {
        let tar = dir.path().join(format!("{i}.tar"));
        ImageBuilder::busybox()
            .layer_files(&[("n", i.to_string().as_str(), 0o644)])
            .write_docker_archive(&tar, &[&format!("img:{i}")], false)
            .unwrap();
        archives.push(tar);
    }
    let mut jobs = Vec::new();
    for tar in archives {
        let s = store.clone();
        jobs.push(tokio::spawn(async move {
            import_file(&s, &tar, None).await.map(|_| ())
        }));
        let s = store.clone();
        jobs.push(tokio::spawn(async move { s.gc().await.map(|_| ()) }));
    }
    for j in jobs {
        j.await.unwrap().unwrap();
    }
    store.gc().await.unwrap();
    assert_eq!(store.list().len(), 4);
    for image in store.list() {
        for d in [&image.id, &image.manifest_digest] {
            assert!(store.has_blob(d));
        }
        for (l, dir) in image.layers.iter().zip(store.layer_dirs(&image)) {
            assert!(store.has_blob(&l.blob_digest));
            assert!(dir.is_dir(), "{}", dir.display());
        }
    }
}
