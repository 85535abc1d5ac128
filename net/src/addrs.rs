//! Addresses of this host, for choosing what a node advertises to its cluster.

use std::net::Ipv4Addr;

/// The IPv4 addresses of the host's interfaces that are up, loopback excluded, in
/// interface order.
pub fn ipv4_addresses() -> Vec<(String, Ipv4Addr)> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        let flags = ifa.ifa_flags;
        if flags & libc::IFF_UP as u32 == 0 || flags & libc::IFF_LOOPBACK as u32 != 0 {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the family it names.
        let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        if family != libc::AF_INET {
            continue;
        }
        // SAFETY: for AF_INET the sockaddr is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        out.push((name, ip));
    }
    // SAFETY: the list came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

/// The first IPv4 address of an interface that is up, loopback excluded.
pub fn first_ipv4() -> Option<Ipv4Addr> {
    ipv4_addresses().into_iter().map(|(_, ip)| ip).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_non_loopback_addresses() {
        for (name, ip) in ipv4_addresses() {
            assert!(!ip.is_loopback(), "{name} {ip}");
        }
        // Inside a fresh network namespace there are none.
        let p = tempfile::tempdir().unwrap();
        let ns = p.path().join("ns");
        crate::netns::create_loopback(&ns).unwrap();
        let f = std::fs::File::open(&ns).unwrap();
        let got = std::thread::spawn(move || {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&f),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            first_ipv4()
        })
        .join()
        .unwrap();
        assert_eq!(got, None);
        crate::netns::remove(&ns).unwrap();
    }
}
