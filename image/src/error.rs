//! The one error type of the image store.
//!
//! Messages follow Docker's wording where users know it ("pull access denied for …",
//! "manifest unknown", "conflict: unable to remove repository reference …"), and every
//! variant carries the reference, digest or path it is about.

use std::path::PathBuf;

use crate::unpack::UnpackError;

/// Everything that can go wrong in the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image matches the given name, ID or digest.
    #[error("No such image: {0}")]
    NotFound(String),

    /// An ID prefix matches more than one image.
    #[error("multiple IDs found with provided prefix: {prefix} ({count} images)")]
    AmbiguousId {
        /// The prefix the user typed.
        prefix: String,
        /// How many images it matches.
        count: usize,
    },

    /// The text is not a valid image reference.
    #[error("invalid reference format \"{reference}\": {reason}")]
    InvalidReference {
        /// The text as given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },

    /// The registry refused access to the repository, or it does not exist.
    #[error(
        "pull access denied for {repository}, repository does not exist or may require authorization"
    )]
    PullAccessDenied {
        /// Familiar repository name, e.g. `busybox` or `localhost:5000/a/b`.
        repository: String,
    },

    /// Credentials were refused (login, or the token service).
    #[error("unauthorized: authentication to {registry} failed: {reason}")]
    Unauthorized {
        /// Registry host\[:port\].
        registry: String,
        /// What the registry or token service said.
        reason: String,
    },

    /// The repository exists but the tag or digest does not.
    #[error("manifest for {reference} not found: manifest unknown")]
    ManifestUnknown {
        /// The reference that was asked for.
        reference: String,
    },

    /// TLS failed: untrusted certificate, or a plain-HTTP registry reached over HTTPS.
    #[error("{registry}: {reason}")]
    Tls {
        /// Registry host\[:port\].
        registry: String,
        /// Docker-like explanation, including the underlying TLS error.
        reason: String,
    },

    /// Any other failure talking to a registry.
    #[error("registry {registry}: {source}")]
    Registry {
        /// Registry host\[:port\].
        registry: String,
        /// The client library's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Content does not hash to the digest that names it.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked (e.g. "layer sha256:… diff-id", "blob sha256:…").
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },

    /// A manifest, index or config is malformed or unsupported.
    #[error("invalid {what} {digest}: {reason}")]
    InvalidContent {
        /// "manifest", "config", "index".
        what: &'static str,
        /// Its digest.
        digest: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A layer or manifest media type this store cannot handle.
    #[error("unsupported media type {media_type} for {digest}")]
    UnsupportedMediaType {
        /// The media type.
        media_type: String,
        /// The digest of the object carrying it.
        digest: String,
    },

    /// A layer could not be unpacked (hostile entry, corrupt tar, I/O error).
    #[error("failed to register layer {layer}: {source}")]
    Unpack {
        /// Digest of the layer (diff-id, or blob digest while it is not known).
        layer: String,
        /// What the extractor refused.
        #[source]
        source: UnpackError,
    },

    /// The image is used by a container and `force` was not given.
    #[error(
        "conflict: unable to remove repository reference \"{reference}\" (must force) - container is using its referenced image {image}"
    )]
    InUse {
        /// The reference given to remove.
        reference: String,
        /// Short image ID.
        image: String,
    },

    /// Removing by ID an image that has several tags needs `force`.
    #[error(
        "conflict: unable to delete {image} (must be forced) - image is referenced in multiple repositories"
    )]
    MultipleReferences {
        /// Short image ID.
        image: String,
    },

    /// No entry of a manifest list / index matches the node's platform.
    #[error(
        "no matching manifest for {wanted} in the manifest list entries (available: {available})"
    )]
    Platform {
        /// The node platform, e.g. `linux/amd64`.
        wanted: String,
        /// The platforms the list offers.
        available: String,
    },

    /// An imported archive is malformed.
    #[error("invalid image archive: {reason}")]
    InvalidArchive {
        /// What is wrong with it.
        reason: String,
    },

    /// The on-disk store is unreadable (e.g. a corrupt `images.json`).
    #[error("image store {path}: {reason}")]
    CorruptStore {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("create", "rename", …).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A blocking worker task panicked or was cancelled.
    #[error("image store worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

impl ImageError {
    /// Builds an [`ImageError::Io`]; used as `.map_err(ImageError::io("open", &path))`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }
}
