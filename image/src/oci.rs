//! Manifest, index and descriptor JSON (OCI and Docker schema 2), media types, digests.
//!
//! Small serde types of our own rather than `oci_spec`'s builders: they accept both
//! OCI and Docker media types and keep unknown fields out of the way. The image config
//! itself is parsed with `oci_spec::image::ImageConfiguration`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::ImageError;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI uncompressed layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Manifest media types asked for when pulling.
pub(crate) const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
];

/// Whether a layer media type is one this store unpacks (tar, gzip or zstd; OCI or
/// Docker naming, including the non-distributable variants).
pub(crate) fn is_layer_media_type(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

/// A content descriptor (the fields this store uses).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations (image names in index.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Platform of a manifest-list entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<DescriptorPlatform>,
}

/// The `platform` of a manifest-list / index entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorPlatform {
    /// OS, e.g. `linux`.
    pub os: String,
    /// Architecture, e.g. `amd64`.
    pub architecture: String,
    /// Variant, e.g. `v7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when the manifest states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// A manifest list or OCI index.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when the index states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Entries.
    pub manifests: Vec<Descriptor>,
}

/// A manifest document of either kind.
#[derive(Debug)]
pub enum AnyManifest {
    /// Single-platform image manifest, with its media type.
    Image(Manifest, String),
    /// Manifest list / index.
    Index(Index),
}

/// Parses a manifest or index; the kind comes from `mediaType` (body or, failing that,
/// the transport's `media_type_hint`) or from the shape of the document.
pub fn parse_manifest(
    bytes: &[u8],
    digest: &str,
    media_type_hint: Option<&str>,
) -> Result<AnyManifest, ImageError> {
    let invalid = |reason: String| ImageError::InvalidContent {
        what: "manifest",
        digest: digest.to_string(),
        reason,
    };
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if probe.schema_version != Some(2) {
        return Err(invalid(format!(
            "unsupported schema version {:?} (only schema 2 / OCI manifests are supported)",
            probe.schema_version
        )));
    }
    let media_type = probe
        .media_type
        .or_else(|| media_type_hint.map(str::to_string))
        .unwrap_or_else(|| {
            if probe.manifests.is_some() {
                OCI_INDEX
            } else {
                OCI_MANIFEST
            }
            .to_string()
        });
    match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => Ok(AnyManifest::Index(
            serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?,
        )),
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: Manifest = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
            digest_hex(&m.config.digest)?;
            for layer in &m.layers {
                digest_hex(&layer.digest)?;
                if !is_layer_media_type(&layer.media_type) {
                    return Err(ImageError::UnsupportedMediaType {
                        media_type: layer.media_type.clone(),
                        digest: layer.digest.clone(),
                    });
                }
            }
            Ok(AnyManifest::Image(m, media_type))
        }
        other => Err(ImageError::UnsupportedMediaType {
            media_type: other.to_string(),
            digest: digest.to_string(),
        }),
    }
}

/// The hex part of a `sha256:<64 hex>` digest. Anything else is refused: hex digests
/// become file names, so this check is what keeps registry and archive data from
/// choosing paths.
pub fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && crate::reference::is_hex(hex) => Ok(hex),
        _ => Err(ImageError::InvalidContent {
            what: "digest",
            digest: digest.to_string(),
            reason: "only sha256:<64 lowercase hex> digests are supported".to_string(),
        }),
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Checks that `bytes` hash to `expected`.
pub(crate) fn verify_bytes(what: &str, bytes: &[u8], expected: &str) -> Result<(), ImageError> {
    let actual = sha256_digest(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// A reader that hashes (SHA-256) and counts what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: std::io::Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest of the stream (tar readers stop at the end-of-archive blocks), then
    /// returns `(sha256:<hex>, bytes)`.
    pub(crate) fn finish(mut self) -> std::io::Result<(String, u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        ))
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let d = sha256_digest(b"");
        assert_eq!(
            d,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(digest_hex(&d).unwrap().len(), 64);
        for bad in ["sha256:../../etc", "sha512:aa", "e3b0", &d.to_uppercase()] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
        assert!(verify_bytes("x", b"", &d).is_ok());
        assert!(matches!(
            verify_bytes("x", b"a", &d),
            Err(ImageError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn parses_manifest_kinds() {
        let layer = sha256_digest(b"l");
        let config = sha256_digest(b"c");
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{config}","size":1}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{layer}","size":1}}]}}"#
        );
        match parse_manifest(m.as_bytes(), "d", None).unwrap() {
            AnyManifest::Image(m, mt) => {
                assert_eq!(mt, DOCKER_MANIFEST);
                assert_eq!(m.layers.len(), 1);
            }
            AnyManifest::Index(_) => panic!("not an index"),
        }
        // An index without mediaType is recognized by its shape.
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{layer}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        assert!(matches!(
            parse_manifest(i.as_bytes(), "d", None).unwrap(),
            AnyManifest::Index(_)
        ));
        // Schema 1 and foreign layer types are refused.
        assert!(parse_manifest(br#"{"schemaVersion":1}"#, "d", None).is_err());
        let bad = m.replace(
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "text/plain",
        );
        assert!(matches!(
            parse_manifest(bad.as_bytes(), "d", None),
            Err(ImageError::UnsupportedMediaType { .. })
        ));
    }

    #[test]
    fn hashing_reader_drains_the_rest() {
        let data = b"hello world";
        let mut r = HashingReader::new(&data[..]);
        let mut first = [0u8; 5];
        std::io::Read::read_exact(&mut r, &mut first).unwrap();
        let (digest, n) = r.finish().unwrap();
        assert_eq!(n, 11);
        assert_eq!(digest, sha256_digest(data));
    }
}
