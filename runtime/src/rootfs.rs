//! Container root filesystems: read-only image layers under a per-container upper dir,
//! joined by overlayfs.
//!
//! The mount options name every directory as `/proc/self/fd/N` of a descriptor held open
//! during the mount: overlayfs' option string is limited to one page, and data dirs can be
//! long paths; descriptors keep each entry under 20 bytes (about 200 layers) without a
//! `chdir`, which a multi-threaded process must not do.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

/// Errors while assembling or reading a root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot open layer directory {path}: {source}")]
    Layer { path: PathBuf, source: io::Error },
    #[error("cannot prepare {path}: {source}")]
    Prepare { path: PathBuf, source: io::Error },
    #[error("cannot mount the overlay root filesystem at {target}: {source}")]
    Mount { target: PathBuf, source: io::Error },
    #[error("cannot unmount {target}: {source}")]
    Unmount { target: PathBuf, source: io::Error },
}

/// The directories of one container's overlay.
#[derive(Clone, Debug)]
pub struct Overlay {
    /// Image layers, bottom first.
    pub lower: Vec<PathBuf>,
    /// Where the container's writes go.
    pub upper: PathBuf,
    /// overlayfs' scratch dir (same filesystem as `upper`).
    pub work: PathBuf,
    /// Where the merged tree is mounted.
    pub target: PathBuf,
    /// An empty dir used as the only lower layer of an image without layers.
    pub empty: PathBuf,
}

impl Overlay {
    /// The layout used for a container directory.
    pub fn in_dir(container_dir: &Path, lower: Vec<PathBuf>) -> Overlay {
        Overlay {
            lower,
            upper: container_dir.join("upper"),
            work: container_dir.join("work"),
            target: container_dir.join("rootfs"),
            empty: container_dir.join("empty"),
        }
    }

    /// Creates the container's own directories (upper, work, mount point).
    pub fn prepare(&self) -> Result<(), RootfsError> {
        for d in [&self.upper, &self.work, &self.target, &self.empty] {
            fs::create_dir_all(d).map_err(|source| RootfsError::Prepare {
                path: d.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Mounts the overlay at `target` (a no-op when it is already mounted there).
    pub fn mount(&self) -> Result<(), RootfsError> {
        if is_mountpoint(&self.target) {
            return Ok(());
        }
        let open = |p: &Path| {
            File::open(p).map_err(|source| RootfsError::Layer {
                path: p.to_owned(),
                source,
            })
        };
        let mut lowers = Vec::with_capacity(self.lower.len().max(1));
        // overlayfs lists the top layer first.
        for l in self.lower.iter().rev() {
            lowers.push(open(l)?);
        }
        if lowers.is_empty() {
            lowers.push(open(&self.empty)?);
        }
        let upper = open(&self.upper)?;
        let work = open(&self.work)?;
        let fdpath = |f: &File| format!("/proc/self/fd/{}", f.as_raw_fd());
        let lowerdir: Vec<String> = lowers.iter().map(fdpath).collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowerdir.join(":"),
            fdpath(&upper),
            fdpath(&work)
        );
        let data = std::ffi::CString::new(data).map_err(|e| RootfsError::Mount {
            target: self.target.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        rustix::mount::mount(
            "overlay",
            &self.target,
            "overlay",
            MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .map_err(|e| RootfsError::Mount {
            target: self.target.clone(),
            source: e.into(),
        })
    }

    /// Unmounts the overlay (lazily, so a straggling process cannot keep it busy).
    pub fn unmount(&self) -> Result<(), RootfsError> {
        unmount(&self.target)
    }
}

/// Detaches a mount at `target`; not mounted is fine.
pub fn unmount(target: &Path) -> Result<(), RootfsError> {
    match rustix::mount::unmount(target, UnmountFlags::DETACH) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(RootfsError::Unmount {
            target: target.to_owned(),
            source: e.into(),
        }),
    }
}

/// Creates the directory `path` (as the container sees it) and its missing parents in the
/// root filesystem at `root`, mode 0755, owned by the caller (root), as Docker does for a
/// working directory the image lacks. Every lookup resolves symlinks as if `root` were `/`
/// (`RESOLVE_IN_ROOT`), and a dangling symlink on the way is followed the same way, so no
/// symlink of the image can make this create anything outside it.
pub fn mkdir_in_root(root: &Path, path: &str) -> Result<(), RootfsError> {
    let err = |source: io::Error| RootfsError::Prepare {
        path: root.join(path.trim_start_matches('/')),
        source,
    };
    let rootfd = File::open(root).map_err(err)?;
    mkdir_in(&rootfd, Path::new(path), 0).map_err(|e| err(e.into()))
}

/// Symlinks followed at most while creating a directory (the kernel's own limit).
const MAX_SYMLINKS: u32 = 40;

fn mkdir_in(rootfd: &File, path: &Path, depth: u32) -> Result<(), rustix::io::Errno> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use std::os::unix::ffi::OsStringExt;
    let open_dir = |p: &Path| {
        rustix::fs::openat2(
            rootfd,
            p,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        )
    };
    let comps: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            std::path::Component::ParentDir => Some(std::ffi::OsStr::new("..")),
            _ => None,
        })
        .collect();
    let mut parent = PathBuf::from(".");
    for (i, name) in comps.iter().enumerate() {
        let next = parent.join(name);
        match open_dir(&next) {
            Ok(_) => {}
            Err(rustix::io::Errno::NOENT) => {
                let pfd = open_dir(&parent)?;
                match rustix::fs::mkdirat(&pfd, *name, Mode::from_raw_mode(0o755)) {
                    Ok(()) => {}
                    Err(rustix::io::Errno::EXIST) => {
                        // A dangling symlink: create its target, inside the root.
                        if depth >= MAX_SYMLINKS {
                            return Err(rustix::io::Errno::LOOP);
                        }
                        let link = rustix::fs::readlinkat(&pfd, *name, Vec::new())?;
                        let link = PathBuf::from(std::ffi::OsString::from_vec(link.into_bytes()));
                        let mut rest = if link.is_absolute() {
                            link
                        } else {
                            parent.join(link)
                        };
                        rest.extend(&comps[i + 1..]);
                        return mkdir_in(rootfd, &rest, depth + 1);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        parent = next;
    }
    open_dir(&parent).map(drop)
}

/// Whether `path` is the root of a mount (its device differs from its parent's, or it is
/// listed as a mount point).
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Ok(canon) = fs::canonicalize(path) else {
        return false;
    };
    let want = canon.to_string_lossy();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == want)
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo (octal).
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let octal = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok());
            if let Some(v) = octal {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a file of the image (as the container would see it before any write) by looking
/// through the layers top-down: the first layer holding `path` wins; a whiteout or an opaque
/// directory on the way hides the lower layers. Used to read `/etc/passwd` and `/etc/group`
/// for `--user`. Symlinks are not followed (these files are regular files in real images);
/// `Ok(None)` when no layer has the file.
pub fn read_image_file(layers_bottom_first: &[PathBuf], path: &str) -> Option<Vec<u8>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let rel = path.trim_start_matches('/');
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    for layer in layers_bottom_first.iter().rev() {
        // A whiteout of the file or of a parent dir, or an opaque parent, ends the search.
        let mut dir = layer.clone();
        let mut hidden = false;
        for (i, c) in comps.iter().enumerate() {
            let p = dir.join(c);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => {
                    hidden = true;
                    break;
                }
                Ok(m) if i + 1 == comps.len() && m.is_file() => {
                    return fs::read(&p).ok();
                }
                Ok(m) if m.is_dir() => {
                    if i + 1 < comps.len() && is_opaque(&p) && !p.join(comps[i + 1]).exists() {
                        hidden = true;
                        break;
                    }
                }
                _ => break,
            }
            dir = p;
        }
        if hidden {
            return None;
        }
    }
    None
}

fn is_opaque(dir: &Path) -> bool {
    rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut [0u8; 4][..])
        .map(|n| n == 1)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_through_layers() {
        let d = tempfile::tempdir().unwrap();
        let l1 = d.path().join("l1");
        let l2 = d.path().join("l2");
        fs::create_dir_all(l1.join("etc")).unwrap();
        fs::create_dir_all(l2.join("etc")).unwrap();
        fs::write(l1.join("etc/passwd"), "old").unwrap();
        fs::write(l1.join("etc/group"), "g").unwrap();
        let layers = vec![l1.clone(), l2.clone()];
        assert_eq!(read_image_file(&layers, "/etc/passwd").unwrap(), b"old");
        fs::write(l2.join("etc/passwd"), "new").unwrap();
        assert_eq!(read_image_file(&layers, "/etc/passwd").unwrap(), b"new");
        assert_eq!(read_image_file(&layers, "/etc/group").unwrap(), b"g");
        assert_eq!(read_image_file(&layers, "/etc/shadow"), None);
        // A whiteout in the upper layer hides the lower file.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            l2.join("etc/group").as_path(),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert_eq!(read_image_file(&layers, "/etc/group"), None);
    }

    #[test]
    fn mkdir_in_root_stays_inside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        fs::create_dir_all(root.join("srv")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        // An image symlink pointing out of the root, absolutely and relatively.
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../outside", root.join("srv/rel")).unwrap();

        mkdir_in_root(&root, "/srv/app/data").unwrap();
        assert!(root.join("srv/app/data").is_dir());
        mkdir_in_root(&root, "/srv/app/data").unwrap();
        mkdir_in_root(&root, "/abs/x").unwrap();
        mkdir_in_root(&root, "/srv/rel/y").unwrap();
        mkdir_in_root(&root, "/../../z").unwrap();
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "created outside the root"
        );
        // The symlinks resolved inside the root instead.
        assert!(
            root.join(outside.strip_prefix("/").unwrap())
                .join("x")
                .is_dir()
        );
        assert!(root.join("outside/y").is_dir());
        assert!(root.join("z").is_dir());
        fs::write(root.join("file"), "").unwrap();
        assert!(mkdir_in_root(&root, "/file/sub").is_err());
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn overlay_mount_merges_layers() {
        let d = tempfile::tempdir().unwrap();
        let l1 = d.path().join("l1");
        let l2 = d.path().join("l2");
        fs::create_dir_all(&l1).unwrap();
        fs::create_dir_all(&l2).unwrap();
        fs::write(l1.join("a"), "1").unwrap();
        fs::write(l2.join("a"), "2").unwrap();
        fs::write(l1.join("b"), "b").unwrap();
        let c = d.path().join("c");
        let o = Overlay::in_dir(&c, vec![l1, l2]);
        o.prepare().unwrap();
        o.mount().unwrap();
        assert!(is_mountpoint(&o.target));
        assert_eq!(fs::read_to_string(o.target.join("a")).unwrap(), "2");
        fs::write(o.target.join("new"), "x").unwrap();
        o.unmount().unwrap();
        assert!(!is_mountpoint(&o.target));
        assert_eq!(fs::read_to_string(c.join("upper/new")).unwrap(), "x");
    }
}
