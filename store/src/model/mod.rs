//! The cluster's objects, shaped as Docker Swarm's (SwarmKit's `api` types, trimmed).
//!
//! Encoding: JSON through serde. Every struct is `#[serde(default)]` and unknown fields are
//! ignored, so a manager running an older or newer shoal reads the other's objects: missing
//! fields take their default, extra fields are dropped. Durations are integer nanoseconds,
//! as Docker's API encodes them. Enums are lowercase strings.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::command::Object;

mod service;
pub use service::*;

/// Bookkeeping every stored object carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Meta {
    /// Raft index of the last write of this object: the optimistic-concurrency token an
    /// update must carry.
    pub version: u64,
    /// When the object was created (the proposer's clock, so every manager agrees).
    pub created_at: DateTime<Utc>,
    /// When the object was last updated (the proposer's clock).
    pub updated_at: DateTime<Utc>,
}

/// The kinds of objects the store holds; one redb table each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Cluster,
    Node,
    Service,
    Task,
    Network,
    Secret,
    Config,
    Volume,
}

impl ObjectKind {
    /// Every kind, in table order.
    pub const ALL: [ObjectKind; 8] = [
        ObjectKind::Cluster,
        ObjectKind::Node,
        ObjectKind::Service,
        ObjectKind::Task,
        ObjectKind::Network,
        ObjectKind::Secret,
        ObjectKind::Config,
        ObjectKind::Volume,
    ];

    /// The lowercase name used in encodings and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Cluster => "cluster",
            ObjectKind::Node => "node",
            ObjectKind::Service => "service",
            ObjectKind::Task => "task",
            ObjectKind::Network => "network",
            ObjectKind::Secret => "secret",
            ObjectKind::Config => "config",
            ObjectKind::Volume => "volume",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A type the store can hold: typed access for [`crate::Store::get`] and
/// [`crate::Store::list`].
pub trait StoredObject: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Which table the type lives in.
    const KIND: ObjectKind;
    /// The object's ID (unique within its kind).
    fn id(&self) -> &str;
    /// Its bookkeeping.
    fn meta(&self) -> &Meta;
    /// Its bookkeeping, mutable (callers set `meta.version` before an update).
    fn meta_mut(&mut self) -> &mut Meta;
    /// Wraps it for a proposal.
    fn into_object(self) -> Object;
    /// Borrows it out of an [`Object`] of the right kind.
    fn from_object(object: &Object) -> Option<&Self>;
}

macro_rules! stored_object {
    ($ty:ident, $kind:ident) => {
        impl StoredObject for $ty {
            const KIND: ObjectKind = ObjectKind::$kind;
            fn id(&self) -> &str {
                &self.id
            }
            fn meta(&self) -> &Meta {
                &self.meta
            }
            fn meta_mut(&mut self) -> &mut Meta {
                &mut self.meta
            }
            fn into_object(self) -> Object {
                Object::$kind(self)
            }
            fn from_object(object: &Object) -> Option<&Self> {
                match object {
                    Object::$kind(o) => Some(o),
                    _ => None,
                }
            }
        }
    };
}

stored_object!(Cluster, Cluster);
stored_object!(Node, Node);
stored_object!(Service, Service);
stored_object!(Task, Task);
stored_object!(Network, Network);
stored_object!(Secret, Secret);
stored_object!(Config, Config);
stored_object!(Volume, Volume);

// ---------------------------------------------------------------------------------------
// Cluster

/// The cluster: its settings, root CA and join tokens (one object, as in Swarm).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cluster {
    pub id: String,
    pub meta: Meta,
    pub spec: ClusterSpec,
    pub root_ca: RootCa,
    /// Address pools tasks get their addresses from (CIDRs).
    pub default_addr_pool: Vec<String>,
    /// Prefix length of the per-node blocks cut from the pools.
    pub subnet_size: u32,
    /// Node IDs whose certificates are refused (removed nodes).
    pub removed_nodes: Vec<String>,
    /// The current unlock key (`SWMKEY-1-…`) when managers are autolocked, as SwarmKit
    /// keeps it in the cluster object so any manager can show it; empty otherwise.
    pub unlock_key: String,
}

/// What `swarm init` / `swarm update` set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterSpec {
    /// Always "default" in Swarm.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub orchestration: OrchestrationConfig,
    pub raft: RaftConfig,
    pub dispatcher: DispatcherConfig,
    pub ca_config: CaConfig,
    pub encryption: EncryptionConfig,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            name: "default".to_owned(),
            labels: BTreeMap::new(),
            orchestration: OrchestrationConfig::default(),
            raft: RaftConfig::default(),
            dispatcher: DispatcherConfig::default(),
            ca_config: CaConfig::default(),
            encryption: EncryptionConfig::default(),
        }
    }
}

/// Orchestrator settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrchestrationConfig {
    /// Dead tasks kept per slot (`--task-history-limit`, default 5).
    pub task_history_retention_limit: i64,
}

impl Default for OrchestrationConfig {
    fn default() -> Self {
        OrchestrationConfig {
            task_history_retention_limit: 5,
        }
    }
}

/// Raft settings, as Swarm shows them in `docker info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RaftConfig {
    /// Log entries between snapshots (default 10000).
    pub snapshot_interval: u64,
    /// Older snapshots kept (default 0).
    pub keep_old_snapshots: u64,
    /// Log entries kept after a snapshot for followers that lag (default 500).
    pub log_entries_for_slow_followers: u64,
    /// Ticks without a leader before an election (Swarm default 10).
    pub election_tick: u32,
    /// Ticks between heartbeats (Swarm default 1).
    pub heartbeat_tick: u32,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            snapshot_interval: 10_000,
            keep_old_snapshots: 0,
            log_entries_for_slow_followers: 500,
            election_tick: 10,
            heartbeat_tick: 1,
        }
    }
}

/// Dispatcher settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DispatcherConfig {
    /// How often agents heartbeat (`--dispatcher-heartbeat`, default 5 s).
    #[serde(with = "nanos")]
    pub heartbeat_period: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            heartbeat_period: Duration::from_secs(5),
        }
    }
}

/// Certificate authority settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaConfig {
    /// Validity of node certificates (`--cert-expiry`, default 90 days).
    #[serde(with = "nanos")]
    pub node_cert_expiry: Duration,
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            node_cert_expiry: Duration::from_secs(2160 * 3600),
        }
    }
}

/// At-rest encryption settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EncryptionConfig {
    /// Managers need the unlock key after a restart (`--autolock`).
    pub auto_lock_managers: bool,
}

/// The cluster's root CA and its join tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RootCa {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// Digest of the CA certificate, as join tokens carry it.
    pub ca_cert_digest: String,
    pub join_tokens: JoinTokens,
    /// Set while a CA rotation is in progress.
    pub rotation: Option<RootRotation>,
}

/// The current join tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JoinTokens {
    pub worker: String,
    pub manager: String,
}

/// A root CA rotation in progress: the new CA and its certificate cross-signed by the old.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RootRotation {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cross_signed_ca_cert_pem: String,
}

// ---------------------------------------------------------------------------------------
// Node

/// A member of the cluster (worker or manager).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Node {
    pub id: String,
    pub meta: Meta,
    pub spec: NodeSpec,
    pub description: NodeDescription,
    pub status: NodeStatus,
    /// Present for managers.
    pub manager_status: Option<ManagerStatus>,
    pub certificate: NodeCertificate,
    /// The role the node currently runs as (the spec holds the desired one).
    pub role: Role,
    /// Where the node's cluster port answers (`ip:port`): managers fetch task logs there
    /// and nodes fetch image content from each other.
    pub cluster_addr: String,
}

/// What an operator sets on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Desired role.
    pub role: Role,
    pub membership: Membership,
    pub availability: Availability,
}

/// What a node reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeDescription {
    pub hostname: String,
    pub platform: Platform,
    pub resources: Resources,
    pub engine: Engine,
}

/// OS and architecture.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

/// Resources a node offers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    pub nano_cpus: i64,
    pub memory_bytes: i64,
}

/// The engine running on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Engine {
    pub engine_version: String,
    pub labels: BTreeMap<String, String>,
}

/// The node's health as the dispatcher sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeStatus {
    pub state: NodeState,
    pub message: String,
    /// The address the node was seen at.
    pub addr: String,
}

/// A manager's place in Raft.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ManagerStatus {
    pub raft_id: u64,
    /// Advertised `ip:port`.
    pub addr: String,
    pub leader: bool,
    pub reachability: Reachability,
}

/// The node's current certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeCertificate {
    pub role: Role,
    pub certificate_pem: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Worker or manager.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Worker,
    Manager,
}

/// Whether the scheduler may place tasks on the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    #[default]
    Active,
    Pause,
    Drain,
}

/// Whether the node was admitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    #[default]
    Pending,
    Accepted,
}

/// Node health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    #[default]
    Unknown,
    Down,
    Ready,
    Disconnected,
}

/// Whether the leader reaches a manager.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    #[default]
    Unknown,
    Unreachable,
    Reachable,
}

// ---------------------------------------------------------------------------------------
// Homes the services issue fills.

macro_rules! simple_object {
    ($(#[$doc:meta])* $ty:ident, $spec:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $ty {
            pub id: String,
            pub meta: Meta,
            pub spec: $spec,
        }

        #[doc = concat!("What a user sets on a ", stringify!($ty), ".")]
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $spec {
            pub name: String,
            pub labels: BTreeMap<String, String>,
        }
    };
}

simple_object!(
    /// A cluster network (filled by the networking issue).
    Network,
    NetworkSpec
);
simple_object!(
    /// A secret (filled by the services issue).
    Secret,
    SecretSpec
);
simple_object!(
    /// A config (filled by the services issue).
    Config,
    ConfigSpec
);
simple_object!(
    /// A cluster volume (filled by the services issue).
    Volume,
    VolumeSpec
);

/// `Duration` as integer nanoseconds (Docker's API shape). Negative values read as zero;
/// values beyond `i64::MAX` ns (292 years) are written as `i64::MAX`.
pub mod nanos {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as nanoseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Reads nanoseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let n = i64::deserialize(d)?;
        Ok(Duration::from_nanos(u64::try_from(n).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_defaults() {
        let spec = ClusterSpec::default();
        assert_eq!(spec.name, "default");
        assert_eq!(spec.orchestration.task_history_retention_limit, 5);
        assert_eq!(spec.raft.snapshot_interval, 10_000);
        assert_eq!(spec.raft.log_entries_for_slow_followers, 500);
        assert_eq!(spec.dispatcher.heartbeat_period, Duration::from_secs(5));
        assert_eq!(
            spec.ca_config.node_cert_expiry,
            Duration::from_secs(90 * 24 * 3600)
        );
        assert!(!spec.encryption.auto_lock_managers);
    }

    #[test]
    fn durations_are_nanoseconds() {
        let spec = ClusterSpec::default();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["dispatcher"]["heartbeat_period"], 5_000_000_000i64);
        assert_eq!(v["ca_config"]["node_cert_expiry"], 7_776_000_000_000_000i64);
        let back: DispatcherConfig =
            serde_json::from_str(r#"{"heartbeat_period": 250000000}"#).unwrap();
        assert_eq!(back.heartbeat_period, Duration::from_millis(250));
        let neg: DispatcherConfig = serde_json::from_str(r#"{"heartbeat_period": -5}"#).unwrap();
        assert_eq!(neg.heartbeat_period, Duration::ZERO);
    }

    #[test]
    fn enums_are_lowercase() {
        assert_eq!(
            serde_json::to_string(&ObjectKind::Volume).unwrap(),
            r#""volume""#
        );
        assert_eq!(
            serde_json::to_string(&Role::Manager).unwrap(),
            r#""manager""#
        );
        assert_eq!(
            serde_json::to_string(&Availability::Drain).unwrap(),
            r#""drain""#
        );
        assert_eq!(
            serde_json::to_string(&NodeState::Disconnected).unwrap(),
            r#""disconnected""#
        );
        assert_eq!(
            serde_json::to_string(&Reachability::Unreachable).unwrap(),
            r#""unreachable""#
        );
        for k in ObjectKind::ALL {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
    }

    #[test]
    fn older_encoding_without_fields_reads_with_defaults() {
        // What an older manager might have written: no spec.raft, no manager_status, no
        // unlock key.
        let old = r#"{"id":"c1","meta":{"version":7},"spec":{"name":"default"}}"#;
        let c: Cluster = serde_json::from_str(old).unwrap();
        assert_eq!(c.id, "c1");
        assert_eq!(c.meta.version, 7);
        assert_eq!(c.spec.raft, RaftConfig::default());
        assert_eq!(c.spec.dispatcher.heartbeat_period, Duration::from_secs(5));
        assert_eq!(c.unlock_key, "");
    }

    #[test]
    fn newer_encoding_with_unknown_fields_reads() {
        // What a newer manager might write: fields this version does not know.
        let new = r#"{"id":"n1","spec":{"role":"manager","future_knob":true},
            "description":{"hostname":"h","gpus":[1,2]},"status":{"state":"ready"},
            "wireguard_key":"abc"}"#;
        let n: Node = serde_json::from_str(new).unwrap();
        assert_eq!(n.id, "n1");
        assert_eq!(n.spec.role, Role::Manager);
        assert_eq!(n.description.hostname, "h");
        assert_eq!(n.status.state, NodeState::Ready);
        assert_eq!(n.manager_status, None);
    }

    #[test]
    fn round_trip_node() {
        let n = Node {
            id: "abc".into(),
            spec: NodeSpec {
                name: "edge-1".into(),
                role: Role::Manager,
                membership: Membership::Accepted,
                availability: Availability::Pause,
                ..Default::default()
            },
            manager_status: Some(ManagerStatus {
                raft_id: 42,
                addr: "10.0.0.1:4242".into(),
                leader: true,
                reachability: Reachability::Reachable,
            }),
            ..Default::default()
        };
        let json = serde_json::to_string(&n).unwrap();
        let back: Node = serde_json::from_str(&json).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn typed_access_through_object() {
        let s = Service {
            id: "s1".into(),
            ..Default::default()
        };
        let o = s.clone().into_object();
        assert_eq!(Service::from_object(&o), Some(&s));
        assert_eq!(Node::from_object(&o), None);
        assert_eq!(<Service as StoredObject>::KIND, ObjectKind::Service);
    }
}
