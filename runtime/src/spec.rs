//! The OCI runtime spec of a container, assembled from its record with Docker's defaults:
//! namespaces, capabilities, seccomp, masked and read-only paths, minimal /dev, resource
//! limits, and the mounts the user asked for.

use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, Process, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::cgroups::CgroupVersion;
use crate::model::{ContainerRecord, NetworkMode};
use crate::user::ResolvedUser;
use crate::{cgroups, defaults, seccomp};

/// Errors assembling a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid runtime spec for container {id}: {source}")]
    Build { id: String, source: OciSpecError },
    #[error("invalid capabilities for container {id}: {message}")]
    Capabilities { id: String, message: String },
}

/// Host paths a spec refers to.
#[derive(Clone, Debug)]
pub struct SpecPaths {
    /// The mounted overlay root.
    pub rootfs: PathBuf,
    /// Files bind-mounted over the image's `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`.
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// The pinned network namespace (unused with the host network).
    pub netns: PathBuf,
}

/// CPU period used for `--cpus` (Docker's: 100 ms).
const CPU_PERIOD: u64 = 100_000;

/// Builds the spec for `rec`.
pub fn build(rec: &ContainerRecord, paths: &SpecPaths) -> Result<Spec, SpecError> {
    let id = rec.id.clone();
    let err = |source| SpecError::Build {
        id: id.clone(),
        source,
    };
    let hc = &rec.host_config;

    let user = UserBuilder::default()
        .uid(rec.user.uid)
        .gid(rec.user.gid)
        .additional_gids(rec.user.additional_gids.clone())
        .build()
        .map_err(err)?;
    let caps =
        defaults::oci_capabilities(&rec.capabilities).map_err(|e| SpecError::Capabilities {
            id: rec.id.clone(),
            message: e.to_string(),
        })?;
    let mut argv = vec![rec.path.clone()];
    argv.extend(rec.args.iter().cloned());
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(argv)
        .env(rec.env.clone())
        .cwd(PathBuf::from(if rec.cwd.is_empty() {
            "/"
        } else {
            &rec.cwd
        }))
        .capabilities(caps)
        .build()
        .map_err(err)?;
    // Docker leaves no_new_privileges off, so setuid programs of the image work. oci-spec's
    // builder defaults it to `true`; leave the field out rather than `false`: libcontainer
    // 0.7 loads the seccomp filter while it still holds CAP_SYS_ADMIN only when the field is
    // absent (with `Some(false)` it loads after dropping capabilities and the kernel
    // refuses the filter).
    let mut process = process;
    process.set_no_new_privileges(None);

    let mut mounts = defaults::default_mounts(hc.shm_size.max(0) as u64);
    if CgroupVersion::detect() == CgroupVersion::V1 {
        mounts = v1_cgroup_mounts(mounts, &rec.cgroups_path).map_err(err)?;
    }
    let etc_bind = |src: &Path, dst: &str| -> Result<Mount, OciSpecError> {
        MountBuilder::default()
            .destination(dst)
            .typ("bind")
            .source(src)
            .options(vec!["rbind".into(), "rprivate".into()])
            .build()
    };
    mounts.push(etc_bind(&paths.hostname, "/etc/hostname").map_err(err)?);
    mounts.push(etc_bind(&paths.hosts, "/etc/hosts").map_err(err)?);
    mounts.push(etc_bind(&paths.resolv_conf, "/etc/resolv.conf").map_err(err)?);
    for m in &rec.mounts {
        let built = if m.kind == "tmpfs" {
            let mut opts = vec!["nosuid".to_owned(), "nodev".to_owned(), "noexec".to_owned()];
            opts.extend(m.options.iter().cloned());
            MountBuilder::default()
                .destination(&m.destination)
                .typ("tmpfs")
                .source("tmpfs")
                .options(opts)
                .build()
        } else {
            let rw = if m.rw { "rw" } else { "ro" };
            MountBuilder::default()
                .destination(&m.destination)
                .typ("bind")
                .source(&m.source)
                .options(vec!["rbind".into(), "rprivate".into(), rw.into()])
                .build()
        };
        mounts.push(built.map_err(err)?);
    }

    let mut namespaces = Vec::new();
    for t in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ] {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(t)
                .build()
                .map_err(err)?,
        );
    }
    if CgroupVersion::detect() == CgroupVersion::V2 {
        // Docker gives containers a private cgroup namespace on cgroup v2.
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Cgroup)
                .build()
                .map_err(err)?,
        );
    }
    if rec.network == NetworkMode::None {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(paths.netns.clone())
                .build()
                .map_err(err)?,
        );
    }

    let mut resources = LinuxResourcesBuilder::default().devices(defaults::device_cgroup_rules());
    if hc.memory > 0 {
        let mut mem = LinuxMemoryBuilder::default().limit(hc.memory);
        if swap_limit_supported() {
            // Docker's default: as much swap as memory (memory+swap = 2 × memory).
            mem = mem.swap(hc.memory.saturating_mul(2));
        }
        resources = resources.memory(mem.build().map_err(err)?);
    }
    if hc.nano_cpus > 0 {
        let quota = (hc.nano_cpus as i128 * CPU_PERIOD as i128 / 1_000_000_000) as i64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota.max(1000))
                .period(CPU_PERIOD)
                .build()
                .map_err(err)?,
        );
    }
    if let Some(limit) = hc.pids_limit.filter(|l| *l > 0) {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(err)?,
        );
    }

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(&rec.cgroups_path))
        .resources(resources.build().map_err(err)?)
        .masked_paths(defaults::masked_paths())
        .readonly_paths(defaults::readonly_paths())
        .seccomp(seccomp::docker_default(
            &rec.capabilities,
            seccomp::host_arch(),
            seccomp::kernel_version(),
        ))
        .build()
        .map_err(err)?;

    // Shallower mount points first (stable), as Docker sorts them: a volume on /etc must not
    // hide the /etc/hostname, /etc/hosts and /etc/resolv.conf binds made on top of it.
    mounts.sort_by_key(|m| m.destination().components().count());

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(paths.rootfs.clone())
                .readonly(hc.readonly_rootfs)
                .build()
                .map_err(err)?,
        )
        .hostname(rec.config.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(err)
}

/// The OCI process of an `exec` into the container `rec`: the container's capabilities
/// and environment (with `env` layered over it by key), as `user` in `cwd`. Like the
/// container's own process it leaves `noNewPrivileges` out (see [`build`]); libcontainer's
/// tenant builder would otherwise default it to `true`.
pub fn exec_process(
    rec: &ContainerRecord,
    user: &ResolvedUser,
    args: Vec<String>,
    env: &[String],
    cwd: &str,
) -> Result<Process, SpecError> {
    let err = |source| SpecError::Build {
        id: rec.id.clone(),
        source,
    };
    let caps =
        defaults::oci_capabilities(&rec.capabilities).map_err(|e| SpecError::Capabilities {
            id: rec.id.clone(),
            message: e.to_string(),
        })?;
    let key = |kv: &str| kv.split('=').next().unwrap_or_default().to_owned();
    let mut merged: Vec<String> = rec
        .env
        .iter()
        .filter(|kv| !env.iter().any(|o| key(o) == key(kv)))
        .cloned()
        .collect();
    merged.extend(env.iter().cloned());
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()
                .map_err(err)?,
        )
        .args(args)
        .env(merged)
        .cwd(PathBuf::from(if cwd.is_empty() { "/" } else { cwd }))
        .capabilities(caps)
        .build()
        .map_err(err)?;
    process.set_no_new_privileges(None);
    Ok(process)
}

/// Replaces the `cgroup` mount with a tmpfs and read-only binds of the container's own
/// cgroup directories. libcontainer 0.7 mounts v1 hierarchies read-write whatever the spec
/// says; Docker (runc) mounts them read-only, so a container cannot raise its own limits.
fn v1_cgroup_mounts(mounts: Vec<Mount>, cgroups_path: &str) -> Result<Vec<Mount>, OciSpecError> {
    let mut out = Vec::with_capacity(mounts.len() + 12);
    for m in mounts {
        if m.typ().as_deref() != Some("cgroup") {
            out.push(m);
            continue;
        }
        let base = m.destination().clone();
        out.push(
            MountBuilder::default()
                .destination(&base)
                .typ("tmpfs")
                .source("tmpfs")
                .options(vec![
                    "nosuid".into(),
                    "noexec".into(),
                    "nodev".into(),
                    "mode=755".into(),
                ])
                .build()?,
        );
        for (src, name) in cgroups::v1_container_mounts(cgroups_path) {
            out.push(
                MountBuilder::default()
                    .destination(base.join(name))
                    .typ("bind")
                    .source(src)
                    .options(vec![
                        "rbind".into(),
                        "ro".into(),
                        "nosuid".into(),
                        "noexec".into(),
                        "nodev".into(),
                    ])
                    .build()?,
            );
        }
    }
    Ok(out)
}

/// Whether a memory+swap limit can be set: always on cgroup v2, on v1 only with swap
/// accounting (`memory.memsw.*`).
fn swap_limit_supported() -> bool {
    match CgroupVersion::detect() {
        CgroupVersion::V2 => true,
        CgroupVersion::V1 => {
            Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        }
    }
}
