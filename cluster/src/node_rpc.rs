//! Calls every node answers, manager or worker: task logs (a manager merges them for
//! `service logs`) and image content (a node that lacks a task's image fetches it from a
//! peer that has it, so an image imported once on any node runs on all of them).
//!
//! Image transfer: the serving node exports the image as an OCI archive (the same format
//! `image save` writes) into a cache file and serves it in chunks; the fetching node
//! writes the chunks to a private file and imports it through the regular import path,
//! which verifies every blob against its digest — a peer cannot slip in other content.

use std::io::SeekFrom;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use shoal_image::ImageRecord;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::engine::Engine;
use crate::pki;
use crate::rpc::{LogLine, LogsRequest, LogsResponse, PeerNode, code, method};
use crate::swarm::{Member, remote};
use crate::transport::{Endpoint, Peer, RemoteError};

/// Errors of node calls made from this node (logs from a peer, images from a peer).
#[derive(Debug, thiserror::Error)]
pub enum NodeRpcError {
    #[error("invalid node address {addr}")]
    Address { addr: String },
    #[error("call to {addr} failed: {source}")]
    Call {
        addr: String,
        #[source]
        source: crate::transport::TransportError,
    },
    #[error("cannot encode or decode a {what} message: {source}")]
    Codec {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} sent a short or shrinking archive of {digest}")]
    Truncated { addr: String, digest: String },
    #[error("cannot import {digest} from {addr}: {source}")]
    Import {
        addr: String,
        digest: String,
        #[source]
        source: shoal_image::ImageError,
    },
    #[error("the archive of {digest} from {addr} held no image")]
    Empty { addr: String, digest: String },
    #[error("no peer has {digest}")]
    NoPeer { digest: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NodeRpcError {
    let path = path.to_owned();
    move |source| NodeRpcError::Io { op, path, source }
}

/// The label that ties a container to its task.
pub const TASK_LABEL: &str = "com.docker.swarm.task.id";

/// Bytes per image chunk.
const CHUNK: u64 = 8 * 1024 * 1024;

/// How long a made archive is kept for other fetchers.
const CACHE_TTL: Duration = Duration::from_secs(600);

/// Routes a node call.
pub(crate) async fn handle(
    member: &Member,
    peer: &Peer,
    method_name: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, RemoteError> {
    let Some(id) = &peer.identity else {
        return Err(remote(
            code::PERMISSION_DENIED,
            "a node certificate is required",
        ));
    };
    let cluster_id = member
        .state
        .read()
        .map(|s| s.cluster_id.clone())
        .unwrap_or_default();
    if id.cluster_id != cluster_id {
        return Err(remote(
            code::PERMISSION_DENIED,
            "certificate of another cluster",
        ));
    }
    match method_name {
        method::LOGS => {
            if id.role != pki::Role::Manager {
                return Err(remote(
                    code::PERMISSION_DENIED,
                    format!("permission denied: {} is not a manager", id.node_id),
                ));
            }
            let req: LogsRequest = serde_json::from_slice(&body)
                .map_err(|e| remote(code::INVALID, format!("bad logs request: {e}")))?;
            let resp = local_logs(&member.engine, &req).await;
            serde_json::to_vec(&resp).map_err(|e| remote(code::INTERNAL, e.to_string()))
        }
        method::IMAGE => {
            let req: crate::rpc::ImageRequest = serde_json::from_slice(&body)
                .map_err(|e| remote(code::INVALID, format!("bad image request: {e}")))?;
            serve_image(&member.engine, &member.paths.image_cache(), &req).await
        }
        other => Err(remote(code::INVALID, format!("unknown method {other}"))),
    }
}

/// Whether a method is a node call (not a manager one).
pub(crate) fn is_node_method(m: &str) -> bool {
    m == method::LOGS || m == method::IMAGE
}

// ----- logs ---------------------------------------------------------------------------

/// The log lines of this node's containers of the given tasks.
pub(crate) async fn local_logs(engine: &Engine, req: &LogsRequest) -> LogsResponse {
    let mut out = LogsResponse::default();
    for c in engine.runtime.list(true) {
        let Some(task_id) = c.record.config.labels.get(TASK_LABEL) else {
            continue;
        };
        if !req.task_ids.iter().any(|t| t == task_id) {
            continue;
        }
        if c.state().running {
            out.running.push(task_id.clone());
        }
        let opts = shoal_runtime::logs::ReadOptions {
            tail: req.tail,
            since: req.since,
            ..Default::default()
        };
        let Ok(mut stream) = engine.runtime.logs(&c.record.id, opts, false) else {
            continue;
        };
        while let Some(r) = stream.next().await {
            let Ok(r) = r else { break };
            if req.after.is_some_and(|a| r.time <= a) {
                continue;
            }
            let mut line = String::from_utf8_lossy(&r.line).into_owned();
            if line.ends_with('\n') {
                line.pop();
            }
            out.lines.push(LogLine {
                task_id: task_id.clone(),
                stream: r.stream.as_str().to_owned(),
                time: r.time,
                line,
            });
        }
    }
    out.lines.sort_by_key(|l| l.time);
    out
}

/// Asks a node for task logs (its certificate must name `node_id`).
pub async fn remote_logs(
    endpoint: &Endpoint,
    node_id: &str,
    addr: &str,
    req: &LogsRequest,
) -> Result<LogsResponse, NodeRpcError> {
    let sa: SocketAddr = addr.parse().map_err(|_| NodeRpcError::Address {
        addr: addr.to_owned(),
    })?;
    let body = serde_json::to_vec(req).map_err(|source| NodeRpcError::Codec {
        what: "logs",
        source,
    })?;
    let out = endpoint
        .call_with_timeout(sa, node_id, method::LOGS, body, Duration::from_secs(10))
        .await
        .map_err(|source| NodeRpcError::Call {
            addr: addr.to_owned(),
            source,
        })?;
    serde_json::from_slice(&out).map_err(|source| NodeRpcError::Codec {
        what: "logs",
        source,
    })
}

// ----- images --------------------------------------------------------------------------

/// The local image with this manifest digest or ID.
pub fn find_image(engine: &Engine, digest: &str) -> Option<ImageRecord> {
    engine.images.list().into_iter().find(|r| {
        r.manifest_digest == digest
            || r.id == digest
            || r.repo_digests
                .iter()
                .any(|d| d.ends_with(&format!("@{digest}")))
    })
}

fn cache_file(dir: &Path, digest: &str) -> PathBuf {
    dir.join(format!("{}.tar", digest.trim_start_matches("sha256:")))
}

async fn serve_image(
    engine: &Engine,
    dir: &Path,
    req: &crate::rpc::ImageRequest,
) -> Result<Vec<u8>, RemoteError> {
    let hex = req.digest.trim_start_matches("sha256:");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(remote(
            code::INVALID,
            format!("invalid digest {}", req.digest),
        ));
    }
    let Some(image) = find_image(engine, &req.digest) else {
        return Err(remote(code::NOT_FOUND, format!("no image {}", req.digest)));
    };
    let path = cache_file(dir, &req.digest);
    if req.offset == 0 {
        make_archive(engine, dir, &path, &image).await?;
    }
    let mut f = tokio::fs::File::open(&path)
        .await
        .map_err(|e| remote(code::NOT_FOUND, format!("image archive gone: {e}")))?;
    let total = f
        .metadata()
        .await
        .map_err(|e| remote(code::INTERNAL, e.to_string()))?
        .len();
    let start = req.offset.min(total);
    f.seek(SeekFrom::Start(start))
        .await
        .map_err(|e| remote(code::INTERNAL, e.to_string()))?;
    let n = (total - start).min(CHUNK);
    let mut out = Vec::with_capacity(8 + n as usize);
    out.extend_from_slice(&total.to_be_bytes());
    let mut take = f.take(n);
    take.read_to_end(&mut out)
        .await
        .map_err(|e| remote(code::INTERNAL, e.to_string()))?;
    Ok(out)
}

/// Exports the image once into the cache (concurrent fetchers share it).
async fn make_archive(
    engine: &Engine,
    dir: &Path,
    path: &Path,
    image: &ImageRecord,
) -> Result<(), RemoteError> {
    static MAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _g = MAKING.lock().await;
    let internal = |e: std::io::Error| remote(code::INTERNAL, e.to_string());
    tokio::fs::create_dir_all(dir).await.map_err(internal)?;
    // Old archives go.
    if let Ok(mut rd) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(e)) = rd.next_entry().await {
            let old = e
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > CACHE_TTL);
            if old && e.path() != path {
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
    }
    if tokio::fs::metadata(path).await.is_ok() {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    let f = tokio::fs::File::create(&tmp).await.map_err(internal)?;
    engine
        .images
        .export(std::slice::from_ref(&image.id), f)
        .await
        .map_err(|e| remote(code::INTERNAL, e.to_string()))?;
    tokio::fs::rename(&tmp, path).await.map_err(internal)?;
    Ok(())
}

/// Fetches an image by digest from the first peer that has it and imports it. Returns the
/// imported record.
pub async fn fetch_image(
    engine: &Engine,
    endpoint: &Endpoint,
    dir: &Path,
    peers: &[PeerNode],
    digest: &str,
) -> Result<ImageRecord, NodeRpcError> {
    let mut last = NodeRpcError::NoPeer {
        digest: digest.to_owned(),
    };
    for peer in peers {
        match fetch_from(engine, endpoint, dir, peer, digest).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                tracing::debug!(peer = %peer.addr, %digest, error = %e, "image fetch from peer failed");
                last = e;
            }
        }
    }
    Err(last)
}

async fn fetch_from(
    engine: &Engine,
    endpoint: &Endpoint,
    dir: &Path,
    peer: &PeerNode,
    digest: &str,
) -> Result<ImageRecord, NodeRpcError> {
    let addr = peer.addr.clone();
    let sa: SocketAddr = addr
        .parse()
        .map_err(|_| NodeRpcError::Address { addr: addr.clone() })?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(io_err("create", dir))?;
    let part = dir.join(format!(
        "fetch-{}-{}.part",
        digest.trim_start_matches("sha256:"),
        shoal_runtime::names::new_id()
    ));
    let result = async {
        let mut f = tokio::fs::File::create(&part)
            .await
            .map_err(io_err("create", &part))?;
        let mut offset = 0u64;
        loop {
            let body = serde_json::to_vec(&crate::rpc::ImageRequest {
                digest: digest.to_owned(),
                offset,
            })
            .map_err(|source| NodeRpcError::Codec {
                what: "image",
                source,
            })?;
            let out = endpoint
                .call_with_timeout(
                    sa,
                    &peer.node_id,
                    method::IMAGE,
                    body,
                    Duration::from_secs(60),
                )
                .await
                .map_err(|source| NodeRpcError::Call {
                    addr: addr.clone(),
                    source,
                })?;
            let truncated = || NodeRpcError::Truncated {
                addr: addr.clone(),
                digest: digest.to_owned(),
            };
            let (total, data) = out.split_first_chunk::<8>().ok_or_else(truncated)?;
            let total = u64::from_be_bytes(*total);
            f.write_all(data).await.map_err(io_err("write", &part))?;
            offset += data.len() as u64;
            if offset >= total {
                break;
            }
            if data.is_empty() {
                return Err(truncated());
            }
        }
        f.flush().await.map_err(io_err("write", &part))?;
        drop(f);
        let file = tokio::fs::File::open(&part)
            .await
            .map_err(io_err("open", &part))?;
        let records = engine
            .images
            .import(file, None, shoal_image::ProgressSink::none())
            .await
            .map_err(|source| NodeRpcError::Import {
                addr: addr.clone(),
                digest: digest.to_owned(),
                source,
            })?;
        records
            .into_iter()
            .next()
            .ok_or_else(|| NodeRpcError::Empty {
                addr: addr.clone(),
                digest: digest.to_owned(),
            })
    }
    .await;
    let _ = tokio::fs::remove_file(&part).await;
    result
}

/// The log lines of `tasks`, gathered from the nodes they ran on (this node directly),
/// oldest first. Nodes that cannot be reached are skipped with a warning line in the
/// log of the daemon (as Docker, `service logs` shows what it can get).
pub async fn gather_logs(
    mgr: &crate::Manager,
    tasks: &[shoal_store::model::Task],
    req: &LogsRequest,
) -> LogsResponse {
    let mut out = LogsResponse::default();
    let Some(member) = mgr.member() else {
        return out;
    };
    let self_id = member.node_id();
    let nodes = mgr
        .store()
        .list::<shoal_store::model::Node>()
        .unwrap_or_default();
    let mut by_node: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for t in tasks.iter().filter(|t| !t.node_id.is_empty()) {
        by_node.entry(&t.node_id).or_default().push(t.id.clone());
    }
    let calls = by_node.into_iter().map(|(node, ids)| {
        let mut r = req.clone();
        r.task_ids = ids;
        let addr = nodes
            .iter()
            .find(|n| n.id == node)
            .map(|n| n.cluster_addr.clone())
            .unwrap_or_default();
        let local = node == self_id;
        let member = member.clone();
        async move {
            if local {
                Ok(local_logs(&member.engine, &r).await)
            } else {
                remote_logs(&member.endpoint, node, &addr, &r).await
            }
        }
    });
    for (i, r) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        match r {
            Ok(mut r) => {
                out.lines.append(&mut r.lines);
                out.running.append(&mut r.running);
            }
            Err(e) => tracing::warn!(call = i, error = %e, "cannot read task logs from a node"),
        }
    }
    out.lines.sort_by_key(|l| l.time);
    out
}
