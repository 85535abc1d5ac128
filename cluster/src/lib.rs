//! shoal-cluster: the node engine today; the manager brain (orchestrators, scheduler,
//! allocator, dispatcher, PKI) and the worker agent arrive with the cluster and services
//! issues and run tasks through the same [`engine::Engine`].

pub mod engine;
pub mod pki;
pub mod transport;

pub use engine::{Engine, EngineError, EngineOptions, NodeInfo};
