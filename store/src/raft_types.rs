//! The openraft type configuration. Everything openraft-generic stays inside the crate.

use std::io::Cursor;

use crate::command::{ApplyOutcome, Proposal};

openraft::declare_raft_types!(
    /// shoal's Raft: u64 node IDs, `BasicNode { addr }`, proposals in, outcomes out.
    pub TypeConfig:
        D = Proposal,
        R = ApplyOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub(crate) type NodeId = u64;
pub(crate) type Node = openraft::BasicNode;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type Vote = openraft::Vote<NodeId>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub(crate) type Snapshot = openraft::Snapshot<TypeConfig>;
pub(crate) type StorageError = openraft::StorageError<NodeId>;
pub(crate) type Raft = openraft::Raft<TypeConfig>;
