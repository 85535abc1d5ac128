//! Raft messages as bytes: the wire encoding, the openraft network adaptor over a
//! [`RaftTransport`], and the inbound handler.
//!
//! Requests are JSON objects `{"v":1,"rpc":"append"|"vote"|"snapshot","body":…}`; answers
//! are `{"v":1,"ok":…}`, `{"v":1,"api":…}` (an install-snapshot refusal openraft acts on) or
//! `{"v":1,"error":{"code":…,"message":…}}`. A receiver refuses a `v` it does not know with
//! the code `unsupported_version`, so a mixed-version fleet fails loudly, not subtly.
//! Snapshot chunks carry their bytes in base64.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::future::BoxFuture;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::raft_types::{Node, NodeId, Raft, SnapshotMeta, TypeConfig, Vote};

/// Version of the wire encoding this build speaks.
pub(crate) const WIRE_VERSION: u32 = 1;

/// Moves opaque store messages between managers. The cluster crate implements it over
/// QUIC with mutual TLS; tests route in-process.
pub trait RaftTransport: Send + Sync + 'static {
    /// Delivers an opaque store message to the manager `target` at `addr`, returns its
    /// answer (what that manager's [`crate::Store::handle_message`] returned).
    fn call(
        &self,
        target: u64,
        addr: String,
        message: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
}

/// Why a message could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The manager cannot be reached (no route, refused, not listening, timed out
    /// connecting): Raft backs off before trying it again.
    #[error("manager {target} at {addr} is unreachable: {source}")]
    Unreachable {
        target: u64,
        addr: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The exchange failed after reaching the manager (stream reset, refused by the
    /// remote, …): Raft retries at once.
    #[error("exchange with manager {target} at {addr} failed: {source}")]
    Failed {
        target: u64,
        addr: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Errors of the wire encoding, as the sending side sees them.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot encode a {rpc} message for manager {target}: {source}")]
    Encode {
        rpc: &'static str,
        target: u64,
        source: serde_json::Error,
    },
    #[error("manager {target} at {addr} sent an answer that cannot be decoded: {source}")]
    Decode {
        target: u64,
        addr: String,
        source: serde_json::Error,
    },
    #[error("manager {target} at {addr} answered {code}: {message}")]
    Remote {
        target: u64,
        addr: String,
        code: String,
        message: String,
    },
}

/// A snapshot chunk on the wire (openraft's `InstallSnapshotRequest`, bytes in base64).
#[derive(Serialize, Deserialize)]
struct SnapshotChunk {
    vote: Vote,
    meta: SnapshotMeta,
    offset: u64,
    data: String,
    done: bool,
}

/// An outbound request: `{"v":1,"rpc":…,"body":…}`.
#[derive(Serialize)]
struct WireRequest<'a, T> {
    v: u32,
    rpc: &'static str,
    body: &'a T,
}

/// The envelope of an inbound request, read first (the body is skipped, not buffered:
/// buffering would break openraft's integer-keyed maps).
#[derive(Deserialize)]
struct WireHeader {
    #[serde(default)]
    v: u32,
    #[serde(default)]
    rpc: String,
}

/// The body of an inbound request, read once its type is known.
#[derive(Deserialize)]
struct WireBody<T> {
    body: T,
}

const RPC_APPEND: &str = "append";
const RPC_VOTE: &str = "vote";
const RPC_SNAPSHOT: &str = "snapshot";

#[derive(Serialize, Deserialize)]
struct WireFailure {
    code: String,
    message: String,
}

#[derive(Serialize, Deserialize)]
struct WireReply<T> {
    #[serde(default)]
    v: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<InstallSnapshotError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<WireFailure>,
}

const CODE_STOPPED: &str = "stopped";
const CODE_BAD_REQUEST: &str = "bad_request";
const CODE_UNSUPPORTED_VERSION: &str = "unsupported_version";

fn reply<T: Serialize>(r: WireReply<T>) -> Vec<u8> {
    serde_json::to_vec(&r).unwrap_or_else(|e| {
        // Our reply types are plain data; this is not expected. Answer something the
        // sender can decode rather than nothing.
        tracing::error!(error = %e, "cannot encode a raft reply");
        format!(r#"{{"v":{WIRE_VERSION},"error":{{"code":"internal","message":"cannot encode reply"}}}}"#)
            .into_bytes()
    })
}

fn ok<T: Serialize>(value: T) -> Vec<u8> {
    reply(WireReply {
        v: WIRE_VERSION,
        ok: Some(value),
        api: None,
        error: None,
    })
}

fn failure(code: &str, message: String) -> Vec<u8> {
    reply::<()>(WireReply {
        v: WIRE_VERSION,
        ok: None,
        api: None,
        error: Some(WireFailure {
            code: code.to_owned(),
            message,
        }),
    })
}

/// Decodes an inbound message, hands it to the local Raft, encodes the answer. Never
/// fails: problems are answered as error replies.
pub(crate) async fn handle_message(raft: &Raft, message: &[u8]) -> Vec<u8> {
    let header: WireHeader = match serde_json::from_slice(message) {
        Ok(h) => h,
        Err(e) => return failure(CODE_BAD_REQUEST, format!("undecodable raft message: {e}")),
    };
    if header.v > WIRE_VERSION {
        return failure(
            CODE_UNSUPPORTED_VERSION,
            format!(
                "raft message version {} is newer than this manager's ({WIRE_VERSION}): upgrade it",
                header.v
            ),
        );
    }
    fn body<T: DeserializeOwned>(message: &[u8], rpc: &str) -> Result<T, Vec<u8>> {
        serde_json::from_slice::<WireBody<T>>(message)
            .map(|b| b.body)
            .map_err(|e| {
                failure(
                    CODE_BAD_REQUEST,
                    format!("undecodable raft {rpc} message: {e}"),
                )
            })
    }
    match header.rpc.as_str() {
        RPC_APPEND => {
            let req: AppendEntriesRequest<TypeConfig> = match body(message, RPC_APPEND) {
                Ok(r) => r,
                Err(answer) => return answer,
            };
            match raft.append_entries(req).await {
                Ok(r) => ok(r),
                Err(RaftError::Fatal(f)) => failure(CODE_STOPPED, f.to_string()),
                Err(RaftError::APIError(never)) => match never {},
            }
        }
        RPC_VOTE => {
            let req: VoteRequest<NodeId> = match body(message, RPC_VOTE) {
                Ok(r) => r,
                Err(answer) => return answer,
            };
            match raft.vote(req).await {
                Ok(r) => ok(r),
                Err(RaftError::Fatal(f)) => failure(CODE_STOPPED, f.to_string()),
                Err(RaftError::APIError(never)) => match never {},
            }
        }
        RPC_SNAPSHOT => {
            let chunk: SnapshotChunk = match body(message, RPC_SNAPSHOT) {
                Ok(r) => r,
                Err(answer) => return answer,
            };
            let data = match STANDARD.decode(&chunk.data) {
                Ok(d) => d,
                Err(e) => {
                    return failure(
                        CODE_BAD_REQUEST,
                        format!("snapshot chunk is not base64: {e}"),
                    );
                }
            };
            let req = InstallSnapshotRequest {
                vote: chunk.vote,
                meta: chunk.meta,
                offset: chunk.offset,
                data,
                done: chunk.done,
            };
            match raft.install_snapshot(req).await {
                Ok(r) => ok(r),
                Err(RaftError::APIError(e)) => reply::<()>(WireReply {
                    v: WIRE_VERSION,
                    ok: None,
                    api: Some(e),
                    error: None,
                }),
                Err(RaftError::Fatal(f)) => failure(CODE_STOPPED, f.to_string()),
            }
        }
        other => failure(CODE_BAD_REQUEST, format!("unknown raft rpc {other:?}")),
    }
}

/// The leader's view of which peers answer: the last time each one did.
pub(crate) struct PeerHealth {
    last_ok: Mutex<HashMap<NodeId, Instant>>,
    window: Duration,
}

impl PeerHealth {
    pub(crate) fn new(window: Duration) -> PeerHealth {
        PeerHealth {
            last_ok: Mutex::new(HashMap::new()),
            window,
        }
    }

    fn record_ok(&self, id: NodeId) {
        let mut m = self.last_ok.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(id, Instant::now());
    }

    /// Whether `id` answered within the window.
    pub(crate) fn reachable(&self, id: NodeId) -> bool {
        let m = self.last_ok.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&id).is_some_and(|t| t.elapsed() <= self.window)
    }
}

/// Builds a [`Peer`] per replication target (openraft's `RaftNetworkFactory`).
pub(crate) struct Network {
    transport: Arc<dyn RaftTransport>,
    health: Arc<PeerHealth>,
    backoff: Duration,
}

impl Network {
    pub(crate) fn new(
        transport: Arc<dyn RaftTransport>,
        health: Arc<PeerHealth>,
        backoff: Duration,
    ) -> Network {
        Network {
            transport,
            health,
            backoff,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            health: self.health.clone(),
            backoff: self.backoff,
        }
    }
}

/// Sends Raft RPCs to one manager (openraft's `RaftNetwork`).
pub(crate) struct Peer {
    target: NodeId,
    addr: String,
    transport: Arc<dyn RaftTransport>,
    health: Arc<PeerHealth>,
    backoff: Duration,
}

/// How a call failed, before it is shaped into openraft's error for the RPC.
enum CallError {
    Unreachable(Unreachable),
    Network(NetworkError),
    Api(InstallSnapshotError),
}

impl CallError {
    fn into_rpc<E: std::error::Error>(
        self,
        target: NodeId,
        api: impl FnOnce(InstallSnapshotError) -> Option<E>,
    ) -> RPCError<NodeId, Node, RaftError<NodeId, E>> {
        match self {
            CallError::Unreachable(u) => RPCError::Unreachable(u),
            CallError::Network(n) => RPCError::Network(n),
            CallError::Api(e) => {
                let message = e.to_string();
                match api(e) {
                    Some(e) => {
                        RPCError::RemoteError(RemoteError::new(target, RaftError::APIError(e)))
                    }
                    None => RPCError::Network(NetworkError::new(&WireError::Remote {
                        target,
                        addr: String::new(),
                        code: "api".to_owned(),
                        message,
                    })),
                }
            }
        }
    }
}

impl Peer {
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        rpc: &'static str,
        body: &B,
    ) -> Result<T, CallError> {
        let req = WireRequest {
            v: WIRE_VERSION,
            rpc,
            body,
        };
        let bytes = serde_json::to_vec(&req).map_err(|source| {
            CallError::Network(NetworkError::new(&WireError::Encode {
                rpc,
                target: self.target,
                source,
            }))
        })?;
        let answer = match self
            .transport
            .call(self.target, self.addr.clone(), bytes)
            .await
        {
            Ok(a) => a,
            Err(e @ TransportError::Unreachable { .. }) => {
                return Err(CallError::Unreachable(Unreachable::new(&e)));
            }
            Err(e @ TransportError::Failed { .. }) => {
                return Err(CallError::Network(NetworkError::new(&e)));
            }
        };
        let reply: WireReply<T> = serde_json::from_slice(&answer).map_err(|source| {
            CallError::Network(NetworkError::new(&WireError::Decode {
                target: self.target,
                addr: self.addr.clone(),
                source,
            }))
        })?;
        // Any well-formed answer means the manager is up.
        self.health.record_ok(self.target);
        if let Some(v) = reply.ok {
            return Ok(v);
        }
        if let Some(e) = reply.api {
            return Err(CallError::Api(e));
        }
        let (code, message) = match reply.error {
            Some(f) => (f.code, f.message),
            None => (
                "empty".to_owned(),
                "an answer with neither result nor error".to_owned(),
            ),
        };
        let err = WireError::Remote {
            target: self.target,
            addr: self.addr.clone(),
            code,
            message,
        };
        // A stopping manager is as good as unreachable: back off.
        match &err {
            WireError::Remote { code, .. } if code == CODE_STOPPED => {
                Err(CallError::Unreachable(Unreachable::new(&err)))
            }
            _ => Err(CallError::Network(NetworkError::new(&err))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(RPC_APPEND, &rpc)
            .await
            .map_err(|e| e.into_rpc(self.target, |_| None))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let chunk = SnapshotChunk {
            vote: rpc.vote,
            meta: rpc.meta,
            offset: rpc.offset,
            data: STANDARD.encode(&rpc.data),
            done: rpc.done,
        };
        self.call(RPC_SNAPSHOT, &chunk)
            .await
            .map_err(|e| e.into_rpc(self.target, Some))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(RPC_VOTE, &rpc)
            .await
            .map_err(|e| e.into_rpc(self.target, |_| None))
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.backoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_envelope_shape() {
        let body = VoteRequest::new(Vote::new(3, 7), None);
        let bytes = serde_json::to_vec(&WireRequest {
            v: WIRE_VERSION,
            rpc: RPC_VOTE,
            body: &body,
        })
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["rpc"], "vote");
        assert!(v["body"].is_object());
        // And back, in two passes as the receiver reads it.
        let h: WireHeader = serde_json::from_slice(&bytes).unwrap();
        assert_eq!((h.v, h.rpc.as_str()), (1, "vote"));
        let b: WireBody<VoteRequest<NodeId>> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(b.body, body);
    }

    #[test]
    fn append_with_a_membership_entry_round_trips() {
        // Membership maps are keyed by integers: they must survive the envelope.
        use std::collections::{BTreeMap, BTreeSet};
        let nodes = BTreeMap::from([
            (1u64, Node { addr: "a:1".into() }),
            (2, Node { addr: "b:2".into() }),
        ]);
        let m = openraft::Membership::new(vec![BTreeSet::from([1u64, 2])], nodes);
        let entry = openraft::Entry::<TypeConfig> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(2, 1), 5),
            payload: openraft::EntryPayload::Membership(m),
        };
        let body = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 1),
            prev_log_id: None,
            entries: vec![entry],
            leader_commit: None,
        };
        let bytes = serde_json::to_vec(&WireRequest {
            v: WIRE_VERSION,
            rpc: RPC_APPEND,
            body: &body,
        })
        .unwrap();
        let b: WireBody<AppendEntriesRequest<TypeConfig>> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(b.body.vote, body.vote);
        assert_eq!(b.body.entries, body.entries);
    }

    #[test]
    fn reply_envelope_shape() {
        let r: serde_json::Value =
            serde_json::from_slice(&failure(CODE_STOPPED, "x".into())).unwrap();
        assert_eq!(r["v"], 1);
        assert_eq!(r["error"]["code"], "stopped");
        assert!(r.get("ok").is_none());
        let r: WireReply<u64> = serde_json::from_slice(&ok(5u64)).unwrap();
        assert_eq!(r.ok, Some(5));
        // Unknown fields from a newer sender are ignored.
        let r: WireReply<u64> = serde_json::from_str(r#"{"v":1,"ok":3,"trace":"abc"}"#).unwrap();
        assert_eq!(r.ok, Some(3));
    }
}
