//! The local API's service and task endpoints (Docker's `/services…` and `/tasks…`).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_cluster::services::{CreateOptions, ServiceView};
use shoal_runtime::model::api_time;
use shoal_store::model::{Node, Service, ServiceSpec, Task, TaskState};

use crate::api::{ApiError, AppState};

type ApiResult<T> = Result<T, ApiError>;

/// The service and task routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/services", get(services_list))
        .route("/services/create", post(service_create))
        .route(
            "/services/{id}",
            get(service_inspect).delete(service_remove),
        )
        .route("/services/{id}/update", post(service_update))
        .route("/services/{id}/pause", post(service_pause))
        .route("/services/{id}/unpause", post(service_unpause))
        .route("/services/{id}/logs", get(crate::api_logs::service_logs))
        .route("/tasks", get(tasks_list))
        .route("/tasks/{id}", get(task_inspect))
        .route("/tasks/{id}/logs", get(crate::api_logs::task_logs))
}

/// Docker's `filters` query: `{"name":["web"]}` (or the older `{"name":{"web":true}}`).
pub(crate) fn parse_filters(raw: Option<&str>) -> ApiResult<BTreeMap<String, Vec<String>>> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let v: Value = serde_json::from_str(raw).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid filter {raw:?}: {e}"),
        )
    })?;
    let mut out = BTreeMap::new();
    for (k, v) in v.as_object().into_iter().flatten() {
        let vals: Vec<String> = match v {
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            Value::Object(o) => o.keys().cloned().collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        };
        out.insert(k.clone(), vals);
    }
    Ok(out)
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    api_time(t)
}

/// A service as Docker's API shows it.
pub(crate) fn service_json(v: &ServiceView, with_status: bool) -> Value {
    let s = &v.service;
    let mut out = json!({
        "ID": s.id,
        "Version": { "Index": s.meta.version },
        "CreatedAt": time(&s.meta.created_at),
        "UpdatedAt": time(&s.meta.updated_at),
        "Spec": s.spec,
        "Endpoint": {
            "Spec": s.endpoint.spec,
        },
    });
    if let Some(p) = &s.previous_spec {
        out["PreviousSpec"] = json!(p);
    }
    if !s.endpoint.ports.is_empty() {
        out["Endpoint"]["Ports"] = json!(s.endpoint.ports);
    }
    if let Some(u) = &s.update_status {
        let mut st = json!({ "State": u.state.as_str(), "Message": u.message });
        if let Some(t) = &u.started_at {
            st["StartedAt"] = json!(time(t));
        }
        if let Some(t) = &u.completed_at {
            st["CompletedAt"] = json!(time(t));
        }
        out["UpdateStatus"] = st;
    }
    if let Some(j) = &s.job_status {
        out["JobStatus"] = json!({
            "JobIteration": { "Index": j.job_iteration },
            "LastExecution": j.last_execution.as_ref().map(time),
        });
    }
    if s.paused {
        out["Paused"] = json!(true);
    }
    if with_status {
        out["ServiceStatus"] = json!({
            "RunningTasks": v.running,
            "DesiredTasks": v.desired,
            "CompletedTasks": v.completed,
        });
    }
    out
}

/// A task as Docker's API shows it.
pub(crate) fn task_json(t: &Task) -> Value {
    let mut status = json!({
        "Timestamp": t.status.timestamp.as_ref().map(time),
        "State": t.status.state.as_str(),
        "Message": t.status.message,
    });
    if !t.status.err.is_empty() {
        status["Err"] = json!(t.status.err);
    }
    if let Some(c) = &t.status.container {
        status["ContainerStatus"] = json!({
            "ContainerID": c.container_id,
            "PID": c.pid,
            "ExitCode": c.exit_code,
        });
    }
    if !t.status.health.is_empty() {
        status["Health"] = json!(t.status.health);
    }
    if t.status.paused {
        status["Paused"] = json!(true);
    }
    let mut out = json!({
        "ID": t.id,
        "Version": { "Index": t.meta.version },
        "CreatedAt": time(&t.meta.created_at),
        "UpdatedAt": time(&t.meta.updated_at),
        "Name": t.name(),
        "Labels": {},
        "Spec": t.spec,
        "ServiceID": t.service_id,
        "NodeID": t.node_id,
        "Status": status,
        "DesiredState": t.desired_state.as_str(),
    });
    if t.slot > 0 {
        out["Slot"] = json!(t.slot);
    }
    if let Some(i) = t.job_iteration {
        out["JobIteration"] = json!({ "Index": i });
    }
    out
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListQuery {
    filters: Option<String>,
    status: Option<String>,
}

async fn services_list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<Value>>> {
    let mgr = s.swarm().manager()?;
    let filters = parse_filters(q.filters.as_deref())?;
    let with_status = crate::api::truthy(&q.status);
    let mut out = Vec::new();
    for v in mgr.services()? {
        if service_matches(&v.service, &filters)? {
            out.push(service_json(&v, with_status));
        }
    }
    Ok(Json(out))
}

fn service_matches(s: &Service, f: &BTreeMap<String, Vec<String>>) -> ApiResult<bool> {
    for (k, vals) in f {
        if vals.is_empty() {
            continue;
        }
        let ok = match k.as_str() {
            "id" => vals.iter().any(|v| s.id.starts_with(v.as_str())),
            "name" => vals.iter().any(|v| s.spec.name.starts_with(v.as_str())),
            "mode" => vals.iter().any(|v| {
                let m = s.spec.mode.name().replace(' ', "-");
                *v == m
            }),
            "label" => vals.iter().any(|v| match v.split_once('=') {
                Some((k, val)) => s.spec.labels.get(k).is_some_and(|x| x == val),
                None => s.spec.labels.contains_key(v),
            }),
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid filter '{other}'"),
                ));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The raw `X-Registry-Auth` value (`--with-registry-auth`), if sent.
fn registry_auth(h: &HeaderMap) -> Option<String> {
    h.get("x-registry-auth")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|v| !v.is_empty())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CreateQuery {
    resolve_image: Option<String>,
}

async fn service_create(
    State(s): State<AppState>,
    Query(q): Query<CreateQuery>,
    headers: HeaderMap,
    Json(spec): Json<ServiceSpec>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mgr = s.swarm().manager()?;
    let (id, warnings) = mgr
        .create_service(
            spec,
            CreateOptions {
                no_resolve_image: q.resolve_image.as_deref() == Some("never"),
                registry_auth: registry_auth(&headers),
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "ID": id, "Warnings": warnings })),
    ))
}

async fn service_inspect(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let mgr = s.swarm().manager()?;
    let svc = mgr.service(&id)?;
    let view = mgr
        .services()?
        .into_iter()
        .find(|v| v.service.id == svc.id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("service {id} not found")))?;
    Ok(Json(service_json(&view, true)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UpdateQuery {
    version: Option<u64>,
    rollback: Option<String>,
    resolve_image: Option<String>,
}

async fn service_update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UpdateQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let mgr = s.swarm().manager()?;
    let rollback = q.rollback.as_deref() == Some("previous");
    let spec: Option<ServiceSpec> = if body.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid service spec: {e}"),
            )
        })?)
    };
    let warnings = mgr
        .update_service(
            &id,
            q.version.unwrap_or(0),
            spec,
            rollback,
            CreateOptions {
                no_resolve_image: q.resolve_image.as_deref() == Some("never"),
                registry_auth: registry_auth(&headers),
            },
        )
        .await?;
    Ok(Json(json!({ "Warnings": warnings })))
}

async fn service_remove(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.swarm().manager()?.remove_service(&id).await?;
    Ok(StatusCode::OK)
}

async fn service_pause(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    s.swarm().manager()?.pause_service(&id, true).await?;
    Ok(StatusCode::OK)
}

async fn service_unpause(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.swarm().manager()?.pause_service(&id, false).await?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TasksQuery {
    filters: Option<String>,
}

async fn tasks_list(
    State(s): State<AppState>,
    Query(q): Query<TasksQuery>,
) -> ApiResult<Json<Vec<Value>>> {
    let mgr = s.swarm().manager()?;
    let filters = parse_filters(q.filters.as_deref())?;
    let services = mgr
        .store()
        .list::<Service>()
        .map_err(shoal_cluster::SwarmError::from)?;
    let nodes = mgr
        .store()
        .list::<Node>()
        .map_err(shoal_cluster::SwarmError::from)?;
    let mut tasks = mgr.tasks()?;
    tasks.sort_by(|a, b| {
        (a.service_name.as_str(), a.slot, a.node_id.as_str())
            .cmp(&(b.service_name.as_str(), b.slot, b.node_id.as_str()))
            .then(b.meta.created_at.cmp(&a.meta.created_at))
    });
    let mut out = Vec::new();
    for t in &tasks {
        if task_matches(t, &filters, &services, &nodes)? {
            out.push(task_json(t));
        }
    }
    Ok(Json(out))
}

fn task_matches(
    t: &Task,
    f: &BTreeMap<String, Vec<String>>,
    services: &[Service],
    nodes: &[Node],
) -> ApiResult<bool> {
    for (k, vals) in f {
        if vals.is_empty() {
            continue;
        }
        let ok = match k.as_str() {
            "id" => vals.iter().any(|v| t.id.starts_with(v.as_str())),
            "name" => vals.iter().any(|v| t.name().starts_with(v.as_str())),
            "service" => vals.iter().any(|v| {
                t.service_id == *v
                    || t.service_name == *v
                    || services.iter().any(|s| {
                        s.id == t.service_id && (s.spec.name == *v || s.id.starts_with(v.as_str()))
                    })
            }),
            "node" => vals.iter().any(|v| {
                t.node_id == *v
                    || nodes.iter().any(|n| {
                        n.id == t.node_id
                            && (n.description.hostname == *v
                                || n.spec.name == *v
                                || n.id.starts_with(v.as_str()))
                    })
            }),
            "desired-state" => {
                let mut any = false;
                for v in vals {
                    let want = match v.as_str() {
                        "running" => TaskState::Running,
                        "shutdown" => TaskState::Shutdown,
                        "accepted" => TaskState::Accepted,
                        other => {
                            return Err(ApiError::new(
                                StatusCode::BAD_REQUEST,
                                format!(
                                    "Invalid desired-state filter value: {other}. Valid values are running, shutdown, accepted"
                                ),
                            ));
                        }
                    };
                    // Docker: `shutdown` covers every desired state past running.
                    any |= match want {
                        TaskState::Shutdown => t.desired_state >= TaskState::Shutdown,
                        TaskState::Running => t.desired_state == TaskState::Running,
                        w => t.desired_state == w,
                    };
                }
                any
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid filter '{other}'"),
                ));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn task_inspect(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let mgr = s.swarm().manager()?;
    let tasks = mgr.tasks()?;
    let hits: Vec<&Task> = tasks.iter().filter(|t| t.id.starts_with(&id)).collect();
    match hits.as_slice() {
        [t] => Ok(Json(task_json(t))),
        _ => match tasks.iter().find(|t| t.id == id) {
            Some(t) => Ok(Json(task_json(t))),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("task {id} not found"),
            )),
        },
    }
}
