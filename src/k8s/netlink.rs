//! Minimal rtnetlink dumps (links and addresses) of the calling thread's
//! network namespace. Enough to pair a pod's interface with its host-side veth
//! without a container runtime or an extra netlink crate. Parsing is bounds
//! checked: a malformed message ends the parse, it never panics.
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_GETLINK: u16 = 18;
const RTM_NEWLINK: u16 = 16;
const RTM_GETADDR: u16 = 22;
const RTM_NEWADDR: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Link kind from IFLA_INFO_KIND ("veth", "bridge", ...); None for physical devices.
    pub kind: Option<String>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace).
    pub link: Option<u32>,
    /// Set when the peer lives in another network namespace.
    pub link_netnsid: Option<i32>,
    pub up: bool,
    pub loopback: bool,
}

/// One interface address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub ip: IpAddr,
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the returned fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
    // SAFETY: valid fd and a correctly sized timeval.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    Ok(fd)
}

/// Send a dump request and collect the payloads of messages of type `want`.
fn dump(msg_type: u16, family_payload: &[u8], want: u16) -> io::Result<Vec<Vec<u8>>> {
    let fd = socket()?;
    let seq: u32 = 1;
    let len = 16 + family_payload.len();
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&msg_type.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(family_payload);
    // SAFETY: sockaddr_nl zeroed is a valid "kernel" destination.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: buffer and address are valid for the given lengths.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr() as *const libc::c_void,
            req.len(),
            0,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Bounded: a dump of even thousands of interfaces is a few hundred reads.
    for _ in 0..100_000 {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut data = &buf[..n as usize];
        while data.len() >= 16 {
            let mlen = u32::from_ne_bytes(data[0..4].try_into().unwrap_or_default()) as usize;
            let mtype = u16::from_ne_bytes(data[4..6].try_into().unwrap_or_default());
            let mseq = u32::from_ne_bytes(data[8..12].try_into().unwrap_or_default());
            if mlen < 16 || mlen > data.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
            }
            if mseq == seq {
                match mtype {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = data.get(16..20).map(|b| i32::from_ne_bytes(b.try_into().unwrap_or_default()));
                        match code {
                            Some(0) => {}
                            Some(c) => return Err(io::Error::from_raw_os_error(-c)),
                            None => return Err(io::Error::new(io::ErrorKind::InvalidData, "netlink error")),
                        }
                    }
                    t if t == want => out.push(data[16..mlen].to_vec()),
                    _ => {}
                }
            }
            let aligned = (mlen + 3) & !3;
            data = data.get(aligned..).unwrap_or_default();
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "netlink dump did not end"))
}

/// (type, payload) of each rtattr in `data`.
fn attrs(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((ty, &data[4..len]));
        data = data.get((len + 3) & !3..).unwrap_or_default();
    }
    out
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn u32_of(b: &[u8]) -> Option<u32> {
    b.get(..4).map(|b| u32::from_ne_bytes(b.try_into().unwrap_or_default()))
}

/// Parse the payload of one RTM_NEWLINK message.
pub fn parse_link(p: &[u8]) -> Option<Link> {
    if p.len() < 16 {
        return None;
    }
    let index = i32::from_ne_bytes(p[4..8].try_into().ok()?);
    let flags = u32::from_ne_bytes(p[8..12].try_into().ok()?);
    let mut l = Link {
        index: u32::try_from(index).ok()?,
        name: String::new(),
        kind: None,
        link: None,
        link_netnsid: None,
        up: flags & IFF_UP != 0,
        loopback: flags & IFF_LOOPBACK != 0,
    };
    for (ty, v) in attrs(&p[16..]) {
        match ty {
            IFLA_IFNAME => l.name = cstr(v),
            IFLA_LINK => l.link = u32_of(v).filter(|&i| i != 0),
            IFLA_LINK_NETNSID => l.link_netnsid = u32_of(v).map(|x| x as i32),
            IFLA_LINKINFO => {
                for (ity, iv) in attrs(v) {
                    if ity == IFLA_INFO_KIND {
                        l.kind = Some(cstr(iv));
                    }
                }
            }
            _ => {}
        }
    }
    Some(l)
}

/// Parse the payload of one RTM_NEWADDR message.
pub fn parse_addr(p: &[u8]) -> Option<Addr> {
    if p.len() < 8 {
        return None;
    }
    let family = p[0] as i32;
    let index = u32::from_ne_bytes(p[4..8].try_into().ok()?);
    let (mut local, mut address) = (None, None);
    for (ty, v) in attrs(&p[8..]) {
        let ip = match (family, v.len()) {
            (libc::AF_INET, 4) => IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            (libc::AF_INET6, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?)),
            _ => continue,
        };
        match ty {
            IFA_LOCAL => local = Some(ip),
            IFA_ADDRESS => address = Some(ip),
            _ => {}
        }
    }
    // On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
    Some(Addr { index, ip: local.or(address)? })
}

/// Every interface of the calling thread's network namespace.
pub fn links() -> io::Result<Vec<Link>> {
    let payload = [0u8; 16]; // ifinfomsg, AF_UNSPEC
    Ok(dump(RTM_GETLINK, &payload, RTM_NEWLINK)?.iter().filter_map(|p| parse_link(p)).collect())
}

/// Every address of the calling thread's network namespace.
pub fn addrs() -> io::Result<Vec<Addr>> {
    let payload = [0u8; 8]; // ifaddrmsg, AF_UNSPEC
    Ok(dump(RTM_GETADDR, &payload, RTM_NEWADDR)?.iter().filter_map(|p| parse_addr(p)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed() {
        let links = links().unwrap();
        assert!(links.iter().any(|l| l.loopback && l.name == "lo"), "{links:?}");
        let addrs = addrs().unwrap();
        assert!(addrs.iter().any(|a| a.ip == IpAddr::V4(Ipv4Addr::LOCALHOST)), "{addrs:?}");
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_link(&data);
            let _ = parse_addr(&data);
            let _ = attrs(&data);
        }
    }
}
