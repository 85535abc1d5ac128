//! shoal-image: OCI images on one node.

pub mod unpack;
