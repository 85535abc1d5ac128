//! OCI / Docker test images built from Debian's static busybox (`/bin/busybox`).
//!
//! Output is deterministic: tar entries are sorted, every header carries [`FIXED_MTIME`],
//! gzip headers carry no name or time and the config has a fixed `created`, so the same
//! builder always yields the same digests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Host path of the static busybox the test images are made from.
pub const BUSYBOX: &str = "/bin/busybox";
/// mtime of every tar entry we write (2024-01-01T00:00:00Z).
pub const FIXED_MTIME: u64 = 1_704_067_200;
/// `created` of every image config and history entry.
pub const CREATED: &str = "2024-01-01T00:00:00Z";
/// OCI image manifest media type.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Annotation naming the reference (tag) of a manifest in an OCI layout's index.json.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation containerd uses for the full image name in an OCI layout's index.json.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Compression of a layer blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar, media type `application/vnd.oci.image.layer.v1.tar`.
    None,
    /// gzip, `…tar+gzip`. The default.
    Gzip,
    /// zstd (level 3), `…tar+zstd`.
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    fn apply(self, tar: &[u8]) -> Result<Vec<u8>> {
        Ok(match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip => gzip(tar)?,
            Compression::Zstd => zstd::encode_all(tar, 3).context("zstd compression")?,
        })
    }
}

/// The host architecture as an OCI platform name (`amd64`, `arm64`, …).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Write a minimal busybox root filesystem into `dir` (which may exist): `/bin/busybox`
/// with an absolute `/bin/busybox` symlink per applet, `/etc/passwd` (root, daemon, nobody,
/// `tester` 1000:1000), `/etc/group` (root, daemon, tester 1000, `extra` 2000 with member
/// tester, nogroup), `/tmp` (1777), `/root` (0700), `/home/tester` (owned 1000:1000) and
/// empty `/proc`, `/sys`, `/dev`. No `/etc/hostname`. Needs root (for the chown).
pub fn busybox_rootfs(dir: &Path) -> Result<()> {
    let mkdir = |rel: &str, mode: u32| -> Result<PathBuf> {
        let p = dir.join(rel);
        fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", p.display()))?;
        Ok(p)
    };
    for (rel, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
    ] {
        mkdir(rel, mode)?;
    }
    for (rel, mode) in [
        ("dev", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
    ] {
        mkdir(rel, mode)?;
    }
    let home = mkdir("home/tester", 0o755)?;
    chown(&home, Some(1000), Some(1000)).with_context(|| format!("chown {}", home.display()))?;

    let bb = dir.join("bin/busybox");
    fs::copy(BUSYBOX, &bb).with_context(|| format!("copy {BUSYBOX} (busybox-static)"))?;
    fs::set_permissions(&bb, fs::Permissions::from_mode(0o755))?;
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .context("busybox --list")?;
    if !out.status.success() {
        bail!("busybox --list failed: {}", out.status);
    }
    for applet in String::from_utf8_lossy(&out.stdout).lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = dir.join("bin").join(applet);
        if fs::symlink_metadata(&link).is_err() {
            symlink("/bin/busybox", &link)
                .with_context(|| format!("symlink {}", link.display()))?;
        }
    }
    let passwd = "root:x:0:0:root:/root:/bin/sh\n\
                  daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
                  tester:x:1000:1000:tester:/home/tester:/bin/sh\n\
                  nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    let group = "root:x:0:\ndaemon:x:1:\ntester:x:1000:\nextra:x:2000:tester\nnogroup:x:65534:\n";
    for (rel, text) in [("etc/passwd", passwd), ("etc/group", group)] {
        let p = dir.join(rel);
        fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// Tar a directory tree (not including the root itself) deterministically: entries sorted
/// by name, mtime [`FIXED_MTIME`], modes/uid/gid as on disk, symlinks as symlinks,
/// hard links (same inode seen twice) as tar hard links, char/block devices and fifos kept.
pub fn tar_dir(root: &Path) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut seen = HashMap::new();
    tar_walk(root, Path::new(""), &mut b, &mut seen)?;
    Ok(b.into_inner()?)
}

fn tar_walk(
    root: &Path,
    rel: &Path,
    b: &mut tar::Builder<Vec<u8>>,
    seen: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names = fs::read_dir(&dir)
        .with_context(|| format!("read dir {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    for name in names {
        let rel = rel.join(name);
        let full = root.join(&rel);
        let md = fs::symlink_metadata(&full).with_context(|| format!("stat {}", full.display()))?;
        let mut h = tar::Header::new_gnu();
        h.set_mode(md.mode() & 0o7777);
        h.set_uid(md.uid().into());
        h.set_gid(md.gid().into());
        h.set_mtime(FIXED_MTIME);
        h.set_size(0);
        let ft = md.file_type();
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, &rel, io::empty())?;
            tar_walk(root, &rel, b, seen)?;
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, &rel, fs::read_link(&full)?)?;
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = seen.get(&(md.dev(), md.ino())) {
                    h.set_entry_type(tar::EntryType::Link);
                    b.append_link(&mut h, &rel, first)?;
                    continue;
                }
                seen.insert((md.dev(), md.ino()), rel.clone());
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(md.len());
            let f = fs::File::open(&full).with_context(|| format!("open {}", full.display()))?;
            b.append_data(&mut h, &rel, f)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            });
            let rdev = md.rdev();
            // glibc's gnu_dev_major / gnu_dev_minor encoding.
            h.set_device_major((((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as u32)?;
            h.set_device_minor(((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32)?;
            b.append_data(&mut h, &rel, io::empty())?;
        }
        // Sockets cannot be archived; skip them.
    }
    Ok(())
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    // GzEncoder writes mtime 0 and no file name: deterministic.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data)?;
    Ok(e.finish()?)
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[derive(Clone, Debug)]
enum LayerSource {
    Busybox,
    Dir(PathBuf),
    Tar(Vec<u8>),
    Files(Vec<(String, Vec<u8>, u32)>),
}

impl LayerSource {
    fn tar(&self) -> Result<Vec<u8>> {
        match self {
            LayerSource::Busybox => {
                let tmp = tempfile::tempdir()?;
                busybox_rootfs(tmp.path())?;
                tar_dir(tmp.path())
            }
            LayerSource::Dir(p) => tar_dir(p),
            LayerSource::Tar(t) => Ok(t.clone()),
            LayerSource::Files(files) => files_tar(files),
        }
    }
}

fn files_tar(files: &[(String, Vec<u8>, u32)]) -> Result<Vec<u8>> {
    let mut dirs = BTreeSet::new();
    let mut sorted: Vec<_> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, _, _) in &sorted {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            p = d.parent();
        }
    }
    let mut b = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(FIXED_MTIME);
        h.set_size(size);
        h
    };
    for d in dirs {
        b.append_data(
            &mut header(tar::EntryType::Directory, 0o755, 0),
            d,
            io::empty(),
        )?;
    }
    for (path, data, mode) in sorted {
        let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
        b.append_data(&mut h, path, data.as_slice())?;
    }
    Ok(b.into_inner()?)
}

/// Health check options of [`ImageBuilder::healthcheck`]; `None` leaves a field out.
#[derive(Clone, Debug, Default)]
pub struct HealthcheckOptions {
    /// Time between probes.
    pub interval: Option<Duration>,
    /// Time after which one probe counts as failed.
    pub timeout: Option<Duration>,
    /// Grace period after start during which failures do not count.
    pub start_period: Option<Duration>,
    /// Consecutive failures before the container is unhealthy.
    pub retries: Option<u32>,
}

/// Digests and documents of one image as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// `sha256:…` of the config blob.
    pub config_digest: String,
    /// `sha256:…` of the manifest blob.
    pub manifest_digest: String,
    /// `sha256:…` of each uncompressed layer tar, bottom first (the config's `diff_ids`).
    pub diff_ids: Vec<String>,
    /// `sha256:…` of each layer blob as stored (compressed), bottom first.
    pub layer_digests: Vec<String>,
    /// The manifest bytes (OCI image manifest).
    pub manifest_json: Vec<u8>,
    /// The config bytes.
    pub config_json: Vec<u8>,
}

struct Assembled {
    built: BuiltImage,
    /// Blob bytes by digest: config, manifest, layers.
    blobs: Vec<(String, Vec<u8>)>,
    /// Uncompressed layer tars, bottom first.
    tars: Vec<Vec<u8>>,
}

/// Builds a test image: layers plus the runtime config Docker and OCI images carry.
///
/// Layers are materialised when an image is written, so a `layer_dir` directory must still
/// exist then. Compression: [`ImageBuilder::compression`] sets the image-wide default used
/// for every layer (gzip unless set); [`ImageBuilder::layer_compression`] overrides it for
/// the most recently added layer.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    layers: Vec<(LayerSource, Option<Compression>)>,
    compression: Compression,
    architecture: String,
    os: String,
    variant: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<String>,
    user: Option<String>,
    workdir: Option<String>,
    stop_signal: Option<String>,
    healthcheck: Option<Value>,
    exposed_ports: BTreeSet<String>,
    labels: BTreeMap<String, String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl ImageBuilder {
    /// An image with no layers and an empty config, for the host architecture, os linux.
    pub fn empty() -> Self {
        ImageBuilder {
            layers: Vec::new(),
            compression: Compression::Gzip,
            architecture: host_arch().to_string(),
            os: "linux".to_string(),
            variant: None,
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            user: None,
            workdir: None,
            stop_signal: None,
            healthcheck: None,
            exposed_ports: BTreeSet::new(),
            labels: BTreeMap::new(),
        }
    }

    /// One layer holding [`busybox_rootfs`]; `PATH` set as Docker does, `Cmd ["sh"]`.
    pub fn busybox() -> Self {
        let mut b = Self::empty();
        b.layers.push((LayerSource::Busybox, None));
        b.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .cmd(&["sh"])
    }

    /// Add a layer made from a directory tree (modes, ownership, symlinks, hard links kept).
    pub fn layer_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.layers.push((LayerSource::Dir(path.into()), None));
        self
    }

    /// Add a layer from a raw uncompressed tar supplied by the caller (e.g. [`crate::hostile`]).
    pub fn layer_tar(mut self, tar: Vec<u8>) -> Self {
        self.layers.push((LayerSource::Tar(tar), None));
        self
    }

    /// Add a layer of regular files `(path, contents, mode)`, owned by root; parent
    /// directories are added as 0755 root entries. A leading `/` is ignored.
    pub fn layer_files<C: AsRef<[u8]>>(mut self, files: &[(&str, C, u32)]) -> Self {
        let files = files
            .iter()
            .map(|(p, c, m)| {
                (
                    p.trim_start_matches('/').to_string(),
                    c.as_ref().to_vec(),
                    *m,
                )
            })
            .collect();
        self.layers.push((LayerSource::Files(files), None));
        self
    }

    /// Image-wide layer compression (default gzip), for layers without their own.
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }

    /// Compression of the most recently added layer only (no effect without layers).
    pub fn layer_compression(mut self, c: Compression) -> Self {
        if let Some(last) = self.layers.last_mut() {
            last.1 = Some(c);
        }
        self
    }

    /// Config `Entrypoint`.
    pub fn entrypoint(mut self, argv: &[&str]) -> Self {
        self.entrypoint = Some(strings(argv));
        self
    }

    /// Config `Cmd`.
    pub fn cmd(mut self, argv: &[&str]) -> Self {
        self.cmd = Some(strings(argv));
        self
    }

    /// Set (or replace) one `Env` variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        let prefix = format!("{key}=");
        self.env.retain(|e| !e.starts_with(&prefix));
        self.env.push(format!("{key}={value}"));
        self
    }

    /// Config `User` (`name`, `uid`, `uid:gid`, …).
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }

    /// Config `WorkingDir`.
    pub fn workdir(mut self, dir: &str) -> Self {
        self.workdir = Some(dir.to_string());
        self
    }

    /// Config `StopSignal` (e.g. `SIGUSR1`).
    pub fn stop_signal(mut self, sig: &str) -> Self {
        self.stop_signal = Some(sig.to_string());
        self
    }

    /// Config `Healthcheck` in Docker's form: `test` like `["CMD-SHELL", "true"]`,
    /// durations stored in nanoseconds.
    pub fn healthcheck(mut self, test: &[&str], opts: HealthcheckOptions) -> Self {
        let mut hc = serde_json::Map::new();
        hc.insert("Test".into(), json!(test));
        for (key, d) in [
            ("Interval", opts.interval),
            ("Timeout", opts.timeout),
            ("StartPeriod", opts.start_period),
        ] {
            if let Some(d) = d {
                hc.insert(key.into(), json!(d.as_nanos() as u64));
            }
        }
        if let Some(r) = opts.retries {
            hc.insert("Retries".into(), json!(r));
        }
        self.healthcheck = Some(Value::Object(hc));
        self
    }

    /// Add an `ExposedPorts` entry such as `80/tcp`.
    pub fn exposed_port(mut self, port: &str) -> Self {
        self.exposed_ports.insert(port.to_string());
        self
    }

    /// Add a config label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// Platform architecture (OCI name: `amd64`, `arm64`, …); defaults to the host's.
    pub fn architecture(mut self, arch: &str) -> Self {
        self.architecture = arch.to_string();
        self
    }

    /// Platform variant (e.g. `v8`, `v7`).
    pub fn variant(mut self, variant: &str) -> Self {
        self.variant = Some(variant.to_string());
        self
    }

    fn platform(&self) -> Value {
        let mut p = json!({"architecture": self.architecture, "os": self.os});
        if let Some(v) = &self.variant {
            p["variant"] = json!(v);
        }
        p
    }

    fn assemble(&self, force: Option<Compression>) -> Result<Assembled> {
        let mut blobs = Vec::new();
        let mut tars = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_descs = Vec::new();
        let mut layer_digests = Vec::new();
        for (src, comp) in &self.layers {
            let tar = src.tar()?;
            let c = force.or(*comp).unwrap_or(self.compression);
            let blob = c.apply(&tar)?;
            let digest = sha256_digest(&blob);
            diff_ids.push(sha256_digest(&tar));
            layer_descs
                .push(json!({"mediaType": c.media_type(), "digest": digest, "size": blob.len()}));
            layer_digests.push(digest.clone());
            blobs.push((digest, blob));
            tars.push(tar);
        }
        let mut cfg = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                cfg.insert(k.into(), v);
            }
        };
        put("Env", (!self.env.is_empty()).then(|| json!(self.env)));
        put("Entrypoint", self.entrypoint.as_ref().map(|v| json!(v)));
        put("Cmd", self.cmd.as_ref().map(|v| json!(v)));
        put("User", self.user.as_ref().map(|v| json!(v)));
        put("WorkingDir", self.workdir.as_ref().map(|v| json!(v)));
        put("StopSignal", self.stop_signal.as_ref().map(|v| json!(v)));
        put("Healthcheck", self.healthcheck.clone());
        let ports: serde_json::Map<_, _> = self
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), json!({})))
            .collect();
        put(
            "ExposedPorts",
            (!ports.is_empty()).then_some(Value::Object(ports)),
        );
        put(
            "Labels",
            (!self.labels.is_empty()).then(|| json!(self.labels)),
        );
        let history: Vec<Value> = (0..self.layers.len())
            .map(|i| json!({"created": CREATED, "created_by": format!("shoal-testkit layer {i}")}))
            .collect();
        let mut config = json!({
            "created": CREATED,
            "architecture": self.architecture,
            "os": self.os,
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        if let Some(v) = &self.variant {
            config["variant"] = json!(v);
        }
        let config_json = serde_json::to_vec(&config)?;
        let config_digest = sha256_digest(&config_json);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_json.len()},
            "layers": layer_descs,
        });
        let manifest_json = serde_json::to_vec(&manifest)?;
        let manifest_digest = sha256_digest(&manifest_json);
        blobs.push((config_digest.clone(), config_json.clone()));
        blobs.push((manifest_digest.clone(), manifest_json.clone()));
        let built = BuiltImage {
            config_digest,
            manifest_digest,
            diff_ids,
            layer_digests,
            manifest_json,
            config_json,
        };
        Ok(Assembled { built, blobs, tars })
    }

    /// Write (or add to) an OCI image layout in `dir`. index.json gets one manifest entry
    /// annotated with `org.opencontainers.image.ref.name` = `ref_name` and
    /// `io.containerd.image.name` = `containerd_name` when given; an existing entry with the
    /// same ref name is replaced, others are kept.
    pub fn write_oci_layout(
        &self,
        dir: &Path,
        ref_name: Option<&str>,
        containerd_name: Option<&str>,
    ) -> Result<BuiltImage> {
        let a = self.assemble(None)?;
        write_blobs(dir, &a.blobs)?;
        let mut desc = json!({
            "mediaType": MEDIA_MANIFEST,
            "digest": a.built.manifest_digest,
            "size": a.built.manifest_json.len(),
        });
        set_annotations(&mut desc, ref_name, containerd_name);
        add_to_index(dir, desc, ref_name)?;
        Ok(a.built)
    }

    /// [`ImageBuilder::write_oci_layout`] into a tar file at `path` (gzipped if `gzip`), as
    /// `skopeo copy … oci-archive:` or `ctr export` produce.
    pub fn write_oci_archive(
        &self,
        path: &Path,
        ref_name: Option<&str>,
        containerd_name: Option<&str>,
        gzip_it: bool,
    ) -> Result<BuiltImage> {
        let tmp = tempfile::tempdir()?;
        let built = self.write_oci_layout(tmp.path(), ref_name, containerd_name)?;
        let tar = tar_dir(tmp.path())?;
        let bytes = if gzip_it { gzip(&tar)? } else { tar };
        fs::write(path, bytes).with_context(|| format!("write {}", path.display()))?;
        Ok(built)
    }

    /// Write a classic `docker save` archive: `manifest.json`, `<config hex>.json`,
    /// `<id>/layer.tar` (always uncompressed, plus `VERSION` and `json`) and `repositories`.
    /// Layer ids are opaque (sha256 of the chain of diff ids). The returned manifest fields
    /// describe the equivalent OCI manifest with uncompressed layers (the archive holds no
    /// manifest blob); `layer_digests` then equal `diff_ids`.
    pub fn write_docker_archive(
        &self,
        path: &Path,
        repo_tags: &[&str],
        gzip_it: bool,
    ) -> Result<BuiltImage> {
        let a = self.assemble(Some(Compression::None))?;
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8], dir: bool| -> Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(if dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_mode(if dir { 0o755 } else { 0o644 });
            h.set_mtime(FIXED_MTIME);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data)?;
            Ok(())
        };
        let mut layer_paths = Vec::new();
        let mut parent: Option<String> = None;
        for (tar, diff) in a.tars.iter().zip(&a.built.diff_ids) {
            let chain = format!("{} {diff}", parent.as_deref().unwrap_or(""));
            let id = hex::encode(Sha256::digest(chain.as_bytes()));
            add(&id, b"", true)?;
            add(&format!("{id}/VERSION"), b"1.0", false)?;
            let mut v1 = json!({"id": id, "created": CREATED});
            if let Some(p) = &parent {
                v1["parent"] = json!(p);
            }
            add(&format!("{id}/json"), &serde_json::to_vec(&v1)?, false)?;
            add(&format!("{id}/layer.tar"), tar, false)?;
            layer_paths.push(format!("{id}/layer.tar"));
            parent = Some(id);
        }
        let config_name = format!(
            "{}.json",
            a.built.config_digest.trim_start_matches("sha256:")
        );
        add(&config_name, &a.built.config_json, false)?;
        let manifest =
            json!([{"Config": config_name, "RepoTags": repo_tags, "Layers": layer_paths}]);
        add("manifest.json", &serde_json::to_vec(&manifest)?, false)?;
        let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for tag in repo_tags {
            let (repo, t) = match tag.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t),
                _ => (*tag, "latest"),
            };
            let top = parent.clone().unwrap_or_default();
            repos
                .entry(repo.to_string())
                .or_default()
                .insert(t.to_string(), top);
        }
        add("repositories", &serde_json::to_vec(&repos)?, false)?;
        let tar = b.into_inner()?;
        let bytes = if gzip_it { gzip(&tar)? } else { tar };
        fs::write(path, bytes).with_context(|| format!("write {}", path.display()))?;
        Ok(a.built)
    }
}

fn set_annotations(desc: &mut Value, ref_name: Option<&str>, containerd_name: Option<&str>) {
    let mut ann = serde_json::Map::new();
    if let Some(r) = ref_name {
        ann.insert(ANNOTATION_REF_NAME.into(), json!(r));
    }
    if let Some(n) = containerd_name {
        ann.insert(ANNOTATION_CONTAINERD_NAME.into(), json!(n));
    }
    if !ann.is_empty() {
        desc["annotations"] = Value::Object(ann);
    }
}

fn write_blobs(dir: &Path, blobs: &[(String, Vec<u8>)]) -> Result<()> {
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).with_context(|| format!("create {}", blob_dir.display()))?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for (digest, data) in blobs {
        let p = blob_dir.join(digest.trim_start_matches("sha256:"));
        fs::write(&p, data).with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}

fn add_to_index(dir: &Path, desc: Value, ref_name: Option<&str>) -> Result<()> {
    let path = dir.join("index.json");
    let mut manifests: Vec<Value> = match fs::read(&path) {
        Ok(b) => {
            let idx: Value =
                serde_json::from_slice(&b).with_context(|| format!("parse {}", path.display()))?;
            idx["manifests"].as_array().cloned().unwrap_or_default()
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    if let Some(r) = ref_name {
        manifests.retain(|m| m["annotations"][ANNOTATION_REF_NAME].as_str() != Some(r));
    }
    manifests.push(desc);
    let index = json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests});
    fs::write(&path, serde_json::to_vec(&index)?)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Write an OCI layout in `dir` whose index.json names (annotation `ref_name`) an image
/// index blob listing each image's manifest with its `platform` (architecture, os,
/// variant). Returns the index blob's digest and each image, in order.
pub fn multi_arch_layout(
    dir: &Path,
    ref_name: &str,
    images: &[ImageBuilder],
) -> Result<(String, Vec<BuiltImage>)> {
    let mut built = Vec::new();
    let mut descs = Vec::new();
    for img in images {
        let a = img.assemble(None)?;
        write_blobs(dir, &a.blobs)?;
        descs.push(json!({
            "mediaType": MEDIA_MANIFEST,
            "digest": a.built.manifest_digest,
            "size": a.built.manifest_json.len(),
            "platform": img.platform(),
        }));
        built.push(a.built);
    }
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": descs}),
    )?;
    let digest = sha256_digest(&index);
    write_blobs(dir, &[(digest.clone(), index.clone())])?;
    let mut desc = json!({"mediaType": MEDIA_INDEX, "digest": digest, "size": index.len()});
    set_annotations(&mut desc, Some(ref_name), None);
    add_to_index(dir, desc, Some(ref_name))?;
    Ok((digest, built))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, Option<String>)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned());
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn same_input_same_digests() {
        let a = ImageBuilder::busybox()
            .label("x", "y")
            .assemble(None)
            .unwrap();
        let b = ImageBuilder::busybox()
            .label("x", "y")
            .assemble(None)
            .unwrap();
        assert_eq!(a.built, b.built);
        let c = ImageBuilder::busybox()
            .label("x", "z")
            .assemble(None)
            .unwrap();
        assert_ne!(a.built.config_digest, c.built.config_digest);
        assert_eq!(a.built.diff_ids, c.built.diff_ids);
    }

    #[test]
    fn busybox_layer_contents() {
        let a = ImageBuilder::busybox().assemble(None).unwrap();
        let e = entries(&a.tars[0]);
        let find = |p: &str| e.iter().find(|x| x.0.trim_end_matches('/') == p).cloned();
        assert_eq!(find("bin/busybox").unwrap().1, tar::EntryType::Regular);
        let sh = find("bin/sh").unwrap();
        assert_eq!(
            (sh.1, sh.2.as_deref()),
            (tar::EntryType::Symlink, Some("/bin/busybox"))
        );
        assert!(find("etc/hostname").is_none());
        let mut ar = tar::Archive::new(a.tars[0].as_slice());
        for ent in ar.entries().unwrap() {
            let ent = ent.unwrap();
            let p = ent.path().unwrap().to_string_lossy().into_owned();
            let h = ent.header();
            match p.trim_end_matches('/') {
                "tmp" => assert_eq!(h.mode().unwrap(), 0o1777),
                "home/tester" => assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1000, 1000)),
                _ => {}
            }
            assert_eq!(h.mtime().unwrap(), FIXED_MTIME);
        }
        let cfg: Value = serde_json::from_slice(&a.built.config_json).unwrap();
        assert_eq!(cfg["config"]["Cmd"], json!(["sh"]));
        assert_eq!(cfg["architecture"], json!(host_arch()));
        assert_eq!(cfg["rootfs"]["diff_ids"][0], json!(a.built.diff_ids[0]));
    }

    #[test]
    fn dir_layer_keeps_hardlinks_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        fs::write(d.path().join("sub/a"), b"hello").unwrap();
        fs::hard_link(d.path().join("sub/a"), d.path().join("z")).unwrap();
        symlink("sub/a", d.path().join("ln")).unwrap();
        let e = entries(&tar_dir(d.path()).unwrap());
        let names: Vec<_> = e
            .iter()
            .map(|x| (x.0.as_str(), x.1, x.2.as_deref()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("ln", tar::EntryType::Symlink, Some("sub/a")),
                ("sub", tar::EntryType::Directory, None),
                ("sub/a", tar::EntryType::Regular, None),
                ("z", tar::EntryType::Link, Some("sub/a")),
            ]
        );
    }

    #[test]
    fn config_fields_and_media_types() {
        let img = ImageBuilder::empty()
            .layer_files(&[("/etc/motd", "hi", 0o644)])
            .layer_compression(Compression::Zstd)
            .layer_files(&[("a", "b", 0o600)])
            .compression(Compression::None)
            .entrypoint(&["/bin/sh", "-c"])
            .user("1000:1000")
            .workdir("/home/tester")
            .stop_signal("SIGUSR1")
            .exposed_port("80/tcp")
            .healthcheck(
                &["CMD", "true"],
                HealthcheckOptions {
                    interval: Some(Duration::from_secs(2)),
                    retries: Some(3),
                    ..Default::default()
                },
            )
            .architecture("arm64")
            .variant("v8");
        let a = img.assemble(None).unwrap();
        let m: Value = serde_json::from_slice(&a.built.manifest_json).unwrap();
        assert_eq!(
            m["layers"][0]["mediaType"],
            json!(Compression::Zstd.media_type())
        );
        assert_eq!(
            m["layers"][1]["mediaType"],
            json!(Compression::None.media_type())
        );
        let c: Value = serde_json::from_slice(&a.built.config_json).unwrap();
        assert_eq!(
            c["config"]["Healthcheck"],
            json!({"Test": ["CMD", "true"], "Interval": 2_000_000_000u64, "Retries": 3})
        );
        assert_eq!(c["config"]["ExposedPorts"], json!({"80/tcp": {}}));
        assert_eq!(
            (c["architecture"].as_str(), c["variant"].as_str()),
            (Some("arm64"), Some("v8"))
        );
        let e = entries(&a.tars[0]);
        assert_eq!(
            e.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            vec!["etc", "etc/motd"]
        );
    }

    #[test]
    fn layout_and_archives() {
        let d = tempfile::tempdir().unwrap();
        let layout = d.path().join("layout");
        let img = ImageBuilder::busybox();
        let b1 = img
            .write_oci_layout(
                &layout,
                Some("latest"),
                Some("docker.io/library/busybox:latest"),
            )
            .unwrap();
        let b2 = img
            .clone()
            .label("v", "2")
            .write_oci_layout(&layout, Some("v2"), None)
            .unwrap();
        let idx: Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(idx["manifests"][0]["digest"], json!(b1.manifest_digest));
        assert_eq!(
            idx["manifests"][0]["annotations"][ANNOTATION_CONTAINERD_NAME],
            json!("docker.io/library/busybox:latest")
        );
        assert_eq!(idx["manifests"][1]["digest"], json!(b2.manifest_digest));
        for dg in b1
            .layer_digests
            .iter()
            .chain([&b1.config_digest, &b1.manifest_digest])
        {
            let data = fs::read(
                layout
                    .join("blobs/sha256")
                    .join(dg.trim_start_matches("sha256:")),
            )
            .unwrap();
            assert_eq!(&sha256_digest(&data), dg);
        }
        let arch = d.path().join("img.tar");
        let b3 = img
            .write_docker_archive(&arch, &["busybox:latest"], false)
            .unwrap();
        assert_eq!(b3.layer_digests, b3.diff_ids);
        let names: Vec<_> = entries(&fs::read(&arch).unwrap())
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert!(
            names.contains(&"manifest.json".to_string())
                && names.contains(&"repositories".to_string())
        );
        let oci = d.path().join("oci.tar.gz");
        let b4 = img
            .write_oci_archive(&oci, Some("latest"), None, true)
            .unwrap();
        assert_eq!(b4, b1);
    }
}
