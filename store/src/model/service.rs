//! Services and tasks.
//!
//! A user's [`ServiceSpec`] is Docker's engine-API `ServiceSpec`, field for field where shoal
//! implements the field, and serialises in Docker's PascalCase with durations in integer
//! nanoseconds: `service inspect` prints it as is, and a Docker-API body reads into it.
//! The objects around the specs ([`Service`], [`Task`]) follow the rest of the model
//! (snake_case bookkeeping), and the API layer shapes them as Docker's for output.
//!
//! Task states only move forward ([`TaskState`] is ordered as SwarmKit's); a task that ends
//! is replaced by a new task in the same slot, never restarted in place.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Meta, Resources};

// ---------------------------------------------------------------------------------------
// Service

/// A service: the desired state a user declared, and where its rollout stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Service {
    pub id: String,
    pub meta: Meta,
    pub spec: ServiceSpec,
    /// The spec before the last update (what `rollback` returns to).
    pub previous_spec: Option<ServiceSpec>,
    /// Counts spec changes (create = 1); tasks remember the one they were made from.
    pub spec_version: u64,
    /// Ports and virtual IPs (filled by the networking issue).
    pub endpoint: ServiceEndpoint,
    /// The rolling update or rollback in progress or last finished; None before the first
    /// update.
    pub update_status: Option<UpdateStatus>,
    /// For jobs: which run of the job is current (bumped by every update of a job).
    pub job_status: Option<JobStatus>,
    /// `service pause`: every task's container is frozen (cgroup freezer) until unpaused.
    pub paused: bool,
    /// `--with-registry-auth`: the client's `X-Registry-Auth` value, handed to the nodes
    /// with each task so they can pull (encrypted at rest like every value; never shown).
    pub registry_auth: String,
}

/// Docker's `ServiceSpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub task_template: TaskSpec,
    pub mode: ServiceMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_spec: Option<EndpointSpec>,
}

/// Docker's `ServiceMode`: exactly one of the four is set (none set reads as replicated
/// with one replica, Docker's default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceMode {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicated: Option<ReplicatedMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicated_job: Option<ReplicatedJobMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_job: Option<Empty>,
}

/// The mode as one value, for matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Replicated {
        replicas: u64,
    },
    Global,
    ReplicatedJob {
        max_concurrent: u64,
        total_completions: u64,
    },
    GlobalJob,
}

impl ServiceMode {
    /// `replicated` with `n` replicas.
    pub fn replicated(n: u64) -> ServiceMode {
        ServiceMode {
            replicated: Some(ReplicatedMode { replicas: n }),
            ..Default::default()
        }
    }

    /// The mode as an enum. Jobs with zero max-concurrent or completions read as Docker
    /// defaults them: 1 each.
    pub fn get(&self) -> Mode {
        if self.global.is_some() {
            Mode::Global
        } else if let Some(j) = &self.replicated_job {
            Mode::ReplicatedJob {
                max_concurrent: j.max_concurrent.max(1),
                total_completions: j.total_completions.max(1),
            }
        } else if self.global_job.is_some() {
            Mode::GlobalJob
        } else {
            Mode::Replicated {
                replicas: self.replicated.as_ref().map_or(1, |r| r.replicas),
            }
        }
    }

    /// For `service ls` MODE: `replicated`, `global`, `replicated job`, `global job`.
    pub fn name(&self) -> &'static str {
        match self.get() {
            Mode::Replicated { .. } => "replicated",
            Mode::Global => "global",
            Mode::ReplicatedJob { .. } => "replicated job",
            Mode::GlobalJob => "global job",
        }
    }

    /// Whether tasks run to completion.
    pub fn is_job(&self) -> bool {
        matches!(self.get(), Mode::ReplicatedJob { .. } | Mode::GlobalJob)
    }
}

/// An empty JSON object (`"Global": {}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReplicatedMode {
    pub replicas: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReplicatedJobMode {
    pub max_concurrent: u64,
    pub total_completions: u64,
}

/// Docker's `UpdateConfig` (also the rollback config). Durations in nanoseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateConfig {
    /// Tasks updated at once (0 = all at once).
    pub parallelism: u64,
    /// Between batches.
    pub delay: i64,
    /// `pause`, `continue` or `rollback`.
    pub failure_action: String,
    /// How long a new task is watched for failure after it starts.
    pub monitor: i64,
    /// Failed fraction tolerated before the failure action.
    pub max_failure_ratio: f64,
    /// `stop-first` or `start-first`.
    pub order: String,
}

impl Default for UpdateConfig {
    /// Docker's defaults: one at a time, no delay, pause on failure, 5 s monitor, stop-first.
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: 0,
            failure_action: "pause".into(),
            monitor: 5_000_000_000,
            max_failure_ratio: 0.0,
            order: "stop-first".into(),
        }
    }
}

impl UpdateConfig {
    /// Whether the new task starts before the old one stops.
    pub fn start_first(&self) -> bool {
        self.order == "start-first"
    }
    /// The delay between batches.
    pub fn delay(&self) -> Duration {
        nanos_to_duration(self.delay)
    }
    /// The monitor window.
    pub fn monitor(&self) -> Duration {
        nanos_to_duration(self.monitor)
    }
}

/// Docker's `EndpointSpec` (used by the networking issue).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointSpec {
    /// `vip` or `dnsrr`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mode: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
}

/// A published port (Docker's `PortConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortConfig {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub target_port: u32,
    pub published_port: u32,
    /// `ingress` or `host`.
    pub publish_mode: String,
}

/// Where the service can be reached (filled by the networking issue).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceEndpoint {
    pub spec: EndpointSpec,
    pub ports: Vec<PortConfig>,
    /// `(network id, address/prefix)`.
    pub virtual_ips: Vec<(String, String)>,
}

/// The state of a rollout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    #[default]
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

impl UpdateState {
    /// As Docker's API spells it (`rollback_started`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        }
    }

    /// Whether tasks are being replaced now.
    pub fn in_progress(self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }

    /// Whether this is a rollback.
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            UpdateState::RollbackStarted
                | UpdateState::RollbackPaused
                | UpdateState::RollbackCompleted
        )
    }
}

/// Docker's `UpdateStatus`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub message: String,
}

/// Docker's `JobStatus`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobStatus {
    /// Bumped by every update of the job: tasks of older iterations are not counted.
    pub job_iteration: u64,
    pub last_execution: Option<DateTime<Utc>>,
}

// ---------------------------------------------------------------------------------------
// Task template

/// Docker's `TaskSpec`: what every task of a service runs and how it is placed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskSpec {
    pub container_spec: ContainerSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Bumped by `update --force`: tasks of an older value are replaced.
    pub force_update: u64,
    /// Networks to attach (the networking issue).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachmentConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<Driver>,
}

impl TaskSpec {
    /// The restart policy with Docker's defaults (`any`, 5 s delay, unlimited, no window);
    /// jobs default to `on-failure`.
    pub fn restart(&self, job: bool) -> RestartPolicy {
        let mut p = self.restart_policy.clone().unwrap_or_default();
        if p.condition.is_empty() {
            p.condition = if job { "on-failure" } else { "any" }.into();
        }
        p
    }

    /// The placement, or an empty one.
    pub fn placement(&self) -> Placement {
        self.placement.clone().unwrap_or_default()
    }

    /// CPU and memory reserved per task.
    pub fn reservations(&self) -> Resources {
        self.resources
            .as_ref()
            .and_then(|r| r.reservations.clone())
            .map(|r| Resources {
                nano_cpus: r.nano_cpus,
                memory_bytes: r.memory_bytes,
            })
            .unwrap_or_default()
    }
}

/// Docker's `ContainerSpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerSpec {
    /// The image; pinned to `name:tag@sha256:…` by the manager at create/update.
    pub image: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Overrides the image's entrypoint (`--entrypoint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Overrides the image's cmd (the `CMD…` after the image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// May use templates (`{{.Task.Slot}}`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dir: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    /// Nanoseconds; None = Docker's default (10 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<i64>,
    /// Overrides the image's HEALTHCHECK; `Test: ["NONE"]` disables it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    pub read_only: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capability_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capability_drop: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
}

impl ContainerSpec {
    /// The stop grace period (Docker's default 10 s).
    pub fn stop_grace_period(&self) -> Duration {
        self.stop_grace_period
            .map_or(Duration::from_secs(10), nanos_to_duration)
    }
}

/// Docker's `HealthConfig` (durations in nanoseconds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthConfig {
    /// `[]` inherit, `["NONE"]` off, `["CMD", …]`, `["CMD-SHELL", "…"]`.
    pub test: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Docker's `Mount` (`--mount type=volume|bind|tmpfs,…`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Mount {
    /// `volume`, `bind` or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    pub target: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_options: Option<VolumeOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
}

/// Options of a volume mount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeOptions {
    pub no_copy: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Options of a tmpfs mount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TmpfsOptions {
    #[serde(skip_serializing_if = "is_zero")]
    pub size_bytes: i64,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub mode: u32,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// Docker's `ResourceRequirements`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ResourceRequirements {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Reservation>,
}

/// Limits (`--limit-cpu`, `--limit-memory`, `--limit-pids`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Limit {
    #[serde(rename = "NanoCPUs", skip_serializing_if = "is_zero")]
    pub nano_cpus: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub memory_bytes: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub pids: i64,
}

/// Reservations (`--reserve-cpu`, `--reserve-memory`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Reservation {
    #[serde(rename = "NanoCPUs", skip_serializing_if = "is_zero")]
    pub nano_cpus: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub memory_bytes: i64,
}

/// Docker's `RestartPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    /// `none`, `on-failure` or `any` (empty = the default for the mode).
    pub condition: String,
    /// Nanoseconds; None = 5 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<i64>,
    /// 0 = unlimited.
    pub max_attempts: u64,
    /// Nanoseconds; 0 = attempts are counted forever.
    pub window: i64,
}

impl RestartPolicy {
    /// The delay before a replacement starts (default 5 s).
    pub fn delay(&self) -> Duration {
        self.delay.map_or(Duration::from_secs(5), nanos_to_duration)
    }
    /// The window attempts are counted in (zero = unbounded).
    pub fn window(&self) -> Duration {
        nanos_to_duration(self.window)
    }
}

/// Docker's `Placement`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Placement {
    /// `node.role==manager`, `node.labels.zone!=b`, …
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PlacementPreference>,
    /// At most this many tasks of the service per node (0 = unlimited).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub max_replicas: u64,
    /// Platforms the image runs on (empty = any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformSpec>,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// `{"Spread": {"SpreadDescriptor": "node.labels.zone"}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PlacementPreference {
    pub spread: SpreadOver,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SpreadOver {
    pub spread_descriptor: String,
}

/// A platform in a placement (Docker's `Platform` with capitalised names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PlatformSpec {
    pub architecture: String,
    #[serde(rename = "OS")]
    pub os: String,
}

/// A network a task joins (the networking issue).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkAttachmentConfig {
    pub target: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A log driver (only `json-file` runs here).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Driver {
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------------------
// Task

/// One scheduled instance of a service: a slot (replicated) or a node (global), run once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Task {
    pub id: String,
    pub meta: Meta,
    /// The service's task template when the task was made (image pinned).
    pub spec: TaskSpec,
    /// The service's `spec_version` the task was made from.
    pub spec_version: u64,
    pub service_id: String,
    /// The service's name (for `ps` and container names).
    pub service_name: String,
    /// 1-based slot for replicated services and jobs; 0 for global ones.
    pub slot: u64,
    /// The node the task is assigned to (empty until scheduled; set at creation for
    /// global modes).
    pub node_id: String,
    pub status: TaskStatus,
    /// What the orchestrator wants (Running, or Shutdown/Remove to stop it).
    pub desired_state: TaskState,
    /// Addresses the allocator reserved (the networking issue fills them).
    pub networks: Vec<NetworkAttachment>,
    /// For jobs: the iteration the task belongs to.
    pub job_iteration: Option<u64>,
    /// How many times this slot was restarted inside the restart window, this task
    /// included (0 for the first task of a slot).
    pub restart_attempt: u64,
    /// When the restart window this task counts in began.
    pub restart_window_start: Option<DateTime<Utc>>,
    /// Whether the task's container should be frozen (`service pause`); not part of the
    /// spec, so pausing does not replace tasks.
    pub paused: bool,
    /// The service's registry credentials (`X-Registry-Auth`), for the node's pull.
    pub registry_auth: String,
}

impl Task {
    /// The task name as Docker prints it: `service.slot` or `service.node-id`.
    pub fn name(&self) -> String {
        if self.slot > 0 {
            format!("{}.{}", self.service_name, self.slot)
        } else {
            format!("{}.{}", self.service_name, self.node_id)
        }
    }

    /// The container name on the node: `service.slot.task-id` (as Docker names it).
    pub fn container_name(&self) -> String {
        format!("{}.{}", self.name(), self.id)
    }

    /// Whether the task is running or may still come to run.
    pub fn is_runnable(&self) -> bool {
        self.desired_state <= TaskState::Running && self.status.state <= TaskState::Running
    }
}

/// An address reserved for a task on a network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkAttachment {
    pub network_id: String,
    pub addresses: Vec<String>,
}

/// A task's observed state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskStatus {
    /// When the state was entered.
    pub timestamp: Option<DateTime<Utc>>,
    pub state: TaskState,
    /// What happened (`started`, `scheduler assigned task to node`, …).
    pub message: String,
    /// Why it failed (`task: non-zero exit (1)`, `no suitable node (…)`).
    pub err: String,
    pub container: Option<ContainerStatus>,
    /// `healthy`, `unhealthy`, `starting`, or empty without a health check.
    pub health: String,
    /// Whether the container is frozen now.
    pub paused: bool,
    /// When the task first ran (kept in later states): a rolling update counts a task that
    /// ends within its monitor window from here as failed.
    pub started_at: Option<DateTime<Utc>>,
}

/// The container behind a task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerStatus {
    pub container_id: String,
    pub pid: i64,
    pub exit_code: i64,
}

/// Task states in SwarmKit's order; a task only moves forward.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    #[default]
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Ready,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Remove,
    Orphaned,
}

impl TaskState {
    /// Every state, in order.
    pub const ALL: [TaskState; 14] = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Ready,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Shutdown,
        TaskState::Failed,
        TaskState::Rejected,
        TaskState::Remove,
        TaskState::Orphaned,
    ];

    /// The lowercase name (Docker's API and filters).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Ready => "ready",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Remove => "remove",
            TaskState::Orphaned => "orphaned",
        }
    }

    /// As `service ps` writes it: `Running`, `Complete`, …
    pub fn title(self) -> &'static str {
        match self {
            TaskState::New => "New",
            TaskState::Pending => "Pending",
            TaskState::Assigned => "Assigned",
            TaskState::Accepted => "Accepted",
            TaskState::Preparing => "Preparing",
            TaskState::Ready => "Ready",
            TaskState::Starting => "Starting",
            TaskState::Running => "Running",
            TaskState::Complete => "Complete",
            TaskState::Shutdown => "Shutdown",
            TaskState::Failed => "Failed",
            TaskState::Rejected => "Rejected",
            TaskState::Remove => "Remove",
            TaskState::Orphaned => "Orphaned",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether the task has ended (COMPLETE or later).
    pub fn is_terminal(self) -> bool {
        self > TaskState::Running
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Nanoseconds (Docker's encoding) as a `Duration`; negative reads as zero.
pub fn nanos_to_duration(n: i64) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_spec_reads_dockers_json() {
        let docker = r#"{
          "Name": "web",
          "Labels": {"a": "b"},
          "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox:latest", "Args": ["sleep", "60"],
              "StopGracePeriod": 0, "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000}},
            "Resources": {"Limits": {"NanoCPUs": 500000000, "MemoryBytes": 1048576, "Pids": 10},
                          "Reservations": {"NanoCPUs": 100000000}},
            "RestartPolicy": {"Condition": "on-failure", "Delay": 0, "MaxAttempts": 3},
            "Placement": {"Constraints": ["node.role==manager"],
              "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}], "MaxReplicas": 2},
            "ForceUpdate": 0
          },
          "Mode": {"Replicated": {"Replicas": 3}},
          "UpdateConfig": {"Parallelism": 2, "FailureAction": "rollback", "Order": "start-first", "MaxFailureRatio": 0.5},
          "SomethingNew": 1
        }"#;
        let s: ServiceSpec = serde_json::from_str(docker).unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(s.mode.get(), Mode::Replicated { replicas: 3 });
        let c = &s.task_template.container_spec;
        assert_eq!(
            c.args.as_deref(),
            Some(&["sleep".to_owned(), "60".to_owned()][..])
        );
        assert_eq!(c.stop_grace_period(), Duration::ZERO);
        let r = s.task_template.resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap().nano_cpus, 500_000_000);
        assert_eq!(s.task_template.reservations().nano_cpus, 100_000_000);
        let rp = s.task_template.restart(false);
        assert_eq!(rp.condition, "on-failure");
        assert_eq!(rp.delay(), Duration::ZERO);
        assert_eq!(rp.max_attempts, 3);
        let p = s.task_template.placement();
        assert_eq!(
            p.preferences[0].spread.spread_descriptor,
            "node.labels.zone"
        );
        let u = s.update_config.unwrap();
        assert!(u.start_first());
        // Absent fields of a given config take Docker's CLI defaults.
        assert_eq!(u.monitor(), Duration::from_secs(5));
        // Written back in Docker's names.
        let v = serde_json::to_value(ServiceSpec {
            mode: ServiceMode::replicated(2),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v["Mode"]["Replicated"]["Replicas"], 2);
        assert!(v["Mode"].get("Global").is_none());
    }

    #[test]
    fn modes_and_defaults() {
        assert_eq!(
            ServiceMode::default().get(),
            Mode::Replicated { replicas: 1 }
        );
        let g = ServiceMode {
            global: Some(Empty {}),
            ..Default::default()
        };
        assert_eq!(g.get(), Mode::Global);
        assert_eq!(g.name(), "global");
        let j = ServiceMode {
            replicated_job: Some(ReplicatedJobMode::default()),
            ..Default::default()
        };
        assert_eq!(
            j.get(),
            Mode::ReplicatedJob {
                max_concurrent: 1,
                total_completions: 1
            }
        );
        assert!(j.is_job());
        assert_eq!(TaskSpec::default().restart(true).condition, "on-failure");
        assert_eq!(TaskSpec::default().restart(false).condition, "any");
        assert_eq!(RestartPolicy::default().delay(), Duration::from_secs(5));
        assert_eq!(
            ContainerSpec::default().stop_grace_period(),
            Duration::from_secs(10)
        );
        let u = UpdateConfig::default();
        assert_eq!((u.parallelism, u.monitor()), (1, Duration::from_secs(5)));
    }

    #[test]
    fn task_states_are_ordered_and_named() {
        assert!(TaskState::New < TaskState::Pending);
        assert!(TaskState::Running < TaskState::Complete);
        assert!(TaskState::Rejected < TaskState::Orphaned);
        assert!(TaskState::Complete.is_terminal());
        assert!(!TaskState::Running.is_terminal());
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
            assert_eq!(s.title().to_lowercase(), s.as_str());
        }
        let t = Task {
            id: "abc".into(),
            service_name: "web".into(),
            slot: 2,
            ..Default::default()
        };
        assert_eq!(t.name(), "web.2");
        assert_eq!(t.container_name(), "web.2.abc");
    }
}
