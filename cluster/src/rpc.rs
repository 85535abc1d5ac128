//! The messages nodes exchange over the cluster transport (JSON bodies of QUIC calls).
//!
//! Every struct is `#[serde(default)]` so that nodes of neighbouring versions understand
//! each other (a fleet is upgraded node by node): new fields are optional, unknown ones are
//! ignored.

use serde::{Deserialize, Serialize};
use shoal_store::Proposal;
use shoal_store::model::{NodeDescription, Role, Task, TaskStatus};

/// Method names.
pub mod method {
    /// A node without a certificate asks to join (anonymous, token-authenticated).
    pub const JOIN: &str = "join";
    /// A Raft message between managers (opaque store bytes).
    pub const RAFT: &str = "raft";
    /// A manager asks the leader to run an operation it cannot run itself.
    pub const LEADER_OP: &str = "leader";
    /// Every node's periodic session heartbeat with the leader's dispatcher.
    pub const HEARTBEAT: &str = "heartbeat";
    /// A node asks for a new certificate (renewal, role change, CA rotation).
    pub const RENEW: &str = "renew";
    /// A node reports task statuses and gets the tasks assigned to it (long poll).
    pub const TASKS: &str = "tasks";
    /// A manager reads the logs of tasks running on a node (served by every node).
    pub const LOGS: &str = "logs";
    /// A node fetches a chunk of an image archive from a peer that has the image (served
    /// by every node). The answer is raw: the archive's total size as 8 bytes big-endian,
    /// then the bytes from the requested offset.
    pub const IMAGE: &str = "image";
}

/// Error codes carried in remote errors.
pub mod code {
    pub const PERMISSION_DENIED: &str = "permission-denied";
    pub const INVALID_TOKEN: &str = "invalid-token";
    pub const NOT_LEADER: &str = "not-leader";
    pub const NO_QUORUM: &str = "no-quorum";
    pub const CONFLICT: &str = "conflict";
    pub const NOT_FOUND: &str = "not-found";
    pub const REMOVED: &str = "node-removed";
    pub const INVALID: &str = "invalid-argument";
    pub const LOCKED: &str = "locked";
    pub const INTERNAL: &str = "internal";
}

/// `join`: sent without a client certificate to a manager whose CA matches the token.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JoinRequest {
    /// The whole join token (`SWMTKN-1-…`); its secret decides the role.
    pub token: String,
    /// PEM CSR of the joiner's new key.
    pub csr: String,
    /// Where the joiner can be reached (`ip:port`).
    pub advertise_addr: String,
    pub description: NodeDescription,
}

/// The answer to a join.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JoinResponse {
    pub node_id: String,
    pub cluster_id: String,
    pub role: Role,
    /// The signed certificate chain (leaf first), PEM.
    pub certificate_chain: String,
    /// Trusted root CA certificates, PEM.
    pub roots: String,
    /// For a manager: its Raft ID.
    pub raft_id: u64,
    /// Manager addresses (`ip:port`) to reach the cluster.
    pub managers: Vec<String>,
}

/// Operations only the Raft leader can run, forwarded by other managers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LeaderOp {
    /// Replicate a proposal.
    Propose(Proposal),
    /// Make a manager (already admitted, now running its store) a Raft voter.
    AddManager { raft_id: u64, addr: String },
    /// Drop a manager from the Raft membership.
    RemoveManager { raft_id: u64 },
}

/// What a leader answers to a [`LeaderOp`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LeaderOpResponse {
    /// For proposals: the outcome, as the store reports it.
    pub outcome: Option<shoal_store::ApplyOutcome>,
}

/// A node's heartbeat: who it is and how it is.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HeartbeatRequest {
    pub node_id: String,
    pub description: NodeDescription,
    /// The role this node currently runs as.
    pub role: Role,
    /// Where it can be reached.
    pub addr: String,
    /// Digest of the root CA(s) it trusts, to learn about rotations.
    pub roots_digest: String,
}

/// The dispatcher's answer: how often to beat, who the managers are, and what the node
/// should become.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HeartbeatResponse {
    /// Seconds until the next heartbeat is due.
    pub period_ms: u64,
    /// Manager addresses, leader first.
    pub managers: Vec<String>,
    /// The role the cluster wants this node to have.
    pub desired_role: Role,
    /// For a manager: its Raft ID (assigned at promotion).
    pub raft_id: u64,
    /// The trusted roots (PEM) when they differ from the node's (CA rotation).
    pub roots: Option<String>,
    /// Set when the node must get a new certificate now (role change, CA rotation).
    pub renew: bool,
}

/// `renew`: a new certificate for the caller's own node ID.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RenewRequest {
    pub csr: String,
}

/// The renewed certificate.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RenewResponse {
    pub certificate_chain: String,
    pub roots: String,
    pub role: Role,
}

/// One task's observed status, as a node reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskReport {
    pub task_id: String,
    pub status: TaskStatus,
}

/// `tasks`: status changes since the last answered call, and the assignment version the
/// node already has (the call waits up to `wait_ms` for a newer one).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TasksRequest {
    pub node_id: String,
    pub reports: Vec<TaskReport>,
    /// The `version` of the last answer (0: none yet, answer at once).
    pub known_version: u64,
    /// How long the dispatcher may hold the call when nothing changed.
    pub wait_ms: u64,
}

/// Every task assigned to the node that it must act on (desired state up to Remove).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TasksResponse {
    /// A fingerprint of the assignment (what the node acts on).
    pub version: u64,
    pub tasks: Vec<Task>,
    /// The other ready nodes (where images can be fetched).
    pub peers: Vec<PeerNode>,
}

/// A node another node can call: its ID (the name its certificate answers to) and its
/// cluster address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerNode {
    pub node_id: String,
    pub addr: String,
}

/// `logs`: log records of some of the node's task containers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LogsRequest {
    pub task_ids: Vec<String>,
    /// Last N records per task.
    pub tail: Option<usize>,
    /// Records at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Records strictly after this time (a follower's cursor).
    pub after: Option<chrono::DateTime<chrono::Utc>>,
}

/// One line of a task's output.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogLine {
    pub task_id: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub time: chrono::DateTime<chrono::Utc>,
    /// Without the trailing newline.
    pub line: String,
}

/// The records, oldest first, and whether each task's container still runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LogsResponse {
    pub lines: Vec<LogLine>,
    /// Tasks whose container is still running (a follower keeps asking for these).
    pub running: Vec<String>,
}

/// `image`: a chunk of the OCI archive of an image the peer has (by manifest digest or
/// image ID). The first call (offset 0) makes the archive; later calls read it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageRequest {
    /// `sha256:<manifest digest>` or `sha256:<image id>`.
    pub digest: String,
    pub offset: u64,
}
