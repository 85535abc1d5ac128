//! Fuzzes `ImageStore::import` with arbitrary bytes as a `docker save` / OCI-layout
//! archive (plain or gzip).
//!
//! Every input is imported into a fresh store under `/tmp/shoal-fuzz-import-<pid>/`,
//! driven by one current-thread tokio runtime per process. Afterwards:
//! - on error, the store is exactly as freshly opened: no `images.json`, nothing in
//!   `blobs/sha256/`, `layers/` or `ingest/` (compared as recursive listings);
//! - on success, every listed image has its layer directories, its config, manifest and
//!   layer blobs; nothing temporary is left in `ingest/` or `layers/`; the records read
//!   back the same from disk; and `gc` keeps all of that.
//!
//! The store is then deleted. Set `SHOAL_FUZZ_DEBUG=1` to print each import's outcome
//! (useful to check that the seeds import).
//!
//! A custom mutator keeps mutants deep: most mutations of a tar break a header checksum
//! (the tar reader then stops at once) and any mutation of a gzip stream breaks it. So
//! three times in four it repairs the checksums of the header blocks it finds after
//! libFuzzer's mutation, and for a gzip input it mutates the decompressed tar and
//! recompresses it. The target itself still takes the bytes as they are.

#![no_main]

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::{fuzz_mutator, fuzz_target};
use shoal_image::{ImageStore, Platform, ProgressSink, RegistryOptions, StoreOptions};

struct Ctx {
    rt: tokio::runtime::Runtime,
    base: PathBuf,
    debug: bool,
}

fn ctx() -> &'static Ctx {
    static C: OnceLock<Ctx> = OnceLock::new();
    C.get_or_init(|| {
        let base = PathBuf::from(format!("/tmp/shoal-fuzz-import-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).expect("create scratch");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        Ctx {
            rt,
            base,
            debug: std::env::var_os("SHOAL_FUZZ_DEBUG").is_some(),
        }
    })
}

/// Every path under `root` (relative), with a kind marker.
fn listing(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read store dir") {
            let p = e.expect("store entry").path();
            let m = fs::symlink_metadata(&p).expect("lstat store entry");
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let kind = if m.is_dir() {
                "d"
            } else if m.is_file() {
                "f"
            } else {
                "o"
            };
            out.insert(format!("{kind} {rel}"));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn open(rt: &tokio::runtime::Runtime, root: &Path) -> ImageStore {
    rt.block_on(ImageStore::open(StoreOptions {
        root: root.to_path_buf(),
        registry: RegistryOptions {
            insecure: vec![],
            certs_dir: None,
            platform: Platform::host(),
        },
    }))
    .expect("open store")
}

/// Everything the images reference is on disk.
fn check_complete(store: &ImageStore, when: &str) {
    for image in store.list() {
        for dir in store.layer_dirs(&image) {
            assert!(
                dir.is_dir(),
                "{when}: layer dir {} of {} missing",
                dir.display(),
                image.id
            );
        }
        assert!(
            store.has_blob(&image.id),
            "{when}: config blob {} missing",
            image.id
        );
        assert!(
            store.has_blob(&image.manifest_digest),
            "{when}: manifest blob {} of {} missing",
            image.manifest_digest,
            image.id
        );
        for l in &image.layers {
            assert!(
                store.has_blob(&l.blob_digest),
                "{when}: layer blob {} of {} missing",
                l.blob_digest,
                image.id
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    static N: AtomicU64 = AtomicU64::new(0);
    let c = ctx();
    let root = c
        .base
        .join(format!("s{}", N.fetch_add(1, Ordering::Relaxed)));
    let store = open(&c.rt, &root);
    let fresh = listing(&root);
    let archive = std::io::Cursor::new(data.to_vec());
    let result =
        c.rt.block_on(store.import(archive, None, ProgressSink::none()));
    if c.debug {
        match &result {
            Ok(records) => eprintln!(
                "imported {:?}",
                records
                    .iter()
                    .map(|r| (&r.id, &r.repo_tags))
                    .collect::<Vec<_>>()
            ),
            Err(e) => eprintln!("refused: {e}"),
        }
    }
    match result {
        Err(_) => {
            assert!(store.list().is_empty(), "failed import left image records");
            assert_eq!(
                fresh,
                listing(&root),
                "failed import left files in the store"
            );
        }
        Ok(records) => {
            assert!(!records.is_empty(), "import succeeded without an image");
            let listed: BTreeSet<String> = store.list().into_iter().map(|i| i.id).collect();
            let returned: BTreeSet<String> = records.iter().map(|r| r.id.clone()).collect();
            assert_eq!(listed, returned, "returned records differ from the store's");
            check_complete(&store, "after import");
            for entry in listing(&root) {
                let name = entry.rsplit('/').next().unwrap_or_default();
                assert!(
                    !(entry.contains(" ingest/") || name.starts_with(".tmp-")),
                    "leftover after import: {entry}"
                );
            }
            let reopened = open(&c.rt, &root);
            assert_eq!(store.list(), reopened.list(), "records on disk differ");
            drop(reopened);
            c.rt.block_on(store.gc()).expect("gc");
            check_complete(&store, "after gc");
        }
    }
    drop(store);
    fs::remove_dir_all(&root).expect("remove store");
});

/// Rewrites the checksum of every tar header found walking `buf` block by block (a header,
/// then as many blocks as its size says), so mutated headers still get read.
fn fix_tar_checksums(buf: &mut [u8]) {
    let mut off = 0usize;
    while let Some(block) = buf.get_mut(off..off + 512) {
        if block.iter().all(|&b| b == 0) {
            off += 512;
            continue;
        }
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(block);
        header.set_cksum();
        block.copy_from_slice(header.as_bytes());
        let blocks = header.entry_size().unwrap_or(0).div_ceil(512);
        let Some(next) = usize::try_from(blocks)
            .ok()
            .and_then(|b| b.checked_mul(512))
            .and_then(|b| b.checked_add(off + 512))
        else {
            return;
        };
        off = next;
    }
}

/// Decompressed size above which a gzip input is mutated as plain bytes.
const MAX_INNER: u64 = 1 << 20;

fn mutate_gzip(data: &mut [u8], size: usize, max_size: usize, fix: bool) -> Option<usize> {
    let mut inner = Vec::new();
    flate2::read::MultiGzDecoder::new(&data[..size])
        .take(MAX_INNER)
        .read_to_end(&mut inner)
        .ok()?;
    let len = inner.len();
    inner.resize(len * 2 + 1024, 0);
    let cap = inner.len();
    let n = libfuzzer_sys::fuzzer_mutate(&mut inner, len, cap);
    if fix {
        fix_tar_checksums(&mut inner[..n]);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&inner[..n]).ok()?;
    let out = gz.finish().ok()?;
    (out.len() <= max_size).then(|| {
        data[..out.len()].copy_from_slice(&out);
        out.len()
    })
}

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let fix = !seed.is_multiple_of(4);
    if data[..size].starts_with(&[0x1f, 0x8b])
        && !(seed >> 2).is_multiple_of(4)
        && let Some(n) = mutate_gzip(data, size, max_size, fix)
    {
        return n;
    }
    let n = libfuzzer_sys::fuzzer_mutate(data, size, max_size);
    if fix {
        fix_tar_checksums(&mut data[..n]);
    }
    n
});
