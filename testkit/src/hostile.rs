//! Raw, uncompressed tar layers a safe layer extractor must refuse or neutralise.
//!
//! Headers are written by hand (the `tar` crate refuses to build most of these). Every
//! case names its payload `shoal-hostile-<case>` (see [`marker`]), so a test can search
//! the host afterwards ([`find_markers`]) and prove nothing escaped the extraction root.
//! Feed them to an image with [`crate::images::ImageBuilder::layer_tar`].

use std::fs;
use std::path::{Path, PathBuf};

use crate::images::FIXED_MTIME;

/// Prefix of every marker file name written by a hostile layer.
pub const MARKER_PREFIX: &str = "shoal-hostile-";

/// The marker file name used by the case `case` (a name from [`all`]).
pub fn marker(case: &str) -> String {
    format!("{MARKER_PREFIX}{case}")
}

const REGULAR: u8 = b'0';
const HARDLINK: u8 = b'1';
const SYMLINK: u8 = b'2';

fn octal(field: &mut [u8], value: u64) {
    let last = field.len() - 1;
    let s = format!("{:0width$o}", value, width = last);
    field[..last].copy_from_slice(s.as_bytes());
    field[last] = 0;
}

/// Append one ustar entry; `name` and `link` are written verbatim (no validation).
fn entry(out: &mut Vec<u8>, name: &str, kind: u8, link: &str, data: &[u8]) {
    assert!(
        name.len() <= 100 && link.len() <= 100,
        "hostile names are short constants"
    );
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(
        &mut h[100..108],
        if kind == SYMLINK { 0o777 } else { 0o644 },
    );
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], data.len() as u64);
    octal(&mut h[136..148], FIXED_MTIME);
    h[148..156].fill(b' ');
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    out.extend_from_slice(&[0u8; 1024]);
    out
}

const PAYLOAD: &[u8] = b"pwned by a hostile layer\n";

/// A regular file `../../shoal-hostile-dotdot_file`: path traversal by `..` components.
/// A safe extractor refuses the entry (or the layer); nothing appears above the root.
pub fn dotdot_file() -> Vec<u8> {
    let mut t = Vec::new();
    entry(
        &mut t,
        &format!("../../{}", marker("dotdot_file")),
        REGULAR,
        "",
        PAYLOAD,
    );
    finish(t)
}

/// A regular file `/../../shoal-hostile-absolute_dotdot`: an absolute name that still
/// climbs after the leading `/` is stripped. A safe extractor refuses it.
pub fn absolute_dotdot() -> Vec<u8> {
    let mut t = Vec::new();
    entry(
        &mut t,
        &format!("/../../{}", marker("absolute_dotdot")),
        REGULAR,
        "",
        PAYLOAD,
    );
    finish(t)
}

/// Symlink `link -> ../../../../tmp`, then a file `link/shoal-hostile-symlink_escape_relative`:
/// writes through a symlink that points above the root. A safe extractor resolves `link`
/// inside the root (or refuses); the host `/tmp` must not get the marker.
pub fn symlink_escape_relative() -> Vec<u8> {
    let mut t = Vec::new();
    entry(&mut t, "link", SYMLINK, "../../../../tmp", b"");
    let name = format!("link/{}", marker("symlink_escape_relative"));
    entry(&mut t, &name, REGULAR, "", PAYLOAD);
    finish(t)
}

/// Symlink `link -> /tmp`, then a file `link/shoal-hostile-symlink_escape_absolute`. The
/// symlink itself is legal (inside the container it means the container's `/tmp`); a safe
/// extractor must resolve it relative to the layer root and never write to the host `/tmp`.
pub fn symlink_escape_absolute() -> Vec<u8> {
    let mut t = Vec::new();
    entry(&mut t, "link", SYMLINK, "/tmp", b"");
    let name = format!("link/{}", marker("symlink_escape_absolute"));
    entry(&mut t, &name, REGULAR, "", PAYLOAD);
    finish(t)
}

/// Hard link `shoal-hostile-hardlink_escape -> ../../etc/passwd`: would give the image a
/// second name for a host file (writes through it change the host file). A safe extractor
/// refuses link targets outside the root; check the extracted name, if any, does not share
/// an inode with the host's `/etc/passwd`.
pub fn hardlink_escape() -> Vec<u8> {
    let mut t = Vec::new();
    entry(
        &mut t,
        &marker("hardlink_escape"),
        HARDLINK,
        "../../etc/passwd",
        b"",
    );
    finish(t)
}

/// Symlinks `a -> b` and `b -> ../..`, then a file `a/shoal-hostile-symlink_chain`: the
/// escape only shows after following two links. A safe extractor resolves the whole chain
/// inside the root (or refuses).
pub fn symlink_chain() -> Vec<u8> {
    let mut t = Vec::new();
    entry(&mut t, "a", SYMLINK, "b", b"");
    entry(&mut t, "b", SYMLINK, "../..", b"");
    entry(
        &mut t,
        &format!("a/{}", marker("symlink_chain")),
        REGULAR,
        "",
        PAYLOAD,
    );
    finish(t)
}

/// A whiteout `../.wh.shoal-hostile-whiteout_escape`: asks to delete
/// `../shoal-hostile-whiteout_escape`, outside the layer. A safe extractor refuses it;
/// create that victim next to the extraction root first and check it survives.
pub fn whiteout_escape() -> Vec<u8> {
    let mut t = Vec::new();
    entry(
        &mut t,
        &format!("../.wh.{}", marker("whiteout_escape")),
        REGULAR,
        "",
        b"",
    );
    finish(t)
}

/// Every hostile layer, by case name (the name [`marker`] takes).
pub fn all() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("dotdot_file", dotdot_file()),
        ("absolute_dotdot", absolute_dotdot()),
        ("symlink_escape_relative", symlink_escape_relative()),
        ("symlink_escape_absolute", symlink_escape_absolute()),
        ("hardlink_escape", hardlink_escape()),
        ("symlink_chain", symlink_chain()),
        ("whiteout_escape", whiteout_escape()),
    ]
}

/// Every path under `root` (down to `max_depth` levels, not following symlinks) whose file
/// name starts with [`MARKER_PREFIX`]. Unreadable directories are skipped.
pub fn find_markers(root: &Path, max_depth: usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().starts_with(MARKER_PREFIX) {
                found.push(path.clone());
            }
            if depth < max_depth && e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((path, depth + 1));
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The raw headers parse as the intended entries (names and link targets verbatim).
    #[test]
    fn headers_parse() {
        let t = symlink_chain();
        assert_eq!(t.len() % 512, 0);
        let mut a = tar::Archive::new(t.as_slice());
        let got: Vec<_> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.to_vec()).unwrap());
                (name, e.header().entry_type(), link)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "a".to_string(),
                    tar::EntryType::Symlink,
                    Some("b".to_string())
                ),
                (
                    "b".to_string(),
                    tar::EntryType::Symlink,
                    Some("../..".to_string())
                ),
                (
                    "a/shoal-hostile-symlink_chain".to_string(),
                    tar::EntryType::Regular,
                    None
                ),
            ]
        );
        let bytes = dotdot_file();
        let mut d = tar::Archive::new(bytes.as_slice());
        let mut es = d.entries().unwrap();
        let e = es.next().unwrap().unwrap();
        assert_eq!(e.path_bytes().as_ref(), b"../../shoal-hostile-dotdot_file");
        assert_eq!(e.header().size().unwrap(), PAYLOAD.len() as u64);
        assert!(e.header().cksum().is_ok());
    }

    /// The `tar` crate's own `unpack` refuses or neutralises each case: nothing lands
    /// outside the root (a sanity check that the layers are well-formed attacks).
    #[test]
    fn tar_crate_unpack_stays_inside() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("a/b/c/root");
        fs::create_dir_all(&root).unwrap();
        for (case, bytes) in all() {
            let _ = tar::Archive::new(bytes.as_slice()).unpack(&root);
            let outside: Vec<_> = find_markers(outer.path(), 8)
                .into_iter()
                .filter(|p| !p.starts_with(&root))
                .collect();
            assert!(outside.is_empty(), "{case}: {outside:?}");
        }
        assert!(find_markers(Path::new("/tmp"), 0).is_empty());
    }
}
