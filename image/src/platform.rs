//! The node's platform and the choice of one manifest from a manifest list / OCI index.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::oci::Descriptor;

/// An OS/architecture pair in Go's naming (`linux`, `amd64`, `arm64`, `arm` + `v7`, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// GOARCH-style name: `amd64`, `arm64`, `arm`, `riscv64`, `s390x`, `ppc64le`, …
    pub architecture: String,
    /// CPU variant, e.g. `v7` for arm or `v8` for arm64.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the running binary: linux plus the GOARCH name of the CPU.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "loongarch64" => ("loong64", None),
            "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
            "mips" if cfg!(target_endian = "little") => ("mipsle", None),
            other => (other, None),
        };
        Platform {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Whether an image for `os/arch[/variant]` can run here (same OS and architecture;
    /// a missing variant on either side matches).
    pub fn accepts(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        os == self.os
            && normalize_arch(architecture) == normalize_arch(&self.architecture)
            && match (variant, self.variant.as_deref()) {
                (Some(a), Some(b)) => normalize_variant(a) == normalize_variant(b),
                _ => true,
            }
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform::host()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i686" => "386",
        other => other,
    }
}

fn normalize_variant(variant: &str) -> &str {
    match variant {
        "8" => "v8",
        "7" => "v7",
        "6" => "v6",
        other => other,
    }
}

/// Picks the manifest for `want` from a manifest list / index, like containerd's matcher:
/// same OS and architecture; the exact variant first, then an entry without variant
/// (arm64 entries without variant count as v8), then — for 32-bit arm — the highest
/// older variant the CPU can also run (v7 runs v6 and v5).
pub fn select_manifest<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let candidates: Vec<(&Descriptor, Option<&str>)> = entries
        .iter()
        .filter_map(|d| {
            let p = d.platform.as_ref()?;
            (p.os == want.os
                && normalize_arch(&p.architecture) == normalize_arch(&want.architecture))
            .then(|| (d, p.variant.as_deref().map(normalize_variant)))
        })
        .collect();
    let want_variant = want.variant.as_deref().map(normalize_variant);
    // u64: the arm fallback rank below cannot overflow whatever variant numbers come.
    let rank = |variant: Option<&str>| -> Option<u64> {
        match (variant, want_variant) {
            (v, w) if v == w => Some(0),
            (None, _) => Some(1),
            (Some("v8"), _) if normalize_arch(&want.architecture) == "arm64" => Some(1),
            (Some(v), Some(w)) if normalize_arch(&want.architecture) == "arm" => {
                let (v, w) = (variant_number(v)?, variant_number(w)?);
                // v7 (rank 2) before v6 (rank 3) before v5 (rank 4).
                (v < w).then(|| 2 + u64::from(w - v))
            }
            (Some(_), None) => Some(5),
            _ => None,
        }
    };
    candidates
        .into_iter()
        .filter_map(|(d, v)| Some((rank(v)?, d)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, d)| d)
}

fn variant_number(v: &str) -> Option<u32> {
    v.strip_prefix('v')?.parse().ok()
}

/// "linux/amd64, linux/arm/v7, …" of the entries that declare a platform.
pub(crate) fn describe(entries: &[Descriptor]) -> String {
    let list: Vec<String> = entries
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::DescriptorPlatform;

    fn entry(n: u8, os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: crate::oci::OCI_MANIFEST.to_string(),
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            size: 1,
            annotations: None,
            platform: Some(DescriptorPlatform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: variant.map(str::to_string),
            }),
        }
    }

    fn platform(arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        }
    }

    #[test]
    fn picks_os_and_architecture() {
        let entries = vec![
            entry(1, "linux", "arm64", Some("v8")),
            entry(2, "linux", "amd64", None),
            entry(3, "windows", "amd64", None),
            entry(4, "unknown", "unknown", None),
        ];
        let got = select_manifest(&entries, &platform("amd64", None)).unwrap();
        assert_eq!(got.digest, entries[1].digest);
        let got = select_manifest(&entries, &platform("arm64", Some("v8"))).unwrap();
        assert_eq!(got.digest, entries[0].digest);
        assert!(select_manifest(&entries, &platform("s390x", None)).is_none());
        assert_eq!(
            describe(&entries),
            "linux/arm64/v8, linux/amd64, windows/amd64, unknown/unknown"
        );
    }

    #[test]
    fn variants() {
        let entries = vec![
            entry(1, "linux", "arm", Some("v5")),
            entry(2, "linux", "arm", Some("v6")),
            entry(3, "linux", "arm", Some("v7")),
            entry(4, "linux", "arm64", None),
        ];
        let pick = |arch, variant| {
            select_manifest(&entries, &platform(arch, variant)).map(|d| d.digest.clone())
        };
        assert_eq!(pick("arm", Some("v7")), Some(entries[2].digest.clone()));
        assert_eq!(pick("arm", Some("v6")), Some(entries[1].digest.clone()));
        assert_eq!(pick("arm64", Some("v8")), Some(entries[3].digest.clone()));
        // Without v7 in the list, a v7 CPU falls back to v6.
        let older = vec![entries[0].clone(), entries[1].clone()];
        let got = select_manifest(&older, &platform("arm", Some("v7"))).unwrap();
        assert_eq!(got.digest, entries[1].digest);
        // A v6 CPU cannot run v7.
        let newer = vec![entries[2].clone()];
        assert!(select_manifest(&newer, &platform("arm", Some("v6"))).is_none());
    }

    #[test]
    fn huge_variant_numbers_do_not_overflow() {
        // The fallback rank 2 + (wanted - offered) used to overflow u32; replay input in
        // fuzz/regressions/manifest_json/arm-variant-overflow.
        let entries = vec![
            entry(1, "linux", "arm", Some("v0")),
            entry(2, "linux", "arm", Some("v4294967294")),
        ];
        let got = select_manifest(&entries, &platform("arm", Some("v4294967295"))).unwrap();
        assert_eq!(got.digest, entries[1].digest);
        let only_v0 = &entries[..1];
        let got = select_manifest(only_v0, &platform("arm", Some("v4294967295"))).unwrap();
        assert_eq!(got.digest, entries[0].digest);
    }

    #[test]
    fn host_platform_is_linux_goarch() {
        let p = Platform::host();
        assert_eq!(p.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(p.architecture, "amd64");
            assert_eq!(p.to_string(), "linux/amd64");
        }
        assert!(p.accepts("linux", &p.architecture.clone(), None));
        assert!(!p.accepts("windows", &p.architecture.clone(), None));
    }
}
