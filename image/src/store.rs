//! The content-addressed image store on disk, its records, lookup, removal and GC.
//!
//! Layout under the root directory:
//! - `blobs/sha256/<hex>`: verified content only (written to `ingest/`, fsynced,
//!   verified, renamed, directory fsynced).
//! - `ingest/<hex>.partial`: downloads in progress, kept across crashes for Range resume;
//!   `ingest/import-*/`: staging of an archive being imported.
//! - `layers/<diff-id hex>/`: unpacked layers (overlayfs lower dirs), created as
//!   `layers/.tmp-*`, synced and renamed into place.
//! - `images.json`: the image records (atomic replace).
//!
//! Concurrency: pulls and imports hold `gc_lock` for reading, remove/prune/gc for
//! writing, so GC never deletes content an operation in flight is about to reference.
//! Within operations, a per-key async lock makes each blob download and each layer
//! unpack happen once. Two `ImageStore`s on one root (two processes) are not supported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;

use crate::ImageError;
use crate::oci::{HashingReader, digest_hex};
use crate::progress::{ProgressBar, short_id};
use crate::reference::{self, familiar, is_hex};
use crate::registry::RegistryOptions;
use crate::unpack;

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Root directory (the daemon passes `<data-dir>/images`); created if missing.
    pub root: PathBuf,
    /// How registries are reached.
    pub registry: RegistryOptions,
}

/// One layer of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// `sha256:` of the uncompressed tar (from the config's `rootfs.diff_ids`); names the
    /// unpacked directory.
    pub diff_id: String,
    /// Digest of the blob as stored (compressed as pulled, or the plain tar).
    pub blob_digest: String,
    /// Media type of the blob.
    pub media_type: String,
    /// Size of the blob.
    pub blob_size: u64,
    /// Bytes of file content in the unpacked layer.
    pub unpacked_size: u64,
}

/// An image in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<config digest>`.
    pub id: String,
    /// Normalized full references, e.g. `docker.io/library/busybox:latest`.
    pub repo_tags: Vec<String>,
    /// `docker.io/library/busybox@sha256:…` (the manifest-list digest when pulled
    /// through a list, as Docker records).
    pub repo_digests: Vec<String>,
    /// Digest of the stored (single-platform) manifest.
    pub manifest_digest: String,
    /// Its media type.
    pub manifest_media_type: String,
    /// `created` from the config.
    pub created: Option<DateTime<Utc>>,
    /// Unpacked bytes of all layers.
    pub size: u64,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// OS from the config.
    pub os: String,
    /// Architecture from the config.
    pub architecture: String,
    /// Variant from the config.
    pub variant: Option<String>,
}

/// What `remove`/`prune` did, in Docker's words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoveEvent {
    /// A tag or digest reference was removed (familiar form).
    Untagged(String),
    /// The image (ID) was deleted.
    Deleted(String),
}

/// Result of `prune`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// What was untagged and deleted.
    pub deleted: Vec<RemoveEvent>,
    /// Bytes freed on disk.
    pub space_reclaimed: u64,
}

/// The node's image store. Cheap to clone; usable from many tasks at once.
#[derive(Clone)]
pub struct ImageStore {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) registry: RegistryOptions,
    images: RwLock<BTreeMap<String, ImageRecord>>,
    /// Serializes record updates so `images.json` writes land in order.
    persist: tokio::sync::Mutex<()>,
    /// Read: pull/import in flight. Write: remove/prune/gc.
    pub(crate) gc_lock: tokio::sync::RwLock<()>,
    /// Per-blob and per-layer locks.
    pub(crate) locks: KeyedLocks,
}

#[derive(Serialize, Deserialize)]
struct RecordsFile {
    version: u32,
    images: Vec<ImageRecord>,
}

/// How a name matched an image.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Matched {
    /// By one of its tags (full reference).
    Tag(String),
    /// By a `repo@digest` reference.
    Digest(String),
    /// By full ID or ID prefix.
    Id,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `opts.root`, removes leftovers of
    /// interrupted unpacks and imports, and loads the image records.
    pub async fn open(opts: StoreOptions) -> Result<Self, ImageError> {
        tokio::task::spawn_blocking(move || Self::open_blocking(opts)).await?
    }

    fn open_blocking(opts: StoreOptions) -> Result<Self, ImageError> {
        let root = opts.root;
        for dir in [
            root.join("blobs/sha256"),
            root.join("ingest"),
            root.join("layers"),
        ] {
            fs::create_dir_all(&dir).map_err(ImageError::io("create", &dir))?;
        }
        remove_leftovers(&root.join("layers"), |name| name.starts_with(".tmp-"))?;
        remove_leftovers(&root.join("ingest"), |name| {
            name.starts_with("import-") || name.ends_with(".tmp")
        })?;
        let path = root.join("images.json");
        let images = match fs::read(&path) {
            Ok(bytes) => {
                let file: RecordsFile =
                    serde_json::from_slice(&bytes).map_err(|e| ImageError::CorruptStore {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                file.images.into_iter().map(|r| (r.id.clone(), r)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(ImageError::io("read", &path)(e)),
        };
        tracing::debug!(root = %root.display(), images = images.len(), "image store opened");
        Ok(ImageStore {
            inner: Arc::new(Inner {
                root,
                registry: opts.registry,
                images: RwLock::new(images),
                persist: tokio::sync::Mutex::new(()),
                gc_lock: tokio::sync::RwLock::new(()),
                locks: KeyedLocks::default(),
            }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// All images, newest first.
    pub fn list(&self) -> Vec<ImageRecord> {
        let mut list: Vec<ImageRecord> = self.images().values().cloned().collect();
        list.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        list
    }

    /// Finds an image by familiar or full `name[:tag]`, `name@digest`, full ID
    /// (`sha256:…`) or a unique ID prefix, with Docker's precedence.
    pub fn get(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let images = self.images();
        let (id, _) = resolve(&images, name)?;
        Ok(images[&id].clone())
    }

    /// The image's config, read from its blob.
    pub fn config(
        &self,
        image: &ImageRecord,
    ) -> Result<oci_spec::image::ImageConfiguration, ImageError> {
        let path = self.blob_file(digest_hex(&image.id)?);
        let bytes = fs::read(&path).map_err(ImageError::io("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::InvalidContent {
            what: "config",
            digest: image.id.clone(),
            reason: e.to_string(),
        })
    }

    /// The unpacked layer directories of an image, bottom layer first.
    pub fn layer_dirs(&self, image: &ImageRecord) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .map(|l| self.layer_dir(hex_part(&l.diff_id)))
            .collect()
    }

    /// Whether a verified blob with this digest is stored.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_some()
    }

    /// The file of a stored blob, for serving it to a peer.
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let path = self.blob_file(digest_hex(digest).ok()?);
        path.is_file().then_some(path)
    }

    /// Bytes used: all blobs plus the unpacked layers the records know.
    pub fn disk_usage(&self) -> u64 {
        let blobs: u64 = fs::read_dir(self.inner.root.join("blobs/sha256"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        let layers: BTreeMap<String, u64> = self
            .images()
            .values()
            .flat_map(|i| i.layers.iter())
            .map(|l| (l.diff_id.clone(), l.unpacked_size))
            .collect();
        blobs + layers.values().sum::<u64>()
    }

    /// Adds tag `target` to the image `source` names; the tag moves off any other image.
    pub async fn tag(&self, source: &str, target: &str) -> Result<(), ImageError> {
        let target = reference::parse_tagged(target)?.whole();
        self.update(|images| {
            let (id, _) = resolve(images, source)?;
            untag_everywhere(images, &target);
            if let Some(image) = images.get_mut(&id) {
                image.repo_tags.push(target.clone());
            }
            Ok(())
        })
        .await
    }

    /// Removes a reference with Docker's `rmi` semantics: a tag or digest reference is
    /// untagged and the image deleted once nothing names it; removing by ID untags
    /// everything (several tags need `force`). An image `in_use` reports (it gets the
    /// image ID) is never deleted: without `force` this is [`ImageError::InUse`], with
    /// `force` the image is only untagged. Unreferenced blobs and layers are then
    /// collected.
    pub async fn remove(
        &self,
        name: &str,
        force: bool,
        in_use: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<RemoveEvent>, ImageError> {
        let _gc = self.inner.gc_lock.write().await;
        let (events, deleted) = self
            .update(|images| {
                let (id, matched) = resolve(images, name)?;
                let image = images
                    .get_mut(&id)
                    .ok_or_else(|| ImageError::NotFound(id.clone()))?;
                let short = short_id(&id);
                // The references this removal drops.
                let dropped: Vec<String> = match &matched {
                    Matched::Tag(tag) => {
                        let repo = tag_repository(tag);
                        let last_of_repo = !image
                            .repo_tags
                            .iter()
                            .any(|t| t != tag && tag_repository(t) == repo);
                        // Docker drops the repository's digests with its last tag.
                        let digests = image
                            .repo_digests
                            .iter()
                            .filter(|d| last_of_repo && digest_repository(d) == repo);
                        std::iter::once(tag).chain(digests).cloned().collect()
                    }
                    Matched::Digest(digest) => vec![digest.clone()],
                    Matched::Id => {
                        if image.repo_tags.len() > 1 && !force {
                            return Err(ImageError::MultipleReferences { image: short });
                        }
                        image
                            .repo_tags
                            .iter()
                            .chain(&image.repo_digests)
                            .cloned()
                            .collect()
                    }
                };
                let last = image
                    .repo_tags
                    .iter()
                    .chain(&image.repo_digests)
                    .all(|r| dropped.contains(r));
                let used = last && in_use(&id);
                if used && !force {
                    return Err(ImageError::InUse {
                        reference: name.to_string(),
                        image: short,
                    });
                }
                image.repo_tags.retain(|r| !dropped.contains(r));
                image.repo_digests.retain(|r| !dropped.contains(r));
                let mut events: Vec<RemoveEvent> = dropped
                    .iter()
                    .map(|r| RemoveEvent::Untagged(familiar(r)))
                    .collect();
                // A forced removal of an image a container uses leaves it dangling: the
                // container still needs its layers.
                if !last || used {
                    return Ok((events, false));
                }
                images.remove(&id);
                events.push(RemoveEvent::Deleted(id));
                Ok((events, true))
            })
            .await?;
        if deleted {
            self.gc_locked().await?;
        }
        Ok(events)
    }

    /// Deletes dangling (untagged) images, or with `all` every image no container
    /// uses, then collects their blobs and layers.
    pub async fn prune(
        &self,
        all: bool,
        in_use: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<PruneReport, ImageError> {
        let _gc = self.inner.gc_lock.write().await;
        let deleted = self
            .update(|images| {
                let victims: Vec<String> = images
                    .values()
                    .filter(|i| (all || i.repo_tags.is_empty()) && !in_use(&i.id))
                    .map(|i| i.id.clone())
                    .collect();
                let mut events = Vec::new();
                for id in victims {
                    if let Some(image) = images.remove(&id) {
                        for r in image.repo_tags.iter().chain(&image.repo_digests) {
                            events.push(RemoveEvent::Untagged(familiar(r)));
                        }
                        events.push(RemoveEvent::Deleted(id));
                    }
                }
                Ok(events)
            })
            .await?;
        let space_reclaimed = self.gc_locked().await?;
        Ok(PruneReport {
            deleted,
            space_reclaimed,
        })
    }

    /// Deletes blobs and layer directories no image references (plus leftovers of
    /// interrupted operations and partial downloads older than a day). Returns the
    /// bytes freed.
    pub async fn gc(&self) -> Result<u64, ImageError> {
        let _gc = self.inner.gc_lock.write().await;
        self.gc_locked().await
    }

    /// GC proper; the caller holds `gc_lock` for writing.
    async fn gc_locked(&self) -> Result<u64, ImageError> {
        let images = self.images().clone();
        let root = self.inner.root.clone();
        tokio::task::spawn_blocking(move || collect_garbage(&root, &images)).await?
    }

    // ----- records -----

    pub(crate) fn images(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ImageRecord>> {
        // A panic while holding the lock cannot leave the map half-updated: updates
        // swap in a complete new map.
        self.inner.images.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` to a copy of the records, writes them to `images.json` atomically,
    /// then makes them current. Updates are serialized.
    pub(crate) async fn update<R>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, ImageRecord>) -> Result<R, ImageError>,
    ) -> Result<R, ImageError> {
        let _persist = self.inner.persist.lock().await;
        let mut next = self.images().clone();
        let out = f(&mut next)?;
        let file = RecordsFile {
            version: 1,
            images: next.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| ImageError::CorruptStore {
            path: self.inner.root.join("images.json"),
            reason: e.to_string(),
        })?;
        let path = self.inner.root.join("images.json");
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes)).await??;
        *self.inner.images.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(out)
    }

    /// Records an image (merging names into an existing record with the same ID) and
    /// moves its tags off other images. Returns the stored record.
    pub(crate) async fn commit_image(
        &self,
        record: ImageRecord,
    ) -> Result<ImageRecord, ImageError> {
        self.update(|images| {
            for tag in &record.repo_tags {
                untag_everywhere(images, tag);
            }
            let merged = match images.remove(&record.id) {
                Some(mut old) => {
                    for t in &record.repo_tags {
                        if !old.repo_tags.contains(t) {
                            old.repo_tags.push(t.clone());
                        }
                    }
                    for d in &record.repo_digests {
                        if !old.repo_digests.contains(d) {
                            old.repo_digests.push(d.clone());
                        }
                    }
                    old
                }
                None => record,
            };
            images.insert(merged.id.clone(), merged.clone());
            Ok(merged)
        })
        .await
    }

    /// Unpacked size of a layer already in place: from a record, else measured.
    pub(crate) fn existing_layer_size(&self, diff_id: &str) -> u64 {
        let known = self
            .images()
            .values()
            .flat_map(|i| i.layers.iter())
            .find(|l| l.diff_id == diff_id)
            .map(|l| l.unpacked_size);
        known.unwrap_or_else(|| dir_size(&self.layer_dir(hex_part(diff_id))))
    }

    // ----- paths -----

    pub(crate) fn blob_file(&self, hex: &str) -> PathBuf {
        self.inner.root.join("blobs/sha256").join(hex)
    }

    pub(crate) fn layer_dir(&self, hex: &str) -> PathBuf {
        self.inner.root.join("layers").join(hex)
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.inner.root.join("ingest")
    }

    pub(crate) fn has_layer(&self, diff_id: &str) -> bool {
        digest_hex(diff_id).is_ok_and(|hex| self.layer_dir(hex).is_dir())
    }

    /// Stores `bytes` as blob `digest` after checking it (small content: manifests,
    /// configs).
    pub(crate) async fn write_blob(&self, digest: &str, bytes: Vec<u8>) -> Result<(), ImageError> {
        let hex = digest_hex(digest)?.to_string();
        crate::oci::verify_bytes(&format!("blob {digest}"), &bytes, digest)?;
        if self.blob_file(&hex).is_file() {
            return Ok(());
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let tmp = store
                .ingest_dir()
                .join(format!("{hex}.{}.tmp", random_suffix()));
            let result = (|| {
                let mut f = fs::File::create(&tmp).map_err(ImageError::io("create", &tmp))?;
                f.write_all(&bytes).map_err(ImageError::io("write", &tmp))?;
                f.sync_all().map_err(ImageError::io("fsync", &tmp))?;
                store.commit_blob_file(&tmp, &hex)
            })();
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result
        })
        .await?
    }

    /// Renames a complete, fsynced, verified file into `blobs/` and syncs the directory.
    pub(crate) fn commit_blob_file(&self, src: &Path, hex: &str) -> Result<(), ImageError> {
        let dest = self.blob_file(hex);
        fs::rename(src, &dest).map_err(ImageError::io("rename", src))?;
        fsync_dir(dest.parent().unwrap_or(&self.inner.root))
    }
}

/// Unpacks the layer blob at `blob` into a fresh `layers/.tmp-*` directory, checking
/// that the uncompressed stream hashes to `diff_id`. `on_read` sees how many
/// compressed bytes were consumed (for "Extracting"/"Loading layer" bars). On success
/// returns the synced temporary directory and the unpacked byte count; on failure the
/// directory is gone.
pub(crate) fn unpack_to_tmp(
    layers_dir: &Path,
    blob: &Path,
    media_type: &str,
    diff_id: &str,
    bar: Option<ProgressBar>,
) -> Result<(PathBuf, u64), ImageError> {
    let tmp = layers_dir.join(format!(".tmp-{}", random_suffix()));
    fs::create_dir(&tmp).map_err(ImageError::io("create", &tmp))?;
    let result = (|| {
        let file = fs::File::open(blob).map_err(ImageError::io("open", blob))?;
        let counted = CountingReader {
            inner: std::io::BufReader::with_capacity(256 * 1024, file),
            count: 0,
            bar,
        };
        let unpack_err = |source| ImageError::Unpack {
            layer: diff_id.to_string(),
            source,
        };
        let plain = unpack::decompress(media_type, counted).map_err(unpack_err)?;
        let mut hashing = HashingReader::new(plain);
        let stats = unpack::unpack_layer(&mut hashing, &tmp).map_err(unpack_err)?;
        let (actual, _) = hashing.finish().map_err(ImageError::io("read", blob))?;
        if actual != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!(
                    "layer {diff_id} (uncompressed content of {})",
                    blob.display()
                ),
                expected: diff_id.to_string(),
                actual,
            });
        }
        let dir = fs::File::open(&tmp).map_err(ImageError::io("open", &tmp))?;
        rustix::fs::syncfs(&dir).map_err(|e| ImageError::io("syncfs", &tmp)(e.into()))?;
        Ok(stats.bytes)
    })();
    match result {
        Ok(bytes) => Ok((tmp, bytes)),
        Err(e) => {
            remove_tree(&tmp);
            Err(e)
        }
    }
}

/// Moves an unpacked temporary layer directory to `layers/<hex>` (or drops it if that
/// already exists) and syncs `layers/`.
pub(crate) fn commit_layer(layers_dir: &Path, tmp: &Path, hex: &str) -> Result<(), ImageError> {
    let dest = layers_dir.join(hex);
    if dest.is_dir() {
        remove_tree(tmp);
        return Ok(());
    }
    fs::rename(tmp, &dest).map_err(ImageError::io("rename", tmp))?;
    fsync_dir(layers_dir)
}

struct CountingReader<R> {
    inner: R,
    count: u64,
    bar: Option<ProgressBar>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if let Some(bar) = &mut self.bar {
            bar.update(self.count);
        }
        Ok(n)
    }
}

/// Resolves `name` to an image ID with Docker's precedence: full ID, then reference
/// (tag or `repo@digest`), then unique ID prefix.
pub(crate) fn resolve(
    images: &BTreeMap<String, ImageRecord>,
    name: &str,
) -> Result<(String, Matched), ImageError> {
    let not_found = || ImageError::NotFound(name.to_string());
    let by_prefix = |prefix: &str| -> Result<(String, Matched), ImageError> {
        let mut hits = images.keys().filter(|id| hex_part(id).starts_with(prefix));
        match (hits.next(), hits.next()) {
            (Some(id), None) => Ok((id.clone(), Matched::Id)),
            (Some(_), Some(_)) => Err(ImageError::AmbiguousId {
                prefix: prefix.to_string(),
                count: images
                    .keys()
                    .filter(|id| hex_part(id).starts_with(prefix))
                    .count(),
            }),
            _ => Err(not_found()),
        }
    };
    if let Some(hex) = name.strip_prefix("sha256:") {
        return if is_hex(hex) {
            by_prefix(hex)
        } else {
            Err(not_found())
        };
    }
    if name.len() == 64 && is_hex(name) {
        return by_prefix(name);
    }
    if let Ok(r) = reference::parse(name) {
        let repo = reference::repository_name(&r);
        if let Some(digest) = r.digest() {
            let full = format!("{repo}@{digest}");
            if let Some(image) = images.values().find(|i| i.repo_digests.contains(&full)) {
                return Ok((image.id.clone(), Matched::Digest(full)));
            }
            // Not a recorded repo digest (e.g. an imported image): its manifest under
            // one of its tagged repositories still names it.
            if let Some(image) = images.values().find(|i| {
                i.manifest_digest == digest && i.repo_tags.iter().any(|t| tag_repository(t) == repo)
            }) {
                return Ok((image.id.clone(), Matched::Id));
            }
        } else {
            let full = r.whole();
            if let Some(image) = images.values().find(|i| i.repo_tags.contains(&full)) {
                return Ok((image.id.clone(), Matched::Tag(full)));
            }
        }
    }
    if is_hex(name) {
        return by_prefix(name);
    }
    Err(not_found())
}

fn untag_everywhere(images: &mut BTreeMap<String, ImageRecord>, tag: &str) {
    for image in images.values_mut() {
        image.repo_tags.retain(|t| t != tag);
    }
}

/// `registry/repository` of a full tag reference (`…/busybox:latest` → `…/busybox`).
fn tag_repository(tag: &str) -> &str {
    tag.rsplit_once(':').map_or(tag, |(repo, _)| repo)
}

/// `registry/repository` of a `repo@digest` reference.
fn digest_repository(reference: &str) -> &str {
    reference
        .split_once('@')
        .map_or(reference, |(repo, _)| repo)
}

/// The hex of `sha256:<hex>` (or the text itself).
pub(crate) fn hex_part(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, h)| h)
}

/// How long an abandoned partial download is kept for a resume.
const PARTIAL_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn collect_garbage(root: &Path, images: &BTreeMap<String, ImageRecord>) -> Result<u64, ImageError> {
    let mut blobs: BTreeSet<&str> = BTreeSet::new();
    let mut layers: BTreeSet<&str> = BTreeSet::new();
    for image in images.values() {
        blobs.insert(hex_part(&image.id));
        blobs.insert(hex_part(&image.manifest_digest));
        for l in &image.layers {
            blobs.insert(hex_part(&l.blob_digest));
            layers.insert(hex_part(&l.diff_id));
        }
    }
    let mut freed = 0u64;
    let blob_dir = root.join("blobs/sha256");
    for entry in read_dir(&blob_dir)? {
        let name = entry.file_name();
        if !blobs.contains(name.to_string_lossy().as_ref()) {
            let path = entry.path();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(ImageError::io("remove", &path))?;
            tracing::debug!(blob = %name.to_string_lossy(), size, "gc: blob removed");
            freed += size;
        }
    }
    let layer_dir = root.join("layers");
    for entry in read_dir(&layer_dir)? {
        let name = entry.file_name();
        if !layers.contains(name.to_string_lossy().as_ref()) {
            let path = entry.path();
            let size = dir_size(&path);
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(ImageError::io("remove", &path))?;
            tracing::debug!(layer = %name.to_string_lossy(), size, "gc: layer removed");
            freed += size;
        }
    }
    for entry in read_dir(&root.join("ingest"))? {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > PARTIAL_MAX_AGE);
        if name.starts_with("import-") || name.ends_with(".tmp") || old {
            freed += dir_size(&path);
            remove_tree(&path);
        }
    }
    fsync_dir(&blob_dir)?;
    fsync_dir(&layer_dir)?;
    Ok(freed)
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, ImageError> {
    fs::read_dir(dir)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(ImageError::io("read directory", dir))
}

fn remove_leftovers(dir: &Path, pick: impl Fn(&str) -> bool) -> Result<(), ImageError> {
    for entry in read_dir(dir)? {
        if pick(&entry.file_name().to_string_lossy()) {
            tracing::info!(path = %entry.path().display(), "removing leftover of an interrupted operation");
            remove_tree(&entry.path());
        }
    }
    Ok(())
}

/// Removes a file or directory tree, logging (not failing) on error: used on cleanup
/// paths where the original error matters more.
pub(crate) fn remove_tree(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cleanup failed");
    }
}

/// Sum of file sizes under `path` (not following symlinks).
pub(crate) fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| dir_size(&e.path()))
        .sum()
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), ImageError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ImageError::io("fsync", dir))
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp).map_err(ImageError::io("create", &tmp))?;
    f.write_all(bytes).map_err(ImageError::io("write", &tmp))?;
    f.sync_all().map_err(ImageError::io("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(ImageError::io("rename", &tmp))?;
    fsync_dir(path.parent().unwrap_or(Path::new("/")))
}

/// 16 random hex digits for temporary names.
pub(crate) fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No entropy source: uniqueness (not secrecy) is all that is needed here.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = ((nanos as u64) ^ u64::from(std::process::id())).to_le_bytes();
    }
    hex::encode(bytes)
}

/// Named async locks (one per blob digest or layer diff-id) so concurrent operations
/// fetch each blob once and unpack each layer once. Entries vanish when unused.
#[derive(Default)]
pub(crate) struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds one key of [`KeyedLocks`].
pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Locks `key`; `on_wait` runs first if someone else holds it.
    pub(crate) async fn lock(&self, key: String, on_wait: impl FnOnce()) -> KeyGuard<'_> {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let guard = match mutex.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                on_wait();
                mutex.lock_owned().await
            }
        };
        KeyGuard {
            locks: self,
            key,
            guard: Some(guard),
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.guard.take());
        // Only the map still holds it: nobody waits, forget the key.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id_byte: char, tags: &[&str], digests: &[&str]) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", id_byte.to_string().repeat(64)),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            manifest_digest: format!("sha256:{}", "f".repeat(64)),
            manifest_media_type: crate::oci::OCI_MANIFEST.to_string(),
            created: None,
            size: 0,
            layers: vec![],
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    #[test]
    fn resolves_with_docker_precedence() {
        let mut a = record('a', &["docker.io/library/busybox:latest"], &[]);
        a.id = format!("sha256:ab{}", "0".repeat(62));
        let digest = format!("sha256:{}", "d".repeat(64));
        a.repo_digests = vec![format!("docker.io/library/busybox@{digest}")];
        let mut b = record('b', &["localhost:5000/x/y:1"], &[]);
        b.id = format!("sha256:ac{}", "0".repeat(62));
        let images: BTreeMap<_, _> = [a.clone(), b.clone()]
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let id = |name: &str| resolve(&images, name).map(|(id, _)| id);
        assert_eq!(id("busybox").unwrap(), a.id);
        assert_eq!(id("busybox:latest").unwrap(), a.id);
        assert_eq!(id("docker.io/library/busybox:latest").unwrap(), a.id);
        assert_eq!(id(&format!("busybox@{digest}")).unwrap(), a.id);
        assert_eq!(id("localhost:5000/x/y:1").unwrap(), b.id);
        assert_eq!(id(&a.id).unwrap(), a.id);
        assert_eq!(id(hex_part(&a.id)).unwrap(), a.id);
        assert_eq!(id("ab").unwrap(), a.id);
        assert_eq!(id("sha256:ac").unwrap(), b.id);
        assert!(matches!(
            resolve(&images, "a"),
            Err(ImageError::AmbiguousId { count: 2, .. })
        ));
        assert!(matches!(
            resolve(&images, "busybox:1"),
            Err(ImageError::NotFound(_))
        ));
        assert!(matches!(
            resolve(&images, "ad"),
            Err(ImageError::NotFound(_))
        ));
        assert_eq!(
            resolve(&images, "busybox").unwrap().1,
            Matched::Tag("docker.io/library/busybox:latest".into())
        );
    }

    #[tokio::test]
    async fn keyed_locks_serialize_and_clean_up() {
        let locks = Arc::new(KeyedLocks::default());
        let g = locks
            .lock("k".into(), || panic!("free lock must not wait"))
            .await;
        let waited = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (l2, w2) = (locks.clone(), waited.clone());
        let t = tokio::spawn(async move {
            let _g = l2
                .lock("k".into(), || {
                    w2.store(true, std::sync::atomic::Ordering::SeqCst)
                })
                .await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!t.is_finished());
        drop(g);
        t.await.unwrap();
        assert!(waited.load(std::sync::atomic::Ordering::SeqCst));
        assert!(locks.map.lock().unwrap().is_empty());
    }
}
