//! shoal-store: the cluster's object model and its replicated, persistent state.
//!
//! This crate is the home of the Node, Service, Task, Network, Secret, Config and Volume
//! objects, their redb persistence, the openraft log store and state machine, the QUIC raft
//! transport and watch streams (the cluster-core issue). A single node does not need it yet:
//! node-local state (images, containers, volumes) lives with the leaf crate that owns it.
//! What exists today is the identifier scheme cluster objects will share.

/// A cluster object identifier: 25 lowercase base-36 characters, as SwarmKit's IDs.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ObjectId(String);

/// A malformed object identifier.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid object ID {0:?}: want 25 characters of [0-9a-z]")]
pub struct InvalidObjectId(pub String);

impl ObjectId {
    /// Parses and validates an identifier.
    pub fn parse(s: &str) -> Result<ObjectId, InvalidObjectId> {
        if s.len() == 25
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        {
            Ok(ObjectId(s.to_owned()))
        } else {
            Err(InvalidObjectId(s.to_owned()))
        }
    }

    /// The identifier text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert!(ObjectId::parse("abcdefghijklmnopqrstuvwxy").is_ok());
        assert!(ObjectId::parse("ABCDEFGHIJKLMNOPQRSTUVWXY").is_err());
        assert!(ObjectId::parse("short").is_err());
    }
}
