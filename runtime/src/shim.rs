//! The container helper: one small single-threaded process per container.
//!
//! The daemon's async runtime is multi-threaded, and libcontainer must not be driven from
//! such a process (it `chdir`s the whole process and forks from it). So the daemon spawns
//! this helper — the same binary, re-executed from a sealed memfd copy (see [`crate::sealed`])
//! — which:
//!
//! 1. detaches into its own session (the container outlives a killed or upgraded daemon),
//! 2. mounts the overlay root filesystem,
//! 3. creates and starts the container with libcontainer, owning its stdout and stderr pipes,
//! 4. reports `started` (or the failure) as one JSON line on its stdout to the daemon,
//! 5. copies the container's output into the rotated JSON log files,
//! 6. on exit records the exit code and whether the OOM killer struck (`exit.json`), removes
//!    the container's cgroup and state, unmounts the root, and exits.
//!
//! While it lives it holds an exclusive lock on `shim.lock`, which is how a restarted daemon
//! tells a live helper from a dead one; the daemon watches it through a pidfd.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rustix::event::{PollFd, PollFlags};
use rustix::fs::FlockOperation;
use rustix::process::WaitOptions;
use serde::{Deserialize, Serialize};

use crate::logs::{LogConfig, LogWriter, Stream};
use crate::model::{ContainerRecord, ExitInfo};
use crate::rootfs::Overlay;
use crate::{cgroups, lifecycle, state};

/// File names inside a container directory shared by the helper and the daemon.
pub mod files {
    /// The container record written by the daemon.
    pub const RECORD: &str = "container.json";
    /// The helper's state once the container runs.
    pub const STATE: &str = "state.json";
    /// How the container ended.
    pub const EXIT: &str = "exit.json";
    /// Held locked by the live helper.
    pub const LOCK: &str = "shim.lock";
    /// The helper's own diagnostics.
    pub const SHIM_LOG: &str = "shim.log";
    /// Directory of the container's log files.
    pub const LOGS: &str = "logs";
}

/// Arguments of `shoal shim`.
#[derive(Clone, Debug)]
pub struct ShimArgs {
    /// The container directory (record, bundle, logs).
    pub dir: PathBuf,
    /// libcontainer's state root.
    pub state_root: PathBuf,
    pub log: LogConfig,
}

/// The helper's one-line report to the daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "result")]
pub enum StartReport {
    /// The workload runs with this pid (in the host's pid namespace).
    Started { pid: i32, started_at: DateTime<Utc> },
    /// It could not be started; Docker's exit code for the failure (126/127/128).
    Failed { message: String, exit_code: i32 },
}

/// The helper's state file once the workload runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShimState {
    pub shim_pid: i32,
    pub pid: i32,
    pub started_at: DateTime<Utc>,
}

/// Errors of the helper (reported to the daemon, also logged to `shim.log`).
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot read the container record {path}: {message}")]
    Record { path: PathBuf, message: String },
    #[error("another helper already runs container {id}")]
    AlreadyRunning { id: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error("{0}")]
    Container(String),
    #[error(transparent)]
    Log(#[from] crate::logs::LogError),
}

/// Runs the helper; returns the process exit code. Must be called in a single-threaded
/// process (the `shoal shim` entry point, before anything spawns a thread).
pub fn main(args: ShimArgs) -> i32 {
    // Our stdout is the report pipe to the daemon; anything else goes to stderr (shim.log).
    let mut report = Some(File::from(
        io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .unwrap_or_else(|_| devnull_fd()),
    ));
    // Only `report` may hold the pipe: the daemon reads it to EOF.
    let _ = rustix::stdio::dup2_stdout(devnull_fd());
    let _ = rustix::process::setsid();
    let _ = rustix::process::set_child_subreaper(None);
    let _ = rustix::thread::set_name(c"shoal-shim");
    shield_signals();
    match run(&args, &mut report) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(dir = %args.dir.display(), error = %e, "helper failed");
            let _ = send(
                &mut report,
                &StartReport::Failed {
                    message: e.to_string(),
                    exit_code: exit_code_for(&e.to_string()),
                },
            );
            1
        }
    }
}

fn devnull_fd() -> OwnedFd {
    // /dev/null always exists on a running Linux system; failing here means no usable fds.
    #[allow(clippy::expect_used)]
    OwnedFd::from(File::open("/dev/null").expect("/dev/null must be openable"))
}

/// Makes the helper immune to the signals a terminal or a stray `kill` would send, with a
/// handler that does nothing. Not with SIG_IGN: ignored signals stay ignored across `execve`,
/// so the workload would inherit them (a shell cannot even trap a signal ignored at entry,
/// so `stop` could never run its SIGTERM trap), while handled ones are reset to default.
fn shield_signals() {
    extern "C" fn nothing(_: libc::c_int) {}
    reset_ignored_signals();
    for sig in [
        libc::SIGPIPE,
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGQUIT,
    ] {
        // SAFETY: installs a handler that touches nothing (async-signal-safe by being
        // empty), from a zeroed sigaction with an empty mask.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Resets every signal inherited as ignored to its default action, so that the workload
/// started from this process gets the dispositions a freshly booted process has (the daemon,
/// as any Rust program, ignores SIGPIPE). glibc keeps its two internal signals to itself.
pub(crate) fn reset_ignored_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: reads a disposition into a zeroed struct, and sets SIG_DFL, which runs no
        // handler code.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// Sends the report and closes the pipe (once; later calls do nothing).
fn send(out: &mut Option<File>, r: &StartReport) -> io::Result<()> {
    let Some(mut f) = out.take() else {
        return Ok(());
    };
    let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)
}

/// Docker's exit codes for start failures: 127 not found, 126 not executable, else 128.
fn exit_code_for(message: &str) -> i32 {
    if message.contains("not found") || message.contains("No such file") {
        127
    } else if message.contains("permission") || message.contains("Permission denied") {
        126
    } else {
        128
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ShimError + 'a {
    move |source| ShimError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn run(args: &ShimArgs, report: &mut Option<File>) -> Result<(), ShimError> {
    let dir = &args.dir;
    let lock_path = dir.join(files::LOCK);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err("cannot open", &lock_path))?;
    let record_path = dir.join(files::RECORD);
    let rec: ContainerRecord = state::read_json(&record_path)
        .map_err(|e| ShimError::Record {
            path: record_path.clone(),
            message: e.to_string(),
        })?
        .ok_or_else(|| ShimError::Record {
            path: record_path.clone(),
            message: "missing".into(),
        })?;
    if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(ShimError::AlreadyRunning { id: rec.id.clone() });
    }
    let _ = fs::remove_file(dir.join(files::EXIT));
    let _ = fs::remove_file(dir.join(files::STATE));

    let overlay = Overlay::in_dir(dir, rec.layers.clone());
    overlay.prepare()?;
    let t = Instant::now();
    overlay.mount()?;
    tracing::debug!(
        ms = t.elapsed().as_secs_f64() * 1e3,
        "root filesystem mounted"
    );

    // Docker creates a working directory the image lacks, and seeds empty named volumes
    // with the image's content at their mount points.
    let result = crate::rootfs::mkdir_in_root(&overlay.target, &rec.cwd)
        .map_err(ShimError::from)
        .and_then(|()| copy_up_volumes(&overlay.target, &rec))
        .and_then(|()| run_container(args, &rec, report));
    // Whatever happened, leave no mount behind.
    let t = Instant::now();
    let unmounted = overlay.unmount();
    tracing::debug!(
        ms = t.elapsed().as_secs_f64() * 1e3,
        "root filesystem unmounted"
    );
    if let Err(e) = unmounted {
        tracing::warn!(error = %e, "cannot unmount the root filesystem");
    }
    drop(lock);
    result
}

fn copy_up_volumes(rootfs: &Path, rec: &ContainerRecord) -> Result<(), ShimError> {
    for m in rec.mounts.iter().filter(|m| m.kind == "volume") {
        crate::copyup::copy_up(rootfs, &m.destination, Path::new(&m.source))
            .map_err(|e| ShimError::Container(e.to_string()))?;
    }
    Ok(())
}

fn run_container(
    args: &ShimArgs,
    rec: &ContainerRecord,
    report: &mut Option<File>,
) -> Result<(), ShimError> {
    let dir = &args.dir;
    remove_stale_state(&args.state_root, &rec.id);
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let devnull = File::open("/dev/null").map_err(io_err("cannot open", Path::new("/dev/null")))?;

    let stdio = lifecycle::Stdio {
        stdin: OwnedFd::from(devnull),
        stdout: out_w,
        stderr: err_w,
    };
    let t = Instant::now();
    let (mut container, pidfd) = lifecycle::create_and_start(&rec.id, &args.state_root, dir, stdio)
        .map_err(|e| ShimError::Container(e.0))?;
    let pid = container.pid().map(|p| p.as_raw()).unwrap_or(0);
    let started_at = Utc::now();
    state::write_json_volatile(
        &dir.join(files::STATE),
        &ShimState {
            shim_pid: std::process::id() as i32,
            pid,
            started_at,
        },
    )
    .map_err(|e| ShimError::Container(e.to_string()))?;
    let _ = send(report, &StartReport::Started { pid, started_at });

    let mut logs = LogWriter::open(&dir.join(files::LOGS), args.log)?;
    tracing::debug!(
        ms = t.elapsed().as_secs_f64() * 1e3,
        "container created and started"
    );
    let t = Instant::now();
    let status = pump(&out_r, &err_r, &pidfd, &mut logs);
    tracing::debug!(ms = t.elapsed().as_secs_f64() * 1e3, "container ran");
    let _ = logs.flush();
    reap_children();

    let oom_killed = cgroups::oom_kills(&rec.cgroups_path) > 0;
    let exit = ExitInfo {
        exit_code: status,
        oom_killed,
        finished_at: Utc::now(),
        error: String::new(),
    };
    state::write_json_volatile(&dir.join(files::EXIT), &exit)
        .map_err(|e| ShimError::Container(e.to_string()))?;
    let t = Instant::now();
    let deleted = lifecycle::delete(&mut container);
    tracing::debug!(
        ms = t.elapsed().as_secs_f64() * 1e3,
        "container state deleted"
    );
    if let Err(e) = deleted {
        tracing::warn!(error = %e, "cannot delete the container's runtime state");
    }
    Ok(())
}

/// A libcontainer state directory left by a helper that died (not after a reboot: /run is
/// a tmpfs) would make `build` fail with "container already exists".
fn remove_stale_state(state_root: &Path, id: &str) {
    let d = state_root.join(id);
    if d.exists() {
        if let Ok(mut c) = libcontainer::container::Container::load(d.clone()) {
            let _ = c.delete(true);
        }
        let _ = fs::remove_dir_all(&d);
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ShimError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| io_err("cannot create a pipe", Path::new("pipe"))(e.into()))
}

/// Copies output into the logs until the init exits and the pipes are drained; returns
/// Docker's exit code (the status, or 128 + signal).
fn pump(out_r: &OwnedFd, err_r: &OwnedFd, pidfd: &OwnedFd, logs: &mut LogWriter) -> i32 {
    let mut open = [true, true];
    let mut exit: Option<i32> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if exit.is_some() && !open[0] && !open[1] {
            break;
        }
        if let Some(d) = drain_deadline
            && Instant::now() >= d
        {
            break;
        }
        let mut fds: Vec<PollFd> = Vec::with_capacity(3);
        let mut which = Vec::with_capacity(3);
        if open[0] {
            fds.push(PollFd::new(out_r, PollFlags::IN));
            which.push(0);
        }
        if open[1] {
            fds.push(PollFd::new(err_r, PollFlags::IN));
            which.push(1);
        }
        if exit.is_none() {
            fds.push(PollFd::new(pidfd, PollFlags::IN));
            which.push(2);
        }
        let timeout = drain_deadline.map(|_| rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        });
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "poll failed");
                break;
            }
        }
        let ready: Vec<(usize, PollFlags)> = fds
            .iter()
            .zip(&which)
            .map(|(f, w)| (*w, f.revents()))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        drop(fds);
        for (w, _) in ready {
            match w {
                0 | 1 => {
                    let fd = if w == 0 { out_r } else { err_r };
                    let stream = if w == 0 {
                        Stream::Stdout
                    } else {
                        Stream::Stderr
                    };
                    match rustix::io::read(fd, &mut buf) {
                        Ok(0) => open[w] = false,
                        Ok(n) => {
                            if let Err(e) = logs.write(stream, &buf[..n]) {
                                tracing::warn!(error = %e, "cannot write the container log");
                            }
                        }
                        Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                        Err(_) => open[w] = false,
                    }
                }
                _ => {
                    exit = Some(lifecycle::wait(pidfd));
                    // Processes of the container die with its init; give their buffered
                    // output a moment to arrive, without waiting on a pipe held elsewhere.
                    drain_deadline = Some(Instant::now() + Duration::from_secs(2));
                }
            }
        }
    }
    exit.unwrap_or(255)
}

/// Reaps any other children (libcontainer's intermediate process, orphans re-parented to
/// us as subreaper).
fn reap_children() {
    while let Ok(Some(_)) = rustix::process::waitpid(None, WaitOptions::NOHANG) {}
}

/// Reads the helper's report from its stdout (daemon side, blocking). `None` when the helper
/// died before reporting.
pub fn read_report(mut r: impl Read) -> Option<StartReport> {
    let mut s = String::new();
    r.read_to_string(&mut s).ok()?;
    serde_json::from_str(s.lines().next()?).ok()
}
