//! Test helpers: a sink recording every event, and packet builders.
use super::*;
use crate::capture::{PacketEvent, L4};
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec {
    Data(Vec<u8>),
    Gap(u64),
    Datagram(Vec<u8>, u32),
    Close(CloseReason),
}

/// Records every sink call as (conn id, direction, event).
#[derive(Default)]
pub struct Recorder {
    pub events: Vec<Rec>,
    pub full: Vec<(Conn, StreamDir, Rec)>,
}

impl Recorder {
    pub fn stream(&self, dir: StreamDir) -> Vec<u8> {
        let mut v = Vec::new();
        for (_, d, r) in &self.full {
            if let (true, Rec::Data(x)) = (*d == dir, r) {
                v.extend_from_slice(x);
            }
        }
        if self.full.is_empty() {
            for r in &self.events {
                if let Rec::Data(x) = r {
                    v.extend_from_slice(x);
                }
            }
        }
        v
    }
    pub fn gaps(&self) -> Vec<u64> {
        self.events.iter().filter_map(|r| if let Rec::Gap(n) = r { Some(*n) } else { None }).collect()
    }
    pub fn closes(&self) -> Vec<(u64, CloseReason)> {
        self.full.iter().filter_map(|(c, _, r)| if let Rec::Close(x) = r { Some((c.id, *x)) } else { None }).collect()
    }
    fn rec(&mut self, conn: &Conn, dir: StreamDir, r: Rec) {
        self.events.push(r.clone());
        self.full.push((conn.clone(), dir, r));
    }
}

impl StreamSink for Recorder {
    fn on_data(&mut self, conn: &Conn, dir: StreamDir, _ts: u64, data: &[u8]) {
        self.rec(conn, dir, Rec::Data(data.to_vec()));
    }
    fn on_gap(&mut self, conn: &Conn, dir: StreamDir, _ts: u64, len: u64) {
        self.rec(conn, dir, Rec::Gap(len));
    }
    fn on_datagram(&mut self, conn: &Conn, dir: StreamDir, _ts: u64, data: &[u8], orig_len: u32) {
        self.rec(conn, dir, Rec::Datagram(data.to_vec(), orig_len));
    }
    fn on_close(&mut self, conn: &Conn, _ts: u64, reason: CloseReason) {
        self.rec(conn, StreamDir::ToServer, Rec::Close(reason));
    }
}

pub fn conn() -> Conn {
    std::sync::Arc::new(ConnInfo {
        id: 0,
        ifindex: 1,
        transport: Transport::Tcp,
        client: "10.200.0.1:40000".parse().unwrap(),
        server: "10.200.0.2:6379".parse().unwrap(),
        client_to_server: Direction::Egress,
        evidence: RoleEvidence::Syn,
        first_ts_ns: 0,
    })
}

pub const CLIENT: &str = "10.200.0.1:40000";
pub const SERVER: &str = "10.200.0.2:6379";

/// A TCP packet from `from` to `to` (socket addresses as strings).
pub fn tcp(from: &str, to: &str, ts: u64, seq: u32, ack: u32, flags: u8, data: &[u8]) -> PacketEvent {
    let f: std::net::SocketAddr = from.parse().unwrap();
    let t: std::net::SocketAddr = to.parse().unwrap();
    PacketEvent {
        ts_ns: ts,
        ifindex: 1,
        direction: Direction::Ingress,
        src: f.ip(),
        dst: t.ip(),
        src_port: f.port(),
        dst_port: t.port(),
        l4: L4::Tcp { seq, ack, flags },
        payload_len: data.len() as u32,
        payload: Bytes::copy_from_slice(data),
    }
}

pub fn udp(from: &str, to: &str, ts: u64, data: &[u8]) -> PacketEvent {
    let mut ev = tcp(from, to, ts, 0, 0, 0, data);
    ev.l4 = L4::Udp;
    ev
}
