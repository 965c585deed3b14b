//! Finding the host-side veth of each pod without a container runtime.
//!
//! Every network namespace other than the host's is visited: pinned ones
//! (containerd and CRI-O pin pod namespaces under /run/netns) and those of
//! processes (`/proc/<pid>/ns/net`, visible with hostPID). Inside each, the
//! interface holding an address points (IFLA_LINK) at its veth peer's ifindex
//! in the host namespace; that host interface must be a veth whose own peer is
//! the interface we saw. Namespaces are entered on a short-lived thread so no
//! runtime thread ever changes namespace.
use super::netlink::{self, Link};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Host-side veth of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostVeth {
    pub ifname: String,
    pub ifindex: u32,
}

/// Result of one scan.
#[derive(Debug, Default, Clone)]
pub struct Scan {
    /// Pod IP → its host-side veth.
    pub by_ip: HashMap<IpAddr, HostVeth>,
    /// Host interfaces at scan time.
    pub host_links: Vec<Link>,
    /// Namespaces visited.
    pub namespaces: usize,
    /// Namespaces that could not be entered (e.g. missing CAP_SYS_ADMIN).
    pub failures: usize,
}

/// Where to look for network namespaces.
#[derive(Debug, Clone)]
pub struct NetnsSources {
    pub proc_root: PathBuf,
    pub pinned_dirs: Vec<PathBuf>,
}

fn ns_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Distinct network namespaces other than ours, one path each.
pub fn candidate_namespaces(src: &NetnsSources) -> Vec<PathBuf> {
    let own = ns_id(Path::new("/proc/thread-self/ns/net")).or_else(|| ns_id(Path::new("/proc/self/ns/net")));
    let mut seen: HashSet<(u64, u64)> = own.into_iter().collect();
    let mut out = Vec::new();
    let mut consider = |p: PathBuf| {
        if let Some(id) = ns_id(&p) {
            if seen.insert(id) {
                out.push(p);
            }
        }
    };
    for dir in &src.pinned_dirs {
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            entries.sort();
            entries.into_iter().for_each(&mut consider);
        }
    }
    if let Ok(rd) = std::fs::read_dir(&src.proc_root) {
        for e in rd.flatten() {
            let name = e.file_name();
            if name.to_str().is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit())) {
                consider(e.path().join("ns/net"));
            }
        }
    }
    out
}

/// Pair pod addresses seen inside a namespace with host veths.
pub fn match_namespace(host: &[Link], inner_links: &[Link], inner_addrs: &[netlink::Addr]) -> Vec<(IpAddr, HostVeth)> {
    let host_veths: HashMap<u32, &Link> =
        host.iter().filter(|l| l.kind.as_deref() == Some("veth")).map(|l| (l.index, l)).collect();
    let mut out = Vec::new();
    for a in inner_addrs {
        if a.ip.is_loopback() || matches!(a.ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80) {
            continue;
        }
        let Some(inner) = inner_links.iter().find(|l| l.index == a.index) else { continue };
        if inner.link_netnsid.is_none() {
            continue;
        }
        let Some(peer) = inner.link.and_then(|i| host_veths.get(&i)) else { continue };
        // The host veth's own peer must be this interface (ifindexes repeat across namespaces).
        if peer.link != Some(inner.index) {
            continue;
        }
        out.push((a.ip, HostVeth { ifname: peer.name.clone(), ifindex: peer.index }));
    }
    out
}

/// Visit every candidate namespace and map pod IPs to host veths (blocking).
pub fn scan(src: &NetnsSources) -> std::io::Result<Scan> {
    let host_links = netlink::links()?;
    let candidates = candidate_namespaces(src);
    let host = host_links.clone();
    let res = std::thread::Builder::new()
        .name("cnflow-netns-scan".into())
        .spawn(move || -> std::io::Result<Scan> {
            let home = File::open("/proc/thread-self/ns/net")?;
            let mut scan = Scan { host_links: host, ..Default::default() };
            for path in candidates {
                let Ok(f) = File::open(&path) else {
                    scan.failures += 1;
                    continue;
                };
                if nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                    scan.failures += 1;
                    continue;
                }
                scan.namespaces += 1;
                let inner = netlink::links().and_then(|l| Ok((l, netlink::addrs()?)));
                // Always return home before anything else, even on error.
                nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
                match inner {
                    Ok((links, addrs)) => {
                        for (ip, v) in match_namespace(&scan.host_links, &links, &addrs) {
                            scan.by_ip.insert(ip, v);
                        }
                    }
                    Err(_) => scan.failures += 1,
                }
            }
            Ok(scan)
        })?
        .join();
    res.map_err(|_| std::io::Error::other("netns scan thread panicked"))?
}

/// Host interfaces worth capturing with CNFLOW_CAPTURE_HOST: up, not loopback,
/// not a pod veth and not a virtual device that carries the same packets again
/// (bridges, tunnels, overlays).
pub fn host_capture_links(links: &[Link]) -> Vec<HostVeth> {
    links
        .iter()
        .filter(|l| l.up && !l.loopback)
        .filter(|l| matches!(l.kind.as_deref(), None | Some("bond" | "vlan" | "team" | "macvlan")))
        .map(|l| HostVeth { ifname: l.name.clone(), ifindex: l.index })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, kind: Option<&str>, peer: Option<u32>, nsid: Option<i32>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: kind.map(String::from),
            link: peer,
            link_netnsid: nsid,
            up: true,
            loopback: false,
        }
    }

    #[test]
    fn pairs_by_mutual_peer_index() {
        let host = vec![
            link(1, "lo", None, None, None),
            link(2, "eth0", None, None, None),
            link(7, "cali1", Some("veth"), Some(2), Some(0)),
            link(8, "cali2", Some("veth"), Some(3), Some(1)),
        ];
        let inner = vec![link(2, "eth0", Some("veth"), Some(7), Some(0))];
        let addrs = vec![
            netlink::Addr { index: 2, ip: "10.200.0.2".parse().unwrap() },
            netlink::Addr { index: 2, ip: "fe80::1".parse().unwrap() },
        ];
        let m = match_namespace(&host, &inner, &addrs);
        assert_eq!(m, vec![("10.200.0.2".parse().unwrap(), HostVeth { ifname: "cali1".into(), ifindex: 7 })]);
        // Same ifindex in the pod, but the host veth's peer is another index: no match.
        let inner = vec![link(3, "eth0", Some("veth"), Some(7), Some(0))];
        let addrs = vec![netlink::Addr { index: 3, ip: "10.200.0.3".parse().unwrap() }];
        assert!(match_namespace(&host, &inner, &addrs).is_empty());
    }

    #[test]
    fn host_links_skip_virtual_devices() {
        let links = vec![
            link(1, "lo", None, None, None),
            link(2, "eth0", None, None, None),
            link(3, "cni0", Some("bridge"), None, None),
            link(4, "veth1", Some("veth"), Some(2), Some(0)),
            link(5, "bond0", Some("bond"), None, None),
        ];
        let mut l = links.clone();
        l[0].loopback = true;
        let names: Vec<_> = host_capture_links(&l).into_iter().map(|h| h.ifname).collect();
        assert_eq!(names, vec!["eth0", "bond0"]);
    }
}
