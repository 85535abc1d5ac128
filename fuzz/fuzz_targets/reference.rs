//! Fuzzes image-reference handling (`shoal_image::reference`) with arbitrary UTF-8.
//!
//! Invariants, besides "no panic":
//! - `normalize` is idempotent: a normalized reference normalizes to itself;
//! - the familiar form of a normalized reference normalizes back to it;
//! - on a normalized reference, `tag` agrees with the parsed tag and
//!   `familiar_repository` with the familiar `registry/repository`;
//! - `parse_tagged` accepts exactly what `parse` accepts without a digest.
//!
//! Three violations it found (uppercase Hub repositories, `library/` stripped from nested
//! names, `docker.io/` stripped before registry-like names) are fixed; their inputs are in
//! `regressions/reference/`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_image::reference::{
    familiar, familiar_repository, normalize, parse, parse_tagged, repository_name, tag,
};

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
    match normalize(&n) {
        Ok(again) => assert_eq!(again, n, "normalize is not idempotent on {s:?}"),
        Err(e) => panic!("normalized {n:?} (from {s:?}) is refused: {e}"),
    }
    let fam = familiar(&n);
    match normalize(&fam) {
        Ok(back) => assert_eq!(back, n, "familiar {fam:?} of {n:?} normalizes elsewhere"),
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
