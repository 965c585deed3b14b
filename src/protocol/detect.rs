//! Content-based protocol detection. Every protocol in the registry offers a
//! probe; this module combines their answers for one connection. Ports only add a
//! small bonus so that, e.g., HTTP is found on any port and Redis on 6380,
//! while a flow that no probe claims stays undetected instead of guessed.
use super::Probe;
use crate::flow::{Conn, StreamDir, Transport};
use crate::protocol::exchange::Protocol;
use std::sync::LazyLock;

/// Protocols probed on `transport`, in tie-break order: higher
/// [`Protocol::tie_break`] first, then registry order.
fn candidates(transport: Transport) -> impl Iterator<Item = Protocol> {
    static BY_TRANSPORT: LazyLock<[Vec<Protocol>; 3]> = LazyLock::new(|| {
        [Transport::Tcp, Transport::Udp, Transport::Icmp].map(|t| {
            let mut v: Vec<Protocol> = Protocol::ALL.iter().copied().filter(|p| p.transports().contains(&t)).collect();
            v.sort_by_key(|p| std::cmp::Reverse(p.tie_break())); // stable: registry order among equals
            v
        })
    });
    let i = match transport {
        Transport::Tcp => 0,
        Transport::Udp => 1,
        Transport::Icmp => 2,
    };
    BY_TRANSPORT[i].iter().copied()
}

/// A verdict at or above this confidence is taken at once; below it the
/// dispatcher waits (bounded) for protocols that still need more bytes.
const DECISIVE: u8 = 60;
/// Added to a protocol's confidence when the server port is one it commonly uses.
const PORT_BONUS: u8 = 10;

/// Outcome of probing the bytes buffered so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Detected(Protocol),
    /// Some probe needs more bytes.
    Wait,
    /// No probe claims the flow.
    Unknown,
}

/// Combine every stream probe over the first bytes of both directions.
/// `full`: the detection buffer is exhausted, so decide with what is known.
pub fn detect_stream(conn: &Conn, to_server: &[u8], to_client: &[u8], full: bool) -> Verdict {
    let mut best: Option<(u8, Protocol)> = None;
    let mut waiting = false;
    for proto in candidates(Transport::Tcp) {
        match proto.probe_flow(conn, to_server, to_client) {
            Probe::Yes(c) => {
                let bonus = if proto.port_hint(conn.server.port()) { PORT_BONUS } else { 0 };
                let c = c.min(100).saturating_add(bonus);
                if best.is_none_or(|(b, _)| c > b) {
                    best = Some((c, proto));
                }
            }
            Probe::NeedMore => waiting = true,
            Probe::No => {}
        }
    }
    match best {
        Some((c, p)) if c >= DECISIVE || !waiting || full => Verdict::Detected(p),
        _ if waiting && !full => Verdict::Wait,
        _ => Verdict::Unknown,
    }
}

/// Datagram flows (UDP, ICMP): each datagram is self-contained, so one probe decides.
pub fn detect_datagram(conn: &Conn, dir: StreamDir, data: &[u8]) -> Option<Protocol> {
    // A TCP flow is a stream: a datagram on one carries no protocol.
    if conn.transport == Transport::Tcp {
        return None;
    }
    candidates(conn.transport).find(|p| matches!(p.probe(conn, dir, data), Probe::Yes(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testutil::conn as test_conn;

    #[test]
    fn http_on_any_port_and_redis_on_6380() {
        let c = test_conn(Transport::Tcp, 12345);
        assert_eq!(
            detect_stream(&c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"", false),
            Verdict::Detected(Protocol::Http1)
        );
        let c = test_conn(Transport::Tcp, 6380);
        assert_eq!(detect_stream(&c, b"*1\r\n$4\r\nPING\r\n", b"", false), Verdict::Detected(Protocol::Redis));
        let tls = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x5e\x12\x9a\x01\x77\x30\x00\x11\x22";
        assert_eq!(detect_stream(&c, tls, b"", false), Verdict::Unknown);
    }

    #[test]
    fn tie_break_order_is_the_historical_one() {
        use Protocol::*;
        assert_eq!(
            candidates(Transport::Tcp).collect::<Vec<_>>(),
            [Http2, Http1, Kafka, Redis, Dns, Memcached, Nats, Mqtt, Postgres, Mysql, Mongodb, Amqp]
        );
        assert_eq!(candidates(Transport::Udp).collect::<Vec<_>>(), [Dns]);
        assert_eq!(candidates(Transport::Icmp).collect::<Vec<_>>(), [Icmp]);
    }

    #[test]
    fn waits_for_more_then_gives_up_when_full() {
        let c = test_conn(Transport::Tcp, 80);
        assert_eq!(detect_stream(&c, b"GE", b"", false), Verdict::Wait);
        assert_eq!(detect_stream(&c, b"GE", b"", true), Verdict::Unknown);
    }
}
