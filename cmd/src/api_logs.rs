//! `service logs` / task logs: lines gathered from every node that ran the tasks, as
//! newline-delimited JSON (`{"task_id", "task_name", "node_id", "node_name", "stream",
//! "time", "line"}`), oldest first; with `follow`, new lines as they are written.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use shoal_cluster::rpc::{LogLine, LogsRequest};
use shoal_store::model::{Node, Task};

use crate::api::{ApiError, AppState, optional_time, parse_tail, truthy};

type ApiResult<T> = Result<T, ApiError>;

/// How often a follower asks the nodes for new lines.
const FOLLOW_PERIOD: Duration = Duration::from_millis(250);

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct LogsQuery {
    follow: Option<String>,
    since: Option<String>,
    tail: Option<String>,
}

pub(crate) async fn service_logs(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let mgr = s.swarm().manager()?;
    let svc = mgr.service(&id)?;
    let tasks: Vec<Task> = mgr
        .tasks()?
        .into_iter()
        .filter(|t| t.service_id == svc.id)
        .collect();
    stream_logs(s, tasks, Some(svc.id), q).await
}

pub(crate) async fn task_logs(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let mgr = s.swarm().manager()?;
    let tasks: Vec<Task> = mgr
        .tasks()?
        .into_iter()
        .filter(|t| t.id == id || t.id.starts_with(&id))
        .collect();
    if tasks.len() != 1 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("task {id} not found"),
        ));
    }
    stream_logs(s, tasks, None, q).await
}

async fn stream_logs(
    s: AppState,
    tasks: Vec<Task>,
    follow_service: Option<String>,
    q: LogsQuery,
) -> ApiResult<Response> {
    let now = Utc::now();
    let since = optional_time(q.since.as_deref(), now)?;
    let tail = parse_tail(q.tail.as_deref())?;
    let follow = truthy(&q.follow);
    let mgr = s.swarm().manager()?;
    let req = LogsRequest {
        task_ids: Vec::new(),
        tail,
        since,
        after: None,
    };
    let first = shoal_cluster::node_rpc::gather_logs(&mgr, &tasks, &req).await;
    let names = Names::new(&mgr);
    let mut body = String::new();
    let mut cursor = None;
    for l in &first.lines {
        body.push_str(&names.render(l, &tasks));
        cursor = Some(l.time);
    }
    if !follow {
        return Ok(ndjson(Body::from(body)));
    }
    // Follow: the backlog, then poll the nodes for lines after the cursor. New tasks of
    // the service (replacements, scale-up) join as they appear.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
    let _ = tx.send(Ok(body)).await;
    tokio::spawn(async move {
        let mut tasks = tasks;
        let mut cursor = cursor.or(Some(now));
        loop {
            tokio::time::sleep(FOLLOW_PERIOD).await;
            if tx.is_closed() {
                return;
            }
            let Ok(mgr) = s.swarm().manager() else { return };
            if let Some(svc) = &follow_service
                && let Ok(all) = mgr.tasks()
            {
                tasks = all.into_iter().filter(|t| &t.service_id == svc).collect();
            }
            let req = LogsRequest {
                task_ids: Vec::new(),
                tail: None,
                since: None,
                after: cursor,
            };
            let got = shoal_cluster::node_rpc::gather_logs(&mgr, &tasks, &req).await;
            let names = Names::new(&mgr);
            let mut chunk = String::new();
            for l in &got.lines {
                chunk.push_str(&names.render(l, &tasks));
                cursor = Some(cursor.map_or(l.time, |c| c.max(l.time)));
            }
            if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream_from(rx);
    Ok(ndjson(Body::from_stream(stream)))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn ndjson(body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// Node names for the prefix.
struct Names {
    nodes: HashMap<String, String>,
}

impl Names {
    fn new(mgr: &shoal_cluster::Manager) -> Names {
        let nodes = mgr
            .store()
            .list::<Node>()
            .unwrap_or_default()
            .into_iter()
            .map(|n| (n.id.clone(), n.description.hostname.clone()))
            .collect();
        Names { nodes }
    }

    fn render(&self, l: &LogLine, tasks: &[Task]) -> String {
        let task = tasks.iter().find(|t| t.id == l.task_id);
        let node_id = task.map(|t| t.node_id.clone()).unwrap_or_default();
        let mut s = json!({
            "task_id": l.task_id,
            "task_name": task.map(|t| t.name()).unwrap_or_default(),
            "node_id": node_id,
            "node_name": self.nodes.get(&node_id).cloned().unwrap_or_default(),
            "stream": l.stream,
            "time": l.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "line": l.line,
        })
        .to_string();
        s.push('\n');
        s
    }
}
