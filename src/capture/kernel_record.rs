//! Decoding of the kernel's fixed-size [`PacketRecord`] into a [`PacketEvent`],
//! and the one-line text form printed by `cnflow run --format packets`.
//! Pure functions, so they are tested without eBPF.
use super::{Direction, PacketEvent, L4};
use bytes::Bytes;
use cnflow_common::{
    PacketRecord, DIR_EGRESS, DIR_INGRESS, MAX_PAYLOAD, PACKET_HEADER_LEN, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP,
    PROTO_UDP,
};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

/// Why a record could not be turned into an event (counted by the reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a `PacketRecord` (ring buffer/ABI mismatch).
    Short,
    BadFamily,
    BadProto,
    BadDirection,
}

impl DecodeError {
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::Short => "short_record",
            DecodeError::BadFamily => "bad_family",
            DecodeError::BadProto => "bad_proto",
            DecodeError::BadDirection => "bad_direction",
        }
    }
}

/// Copies a record out of raw ring-buffer bytes (which carry no alignment
/// guarantee). Ring entries hold the header plus the captured payload bytes
/// (padded up to a size class: the bytes after `cap_len` are not payload);
/// `cap_len` is clamped to what is really there.
pub fn record_from_bytes(buf: &[u8]) -> Result<PacketRecord, DecodeError> {
    if buf.len() < PACKET_HEADER_LEN {
        return Err(DecodeError::Short);
    }
    // SAFETY: PacketRecord is repr(C) plain data, valid for any bit pattern (all zero included).
    let mut rec: PacketRecord = unsafe { std::mem::zeroed() };
    let n = buf.len().min(std::mem::size_of::<PacketRecord>());
    // SAFETY: n ≤ size_of::<PacketRecord>() and n ≤ buf.len(); the regions do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), (&mut rec as *mut PacketRecord).cast::<u8>(), n) };
    let present = (n - PACKET_HEADER_LEN).min(u16::MAX as usize) as u16;
    rec.cap_len = rec.cap_len.min(present);
    Ok(rec)
}

/// The fixed part of a record (everything but the payload bytes).
struct Head {
    ts_ns: u64,
    ifindex: u32,
    payload_len: u32,
    tcp_seq: u32,
    tcp_ack: u32,
    cap_len: u16,
    src_port: u16,
    dst_port: u16,
    direction: u8,
    family: u8,
    proto: u8,
    tcp_flags: u8,
    src_addr: [u8; 16],
    dst_addr: [u8; 16],
}

/// A field of `PacketRecord` read from unaligned ring bytes at its repr(C) offset.
macro_rules! field {
    ($buf:expr, $f:ident, $t:ty) => {{
        const AT: usize = std::mem::offset_of!(PacketRecord, $f);
        <$t>::from_ne_bytes($buf[AT..AT + std::mem::size_of::<$t>()].try_into().unwrap_or_default())
    }};
}

impl Head {
    fn of_record(r: &PacketRecord) -> Self {
        Head {
            ts_ns: r.ts_ns,
            ifindex: r.ifindex,
            payload_len: r.payload_len,
            tcp_seq: r.tcp_seq,
            tcp_ack: r.tcp_ack,
            cap_len: r.cap_len,
            src_port: r.src_port,
            dst_port: r.dst_port,
            direction: r.direction,
            family: r.family,
            proto: r.proto,
            tcp_flags: r.tcp_flags,
            src_addr: r.src_addr,
            dst_addr: r.dst_addr,
        }
    }

    /// `buf` holds at least `PACKET_HEADER_LEN` bytes.
    #[inline]
    fn parse(buf: &[u8]) -> Self {
        let addr = |at: usize| -> [u8; 16] { buf[at..at + 16].try_into().unwrap_or_default() };
        Head {
            ts_ns: field!(buf, ts_ns, u64),
            ifindex: field!(buf, ifindex, u32),
            payload_len: field!(buf, payload_len, u32),
            tcp_seq: field!(buf, tcp_seq, u32),
            tcp_ack: field!(buf, tcp_ack, u32),
            cap_len: field!(buf, cap_len, u16),
            src_port: field!(buf, src_port, u16),
            dst_port: field!(buf, dst_port, u16),
            direction: field!(buf, direction, u8),
            family: field!(buf, family, u8),
            proto: field!(buf, proto, u8),
            tcp_flags: field!(buf, tcp_flags, u8),
            src_addr: addr(std::mem::offset_of!(PacketRecord, src_addr)),
            dst_addr: addr(std::mem::offset_of!(PacketRecord, dst_addr)),
        }
    }

    /// The event without its payload, and how many payload bytes to take.
    #[inline]
    fn event(&self, mono_to_wall_ns: i64) -> Result<(PacketEvent, usize), DecodeError> {
        let (src, dst) = match self.family {
            4 => {
                let s: [u8; 4] = self.src_addr[..4].try_into().unwrap_or_default();
                let d: [u8; 4] = self.dst_addr[..4].try_into().unwrap_or_default();
                (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)))
            }
            6 => (IpAddr::V6(Ipv6Addr::from(self.src_addr)), IpAddr::V6(Ipv6Addr::from(self.dst_addr))),
            _ => return Err(DecodeError::BadFamily),
        };
        let direction = match self.direction {
            DIR_INGRESS => Direction::Ingress,
            DIR_EGRESS => Direction::Egress,
            _ => return Err(DecodeError::BadDirection),
        };
        let (l4, src_port, dst_port) = match self.proto {
            PROTO_TCP => {
                (L4::Tcp { seq: self.tcp_seq, ack: self.tcp_ack, flags: self.tcp_flags }, self.src_port, self.dst_port)
            }
            PROTO_UDP => (L4::Udp, self.src_port, self.dst_port),
            PROTO_ICMP if self.family == 4 => (L4::Icmp { v6: false }, 0, 0),
            PROTO_ICMPV6 if self.family == 6 => (L4::Icmp { v6: true }, 0, 0),
            _ => return Err(DecodeError::BadProto),
        };
        // cap_len comes from the kernel but is clamped anyway: a decoder never panics.
        let cap = (self.cap_len as usize).min(MAX_PAYLOAD).min(self.payload_len as usize);
        let ev = PacketEvent {
            ts_ns: (self.ts_ns as i64).saturating_add(mono_to_wall_ns).max(0) as u64,
            ifindex: self.ifindex,
            direction,
            src,
            dst,
            src_port,
            dst_port,
            l4,
            payload_len: self.payload_len,
            payload: Bytes::new(),
        };
        Ok((ev, cap))
    }
}

/// Converts one record. `mono_to_wall_ns` is CLOCK_REALTIME − CLOCK_MONOTONIC,
/// added to the kernel's `bpf_ktime_get_ns` timestamp.
pub fn decode(rec: &PacketRecord, mono_to_wall_ns: i64) -> Result<PacketEvent, DecodeError> {
    let (mut ev, cap) = Head::of_record(rec).event(mono_to_wall_ns)?;
    ev.payload = Bytes::copy_from_slice(&rec.payload[..cap]);
    Ok(ev)
}

/// Decodes a ring entry in place, without copying it into a (4 KiB)
/// `PacketRecord` first: the event comes without its payload, which is
/// `buf[range]`, so the reader can gather the payloads of a whole batch into
/// one allocation. Same checks and clamping as [`record_from_bytes`] + [`decode`].
// Inlined into the ring reader: see `capture::rings::Decode`.
#[inline]
pub fn decode_entry(buf: &[u8], mono_to_wall_ns: i64) -> Result<(PacketEvent, Range<usize>), DecodeError> {
    if buf.len() < PACKET_HEADER_LEN {
        return Err(DecodeError::Short);
    }
    let (ev, cap) = Head::parse(buf).event(mono_to_wall_ns)?;
    let cap = cap.min(buf.len() - PACKET_HEADER_LEN);
    Ok((ev, PACKET_HEADER_LEN..PACKET_HEADER_LEN + cap))
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC right now, in ns.
pub fn mono_to_wall_offset() -> i64 {
    fn now(clock: libc::clockid_t) -> i64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid pointer to a timespec; both clocks always exist on Linux.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    }
    let mono = now(libc::CLOCK_MONOTONIC);
    now(libc::CLOCK_REALTIME) - mono
}

/// TCP flags in tcpdump's letters (S, F, R, P, . for ACK).
pub fn tcp_flags_str(flags: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [(0x02, 'S'), (0x01, 'F'), (0x04, 'R'), (0x08, 'P'), (0x10, '.')] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

/// One line per packet, `key=value` after the addresses so tests can parse it:
/// `<ts_ns> if=<ifindex> <ingress|egress> tcp <src> > <dst> seq=.. ack=.. flags=.. len=.. cap=.. data=<hex>`
pub fn format_line(ev: &PacketEvent) -> String {
    let dir = match ev.direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let mut s = format!("{} if={} {dir} ", ev.ts_ns, ev.ifindex);
    let addr = |ip: IpAddr, port: u16| match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    };
    match ev.l4 {
        L4::Tcp { seq, ack, flags } => {
            let _ = write!(
                s,
                "tcp {} > {} seq={seq} ack={ack} flags={}",
                addr(ev.src, ev.src_port),
                addr(ev.dst, ev.dst_port),
                tcp_flags_str(flags)
            );
        }
        L4::Udp => {
            let _ = write!(s, "udp {} > {}", addr(ev.src, ev.src_port), addr(ev.dst, ev.dst_port));
        }
        L4::Icmp { v6 } => {
            let _ = write!(s, "{} {} > {}", if v6 { "icmp6" } else { "icmp" }, ev.src, ev.dst);
        }
    }
    let _ = write!(s, " len={} cap={} data={}", ev.payload_len, ev.payload.len(), hex::encode(&ev.payload));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnflow_common::{TCP_ACK, TCP_PSH};

    fn rec(family: u8, proto: u8, payload: &[u8], payload_len: u32) -> PacketRecord {
        let mut r = PacketRecord {
            ts_ns: 1_000,
            ifindex: 7,
            payload_len,
            tcp_seq: 0,
            tcp_ack: 0,
            cap_len: payload.len() as u16,
            src_port: 40000,
            dst_port: 6379,
            direction: DIR_EGRESS,
            family,
            proto,
            tcp_flags: 0,
            http_cut: 0,
            _pad: 0,
            src_addr: [0; 16],
            dst_addr: [0; 16],
            payload: [0; MAX_PAYLOAD],
        };
        r.payload[..payload.len()].copy_from_slice(payload);
        if family == 4 {
            r.src_addr[..4].copy_from_slice(&[10, 200, 1, 2]);
            r.dst_addr[..4].copy_from_slice(&[10, 200, 1, 1]);
        } else {
            r.src_addr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
            r.dst_addr = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        }
        r
    }

    fn bytes_of(r: &PacketRecord) -> Vec<u8> {
        // SAFETY: reading a repr(C) struct as bytes.
        unsafe {
            std::slice::from_raw_parts((r as *const PacketRecord).cast::<u8>(), std::mem::size_of::<PacketRecord>())
        }
        .to_vec()
    }

    #[test]
    fn tcp_v4_round_trip_through_ring_bytes() {
        let mut r = rec(4, PROTO_TCP, b"PING\r\n", 6);
        r.tcp_seq = 0xfffffff0;
        r.tcp_ack = 42;
        r.tcp_flags = TCP_ACK | TCP_PSH;
        let mut raw = vec![0u8; 3];
        raw.extend(bytes_of(&r));
        // Unaligned start on purpose.
        let back = record_from_bytes(&raw[3..]).unwrap();
        let ev = decode(&back, 5_000).unwrap();
        assert_eq!(ev.ts_ns, 6_000);
        assert_eq!(ev.ifindex, 7);
        assert_eq!(ev.direction, Direction::Egress);
        assert_eq!(ev.src, "10.200.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(ev.dst, "10.200.1.1".parse::<IpAddr>().unwrap());
        assert_eq!((ev.src_port, ev.dst_port), (40000, 6379));
        assert_eq!(ev.l4, L4::Tcp { seq: 0xfffffff0, ack: 42, flags: TCP_ACK | TCP_PSH });
        assert_eq!(&ev.payload[..], b"PING\r\n");
        assert_eq!(ev.truncated_bytes(), 0);
        let line = format_line(&ev);
        assert!(line.contains("tcp 10.200.1.2:40000 > 10.200.1.1:6379 seq=4294967280 ack=42 flags=P."), "{line}");
        assert!(line.ends_with("len=6 cap=6 data=50494e470d0a"), "{line}");
    }

    #[test]
    fn ring_entries_carry_only_the_captured_bytes() {
        let r = rec(4, PROTO_UDP, b"abcdef", 6);
        let full = bytes_of(&r);
        let ev = decode(&record_from_bytes(&full[..PACKET_HEADER_LEN + 6]).unwrap(), 0).unwrap();
        assert_eq!(&ev.payload[..], b"abcdef");
        // An entry shorter than cap_len claims: only the bytes present are used.
        let ev = decode(&record_from_bytes(&full[..PACKET_HEADER_LEN + 2]).unwrap(), 0).unwrap();
        assert_eq!(&ev.payload[..], b"ab");
        assert!(matches!(record_from_bytes(&full[..PACKET_HEADER_LEN - 1]), Err(DecodeError::Short)));
    }

    #[test]
    fn udp_v6() {
        let mut r = rec(6, PROTO_UDP, b"\x12\x34", 2);
        r.direction = DIR_INGRESS;
        r.src_port = 53;
        let ev = decode(&r, 0).unwrap();
        assert_eq!(ev.l4, L4::Udp);
        assert_eq!(ev.direction, Direction::Ingress);
        assert_eq!(ev.src, "fd00::2".parse::<IpAddr>().unwrap());
        assert!(format_line(&ev).contains("udp [fd00::2]:53 > [fd00::1]:6379"));
    }

    #[test]
    fn icmp_v4_and_v6_have_no_ports() {
        let ev = decode(&rec(4, PROTO_ICMP, &[8, 0, 0, 0], 64), 0).unwrap();
        assert_eq!(ev.l4, L4::Icmp { v6: false });
        assert_eq!((ev.src_port, ev.dst_port), (0, 0));
        assert_eq!(ev.truncated_bytes(), 60);
        let ev = decode(&rec(6, PROTO_ICMPV6, &[128, 0], 2), 0).unwrap();
        assert_eq!(ev.l4, L4::Icmp { v6: true });
        // ICMPv6 inside IPv4 is nonsense.
        assert_eq!(decode(&rec(4, PROTO_ICMPV6, &[], 0), 0).unwrap_err(), DecodeError::BadProto);
    }

    #[test]
    fn truncated_payload_keeps_original_length() {
        let r = rec(4, PROTO_TCP, &[0xab; 100], 3000);
        let ev = decode(&r, 0).unwrap();
        assert_eq!(ev.payload.len(), 100);
        assert_eq!(ev.payload_len, 3000);
        assert_eq!(ev.truncated_bytes(), 2900);
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        assert!(matches!(record_from_bytes(&[0; 10]), Err(DecodeError::Short)));
        let mut r = rec(5, PROTO_TCP, &[], 0);
        assert_eq!(decode(&r, 0).unwrap_err(), DecodeError::BadFamily);
        r.family = 4;
        r.direction = 9;
        assert_eq!(decode(&r, 0).unwrap_err(), DecodeError::BadDirection);
        r.direction = 0;
        r.proto = 132;
        assert_eq!(decode(&r, 0).unwrap_err(), DecodeError::BadProto);
        // cap_len larger than the payload length or the buffer is clamped.
        let mut r = rec(4, PROTO_UDP, &[1, 2, 3], 3);
        r.cap_len = u16::MAX;
        assert_eq!(decode(&r, 0).unwrap().payload.len(), 3);
        r.payload_len = u32::MAX;
        assert_eq!(decode(&r, 0).unwrap().payload.len(), MAX_PAYLOAD);
    }

    #[test]
    fn random_records_never_panic() {
        use proptest::prelude::*;
        proptest!(|(raw in proptest::collection::vec(any::<u8>(), 0..(std::mem::size_of::<PacketRecord>() + 8)), off in any::<i64>())| {
            let copied = record_from_bytes(&raw).and_then(|r| decode(&r, off));
            let in_place = decode_entry(&raw, off).map(|(mut ev, range)| {
                ev.payload = Bytes::copy_from_slice(&raw[range]);
                ev
            });
            match (copied, in_place) {
                (Ok(a), Ok(b)) => prop_assert_eq!(format_line(&a), format_line(&b)),
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "{a:?} vs {b:?}"),
            }
        });
    }
}
