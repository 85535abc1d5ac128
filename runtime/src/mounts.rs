//! Parsing of Docker's mount flags: `-v SOURCE:TARGET[:OPTIONS]` and `--tmpfs TARGET[:OPTIONS]`.

/// A mount as the user asked for it, before volumes are resolved to host paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountRequest {
    /// A named volume, created on first use; `name` is `None` for an anonymous volume.
    Volume {
        name: Option<String>,
        target: String,
        rw: bool,
    },
    /// A host path.
    Bind {
        source: String,
        target: String,
        rw: bool,
    },
    /// A tmpfs with mount options (`size=…`, `mode=…`).
    Tmpfs {
        target: String,
        options: Vec<String>,
    },
}

impl MountRequest {
    /// The container path.
    pub fn target(&self) -> &str {
        match self {
            MountRequest::Volume { target, .. }
            | MountRequest::Bind { target, .. }
            | MountRequest::Tmpfs { target, .. } => target,
        }
    }
}

/// A malformed mount flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MountError {
    #[error("invalid volume specification: '{spec}': {reason}")]
    Volume { spec: String, reason: &'static str },
    #[error("invalid tmpfs specification: '{spec}': {reason}")]
    Tmpfs { spec: String, reason: &'static str },
    #[error("duplicate mount point: {0}")]
    Duplicate(String),
}

const MODES: &[&str] = &[
    "ro",
    "rw",
    "z",
    "Z",
    "nocopy",
    "shared",
    "slave",
    "private",
    "rshared",
    "rslave",
    "rprivate",
    "consistent",
    "cached",
    "delegated",
];

/// Parses one `-v` value.
pub fn parse_volume(spec: &str) -> Result<MountRequest, MountError> {
    let bad = |reason| MountError::Volume {
        spec: spec.to_owned(),
        reason,
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [t] => (None, *t, ""),
        [s, t] => (Some(*s), *t, ""),
        [s, t, m] => (Some(*s), *t, *m),
        _ => return Err(bad("too many colons")),
    };
    if !target.starts_with('/') {
        return Err(bad("the container path must be absolute"));
    }
    if clean(target) == "/" {
        return Err(bad("the container path cannot be '/'"));
    }
    let mut rw = true;
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        if !MODES.contains(&m) {
            return Err(bad("unknown mode"));
        }
        match m {
            "ro" => rw = false,
            "rw" => rw = true,
            _ => {}
        }
    }
    let target = clean(target);
    Ok(match source {
        None => MountRequest::Volume {
            name: None,
            target,
            rw,
        },
        Some("") => return Err(bad("empty source")),
        Some(s) if s.starts_with('/') => MountRequest::Bind {
            source: clean(s),
            target,
            rw,
        },
        Some(s) => MountRequest::Volume {
            name: Some(s.to_owned()),
            target,
            rw,
        },
    })
}

/// Parses one `--tmpfs` value (`/run:size=64m,mode=1777`).
pub fn parse_tmpfs(spec: &str) -> Result<MountRequest, MountError> {
    let (target, opts) = spec.split_once(':').unwrap_or((spec, ""));
    tmpfs(target, opts).map_err(|reason| MountError::Tmpfs {
        spec: spec.to_owned(),
        reason,
    })
}

/// Builds a tmpfs request from a target and Docker's option string (as stored in
/// `HostConfig.Tmpfs`).
pub fn tmpfs(target: &str, opts: &str) -> Result<MountRequest, &'static str> {
    if !target.starts_with('/') {
        return Err("the container path must be absolute");
    }
    let options: Vec<String> = opts
        .split(',')
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    for o in &options {
        let key = o.split('=').next().unwrap_or("");
        let known = [
            "size",
            "mode",
            "uid",
            "gid",
            "nr_inodes",
            "nr_blocks",
            "ro",
            "rw",
            "exec",
            "noexec",
            "suid",
            "nosuid",
            "dev",
            "nodev",
        ];
        if !known.contains(&key) {
            return Err("unknown option");
        }
    }
    Ok(MountRequest::Tmpfs {
        target: clean(target),
        options,
    })
}

/// Checks that no two mounts share a target.
pub fn check_duplicates(mounts: &[MountRequest]) -> Result<(), MountError> {
    let mut seen = std::collections::BTreeSet::new();
    for m in mounts {
        if !seen.insert(m.target()) {
            return Err(MountError::Duplicate(m.target().to_owned()));
        }
    }
    Ok(())
}

/// Lexically cleans an absolute path: no `.`/`..`/empty components, no trailing slash.
fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_and_binds() {
        assert_eq!(
            parse_volume("data:/var/lib/x").unwrap(),
            MountRequest::Volume {
                name: Some("data".into()),
                target: "/var/lib/x".into(),
                rw: true
            }
        );
        assert_eq!(
            parse_volume("/srv/a:/a/:ro").unwrap(),
            MountRequest::Bind {
                source: "/srv/a".into(),
                target: "/a".into(),
                rw: false
            }
        );
        assert_eq!(
            parse_volume("/cache").unwrap(),
            MountRequest::Volume {
                name: None,
                target: "/cache".into(),
                rw: true
            }
        );
        assert!(parse_volume("data:rel").is_err());
        assert!(parse_volume("data:/").is_err());
        assert!(parse_volume("a:/b:bogus").is_err());
        assert!(parse_volume("a:/b:ro:x").is_err());
        assert_eq!(
            parse_volume("a:/x/../..").unwrap_err().to_string(),
            "invalid volume specification: 'a:/x/../..': the container path cannot be '/'"
        );
    }

    #[test]
    fn tmpfs_specs() {
        assert_eq!(
            parse_tmpfs("/run:size=64m,mode=1777").unwrap(),
            MountRequest::Tmpfs {
                target: "/run".into(),
                options: vec!["size=64m".into(), "mode=1777".into()]
            }
        );
        assert!(parse_tmpfs("run").is_err());
        assert!(parse_tmpfs("/run:foo=1").is_err());
        let dup = [parse_tmpfs("/a").unwrap(), parse_volume("v:/a").unwrap()];
        assert_eq!(
            check_duplicates(&dup),
            Err(MountError::Duplicate("/a".into()))
        );
    }
}
