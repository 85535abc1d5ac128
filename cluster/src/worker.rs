//! The task executor of a node: turns the tasks the dispatcher assigns to this node into
//! containers, and what happens to those containers into task statuses.
//!
//! Pure cores, unit-tested: [`TemplateContext::expand`] (SwarmKit's templates in hostname,
//! env values and mounts), [`container_config`] (a task as Docker's `Config`/`HostConfig`),
//! [`step`] (SwarmKit's `exec.Do`: what a task's desired and current state call for next)
//! and [`Ledger`] (status bookkeeping: latest status per task, pending until acknowledged,
//! forward-only).
//!
//! Around them, [`Worker`] runs one runner (a tokio task) per known task. A runner moves
//! its task forward one step at a time, re-reading the assignment between steps and while
//! it waits (a watch channel per task), so a new desired state or a pause reaches it at
//! once. Image fetch, create and start of all runners share [`MAX_CONCURRENT_STARTS`]
//! permits. Containers are the truth across daemon restarts: a container labelled
//! `com.docker.swarm.task.id` is that task's, found again by [`Worker::start`], so a task
//! is never started twice.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use shoal_image::ProgressSink;
use shoal_runtime::manager::Live;
use shoal_runtime::model::{Config, HealthConfig as RuntimeHealth, HostConfig, Status};
use shoal_runtime::{ContainerView, Runtime, RuntimeError};
use shoal_store::model::{ContainerSpec, ContainerStatus, Task, TaskState, TaskStatus};
use tokio::sync::{Notify, Semaphore, watch};

use crate::engine::{Engine, EngineError};
use crate::rpc::TaskReport;

/// How many tasks fetch their image, create and start their container at once.
pub const MAX_CONCURRENT_STARTS: usize = 16;

/// How often a running task's health status is read.
const HEALTH_POLL: Duration = Duration::from_millis(250);

/// The label that ties a container to its task (Docker's).
pub const TASK_ID_LABEL: &str = "com.docker.swarm.task.id";

/// The text Docker puts after the exit code of a task failed by its health check.
const UNHEALTHY: &str = "dockerexec: unhealthy container";

// ---------------------------------------------------------------------------------------
// Public surface

/// What a task's templates and labels know about this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub node_id: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
}

/// Where a task's image comes from (the agent supplies peer fetch + registry pull).
pub trait ImageProvider: Send + Sync {
    /// Makes `reference` (e.g. `docker.io/library/busybox:latest@sha256:<manifest>` or a
    /// bare `sha256:<image id>`) available locally and returns the name to create from.
    /// `registry_auth` is the service's `X-Registry-Auth` value (empty: anonymous).
    fn ensure(
        &self,
        reference: &str,
        registry_auth: &str,
    ) -> BoxFuture<'static, Result<String, String>>;
}

/// Local store only, then a registry pull (no credentials) — the default provider.
pub struct LocalOrPull {
    pub engine: Engine,
}

impl ImageProvider for LocalOrPull {
    fn ensure(
        &self,
        reference: &str,
        _registry_auth: &str,
    ) -> BoxFuture<'static, Result<String, String>> {
        let engine = self.engine.clone();
        let reference = reference.to_owned();
        Box::pin(async move {
            if engine.images.get(&reference).is_ok() {
                return Ok(reference);
            }
            // As Docker's executor: a failed pull leaves the image missing, and the task
            // is rejected with the create error, `No such image: …`.
            let missing = || format!("No such image: {reference}");
            if reference.starts_with("sha256:") {
                return Err(missing());
            }
            match engine
                .images
                .pull(&reference, None, ProgressSink::none())
                .await
            {
                // Created by the reference when it now resolves (containers show it as
                // Docker's do), else by the ID.
                Ok(_) if engine.images.get(&reference).is_ok() => Ok(reference),
                Ok(record) => Ok(record.id),
                Err(e) => {
                    tracing::warn!(%reference, error = %e, "cannot pull the image of a task");
                    Err(missing())
                }
            }
        })
    }
}

/// Why a task could not be turned into a running container (the text becomes the task
/// status's `err`, worded as Docker's).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("expanding env failed: expanding env {entry:?}: {source}")]
    Env {
        entry: String,
        source: TemplateError,
    },
    #[error("expanding mounts failed: expanding mount {field} {value:?}: {source}")]
    MountTemplate {
        field: &'static str,
        value: String,
        source: TemplateError,
    },
    #[error("expanding hostname failed: {source}")]
    Hostname { source: TemplateError },
    #[error("invalid mount config for type \"{kind}\": {reason}")]
    Mount { kind: String, reason: &'static str },
    #[error("invalid mount config for type \"bind\": bind source path does not exist: {0}")]
    BindSource(String),
    #[error("invalid mount config: mount type unknown: {0:?}")]
    MountType(String),
    /// The image provider's text (`No such image: …`).
    #[error("{message}")]
    Image { reference: String, message: String },
    #[error("{0}")]
    Create(#[from] EngineError),
    #[error("starting container failed: {0}")]
    Start(String),
    #[error("task container lost")]
    ContainerLost,
}

/// A template that cannot be expanded (worded after Go's `text/template`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template: expansion:1: unclosed action")]
    Unclosed,
    #[error(
        "template: expansion: executing \"expansion\" at <{action}>: can't evaluate field {field}"
    )]
    UnknownField { action: String, field: String },
    #[error("template: expansion: unsupported action {{{{{action}}}}}")]
    Unsupported { action: String },
}

// ---------------------------------------------------------------------------------------
// Templates

/// The values a task's templates can use: SwarmKit's template context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateContext {
    pub service_id: String,
    pub service_name: String,
    pub node_id: String,
    pub node_hostname: String,
    pub node_os: String,
    pub node_arch: String,
    pub task_id: String,
    /// The container name (`service.slot.task-id`), as SwarmKit's `naming.Task`.
    pub task_name: String,
    /// The slot; the node ID for global tasks (they have none).
    pub task_slot: String,
}

impl TemplateContext {
    /// The context of `task` on this node.
    pub fn new(task: &Task, node: &NodeFacts) -> TemplateContext {
        let node_id = if task.node_id.is_empty() {
            node.node_id.clone()
        } else {
            task.node_id.clone()
        };
        TemplateContext {
            service_id: task.service_id.clone(),
            service_name: task.service_name.clone(),
            task_slot: if task.slot != 0 {
                task.slot.to_string()
            } else {
                node_id.clone()
            },
            node_id,
            node_hostname: node.hostname.clone(),
            node_os: node.os.clone(),
            node_arch: node.arch.clone(),
            task_id: task.id.clone(),
            task_name: task.container_name(),
        }
    }

    /// Expands `{{.Service.Name}}`-style fields in `text` (whitespace and Go's `{{-`/`-}}`
    /// trim markers allowed, `{{/* comments */}}` dropped). An unknown field is an error.
    pub fn expand(&self, text: &str) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError::Unclosed)?;
            let mut inner = &after[..close];
            let mut before = &rest[..open];
            rest = &after[close + 2..];
            if inner.starts_with('-') && inner[1..].starts_with(char::is_whitespace) {
                before = before.trim_end();
                inner = &inner[1..];
            }
            let trim_after =
                inner.ends_with('-') && inner[..inner.len() - 1].ends_with(char::is_whitespace);
            if trim_after {
                inner = &inner[..inner.len() - 1];
                rest = rest.trim_start();
            }
            out.push_str(before);
            let action = inner.trim();
            if action.starts_with("/*") && action.ends_with("*/") {
                continue;
            }
            out.push_str(self.field(action)?);
        }
        out.push_str(rest);
        Ok(out)
    }

    fn field(&self, action: &str) -> Result<&str, TemplateError> {
        let unsupported = || TemplateError::Unsupported {
            action: action.to_owned(),
        };
        let Some(path) = action.strip_prefix('.') else {
            return Err(unsupported());
        };
        let segs: Vec<&str> = path.split('.').collect();
        if segs
            .iter()
            .any(|s| s.is_empty() || !s.chars().all(|c| c.is_alphanumeric() || c == '_'))
        {
            return Err(unsupported());
        }
        let unknown = |field: &str| TemplateError::UnknownField {
            action: action.to_owned(),
            field: field.to_owned(),
        };
        match segs.as_slice() {
            ["Service", "ID"] => Ok(&self.service_id),
            ["Service", "Name"] => Ok(&self.service_name),
            ["Node", "ID"] => Ok(&self.node_id),
            ["Node", "Hostname"] => Ok(&self.node_hostname),
            ["Node", "Platform", "OS"] => Ok(&self.node_os),
            ["Node", "Platform", "Architecture"] => Ok(&self.node_arch),
            ["Task", "ID"] => Ok(&self.task_id),
            ["Task", "Name"] => Ok(&self.task_name),
            ["Task", "Slot"] => Ok(&self.task_slot),
            // Service labels exist in SwarmKit's context but tasks do not carry them here.
            ["Service", "Labels", ..] => Err(unsupported()),
            [first, ..] if !["Service", "Node", "Task"].contains(first) => Err(unknown(first)),
            ["Service" | "Task", second, ..]
                if !["ID", "Name", "Slot"].contains(second)
                    || (segs[0] == "Service" && *second == "Slot") =>
            {
                Err(unknown(second))
            }
            ["Node", second, ..] if !["ID", "Hostname", "Platform"].contains(second) => {
                Err(unknown(second))
            }
            ["Node", "Platform", third, ..] if !["OS", "Architecture"].contains(third) => {
                Err(unknown(third))
            }
            // A struct (`{{.Task}}`) or a field of a string (`{{.Task.ID.X}}`).
            [.., last] => Err(unknown(last)),
            [] => Err(unsupported()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Task → container

/// The stop grace period of a task in whole seconds, rounded up (Docker's 10 s default).
pub fn stop_timeout_secs(spec: &ContainerSpec) -> i64 {
    let d = spec.stop_grace_period();
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// The container a task runs in, as Docker's executor builds it: `image` is the name the
/// image provider returned; templates are expanded; the swarm labels are added.
pub fn container_config(
    task: &Task,
    node: &NodeFacts,
    image: &str,
) -> Result<(Config, HostConfig), WorkerError> {
    let c = &task.spec.container_spec;
    let ctx = TemplateContext::new(task, node);

    let mut env = Vec::with_capacity(c.env.len());
    for entry in &c.env {
        env.push(match entry.split_once('=') {
            Some((k, v)) => {
                let v = ctx.expand(v).map_err(|source| WorkerError::Env {
                    entry: entry.clone(),
                    source,
                })?;
                format!("{k}={v}")
            }
            None => entry.clone(),
        });
    }
    let hostname = ctx
        .expand(&c.hostname)
        .map_err(|source| WorkerError::Hostname { source })?;

    let mut labels = c.labels.clone();
    for (k, v) in [
        ("task", String::new()),
        ("task.id", task.id.clone()),
        ("task.name", task.container_name()),
        ("node.id", ctx.node_id.clone()),
        ("service.id", task.service_id.clone()),
        ("service.name", task.service_name.clone()),
    ] {
        labels.insert(format!("com.docker.swarm.{k}"), v);
    }

    // With a command, it replaces the entrypoint and the args are its arguments (the
    // image's cmd is dropped); args alone replace the image's cmd.
    let (entrypoint, cmd) = match &c.command {
        Some(command) if !command.is_empty() => (
            Some(command.clone()),
            Some(c.args.clone().unwrap_or_default()),
        ),
        _ => (None, c.args.clone().filter(|a| !a.is_empty())),
    };

    let config = Config {
        hostname,
        user: c.user.clone(),
        env,
        cmd,
        healthcheck: c.healthcheck.as_ref().map(|h| RuntimeHealth {
            test: h.test.clone(),
            interval: h.interval,
            timeout: h.timeout,
            start_period: h.start_period,
            start_interval: 0,
            retries: h.retries,
        }),
        image: image.to_owned(),
        working_dir: c.dir.clone(),
        entrypoint,
        labels,
        stop_signal: (!c.stop_signal.is_empty()).then(|| c.stop_signal.clone()),
        stop_timeout: Some(stop_timeout_secs(c)),
        ..Config::default()
    };

    let limits = task
        .spec
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .unwrap_or_default();
    let mut host = HostConfig {
        network_mode: "none".into(),
        readonly_rootfs: c.read_only,
        cap_add: c.capability_add.clone(),
        cap_drop: c.capability_drop.clone(),
        memory: limits.memory_bytes,
        nano_cpus: limits.nano_cpus,
        pids_limit: (limits.pids > 0).then_some(limits.pids),
        ..HostConfig::default()
    };
    for m in &c.mounts {
        let expand = |field: &'static str, value: &str| {
            ctx.expand(value)
                .map_err(|source| WorkerError::MountTemplate {
                    field,
                    value: value.to_owned(),
                    source,
                })
        };
        let source = expand("source", &m.source)?;
        let target = expand("target", &m.target)?;
        let invalid = |reason| WorkerError::Mount {
            kind: m.kind.clone(),
            reason,
        };
        if target.is_empty() {
            return Err(invalid("field Target must not be empty"));
        }
        let ro = if m.read_only { ":ro" } else { "" };
        match m.kind.as_str() {
            "volume" | "" => {
                if source.is_empty() {
                    // An anonymous volume (the runtime's `-v /target` form has no mode).
                    host.binds.push(target);
                } else {
                    host.binds.push(format!("{source}:{target}{ro}"));
                }
            }
            "bind" => {
                if source.is_empty() {
                    return Err(invalid("field Source must not be empty"));
                }
                if !source.starts_with('/') {
                    return Err(invalid("invalid mount path: mount path must be absolute"));
                }
                host.binds.push(format!("{source}:{target}{ro}"));
            }
            "tmpfs" => {
                if !source.is_empty() {
                    return Err(invalid("field Source must not be specified"));
                }
                let mut opts = Vec::new();
                if let Some(t) = &m.tmpfs_options {
                    if t.size_bytes > 0 {
                        opts.push(format!("size={}", t.size_bytes));
                    }
                    if t.mode != 0 {
                        opts.push(format!("mode={:o}", t.mode));
                    }
                }
                if m.read_only {
                    opts.push("ro".into());
                }
                host.tmpfs.insert(target, opts.join(","));
            }
            other => return Err(WorkerError::MountType(other.to_owned())),
        }
    }
    Ok((config, host))
}

/// Host paths of the bind mounts in `binds` (`/host:/target[:ro]`).
fn bind_sources(binds: &[String]) -> impl Iterator<Item = &str> {
    binds.iter().filter_map(|b| {
        let mut parts = b.split(':');
        let first = parts.next()?;
        (first.starts_with('/') && parts.next().is_some()).then_some(first)
    })
}

// ---------------------------------------------------------------------------------------
// The next step of a task

/// Whether and how the container of a task exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    None,
    Created,
    Running,
    Exited,
}

/// What a task needs next (SwarmKit's `exec.Do`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing until the assignment changes.
    Idle,
    /// An immediate move to the next state.
    Move(TaskState, &'static str),
    /// Fetch the image and create the container (then Ready "prepared").
    Prepare,
    /// Start the container (then Running "started", after it is healthy if it has a check).
    Start,
    /// Follow the container: exit, health, pause.
    Watch,
    /// Stop the container (then Shutdown "shutdown").
    Shutdown,
    /// The task says it started but its container is gone (Failed "task container lost").
    Lost,
}

/// The next step of a task in state `state` whose orchestrator wants `desired`.
pub fn step(desired: TaskState, state: TaskState, container: Presence) -> Step {
    use TaskState as S;
    if desired >= S::Shutdown {
        return if state >= S::Complete {
            Step::Idle
        } else {
            Step::Shutdown
        };
    }
    // These proceed past the desired state: the work of the state is under way.
    match (state, container) {
        (S::Preparing, _) => return Step::Prepare,
        (S::Starting, Presence::Created) => return Step::Start,
        (S::Starting | S::Running, Presence::Running | Presence::Exited) => return Step::Watch,
        (S::Starting | S::Running, _) => return Step::Lost,
        _ => {}
    }
    if state.is_terminal() || state >= desired {
        return Step::Idle;
    }
    match state {
        S::New | S::Pending | S::Assigned => Step::Move(S::Accepted, "accepted"),
        S::Accepted => Step::Move(S::Preparing, "preparing"),
        // A task prepared before a restart whose container is gone is prepared again.
        S::Ready if container == Presence::None => Step::Prepare,
        S::Ready => Step::Move(S::Starting, "starting"),
        _ => Step::Idle,
    }
}

// ---------------------------------------------------------------------------------------
// Statuses

/// How a task's container ended, for its final status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCause {
    /// On its own.
    Natural,
    /// Stopped because its health check failed.
    Unhealthy,
    /// Stopped because the orchestrator wants the task shut down.
    Shutdown,
}

/// `prev` moved to `state` with SwarmKit's message for it.
pub fn moved(prev: &TaskStatus, state: TaskState, message: &str, now: DateTime<Utc>) -> TaskStatus {
    TaskStatus {
        timestamp: Some(now),
        state,
        message: message.to_owned(),
        err: String::new(),
        container: prev.container.clone(),
        health: prev.health.clone(),
        paused: prev.paused && !state.is_terminal(),
        started_at: match prev.started_at {
            None if state == TaskState::Running => Some(now),
            s => s,
        },
    }
}

/// A failure at `prev`'s state: Rejected before the container was being started, Failed
/// from then on; the message stays the state's (SwarmKit's `fatal`).
pub fn fatal(prev: &TaskStatus, err: String, now: DateTime<Utc>) -> TaskStatus {
    TaskStatus {
        timestamp: Some(now),
        state: if prev.state < TaskState::Starting {
            TaskState::Rejected
        } else {
            TaskState::Failed
        },
        message: prev.message.clone(),
        err,
        container: prev.container.clone(),
        health: prev.health.clone(),
        paused: false,
        started_at: prev.started_at,
    }
}

/// The final status of a task whose container `container_id` exited with `code`.
pub fn exited(
    prev: &TaskStatus,
    container_id: &str,
    code: i64,
    cause: ExitCause,
    now: DateTime<Utc>,
) -> TaskStatus {
    let mut s = match (cause, code) {
        (ExitCause::Shutdown, _) => moved(prev, TaskState::Shutdown, "shutdown", now),
        (ExitCause::Natural, 0) => moved(prev, TaskState::Complete, "finished", now),
        (ExitCause::Natural, _) => fatal(prev, format!("task: non-zero exit ({code})"), now),
        (ExitCause::Unhealthy, _) => fatal(
            prev,
            format!("task: non-zero exit ({code}): {UNHEALTHY}"),
            now,
        ),
    };
    s.state = s.state.max(TaskState::Complete);
    s.paused = false;
    s.container = Some(ContainerStatus {
        container_id: container_id.to_owned(),
        pid: 0,
        exit_code: code,
    });
    s
}

/// What a container found at start says about its task: Running for a running one,
/// its end for an exited one (timestamped when it happened, so a repeat changes nothing),
/// nothing for one never started.
pub fn adopted_status(container_id: &str, live: &Live) -> Option<TaskStatus> {
    match live.status? {
        Status::Running => Some(TaskStatus {
            timestamp: live.started_at,
            state: TaskState::Running,
            message: "started".into(),
            container: Some(ContainerStatus {
                container_id: container_id.to_owned(),
                pid: i64::from(live.pid),
                exit_code: 0,
            }),
            paused: live.paused,
            started_at: live.started_at,
            ..TaskStatus::default()
        }),
        Status::Exited | Status::Dead | Status::Removing => {
            let exit = live.exit.as_ref();
            let code = exit.map_or(255, |e| i64::from(e.exit_code));
            let started = TaskStatus {
                state: TaskState::Running,
                message: "started".into(),
                started_at: live.started_at,
                ..TaskStatus::default()
            };
            let when = exit.map_or_else(Utc::now, |e| e.finished_at);
            Some(exited(
                &started,
                container_id,
                code,
                ExitCause::Natural,
                when,
            ))
        }
        Status::Created | Status::Paused | Status::Restarting => None,
    }
}

// ---------------------------------------------------------------------------------------
// Report bookkeeping

/// The latest status of every known task, and which are not yet acknowledged.
#[derive(Debug, Default)]
pub struct Ledger {
    records: BTreeMap<String, Record>,
}

#[derive(Debug)]
struct Record {
    status: TaskStatus,
    /// Changed since last acknowledged.
    pending: bool,
    /// The task came in an assignment (a task found only as a container is not, until
    /// the first assignment says what the managers know of it).
    reconciled: bool,
}

impl Ledger {
    /// Starts tracking a task with `status` (not pending: it is what the managers sent, or
    /// what a container found at start says, pending reconciliation).
    pub fn insert(&mut self, id: &str, status: TaskStatus, reconciled: bool) {
        self.records.insert(
            id.to_owned(),
            Record {
                status,
                pending: false,
                reconciled,
            },
        );
    }

    /// The task's latest status.
    pub fn status(&self, id: &str) -> Option<&TaskStatus> {
        self.records.get(id).map(|r| &r.status)
    }

    /// Records an observed status. Refused when it would move the state backwards;
    /// returns whether it changed anything (and is now pending).
    pub fn record(&mut self, id: &str, status: TaskStatus) -> bool {
        let Some(r) = self.records.get_mut(id) else {
            return false;
        };
        if status.state < r.status.state {
            tracing::warn!(task = %id, from = %r.status.state, to = %status.state, "refused a backward task state");
            return false;
        }
        if status == r.status {
            return false;
        }
        r.status = status;
        r.pending = true;
        true
    }

    /// The first assignment of a task found only as a container: the managers' word on a
    /// finished task stands; what the container says is reported when it is news to them
    /// (a container stopped for a shutdown reads as Shutdown, not Failed). Returns whether
    /// a report is now pending.
    pub fn reconcile(&mut self, id: &str, managers: &TaskStatus, desired: TaskState) -> bool {
        let Some(r) = self.records.get_mut(id) else {
            return false;
        };
        if r.reconciled {
            return false;
        }
        r.reconciled = true;
        if managers.state.is_terminal() {
            r.status = managers.clone();
            r.pending = false;
        } else if r.status.state > managers.state {
            if desired >= TaskState::Shutdown && r.status.state == TaskState::Failed {
                r.status.state = TaskState::Shutdown;
                r.status.message = "shutdown".into();
                r.status.err.clear();
            }
            r.pending = true;
        } else if managers.state > r.status.state {
            r.status = managers.clone();
        }
        r.pending
    }

    /// Whether the task has an unacknowledged status.
    pub fn is_pending(&self, id: &str) -> bool {
        self.records.get(id).is_some_and(|r| r.pending)
    }

    /// Unacknowledged statuses; with `full`, also every other status this node decided
    /// (after a reconnect the managers may have missed any of them).
    pub fn reports(&self, full: bool) -> Vec<TaskReport> {
        self.records
            .iter()
            .filter(|(_, r)| {
                r.pending || (full && r.reconciled && r.status.state >= TaskState::Accepted)
            })
            .map(|(id, r)| TaskReport {
                task_id: id.clone(),
                status: r.status.clone(),
            })
            .collect()
    }

    /// Marks delivered reports; a task whose status changed since stays pending.
    pub fn acknowledge(&mut self, delivered: &[TaskReport]) {
        for d in delivered {
            if let Some(r) = self.records.get_mut(&d.task_id)
                && r.status == d.status
            {
                r.pending = false;
            }
        }
    }

    /// Stops tracking a task.
    pub fn forget(&mut self, id: &str) {
        self.records.remove(id);
    }
}

// ---------------------------------------------------------------------------------------
// The worker

/// What a task's runner is told.
#[derive(Clone, Debug, PartialEq)]
enum Assignment {
    /// Found as a container at start; no assignment has mentioned it yet.
    Unknown,
    Assigned(Box<Task>),
    /// No longer assigned to this node.
    Gone,
}

struct Entry {
    assignment: watch::Sender<Assignment>,
    /// The task's container, once created or found.
    container: Option<String>,
    /// The runner ended (task gone, container removed); forgotten once acknowledged.
    done: bool,
}

#[derive(Default)]
struct State {
    ledger: Ledger,
    tasks: BTreeMap<String, Entry>,
}

/// Runs this node's tasks (see the module docs).
pub struct Worker {
    engine: Engine,
    images: Arc<dyn ImageProvider>,
    node: NodeFacts,
    state: Mutex<State>,
    changed: Arc<Notify>,
    starts: Arc<Semaphore>,
    stop: watch::Sender<bool>,
}

impl Worker {
    /// Starts the worker; re-adopts containers of tasks (label com.docker.swarm.task.id)
    /// that exist from before a daemon restart, so no task ever runs twice. Call it inside
    /// a tokio runtime (it spawns the runners of the containers it finds).
    pub fn start(engine: Engine, images: Arc<dyn ImageProvider>, node: NodeFacts) -> Arc<Worker> {
        let mut state = State::default();
        // Newest first: should two containers claim a task, the newest is its container.
        for c in engine.runtime.list(true) {
            let Some(task_id) = c.record.config.labels.get(TASK_ID_LABEL) else {
                continue;
            };
            if state.tasks.contains_key(task_id) {
                continue;
            }
            let status = adopted_status(&c.record.id, &c.live).unwrap_or_default();
            tracing::info!(task = %task_id, container = %c.record.id, state = %status.state, "found the container of a task");
            state.ledger.insert(task_id, status, false);
            state.tasks.insert(
                task_id.clone(),
                Entry {
                    assignment: watch::channel(Assignment::Unknown).0,
                    container: Some(c.record.id.clone()),
                    done: false,
                },
            );
        }
        let ids: Vec<String> = state.tasks.keys().cloned().collect();
        let w = Arc::new(Worker {
            engine,
            images,
            node,
            state: Mutex::new(state),
            changed: Arc::new(Notify::new()),
            starts: Arc::new(Semaphore::new(MAX_CONCURRENT_STARTS)),
            stop: watch::channel(false).0,
        });
        for id in ids {
            w.spawn_runner(id);
        }
        w
    }

    /// The complete set of tasks assigned to this node now (from a successful dispatcher
    /// answer). Reconciles: start new ones, stop ones whose desired state is Shutdown or
    /// later, remove containers of tasks no longer assigned, pause/unpause per
    /// `task.paused`. Returns at once (work happens in background tasks).
    pub fn assign(self: &Arc<Self>, tasks: Vec<Task>) {
        if *self.stop.borrow() {
            return;
        }
        let mut spawn = Vec::new();
        let mut news = false;
        {
            let mut st = self.lock();
            let State {
                ledger,
                tasks: known,
            } = &mut *st;
            let mut seen = BTreeSet::new();
            for task in tasks {
                let id = task.id.clone();
                seen.insert(id.clone());
                match known.get_mut(&id) {
                    Some(e) => {
                        if *e.assignment.borrow() == Assignment::Unknown {
                            news |= ledger.reconcile(&id, &task.status, task.desired_state);
                        }
                        if e.done {
                            e.done = false;
                            spawn.push(id);
                        }
                        let new = Assignment::Assigned(Box::new(task));
                        e.assignment.send_if_modified(|a| {
                            let modified = *a != new;
                            *a = new;
                            modified
                        });
                    }
                    None => {
                        ledger.insert(&id, task.status.clone(), true);
                        known.insert(
                            id.clone(),
                            Entry {
                                assignment: watch::channel(Assignment::Assigned(Box::new(task))).0,
                                container: None,
                                done: false,
                            },
                        );
                        spawn.push(id);
                    }
                }
            }
            for (id, e) in known.iter() {
                if !seen.contains(id) {
                    e.assignment.send_if_modified(|a| {
                        let modified = *a != Assignment::Gone;
                        *a = Assignment::Gone;
                        modified
                    });
                }
            }
        }
        for id in spawn {
            self.spawn_runner(id);
        }
        if news {
            self.changed.notify_one();
        }
    }

    /// Status changes not yet acknowledged (latest status per task); `full` = every
    /// known task's status (after a reconnect).
    pub fn reports(&self, full: bool) -> Vec<TaskReport> {
        self.lock().ledger.reports(full)
    }

    /// Marks reports delivered (a task whose status changed since stays pending).
    pub fn acknowledge(&self, delivered: &[TaskReport]) {
        let mut st = self.lock();
        st.ledger.acknowledge(delivered);
        for d in delivered {
            let finished = st.tasks.get(&d.task_id).is_some_and(|e| e.done);
            if finished && !st.ledger.is_pending(&d.task_id) {
                st.tasks.remove(&d.task_id);
                st.ledger.forget(&d.task_id);
            }
        }
    }

    /// Notified whenever a new report is pending (the agent sends at once).
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// Stops the worker's background work; containers keep running.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
        self.starts.close();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it; the maps themselves are valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn_runner(self: &Arc<Self>, id: String) {
        let Some(rx) = self.lock().tasks.get(&id).map(|e| e.assignment.subscribe()) else {
            return;
        };
        let runner = Runner {
            w: self.clone(),
            rt: self.engine.runtime.clone(),
            stop: self.stop.subscribe(),
            id,
            rx,
            last: None,
            unhealthy: false,
        };
        tokio::spawn(runner.run());
    }

    fn status(&self, id: &str) -> TaskStatus {
        self.lock().ledger.status(id).cloned().unwrap_or_default()
    }

    fn set(&self, id: &str, status: TaskStatus) {
        let changed = self.lock().ledger.record(id, status.clone());
        if changed {
            tracing::debug!(task = %id, state = %status.state, err = %status.err, health = %status.health, "task status");
            self.changed.notify_one();
        }
    }

    fn container(&self, id: &str) -> Option<String> {
        self.lock().tasks.get(id).and_then(|e| e.container.clone())
    }

    fn set_container(&self, id: &str, container: Option<String>) {
        if let Some(e) = self.lock().tasks.get_mut(id) {
            e.container = container;
        }
    }

    /// Ends a runner whose task is gone; false when it was assigned again meanwhile.
    fn finish(&self, id: &str) -> bool {
        let mut st = self.lock();
        let Some(e) = st.tasks.get_mut(id) else {
            return true;
        };
        if *e.assignment.borrow() != Assignment::Gone {
            return false;
        }
        e.done = true;
        if !st.ledger.is_pending(id) {
            st.tasks.remove(id);
            st.ledger.forget(id);
        }
        true
    }
}

/// Whether a runner carries on.
enum Flow {
    Next,
    Exit,
}

/// Moves one task forward (see the module docs).
struct Runner {
    w: Arc<Worker>,
    rt: Runtime,
    id: String,
    rx: watch::Receiver<Assignment>,
    stop: watch::Receiver<bool>,
    /// The last assignment, for the grace period once the task is gone.
    last: Option<Task>,
    /// The container is being stopped because its health check failed.
    unhealthy: bool,
}

impl Runner {
    async fn run(mut self) {
        loop {
            if *self.stop.borrow() {
                return;
            }
            let a = self.rx.borrow_and_update().clone();
            let flow = match a {
                Assignment::Gone => {
                    let last = self.last.clone();
                    self.clean_up(last.as_ref()).await;
                    if self.w.finish(&self.id) {
                        return;
                    }
                    Flow::Next
                }
                Assignment::Unknown => {
                    if self.presence() == Presence::Running {
                        self.watch(None).await
                    } else {
                        self.changed().await
                    }
                }
                Assignment::Assigned(task) => {
                    self.last = Some((*task).clone());
                    self.advance(&task).await
                }
            };
            if let Flow::Exit = flow {
                return;
            }
        }
    }

    async fn advance(&mut self, task: &Task) -> Flow {
        if task.desired_state >= TaskState::Remove {
            self.clean_up(Some(task)).await;
            return self.changed().await;
        }
        let presence = self.presence();
        let status = self.w.status(&self.id);
        match step(task.desired_state, status.state, presence) {
            Step::Idle => {
                // A task the managers ended whose container still runs (no task runs twice).
                if presence == Presence::Running
                    && task.desired_state >= TaskState::Shutdown
                    && self.stop_container(Some(task)).await
                {
                    return Flow::Next;
                }
                self.changed().await
            }
            Step::Move(state, message) => {
                self.w
                    .set(&self.id, moved(&status, state, message, Utc::now()));
                Flow::Next
            }
            Step::Prepare => self.prepare(task, &status).await,
            Step::Start => self.start(task, &status).await,
            Step::Watch => self.watch(Some(task)).await,
            Step::Shutdown => {
                self.shut_down(Some(task), &status).await;
                Flow::Next
            }
            Step::Lost => {
                self.fail(&status, &WorkerError::ContainerLost);
                Flow::Next
            }
        }
    }

    /// Image, then container (Ready); a failure rejects the task.
    async fn prepare(&mut self, task: &Task, status: &TaskStatus) -> Flow {
        let sem = self.w.starts.clone();
        let _permit = match self.unless_called_off(sem.acquire_owned()).await {
            Some(Ok(p)) => p,
            Some(Err(_)) => return Flow::Exit,
            None => return Flow::Next,
        };
        if self.presence() == Presence::None {
            let spec = &task.spec.container_spec;
            // Templates first: a task that cannot run needs no image.
            if let Err(e) = container_config(task, &self.w.node, &spec.image) {
                self.fail(status, &e);
                return Flow::Next;
            }
            let t = std::time::Instant::now();
            let fetched = self.w.images.ensure(&spec.image, &task.registry_auth);
            let image = match self.unless_called_off(fetched).await {
                None => return Flow::Next,
                Some(Ok(image)) => image,
                Some(Err(message)) => {
                    let e = WorkerError::Image {
                        reference: spec.image.clone(),
                        message,
                    };
                    self.fail(status, &e);
                    return Flow::Next;
                }
            };
            tracing::debug!(task = %self.id, %image, ms = t.elapsed().as_secs_f64() * 1e3, "task image ready");
            if let Err(e) = self.create(task, &image).await {
                self.fail(status, &e);
                return Flow::Next;
            }
        }
        if status.state == TaskState::Preparing {
            self.w.set(
                &self.id,
                moved(status, TaskState::Ready, "prepared", Utc::now()),
            );
        }
        Flow::Next
    }

    async fn create(&mut self, task: &Task, image: &str) -> Result<(), WorkerError> {
        let (config, host) = container_config(task, &self.w.node, image)?;
        if let Some(missing) = bind_sources(&host.binds).find(|s| !Path::new(s).exists()) {
            return Err(WorkerError::BindSource(missing.to_owned()));
        }
        let name = task.container_name();
        let id = match self
            .w
            .engine
            .create_container(Some(name.clone()), config, host)
            .await
        {
            Ok(view) => view.record.id,
            // Made by an earlier attempt (its label says so): that is the container.
            Err(EngineError::Runtime(RuntimeError::NameConflict { id, .. }))
                if self
                    .rt
                    .get(&id)
                    .is_ok_and(|v| v.record.config.labels.get(TASK_ID_LABEL) == Some(&self.id)) =>
            {
                id
            }
            Err(e) => return Err(e.into()),
        };
        tracing::debug!(task = %self.id, container = %id, "task container created");
        self.w.set_container(&self.id, Some(id));
        Ok(())
    }

    /// Starts the container: Running, or Starting until its health check passes.
    async fn start(&mut self, task: &Task, status: &TaskStatus) -> Flow {
        let Some(cid) = self.w.container(&self.id) else {
            return Flow::Next;
        };
        let sem = self.w.starts.clone();
        let permit = match self.unless_called_off(sem.acquire_owned()).await {
            Some(Ok(p)) => p,
            Some(Err(_)) => return Flow::Exit,
            None => return Flow::Next,
        };
        let started = self.rt.start(&cid).await;
        drop(permit);
        if let Err(e) = started {
            let text = match e {
                RuntimeError::StartFailed { message, .. } => message,
                other => other.to_string(),
            };
            self.fail(status, &WorkerError::Start(text));
            return Flow::Next;
        }
        let view = self.rt.get(&cid).ok();
        let mut s = status.clone();
        s.container = Some(ContainerStatus {
            container_id: cid.clone(),
            pid: view.as_ref().map_or(0, |v| i64::from(v.live.pid)),
            exit_code: 0,
        });
        if view.as_ref().is_some_and(has_healthcheck) {
            // As Docker's executor: Running only once healthy.
            s.health = "starting".into();
            s.paused = false;
            self.w.set(&self.id, s);
        } else {
            self.w.set(
                &self.id,
                moved(&s, TaskState::Running, "started", Utc::now()),
            );
        }
        tracing::debug!(task = %self.id, container = %cid, service = %task.service_name, "task started");
        Flow::Next
    }

    /// Follows a started container until it exits or the assignment changes: health,
    /// pause, exit.
    async fn watch(&mut self, task: Option<&Task>) -> Flow {
        let Some(cid) = self.w.container(&self.id) else {
            return Flow::Next;
        };
        let rt = self.rt.clone();
        let health = rt.get(&cid).ok().is_some_and(|v| has_healthcheck(&v));
        if let Some(t) = task {
            self.sync_pause(&cid, t.paused).await;
        }
        let wait = rt.wait(&cid, false);
        tokio::pin!(wait);
        let mut tick = tokio::time::interval(HEALTH_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                exit = &mut wait => {
                    let status = self.w.status(&self.id);
                    let Ok(exit) = exit else {
                        self.fail(&status, &WorkerError::ContainerLost);
                        return Flow::Next;
                    };
                    let code = i64::from(exit.exit_code);
                    let now = Utc::now();
                    let cause = if self.unhealthy {
                        ExitCause::Unhealthy
                    } else {
                        ExitCause::Natural
                    };
                    let mut prev = status;
                    if prev.state == TaskState::Starting && cause == ExitCause::Natural && code == 0 {
                        // Ended cleanly before its first health verdict: it did run.
                        prev = moved(&prev, TaskState::Running, "started", now);
                        self.w.set(&self.id, prev.clone());
                    }
                    tracing::debug!(task = %self.id, container = %cid, code, "task container exited");
                    self.w.set(&self.id, exited(&prev, &cid, code, cause, now));
                    return Flow::Next;
                }
                _ = self.stop.changed() => return Flow::Exit,
                changed = self.rx.changed() => {
                    return if changed.is_ok() { Flow::Next } else { Flow::Exit };
                }
                _ = tick.tick(), if health && !self.unhealthy => {
                    let Some(h) = health_status(&rt, &cid) else {
                        continue;
                    };
                    let status = self.w.status(&self.id);
                    if status.health != h {
                        let mut s = status.clone();
                        s.health = h.clone();
                        if h == "healthy" && s.state == TaskState::Starting {
                            s = moved(&s, TaskState::Running, "started", Utc::now());
                        }
                        self.w.set(&self.id, s);
                    }
                    if h == "unhealthy" {
                        tracing::info!(task = %self.id, container = %cid, "task container is unhealthy; stopping it");
                        self.unhealthy = true;
                        self.stop_container(task).await;
                    }
                }
            }
        }
    }

    /// Freezes or thaws the container as the assignment says, and reports it.
    async fn sync_pause(&mut self, cid: &str, want: bool) {
        let Ok(view) = self.rt.get(cid) else {
            return;
        };
        if view.live.status != Some(Status::Running) {
            return;
        }
        if view.live.paused != want
            && let Err(e) = self.rt.pause(cid, want).await
        {
            tracing::warn!(task = %self.id, container = %cid, paused = want, error = %e, "cannot pause or unpause a task");
            return;
        }
        let status = self.w.status(&self.id);
        if status.paused != want && !status.state.is_terminal() {
            let mut s = status;
            s.paused = want;
            self.w.set(&self.id, s);
        }
    }

    /// Stops the container (grace period, stop signal) and reports Shutdown.
    async fn shut_down(&mut self, task: Option<&Task>, status: &TaskStatus) {
        self.stop_container(task).await;
        let now = Utc::now();
        let s = match self.w.container(&self.id) {
            Some(cid) => {
                let code = self
                    .rt
                    .get(&cid)
                    .ok()
                    .and_then(|v| v.live.exit)
                    .map_or(0, |e| i64::from(e.exit_code));
                exited(status, &cid, code, ExitCause::Shutdown, now)
            }
            None => moved(status, TaskState::Shutdown, "shutdown", now),
        };
        self.w.set(&self.id, s);
    }

    /// Task gone or to be removed: stopped (Shutdown unless it had ended), then its
    /// container removed.
    async fn clean_up(&mut self, task: Option<&Task>) {
        let status = self.w.status(&self.id);
        if status.state < TaskState::Complete {
            self.shut_down(task, &status).await;
        } else if self.presence() == Presence::Running {
            self.stop_container(task).await;
        }
        if let Some(cid) = self.w.container(&self.id) {
            match self.rt.remove(&cid, true, true).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {
                    tracing::debug!(task = %self.id, container = %cid, "task container removed");
                    self.w.set_container(&self.id, None);
                }
                Err(e) => {
                    tracing::warn!(task = %self.id, container = %cid, error = %e, "cannot remove a task container");
                }
            }
        }
    }

    /// Stops the container if it runs; false when that failed.
    async fn stop_container(&mut self, task: Option<&Task>) -> bool {
        let Some(cid) = self.w.container(&self.id) else {
            return true;
        };
        let grace = task.map(|t| stop_timeout_secs(&t.spec.container_spec));
        match self.rt.stop_with(&cid, None, grace).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => true,
            Err(e) => {
                tracing::warn!(task = %self.id, container = %cid, error = %e, "cannot stop a task container");
                false
            }
        }
    }

    fn fail(&self, status: &TaskStatus, e: &WorkerError) {
        tracing::info!(task = %self.id, error = %e, "task failed");
        self.w
            .set(&self.id, fatal(status, e.to_string(), Utc::now()));
    }

    fn presence(&self) -> Presence {
        let Some(cid) = self.w.container(&self.id) else {
            return Presence::None;
        };
        match self.rt.get(&cid) {
            Err(_) => Presence::None,
            Ok(v) => match v.live.status {
                None | Some(Status::Created) => Presence::Created,
                Some(Status::Running | Status::Paused | Status::Restarting) => Presence::Running,
                Some(Status::Exited | Status::Dead | Status::Removing) => Presence::Exited,
            },
        }
    }

    /// Waits for the next assignment change.
    async fn changed(&mut self) -> Flow {
        tokio::select! {
            r = self.rx.changed() => if r.is_ok() { Flow::Next } else { Flow::Exit },
            _ = self.stop.changed() => Flow::Exit,
        }
    }

    /// `fut`, unless the task is called off first (desired Shutdown or later, no longer
    /// assigned) or the worker stops.
    async fn unless_called_off<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            if self.called_off() {
                return None;
            }
            // Changes first: a permit handed over while the task was being called off
            // must not start a fetch.
            tokio::select! {
                biased;
                _ = self.stop.changed() => return None,
                r = self.rx.changed() => {
                    if r.is_err() {
                        return None;
                    }
                }
                out = &mut fut => return Some(out),
            }
        }
    }

    /// Whether the task is to be stopped rather than advanced (or the worker stops).
    fn called_off(&self) -> bool {
        *self.stop.borrow()
            || match &*self.rx.borrow() {
                Assignment::Assigned(t) => t.desired_state >= TaskState::Shutdown,
                Assignment::Gone => true,
                Assignment::Unknown => false,
            }
    }
}

/// Whether the container runs a health check (its merged config has a test, not NONE).
fn has_healthcheck(view: &ContainerView) -> bool {
    view.record
        .config
        .healthcheck
        .as_ref()
        .is_some_and(|h| h.test.first().is_some_and(|t| t != "NONE"))
}

/// The container's health status (`starting`, `healthy`, `unhealthy`), if it has one.
fn health_status(rt: &Runtime, cid: &str) -> Option<String> {
    match rt.health(cid) {
        Ok(Some(h)) => Some(h.status.as_str().to_owned()),
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(container = %cid, error = %e, "cannot read health");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use shoal_runtime::model::ExitInfo;
    use shoal_store::model::{
        HealthConfig, Limit, Mount, ResourceRequirements, TaskSpec, TmpfsOptions,
    };

    use super::*;

    const IMAGE: &str = "docker.io/library/busybox:latest@sha256:0123";

    fn node() -> NodeFacts {
        NodeFacts {
            node_id: "node1".into(),
            hostname: "edge-1".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
        }
    }

    fn task(id: &str, slot: u64) -> Task {
        Task {
            id: id.into(),
            service_id: "svc1".into(),
            service_name: "web".into(),
            slot,
            node_id: "node1".into(),
            desired_state: TaskState::Running,
            status: TaskStatus {
                state: TaskState::Assigned,
                message: "scheduler assigned task to node".into(),
                ..Default::default()
            },
            spec: TaskSpec {
                container_spec: ContainerSpec {
                    image: IMAGE.into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    // ----- templates ------------------------------------------------------------------

    #[test]
    fn templates_expand_every_field() {
        let ctx = TemplateContext::new(&task("t1", 2), &node());
        assert_eq!(
            ctx.expand("{{.Service.Name}}-{{ .Task.Slot }}").unwrap(),
            "web-2"
        );
        assert_eq!(
            ctx.expand(
                "{{.Node.Hostname}}/{{.Node.Platform.OS}}/{{.Node.Platform.Architecture}}/\
                 {{.Node.ID}}/{{.Service.ID}}/{{.Task.ID}}/{{.Task.Name}}"
            )
            .unwrap(),
            "edge-1/linux/x86_64/node1/svc1/t1/web.2.t1"
        );
        // Text without actions, and stray closing braces, are left alone.
        assert_eq!(ctx.expand("plain }} text").unwrap(), "plain }} text");
        assert_eq!(ctx.expand("").unwrap(), "");
        // Go's trim markers and comments.
        assert_eq!(ctx.expand("a  {{- .Task.Slot -}}  b").unwrap(), "a2b");
        assert_eq!(ctx.expand("x{{/* note */}}y").unwrap(), "xy");
        assert_eq!(
            ctx.expand("{{-3}}").unwrap_err(),
            TemplateError::Unsupported {
                action: "-3".into()
            }
        );
    }

    #[test]
    fn global_tasks_use_the_node_as_slot() {
        let ctx = TemplateContext::new(&task("t9", 0), &node());
        assert_eq!(ctx.expand("{{.Task.Slot}}").unwrap(), "node1");
        assert_eq!(ctx.expand("{{.Task.Name}}").unwrap(), "web.node1.t9");
    }

    #[test]
    fn template_errors_name_the_field() {
        let ctx = TemplateContext::new(&task("t1", 1), &node());
        let unknown = |text: &str, field: &str| {
            let e = ctx.expand(text).unwrap_err();
            assert_eq!(
                e,
                TemplateError::UnknownField {
                    action: text.trim_matches(|c| c == '{' || c == '}').trim().into(),
                    field: field.into()
                },
                "{text}"
            );
            assert!(
                e.to_string()
                    .contains(&format!("can't evaluate field {field}"))
            );
        };
        unknown("{{.Service.Foo}}", "Foo");
        unknown("{{.Bogus}}", "Bogus");
        unknown("{{ .Node.Platform.Kernel }}", "Kernel");
        unknown("{{.Service.Slot}}", "Slot");
        unknown("{{.Task}}", "Task");
        unknown("{{.Task.ID.More}}", "More");
        assert_eq!(
            ctx.expand("x{{.Task.Slot").unwrap_err(),
            TemplateError::Unclosed
        );
        assert!(matches!(
            ctx.expand("{{.Service.Labels}}"),
            Err(TemplateError::Unsupported { .. })
        ));
        assert_eq!(
            ctx.expand("{{index .Service.Labels \"a\"}}")
                .unwrap_err()
                .to_string(),
            "template: expansion: unsupported action {{index .Service.Labels \"a\"}}"
        );
    }

    // ----- task → container -----------------------------------------------------------

    #[test]
    fn a_task_becomes_dockers_container_config() {
        let mut t = task("t1", 3);
        let c = &mut t.spec.container_spec;
        c.command = Some(strs(&["/bin/sh", "-c"]));
        c.args = Some(strs(&["sleep 60"]));
        c.env = strs(&["SLOT={{.Task.Slot}}", "PLAIN=a=b", "NOVALUE"]);
        c.dir = "/srv".into();
        c.user = "daemon".into();
        c.hostname = "{{.Service.Name}}-{{.Task.Slot}}".into();
        c.labels = [("app".to_owned(), "x".to_owned())].into();
        c.stop_signal = "SIGINT".into();
        c.stop_grace_period = Some(1_500_000_000);
        c.healthcheck = Some(HealthConfig {
            test: strs(&["CMD", "true"]),
            interval: 200_000_000,
            retries: 2,
            ..Default::default()
        });
        c.read_only = true;
        c.capability_add = strs(&["NET_ADMIN"]);
        c.capability_drop = strs(&["CHOWN"]);
        t.spec.resources = Some(ResourceRequirements {
            limits: Some(Limit {
                nano_cpus: 500_000_000,
                memory_bytes: 64 << 20,
                pids: 20,
            }),
            reservations: None,
        });
        let (config, host) = container_config(&t, &node(), "busybox-local").unwrap();
        assert_eq!(config.image, "busybox-local");
        assert_eq!(config.entrypoint, Some(strs(&["/bin/sh", "-c"])));
        assert_eq!(config.cmd, Some(strs(&["sleep 60"])));
        assert_eq!(config.env, strs(&["SLOT=3", "PLAIN=a=b", "NOVALUE"]));
        assert_eq!(config.working_dir, "/srv");
        assert_eq!(config.user, "daemon");
        assert_eq!(config.hostname, "web-3");
        assert_eq!(config.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(config.stop_timeout, Some(2));
        let h = config.healthcheck.unwrap();
        assert_eq!(
            (h.test, h.interval, h.retries),
            (strs(&["CMD", "true"]), 200_000_000, 2)
        );
        let labels: Vec<(&str, &str)> = config
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("app", "x"),
                ("com.docker.swarm.node.id", "node1"),
                ("com.docker.swarm.service.id", "svc1"),
                ("com.docker.swarm.service.name", "web"),
                ("com.docker.swarm.task", ""),
                ("com.docker.swarm.task.id", "t1"),
                ("com.docker.swarm.task.name", "web.3.t1"),
            ]
        );
        assert_eq!(host.network_mode, "none");
        assert!(host.readonly_rootfs);
        assert_eq!(host.cap_add, strs(&["NET_ADMIN"]));
        assert_eq!(host.cap_drop, strs(&["CHOWN"]));
        assert_eq!(
            (host.memory, host.nano_cpus, host.pids_limit),
            (64 << 20, 500_000_000, Some(20))
        );
        assert!(host.binds.is_empty() && host.tmpfs.is_empty());
    }

    #[test]
    fn command_and_args_follow_dockers_executor() {
        let conv = |command: Option<&[&str]>, args: Option<&[&str]>| {
            let mut t = task("t1", 1);
            t.spec.container_spec.command = command.map(strs);
            t.spec.container_spec.args = args.map(strs);
            let (c, _) = container_config(&t, &node(), "img").unwrap();
            (c.entrypoint, c.cmd)
        };
        // Nothing: the image's entrypoint and cmd (merged later by the engine).
        assert_eq!(conv(None, None), (None, None));
        // Args alone replace the image's cmd.
        assert_eq!(
            conv(None, Some(&["sleep", "9"])),
            (None, Some(strs(&["sleep", "9"])))
        );
        // A command replaces the entrypoint and drops the image's cmd.
        assert_eq!(
            conv(Some(&["/bin/top"]), None),
            (Some(strs(&["/bin/top"])), Some(vec![]))
        );
        assert_eq!(
            conv(Some(&["/bin/sleep"]), Some(&["5"])),
            (Some(strs(&["/bin/sleep"])), Some(strs(&["5"])))
        );
    }

    #[test]
    fn grace_periods_round_up_to_seconds() {
        let secs = |ns: Option<i64>| {
            stop_timeout_secs(&ContainerSpec {
                stop_grace_period: ns,
                ..Default::default()
            })
        };
        assert_eq!(secs(None), 10);
        assert_eq!(secs(Some(0)), 0);
        assert_eq!(secs(Some(1)), 1);
        assert_eq!(secs(Some(3_000_000_000)), 3);
        assert_eq!(secs(Some(3_000_000_001)), 4);
        assert_eq!(secs(Some(-5)), 0);
    }

    #[test]
    fn mounts_become_binds_and_tmpfs() {
        let mut t = task("t1", 4);
        t.spec.container_spec.mounts = vec![
            Mount {
                kind: "volume".into(),
                source: "data-{{.Task.Slot}}".into(),
                target: "/data".into(),
                read_only: true,
                ..Default::default()
            },
            Mount {
                kind: "volume".into(),
                target: "/cache".into(),
                ..Default::default()
            },
            Mount {
                kind: "bind".into(),
                source: "/srv/{{.Service.Name}}".into(),
                target: "/www".into(),
                ..Default::default()
            },
            Mount {
                kind: "tmpfs".into(),
                target: "/run".into(),
                tmpfs_options: Some(TmpfsOptions {
                    size_bytes: 65536,
                    mode: 0o1777,
                }),
                ..Default::default()
            },
            Mount {
                kind: "tmpfs".into(),
                target: "/tmp".into(),
                ..Default::default()
            },
        ];
        let (_, host) = container_config(&t, &node(), "img").unwrap();
        assert_eq!(
            host.binds,
            strs(&["data-4:/data:ro", "/cache", "/srv/web:/www"])
        );
        assert_eq!(
            host.tmpfs,
            [
                ("/run".to_owned(), "size=65536,mode=1777".to_owned()),
                ("/tmp".to_owned(), String::new())
            ]
            .into()
        );
        assert_eq!(bind_sources(&host.binds).collect::<Vec<_>>(), ["/srv/web"]);
    }

    #[test]
    fn bad_tasks_are_refused_with_dockers_words() {
        let err = |f: &dyn Fn(&mut ContainerSpec)| {
            let mut t = task("t1", 1);
            f(&mut t.spec.container_spec);
            container_config(&t, &node(), "img")
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&|c| c.env = strs(&["A={{.Nope}}"])),
            "expanding env failed: expanding env \"A={{.Nope}}\": template: expansion: \
             executing \"expansion\" at <.Nope>: can't evaluate field Nope"
        );
        assert_eq!(
            err(&|c| c.hostname = "{{.Node.Name}}".into()),
            "expanding hostname failed: template: expansion: executing \"expansion\" at \
             <.Node.Name>: can't evaluate field Name"
        );
        assert!(
            err(&|c| c.mounts = vec![Mount {
                kind: "volume".into(),
                source: "{{.X}}".into(),
                target: "/x".into(),
                ..Default::default()
            }])
            .starts_with("expanding mounts failed: expanding mount source \"{{.X}}\": ")
        );
        assert_eq!(
            err(&|c| c.mounts = vec![Mount {
                kind: "bind".into(),
                target: "/x".into(),
                ..Default::default()
            }]),
            "invalid mount config for type \"bind\": field Source must not be empty"
        );
        assert_eq!(
            err(&|c| c.mounts = vec![Mount {
                kind: "bind".into(),
                source: "rel".into(),
                target: "/x".into(),
                ..Default::default()
            }]),
            "invalid mount config for type \"bind\": invalid mount path: mount path must be absolute"
        );
        assert_eq!(
            err(&|c| c.mounts = vec![Mount {
                kind: "tmpfs".into(),
                source: "x".into(),
                target: "/x".into(),
                ..Default::default()
            }]),
            "invalid mount config for type \"tmpfs\": field Source must not be specified"
        );
        assert_eq!(
            err(&|c| c.mounts = vec![Mount {
                kind: "npipe".into(),
                target: "/x".into(),
                ..Default::default()
            }]),
            "invalid mount config: mount type unknown: \"npipe\""
        );
    }

    #[test]
    fn healthcheck_none_is_passed_on() {
        let mut t = task("t1", 1);
        t.spec.container_spec.healthcheck = Some(HealthConfig {
            test: strs(&["NONE"]),
            ..Default::default()
        });
        let (c, _) = container_config(&t, &node(), "img").unwrap();
        assert_eq!(c.healthcheck.unwrap().test, strs(&["NONE"]));
    }

    // ----- steps ----------------------------------------------------------------------

    #[test]
    fn steps_follow_swarmkit() {
        use Presence as P;
        use TaskState as S;
        let run = S::Running;
        assert_eq!(
            step(run, S::Assigned, P::None),
            Step::Move(S::Accepted, "accepted")
        );
        assert_eq!(
            step(run, S::Accepted, P::None),
            Step::Move(S::Preparing, "preparing")
        );
        assert_eq!(step(run, S::Preparing, P::None), Step::Prepare);
        assert_eq!(
            step(run, S::Ready, P::Created),
            Step::Move(S::Starting, "starting")
        );
        assert_eq!(step(run, S::Starting, P::Created), Step::Start);
        assert_eq!(step(run, S::Starting, P::Running), Step::Watch);
        assert_eq!(step(run, S::Running, P::Running), Step::Watch);
        assert_eq!(step(run, S::Running, P::Exited), Step::Watch);
        // Terminal states stay.
        for s in [S::Complete, S::Failed, S::Rejected, S::Shutdown] {
            assert_eq!(step(run, s, P::Exited), Step::Idle);
            assert_eq!(step(S::Shutdown, s, P::Exited), Step::Idle);
        }
        // Desired Ready (a restart delay): prepared, then paused until Running is wanted.
        assert_eq!(step(S::Ready, S::Preparing, P::None), Step::Prepare);
        assert_eq!(step(S::Ready, S::Ready, P::Created), Step::Idle);
        // A prepared task whose container is gone is prepared again.
        assert_eq!(step(run, S::Ready, P::None), Step::Prepare);
        // Started, but no container: lost, never run twice.
        assert_eq!(step(run, S::Running, P::None), Step::Lost);
        assert_eq!(step(run, S::Starting, P::None), Step::Lost);
        assert_eq!(step(run, S::Running, P::Created), Step::Lost);
        // Shutdown or later wins over everything not ended.
        for s in [S::Assigned, S::Preparing, S::Ready, S::Starting, S::Running] {
            assert_eq!(step(S::Shutdown, s, P::Running), Step::Shutdown);
            assert_eq!(step(S::Remove, s, P::None), Step::Shutdown);
        }
    }

    // ----- statuses -------------------------------------------------------------------

    #[test]
    fn exits_become_final_statuses() {
        let running = TaskStatus {
            timestamp: Some(at(0)),
            state: TaskState::Running,
            message: "started".into(),
            container: Some(ContainerStatus {
                container_id: "c1".into(),
                pid: 42,
                exit_code: 0,
            }),
            health: "healthy".into(),
            paused: true,
            ..Default::default()
        };
        let s = exited(&running, "c1", 0, ExitCause::Natural, at(5));
        assert_eq!(
            (s.state, s.message.as_str(), s.err.as_str(), s.paused),
            (TaskState::Complete, "finished", "", false)
        );
        assert_eq!(s.timestamp, Some(at(5)));
        assert_eq!(
            s.container,
            Some(ContainerStatus {
                container_id: "c1".into(),
                pid: 0,
                exit_code: 0
            })
        );
        let s = exited(&running, "c1", 3, ExitCause::Natural, at(5));
        assert_eq!(
            (s.state, s.message.as_str(), s.err.as_str()),
            (TaskState::Failed, "started", "task: non-zero exit (3)")
        );
        assert_eq!(s.container.unwrap().exit_code, 3);
        let s = exited(&running, "c1", 137, ExitCause::Unhealthy, at(5));
        assert_eq!(
            (s.state, s.err.as_str()),
            (
                TaskState::Failed,
                "task: non-zero exit (137): dockerexec: unhealthy container"
            )
        );
        let s = exited(&running, "c1", 143, ExitCause::Shutdown, at(5));
        assert_eq!(
            (s.state, s.message.as_str(), s.err.as_str()),
            (TaskState::Shutdown, "shutdown", "")
        );
        assert_eq!(s.container.unwrap().exit_code, 143);
        // Still starting (health check pending) when it failed: Failed, message kept.
        let starting = TaskStatus {
            state: TaskState::Starting,
            message: "starting".into(),
            ..Default::default()
        };
        let s = exited(&starting, "c1", 1, ExitCause::Natural, at(1));
        assert_eq!(
            (s.state, s.message.as_str()),
            (TaskState::Failed, "starting")
        );
    }

    #[test]
    fn failures_before_start_reject() {
        let preparing = TaskStatus {
            state: TaskState::Preparing,
            message: "preparing".into(),
            ..Default::default()
        };
        let s = fatal(&preparing, "No such image: x".into(), at(1));
        assert_eq!(
            (s.state, s.message.as_str(), s.err.as_str()),
            (TaskState::Rejected, "preparing", "No such image: x")
        );
        let starting = TaskStatus {
            state: TaskState::Starting,
            message: "starting".into(),
            ..Default::default()
        };
        let s = fatal(&starting, "starting container failed: boom".into(), at(1));
        assert_eq!(
            (s.state, s.message.as_str()),
            (TaskState::Failed, "starting")
        );
        let m = moved(&preparing, TaskState::Ready, "prepared", at(2));
        assert_eq!(
            (m.state, m.message.as_str(), m.timestamp),
            (TaskState::Ready, "prepared", Some(at(2)))
        );
    }

    #[test]
    fn found_containers_say_what_happened() {
        let live = Live {
            status: Some(Status::Running),
            pid: 42,
            started_at: Some(at(0)),
            exit: None,
            paused: true,
            exits: 0,
        };
        let s = adopted_status("c1", &live).unwrap();
        assert_eq!(
            (s.state, s.message.as_str(), s.timestamp, s.paused),
            (TaskState::Running, "started", Some(at(0)), true)
        );
        assert_eq!(s.container.unwrap().pid, 42);
        let ended = |code| Live {
            status: Some(Status::Exited),
            exit: Some(ExitInfo {
                exit_code: code,
                oom_killed: false,
                finished_at: at(9),
                error: String::new(),
            }),
            exits: 1,
            ..Live::default()
        };
        let s = adopted_status("c1", &ended(0)).unwrap();
        assert_eq!((s.state, s.timestamp), (TaskState::Complete, Some(at(9))));
        let s = adopted_status("c1", &ended(2)).unwrap();
        assert_eq!(
            (s.state, s.err.as_str()),
            (TaskState::Failed, "task: non-zero exit (2)")
        );
        // The same container read twice gives the same status (nothing new to report).
        assert_eq!(
            adopted_status("c1", &ended(2)),
            adopted_status("c1", &ended(2))
        );
        let created = Live {
            status: Some(Status::Created),
            ..Live::default()
        };
        assert_eq!(adopted_status("c1", &created), None);
    }

    // ----- ledger ---------------------------------------------------------------------

    fn st(state: TaskState, secs: i64) -> TaskStatus {
        TaskStatus {
            timestamp: Some(at(secs)),
            state,
            ..Default::default()
        }
    }

    fn ids(reports: &[TaskReport]) -> Vec<(&str, TaskState)> {
        reports
            .iter()
            .map(|r| (r.task_id.as_str(), r.status.state))
            .collect()
    }

    #[test]
    fn ledger_reports_latest_until_acknowledged() {
        let mut l = Ledger::default();
        l.insert("a", st(TaskState::Assigned, 0), true);
        l.insert("b", st(TaskState::Assigned, 0), true);
        assert!(l.reports(false).is_empty());
        assert!(l.record("a", st(TaskState::Accepted, 1)));
        assert!(l.record("a", st(TaskState::Preparing, 2)));
        // Latest status per task only.
        assert_eq!(ids(&l.reports(false)), [("a", TaskState::Preparing)]);
        // The same status again is no news.
        assert!(!l.record("a", st(TaskState::Preparing, 2)));
        let sent = l.reports(false);
        l.acknowledge(&sent);
        assert!(l.reports(false).is_empty());
        assert!(!l.is_pending("a"));
    }

    #[test]
    fn ledger_keeps_a_status_that_changed_while_in_flight() {
        let mut l = Ledger::default();
        l.insert("a", st(TaskState::Assigned, 0), true);
        l.record("a", st(TaskState::Running, 1));
        let sent = l.reports(false);
        // Exits while the report travels.
        l.record("a", st(TaskState::Failed, 2));
        l.acknowledge(&sent);
        assert_eq!(ids(&l.reports(false)), [("a", TaskState::Failed)]);
        let sent = l.reports(false);
        l.acknowledge(&sent);
        assert!(l.reports(false).is_empty());
        // Acknowledging an unknown task or a stale status changes nothing.
        l.acknowledge(&[TaskReport {
            task_id: "zz".into(),
            status: st(TaskState::Running, 1),
        }]);
        l.record("a", st(TaskState::Failed, 3));
        l.acknowledge(&sent);
        assert!(l.is_pending("a"));
    }

    #[test]
    fn ledger_states_only_move_forward() {
        let mut l = Ledger::default();
        l.insert("a", st(TaskState::Assigned, 0), true);
        l.record("a", st(TaskState::Running, 1));
        assert!(!l.record("a", st(TaskState::Starting, 2)));
        assert_eq!(l.status("a").unwrap().state, TaskState::Running);
        // Same state, new detail (health, pause) is news.
        let mut healthy = st(TaskState::Running, 1);
        healthy.health = "healthy".into();
        assert!(l.record("a", healthy));
        assert!(l.record("a", st(TaskState::Complete, 3)));
        assert!(!l.record("a", st(TaskState::Running, 4)));
        assert!(!l.record("unknown", st(TaskState::Running, 4)));
    }

    #[test]
    fn full_resync_lists_what_this_node_decided() {
        let mut l = Ledger::default();
        l.insert("fresh", st(TaskState::Assigned, 0), true);
        l.insert("run", st(TaskState::Assigned, 0), true);
        l.insert("found", st(TaskState::Running, 0), false);
        l.record("run", st(TaskState::Running, 1));
        let sent = l.reports(false);
        l.acknowledge(&sent);
        assert!(l.reports(false).is_empty());
        // After a reconnect: every status this node set, acknowledged or not; not the
        // managers' own (Assigned), not an unreconciled container's.
        assert_eq!(ids(&l.reports(true)), [("run", TaskState::Running)]);
        l.forget("run");
        assert!(l.reports(true).is_empty());
    }

    #[test]
    fn found_containers_reconcile_with_the_managers() {
        let mut l = Ledger::default();
        // Exited while the daemon was down: news to managers that think it runs.
        l.insert("a", st(TaskState::Failed, 5), false);
        assert!(l.reconcile("a", &st(TaskState::Running, 1), TaskState::Running));
        assert_eq!(ids(&l.reports(false)), [("a", TaskState::Failed)]);
        // Only once: a later assignment's (stale) status changes nothing.
        assert!(!l.reconcile("a", &st(TaskState::Complete, 1), TaskState::Running));
        assert_eq!(l.status("a").unwrap().state, TaskState::Failed);
        assert!(l.is_pending("a"));

        // Stopped for a shutdown the managers asked for: Shutdown, not Failed.
        l.insert("b", st(TaskState::Failed, 5), false);
        l.reconcile("b", &st(TaskState::Running, 1), TaskState::Shutdown);
        let s = l.status("b").unwrap();
        assert_eq!(
            (s.state, s.message.as_str()),
            (TaskState::Shutdown, "shutdown")
        );

        // Managers already know the end: their word stands, nothing to report.
        let mut mine = st(TaskState::Failed, 5);
        mine.err = "task: non-zero exit (137)".into();
        l.insert("c", mine, false);
        let theirs = st(TaskState::Shutdown, 4);
        assert!(!l.reconcile("c", &theirs, TaskState::Shutdown));
        assert_eq!(l.status("c"), Some(&theirs));

        // Still running, as they think: nothing to report.
        l.insert("d", st(TaskState::Running, 2), false);
        assert!(!l.reconcile("d", &st(TaskState::Running, 2), TaskState::Running));

        // A container never started: the managers' state is taken.
        l.insert("e", TaskStatus::default(), false);
        assert!(!l.reconcile("e", &st(TaskState::Starting, 3), TaskState::Running));
        assert_eq!(l.status("e").unwrap().state, TaskState::Starting);
        assert_eq!(
            ids(&l.reports(false)),
            [("a", TaskState::Failed), ("b", TaskState::Shutdown)]
        );
    }

    // ----- the worker, on a real engine (no container is started) -----------------------

    /// An image provider that counts calls, can hold them at a gate, and answers `answer`.
    struct FakeImages {
        answer: Result<String, String>,
        calls: AtomicUsize,
        active: Arc<AtomicUsize>,
        gate: watch::Sender<bool>,
    }

    impl FakeImages {
        fn new(answer: Result<&str, &str>, open: bool) -> Arc<FakeImages> {
            Arc::new(FakeImages {
                answer: answer.map(str::to_owned).map_err(str::to_owned),
                calls: AtomicUsize::new(0),
                active: Arc::new(AtomicUsize::new(0)),
                gate: watch::channel(open).0,
            })
        }
    }

    struct Active(Arc<AtomicUsize>);

    impl Drop for Active {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl ImageProvider for FakeImages {
        fn ensure(
            &self,
            _reference: &str,
            _registry_auth: &str,
        ) -> BoxFuture<'static, Result<String, String>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.active.fetch_add(1, Ordering::SeqCst);
            let active = Active(self.active.clone());
            let mut gate = self.gate.subscribe();
            let answer = self.answer.clone();
            Box::pin(async move {
                let _active = active;
                while !*gate.borrow_and_update() {
                    if gate.changed().await.is_err() {
                        break;
                    }
                }
                answer
            })
        }
    }

    async fn engine(dir: &Path) -> Engine {
        Engine::open(crate::engine::EngineOptions {
            data_dir: dir.join("data"),
            run_dir: dir.join("run"),
            cgroup_parent: format!("shoal-worker-test-{}", std::process::id()),
            labels: BTreeMap::new(),
            log: Default::default(),
            registry: Default::default(),
            exe: Arc::new(shoal_runtime::sealed::SealedExe::create().unwrap()),
        })
        .await
        .unwrap()
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn state_of(w: &Worker, id: &str) -> Option<TaskStatus> {
        w.reports(true)
            .into_iter()
            .find(|r| r.task_id == id)
            .map(|r| r.status)
    }

    #[tokio::test]
    async fn a_missing_image_rejects_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let images = FakeImages::new(Err("No such image: busybox:nope"), true);
        let w = Worker::start(engine(dir.path()).await, images.clone(), node());
        let changed = w.changed();
        w.assign(vec![task("t1", 1)]);
        tokio::time::timeout(Duration::from_secs(5), changed.notified())
            .await
            .expect("a report is announced");
        until("rejection", || {
            state_of(&w, "t1").is_some_and(|s| s.state == TaskState::Rejected)
        })
        .await;
        let s = state_of(&w, "t1").unwrap();
        assert_eq!(
            (s.message.as_str(), s.err.as_str()),
            ("preparing", "No such image: busybox:nope")
        );
        assert!(s.timestamp.is_some());
        assert_eq!(images.calls.load(Ordering::SeqCst), 1);
        // Assigning the same again changes nothing: no retry in place.
        w.assign(vec![task("t1", 1)]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(images.calls.load(Ordering::SeqCst), 1);
        // Acknowledged, then no longer assigned: forgotten.
        w.acknowledge(&w.reports(false));
        assert!(w.reports(false).is_empty());
        w.assign(vec![]);
        until("forgetting", || w.reports(true).is_empty()).await;
        w.shutdown();
    }

    #[tokio::test]
    async fn a_gone_task_is_forgotten_only_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let images = FakeImages::new(Err("No such image: x"), true);
        let w = Worker::start(engine(dir.path()).await, images, node());
        w.assign(vec![task("t1", 1)]);
        until("rejection", || {
            w.reports(false)
                .iter()
                .any(|r| r.status.state == TaskState::Rejected)
        })
        .await;
        w.assign(vec![]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Still owed to the managers.
        assert_eq!(ids(&w.reports(false)), [("t1", TaskState::Rejected)]);
        w.acknowledge(&w.reports(false));
        assert!(w.reports(true).is_empty());
        w.shutdown();
    }

    #[tokio::test]
    async fn template_errors_reject_before_any_image_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let images = FakeImages::new(Ok("img"), true);
        let w = Worker::start(engine(dir.path()).await, images.clone(), node());
        let mut t = task("t1", 1);
        t.spec.container_spec.hostname = "{{.Task.Nope}}".into();
        w.assign(vec![t]);
        until("rejection", || {
            state_of(&w, "t1").is_some_and(|s| s.state == TaskState::Rejected)
        })
        .await;
        assert_eq!(
            state_of(&w, "t1").unwrap().err,
            "expanding hostname failed: template: expansion: executing \"expansion\" at \
             <.Task.Nope>: can't evaluate field Nope"
        );
        assert_eq!(images.calls.load(Ordering::SeqCst), 0);
        w.shutdown();
    }

    #[tokio::test]
    async fn create_errors_reject_and_ready_waits_for_running() {
        let dir = tempfile::tempdir().unwrap();
        // The provider names an image the store does not have: the create fails.
        let images = FakeImages::new(Ok("busybox:absent"), true);
        let w = Worker::start(engine(dir.path()).await, images, node());
        let mut t = task("t1", 1);
        t.desired_state = TaskState::Ready;
        w.assign(vec![t]);
        until("rejection", || {
            state_of(&w, "t1").is_some_and(|s| s.state == TaskState::Rejected)
        })
        .await;
        assert_eq!(
            state_of(&w, "t1").unwrap().err,
            "No such image: busybox:absent"
        );
        w.shutdown();
    }

    #[tokio::test]
    async fn shutdown_before_start_never_fetches() {
        let dir = tempfile::tempdir().unwrap();
        let images = FakeImages::new(Ok("img"), true);
        let w = Worker::start(engine(dir.path()).await, images.clone(), node());
        let mut t = task("t1", 1);
        t.desired_state = TaskState::Shutdown;
        // A finished one stays as it is.
        let mut done = task("t2", 2);
        done.desired_state = TaskState::Shutdown;
        done.status = st(TaskState::Complete, 0);
        w.assign(vec![t, done]);
        until("shutdown", || {
            state_of(&w, "t1").is_some_and(|s| s.state == TaskState::Shutdown)
        })
        .await;
        assert_eq!(state_of(&w, "t1").unwrap().message, "shutdown");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ids(&w.reports(false)), [("t1", TaskState::Shutdown)]);
        assert_eq!(images.calls.load(Ordering::SeqCst), 0);
        w.shutdown();
    }

    #[tokio::test]
    async fn a_started_task_without_container_is_lost_not_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let images = FakeImages::new(Ok("img"), true);
        let w = Worker::start(engine(dir.path()).await, images.clone(), node());
        let mut t = task("t1", 1);
        t.status = TaskStatus {
            state: TaskState::Running,
            message: "started".into(),
            ..Default::default()
        };
        w.assign(vec![t]);
        until("failure", || {
            state_of(&w, "t1").is_some_and(|s| s.state == TaskState::Failed)
        })
        .await;
        let s = state_of(&w, "t1").unwrap();
        assert_eq!(
            (s.message.as_str(), s.err.as_str()),
            ("started", "task container lost")
        );
        assert_eq!(images.calls.load(Ordering::SeqCst), 0);
        w.shutdown();
    }

    #[tokio::test]
    async fn starts_are_bounded_and_called_off_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let images = FakeImages::new(Err("No such image: x"), false);
        let w = Worker::start(engine(dir.path()).await, images.clone(), node());
        let tasks: Vec<Task> = (1..=40).map(|i| task(&format!("t{i:02}"), i)).collect();
        w.assign(tasks.clone());
        until("the first wave", || {
            images.active.load(Ordering::SeqCst) == MAX_CONCURRENT_STARTS
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(images.calls.load(Ordering::SeqCst), MAX_CONCURRENT_STARTS);
        // Every task waits in Preparing, fetching or queued.
        let preparing = w
            .reports(false)
            .iter()
            .filter(|r| r.status.state == TaskState::Preparing)
            .count();
        assert_eq!(preparing, 40);

        // Scale to 0 while they wait: fetches are dropped, nothing else starts.
        let stopping: Vec<Task> = tasks
            .iter()
            .cloned()
            .map(|mut t| {
                t.desired_state = TaskState::Shutdown;
                t
            })
            .collect();
        w.assign(stopping);
        until("every shutdown", || {
            let r = w.reports(false);
            r.len() == 40 && r.iter().all(|r| r.status.state == TaskState::Shutdown)
        })
        .await;
        assert_eq!(images.active.load(Ordering::SeqCst), 0);
        assert_eq!(images.calls.load(Ordering::SeqCst), MAX_CONCURRENT_STARTS);
        w.shutdown();
    }

    #[tokio::test]
    async fn the_default_provider_refuses_unknown_ids_without_a_registry() {
        let dir = tempfile::tempdir().unwrap();
        let p = LocalOrPull {
            engine: engine(dir.path()).await,
        };
        let id = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(p.ensure(&id, "").await, Err(format!("No such image: {id}")));
    }
}
