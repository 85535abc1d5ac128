//! The container model, shaped like Docker's API objects so that `inspect` output and the
//! create request read the same as Docker's (`Config`, `HostConfig`, `State`).
//!
//! Field names serialize in PascalCase as Docker's do. Optional Docker fields that shoal
//! does not implement are left out rather than faked.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::user::ResolvedUser;

/// The image-independent container configuration (Docker's `Config`). The engine merges the
/// image's own config into it before the runtime sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Config {
    pub hostname: String,
    pub domainname: String,
    pub user: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    /// Ports the image declares (`"80/tcp": {}`); recorded for the networking issue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    pub tty: bool,
    pub open_stdin: bool,
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    /// The image's or the user's health check; recorded for the services issue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    pub image: String,
    pub working_dir: String,
    pub entrypoint: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Seconds between the stop signal and SIGKILL (`--stop-timeout`); Docker's default is 10.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
}

/// Docker's `HealthConfig` (durations in nanoseconds, as Docker stores them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthConfig {
    pub test: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Docker's `HostConfig`: how the container is run on this node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    /// `-v` specifications as given: `name:/path[:ro]` or `/host:/path[:ro]`.
    pub binds: Vec<String>,
    /// `--tmpfs` mounts: target → options (`size=64m,mode=1777`).
    pub tmpfs: BTreeMap<String, String>,
    /// `none` (loopback only) or `host`.
    pub network_mode: String,
    pub auto_remove: bool,
    pub readonly_rootfs: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Memory limit in bytes (0 = none).
    pub memory: i64,
    /// CPU quota in units of 10^-9 CPUs (0 = none).
    pub nano_cpus: i64,
    /// Maximum number of processes (`None` or <= 0 = none).
    pub pids_limit: Option<i64>,
    /// Size of /dev/shm in bytes (Docker's default is 64 MiB).
    pub shm_size: i64,
    pub log_config: LogConfigSpec,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            binds: Vec::new(),
            tmpfs: BTreeMap::new(),
            network_mode: "none".to_owned(),
            auto_remove: false,
            readonly_rootfs: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            memory: 0,
            nano_cpus: 0,
            pids_limit: None,
            shm_size: 64 * 1024 * 1024,
            log_config: LogConfigSpec::default(),
        }
    }
}

/// Docker's `LogConfig`: always the `json-file` driver here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct LogConfigSpec {
    #[serde(rename = "Type")]
    pub kind: String,
    pub config: BTreeMap<String, String>,
}

impl Default for LogConfigSpec {
    fn default() -> Self {
        LogConfigSpec {
            kind: "json-file".to_owned(),
            config: BTreeMap::new(),
        }
    }
}

/// Network modes available until the networking issue lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A private network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
}

impl NetworkMode {
    /// Parses Docker's `--network` value.
    pub fn parse(s: &str) -> Option<NetworkMode> {
        match s {
            "" | "none" | "default" => Some(NetworkMode::None),
            "host" => Some(NetworkMode::Host),
            _ => None,
        }
    }
}

/// A mount resolved to a host source, ready for the OCI spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountPoint {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Volume name for volumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub source: String,
    pub destination: String,
    pub mode: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    /// Mount options for tmpfs (`size=…`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub options: Vec<String>,
}

/// Docker's `State` of a container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    pub status: Status,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub dead: bool,
    pub pid: i32,
    pub exit_code: i32,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    /// The health check's state, when the container has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub health: Option<crate::health::HealthState>,
}

/// Docker's container status words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    /// The word Docker prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// Docker's zero time, printed for times that have not happened yet.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Formats a time the way Docker's API does: Go's `time.RFC3339Nano`, nanoseconds with
/// trailing zeros dropped (`2024-01-01T00:00:00Z`, `2024-01-01T00:00:10.5Z`).
pub fn api_time(t: &DateTime<Utc>) -> String {
    let full = t.format("%Y-%m-%dT%H:%M:%S%.9f").to_string();
    format!("{}Z", full.trim_end_matches('0').trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_like_go_rfc3339nano() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(api_time(&t("2024-01-01T00:00:00Z")), "2024-01-01T00:00:00Z");
        assert_eq!(
            api_time(&t("2024-01-01T00:00:10.5Z")),
            "2024-01-01T00:00:10.5Z"
        );
        assert_eq!(
            api_time(&t("2024-01-01T00:00:10.123456789Z")),
            "2024-01-01T00:00:10.123456789Z"
        );
    }
}

/// What a caller (the engine) hands the runtime to create a container: the merged
/// configuration plus the image it runs on.
#[derive(Clone, Debug)]
pub struct NewContainer {
    /// Requested name (`--name`); a random Docker-style name when `None`.
    pub name: Option<String>,
    pub config: Config,
    pub host_config: HostConfig,
    /// The image ID (`sha256:…`).
    pub image_id: String,
    /// Unpacked layer directories, bottom layer first.
    pub layers: Vec<PathBuf>,
}

/// Everything the runtime persists about one container (`container.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub created: DateTime<Utc>,
    /// argv[0] of the workload, as Docker's `Path`.
    pub path: String,
    /// The rest of argv, as Docker's `Args`.
    pub args: Vec<String>,
    pub config: Config,
    pub host_config: HostConfig,
    pub image_id: String,
    pub layers: Vec<PathBuf>,
    pub user: ResolvedUser,
    pub env: Vec<String>,
    pub cwd: String,
    pub mounts: Vec<MountPoint>,
    pub network: NetworkMode,
    pub cgroups_path: String,
    /// Capabilities after `--cap-add`/`--cap-drop`.
    pub capabilities: Vec<String>,
}

/// How a container ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub exit_code: i32,
    pub oom_killed: bool,
    pub finished_at: DateTime<Utc>,
    /// Set when the runtime, not the workload, ended it (start failure, lost helper).
    #[serde(default)]
    pub error: String,
}
