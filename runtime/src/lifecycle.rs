//! One container's libcontainer lifecycle, driven from the calling process: create, start,
//! wait, delete.
//!
//! Must run in a single-threaded process (libcontainer changes the working directory of the
//! whole process and forks from it): the shim and the benchmark's library path call it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use rustix::process::{Pid, PidfdFlags, WaitIdOptions};

/// A failure of libcontainer, with its whole cause chain in the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LifecycleError(pub String);

/// The three standard streams of the container's init.
#[derive(Debug)]
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Creates and starts the container of the OCI bundle `bundle` under libcontainer's state
/// root; returns it with a pidfd of its init (its child, so [`wait`] can reap it).
pub fn create_and_start(
    id: &str,
    state_root: &Path,
    bundle: &Path,
    stdio: Stdio,
) -> Result<(Container, OwnedFd), LifecycleError> {
    let mut container = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(state_root)
        .map_err(|e| LifecycleError(format!("invalid state root {}: {e}", state_root.display())))?
        .with_stdin(stdio.stdin)
        .with_stdout(stdio.stdout)
        .with_stderr(stdio.stderr)
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| LifecycleError(describe(&e)))?;
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(LifecycleError(describe(&e)));
    }
    let pidfd = container
        .pid()
        .and_then(|p| Pid::from_raw(p.as_raw()))
        .ok_or_else(|| LifecycleError("the container has no init pid".into()))
        .and_then(|p| {
            rustix::process::pidfd_open(p, PidfdFlags::empty())
                .map_err(|e| LifecycleError(format!("cannot watch the container init: {e}")))
        });
    match pidfd {
        Ok(fd) => Ok((container, fd)),
        Err(e) => {
            let _ = container.delete(true);
            Err(e)
        }
    }
}

/// Waits for the init behind `pidfd` to exit and reaps it; Docker's exit code (the status,
/// or 128 + the signal).
pub fn wait(pidfd: &OwnedFd) -> i32 {
    loop {
        match rustix::process::waitid(
            rustix::process::WaitId::PidFd(pidfd.as_fd()),
            WaitIdOptions::EXITED,
        ) {
            Ok(Some(st)) => {
                if let Some(code) = st.exit_status() {
                    return code;
                }
                if let Some(sig) = st.terminating_signal() {
                    return 128 + sig;
                }
                return 255;
            }
            Ok(None) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot collect the container's exit status");
                return 255;
            }
        }
    }
}

/// Removes the container's cgroup and runtime state (killing anything left in it).
pub fn delete(container: &mut Container) -> Result<(), LifecycleError> {
    container
        .delete(true)
        .map_err(|e| LifecycleError(describe(&e)))
}

/// Create → start → wait → delete; returns the exit code.
pub fn run_to_completion(
    id: &str,
    state_root: &Path,
    bundle: &Path,
    stdio: Stdio,
) -> Result<i32, LifecycleError> {
    let (mut c, pidfd) = create_and_start(id, state_root, bundle, stdio)?;
    let code = wait(&pidfd);
    delete(&mut c)?;
    Ok(code)
}

/// An error with its cause chain (libcontainer nests the useful part, e.g. "executable
/// 'x' not found in $PATH").
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg = format!("{msg}: {t}");
        }
        src = s.source();
    }
    msg
}
