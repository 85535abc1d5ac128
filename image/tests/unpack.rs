//! Integration tests of `shoal_image::unpack` on the real filesystem (run as root).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use shoal_image::unpack::{
    Compression, HostileReason, UnpackError, UnpackStats, decompress, unpack_layer,
};

// ---------------------------------------------------------------------------------------
// A raw tar writer: the `tar` crate's Builder refuses `..`, hostile tests need raw names.
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
struct E {
    name: Vec<u8>,
    typ: u8,
    link: Vec<u8>,
    data: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    dev: (u32, u32),
    pax: Vec<(String, Vec<u8>)>,
}

impl E {
    fn new(name: impl AsRef<[u8]>, typ: u8) -> E {
        E {
            name: name.as_ref().to_vec(),
            typ,
            link: Vec::new(),
            data: Vec::new(),
            mode: if typ == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
    fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> E {
        E {
            data: data.as_ref().to_vec(),
            ..E::new(name, b'0')
        }
    }
    fn dir(name: impl AsRef<[u8]>) -> E {
        E::new(name, b'5')
    }
    fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
        E {
            link: target.as_ref().to_vec(),
            mode: 0o777,
            ..E::new(name, b'2')
        }
    }
    fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
        E {
            link: target.as_ref().to_vec(),
            ..E::new(name, b'1')
        }
    }
    fn mode(mut self, mode: u32) -> E {
        self.mode = mode;
        self
    }
    fn owner(mut self, uid: u64, gid: u64) -> E {
        self.uid = uid;
        self.gid = gid;
        self
    }
    fn mtime(mut self, t: u64) -> E {
        self.mtime = t;
        self
    }
    fn dev(mut self, major: u32, minor: u32) -> E {
        self.dev = (major, minor);
        self
    }
    fn pax(mut self, key: &str, value: impl AsRef<[u8]>) -> E {
        self.pax.push((key.to_owned(), value.as_ref().to_vec()));
        self
    }
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

fn raw_header(name: &[u8], typ: u8, link: &[u8], size: u64, e: &E) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    {
        let old = h.as_old_mut();
        let n = name.len().min(100);
        old.name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(100);
        old.linkname[..l].copy_from_slice(&link[..l]);
    }
    h.set_mode(e.mode);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(e.mtime);
    h.set_size(size);
    // Raw byte: `EntryType::new(0)` would be written back as b'0'.
    h.as_old_mut().linkflag = [typ];
    h.set_device_major(e.dev.0).unwrap();
    h.set_device_minor(e.dev.1).unwrap();
    h.set_cksum();
    h
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n" where len counts itself.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn build(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut pax = e.pax.clone();
        if e.name.len() > 100 {
            pax.push(("path".into(), e.name.clone()));
        }
        if e.link.len() > 100 {
            pax.push(("linkpath".into(), e.link.clone()));
        }
        if !pax.is_empty() {
            let data: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            let h = raw_header(b"././@PaxHeader", b'x', b"", data.len() as u64, e);
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&data);
            pad(&mut out);
        }
        let size = if matches!(e.typ, b'0' | 0 | b'7') {
            e.data.len() as u64
        } else {
            0
        };
        let h = raw_header(&e.name, e.typ, &e.link, size, e);
        out.extend_from_slice(h.as_bytes());
        if size > 0 {
            out.extend_from_slice(&e.data);
            pad(&mut out);
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn is_root() -> bool {
    if rustix::process::geteuid().is_root() {
        true
    } else {
        eprintln!("SKIPPED: unpack tests need root (chown, mknod, trusted xattrs, mount)");
        false
    }
}

/// A unique absolute path in /tmp that must never be created by an unpack.
fn unique_host_path(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let p = PathBuf::from(format!(
        "/tmp/shoal-unpack-{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    assert!(!p.exists());
    p
}

struct Scratch {
    _tmp: tempfile::TempDir,
    parent: PathBuf,
    dest: PathBuf,
}

fn scratch() -> Scratch {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().to_path_buf();
    let dest = parent.join("dest");
    fs::create_dir(&dest).unwrap();
    Scratch {
        _tmp: tmp,
        parent,
        dest,
    }
}

/// No fd of this process may still point into `dest` after an unpack (parallel tests use
/// other directories, so this is not disturbed by them).
fn assert_no_fds_into(dest: &Path) {
    for e in fs::read_dir("/proc/self/fd").unwrap() {
        let e = e.unwrap();
        if let Ok(target) = fs::read_link(e.path()) {
            assert!(
                !target.starts_with(dest),
                "fd {:?} still open on {}",
                e.file_name(),
                target.display()
            );
        }
    }
}

fn unpack(entries: &[E], dest: &Path) -> Result<UnpackStats, UnpackError> {
    let r = unpack_layer(&build(entries)[..], dest);
    assert_no_fds_into(dest);
    r
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

fn assert_hostile(r: Result<UnpackStats, UnpackError>, entry: &str) -> HostileReason {
    match r {
        Err(UnpackError::Hostile { entry: e, reason }) => {
            assert_eq!(e, entry);
            let msg = UnpackError::Hostile {
                entry: e.clone(),
                reason: reason.clone(),
            }
            .to_string();
            assert!(
                msg.contains(&format!("{entry:?}")),
                "message {msg:?} names the entry"
            );
            reason
        }
        other => panic!("expected hostile error for {entry:?}, got {other:?}"),
    }
}

fn assert_whiteout(p: &Path) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(
        m.file_type().is_char_device(),
        "{} is a char device",
        p.display()
    );
    assert_eq!(m.rdev(), 0, "{} is 0:0", p.display());
}

// ---------------------------------------------------------------------------------------
// Contents and metadata
// ---------------------------------------------------------------------------------------

#[test]
fn files_dirs_links_devices_and_metadata() {
    if !is_root() {
        return;
    }
    let s = scratch();
    let long_dir = "d".repeat(60);
    let long_name = format!("{long_dir}/{}", "f".repeat(80)); // 141 chars: PAX path
    let entries = vec![
        E::dir("./").mode(0o755),
        E::dir("./etc/").mode(0o755).mtime(1_500_000_000),
        E::file("./etc/hosts", "127.0.0.1 localhost\n")
            .mode(0o644)
            .mtime(1_234_567_890),
        E::dir("./private/")
            .mode(0o700)
            .owner(1000, 1000)
            .mtime(1_400_000_000),
        E::file("./private/secret", "s")
            .mode(0o600)
            .owner(1000, 1000),
        E::file("bin/tool", "#!/bin/sh\n")
            .mode(0o755)
            .owner(65534, 65534),
        E::file("/bin/su", "su").mode(0o4755),
        E::file("bin/sg", "sg").mode(0o2755).owner(0, 1000),
        E::dir("tmp").mode(0o1777),
        E::symlink("bin/sh", "/bin/busybox"),
        E::symlink("bin/rel", "../etc/hosts").owner(1000, 1000),
        E::hardlink("bin/tool2", "bin/tool"),
        E::hardlink("bin/tool3", "/bin/tool"),
        E::new("dev/fifo", b'6').mode(0o620).owner(1000, 65534),
        E::new("dev/null", b'3').mode(0o666).dev(1, 3),
        E::new("dev/loop0", b'4').mode(0o660).dev(7, 0).owner(0, 6),
        E::file("x/user", "u")
            .pax("SCHILY.xattr.user.foo", "bar")
            .pax("SCHILY.xattr.trusted.t", b"\x00\x01binary"),
        E::symlink("x/link", "user").pax("SCHILY.xattr.trusted.on-link", "yes"),
        E::dir("x/sub").pax("SCHILY.xattr.user.dirattr", "d"),
        E::file("x/precise", "p")
            .pax("mtime", "1700000000.123456789")
            .pax("uid", "4000000000")
            .pax("gid", "4000000001"),
        E::file("x/dropped", "o").pax("SCHILY.xattr.trusted.overlay.redirect", "/etc"),
        E::file(long_name.as_bytes(), "long"),
        E::new("x/olddir/", 0).mode(0o711),
    ];
    let stats = unpack(&entries, &s.dest).unwrap();
    let d = &s.dest;
    assert_eq!(stats.entries, entries.len() as u64);
    let file_bytes: u64 = entries
        .iter()
        .filter(|e| e.typ == b'0')
        .map(|e| e.data.len() as u64)
        .sum();
    assert_eq!(stats.bytes, file_bytes);

    // Regular files: contents, modes, owners, times (atime = mtime).
    // (metadata before contents: reading updates the atime)
    let m = fs::metadata(d.join("etc/hosts")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o644);
    assert_eq!((m.mtime(), m.atime()), (1_234_567_890, 1_234_567_890));
    assert_eq!(
        fs::read_to_string(d.join("etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n"
    );
    let m = fs::metadata(d.join("bin/tool")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 65534, 65534));
    let m = fs::metadata(d.join("bin/su")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755, "setuid kept");
    let m = fs::metadata(d.join("bin/sg")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.gid()),
        (0o2755, 1000),
        "setgid kept after chown"
    );
    let m = fs::metadata(d.join("private/secret")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 1000, 1000));

    // Directories: modes, owners and times applied after their contents were written.
    let m = fs::metadata(d.join("private")).unwrap();
    assert!(m.is_dir());
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o700, 1000, 1000));
    assert_eq!(m.mtime(), 1_400_000_000);
    assert_eq!(fs::metadata(d.join("etc")).unwrap().mtime(), 1_500_000_000);
    assert_eq!(fs::metadata(d.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
    // Implicit parent directories are 0755.
    assert_eq!(fs::metadata(d.join("bin")).unwrap().mode() & 0o7777, 0o755);
    let m = fs::metadata(d.join("x/olddir")).unwrap();
    assert!(
        m.is_dir(),
        "pre-POSIX directory (regular type, trailing slash)"
    );
    assert_eq!(m.mode() & 0o7777, 0o711);

    // Symlinks stored verbatim, owned as told, not followed.
    assert_eq!(
        fs::read_link(d.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        fs::read_link(d.join("bin/rel")).unwrap(),
        Path::new("../etc/hosts")
    );
    let m = fs::symlink_metadata(d.join("bin/rel")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    assert_eq!(
        fs::read_to_string(d.join("bin/rel")).unwrap(),
        "127.0.0.1 localhost\n"
    );

    // Hard links share the inode (absolute target resolved in the layer root).
    let ino = fs::metadata(d.join("bin/tool")).unwrap().ino();
    assert_eq!(fs::metadata(d.join("bin/tool2")).unwrap().ino(), ino);
    assert_eq!(fs::metadata(d.join("bin/tool3")).unwrap().ino(), ino);
    assert_eq!(fs::metadata(d.join("bin/tool")).unwrap().nlink(), 3);

    // Devices and fifos.
    let m = fs::symlink_metadata(d.join("dev/fifo")).unwrap();
    assert!(m.file_type().is_fifo());
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o620, 1000, 65534));
    let m = fs::symlink_metadata(d.join("dev/null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(
        (m.rdev(), m.mode() & 0o7777),
        (rustix::fs::makedev(1, 3), 0o666)
    );
    let m = fs::symlink_metadata(d.join("dev/loop0")).unwrap();
    assert!(m.file_type().is_block_device());
    assert_eq!((m.rdev(), m.gid()), (rustix::fs::makedev(7, 0), 6));

    // xattrs: user.* and trusted.* on files, trusted.* on a symlink, user.* on a dir,
    // overlayfs ones dropped.
    assert_eq!(
        lgetxattr(&d.join("x/user"), "user.foo").as_deref(),
        Some(&b"bar"[..])
    );
    assert_eq!(
        lgetxattr(&d.join("x/user"), "trusted.t").as_deref(),
        Some(&b"\x00\x01binary"[..])
    );
    assert_eq!(
        lgetxattr(&d.join("x/link"), "trusted.on-link").as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(
        lgetxattr(&d.join("x/sub"), "user.dirattr").as_deref(),
        Some(&b"d"[..])
    );
    assert_eq!(
        lgetxattr(&d.join("x/dropped"), "trusted.overlay.redirect"),
        None
    );

    // PAX mtime with nanoseconds and ids beyond the octal field.
    let m = fs::metadata(d.join("x/precise")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 123_456_789));
    assert_eq!((m.uid(), m.gid()), (4_000_000_000, 4_000_000_001));

    // Long (PAX) names.
    assert_eq!(fs::read_to_string(d.join(&long_name)).unwrap(), "long");
}

#[test]
fn gnu_long_names_from_the_tar_builder() {
    if !is_root() {
        return;
    }
    let s = scratch();
    let name = format!("{}/{}", "a".repeat(120), "b".repeat(150));
    let target = format!("{}/{}", "a".repeat(120), "b".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h.set_size(5);
    h.set_mode(0o640);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, &name, &b"hello"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_entry_type(tar::EntryType::Symlink);
    b.append_link(&mut h, "c/long-link", &target).unwrap();
    let data = b.into_inner().unwrap();
    unpack_layer(&data[..], &s.dest).unwrap();
    assert_eq!(fs::read_to_string(s.dest.join(&name)).unwrap(), "hello");
    assert_eq!(
        fs::metadata(s.dest.join(&name)).unwrap().mode() & 0o7777,
        0o640
    );
    assert_eq!(
        fs::read_link(s.dest.join("c/long-link")).unwrap(),
        Path::new(&target)
    );
}

#[test]
fn gnu_tar_sparse_and_posix_archives() {
    if !is_root() {
        return;
    }
    if Command::new("tar").arg("--version").output().is_err() {
        eprintln!("SKIPPED: GNU tar not installed");
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let sparse = src.path().join("sparse");
    {
        let mut f = fs::File::create(&sparse).unwrap();
        f.write_all(b"head").unwrap();
        f.set_len(64 << 20).unwrap();
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(32 << 20)).unwrap();
        f.write_all(b"middle").unwrap();
    }
    let archive = src.path().join("a.tar");
    let out = Command::new("tar")
        .args(["--format=gnu", "--sparse", "-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(src.path())
        .arg("sparse")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let s = scratch();
    let stats = unpack_layer(fs::File::open(&archive).unwrap(), &s.dest).unwrap();
    assert_eq!(stats.bytes, 64 << 20);
    let got = s.dest.join("sparse");
    let m = fs::metadata(&got).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "holes kept: {} blocks",
        m.blocks()
    );
    let mut data = Vec::new();
    fs::File::open(&got)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(&data[..4], b"head");
    assert_eq!(&data[32 << 20..(32 << 20) + 6], b"middle");
    assert!(data[4..32 << 20].iter().all(|b| *b == 0));

    // PAX sparse (GNU.sparse.* records) is refused clearly.
    let out = Command::new("tar")
        .args(["--format=posix", "--sparse", "-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(src.path())
        .arg("sparse")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let s = scratch();
    let err = unpack_layer(fs::File::open(&archive).unwrap(), &s.dest).unwrap_err();
    assert!(
        matches!(err, UnpackError::Unsupported { .. }),
        "PAX sparse refused: {err}"
    );
    assert!(err.to_string().contains("sparse"), "{err}");
}

/// Relative path -> (type+mode, owner, size, mtime, nlink, contents or link target, user.k).
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let extra = if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else if m.is_file() {
                String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
            } else {
                String::new()
            };
            let x = if m.file_type().is_symlink() {
                None
            } else {
                lgetxattr(&p, "user.k")
            };
            let mtime = if m.is_dir() { m.mtime() } else { 0 };
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                format!(
                    "{:o} {}:{} {} {} {} {} {extra} {x:?}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    if m.is_dir() { 0 } else { m.len() },
                    if m.file_type().is_symlink() {
                        0
                    } else {
                        m.mtime()
                    },
                    mtime,
                    m.nlink()
                ),
            );
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn gnu_tar_archives_of_a_real_tree_round_trip() {
    if !is_root() {
        return;
    }
    if Command::new("tar").arg("--version").output().is_err() {
        eprintln!("SKIPPED: GNU tar not installed");
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let t = src.path().join("t");
    let sh = |script: &str| {
        let out = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(src.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
    };
    let long = "d".repeat(90);
    sh(&format!(
        "mkdir -p t/etc t/bin t/usr/lib t/home/u/.cache t/{long}/{long}
         echo hosts > t/etc/hosts; echo bb > t/bin/busybox; echo lib > t/usr/lib/libc.so
         echo deep > t/{long}/{long}/{long}
         ln -s /bin/busybox t/bin/sh; ln -s ../usr/lib t/lib; ln t/bin/busybox t/bin/hard
         mkfifo t/home/fifo; mknod t/home/null c 1 3
         chmod 4755 t/bin/busybox; chmod 0700 t/home/u; chmod 1777 t/usr
         chown -R 1000:1000 t/home/u; chown -h 65534:65534 t/bin/sh
"
    ));
    rustix::fs::setxattr(
        t.join("etc/hosts"),
        "user.k",
        b"value",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    sh("find t -depth ! -type l -exec touch -d @1500000000 {} +
        touch -d @1234567890 t/etc/hosts");
    let want = tree(&t);
    for format in ["gnu", "posix", "ustar"] {
        let archive = src.path().join(format!("{format}.tar"));
        let mut cmd = Command::new("tar");
        cmd.arg(format!("--format={format}"));
        if format == "posix" {
            cmd.arg("--xattrs").arg("--xattrs-include=user.*");
        }
        // ustar cannot hold the 270-char path: leave that dir out.
        let out = cmd
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&t)
            .args(if format == "ustar" {
                vec!["etc", "bin", "usr", "lib", "home"]
            } else {
                vec!["."]
            })
            .output()
            .unwrap();
        assert!(out.status.success(), "{format}: {out:?}");
        let s = scratch();
        unpack_layer(fs::File::open(&archive).unwrap(), &s.dest).unwrap();
        assert_no_fds_into(&s.dest);
        let mut got = tree(&s.dest);
        let mut want = want.clone();
        if format != "posix" {
            // Only the posix format carries xattrs.
            for v in want.values_mut() {
                *v = v.replace("Some([118, 97, 108, 117, 101])", "None");
            }
        }
        if format == "ustar" {
            want.retain(|k, _| !k.starts_with(&long));
            got.retain(|k, _| !k.starts_with(&long));
        }
        assert_eq!(got, want, "{format} round trip");
    }
}

#[test]
fn replacement_semantics_within_a_layer() {
    if !is_root() {
        return;
    }
    let s = scratch();
    let host = unique_host_path("replace");
    fs::create_dir(&host).unwrap();
    let host_file = host.join("f");
    let entries = vec![
        // file -> dir
        E::file("a", "file"),
        E::dir("a/"),
        E::file("a/inner", "i"),
        // non-empty dir tree -> file (nested dirs, a symlink inside pointing at the host)
        E::dir("b/"),
        E::dir("b/c/"),
        E::dir("b/c/d/"),
        E::file("b/c/d/e", "e"),
        E::symlink("b/c/out", host.as_os_str().as_bytes()),
        E::file("b", "now a file"),
        // a dir entry for an existing dir keeps its contents, updates metadata
        E::dir("k/"),
        E::file("k/kept", "kept"),
        E::dir("k/").mode(0o750).owner(7, 8),
        // symlink to a host file, then a regular file of the same name: replaces the
        // link, never writes through it
        E::symlink("l", host_file.as_os_str().as_bytes()),
        E::file("l", "replaced"),
        // file replaced by symlink, symlink by a fifo, by a dir
        E::file("m", "m"),
        E::symlink("m", "/etc/passwd"),
        E::new("n", b'6'),
        E::symlink("n", "x"),
        E::dir("n/"),
        // same type: file replaced by file
        E::file("o", "old"),
        E::file("o", "new"),
    ];
    unpack(&entries, &s.dest).unwrap();
    let d = &s.dest;
    assert!(fs::metadata(d.join("a")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(d.join("a/inner")).unwrap(), "i");
    assert_eq!(fs::read_to_string(d.join("b")).unwrap(), "now a file");
    assert_eq!(fs::read_to_string(d.join("k/kept")).unwrap(), "kept");
    let m = fs::metadata(d.join("k")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o750, 7, 8));
    assert!(fs::symlink_metadata(d.join("l")).unwrap().is_file());
    assert_eq!(fs::read_to_string(d.join("l")).unwrap(), "replaced");
    assert!(!host_file.exists(), "nothing written through the symlink");
    assert_eq!(
        fs::read_link(d.join("m")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(fs::symlink_metadata(d.join("n")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(d.join("o")).unwrap(), "new");
    assert_eq!(fs::read_dir(&host).unwrap().count(), 0);
    fs::remove_dir(&host).unwrap();
}

#[test]
fn dest_must_be_an_empty_directory() {
    if !is_root() {
        return;
    }
    let s = scratch();
    fs::write(s.dest.join("junk"), "x").unwrap();
    let err = unpack(&[E::file("a", "a")], &s.dest).unwrap_err();
    assert!(matches!(err, UnpackError::DestNotEmpty { .. }), "{err}");
    let err = unpack_layer(&build(&[])[..], &s.parent.join("missing")).unwrap_err();
    assert!(matches!(err, UnpackError::OpenDest { .. }), "{err}");
}

#[test]
fn truncated_and_garbage_archives_error() {
    if !is_root() {
        return;
    }
    let s = scratch();
    let mut data = build(&[E::file("big", vec![7u8; 5000])]);
    data.truncate(512 + 1000);
    let err = unpack_layer(&data[..], &s.dest).unwrap_err();
    assert!(
        matches!(err, UnpackError::ReadEntry { ref entry, .. } if entry == "big"),
        "{err}"
    );
    let s = scratch();
    let err = unpack_layer(&[0x55u8; 1024][..], &s.dest).unwrap_err();
    assert!(matches!(err, UnpackError::Read { .. }), "{err}");
    let s = scratch();
    let err = unpack(&[E::new("vol", b'V')], &s.dest).unwrap_err();
    assert!(matches!(err, UnpackError::Unsupported { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------
// Whiteouts and overlayfs
// ---------------------------------------------------------------------------------------

#[test]
fn whiteouts_become_overlay_whiteouts() {
    if !is_root() {
        return;
    }
    let s = scratch();
    let entries = vec![
        E::dir("a/"),
        E::file("a/.wh.gone", ""),
        E::file("a/present", "p"),
        E::file("a/.wh.present", ""),
        E::dir("a/tree/"),
        E::file("a/tree/x", "x"),
        E::file("a/.wh.tree", ""),
        E::file("b/.wh..wh..opq", ""),
        E::file("b/new", "n"),
        E::file("c/.wh..wh.plnk", ""),
        E::file(".wh..wh..opq", ""),
    ];
    let stats = unpack(&entries, &s.dest).unwrap();
    assert_eq!(stats.bytes, 3);
    let d = &s.dest;
    assert_whiteout(&d.join("a/gone"));
    assert_whiteout(&d.join("a/present"));
    assert_whiteout(&d.join("a/tree"));
    assert!(!d.join("a/.wh.gone").exists());
    assert_eq!(
        lgetxattr(&d.join("b"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!d.join("b/.wh..wh..opq").exists());
    assert_eq!(fs::read_to_string(d.join("b/new")).unwrap(), "n");
    assert!(!d.join("c").exists(), "aufs metadata ignored");
    assert_eq!(
        lgetxattr(d, "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(lgetxattr(&d.join("a"), "trusted.overlay.opaque"), None);
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn listing(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn overlay_end_to_end() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper, merged) = (
        tmp.path().join("lower"),
        tmp.path().join("upper"),
        tmp.path().join("merged"),
    );
    for p in [&lower, &upper, &merged] {
        fs::create_dir(p).unwrap();
    }
    let l1 = vec![
        E::dir("a/"),
        E::file("a/x", "x"),
        E::file("a/y", "y"),
        E::dir("b/"),
        E::file("b/z", "z"),
    ];
    let l2 = vec![
        E::dir("a/"),
        E::file("a/.wh.x", ""),
        E::dir("b/"),
        E::file("b/.wh..wh..opq", ""),
        E::file("b/new", "new"),
    ];
    unpack(&l1, &lower).unwrap();
    unpack(&l2, &upper).unwrap();
    let opts = format!("lowerdir={}:{}", upper.display(), lower.display());
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .output()
        .unwrap();
    assert!(out.status.success(), "mount overlay: {out:?}");
    let _guard = Unmount(merged.clone());
    assert_eq!(listing(&merged.join("a")), ["y"]);
    assert!(!merged.join("a/x").exists());
    assert_eq!(fs::read_to_string(merged.join("a/y")).unwrap(), "y");
    assert_eq!(listing(&merged.join("b")), ["new"]);
    assert_eq!(fs::read_to_string(merged.join("b/new")).unwrap(), "new");
}

// ---------------------------------------------------------------------------------------
// Hostile archives
// ---------------------------------------------------------------------------------------

#[test]
fn dotdot_names_are_refused() {
    if !is_root() {
        return;
    }
    for name in [
        "../escape",
        "/../escape",
        "a/../../escape",
        "./../escape",
        "a/..",
        "..//x",
    ] {
        let s = scratch();
        let r = unpack(&[E::file(name, "pwned")], &s.dest);
        let reason = assert_hostile(r, name);
        assert!(
            matches!(
                reason,
                HostileReason::DotDot | HostileReason::EmptyComponent
            ),
            "{name}: {reason}"
        );
        assert!(!s.parent.join("escape").exists());
        assert!(!s.parent.join("x").exists());
    }
    let s = scratch();
    let r = unpack(&[E::file("../.wh.x", "")], &s.dest);
    assert_eq!(assert_hostile(r, "../.wh.x"), HostileReason::DotDot);
    assert!(!s.parent.join("x").exists());
    for (name, shown) in [("a/.wh..", "."), ("a/.wh...", ".."), (".wh.", "")] {
        let s = scratch();
        let r = unpack(&[E::file(name, "")], &s.dest);
        assert_eq!(
            assert_hostile(r, name),
            HostileReason::WhiteoutName { name: shown.into() }
        );
    }
    let s = scratch();
    let r = unpack(&[E::symlink("./", "/etc")], &s.dest);
    assert_eq!(assert_hostile(r, "./"), HostileReason::RootEntry);
    // A PAX path can carry a NUL byte the header cannot.
    let s = scratch();
    let r = unpack(&[E::file("x", "x").pax("path", b"a\0/../../x")], &s.dest);
    assert_eq!(assert_hostile(r, "a\0/../../x"), HostileReason::Nul);
}

#[test]
fn symlink_then_write_through_stays_inside() {
    if !is_root() {
        return;
    }
    let host = unique_host_path("abs");
    let host_rel = unique_host_path("rel");
    let host_chain = unique_host_path("chain");
    let tail = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_owned();

    // Absolute symlink, target dir exists inside the layer: lands in dest/tmp/<u>/pwned.
    let s = scratch();
    let entries = vec![
        E::dir("tmp/"),
        E::dir(format!("tmp/{}/", tail(&host))),
        E::symlink("l", host.as_os_str().as_bytes()),
        E::file("l/pwned", "pwned"),
        E::symlink("r", format!("../../../../tmp/{}", tail(&host))),
        E::file("r/pwned2", "pwned"),
        E::dir("r/deeper/"),
        E::hardlink("r/deeper/hl", "l/pwned"),
        E::file("r/.wh.wo", ""),
        E::file("l/.wh..wh..opq", ""),
        E::symlink("c1", "c2"),
        E::symlink("c2", "../c3"),
        E::symlink("c3", "/../../tmp"),
        E::file(format!("c1/{}/chained", tail(&host)), "pwned"),
    ];
    unpack(&entries, &s.dest).unwrap();
    let inside = s.dest.join("tmp").join(tail(&host));
    assert_eq!(fs::read_to_string(inside.join("pwned")).unwrap(), "pwned");
    assert_eq!(fs::read_to_string(inside.join("pwned2")).unwrap(), "pwned");
    assert_eq!(fs::read_to_string(inside.join("chained")).unwrap(), "pwned");
    assert_eq!(
        fs::metadata(inside.join("deeper/hl")).unwrap().ino(),
        fs::metadata(inside.join("pwned")).unwrap().ino()
    );
    assert_whiteout(&inside.join("wo"));
    assert_eq!(
        lgetxattr(&inside, "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!host.exists(), "{} created on the host", host.display());

    // Dangling targets (dir not in the layer): refused, never created on the host.
    for (link, target) in [
        ("l", host_rel.as_os_str().as_bytes().to_vec()),
        (
            "l",
            format!("../../../../tmp/{}", tail(&host_rel)).into_bytes(),
        ),
    ] {
        let s = scratch();
        let entries = vec![E::symlink(link, &target), E::file("l/pwned", "pwned")];
        let err = unpack(&entries, &s.dest).unwrap_err();
        assert!(
            matches!(err, UnpackError::Fs { ref entry, .. } if entry == "l/pwned"),
            "{err}"
        );
        assert!(!host_rel.exists());
        assert!(!s.dest.join("tmp").exists());
    }
    // Chained symlinks to a missing dir, then a directory entry under them.
    let s = scratch();
    let entries = vec![
        E::symlink("a", "b"),
        E::symlink("b", host_chain.as_os_str().as_bytes()),
        E::dir("a/sub/"),
        E::file("a/sub/f", "x"),
    ];
    assert!(unpack(&entries, &s.dest).is_err());
    assert!(!host_chain.exists());
}

#[test]
fn hostile_hard_links_are_refused() {
    if !is_root() {
        return;
    }
    let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
    let s = scratch();
    let r = unpack(&[E::hardlink("pw", "../../etc/passwd")], &s.dest);
    assert_eq!(assert_hostile(r, "pw"), HostileReason::LinkTargetEscapes);

    let s = scratch();
    let r = unpack(&[E::hardlink("pw", "/etc/passwd")], &s.dest);
    assert_eq!(
        assert_hostile(r, "pw"),
        HostileReason::LinkTargetMissing {
            target: "/etc/passwd".into()
        }
    );

    let s = scratch();
    let r = unpack(
        &[E::symlink("e", "/etc"), E::hardlink("pw", "e/passwd")],
        &s.dest,
    );
    assert_eq!(
        assert_hostile(r, "pw"),
        HostileReason::LinkTargetMissing {
            target: "e/passwd".into()
        }
    );
    // A self-referencing link (`etc -> /etc` is itself IN_ROOT) is a loop: refused too.
    let s = scratch();
    let err = unpack(
        &[E::symlink("etc", "/etc"), E::hardlink("pw", "etc/passwd")],
        &s.dest,
    )
    .unwrap_err();
    assert!(
        matches!(err, UnpackError::Fs { ref entry, .. } if entry == "pw"),
        "{err}"
    );

    let s = scratch();
    let r = unpack(&[E::dir("d/"), E::hardlink("h", "d")], &s.dest);
    assert_eq!(
        assert_hostile(r, "h"),
        HostileReason::LinkToDirectory { target: "d".into() }
    );

    let s = scratch();
    let r = unpack(&[E::file("f", "f"), E::hardlink("f", "./f")], &s.dest);
    assert_eq!(assert_hostile(r, "f"), HostileReason::LinkToSelf);

    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);
}

// ---------------------------------------------------------------------------------------
// Decompression
// ---------------------------------------------------------------------------------------

#[test]
fn decompress_gzip_zstd_plain_agree() {
    let tar = build(&[E::file("a", "hello".repeat(1000)), E::dir("d/")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
    let read = |mt: &str, data: &[u8]| {
        let mut out = Vec::new();
        decompress(mt, data).unwrap().read_to_end(&mut out).unwrap();
        out
    };
    assert_eq!(
        read("application/vnd.oci.image.layer.v1.tar+gzip", &gz),
        tar
    );
    assert_eq!(
        read("application/vnd.docker.image.rootfs.diff.tar.gzip", &gz),
        tar
    );
    assert_eq!(
        read("application/vnd.oci.image.layer.v1.tar+zstd", &zst),
        tar
    );
    assert_eq!(read("application/vnd.oci.image.layer.v1.tar", &tar), tar);
    assert_eq!(read("", &gz), tar, "sniffed gzip");
    assert_eq!(read("application/octet-stream", &zst), tar, "sniffed zstd");
    assert_eq!(read("", &[]), Vec::<u8>::new(), "empty stream");

    // A media type saying gzip over a plain tar: a clear error.
    let err = decompress("application/vnd.oci.image.layer.v1.tar+gzip", &tar[..])
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            UnpackError::CompressionMismatch {
                expected: Compression::Gzip,
                found: "not compressed",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("gzip"), "{err}");

    // Through unpack_layer, including the gzip trailer check after the tar end marker.
    if is_root() {
        let s = scratch();
        let r = decompress("application/vnd.oci.image.layer.v1.tar+gzip", &gz[..]).unwrap();
        unpack_layer(r, &s.dest).unwrap();
        assert_eq!(
            fs::read_to_string(s.dest.join("a")).unwrap(),
            "hello".repeat(1000)
        );
        let mut bad = gz.clone();
        let n = bad.len();
        bad[n - 8] ^= 0xff; // CRC32 of the trailer
        let s = scratch();
        let r = decompress("application/vnd.oci.image.layer.v1.tar+gzip", &bad[..]).unwrap();
        let err = unpack_layer(r, &s.dest).unwrap_err();
        assert!(matches!(err, UnpackError::Read { .. }), "{err}");
    }
}

// ---------------------------------------------------------------------------------------
// Property test: random archives never escape dest
// ---------------------------------------------------------------------------------------

/// Everything under `root` except `skip`, by relative path: (kind, mode, uid, gid, size,
/// mtime, nlink, contents-or-link-target).
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p == skip {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let extra = if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else if m.is_file() {
                String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
            } else {
                String::new()
            };
            let xattr = lgetxattr(&p, "trusted.overlay.opaque");
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                format!(
                    "{:o} {}:{} {} {} {} {:?} {extra}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.len(),
                    m.mtime(),
                    m.nlink(),
                    xattr
                ),
            );
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Op {
    File(String, u8),
    Dir(String),
    Symlink(String, String),
    HardLink(String, String),
    Fifo(String),
    Whiteout(String, String),
    Opaque(String),
}

/// Path components: mostly ordinary names (so most archives get far and exercise links and
/// replacements), sometimes hostile or whiteout names (which end the unpack with an error).
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        40 => prop::sample::select(vec![
            "a", "b", "c", "canary", "tmp", "etc", "passwd", "dest", "outside",
        ]),
        1 => prop::sample::select(vec!["..", ".", "", ".wh.a", ".wh..wh..opq", ".wh.."]),
    ]
    .prop_map(str::to_owned)
}

fn path() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            20 => prop::sample::select(vec!["", "/", "./"]),
            1 => prop::sample::select(vec!["//", "../", "/../"]),
        ],
        prop::collection::vec(component(), 1..5),
        prop::bool::ANY,
    )
        .prop_map(|(prefix, comps, slash)| {
            let mut p = format!("{prefix}{}", comps.join("/"));
            if slash {
                p.push('/');
            }
            p
        })
}

/// Symlink targets: relative and absolute, climbing, and `@PARENT@`/`@CANARY@`, which are
/// replaced by the absolute host paths next to dest.
fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => path(),
        1 => (prop::sample::select(vec!["../", "../../", "../../../../"]), path())
            .prop_map(|(up, p)| format!("{up}{}", p.trim_start_matches('/'))),
        2 =>
        prop::sample::select(vec![
            "/", "..", "../..", "../../../../..", "@PARENT@", "@CANARY@", "@CANARY@/file",
            "@PARENT@/../..", "@PARENT@/outside", "/proc/self/root", "/proc/self/cwd", "../canary",
            "../../canary/file", "/etc/passwd",
        ])
        .prop_map(str::to_owned),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (path(), any::<u8>()).prop_map(|(p, b)| Op::File(p, b)),
        2 => path().prop_map(Op::Dir),
        3 => (path(), link_target()).prop_map(|(p, t)| Op::Symlink(p, t)),
        2 => (path(), prop_oneof![3 => path(), 1 => link_target()])
            .prop_map(|(p, t)| Op::HardLink(p, t)),
        1 => path().prop_map(Op::Fifo),
        2 => (path(), component()).prop_map(|(p, c)| Op::Whiteout(p, c)),
        1 => path().prop_map(Op::Opaque),
    ]
}

fn to_entries(ops: &[Op], parent: &Path) -> Vec<E> {
    let canary = parent.join("canary");
    let subst = |t: &str| {
        t.replace("@PARENT@", &parent.display().to_string())
            .replace("@CANARY@", &canary.display().to_string())
    };
    ops.iter()
        .map(|op| match op {
            Op::File(p, b) => E::file(p, [*b; 3]).mode(0o4755),
            Op::Dir(p) => E::dir(p).mode(0o700),
            Op::Symlink(p, t) => E::symlink(p, subst(t)),
            Op::HardLink(p, t) => E::hardlink(p, subst(t)),
            Op::Fifo(p) => E::new(p, b'6'),
            Op::Whiteout(p, c) => E::file(format!("{}/.wh.{c}", p.trim_end_matches('/')), ""),
            Op::Opaque(p) => E::file(format!("{}/.wh..wh..opq", p.trim_end_matches('/')), ""),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_archives_never_escape(ops in prop::collection::vec(op(), 1..14)) {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED: unpack proptest needs root");
            return Ok(());
        }
        // parent/{dest, canary/file, outside -> canary}
        let s = scratch();
        let canary = s.parent.join("canary");
        fs::create_dir(&canary).unwrap();
        fs::write(canary.join("file"), "canary").unwrap();
        std::os::unix::fs::symlink(&canary, s.parent.join("outside")).unwrap();
        let before = snapshot(&s.parent, &s.dest);
        let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
        let entries = to_entries(&ops, &s.parent);
        let result = unpack_layer(&build(&entries)[..], &s.dest);
        assert_no_fds_into(&s.dest);
        let after = snapshot(&s.parent, &s.dest);
        prop_assert_eq!(before, after, "something changed outside dest ({:?})", result);
        prop_assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);
        // Every error names its entry.
        if let Err(e) = &result {
            let msg = e.to_string();
            prop_assert!(msg.contains("layer entry"), "error without entry: {}", msg);
        }
    }
}
