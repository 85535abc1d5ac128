//! Fuzzes the parsers of manifests, indexes and image configs that registries and
//! archives hand to the image crate: `oci::parse_manifest`, `oci::digest_hex`,
//! `platform::select_manifest`, and the `oci_spec` image configuration the store reads.
//!
//! Input layout: `[hint byte][os/arch[/variant]\n][document]`. The hint byte picks the
//! transport's media type (none, the four manifest types, or a foreign one); the line is
//! the platform to select for; the document goes to `parse_manifest` and, as well, to
//! the image-config parser. Invariants:
//! - no panic (including arithmetic overflow: cargo-fuzz builds keep debug assertions);
//! - an accepted image manifest has valid `sha256:<64 hex>` config and layer digests and
//!   an image-manifest media type; an accepted manifest or index re-serializes and
//!   re-parses to the same kind, media type and JSON;
//! - a digest `digest_hex` accepts is `sha256:` + 64 lowercase hex;
//! - `select_manifest` returns one of the index's own entries, with a platform of the
//!   wanted OS and architecture; it picks an exact-variant entry whenever one exists, and
//!   picks something whenever an entry of that OS/architecture has no variant (or the
//!   wanted platform has none).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_image::Platform;
use shoal_image::oci::{self, AnyManifest, Descriptor, digest_hex, parse_manifest, sha256_digest};
use shoal_image::platform::select_manifest;

fn platform_from(line: &[u8]) -> Platform {
    let line = String::from_utf8_lossy(line);
    let mut parts = line.splitn(3, '/');
    Platform {
        os: parts.next().unwrap_or_default().to_string(),
        architecture: parts.next().unwrap_or_default().to_string(),
        variant: parts.next().map(str::to_string),
    }
}

fn check_digest(d: &str) {
    if let Ok(hex) = digest_hex(d) {
        assert_eq!(hex.len(), 64, "{d:?}");
        assert!(
            hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{d:?}"
        );
        assert_eq!(d, format!("sha256:{hex}"));
    }
}

/// Same OS and (normalized) architecture as `want`.
fn same_arch(want: &Platform, d: &Descriptor) -> bool {
    d.platform
        .as_ref()
        .is_some_and(|p| want.accepts(&p.os, &p.architecture, None))
}

/// Same OS, architecture and variant (both absent, or equal after normalization).
fn exact(want: &Platform, d: &Descriptor) -> bool {
    let Some(p) = &d.platform else { return false };
    match (p.variant.as_deref(), want.variant.as_deref()) {
        (None, None) => want.accepts(&p.os, &p.architecture, None),
        (Some(v), Some(_)) => want.accepts(&p.os, &p.architecture, Some(v)),
        _ => false,
    }
}

fn check_selection(entries: &[Descriptor], want: &Platform) {
    let _ = want.to_string();
    let picked = select_manifest(entries, want);
    match picked {
        Some(d) => {
            assert!(
                entries.iter().any(|e| std::ptr::eq(e, d)),
                "selected descriptor is not one of the index entries"
            );
            assert!(same_arch(want, d), "selected {:?} for {want}", d.platform);
            if entries.iter().any(|e| exact(want, e)) {
                assert!(
                    exact(want, d),
                    "exact match for {want} exists, picked {:?}",
                    d.platform
                );
            }
        }
        None => {
            let no_variant = entries.iter().any(|e| {
                same_arch(want, e) && e.platform.as_ref().is_some_and(|p| p.variant.is_none())
            });
            assert!(
                !no_variant,
                "an entry without variant matches {want}, none picked"
            );
            assert!(
                !(want.variant.is_none() && entries.iter().any(|e| same_arch(want, e))),
                "an entry matches {want} (no variant wanted), none picked"
            );
        }
    }
}

fn roundtrip(doc: &AnyManifest, hint: Option<&str>) {
    let (bytes, kind) = match doc {
        AnyManifest::Image(m, mt) => (serde_json::to_vec(m), mt.as_str()),
        AnyManifest::Index(i) => (serde_json::to_vec(i), "index"),
    };
    let bytes = bytes.expect("serialize parsed document");
    let again = parse_manifest(&bytes, &sha256_digest(&bytes), hint)
        .unwrap_or_else(|e| panic!("re-serialized {kind} refused: {e}"));
    match (doc, &again) {
        (AnyManifest::Image(_, mt), AnyManifest::Image(m2, mt2)) => {
            assert_eq!(mt, mt2);
            assert_eq!(bytes, serde_json::to_vec(m2).expect("serialize"));
        }
        (AnyManifest::Index(_), AnyManifest::Index(i2)) => {
            assert_eq!(bytes, serde_json::to_vec(i2).expect("serialize"));
        }
        _ => panic!("re-serialized {kind} parsed as another kind"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let hint = match selector % 6 {
        0 => None,
        1 => Some(oci::OCI_MANIFEST),
        2 => Some(oci::OCI_INDEX),
        3 => Some(oci::DOCKER_MANIFEST),
        4 => Some(oci::DOCKER_MANIFEST_LIST),
        _ => Some("application/octet-stream"),
    };
    let (line, doc) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let want = platform_from(line);
    check_digest(&String::from_utf8_lossy(doc));

    match parse_manifest(doc, "sha256:fuzz", hint) {
        Ok(AnyManifest::Image(m, mt)) => {
            assert!(
                mt == oci::OCI_MANIFEST || mt == oci::DOCKER_MANIFEST,
                "image manifest typed {mt}"
            );
            assert!(
                digest_hex(&m.config.digest).is_ok(),
                "config digest {}",
                m.config.digest
            );
            check_digest(&m.config.digest);
            for l in &m.layers {
                assert!(digest_hex(&l.digest).is_ok(), "layer digest {}", l.digest);
            }
            roundtrip(&AnyManifest::Image(m, mt), hint);
        }
        Ok(AnyManifest::Index(index)) => {
            for e in &index.manifests {
                check_digest(&e.digest);
            }
            check_selection(&index.manifests, &want);
            check_selection(&index.manifests, &Platform::host());
            roundtrip(&AnyManifest::Index(index), hint);
        }
        Err(_) => {}
    }

    // The image config as the store parses it (pull, import, `ImageStore::config`), and
    // the fields the store reads from it.
    if let Ok(config) = serde_json::from_slice::<oci_spec::image::ImageConfiguration>(doc) {
        for d in config.rootfs().diff_ids() {
            check_digest(d);
        }
        let _ = (config.os().to_string(), config.architecture().to_string());
        let _ = (config.variant(), config.created(), config.config());
    }
});
