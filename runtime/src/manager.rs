//! The daemon side of the runtime: container records, helper processes, re-adoption.
//!
//! Each container lives in `<containers>/<id>/` (record, OCI bundle, overlay dirs, logs,
//! the helper's state and exit files). The daemon keeps an in-memory view per container and
//! a watch channel that wakes waiters when it exits. At start the daemon re-adopts every
//! container: a helper still holding its lock is watched through a pidfd; a container whose
//! helper exited while the daemon was down gets the exit recorded in `exit.json`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use rustix::fs::FlockOperation;
use rustix::process::{Pid, PidfdFlags};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::health::{self, HealthSlot, HealthState};
use crate::logs::{self, LogConfig, LogRecord, ReadOptions};
use crate::model::{
    ContainerRecord, ExitInfo, MountPoint, NetworkMode, NewContainer, State, Status, ZERO_TIME,
    api_time,
};
use crate::mounts::{self, MountRequest};
use crate::rootfs::{self, Overlay};
use crate::sealed::SealedExe;
use crate::shim::{ShimState, StartReport, files};
use crate::volumes::{VolumeError, VolumeStore};
use crate::{cgroups, defaults, names, signal, spec, state, user};

/// Default PATH for images that set none (Docker's).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Default grace period between the stop signal and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: i64 = 10;

/// Errors of container management. Messages follow Docker's where users know them.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("multiple containers found with provided prefix: {0}")]
    Ambiguous(String),
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameConflict { name: String, id: String },
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error("Container {0} is not running")]
    NotRunning(String),
    #[error("Container {0} is paused, unpause the container before exec")]
    Paused(String),
    #[error(
        "You cannot remove a running container {0}. Stop the container before attempting removal or force remove"
    )]
    Running(String),
    #[error("removal of container {0} is already in progress")]
    Removing(String),
    #[error("failed to start container {id}: {message}")]
    StartFailed {
        id: String,
        message: String,
        exit_code: i32,
    },
    #[error("invalid container configuration: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error(transparent)]
    Capability(#[from] defaults::CapabilityError),
    #[error(transparent)]
    Signal(#[from] signal::InvalidSignal),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Cgroup(#[from] cgroups::CgroupError),
    #[error(transparent)]
    Log(#[from] logs::LogError),
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    #[error("network namespace for container {id}: {message}")]
    Netns { id: String, message: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// How container network namespaces are made. The caller supplies it (the engine wires
/// shoal-net in), so the runtime never configures networking itself; tests can pass their own.
pub trait NetworkHooks: Send + Sync + 'static {
    /// Creates the pinned network namespace at `path` for container `id`, about to start.
    fn setup(&self, id: &str, path: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
    /// Tears it down after the container stopped (errors are only logged).
    fn teardown(&self, id: &str, path: &Path);
}

/// Where and how the runtime keeps its containers.
#[derive(Clone)]
pub struct RuntimeOptions {
    /// `<data>/containers`.
    pub containers_dir: PathBuf,
    /// `<data>/volumes`.
    pub volumes_dir: PathBuf,
    /// `<run>`: libcontainer state and pinned network namespaces (a tmpfs on real hosts).
    pub run_dir: PathBuf,
    /// The cgroup parent of this daemon's containers.
    pub cgroup_parent: String,
    /// Log rotation settings for new containers.
    pub log: LogConfig,
    /// The sealed binary helpers are started from.
    pub exe: Arc<SealedExe>,
    /// Network namespace setup for `--network none` containers.
    pub network: Arc<dyn NetworkHooks>,
}

/// What changes while a container lives.
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub status: Option<Status>,
    pub pid: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub exit: Option<ExitInfo>,
    pub paused: bool,
    /// How many times the container has exited (for "wait for the next exit").
    pub exits: u64,
}

impl Live {
    fn status(&self) -> Status {
        self.status.unwrap_or(Status::Created)
    }
}

struct Entry {
    record: ContainerRecord,
    dir: PathBuf,
    live: watch::Sender<Live>,
    /// pidfd of the workload, for signals that can never hit a recycled pid.
    init: Mutex<Option<Arc<OwnedFd>>>,
    /// Serializes start/stop/remove of this container.
    op: tokio::sync::Mutex<()>,
    /// Anonymous volumes created for this container (removed with it).
    anonymous_volumes: Vec<String>,
    /// Attached output streams; auto-removal waits for them (see [`AttachGuard`]).
    attached: std::sync::atomic::AtomicUsize,
    /// Health-check state and monitor (see [`crate::health`]).
    health: HealthSlot,
}

/// Held while a client streams a container's output after an attached start: an
/// auto-removed container is only removed once every such stream has ended, so no output is
/// lost to the removal.
pub struct AttachGuard {
    rt: Runtime,
    entry: Arc<Entry>,
    finished: bool,
}

impl AttachGuard {
    /// Ends the attachment; when it was the last one and the container auto-removes, the
    /// removal happens before this returns (as `docker run --rm` returns after removal).
    pub async fn finish(mut self) {
        use std::sync::atomic::Ordering;
        self.finished = true;
        let left = self.entry.attached.fetch_sub(1, Ordering::SeqCst) - 1;
        let exited = self.entry.live.borrow().status() == Status::Exited;
        if left == 0 && exited && self.entry.record.host_config.auto_remove {
            let id = self.entry.record.id.clone();
            if let Err(err) = self.rt.remove(&id, true, true).await {
                tracing::warn!(%id, error = %err, "cannot auto-remove container");
            }
        }
    }
}

impl Drop for AttachGuard {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        if self.finished {
            return;
        }
        let left = self.entry.attached.fetch_sub(1, Ordering::SeqCst) - 1;
        let exited = self.entry.live.borrow().status() == Status::Exited;
        if left == 0 && exited && self.entry.record.host_config.auto_remove {
            let rt = self.rt.clone();
            let id = self.entry.record.id.clone();
            tokio::spawn(async move {
                if let Err(err) = rt.remove(&id, true, true).await {
                    tracing::warn!(%id, error = %err, "cannot auto-remove container");
                }
            });
        }
    }
}

/// A snapshot of one container for the API.
#[derive(Clone, Debug)]
pub struct ContainerView {
    pub record: ContainerRecord,
    pub live: Live,
    pub dir: PathBuf,
    /// Docker's `State.Health`: `None` without a health check (or before its first run).
    pub health: Option<HealthState>,
}

impl ContainerView {
    /// Docker's `State` object.
    pub fn state(&self) -> State {
        let l = &self.live;
        let exit = l.exit.as_ref();
        State {
            // Docker: a frozen container is `paused` (and still `Running: true`).
            status: if l.paused && l.status() == Status::Running {
                Status::Paused
            } else {
                l.status()
            },
            running: l.status() == Status::Running,
            paused: l.paused,
            restarting: false,
            oom_killed: exit.is_some_and(|e| e.oom_killed),
            dead: l.status() == Status::Dead,
            pid: if l.status() == Status::Running {
                l.pid
            } else {
                0
            },
            exit_code: exit.map_or(0, |e| e.exit_code),
            error: exit.map(|e| e.error.clone()).unwrap_or_default(),
            started_at: l.started_at.as_ref().map_or(ZERO_TIME.into(), api_time),
            finished_at: exit
                .filter(|_| l.status() != Status::Running)
                .map_or(ZERO_TIME.into(), |e| api_time(&e.finished_at)),
            health: self.health.clone(),
        }
    }

    /// Docker's `docker inspect` object for the container.
    pub fn inspect(&self) -> serde_json::Value {
        let r = &self.record;
        let dir = &self.dir;
        let lower: Vec<String> = r
            .layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        json!({
            "Id": r.id,
            "Created": api_time(&r.created),
            "Path": r.path,
            "Args": r.args,
            "State": self.state(),
            "Image": r.image_id,
            "ResolvConfPath": dir.join("resolv.conf"),
            "HostnamePath": dir.join("hostname"),
            "HostsPath": dir.join("hosts"),
            "LogPath": logs::log_path(&dir.join(files::LOGS)),
            "Name": format!("/{}", r.name),
            "RestartCount": 0,
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "HostConfig": r.host_config,
            "GraphDriver": {
                "Data": {
                    "LowerDir": lower.join(":"),
                    "MergedDir": dir.join("rootfs"),
                    "UpperDir": dir.join("upper"),
                    "WorkDir": dir.join("work"),
                },
                "Name": "overlay2",
            },
            "Mounts": r.mounts,
            "Config": r.config,
            "NetworkSettings": {
                "Networks": { network_name(r.network): {} },
            },
        })
    }
}

fn network_name(n: NetworkMode) -> &'static str {
    match n {
        NetworkMode::None => "none",
        NetworkMode::Host => "host",
    }
}

/// One resource-usage sample (see [`Runtime::stats`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct StatsSample {
    pub usage: cgroups::Usage,
    /// Host CPU time at the sample, for percentages.
    pub system_cpu_ns: u64,
    pub online_cpus: u32,
    pub read: DateTime<Utc>,
}

/// A request to run a process in a running container.
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
}

/// The container runtime of one daemon.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    opts: RuntimeOptions,
    volumes: VolumeStore,
    entries: Mutex<BTreeMap<String, Arc<Entry>>>,
}

impl Runtime {
    /// Opens the runtime and re-adopts every container found on disk.
    pub async fn open(opts: RuntimeOptions) -> Result<Runtime, RuntimeError> {
        for d in [
            &opts.containers_dir,
            &opts.run_dir,
            &state_root(&opts),
            &netns_dir(&opts),
        ] {
            fs::create_dir_all(d).map_err(io_err("cannot create", d))?;
        }
        let volumes = VolumeStore::open(opts.volumes_dir.clone())?;
        let rt = Runtime {
            inner: Arc::new(Inner {
                opts,
                volumes,
                entries: Mutex::new(BTreeMap::new()),
            }),
        };
        rt.adopt_all().await;
        Ok(rt)
    }

    /// Removes this daemon's cgroup parent when no container of it runs (daemon shutdown).
    pub fn release_cgroup_parent(&self) {
        if self.list(false).is_empty() {
            cgroups::remove_parent(&self.inner.opts.cgroup_parent);
        }
    }

    /// The node's volumes.
    pub fn volumes(&self) -> &VolumeStore {
        &self.inner.volumes
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Entry>>> {
        // A poisoned lock means a panic while holding it; the map itself is still valid.
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.inner.opts.containers_dir.join(id)
    }

    fn netns_path(&self, id: &str) -> PathBuf {
        netns_dir(&self.inner.opts).join(&id[..12.min(id.len())])
    }

    // ----- queries -----------------------------------------------------------------------

    /// All containers (only running ones unless `all`), newest first.
    pub fn list(&self, all: bool) -> Vec<ContainerView> {
        let mut v: Vec<ContainerView> = self
            .entries()
            .values()
            .map(|e| view(e.as_ref()))
            .filter(|v| all || v.live.status() == Status::Running)
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.record.created));
        v
    }

    /// A container by full ID, name, or unique ID prefix.
    pub fn get(&self, name_or_id: &str) -> Result<ContainerView, RuntimeError> {
        let e = self.lookup(name_or_id)?;
        Ok(view(&e))
    }

    fn lookup(&self, key: &str) -> Result<Arc<Entry>, RuntimeError> {
        let key = key.trim_start_matches('/');
        let entries = self.entries();
        if let Some(e) = entries.get(key) {
            return Ok(e.clone());
        }
        if let Some(e) = entries.values().find(|e| e.record.name == key) {
            return Ok(e.clone());
        }
        if key.is_empty() {
            return Err(RuntimeError::NotFound(key.to_owned()));
        }
        let mut found = entries
            .range(key.to_owned()..)
            .take_while(|(id, _)| id.starts_with(key));
        match (found.next(), found.next()) {
            (Some((_, e)), None) => Ok(e.clone()),
            (Some(_), Some(_)) => Err(RuntimeError::Ambiguous(key.to_owned())),
            _ => Err(RuntimeError::NotFound(key.to_owned())),
        }
    }

    /// Names of containers (any state) using the image `image_id`.
    pub fn containers_using_image(&self, image_id: &str) -> Vec<String> {
        self.entries()
            .values()
            .filter(|e| e.record.image_id == image_id)
            .map(|e| e.record.id[..12].to_owned())
            .collect()
    }

    /// Names of containers (any state) mounting the volume `name`.
    pub fn containers_using_volume(&self, name: &str) -> Vec<String> {
        self.entries()
            .values()
            .filter(|e| {
                e.record
                    .mounts
                    .iter()
                    .any(|m| m.name.as_deref() == Some(name))
            })
            .map(|e| e.record.id[..12].to_owned())
            .collect()
    }

    // ----- create ------------------------------------------------------------------------

    /// Creates a container (not started).
    pub async fn create(&self, new: NewContainer) -> Result<ContainerView, RuntimeError> {
        let t = std::time::Instant::now();
        let id = names::new_id();
        let name = self.pick_name(new.name.as_deref(), &id)?;
        let hc = new.host_config.clone();
        let mut config = new.config.clone();
        let network = NetworkMode::parse(&hc.network_mode).ok_or_else(|| {
            RuntimeError::InvalidConfig(format!(
                "network {} not found (this node supports none and host)",
                hc.network_mode
            ))
        })?;

        if !config.working_dir.is_empty() && !config.working_dir.starts_with('/') {
            return Err(RuntimeError::InvalidConfig(format!(
                "the working directory '{}' is invalid, it needs to be an absolute path",
                config.working_dir
            )));
        }

        // The command: entrypoint + cmd.
        let mut argv: Vec<String> = config.entrypoint.clone().unwrap_or_default();
        argv.extend(config.cmd.clone().unwrap_or_default());
        if argv.is_empty() {
            return Err(RuntimeError::InvalidConfig("No command specified".into()));
        }
        let path = argv.remove(0);

        // User and groups from the image's files.
        let passwd = rootfs::read_image_file(&new.layers, "/etc/passwd");
        let group = rootfs::read_image_file(&new.layers, "/etc/group");
        let resolved = user::resolve(
            &config.user,
            passwd.as_deref().map(String::from_utf8_lossy).as_deref(),
            group.as_deref().map(String::from_utf8_lossy).as_deref(),
        )?;

        let capabilities = defaults::capabilities(&hc.cap_add, &hc.cap_drop)?;
        if let Some(sig) = &config.stop_signal {
            signal::parse(sig)?;
        }
        if let Some(h) = &config.healthcheck {
            health::validate(h).map_err(|e| RuntimeError::InvalidConfig(e.to_string()))?;
        }

        // Mounts.
        let mut requests = Vec::new();
        for b in &hc.binds {
            requests.push(mounts::parse_volume(b)?);
        }
        for (target, opts) in &hc.tmpfs {
            requests.push(mounts::tmpfs(target, opts).map_err(|reason| {
                mounts::MountError::Tmpfs {
                    spec: format!("{target}:{opts}"),
                    reason,
                }
            })?);
        }
        mounts::check_duplicates(&requests)?;
        let mut mount_points = Vec::new();
        let mut anonymous = Vec::new();
        for r in requests {
            mount_points.push(match r {
                MountRequest::Volume { name, target, rw } => {
                    let v = self
                        .inner
                        .volumes
                        .create(name.as_deref(), BTreeMap::new())?;
                    if name.is_none() {
                        anonymous.push(v.name.clone());
                    }
                    MountPoint {
                        kind: "volume".into(),
                        name: Some(v.name),
                        source: v.mountpoint.display().to_string(),
                        destination: target,
                        mode: if rw { "z".into() } else { "ro".into() },
                        rw,
                        options: Vec::new(),
                    }
                }
                MountRequest::Bind { source, target, rw } => {
                    // Docker creates a missing host directory for `-v /host:/path`.
                    fs::create_dir_all(&source)
                        .map_err(io_err("cannot create bind source", Path::new(&source)))?;
                    MountPoint {
                        kind: "bind".into(),
                        name: None,
                        source,
                        destination: target,
                        mode: if rw { String::new() } else { "ro".into() },
                        rw,
                        options: Vec::new(),
                    }
                }
                MountRequest::Tmpfs { target, options } => MountPoint {
                    kind: "tmpfs".into(),
                    name: None,
                    source: String::new(),
                    destination: target,
                    mode: String::new(),
                    rw: true,
                    options,
                },
            });
        }

        // Environment: the merged config's, plus Docker's PATH, HOSTNAME and HOME.
        if config.hostname.is_empty() {
            config.hostname = match network {
                NetworkMode::Host => rustix::system::uname()
                    .nodename()
                    .to_string_lossy()
                    .into_owned(),
                NetworkMode::None => id[..12].to_owned(),
            };
        }
        let mut env = config.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH.to_owned());
        }
        if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.insert(1.min(env.len()), format!("HOSTNAME={}", config.hostname));
        }
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", resolved.home));
        }
        let cwd = if config.working_dir.is_empty() {
            "/".to_owned()
        } else {
            config.working_dir.clone()
        };

        let record = ContainerRecord {
            id: id.clone(),
            name: name.clone(),
            created: Utc::now(),
            path,
            args: argv,
            config,
            host_config: hc,
            image_id: new.image_id.clone(),
            layers: new.layers.clone(),
            user: resolved,
            env,
            cwd,
            mounts: mount_points,
            network,
            cgroups_path: cgroups::container_path(&self.inner.opts.cgroup_parent, &id),
            capabilities,
        };
        let dir = self.dir(&id);
        let written = self.write_bundle(&record, &dir);
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&dir);
            for v in &anonymous {
                let _ = self.inner.volumes.remove(v, &[]);
            }
            return Err(e);
        }
        let entry = Arc::new(Entry {
            record,
            dir,
            live: watch::channel(Live::default()).0,
            init: Mutex::new(None),
            op: tokio::sync::Mutex::new(()),
            anonymous_volumes: anonymous,
            attached: std::sync::atomic::AtomicUsize::new(0),
            health: HealthSlot::default(),
        });
        let v = view(&entry);
        let mut entries = self.entries();
        if let Some(other) = entries.values().find(|e| e.record.name == name) {
            let err = RuntimeError::NameConflict {
                name,
                id: other.record.id.clone(),
            };
            drop(entries);
            let _ = fs::remove_dir_all(self.dir(&id));
            return Err(err);
        }
        entries.insert(id.clone(), entry);
        tracing::debug!(%id, ms = t.elapsed().as_secs_f64() * 1e3, "container created");
        Ok(v)
    }

    fn pick_name(&self, wanted: Option<&str>, id: &str) -> Result<String, RuntimeError> {
        let entries = self.entries();
        let taken = |n: &str| {
            entries
                .values()
                .find(|e| e.record.name == n)
                .map(|e| e.record.id.clone())
        };
        if let Some(n) = wanted {
            let n = n.trim_start_matches('/');
            if !names::valid(n) {
                return Err(RuntimeError::InvalidName(n.to_owned()));
            }
            if let Some(other) = taken(n) {
                return Err(RuntimeError::NameConflict {
                    name: n.to_owned(),
                    id: other,
                });
            }
            return Ok(n.to_owned());
        }
        for retry in 0..10 {
            let n = names::random(retry);
            if taken(&n).is_none() {
                return Ok(n);
            }
        }
        Ok(id[..12].to_owned())
    }

    fn write_bundle(&self, rec: &ContainerRecord, dir: &Path) -> Result<(), RuntimeError> {
        fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
        let write = |name: &str, data: &[u8]| {
            let p = dir.join(name);
            fs::write(&p, data).map_err(io_err("cannot write", &p))
        };
        write("hostname", format!("{}\n", rec.config.hostname).as_bytes())?;
        let hosts = match rec.network {
            NetworkMode::Host => fs::read("/etc/hosts").unwrap_or_default(),
            NetworkMode::None => b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n".to_vec(),
        };
        write("hosts", &hosts)?;
        write(
            "resolv.conf",
            &fs::read("/etc/resolv.conf").unwrap_or_default(),
        )?;
        Overlay::in_dir(dir, rec.layers.clone()).prepare()?;
        self.write_spec(rec, dir)?;
        state::write_json(&dir.join(files::RECORD), rec)?;
        Ok(())
    }

    /// Writes the OCI spec (`config.json`). It can be rebuilt from the record, so it is not
    /// fsynced: only the record must survive a power loss.
    fn write_spec(&self, rec: &ContainerRecord, dir: &Path) -> Result<(), RuntimeError> {
        let paths = spec::SpecPaths {
            rootfs: dir.join("rootfs"),
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            netns: self.netns_path(&rec.id),
        };
        let spec = spec::build(rec, &paths)?;
        state::write_json_volatile(&dir.join("config.json"), &spec)?;
        Ok(())
    }

    // ----- start / exit ------------------------------------------------------------------

    /// Starts a created or exited container; a running one is left alone.
    /// A container started with auto-removal whose start fails is removed, as Docker does.
    pub async fn start(&self, key: &str) -> Result<(), RuntimeError> {
        let e = self.lookup(key)?;
        let started = self.start_entry(&e).await;
        if started.is_err() && e.record.host_config.auto_remove {
            let id = &e.record.id;
            if let Err(err) = self.remove(id, true, true).await {
                tracing::warn!(%id, error = %err, "cannot auto-remove container");
            }
        }
        started
    }

    async fn start_entry(&self, e: &Arc<Entry>) -> Result<(), RuntimeError> {
        let _op = e.op.lock().await;
        match e.live.borrow().status() {
            Status::Running => return Ok(()),
            Status::Removing => return Err(RuntimeError::Removing(e.record.id.clone())),
            _ => {}
        }
        let id = e.record.id.clone();
        if state::read_json::<serde_json::Value>(&e.dir.join("config.json"))
            .ok()
            .flatten()
            .is_none()
        {
            // Lost or torn by a power failure: rebuild it.
            self.write_spec(&e.record, &e.dir)?;
        }
        let t = std::time::Instant::now();
        if e.record.network == NetworkMode::None {
            let p = self.netns_path(&id);
            let hooks = self.inner.opts.network.clone();
            let nid = id.clone();
            tokio::task::spawn_blocking(move || hooks.setup(&nid, &p))
                .await
                .map_err(|j| RuntimeError::Netns {
                    id: id.clone(),
                    message: j.to_string(),
                })?
                .map_err(|n| RuntimeError::Netns {
                    id: id.clone(),
                    message: n.to_string(),
                })?;
        }
        tracing::debug!(%id, ms = t.elapsed().as_secs_f64() * 1e3, "network namespace ready");
        let t = std::time::Instant::now();
        let shim_log_path = e.dir.join(files::SHIM_LOG);
        let shim_log = File::options()
            .create(true)
            .append(true)
            .open(&shim_log_path)
            .map_err(io_err("cannot open", &shim_log_path))?;
        let o = &self.inner.opts;
        let mut child = o
            .exe
            .tokio_command()
            .arg("shim")
            .arg("--dir")
            .arg(&e.dir)
            .arg("--state-root")
            .arg(state_root(o))
            .arg("--log-max-size")
            .arg(o.log.max_size.to_string())
            .arg("--log-max-files")
            .arg(o.log.max_files.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(shim_log))
            .kill_on_drop(false)
            .spawn()
            .map_err(io_err("cannot start the container helper", &o.exe.path()))?;
        let mut out = Vec::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_end(&mut out).await;
        }
        let report = crate::shim::read_report(&out[..]);
        tracing::debug!(%id, ms = t.elapsed().as_secs_f64() * 1e3, "helper reported");
        match report {
            Some(StartReport::Started { pid, started_at }) => {
                let init = Pid::from_raw(pid)
                    .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).ok())
                    .map(Arc::new);
                *lock(&e.init) = init;
                e.live.send_modify(|l| {
                    l.status = Some(Status::Running);
                    l.pid = pid;
                    l.started_at = Some(started_at);
                    l.exit = None;
                    l.paused = false;
                });
                self.start_health(e);
                let rt = self.clone();
                let entry = e.clone();
                tokio::spawn(async move {
                    let _ = child.wait().await;
                    rt.on_exit(&entry).await;
                });
                Ok(())
            }
            other => {
                let _ = child.wait().await;
                let (message, exit_code) = match other {
                    Some(StartReport::Failed { message, exit_code }) => (message, exit_code),
                    _ => (
                        format!(
                            "the container helper exited without reporting; see {}",
                            shim_log_path.display()
                        ),
                        128,
                    ),
                };
                self.remove_netns(e).await;
                let exit = ExitInfo {
                    exit_code,
                    oom_killed: false,
                    finished_at: Utc::now(),
                    error: message.clone(),
                };
                let _ = state::write_json(&e.dir.join(files::EXIT), &exit);
                e.live.send_modify(|l| {
                    l.exit = Some(exit);
                });
                Err(RuntimeError::StartFailed {
                    id: e.record.id.clone(),
                    message,
                    exit_code,
                })
            }
        }
    }

    /// Starts the health monitor of a run that just began (nothing without a check).
    fn start_health(&self, e: &Entry) {
        e.health.start(
            self,
            &e.record.id,
            e.record.config.healthcheck.as_ref(),
            e.live.subscribe(),
        );
    }

    /// The container's health (Docker's `State.Health`); `None` when it has no health
    /// check (or `NONE`) or has not run with one. Cheap: a clone of the last state.
    pub fn health(&self, key: &str) -> Result<Option<HealthState>, RuntimeError> {
        Ok(self.lookup(key)?.health.get())
    }

    /// A receiver woken at every health change of the container (each probe); its sender
    /// goes away when the container is removed.
    pub fn health_changes(
        &self,
        key: &str,
    ) -> Result<watch::Receiver<Option<HealthState>>, RuntimeError> {
        Ok(self.lookup(key)?.health.subscribe())
    }

    async fn on_exit(&self, e: &Arc<Entry>) {
        self.record_exit(e, None).await;
    }

    /// Records the end of a container whose helper is gone: its exit (from `exit.json`, or
    /// 255 when the helper died with the container, e.g. host reboot or SIGKILL, as Docker
    /// shows), clears what the helper would have, wakes waiters, and auto-removes unless an
    /// attached stream will do it. `started_at` restores the start time for a container
    /// that ended while the daemon was down.
    async fn record_exit(&self, e: &Arc<Entry>, started_at: Option<DateTime<Utc>>) {
        let t = std::time::Instant::now();
        let exit: ExitInfo = match state::read_json(&e.dir.join(files::EXIT)) {
            Ok(Some(x)) => x,
            _ => {
                let x = ExitInfo {
                    exit_code: 255,
                    oom_killed: false,
                    finished_at: Utc::now(),
                    error: "the container's helper process ended unexpectedly".into(),
                };
                let _ = state::write_json(&e.dir.join(files::EXIT), &x);
                x
            }
        };
        *lock(&e.init) = None;
        e.health.stop();
        // The helper unmounts on its way out; make sure nothing is left (killed helper).
        let _ = rootfs::unmount(&e.dir.join("rootfs"));
        self.remove_netns(e).await;
        tracing::info!(id = %e.record.id, exit_code = exit.exit_code, oom = exit.oom_killed, ms = t.elapsed().as_secs_f64() * 1e3, "container exited");
        e.live.send_modify(|l| {
            l.status = Some(Status::Exited);
            if started_at.is_some() {
                l.started_at = started_at;
            }
            l.exit = Some(exit);
            l.paused = false;
            l.exits += 1;
        });
        let attached = e.attached.load(std::sync::atomic::Ordering::SeqCst);
        if e.record.host_config.auto_remove && attached == 0 {
            let rt = self.clone();
            let id = e.record.id.clone();
            tokio::spawn(async move {
                if let Err(err) = rt.remove(&id, true, true).await {
                    tracing::warn!(%id, error = %err, "cannot auto-remove container");
                }
            });
        }
    }

    async fn remove_netns(&self, e: &Entry) {
        if e.record.network == NetworkMode::None {
            let p = self.netns_path(&e.record.id);
            let hooks = self.inner.opts.network.clone();
            let id = e.record.id.clone();
            let _ = tokio::task::spawn_blocking(move || hooks.teardown(&id, &p)).await;
        }
    }

    /// Registers an attached output stream (see [`AttachGuard`]).
    pub fn attach(&self, key: &str) -> Result<AttachGuard, RuntimeError> {
        let entry = self.lookup(key)?;
        entry
            .attached
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(AttachGuard {
            rt: self.clone(),
            entry,
            finished: false,
        })
    }

    /// Waits until the container is not running and returns how it ended. With
    /// `next_exit`, waits for the next exit even if it is not running yet (used before start).
    pub async fn wait(&self, key: &str, next_exit: bool) -> Result<ExitInfo, RuntimeError> {
        let e = self.lookup(key)?;
        let mut rx = e.live.subscribe();
        let start_exits = rx.borrow().exits;
        loop {
            {
                let l = rx.borrow_and_update();
                let done = if next_exit {
                    l.exits > start_exits
                } else {
                    l.status() != Status::Running
                };
                if done {
                    return Ok(l.exit.clone().unwrap_or(ExitInfo {
                        exit_code: 0,
                        oom_killed: false,
                        finished_at: Utc::now(),
                        error: String::new(),
                    }));
                }
            }
            if rx.changed().await.is_err() {
                // The entry was dropped (removed): report its last exit.
                return Ok(rx.borrow().exit.clone().unwrap_or_else(no_exit));
            }
        }
    }

    // ----- signals -----------------------------------------------------------------------

    fn signal(&self, e: &Entry, sig: i32) -> Result<(), RuntimeError> {
        let fd = lock(&e.init).clone();
        let Some(fd) = fd else {
            return Err(RuntimeError::NotRunning(e.record.id.clone()));
        };
        // SAFETY: pidfd_send_signal(2) with a valid pidfd, a plain signal number, no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(RuntimeError::Io {
                what: "cannot signal container",
                path: e.dir.clone(),
                source: err,
            });
        }
        Ok(())
    }

    /// Sends a signal (default SIGKILL) to the container's main process.
    pub async fn kill(&self, key: &str, sig: Option<&str>) -> Result<(), RuntimeError> {
        let e = self.lookup(key)?;
        let sig = signal::parse(sig.unwrap_or("KILL"))?;
        if e.live.borrow().status() != Status::Running {
            return Err(RuntimeError::NotRunning(e.record.id.clone()));
        }
        if e.live.borrow().paused && sig == libc::SIGKILL {
            self.set_paused(&e, false)?;
        }
        let mut rx = e.live.subscribe();
        self.signal(&e, sig)?;
        if sig == libc::SIGKILL {
            // As Docker's: a SIGKILL returns once the container is dead, so that a `rm`
            // right after it succeeds.
            while rx.borrow_and_update().status() == Status::Running {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Stops a container: its stop signal, the grace period (`timeout` seconds, else its
    /// `--stop-timeout`, else 10), then SIGKILL. A container that is not running is fine.
    pub async fn stop(&self, key: &str, timeout: Option<i64>) -> Result<(), RuntimeError> {
        self.stop_with(key, None, timeout).await
    }

    /// [`Runtime::stop`] with another stop signal than the container's (`stop -s`).
    pub async fn stop_with(
        &self,
        key: &str,
        signal: Option<&str>,
        timeout: Option<i64>,
    ) -> Result<(), RuntimeError> {
        let e = self.lookup(key)?;
        let sig = signal.map(signal::parse).transpose()?;
        let _op = e.op.lock().await;
        self.stop_entry(&e, sig, timeout).await
    }

    async fn stop_entry(
        &self,
        e: &Arc<Entry>,
        sig: Option<i32>,
        timeout: Option<i64>,
    ) -> Result<(), RuntimeError> {
        if e.live.borrow().status() != Status::Running {
            return Ok(());
        }
        let sig = match (sig, &e.record.config.stop_signal) {
            (Some(s), _) => s,
            (None, Some(s)) => signal::parse(s)?,
            (None, None) => libc::SIGTERM,
        };
        let grace = timeout
            .or(e.record.config.stop_timeout)
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        if e.live.borrow().paused {
            self.set_paused(e, false)?;
        }
        let mut rx = e.live.subscribe();
        if grace != 0 {
            self.signal(e, sig)?;
        }
        let exited =
            |rx: &mut watch::Receiver<Live>| rx.borrow_and_update().status() != Status::Running;
        if grace != 0 {
            let wait = async {
                while !exited(&mut rx) {
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
            };
            let limit = if grace < 0 {
                Duration::MAX
            } else {
                Duration::from_secs(grace as u64)
            };
            if tokio::time::timeout(limit, wait).await.is_ok() {
                return Ok(());
            }
            tracing::info!(id = %e.record.id, "container did not stop in its grace period; killing it");
        }
        self.signal(e, libc::SIGKILL)?;
        while !exited(&mut rx) {
            if rx.changed().await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Freezes or thaws every process of the container (`pause`/`unpause`).
    pub async fn pause(&self, key: &str, paused: bool) -> Result<(), RuntimeError> {
        let e = self.lookup(key)?;
        if e.live.borrow().status() != Status::Running {
            return Err(RuntimeError::NotRunning(e.record.id.clone()));
        }
        self.set_paused(&e, paused)
    }

    fn set_paused(&self, e: &Entry, paused: bool) -> Result<(), RuntimeError> {
        cgroups::set_frozen(&e.record.cgroups_path, &e.record.id, paused)?;
        e.live.send_modify(|l| l.paused = paused);
        Ok(())
    }

    // ----- remove ------------------------------------------------------------------------

    /// Removes a container and its files; a running one only with `force` (it is killed).
    /// `volumes` also removes its anonymous volumes.
    pub async fn remove(&self, key: &str, force: bool, volumes: bool) -> Result<(), RuntimeError> {
        let e = match self.lookup(key) {
            Ok(e) => e,
            // Auto-removal may race a `rm`: removed is removed.
            Err(RuntimeError::NotFound(_)) if key.len() == 64 && force => return Ok(()),
            Err(err) => return Err(err),
        };
        let _op = e.op.lock().await;
        if e.live.borrow().status() == Status::Running {
            if !force {
                return Err(RuntimeError::Running(e.record.id.clone()));
            }
            self.stop_entry(&e, Some(libc::SIGKILL), Some(0)).await?;
        }
        if e.live.borrow().status() == Status::Removing {
            return Ok(());
        }
        let t = std::time::Instant::now();
        e.live.send_modify(|l| l.status = Some(Status::Removing));
        let _ = rootfs::unmount(&e.dir.join("rootfs"));
        self.remove_netns(&e).await;
        let dir = e.dir.clone();
        let removed = tokio::task::spawn_blocking(move || fs::remove_dir_all(&dir))
            .await
            .unwrap_or_else(|j| Err(io::Error::other(j.to_string())));
        if let Err(err) = removed
            && err.kind() != io::ErrorKind::NotFound
        {
            e.live.send_modify(|l| l.status = Some(Status::Dead));
            return Err(RuntimeError::Io {
                what: "cannot remove container directory",
                path: e.dir.clone(),
                source: err,
            });
        }
        self.entries().remove(&e.record.id);
        tracing::debug!(id = %e.record.id, ms = t.elapsed().as_secs_f64() * 1e3, "container removed");
        if volumes {
            for v in &e.anonymous_volumes {
                if let Err(err) = self
                    .inner
                    .volumes
                    .remove(v, &self.containers_using_volume(v))
                {
                    tracing::warn!(volume = %v, error = %err, "cannot remove anonymous volume");
                }
            }
        }
        Ok(())
    }

    // ----- logs, exec, stats -------------------------------------------------------------

    /// The container's log records; with `follow`, then new ones until it stops.
    pub fn logs(
        &self,
        key: &str,
        opts: ReadOptions,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<LogRecord, logs::LogError>>, RuntimeError> {
        let e = self.lookup(key)?;
        let dir = e.dir.join(files::LOGS);
        if !follow {
            // The whole history can be tens of MB: read it off the async workers.
            let read = async move {
                match tokio::task::spawn_blocking(move || logs::read(&dir, &opts)).await {
                    Ok(Ok(records)) => {
                        futures_util::stream::iter(records.into_iter().map(Ok)).boxed()
                    }
                    Ok(Err(e)) => futures_util::stream::once(async { Err(e) }).boxed(),
                    Err(j) => {
                        let e = logs::LogError::Reader {
                            path: PathBuf::new(),
                            source: j,
                        };
                        futures_util::stream::once(async { Err(e) }).boxed()
                    }
                }
            };
            return Ok(futures_util::stream::once(read).flatten().boxed());
        }
        let mut rx = e.live.subscribe();
        let done = async move {
            loop {
                if rx.borrow_and_update().status() != Status::Running {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        Ok(logs::follow(dir, opts, done).boxed())
    }

    /// Starts a process in a running container through the exec helper. The returned child
    /// has piped stdout and stderr; its exit code is the process's.
    pub async fn exec(
        &self,
        key: &str,
        req: ExecRequest,
    ) -> Result<tokio::process::Child, RuntimeError> {
        let e = self.lookup(key)?;
        if e.live.borrow().status() != Status::Running {
            return Err(RuntimeError::NotRunning(e.record.id.clone()));
        }
        if e.live.borrow().paused {
            // A process joining a frozen cgroup would hang, and the exec with it.
            return Err(RuntimeError::Paused(e.record.id.clone()));
        }
        if req.cmd.is_empty() {
            return Err(RuntimeError::InvalidConfig(
                "No exec command specified".into(),
            ));
        }
        let user = match req.user.as_deref() {
            Some(u) if !u.is_empty() => {
                let passwd = rootfs::read_image_file(&e.record.layers, "/etc/passwd");
                let group = rootfs::read_image_file(&e.record.layers, "/etc/group");
                user::resolve(
                    u,
                    passwd.as_deref().map(String::from_utf8_lossy).as_deref(),
                    group.as_deref().map(String::from_utf8_lossy).as_deref(),
                )?
            }
            _ => e.record.user.clone(),
        };
        let mut env = req.env.clone();
        // The container's HOME is its own user's: another user gets theirs, as with Docker,
        // unless HOME was set explicitly (image, run or exec environment).
        let has_home = |env: &[String]| env.iter().any(|kv| kv.starts_with("HOME="));
        if req.user.as_deref().is_some_and(|u| !u.is_empty())
            && !has_home(&req.env)
            && !has_home(&e.record.config.env)
        {
            env.push(format!("HOME={}", user.home));
        }
        let cwd = req
            .workdir
            .as_deref()
            .filter(|w| !w.is_empty())
            .unwrap_or(&e.record.cwd);
        let process = spec::exec_process(&e.record, &user, req.cmd.clone(), &env, cwd)?;
        let process_file = e.dir.join(format!("exec-{}.json", &names::new_id()[..12]));
        state::write_json_volatile(&process_file, &process)?;

        let o = &self.inner.opts;
        let mut cmd = o.exe.tokio_command();
        cmd.arg("shim-exec")
            .arg("--state-root")
            .arg(state_root(o))
            .arg("--id")
            .arg(&e.record.id)
            .arg("--process")
            .arg(&process_file);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        cmd.spawn()
            .map_err(io_err("cannot start the exec helper", &o.exe.path()))
    }

    /// A resource-usage sample of a running container.
    pub async fn stats(&self, key: &str) -> Result<StatsSample, RuntimeError> {
        let e = self.lookup(key)?;
        if e.live.borrow().status() != Status::Running {
            return Ok(StatsSample {
                usage: cgroups::Usage::default(),
                system_cpu_ns: cgroups::host_cpu_ns(),
                online_cpus: online_cpus(),
                read: Utc::now(),
            });
        }
        let path = e.record.cgroups_path.clone();
        let id = e.record.id.clone();
        let usage = tokio::task::spawn_blocking(move || cgroups::usage(&path, &id))
            .await
            .map_err(|j| RuntimeError::Io {
                what: "stats task failed for",
                path: e.dir.clone(),
                source: io::Error::other(j.to_string()),
            })??;
        Ok(StatsSample {
            usage,
            system_cpu_ns: cgroups::host_cpu_ns(),
            online_cpus: online_cpus(),
            read: Utc::now(),
        })
    }

    // ----- adoption ----------------------------------------------------------------------

    async fn adopt_all(&self) {
        let dirs = match fs::read_dir(&self.inner.opts.containers_dir) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot list containers");
                return;
            }
        };
        for d in dirs.flatten() {
            let dir = d.path();
            match self.adopt(&dir).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot adopt container")
                }
            }
        }
    }

    async fn adopt(&self, dir: &Path) -> Result<(), RuntimeError> {
        let Some(record): Option<ContainerRecord> = state::read_json(&dir.join(files::RECORD))?
        else {
            // A directory without a record is a create that did not finish.
            let _ = fs::remove_dir_all(dir);
            return Ok(());
        };
        // The helper's files may be torn by a power loss (they are not fsynced): unreadable
        // counts as absent.
        let exit: Option<ExitInfo> = state::read_json(&dir.join(files::EXIT)).ok().flatten();
        let shim: Option<ShimState> = state::read_json(&dir.join(files::STATE)).ok().flatten();
        let anonymous_volumes = anonymous_volumes(&record);
        let entry = Arc::new(Entry {
            record,
            dir: dir.to_owned(),
            live: watch::channel(Live::default()).0,
            init: Mutex::new(None),
            op: tokio::sync::Mutex::new(()),
            anonymous_volumes,
            attached: std::sync::atomic::AtomicUsize::new(0),
            health: HealthSlot::default(),
        });
        let id = entry.record.id.clone();
        // Listed before anything below can spawn work (auto-removal) that looks it up.
        self.entries().insert(id.clone(), entry.clone());
        let alive = helper_alive(dir);
        match (alive, shim) {
            (Some(lockf), Some(st)) => {
                // Watch the helper through a pidfd; the lock it holds proves the pid is its own.
                let shim_fd = Pid::from_raw(st.shim_pid)
                    .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).ok());
                drop(lockf);
                let still = helper_alive(dir).is_some();
                match shim_fd {
                    Some(fd) if still => {
                        let init = Pid::from_raw(st.pid)
                            .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).ok())
                            .map(Arc::new);
                        *lock(&entry.init) = init;
                        let paused = cgroups::is_frozen(&entry.record.cgroups_path);
                        entry.live.send_modify(|l| {
                            l.status = Some(Status::Running);
                            l.pid = st.pid;
                            l.started_at = Some(st.started_at);
                            l.paused = paused;
                        });
                        tracing::info!(%id, pid = st.pid, "re-adopted running container");
                        self.start_health(&entry);
                        let rt = self.clone();
                        let e = entry.clone();
                        tokio::spawn(async move {
                            wait_pidfd(fd).await;
                            rt.on_exit(&e).await;
                        });
                    }
                    _ => {
                        // It exited between the two checks.
                        self.record_exit(&entry, Some(st.started_at)).await;
                    }
                }
            }
            (_, Some(st)) => self.record_exit(&entry, Some(st.started_at)).await,
            (_, None) => {
                // Never started (or its start failed).
                let _ = rootfs::unmount(&dir.join("rootfs"));
                entry.live.send_modify(|l| {
                    l.status = Some(Status::Created);
                    l.exit = exit;
                });
            }
        }
        Ok(())
    }
}

fn no_exit() -> ExitInfo {
    ExitInfo {
        exit_code: 0,
        oom_killed: false,
        finished_at: Utc::now(),
        error: String::new(),
    }
}

/// The anonymous volumes (`-v /path`) of a container, for one re-adopted from disk: they
/// have generated names, so only the `-v` request tells them from named volumes.
fn anonymous_volumes(rec: &ContainerRecord) -> Vec<String> {
    rec.host_config
        .binds
        .iter()
        .filter_map(|b| match mounts::parse_volume(b) {
            Ok(MountRequest::Volume {
                name: None, target, ..
            }) => rec
                .mounts
                .iter()
                .find(|m| m.kind == "volume" && m.destination == target)
                .and_then(|m| m.name.clone()),
            _ => None,
        })
        .collect()
}

fn view(e: &Entry) -> ContainerView {
    ContainerView {
        record: e.record.clone(),
        live: e.live.borrow().clone(),
        dir: e.dir.clone(),
        health: e.health.get(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn state_root(o: &RuntimeOptions) -> PathBuf {
    o.run_dir.join("containers")
}

fn netns_dir(o: &RuntimeOptions) -> PathBuf {
    o.run_dir.join("netns")
}

fn online_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// `Some(file)` when a live helper holds the container's lock (the returned handle is just a
/// token to drop), `None` when the helper is gone.
fn helper_alive(dir: &Path) -> Option<File> {
    let f = File::open(dir.join(files::LOCK)).ok()?;
    match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {
            // We got it: nobody holds it. Release at once.
            let _ = rustix::fs::flock(&f, FlockOperation::Unlock);
            None
        }
        Err(_) => Some(f),
    }
}

/// Resolves when the process behind `fd` exits.
async fn wait_pidfd(fd: OwnedFd) {
    // SAFETY: an OwnedFd stays open and is the same descriptor for its whole life, which
    // AsyncFd owns.
    let registered = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
    match registered {
        Ok(afd) => {
            let _ = afd.readable().await;
            // Reap it if it is our child; not our child is fine.
            let _ = rustix::process::waitid(
                rustix::process::WaitId::PidFd(afd.get_ref().as_fd()),
                rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
            );
        }
        Err(err) => {
            let (fd, e) = err.into_parts();
            tracing::error!(error = %e, "cannot watch a container helper; polling instead");
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut p = [rustix::event::PollFd::new(
                    &fd,
                    rustix::event::PollFlags::IN,
                )];
                let zero = rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                if matches!(rustix::event::poll(&mut p, Some(&zero)), Ok(n) if n > 0) {
                    return;
                }
            }
        }
    }
}
