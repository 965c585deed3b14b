//! Flow-table behaviour: roles, close, limits, datagrams.
use super::testing::*;
use super::*;
use crate::capture::L4;

const S: u8 = 0x02;
const A: u8 = 0x10;
const F: u8 = 0x01;
const R: u8 = 0x04;
const PA: u8 = 0x18;

fn table() -> FlowTable {
    FlowTable::new(&FlowConfig { max_flows: 4, max_buffer_bytes: 4096, idle_timeout_ns: 10 })
}

fn conns(r: &Recorder) -> Vec<Conn> {
    let mut v: Vec<Conn> = r.full.iter().map(|(c, _, _)| c.clone()).collect();
    v.dedup_by_key(|c| c.id);
    v
}

/// Handshake, request, response, FIN/FIN: streams and roles.
fn handshake(t: &mut FlowTable, r: &mut Recorder, c: &str, s: &str) {
    t.push(&tcp(c, s, 1, 1000, 0, S, b""), r);
    t.push(&tcp(s, c, 2, 5000, 1001, S | A, b""), r);
    t.push(&tcp(c, s, 3, 1001, 5001, A, b""), r);
}

#[test]
fn full_connection_with_fin_close() {
    let (mut t, mut r) = (table(), Recorder::default());
    handshake(&mut t, &mut r, CLIENT, SERVER);
    t.push(&tcp(CLIENT, SERVER, 4, 1001, 5001, PA, b"PING\r\n"), &mut r);
    t.push(&tcp(SERVER, CLIENT, 5, 5001, 1007, PA, b"+PONG\r\n"), &mut r);
    t.push(&tcp(CLIENT, SERVER, 6, 1007, 5008, F | A, b""), &mut r);
    t.push(&tcp(SERVER, CLIENT, 7, 5008, 1008, F | A, b""), &mut r);
    // Final ACK after close must not start a new flow.
    t.push(&tcp(CLIENT, SERVER, 8, 1008, 5009, A, b""), &mut r);
    assert_eq!(r.stream(StreamDir::ToServer), b"PING\r\n");
    assert_eq!(r.stream(StreamDir::ToClient), b"+PONG\r\n");
    let c = &conns(&r)[0];
    assert_eq!(c.client.to_string(), CLIENT);
    assert_eq!(c.evidence, RoleEvidence::Syn);
    assert_eq!(r.closes(), vec![(c.id, CloseReason::Fin)]);
    t.finish(&mut r);
    assert_eq!(r.closes().len(), 1);
}

#[test]
fn syn_ack_first_still_gives_roles() {
    let (mut t, mut r) = (table(), Recorder::default());
    // Client uses a "server-looking" port; the SYN-ACK decides.
    t.push(&tcp("10.200.0.2:7000", "10.200.0.1:6379", 1, 5000, 1001, S | A, b""), &mut r);
    t.push(&tcp("10.200.0.1:6379", "10.200.0.2:7000", 2, 1001, 5001, PA, b"x"), &mut r);
    let c = &conns(&r)[0];
    assert_eq!(c.server.to_string(), "10.200.0.2:7000");
    assert_eq!(r.full[0].1, StreamDir::ToServer);
}

#[test]
fn mid_stream_uses_ports_and_first_seq() {
    let (mut t, mut r) = (table(), Recorder::default());
    t.push(&tcp(SERVER, CLIENT, 1, 777, 1, PA, b"+OK\r\n"), &mut r);
    t.push(&tcp(CLIENT, SERVER, 2, 50, 782, PA, b"GET k\r\n"), &mut r);
    let c = &conns(&r)[0];
    assert_eq!((c.client.to_string(), c.evidence), (CLIENT.to_string(), RoleEvidence::Port));
    assert_eq!(r.stream(StreamDir::ToClient), b"+OK\r\n");
    assert_eq!(r.stream(StreamDir::ToServer), b"GET k\r\n");
    // Unknown ports: the first sender is the client.
    let mut r = Recorder::default();
    t.push(&tcp("10.200.0.9:7000", "10.200.0.8:7001", 3, 1, 1, PA, b"a"), &mut r);
    assert_eq!(conns(&r)[0].evidence, RoleEvidence::FirstPacket);
    assert_eq!(conns(&r)[0].client.to_string(), "10.200.0.9:7000");
}

#[test]
fn pure_ack_of_unknown_flow_is_ignored() {
    let (mut t, mut r) = (table(), Recorder::default());
    t.push(&tcp(CLIENT, SERVER, 1, 1, 1, A, b""), &mut r);
    t.push(&tcp(CLIENT, SERVER, 1, 1, 1, R, b""), &mut r);
    assert!(t.is_empty());
}

#[test]
fn rst_flushes_buffered_data_with_gap() {
    let (mut t, mut r) = (table(), Recorder::default());
    handshake(&mut t, &mut r, CLIENT, SERVER);
    t.push(&tcp(CLIENT, SERVER, 4, 1005, 5001, PA, b"tail"), &mut r);
    t.push(&tcp(CLIENT, SERVER, 5, 1009, 5001, R, b""), &mut r);
    assert_eq!(r.events, vec![Rec::Gap(4), Rec::Data(b"tail".to_vec()), Rec::Close(CloseReason::Rst)]);
}

#[test]
fn ipv6_connection() {
    let (mut t, mut r) = (table(), Recorder::default());
    let (c, s) = ("[fd00::1]:45000", "[fd00::2]:80");
    handshake(&mut t, &mut r, c, s);
    t.push(&tcp(c, s, 4, 1001, 5001, PA, b"GET / HTTP/1.1\r\n\r\n"), &mut r);
    t.push(&tcp(s, c, 5, 5001, 1019, PA, b"HTTP/1.1 200 OK\r\n\r\n"), &mut r);
    assert_eq!(r.stream(StreamDir::ToServer), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(conns(&r)[0].server.to_string(), s);
}

#[test]
fn truncated_packets_give_gaps() {
    let (mut t, mut r) = (table(), Recorder::default());
    handshake(&mut t, &mut r, CLIENT, SERVER);
    let mut ev = tcp(CLIENT, SERVER, 4, 1001, 5001, PA, b"abcd");
    ev.payload_len = 1000;
    t.push(&ev, &mut r);
    t.push(&tcp(CLIENT, SERVER, 5, 2001, 5001, PA, b"next"), &mut r);
    assert_eq!(r.events, vec![Rec::Data(b"abcd".to_vec()), Rec::Gap(996), Rec::Data(b"next".to_vec())]);
}

#[test]
fn eviction_at_capacity_and_idle_expiry() {
    let (mut t, mut r) = (table(), Recorder::default());
    for i in 0..6u16 {
        let c = format!("10.200.0.1:{}", 40000 + i);
        t.push(&tcp(&c, SERVER, i as u64, 1, 1, PA, b"x"), &mut r);
    }
    assert_eq!(t.len(), 4);
    let evicted: Vec<_> = r.closes().into_iter().filter(|(_, c)| *c == CloseReason::Evicted).collect();
    assert_eq!(evicted.len(), 2);
    t.expire(13, &mut r);
    // Idle for ≥ 10 at time 13: flows last active at 2 and 3; 4 and 5 remain.
    assert_eq!(t.len(), 2);
    assert_eq!(r.closes().iter().filter(|(_, c)| *c == CloseReason::Idle).count(), 2);
    t.finish(&mut r);
    assert!(t.is_empty());
    assert_eq!(r.closes().iter().filter(|(_, c)| *c == CloseReason::EndOfInput).count(), 2);
}

#[test]
fn port_reuse_starts_a_new_connection() {
    let (mut t, mut r) = (table(), Recorder::default());
    handshake(&mut t, &mut r, CLIENT, SERVER);
    t.push(&tcp(CLIENT, SERVER, 4, 1001, 5001, PA, b"a"), &mut r);
    t.push(&tcp(CLIENT, SERVER, 5, 90000, 0, S, b""), &mut r);
    t.push(&tcp(CLIENT, SERVER, 6, 90001, 0, PA, b"b"), &mut r);
    let cs = conns(&r);
    assert_eq!(cs.len(), 2);
    assert_eq!(r.closes(), vec![(cs[0].id, CloseReason::Idle)]);
}

#[test]
fn unrelated_sequence_numbers_start_a_new_connection() {
    let (mut t, mut r) = (table(), Recorder::default());
    let jumps = crate::stats::counter("cnflow.flow.sequence_jumps", &[]);
    let before = jumps.get();
    handshake(&mut t, &mut r, CLIENT, SERVER);
    t.push(&tcp(CLIENT, SERVER, 4, 1001, 5001, PA, b"a"), &mut r);
    // Same ports, SYN not captured: 2 GB ahead, then one from "behind".
    t.push(&tcp(CLIENT, SERVER, 5, 1001 + (1 << 31) - 5, 0, PA, b"b"), &mut r);
    t.push(&tcp(CLIENT, SERVER, 6, 1001 + (1 << 31) - 4, 0, PA, b"c"), &mut r);
    t.push(&tcp(CLIENT, SERVER, 7, 7, 0, PA, b"d"), &mut r);
    assert_eq!(conns(&r).len(), 3);
    assert!(r.gaps().is_empty(), "no gap invented between unrelated streams: {:?}", r.gaps());
    assert_eq!(r.stream(StreamDir::ToServer), b"abcd");
    // The counter is process-wide and other tests running in parallel (the
    // proptest flow fuzzers) add their own jumps, so only a lower bound holds.
    assert!(jumps.get() - before >= 2);
    // Ordinary loss within a window is still a gap on the same connection.
    t.push(&tcp(CLIENT, SERVER, 8, 7 + 1 + 1000, 0, PA, b"e"), &mut r);
    t.finish(&mut r);
    assert_eq!(conns(&r).len(), 3);
    assert_eq!(r.gaps(), vec![1000]);
}

#[test]
fn udp_and_icmp_datagrams() {
    let (mut t, mut r) = (table(), Recorder::default());
    t.push(&udp("10.200.0.1:53000", "10.200.0.2:53", 1, b"query"), &mut r);
    t.push(&udp("10.200.0.2:53", "10.200.0.1:53000", 2, b"answer"), &mut r);
    let mut ping = udp("10.200.0.1:0", "10.200.0.2:0", 3, &[8, 0, 0, 0, 0, 42, 0, 1, b'p']);
    ping.l4 = L4::Icmp { v6: false };
    t.push(&ping, &mut r);
    let mut pong = udp("10.200.0.2:0", "10.200.0.1:0", 4, &[0, 0, 0, 0, 0, 42, 0, 1, b'p']);
    pong.l4 = L4::Icmp { v6: false };
    t.push(&pong, &mut r);
    let cs = conns(&r);
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0].server.to_string(), "10.200.0.2:53");
    assert_eq!(cs[1].transport, Transport::Icmp);
    assert_eq!(cs[1].client.ip().to_string(), "10.200.0.1");
    let dirs: Vec<StreamDir> = r.full.iter().map(|x| x.1).collect();
    assert_eq!(dirs, vec![StreamDir::ToServer, StreamDir::ToClient, StreamDir::ToServer, StreamDir::ToClient]);
}

#[test]
fn memory_stays_bounded_under_reordering() {
    let mut t = FlowTable::new(&FlowConfig { max_flows: 8, max_buffer_bytes: 10_000, idle_timeout_ns: 10 });
    let mut r = Recorder::default();
    t.push(&tcp(CLIENT, SERVER, 0, 0, 0, S, b""), &mut r);
    // Never send byte 1: everything after it is out of order.
    for i in 0..1000u32 {
        t.push(&tcp(CLIENT, SERVER, 1, 2 + i * 100, 0, PA, &[b'z'; 100]), &mut r);
        assert!(t.buffered_bytes() <= 10_000);
    }
    assert!(r.gaps().contains(&1));
}

/// Open, exchange and close one connection from `c` at time `t0` (ns).
fn short_connection(t: &mut FlowTable, r: &mut Recorder, c: &str, t0: u64) {
    t.push(&tcp(c, SERVER, t0, 1000, 0, S, b""), r);
    t.push(&tcp(SERVER, c, t0 + 1, 5000, 1001, S | A, b""), r);
    t.push(&tcp(c, SERVER, t0 + 2, 1001, 5001, PA, b"PING\r\n"), r);
    t.push(&tcp(SERVER, c, t0 + 3, 5001, 1007, PA, b"+PONG\r\n"), r);
    t.push(&tcp(c, SERVER, t0 + 4, 1007, 5008, F | A, b""), r);
    t.push(&tcp(SERVER, c, t0 + 5, 5008, 1008, F | A, b""), r);
}

const SEC: u64 = 1_000_000_000;

#[test]
fn closed_connections_linger_briefly_not_for_the_idle_timeout() {
    let cfg = FlowConfig { max_flows: 100, max_buffer_bytes: 4096, idle_timeout_ns: 120 * SEC };
    let (mut t, mut r) = (FlowTable::new(&cfg), Recorder::default());
    short_connection(&mut t, &mut r, CLIENT, SEC);
    assert_eq!(r.closes().len(), 1);
    // The last ACK shortly after the close neither reopens nor starts a flow.
    t.push(&tcp(CLIENT, SERVER, 2 * SEC, 1008, 5009, A, b""), &mut r);
    t.expire(SEC + super::table::CLOSED_LINGER_NS - 1, &mut r);
    assert_eq!((t.len(), conns(&r).len()), (1, 1), "still remembered within the linger time");
    t.expire(SEC + 5 + super::table::CLOSED_LINGER_NS, &mut r);
    assert!(t.is_empty(), "forgotten after the linger time, long before the idle timeout");
    assert_eq!(r.closes().len(), 1, "no second close for a closed connection");
}

#[test]
fn churn_evicts_closed_connections_before_live_idle_ones() {
    let cfg = FlowConfig { max_flows: 3, max_buffer_bytes: 4096, idle_timeout_ns: 120 * SEC };
    let (mut t, mut r) = (FlowTable::new(&cfg), Recorder::default());
    // A long-lived connection, idle since t=1s.
    handshake(&mut t, &mut r, "10.200.0.1:39999", SERVER);
    // Many short connections after it: the table never pushes the live one out.
    for i in 0..50u16 {
        short_connection(&mut t, &mut r, &format!("10.200.0.1:{}", 41000 + i), (2 + i as u64) * SEC);
        assert!(t.len() <= 3);
    }
    let closes = r.closes();
    assert_eq!(closes.len(), 50);
    assert!(closes.iter().all(|(_, c)| *c == CloseReason::Fin), "{closes:?}");
    // The live connection still delivers its data in order.
    t.push(&tcp("10.200.0.1:39999", SERVER, 60 * SEC, 1001, 5001, PA, b"late\r\n"), &mut r);
    let late: Vec<u8> = r
        .full
        .iter()
        .filter(|(c, d, _)| c.client.port() == 39999 && *d == StreamDir::ToServer)
        .flat_map(|(_, _, rec)| match rec {
            Rec::Data(d) => d.clone(),
            _ => vec![],
        })
        .collect();
    assert_eq!(late, b"late\r\n");
}
