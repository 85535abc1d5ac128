//! shoal-runtime: one container's life on one node.
//!
//! The daemon side ([`manager::Runtime`]) keeps container records, spawns one helper
//! process per container ([`shim`], the same binary re-executed from a sealed copy), and
//! re-adopts running helpers after a daemon restart. The helper is single-threaded: it is
//! the only place that calls libcontainer to create a container.

pub mod defaults;
pub mod logs;
pub mod seccomp;
pub mod user;
