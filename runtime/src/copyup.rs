//! Docker's volume copy-up: the first time an empty named volume is mounted over a
//! directory that the image fills, the image's content is copied into the volume (modes,
//! ownership, symlinks, devices kept), so `-v data:/etc/app` starts with the image's files.
//!
//! The source is the container's mounted root filesystem, which the image controls: every
//! lookup is done relative to directory descriptors (the mount point resolved with
//! `RESOLVE_IN_ROOT`, entries opened with `O_NOFOLLOW`), so a symlink in the image can never
//! make the copy read from or write to the host.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps, openat, openat2};

/// An error of the copy, naming the path inside the container.
#[derive(Debug, thiserror::Error)]
#[error("cannot copy the image's {path} into the volume: {source}")]
pub struct CopyUpError {
    pub path: String,
    pub source: io::Error,
}

/// Copies `container_path` of the mounted root `rootfs` into `volume_dir` when the volume is
/// empty and the image has a directory there. Returns whether anything was copied.
pub fn copy_up(
    rootfs: &Path,
    container_path: &str,
    volume_dir: &Path,
) -> Result<bool, CopyUpError> {
    let err = |path: &str| {
        let path = path.to_owned();
        move |source: io::Error| CopyUpError { path, source }
    };
    let mut entries = std::fs::read_dir(volume_dir).map_err(err(container_path))?;
    if entries.next().is_some() {
        return Ok(false);
    }
    let root = File::open(rootfs).map_err(err("/"))?;
    let rel = container_path.trim_start_matches('/');
    let src = match openat2(
        &root,
        if rel.is_empty() { "." } else { rel },
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => return Ok(false),
        Err(e) => return Err(err(container_path)(e.into())),
    };
    let dst: OwnedFd = File::open(volume_dir).map_err(err(container_path))?.into();
    let mut copied = false;
    copy_dir(&src, &dst, &PathBuf::from(container_path), &mut copied)?;
    // The volume's root takes the mount point's owner and mode, as Docker does.
    let st = rustix::fs::fstat(&src).map_err(|e| err(container_path)(e.into()))?;
    rustix::fs::fchown(
        &dst,
        Some(rustix::process::Uid::from_raw(st.st_uid)),
        Some(rustix::process::Gid::from_raw(st.st_gid)),
    )
    .map_err(|e| err(container_path)(e.into()))?;
    rustix::fs::fchmod(&dst, Mode::from_raw_mode(st.st_mode & 0o7777))
        .map_err(|e| err(container_path)(e.into()))?;
    Ok(copied)
}

fn copy_dir(src: &OwnedFd, dst: &OwnedFd, at: &Path, copied: &mut bool) -> Result<(), CopyUpError> {
    let err = |p: &Path| {
        let path = p.display().to_string();
        move |e: rustix::io::Errno| CopyUpError {
            path,
            source: e.into(),
        }
    };
    let dir = rustix::fs::Dir::read_from(src).map_err(err(at))?;
    for entry in dir {
        let entry = entry.map_err(err(at))?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let path = at.join(std::ffi::OsStr::new(&*String::from_utf8_lossy(
            name.to_bytes(),
        )));
        let st = rustix::fs::statat(src, name, AtFlags::SYMLINK_NOFOLLOW).map_err(err(&path))?;
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                rustix::fs::mkdirat(dst, name, Mode::from_raw_mode(0o700)).map_err(err(&path))?;
                let s = openat(
                    src,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(err(&path))?;
                let d = openat(
                    dst,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(err(&path))?;
                copy_dir(&s, &d, &path, copied)?;
                set_owner_mode(dst, name, &st, Some(mode)).map_err(err(&path))?;
            }
            FileType::RegularFile => {
                let s = openat(
                    src,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(err(&path))?;
                let d = openat(
                    dst,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(err(&path))?;
                let (mut s, mut d) = (File::from(s), File::from(d));
                io::copy(&mut s, &mut d).map_err(|source| CopyUpError {
                    path: path.display().to_string(),
                    source,
                })?;
                set_owner_mode(dst, name, &st, Some(mode)).map_err(err(&path))?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src, name, Vec::new()).map_err(err(&path))?;
                rustix::fs::symlinkat(&*target, dst, name).map_err(err(&path))?;
                set_owner_mode(dst, name, &st, None).map_err(err(&path))?;
            }
            other => {
                rustix::fs::mknodat(dst, name, other, mode, st.st_rdev).map_err(err(&path))?;
                set_owner_mode(dst, name, &st, Some(mode)).map_err(err(&path))?;
            }
        }
        *copied = true;
    }
    Ok(())
}

/// Owner (never following symlinks), then mode (chown clears set-id bits), then times.
fn set_owner_mode(
    dir: &OwnedFd,
    name: &std::ffi::CStr,
    st: &rustix::fs::Stat,
    mode: Option<Mode>,
) -> Result<(), rustix::io::Errno> {
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::process::Uid::from_raw(st.st_uid)),
        Some(rustix::process::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if let Some(m) = mode {
        rustix::fs::chmodat(dir, name, m, AtFlags::empty())?;
    }
    let times = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    };
    rustix::fs::utimensat(dir.as_fd(), name, &times, AtFlags::SYMLINK_NOFOLLOW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn copies_into_empty_volume_only_and_stays_inside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let etc = root.join("etc/app");
        std::fs::create_dir_all(etc.join("sub")).unwrap();
        std::fs::write(etc.join("conf"), "x=1").unwrap();
        std::fs::set_permissions(etc.join("conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(etc.join("conf"), Some(1000), Some(2000)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", etc.join("link")).unwrap();
        std::fs::write(etc.join("sub/deep"), "deep").unwrap();
        // An escape attempt: the mount point itself is a symlink to a host path.
        std::os::unix::fs::symlink("/etc", root.join("evil")).unwrap();

        let vol = d.path().join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        assert!(copy_up(&root, "/etc/app", &vol).unwrap());
        assert_eq!(std::fs::read_to_string(vol.join("conf")).unwrap(), "x=1");
        let m = std::fs::metadata(vol.join("conf")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (1000, 2000, 0o640));
        assert_eq!(
            std::fs::read_link(vol.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            std::fs::read_to_string(vol.join("sub/deep")).unwrap(),
            "deep"
        );

        // Not empty any more: nothing happens.
        std::fs::write(vol.join("conf"), "changed").unwrap();
        assert!(!copy_up(&root, "/etc/app", &vol).unwrap());
        assert_eq!(
            std::fs::read_to_string(vol.join("conf")).unwrap(),
            "changed"
        );

        // A path the image lacks copies nothing.
        let empty = d.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(!copy_up(&root, "/nope", &empty).unwrap());

        // `evil -> /etc` resolves inside the root (root/etc), never the host's /etc.
        let v2 = d.path().join("v2");
        std::fs::create_dir_all(&v2).unwrap();
        copy_up(&root, "/evil", &v2).unwrap();
        assert!(
            !v2.join("passwd").exists(),
            "the host's /etc must not be copied"
        );
        assert!(v2.join("app/conf").exists());
    }
}
