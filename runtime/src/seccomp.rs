//! Docker's default seccomp profile, as an OCI [`LinuxSeccomp`] for libcontainer.
//!
//! The profile is kept as our own table of rule groups ([`PROFILE`]): syscall names, an
//! action, argument conditions, and include/exclude filters on capabilities,
//! architectures and a minimum kernel version. [`docker_default`] filters it for one
//! container exactly as moby's `setupSeccomp` does:
//!
//! - `excludes.arches` contains the native arch → rule dropped;
//! - `excludes.caps`: ANY listed capability in the container's set → rule dropped;
//! - `excludes.minKernel`: kernel ≥ version → rule dropped;
//! - `includes.arches` set and the native arch not in it → rule dropped;
//! - `includes.caps`: ALL listed capabilities must be in the set, else dropped;
//! - `includes.minKernel`: kernel < version → rule dropped.
//!
//! The architectures list is the native arch plus its sub-architectures from the
//! profile's `archMap`; arches without an entry get no list (libseccomp's native only).
//!
//! Content: moby's default profile as kept in `moby/profiles` `seccomp/default.json`
//! (the profile moved out of `moby/moby` in 2025), including the later fix that denies
//! `AF_ALG` sockets next to `AF_VSOCK` (moby/profiles#20, CVE-2026-31431) and
//! `io_uring_*` being denied (Docker 25). Not included: the keyring syscalls (`add_key`,
//! `keyctl`, `request_key`), which every released Docker profile up to 28 blocks and
//! which only appear in some later snapshots; `unshare` stays gated by `CAP_SYS_ADMIN`.
//!
//! `SCMP_CMP_MASKED_EQ` (the `clone` rule) is written for libcontainer 0.7.0, which reads
//! the operands the other way round from runc: libcontainer builds the libseccomp
//! condition with the mask from `valueTwo` and the expected value from `value`, whereas
//! runc (and Docker's JSON, `{"value": 2114060288}`) put the mask in `value`. Handed to
//! libcontainer, Docker's own encoding becomes "arg & 0 == 0", which libseccomp accepts
//! and which allows every `clone`, namespace flags included (seen on a real kernel by
//! `tests/seccomp_kernel.rs`). So the rule here is `value: 0, valueTwo: mask`.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall,
};

/// EPERM: the default action's errno, as in Docker's profile (`defaultErrnoRet`).
const EPERM: u32 = 1;
/// ENOSYS: returned for `clone3` so that libc falls back to `clone`.
const ENOSYS: u32 = 38;

/// `CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET | CLONE_NEWCGROUP`: `clone` with none of these is allowed without
/// `CAP_SYS_ADMIN`.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `AF_ALG`, `AF_VSOCK`: the socket families a container may not create.
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

#[derive(Clone, Copy)]
enum Action {
    Allow,
    Errno(u32),
}

#[derive(Clone, Copy)]
struct Arg {
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
}

/// `(arg[index] & mask) == 0`, in libcontainer's operand order (see the module notes).
const fn masked_zero(index: usize, mask: u64) -> Arg {
    Arg {
        index,
        value: 0,
        value_two: Some(mask),
        op: LinuxSeccompOperator::ScmpCmpMaskedEq,
    }
}

#[derive(Clone, Copy)]
struct Filter {
    caps: &'static [&'static str],
    /// Docker's native arch names ("amd64", "arm64", "arm", "x86", "s390x", …).
    arches: &'static [&'static str],
    min_kernel: Option<(u32, u32)>,
}

const ANY: Filter = Filter {
    caps: &[],
    arches: &[],
    min_kernel: None,
};

const fn caps(caps: &'static [&'static str]) -> Filter {
    Filter {
        caps,
        arches: &[],
        min_kernel: None,
    }
}

const fn arches(arches: &'static [&'static str]) -> Filter {
    Filter {
        caps: &[],
        arches,
        min_kernel: None,
    }
}

#[derive(Clone, Copy)]
struct Rule {
    names: &'static [&'static str],
    action: Action,
    args: &'static [Arg],
    includes: Filter,
    excludes: Filter,
}

const fn allow(names: &'static [&'static str], includes: Filter) -> Rule {
    Rule {
        names,
        action: Action::Allow,
        args: &[],
        includes,
        excludes: ANY,
    }
}

const fn allow_if(names: &'static [&'static str], args: &'static [Arg]) -> Rule {
    Rule {
        names,
        action: Action::Allow,
        args,
        includes: ANY,
        excludes: ANY,
    }
}

const fn arg0(op: LinuxSeccompOperator, value: u64) -> Arg {
    Arg {
        index: 0,
        value,
        value_two: None,
        op,
    }
}

use LinuxSeccompOperator::{ScmpCmpEq as EQ, ScmpCmpGt as GT, ScmpCmpLt as LT};

/// Syscalls every container may make.
const BASE_ALLOW: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Docker's default profile, in Docker's order.
const PROFILE: &[Rule] = &[
    allow(BASE_ALLOW, ANY),
    allow(
        &["process_vm_readv", "process_vm_writev", "ptrace"],
        Filter {
            caps: &[],
            arches: &[],
            min_kernel: Some((4, 8)),
        },
    ),
    // socket(2) for every family but AF_ALG (38) and AF_VSOCK (40).
    allow_if(&["socket"], &[arg0(LT, AF_ALG)]),
    allow_if(&["socket"], &[arg0(EQ, AF_ALG + 1)]),
    allow_if(&["socket"], &[arg0(GT, AF_VSOCK)]),
    // personality(2): PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, query.
    allow_if(&["personality"], &[arg0(EQ, 0x0)]),
    allow_if(&["personality"], &[arg0(EQ, 0x0008)]),
    allow_if(&["personality"], &[arg0(EQ, 0x20000)]),
    allow_if(&["personality"], &[arg0(EQ, 0x20008)]),
    allow_if(&["personality"], &[arg0(EQ, 0xffff_ffff)]),
    allow(&["sync_file_range2", "swapcontext"], arches(&["ppc64le"])),
    allow(
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        arches(&["arm", "arm64"]),
    ),
    allow(&["arch_prctl"], arches(&["amd64", "x32"])),
    allow(&["modify_ldt"], arches(&["amd64", "x32", "x86"])),
    allow(
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        arches(&["s390", "s390x"]),
    ),
    allow(&["riscv_flush_icache"], arches(&["riscv64"])),
    allow(&["open_by_handle_at"], caps(&["CAP_DAC_READ_SEARCH"])),
    allow(
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
        caps(&["CAP_SYS_ADMIN"]),
    ),
    // clone(2) without namespace flags; s390 passes the flags second.
    Rule {
        names: &["clone"],
        action: Action::Allow,
        args: &[masked_zero(0, CLONE_NAMESPACE_FLAGS)],
        includes: ANY,
        excludes: Filter {
            caps: &["CAP_SYS_ADMIN"],
            arches: &["s390", "s390x"],
            min_kernel: None,
        },
    },
    Rule {
        names: &["clone"],
        action: Action::Allow,
        args: &[masked_zero(1, CLONE_NAMESPACE_FLAGS)],
        includes: arches(&["s390", "s390x"]),
        excludes: caps(&["CAP_SYS_ADMIN"]),
    },
    // clone3's flags live in memory seccomp cannot read: ENOSYS makes libc use clone.
    Rule {
        names: &["clone3"],
        action: Action::Errno(ENOSYS),
        args: &[],
        includes: ANY,
        excludes: caps(&["CAP_SYS_ADMIN"]),
    },
    allow(&["reboot"], caps(&["CAP_SYS_BOOT"])),
    allow(&["chroot"], caps(&["CAP_SYS_CHROOT"])),
    allow(
        &["delete_module", "init_module", "finit_module"],
        caps(&["CAP_SYS_MODULE"]),
    ),
    allow(&["acct"], caps(&["CAP_SYS_PACCT"])),
    allow(
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
        caps(&["CAP_SYS_PTRACE"]),
    ),
    allow(&["iopl", "ioperm"], caps(&["CAP_SYS_RAWIO"])),
    allow(
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        caps(&["CAP_SYS_TIME"]),
    ),
    allow(&["vhangup"], caps(&["CAP_SYS_TTY_CONFIG"])),
    allow(
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
        caps(&["CAP_SYS_NICE"]),
    ),
    allow(&["syslog"], caps(&["CAP_SYSLOG"])),
    allow(&["bpf"], caps(&["CAP_BPF"])),
    allow(&["perf_event_open"], caps(&["CAP_PERFMON"])),
];

/// Maps a Rust arch name (`std::env::consts::ARCH`, or [`host_arch`]) to the native
/// arch name Docker's profile uses (Go's `GOARCH` run through moby's `goToNative`).
fn docker_arch(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "x86_64" => "amd64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc" => "ppc",
        "powerpc64" => "ppc64",
        "powerpc64le" => "ppc64le",
        "mipsel" => "mipsel",
        "mips64" => "mips64",
        "mips64el" => "mipsel64",
        "loongarch64" => "loongarch64",
        _ => return None,
    })
}

/// The profile's `archMap`: native arch → the seccomp architectures to list.
fn arch_map(native: &str) -> &'static [Arch] {
    match native {
        "amd64" => &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "arm64" => &[Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "mips64" => &[
            Arch::ScmpArchMips64,
            Arch::ScmpArchMips,
            Arch::ScmpArchMips64n32,
        ],
        "mipsel64" => &[
            Arch::ScmpArchMipsel64,
            Arch::ScmpArchMipsel,
            Arch::ScmpArchMipsel64n32,
        ],
        "s390x" => &[Arch::ScmpArchS390x, Arch::ScmpArchS390],
        "riscv64" => &[Arch::ScmpArchRiscv64],
        _ => &[],
    }
}

/// This machine's arch in the form [`docker_default`] takes: `std::env::consts::ARCH`,
/// with the byte order added where Rust's name leaves it out (`powerpc64le`, `mipsel`,
/// `mips64el`).
pub fn host_arch() -> &'static str {
    let arch = std::env::consts::ARCH;
    if cfg!(target_endian = "little") {
        match arch {
            "powerpc64" => return "powerpc64le",
            "mips" => return "mipsel",
            "mips64" => return "mips64el",
            _ => {}
        }
    }
    arch
}

fn has_cap(caps: &[String], wanted: &str) -> bool {
    caps.iter().any(|c| {
        let upper = c.to_uppercase();
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        wanted.strip_prefix("CAP_") == Some(name)
    })
}

/// Whether the kernel is at least `min`; an unknown kernel counts as older.
fn kernel_at_least(kernel: Option<(u32, u32)>, min: (u32, u32)) -> bool {
    kernel.is_some_and(|k| k >= min)
}

fn selected(
    rule: &Rule,
    caps: &[String],
    native: Option<&str>,
    kernel: Option<(u32, u32)>,
) -> bool {
    let native_in = |list: &[&str]| native.is_some_and(|n| list.contains(&n));
    let ex = &rule.excludes;
    if !ex.arches.is_empty() && native_in(ex.arches) {
        return false;
    }
    if ex.caps.iter().any(|c| has_cap(caps, c)) {
        return false;
    }
    if ex
        .min_kernel
        .is_some_and(|min| kernel_at_least(kernel, min))
    {
        return false;
    }
    let inc = &rule.includes;
    if !inc.arches.is_empty() && !native_in(inc.arches) {
        return false;
    }
    if !inc.caps.iter().all(|c| has_cap(caps, c)) {
        return false;
    }
    if inc
        .min_kernel
        .is_some_and(|min| !kernel_at_least(kernel, min))
    {
        return false;
    }
    true
}

fn oci_syscall(rule: &Rule) -> LinuxSyscall {
    let mut syscall = LinuxSyscall::default();
    syscall.set_names(rule.names.iter().map(|n| (*n).to_string()).collect());
    match rule.action {
        Action::Allow => {
            syscall.set_action(LinuxSeccompAction::ScmpActAllow);
        }
        Action::Errno(errno) => {
            syscall
                .set_action(LinuxSeccompAction::ScmpActErrno)
                .set_errno_ret(Some(errno));
        }
    }
    if !rule.args.is_empty() {
        let args = rule
            .args
            .iter()
            .map(|a| {
                let builder = LinuxSeccompArgBuilder::default()
                    .index(a.index)
                    .value(a.value)
                    .op(a.op);
                match a.value_two {
                    Some(value_two) => builder.value_two(value_two),
                    None => builder,
                }
                .build()
                // Every field of the builder has a default and there is no
                // validation, so build() cannot fail.
                .expect("LinuxSeccompArgBuilder with defaults cannot fail")
            })
            .collect();
        syscall.set_args(Some(args));
    }
    syscall
}

/// Docker's default seccomp profile for a container with capability set `caps`
/// (`CAP_`-prefixed as from [`crate::defaults::capabilities`]; compared case-insensitively)
/// on architecture `arch` (`std::env::consts::ARCH` style, see [`host_arch`]) and kernel
/// `kernel` (major, minor; see [`kernel_version`]).
///
/// Where Docker fails on an unreadable kernel version, `None` here counts as older than
/// any `minKernel`: `ptrace`, `process_vm_readv` and `process_vm_writev` then need
/// `CAP_SYS_PTRACE`. An arch unknown to Docker gets no architecture list and only the
/// rules without arch conditions.
pub fn docker_default(caps: &[String], arch: &str, kernel: Option<(u32, u32)>) -> LinuxSeccomp {
    let native = docker_arch(arch);
    let syscalls: Vec<LinuxSyscall> = PROFILE
        .iter()
        .filter(|rule| selected(rule, caps, native, kernel))
        .map(oci_syscall)
        .collect();
    let architectures = native.map(arch_map).unwrap_or(&[]);

    let mut profile = LinuxSeccomp::default();
    profile
        .set_default_action(LinuxSeccompAction::ScmpActErrno)
        .set_default_errno_ret(Some(EPERM))
        .set_architectures((!architectures.is_empty()).then(|| architectures.to_vec()))
        .set_syscalls(Some(syscalls));
    profile
}

/// Parses the leading `major.minor` of a kernel release string (`"6.18.0-1-amd64"`),
/// as Docker's `fmt.Sscanf(release, "%d.%d")` does.
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.splitn(2, '.');
    let major = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let minor = rest[..digits].parse().ok()?;
    Some((major, minor))
}

/// The running kernel's (major, minor) version from `uname(2)`, or `None` if the release
/// string does not start with `N.N`.
pub fn kernel_version() -> Option<(u32, u32)> {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    parse_kernel_release(&release)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::{DEFAULT_CAPABILITIES, capabilities};
    use oci_spec::runtime::LinuxSeccompArg;

    fn default_caps() -> Vec<String> {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| (*c).to_string())
            .collect()
    }

    fn with_caps(extra: &[&str]) -> Vec<String> {
        let add: Vec<String> = extra.iter().map(|c| (*c).to_string()).collect();
        capabilities(&add, &[]).unwrap()
    }

    /// All rules naming `name`, as (action, errno, args).
    fn rules_for(
        profile: &LinuxSeccomp,
        name: &str,
    ) -> Vec<(LinuxSeccompAction, Option<u32>, Vec<LinuxSeccompArg>)> {
        profile
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names().iter().any(|n| n == name))
            .map(|s| {
                (
                    s.action(),
                    s.errno_ret(),
                    s.args().clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Allowed without any argument condition.
    fn allowed(profile: &LinuxSeccomp, name: &str) -> bool {
        rules_for(profile, name)
            .iter()
            .any(|(action, _, args)| *action == LinuxSeccompAction::ScmpActAllow && args.is_empty())
    }

    fn arg(index: usize, value: u64, op: LinuxSeccompOperator) -> LinuxSeccompArg {
        LinuxSeccompArgBuilder::default()
            .index(index)
            .value(value)
            .op(op)
            .build()
            .unwrap()
    }

    /// libcontainer's reading of "(arg & mask) == 0".
    fn masked_zero_arg(index: usize, mask: u64) -> LinuxSeccompArg {
        LinuxSeccompArgBuilder::default()
            .index(index)
            .value(0u64)
            .value_two(mask)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
            .unwrap()
    }

    #[test]
    fn defaults_deny_with_eperm() {
        let p = docker_default(&default_caps(), "x86_64", Some((6, 18)));
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        assert_eq!(
            p.architectures(),
            &Some(vec![
                Arch::ScmpArchX86_64,
                Arch::ScmpArchX86,
                Arch::ScmpArchX32
            ])
        );
    }

    #[test]
    fn x86_64_default_caps() {
        let p = docker_default(&default_caps(), "x86_64", Some((6, 18)));
        for name in [
            "read",
            "write",
            "getpid",
            "execve",
            "arch_prctl",
            "modify_ldt",
            "ptrace",
            "chroot",
            "socketcall",
            "name_to_handle_at",
        ] {
            assert!(allowed(&p, name), "{name} should be allowed");
        }
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "reboot",
            "bpf",
            "keyctl",
            "add_key",
            "request_key",
            "io_uring_setup",
            "kexec_load",
            "init_module",
            "open_by_handle_at",
            "clock_settime",
            "perf_event_open",
            "sethostname",
            "set_tls",
            "riscv_flush_icache",
            "lsm_get_self_attr",
        ] {
            assert!(rules_for(&p, name).is_empty(), "{name} should have no rule");
        }
        // clone only without namespace flags.
        assert_eq!(
            rules_for(&p, "clone"),
            vec![(
                LinuxSeccompAction::ScmpActAllow,
                None,
                vec![masked_zero_arg(0, 0x7E02_0000)]
            )]
        );
        // clone3 → ENOSYS.
        assert_eq!(
            rules_for(&p, "clone3"),
            vec![(LinuxSeccompAction::ScmpActErrno, Some(38), vec![])]
        );
        // socket: everything but AF_ALG and AF_VSOCK.
        assert_eq!(
            rules_for(&p, "socket"),
            vec![
                (
                    LinuxSeccompAction::ScmpActAllow,
                    None,
                    vec![arg(0, 38, LinuxSeccompOperator::ScmpCmpLt)]
                ),
                (
                    LinuxSeccompAction::ScmpActAllow,
                    None,
                    vec![arg(0, 39, LinuxSeccompOperator::ScmpCmpEq)]
                ),
                (
                    LinuxSeccompAction::ScmpActAllow,
                    None,
                    vec![arg(0, 40, LinuxSeccompOperator::ScmpCmpGt)]
                ),
            ]
        );
        let personalities: Vec<u64> = rules_for(&p, "personality")
            .iter()
            .map(|(_, _, args)| args[0].value())
            .collect();
        assert_eq!(personalities, vec![0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    }

    #[test]
    fn sys_admin_allows_mount_and_lifts_clone_restriction() {
        let p = docker_default(&with_caps(&["SYS_ADMIN"]), "x86_64", Some((6, 18)));
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "bpf",
            "sethostname",
            "lsm_list_modules",
        ] {
            assert!(allowed(&p, name), "{name} should be allowed");
        }
        assert_eq!(rules_for(&p, "clone").len(), 1);
        assert_eq!(
            rules_for(&p, "clone3"),
            vec![(LinuxSeccompAction::ScmpActAllow, None, vec![])]
        );
        assert!(rules_for(&p, "reboot").is_empty());
    }

    #[test]
    fn capability_gated_groups() {
        let p = docker_default(
            &with_caps(&[
                "SYS_BOOT",
                "SYS_PTRACE",
                "SYS_TIME",
                "BPF",
                "PERFMON",
                "dac_read_search",
                "SYS_NICE",
            ]),
            "x86_64",
            Some((6, 18)),
        );
        for name in [
            "reboot",
            "kcmp",
            "pidfd_getfd",
            "clock_settime64",
            "bpf",
            "perf_event_open",
            "open_by_handle_at",
            "set_mempolicy_home_node",
        ] {
            assert!(allowed(&p, name), "{name} should be allowed");
        }
        // Capabilities dropped from the defaults take their syscalls with them.
        let no_chroot = capabilities(&[], &["SYS_CHROOT".to_string()]).unwrap();
        let p = docker_default(&no_chroot, "x86_64", Some((6, 18)));
        assert!(rules_for(&p, "chroot").is_empty());
        let p = docker_default(&default_caps(), "x86_64", Some((6, 18)));
        assert!(allowed(&p, "chroot"));
    }

    #[test]
    fn ptrace_needs_kernel_4_8_without_cap_sys_ptrace() {
        let old = docker_default(&default_caps(), "x86_64", Some((4, 7)));
        assert!(rules_for(&old, "ptrace").is_empty());
        let unknown = docker_default(&default_caps(), "x86_64", None);
        assert!(rules_for(&unknown, "ptrace").is_empty());
        let new = docker_default(&default_caps(), "x86_64", Some((4, 8)));
        assert!(allowed(&new, "ptrace") && allowed(&new, "process_vm_writev"));
        let old_with_cap = docker_default(&with_caps(&["SYS_PTRACE"]), "x86_64", Some((3, 10)));
        assert!(allowed(&old_with_cap, "ptrace"));
    }

    #[test]
    fn aarch64_and_arm() {
        let p = docker_default(&default_caps(), "aarch64", Some((6, 1)));
        assert_eq!(
            p.architectures(),
            &Some(vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm])
        );
        assert!(allowed(&p, "set_tls") && allowed(&p, "cacheflush"));
        assert!(rules_for(&p, "arch_prctl").is_empty());
        assert!(rules_for(&p, "modify_ldt").is_empty());

        // 32-bit arm has no archMap entry: no list, libseccomp's native arch only.
        let p = docker_default(&default_caps(), "arm", Some((6, 1)));
        assert_eq!(p.architectures(), &None);
        assert!(allowed(&p, "breakpoint"));
    }

    #[test]
    fn s390x_uses_the_second_clone_argument() {
        let p = docker_default(&default_caps(), "s390x", Some((6, 1)));
        assert_eq!(
            p.architectures(),
            &Some(vec![Arch::ScmpArchS390x, Arch::ScmpArchS390])
        );
        assert_eq!(
            rules_for(&p, "clone"),
            vec![(
                LinuxSeccompAction::ScmpActAllow,
                None,
                vec![masked_zero_arg(1, 0x7E02_0000)]
            )]
        );
        assert!(allowed(&p, "s390_runtime_instr"));
    }

    #[test]
    fn riscv64_and_unknown_arches() {
        let p = docker_default(&default_caps(), "riscv64", Some((6, 1)));
        assert_eq!(p.architectures(), &Some(vec![Arch::ScmpArchRiscv64]));
        assert!(allowed(&p, "riscv_flush_icache"));
        let p = docker_default(&default_caps(), "sparc64", Some((6, 1)));
        assert_eq!(p.architectures(), &None);
        assert!(allowed(&p, "read"));
        assert!(rules_for(&p, "riscv_flush_icache").is_empty());
    }

    #[test]
    fn base_list_has_no_duplicates_and_is_large() {
        let mut names: Vec<&str> = BASE_ALLOW.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BASE_ALLOW.len());
        assert!(BASE_ALLOW.len() > 350, "{}", BASE_ALLOW.len());
    }

    #[test]
    fn profile_serialises_like_dockers_json() {
        let p = docker_default(&default_caps(), "x86_64", Some((6, 18)));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        assert_eq!(json["architectures"][0], "SCMP_ARCH_X86_64");
        let clone = json["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["names"] == serde_json::json!(["clone"]))
            .unwrap();
        assert_eq!(
            clone["args"],
            serde_json::json!([{"index": 0, "value": 0, "valueTwo": 2114060288u64, "op": "SCMP_CMP_MASKED_EQ"}])
        );
    }

    #[test]
    fn kernel_release_parsing() {
        assert_eq!(parse_kernel_release("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_kernel_release("3.12-1-amd64"), Some((3, 12)));
        assert_eq!(parse_kernel_release("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel_release("5.10.0+"), Some((5, 10)));
        assert_eq!(parse_kernel_release("6"), None);
        assert_eq!(parse_kernel_release("x.1"), None);
        assert_eq!(parse_kernel_release("6.x"), None);
    }

    #[test]
    fn running_kernel_version_matches_proc() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(kernel_version(), parse_kernel_release(release.trim()));
        assert!(kernel_version().is_some());
    }

    #[test]
    fn host_arch_is_known() {
        assert!(docker_arch(host_arch()).is_some(), "{}", host_arch());
    }
}
