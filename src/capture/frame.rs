//! Link-layer frame → [`PacketEvent`]: strips Ethernet (with VLAN tags), Linux
//! cooked (SLL, SLL2), BSD loopback or nothing (raw IP), then lets etherparse
//! split IP and TCP/UDP/ICMP headers. Truncated frames (snap length smaller
//! than the packet) still decode: the original payload length comes from the
//! IP header, the captured prefix is what is there.
use super::{Direction, PacketEvent, L4};
use bytes::Bytes;
use etherparse::{IpNumber, LaxIpSlice, TcpSlice, UdpHeaderSlice};
use std::net::IpAddr;

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
    match payload.ip_number {
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
            let l4 = L4::Icmp { v6: payload.ip_number == IpNumber::IPV6_ICMP };
            Ok(ev(l4, 0, 0, data, orig_ip_payload))
        }
        _ => Err(Skip::OtherTransport),
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
}
