//! The local API: HTTP + JSON on a unix socket, shaped after Docker's Engine API paths.
//!
//! Handlers parse HTTP into plain calls on the [`Engine`]; HTTP types stop here. Streams
//! (logs, attach, exec) use Docker's multiplexed framing (8-byte header: stream 1 stdout,
//! 2 stderr; shoal adds stream 3 carrying the exit status as JSON at the end). Progress
//! (pull, import) is newline-delimited JSON, errors included as `{"error": …}` lines.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_cluster::{Engine, EngineError};
use shoal_image::{Credentials, ImageError, ProgressEvent, ProgressSink};
use shoal_runtime::logs::{LogRecord, ReadOptions, Stream as LogStream};
use shoal_runtime::model::{Config, HostConfig};
use shoal_runtime::volumes::VolumeError;
use shoal_runtime::{ContainerView, ExecRequest, RuntimeError};
use tokio::io::AsyncReadExt;

use crate::format;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    engine: Engine,
    swarm: shoal_cluster::Swarm,
}

impl AppState {
    /// Wraps the engine and the swarm membership.
    pub fn new(engine: Engine, swarm: shoal_cluster::Swarm) -> AppState {
        AppState { engine, swarm }
    }

    /// This node's swarm membership.
    pub fn swarm(&self) -> &shoal_cluster::Swarm {
        &self.swarm
    }
}

/// The router of the local API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/_ping", get(|| async { "OK" }))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/containers/json", get(containers_list))
        .route("/containers/create", post(container_create))
        .route("/containers/prune", post(containers_prune))
        .route("/containers/{id}/json", get(container_inspect))
        .route("/containers/{id}/start", post(container_start))
        .route("/containers/{id}/stop", post(container_stop))
        .route("/containers/{id}/kill", post(container_kill))
        .route("/containers/{id}/wait", post(container_wait))
        .route("/containers/{id}/pause", post(container_pause))
        .route("/containers/{id}/unpause", post(container_unpause))
        .route("/containers/{id}/logs", get(container_logs))
        .route("/containers/{id}/exec", post(container_exec))
        .route("/containers/{id}/stats", get(container_stats))
        .route("/containers/{id}", delete(container_remove))
        .route("/images/json", get(images_list))
        .route("/images/create", post(image_pull))
        .route("/images/load", post(image_load))
        .route("/images/get", get(image_export))
        .route("/images/prune", post(images_prune))
        .route(
            "/images/{*rest}",
            get(image_get_rest)
                .post(image_post_rest)
                .delete(image_remove),
        )
        .route("/auth", post(auth))
        .route("/volumes", get(volumes_list))
        .route("/volumes/create", post(volume_create))
        .route("/volumes/prune", post(volumes_prune))
        .route("/volumes/{name}", get(volume_inspect).delete(volume_remove))
        .merge(crate::api_swarm::routes())
        .merge(crate::api_service::routes())
        .with_state(state)
}

// ----- errors ----------------------------------------------------------------------------

/// An API error: a status and Docker's `{"message": …}` body.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    /// An error with a status and Docker's message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError(status, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "message": self.1 }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        use RuntimeError as R;
        let status = match &e {
            R::NotFound(_) => StatusCode::NOT_FOUND,
            R::Ambiguous(_)
            | R::InvalidName(_)
            | R::InvalidConfig(_)
            | R::Mount(_)
            | R::User(_)
            | R::Capability(_)
            | R::Signal(_) => StatusCode::BAD_REQUEST,
            R::NameConflict { .. }
            | R::NotRunning(_)
            | R::Paused(_)
            | R::Running(_)
            | R::Removing(_) => StatusCode::CONFLICT,
            R::StartFailed { exit_code, .. } if *exit_code == 126 || *exit_code == 127 => {
                StatusCode::BAD_REQUEST
            }
            R::Volume(v) => return volume_error(v),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

fn volume_error(e: &VolumeError) -> ApiError {
    let status = match e {
        VolumeError::NotFound(_) => StatusCode::NOT_FOUND,
        VolumeError::InvalidName(_) => StatusCode::BAD_REQUEST,
        VolumeError::InUse { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError(status, e.to_string())
}

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> Self {
        volume_error(&e)
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        use ImageError as I;
        let status = match &e {
            I::NotFound(_) | I::ManifestUnknown { .. } | I::PullAccessDenied { .. } => {
                StatusCode::NOT_FOUND
            }
            I::AmbiguousId { .. }
            | I::InvalidReference { .. }
            | I::InvalidArchive { .. }
            | I::Unpack { .. }
            | I::MultipleReferences { .. }
            | I::Platform { .. }
            | I::UnsupportedMediaType { .. } => StatusCode::BAD_REQUEST,
            I::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            I::InUse { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NoSuchImage(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
            EngineError::ImageInUse { .. } => ApiError(StatusCode::CONFLICT, e.to_string()),
            EngineError::Image(i) => i.into(),
            EngineError::Runtime(r) => r.into(),
            EngineError::ImageConfig { .. } => {
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

// ----- system ----------------------------------------------------------------------------

async fn version() -> Json<Value> {
    Json(version_json())
}

/// The daemon's version object (Docker's shape).
pub fn version_json() -> Value {
    let u = rustix::system::uname();
    json!({
        "Platform": { "Name": "shoal" },
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": "1.0",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": u.release().to_string_lossy(),
        "Components": [
            { "Name": "Engine", "Version": env!("CARGO_PKG_VERSION") },
            { "Name": "libcontainer", "Version": "0.7.0" },
        ],
    })
}

/// Docker's (Go's) name of this architecture.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

async fn info(State(s): State<AppState>) -> Json<Value> {
    let mut v = serde_json::to_value(s.engine.info()).unwrap_or_else(|_| json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("ServerVersion".into(), json!(env!("CARGO_PKG_VERSION")));
        o.insert("Swarm".into(), swarm_info(&s.swarm));
    }
    Json(v)
}

/// Docker's `Swarm` object of `info`.
fn swarm_info(swarm: &shoal_cluster::Swarm) -> Value {
    let i = swarm.info();
    let mut v = json!({
        "LocalNodeState": i.local_node_state,
        "NodeID": i.node_id,
        "NodeAddr": i.node_addr,
        "ControlAvailable": i.control_available,
        "Error": i.error,
        "RemoteManagers": i.remote_managers,
    });
    if let Some(c) = &i.cluster {
        v["Managers"] = json!(c.managers);
        v["Nodes"] = json!(c.nodes);
        v["Cluster"] = json!({
            "ID": c.id,
            "Spec": crate::api_swarm::spec_json(&c.spec),
            "DefaultAddrPool": c.default_addr_pool,
            "SubnetSize": c.subnet_size,
            "RootRotationInProgress": c.root_rotation_in_progress,
            "CAExpiry": c.ca_expiry.map(|t| shoal_runtime::model::api_time(&t)),
        });
    }
    if let Ok(m) = swarm.manager() {
        let st = m.store().status();
        v["Raft"] = json!({
            "State": format!("{:?}", st.state),
            "Term": st.term,
            "Leader": st.leader,
            "LastLogIndex": st.last_log_index,
            "LastApplied": st.last_applied,
            "SnapshotIndex": st.snapshot_index,
            "PurgedIndex": st.purged_index,
        });
    }
    v
}

// ----- containers ------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListQuery {
    all: Option<String>,
}

pub(crate) fn truthy(v: &Option<String>) -> bool {
    matches!(
        v.as_deref(),
        Some("1") | Some("true") | Some("True") | Some("yes")
    )
}

/// Docker's `docker ps` summary of a container.
fn summary(v: &ContainerView) -> Value {
    let r = &v.record;
    let st = v.state();
    let mut cmd = vec![r.path.clone()];
    cmd.extend(r.args.iter().map(|a| {
        if a.contains(' ') {
            format!("'{a}'")
        } else {
            a.clone()
        }
    }));
    json!({
        "Id": r.id,
        "Names": [format!("/{}", r.name)],
        "Image": r.config.image,
        "ImageID": r.image_id,
        "Command": cmd.join(" "),
        "Created": r.created.timestamp(),
        "Ports": [],
        "Labels": r.config.labels,
        "State": st.status.as_str(),
        "Status": format::container_status(&status_input(v), Utc::now()),
        "HostConfig": { "NetworkMode": r.host_config.network_mode },
        "Mounts": r.mounts,
    })
}

fn status_input(v: &ContainerView) -> format::ContainerStatusInput {
    let st = v.state();
    format::ContainerStatusInput {
        running: st.running,
        paused: st.paused,
        restarting: false,
        removal_in_progress: st.status == shoal_runtime::model::Status::Removing,
        dead: st.dead,
        exit_code: st.exit_code as i64,
        started_at: v.live.started_at,
        finished_at: v
            .live
            .exit
            .as_ref()
            .filter(|_| !st.running)
            .map(|e| e.finished_at),
        health: v.health.as_ref().map(|h| h.status.as_str().to_owned()),
    }
}

async fn containers_list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Json<Vec<Value>> {
    Json(
        s.engine
            .runtime
            .list(truthy(&q.all))
            .iter()
            .map(summary)
            .collect(),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    #[serde(flatten)]
    config: Config,
    #[serde(default)]
    host_config: HostConfig,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NameQuery {
    name: Option<String>,
}

async fn container_create(
    State(s): State<AppState>,
    Query(q): Query<NameQuery>,
    Json(body): Json<CreateBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = q.name.filter(|n| !n.is_empty());
    let v = s
        .engine
        .create_container(name, body.config, body.host_config)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": v.record.id, "Warnings": [] })),
    ))
}

async fn container_inspect(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(s.engine.runtime.get(&id)?.inspect()))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StartQuery {
    attach: Option<String>,
}

async fn container_start(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StartQuery>,
) -> ApiResult<Response> {
    let rt = s.engine.runtime.clone();
    if !truthy(&q.attach) {
        rt.start(&id).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // Attached start: output from this start on, then the exit status. Auto-removal waits
    // for this stream (the guard) so no output is lost.
    let guard = rt.attach(&id)?;
    let since = Utc::now();
    rt.start(&id).await?;
    let logs = rt.logs(
        &id,
        ReadOptions {
            since: Some(since),
            ..ReadOptions::default()
        },
        true,
    )?;
    let frames = logs.map(|r| r.map(|rec| mux_frame(stream_id(&rec), &rec.line)));
    let tail = futures_util::stream::once(async move {
        let exit = rt.wait(&id, false).await;
        guard.finish().await;
        Ok(exit_frame(exit.map(|e| (e.exit_code, e.error))))
    });
    Ok(streaming(frames.map_err(std::io::Error::other).chain(tail)))
}

fn stream_id(r: &LogRecord) -> u8 {
    match r.stream {
        LogStream::Stdout => 1,
        LogStream::Stderr => 2,
    }
}

/// One frame of the multiplexed stream.
fn mux_frame(stream: u8, data: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(8 + data.len());
    b.extend_from_slice(&[stream, 0, 0, 0]);
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    Bytes::from(b)
}

fn exit_frame(r: Result<(i32, String), RuntimeError>) -> Bytes {
    let v = match r {
        Ok((code, err)) => json!({ "StatusCode": code, "Error": err }),
        Err(e) => json!({ "StatusCode": 125, "Error": e.to_string() }),
    };
    mux_frame(3, v.to_string().as_bytes())
}

fn streaming<S>(s: S) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    Response::builder()
        .header("content-type", "application/vnd.docker.multiplexed-stream")
        .body(Body::from_stream(s))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StopQuery {
    t: Option<i64>,
    signal: Option<String>,
}

async fn container_stop(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<StatusCode> {
    if let Some(sig) = q.signal.as_deref().filter(|s| !s.is_empty()) {
        // `stop -s SIG`: that signal instead of the configured one, then the same grace.
        s.engine.runtime.stop_with(&id, Some(sig), q.t).await?;
    } else {
        s.engine.runtime.stop(&id, q.t).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KillQuery {
    signal: Option<String>,
}

async fn container_kill(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<KillQuery>,
) -> ApiResult<StatusCode> {
    s.engine.runtime.kill(&id, q.signal.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WaitQuery {
    condition: Option<String>,
}

async fn container_wait(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<Value>> {
    let next = q.condition.as_deref() == Some("next-exit");
    let e = s.engine.runtime.wait(&id, next).await?;
    Ok(Json(
        json!({ "StatusCode": e.exit_code, "Error": if e.error.is_empty() { Value::Null } else { json!({"Message": e.error}) } }),
    ))
}

async fn container_pause(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine.runtime.pause(&id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn container_unpause(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine.runtime.pause(&id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RemoveQuery {
    force: Option<String>,
    v: Option<String>,
}

async fn container_remove(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<StatusCode> {
    s.engine
        .runtime
        .remove(&id, truthy(&q.force), truthy(&q.v))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn containers_prune(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    let mut deleted = Vec::new();
    for c in s.engine.runtime.list(true) {
        if !c.state().running
            && s.engine
                .runtime
                .remove(&c.record.id, false, false)
                .await
                .is_ok()
        {
            deleted.push(c.record.id.clone());
        }
    }
    Ok(Json(
        json!({ "ContainersDeleted": deleted, "SpaceReclaimed": 0 }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LogsQuery {
    follow: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    since: Option<String>,
    until: Option<String>,
    timestamps: Option<String>,
    tail: Option<String>,
}

/// Parses Docker's `since`/`until` values: RFC 3339, Unix seconds (with fraction), or a
/// duration ago (`10m`, `1h30m`).
pub fn parse_time(v: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(secs) = v.parse::<f64>() {
        let whole = secs.trunc() as i64;
        let nanos = ((secs - secs.trunc()) * 1e9) as u32;
        return DateTime::from_timestamp(whole, nanos).ok_or_else(|| format!("invalid time {v:?}"));
    }
    if let Ok(d) = humantime::parse_duration(v) {
        let d = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
        return Ok(now - d);
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(v, fmt) {
            return Ok(t.and_utc());
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(v, fmt) {
            return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now));
        }
    }
    Err(format!(
        "invalid time {v:?}: use RFC 3339 (2006-01-02T15:04:05Z), Unix seconds, or a duration such as 10m"
    ))
}

/// A `since`/`until` query value: absent, empty or `0` means none.
pub(crate) fn optional_time(
    v: Option<&str>,
    now: DateTime<Utc>,
) -> ApiResult<Option<DateTime<Utc>>> {
    v.filter(|v| !v.is_empty() && *v != "0")
        .map(|v| parse_time(v, now))
        .transpose()
        .map_err(bad_request)
}

/// A `tail` query value: absent, empty or `all` means everything.
pub(crate) fn parse_tail(v: Option<&str>) -> ApiResult<Option<usize>> {
    match v {
        None | Some("") | Some("all") => Ok(None),
        Some(n) => Ok(Some(
            n.parse::<i64>()
                .map_err(|_| bad_request(format!("invalid tail value {n:?}")))?
                .max(0) as usize,
        )),
    }
}

async fn container_logs(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let now = Utc::now();
    let since = optional_time(q.since.as_deref(), now)?;
    let until = optional_time(q.until.as_deref(), now)?;
    let tail = parse_tail(q.tail.as_deref())?;
    let (out, err) = (q.stdout.is_some(), q.stderr.is_some());
    let opts = ReadOptions {
        tail,
        since,
        until,
        stdout: out || !err,
        stderr: err || !out,
    };
    let timestamps = truthy(&q.timestamps);
    let logs = s.engine.runtime.logs(&id, opts, truthy(&q.follow))?;
    let frames = logs.map(move |r| {
        r.map(|rec| {
            if timestamps {
                // Docker's RFC3339NanoFixed: always nine digits, so columns line up.
                let mut line = rec
                    .time
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                    .into_bytes();
                line.push(b' ');
                line.extend_from_slice(&rec.line);
                mux_frame(stream_id(&rec), &line)
            } else {
                mux_frame(stream_id(&rec), &rec.line)
            }
        })
        .map_err(std::io::Error::other)
    });
    Ok(streaming(frames))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ExecBody {
    cmd: Vec<String>,
    env: Vec<String>,
    user: Option<String>,
    working_dir: Option<String>,
    detach: bool,
}

async fn container_exec(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(b): Json<ExecBody>,
) -> ApiResult<Response> {
    let mut child = s
        .engine
        .runtime
        .exec(
            &id,
            ExecRequest {
                cmd: b.cmd,
                env: b.env,
                user: b.user,
                workdir: b.working_dir,
            },
        )
        .await?;
    if b.detach {
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let pipes: Vec<(u8, Box<dyn tokio::io::AsyncRead + Send + Unpin>)> = [
        child.stdout.take().map(|o| {
            (
                1u8,
                Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            )
        }),
        child.stderr.take().map(|e| {
            (
                2u8,
                Box::new(e) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    tokio::spawn(async move {
        let mut readers = Vec::new();
        for (sid, mut r) in pipes {
            let tx = tx.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(Ok(mux_frame(sid, &buf[..n]))).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }));
        }
        for r in readers {
            let _ = r.await;
        }
        let code = match child.wait().await {
            Ok(st) => st.code().unwrap_or_else(|| {
                use std::os::unix::process::ExitStatusExt;
                128 + st.signal().unwrap_or(0)
            }),
            Err(_) => 126,
        };
        let _ = tx.send(Ok(exit_frame(Ok((code, String::new()))))).await;
    });
    Ok(streaming(ReceiverStream(rx)))
}

/// An mpsc receiver as a stream.
struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

async fn container_stats(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let rt = &s.engine.runtime;
    let v = rt.get(&id)?;
    let pre = rt.stats(&id).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cur = rt.stats(&id).await?;
    Ok(Json(json!({
        "id": v.record.id,
        "name": format!("/{}", v.record.name),
        "read": cur.read,
        "preread": pre.read,
        "pids_stats": { "current": cur.usage.pids },
        "cpu_stats": {
            "cpu_usage": { "total_usage": cur.usage.cpu_total_ns },
            "system_cpu_usage": cur.system_cpu_ns,
            "online_cpus": cur.online_cpus,
        },
        "precpu_stats": {
            "cpu_usage": { "total_usage": pre.usage.cpu_total_ns },
            "system_cpu_usage": pre.system_cpu_ns,
            "online_cpus": pre.online_cpus,
        },
        "memory_stats": { "usage": cur.usage.memory_usage, "limit": cur.usage.memory_limit },
        "blkio_stats": { "read": cur.usage.block_read, "write": cur.usage.block_write },
        "networks": {},
    })))
}

// ----- images ----------------------------------------------------------------------------

async fn images_list(State(s): State<AppState>) -> Json<Vec<Value>> {
    let rt = &s.engine.runtime;
    Json(
        s.engine
            .images
            .list()
            .iter()
            .map(|i| {
                json!({
                    "Id": i.id,
                    "ParentId": "",
                    "RepoTags": i.repo_tags.iter().map(|t| shoal_image::reference::familiar(t)).collect::<Vec<_>>(),
                    "RepoDigests": i.repo_digests.iter().map(|t| shoal_image::reference::familiar(t)).collect::<Vec<_>>(),
                    "Created": i.created.map_or(0, |c| c.timestamp()),
                    "Size": i.size,
                    "SharedSize": -1,
                    "Labels": Value::Null,
                    "Containers": rt.containers_using_image(&i.id).len(),
                })
            })
            .collect(),
    )
}

/// Credentials sent by the CLI in `X-Registry-Auth` (base64url JSON, Docker's header).
fn registry_auth(h: &HeaderMap) -> Option<Credentials> {
    Credentials::from_registry_auth(h.get("x-registry-auth")?.to_str().ok()?)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PullQuery {
    #[serde(rename = "fromImage")]
    from_image: String,
    tag: Option<String>,
}

/// Runs an image operation, streaming its progress events and a final error line.
fn progress_stream<F, Fut>(work: F) -> Response
where
    F: FnOnce(ProgressSink) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ProgressEvent>();
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    let sink = ProgressSink::new(tx);
    tokio::spawn(async move {
        let fwd_tx = out_tx.clone();
        let forward = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                line.push(b'\n');
                if fwd_tx.send(Ok(Bytes::from(line))).await.is_err() {
                    break;
                }
            }
        });
        let result = work(sink).await;
        let _ = forward.await;
        if let Err(msg) = result {
            let line = format!(
                "{}\n",
                json!({ "error": msg, "errorDetail": { "message": msg } })
            );
            let _ = out_tx.send(Ok(Bytes::from(line))).await;
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(ReceiverStream(out_rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn image_pull(
    State(s): State<AppState>,
    Query(q): Query<PullQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if q.from_image.is_empty() {
        return Err(bad_request("fromImage is required"));
    }
    let reference = match q.tag.filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{}@{t}", q.from_image),
        Some(t) => format!("{}:{t}", q.from_image),
        None => q.from_image,
    };
    let creds = registry_auth(&headers);
    let images = s.engine.images.clone();
    Ok(progress_stream(move |sink| async move {
        images
            .pull(&reference, creds, sink)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoadQuery {
    tag: Option<String>,
}

async fn image_load(
    State(s): State<AppState>,
    Query(q): Query<LoadQuery>,
    req: Request,
) -> ApiResult<Response> {
    let body = req
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(body);
    let images = s.engine.images.clone();
    let tag = q.tag.filter(|t| !t.is_empty());
    Ok(progress_stream(move |sink| async move {
        images
            .import(reader, tag.as_deref(), sink)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ExportQuery {
    names: Vec<String>,
}

async fn image_export(
    State(s): State<AppState>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> ApiResult<Response> {
    let names: Vec<String> = raw
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("names="))
        .map(percent_decode)
        .collect();
    let q = ExportQuery { names };
    if q.names.is_empty() {
        return Err(bad_request("no image names given"));
    }
    for n in &q.names {
        s.engine.images.get(n)?;
    }
    let (w, r) = tokio::io::duplex(256 * 1024);
    let images = s.engine.images.clone();
    tokio::spawn(async move {
        if let Err(e) = images.export(&q.names, w).await {
            tracing::warn!(error = %e, "image export failed");
        }
    });
    let stream = tokio_util::io::ReaderStream::new(r);
    Ok(Response::builder()
        .header("content-type", "application/x-tar")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

/// Decodes `%XX` escapes and `+` of a query value.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&v[i + 1..i + 3], 16) {
                Ok(x) => {
                    out.push(x);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /images/<name>/json`.
async fn image_get_rest(
    State(s): State<AppState>,
    Path(rest): Path<String>,
) -> ApiResult<Json<Value>> {
    let Some(name) = rest.strip_suffix("/json") else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("page not found: /images/{rest}"),
        ));
    };
    let img = s.engine.images.get(name)?;
    let cfg: Value = s
        .engine
        .images
        .blob_path(&img.id)
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let layers: Vec<String> = s
        .engine
        .images
        .layer_dirs(&img)
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    Ok(Json(json!({
        "Id": img.id,
        "RepoTags": img.repo_tags.iter().map(|t| shoal_image::reference::familiar(t)).collect::<Vec<_>>(),
        "RepoDigests": img.repo_digests.iter().map(|t| shoal_image::reference::familiar(t)).collect::<Vec<_>>(),
        "Parent": "",
        "Comment": cfg.get("comment").cloned().unwrap_or(json!("")),
        "Created": img.created.map(|c| shoal_runtime::model::api_time(&c)).unwrap_or_default(),
        "DockerVersion": cfg.get("docker_version").cloned().unwrap_or(json!("")),
        "Author": cfg.get("author").cloned().unwrap_or(json!("")),
        "Config": cfg.get("config").cloned().unwrap_or(Value::Null),
        "Architecture": img.architecture,
        "Variant": img.variant,
        "Os": img.os,
        "Size": img.size,
        "GraphDriver": {
            "Data": { "LowerDir": layers.join(":") },
            "Name": "overlay2",
        },
        "RootFS": {
            "Type": "layers",
            "Layers": img.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
        "Descriptor": {
            "mediaType": img.manifest_media_type,
            "digest": img.manifest_digest,
        },
    })))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TagQuery {
    repo: String,
    tag: Option<String>,
}

/// `POST /images/<name>/tag?repo=&tag=`.
async fn image_post_rest(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    Query(q): Query<TagQuery>,
) -> ApiResult<StatusCode> {
    let Some(name) = rest.strip_suffix("/tag") else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("page not found: /images/{rest}"),
        ));
    };
    let target = match q.tag.filter(|t| !t.is_empty()) {
        Some(t) => format!("{}:{t}", q.repo),
        None => q.repo,
    };
    s.engine.images.tag(name, &target).await?;
    Ok(StatusCode::CREATED)
}

async fn image_remove(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<Json<Vec<Value>>> {
    let events = s.engine.remove_image(&name, truthy(&q.force)).await?;
    Ok(Json(events.iter().map(remove_event).collect()))
}

fn remove_event(e: &shoal_image::RemoveEvent) -> Value {
    match e {
        shoal_image::RemoveEvent::Untagged(t) => {
            json!({ "Untagged": shoal_image::reference::familiar(t) })
        }
        shoal_image::RemoveEvent::Deleted(d) => json!({ "Deleted": d }),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PruneQuery {
    all: Option<String>,
}

async fn images_prune(
    State(s): State<AppState>,
    Query(q): Query<PruneQuery>,
) -> ApiResult<Json<Value>> {
    let r = s.engine.prune_images(truthy(&q.all)).await?;
    Ok(Json(json!({
        "ImagesDeleted": r.deleted.iter().map(remove_event).collect::<Vec<_>>(),
        "SpaceReclaimed": r.space_reclaimed,
    })))
}

#[derive(Deserialize)]
struct AuthBody {
    username: String,
    password: String,
    #[serde(default)]
    serveraddress: String,
}

async fn auth(State(s): State<AppState>, Json(b): Json<AuthBody>) -> ApiResult<Json<Value>> {
    let registry = if b.serveraddress.is_empty() {
        "docker.io".to_owned()
    } else {
        b.serveraddress
    };
    s.engine
        .images
        .login(
            &registry,
            &Credentials {
                username: b.username,
                password: b.password,
            },
        )
        .await?;
    Ok(Json(json!({ "Status": "Login Succeeded" })))
}

// ----- volumes ---------------------------------------------------------------------------

async fn volumes_list(State(s): State<AppState>) -> Json<Value> {
    Json(json!({ "Volumes": s.engine.runtime.volumes().list(), "Warnings": [] }))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct VolumeBody {
    name: Option<String>,
    driver: Option<String>,
    labels: BTreeMap<String, String>,
}

async fn volume_create(
    State(s): State<AppState>,
    Json(b): Json<VolumeBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if let Some(d) = b
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "local")
    {
        return Err(bad_request(format!(
            "volume driver {d:?} is not supported (only \"local\")"
        )));
    }
    let v = s
        .engine
        .runtime
        .volumes()
        .create(b.name.as_deref().filter(|n| !n.is_empty()), b.labels)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(v).unwrap_or(Value::Null)),
    ))
}

async fn volume_inspect(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let v = s.engine.runtime.volumes().get(&name)?;
    Ok(Json(serde_json::to_value(v).unwrap_or(Value::Null)))
}

async fn volume_remove(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(_q): Query<RemoveQuery>,
) -> ApiResult<StatusCode> {
    let users = s.engine.runtime.containers_using_volume(&name);
    s.engine.runtime.volumes().remove(&name, &users)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /volumes/prune[?all=1]`: unused anonymous volumes, or every unused one with `all`
/// (Docker 23+ semantics).
async fn volumes_prune(
    State(s): State<AppState>,
    Query(q): Query<PruneQuery>,
) -> ApiResult<Json<Value>> {
    let vols = s.engine.runtime.volumes();
    let all = truthy(&q.all);
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for v in vols.list() {
        if (all || v.is_anonymous()) && s.engine.runtime.containers_using_volume(&v.name).is_empty()
        {
            let size = vols.size(&v);
            if vols.remove(&v.name, &[]).is_ok() {
                reclaimed += size;
                deleted.push(v.name);
            }
        }
    }
    Ok(Json(
        json!({ "VolumesDeleted": deleted, "SpaceReclaimed": reclaimed }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_time("2026-01-01T11:00:00Z", now)
                .unwrap()
                .to_rfc3339(),
            "2026-01-01T11:00:00+00:00"
        );
        assert_eq!(
            parse_time("10m", now).unwrap().to_rfc3339(),
            "2026-01-01T11:50:00+00:00"
        );
        assert_eq!(parse_time("1767268800", now).unwrap(), now);
        assert!(parse_time("yesterday", now).is_err());
    }

    #[test]
    fn frames() {
        assert_eq!(
            &mux_frame(2, b"hi")[..],
            &[2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']
        );
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
    }
}
