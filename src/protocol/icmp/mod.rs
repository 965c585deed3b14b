//! ICMP and ICMPv6.
//!
//! Echo requests and replies are paired by (identifier, sequence) into one
//! exchange whose duration is the round-trip time; pairing uses the message
//! type, not the flow direction, so it works whichever side the flow table
//! called the client. Errors (destination unreachable, time exceeded,
//! packet too big, parameter problem) become single-message exchanges that
//! name the original flow quoted in their payload. Other messages (neighbour
//! discovery, router advertisements, MLD) are not exchanges and are ignored.
use super::{ConnDecoder, DecodeConfig, Emit, Probe};
use crate::flow::{CloseReason, Conn, StreamDir, Transport};
use crate::protocol::exchange::{Detail, Exchange, KeyedPairer, Outcome, Protocol};
use crate::stats::{counter, Counter};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::LazyLock;

mod detail;
pub mod semconv;
pub use detail::{IcmpDetail, IcmpOriginal};

static PARSE_ERRORS: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.parse_errors", &[("protocol", "icmp")]));
static EVICTED: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.protocol.pending_evicted", &[("protocol", "icmp")]));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    EchoRequest,
    EchoReply,
    Error(&'static str),
    Other,
}

fn kind(v6: bool, t: u8) -> Kind {
    match (v6, t) {
        (false, 8) | (true, 128) => Kind::EchoRequest,
        (false, 0) | (true, 129) => Kind::EchoReply,
        (false, 3) | (true, 1) => Kind::Error("destination_unreachable"),
        (false, 11) | (true, 3) => Kind::Error("time_exceeded"),
        (false, 12) | (true, 4) => Kind::Error("parameter_problem"),
        (true, 2) => Kind::Error("packet_too_big"),
        (false, 5) => Kind::Error("redirect"),
        (false, 4) => Kind::Error("source_quench"),
        _ => Kind::Other,
    }
}

fn is_v6(conn: &Conn) -> bool {
    conn.client.is_ipv6()
}

/// Is this datagram an ICMP message we decode? ICMP flows are recognised by transport; the content decides the rest.
pub fn probe(conn: &Conn, _dir: StreamDir, data: &[u8]) -> Probe {
    if conn.transport != Transport::Icmp || data.len() < 4 {
        return Probe::No;
    }
    match kind(is_v6(conn), data[0]) {
        Kind::Other => Probe::No,
        _ => Probe::Yes(100),
    }
}

pub fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
    Box::new(IcmpDecoder::new(cfg))
}

/// ICMP and ICMPv6 (echo pairs and errors). The registry entry.
pub struct Icmp;

impl super::registry::L7Protocol for Icmp {
    const NAME: &'static str = "icmp";
    const TRANSPORTS: &'static [Transport] = &[Transport::Icmp];
    fn probe(conn: &Conn, dir: StreamDir, data: &[u8]) -> Probe {
        probe(conn, dir, data)
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        new_decoder(cfg)
    }
}

/// The flow quoted in an ICMP error: an IP header and at least 8 bytes of its payload.
fn quoted_flow(v6: bool, q: &[u8]) -> Option<IcmpOriginal> {
    let (proto, src, dst, l4): (u8, IpAddr, IpAddr, &[u8]) = if v6 {
        if q.len() < 40 || q[0] >> 4 != 6 {
            return None;
        }
        let src: [u8; 16] = q[8..24].try_into().ok()?;
        let dst: [u8; 16] = q[24..40].try_into().ok()?;
        let (mut next, mut off) = (q[6], 40usize);
        // Skip the common extension headers (hop-by-hop, routing, destination options).
        for _ in 0..4 {
            if !matches!(next, 0 | 43 | 60) || q.len() < off + 2 {
                break;
            }
            next = q[off];
            off += (q[off + 1] as usize + 1) * 8;
        }
        (next, Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into(), q.get(off..).unwrap_or_default())
    } else {
        if q.len() < 20 || q[0] >> 4 != 4 {
            return None;
        }
        let ihl = (q[0] & 0x0f) as usize * 4;
        let src = Ipv4Addr::new(q[12], q[13], q[14], q[15]);
        let dst = Ipv4Addr::new(q[16], q[17], q[18], q[19]);
        (q[9], src.into(), dst.into(), q.get(ihl.max(20)..).unwrap_or_default())
    };
    let ports = match proto {
        6 | 17 | 132 | 136 if l4.len() >= 4 => (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]])),
        _ => (0, 0),
    };
    Some(IcmpOriginal { protocol: proto, src: SocketAddr::new(src, ports.0), dst: SocketAddr::new(dst, ports.1) })
}

struct Pending {
    ts: u64,
    bytes: u64,
    detail: IcmpDetail,
}

pub struct IcmpDecoder {
    cfg: DecodeConfig,
    pending: KeyedPairer<(u16, u16), Pending>,
}

impl IcmpDecoder {
    pub fn new(cfg: &DecodeConfig) -> Self {
        Self { cfg: cfg.clone(), pending: KeyedPairer::new(cfg.max_pending_per_conn) }
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(out: &mut Emit, start: u64, end: u64, req: u64, resp: u64, outcome: Outcome, partial: bool, d: IcmpDetail) {
        out.push(Exchange {
            conn: out.conn.clone(),
            wire: Default::default(),
            protocol: Protocol::Icmp,
            start_ns: start,
            end_ns: end,
            request_bytes: req,
            response_bytes: resp,
            outcome,
            partial,
            detail: Detail::Icmp(d),
        });
    }

    fn unanswered(p: Pending, end: u64, outcome: Outcome, out: &mut Emit) {
        Self::emit(out, p.ts, end, p.bytes, 0, outcome, false, p.detail);
    }
}

impl ConnDecoder for IcmpDecoder {
    fn on_data(&mut self, _dir: StreamDir, _ts_ns: u64, _data: &[u8], _out: &mut Emit) {}
    fn on_gap(&mut self, _dir: StreamDir, _ts_ns: u64, _len: u64, _out: &mut Emit) {}

    fn on_datagram(&mut self, _dir: StreamDir, ts: u64, data: &[u8], orig_len: u32, out: &mut Emit) {
        if data.len() < 4 {
            PARSE_ERRORS.inc();
            return;
        }
        let v6 = is_v6(out.conn);
        let wire = (orig_len as u64).max(data.len() as u64);
        let mut detail = IcmpDetail { v6, icmp_type: data[0], code: data[1], ..Default::default() };
        match kind(v6, data[0]) {
            Kind::EchoRequest | Kind::EchoReply if data.len() < 8 => PARSE_ERRORS.inc(),
            Kind::EchoRequest => {
                let key = (u16::from_be_bytes([data[4], data[5]]), u16::from_be_bytes([data[6], data[7]]));
                detail.echo_id = Some(key.0);
                detail.echo_seq = Some(key.1);
                detail.name = "echo".into();
                for old in self.pending.insert(key, ts, Pending { ts, bytes: wire, detail }) {
                    EVICTED.inc();
                    let end = old.ts.saturating_add(self.cfg.request_timeout_ns);
                    Self::unanswered(old, end, Outcome::Timeout, out);
                }
            }
            Kind::EchoReply => {
                let key = (u16::from_be_bytes([data[4], data[5]]), u16::from_be_bytes([data[6], data[7]]));
                match self.pending.take(&key) {
                    Some(p) => Self::emit(out, p.ts, ts, p.bytes, wire, Outcome::Complete, false, p.detail),
                    None => {
                        // The request was not seen (capture started late).
                        detail.echo_id = Some(key.0);
                        detail.echo_seq = Some(key.1);
                        detail.name = "echo".into();
                        Self::emit(out, ts, ts, 0, wire, Outcome::Complete, true, detail);
                    }
                }
            }
            Kind::Error(name) => {
                detail.name = name.into();
                // Errors quote the offending packet after a 4-byte type-specific field.
                detail.original = data.get(8..).and_then(|q| quoted_flow(v6, q));
                let partial = detail.original.is_none();
                if partial {
                    PARSE_ERRORS.inc();
                }
                Self::emit(out, ts, ts, 0, wire, Outcome::Complete, partial, detail);
            }
            Kind::Other => {}
        }
    }

    fn on_close(&mut self, ts_ns: u64, _reason: CloseReason, out: &mut Emit) {
        for p in self.pending.drain() {
            Self::unanswered(p, ts_ns, Outcome::Timeout, out);
        }
    }

    fn expire(&mut self, deadline_ns: u64, out: &mut Emit) {
        let end = deadline_ns.saturating_add(self.cfg.request_timeout_ns);
        for p in self.pending.expire(deadline_ns) {
            Self::unanswered(p, end, Outcome::Timeout, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Direction;
    use crate::flow::{ConnInfo, RoleEvidence};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn icmp_conn(v6: bool) -> Conn {
        let (c, s): (IpAddr, IpAddr) = if v6 {
            ("fd00:200::1".parse().unwrap(), "fd00:200::2".parse().unwrap())
        } else {
            ("10.200.0.1".parse().unwrap(), "10.200.0.2".parse().unwrap())
        };
        Arc::new(ConnInfo {
            id: 3,
            ifindex: 1,
            transport: Transport::Icmp,
            client: SocketAddr::new(c, 0),
            server: SocketAddr::new(s, 0),
            client_to_server: Direction::Egress,
            evidence: RoleEvidence::FirstPacket,
            first_ts_ns: 0,
        })
    }

    fn echo(t: u8, id: u16, seq: u16) -> Vec<u8> {
        let mut v = vec![t, 0, 0, 0];
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&[0xab; 56]);
        v
    }

    fn icmp(ex: &Exchange) -> &IcmpDetail {
        match &ex.detail {
            Detail::Icmp(d) => d,
            _ => panic!(),
        }
    }

    #[test]
    fn echo_pairs_with_rtt_v4_and_v6() {
        for (v6, req, rep) in [(false, 8, 0), (true, 128, 129)] {
            let c = icmp_conn(v6);
            assert_eq!(probe(&c, StreamDir::ToServer, &echo(req, 1, 1)), Probe::Yes(100));
            let mut out = Vec::new();
            let mut d = IcmpDecoder::new(&DecodeConfig::default());
            let mut e = Emit { conn: &c, out: &mut out };
            d.on_datagram(StreamDir::ToServer, 100, &echo(req, 7, 1), 64, &mut e);
            d.on_datagram(StreamDir::ToServer, 200, &echo(req, 7, 2), 64, &mut e);
            d.on_datagram(StreamDir::ToClient, 250, &echo(rep, 7, 2), 64, &mut e);
            d.on_datagram(StreamDir::ToClient, 160, &echo(rep, 7, 1), 64, &mut e);
            d.on_datagram(StreamDir::ToServer, 300, &echo(req, 7, 3), 64, &mut e);
            d.on_close(400, CloseReason::Idle, &mut e);
            assert_eq!(out.len(), 3);
            assert_eq!((icmp(&out[0]).echo_seq, out[0].end_ns - out[0].start_ns), (Some(2), 50));
            assert_eq!((icmp(&out[1]).echo_seq, out[1].end_ns - out[1].start_ns), (Some(1), 60));
            assert_eq!(out[2].outcome, Outcome::Timeout);
            assert!(out.iter().all(|x| icmp(x).v6 == v6 && icmp(x).name == "echo"));
        }
    }

    #[test]
    fn port_unreachable_names_original_flow() {
        let c = icmp_conn(false);
        let mut msg = vec![3, 3, 0, 0, 0, 0, 0, 0];
        // Quoted IPv4 header (UDP 10.200.0.1:5555 → 10.200.0.2:9) and 8 bytes of UDP.
        msg.extend_from_slice(&[0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 10, 200, 0, 1, 10, 200, 0, 2]);
        msg.extend_from_slice(&[0x15, 0xb3, 0, 9, 0, 12, 0, 0]);
        let mut out = Vec::new();
        let mut d = IcmpDecoder::new(&DecodeConfig::default());
        d.on_datagram(StreamDir::ToClient, 5, &msg, msg.len() as u32, &mut Emit { conn: &c, out: &mut out });
        let o = icmp(&out[0]).original.clone().unwrap();
        assert_eq!(
            (o.protocol, o.src.to_string(), o.dst.to_string()),
            (17, "10.200.0.1:5555".into(), "10.200.0.2:9".into())
        );
        assert_eq!(icmp(&out[0]).name, "destination_unreachable");
        assert!(!out[0].partial);
    }

    #[test]
    fn packet_too_big_v6() {
        let c = icmp_conn(true);
        let mut msg = vec![2, 0, 0, 0, 0, 0, 5, 0xdc];
        let mut ip6 = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        ip6.extend_from_slice(&"fd00:200::1".parse::<Ipv6Addr>().unwrap().octets());
        ip6.extend_from_slice(&"fd00:200::2".parse::<Ipv6Addr>().unwrap().octets());
        msg.extend_from_slice(&ip6);
        msg.extend_from_slice(&[0x1f, 0x90, 0x00, 0x50, 0, 0, 0, 0]);
        let mut out = Vec::new();
        let mut d = IcmpDecoder::new(&DecodeConfig::default());
        d.on_datagram(StreamDir::ToClient, 5, &msg, msg.len() as u32, &mut Emit { conn: &c, out: &mut out });
        let o = icmp(&out[0]).original.clone().unwrap();
        assert_eq!((o.protocol, o.src.port(), o.dst.port()), (6, 8080, 80));
        assert_eq!(icmp(&out[0]).name, "packet_too_big");
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..50), v6 in any::<bool>()) {
            let c = icmp_conn(v6);
            let mut out = Vec::new();
            let mut d = IcmpDecoder::new(&DecodeConfig { max_pending_per_conn: 8, ..Default::default() });
            let mut e = Emit { conn: &c, out: &mut out };
            for (i, m) in msgs.iter().enumerate() {
                let _ = probe(&c, StreamDir::ToServer, m);
                d.on_datagram(StreamDir::ToServer, i as u64, m, m.len() as u32, &mut e);
                prop_assert!(d.pending.len() <= 8);
            }
            d.on_close(1000, CloseReason::EndOfInput, &mut e);
        }
    }
}
