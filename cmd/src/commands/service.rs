//! `service create|update|scale|rollback|rm|ls|ps|inspect|logs|pause|unpause` and
//! `node ps`: docker's verbs, flags, tables and messages, over the daemon's Docker-shaped
//! service and task API.
//!
//! Flags become specs in [`super::service_opts`]; waiting for convergence lives in
//! [`super::service_progress`]. The table and log formatting here are pure functions of the
//! API's JSON, tested as such.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shoal_store::model::{Mode, ServiceSpec};

use super::service_opts::{self, OptsError, ServiceCreateArgs, ServiceUpdateArgs, parse_go_uint};
use super::service_progress;
use super::{Exit, delete_each, describe, q, report};
use crate::client::{self, Client, is_status};
use crate::format::{self, OutputFormat, Template};

// ---------------------------------------------------------------------------------------
// Command line

/// `shoal service …`.
#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Create a new service.
    Create(Box<ServiceCreateArgs>),
    /// Update a service.
    Update(Box<ServiceUpdateArgs>),
    /// Scale one or multiple replicated services.
    Scale(ServiceScaleArgs),
    /// Revert changes to a service's configuration.
    Rollback(ServiceRollbackArgs),
    /// Remove one or more services.
    #[command(visible_alias = "remove")]
    Rm(ServicesArgs),
    /// List services.
    #[command(visible_alias = "list")]
    Ls(ServiceLsArgs),
    /// List the tasks of one or more services.
    Ps(ServicePsArgs),
    /// Display detailed information on one or more services.
    Inspect(ServiceInspectArgs),
    /// Fetch the logs of a service or task.
    Logs(ServiceLogsArgs),
    /// Freeze every task of one or more services (cgroup freezer).
    Pause(ServicesArgs),
    /// Thaw every task of one or more services.
    Unpause(ServicesArgs),
}

/// `service scale SERVICE=REPLICAS [SERVICE=REPLICAS...]`.
#[derive(Debug, Args)]
pub struct ServiceScaleArgs {
    /// Exit immediately instead of waiting for the service to converge.
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[arg(required = true, value_name = "SERVICE=REPLICAS")]
    pub scales: Vec<String>,
}

/// `service rollback SERVICE`.
#[derive(Debug, Args)]
pub struct ServiceRollbackArgs {
    /// Exit immediately instead of waiting for the service to converge.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Suppress progress output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

/// Verbs that take a list of services.
#[derive(Debug, Args)]
pub struct ServicesArgs {
    #[arg(required = true, value_name = "SERVICE")]
    pub services: Vec<String>,
}

/// `service ls`.
#[derive(Debug, Args)]
pub struct ServiceLsArgs {
    /// Only display IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Filter output based on conditions provided (id=, name=, label=, mode=).
    #[arg(short = 'f', long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Format output ('table', 'json' or a Go template).
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
}

/// The flags of the task tables (`service ps`, `node ps`).
#[derive(Debug, Args, Clone)]
pub struct TaskListFlags {
    /// Only display task IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Filter output based on conditions provided (id=, name=, node=, desired-state=).
    #[arg(short = 'f', long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Format output ('table', 'json' or a Go template).
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Do not map IDs to names.
    #[arg(long)]
    pub no_resolve: bool,
}

/// `service ps SERVICE [SERVICE...]`.
#[derive(Debug, Args)]
pub struct ServicePsArgs {
    #[command(flatten)]
    pub list: TaskListFlags,
    #[arg(required = true, value_name = "SERVICE")]
    pub services: Vec<String>,
}

/// `node ps [NODE...]` (default: this node).
#[derive(Debug, Args)]
pub struct NodePsArgs {
    #[command(flatten)]
    pub list: TaskListFlags,
    #[arg(value_name = "NODE")]
    pub nodes: Vec<String>,
}

/// `service inspect`.
#[derive(Debug, Args)]
pub struct ServiceInspectArgs {
    /// Print the information in a human friendly format.
    #[arg(long)]
    pub pretty: bool,
    /// Format output using a custom template.
    #[arg(short = 'f', long, value_name = "string")]
    pub format: Option<String>,
    #[arg(required = true, value_name = "SERVICE")]
    pub services: Vec<String>,
}

/// `service logs SERVICE|TASK`.
#[derive(Debug, Args)]
pub struct ServiceLogsArgs {
    /// Follow log output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for everything).
    #[arg(short = 'n', long, default_value = "all", value_name = "string")]
    pub tail: String,
    /// Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m).
    #[arg(long, value_name = "string")]
    pub since: Option<String>,
    /// Show timestamps.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Do not neatly format logs.
    #[arg(long)]
    pub raw: bool,
    /// Do not include task IDs in output.
    #[arg(long)]
    pub no_task_ids: bool,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Do not map IDs to names in output.
    #[arg(long)]
    pub no_resolve: bool,
    #[arg(value_name = "SERVICE|TASK")]
    pub target: String,
}

/// Runs one `service` verb; returns the exit code.
pub async fn run(c: &Client, cmd: ServiceCmd) -> Result<i32> {
    match cmd {
        ServiceCmd::Create(a) => create(c, *a).await,
        ServiceCmd::Update(a) => update(c, *a).await,
        ServiceCmd::Scale(a) => scale(c, a).await,
        ServiceCmd::Rollback(a) => rollback(c, a).await,
        ServiceCmd::Rm(a) => Ok(i32::from(
            delete_each(c, "/services", &a.services, "").await,
        )),
        ServiceCmd::Ls(a) => ls(c, a).await,
        ServiceCmd::Ps(a) => ps(c, a).await,
        ServiceCmd::Inspect(a) => inspect(c, a).await,
        ServiceCmd::Logs(a) => logs(c, a).await,
        ServiceCmd::Pause(a) => pause(c, a, true).await,
        ServiceCmd::Unpause(a) => pause(c, a, false).await,
    }
}

/// A flag error exits 125 with docker's hint; other refusals exit 1.
fn opts_exit(e: OptsError, verb: &str) -> anyhow::Error {
    if e.is_flag_error() {
        Exit {
            code: 125,
            message: format!("{e}\nSee 'shoal service {verb} --help'."),
        }
        .into()
    } else {
        Exit {
            code: 1,
            message: e.to_string(),
        }
        .into()
    }
}

fn env_lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

// ---------------------------------------------------------------------------------------
// create, update, scale, rollback

/// The `X-Registry-Auth` header for `--with-registry-auth`, when credentials are stored.
fn registry_auth(image: &str) -> Vec<(&'static str, String)> {
    let registry = shoal_image::reference::parse(image)
        .map(|r| r.registry().to_owned())
        .unwrap_or_else(|_| "docker.io".to_owned());
    super::auth::header_for(&registry)
        .map(|h| vec![("x-registry-auth", h)])
        .unwrap_or_default()
}

/// POSTs a spec with optional extra headers; returns the JSON answer.
async fn post_spec(
    c: &Client,
    path: &str,
    spec: &ServiceSpec,
    mut headers: Vec<(&'static str, String)>,
) -> Result<Value> {
    headers.push(("content-type", "application/json".into()));
    let resp = c
        .request(Method::POST, path, client::json_body(spec)?, &headers)
        .await?;
    let body = resp.into_body().collect().await?.to_bytes();
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).context("the daemon sent invalid JSON")
}

fn print_warnings(answer: &Value) {
    for w in answer["Warnings"].as_array().into_iter().flatten() {
        if let Some(w) = w.as_str() {
            eprintln!("{w}");
        }
    }
}

/// `service create`: prints the new service's ID, then waits for it unless `-d`.
async fn create(c: &Client, a: ServiceCreateArgs) -> Result<i32> {
    let spec = service_opts::create_spec(&a, &env_lookup).map_err(|e| opts_exit(e, "create"))?;
    let mut path = "/services/create".to_owned();
    if a.spec.no_resolve_image {
        path.push_str("?resolve_image=never");
    }
    let headers = if a.spec.with_registry_auth {
        registry_auth(&spec.task_template.container_spec.image)
    } else {
        Vec::new()
    };
    let answer = post_spec(c, &path, &spec, headers).await?;
    print_warnings(&answer);
    let id = answer["ID"].as_str().unwrap_or_default().to_owned();
    println!("{id}");
    if !a.spec.detach {
        service_progress::wait(c, &id, a.spec.quiet, None, false).await?;
    }
    Ok(0)
}

/// What an update needs from the current service.
struct Current {
    id: String,
    version: u64,
    spec: ServiceSpec,
    /// The rollout status before the update (to tell a stale one from ours).
    update_status: Option<Value>,
}

async fn current(c: &Client, service: &str) -> Result<Current> {
    let svc: Value = c.get(&format!("/services/{}", q(service))).await?;
    let spec: ServiceSpec = serde_json::from_value(svc["Spec"].clone())
        .with_context(|| format!("the daemon sent an unreadable spec for service {service}"))?;
    Ok(Current {
        id: svc["ID"].as_str().unwrap_or(service).to_owned(),
        version: svc["Version"]["Index"].as_u64().unwrap_or(0),
        spec,
        update_status: Some(svc["UpdateStatus"].clone()).filter(Value::is_object),
    })
}

/// `service update`: GET the service, change its spec, POST it with its version.
async fn update(c: &Client, a: ServiceUpdateArgs) -> Result<i32> {
    service_opts::check_update(&a).map_err(|e| opts_exit(e, "update"))?;
    let mut cur = current(c, &a.service).await?;
    let mut query = format!("version={}", cur.version);
    if a.rollback {
        query.push_str("&rollback=previous");
    } else {
        service_opts::apply_update(&mut cur.spec, &a, &env_lookup)
            .map_err(|e| opts_exit(e, "update"))?;
    }
    if a.spec.no_resolve_image {
        query.push_str("&resolve_image=never");
    }
    let headers = if a.spec.with_registry_auth {
        registry_auth(&cur.spec.task_template.container_spec.image)
    } else {
        Vec::new()
    };
    let path = format!("/services/{}/update?{query}", q(&cur.id));
    let answer = post_spec(c, &path, &cur.spec, headers).await?;
    print_warnings(&answer);
    println!("{}", a.service);
    if !a.spec.detach {
        service_progress::wait(c, &cur.id, a.spec.quiet, cur.update_status, a.rollback).await?;
    }
    Ok(0)
}

/// `service rollback`: the current spec back with `rollback=previous`.
async fn rollback(c: &Client, a: ServiceRollbackArgs) -> Result<i32> {
    let cur = current(c, &a.service).await?;
    let path = format!(
        "/services/{}/update?version={}&rollback=previous",
        q(&cur.id),
        cur.version
    );
    let answer = post_spec(c, &path, &cur.spec, Vec::new()).await?;
    print_warnings(&answer);
    println!("{}", a.service);
    if !a.detach {
        service_progress::wait(c, &cur.id, a.quiet, cur.update_status, true).await?;
    }
    Ok(0)
}

const SCALE_USAGE: &str = "Usage:  shoal service scale SERVICE=REPLICAS [SERVICE=REPLICAS...]\n\nScale one or multiple replicated services";

/// Checks `SERVICE=REPLICAS` arguments before anything is sent (docker's `scaleArgs`).
fn check_scale_args(args: &[String]) -> Result<(), Exit> {
    for arg in args {
        let ok = arg
            .split_once('=')
            .is_some_and(|(k, v)| !k.is_empty() && !v.is_empty());
        if !ok {
            return Err(Exit {
                code: 1,
                message: format!(
                    "Invalid scale specifier '{arg}'.\nSee 'shoal service scale --help'.\n\n{SCALE_USAGE}"
                ),
            });
        }
    }
    Ok(())
}

/// Sets the replica count (or a job's completions) in a spec, as `scale` does.
fn scale_spec(spec: &mut ServiceSpec, n: u64) -> Result<(), &'static str> {
    if let Some(j) = spec.mode.replicated_job.as_mut() {
        j.total_completions = n;
    } else if matches!(spec.mode.get(), Mode::Replicated { .. }) {
        spec.mode.replicated = Some(shoal_store::model::ReplicatedMode { replicas: n });
    } else {
        return Err("scale can only be used with replicated or replicated-job mode");
    }
    Ok(())
}

/// Scales one service; returns its ID and its rollout status before the change.
async fn scale_one(c: &Client, name: &str, n: u64) -> Result<(String, Option<Value>)> {
    let mut cur = current(c, name).await?;
    scale_spec(&mut cur.spec, n).map_err(|m| Exit {
        code: 1,
        message: m.to_owned(),
    })?;
    let path = format!("/services/{}/update?version={}", q(&cur.id), cur.version);
    let answer = post_spec(c, &path, &cur.spec, Vec::new()).await?;
    print_warnings(&answer);
    println!("{name} scaled to {n}");
    Ok((cur.id, cur.update_status))
}

/// `service scale`: every service first, then (unless `-d`) waits for each.
async fn scale(c: &Client, a: ServiceScaleArgs) -> Result<i32> {
    check_scale_args(&a.scales)?;
    let mut errors = Vec::new();
    let mut scaled = Vec::new();
    for arg in &a.scales {
        let (name, n) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
        let n = match parse_go_uint(n) {
            Ok(n) => n,
            Err(e) => {
                errors.push(format!("{name}: invalid replicas value {n}: {e}"));
                continue;
            }
        };
        match scale_one(c, name, n).await {
            Ok((id, status)) => scaled.push((name.to_owned(), id, status)),
            Err(e) => errors.push(format!("{name}: {}", describe(&e))),
        }
    }
    if !a.detach {
        for (name, id, status) in scaled {
            if let Err(e) = service_progress::wait(c, &id, false, status, false).await {
                errors.push(format!("{name}: {}", describe(&e)));
            }
        }
    }
    if errors.is_empty() {
        Ok(0)
    } else {
        Err(Exit {
            code: 1,
            message: errors.join("\n"),
        }
        .into())
    }
}

/// `service pause` / `unpause` (a shoal extension): prints each service as it is done.
async fn pause(c: &Client, a: ServicesArgs, on: bool) -> Result<i32> {
    let verb = if on { "pause" } else { "unpause" };
    let mut failed = false;
    for s in &a.services {
        match c.post_empty(&format!("/services/{}/{verb}", q(s))).await {
            Ok(()) => println!("{s}"),
            Err(e) => report(&mut failed, e),
        }
    }
    Ok(i32::from(failed))
}

// ---------------------------------------------------------------------------------------
// Filters and names

/// `-f key=value` flags as the API's `filters` JSON (`{"key": ["value", …]}`), read as
/// docker's `FilterOpt` reads them.
fn parse_filters(list: &[String]) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in list {
        let Some((k, v)) = f.split_once('=') else {
            return Err(Exit {
                code: 125,
                message: format!(
                    "invalid argument \"{f}\" for \"-f, --filter\" flag: bad format of filter (expected name=value)"
                ),
            }
            .into());
        };
        out.entry(k.trim().to_lowercase())
            .or_default()
            .push(v.trim().to_owned());
    }
    Ok(out)
}

fn filters_query(filters: &BTreeMap<String, Vec<String>>) -> String {
    q(&serde_json::to_string(filters).unwrap_or_default())
}

/// fvbommel/sortorder's `NaturalLess` (docker sorts services and tasks with it): digit
/// runs compare as numbers and sort before other characters.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        let (d1, d2) = (x[i].is_ascii_digit(), y[j].is_ascii_digit());
        if d1 != d2 {
            return if d1 {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if !d1 {
            if x[i] != y[j] {
                return x[i].cmp(&y[j]);
            }
            i += 1;
            j += 1;
            continue;
        }
        while i < x.len() && x[i] == b'0' {
            i += 1;
        }
        while j < y.len() && y[j] == b'0' {
            j += 1;
        }
        let (nz1, nz2) = (i, j);
        while i < x.len() && x[i].is_ascii_digit() {
            i += 1;
        }
        while j < y.len() && y[j].is_ascii_digit() {
            j += 1;
        }
        let (l1, l2) = (i - nz1, j - nz2);
        if l1 != l2 {
            return l1.cmp(&l2);
        }
        let (n1, n2) = (&x[nz1..i], &y[nz2..j]);
        if n1 != n2 {
            return n1.cmp(n2);
        }
        if nz1 != nz2 {
            return nz1.cmp(&nz2);
        }
    }
    (x.len()).cmp(&y.len())
}

/// Which services `ps` arguments name: full ID, then full name, then a unique ID prefix
/// (docker's order). Returns the IDs and the `no such service` messages.
fn resolve_services(args: &[String], services: &[Value]) -> Result<(Vec<String>, Vec<String>)> {
    let mut ids = Vec::new();
    let mut not_found = Vec::new();
    let id_of = |s: &Value| s["ID"].as_str().unwrap_or_default().to_owned();
    for arg in args {
        if let Some(s) = services.iter().find(|s| s["ID"].as_str() == Some(arg)) {
            ids.push(id_of(s));
            continue;
        }
        if let Some(s) = services
            .iter()
            .find(|s| s["Spec"]["Name"].as_str() == Some(arg))
        {
            ids.push(id_of(s));
            continue;
        }
        let matches: Vec<&Value> = services
            .iter()
            .filter(|s| {
                s["ID"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(arg.as_str()))
            })
            .collect();
        match matches.as_slice() {
            [] => not_found.push(format!("no such service: {arg}")),
            [s] => ids.push(id_of(s)),
            _ => {
                return Err(Exit {
                    code: 1,
                    message: format!("multiple services found with provided prefix: {arg}"),
                }
                .into());
            }
        }
    }
    if ids.is_empty() {
        return Err(Exit {
            code: 1,
            message: not_found.join("\n"),
        }
        .into());
    }
    Ok((ids, not_found))
}

/// IDs to names for the task tables (docker's `idresolver`).
#[derive(Debug, Default)]
pub struct Names {
    /// Service ID → name.
    pub services: HashMap<String, String>,
    /// Node ID → hostname.
    pub nodes: HashMap<String, String>,
}

impl Names {
    fn from_lists(services: &[Value], nodes: &[Value]) -> Names {
        let pairs = |list: &[Value], name: &dyn Fn(&Value) -> Option<String>| {
            list.iter()
                .filter_map(|v| Some((v["ID"].as_str()?.to_owned(), name(v)?)))
                .collect()
        };
        Names {
            services: pairs(services, &|s| s["Spec"]["Name"].as_str().map(str::to_owned)),
            nodes: pairs(nodes, &|n| {
                n["Description"]["Hostname"].as_str().map(str::to_owned)
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Formatting (pure)

/// An image as docker's tables show it: a tagged reference loses its `@sha256:` pin and
/// the `docker.io/library/` prefix; anything else is shown as it is.
pub fn display_image(image: &str) -> String {
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    let last = name.rsplit('/').next().unwrap_or(name);
    if !last.contains(':') {
        return image.to_owned();
    }
    let familiar = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("index.docker.io/library/"))
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    familiar.to_owned()
}

/// `service ls` REPLICAS: `2/3`, `2/3 (max 1 per node)`, jobs `0/1 (1/1 completed)`.
pub fn replicas_text(svc: &Value) -> String {
    let spec: ServiceSpec = serde_json::from_value(svc["Spec"].clone()).unwrap_or_default();
    let st = &svc["ServiceStatus"];
    let running = st["RunningTasks"].as_u64().unwrap_or(0);
    let desired = st["DesiredTasks"].as_u64().unwrap_or(0);
    let completed = st["CompletedTasks"].as_u64().unwrap_or(0);
    match spec.mode.get() {
        Mode::ReplicatedJob {
            total_completions, ..
        } => format!("{running}/{desired} ({completed}/{total_completions} completed)"),
        Mode::GlobalJob => format!(
            "{running}/{desired} ({completed}/{} completed)",
            desired + completed
        ),
        Mode::Replicated { .. } => match spec
            .task_template
            .placement
            .as_ref()
            .map_or(0, |p| p.max_replicas)
        {
            0 => format!("{running}/{desired}"),
            max => format!("{running}/{desired} (max {max} per node)"),
        },
        Mode::Global => format!("{running}/{desired}"),
    }
}

/// `service ls` PORTS: ingress ports, consecutive ones merged into ranges
/// (`*:8080-8081->80-81/tcp`), as docker's formatter does.
pub fn ports_text(svc: &Value) -> String {
    let Some(list) = svc["Endpoint"]["Ports"].as_array() else {
        return String::new();
    };
    let mut ports: Vec<(String, u32, u32, String)> = list
        .iter()
        .map(|p| {
            (
                p["Protocol"].as_str().unwrap_or("tcp").to_owned(),
                p["PublishedPort"].as_u64().unwrap_or(0) as u32,
                p["TargetPort"].as_u64().unwrap_or(0) as u32,
                p["PublishMode"].as_str().unwrap_or("ingress").to_owned(),
            )
        })
        .collect();
    ports.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    #[derive(Default)]
    struct Range {
        p_start: u32,
        p_end: u32,
        t_start: u32,
        t_end: u32,
        proto: String,
    }
    let show = |r: &Range| {
        let p = if r.p_end > r.p_start {
            format!("{}-{}", r.p_start, r.p_end)
        } else {
            r.p_start.to_string()
        };
        let t = if r.t_end > r.t_start {
            format!("{}-{}", r.t_start, r.t_end)
        } else {
            r.t_start.to_string()
        };
        format!("*:{p}->{t}/{}", r.proto)
    };
    let mut out = Vec::new();
    let mut r = Range::default();
    for (proto, published, target, mode) in ports {
        if mode != "ingress" {
            continue;
        }
        let is_range = r.t_end != r.t_start;
        let overlaps = target <= r.t_end;
        if proto != r.proto
            || published.wrapping_sub(r.p_end) > 1
            || target.wrapping_sub(r.t_end) > 1
            || is_range && overlaps
        {
            if r.p_start > 0 {
                out.push(show(&r));
            }
            r = Range {
                p_start: published,
                p_end: published,
                t_start: target,
                t_end: target,
                proto,
            };
            continue;
        }
        r.p_end = published;
        r.t_end = target;
    }
    if r.p_start > 0 {
        out.push(show(&r));
    }
    out.join(", ")
}

const SERVICE_HEADERS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Mode", "MODE"),
    ("Replicas", "REPLICAS"),
    ("Image", "IMAGE"),
    ("Ports", "PORTS"),
];

const SERVICE_TABLE: &str =
    "table {{.ID}}\t{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}\t{{.Ports}}";

/// One `service ls` row.
pub fn service_row(svc: &Value) -> Value {
    let spec: ServiceSpec = serde_json::from_value(svc["Spec"].clone()).unwrap_or_default();
    json!({
        "ID": format::short_id(svc["ID"].as_str().unwrap_or_default()),
        "Name": spec.name,
        "Mode": spec.mode.name(),
        "Replicas": replicas_text(svc),
        "Image": display_image(&spec.task_template.container_spec.image),
        "Ports": ports_text(svc),
    })
}

const TASK_HEADERS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Image", "IMAGE"),
    ("Node", "NODE"),
    ("DesiredState", "DESIRED STATE"),
    ("CurrentState", "CURRENT STATE"),
    ("Error", "ERROR"),
    ("Ports", "PORTS"),
];

const TASK_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}\t{{.Ports}}";

/// docker's `PrettyPrint`: the first letter upper case.
fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// CURRENT STATE: `Running 5 seconds ago`, with ` (healthy)` / ` (unhealthy)` /
/// ` (health: starting)` from the task's health and ` (paused)` when frozen.
pub fn current_state(task: &Value, now: DateTime<Utc>) -> String {
    let st = &task["Status"];
    let mut s = capitalize(st["State"].as_str().unwrap_or_default());
    if let Some(t) = parse_time(&st["Timestamp"]) {
        let ago = format::human_duration(now.signed_duration_since(t)).to_lowercase();
        s.push_str(&format!(" {ago} ago"));
    }
    // Health only describes a live container (an ended task's error says why it ended).
    let live = matches!(st["State"].as_str(), Some("running" | "starting"));
    match st["Health"].as_str().unwrap_or_default() {
        _ if !live => {}
        "" => {}
        "starting" => s.push_str(" (health: starting)"),
        h => s.push_str(&format!(" ({h})")),
    }
    if st["Paused"].as_bool() == Some(true) {
        s.push_str(" (paused)");
    }
    s
}

/// ERROR: quoted, cut to 30 columns unless `--no-trunc`.
pub fn error_text(err: &str, trunc: bool) -> String {
    if err.is_empty() {
        return String::new();
    }
    let e = if trunc {
        format::ellipsis(err, 30)
    } else {
        err.to_owned()
    };
    format!("\"{e}\"")
}

/// How task tables are shown.
#[derive(Debug, Clone, Copy)]
pub struct TaskTableOptions {
    /// Cut IDs, images and errors (not `--no-trunc`).
    pub trunc: bool,
    /// Show names instead of IDs (not `--no-resolve`).
    pub resolve: bool,
    /// Indent history rows with ` \_ ` (table formats only).
    pub indent: bool,
}

/// The task's name as docker shows it: `service.slot`, or `service.node-id` for global
/// tasks.
fn task_name(t: &Value, names: &Names, resolve: bool) -> String {
    let service_id = t["ServiceID"].as_str().unwrap_or_default();
    let service = if resolve {
        match names.services.get(service_id) {
            Some(n) => n.clone(),
            None => {
                if let Some(n) = t["Name"].as_str().filter(|n| !n.is_empty()) {
                    return n.to_owned();
                }
                service_id.to_owned()
            }
        }
    } else {
        service_id.to_owned()
    };
    match t["Slot"].as_u64().unwrap_or(0) {
        0 => format!("{service}.{}", t["NodeID"].as_str().unwrap_or_default()),
        slot => format!("{service}.{slot}"),
    }
}

/// The rows of a task table: sorted by name (naturally), newest first within a slot, the
/// older tasks of a slot indented as history.
pub fn task_rows(
    tasks: &[Value],
    names: &Names,
    o: TaskTableOptions,
    now: DateTime<Utc>,
) -> Vec<Value> {
    let mut named: Vec<(String, &Value)> = tasks
        .iter()
        .map(|t| (task_name(t, names, o.resolve), t))
        .collect();
    named.sort_by(|(n1, t1), (n2, t2)| {
        if n1 != n2 {
            return natural_cmp(n1, n2);
        }
        let (c1, c2) = (parse_time(&t1["CreatedAt"]), parse_time(&t2["CreatedAt"]));
        c2.cmp(&c1)
    });
    let mut rows = Vec::new();
    let mut prev = String::new();
    for (name, t) in named {
        let shown = if name == prev && o.indent {
            format!(" \\_ {name}")
        } else {
            name.clone()
        };
        prev = name;
        let id = t["ID"].as_str().unwrap_or_default();
        let image = t["Spec"]["ContainerSpec"]["Image"]
            .as_str()
            .unwrap_or_default();
        let node_id = t["NodeID"].as_str().unwrap_or_default();
        let node = if o.resolve {
            names
                .nodes
                .get(node_id)
                .cloned()
                .unwrap_or_else(|| node_id.to_owned())
        } else {
            node_id.to_owned()
        };
        let ports: Vec<String> = t["Status"]["PortStatus"]["Ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "*:{}->{}/{}",
                    p["PublishedPort"].as_u64().unwrap_or(0),
                    p["TargetPort"].as_u64().unwrap_or(0),
                    p["Protocol"].as_str().unwrap_or("tcp")
                )
            })
            .collect();
        rows.push(json!({
            "ID": if o.trunc { format::short_id(id) } else { id.to_owned() },
            "Name": shown,
            "Image": if o.trunc { display_image(image) } else { image.to_owned() },
            "Node": node,
            "DesiredState": capitalize(t["DesiredState"].as_str().unwrap_or_default()),
            "CurrentState": current_state(t, now),
            "Error": error_text(t["Status"]["Err"].as_str().unwrap_or_default(), o.trunc),
            "Ports": ports.join(","),
        }));
    }
    rows
}

/// Whether a `--format` value is a table (history rows are indented only in tables).
fn is_table_format(f: Option<&str>) -> bool {
    matches!(
        OutputFormat::parse(f),
        Ok(OutputFormat::Table | OutputFormat::TableTemplate(_))
    )
}

/// Prints a task table (or the IDs, with `-q`).
fn print_tasks(tasks: &[Value], names: &Names, f: &TaskListFlags) -> Result<()> {
    if f.quiet {
        // docker's quiet mode shows full IDs, in table order.
        let o = TaskTableOptions {
            trunc: false,
            resolve: !f.no_resolve,
            indent: false,
        };
        for r in task_rows(tasks, names, o, Utc::now()) {
            println!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    let o = TaskTableOptions {
        trunc: !f.no_trunc,
        resolve: !f.no_resolve,
        indent: is_table_format(f.format.as_deref()),
    };
    let rows = task_rows(tasks, names, o, Utc::now());
    super::container::print_rows(f.format.as_deref(), &rows, TASK_HEADERS, TASK_TABLE)?;
    Ok(())
}

async fn tasks_matching(c: &Client, filters: &BTreeMap<String, Vec<String>>) -> Result<Vec<Value>> {
    c.get(&format!("/tasks?filters={}", filters_query(filters)))
        .await
}

/// Resolves `node=self` filters to this node's ID, as docker's CLI does (the daemon
/// resolves names).
async fn resolve_self(c: &Client, filters: &mut BTreeMap<String, Vec<String>>) -> Result<()> {
    if let Some(nodes) = filters.get_mut("node") {
        for n in nodes.iter_mut().filter(|n| *n == "self") {
            let node: Value = c.get("/nodes/self").await?;
            *n = node["ID"].as_str().unwrap_or_default().to_owned();
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// ls, ps, node ps, inspect

/// `service ls`.
async fn ls(c: &Client, a: ServiceLsArgs) -> Result<i32> {
    let filters = parse_filters(&a.filter)?;
    let mut path = "/services?status=true".to_owned();
    if !filters.is_empty() {
        path.push_str(&format!("&filters={}", filters_query(&filters)));
    }
    let mut services: Vec<Value> = c.get(&path).await?;
    services.sort_by(|x, y| {
        natural_cmp(
            x["Spec"]["Name"].as_str().unwrap_or_default(),
            y["Spec"]["Name"].as_str().unwrap_or_default(),
        )
    });
    if a.quiet {
        for s in &services {
            println!("{}", format::short_id(s["ID"].as_str().unwrap_or_default()));
        }
        return Ok(0);
    }
    let rows: Vec<Value> = services.iter().map(service_row).collect();
    super::container::print_rows(a.format.as_deref(), &rows, SERVICE_HEADERS, SERVICE_TABLE)
}

/// `service ps`.
async fn ps(c: &Client, a: ServicePsArgs) -> Result<i32> {
    let mut filters = parse_filters(&a.list.filter)?;
    let services: Vec<Value> = c.get("/services").await?;
    let (ids, not_found) = resolve_services(&a.services, &services)?;
    filters.entry("service".into()).or_default().extend(ids);
    resolve_self(c, &mut filters).await?;
    let tasks = tasks_matching(c, &filters).await?;
    let nodes: Vec<Value> = if a.list.no_resolve {
        Vec::new()
    } else {
        c.get("/nodes").await?
    };
    print_tasks(&tasks, &Names::from_lists(&services, &nodes), &a.list)?;
    if !not_found.is_empty() {
        return Err(Exit {
            code: 1,
            message: not_found.join("\n"),
        }
        .into());
    }
    Ok(0)
}

/// `node ps [NODE...]`: the tasks of each node (this one by default).
pub async fn node_ps(c: &Client, a: NodePsArgs) -> Result<i32> {
    let filters = parse_filters(&a.list.filter)?;
    let refs = if a.nodes.is_empty() {
        vec!["self".to_owned()]
    } else {
        a.nodes.clone()
    };
    let mut errors = Vec::new();
    let mut tasks = Vec::new();
    for r in &refs {
        let node: Value = match c.get(&format!("/nodes/{}", q(r))).await {
            Ok(n) => n,
            Err(e) => {
                errors.push(describe(&e));
                continue;
            }
        };
        let mut f = filters.clone();
        f.insert(
            "node".into(),
            vec![node["ID"].as_str().unwrap_or_default().to_owned()],
        );
        match tasks_matching(c, &f).await {
            Ok(t) => tasks.extend(t),
            Err(e) => errors.push(describe(&e)),
        }
    }
    if errors.is_empty() || !tasks.is_empty() {
        let (services, nodes): (Vec<Value>, Vec<Value>) = if a.list.no_resolve {
            (Vec::new(), Vec::new())
        } else {
            (c.get("/services").await?, c.get("/nodes").await?)
        };
        print_tasks(&tasks, &Names::from_lists(&services, &nodes), &a.list)?;
    }
    if !errors.is_empty() {
        return Err(Exit {
            code: 1,
            message: errors.join("\n"),
        }
        .into());
    }
    Ok(0)
}

/// `service inspect --pretty`, after docker's template.
pub fn pretty(svc: &Value, now: DateTime<Utc>) -> String {
    use service_opts::go_duration_string as dur;
    let spec: ServiceSpec = serde_json::from_value(svc["Spec"].clone()).unwrap_or_default();
    let mut o = String::new();
    let mut line = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(format!("ID:\t\t{}", svc["ID"].as_str().unwrap_or_default()));
    line(format!("Name:\t\t{}", spec.name));
    if !spec.labels.is_empty() {
        line("Labels:".into());
        for (k, v) in &spec.labels {
            if v.is_empty() {
                line(format!(" {k}"));
            } else {
                line(format!(" {k}={v}"));
            }
        }
    }
    match spec.mode.get() {
        Mode::Global => line("Service Mode:\tGlobal".into()),
        Mode::Replicated { replicas } => {
            line("Service Mode:\tReplicated".into());
            line(format!(" Replicas:\t{replicas}"));
        }
        Mode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } => {
            line("Service Mode:\tReplicated job".into());
            line(format!(" Max Concurrent:\t{max_concurrent}"));
            line(format!(" Total Completions:\t{total_completions}"));
        }
        Mode::GlobalJob => line("Service Mode:\tGlobal job".into()),
    }
    if svc.get("Paused").and_then(Value::as_bool) == Some(true) {
        line("Paused:\t\ttrue".into());
    }
    let us = &svc["UpdateStatus"];
    if us.is_object() {
        line("UpdateStatus:".into());
        line(format!(
            " State:\t\t{}",
            us["State"].as_str().unwrap_or_default()
        ));
        if let Some(t) = parse_time(&us["StartedAt"]) {
            line(format!(" Started:\t{}", format::ago(t, now)));
        }
        let state = us["State"].as_str().unwrap_or_default();
        if (state == "completed" || state == "rollback_completed")
            && let Some(t) = parse_time(&us["CompletedAt"])
        {
            line(format!(" Completed:\t{}", format::ago(t, now)));
        }
        line(format!(
            " Message:\t{}",
            us["Message"].as_str().unwrap_or_default()
        ));
    }
    line("Placement:".into());
    if let Some(p) = &spec.task_template.placement {
        if !p.constraints.is_empty() {
            line(format!(" Constraints:\t[{}]", p.constraints.join(" ")));
        }
        if !p.preferences.is_empty() {
            let prefs: Vec<String> = p
                .preferences
                .iter()
                .map(|x| format!("spread={}", x.spread.spread_descriptor))
                .collect();
            line(format!(" Preferences:   [{}]", prefs.join(" ")));
        }
        if p.max_replicas > 0 {
            line(format!(" Max Replicas Per Node:   {}", p.max_replicas));
        }
    }
    for (title, cfg, order) in [
        ("UpdateConfig", &spec.update_config, "Update order:   "),
        ("RollbackConfig", &spec.rollback_config, "Rollback order: "),
    ] {
        let Some(u) = cfg else { continue };
        line(format!("{title}:"));
        line(format!(" Parallelism:\t{}", u.parallelism));
        if u.delay > 0 {
            line(format!(" Delay:\t\t{}", dur(u.delay)));
        }
        line(format!(" On failure:\t{}", u.failure_action));
        if u.monitor > 0 {
            line(format!(" Monitoring Period: {}", dur(u.monitor)));
        }
        line(format!(" Max failure ratio: {}", u.max_failure_ratio));
        line(format!(" {order}   {}", u.order));
    }
    let c = &spec.task_template.container_spec;
    line("ContainerSpec:".into());
    line(format!(" Image:\t\t{}", c.image));
    if let Some(args) = c.args.as_ref().filter(|a| !a.is_empty()) {
        line(format!(" Args:\t\t{} ", args.join(" ")));
    }
    if let Some(cmd) = c.command.as_ref().filter(|a| !a.is_empty()) {
        line(format!(" Command:\t{} ", cmd.join(" ")));
    }
    if !c.env.is_empty() {
        line(format!(" Env:\t\t{} ", c.env.join(" ")));
    }
    if !c.dir.is_empty() {
        line(format!(" Dir:\t\t{}", c.dir));
    }
    if let Some(i) = c.init {
        line(format!(" Init:\t\t{i}"));
    }
    if !c.user.is_empty() {
        line(format!(" User: {}", c.user));
    }
    if !c.capability_add.is_empty() || !c.capability_drop.is_empty() {
        line("Capabilities:".into());
        if !c.capability_add.is_empty() {
            line(format!(" Add: {}", c.capability_add.join(", ")));
        }
        if !c.capability_drop.is_empty() {
            line(format!(" Drop: {}", c.capability_drop.join(", ")));
        }
    }
    if !c.mounts.is_empty() {
        line("Mounts:".into());
        for m in &c.mounts {
            line(format!(" Target:\t{}", m.target));
            line(format!("  Source:\t{}", m.source));
            line(format!("  ReadOnly:\t{}", m.read_only));
            line(format!("  Type:\t\t{}", m.kind));
        }
    }
    if let Some(r) = &spec.task_template.resources {
        line("Resources:".into());
        if let Some(res) = &r.reservations {
            line(" Reservations:".into());
            if res.nano_cpus > 0 {
                line(format!("  CPU:\t\t{}", res.nano_cpus as f64 / 1e9));
            }
            if res.memory_bytes > 0 {
                line(format!(
                    "  Memory:\t{}",
                    format::bytes_size(res.memory_bytes as f64)
                ));
            }
        }
        if let Some(l) = &r.limits {
            line(" Limits:".into());
            if l.nano_cpus > 0 {
                line(format!("  CPU:\t\t{}", l.nano_cpus as f64 / 1e9));
            }
            if l.memory_bytes > 0 {
                line(format!(
                    "  Memory:\t{}",
                    format::bytes_size(l.memory_bytes as f64)
                ));
            }
            if l.pids > 0 {
                line(format!("  PIDs:\t\t{}", l.pids));
            }
        }
    }
    let endpoint_mode = spec
        .endpoint_spec
        .as_ref()
        .map(|e| e.mode.clone())
        .filter(|m| !m.is_empty())
        .or_else(|| {
            svc["Endpoint"]["Spec"]["Mode"]
                .as_str()
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "vip".into());
    line(format!("Endpoint Mode:\t{endpoint_mode}"));
    if let Some(ports) = svc["Endpoint"]["Ports"]
        .as_array()
        .filter(|p| !p.is_empty())
    {
        line("Ports:".into());
        for p in ports {
            line(format!(
                " PublishedPort = {}",
                p["PublishedPort"].as_u64().unwrap_or(0)
            ));
            line(format!(
                "  Protocol = {}",
                p["Protocol"].as_str().unwrap_or("tcp")
            ));
            line(format!(
                "  TargetPort = {}",
                p["TargetPort"].as_u64().unwrap_or(0)
            ));
            line(format!(
                "  PublishMode = {}",
                p["PublishMode"].as_str().unwrap_or("ingress")
            ));
        }
    }
    if let Some(h) = &c.healthcheck {
        line(" Healthcheck:".into());
        line(format!("  Interval = {}", dur(h.interval)));
        line(format!("  Retries = {}", h.retries));
        line(format!("  StartPeriod =\t{}", dur(h.start_period)));
        line(format!("  Timeout =\t{}", dur(h.timeout)));
        if !h.test.is_empty() {
            line("  Tests:".into());
            for t in &h.test {
                line(format!("\t Test = {t}"));
            }
        }
    }
    o
}

/// `service inspect`.
async fn inspect(c: &Client, a: ServiceInspectArgs) -> Result<i32> {
    if a.pretty && a.format.is_some() {
        return Err(Exit {
            code: 1,
            message: "--format is incompatible with human friendly format".into(),
        }
        .into());
    }
    let mut values = Vec::new();
    let mut errors = Vec::new();
    for s in &a.services {
        match c.get::<Value>(&format!("/services/{}", q(s))).await {
            Ok(v) => values.push(v),
            Err(e) if is_status(&e, StatusCode::NOT_FOUND) => {
                errors.push(format!("Error: no such service: {s}"));
            }
            Err(e) => errors.push(describe(&e)),
        }
    }
    if a.pretty {
        let now = Utc::now();
        let texts: Vec<String> = values.iter().map(|v| pretty(v, now)).collect();
        print!("{}", texts.join("\n\n"));
    } else if let Some(f) = a.format.as_deref() {
        if f == "json" {
            print!("{}", format::inspect_json_compact(&values));
        } else {
            let t = Template::parse(&format::preprocess_format(f))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .missing_key_error();
            for v in &values {
                match t.render(v) {
                    Ok(text) => println!("{text}"),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
    } else {
        print!("{}", format::inspect_json(&values));
    }
    if errors.is_empty() {
        Ok(0)
    } else {
        Err(Exit {
            code: 1,
            message: errors.join("\n"),
        }
        .into())
    }
}

// ---------------------------------------------------------------------------------------
// logs

/// How log lines are prefixed.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    pub raw: bool,
    pub timestamps: bool,
    pub task_ids: bool,
    pub trunc: bool,
    pub resolve: bool,
    /// Digits of the highest slot: lower slots are padded to line the bars up.
    pub slot_width: usize,
}

/// One log line as docker prints it: `web.1.<taskid>@node    | text` (timestamp first
/// with `-t`; nothing but the text with `--raw`). Returns whether it goes to stderr.
pub fn log_line(entry: &Value, o: &LogOptions) -> (bool, String) {
    let s = |k: &str| entry[k].as_str().unwrap_or_default();
    let stderr = s("stream") == "stderr";
    let text = s("line");
    let ts = if o.timestamps {
        format!("{} ", s("time"))
    } else {
        String::new()
    };
    if o.raw {
        return (stderr, format!("{ts}{text}"));
    }
    let name = s("task_name");
    let mut prefix = name.to_owned();
    if o.task_ids {
        let id = s("task_id");
        prefix.push('.');
        prefix.push_str(&if o.trunc {
            format::short_id(id)
        } else {
            id.to_owned()
        });
    }
    let node = if o.resolve && !s("node_name").is_empty() {
        s("node_name")
    } else {
        s("node_id")
    };
    let slot_digits = name
        .rsplit('.')
        .next()
        .filter(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
        .map_or(1, |x| x.trim_start_matches('0').len().max(1));
    let pad = " ".repeat(o.slot_width.saturating_sub(slot_digits));
    (stderr, format!("{ts}{prefix}@{node}{pad}    | {text}"))
}

/// `service logs SERVICE|TASK`.
async fn logs(c: &Client, a: ServiceLogsArgs) -> Result<i32> {
    let (path, slot_width) = match c.get::<Value>(&format!("/services/{}", q(&a.target))).await {
        Ok(svc) => {
            let spec: ServiceSpec = serde_json::from_value(svc["Spec"].clone()).unwrap_or_default();
            let width = match spec.mode.get() {
                Mode::Replicated { replicas } => replicas.to_string().len(),
                _ => 1,
            };
            let id = svc["ID"].as_str().unwrap_or(&a.target).to_owned();
            (format!("/services/{}/logs", q(&id)), width)
        }
        Err(e) if is_status(&e, StatusCode::NOT_FOUND) => {
            let filters = json!({ "id": [a.target] }).to_string();
            let tasks: Vec<Value> = c.get(&format!("/tasks?filters={}", q(&filters))).await?;
            let exact = tasks.iter().find(|t| t["ID"].as_str() == Some(&a.target));
            let prefixed: Vec<&Value> = tasks
                .iter()
                .filter(|t| {
                    t["ID"]
                        .as_str()
                        .is_some_and(|id| id.starts_with(a.target.as_str()))
                })
                .collect();
            let task = match (exact, prefixed.as_slice()) {
                (Some(t), _) => t,
                (None, [t]) => *t,
                _ => {
                    return Err(Exit {
                        code: 1,
                        message: format!("no such task or service: {}", a.target),
                    }
                    .into());
                }
            };
            let id = task["ID"].as_str().unwrap_or_default();
            let width = task["Slot"].as_u64().unwrap_or(0).to_string().len();
            (format!("/tasks/{}/logs", q(id)), width)
        }
        Err(e) => return Err(e),
    };
    let mut query = format!("tail={}", q(&a.tail));
    if a.follow {
        query.push_str("&follow=1");
    }
    if a.timestamps {
        query.push_str("&timestamps=1");
    }
    if let Some(s) = &a.since {
        query.push_str(&format!("&since={}", q(s)));
    }
    let resp = c
        .request(
            Method::GET,
            &format!("{path}?{query}"),
            client::empty(),
            &[],
        )
        .await?;
    let o = LogOptions {
        raw: a.raw,
        timestamps: a.timestamps,
        task_ids: !a.no_task_ids,
        trunc: !a.no_trunc,
        resolve: !a.no_resolve,
        slot_width,
    };
    let mut entries = Box::pin(client::ndjson::<Value>(resp));
    while let Some(entry) = entries.next().await {
        let (to_stderr, text) = log_line(&entry?, &o);
        if to_stderr {
            let mut e = std::io::stderr().lock();
            writeln!(e, "{text}")?;
            e.flush()?;
        } else {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}")?;
            out.flush()?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn svc(mode: Value, status: (u64, u64, u64)) -> Value {
        json!({
            "ID": "0123456789abcdefghijklmn",
            "Spec": {"Name": "web", "Mode": mode,
                     "TaskTemplate": {"ContainerSpec": {"Image": "docker.io/library/busybox:latest@sha256:0123"}}},
            "ServiceStatus": {"RunningTasks": status.0, "DesiredTasks": status.1, "CompletedTasks": status.2},
        })
    }

    #[test]
    fn replicas_column() {
        assert_eq!(
            replicas_text(&svc(json!({"Replicated": {"Replicas": 3}}), (2, 3, 0))),
            "2/3"
        );
        let mut s = svc(json!({"Replicated": {"Replicas": 3}}), (2, 3, 0));
        s["Spec"]["TaskTemplate"]["Placement"] = json!({"MaxReplicas": 1});
        assert_eq!(replicas_text(&s), "2/3 (max 1 per node)");
        assert_eq!(
            replicas_text(&svc(
                json!({"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}),
                (0, 1, 1)
            )),
            "0/1 (1/1 completed)"
        );
        assert_eq!(
            replicas_text(&svc(json!({"GlobalJob": {}}), (1, 2, 1))),
            "1/2 (1/3 completed)"
        );
        assert_eq!(replicas_text(&svc(json!({"Global": {}}), (3, 3, 0))), "3/3");
        // No status at all reads as zeros.
        let mut s = svc(json!({"Replicated": {"Replicas": 1}}), (0, 0, 0));
        s.as_object_mut().unwrap().remove("ServiceStatus");
        assert_eq!(replicas_text(&s), "0/0");
    }

    #[test]
    fn ls_rows() {
        let r = service_row(&svc(
            json!({"ReplicatedJob": {"TotalCompletions": 2}}),
            (1, 1, 0),
        ));
        assert_eq!(
            r,
            json!({"ID": "0123456789ab", "Name": "web", "Mode": "replicated job",
                   "Replicas": "1/1 (0/2 completed)", "Image": "busybox:latest", "Ports": ""})
        );
        let rows = vec![service_row(&svc(
            json!({"Replicated": {"Replicas": 3}}),
            (3, 3, 0),
        ))];
        let out = OutputFormat::parse(None)
            .unwrap()
            .render(&rows, SERVICE_HEADERS, SERVICE_TABLE)
            .unwrap();
        assert_eq!(
            out,
            "ID             NAME      MODE         REPLICAS   IMAGE            PORTS\n\
             0123456789ab   web       replicated   3/3        busybox:latest   \n"
                .replace("busybox:latest   \n", "busybox:latest\n")
        );
    }

    #[test]
    fn images_lose_their_pin() {
        assert_eq!(display_image("busybox:latest@sha256:abc"), "busybox:latest");
        assert_eq!(
            display_image("docker.io/library/busybox:1.36@sha256:abc"),
            "busybox:1.36"
        );
        assert_eq!(
            display_image("localhost:5000/app:v2@sha256:abc"),
            "localhost:5000/app:v2"
        );
        assert_eq!(display_image("busybox@sha256:abc"), "busybox@sha256:abc");
        assert_eq!(display_image("localhost:5000/app"), "localhost:5000/app");
        assert_eq!(display_image("busybox"), "busybox");
    }

    #[test]
    fn port_ranges() {
        let s = json!({"Endpoint": {"Ports": [
            {"Protocol": "tcp", "PublishedPort": 8081, "TargetPort": 81, "PublishMode": "ingress"},
            {"Protocol": "tcp", "PublishedPort": 8080, "TargetPort": 80, "PublishMode": "ingress"},
            {"Protocol": "udp", "PublishedPort": 53, "TargetPort": 53, "PublishMode": "ingress"},
            {"Protocol": "tcp", "PublishedPort": 9000, "TargetPort": 9000, "PublishMode": "host"},
            {"Protocol": "tcp", "PublishedPort": 443, "TargetPort": 8443, "PublishMode": "ingress"}
        ]}});
        assert_eq!(
            ports_text(&s),
            "*:443->8443/tcp, *:8080-8081->80-81/tcp, *:53->53/udp"
        );
        assert_eq!(ports_text(&json!({})), "");
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["web.10", "web.2", "web.1", "api", "web.1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["api", "web.1", "web.1", "web.2", "web.10"]);
        assert_eq!(natural_cmp("a1", "a01"), Ordering::Less);
        assert_eq!(natural_cmp("a", "a1"), Ordering::Less);
        assert_eq!(natural_cmp("1", "a"), Ordering::Less);
    }

    fn task(id: &str, slot: u64, state: &str, desired: &str, created: &str, ts: &str) -> Value {
        json!({"ID": id, "ServiceID": "svc1", "Slot": slot, "NodeID": "node1",
               "CreatedAt": created, "DesiredState": desired,
               "Spec": {"ContainerSpec": {"Image": "busybox:latest@sha256:0123"}},
               "Status": {"State": state, "Timestamp": ts}})
    }

    fn names() -> Names {
        Names {
            services: [("svc1".to_owned(), "web".to_owned())].into(),
            nodes: [("node1".to_owned(), "edge-1".to_owned())].into(),
        }
    }

    #[test]
    fn ps_rows_with_history() {
        let mut failed = task(
            "aaaaaaaaaaaaaaaaaaaaaaaaa",
            1,
            "failed",
            "shutdown",
            "2024-05-01T11:58:00Z",
            "2024-05-01T11:59:00Z",
        );
        failed["Status"]["Err"] = json!("task: non-zero exit (1)");
        let mut running = task(
            "bbbbbbbbbbbbbbbbbbbbbbbbb",
            1,
            "running",
            "running",
            "2024-05-01T11:59:00Z",
            "2024-05-01T11:59:55Z",
        );
        running["Status"]["Health"] = json!("healthy");
        let mut second = task(
            "ccccccccccccccccccccccccc",
            2,
            "running",
            "running",
            "2024-05-01T11:50:00Z",
            "2024-05-01T10:00:00Z",
        );
        second["Status"]["Paused"] = json!(true);
        let mut long_err = task(
            "ddddddddddddddddddddddddd",
            10,
            "pending",
            "running",
            "2024-05-01T11:50:00Z",
            "2024-05-01T11:59:59.5Z",
        );
        long_err["Status"]["Err"] =
            json!("no suitable node (scheduling constraints not satisfied on 3 nodes)");
        long_err["NodeID"] = json!("");
        let tasks = vec![long_err, failed, second, running];
        let o = TaskTableOptions {
            trunc: true,
            resolve: true,
            indent: true,
        };
        let rows = task_rows(&tasks, &names(), o, now());
        let col = |k: &str| {
            rows.iter()
                .map(|r| r[k].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(col("Name"), ["web.1", " \\_ web.1", "web.2", "web.10"]);
        assert_eq!(
            col("ID"),
            [
                "bbbbbbbbbbbb",
                "aaaaaaaaaaaa",
                "cccccccccccc",
                "dddddddddddd"
            ]
        );
        assert_eq!(col("Image")[0], "busybox:latest");
        assert_eq!(col("Node"), ["edge-1", "edge-1", "edge-1", ""]);
        assert_eq!(
            col("DesiredState"),
            ["Running", "Shutdown", "Running", "Running"]
        );
        assert_eq!(
            col("CurrentState"),
            [
                "Running 5 seconds ago (healthy)",
                "Failed about a minute ago",
                "Running 2 hours ago (paused)",
                "Pending less than a second ago",
            ]
        );
        assert_eq!(
            col("Error"),
            [
                "",
                "\"task: non-zero exit (1)\"",
                "",
                "\"no suitable node (scheduling …\""
            ]
        );

        // No truncation, no resolution, no indentation outside tables.
        let o = TaskTableOptions {
            trunc: false,
            resolve: false,
            indent: false,
        };
        let rows = task_rows(&tasks, &names(), o, now());
        assert_eq!(rows[1]["Name"], "svc1.1");
        assert_eq!(rows[1]["ID"], "aaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(rows[1]["Image"], "busybox:latest@sha256:0123");
        assert_eq!(rows[1]["Node"], "node1");
        assert_eq!(
            rows[3]["Error"],
            "\"no suitable node (scheduling constraints not satisfied on 3 nodes)\""
        );
    }

    #[test]
    fn ps_table_layout() {
        let t = task(
            "bbbbbbbbbbbbbbbbbbbbbbbbb",
            1,
            "running",
            "running",
            "2024-05-01T11:59:00Z",
            "2024-05-01T11:59:55Z",
        );
        let o = TaskTableOptions {
            trunc: true,
            resolve: true,
            indent: true,
        };
        let rows = task_rows(&[t], &names(), o, now());
        let out = OutputFormat::parse(None)
            .unwrap()
            .render(&rows, TASK_HEADERS, TASK_TABLE)
            .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "ID             NAME      IMAGE            NODE      DESIRED STATE   CURRENT STATE           ERROR     PORTS"
        );
        assert_eq!(
            lines[1],
            "bbbbbbbbbbbb   web.1     busybox:latest   edge-1    Running         Running 5 seconds ago"
        );
        let json = OutputFormat::parse(Some("json"))
            .unwrap()
            .render(&rows, TASK_HEADERS, TASK_TABLE)
            .unwrap();
        let v: Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(v["Name"], "web.1");
        assert_eq!(v["CurrentState"], "Running 5 seconds ago");
        assert!(!is_table_format(Some("json")));
        assert!(is_table_format(Some("table {{.ID}}")));
        assert!(is_table_format(None));
    }

    #[test]
    fn global_task_names_use_the_node() {
        let mut t = task(
            "x",
            0,
            "running",
            "running",
            "2024-05-01T11:59:00Z",
            "2024-05-01T11:59:00Z",
        );
        t["NodeID"] = json!("node1");
        let o = TaskTableOptions {
            trunc: true,
            resolve: true,
            indent: true,
        };
        assert_eq!(task_rows(&[t], &names(), o, now())[0]["Name"], "web.node1");
    }

    #[test]
    fn services_resolve_like_docker() {
        let services = vec![
            json!({"ID": "abc123", "Spec": {"Name": "web"}}),
            json!({"ID": "abd456", "Spec": {"Name": "abc123x"}}),
            json!({"ID": "zzz999", "Spec": {"Name": "db"}}),
        ];
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (ids, nf) =
            resolve_services(&args(&["web", "abc123", "zz", "nope"]), &services).unwrap();
        assert_eq!(ids, ["abc123", "abc123", "zzz999"]);
        assert_eq!(nf, ["no such service: nope"]);
        let e = resolve_services(&args(&["ab"]), &services).unwrap_err();
        assert_eq!(
            describe(&e),
            "multiple services found with provided prefix: ab"
        );
        let e = resolve_services(&args(&["x", "y"]), &services).unwrap_err();
        assert_eq!(describe(&e), "no such service: x\nno such service: y");
    }

    #[test]
    fn filter_flags() {
        let f = parse_filters(&[
            "name=web".into(),
            "Name = api ".into(),
            "mode=global".into(),
        ])
        .unwrap();
        assert_eq!(f["name"], ["web", "api"]);
        assert_eq!(f["mode"], ["global"]);
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"mode":["global"],"name":["web","api"]}"#
        );
        let e = parse_filters(&["name".into()]).unwrap_err();
        assert!(describe(&e).contains("bad format of filter (expected name=value)"));
    }

    #[test]
    fn scale_rules() {
        assert!(check_scale_args(&["web=3".into(), "db=0".into()]).is_ok());
        let e = check_scale_args(&["web".into()]).unwrap_err();
        assert!(
            e.message
                .starts_with("Invalid scale specifier 'web'.\nSee 'shoal service scale --help'.")
        );
        assert!(check_scale_args(&["=3".into()]).is_err());
        assert!(check_scale_args(&["web=".into()]).is_err());
        let mut s: ServiceSpec =
            serde_json::from_value(json!({"Mode": {"Replicated": {"Replicas": 1}}})).unwrap();
        scale_spec(&mut s, 4).unwrap();
        assert_eq!(s.mode.get(), Mode::Replicated { replicas: 4 });
        let mut j: ServiceSpec = serde_json::from_value(
            json!({"Mode": {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 2}}}),
        )
        .unwrap();
        scale_spec(&mut j, 6).unwrap();
        assert_eq!(
            j.mode.get(),
            Mode::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 6
            }
        );
        let mut g: ServiceSpec = serde_json::from_value(json!({"Mode": {"Global": {}}})).unwrap();
        assert_eq!(
            scale_spec(&mut g, 2),
            Err("scale can only be used with replicated or replicated-job mode")
        );
    }

    #[test]
    fn log_prefixes() {
        let e = json!({"task_id": "0123456789abcdefghij", "task_name": "web.1", "node_id": "n1",
                       "node_name": "edge-1", "stream": "stdout", "time": "2024-05-01T12:00:00.123456789Z",
                       "line": "hello"});
        let mut o = LogOptions {
            raw: false,
            timestamps: false,
            task_ids: true,
            trunc: true,
            resolve: true,
            slot_width: 2,
        };
        assert_eq!(
            log_line(&e, &o),
            (false, "web.1.0123456789ab@edge-1     | hello".into())
        );
        o.task_ids = false;
        o.slot_width = 1;
        assert_eq!(log_line(&e, &o).1, "web.1@edge-1    | hello");
        o.task_ids = true;
        o.trunc = false;
        o.timestamps = true;
        o.resolve = false;
        assert_eq!(
            log_line(&e, &o).1,
            "2024-05-01T12:00:00.123456789Z web.1.0123456789abcdefghij@n1    | hello"
        );
        o.raw = true;
        assert_eq!(log_line(&e, &o).1, "2024-05-01T12:00:00.123456789Z hello");
        o.timestamps = false;
        let mut err = e.clone();
        err["stream"] = json!("stderr");
        assert_eq!(log_line(&err, &o), (true, "hello".into()));
    }

    #[test]
    fn pretty_output() {
        let s = json!({
            "ID": "svc1",
            "Spec": {"Name": "web", "Labels": {"tier": "front"}, "Mode": {"Replicated": {"Replicas": 2}},
                "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest@sha256:0123", "Args": ["sleep", "60"],
                    "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 1_000_000_000i64}},
                    "Placement": {"Constraints": ["node.role==worker"]},
                    "Resources": {"Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 67_108_864}}},
                "UpdateConfig": {"Parallelism": 1, "Delay": 10_000_000_000i64, "FailureAction": "pause",
                    "Monitor": 5_000_000_000i64, "MaxFailureRatio": 0.0, "Order": "stop-first"}},
            "UpdateStatus": {"State": "updating", "StartedAt": "2024-05-01T11:59:50Z", "Message": "update in progress"}
        });
        let p = pretty(&s, now());
        let expected = [
            "ID:\t\tsvc1",
            "Name:\t\tweb",
            "Labels:",
            " tier=front",
            "Service Mode:\tReplicated",
            " Replicas:\t2",
            "UpdateStatus:",
            " State:\t\tupdating",
            " Started:\t10 seconds ago",
            " Message:\tupdate in progress",
            "Placement:",
            " Constraints:\t[node.role==worker]",
            "UpdateConfig:",
            " Parallelism:\t1",
            " Delay:\t\t10s",
            " On failure:\tpause",
            " Monitoring Period: 5s",
            " Max failure ratio: 0",
            " Update order:      stop-first",
            "ContainerSpec:",
            " Image:\t\tbusybox:latest@sha256:0123",
            " Args:\t\tsleep 60 ",
            "Resources:",
            " Limits:",
            "  CPU:\t\t0.5",
            "  Memory:\t64MiB",
            "Endpoint Mode:\tvip",
            " Healthcheck:",
            "  Interval = 1s",
            "  Retries = 0",
            "  StartPeriod =\t0s",
            "  Timeout =\t0s",
            "  Tests:",
            "\t Test = CMD-SHELL",
            "\t Test = true",
            "",
        ]
        .join("\n");
        assert_eq!(p, expected);
    }
}
