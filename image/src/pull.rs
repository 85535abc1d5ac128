//! Pulling images from a registry.
//!
//! Manifest (by tag or digest; lists/indexes resolved to the node platform by our own
//! resolver), config and layers are each verified against their digest before use;
//! layers are downloaded ≤3 at a time into `ingest/<hex>.partial` (resumed with a Range
//! request after a crash), renamed into `blobs/` once verified, then unpacked with the
//! diff-id checked. Concurrent pulls share work through per-blob and per-layer locks.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use oci_client::client::BlobResponse;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Semaphore, watch};

use crate::oci::{self, AnyManifest, Descriptor, Manifest, digest_hex, sha256_digest};
use crate::platform::{describe, select_manifest};
use crate::progress::{ProgressSink, short_id};
use crate::reference::{self, familiar, repository_name};
use crate::registry::{client_for, map_error, map_stream_error, registry_auth};
use crate::store::{commit_layer, unpack_to_tmp};
use crate::{Credentials, ImageError, ImageRecord, ImageStore, LayerRecord};

/// How many layers download at once per pull.
const MAX_CONCURRENT_LAYERS: usize = 3;

/// Image configs are read into memory: refuse absurd ones.
const MAX_CONFIG_SIZE: u64 = 16 << 20;

impl ImageStore {
    /// Pulls `reference` (e.g. `busybox`, `localhost:5000/a/b:1`, `name@sha256:…`) and
    /// records it. Progress goes to `progress` in Docker's wording. Concurrent pulls of
    /// the same content download and unpack it once.
    pub async fn pull(
        &self,
        reference: &str,
        creds: Option<Credentials>,
        progress: ProgressSink,
    ) -> Result<ImageRecord, ImageError> {
        let reference = reference::parse(reference)?;
        let _gc = self.inner.gc_lock.read().await;
        let client = client_for(&self.inner.registry, reference.registry())?;
        let auth = registry_auth(creds.as_ref());
        if creds.is_some() {
            // Authenticate up front so refused credentials say so (the client would
            // otherwise fall back to anonymous requests and report "access denied").
            client
                .auth(&reference, &auth, RegistryOperation::Pull)
                .await
                .map_err(|e| map_error(&reference, e))?;
        }
        let puller = Puller {
            store: self,
            client,
            auth,
            reference,
            progress,
        };
        let record = puller.run().await;
        if let Err(e) = &record {
            tracing::warn!(reference = %puller.reference.whole(), error = %e, "pull failed");
        }
        record
    }
}

impl ImageStore {
    /// The digest the registry gives for `reference` (its manifest, or its index for a
    /// multi-platform image), without pulling anything: what a manager pins a service's
    /// image to when it does not have the image itself.
    pub async fn resolve_digest(
        &self,
        reference: &str,
        creds: Option<Credentials>,
    ) -> Result<String, ImageError> {
        let reference = reference::parse(reference)?;
        let client = client_for(&self.inner.registry, reference.registry())?;
        let auth = registry_auth(creds.as_ref());
        client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .map_err(|e| map_error(&reference, e))
    }
}

struct Puller<'a> {
    store: &'a ImageStore,
    client: Client,
    auth: RegistryAuth,
    reference: Reference,
    progress: ProgressSink,
}

impl Puller<'_> {
    async fn run(&self) -> Result<ImageRecord, ImageError> {
        let r = &self.reference;
        let header_id = r.digest().or(r.tag()).unwrap_or("latest");
        self.progress
            .status(Some(header_id), format!("Pulling from {}", r.repository()));

        let (bytes, digest) = self.fetch_manifest(r, r.digest()).await?;
        let (manifest, media_type, manifest_digest, bytes, list_digest) =
            match oci::parse_manifest(&bytes, &digest, None)? {
                AnyManifest::Image(m, media_type) => (m, media_type, digest, bytes, None),
                AnyManifest::Index(index) => {
                    let want = &self.store.inner.registry.platform;
                    let entry = select_manifest(&index.manifests, want).ok_or_else(|| {
                        ImageError::Platform {
                            wanted: want.to_string(),
                            available: describe(&index.manifests),
                        }
                    })?;
                    digest_hex(&entry.digest)?;
                    let by_digest = r.clone_with_digest(entry.digest.clone());
                    let (bytes, d) = self.fetch_manifest(&by_digest, Some(&entry.digest)).await?;
                    match oci::parse_manifest(&bytes, &d, Some(&entry.media_type))? {
                        AnyManifest::Image(m, media_type) => {
                            (m, media_type, d, bytes, Some(digest))
                        }
                        AnyManifest::Index(_) => {
                            return Err(ImageError::InvalidContent {
                                what: "manifest",
                                digest: d,
                                reason: "an index entry points to another index".to_string(),
                            });
                        }
                    }
                }
            };

        // Config: verified like any blob, then parsed.
        let id = manifest.config.digest.clone();
        if manifest.config.size > MAX_CONFIG_SIZE {
            return Err(ImageError::InvalidContent {
                what: "config",
                digest: id,
                reason: format!(
                    "{} bytes is more than the {MAX_CONFIG_SIZE} accepted",
                    manifest.config.size
                ),
            });
        }
        let config_path = self.fetch_blob(&manifest.config, None).await?;
        let config_bytes = tokio::fs::read(&config_path)
            .await
            .map_err(ImageError::io("read", &config_path))?;
        let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| ImageError::InvalidContent {
                what: "config",
                digest: id.clone(),
                reason: e.to_string(),
            })?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::InvalidContent {
                what: "config",
                digest: id.clone(),
                reason: format!(
                    "{} diff-ids for {} layers in manifest {manifest_digest}",
                    diff_ids.len(),
                    manifest.layers.len()
                ),
            });
        }
        let repo = repository_name(r);
        let repo_digest = format!(
            "{repo}@{}",
            list_digest.as_deref().unwrap_or(&manifest_digest)
        );
        // Docker's "up to date": this reference already named this image (a new tag for
        // content already here is still "Downloaded newer image").
        let existed = self
            .store
            .images()
            .get(&id)
            .is_some_and(|i| match r.digest() {
                None => i.repo_tags.contains(&r.whole()),
                Some(_) => i.repo_digests.contains(&repo_digest),
            });

        let layers = self.pull_layers(&manifest, diff_ids).await?;

        self.store.write_blob(&manifest_digest, bytes).await?;
        let record = ImageRecord {
            id,
            repo_tags: match r.digest() {
                None => vec![r.whole()],
                Some(_) => vec![],
            },
            repo_digests: vec![repo_digest],
            manifest_digest: manifest_digest.clone(),
            manifest_media_type: media_type,
            created: parse_created(config.created().as_deref()),
            size: layers.iter().map(|l| l.unpacked_size).sum(),
            layers,
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: config.variant().clone(),
        };
        let record = self.store.commit_image(record).await?;
        self.progress.status(
            None,
            format!(
                "Digest: {}",
                list_digest.as_deref().unwrap_or(&manifest_digest)
            ),
        );
        let name = familiar(&r.whole());
        self.progress.status(
            None,
            if existed {
                format!("Status: Image is up to date for {name}")
            } else {
                format!("Status: Downloaded newer image for {name}")
            },
        );
        tracing::info!(reference = %r.whole(), id = %record.id, "image pulled");
        Ok(record)
    }

    /// GETs a manifest and checks it against `expected` when pulling by digest.
    async fn fetch_manifest(
        &self,
        r: &Reference,
        expected: Option<&str>,
    ) -> Result<(Vec<u8>, String), ImageError> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(r, &self.auth, oci::ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| map_error(r, e))?;
        let bytes = bytes.to_vec();
        let digest = sha256_digest(&bytes);
        if let Some(expected) = expected {
            oci::verify_bytes(&format!("manifest {expected}"), &bytes, expected)?;
        }
        Ok((bytes, digest))
    }

    async fn pull_layers(
        &self,
        manifest: &Manifest,
        diff_ids: &[String],
    ) -> Result<Vec<LayerRecord>, ImageError> {
        for (desc, diff_id) in manifest.layers.iter().zip(diff_ids) {
            digest_hex(diff_id)?;
            let status = if self.layer_present(desc, diff_id) {
                "Already exists"
            } else {
                "Pulling fs layer"
            };
            self.progress.status(Some(&short_id(&desc.digest)), status);
        }
        // All layers run to an end before the pull returns (no unpack is left running
        // behind an error); once one fails, the others stop waiting and downloading.
        let slots = Semaphore::new(MAX_CONCURRENT_LAYERS);
        let (abort_tx, abort_rx) = watch::channel(false);
        let jobs = manifest.layers.iter().zip(diff_ids).map(|(desc, diff_id)| {
            let (slots, abort_tx, abort_rx) = (&slots, &abort_tx, abort_rx.clone());
            async move {
                let result = self.pull_layer(desc, diff_id, slots, abort_rx).await;
                if result.is_err() {
                    abort_tx.send_replace(true);
                }
                result
            }
        });
        // The first error wins; a layer is only ever aborted after another one failed.
        let results = futures_util::future::join_all(jobs)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let layers: Vec<LayerRecord> = results.into_iter().flatten().collect();
        if layers.len() != manifest.layers.len() {
            return Err(ImageError::InvalidContent {
                what: "manifest",
                digest: manifest.config.digest.clone(),
                reason: "layer pull aborted".to_string(),
            });
        }
        Ok(layers)
    }

    fn layer_present(&self, desc: &Descriptor, diff_id: &str) -> bool {
        self.store.has_layer(diff_id) && self.store.has_blob(&desc.digest)
    }

    /// Downloads and unpacks one layer; `None` if aborted because another layer failed.
    async fn pull_layer(
        &self,
        desc: &Descriptor,
        diff_id: &str,
        slots: &Semaphore,
        mut abort: watch::Receiver<bool>,
    ) -> Result<Option<LayerRecord>, ImageError> {
        let short = short_id(&desc.digest);
        let record = |unpacked_size| LayerRecord {
            diff_id: diff_id.to_string(),
            blob_digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            blob_size: desc.size,
            unpacked_size,
        };
        if self.layer_present(desc, diff_id) {
            return Ok(Some(record(self.store.existing_layer_size(diff_id))));
        }
        let slot = async {
            match slots.try_acquire() {
                Ok(p) => Ok(p),
                Err(_) => {
                    self.progress.status(Some(&short), "Waiting");
                    slots
                        .acquire()
                        .await
                        .map_err(|_| ImageError::InvalidContent {
                            what: "manifest",
                            digest: desc.digest.clone(),
                            reason: "layer download slots closed".to_string(),
                        })
                }
            }
        };
        let Some(_slot) = unless_aborted(&mut abort, slot).await? else {
            return Ok(None);
        };
        let diff_hex = digest_hex(diff_id)?.to_string();
        let lock = self
            .store
            .inner
            .locks
            .lock(format!("layer:{diff_hex}"), || {
                self.progress.status(Some(&short), "Waiting")
            });
        let Some(_layer) = unless_aborted(&mut abort, async { Ok(lock.await) }).await? else {
            return Ok(None);
        };
        if self.layer_present(desc, diff_id) {
            self.progress.status(Some(&short), "Already exists");
            return Ok(Some(record(self.store.existing_layer_size(diff_id))));
        }
        let fetch = self.fetch_blob(desc, Some(&short));
        let Some(blob) = unless_aborted(&mut abort, fetch).await? else {
            return Ok(None);
        };
        let unpacked = if self.store.has_layer(diff_id) {
            self.store.existing_layer_size(diff_id)
        } else {
            let layers_dir = self.store.inner.root.join("layers");
            let bar = self.progress.bar(&short, "Extracting", Some(desc.size));
            let (media_type, diff_id) = (desc.media_type.clone(), diff_id.to_string());
            // Unpack and commit in one blocking task, awaited even when another layer
            // fails: the layer lands whole or not at all, never as a stray temporary dir.
            tokio::task::spawn_blocking(move || {
                let (tmp, bytes) =
                    unpack_to_tmp(&layers_dir, &blob, &media_type, &diff_id, Some(bar))?;
                commit_layer(&layers_dir, &tmp, &diff_hex)?;
                Ok::<_, ImageError>(bytes)
            })
            .await??
        };
        self.progress.status(Some(&short), "Pull complete");
        Ok(Some(record(unpacked)))
    }

    /// Makes blob `desc` present in `blobs/` (downloading it unless it is), resuming a
    /// partial download. Returns its path. `progress_id` enables layer progress lines.
    async fn fetch_blob(
        &self,
        desc: &Descriptor,
        progress_id: Option<&str>,
    ) -> Result<PathBuf, ImageError> {
        let hex = digest_hex(&desc.digest)?;
        let path = self.store.blob_file(hex);
        let _blob = self
            .store
            .inner
            .locks
            .lock(format!("blob:{hex}"), || {
                if let Some(id) = progress_id {
                    self.progress.status(Some(id), "Waiting");
                }
            })
            .await;
        if path.is_file() {
            return Ok(path);
        }
        let partial = self.store.ingest_dir().join(format!("{hex}.partial"));
        let mut retried = false;
        loop {
            let offset = match tokio::fs::metadata(&partial).await {
                Ok(m) if m.len() <= desc.size => m.len(),
                _ => 0,
            };
            match self.download(desc, &partial, offset, progress_id).await {
                Ok(()) => break,
                Err(e @ ImageError::DigestMismatch { .. }) => {
                    let _ = tokio::fs::remove_file(&partial).await;
                    if offset > 0 && !retried {
                        // The kept partial was bad (e.g. torn by a power loss): start over.
                        tracing::warn!(blob = %desc.digest, error = %e, "resumed download failed verification, restarting");
                        retried = true;
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        let store = self.store.clone();
        let hex_owned = hex.to_string();
        tokio::task::spawn_blocking(move || store.commit_blob_file(&partial, &hex_owned)).await??;
        if let Some(id) = progress_id {
            self.progress.status(Some(id), "Download complete");
        }
        Ok(path)
    }

    /// One download attempt into `partial`, continuing at `offset`; on success the
    /// partial file is complete, fsynced and verified.
    async fn download(
        &self,
        desc: &Descriptor,
        partial: &Path,
        offset: u64,
        progress_id: Option<&str>,
    ) -> Result<(), ImageError> {
        let r = &self.reference;
        let map = |e| map_error(r, e);
        let (stream, start) = if offset > 0 && offset == desc.size {
            // Complete but never committed (e.g. killed right before the rename).
            (None, offset)
        } else if offset > 0 {
            tracing::info!(blob = %desc.digest, offset, "resuming download");
            match self
                .client
                .pull_blob_stream_partial(r, desc.digest.as_str(), offset, None)
                .await
                .map_err(map)?
            {
                BlobResponse::Partial(s) => (Some(s), offset),
                // The registry ignored the Range header: start over.
                BlobResponse::Full(s) => (Some(s), 0),
            }
        } else {
            let s = self
                .client
                .pull_blob_stream(r, desc.digest.as_str())
                .await
                .map_err(map)?;
            (Some(s), 0)
        };

        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        let partial_owned = partial.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || write_partial(&partial_owned, start, rx));
        let mut bar = progress_id.map(|id| self.progress.bar(id, "Downloading", Some(desc.size)));
        let mut received = start;
        let mut failure = None;
        if let Some(sized) = stream {
            let mut stream = sized.stream;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(chunk) => {
                        received += chunk.len() as u64;
                        if received > desc.size {
                            failure = Some(ImageError::DigestMismatch {
                                what: format!(
                                    "blob {}: registry sent more than the {} bytes declared",
                                    desc.digest, desc.size
                                ),
                                expected: desc.digest.clone(),
                                actual: "(oversized content)".to_string(),
                            });
                            break;
                        }
                        if tx.send(chunk).await.is_err() {
                            break; // the writer failed; its error is reported below
                        }
                        if let Some(bar) = &mut bar {
                            bar.update(received);
                        }
                    }
                    // The client's own digest check; ours below reports the mismatch.
                    Err(e) if is_digest_error(&e) => break,
                    Err(e) => {
                        failure = Some(map_stream_error(r, e));
                        break;
                    }
                }
            }
        }
        drop(tx);
        let (actual, written) = writer.await??;
        if let Some(f) = failure {
            return Err(f);
        }
        if let Some(id) = progress_id {
            self.progress.status(Some(id), "Verifying Checksum");
        }
        if actual != desc.digest || written != desc.size {
            return Err(ImageError::DigestMismatch {
                what: format!("blob {} ({written} of {} bytes)", desc.digest, desc.size),
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// Runs `fut` unless (or until) `abort` turns true; `None` when aborted.
async fn unless_aborted<T>(
    abort: &mut watch::Receiver<bool>,
    fut: impl std::future::Future<Output = Result<T, ImageError>>,
) -> Result<Option<T>, ImageError> {
    tokio::select! {
        result = fut => result.map(Some),
        _ = abort.wait_for(|aborted| *aborted) => Ok(None),
    }
}

fn is_digest_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>())
}

/// Appends the received chunks to `partial` after its first `start` bytes (which are
/// hashed first), fsyncs, and returns the digest and length of the whole file.
fn write_partial(
    partial: &Path,
    start: u64,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> Result<(String, u64), ImageError> {
    let io = |op| ImageError::io(op, partial);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(partial)
        .map_err(io("open"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    while done < start {
        let want = usize::try_from(start - done).map_or(buf.len(), |w| w.min(buf.len()));
        let n = file.read(&mut buf[..want]).map_err(io("read"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    file.set_len(done).map_err(io("truncate"))?;
    file.seek(SeekFrom::Start(done)).map_err(io("seek"))?;
    while let Some(chunk) = rx.blocking_recv() {
        file.write_all(&chunk).map_err(io("write"))?;
        hasher.update(&chunk);
        done += chunk.len() as u64;
    }
    file.sync_all().map_err(io("fsync"))?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), done))
}

/// `created` of an image config as a time (None if absent or malformed).
pub(crate) fn parse_created(created: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(created?)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn partial_writer_resumes_and_hashes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.partial");
        std::fs::write(&path, b"hello ").unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let p = path.clone();
        let writer = tokio::task::spawn_blocking(move || write_partial(&p, 6, rx));
        tx.send(Bytes::from_static(b"world")).await.unwrap();
        drop(tx);
        let (digest, len) = writer.await.unwrap().unwrap();
        assert_eq!(len, 11);
        assert_eq!(digest, sha256_digest(b"hello world"));
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");

        // start = 0 truncates what was there (a registry that ignored Range).
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let p = path.clone();
        let writer = tokio::task::spawn_blocking(move || write_partial(&p, 0, rx));
        tx.send(Bytes::from_static(b"new")).await.unwrap();
        drop(tx);
        let (digest, len) = writer.await.unwrap().unwrap();
        assert_eq!((digest, len), (sha256_digest(b"new"), 3));
    }

    #[test]
    fn created_times() {
        assert_eq!(
            parse_created(Some("2024-01-02T03:04:05.123456789Z")).map(|d| d.timestamp()),
            Some(1704164645)
        );
        assert_eq!(parse_created(Some("garbage")), None);
        assert_eq!(parse_created(None), None);
    }
}
