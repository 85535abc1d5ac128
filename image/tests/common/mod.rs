//! Helpers shared by the image store's integration tests.
#![allow(dead_code)] // each test crate uses a different subset

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use shoal_image::{
    ImageError, ImageRecord, ImageStore, Platform, ProgressEvent, ProgressSink, RegistryOptions,
    StoreOptions,
};

/// Installs the ring TLS provider, as the daemon does at start.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Opens a store at `root` reaching the given registries over plain HTTP.
pub async fn open(root: &Path, insecure: &[&str]) -> ImageStore {
    open_with(root, insecure, None).await
}

/// Opens a store with `insecure` registries and a certs.d directory.
pub async fn open_with(root: &Path, insecure: &[&str], certs_dir: Option<PathBuf>) -> ImageStore {
    install_crypto();
    ImageStore::open(StoreOptions {
        root: root.to_path_buf(),
        registry: RegistryOptions {
            insecure: insecure.iter().map(|s| s.to_string()).collect(),
            certs_dir,
            platform: Platform::host(),
        },
    })
    .await
    .expect("open store")
}

/// Imports the archive file at `path`.
pub async fn import_file(
    store: &ImageStore,
    path: &Path,
    tag: Option<&str>,
) -> Result<Vec<ImageRecord>, ImageError> {
    let file = tokio::fs::File::open(path).await.expect("open archive");
    store.import(file, tag, ProgressSink::none()).await
}

/// A progress sink and a way to collect what it received.
pub fn progress() -> (
    ProgressSink,
    tokio::sync::mpsc::UnboundedReceiver<ProgressEvent>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (ProgressSink::new(tx), rx)
}

/// Everything received so far.
pub fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<ProgressEvent>) -> Vec<ProgressEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// Every path under `root`, relative, with a type marker (d/f/l/c), sorted.
pub fn listing(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            let kind = if ft.is_dir() {
                "d"
            } else if ft.is_symlink() {
                "l"
            } else if ft.is_file() {
                "f"
            } else {
                "c"
            };
            out.insert(format!("{kind} {rel}"));
            if ft.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// Names of the entries directly in `dir`.
pub fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the store holds no content at all (no blob, no layer, no record).
pub fn assert_store_empty(store: &ImageStore) {
    let root = store.root();
    assert!(store.list().is_empty(), "records: {:?}", store.list());
    assert_eq!(
        names(&root.join("blobs/sha256")),
        BTreeSet::new(),
        "blobs left"
    );
    assert_eq!(names(&root.join("layers")), BTreeSet::new(), "layers left");
}

/// Returns true (after printing why) when a host tool a test needs is missing.
pub fn missing_tools(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools
        .iter()
        .filter(|t| {
            !std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .any(|d| d.join(t).is_file())
        })
        .collect();
    if missing.is_empty() {
        false
    } else {
        eprintln!(
            "SKIPPED: missing host tools {missing:?} (Debian packages docker-registry, skopeo)"
        );
        true
    }
}
