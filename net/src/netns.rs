//! Network namespaces made and kept by the daemon.
//!
//! A container's network namespace is created before the container (so that, with the
//! networking issue, its interfaces can be wired before the workload starts) and pinned by a
//! bind mount of its nsfs file, as `ip netns add` does. The namespace is entered only on a
//! short-lived dedicated OS thread, never on an async worker: namespaces are per thread.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::UnmountFlags;
use rustix::thread::UnshareFlags;

/// Errors of namespace management.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot create the network namespace file {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot create a network namespace for {path}: {source}")]
    Unshare { path: PathBuf, source: io::Error },
    #[error("cannot bring up loopback in the network namespace {path}: {source}")]
    Loopback { path: PathBuf, source: io::Error },
    #[error("cannot pin the network namespace at {path}: {source}")]
    Pin { path: PathBuf, source: io::Error },
    #[error("cannot remove the network namespace {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("the namespace thread for {path} panicked")]
    Thread { path: PathBuf },
}

/// Creates a new network namespace with loopback up and pins it at `path` (a file created
/// here). An existing pinned namespace at `path` is kept.
pub fn create_loopback(path: &Path) -> Result<(), NetnsError> {
    if path.exists() && is_pinned(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| NetnsError::Create {
            path: path.to_owned(),
            source,
        })?;
    }
    File::create(path).map_err(|source| NetnsError::Create {
        path: path.to_owned(),
        source,
    })?;
    let p = path.to_owned();
    let result = std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || -> Result<(), NetnsError> {
            // SAFETY: CLONE_NEWNET only changes this thread's network namespace; the thread
            // exits right after, and no other state is unshared.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }.map_err(|e| {
                NetnsError::Unshare {
                    path: p.clone(),
                    source: e.into(),
                }
            })?;
            loopback_up().map_err(|source| NetnsError::Loopback {
                path: p.clone(),
                source,
            })?;
            rustix::mount::mount_bind(Path::new("/proc/thread-self/ns/net"), &p).map_err(|e| {
                NetnsError::Pin {
                    path: p.clone(),
                    source: e.into(),
                }
            })
        })
        .map_err(|source| NetnsError::Unshare {
            path: path.to_owned(),
            source,
        })?
        .join()
        .map_err(|_| NetnsError::Thread {
            path: path.to_owned(),
        })?;
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Unpins and deletes a namespace made by [`create_loopback`]; a missing one is fine.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match rustix::mount::unmount(path, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => {
            return Err(NetnsError::Remove {
                path: path.to_owned(),
                source: e.into(),
            });
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

// `f_type`'s integer type differs between architectures; the cast is a no-op on some.
#[allow(clippy::unnecessary_cast)]
fn is_pinned(path: &Path) -> bool {
    // A pinned namespace file is on nsfs; the plain file left by a crash is not.
    rustix::fs::statfs(path)
        .map(|s| s.f_type as i64 == NSFS_MAGIC)
        .unwrap_or(false)
}

const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Sets `lo` up in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which lives for both calls.
    let result = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: fd is ours and still open.
    unsafe { libc::close(fd) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_namespace_is_pinned_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ns1");
        create_loopback(&p).unwrap();
        assert!(is_pinned(&p));
        // Idempotent.
        create_loopback(&p).unwrap();
        // Inside it, lo is up and nothing else exists.
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", p.display()))
            .args(["cat", "/proc/net/dev"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let ifaces: Vec<&str> = text
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert_eq!(ifaces, ["lo"]);
        let ip = std::process::Command::new("nsenter")
            .arg(format!("--net={}", p.display()))
            .args(["ip", "-o", "link", "show", "lo"])
            .output()
            .unwrap();
        let ip = String::from_utf8_lossy(&ip.stdout);
        assert!(ip.contains("<LOOPBACK,UP"), "{ip}");
        remove(&p).unwrap();
        assert!(!p.exists());
        remove(&p).unwrap();
    }
}
