//! Importing and exporting image archives.
//!
//! `import` takes a `docker save` archive (`manifest.json` + config + uncompressed layer
//! tars) or an OCI image-layout archive (`oci-layout`, `index.json`, `blobs/sha256/…`),
//! plain or gzip-compressed. The archive is untrusted and read as a stream: each regular
//! file is copied into a private staging directory under `ingest/` under a sequence
//! number — archive names are only ever used as map keys, never as paths — and hashed
//! on the way. Symlinks and hard links become aliases of the entry they point to (old
//! `docker save` archives link identical layers); devices, FIFOs and other entry kinds
//! are skipped. Then every digest is checked, layers are unpacked into temporary
//! directories (diff-ids checked, hostile archives refused), and only when all of that
//! succeeded are blobs moved into the store, layers renamed into place and records
//! written. On error nothing is left behind.
//!
//! `export` writes an OCI image-layout archive that also carries Docker's `manifest.json`,
//! so both `docker load` and `import` accept it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::SyncIoBridge;

use crate::oci::{
    self, AnyManifest, Descriptor, HashingReader, Index, Manifest, digest_hex, sha256_digest,
};
use crate::platform::{Platform, describe, select_manifest};
use crate::progress::{ProgressSink, short_id};
use crate::reference::{self, familiar};
use crate::store::{
    Matched, commit_layer, hex_part, random_suffix, remove_tree, resolve, unpack_to_tmp,
};
use crate::{ImageError, ImageRecord, ImageStore, LayerRecord};

/// containerd's image-name annotation (full reference).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI's ref-name annotation (a tag, or sometimes a full reference).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// JSON documents read from an archive are capped at this size.
const MAX_JSON: u64 = 16 << 20;

impl ImageStore {
    /// Imports every image of a `docker save` or OCI archive (plain or gzip). Images
    /// are named by the `io.containerd.image.name` annotation, else Docker's
    /// `RepoTags`, else an `org.opencontainers.image.ref.name` that is a full reference
    /// (a bare tag like `latest` names nothing); `tag` replaces all names (the archive
    /// must then hold one image). Unnamed images are imported by ID.
    pub async fn import(
        &self,
        archive: impl AsyncRead + Send + Unpin + 'static,
        tag: Option<&str>,
        progress: ProgressSink,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let tag = tag
            .map(|t| reference::parse_tagged(t).map(|r| r.whole()))
            .transpose()?;
        let _gc = self.inner.gc_lock.read().await;
        let staging = self
            .ingest_dir()
            .join(format!("import-{}", random_suffix()));
        fs::create_dir(&staging).map_err(ImageError::io("create", &staging))?;
        let result = self.import_staged(archive, tag, &progress, &staging).await;
        let cleanup = staging.clone();
        // Staging is private to this import; remove it whatever happened.
        let _ = tokio::task::spawn_blocking(move || remove_tree(&cleanup)).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "image import failed");
        }
        result
    }

    async fn import_staged(
        &self,
        archive: impl AsyncRead + Send + Unpin + 'static,
        tag: Option<String>,
        progress: &ProgressSink,
        staging: &Path,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let dir = staging.to_path_buf();
        let platform = self.inner.registry.platform.clone();
        let mut plans = tokio::task::spawn_blocking(move || {
            let staged = stage(SyncIoBridge::new(archive), &dir)?;
            plan(&staged, &platform)
        })
        .await??;
        if plans.is_empty() {
            return Err(invalid("the archive holds no image"));
        }
        if let Some(tag) = tag {
            if plans.len() != 1 {
                return Err(invalid(&format!(
                    "--tag needs an archive with exactly one image, this one holds {}",
                    plans.len()
                )));
            }
            plans[0].names = vec![tag];
        }

        // Lock every layer (sorted: no lock-order deadlock with other imports), unpack
        // the missing ones into temporary directories.
        let mut diff_ids: Vec<String> = plans
            .iter()
            .flat_map(|p| p.layers.iter().map(|l| l.diff_id.clone()))
            .collect();
        diff_ids.sort();
        diff_ids.dedup();
        let mut guards = Vec::new();
        for d in &diff_ids {
            guards.push(
                self.inner
                    .locks
                    .lock(format!("layer:{}", hex_part(d)), || {})
                    .await,
            );
        }
        let layers_dir = self.inner.root.join("layers");
        let mut unpacked: Vec<(PathBuf, String)> = Vec::new();
        let mut sizes: HashMap<String, u64> = HashMap::new();
        let mut failure = None;
        for layer in plans.iter().flat_map(|p| &p.layers) {
            if sizes.contains_key(&layer.diff_id) {
                continue;
            }
            if self.has_layer(&layer.diff_id) {
                sizes.insert(
                    layer.diff_id.clone(),
                    self.existing_layer_size(&layer.diff_id),
                );
                continue;
            }
            let bar = progress.bar(&short_id(&layer.diff_id), "Loading layer", Some(layer.size));
            let (dir, file, media_type, diff_id) = (
                layers_dir.clone(),
                layer.file.clone(),
                layer.media_type.clone(),
                layer.diff_id.clone(),
            );
            match tokio::task::spawn_blocking(move || {
                unpack_to_tmp(&dir, &file, &media_type, &diff_id, Some(bar))
            })
            .await
            {
                Ok(Ok((tmp, bytes))) => {
                    unpacked.push((tmp, hex_part(&layer.diff_id).to_string()));
                    sizes.insert(layer.diff_id.clone(), bytes);
                }
                Ok(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                Err(e) => {
                    failure = Some(e.into());
                    break;
                }
            }
        }
        if let Some(e) = failure {
            for (tmp, _) in &unpacked {
                remove_tree(tmp);
            }
            return Err(e);
        }

        // Everything checked: move blobs in, layers into place, then write the records.
        let store = self.clone();
        let blob_files: Vec<(String, PathBuf)> =
            plans.iter().flat_map(PlannedImage::blob_files).collect();
        let layers_dir2 = layers_dir.clone();
        let unpacked2 = unpacked.clone();
        let committed = tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
            for (digest, path) in &blob_files {
                let hex = digest_hex(digest)?;
                if !store.blob_file(hex).is_file() {
                    let f = fs::File::open(path).map_err(ImageError::io("open", path))?;
                    f.sync_all().map_err(ImageError::io("fsync", path))?;
                    store.commit_blob_file(path, hex)?;
                }
            }
            for (tmp, hex) in &unpacked2 {
                commit_layer(&layers_dir2, tmp, hex)?;
            }
            Ok(())
        })
        .await?;
        if let Err(e) = committed {
            for (tmp, _) in &unpacked {
                remove_tree(tmp);
            }
            return Err(e);
        }
        drop(guards);

        let mut records = Vec::new();
        for p in plans {
            if let Some((digest, bytes)) = p.synthesized_manifest() {
                self.write_blob(&digest, bytes).await?;
            }
            let layers: Vec<LayerRecord> = p
                .layers
                .iter()
                .map(|l| LayerRecord {
                    diff_id: l.diff_id.clone(),
                    blob_digest: l.blob_digest.clone(),
                    media_type: l.media_type.clone(),
                    blob_size: l.size,
                    unpacked_size: sizes.get(&l.diff_id).copied().unwrap_or(0),
                })
                .collect();
            let record = ImageRecord {
                id: p.id.clone(),
                repo_tags: p.names.clone(),
                repo_digests: vec![],
                manifest_digest: p.manifest_digest.clone(),
                manifest_media_type: p.manifest_media_type.clone(),
                created: crate::pull::parse_created(p.config.created().as_deref()),
                size: layers.iter().map(|l| l.unpacked_size).sum(),
                layers,
                os: p.config.os().to_string(),
                architecture: p.config.architecture().to_string(),
                variant: p.config.variant().clone(),
            };
            let record = self.commit_image(record).await?;
            if p.names.is_empty() {
                progress.status(None, format!("Loaded image ID: {}", record.id));
            }
            for name in &p.names {
                progress.status(None, format!("Loaded image: {}", familiar(name)));
            }
            tracing::info!(id = %record.id, names = ?p.names, "image imported");
            records.push(record);
        }
        Ok(records)
    }

    /// Writes the named images as an uncompressed OCI image-layout tar with a
    /// Docker-compatible `manifest.json`. A name that is a tag exports that tag; an ID
    /// or digest exports the image unnamed (as `docker save` does).
    pub async fn export(
        &self,
        names: &[String],
        out: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Result<(), ImageError> {
        let _gc = self.inner.gc_lock.read().await;
        let mut picks: Vec<(ImageRecord, Option<String>)> = Vec::new();
        {
            let images = self.images();
            for name in names {
                let (id, matched) = resolve(&images, name)?;
                let tag = match matched {
                    Matched::Tag(t) => Some(t),
                    Matched::Digest(_) | Matched::Id => None,
                };
                let pick = (images[&id].clone(), tag);
                if !picks.contains(&pick) {
                    picks.push(pick);
                }
            }
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut bridge = SyncIoBridge::new(out);
            write_export(&store, &picks, &mut bridge)?;
            bridge
                .shutdown()
                .map_err(ImageError::io("write", "export stream"))
        })
        .await?
    }
}

fn invalid(reason: &str) -> ImageError {
    ImageError::InvalidArchive {
        reason: reason.to_string(),
    }
}

// ----- staging -----

#[derive(Clone, Debug)]
struct StagedFile {
    path: PathBuf,
    digest: String,
    size: u64,
}

struct Staged {
    files: HashMap<String, StagedFile>,
}

impl Staged {
    fn get(&self, name: &str) -> Result<&StagedFile, ImageError> {
        normalize_name(name)
            .and_then(|n| self.files.get(&n))
            .ok_or_else(|| invalid(&format!("{name} is missing from the archive")))
    }

    /// The staged `blobs/sha256/<hex>` for `digest`, checked against its name.
    fn blob(&self, digest: &str) -> Result<&StagedFile, ImageError> {
        let name = format!("blobs/sha256/{}", digest_hex(digest)?);
        let file = self
            .files
            .get(&name)
            .ok_or_else(|| invalid(&format!("blob {digest} is missing from the archive")))?;
        if file.digest != digest {
            return Err(ImageError::DigestMismatch {
                what: format!("archive file {name}"),
                expected: digest.to_string(),
                actual: file.digest.clone(),
            });
        }
        Ok(file)
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        file: &StagedFile,
    ) -> Result<T, ImageError> {
        if file.size > MAX_JSON {
            return Err(invalid(&format!("{what} is larger than {MAX_JSON} bytes")));
        }
        let bytes = fs::read(&file.path).map_err(ImageError::io("read", &file.path))?;
        serde_json::from_slice(&bytes).map_err(|e| invalid(&format!("{what}: {e}")))
    }

    fn read_bytes(&self, what: &str, file: &StagedFile) -> Result<Vec<u8>, ImageError> {
        if file.size > MAX_JSON {
            return Err(invalid(&format!("{what} is larger than {MAX_JSON} bytes")));
        }
        fs::read(&file.path).map_err(ImageError::io("read", &file.path))
    }
}

/// Copies every regular file of the (maybe gzipped) tar stream into `dir`, hashing it.
fn stage(reader: impl Read, dir: &Path) -> Result<Staged, ImageError> {
    let corrupt = |e: std::io::Error| invalid(&format!("cannot read archive: {e}"));
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let gzip = buffered
        .fill_buf()
        .map_err(corrupt)?
        .starts_with(&[0x1f, 0x8b]);
    let plain: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut archive = tar::Archive::new(plain);
    let mut files = HashMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    for (seq, entry) in archive.entries().map_err(corrupt)?.enumerate() {
        let mut entry = entry.map_err(corrupt)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(name) = normalize_name(&raw) else {
            tracing::debug!(entry = %raw, "skipping archive entry outside the archive root");
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let path = dir.join(format!("{seq:08}"));
                let mut out = fs::File::create(&path).map_err(ImageError::io("create", &path))?;
                let mut hashing = HashingReader::new(&mut entry);
                std::io::copy(&mut hashing, &mut out).map_err(corrupt)?;
                let (digest, size) = hashing.finish().map_err(corrupt)?;
                out.flush().map_err(ImageError::io("write", &path))?;
                files.insert(name, StagedFile { path, digest, size });
            }
            kind @ (tar::EntryType::Symlink | tar::EntryType::Link) => {
                let Some(target) = entry.link_name_bytes() else {
                    continue;
                };
                let target = String::from_utf8_lossy(&target).into_owned();
                // Symlinks resolve against the link's directory, hard links against the
                // archive root; all lexically, nothing touches the filesystem.
                let base = match kind {
                    tar::EntryType::Symlink if !target.starts_with('/') => {
                        name.rsplit_once('/').map_or("", |(parent, _)| parent)
                    }
                    _ => "",
                };
                if let Some(target) = normalize_name(&format!("{base}/{target}")) {
                    links.push((name, target));
                }
            }
            tar::EntryType::Directory => {}
            other => tracing::debug!(entry = %name, kind = ?other, "skipping archive entry"),
        }
    }
    // Links may point to links: resolve a few hops.
    for _ in 0..8 {
        let mut changed = false;
        for (name, target) in &links {
            if !files.contains_key(name)
                && let Some(file) = files.get(target).cloned()
            {
                files.insert(name.clone(), file);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    Ok(Staged { files })
}

/// Lexically normalizes an archive name: no leading `/` or `./`, `.` dropped, `..`
/// applied; `None` if it climbs above the root or is empty.
fn normalize_name(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

// ----- planning -----

struct PlannedLayer {
    diff_id: String,
    blob_digest: String,
    media_type: String,
    size: u64,
    file: PathBuf,
}

struct PlannedImage {
    id: String,
    config: oci_spec::image::ImageConfiguration,
    config_file: PathBuf,
    manifest_digest: String,
    manifest_media_type: String,
    /// The manifest as staged, or (docker archives) synthesized here.
    manifest: ManifestSource,
    layers: Vec<PlannedLayer>,
    names: Vec<String>,
}

enum ManifestSource {
    Staged(PathBuf),
    Synthesized(Vec<u8>),
}

impl PlannedImage {
    /// Staged files to move into `blobs/`, by digest.
    fn blob_files(&self) -> Vec<(String, PathBuf)> {
        let mut files = vec![(self.id.clone(), self.config_file.clone())];
        if let ManifestSource::Staged(path) = &self.manifest {
            files.push((self.manifest_digest.clone(), path.clone()));
        }
        for l in &self.layers {
            files.push((l.blob_digest.clone(), l.file.clone()));
        }
        files
    }

    fn synthesized_manifest(&self) -> Option<(String, Vec<u8>)> {
        match &self.manifest {
            ManifestSource::Synthesized(bytes) => {
                Some((self.manifest_digest.clone(), bytes.clone()))
            }
            ManifestSource::Staged(_) => None,
        }
    }
}

/// Docker's `manifest.json` entry.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn plan(staged: &Staged, platform: &Platform) -> Result<Vec<PlannedImage>, ImageError> {
    let docker_manifest: Option<Vec<DockerManifestEntry>> = match staged.files.get("manifest.json")
    {
        Some(f) => Some(staged.read_json("manifest.json", f)?),
        None => None,
    };
    if let Some(index) = staged.files.get("index.json") {
        let index: Index = staged.read_json("index.json", index)?;
        // RepoTags of Docker's manifest.json name OCI images that lack annotations.
        let mut docker_tags: HashMap<String, Vec<String>> = HashMap::new();
        for entry in docker_manifest.iter().flatten() {
            if let Ok(config) = staged.get(&entry.config) {
                docker_tags
                    .entry(config.digest.clone())
                    .or_default()
                    .extend(entry.repo_tags.clone().unwrap_or_default());
            }
        }
        plan_oci(staged, &index, &docker_tags, platform)
    } else if let Some(entries) = docker_manifest {
        entries.iter().map(|e| plan_docker(staged, e)).collect()
    } else {
        Err(invalid(
            "neither index.json (OCI layout) nor manifest.json (docker save) found",
        ))
    }
}

fn plan_oci(
    staged: &Staged,
    index: &Index,
    docker_tags: &HashMap<String, Vec<String>>,
    platform: &Platform,
) -> Result<Vec<PlannedImage>, ImageError> {
    // Manifests in index order, with the names the index gives them.
    let mut manifests: Vec<(Descriptor, Vec<OciNames>)> = Vec::new();
    for desc in &index.manifests {
        let manifest = match desc.media_type.as_str() {
            oci::OCI_INDEX | oci::DOCKER_MANIFEST_LIST => {
                let nested: Index = staged.read_json(&desc.digest, staged.blob(&desc.digest)?)?;
                select_manifest(&nested.manifests, platform)
                    .ok_or_else(|| ImageError::Platform {
                        wanted: platform.to_string(),
                        available: describe(&nested.manifests),
                    })?
                    .clone()
            }
            oci::OCI_MANIFEST | oci::DOCKER_MANIFEST => desc.clone(),
            other => {
                tracing::debug!(digest = %desc.digest, media_type = other, "skipping index entry");
                continue;
            }
        };
        let names = oci_names(desc)?;
        match manifests
            .iter_mut()
            .find(|(m, _)| m.digest == manifest.digest)
        {
            Some((_, existing)) => existing.push(names),
            None => manifests.push((manifest, vec![names])),
        }
    }
    let mut plans: Vec<PlannedImage> = Vec::new();
    for (desc, entry_names) in manifests {
        let file = staged.blob(&desc.digest)?;
        let bytes = staged.read_bytes(&desc.digest, file)?;
        let (manifest, media_type) =
            match oci::parse_manifest(&bytes, &desc.digest, Some(&desc.media_type))? {
                AnyManifest::Image(m, media_type) => (m, media_type),
                AnyManifest::Index(_) => {
                    return Err(invalid(&format!(
                        "{} is an index where a manifest was expected",
                        desc.digest
                    )));
                }
            };
        let config_file = staged.blob(&manifest.config.digest)?;
        let config = parse_config(staged, &manifest.config.digest, config_file)?;
        // Per index entry: containerd's name, else Docker's RepoTags, else a full
        // ref.name.
        let mut repo_tags = Vec::new();
        for tag in docker_tags
            .get(&manifest.config.digest)
            .into_iter()
            .flatten()
        {
            repo_tags.push(reference::parse_tagged(tag)?.whole());
        }
        let mut names = Vec::new();
        for n in entry_names {
            if let Some(name) = n.containerd {
                names.push(name);
            } else if !repo_tags.is_empty() {
                names.extend(repo_tags.iter().cloned());
            } else if let Some(name) = n.ref_name {
                names.push(name);
            }
        }
        let diff_ids = config.rootfs().diff_ids().clone();
        check_layer_count(
            &manifest.config.digest,
            diff_ids.len(),
            manifest.layers.len(),
        )?;
        let mut layers = Vec::new();
        for (l, diff_id) in manifest.layers.iter().zip(diff_ids) {
            digest_hex(&diff_id)?;
            let file = staged.blob(&l.digest)?;
            layers.push(PlannedLayer {
                diff_id,
                blob_digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: file.size,
                file: file.path.clone(),
            });
        }
        dedup(&mut names);
        match plans.iter_mut().find(|p| p.id == manifest.config.digest) {
            // The same image under another manifest: one image, all names.
            Some(p) => p.names.extend(names),
            None => plans.push(PlannedImage {
                id: manifest.config.digest.clone(),
                config,
                config_file: config_file.path.clone(),
                manifest_digest: desc.digest.clone(),
                manifest_media_type: media_type,
                manifest: ManifestSource::Staged(file.path.clone()),
                layers,
                names,
            }),
        }
    }
    Ok(plans)
}

/// The names one index entry offers.
#[derive(Debug, Default, PartialEq, Eq)]
struct OciNames {
    /// `io.containerd.image.name`, normalized (none if it is a digest reference).
    containerd: Option<String>,
    /// `org.opencontainers.image.ref.name` when it is a full reference (contains `/` or
    /// `:`); a bare tag such as `latest` names nothing.
    ref_name: Option<String>,
}

fn oci_names(desc: &Descriptor) -> Result<OciNames, ImageError> {
    let annotations = desc.annotations.clone().unwrap_or_default();
    let containerd = match annotations.get(ANNOTATION_IMAGE_NAME) {
        Some(name) => {
            let r = reference::parse(name)?;
            // A digest-only name (containerd uses them) is no tag.
            r.digest().is_none().then(|| r.whole())
        }
        None => None,
    };
    let ref_name = annotations
        .get(ANNOTATION_REF_NAME)
        .filter(|n| n.contains('/') || n.contains(':'))
        .and_then(|n| reference::parse(n).ok())
        .filter(|r| r.digest().is_none())
        .map(|r| r.whole());
    Ok(OciNames {
        containerd,
        ref_name,
    })
}

fn plan_docker(staged: &Staged, entry: &DockerManifestEntry) -> Result<PlannedImage, ImageError> {
    let config_file = staged.get(&entry.config)?;
    check_named_digest(&entry.config, config_file)?;
    let id = config_file.digest.clone();
    let config = parse_config(staged, &id, config_file)?;
    let diff_ids = config.rootfs().diff_ids().clone();
    check_layer_count(&id, diff_ids.len(), entry.layers.len())?;
    let mut layers = Vec::new();
    for (name, diff_id) in entry.layers.iter().zip(diff_ids) {
        digest_hex(&diff_id)?;
        let file = staged.get(name)?;
        check_named_digest(name, file)?;
        let media_type = sniff_layer_media_type(&file.path)?;
        if media_type == oci::OCI_LAYER && file.digest != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("layer {name} (diff-id from config {id})"),
                expected: diff_id,
                actual: file.digest.clone(),
            });
        }
        layers.push(PlannedLayer {
            diff_id,
            blob_digest: file.digest.clone(),
            media_type: media_type.to_string(),
            size: file.size,
            file: file.path.clone(),
        });
    }
    // docker save has no manifest: make the OCI manifest a registry would have.
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::OCI_MANIFEST.to_string()),
        config: Descriptor {
            media_type: oci::OCI_CONFIG.to_string(),
            digest: id.clone(),
            size: config_file.size,
            annotations: None,
            platform: None,
        },
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.blob_digest.clone(),
                size: l.size,
                annotations: None,
                platform: None,
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| invalid(&e.to_string()))?;
    let mut names = Vec::new();
    for tag in entry.repo_tags.iter().flatten() {
        names.push(reference::parse_tagged(tag)?.whole());
    }
    dedup(&mut names);
    Ok(PlannedImage {
        id,
        config,
        config_file: config_file.path.clone(),
        manifest_digest: sha256_digest(&bytes),
        manifest_media_type: oci::OCI_MANIFEST.to_string(),
        manifest: ManifestSource::Synthesized(bytes),
        layers,
        names,
    })
}

/// Files named by their digest (`blobs/sha256/<hex>`, `<hex>.json`) must match it.
fn check_named_digest(name: &str, file: &StagedFile) -> Result<(), ImageError> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let stem = base.strip_suffix(".json").unwrap_or(base);
    let named = name.starts_with("blobs/sha256/") || base.ends_with(".json");
    if named
        && stem.len() == 64
        && reference::is_hex(stem)
        && file.digest != format!("sha256:{stem}")
    {
        return Err(ImageError::DigestMismatch {
            what: format!("archive file {name}"),
            expected: format!("sha256:{stem}"),
            actual: file.digest.clone(),
        });
    }
    Ok(())
}

fn parse_config(
    staged: &Staged,
    digest: &str,
    file: &StagedFile,
) -> Result<oci_spec::image::ImageConfiguration, ImageError> {
    let bytes = staged.read_bytes(digest, file)?;
    serde_json::from_slice(&bytes).map_err(|e| ImageError::InvalidContent {
        what: "config",
        digest: digest.to_string(),
        reason: e.to_string(),
    })
}

fn check_layer_count(config: &str, diff_ids: usize, layers: usize) -> Result<(), ImageError> {
    if diff_ids == layers {
        Ok(())
    } else {
        Err(ImageError::InvalidContent {
            what: "config",
            digest: config.to_string(),
            reason: format!("{diff_ids} diff-ids for {layers} layers"),
        })
    }
}

/// Media type of a layer file from its magic number.
fn sniff_layer_media_type(path: &Path) -> Result<&'static str, ImageError> {
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path).map_err(ImageError::io("open", path))?;
    let mut n = 0;
    while n < magic.len() {
        match f
            .read(&mut magic[n..])
            .map_err(ImageError::io("read", path))?
        {
            0 => break,
            k => n += k,
        }
    }
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => oci::OCI_LAYER_GZIP,
        [0x28, 0xb5, 0x2f, 0xfd] => oci::OCI_LAYER_ZSTD,
        _ => oci::OCI_LAYER,
    })
}

fn dedup(names: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
}

// ----- export -----

fn write_export(
    store: &ImageStore,
    picks: &[(ImageRecord, Option<String>)],
    out: &mut impl Write,
) -> Result<(), ImageError> {
    let io_err = ImageError::io("write", "export stream");
    let blob_size = |digest: &str| -> Result<u64, ImageError> {
        let path = store.blob_file(digest_hex(digest)?);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(ImageError::io("stat", &path))
    };

    let mut index_entries = Vec::new();
    // manifest.json groups the tags of one image in one entry.
    let mut docker: Vec<(String, DockerManifestEntry)> = Vec::new();
    for (image, tag) in picks {
        let annotations = tag.as_ref().map(|t| {
            let mut a = BTreeMap::new();
            a.insert(ANNOTATION_IMAGE_NAME.to_string(), t.clone());
            if let Some(short) = reference::tag(t) {
                a.insert(ANNOTATION_REF_NAME.to_string(), short);
            }
            a
        });
        index_entries.push(Descriptor {
            media_type: image.manifest_media_type.clone(),
            digest: image.manifest_digest.clone(),
            size: blob_size(&image.manifest_digest)?,
            annotations,
            platform: None,
        });
        let blob_name = |d: &str| format!("blobs/sha256/{}", hex_part(d));
        let entry = match docker.iter_mut().find(|(id, _)| *id == image.id) {
            Some((_, e)) => e,
            None => {
                docker.push((
                    image.id.clone(),
                    DockerManifestEntry {
                        config: blob_name(&image.id),
                        repo_tags: None,
                        layers: image
                            .layers
                            .iter()
                            .map(|l| blob_name(&l.blob_digest))
                            .collect(),
                    },
                ));
                &mut docker.last_mut().ok_or_else(|| invalid("empty export"))?.1
            }
        };
        if let Some(t) = tag {
            entry
                .repo_tags
                .get_or_insert_with(Vec::new)
                .push(familiar(t));
        }
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(oci::OCI_INDEX.to_string()),
        manifests: index_entries,
    };
    let docker: Vec<DockerManifestEntry> = docker.into_iter().map(|(_, e)| e).collect();

    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    let mut append = |name: &str, size: u64, data: &mut dyn Read| -> Result<(), ImageError> {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(0);
        builder
            .append_data(&mut header, name, data)
            .map_err(ImageError::io("write", "export stream"))
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append("oci-layout", layout.len() as u64, &mut &layout[..])?;
    let index_bytes = to_json(&index)?;
    append(
        "index.json",
        index_bytes.len() as u64,
        &mut &index_bytes[..],
    )?;
    let docker_bytes = to_json(&docker)?;
    append(
        "manifest.json",
        docker_bytes.len() as u64,
        &mut &docker_bytes[..],
    )?;
    let mut seen = BTreeSet::new();
    for (image, _) in picks {
        let digests = [image.manifest_digest.clone(), image.id.clone()]
            .into_iter()
            .chain(image.layers.iter().map(|l| l.blob_digest.clone()));
        for digest in digests {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let path = store.blob_file(digest_hex(&digest)?);
            let mut file = fs::File::open(&path).map_err(ImageError::io("open", &path))?;
            let size = file
                .metadata()
                .map_err(ImageError::io("stat", &path))?
                .len();
            append(
                &format!("blobs/sha256/{}", hex_part(&digest)),
                size,
                &mut file,
            )?;
        }
    }
    builder.into_inner().and_then(|w| w.flush()).map_err(io_err)
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(|e| invalid(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_lexically() {
        assert_eq!(normalize_name("./a/b").as_deref(), Some("a/b"));
        assert_eq!(normalize_name("/a//b/").as_deref(), Some("a/b"));
        assert_eq!(normalize_name("a/../b").as_deref(), Some("b"));
        assert_eq!(normalize_name("abc/../../etc/passwd"), None);
        assert_eq!(normalize_name("."), None);
        assert_eq!(normalize_name("x/../../y"), None);
    }

    fn desc(annotations: &[(&str, &str)]) -> Descriptor {
        Descriptor {
            media_type: oci::OCI_MANIFEST.into(),
            digest: sha256_digest(b"m"),
            size: 1,
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            platform: None,
        }
    }

    #[test]
    fn oci_naming_precedence() {
        let names = |d: &Descriptor| {
            let n = oci_names(d).unwrap();
            (n.containerd, n.ref_name)
        };
        let some = |s: &str| Some(s.to_string());
        let both = desc(&[
            (ANNOTATION_IMAGE_NAME, "docker.io/library/busybox:1"),
            (ANNOTATION_REF_NAME, "example.com/other:2"),
        ]);
        assert_eq!(
            names(&both),
            (
                some("docker.io/library/busybox:1"),
                some("example.com/other:2")
            )
        );
        let with_tag = desc(&[(ANNOTATION_REF_NAME, "busybox:3")]);
        assert_eq!(
            names(&with_tag),
            (None, some("docker.io/library/busybox:3"))
        );
        for bare in ["1", "latest"] {
            assert_eq!(names(&desc(&[(ANNOTATION_REF_NAME, bare)])), (None, None));
        }
        let by_digest = format!("docker.io/library/busybox@{}", sha256_digest(b"x"));
        assert_eq!(
            names(&desc(&[(ANNOTATION_IMAGE_NAME, &by_digest)])),
            (None, None)
        );
        assert_eq!(names(&desc(&[])), (None, None));
    }

    #[test]
    fn named_digests_are_checked() {
        let file = StagedFile {
            path: PathBuf::from("/nonexistent"),
            digest: sha256_digest(b"x"),
            size: 1,
        };
        let hex = hex_part(&file.digest).to_string();
        assert!(check_named_digest(&format!("blobs/sha256/{hex}"), &file).is_ok());
        assert!(check_named_digest(&format!("{hex}.json"), &file).is_ok());
        assert!(check_named_digest("abc/layer.tar", &file).is_ok());
        let other = "0".repeat(64);
        assert!(matches!(
            check_named_digest(&format!("blobs/sha256/{other}"), &file),
            Err(ImageError::DigestMismatch { .. })
        ));
        assert!(check_named_digest(&format!("{other}.json"), &file).is_err());
    }
}
