//! Fuzzes `shoal_image::unpack::unpack_layer` with arbitrary bytes as a tar stream.
//!
//! Each input is unpacked into a fresh `dest` nested three levels deep under a per-process
//! scratch tree full of canaries:
//!
//! ```text
//! /tmp/shoal-fuzz-<pid>/{canary, l1/{canary, l2/{canary, l3/{canary, dest/}}}}
//! ```
//!
//! Afterwards (success or error) the whole tree except `dest` must be exactly as before:
//! same names, kinds, modes, owners, link counts and contents. Errors are fine; panics and
//! escapes are not. The scratch tree is left in /tmp when the fuzzer exits.

#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

struct Scratch {
    root: PathBuf,
    dest: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read scratch dir") {
            let p = e.expect("scratch entry").path();
            if p == skip {
                continue;
            }
            let m = fs::symlink_metadata(&p).expect("lstat scratch entry");
            let extra = if m.is_file() {
                String::from_utf8_lossy(&fs::read(&p).expect("read canary")).into_owned()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p).expect("readlink").display().to_string()
            } else {
                String::new()
            };
            out.insert(
                p.clone(),
                format!(
                    "{:o} {} {} {} {extra}",
                    m.mode(),
                    m.uid(),
                    m.nlink(),
                    m.len()
                ),
            );
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        let root = PathBuf::from(format!("/tmp/shoal-fuzz-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let mut dir = root.clone();
        for level in ["", "l1", "l2", "l3"] {
            if !level.is_empty() {
                dir.push(level);
            }
            fs::create_dir_all(&dir).expect("create scratch");
            fs::write(dir.join("canary"), level).expect("write canary");
        }
        let dest = dir.join("dest");
        fs::create_dir(&dest).expect("create dest");
        let before = snapshot(&root, &dest);
        Scratch { root, dest, before }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    let _ = shoal_image::unpack::unpack_layer(data, &s.dest);
    let after = snapshot(&s.root, &s.dest);
    assert_eq!(s.before, after, "unpack changed something outside dest");
    fs::remove_dir_all(&s.dest).expect("remove dest");
    fs::create_dir(&s.dest).expect("create dest");
});
