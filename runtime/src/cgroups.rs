//! Container cgroups: where they live, what they report, whether the OOM killer struck.
//!
//! libcontainer creates and removes each container's cgroup from the spec's `cgroupsPath`
//! (`/<parent>/<container id>`); every daemon has its own parent, so daemons side by side
//! never touch each other's containers. Both cgroup v1 (and hybrid) and v2 layouts work.

use std::fs;
use std::path::{Path, PathBuf};

use libcgroups::common::{CgroupConfig, CgroupManager, FreezerState};
use serde::Serialize;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Errors reading or changing a container's cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot open the cgroup {path}: {message}")]
    Open { path: String, message: String },
    #[error("cannot read statistics of the cgroup {path}: {message}")]
    Stats { path: String, message: String },
    #[error("cannot freeze or thaw the cgroup {path}: {message}")]
    Freeze { path: String, message: String },
}

/// The cgroup layout of the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CgroupVersion {
    /// cgroup v1, including the hybrid layout (v1 controllers plus a v2 mount).
    V1,
    /// The unified cgroup v2 hierarchy.
    V2,
}

impl CgroupVersion {
    /// Detects the layout from `/sys/fs/cgroup`.
    pub fn detect() -> CgroupVersion {
        if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
            CgroupVersion::V2
        } else {
            CgroupVersion::V1
        }
    }

    /// "1" or "2", as `docker info` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "1",
            CgroupVersion::V2 => "2",
        }
    }
}

/// The default cgroup parent for a daemon: `shoal` for the default data dir, otherwise
/// `shoal-<hash of the data dir>` so that several daemons on one host stay apart.
pub fn default_parent(data_dir: &Path, default_data_dir: &Path) -> String {
    if data_dir == default_data_dir {
        return "shoal".to_owned();
    }
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    format!("shoal-{}", &hex::encode(h)[..10])
}

/// The `cgroupsPath` of a container.
pub fn container_path(parent: &str, id: &str) -> String {
    format!("/{}/{}", parent.trim_matches('/'), id)
}

fn manager(cgroups_path: &str, id: &str) -> Result<libcgroups::common::AnyCgroupManager, String> {
    libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroups_path),
        systemd_cgroup: false,
        container_name: id.to_owned(),
    })
    .map_err(|e| e.to_string())
}

/// Resource usage of one container, as `docker stats` needs it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Usage {
    /// Total CPU time in nanoseconds.
    pub cpu_total_ns: u64,
    /// Memory in use, without the inactive page cache (as Docker computes it).
    pub memory_usage: u64,
    /// The memory limit, or the host's memory when there is none.
    pub memory_limit: u64,
    pub pids: u64,
    pub block_read: u64,
    pub block_write: u64,
}

/// Reads a container's resource usage.
pub fn usage(cgroups_path: &str, id: &str) -> Result<Usage, CgroupError> {
    let m = manager(cgroups_path, id).map_err(|message| CgroupError::Open {
        path: cgroups_path.to_owned(),
        message,
    })?;
    let s = m.stats().map_err(|e| CgroupError::Stats {
        path: cgroups_path.to_owned(),
        message: e.to_string(),
    })?;
    let inactive = s
        .memory
        .stats
        .get("total_inactive_file")
        .or_else(|| s.memory.stats.get("inactive_file"))
        .copied()
        .unwrap_or(0);
    let host_mem = host_memory();
    let limit = match s.memory.memory.limit {
        0 => host_mem,
        l if l >= host_mem => host_mem,
        l => l,
    };
    let (mut read, mut write) = (0, 0);
    for d in &s.blkio.service_bytes {
        match d.op_type.as_deref() {
            Some(op) if op.eq_ignore_ascii_case("read") => read += d.value,
            Some(op) if op.eq_ignore_ascii_case("write") => write += d.value,
            _ => {}
        }
    }
    Ok(Usage {
        cpu_total_ns: s.cpu.usage.usage_total,
        memory_usage: s.memory.memory.usage.saturating_sub(inactive),
        memory_limit: limit,
        pids: s.pids.current,
        block_read: read,
        block_write: write,
    })
}

/// Freezes (`true`) or thaws a container's processes through the cgroup freezer.
pub fn set_frozen(cgroups_path: &str, id: &str, frozen: bool) -> Result<(), CgroupError> {
    let m = manager(cgroups_path, id).map_err(|message| CgroupError::Open {
        path: cgroups_path.to_owned(),
        message,
    })?;
    let state = if frozen {
        FreezerState::Frozen
    } else {
        FreezerState::Thawed
    };
    m.freeze(state).map_err(|e| CgroupError::Freeze {
        path: cgroups_path.to_owned(),
        message: e.to_string(),
    })
}

/// Whether the container's cgroup is frozen (paused), e.g. when re-adopting it.
pub fn is_frozen(cgroups_path: &str) -> bool {
    let rel = cgroups_path.trim_start_matches('/');
    match CgroupVersion::detect() {
        CgroupVersion::V2 => {
            fs::read_to_string(Path::new(CGROUP_ROOT).join(rel).join("cgroup.freeze"))
                .is_ok_and(|s| s.trim() == "1")
        }
        CgroupVersion::V1 => fs::read_to_string(
            Path::new(CGROUP_ROOT)
                .join("freezer")
                .join(rel)
                .join("freezer.state"),
        )
        .is_ok_and(|s| s.trim() == "FROZEN"),
    }
}

/// How many times the kernel's OOM killer killed a process of this cgroup (0 when the
/// cgroup cannot be read).
pub fn oom_kills(cgroups_path: &str) -> u64 {
    let rel = cgroups_path.trim_start_matches('/');
    let (file, key) = match CgroupVersion::detect() {
        CgroupVersion::V2 => (
            Path::new(CGROUP_ROOT).join(rel).join("memory.events"),
            "oom_kill",
        ),
        CgroupVersion::V1 => (
            Path::new(CGROUP_ROOT)
                .join("memory")
                .join(rel)
                .join("memory.oom_control"),
            "oom_kill",
        ),
    };
    fs::read_to_string(file)
        .ok()
        .and_then(|s| parse_counter(&s, key))
        .unwrap_or(0)
}

fn parse_counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

/// Controllers libcgroups' v1 manager creates a container cgroup in.
const V1_MANAGED: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// On a cgroup v1 host: for each mounted hierarchy holding a controller the container's
/// cgroup is created in, the host directory of the container's cgroup and the name it gets
/// under the container's `/sys/fs/cgroup` (`memory`, `cpu,cpuacct`, …). The spec mounts
/// these read-only (libcontainer's own v1 cgroup mount is read-write, which would let root
/// in a container raise its own limits).
pub fn v1_container_mounts(cgroups_path: &str) -> Vec<(PathBuf, String)> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    v1_mounts_from(&info, cgroups_path)
}

fn v1_mounts_from(mountinfo: &str, cgroups_path: &str) -> Vec<(PathBuf, String)> {
    let rel = cgroups_path.trim_start_matches('/');
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // id parent maj:min root mountpoint options [optional…] - fstype source superopts
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        if r.next() != Some("cgroup") {
            continue;
        }
        let superopts = r.nth(1).unwrap_or_default();
        let Some(mountpoint) = left.split(' ').nth(4) else {
            continue;
        };
        if !mountpoint.starts_with("/sys/fs/cgroup/") {
            continue;
        }
        if !superopts.split(',').any(|o| V1_MANAGED.contains(&o)) {
            continue;
        }
        let name = mountpoint.trim_start_matches("/sys/fs/cgroup/").to_owned();
        if name.is_empty() || name.contains('/') {
            continue;
        }
        out.push((Path::new(mountpoint).join(rel), name));
    }
    out
}

/// Removes a daemon's cgroup parent where it is empty (every hierarchy on v1); a parent
/// that still holds containers stays. Called when a daemon shuts down with nothing running.
pub fn remove_parent(parent: &str) {
    let rel = parent.trim_matches('/');
    if rel.is_empty() {
        return;
    }
    let dirs: Vec<PathBuf> = match CgroupVersion::detect() {
        CgroupVersion::V2 => vec![Path::new(CGROUP_ROOT).join(rel)],
        CgroupVersion::V1 => fs::read_dir(CGROUP_ROOT)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(rel))
            .collect(),
    };
    for d in dirs {
        // rmdir refuses a cgroup with children or processes: exactly what we want.
        let _ = fs::remove_dir(d);
    }
}

/// Total memory of the host in bytes.
pub fn host_memory() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_counter(&s, "MemTotal:"))
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Total CPU time of the host in nanoseconds (from `/proc/stat`), for CPU percentages.
pub fn host_cpu_ns() -> u64 {
    let Ok(s) = fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = s.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    // USER_HZ is 100 on every Linux architecture shoal targets.
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    ticks * 10_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters() {
        assert_eq!(
            parse_counter("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
        assert_eq!(parse_counter("low 0\nhigh 0\n", "oom_kill"), None);
    }

    #[test]
    fn parents_differ_per_data_dir() {
        let d = Path::new("/var/lib/shoal");
        assert_eq!(default_parent(d, d), "shoal");
        let a = default_parent(Path::new("/tmp/a"), d);
        let b = default_parent(Path::new("/tmp/b"), d);
        assert_ne!(a, b);
        assert!(a.starts_with("shoal-"));
        assert_eq!(container_path("shoal", "abc"), "/shoal/abc");
    }

    #[test]
    fn v1_mounts() {
        let info = "\
35 25 0:30 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
36 25 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
37 25 0:32 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
38 25 0:33 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
39 25 0:34 / /proc rw - proc proc rw";
        assert_eq!(
            v1_mounts_from(info, "/shoal/abc"),
            vec![
                (
                    PathBuf::from("/sys/fs/cgroup/memory/shoal/abc"),
                    "memory".to_owned()
                ),
                (
                    PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/shoal/abc"),
                    "cpu,cpuacct".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn host_facts() {
        assert!(host_memory() > 0);
        assert!(host_cpu_ns() > 0);
    }
}
