//! shoal-runtime: one container's life on one node.
//!
//! The daemon side ([`manager::Runtime`]) keeps container records, spawns one helper
//! process per container ([`shim`], the same binary re-executed from a sealed copy), and
//! re-adopts running helpers after a daemon restart. The helper is single-threaded: it is
//! the only place that calls libcontainer to create a container ([`exec`] is its sibling
//! for `exec`). [`spec`] turns a container record into an OCI runtime spec with Docker's
//! defaults ([`defaults`], [`seccomp`]); [`logs`] are Docker's json-file logs, rotated.

pub mod cgroups;
pub mod copyup;
pub mod defaults;
pub mod exec;
pub mod health;
pub mod lifecycle;
pub mod logs;
pub mod manager;
pub mod model;
pub mod mounts;
pub mod names;
pub mod rootfs;
pub mod sealed;
pub mod seccomp;
pub mod shim;
pub mod signal;
pub mod spec;
pub mod state;
pub mod user;
pub mod volumes;

pub use health::{HealthLogEntry, HealthState, HealthStatus};
pub use manager::{
    AttachGuard, ContainerView, ExecRequest, NetworkHooks, Runtime, RuntimeError, RuntimeOptions,
};
