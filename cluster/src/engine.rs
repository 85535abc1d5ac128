//! The node engine: containers made from local images.
//!
//! It joins the leaves that must not know each other: it resolves an image in the image
//! store, merges the image's configuration into the container's as Docker does, and hands
//! the result to the runtime; it answers "is this image or volume in use"; it wires
//! shoal-net's network namespaces into the runtime. The worker agent of the services issue
//! runs its tasks through this same engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::ImageConfiguration;
use serde::Serialize;
use shoal_image::{ImageError, ImageRecord, ImageStore};
use shoal_runtime::logs::LogConfig;
use shoal_runtime::model::{Config, HealthConfig, HostConfig, NewContainer};
use shoal_runtime::sealed::SealedExe;
use shoal_runtime::{ContainerView, NetworkHooks, Runtime, RuntimeError, RuntimeOptions};

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The image is not on this node (the CLI then pulls it, as Docker's does).
    #[error("No such image: {0}")]
    NoSuchImage(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(
        "conflict: unable to remove repository reference \"{image}\" (must force) - container {container} is using its referenced image {id}"
    )]
    ImageInUse {
        image: String,
        container: String,
        id: String,
    },
    #[error("cannot read the configuration of image {image}: {message}")]
    ImageConfig { image: String, message: String },
}

/// Where the engine keeps its state and how it runs containers.
#[derive(Clone)]
pub struct EngineOptions {
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub cgroup_parent: String,
    /// The daemon's `--label`s: this node's engine labels.
    pub labels: std::collections::BTreeMap<String, String>,
    pub log: LogConfig,
    pub registry: shoal_image::RegistryOptions,
    pub exe: Arc<SealedExe>,
}

/// The node engine.
#[derive(Clone)]
pub struct Engine {
    pub images: ImageStore,
    pub runtime: Runtime,
    opts: Arc<EngineOptions>,
}

/// shoal-net's loopback-only namespaces as the runtime's network seam.
struct LoopbackNetwork;

impl NetworkHooks for LoopbackNetwork {
    fn setup(
        &self,
        _id: &str,
        path: &Path,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        shoal_net::netns::create_loopback(path).map_err(Into::into)
    }

    fn teardown(&self, id: &str, path: &Path) {
        if let Err(e) = shoal_net::netns::remove(path) {
            tracing::warn!(%id, error = %e, "cannot remove network namespace");
        }
    }
}

impl Engine {
    /// Opens the image store and the runtime (re-adopting running containers).
    pub async fn open(opts: EngineOptions) -> Result<Engine, EngineError> {
        let images = ImageStore::open(shoal_image::StoreOptions {
            root: opts.data_dir.join("images"),
            registry: opts.registry.clone(),
        })
        .await?;
        let runtime = Runtime::open(RuntimeOptions {
            containers_dir: opts.data_dir.join("containers"),
            volumes_dir: opts.data_dir.join("volumes"),
            run_dir: opts.run_dir.clone(),
            cgroup_parent: opts.cgroup_parent.clone(),
            log: opts.log,
            exe: opts.exe.clone(),
            network: Arc::new(LoopbackNetwork),
        })
        .await?;
        Ok(Engine {
            images,
            runtime,
            opts: Arc::new(opts),
        })
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Creates a container from `config.image`, merging the image's configuration.
    pub async fn create_container(
        &self,
        name: Option<String>,
        config: Config,
        host_config: HostConfig,
    ) -> Result<ContainerView, EngineError> {
        let t = std::time::Instant::now();
        let image = match self.images.get(&config.image) {
            Ok(i) => i,
            Err(ImageError::NotFound(_)) => {
                return Err(EngineError::NoSuchImage(config.image.clone()));
            }
            Err(e) => return Err(e.into()),
        };
        let image_config = self.images.config(&image)?;
        let health = self.image_healthcheck(&image);
        let merged = merge_config(config, &image_config, health);
        tracing::debug!(image = %image.id, ms = t.elapsed().as_secs_f64() * 1e3, "image resolved");
        let view = self
            .runtime
            .create(NewContainer {
                name,
                config: merged,
                host_config,
                image_id: image.id.clone(),
                layers: self.images.layer_dirs(&image),
            })
            .await?;
        Ok(view)
    }

    /// Docker's `Healthcheck` lives outside the OCI image-config schema: read it from the
    /// raw config blob.
    fn image_healthcheck(&self, image: &ImageRecord) -> Option<HealthConfig> {
        let path = self.images.blob_path(&image.id)?;
        let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        serde_json::from_value(raw.get("config")?.get("Healthcheck")?.clone()).ok()
    }

    /// Removes an image reference (`image rm`), refusing while a container uses it unless
    /// forced.
    pub async fn remove_image(
        &self,
        name: &str,
        force: bool,
    ) -> Result<Vec<shoal_image::RemoveEvent>, EngineError> {
        let image = self.images.get(name)?;
        let users = self.runtime.containers_using_image(&image.id);
        if !force && !users.is_empty() && (image.repo_tags.len() <= 1 || name_is_id(name, &image)) {
            return Err(EngineError::ImageInUse {
                image: name.to_owned(),
                container: users[0].clone(),
                id: short(&image.id),
            });
        }
        let rt = self.runtime.clone();
        let in_use = move |id: &str| !rt.containers_using_image(id).is_empty();
        Ok(self.images.remove(name, force, &in_use).await?)
    }

    /// Removes unused images (`image prune`; dangling only unless `all`).
    pub async fn prune_images(&self, all: bool) -> Result<shoal_image::PruneReport, EngineError> {
        let rt = self.runtime.clone();
        let in_use = move |id: &str| !rt.containers_using_image(id).is_empty();
        Ok(self.images.prune(all, &in_use).await?)
    }

    /// Node-local facts for `shoal info`.
    pub fn info(&self) -> NodeInfo {
        let all = self.runtime.list(true);
        let running = all
            .iter()
            .filter(|c| c.state().running && !c.live.paused)
            .count();
        let paused = all.iter().filter(|c| c.live.paused).count();
        let uname = rustix::system::uname();
        let data = &self.opts.data_dir;
        let storage = self.images.disk_usage()
            + shoal_runtime::volumes::dir_size(&data.join("containers"))
            + shoal_runtime::volumes::dir_size(&data.join("volumes"));
        NodeInfo {
            containers: all.len(),
            containers_running: running,
            containers_paused: paused,
            containers_stopped: all.len() - running - paused,
            images: self.images.list().len(),
            driver: "overlay2".into(),
            logging_driver: "json-file".into(),
            cgroup_driver: "cgroupfs".into(),
            cgroup_version: shoal_runtime::cgroups::CgroupVersion::detect()
                .as_str()
                .into(),
            kernel_version: uname.release().to_string_lossy().into_owned(),
            operating_system: os_name(),
            os_type: "linux".into(),
            architecture: std::env::consts::ARCH.into(),
            ncpu: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_total: shoal_runtime::cgroups::host_memory(),
            name: uname.nodename().to_string_lossy().into_owned(),
            root_dir: data.clone(),
            run_dir: self.opts.run_dir.clone(),
            cgroup_parent: self.opts.cgroup_parent.clone(),
            storage_used: storage,
            wireguard: shoal_net::wireguard::Backend::detect().describe().into(),
            insecure_registries: self.opts.registry.insecure.clone(),
            log_max_size: self.opts.log.max_size,
            log_max_files: self.opts.log.max_files,
            labels: self
                .opts
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        }
    }

    /// This node's engine labels (the daemon's `--label`s).
    pub fn labels(&self) -> &std::collections::BTreeMap<String, String> {
        &self.opts.labels
    }
}

fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

fn name_is_id(name: &str, image: &ImageRecord) -> bool {
    let n = name.trim_start_matches("sha256:");
    n.len() >= 4 && image.id.trim_start_matches("sha256:").starts_with(n)
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// Node-local facts (`shoal info`), Docker's names.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeInfo {
    pub containers: usize,
    pub containers_running: usize,
    pub containers_paused: usize,
    pub containers_stopped: usize,
    pub images: usize,
    pub driver: String,
    pub logging_driver: String,
    pub cgroup_driver: String,
    pub cgroup_version: String,
    pub kernel_version: String,
    pub operating_system: String,
    #[serde(rename = "OSType")]
    pub os_type: String,
    pub architecture: String,
    #[serde(rename = "NCPU")]
    pub ncpu: usize,
    pub mem_total: u64,
    pub name: String,
    pub root_dir: PathBuf,
    pub run_dir: PathBuf,
    pub cgroup_parent: String,
    pub storage_used: u64,
    #[serde(rename = "WireGuard")]
    pub wireguard: String,
    pub insecure_registries: Vec<String>,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Engine labels as Docker's `info` lists them (`key=value`).
    pub labels: Vec<String>,
}

/// Merges an image's configuration into the user's, as Docker's daemon does: the user's
/// entrypoint replaces the image's and drops the image's cmd; otherwise the user's cmd
/// replaces the image's. Environment and labels merge by key (the user's win); working
/// dir, user, stop signal and health check fall back to the image's.
pub fn merge_config(
    mut user: Config,
    image: &ImageConfiguration,
    health: Option<HealthConfig>,
) -> Config {
    let Some(ic) = image.config() else {
        return user;
    };
    if user.entrypoint.as_ref().is_none_or(|e| e.is_empty()) {
        if user.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            user.cmd = ic.cmd().clone();
        }
        if user.entrypoint.is_none() {
            user.entrypoint = ic.entrypoint().clone();
        }
    }
    let mut env: Vec<String> = Vec::new();
    let user_keys: Vec<String> = user.env.iter().map(|e| env_key(e).to_owned()).collect();
    for e in ic.env().iter().flatten() {
        if !user_keys.iter().any(|k| k == env_key(e)) {
            env.push(e.clone());
        }
    }
    env.extend(user.env);
    user.env = env;
    if user.working_dir.is_empty() {
        user.working_dir = ic.working_dir().clone().unwrap_or_default();
    }
    if user.user.is_empty() {
        user.user = ic.user().clone().unwrap_or_default();
    }
    if user.stop_signal.is_none() {
        user.stop_signal = ic.stop_signal().clone();
    }
    if let Some(labels) = ic.labels() {
        for (k, v) in labels {
            user.labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if let Some(ports) = ic.exposed_ports() {
        let m = user.exposed_ports.get_or_insert_with(Default::default);
        for p in ports {
            m.entry(p.clone()).or_insert_with(|| serde_json::json!({}));
        }
    }
    match (&mut user.healthcheck, health) {
        (None, h) => user.healthcheck = h,
        (Some(u), Some(i)) => {
            if u.test.is_empty() {
                u.test = i.test;
            }
            if u.interval == 0 {
                u.interval = i.interval;
            }
            if u.timeout == 0 {
                u.timeout = i.timeout;
            }
            if u.start_period == 0 {
                u.start_period = i.start_period;
            }
            if u.retries == 0 {
                u.retries = i.retries;
            }
        }
        (Some(_), None) => {}
    }
    user
}

fn env_key(e: &str) -> &str {
    e.split_once('=').map_or(e, |(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

    fn image(entry: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfiguration {
        let mut c = ConfigBuilder::default()
            .env(vec!["PATH=/bin".to_owned(), "A=image".to_owned()])
            .working_dir("/srv".to_owned())
            .user("daemon".to_owned())
            .stop_signal("SIGQUIT".to_owned());
        if let Some(e) = entry {
            c = c.entrypoint(e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        if let Some(m) = cmd {
            c = c.cmd(m.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        ImageConfigurationBuilder::default()
            .config(c.build().unwrap())
            .build()
            .unwrap()
    }

    fn strs(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn command_merging_follows_docker() {
        let img = image(Some(&["/entry"]), Some(&["default"]));
        // Nothing given: image entrypoint + cmd.
        let m = merge_config(Config::default(), &img, None);
        assert_eq!(m.entrypoint, strs(&["/entry"]));
        assert_eq!(m.cmd, strs(&["default"]));
        // Cmd given: replaces the image's cmd, keeps its entrypoint.
        let m = merge_config(
            Config {
                cmd: strs(&["mine"]),
                ..Default::default()
            },
            &img,
            None,
        );
        assert_eq!(m.entrypoint, strs(&["/entry"]));
        assert_eq!(m.cmd, strs(&["mine"]));
        // Entrypoint given: the image's cmd is dropped.
        let m = merge_config(
            Config {
                entrypoint: strs(&["/other"]),
                ..Default::default()
            },
            &img,
            None,
        );
        assert_eq!(m.entrypoint, strs(&["/other"]));
        assert_eq!(m.cmd, None);
    }

    #[test]
    fn env_and_defaults_merge() {
        let img = image(None, Some(&["sh"]));
        let m = merge_config(
            Config {
                env: vec!["A=user".into(), "B=1".into()],
                ..Default::default()
            },
            &img,
            Some(HealthConfig {
                test: vec!["CMD".into(), "true".into()],
                interval: 5,
                ..Default::default()
            }),
        );
        assert_eq!(m.env, vec!["PATH=/bin", "A=user", "B=1"]);
        assert_eq!(m.working_dir, "/srv");
        assert_eq!(m.user, "daemon");
        assert_eq!(m.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(m.healthcheck.unwrap().interval, 5);
    }
}
