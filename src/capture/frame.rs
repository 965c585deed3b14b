//! Link-layer frame → [`PacketEvent`]: strips Ethernet (with VLAN tags), Linux
//! cooked (SLL, SLL2), BSD loopback or nothing (raw IP), then lets etherparse
//! split IP and TCP/UDP/ICMP headers. Truncated frames (snap length smaller
//! than the packet) still decode: the original payload length comes from the
//! IP header, the captured prefix is what is there.
use super::{Direction, PacketEvent, L4};
use crate::stats::{counter, Counter};
use bytes::Bytes;
use etherparse::{IpNumber, LaxIpSlice, TcpSlice, UdpHeaderSlice};
use std::net::IpAddr;
use std::sync::LazyLock;

/// Link types of pcap/pcapng files that replay understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_NULL (0): 4-byte address family in the capturing host's byte order.
    Null,
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_RAW (101, also DLT_RAW 12 and 14): IPv4 or IPv6 by version nibble.
    Raw,
    /// LINKTYPE_LOOP (108): like Null but network byte order.
    Loop,
    /// LINKTYPE_LINUX_SLL (113).
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276).
    LinuxSll2,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// LINKTYPE_NFLOG (239): netfilter log messages (`tcpdump -i nflog:N`);
    /// the packet is the NFULA_PAYLOAD TLV.
    Nflog,
}

impl LinkType {
    pub fn from_code(code: u32) -> Option<Self> {
        // Upper bits of the classic pcap header field carry FCS information.
        Some(match code & 0xFFFF {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            239 => LinkType::Nflog,
            _ => return None,
        })
    }
}

/// Why a frame did not become a [`PacketEvent`]. Each is counted by the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not IPv4/IPv6 (ARP, LLDP, ...): normal traffic, not an error.
    NotIp,
    /// IP but neither TCP, UDP, ICMP nor ICMPv6.
    OtherTransport,
    /// Non-first IP fragment or fragmented datagram: not reassembled.
    Fragment,
    /// Headers cut off by the snap length or malformed.
    Malformed,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotIp => "not_ip",
            Skip::OtherTransport => "other_transport",
            Skip::Fragment => "fragment",
            Skip::Malformed => "malformed",
        }
    }
}

/// Frame metadata from the file: timestamps, interface, how much was cut off.
#[derive(Debug, Clone, Copy)]
pub struct FrameMeta {
    pub ts_ns: u64,
    pub ifindex: u32,
    /// Direction when the file records it (pcapng epb_flags); SLL types override.
    pub direction: Option<Direction>,
    /// Frame length on the wire (≥ captured length).
    pub orig_len: u32,
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const ETH_P_QINQ: u16 = 0x9100;
/// SLL packet type "sent by us".
const PACKET_OUTGOING: u16 = 4;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Decode one frame. `frame` is the captured bytes (possibly shorter than
/// `meta.orig_len`).
pub fn decode(link: LinkType, frame: &[u8], meta: &FrameMeta) -> Result<PacketEvent, Skip> {
    decode_with(link, frame, meta, Bytes::copy_from_slice)
}

/// [`decode`] with the payload made by `payload` from its slice of `frame`
/// (e.g. a zero-copy `Bytes::slice_ref` when the frame is already in a `Bytes`).
pub fn decode_with(
    link: LinkType,
    frame: &[u8],
    meta: &FrameMeta,
    payload: impl FnOnce(&[u8]) -> Bytes,
) -> Result<PacketEvent, Skip> {
    let mut direction = meta.direction.unwrap_or(Direction::Ingress);
    let mut ifindex = meta.ifindex;
    let (ethertype, l3) = match link {
        LinkType::Ethernet => (be16(frame, 12).ok_or(Skip::Malformed)?, &frame[14..]),
        LinkType::LinuxSll => {
            let pkttype = be16(frame, 0).ok_or(Skip::Malformed)?;
            let proto = be16(frame, 14).ok_or(Skip::Malformed)?;
            direction = sll_direction(pkttype, direction);
            (proto, &frame[16..])
        }
        LinkType::LinuxSll2 => {
            let proto = be16(frame, 0).ok_or(Skip::Malformed)?;
            // The capturing host's ifindex is more precise than pcapng's interface id.
            ifindex = be32(frame, 4).ok_or(Skip::Malformed)?;
            let pkttype = *frame.get(10).ok_or(Skip::Malformed)?;
            if frame.len() < 20 {
                return Err(Skip::Malformed);
            }
            direction = sll_direction(pkttype as u16, direction);
            (proto, &frame[20..])
        }
        // The family values differ per OS (AF_INET6 is 10, 24, 28 or 30), so
        // the IP version nibble decides instead.
        LinkType::Null | LinkType::Loop => {
            let l3 = frame.get(4..).ok_or(Skip::Malformed)?;
            (version_ethertype(l3)?, l3)
        }
        LinkType::Raw => (version_ethertype(frame)?, frame),
        LinkType::Ipv4 => (ETH_P_IPV4, frame),
        LinkType::Ipv6 => (ETH_P_IPV6, frame),
        LinkType::Nflog => {
            let l3 = nflog_payload(frame).ok_or(Skip::Malformed)?;
            (version_ethertype(l3)?, l3)
        }
    };
    let (ethertype, l3) = strip_vlans(ethertype, l3)?;
    if ethertype != ETH_P_IPV4 && ethertype != ETH_P_IPV6 {
        return Err(Skip::NotIp);
    }
    let l3_cut = meta.orig_len.saturating_sub(frame.len() as u32);
    decode_ip_with(l3, l3_cut, meta.ts_ns, ifindex, direction, payload)
}

/// The NFULA_PAYLOAD TLV (type 9) of an NFLOG frame: a 4-byte header
/// (family, version, resource id), then TLVs of (length, type) padded to 4
/// bytes. Length and type are in the capturing host's byte order, which the
/// file does not say: little-endian is tried first (x86/arm64 hosts), then
/// big-endian when that does not fit the frame.
fn nflog_payload(frame: &[u8]) -> Option<&[u8]> {
    const NFULA_PAYLOAD: u16 = 9;
    let walk = |le: bool| -> Option<&[u8]> {
        let mut off = 4;
        while off + 4 <= frame.len() {
            let h = [frame[off], frame[off + 1], frame[off + 2], frame[off + 3]];
            let (len, ty) = if le {
                (u16::from_le_bytes([h[0], h[1]]), u16::from_le_bytes([h[2], h[3]]))
            } else {
                (u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]]))
            };
            let len = len as usize;
            if len < 4 || off + len > frame.len() {
                return None;
            }
            // The top bits of the type are netlink flags (NLA_F_NESTED, ...).
            if ty & 0x7fff == NFULA_PAYLOAD {
                return Some(&frame[off + 4..off + len]);
            }
            off += (len + 3) & !3;
        }
        None
    };
    if frame.len() < 4 {
        return None;
    }
    walk(true).or_else(|| walk(false))
}

fn sll_direction(pkttype: u16, fallback: Direction) -> Direction {
    if pkttype == PACKET_OUTGOING {
        Direction::Egress
    } else if pkttype <= 3 {
        Direction::Ingress
    } else {
        fallback
    }
}

fn version_ethertype(l3: &[u8]) -> Result<u16, Skip> {
    match l3.first().map(|b| b >> 4) {
        Some(4) => Ok(ETH_P_IPV4),
        Some(6) => Ok(ETH_P_IPV6),
        Some(_) => Err(Skip::NotIp),
        None => Err(Skip::Malformed),
    }
}

fn strip_vlans(mut ethertype: u16, mut l3: &[u8]) -> Result<(u16, &[u8]), Skip> {
    // Bounded: at most a few tags are ever stacked.
    for _ in 0..4 {
        if !matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ) {
            break;
        }
        ethertype = be16(l3, 2).ok_or(Skip::Malformed)?;
        l3 = &l3[4..];
    }
    Ok((ethertype, l3))
}

/// Decode from the IP header down. `cut` = bytes of the frame not captured.
pub fn decode_ip(l3: &[u8], cut: u32, ts_ns: u64, ifindex: u32, direction: Direction) -> Result<PacketEvent, Skip> {
    decode_ip_with(l3, cut, ts_ns, ifindex, direction, Bytes::copy_from_slice)
}

fn decode_ip_with(
    l3: &[u8],
    cut: u32,
    ts_ns: u64,
    ifindex: u32,
    direction: Direction,
    make_payload: impl FnOnce(&[u8]) -> Bytes,
) -> Result<PacketEvent, Skip> {
    let mut l3 = l3;
    let mut depth = 0;
    let (ip, data, orig_ip_payload, ip_number) = loop {
        let (ip, _ext_err) = LaxIpSlice::from_slice(l3).map_err(|_| Skip::Malformed)?;
        let payload = ip.payload();
        if payload.fragmented {
            return Err(Skip::Fragment);
        }
        let data = payload.payload;
        let offset = data.as_ptr() as usize - l3.as_ptr() as usize;
        // Original IP datagram length from the header; when the header does not
        // say (TSO leaves total_len 0, IPv6 jumbograms) fall back to the frame.
        let declared = match &ip {
            LaxIpSlice::Ipv4(v4) => {
                let total = v4.header().total_len() as usize;
                (total >= v4.header().slice().len()).then_some(total)
            }
            LaxIpSlice::Ipv6(v6) => {
                let pl = v6.header().payload_length() as usize;
                (pl != 0).then_some(40 + pl)
            }
        };
        let ip_total = declared.unwrap_or(l3.len() + cut as usize);
        let orig_ip_payload = ip_total.saturating_sub(offset);
        // Ethernet padding makes the capture longer than the datagram.
        let data = &data[..data.len().min(orig_ip_payload)];
        let ip_number = payload.ip_number;
        // Overlay traffic: the flows worth decoding are inside the tunnel.
        if depth < MAX_ENCAP_DEPTH {
            if let Some((encap, inner)) = tunnel_inner(ip_number, data) {
                encap.count();
                depth += 1;
                l3 = inner?;
                continue;
            }
        }
        break (ip, data, orig_ip_payload, ip_number);
    };
    let (src, dst) = (ip.source_addr(), ip.destination_addr());
    let ev = |l4, sp, dp, payload: &[u8], payload_len: usize| PacketEvent {
        ts_ns,
        ifindex,
        direction,
        src: canonical_ip(src),
        dst: canonical_ip(dst),
        src_port: sp,
        dst_port: dp,
        l4,
        payload_len: payload_len.min(u32::MAX as usize) as u32,
        payload: make_payload(payload),
    };
    match ip_number {
        IpNumber::TCP => {
            let tcp = TcpSlice::from_slice(data).map_err(|_| Skip::Malformed)?;
            let hl = tcp.header_len();
            let l4 = L4::Tcp { seq: tcp.sequence_number(), ack: tcp.acknowledgment_number(), flags: data[13] & 0x3F };
            Ok(ev(l4, tcp.source_port(), tcp.destination_port(), &data[hl..], orig_ip_payload.saturating_sub(hl)))
        }
        IpNumber::UDP => {
            let udp = UdpHeaderSlice::from_slice(data).map_err(|_| Skip::Malformed)?;
            Ok(ev(L4::Udp, udp.source_port(), udp.destination_port(), &data[8..], orig_ip_payload.saturating_sub(8)))
        }
        IpNumber::ICMP | IpNumber::IPV6_ICMP => {
            if data.len() < 4 {
                return Err(Skip::Malformed);
            }
            let l4 = L4::Icmp { v6: ip_number == IpNumber::IPV6_ICMP };
            Ok(ev(l4, 0, 0, data, orig_ip_payload))
        }
        _ => Err(Skip::OtherTransport),
    }
}

/// At most this many tunnel headers are removed from one packet (VXLAN in
/// GRE, say); deeper nesting is reported as the tunnel packet it is, which
/// bounds the work per packet whatever the bytes say.
pub const MAX_ENCAP_DEPTH: usize = cnflow_common::MAX_DECAP_DEPTH;

/// UDP ports of VXLAN (IANA 4789; 8472 is the Linux kernel's historical
/// default, used by Flannel) and Geneve (6081, Cilium, OVN).
pub const VXLAN_PORTS: [u16; 2] = [cnflow_common::VXLAN_PORT, cnflow_common::VXLAN_LINUX_PORT];
pub const GENEVE_PORT: u16 = cnflow_common::GENEVE_PORT;
/// GRE protocol type of an Ethernet frame (transparent Ethernet bridging:
/// gretap, Geneve/VXLAN-like L2 overlays).
const ETH_P_TEB: u16 = 0x6558;

/// Overlay encapsulations cnflow removes, each with its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    Vxlan,
    Geneve,
    Gre,
    /// IPv4 in IP (IP protocol 4: Calico IPIP, `ip link add type ipip`).
    Ipip,
    /// IPv6 in IP (IP protocol 41: 6in4/SIT, ip6tnl).
    Sit,
}

impl Encap {
    pub const ALL: [Encap; 5] = [Encap::Vxlan, Encap::Geneve, Encap::Gre, Encap::Ipip, Encap::Sit];

    /// The `encapsulation` attribute of `cnflow.capture.decapsulated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encap::Vxlan => "vxlan",
            Encap::Geneve => "geneve",
            Encap::Gre => "gre",
            Encap::Ipip => "ipip",
            Encap::Sit => "sit",
        }
    }

    pub fn counter(self) -> Counter {
        static C: LazyLock<[Counter; 5]> = LazyLock::new(|| {
            Encap::ALL.map(|e| counter("cnflow.capture.decapsulated", &[("encapsulation", e.as_str())]))
        });
        C[self as usize]
    }

    fn count(self) {
        self.counter().inc();
    }
}

/// The encapsulation and the inner IP packet when `data` (the payload of an
/// IP packet with protocol `ip_number`) is a tunnel packet; None when it is
/// not, or when the header does not carry the evidence (flags, version,
/// inner protocol) of the encapsulation its port or protocol number
/// suggests, so an unrelated UDP flow on 4789 stays a UDP flow. An inner
/// frame that is not IP (ARP inside VXLAN) is `NotIp`, still counted as
/// decapsulated (as the kernel does).
fn tunnel_inner(ip_number: IpNumber, data: &[u8]) -> Option<(Encap, Result<&[u8], Skip>)> {
    match ip_number {
        IpNumber::UDP => {
            let dport = be16(data, 2)?;
            let udp = data.get(8..)?;
            if VXLAN_PORTS.contains(&dport) {
                // RFC 7348: flags (only the I bit, 0x08), 24 reserved bits,
                // VNI, 8 reserved bits; then an Ethernet frame.
                let h = udp.get(..8)?;
                if h[0] != 0x08 {
                    return None;
                }
                return Some((Encap::Vxlan, inner_ethernet(&udp[8..])));
            }
            if dport == GENEVE_PORT {
                // RFC 8926: version (2 bits, 0) and option length in 4-byte
                // words, flags, protocol type, VNI, then the options.
                let (vl, proto) = (*udp.first()?, be16(udp, 2)?);
                if vl >> 6 != 0 || !tunnel_ethertype(proto) {
                    return None;
                }
                let start = 8 + (vl & 0x3f) as usize * 4;
                let inner = udp.get(start..).ok_or(Skip::Malformed);
                return Some((Encap::Geneve, inner.and_then(|i| inner_by_ethertype(proto, i))));
            }
            None
        }
        IpNumber::GRE => {
            // RFC 2784/2890: C, R, K, S bits and version 0 (version 1 is
            // PPTP's enhanced GRE, which carries PPP, not IP).
            let (flags, proto) = (be16(data, 0)?, be16(data, 2)?);
            if flags & 0x4007 != 0 || !tunnel_ethertype(proto) {
                return None;
            }
            let start = 4 + 4 * [0x8000, 0x2000, 0x1000].iter().filter(|&&bit| flags & bit != 0).count();
            let inner = data.get(start..).ok_or(Skip::Malformed);
            Some((Encap::Gre, inner.and_then(|i| inner_by_ethertype(proto, i))))
        }
        IpNumber::IPV4 => Some((Encap::Ipip, ip_version(data, 4))),
        IpNumber::IPV6 => Some((Encap::Sit, ip_version(data, 6))),
        _ => None,
    }
}

/// Payloads a tunnel header can name: IPv4, IPv6 or an Ethernet frame (TEB).
fn tunnel_ethertype(proto: u16) -> bool {
    matches!(proto, ETH_P_TEB | ETH_P_IPV4 | ETH_P_IPV6)
}

fn inner_by_ethertype(proto: u16, inner: &[u8]) -> Result<&[u8], Skip> {
    match proto {
        ETH_P_TEB => inner_ethernet(inner),
        ETH_P_IPV4 => ip_version(inner, 4),
        _ => ip_version(inner, 6),
    }
}

fn inner_ethernet(frame: &[u8]) -> Result<&[u8], Skip> {
    let ethertype = be16(frame, 12).ok_or(Skip::Malformed)?;
    let (ethertype, l3) = strip_vlans(ethertype, &frame[14..])?;
    match ethertype {
        ETH_P_IPV4 => ip_version(l3, 4),
        ETH_P_IPV6 => ip_version(l3, 6),
        _ => Err(Skip::NotIp),
    }
}

fn ip_version(l3: &[u8], v: u8) -> Result<&[u8], Skip> {
    match l3.first() {
        Some(b) if b >> 4 == v => Ok(l3),
        _ => Err(Skip::Malformed),
    }
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) are the IPv4 peer.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    pub(crate) fn tcp_v4(payload: &[u8], seq: u32, syn: bool) -> Vec<u8> {
        let b = PacketBuilder::ipv4([10, 200, 0, 1], [10, 200, 0, 2], 64).tcp(40000, 6379, seq, 1000);
        let b = if syn { b.syn() } else { b.ack(7).psh() };
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn meta(orig_len: u32) -> FrameMeta {
        FrameMeta { ts_ns: 5, ifindex: 1, direction: None, orig_len }
    }

    #[test]
    fn raw_ipv4_tcp() {
        let pkt = tcp_v4(b"PING\r\n", 100, false);
        let ev = decode(LinkType::Raw, &pkt, &meta(pkt.len() as u32)).unwrap();
        assert_eq!(ev.src, "10.200.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((ev.src_port, ev.dst_port), (40000, 6379));
        assert_eq!(&ev.payload[..], b"PING\r\n");
        assert_eq!(ev.payload_len, 6);
        assert!(matches!(ev.l4, L4::Tcp { seq: 100, ack: 7, flags } if flags & 0x10 != 0));
    }

    #[test]
    fn truncated_frame_keeps_original_length() {
        let pkt = tcp_v4(&[b'x'; 100], 1, false);
        let cut = &pkt[..pkt.len() - 60];
        let ev = decode(LinkType::Ipv4, cut, &meta(pkt.len() as u32)).unwrap();
        assert_eq!(ev.payload.len(), 40);
        assert_eq!(ev.payload_len, 100);
        assert_eq!(ev.truncated_bytes(), 60);
    }

    #[test]
    fn ethernet_vlan_and_padding() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        f.extend_from_slice(&tcp_v4(b"", 1, true));
        f.extend_from_slice(&[0u8; 6]); // Ethernet minimum-size padding
        let ev = decode(LinkType::Ethernet, &f, &meta(f.len() as u32)).unwrap();
        assert_eq!(ev.payload_len, 0);
        assert!(ev.payload.is_empty());
    }

    #[test]
    fn sll_and_sll2_direction_and_ifindex() {
        let ip = tcp_v4(b"hi", 1, false);
        let mut sll = vec![0, 4, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip);
        let ev = decode(LinkType::LinuxSll, &sll, &meta(sll.len() as u32)).unwrap();
        assert_eq!(ev.direction, Direction::Egress);
        let mut sll2 = vec![0x86, 0xDD, 0, 0, 0, 0, 0, 9, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
        let mut v6 = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 64).udp(5353, 53).write(&mut v6, b"q").unwrap();
        sll2.extend_from_slice(&v6);
        let ev = decode(LinkType::LinuxSll2, &sll2, &meta(sll2.len() as u32)).unwrap();
        assert_eq!((ev.ifindex, ev.direction), (9, Direction::Ingress));
        assert_eq!((ev.src_port, ev.dst_port, ev.payload_len), (5353, 53, 1));
        assert!(matches!(ev.l4, L4::Udp));
    }

    #[test]
    fn null_loopback_both_byte_orders_and_icmp() {
        let mut icmp = Vec::new();
        PacketBuilder::ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut icmp, b"abc")
            .unwrap();
        for fam in [[2u8, 0, 0, 0], [0, 0, 0, 2]] {
            let mut f = fam.to_vec();
            f.extend_from_slice(&icmp);
            let ev = decode(LinkType::Null, &f, &meta(f.len() as u32)).unwrap();
            assert!(matches!(ev.l4, L4::Icmp { v6: false }));
            assert_eq!(ev.payload[0], 8);
            assert_eq!(ev.payload_len, 8 + 3);
        }
    }

    #[test]
    fn bad_frames_are_skipped_not_panicking() {
        assert_eq!(decode(LinkType::Ethernet, &[0; 5], &meta(5)).unwrap_err(), Skip::Malformed);
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert_eq!(decode(LinkType::Ethernet, &arp, &meta(16)).unwrap_err(), Skip::NotIp);
        let pkt = tcp_v4(b"x", 1, false);
        assert_eq!(decode(LinkType::Raw, &pkt[..25], &meta(pkt.len() as u32)).unwrap_err(), Skip::Malformed);
        for len in 0..pkt.len() {
            let _ = decode(LinkType::LinuxSll2, &pkt[..len], &meta(100));
            let _ = decode(LinkType::Nflog, &pkt[..len], &meta(100));
        }
    }

    /// NFLOG TLVs in either byte order: a prefix TLV (padded), then the payload.
    #[test]
    fn nflog_payload_in_both_byte_orders() {
        let pkt = tcp_v4(b"hello", 1, false);
        for le in [true, false] {
            let enc = |v: u16| if le { v.to_le_bytes() } else { v.to_be_bytes() };
            let mut f = vec![2, 0, 0, 5]; // AF_INET, version 0, group 5
            f.extend_from_slice(&enc(6)); // NFULA_PREFIX "ab", padded to 8
            f.extend_from_slice(&enc(10));
            f.extend_from_slice(b"ab\0\0");
            f.extend_from_slice(&enc(4 + pkt.len() as u16));
            f.extend_from_slice(&enc(9));
            f.extend_from_slice(&pkt);
            let ev = decode(LinkType::Nflog, &f, &meta(f.len() as u32)).unwrap();
            assert_eq!(&ev.payload[..], b"hello", "little-endian TLVs: {le}");
        }
        // No payload TLV: malformed, not a panic.
        assert_eq!(decode(LinkType::Nflog, &[2, 0, 0, 5, 8, 0, 1, 0], &meta(8)).unwrap_err(), Skip::Malformed);
    }

    fn eth(ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    /// Outer IPv4 (192.0.2.1 → 192.0.2.2) carrying `payload` as IP protocol `proto`.
    fn outer_ip(proto: IpNumber, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64).write(&mut out, proto, payload).unwrap();
        out
    }

    fn outer_udp(dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64).udp(51000, dport).write(&mut out, payload).unwrap();
        out
    }

    fn vxlan(inner_frame: &[u8]) -> Vec<u8> {
        let mut v = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
        v.extend_from_slice(inner_frame);
        v
    }

    fn gre(flags: u16, proto: u16, inner: &[u8]) -> Vec<u8> {
        let mut g = flags.to_be_bytes().to_vec();
        g.extend_from_slice(&proto.to_be_bytes());
        for bit in [0x8000u16, 0x2000, 0x1000] {
            if flags & bit != 0 {
                g.extend_from_slice(&[0, 0, 0, 7]);
            }
        }
        g.extend_from_slice(inner);
        g
    }

    fn inner_v6() -> Vec<u8> {
        let mut v6 = Vec::new();
        PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).tcp(40001, 80, 9, 1).ack(3).write(&mut v6, b"GET /").unwrap();
        v6
    }

    fn assert_inner(ev: &PacketEvent) {
        assert_eq!((ev.src, ev.dst), ("10.200.0.1".parse().unwrap(), "10.200.0.2".parse().unwrap()));
        assert_eq!((ev.src_port, ev.dst_port), (40000, 6379));
        assert_eq!(&ev.payload[..], b"PING\r\n");
        assert_eq!(ev.payload_len, 6);
    }

    /// Every encapsulation is removed and counted, and the packet becomes the inner one.
    #[test]
    fn tunnels_are_decapsulated_and_counted() {
        let inner = tcp_v4(b"PING\r\n", 1, false);
        let inner_eth = eth(ETH_P_IPV4, &inner);
        let mut vlan_eth = eth(ETH_P_8021Q, &[0, 5, 0x08, 0x00]);
        vlan_eth.extend_from_slice(&inner);
        let mut geneve = vec![0x02 /* 2 option words */, 0, 0x65, 0x58, 0, 0, 7, 0];
        geneve.extend_from_slice(&[0; 8]);
        geneve.extend_from_slice(&inner_eth);
        let cases: Vec<(Encap, Vec<u8>)> = vec![
            (Encap::Vxlan, outer_udp(4789, &vxlan(&inner_eth))),
            (Encap::Vxlan, outer_udp(8472, &vxlan(&vlan_eth))),
            (Encap::Geneve, outer_udp(6081, &geneve)),
            (Encap::Gre, outer_ip(IpNumber::GRE, &gre(0, 0x0800, &inner))),
            (Encap::Gre, outer_ip(IpNumber::GRE, &gre(0xB000, 0x0800, &inner))),
            (Encap::Gre, outer_ip(IpNumber::GRE, &gre(0x2000, 0x6558, &inner_eth))),
            (Encap::Ipip, outer_ip(IpNumber::IPV4, &inner)),
        ];
        for (encap, pkt) in cases {
            let before = encap.counter().get();
            let f = eth(ETH_P_IPV4, &pkt);
            let ev =
                decode(LinkType::Ethernet, &f, &meta(f.len() as u32)).unwrap_or_else(|e| panic!("{encap:?}: {e:?}"));
            assert_inner(&ev);
            assert!(encap.counter().get() > before, "{encap:?} not counted");
        }
        // IPv6 in IPv4 (SIT) and IPv6 over GRE.
        for (encap, pkt) in [
            (Encap::Sit, outer_ip(IpNumber::IPV6, &inner_v6())),
            (Encap::Gre, outer_ip(IpNumber::GRE, &gre(0, 0x86DD, &inner_v6()))),
        ] {
            let ev = decode(LinkType::Raw, &pkt, &meta(pkt.len() as u32)).unwrap();
            assert_eq!((ev.src_port, ev.dst_port, &ev.payload[..]), (40001, 80, &b"GET /"[..]), "{encap:?}");
        }
    }

    /// VXLAN inside GRE inside IPIP: all three removed; a snap length that
    /// cuts the inner payload keeps its original length.
    #[test]
    fn nested_tunnels_and_truncation() {
        let inner = tcp_v4(&[b'x'; 100], 1, false);
        let pkt = outer_ip(
            IpNumber::IPV4,
            &outer_ip(IpNumber::GRE, &gre(0, 0x0800, &outer_udp(4789, &vxlan(&eth(ETH_P_IPV4, &inner))))),
        );
        let cut = &pkt[..pkt.len() - 60];
        let ev = decode(LinkType::Raw, cut, &meta(pkt.len() as u32)).unwrap();
        assert_eq!((ev.dst_port, ev.payload.len(), ev.payload_len), (6379, 40, 100));
        // One level more than MAX_ENCAP_DEPTH: the innermost tunnel packet is reported as is.
        let deeper = outer_ip(IpNumber::IPV4, &pkt);
        let ev = decode(LinkType::Raw, &deeper, &meta(deeper.len() as u32)).unwrap();
        assert_eq!((ev.l4, ev.dst_port), (L4::Udp, 4789));
    }

    /// Port or protocol alone is not evidence: a header that does not have the
    /// encapsulation's shape leaves the packet as it is.
    #[test]
    fn lookalikes_are_not_decapsulated() {
        let inner = tcp_v4(b"PING\r\n", 1, false);
        // UDP to 4789 whose first byte is not VXLAN's flags: a plain UDP flow.
        let mut not_vxlan = vxlan(&eth(ETH_P_IPV4, &inner));
        not_vxlan[0] = 0x41;
        let pkt = outer_udp(4789, &not_vxlan);
        let ev = decode(LinkType::Raw, &pkt, &meta(pkt.len() as u32)).unwrap();
        assert_eq!((ev.l4, ev.dst_port, ev.payload_len as usize), (L4::Udp, 4789, not_vxlan.len()));
        // Geneve version 1, GRE version 1 (PPTP), GRE with an unknown protocol type.
        let mut geneve = vec![0x40, 0, 0x65, 0x58, 0, 0, 7, 0];
        geneve.extend_from_slice(&eth(ETH_P_IPV4, &inner));
        assert_eq!(decode(LinkType::Raw, &outer_udp(6081, &geneve), &meta(0)).unwrap().dst_port, 6081);
        for g in [gre(0x0001, 0x880B, &inner), gre(0, 0x1234, &inner)] {
            let pkt = outer_ip(IpNumber::GRE, &g);
            assert_eq!(decode(LinkType::Raw, &pkt, &meta(pkt.len() as u32)).unwrap_err(), Skip::OtherTransport);
        }
        // ARP inside VXLAN: not IP.
        let pkt = outer_udp(4789, &vxlan(&eth(0x0806, &[0; 28])));
        assert_eq!(decode(LinkType::Raw, &pkt, &meta(pkt.len() as u32)).unwrap_err(), Skip::NotIp);
    }

    #[test]
    fn random_tunnel_payloads_never_panic() {
        use proptest::prelude::*;
        proptest!(|(body in proptest::collection::vec(any::<u8>(), 0..120), kind in 0u8..6, cut in 0usize..200)| {
            let pkt = match kind {
                0 => outer_udp(4789, &body),
                1 => outer_udp(6081, &body),
                2 => outer_ip(IpNumber::GRE, &body),
                3 => outer_ip(IpNumber::IPV4, &body),
                4 => outer_ip(IpNumber::IPV6, &body),
                _ => outer_udp(8472, &vxlan(&body)),
            };
            let n = pkt.len().saturating_sub(cut);
            let _ = decode(LinkType::Raw, &pkt[..n], &meta(pkt.len() as u32));
        });
    }
}
