//! Docker-equivalent container defaults: capability set, masked and read-only paths,
//! standard mounts and device cgroup rules.
//!
//! Everything here is pure data for the spec builder. The values follow moby's
//! `oci/defaults.go`, `oci/caps/utils.go` and `daemon/oci_linux.go`, plus the device rules
//! runc appends on its own (`libcontainer/specconv`: `AllowedDevices`), so that a spec
//! handed to libcontainer gives a container what `docker run` gives it.
//!
//! Notes on what libcontainer 0.7.0 does itself (read from its sources):
//! - Device nodes: `rootfs::prepare_rootfs` always creates `/dev/null`, `zero`, `full`,
//!   `tty`, `urandom` and `random` (mknod, or bind mounts in a user namespace), the
//!   `/dev/ptmx -> pts/ptmx` link and the `/dev/fd`, `stdin`, `stdout`, `stderr` links, in
//!   addition to any device listed in the spec. Docker lists no devices in the spec either,
//!   so there is no `default_devices()` here.
//! - Device cgroup: on cgroup v1 libcgroups appends its own allow rules (the same six
//!   devices, `c *:* m`, `b *:* m`, console, pts, ptmx, tun) after the spec's rules. On
//!   cgroup v2 device rules are an eBPF program, from libcgroups' `cgroupsv2_devices`
//!   feature, which the workspace enables.
//! - `/sys/fs/cgroup`: a mount of type `cgroup` is special-cased by libcontainer. On a
//!   unified (v2) host it mounts `cgroup2` (falling back to a bind mount of the
//!   container's own cgroup) with the spec's flags, so `ro` is honoured. On a v1 or hybrid
//!   host it mounts a tmpfs and bind-mounts each subsystem hierarchy `rw`: the spec's `ro`
//!   is not applied there, so `spec.rs` replaces that mount on v1 hosts with read-only
//!   binds of its own.

use std::collections::BTreeSet;
use std::path::PathBuf;

use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxDeviceCgroup, LinuxDeviceType, Mount,
};

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every Linux capability up to `CAP_CHECKPOINT_RESTORE` (40), in kernel number order.
/// `--cap-add ALL` expands to this list (Docker uses the running kernel's list instead).
const ALL_CAPABILITIES: &[(&str, Capability)] = &[
    ("CAP_CHOWN", Capability::Chown),
    ("CAP_DAC_OVERRIDE", Capability::DacOverride),
    ("CAP_DAC_READ_SEARCH", Capability::DacReadSearch),
    ("CAP_FOWNER", Capability::Fowner),
    ("CAP_FSETID", Capability::Fsetid),
    ("CAP_KILL", Capability::Kill),
    ("CAP_SETGID", Capability::Setgid),
    ("CAP_SETUID", Capability::Setuid),
    ("CAP_SETPCAP", Capability::Setpcap),
    ("CAP_LINUX_IMMUTABLE", Capability::LinuxImmutable),
    ("CAP_NET_BIND_SERVICE", Capability::NetBindService),
    ("CAP_NET_BROADCAST", Capability::NetBroadcast),
    ("CAP_NET_ADMIN", Capability::NetAdmin),
    ("CAP_NET_RAW", Capability::NetRaw),
    ("CAP_IPC_LOCK", Capability::IpcLock),
    ("CAP_IPC_OWNER", Capability::IpcOwner),
    ("CAP_SYS_MODULE", Capability::SysModule),
    ("CAP_SYS_RAWIO", Capability::SysRawio),
    ("CAP_SYS_CHROOT", Capability::SysChroot),
    ("CAP_SYS_PTRACE", Capability::SysPtrace),
    ("CAP_SYS_PACCT", Capability::SysPacct),
    ("CAP_SYS_ADMIN", Capability::SysAdmin),
    ("CAP_SYS_BOOT", Capability::SysBoot),
    ("CAP_SYS_NICE", Capability::SysNice),
    ("CAP_SYS_RESOURCE", Capability::SysResource),
    ("CAP_SYS_TIME", Capability::SysTime),
    ("CAP_SYS_TTY_CONFIG", Capability::SysTtyConfig),
    ("CAP_MKNOD", Capability::Mknod),
    ("CAP_LEASE", Capability::Lease),
    ("CAP_AUDIT_WRITE", Capability::AuditWrite),
    ("CAP_AUDIT_CONTROL", Capability::AuditControl),
    ("CAP_SETFCAP", Capability::Setfcap),
    ("CAP_MAC_OVERRIDE", Capability::MacOverride),
    ("CAP_MAC_ADMIN", Capability::MacAdmin),
    ("CAP_SYSLOG", Capability::Syslog),
    ("CAP_WAKE_ALARM", Capability::WakeAlarm),
    ("CAP_BLOCK_SUSPEND", Capability::BlockSuspend),
    ("CAP_AUDIT_READ", Capability::AuditRead),
    ("CAP_PERFMON", Capability::Perfmon),
    ("CAP_BPF", Capability::Bpf),
    ("CAP_CHECKPOINT_RESTORE", Capability::CheckpointRestore),
];

/// The magic value of `--cap-add` / `--cap-drop` meaning every capability.
const ALL: &str = "ALL";

/// Errors from capability handling.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapabilityError {
    /// A name that is not a Linux capability (shown normalised, as Docker does).
    #[error("unknown capability: {name:?}")]
    Unknown {
        /// The normalised name, e.g. `CAP_FOO`.
        name: String,
    },
}

/// Normalises one `--cap-add`/`--cap-drop` entry like Docker's
/// `NormalizeLegacyCapabilities`: upper-case, `CAP_` prefix added, `ALL` kept as is.
fn normalize(name: &str) -> Result<String, CapabilityError> {
    let upper = name.to_uppercase();
    if upper == ALL {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.iter().any(|(known, _)| *known == full) {
        Ok(full)
    } else {
        Err(CapabilityError::Unknown { name: full })
    }
}

fn normalize_all(names: &[String]) -> Result<Vec<String>, CapabilityError> {
    names.iter().map(|n| normalize(n)).collect()
}

/// The container's capability set from `cap_add`/`cap_drop`, with Docker's
/// `TweakCapabilities` semantics: names are case-insensitive with or without `CAP_`;
/// `ALL` in `cap_add` means every capability except those dropped; `ALL` in `cap_drop`
/// means only the added ones; otherwise the defaults minus drops plus adds. Drops are
/// validated before adds, as Docker does. The result is sorted, deduplicated and
/// `CAP_`-prefixed. (Privileged containers are the spec builder's business: they get
/// every capability.)
pub fn capabilities(
    cap_add: &[String],
    cap_drop: &[String],
) -> Result<Vec<String>, CapabilityError> {
    let drop = normalize_all(cap_drop)?;
    let add = normalize_all(cap_add)?;

    let set: BTreeSet<String> = if add.iter().any(|c| c == ALL) {
        ALL_CAPABILITIES
            .iter()
            .map(|(name, _)| (*name).to_string())
            .filter(|name| !drop.contains(name))
            .collect()
    } else if drop.iter().any(|c| c == ALL) {
        add.into_iter().collect()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|name| (*name).to_string())
            .filter(|name| !drop.contains(name))
            .chain(add)
            .collect()
    };
    Ok(set.into_iter().collect())
}

/// Converts a capability list (as returned by [`capabilities`]) to the OCI process
/// capabilities the way moby's `oci.SetCapabilities` does: bounding, effective and
/// permitted are the set, for root and non-root users alike (the kernel clears effective
/// and permitted at `execve` for a non-root user without file capabilities). Docker leaves
/// inheritable and ambient unset; here they are explicitly empty because libcontainer
/// leaves a set it is not given as inherited from the calling process.
pub fn oci_capabilities(caps: &[String]) -> Result<LinuxCapabilities, CapabilityError> {
    let mut set = Capabilities::new();
    for name in caps {
        let full = normalize(name)?;
        let cap = ALL_CAPABILITIES
            .iter()
            .find(|(known, _)| *known == full)
            .map(|(_, cap)| *cap)
            // "ALL" is the only name normalize() accepts that is not in the table.
            .ok_or(CapabilityError::Unknown { name: full })?;
        set.insert(cap);
    }
    let mut out = LinuxCapabilities::default();
    out.set_bounding(Some(set.clone()))
        .set_effective(Some(set.clone()))
        .set_permitted(Some(set))
        .set_inheritable(Some(Capabilities::new()))
        .set_ambient(Some(Capabilities::new()));
    Ok(out)
}

/// Paths Docker masks in every non-privileged container (`linux.maskedPaths`).
pub fn masked_paths() -> Vec<String> {
    [
        "/proc/asound",
        "/proc/acpi",
        "/proc/interrupts",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]
    .iter()
    .map(|p| (*p).to_string())
    .collect()
}

/// Paths Docker makes read-only in every non-privileged container
/// (`linux.readonlyPaths`).
pub fn readonly_paths() -> Vec<String> {
    [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .iter()
    .map(|p| (*p).to_string())
    .collect()
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination))
        .set_typ(Some(typ.to_string()))
        .set_source(Some(PathBuf::from(source)))
        .set_options(Some(options.iter().map(|o| (*o).to_string()).collect()));
    m
}

/// Docker's standard mounts (moby `oci.DefaultLinuxSpec`), with `/dev/shm` sized to
/// `shm_size` bytes as `docker run --shm-size` does (Docker's default is 64 MiB).
/// `/sys/fs/cgroup` is of type `cgroup`, which libcontainer 0.7 maps to the host's
/// cgroup layout itself (see the module notes).
pub fn default_mounts(shm_size: u64) -> Vec<Mount> {
    let shm_size = format!("size={shm_size}");
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        ),
    ]
}

fn device_rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(allow)
        .set_typ(typ)
        .set_major(major)
        .set_minor(minor)
        .set_access(Some(access.to_string()));
    rule
}

/// The device cgroup rules of a Docker container, in order: moby's
/// `oci.DefaultLinuxSpec` list (deny everything; allow zero, null, urandom, random, tty,
/// console; deny fuse), then the rules runc appends to every container
/// (`specconv.AllowedDevices`: mknod of any char or block device, null, random, full, tty,
/// zero, urandom, `/dev/pts/*`, ptmx, and tun/tap, which runc 1.2.0 dropped and 1.2.1
/// restored). libcontainer does not append runc's list, so it is spelled out here.
pub fn device_cgroup_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    let char_dev =
        |major: i64, minor: i64| device_rule(true, Some(C), Some(major), Some(minor), "rwm");
    vec![
        // moby oci.DefaultLinuxSpec
        device_rule(false, None, None, None, "rwm"),
        char_dev(1, 5),                                          // /dev/zero
        char_dev(1, 3),                                          // /dev/null
        char_dev(1, 9),                                          // /dev/urandom
        char_dev(1, 8),                                          // /dev/random
        char_dev(5, 0),                                          // /dev/tty
        char_dev(5, 1),                                          // /dev/console
        device_rule(false, Some(C), Some(10), Some(229), "rwm"), // /dev/fuse
        // runc specconv.AllowedDevices
        device_rule(true, Some(C), None, None, "m"),
        device_rule(true, Some(B), None, None, "m"),
        char_dev(1, 3),                                     // /dev/null
        char_dev(1, 8),                                     // /dev/random
        char_dev(1, 7),                                     // /dev/full
        char_dev(5, 0),                                     // /dev/tty
        char_dev(1, 5),                                     // /dev/zero
        char_dev(1, 9),                                     // /dev/urandom
        device_rule(true, Some(C), Some(136), None, "rwm"), // /dev/pts/*
        char_dev(5, 2),                                     // /dev/ptmx
        char_dev(10, 200),                                  // /dev/net/tun
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    fn sorted(v: &[&str]) -> Vec<String> {
        let mut out = strings(v);
        out.sort();
        out
    }

    #[test]
    fn no_tweaks_gives_docker_defaults_sorted() {
        assert_eq!(
            capabilities(&[], &[]).unwrap(),
            sorted(DEFAULT_CAPABILITIES)
        );
        assert_eq!(DEFAULT_CAPABILITIES.len(), 14);
    }

    #[test]
    fn add_and_drop_accept_any_case_with_or_without_prefix() {
        let caps = capabilities(
            &strings(&["sys_admin", "Cap_Net_Admin"]),
            &strings(&["MKNOD", "cap_net_raw"]),
        )
        .unwrap();
        let mut want: Vec<&str> = DEFAULT_CAPABILITIES
            .iter()
            .copied()
            .filter(|c| *c != "CAP_MKNOD" && *c != "CAP_NET_RAW")
            .collect();
        want.extend(["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]);
        assert_eq!(caps, sorted(&want));
    }

    #[test]
    fn adding_a_default_capability_does_not_duplicate_it() {
        let caps = capabilities(&strings(&["CHOWN", "chown"]), &[]).unwrap();
        assert_eq!(caps, sorted(DEFAULT_CAPABILITIES));
    }

    #[test]
    fn add_all_gives_every_capability_minus_drops() {
        let caps = capabilities(&strings(&["all"]), &[]).unwrap();
        assert_eq!(caps.len(), 41);
        assert!(caps.contains(&"CAP_CHECKPOINT_RESTORE".to_string()));
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));

        let caps = capabilities(&strings(&["ALL"]), &strings(&["sys_admin", "NET_ADMIN"])).unwrap();
        assert_eq!(caps.len(), 39);
        assert!(!caps.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_NET_ADMIN".to_string()));

        // ALL in both: the add wins (Docker checks cap_add first); "ALL" drops nothing.
        let caps = capabilities(&strings(&["ALL"]), &strings(&["ALL"])).unwrap();
        assert_eq!(caps.len(), 41);
    }

    #[test]
    fn drop_all_keeps_only_the_adds() {
        let caps = capabilities(
            &strings(&["net_bind_service", "CAP_KILL"]),
            &strings(&["all"]),
        )
        .unwrap();
        assert_eq!(caps, strings(&["CAP_KILL", "CAP_NET_BIND_SERVICE"]));
        assert_eq!(
            capabilities(&[], &strings(&["ALL"])).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unknown_capability_is_an_error_naming_it() {
        let err = capabilities(&strings(&["foo"]), &[]).unwrap_err();
        assert_eq!(
            err,
            CapabilityError::Unknown {
                name: "CAP_FOO".into()
            }
        );
        assert_eq!(err.to_string(), r#"unknown capability: "CAP_FOO""#);
        // Drops are validated too, and before adds.
        let err = capabilities(&strings(&["bar"]), &strings(&["cap_baz"])).unwrap_err();
        assert_eq!(err.to_string(), r#"unknown capability: "CAP_BAZ""#);
    }

    #[test]
    fn capability_table_is_complete_and_in_kernel_order() {
        assert_eq!(ALL_CAPABILITIES.len(), 41);
        assert_eq!(ALL_CAPABILITIES[0].0, "CAP_CHOWN");
        assert_eq!(ALL_CAPABILITIES[21].0, "CAP_SYS_ADMIN");
        assert_eq!(ALL_CAPABILITIES[29].0, "CAP_AUDIT_WRITE");
        assert_eq!(ALL_CAPABILITIES[40].0, "CAP_CHECKPOINT_RESTORE");
        // Each table name maps to the oci-spec variant of the same name.
        for (name, cap) in ALL_CAPABILITIES {
            let parsed: Capability = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(parsed, *cap, "{name}");
        }
    }

    #[test]
    fn oci_capabilities_fill_bounding_effective_permitted_only() {
        let caps = capabilities(&[], &[]).unwrap();
        let oci = oci_capabilities(&caps).unwrap();
        let want: Capabilities = [
            Capability::Chown,
            Capability::DacOverride,
            Capability::Fsetid,
            Capability::Fowner,
            Capability::Mknod,
            Capability::NetRaw,
            Capability::Setgid,
            Capability::Setuid,
            Capability::Setfcap,
            Capability::Setpcap,
            Capability::NetBindService,
            Capability::SysChroot,
            Capability::Kill,
            Capability::AuditWrite,
        ]
        .into_iter()
        .collect();
        assert_eq!(oci.bounding(), &Some(want.clone()));
        assert_eq!(oci.effective(), &Some(want.clone()));
        assert_eq!(oci.permitted(), &Some(want));
        assert_eq!(oci.inheritable(), &Some(Capabilities::new()));
        assert_eq!(oci.ambient(), &Some(Capabilities::new()));

        assert_eq!(
            oci_capabilities(&strings(&["CAP_NOPE"])).unwrap_err(),
            CapabilityError::Unknown {
                name: "CAP_NOPE".into()
            }
        );
        assert_eq!(
            oci_capabilities(&strings(&["ALL"])).unwrap_err(),
            CapabilityError::Unknown { name: "ALL".into() }
        );
    }

    #[test]
    fn masked_and_readonly_paths_are_dockers() {
        let masked = masked_paths();
        assert_eq!(masked.len(), 12);
        for p in [
            "/proc/kcore",
            "/proc/keys",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
            "/proc/interrupts",
        ] {
            assert!(masked.contains(&p.to_string()), "{p}");
        }
        assert_eq!(
            readonly_paths(),
            strings(&[
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger"
            ])
        );
    }

    #[test]
    fn default_mounts_match_docker() {
        let mounts = default_mounts(64 * 1024 * 1024);
        let table: Vec<(String, String, String, Vec<String>)> = mounts
            .iter()
            .map(|m| {
                (
                    m.destination().display().to_string(),
                    m.typ().clone().unwrap_or_default(),
                    m.source()
                        .as_ref()
                        .map(|s| s.display().to_string())
                        .unwrap_or_default(),
                    m.options().clone().unwrap_or_default(),
                )
            })
            .collect();
        let row = |d: &str, t: &str, s: &str, o: &[&str]| {
            (d.to_string(), t.to_string(), s.to_string(), strings(o))
        };
        assert_eq!(
            table,
            vec![
                row("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
                row(
                    "/dev",
                    "tmpfs",
                    "tmpfs",
                    &["nosuid", "strictatime", "mode=755", "size=65536k"]
                ),
                row(
                    "/dev/pts",
                    "devpts",
                    "devpts",
                    &[
                        "nosuid",
                        "noexec",
                        "newinstance",
                        "ptmxmode=0666",
                        "mode=0620",
                        "gid=5"
                    ]
                ),
                row(
                    "/sys",
                    "sysfs",
                    "sysfs",
                    &["nosuid", "noexec", "nodev", "ro"]
                ),
                row(
                    "/sys/fs/cgroup",
                    "cgroup",
                    "cgroup",
                    &["ro", "nosuid", "noexec", "nodev"]
                ),
                row(
                    "/dev/mqueue",
                    "mqueue",
                    "mqueue",
                    &["nosuid", "noexec", "nodev"]
                ),
                row(
                    "/dev/shm",
                    "tmpfs",
                    "shm",
                    &["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]
                ),
            ]
        );
    }

    #[test]
    fn device_rules_deny_first_then_dockers_and_runcs_allow_lists() {
        let rules: Vec<String> = device_cgroup_rules()
            .iter()
            .map(|r| format!("{} {r}", if r.allow() { "allow" } else { "deny" }))
            .collect();
        assert_eq!(
            rules,
            strings(&[
                "deny a *:* rwm",
                "allow c 1:5 rwm",
                "allow c 1:3 rwm",
                "allow c 1:9 rwm",
                "allow c 1:8 rwm",
                "allow c 5:0 rwm",
                "allow c 5:1 rwm",
                "deny c 10:229 rwm",
                "allow c *:* m",
                "allow b *:* m",
                "allow c 1:3 rwm",
                "allow c 1:8 rwm",
                "allow c 1:7 rwm",
                "allow c 5:0 rwm",
                "allow c 1:5 rwm",
                "allow c 1:9 rwm",
                "allow c 136:* rwm",
                "allow c 5:2 rwm",
                "allow c 10:200 rwm",
            ])
        );
    }
}
