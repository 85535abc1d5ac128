//! shoal-image: OCI images on one node.
//!
//! [`ImageStore`] keeps verified blobs and unpacked layers under one directory, pulls
//! from registries (`pull`, `login`), imports and exports archives (`import`,
//! `export`), and removes and garbage-collects images (`remove`, `prune`, `gc`).
//! Layers are unpacked by the [`unpack`] module, which refuses hostile archives.

mod archive;
mod auth;
mod error;
pub mod oci;
pub mod platform;
pub mod progress;
mod pull;
pub mod reference;
mod registry;
mod store;
pub mod unpack;

pub use archive::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
pub use error::ImageError;
pub use platform::Platform;
pub use progress::{ProgressEvent, ProgressSink};
pub use registry::{Credentials, RegistryOptions};
pub use store::{ImageRecord, ImageStore, LayerRecord, PruneReport, RemoveEvent, StoreOptions};
