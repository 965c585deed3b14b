//! Canonical flow key: both directions of a connection map to the same key.
use super::Transport;
use crate::capture::{PacketEvent, L4};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    pub ifindex: u32,
    pub transport: Transport,
    /// The lower (address, port) endpoint.
    pub a: (IpAddr, u16),
    pub b: (IpAddr, u16),
}

/// Hashed once or twice per packet (flow table, per-connection maps): four
/// integer writes instead of the derived hash's dozen (`IpAddr` hashes its
/// discriminant, then its octets as a length-prefixed slice). Equal keys
/// give equal writes, so it agrees with the derived `Eq`.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        fn addr(a: IpAddr) -> u128 {
            match a {
                // Tagged above the IPv6 range of `::ffff:0:0/96`'s low bits, so an
                // IPv4 address and its mapped IPv6 form hash apart (they are
                // different keys).
                IpAddr::V4(v) => u32::from(v) as u128 | 1 << 127,
                IpAddr::V6(v) => u128::from(v),
            }
        }
        h.write_u64((self.ifindex as u64) << 32 | (self.transport as u64) << 16 | self.a.1 as u64);
        h.write_u128(addr(self.a.0));
        h.write_u128(addr(self.b.0) ^ (self.b.1 as u128) << 112);
    }
}

/// ICMP echo request/reply types (v4, v6).
pub fn icmp_echo(v6: bool, icmp_type: u8) -> Option<bool> {
    match (v6, icmp_type) {
        (false, 8) | (true, 128) => Some(true),
        (false, 0) | (true, 129) => Some(false),
        _ => None,
    }
}

impl FlowKey {
    /// Key of a packet and whether the packet travels from `a` to `b`.
    pub fn of(ev: &PacketEvent) -> (Self, bool) {
        let (transport, sp, dp) = match ev.l4 {
            L4::Tcp { .. } => (Transport::Tcp, ev.src_port, ev.dst_port),
            L4::Udp => (Transport::Udp, ev.src_port, ev.dst_port),
            // Echo exchanges with different identifiers are separate
            // "connections" (several pings at once); other ICMP messages
            // (errors) land on one conn per host pair.
            L4::Icmp { v6 } => {
                let p = &ev.payload;
                let id = match p.first().and_then(|t| icmp_echo(v6, *t)) {
                    Some(_) if p.len() >= 6 => u16::from_be_bytes([p[4], p[5]]),
                    _ => 0,
                };
                (Transport::Icmp, id, id)
            }
        };
        let s = (ev.src, sp);
        let d = (ev.dst, dp);
        let forward = s <= d;
        let (a, b) = if forward { (s, d) } else { (d, s) };
        (FlowKey { ifindex: ev.ifindex, transport, a, b }, forward)
    }
}
