//! shoal-net: node networking.
//!
//! Today: per-container network namespaces with loopback only (`--network none`) and the
//! detection of which WireGuard backend this host can use. The networking issue adds the
//! WireGuard overlay, task addressing, VIPs, published ports and DNS here.

pub mod addrs;
pub mod netns;
pub mod wireguard;
