//! The local API's swarm and node endpoints (Docker's `/swarm…` and `/nodes…`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_cluster::{InitOptions, JoinOptions, NodeView, SwarmError};
use shoal_store::model::{Availability, ClusterSpec, Node, NodeSpec, Role};

use crate::api::{ApiError, AppState, truthy};

type ApiResult<T> = Result<T, ApiError>;

impl From<SwarmError> for ApiError {
    fn from(e: SwarmError) -> Self {
        let status = match &e {
            SwarmError::NotInSwarm
            | SwarmError::NotManager
            | SwarmError::Locked
            | SwarmError::NotLocked => StatusCode::SERVICE_UNAVAILABLE,
            SwarmError::AlreadyInSwarm | SwarmError::Conflict(_) => StatusCode::CONFLICT,
            SwarmError::NotFound(_) => StatusCode::NOT_FOUND,
            SwarmError::InvalidArgument(_)
            | SwarmError::InvalidToken
            | SwarmError::FailedPrecondition(_) => StatusCode::BAD_REQUEST,
            SwarmError::ManagerLeave { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The swarm and node routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/swarm", get(swarm_inspect))
        .route("/swarm/init", post(swarm_init))
        .route("/swarm/join", post(swarm_join))
        .route("/swarm/leave", post(swarm_leave))
        .route("/swarm/update", post(swarm_update))
        .route("/swarm/unlock", post(swarm_unlock))
        .route("/swarm/unlockkey", get(swarm_unlock_key))
        .route("/swarm/ca", get(swarm_ca))
        .route("/swarm/ca/rotate", post(swarm_ca_rotate))
        .route("/nodes", get(nodes_list))
        .route("/nodes/{id}", get(node_inspect).delete(node_remove))
        .route("/nodes/{id}/update", post(node_update))
}

fn ns(d: std::time::Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

pub(crate) fn spec_json(s: &ClusterSpec) -> Value {
    json!({
        "Name": s.name,
        "Labels": s.labels,
        "Orchestration": { "TaskHistoryRetentionLimit": s.orchestration.task_history_retention_limit },
        "Raft": {
            "SnapshotInterval": s.raft.snapshot_interval,
            "KeepOldSnapshots": s.raft.keep_old_snapshots,
            "LogEntriesForSlowFollowers": s.raft.log_entries_for_slow_followers,
            "ElectionTick": s.raft.election_tick,
            "HeartbeatTick": s.raft.heartbeat_tick,
        },
        "Dispatcher": { "HeartbeatPeriod": ns(s.dispatcher.heartbeat_period) },
        "CAConfig": { "NodeCertExpiry": ns(s.ca_config.node_cert_expiry) },
        "TaskDefaults": {},
        "EncryptionConfig": { "AutoLockManagers": s.encryption.auto_lock_managers },
    })
}

/// A `ClusterSpec` from Docker's JSON (missing fields keep `base`'s values).
fn spec_from_json(v: &Value, base: &ClusterSpec) -> ClusterSpec {
    let mut s = base.clone();
    let dur = |x: &Value| {
        x.as_i64()
            .filter(|n| *n > 0)
            .map(|n| std::time::Duration::from_nanos(n as u64))
    };
    if let Some(n) = v["Name"].as_str() {
        s.name = n.to_owned();
    }
    if let Some(l) = v["Labels"].as_object() {
        s.labels = l
            .iter()
            .map(|(k, x)| (k.clone(), x.as_str().unwrap_or_default().to_owned()))
            .collect();
    }
    if let Some(n) = v["Orchestration"]["TaskHistoryRetentionLimit"].as_i64() {
        s.orchestration.task_history_retention_limit = n;
    }
    if let Some(n) = v["Raft"]["SnapshotInterval"].as_u64().filter(|n| *n > 0) {
        s.raft.snapshot_interval = n;
    }
    if let Some(n) = v["Raft"]["KeepOldSnapshots"].as_u64() {
        s.raft.keep_old_snapshots = n;
    }
    if let Some(n) = v["Raft"]["LogEntriesForSlowFollowers"].as_u64() {
        s.raft.log_entries_for_slow_followers = n;
    }
    if let Some(d) = dur(&v["Dispatcher"]["HeartbeatPeriod"]) {
        s.dispatcher.heartbeat_period = d;
    }
    if let Some(d) = dur(&v["CAConfig"]["NodeCertExpiry"]) {
        s.ca_config.node_cert_expiry = d;
    }
    if let Some(b) = v["EncryptionConfig"]["AutoLockManagers"].as_bool() {
        s.encryption.auto_lock_managers = b;
    }
    s
}

async fn swarm_inspect(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    let mgr = s.swarm().manager()?;
    let c = mgr.cluster()?;
    Ok(Json(json!({
        "ID": c.id,
        "Version": { "Index": c.meta.version },
        "CreatedAt": shoal_runtime::model::api_time(&c.meta.created_at),
        "UpdatedAt": shoal_runtime::model::api_time(&c.meta.updated_at),
        "Spec": spec_json(&c.spec),
        "TLSInfo": { "TrustRoot": mgr.roots_pem()? },
        "RootRotationInProgress": c.root_ca.rotation.is_some(),
        "DefaultAddrPool": c.default_addr_pool,
        "SubnetSize": c.subnet_size,
        "JoinTokens": { "Worker": c.root_ca.join_tokens.worker, "Manager": c.root_ca.join_tokens.manager },
    })))
}

async fn swarm_init(State(s): State<AppState>, Json(b): Json<Value>) -> ApiResult<Json<Value>> {
    let mut spec = spec_from_json(&b["Spec"], &ClusterSpec::default());
    if b["AutoLockManagers"].as_bool() == Some(true) {
        spec.encryption.auto_lock_managers = true;
    }
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let r = s
        .swarm()
        .init(InitOptions {
            listen_addr: b["ListenAddr"]
                .as_str()
                .unwrap_or("0.0.0.0:4242")
                .to_owned(),
            advertise_addr: b["AdvertiseAddr"].as_str().unwrap_or_default().to_owned(),
            default_addr_pool: strs(&b["DefaultAddrPool"]),
            subnet_size: b["SubnetSize"].as_u64().unwrap_or(0) as u32,
            spec,
            force_new_cluster: b["ForceNewCluster"].as_bool().unwrap_or(false),
        })
        .await?;
    Ok(Json(
        json!({ "NodeID": r.node_id, "UnlockKey": r.unlock_key }),
    ))
}

async fn swarm_join(State(s): State<AppState>, Json(b): Json<Value>) -> ApiResult<StatusCode> {
    let remotes: Vec<String> = b["RemoteAddrs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    s.swarm()
        .join(JoinOptions {
            remote_addrs: remotes,
            token: b["JoinToken"].as_str().unwrap_or_default().to_owned(),
            listen_addr: b["ListenAddr"]
                .as_str()
                .unwrap_or("0.0.0.0:4242")
                .to_owned(),
            advertise_addr: b["AdvertiseAddr"].as_str().unwrap_or_default().to_owned(),
        })
        .await?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ForceQuery {
    force: Option<String>,
}

async fn swarm_leave(
    State(s): State<AppState>,
    Query(q): Query<ForceQuery>,
) -> ApiResult<StatusCode> {
    s.swarm().leave(truthy(&q.force)).await?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UpdateQuery {
    version: Option<u64>,
    #[serde(rename = "rotateWorkerToken")]
    rotate_worker_token: Option<String>,
    #[serde(rename = "rotateManagerToken")]
    rotate_manager_token: Option<String>,
    #[serde(rename = "rotateManagerUnlockKey")]
    rotate_manager_unlock_key: Option<String>,
}

async fn swarm_update(
    State(s): State<AppState>,
    Query(q): Query<UpdateQuery>,
    body: Option<Json<Value>>,
) -> ApiResult<Json<Value>> {
    let mgr = s.swarm().manager()?;
    let current = mgr.cluster()?.spec;
    let spec = body.map(|Json(v)| spec_from_json(&v, &current));
    let key = mgr
        .update_cluster(
            q.version,
            spec,
            truthy(&q.rotate_worker_token),
            truthy(&q.rotate_manager_token),
            truthy(&q.rotate_manager_unlock_key),
        )
        .await?;
    Ok(Json(json!({ "UnlockKey": key })))
}

async fn swarm_unlock(State(s): State<AppState>, Json(b): Json<Value>) -> ApiResult<StatusCode> {
    s.swarm()
        .unlock(b["UnlockKey"].as_str().unwrap_or_default())
        .await?;
    Ok(StatusCode::OK)
}

async fn swarm_unlock_key(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    let key = s.swarm().manager()?.unlock_key()?;
    Ok(Json(json!({ "UnlockKey": key })))
}

async fn swarm_ca(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    let mgr = s.swarm().manager()?;
    let c = mgr.cluster()?;
    Ok(Json(json!({
        "RootCA": c.root_ca.ca_cert_pem,
        "RotationInProgress": c.root_ca.rotation.is_some(),
    })))
}

async fn swarm_ca_rotate(State(s): State<AppState>) -> ApiResult<StatusCode> {
    s.swarm().manager()?.rotate_ca().await?;
    Ok(StatusCode::OK)
}

fn role_str(r: Role) -> &'static str {
    match r {
        Role::Manager => "manager",
        Role::Worker => "worker",
    }
}

fn availability_str(a: Availability) -> &'static str {
    match a {
        Availability::Active => "active",
        Availability::Pause => "pause",
        Availability::Drain => "drain",
    }
}

/// Docker's node object.
pub fn node_json(v: &NodeView) -> Value {
    let n = &v.node;
    let state = format!("{:?}", n.status.state).to_lowercase();
    json!({
        "ID": n.id,
        "Version": { "Index": n.meta.version },
        "CreatedAt": shoal_runtime::model::api_time(&n.meta.created_at),
        "UpdatedAt": shoal_runtime::model::api_time(&n.meta.updated_at),
        "Spec": {
            "Name": n.spec.name,
            "Labels": n.spec.labels,
            "Role": role_str(n.spec.role),
            "Availability": availability_str(n.spec.availability),
        },
        "Description": {
            "Hostname": n.description.hostname,
            "Platform": { "Architecture": n.description.platform.architecture, "OS": n.description.platform.os },
            "Resources": { "NanoCPUs": n.description.resources.nano_cpus, "MemoryBytes": n.description.resources.memory_bytes },
            "Engine": { "EngineVersion": n.description.engine.engine_version, "Labels": n.description.engine.labels },
            "TLSInfo": { "CertExpiry": n.certificate.expires_at.map(|t| shoal_runtime::model::api_time(&t)) },
        },
        "Status": { "State": state, "Message": n.status.message, "Addr": n.status.addr },
        "ManagerStatus": n.manager_status.as_ref().map(|m| json!({
            "Leader": v.manager_status == "Leader",
            "Reachability": if v.manager_status == "Unreachable" { "unreachable" } else { "reachable" },
            "Addr": m.addr,
        })),
        "Self": v.is_self,
        "ManagerStatusText": v.manager_status,
    })
}

async fn nodes_list(State(s): State<AppState>) -> ApiResult<Json<Vec<Value>>> {
    let mgr = s.swarm().manager()?;
    Ok(Json(mgr.nodes()?.iter().map(node_json).collect()))
}

async fn node_inspect(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let mgr = s.swarm().manager()?;
    let node = mgr.node(&id)?;
    let view = mgr
        .nodes()?
        .into_iter()
        .find(|v| v.node.id == node.id)
        .ok_or_else(|| SwarmError::NotFound(format!("node {id} not found")))?;
    Ok(Json(node_json(&view)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct VersionQuery {
    version: Option<u64>,
}

async fn node_update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
    Json(b): Json<Value>,
) -> ApiResult<StatusCode> {
    let mgr = s.swarm().manager()?;
    let node: Node = mgr.node(&id)?;
    let mut spec: NodeSpec = node.spec.clone();
    if let Some(r) = b["Role"].as_str() {
        spec.role = match r {
            "manager" => Role::Manager,
            "worker" => Role::Worker,
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid role {other:?}"),
                ));
            }
        };
    }
    if let Some(a) = b["Availability"].as_str() {
        spec.availability = match a {
            "active" => Availability::Active,
            "pause" => Availability::Pause,
            "drain" => Availability::Drain,
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid availability {other:?}"),
                ));
            }
        };
    }
    if let Some(l) = b["Labels"].as_object() {
        spec.labels = l
            .iter()
            .map(|(k, x)| (k.clone(), x.as_str().unwrap_or_default().to_owned()))
            .collect();
    }
    if let Some(n) = b["Name"].as_str() {
        spec.name = n.to_owned();
    }
    mgr.update_node(&node.id, q.version, spec).await?;
    Ok(StatusCode::OK)
}

async fn node_remove(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ForceQuery>,
) -> ApiResult<StatusCode> {
    s.swarm()
        .manager()?
        .remove_node(&id, truthy(&q.force))
        .await?;
    Ok(StatusCode::OK)
}
