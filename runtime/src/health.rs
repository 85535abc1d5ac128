//! Docker's container health checks (`HEALTHCHECK` in the image, `--health-*` flags).
//!
//! A running container whose configuration has a check gets one monitor task. The monitor
//! waits an interval, runs the check inside the container exactly like `exec` (through the
//! `shim-exec` helper), and folds the result into Docker's `State.Health`: `starting` until
//! the first pass, `healthy` after a pass, `unhealthy` after `retries` consecutive failures;
//! failures inside the start period do not count. A check that outlives its timeout is
//! killed and counts as a failure. No probe runs while the container is paused.
//!
//! The decisions are pure functions ([`HealthState::record`], [`next_delay`]), unit-tested
//! here; the kernel touch (running one probe) sits behind the [`Prober`] seam, so the
//! monitor loop is tested with a scripted prober too.

use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use crate::manager::{ExecRequest, Live, Runtime, RuntimeError};
use crate::model::{HealthConfig, Status, api_time};

/// Longest probe output kept in a log entry (Docker's); longer output ends in `...`.
pub const MAX_OUTPUT: usize = 4096;
/// Log entries kept (Docker's).
pub const MAX_LOG_ENTRIES: usize = 5;
/// Default time between probes, and before the first one.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default time a probe may run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time between probes during the start period while still `starting`.
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
/// Default number of consecutive failures that make a container unhealthy.
pub const DEFAULT_RETRIES: u32 = 3;
/// How long starting the exec helper may take before the probe counts as failed (Docker's).
const EXEC_START_LIMIT: Duration = Duration::from_secs(30);
/// How long to wait for a killed probe to end before abandoning it (a frozen cgroup delays
/// SIGKILL until it is thawed).
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long to keep reading output after the probe ended (a background process it left may
/// hold the pipes open forever).
const OUTPUT_GRACE: Duration = Duration::from_millis(200);
/// Smallest non-zero duration Docker accepts in a health check.
const MINIMUM_DURATION_NS: i64 = 1_000_000;

/// A health-check configuration Docker's daemon refuses at create time.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HealthConfigError {
    #[error("{field} in Healthcheck cannot be less than 1ms")]
    TooShort { field: &'static str },
    #[error("Retries in Healthcheck cannot be negative")]
    NegativeRetries,
}

/// Checks a health check as Docker's daemon does when a container is created.
pub fn validate(c: &HealthConfig) -> Result<(), HealthConfigError> {
    for (field, v) in [
        ("Interval", c.interval),
        ("Timeout", c.timeout),
        ("StartPeriod", c.start_period),
        ("StartInterval", c.start_interval),
    ] {
        if v != 0 && v < MINIMUM_DURATION_NS {
            return Err(HealthConfigError::TooShort { field });
        }
    }
    if c.retries < 0 {
        return Err(HealthConfigError::NegativeRetries);
    }
    Ok(())
}

/// Docker's health status words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    /// The word Docker prints (`ps` shows `(healthy)`, `(health: starting)`).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One probe run (Docker's `HealthcheckResult`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthLogEntry {
    #[serde(serialize_with = "ser_time")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    pub end: DateTime<Utc>,
    /// The check's exit code; -1 when it timed out or could not run.
    pub exit_code: i64,
    pub output: String,
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&api_time(t))
}

/// A container's health (Docker's `State.Health`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthState {
    pub status: HealthStatus,
    /// Consecutive failures counted so far (reset by a pass).
    pub failing_streak: u32,
    /// The last [`MAX_LOG_ENTRIES`] probes, oldest first.
    pub log: Vec<HealthLogEntry>,
}

impl HealthState {
    /// The state of a container that just started: `starting`, no streak; the log of an
    /// earlier run is kept, as Docker keeps it.
    pub fn starting(log: Vec<HealthLogEntry>) -> HealthState {
        HealthState {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log,
        }
    }

    /// Folds one probe result in (Docker's `handleProbeResult`). `since_start` is the time
    /// from the container's start to the probe's start. Returns whether the status changed.
    pub fn record(
        &mut self,
        result: HealthLogEntry,
        since_start: Duration,
        timing: &Timing,
    ) -> bool {
        let old = self.status;
        let passed = result.exit_code == 0;
        if self.log.len() >= MAX_LOG_ENTRIES {
            let drop = self.log.len() + 1 - MAX_LOG_ENTRIES;
            self.log.drain(..drop);
        }
        self.log.push(result);
        if passed {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else {
            // Before the first pass, failures inside the start period do not count.
            let in_start_period =
                self.status == HealthStatus::Starting && since_start < timing.start_period;
            if !in_start_period {
                self.failing_streak += 1;
                if self.failing_streak >= timing.retries {
                    self.status = HealthStatus::Unhealthy;
                }
            }
        }
        old != self.status
    }
}

/// The check's timing with Docker's defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: u32,
}

impl Timing {
    /// Docker's rule: a zero (unset) duration or retry count takes the default.
    pub fn from_config(c: &HealthConfig) -> Timing {
        let d = |ns: i64, default: Duration| {
            if ns <= 0 {
                default
            } else {
                Duration::from_nanos(ns as u64)
            }
        };
        Timing {
            interval: d(c.interval, DEFAULT_INTERVAL),
            timeout: d(c.timeout, DEFAULT_TIMEOUT),
            start_period: d(c.start_period, Duration::ZERO),
            start_interval: d(c.start_interval, DEFAULT_START_INTERVAL),
            retries: if c.retries <= 0 {
                DEFAULT_RETRIES
            } else {
                u32::try_from(c.retries).unwrap_or(u32::MAX)
            },
        }
    }
}

/// How long to wait before the next probe (Docker's `getInterval`): the interval; during
/// the start period while `starting`, the start interval, but never past the end of the
/// start period when that comes before a whole interval.
pub fn next_delay(t: &Timing, since_start: Duration, status: HealthStatus) -> Duration {
    if since_start >= t.start_period {
        return t.interval;
    }
    let remaining = t.start_period - since_start;
    if remaining < t.interval {
        return remaining;
    }
    if status == HealthStatus::Starting {
        t.start_interval
    } else {
        t.interval
    }
}

/// The argv a check runs, or `None` when there is no check (`NONE`, no test, or a test
/// kind Docker does not know, which it ignores with a warning).
pub fn probe_command(c: &HealthConfig) -> Option<Vec<String>> {
    let (kind, rest) = c.test.split_first()?;
    match kind.as_str() {
        "CMD" => Some(rest.to_vec()),
        "CMD-SHELL" => {
            let mut argv = vec!["/bin/sh".to_owned(), "-c".to_owned()];
            argv.extend(rest.iter().cloned());
            Some(argv)
        }
        "NONE" => None,
        other => {
            tracing::warn!(kind = %other, "unknown health check type (expected CMD); ignored");
            None
        }
    }
}

/// Formats a duration as Go's `time.Duration.String` does (`300ms`, `30s`, `1m30s`), for
/// Docker's timeout message.
pub fn go_duration(d: Duration) -> String {
    fn frac(v: u128, div: u128, width: usize) -> String {
        let (int, rest) = (v / div, v % div);
        if rest == 0 {
            int.to_string()
        } else {
            let f = format!("{rest:0width$}");
            format!("{int}.{}", f.trim_end_matches('0'))
        }
    }
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000, 6));
    }
    let (h, rem) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (m, s) = (rem / 60_000_000_000, rem % 60_000_000_000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&frac(s, 1_000_000_000, 9));
    out.push('s');
    out
}

/// Probe output kept up to [`MAX_OUTPUT`] bytes (stdout and stderr interleaved, as written).
#[derive(Debug, Default)]
pub struct LimitedOutput {
    buf: Vec<u8>,
    truncated: bool,
}

impl LimitedOutput {
    /// Appends what still fits; remembers that something was dropped.
    pub fn push(&mut self, data: &[u8]) {
        let keep = MAX_OUTPUT.saturating_sub(self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..keep]);
        if keep < data.len() {
            self.truncated = true;
        }
    }

    /// The text, with `...` appended when output was dropped (Docker's).
    pub fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.buf).into_owned();
        if self.truncated {
            s.push_str("...");
        }
        s
    }
}

/// What one probe run gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probed {
    pub exit_code: i64,
    pub output: String,
}

/// Runs one probe in a container: the seam between the monitor loop and the kernel.
pub trait Prober: Send + Sync + 'static {
    /// Runs `cmd`, killing it after `timeout`. `None` when it could not run because the
    /// container is paused or gone (nothing to record).
    fn probe(
        &self,
        cmd: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Option<Probed>> + Send;
}

/// The real prober: `exec` through the runtime's helper.
pub struct ExecProber {
    pub rt: Runtime,
    pub id: String,
}

impl Prober for ExecProber {
    async fn probe(&self, cmd: &[String], timeout: Duration) -> Option<Probed> {
        let req = ExecRequest {
            cmd: cmd.to_vec(),
            ..ExecRequest::default()
        };
        let mut child = match self.rt.exec(&self.id, req).await {
            Ok(c) => c,
            Err(
                RuntimeError::Paused(_) | RuntimeError::NotRunning(_) | RuntimeError::NotFound(_),
            ) => return None,
            Err(e) => {
                return Some(Probed {
                    exit_code: -1,
                    output: e.to_string(),
                });
            }
        };
        let output = Arc::new(Mutex::new(LimitedOutput::default()));
        let readers: Vec<JoinHandle<()>> = [
            spawn_reader(child.stdout.take(), output.clone()),
            spawn_reader(child.stderr.take(), output.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut run = ExecRun {
            pid: child.id().and_then(|p| i32::try_from(p).ok()),
            child,
            reaped: false,
        };

        // Starting the exec (joining the container) does not count towards the timeout.
        if !run.wait_started(EXEC_START_LIMIT).await {
            drain(readers, Duration::ZERO).await;
            return Some(Probed {
                exit_code: -1,
                output: format!("timed out starting health check for container {}", self.id),
            });
        }
        let status = match tokio::time::timeout(timeout, run.child.wait()).await {
            Ok(Ok(st)) => {
                run.reaped = true;
                st
            }
            Ok(Err(e)) => {
                run.reaped = true;
                drain(readers, Duration::ZERO).await;
                return Some(Probed {
                    exit_code: -1,
                    output: format!("cannot wait for the health check: {e}"),
                });
            }
            Err(_) => {
                tracing::debug!(id = %self.id, "health check taking too long; killing it");
                run.kill_exec();
                if let Ok(r) = tokio::time::timeout(KILL_WAIT, run.child.wait()).await {
                    run.reaped = r.is_ok();
                }
                drain(readers, OUTPUT_GRACE).await;
                let out = lock(&output).text();
                let limit = go_duration(timeout);
                let msg = if out.is_empty() {
                    format!("Health check exceeded timeout ({limit})")
                } else {
                    format!("Health check exceeded timeout ({limit}): {out}")
                };
                return Some(Probed {
                    exit_code: -1,
                    output: msg,
                });
            }
        };
        drain(readers, OUTPUT_GRACE).await;
        let exit_code = match (status.code(), status.signal()) {
            (Some(c), _) => i64::from(c),
            (None, Some(s)) => 128 + i64::from(s),
            (None, None) => -1,
        };
        let out = lock(&output).text();
        Some(Probed {
            exit_code,
            output: out,
        })
    }
}

/// The exec helper of one probe. Dropped unfinished (probe cancelled because the container
/// paused or stopped), it kills the probe's process and the helper.
struct ExecRun {
    child: tokio::process::Child,
    /// The helper's pid; only used while it is not reaped (so it cannot be recycled).
    pid: Option<i32>,
    reaped: bool,
}

impl ExecRun {
    /// Waits until the helper has forked the process that joins the container, or exited.
    /// `false` when neither happened within `limit`.
    async fn wait_started(&mut self, limit: Duration) -> bool {
        let Some(helper) = self.pid else {
            return true;
        };
        let t0 = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => {
                    // tokio keeps the status for the `wait` that follows.
                    self.reaped = true;
                    return true;
                }
                Ok(None) => {}
            }
            // Child pids normally follow the helper's; after a while also look below it
            // (pid wrap-around).
            let full = t0.elapsed() > Duration::from_millis(100);
            if !children_of(helper, full).is_empty() {
                return true;
            }
            if t0.elapsed() >= limit {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the process the helper runs in the container (and its process group: it is
    /// a session leader), so the helper exits with it.
    fn kill_exec(&self) {
        if let (Some(helper), false) = (self.pid, self.reaped) {
            kill_children(helper);
        }
    }
}

impl Drop for ExecRun {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_exec();
            // tokio reaps a dropped child in the background.
            let _ = self.child.start_kill();
        }
    }
}

fn spawn_reader<R>(r: Option<R>, out: Arc<Mutex<LimitedOutput>>) -> Option<JoinHandle<()>>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let mut r = r?;
    Some(tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => lock(&out).push(&buf[..n]),
            }
        }
    }))
}

/// Lets the output readers finish within `grace`, then stops them.
async fn drain(readers: Vec<JoinHandle<()>>, grace: Duration) {
    let deadline = Instant::now() + grace;
    for h in readers {
        let abort = h.abort_handle();
        if tokio::time::timeout_at(deadline, h).await.is_err() {
            abort.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic while holding it; the data is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// SIGKILLs the children of `parent` and their process groups. Each child is pinned with a
/// pidfd and checked to still be `parent`'s before it is signalled, so a recycled pid is
/// never hit.
fn kill_children(parent: i32) {
    use rustix::process::{Pid, PidfdFlags, Signal};
    for c in children_of(parent, true) {
        let Some(pid) = Pid::from_raw(c) else {
            continue;
        };
        let Ok(fd) = rustix::process::pidfd_open(pid, PidfdFlags::empty()) else {
            continue;
        };
        if parent_of(c) != Some(parent) {
            continue;
        }
        // While it is an unreaped child of `parent`, its pid (and so its group id) is its own.
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        let _ = rustix::process::pidfd_send_signal(&fd, Signal::KILL);
    }
}

/// Host pids of the direct children of `pid`: from `/proc/<pid>/task/*/children` where the
/// kernel has it (CONFIG_PROC_CHILDREN), else by scanning `/proc` (only pids above `pid`
/// unless `full`).
fn children_of(pid: i32, full: bool) -> Vec<i32> {
    static HAS_CHILDREN_FILE: OnceLock<bool> = OnceLock::new();
    let has = *HAS_CHILDREN_FILE.get_or_init(|| {
        // The main thread's task id is the process id.
        let tid = std::process::id();
        std::path::Path::new(&format!("/proc/self/task/{tid}/children")).exists()
    });
    if has {
        let mut out = Vec::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                    out.extend(
                        text.split_whitespace()
                            .filter_map(|p| p.parse::<i32>().ok()),
                    );
                }
            }
        }
        return out;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| full || p > pid)
        .filter(|&p| parent_of(p) == Some(pid))
        .collect()
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may contain spaces and parentheses: fields start after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// What the container is doing, for the monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    Running,
    Paused,
    /// Stopped, restarted since the monitor began, or removed.
    Gone,
}

fn run_state(l: &Live, generation: u64) -> Run {
    if l.status != Some(Status::Running) || l.exits != generation {
        Run::Gone
    } else if l.paused {
        Run::Paused
    } else {
        Run::Running
    }
}

/// Waits while the container is paused; returns `Running` or `Gone`.
async fn until_unpaused(live: &mut watch::Receiver<Live>, generation: u64) -> Run {
    loop {
        let r = run_state(&live.borrow_and_update(), generation);
        if r != Run::Paused {
            return r;
        }
        if live.changed().await.is_err() {
            return Run::Gone;
        }
    }
}

/// Resolves when the container pauses or goes away.
async fn interrupted(live: &mut watch::Receiver<Live>, generation: u64) -> Run {
    loop {
        let r = run_state(&live.borrow_and_update(), generation);
        if r != Run::Running {
            return r;
        }
        if live.changed().await.is_err() {
            return Run::Gone;
        }
    }
}

/// The monitor of one container run (Docker's `monitor`): ends when the container stops,
/// restarts or is removed; skips probes while it is paused (a probe running when it pauses
/// is cancelled, and the interval starts over on unpause).
pub async fn monitor<P: Prober>(
    prober: P,
    cmd: Vec<String>,
    timing: Timing,
    mut live: watch::Receiver<Live>,
    state: Arc<watch::Sender<Option<HealthState>>>,
    id: String,
) {
    let (generation, started_at) = {
        let l = live.borrow_and_update();
        (l.exits, l.started_at)
    };
    // Time since the container's start, on the monotonic clock from here on.
    let before = started_at
        .and_then(|s| (Utc::now() - s).to_std().ok())
        .unwrap_or_default();
    let t0 = Instant::now();
    let since_start = || before + t0.elapsed();
    loop {
        if until_unpaused(&mut live, generation).await == Run::Gone {
            return;
        }
        let status = state
            .borrow()
            .as_ref()
            .map_or(HealthStatus::Starting, |h| h.status);
        let delay = next_delay(&timing, since_start(), status);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            r = interrupted(&mut live, generation) => {
                if r == Run::Gone {
                    return;
                }
                continue;
            }
        }
        let start = Utc::now();
        let offset = since_start();
        let probed = tokio::select! {
            p = prober.probe(&cmd, timing.timeout) => p,
            r = interrupted(&mut live, generation) => {
                if r == Run::Gone {
                    return;
                }
                continue;
            }
        };
        let Some(p) = probed else {
            continue;
        };
        // A result that arrives after the container stopped is dropped, as Docker does.
        if run_state(&live.borrow(), generation) == Run::Gone {
            return;
        }
        let entry = HealthLogEntry {
            start,
            end: Utc::now(),
            exit_code: p.exit_code,
            output: p.output,
        };
        let mut changed = None;
        state.send_if_modified(|s| {
            let Some(h) = s.as_mut() else {
                return false;
            };
            if h.record(entry, offset, &timing) {
                changed = Some(h.status);
            }
            true
        });
        match changed {
            Some(HealthStatus::Unhealthy) => {
                tracing::warn!(%id, status = "unhealthy", "container health status changed")
            }
            Some(s) => tracing::info!(%id, status = s.as_str(), "container health status changed"),
            None => {}
        }
    }
}

/// The health of one container: the current state (cheap to read and to watch) and the
/// monitor of its current run.
pub struct HealthSlot {
    state: Arc<watch::Sender<Option<HealthState>>>,
    task: Mutex<Option<AbortHandle>>,
}

impl Default for HealthSlot {
    fn default() -> Self {
        HealthSlot {
            state: Arc::new(watch::channel(None).0),
            task: Mutex::new(None),
        }
    }
}

impl HealthSlot {
    /// The current health; `None` when the container has no check or never ran with one.
    pub fn get(&self) -> Option<HealthState> {
        self.state.borrow().clone()
    }

    /// A receiver that sees every health change.
    pub fn subscribe(&self) -> watch::Receiver<Option<HealthState>> {
        self.state.subscribe()
    }

    /// Starts the monitor of a run that just began (or was re-adopted): status `starting`,
    /// streak 0. Does nothing for a container without a check.
    pub fn start(
        &self,
        rt: &Runtime,
        id: &str,
        config: Option<&HealthConfig>,
        live: watch::Receiver<Live>,
    ) {
        self.stop();
        let Some(cmd) = config.and_then(probe_command) else {
            return;
        };
        let timing = config.map(Timing::from_config).unwrap_or(Timing {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            start_period: Duration::ZERO,
            start_interval: DEFAULT_START_INTERVAL,
            retries: DEFAULT_RETRIES,
        });
        self.state.send_modify(|s| {
            let log = s.take().map(|h| h.log).unwrap_or_default();
            *s = Some(HealthState::starting(log));
        });
        let prober = ExecProber {
            rt: rt.clone(),
            id: id.to_owned(),
        };
        let task = tokio::spawn(monitor(
            prober,
            cmd,
            timing,
            live,
            self.state.clone(),
            id.to_owned(),
        ));
        *lock(&self.task) = Some(task.abort_handle());
    }

    /// Stops the monitor (the container stopped); the last health stays visible.
    pub fn stop(&self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

impl Drop for HealthSlot {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn timing(retries: u32, start_period_ms: u64) -> Timing {
        Timing {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(50),
            start_period: Duration::from_millis(start_period_ms),
            start_interval: Duration::from_millis(100),
            retries,
        }
    }

    fn entry(code: i64) -> HealthLogEntry {
        let t = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        HealthLogEntry {
            start: t,
            end: t,
            exit_code: code,
            output: format!("code {code}"),
        }
    }

    const LATE: Duration = Duration::from_secs(100);

    #[test]
    fn health_pass_makes_healthy_and_resets_streak() {
        let t = timing(3, 0);
        let mut h = HealthState::starting(Vec::new());
        assert!(!h.record(entry(1), LATE, &t));
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 1));
        assert!(h.record(entry(0), LATE, &t));
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 0));
        assert!(!h.record(entry(0), LATE, &t));
    }

    #[test]
    fn health_retries_consecutive_failures_make_unhealthy() {
        let t = timing(3, 0);
        let mut h = HealthState::starting(Vec::new());
        h.record(entry(0), LATE, &t);
        assert!(!h.record(entry(1), LATE, &t));
        assert!(!h.record(entry(-1), LATE, &t));
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 2));
        assert!(h.record(entry(2), LATE, &t));
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Unhealthy, 3));
        // Further failures keep counting; one pass recovers.
        h.record(entry(1), LATE, &t);
        assert_eq!(h.failing_streak, 4);
        assert!(h.record(entry(0), LATE, &t));
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 0));
    }

    #[test]
    fn health_start_period_ignores_failures_only_while_starting() {
        let t = timing(1, 1000);
        let early = Duration::from_millis(500);
        let mut h = HealthState::starting(Vec::new());
        assert!(!h.record(entry(1), early, &t));
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 0));
        assert_eq!(h.log.len(), 1, "ignored failures are still logged");
        // After the start period a failure counts.
        assert!(h.record(entry(1), Duration::from_millis(1000), &t));
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Unhealthy, 1));
        // Once healthy, the start period no longer protects.
        let mut h = HealthState::starting(Vec::new());
        h.record(entry(0), Duration::from_millis(100), &t);
        assert!(h.record(entry(1), early, &t));
        assert_eq!(h.status, HealthStatus::Unhealthy);
    }

    #[test]
    fn health_log_keeps_last_five() {
        let t = timing(3, 0);
        let mut h = HealthState::starting(Vec::new());
        for c in 0..8 {
            h.record(entry(c), LATE, &t);
        }
        let codes: Vec<i64> = h.log.iter().map(|e| e.exit_code).collect();
        assert_eq!(codes, vec![3, 4, 5, 6, 7]);
        // A restart keeps the log but starts over.
        let again = HealthState::starting(h.log.clone());
        assert_eq!(again.status, HealthStatus::Starting);
        assert_eq!(again.failing_streak, 0);
        assert_eq!(again.log.len(), 5);
    }

    #[test]
    fn health_timing_defaults() {
        let t = Timing::from_config(&HealthConfig::default());
        assert_eq!(t.interval, Duration::from_secs(30));
        assert_eq!(t.timeout, Duration::from_secs(30));
        assert_eq!(t.start_period, Duration::ZERO);
        assert_eq!(t.start_interval, Duration::from_secs(5));
        assert_eq!(t.retries, 3);
        let t = Timing::from_config(&HealthConfig {
            test: vec!["CMD".into(), "true".into()],
            interval: 200_000_000,
            timeout: 300_000_000,
            start_period: 1_000_000_000,
            start_interval: 50_000_000,
            retries: 5,
        });
        assert_eq!(t.interval, Duration::from_millis(200));
        assert_eq!(t.timeout, Duration::from_millis(300));
        assert_eq!(t.start_period, Duration::from_secs(1));
        assert_eq!(t.start_interval, Duration::from_millis(50));
        assert_eq!(t.retries, 5);
    }

    #[test]
    fn health_next_delay_like_docker() {
        let ms = Duration::from_millis;
        let mut t = timing(3, 0);
        t.interval = ms(1000);
        t.start_interval = ms(200);
        // No start period: always the interval.
        assert_eq!(next_delay(&t, ms(0), HealthStatus::Starting), ms(1000));
        t.start_period = ms(5000);
        // In the start period while starting: the start interval.
        assert_eq!(next_delay(&t, ms(0), HealthStatus::Starting), ms(200));
        // In the start period once healthy: the interval.
        assert_eq!(next_delay(&t, ms(0), HealthStatus::Healthy), ms(1000));
        // Less than an interval of start period left: run when it ends.
        assert_eq!(next_delay(&t, ms(4500), HealthStatus::Healthy), ms(500));
        assert_eq!(next_delay(&t, ms(4500), HealthStatus::Starting), ms(500));
        // After it: the interval.
        assert_eq!(next_delay(&t, ms(6000), HealthStatus::Starting), ms(1000));
    }

    #[test]
    fn health_probe_commands() {
        let c = |t: &[&str]| HealthConfig {
            test: t.iter().map(|s| s.to_string()).collect(),
            ..HealthConfig::default()
        };
        assert_eq!(
            probe_command(&c(&["CMD", "test", "-f", "/ok"])),
            Some(vec!["test".into(), "-f".into(), "/ok".into()])
        );
        assert_eq!(
            probe_command(&c(&["CMD-SHELL", "curl -f localhost || exit 1"])),
            Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "curl -f localhost || exit 1".into()
            ])
        );
        assert_eq!(probe_command(&c(&["NONE"])), None);
        assert_eq!(probe_command(&c(&[])), None);
        assert_eq!(probe_command(&c(&["BOGUS", "x"])), None);
    }

    #[test]
    fn health_validate_like_docker() {
        let ok = HealthConfig {
            test: vec!["CMD".into(), "true".into()],
            interval: 1_000_000,
            ..HealthConfig::default()
        };
        assert_eq!(validate(&ok), Ok(()));
        assert_eq!(validate(&HealthConfig::default()), Ok(()));
        let short = HealthConfig {
            timeout: 999_999,
            ..ok.clone()
        };
        assert_eq!(
            validate(&short).unwrap_err().to_string(),
            "Timeout in Healthcheck cannot be less than 1ms"
        );
        let neg = HealthConfig {
            interval: -5,
            ..ok.clone()
        };
        assert_eq!(
            validate(&neg),
            Err(HealthConfigError::TooShort { field: "Interval" })
        );
        let retries = HealthConfig {
            retries: -1,
            ..ok.clone()
        };
        assert_eq!(validate(&retries), Err(HealthConfigError::NegativeRetries));
    }

    #[test]
    fn health_go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(ms(300)), "300ms");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(go_duration(Duration::from_nanos(12)), "12ns");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn health_output_is_limited() {
        let mut o = LimitedOutput::default();
        o.push(b"hello ");
        o.push(b"world");
        assert_eq!(o.text(), "hello world");
        let mut o = LimitedOutput::default();
        o.push(&vec![b'a'; MAX_OUTPUT - 1]);
        o.push(b"bc");
        o.push(b"d");
        let t = o.text();
        assert_eq!(t.len(), MAX_OUTPUT + 3);
        assert!(t.ends_with("ab..."), "{}", &t[t.len() - 10..]);
    }

    #[test]
    fn health_json_like_docker() {
        let mut h = HealthState::starting(Vec::new());
        h.record(entry(0), LATE, &timing(3, 0));
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "Status": "healthy",
                "FailingStreak": 0,
                "Log": [{"Start": "2024-01-01T00:00:00Z", "End": "2024-01-01T00:00:00Z",
                         "ExitCode": 0, "Output": "code 0"}],
            })
        );
        let back: HealthState = serde_json::from_value(v).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn health_children_and_parent_of_real_processes() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let pid = child.id() as i32;
        assert_eq!(parent_of(pid), Some(me));
        assert!(children_of(me, true).contains(&pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(parent_of(pid), None);
    }

    #[test]
    fn health_kill_children_kills_the_group() {
        // A parent (sh) whose child is a session leader with a grandchild in its group:
        // both the child and the grandchild die, the parent lives.
        let mut parent = std::process::Command::new("/bin/busybox")
            .args([
                "sh",
                "-c",
                "setsid /bin/busybox sh -c '/bin/busybox sleep 30 & wait' & wait",
            ])
            .spawn()
            .unwrap();
        let ppid = parent.id() as i32;
        let t0 = std::time::Instant::now();
        let (child, grandchild) = loop {
            let c = children_of(ppid, true);
            if let Some(&c) = c.first()
                && let Some(&g) = children_of(c, true).first()
            {
                break (c, g);
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "no grandchild");
            std::thread::sleep(Duration::from_millis(10));
        };
        kill_children(ppid);
        let st = parent.wait().unwrap();
        assert!(st.success(), "the parent's wait returned: {st:?}");
        let gone = |p: i32| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| {
                    let st = s.rsplit_once(')').unwrap().1.split_whitespace().next();
                    st == Some("Z") || st == Some("X")
                })
                .unwrap_or(true)
        };
        assert!(gone(child));
        let t0 = std::time::Instant::now();
        while !gone(grandchild) {
            assert!(t0.elapsed() < Duration::from_secs(5), "grandchild survived");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A prober returning scripted exit codes, counting calls.
    struct Scripted {
        codes: Mutex<VecDeque<i64>>,
        calls: Arc<Mutex<u32>>,
    }

    impl Prober for Scripted {
        async fn probe(&self, _cmd: &[String], _timeout: Duration) -> Option<Probed> {
            *lock(&self.calls) += 1;
            let code = lock(&self.codes).pop_front().unwrap_or(0);
            Some(Probed {
                exit_code: code,
                output: String::new(),
            })
        }
    }

    fn running() -> Live {
        Live {
            status: Some(Status::Running),
            pid: 1,
            started_at: Some(Utc::now()),
            ..Live::default()
        }
    }

    struct Harness {
        live: watch::Sender<Live>,
        state: Arc<watch::Sender<Option<HealthState>>>,
        calls: Arc<Mutex<u32>>,
        task: JoinHandle<()>,
    }

    fn start_monitor(codes: &[i64], t: Timing) -> Harness {
        let live = watch::channel(running()).0;
        let state = Arc::new(watch::channel(Some(HealthState::starting(Vec::new()))).0);
        let calls = Arc::new(Mutex::new(0));
        let prober = Scripted {
            codes: Mutex::new(codes.iter().copied().collect()),
            calls: calls.clone(),
        };
        let task = tokio::spawn(monitor(
            prober,
            vec!["true".into()],
            t,
            live.subscribe(),
            state.clone(),
            "c".into(),
        ));
        Harness {
            live,
            state,
            calls,
            task,
        }
    }

    fn status(h: &Harness) -> (HealthStatus, u32, usize) {
        let s = h.state.borrow().clone().unwrap();
        (s.status, s.failing_streak, s.log.len())
    }

    #[tokio::test(start_paused = true)]
    async fn health_monitor_probes_every_interval() {
        let h = start_monitor(&[1, 1, 0, 1, 1, 1], timing(3, 0));
        // Nothing before the first interval.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*lock(&h.calls), 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(status(&h), (HealthStatus::Starting, 1, 1));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(status(&h), (HealthStatus::Healthy, 0, 3));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(status(&h), (HealthStatus::Unhealthy, 3, 5));
        // Stopping the container ends the monitor.
        h.live.send_modify(|l| {
            l.status = Some(Status::Exited);
            l.exits += 1;
        });
        tokio::time::timeout(Duration::from_secs(1), h.task)
            .await
            .expect("monitor did not end")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn health_monitor_skips_while_paused() {
        let h = start_monitor(&[], timing(3, 0));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(*lock(&h.calls), 1);
        h.live.send_modify(|l| l.paused = true);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(*lock(&h.calls), 1, "probed while paused");
        h.live.send_modify(|l| l.paused = false);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(*lock(&h.calls), 2);
        // Removal (the sender dropped) ends it too.
        drop(h.live);
        tokio::time::timeout(Duration::from_secs(1), h.task)
            .await
            .expect("monitor did not end")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn health_monitor_start_period() {
        let h = start_monitor(&[1, 1, 1, 1, 1], timing(1, 350));
        // Probes at 100, 200, 300 ms fall in the start period and do not count.
        tokio::time::sleep(Duration::from_millis(320)).await;
        assert_eq!(status(&h), (HealthStatus::Starting, 0, 3));
        // The next one, at the end of the start period, does.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(status(&h), (HealthStatus::Unhealthy, 1, 4));
    }
}
