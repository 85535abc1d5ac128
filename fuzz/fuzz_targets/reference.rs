//! Fuzzes image-reference handling (`shoal_image::reference`) with arbitrary UTF-8.
//!
//! Invariants, besides "no panic":
//! - `normalize` is idempotent: a normalized reference normalizes to itself;
//! - the familiar form of a normalized reference normalizes back to it;
//! - on a normalized reference, `tag` agrees with the parsed tag and
//!   `familiar_repository` with the familiar `registry/repository`;
//! - `parse_tagged` accepts exactly what `parse` accepts without a digest.
//!
//! Known, reported violations (see README.md, `regressions/reference/`) make every run
//! stop within seconds. With `SHOAL_FUZZ_SKIP_KNOWN=1` inputs of those classes skip the
//! invariants they break, so a run can look for other problems:
//! - uppercase in a Docker Hub repository (`A/b`) is accepted, but the normalized text
//!   (`docker.io/A/b:latest`) is refused;
//! - `familiar` strips `library/` from nested names (`docker.io/library/a/b` → `a/b`,
//!   which is `docker.io/a/b`);
//! - `familiar` strips `docker.io/` before a first component that looks like a registry
//!   (`docker.io/foo.com/bar` → `foo.com/bar`, another registry).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shoal_image::reference::{
    familiar, familiar_repository, normalize, parse, parse_tagged, repository_name, tag,
};

/// Which known problem (if any) a parsed reference runs into: (re-normalization,
/// familiar form).
fn known(r: &oci_spec::distribution::Reference) -> (bool, bool) {
    static SKIP: OnceLock<bool> = OnceLock::new();
    if !*SKIP.get_or_init(|| std::env::var_os("SHOAL_FUZZ_SKIP_KNOWN").is_some()) {
        return (false, false);
    }
    let repo = r.repository();
    let hub = r.registry() == "docker.io";
    let first = repo.split('/').next().unwrap_or_default();
    let nested_library = repo
        .strip_prefix("library/")
        .is_some_and(|rest| rest.contains('/'));
    let registry_like = first.contains('.') || first.contains(':') || first == "localhost";
    (
        repo.chars().any(char::is_uppercase),
        hub && (nested_library || registry_like),
    )
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // Whatever the text, these are total functions.
    let _ = (familiar(s), familiar_repository(s), tag(s));
    let parsed = parse(s);
    assert_eq!(
        parse_tagged(s).is_ok(),
        parsed.as_ref().is_ok_and(|r| r.digest().is_none()),
        "parse_tagged disagrees with parse on {s:?}"
    );
    let Ok(n) = normalize(s) else {
        return;
    };
    let (skip_renormalize, skip_familiar) = parsed.as_ref().map(known).unwrap_or_default();
    if skip_renormalize {
        return;
    }
    match normalize(&n) {
        Ok(again) => assert_eq!(again, n, "normalize is not idempotent on {s:?}"),
        Err(e) => panic!("normalized {n:?} (from {s:?}) is refused: {e}"),
    }
    let fam = familiar(&n);
    match normalize(&fam) {
        Ok(back) => assert!(
            back == n || skip_familiar,
            "familiar {fam:?} of {n:?} normalizes to {back:?}"
        ),
        Err(e) => panic!("familiar {fam:?} of {n:?} is refused: {e}"),
    }
    let r = parse(&n).expect("normalized reference parses");
    assert_eq!(tag(&n).as_deref(), r.tag(), "tag of {n:?}");
    assert_eq!(
        familiar_repository(&n),
        familiar(&repository_name(&r)),
        "familiar repository of {n:?}"
    );
});
