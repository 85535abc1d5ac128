//! shoal-store: the cluster's object model and its replicated, persistent state.
//!
//! - [`model`]: Swarm-shaped objects (Cluster, Node, and the homes of Service, Task,
//!   Network, Secret, Config, Volume), JSON with serde defaults so versions interoperate.
//! - [`command`]: what a Raft entry carries ([`Proposal`]) and the pure, deterministic
//!   apply logic (optimistic concurrency on versions, atomic batches).
//! - [`crypto`]: at-rest encryption (DEK/KEK, ChaCha20-Poly1305, the `SWMKEY-1-` unlock
//!   key, the key file).
//! - [`Store`]: one manager's replica: redb persistence (`state.redb`, every value sealed
//!   with the DEK), openraft replication over a byte-moving [`RaftTransport`] the cluster
//!   crate implements, watches. openraft's types stay inside this crate.

pub mod command;
pub mod crypto;
pub mod model;
mod network;
mod raft_types;
mod storage;
mod store;
#[doc(hidden)]
pub mod testing_support;

pub use command::{Action, ApplyOutcome, Event, EventAction, Object, Proposal};
pub use network::{RaftTransport, TransportError, WireError};
pub use storage::{DB_FILE, DbError};
pub use store::{RaftRole, RaftStatus, Store, StoreConfig, StoreError};
