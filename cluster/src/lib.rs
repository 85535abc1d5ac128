//! shoal-cluster: the node engine and the swarm.
//!
//! - [`engine`]: containers made from local images (the executor of a node).
//! - [`swarm`]: this node's membership: init, join, leave, unlock, restart; its QUIC
//!   endpoint ([`transport`]) with certificates from the cluster CA ([`pki`]).
//! - [`manager`]: the replicated store and the control operations (managers only);
//!   [`dispatcher`]: the leader's view of node sessions; [`agent`]: every node's session.
//! - [`rpc`]: the messages between nodes.

pub mod agent;
pub mod dispatcher;
pub mod engine;
pub mod manager;
pub mod node_rpc;
pub mod orchestrator;
pub mod pki;
mod reconciler;
pub mod rpc;
pub mod services;
mod session;
pub mod state;
pub mod swarm;
pub mod transport;
pub mod worker;

pub use engine::{Engine, EngineError, EngineOptions, NodeInfo};
pub use manager::{Manager, NodeView};
pub use swarm::{InitOptions, InitResult, JoinOptions, Swarm, SwarmInfo};

use transport::{RemoteError, TransportError};

/// Errors of swarm operations, worded as Docker's where users know them.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("This node is not part of a swarm")]
    NotInSwarm,
    #[error(
        "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one."
    )]
    AlreadyInSwarm,
    #[error(
        "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager."
    )]
    NotManager,
    #[error(
        "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"shoal swarm unlock\" to unlock it."
    )]
    Locked,
    #[error("swarm is not locked")]
    NotLocked,
    #[error(
        "You are attempting to leave the swarm on a node that is participating as a manager. {} Use `--force` to suppress this message.",
        leave_detail(*managers)
    )]
    ManagerLeave { managers: usize },
    #[error(
        "The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online (the last manager standing can recover with `shoal swarm init --force-new-cluster`)."
    )]
    NoQuorum,
    #[error("this manager is not the leader; the leader is at {0}")]
    NotLeader(String),
    #[error("node {0} was removed from the swarm")]
    Removed(String),
    #[error("update out of sequence: {0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("invalid join token")]
    InvalidToken,
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Store(shoal_store::StoreError),
    #[error(transparent)]
    Crypto(#[from] shoal_store::crypto::CryptoError),
    #[error(transparent)]
    State(#[from] state::StateError),
}

fn leave_detail(managers: usize) -> String {
    if managers <= 1 {
        "Removing the last manager erases all current state of the swarm. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`.".into()
    } else {
        format!(
            "Removing this node leaves {} managers out of {managers}. Without a Raft quorum your swarm will be inaccessible.",
            managers - 1
        )
    }
}

impl From<shoal_store::StoreError> for SwarmError {
    fn from(e: shoal_store::StoreError) -> Self {
        match e {
            shoal_store::StoreError::NoQuorum => SwarmError::NoQuorum,
            other => SwarmError::Store(other),
        }
    }
}

impl SwarmError {
    /// The error as it travels to a remote node.
    pub(crate) fn to_remote(&self) -> RemoteError {
        use rpc::code;
        let c = match self {
            SwarmError::InvalidToken => code::INVALID_TOKEN,
            SwarmError::NoQuorum => code::NO_QUORUM,
            SwarmError::NotLeader(_) => code::NOT_LEADER,
            SwarmError::Removed(_) => code::REMOVED,
            SwarmError::Conflict(_) => code::CONFLICT,
            SwarmError::NotFound(_) => code::NOT_FOUND,
            SwarmError::InvalidArgument(_) | SwarmError::FailedPrecondition(_) => code::INVALID,
            SwarmError::Locked => code::LOCKED,
            _ => code::INTERNAL,
        };
        let message = match self {
            // The redirect carries just the leader's address.
            SwarmError::NotLeader(addr) => addr.clone(),
            other => other.to_string(),
        };
        RemoteError {
            code: c.to_owned(),
            message,
        }
    }
}
