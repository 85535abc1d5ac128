//! A sealed in-memory copy of the shoal binary, for the helpers that enter containers.
//!
//! The container helper runs shoal's own code inside the container's namespaces until the
//! workload's `execve`; a hostile process there could open `/proc/<pid>/exe` and overwrite
//! the binary on the host (CVE-2019-5736). As youki does, helpers run from a `memfd` copy of
//! the binary sealed against writes, so there is nothing to overwrite. The daemon makes the
//! copy once at start ([`SealedExe::create`]) and launches every helper from it; a helper
//! started any other way re-executes itself from a fresh sealed copy
//! ([`ensure_sealed`]) before touching a container.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use rustix::fs::{MemfdFlags, SealFlags};

/// Errors while sealing the binary.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read the running binary /proc/self/exe: {0}")]
    ReadSelf(io::Error),
    #[error("cannot create a sealed memfd copy of the binary: {0}")]
    Memfd(io::Error),
    #[error("cannot re-execute from the sealed copy: {0}")]
    Exec(io::Error),
    #[error("the binary is still not sealed after re-executing from a sealed copy")]
    StillUnsealed,
}

const SEALS: SealFlags = SealFlags::SEAL
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE);

/// A sealed memfd holding a copy of the running binary.
#[derive(Debug)]
pub struct SealedExe {
    fd: OwnedFd,
}

impl SealedExe {
    /// Copies `/proc/self/exe` into a new memfd and seals it.
    pub fn create() -> Result<Self, SealError> {
        let mut src = File::open("/proc/self/exe").map_err(SealError::ReadSelf)?;
        let fd = rustix::fs::memfd_create("shoal", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .map_err(|e| SealError::Memfd(e.into()))?;
        let mut dst = File::from(fd);
        io::copy(&mut src, &mut dst).map_err(SealError::Memfd)?;
        let fd = OwnedFd::from(dst);
        rustix::fs::fcntl_add_seals(&fd, SEALS).map_err(|e| SealError::Memfd(e.into()))?;
        Ok(SealedExe { fd })
    }

    /// A path that executes the sealed copy from this process or any child forked from it
    /// (the descriptor is inherited until `execve`, which opens the path first).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// A command that runs the sealed copy.
    pub fn command(&self) -> Command {
        let mut c = Command::new(self.path());
        c.arg0("shoal");
        c
    }

    /// The same for tokio.
    pub fn tokio_command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(self.path());
        c.arg0("shoal");
        c
    }
}

/// Whether the running binary is a sealed memfd.
pub fn is_sealed() -> bool {
    File::open("/proc/self/exe")
        .ok()
        .and_then(|f| rustix::fs::fcntl_get_seals(&f).ok())
        .is_some_and(|s| s.contains(SEALS))
}

const RESEALED_ENV: &str = "_SHOAL_RESEALED";

/// Makes sure the running process executes from a sealed copy: returns at once when it
/// does, otherwise re-executes itself (same arguments) from a new sealed copy and never
/// returns on success.
pub fn ensure_sealed() -> Result<(), SealError> {
    if is_sealed() {
        // SAFETY: called at the top of a single-threaded helper, before any thread exists.
        unsafe { std::env::remove_var(RESEALED_ENV) };
        return Ok(());
    }
    if std::env::var_os(RESEALED_ENV).is_some() {
        return Err(SealError::StillUnsealed);
    }
    let exe = SealedExe::create()?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let err = exe.command().args(args).env(RESEALED_ENV, "1").exec();
    Err(SealError::Exec(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_copy_refuses_writes_and_runs() {
        let exe = SealedExe::create().unwrap();
        let f = File::open(exe.path()).unwrap();
        let seals = rustix::fs::fcntl_get_seals(&f).unwrap();
        assert!(seals.contains(SEALS));
        // Writing through a new writable open must fail.
        if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(exe.path()) {
            use std::io::Write;
            assert!(
                w.write_all(b"x").is_err(),
                "a sealed memfd must refuse writes"
            );
        }
        // The test binary itself is not sealed.
        assert!(!is_sealed());
        // Running the copy works: list tests of this very binary.
        let out = exe.command().arg("--list").output().unwrap();
        assert!(out.status.success());
    }
}
