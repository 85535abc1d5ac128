//! `exec`: a process joined to a running container.
//!
//! Like container creation, joining namespaces goes through libcontainer in a helper process
//! (`shoal shim-exec`, from the sealed binary), never in the daemon. The helper's stdout and
//! stderr are the exec'd process's, piped to the daemon, and it exits with the process's
//! exit code.

use std::path::PathBuf;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use rustix::process::WaitOptions;

/// Exit code of the helper when the process could not be started (Docker uses 126 for a
/// failed `exec`, 127 when the command does not exist).
pub const EXEC_FAILED: i32 = 126;
/// Exit code when the command is not found.
pub const EXEC_NOT_FOUND: i32 = 127;

/// Arguments of `shoal shim-exec`.
#[derive(Clone, Debug)]
pub struct ExecArgs {
    pub state_root: PathBuf,
    pub id: String,
    /// The OCI process to run (written by the daemon, removed here once read).
    pub process: PathBuf,
}

/// Runs the helper: joins the container, waits for the process, returns its exit code.
pub fn main(a: ExecArgs) -> i32 {
    // The process must not inherit the daemon's ignored signals (SIGPIPE).
    crate::shim::reset_ignored_signals();
    let builder = match ContainerBuilder::new(a.id.clone(), SyscallType::default())
        .with_root_path(&a.state_root)
    {
        Ok(b) => b,
        Err(e) => return fail(&format!("invalid state root: {e}")),
    };
    let tenant = builder
        .as_tenant()
        .with_process(Some(&a.process))
        .with_detach(false);
    let built = tenant.build();
    let _ = std::fs::remove_file(&a.process);
    let pid = match built {
        Ok(pid) => pid,
        Err(e) => {
            let msg = crate::lifecycle::describe(&e);
            let code = if msg.contains("not found") {
                EXEC_NOT_FOUND
            } else {
                EXEC_FAILED
            };
            eprintln!("OCI runtime exec failed: {msg}");
            return code;
        }
    };
    let Some(pid) = rustix::process::Pid::from_raw(pid.as_raw()) else {
        return fail("the exec'd process has no pid");
    };
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, st))) => {
                if let Some(c) = st.exit_status() {
                    return c;
                }
                if let Some(s) = st.terminating_signal() {
                    return 128 + s;
                }
            }
            Ok(None) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return fail(&format!("cannot wait for the exec'd process: {e}")),
        }
    }
}

fn fail(msg: &str) -> i32 {
    eprintln!("OCI runtime exec failed: {msg}");
    EXEC_FAILED
}
