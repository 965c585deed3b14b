//! Network interfaces to capture on: the explicit `CNFLOW_INTERFACES` list, or
//! auto mode (every up, non-loopback interface), both kept current by
//! listening to rtnetlink link notifications (RTMGRP_LINK).
//!
//! [`watch`] yields [`IfaceEvent`]s; `capture::ebpf::LiveCapture::follow`
//! applies them to the attached programs.
use super::CaptureSettings;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfaceEvent {
    /// Capture should run on this interface (name, ifindex).
    Added(String, u32),
    /// The interface went away or down (auto mode): stop capturing on it.
    Removed(String, u32),
}

/// One link as reported by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    pub loopback: bool,
}

/// Which interfaces are wanted, given the configuration.
#[derive(Debug, Clone)]
pub enum Selection {
    Auto,
    Named(Vec<String>),
}

impl Selection {
    pub fn from_config(cfg: &CaptureSettings) -> Self {
        match &cfg.interfaces {
            Some(names) => Selection::Named(names.clone()),
            None => Selection::Auto,
        }
    }

    pub fn wants(&self, l: &Link) -> bool {
        match self {
            // Lower-case "up" = administratively up; operstate would hide
            // veths whose peer is not up yet.
            Selection::Auto => l.up && !l.loopback,
            // Named interfaces are captured even when down: no packets then anyway.
            Selection::Named(names) => names.contains(&l.name),
        }
    }
}

/// The wanted set, keyed by ifindex, and the events that turn `old` into it.
/// Renames count as remove + add, because the eBPF links were attached by name.
pub fn diff(
    current: &BTreeMap<u32, String>,
    links: &[Link],
    sel: &Selection,
) -> (BTreeMap<u32, String>, Vec<IfaceEvent>) {
    let wanted: BTreeMap<u32, String> =
        links.iter().filter(|l| sel.wants(l)).map(|l| (l.index, l.name.clone())).collect();
    let mut ev = Vec::new();
    for (i, n) in current {
        if wanted.get(i) != Some(n) {
            ev.push(IfaceEvent::Removed(n.clone(), *i));
        }
    }
    for (i, n) in &wanted {
        if current.get(i) != Some(n) {
            ev.push(IfaceEvent::Added(n.clone(), *i));
        }
    }
    (wanted, ev)
}

/// Current links from /sys/class/net (name, ifindex, IFF_UP, IFF_LOOPBACK).
pub fn list_links() -> Result<Vec<Link>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/class/net").context("reading /sys/class/net")? {
        let name = e?.file_name().to_string_lossy().into_owned();
        let base = format!("/sys/class/net/{name}");
        let read = |f: &str| std::fs::read_to_string(format!("{base}/{f}")).map(|s| s.trim().to_string());
        // An interface may vanish between read_dir and here: skip it.
        let (Ok(index), Ok(flags)) = (read("ifindex"), read("flags")) else { continue };
        let Ok(index) = index.parse::<u32>() else { continue };
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap_or(0);
        out.push(Link {
            index,
            name,
            up: flags & libc::IFF_UP as u32 != 0,
            loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
        });
    }
    Ok(out)
}

/// Starts following interfaces. The initial set is delivered first as
/// `Added` events. With an explicit list, names that do not exist fail here,
/// naming `CNFLOW_INTERFACES`.
pub fn watch(cfg: &CaptureSettings) -> Result<mpsc::Receiver<IfaceEvent>> {
    let sel = Selection::from_config(cfg);
    // Subscribe before listing so no change between the two is missed.
    let sock = netlink::LinkSocket::open().context("opening rtnetlink socket for interface changes")?;
    let links = list_links()?;
    if let Selection::Named(names) = &sel {
        for n in names {
            if !links.iter().any(|l| l.name == *n) {
                bail!("CNFLOW_INTERFACES: interface {n:?} does not exist");
            }
        }
    }
    let (current, initial) = diff(&BTreeMap::new(), &links, &sel);
    if initial.is_empty() {
        tracing::warn!("no interface to capture on yet (auto mode waits for one to come up)");
    }
    // Room for the whole initial set, so it can be queued without awaiting.
    let (tx, rx) = mpsc::channel(256 + initial.len());
    for e in initial {
        let _ = tx.try_send(e);
    }
    tokio::spawn(follow_netlink(sock, sel, current, tx));
    Ok(rx)
}

async fn follow_netlink(
    sock: netlink::LinkSocket,
    sel: Selection,
    mut current: BTreeMap<u32, String>,
    tx: mpsc::Sender<IfaceEvent>,
) {
    // SAFETY: LinkSocket owns its fd and never closes or replaces it while registered.
    let Ok(afd) = (unsafe { tokio::io::unix::AsyncFd::register(sock) }) else {
        tracing::error!("cannot register rtnetlink socket with tokio; interface changes are not followed");
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok(mut guard) = afd.readable().await else { return };
        // Messages only tell that something changed; the authoritative state is
        // re-read from sysfs, which also covers lost notifications (ENOBUFS).
        let mut changed = false;
        loop {
            match guard.get_inner().recv(&mut buf) {
                Ok(n) => changed |= netlink::has_link_change(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed = true,
                Err(e) => {
                    tracing::error!(error = %e, "rtnetlink receive failed; interface changes are not followed");
                    return;
                }
            }
        }
        if !changed {
            continue;
        }
        let links = match list_links() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing interfaces failed");
                continue;
            }
        };
        let (next, events) = diff(&current, &links, &sel);
        current = next;
        for e in events {
            tracing::info!(event = ?e, "interface change");
            if tx.send(e).await.is_err() {
                return;
            }
        }
    }
}

/// Minimal rtnetlink: a non-blocking NETLINK_ROUTE socket subscribed to link
/// notifications, and a check whether a datagram holds RTM_NEWLINK/DELLINK.
mod netlink {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    pub const RTM_NEWLINK: u16 = 16;
    pub const RTM_DELLINK: u16 = 17;
    const RTMGRP_LINK: u32 = 1;
    const NLMSG_HDRLEN: usize = 16;

    pub struct LinkSocket(OwnedFd);

    impl LinkSocket {
        pub fn open() -> io::Result<Self> {
            // SAFETY: plain socket(2)/bind(2) calls; the fd is owned right away.
            unsafe {
                let fd = libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    libc::NETLINK_ROUTE,
                );
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(fd);
                let mut sa: libc::sockaddr_nl = std::mem::zeroed();
                sa.nl_family = libc::AF_NETLINK as u16;
                sa.nl_groups = RTMGRP_LINK;
                let r = libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                );
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(LinkSocket(fd))
            }
        }

        pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }
    }

    impl AsRawFd for LinkSocket {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }

    /// Whether a netlink datagram contains a link add/change/delete message.
    /// Walks the nlmsghdr chain with bounds checks; malformed input = false.
    pub fn has_link_change(mut buf: &[u8]) -> bool {
        while buf.len() >= NLMSG_HDRLEN {
            let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            let ty = u16::from_ne_bytes([buf[4], buf[5]]);
            if len < NLMSG_HDRLEN || len > buf.len() {
                return false;
            }
            if ty == RTM_NEWLINK || ty == RTM_DELLINK {
                return true;
            }
            let aligned = (len + 3) & !3;
            buf = &buf[aligned.min(buf.len())..];
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, up: bool) -> Link {
        Link { index, name: name.into(), up, loopback: name == "lo" }
    }

    #[test]
    fn auto_mode_follows_up_non_loopback() {
        let sel = Selection::Auto;
        let (cur, ev) =
            diff(&BTreeMap::new(), &[link(1, "lo", true), link(2, "eth0", true), link(3, "veth1", false)], &sel);
        assert_eq!(ev, vec![IfaceEvent::Added("eth0".into(), 2)]);
        // veth1 comes up, eth0 disappears.
        let (cur, ev) = diff(&cur, &[link(1, "lo", true), link(3, "veth1", true)], &sel);
        assert_eq!(ev, vec![IfaceEvent::Removed("eth0".into(), 2), IfaceEvent::Added("veth1".into(), 3)]);
        // Rename = remove + add.
        let (_, ev) = diff(&cur, &[link(3, "veth9", true)], &sel);
        assert_eq!(ev, vec![IfaceEvent::Removed("veth1".into(), 3), IfaceEvent::Added("veth9".into(), 3)]);
    }

    #[test]
    fn named_mode_ignores_state_and_others() {
        let sel = Selection::Named(vec!["veth1".into()]);
        let (cur, ev) = diff(&BTreeMap::new(), &[link(2, "eth0", true), link(3, "veth1", false)], &sel);
        assert_eq!(ev, vec![IfaceEvent::Added("veth1".into(), 3)]);
        // Re-created with a new ifindex.
        let (_, ev) = diff(&cur, &[link(4, "veth1", true)], &sel);
        assert_eq!(ev, vec![IfaceEvent::Removed("veth1".into(), 3), IfaceEvent::Added("veth1".into(), 4)]);
    }

    #[test]
    fn netlink_message_scan_is_bounded() {
        let mut m = vec![0u8; 32];
        m[..4].copy_from_slice(&32u32.to_ne_bytes());
        m[4..6].copy_from_slice(&netlink::RTM_NEWLINK.to_ne_bytes());
        assert!(netlink::has_link_change(&m));
        m[4..6].copy_from_slice(&20u16.to_ne_bytes());
        assert!(!netlink::has_link_change(&m));
        m[..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(!netlink::has_link_change(&m));
        m[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(!netlink::has_link_change(&m));
        assert!(!netlink::has_link_change(&[1, 2, 3]));
    }

    #[test]
    fn lists_loopback() {
        let links = list_links().unwrap();
        assert!(links.iter().any(|l| l.name == "lo" && l.loopback));
    }
}
