//! shoal-testkit: what shoal's tests and benchmarks need to build and serve images and to
//! run daemons under test. Never linked into the `shoal` binary.
//!
//! - [`images`]: OCI layouts, OCI archives and `docker save` archives built from the host's
//!   static busybox, deterministically (same input, same digests).
//! - [`hostile`]: raw tar layers a safe extractor must refuse.
//! - [`tls`]: a throw-away CA and server certificate.
//! - [`registry`]: Debian's `docker-registry` on 127.0.0.1, `skopeo` pushes, a counting and
//!   stalling TCP proxy, and a tiny blocking HTTP client.
//! - [`token`]: a bearer-token issuer for the registry's `auth: token` mode.
//! - [`daemon`]: a `shoal daemon` under test with its own directories, and a CLI runner.
//! - [`cluster`]: several daemons in network namespaces on a host bridge, with failure
//!   injection (kill, link cut, nftables partition).

pub mod cluster;
pub mod daemon;
pub mod hostile;
pub mod images;
pub mod registry;
pub mod tls;
pub mod token;
