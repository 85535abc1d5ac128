//! Image references with Docker's normalization.
//!
//! `busybox` → `docker.io/library/busybox:latest`, `localhost:5000/a/b:1` stays on its
//! registry, `name@sha256:…` pins a digest. Parsing is `oci_spec`'s (a port of Docker's
//! `reference` package); this module adds the checks Docker makes on top and the
//! "familiar" display form.

use oci_spec::distribution::Reference;

use crate::ImageError;

const HUB_PREFIX: &str = "docker.io/";
const OFFICIAL_PREFIX: &str = "library/";

/// Parses and normalizes a reference: default registry `docker.io`, `library/` for
/// official images, tag `latest` when neither tag nor digest is given.
pub fn parse(reference: &str) -> Result<Reference, ImageError> {
    let invalid = |reason: String| ImageError::InvalidReference {
        reference: reference.to_string(),
        reason,
    };
    let parsed: Reference = reference.parse().map_err(|e| invalid(format!("{e}")))?;
    // Docker's grammar: the repository path is lowercase. oci-spec's parser can read an
    // uppercase first component as a host and then file it under Docker Hub.
    if parsed.repository().chars().any(|c| c.is_ascii_uppercase()) {
        return Err(invalid("repository name must be lowercase".to_string()));
    }
    // Docker refuses names that look like image IDs so that `docker run <64 hex>` is
    // never mistaken for a repository.
    let last = parsed.repository().rsplit('/').next().unwrap_or_default();
    if parsed.registry() == "docker.io" && is_hex(last) && last.len() == 64 {
        return Err(invalid(
            "cannot specify 64-byte hexadecimal strings as a repository name".to_string(),
        ));
    }
    Ok(parsed)
}

/// Parses a reference that must name a tag (no digest), as `tag`, `--tag` and archive
/// names need.
pub fn parse_tagged(reference: &str) -> Result<Reference, ImageError> {
    let parsed = parse(reference)?;
    if parsed.digest().is_some() {
        return Err(ImageError::InvalidReference {
            reference: reference.to_string(),
            reason: "a tag is needed here, not a digest".to_string(),
        });
    }
    Ok(parsed)
}

/// The full normalized text of a reference, e.g. `docker.io/library/busybox:latest`.
pub fn normalize(reference: &str) -> Result<String, ImageError> {
    Ok(parse(reference)?.whole())
}

/// `registry/repository` of a parsed reference, without tag or digest.
pub fn repository_name(reference: &Reference) -> String {
    format!("{}/{}", reference.registry(), reference.repository())
}

/// The short form users type and Docker prints: strips `docker.io/` and, on Docker Hub
/// only, `library/` of a one-component name. `docker.io/library/busybox:latest` →
/// `busybox:latest`. The result always normalizes back to `full`: `docker.io/` stays when
/// the next component would read as a registry host (`docker.io/foo.com/x`,
/// `docker.io/localhost/x`), and `library/` stays before a nested path.
pub fn familiar(full: &str) -> String {
    let Some(rest) = full.strip_prefix(HUB_PREFIX) else {
        return full.to_string();
    };
    let first = rest.split('/').next().unwrap_or_default();
    let nested = rest.contains('/');
    if nested && (first.contains('.') || first.contains(':') || first == "localhost") {
        return full.to_string();
    }
    match rest.strip_prefix(OFFICIAL_PREFIX) {
        // `library/a/b` is not an official image: keep the prefix.
        Some(official)
            if !official
                .split(['@', ':'])
                .next()
                .unwrap_or_default()
                .contains('/') =>
        {
            official.to_string()
        }
        _ => rest.to_string(),
    }
}

/// The familiar repository without tag or digest: `docker.io/library/busybox:1` →
/// `busybox`, `localhost:5000/a/b:1` → `localhost:5000/a/b`.
pub fn familiar_repository(full: &str) -> String {
    let (name, _, _) = split(full);
    familiar(name)
}

/// The tag of a reference text, if it has one (`busybox:1.36` → `1.36`;
/// `localhost:5000/a` → none: the port is not a tag).
pub fn tag(full: &str) -> Option<String> {
    split(full).1.map(str::to_string)
}

/// Splits `name[:tag][@digest]` without parsing the name.
fn split(full: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match full.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (full, None),
    };
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[slash..].rfind(':') {
        Some(colon) => (
            &rest[..slash + colon],
            Some(&rest[slash + colon + 1..]),
            digest,
        ),
        None => (rest, None, digest),
    }
}

/// Whether `s` is non-empty lowercase hex.
pub(crate) fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {

    #[test]
    fn familiar_round_trips_found_by_fuzzing() {
        // Uppercase repositories are not references (Docker: must be lowercase).
        assert!(parse("A/b").is_err());
        assert!(parse("localhost:5000/Busybox").is_err());
        // `library/` is only stripped from one-component official names.
        assert_eq!(
            familiar("docker.io/library/a/b:latest"),
            "library/a/b:latest"
        );
        assert_eq!(familiar("docker.io/library/busybox:1"), "busybox:1");
        // `docker.io/` stays when the next component would read as a registry.
        assert_eq!(
            familiar("docker.io/foo.com/bar:latest"),
            "docker.io/foo.com/bar:latest"
        );
        assert_eq!(
            familiar("docker.io/localhost/x:1"),
            "docker.io/localhost/x:1"
        );
        assert_eq!(familiar("docker.io/team/app:1"), "team/app:1");
        for full in [
            "docker.io/library/a/b:latest",
            "docker.io/foo.com/bar:latest",
            "docker.io/localhost/x:1",
            "docker.io/library/busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert_eq!(normalize(&familiar(full)).unwrap(), full, "{full}");
        }
    }

    use super::*;

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(
            normalize("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize("busybox:1.36").unwrap(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(normalize("user/app").unwrap(), "docker.io/user/app:latest");
        assert_eq!(
            normalize("localhost:5000/a/b:1").unwrap(),
            "localhost:5000/a/b:1"
        );
        assert_eq!(normalize("localhost/a").unwrap(), "localhost/a:latest");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize(&format!("busybox@{digest}")).unwrap(),
            format!("docker.io/library/busybox@{digest}")
        );
        let r = parse("127.0.0.1:5000/x").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "x");
        assert_eq!(repository_name(&r), "127.0.0.1:5000/x");
    }

    #[test]
    fn refuses_invalid_references() {
        for bad in [
            "",
            "Busybox",
            "a b",
            "busybox:",
            "busybox@sha256:12",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(parse(bad), Err(ImageError::InvalidReference { .. })),
                "{bad:?} should be refused"
            );
        }
        let err = parse_tagged(&format!("busybox@sha256:{}", "b".repeat(64))).unwrap_err();
        assert!(matches!(err, ImageError::InvalidReference { .. }));
    }

    #[test]
    fn familiar_forms() {
        assert_eq!(
            familiar("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar("docker.io/user/app:1"), "user/app:1");
        assert_eq!(
            familiar("localhost:5000/library/x:1"),
            "localhost:5000/library/x:1"
        );
        assert_eq!(
            familiar_repository("docker.io/library/busybox:1"),
            "busybox"
        );
        assert_eq!(
            familiar_repository("localhost:5000/a/b:1"),
            "localhost:5000/a/b"
        );
        assert_eq!(
            familiar_repository(&format!(
                "docker.io/library/busybox@sha256:{}",
                "c".repeat(64)
            )),
            "busybox"
        );
        assert_eq!(
            tag("docker.io/library/busybox:1.36").as_deref(),
            Some("1.36")
        );
        assert_eq!(tag("localhost:5000/a"), None);
        assert_eq!(tag("localhost:5000/a:v2").as_deref(), Some("v2"));
    }
}
