//! Waiting for a service to converge after `create`, `update`, `scale` and `rollback`,
//! with docker's progress display (`overall progress: 2 out of 3 tasks`, one bar per slot,
//! `verify: Service converged`).
//!
//! The decisions are docker's `ServiceProgress` and its four updaters (replicated, global,
//! replicated job, global job), kept pure in [`Tracker`]: each poll feeds it the service,
//! its tasks and the active nodes, and it updates a list of `id: text` lines and says
//! whether to go on. [`wait`] does the polling and draws the lines: redrawn in place on a
//! terminal, printed once at the end otherwise.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};
use shoal_store::model::{ServiceSpec, TaskSpec};

use super::{Exit, q};
use crate::client::Client;
use crate::format;

/// How often the service is polled (docker: 200 ms).
const POLL: Duration = Duration::from_millis(250);
/// Docker's default monitor period when the service has no update config.
const DEFAULT_MONITOR: Duration = Duration::from_secs(5);
/// More slots or nodes than this and docker draws no per-task bars.
const MAX_PROGRESS_BARS: u64 = 20;
/// Bar steps of a service task (new … running).
const MAX_PROGRESS: i64 = 9;
/// Bar steps of a job task (new … complete).
const MAX_JOB_PROGRESS: i64 = 10;
/// Width of the state column: the longest of docker's non-terminal states and `complete`.
const LONGEST_STATE: usize = 9;

/// Docker's progress step of a task state (0: unknown, not shown).
fn numbered(state: &str) -> i64 {
    match state {
        "new" => 1,
        "allocated" => 2,
        "pending" => 3,
        "assigned" => 4,
        "accepted" => 5,
        "preparing" => 6,
        "ready" => 7,
        "starting" => 8,
        "running" => 9,
        "complete" => 10,
        "shutdown" => 11,
        "failed" => 12,
        "rejected" => 13,
        _ => 0,
    }
}

fn terminal(state: &str) -> bool {
    numbered(state) > numbered("running")
}

/// A rollback counts down: running is the end of the bar's way back.
fn state_to_progress(state: &str, rollback: bool) -> i64 {
    if rollback {
        numbered("running") - numbered(state)
    } else {
        numbered(state)
    }
}

/// docker's progress bar (jsonmessage, counts hidden): `[=====>      ]`, 50 wide.
pub fn bar(current: i64, total: i64) -> String {
    if current <= 0 && total <= 0 {
        return String::new();
    }
    let pct = if total > 0 {
        ((current as f64 / total as f64 * 100.0) as i64 / 2).clamp(0, 50) as usize
    } else {
        0
    };
    format!("[{}>{}]", "=".repeat(pct), " ".repeat(50 - pct))
}

/// A task line: the state padded to docker's column, then the bar.
fn state_text(state: &str, current: i64, total: i64) -> String {
    format!(
        "{state:<width$} {}",
        bar(current, total),
        width = LONGEST_STATE
    )
}

/// docker's `truncError`: one line, at most 75 bytes.
fn trunc_error(err: &str) -> String {
    let e = err.replace('\n', " ");
    if e.len() > 75 {
        let mut cut = 74;
        while !e.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &e[..cut])
    } else {
        e
    }
}

/// The lines of the display, in the order their ids first appeared (as docker's
/// jsonmessage keeps them), plus plain lines printed after them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Lines {
    items: Vec<(String, String)>,
    /// Lines without an id, printed below the others (`job complete`).
    pub footer: Vec<String>,
}

impl Lines {
    fn set(&mut self, id: &str, text: String) {
        match self.items.iter_mut().find(|(i, _)| i == id) {
            Some(item) => item.1 = text,
            None => self.items.push((id.to_owned(), text)),
        }
    }

    /// The text of every line, without trailing spaces.
    pub fn render(&self) -> Vec<String> {
        self.items
            .iter()
            .map(|(id, text)| format!("{id}: {text}").trim_end().to_owned())
            .chain(self.footer.iter().cloned())
            .collect()
    }
}

/// What the fields docker's updaters look at say about one task.
#[derive(Debug, Clone)]
struct TaskView {
    slot: u64,
    node_id: String,
    desired: String,
    state: String,
    err: String,
    job_iteration: Option<u64>,
}

impl TaskView {
    fn of(t: &Value) -> TaskView {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_lowercase();
        TaskView {
            slot: t["Slot"].as_u64().unwrap_or(0),
            node_id: t["NodeID"].as_str().unwrap_or_default().to_owned(),
            desired: s(&t["DesiredState"]),
            state: s(&t["Status"]["State"]),
            err: t["Status"]["Err"].as_str().unwrap_or_default().to_owned(),
            job_iteration: t["JobIteration"]["Index"].as_u64(),
        }
    }

    fn known(&self) -> bool {
        numbered(&self.desired) != 0 && numbered(&self.state) != 0
    }
}

/// Of two tasks for the same slot or node, docker keeps the one with the lower desired
/// A slot's (or node's) line: its error, or its progress bar while it is on its way.
fn task_line(lines: &mut Lines, id: &str, t: &TaskView, rollback: bool) {
    if !t.err.is_empty() {
        lines.set(id, trunc_error(&t.err));
    } else if !terminal(&t.desired) && !terminal(&t.state) {
        let text = state_text(
            &t.state,
            state_to_progress(&t.state, rollback),
            MAX_PROGRESS,
        );
        lines.set(id, text);
    }
}

/// state, then the lower observed state (restarts, start-first updates).
fn replaces(existing: &TaskView, candidate: &TaskView) -> bool {
    let (ed, cd) = (numbered(&existing.desired), numbered(&candidate.desired));
    if ed < cd {
        return false;
    }
    !(ed == cd && numbered(&existing.state) <= numbered(&candidate.state))
}

fn write_overall(lines: &mut Lines, done: u64, total: u64, rollback: bool) {
    let text = if rollback {
        format!("rolling back update: {done} out of {total} tasks")
    } else {
        format!("{done} out of {total} tasks")
    };
    lines.set("overall progress", text);
}

/// docker's four progress updaters.
#[derive(Debug)]
enum Updater {
    Replicated {
        initialized: bool,
        done: bool,
        slot_map: BTreeMap<u64, u64>,
    },
    Global {
        initialized: bool,
        done: bool,
    },
    ReplicatedJob {
        iteration: Option<u64>,
        concurrent: u64,
        total: u64,
        initialized: bool,
    },
    GlobalJob {
        iteration: Option<u64>,
        initialized: bool,
        nodes: BTreeSet<String>,
    },
}

impl Updater {
    fn for_service(svc: &Value, spec: &ServiceSpec) -> Updater {
        let iteration = svc["JobStatus"]["JobIteration"]["Index"].as_u64();
        match spec.mode.get() {
            shoal_store::model::Mode::Replicated { .. } => Updater::Replicated {
                initialized: false,
                done: false,
                slot_map: BTreeMap::new(),
            },
            shoal_store::model::Mode::Global => Updater::Global {
                initialized: false,
                done: false,
            },
            shoal_store::model::Mode::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => Updater::ReplicatedJob {
                iteration,
                concurrent: max_concurrent,
                total: total_completions,
                initialized: false,
            },
            shoal_store::model::Mode::GlobalJob => Updater::GlobalJob {
                iteration,
                initialized: false,
                nodes: BTreeSet::new(),
            },
        }
    }

    /// One poll's worth of progress; returns whether the service converged.
    fn update(
        &mut self,
        spec: &ServiceSpec,
        tasks: &[TaskView],
        active: &HashSet<String>,
        rollback: bool,
        lines: &mut Lines,
    ) -> bool {
        match self {
            Updater::Replicated {
                initialized,
                done,
                slot_map,
            } => {
                let replicas = match spec.mode.get() {
                    shoal_store::model::Mode::Replicated { replicas } => replicas,
                    _ => 0,
                };
                if !*initialized {
                    write_overall(lines, 0, replicas, rollback);
                    if replicas <= MAX_PROGRESS_BARS {
                        for i in 1..=replicas {
                            lines.set(&format!("{i}/{replicas}"), " ".into());
                        }
                    }
                    *initialized = true;
                }
                let mut by_slot: BTreeMap<u64, &TaskView> = BTreeMap::new();
                for t in tasks.iter().filter(|t| t.known()) {
                    if by_slot.get(&t.slot).is_some_and(|e| !replaces(e, t)) {
                        continue;
                    }
                    if !t.node_id.is_empty() && !active.contains(&t.node_id) {
                        continue;
                    }
                    by_slot.insert(t.slot, t);
                }
                if *done && by_slot.values().any(|t| t.state != "running") {
                    *done = false;
                }
                let mut running = 0;
                for (slot, t) in &by_slot {
                    let next = slot_map.len() as u64 + 1;
                    let mapped = *slot_map.entry(*slot).or_insert(next);
                    if !terminal(&t.desired) && t.state == "running" {
                        running += 1;
                    }
                    if *done || replicas > MAX_PROGRESS_BARS || mapped > replicas {
                        continue;
                    }
                    task_line(lines, &format!("{mapped}/{replicas}"), t, rollback);
                }
                if !*done {
                    write_overall(lines, running, replicas, rollback);
                    if running == replicas {
                        *done = true;
                    }
                }
                running == replicas
            }
            Updater::Global { initialized, done } => {
                let mut by_node: BTreeMap<&str, &TaskView> = BTreeMap::new();
                for t in tasks.iter().filter(|t| t.known()) {
                    if by_node
                        .get(t.node_id.as_str())
                        .is_some_and(|e| !replaces(e, t))
                    {
                        continue;
                    }
                    by_node.insert(&t.node_id, t);
                }
                let count = by_node.len() as u64;
                if !*initialized {
                    if count == 0 {
                        lines.set("overall progress", "waiting for new tasks".into());
                        return false;
                    }
                    write_overall(lines, 0, count, rollback);
                    *initialized = true;
                }
                if *done && by_node.values().any(|t| t.state != "running") {
                    *done = false;
                }
                let mut running = 0;
                for (node, t) in &by_node {
                    if !active.contains(*node) {
                        continue;
                    }
                    if !terminal(&t.desired) && t.state == "running" {
                        running += 1;
                    }
                    if *done || count > MAX_PROGRESS_BARS {
                        continue;
                    }
                    task_line(lines, &format::short_id(node), t, rollback);
                }
                if !*done {
                    write_overall(lines, running, count, rollback);
                    if running == count {
                        *done = true;
                    }
                }
                running == count
            }
            Updater::ReplicatedJob {
                iteration,
                concurrent,
                total,
                initialized,
            } => {
                let (concurrent, total) = (*concurrent, *total);
                let write = |lines: &mut Lines, active: u64, complete: u64| {
                    let digits = total.to_string().len();
                    lines.set(
                        "job progress",
                        format!(
                            "{complete:>digits$} out of {total} complete {}",
                            bar(complete as i64, total as i64)
                        ),
                    );
                    let desired = (total.saturating_sub(complete)).min(concurrent);
                    let w = concurrent.to_string().len();
                    lines.set(
                        "active tasks",
                        format!("{active:>w$} out of {desired:>w$} tasks"),
                    );
                };
                if !*initialized {
                    write(lines, 0, 0);
                    if total <= MAX_PROGRESS_BARS {
                        for i in 1..=total {
                            lines.set(&format!("{i}/{total}"), " ".into());
                        }
                    }
                    *initialized = true;
                }
                let mut by_slot: BTreeMap<u64, &TaskView> = BTreeMap::new();
                for t in tasks {
                    if iteration.is_some()
                        && t.job_iteration.is_some()
                        && t.job_iteration != *iteration
                    {
                        continue;
                    }
                    if !t.known() {
                        continue;
                    }
                    if by_slot
                        .get(&t.slot)
                        .is_some_and(|e| numbered(&e.state) <= numbered(&t.state))
                    {
                        continue;
                    }
                    by_slot.insert(t.slot, t);
                }
                let (mut active_tasks, mut complete) = (0, 0);
                for (slot, t) in &by_slot {
                    if total <= MAX_PROGRESS_BARS {
                        let id = format!("{slot}/{total}");
                        if !t.err.is_empty() {
                            lines.set(&id, trunc_error(&t.err));
                        } else {
                            lines.set(
                                &id,
                                state_text(&t.state, numbered(&t.state), MAX_JOB_PROGRESS),
                            );
                        }
                    }
                    if numbered(&t.state) < numbered("complete") {
                        active_tasks += 1;
                    } else if t.state == "complete" {
                        complete += 1;
                    }
                }
                write(lines, active_tasks, complete);
                complete == total
            }
            Updater::GlobalJob {
                iteration,
                initialized,
                nodes,
            } => {
                let current = |t: &&TaskView| {
                    iteration.is_none()
                        || t.job_iteration.is_none()
                        || t.job_iteration == *iteration
                };
                if !*initialized {
                    if tasks.is_empty() && !active.is_empty() {
                        lines.set("job progress", "waiting for tasks".into());
                        return false;
                    }
                    *nodes = tasks
                        .iter()
                        .filter(current)
                        .map(|t| t.node_id.clone())
                        .collect();
                    *initialized = true;
                }
                let total = nodes.len() as u64;
                let digits = total.to_string().len();
                let write = |lines: &mut Lines, complete: u64| {
                    lines.set(
                        "job progress",
                        format!(
                            "{complete:>digits$} out of {total:>digits$} complete {}",
                            bar(complete as i64, total as i64)
                        ),
                    );
                };
                if total > 0 && !lines.items.iter().any(|(id, _)| id == "job progress") {
                    write(lines, 0);
                }
                let mut by_node: BTreeMap<&str, &TaskView> = BTreeMap::new();
                for t in tasks.iter().filter(current) {
                    if !nodes.contains(&t.node_id) {
                        continue;
                    }
                    if by_node
                        .get(t.node_id.as_str())
                        .is_some_and(|e| numbered(&e.state) <= numbered(&t.state))
                    {
                        continue;
                    }
                    by_node.insert(&t.node_id, t);
                }
                let mut complete = 0;
                for (node, t) in &by_node {
                    if total <= MAX_PROGRESS_BARS {
                        if !t.err.is_empty() {
                            lines.set(node, trunc_error(&t.err));
                        } else {
                            lines.set(
                                node,
                                state_text(&t.state, numbered(&t.state), MAX_JOB_PROGRESS),
                            );
                        }
                    }
                    if t.state == "complete" {
                        complete += 1;
                    }
                }
                write(lines, complete);
                complete == total
            }
        }
    }
}

/// What the caller should do after a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Poll again.
    Continue,
    /// The service converged (or the job completed).
    Done,
    /// The operation failed; exit 1 with this message.
    Failed(String),
}

/// docker's `ServiceProgress` as a pure state machine over polls.
#[derive(Debug)]
pub struct Tracker {
    updater: Option<Updater>,
    converged: bool,
    converged_at: Option<Duration>,
    monitor: Duration,
    rollback: bool,
    /// Printed after `verify: Service converged` (a rollback's completion message).
    final_message: Option<String>,
    /// The `UpdateStatus` the service had before our update or rollback was requested: a
    /// status still equal to it is stale and ignored.
    stale_status: Option<Value>,
    /// The command is `rollback` (a rollback is then the goal, not a failure).
    manual_rollback: bool,
    /// Why the update was rolled back automatically (the command then fails).
    rolled_back: Option<String>,
    /// The update finished before we saw the tasks converge: render once and stop.
    completed: bool,
    /// The display.
    pub lines: Lines,
}

impl Tracker {
    /// A tracker for one operation. `stale_status` is the `UpdateStatus` the service had
    /// before an update or rollback was requested (None for `create`).
    pub fn new(stale_status: Option<Value>, manual_rollback: bool) -> Tracker {
        Tracker {
            updater: None,
            converged: false,
            converged_at: None,
            monitor: DEFAULT_MONITOR,
            rollback: false,
            final_message: None,
            stale_status,
            manual_rollback,
            rolled_back: None,
            completed: false,
            lines: Lines::default(),
        }
    }

    /// Whether the last poll found the service converged.
    pub fn converged(&self) -> bool {
        self.converged
    }

    fn finish(&mut self, converged: bool) -> Step {
        if converged {
            self.lines.set("verify", "Service converged".into());
        }
        if let Some(m) = self.final_message.take() {
            self.lines.footer.push(format!("rollback: {m}"));
        }
        match self.rolled_back.take() {
            Some(reason) => Step::Failed(reason),
            None => Step::Done,
        }
    }

    /// The first half of a poll: the service's rollout status. `now` is the time since
    /// the wait began.
    pub fn service(&mut self, svc: &Value, now: Duration) -> Step {
        let spec: ServiceSpec = serde_json::from_value(svc["Spec"].clone()).unwrap_or_default();
        self.monitor = spec
            .update_config
            .as_ref()
            .map(|u| u.monitor())
            .filter(|m| !m.is_zero())
            .unwrap_or(DEFAULT_MONITOR);
        if self.updater.is_none() {
            self.updater = Some(Updater::for_service(svc, &spec));
        }
        let status = &svc["UpdateStatus"];
        let stale = self.stale_status.as_ref() == Some(status);
        if status.is_object() && !stale {
            let msg = status["Message"].as_str().unwrap_or_default().to_owned();
            match status["State"].as_str().unwrap_or_default() {
                "updating" => self.rollback = false,
                "completed" if !self.converged => self.completed = true,
                "paused" => return Step::Failed(format!("service update paused: {msg}")),
                "rollback_started" => {
                    if !self.rollback && !msg.is_empty() {
                        self.lines.set("rollback", msg.clone());
                    }
                    if !self.manual_rollback && self.rolled_back.is_none() {
                        self.rolled_back = Some(if msg.is_empty() {
                            "service update rolled back".to_owned()
                        } else {
                            msg
                        });
                    }
                    self.rollback = true;
                }
                "rollback_paused" => {
                    return Step::Failed(format!("service rollback paused: {msg}"));
                }
                "rollback_completed" => {
                    if !self.converged {
                        self.final_message = Some(msg.clone());
                    }
                    if !self.manual_rollback && self.rolled_back.is_none() {
                        self.rolled_back = Some(format!("service update rolled back: {msg}"));
                    }
                    self.rollback = true;
                }
                _ => {}
            }
        }
        if self.converged
            && self
                .converged_at
                .is_some_and(|at| now.saturating_sub(at) >= self.monitor)
        {
            return self.finish(true);
        }
        Step::Continue
    }

    /// The second half of a poll: the service's tasks and the nodes that are not down.
    pub fn tasks(
        &mut self,
        svc: &Value,
        tasks: &[Value],
        active_nodes: &HashSet<String>,
        now: Duration,
    ) -> Step {
        let spec: ServiceSpec = serde_json::from_value(svc["Spec"].clone()).unwrap_or_default();
        let views: Vec<TaskView> = tasks
            .iter()
            .filter(|t| up_to_date(t, &spec.task_template))
            .map(TaskView::of)
            .collect();
        let Some(updater) = self.updater.as_mut() else {
            return Step::Continue;
        };
        let converged = updater.update(&spec, &views, active_nodes, self.rollback, &mut self.lines);
        if converged && spec.mode.is_job() {
            self.converged = true;
            self.lines.footer.push("job complete".into());
            return Step::Done;
        }
        if self.completed {
            self.converged = converged;
            return self.finish(converged);
        }
        if converged {
            let at = *self.converged_at.get_or_insert(now);
            let elapsed = now.saturating_sub(at);
            if elapsed <= self.monitor {
                let wait = self.monitor - elapsed;
                let secs = wait.as_nanos().div_ceil(1_000_000_000).max(1);
                self.lines.set(
                    "verify",
                    format!("Waiting {secs} seconds to verify that tasks are stable..."),
                );
            }
        } else {
            if self.converged_at.is_some() {
                self.lines.set("verify", "Detected task failure".into());
            }
            self.converged_at = None;
        }
        self.converged = converged;
        Step::Continue
    }
}

/// Whether a task runs the service's current task template (swarmkit's "up to date":
/// the orchestrator copies the template into each task it makes).
fn up_to_date(task: &Value, template: &TaskSpec) -> bool {
    serde_json::from_value::<TaskSpec>(task["Spec"].clone()).is_ok_and(|s| s == *template)
}

/// The nodes tasks can count on (docker's `getActiveNodes`: every node not down).
fn active_nodes(nodes: &[Value]) -> HashSet<String> {
    nodes
        .iter()
        .filter(|n| {
            !n["Status"]["State"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("down"))
        })
        .filter_map(|n| n["ID"].as_str().map(str::to_owned))
        .collect()
}

/// Draws the lines: in place on a terminal, nothing otherwise (until [`finish_plain`]).
struct Screen {
    tty: bool,
    quiet: bool,
    drawn: usize,
    /// Off a terminal: the lines printed last, so only changes are printed again.
    printed: Vec<String>,
}

impl Screen {
    fn draw(&mut self, lines: &Lines) -> std::io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        let rendered = lines.render();
        let mut out = std::io::stdout().lock();
        if !self.tty {
            // A log, not a screen: each line once more whenever it changed.
            for (i, l) in rendered.iter().enumerate() {
                if self.printed.get(i) != Some(l) {
                    writeln!(out, "{l}")?;
                }
            }
            self.printed = rendered;
            return out.flush();
        }
        if self.drawn > 0 {
            write!(out, "\x1b[{}A", self.drawn)?;
        }
        for l in &rendered {
            write!(out, "\r\x1b[2K{l}\n")?;
        }
        self.drawn = rendered.len();
        out.flush()
    }

    /// The final state: redrawn on a terminal, its changed lines otherwise.
    fn finish_plain(&mut self, lines: &Lines) -> std::io::Result<()> {
        self.draw(lines)
    }
}

/// How long after a slot's last task ended (beyond the restart delay) no replacement
/// means the orchestrator will not make one.
const STUCK_GRACE: Duration = Duration::from_secs(3);

/// A replicated or global service that cannot converge: a slot (or node) whose last task
/// ended and that gets no replacement (restart condition `none`/`on-failure`, or the
/// maximum attempts used up). Returns Docker's slot line with the task's error.
pub fn stuck(svc: &Value, tasks: &[Value], now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let mode = &svc["Spec"]["Mode"];
    let replicated = mode.get("Replicated").is_some()
        || (mode.get("Global").is_none()
            && mode.get("ReplicatedJob").is_none()
            && mode.get("GlobalJob").is_none());
    let global = mode.get("Global").is_some();
    if !replicated && !global {
        return None;
    }
    let delay = svc["Spec"]["TaskTemplate"]["RestartPolicy"]["Delay"]
        .as_i64()
        .map_or(Duration::from_secs(5), |n| {
            Duration::from_nanos(u64::try_from(n).unwrap_or(0))
        });
    let key = |t: &Value| -> String {
        if global {
            t["NodeID"].as_str().unwrap_or_default().to_owned()
        } else {
            t["Slot"].as_u64().unwrap_or(0).to_string()
        }
    };
    let wanted: BTreeSet<String> = if global {
        tasks.iter().map(key).collect()
    } else {
        let n = mode["Replicated"]["Replicas"].as_u64().unwrap_or(1);
        (1..=n).map(|i| i.to_string()).collect()
    };
    let total = wanted.len();
    for k in &wanted {
        let mine: Vec<&Value> = tasks.iter().filter(|t| &key(t) == k).collect();
        let live = mine.iter().any(|t| {
            t["DesiredState"] == "running"
                && !terminal(t["Status"]["State"].as_str().unwrap_or_default())
        });
        if live || mine.is_empty() {
            continue;
        }
        let newest = mine.iter().max_by_key(|t| {
            t["Status"]["Timestamp"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })?;
        let ended = chrono::DateTime::parse_from_rfc3339(
            newest["Status"]["Timestamp"].as_str().unwrap_or_default(),
        )
        .ok()?
        .with_timezone(&chrono::Utc);
        let quiet = (now - ended).to_std().unwrap_or(Duration::ZERO);
        let ended_for_good = newest["DesiredState"] != "running"
            && terminal(newest["Status"]["State"].as_str().unwrap_or_default());
        if ended_for_good && quiet > delay + STUCK_GRACE {
            let err = newest["Status"]["Err"]
                .as_str()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| newest["Status"]["State"].as_str().unwrap_or("ended"));
            let name = if global {
                k.chars().take(12).collect::<String>()
            } else {
                format!("{k}/{total}")
            };
            return Some(format!("{name}: {err}"));
        }
    }
    None
}

/// Waits until the service converges, showing docker's progress on stdout (nothing with
/// `quiet`). `stale_status`: see [`Tracker::new`]. Ctrl-C stops waiting, not the
/// operation. Fails (exit 1) when the update or rollback pauses, or an update is rolled
/// back.
pub async fn wait(
    c: &Client,
    service: &str,
    quiet: bool,
    stale_status: Option<Value>,
    manual_rollback: bool,
) -> Result<()> {
    let mut tracker = Tracker::new(stale_status, manual_rollback);
    let mut screen = Screen {
        tty: std::io::stdout().is_terminal(),
        quiet,
        drawn: 0,
        printed: Vec::new(),
    };
    let start = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let svc: Value = c.get(&format!("/services/{}", q(service))).await?;
        let step = match tracker.service(&svc, start.elapsed()) {
            Step::Continue => {
                let id = svc["ID"].as_str().unwrap_or(service).to_owned();
                let filters = json!({ "service": [id] }).to_string();
                let tasks: Vec<Value> = c.get(&format!("/tasks?filters={}", q(&filters))).await?;
                let nodes: Vec<Value> = c.get("/nodes").await?;
                match tracker.tasks(&svc, &tasks, &active_nodes(&nodes), start.elapsed()) {
                    Step::Continue => match stuck(&svc, &tasks, chrono::Utc::now()) {
                        Some(why) => {
                            Step::Failed(format!("service {service} cannot converge: {why}"))
                        }
                        None => Step::Continue,
                    },
                    other => other,
                }
            }
            other => other,
        };
        match step {
            Step::Continue => screen.draw(&tracker.lines)?,
            Step::Done => {
                screen.finish_plain(&tracker.lines)?;
                return Ok(());
            }
            Step::Failed(message) => {
                screen.finish_plain(&tracker.lines)?;
                return Err(Exit { code: 1, message }.into());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = &mut ctrl_c => {
                if !tracker.converged() {
                    tracker.lines.footer.push("Operation continuing in background.".into());
                    tracker.lines.footer.push(format!(
                        "Use `shoal service ps {service}` to check progress."
                    ));
                }
                screen.finish_plain(&tracker.lines)?;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_without_replacement_cannot_converge() {
        let now = chrono::Utc::now();
        let ago = |s: i64| (now - chrono::Duration::seconds(s)).to_rfc3339();
        let svc = json!({"Spec": {"Mode": {"Replicated": {"Replicas": 2}},
            "TaskTemplate": {"RestartPolicy": {"Condition": "on-failure", "Delay": 100_000_000i64}}}});
        let t = |slot: u64, desired: &str, state: &str, at: String, err: &str| {
            json!({"Slot": slot, "DesiredState": desired,
                   "Status": {"State": state, "Timestamp": at, "Err": err}})
        };
        // Slot 2 failed 10 s ago and nothing replaced it.
        let tasks = vec![
            t(1, "running", "running", ago(20), ""),
            t(2, "shutdown", "failed", ago(10), "task: non-zero exit (1)"),
        ];
        assert_eq!(
            stuck(&svc, &tasks, now).as_deref(),
            Some("2/2: task: non-zero exit (1)")
        );
        // Just failed: a replacement may still come.
        let fresh = vec![
            t(1, "running", "running", ago(20), ""),
            t(2, "shutdown", "failed", ago(1), "task: non-zero exit (1)"),
        ];
        assert_eq!(stuck(&svc, &fresh, now), None);
        // Being stopped (a stop-first update): not stuck, however long ago it started.
        let stopping = vec![
            t(1, "running", "running", ago(20), ""),
            t(2, "shutdown", "running", ago(60), ""),
        ];
        assert_eq!(stuck(&svc, &stopping, now), None);
        // Replaced: fine.
        let mut replaced = tasks.clone();
        replaced.push(t(2, "running", "starting", ago(0), ""));
        assert_eq!(stuck(&svc, &replaced, now), None);
        // Jobs are judged by their completions, not here.
        let job = json!({"Spec": {"Mode": {"ReplicatedJob": {"TotalCompletions": 1}}}});
        assert_eq!(stuck(&job, &tasks, now), None);
    }

    const FULL: &str = "[==================================================>]";
    const EMPTY: &str = "[>                                                  ]";

    fn template() -> Value {
        json!({"ContainerSpec": {"Image": "busybox:latest@sha256:abc"}, "ForceUpdate": 0})
    }

    fn service(mode: Value) -> Value {
        json!({"ID": "svc1", "Spec": {"Name": "web", "Mode": mode, "TaskTemplate": template(),
               "UpdateConfig": {"Monitor": 1_000_000_000i64}}})
    }

    fn task(slot: u64, node: &str, desired: &str, state: &str) -> Value {
        json!({"ID": format!("t{slot}{state}"), "Slot": slot, "NodeID": node,
               "DesiredState": desired, "Status": {"State": state}, "Spec": template()})
    }

    fn nodes(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn bars_match_docker() {
        assert_eq!(bar(9, 9), FULL);
        assert_eq!(bar(0, 9), EMPTY);
        assert_eq!(bar(1, 9), format!("[=====>{}]", " ".repeat(45)));
        assert_eq!(bar(0, 0), "");
        assert_eq!(state_text("running", 9, 9), format!("running   {FULL}"));
    }

    #[test]
    fn replicated_create_converges_after_the_monitor() {
        let svc = service(json!({"Replicated": {"Replicas": 3}}));
        let active = nodes(&["n1", "n2"]);
        let mut t = Tracker::new(None, false);
        assert_eq!(t.service(&svc, secs(0.0)), Step::Continue);
        let tasks = vec![
            task(1, "n1", "running", "running"),
            task(2, "n2", "running", "preparing"),
            task(3, "", "running", "pending"),
        ];
        assert_eq!(t.tasks(&svc, &tasks, &active, secs(0.0)), Step::Continue);
        assert_eq!(
            t.lines.render(),
            vec![
                "overall progress: 1 out of 3 tasks".to_owned(),
                format!("1/3: running   {FULL}"),
                format!("2/3: preparing {}", bar(6, 9)),
                format!("3/3: pending   {}", bar(3, 9)),
            ]
        );
        let tasks: Vec<Value> = (1..=3)
            .map(|i| task(i, "n1", "running", "running"))
            .collect();
        assert_eq!(t.service(&svc, secs(0.3)), Step::Continue);
        assert_eq!(t.tasks(&svc, &tasks, &active, secs(0.3)), Step::Continue);
        let lines = t.lines.render();
        assert_eq!(lines[0], "overall progress: 3 out of 3 tasks");
        assert_eq!(
            lines[4],
            "verify: Waiting 1 seconds to verify that tasks are stable..."
        );
        // Still within the monitor window.
        assert_eq!(t.service(&svc, secs(0.9)), Step::Continue);
        assert_eq!(t.tasks(&svc, &tasks, &active, secs(0.9)), Step::Continue);
        assert_eq!(t.service(&svc, secs(1.4)), Step::Done);
        let lines = t.lines.render();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[3], format!("3/3: running   {FULL}"));
        assert_eq!(lines[4], "verify: Service converged");
    }

    #[test]
    fn failing_task_shows_its_error_and_resets_the_verification() {
        let svc = service(json!({"Replicated": {"Replicas": 1}}));
        let active = nodes(&["n1"]);
        let mut t = Tracker::new(None, false);
        t.service(&svc, secs(0.0));
        t.tasks(
            &svc,
            &[task(1, "n1", "running", "running")],
            &active,
            secs(0.0),
        );
        assert!(t.converged());
        let mut failed = task(1, "n1", "shutdown", "failed");
        failed["Status"]["Err"] = json!("task: non-zero exit (1)");
        let replacement = task(1, "n1", "running", "ready");
        t.service(&svc, secs(0.5));
        assert_eq!(
            t.tasks(&svc, &[failed.clone(), replacement], &active, secs(0.5)),
            Step::Continue
        );
        assert!(!t.converged());
        let lines = t.lines.render();
        assert_eq!(lines[0], "overall progress: 0 out of 1 tasks");
        assert_eq!(lines[1], format!("1/1: ready     {}", bar(7, 9)));
        assert_eq!(lines[2], "verify: Detected task failure");
        // A slot whose only task failed shows the error.
        t.service(&svc, secs(1.0));
        t.tasks(&svc, &[failed], &active, secs(1.0));
        assert_eq!(t.lines.render()[1], "1/1: task: non-zero exit (1)");
        // Replicated services keep waiting after task failures.
        assert_eq!(t.service(&svc, secs(9.0)), Step::Continue);
    }

    #[test]
    fn tasks_of_an_old_spec_or_a_down_node_do_not_count() {
        let svc = service(json!({"Replicated": {"Replicas": 2}}));
        let mut old = task(1, "n1", "running", "running");
        old["Spec"]["ContainerSpec"]["Image"] = json!("busybox:old");
        let on_down_node = task(2, "gone", "running", "running");
        let mut t = Tracker::new(None, false);
        t.service(&svc, secs(0.0));
        t.tasks(&svc, &[old, on_down_node], &nodes(&["n1"]), secs(0.0));
        assert_eq!(t.lines.render()[0], "overall progress: 0 out of 2 tasks");
        assert!(!t.converged());
    }

    #[test]
    fn paused_update_fails_and_stale_status_is_ignored() {
        let mut svc = service(json!({"Replicated": {"Replicas": 1}}));
        svc["UpdateStatus"] =
            json!({"State": "completed", "StartedAt": "T0", "Message": "update completed"});
        let before = svc["UpdateStatus"].clone();
        let mut t = Tracker::new(Some(before), false);
        // The previous update's "completed" must not end the wait.
        assert_eq!(t.service(&svc, secs(0.0)), Step::Continue);
        t.tasks(
            &svc,
            &[task(1, "n1", "running", "starting")],
            &nodes(&["n1"]),
            secs(0.0),
        );
        svc["UpdateStatus"] = json!({"State": "paused", "StartedAt": "T1",
            "Message": "update paused due to failure or early termination of task abc"});
        assert_eq!(
            t.service(&svc, secs(0.3)),
            Step::Failed(
                "service update paused: update paused due to failure or early termination of task abc"
                    .into()
            )
        );
    }

    #[test]
    fn manual_rollback_shows_its_message_and_counts_down() {
        let mut svc = service(json!({"Replicated": {"Replicas": 1}}));
        svc["UpdateStatus"] = json!({"State": "rollback_started", "StartedAt": "T1",
            "Message": "manually requested rollback"});
        let mut t = Tracker::new(Some(json!({"State": "completed", "StartedAt": "T0"})), true);
        assert_eq!(t.service(&svc, secs(0.0)), Step::Continue);
        t.tasks(
            &svc,
            &[task(1, "n1", "running", "running")],
            &nodes(&["n1"]),
            secs(0.0),
        );
        let lines = t.lines.render();
        assert_eq!(lines[0], "rollback: manually requested rollback");
        assert_eq!(
            lines[1],
            "overall progress: rolling back update: 1 out of 1 tasks"
        );
        assert_eq!(lines[2], format!("1/1: running   {EMPTY}"));
        svc["UpdateStatus"]["State"] = json!("rollback_completed");
        assert_eq!(t.service(&svc, secs(1.5)), Step::Done);
        assert_eq!(
            t.lines.render().last().unwrap(),
            "verify: Service converged"
        );
    }

    #[test]
    fn automatic_rollback_fails_the_update() {
        let mut svc = service(json!({"Replicated": {"Replicas": 1}}));
        let mut t = Tracker::new(None, false);
        t.service(&svc, secs(0.0));
        t.tasks(
            &svc,
            &[task(1, "n1", "running", "starting")],
            &nodes(&["n1"]),
            secs(0.0),
        );
        svc["UpdateStatus"] = json!({"State": "rollback_started", "StartedAt": "T1",
            "Message": "update rolled back due to failure or early termination of task t1"});
        t.service(&svc, secs(0.3));
        t.tasks(
            &svc,
            &[task(1, "n1", "running", "running")],
            &nodes(&["n1"]),
            secs(0.3),
        );
        svc["UpdateStatus"]["State"] = json!("rollback_completed");
        svc["UpdateStatus"]["Message"] = json!("rollback completed");
        assert_eq!(
            t.service(&svc, secs(2.0)),
            Step::Failed(
                "update rolled back due to failure or early termination of task t1".into()
            )
        );
        let lines = t.lines.render();
        assert_eq!(
            lines[2],
            "rollback: update rolled back due to failure or early termination of task t1"
        );
        assert_eq!(lines.last().unwrap(), "verify: Service converged");
    }

    #[test]
    fn update_completed_before_convergence_was_seen_ends_the_wait() {
        let mut svc = service(json!({"Replicated": {"Replicas": 1}}));
        svc["UpdateStatus"] =
            json!({"State": "completed", "StartedAt": "T1", "Message": "update completed"});
        let mut t = Tracker::new(
            Some(json!({"State": "completed", "StartedAt": "T0"})),
            false,
        );
        assert_eq!(t.service(&svc, secs(0.0)), Step::Continue);
        assert_eq!(
            t.tasks(
                &svc,
                &[task(1, "n1", "running", "running")],
                &nodes(&["n1"]),
                secs(0.0)
            ),
            Step::Done
        );
        assert_eq!(
            t.lines.render(),
            vec![
                "overall progress: 1 out of 1 tasks".to_owned(),
                format!("1/1: running   {FULL}"),
                "verify: Service converged".to_owned(),
            ]
        );
    }

    #[test]
    fn global_lines_are_per_node() {
        let svc = service(json!({"Global": {}}));
        let mut t = Tracker::new(None, false);
        t.service(&svc, secs(0.0));
        t.tasks(&svc, &[], &nodes(&["n1"]), secs(0.0));
        assert_eq!(
            t.lines.render(),
            vec!["overall progress: waiting for new tasks"]
        );
        let tasks = vec![
            task(0, "node1234567890abc", "running", "running"),
            task(0, "node2234567890abc", "running", "assigned"),
        ];
        t.tasks(
            &svc,
            &tasks,
            &nodes(&["node1234567890abc", "node2234567890abc"]),
            secs(0.1),
        );
        assert_eq!(
            t.lines.render(),
            vec![
                "overall progress: 1 out of 2 tasks".to_owned(),
                format!("node12345678: running   {FULL}"),
                format!("node22345678: assigned  {}", bar(4, 9)),
            ]
        );
    }

    #[test]
    fn replicated_job_progress_until_completions() {
        let mut svc =
            service(json!({"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 3}}));
        svc["JobStatus"] = json!({"JobIteration": {"Index": 7}});
        let job_task = |slot: u64, state: &str, iteration: u64| {
            let mut x = task(slot, "n1", "complete", state);
            x["JobIteration"] = json!({"Index": iteration});
            x
        };
        let mut t = Tracker::new(None, false);
        t.service(&svc, secs(0.0));
        let tasks = vec![
            job_task(1, "complete", 7),
            job_task(2, "running", 7),
            job_task(3, "complete", 6),
        ];
        assert_eq!(
            t.tasks(&svc, &tasks, &nodes(&["n1"]), secs(0.0)),
            Step::Continue
        );
        assert_eq!(
            t.lines.render(),
            vec![
                format!("job progress: 1 out of 3 complete {}", bar(1, 3)),
                "active tasks: 1 out of 2 tasks".to_owned(),
                format!("1/3: complete  {FULL}"),
                format!("2/3: running   {}", bar(9, 10)),
                "3/3:".to_owned(),
            ]
        );
        let tasks: Vec<Value> = (1..=3).map(|s| job_task(s, "complete", 7)).collect();
        assert_eq!(
            t.tasks(&svc, &tasks, &nodes(&["n1"]), secs(0.3)),
            Step::Done
        );
        let lines = t.lines.render();
        assert_eq!(
            lines[0],
            format!("job progress: 3 out of 3 complete {FULL}")
        );
        assert_eq!(lines[1], "active tasks: 0 out of 0 tasks");
        assert_eq!(lines.last().unwrap(), "job complete");
    }

    #[test]
    fn global_job_counts_the_initial_nodes() {
        let svc = service(json!({"GlobalJob": {}}));
        let mut t = Tracker::new(None, false);
        t.service(&svc, secs(0.0));
        assert_eq!(
            t.tasks(&svc, &[], &nodes(&["a"]), secs(0.0)),
            Step::Continue
        );
        assert_eq!(t.lines.render(), vec!["job progress: waiting for tasks"]);
        let tasks = vec![
            task(0, "a", "complete", "complete"),
            task(0, "b", "complete", "running"),
        ];
        assert_eq!(
            t.tasks(&svc, &tasks, &nodes(&["a", "b"]), secs(0.1)),
            Step::Continue
        );
        assert_eq!(
            t.lines.render()[0],
            format!("job progress: 1 out of 2 complete {}", bar(1, 2))
        );
        let tasks = vec![
            task(0, "a", "complete", "complete"),
            task(0, "b", "complete", "complete"),
        ];
        assert_eq!(
            t.tasks(&svc, &tasks, &nodes(&["a", "b"]), secs(0.2)),
            Step::Done
        );
    }

    #[test]
    fn long_errors_are_cut() {
        let e = "x".repeat(100);
        let t = trunc_error(&e);
        assert_eq!(t.chars().count(), 75);
        assert!(t.ends_with('…'));
        assert_eq!(trunc_error("a\nb"), "a b");
    }

    #[test]
    fn down_nodes_are_not_active() {
        let n = vec![
            json!({"ID": "a", "Status": {"State": "ready"}}),
            json!({"ID": "b", "Status": {"State": "down"}}),
        ];
        assert_eq!(active_nodes(&n), nodes(&["a"]));
    }
}
