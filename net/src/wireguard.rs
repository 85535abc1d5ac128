//! Which WireGuard implementation this host can run.
//!
//! Kernel WireGuard when the module is loaded, built in, or loadable; otherwise the embedded
//! userspace implementation over a TUN device. The overlay itself arrives with the
//! networking issue; `shoal info` reports the backend already.

use std::path::Path;

use serde::Serialize;

/// A WireGuard backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The kernel module.
    Kernel,
    /// The embedded userspace implementation over `/dev/net/tun`.
    Userspace,
    /// Neither: no module and no TUN device.
    None,
}

impl Backend {
    /// Detects the best backend available here.
    pub fn detect() -> Backend {
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        if kernel_module_available(
            Path::new("/sys/module"),
            Path::new("/lib/modules"),
            &release,
        ) {
            Backend::Kernel
        } else if tun_available() {
            Backend::Userspace
        } else {
            Backend::None
        }
    }

    /// How `shoal info` names it.
    pub fn describe(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace (no kernel module; TUN available)",
            Backend::None => "none (no kernel module, no /dev/net/tun)",
        }
    }
}

fn kernel_module_available(sys_module: &Path, lib_modules: &Path, release: &str) -> bool {
    if sys_module.join("wireguard").exists() {
        return true;
    }
    // A loadable module listed for the running kernel.
    std::fs::read_to_string(lib_modules.join(release).join("modules.dep"))
        .map(|deps| {
            deps.lines().any(|l| {
                l.split(':')
                    .next()
                    .is_some_and(|m| m.ends_with("/wireguard.ko") || m.contains("/wireguard.ko."))
            })
        })
        .unwrap_or(false)
}

fn tun_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_detection() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path().join("sys");
        let lib = d.path().join("lib");
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::create_dir_all(lib.join("6.1.0")).unwrap();
        assert!(!kernel_module_available(&sys, &lib, "6.1.0"));
        std::fs::write(
            lib.join("6.1.0/modules.dep"),
            "kernel/drivers/net/wireguard/wireguard.ko.xz: kernel/lib/crypto/libchacha.ko\n",
        )
        .unwrap();
        assert!(kernel_module_available(&sys, &lib, "6.1.0"));
        std::fs::create_dir_all(sys.join("wireguard")).unwrap();
        assert!(kernel_module_available(&sys, &lib, "other"));
    }

    #[test]
    fn this_host_has_a_backend() {
        // This machine has no module but has TUN (see MACHINE-FACTS); any host running
        // the tests must offer at least the userspace path.
        assert_ne!(Backend::detect(), Backend::None);
    }
}
