//! The generated Docker seccomp profile, loaded into a real process through libcontainer's
//! own seccomp code (`libcontainer::seccomp::initialize_seccomp`), must block what Docker
//! blocks and allow what Docker allows.
//!
//! Each test re-runs this test binary as a child process (selected with `--exact` and an
//! environment variable): the child sets no-new-privs, installs the filter on itself,
//! makes raw syscalls, prints every mismatch to stderr and exits non-zero if there was
//! any. The filter never touches the test process itself. Probes are chosen so that an
//! unfiltered call (we run as root) fails with a different errno or does nothing harmful.

use std::ffi::CStr;
use std::process::Command;

use shoal_runtime::defaults::capabilities;
use shoal_runtime::seccomp::{docker_default, host_arch, kernel_version};

/// Set in the child to the profile variant to install.
const CHILD_ENV: &str = "SHOAL_SECCOMP_KERNEL_CHILD";

/// A path that does not exist: probes that reach the kernel fail there harmlessly.
const MISSING: &CStr = c"/nonexistent-shoal-seccomp";

/// What a probe expects.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The call succeeds (returns ≥ 0).
    Ok,
    /// The call fails with this errno.
    Errno(i32),
    /// The call fails, but not with this errno (it reached the kernel).
    NotErrno(i32),
}

type Outcome = Result<libc::c_long, i32>;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A raw syscall with up to five integer arguments (pointers passed as integers).
fn sys(nr: libc::c_long, args: [libc::c_long; 5]) -> Outcome {
    // SAFETY: every probe passes integers, null, or pointers to static NUL-terminated
    // strings, which the kernel only reads; none of the probed syscalls writes to our
    // memory or changes our address space.
    let ret = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4]) };
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

fn ptr(s: &'static CStr) -> libc::c_long {
    s.as_ptr() as libc::c_long
}

/// `socket(family, typ, 0)`, closing the descriptor if one is made.
fn socket(family: libc::c_int, typ: libc::c_int) -> Outcome {
    let r = sys(libc::SYS_socket, [family.into(), typ.into(), 0, 0, 0]);
    if let Ok(fd) = r {
        sys(libc::SYS_close, [fd, 0, 0, 0, 0]).ok();
    }
    r
}

/// `fork()` through glibc (which uses `clone(SIGCHLD|CLONE_CHILD_*)`); the child exits 0
/// at once and is reaped.
fn fork_and_reap() -> Outcome {
    // SAFETY: the child only calls the async-signal-safe _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: terminating the forked child without running any Rust code.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        return Err(errno());
    }
    reap(pid);
    Ok(pid.into())
}

/// Raw `clone(flags, NULL, …)`: without CLONE_VM and with a null stack this behaves like
/// fork. A child that appears exits at once and is reaped.
fn raw_clone(flags: libc::c_int) -> Outcome {
    // SAFETY: as above, fork-like; the child only calls _exit.
    let ret = unsafe { libc::syscall(libc::SYS_clone, libc::c_long::from(flags), 0, 0, 0, 0) };
    if ret == 0 {
        // SAFETY: terminating the cloned child without running any Rust code.
        unsafe { libc::_exit(0) };
    }
    if ret < 0 {
        return Err(errno());
    }
    reap(ret as libc::pid_t);
    Ok(ret)
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// Probes run so far and their mismatches.
#[derive(Default)]
struct Probes {
    count: usize,
    failures: Vec<String>,
}

impl Probes {
    fn check(&mut self, what: &str, got: Outcome, want: Expect) {
        self.count += 1;
        let ok = match (got, want) {
            (Ok(_), Expect::Ok) => true,
            (Err(e), Expect::Errno(w)) => e == w,
            (Err(e), Expect::NotErrno(w)) => e != w,
            _ => false,
        };
        if !ok {
            self.failures
                .push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }
}

/// The child side: install the profile for `variant` and probe.
fn child(variant: &str) -> ! {
    let sys_admin = variant == "sys_admin";
    let add = if sys_admin {
        vec!["SYS_ADMIN".to_string()]
    } else {
        Vec::new()
    };
    let caps = match capabilities(&add, &[]) {
        Ok(caps) => caps,
        Err(err) => {
            eprintln!("capabilities: {err}");
            std::process::exit(2);
        }
    };
    let profile = docker_default(&caps, host_arch(), kernel_version());

    if let Err(err) = sys(
        libc::SYS_prctl,
        [libc::PR_SET_NO_NEW_PRIVS.into(), 1, 0, 0, 0],
    ) {
        eprintln!("PR_SET_NO_NEW_PRIVS: errno {err}");
        std::process::exit(3);
    }
    if let Err(err) = libcontainer::seccomp::initialize_seccomp(&profile) {
        eprintln!("initialize_seccomp: {err:?}");
        std::process::exit(4);
    }

    let eperm = Expect::Errno(libc::EPERM);
    let mut p = Probes::default();
    p.check("getpid", sys(libc::SYS_getpid, [0; 5]), Expect::Ok);
    p.check("fork", fork_and_reap(), Expect::Ok);
    p.check("clone(SIGCHLD)", raw_clone(libc::SIGCHLD), Expect::Ok);
    p.check(
        "socket(AF_UNIX)",
        socket(libc::AF_UNIX, libc::SOCK_STREAM),
        Expect::Ok,
    );
    p.check(
        "socket(AF_NETLINK)",
        socket(libc::AF_NETLINK, libc::SOCK_RAW),
        Expect::Ok,
    );
    p.check(
        "socket(AF_ALG)",
        socket(libc::AF_ALG, libc::SOCK_SEQPACKET),
        eperm,
    );
    p.check(
        "socket(AF_VSOCK)",
        socket(libc::AF_VSOCK, libc::SOCK_STREAM),
        eperm,
    );
    p.check(
        "personality(query)",
        sys(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0]),
        Expect::Ok,
    );
    p.check(
        "personality(ADDR_NO_RANDOMIZE)",
        sys(
            libc::SYS_personality,
            [libc::ADDR_NO_RANDOMIZE.into(), 0, 0, 0, 0],
        ),
        eperm,
    );
    // Allowed through CAP_SYS_CHROOT (a default): the kernel answers ENOENT.
    p.check(
        "chroot(missing dir)",
        sys(libc::SYS_chroot, [ptr(MISSING), 0, 0, 0, 0]),
        Expect::Errno(libc::ENOENT),
    );
    // Unfiltered as root: EINVAL for the bad magic number.
    p.check("reboot(bad magic)", sys(libc::SYS_reboot, [0; 5]), eperm);
    // Keyring (KEYCTL_GET_KEYRING_ID of the session keyring) and io_uring: never allowed.
    p.check(
        "keyctl(GET_KEYRING_ID)",
        sys(libc::SYS_keyctl, [0, -3, 0, 0, 0]),
        eperm,
    );
    p.check(
        "io_uring_setup",
        sys(libc::SYS_io_uring_setup, [0; 5]),
        eperm,
    );
    // ptrace is allowed from kernel 4.8: the kernel itself says there is no such tracee.
    p.check(
        "ptrace(PEEKDATA, 1)",
        sys(libc::SYS_ptrace, [libc::PTRACE_PEEKDATA.into(), 1, 0, 0, 0]),
        Expect::NotErrno(libc::EPERM),
    );

    let mount = sys(
        libc::SYS_mount,
        [ptr(c"none"), ptr(MISSING), ptr(c"shoal-bogus-fs"), 0, 0],
    );
    let unshare = sys(libc::SYS_unshare, [libc::CLONE_NEWUTS.into(), 0, 0, 0, 0]);
    let clone3 = sys(libc::SYS_clone3, [0; 5]);
    let clone_ns = raw_clone(libc::CLONE_NEWUTS | libc::SIGCHLD);
    if sys_admin {
        p.check("mount(bogus fs)", mount, Expect::NotErrno(libc::EPERM));
        p.check("unshare(CLONE_NEWUTS)", unshare, Expect::Ok);
        // Reaches the kernel, which rejects a null, zero-sized clone_args.
        p.check("clone3(NULL, 0)", clone3, Expect::Errno(libc::EINVAL));
        p.check("clone(CLONE_NEWUTS)", clone_ns, Expect::Ok);
    } else {
        p.check("mount(bogus fs)", mount, eperm);
        p.check("unshare(CLONE_NEWUTS)", unshare, eperm);
        p.check("clone3(NULL, 0)", clone3, Expect::Errno(libc::ENOSYS));
        p.check("clone(CLONE_NEWUTS)", clone_ns, eperm);
    }

    for failure in &p.failures {
        eprintln!("MISMATCH {failure}");
    }
    eprintln!("PROBES {}", p.count);
    std::process::exit(if p.failures.is_empty() { 0 } else { 1 });
}

/// In the child, runs the probes; in the parent, re-runs this test binary as the child
/// for `test_name` with profile `variant` and checks its report.
fn run_child(test_name: &str, variant: &str) {
    if let Ok(variant) = std::env::var(CHILD_ENV) {
        child(&variant);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    if !status.lines().any(|l| l.starts_with("Seccomp:")) {
        eprintln!("SKIPPED {test_name}: kernel without seccomp (no Seccomp: in /proc/self/status)");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, variant)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child with the {variant} profile failed ({}):\n{stderr}",
        out.status
    );
    // The child must really have run the probes, not an empty test list.
    let probes: usize = stderr
        .lines()
        .find_map(|l| l.strip_prefix("PROBES "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(probes, 18, "child report:\n{stderr}");
}

#[test]
fn default_profile_blocks_namespaces_mount_and_af_alg() {
    run_child(
        "default_profile_blocks_namespaces_mount_and_af_alg",
        "default",
    );
}

#[test]
fn sys_admin_profile_allows_namespaces_and_mount() {
    run_child("sys_admin_profile_allows_namespaces_and_mount", "sys_admin");
}
